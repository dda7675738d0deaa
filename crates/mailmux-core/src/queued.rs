//! The queue's vocabulary, shared by everything on the data path: a message to make durable
//! ([`NewMessage`]), one taken for a delivery attempt ([`QueuedMessage`]), what the attempt
//! found per recipient ([`RecipientResult`]) and reports ([`DeliveryReport`]), and what a
//! commit answered ([`Admission`], [`CommitOutcome`]). The queue crate re-exports them and
//! defines the storage contract over them; the store implements it in SQL; delivery, the
//! listeners and the admin API speak them without knowing the tables.

use std::sync::Arc;

use crate::{BodyFlags, Envelope, QueueId};

/// A message accepted by a listener, to be made durable.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub id: QueueId,
    pub tenant_id: String,
    pub envelope: Envelope,
    /// The full message as it will be delivered (Received: header included).
    pub body: Arc<Vec<u8>>,
    /// Where the queue's spool keeps `body` (`<node>/<queue id>`, already durable): the row
    /// then points there and holds no body. `None`: the body goes into the row.
    pub body_path: Option<String>,
    /// `smtp`, `api` or `dsn`.
    pub origin: &'static str,
    pub priority: i64,
    pub created_at: i64,
    /// When set, the message is written already leased to this node (`owner`, `until`), so the
    /// node can deliver it straight from memory without claiming it again.
    pub lease: Option<(String, i64)>,
}

/// A message taken from the queue for a delivery attempt: only its pending recipients.
#[derive(Debug, Clone)]
pub struct QueuedMessage {
    pub id: QueueId,
    pub tenant_id: String,
    pub mail_from: String,
    pub flags: BodyFlags,
    /// Empty as the store loads a spooled message: the queue reads it from `body_path`.
    pub body: Arc<Vec<u8>>,
    /// The spool file holding the body, if the row holds none ([`NewMessage::body_path`]).
    pub body_path: Option<String>,
    pub created_at: i64,
    /// Attempts made so far on the message (any recipient).
    pub attempts: u32,
    pub recipients: Vec<QueuedRecipient>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedRecipient {
    /// Position in the envelope; identifies the recipient within the message.
    pub idx: u32,
    pub address: String,
    /// Lowercased domain of `address`: recipients are grouped by it for delivery.
    pub domain: String,
    pub attempts: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecipientStatus {
    /// Accepted by the next hop.
    Delivered,
    /// Failed for now; tried again at the message's next attempt.
    Deferred,
    /// Failed for good (5xx, or too old).
    Bounced,
}

impl RecipientStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RecipientStatus::Delivered => "delivered",
            RecipientStatus::Deferred => "deferred",
            RecipientStatus::Bounced => "bounced",
        }
    }
}

#[derive(Debug, Clone)]
pub struct RecipientResult {
    pub idx: u32,
    pub status: RecipientStatus,
    /// The remote server's reply, or our reason ("no MX for domain …").
    pub reply: String,
    /// The id the next hop gave the message for this recipient, where it gives one (SES's
    /// MessageId); shown in the message history.
    pub remote_id: Option<String>,
}

/// Outcome of one delivery attempt of one message.
#[derive(Debug, Clone)]
pub struct DeliveryReport {
    pub message_id: QueueId,
    /// The node that made the attempt under its lease. The report is recorded only while the
    /// message is still leased to it: a node that lost its lease (it stalled past the lease and
    /// another node took the message) must not overwrite what the new owner does.
    pub lease_owner: String,
    pub at: i64,
    pub results: Vec<RecipientResult>,
    /// When to try the deferred recipients again (ignored when none is deferred).
    pub next_attempt_at: i64,
    /// The DSN for the recipients bounced in this attempt, written in the same transaction as
    /// the report and only if the report is: a bounce is sent exactly when its recipients are
    /// recorded as bounced, never by a node whose report was refused.
    pub bounce: Option<NewMessage>,
}

/// Recipients a remote server accepted in one attempt, as the delivery journal keeps them
/// (written the moment the 250 arrives, before the report commits).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct JournaledDelivery {
    pub message_id: String,
    pub at: i64,
    /// (recipient index, the remote's reply)
    pub recipients: Vec<(u32, String)>,
}

/// What the storage's commit of a batch did: one answer per message and per report, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitOutcome {
    pub admissions: Vec<Admission>,
    /// Per report: recorded (true), or refused because its node no longer holds the lease.
    pub recorded: Vec<bool>,
    /// Spool files of messages this commit finished: nothing needs them any more.
    pub freed_bodies: Vec<String>,
}

/// What the storage's commit of a batch did with one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Durable once the batch's commit returned.
    Written,
    /// Not written: its tenant had accepted `max_per_day` messages in the last 24 hours.
    OverQuota { max_per_day: u64 },
}
