//! The guards every session passes, shared by all of them through the server context: who may
//! connect (sessions per client IP, the AUTH-failure lockout), who may authenticate (the
//! credential cache), and how many sessions a tenant may hold. Each is a small piece of
//! in-memory state with its own rule; none does I/O but the credential cache's store lookup.
//!
//! - **Per-IP sessions** (`smtp.max_connections_per_ip`).
//! - **AUTH failures** over a sliding window (`smtp.auth_failure_window_secs`), per username
//!   and client IP (`smtp.auth_failure_limit`: that username is refused from that IP) and per
//!   client IP (`smtp.auth_failure_ip_limit`, higher: the IP's new connections are turned away
//!   too) until the window moves on. A password guesser gets a handful of tries per window,
//!   not thousands, and one app's wrong password behind a shared NAT locks out only itself.
//! - **Credentials** are cached for a second: a burst of connections from one app costs one
//!   query, and a revoked credential stops working within a second.
//! - **Tenant sessions** (`max_connections`): AUTH takes one of the tenant's places and the
//!   session gives it back when it ends, whatever ends it. Counted per node, like the per-IP
//!   limit.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mailmux_core::Credential;
use mailmux_core::sync::lock;
use mailmux_store::Store;
use tokio::time::Instant;

/// Open sessions per client IP, against `smtp.max_connections_per_ip`: one address cannot
/// take every session of the process.
pub(crate) struct PerIpSessions {
    max: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

impl PerIpSessions {
    pub(crate) fn new(max: usize) -> PerIpSessions {
        PerIpSessions {
            max,
            open: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a place for one more session from `ip`, unless it has `max` open.
    pub(crate) fn try_enter(&self, ip: IpAddr) -> bool {
        let mut open = lock(&self.open);
        let count = open.entry(ip).or_insert(0);
        if *count >= self.max {
            if *count == 0 {
                open.remove(&ip);
            }
            return false;
        }
        *count += 1;
        true
    }

    /// Gives back a place taken by [`PerIpSessions::try_enter`].
    pub(crate) fn leave(&self, ip: IpAddr) {
        let mut open = lock(&self.open);
        if let Some(count) = open.get_mut(&ip) {
            *count -= 1;
            if *count == 0 {
                open.remove(&ip);
            }
        }
    }
}

/// How long a credential read from the store may be reused. Revocation must bite within a
/// second, so this is the longest a revoked credential can still authenticate (or, checked at
/// MAIL, send). Ages are read on tokio's clock, like the lockout windows, so tests advance it
/// instead of waiting the second out.
const CREDENTIAL_TTL: Duration = Duration::from_secs(1);

/// Above this many cached usernames, stale entries are swept on insert.
const CACHE_SWEEP: usize = 10_000;

/// A short-lived cache of credentials by username: a burst of connections from one app
/// costs one query, not one per connection. Only found credentials are cached, so a newly
/// created one works at once.
#[derive(Default)]
pub(crate) struct CredentialCache {
    entries: Mutex<HashMap<String, (Instant, Credential)>>,
}

impl CredentialCache {
    pub(crate) async fn lookup(
        &self,
        store: &Store,
        username: &str,
    ) -> mailmux_store::Result<Option<Credential>> {
        {
            let entries = lock(&self.entries);
            if let Some((at, credential)) = entries.get(username)
                && at.elapsed() < CREDENTIAL_TTL
            {
                return Ok(Some(credential.clone()));
            }
        }
        let found = store.find_credential(username).await?;
        if let Some(credential) = &found {
            let mut entries = lock(&self.entries);
            if entries.len() >= CACHE_SWEEP {
                entries.retain(|_, (at, _)| at.elapsed() < CREDENTIAL_TTL);
            }
            entries.insert(username.to_string(), (Instant::now(), credential.clone()));
        }
        Ok(found)
    }
}

/// What a failed AUTH attempt (or an attempt refused at once) runs into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lockout {
    /// This username from this address: other usernames from it still work.
    Username,
    /// This address, whatever the username: its new connections are turned away too.
    Address,
}

/// Failed AUTH attempts within a sliding window, counted twice: per (client IP, username)
/// against `smtp.auth_failure_limit`, and per client IP over all usernames against the higher
/// `smtp.auth_failure_ip_limit`.
///
/// Why both: many tenants share one address (a NAT, a hosting provider's egress), and one of
/// their apps with a wrong password must lock out only itself, so the tight limit is per
/// username and address. A guesser spraying many usernames from one address stays under that
/// limit for each, so the address has a limit of its own. Attempts refused because of a
/// lockout are not failures: an app retrying its wrong password forever does not, by
/// retrying, lock its neighbours out.
pub(crate) struct AuthFailures {
    by_pair: Windows<(IpAddr, String)>,
    by_ip: Windows<IpAddr>,
}

impl AuthFailures {
    /// A limit of 0 turns that limit off.
    pub(crate) fn new(pair_limit: u32, ip_limit: u32, window: Duration) -> AuthFailures {
        AuthFailures {
            by_pair: Windows::new(pair_limit, window),
            by_ip: Windows::new(ip_limit, window),
        }
    }

    /// Records a failure of `username` from `ip` now; the lockout it reached, if any.
    pub(crate) fn record(&self, ip: IpAddr, username: &str) -> Option<Lockout> {
        let pair = self.by_pair.record((ip, username.to_string()));
        let address = self.by_ip.record(ip);
        if address {
            Some(Lockout::Address)
        } else if pair {
            Some(Lockout::Username)
        } else {
            None
        }
    }

    /// The lockout that refuses `username` from `ip` now, before its password is looked at.
    pub(crate) fn check(&self, ip: IpAddr, username: &str) -> Option<Lockout> {
        if self.by_ip.reached(&ip) {
            Some(Lockout::Address)
        } else if self.by_pair.reached(&(ip, username.to_string())) {
            Some(Lockout::Username)
        } else {
            None
        }
    }

    /// Whether `ip` is locked out as a whole now (new connections are refused).
    pub(crate) fn locked_out(&self, ip: IpAddr) -> bool {
        self.by_ip.reached(&ip)
    }
}

/// Events per key within a sliding window, against one limit (0: none).
struct Windows<K> {
    limit: u32,
    window: Duration,
    times: Mutex<HashMap<K, VecDeque<Instant>>>,
}

impl<K: std::hash::Hash + Eq> Windows<K> {
    fn new(limit: u32, window: Duration) -> Windows<K> {
        Windows {
            limit,
            window,
            times: Mutex::new(HashMap::new()),
        }
    }

    /// Records an event now; whether `key` is at the limit with it.
    fn record(&self, key: K) -> bool {
        if self.limit == 0 {
            return false;
        }
        let now = Instant::now();
        let mut all = lock(&self.times);
        if all.len() >= CACHE_SWEEP {
            all.retain(|_, times| times.back().is_some_and(|t| now - *t < self.window));
        }
        let times = all.entry(key).or_default();
        times.push_back(now);
        prune(times, now, self.window, self.limit);
        times.len() >= self.limit as usize
    }

    /// Whether `key` is at the limit now.
    fn reached(&self, key: &K) -> bool {
        if self.limit == 0 {
            return false;
        }
        let now = Instant::now();
        let mut all = lock(&self.times);
        let Some(times) = all.get_mut(key) else {
            return false;
        };
        prune(times, now, self.window, self.limit);
        if times.is_empty() {
            all.remove(key);
            return false;
        }
        times.len() >= self.limit as usize
    }
}

/// Drops events older than the window; keeps at most `limit` (all that the decision needs).
fn prune(times: &mut VecDeque<Instant>, now: Instant, window: Duration, limit: u32) {
    while times.front().is_some_and(|t| now - *t >= window) {
        times.pop_front();
    }
    while times.len() > limit.max(1) as usize {
        times.pop_front();
    }
}

#[derive(Default)]
pub(crate) struct TenantSessions {
    open: Mutex<HashMap<String, u64>>,
}

/// One session's place; dropping it frees the place.
pub(crate) struct TenantSession {
    sessions: Arc<TenantSessions>,
    tenant_id: String,
}

impl TenantSessions {
    /// A place for one more of `tenant_id`'s sessions, unless it has `max` open (0: no limit).
    /// The limit is the tenant's as read at this AUTH: lowering it closes no open session.
    pub(crate) fn try_open(self: &Arc<Self>, tenant_id: &str, max: u64) -> Option<TenantSession> {
        let mut open = self.lock();
        let count = open.entry(tenant_id.to_string()).or_insert(0);
        if max > 0 && *count >= max {
            if *count == 0 {
                open.remove(tenant_id);
            }
            return None;
        }
        *count += 1;
        Some(TenantSession {
            sessions: self.clone(),
            tenant_id: tenant_id.to_string(),
        })
    }

    #[cfg(test)]
    fn open(&self, tenant_id: &str) -> u64 {
        self.lock().get(tenant_id).copied().unwrap_or(0)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, u64>> {
        lock(&self.open)
    }
}

impl Drop for TenantSession {
    fn drop(&mut self) {
        let mut open = self.sessions.lock();
        if let Some(count) = open.get_mut(&self.tenant_id) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.tenant_id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_ip_places_are_limited_and_given_back() {
        let sessions = PerIpSessions::new(2);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        assert!(sessions.try_enter(ip));
        assert!(sessions.try_enter(ip));
        assert!(!sessions.try_enter(ip), "the third one from one address");
        assert!(sessions.try_enter(other));
        sessions.leave(ip);
        assert!(sessions.try_enter(ip));
        assert!(!PerIpSessions::new(0).try_enter(ip), "0 admits no one");
    }

    // Paused time: the window is advanced past, not waited out.
    #[tokio::test(start_paused = true)]
    async fn failures_lock_out_a_username_per_address_and_then_the_address() {
        let failures = AuthFailures::new(3, 5, Duration::from_millis(200));
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        assert_eq!(failures.record(ip, "app"), None);
        assert_eq!(failures.record(ip, "app"), None);
        assert_eq!(failures.check(ip, "app"), None);
        assert_eq!(failures.record(ip, "app"), Some(Lockout::Username));
        assert_eq!(failures.check(ip, "app"), Some(Lockout::Username));
        // Other usernames from the address, and the username from elsewhere, are not locked.
        assert_eq!(failures.check(ip, "neighbour"), None);
        assert_eq!(failures.check(other, "app"), None);
        assert!(!failures.locked_out(ip));
        // Two more failures from the address, under other names: the address is locked.
        assert_eq!(failures.record(ip, "guess1"), None);
        assert_eq!(failures.record(ip, "guess2"), Some(Lockout::Address));
        assert!(failures.locked_out(ip));
        assert_eq!(failures.check(ip, "neighbour"), Some(Lockout::Address));
        assert!(!failures.locked_out(other));
        // Only within the window.
        tokio::time::advance(Duration::from_millis(150)).await;
        assert!(failures.locked_out(ip));
        tokio::time::advance(Duration::from_millis(100)).await;
        assert!(!failures.locked_out(ip));
        assert_eq!(failures.check(ip, "app"), None);
        assert_eq!(failures.record(ip, "app"), None);
        // 0 turns a limit off.
        let off = AuthFailures::new(0, 0, Duration::from_secs(60));
        for _ in 0..100 {
            assert_eq!(off.record(ip, "app"), None);
        }
        assert!(!off.locked_out(ip) && off.check(ip, "app").is_none());
        let pair_only = AuthFailures::new(1, 0, Duration::from_secs(60));
        assert_eq!(pair_only.record(ip, "app"), Some(Lockout::Username));
        assert!(!pair_only.locked_out(ip));
    }

    #[test]
    fn places_are_limited_per_tenant_and_given_back() {
        let sessions = Arc::new(TenantSessions::default());
        let a1 = sessions.try_open("t_a", 2).expect("first");
        let a2 = sessions.try_open("t_a", 2).expect("second");
        assert!(sessions.try_open("t_a", 2).is_none(), "third is over");
        assert!(sessions.try_open("t_b", 2).is_some(), "another tenant");
        drop(a1);
        let a3 = sessions.try_open("t_a", 2).expect("a place was freed");
        assert_eq!(sessions.open("t_a"), 2);
        drop((a2, a3));
        assert_eq!(sessions.open("t_a"), 0);
        let unlimited: Vec<_> = (0..100)
            .map(|_| sessions.try_open("t_c", 0).unwrap())
            .collect();
        assert_eq!(sessions.open("t_c"), 100);
        drop(unlimited);
        assert!(sessions.lock().is_empty(), "no entries left behind");
    }
}
