//! One SMTP conversation with one host, over lettre's low-level `AsyncSmtpConnection`.
//!
//! lettre gives us the greeting, EHLO (with the server's extensions), STARTTLS, AUTH and a
//! dot-stuffing body writer. Everything else is ours, because a relay needs what lettre's
//! `send` does not give: one reply per RCPT, DATA only when some recipient was accepted, the
//! end-of-data reply for the accepted recipients, and addresses lettre's `Address` type might
//! refuse (quoted local parts). Commands are written as plain lines through `command`.
//!
//! What lettre does and does not do, found by reading lettre 0.11.23 and by the tests:
//! - `message()` dot-stuffs a `.` at the start of a line, but only after CRLF: after a bare LF
//!   it does not. It never converts line endings, and it always appends `CRLF.CRLF`, even when
//!   the body already ends with CRLF. [`wire_body`] makes up for both.
//! - A 4xx/5xx reply to `command()` comes back as an `Err` carrying the code and the text;
//!   `command()` itself leaves the connection usable. `starttls()` and `ehlo()` close the
//!   connection on any error, so an opportunistic STARTTLS that fails means a new connection.
//! - Only 8BITMIME, SMTPUTF8, STARTTLS and AUTH are parsed from EHLO; nothing needs more.
//! - There is no timeout on commands; every exchange here runs under one, and a connection
//!   whose exchange timed out is never used again (its reply may still be on the way).
//!
//! Over 600 lines with its tests, on purpose: one conversation, read top to bottom in protocol
//! order (connect, EHLO, STARTTLS, AUTH, MAIL, RCPT, DATA), with the small pieces only it uses.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::time::Duration;

use lettre::transport::smtp::Error as SmtpError;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, CertificateStore, TlsParameters};
use lettre::transport::smtp::extension::{ClientId, Extension};
use lettre::transport::smtp::response::Response;
use mailmux_core::BodyFlags;
use mailmux_core::message_bytes::crlf_line_endings;
use mailmux_core::reply::Reply;
use tracing::{debug, warn};

use crate::error::{DeliveryError, Result};

/// RFC 5321 §4.5.3.2.6: wait at least 10 minutes for the reply to end of data; the server may
/// be filtering the message before it answers.
const DATA_END_TIMEOUT: Duration = Duration::from_secs(600);

/// QUIT is a courtesy: a server that does not answer it quickly is simply dropped.
const QUIT_TIMEOUT: Duration = Duration::from_secs(5);

/// How TLS is used with the next hop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TlsMode {
    /// STARTTLS when offered, certificate not checked (RFC 7435: encryption against passive
    /// eavesdroppers, which is all MX delivery without DANE/MTA-STS can have); plain text when
    /// not offered or when the handshake fails.
    Opportunistic,
    /// STARTTLS required, certificate checked against the web PKI roots.
    Starttls,
    /// TLS from the first byte (port 465 style), certificate checked.
    Implicit,
    /// Never TLS.
    None,
}

/// How sessions with one kind of next hop are held; built once at start-up.
#[derive(Clone)]
pub(crate) struct SessionPolicy {
    pub helo: ClientId,
    pub tls: TlsMode,
    pub credentials: Option<Credentials>,
    pub connect_timeout: Duration,
    pub command_timeout: Duration,
}

/// One address of one host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    /// The host's name: checked against its certificate when TLS is verified, and shown in
    /// replies, logs and DSNs.
    pub host: String,
    pub addr: SocketAddr,
}

impl Target {
    /// `mx.example.com[192.0.2.1]:25`, as Postfix writes it.
    pub(crate) fn label(&self) -> String {
        if self.host.parse::<std::net::IpAddr>().is_ok() {
            format!("[{}]:{}", self.addr.ip(), self.addr.port())
        } else {
            format!("{}[{}]:{}", self.host, self.addr.ip(), self.addr.port())
        }
    }
}

/// One message's transaction: an envelope and the bytes of the message.
pub(crate) struct Transaction<'a> {
    pub mail_from: &'a str,
    pub flags: BodyFlags,
    /// (recipient index in the message, address)
    pub recipients: Vec<(u32, &'a str)>,
    pub body: &'a [u8],
}

/// An open SMTP session, greeted and EHLO'd (and TLS'd and authenticated per the policy).
pub(crate) struct Connection {
    smtp: AsyncSmtpConnection,
    target: Target,
    label: String,
    command_timeout: Duration,
    /// Set when the conversation lost its footing (timeout, I/O error, 421): the connection
    /// must not be used again.
    broken: bool,
}

impl Connection {
    /// Connects to `target` and prepares the session as `policy` says.
    pub(crate) async fn open(target: &Target, policy: &SessionPolicy) -> Result<Connection> {
        let label = target.label();
        let mut conn = match policy.tls {
            TlsMode::None => Self::connect(target, policy, None).await?,
            TlsMode::Implicit => {
                let tls = verified_tls(target, &label)?;
                Self::connect(target, policy, Some(tls)).await?
            }
            TlsMode::Starttls => {
                let mut conn = Self::connect(target, policy, None).await?;
                if !conn.smtp.can_starttls() {
                    conn.quit().await;
                    return Err(DeliveryError::connection(
                        &label,
                        Reply::parse(
                            451,
                            format!("4.7.4 {label} does not offer STARTTLS, which is required"),
                        ),
                    ));
                }
                let tls = verified_tls(target, &label)?;
                conn.starttls(tls, policy).await?;
                conn
            }
            TlsMode::Opportunistic => {
                let mut conn = Self::connect(target, policy, None).await?;
                if conn.smtp.can_starttls() {
                    let tls = unverified_tls(target, &label)?;
                    if let Err(error) = conn.starttls(tls, policy).await {
                        // lettre has closed the connection. Opportunistic means plain text is
                        // acceptable; a server whose TLS is broken must still get its mail.
                        warn!(host = %label, %error, "STARTTLS failed; retrying without TLS");
                        conn = Self::connect(target, policy, None).await?;
                    }
                }
                conn
            }
        };
        if let Some(credentials) = &policy.credentials {
            conn.authenticate(credentials, policy.tls).await?;
        }
        debug!(host = %label, tls = conn.smtp.is_encrypted(), "connected");
        Ok(conn)
    }

    async fn connect(
        target: &Target,
        policy: &SessionPolicy,
        tls: Option<TlsParameters>,
    ) -> Result<Connection> {
        let label = target.label();
        let stage = if tls.is_some() {
            "TLS connection to"
        } else {
            "connection to"
        };
        // The whole set-up (TCP connect, greeting, EHLO, an implicit TLS handshake) is bounded,
        // or a silent server holds a worker forever.
        let setup = policy.connect_timeout + policy.command_timeout;
        let connecting = async {
            match tls {
                // Implicit TLS: lettre opens the socket and does the handshake itself.
                Some(tls) => AsyncSmtpConnection::connect_tokio1(
                    target.addr,
                    Some(policy.connect_timeout),
                    &policy.helo,
                    Some(tls),
                    None,
                )
                .await
                .map_err(|error| lettre_failure(&label, stage, &error)),
                // Plain (and later STARTTLS): our own socket, because lettre does not set
                // TCP_NODELAY, and with Nagle on the final "." of a message waits for the
                // peer's delayed ACK — about 40 ms per message per connection.
                None => {
                    let stream =
                        tokio::net::TcpStream::connect(target.addr)
                            .await
                            .map_err(|error| {
                                DeliveryError::connection(
                                    &label,
                                    Reply::parse(
                                        451,
                                        format!("4.4.1 {stage} {label} failed: {error}"),
                                    ),
                                )
                            })?;
                    let _ = stream.set_nodelay(true);
                    AsyncSmtpConnection::connect_with_transport(Box::new(stream), &policy.helo)
                        .await
                        .map_err(|error| lettre_failure(&label, stage, &error))
                }
            }
        };
        let smtp = match tokio::time::timeout(setup, connecting).await {
            Err(_) => {
                return Err(DeliveryError::connection(
                    &label,
                    Reply::parse(451, format!("4.4.1 connection to {label} timed out")),
                ));
            }
            Ok(result) => result?,
        };
        Ok(Connection {
            smtp,
            target: target.clone(),
            label,
            command_timeout: policy.command_timeout,
            broken: false,
        })
    }

    async fn starttls(&mut self, tls: TlsParameters, policy: &SessionPolicy) -> Result<()> {
        let label = self.label.clone();
        match tokio::time::timeout(
            policy.command_timeout * 2,
            self.smtp.starttls(tls, &policy.helo),
        )
        .await
        {
            Err(_) => {
                self.broken = true;
                Err(DeliveryError::connection(
                    &label,
                    Reply::parse(451, format!("4.4.2 STARTTLS with {label} timed out")),
                ))
            }
            Ok(Err(error)) => {
                self.broken = true;
                Err(lettre_failure(&label, "STARTTLS with", &error))
            }
            Ok(Ok(())) => Ok(()),
        }
    }

    async fn authenticate(&mut self, credentials: &Credentials, tls: TlsMode) -> Result<()> {
        let label = self.label.clone();
        // Credentials never travel in clear unless the operator said TLS is not wanted at all
        // (a relay on a trusted network): an opportunistic session that fell back to plain
        // text waits for a better moment instead.
        if !self.smtp.is_encrypted() && tls != TlsMode::None {
            return Err(DeliveryError::connection(
                &label,
                Reply::parse(
                    451,
                    format!("4.7.0 not sending credentials to {label} without TLS"),
                ),
            ));
        }
        let mechanisms = [Mechanism::Plain, Mechanism::Login];
        match tokio::time::timeout(
            self.command_timeout,
            self.smtp.auth(&mechanisms, credentials),
        )
        .await
        {
            Err(_) => {
                self.broken = true;
                Err(DeliveryError::connection(
                    &label,
                    Reply::parse(451, format!("4.4.2 AUTH with {label} timed out")),
                ))
            }
            // A refused login is the operator's to fix (wrong password, locked account), and
            // the mail is not at fault: transient, like Postfix's soft bounce for SASL.
            Ok(Err(error)) => Err(lettre_failure(&label, "AUTH with", &error)),
            Ok(Ok(_)) => Ok(()),
        }
    }

    /// The host this connection talks to.
    pub(crate) fn target(&self) -> &Target {
        &self.target
    }

    pub(crate) fn label(&self) -> &str {
        &self.label
    }

    pub(crate) fn is_encrypted(&self) -> bool {
        self.smtp.is_encrypted()
    }

    /// Whether the connection can carry another transaction.
    pub(crate) fn is_reusable(&self) -> bool {
        !self.broken && !self.smtp.has_broken()
    }

    /// RSET before a pooled connection carries another transaction: it both clears whatever
    /// state the last one left and proves the server is still there.
    pub(crate) async fn reset(&mut self) -> Result<()> {
        let reply = self.exchange("RSET\r\n".to_string()).await?;
        if reply.code() / 100 == 2 {
            Ok(())
        } else {
            self.broken = true;
            Err(DeliveryError::connection(&self.label, reply))
        }
    }

    /// Runs one transaction and returns each recipient's reply. `Err` means the session
    /// failed before the end of data (I/O, timeout, 421): nothing was delivered, and the
    /// caller may try another host. From the final dot on, every outcome is a reply, an
    /// unknown one included (see [`outcome_unknown`]).
    pub(crate) async fn deliver(&mut self, tx: &Transaction<'_>) -> Result<Vec<(u32, Reply)>> {
        let all = |reply: Reply| -> Vec<(u32, Reply)> {
            tx.recipients
                .iter()
                .map(|(idx, _)| (*idx, reply.clone()))
                .collect()
        };
        let label = self.label.clone();
        let needs_smtputf8 = tx.flags.smtputf8
            || !tx.mail_from.is_ascii()
            || tx.recipients.iter().any(|(_, a)| !a.is_ascii());
        let eight_bit = tx.flags.eight_bit || !tx.body.is_ascii();
        // No downgrade and no 8-bit to 7-bit conversion: either would change a message that
        // may be signed. A next hop that cannot take it as it is gets it never.
        if needs_smtputf8
            && !self
                .smtp
                .server_info()
                .supports_feature(Extension::SmtpUtfEight)
        {
            return Ok(all(Reply::parse(
                553,
                format!(
                    "5.6.7 {label} does not support SMTPUTF8, which this message needs \
                     (UTF-8 addresses or headers); it is not downgraded"
                ),
            )));
        }
        if eight_bit
            && !self
                .smtp
                .server_info()
                .supports_feature(Extension::EightBitMime)
        {
            return Ok(all(Reply::parse(
                554,
                format!(
                    "5.6.3 {label} does not support 8BITMIME and the message has 8-bit \
                     content; it is not converted"
                ),
            )));
        }
        if !is_safe_path(tx.mail_from) {
            return Ok(all(Reply::parse(553, "5.1.7 invalid sender address")));
        }

        let mut params = String::new();
        if eight_bit {
            params.push_str(" BODY=8BITMIME");
        }
        if needs_smtputf8 {
            params.push_str(" SMTPUTF8");
        }
        let reply = self
            .exchange(format!("MAIL FROM:<{}>{params}\r\n", tx.mail_from))
            .await?;
        if reply.code() / 100 != 2 {
            return Ok(all(reply));
        }

        let mut replies = Vec::with_capacity(tx.recipients.len());
        let mut accepted = Vec::with_capacity(tx.recipients.len());
        for (idx, address) in &tx.recipients {
            if !is_safe_path(address) {
                replies.push((*idx, Reply::parse(553, "5.1.3 invalid recipient address")));
                continue;
            }
            let reply = self.exchange(format!("RCPT TO:<{address}>\r\n")).await?;
            if reply.code() / 100 == 2 {
                accepted.push(*idx);
            } else {
                replies.push((*idx, reply));
            }
        }
        if accepted.is_empty() {
            // Nobody to send to; the transaction is left open and RSET clears it before reuse.
            return Ok(replies);
        }

        let reply = self.exchange("DATA\r\n".to_string()).await?;
        if reply.code() != 354 {
            if matches!(reply.code() / 100, 4 | 5) {
                replies.extend(accepted.iter().map(|idx| (*idx, reply.clone())));
                return Ok(replies);
            }
            self.broken = true;
            return Err(DeliveryError::connection(
                &label,
                Reply::parse(451, format!("4.5.0 {label} answered DATA with {reply}")),
            ));
        }
        let body = wire_body(tx.body);
        // From here on the message may have been taken: once the final dot is out, a reply that
        // never comes (timeout, reset, close) leaves the outcome unknown, and sending again at
        // once (another pooled connection, the next MX host) is how duplicates are made. So
        // whatever happens now is the recipients' outcome for this attempt; a lost reply
        // defers them to the normal retry schedule. lettre writes the body and the dot in one
        // call, so a failure while writing the body counts as after the dot too: a retry
        // interval costs less than a duplicate, which cannot be taken back.
        let reply = match tokio::time::timeout(
            DATA_END_TIMEOUT.max(self.command_timeout),
            self.smtp.message(&body),
        )
        .await
        {
            Err(_) => {
                self.broken = true;
                outcome_unknown(&label, "did not answer")
            }
            Ok(Ok(response)) => reply_from_response(&response),
            Ok(Err(error)) => match reply_from_error(&error) {
                Some(reply) => {
                    if reply.code() == 421 {
                        self.broken = true;
                    }
                    reply
                }
                None => {
                    self.broken = true;
                    outcome_unknown(&label, &format!("failed ({error})"))
                }
            },
        };
        replies.extend(accepted.iter().map(|idx| (*idx, reply.clone())));
        replies.sort_by_key(|(idx, _)| *idx);
        Ok(replies)
    }

    /// Says goodbye and closes.
    pub(crate) async fn quit(mut self) {
        if self.is_reusable() {
            let _ = tokio::time::timeout(QUIT_TIMEOUT, self.smtp.quit()).await;
        }
    }

    /// Sends one command line and reads its reply. A 4xx/5xx reply is a value; `Err` is
    /// for a session that failed (and 421, the server's "I am closing this session").
    async fn exchange(&mut self, line: String) -> Result<Reply> {
        let verb = line.split([' ', '\r']).next().unwrap_or("").to_string();
        match tokio::time::timeout(self.command_timeout, self.smtp.command(line)).await {
            Err(_) => {
                self.broken = true;
                let label = &self.label;
                Err(DeliveryError::connection(
                    label,
                    Reply::parse(451, format!("4.4.2 {label} did not answer {verb}")),
                ))
            }
            Ok(result) => self.reply_of(result, &format!("{verb} to")),
        }
    }

    fn reply_of(
        &mut self,
        result: std::result::Result<Response, SmtpError>,
        stage: &str,
    ) -> Result<Reply> {
        let reply = match result {
            Ok(response) => reply_from_response(&response),
            Err(error) => match reply_from_error(&error) {
                Some(reply) => reply,
                None => {
                    self.broken = true;
                    return Err(lettre_failure(&self.label, stage, &error));
                }
            },
        };
        if reply.code() == 421 {
            self.broken = true;
            return Err(DeliveryError::connection(&self.label, reply));
        }
        Ok(reply)
    }
}

/// The reply recorded for recipients whose end-of-data reply was lost.
fn outcome_unknown(label: &str, what_happened: &str) -> Reply {
    Reply::parse(
        451,
        format!(
            "4.4.2 outcome unknown: {label} {what_happened} after the end of data; the message \
             may have been delivered, so it is not sent again before the next retry"
        ),
    )
}

/// The body as lettre's `message()` must get it for the bytes to arrive unchanged (apart from
/// transparency, which lettre adds and the server removes):
/// - a bare CR or LF becomes CRLF: RFC 5321 §2.3.8 allows no other line ending on the wire,
///   and lettre would not stuff a `.` after a bare LF, which is the shape of SMTP smuggling
///   (`\n.\n`). Bodies from our own listeners are CRLF already and are not copied;
/// - the body's final CRLF is left to lettre, which always ends with `CRLF.CRLF`.
pub(crate) fn wire_body(body: &[u8]) -> Cow<'_, [u8]> {
    match crlf_line_endings(body) {
        Cow::Borrowed(b) => Cow::Borrowed(b.strip_suffix(b"\r\n").unwrap_or(b)),
        Cow::Owned(mut v) => {
            if v.ends_with(b"\r\n") {
                v.truncate(v.len() - 2);
            }
            Cow::Owned(v)
        }
    }
}

/// An address may go into a command line: no control characters, so none can end the line
/// early and smuggle in a command of its own.
fn is_safe_path(address: &str) -> bool {
    !address.chars().any(|c| c.is_control())
}

fn reply_from_response(response: &Response) -> Reply {
    let text = response.message().collect::<Vec<_>>().join(" ");
    Reply::parse(code_number(response.code()), text)
}

/// lettre turns 4xx/5xx replies into errors; this takes the reply back out.
fn reply_from_error(error: &SmtpError) -> Option<Reply> {
    let code = error.status()?;
    let text = std::error::Error::source(error)
        .map(|source| source.to_string())
        .unwrap_or_default();
    Some(Reply::parse(code_number(code), text))
}

fn code_number(code: lettre::transport::smtp::response::Code) -> u16 {
    code.to_string().parse().unwrap_or(451)
}

/// A lettre failure as a connection-level error.
fn lettre_failure(label: &str, stage: &str, error: &SmtpError) -> DeliveryError {
    if let Some(reply) = reply_from_error(error) {
        return DeliveryError::connection(label, reply);
    }
    // lettre reports a failed handshake as a connection error, not a TLS one: the stage
    // tells them apart.
    let enhanced = if error.is_tls() || stage.contains("TLS") {
        "4.7.5" // cryptographic failure
    } else if error.is_timeout() {
        "4.4.1"
    } else {
        "4.4.2"
    };
    // lettre's Display leaves out nested causes ("tls error"); the chain says what failed.
    let mut why = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        let text = cause.to_string();
        if !why.contains(&text) {
            why.push_str(": ");
            why.push_str(&text);
        }
        source = cause.source();
    }
    DeliveryError::connection(
        label,
        Reply::parse(451, format!("{enhanced} {stage} {label} failed: {why}")),
    )
}

fn verified_tls(target: &Target, label: &str) -> Result<TlsParameters> {
    TlsParameters::builder(target.host.clone())
        .build_rustls()
        .map_err(|error| lettre_failure(label, "TLS setup for", &error))
}

fn unverified_tls(target: &Target, label: &str) -> Result<TlsParameters> {
    // Nothing is verified, so no root store is loaded either.
    TlsParameters::builder(target.host.clone())
        .certificate_store(CertificateStore::None)
        .dangerous_accept_invalid_certs(true)
        .dangerous_accept_invalid_hostnames(true)
        .build_rustls()
        .map_err(|error| lettre_failure(label, "TLS setup for", &error))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_body_keeps_crlf_bodies_and_fixes_the_rest() {
        let table: [(&[u8], &[u8]); 9] = [
            (b"a\r\nb\r\n", b"a\r\nb"),
            (b"a\r\nb", b"a\r\nb"),
            (b".a\r\n..b\r\n", b".a\r\n..b"),
            (b"a\nb\n", b"a\r\nb"),
            (b"a\n.\nb\r\n", b"a\r\n.\r\nb"),
            (b"a\rb\r\n", b"a\r\nb"),
            (b"\xc3\xa9t\xc3\xa9\r\n", b"\xc3\xa9t\xc3\xa9"),
            (b"\r\n", b""),
            (b"a\r\n\r\n", b"a\r\n"),
        ];
        for (input, want) in table {
            assert_eq!(
                &*wire_body(input),
                want,
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
        assert!(matches!(wire_body(b"x\r\ny\r\n"), Cow::Borrowed(_)));
    }

    #[test]
    fn control_characters_never_reach_a_command_line() {
        assert!(is_safe_path("bob@example.com"));
        assert!(is_safe_path("\"john doe\"@example.com"));
        assert!(is_safe_path("jös@bücher.example"));
        assert!(is_safe_path(""));
        assert!(!is_safe_path("bob@x\r\nRCPT TO:<evil@y>"));
        assert!(!is_safe_path("bob\0@x"));
    }

    #[test]
    fn labels_name_host_and_address() {
        let target = Target {
            host: "mx.example.test".into(),
            addr: "127.0.0.2:25".parse().unwrap(),
        };
        assert_eq!(target.label(), "mx.example.test[127.0.0.2]:25");
        let target = Target {
            host: "127.0.0.9".into(),
            addr: "127.0.0.9:2525".parse().unwrap(),
        };
        assert_eq!(target.label(), "[127.0.0.9]:2525");
    }
}
