//! Policy as the SMTP side sees it. The submission policy (status, sender rights, limits,
//! rates, quota, content) is [`mailmux_policy`]'s, shared with the HTTP send API and
//! re-exported here; what only SMTP has lives here: the MX relay rule and the per-tenant
//! session limit's refusal. Verdicts are values; the verb handlers send their replies.

use mailmux_core::Domain;

pub use mailmux_policy::rules::{
    lookup_failed, message_size, recipient_count, storage_failed, too_large,
};
pub use mailmux_policy::{Refusal, Verdict};

use crate::metrics::RejectReason;
use crate::reply::Reply;

fn refuse(reason: RejectReason, code: u16, status: &'static str, text: String) -> Verdict {
    Verdict::Refuse(Refusal::new(reason, Reply::new(code, status, text)))
}

/// MX: what happens to mail for `domain`. Never an open relay: a domain no tenant holds is
/// refused. For a tenant's domain no address exists yet; receipt rules (the inbound side)
/// will add an accepting arm here.
pub fn mx_recipient(domain: &str, record: Option<&Domain>) -> Verdict {
    match record {
        None => refuse(
            RejectReason::Relay,
            550,
            "5.7.1",
            format!("Relaying denied: {domain} is not served here"),
        ),
        Some(_) => refuse(RejectReason::Relay, 550, "5.1.1", "No such user".into()),
    }
}

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

    fn code(verdict: &Verdict) -> Option<(u16, String)> {
        match verdict {
            Verdict::Accept => None,
            Verdict::Refuse(r) => Some((r.reply.code(), r.reply.status().unwrap().to_string())),
        }
    }

    fn domain(tenant: &str, verified: bool) -> Domain {
        Domain {
            name: "acme.example".into(),
            tenant_id: tenant.into(),
            verified,
            verified_by: None,
            verification_token: "x".into(),
            created_at: 0,
        }
    }

    #[test]
    fn mx_is_never_an_open_relay() {
        let cases = [
            (None, (550, "5.7.1")),
            (Some(domain("t_1", true)), (550, "5.1.1")),
            (Some(domain("t_1", false)), (550, "5.1.1")),
        ];
        for (record, want) in cases {
            let got = code(&mx_recipient("acme.example", record.as_ref())).unwrap();
            assert_eq!((got.0, got.1.as_str()), want, "{record:?}");
        }
    }

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
