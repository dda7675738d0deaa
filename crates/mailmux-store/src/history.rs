//! The queue as an operator or tenant reads it: messages with per-recipient status, attempts
//! and last reply, and one message's delivery history. Read-only; the queue crate writes.

use sqlx::Row;
use sqlx::any::AnyRow;

use crate::{Result, Store};

/// Where a message stands, derived from its row and its recipients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageState {
    /// Waiting for its first delivery attempt.
    Queued,
    /// Attempted; some recipient failed temporarily and is tried again later.
    Deferred,
    /// Finished; every recipient was accepted by the next hop.
    Delivered,
    /// Finished; every recipient failed permanently.
    Bounced,
    /// Finished; some recipients delivered, some bounced.
    Partial,
}

impl MessageState {
    pub fn as_str(self) -> &'static str {
        match self {
            MessageState::Queued => "queued",
            MessageState::Deferred => "deferred",
            MessageState::Delivered => "delivered",
            MessageState::Bounced => "bounced",
            MessageState::Partial => "partial",
        }
    }

    pub fn parse(value: &str) -> Option<MessageState> {
        [
            MessageState::Queued,
            MessageState::Deferred,
            MessageState::Delivered,
            MessageState::Bounced,
            MessageState::Partial,
        ]
        .into_iter()
        .find(|s| s.as_str() == value)
    }

    /// The SQL condition selecting messages (alias `m`) in this state.
    fn condition(self) -> &'static str {
        match self {
            MessageState::Queued => "m.status = 'queued' AND m.attempts = 0",
            MessageState::Deferred => "m.status = 'queued' AND m.attempts > 0",
            MessageState::Delivered => {
                "m.status = 'done' AND NOT EXISTS (SELECT 1 FROM recipients r \
                 WHERE r.message_id = m.id AND r.status = 'bounced')"
            }
            MessageState::Bounced => {
                "m.status = 'done' AND NOT EXISTS (SELECT 1 FROM recipients r \
                 WHERE r.message_id = m.id AND r.status <> 'bounced')"
            }
            MessageState::Partial => {
                "m.status = 'done' AND EXISTS (SELECT 1 FROM recipients r \
                 WHERE r.message_id = m.id AND r.status = 'bounced') AND EXISTS (SELECT 1 FROM \
                 recipients r WHERE r.message_id = m.id AND r.status = 'delivered')"
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientView {
    pub address: String,
    /// `queued`, `deferred`, `delivered` or `bounced`.
    pub status: String,
    pub attempts: u32,
    pub last_reply: Option<String>,
    pub last_attempt_at: Option<i64>,
    /// The next hop's id for the message (SES's MessageId), when it gave one.
    pub remote_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageView {
    pub id: String,
    pub tenant_id: String,
    pub mail_from: String,
    pub size: u64,
    /// `smtp`, `api` or `dsn`.
    pub origin: String,
    pub state: MessageState,
    pub created_at: i64,
    /// When the next attempt is due (meaningful while queued or deferred).
    pub next_attempt_at: i64,
    pub attempts: u32,
    pub recipients: Vec<RecipientView>,
}

/// One delivery attempt for one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptView {
    pub recipient: String,
    pub at: i64,
    /// `delivered`, `deferred` or `bounced`.
    pub outcome: String,
    pub reply: String,
}

/// Which messages to list.
#[derive(Debug, Clone, Default)]
pub struct MessageFilter {
    pub state: Option<MessageState>,
    /// Created at or after (Unix ms).
    pub since: Option<i64>,
    /// Cursor: only ids below this one (the list runs newest first).
    pub before_id: Option<String>,
}

const MESSAGE_COLUMNS: &str = "m.id, m.tenant_id, m.mail_from, m.size, m.origin, m.status, \
     m.created_at, m.next_attempt_at, m.attempts, \
     (SELECT COUNT(*) FROM recipients r WHERE r.message_id = m.id AND r.status = 'bounced') \
       AS bounced, \
     (SELECT COUNT(*) FROM recipients r WHERE r.message_id = m.id AND r.status = 'delivered') \
       AS delivered";

impl Store {
    /// A tenant's messages, newest first, with their recipients.
    pub async fn list_messages(
        &self,
        tenant_id: &str,
        filter: &MessageFilter,
        limit: u32,
    ) -> Result<Vec<MessageView>> {
        let mut sql = format!("SELECT {MESSAGE_COLUMNS} FROM messages m WHERE m.tenant_id = $1");
        let mut next = 2;
        if filter.before_id.is_some() {
            sql.push_str(&format!(" AND m.id < ${next}"));
            next += 1;
        }
        if filter.since.is_some() {
            sql.push_str(&format!(" AND m.created_at >= ${next}"));
            next += 1;
        }
        if let Some(state) = filter.state {
            sql.push_str(" AND ");
            sql.push_str(state.condition());
        }
        sql.push_str(&format!(" ORDER BY m.id DESC LIMIT ${next}"));
        let mut query = sqlx::query(&sql).bind(tenant_id);
        if let Some(before) = &filter.before_id {
            query = query.bind(before);
        }
        if let Some(since) = filter.since {
            query = query.bind(since);
        }
        let rows = query.bind(i64::from(limit)).fetch_all(&self.pool).await?;
        let mut messages = rows
            .iter()
            .map(message_from_row)
            .collect::<Result<Vec<_>>>()?;
        self.attach_recipients(&mut messages).await?;
        Ok(messages)
    }

    /// One message of this tenant with its recipients and every delivery attempt, oldest
    /// first. None if the tenant has no such message.
    pub async fn message_history(
        &self,
        tenant_id: &str,
        id: &str,
    ) -> Result<Option<(MessageView, Vec<AttemptView>)>> {
        let row = sqlx::query(&format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages m WHERE m.tenant_id = $1 AND m.id = $2"
        ))
        .bind(tenant_id)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let mut messages = vec![message_from_row(&row)?];
        self.attach_recipients(&mut messages).await?;
        let message = messages.pop().expect("one message");
        let addresses: std::collections::HashMap<i64, String> =
            sqlx::query("SELECT idx, address FROM recipients WHERE message_id = $1")
                .bind(id)
                .fetch_all(&self.pool)
                .await?
                .iter()
                .map(|r| {
                    Ok((
                        r.try_get::<i64, _>("idx")?,
                        r.try_get::<String, _>("address")?,
                    ))
                })
                .collect::<Result<_>>()?;
        let attempts = sqlx::query(
            "SELECT idx, at, outcome, reply FROM delivery_attempts WHERE message_id = $1 \
             ORDER BY at, idx",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| {
            let idx: i64 = r.try_get("idx")?;
            Ok(AttemptView {
                recipient: addresses.get(&idx).cloned().unwrap_or_default(),
                at: r.try_get("at")?,
                outcome: r.try_get("outcome")?,
                reply: r.try_get("reply")?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
        Ok(Some((message, attempts)))
    }

    /// Fills in the recipients of `messages` with one query.
    async fn attach_recipients(&self, messages: &mut [MessageView]) -> Result<()> {
        if messages.is_empty() {
            return Ok(());
        }
        let placeholders: Vec<String> = (1..=messages.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "SELECT message_id, address, status, attempts, last_reply, last_attempt_at, remote_id \
             FROM recipients WHERE message_id IN ({}) ORDER BY message_id, idx",
            placeholders.join(", ")
        );
        let mut query = sqlx::query(&sql);
        for message in messages.iter() {
            query = query.bind(message.id.clone());
        }
        for row in query.fetch_all(&self.pool).await? {
            let message_id: String = row.try_get("message_id")?;
            let status: String = row.try_get("status")?;
            let attempts = row.try_get::<i64, _>("attempts")?.max(0) as u32;
            let status = match status.as_str() {
                "pending" if attempts == 0 => "queued".to_string(),
                "pending" => "deferred".to_string(),
                _ => status,
            };
            if let Some(message) = messages.iter_mut().find(|m| m.id == message_id) {
                message.recipients.push(RecipientView {
                    address: row.try_get("address")?,
                    status,
                    attempts,
                    last_reply: row.try_get("last_reply")?,
                    last_attempt_at: row.try_get("last_attempt_at")?,
                    remote_id: row.try_get("remote_id")?,
                });
            }
        }
        Ok(())
    }
}

fn message_from_row(row: &AnyRow) -> Result<MessageView> {
    let status: String = row.try_get("status")?;
    let attempts = row.try_get::<i64, _>("attempts")?.max(0) as u32;
    let bounced: i64 = row.try_get("bounced")?;
    let delivered: i64 = row.try_get("delivered")?;
    let state = match (status.as_str(), attempts, bounced, delivered) {
        ("queued", 0, _, _) => MessageState::Queued,
        ("queued", _, _, _) => MessageState::Deferred,
        (_, _, 0, _) => MessageState::Delivered,
        (_, _, _, 0) => MessageState::Bounced,
        _ => MessageState::Partial,
    };
    Ok(MessageView {
        id: row.try_get("id")?,
        tenant_id: row.try_get("tenant_id")?,
        mail_from: row.try_get("mail_from")?,
        size: row.try_get::<i64, _>("size")?.max(0) as u64,
        origin: row.try_get("origin")?,
        state,
        created_at: row.try_get("created_at")?,
        next_attempt_at: row.try_get("next_attempt_at")?,
        attempts,
        recipients: Vec::new(),
    })
}
