//! `SendEmail` with `Content.Raw`: the exact bytes mailmux would have sent over SMTP (DKIM
//! signature included when mailmux signs), the tenant's `TenantName` and configuration set,
//! and the envelope recipients as the destination (SES delivers to those, not to the header
//! fields, so Bcc recipients stay hidden as they would over SMTP).

use aws_sdk_sesv2::primitives::Blob;
use aws_sdk_sesv2::types::{Destination, EmailContent, RawMessage};

use crate::Result;
use crate::client::Ses;
use crate::error::SesError;

/// SES takes at most 50 recipients per `SendEmail`; larger messages are split.
pub const MAX_RECIPIENTS_PER_SEND: usize = 50;

/// One `SendEmail` call.
#[derive(Debug, Clone, Copy)]
pub struct RawSend<'a> {
    /// The SES tenant whose reputation the send counts against.
    pub tenant_name: &'a str,
    pub configuration_set: &'a str,
    /// The envelope sender; empty for the null sender (SES then takes the From: field).
    pub from: &'a str,
    /// At most [`MAX_RECIPIENTS_PER_SEND`].
    pub recipients: &'a [&'a str],
    pub raw: &'a [u8],
}

impl Ses {
    /// Sends once, after waiting for the account's send rate; SES's MessageId on success.
    pub async fn send_raw(&self, send: RawSend<'_>) -> Result<String> {
        debug_assert!(send.recipients.len() <= MAX_RECIPIENTS_PER_SEND);
        self.refresh_rate_if_stale().await;
        self.rate.acquire(send.recipients.len()).await;
        let destination = Destination::builder()
            .set_to_addresses(Some(
                send.recipients.iter().map(|r| r.to_string()).collect(),
            ))
            .build();
        let raw = RawMessage::builder()
            .data(Blob::new(send.raw.to_vec()))
            .build()
            .map_err(|e| build_error(e.to_string()))?;
        let mut request = self
            .client
            .send_email()
            .tenant_name(send.tenant_name)
            .configuration_set_name(send.configuration_set)
            .destination(destination)
            .content(EmailContent::builder().raw(raw).build());
        if !send.from.is_empty() {
            request = request.from_email_address(send.from);
        }
        let out = request
            .send()
            .await
            .map_err(|e| SesError::from_sdk("SendEmail", e))?;
        Ok(out.message_id().unwrap_or_default().to_string())
    }
}

fn build_error(message: String) -> SesError {
    SesError {
        kind: crate::SesErrorKind::Permanent,
        operation: "SendEmail",
        code: None,
        message,
    }
}
