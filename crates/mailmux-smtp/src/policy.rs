//! Policy as the SMTP side sees it. The submission policy (status, sender rights, limits,
//! rates, quota, content) is [`mailmux_policy`]'s, shared with the HTTP send API and
//! re-exported here; what only SMTP has lives here: the per-tenant session limit's refusal.
//! The MX's recipient rules are the inbound crate's ([`mailmux_inbound::Inbound::recipient`]).
//! Verdicts are values; the verb handlers send their replies.

pub use mailmux_policy::rules::{
    lookup_failed, message_size, recipient_count, storage_failed, too_large,
};
pub use mailmux_policy::{Refusal, Verdict};

use crate::metrics::RejectReason;
use crate::reply::Reply;

/// AUTH succeeded but the tenant already has `max` sessions open: 421 and close, like the
/// per-IP limit, so the client retries later instead of queueing on a session it cannot use.
pub fn tenant_sessions_exceeded(max: u64) -> Refusal {
    Refusal::new(
        RejectReason::Connection,
        Reply::new(
            421,
            "4.7.0",
            format!(
                "Too many concurrent sessions for this account (at most {max}), try again later"
            ),
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_session_limit_is_a_temporary_connection_refusal() {
        let refusal = tenant_sessions_exceeded(3);
        assert_eq!(
            (
                refusal.reply.code(),
                refusal.reply.status().map(|s| s.to_string()).as_deref()
            ),
            (421, Some("4.7.0"))
        );
        assert_eq!(refusal.reason, RejectReason::Connection);
        assert!(refusal.reply.lines()[0].contains("at most 3"));
    }
}
