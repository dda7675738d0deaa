//! DKIM signing (RFC 6376) of outgoing mail: between routing and the transport, a message of a
//! tenant with `dkim_signing` gets a `DKIM-Signature` made with the active key of its From:
//! domain (DMARC alignment), or of its envelope sender's domain when From: names none of the
//! tenant's domains.
//!
//! Two halves:
//! - [`DomainSigner`], sans I/O: one domain's key, parsed once, and the mail-auth signers built
//!   from it. Relaxed/relaxed; rsa-sha256 or ed25519-sha256 by key type; the header list of
//!   [`SIGNED_HEADERS`], signing only the fields present plus From once more than it appears
//!   (over-signing: a From: added later breaks the signature).
//! - [`Signers`], the cache delivery asks per message: keyed by domain, it holds the built
//!   signer of the domain's active key and asks the store at most once a second whether that
//!   key is still the active one (a query that reads no key material). A key is unsealed and
//!   parsed only when it changes; never per message.
//!
//! Policy for a key that cannot be used (it does not unseal with this node's `master.key`, or
//! it does not parse, or its private half does not match the published public key): the
//! message is deferred with `451 4.7.0`, and the log says why. Sending it unsigned would be
//! worse: the tenant asked for signing, its DMARC policy may reject unsigned mail, and a
//! message rejected for DMARC is lost to the sender, while a deferred one is delivered as soon
//! as the key is fixed (or bounces after `delivery.max_age_secs`, telling the sender).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use mail_auth::common::crypto::{Algorithm, DkimKey, Ed25519Key, RsaKey, Sha256, SigningKey};
use mail_auth::common::headers::{HeaderWriter, Writable};
use mail_auth::dkim::{Canonicalization, DkimSigner, Done};
use mail_parser::MessageParser;
use mail_parser::decoders::base64::base64_decode;
use mailmux_core::message_bytes::crlf_line_endings;
use mailmux_core::sync::lock;
use mailmux_core::{Config, address_domain, normalize_domain};
use mailmux_store::{DkimSigningState, MasterKey, Store};
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tracing::{debug, error, info};

use crate::reply::Reply;

/// The header fields signed when present (RFC 6376 §5.4.1's "SHOULD be signed" list, less the
/// ones a relay's mail rarely carries, plus List-Unsubscribe, whose one-click form (RFC 8058)
/// must be signed). From is always listed once more than it appears.
pub const SIGNED_HEADERS: [&str; 10] = [
    "From",
    "To",
    "Cc",
    "Subject",
    "Date",
    "Message-ID",
    "Reply-To",
    "MIME-Version",
    "Content-Type",
    "List-Unsubscribe",
];

/// How long the cache trusts what it knows of a domain without asking the store again: a
/// rotation or a deleted domain takes effect within a second, and a busy domain costs one small
/// query a second.
pub(crate) const KEY_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Entries kept before stale ones are swept out (From: domains of other people's mail are
/// cached too, as "not ours").
const CACHE_SWEEP_AT: usize = 4096;

/// Why a key cannot sign.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SignError {
    #[error(
        "the private key of {selector}._domainkey.{domain} does not open with this node's master.key (copy <data_dir>/master.key from the node that made it)"
    )]
    Unseal { domain: String, selector: String },
    #[error("the key of {selector}._domainkey.{domain} is unusable: {why}")]
    BadKey {
        domain: String,
        selector: String,
        why: String,
    },
    #[error("signing with {selector}._domainkey.{domain} failed: {why}")]
    Sign {
        domain: String,
        selector: String,
        why: String,
    },
}

/// A parsed private key shared by every signer of a domain (mail-auth's signers own their key;
/// an `Arc` lets one parsed key serve them all).
#[derive(Clone)]
struct SharedKey(Arc<DkimKey>);

impl SigningKey for SharedKey {
    type Hasher = Sha256;

    fn sign(&self, input: impl Writable) -> mail_auth::Result<Vec<u8>> {
        self.0.sign(input)
    }

    fn algorithm(&self) -> Algorithm {
        self.0.algorithm()
    }
}

/// Which of [`SIGNED_HEADERS`] a message carries: bit `i` is `SIGNED_HEADERS[i]`.
type HeaderSet = u16;

/// One domain's active key, parsed, and the signers built from it.
pub struct DomainSigner {
    domain: String,
    selector: String,
    key: SharedKey,
    /// One signer per set of present headers. mail-auth puts every listed header into `h=`,
    /// present or not; we list only the present ones, so each set needs its own signer. Built
    /// on first use of a set and kept (a domain's mail comes in a handful of shapes; at most
    /// 2^10 sets exist).
    signers: Mutex<HashMap<HeaderSet, Arc<DkimSigner<SharedKey, Done>>>>,
}

impl std::fmt::Debug for DomainSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "DomainSigner({}._domainkey.{})",
            self.selector, self.domain
        )
    }
}

impl DomainSigner {
    /// Parses `pkcs8` (the unsealed private key) as a `key_type` (`rsa` or `ed25519`) key and
    /// checks it against `public_key` (the base64 `p=` published in DNS): a signer whose key
    /// does not match its record would sign mail that fails everywhere.
    pub fn new(
        domain: &str,
        selector: &str,
        key_type: &str,
        pkcs8: &[u8],
        public_key: &str,
    ) -> Result<DomainSigner, SignError> {
        let bad = |why: String| SignError::BadKey {
            domain: domain.to_string(),
            selector: selector.to_string(),
            why,
        };
        let published = base64_decode(public_key.as_bytes())
            .ok_or_else(|| bad("its public key is not base64".into()))?;
        let key = match key_type {
            "rsa" => {
                let key = RsaKey::<Sha256>::from_key_der(PrivateKeyDer::Pkcs8(
                    PrivatePkcs8KeyDer::from(pkcs8),
                ))
                .map_err(|e| bad(e.to_string()))?;
                // p= is a SubjectPublicKeyInfo; its last bytes are the PKCS#1 RSAPublicKey
                // (the BIT STRING's content), which is what ring gives back.
                let pkcs1 = key.public_key();
                if pkcs1.is_empty() || !published.ends_with(&pkcs1) {
                    return Err(bad("the private key does not match the published p=".into()));
                }
                DkimKey::Rsa(key)
            }
            "ed25519" => {
                let key = Ed25519Key::from_pkcs8_der(pkcs8).map_err(|e| bad(e.to_string()))?;
                if key.public_key() != published {
                    return Err(bad("the private key does not match the published p=".into()));
                }
                DkimKey::Ed25519(key)
            }
            other => return Err(bad(format!("unknown key type {other:?}"))),
        };
        let signer = DomainSigner {
            domain: domain.to_string(),
            selector: selector.to_string(),
            key: SharedKey(Arc::new(key)),
            signers: Mutex::new(HashMap::new()),
        };
        // The usual shape of application mail, built now rather than by the first message.
        signer.signer_for(header_set(
            b"From: a\r\nTo: b\r\nSubject: c\r\nDate: d\r\nMessage-ID: e\r\n\
              MIME-Version: f\r\nContent-Type: g\r\n\r\n",
        ));
        Ok(signer)
    }

    pub fn domain(&self) -> &str {
        &self.domain
    }

    pub fn selector(&self) -> &str {
        &self.selector
    }

    /// The `DKIM-Signature` header field (folded, ending in CRLF) for `message`, which must
    /// have CRLF line endings (what goes on the wire). Prepend it to the message.
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SignError> {
        let signer = self.signer_for(header_set(message));
        let signature = signer.sign(message).map_err(|e| SignError::Sign {
            domain: self.domain.clone(),
            selector: self.selector.clone(),
            why: e.to_string(),
        })?;
        let mut header = Vec::with_capacity(512);
        signature.write_header(&mut header);
        Ok(header)
    }

    fn signer_for(&self, set: HeaderSet) -> Arc<DkimSigner<SharedKey, Done>> {
        let mut signers = lock(&self.signers);
        signers
            .entry(set)
            .or_insert_with(|| {
                // mail-auth signs every instance of a listed header that is present, bottom
                // up, then adds each listed name it did not find: From listed twice becomes
                // "From (each one present) + From", the over-signing we want, and nothing else
                // absent is claimed.
                let headers: Vec<&str> = SIGNED_HEADERS
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| set & (1 << i) != 0)
                    .map(|(_, name)| *name)
                    .chain(["From"])
                    .collect();
                Arc::new(
                    DkimSigner::from_key(self.key.clone())
                        .domain(self.domain.clone())
                        .selector(self.selector.clone())
                        .headers(headers)
                        .header_canonicalization(Canonicalization::Relaxed)
                        .body_canonicalization(Canonicalization::Relaxed),
                )
            })
            .clone()
    }
}

/// Which of [`SIGNED_HEADERS`] appear in the header section of `message` (names compared
/// without regard to case; continuation lines and the body are not looked at).
fn header_set(message: &[u8]) -> HeaderSet {
    let mut set = 0;
    for name in mailmux_core::message_bytes::field_names(message) {
        if let Some(i) = SIGNED_HEADERS
            .iter()
            .position(|h| h.as_bytes().eq_ignore_ascii_case(name))
        {
            set |= 1 << i;
        }
    }
    set
}

/// The domains a message could be signed for, best first: those of its From: addresses (DMARC
/// checks alignment with From:), then the envelope sender's. Normalised (lowercase A-labels),
/// without repeats.
pub fn candidate_domains(message: &[u8], mail_from: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut push = |raw: String| {
        if let Ok(domain) = normalize_domain(&raw)
            && !out.contains(&domain)
        {
            out.push(domain);
        }
    };
    if let Some(headers) = MessageParser::new().parse_headers(message)
        && let Some(from) = headers.from()
    {
        for addr in from.iter() {
            if let Some(address) = addr.address() {
                push(address_domain(address));
            }
        }
    }
    if !mail_from.is_empty() {
        push(address_domain(mail_from));
    }
    out
}

/// What signing did to one message.
#[derive(Debug)]
pub(crate) enum Signing {
    /// The message to send: the signature on top, then the message as queued (CRLF-normalised).
    Signed {
        message: Vec<u8>,
        domain: String,
        selector: String,
    },
    /// No domain of the message is the tenant's with an active key: sent as it is.
    Unsigned,
    /// The key to sign with cannot be used (or cannot be looked up): every recipient waits.
    Defer(Reply),
}

/// What the cache knows of one domain.
#[derive(Clone)]
struct Entry {
    checked: Instant,
    /// From the store; None when no tenant holds the domain.
    state: Option<DkimSigningState>,
    loaded: Loaded,
}

/// The outcome of loading a domain's active key.
#[derive(Clone)]
enum Loaded {
    /// No active key, or a domain we do not sign for (not ours, not verified).
    Nothing,
    Ready(Arc<DomainSigner>),
    Broken(SignError),
}

/// The signer cache: domain → the built signer of its active key.
pub(crate) struct Signers {
    store: Store,
    /// `<data_dir>/master.key`: read when a key is loaded (rarely), so a master key restored
    /// by the operator is picked up without a restart.
    master_key_path: std::path::PathBuf,
    entries: Mutex<HashMap<String, Entry>>,
    /// Signatures being computed at once: one per core.
    cpu: tokio::sync::Semaphore,
}

impl Signers {
    pub(crate) fn new(store: Store, config: &Config) -> Signers {
        Signers {
            store,
            master_key_path: config.storage.data_dir.join("master.key"),
            entries: Mutex::new(HashMap::new()),
            cpu: tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(1, |n| n.get()),
            ),
        }
    }

    /// Signs `message` (the queued bytes) for `tenant_id`, whose `dkim_signing` the caller
    /// checked; `mail_from` is the envelope sender as submitted.
    pub(crate) async fn sign(&self, tenant_id: &str, message: &[u8], mail_from: &str) -> Signing {
        // Sign what goes on the wire: the transport makes bare line endings CRLF, so they are
        // made CRLF here first (a no-op, without a copy, for mail from our own listeners).
        let body = crlf_line_endings(message);
        for domain in candidate_domains(&body, mail_from) {
            let entry = match self.entry(&domain).await {
                Ok(entry) => entry,
                Err(error) => {
                    error!(%domain, %error, "cannot look up the DKIM key; the message waits");
                    return Signing::Defer(Reply::new(
                        451,
                        format!("4.3.0 cannot look up the DKIM key of {domain}; will retry"),
                    ));
                }
            };
            let ours = entry
                .state
                .as_ref()
                .is_some_and(|s| s.tenant_id == tenant_id && s.verified);
            if !ours {
                continue;
            }
            match entry.loaded {
                Loaded::Nothing => continue,
                Loaded::Broken(why) => return defer_for(&why),
                Loaded::Ready(signer) => {
                    let signed = self
                        .sign_off_runtime(signer.clone(), body.into_owned())
                        .await;
                    return match signed {
                        Ok(signed) => Signing::Signed {
                            message: signed,
                            domain: signer.domain().to_string(),
                            selector: signer.selector().to_string(),
                        },
                        Err(why) => {
                            error!(error = %why, "DKIM signing failed; the message waits");
                            defer_for(&why)
                        }
                    };
                }
            }
        }
        Signing::Unsigned
    }

    /// The signature on top of `body`, computed on tokio's blocking pool: an RSA-2048
    /// signature costs about a millisecond of CPU, which would otherwise stall the runtime's
    /// workers and with them every SMTP session and delivery they carry (measured: with signing
    /// on the runtime's workers, the spine bench's throughput halved; off them, it lost about
    /// 40%, which is the RSA arithmetic itself on two cores). At most one signature per core
    /// runs at once ([`Signers::cpu`]): a burst of deliveries queues for the cores instead of
    /// piling dozens of blocking threads onto them.
    async fn sign_off_runtime(
        &self,
        signer: Arc<DomainSigner>,
        body: Vec<u8>,
    ) -> Result<Vec<u8>, SignError> {
        let _cpu = self
            .cpu
            .acquire()
            .await
            .expect("the signing semaphore is never closed");
        let failed = |why: String| SignError::Sign {
            domain: signer.domain().to_string(),
            selector: signer.selector().to_string(),
            why,
        };
        let task_signer = signer.clone();
        tokio::task::spawn_blocking(move || {
            let header = task_signer.sign(&body)?;
            let mut signed = Vec::with_capacity(header.len() + body.len());
            signed.extend_from_slice(&header);
            signed.extend_from_slice(&body);
            Ok(signed)
        })
        .await
        .map_err(|e| failed(e.to_string()))?
    }

    /// What is known of `domain`, asking the store when the last look is older than
    /// [`KEY_CHECK_INTERVAL`] and loading the active key only when it changed (or failed).
    async fn entry(&self, domain: &str) -> mailmux_store::Result<Entry> {
        let now = Instant::now();
        let cached = self.lock().get(domain).cloned();
        if let Some(entry) = &cached
            && now.duration_since(entry.checked) < KEY_CHECK_INTERVAL
        {
            return Ok(entry.clone());
        }
        // Concurrent messages of one domain may each get here when the entry expires: each
        // asks the small query; the key itself is reused unless it changed.
        let state = self.store.dkim_signing_state(domain).await?;
        let active = state
            .as_ref()
            .filter(|s| s.verified)
            .and_then(|s| s.active.clone());
        let reusable = cached.and_then(|entry| {
            let same_key = entry
                .state
                .as_ref()
                .filter(|s| s.verified)
                .and_then(|s| s.active.as_ref())
                == active.as_ref();
            match entry.loaded {
                Loaded::Ready(_) | Loaded::Nothing if same_key => Some(entry.loaded),
                // A broken key is tried again (at most once a second): the operator may have
                // restored master.key.
                _ => None,
            }
        });
        let loaded = match (reusable, active) {
            (Some(loaded), _) => loaded,
            (None, None) => Loaded::Nothing,
            (None, Some((selector, _))) => self.load(domain, &selector).await?,
        };
        let entry = Entry {
            checked: now,
            state,
            loaded,
        };
        let mut entries = self.lock();
        if entries.len() >= CACHE_SWEEP_AT {
            entries.retain(|_, e| now.duration_since(e.checked) < KEY_CHECK_INTERVAL);
        }
        entries.insert(domain.to_string(), entry.clone());
        Ok(entry)
    }

    /// Unseals and parses the active key of `domain`.
    async fn load(&self, domain: &str, selector: &str) -> mailmux_store::Result<Loaded> {
        let Some(key) = self.store.get_dkim_key(domain).await? else {
            // Deleted between the two queries: nothing to sign with now; the next look knows.
            return Ok(Loaded::Nothing);
        };
        let unseal = || SignError::Unseal {
            domain: key.domain.clone(),
            selector: key.selector.clone(),
        };
        let built = MasterKey::load(&self.master_key_path)
            .map_err(|e| SignError::BadKey {
                domain: key.domain.clone(),
                selector: key.selector.clone(),
                why: e.to_string(),
            })
            .and_then(|master| {
                master
                    .open(
                        &key.private_key_sealed,
                        &mailmux_store::DkimKey::seal_context(&key.domain, &key.selector),
                    )
                    .map_err(|_| unseal())
            })
            .and_then(|pkcs8| {
                DomainSigner::new(
                    &key.domain,
                    &key.selector,
                    &key.key_type,
                    &pkcs8,
                    &key.public_key,
                )
            });
        Ok(match built {
            Ok(signer) => {
                info!(%domain, selector = %key.selector, key_type = %key.key_type,
                    "DKIM key loaded for signing");
                Loaded::Ready(Arc::new(signer))
            }
            Err(why) => {
                error!(%domain, %selector, error = %why,
                    "DKIM key cannot be used: this domain's mail is deferred (451 4.7.0) until it is fixed");
                Loaded::Broken(why)
            }
        })
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        lock(&self.entries)
    }
}

fn defer_for(why: &SignError) -> Signing {
    debug!(error = %why, "message deferred: its DKIM key cannot be used");
    Signing::Defer(Reply::new(
        451,
        format!("4.7.0 DKIM signing is on for this sender but {why}; will retry"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::borrow::Borrow;
    use std::hash::Hash;

    use mail_auth::common::parse::TxtRecordParser;
    use mail_auth::common::verify::DomainKey;
    use mail_auth::hickory_resolver::config::{ResolverConfig, ResolverOpts};
    use mail_auth::{
        AuthenticatedMessage, DkimResult, MessageAuthenticator, Parameters, ResolverCache, Txt,
    };

    /// An RSA-2048 key for the tests (ring cannot generate RSA keys), made with
    /// `openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048` (then `openssl pkcs8
    /// -topk8 -nocrypt -outform DER`): PKCS#8 and
    /// the SubjectPublicKeyInfo published as p=.
    const RSA_PKCS8: &str = concat!(
        "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQCR7wL6EzaSD6mMIebSwm43D97SKll7sECcrbdj",
        "5iiu2up7KkoYlAzIHYWQFRsptf3br7IQUgTTVymz4QesbUAT5PoLirHkGBOLewM6ugZ18EWAdKJ3hq3eRDlCB2Ot",
        "fHf8sieHR1EROXmtawLwL7sGZt8KuUMXokFPy75QNBE4BlVeWq6OCu4LWv/Ntd6BchXC78xXEtBJKLnUhms5J2SK",
        "pStwf+dnQAXVMYRP2zZZFsAH/XnFhRIgAtyJ4vYBYeYdIPRNMnYc54cG7jAyP9WVqplSVnwnp02NR6bv5LBD5f/Z",
        "4m0rQaRig4Fpe+dKz7gDJJXB3hjJCtrRZWBlofPtAgMBAAECggEAHNI6wQdu4WFo/5VJeEnwiPzgKZs2EYTRefAg",
        "FkGEOuZe5WTIffqtXI9iC77zXqVEBfF45hrAu7mM8arpgE8SVuuDy6hAclcj8wngLSbEtGG35EMEvDzz1UAdm9II",
        "SGDa9KP9xQybcN6sTojiK2wN0JmcBsroeoAvzHHlfAMQfIMNN2+zh1TUhdPFbdcfAONUty9pXLHWRuZDu8Ru43tB",
        "I963T+JPOIYQUtWmnTPgJUL5hv1300u7WFteIGOOskZBPWZzDW5k63SI4M95WtWGVlQI/CMPOxo+OrniuWu3GsFe",
        "oZ/26NIiyYyT/wChymDDSQt9LMbU0fcUNIsqNn4H2QKBgQDNcyC0Cz93mQYO4/MH5rwZeEwzae5HeaiY90fJrFGP",
        "I1ifsyzmNOMiJz0zHsCfn6ZC67JbFQyJ9YPfZniFQlnsbrt4TOk6mKQhjuIkSdb6VT7Ab/X3ledjmxlAPjyxXZoK",
        "czeUu6A2PhkmYzRwq0PcGqhPLGW9g7waUOMzRf7hGQKBgQC11xVjhSLqt5xP7DAbyPEaEqw/5UWVyR26GofLTLM/",
        "jFFN0Mi11V9y44pI6tclhgR6C6edCj63U5EwwWs4UOykFMRX/dMeCiBF1MMse206paBPDu10BrdWk28uoVmVLuyn",
        "CH/Tgq51EOlS3oL7PmrSDB8D2bOP3wJuw6jacNaf9QKBgD4Hk4komDn41q5qPndVP9eEzaT8R7gG0FOW3XLTdzB7",
        "YIefJmA++ZDXPhAQKeJH5n/v/8KmQUnp+a3al2rMlK/g4vM4bXaGnY+QP1Drhl/Amxio9R+Sf/E/48jUwahfdWHQ",
        "VaivWXjnGNrROwUFgJCU79ovsmwcuQ9M+rwBVyoJAoGBAJVrM2wfjl2Imq0hyzZJm7Rs+5VVdCRsqjyuaD8pu3DQ",
        "gE6M7SBdQJ1LU+ou7rMquKsAwK5OKNLDnF6P0ObpuEnrtpsHO19HutUmy2nV0h+K0XulLIFWs3g0lfufIdlwQY3P",
        "chn/HBOd3dv2c3K4C1amFyY20VG7Umhp5mn4pqOxAoGAasKsQT10mEWwCXcZNfnMJNazFe6T9W6McG4aTHZJQf9d",
        "wq+TjCsFH/HJgGOEnyun0XFHrUt5HXCClJrEh67Rs51ufb8D2iCdeVXKyRPTHARG8AyGAZhjuWmf6LtqsZ1AtjLA",
        "2UTFjD3oxbwg34FeX7mmXWcDB+QsYHcLKxtjz0k=",
    );
    const RSA_SPKI: &str = concat!(
        "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAke8C+hM2kg+pjCHm0sJuNw/e0ipZe7BAnK23Y+Yortrq",
        "eypKGJQMyB2FkBUbKbX926+yEFIE01cps+EHrG1AE+T6C4qx5BgTi3sDOroGdfBFgHSid4at3kQ5QgdjrXx3/LIn",
        "h0dRETl5rWsC8C+7BmbfCrlDF6JBT8u+UDQROAZVXlqujgruC1r/zbXegXIVwu/MVxLQSSi51IZrOSdkiqUrcH/n",
        "Z0AF1TGET9s2WRbAB/15xYUSIALcieL2AWHmHSD0TTJ2HOeHBu4wMj/VlaqZUlZ8J6dNjUem7+SwQ+X/2eJtK0Gk",
        "YoOBaXvnSs+4AySVwd4YyQra0WVgZaHz7QIDAQAB",
    );

    fn rsa_signer(domain: &str, selector: &str) -> DomainSigner {
        let pkcs8 = base64_decode(RSA_PKCS8.as_bytes()).unwrap();
        DomainSigner::new(domain, selector, "rsa", &pkcs8, RSA_SPKI).unwrap()
    }

    fn ed25519_key() -> (Vec<u8>, String) {
        use base64::Engine;
        let pkcs8 = Ed25519Key::generate_pkcs8().unwrap();
        let public = Ed25519Key::from_pkcs8_der(&pkcs8).unwrap().public_key();
        (
            pkcs8,
            base64::engine::general_purpose::STANDARD.encode(public),
        )
    }

    /// A TXT cache holding the test keys' records: mail-auth's verifier looks there first, so
    /// the tests never query DNS.
    #[derive(Default)]
    struct Records(Mutex<HashMap<Box<str>, Txt>>);

    impl Records {
        fn publish(&self, selector: &str, domain: &str, key_type: &str, p: &str) {
            let record = format!("v=DKIM1; k={key_type}; p={p}");
            let key: Txt = DomainKey::parse(record.as_bytes()).unwrap().into();
            lock(&self.0).insert(format!("{selector}._domainkey.{domain}.").into(), key);
        }
    }

    impl ResolverCache<Box<str>, Txt> for Records {
        fn get<Q>(&self, name: &Q) -> Option<Txt>
        where
            Box<str>: Borrow<Q>,
            Q: Hash + Eq + ?Sized,
        {
            lock(&self.0).get(name).cloned()
        }

        fn remove<Q>(&self, name: &Q) -> Option<Txt>
        where
            Box<str>: Borrow<Q>,
            Q: Hash + Eq + ?Sized,
        {
            lock(&self.0).remove(name)
        }

        fn insert(&self, key: Box<str>, value: Txt, _: std::time::Instant) {
            lock(&self.0).insert(key, value);
        }
    }

    /// mail-auth's verdict on every signature of `raw`.
    async fn verify(records: &Records, raw: &[u8]) -> Vec<DkimResult> {
        // No name servers: a lookup that missed the cache fails instead of leaving loopback.
        let authenticator = MessageAuthenticator::new(
            ResolverConfig::from_parts(None, Vec::new(), Vec::new()),
            ResolverOpts::default(),
        )
        .unwrap();
        let message = AuthenticatedMessage::parse(raw).expect("message parses");
        authenticator
            .verify_dkim(Parameters::new(&message).with_txt_cache(records))
            .await
            .iter()
            .map(|output| output.result().clone())
            .collect()
    }

    /// The tag `name` of the DKIM-Signature header field `header`, whitespace removed.
    fn tag(header: &[u8], name: &str) -> String {
        let text: String = String::from_utf8_lossy(header)
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        let text = text.strip_prefix("DKIM-Signature:").unwrap();
        text.split(';')
            .find_map(|t| t.strip_prefix(&format!("{name}=")))
            .unwrap_or_default()
            .to_string()
    }

    fn messages() -> Vec<(&'static str, Vec<u8>)> {
        vec![
            (
                "plain",
                b"From: App <app@acme.test>\r\nTo: u@sink.test\r\nSubject: hi\r\n\
                  Date: Mon, 23 Nov 2026 12:00:00 +0000\r\nMessage-ID: <1@acme.test>\r\n\r\n\
                  Hello.\r\n"
                    .to_vec(),
            ),
            (
                "every signed header, a long folded one, an unsigned one, 8-bit and dot lines",
                "Received: from x by y; Mon, 23 Nov 2026 12:00:00 +0000\r\n\
                 From: \"Ápp\" <app@acme.test>\r\nTo: a@sink.test,\r\n b@sink.test\r\n\
                 Cc: c@sink.test\r\nReply-To: r@acme.test\r\n\
                 Subject: a subject long enough that it was folded by the client over\r\n\
                 \tseveral lines, with   runs of   spaces\r\n\
                 Date: Mon, 23 Nov 2026 12:00:00 +0000\r\nMessage-ID: <2@acme.test>\r\n\
                 MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\
                 Content-Transfer-Encoding: 8bit\r\n\
                 List-Unsubscribe: <https://acme.test/u/1>\r\nX-Mailer: test\r\n\r\n\
                 Héllo wörld.\r\n.a line that starts with a dot\r\n..two\r\n\r\n\r\n"
                    .as_bytes()
                    .to_vec(),
            ),
            (
                "multipart",
                b"From: app@acme.test\r\nTo: u@sink.test\r\nSubject: parts\r\n\
                  MIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=\"b1\"\r\n\r\n\
                  preamble\r\n--b1\r\nContent-Type: text/plain\r\n\r\ntext\r\n\
                  --b1\r\nContent-Type: text/html\r\n\r\n<p>html</p>\r\n--b1--\r\n"
                    .to_vec(),
            ),
            (
                "no body",
                b"From: app@acme.test\r\nSubject: empty\r\n\r\n".to_vec(),
            ),
        ]
    }

    #[tokio::test]
    async fn signatures_verify_for_rsa_and_ed25519_and_sign_only_present_headers() {
        let records = Records::default();
        records.publish("rsa1", "acme.test", "rsa", RSA_SPKI);
        let (ed_pkcs8, ed_public) = ed25519_key();
        records.publish("ed1", "acme.test", "ed25519", &ed_public);
        let signers = [
            (rsa_signer("acme.test", "rsa1"), "rsa-sha256"),
            (
                DomainSigner::new("acme.test", "ed1", "ed25519", &ed_pkcs8, &ed_public).unwrap(),
                "ed25519-sha256",
            ),
        ];
        for (signer, algorithm) in &signers {
            for (what, message) in messages() {
                let header = signer.sign(&message).unwrap();
                assert!(header.starts_with(b"DKIM-Signature: ") && header.ends_with(b"\r\n"));
                assert_eq!(tag(&header, "a"), *algorithm, "{what}");
                assert_eq!(tag(&header, "c"), "relaxed/relaxed", "{what}");
                assert_eq!(tag(&header, "d"), "acme.test", "{what}");
                // h=: the signed headers present (each instance), and From once more.
                let h = tag(&header, "h");
                let mut listed: Vec<String> =
                    h.split(':').map(|n| n.to_ascii_lowercase()).collect();
                let present = header_set(&message);
                let froms = listed.iter().filter(|n| *n == "from").count();
                assert_eq!(froms, usize::from(present & 1 != 0) + 1, "{what}: h={h}");
                listed.retain(|n| n != "from");
                for name in &listed {
                    let i = SIGNED_HEADERS
                        .iter()
                        .position(|s| s.eq_ignore_ascii_case(name))
                        .unwrap_or_else(|| panic!("{what}: h= lists {name}"));
                    assert!(present & (1 << i) != 0, "{what}: absent {name} in h={h}");
                }
                assert!(!h.to_ascii_lowercase().contains("received"), "{h}");

                let signed = [header.as_slice(), &message].concat();
                assert_eq!(
                    verify(&records, &signed).await,
                    [DkimResult::Pass],
                    "{algorithm} {what}"
                );
                // A changed body fails (mail-auth says "neutral" for a body hash mismatch).
                let mut tampered = signed.clone();
                let at = tampered.len() - 3;
                tampered[at] ^= 0x01;
                assert!(
                    matches!(
                        verify(&records, &tampered).await[..],
                        [DkimResult::Fail(_) | DkimResult::Neutral(_)]
                    ),
                    "{algorithm} {what}: tampered body: {:?}",
                    verify(&records, &tampered).await
                );
                // A From: added above the signed one fails: it was over-signed.
                let added = [header.as_slice(), b"From: evil@attacker.test\r\n", &message].concat();
                assert!(
                    matches!(
                        verify(&records, &added).await[..],
                        [DkimResult::Fail(_) | DkimResult::Neutral(_)]
                    ),
                    "{algorithm} {what}: an added From: passed"
                );
            }
        }
        // Signers for a header set are built once and reused.
        let (signer, _) = &signers[0];
        let before = lock(&signer.signers).len();
        signer.sign(&messages()[0].1).unwrap();
        signer.sign(&messages()[0].1).unwrap();
        assert_eq!(lock(&signer.signers).len(), before);
    }

    #[test]
    fn header_sets_see_only_the_header_section() {
        let bit = |name: &str| 1u16 << SIGNED_HEADERS.iter().position(|h| *h == name).unwrap();
        let table: [(&[u8], u16); 6] = [
            (
                b"From: a\r\nTo: b\r\n\r\nCc: not a header\r\n",
                bit("From") | bit("To"),
            ),
            (
                b"from: a\r\nMESSAGE-ID: <x>\r\n\r\n",
                bit("From") | bit("Message-ID"),
            ),
            (
                b"Subject: a\r\n Cc: folded, not a field\r\nReply-To : r\r\n\r\n",
                bit("Subject") | bit("Reply-To"),
            ),
            (b"X-From: a\r\nList-Unsubscribe-Post: x\r\n\r\n", 0),
            (b"To: a\nDate: d\n\nFrom: body\n", bit("To") | bit("Date")),
            (b"\r\nFrom: body only\r\n", 0),
        ];
        for (message, want) in table {
            assert_eq!(
                header_set(message),
                want,
                "{}",
                String::from_utf8_lossy(message)
            );
        }
    }

    #[test]
    fn candidate_domains_are_from_then_envelope() {
        let table: [(&[u8], &str, &[&str]); 6] = [
            (
                b"From: A <a@Acme.Test>\r\n\r\n",
                "b@other.test",
                &["acme.test", "other.test"],
            ),
            (
                b"From: a@acme.test, b@second.test\r\n\r\n",
                "a@acme.test",
                &["acme.test", "second.test"],
            ),
            (
                b"From: Team: a@grp.test, b@grp.test;\r\n\r\n",
                "",
                &["grp.test"],
            ),
            (b"Subject: no from\r\n\r\n", "app@env.test", &["env.test"]),
            (
                "From: <a@bücher.test>\r\n\r\n".as_bytes(),
                "",
                &["xn--bcher-kva.test"],
            ),
            (b"From: nobody\r\n\r\n", "", &[]),
        ];
        for (message, mail_from, want) in table {
            assert_eq!(
                candidate_domains(message, mail_from),
                want,
                "{}",
                String::from_utf8_lossy(message)
            );
        }
    }

    #[test]
    fn keys_that_cannot_sign_are_refused_when_loaded() {
        let pkcs8 = base64_decode(RSA_PKCS8.as_bytes()).unwrap();
        let (ed_pkcs8, ed_public) = ed25519_key();
        let (_, other_ed_public) = ed25519_key();
        let cases: [(&str, &[u8], &str); 5] = [
            ("rsa", &pkcs8, &ed_public),              // not the matching public key
            ("ed25519", &ed_pkcs8, &other_ed_public), // another key's public half
            ("rsa", b"not a key", RSA_SPKI),
            ("ed25519", &pkcs8, RSA_SPKI), // an RSA key said to be Ed25519
            ("dsa", &pkcs8, RSA_SPKI),
        ];
        for (key_type, der, public) in cases {
            let result = DomainSigner::new("acme.test", "s", key_type, der, public);
            assert!(
                matches!(result, Err(SignError::BadKey { .. })),
                "{key_type} {public:.12}: {result:?}"
            );
        }
    }

    // ---- the cache, over a real store ---------------------------------------------------

    struct Fixture {
        store: Store,
        signers: Signers,
        master: MasterKey,
        dir: std::path::PathBuf,
        tenant: String,
    }

    impl Drop for Fixture {
        fn drop(&mut self) {
            std::fs::remove_dir_all(&self.dir).ok();
        }
    }

    async fn fixture(name: &str) -> Fixture {
        let dir = std::env::temp_dir().join(format!("mailmux-dkim-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = Store::connect(&format!("sqlite://{}/m.db", dir.display()), 2)
            .await
            .unwrap();
        store.migrate().await.unwrap();
        let mut config = Config::default();
        config.storage.data_dir = dir.clone();
        let master = MasterKey::load_or_create(&dir.join("master.key")).unwrap();
        let tenant =
            mailmux_core::Tenant::new("t_1".into(), "acme".into(), mailmux_core::Tier::Starter, 1);
        store.create_tenant(&tenant, None).await.unwrap();
        Fixture {
            signers: Signers::new(store.clone(), &config),
            store,
            master,
            dir,
            tenant: tenant.id,
        }
    }

    impl Fixture {
        fn key(
            &self,
            domain: &str,
            selector: &str,
            status: mailmux_store::DkimKeyStatus,
        ) -> mailmux_store::DkimKey {
            let pkcs8 = base64_decode(RSA_PKCS8.as_bytes()).unwrap();
            mailmux_store::DkimKey {
                domain: domain.into(),
                selector: selector.into(),
                key_type: "rsa".into(),
                public_key: RSA_SPKI.into(),
                private_key_sealed: self
                    .master
                    .seal(
                        &pkcs8,
                        &mailmux_store::DkimKey::seal_context(domain, selector),
                    )
                    .unwrap(),
                created_at: 1,
                status,
                activated_at: None,
                retire_at: None,
                updated_at: 1,
            }
        }

        async fn add_domain(&self, tenant: &str, domain: &str, verified: bool) {
            let d = mailmux_core::Domain {
                name: domain.into(),
                tenant_id: tenant.into(),
                verified,
                verified_by: verified.then(|| "operator".into()),
                verification_token: "t".into(),
                created_at: 1,
            };
            let key = self.key(domain, "s1", mailmux_store::DkimKeyStatus::Active);
            self.store
                .add_domain_with_dkim(&d, &key, 0, None)
                .await
                .unwrap();
        }

        fn message(&self, from: &str) -> Vec<u8> {
            format!("From: {from}\r\nTo: u@sink.test\r\nSubject: s\r\n\r\nbody\r\n").into_bytes()
        }
    }

    fn signed_with(signing: &Signing) -> Option<(String, String)> {
        match signing {
            Signing::Signed {
                domain, selector, ..
            } => Some((domain.clone(), selector.clone())),
            _ => None,
        }
    }

    #[tokio::test]
    async fn the_cache_signs_for_the_tenants_domains_only_and_follows_rotations() {
        let f = fixture("cache").await;
        f.add_domain(&f.tenant, "acme.test", true).await;
        f.add_domain(&f.tenant, "env.test", true).await;
        f.add_domain(&f.tenant, "unverified.test", false).await;
        let other =
            mailmux_core::Tenant::new("t_2".into(), "other".into(), mailmux_core::Tier::Starter, 1);
        f.store.create_tenant(&other, None).await.unwrap();
        f.add_domain(&other.id, "theirs.test", true).await;

        let sign = async |from: &str, mail_from: &str| {
            f.signers.sign(&f.tenant, &f.message(from), mail_from).await
        };
        let pair = |d: &str, s: &str| Some((d.to_string(), s.to_string()));
        // From: wins over the envelope; the envelope is the fallback.
        assert_eq!(
            signed_with(&sign("a@acme.test", "b@env.test").await),
            pair("acme.test", "s1")
        );
        assert_eq!(
            signed_with(&sign("a@gmail.test", "b@env.test").await),
            pair("env.test", "s1")
        );
        // Another tenant's domain, or an unverified one, is never signed for.
        assert_eq!(
            signed_with(&sign("a@theirs.test", "b@env.test").await),
            pair("env.test", "s1")
        );
        assert_eq!(signed_with(&sign("a@unverified.test", "").await), None);
        assert!(matches!(
            sign("a@theirs.test", "b@theirs.test").await,
            Signing::Unsigned
        ));

        // The signed message is the signature on top of the queued bytes.
        let message = f.message("a@acme.test");
        let Signing::Signed {
            message: signed, ..
        } = f.signers.sign(&f.tenant, &message, "").await
        else {
            panic!("not signed");
        };
        assert!(signed.starts_with(b"DKIM-Signature: "));
        assert!(signed.ends_with(&message));

        // The built signer is kept while the key stays the same, across refreshes.
        let first = f.signers.entry("acme.test").await.unwrap();
        tokio::time::sleep(KEY_CHECK_INTERVAL + Duration::from_millis(50)).await;
        let again = f.signers.entry("acme.test").await.unwrap();
        match (&first.loaded, &again.loaded) {
            (Loaded::Ready(a), Loaded::Ready(b)) => assert!(Arc::ptr_eq(a, b), "signer rebuilt"),
            _ => panic!("not loaded"),
        }

        // A rotation switches signing within a second of the switch, not before.
        let next = mailmux_store::DkimKey {
            created_at: 5,
            updated_at: 5,
            ..f.key("acme.test", "s2", mailmux_store::DkimKeyStatus::Pending)
        };
        f.store.add_pending_dkim_key(&next, None).await.unwrap();
        tokio::time::sleep(KEY_CHECK_INTERVAL + Duration::from_millis(50)).await;
        assert_eq!(
            signed_with(&sign("a@acme.test", "").await),
            pair("acme.test", "s1")
        );
        assert!(
            f.store
                .activate_dkim_key("acme.test", "s2", 10, 20, None)
                .await
                .unwrap()
        );
        tokio::time::sleep(KEY_CHECK_INTERVAL + Duration::from_millis(50)).await;
        assert_eq!(
            signed_with(&sign("a@acme.test", "").await),
            pair("acme.test", "s2")
        );
    }

    #[tokio::test]
    async fn a_key_that_does_not_unseal_defers_with_451_and_recovers() {
        let f = fixture("broken").await;
        f.add_domain(&f.tenant, "acme.test", true).await;
        // Another node's master key: the sealed key does not open here.
        let key_path = f.dir.join("master.key");
        let good = std::fs::read(&key_path).unwrap();
        std::fs::write(&key_path, [7u8; 32]).unwrap();
        let message = f.message("a@acme.test");
        match f.signers.sign(&f.tenant, &message, "a@acme.test").await {
            Signing::Defer(reply) => {
                let text = reply.to_string();
                assert!(text.starts_with("451 4.7.0"), "{text}");
                assert!(text.contains("master.key"), "{text}");
            }
            other => panic!("not deferred: {other:?}"),
        }
        // The operator restores the right master key: signing resumes within a second.
        std::fs::write(&key_path, good).unwrap();
        tokio::time::sleep(KEY_CHECK_INTERVAL + Duration::from_millis(50)).await;
        assert!(matches!(
            f.signers.sign(&f.tenant, &message, "a@acme.test").await,
            Signing::Signed { .. }
        ));
    }

    #[tokio::test]
    async fn a_missing_master_key_defers_and_is_never_created_by_delivery() {
        let f = fixture("nokey").await;
        f.add_domain(&f.tenant, "acme.test", true).await;
        let key_path = f.dir.join("master.key");
        let good = std::fs::read(&key_path).unwrap();
        std::fs::remove_file(&key_path).unwrap();
        let message = f.message("a@acme.test");
        match f.signers.sign(&f.tenant, &message, "a@acme.test").await {
            Signing::Defer(reply) => {
                let text = reply.to_string();
                assert!(text.starts_with("451 4.7.0"), "{text}");
                assert!(text.contains("does not exist"), "{text}");
            }
            other => panic!("not deferred: {other:?}"),
        }
        assert!(
            !key_path.exists(),
            "a new master key would open none of the sealed keys"
        );
        // Restored: signing resumes.
        std::fs::write(&key_path, good).unwrap();
        tokio::time::sleep(KEY_CHECK_INTERVAL + Duration::from_millis(50)).await;
        assert!(matches!(
            f.signers.sign(&f.tenant, &message, "a@acme.test").await,
            Signing::Signed { .. }
        ));
    }
}
