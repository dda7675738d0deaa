//! The audit log, read back: `GET /api/tenants/{id}/audit` and the operator's `GET
//! /api/audit`, newest first. Every change writes its entry with `audit_log::entry`.

use axum::Json;
use axum::extract::{Path, State};
use mailmux_store::{AuditRecord, Store};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::auth::Principal;
use crate::error::{ErrorBody, Result};
use crate::extract::ApiQuery;
use crate::pagination::{self, PageQuery};
use crate::state::AdminState;

/// One change.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditEntryView {
    /// Position in the log (increasing).
    pub id: i64,
    /// Unix milliseconds.
    pub at: i64,
    /// `operator`, `api_key:<id>`, `cli` or `system`.
    pub actor: String,
    pub tenant_id: Option<String>,
    /// `<resource>.<verb>`: `tenant.create`, `tenant.update`, `tenant.delete`, `domain.add`,
    /// `domain.verify`, `domain.flag`, `domain.delete`, `credential.create`,
    /// `credential.revoke`, `api_key.create`, `api_key.revoke`.
    pub action: String,
    pub target: String,
    #[schema(value_type = Option<Object>)]
    pub before: Option<Value>,
    #[schema(value_type = Option<Object>)]
    pub after: Option<Value>,
}

impl From<AuditRecord> for AuditEntryView {
    fn from(record: AuditRecord) -> Self {
        let e = record.entry;
        AuditEntryView {
            id: record.id,
            at: e.at,
            actor: e.actor,
            tenant_id: e.tenant_id,
            action: e.action,
            target: e.target,
            before: e.before,
            after: e.after,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditPage {
    pub entries: Vec<AuditEntryView>,
    /// Pass as `cursor` for the next (older) page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// A page of the log, of one tenant or all.
pub async fn list(store: &Store, tenant_id: Option<&str>, page: &PageQuery) -> Result<AuditPage> {
    let limit = page.limit()?;
    let before = match page.cursor.as_deref() {
        None => None,
        Some(cursor) => Some(pagination::decode(cursor)?.parse::<i64>().map_err(|_| {
            crate::AdminError::BadRequest("cursor: not a cursor from this API".into())
        })?),
    };
    let records = store.list_audit(tenant_id, before, limit + 1).await?;
    let (records, next) =
        pagination::split_page(records, limit, |r| pagination::encode(&r.id.to_string()));
    Ok(AuditPage {
        entries: records.into_iter().map(AuditEntryView::from).collect(),
        next_cursor: next,
    })
}

/// A tenant's audit log, newest first.
#[utoipa::path(
    get, path = "/api/tenants/{id}/audit", tag = "audit",
    params(("id" = String, Path, description = "Tenant id"), PageQuery),
    responses(
        (status = 200, body = AuditPage),
        (status = 404, description = "No such tenant (or not yours)", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn tenant_audit(
    State(state): State<AdminState>,
    principal: Principal,
    Path(id): Path<String>,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> Result<Json<AuditPage>> {
    principal.scope(&id)?;
    crate::lookup::tenant(&state.store, &id).await?;
    Ok(Json(list(&state.store, Some(&id), &page).await?))
}

/// The whole audit log, every tenant and none (operator only).
#[utoipa::path(
    get, path = "/api/audit", tag = "audit",
    params(PageQuery),
    responses(
        (status = 200, body = AuditPage),
        (status = 403, description = "Not the operator", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn all_audit(
    State(state): State<AdminState>,
    principal: Principal,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> Result<Json<AuditPage>> {
    principal.require_operator("the global audit log")?;
    Ok(Json(list(&state.store, None, &page).await?))
}
