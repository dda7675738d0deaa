//! One domain's DKIM key, parsed once, and the mail-auth signers built from it; which header
//! fields are signed; which domains a message could be signed for. Sans I/O.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use mail_auth::common::crypto::{Algorithm, DkimKey, Ed25519Key, RsaKey, Sha256, SigningKey};
use mail_auth::common::headers::{HeaderWriter, Writable};
use mail_auth::dkim::{Canonicalization, DkimSigner, Done};
use mail_parser::MessageParser;
use mail_parser::decoders::base64::base64_decode;
use mailmux_core::sync::lock;
use mailmux_core::{address_domain, normalize_domain};
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

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

    use crate::dkim::test_keys::{RSA_PKCS8, RSA_SPKI};

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
}
