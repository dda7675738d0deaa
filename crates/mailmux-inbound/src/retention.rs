//! Retention of stored inbound mail: each tenant's `inbound_retention_days`, or the relay's
//! `inbound.retention_days` for tenants that set none (0 on both: kept until deleted); the
//! operator's postmaster mailbox, `inbound.retention_days`.

use mailmux_core::now_ms;
use tracing::{info, warn};

use crate::Inbound;

impl Inbound {
    /// One pass at `now` (Unix ms): deletes what is past its tenant's retention; how many went.
    /// The clock is the caller's, so a test moves it rather than waiting for days to pass.
    pub async fn expire_at(
        &self,
        now: i64,
        default_days: u64,
    ) -> Result<u64, mailmux_store::StoreError> {
        let tenants = self.store.expire_inbound(now, default_days).await?;
        // The operator's postmaster mailbox follows the relay's default.
        let operator = self.store.expire_postmaster(now, default_days).await?;
        Ok(tenants + operator)
    }

    /// [`Inbound::expire_at`] every `interval`, for ever (a background job of `serve`). It runs
    /// even when the default is 0: a tenant may have a retention of its own.
    pub async fn expire(&self, default_days: u64, interval: std::time::Duration) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            match self.expire_at(now_ms(), default_days).await {
                Ok(0) => {}
                Ok(deleted) => info!(deleted, "expired stored inbound mail"),
                Err(error) => warn!(%error, "expiring stored inbound mail failed"),
            }
        }
    }
}
