//! The account's send rate, shared by every tenant: SES counts MaxSendRate per account, in
//! emails per recipient, so one limiter paces all sends of the process. It hands out start
//! times: a send of `n` recipients takes `n / rate` seconds of the schedule and waits for its
//! turn. Time is tokio's, so tests move the clock instead of waiting.

use std::sync::Mutex;
use std::time::Duration;

use mailmux_core::sync::lock;
use tokio::time::Instant;

/// Before the first `GetAccount`: SES's sandbox rate, a safe floor.
const INITIAL_RATE: f64 = 1.0;

pub struct SendRate {
    state: Mutex<State>,
}

struct State {
    /// Recipients per second.
    per_second: f64,
    /// When the schedule is free again.
    next_free: Option<Instant>,
}

impl Default for SendRate {
    fn default() -> Self {
        SendRate::new()
    }
}

impl SendRate {
    pub fn new() -> SendRate {
        SendRate {
            state: Mutex::new(State {
                per_second: INITIAL_RATE,
                next_free: None,
            }),
        }
    }

    /// Sets the rate from the account's MaxSendRate (ignored unless positive).
    pub fn set(&self, per_second: f64) {
        if per_second.is_finite() && per_second > 0.0 {
            lock(&self.state).per_second = per_second;
        }
    }

    pub fn per_second(&self) -> f64 {
        lock(&self.state).per_second
    }

    /// Waits until a send of `recipients` may start. Reserving before waiting keeps the
    /// order fair: whoever asked first goes first.
    pub async fn acquire(&self, recipients: usize) {
        let start = {
            let mut state = lock(&self.state);
            let now = Instant::now();
            let start = state.next_free.map_or(now, |free| free.max(now));
            let cost = Duration::from_secs_f64(recipients.max(1) as f64 / state.per_second);
            state.next_free = Some(start + cost);
            start
        };
        tokio::time::sleep_until(start).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn sends_are_paced_at_the_account_rate_across_callers() {
        let rate = std::sync::Arc::new(SendRate::new());
        rate.set(10.0);
        let begin = Instant::now();
        // 50 recipients at once take 5 s of the schedule; the next send starts after them.
        rate.acquire(50).await;
        assert_eq!(Instant::now(), begin);
        let other = rate.clone();
        let second = tokio::spawn(async move {
            other.acquire(1).await;
            Instant::now()
        });
        assert_eq!(second.await.unwrap() - begin, Duration::from_secs(5));
        // A non-positive rate from a broken answer keeps the one in force.
        rate.set(0.0);
        assert_eq!(rate.per_second(), 10.0);
    }
}
