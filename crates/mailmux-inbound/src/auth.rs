//! Authentication verdicts on inbound mail (mail-auth): SPF when MAIL FROM arrives, DKIM, ARC
//! and DMARC when the message is complete, and the `Authentication-Results:` header (RFC 8601)
//! naming this relay that goes on top of the stored message. A DNS temporary failure is never
//! taken for a pass: it is a value ([`Verdicts::temp_error`]) the session answers with 451.
//!
//! The verifier is built once (one resolver for every MX session); hickory's resolver keeps
//! the DNS answers it got for their TTL, so a sender's records are looked up once, not once per
//! message.

use std::net::{IpAddr, SocketAddr};

use mail_auth::dmarc::Policy;
use mail_auth::spf::verify::SpfParameters;
use mail_auth::{
    AuthenticatedMessage, AuthenticationResults, DkimResult, DmarcResult, MessageAuthenticator,
    SpfOutput, SpfResult,
};
use mailmux_core::reply::Reply;
use mailmux_policy::{Refusal, RejectReason};

/// SPF's verdict on a transaction's MAIL FROM, kept until the message is complete.
#[derive(Debug, Clone)]
pub struct SpfVerdict {
    output: SpfOutput,
    helo: String,
    mail_from: String,
}

impl SpfVerdict {
    /// `451 4.7.24` when SPF could not be evaluated because DNS failed for now.
    pub fn refusal(&self) -> Option<Refusal> {
        (self.output.result() == SpfResult::TempError).then(|| {
            temp_failure(
                "4.7.24",
                "SPF could not be checked (DNS temporary failure), try again later",
            )
        })
    }
}

fn temp_failure(status: &'static str, text: &str) -> Refusal {
    Refusal::new(
        RejectReason::Storage,
        Reply::new(451, status, text.to_string()),
    )
}

/// What the end-of-DATA checks found.
#[derive(Debug, Clone)]
pub struct Verdicts {
    /// `Authentication-Results: …\r\n`, ready to prepend.
    pub header: String,
    /// Set when a check could not be made for now: answer it, keep nothing.
    pub temp_error: Option<Refusal>,
    /// DMARC failed and the sender domain's policy is `p=reject`.
    pub dmarc_reject: Option<String>,
}

/// The verifier, built once at start-up.
pub struct Verifier {
    authenticator: MessageAuthenticator,
    hostname: String,
}

impl Verifier {
    /// A verifier on `dns_servers` (the system resolver when empty), naming `hostname` in its
    /// headers.
    pub fn new(
        dns_servers: &[SocketAddr],
        hostname: &str,
    ) -> Result<Verifier, hickory_resolver::net::NetError> {
        let resolver = mailmux_core::dns::resolver_builder(dns_servers)?.build()?;
        Ok(Verifier {
            authenticator: MessageAuthenticator(resolver),
            hostname: hostname.to_string(),
        })
    }

    /// SPF for the MAIL FROM identity (the HELO name's for the null sender).
    pub async fn spf(&self, ip: IpAddr, helo: &str, mail_from: &str) -> SpfVerdict {
        let output = if mail_from.is_empty() {
            self.authenticator
                .verify_spf(SpfParameters::verify_ehlo(ip, helo, &self.hostname))
                .await
        } else {
            self.authenticator
                .verify_spf(SpfParameters::verify_mail_from(
                    ip,
                    helo,
                    &self.hostname,
                    mail_from,
                ))
                .await
        };
        SpfVerdict {
            output,
            helo: helo.to_string(),
            mail_from: mail_from.to_string(),
        }
    }

    /// DKIM, ARC and DMARC on the complete `message` (as received, before our headers).
    pub async fn verify(&self, ip: IpAddr, spf: &SpfVerdict, message: &[u8]) -> Verdicts {
        let mut results = AuthenticationResults::new(&self.hostname);
        let Some(parsed) = AuthenticatedMessage::parse(message) else {
            // Not parseable as a message at all: nothing to verify, say so in the header.
            results = results.with_spf_mailfrom_result(&spf.output, ip, &spf.mail_from, &spf.helo);
            return Verdicts {
                header: header(&results),
                temp_error: None,
                dmarc_reject: None,
            };
        };
        let dkim = self.authenticator.verify_dkim(&parsed).await;
        let arc = self.authenticator.verify_arc(&parsed).await;
        let mail_from_domain = spf
            .mail_from
            .rsplit_once('@')
            .map_or(spf.helo.as_str(), |(_, d)| d);
        let dmarc = self
            .authenticator
            .verify_dmarc(mail_auth::dmarc::verify::DmarcParameters::new(
                &parsed,
                &dkim,
                mail_from_domain,
                &spf.output,
            ))
            .await;
        let header_from = parsed.from();
        results = results
            .with_dkim_results(&dkim, header_from)
            .with_spf_mailfrom_result(&spf.output, ip, &spf.mail_from, &spf.helo)
            .with_arc_result(&arc, ip);
        let dkim_temp = dkim
            .iter()
            .any(|d| matches!(d.result(), DkimResult::TempError(_)));
        let dmarc_temp = matches!(dmarc.spf_result(), DmarcResult::TempError(_))
            || matches!(dmarc.dkim_result(), DmarcResult::TempError(_));
        let temp_error = if dkim_temp {
            Some(temp_failure(
                "4.7.5",
                "DKIM could not be checked (DNS temporary failure), try again later",
            ))
        } else if dmarc_temp {
            Some(temp_failure(
                "4.7.1",
                "DMARC could not be checked (DNS temporary failure), try again later",
            ))
        } else {
            None
        };
        let passed =
            *dmarc.spf_result() == DmarcResult::Pass || *dmarc.dkim_result() == DmarcResult::Pass;
        let permanent = matches!(dmarc.spf_result(), DmarcResult::PermError(_))
            || matches!(dmarc.dkim_result(), DmarcResult::PermError(_));
        // A record was found and nothing aligned passed: DMARC fails (RFC 7489 §4.2), also
        // when neither identifier produced a result of its own (SPF failed, no signature),
        // which mail-auth's own header clause would call "none".
        let failed = !passed && dmarc.dmarc_record().is_some();
        let verdict = if passed {
            "pass"
        } else if dmarc_temp {
            "temperror"
        } else if permanent {
            "permerror"
        } else if failed {
            "fail"
        } else {
            "none"
        };
        let dmarc_reject =
            (failed && dmarc.policy() == Policy::Reject).then(|| dmarc.domain().to_string());
        let policy = match dmarc.policy() {
            Policy::Reject => "reject",
            Policy::Quarantine => "quarantine",
            Policy::None | Policy::Unspecified => "none",
        };
        let mut header = header(&results);
        if !dmarc.domain().is_empty() {
            // The DMARC clause is ours (see `failed`); the domain is a name mail-auth found in
            // DNS, so it needs no quoting.
            header.truncate(header.len() - 2);
            header.push_str(&format!(
                ";\r\n\tdmarc={verdict} header.from={} policy.dmarc={policy}\r\n",
                dmarc.domain()
            ));
        }
        Verdicts {
            header,
            temp_error,
            dmarc_reject,
        }
    }
}

fn header(results: &AuthenticationResults<'_>) -> String {
    format!("Authentication-Results: {results}\r\n")
}

/// The refusal of a message failing DMARC under `p=reject` on a domain that enforces it.
pub fn dmarc_refusal(domain: &str) -> Refusal {
    Refusal::new(
        RejectReason::Content,
        Reply::new(
            550,
            "5.7.1",
            format!("Rejected by the DMARC policy (p=reject) of {domain}"),
        ),
    )
}
