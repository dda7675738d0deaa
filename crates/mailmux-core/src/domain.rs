//! Sending and receiving domains. A domain belongs to one tenant; mail from it is accepted
//! only once it is verified (DNS records found, or the operator's override).

use serde::{Deserialize, Serialize};

use crate::tenant::TenantId;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Domain {
    /// Normalised: lowercase ASCII (A-labels), no trailing dot.
    pub name: String,
    pub tenant_id: TenantId,
    pub verified: bool,
    /// `dns` or `operator`, once verified.
    pub verified_by: Option<String>,
    /// Published by the tenant as a TXT record to prove it controls the domain.
    pub verification_token: String,
    pub created_at: i64,
    /// Whether mailmux is this domain's MX: the MX listener accepts mail for the addresses its
    /// receipt rules match, and the records to publish include the MX.
    #[serde(default)]
    pub inbound: bool,
    /// Inbound mail failing DMARC under its sender domain's `p=reject` is refused (550 5.7.1)
    /// rather than accepted with the failure in its Authentication-Results header.
    #[serde(default)]
    pub dmarc_reject: bool,
}

/// A DNS record a tenant must publish for a domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsRecord {
    #[serde(rename = "type")]
    pub record_type: String,
    pub name: String,
    pub value: String,
    /// `pending` until a verification finds it, then `verified` (or `missing`/`mismatch`).
    pub status: String,
}

/// Name of the TXT record that proves control of `domain`.
pub fn verification_record_name(domain: &str) -> String {
    format!("_mailmux.{domain}")
}

/// The records to publish for a sending domain: the verification TXT, SPF and DMARC, and for
/// an inbound domain the MX naming this relay. `relay_hostname` is this relay's public name
/// (SPF authorises its addresses; the MX points at it).
pub fn sending_dns_records(domain: &Domain, relay_hostname: &str) -> Vec<DnsRecord> {
    let status = if domain.verified {
        "verified"
    } else {
        "pending"
    };
    let record = |record_type: &str, name: String, value: String| DnsRecord {
        record_type: record_type.to_string(),
        name,
        value,
        status: status.to_string(),
    };
    let mut records = vec![
        record(
            "TXT",
            verification_record_name(&domain.name),
            format!("mailmux-verification={}", domain.verification_token),
        ),
        record("TXT", domain.name.clone(), spf_value(relay_hostname)),
        record(
            "TXT",
            format!("_dmarc.{}", domain.name),
            "v=DMARC1; p=none".to_string(),
        ),
    ];
    if domain.inbound {
        // Not a condition of verification (the domain may send before its MX moves here),
        // so it starts `pending` like the others until a check finds it.
        records.push(DnsRecord {
            record_type: "MX".to_string(),
            name: domain.name.clone(),
            value: mx_value(relay_hostname),
            status: "pending".to_string(),
        });
    }
    records
}

/// The MX value an inbound domain publishes: this relay, preference 10.
pub fn mx_value(relay_hostname: &str) -> String {
    format!("10 {relay_hostname}")
}

/// The SPF policy a domain that sends through this relay publishes: the relay's addresses.
pub fn spf_value(relay_hostname: &str) -> String {
    format!("v=spf1 a:{relay_hostname} ~all")
}

/// The records to publish for a custom return-path (MAIL FROM) domain: an MX, so that bounces
/// to it reach this relay, and SPF, since receivers check SPF against the MAIL FROM domain.
pub fn return_path_dns_records(return_path: &str, relay_hostname: &str) -> Vec<DnsRecord> {
    vec![
        DnsRecord {
            record_type: "MX".into(),
            name: return_path.to_string(),
            value: mx_value(relay_hostname),
            status: "pending".into(),
        },
        DnsRecord {
            record_type: "TXT".into(),
            name: return_path.to_string(),
            value: spf_value(relay_hostname),
            status: "pending".into(),
        },
    ]
}

/// The records SES needs for an identity's custom MAIL FROM domain in `region`: an MX naming
/// SES's feedback endpoint (bounces and complaints go to SES) and SPF authorising SES.
pub fn ses_mail_from_dns_records(mail_from: &str, region: &str) -> Vec<DnsRecord> {
    vec![
        DnsRecord {
            record_type: "MX".into(),
            name: mail_from.to_string(),
            value: mx_value(&format!("feedback-smtp.{region}.amazonses.com")),
            status: "pending".into(),
        },
        DnsRecord {
            record_type: "TXT".into(),
            name: mail_from.to_string(),
            value: "v=spf1 include:amazonses.com ~all".into(),
            status: "pending".into(),
        },
    ]
}

/// Whether `sub` is a proper subdomain of `parent` (both normalised): `bounce.acme.example`
/// of `acme.example`, but not `acme.example` itself nor `xacme.example`.
pub fn is_subdomain_of(sub: &str, parent: &str) -> bool {
    sub.len() > parent.len() + 1
        && sub.ends_with(parent)
        && sub.as_bytes()[sub.len() - parent.len() - 1] == b'.'
}

/// Why a domain name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainNameError {
    #[error("domain name is empty")]
    Empty,
    #[error("an IP literal is not a domain name")]
    IpLiteral,
    #[error("domain name is too long (at most 253 characters)")]
    TooLong,
    #[error("label {0:?} is not a valid DNS label")]
    BadLabel(String),
    #[error("a domain needs at least two labels")]
    SingleLabel,
    #[error("not a valid internationalised domain name")]
    NotIdna,
}

/// Normalises a domain name as a tenant or a client writes it into the one form mailmux stores
/// and compares: IDNA (UTS #46) to A-labels (`Bücher.Example` → `xn--bcher-kva.example`),
/// lowercase, one trailing dot removed. Refuses IP literals, single labels and anything that is
/// not a hostname-style name (letters, digits, hyphens; 1-63 characters per label, 253 in all).
///
/// Why A-labels: DNS, SPF, DKIM `d=` and the SMTP envelope (without SMTPUTF8) all speak them, so
/// comparing in this form is what makes `bücher.example` and `xn--bcher-kva.example` one domain.
pub fn normalize_domain(raw: &str) -> Result<String, DomainNameError> {
    let trimmed = raw.trim();
    let trimmed = trimmed.strip_suffix('.').unwrap_or(trimmed);
    if trimmed.is_empty() {
        return Err(DomainNameError::Empty);
    }
    if trimmed.starts_with('[') || trimmed.parse::<std::net::IpAddr>().is_ok() {
        return Err(DomainNameError::IpLiteral);
    }
    let name = if trimmed.is_ascii() && !trimmed.split('.').any(|l| l.starts_with("xn--")) {
        trimmed.to_ascii_lowercase()
    } else {
        // Only names that need it go through UTS #46: for plain ASCII it would only lowercase,
        // and its error would hide which label is wrong. A-labels are checked here too (an
        // `xn--` label that is not valid Punycode is refused).
        idna::domain_to_ascii(trimmed).map_err(|_| DomainNameError::NotIdna)?
    };
    if name.len() > 253 {
        return Err(DomainNameError::TooLong);
    }
    let labels: Vec<&str> = name.split('.').collect();
    for label in &labels {
        let valid = !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !valid {
            return Err(DomainNameError::BadLabel(label.to_string()));
        }
    }
    if labels.len() < 2 {
        return Err(DomainNameError::SingleLabel);
    }
    // An all-numeric last label is an IPv4-style literal in disguise (`1.2.3.4.`, `10.0`).
    if labels
        .last()
        .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(DomainNameError::IpLiteral);
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subdomains_and_return_path_records() {
        let cases = [
            ("bounce.acme.example", "acme.example", true),
            ("a.b.acme.example", "acme.example", true),
            ("acme.example", "acme.example", false),
            ("xacme.example", "acme.example", false),
            ("acme.example.evil", "acme.example", false),
            ("example", "acme.example", false),
        ];
        for (sub, parent, want) in cases {
            assert_eq!(is_subdomain_of(sub, parent), want, "{sub} of {parent}");
        }
        let records = return_path_dns_records("bounce.acme.example", "relay.example");
        let shown: Vec<(&str, &str, &str)> = records
            .iter()
            .map(|r| (r.record_type.as_str(), r.name.as_str(), r.value.as_str()))
            .collect();
        assert_eq!(
            shown,
            [
                ("MX", "bounce.acme.example", "10 relay.example"),
                ("TXT", "bounce.acme.example", "v=spf1 a:relay.example ~all"),
            ]
        );
    }

    #[test]
    fn normalisation_table() {
        let ok = [
            ("Example.COM", "example.com"),
            ("example.com.", "example.com"),
            (" mail.example.org ", "mail.example.org"),
            ("xn--bcher-kva.example", "xn--bcher-kva.example"),
            ("Bücher.Example", "xn--bcher-kva.example"),
            ("bücher.example.", "xn--bcher-kva.example"),
            ("ÄÖÜ.DE", "xn--4ca0bs.de"),
            ("例え.テスト", "xn--r8jz45g.xn--zckzah"),
        ];
        for (raw, want) in ok {
            assert_eq!(normalize_domain(raw).as_deref(), Ok(want), "{raw}");
        }
        let bad = [
            ("", DomainNameError::Empty),
            ("127.0.0.1", DomainNameError::IpLiteral),
            ("[127.0.0.1]", DomainNameError::IpLiteral),
            ("localhost", DomainNameError::SingleLabel),
            ("-bad.example", DomainNameError::BadLabel("-bad".into())),
            ("a..b", DomainNameError::BadLabel("".into())),
            ("10.0.0.1.", DomainNameError::IpLiteral),
            ("1.2", DomainNameError::IpLiteral),
            ("[::1]", DomainNameError::IpLiteral),
            ("::1", DomainNameError::IpLiteral),
            ("xn--zz--.example", DomainNameError::NotIdna),
            ("a b.example", DomainNameError::BadLabel("a b".into())),
            (
                "under_score.example",
                DomainNameError::BadLabel("under_score".into()),
            ),
        ];
        for (raw, want) in bad {
            assert_eq!(normalize_domain(raw), Err(want), "{raw}");
        }
    }
}
