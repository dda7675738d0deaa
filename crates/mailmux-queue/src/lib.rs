//! mailmux-queue: the durable queue between the listeners and the transports.
//!
//! - [`Queue::enqueue`] returns only once the message is committed (fsync'd). Concurrent
//!   sessions share commits: one writer task takes everything waiting in its channel and writes
//!   it in one transaction (group commit), so twenty sessions cost one fsync, not twenty.
//! - A message enqueued while delivery has room is written already leased to this node and
//!   handed to the delivery workers from memory: no second read of what we just wrote.
//! - The scheduler claims due messages (retries, messages of a node that died, messages that
//!   found delivery full) from the store under a lease, so several nodes on one Postgres never
//!   deliver the same message at once. Leases are short and renewed while an attempt lives
//!   (`lease.rs`).
//! - Delivery reports go through the same writer, sharing commits with enqueues, and are fenced
//!   on the lease: a node that lost a message's lease records nothing for it.
//! - Bodies are written once, to the spool (`spool.rs`), before the commit of the rows that
//!   point at them; a finished message's body is deleted right after the commit that finished it.
//! - A remote server's 250 is journaled the moment it arrives (`journal.rs`), so a crash before
//!   its report commits does not send the message again.
//! - Every background task runs under the supervisor of `mailmux_core::health`.

mod journal;
mod lease;
mod retry;
mod spool;
mod storage;
mod writer;

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use mailmux_core::config::{DeliveryConfig, QueueConfig};
use mailmux_core::health::{Health, supervise};
use mailmux_core::{Envelope, QueueId, QueueIdGenerator, now_ms};
use mailmux_store::{Store, StoreError};
use tokio::sync::{Notify, mpsc, oneshot};
use tracing::{debug, error, info, warn};

use crate::journal::Journal;
use crate::lease::InFlight;

pub use lease::Lease;
/// The queue's vocabulary (defined in core, where the store can use it too): delivery and the
/// listeners import it from here.
pub use mailmux_core::queued::{
    Admission, CommitOutcome, DeliveryReport, JournaledDelivery, NewMessage, QueuedMessage,
    QueuedRecipient, RecipientResult, RecipientStatus,
};
pub use retry::RetryPolicy;
pub use spool::Spool;
pub use storage::{QueueStorage, StorageResult};
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
    /// The body spool cannot be written or read (disk full, I/O error): the client must hear
    /// 451, never 250.
    #[error("body spool: {0}")]
    Spool(std::io::Error),
    /// The delivery journal in the data dir cannot be read or written.
    #[error("delivery journal in {dir}: {source}")]
    Journal {
        dir: std::path::PathBuf,
        source: std::io::Error,
    },
    /// Not written: the tenant reached its daily quota, decided inside the commit (see
    /// [`Admission`]) so that concurrent sessions and nodes never overshoot it.
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

/// The queue, shared by listeners (enqueue) and delivery workers (jobs, reports), over its
/// storage (`Store` everywhere but in tests that need storage to misbehave).
pub struct Queue<S: QueueStorage = Store> {
    store: S,
    ids: QueueIdGenerator,
    /// This node's name in leases; stable across restarts (kept in the data dir).
    node_id: String,
    lease: Duration,
    writes: mpsc::Sender<writer::WriteOp>,
    /// Bounded: its free capacity is how much delivery can take now.
    jobs: mpsc::Sender<Job>,
    /// What this node holds leases on; renewed by the heartbeat, skipped by the scheduler.
    in_flight: Arc<InFlight>,
    /// Wakes the scheduler early (a report freed capacity, a retry became due sooner).
    wake_scheduler: Arc<Notify>,
    /// Set at shutdown: the scheduler claims nothing more.
    stopping: AtomicBool,
    /// Set once this node's leases are given back: nothing is renewed any more.
    released: AtomicBool,
    journal: Journal,
    /// Where bodies are written before their rows (`spool.rs`).
    spool: Arc<Spool>,
    commit_stats: Arc<CommitStats>,
    pub retry: RetryPolicy,
}

/// One message for one delivery attempt, with this node's lease on it.
#[derive(Debug)]
pub struct Job {
    pub message: QueuedMessage,
    /// Hand it back with the report ([`Queue::report`]) or when holding the message
    /// ([`Queue::hold`]); dropped any other way, the message comes back when the lease runs out.
    pub lease: Lease,
}

/// The receiving end for delivery workers.
pub type Jobs = mpsc::Receiver<Job>;

/// What became of a delivery report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// Committed, with its bounce if it had one.
    Yes,
    /// Refused: this node no longer held the message's lease (it stalled past the lease and
    /// another node took the message). Nothing was written and no bounce was sent.
    LeaseLost,
}

impl<S: QueueStorage> Queue<S> {
    /// Starts the writer and the scheduler. What the delivery journal in `data_dir` says was
    /// delivered before a restart is recorded first; then the leases this node held are given
    /// back, so everything else it had in flight is delivered again.
    pub async fn start(
        store: S,
        node_id: String,
        data_dir: &Path,
        queue: &QueueConfig,
        delivery: &DeliveryConfig,
        health: &Health,
    ) -> Result<(Arc<Queue<S>>, Jobs)> {
        let journal_error = |source| QueueError::Journal {
            dir: data_dir.to_owned(),
            source,
        };
        let (journal, journaled) = Journal::open(data_dir).map_err(journal_error)?;
        if !journaled.is_empty() {
            let recorded = store
                .record_journaled_deliveries(&node_id, &journaled)
                .await?;
            info!(
                journaled = journaled.len(),
                recorded, "recorded deliveries journaled before the restart"
            );
        }
        journal::forget_recovered(data_dir).map_err(journal_error)?;
        let released = store.release_leases(&node_id, now_ms()).await?;
        if released > 0 {
            info!(released, "resuming messages leased before the restart");
        }
        let spool_dir = queue
            .spool_dir
            .clone()
            .unwrap_or_else(|| data_dir.join("spool"));
        let spool = Arc::new(Spool::open(&spool_dir, &node_id).map_err(QueueError::Spool)?);
        // Nothing is being written yet: every file of ours no row points at is an orphan (a
        // crash came between a body and its commit, or between a finish and its deletion).
        let swept = sweep_spool(&store, &spool, None).await?;
        if swept > 0 {
            info!(swept, "deleted spooled bodies no message points at");
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
            in_flight: Arc::new(InFlight::default()),
            wake_scheduler: Arc::new(Notify::new()),
            stopping: AtomicBool::new(false),
            released: AtomicBool::new(false),
            journal,
            spool: spool.clone(),
            commit_stats: commit_stats.clone(),
            retry: RetryPolicy::from_config(delivery),
        });
        // The writer's channel outlives any one writer task: a writer that panics loses only
        // the batch in its hands (whose waiters hear an error: 451, never 250), and the next
        // one carries on with what is waiting.
        let write_rx = Arc::new(tokio::sync::Mutex::new(write_rx));
        let writer_health = health.component("queue_writer");
        let max_batch = queue.max_batch;
        let writer_spool = spool.clone();
        let writer_store = store.clone();
        tokio::spawn(supervise(writer_health.clone(), move || {
            writer::run(
                writer_store.clone(),
                write_rx.clone(),
                max_batch,
                writer_spool.clone(),
                commit_stats.clone(),
                writer_health.clone(),
            )
        }));
        tokio::spawn(supervise(health.component("spool_sweep"), move || {
            sweep_hourly(store.clone(), spool.clone())
        }));
        let weak = Arc::downgrade(&queue_handle);
        let poll = Duration::from_millis(queue.poll_interval_ms);
        let scheduler_health = health.component("scheduler");
        tokio::spawn(supervise(scheduler_health.clone(), {
            let weak = weak.clone();
            move || scheduler(weak.clone(), poll, scheduler_health.clone())
        }));
        let heartbeat_health = health.component("lease_heartbeat");
        tokio::spawn(supervise(heartbeat_health.clone(), {
            let weak = weak.clone();
            move || heartbeat(weak.clone(), heartbeat_health.clone())
        }));
        if queue.retention_days > 0 {
            let retention = Duration::from_secs(queue.retention_days * 86_400);
            tokio::spawn(supervise(health.component("retention"), move || {
                purge_finished(weak.clone(), retention)
            }));
        }
        Ok((queue_handle, jobs_rx))
    }

    /// Shutdown, first step: the scheduler claims nothing more. Deliveries in flight go on
    /// (their leases are still renewed) and report as usual.
    pub fn stop_claiming(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.wake_scheduler.notify_one();
    }

    /// Shutdown, last step (after delivery stopped): gives back every lease this node holds,
    /// so other nodes (or this one after its restart) take those messages at once instead of
    /// waiting for the leases to run out.
    pub async fn release_leases(&self) -> Result<u64> {
        self.stop_claiming();
        self.released.store(true, Ordering::SeqCst);
        Ok(self.store.release_leases(&self.node_id, now_ms()).await?)
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    /// Commits and messages so far (group commit at work); also a `/metrics` source.
    pub fn commit_stats(&self) -> &Arc<CommitStats> {
        &self.commit_stats
    }

    pub fn next_id(&self) -> QueueId {
        self.ids.next(now_ms())
    }

    /// Makes the message durable (its body in the spool, then its row); returns once it is
    /// committed. Then delivery starts.
    pub async fn enqueue(&self, submission: Submission) -> Result<QueueId> {
        let id = submission.id.clone();
        // Reserve a delivery slot before writing: with one, the message is written leased to
        // us and delivered from memory; without, it waits in the store for the scheduler.
        let permit = self.jobs.clone().try_reserve_owned().ok();
        let mut message = self.new_message(submission);
        let body_path = self.spool.write(&message.id, message.body.clone()).await;
        message.body_path = Some(body_path.map_err(QueueError::Spool)?);
        message.lease = permit.as_ref().map(|_| {
            let until = message.created_at + self.lease.as_millis() as i64;
            (self.node_id.clone(), until)
        });
        let (done, committed) = oneshot::channel();
        self.writes
            .send(writer::WriteOp::Enqueue(message.clone(), done))
            .await
            .map_err(|_| QueueError::Closed)?;
        match committed.await.map_err(|_| QueueError::Closed)? {
            Ok(()) => {}
            // Certainly not written: its body goes too. (After a failed commit the row may or
            // may not be there; the sweep decides once it can tell.)
            Err(error @ QueueError::OverQuota { .. }) => {
                self.spool
                    .remove(message.body_path.into_iter().collect())
                    .await;
                return Err(error);
            }
            Err(error) => return Err(error),
        }
        debug!(queue_id = %id, tenant = %message.tenant_id, "queued durably");
        let lease = permit
            .as_ref()
            .and_then(|_| self.in_flight.take(&message.id, &self.node_id));
        match (permit, lease) {
            (Some(permit), Some(lease)) => {
                let message = QueuedMessage {
                    id: message.id,
                    tenant_id: message.tenant_id,
                    mail_from: message.envelope.mail_from,
                    flags: message.envelope.flags,
                    body: message.body,
                    body_path: message.body_path,
                    created_at: message.created_at,
                    attempts: 0,
                    recipients: message
                        .envelope
                        .rcpt_to
                        .into_iter()
                        .enumerate()
                        .map(|(idx, address)| QueuedRecipient {
                            idx: idx as u32,
                            domain: mailmux_core::address_domain(&address),
                            address,
                            attempts: 0,
                        })
                        .collect(),
                };
                permit.send(Job { message, lease });
            }
            _ => self.wake_scheduler.notify_one(),
        }
        Ok(id)
    }

    /// The row `submission` is written as, not leased: as a bounce that rides with its
    /// delivery report ([`DeliveryReport::bounce`]) it is taken by the scheduler like any due
    /// message once that report commits.
    pub fn new_message(&self, submission: Submission) -> NewMessage {
        NewMessage {
            id: submission.id,
            tenant_id: submission.tenant_id,
            envelope: submission.envelope,
            body: Arc::new(submission.body),
            body_path: None,
            origin: submission.origin,
            priority: submission.priority,
            created_at: now_ms(),
            lease: None,
        }
    }

    /// Leases up to `limit` due messages to this node (through the writer: see writer.rs) and
    /// loads them. A claimed message whose earlier attempt is still running here (its lease
    /// ran out under a stalled writer) is skipped: that attempt reports it.
    async fn claim(&self, limit: usize) -> Result<Vec<Job>> {
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
        let mut jobs = Vec::with_capacity(ids.len());
        for id in ids {
            let Some(lease) = self.in_flight.take(&QueueId(id.clone()), &self.node_id) else {
                debug!(queue_id = %id, "claimed again while its attempt runs here; skipped");
                continue;
            };
            match self.load_pending(&id).await {
                Ok(Some(message)) => jobs.push(Job { message, lease }),
                Ok(None) => {}
                Err(QueueError::Spool(error)) => {
                    // Never by our own doing (a row is committed only after its body is durable,
                    // and the body is deleted only after the row is finished): someone removed
                    // it. The lease runs out and a later claim tries again.
                    error!(%error, queue_id = %id, "a queued message's body is unreadable");
                }
                Err(error) => return Err(error),
            }
        }
        Ok(jobs)
    }

    /// A queued message with its pending recipients and its body (read from the spool when the
    /// row points there); `None` when it has no pending recipient left.
    pub async fn load_pending(&self, id: &str) -> Result<Option<QueuedMessage>> {
        let Some(mut message) = self.store.load_pending(id).await? else {
            return Ok(None);
        };
        if let Some(path) = &message.body_path {
            let body = self.spool.read(path).await.map_err(QueueError::Spool)?;
            message.body = Arc::new(body);
        }
        Ok(Some(message))
    }

    /// Gives a message taken for delivery back to the store untried: no attempt is recorded
    /// and nothing is rescheduled. Delivery does this for a tenant that is not active (paused,
    /// suspended, disabled); the scheduler claims only active tenants' mail, so the message
    /// waits in the store until its tenant is active again. Not through the writer: losing
    /// this update (a crash) only means the lease runs out instead.
    pub async fn hold(&self, lease: Lease) -> Result<()> {
        self.store
            .release_lease(&lease.message_id().0, lease.owner(), now_ms())
            .await?;
        Ok(())
    }

    /// Writes down at once the recipients a remote server just accepted (see `journal.rs`);
    /// call it before building the report. A failure is logged and otherwise ignored: the
    /// delivery is then only as safe from a crash as its report.
    pub fn journal_delivered(&self, delivery: &JournaledDelivery) {
        if let Err(error) = self.journal.record(delivery) {
            warn!(%error, queue_id = %delivery.message_id, "cannot journal a delivery");
        }
    }

    /// Records a delivery attempt's outcome (batched with other writes, fenced on `lease`) and
    /// waits until it is committed. The lease is given up once the answer is in.
    pub async fn report(&self, mut report: DeliveryReport, lease: Lease) -> Result<Recorded> {
        debug_assert_eq!(report.lease_owner, lease.owner());
        // A bounce rides with its report: its body is spooled first, like any message's.
        let mut bounce_path = None;
        if let Some(bounce) = &mut report.bounce {
            let path = self.spool.write(&bounce.id, bounce.body.clone()).await;
            let path = path.map_err(QueueError::Spool)?;
            bounce.body_path = Some(path.clone());
            bounce_path = Some(path);
        }
        let (done, committed) = oneshot::channel();
        self.writes
            .send(writer::WriteOp::Report(report, done))
            .await
            .map_err(|_| QueueError::Closed)?;
        let result = committed.await.map_err(|_| QueueError::Closed)?;
        if let (Ok(Recorded::LeaseLost), Some(path)) = (&result, bounce_path) {
            // Fenced off: nothing of the report was written, its bounce included.
            self.spool.remove(vec![path]).await;
        }
        drop(lease);
        // A worker is free again (and a bounce may be waiting): look for due messages.
        self.wake_scheduler.notify_one();
        result
    }
}

/// Claims due messages while delivery has room; sleeps `poll` between looks unless woken.
///
/// Woken after every report, it still claims only when a quarter of the delivery channel is
/// free (or the poll interval passed): one claim per many messages, not one per message.
async fn scheduler<S: QueueStorage>(
    queue: std::sync::Weak<Queue<S>>,
    poll: Duration,
    health: mailmux_core::health::Component,
) {
    let mut last_look = tokio::time::Instant::now();
    loop {
        let Some(queue) = queue.upgrade() else {
            return;
        };
        if queue.stopping.load(Ordering::SeqCst) {
            return;
        }
        let room = queue.jobs.capacity();
        let batch_worth = (queue.jobs.max_capacity() / 4).max(1);
        if room >= batch_worth || (room > 0 && last_look.elapsed() >= poll) {
            last_look = tokio::time::Instant::now();
            match queue.claim(room).await {
                Ok(jobs) => {
                    health.ok();
                    let claimed = jobs.len();
                    for job in jobs {
                        debug!(queue_id = %job.message.id, tenant = %job.message.tenant_id, "claimed for delivery");
                        if queue.jobs.send(job).await.is_err() {
                            // Delivery has stopped (shutdown): the lease is given back there.
                            return;
                        }
                    }
                    // A full claim means more may be due: look again at once.
                    if claimed == room {
                        continue;
                    }
                }
                Err(error) => {
                    health.failed(format!("cannot claim due messages: {error}"));
                    warn!(%error, "cannot claim due messages");
                }
            }
        }
        let wake = queue.wake_scheduler.clone();
        drop(queue);
        let _ = tokio::time::timeout(poll, wake.notified()).await;
    }
}

/// Every third of the lease, extends the leases of everything this node has in flight: an
/// attempt may take far longer than one lease (a slow end-of-data reply may legitimately take
/// ten minutes), and must not be taken over by another node meanwhile.
async fn heartbeat<S: QueueStorage>(
    queue: std::sync::Weak<Queue<S>>,
    health: mailmux_core::health::Component,
) {
    let every = match queue.upgrade() {
        Some(queue) => queue.lease / 3,
        None => return,
    };
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(queue) = queue.upgrade() else {
            return;
        };
        if queue.released.load(Ordering::SeqCst) {
            return;
        }
        let ids = queue.in_flight.ids();
        if ids.is_empty() {
            continue;
        }
        let until = now_ms() + queue.lease.as_millis() as i64;
        let (done, renewed) = oneshot::channel();
        let renew = writer::Renew {
            owner: queue.node_id.clone(),
            ids,
            until,
        };
        let wanted = renew.ids.len() as u64;
        if queue
            .writes
            .send(writer::WriteOp::Renew(renew, done))
            .await
            .is_err()
        {
            return;
        }
        match renewed.await {
            Ok(Ok(held)) => {
                health.ok();
                if held < wanted {
                    // Reports of attempts whose message finished meanwhile, or leases another
                    // node took over: their reports are fenced and change nothing.
                    debug!(wanted, held, "some leases were not renewed");
                }
            }
            Ok(Err(error)) => {
                health.failed(format!("cannot renew leases: {error}"));
                warn!(%error, "cannot renew the leases of messages in flight");
            }
            Err(_) => return,
        }
    }
}

/// Deletes the spool files no queued message points at, among [`Spool::candidates`]; answers
/// how many.
async fn sweep_spool<S: QueueStorage>(
    store: &S,
    spool: &Spool,
    older_than: Option<Duration>,
) -> Result<usize> {
    let candidates = spool
        .candidates(older_than)
        .await
        .map_err(QueueError::Spool)?;
    if candidates.is_empty() {
        return Ok(0);
    }
    let referenced: HashSet<String> = store
        .referenced_bodies(&candidates)
        .await?
        .into_iter()
        .collect();
    let orphans: Vec<String> = candidates
        .into_iter()
        .filter(|path| !referenced.contains(path))
        .collect();
    let swept = orphans.len();
    spool.remove(orphans).await;
    Ok(swept)
}

/// Once an hour, the spool's orphans of every node (a node that crashed and never came back,
/// a tenant deleted with its queue), older than [`spool::SWEEP_GRACE`].
async fn sweep_hourly<S: QueueStorage>(store: S, spool: Arc<Spool>) {
    let mut hourly = tokio::time::interval(Duration::from_secs(3600));
    hourly.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        hourly.tick().await;
        match sweep_spool(&store, &spool, Some(spool::SWEEP_GRACE)).await {
            Ok(0) => {}
            Ok(swept) => info!(swept, "deleted spooled bodies no message points at"),
            Err(error) => warn!(%error, "cannot sweep the spool"),
        }
    }
}

/// Once an hour, forgets finished messages older than `retention`.
async fn purge_finished<S: QueueStorage>(queue: std::sync::Weak<Queue<S>>, retention: Duration) {
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
