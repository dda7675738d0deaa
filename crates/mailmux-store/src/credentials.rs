//! SMTP credentials: username → tenant, with only a hash of the secret stored.

use mailmux_core::Credential;
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::audit::{commit_if_changed, commit_with_audit};
use crate::{AuditEntry, Result, Store, StoreError};

const COLUMNS: &str = "id, tenant_id, username, secret_hash, created_at, revoked_at, \
     rate_per_second, rate_per_minute";

impl Store {
    /// Stores a new credential, unless its tenant already has `max_users` live ones
    /// (`LimitReached`; 0: no limit). The count and the insert are one transaction holding the
    /// tenant ([`Store::begin_for_tenant`]), so concurrent requests cannot pass the limit.
    pub async fn create_credential(
        &self,
        credential: &Credential,
        max_users: u64,
        audit: Option<&AuditEntry>,
    ) -> Result<()> {
        let mut tx = self.begin_for_tenant(&credential.tenant_id).await?;
        if max_users > 0 {
            let live: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM credentials WHERE tenant_id = $1 AND revoked_at IS NULL",
            )
            .bind(&credential.tenant_id)
            .fetch_one(&mut *tx)
            .await?;
            if live as u64 >= max_users {
                return Err(StoreError::LimitReached(format!(
                    "tenant {} already has its maximum of {max_users} users (max_users)",
                    credential.tenant_id
                )));
            }
        }
        sqlx::query(
            "INSERT INTO credentials (id, tenant_id, username, secret_hash, created_at, revoked_at, \
             rate_per_second, rate_per_minute) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&credential.id)
        .bind(&credential.tenant_id)
        .bind(&credential.username)
        .bind(&credential.secret_hash)
        .bind(credential.created_at)
        .bind(credential.revoked_at)
        .bind(credential.rate_per_second.map(|r| r as i64))
        .bind(credential.rate_per_minute.map(|r| r as i64))
        .execute(&mut *tx)
        .await
        .map_err(|e| StoreError::conflict_or(e, format!("credential {}", credential.username)))?;
        commit_with_audit(tx, audit).await
    }

    /// The credential with this username, revoked or not.
    pub async fn find_credential(&self, username: &str) -> Result<Option<Credential>> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM credentials WHERE username = $1"
        ))
        .bind(username)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| credential_from_row(&row)).transpose()
    }

    pub async fn list_credentials(&self, tenant_id: &str) -> Result<Vec<Credential>> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM credentials WHERE tenant_id = $1 ORDER BY created_at, id"
        ))
        .bind(tenant_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(credential_from_row).collect()
    }

    /// A tenant's credentials (revoked ones too) by creation, `limit` after the cursor.
    pub async fn list_credentials_page(
        &self,
        tenant_id: &str,
        after: Option<(i64, String)>,
        limit: u32,
    ) -> Result<Vec<Credential>> {
        let (after_at, after_id) = after.unwrap_or((i64::MIN, String::new()));
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM credentials WHERE tenant_id = $1 \
             AND (created_at > $2 OR (created_at = $2 AND id > $3)) \
             ORDER BY created_at, id LIMIT $4"
        ))
        .bind(tenant_id)
        .bind(after_at)
        .bind(after_id)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(credential_from_row).collect()
    }

    /// One credential of this tenant by id (None if it belongs to no such tenant).
    pub async fn get_credential(&self, tenant_id: &str, id: &str) -> Result<Option<Credential>> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM credentials WHERE tenant_id = $1 AND id = $2"
        ))
        .bind(tenant_id)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| credential_from_row(&row)).transpose()
    }

    /// Revokes a credential of this tenant; false if there is no such live credential.
    pub async fn revoke_credential(
        &self,
        tenant_id: &str,
        id: &str,
        now_ms: i64,
        audit: Option<&AuditEntry>,
    ) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "UPDATE credentials SET revoked_at = $3 \
             WHERE tenant_id = $1 AND id = $2 AND revoked_at IS NULL",
        )
        .bind(tenant_id)
        .bind(id)
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        commit_if_changed(tx, done.rows_affected() > 0, audit).await
    }

    /// Sets (or with `None` clears) a credential's own sending rate; false if this tenant has
    /// no such credential.
    pub async fn set_credential_rates(
        &self,
        tenant_id: &str,
        id: &str,
        per_second: Option<u64>,
        per_minute: Option<u64>,
        audit: Option<&AuditEntry>,
    ) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "UPDATE credentials SET rate_per_second = $3, rate_per_minute = $4 \
             WHERE tenant_id = $1 AND id = $2",
        )
        .bind(tenant_id)
        .bind(id)
        .bind(per_second.map(|r| r as i64))
        .bind(per_minute.map(|r| r as i64))
        .execute(&mut *tx)
        .await?;
        commit_if_changed(tx, done.rows_affected() > 0, audit).await
    }

    /// Live (not revoked) credentials of a tenant: its "users".
    pub async fn count_credentials(&self, tenant_id: &str) -> Result<u64> {
        let count: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM credentials WHERE tenant_id = $1 AND revoked_at IS NULL",
        )
        .bind(tenant_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(count as u64)
    }
}

fn credential_from_row(row: &AnyRow) -> Result<Credential> {
    Ok(Credential {
        id: row.try_get("id")?,
        tenant_id: row.try_get("tenant_id")?,
        username: row.try_get("username")?,
        secret_hash: row.try_get("secret_hash")?,
        created_at: row.try_get("created_at")?,
        revoked_at: row.try_get("revoked_at")?,
        rate_per_second: row
            .try_get::<Option<i64>, _>("rate_per_second")?
            .map(|r| r.max(0) as u64),
        rate_per_minute: row
            .try_get::<Option<i64>, _>("rate_per_minute")?
            .map(|r| r.max(0) as u64),
    })
}
