//! Domains: one owner each (the name is the primary key), verified or not.

use std::collections::HashMap;

use mailmux_core::Domain;
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::audit::{commit_if_changed, commit_with_audit};
use crate::{AuditEntry, Result, Store, StoreError, bool_to_i64};

const COLUMNS: &str =
    "name, tenant_id, verified, verified_by, verification_token, created_at, inbound, dmarc_reject";

impl Store {
    /// Adds a domain; `Conflict` if any tenant already holds it.
    pub async fn add_domain(&self, domain: &Domain) -> Result<()> {
        insert_domain(&self.pool, domain).await
    }

    pub async fn get_domain(&self, name: &str) -> Result<Option<Domain>> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM domains WHERE name = $1"))
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| domain_from_row(&row)).transpose()
    }

    pub async fn list_domains(&self, tenant_id: &str) -> Result<Vec<Domain>> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM domains WHERE tenant_id = $1 ORDER BY name"
        ))
        .bind(tenant_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(domain_from_row).collect()
    }

    /// Marks a domain verified (`by` = `dns` or `operator`) or unverified (`by` = None), with
    /// its audit entry in the same transaction.
    pub async fn set_domain_verified(
        &self,
        name: &str,
        by: Option<&str>,
        audit: Option<&AuditEntry>,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let done =
            sqlx::query("UPDATE domains SET verified = $2, verified_by = $3 WHERE name = $1")
                .bind(name)
                .bind(bool_to_i64(by.is_some()))
                .bind(by)
                .execute(&mut *tx)
                .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("domain {name}")));
        }
        commit_with_audit(tx, audit).await
    }

    /// Turns inbound mail (mailmux as the domain's MX) on or off, with its audit entry in the
    /// same transaction. `NotFound` when the tenant has no such domain.
    pub async fn set_domain_inbound(
        &self,
        tenant_id: &str,
        name: &str,
        inbound: bool,
        audit: Option<&AuditEntry>,
    ) -> Result<()> {
        self.set_domain_flag(tenant_id, name, "inbound", inbound, audit)
            .await
    }

    /// Sets whether DMARC `p=reject` failures are refused on this inbound domain.
    pub async fn set_domain_dmarc_reject(
        &self,
        tenant_id: &str,
        name: &str,
        dmarc_reject: bool,
        audit: Option<&AuditEntry>,
    ) -> Result<()> {
        self.set_domain_flag(tenant_id, name, "dmarc_reject", dmarc_reject, audit)
            .await
    }

    /// `column` is one of the two literals above, never input.
    async fn set_domain_flag(
        &self,
        tenant_id: &str,
        name: &str,
        column: &'static str,
        value: bool,
        audit: Option<&AuditEntry>,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(&format!(
            "UPDATE domains SET {column} = $3 WHERE tenant_id = $1 AND name = $2"
        ))
        .bind(tenant_id)
        .bind(name)
        .bind(bool_to_i64(value))
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("domain {name}")));
        }
        commit_with_audit(tx, audit).await
    }

    /// Each tenant's primary domain: the one it added first (by `created_at`, then name), for
    /// the tenants named; tenants without a domain are absent. One query for a whole page of
    /// tenants rather than one per tenant.
    pub async fn primary_domains(&self, tenant_ids: &[&str]) -> Result<HashMap<String, String>> {
        if tenant_ids.is_empty() {
            return Ok(HashMap::new());
        }
        let placeholders = (1..=tenant_ids.len())
            .map(|i| format!("${i}"))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "SELECT tenant_id, name, created_at FROM domains WHERE tenant_id IN ({placeholders}) \
             ORDER BY tenant_id, created_at, name"
        );
        let mut query = sqlx::query(&sql);
        for id in tenant_ids {
            query = query.bind(*id);
        }
        let rows = query.fetch_all(&self.pool).await?;
        let mut primary = HashMap::new();
        for row in rows {
            let tenant_id: String = row.try_get("tenant_id")?;
            // Rows come oldest first within a tenant: the first one seen is the primary.
            primary
                .entry(tenant_id)
                .or_insert(row.try_get::<String, _>("name")?);
        }
        Ok(primary)
    }

    pub async fn delete_domain(
        &self,
        tenant_id: &str,
        name: &str,
        audit: Option<&AuditEntry>,
    ) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query("DELETE FROM domains WHERE tenant_id = $1 AND name = $2")
            .bind(tenant_id)
            .bind(name)
            .execute(&mut *tx)
            .await?;
        commit_if_changed(tx, done.rows_affected() > 0, audit).await
    }

    /// A tenant's domains by name, `limit` of them after the `after` name (a cursor).
    pub async fn list_domains_page(
        &self,
        tenant_id: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Domain>> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM domains WHERE tenant_id = $1 AND name > $2 \
             ORDER BY name LIMIT $3"
        ))
        .bind(tenant_id)
        .bind(after.unwrap_or(""))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(domain_from_row).collect()
    }

    /// Every domain verified by `by` (`dns` or `operator`), over all tenants: what the daily
    /// re-check walks.
    pub async fn list_domains_verified_by(&self, by: &str) -> Result<Vec<Domain>> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM domains WHERE verified = 1 AND verified_by = $1 ORDER BY name"
        ))
        .bind(by)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(domain_from_row).collect()
    }

    pub async fn count_domains(&self, tenant_id: &str) -> Result<u64> {
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM domains WHERE tenant_id = $1")
            .bind(tenant_id)
            .fetch_one(&self.pool)
            .await?;
        Ok(count as u64)
    }
}

/// The INSERT behind [`Store::add_domain`], on any executor (a transaction that also stores the
/// domain's DKIM key uses it).
pub(crate) async fn insert_domain<'e>(
    executor: impl sqlx::Executor<'e, Database = sqlx::Any>,
    domain: &Domain,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO domains (name, tenant_id, verified, verified_by, verification_token, \
         created_at, inbound, dmarc_reject) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(&domain.name)
    .bind(&domain.tenant_id)
    .bind(bool_to_i64(domain.verified))
    .bind(domain.verified_by.as_deref())
    .bind(&domain.verification_token)
    .bind(domain.created_at)
    .bind(bool_to_i64(domain.inbound))
    .bind(bool_to_i64(domain.dmarc_reject))
    .execute(executor)
    .await
    .map_err(|e| StoreError::conflict_or(e, format!("domain {}", domain.name)))?;
    Ok(())
}

pub(crate) fn domain_from_row(row: &AnyRow) -> Result<Domain> {
    Ok(Domain {
        name: row.try_get("name")?,
        tenant_id: row.try_get("tenant_id")?,
        verified: row.try_get::<i64, _>("verified")? != 0,
        verified_by: row.try_get("verified_by")?,
        verification_token: row.try_get("verification_token")?,
        created_at: row.try_get("created_at")?,
        inbound: row.try_get::<i64, _>("inbound")? != 0,
        dmarc_reject: row.try_get::<i64, _>("dmarc_reject")? != 0,
    })
}
