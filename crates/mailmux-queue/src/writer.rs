//! The single writer: group commit for enqueues and delivery reports.
//!
//! It waits for one write, then takes whatever else is already waiting (up to `max_batch`)
//! and commits it all in one transaction. While a commit is in flight, new writes pile up in
//! the channel and form the next batch: the busier the relay, the more each fsync carries, and
//! an idle relay still commits a lone message at once.

use std::sync::atomic::{AtomicU64, Ordering};

use mailmux_core::metrics::{MetricSource, render_single};
use mailmux_store::{DeliveryReport, NewMessage, Store};
use tokio::sync::{mpsc, oneshot};
use tracing::error;

use crate::Result;

pub(crate) enum WriteOp {
    Enqueue(NewMessage, oneshot::Sender<Result<()>>),
    Report(DeliveryReport, oneshot::Sender<Result<()>>),
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
    stats: std::sync::Arc<CommitStats>,
) {
    let mut batch = Vec::with_capacity(max_batch);
    while ops.recv_many(&mut batch, max_batch).await > 0 {
        let mut messages = Vec::new();
        let mut reports = Vec::new();
        let mut waiters = Vec::with_capacity(batch.len());
        for op in batch.drain(..) {
            match op {
                WriteOp::Enqueue(message, done) => {
                    messages.push(message);
                    waiters.push(done);
                }
                WriteOp::Report(report, done) => {
                    reports.push(report);
                    waiters.push(done);
                }
            }
        }
        let outcome = store.commit_batch(&messages, &reports).await;
        if outcome.is_ok() {
            stats.commits.fetch_add(1, Ordering::Relaxed);
            stats
                .messages
                .fetch_add(messages.len() as u64, Ordering::Relaxed);
        }
        if let Err(error) = &outcome {
            error!(%error, messages = messages.len(), reports = reports.len(), "queue commit failed");
        }
        for done in waiters {
            // A session that went away no longer waits; nothing to tell it.
            let _ = done.send(match &outcome {
                Ok(()) => Ok(()),
                Err(error) => Err(crate::QueueError::Commit(error.to_string())),
            });
        }
    }
}
