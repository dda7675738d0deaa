//! The background sync: runs every SES tenant whose sync is due (`ses_tenants.next_sync_at`):
//! right away for a tenant a domain was just added to or a sync asked for, after the backoff
//! for one whose last sync failed, every `ses.sync_interval_secs` otherwise (which is also
//! how SES's view of the tenant's sending is mirrored periodically). Woken by
//! [`Provisioner::request`]; the poll below catches requests made by another process (the CLI).

use std::time::Duration;

use mailmux_core::config::TransportKind;
use mailmux_core::now_ms;
use tracing::warn;

use crate::sync::Provisioner;

/// How often the job looks for due syncs when nobody wakes it.
const POLL: Duration = Duration::from_secs(1);
/// Due syncs taken per pass.
const BATCH: u32 = 50;

impl Provisioner {
    /// Runs forever; `default_transport` is `delivery.transport` (a tenant with none set
    /// uses it). A tenant no longer on `ses` is not synced; its record waits for the interval.
    pub async fn run_sync_job(&self, default_transport: TransportKind) {
        loop {
            if let Err(error) = self.sync_due(default_transport).await {
                warn!(%error, "SES sync pass failed");
            }
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(POLL) => {}
            }
        }
    }

    async fn sync_due(&self, default_transport: TransportKind) -> Result<(), crate::SyncError> {
        let due = self.store.list_ses_tenants_due(now_ms(), BATCH).await?;
        for record in due {
            let on_ses = self
                .store
                .get_tenant(&record.tenant_id)
                .await?
                .is_some_and(|t| t.transport.unwrap_or(default_transport) == TransportKind::Ses);
            if !on_ses {
                let interval = i64::try_from(self.ses.config().sync_interval_secs)
                    .unwrap_or(86_400)
                    .saturating_mul(1000);
                let mut later = record.clone();
                later.next_sync_at = now_ms().saturating_add(interval);
                self.store.put_ses_tenant(&later).await?;
                continue;
            }
            // A failed step is recorded by the sync itself; only a store failure ends up here.
            if let Err(error) = self.sync(&record.tenant_id, false).await {
                warn!(tenant = %record.tenant_id, %error, "SES sync failed");
            }
        }
        Ok(())
    }
}
