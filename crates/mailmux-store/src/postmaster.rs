//! The operator's postmaster mailbox (`postmaster_messages`): mail to the bare
//! `<postmaster>` when `inbound.postmaster` names no tenant address to take it. Rows have the
//! shape of stored inbound mail ([`InboundMessage`], `tenant_id` empty, `recipients` `[]`), so the
//! same views show both.

use crate::inbound::message_from_row;
use crate::{InboundMessage, Result, Store};

// In the shape of `inbound_messages`' columns, so one row reader serves both.
const SUMMARY: &str =
    "id, '' AS tenant_id, mail_from, '[]' AS recipients, size, received_at, verdicts";

impl Store {
    /// Keeps `message` for the operator; durable once this returns.
    pub async fn store_postmaster(&self, message: &InboundMessage) -> Result<()> {
        sqlx::query(
            "INSERT INTO postmaster_messages (id, mail_from, size, raw, received_at, verdicts) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&message.id)
        .bind(&message.mail_from)
        .bind(message.size as i64)
        .bind(message.raw.as_slice())
        .bind(message.received_at)
        .bind(message.verdicts.as_deref())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Newest first, `limit` of them before the `before` id (a cursor); without their bytes.
    pub async fn list_postmaster(
        &self,
        before: Option<&str>,
        limit: u32,
    ) -> Result<Vec<InboundMessage>> {
        // Two statements rather than `$1 IS NULL OR …`: Postgres cannot type a NULL parameter
        // that only IS NULL looks at.
        let rows = match before {
            Some(before) => {
                sqlx::query(&format!(
                    "SELECT {SUMMARY} FROM postmaster_messages WHERE id < $1 \
                     ORDER BY id DESC LIMIT $2"
                ))
                .bind(before)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?
            }
            None => {
                sqlx::query(&format!(
                    "SELECT {SUMMARY} FROM postmaster_messages ORDER BY id DESC LIMIT $1"
                ))
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?
            }
        };
        rows.iter()
            .map(|row| message_from_row(row, false))
            .collect()
    }

    /// One message with its bytes.
    pub async fn get_postmaster(&self, id: &str) -> Result<Option<InboundMessage>> {
        let row = sqlx::query(&format!(
            "SELECT {SUMMARY}, raw FROM postmaster_messages WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| message_from_row(&row, true)).transpose()
    }

    /// Deletes what was received more than `days` before `now` (0 days: kept); how many went.
    pub async fn expire_postmaster(&self, now: i64, days: u64) -> Result<u64> {
        if days == 0 {
            return Ok(0);
        }
        let cutoff =
            now.saturating_sub((days.min(i64::MAX as u64 / 86_400_000) as i64) * 86_400_000);
        let done = sqlx::query("DELETE FROM postmaster_messages WHERE received_at < $1")
            .bind(cutoff)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}
