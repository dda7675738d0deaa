//! `POST /api/tenants/{id}/domains/{domain}/dkim/rotate`: DKIM key rotation, in three steps.
//!
//! 1. **Rotate**: a new key (the active key's type unless another is asked for) under a new
//!    selector, stored as the domain's pending key. The answer is the TXT record to publish.
//!    The active key keeps signing.
//! 2. **Switch**: a check of the domain (`POST …/verify`, or the background check every
//!    `dkim.rotation_check_secs`) that finds the new record makes the pending key the active
//!    one; delivery signs with it within a second. The old key becomes `retiring`.
//! 3. **Retire**: `dkim.retiring_secs` (7 days by default) after the switch, the old key leaves
//!    the domain's records and the store.
//!
//! Why switch only once the record is found: mail signed with a key that receivers cannot
//! fetch fails DKIM everywhere, which is worse than signing with the old key a little longer.
//! Why keep the old record published after the switch: mail signed with it may still sit in
//! other relays' queues, and mailbox providers and forwarders verify again later.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use mailmux_core::credential::random_id;
use mailmux_core::{Config, Domain, now_ms};
use mailmux_store::{DkimKey, DkimKeyStatus, MasterKey, Store};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::AdminState;
use crate::auth::{Actor, Principal};
use crate::dkim::{self, KeyType};
use crate::dns_check::DnsChecker;
use crate::domains::{self, DnsRecordView};
use crate::error::{AdminError, ErrorBody, Result};
use crate::extract::OptionalJson;

/// `POST …/dkim/rotate` (the body may be left out).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateDkim {
    /// The new key's type; default: the type of the key in use (RSA-2048 if none).
    #[serde(default)]
    pub key_type: Option<KeyType>,
}

/// A rotation started: the record to publish, and what signs meanwhile.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RotationView {
    pub domain: String,
    /// The new key's selector.
    pub selector: String,
    pub key_type: KeyType,
    /// `pending`: signing switches to the new key once its record is found (`POST …/verify`,
    /// or the background check).
    pub status: String,
    /// The TXT record to publish now, beside the one in use (keep that one published too).
    pub record: DnsRecordView,
    /// The key that signs until the switch.
    pub active_selector: Option<String>,
    /// An earlier pending key this rotation replaced (its record is no longer needed).
    pub replaced_selector: Option<String>,
}

/// A selector for a key made at `now` that none of `keys` has: `mm<yyyymm>`, then
/// `mm<yyyymm>b` … `z` for further rotations in the same month.
fn next_selector(now: i64, keys: &[DkimKey]) -> String {
    let base = dkim::selector_for(now);
    let taken = |s: &str| keys.iter().any(|k| k.selector == s);
    std::iter::once(base.clone())
        .chain(('b'..='z').map(|c| format!("{base}{c}")))
        .find(|s| !taken(s))
        // 26 rotations in a month: a random suffix keeps the name unique.
        .unwrap_or_else(|| format!("{base}-{}", random_id("", 8)))
}

/// Starts a rotation of `raw`'s DKIM key (see the module's documentation).
pub async fn rotate(
    store: &Store,
    config: &Config,
    actor: &Actor,
    tenant_id: &str,
    raw: &str,
    key_type: Option<KeyType>,
) -> Result<RotationView> {
    crate::tenants::get(store, tenant_id).await?;
    let domain = domains::get_domain(store, tenant_id, raw).await?;
    let keys = store.list_dkim_keys(&domain.name).await?;
    let active = keys.iter().find(|k| k.status == DkimKeyStatus::Active);
    let key_type = key_type
        .or(active.map(|k| KeyType::from_name(&k.key_type)))
        .unwrap_or_default();
    let now = now_ms();
    let selector = next_selector(now, &keys);
    let generated = dkim::generate_blocking(key_type).await?;
    let master = MasterKey::load_or_create(&config.storage.data_dir.join("master.key"))?;
    let sealed = master.seal(
        &generated.private_pkcs8,
        &DkimKey::seal_context(&domain.name, &selector),
    )?;
    let key = DkimKey {
        domain: domain.name.clone(),
        selector: selector.clone(),
        key_type: key_type.as_str().to_string(),
        public_key: generated.public_key,
        private_key_sealed: sealed,
        created_at: now,
        status: DkimKeyStatus::Pending,
        activated_at: None,
        retire_at: None,
        updated_at: now,
    };
    // The pending key this one replaces, as read above (the store says which it removed).
    let pending = keys
        .iter()
        .find(|k| k.status == DkimKeyStatus::Pending)
        .map(|k| k.selector.clone());
    let audit = crate::audit::entry(
        actor,
        Some(&domain.tenant_id),
        "domain.dkim_rotate",
        &domain.name,
        Some(serde_json::json!({
            "dkim_selector": active.map(|k| k.selector.clone()),
            "pending_selector": pending,
        })),
        Some(serde_json::json!({
            "dkim_selector": active.map(|k| k.selector.clone()),
            "pending_selector": selector,
            "key_type": key_type,
        })),
    );
    let replaced = store
        .add_pending_dkim_key(&key, Some(&audit))
        .await
        .map_err(|e| match AdminError::from(e) {
            // The domain was deleted meanwhile.
            AdminError::NotFound(_) => domains::not_found(&domain.name),
            other => other,
        })?;
    let record = domains::expected_records(&domain, std::slice::from_ref(&key), now, "-")
        .into_iter()
        .map(|e| domains::record_view(e, None))
        .find(|r| r.selector.as_deref() == Some(selector.as_str()))
        .expect("a key has a record");
    let view = RotationView {
        domain: domain.name.clone(),
        selector: selector.clone(),
        key_type,
        status: DkimKeyStatus::Pending.as_str().into(),
        record,
        active_selector: active.map(|k| k.selector.clone()),
        replaced_selector: replaced.clone(),
    };
    tracing::info!(domain = %domain.name, %selector, key_type = key_type.as_str(),
        "DKIM rotation started; waiting for the new record");
    Ok(view)
}

/// Switches `domain`'s signing to its `pending` key (whose record was just found); the active
/// one starts its grace period as retiring.
pub(crate) async fn activate(
    store: &Store,
    config: &Config,
    actor: &Actor,
    domain: &Domain,
    pending: &DkimKey,
    keys: &[DkimKey],
    now: i64,
) -> Result<()> {
    let retiring_ms =
        i64::try_from(config.dkim.retiring_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
    let retire_at = now.saturating_add(retiring_ms);
    let old = keys
        .iter()
        .find(|k| k.status == DkimKeyStatus::Active)
        .map(|k| k.selector.clone());
    let audit = crate::audit::entry(
        actor,
        Some(&domain.tenant_id),
        "domain.dkim_activate",
        &domain.name,
        Some(serde_json::json!({
            "dkim_selector": old,
            "pending_selector": pending.selector,
        })),
        Some(serde_json::json!({
            "dkim_selector": pending.selector,
            "retiring_selector": old,
            "retire_at": retire_at,
        })),
    );
    if !store
        .activate_dkim_key(
            &domain.name,
            &pending.selector,
            now,
            retire_at,
            Some(&audit),
        )
        .await?
    {
        // Another check (another node, the background task) switched it first.
        return Ok(());
    }
    tracing::info!(domain = %domain.name, selector = %pending.selector, retiring = ?old,
        "DKIM record found: signing switched to the new key");
    Ok(())
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
        let audit = crate::audit::entry(
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
        match domains::check_and_store(
            store,
            config,
            &Actor::system(),
            &checker,
            domain,
            "domain.recheck",
        )
        .await
        {
            Ok(_) => summary.checked += 1,
            // One domain's failure does not stop the others.
            Err(error) => tracing::warn!(domain = %name, %error, "rotation check failed"),
        }
    }
    Ok(summary)
}

/// Runs [`check_rotations`] every `interval` (the binary passes `dkim.rotation_check_secs`)
/// until the runtime shuts down.
pub async fn dkim_rotation_checks(state: AdminState, interval: std::time::Duration) {
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

// ---- handler --------------------------------------------------------------------------------

/// Starts a DKIM key rotation: a new key under a new selector and the record to publish.
/// Signing switches to it once the record is found; the old record is then listed as
/// `retiring` (keep it published) for `dkim.retiring_secs`.
#[utoipa::path(
    post, path = "/api/tenants/{id}/domains/{domain}/dkim/rotate", tag = "domains",
    params(
        ("id" = String, Path, description = "Tenant id"),
        ("domain" = String, Path, description = "Domain name"),
    ),
    request_body(content = Option<RotateDkim>, description = "Optional; `{}` or no body keeps the key type"),
    responses(
        (status = 201, description = "New key pending: publish `record`", body = RotationView),
        (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn rotate_dkim(
    State(state): State<AdminState>,
    principal: Principal,
    Path((id, domain)): Path<(String, String)>,
    OptionalJson(request): OptionalJson<RotateDkim>,
) -> Result<(StatusCode, Json<RotationView>)> {
    principal.scope(&id)?;
    let request = request.unwrap_or_default();
    let view = rotate(
        &state.store,
        &state.config,
        &principal.actor(),
        &id,
        &domain,
        request.key_type,
    )
    .await?;
    Ok((StatusCode::CREATED, Json(view)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(selector: &str) -> DkimKey {
        DkimKey {
            domain: "a.test".into(),
            selector: selector.into(),
            key_type: "rsa".into(),
            public_key: String::new(),
            private_key_sealed: Vec::new(),
            created_at: 0,
            status: DkimKeyStatus::Active,
            activated_at: None,
            retire_at: None,
            updated_at: 0,
        }
    }

    #[test]
    fn selectors_are_new_names_in_the_month() {
        let july = 1_782_864_000_000; // 2026-07-01
        assert_eq!(next_selector(july, &[]), "mm202607");
        assert_eq!(next_selector(july, &[key("mm202606")]), "mm202607");
        assert_eq!(next_selector(july, &[key("mm202607")]), "mm202607b");
        assert_eq!(
            next_selector(july, &[key("mm202607"), key("mm202607b")]),
            "mm202607c"
        );
        let mut all: Vec<DkimKey> = vec![key("mm202607")];
        all.extend(('b'..='z').map(|c| key(&format!("mm202607{c}"))));
        let random = next_selector(july, &all);
        assert!(
            random.starts_with("mm202607-") && random.len() == 17,
            "{random}"
        );
    }
}
