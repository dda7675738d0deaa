//! RCPT TO: adds a recipient to the transaction. Submission relays to anywhere for its
//! tenant, up to the tenant's `max_recipients_per_message` (under `smtp.max_recipients`); MX
//! accepts only what the MX policy accepts (today: nothing, see
//! [`crate::policy::mx_recipient`]).

use std::borrow::Cow;

use mailmux_policy::ascii_domain;
use smtp_proto::RcptTo;
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::warn;

use crate::address;
use crate::context::Listener;
use crate::metrics::RejectReason;
use crate::policy::{self, Verdict};
use crate::reply::Reply;
use crate::session::{Flow, Session};

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    pub(crate) async fn handle_rcpt(&mut self, to: RcptTo<Cow<'_, str>>) -> Flow {
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
        if self.conn.listener == Listener::Mx {
            let domain = ascii_domain(&address);
            let record = match self.server.store.get_domain(&domain).await {
                Ok(record) => record,
                Err(error) => {
                    warn!(%error, domain, "domain lookup failed");
                    return self.refuse(policy::lookup_failed());
                }
            };
            if let Verdict::Refuse(refusal) = policy::mx_recipient(&domain, record.as_ref()) {
                return self.refuse(refusal);
            }
        }
        if let Some(tx) = &mut self.tx
            && !tx.rcpt_to.contains(&address)
        {
            tx.rcpt_to.push(address);
        }
        self.reply(Reply::new(250, "2.1.5", "Recipient OK"))
    }
}
