//! The rules, as pure functions: each takes what was read from the store (or measured) and
//! returns a [`Verdict`] or a [`Refusal`] with the contract's reply. Nothing here does I/O, so
//! the whole table is tested below; [`crate::Policy`] fetches the facts and calls these.

use std::time::Duration;

use mailmux_core::reply::Reply;
use mailmux_core::{Domain, Feature, Limits, Tenant, TenantStatus};

use crate::verdict::{Refusal, RejectReason, Verdict};

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

/// The message could not be made durable: temporary, the client keeps its copy and retries.
pub fn storage_failed() -> Refusal {
    Refusal::new(
        RejectReason::Storage,
        Reply::new(451, "4.3.0", "Temporary storage failure, try again"),
    )
}

/// The session's tenant no longer exists (deleted after AUTH).
pub fn tenant_missing() -> Refusal {
    Refusal::new(
        RejectReason::Tenant,
        Reply::new(550, "5.7.1", "This account no longer exists"),
    )
}

/// May this tenant submit mail now? Suspended or disabled: 550; paused: 451. The tenant's
/// status reason is in the text.
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

/// The envelope sender's domain must be a verified domain of the tenant.
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

/// A From:/Sender: header that names no address that could be checked.
pub fn header_without_address(field: &str) -> Refusal {
    Refusal::new(
        RejectReason::Sender,
        Reply::new(
            550,
            "5.7.1",
            format!("{field}: header has no address that can be checked"),
        ),
    )
}

/// Daily quota over a rolling 24 hours; 0 means unlimited.
pub fn daily_quota(sent_last_24h: u64, limits: &Limits) -> Verdict {
    let max = limits.max_messages_per_day;
    if max == 0 || sent_last_24h < max {
        return Verdict::Accept;
    }
    Verdict::Refuse(quota_reached(max))
}

/// The daily quota is used up (at MAIL, or found so inside the queue's commit).
pub fn quota_reached(max: u64) -> Refusal {
    Refusal::new(
        RejectReason::Quota,
        Reply::new(
            451,
            "4.7.1",
            format!("Daily message quota reached ({max} messages per 24 hours); try again later"),
        ),
    )
}

/// Which sending rate was exceeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RateWindow {
    PerSecond,
    PerMinute,
}

impl RateWindow {
    pub fn as_str(self) -> &'static str {
        match self {
            RateWindow::PerSecond => "second",
            RateWindow::PerMinute => "minute",
        }
    }
}

/// Whose rate was exceeded: the tenant's, or a credential's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateOwner {
    Tenant,
    Credential,
}

/// The sending rate is exceeded; `retry_after` is when the next message would pass.
pub fn rate_exceeded(
    owner: RateOwner,
    window: RateWindow,
    limit: u64,
    retry_after: Duration,
) -> Refusal {
    let whose = match owner {
        RateOwner::Tenant => "this account",
        RateOwner::Credential => "this credential",
    };
    Refusal::new(
        RejectReason::Rate,
        Reply::new(
            451,
            "4.7.1",
            format!(
                "Sending rate exceeded ({limit} messages per {} for {whose}); try again later",
                window.as_str()
            ),
        ),
    )
    // A client cannot act on sub-second precision, and a zero wait would invite a retry loop.
    .with_retry_after(retry_after.max(Duration::from_secs(1)))
}

/// Declared (SIZE=) or actual message size against the effective limit.
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

/// One more recipient when `already` are accepted, against the effective limit.
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

/// A gate on a feature flag: what the flag names is available only while it is on.
pub fn feature_gate(tenant: &Tenant, feature: Feature) -> Verdict {
    if tenant.features.has(feature) {
        return Verdict::Accept;
    }
    refuse(
        RejectReason::Feature,
        550,
        "5.7.1",
        format!(
            "The {} feature is not enabled for this account",
            feature.as_str()
        ),
    )
}

/// Queue priority of a tenant's mail: `priority_support` tenants' mail is claimed first when
/// the queue is contended (claims order by priority, then by due time).
pub fn queue_priority(tenant: &Tenant) -> i64 {
    if tenant.features.priority_support {
        PRIORITY_SUPPORT
    } else {
        0
    }
}

/// The priority of `priority_support` tenants' mail (everything else, DSNs included, is 0).
pub const PRIORITY_SUPPORT: i64 = 10;

#[cfg(test)]
mod tests {
    use super::*;
    use mailmux_core::Tier;

    fn code(verdict: &Verdict) -> Option<(u16, String, String)> {
        match verdict {
            Verdict::Accept => None,
            Verdict::Refuse(r) => Some((
                r.reply.code(),
                r.reply.status().unwrap().to_string(),
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
            inbound: false,
            dmarc_reject: false,
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
                tenant(TenantStatus::Paused, true, None),
                Some((451, "4.7.1")),
                "paused",
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
            assert_eq!(
                got.as_ref().map(|(c, s, _)| (*c, s.as_str())),
                want,
                "{tenant:?}"
            );
            assert_eq!(tenant.is_sending(), want.is_none(), "{tenant:?}");
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
            assert_eq!(
                header.as_ref().map(|g| (g.0, g.1.as_str())),
                want.map(|c| (c, "5.7.1"))
            );
        }
    }

    #[test]
    fn quota_size_recipient_and_rate_limits() {
        let limits = |max| Limits {
            max_messages_per_day: max,
            ..Tier::Enterprise.default_limits()
        };
        let cases = [
            (daily_quota(99, &limits(100)), None),
            (daily_quota(100, &limits(100)), Some((451, "4.7.1"))),
            (daily_quota(1_000_000, &limits(0)), None),
            (message_size(1024, 1024), None),
            (message_size(1025, 1024), Some((552, "5.3.4"))),
            (recipient_count(99, 100), None),
            (recipient_count(100, 100), Some((452, "4.5.3"))),
            (
                Verdict::Refuse(rate_exceeded(
                    RateOwner::Tenant,
                    RateWindow::PerSecond,
                    5,
                    Duration::ZERO,
                )),
                Some((451, "4.7.1")),
            ),
        ];
        for (n, (verdict, want)) in cases.into_iter().enumerate() {
            let got = code(&verdict);
            assert_eq!(got.as_ref().map(|g| (g.0, g.1.as_str())), want, "case {n}");
        }
        // The text names which limit it was, so a person can tell quota from rate.
        assert!(
            code(&daily_quota(100, &limits(100)))
                .unwrap()
                .2
                .contains("quota")
        );
        let rate = rate_exceeded(
            RateOwner::Credential,
            RateWindow::PerMinute,
            60,
            Duration::from_millis(10),
        );
        let text = rate.reply.lines().join(" ");
        assert!(text.contains("rate") && text.contains("60 messages per minute"));
        assert!(text.contains("credential"), "{text}");
        assert_eq!(rate.reason, RejectReason::Rate);
        assert_eq!(
            rate.retry_after,
            Some(Duration::from_secs(1)),
            "at least 1 s"
        );
        assert_eq!(quota_reached(7).reason, RejectReason::Quota);
    }

    #[test]
    fn feature_gates_and_priority() {
        let mut t = Tenant::new("t_1".into(), "acme".into(), Tier::Free, 0);
        let all = [
            Feature::SpamFiltering,
            Feature::VirusScanning,
            Feature::DkimSigning,
            Feature::MailingLists,
            Feature::Webhooks,
            Feature::ApiAccess,
            Feature::CustomDomains,
            Feature::PrioritySupport,
        ];
        t.features = Default::default();
        for feature in all {
            let refused = code(&feature_gate(&t, feature)).expect("off: refused");
            assert_eq!((refused.0, refused.1.as_str()), (550, "5.7.1"));
            assert!(refused.2.contains(feature.as_str()), "{}", refused.2);
        }
        t.features = Tier::Enterprise.default_features();
        for feature in all {
            assert_eq!(feature_gate(&t, feature), Verdict::Accept, "{feature:?}");
        }
        assert_eq!(queue_priority(&t), PRIORITY_SUPPORT);
        t.features.priority_support = false;
        assert_eq!(queue_priority(&t), 0);
    }
}
