//! `POST /api/send`: the HTTP send API. A tenant API key submits a message as JSON (its fields,
//! or a complete `raw` message); it goes through the same policy as SMTP submission (the
//! shared [`mailmux_policy::Policy`]: status, sender rights for the envelope and the From:
//! header, rate, daily quota, recipients, size, content) and the same completion (a missing
//! Date: or Message-ID: added, long body lines re-encoded) into the same durable queue, with
//! `origin: "api"`, with a `Received:` header naming the client's address as SMTP mail has
//! one naming its client. DKIM signing happens at delivery, as for SMTP mail.
//!
//! The caller is a tenant, so this needs a tenant API key (which needs `api_access`: see
//! auth.rs). The operator token is refused with 403: the operator has no tenant to send as,
//! and guessing one (or taking it from the From: domain) would bypass the tenant's own key.

use std::net::{IpAddr, SocketAddr};

use axum::Json;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request, State};
use axum::http::header::CONTENT_TYPE;
use mailmux_core::{BodyFlags, Envelope};
use mailmux_policy::received::{self, Trace};
use mailmux_policy::{Submitter, Verdict, rules, submission};
use mailmux_queue::{QueueError, Submission};
use serde::Serialize;
use tracing::{info, warn};
use utoipa::ToSchema;

use crate::auth::Principal;
use crate::compose::{SendRequest, compose};
use crate::error::{AdminError, ErrorBody, Result};
use crate::state::AdminState;

/// A queued message.
#[derive(Debug, Serialize, ToSchema)]
pub struct Sent {
    /// Queue id (as in SMTP's "queued as <id>"; see `/api/tenants/{id}/messages/{queue_id}`).
    pub id: String,
    /// The envelope recipients, each once.
    pub recipients: Vec<String>,
}

/// The JSON body of a send, read with a limit of its own: a message may be as large as
/// `smtp.max_message_size`, and in JSON (base64 attachments, escaped text) it takes up to about
/// twice that, far above the 1 MiB every other request is held to. With it, the client's
/// address for the `Received:` header.
pub struct SendBody {
    pub request: SendRequest,
    pub client: IpAddr,
}

/// Largest send request accepted (413 beyond), for a relay whose messages may be `max` bytes.
pub fn body_limit(max_message_size: u64) -> usize {
    usize::try_from(max_message_size.saturating_mul(2))
        .unwrap_or(usize::MAX)
        .saturating_add(64 * 1024)
}

impl FromRequest<AdminState> for SendBody {
    type Rejection = AdminError;

    async fn from_request(request: Request, state: &AdminState) -> Result<Self> {
        let json = request
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.trim_start()
                    .to_ascii_lowercase()
                    .starts_with("application/json")
            });
        if !json {
            return Err(AdminError::UnsupportedMediaType);
        }
        // The server is started with connection info (serve.rs); without it there is no
        // address to put in the trace header, and a header that made one up would lie.
        let (mut parts, body) = request.into_parts();
        let ConnectInfo(peer) = ConnectInfo::<SocketAddr>::from_request_parts(&mut parts, state)
            .await
            .map_err(|_| {
                AdminError::Internal(
                    "the admin listener was started without connection info".into(),
                )
            })?;
        let client = peer.ip();
        let request = Request::from_parts(parts, body);
        let limit = body_limit(state.config.smtp.max_message_size);
        let bytes = axum::body::to_bytes(request.into_body(), limit)
            .await
            .map_err(|error| {
                let too_large = std::error::Error::source(&error)
                    .is_some_and(|e| e.is::<http_body_util::LengthLimitError>());
                if too_large {
                    AdminError::PayloadTooLarge(limit)
                } else {
                    AdminError::BadRequest(format!("cannot read the request body: {error}"))
                }
            })?;
        let Json(request) = Json::<SendRequest>::from_bytes(&bytes)?;
        Ok(SendBody { request, client })
    }
}

/// Sends a message as the key's tenant: `{from, to, cc, bcc, reply_to, subject, text, html,
/// headers, attachments}` or `{raw}`.
#[utoipa::path(
    post, path = "/api/send", tag = "send",
    request_body = SendRequest,
    responses(
        (status = 200, description = "Queued durably", body = Sent),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 403, description = "Operator token (no tenant), no api_access, tenant \
            paused/suspended/disabled, or a sender outside the tenant's verified domains", body = ErrorBody),
        (status = 413, description = "Message larger than the tenant's (or the relay's) limit", body = ErrorBody),
        (status = 422, description = "Invalid fields, or too many recipients", body = ErrorBody),
        (status = 429, description = "Sending rate or daily quota exceeded; see Retry-After", body = ErrorBody),
        (status = 503, description = "Storage unavailable; try again", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn send(
    State(state): State<AdminState>,
    principal: Principal,
    SendBody { request, client }: SendBody,
) -> Result<Json<Sent>> {
    let Some(tenant_id) = principal.tenant() else {
        return Err(AdminError::Forbidden(
            "the operator token has no tenant to send as; send with a tenant API key (mmk_…)"
                .into(),
        ));
    };
    let queue_id = state.queue.next_id();
    let message_id = format!("<{queue_id}@{}>", state.config.smtp.hostname);
    let composed = compose(&request, &message_id)?;
    let policy = &state.policy;
    let who = Submitter {
        tenant_id,
        credential: None,
    };
    let size = composed.message.len() as u64;
    let admitted = policy
        .open_transaction(who, &composed.mail_from, size)
        .await?;
    // The same limit RCPT applies one by one, for the whole list at once.
    if let Verdict::Refuse(refusal) = rules::recipient_count(
        composed.recipients.len() - 1,
        admitted.limits.max_recipients,
    ) {
        return Err(refusal.into());
    }
    // As for SMTP submission: a raw message without Date: or Message-ID: gets them, and long
    // body lines are re-encoded (the fields mode's builder has done both already).
    let stamp = submission::Stamp {
        hostname: &state.config.smtp.hostname,
        queue_id: &queue_id,
        timestamp: mailmux_core::now_ms() / 1000,
    };
    let (body, scan) = policy
        .accept_message(&admitted.tenant, &admitted.limits, composed.message, &stamp)
        .await?;
    let smtputf8 =
        !composed.mail_from.is_ascii() || composed.recipients.iter().any(|r| !r.is_ascii());
    let trace = received::header(&Trace {
        helo: None,
        ip: client,
        hostname: &state.config.smtp.hostname,
        protocol: received::HTTP,
        id: &queue_id,
        recipient: match composed.recipients.as_slice() {
            [only] => Some(only.as_str()),
            _ => None,
        },
        timestamp: mailmux_core::now_ms() / 1000,
    });
    let mut message = Vec::with_capacity(trace.len() + body.len());
    message.extend_from_slice(trace.as_bytes());
    message.extend_from_slice(&body);
    drop(body);
    let submission = Submission {
        id: queue_id,
        tenant_id: tenant_id.to_string(),
        envelope: Envelope {
            mail_from: composed.mail_from,
            rcpt_to: composed.recipients.clone(),
            flags: BodyFlags {
                eight_bit: scan.eight_bit,
                smtputf8,
            },
        },
        body: message,
        origin: "api",
        priority: admitted.priority,
    };
    match state.queue.enqueue(submission).await {
        Ok(id) => {
            info!(queue_id = %id, tenant = tenant_id, size, recipients = composed.recipients.len(), "queued (api)");
            Ok(Json(Sent {
                id: id.0,
                recipients: composed.recipients,
            }))
        }
        Err(QueueError::OverQuota { max_per_day }) => {
            Err(policy.quota_refusal(tenant_id, max_per_day).await.into())
        }
        Err(error) => {
            warn!(tenant = tenant_id, %error, "enqueue failed (api)");
            Err(rules::storage_failed().into())
        }
    }
}
