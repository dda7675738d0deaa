//! The envelope of a message (RFC 5321 MAIL/RCPT) and the queue identifier it is known by.

use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};

use rand::RngExt;
use serde::{Deserialize, Serialize};

/// Identifier of a queued message: 20 lowercase hex characters that sort by creation time
/// (11 of milliseconds, 5 of a per-process random node tag, 4 of a counter).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct QueueId(pub String);

impl fmt::Display for QueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Makes queue ids. One per process, passed in the server context; the random node tag keeps
/// ids from several nodes on one Postgres apart.
#[derive(Debug)]
pub struct QueueIdGenerator {
    node: u32,
    counter: AtomicU32,
}

impl Default for QueueIdGenerator {
    fn default() -> Self {
        QueueIdGenerator {
            node: rand::rng().random::<u32>() & 0xf_ffff,
            counter: AtomicU32::new(0),
        }
    }
}

impl QueueIdGenerator {
    pub fn next(&self, now_ms: i64) -> QueueId {
        let count = self.counter.fetch_add(1, Ordering::Relaxed) & 0xffff;
        QueueId(format!(
            "{:011x}{:05x}{:04x}",
            now_ms.max(0) as u64 & 0xfff_ffff_ffff,
            self.node,
            count
        ))
    }
}

/// What the client declared about the body (MAIL FROM parameters).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BodyFlags {
    /// BODY=8BITMIME, or 8-bit bytes seen in the content.
    pub eight_bit: bool,
    /// SMTPUTF8: UTF-8 in addresses or headers.
    pub smtputf8: bool,
}

/// Sender and recipients of one message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// Reverse path; empty for the null sender `<>` (bounces never go to it).
    pub mail_from: String,
    pub rcpt_to: Vec<String>,
    pub flags: BodyFlags,
}

impl Envelope {
    pub fn is_null_sender(&self) -> bool {
        self.mail_from.is_empty()
    }
}

/// The domain part of an address, lowercased (`""` when there is none).
pub fn address_domain(address: &str) -> String {
    address
        .rsplit_once('@')
        .map(|(_, domain)| domain.trim_end_matches('.').to_ascii_lowercase())
        .unwrap_or_default()
}

/// Current time in Unix milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_ids_sort_by_time_and_are_unique() {
        let ids = QueueIdGenerator::default();
        let a = ids.next(1_700_000_000_000);
        let b = ids.next(1_700_000_000_000);
        let c = ids.next(1_700_000_000_001);
        assert_eq!(a.0.len(), 20);
        assert_ne!(a, b);
        assert!(a < c && b < c);
    }

    #[test]
    fn address_domain_is_lowercased() {
        assert_eq!(address_domain("Bob@Example.COM"), "example.com");
        assert_eq!(address_domain("bob@example.com."), "example.com");
        assert_eq!(address_domain("postmaster"), "");
    }
}
