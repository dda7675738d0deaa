//! Tenant API keys: bearer keys for the REST API that see only their own tenant. Only a hash of
//! the secret is stored; the key's id (in clear inside the bearer token) finds the row.

use sqlx::Row;
use sqlx::any::AnyRow;

use crate::audit::{commit_if_changed, commit_with_audit};
use crate::{AuditEntry, Result, Store, StoreError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub id: String,
    pub tenant_id: String,
    /// A label chosen by whoever created the key ("deploy bot").
    pub name: String,
    /// Hex SHA-256 of the secret part of the token.
    pub secret_hash: String,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
}

const COLUMNS: &str = "id, tenant_id, name, secret_hash, created_at, revoked_at";

impl Store {
    pub async fn create_api_key(&self, key: &ApiKey, audit: Option<&AuditEntry>) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO api_keys (id, tenant_id, name, secret_hash, created_at, revoked_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&key.id)
        .bind(&key.tenant_id)
        .bind(&key.name)
        .bind(&key.secret_hash)
        .bind(key.created_at)
        .bind(key.revoked_at)
        .execute(&mut *tx)
        .await
        .map_err(|e| StoreError::conflict_or(e, format!("api key {}", key.id)))?;
        commit_with_audit(tx, audit).await
    }

    /// The key with this id, revoked or not.
    pub async fn get_api_key(&self, id: &str) -> Result<Option<ApiKey>> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM api_keys WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| api_key_from_row(&row)).transpose()
    }

    /// A tenant's keys by creation, `limit` of them after the (created_at, id) cursor.
    pub async fn list_api_keys_page(
        &self,
        tenant_id: &str,
        after: Option<(i64, String)>,
        limit: u32,
    ) -> Result<Vec<ApiKey>> {
        let (after_at, after_id) = after.unwrap_or((i64::MIN, String::new()));
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM api_keys WHERE tenant_id = $1 \
             AND (created_at > $2 OR (created_at = $2 AND id > $3)) \
             ORDER BY created_at, id LIMIT $4"
        ))
        .bind(tenant_id)
        .bind(after_at)
        .bind(after_id)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(api_key_from_row).collect()
    }

    /// Revokes a live key of this tenant; false if there is no such live key.
    pub async fn revoke_api_key(
        &self,
        tenant_id: &str,
        id: &str,
        now_ms: i64,
        audit: Option<&AuditEntry>,
    ) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "UPDATE api_keys SET revoked_at = $3 \
             WHERE tenant_id = $1 AND id = $2 AND revoked_at IS NULL",
        )
        .bind(tenant_id)
        .bind(id)
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        commit_if_changed(tx, done.rows_affected() > 0, audit).await
    }
}

fn api_key_from_row(row: &AnyRow) -> Result<ApiKey> {
    Ok(ApiKey {
        id: row.try_get("id")?,
        tenant_id: row.try_get("tenant_id")?,
        name: row.try_get("name")?,
        secret_hash: row.try_get("secret_hash")?,
        created_at: row.try_get("created_at")?,
        revoked_at: row.try_get("revoked_at")?,
    })
}
