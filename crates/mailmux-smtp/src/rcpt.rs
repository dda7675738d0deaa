//! RCPT TO: adds a recipient to the transaction. Submission relays to anywhere for its
//! tenant, up to the tenant's `max_recipients_per_message` (under `smtp.max_recipients`); MX
//! accepts only addresses of verified inbound domains that a receipt rule matches, and their
//! postmaster ([`mailmux_inbound::Inbound::recipient`]). On MX the relay tricks are judged
//! before the syntax, so that every one of them gets the relay refusal (`550 5.7.1`).

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
    pub(crate) async fn handle_rcpt(&mut self, to: RcptTo<Cow<'_, str>>) -> Flow {
        let mx = self.conn.listener == Listener::Mx;
        let Some(tx) = &self.tx else {
            return self.reject(
                RejectReason::Protocol,
                Reply::new(503, "5.5.1", "Need MAIL before RCPT"),
            );
        };
        let address = to.address.to_string();
        // smtp-proto reads `<postmaster>` (and `<>`) as an empty address; neither is a
        // deliverable recipient here.
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
            match self.server.inbound.recipient(&address).await {
                Ok(accepted) => Some(accepted),
                Err(refusal) => return self.refuse(refusal),
            }
        } else {
            None
        };
        if let Some(tx) = &mut self.tx
            && !tx.rcpt_to.contains(&address)
        {
            tx.rcpt_to.push(address);
            tx.inbound.extend(accepted);
        }
        self.reply(Reply::new(250, "2.1.5", "Recipient OK"))
    }
}
