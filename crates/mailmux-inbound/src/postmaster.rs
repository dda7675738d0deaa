//! The bare `RCPT TO:<postmaster>` (RFC 5321 §4.5.1: accepted without a domain, in any case).
//! It stands for the operator's postmaster, `inbound.postmaster`: an address on a tenant's
//! inbound domain, so the receipt rules of that address decide where the mail goes (stored for
//! the tenant, or forwarded to the operator's own mailbox), exactly as for mail sent to it by
//! name. Unset, the mail is refused (550 5.1.1) rather than accepted with nowhere to keep it:
//! a sender who hears 550 knows to write to `postmaster@` the domain instead, while a message
//! accepted and dropped would be lost without anyone knowing.

use mailmux_core::reply::Reply;
use mailmux_policy::{Refusal, RejectReason};
use tracing::warn;

use crate::{Accepted, Inbound};

impl Inbound {
    /// RCPT of the bare `<postmaster>`: the configured postmaster's recipient.
    pub async fn postmaster(&self, mail_from: &str) -> Result<Accepted, Refusal> {
        let Some(address) = &self.postmaster else {
            return Err(Refusal::new(
                RejectReason::Relay,
                Reply::new(
                    550,
                    "5.1.1",
                    "No relay postmaster is configured here; write to postmaster@ the domain \
                     you were sending to",
                ),
            ));
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
