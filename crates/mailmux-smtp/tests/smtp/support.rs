//! Test fixture: a real SQLite store in a temp dir, a real queue, a tenant with a verified
//! and an unverified domain and a credential, another tenant with its own domain, a server
//! with a generated certificate, and a line-oriented SMTP client over any stream.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use mailmux_core::credential::{generate_secret, hash_secret, random_id};
use mailmux_core::{Config, Credential, Domain, Tenant, Tier, now_ms};
use mailmux_queue::{Jobs, Queue};
use mailmux_smtp::{Listener, Server};
use mailmux_store::Store;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, DuplexStream};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

pub const HOSTNAME: &str = "relay.test";
pub const DOMAIN: &str = "acme.test";
pub const UNVERIFIED: &str = "pending.test";
pub const OTHER_DOMAIN: &str = "other.test";
/// Peers in this network are trusted (act as the tenant without AUTH).
pub const TRUSTED_PEER: &str = "10.1.2.3:40000";
pub const MAX_SIZE: u64 = 4096;
pub const MAX_RECIPIENTS: usize = 3;
pub const AUTH_FAILURE_LIMIT: u32 = 3;
/// Failures from one address over all usernames before the address is locked out.
pub const AUTH_FAILURE_IP_LIMIT: u32 = 7;

pub struct Fixture {
    pub dir: PathBuf,
    pub store: Store,
    /// Reads queued messages back with their bodies (from the spool).
    pub queue: Arc<Queue>,
    /// Kept so the queue can hand messages to "delivery" (nobody takes them here).
    _jobs: Jobs,
    pub server: Arc<Server>,
    pub tenant: Tenant,
    pub username: String,
    pub password: String,
    pub credential_id: String,
    tls_client: TlsConnector,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The configuration the tests run under; `adjust` changes it before the server starts.
pub fn test_config(tenant_id: &str) -> Config {
    let mut config = Config::default();
    config.smtp.hostname = HOSTNAME.into();
    config.smtp.submission = "127.0.0.1:0".parse().unwrap();
    config.smtp.submission_tls = "127.0.0.1:0".parse().unwrap();
    config.smtp.mx = "127.0.0.1:0".parse().unwrap();
    config.smtp.max_message_size = MAX_SIZE;
    config.smtp.max_recipients = MAX_RECIPIENTS;
    config.smtp.auth_failure_limit = AUTH_FAILURE_LIMIT;
    config.smtp.auth_failure_ip_limit = AUTH_FAILURE_IP_LIMIT;
    config.smtp.auth_failure_window_secs = 60;
    config.smtp.trusted_networks = vec!["10.0.0.0/8".parse().unwrap()];
    config.smtp.default_tenant = Some(tenant_id.to_string());
    // No DNS here: the MX's authentication checks need a resolver, and tests never leave
    // loopback. tests/inbound.rs checks them against a loopback DNS server.
    config.inbound.verify_auth = false;
    config
}

impl Fixture {
    pub async fn new() -> Fixture {
        Fixture::with_config(|_| {}).await
    }

    pub async fn with_config(adjust: impl FnOnce(&mut Config)) -> Fixture {
        let dir = std::env::temp_dir().join(random_id("mailmux-smtp-test-", 16));
        let url = format!("sqlite://{}/t.db", dir.display());
        let store = Store::connect(&url, 4).await.unwrap();
        store.migrate().await.unwrap();

        let now = now_ms();
        let mut tenant = Tenant::new(random_id("t_", 16), "acme".into(), Tier::Starter, now);
        // Some tests run hundreds of transactions in a second; the rate limits have their own
        // tests (policy.rs), which set them.
        tenant.limits.rate_per_second = 0;
        tenant.limits.rate_per_minute = 0;
        store.create_tenant(&tenant, None).await.unwrap();
        let other = Tenant::new(random_id("t_", 16), "other".into(), Tier::Starter, now);
        store.create_tenant(&other, None).await.unwrap();
        for (name, owner, verified) in [
            (DOMAIN, &tenant.id, true),
            (UNVERIFIED, &tenant.id, false),
            (OTHER_DOMAIN, &other.id, true),
        ] {
            store
                .add_domain(&Domain {
                    name: name.into(),
                    tenant_id: owner.clone(),
                    verified,
                    verified_by: verified.then(|| "operator".into()),
                    verification_token: random_id("", 16),
                    created_at: now,
                    inbound: false,
                    dmarc_reject: false,
                })
                .await
                .unwrap();
        }
        let password = generate_secret();
        let credential = Credential {
            id: random_id("c_", 16),
            tenant_id: tenant.id.clone(),
            username: random_id("u_", 12),
            secret_hash: hash_secret(&password),
            created_at: now,
            revoked_at: None,
            rate_per_second: None,
            rate_per_minute: None,
        };
        store.create_credential(&credential, 0, None).await.unwrap();

        let mut config = test_config(&tenant.id);
        adjust(&mut config);
        let (queue, jobs) = Queue::start(
            store.clone(),
            "n_test".into(),
            &dir,
            &config.queue,
            &config.delivery,
            &mailmux_core::health::Health::default(),
        )
        .await
        .unwrap();
        let (server_tls, tls_client) = tls_pair();
        let server = Server::new(Arc::new(config), store.clone(), queue.clone(), server_tls);
        Fixture {
            dir,
            store,
            queue,
            _jobs: jobs,
            server,
            tenant,
            username: credential.username,
            password,
            credential_id: credential.id,
            tls_client,
        }
    }

    /// A session over an in-memory pipe, as if from `peer` on `listener`.
    pub fn connect(&self, listener: Listener, peer: &str) -> Client<DuplexStream> {
        let (client, server_end) = tokio::io::duplex(256 * 1024);
        let peer: SocketAddr = peer.parse().unwrap();
        tokio::spawn(
            self.server
                .clone()
                .serve_connection(server_end, peer, listener),
        );
        Client::new(client)
    }

    /// TLS client side of a stream (implicit TLS, or after STARTTLS).
    pub async fn tls<S>(&self, stream: S) -> TlsStream<S>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let name = ServerName::try_from(HOSTNAME).unwrap();
        self.tls_client.connect(name, stream).await.unwrap()
    }

    /// Greeting read, TLS up (implicit TLS port), EHLO sent.
    pub async fn connect_tls(&self, peer: &str) -> Client<TlsStream<DuplexStream>> {
        let (client, server_end) = tokio::io::duplex(256 * 1024);
        let peer: SocketAddr = peer.parse().unwrap();
        tokio::spawn(self.server.clone().serve_connection(
            server_end,
            peer,
            Listener::SubmissionTls,
        ));
        let mut client = Client::new(self.tls(client).await);
        client.reply().await.expect_code(220);
        client.cmd("EHLO client.test").await.expect_code(250);
        client
    }

    /// Like [`Fixture::connect_tls`], and authenticated with the fixture's credential.
    pub async fn authenticated(&self, peer: &str) -> Client<TlsStream<DuplexStream>> {
        let mut client = self.connect_tls(peer).await;
        let reply = client
            .cmd(&auth_plain(&self.username, &self.password))
            .await;
        reply.expect(235, "2.7.0");
        client
    }

    pub async fn update_tenant(&self, change: impl FnOnce(&mut Tenant)) {
        let mut tenant = self
            .store
            .get_tenant(&self.tenant.id)
            .await
            .unwrap()
            .unwrap();
        change(&mut tenant);
        self.store.update_tenant(&tenant, None).await.unwrap();
    }

    pub async fn messages_today(&self) -> u64 {
        self.store
            .count_messages_since(&self.tenant.id, now_ms() - 86_400_000)
            .await
            .unwrap()
    }
}

/// Moves tokio's clock `by` ahead at once, and lets it run on from there: what a test of a
/// cache's lifetime or a lockout window needs instead of waiting. The clock stands still only
/// for the jump: the store and the queue work on threads of their own, and a clock paused
/// while they work would jump ahead by itself (to the next timer, e.g. a read timeout).
pub async fn skip_time(by: Duration) {
    tokio::time::pause();
    tokio::time::advance(by).await;
    tokio::time::resume();
}

pub fn auth_plain(username: &str, password: &str) -> String {
    let token =
        base64::engine::general_purpose::STANDARD.encode(format!("\0{username}\0{password}"));
    format!("AUTH PLAIN {token}")
}

pub fn b64(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text)
}

/// A self-signed certificate for [`HOSTNAME`]: the server's config and a client that trusts it.
fn tls_pair() -> (Arc<rustls::ServerConfig>, TlsConnector) {
    let generated = rcgen::generate_simple_self_signed(vec![HOSTNAME.to_string()]).unwrap();
    let cert: CertificateDer<'static> = generated.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        generated.signing_key.serialize_der(),
    ));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    (Arc::new(server), TlsConnector::from(Arc::new(client)))
}

/// One SMTP reply as the client read it.
#[derive(Debug, Clone)]
pub struct Reply {
    pub code: u16,
    /// Text of each line, without the code and separator.
    pub lines: Vec<String>,
}

impl Reply {
    pub fn text(&self) -> String {
        self.lines.join("\n")
    }

    /// The enhanced status code of the first line.
    pub fn status(&self) -> &str {
        self.lines[0].split(' ').next().unwrap_or("")
    }

    #[track_caller]
    pub fn expect_code(&self, code: u16) -> &Self {
        assert_eq!(self.code, code, "unexpected reply: {self:?}");
        self
    }

    #[track_caller]
    pub fn expect(&self, code: u16, status: &str) -> &Self {
        assert_eq!(
            (self.code, self.status()),
            (code, status),
            "unexpected reply: {self:?}"
        );
        self
    }

    #[track_caller]
    pub fn expect_text(&self, needle: &str) -> &Self {
        assert!(
            self.text().contains(needle),
            "reply {self:?} lacks {needle:?}"
        );
        self
    }
}

const READ_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Client<S> {
    stream: BufReader<S>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    pub fn new(stream: S) -> Client<S> {
        Client {
            stream: BufReader::new(stream),
        }
    }

    pub async fn send(&mut self, data: impl AsRef<[u8]>) {
        let stream = self.stream.get_mut();
        stream.write_all(data.as_ref()).await.unwrap();
        stream.flush().await.unwrap();
    }

    /// Reads one (possibly multi-line) reply.
    pub async fn reply(&mut self) -> Reply {
        let mut lines = Vec::new();
        loop {
            let line = self
                .line(READ_TIMEOUT)
                .await
                .unwrap_or_else(|| panic!("no reply line (after {lines:?})"));
            assert!(line.len() >= 4, "short reply line {line:?}");
            let code: u16 = line[..3].parse().expect("reply code");
            lines.push(line[4..].to_string());
            if &line[3..4] == " " {
                return Reply { code, lines };
            }
        }
    }

    pub async fn cmd(&mut self, line: &str) -> Reply {
        self.send(format!("{line}\r\n")).await;
        self.reply().await
    }

    /// A line (CRLF removed), or None on EOF / timeout.
    async fn line(&mut self, wait: Duration) -> Option<String> {
        let mut line = String::new();
        match tokio::time::timeout(wait, self.stream.read_line(&mut line)).await {
            Ok(Ok(n)) if n > 0 => Some(line.trim_end_matches(['\r', '\n']).to_string()),
            _ => None,
        }
    }

    /// Whether the server closed the connection (EOF or reset) within a few seconds.
    pub async fn is_closed(&mut self) -> bool {
        let mut line = String::new();
        match tokio::time::timeout(Duration::from_secs(5), self.stream.read_line(&mut line)).await {
            Ok(Ok(0)) | Ok(Err(_)) => true,
            Ok(Ok(_)) => panic!("expected the connection closed, got {line:?}"),
            Err(_) => false,
        }
    }

    /// Whether nothing at all arrives within `wait`.
    pub async fn silent_for(&mut self, wait: Duration) -> bool {
        self.line(wait).await.is_none()
    }

    /// The bare stream (for a TLS upgrade); nothing may be buffered.
    pub fn into_inner(self) -> S {
        assert!(
            self.stream.buffer().is_empty(),
            "server sent bytes before the handshake: {:?}",
            String::from_utf8_lossy(self.stream.buffer())
        );
        self.stream.into_inner()
    }

    /// MAIL, RCPTs and DATA, each expected to succeed.
    pub async fn start_message(&mut self, from: &str, to: &[&str]) {
        self.cmd(&format!("MAIL FROM:<{from}>"))
            .await
            .expect(250, "2.1.0");
        for rcpt in to {
            self.cmd(&format!("RCPT TO:<{rcpt}>"))
                .await
                .expect(250, "2.1.5");
        }
        self.cmd("DATA").await.expect_code(354);
    }

    /// A whole transaction with a simple message; returns the reply to the end of data.
    pub async fn send_message(&mut self, from: &str, to: &[&str], body: &str) -> Reply {
        self.start_message(from, to).await;
        self.send(format!("{body}.\r\n")).await;
        self.reply().await
    }
}

/// A small valid message from `from`, with the Date: and Message-ID: a submission server would
/// otherwise add (so that what is stored ends with it, byte for byte).
pub fn message(from: &str) -> String {
    format!(
        "From: Sender <{from}>\r\nTo: bob@example.org\r\nSubject: hi\r\n\
         Date: Mon, 23 Nov 2026 12:00:00 +0000\r\nMessage-ID: <hi@acme.test>\r\n\r\nHello.\r\n"
    )
}

/// [`message`] without Date: and Message-ID:, as many applications write it.
pub fn bare_message(from: &str) -> String {
    format!("From: Sender <{from}>\r\nTo: bob@example.org\r\nSubject: hi\r\n\r\nHello.\r\n")
}

/// The queue id in a `250 2.0.0 Ok: queued as <id>` reply.
pub fn queued_id(reply: &Reply) -> String {
    reply.expect(250, "2.0.0");
    reply
        .text()
        .rsplit(' ')
        .next()
        .expect("queue id")
        .to_string()
}
