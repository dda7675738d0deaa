//! Holding a tenant's mail while it may not send (paused, suspended, disabled).
//!
//! The scheduler never claims such a tenant's mail (`claim_due` skips it), but a message can
//! reach a worker without a claim: written already leased and handed over from memory at
//! enqueue, then the tenant was paused while it waited for a free worker. So a worker asks
//! before every attempt (the route cache answers, at most a second old) and gives the message
//! back untried: no attempt is counted, no retry is scheduled, nothing bounces. It is claimed
//! again once its tenant is active.

use mailmux_store::QueuedMessage;
use tracing::{info, warn};

use crate::Deliverer;

impl Deliverer {
    /// True when the message was held (given back to the store) instead of being delivered.
    pub(crate) async fn hold_if_not_sending(&self, message: &QueuedMessage) -> bool {
        match self.router.route(&message.tenant_id).await {
            Ok(route) if !route.sending => {}
            // Sending, or the tenant cannot be read now: the attempt goes ahead (and, on a
            // lookup failure, defers with its own reason).
            _ => return false,
        }
        match self.queue.hold(&message.id).await {
            Ok(()) => info!("held: the tenant is not active; delivery resumes when it is"),
            // The lease runs out instead; the scheduler still skips the tenant until then.
            Err(error) => warn!(%error, "held, but the lease could not be given back"),
        }
        true
    }
}
