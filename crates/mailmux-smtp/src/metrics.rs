//! Counters for the admin `/metrics` endpoint. Plain atomics, owned by the [`crate::Server`]
//! (no global registry): sessions bump them, the admin API reads them.

use mailmux_core::metrics::{MetricSource, render_single};
use std::sync::atomic::{AtomicU64, Ordering};

/// The refusal classes are the policy's (shared with the HTTP send API).
pub use mailmux_policy::RejectReason;

/// Counters of the SMTP listeners.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Sessions open now (over all listeners).
    pub sessions_active: AtomicU64,
    /// Messages made durable and answered 250.
    pub messages_accepted: AtomicU64,
    /// Failed AUTH attempts.
    pub auth_failures: AtomicU64,
    /// AUTH attempts and connections refused because of an AUTH-failure lockout (of a
    /// username from an address, or of a whole address).
    pub auth_lockouts: AtomicU64,
    rejected: [AtomicU64; RejectReason::ALL.len()],
}

impl Metrics {
    /// Refusals so far of one class.
    pub fn rejected(&self, reason: RejectReason) -> u64 {
        self.rejected[reason.index()].load(Ordering::Relaxed)
    }

    pub(crate) fn reject(&self, reason: RejectReason) {
        self.rejected[reason.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

impl MetricSource for Metrics {
    fn render(&self, out: &mut String) {
        use std::fmt::Write;
        render_single(
            out,
            "mailmux_smtp_sessions_active",
            "gauge",
            "SMTP sessions open now, over all listeners.",
            self.sessions_active.load(Ordering::Relaxed),
        );
        render_single(
            out,
            "mailmux_smtp_messages_accepted_total",
            "counter",
            "Messages made durable and answered 250 by this process.",
            self.messages_accepted.load(Ordering::Relaxed),
        );
        render_single(
            out,
            "mailmux_smtp_auth_failures_total",
            "counter",
            "Failed SMTP AUTH attempts seen by this process.",
            self.auth_failures.load(Ordering::Relaxed),
        );
        render_single(
            out,
            "mailmux_smtp_auth_lockouts_total",
            "counter",
            "SMTP AUTH attempts and connections refused because of an AUTH-failure lockout.",
            self.auth_lockouts.load(Ordering::Relaxed),
        );
        let _ = writeln!(
            out,
            "# HELP mailmux_smtp_rejected_total SMTP refusals by class."
        );
        let _ = writeln!(out, "# TYPE mailmux_smtp_rejected_total counter");
        for reason in RejectReason::ALL {
            let _ = writeln!(
                out,
                "mailmux_smtp_rejected_total{{reason=\"{}\"}} {}",
                reason.as_str(),
                self.rejected(reason)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_reason_has_its_own_counter() {
        let metrics = Metrics::default();
        for (n, reason) in RejectReason::ALL.into_iter().enumerate() {
            for _ in 0..=n {
                metrics.reject(reason);
            }
        }
        for (n, reason) in RejectReason::ALL.into_iter().enumerate() {
            assert_eq!(
                metrics.rejected(reason),
                n as u64 + 1,
                "{}",
                reason.as_str()
            );
        }
    }
}
