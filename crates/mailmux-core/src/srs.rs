//! The Sender Rewriting Scheme (SRS, Shevek's scheme as libsrs2 and postsrsd implement it):
//! how a forwarded message keeps passing SPF at the next hop and how its bounces find their way
//! back. Sans-I/O: the secret and the day are handed in, so both the MX side (forwarding, and
//! relaying bounces that come back) and delivery (bouncing forwarded mail itself) compute the
//! same addresses, and tests pick the day.
//!
//! ```text
//! forward  alice@example.org            → SRS0=HHHH=TT=example.org=alice@srs.domain
//! reverse  SRS0=HHHH=TT=example.org=alice@srs.domain → alice@example.org
//! again    SRS0=HHHH=TT=example.org=alice@hop1.test  → SRS1=GGGG=hop1.test==HHHH=TT=example.org=alice@srs.domain
//! reverse  SRS1=GGGG=hop1.test==HHHH=…@srs.domain    → SRS0=HHHH=…@hop1.test (hop1 reverses the rest)
//! ```
//!
//! `TT` is the day (days since the Unix epoch, modulo 1024) as two base32 characters; `HHHH`
//! the first four characters of the base64 HMAC-SHA1, under the secret, of the lowercased
//! fields that follow it. A hash is compared without regard to case (some MTAs lowercase
//! addresses on the way back), a timestamp is good for [`MAX_AGE_DAYS`]: a forged or an expired
//! address is refused, so an SRS address cannot be used to relay mail anywhere else.

use base64::Engine as _;
use ring::hmac;

/// Days an SRS address stays valid for bounces (libsrs2's default is 21 as well); a bounce
/// usually arrives within the sender's retry period of five days.
pub const MAX_AGE_DAYS: u64 = 21;

/// Characters of the base64 hash kept in an address.
const HASH_LEN: usize = 4;

/// Timestamps count days modulo this (two base32 characters).
const TIME_SLOTS: u64 = 1024;

const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// Why an address did not reverse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SrsError {
    #[error("not an SRS address")]
    NotSrs,
    #[error("malformed SRS address")]
    Malformed,
    #[error("SRS hash does not match (forged or from another relay)")]
    BadHash,
    #[error("SRS address has expired")]
    Expired,
}

/// Days since the Unix epoch for a time in Unix milliseconds: the clock SRS runs on.
pub fn day(now_ms: i64) -> u64 {
    now_ms.div_euclid(86_400_000).max(0) as u64
}

/// Whether `local` (a local part) looks like SRS: `SRS0=`/`SRS1=` (or `+`/`-` after the tag),
/// in any case. Such local parts are judged as SRS, never matched against receipt rules.
pub fn is_srs_local(local: &str) -> bool {
    let bytes = local.as_bytes();
    bytes.len() > 5
        && bytes[..3].eq_ignore_ascii_case(b"SRS")
        && matches!(bytes[3], b'0' | b'1')
        && matches!(bytes[4], b'=' | b'+' | b'-')
}

/// The SRS signer and verifier under one secret.
#[derive(Clone)]
pub struct Srs {
    key: hmac::Key,
}

impl std::fmt::Debug for Srs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Srs(..)")
    }
}

impl Srs {
    pub fn new(secret: &[u8]) -> Srs {
        Srs {
            key: hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret),
        }
    }

    fn hash(&self, fields: &[&str]) -> String {
        let mut context = hmac::Context::with_key(&self.key);
        for field in fields {
            context.update(field.to_ascii_lowercase().as_bytes());
        }
        let tag = context.sign();
        let mut encoded = base64::engine::general_purpose::STANDARD.encode(tag.as_ref());
        encoded.truncate(HASH_LEN);
        encoded
    }

    fn hash_matches(&self, given: &str, fields: &[&str]) -> bool {
        // Compared without regard to case (see the module doc); four characters are not a
        // secret worth a constant-time comparison: a forger learns nothing from the timing of
        // a refusal he gets either way.
        given.len() == HASH_LEN && given.eq_ignore_ascii_case(&self.hash(fields))
    }

    /// `sender` rewritten to an address of `srs_domain` on day `today` (see [`day`]): SRS0 for
    /// a plain address, SRS1 for one that is already SRS (re-forwarded mail keeps the first
    /// forwarder's address, so bounces walk back one hop at a time, never through every hop).
    /// The null sender stays null: there is nothing to bounce to.
    pub fn forward(&self, sender: &str, srs_domain: &str, today: u64) -> String {
        let Some((local, domain)) = sender.rsplit_once('@') else {
            return sender.to_string();
        };
        if is_srs_local(local) {
            let tail = &local[4..];
            let (hop, rest) = if local.as_bytes()[3] == b'0' {
                // SRS0=HHHH=TT=orig=local@hop → SRS1=GGGG=hop==HHHH=TT=orig=local
                (domain, tail)
            } else {
                // SRS1=GGGG=hop==… from the previous forwarder: keep its first hop and rest.
                match split_srs1(tail) {
                    Some((_, hop, rest)) => (hop, rest),
                    None => return self.srs0(local, domain, srs_domain, today),
                }
            };
            let hash = self.hash(&[hop, rest]);
            return format!("SRS1={hash}={hop}={rest}@{srs_domain}");
        }
        self.srs0(local, domain, srs_domain, today)
    }

    fn srs0(&self, local: &str, domain: &str, srs_domain: &str, today: u64) -> String {
        let stamp = timestamp(today);
        let hash = self.hash(&[&stamp, domain, local]);
        format!("SRS0={hash}={stamp}={domain}={local}@{srs_domain}")
    }

    /// The address an SRS `address` (of one of our SRS domains) stands for, on day `today`:
    /// the original sender for SRS0, the first forwarder's SRS0 address for SRS1.
    pub fn reverse(&self, address: &str, today: u64) -> Result<String, SrsError> {
        let Some((local, _)) = address.rsplit_once('@') else {
            return Err(SrsError::NotSrs);
        };
        if !is_srs_local(local) {
            return Err(SrsError::NotSrs);
        }
        let tail = &local[5..];
        if local.as_bytes()[3] == b'1' {
            let (hash, hop, rest) = split_srs1(&local[4..]).ok_or(SrsError::Malformed)?;
            if hop.is_empty() || rest.len() < 2 {
                return Err(SrsError::Malformed);
            }
            if !self.hash_matches(hash, &[hop, rest]) {
                return Err(SrsError::BadHash);
            }
            return Ok(format!("SRS0{rest}@{hop}"));
        }
        let mut fields = tail.splitn(4, '=');
        let (Some(hash), Some(stamp), Some(domain), Some(orig_local)) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            return Err(SrsError::Malformed);
        };
        if domain.is_empty() || orig_local.is_empty() {
            return Err(SrsError::Malformed);
        }
        let then = parse_timestamp(stamp).ok_or(SrsError::Malformed)?;
        if !self.hash_matches(hash, &[stamp, domain, orig_local]) {
            return Err(SrsError::BadHash);
        }
        let age = (today % TIME_SLOTS + TIME_SLOTS - then) % TIME_SLOTS;
        if age > MAX_AGE_DAYS {
            return Err(SrsError::Expired);
        }
        Ok(format!("{orig_local}@{domain}"))
    }
}

/// `=GGGG=hop==rest…` (what follows `SRS1`) → (hash, hop, `=rest…`), the separator after the
/// hop kept with the rest, as it was after `SRS0`.
fn split_srs1(tail: &str) -> Option<(&str, &str, &str)> {
    let tail = tail.get(1..)?;
    let (hash, after) = tail.split_once('=')?;
    let (hop, rest) = after.split_once('=')?;
    (!rest.is_empty()).then_some((hash, hop, rest))
}

fn timestamp(today: u64) -> String {
    let slot = today % TIME_SLOTS;
    let chars = [BASE32[(slot >> 5) as usize], BASE32[(slot & 31) as usize]];
    String::from_utf8_lossy(&chars).into_owned()
}

fn parse_timestamp(stamp: &str) -> Option<u64> {
    let value = |c: u8| {
        BASE32
            .iter()
            .position(|b| *b == c.to_ascii_uppercase())
            .map(|p| p as u64)
    };
    match stamp.as_bytes() {
        [high, low] => Some(value(*high)? << 5 | value(*low)?),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: u64 = 20_000;

    fn srs() -> Srs {
        Srs::new(b"test secret")
    }

    #[test]
    fn srs0_round_trips_and_has_the_documented_shape() {
        let forwarded = srs().forward("Alice@Example.org", "fwd.test", DAY);
        let (local, domain) = forwarded.rsplit_once('@').unwrap();
        assert_eq!(domain, "fwd.test");
        let fields: Vec<&str> = local.splitn(5, '=').collect();
        assert_eq!(fields[0], "SRS0");
        assert_eq!(fields[1].len(), 4);
        assert_eq!(fields[2], timestamp(DAY));
        assert_eq!(&fields[3..], ["Example.org", "Alice"]);
        assert_eq!(srs().reverse(&forwarded, DAY).unwrap(), "Alice@Example.org");
        // A local part holding `=` and `+` survives.
        let odd = srs().forward("a=b+c@x.test", "fwd.test", DAY);
        assert_eq!(srs().reverse(&odd, DAY + 3).unwrap(), "a=b+c@x.test");
        // The null sender is not rewritten.
        assert_eq!(srs().forward("", "fwd.test", DAY), "");
    }

    #[test]
    fn timestamps_are_two_base32_characters_modulo_1024() {
        let table = [
            (0, "AA"),
            (1, "AB"),
            (31, "A7"),
            (32, "BA"),
            (1023, "77"),
            (1024, "AA"),
        ];
        for (day, want) in table {
            assert_eq!(timestamp(day), want, "{day}");
            assert_eq!(parse_timestamp(want), Some(day % 1024));
            assert_eq!(parse_timestamp(&want.to_lowercase()), Some(day % 1024));
        }
        assert_eq!(parse_timestamp("A1"), None);
        assert_eq!(parse_timestamp("AAA"), None);
        assert_eq!(day(86_400_000 * 3 + 5), 3);
    }

    #[test]
    fn the_hash_is_checked_without_regard_to_case() {
        let forwarded = srs().forward("alice@example.org", "fwd.test", DAY);
        for variant in [forwarded.to_lowercase(), forwarded.to_uppercase()] {
            assert_eq!(
                srs().reverse(&variant, DAY).unwrap().to_lowercase(),
                "alice@example.org",
                "{variant}"
            );
        }
    }

    #[test]
    fn expired_forged_and_foreign_addresses_are_refused() {
        let forwarded = srs().forward("alice@example.org", "fwd.test", DAY);
        assert!(srs().reverse(&forwarded, DAY + MAX_AGE_DAYS).is_ok());
        assert_eq!(
            srs().reverse(&forwarded, DAY + MAX_AGE_DAYS + 1),
            Err(SrsError::Expired)
        );
        // Across the 1024-day wrap of the timestamp.
        let late = srs().forward("alice@example.org", "fwd.test", 1023);
        assert!(srs().reverse(&late, 1024 + 5).is_ok());
        // Another secret, a changed field, a made-up hash.
        assert_eq!(
            Srs::new(b"other").reverse(&forwarded, DAY),
            Err(SrsError::BadHash)
        );
        let changed = forwarded.replace("=alice@", "=mallory@");
        assert_eq!(srs().reverse(&changed, DAY), Err(SrsError::BadHash));
        let stamp = timestamp(DAY);
        let forged = format!("SRS0=AAAA={stamp}=example.org=alice@fwd.test");
        assert_eq!(srs().reverse(&forged, DAY), Err(SrsError::BadHash));
        let cases = [
            ("alice@example.org", SrsError::NotSrs),
            ("SRS0=abcd@fwd.test", SrsError::Malformed),
            (
                "SRS0=abcd=ZZZ=example.org=alice@fwd.test",
                SrsError::Malformed,
            ),
            ("SRS0=abcd=AA==alice@fwd.test", SrsError::Malformed),
            ("SRS1=abcd=@fwd.test", SrsError::Malformed),
        ];
        for (address, want) in cases {
            assert_eq!(srs().reverse(address, DAY), Err(want), "{address}");
        }
    }

    #[test]
    fn srs0_forwarded_again_becomes_srs1_and_reverses_one_hop() {
        let hop1 = Srs::new(b"hop one");
        let first = hop1.forward("alice@example.org", "hop1.test", DAY);
        let second = srs().forward(&first, "fwd.test", DAY);
        let (local, domain) = second.rsplit_once('@').unwrap();
        assert_eq!(domain, "fwd.test");
        assert!(local.starts_with("SRS1="), "{second}");
        assert!(local.contains("=hop1.test==SRS0") || local.contains("=hop1.test=="));
        // Our reverse gives back hop1's SRS0 address; hop1 reverses that to the sender.
        let back = srs().reverse(&second, DAY).unwrap();
        assert_eq!(back, first);
        assert_eq!(hop1.reverse(&back, DAY).unwrap(), "alice@example.org");
        // A third forwarder keeps the first hop: still one step back to hop1.
        let third = Srs::new(b"three").forward(&second, "third.test", DAY);
        assert_eq!(Srs::new(b"three").reverse(&third, DAY).unwrap(), first);
        // A forged SRS1 hash is refused.
        let forged = second.replacen(&local[5..9], "AAAA", 1);
        assert_eq!(srs().reverse(&forged, DAY), Err(SrsError::BadHash));
    }

    #[test]
    fn srs_local_parts_are_recognised_in_any_case() {
        for local in ["SRS0=a", "srs0=a", "SRS1+a", "Srs0-a"] {
            assert!(is_srs_local(local), "{local}");
        }
        for local in ["SRS0", "SRS2=a", "srs", "alice", "SRS0x"] {
            assert!(!is_srs_local(local), "{local}");
        }
    }
}
