//! Inbound mail kept by `store` rules (`inbound_messages`). [`Store::store_inbound`] is the
//! commit the MX waits for before it answers 250: the message is durable once it returns.

use sqlx::Row;
use sqlx::any::AnyRow;

use crate::webhooks::insert_delivery;
use crate::{NewWebhookDelivery, Result, Store};

/// One stored inbound message: for one tenant, with the recipients of its that got it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundMessage {
    pub id: String,
    pub tenant_id: String,
    pub mail_from: String,
    /// JSON: `[{"address", "rule_id", "tag"}]`, as the inbound crate wrote it.
    pub recipients: String,
    pub size: u64,
    /// The exact bytes as accepted; empty in listings (see [`Store::list_inbound`]).
    pub raw: Vec<u8>,
    pub received_at: i64,
    /// JSON: the SPF, DKIM, DMARC and ARC verdicts; `None` when the checks were off.
    pub verdicts: Option<String>,
}

const SUMMARY: &str = "id, tenant_id, mail_from, recipients, size, received_at, verdicts";

impl Store {
    /// Stores `messages` (one per tenant of a transaction) in one transaction: all or none.
    pub async fn store_inbound(&self, messages: &[InboundMessage]) -> Result<()> {
        self.store_inbound_with_webhooks(messages, &[]).await
    }

    /// As [`Store::store_inbound`], with the webhook deliveries of the messages in the same
    /// transaction: once the MX answers 250, the hand-offs are as durable as the mail.
    pub async fn store_inbound_with_webhooks(
        &self,
        messages: &[InboundMessage],
        deliveries: &[NewWebhookDelivery],
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        for m in messages {
            sqlx::query(
                "INSERT INTO inbound_messages (id, tenant_id, mail_from, recipients, size, raw, \
                 received_at, verdicts) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(&m.id)
            .bind(&m.tenant_id)
            .bind(&m.mail_from)
            .bind(&m.recipients)
            .bind(m.size as i64)
            .bind(m.raw.as_slice())
            .bind(m.received_at)
            .bind(m.verdicts.as_deref())
            .execute(&mut *tx)
            .await?;
        }
        for delivery in deliveries {
            insert_delivery(&mut tx, delivery).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// A tenant's stored messages newest first (ids sort by time), `limit` of them before the
    /// `before` id (a cursor); without their bytes.
    pub async fn list_inbound(
        &self,
        tenant_id: &str,
        before: Option<&str>,
        limit: u32,
    ) -> Result<Vec<InboundMessage>> {
        let rows = match before {
            Some(before) => {
                sqlx::query(&format!(
                    "SELECT {SUMMARY} FROM inbound_messages WHERE tenant_id = $1 AND id < $2 \
                     ORDER BY id DESC LIMIT $3"
                ))
                .bind(tenant_id)
                .bind(before)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?
            }
            None => {
                sqlx::query(&format!(
                    "SELECT {SUMMARY} FROM inbound_messages WHERE tenant_id = $1 \
                     ORDER BY id DESC LIMIT $2"
                ))
                .bind(tenant_id)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?
            }
        };
        rows.iter()
            .map(|row| message_from_row(row, false))
            .collect()
    }

    /// One stored message with its bytes.
    pub async fn get_inbound(&self, tenant_id: &str, id: &str) -> Result<Option<InboundMessage>> {
        let row = sqlx::query(&format!(
            "SELECT {SUMMARY}, raw FROM inbound_messages WHERE tenant_id = $1 AND id = $2"
        ))
        .bind(tenant_id)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| message_from_row(&row, true)).transpose()
    }

    /// Bytes of stored inbound mail a tenant holds (towards `max_storage_mb`).
    pub async fn inbound_bytes(&self, tenant_id: &str) -> Result<u64> {
        // CAST: Postgres sums BIGINT into NUMERIC, which the Any driver cannot decode.
        let bytes: i64 = sqlx::query_scalar(
            "SELECT CAST(COALESCE(SUM(size), 0) AS BIGINT) FROM inbound_messages \
             WHERE tenant_id = $1",
        )
        .bind(tenant_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(bytes.max(0) as u64)
    }

    /// Retention at `now`: deletes each tenant's stored messages older than its
    /// `inbound_retention_days`, or `default_days` for tenants that set none (0 days: kept);
    /// how many went. The clock is the caller's, so tests move it instead of waiting days.
    pub async fn expire_inbound(&self, now: i64, default_days: u64) -> Result<u64> {
        let done = sqlx::query(
            "DELETE FROM inbound_messages WHERE id IN (SELECT m.id FROM inbound_messages m \
             JOIN tenants t ON t.id = m.tenant_id \
             WHERE (CASE WHEN t.inbound_retention_days > 0 THEN t.inbound_retention_days \
                    ELSE $2 END) > 0 \
             AND m.received_at < $1 - (CASE WHEN t.inbound_retention_days > 0 \
                    THEN t.inbound_retention_days ELSE $2 END) * 86400000)",
        )
        .bind(now)
        .bind(default_days.min(i64::MAX as u64 / 86_400_000) as i64)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }
}

pub(crate) fn message_from_row(row: &AnyRow, with_raw: bool) -> Result<InboundMessage> {
    Ok(InboundMessage {
        id: row.try_get("id")?,
        tenant_id: row.try_get("tenant_id")?,
        mail_from: row.try_get("mail_from")?,
        recipients: row.try_get("recipients")?,
        size: row.try_get::<i64, _>("size")?.max(0) as u64,
        raw: if with_raw {
            row.try_get("raw")?
        } else {
            Vec::new()
        },
        received_at: row.try_get("received_at")?,
        verdicts: row.try_get("verdicts")?,
    })
}
