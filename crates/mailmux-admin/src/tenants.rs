//! `/api/tenants[/{id}]`: creating, reading, changing and deleting tenants. The operations are
//! plain functions over the store so the CLI runs exactly the same code as the API.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use mailmux_core::credential::random_id;
use mailmux_core::{Config, Features, Limits, Tenant, TenantStatus, Tier, now_ms};
use mailmux_store::{Store, TenantDeletion};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::AdminState;
use crate::auth::{Actor, Principal, tenant_not_found};
use crate::dkim::KeyType;
use crate::domains::{self, DomainView};
use crate::error::{AdminError, ErrorBody, Result};
use crate::extract::{ApiJson, ApiQuery};
use crate::pagination::{self, PageQuery};

/// A tier (DESIGN.md "Tiers"): the default limits and features of a tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TierName {
    Free,
    Starter,
    Professional,
    Enterprise,
}

impl From<TierName> for Tier {
    fn from(tier: TierName) -> Tier {
        match tier {
            TierName::Free => Tier::Free,
            TierName::Starter => Tier::Starter,
            TierName::Professional => Tier::Professional,
            TierName::Enterprise => Tier::Enterprise,
        }
    }
}

impl From<Tier> for TierName {
    fn from(tier: Tier) -> TierName {
        match tier {
            Tier::Free => TierName::Free,
            Tier::Starter => TierName::Starter,
            Tier::Professional => TierName::Professional,
            Tier::Enterprise => TierName::Enterprise,
        }
    }
}

/// `active`; `paused` (temporary: submissions get 451); `suspended` (submissions get 550).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum StatusName {
    Active,
    Paused,
    Suspended,
}

impl From<StatusName> for TenantStatus {
    fn from(status: StatusName) -> TenantStatus {
        match status {
            StatusName::Active => TenantStatus::Active,
            StatusName::Paused => TenantStatus::Paused,
            StatusName::Suspended => TenantStatus::Suspended,
        }
    }
}

impl From<TenantStatus> for StatusName {
    fn from(status: TenantStatus) -> StatusName {
        match status {
            TenantStatus::Active => StatusName::Active,
            TenantStatus::Paused => StatusName::Paused,
            TenantStatus::Suspended => StatusName::Suspended,
        }
    }
}

/// Per-tenant limits; 0 means unlimited. `smtp.max_message_size` and `smtp.max_recipients`
/// still cap a tenant whose own limit is larger (or 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
pub struct LimitsView {
    /// SMTP credentials.
    pub max_users: u64,
    pub max_domains: u64,
    pub max_storage_mb: u64,
    /// Rolling 24 hours, exact over restarts and nodes (counted from the queue's rows).
    pub max_messages_per_day: u64,
    /// Recipients of one message (SMTP `452 4.5.3`, HTTP 422 beyond).
    pub max_recipients_per_message: u64,
    /// Bytes of one message (EHLO SIZE after AUTH; `552 5.3.4`, HTTP 413 beyond).
    pub max_message_size: u64,
    /// Messages per second, with a burst of as many (`451 4.7.1`, HTTP 429 beyond).
    pub rate_per_second: u64,
    /// Messages per minute, with a burst of as many.
    pub rate_per_minute: u64,
    /// Concurrent authenticated SMTP sessions (per node).
    pub max_connections: u64,
}

impl From<Limits> for LimitsView {
    fn from(l: Limits) -> Self {
        LimitsView {
            max_users: l.max_users,
            max_domains: l.max_domains,
            max_storage_mb: l.max_storage_mb,
            max_messages_per_day: l.max_messages_per_day,
            max_recipients_per_message: l.max_recipients_per_message,
            max_message_size: l.max_message_size,
            rate_per_second: l.rate_per_second,
            rate_per_minute: l.rate_per_minute,
            max_connections: l.max_connections,
        }
    }
}

/// Feature flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
pub struct FeaturesView {
    pub spam_filtering: bool,
    pub virus_scanning: bool,
    pub dkim_signing: bool,
    pub mailing_lists: bool,
    pub webhooks: bool,
    /// Tenant API keys work only while this is on.
    pub api_access: bool,
    pub custom_domains: bool,
    pub priority_support: bool,
}

impl From<Features> for FeaturesView {
    fn from(f: Features) -> Self {
        FeaturesView {
            spam_filtering: f.spam_filtering,
            virus_scanning: f.virus_scanning,
            dkim_signing: f.dkim_signing,
            mailing_lists: f.mailing_lists,
            webhooks: f.webhooks,
            api_access: f.api_access,
            custom_domains: f.custom_domains,
            priority_support: f.priority_support,
        }
    }
}

/// A tenant as the API and the CLI show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct TenantView {
    pub id: String,
    pub name: String,
    pub tier: TierName,
    pub limits: LimitsView,
    pub features: FeaturesView,
    pub status: StatusName,
    /// Why the tenant is paused or suspended (shown in SMTP replies).
    pub status_reason: Option<String>,
    /// The operator's off switch, independent of status.
    pub enabled: bool,
    /// `mx`, `smarthost` or `ses`; the configured default when null.
    pub transport: Option<String>,
    /// Unix milliseconds.
    pub created_at: i64,
}

impl From<&Tenant> for TenantView {
    fn from(t: &Tenant) -> Self {
        TenantView {
            id: t.id.clone(),
            name: t.name.clone(),
            tier: t.tier.into(),
            limits: t.limits.into(),
            features: t.features.into(),
            status: t.status.into(),
            status_reason: t.status_reason.clone(),
            enabled: t.enabled,
            transport: t.transport.map(|t| t.as_str().to_string()),
            created_at: t.created_at,
        }
    }
}

/// `POST /api/tenants`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    pub name: String,
    /// Default `free`.
    #[serde(default)]
    pub tier: Option<TierName>,
    /// A first domain to add (as `POST /api/tenants/{id}/domains` would).
    #[serde(default)]
    pub domain: Option<String>,
}

/// The new tenant, and its first domain with the DNS records to publish when one was given.
#[derive(Debug, Serialize, ToSchema)]
pub struct TenantCreated {
    #[serde(flatten)]
    pub tenant: TenantView,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain: Option<DomainView>,
}

/// `PUT /api/tenants/{id}`: every field optional; only those given change.
///
/// Changing `tier` applies the new tier's default limits and features, except the ones given
/// in the same request (so `{"tier": "starter", "max_users": 50}` is starter with 50 users).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateTenant {
    pub name: Option<String>,
    pub tier: Option<TierName>,
    pub max_users: Option<u64>,
    pub max_domains: Option<u64>,
    pub max_storage_mb: Option<u64>,
    pub max_messages_per_day: Option<u64>,
    pub max_recipients_per_message: Option<u64>,
    pub max_message_size: Option<u64>,
    pub rate_per_second: Option<u64>,
    pub rate_per_minute: Option<u64>,
    pub max_connections: Option<u64>,
    pub enabled: Option<bool>,
    pub status: Option<StatusName>,
    /// Shown with the status; cleared when the status goes back to `active` unless given.
    pub status_reason: Option<String>,
    pub features: Option<FeatureUpdate>,
}

/// Feature flags to set; the ones not named keep their value.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FeatureUpdate {
    pub spam_filtering: Option<bool>,
    pub virus_scanning: Option<bool>,
    pub dkim_signing: Option<bool>,
    pub mailing_lists: Option<bool>,
    pub webhooks: Option<bool>,
    pub api_access: Option<bool>,
    pub custom_domains: Option<bool>,
    pub priority_support: Option<bool>,
}

/// `{"success": true}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Success {
    pub success: bool,
}

impl Success {
    pub fn json() -> Json<Success> {
        Json(Success { success: true })
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TenantList {
    pub tenants: Vec<TenantView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeleteQuery {
    /// Delete even with mail still queued; that mail is dropped (and the audit log says how
    /// many messages).
    #[serde(default)]
    pub force: bool,
}

fn audit_json(tenant: &Tenant) -> serde_json::Value {
    serde_json::to_value(TenantView::from(tenant)).expect("tenant view serialises")
}

// ---- operations (shared with the CLI) ------------------------------------------------------

pub async fn get(store: &Store, id: &str) -> Result<Tenant> {
    store
        .get_tenant(id)
        .await?
        .ok_or_else(|| tenant_not_found(id))
}

pub async fn create(
    store: &Store,
    config: &Config,
    actor: &Actor,
    request: CreateTenant,
) -> Result<TenantCreated> {
    let name = request.name.trim();
    if name.is_empty() {
        return Err(AdminError::Invalid("name must not be empty".into()));
    }
    // The domain is checked before the tenant exists, so a taken or malformed domain refuses
    // the whole request instead of leaving a tenant behind.
    if let Some(raw) = &request.domain {
        domains::check_available(store, raw).await?;
    }
    let tier: Tier = request.tier.map(Tier::from).unwrap_or(Tier::Free);
    let tenant = Tenant::new(random_id("t_", 16), name.to_string(), tier, now_ms());
    let audit = crate::audit::entry(
        actor,
        Some(&tenant.id),
        "tenant.create",
        &tenant.id,
        None,
        Some(audit_json(&tenant)),
    );
    store.create_tenant(&tenant, Some(&audit)).await?;
    let domain = match &request.domain {
        None => None,
        Some(raw) => {
            match domains::add(store, config, actor, &tenant.id, raw, KeyType::Rsa, false).await {
                Ok(view) => Some(view),
                Err(error) => {
                    // Another request took the domain between the check and now: undo.
                    let audit = crate::audit::entry(
                        actor,
                        Some(&tenant.id),
                        "tenant.delete",
                        &tenant.id,
                        Some(audit_json(&tenant)),
                        Some(serde_json::json!({"reason": "domain could not be added"})),
                    );
                    store.delete_tenant(&tenant.id, Some(&audit)).await?;
                    return Err(error);
                }
            }
        }
    };
    Ok(TenantCreated {
        tenant: TenantView::from(&tenant),
        domain,
    })
}

/// A page of tenants; `only` restricts the list to one tenant (a tenant key's own).
pub async fn list(store: &Store, page: &PageQuery, only: Option<&str>) -> Result<TenantList> {
    let limit = page.limit()?;
    let after = pagination::decode_time_id(page.cursor.as_deref())?;
    if let Some(id) = only {
        let tenants = match store.get_tenant(id).await? {
            Some(t) if after.is_none() => vec![TenantView::from(&t)],
            _ => Vec::new(),
        };
        return Ok(TenantList {
            tenants,
            next_cursor: None,
        });
    }
    let tenants = store.list_tenants_page(after, limit + 1).await?;
    let (tenants, next) = pagination::split_page(tenants, limit, |t| {
        pagination::encode_time_id(t.created_at, &t.id)
    });
    Ok(TenantList {
        tenants: tenants.iter().map(TenantView::from).collect(),
        next_cursor: next,
    })
}

/// Applies `update` to `tenant` (no I/O; table-tested below).
pub fn apply_update(tenant: &Tenant, update: &UpdateTenant) -> Result<Tenant> {
    let mut next = tenant.clone();
    if let Some(name) = &update.name {
        let name = name.trim();
        if name.is_empty() {
            return Err(AdminError::Invalid("name must not be empty".into()));
        }
        next.name = name.to_string();
    }
    if let Some(tier) = update.tier {
        let tier = Tier::from(tier);
        if tier != tenant.tier {
            next.tier = tier;
            next.limits = tier.default_limits();
            next.features = tier.default_features();
        }
    }
    let limits = &mut next.limits;
    let set = |field: &mut u64, value: Option<u64>| {
        if let Some(v) = value {
            *field = v;
        }
    };
    set(&mut limits.max_users, update.max_users);
    set(&mut limits.max_domains, update.max_domains);
    set(&mut limits.max_storage_mb, update.max_storage_mb);
    set(
        &mut limits.max_messages_per_day,
        update.max_messages_per_day,
    );
    set(
        &mut limits.max_recipients_per_message,
        update.max_recipients_per_message,
    );
    set(&mut limits.max_message_size, update.max_message_size);
    set(&mut limits.rate_per_second, update.rate_per_second);
    set(&mut limits.rate_per_minute, update.rate_per_minute);
    set(&mut limits.max_connections, update.max_connections);
    if let Some(f) = &update.features {
        let features = &mut next.features;
        let set = |field: &mut bool, value: Option<bool>| {
            if let Some(v) = value {
                *field = v;
            }
        };
        set(&mut features.spam_filtering, f.spam_filtering);
        set(&mut features.virus_scanning, f.virus_scanning);
        set(&mut features.dkim_signing, f.dkim_signing);
        set(&mut features.mailing_lists, f.mailing_lists);
        set(&mut features.webhooks, f.webhooks);
        set(&mut features.api_access, f.api_access);
        set(&mut features.custom_domains, f.custom_domains);
        set(&mut features.priority_support, f.priority_support);
    }
    if let Some(enabled) = update.enabled {
        next.enabled = enabled;
    }
    if let Some(status) = update.status {
        next.status = status.into();
        if next.status == TenantStatus::Active && update.status_reason.is_none() {
            next.status_reason = None;
        }
    }
    if let Some(reason) = &update.status_reason {
        let reason = reason.trim();
        next.status_reason = (!reason.is_empty()).then(|| reason.to_string());
    }
    Ok(next)
}

pub async fn update(
    store: &Store,
    actor: &Actor,
    id: &str,
    update: &UpdateTenant,
) -> Result<Tenant> {
    let before = get(store, id).await?;
    let after = apply_update(&before, update)?;
    if after != before {
        let audit = crate::audit::entry(
            actor,
            Some(id),
            "tenant.update",
            id,
            Some(audit_json(&before)),
            Some(audit_json(&after)),
        );
        store.update_tenant(&after, Some(&audit)).await?;
    }
    Ok(after)
}

/// Deletes a tenant with its domains, keys, credentials and API keys. With queued mail it is
/// refused (409) unless `force`, which drops that mail.
pub async fn delete(store: &Store, actor: &Actor, id: &str, force: bool) -> Result<()> {
    let before = get(store, id).await?;
    let audit = |dropped: u64| {
        crate::audit::entry(
            actor,
            Some(id),
            "tenant.delete",
            id,
            Some(audit_json(&before)),
            Some(serde_json::json!({"forced": force, "dropped_queued_messages": dropped})),
        )
    };
    if force {
        let queued = store.queue_depth(Some(id)).await?;
        if !store.delete_tenant(id, Some(&audit(queued))).await? {
            return Err(tenant_not_found(id));
        }
        return Ok(());
    }
    match store.delete_tenant_if_idle(id, Some(&audit(0))).await? {
        TenantDeletion::Deleted => Ok(()),
        TenantDeletion::NotFound => Err(tenant_not_found(id)),
        TenantDeletion::HasQueuedMail(n) => Err(AdminError::Conflict(format!(
            "tenant {id} still has {n} queued message(s); delete with ?force=true to drop them"
        ))),
    }
}

// ---- handlers -------------------------------------------------------------------------------

/// Lists tenants: all of them for the operator, its own for a tenant key.
#[utoipa::path(
    get, path = "/api/tenants", tag = "tenants",
    params(PageQuery),
    responses((status = 200, body = TenantList), (status = 400, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn list_tenants(
    State(state): State<AdminState>,
    principal: Principal,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> Result<Json<TenantList>> {
    Ok(Json(list(&state.store, &page, principal.tenant()).await?))
}

/// Creates a tenant (operator only).
#[utoipa::path(
    post, path = "/api/tenants", tag = "tenants",
    request_body = CreateTenant,
    responses(
        (status = 201, body = TenantCreated),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 403, description = "Not the operator", body = ErrorBody),
        (status = 409, description = "The domain belongs to another tenant", body = ErrorBody),
        (status = 422, description = "Empty name or invalid domain", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn create_tenant(
    State(state): State<AdminState>,
    principal: Principal,
    ApiJson(request): ApiJson<CreateTenant>,
) -> Result<(StatusCode, Json<TenantCreated>)> {
    principal.require_operator("creating tenants")?;
    let created = create(&state.store, &state.config, &principal.actor(), request).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// One tenant.
#[utoipa::path(
    get, path = "/api/tenants/{id}", tag = "tenants",
    params(("id" = String, Path, description = "Tenant id")),
    responses((status = 200, body = TenantView), (status = 404, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn show_tenant(
    State(state): State<AdminState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<TenantView>> {
    principal.scope(&id)?;
    Ok(Json(TenantView::from(&get(&state.store, &id).await?)))
}

/// Changes limits, tier, status, enabled or features (operator only).
#[utoipa::path(
    put, path = "/api/tenants/{id}", tag = "tenants",
    params(("id" = String, Path, description = "Tenant id")),
    request_body = UpdateTenant,
    responses(
        (status = 200, body = Success),
        (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 422, body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn update_tenant(
    State(state): State<AdminState>,
    principal: Principal,
    Path(id): Path<String>,
    ApiJson(request): ApiJson<UpdateTenant>,
) -> Result<Json<Success>> {
    principal.scope(&id)?;
    principal.require_operator("changing a tenant")?;
    update(&state.store, &principal.actor(), &id, &request).await?;
    Ok(Success::json())
}

/// Deletes a tenant with its domains, keys and credentials (operator only).
#[utoipa::path(
    delete, path = "/api/tenants/{id}", tag = "tenants",
    params(("id" = String, Path, description = "Tenant id"), DeleteQuery),
    responses(
        (status = 200, body = Success),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "Mail still queued; use ?force=true", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn delete_tenant(
    State(state): State<AdminState>,
    principal: Principal,
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<DeleteQuery>,
) -> Result<Json<Success>> {
    principal.scope(&id)?;
    principal.require_operator("deleting a tenant")?;
    delete(&state.store, &principal.actor(), &id, query.force).await?;
    Ok(Success::json())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(tier: Tier) -> Tenant {
        Tenant::new("t_1".into(), "Acme".into(), tier, 1)
    }

    #[test]
    fn tier_change_applies_defaults_except_fields_given() {
        let mut before = tenant(Tier::Free);
        before.limits.max_users = 7;
        let update = UpdateTenant {
            tier: Some(TierName::Starter),
            max_domains: Some(9),
            features: Some(FeatureUpdate {
                webhooks: Some(true),
                ..Default::default()
            }),
            ..Default::default()
        };
        let after = apply_update(&before, &update).unwrap();
        assert_eq!(after.tier, Tier::Starter);
        assert_eq!(
            after.limits.max_users, 25,
            "tier default replaces the old override"
        );
        assert_eq!(
            after.limits.max_domains, 9,
            "field given wins over the tier default"
        );
        assert!(after.features.api_access, "starter default");
        assert_eq!(
            after.limits.rate_per_second,
            Tier::Starter.default_limits().rate_per_second,
            "the new tier's sending limits too"
        );
        assert!(after.features.webhooks, "feature given wins");
        // Same tier: nothing reset.
        let same = UpdateTenant {
            tier: Some(TierName::Free),
            ..Default::default()
        };
        assert_eq!(apply_update(&before, &same).unwrap().limits.max_users, 7);
    }

    #[test]
    fn sending_limits_are_set_one_by_one() {
        let before = tenant(Tier::Free);
        let update = UpdateTenant {
            max_recipients_per_message: Some(3),
            max_message_size: Some(2048),
            rate_per_second: Some(0),
            rate_per_minute: Some(7),
            max_connections: Some(1),
            ..Default::default()
        };
        let after = apply_update(&before, &update).unwrap();
        let l = after.limits;
        assert_eq!(
            (
                l.max_recipients_per_message,
                l.max_message_size,
                l.rate_per_second,
                l.rate_per_minute,
                l.max_connections
            ),
            (3, 2048, 0, 7, 1)
        );
        assert_eq!(l.max_users, before.limits.max_users, "others unchanged");
        // The update's JSON names: what PUT /api/tenants/{id} and the CLI accept.
        let parsed: UpdateTenant = serde_json::from_value(serde_json::json!({
            "max_recipients_per_message": 3, "max_message_size": 2048, "rate_per_second": 0,
            "rate_per_minute": 7, "max_connections": 1
        }))
        .unwrap();
        assert_eq!(apply_update(&before, &parsed).unwrap().limits, l);
    }

    #[test]
    fn status_reason_follows_status() {
        let before = tenant(Tier::Free);
        let paused = apply_update(
            &before,
            &UpdateTenant {
                status: Some(StatusName::Paused),
                status_reason: Some("bounce rate".into()),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(paused.status, TenantStatus::Paused);
        assert_eq!(paused.status_reason.as_deref(), Some("bounce rate"));
        let active = apply_update(
            &paused,
            &UpdateTenant {
                status: Some(StatusName::Active),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(active.status_reason, None);
        let renamed = UpdateTenant {
            name: Some("  ".into()),
            ..Default::default()
        };
        assert_eq!(
            apply_update(&before, &renamed).unwrap_err().status(),
            StatusCode::UNPROCESSABLE_ENTITY
        );
    }
}
