//! Custom MAIL FROM (return-path) domains: per sending domain, the subdomain that delivery puts
//! in the envelope sender instead of the sending domain itself (`domains.return_path`), and
//! what the last DNS check of it found. Delivery uses a return path only while it is verified.
//!
//! Kept apart from `domains.rs`: the [`mailmux_core::Domain`] model stays as it is, and only
//! the admin API's return-path resource and delivery read or write these columns.

use std::collections::BTreeMap;

use sqlx::Row;
use sqlx::any::AnyRow;

use crate::audit::{commit_if_changed, commit_with_audit};
use crate::{AuditEntry, Result, Store, StoreError};

/// A sending domain's return-path setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReturnPath {
    /// The sending domain.
    pub domain: String,
    /// The tenant that owns the sending domain.
    pub tenant_id: String,
    /// The return-path domain; `None` when none is set.
    pub return_path: Option<String>,
    /// Per record (`mx`, `spf`), what the last check found; empty before the first check.
    pub checks: BTreeMap<String, String>,
    /// Unix milliseconds of the last check.
    pub checked_at: Option<i64>,
    /// Unix milliseconds since which the records are found; `None`: not (or no longer) usable.
    pub verified_at: Option<i64>,
}

impl ReturnPath {
    /// The return-path domain when it may go on the wire: set and verified.
    pub fn verified(&self) -> Option<&str> {
        self.return_path
            .as_deref()
            .filter(|_| self.verified_at.is_some())
    }
}

/// What one check of a return-path domain found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReturnPathCheck {
    pub checks: BTreeMap<String, String>,
    pub checked_at: i64,
    pub verified_at: Option<i64>,
}

const COLUMNS: &str = "name, tenant_id, return_path, return_path_checks, \
                       return_path_checked_at, return_path_verified_at";

fn from_row(row: &AnyRow) -> Result<ReturnPath> {
    let domain: String = row.try_get("name")?;
    let checks: Option<String> = row.try_get("return_path_checks")?;
    let checks = match checks {
        None => BTreeMap::new(),
        Some(json) => serde_json::from_str(&json)
            .map_err(|_| StoreError::Corrupt(format!("return-path checks of {domain}")))?,
    };
    Ok(ReturnPath {
        tenant_id: row.try_get("tenant_id")?,
        return_path: row.try_get("return_path")?,
        checks,
        checked_at: row.try_get("return_path_checked_at")?,
        verified_at: row.try_get("return_path_verified_at")?,
        domain,
    })
}

impl Store {
    /// Sets (or with `None` removes) the return-path domain of a tenant's domain; what earlier
    /// checks found is forgotten, so a new return path is unverified until checked. `NotFound`
    /// when this tenant has no such domain.
    pub async fn set_return_path(
        &self,
        tenant_id: &str,
        domain: &str,
        return_path: Option<&str>,
        audit: Option<&AuditEntry>,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "UPDATE domains SET return_path = $3, return_path_checks = NULL, \
             return_path_checked_at = NULL, return_path_verified_at = NULL \
             WHERE tenant_id = $1 AND name = $2",
        )
        .bind(tenant_id)
        .bind(domain)
        .bind(return_path)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("domain {domain}")));
        }
        commit_with_audit(tx, audit).await
    }

    /// The return-path setting of `domain`; `None` when the domain is unknown.
    pub async fn get_return_path(&self, domain: &str) -> Result<Option<ReturnPath>> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM domains WHERE name = $1"))
            .bind(domain)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(from_row).transpose()
    }

    /// The sending domain whose return path is `return_path` (the MX accepts bounces for it);
    /// `None` when no domain uses it.
    pub async fn return_path_owner(&self, return_path: &str) -> Result<Option<ReturnPath>> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM domains WHERE return_path = $1 ORDER BY name LIMIT 1"
        ))
        .bind(return_path)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(from_row).transpose()
    }

    /// Records a check of `return_path`. Returns false (and writes nothing) when the domain's
    /// return path is no longer `return_path`: it was changed while the lookups ran, and a
    /// verdict about the old name must not verify the new one.
    pub async fn put_return_path_check(
        &self,
        domain: &str,
        return_path: &str,
        check: &ReturnPathCheck,
        audit: Option<&AuditEntry>,
    ) -> Result<bool> {
        let checks = serde_json::to_string(&check.checks).expect("statuses serialise");
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "UPDATE domains SET return_path_checks = $3, return_path_checked_at = $4, \
             return_path_verified_at = $5 WHERE name = $1 AND return_path = $2",
        )
        .bind(domain)
        .bind(return_path)
        .bind(checks)
        .bind(check.checked_at)
        .bind(check.verified_at)
        .execute(&mut *tx)
        .await?;
        commit_if_changed(tx, done.rows_affected() > 0, audit).await
    }

    /// Every return path in use (set and verified), for the daily re-check.
    pub async fn list_verified_return_paths(&self) -> Result<Vec<ReturnPath>> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM domains WHERE return_path IS NOT NULL \
             AND return_path_verified_at IS NOT NULL ORDER BY name"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(from_row).collect()
    }
}
