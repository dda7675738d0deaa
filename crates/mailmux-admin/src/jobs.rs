//! The admin side's background work, supervised by `serve`: the daily DNS re-check of verified
//! domains and return paths, and the DKIM rotation check (retire keys whose grace period is
//! over, switch to pending keys whose record appeared), and starting the SES sync a new domain
//! asked for. Each run is a plain function the tests
//! call directly; the loops around them only keep time.

use std::time::Duration;

use mailmux_core::{Config, now_ms};
use mailmux_store::Store;

use crate::auth::Actor;
use crate::dns::{self, DnsChecker};
use crate::error::Result;
use crate::state::AdminState;

/// Runs the SES sync a domain just added asked for (`provision.rs` made it due), waiting at
/// most `wait` so the answer can list the new identity's records; a slower SES does not hold
/// the request longer: the sync carries on in the background. True when it finished in time.
pub async fn run_requested_ses_sync(state: &AdminState, tenant_id: &str, wait: Duration) -> bool {
    let Some(provisioner) = state.ses.clone() else {
        return false;
    };
    let on_ses = matches!(
        state.store.get_tenant(tenant_id).await,
        Ok(Some(tenant)) if tenant.transport.unwrap_or(state.config.delivery.transport)
            == mailmux_core::TransportKind::Ses
    );
    let due = matches!(
        state.store.get_ses_tenant(tenant_id).await,
        Ok(Some(record)) if record.next_sync_at <= now_ms()
    );
    if !on_ses || !due {
        return false;
    }
    let id = tenant_id.to_string();
    let task = tokio::spawn(async move { provisioner.sync(&id, false).await });
    matches!(tokio::time::timeout(wait, task).await, Ok(Ok(Ok(_))))
}

/// What a re-check run did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RecheckSummary {
    pub checked: usize,
    /// Domains flagged by this run (they were not flagged before).
    pub flagged: usize,
    /// Return-path domains in use that were checked.
    pub return_paths_checked: usize,
    /// Return paths whose records were found gone: delivery no longer uses them.
    pub return_paths_dropped: usize,
}

/// Re-checks every domain verified by DNS (operator-verified ones are the operator's word and
/// may have no records at all), and every return path in use. Run daily by
/// [`domain_rechecks`].
pub async fn recheck_verified(store: &Store, config: &Config) -> Result<RecheckSummary> {
    let checker = DnsChecker::new(&config.delivery.dns_servers)?;
    let mut summary = RecheckSummary::default();
    for domain in store.list_domains_verified_by("dns").await? {
        let was_flagged = store
            .get_domain_check(&domain.name)
            .await?
            .and_then(|c| c.flagged_at)
            .is_some();
        let name = domain.name.clone();
        let checked = dns::sending::check_and_store(
            store,
            config,
            &Actor::system(),
            &checker,
            domain,
            "domain.recheck",
        )
        .await;
        match checked {
            Ok(view) => {
                summary.checked += 1;
                if view.flagged_at.is_some() && !was_flagged {
                    summary.flagged += 1;
                }
            }
            // One domain's failure (deleted meanwhile…) does not stop the others.
            Err(error) => tracing::warn!(domain = %name, %error, "re-check failed"),
        }
    }
    for setting in store.list_verified_return_paths().await? {
        let name = setting.domain.clone();
        let checked = dns::return_path::check_and_store(
            store,
            config,
            &Actor::system(),
            &checker,
            setting,
            "domain.return_path_recheck",
        )
        .await;
        match checked {
            Ok(after) => {
                summary.return_paths_checked += 1;
                if after.verified().is_none() {
                    summary.return_paths_dropped += 1;
                }
            }
            Err(error) => tracing::warn!(domain = %name, %error, "return-path re-check failed"),
        }
    }
    Ok(summary)
}

/// Runs [`recheck_verified`] every `interval` (the binary passes a day) until the runtime
/// shuts down. Domains whose required records disappeared are flagged (visible in the
/// domain's `flagged_at`, in the audit log and the log) but keep sending: a DNS outage at the
/// wrong moment must not stop a tenant's mail; an operator decides.
pub async fn domain_rechecks(state: AdminState, interval: Duration) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick completes at once: skip it, checks start one interval after start-up.
    ticker.tick().await;
    loop {
        ticker.tick().await;
        match recheck_verified(&state.store, &state.config).await {
            Ok(summary) => tracing::info!(
                checked = summary.checked,
                flagged = summary.flagged,
                return_paths_checked = summary.return_paths_checked,
                return_paths_dropped = summary.return_paths_dropped,
                "domain DNS re-check done"
            ),
            Err(error) => tracing::warn!(%error, "domain DNS re-check failed"),
        }
    }
}

/// What a rotation check run did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RotationSummary {
    /// Domains whose pending key's record was looked up.
    pub checked: usize,
    /// Retiring keys dropped at the end of their grace period.
    pub retired: usize,
}

/// Drops the retiring keys whose grace period is over, then looks up the records of every
/// domain with a rotation in progress (a found record switches signing). Run every
/// `dkim.rotation_check_secs` by [`dkim_rotation_checks`].
pub async fn check_rotations(store: &Store, config: &Config) -> Result<RotationSummary> {
    let mut summary = RotationSummary::default();
    let now = now_ms();
    for key in store.list_retired_dkim_keys(now).await? {
        let tenant = store.get_domain(&key.domain).await?.map(|d| d.tenant_id);
        let audit = crate::audit_log::entry(
            &Actor::system(),
            tenant.as_deref(),
            "domain.dkim_retire",
            &key.domain,
            Some(serde_json::json!({ "retiring_selector": key.selector })),
            None,
        );
        // False: another node dropped it first (and logged it).
        if store
            .drop_retired_dkim_key(&key.domain, &key.selector, now, Some(&audit))
            .await?
        {
            summary.retired += 1;
            tracing::info!(domain = %key.domain, selector = %key.selector,
                "retired DKIM key dropped at the end of its grace period");
        }
    }
    let pending = store.list_domains_with_pending_dkim().await?;
    if pending.is_empty() {
        return Ok(summary);
    }
    let checker = DnsChecker::new(&config.delivery.dns_servers)?;
    for domain in pending {
        let name = domain.name.clone();
        let checked = dns::sending::check_and_store(
            store,
            config,
            &Actor::system(),
            &checker,
            domain,
            "domain.recheck",
        )
        .await;
        match checked {
            Ok(_) => summary.checked += 1,
            // One domain's failure does not stop the others.
            Err(error) => tracing::warn!(domain = %name, %error, "rotation check failed"),
        }
    }
    Ok(summary)
}

/// Runs [`check_rotations`] every `interval` (the binary passes `dkim.rotation_check_secs`)
/// until the runtime shuts down.
pub async fn dkim_rotation_checks(state: AdminState, interval: Duration) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        match check_rotations(&state.store, &state.config).await {
            Ok(summary) if summary == RotationSummary::default() => {}
            Ok(summary) => tracing::info!(
                checked = summary.checked,
                retired = summary.retired,
                "DKIM rotation check done"
            ),
            Err(error) => tracing::warn!(%error, "DKIM rotation check failed"),
        }
    }
}
