//! mailmux-delivery: the outbound side. Takes messages from the queue, routes each by its
//! tenant's transport, delivers it, bounces what failed for good and reports the outcome.
//!
//! Per message (one tracing span carrying `queue_id` and `tenant`):
//!
//! ```text
//! job ─▶ held, untried, if the tenant is not active (paused, suspended, disabled)
//!     ─▶ bounced as a loop if it carries too many Received: fields
//!     ─▶ route (tenant.transport or delivery.transport)
//!     ─▶ envelope sender on the wire: the sending domain's return-path domain (custom_domains)
//!     ─▶ DKIM-sign (tenants with dkim_signing; the From: domain's active key)
//!     ─▶ group recipients by next hop (MX: per domain, concurrently; smarthost: all at once)
//!     ─▶ per hop: hosts in order, each address a destination (public only, not down),
//!        pooled connection (RSET) or a new one ─▶ one transaction
//!     ─▶ delivered recipients journaled at once (a crash after this sends them nothing again)
//!     ─▶ queue.retry.finish (deferred too long → bounced; jittered next attempt)
//!     ─▶ DSN for the bounced recipients (never for a null sender)
//!     ─▶ queue.report: report and DSN in one commit, only while our lease holds
//! ```
//!
//! Files: `route.rs` picks the transport, `dkim.rs` signs, `mx.rs` resolves hosts,
//! `address_policy.rs` keeps delivery off private networks, `host_health.rs` remembers
//! destinations that are down, `client.rs` holds one SMTP conversation, `pool.rs` keeps
//! connections between messages, `smarthost.rs` is the relay transport, `attempt.rs` delivers
//! one message to one next hop, `dsn.rs` writes bounces, `forwarded.rs` sends the bounces of
//! forwarded (SRS) mail to the original sender, `hold.rs` keeps a paused tenant's mail
//! back, `return_path.rs` puts custom MAIL FROM domains on the wire.

mod address_policy;
mod attempt;
mod client;
pub mod dkim;
mod dsn;
mod error;
mod forwarded;
mod hold;
mod host_health;
mod mx;
mod pool;
mod return_path;
mod route;
mod smarthost;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use lettre::transport::smtp::extension::ClientId;
use mailmux_core::{BodyFlags, Config, Envelope, TransportKind, now_ms};
use mailmux_queue::{
    DeliveryReport, Job, Jobs, JournaledDelivery, Lease, NewMessage, Queue, QueuedMessage,
    QueuedRecipient, RecipientResult, RecipientStatus, Recorded, Submission,
};
use tokio::sync::{Mutex, Semaphore, watch};
use tokio::task::JoinSet;
use tracing::{Instrument, debug, error, info, info_span, warn};

use crate::address_policy::AddressPolicy;
use crate::attempt::{NextHop, Outcome};
use crate::client::{SessionPolicy, TlsMode};
use crate::dkim::{Signers, Signing};
use crate::dsn::{BouncedRecipient, Dsn};
use crate::host_health::HostHealth;
use crate::mx::MxResolver;
use crate::pool::Pool;
use crate::route::{Route, Router};
use crate::smarthost::Smarthost;

pub use error::{DeliveryError, Result};
pub use mailmux_core::reply::Reply;

/// The delivery workers' shared state, built once at start-up.
pub struct Deliverer {
    config: Arc<Config>,
    queue: Arc<Queue>,
    router: Router,
    /// Built DKIM signers by domain, checked against the store once a second.
    signers: Signers,
    /// Holds the DNS cache: one for the process.
    mx: MxResolver,
    /// Sessions with MX hosts: opportunistic TLS, no AUTH.
    mx_policy: SessionPolicy,
    smarthost: Option<Smarthost>,
    pool: Pool,
    /// Which addresses direct delivery may connect to.
    address_policy: AddressPolicy,
    /// Destinations that failed recently, and until when they are left alone.
    host_health: HostHealth,
    /// Reverses the SRS senders of forwarded mail for its bounces (forwarded.rs); loaded from
    /// the store the first time one is needed.
    srs: tokio::sync::OnceCell<mailmux_core::srs::Srs>,
}

impl Deliverer {
    /// Builds the resolver (from `delivery.dns_servers`, or the system configuration) and
    /// checks the smarthost settings; fails only on configuration that cannot work.
    pub fn new(config: Arc<Config>, queue: Arc<Queue>) -> Result<Arc<Deliverer>> {
        let delivery = &config.delivery;
        let mx_policy = SessionPolicy {
            helo: ClientId::Domain(config.helo_name().to_string()),
            tls: TlsMode::Opportunistic,
            credentials: None,
            connect_timeout: Duration::from_secs(delivery.connect_timeout_secs.max(1)),
            command_timeout: Duration::from_secs(delivery.command_timeout_secs.max(1)),
        };
        let smarthost = Smarthost::from_config(delivery, &mx_policy)?;
        if delivery.transport == TransportKind::Smarthost && smarthost.is_none() {
            return Err(DeliveryError::Smarthost(
                "must be set when delivery.transport = \"smarthost\"".into(),
            ));
        }
        let mx = MxResolver::new(&delivery.dns_servers)?;
        Ok(Arc::new(Deliverer {
            router: Router::new(
                queue.store().clone(),
                delivery.transport,
                Duration::from_millis(delivery.cache_ttl_ms),
            ),
            signers: Signers::new(queue.store().clone(), &config),
            pool: Pool::new(
                delivery.max_connections_per_destination,
                Duration::from_secs(delivery.idle_connection_secs),
            ),
            mx,
            mx_policy,
            smarthost,
            address_policy: AddressPolicy::new(&delivery.allowed_networks),
            host_health: HostHealth::new(Duration::from_secs(delivery.host_down_secs)),
            srs: tokio::sync::OnceCell::new(),
            queue,
            config,
        }))
    }

    /// Takes jobs until `stop` turns true (or the channel closes); at most
    /// `delivery.concurrency` messages in flight.
    ///
    /// At shutdown no new job is started; deliveries in flight get
    /// `delivery.shutdown_grace_secs` to finish and report, and whatever still runs then is
    /// stopped (its lease is given back with the others by the queue, so another node or the
    /// restart delivers it). Idle connections are closed last.
    ///
    /// `jobs` is shared so that the supervisor can start this loop again after a panic.
    pub async fn run(self: Arc<Self>, jobs: Arc<Mutex<Jobs>>, mut stop: watch::Receiver<bool>) {
        let mut jobs = jobs.lock().await;
        let slots = Arc::new(Semaphore::new(self.config.delivery.concurrency.max(1)));
        let mut tasks = JoinSet::new();
        loop {
            // A slot first, then a job: a job is only taken off the channel when a worker is
            // free for it, so the channel's free room tells the queue how much we can take.
            let next = async {
                let slot = slots
                    .clone()
                    .acquire_owned()
                    .await
                    .expect("the slot semaphore is never closed");
                jobs.recv().await.map(|job| (slot, job))
            };
            let (slot, job) = tokio::select! {
                next = next => match next {
                    Some(next) => next,
                    None => break,
                },
                _ = stop.wait_for(|stopped| *stopped) => break,
            };
            let span =
                info_span!("delivery", queue_id = %job.message.id, tenant = %job.message.tenant_id);
            let this = self.clone();
            tasks.spawn(
                async move {
                    this.deliver(job).await;
                    drop(slot);
                }
                .instrument(span),
            );
            while let Some(done) = tasks.try_join_next() {
                log_task_end(done);
            }
        }
        // No more jobs: those already handed over are left leased and given back with every
        // other lease of this node.
        jobs.close();
        while jobs.try_recv().is_ok() {}
        let grace = Duration::from_secs(self.config.delivery.shutdown_grace_secs);
        let in_flight = tasks.len();
        if in_flight > 0 {
            info!(in_flight, ?grace, "waiting for deliveries in flight");
        }
        let finished = tokio::time::timeout(grace, async {
            while let Some(done) = tasks.join_next().await {
                log_task_end(done);
            }
        })
        .await;
        if finished.is_err() {
            warn!(
                stopped = tasks.len(),
                "deliveries still running after the grace period were stopped; their messages are retried"
            );
            tasks.shutdown().await;
        }
        self.pool.close_idle().await;
    }

    /// One delivery attempt of one message, from routing to the recorded report.
    ///
    /// What the attempt sends is decided here, once: the route (asked of the router once),
    /// the sender on the wire (return_path.rs) and, in [`Deliverer::attempt`], the signed bytes.
    async fn deliver(&self, job: Job) {
        let Job { message, lease } = job;
        let outcomes = match self.router.route(&message.tenant_id).await {
            Ok(route) if !route.sending => return self.hold(lease).await,
            Ok(route) => match self.loop_check(&message) {
                Some(reply) => everyone(&message, reply),
                None => {
                    let sender = self.wire_sender(&message, &route).await;
                    self.attempt(&message, &route, &sender).await
                }
            },
            Err(error) => everyone(
                &message,
                Reply::parse(
                    451,
                    format!("4.3.0 cannot look up the tenant's transport: {error}"),
                ),
            ),
        };
        self.journal_deliveries(&message, &outcomes);
        let mut report = self.report_of(&message, &lease, &outcomes);
        log_results(&message, &report, &outcomes);
        report.bounce = self.bounce(&message, &report, &outcomes).await;
        // The DSN's recipient: the sender, or for forwarded mail the original sender.
        let bounce = report
            .bounce
            .as_ref()
            .map(|b| (b.id.clone(), b.envelope.rcpt_to.join(", ")));
        match self.queue.report(report, lease).await {
            Ok(Recorded::Yes) => {
                if let Some((dsn, to)) = bounce {
                    info!(%dsn, to, "bounce queued");
                }
            }
            Ok(Recorded::LeaseLost) => warn!(
                "this node lost the message's lease while delivering it (another node took it \
                 over); this attempt's outcome is not recorded and no bounce is sent"
            ),
            // The lease runs out and the message is tried again: nothing is lost.
            Err(error) => error!(%error, "cannot record the delivery report"),
        }
    }

    /// Writes down the recipients the remote accepted, before anything else: from the remote's
    /// 250 until this is on disk, a crash would send them the message again.
    fn journal_deliveries(&self, message: &QueuedMessage, outcomes: &[Outcome]) {
        let delivered: Vec<(u32, String)> = outcomes
            .iter()
            .filter(|o| o.reply.recipient_status() == RecipientStatus::Delivered)
            .map(|o| (o.idx, o.reply.to_string()))
            .collect();
        if delivered.is_empty() {
            return;
        }
        let journaled = JournaledDelivery {
            message_id: message.id.0.clone(),
            at: now_ms(),
            recipients: delivered,
        };
        self.queue.journal_delivered(&journaled);
    }

    /// The attempt's report: each recipient's outcome, expired deferrals bounced, and the next
    /// attempt time.
    fn report_of(
        &self,
        message: &QueuedMessage,
        lease: &Lease,
        outcomes: &[Outcome],
    ) -> DeliveryReport {
        let results = outcomes
            .iter()
            .map(|outcome| RecipientResult {
                idx: outcome.idx,
                status: outcome.reply.recipient_status(),
                reply: outcome.reply.to_string(),
            })
            .collect();
        let mut report = self.queue.retry.finish(message, lease, results, now_ms());
        // Recipients that wait for a destination that is down come back when it may be up,
        // not sooner: if every deferred recipient waits for one, the message waits for the
        // earliest of them.
        if let Some(not_before) = outcomes
            .iter()
            .filter(|o| o.reply.recipient_status() == RecipientStatus::Deferred)
            .map(|o| o.not_before.unwrap_or(0))
            .min()
        {
            report.next_attempt_at = report.next_attempt_at.max(not_before);
        }
        report
    }

    /// A reply bouncing every recipient when the message has passed through more relays than
    /// a message should (RFC 5321 §6.3: a mail loop), else `None`.
    fn loop_check(&self, message: &QueuedMessage) -> Option<Reply> {
        let received = mailmux_core::message_bytes::count_fields(&message.body, "Received");
        let limit = self.config.delivery.max_received_headers;
        (received > limit).then(|| {
            Reply::parse(
                554,
                format!(
                    "5.4.6 mail loop: the message has {received} Received: header fields \
                     (more than {limit})"
                ),
            )
        })
    }

    /// Signs the message if its route says so and delivers it, as sent by `sender` (the
    /// envelope sender on the wire), to each of its next hops.
    async fn attempt(&self, message: &QueuedMessage, route: &Route, sender: &str) -> Vec<Outcome> {
        let everyone = |reply: Reply| everyone(message, reply);
        match route.transport {
            TransportKind::Ses => {
                return everyone(Reply::parse(
                    451,
                    "4.3.5 the SES transport is not available in this version; the message waits \
                     until the tenant's transport is changed",
                ));
            }
            TransportKind::Smarthost if self.smarthost.is_none() => {
                return everyone(Reply::parse(
                    451,
                    "4.3.5 the tenant's transport is smarthost but delivery.smarthost is not set",
                ));
            }
            _ => {}
        }
        // Signed per attempt (t= is the time of sending), after routing and before the
        // transport, so every transport carries the same signed bytes. The signature goes on
        // top, above our Received: header: header fields are prepended in the order they are
        // added (RFC 5322 §3.6.7), and verifiers expect a signer's field above the trace
        // fields that were there when it signed. Received: is not signed: it is not in
        // SIGNED_HEADERS, since relays after us add their own. The submitted sender (not the
        // return path on the wire) is the signer's fallback domain.
        let signed = if route.dkim_signing {
            match self
                .signers
                .sign(&message.tenant_id, &message.body, &message.mail_from)
                .await
            {
                Signing::Signed {
                    message: signed,
                    domain,
                    selector,
                } => {
                    debug!(%domain, %selector, "DKIM-signed");
                    Some(signed)
                }
                Signing::Unsigned => {
                    debug!(
                        "not DKIM-signed: no domain of the message has an active key of this tenant"
                    );
                    None
                }
                Signing::Defer(reply) => {
                    warn!(%reply, "not delivered: DKIM signing failed");
                    return everyone(reply);
                }
            }
        } else {
            None
        };
        let body: &[u8] = signed.as_deref().unwrap_or(&message.body);
        match (route.transport, &self.smarthost) {
            (TransportKind::Smarthost, Some(smarthost)) => {
                let recipients: Vec<&QueuedRecipient> = message.recipients.iter().collect();
                self.deliver_to_hop(message, sender, body, &recipients, smarthost.hop())
                    .await
            }
            _ => {
                // One transaction per domain; the domains of one message go out concurrently.
                let mut by_domain: BTreeMap<&str, Vec<&QueuedRecipient>> = BTreeMap::new();
                for recipient in &message.recipients {
                    by_domain
                        .entry(recipient.domain.as_str())
                        .or_default()
                        .push(recipient);
                }
                join_all(
                    by_domain
                        .into_iter()
                        .map(|(domain, recipients)| async move {
                            self.deliver_to_hop(
                                message,
                                sender,
                                body,
                                &recipients,
                                NextHop::Mx(domain.to_string()),
                            )
                            .await
                        }),
                )
                .await
                .into_iter()
                .flatten()
                .collect()
            }
        }
    }

    /// The DSN to the sender listing every recipient bounced in this attempt, if any: it is
    /// written with the report (so exactly when the bounces are recorded).
    async fn bounce(
        &self,
        message: &QueuedMessage,
        report: &DeliveryReport,
        outcomes: &[Outcome],
    ) -> Option<NewMessage> {
        let bounced: Vec<BouncedRecipient> = report
            .results
            .iter()
            .filter(|r| r.status == RecipientStatus::Bounced)
            .map(|r| BouncedRecipient {
                address: message
                    .recipients
                    .iter()
                    .find(|q| q.idx == r.idx)
                    .map(|q| q.address.clone())
                    .unwrap_or_default(),
                reply: r.reply.clone(),
                remote_mta: outcomes
                    .iter()
                    .find(|o| o.idx == r.idx)
                    .and_then(|o| o.remote.clone()),
            })
            .collect();
        if bounced.is_empty() {
            return None;
        }
        if message.mail_from.is_empty() {
            // RFC 5321 §6.1/§4.5.5: a message from the null sender (itself a bounce) is never
            // answered with a bounce; that is how bounce loops are prevented.
            info!(
                recipients = bounced.len(),
                "no bounce for a null-sender message"
            );
            return None;
        }
        let to = self.dsn_recipient(&message.mail_from).await;
        let dsn_id = self.queue.next_id();
        let dsn = Dsn {
            reporting_mta: &self.config.smtp.hostname,
            queue_id: &message.id.0,
            dsn_id: &dsn_id.0,
            sender: &to,
            original: &message.body,
            smtputf8: message.flags.smtputf8,
            arrival_ms: message.created_at,
            now_ms: now_ms(),
            recipients: &bounced,
        };
        let body = dsn.render();
        let flags = BodyFlags {
            eight_bit: !body.is_ascii(),
            smtputf8: message.flags.smtputf8 || !to.is_ascii(),
        };
        let submission = Submission {
            id: dsn_id,
            tenant_id: message.tenant_id.clone(),
            envelope: Envelope {
                mail_from: String::new(),
                rcpt_to: vec![to],
                flags,
            },
            body,
            origin: "dsn",
            priority: 0,
        };
        Some(self.queue.new_message(submission))
    }
}

fn log_results(message: &QueuedMessage, report: &DeliveryReport, outcomes: &[Outcome]) {
    for result in &report.results {
        let rcpt = message
            .recipients
            .iter()
            .find(|r| r.idx == result.idx)
            .map_or("", |r| r.address.as_str());
        let host = outcomes
            .iter()
            .find(|o| o.idx == result.idx)
            .and_then(|o| o.remote.as_deref())
            .unwrap_or("-");
        let reply = result.reply.as_str();
        match result.status {
            RecipientStatus::Delivered => info!(rcpt, host, reply, "delivered"),
            RecipientStatus::Deferred => warn!(
                rcpt,
                host,
                reply,
                next_attempt_at = report.next_attempt_at,
                "deferred"
            ),
            RecipientStatus::Bounced => warn!(rcpt, host, reply, "bounced"),
        }
    }
}

/// The same reply for every recipient of `message`.
fn everyone(message: &QueuedMessage, reply: Reply) -> Vec<Outcome> {
    message
        .recipients
        .iter()
        .map(|r| Outcome {
            idx: r.idx,
            reply: reply.clone(),
            remote: None,
            not_before: None,
        })
        .collect()
}

fn log_task_end(done: std::result::Result<(), tokio::task::JoinError>) {
    if let Err(error) = done {
        // The message's lease runs out and it is delivered again later.
        error!(%error, "a delivery task failed");
    }
}
