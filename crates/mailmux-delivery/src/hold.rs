//! Holding a tenant's mail while it may not send (paused, suspended, disabled).
//!
//! The scheduler never claims such a tenant's mail (`claim_due` skips it), but a message can
//! reach a worker without a claim: written already leased and handed over from memory at
//! enqueue, then the tenant was paused while it waited for a free worker. So a worker asks
//! before every attempt (the route cache answers, at most a second old) and gives the message
//! back untried: no attempt is counted, no retry is scheduled, nothing bounces. It is claimed
//! again once its tenant is active.

use mailmux_queue::Job;
use tracing::{info, warn};

use crate::Deliverer;

impl Deliverer {
    /// Gives the job back to the store when its tenant may not send now; otherwise returns
    /// it for delivery.
    pub(crate) async fn hold_if_not_sending(&self, job: Job) -> Option<Job> {
        match self.router.route(&job.message.tenant_id).await {
            Ok(route) if !route.sending => {}
            // Sending, or the tenant cannot be read now: the attempt goes ahead (and, on a
            // lookup failure, defers with its own reason).
            _ => return Some(job),
        }
        match self.queue.hold(job.lease).await {
            Ok(()) => info!("held: the tenant is not active; delivery resumes when it is"),
            // The lease runs out instead; the scheduler still skips the tenant until then.
            Err(error) => warn!(%error, "held, but the lease could not be given back"),
        }
        None
    }
}
