//! Routing: which transport carries a tenant's mail (`tenant.transport`, else
//! `delivery.transport`), and whether it is DKIM-signed on the way (`dkim_signing`).
//!
//! The tenant is read from the store through a cache that keeps an answer for at most
//! `delivery.cache_ttl_ms` (a second by default): a busy relay asks once a second per tenant
//! instead of once per message, and an operator who switches a tenant's transport sees it
//! take effect within a second.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use mailmux_core::TransportKind;
use mailmux_core::sync::lock;
use mailmux_store::{Store, StoreError};
// tokio's clock, so tests can move it instead of waiting out the TTL.
use tokio::time::Instant;

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
    /// How long an answer is trusted without asking the store again.
    ttl: Duration,
    cache: Mutex<HashMap<String, (Instant, Route)>>,
}

impl Router {
    pub(crate) fn new(store: Store, default: TransportKind, ttl: Duration) -> Router {
        Router {
            store,
            default,
            ttl,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The route of `tenant_id`'s mail. A tenant that no longer exists gets the default
    /// transport, unsigned: its messages are deleted with it, so whatever is still in flight
    /// just finishes.
    pub(crate) async fn route(&self, tenant_id: &str) -> Result<Route, StoreError> {
        let now = Instant::now();
        if let Some((at, route)) = self.lock().get(tenant_id)
            && now.duration_since(*at) < self.ttl
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
            let ttl = self.ttl;
            cache.retain(|_, (at, _)| now.duration_since(*at) < ttl);
        }
        cache.insert(tenant_id.to_string(), (now, route));
        Ok(route)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Instant, Route)>> {
        lock(&self.cache)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Moves tokio's clock by `by` at once; paused only for the jump, since the store's I/O
    /// runs on real time.
    async fn advance(by: Duration) {
        tokio::time::pause();
        tokio::time::advance(by).await;
        tokio::time::resume();
    }

    #[tokio::test]
    async fn a_tenant_change_reaches_delivery_once_the_ttl_passed() {
        let dir = std::env::temp_dir().join(format!("mailmux-route-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = Store::connect(&format!("sqlite://{}/m.db", dir.display()), 2)
            .await
            .unwrap();
        store.migrate().await.unwrap();
        let mut tenant =
            mailmux_core::Tenant::new("t_1".into(), "acme".into(), mailmux_core::Tier::Starter, 1);
        store.create_tenant(&tenant, None).await.unwrap();
        let ttl = Duration::from_secs(1);
        let router = Router::new(store.clone(), TransportKind::Mx, ttl);
        assert_eq!(
            router.route("t_1").await.unwrap().transport,
            TransportKind::Mx
        );

        tenant.transport = Some(TransportKind::Smarthost);
        store.update_tenant(&tenant, None).await.unwrap();
        // Within the TTL the cached answer stands: one query per tenant per TTL.
        assert_eq!(
            router.route("t_1").await.unwrap().transport,
            TransportKind::Mx
        );
        advance(ttl).await;
        assert_eq!(
            router.route("t_1").await.unwrap().transport,
            TransportKind::Smarthost
        );

        // With no TTL every message reads the store.
        let uncached = Router::new(store.clone(), TransportKind::Mx, Duration::ZERO);
        assert!(uncached.route("t_1").await.unwrap().sending);
        tenant.enabled = false;
        store.update_tenant(&tenant, None).await.unwrap();
        assert!(!uncached.route("t_1").await.unwrap().sending);
        std::fs::remove_dir_all(&dir).ok();
    }
}
