//! DATA and BDAT (RFC 5321 §4.1.1.4, RFC 3030), and what happens when a message is complete:
//! on submission, what the policy adds or repairs (Date:, Message-ID:, long body lines) and
//! its message checks (size, content, header senders, content hooks), on MX the content checks
//! alone; then the Received: header, and the durable step that must succeed before the client
//! hears 250: the queue's enqueue on submission (which re-checks the daily quota inside its
//! commit), the inbound crate's commit of the stored message on MX.

use mailmux_core::Envelope;
use mailmux_policy::received::{self, Trace};
use mailmux_policy::{content, submission};
use mailmux_queue::{QueueError, Submission};
use smtp_proto::request::receiver::BdatReceiver;
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::{info, warn};

use crate::data_decoder::DataDecoder;
use crate::metrics::{Metrics, RejectReason};
use crate::policy::{self, Refusal};
use crate::reply::Reply;
use crate::session::{Body, Flow, Session, State, Transaction};

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    pub(crate) fn handle_data(&mut self) -> Flow {
        if let Some(text) = self.body_sequence_error(false) {
            return self.reject(RejectReason::Protocol, Reply::new(503, "5.5.1", text));
        }
        self.state = State::Data(DataDecoder::default());
        self.reply(Reply::bare(354, "Start mail input; end with <CRLF>.<CRLF>"))
    }

    pub(crate) fn handle_bdat(&mut self, size: usize, last: bool) -> Flow {
        // The chunk follows the command whatever we answer; it is read either way so that
        // its bytes are never taken for commands.
        let discard = match self.body_sequence_error(true) {
            Some(text) => {
                self.reject(RejectReason::Protocol, Reply::new(503, "5.5.1", text));
                true
            }
            None => false,
        };
        if let Some(tx) = &mut self.tx
            && !discard
        {
            tx.bdat = true;
        }
        self.state = State::Bdat {
            receiver: BdatReceiver::new(size, last),
            size,
            discard,
        };
        Flow::Continue
    }

    /// Why DATA/BDAT cannot start now, if it cannot.
    fn body_sequence_error(&self, bdat: bool) -> Option<&'static str> {
        match &self.tx {
            None => Some("Need MAIL and RCPT first"),
            Some(tx) if tx.rcpt_to.is_empty() => Some("Need RCPT first"),
            Some(tx) if tx.bdat && !bdat => Some("DATA cannot follow BDAT in one transaction"),
            Some(_) => None,
        }
    }

    /// The DATA body or a BDAT chunk has been read in full.
    pub(crate) async fn body_complete(&mut self) -> Flow {
        let state = std::mem::replace(&mut self.state, State::Command);
        match state {
            State::Bdat { discard: true, .. } => Flow::Continue,
            State::Bdat { receiver, size, .. } if !receiver.is_last => {
                self.reply(Reply::new(250, "2.0.0", format!("{size} bytes received")))
            }
            _ => self.finish_message().await,
        }
    }

    /// Checks the complete message, adds the trace header and queues it durably.
    async fn finish_message(&mut self) -> Flow {
        let body = std::mem::take(&mut self.body);
        let (queue_id, tenant) = self.log_ids();
        let (body, scan) = match self.message_verdict(body).await {
            Ok(verdict) => verdict,
            Err(refusal) => {
                let flow = self.refuse(refusal);
                self.reset_transaction();
                return flow;
            }
        };
        let Some(tx) = self.tx.take() else {
            return self.reply(Reply::new(503, "5.5.1", "No transaction"));
        };
        let mut flags = tx.flags;
        flags.eight_bit |= scan.eight_bit;
        let helo = self.helo.as_ref();
        let header = received::header(&Trace {
            helo: Some(helo.map_or("unknown", |h| h.name.as_str())),
            ip: self.conn.peer.ip(),
            hostname: &self.server.config.smtp.hostname,
            protocol: received::protocol(
                helo.is_some_and(|h| h.extended),
                self.conn.tls,
                self.identity.is_authenticated(),
                flags.smtputf8,
            ),
            id: &tx.queue_id,
            recipient: match tx.rcpt_to.as_slice() {
                [only] => Some(only.as_str()),
                _ => None,
            },
            timestamp: mailmux_core::now_ms() / 1000,
        });
        if tx.tenant.is_none() {
            // MX: no tenant sent this; the receipt rules of its recipients decide, after the
            // authentication checks (which read the message as it came, without our headers).
            if self.flush().await.is_err() {
                return Flow::Close;
            }
            return self.finish_inbound(tx, flags, &header, &body).await;
        }
        let mut message = Vec::with_capacity(header.len() + body.len());
        message.extend_from_slice(header.as_bytes());
        message.extend_from_slice(&body);
        drop(body);
        let size = message.len();
        let recipients = tx.rcpt_to.len();
        // Whatever is still queued (replies to earlier BDAT chunks) goes out before we wait
        // on the disk; a client that is gone by now never sees a 250, so nothing is queued
        // for it to send again.
        if self.flush().await.is_err() {
            return Flow::Close;
        }
        let Some(tenant_record) = tx.tenant else {
            return self.reply(Reply::new(503, "5.5.1", "No transaction"));
        };
        let submission = Submission {
            id: tx.queue_id,
            tenant_id: tenant_record.id,
            envelope: Envelope {
                mail_from: tx.mail_from,
                rcpt_to: tx.rcpt_to,
                flags,
            },
            body: message,
            origin: "smtp",
            priority: tx.priority,
        };
        let tenant_id = submission.tenant_id.clone();
        // Durability: 250 only after enqueue returned, i.e. after the commit carrying this
        // message. On any error the client hears 4xx and keeps its copy.
        match self.server.queue.enqueue(submission).await {
            Ok(id) => {
                Metrics::add(&self.server.metrics().messages_accepted);
                let username = self.identity.username();
                info!(queue_id = %id, tenant, username, size, recipients, "queued");
                self.reset_idle();
                self.reply(Reply::new(250, "2.0.0", format!("Ok: queued as {id}")))
            }
            Err(QueueError::OverQuota { max_per_day }) => {
                // Other sessions (or nodes) used the last of the quota since MAIL.
                let refusal = self
                    .server
                    .policy
                    .quota_refusal(&tenant_id, max_per_day)
                    .await;
                self.refuse(refusal)
            }
            Err(error) => {
                warn!(queue_id, tenant, %error, "enqueue failed");
                self.refuse(policy::storage_failed())
            }
        }
    }

    /// MX: checks DKIM, ARC and DMARC (with the SPF verdict of MAIL FROM), makes the message
    /// durable for the tenants its recipients belong to (stored mail, the verdicts' header and
    /// `received` on top), and only then answers 250, exactly as submission does after the
    /// queue's commit.
    async fn finish_inbound(
        &mut self,
        tx: Transaction,
        flags: mailmux_core::BodyFlags,
        received: &str,
        body: &[u8],
    ) -> Flow {
        let id = tx.queue_id.to_string();
        let arrival = mailmux_inbound::Arrival {
            id: &id,
            ip: self.conn.peer.ip(),
            mail_from: &tx.mail_from,
            spf: tx.spf.as_ref(),
            recipients: &tx.inbound,
            flags,
        };
        match self.server.inbound.accept(&arrival, received, body).await {
            Ok(ids) => {
                Metrics::add(&self.server.metrics().messages_accepted);
                info!(queue_id = %id, stored = ?ids, size = body.len(), "inbound accepted");
                self.reset_idle();
                self.reply(Reply::new(250, "2.0.0", format!("Ok: queued as {id}")))
            }
            Err(refusal) => self.refuse(refusal),
        }
    }

    /// The complete message as it is accepted, with what its scan found. For a tenant
    /// (submission) the policy completes it as a submission server must (Date:, Message-ID:,
    /// long body lines re-encoded) and checks it; on MX it is checked as it came, never changed:
    /// it is someone else's mail, passing through.
    async fn message_verdict(&self, body: Body) -> Result<(Vec<u8>, content::Scan), Refusal> {
        let Some(tx) = self.tx.as_ref() else {
            return Err(Refusal::new(
                RejectReason::Protocol,
                Reply::new(503, "5.5.1", "No transaction"),
            ));
        };
        if body.too_large {
            return Err(policy::too_large(tx.limits.max_size));
        }
        match &tx.tenant {
            Some(tenant) => {
                let stamp = submission::Stamp {
                    hostname: &self.server.config.smtp.hostname,
                    queue_id: &tx.queue_id,
                    timestamp: mailmux_core::now_ms() / 1000,
                };
                self.server
                    .policy
                    .accept_message(tenant, &tx.limits, body.bytes, &stamp)
                    .await
            }
            None => content::check(&body.bytes).map(|scan| (body.bytes, scan)),
        }
    }
}
