//! Routing: which transport carries a tenant's mail (`tenant.transport`, else
//! `delivery.transport`).
//!
//! The tenant is read from the store through a cache that keeps an answer for at most
//! [`TENANT_CACHE_TTL`]: a busy relay asks once a second per tenant instead of once per
//! message, and an operator who switches a tenant's transport sees it take effect within a
//! second.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use mailmux_core::TransportKind;
use mailmux_store::{Store, StoreError};

/// How long a tenant's transport is trusted without asking the store again.
pub(crate) const TENANT_CACHE_TTL: Duration = Duration::from_secs(1);

/// Entries kept before stale ones are swept out (bounds memory with many tenants).
const CACHE_SWEEP_AT: usize = 4096;

pub(crate) struct Router {
    store: Store,
    default: TransportKind,
    cache: Mutex<HashMap<String, (Instant, TransportKind)>>,
}

impl Router {
    pub(crate) fn new(store: Store, default: TransportKind) -> Router {
        Router {
            store,
            default,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The transport for `tenant_id`'s mail. A tenant that no longer exists gets the default:
    /// its messages are deleted with it, so whatever is still in flight just finishes.
    pub(crate) async fn transport(&self, tenant_id: &str) -> Result<TransportKind, StoreError> {
        let now = Instant::now();
        if let Some((at, kind)) = self.lock().get(tenant_id)
            && now.duration_since(*at) < TENANT_CACHE_TTL
        {
            return Ok(*kind);
        }
        let kind = self
            .store
            .get_tenant(tenant_id)
            .await?
            .and_then(|tenant| tenant.transport)
            .unwrap_or(self.default);
        let mut cache = self.lock();
        if cache.len() >= CACHE_SWEEP_AT {
            cache.retain(|_, (at, _)| now.duration_since(*at) < TENANT_CACHE_TTL);
        }
        cache.insert(tenant_id.to_string(), (now, kind));
        Ok(kind)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Instant, TransportKind)>> {
        // The map holds plain values: a panic elsewhere cannot leave it inconsistent.
        self.cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
