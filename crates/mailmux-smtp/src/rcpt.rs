//! RCPT TO: adds a recipient to the transaction. Submission relays to anywhere for its
//! tenant, up to the tenant's `max_recipients_per_message` (under `smtp.max_recipients`); MX
//! accepts only addresses of verified inbound domains that a receipt rule matches, and their
//! postmaster ([`mailmux_inbound::Inbound::rcpt`]). On MX the relay tricks are judged
//! before the syntax, so that every one of them gets the relay refusal (`550 5.7.1`), and the
//! bare `<postmaster>` (RFC 5321 §4.5.1, no domain) goes to the operator's postmaster
//! (`inbound.postmaster`, see the inbound crate's postmaster.rs).

use std::borrow::Cow;

use smtp_proto::RcptTo;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::address;
use crate::context::Listener;
use crate::metrics::RejectReason;
use crate::policy::{self, Verdict};
use crate::reply::Reply;
use crate::session::{Flow, Session};

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    /// `line` is the command as the client sent it: smtp-proto reads `<postmaster>` as an
    /// empty address, so only the line tells it from `<>`.
    pub(crate) async fn handle_rcpt(&mut self, to: RcptTo<Cow<'_, str>>, line: &[u8]) -> Flow {
        let mx = self.conn.listener == Listener::Mx;
        let Some(tx) = &self.tx else {
            return self.reject(
                RejectReason::Protocol,
                Reply::new(503, "5.5.1", "Need MAIL before RCPT"),
            );
        };
        let address = to.address.to_string();
        if mx && address.is_empty() && is_bare_postmaster(line) {
            let max = tx.limits.max_recipients;
            if let Verdict::Refuse(refusal) = policy::recipient_count(tx.rcpt_to.len(), max) {
                return self.refuse(refusal);
            }
            let mail_from = tx.mail_from.clone();
            return match self.server.inbound.postmaster(&mail_from).await {
                Ok(accepted) => self.add_recipient(accepted.address.clone(), Some(accepted)),
                Err(refusal) => self.refuse(refusal),
            };
        }
        // smtp-proto reads `<postmaster>` (and `<>`) as an empty address; on submission
        // neither is a deliverable recipient.
        if address.is_empty() {
            return self.reject(
                RejectReason::Protocol,
                Reply::new(501, "5.1.3", "Bad recipient address syntax"),
            );
        }
        if !address.is_ascii() && !tx.flags.smtputf8 {
            return self.reject(
                RejectReason::Protocol,
                Reply::new(553, "5.6.7", "Non-ASCII address requires SMTPUTF8"),
            );
        }
        if mx && let Err(trick) = mailmux_inbound::address::parse(&address) {
            return self.reject(
                RejectReason::Relay,
                Reply::new(
                    550,
                    "5.7.1",
                    format!("Relaying denied: {} is not accepted here", trick.as_str()),
                ),
            );
        }
        if let Err(bad) = address::check(&address) {
            return self.reject(
                RejectReason::Protocol,
                Reply::new(
                    501,
                    "5.1.3",
                    format!("Bad recipient address syntax: {}", bad.as_str()),
                ),
            );
        }
        let max = tx.limits.max_recipients;
        if let Verdict::Refuse(refusal) = policy::recipient_count(tx.rcpt_to.len(), max) {
            return self.refuse(refusal);
        }
        let accepted = if mx {
            let mail_from = tx.mail_from.clone();
            match self.server.inbound.rcpt(&address, &mail_from).await {
                Ok(accepted) => Some(accepted),
                Err(refusal) => return self.refuse(refusal),
            }
        } else {
            None
        };
        self.add_recipient(address, accepted)
    }

    fn add_recipient(
        &mut self,
        address: String,
        accepted: Option<mailmux_inbound::Accepted>,
    ) -> Flow {
        if let Some(tx) = &mut self.tx
            && !tx.rcpt_to.contains(&address)
        {
            tx.rcpt_to.push(address);
            tx.inbound.extend(accepted);
        }
        self.reply(Reply::new(250, "2.1.5", "Recipient OK"))
    }
}

/// Whether a RCPT line names the bare `<postmaster>` (any case, no domain).
fn is_bare_postmaster(line: &[u8]) -> bool {
    const NEEDLE: &[u8] = b"<postmaster>";
    line.windows(NEEDLE.len())
        .any(|w| w.eq_ignore_ascii_case(NEEDLE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_postmaster_is_told_from_the_null_path() {
        for line in [
            &b"RCPT TO:<postmaster>\r\n"[..],
            b"rcpt to:<PostMaster>\r\n",
            b"RCPT TO: <POSTMASTER> NOTIFY=NEVER\r\n",
        ] {
            assert!(
                is_bare_postmaster(line),
                "{}",
                String::from_utf8_lossy(line)
            );
        }
        for line in [
            &b"RCPT TO:<>\r\n"[..],
            b"RCPT TO:<postmaster@acme.test>\r\n",
        ] {
            assert!(
                !is_bare_postmaster(line),
                "{}",
                String::from_utf8_lossy(line)
            );
        }
    }
}
