//! The SES transport: the message, exactly as it would go over SMTP (signed when the tenant
//! signs), handed to SES v2 with the tenant's `TenantName` and configuration set, in sends of
//! at most 50 envelope recipients (SES's limit).
//!
//! A message from a domain whose SES identity the last sync found not yet verified for sending
//! waits (451) until SES verifies it. Per send, every recipient of the send gets the same
//! outcome:
//! - accepted → delivered, with SES's MessageId kept on the recipient;
//! - throttling, a server error, the network, or anything SES refused that is not a verdict
//!   on the message (a missing SES tenant, a permission) → deferred: the queue's backoff
//!   retries it and bounces it only after `delivery.max_age_secs`;
//! - `MessageRejected` → bounced, with SES's reason in the DSN;
//! - `SendingPausedException` / `AccountSuspendedException` (the tenant or the account stopped
//!   by SES) → the tenant is paused locally with SES's cause and its mail is held, untried,
//!   until it is active again; no later send of this attempt is made.

use mailmux_core::reply::Reply;
use mailmux_core::{address_domain, now_ms};
use mailmux_queue::{QueuedMessage, QueuedRecipient};
use mailmux_ses::{MAX_RECIPIENTS_PER_SEND, RawSend, Ses, SesError, SesErrorKind};
use mailmux_store::AuditEntry;
use tracing::{info, warn};

use crate::Deliverer;
use crate::attempt::Outcome;

/// What the remote MTA is called in DSNs and logs for mail relayed through SES.
const SES_MTA: &str = "email.amazonaws.com";

/// The result of one attempt of one message (by any transport; only SES holds).
pub(crate) enum Attempted {
    Sent(Vec<Outcome>),
    /// SES stopped the tenant's sending before anything was sent: the message goes back
    /// untried (hold.rs), the tenant is paused.
    Held,
}

impl Deliverer {
    /// Sends `body` (the bytes SMTP would carry) for every recipient of `message`.
    pub(crate) async fn deliver_ses(
        &self,
        ses: &Ses,
        message: &QueuedMessage,
        sender: &str,
        body: &[u8],
    ) -> Attempted {
        if let Some(reply) = self.not_verified_by_ses(message).await {
            return Attempted::Sent(all(&message.recipients, reply, None));
        }
        let tenant_name = ses.config().tenant_name(&message.tenant_id);
        let configuration_set = ses.config().configuration_set(&message.tenant_id);
        let mut outcomes = Vec::with_capacity(message.recipients.len());
        let mut chunks = message.recipients.chunks(MAX_RECIPIENTS_PER_SEND);
        while let Some(chunk) = chunks.next() {
            let recipients: Vec<&str> = chunk.iter().map(|r| r.address.as_str()).collect();
            let send = RawSend {
                tenant_name: &tenant_name,
                configuration_set: &configuration_set,
                from: sender,
                recipients: &recipients,
                raw: body,
            };
            match ses.send_raw(send).await {
                Ok(id) => {
                    let reply = Reply::parse(250, format!("2.0.0 Ok: accepted by SES as {id}"));
                    outcomes.extend(all(chunk, reply, Some(&id)));
                }
                Err(error) if error.kind == SesErrorKind::SendingStopped => {
                    self.pause_for_ses(message, &error).await;
                    if outcomes.is_empty() {
                        return Attempted::Held;
                    }
                    // Part went out before SES stopped the tenant: those are recorded as
                    // delivered; the rest wait (451) and are held from the next attempt on,
                    // since the tenant is now paused.
                    let reply = Reply::parse(451, format!("4.7.1 held: {}", cause(&error)));
                    outcomes.extend(all(chunk, reply.clone(), None));
                    for rest in chunks.by_ref() {
                        outcomes.extend(all(rest, reply.clone(), None));
                    }
                    break;
                }
                Err(error) => {
                    warn!(%error, recipients = chunk.len(), "SES send failed");
                    outcomes.extend(all(chunk, reply_for(&error), None));
                }
            }
        }
        Attempted::Sent(outcomes)
    }

    /// SES sends from a domain only once it has verified it. While the last sync found the
    /// sending domain's identity not verified for sending, the message waits (451, retried
    /// with the queue's backoff) instead of being sent for SES to refuse and bounce. A domain
    /// whose identity was never read (not provisioned yet) is left to SES's verdict.
    async fn not_verified_by_ses(&self, message: &QueuedMessage) -> Option<Reply> {
        let domain = address_domain(&message.mail_from);
        if domain.is_empty() {
            return None;
        }
        match self.queue.store().get_ses_identity(&domain).await {
            Ok(Some(identity))
                if identity.tenant_id == message.tenant_id && !identity.verified_for_sending =>
            {
                Some(Reply::parse(
                    451,
                    format!(
                        "4.7.1 SES has not verified {domain} for sending yet (DKIM {})",
                        identity.dkim_status.as_deref().unwrap_or("not started")
                    ),
                ))
            }
            _ => None,
        }
    }

    /// Pauses the tenant with SES's cause (only an active one: an operator's status stays).
    async fn pause_for_ses(&self, message: &QueuedMessage, error: &SesError) {
        let reason = cause(error);
        let now = now_ms();
        let audit = AuditEntry {
            at: now,
            actor: "system".into(),
            tenant_id: Some(message.tenant_id.clone()),
            action: "tenant.ses_pause".into(),
            target: message.tenant_id.clone(),
            before: None,
            after: None,
        };
        match self
            .queue
            .store()
            .pause_tenant_for_ses(&message.tenant_id, &reason, now, Some(&audit))
            .await
        {
            Ok(true) => info!(%reason, "tenant paused: SES stopped its sending; its mail is held"),
            Ok(false) => info!(%reason, "SES stopped the tenant's sending; it was not active"),
            Err(store) => {
                warn!(%store, %reason, "SES stopped the tenant's sending, and it could not be paused")
            }
        }
    }
}

/// The tenant's pause reason: SES's own words, named as SES's.
fn cause(error: &SesError) -> String {
    format!(
        "SES stopped sending ({}): {}",
        error.code.as_deref().unwrap_or("unknown"),
        error.message
    )
}

/// The recipients' reply for a failed send: a bounce only for SES's verdict on the message.
fn reply_for(error: &SesError) -> Reply {
    match error.kind {
        SesErrorKind::Rejected => Reply::parse(
            554,
            format!("5.7.1 SES rejected the message: {}", error.message),
        ),
        SesErrorKind::Transient => Reply::parse(451, format!("4.4.2 SES: {error}")),
        // Not a verdict on the message (no such SES tenant yet, a permission, a bad request):
        // the mail waits for the operator or for provisioning, and bounces only when too old.
        _ => Reply::parse(451, format!("4.3.5 SES refused the send: {error}")),
    }
}

fn all(chunk: &[QueuedRecipient], reply: Reply, id: Option<&str>) -> Vec<Outcome> {
    chunk
        .iter()
        .map(|r| Outcome {
            idx: r.idx,
            reply: reply.clone(),
            remote: Some(SES_MTA.to_string()),
            not_before: None,
            remote_id: id.map(str::to_string),
        })
        .collect()
}
