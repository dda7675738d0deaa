//! mailmux-webhooks: outbound HTTP to tenants, for inbound mail (and, later, delivery events).
//!
//! The data flow: the inbound crate writes a delivery row (`webhook_deliveries`, with its JSON
//! payload) in the same commit as the message it carries, before the MX answers 250; the
//! [`Worker`] (a background task of `serve`) leases due deliveries, signs each attempt
//! (`signature.rs`, Standard Webhooks) and POSTs it (`client.rs`), only to addresses
//! `destination.rs` allows (SSRF); every attempt is recorded, failures are retried with back-off
//! until `webhooks.max_age_secs`, then dead-lettered; a replay makes a delivery due again.
//!
//! Endpoint secrets are sealed at rest with the store's [`MasterKey`] (as DKIM keys are);
//! [`seal_secret`] and [`secrets_in_force`] are the one place that seals and opens them.

pub mod client;
pub mod destination;
pub mod signature;
pub mod worker;

use mailmux_core::credential::random_id;
use mailmux_store::{KeyVaultError, MasterKey, Webhook};

pub use signature::Secret;
pub use worker::Worker;

pub type Result<T> = std::result::Result<T, WebhookError>;

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("system random generator failed")]
    Random,
    #[error("webhook secret: {0}")]
    Key(#[from] KeyVaultError),
}

/// What an endpoint receives.
pub const KIND_INBOUND: &str = "inbound";
pub const KIND_EVENTS: &str = "events";
/// The `type` of an inbound message's payload.
pub const EVENT_INBOUND_MESSAGE: &str = "inbound.message";

/// Where time comes from for the worker's decisions (due, back-off, dead, the signed
/// timestamp): injected, so tests can pin it.
pub trait Clock: Send + Sync {
    /// Unix milliseconds.
    fn now_ms(&self) -> i64;
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        mailmux_core::now_ms()
    }
}

/// A new delivery's id, which is its `webhook-id` header (`msg_` + 24 hex digits).
pub fn new_delivery_id() -> String {
    random_id("msg_", 24)
}

/// A new endpoint's id.
pub fn new_webhook_id() -> String {
    random_id("wh_", 16)
}

/// `secret` sealed for the endpoint `webhook_id` (it opens only in that endpoint's row).
pub fn seal_secret(master: &MasterKey, webhook_id: &str, secret: &Secret) -> Result<Vec<u8>> {
    Ok(master.seal(secret.as_bytes(), &Webhook::seal_context(webhook_id))?)
}

/// The secrets an attempt at `now` is signed with: the current one, then the previous one
/// while its overlap lasts.
pub fn secrets_in_force(master: &MasterKey, webhook: &Webhook, now: i64) -> Result<Vec<Secret>> {
    let context = Webhook::seal_context(&webhook.id);
    let mut secrets = vec![Secret::from_bytes(
        master.open(&webhook.secret_sealed, &context)?,
    )];
    if let (Some(sealed), Some(until)) = (
        &webhook.previous_secret_sealed,
        webhook.previous_secret_expires_at,
    ) && now < until
    {
        secrets.push(Secret::from_bytes(master.open(sealed, &context)?));
    }
    Ok(secrets)
}
