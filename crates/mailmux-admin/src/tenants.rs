//! `/api/tenants[/{id}]`: creating, reading, changing and deleting tenants. The operations are
//! plain functions over the store so the CLI runs exactly the same code as the API.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use mailmux_core::credential::random_id;
use mailmux_core::{Config, Tenant, Tier, now_ms};
use mailmux_store::{Store, TenantDeletion};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::auth::{Actor, Principal, tenant_not_found};
use crate::dkim::KeyType;
use crate::dns::sending::DomainView;
use crate::error::{AdminError, ErrorBody, Result};
use crate::extract::{ApiJson, ApiQuery};
use crate::pagination::{self, PageQuery};
use crate::state::AdminState;
use crate::views::{FeaturesView, LimitsView, StatusName, Success, TierName};
use crate::{lookup, provision};

mod update;
pub use update::{FeatureUpdate, UpdateTenant, apply_update};

/// A tenant as the API and the CLI show it.
///
/// Besides `limits`, the multi-tenancy guide's flat fields sit at the top level (`domain`,
/// `max_users`, `max_domains`, `max_storage_mb`, `max_messages_per_day`, `updated_at`), so
/// clients written against the guide read them unchanged; `limits` stays for everything else.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct TenantView {
    pub id: String,
    pub name: String,
    /// The tenant's primary domain: the first it added (null when it has none).
    pub domain: Option<String>,
    pub tier: TierName,
    pub limits: LimitsView,
    /// `limits.max_users` (SMTP credentials), at the top level as in the guide.
    pub max_users: u64,
    /// `limits.max_domains`.
    pub max_domains: u64,
    /// `limits.max_storage_mb`.
    pub max_storage_mb: u64,
    /// `limits.max_messages_per_day`.
    pub max_messages_per_day: u64,
    pub features: FeaturesView,
    pub status: StatusName,
    /// Why the tenant is paused or suspended (shown in SMTP replies).
    pub status_reason: Option<String>,
    /// The operator's off switch, independent of status: a disabled tenant's submissions are
    /// refused (`550 5.7.1`) and its queued mail is held.
    pub enabled: bool,
    /// `mx`, `smarthost` or `ses`; the configured default (`delivery.transport`) when null.
    pub transport: Option<String>,
    /// Days the tenant's stored inbound mail is kept; 0: the relay's `inbound.retention_days`.
    pub inbound_retention_days: u64,
    /// Unix milliseconds.
    pub created_at: i64,
    /// Unix milliseconds of the last change.
    pub updated_at: i64,
}

impl TenantView {
    /// The view of `t`, whose primary domain is `domain`.
    pub fn new(t: &Tenant, domain: Option<String>) -> TenantView {
        TenantView {
            id: t.id.clone(),
            name: t.name.clone(),
            domain,
            tier: t.tier.into(),
            limits: t.limits.into(),
            max_users: t.limits.max_users,
            max_domains: t.limits.max_domains,
            max_storage_mb: t.limits.max_storage_mb,
            max_messages_per_day: t.limits.max_messages_per_day,
            features: t.features.into(),
            status: t.status.into(),
            status_reason: t.status_reason.clone(),
            enabled: t.enabled,
            transport: t.transport.map(|t| t.as_str().to_string()),
            inbound_retention_days: t.inbound_retention_days,
            created_at: t.created_at,
            updated_at: t.updated_at,
        }
    }
}

/// The views of `tenants`, with their primary domains looked up in one query.
pub async fn views(store: &Store, tenants: &[Tenant]) -> Result<Vec<TenantView>> {
    let ids: Vec<&str> = tenants.iter().map(|t| t.id.as_str()).collect();
    let mut primary = store.primary_domains(&ids).await?;
    Ok(tenants
        .iter()
        .map(|t| TenantView::new(t, primary.remove(&t.id)))
        .collect())
}

/// The view of one tenant.
pub async fn view(store: &Store, tenant: &Tenant) -> Result<TenantView> {
    let mut views = views(store, std::slice::from_ref(tenant)).await?;
    Ok(views.pop().expect("one view per tenant"))
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
///
/// Serialised as the tenant's fields with `domain` replaced by the domain's view when one was
/// added (an object with its records; `null` otherwise), so the answer has one `domain` key.
#[derive(Debug, ToSchema)]
pub struct TenantCreated {
    #[serde(flatten)]
    pub tenant: TenantView,
    pub domain: Option<DomainView>,
}

impl Serialize for TenantCreated {
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::Error;
        let mut value = serde_json::to_value(&self.tenant).map_err(S::Error::custom)?;
        if let Some(domain) = &self.domain {
            value["domain"] = serde_json::to_value(domain).map_err(S::Error::custom)?;
        }
        value.serialize(serializer)
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

/// What the audit log keeps of a tenant: its settings (the primary domain is the domains'
/// business and has its own entries).
fn audit_json(tenant: &Tenant) -> serde_json::Value {
    let mut value =
        serde_json::to_value(TenantView::new(tenant, None)).expect("tenant view serialises");
    if let Some(fields) = value.as_object_mut() {
        fields.remove("domain");
    }
    value
}

// ---- operations (shared with the CLI) ------------------------------------------------------

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
        lookup::available_domain(store, raw).await?;
    }
    let tier: Tier = request.tier.map(Tier::from).unwrap_or(Tier::Free);
    let tenant = Tenant::new(random_id("t_", 16), name.to_string(), tier, now_ms());
    let audit = crate::audit_log::entry(
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
            let added = provision::add_domain(
                store,
                config,
                actor,
                &tenant.id,
                raw,
                KeyType::Rsa,
                false,
                false,
            )
            .await;
            match added {
                Ok(view) => Some(view),
                Err(error) => {
                    // Another request took the domain between the check and now: undo.
                    let audit = crate::audit_log::entry(
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
        tenant: TenantView::new(&tenant, domain.as_ref().map(|d| d.domain.clone())),
        domain,
    })
}

/// A page of tenants; `only` restricts the list to one tenant (a tenant key's own).
pub async fn list(store: &Store, page: &PageQuery, only: Option<&str>) -> Result<TenantList> {
    let limit = page.limit()?;
    let after = pagination::decode_time_id(page.cursor.as_deref())?;
    if let Some(id) = only {
        let tenants = match store.get_tenant(id).await? {
            Some(t) if after.is_none() => vec![view(store, &t).await?],
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
        tenants: views(store, &tenants).await?,
        next_cursor: next,
    })
}

pub async fn update(
    store: &Store,
    actor: &Actor,
    id: &str,
    update: &UpdateTenant,
) -> Result<Tenant> {
    let before = lookup::tenant(store, id).await?;
    if let Some(domain) = &update.domain {
        let primary = store.primary_domains(&[id]).await?.remove(id);
        if domain.as_deref().map(str::to_ascii_lowercase) != primary {
            return Err(AdminError::Invalid(format!(
                "domain: read-only here ({}); add and remove domains under \
                 /api/tenants/{id}/domains",
                primary.as_deref().unwrap_or("none yet")
            )));
        }
    }
    let mut before = before;
    // Read, apply, write only if nobody wrote in between; else read again and re-apply, so
    // two changes at once (two operators, the CLI and the API) both take effect. A client
    // that sent `updated_at` asked for exactly the version it read: 409 instead.
    for _ in 0..5 {
        let after = apply_update(&before, update)?;
        if after == before {
            return Ok(before);
        }
        let audit = crate::audit_log::entry(
            actor,
            Some(id),
            "tenant.update",
            id,
            Some(audit_json(&before)),
            Some(audit_json(&after)),
        );
        if store
            .update_tenant_if_unchanged(&after, Some(&audit))
            .await?
        {
            // Read back: the store dates the change (`updated_at`).
            return lookup::tenant(store, id).await;
        }
        before = lookup::tenant(store, id).await?;
    }
    Err(AdminError::Conflict(format!(
        "tenant {id} is being changed by others right now; try again"
    )))
}

/// Deletes a tenant with its domains, keys, credentials and API keys. With queued mail it is
/// refused (409) unless `force`, which drops that mail.
pub async fn delete(store: &Store, actor: &Actor, id: &str, force: bool) -> Result<()> {
    let before = lookup::tenant(store, id).await?;
    let audit = |dropped: u64| {
        crate::audit_log::entry(
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
    let tenant = lookup::tenant(&state.store, &id).await?;
    Ok(Json(view(&state.store, &tenant).await?))
}

/// Changes limits, tier, status, enabled, transport or features (operator only).
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
