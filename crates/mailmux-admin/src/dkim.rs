//! DKIM key pairs for tenant domains: generated when a domain is added, the public half
//! published by the tenant as `<selector>._domainkey.<domain>`, the private half sealed in the
//! store for the signer (issue 4 signs with mail-auth, which reads PKCS#8 DER).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use mailmux_core::Config;
use mailmux_store::{DkimKey, DkimKeyStatus, MasterKey};

use crate::error::{AdminError, Result};

/// The signature algorithm of a domain's key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum KeyType {
    /// RSA-2048 with SHA-256: what every verifier understands (the default).
    #[default]
    Rsa,
    /// Ed25519-SHA256 (RFC 8463): small keys, but not every verifier checks it yet.
    Ed25519,
}

impl KeyType {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyType::Rsa => "rsa",
            KeyType::Ed25519 => "ed25519",
        }
    }

    /// The type of a stored key (`key_type` column); anything but `ed25519` is RSA.
    pub fn from_name(name: &str) -> KeyType {
        if name == "ed25519" {
            KeyType::Ed25519
        } else {
            KeyType::Rsa
        }
    }
}

/// A freshly generated key pair.
pub struct GeneratedKey {
    pub key_type: KeyType,
    /// Base64 of what the DKIM record's `p=` carries: the SubjectPublicKeyInfo DER for RSA, the
    /// raw 32-byte key for Ed25519 (RFC 8463 §4.2).
    pub public_key: String,
    /// PKCS#8 DER of the private key.
    pub private_pkcs8: Vec<u8>,
}

/// RSA key size: 2048 bits is the size RFC 8301 asks verifiers to accept and what fits in
/// common DNS providers' TXT fields.
const RSA_BITS: usize = 2048;

/// Generates a key pair. RSA takes a noticeable fraction of a second: call from a blocking
/// thread (see [`generate_blocking`]).
pub fn generate(key_type: KeyType) -> Result<GeneratedKey> {
    let failed = |what: &str| AdminError::Internal(format!("DKIM key generation failed: {what}"));
    match key_type {
        KeyType::Rsa => {
            let mut rng = rsa::rand_core::OsRng;
            let private =
                rsa::RsaPrivateKey::new(&mut rng, RSA_BITS).map_err(|e| failed(&e.to_string()))?;
            let public_der = private
                .to_public_key()
                .to_public_key_der()
                .map_err(|e| failed(&e.to_string()))?;
            let private_der = private.to_pkcs8_der().map_err(|e| failed(&e.to_string()))?;
            Ok(GeneratedKey {
                key_type,
                public_key: STANDARD.encode(public_der.as_bytes()),
                private_pkcs8: private_der.as_bytes().to_vec(),
            })
        }
        KeyType::Ed25519 => {
            use ring::signature::KeyPair;
            let rng = ring::rand::SystemRandom::new();
            let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng)
                .map_err(|_| failed("ed25519"))?;
            let pair = ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref())
                .map_err(|_| failed("ed25519"))?;
            Ok(GeneratedKey {
                key_type,
                public_key: STANDARD.encode(pair.public_key().as_ref()),
                private_pkcs8: pkcs8.as_ref().to_vec(),
            })
        }
    }
}

/// [`generate`] on tokio's blocking pool, so RSA's prime search does not stall the runtime.
pub async fn generate_blocking(key_type: KeyType) -> Result<GeneratedKey> {
    tokio::task::spawn_blocking(move || generate(key_type))
        .await
        .map_err(|e| AdminError::Internal(format!("DKIM key generation failed: {e}")))?
}

/// A new key for `domain` under `selector`, its private half sealed with the master key
/// (`<data_dir>/master.key`, made on first use) bound to the domain and selector, so a sealed
/// key copied to another row does not open. An `Active` key signs at once (a new domain's); a
/// rotation's key starts `Pending`.
pub async fn new_key(
    config: &Config,
    domain: &str,
    selector: &str,
    key_type: KeyType,
    status: DkimKeyStatus,
    now: i64,
) -> Result<DkimKey> {
    let generated = generate_blocking(key_type).await?;
    let master = MasterKey::load_or_create(&config.storage.data_dir.join("master.key"))?;
    let sealed = master.seal(
        &generated.private_pkcs8,
        &DkimKey::seal_context(domain, selector),
    )?;
    Ok(DkimKey {
        domain: domain.to_string(),
        selector: selector.to_string(),
        key_type: generated.key_type.as_str().to_string(),
        public_key: generated.public_key,
        private_key_sealed: sealed,
        created_at: now,
        status,
        activated_at: (status == DkimKeyStatus::Active).then_some(now),
        retire_at: None,
        updated_at: now,
    })
}

/// The TXT value to publish at `<selector>._domainkey.<domain>`.
pub fn record_value(key_type: &str, public_key: &str) -> String {
    format!("v=DKIM1; k={key_type}; p={public_key}")
}

/// `mm<yyyymm>` of the month `now_ms` falls in (UTC): a selector that tells when the key was
/// made, so a later rotation picks a new name and both records can coexist meanwhile.
pub fn selector_for(now_ms: i64) -> String {
    let days = now_ms.div_euclid(86_400_000);
    let (year, month) = civil_from_days(days);
    format!("mm{year:04}{month:02}")
}

/// Year and month of a day count since 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month)
}

/// Start of the UTC day `now_ms` falls in, in Unix ms.
pub fn start_of_utc_day(now_ms: i64) -> i64 {
    now_ms.div_euclid(86_400_000) * 86_400_000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_name_the_month() {
        let table = [
            (0, "mm197001"),
            (951_782_400_000, "mm200002"), // 2000-02-29
            (1_704_067_199_999, "mm202312"),
            (1_704_067_200_000, "mm202401"),
            (1_767_225_600_000, "mm202601"),
        ];
        for (ms, want) in table {
            assert_eq!(selector_for(ms), want, "{ms}");
        }
        assert_eq!(start_of_utc_day(1_704_067_200_123), 1_704_067_200_000);
    }

    #[test]
    fn ed25519_keys_are_raw_32_bytes_and_open_again() {
        let key = generate(KeyType::Ed25519).unwrap();
        let public = STANDARD.decode(&key.public_key).unwrap();
        assert_eq!(public.len(), 32);
        let pair = ring::signature::Ed25519KeyPair::from_pkcs8(&key.private_pkcs8).unwrap();
        use ring::signature::KeyPair;
        assert_eq!(pair.public_key().as_ref(), public.as_slice());
    }

    #[test]
    fn rsa_keys_are_2048_bit_spki_and_sign_verifiably() {
        use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey};
        use rsa::traits::PublicKeyParts;
        let key = generate(KeyType::Rsa).unwrap();
        let public =
            rsa::RsaPublicKey::from_public_key_der(&STANDARD.decode(&key.public_key).unwrap())
                .unwrap();
        assert_eq!(public.size() * 8, 2048);
        let private = rsa::RsaPrivateKey::from_pkcs8_der(&key.private_pkcs8).unwrap();
        assert_eq!(private.to_public_key(), public);
        // An independent implementation (ring) verifies a signature made with the stored key:
        // the PKCS#8 and SPKI encodings are the standard ones a DKIM verifier expects.
        let signing = ring::signature::RsaKeyPair::from_pkcs8(&key.private_pkcs8).unwrap();
        let mut sig = vec![0u8; signing.public().modulus_len()];
        signing
            .sign(
                &ring::signature::RSA_PKCS1_SHA256,
                &ring::rand::SystemRandom::new(),
                b"header hash",
                &mut sig,
            )
            .unwrap();
        let spki = STANDARD.decode(&key.public_key).unwrap();
        let pkcs1 = rsa::pkcs1::EncodeRsaPublicKey::to_pkcs1_der(&public).unwrap();
        assert!(spki.len() > pkcs1.as_bytes().len());
        ring::signature::UnparsedPublicKey::new(
            &ring::signature::RSA_PKCS1_2048_8192_SHA256,
            pkcs1.as_bytes(),
        )
        .verify(b"header hash", &sig)
        .unwrap();
        assert!(record_value("rsa", &key.public_key).starts_with("v=DKIM1; k=rsa; p=MII"));
    }
}
