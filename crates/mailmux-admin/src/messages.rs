//! `/api/tenants/{id}/messages[/{queue_id}]`: the tenant's queue as it stands: per-recipient
//! status, attempts and last remote reply, and one message's full delivery history.

use axum::Json;
use axum::extract::{Path, State};
use mailmux_store::{AttemptView, MessageFilter, MessageState, MessageView, RecipientView, Store};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::auth::Principal;
use crate::error::{AdminError, ErrorBody, Result};
use crate::extract::ApiQuery;
use crate::pagination::{self, checked_limit};
use crate::state::AdminState;

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct MessageQuery {
    /// `queued`, `deferred`, `delivered`, `bounced` or `partial`.
    pub status: Option<String>,
    /// Only messages accepted at or after this time (Unix ms).
    pub since: Option<i64>,
    /// Items per page, 1-500 (default 50).
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RecipientStatusView {
    pub address: String,
    /// `queued`, `deferred`, `delivered` or `bounced`.
    pub status: String,
    pub attempts: u32,
    /// The remote server's last reply (or our reason, e.g. "no MX for domain").
    pub last_reply: Option<String>,
    pub last_attempt_at: Option<i64>,
    /// The id the next hop gave the message for this recipient: SES's `MessageId` for mail
    /// relayed through SES (what SES's own events and bounce notifications name).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_message_id: Option<String>,
}

impl From<RecipientView> for RecipientStatusView {
    fn from(r: RecipientView) -> Self {
        RecipientStatusView {
            address: r.address,
            status: r.status,
            attempts: r.attempts,
            last_reply: r.last_reply,
            last_attempt_at: r.last_attempt_at,
            remote_message_id: r.remote_id,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MessageSummary {
    /// Queue id (as in "250 2.0.0 Ok: queued as <id>").
    pub id: String,
    pub tenant_id: String,
    /// Envelope sender; empty for the null sender.
    pub mail_from: String,
    pub size: u64,
    /// `smtp`, `api` or `dsn`.
    pub origin: String,
    /// `queued`, `deferred`, `delivered`, `bounced` or `partial`.
    pub status: String,
    pub created_at: i64,
    pub next_attempt_at: i64,
    pub attempts: u32,
    pub recipients: Vec<RecipientStatusView>,
}

impl From<MessageView> for MessageSummary {
    fn from(m: MessageView) -> Self {
        MessageSummary {
            status: m.state.as_str().to_string(),
            id: m.id,
            tenant_id: m.tenant_id,
            mail_from: m.mail_from,
            size: m.size,
            origin: m.origin,
            created_at: m.created_at,
            next_attempt_at: m.next_attempt_at,
            attempts: m.attempts,
            recipients: m.recipients.into_iter().map(Into::into).collect(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AttemptEntry {
    pub recipient: String,
    pub at: i64,
    /// `delivered`, `deferred` or `bounced`.
    pub outcome: String,
    pub reply: String,
}

impl From<AttemptView> for AttemptEntry {
    fn from(a: AttemptView) -> Self {
        AttemptEntry {
            recipient: a.recipient,
            at: a.at,
            outcome: a.outcome,
            reply: a.reply,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MessageDetail {
    #[serde(flatten)]
    pub message: MessageSummary,
    /// Every delivery attempt, oldest first.
    pub history: Vec<AttemptEntry>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MessageList {
    pub messages: Vec<MessageSummary>,
    /// Pass as `cursor` for the next (older) page; absent on the last page.
    pub next_cursor: Option<String>,
}

pub async fn list(store: &Store, tenant_id: &str, query: &MessageQuery) -> Result<MessageList> {
    crate::lookup::tenant(store, tenant_id).await?;
    let limit = checked_limit(query.limit)?;
    let state = match query.status.as_deref() {
        None | Some("") => None,
        Some(s) => Some(MessageState::parse(s).ok_or_else(|| {
            AdminError::BadRequest(format!(
                "status: unknown value {s:?} (queued, deferred, delivered, bounced, partial)"
            ))
        })?),
    };
    let filter = MessageFilter {
        state,
        since: query.since,
        before_id: query
            .cursor
            .as_deref()
            .map(pagination::decode)
            .transpose()?,
    };
    let messages = store.list_messages(tenant_id, &filter, limit + 1).await?;
    let (messages, next) = pagination::split_page(messages, limit, |m| pagination::encode(&m.id));
    Ok(MessageList {
        messages: messages.into_iter().map(Into::into).collect(),
        next_cursor: next,
    })
}

pub async fn show(store: &Store, tenant_id: &str, id: &str) -> Result<MessageDetail> {
    crate::lookup::tenant(store, tenant_id).await?;
    let (message, attempts) = store
        .message_history(tenant_id, id)
        .await?
        .ok_or_else(|| AdminError::NotFound(format!("message {id} not found")))?;
    Ok(MessageDetail {
        message: message.into(),
        history: attempts.into_iter().map(Into::into).collect(),
    })
}

/// A tenant's messages, newest first.
#[utoipa::path(
    get, path = "/api/tenants/{id}/messages", tag = "messages",
    params(("id" = String, Path, description = "Tenant id"), MessageQuery),
    responses(
        (status = 200, body = MessageList),
        (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn list_messages(
    State(state): State<AdminState>,
    principal: Principal,
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<MessageQuery>,
) -> Result<Json<MessageList>> {
    principal.scope(&id)?;
    Ok(Json(list(&state.store, &id, &query).await?))
}

/// One message with its per-recipient state and delivery history.
#[utoipa::path(
    get, path = "/api/tenants/{id}/messages/{queue_id}", tag = "messages",
    params(
        ("id" = String, Path, description = "Tenant id"),
        ("queue_id" = String, Path, description = "Queue id"),
    ),
    responses((status = 200, body = MessageDetail), (status = 404, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn show_message(
    State(state): State<AdminState>,
    principal: Principal,
    Path((id, queue_id)): Path<(String, String)>,
) -> Result<Json<MessageDetail>> {
    principal.scope(&id)?;
    Ok(Json(show(&state.store, &id, &queue_id).await?))
}
