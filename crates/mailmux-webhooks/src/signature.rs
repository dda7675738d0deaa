//! Standard Webhooks signing (standardwebhooks.com): a secret is `whsec_` + base64 of 32 random
//! bytes; a request is signed with HMAC-SHA256, keyed with the secret's *decoded* bytes, over
//! `"{webhook-id}.{webhook-timestamp}.{body}"`, and sent as `webhook-signature: v1,<base64>`.
//! While a rotated-out secret is still in its overlap period, both signatures are sent,
//! space-separated, and a receiver holding either secret verifies the request.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

use crate::{Result, WebhookError};

/// What every secret starts with.
pub const SECRET_PREFIX: &str = "whsec_";
/// Random bytes in a secret we make (the spec asks for 24 to 64).
const SECRET_BYTES: usize = 32;

/// A signing secret, decoded. Never printed: its `Debug` is redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Secret {
    /// 32 bytes from the system's CSPRNG.
    pub fn generate() -> Result<Secret> {
        let mut bytes = vec![0u8; SECRET_BYTES];
        SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| WebhookError::Random)?;
        Ok(Secret(bytes))
    }

    /// `whsec_<base64>` (or the bare base64) as a receiver is given it.
    pub fn parse(text: &str) -> Option<Secret> {
        let encoded = text.strip_prefix(SECRET_PREFIX).unwrap_or(text);
        STANDARD
            .decode(encoded)
            .ok()
            .filter(|b| !b.is_empty())
            .map(Secret)
    }

    /// From the bytes a sealed row opens to.
    pub fn from_bytes(bytes: Vec<u8>) -> Secret {
        Secret(bytes)
    }

    /// The bytes to seal for storage.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// `whsec_<base64>`: what the tenant is shown, once.
    pub fn to_text(&self) -> String {
        format!("{SECRET_PREFIX}{}", STANDARD.encode(&self.0))
    }

    /// `v1,<base64 HMAC-SHA256>` of `id.timestamp.body`.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let key = hmac::Key::new(hmac::HMAC_SHA256, &self.0);
        let mut context = hmac::Context::with_key(&key);
        context.update(id.as_bytes());
        context.update(b".");
        context.update(timestamp.to_string().as_bytes());
        context.update(b".");
        context.update(body);
        format!("v1,{}", STANDARD.encode(context.sign().as_ref()))
    }
}

/// The `webhook-signature` header value: one `v1,…` per secret in force, space-separated
/// (the current secret first).
pub fn signature_header(secrets: &[Secret], id: &str, timestamp: i64, body: &[u8]) -> String {
    secrets
        .iter()
        .map(|secret| secret.sign(id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference vector the Standard Webhooks libraries test against.
    const VECTOR_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const VECTOR_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const VECTOR_TIMESTAMP: i64 = 1_614_265_330;
    const VECTOR_BODY: &str = r#"{"test": 2432232314}"#;
    const VECTOR_SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    #[test]
    fn signs_the_standard_webhooks_reference_vector() {
        let secret = Secret::parse(VECTOR_SECRET).unwrap();
        let signed = secret.sign(VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY.as_bytes());
        assert_eq!(signed, VECTOR_SIGNATURE);
        // The bare base64 is the same secret.
        let bare = Secret::parse(&VECTOR_SECRET[SECRET_PREFIX.len()..]).unwrap();
        assert_eq!(bare, secret);
        // Any change to id, time or body changes the signature.
        assert_ne!(
            secret.sign("msg_other", VECTOR_TIMESTAMP, VECTOR_BODY.as_bytes()),
            VECTOR_SIGNATURE
        );
        assert_ne!(
            secret.sign(VECTOR_ID, VECTOR_TIMESTAMP + 1, VECTOR_BODY.as_bytes()),
            VECTOR_SIGNATURE
        );
        assert_ne!(
            secret.sign(VECTOR_ID, VECTOR_TIMESTAMP, b"{\"test\": 2432232315}"),
            VECTOR_SIGNATURE
        );
    }

    #[test]
    fn generated_secrets_are_32_random_bytes_shown_as_whsec() {
        let a = Secret::generate().unwrap();
        let b = Secret::generate().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.as_bytes().len(), 32);
        let text = a.to_text();
        assert!(text.starts_with("whsec_"), "{text}");
        assert_eq!(Secret::parse(&text).unwrap(), a);
        assert_eq!(format!("{a:?}"), "Secret(..)");
        assert!(Secret::parse("whsec_!!!").is_none());
        assert!(Secret::parse("whsec_").is_none());
    }

    #[test]
    fn an_overlap_sends_both_signatures_current_first() {
        let new = Secret::parse(VECTOR_SECRET).unwrap();
        let old = Secret::generate().unwrap();
        let header = signature_header(
            &[new.clone(), old.clone()],
            VECTOR_ID,
            VECTOR_TIMESTAMP,
            VECTOR_BODY.as_bytes(),
        );
        let parts: Vec<&str> = header.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0], VECTOR_SIGNATURE);
        assert_eq!(
            parts[1],
            old.sign(VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY.as_bytes())
        );
    }
}
