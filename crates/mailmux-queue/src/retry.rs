//! When to try a deferred message again, and when to give up on it.
//!
//! RFC 5321 §4.5.4.1 asks for at least 30 minutes between retries and for giving up after
//! 4-5 days, and allows "more sophisticated and variable strategies" where the client knows
//! why delivery failed. mailmux keeps the RFC's 30 minutes per destination instead of per
//! message: a host that fails to connect or says 421 is marked down and its mail waits for
//! it (delivery's `destinations.rs`), while a message deferred for its own sake (greylisting,
//! a full mailbox) is retried sooner: 1, 2, 4 … minutes, then hourly (the defaults), until
//! `max_age` (5 days). Every delay is spread by `jitter` either way so that mail deferred in
//! one burst does not come back in one burst.

use crate::{DeliveryReport, QueuedMessage, RecipientResult, RecipientStatus};
use mailmux_core::config::DeliveryConfig;
use rand::{Rng, RngExt};

use crate::Lease;

/// Exponential back-off: `initial × factor^(attempt-1)`, capped at `max`, spread by ±`jitter`;
/// after `max_age` a message that is still deferred bounces.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub initial_ms: i64,
    pub factor: f64,
    pub max_ms: i64,
    pub max_age_ms: i64,
    /// Fraction of each delay by which it is spread either way (0.2: ±20 %).
    pub jitter: f64,
}

impl RetryPolicy {
    pub fn from_config(config: &DeliveryConfig) -> RetryPolicy {
        RetryPolicy {
            initial_ms: config.retry_initial_secs as i64 * 1000,
            factor: config.retry_factor,
            max_ms: config.retry_max_secs as i64 * 1000,
            max_age_ms: config.max_age_secs as i64 * 1000,
            jitter: config.retry_jitter,
        }
    }

    /// [`RetryPolicy::delay_ms`] spread uniformly by ±`jitter`, drawn from `rng`.
    pub fn jittered_delay_ms(&self, attempts: u32, rng: &mut impl Rng) -> i64 {
        let delay = self.delay_ms(attempts) as f64;
        if self.jitter <= 0.0 {
            return delay as i64;
        }
        let spread = rng.random_range(-self.jitter..self.jitter);
        (delay * (1.0 + spread)).max(1.0) as i64
    }

    /// Delay before attempt number `attempts + 1`, after `attempts` attempts (≥ 1) failed.
    pub fn delay_ms(&self, attempts: u32) -> i64 {
        let exponent = attempts.saturating_sub(1).min(64) as i32;
        let delay = self.initial_ms as f64 * self.factor.powi(exponent);
        (delay.min(self.max_ms as f64) as i64).max(self.initial_ms.min(self.max_ms))
    }

    /// Turns one attempt's per-recipient results into the report to record: deferred
    /// recipients of a message past its maximum age become bounced, with the last reply kept
    /// in the reason, and the next attempt time is set.
    pub fn finish(
        &self,
        message: &QueuedMessage,
        lease: &Lease,
        mut results: Vec<RecipientResult>,
        now: i64,
    ) -> DeliveryReport {
        let expired = now - message.created_at >= self.max_age_ms;
        if expired {
            for result in &mut results {
                if result.status == RecipientStatus::Deferred {
                    result.status = RecipientStatus::Bounced;
                    // The remote reply stays first: the DSN takes its status code from it.
                    result.reply = format!(
                        "{} (gave up after {} attempts over {} hours)",
                        result.reply,
                        message.attempts + 1,
                        self.max_age_ms / 3_600_000
                    );
                }
            }
        }
        DeliveryReport {
            message_id: message.id.clone(),
            lease_owner: lease.owner().to_string(),
            at: now,
            next_attempt_at: now + self.jittered_delay_ms(message.attempts + 1, &mut rand::rng()),
            results,
            bounce: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mailmux_core::{BodyFlags, QueueId};
    use std::sync::Arc;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            initial_ms: 60_000,
            factor: 2.0,
            max_ms: 3_600_000,
            max_age_ms: 5 * 86_400_000,
            jitter: 0.0,
        }
    }

    #[test]
    fn delays_grow_exponentially_up_to_the_cap() {
        let p = policy();
        let delays: Vec<i64> = (1..=9).map(|a| p.delay_ms(a) / 1000).collect();
        assert_eq!(delays, [60, 120, 240, 480, 960, 1920, 3600, 3600, 3600]);
        assert_eq!(p.delay_ms(1000), 3_600_000);
    }

    #[test]
    fn deferred_recipients_of_an_expired_message_bounce() {
        let message = QueuedMessage {
            id: QueueId("q".into()),
            tenant_id: "t".into(),
            mail_from: "a@b.test".into(),
            flags: BodyFlags::default(),
            body: Arc::new(Vec::new()),
            body_path: None,
            created_at: 0,
            attempts: 3,
            recipients: Vec::new(),
        };
        let results = vec![
            RecipientResult {
                idx: 0,
                status: RecipientStatus::Deferred,
                reply: "451 4.3.0 busy".into(),
                remote_id: None,
            },
            RecipientResult {
                idx: 1,
                status: RecipientStatus::Delivered,
                reply: "250 ok".into(),
                remote_id: None,
            },
        ];
        let in_flight = Arc::new(crate::lease::InFlight::default());
        let lease = in_flight.take(&message.id, "node-a").unwrap();
        let fresh = policy().finish(&message, &lease, results.clone(), 1000);
        assert_eq!(fresh.results[0].status, RecipientStatus::Deferred);
        assert_eq!(fresh.next_attempt_at, 1000 + 480_000);
        assert_eq!(fresh.lease_owner, "node-a");
        let old = policy().finish(&message, &lease, results, 5 * 86_400_000);
        assert_eq!(old.results[0].status, RecipientStatus::Bounced);
        assert!(
            old.results[0]
                .reply
                .starts_with("451 4.3.0 busy (gave up after 4 attempts")
        );
        assert_eq!(old.results[1].status, RecipientStatus::Delivered);
    }

    #[test]
    fn jitter_spreads_delays_within_its_bounds() {
        use rand::SeedableRng;
        let p = RetryPolicy {
            jitter: 0.2,
            ..policy()
        };
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        let delays: Vec<i64> = (0..1000)
            .map(|_| p.jittered_delay_ms(1, &mut rng))
            .collect();
        assert!(
            delays.iter().all(|d| (48_000..72_000).contains(d)),
            "±20 % of 60 s"
        );
        let low = delays.iter().filter(|d| **d < 54_000).count();
        let high = delays.iter().filter(|d| **d >= 66_000).count();
        // Uniform over the range: each outer quarter holds about a quarter of the draws.
        assert!((150..350).contains(&low), "{low}");
        assert!((150..350).contains(&high), "{high}");
        assert_eq!(
            policy().jittered_delay_ms(1, &mut rng),
            60_000,
            "no jitter configured"
        );
    }
}
