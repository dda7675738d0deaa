//! Policy decisions as values. Each check takes what was read from the store and returns a
//! [`Verdict`]: `Accept`, or `Refuse` with the SMTP reply that tells the client why and the
//! class it is counted under. Nothing here does I/O, so the whole policy is table-tested; the
//! verb handlers fetch the facts and send the reply.

use mailmux_core::{Domain, Limits, Tenant, TenantStatus};

use crate::metrics::RejectReason;
use crate::reply::Reply;

/// Outcome of one policy check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    Refuse(Refusal),
}

/// A refusal: the reply to send and the class to count it under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reason: RejectReason,
    pub reply: Reply,
}

impl Refusal {
    pub fn new(reason: RejectReason, reply: Reply) -> Refusal {
        Refusal { reason, reply }
    }
}

fn refuse(reason: RejectReason, code: u16, status: &'static str, text: String) -> Verdict {
    Verdict::Refuse(Refusal::new(reason, Reply::new(code, status, text)))
}

/// The store could not answer: temporary, the client should try again.
pub fn lookup_failed() -> Refusal {
    Refusal::new(
        RejectReason::Storage,
        Reply::new(451, "4.3.0", "Temporary lookup failure, try again later"),
    )
}

/// The session's tenant no longer exists (deleted after AUTH).
pub fn tenant_missing() -> Refusal {
    Refusal::new(
        RejectReason::Tenant,
        Reply::new(550, "5.7.1", "This account no longer exists"),
    )
}

/// May this tenant submit mail now?
pub fn tenant_status(tenant: &Tenant) -> Verdict {
    let reason = |default: &str| {
        tenant
            .status_reason
            .as_deref()
            .filter(|r| !r.trim().is_empty())
            .unwrap_or(default)
            .to_string()
    };
    if !tenant.enabled {
        let why = reason("contact the operator");
        return refuse(
            RejectReason::Tenant,
            550,
            "5.7.1",
            format!("Account disabled: {why}"),
        );
    }
    match tenant.status {
        TenantStatus::Active => Verdict::Accept,
        TenantStatus::Suspended => {
            let why = reason("contact the operator");
            refuse(
                RejectReason::Tenant,
                550,
                "5.7.1",
                format!("Account suspended: {why}"),
            )
        }
        TenantStatus::Paused => {
            let why = reason("sending is paused");
            refuse(
                RejectReason::Tenant,
                451,
                "4.7.1",
                format!("Account paused: {why}; try again later"),
            )
        }
    }
}

/// How a domain stands with a tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DomainRight {
    /// The tenant's, and verified.
    Verified,
    /// The tenant's, not verified yet.
    Unverified,
    /// Unknown, or another tenant's. Security: both read the same, so a refusal never tells
    /// one tenant which domains another tenant holds.
    NotOwned,
}

pub fn domain_right(record: Option<&Domain>, tenant_id: &str) -> DomainRight {
    match record {
        Some(domain) if domain.tenant_id == tenant_id && domain.verified => DomainRight::Verified,
        Some(domain) if domain.tenant_id == tenant_id => DomainRight::Unverified,
        _ => DomainRight::NotOwned,
    }
}

/// MAIL FROM: the envelope sender's domain must be a verified domain of the tenant.
pub fn sender_domain(domain: &str, record: Option<&Domain>, tenant_id: &str) -> Verdict {
    match domain_right(record, tenant_id) {
        DomainRight::Verified => Verdict::Accept,
        DomainRight::Unverified => refuse(
            RejectReason::Sender,
            550,
            "5.7.1",
            format!(
                "sender domain {domain} is not verified yet \
                 (publish its DNS records or ask the operator)"
            ),
        ),
        DomainRight::NotOwned => refuse(
            RejectReason::Sender,
            550,
            "5.7.1",
            format!("sender domain {domain} is not a domain of this account"),
        ),
    }
}

/// From:/Sender: headers: each address must be in a verified domain of the tenant, or the
/// recipient would see a sender the tenant does not own.
pub fn header_address(
    field: &str,
    address: &str,
    record: Option<&Domain>,
    tenant_id: &str,
) -> Verdict {
    match domain_right(record, tenant_id) {
        DomainRight::Verified => Verdict::Accept,
        DomainRight::Unverified => refuse(
            RejectReason::Sender,
            550,
            "5.7.1",
            format!(
                "{field}: address {address} is in a domain that is not verified yet \
                 (publish its DNS records or ask the operator)"
            ),
        ),
        DomainRight::NotOwned => refuse(
            RejectReason::Sender,
            550,
            "5.7.1",
            format!("{field}: address {address} is not in a domain of this account"),
        ),
    }
}

/// Daily quota over a rolling 24 hours; 0 means unlimited.
pub fn daily_quota(sent_last_24h: u64, limits: &Limits) -> Verdict {
    let max = limits.max_messages_per_day;
    if max == 0 || sent_last_24h < max {
        return Verdict::Accept;
    }
    refuse(
        RejectReason::Quota,
        451,
        "4.7.1",
        format!("Daily message quota reached ({max} messages per 24 hours)"),
    )
}

/// Declared (SIZE=) or actual message size.
pub fn message_size(size: u64, max: u64) -> Verdict {
    if size <= max {
        return Verdict::Accept;
    }
    Verdict::Refuse(too_large(max))
}

/// The message went past the limit while it was read.
pub fn too_large(max: u64) -> Refusal {
    Refusal::new(
        RejectReason::Size,
        Reply::new(
            552,
            "5.3.4",
            format!("Message too large (the limit is {max} bytes)"),
        ),
    )
}

/// One more recipient when `already` are accepted.
pub fn recipient_count(already: usize, max: usize) -> Verdict {
    if already < max {
        return Verdict::Accept;
    }
    refuse(
        RejectReason::Recipients,
        452,
        "4.5.3",
        format!("Too many recipients (at most {max} per message)"),
    )
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

#[cfg(test)]
mod tests {
    use super::*;
    use mailmux_core::Tier;

    fn code(verdict: &Verdict) -> Option<(u16, &'static str, String)> {
        match verdict {
            Verdict::Accept => None,
            Verdict::Refuse(r) => Some((
                r.reply.code(),
                r.reply.status().unwrap(),
                r.reply.lines().join(" "),
            )),
        }
    }

    fn tenant(status: TenantStatus, enabled: bool, reason: Option<&str>) -> Tenant {
        let mut t = Tenant::new("t_1".into(), "acme".into(), Tier::Free, 0);
        t.status = status;
        t.enabled = enabled;
        t.status_reason = reason.map(str::to_string);
        t
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
    fn tenant_status_table() {
        let cases = [
            (tenant(TenantStatus::Active, true, None), None, ""),
            (
                tenant(TenantStatus::Suspended, true, Some("abuse")),
                Some((550, "5.7.1")),
                "abuse",
            ),
            (
                tenant(TenantStatus::Paused, true, Some("bounce rate")),
                Some((451, "4.7.1")),
                "bounce rate",
            ),
            (
                tenant(TenantStatus::Active, false, Some("unpaid")),
                Some((550, "5.7.1")),
                "unpaid",
            ),
            // Disabled wins over paused: the operator's switch is permanent.
            (
                tenant(TenantStatus::Paused, false, None),
                Some((550, "5.7.1")),
                "disabled",
            ),
        ];
        for (tenant, want, text) in cases {
            let got = code(&tenant_status(&tenant));
            assert_eq!(got.as_ref().map(|(c, s, _)| (*c, *s)), want, "{tenant:?}");
            if let Some((_, _, got_text)) = got {
                assert!(got_text.contains(text), "{got_text:?} lacks {text:?}");
            }
        }
    }

    #[test]
    fn sender_domain_table() {
        let cases = [
            (Some(domain("t_1", true)), None, ""),
            (Some(domain("t_1", false)), Some(550), "not verified"),
            (
                Some(domain("t_other", true)),
                Some(550),
                "not a domain of this account",
            ),
            (None, Some(550), "not a domain of this account"),
        ];
        for (record, want, text) in cases {
            let got = code(&sender_domain("acme.example", record.as_ref(), "t_1"));
            assert_eq!(got.as_ref().map(|g| g.0), want, "{record:?}");
            if let Some((_, status, got_text)) = got {
                assert_eq!(status, "5.7.1");
                assert!(got_text.contains(text) && got_text.contains("acme.example"));
            }
            let header = code(&header_address(
                "From",
                "a@acme.example",
                record.as_ref(),
                "t_1",
            ));
            assert_eq!(header.map(|g| (g.0, g.1)), want.map(|c| (c, "5.7.1")));
        }
    }

    #[test]
    fn quota_size_and_recipient_limits() {
        let limits = |max| Limits {
            max_users: 0,
            max_domains: 0,
            max_storage_mb: 0,
            max_messages_per_day: max,
        };
        let cases = [
            (daily_quota(99, &limits(100)), None),
            (daily_quota(100, &limits(100)), Some((451, "4.7.1"))),
            (daily_quota(1_000_000, &limits(0)), None),
            (message_size(1024, 1024), None),
            (message_size(1025, 1024), Some((552, "5.3.4"))),
            (recipient_count(99, 100), None),
            (recipient_count(100, 100), Some((452, "4.5.3"))),
        ];
        for (n, (verdict, want)) in cases.into_iter().enumerate() {
            assert_eq!(code(&verdict).map(|g| (g.0, g.1)), want, "case {n}");
        }
        assert!(
            code(&daily_quota(100, &limits(100)))
                .unwrap()
                .2
                .contains("quota")
        );
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
            assert_eq!((got.0, got.1), want, "{record:?}");
        }
    }
}
