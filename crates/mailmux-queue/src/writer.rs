//! The single writer: group commit for enqueues and delivery reports.
//!
//! It waits for one write, then takes whatever else is already waiting (up to `max_batch`)
//! and commits it all in one transaction. While a commit is in flight, new writes pile up in
//! the channel and form the next batch: the busier the relay, the more each fsync carries, and
//! an idle relay still commits a lone message at once.
//!
//! The scheduler's claims and the lease heartbeat go through here too. On SQLite a second
//! writing connection does not queue behind the first: it sleeps in SQLite's busy handler (1,
//! 2, 5, 10… ms), so claims on their own connection would stall every commit they collide
//! with. One writer, no collisions.
//!
//! Reports are never held back for unrelated work: a batch is whatever is waiting when the
//! last commit ends (nothing waits for a batch to fill), and claims and renewals run after the
//! commit that carries the reports. Between a remote server's 250 and the commit of its report
//! a crash re-sends the message, so that window is kept to about one commit.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use mailmux_core::health::Component;
use mailmux_core::metrics::{MetricSource, render_single};
use mailmux_store::{Admission, DeliveryReport, NewMessage, Store};
use tokio::sync::{Mutex, mpsc, oneshot};
use tracing::error;

use crate::{QueueError, Recorded, Result};

pub(crate) enum WriteOp {
    Enqueue(NewMessage, oneshot::Sender<Result<()>>),
    /// Lease due messages; answers their ids.
    Claim(Claim, oneshot::Sender<Result<Vec<String>>>),
    /// Extend leases held by this node; answers how many it still held.
    Renew(Renew, oneshot::Sender<Result<u64>>),
}

pub(crate) struct Renew {
    pub owner: String,
    pub ids: Vec<String>,
    pub until: i64,
}

pub(crate) struct Claim {
    pub owner: String,
    pub now: i64,
    pub lease_until: i64,
    pub limit: usize,
}

/// How well group commit works: messages per commit is what the fsyncs are shared by.
#[derive(Debug, Default)]
pub struct CommitStats {
    /// Transactions committed (each one fsync).
    pub commits: AtomicU64,
    /// Messages made durable by those commits.
    pub messages: AtomicU64,
}

impl MetricSource for CommitStats {
    fn render(&self, out: &mut String) {
        render_single(
            out,
            "mailmux_queue_commits_total",
            "counter",
            "Queue transactions committed by this process (one fsync each).",
            self.commits.load(Ordering::Relaxed),
        );
        render_single(
            out,
            "mailmux_queue_committed_messages_total",
            "counter",
            "Messages made durable by those commits.",
            self.messages.load(Ordering::Relaxed),
        );
    }
}

/// What the writer reads: reports on their own channel, read first (see the module comment),
/// and everything else.
pub(crate) struct Inbox {
    pub reports: mpsc::Receiver<ReportOp>,
    pub ops: mpsc::Receiver<WriteOp>,
}

/// A delivery report and who waits for its answer.
pub(crate) type ReportOp = (DeliveryReport, oneshot::Sender<Result<Recorded>>);

/// The writer loop. The inbox is shared with the supervisor so that a writer started after a
/// panic takes over the same channels.
///
/// Each turn takes the waiting reports, if any, and commits them on their own; only a turn
/// with no report waiting takes enqueues, claims and renewals. So a report waits for at most
/// the one commit in progress when it arrived, never for a batch of message bodies, a claim or
/// a renewal that happened to be queued before it.
pub(crate) async fn run(
    store: Store,
    inbox: Arc<Mutex<Inbox>>,
    max_batch: usize,
    stats: Arc<CommitStats>,
    health: Component,
) {
    let mut inbox = inbox.lock().await;
    let Inbox { reports, ops } = &mut *inbox;
    let mut report_batch = Vec::with_capacity(max_batch);
    let mut batch = Vec::with_capacity(max_batch);
    loop {
        tokio::select! {
            biased;
            received = reports.recv_many(&mut report_batch, max_batch) => {
                if received == 0 {
                    // The queue is gone (both channels close together): nothing more to do.
                    return;
                }
                let (reports, waiters): (Vec<_>, Vec<_>) = report_batch.drain(..).unzip();
                let waiters = Waiters { messages: Vec::new(), reports: waiters };
                commit(&store, &[], &reports, waiters, &stats, &health).await;
            }
            received = ops.recv_many(&mut batch, max_batch) => {
                if received == 0 {
                    return;
                }
                run_ops(&store, batch.drain(..), &stats, &health).await;
            }
        }
    }
}

/// One turn of everything but reports: the enqueues in one commit, then renewals and claims.
async fn run_ops(
    store: &Store,
    batch: impl Iterator<Item = WriteOp>,
    stats: &CommitStats,
    health: &Component,
) {
    let mut messages = Vec::new();
    // Each message gets its own answer: its tenant may be over quota.
    let mut message_waiters = Vec::new();
    let mut claims = Vec::new();
    let mut renewals = Vec::new();
    for op in batch {
        match op {
            WriteOp::Enqueue(message, done) => {
                messages.push(message);
                message_waiters.push(done);
            }
            WriteOp::Claim(claim, done) => claims.push((claim, done)),
            WriteOp::Renew(renew, done) => renewals.push((renew, done)),
        }
    }
    if !messages.is_empty() {
        let waiters = Waiters {
            messages: message_waiters,
            reports: Vec::new(),
        };
        commit(store, &messages, &[], waiters, stats, health).await;
    }
    for (renew, done) in renewals {
        let renewed = store
            .renew_leases(&renew.owner, &renew.ids, renew.until)
            .await
            .map_err(QueueError::from);
        let _ = done.send(renewed);
    }
    // After the commit: what it wrote may be what the claim takes.
    for (claim, done) in claims {
        let claimed = store
            .claim_due_ids(&claim.owner, claim.now, claim.lease_until, claim.limit)
            .await
            .map_err(QueueError::from);
        let _ = done.send(claimed);
    }
}

/// Who waits for a batch: one per message (in order), one per report.
struct Waiters {
    messages: Vec<oneshot::Sender<Result<()>>>,
    reports: Vec<oneshot::Sender<Result<Recorded>>>,
}

/// One transaction for the batch. A failed commit is every waiter's answer; after a good one a
/// message's own answer says whether it was written or over its tenant's quota.
async fn commit(
    store: &Store,
    messages: &[NewMessage],
    reports: &[DeliveryReport],
    waiters: Waiters,
    stats: &CommitStats,
    health: &Component,
) {
    let outcome = store.commit_batch(messages, reports).await;
    match &outcome {
        Ok(outcome) => {
            health.ok();
            stats.commits.fetch_add(1, Ordering::Relaxed);
            let written = outcome
                .admissions
                .iter()
                .filter(|a| **a == Admission::Written)
                .count();
            stats.messages.fetch_add(written as u64, Ordering::Relaxed);
        }
        Err(error) => {
            health.failed(format!("commit failed: {error}"));
            error!(%error, messages = messages.len(), reports = reports.len(), "queue commit failed");
        }
    }
    let failed = |error: &mailmux_store::StoreError| Err(QueueError::Commit(error.to_string()));
    // A session that went away no longer waits; nothing to tell it.
    for (n, done) in waiters.messages.into_iter().enumerate() {
        let _ = done.send(match &outcome {
            Ok(outcome) => match outcome.admissions.get(n) {
                Some(Admission::OverQuota { max_per_day }) => Err(QueueError::OverQuota {
                    max_per_day: *max_per_day,
                }),
                _ => Ok(()),
            },
            Err(error) => failed(error),
        });
    }
    for (n, done) in waiters.reports.into_iter().enumerate() {
        let _ = done.send(match &outcome {
            Ok(outcome) if outcome.recorded.get(n) == Some(&true) => Ok(Recorded::Yes),
            Ok(_) => Ok(Recorded::LeaseLost),
            Err(error) => Err(QueueError::Commit(error.to_string())),
        });
    }
}
