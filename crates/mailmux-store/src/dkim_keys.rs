//! DKIM keys (one per domain, private part sealed by [`crate::MasterKey`]) and the result of
//! the last DNS check of a domain's records.

use std::collections::BTreeMap;

use mailmux_core::Domain;
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::domains::insert_domain;
use crate::{Result, Store, StoreError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DkimKey {
    pub domain: String,
    pub selector: String,
    /// `rsa` or `ed25519` (the `k=` of the DKIM record).
    pub key_type: String,
    /// Base64 of the public key as published in `p=`.
    pub public_key: String,
    /// PKCS#8 DER of the private key, sealed with [`crate::MasterKey::seal`] under
    /// [`DkimKey::seal_context`].
    pub private_key_sealed: Vec<u8>,
    pub created_at: i64,
}

impl DkimKey {
    /// The associated data a key's private part is sealed with: it binds the sealed bytes to
    /// this domain and selector.
    pub fn seal_context(domain: &str, selector: &str) -> String {
        format!("dkim:{domain}:{selector}")
    }
}

/// The outcome of the last DNS check of a domain.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DomainCheck {
    /// Record kind (`verification`, `dkim`, `spf`, `dmarc`) → status (`verified`, `missing`,
    /// `mismatch`, `error`).
    pub statuses: BTreeMap<String, String>,
    pub checked_at: i64,
    /// Set when a re-check of a verified domain no longer found a required record.
    pub flagged_at: Option<i64>,
}

impl Store {
    /// Adds a domain and its DKIM key in one transaction: a domain is never without its key.
    /// `Conflict` if any tenant already holds the domain.
    pub async fn add_domain_with_dkim(&self, domain: &Domain, key: &DkimKey) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        insert_domain(&mut *tx, domain).await?;
        sqlx::query(
            "INSERT INTO dkim_keys (domain, selector, key_type, public_key, private_key, \
             created_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&key.domain)
        .bind(&key.selector)
        .bind(&key.key_type)
        .bind(&key.public_key)
        .bind(key.private_key_sealed.as_slice())
        .bind(key.created_at)
        .execute(&mut *tx)
        .await
        .map_err(|e| StoreError::conflict_or(e, format!("dkim key for {}", key.domain)))?;
        tx.commit().await?;
        Ok(())
    }

    /// The DKIM key of a domain (None for domains added before keys existed).
    pub async fn get_dkim_key(&self, domain: &str) -> Result<Option<DkimKey>> {
        let row = sqlx::query(
            "SELECT domain, selector, key_type, public_key, private_key, created_at \
             FROM dkim_keys WHERE domain = $1",
        )
        .bind(domain)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| dkim_from_row(&row)).transpose()
    }

    pub async fn get_domain_check(&self, domain: &str) -> Result<Option<DomainCheck>> {
        let row = sqlx::query(
            "SELECT statuses, checked_at, flagged_at FROM domain_checks WHERE domain = $1",
        )
        .bind(domain)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let statuses: String = row.try_get("statuses")?;
        Ok(Some(DomainCheck {
            statuses: serde_json::from_str(&statuses)
                .map_err(|_| StoreError::Corrupt(format!("domain check of {domain}")))?,
            checked_at: row.try_get("checked_at")?,
            flagged_at: row.try_get("flagged_at")?,
        }))
    }

    /// Records a check; with `verified_by` set, also marks the domain verified, in the same
    /// transaction (the statuses shown and the verdict never disagree).
    pub async fn put_domain_check(
        &self,
        domain: &str,
        check: &DomainCheck,
        verified_by: Option<&str>,
    ) -> Result<()> {
        let statuses = serde_json::to_string(&check.statuses).expect("statuses serialise");
        let mut tx = self.pool.begin().await?;
        // Upsert by delete + insert: one SQL text for both backends.
        sqlx::query("DELETE FROM domain_checks WHERE domain = $1")
            .bind(domain)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO domain_checks (domain, statuses, checked_at, flagged_at) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(domain)
        .bind(statuses)
        .bind(check.checked_at)
        .bind(check.flagged_at)
        .execute(&mut *tx)
        .await
        .map_err(|e| match &e {
            sqlx::Error::Database(db) if db.is_foreign_key_violation() => {
                StoreError::NotFound(format!("domain {domain}"))
            }
            _ => StoreError::Database(e),
        })?;
        if let Some(by) = verified_by {
            sqlx::query("UPDATE domains SET verified = 1, verified_by = $2 WHERE name = $1")
                .bind(domain)
                .bind(by)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

fn dkim_from_row(row: &AnyRow) -> Result<DkimKey> {
    Ok(DkimKey {
        domain: row.try_get("domain")?,
        selector: row.try_get("selector")?,
        key_type: row.try_get("key_type")?,
        public_key: row.try_get("public_key")?,
        private_key_sealed: row.try_get("private_key")?,
        created_at: row.try_get("created_at")?,
    })
}
