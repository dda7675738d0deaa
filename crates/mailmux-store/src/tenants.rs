//! Tenants: rows of `tenants`, with limits as columns and feature flags as a JSON object.

use mailmux_core::{Features, Limits, Tenant, TenantStatus, Tier, TransportKind, now_ms};
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::audit::{commit_if_changed, commit_with_audit};
use crate::{AuditEntry, Result, Store, StoreError, bool_to_i64};

const COLUMNS: &str = "id, name, tier, status, status_reason, enabled, transport, max_users, \
     max_domains, max_storage_mb, max_messages_per_day, max_recipients_per_message, \
     max_message_size, rate_per_second, rate_per_minute, max_connections, features, created_at, \
     updated_at, inbound_retention_days";

impl Store {
    pub async fn create_tenant(&self, tenant: &Tenant, audit: Option<&AuditEntry>) -> Result<()> {
        let features = serde_json::to_string(&tenant.features).expect("features serialise");
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO tenants (id, name, tier, status, status_reason, enabled, transport, \
             max_users, max_domains, max_storage_mb, max_messages_per_day, \
             max_recipients_per_message, max_message_size, rate_per_second, rate_per_minute, \
             max_connections, features, created_at, updated_at, inbound_retention_days) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, \
             $18, $19, $20)",
        )
        .bind(&tenant.id)
        .bind(&tenant.name)
        .bind(tenant.tier.as_str())
        .bind(tenant.status.as_str())
        .bind(tenant.status_reason.as_deref())
        .bind(bool_to_i64(tenant.enabled))
        .bind(tenant.transport.map(TransportKind::as_str))
        .bind(tenant.limits.max_users as i64)
        .bind(tenant.limits.max_domains as i64)
        .bind(tenant.limits.max_storage_mb as i64)
        .bind(tenant.limits.max_messages_per_day as i64)
        .bind(tenant.limits.max_recipients_per_message as i64)
        .bind(tenant.limits.max_message_size as i64)
        .bind(tenant.limits.rate_per_second as i64)
        .bind(tenant.limits.rate_per_minute as i64)
        .bind(tenant.limits.max_connections as i64)
        .bind(features)
        .bind(tenant.created_at)
        .bind(tenant.updated_at)
        .bind(tenant.inbound_retention_days as i64)
        .execute(&mut *tx)
        .await
        .map_err(|e| StoreError::conflict_or(e, format!("tenant {}", tenant.id)))?;
        commit_with_audit(tx, audit).await
    }

    pub async fn get_tenant(&self, id: &str) -> Result<Option<Tenant>> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM tenants WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| tenant_from_row(&row)).transpose()
    }

    pub async fn list_tenants(&self) -> Result<Vec<Tenant>> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM tenants ORDER BY created_at, id"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(tenant_from_row).collect()
    }

    /// Writes every mutable field of `tenant` (all but id and created_at); `updated_at` becomes
    /// now, whatever `tenant` says, so every change is dated by the write that made it.
    pub async fn update_tenant(&self, tenant: &Tenant, audit: Option<&AuditEntry>) -> Result<()> {
        if self.write_tenant(tenant, None, audit).await? {
            Ok(())
        } else {
            Err(StoreError::NotFound(format!("tenant {}", tenant.id)))
        }
    }

    /// [`Store::update_tenant`] only if the stored tenant is still the one read: its
    /// `updated_at` is `tenant.updated_at`. False when it changed meanwhile (or is gone), and
    /// then nothing is written: a read-modify-write that lost the race must not undo the other
    /// writer's change with the values it read before it.
    pub async fn update_tenant_if_unchanged(
        &self,
        tenant: &Tenant,
        audit: Option<&AuditEntry>,
    ) -> Result<bool> {
        self.write_tenant(tenant, Some(tenant.updated_at), audit)
            .await
    }

    async fn write_tenant(
        &self,
        tenant: &Tenant,
        read_at: Option<i64>,
        audit: Option<&AuditEntry>,
    ) -> Result<bool> {
        let features = serde_json::to_string(&tenant.features).expect("features serialise");
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "UPDATE tenants SET name = $2, tier = $3, status = $4, status_reason = $5, \
             enabled = $6, transport = $7, max_users = $8, max_domains = $9, \
             max_storage_mb = $10, max_messages_per_day = $11, \
             max_recipients_per_message = $12, max_message_size = $13, rate_per_second = $14, \
             rate_per_minute = $15, max_connections = $16, features = $17, updated_at = $18, \
             inbound_retention_days = $20 \
             WHERE id = $1 AND ($19 IS NULL OR updated_at = $19)",
        )
        .bind(&tenant.id)
        .bind(&tenant.name)
        .bind(tenant.tier.as_str())
        .bind(tenant.status.as_str())
        .bind(tenant.status_reason.as_deref())
        .bind(bool_to_i64(tenant.enabled))
        .bind(tenant.transport.map(TransportKind::as_str))
        .bind(tenant.limits.max_users as i64)
        .bind(tenant.limits.max_domains as i64)
        .bind(tenant.limits.max_storage_mb as i64)
        .bind(tenant.limits.max_messages_per_day as i64)
        .bind(tenant.limits.max_recipients_per_message as i64)
        .bind(tenant.limits.max_message_size as i64)
        .bind(tenant.limits.rate_per_second as i64)
        .bind(tenant.limits.rate_per_minute as i64)
        .bind(tenant.limits.max_connections as i64)
        .bind(features)
        // Later than what was read even within one millisecond, so the next conditional
        // write can tell the two apart.
        .bind(now_ms().max(tenant.updated_at + 1))
        .bind(read_at)
        .bind(tenant.inbound_retention_days as i64)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        commit_with_audit(tx, audit).await?;
        Ok(true)
    }

    /// Tenants by creation, `limit` of them after the (created_at, id) cursor.
    pub async fn list_tenants_page(
        &self,
        after: Option<(i64, String)>,
        limit: u32,
    ) -> Result<Vec<Tenant>> {
        let (after_at, after_id) = after.unwrap_or((i64::MIN, String::new()));
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM tenants \
             WHERE created_at > $1 OR (created_at = $1 AND id > $2) \
             ORDER BY created_at, id LIMIT $3"
        ))
        .bind(after_at)
        .bind(after_id)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(tenant_from_row).collect()
    }

    /// Deletes the tenant (and by cascade its domains, keys, credentials and messages) unless
    /// it still has queued mail. The check and the delete are one statement, so mail enqueued
    /// in between cannot slip through and be dropped unannounced.
    pub async fn delete_tenant_if_idle(
        &self,
        id: &str,
        audit: Option<&AuditEntry>,
    ) -> Result<TenantDeletion> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "DELETE FROM tenants WHERE id = $1 AND NOT EXISTS \
             (SELECT 1 FROM messages WHERE tenant_id = $1 AND status = 'queued')",
        )
        .bind(id)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() > 0 {
            commit_with_audit(tx, audit).await?;
            return Ok(TenantDeletion::Deleted);
        }
        tx.rollback().await?;
        if self.get_tenant(id).await?.is_none() {
            return Ok(TenantDeletion::NotFound);
        }
        Ok(TenantDeletion::HasQueuedMail(
            self.queue_depth(Some(id)).await?,
        ))
    }

    /// Deletes the tenant and, by cascade, its domains, credentials and messages.
    pub async fn delete_tenant(&self, id: &str, audit: Option<&AuditEntry>) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query("DELETE FROM tenants WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        commit_if_changed(tx, done.rows_affected() > 0, audit).await
    }
}

fn tenant_from_row(row: &AnyRow) -> Result<Tenant> {
    let id: String = row.try_get("id")?;
    let corrupt = |what: &str| StoreError::Corrupt(format!("tenant {id}: {what}"));
    let tier: String = row.try_get("tier")?;
    let status: String = row.try_get("status")?;
    let transport: Option<String> = row.try_get("transport")?;
    let features: String = row.try_get("features")?;
    let features: Features = serde_json::from_str(&features).map_err(|_| corrupt("features"))?;
    let limit = |column: &str| -> Result<u64> { Ok(row.try_get::<i64, _>(column)?.max(0) as u64) };
    Ok(Tenant {
        tier: Tier::parse(&tier).ok_or_else(|| corrupt("tier"))?,
        status: TenantStatus::parse(&status).ok_or_else(|| corrupt("status"))?,
        transport: match transport {
            Some(t) => Some(TransportKind::parse(&t).ok_or_else(|| corrupt("transport"))?),
            None => None,
        },
        name: row.try_get("name")?,
        status_reason: row.try_get("status_reason")?,
        enabled: row.try_get::<i64, _>("enabled")? != 0,
        limits: Limits {
            max_users: limit("max_users")?,
            max_domains: limit("max_domains")?,
            max_storage_mb: limit("max_storage_mb")?,
            max_messages_per_day: limit("max_messages_per_day")?,
            max_recipients_per_message: limit("max_recipients_per_message")?,
            max_message_size: limit("max_message_size")?,
            rate_per_second: limit("rate_per_second")?,
            rate_per_minute: limit("rate_per_minute")?,
            max_connections: limit("max_connections")?,
        },
        features,
        inbound_retention_days: limit("inbound_retention_days")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        id,
    })
}

/// What [`Store::delete_tenant_if_idle`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TenantDeletion {
    Deleted,
    NotFound,
    /// Not deleted: this many messages are still queued.
    HasQueuedMail(u64),
}
