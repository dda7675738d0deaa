//! DKIM keys (private part sealed by [`crate::MasterKey`]) and the result of the last DNS check
//! of a domain's records.
//!
//! A domain holds one `active` key (the one that signs), at most one `pending` key (made by a
//! rotation, waiting for its DNS record) and any number of `retiring` keys (replaced, still to be
//! kept published until `retire_at`). The database enforces "at most one active, at most one
//! pending" with partial unique indexes (migration 0003).

use std::collections::BTreeMap;

use mailmux_core::Domain;
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::audit::{commit_if_changed, commit_with_audit};
use crate::domains::{domain_from_row, insert_domain};
use crate::{AuditEntry, Result, Store, StoreError};

/// Where a key stands in its domain's rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DkimKeyStatus {
    /// Signs the domain's mail.
    Active,
    /// Made by a rotation; becomes active once its DNS record is found.
    Pending,
    /// Replaced; its record stays published until `retire_at`.
    Retiring,
}

impl DkimKeyStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DkimKeyStatus::Active => "active",
            DkimKeyStatus::Pending => "pending",
            DkimKeyStatus::Retiring => "retiring",
        }
    }

    pub fn parse(value: &str) -> Option<DkimKeyStatus> {
        match value {
            "active" => Some(DkimKeyStatus::Active),
            "pending" => Some(DkimKeyStatus::Pending),
            "retiring" => Some(DkimKeyStatus::Retiring),
            _ => None,
        }
    }
}

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
    pub status: DkimKeyStatus,
    /// When it started signing (None while pending).
    pub activated_at: Option<i64>,
    /// For a retiring key: when it is dropped from the domain's records.
    pub retire_at: Option<i64>,
    /// Last change of status.
    pub updated_at: i64,
}

impl DkimKey {
    /// The associated data a key's private part is sealed with: it binds the sealed bytes to
    /// this domain and selector.
    pub fn seal_context(domain: &str, selector: &str) -> String {
        format!("dkim:{domain}:{selector}")
    }
}

/// What delivery needs to know, once a second, to decide whether its signer for a domain is
/// still the right one: a cheap query that reads no key material.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DkimSigningState {
    /// The tenant that owns the domain.
    pub tenant_id: String,
    pub verified: bool,
    /// `(selector, created_at)` of the active key: together they name one key for good (a
    /// domain deleted and added again in the same month gets the same selector, not the same
    /// creation time).
    pub active: Option<(String, i64)>,
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
    /// Adds a domain and its DKIM key (active) in one transaction: a domain is never without its
    /// key. `Conflict` if any tenant already holds the domain; `LimitReached` if its tenant
    /// already holds `max_domains` (0: no limit), counted inside the transaction, which holds
    /// the tenant ([`Store::begin_for_tenant`]).
    pub async fn add_domain_with_dkim(
        &self,
        domain: &Domain,
        key: &DkimKey,
        max_domains: u64,
        audit: Option<&AuditEntry>,
    ) -> Result<()> {
        let mut tx = self.begin_for_tenant(&domain.tenant_id).await?;
        if max_domains > 0 {
            let held: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM domains WHERE tenant_id = $1")
                .bind(&domain.tenant_id)
                .fetch_one(&mut *tx)
                .await?;
            if held as u64 >= max_domains {
                return Err(StoreError::LimitReached(format!(
                    "tenant {} already has its maximum of {max_domains} domains (max_domains)",
                    domain.tenant_id
                )));
            }
        }
        insert_domain(&mut *tx, domain).await?;
        insert_dkim_key(&mut *tx, key).await?;
        commit_with_audit(tx, audit).await
    }

    /// The active DKIM key of a domain (None for domains added before keys existed).
    pub async fn get_dkim_key(&self, domain: &str) -> Result<Option<DkimKey>> {
        let row = sqlx::query(&format!(
            "SELECT {KEY_COLUMNS} FROM dkim_keys WHERE domain = $1 AND status = 'active'"
        ))
        .bind(domain)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| dkim_from_row(&row)).transpose()
    }

    /// Every key of a domain: the active one, then the pending one, then retiring ones (newest
    /// first). Retiring keys past their `retire_at` are included until
    /// [`Store::drop_retired_dkim_key`] deletes them; callers filter by time.
    pub async fn list_dkim_keys(&self, domain: &str) -> Result<Vec<DkimKey>> {
        let rows = sqlx::query(&format!(
            "SELECT {KEY_COLUMNS} FROM dkim_keys WHERE domain = $1 \
             ORDER BY CASE status WHEN 'active' THEN 0 WHEN 'pending' THEN 1 ELSE 2 END, \
             created_at DESC, selector"
        ))
        .bind(domain)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(dkim_from_row).collect()
    }

    /// Stores a rotation's new key as the domain's pending key, replacing an earlier pending
    /// one (which never signed, so nothing depends on its record). Returns the selector it
    /// replaced. `Conflict` if the selector is taken; `NotFound` if the domain is gone.
    pub async fn add_pending_dkim_key(
        &self,
        key: &DkimKey,
        audit: Option<&AuditEntry>,
    ) -> Result<Option<String>> {
        debug_assert_eq!(key.status, DkimKeyStatus::Pending);
        let mut tx = self.pool.begin().await?;
        let replaced: Option<String> = sqlx::query_scalar(
            "SELECT selector FROM dkim_keys WHERE domain = $1 AND status = 'pending'",
        )
        .bind(&key.domain)
        .fetch_optional(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM dkim_keys WHERE domain = $1 AND status = 'pending'")
            .bind(&key.domain)
            .execute(&mut *tx)
            .await?;
        insert_dkim_key(&mut *tx, key).await?;
        commit_with_audit(tx, audit).await?;
        Ok(replaced)
    }

    /// Switches signing to the pending key `selector`: the active key becomes retiring (listed
    /// until `retire_at`) and the pending one active, in one transaction. `false` (and no
    /// change) if `selector` is no longer the domain's pending key.
    pub async fn activate_dkim_key(
        &self,
        domain: &str,
        selector: &str,
        now: i64,
        retire_at: i64,
        audit: Option<&AuditEntry>,
    ) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        // Demote first: the unique index allows one active key per domain at any moment.
        sqlx::query(
            "UPDATE dkim_keys SET status = 'retiring', retire_at = $3, updated_at = $2 \
             WHERE domain = $1 AND status = 'active'",
        )
        .bind(domain)
        .bind(now)
        .bind(retire_at)
        .execute(&mut *tx)
        .await?;
        let promoted = sqlx::query(
            "UPDATE dkim_keys SET status = 'active', activated_at = $2, updated_at = $2 \
             WHERE domain = $1 AND selector = $3 AND status = 'pending'",
        )
        .bind(domain)
        .bind(now)
        .bind(selector)
        .execute(&mut *tx)
        .await?;
        // Not promoted: the demotion above is rolled back with it.
        commit_if_changed(tx, promoted.rows_affected() > 0, audit).await
    }

    /// The retiring keys whose grace period ended at or before `now`, oldest domain first.
    pub async fn list_retired_dkim_keys(&self, now: i64) -> Result<Vec<DkimKey>> {
        let rows = sqlx::query(&format!(
            "SELECT {KEY_COLUMNS} FROM dkim_keys WHERE status = 'retiring' AND retire_at <= $1 \
             ORDER BY domain, selector"
        ))
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(dkim_from_row).collect()
    }

    /// Deletes `domain`'s key `selector` if it is retiring and its grace period ended at or
    /// before `now`; false (and nothing written) otherwise, e.g. when another node dropped it
    /// first.
    pub async fn drop_retired_dkim_key(
        &self,
        domain: &str,
        selector: &str,
        now: i64,
        audit: Option<&AuditEntry>,
    ) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "DELETE FROM dkim_keys WHERE domain = $1 AND selector = $2 \
             AND status = 'retiring' AND retire_at <= $3",
        )
        .bind(domain)
        .bind(selector)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        commit_if_changed(tx, done.rows_affected() > 0, audit).await
    }

    /// Domains with a rotation waiting for its DNS record, over all tenants: what the
    /// background rotation check walks.
    pub async fn list_domains_with_pending_dkim(&self) -> Result<Vec<Domain>> {
        let rows = sqlx::query(
            "SELECT name, tenant_id, verified, verified_by, verification_token, created_at, \
             inbound, dmarc_reject FROM domains WHERE name IN \
             (SELECT domain FROM dkim_keys WHERE status = 'pending') ORDER BY name",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(domain_from_row).collect()
    }

    /// The owner, verification and active key's identity of `domain` (None if no tenant holds
    /// it). Reads no key material: delivery calls it at most once a second per domain.
    pub async fn dkim_signing_state(&self, domain: &str) -> Result<Option<DkimSigningState>> {
        let row = sqlx::query(
            "SELECT d.tenant_id, d.verified, k.selector, k.created_at \
             FROM domains d LEFT JOIN dkim_keys k ON k.domain = d.name AND k.status = 'active' \
             WHERE d.name = $1",
        )
        .bind(domain)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let selector: Option<String> = row.try_get("selector")?;
        let created_at: Option<i64> = row.try_get("created_at")?;
        Ok(Some(DkimSigningState {
            tenant_id: row.try_get("tenant_id")?,
            verified: row.try_get::<i64, _>("verified")? != 0,
            active: selector.zip(created_at),
        }))
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
        audit: Option<&AuditEntry>,
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
        commit_with_audit(tx, audit).await
    }
}

const KEY_COLUMNS: &str = "domain, selector, key_type, public_key, private_key, created_at, \
                           status, activated_at, retire_at, updated_at";

async fn insert_dkim_key<'e>(
    executor: impl sqlx::Executor<'e, Database = sqlx::Any>,
    key: &DkimKey,
) -> Result<()> {
    sqlx::query(&format!(
        "INSERT INTO dkim_keys ({KEY_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
    ))
    .bind(&key.domain)
    .bind(&key.selector)
    .bind(&key.key_type)
    .bind(&key.public_key)
    .bind(key.private_key_sealed.as_slice())
    .bind(key.created_at)
    .bind(key.status.as_str())
    .bind(key.activated_at)
    .bind(key.retire_at)
    .bind(key.updated_at)
    .execute(executor)
    .await
    .map_err(|e| match &e {
        sqlx::Error::Database(db) if db.is_foreign_key_violation() => {
            StoreError::NotFound(format!("domain {}", key.domain))
        }
        _ => StoreError::conflict_or(e, format!("dkim key {} for {}", key.selector, key.domain)),
    })?;
    Ok(())
}

fn dkim_from_row(row: &AnyRow) -> Result<DkimKey> {
    let domain: String = row.try_get("domain")?;
    let status: String = row.try_get("status")?;
    Ok(DkimKey {
        status: DkimKeyStatus::parse(&status).ok_or_else(|| {
            StoreError::Corrupt(format!("dkim key status {status:?} of {domain}"))
        })?,
        selector: row.try_get("selector")?,
        key_type: row.try_get("key_type")?,
        public_key: row.try_get("public_key")?,
        private_key_sealed: row.try_get("private_key")?,
        created_at: row.try_get("created_at")?,
        activated_at: row.try_get("activated_at")?,
        retire_at: row.try_get("retire_at")?,
        updated_at: row.try_get("updated_at")?,
        domain,
    })
}
