//! One message to one next hop: the hop's hosts in order (MX preference, or the smarthost's
//! addresses), each address as a destination with its own pooled connections, until one of
//! them takes the transaction.
//!
//! Per destination:
//! - direct MX only: an address that is not public (loopback, private, link-local…) and not
//!   in `delivery.allowed_networks` is never connected to (`address_policy.rs`);
//! - a destination marked down (`host_health.rs`) is skipped without a connection attempt;
//! - a pooled connection is tried first; one that turns out dead (RSET or the transaction
//!   fails before the end of data) is dropped and costs the recipients nothing: the next
//!   idle one, or a fresh connection, carries the same attempt;
//! - a fresh connection that cannot be made, or a 421, marks the destination down; any
//!   session failure moves on to the next address.
//!
//! Once the end of data is sent, the replies are final for this attempt (even a lost one:
//! see `client.rs`), so a message is never sent twice in one attempt. When no destination
//! is left, every recipient of the hop gets the last reason.

use std::fmt;
use std::net::SocketAddr;

use mailmux_core::now_ms;
use mailmux_core::reply::Reply;
use mailmux_queue::{QueuedMessage, QueuedRecipient};
use tracing::{debug, warn};

use crate::Deliverer;
use crate::client::{Connection, SessionPolicy, Target, Transaction};
use crate::error::DeliveryError;
use crate::mx::MxHost;
use crate::pool::Destination;

/// Addresses tried per host, and in all, in one attempt (Postfix tries 5 in all): enough to
/// get past a dead host or two, few enough that a hop with dozens of dead addresses does not
/// hold a worker for an hour.
const MAX_ADDRESSES_PER_HOST: usize = 3;
const MAX_ADDRESSES: usize = 8;

/// Where one message's recipients go: decided per attempt by the route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum NextHop {
    /// Direct delivery to a recipient domain's MX hosts.
    Mx(String),
    /// The configured smarthost (`host:port`).
    Smarthost(String),
}

impl fmt::Display for NextHop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NextHop::Mx(domain) => write!(f, "mx:{domain}"),
            NextHop::Smarthost(host) => write!(f, "smarthost:{host}"),
        }
    }
}

/// One recipient's outcome in this attempt.
#[derive(Debug, Clone)]
pub(crate) struct Outcome {
    pub idx: u32,
    pub reply: Reply,
    /// The host that gave the reply, when one did.
    pub remote: Option<String>,
    /// Set when the recipient waits for a destination that is down: its next attempt is not
    /// before this time (Unix ms).
    pub not_before: Option<i64>,
    /// The next hop's id for the message (SES's MessageId), when it gave one.
    pub remote_id: Option<String>,
}

/// How the hosts of a hop are reached.
struct HopPlan<'a> {
    hosts: Vec<MxHost>,
    port: u16,
    policy: &'a SessionPolicy,
    identity: &'a str,
    /// Only public addresses (or `delivery.allowed_networks`) for direct MX; the smarthost is
    /// the operator's own choice.
    filter_addresses: bool,
}

/// Why one destination did not take the transaction.
enum Skipped {
    /// Marked down until the given time.
    Down(Reply, i64),
    /// Tried and failed.
    Failed(DeliveryError),
}

impl Deliverer {
    /// Delivers `message` from `sender` (the envelope sender on the wire), as `body` (the
    /// queued bytes, or those with a DKIM signature on top), to `recipients`, all of which go
    /// to `hop`.
    pub(crate) async fn deliver_to_hop(
        &self,
        message: &QueuedMessage,
        sender: &str,
        body: &[u8],
        recipients: &[&QueuedRecipient],
        hop: NextHop,
    ) -> Vec<Outcome> {
        let tx = Transaction {
            mail_from: sender,
            flags: message.flags,
            recipients: recipients
                .iter()
                .map(|r| (r.idx, r.address.as_str()))
                .collect(),
            body,
        };
        let everyone = |reply: Reply, remote: Option<&str>, not_before: Option<i64>| {
            recipients
                .iter()
                .map(|r| Outcome {
                    idx: r.idx,
                    reply: reply.clone(),
                    remote: remote.map(str::to_string),
                    not_before,
                    remote_id: None,
                })
                .collect::<Vec<_>>()
        };

        let plan = match self.plan(&hop).await {
            Ok(plan) => plan,
            Err(error) => {
                warn!(%hop, reply = %error.reply(), "no host to deliver to");
                return everyone(error.reply(), error.host(), None);
            }
        };
        // What the recipients get if no destination takes the transaction: a failure of a
        // tried destination beats "down" (it is news), which beats "refused" (permanent only
        // when nothing else was possible at all).
        let mut failed: Option<DeliveryError> = None;
        let mut down: Option<(Reply, i64)> = None;
        let mut refused: Option<Reply> = None;
        let mut tried = 0;
        for host in plan.hosts {
            let addrs = if host.addrs.is_empty() {
                match self.mx.addresses(&host.name).await {
                    Ok(addrs) => addrs,
                    Err(error) => {
                        warn!(host = %host.name, reply = %error.reply(), "MX host has no address; trying the next");
                        failed = Some(error);
                        continue;
                    }
                }
            } else {
                host.addrs
            };
            for ip in addrs.into_iter().take(MAX_ADDRESSES_PER_HOST) {
                if tried == MAX_ADDRESSES {
                    break;
                }
                let destination = Destination {
                    addr: SocketAddr::new(ip, plan.port),
                    host: host.name.clone(),
                    identity: plan.identity.to_string(),
                };
                if plan.filter_addresses
                    && let Some(kind) = self.address_policy.refusal(ip)
                {
                    warn!(host = %host.name, %ip, kind, "not connecting to a non-public address");
                    refused = Some(Reply::parse(
                        550,
                        format!(
                            "5.4.4 {} resolves to {ip}, a {kind} address; direct delivery does \
                             not connect there (delivery.allowed_networks)",
                            host.name
                        ),
                    ));
                    continue;
                }
                tried += 1;
                match self.deliver_to(&destination, plan.policy, &tx).await {
                    Ok(outcomes) => return outcomes,
                    Err(Skipped::Failed(error)) => {
                        warn!(host = %destination_label(&destination), reply = %error.reply(), "delivery to host failed; trying the next");
                        failed = Some(error);
                    }
                    Err(Skipped::Down(reply, until)) => {
                        debug!(host = %destination_label(&destination), "destination is down; not tried");
                        let earliest = down.as_ref().map_or(until, |(_, u)| until.min(*u));
                        down = Some((reply, earliest));
                    }
                }
            }
        }
        match (failed, down, refused) {
            (Some(error), _, _) => everyone(error.reply(), error.host(), None),
            (None, Some((reply, until)), _) => everyone(reply, None, Some(until)),
            (None, None, Some(reply)) => everyone(reply, None, None),
            (None, None, None) => everyone(
                Reply::parse(451, format!("4.4.4 no host could be tried for {hop}")),
                None,
                None,
            ),
        }
    }

    /// The hosts of a hop, the port to use and how to hold the session.
    async fn plan(&self, hop: &NextHop) -> Result<HopPlan<'_>, DeliveryError> {
        match hop {
            NextHop::Mx(domain) => {
                let hosts = self.mx.hosts(domain).await?;
                Ok(HopPlan {
                    hosts,
                    port: self.config.delivery.mx_port,
                    policy: &self.mx_policy,
                    identity: "mx",
                    filter_addresses: true,
                })
            }
            NextHop::Smarthost(_) => {
                let Some(smarthost) = &self.smarthost else {
                    return Err(DeliveryError::Smarthost("not configured".into()));
                };
                let addrs = smarthost.addresses().await?;
                let host = MxHost {
                    name: smarthost.host().to_string(),
                    preference: 0,
                    addrs,
                };
                Ok(HopPlan {
                    hosts: vec![host],
                    port: smarthost.port(),
                    policy: &smarthost.policy,
                    identity: smarthost.identity(),
                    filter_addresses: false,
                })
            }
        }
    }

    /// One destination: a pooled connection if there is one, else a new one (unless the
    /// destination is down). `Ok` once the transaction was carried to its end.
    async fn deliver_to(
        &self,
        destination: &Destination,
        policy: &SessionPolicy,
        tx: &Transaction<'_>,
    ) -> Result<Vec<Outcome>, Skipped> {
        let mut lease = self.pool.lease(destination).await;
        while let Some(mut conn) = lease.conn.take() {
            let result = match conn.reset().await {
                Ok(()) => conn.deliver(tx).await,
                Err(error) => Err(error),
            };
            match result {
                Ok(replies) => {
                    debug!(host = conn.label(), "delivered over a pooled connection");
                    return Ok(self.finish(lease, conn, replies).await);
                }
                Err(error) => {
                    debug!(host = conn.label(), %error, "pooled connection is gone; trying another");
                    lease.conn = lease.next_idle();
                }
            }
        }
        // Looked at after waiting for the pool: another message may have found it down
        // meanwhile.
        let now = now_ms();
        if let Some(until) = self.host_health.down_until(destination.addr, now) {
            return Err(Skipped::Down(
                Reply::parse(
                    451,
                    format!(
                        "4.4.1 {} is marked down after failing to connect; not tried for \
                         another {} s",
                        destination_label(destination),
                        (until - now + 999) / 1000
                    ),
                ),
                until,
            ));
        }
        let target = Target {
            host: destination.host.clone(),
            addr: destination.addr,
        };
        let mut conn = match Connection::open(&target, policy).await {
            Ok(conn) => conn,
            Err(error) => {
                if marks_down(&error) {
                    let until = self.host_health.failed(destination.addr, now_ms());
                    warn!(host = %target.label(), until, "destination marked down");
                }
                return Err(Skipped::Failed(error));
            }
        };
        self.host_health.succeeded(destination.addr);
        debug!(
            host = conn.label(),
            tls = conn.is_encrypted(),
            "session open"
        );
        match conn.deliver(tx).await {
            Ok(replies) => Ok(self.finish(lease, conn, replies).await),
            Err(error) => {
                if marks_down(&error) {
                    self.host_health.failed(destination.addr, now_ms());
                }
                Err(Skipped::Failed(error))
            }
        }
    }

    /// The transaction is done: the connection goes back to the pool (if it is still good)
    /// and the replies become outcomes.
    async fn finish(
        &self,
        mut lease: crate::pool::Lease,
        conn: Connection,
        replies: Vec<(u32, Reply)>,
    ) -> Vec<Outcome> {
        let remote = conn.target().host.clone();
        lease.conn = Some(conn);
        self.pool.give_back(lease).await;
        replies
            .into_iter()
            .map(|(idx, reply)| Outcome {
                idx,
                reply,
                remote: Some(remote.clone()),
                not_before: None,
                remote_id: None,
            })
            .collect()
    }
}

/// A failure that says the destination itself is not there: no answer (RFC 3463 X.4.1:
/// refused, timed out) or the server closing on us (421).
fn marks_down(error: &DeliveryError) -> bool {
    let reply = error.reply();
    reply.code() == 421 || reply.enhanced_status().to_string() == "4.4.1"
}

fn destination_label(destination: &Destination) -> String {
    Target {
        host: destination.host.clone(),
        addr: destination.addr,
    }
    .label()
}
