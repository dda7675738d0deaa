//! `/api/tenants/{id}/domains[/{domain}[/verify]]`: a tenant's sending domains, and (with
//! `"inbound": true` on POST, or a `PUT` with the partial body `{"inbound": …}`) its inbound ones. Adding one
//! generates its DKIM key and verification token and answers with every DNS record to publish
//! (`provision.rs`); verifying looks them up and records a status per record (`dns/sending.rs`).
//! A domain sends once its verification TXT and DKIM record are found (or the operator said so).
//!
//! With a DKIM rotation in progress (`dkim_rotation.rs`) the records also list the new key
//! (`key_status: pending`; once a check finds it, signing switches to it) and, after the switch,
//! the old one (`status: retiring`, keep it published) until its grace period ends.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use mailmux_core::Config;
use mailmux_store::Store;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::{Actor, Principal};
use crate::dkim::KeyType;
use crate::dns::DnsChecker;
use crate::dns::sending::{self, DomainView};
use crate::error::{ErrorBody, Result};
use crate::extract::{ApiJson, ApiQuery};
use crate::lookup;
use crate::pagination::{self, PageQuery};
use crate::provision;
use crate::state::AdminState;
use crate::views::Success;

/// How long adding a domain waits for the SES sync it starts (a tenant on `ses`).
const SES_SYNC_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// `POST /api/tenants/{id}/domains`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddDomain {
    /// The domain; internationalised names are stored as A-labels.
    pub domain: String,
    /// DKIM key type, default `rsa` (2048 bits).
    #[serde(default)]
    pub key_type: Option<KeyType>,
    /// Operator only: mark verified without a DNS check.
    #[serde(default)]
    pub verified: bool,
    /// Make mailmux the domain's MX (receipt rules apply; the records list the MX).
    #[serde(default)]
    pub inbound: bool,
}

/// `PUT /api/tenants/{id}/domains/{domain}`: a partial body; what is absent stays as it is.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateDomain {
    /// Turn inbound mail (mailmux as the domain's MX) on or off.
    #[serde(default)]
    pub inbound: Option<bool>,
    /// Refuse inbound mail failing DMARC under the sender domain's `p=reject` (550 5.7.1).
    #[serde(default)]
    pub dmarc_reject: Option<bool>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DomainList {
    pub domains: Vec<DomainView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

// ---- operations (shared with the CLI) ------------------------------------------------------

pub async fn show(
    store: &Store,
    config: &Config,
    tenant_id: &str,
    raw: &str,
) -> Result<DomainView> {
    lookup::tenant(store, tenant_id).await?;
    let domain = lookup::domain(store, tenant_id, raw).await?;
    sending::load_view(store, config, &domain).await
}

pub async fn list(
    store: &Store,
    config: &Config,
    tenant_id: &str,
    page: &PageQuery,
) -> Result<DomainList> {
    lookup::tenant(store, tenant_id).await?;
    let limit = page.limit()?;
    let after = page.cursor.as_deref().map(pagination::decode).transpose()?;
    let domains = store
        .list_domains_page(tenant_id, after.as_deref(), limit + 1)
        .await?;
    let (domains, next) = pagination::split_page(domains, limit, |d| pagination::encode(&d.name));
    let mut views = Vec::with_capacity(domains.len());
    for domain in &domains {
        views.push(sending::load_view(store, config, domain).await?);
    }
    Ok(DomainList {
        domains: views,
        next_cursor: next,
    })
}

pub async fn delete(
    store: &Store,
    config: &Config,
    actor: &Actor,
    tenant_id: &str,
    raw: &str,
) -> Result<()> {
    lookup::tenant(store, tenant_id).await?;
    let domain = lookup::domain(store, tenant_id, raw).await?;
    let before = sending::load_view(store, config, &domain).await?;
    let audit = crate::audit_log::entry(
        actor,
        Some(tenant_id),
        "domain.delete",
        &domain.name,
        Some(sending::audit_json(&before)),
        None,
    );
    if !store
        .delete_domain(tenant_id, &domain.name, Some(&audit))
        .await?
    {
        return Err(lookup::domain_not_found(&domain.name));
    }
    // On SES, the next sync takes the domain's identity away from the tenant.
    let tenant = lookup::tenant(store, tenant_id).await?;
    provision::request_ses_sync(store, config, &tenant, mailmux_core::now_ms()).await;
    Ok(())
}

/// Applies a partial update to a domain the tenant holds; answers with the domain as it is now.
pub async fn update(
    store: &Store,
    config: &Config,
    actor: &Actor,
    tenant_id: &str,
    raw: &str,
    request: &UpdateDomain,
) -> Result<DomainView> {
    lookup::tenant(store, tenant_id).await?;
    let mut domain = lookup::domain(store, tenant_id, raw).await?;
    let mut view = sending::load_view(store, config, &domain).await?;
    if let Some(inbound) = request.inbound {
        view = provision::set_inbound(store, config, actor, domain.clone(), inbound).await?;
        domain.inbound = inbound;
    }
    if let Some(dmarc_reject) = request.dmarc_reject {
        view = provision::set_dmarc_reject(store, config, actor, domain, dmarc_reject).await?;
    }
    Ok(view)
}

/// Checks a domain's records now and stores the per-record status (see
/// [`sending::check_and_store`]).
pub async fn verify(
    store: &Store,
    config: &Config,
    actor: &Actor,
    tenant_id: &str,
    raw: &str,
) -> Result<DomainView> {
    lookup::tenant(store, tenant_id).await?;
    let domain = lookup::domain(store, tenant_id, raw).await?;
    let checker = DnsChecker::new(&config.delivery.dns_servers)?;
    sending::check_and_store(store, config, actor, &checker, domain, "domain.verify").await
}

// ---- handlers -------------------------------------------------------------------------------

/// Adds a domain: generates its DKIM key and returns the DNS records to publish.
#[utoipa::path(
    post, path = "/api/tenants/{id}/domains", tag = "domains",
    params(("id" = String, Path, description = "Tenant id")),
    request_body = AddDomain,
    responses(
        (status = 201, body = DomainView),
        (status = 400, body = ErrorBody),
        (status = 403, description = "`verified` needs the operator token", body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "Another tenant holds the domain", body = ErrorBody),
        (status = 422, description = "Invalid name, or over max_domains", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn add_domain(
    State(state): State<AdminState>,
    principal: Principal,
    Path(id): Path<String>,
    ApiJson(request): ApiJson<AddDomain>,
) -> Result<(StatusCode, Json<DomainView>)> {
    principal.scope(&id)?;
    if request.verified {
        principal.require_operator("marking a domain verified without DNS")?;
    }
    let mut view = provision::add_domain(
        &state.store,
        &state.config,
        &principal.actor(),
        &id,
        &request.domain,
        request.key_type.unwrap_or_default(),
        request.verified,
        request.inbound,
    )
    .await?;
    // On the `ses` transport: provisioning starts now; its identity's records (Easy DKIM's
    // CNAMEs) are in the answer if SES answers in time, else in `GET` on the domain later.
    if crate::jobs::run_requested_ses_sync(&state, &id, SES_SYNC_WAIT).await {
        view = show(&state.store, &state.config, &id, &view.domain).await?;
    }
    Ok((StatusCode::CREATED, Json(view)))
}

/// A tenant's domains.
#[utoipa::path(
    get, path = "/api/tenants/{id}/domains", tag = "domains",
    params(("id" = String, Path, description = "Tenant id"), PageQuery),
    responses((status = 200, body = DomainList), (status = 404, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn list_domains(
    State(state): State<AdminState>,
    principal: Principal,
    Path(id): Path<String>,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> Result<Json<DomainList>> {
    principal.scope(&id)?;
    Ok(Json(list(&state.store, &state.config, &id, &page).await?))
}

/// One domain with its records and their last status.
#[utoipa::path(
    get, path = "/api/tenants/{id}/domains/{domain}", tag = "domains",
    params(
        ("id" = String, Path, description = "Tenant id"),
        ("domain" = String, Path, description = "Domain name"),
    ),
    responses((status = 200, body = DomainView), (status = 404, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn show_domain(
    State(state): State<AdminState>,
    principal: Principal,
    Path((id, domain)): Path<(String, String)>,
) -> Result<Json<DomainView>> {
    principal.scope(&id)?;
    Ok(Json(show(&state.store, &state.config, &id, &domain).await?))
}

/// Changes a domain: `{"inbound": true}` makes mailmux its MX, `{"dmarc_reject": true}` refuses
/// inbound mail failing DMARC under `p=reject` (partial body: absent fields stay).
#[utoipa::path(
    put, path = "/api/tenants/{id}/domains/{domain}", tag = "domains",
    params(
        ("id" = String, Path, description = "Tenant id"),
        ("domain" = String, Path, description = "Domain name"),
    ),
    request_body = UpdateDomain,
    responses(
        (status = 200, body = DomainView),
        (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn update_domain(
    State(state): State<AdminState>,
    principal: Principal,
    Path((id, domain)): Path<(String, String)>,
    ApiJson(request): ApiJson<UpdateDomain>,
) -> Result<Json<DomainView>> {
    principal.scope(&id)?;
    Ok(Json(
        update(
            &state.store,
            &state.config,
            &principal.actor(),
            &id,
            &domain,
            &request,
        )
        .await?,
    ))
}

/// Removes a domain and its DKIM key; mail from it is refused from then on.
#[utoipa::path(
    delete, path = "/api/tenants/{id}/domains/{domain}", tag = "domains",
    params(
        ("id" = String, Path, description = "Tenant id"),
        ("domain" = String, Path, description = "Domain name"),
    ),
    responses((status = 200, body = Success), (status = 404, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn delete_domain(
    State(state): State<AdminState>,
    principal: Principal,
    Path((id, domain)): Path<(String, String)>,
) -> Result<Json<Success>> {
    principal.scope(&id)?;
    delete(
        &state.store,
        &state.config,
        &principal.actor(),
        &id,
        &domain,
    )
    .await?;
    Ok(Success::json())
}

/// Looks the domain's records up in DNS now and records a status per record.
#[utoipa::path(
    post, path = "/api/tenants/{id}/domains/{domain}/verify", tag = "domains",
    params(
        ("id" = String, Path, description = "Tenant id"),
        ("domain" = String, Path, description = "Domain name"),
    ),
    responses(
        (status = 200, description = "Checked; `verified` says whether it passed", body = DomainView),
        (status = 404, body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn verify_domain(
    State(state): State<AdminState>,
    principal: Principal,
    Path((id, domain)): Path<(String, String)>,
) -> Result<Json<DomainView>> {
    principal.scope(&id)?;
    Ok(Json(
        verify(
            &state.store,
            &state.config,
            &principal.actor(),
            &id,
            &domain,
        )
        .await?,
    ))
}
