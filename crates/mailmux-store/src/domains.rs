//! Domains: one owner each (the name is the primary key), verified or not.

use mailmux_core::Domain;
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::{Result, Store, StoreError, bool_to_i64};

const COLUMNS: &str = "name, tenant_id, verified, verified_by, verification_token, created_at";

impl Store {
    /// Adds a domain; `Conflict` if any tenant already holds it.
    pub async fn add_domain(&self, domain: &Domain) -> Result<()> {
        sqlx::query(
            "INSERT INTO domains (name, tenant_id, verified, verified_by, verification_token, \
             created_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&domain.name)
        .bind(&domain.tenant_id)
        .bind(bool_to_i64(domain.verified))
        .bind(domain.verified_by.as_deref())
        .bind(&domain.verification_token)
        .bind(domain.created_at)
        .execute(&self.pool)
        .await
        .map_err(|e| StoreError::conflict_or(e, format!("domain {}", domain.name)))?;
        Ok(())
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

    /// Marks a domain verified (`by` = `dns` or `operator`) or unverified (`by` = None).
    pub async fn set_domain_verified(&self, name: &str, by: Option<&str>) -> Result<()> {
        let done =
            sqlx::query("UPDATE domains SET verified = $2, verified_by = $3 WHERE name = $1")
                .bind(name)
                .bind(bool_to_i64(by.is_some()))
                .bind(by)
                .execute(&self.pool)
                .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("domain {name}")));
        }
        Ok(())
    }

    pub async fn delete_domain(&self, tenant_id: &str, name: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM domains WHERE tenant_id = $1 AND name = $2")
            .bind(tenant_id)
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    pub async fn count_domains(&self, tenant_id: &str) -> Result<u64> {
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM domains WHERE tenant_id = $1")
            .bind(tenant_id)
            .fetch_one(&self.pool)
            .await?;
        Ok(count as u64)
    }
}

fn domain_from_row(row: &AnyRow) -> Result<Domain> {
    Ok(Domain {
        name: row.try_get("name")?,
        tenant_id: row.try_get("tenant_id")?,
        verified: row.try_get::<i64, _>("verified")? != 0,
        verified_by: row.try_get("verified_by")?,
        verification_token: row.try_get("verification_token")?,
        created_at: row.try_get("created_at")?,
    })
}
