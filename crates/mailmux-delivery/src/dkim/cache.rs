//! The signer cache delivery asks per message: domain → the built signer of its active key,
//! checked against the store at most once a second.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use mailmux_core::Config;
use mailmux_core::message_bytes::crlf_line_endings;
use mailmux_core::reply::Reply;
use mailmux_core::sync::lock;
use mailmux_store::{DkimSigningState, MasterKey, Store};
// tokio's clock, so tests move it past the check interval instead of waiting it out.
use tokio::time::Instant;
use tracing::{debug, error, info};

use crate::dkim::signer::{DomainSigner, SignError, candidate_domains};

/// Entries kept before stale ones are swept out (From: domains of other people's mail are
/// cached too, as "not ours").
const CACHE_SWEEP_AT: usize = 4096;

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
    /// How long what is known of a domain is trusted without asking the store again
    /// (`delivery.cache_ttl_ms`): a rotation or a deleted domain takes effect within it, and a
    /// busy domain costs one small query per interval.
    check_interval: Duration,
    /// Signatures being computed at once: one per core.
    cpu: tokio::sync::Semaphore,
}

impl Signers {
    pub(crate) fn new(store: Store, config: &Config) -> Signers {
        Signers {
            store,
            master_key_path: config.storage.data_dir.join("master.key"),
            entries: Mutex::new(HashMap::new()),
            check_interval: Duration::from_millis(config.delivery.cache_ttl_ms),
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
                    return Signing::Defer(Reply::parse(
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
    /// the check interval and loading the active key only when it changed (or failed).
    async fn entry(&self, domain: &str) -> mailmux_store::Result<Entry> {
        let now = Instant::now();
        let cached = self.lock().get(domain).cloned();
        if let Some(entry) = &cached
            && now.duration_since(entry.checked) < self.check_interval
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
            let interval = self.check_interval;
            entries.retain(|_, e| now.duration_since(e.checked) < interval);
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
    Signing::Defer(Reply::parse(
        451,
        format!("4.7.0 DKIM signing is on for this sender but {why}; will retry"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    use mail_parser::decoders::base64::base64_decode;

    use crate::dkim::test_keys::{RSA_PKCS8, RSA_SPKI};

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
                inbound: false,
                dmarc_reject: false,
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

    /// Moves tokio's clock past the key check interval at once. Paused only for the jump: the
    /// store's I/O runs on real time, where a paused clock would skip ahead to its timeouts.
    async fn pass_the_check_interval() {
        tokio::time::pause();
        let interval = Duration::from_millis(Config::default().delivery.cache_ttl_ms);
        tokio::time::advance(interval + Duration::from_millis(1)).await;
        tokio::time::resume();
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
        pass_the_check_interval().await;
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
        pass_the_check_interval().await;
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
        pass_the_check_interval().await;
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
        pass_the_check_interval().await;
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
        pass_the_check_interval().await;
        assert!(matches!(
            f.signers.sign(&f.tenant, &message, "a@acme.test").await,
            Signing::Signed { .. }
        ));
    }
}
