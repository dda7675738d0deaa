//! Custom MAIL FROM (return-path) domains: per sending domain, the subdomain that delivery puts
//! in the envelope sender instead of the sending domain itself (`domains.return_path`).
//!
//! Kept apart from `domains.rs`: the [`mailmux_core::Domain`] model stays as it is, and only
//! the admin API's return-path resource and delivery read or write this column.

use crate::{Result, Store, StoreError};

impl Store {
    /// Sets (or with `None` removes) the return-path domain of a tenant's domain. `NotFound`
    /// when this tenant has no such domain.
    pub async fn set_return_path(
        &self,
        tenant_id: &str,
        domain: &str,
        return_path: Option<&str>,
    ) -> Result<()> {
        let done =
            sqlx::query("UPDATE domains SET return_path = $3 WHERE tenant_id = $1 AND name = $2")
                .bind(tenant_id)
                .bind(domain)
                .bind(return_path)
                .execute(&self.pool)
                .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("domain {domain}")));
        }
        Ok(())
    }

    /// The return-path domain of `domain` and the tenant that owns the domain; `None` when the
    /// domain is unknown.
    pub async fn get_return_path(&self, domain: &str) -> Result<Option<(String, Option<String>)>> {
        let row: Option<(String, Option<String>)> =
            sqlx::query_as("SELECT tenant_id, return_path FROM domains WHERE name = $1")
                .bind(domain)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row)
    }
}
