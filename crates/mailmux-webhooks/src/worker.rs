//! The delivery worker (a background task of `serve`): finds due deliveries, leases them, POSTs
//! each signed, and records the attempt: delivered on a 2xx, else due again after an
//! exponential back-off with jitter (the queue's [`RetryPolicy`]), or dead once the delivery
//! has failed for `webhooks.max_age_secs` since it was made (or replayed).
//!
//! Isolation: every endpoint has its own slots (`webhooks.concurrency_per_endpoint`, a
//! semaphore each). A claimed delivery waits for a slot of its endpoint, and the claim skips
//! endpoints whose slots are all taken, so an endpoint that hangs until the request timeout
//! holds its own slots (and at most one claim's worth of waiting deliveries) and nothing else:
//! other endpoints (other tenants) are claimed and sent as if it did not exist.
//!
//! Throughput: a finished attempt wakes the poller at once (a busy endpoint's next deliveries
//! are claimed as soon as it has room, not at the next poll interval), and deliveries claimed
//! beyond an endpoint's free slots wait for them instead of being given back one write each.
//!
//! Several nodes: a lease gives a delivery to one node; a node that dies leaves leases that run
//! out (`connect + request timeout` plus a margin), after which another node takes them. A
//! restarted node gives its old leases back at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use mailmux_core::Config;
use mailmux_core::config::WebhooksConfig;
use mailmux_core::sync::lock;
use mailmux_queue::RetryPolicy;
use mailmux_store::{DeliveryOutcome, MasterKey, Store, WebhookAttempt, WebhookDelivery};
use tokio::sync::{Notify, Semaphore, watch};
use tracing::{debug, info, warn};

use crate::client::{Response, WebhookClient};
use crate::destination::parse_url;
use crate::signature::signature_header;
use crate::{Clock, secrets_in_force};

/// Deliveries claimed per poll; more are claimed at once when a poll finds this many.
const CLAIM_BATCH: usize = 32;
/// Lease beyond the longest an attempt can take.
const LEASE_MARGIN_MS: i64 = 15_000;

pub struct Worker {
    store: Store,
    client: WebhookClient,
    config: WebhooksConfig,
    retry: RetryPolicy,
    master_key_path: std::path::PathBuf,
    /// Loaded at the first delivery (it exists by then: making an endpoint creates it).
    master_key: Mutex<Option<MasterKey>>,
    /// This node's lease name.
    owner: String,
    clock: Arc<dyn Clock>,
    /// One semaphore per endpoint: its slots on this node.
    slots: Mutex<HashMap<String, Arc<Semaphore>>>,
    /// Rung when an attempt ends: its endpoint may have more due.
    wake: Notify,
}

impl Worker {
    pub fn new(store: Store, config: &Config, owner: String, clock: Arc<dyn Clock>) -> Worker {
        let webhooks = config.webhooks.clone();
        Worker {
            store,
            client: WebhookClient::new(&webhooks),
            retry: retry_policy(&webhooks),
            config: webhooks,
            master_key_path: config.storage.data_dir.join("master.key"),
            master_key: Mutex::new(None),
            owner,
            clock,
            slots: Mutex::new(HashMap::new()),
            wake: Notify::new(),
        }
    }

    /// Runs until `stop` is set. Attempts in flight when it is are left to finish or to be
    /// cut off with the process; their leases run out and they are tried again.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        match self.store.release_webhook_leases(&self.owner).await {
            Ok(0) => {}
            Ok(released) => info!(released, "webhook deliveries of a previous run made due"),
            Err(error) => warn!(%error, "cannot release old webhook leases; they run out instead"),
        }
        let interval = Duration::from_millis(self.config.poll_interval_ms);
        loop {
            if *stop.borrow() {
                return;
            }
            let claimed = match self.poll_once().await {
                Ok(claimed) => claimed,
                Err(error) => {
                    warn!(%error, "claiming webhook deliveries failed");
                    0
                }
            };
            if claimed >= CLAIM_BATCH {
                continue;
            }
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = self.wake.notified() => {}
                _ = stop.wait_for(|stopped| *stopped) => return,
            }
        }
    }

    /// Claims the due deliveries of endpoints with a free slot and starts each in its own task;
    /// how many were claimed.
    pub async fn poll_once(self: &Arc<Self>) -> mailmux_store::Result<usize> {
        let busy = self.busy_endpoints();
        let now = self.clock.now_ms();
        let lease_ms = ((self.config.connect_timeout_secs + self.config.request_timeout_secs)
            * 1000) as i64
            + LEASE_MARGIN_MS;
        let claimed = self
            .store
            .claim_webhook_deliveries(&self.owner, now, now + lease_ms, CLAIM_BATCH, &busy)
            .await?;
        let count = claimed.len();
        // The longest an attempt may take: one that could not finish before its lease ends is
        // not started (another node may take the delivery once the lease is over).
        let attempt_ms =
            ((self.config.connect_timeout_secs + self.config.request_timeout_secs) * 1000) as i64;
        for delivery in claimed {
            let slot = self.slot(&delivery.webhook_id);
            let worker = self.clone();
            tokio::spawn(async move {
                // Claimed beyond the endpoint's free slots: wait for one (this endpoint counts
                // as busy meanwhile, so no more of its deliveries are claimed).
                let Ok(permit) = slot.acquire_owned().await else {
                    return;
                };
                if worker.clock.now_ms() + attempt_ms > now + lease_ms {
                    // Waited too long behind a slow endpoint: give the lease back untried.
                    if let Err(error) = worker
                        .store
                        .release_webhook_delivery(&delivery.id, &worker.owner)
                        .await
                    {
                        warn!(%error, id = delivery.id, "cannot give a webhook lease back");
                    }
                } else {
                    worker.deliver(delivery).await;
                }
                drop(permit);
                worker.wake.notify_one();
            });
        }
        Ok(count)
    }

    fn slot(&self, webhook_id: &str) -> Arc<Semaphore> {
        let mut slots = lock(&self.slots);
        slots
            .entry(webhook_id.to_string())
            .or_insert_with(|| Arc::new(Semaphore::new(self.config.concurrency_per_endpoint)))
            .clone()
    }

    /// Endpoints with every slot taken; endpoints with none taken are forgotten (a deleted
    /// endpoint's semaphore does not stay for ever).
    fn busy_endpoints(&self) -> Vec<String> {
        let mut slots = lock(&self.slots);
        let all = self.config.concurrency_per_endpoint;
        // Kept while in use or while a claimed delivery holds it (even before it waits on it):
        // a second semaphore for one endpoint would double its slots.
        slots.retain(|_, s| Arc::strong_count(s) > 1 || s.available_permits() < all);
        slots
            .iter()
            .filter(|(_, s)| s.available_permits() == 0)
            .map(|(id, _)| id.clone())
            .collect()
    }

    fn master_key(&self) -> Result<MasterKey, String> {
        let mut cached = lock(&self.master_key);
        if let Some(key) = cached.as_ref() {
            return Ok(key.clone());
        }
        let key = MasterKey::load(&self.master_key_path).map_err(|e| e.to_string())?;
        *cached = Some(key.clone());
        Ok(key)
    }

    /// One attempt of `delivery`, recorded.
    async fn deliver(&self, delivery: WebhookDelivery) {
        let response = match self.attempt(&delivery).await {
            Ok(response) => response,
            Err(error) => Response {
                status: None,
                error: Some(error),
                duration: Duration::ZERO,
            },
        };
        let now = self.clock.now_ms();
        let attempts = delivery.attempts + 1;
        let outcome = outcome(&self.retry, &delivery, attempts, response.delivered(), now);
        let attempt = WebhookAttempt {
            attempt: attempts,
            at: now,
            status_code: response.status,
            error: response.error.clone(),
            duration_ms: response.duration.as_millis() as u64,
        };
        match outcome {
            DeliveryOutcome::Delivered => debug!(id = delivery.id, "webhook delivered"),
            DeliveryOutcome::Retry(at) => info!(
                id = delivery.id,
                webhook = delivery.webhook_id,
                error = response.error.as_deref().unwrap_or(""),
                retry_in_ms = at - now,
                "webhook attempt failed; retrying"
            ),
            DeliveryOutcome::Dead => warn!(
                id = delivery.id,
                webhook = delivery.webhook_id,
                error = response.error.as_deref().unwrap_or(""),
                attempts,
                "webhook delivery dead-lettered"
            ),
        }
        match self
            .store
            .finish_webhook_attempt(&delivery.id, &self.owner, &attempt, outcome)
            .await
        {
            Ok(true) => {}
            Ok(false) => warn!(
                id = delivery.id,
                "webhook lease lost before the attempt was recorded"
            ),
            Err(error) => {
                warn!(%error, id = delivery.id, "cannot record a webhook attempt; its lease runs out and it is tried again")
            }
        }
    }

    /// Signs and sends; `Err` for what stops an attempt before any request (endpoint gone,
    /// key unavailable, URL no longer valid).
    async fn attempt(&self, delivery: &WebhookDelivery) -> Result<Response, String> {
        let webhook = self
            .store
            .get_webhook(&delivery.tenant_id, &delivery.webhook_id)
            .await
            .map_err(|e| format!("endpoint lookup failed: {e}"))?
            .ok_or_else(|| "the endpoint no longer exists".to_string())?;
        let url = parse_url(&webhook.url)?;
        let now = self.clock.now_ms();
        let secrets = secrets_in_force(&self.master_key()?, &webhook, now)
            .map_err(|e| format!("signing secret unavailable: {e}"))?;
        // Standard Webhooks: the timestamp is when this attempt is sent, in seconds; the id is
        // the delivery's, the same on every attempt.
        let timestamp = now.div_euclid(1000);
        let body = Bytes::from(delivery.payload.clone().into_bytes());
        let headers = [
            ("webhook-id", delivery.id.clone()),
            ("webhook-timestamp", timestamp.to_string()),
            (
                "webhook-signature",
                signature_header(&secrets, &delivery.id, timestamp, &body),
            ),
        ];
        Ok(self.client.post(&url, &headers, body).await)
    }
}

/// The retry schedule: the queue's policy with doubling delays, ±20 % jitter.
fn retry_policy(config: &WebhooksConfig) -> RetryPolicy {
    RetryPolicy {
        initial_ms: config.retry_initial_ms as i64,
        factor: 2.0,
        max_ms: (config.retry_max_secs as i64 * 1000).max(config.retry_initial_ms as i64),
        max_age_ms: config.max_age_secs as i64 * 1000,
        jitter: 0.2,
    }
}

/// What attempt number `attempts` (just made, at `now`) leaves `delivery` as. A failure past
/// the window is dead; within it, the next try is never scheduled beyond the window's end, so
/// the last one happens right at the end of `max_age`.
fn outcome(
    retry: &RetryPolicy,
    delivery: &WebhookDelivery,
    attempts: u32,
    delivered: bool,
    now: i64,
) -> DeliveryOutcome {
    if delivered {
        return DeliveryOutcome::Delivered;
    }
    let deadline = delivery.retry_from.saturating_add(retry.max_age_ms);
    if now >= deadline {
        return DeliveryOutcome::Dead;
    }
    let delay = retry.jittered_delay_ms(attempts, &mut rand::rng());
    DeliveryOutcome::Retry((now + delay).min(deadline))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(retry_from: i64) -> WebhookDelivery {
        WebhookDelivery {
            id: "msg_1".into(),
            webhook_id: "wh_1".into(),
            tenant_id: "t_1".into(),
            event_type: "inbound.message".into(),
            message_id: None,
            payload: "{}".into(),
            status: "pending".into(),
            attempts: 0,
            next_attempt_at: retry_from,
            retry_from,
            last_error: None,
            created_at: retry_from,
            finished_at: None,
        }
    }

    #[test]
    fn back_off_doubles_with_jitter_then_dead_at_max_age() {
        let mut config = Config::default().webhooks;
        config.retry_initial_ms = 1000;
        config.retry_max_secs = 8;
        config.max_age_secs = 60;
        let retry = retry_policy(&config);
        let d = delivery(0);
        assert_eq!(outcome(&retry, &d, 1, true, 10), DeliveryOutcome::Delivered);
        for (attempts, base) in [(1, 1000), (2, 2000), (3, 4000), (4, 8000), (9, 8000)] {
            let DeliveryOutcome::Retry(at) = outcome(&retry, &d, attempts, false, 10_000) else {
                panic!("attempt {attempts} must be retried");
            };
            let delay = at - 10_000;
            assert!(
                (base * 8 / 10..=base * 12 / 10).contains(&delay),
                "attempt {attempts}: {delay} ms, expected {base} ±20 %"
            );
        }
        // Never scheduled past the window: the last try is at its end.
        assert_eq!(
            outcome(&retry, &d, 5, false, 59_500),
            DeliveryOutcome::Retry(60_000)
        );
        assert_eq!(outcome(&retry, &d, 6, false, 60_000), DeliveryOutcome::Dead);
        // A replay opens a new window.
        let replayed = delivery(100_000);
        assert!(matches!(
            outcome(&retry, &replayed, 7, false, 100_500),
            DeliveryOutcome::Retry(_)
        ));
    }
}
