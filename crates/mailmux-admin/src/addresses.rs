//! `/api/tenants/{id}/addresses[/{rule_id}]`: receipt rules, what the MX does with mail for an
//! address of the tenant's domains. `{"address": "user@domain"}` names one address,
//! `{"address": "*@domain"}` the domain's catch-all; both may exist (mixed mode: the individual
//! rule wins), and `user@` also takes `user+tag@` (plus-addressing). The MX applies a rule once
//! the domain has `"inbound": true` and is verified.
//!
//! Actions in this build: `store` (kept for `…/inbound`), `reject` (550 with the rule's
//! text), `forward` (to `forward_to`, sender rewritten with SRS) and `list` (to `members`,
//! feature `mailing_lists`); their destinations are checked in `rule_targets.rs`. `webhook`
//! is part of the interface but not built here: a rule asking for it is refused with 422
//! saying so, never accepted and silently dropped.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use mailmux_core::credential::random_id;
use mailmux_core::receipt_rule::CATCH_ALL;
use mailmux_core::{ReceiptRule, RuleAction, now_ms};
use mailmux_store::Store;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::{Actor, Principal};
use crate::error::{AdminError, ErrorBody, Result};
use crate::extract::ApiJson;
use crate::lookup;
use crate::rule_targets::{self, valid_local};
use crate::state::AdminState;
use crate::views::Success;

/// `POST` and `PUT` body: a whole rule.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleRequest {
    /// `user@domain`, or `*@domain` for the catch-all. The domain must be the tenant's.
    pub address: String,
    /// `store`, `reject`, `forward` or `list` (`webhook`: not available in this build).
    pub action: String,
    /// `reject`: the text of the 550 (default "Mail to this address is refused").
    #[serde(default)]
    pub reject_text: Option<String>,
    /// `webhook` rules (not available in this build).
    #[serde(default)]
    pub webhook_id: Option<String>,
    /// `forward` rules: where the mail goes (1 to 10 addresses).
    #[serde(default)]
    pub forward_to: Option<Vec<String>>,
    /// `list` rules (feature `mailing_lists`): the members (1 to 1000 addresses).
    #[serde(default)]
    pub members: Option<Vec<String>>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RuleView {
    pub id: String,
    pub address: String,
    pub domain: String,
    /// Whether this is the domain's catch-all (`*@domain`).
    pub catch_all: bool,
    pub action: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reject_text: Option<String>,
    /// `forward` rules' destinations.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub forward_to: Vec<String>,
    /// `list` rules' members.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl From<&ReceiptRule> for RuleView {
    fn from(rule: &ReceiptRule) -> RuleView {
        RuleView {
            id: rule.id.clone(),
            address: rule.address(),
            domain: rule.domain.clone(),
            catch_all: rule.is_catch_all(),
            action: rule.action.as_str().to_string(),
            reject_text: rule.reject_text.clone(),
            forward_to: rule.forward_to.clone(),
            members: rule.members.clone(),
            created_at: rule.created_at,
            updated_at: rule.updated_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RuleList {
    pub addresses: Vec<RuleView>,
}

/// Longest `reject_text`: it goes into one SMTP reply line.
const MAX_REJECT_TEXT: usize = 200;

/// The rule's local part, domain and action, checked against the tenant's domains.
async fn checked(
    store: &Store,
    tenant_id: &str,
    request: &RuleRequest,
) -> Result<(String, String, RuleAction, Option<String>)> {
    let action = match request.action.as_str() {
        "store" => RuleAction::Store,
        "reject" => RuleAction::Reject,
        "forward" => RuleAction::Forward,
        "list" => RuleAction::List,
        "webhook" => {
            return Err(AdminError::Invalid(format!(
                "action {:?} is not available in this build (available: store, reject, \
                 forward, list)",
                request.action
            )));
        }
        other => {
            return Err(AdminError::Invalid(format!(
                "action {other:?}: expected store, reject, webhook, forward or list"
            )));
        }
    };
    let Some((local, domain)) = request.address.rsplit_once('@') else {
        return Err(AdminError::Invalid(format!(
            "address {:?}: expected user@domain or *@domain",
            request.address
        )));
    };
    let local = if local == CATCH_ALL {
        CATCH_ALL.to_string()
    } else {
        // The same reading the MX gives a recipient, so that a rule can only name an address
        // the MX can match (no relay syntax, no quoting games).
        match mailmux_inbound::address::parse(&format!("{local}@{domain}")) {
            Ok(Some(recipient)) if valid_local(&recipient.local) => recipient.local,
            _ => {
                return Err(AdminError::Invalid(format!(
                    "address {:?}: the part before the @ is not a valid local part",
                    request.address
                )));
            }
        }
    };
    let domain = lookup::domain(store, tenant_id, domain).await?;
    let reject_text = match (action, &request.reject_text) {
        (RuleAction::Reject, Some(text)) => {
            let text = text.trim();
            if text.is_empty() || text.len() > MAX_REJECT_TEXT || text.chars().any(char::is_control)
            {
                return Err(AdminError::Invalid(format!(
                    "reject_text: 1 to {MAX_REJECT_TEXT} characters on one line"
                )));
            }
            Some(text.to_string())
        }
        (RuleAction::Reject, None) => None,
        (_, Some(_)) => {
            return Err(AdminError::Invalid(
                "reject_text: only for action reject".into(),
            ));
        }
        (_, None) => None,
    };
    Ok((local, domain.name, action, reject_text))
}

/// A `forward` or `list` rule's destinations (rule_targets.rs), empty for other actions.
fn targets(
    tenant: &mailmux_core::Tenant,
    action: RuleAction,
    local_part: &str,
    domain: &str,
    request: &RuleRequest,
) -> Result<(Vec<String>, Vec<String>)> {
    rule_targets::checked(
        tenant,
        action,
        &format!("{local_part}@{domain}"),
        request.forward_to.as_deref(),
        request.members.as_deref(),
    )
}

// ---- operations (shared with the CLI) ------------------------------------------------------

pub async fn create(
    store: &Store,
    actor: &Actor,
    tenant_id: &str,
    request: &RuleRequest,
) -> Result<RuleView> {
    let tenant = lookup::tenant(store, tenant_id).await?;
    let (local_part, domain, action, reject_text) = checked(store, tenant_id, request).await?;
    let (forward_to, members) = targets(&tenant, action, &local_part, &domain, request)?;
    let now = now_ms();
    let rule = ReceiptRule {
        id: random_id("r_", 16),
        tenant_id: tenant_id.to_string(),
        domain,
        local_part,
        action,
        reject_text,
        forward_to,
        members,
        created_at: now,
        updated_at: now,
    };
    let view = RuleView::from(&rule);
    let audit = crate::audit_log::entry(
        actor,
        Some(tenant_id),
        "address.create",
        &rule.id,
        None,
        Some(serde_json::to_value(&view).unwrap_or_default()),
    );
    store.create_receipt_rule(&rule, Some(&audit)).await?;
    Ok(view)
}

pub async fn list(store: &Store, tenant_id: &str) -> Result<RuleList> {
    lookup::tenant(store, tenant_id).await?;
    let rules = store.list_receipt_rules(tenant_id).await?;
    Ok(RuleList {
        addresses: rules.iter().map(RuleView::from).collect(),
    })
}

async fn find(store: &Store, tenant_id: &str, id: &str) -> Result<ReceiptRule> {
    lookup::tenant(store, tenant_id).await?;
    store
        .get_receipt_rule(tenant_id, id)
        .await?
        .ok_or_else(|| AdminError::NotFound(format!("address rule {id} not found")))
}

pub async fn show(store: &Store, tenant_id: &str, id: &str) -> Result<RuleView> {
    Ok(RuleView::from(&find(store, tenant_id, id).await?))
}

pub async fn update(
    store: &Store,
    actor: &Actor,
    tenant_id: &str,
    id: &str,
    request: &RuleRequest,
) -> Result<RuleView> {
    let before = find(store, tenant_id, id).await?;
    let (local_part, domain, action, reject_text) = checked(store, tenant_id, request).await?;
    let tenant = lookup::tenant(store, tenant_id).await?;
    let (forward_to, members) = targets(&tenant, action, &local_part, &domain, request)?;
    let after = ReceiptRule {
        domain,
        local_part,
        action,
        reject_text,
        forward_to,
        members,
        updated_at: now_ms().max(before.updated_at + 1),
        ..before.clone()
    };
    let view = RuleView::from(&after);
    let audit = crate::audit_log::entry(
        actor,
        Some(tenant_id),
        "address.update",
        id,
        Some(serde_json::to_value(RuleView::from(&before)).unwrap_or_default()),
        Some(serde_json::to_value(&view).unwrap_or_default()),
    );
    store.update_receipt_rule(&after, Some(&audit)).await?;
    Ok(view)
}

pub async fn delete(store: &Store, actor: &Actor, tenant_id: &str, id: &str) -> Result<()> {
    let before = find(store, tenant_id, id).await?;
    let audit = crate::audit_log::entry(
        actor,
        Some(tenant_id),
        "address.delete",
        id,
        Some(serde_json::to_value(RuleView::from(&before)).unwrap_or_default()),
        None,
    );
    if !store
        .delete_receipt_rule(tenant_id, id, Some(&audit))
        .await?
    {
        return Err(AdminError::NotFound(format!("address rule {id} not found")));
    }
    Ok(())
}

// ---- handlers -------------------------------------------------------------------------------

/// Adds a receipt rule.
#[utoipa::path(
    post, path = "/api/tenants/{id}/addresses", tag = "inbound",
    params(("id" = String, Path, description = "Tenant id")),
    request_body = RuleRequest,
    responses(
        (status = 201, body = RuleView),
        (status = 404, description = "No such tenant, or the domain is not the tenant's", body = ErrorBody),
        (status = 409, description = "The address already has a rule", body = ErrorBody),
        (status = 422, body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn create_address(
    State(state): State<AdminState>,
    principal: Principal,
    Path(id): Path<String>,
    ApiJson(request): ApiJson<RuleRequest>,
) -> Result<(StatusCode, Json<RuleView>)> {
    principal.scope(&id)?;
    let view = create(&state.store, &principal.actor(), &id, &request).await?;
    Ok((StatusCode::CREATED, Json(view)))
}

/// A tenant's receipt rules, by domain, catch-all last.
#[utoipa::path(
    get, path = "/api/tenants/{id}/addresses", tag = "inbound",
    params(("id" = String, Path, description = "Tenant id")),
    responses((status = 200, body = RuleList), (status = 404, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn list_addresses(
    State(state): State<AdminState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<RuleList>> {
    principal.scope(&id)?;
    Ok(Json(list(&state.store, &id).await?))
}

/// One receipt rule.
#[utoipa::path(
    get, path = "/api/tenants/{id}/addresses/{rule_id}", tag = "inbound",
    params(("id" = String, Path, description = "Tenant id"), ("rule_id" = String, Path)),
    responses((status = 200, body = RuleView), (status = 404, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn show_address(
    State(state): State<AdminState>,
    principal: Principal,
    Path((id, rule_id)): Path<(String, String)>,
) -> Result<Json<RuleView>> {
    principal.scope(&id)?;
    Ok(Json(show(&state.store, &id, &rule_id).await?))
}

/// Replaces a receipt rule (address, action, text).
#[utoipa::path(
    put, path = "/api/tenants/{id}/addresses/{rule_id}", tag = "inbound",
    params(("id" = String, Path, description = "Tenant id"), ("rule_id" = String, Path)),
    request_body = RuleRequest,
    responses(
        (status = 200, body = RuleView),
        (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody),
        (status = 422, body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn update_address(
    State(state): State<AdminState>,
    principal: Principal,
    Path((id, rule_id)): Path<(String, String)>,
    ApiJson(request): ApiJson<RuleRequest>,
) -> Result<Json<RuleView>> {
    principal.scope(&id)?;
    Ok(Json(
        update(&state.store, &principal.actor(), &id, &rule_id, &request).await?,
    ))
}

/// Removes a receipt rule: mail for the address is refused (or falls to the catch-all).
#[utoipa::path(
    delete, path = "/api/tenants/{id}/addresses/{rule_id}", tag = "inbound",
    params(("id" = String, Path, description = "Tenant id"), ("rule_id" = String, Path)),
    responses((status = 200, body = Success), (status = 404, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn delete_address(
    State(state): State<AdminState>,
    principal: Principal,
    Path((id, rule_id)): Path<(String, String)>,
) -> Result<Json<Success>> {
    principal.scope(&id)?;
    delete(&state.store, &principal.actor(), &id, &rule_id).await?;
    Ok(Success::json())
}
