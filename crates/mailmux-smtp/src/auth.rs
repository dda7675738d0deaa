//! AUTH PLAIN and AUTH LOGIN (RFC 4954), only under TLS and only on submission. A credential
//! maps a username to a tenant; success makes the session act for that tenant.
//!
//! A tenant's sessions are limited (`max_connections`): AUTH takes one of its places, and a
//! session over the limit is told 421 and closed.
//!
//! Failures are counted over a sliding window per username and client IP, and per client IP:
//! at a limit the session gets 421; a locked-out username is refused from that IP before its
//! password is looked at, a locked-out IP's new connections are turned away, until the window
//! moves on (the counting, the credential cache and the tenant places live in `guards.rs`).
//! The credential is checked again at every MAIL (mail.rs): revoking it ends open sessions.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use mailmux_core::credential::verify_secret;
use smtp_proto::{AUTH_LOGIN, AUTH_PLAIN};
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::{info, warn};

use crate::context::Listener;
use crate::guards::Lockout;
use crate::metrics::{Metrics, RejectReason};
use crate::reply::Reply;
use crate::session::{Flow, Identity, SaslStep, Session, State};

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
        // A locked-out username (or address) is refused before its password is looked at, and
        // the refusal is not another failure (see guards.rs).
        if let Some(lockout) = server.auth_failures.check(self.conn.peer.ip(), username) {
            return self.locked_out(lockout);
        }
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
        self.tenant_max_size = Some(server.policy.limits_for(&tenant).max_size);
        info!(tenant = %credential.tenant_id, username, "authenticated");
        self.identity = Identity::Authenticated {
            tenant_id: credential.tenant_id,
            username: username.to_string(),
            credential_id: credential.id,
        };
        self.reply(Reply::new(235, "2.7.0", "Authentication successful"))
    }

    async fn auth_failed(&mut self, username: &str) -> Flow {
        Metrics::add(&self.server.metrics().auth_failures);
        let lockout = self
            .server
            .auth_failures
            .record(self.conn.peer.ip(), username);
        warn!(username, ?lockout, "authentication failed");
        match lockout {
            Some(lockout) => self.locked_out(lockout),
            None => self.reject(
                RejectReason::Auth,
                Reply::new(535, "5.7.8", "Authentication credentials invalid"),
            ),
        }
    }

    /// 421 and close: the session's address, or this username from it, is locked out.
    fn locked_out(&mut self, lockout: Lockout) -> Flow {
        Metrics::add(&self.server.metrics().auth_lockouts);
        let text = match lockout {
            Lockout::Username => {
                "Too many authentication failures for this username from your address, \
                 try again later"
            }
            Lockout::Address => {
                "Too many authentication failures from your address, try again later"
            }
        };
        self.reject(RejectReason::Auth, Reply::new(421, "4.7.0", text));
        Flow::Close
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
}
