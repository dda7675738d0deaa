//! One message to one next hop: a pooled connection if there is one, else the hop's hosts in
//! order until one of them takes the transaction.
//!
//! Pooled connections are tried first; one that turns out dead (RSET or the transaction fails
//! at the session level) is dropped and costs the recipients nothing: the next idle one, or a
//! fresh connection, carries the same attempt. Then hosts come in MX order (or the
//! smarthost's addresses); a host that cannot be reached, refuses the session, fails TLS that
//! is required or says 421 is skipped for the next. When none is left, every recipient of the
//! hop is deferred with the last reason.

use std::net::SocketAddr;

use mailmux_store::{QueuedMessage, QueuedRecipient};
use tracing::{debug, warn};

use crate::Deliverer;
use crate::client::{Connection, SessionPolicy, Target, Transaction};
use crate::error::DeliveryError;
use crate::mx::MxHost;
use crate::pool::{Lease, NextHop};
use crate::reply::Reply;

/// Addresses tried per host, and in all, in one attempt (Postfix tries 5 in all): enough to
/// get past a dead host or two, few enough that a hop with dozens of dead addresses does not
/// hold a worker for an hour.
const MAX_ADDRESSES_PER_HOST: usize = 3;
const MAX_ADDRESSES: usize = 8;

/// One recipient's outcome in this attempt.
#[derive(Debug, Clone)]
pub(crate) struct Outcome {
    pub idx: u32,
    pub reply: Reply,
    /// The host that gave the reply, when one did.
    pub remote: Option<String>,
}

impl Deliverer {
    /// Delivers `message` (as `body`: the queued bytes, or those with a DKIM signature on
    /// top) to `recipients`, all of which go to `hop`.
    pub(crate) async fn deliver_to_hop(
        &self,
        message: &QueuedMessage,
        body: &[u8],
        recipients: &[&QueuedRecipient],
        hop: NextHop,
    ) -> Vec<Outcome> {
        let tx = Transaction {
            mail_from: &message.mail_from,
            flags: message.flags,
            recipients: recipients
                .iter()
                .map(|r| (r.idx, r.address.as_str()))
                .collect(),
            body,
        };
        let everyone = |reply: Reply, remote: Option<&str>| -> Vec<Outcome> {
            recipients
                .iter()
                .map(|r| Outcome {
                    idx: r.idx,
                    reply: reply.clone(),
                    remote: remote.map(str::to_string),
                })
                .collect()
        };

        let mut lease = self.pool.lease(&hop).await;
        while let Some(mut conn) = lease.conn.take() {
            let result = match conn.reset().await {
                Ok(()) => conn.deliver(&tx).await,
                Err(error) => Err(error),
            };
            match result {
                Ok(replies) => {
                    debug!(host = conn.label(), "delivered over a pooled connection");
                    return self.finish(lease, conn, replies).await;
                }
                Err(error) => {
                    debug!(host = conn.label(), %error, "pooled connection is gone; trying another");
                    lease.conn = lease.next_idle();
                }
            }
        }

        let (hosts, port, policy) = match self.hosts(&hop).await {
            Ok(found) => found,
            Err(error) => {
                warn!(%hop, reply = %error.reply(), "no host to deliver to");
                return everyone(error.reply(), error.host());
            }
        };
        let mut last_error: Option<DeliveryError> = None;
        let mut tried = 0;
        for host in hosts {
            let addrs = if host.addrs.is_empty() {
                match self.mx.addresses(&host.name).await {
                    Ok(addrs) => addrs,
                    Err(error) => {
                        warn!(host = %host.name, reply = %error.reply(), "MX host has no address; trying the next");
                        last_error = Some(error);
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
                tried += 1;
                let target = Target {
                    host: host.name.clone(),
                    addr: SocketAddr::new(ip, port),
                };
                match self.try_target(&target, policy, &tx).await {
                    Ok((conn, replies)) => return self.finish(lease, conn, replies).await,
                    Err(error) => {
                        warn!(host = %target.label(), reply = %error.reply(), "delivery to host failed; trying the next");
                        last_error = Some(error);
                    }
                }
            }
        }
        match last_error {
            Some(error) => everyone(error.reply(), error.host()),
            None => everyone(
                Reply::new(451, format!("4.4.4 no host could be tried for {hop}")),
                None,
            ),
        }
    }

    /// The hosts of a hop, the port to use and how to hold the session.
    async fn hosts(
        &self,
        hop: &NextHop,
    ) -> Result<(Vec<MxHost>, u16, &SessionPolicy), DeliveryError> {
        match hop {
            NextHop::Mx(domain) => {
                let hosts = self.mx.hosts(domain).await?;
                Ok((hosts, self.config.delivery.mx_port, &self.mx_policy))
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
                Ok((vec![host], smarthost.port(), &smarthost.policy))
            }
        }
    }

    async fn try_target(
        &self,
        target: &Target,
        policy: &SessionPolicy,
        tx: &Transaction<'_>,
    ) -> Result<(Connection, Vec<(u32, Reply)>), DeliveryError> {
        let mut conn = Connection::open(target, policy).await?;
        debug!(
            host = conn.label(),
            tls = conn.is_encrypted(),
            "session open"
        );
        let replies = conn.deliver(tx).await?;
        Ok((conn, replies))
    }

    /// The transaction is done: the connection goes back to the pool (if it is still good)
    /// and the replies become outcomes.
    async fn finish(
        &self,
        mut lease: Lease,
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
            })
            .collect()
    }
}
