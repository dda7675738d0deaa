//! SMTP credentials and other bearer secrets: generated at random, shown once, stored only as a
//! SHA-256 hash. The secrets carry 256 bits of entropy, so a fast hash is enough (a slow KDF
//! protects guessable passwords; these are not guessable) and AUTH stays cheap.

use rand::RngExt;
use sha2::{Digest, Sha256};

use crate::tenant::TenantId;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    pub id: String,
    pub tenant_id: TenantId,
    pub username: String,
    /// Hex SHA-256 of the password.
    pub secret_hash: String,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
    /// This credential's own sending rate (messages per second / per minute), on top of its
    /// tenant's; `None` means only the tenant's applies.
    pub rate_per_second: Option<u64>,
    pub rate_per_minute: Option<u64>,
}

/// `prefix` + `hex_chars` random lowercase hex characters, for ids and usernames.
pub fn random_id(prefix: &str, hex_chars: usize) -> String {
    let mut bytes = vec![0u8; hex_chars.div_ceil(2)];
    rand::rng().fill(&mut bytes[..]);
    let mut id = hex::encode(bytes);
    id.truncate(hex_chars);
    format!("{prefix}{id}")
}

/// A new random secret: 32 random bytes as 64 hex characters. Hex rather than base64 so a
/// secret never starts with `-` (which command-line tools such as swaks take for an option)
/// and survives any shell or URL unquoted.
pub fn generate_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill(&mut bytes[..]);
    hex::encode(bytes)
}

/// The stored form of a secret.
pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Compares a presented secret with a stored hash in constant time (over the hash length).
pub fn verify_secret(secret: &str, stored_hash: &str) -> bool {
    let presented = hash_secret(secret);
    let (a, b) = (presented.as_bytes(), stored_hash.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_random_and_verify_only_themselves() {
        let a = generate_secret();
        let b = generate_secret();
        assert_ne!(a, b);
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
        let hash = hash_secret(&a);
        assert!(verify_secret(&a, &hash));
        assert!(!verify_secret(&b, &hash));
        assert!(!verify_secret(&a, "short"));
        assert!(random_id("t_", 16).starts_with("t_"));
        assert_eq!(random_id("t_", 16).len(), 18);
    }
}
