//! `/api/tenants/{id}/domains/{domain}/return-path`: a sending domain's custom MAIL FROM
//! (return-path) domain. With it, delivery puts that subdomain in the envelope sender (bounces
//! go to it, SPF is checked against it) while From: stays the sending domain: what SES calls a
//! custom MAIL FROM domain. Setting one needs the `custom_domains` feature, and delivery uses it
//! only while the tenant has the feature; the answer lists the MX and SPF records to publish.
//!
//! Kept apart from domains.rs: the return path is a small resource of its own on a domain.

use axum::Json;
use axum::extract::{Path, State};
use mailmux_core::{Domain, Feature, is_subdomain_of, normalize_domain, return_path_dns_records};
use mailmux_store::Store;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::AdminState;
use crate::auth::{Actor, Principal};
use crate::error::{AdminError, ErrorBody, Result};
use crate::extract::ApiJson;
use crate::tenants::Success;

/// `PUT …/return-path`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetReturnPath {
    /// A subdomain of the sending domain, e.g. `bounce.acme.example`.
    pub return_path: String,
}

/// A record to publish for the return-path domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct ReturnPathRecord {
    /// `MX` or `TXT`.
    #[serde(rename = "type")]
    pub record_type: String,
    pub name: String,
    pub value: String,
    /// `bounces` (MX: bounces reach this relay) or `spf`.
    pub purpose: String,
}

/// A domain's return-path setting.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReturnPathView {
    pub domain: String,
    /// The return-path domain; null when none is set (the sending domain itself is used).
    pub return_path: Option<String>,
    /// Whether delivery uses it now: set, and the tenant has `custom_domains`.
    pub in_use: bool,
    /// What to publish for it (empty when none is set).
    pub records: Vec<ReturnPathRecord>,
}

fn view(
    domain: &Domain,
    return_path: Option<String>,
    custom_domains: bool,
    relay: &str,
) -> ReturnPathView {
    let records = match &return_path {
        None => Vec::new(),
        Some(rp) => return_path_dns_records(rp, relay)
            .into_iter()
            .map(|r| ReturnPathRecord {
                purpose: if r.record_type == "MX" {
                    "bounces"
                } else {
                    "spf"
                }
                .into(),
                record_type: r.record_type,
                name: r.name,
                value: r.value,
            })
            .collect(),
    };
    ReturnPathView {
        domain: domain.name.clone(),
        in_use: return_path.is_some() && custom_domains,
        return_path,
        records,
    }
}

async fn current(store: &Store, domain: &Domain) -> Result<Option<String>> {
    Ok(store
        .get_return_path(&domain.name)
        .await?
        .and_then(|(_, rp)| rp))
}

// ---- operations ----------------------------------------------------------------------------

pub async fn show(
    store: &Store,
    relay: &str,
    tenant_id: &str,
    raw: &str,
) -> Result<ReturnPathView> {
    let tenant = crate::tenants::get(store, tenant_id).await?;
    let domain = crate::domains::get_domain(store, tenant_id, raw).await?;
    let return_path = current(store, &domain).await?;
    Ok(view(
        &domain,
        return_path,
        tenant.features.custom_domains,
        relay,
    ))
}

/// Sets the return-path domain: the tenant needs `custom_domains` (403); the sending domain
/// must be verified and the return path a subdomain of it that is not a registered domain
/// itself (422), so no tenant can point bounces of a domain it does not hold.
pub async fn set(
    store: &Store,
    relay: &str,
    actor: &Actor,
    tenant_id: &str,
    raw: &str,
    request: &SetReturnPath,
) -> Result<ReturnPathView> {
    let tenant = crate::tenants::get(store, tenant_id).await?;
    // Ownership first: a domain of another tenant is 404 before anything else is said.
    let domain = crate::domains::get_domain(store, tenant_id, raw).await?;
    crate::features::require(&tenant, Feature::CustomDomains)?;
    if !domain.verified {
        return Err(AdminError::Invalid(format!(
            "domain {} is not verified yet; verify it before giving it a return path",
            domain.name
        )));
    }
    let return_path = normalize_domain(&request.return_path)
        .map_err(|e| AdminError::Invalid(format!("return_path {:?}: {e}", request.return_path)))?;
    if !is_subdomain_of(&return_path, &domain.name) {
        return Err(AdminError::Invalid(format!(
            "return_path must be a subdomain of {} (e.g. bounce.{})",
            domain.name, domain.name
        )));
    }
    if store.get_domain(&return_path).await?.is_some() {
        return Err(AdminError::Invalid(format!(
            "{return_path} is a sending domain of its own; choose another subdomain"
        )));
    }
    let before = current(store, &domain).await?;
    store
        .set_return_path(tenant_id, &domain.name, Some(&return_path))
        .await?;
    crate::audit::record(
        store,
        actor,
        Some(tenant_id),
        "domain.return_path",
        &domain.name,
        Some(serde_json::json!({ "return_path": before })),
        Some(serde_json::json!({ "return_path": return_path })),
    )
    .await?;
    Ok(view(
        &domain,
        Some(return_path),
        tenant.features.custom_domains,
        relay,
    ))
}

/// Removes the return-path domain (the sending domain is the envelope's again). Allowed
/// without `custom_domains`: taking a setting away never needs a feature.
pub async fn remove(store: &Store, actor: &Actor, tenant_id: &str, raw: &str) -> Result<()> {
    crate::tenants::get(store, tenant_id).await?;
    let domain = crate::domains::get_domain(store, tenant_id, raw).await?;
    let before = current(store, &domain).await?;
    store.set_return_path(tenant_id, &domain.name, None).await?;
    if before.is_some() {
        crate::audit::record(
            store,
            actor,
            Some(tenant_id),
            "domain.return_path",
            &domain.name,
            Some(serde_json::json!({ "return_path": before })),
            Some(serde_json::json!({ "return_path": null })),
        )
        .await?;
    }
    Ok(())
}

// ---- handlers -------------------------------------------------------------------------------

/// The domain's return-path (custom MAIL FROM) domain and its records.
#[utoipa::path(
    get, path = "/api/tenants/{id}/domains/{domain}/return-path", tag = "domains",
    params(
        ("id" = String, Path, description = "Tenant id"),
        ("domain" = String, Path, description = "Domain name"),
    ),
    responses((status = 200, body = ReturnPathView), (status = 404, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn show_return_path(
    State(state): State<AdminState>,
    principal: Principal,
    Path((id, domain)): Path<(String, String)>,
) -> Result<Json<ReturnPathView>> {
    principal.scope(&id)?;
    let relay = &state.config.smtp.hostname;
    Ok(Json(show(&state.store, relay, &id, &domain).await?))
}

/// Sets the return-path domain (needs `custom_domains`); answers the MX and SPF records to
/// publish.
#[utoipa::path(
    put, path = "/api/tenants/{id}/domains/{domain}/return-path", tag = "domains",
    params(
        ("id" = String, Path, description = "Tenant id"),
        ("domain" = String, Path, description = "Domain name"),
    ),
    request_body = SetReturnPath,
    responses(
        (status = 200, body = ReturnPathView),
        (status = 400, body = ErrorBody),
        (status = 403, description = "The tenant does not have custom_domains", body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 422, description = "Not a subdomain, or the domain is not verified", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn set_return_path(
    State(state): State<AdminState>,
    principal: Principal,
    Path((id, domain)): Path<(String, String)>,
    ApiJson(request): ApiJson<SetReturnPath>,
) -> Result<Json<ReturnPathView>> {
    principal.scope(&id)?;
    let relay = &state.config.smtp.hostname;
    let actor = principal.actor();
    Ok(Json(
        set(&state.store, relay, &actor, &id, &domain, &request).await?,
    ))
}

/// Removes the return-path domain.
#[utoipa::path(
    delete, path = "/api/tenants/{id}/domains/{domain}/return-path", tag = "domains",
    params(
        ("id" = String, Path, description = "Tenant id"),
        ("domain" = String, Path, description = "Domain name"),
    ),
    responses((status = 200, body = Success), (status = 404, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn delete_return_path(
    State(state): State<AdminState>,
    principal: Principal,
    Path((id, domain)): Path<(String, String)>,
) -> Result<Json<Success>> {
    principal.scope(&id)?;
    remove(&state.store, &principal.actor(), &id, &domain).await?;
    Ok(Success::json())
}
