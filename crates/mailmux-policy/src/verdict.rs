//! Verdicts as values: a check answers `Accept`, or `Refuse` with the SMTP reply that tells the
//! client why and the class the refusal is counted (and, on the HTTP side, mapped) under.

use std::time::Duration;

use mailmux_core::reply::Reply;

/// Outcome of one policy check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    Refuse(Refusal),
}

impl Verdict {
    /// `Accept` as `Ok(())`, a refusal as `Err`: for `?` in code that stops at the first.
    pub fn into_result(self) -> Result<(), Refusal> {
        match self {
            Verdict::Accept => Ok(()),
            Verdict::Refuse(refusal) => Err(refusal),
        }
    }
}

/// A refusal: the reply to send, the class to count it under, and when trying again may
/// succeed (rate and quota; HTTP sends it as `Retry-After`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reason: RejectReason,
    pub reply: Reply,
    pub retry_after: Option<Duration>,
}

impl Refusal {
    pub fn new(reason: RejectReason, reply: Reply) -> Refusal {
        Refusal {
            reason,
            reply,
            retry_after: None,
        }
    }

    pub fn with_retry_after(mut self, wait: Duration) -> Refusal {
        self.retry_after = Some(wait);
        self
    }
}

/// Why a command, message or connection was refused, in classes coarse enough for a metrics
/// label and for choosing an HTTP status.
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
    /// Sending rate (per second or per minute, of the tenant or of the credential).
    Rate,
    /// Too many recipients.
    Recipients,
    /// Message larger than the tenant's (or the relay's) limit.
    Size,
    /// Content refused: bare CR/LF, NUL, over-long lines, a content hook's verdict.
    Content,
    /// A feature the tenant does not have.
    Feature,
    /// MX: domain not served or address unknown.
    Relay,
    /// Connection limits (global, per IP, per tenant), auth-failure lockout, idle commands.
    Connection,
    /// Store or queue unavailable (4xx, try again).
    Storage,
    /// Syntax errors, unknown commands, bad sequence.
    Protocol,
}

impl RejectReason {
    pub const ALL: [RejectReason; 13] = [
        RejectReason::Auth,
        RejectReason::Tenant,
        RejectReason::Sender,
        RejectReason::Quota,
        RejectReason::Rate,
        RejectReason::Recipients,
        RejectReason::Size,
        RejectReason::Content,
        RejectReason::Feature,
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
            RejectReason::Rate => "rate",
            RejectReason::Recipients => "recipients",
            RejectReason::Size => "size",
            RejectReason::Content => "content",
            RejectReason::Feature => "feature",
            RejectReason::Relay => "relay",
            RejectReason::Connection => "connection",
            RejectReason::Storage => "storage",
            RejectReason::Protocol => "protocol",
        }
    }

    /// Position in [`RejectReason::ALL`] (an index for per-class counters).
    pub fn index(self) -> usize {
        RejectReason::ALL
            .iter()
            .position(|r| *r == self)
            .expect("every reason is in ALL")
    }
}
