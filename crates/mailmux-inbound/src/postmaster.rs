//! The bare `RCPT TO:<postmaster>` (RFC 5321 §4.5.1: accepted without a domain, in any case).
//! With `inbound.postmaster` set, it stands for that address (one on a tenant's inbound domain),
//! so the receipt rules of that address decide where the mail goes (stored for the tenant, or
//! forwarded to the operator's own mailbox), exactly as for mail sent to it by name. Unset, the
//! mail is kept in the operator's postmaster mailbox (`GET /api/postmaster`,
//! `mailmux postmaster list|show`), so it is always accepted and never lost.

use mailmux_policy::Refusal;
use tracing::warn;

use crate::{Accepted, Inbound};

impl Inbound {
    /// RCPT of the bare `<postmaster>`: the configured postmaster's recipient, or the
    /// operator's mailbox.
    pub async fn postmaster(&self, mail_from: &str) -> Result<Accepted, Refusal> {
        let Some(address) = &self.postmaster else {
            return Ok(Accepted {
                address: "postmaster".into(),
                tenant_id: String::new(),
                rule_id: None,
                tag: None,
                bounce: false,
                dmarc_reject: false,
                webhook_id: None,
                forwarding: None,
                operator: true,
            });
        };
        self.rcpt(address, mail_from).await.inspect_err(|refusal| {
            warn!(
                postmaster = address,
                reply = %refusal.reply,
                "inbound.postmaster is not an address the MX accepts; <postmaster> is refused"
            );
        })
    }
}
