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
//! On Postgres several batches are committed at once (see [`run`]): there the database, not
//! this process, serialises what must be serialised, and one commit at a time left both idle
//! between round trips.
//!
//! A batch is whatever is waiting when the last commit ends: nothing waits for a batch to fill,
//! and claims and renewals run after the commit. Reports share commits with enqueues (one
//! fsync for both): a report's latency no longer decides how often a crash re-sends a message,
//! since the remote's 250 is journaled before the report is made (`journal.rs`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use mailmux_core::health::Component;
use mailmux_core::metrics::{MetricSource, render_single};
use mailmux_store::StoreError;
use tokio::sync::{Mutex, Semaphore, mpsc, oneshot};
use tracing::error;

use crate::{
    Admission, DeliveryReport, NewMessage, QueueError, QueueStorage, Recorded, Result, Spool,
};

pub(crate) enum WriteOp {
    Enqueue(NewMessage, oneshot::Sender<Result<()>>),
    Report(DeliveryReport, oneshot::Sender<Result<Recorded>>),
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

/// The writer loop. `ops` is shared with the supervisor so that a writer started after a
/// panic takes over the same channel.
///
/// On SQLite (one writer) each batch is committed before the next is taken. On Postgres the
/// database does the waiting for the fsync, and a node that waited for each commit before
/// sending the next would leave the server and its own CPU idle between round trips: up to
/// [`QueueStorage::commits_in_flight`] batches are committed at once, each in its own task
/// (their order does not matter: a message's report is made only after its enqueue committed).
pub(crate) async fn run<S: QueueStorage>(
    store: S,
    ops: Arc<Mutex<mpsc::Receiver<WriteOp>>>,
    max_batch: usize,
    spool: Arc<Spool>,
    stats: Arc<CommitStats>,
    health: Component,
) {
    let mut ops = ops.lock().await;
    let parallel = store.commits_in_flight().max(1);
    let in_flight = Arc::new(Semaphore::new(parallel));
    let mut batch = Vec::with_capacity(max_batch);
    while ops.recv_many(&mut batch, max_batch).await > 0 {
        let work = Batch::from_ops(batch.drain(..));
        // Waiting here lets the channel fill: the next batch carries more.
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let (store, spool, stats, health) =
            (store.clone(), spool.clone(), stats.clone(), health.clone());
        let job = async move {
            work.run(&store, &spool, &stats, &health).await;
            drop(permit);
        };
        if parallel == 1 {
            job.await;
        } else {
            tokio::spawn(job);
        }
    }
}

/// What one batch asks of storage, with who waits for each answer.
struct Batch {
    messages: Vec<NewMessage>,
    reports: Vec<DeliveryReport>,
    waiters: Waiters,
    claims: Vec<(Claim, oneshot::Sender<Result<Vec<String>>>)>,
    renewals: Vec<(Renew, oneshot::Sender<Result<u64>>)>,
}

impl Batch {
    fn from_ops(ops: impl Iterator<Item = WriteOp>) -> Batch {
        let mut batch = Batch {
            messages: Vec::new(),
            reports: Vec::new(),
            // Apart, because each message gets its own answer (its tenant may be over quota)
            // while reports share the batch's.
            waiters: Waiters {
                messages: Vec::new(),
                reports: Vec::new(),
            },
            claims: Vec::new(),
            renewals: Vec::new(),
        };
        for op in ops {
            match op {
                WriteOp::Enqueue(message, done) => {
                    batch.messages.push(message);
                    batch.waiters.messages.push(done);
                }
                WriteOp::Report(report, done) => {
                    batch.reports.push(report);
                    batch.waiters.reports.push(done);
                }
                WriteOp::Claim(claim, done) => batch.claims.push((claim, done)),
                WriteOp::Renew(renew, done) => batch.renewals.push((renew, done)),
            }
        }
        batch
    }

    /// The commit, then the renewals, then the claims.
    async fn run<S: QueueStorage>(
        self,
        store: &S,
        spool: &Arc<Spool>,
        stats: &CommitStats,
        health: &Component,
    ) {
        if !self.messages.is_empty() || !self.reports.is_empty() {
            let freed = commit(
                store,
                &self.messages,
                &self.reports,
                self.waiters,
                stats,
                health,
            )
            .await;
            if !freed.is_empty() {
                // Off the writer's path: the next batch need not wait for the unlinks.
                let spool = spool.clone();
                tokio::spawn(async move { spool.remove(freed).await });
            }
        }
        for (renew, done) in self.renewals {
            let renewed = store
                .renew_leases(&renew.owner, &renew.ids, renew.until)
                .await
                .map_err(QueueError::from);
            let _ = done.send(renewed);
        }
        // After the commit: reports in this batch may have freed what the claim takes.
        for (claim, done) in self.claims {
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
    reports: Vec<oneshot::Sender<Result<Recorded>>>,
}

/// One transaction for the batch. A failed commit is every waiter's answer; after a good one a
/// message's own answer says whether it was written or over its tenant's quota. Answers the
/// spool files the commit freed.
async fn commit<S: QueueStorage>(
    store: &S,
    messages: &[NewMessage],
    reports: &[DeliveryReport],
    waiters: Waiters,
    stats: &CommitStats,
    health: &Component,
) -> Vec<String> {
    let mut outcome = store.commit_batch(messages, reports).await;
    let freed = match &mut outcome {
        Ok(outcome) => std::mem::take(&mut outcome.freed_bodies),
        Err(_) => Vec::new(),
    };
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
    let failed = |error: &StoreError| Err(QueueError::Commit(error.to_string()));
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
    freed
}
