//! The queue's tables: messages with their bodies, recipients with per-recipient status, and
//! the log of delivery attempts.
//!
//! Writes come in batches (many messages per transaction) because a commit is an fsync: the
//! queue crate collects concurrent enqueues and delivery reports and hands them over together.
//!
//! Over 600 lines on purpose: enqueue, claim, lease, report, journal recovery and the spool's
//! sweep all read and write the same rows under one set of rules (leases, fencing, the quota
//! lock), and they are easier to keep consistent side by side than spread over files.

use std::collections::BTreeMap;
use std::sync::Arc;

use mailmux_core::queued::{
    Admission, CommitOutcome, DeliveryReport, JournaledDelivery, NewMessage, QueuedMessage,
    QueuedRecipient, RecipientStatus,
};
use mailmux_core::{BodyFlags, QueueId, address_domain, now_ms};
use sqlx::{Any, Row, Transaction};

use crate::{Backend, Result, Store};

const FLAG_EIGHT_BIT: i64 = 1;
const FLAG_SMTPUTF8: i64 = 2;

fn flags_to_i64(flags: BodyFlags) -> i64 {
    (if flags.eight_bit { FLAG_EIGHT_BIT } else { 0 })
        | (if flags.smtputf8 { FLAG_SMTPUTF8 } else { 0 })
}

fn flags_from_i64(value: i64) -> BodyFlags {
    BodyFlags {
        eight_bit: value & FLAG_EIGHT_BIT != 0,
        smtputf8: value & FLAG_SMTPUTF8 != 0,
    }
}

impl Store {
    /// Makes `messages` durable and records `reports`, all in one transaction: one commit,
    /// one fsync, however many sessions and deliveries contributed. When this returns Ok,
    /// every message it answers [`Admission::Written`] for is durable; the others (over their
    /// tenant's daily quota, see [`admit_within_quota`]) were not written. A report is
    /// recorded only if its `lease_owner` still holds the message (see [`record_report`]).
    pub async fn commit_batch(
        &self,
        messages: &[NewMessage],
        reports: &[DeliveryReport],
    ) -> Result<CommitOutcome> {
        // SQLite: IMMEDIATE takes the write lock first, so the quota count below and the
        // inserts see one state even if another connection writes too (a deferred transaction
        // that reads, then writes, fails instead of waiting when another wrote meanwhile).
        let mut tx = match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool.begin().await?,
        };
        let admissions = admit_within_quota(&mut tx, self.backend, messages, now_ms()).await?;
        let written: Vec<&NewMessage> = messages
            .iter()
            .zip(&admissions)
            .filter(|(_, admission)| **admission == Admission::Written)
            .map(|(message, _)| message)
            .collect();
        insert_messages(&mut tx, &written).await?;
        let mut recorded = Vec::with_capacity(reports.len());
        let mut freed_bodies = Vec::new();
        for report in reports {
            let outcome = record_report(&mut tx, report).await?;
            recorded.push(outcome.is_some());
            freed_bodies.extend(outcome.flatten());
        }
        tx.commit().await?;
        Ok(CommitOutcome {
            admissions,
            recorded,
            freed_bodies,
        })
    }

    /// Records the journal's deliveries of `owner` after a crash or restart (see the queue
    /// crate's journal): each journaled recipient still pending is marked delivered with the
    /// remote's reply, and a message left with no pending recipient is done. Messages another
    /// node has leased meanwhile are left to it. Returns how many recipients were recorded.
    pub async fn record_journaled_deliveries(
        &self,
        owner: &str,
        deliveries: &[JournaledDelivery],
    ) -> Result<u64> {
        let mut tx = match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool.begin().await?,
        };
        let lock = match self.backend {
            Backend::Sqlite => "",
            Backend::Postgres => "FOR UPDATE",
        };
        let check = format!(
            "SELECT id FROM messages WHERE id = $1 AND status = 'queued' \
             AND (lease_owner IS NULL OR lease_owner = $2) {lock}"
        );
        let mut recorded = 0;
        for delivery in deliveries {
            let mine: Option<String> = sqlx::query_scalar(&check)
                .bind(&delivery.message_id)
                .bind(owner)
                .fetch_optional(&mut *tx)
                .await?;
            if mine.is_none() {
                continue;
            }
            for (idx, reply) in &delivery.recipients {
                let updated = sqlx::query(
                    "UPDATE recipients SET status = 'delivered', attempts = attempts + 1, \
                         last_reply = $3, last_attempt_at = $4 \
                     WHERE message_id = $1 AND idx = $2 AND status = 'pending'",
                )
                .bind(&delivery.message_id)
                .bind(*idx as i64)
                .bind(reply)
                .bind(delivery.at)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if updated == 0 {
                    continue;
                }
                recorded += 1;
                sqlx::query(
                    "INSERT INTO delivery_attempts (message_id, idx, at, outcome, reply) \
                     VALUES ($1, $2, $3, 'delivered', $4)",
                )
                .bind(&delivery.message_id)
                .bind(*idx as i64)
                .bind(delivery.at)
                .bind(reply)
                .execute(&mut *tx)
                .await?;
            }
            sqlx::query(
                "UPDATE messages SET status = 'done', body = NULL, attempts = attempts + 1, \
                     lease_owner = NULL, lease_until = NULL \
                 WHERE id = $1 AND status = 'queued' AND NOT EXISTS \
                   (SELECT 1 FROM recipients WHERE message_id = $1 AND status = 'pending')",
            )
            .bind(&delivery.message_id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(recorded)
    }

    /// Extends `owner`'s leases on `ids` to `until` (the heartbeat of a node's deliveries in
    /// flight); returns how many it still held. A lease another node has taken is not touched.
    pub async fn renew_leases(&self, owner: &str, ids: &[String], until: i64) -> Result<u64> {
        let mut renewed = 0;
        // Bounded statements: SQLite allows 32,766 parameters, and short ones plan faster.
        for chunk in ids.chunks(500) {
            let placeholders: Vec<String> =
                (0..chunk.len()).map(|n| format!("${}", n + 3)).collect();
            let sql = format!(
                "UPDATE messages SET lease_until = $1, next_attempt_at = $1 \
                 WHERE lease_owner = $2 AND status = 'queued' AND id IN ({})",
                placeholders.join(", ")
            );
            let mut query = sqlx::query(&sql).bind(until).bind(owner);
            for id in chunk {
                query = query.bind(id);
            }
            renewed += query.execute(&self.pool).await?.rows_affected();
        }
        Ok(renewed)
    }

    /// Gives a leased message back without recording an attempt (its tenant is paused: the
    /// scheduler takes it again once the tenant is active), due at `now`. Only `owner`'s
    /// lease is released.
    pub async fn release_lease(&self, message_id: &str, owner: &str, now: i64) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE messages SET lease_owner = NULL, lease_until = NULL, next_attempt_at = $3 \
             WHERE id = $1 AND lease_owner = $2",
        )
        .bind(message_id)
        .bind(owner)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// When the oldest message a tenant submitted at or after `since` was accepted (Unix ms):
    /// the daily quota frees its next slot 24 hours after that.
    pub async fn oldest_message_since(&self, tenant_id: &str, since: i64) -> Result<Option<i64>> {
        let oldest: Option<i64> = sqlx::query_scalar(
            "SELECT MIN(created_at) FROM messages \
             WHERE tenant_id = $1 AND created_at >= $2 AND origin <> 'dsn'",
        )
        .bind(tenant_id)
        .bind(since)
        .fetch_one(&self.pool)
        .await?;
        Ok(oldest)
    }

    /// Leases up to `limit` due messages to `owner` and returns them with their pending
    /// recipients: [`Store::claim_due_ids`], then [`Store::load_pending`] for each.
    pub async fn claim_due(
        &self,
        owner: &str,
        now: i64,
        lease_until: i64,
        limit: usize,
    ) -> Result<Vec<QueuedMessage>> {
        let ids = self.claim_due_ids(owner, now, lease_until, limit).await?;
        let mut messages = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(message) = self.load_pending(&id).await? {
                messages.push(message);
            }
        }
        Ok(messages)
    }

    /// Leases up to `limit` messages that are due (`next_attempt_at <= now`), not leased by a
    /// live lease, and whose tenant is active, to `owner` until `lease_until`; returns their
    /// ids. Priority first, then the oldest due.
    ///
    /// A leased message is not due before its lease ends: leasing (here, at enqueue, and on
    /// renewal) moves `next_attempt_at` to the lease's end, so the due range of the
    /// `messages_due` index holds no message in flight, and a claim does not scan past every
    /// message being delivered. Giving a lease back makes the message due at once.
    ///
    /// On Postgres several nodes claim concurrently: `FOR UPDATE OF m SKIP LOCKED` makes each
    /// message row go to exactly one of them (`OF m`: the tenant rows of the join are only
    /// read, and locking them would make other nodes skip a whole tenant). SQLite has a single
    /// writer, so the UPDATE is atomic as it is.
    pub async fn claim_due_ids(
        &self,
        owner: &str,
        now: i64,
        lease_until: i64,
        limit: usize,
    ) -> Result<Vec<String>> {
        let lock = match self.backend {
            Backend::Sqlite => "",
            Backend::Postgres => "FOR UPDATE OF m SKIP LOCKED",
        };
        let claim = format!(
            "UPDATE messages SET lease_owner = $1, lease_until = $2, next_attempt_at = $2 \
             WHERE id IN ( \
               SELECT m.id FROM messages m JOIN tenants t ON t.id = m.tenant_id \
               WHERE m.status = 'queued' AND m.next_attempt_at <= $3 \
                 AND (m.lease_until IS NULL OR m.lease_until < $3) \
                 AND t.status = 'active' AND t.enabled = 1 \
               ORDER BY m.priority DESC, m.next_attempt_at LIMIT $4 {lock}) \
             RETURNING id"
        );
        let ids: Vec<String> = sqlx::query_scalar(&claim)
            .bind(owner)
            .bind(lease_until)
            .bind(now)
            .bind(limit as i64)
            .fetch_all(&self.pool)
            .await?;
        Ok(ids)
    }

    /// One queued message with its pending recipients (None if gone or finished).
    pub async fn load_pending(&self, id: &str) -> Result<Option<QueuedMessage>> {
        let Some(row) = sqlx::query(
            "SELECT id, tenant_id, mail_from, flags, body, body_path, created_at, attempts \
             FROM messages WHERE id = $1 AND status = 'queued'",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        else {
            return Ok(None);
        };
        let body: Option<Vec<u8>> = row.try_get("body")?;
        let recipients = sqlx::query(
            "SELECT idx, address, domain, attempts FROM recipients \
             WHERE message_id = $1 AND status = 'pending' ORDER BY idx",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| {
            Ok(QueuedRecipient {
                idx: r.try_get::<i64, _>("idx")? as u32,
                address: r.try_get("address")?,
                domain: r.try_get("domain")?,
                attempts: r.try_get::<i64, _>("attempts")? as u32,
            })
        })
        .collect::<Result<Vec<_>>>()?;
        Ok(Some(QueuedMessage {
            id: QueueId(row.try_get("id")?),
            tenant_id: row.try_get("tenant_id")?,
            mail_from: row.try_get("mail_from")?,
            flags: flags_from_i64(row.try_get("flags")?),
            body: Arc::new(body.unwrap_or_default()),
            body_path: row.try_get("body_path")?,
            created_at: row.try_get("created_at")?,
            attempts: row.try_get::<i64, _>("attempts")? as u32,
            recipients,
        }))
    }

    /// Deletes finished messages created before `before` (their recipients and attempt log go
    /// with them); returns how many.
    pub async fn purge_finished(&self, before: i64) -> Result<u64> {
        let done = sqlx::query("DELETE FROM messages WHERE status = 'done' AND created_at < $1")
            .bind(before)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    /// Which of the spool files `paths` (`<node>/<queue id>`) a queued message still points at;
    /// the others are orphans the queue's sweep deletes. Looked up by the id in the path (the
    /// primary key), so a sweep costs one indexed probe per file whatever the queue's size.
    pub async fn referenced_bodies(&self, paths: &[String]) -> Result<Vec<String>> {
        let mut referenced = Vec::new();
        for chunk in paths.chunks(500) {
            let ids: Vec<&str> = chunk
                .iter()
                .map(|p| p.rsplit_once('/').map_or(p.as_str(), |(_, id)| id))
                .collect();
            let placeholders: Vec<String> = (1..=ids.len()).map(|n| format!("${n}")).collect();
            let sql = format!(
                "SELECT body_path FROM messages WHERE status = 'queued' AND body_path IS NOT NULL \
                 AND id IN ({})",
                placeholders.join(", ")
            );
            let mut query = sqlx::query_scalar::<_, String>(&sql);
            for id in ids {
                query = query.bind(id);
            }
            let found = query.fetch_all(&self.pool).await?;
            referenced.extend(found.into_iter().filter(|p| chunk.contains(p)));
        }
        Ok(referenced)
    }

    /// Gives back every lease held by `owner` (a node that restarted holds none in memory, a
    /// node that stops gives its own back), each message due at `now`.
    pub async fn release_leases(&self, owner: &str, now: i64) -> Result<u64> {
        let done = sqlx::query(
            "UPDATE messages SET lease_owner = NULL, lease_until = NULL, next_attempt_at = $2 \
             WHERE lease_owner = $1",
        )
        .bind(owner)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Messages a tenant submitted (DSNs excluded) at or after `since` (Unix ms): the rolling daily count.
    pub async fn count_messages_since(&self, tenant_id: &str, since: i64) -> Result<u64> {
        let count: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM messages \
             WHERE tenant_id = $1 AND created_at >= $2 AND origin <> 'dsn'",
        )
        .bind(tenant_id)
        .bind(since)
        .fetch_one(&self.pool)
        .await?;
        Ok(count as u64)
    }

    /// Messages not yet finished, over all tenants (`None`) or one.
    pub async fn queue_depth(&self, tenant_id: Option<&str>) -> Result<u64> {
        let count: i64 = match tenant_id {
            Some(tenant) => {
                sqlx::query_scalar(
                    "SELECT COUNT(*) FROM messages WHERE status = 'queued' AND tenant_id = $1",
                )
                .bind(tenant)
                .fetch_one(&self.pool)
                .await?
            }
            None => {
                sqlx::query_scalar("SELECT COUNT(*) FROM messages WHERE status = 'queued'")
                    .fetch_one(&self.pool)
                    .await?
            }
        };
        Ok(count as u64)
    }

    /// Per-recipient state of one message: (address, status, attempts, last reply).
    pub async fn recipient_states(
        &self,
        message_id: &str,
    ) -> Result<Vec<(String, String, u32, Option<String>)>> {
        let rows = sqlx::query(
            "SELECT address, status, attempts, last_reply FROM recipients \
             WHERE message_id = $1 ORDER BY idx",
        )
        .bind(message_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("address")?,
                    r.try_get("status")?,
                    r.try_get::<i64, _>("attempts")? as u32,
                    r.try_get("last_reply")?,
                ))
            })
            .collect()
    }
}

/// Rolling window of the daily quota.
pub const QUOTA_WINDOW_MS: i64 = 24 * 60 * 60 * 1000;

/// The daily quota, decided inside the commit that writes the messages: per tenant with
/// messages in the batch (DSNs count against no quota), its quota is read and its messages of
/// the last 24 hours counted in this transaction, and only as many of the batch's messages as
/// fit are written. The count is of message rows, so it is exact after a restart and on every
/// node.
///
/// Concurrency: the MAIL-time check alone would let every session that passed it at
/// `max - 1` commit. Here the check and the insert are one transaction, and on Postgres the
/// tenant's row is locked (`FOR NO KEY UPDATE`) first, so two commits for one tenant (two nodes,
/// or two batches one node has in flight) take
/// turns; under READ COMMITTED the count that follows the lock sees what the other node
/// committed. Tenants are locked in id order, so two batches never wait on each other in a
/// cycle. On SQLite the transaction holds the database's write lock from its start
/// (`BEGIN IMMEDIATE`), which serialises commits.
async fn admit_within_quota(
    tx: &mut Transaction<'_, Any>,
    backend: Backend,
    messages: &[NewMessage],
    now: i64,
) -> Result<Vec<Admission>> {
    let mut admissions = vec![Admission::Written; messages.len()];
    let mut by_tenant: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (n, message) in messages.iter().enumerate() {
        if message.origin != "dsn" {
            by_tenant.entry(&message.tenant_id).or_default().push(n);
        }
    }
    let lock = match backend {
        Backend::Sqlite => "",
        // NO KEY: inserting a message takes a KEY SHARE lock on its tenant's row (the foreign
        // key), which FOR UPDATE would conflict with: two batches in flight, each holding one
        // tenant and inserting a bounce for the other's, would deadlock.
        Backend::Postgres => "FOR NO KEY UPDATE",
    };
    let quota_query = format!("SELECT max_messages_per_day FROM tenants WHERE id = $1 {lock}");
    for (tenant_id, indexes) in by_tenant {
        let max: Option<i64> = sqlx::query_scalar(&quota_query)
            .bind(tenant_id)
            .fetch_optional(&mut **tx)
            .await?;
        // No such tenant: the insert fails on the foreign key, as it always did.
        let max = match max {
            Some(max) if max > 0 => max as u64,
            _ => continue,
        };
        let sent: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM messages \
             WHERE tenant_id = $1 AND created_at >= $2 AND origin <> 'dsn'",
        )
        .bind(tenant_id)
        .bind(now - QUOTA_WINDOW_MS)
        .fetch_one(&mut **tx)
        .await?;
        let room = max.saturating_sub(sent.max(0) as u64) as usize;
        for &n in indexes.iter().skip(room) {
            admissions[n] = Admission::OverQuota { max_per_day: max };
        }
    }
    Ok(admissions)
}

/// Columns bound per message row by [`insert_messages`].
const MESSAGE_PARAMS: usize = 13;
/// Rows per INSERT: 100 × 13 parameters, far below both databases' limits (SQLite 32,766,
/// Postgres 65,535), and a whole typical group commit in one statement.
const MESSAGES_PER_STATEMENT: usize = 100;
/// Columns bound per recipient row.
const RECIPIENT_PARAMS: usize = 4;
const RECIPIENTS_PER_STATEMENT: usize = 500;

/// Writes `messages` with their recipients in as few statements as the parameter limits allow:
/// one INSERT for up to 100 messages, one for up to 500 recipients. The writer runs statements
/// one after another, and everything queued behind it waits for each round trip (on Postgres, a
/// network round trip per statement), so a batch of twenty messages costs two statements, not
/// forty.
async fn insert_messages(tx: &mut Transaction<'_, Any>, messages: &[&NewMessage]) -> Result<()> {
    for chunk in messages.chunks(MESSAGES_PER_STATEMENT) {
        let rows: Vec<String> = (0..chunk.len())
            .map(|n| {
                let p: Vec<String> = (1..=MESSAGE_PARAMS)
                    .map(|k| format!("${}", n * MESSAGE_PARAMS + k))
                    .collect();
                // id, tenant, from, flags, size, body, body_path, origin, priority, created,
                // next attempt, lease owner, lease until; status and attempts are constants.
                format!(
                    "({}, {}, {}, {}, {}, {}, {}, 'queued', {}, {}, {}, {}, 0, {}, {})",
                    p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7], p[8], p[9], p[10], p[11], p[12]
                )
            })
            .collect();
        let sql = format!(
            "INSERT INTO messages (id, tenant_id, mail_from, flags, size, body, body_path, status, \
                 origin, priority, created_at, next_attempt_at, attempts, lease_owner, lease_until) \
             VALUES {}",
            rows.join(", ")
        );
        let mut insert = sqlx::query(&sql);
        for message in chunk {
            let (lease_owner, lease_until) = match &message.lease {
                Some((owner, until)) => (Some(owner.as_str()), Some(*until)),
                None => (None, None),
            };
            insert = insert
                .bind(&message.id.0)
                .bind(&message.tenant_id)
                .bind(&message.envelope.mail_from)
                .bind(flags_to_i64(message.envelope.flags))
                .bind(message.body.len() as i64)
                // A spooled body is on disk already: the row only points at it.
                .bind(match message.body_path {
                    Some(_) => None,
                    None => Some(message.body.as_slice()),
                })
                .bind(message.body_path.as_deref())
                .bind(message.origin)
                .bind(message.priority)
                .bind(message.created_at)
                .bind(lease_until.unwrap_or(message.created_at))
                .bind(lease_owner)
                .bind(lease_until);
        }
        insert.execute(&mut **tx).await?;
    }
    let recipients: Vec<(&str, usize, &String)> = messages
        .iter()
        .flat_map(|m| {
            m.envelope
                .rcpt_to
                .iter()
                .enumerate()
                .map(move |(idx, address)| (m.id.0.as_str(), idx, address))
        })
        .collect();
    for chunk in recipients.chunks(RECIPIENTS_PER_STATEMENT) {
        let rows: Vec<String> = (0..chunk.len())
            .map(|n| {
                let base = n * RECIPIENT_PARAMS;
                format!(
                    "(${}, ${}, ${}, ${}, 'pending', 0)",
                    base + 1,
                    base + 2,
                    base + 3,
                    base + 4
                )
            })
            .collect();
        let sql = format!(
            "INSERT INTO recipients (message_id, idx, address, domain, status, attempts) VALUES {}",
            rows.join(", ")
        );
        let mut insert = sqlx::query(&sql);
        for (message_id, idx, address) in chunk {
            insert = insert
                .bind(*message_id)
                .bind(*idx as i64)
                .bind(*address)
                .bind(address_domain(address));
        }
        insert.execute(&mut **tx).await?;
    }
    Ok(())
}

/// Applies one delivery report: per-recipient status and reply, the attempt log, and per
/// message either the next attempt time (some recipient still pending) or `done` (its body is
/// dropped then), and queues its bounce. Releases the lease.
///
/// Fenced: nothing happens unless the message is still leased to `report.lease_owner`
/// (answers false then). A node whose lease ran out while its attempt was stalled, and whose
/// message another node took meanwhile, changes nothing and sends no DSN. The fence is the
/// first statement, an UPDATE of the message row: on Postgres it holds the row's lock until
/// the commit, so no other node can take the message between the check and the recipients'
/// updates; on SQLite the transaction holds the write lock from its start. A report for a
/// message that is gone (its tenant was deleted) changes nothing either.
///
/// Few statements, because the writer runs them one after another and a report waits for
/// everything ahead of it (that wait is the window in which a crash re-sends a delivered
/// message): the message is marked done in the fencing UPDATE itself when no recipient was
/// deferred. That relies on an attempt reporting every recipient pending when its message was
/// loaded, and on nobody else changing a leased message's recipients: both hold, because
/// recipients change only here, under the lease.
///
/// Answers `None` when fenced off, else `Some` with the spool file the message no longer needs
/// if this report finished it.
async fn record_report(
    tx: &mut Transaction<'_, Any>,
    report: &DeliveryReport,
) -> Result<Option<Option<String>>> {
    let finished = report
        .results
        .iter()
        .all(|r| r.status != RecipientStatus::Deferred);
    let held = sqlx::query(
        "UPDATE messages SET attempts = attempts + 1, lease_owner = NULL, lease_until = NULL, \
             next_attempt_at = $3, \
             status = CASE WHEN $4 = 1 THEN 'done' ELSE status END, \
             body = CASE WHEN $4 = 1 THEN NULL ELSE body END \
         WHERE id = $1 AND lease_owner = $2 AND status = 'queued' RETURNING body_path",
    )
    .bind(&report.message_id.0)
    .bind(&report.lease_owner)
    .bind(report.next_attempt_at)
    .bind(finished as i64)
    .fetch_optional(&mut **tx)
    .await?;
    let Some(held) = held else {
        return Ok(None);
    };
    let body_path: Option<String> = held.try_get("body_path")?;
    let freed = body_path.filter(|_| finished);
    for result in &report.results {
        let status = match result.status {
            RecipientStatus::Deferred => "pending",
            other => other.as_str(),
        };
        sqlx::query(
            "UPDATE recipients SET status = $3, attempts = attempts + 1, last_reply = $4, \
                 last_attempt_at = $5, remote_id = COALESCE($6, remote_id) \
                 WHERE message_id = $1 AND idx = $2",
        )
        .bind(&report.message_id.0)
        .bind(result.idx as i64)
        .bind(status)
        .bind(&result.reply)
        .bind(report.at)
        .bind(result.remote_id.as_deref())
        .execute(&mut **tx)
        .await?;
    }
    // The attempt log: one statement for up to 500 recipients.
    for chunk in report.results.chunks(500) {
        let rows: Vec<String> = (0..chunk.len())
            .map(|n| {
                let base = 3 + n * 3;
                format!("($1, ${}, $2, ${}, ${})", base, base + 1, base + 2)
            })
            .collect();
        let sql = format!(
            "INSERT INTO delivery_attempts (message_id, idx, at, outcome, reply) VALUES {}",
            rows.join(", ")
        );
        let mut insert = sqlx::query(&sql).bind(&report.message_id.0).bind(report.at);
        for result in chunk {
            insert = insert
                .bind(result.idx as i64)
                .bind(result.status.as_str())
                .bind(&result.reply);
        }
        insert.execute(&mut **tx).await?;
    }
    if let Some(bounce) = &report.bounce {
        insert_messages(tx, &[bounce]).await?;
    }
    Ok(Some(freed))
}
