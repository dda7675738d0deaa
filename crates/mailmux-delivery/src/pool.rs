//! Connections per destination, reused across messages.
//!
//! A destination is one address of one host (an MX host or the smarthost) as one sending
//! identity, not a recipient domain: the many domains hosted on one provider's MX share its
//! connections and its limit, as the remote sees them. Each destination has a semaphore of
//! `delivery.max_connections_per_destination` permits; a permit is held by every open
//! connection to it, busy or idle, so the limit bounds what the remote sees, not just what we
//! are doing right now. After a transaction a healthy connection waits idle for
//! `delivery.idle_connection_secs`; the next message for the destination takes it (LIFO: the
//! warmest one, letting the others expire), RSETs it and sends.
//!
//! A waiting message wakes either when a permit frees up (a connection closed) or when a
//! connection is given back idle, whichever comes first.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use mailmux_core::sync::lock;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tracing::debug;

use crate::client::Connection;

/// Destinations remembered before those with no connection at all are forgotten (bounds
/// memory for a relay that sends to many hosts).
const SWEEP_AT: usize = 4096;

/// Where a connection goes: the unit of reuse and of the connection limit.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Destination {
    pub addr: SocketAddr,
    /// The host's name: its certificate is checked against it, so two names on one address
    /// are two destinations.
    pub host: String,
    /// Who we are to it (`mx`, or the smarthost's login): a connection authenticated as one
    /// identity never carries another's mail.
    pub identity: String,
}

pub(crate) struct Pool {
    destinations: Mutex<HashMap<Destination, Arc<Slot>>>,
    max_per_destination: usize,
    idle_for: Duration,
    next_id: AtomicU64,
}

struct Slot {
    permits: Arc<Semaphore>,
    idle: Mutex<Vec<Idle>>,
    /// Signalled when a connection is given back idle.
    returned: Notify,
}

struct Idle {
    id: u64,
    conn: Connection,
    permit: OwnedSemaphorePermit,
}

/// The right to one connection to a destination, with the connection when a pooled one was
/// taken.
pub(crate) struct Lease {
    slot: Arc<Slot>,
    permit: OwnedSemaphorePermit,
    /// A pooled connection (RSET it before use), or none: open a fresh one and put it here to
    /// have it kept by [`Pool::give_back`].
    pub conn: Option<Connection>,
}

impl Pool {
    pub(crate) fn new(max_per_destination: usize, idle_for: Duration) -> Pool {
        Pool {
            destinations: Mutex::new(HashMap::new()),
            max_per_destination: max_per_destination.max(1),
            idle_for,
            next_id: AtomicU64::new(0),
        }
    }

    /// Waits until a connection to `destination` may be used: an idle one, or room for a new
    /// one.
    pub(crate) async fn lease(&self, destination: &Destination) -> Lease {
        let slot = self.slot(destination);
        loop {
            // Registered before looking, so a give-back between the look and the wait is not
            // missed.
            let returned = slot.returned.notified();
            tokio::pin!(returned);
            returned.as_mut().enable();
            if let Some(idle) = lock(&slot.idle).pop() {
                return Lease {
                    slot: slot.clone(),
                    permit: idle.permit,
                    conn: Some(idle.conn),
                };
            }
            tokio::select! {
                permit = slot.permits.clone().acquire_owned() => {
                    let permit = permit.expect("the pool never closes its semaphores");
                    return Lease { slot: slot.clone(), permit, conn: None };
                }
                () = &mut returned => continue,
            }
        }
    }

    /// Ends a lease: a reusable connection waits idle for the next message; anything else
    /// is closed and its permit freed.
    pub(crate) async fn give_back(&self, lease: Lease) {
        let Lease { slot, permit, conn } = lease;
        let Some(conn) = conn else { return };
        if !conn.is_reusable() || self.idle_for.is_zero() {
            conn.quit().await;
            return;
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        lock(&slot.idle).push(Idle { id, conn, permit });
        slot.returned.notify_one();
        // One timer per idle period: if the connection is still idle (same id) when it fires,
        // it is closed. Weak, so a forgotten destination does not stay alive for its timer.
        let weak = Arc::downgrade(&slot);
        let idle_for = self.idle_for;
        tokio::spawn(async move {
            tokio::time::sleep(idle_for).await;
            expire(weak, id).await;
        });
    }

    /// Closes every idle connection (at shutdown).
    pub(crate) async fn close_idle(&self) {
        let slots: Vec<Arc<Slot>> = lock(&self.destinations).values().cloned().collect();
        for slot in slots {
            let idle: Vec<Idle> = lock(&slot.idle).drain(..).collect();
            for entry in idle {
                entry.conn.quit().await;
            }
        }
    }

    /// Idle connections kept for `destination` (tests).
    #[cfg(test)]
    pub(crate) fn idle_count(&self, destination: &Destination) -> usize {
        lock(&self.destinations)
            .get(destination)
            .map(|slot| lock(&slot.idle).len())
            .unwrap_or(0)
    }

    fn slot(&self, destination: &Destination) -> Arc<Slot> {
        let mut destinations = lock(&self.destinations);
        if destinations.len() >= SWEEP_AT {
            let max = self.max_per_destination;
            // A slot nobody holds, with no connection open, carries no state worth keeping.
            destinations.retain(|_, slot| {
                Arc::strong_count(slot) > 1 || slot.permits.available_permits() < max
            });
        }
        destinations
            .entry(destination.clone())
            .or_insert_with(|| {
                Arc::new(Slot {
                    permits: Arc::new(Semaphore::new(self.max_per_destination)),
                    idle: Mutex::new(Vec::new()),
                    returned: Notify::new(),
                })
            })
            .clone()
    }
}

impl Lease {
    /// Takes another idle connection of the same destination, if there is one, instead of the one
    /// this lease had (which the caller found dead and dropped).
    pub(crate) fn next_idle(&mut self) -> Option<Connection> {
        let idle = lock(&self.slot.idle).pop()?;
        // The taken connection brings its own permit; ours is released by the swap.
        self.permit = idle.permit;
        Some(idle.conn)
    }
}

async fn expire(slot: Weak<Slot>, id: u64) {
    let Some(slot) = slot.upgrade() else { return };
    let expired = {
        let mut idle = lock(&slot.idle);
        let position = idle.iter().position(|entry| entry.id == id);
        position.map(|i| idle.remove(i))
    };
    if let Some(entry) = expired {
        debug!(host = entry.conn.label(), "closing idle connection");
        entry.conn.quit().await;
        // `entry.permit` drops here: room for a new connection.
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn destination(addr: &str) -> Destination {
        Destination {
            addr: addr.parse().unwrap(),
            host: "mx.a.test".into(),
            identity: "mx".into(),
        }
    }

    #[tokio::test]
    async fn leases_are_limited_per_destination() {
        let pool = Pool::new(2, Duration::from_secs(30));
        let dest = destination("192.0.2.1:25");
        let first = pool.lease(&dest).await;
        let _second = pool.lease(&dest).await;
        // A third waits for a permit...
        let third = tokio::time::timeout(Duration::from_millis(50), pool.lease(&dest)).await;
        assert!(third.is_err(), "the limit of 2 must hold");
        // ...but another destination does not.
        let other = destination("192.0.2.2:25");
        let _other = tokio::time::timeout(Duration::from_millis(50), pool.lease(&other))
            .await
            .expect("other destinations have their own limit");
        // Ending a lease without a connection frees its permit.
        pool.give_back(first).await;
        tokio::time::timeout(Duration::from_millis(50), pool.lease(&dest))
            .await
            .expect("a freed permit is reused");
        assert_eq!(pool.idle_count(&dest), 0);
    }
}
