//! What `/healthz` reports: the state of each long-running part of the process, and the
//! supervisor that keeps those parts running.
//!
//! Every background task (the queue writer, the scheduler, delivery, the periodic jobs) is
//! started through [`supervise`]: if it panics, the failure is recorded on its component and
//! the task is started again after a back-off, so one bad message or one bug in a periodic
//! job never silently stops the queue. A task whose future returns has ended on purpose
//! (shutdown) and is not restarted. Parts that keep running but cannot do their work (the
//! writer whose commits fail) report that themselves through [`Component::failed`].

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tracing::{error, info};

use crate::now_ms;
use crate::sync::lock;

/// First wait before a panicked task is started again; doubled per panic in a row, up to
/// [`MAX_RESTART_BACKOFF`]. A task that panics at once on every start then costs a log line
/// every half minute, not a busy loop.
const FIRST_RESTART_BACKOFF: Duration = Duration::from_millis(500);
const MAX_RESTART_BACKOFF: Duration = Duration::from_secs(30);

/// A task that ran this long before panicking starts again with the first back-off.
const STABLE_AFTER: Duration = Duration::from_secs(60);

/// The components of this process, by name. Cheap to clone; one per process.
#[derive(Clone, Default)]
pub struct Health {
    components: Arc<Mutex<BTreeMap<&'static str, ComponentState>>>,
}

/// One component as `/healthz` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ComponentState {
    /// `ok` or `failed`.
    pub status: &'static str,
    /// Why it failed (the last error or panic); kept after recovery as the last failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// When `last_error` happened (Unix ms).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error_at: Option<i64>,
    /// Times the supervisor started the task again after a panic.
    pub restarts: u64,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct HealthReport {
    /// `ok` when every component is, else `degraded`.
    pub status: &'static str,
    pub components: BTreeMap<&'static str, ComponentState>,
}

impl HealthReport {
    pub fn is_ok(&self) -> bool {
        self.status == "ok"
    }
}

impl Health {
    /// Registers `name` (ok until told otherwise) and returns its handle.
    pub fn component(&self, name: &'static str) -> Component {
        lock(&self.components)
            .entry(name)
            .or_insert_with(|| ComponentState {
                status: "ok",
                last_error: None,
                last_error_at: None,
                restarts: 0,
            });
        Component {
            name,
            health: self.clone(),
        }
    }

    /// Every component's state; `degraded` when any has failed.
    pub fn report(&self) -> HealthReport {
        let components = lock(&self.components).clone();
        let status = if components.values().all(|c| c.status == "ok") {
            "ok"
        } else {
            "degraded"
        };
        HealthReport { status, components }
    }

    fn update(&self, name: &'static str, change: impl FnOnce(&mut ComponentState)) {
        if let Some(state) = lock(&self.components).get_mut(name) {
            change(state);
        }
    }
}

/// A component's handle: how a part of the process says how it is doing.
#[derive(Clone)]
pub struct Component {
    name: &'static str,
    health: Health,
}

impl Component {
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Working (again). Cheap: called after every successful commit.
    pub fn ok(&self) {
        self.health.update(self.name, |state| state.status = "ok");
    }

    /// Not able to do its work; `why` is shown until the next failure replaces it.
    pub fn failed(&self, why: impl Into<String>) {
        let why = why.into();
        self.health.update(self.name, |state| {
            state.status = "failed";
            state.last_error = Some(why);
            state.last_error_at = Some(now_ms());
        });
    }

    fn restarted(&self) {
        self.health.update(self.name, |state| state.restarts += 1);
    }
}

/// Runs the task `start` makes, for as long as the process lives: a panic marks `component`
/// failed and, after a back-off, starts a new task; a task that returns is done (shutdown).
/// The component is marked ok again when the new task starts.
pub async fn supervise<F, Fut>(component: Component, mut start: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut backoff = FIRST_RESTART_BACKOFF;
    loop {
        let started = tokio::time::Instant::now();
        match tokio::spawn(start()).await {
            Ok(()) => return,
            Err(join_error) if join_error.is_cancelled() => return,
            Err(join_error) => {
                let why = panic_message(join_error);
                error!(component = component.name(), %why, ?backoff, "background task panicked; restarting it");
                component.failed(format!("panicked: {why}"));
                if started.elapsed() >= STABLE_AFTER {
                    backoff = FIRST_RESTART_BACKOFF;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_RESTART_BACKOFF);
                component.restarted();
                component.ok();
                info!(component = component.name(), "background task restarted");
            }
        }
    }
}

fn panic_message(join_error: tokio::task::JoinError) -> String {
    match join_error.try_into_panic() {
        Ok(payload) => payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".to_string()),
        Err(other) => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test(start_paused = true)]
    async fn a_panicking_task_is_restarted_and_reported() {
        let health = Health::default();
        let component = health.component("worker");
        let runs = Arc::new(AtomicU32::new(0));
        let (finished_tx, finished_rx) = tokio::sync::oneshot::channel();
        let mut finished_tx = Some(finished_tx);
        let counter = runs.clone();
        let supervisor = tokio::spawn(supervise(component, move || {
            let run = counter.fetch_add(1, Ordering::SeqCst) + 1;
            let done = if run == 3 { finished_tx.take() } else { None };
            async move {
                if run < 3 {
                    panic!("bad run {run}");
                }
                // The third run works and then ends normally, like a task at shutdown.
                if let Some(done) = done {
                    let _ = done.send(());
                }
            }
        }));
        finished_rx.await.unwrap();
        supervisor.await.unwrap();
        assert_eq!(runs.load(Ordering::SeqCst), 3, "restarted twice, then done");
        let report = health.report();
        let state = &report.components["worker"];
        assert_eq!(state.restarts, 2);
        assert_eq!(state.status, "ok", "ok again once restarted");
        assert_eq!(state.last_error.as_deref(), Some("panicked: bad run 2"));
        assert!(report.is_ok());
    }

    #[test]
    fn one_failed_component_degrades_the_report() {
        let health = Health::default();
        let db = health.component("database");
        let _writer = health.component("queue_writer");
        assert_eq!(health.report().status, "ok");
        db.failed("connection refused");
        let report = health.report();
        assert_eq!(report.status, "degraded");
        assert_eq!(report.components["database"].status, "failed");
        assert_eq!(report.components["queue_writer"].status, "ok");
        db.ok();
        assert!(health.report().is_ok());
        assert_eq!(
            health.report().components["database"].last_error.as_deref(),
            Some("connection refused")
        );
    }
}
