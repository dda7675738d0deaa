//! Locking shared in-memory state.

use std::sync::{Mutex, MutexGuard};

/// Locks `mutex`, also after another thread panicked while holding it. For the plain values
/// this project keeps behind a `std` mutex (maps, sets, counters, each changed in one step),
/// a panic elsewhere cannot leave them half-changed, so poisoning carries no information and
/// must not take a second thread down.
#[allow(clippy::disallowed_methods)] // the one place that may call it: see .clippy.toml
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
