//! The rules that judge what DNS answered ([`Answer`], what the resolver found) for each kind of
//! record a tenant publishes: pure functions, table-tested below.

/// What a lookup found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The records at the name: for TXT each with its character-strings joined, for MX each
    /// exchange's name (lower case, without the trailing dot).
    Records(Vec<String>),
    /// NXDOMAIN, or the name has no record of the type asked.
    None,
    /// The lookup itself failed (timeout, SERVFAIL, REFUSED…): no verdict about the record.
    Failed(String),
}

/// Status of one expected record after a check.
pub const VERIFIED: &str = "verified";
pub const MISSING: &str = "missing";
pub const MISMATCH: &str = "mismatch";
pub const LOOKUP_ERROR: &str = "error";
/// Never checked yet.
pub const PENDING: &str = "pending";

/// Which record a status belongs to; also the rule that judges it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    /// `_mailmux.<domain>` TXT = `mailmux-verification=<token>`: proves control.
    Verification,
    /// `<selector>._domainkey.<domain>` TXT with our public key.
    Dkim,
    /// `v=spf1 …` at the domain, authorising this relay.
    Spf,
    /// `v=DMARC1 …` at `_dmarc.<domain>`.
    Dmarc,
    /// An MX naming this relay (a return-path domain's: its bounces must reach us).
    Mx,
}

impl RecordKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RecordKind::Verification => "verification",
            RecordKind::Dkim => "dkim",
            RecordKind::Spf => "spf",
            RecordKind::Dmarc => "dmarc",
            RecordKind::Mx => "mx",
        }
    }

    /// The DNS record type the record is published as.
    pub fn record_type(self) -> &'static str {
        match self {
            RecordKind::Mx => "MX",
            _ => "TXT",
        }
    }

    /// The records that must be found before the domain may send: proof of control, and the
    /// DKIM key (mail signed with a key nobody can fetch fails DKIM everywhere). SPF and DMARC
    /// are advice: a tenant may well run its own.
    pub fn required(self) -> bool {
        matches!(self, RecordKind::Verification | RecordKind::Dkim)
    }

    /// Judges a lookup's answer against the `expected` record value.
    pub fn judge(self, expected: &str, answer: &Answer) -> &'static str {
        let records = match answer {
            Answer::Failed(_) => return LOOKUP_ERROR,
            Answer::None => return MISSING,
            Answer::Records(records) => records,
        };
        let found = match self {
            RecordKind::Verification => {
                let relevant: Vec<&String> = records
                    .iter()
                    .filter(|r| r.trim_start().starts_with("mailmux-verification="))
                    .collect();
                if relevant.is_empty() {
                    return MISSING;
                }
                relevant.iter().any(|r| r.trim() == expected)
            }
            RecordKind::Dkim => {
                let want = dkim_tags(expected);
                let want_key = want.p.unwrap_or_default();
                records.iter().any(|r| {
                    let tags = dkim_tags(r);
                    tags.p.is_some_and(|p| p == want_key) && tags.k == want.k
                })
            }
            RecordKind::Spf => {
                let spf: Vec<&String> = records.iter().filter(|r| is_spf(r)).collect();
                match spf.as_slice() {
                    [] => return MISSING,
                    // RFC 7208 §4.5: more than one SPF record is a permanent error.
                    [one] => {
                        let mechanism = expected
                            .split_whitespace()
                            .find(|t| t.starts_with("a:") || t.starts_with("include:"))
                            .unwrap_or_default();
                        one.split_whitespace().any(|term| {
                            let term = term.trim_start_matches(['+', '?', '~']);
                            term.eq_ignore_ascii_case(mechanism)
                        })
                    }
                    _ => false,
                }
            }
            RecordKind::Dmarc => {
                let dmarc: Vec<&String> = records
                    .iter()
                    .filter(|r| r.trim_start().to_ascii_lowercase().starts_with("v=dmarc1"))
                    .collect();
                if dmarc.is_empty() {
                    return MISSING;
                }
                // RFC 7489 §6.6.3: exactly one record, whatever its policy.
                dmarc.len() == 1
            }
            RecordKind::Mx => {
                // `expected` is the record as published: `<preference> <exchange>`. Any
                // preference will do, and other exchanges may sit beside ours.
                let exchange = expected.split_whitespace().last().unwrap_or_default();
                let exchange = exchange.trim_end_matches('.');
                records.iter().any(|r| r.eq_ignore_ascii_case(exchange))
            }
        };
        if found { VERIFIED } else { MISMATCH }
    }
}

fn is_spf(record: &str) -> bool {
    let lower = record.trim_start().to_ascii_lowercase();
    lower == "v=spf1" || lower.starts_with("v=spf1 ")
}

struct DkimTags {
    k: String,
    p: Option<String>,
}

/// The `k=` (default `rsa`) and `p=` (whitespace removed, RFC 6376 §3.6.1) tags of a DKIM
/// key record.
fn dkim_tags(record: &str) -> DkimTags {
    let mut tags = DkimTags {
        k: "rsa".into(),
        p: None,
    };
    for tag in record.split(';') {
        let Some((name, value)) = tag.split_once('=') else {
            continue;
        };
        let value: String = value.chars().filter(|c| !c.is_whitespace()).collect();
        match name.trim() {
            "k" => tags.k = value.to_ascii_lowercase(),
            "p" => tags.p = Some(value),
            _ => {}
        }
    }
    tags
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(list: &[&str]) -> Answer {
        Answer::Records(list.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn judging_answers() {
        use RecordKind::*;
        let token = "mailmux-verification=abc";
        let dkim = "v=DKIM1; k=rsa; p=MIIBIjAN";
        let spf = "v=spf1 a:relay.example ~all";
        let dmarc = "v=DMARC1; p=none";
        let table: &[(RecordKind, &str, Answer, &str)] = &[
            (Verification, token, records(&[token]), VERIFIED),
            (Verification, token, records(&["other", token]), VERIFIED),
            (
                Verification,
                token,
                records(&["mailmux-verification=zzz"]),
                MISMATCH,
            ),
            (Verification, token, records(&["something else"]), MISSING),
            (Verification, token, Answer::None, MISSING),
            (
                Verification,
                token,
                Answer::Failed("timeout".into()),
                LOOKUP_ERROR,
            ),
            (
                Dkim,
                dkim,
                records(&["v=DKIM1; k=rsa; p=MIIB IjAN"]),
                VERIFIED,
            ),
            (Dkim, dkim, records(&["v=DKIM1; p=MIIBIjAN"]), VERIFIED),
            (
                Dkim,
                dkim,
                records(&["v=DKIM1; k=ed25519; p=MIIBIjAN"]),
                MISMATCH,
            ),
            (Dkim, dkim, records(&["v=DKIM1; k=rsa; p=OTHER"]), MISMATCH),
            (Dkim, dkim, records(&["v=DKIM1; k=rsa; p="]), MISMATCH),
            (Dkim, dkim, Answer::None, MISSING),
            (
                Spf,
                spf,
                records(&["v=spf1 ip4:1.2.3.4 a:relay.example -all"]),
                VERIFIED,
            ),
            (
                Spf,
                spf,
                records(&["V=SPF1 +a:RELAY.example ~all"]),
                VERIFIED,
            ),
            (Spf, spf, records(&["v=spf1 -all"]), MISMATCH),
            (
                Spf,
                spf,
                records(&[spf, "v=spf1 a:relay.example -all"]),
                MISMATCH,
            ),
            (Spf, spf, records(&["google-site-verification=x"]), MISSING),
            (Dmarc, dmarc, records(&["v=DMARC1; p=reject"]), VERIFIED),
            (
                Dmarc,
                dmarc,
                records(&["v=DMARC1; p=none", "v=DMARC1; p=reject"]),
                MISMATCH,
            ),
            (Dmarc, dmarc, records(&["nope"]), MISSING),
            (
                Mx,
                "10 relay.example",
                records(&["relay.example"]),
                VERIFIED,
            ),
            (
                Mx,
                "10 relay.example",
                records(&["backup.example", "RELAY.example"]),
                VERIFIED,
            ),
            (
                Mx,
                "10 relay.example",
                records(&["other.example"]),
                MISMATCH,
            ),
            (Mx, "10 relay.example", Answer::None, MISSING),
        ];
        for (kind, expected, answer, want) in table {
            assert_eq!(kind.judge(expected, answer), *want, "{kind:?} {answer:?}");
        }
        assert!(Verification.required() && Dkim.required());
        assert!(!Spf.required() && !Dmarc.required());
    }
}
