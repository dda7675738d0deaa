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

/// The records to publish for a sending domain: the verification TXT, SPF and DMARC.
/// `relay_hostname` is this relay's public name (SPF authorises its addresses).
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
    vec![
        record(
            "TXT",
            verification_record_name(&domain.name),
            format!("mailmux-verification={}", domain.verification_token),
        ),
        record(
            "TXT",
            domain.name.clone(),
            format!("v=spf1 a:{relay_hostname} ~all"),
        ),
        record(
            "TXT",
            format!("_dmarc.{}", domain.name),
            "v=DMARC1; p=none".to_string(),
        ),
    ]
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
}

/// Lowercases, strips one trailing dot and checks the name is a hostname-style domain
/// (letters, digits, hyphens; 1-63 characters per label). Non-ASCII names must already be in
/// A-label form (`xn--…`).
pub fn normalize_domain(raw: &str) -> Result<String, DomainNameError> {
    let name = raw.trim().trim_end_matches('.').to_ascii_lowercase();
    if name.is_empty() {
        return Err(DomainNameError::Empty);
    }
    if name.starts_with('[') || name.parse::<std::net::IpAddr>().is_ok() {
        return Err(DomainNameError::IpLiteral);
    }
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
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation_table() {
        let ok = [
            ("Example.COM", "example.com"),
            ("example.com.", "example.com"),
            (" mail.example.org ", "mail.example.org"),
            ("xn--bcher-kva.example", "xn--bcher-kva.example"),
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
