//! Sending rates: GCRA limiters (governor), keyed per tenant and, where a credential has its
//! own rate, per credential. Built once (inside [`crate::Policy`], which the SMTP listeners and
//! the HTTP send API share), so a tenant's allowance is one allowance in this process whichever
//! way its mail comes in.
//!
//! Each limit is "N messages per second" or "N per minute" with a burst of N: a client may send
//! N at once, then one every 1/N of the window. A message is counted when it starts (MAIL, or
//! an API send), like Postfix's anvil counts MAIL commands.
//!
//! Rates are per node: with several nodes each allows the full rate (the daily quota, kept in
//! the database, is the limit shared by every node).

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use mailmux_core::sync::lock;

use crate::rules::RateWindow;

/// Whose allowance a message is taken from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RateKey {
    Tenant(String),
    Credential(String),
    /// A client of the MX listener (no tenant sends there): its address.
    Client(std::net::IpAddr),
}

/// A refused check: which limit, its value, and how long until a message would pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateExceeded {
    pub window: RateWindow,
    pub limit: u64,
    pub retry_after: Duration,
}

/// One limiter: one quota, a GCRA state per key, on the clock `C`.
type Limiter<C> =
    RateLimiter<RateKey, DefaultKeyedStateStore<RateKey>, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// The limiters by (window, rate).
type Limiters<C> = HashMap<(RateWindow, u32), Arc<Limiter<C>>>;

/// Checks between sweeps of keys whose allowance is full again (bounds memory with many
/// tenants and credentials).
const SWEEP_EVERY: u64 = 4096;

/// The limiters, one keyed limiter per distinct (window, rate).
///
/// Why per rate: a governor keyed limiter applies one quota to all of its keys, while each
/// tenant may have its own. Tenants with the same rate (the usual case: their tier's) share a
/// limiter, each under its own key; a tenant whose rate changes continues in the limiter of its
/// new rate, where its allowance starts full. The rate is read with the tenant at every
/// transaction, so a change applies to the next one.
///
/// Time is a dependency (`C`): the relay runs on tokio's clock ([`TokioClock`]), so that a
/// session test can move it on (`tokio::time::advance`) like every other window of the SMTP
/// side; unit tests use governor's fake one. No test waits a rate window out.
pub struct RateLimits<C: Clock + Clone = TokioClock> {
    clock: C,
    limiters: Mutex<Limiters<C>>,
    checks: AtomicU64,
}

impl Default for RateLimits {
    fn default() -> Self {
        RateLimits::with_clock(TokioClock)
    }
}

/// Tokio's monotonic clock, as governor reads time: the system's outside tests, and the one
/// a test pauses and advances inside them.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioClock;

impl Clock for TokioClock {
    type Instant = std::time::Instant;

    fn now(&self) -> Self::Instant {
        tokio::time::Instant::now().into_std()
    }
}

impl<C: Clock + Clone> RateLimits<C> {
    pub fn with_clock(clock: C) -> Self {
        RateLimits {
            clock,
            limiters: Mutex::new(HashMap::new()),
            checks: AtomicU64::new(0),
        }
    }

    /// Takes one message from `key`'s allowance under each limit that is set (0: none), per
    /// minute first: when it refuses, nothing is taken from the per-second one.
    pub fn check(
        &self,
        key: &RateKey,
        per_second: u64,
        per_minute: u64,
    ) -> Result<(), RateExceeded> {
        if self.checks.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            self.sweep();
        }
        for (window, limit) in [
            (RateWindow::PerMinute, per_minute),
            (RateWindow::PerSecond, per_second),
        ] {
            if limit == 0 {
                continue;
            }
            let limiter = self.limiter(window, limit);
            if let Err(not_until) = limiter.check_key(key) {
                return Err(RateExceeded {
                    window,
                    limit,
                    retry_after: not_until.wait_time_from(limiter.clock().now()),
                });
            }
        }
        Ok(())
    }

    fn limiter(&self, window: RateWindow, limit: u64) -> Arc<Limiter<C>> {
        // Rates above u32::MAX per window are unlimited in all but name.
        let rate = u32::try_from(limit).unwrap_or(u32::MAX);
        let mut limiters = lock(&self.limiters);
        limiters
            .entry((window, rate))
            .or_insert_with(|| {
                let burst = NonZeroU32::new(rate).unwrap_or(NonZeroU32::MIN);
                let quota = match window {
                    RateWindow::PerSecond => Quota::per_second(burst),
                    RateWindow::PerMinute => Quota::per_minute(burst),
                };
                Arc::new(RateLimiter::dashmap_with_clock(quota, self.clock.clone()))
            })
            .clone()
    }

    fn sweep(&self) {
        let limiters: Vec<_> = {
            let limiters = lock(&self.limiters);
            limiters.values().cloned().collect()
        };
        for limiter in limiters {
            limiter.retain_recent();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(id: &str) -> RateKey {
        RateKey::Tenant(id.into())
    }

    #[test]
    fn burst_then_refused_with_a_wait_then_allowed_again() {
        let clock = governor::clock::FakeRelativeClock::default();
        let rates = RateLimits::with_clock(clock.clone());
        let a = tenant("t_a");
        assert!(rates.check(&a, 3, 0).is_ok());
        assert!(rates.check(&a, 3, 0).is_ok());
        assert!(rates.check(&a, 3, 0).is_ok());
        let refused = rates.check(&a, 3, 0).unwrap_err();
        assert_eq!(refused.window, RateWindow::PerSecond);
        assert_eq!(refused.limit, 3);
        assert!(refused.retry_after > Duration::ZERO);
        assert!(refused.retry_after <= Duration::from_millis(334));
        // Another tenant on the same rate has its own allowance.
        assert!(rates.check(&tenant("t_b"), 3, 0).is_ok());
        clock.advance(refused.retry_after - Duration::from_nanos(1));
        assert!(
            rates.check(&a, 3, 0).is_err(),
            "not a moment before the wait is over"
        );
        clock.advance(Duration::from_nanos(1));
        assert!(rates.check(&a, 3, 0).is_ok());
    }

    #[test]
    fn per_minute_bites_after_its_burst_and_zero_is_unlimited() {
        let rates = RateLimits::default();
        let a = tenant("t_a");
        for _ in 0..5 {
            assert!(rates.check(&a, 0, 5).is_ok());
        }
        let refused = rates.check(&a, 100, 5).unwrap_err();
        assert_eq!((refused.window, refused.limit), (RateWindow::PerMinute, 5));
        assert!(refused.retry_after > Duration::from_secs(10));
        for _ in 0..1000 {
            assert!(rates.check(&tenant("t_free"), 0, 0).is_ok());
        }
    }

    #[test]
    fn a_credential_is_keyed_apart_from_its_tenant() {
        let rates = RateLimits::default();
        assert!(
            rates
                .check(&RateKey::Credential("c_1".into()), 1, 0)
                .is_ok()
        );
        assert!(
            rates
                .check(&RateKey::Credential("c_1".into()), 1, 0)
                .is_err()
        );
        assert!(rates.check(&RateKey::Tenant("c_1".into()), 1, 0).is_ok());
    }

    #[test]
    fn a_changed_rate_applies_at_once() {
        let rates = RateLimits::default();
        let a = tenant("t_a");
        assert!(rates.check(&a, 1, 0).is_ok());
        assert!(rates.check(&a, 1, 0).is_err());
        // Raised: the next check runs under the new rate.
        assert!(rates.check(&a, 10, 0).is_ok());
    }
}
