//! Leases this node holds on messages it is working on.
//!
//! A message handed to delivery is leased to this node in the store (`lease_owner`,
//! `lease_until`). The lease is short (`queue.lease_secs`, 30 s by default) so that mail held
//! by a node that dies is taken over by the others within about that long; an attempt may
//! legitimately take much longer (a slow end-of-data reply, waiting for a connection slot), so
//! the heartbeat renews the lease of everything in [`InFlight`] every third of the lease,
//! through the single writer.
//!
//! Each job carries a [`Lease`]: while it lives, its id is in flight here, renewed by the
//! heartbeat and skipped by the scheduler (a claim that finds a message of ours whose lease
//! ran out must not start a second attempt beside the running one). Dropping the lease (the
//! attempt reported, the message was held, or the delivery task panicked) takes the id out, so
//! the heartbeat stops renewing it and a lost attempt's message comes back when its lease
//! runs out.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use mailmux_core::QueueId;
use mailmux_core::sync::lock;

/// The ids of the messages this node has in flight: in the delivery channel or being
/// delivered.
#[derive(Debug, Default)]
pub(crate) struct InFlight {
    ids: Mutex<HashSet<String>>,
}

impl InFlight {
    /// Marks `id` in flight and returns the lease that keeps it so; `None` when it already is
    /// (the scheduler claimed a message whose attempt is still running here).
    pub(crate) fn take(self: &Arc<Self>, id: &QueueId, owner: &str) -> Option<Lease> {
        if !lock(&self.ids).insert(id.0.clone()) {
            return None;
        }
        Some(Lease {
            id: id.clone(),
            owner: owner.to_string(),
            in_flight: self.clone(),
        })
    }

    /// Every id in flight now (what the heartbeat renews).
    pub(crate) fn ids(&self) -> Vec<String> {
        lock(&self.ids).iter().cloned().collect()
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        lock(&self.ids).len()
    }
}

/// This node's hold on one message for one attempt; see the module comment.
#[derive(Debug)]
pub struct Lease {
    id: QueueId,
    owner: String,
    in_flight: Arc<InFlight>,
}

impl Lease {
    pub fn message_id(&self) -> &QueueId {
        &self.id
    }

    /// The node holding the lease: the report of the attempt is recorded only while the
    /// store still names this node as the owner.
    pub fn owner(&self) -> &str {
        &self.owner
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        lock(&self.in_flight.ids).remove(&self.id.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_is_in_flight_once_until_its_lease_drops() {
        let in_flight = Arc::new(InFlight::default());
        let id = QueueId("q1".into());
        let lease = in_flight.take(&id, "node-a").expect("first take");
        assert_eq!(lease.owner(), "node-a");
        assert!(
            in_flight.take(&id, "node-a").is_none(),
            "a second attempt while the first runs"
        );
        assert_eq!(in_flight.ids(), ["q1"]);
        drop(lease);
        assert_eq!(in_flight.len(), 0);
        assert!(in_flight.take(&id, "node-a").is_some());
    }

    #[test]
    fn a_panicking_holder_still_gives_the_lease_back() {
        let in_flight = Arc::new(InFlight::default());
        let id = QueueId("q2".into());
        let lease = in_flight.take(&id, "node-a").unwrap();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            let _held = lease;
            panic!("delivery task failed");
        }));
        assert!(result.is_err());
        assert_eq!(in_flight.len(), 0, "the heartbeat stops renewing it");
    }
}
