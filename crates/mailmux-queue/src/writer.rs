//! The single writer: group commit for enqueues and delivery reports.
//!
//! It waits for one write, then takes whatever else is already waiting (up to `max_batch`)
//! and commits it all in one transaction. While a commit is in flight, new writes pile up in
//! the channel and form the next batch: the busier the relay, the more each fsync carries, and
//! an idle relay still commits a lone message at once.
//!
//! The scheduler's claims go through here too. On SQLite a second writing connection does not
//! queue behind the first: it sleeps in SQLite's busy handler (1, 2, 5, 10… ms), so claims on
//! their own connection would stall every commit they collide with. One writer, no collisions.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use mailmux_core::metrics::{MetricSource, render_single};
use mailmux_store::{Admission, DeliveryReport, NewMessage, Store};
use tokio::sync::{mpsc, oneshot};
use tracing::error;

use crate::{QueueError, Result};

pub(crate) enum WriteOp {
    Enqueue(NewMessage, oneshot::Sender<Result<()>>),
    Report(DeliveryReport, oneshot::Sender<Result<()>>),
    /// Lease due messages; answers their ids.
    Claim(Claim, oneshot::Sender<Result<Vec<String>>>),
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

pub(crate) async fn run(
    store: Store,
    mut ops: mpsc::Receiver<WriteOp>,
    max_batch: usize,
    stats: Arc<CommitStats>,
) {
    let mut batch = Vec::with_capacity(max_batch);
    while ops.recv_many(&mut batch, max_batch).await > 0 {
        let mut messages = Vec::new();
        let mut reports = Vec::new();
        // Apart, because each message gets its own answer (its tenant may be over quota) while
        // reports share the batch's.
        let mut message_waiters = Vec::new();
        let mut report_waiters = Vec::new();
        let mut claims = Vec::new();
        for op in batch.drain(..) {
            match op {
                WriteOp::Enqueue(message, done) => {
                    messages.push(message);
                    message_waiters.push(done);
                }
                WriteOp::Report(report, done) => {
                    reports.push(report);
                    report_waiters.push(done);
                }
                WriteOp::Claim(claim, done) => claims.push((claim, done)),
            }
        }
        if !messages.is_empty() || !reports.is_empty() {
            let waiters = Waiters {
                messages: message_waiters,
                reports: report_waiters,
            };
            commit(&store, &messages, &reports, waiters, &stats).await;
        }
        // After the commit: reports in this batch may have freed what the claim takes.
        for (claim, done) in claims {
            let claimed = store
                .claim_due_ids(&claim.owner, claim.now, claim.lease_until, claim.limit)
                .await
                .map_err(QueueError::from);
            let _ = done.send(claimed);
        }
    }
}

/// Who waits for a batch: one per message (in order), one per report.
struct Waiters {
    messages: Vec<oneshot::Sender<Result<()>>>,
    reports: Vec<oneshot::Sender<Result<()>>>,
}

/// One transaction for the batch. A failed commit is every waiter's answer; after a good one a
/// message's own answer says whether it was written or over its tenant's quota.
async fn commit(
    store: &Store,
    messages: &[NewMessage],
    reports: &[DeliveryReport],
    waiters: Waiters,
    stats: &CommitStats,
) {
    let outcome = store.commit_batch(messages, reports).await;
    match &outcome {
        Ok(admissions) => {
            stats.commits.fetch_add(1, Ordering::Relaxed);
            let written = admissions
                .iter()
                .filter(|a| **a == Admission::Written)
                .count();
            stats.messages.fetch_add(written as u64, Ordering::Relaxed);
        }
        Err(error) => {
            error!(%error, messages = messages.len(), reports = reports.len(), "queue commit failed");
        }
    }
    let failed = |error: &mailmux_store::StoreError| Err(QueueError::Commit(error.to_string()));
    // A session that went away no longer waits; nothing to tell it.
    for (n, done) in waiters.messages.into_iter().enumerate() {
        let _ = done.send(match &outcome {
            Ok(admissions) => match admissions.get(n) {
                Some(Admission::OverQuota { max_per_day }) => Err(QueueError::OverQuota {
                    max_per_day: *max_per_day,
                }),
                _ => Ok(()),
            },
            Err(error) => failed(error),
        });
    }
    for done in waiters.reports {
        let _ = done.send(match &outcome {
            Ok(_) => Ok(()),
            Err(error) => failed(error),
        });
    }
}
