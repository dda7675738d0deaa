//! Concurrent authenticated sessions per tenant (`max_connections`). A session takes a place
//! when AUTH succeeds and gives it back when it ends, whatever ends it (the place is a guard
//! held by the session). Counted per node, like the per-IP limit: the limit bounds what one
//! tenant can hold of this process's sessions.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use mailmux_core::sync::lock;

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
        // Plain counters: a panic elsewhere cannot leave them half-updated.
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
