//! The DNS-record pipeline, one for every record a tenant publishes: what each record should
//! be ([`ExpectedRecord`]), looking them all up at once and judging each answer by its kind
//! ([`check`]), and storing the verdicts. `sending.rs` does this for a sending domain
//! (verification, DKIM keys through a rotation, SPF, DMARC), `return_path.rs` for a custom
//! MAIL FROM domain (MX, SPF). The resources (`domains.rs`, `return_path.rs`,
//! `dkim_rotation.rs`) and the background jobs (`jobs.rs`) call into it; it calls none of them.

use std::collections::BTreeMap;

pub mod resolver;
pub mod return_path;
pub mod rules;
pub mod sending;

pub use resolver::DnsChecker;
pub use rules::{Answer, LOOKUP_ERROR, MISMATCH, MISSING, PENDING, RecordKind, VERIFIED};

/// One record to publish, and the key its verdict is kept under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedRecord {
    pub kind: RecordKind,
    pub name: String,
    pub value: String,
    /// The kind's name, or `dkim:<selector>` for a rotation's pending key (a domain may
    /// publish two DKIM records at once).
    pub status_key: String,
}

impl ExpectedRecord {
    pub fn new(kind: RecordKind, name: String, value: String) -> ExpectedRecord {
        ExpectedRecord {
            status_key: kind.as_str().to_string(),
            kind,
            name,
            value,
        }
    }
}

/// Looks every record up (all at once: a check costs one round trip, or one timeout, not one
/// per record) and judges each answer: the status per status key.
pub async fn check(checker: &DnsChecker, records: &[ExpectedRecord]) -> BTreeMap<String, String> {
    let answers = futures::future::join_all(
        records
            .iter()
            .map(|record| checker.lookup_kind(record.kind, &record.name)),
    )
    .await;
    let mut statuses = BTreeMap::new();
    for (record, answer) in records.iter().zip(answers) {
        if let Answer::Failed(why) = &answer {
            tracing::info!(name = %record.name, %why, "DNS lookup failed during a record check");
        }
        statuses.insert(
            record.status_key.clone(),
            record.kind.judge(&record.value, &answer).to_string(),
        );
    }
    statuses
}
