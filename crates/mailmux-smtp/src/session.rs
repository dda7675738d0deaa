//! One SMTP session: its state, the read loop and the dispatch to the verb handlers.
//!
//! The loop works on a buffer: it handles every complete command (or body bytes) already
//! read, queueing the replies, and only when the buffer is drained does it write the replies
//! out and wait for more. A pipelining client (RFC 2920) thus gets all its replies, in
//! order, in as few writes as possible. Every wait on the client is bounded: per command, per
//! DATA/BDAT read, per write of our replies, and for the whole session. (The wait for the
//! queue's commit is not: answering 451 while the commit may still succeed would invite a
//! duplicate.)

use std::net::SocketAddr;
use std::sync::Arc;

use mailmux_core::{BodyFlags, QueueId, Tenant, TenantId};
use mailmux_policy::MessageLimits;
use smtp_proto::Request;
use smtp_proto::request::receiver::BdatReceiver;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::context::{Listener, Server};
use crate::data_decoder::DataDecoder;
use crate::error::{Result, SmtpError};
use crate::guards::TenantSession;
use crate::input::{Input, LineTooLong};
use crate::metrics::RejectReason;
use crate::policy::Refusal;
use crate::reply::Reply;

/// RFC 5321 §4.5.3.1.4: a command line is at most 512 octets, CRLF included.
pub(crate) const MAX_COMMAND_LINE: usize = 512;

/// Bytes asked of the socket per read.
const READ_CHUNK: usize = 16 * 1024;

/// Facts about the connection that outlive a STARTTLS upgrade.
#[derive(Debug, Clone)]
pub(crate) struct Conn {
    pub peer: SocketAddr,
    pub listener: Listener,
    pub tls: bool,
    /// `smtp.session_timeout_secs` after the connection was accepted.
    pub deadline: Instant,
}

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

/// What the session is reading.
pub(crate) enum State {
    /// Command lines.
    Command,
    /// A DATA body, until CRLF.CRLF.
    Data(DataDecoder),
    /// One BDAT chunk of known size. `discard`: the chunk belongs to no valid transaction
    /// (its refusal is already queued) and is read only to stay in step with the client.
    Bdat {
        receiver: BdatReceiver,
        size: usize,
        discard: bool,
    },
    /// An AUTH exchange waiting for the client's next response line.
    Sasl(SaslStep),
}

/// The client's HELO/EHLO.
pub(crate) struct Helo {
    pub name: String,
    /// EHLO (true) or HELO.
    pub extended: bool,
}

/// On whose behalf the session submits mail.
pub(crate) enum Identity {
    Anonymous,
    /// From `smtp.trusted_networks`, acting as `smtp.default_tenant` without AUTH.
    Trusted {
        tenant_id: TenantId,
    },
    Authenticated {
        tenant_id: TenantId,
        username: String,
        /// The credential that authenticated: MAIL checks it is still that one, unrevoked.
        credential_id: String,
    },
}

impl Identity {
    pub fn tenant_id(&self) -> Option<&str> {
        match self {
            Identity::Anonymous => None,
            Identity::Trusted { tenant_id } | Identity::Authenticated { tenant_id, .. } => {
                Some(tenant_id)
            }
        }
    }

    pub fn is_authenticated(&self) -> bool {
        matches!(self, Identity::Authenticated { .. })
    }

    /// The credential's username, for logs ("-" when there is none).
    pub fn username(&self) -> &str {
        match self {
            Identity::Authenticated { username, .. } => username,
            Identity::Trusted { .. } => "(trusted network)",
            Identity::Anonymous => "-",
        }
    }
}

/// One mail transaction, from an accepted MAIL to the end of the message (or RSET).
pub(crate) struct Transaction {
    /// Taken at MAIL so that every log line about the message carries it.
    pub queue_id: QueueId,
    /// The tenant as read at MAIL; `None` on the MX listener.
    pub tenant: Option<Tenant>,
    /// Size and recipient limits of this message: the tenant's under the relay's.
    pub limits: MessageLimits,
    /// Queue priority (the tenant's `priority_support`).
    pub priority: i64,
    pub mail_from: String,
    pub rcpt_to: Vec<String>,
    /// MX: what each accepted recipient is delivered under (receipt rule, tenant, tag).
    pub inbound: Vec<mailmux_inbound::Accepted>,
    /// MX: SPF's verdict on MAIL FROM (`None` when the checks are off).
    pub spf: Option<mailmux_inbound::auth::SpfVerdict>,
    pub flags: BodyFlags,
    /// BDAT was used: DATA may not follow (RFC 3030 §2).
    pub bdat: bool,
}

/// The message being received, kept apart from [`Transaction`] so that bytes of a refused
/// BDAT chunk or an oversized message have somewhere to go (nowhere).
#[derive(Default)]
pub(crate) struct Body {
    pub bytes: Vec<u8>,
    /// Past the transaction's size limit: the rest is read and dropped, then 552.
    pub too_large: bool,
}

/// What the loop does after a handler.
pub(crate) enum Flow {
    Continue,
    Close,
    StartTls,
}

/// How a session ended.
pub(crate) enum Exit<S> {
    Closed,
    /// STARTTLS accepted: here is the stream for the handshake (nothing buffered from it).
    StartTls(S),
}

enum Filled {
    Read,
    Eof,
    TimedOut(Reply),
    ShuttingDown,
}

pub(crate) struct Session<S> {
    pub(crate) server: Arc<Server>,
    stream: S,
    pub(crate) conn: Conn,
    pub(crate) state: State,
    pub(crate) helo: Option<Helo>,
    pub(crate) identity: Identity,
    /// This session's place among its tenant's open sessions (taken at AUTH).
    pub(crate) tenant_session: Option<TenantSession>,
    /// The tenant's message size limit as last read (at AUTH, at each MAIL, or by the first
    /// EHLO that needed it): what EHLO advertises without a store query per EHLO.
    pub(crate) tenant_max_size: Option<u64>,
    pub(crate) tx: Option<Transaction>,
    pub(crate) body: Body,
    input: Input,
    output: Vec<u8>,
    /// Commands that moved no mail since the last accepted message.
    idle_commands: u32,
    shutdown: watch::Receiver<bool>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    pub(crate) fn new(server: Arc<Server>, stream: S, conn: Conn) -> Session<S> {
        let identity = match &server.config.smtp.default_tenant {
            Some(tenant_id)
                if conn.listener.is_submission() && server.config.is_trusted(conn.peer.ip()) =>
            {
                Identity::Trusted {
                    tenant_id: tenant_id.clone(),
                }
            }
            _ => Identity::Anonymous,
        };
        Session {
            shutdown: server.shutdown_signal(),
            server,
            stream,
            conn,
            state: State::Command,
            helo: None,
            identity,
            tenant_session: None,
            tenant_max_size: None,
            tx: None,
            body: Body::default(),
            input: Input::default(),
            output: Vec::new(),
            idle_commands: 0,
        }
    }

    pub(crate) fn greet(mut self) -> Self {
        let hostname = &self.server.config.smtp.hostname;
        self.reply(Reply::bare(220, format!("{hostname} ESMTP mailmux")));
        self
    }

    /// The read/dispatch loop, until the client leaves, something times out or STARTTLS.
    pub(crate) async fn run(mut self) -> Result<Exit<S>> {
        loop {
            let flow = match self.step().await {
                Some(flow) => flow,
                None => match self.fill().await? {
                    Filled::Read => Flow::Continue,
                    Filled::Eof => return Ok(Exit::Closed),
                    Filled::TimedOut(reply) => {
                        info!(%reply, "closing");
                        self.reply(reply);
                        Flow::Close
                    }
                    Filled::ShuttingDown => {
                        self.reply(Reply::new(
                            421,
                            "4.3.2",
                            "Service shutting down, try again later",
                        ));
                        Flow::Close
                    }
                },
            };
            match flow {
                Flow::Continue => {}
                Flow::Close => {
                    self.flush().await?;
                    let _ = tokio::time::timeout(
                        self.server.config.smtp.command_timeout(),
                        self.stream.shutdown(),
                    )
                    .await;
                    return Ok(Exit::Closed);
                }
                Flow::StartTls => {
                    self.flush().await?;
                    // CVE-2011-0411: whatever the client sent after STARTTLS, before the
                    // handshake, was sent in the clear and may be an attacker's injection; it
                    // must never run inside the TLS session.
                    let injected = self.input.discard();
                    if injected > 0 {
                        warn!(bytes = injected, "discarded input pipelined after STARTTLS");
                    }
                    return Ok(Exit::StartTls(self.stream));
                }
            }
        }
    }

    /// Handles what is already buffered: one command line, or body bytes. `None`: the
    /// buffer holds nothing complete, read more.
    async fn step(&mut self) -> Option<Flow> {
        match self.state {
            State::Command | State::Sasl(_) => match self.input.next_line(MAX_COMMAND_LINE)? {
                Ok(line) => Some(self.handle_line(line).await),
                Err(LineTooLong) => {
                    // An over-long SASL response ends the exchange too.
                    self.state = State::Command;
                    Some(self.reject(
                        RejectReason::Protocol,
                        Reply::new(500, "5.5.2", "Line too long"),
                    ))
                }
            },
            // Ingest even with nothing buffered: `BDAT 0` is complete at once. Not complete
            // means every buffered byte was taken.
            State::Data(_) | State::Bdat { .. } => {
                if self.ingest_body() {
                    Some(self.body_complete().await)
                } else {
                    None
                }
            }
        }
    }

    /// Parses one command line (or SASL response) and runs its handler.
    async fn handle_line(&mut self, line: Vec<u8>) -> Flow {
        if let State::Sasl(step) = std::mem::replace(&mut self.state, State::Command) {
            return self.handle_sasl(step, &line).await;
        }
        if std::str::from_utf8(&line).is_err() {
            return self.idle(Reply::new(500, "5.5.2", "Invalid UTF-8 in command"));
        }
        let request = match Request::parse(&mut line.iter()) {
            Ok(request) => request,
            // MX: routing syntax smtp-proto cannot even parse (a bang path with no `@`, an
            // address literal) is a relay attempt before it is bad syntax; it gets the relay
            // refusal like every other trick.
            Err(smtp_proto::Error::InvalidRecipientAddress)
                if self.conn.listener == Listener::Mx
                    && line
                        .iter()
                        .skip_while(|b| **b != b'<')
                        .any(|b| matches!(b, b'!' | b'%' | b'[' | b':' | b'"')) =>
            {
                return self.reject(
                    RejectReason::Relay,
                    Reply::new(550, "5.7.1", "Relaying denied: routing by address syntax"),
                );
            }
            Err(error) => return self.idle(syntax_reply(error)),
        };
        match request {
            Request::Ehlo { host } => self.handle_ehlo(&host, true).await,
            Request::Helo { host } => self.handle_ehlo(&host, false).await,
            Request::Lhlo { .. } => self.idle(Reply::new(
                502,
                "5.5.1",
                "LHLO is LMTP; this is an SMTP server",
            )),
            Request::StartTls => self.handle_starttls(),
            Request::Auth {
                mechanism,
                initial_response,
            } => self.handle_auth(mechanism, &initial_response).await,
            Request::Mail { from } => self.handle_mail(from).await,
            Request::Rcpt { to } => self.handle_rcpt(to, &line).await,
            Request::Data => self.handle_data(),
            Request::Bdat {
                chunk_size,
                is_last,
            } => self.handle_bdat(chunk_size, is_last),
            Request::Rset => self.handle_rset(),
            Request::Noop { .. } => self.handle_noop(),
            Request::Quit => self.handle_quit(),
            Request::Help { .. } => self.handle_help(),
            Request::Vrfy { .. } => self.handle_vrfy(),
            Request::Expn { .. }
            | Request::Etrn { .. }
            | Request::Atrn { .. }
            | Request::Burl { .. } => {
                self.idle(Reply::new(502, "5.5.1", "Command not implemented"))
            }
        }
    }

    /// Reads more input, after writing out the queued replies.
    async fn fill(&mut self) -> Result<Filled> {
        self.flush().await?;
        let smtp = &self.server.config.smtp;
        let in_body = matches!(self.state, State::Data(_) | State::Bdat { .. });
        let per_read = if in_body {
            smtp.data_timeout()
        } else {
            smtp.command_timeout()
        };
        let left = self.conn.deadline.saturating_duration_since(Instant::now());
        let (wait, on_timeout) = if left < per_read {
            (left, "Session time limit exceeded, closing")
        } else {
            (per_read, "Timeout waiting for input, closing")
        };
        // Shutdown closes sessions between transactions; a transaction under way finishes.
        let interruptible = !in_body && self.tx.is_none();
        self.input.reserve(READ_CHUNK);
        let shutdown = &mut self.shutdown;
        tokio::select! {
            read = self.stream.read_buf(self.input.read_target()) => Ok(match read? {
                0 => Filled::Eof,
                _ => Filled::Read,
            }),
            _ = tokio::time::sleep(wait) => Ok(Filled::TimedOut(Reply::new(421, "4.4.2", on_timeout))),
            _ = shutdown.wait_for(|stopping| *stopping), if interruptible => Ok(Filled::ShuttingDown),
        }
    }

    /// Writes the queued replies. Bounded: a client that stops reading cannot hold the
    /// session forever.
    pub(crate) async fn flush(&mut self) -> Result<()> {
        if self.output.is_empty() {
            return Ok(());
        }
        let (stream, output) = (&mut self.stream, &self.output);
        tokio::time::timeout(self.server.config.smtp.command_timeout(), async {
            stream.write_all(output).await?;
            stream.flush().await
        })
        .await
        .map_err(|_| SmtpError::Timeout("read our replies"))??;
        self.output.clear();
        Ok(())
    }
}

impl<S> Session<S> {
    /// Queues a reply.
    pub(crate) fn reply(&mut self, reply: Reply) -> Flow {
        reply.write_to(&mut self.output);
        Flow::Continue
    }

    /// Queues a refusal, counting it under its class and logging it with the message's ids.
    pub(crate) fn reject(&mut self, reason: RejectReason, reply: Reply) -> Flow {
        self.server.metrics().reject(reason);
        let (queue_id, tenant) = self.log_ids();
        info!(queue_id, tenant, reason = reason.as_str(), %reply, "refused");
        self.reply(reply)
    }

    pub(crate) fn refuse(&mut self, refusal: Refusal) -> Flow {
        self.reject(refusal.reason, refusal.reply)
    }

    /// Queue id and tenant for log lines: of the transaction, else of the session.
    pub(crate) fn log_ids(&self) -> (String, String) {
        let queue_id = self.tx.as_ref().map(|tx| tx.queue_id.to_string());
        let tenant = self.identity.tenant_id();
        (
            queue_id.unwrap_or_else(|| "-".into()),
            tenant.unwrap_or("-").to_string(),
        )
    }

    /// A command that moved no mail: answered, but only `smtp.max_idle_commands` of them
    /// between messages, so a session cannot be held open (or used to probe) forever.
    pub(crate) fn idle(&mut self, reply: Reply) -> Flow {
        self.idle_commands += 1;
        if self.idle_commands > self.server.config.smtp.max_idle_commands {
            self.reject(
                RejectReason::Connection,
                Reply::new(421, "4.7.0", "Too many commands without mail, closing"),
            );
            return Flow::Close;
        }
        if reply.is_positive() {
            self.reply(reply)
        } else {
            self.reject(RejectReason::Protocol, reply)
        }
    }

    /// A message was accepted: the session is doing useful work.
    pub(crate) fn reset_idle(&mut self) {
        self.idle_commands = 0;
    }

    /// Forgets the mail transaction (RSET, EHLO, end of message).
    pub(crate) fn reset_transaction(&mut self) {
        self.tx = None;
        self.body = Body::default();
    }

    /// Moves buffered input into the message; true when the DATA body or BDAT chunk is
    /// complete. Past the size limit the bytes are read and dropped.
    fn ingest_body(&mut self) -> bool {
        let limits = match &self.tx {
            Some(tx) => tx.limits,
            None => self.server.policy.relay_limits(),
        };
        let max = usize::try_from(limits.max_size).unwrap_or(usize::MAX);
        let input = self.input.pending();
        let mut dropped = Vec::new();
        let (used, done) = match &mut self.state {
            State::Data(decoder) => {
                let sink = if self.body.too_large {
                    &mut dropped
                } else {
                    &mut self.body.bytes
                };
                decoder.feed(input, sink)
            }
            State::Bdat {
                receiver, discard, ..
            } => {
                let sink = if self.body.too_large || *discard {
                    &mut dropped
                } else {
                    &mut self.body.bytes
                };
                let mut bytes = input.iter();
                let done = receiver.ingest(&mut bytes, sink);
                (input.len() - bytes.as_slice().len(), done)
            }
            State::Command | State::Sasl(_) => (0, false),
        };
        self.input.consume(used);
        if self.body.bytes.len() > max {
            self.body.too_large = true;
            self.body.bytes = Vec::new();
        }
        done
    }
}

/// The reply for a command line the parser refused.
fn syntax_reply(error: smtp_proto::Error) -> Reply {
    use smtp_proto::Error;
    match error {
        Error::UnknownCommand => Reply::new(500, "5.5.1", "Unknown command"),
        Error::InvalidSenderAddress => Reply::new(501, "5.1.7", "Bad sender address syntax"),
        Error::InvalidRecipientAddress => Reply::new(501, "5.1.3", "Bad recipient address syntax"),
        Error::SyntaxError { syntax } => Reply::new(501, "5.5.4", format!("Syntax: {syntax}")),
        Error::InvalidParameter { param } => {
            Reply::new(501, "5.5.4", format!("Invalid parameter {param}"))
        }
        Error::UnsupportedParameter { param } => {
            Reply::new(555, "5.5.4", format!("Unsupported parameter {param}"))
        }
        Error::ResponseTooLong => Reply::new(500, "5.5.2", "Line too long"),
        Error::NeedsMoreData { .. } | Error::InvalidResponse { .. } => {
            Reply::new(501, "5.5.4", "Syntax error")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parser_errors_map_to_contract_codes() {
        let cases: [(&[u8], u16, &str); 8] = [
            (b"FOO bar\r\n", 500, "5.5.1"),
            (b"MAIL FROM:<a@@b>\r\n", 501, "5.1.7"),
            (b"RCPT TO:<a b@c>\r\n", 501, "5.1.3"),
            (b"MAIL TO:<a@b>\r\n", 501, "5.5.4"),
            (b"EHLO\r\n", 501, "5.5.4"),
            (b"BDAT x\r\n", 501, "5.5.4"),
            (b"MAIL FROM:<a@b> SIZE=x\r\n", 501, "5.5.4"),
            (b"MAIL FROM:<a@b> FOO=bar\r\n", 555, "5.5.4"),
        ];
        for (line, code, status) in cases {
            let error = Request::parse(&mut line.iter()).expect_err("refused");
            let reply = syntax_reply(error);
            assert_eq!(
                (
                    reply.code(),
                    reply.status().map(|s| s.to_string()).as_deref()
                ),
                (code, Some(status)),
                "{}",
                String::from_utf8_lossy(line)
            );
        }
    }
}
