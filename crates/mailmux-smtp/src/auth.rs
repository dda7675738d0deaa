//! AUTH PLAIN and AUTH LOGIN (RFC 4954), only under TLS and only on submission. A credential
//! maps a username to a tenant; success makes the session act for that tenant.
//!
//! A tenant's sessions are limited (`max_connections`): AUTH takes one of its places, and a
//! session over the limit is told 421 and closed.
//!
//! Failures are counted per client IP over a sliding window; at the limit the session gets
//! 421 and new connections from that IP are turned away until the window moves on, so a
//! password guesser gets a handful of tries per window, not thousands.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use mailmux_core::Credential;
use mailmux_core::credential::verify_secret;
use mailmux_core::sync::lock;
use mailmux_store::Store;
use smtp_proto::{AUTH_LOGIN, AUTH_PLAIN};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tracing::{info, warn};

use crate::metrics::{Metrics, RejectReason};
use crate::reply::Reply;
use crate::server::Listener;
use crate::session::{Flow, Identity, Session, State};

/// Where an AUTH exchange stands between the client's lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SaslStep {
    /// `334 ` sent for PLAIN: waiting for authzid NUL authcid NUL password.
    Plain,
    /// `334 Username:` sent.
    LoginUser,
    /// `334 Password:` sent.
    LoginPassword { username: String },
}

/// base64 of "Username:" and "Password:", the de-facto LOGIN prompts.
const LOGIN_USERNAME: &str = "VXNlcm5hbWU6";
const LOGIN_PASSWORD: &str = "UGFzc3dvcmQ6";

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    pub(crate) async fn handle_auth(&mut self, mechanism: u64, initial: &str) -> Flow {
        if self.conn.listener == Listener::Mx {
            return self.reject(
                RejectReason::Protocol,
                Reply::new(503, "5.5.1", "AUTH is not available on this port"),
            );
        }
        if !self.conn.tls {
            return self.reject(
                RejectReason::Auth,
                Reply::new(
                    538,
                    "5.7.11",
                    "Encryption required for requested authentication mechanism",
                ),
            );
        }
        let sequence_error = if self.helo.is_none() {
            Some("Send EHLO first")
        } else if self.identity.is_authenticated() {
            Some("Already authenticated")
        } else if self.tx.is_some() {
            Some("AUTH is not allowed during a mail transaction")
        } else {
            None
        };
        if let Some(text) = sequence_error {
            return self.reject(RejectReason::Protocol, Reply::new(503, "5.5.1", text));
        }
        match mechanism {
            AUTH_PLAIN if initial.is_empty() => {
                self.state = State::Sasl(SaslStep::Plain);
                self.reply(Reply::bare(334, ""))
            }
            AUTH_PLAIN => match decode(initial) {
                Some(response) => self.auth_plain(&response).await,
                None => self.bad_base64(),
            },
            AUTH_LOGIN if initial.is_empty() => {
                self.state = State::Sasl(SaslStep::LoginUser);
                self.reply(Reply::bare(334, LOGIN_USERNAME))
            }
            AUTH_LOGIN => match decode(initial).and_then(|u| String::from_utf8(u).ok()) {
                Some(username) => {
                    self.state = State::Sasl(SaslStep::LoginPassword { username });
                    self.reply(Reply::bare(334, LOGIN_PASSWORD))
                }
                None => self.bad_base64(),
            },
            _ => self.reject(
                RejectReason::Protocol,
                Reply::new(
                    504,
                    "5.5.4",
                    "Unrecognized authentication type; use PLAIN or LOGIN",
                ),
            ),
        }
    }

    /// The client's answer to a `334` challenge.
    pub(crate) async fn handle_sasl(&mut self, step: SaslStep, line: &[u8]) -> Flow {
        let line = line.trim_ascii_end();
        if line == b"*" {
            return self.reject(
                RejectReason::Auth,
                Reply::new(501, "5.0.0", "Authentication cancelled"),
            );
        }
        let Some(response) = std::str::from_utf8(line).ok().and_then(decode) else {
            return self.bad_base64();
        };
        match step {
            SaslStep::Plain => self.auth_plain(&response).await,
            SaslStep::LoginUser => match String::from_utf8(response) {
                Ok(username) => {
                    self.state = State::Sasl(SaslStep::LoginPassword { username });
                    self.reply(Reply::bare(334, LOGIN_PASSWORD))
                }
                Err(_) => self.auth_failed("-").await,
            },
            SaslStep::LoginPassword { username } => match String::from_utf8(response) {
                Ok(password) => self.authenticate(&username, &password).await,
                Err(_) => self.auth_failed(&username).await,
            },
        }
    }

    /// PLAIN: `authzid NUL authcid NUL password` (RFC 4616). Acting for another identity
    /// (a different authzid) is not supported.
    async fn auth_plain(&mut self, response: &[u8]) -> Flow {
        let parts: Vec<&[u8]> = response.split(|b| *b == 0).collect();
        let [authzid, authcid, password] = parts[..] else {
            return self.auth_failed("-").await;
        };
        let (Ok(authzid), Ok(username), Ok(password)) = (
            std::str::from_utf8(authzid),
            std::str::from_utf8(authcid),
            std::str::from_utf8(password),
        ) else {
            return self.auth_failed("-").await;
        };
        if !authzid.is_empty() && authzid != username {
            return self.auth_failed(username).await;
        }
        self.authenticate(username, password).await
    }

    async fn authenticate(&mut self, username: &str, password: &str) -> Flow {
        let server = self.server.clone();
        let credential = match server.credentials.lookup(&server.store, username).await {
            Ok(credential) => credential,
            Err(error) => return self.auth_unavailable(error),
        };
        // Revoked credentials and wrong passwords read the same to the client.
        let Some(credential) = credential
            .filter(|c| c.revoked_at.is_none() && verify_secret(password, &c.secret_hash))
        else {
            return self.auth_failed(username).await;
        };
        let tenant = match server.store.get_tenant(&credential.tenant_id).await {
            Ok(Some(tenant)) => tenant,
            Ok(None) => return self.auth_failed(username).await,
            Err(error) => return self.auth_unavailable(error),
        };
        // The tenant's concurrent-session limit, as read now: the place is held until the
        // session ends.
        let max = tenant.limits.max_connections;
        let Some(place) = server.tenant_sessions.try_open(&tenant.id, max) else {
            self.refuse(crate::policy::tenant_sessions_exceeded(max));
            return Flow::Close;
        };
        self.tenant_session = Some(place);
        info!(tenant = %credential.tenant_id, username, "authenticated");
        self.identity = Identity::Authenticated {
            tenant_id: credential.tenant_id,
            username: username.to_string(),
        };
        self.reply(Reply::new(235, "2.7.0", "Authentication successful"))
    }

    async fn auth_failed(&mut self, username: &str) -> Flow {
        Metrics::add(&self.server.metrics().auth_failures);
        let failures = self.server.auth_failures.record(self.conn.peer.ip());
        warn!(username, failures, "authentication failed");
        if self.server.auth_failures.reached(failures) {
            self.reject(
                RejectReason::Auth,
                Reply::new(
                    421,
                    "4.7.0",
                    "Too many authentication failures, try again later",
                ),
            );
            return Flow::Close;
        }
        self.reject(
            RejectReason::Auth,
            Reply::new(535, "5.7.8", "Authentication credentials invalid"),
        )
    }

    fn auth_unavailable(&mut self, error: mailmux_store::StoreError) -> Flow {
        warn!(%error, "credential lookup failed");
        self.reject(
            RejectReason::Storage,
            Reply::new(
                454,
                "4.7.0",
                "Temporary authentication failure, try again later",
            ),
        )
    }

    fn bad_base64(&mut self) -> Flow {
        self.reject(
            RejectReason::Protocol,
            Reply::new(501, "5.5.2", "Invalid base64 data"),
        )
    }
}

/// A SASL response: base64, where `=` stands for an empty one (RFC 4954 §4).
fn decode(text: &str) -> Option<Vec<u8>> {
    match text.trim() {
        "=" => Some(Vec::new()),
        text => STANDARD.decode(text).ok(),
    }
}

/// How long a credential read from the store may be reused. Revocation must bite within a
/// second, so this is the longest a revoked credential can still authenticate.
const CREDENTIAL_TTL: Duration = Duration::from_secs(1);

/// Above this many cached usernames, stale entries are swept on insert.
const CACHE_SWEEP: usize = 10_000;

/// A short-lived cache of credentials by username: a burst of connections from one app
/// costs one query, not one per connection. Only found credentials are cached, so a newly
/// created one works at once.
#[derive(Default)]
pub(crate) struct CredentialCache {
    entries: Mutex<HashMap<String, (Instant, Credential)>>,
}

impl CredentialCache {
    pub(crate) async fn lookup(
        &self,
        store: &Store,
        username: &str,
    ) -> mailmux_store::Result<Option<Credential>> {
        {
            let entries = lock(&self.entries);
            if let Some((at, credential)) = entries.get(username)
                && at.elapsed() < CREDENTIAL_TTL
            {
                return Ok(Some(credential.clone()));
            }
        }
        let found = store.find_credential(username).await?;
        if let Some(credential) = &found {
            let mut entries = lock(&self.entries);
            if entries.len() >= CACHE_SWEEP {
                entries.retain(|_, (at, _)| at.elapsed() < CREDENTIAL_TTL);
            }
            entries.insert(username.to_string(), (Instant::now(), credential.clone()));
        }
        Ok(found)
    }
}

/// Failed AUTH attempts per client IP within a sliding window.
pub(crate) struct AuthFailures {
    /// 0 turns the lockout off.
    limit: u32,
    window: Duration,
    by_ip: Mutex<HashMap<IpAddr, VecDeque<Instant>>>,
}

impl AuthFailures {
    pub(crate) fn new(limit: u32, window: Duration) -> AuthFailures {
        AuthFailures {
            limit,
            window,
            by_ip: Mutex::new(HashMap::new()),
        }
    }

    /// Records a failure now; returns the failures within the window, this one included.
    pub(crate) fn record(&self, ip: IpAddr) -> u32 {
        let now = Instant::now();
        let mut by_ip = lock(&self.by_ip);
        if by_ip.len() >= CACHE_SWEEP {
            by_ip.retain(|_, times| times.back().is_some_and(|t| now - *t < self.window));
        }
        let times = by_ip.entry(ip).or_default();
        times.push_back(now);
        prune(times, now, self.window, self.limit);
        times.len() as u32
    }

    pub(crate) fn reached(&self, failures: u32) -> bool {
        self.limit > 0 && failures >= self.limit
    }

    /// Whether `ip` is over the limit now (new connections are refused).
    pub(crate) fn locked_out(&self, ip: IpAddr) -> bool {
        if self.limit == 0 {
            return false;
        }
        let now = Instant::now();
        let mut by_ip = lock(&self.by_ip);
        let Some(times) = by_ip.get_mut(&ip) else {
            return false;
        };
        prune(times, now, self.window, self.limit);
        if times.is_empty() {
            by_ip.remove(&ip);
            return false;
        }
        self.reached(times.len() as u32)
    }
}

/// Drops failures older than the window; keeps at most `limit` (all that the decision needs).
fn prune(times: &mut VecDeque<Instant>, now: Instant, window: Duration, limit: u32) {
    while times.front().is_some_and(|t| now - *t >= window) {
        times.pop_front();
    }
    while times.len() > limit.max(1) as usize {
        times.pop_front();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sasl_responses_decode() {
        let cases = [
            ("AGJvYgBzZWNyZXQ=", Some(&b"\0bob\0secret"[..])),
            ("=", Some(&b""[..])),
            (" dXNlcg== ", Some(&b"user"[..])),
            ("not base64!", None),
        ];
        for (text, want) in cases {
            assert_eq!(decode(text).as_deref(), want, "{text}");
        }
    }

    // Paused time: the window is advanced past, not waited out.
    #[tokio::test(start_paused = true)]
    async fn failures_lock_out_an_ip_within_the_window_only() {
        let failures = AuthFailures::new(3, Duration::from_millis(200));
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        assert_eq!(failures.record(ip), 1);
        assert_eq!(failures.record(ip), 2);
        assert!(!failures.locked_out(ip));
        assert_eq!(failures.record(ip), 3);
        assert!(failures.reached(3));
        assert!(failures.locked_out(ip));
        assert!(!failures.locked_out(other));
        tokio::time::advance(Duration::from_millis(250)).await;
        assert!(!failures.locked_out(ip));
        assert_eq!(failures.record(ip), 1);
        let off = AuthFailures::new(0, Duration::from_secs(60));
        off.record(ip);
        assert!(!off.locked_out(ip) && !off.reached(100));
    }
}
