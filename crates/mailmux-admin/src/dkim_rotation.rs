//! `POST /api/tenants/{id}/domains/{domain}/dkim/rotate`: DKIM key rotation, in three steps.
//!
//! 1. **Rotate**: a new key (the active key's type unless another is asked for) under a new
//!    selector, stored as the domain's pending key. The answer is the TXT record to publish.
//!    The active key keeps signing.
//! 2. **Switch**: a check of the domain (`POST …/verify`, or the background check every
//!    `dkim.rotation_check_secs` in `jobs.rs`) that finds the new record makes the pending key
//!    the active one (`dns/sending.rs`); delivery signs with it within a second. The old key
//!    becomes `retiring`.
//! 3. **Retire**: `dkim.retiring_secs` (7 days by default) after the switch, the old key leaves
//!    the domain's records and the store (`jobs.rs`).
//!
//! Why switch only once the record is found: mail signed with a key that receivers cannot
//! fetch fails DKIM everywhere, which is worse than signing with the old key a little longer.
//! Why keep the old record published after the switch: mail signed with it may still sit in
//! other relays' queues, and mailbox providers and forwarders verify again later.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use mailmux_core::credential::random_id;
use mailmux_core::{Config, now_ms};
use mailmux_store::{DkimKey, DkimKeyStatus, Store};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::{Actor, Principal};
use crate::dkim::{self, KeyType};
use crate::dns::sending::{self, DnsRecordView};
use crate::error::{AdminError, ErrorBody, Result};
use crate::extract::OptionalJson;
use crate::lookup;
use crate::state::AdminState;

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
    let tenant = lookup::tenant(store, tenant_id).await?;
    let domain = lookup::domain(store, tenant_id, raw).await?;
    let keys = store.list_dkim_keys(&domain.name).await?;
    let active = keys.iter().find(|k| k.status == DkimKeyStatus::Active);
    let key_type = key_type
        .or(active.map(|k| KeyType::from_name(&k.key_type)))
        .unwrap_or_default();
    let now = now_ms();
    let selector = next_selector(now, &keys);
    let key = dkim::new_key(
        config,
        &domain.name,
        &selector,
        key_type,
        DkimKeyStatus::Pending,
        now,
    )
    .await?;
    // The pending key this one replaces, as read above (the store says which it removed).
    let pending = keys
        .iter()
        .find(|k| k.status == DkimKeyStatus::Pending)
        .map(|k| k.selector.clone());
    let audit = crate::audit_log::entry(
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
            AdminError::NotFound(_) => lookup::domain_not_found(&domain.name),
            other => other,
        })?;
    let record = sending::expected_records(&domain, std::slice::from_ref(&key), now, "-")
        .into_iter()
        .find(|e| e.selector() == Some(selector.as_str()))
        .map(|e| sending::record_view(e, None, tenant.features.dkim_signing))
        .ok_or_else(|| AdminError::Internal("a new DKIM key without its record".into()))?;
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
