//! Holding a tenant's mail while it may not send (paused, suspended, disabled).
//!
//! The scheduler never claims such a tenant's mail (`claim_due` skips it), but a message can
//! reach a worker without a claim: written already leased and handed over from memory at
//! enqueue, then the tenant was paused while it waited for a free worker. So every attempt
//! starts from the tenant's route (the route cache answers, at most a second old), and a
//! message whose tenant is not sending is given back untried: no attempt is counted, no retry
//! is scheduled, nothing bounces. It is claimed again once its tenant is active.

use mailmux_queue::Lease;
use tracing::{info, warn};

use crate::Deliverer;

impl Deliverer {
    /// Gives the message back to the store untried (its route says the tenant is not sending).
    pub(crate) async fn hold(&self, lease: Lease) {
        match self.queue.hold(lease).await {
            Ok(()) => info!("held: the tenant is not active; delivery resumes when it is"),
            // The lease runs out instead; the scheduler still skips the tenant until then.
            Err(error) => warn!(%error, "held, but the lease could not be given back"),
        }
    }
}
