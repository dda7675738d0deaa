//! What every handler can reach, built once by `serve`: in a file of its own so that the
//! resources, the background jobs and the router all depend on it and it on none of them.

use std::sync::Arc;

use mailmux_core::{Config, MetricSource};
use mailmux_policy::Policy;
use mailmux_queue::Queue;
use mailmux_store::Store;

/// What every handler can reach.
#[derive(Clone)]
pub struct AdminState {
    pub config: Arc<Config>,
    pub store: Store,
    /// The operator bearer token in force (configured or generated).
    pub operator_token: Arc<String>,
    /// The submission policy the SMTP listeners use (the same instance, so a tenant's rate
    /// allowance is shared by SMTP and the HTTP send API).
    pub policy: Arc<Policy>,
    /// The durable queue the HTTP send API enqueues into.
    pub queue: Arc<Queue>,
    /// In-process counters of the other parts (SMTP sessions, auth failures, deliveries),
    /// rendered by `/metrics` before the numbers counted from the database.
    pub metric_sources: Vec<Arc<dyn MetricSource>>,
    /// SES provisioning (`/api/tenants/{id}/ses`, domains added to `ses` tenants, tenant
    /// deletion); `None` where SES is not wired (tests of other parts).
    pub ses: Option<Arc<mailmux_ses::Provisioner>>,
    /// The process's components, for `/healthz`.
    pub health: mailmux_core::health::Health,
}
