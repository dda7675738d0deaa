//! `/api/tenants/{id}/domains/{domain}/return-path`: a sending domain's custom MAIL FROM
//! (return-path) domain. With it, delivery puts that subdomain in the envelope sender (bounces
//! go to it, SPF is checked against it) while From: stays the sending domain: what SES calls a
//! custom MAIL FROM domain. Setting one needs the `custom_domains` feature; the answer lists
//! the MX and SPF records to publish, and `POST …/return-path/verify` looks them up. Delivery
//! uses the return path only while the tenant has the feature and the records were found (a
//! return path whose MX is missing would lose every bounce, and one without SPF would fail
//! every receiver's SPF check); until then mail leaves with the sending domain, as before.
//! The daily re-check stops using a return path whose records disappeared.
//!
//! Kept apart from domains.rs: the return path is a small resource of its own on a domain;
//! its records and their check are `dns/return_path.rs`.

use axum::Json;
use axum::extract::{Path, State};
use mailmux_core::{Config, Domain, Feature, Tenant, is_subdomain_of, normalize_domain};
use mailmux_store::{ReturnPath, Store};
use serde::Deserialize;
use utoipa::ToSchema;

use crate::auth::{Actor, Principal};
use crate::dns::DnsChecker;
use crate::dns::return_path::{self as records, BounceHost, ReturnPathView};
use crate::error::{AdminError, ErrorBody, Result};
use crate::extract::ApiJson;
use crate::lookup;
use crate::state::AdminState;
use crate::views::Success;

/// `PUT …/return-path`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetReturnPath {
    /// A subdomain of the sending domain, e.g. `bounce.acme.example`.
    pub return_path: String,
}

/// The tenant, its domain (404 for another tenant's) and the domain's return-path setting.
async fn load(store: &Store, tenant_id: &str, raw: &str) -> Result<(Tenant, ReturnPath)> {
    let tenant = lookup::tenant(store, tenant_id).await?;
    let domain = lookup::domain(store, tenant_id, raw).await?;
    let setting = current(store, &domain).await?;
    Ok((tenant, setting))
}

async fn current(store: &Store, domain: &Domain) -> Result<ReturnPath> {
    store
        .get_return_path(&domain.name)
        .await?
        .ok_or_else(|| AdminError::NotFound(format!("domain {}", domain.name)))
}

// ---- operations ----------------------------------------------------------------------------

pub async fn show(
    store: &Store,
    config: &Config,
    tenant_id: &str,
    raw: &str,
) -> Result<ReturnPathView> {
    let (tenant, setting) = load(store, tenant_id, raw).await?;
    Ok(records::view(
        &setting,
        tenant.features.custom_domains,
        &BounceHost::of(config, &tenant),
    ))
}

/// Sets the return-path domain: the tenant needs `custom_domains` (403); the sending domain
/// must be verified and the return path a subdomain of it that is not a registered domain
/// itself (422), so no tenant can point bounces of a domain it does not hold.
pub async fn set(
    store: &Store,
    config: &Config,
    actor: &Actor,
    tenant_id: &str,
    raw: &str,
    request: &SetReturnPath,
) -> Result<ReturnPathView> {
    let tenant = lookup::tenant(store, tenant_id).await?;
    // Ownership first: a domain of another tenant is 404 before anything else is said.
    let domain = lookup::domain(store, tenant_id, raw).await?;
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
    let before = current(store, &domain).await?.return_path;
    // The same value again changes nothing: in particular it keeps its verification.
    if before.as_deref() != Some(return_path.as_str()) {
        let audit = crate::audit_log::entry(
            actor,
            Some(tenant_id),
            "domain.return_path",
            &domain.name,
            Some(serde_json::json!({ "return_path": before })),
            Some(serde_json::json!({ "return_path": return_path })),
        );
        store
            .set_return_path(tenant_id, &domain.name, Some(&return_path), Some(&audit))
            .await?;
    }
    let setting = current(store, &domain).await?;
    Ok(records::view(
        &setting,
        tenant.features.custom_domains,
        &BounceHost::of(config, &tenant),
    ))
}

/// Removes the return-path domain (the sending domain is the envelope's again). Allowed
/// without `custom_domains`: taking a setting away never needs a feature.
pub async fn remove(store: &Store, actor: &Actor, tenant_id: &str, raw: &str) -> Result<()> {
    lookup::tenant(store, tenant_id).await?;
    let domain = lookup::domain(store, tenant_id, raw).await?;
    let before = current(store, &domain).await?.return_path;
    let audit = before.is_some().then(|| {
        crate::audit_log::entry(
            actor,
            Some(tenant_id),
            "domain.return_path",
            &domain.name,
            Some(serde_json::json!({ "return_path": before })),
            Some(serde_json::json!({ "return_path": null })),
        )
    });
    store
        .set_return_path(tenant_id, &domain.name, None, audit.as_ref())
        .await?;
    Ok(())
}

/// Looks up the return path's MX and SPF records now and stores what was found. The return
/// path becomes verified when both are found. A record found gone (missing, or not naming this
/// relay) unverifies it, so delivery falls back to the sending domain; a lookup that failed
/// proves nothing and keeps the previous verdict. 422 when no return path is set.
pub async fn verify(
    store: &Store,
    config: &Config,
    actor: &Actor,
    tenant_id: &str,
    raw: &str,
) -> Result<ReturnPathView> {
    let (tenant, setting) = load(store, tenant_id, raw).await?;
    if setting.return_path.is_none() {
        return Err(AdminError::Invalid(format!(
            "domain {} has no return path to verify; set one with PUT first",
            setting.domain
        )));
    }
    let checker = DnsChecker::new(&config.delivery.dns_servers)?;
    let after = records::check_and_store(
        store,
        config,
        actor,
        &checker,
        setting,
        "domain.return_path_verify",
    )
    .await?;
    Ok(records::view(
        &after,
        tenant.features.custom_domains,
        &BounceHost::of(config, &tenant),
    ))
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
    Ok(Json(show(&state.store, &state.config, &id, &domain).await?))
}

/// Sets the return-path domain (needs `custom_domains`); answers the MX and SPF records to
/// publish. It is used once `…/return-path/verify` finds them.
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
    let actor = principal.actor();
    Ok(Json(
        set(&state.store, &state.config, &actor, &id, &domain, &request).await?,
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

/// Looks up the return path's MX and SPF records now; delivery uses the return path once both
/// are found.
#[utoipa::path(
    post, path = "/api/tenants/{id}/domains/{domain}/return-path/verify", tag = "domains",
    params(
        ("id" = String, Path, description = "Tenant id"),
        ("domain" = String, Path, description = "Domain name"),
    ),
    responses(
        (status = 200, body = ReturnPathView),
        (status = 404, body = ErrorBody),
        (status = 409, description = "The return path changed during the check", body = ErrorBody),
        (status = 422, description = "No return path is set", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn verify_return_path(
    State(state): State<AdminState>,
    principal: Principal,
    Path((id, domain)): Path<(String, String)>,
) -> Result<Json<ReturnPathView>> {
    principal.scope(&id)?;
    let actor = principal.actor();
    Ok(Json(
        verify(&state.store, &state.config, &actor, &id, &domain).await?,
    ))
}
