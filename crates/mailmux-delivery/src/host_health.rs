//! Destinations that are down, remembered between messages.
//!
//! A destination address that refused the connection, did not answer in time or said 421 is
//! marked down for `delivery.host_down_secs`, doubled for each further failure in a row (at
//! most 16×): while it is down, its mail is deferred without a connection attempt and waits
//! until the destination's period ends, instead of every queued message spending a connect
//! timeout on it (Postfix calls this a dead host). The first attempt after the period is the
//! probe: success clears the record, failure marks it down for twice as long.
//!
//! Times are passed in (Unix ms), so the rules are tested without waiting.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use mailmux_core::sync::lock;

/// Records kept before the ones that are no longer down are forgotten (bounds memory).
const SWEEP_AT: usize = 4096;

/// Longest down period, as a multiple of the first one.
const MAX_BACKOFF_FACTOR: u32 = 16;

pub(crate) struct HostHealth {
    first_period: Duration,
    down: Mutex<HashMap<SocketAddr, Down>>,
}

#[derive(Debug, Clone, Copy)]
struct Down {
    /// Failures in a row.
    failures: u32,
    /// Unix ms until which the destination is not tried.
    until: i64,
}

impl HostHealth {
    pub(crate) fn new(first_period: Duration) -> HostHealth {
        HostHealth {
            first_period,
            down: Mutex::new(HashMap::new()),
        }
    }

    /// Until when `addr` is down (Unix ms), if it is at `now`.
    pub(crate) fn down_until(&self, addr: SocketAddr, now: i64) -> Option<i64> {
        lock(&self.down)
            .get(&addr)
            .map(|down| down.until)
            .filter(|until| *until > now)
    }

    /// `addr` failed at `now`: down for the first period, or twice the last one. Returns
    /// until when.
    pub(crate) fn failed(&self, addr: SocketAddr, now: i64) -> i64 {
        let mut down = lock(&self.down);
        if down.len() >= SWEEP_AT {
            down.retain(|_, d| d.until > now);
        }
        let first = self.first_period.as_millis() as i64;
        let entry = down.entry(addr).or_insert(Down {
            failures: 0,
            until: now,
        });
        entry.failures = entry.failures.saturating_add(1);
        let factor = 1i64 << (entry.failures - 1).min(MAX_BACKOFF_FACTOR.ilog2());
        // A failure reported by an attempt that started before the period began must not
        // shorten it.
        entry.until = entry.until.max(now + first * factor);
        entry.until
    }

    /// `addr` took a session: it is up.
    pub(crate) fn succeeded(&self, addr: SocketAddr) {
        lock(&self.down).remove(&addr);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_mark_a_destination_down_for_longer_each_time() {
        let health = HostHealth::new(Duration::from_secs(60));
        let addr: SocketAddr = "192.0.2.1:25".parse().unwrap();
        let other: SocketAddr = "192.0.2.1:587".parse().unwrap();
        assert_eq!(health.down_until(addr, 0), None);
        assert_eq!(health.failed(addr, 1_000), 61_000);
        assert_eq!(health.down_until(addr, 60_999), Some(61_000));
        assert_eq!(
            health.down_until(other, 1_000),
            None,
            "per address and port"
        );
        // The probe after the period fails: twice as long, then 4×, 8×, 16×, and no more.
        assert_eq!(health.failed(addr, 61_000), 61_000 + 120_000);
        let periods: Vec<i64> = (0..4)
            .map(|_| health.failed(addr, 10_000_000) - 10_000_000)
            .collect();
        assert_eq!(periods, [240_000, 480_000, 960_000, 960_000]);
        assert_eq!(health.down_until(addr, 10_959_999), Some(10_960_000));
        assert_eq!(
            health.down_until(addr, 10_960_000),
            None,
            "the probe may go"
        );
        // A session clears it.
        health.succeeded(addr);
        assert_eq!(health.failed(addr, 20_000_000), 20_060_000);
    }
}
