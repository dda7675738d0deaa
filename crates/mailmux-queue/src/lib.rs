//! mailmux-queue: the durable queue between the listeners and the transports.
//!
//! - [`Queue::enqueue`] returns only once the message is committed (fsync'd). Concurrent
//!   sessions share commits: one writer task takes everything waiting in its channel and writes
//!   it in one transaction (group commit), so twenty sessions cost one fsync, not twenty.
//! - A message enqueued while delivery has room is written already leased to this node and
//!   handed to the delivery workers from memory: no second read of what we just wrote.
//! - The scheduler claims due messages (retries, messages of a restarted node, messages that
//!   found delivery full) from the store under a lease, so several nodes on one Postgres never
//!   deliver the same message at once.
//! - Delivery reports go through the same writer, sharing commits with enqueues.

mod retry;
mod writer;

use std::sync::Arc;
use std::time::Duration;

use mailmux_core::config::{DeliveryConfig, QueueConfig};
use mailmux_core::{Envelope, QueueId, QueueIdGenerator, now_ms};
use mailmux_store::{DeliveryReport, NewMessage, QueuedMessage, Store, StoreError};
use tokio::sync::{Notify, mpsc, oneshot};
use tracing::{debug, info, warn};

pub use retry::RetryPolicy;
pub use writer::CommitStats;

pub type Result<T> = std::result::Result<T, QueueError>;

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The message could not be made durable (database unavailable, disk full…): the client
    /// must hear 451, never 250.
    #[error("queue storage failed: {0}")]
    Storage(#[from] StoreError),
    /// The commit that carried this message failed (shared by everything in its batch).
    #[error("queue commit failed: {0}")]
    Commit(String),
    /// The queue is shutting down.
    #[error("queue is shutting down")]
    Closed,
    /// Not written: the tenant reached its daily quota, decided inside the commit (see
    /// `mailmux_store::Admission`) so that concurrent sessions and nodes never overshoot it.
    #[error("daily quota of {max_per_day} messages reached")]
    OverQuota { max_per_day: u64 },
}

/// What a listener hands to [`Queue::enqueue`].
#[derive(Debug)]
pub struct Submission {
    /// From [`Queue::next_id`], taken before the body is final so that the Received: header
    /// can name it.
    pub id: QueueId,
    pub tenant_id: String,
    pub envelope: Envelope,
    pub body: Vec<u8>,
    /// `smtp`, `api` or `dsn`.
    pub origin: &'static str,
    /// Higher is delivered first when the queue is contended.
    pub priority: i64,
}

/// The queue, shared by listeners (enqueue) and delivery workers (jobs, reports).
pub struct Queue {
    store: Store,
    ids: QueueIdGenerator,
    /// This node's name in leases; stable across restarts (kept in the data dir).
    node_id: String,
    lease: Duration,
    writes: mpsc::Sender<writer::WriteOp>,
    /// Bounded: its free capacity is how much delivery can take now.
    jobs: mpsc::Sender<QueuedMessage>,
    /// Wakes the scheduler early (a report freed capacity, a retry became due sooner).
    wake_scheduler: Arc<Notify>,
    commit_stats: Arc<CommitStats>,
    pub retry: RetryPolicy,
}

/// The receiving end for delivery workers.
pub type Jobs = mpsc::Receiver<QueuedMessage>;

impl Queue {
    /// Starts the writer and the scheduler. Leases this node held before a restart are given
    /// back first, so everything it had in flight is delivered again.
    pub async fn start(
        store: Store,
        node_id: String,
        queue: &QueueConfig,
        delivery: &DeliveryConfig,
    ) -> Result<(Arc<Queue>, Jobs)> {
        let released = store.release_leases(&node_id).await?;
        if released > 0 {
            info!(released, "resuming messages leased before the restart");
        }
        let (writes, write_rx) = mpsc::channel(queue.max_batch * 4);
        // Room for every worker and three times as many waiting: a burst is delivered straight
        // from memory (no claim, no re-read), while a real backlog stays in the store.
        let (jobs, jobs_rx) = mpsc::channel(delivery.concurrency * 4);
        let commit_stats = Arc::new(CommitStats::default());
        let queue_handle = Arc::new(Queue {
            store: store.clone(),
            ids: QueueIdGenerator::default(),
            node_id,
            lease: Duration::from_secs(queue.lease_secs),
            writes,
            jobs,
            wake_scheduler: Arc::new(Notify::new()),
            commit_stats: commit_stats.clone(),
            retry: RetryPolicy::from_config(delivery),
        });
        tokio::spawn(writer::run(store, write_rx, queue.max_batch, commit_stats));
        tokio::spawn(scheduler(
            Arc::downgrade(&queue_handle),
            Duration::from_millis(queue.poll_interval_ms),
        ));
        if queue.retention_days > 0 {
            tokio::spawn(purge_finished(
                Arc::downgrade(&queue_handle),
                Duration::from_secs(queue.retention_days * 86_400),
            ));
        }
        Ok((queue_handle, jobs_rx))
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Commits and messages so far (group commit at work); also a `/metrics` source.
    pub fn commit_stats(&self) -> &Arc<CommitStats> {
        &self.commit_stats
    }

    pub fn next_id(&self) -> QueueId {
        self.ids.next(now_ms())
    }

    /// Makes the message durable; returns once it is committed. Then delivery starts.
    pub async fn enqueue(&self, submission: Submission) -> Result<QueueId> {
        let now = now_ms();
        let id = submission.id.clone();
        // Reserve a delivery slot before writing: with one, the message is written leased to
        // us and delivered from memory; without, it waits in the store for the scheduler.
        let permit = self.jobs.clone().try_reserve_owned().ok();
        let lease = permit
            .as_ref()
            .map(|_| (self.node_id.clone(), now + self.lease.as_millis() as i64));
        let message = NewMessage {
            id: submission.id,
            tenant_id: submission.tenant_id,
            envelope: submission.envelope,
            body: Arc::new(submission.body),
            origin: submission.origin,
            priority: submission.priority,
            created_at: now,
            lease,
        };
        let (done, committed) = oneshot::channel();
        self.writes
            .send(writer::WriteOp::Enqueue(message.clone(), done))
            .await
            .map_err(|_| QueueError::Closed)?;
        committed.await.map_err(|_| QueueError::Closed)??;
        debug!(queue_id = %id, tenant = %message.tenant_id, "queued durably");
        match permit {
            Some(permit) => {
                permit.send(QueuedMessage {
                    id: message.id,
                    tenant_id: message.tenant_id,
                    mail_from: message.envelope.mail_from,
                    flags: message.envelope.flags,
                    body: message.body,
                    created_at: message.created_at,
                    attempts: 0,
                    recipients: message
                        .envelope
                        .rcpt_to
                        .into_iter()
                        .enumerate()
                        .map(|(idx, address)| mailmux_store::QueuedRecipient {
                            idx: idx as u32,
                            domain: mailmux_core::address_domain(&address),
                            address,
                            attempts: 0,
                        })
                        .collect(),
                });
            }
            None => self.wake_scheduler.notify_one(),
        }
        Ok(id)
    }

    /// Leases up to `limit` due messages to this node (through the writer: see writer.rs) and
    /// loads them.
    async fn claim(&self, limit: usize) -> Result<Vec<QueuedMessage>> {
        let now = now_ms();
        let (done, claimed) = oneshot::channel();
        let claim = writer::Claim {
            owner: self.node_id.clone(),
            now,
            lease_until: now + self.lease.as_millis() as i64,
            limit,
        };
        self.writes
            .send(writer::WriteOp::Claim(claim, done))
            .await
            .map_err(|_| QueueError::Closed)?;
        let ids = claimed.await.map_err(|_| QueueError::Closed)??;
        let mut messages = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(message) = self.store.load_pending(&id).await? {
                messages.push(message);
            }
        }
        Ok(messages)
    }

    /// Gives a message taken for delivery back to the store untried: no attempt is recorded
    /// and nothing is rescheduled. Delivery does this for a tenant that is not active (paused,
    /// suspended, disabled); the scheduler claims only active tenants' mail, so the message
    /// waits in the store until its tenant is active again. Not through the writer: losing
    /// this update (a crash) only means the lease runs out instead.
    pub async fn hold(&self, id: &QueueId) -> Result<()> {
        self.store.release_lease(&id.0, &self.node_id).await?;
        Ok(())
    }

    /// Records a delivery attempt's outcome (batched with other writes). Waits until it is
    /// committed so that a DSN enqueued before it is never lost behind it.
    pub async fn report(&self, report: DeliveryReport) -> Result<()> {
        let (done, committed) = oneshot::channel();
        self.writes
            .send(writer::WriteOp::Report(report, done))
            .await
            .map_err(|_| QueueError::Closed)?;
        let result = committed.await.map_err(|_| QueueError::Closed)?;
        // A worker is free again: there may be due messages waiting for one.
        self.wake_scheduler.notify_one();
        result
    }
}

/// Claims due messages while delivery has room; sleeps `poll` between looks unless woken.
///
/// Woken after every report, it still claims only when a quarter of the delivery channel is
/// free (or the poll interval passed): one claim per many messages, not one per message.
async fn scheduler(queue: std::sync::Weak<Queue>, poll: Duration) {
    let mut last_look = tokio::time::Instant::now();
    loop {
        let Some(queue) = queue.upgrade() else {
            return;
        };
        let room = queue.jobs.capacity();
        let batch_worth = (queue.jobs.max_capacity() / 4).max(1);
        if room >= batch_worth || (room > 0 && last_look.elapsed() >= poll) {
            last_look = tokio::time::Instant::now();
            match queue.claim(room).await {
                Ok(messages) => {
                    let claimed = messages.len();
                    for message in messages {
                        debug!(queue_id = %message.id, tenant = %message.tenant_id, "claimed for delivery");
                        if queue.jobs.send(message).await.is_err() {
                            return;
                        }
                    }
                    // A full claim means more may be due: look again at once.
                    if claimed == room {
                        continue;
                    }
                }
                Err(error) => warn!(%error, "cannot claim due messages"),
            }
        }
        let wake = queue.wake_scheduler.clone();
        drop(queue);
        let _ = tokio::time::timeout(poll, wake.notified()).await;
    }
}

/// Once an hour, forgets finished messages older than `retention`.
async fn purge_finished(queue: std::sync::Weak<Queue>, retention: Duration) {
    let mut hourly = tokio::time::interval(Duration::from_secs(3600));
    loop {
        hourly.tick().await;
        let Some(queue) = queue.upgrade() else {
            return;
        };
        let before = now_ms() - retention.as_millis() as i64;
        match queue.store.purge_finished(before).await {
            Ok(0) => {}
            Ok(purged) => info!(purged, "forgot finished messages past retention"),
            Err(error) => warn!(%error, "cannot purge finished messages"),
        }
    }
}
