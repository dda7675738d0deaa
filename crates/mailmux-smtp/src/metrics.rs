//! Counters for the admin `/metrics` endpoint. Plain atomics, owned by the [`crate::Server`]
//! (no global registry): sessions bump them, the admin API reads them.

use mailmux_core::metrics::{MetricSource, render_single};
use std::sync::atomic::{AtomicU64, Ordering};

/// Why a command, message or connection was refused, in classes coarse enough for a label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectReason {
    /// AUTH missing (530), required TLS (538) or failed (535).
    Auth,
    /// Tenant disabled, suspended, paused or gone.
    Tenant,
    /// Envelope sender or From:/Sender: header outside the tenant's verified domains.
    Sender,
    /// Daily message quota.
    Quota,
    /// Too many recipients.
    Recipients,
    /// Message larger than `smtp.max_message_size`.
    Size,
    /// Content refused: bare CR/LF, NUL, over-long lines.
    Content,
    /// MX: domain not served or address unknown.
    Relay,
    /// Connection limits, auth-failure lockout, too many idle commands.
    Connection,
    /// Store or queue unavailable (4xx, try again).
    Storage,
    /// Syntax errors, unknown commands, bad sequence.
    Protocol,
}

impl RejectReason {
    pub const ALL: [RejectReason; 11] = [
        RejectReason::Auth,
        RejectReason::Tenant,
        RejectReason::Sender,
        RejectReason::Quota,
        RejectReason::Recipients,
        RejectReason::Size,
        RejectReason::Content,
        RejectReason::Relay,
        RejectReason::Connection,
        RejectReason::Storage,
        RejectReason::Protocol,
    ];

    /// Label value for `/metrics`.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::Auth => "auth",
            RejectReason::Tenant => "tenant",
            RejectReason::Sender => "sender",
            RejectReason::Quota => "quota",
            RejectReason::Recipients => "recipients",
            RejectReason::Size => "size",
            RejectReason::Content => "content",
            RejectReason::Relay => "relay",
            RejectReason::Connection => "connection",
            RejectReason::Storage => "storage",
            RejectReason::Protocol => "protocol",
        }
    }

    fn index(self) -> usize {
        RejectReason::ALL
            .iter()
            .position(|r| *r == self)
            .expect("every reason is in ALL")
    }
}

/// Counters of the SMTP listeners.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Sessions open now (over all listeners).
    pub sessions_active: AtomicU64,
    /// Messages made durable and answered 250.
    pub messages_accepted: AtomicU64,
    /// Failed AUTH attempts.
    pub auth_failures: AtomicU64,
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
