//! Numbers derived from the queue tables for usage reports and `/metrics`. They are counted
//! from rows, not kept in memory, so they are exact after a restart and the same on every node
//! sharing the database.

use std::collections::BTreeMap;

use sqlx::Row;

use crate::{Result, Store};

/// Per-tenant totals since the tenant was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TenantCounters {
    /// Messages accepted from the tenant (DSNs mailmux generated are not counted).
    pub accepted: u64,
    /// Recipients accepted by the next hop.
    pub delivered: u64,
    /// Temporary failures: one per recipient per failed attempt.
    pub deferred: u64,
    /// Recipients that failed permanently.
    pub bounced: u64,
    /// Messages still queued now.
    pub queued: u64,
}

impl Store {
    /// Bytes of message content the tenant has stored now: its unfinished messages (a body,
    /// in the row or in the spool, is dropped once every recipient is final).
    pub async fn stored_bytes(&self, tenant_id: &str) -> Result<u64> {
        // CAST: Postgres sums BIGINT into NUMERIC, which the Any driver cannot decode.
        let bytes: i64 = sqlx::query_scalar(
            "SELECT CAST(COALESCE(SUM(size), 0) AS BIGINT) FROM messages \
             WHERE tenant_id = $1 AND status = 'queued'",
        )
        .bind(tenant_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(bytes.max(0) as u64)
    }

    /// [`TenantCounters`] of every tenant that has any message, by tenant id.
    ///
    /// Four grouped scans; fine for a scrape every few seconds on a queue of some millions of
    /// rows, but this is the query to move to maintained counters if it ever is not.
    pub async fn tenant_counters(&self) -> Result<BTreeMap<String, TenantCounters>> {
        let mut counters: BTreeMap<String, TenantCounters> = BTreeMap::new();
        let rows = sqlx::query(
            "SELECT tenant_id, \
               COUNT(CASE WHEN origin <> 'dsn' THEN 1 END) AS accepted, \
               COUNT(CASE WHEN status = 'queued' THEN 1 END) AS queued \
             FROM messages GROUP BY tenant_id",
        )
        .fetch_all(&self.pool)
        .await?;
        for row in rows {
            let entry = counters.entry(row.try_get("tenant_id")?).or_default();
            entry.accepted = row.try_get::<i64, _>("accepted")?.max(0) as u64;
            entry.queued = row.try_get::<i64, _>("queued")?.max(0) as u64;
        }
        let rows = sqlx::query(
            "SELECT m.tenant_id AS tenant_id, \
               COUNT(CASE WHEN r.status = 'delivered' THEN 1 END) AS delivered, \
               COUNT(CASE WHEN r.status = 'bounced' THEN 1 END) AS bounced \
             FROM recipients r JOIN messages m ON m.id = r.message_id GROUP BY m.tenant_id",
        )
        .fetch_all(&self.pool)
        .await?;
        for row in rows {
            let entry = counters.entry(row.try_get("tenant_id")?).or_default();
            entry.delivered = row.try_get::<i64, _>("delivered")?.max(0) as u64;
            entry.bounced = row.try_get::<i64, _>("bounced")?.max(0) as u64;
        }
        let rows = sqlx::query(
            "SELECT m.tenant_id AS tenant_id, COUNT(*) AS deferred \
             FROM delivery_attempts a JOIN messages m ON m.id = a.message_id \
             WHERE a.outcome = 'deferred' GROUP BY m.tenant_id",
        )
        .fetch_all(&self.pool)
        .await?;
        for row in rows {
            let entry = counters.entry(row.try_get("tenant_id")?).or_default();
            entry.deferred = row.try_get::<i64, _>("deferred")?.max(0) as u64;
        }
        Ok(counters)
    }
}
