//! MAIL FROM: opens a transaction. On submission this is where the tenant is checked, read
//! afresh from the store for every transaction so that a suspension or pause bites on the
//! next message: status, sender-domain rights, daily quota. On MX anyone may send; the
//! recipients decide (rcpt.rs).

use std::borrow::Cow;

use mailmux_core::{BodyFlags, address_domain, now_ms};
use smtp_proto::{MAIL_BODY_8BITMIME, MAIL_BODY_BINARYMIME, MAIL_SMTPUTF8, MailFrom};
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::{debug, warn};

use crate::metrics::RejectReason;
use crate::policy::{self, Verdict};
use crate::reply::Reply;
use crate::server::Listener;
use crate::session::{Flow, Session, Transaction};

const DAY_MS: i64 = 24 * 60 * 60 * 1000;

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    pub(crate) async fn handle_mail(&mut self, from: MailFrom<Cow<'_, str>>) -> Flow {
        if self.helo.is_none() {
            return self.reject(
                RejectReason::Protocol,
                Reply::new(503, "5.5.1", "Send EHLO/HELO first"),
            );
        }
        if self.tx.is_some() {
            return self.reject(
                RejectReason::Protocol,
                Reply::new(503, "5.5.1", "Nested MAIL command"),
            );
        }
        let flags = BodyFlags {
            eight_bit: from.flags & MAIL_BODY_8BITMIME != 0,
            smtputf8: from.flags & MAIL_SMTPUTF8 != 0,
        };
        if from.flags & MAIL_BODY_BINARYMIME != 0 {
            return self.reject(
                RejectReason::Protocol,
                Reply::new(555, "5.5.4", "BODY=BINARYMIME is not supported"),
            );
        }
        let address = from.address.to_string();
        if !address.is_ascii() && !flags.smtputf8 {
            return self.reject(
                RejectReason::Protocol,
                Reply::new(553, "5.6.7", "Non-ASCII address requires SMTPUTF8"),
            );
        }
        let max = self.server.config.smtp.max_message_size;
        if let Verdict::Refuse(refusal) = policy::message_size(from.size as u64, max) {
            return self.refuse(refusal);
        }
        let tenant = if self.conn.listener == Listener::Mx {
            None
        } else {
            let Some(tenant_id) = self.identity.tenant_id().map(str::to_string) else {
                return self.reject(
                    RejectReason::Auth,
                    Reply::new(530, "5.7.0", "Authentication required"),
                );
            };
            match self.sender_verdict(&tenant_id, &address).await {
                Ok(tenant) => Some(tenant),
                Err(refusal) => return self.refuse(refusal),
            }
        };
        let queue_id = self.server.queue.next_id();
        debug!(
            queue_id = %queue_id,
            tenant = tenant.as_ref().map_or("-", |t| t.id.as_str()),
            from = %address,
            "transaction started"
        );
        self.tx = Some(Transaction {
            queue_id,
            tenant,
            mail_from: address,
            rcpt_to: Vec::new(),
            flags,
            bdat: false,
        });
        self.reply(Reply::new(250, "2.1.0", "Sender OK"))
    }

    /// The submission checks, in the order a client can act on them: account status, then
    /// the sender's domain, then the quota. Returns the tenant as read now.
    async fn sender_verdict(
        &self,
        tenant_id: &str,
        address: &str,
    ) -> Result<mailmux_core::Tenant, policy::Refusal> {
        let store = &self.server.store;
        let tenant = store.get_tenant(tenant_id).await.map_err(|error| {
            warn!(%error, tenant = tenant_id, "tenant lookup failed");
            policy::lookup_failed()
        })?;
        let tenant = tenant.ok_or_else(policy::tenant_missing)?;
        if let Verdict::Refuse(refusal) = policy::tenant_status(&tenant) {
            return Err(refusal);
        }
        // The null sender (bounces, auto-replies) has no domain to check.
        if !address.is_empty() {
            let domain = ascii_domain(address);
            let record = store.get_domain(&domain).await.map_err(|error| {
                warn!(%error, domain, "domain lookup failed");
                policy::lookup_failed()
            })?;
            if let Verdict::Refuse(refusal) =
                policy::sender_domain(&domain, record.as_ref(), tenant_id)
            {
                return Err(refusal);
            }
        }
        if tenant.limits.max_messages_per_day > 0 {
            let sent = store
                .count_messages_since(tenant_id, now_ms() - DAY_MS)
                .await
                .map_err(|error| {
                    warn!(%error, tenant = tenant_id, "quota lookup failed");
                    policy::lookup_failed()
                })?;
            if let Verdict::Refuse(refusal) = policy::daily_quota(sent, &tenant.limits) {
                return Err(refusal);
            }
        }
        Ok(tenant)
    }
}

/// The domain of an address as the store keeps it: lowercase A-labels (an SMTPUTF8 sender
/// may write it in Unicode).
pub(crate) fn ascii_domain(address: &str) -> String {
    let domain = address_domain(address);
    if domain.is_ascii() {
        return domain;
    }
    idna::domain_to_ascii(&domain).unwrap_or(domain)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_are_looked_up_as_a_labels() {
        let cases = [
            ("bob@Example.COM", "example.com"),
            ("bob@bücher.example", "xn--bcher-kva.example"),
            ("postmaster", ""),
        ];
        for (address, want) in cases {
            assert_eq!(ascii_domain(address), want);
        }
    }
}
