//! Routing: which transport carries a tenant's mail (`tenant.transport`, else
//! `delivery.transport`), and whether it is DKIM-signed on the way (`dkim_signing`).
//!
//! The tenant is read from the store through a cache that keeps an answer for at most
//! [`TENANT_CACHE_TTL`]: a busy relay asks once a second per tenant instead of once per
//! message, and an operator who switches a tenant's transport sees it take effect within a
//! second.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use mailmux_core::TransportKind;
use mailmux_core::sync::lock;
use mailmux_store::{Store, StoreError};

/// How long a tenant's transport is trusted without asking the store again.
pub(crate) const TENANT_CACHE_TTL: Duration = Duration::from_secs(1);

/// Entries kept before stale ones are swept out (bounds memory with many tenants).
const CACHE_SWEEP_AT: usize = 4096;

/// How a tenant's mail leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Route {
    pub transport: TransportKind,
    /// The tenant's `dkim_signing` feature.
    pub dkim_signing: bool,
    /// Active and enabled: a tenant that is not has its mail held (hold.rs).
    pub sending: bool,
    /// The tenant's `custom_domains` feature: its return-path domains apply (return_path.rs).
    pub custom_domains: bool,
}

pub(crate) struct Router {
    store: Store,
    default: TransportKind,
    cache: Mutex<HashMap<String, (Instant, Route)>>,
}

impl Router {
    pub(crate) fn new(store: Store, default: TransportKind) -> Router {
        Router {
            store,
            default,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The route of `tenant_id`'s mail. A tenant that no longer exists gets the default
    /// transport, unsigned: its messages are deleted with it, so whatever is still in flight
    /// just finishes.
    pub(crate) async fn route(&self, tenant_id: &str) -> Result<Route, StoreError> {
        let now = Instant::now();
        if let Some((at, route)) = self.lock().get(tenant_id)
            && now.duration_since(*at) < TENANT_CACHE_TTL
        {
            return Ok(*route);
        }
        let tenant = self.store.get_tenant(tenant_id).await?;
        let route = Route {
            transport: tenant
                .as_ref()
                .and_then(|tenant| tenant.transport)
                .unwrap_or(self.default),
            dkim_signing: tenant
                .as_ref()
                .is_some_and(|tenant| tenant.features.dkim_signing),
            // Gone: delivered as before (see above), not held forever.
            sending: tenant.as_ref().is_none_or(|tenant| tenant.is_sending()),
            custom_domains: tenant.is_some_and(|tenant| tenant.features.custom_domains),
        };
        let mut cache = self.lock();
        if cache.len() >= CACHE_SWEEP_AT {
            cache.retain(|_, (at, _)| now.duration_since(*at) < TENANT_CACHE_TTL);
        }
        cache.insert(tenant_id.to_string(), (now, route));
        Ok(route)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Instant, Route)>> {
        lock(&self.cache)
    }
}
