//! MAIL FROM: opens a transaction. On submission this is where the tenant is checked, read
//! afresh from the store for every transaction so that a suspension, a pause or a changed
//! limit bites on the next message: [`mailmux_policy::Policy::open_transaction`] (status,
//! declared size, sender-domain rights, rate, daily quota), the same checks the HTTP send API
//! makes. The session's credential is checked here too (through the credential cache): one
//! revoked since AUTH ends the session within a second. On MX anyone may send (SPF's verdict on
//! the sender is taken here, for the end of DATA); the recipients decide (rcpt.rs). On every listener the sender's syntax is checked first (address.rs).

use std::borrow::Cow;

use mailmux_core::{BodyFlags, Credential};
use mailmux_policy::{Refusal, Submitter};
use smtp_proto::{MAIL_BODY_8BITMIME, MAIL_BODY_BINARYMIME, MAIL_SMTPUTF8, MailFrom};
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::{debug, info, warn};

use crate::address;
use crate::context::Listener;
use crate::metrics::RejectReason;
use crate::policy::{self, Verdict};
use crate::reply::Reply;
use crate::session::{Flow, Identity, Session, Transaction};

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
        // The null sender `<>` is the one address without a domain.
        if !address.is_empty()
            && let Err(bad) = address::check(&address)
        {
            return self.reject(
                RejectReason::Protocol,
                Reply::new(
                    501,
                    "5.1.7",
                    format!("Bad sender address syntax: {}", bad.as_str()),
                ),
            );
        }
        // The relay's own limit first: it needs no lookup, and no tenant's is larger.
        let relay = self.server.policy.relay_limits();
        if let Verdict::Refuse(refusal) = policy::message_size(from.size as u64, relay.max_size) {
            return self.refuse(refusal);
        }
        let admitted = if self.conn.listener == Listener::Mx {
            None
        } else {
            let Some(tenant_id) = self.identity.tenant_id().map(str::to_string) else {
                return self.reject(
                    RejectReason::Auth,
                    Reply::new(530, "5.7.0", "Authentication required"),
                );
            };
            let credential = match self.current_credential().await {
                Ok(credential) => credential,
                Err(CredentialCheck::Refused(refusal)) => return self.refuse(refusal),
                Err(CredentialCheck::Invalid) => {
                    // The credential was revoked (or deleted) since AUTH: the session it opened
                    // ends here, not when the client next authenticates.
                    self.reject(
                        RejectReason::Auth,
                        Reply::new(
                            535,
                            "5.7.8",
                            "Authentication credentials no longer valid (revoked); closing",
                        ),
                    );
                    return Flow::Close;
                }
            };
            let who = Submitter {
                tenant_id: &tenant_id,
                credential: credential.as_ref(),
            };
            match self
                .server
                .policy
                .open_transaction(who, &address, from.size as u64)
                .await
            {
                Ok(admitted) => Some(admitted),
                Err(refusal) => return self.refuse(refusal),
            }
        };
        // MX: SPF is checked here, on the MAIL FROM identity (RFC 7208 §2.4); a DNS temporary
        // failure is answered now rather than taken for a verdict.
        if self.conn.listener == Listener::Mx {
            let ip = self.conn.peer.ip();
            let per_minute = self.server.config.smtp.mx_rate_per_minute;
            if let Err(exceeded) =
                self.server
                    .mx_rates
                    .check(&mailmux_policy::RateKey::Client(ip), 0, per_minute)
            {
                return self.reject(
                    RejectReason::Rate,
                    Reply::new(
                        451,
                        "4.7.1",
                        format!(
                            "Too many messages from {ip} (at most {per_minute} per minute), \
                             try again in {} s",
                            exceeded.retry_after.as_secs().max(1)
                        ),
                    ),
                );
            }
        }
        let spf = if self.conn.listener == Listener::Mx {
            let helo = self.helo.as_ref().map_or("", |h| h.name.as_str());
            match self
                .server
                .inbound
                .spf(self.conn.peer.ip(), helo, &address)
                .await
            {
                Ok(spf) => spf,
                Err(refusal) => return self.refuse(refusal),
            }
        } else {
            None
        };
        let queue_id = self.server.queue.next_id();
        debug!(
            queue_id = %queue_id,
            tenant = admitted.as_ref().map_or("-", |a| a.tenant.id.as_str()),
            from = %address,
            "transaction started"
        );
        if let Some(admitted) = &admitted {
            // Read with the tenant just now: EHLO advertises it from here on.
            self.tenant_max_size = Some(admitted.limits.max_size);
        }
        let (tenant, limits, priority) = match admitted {
            Some(a) => (Some(a.tenant), a.limits, a.priority),
            None => (None, relay, 0),
        };
        self.tx = Some(Transaction {
            queue_id,
            tenant,
            limits,
            priority,
            mail_from: address,
            rcpt_to: Vec::new(),
            inbound: Vec::new(),
            spf,
            flags,
            bdat: false,
        });
        self.reply(Reply::new(250, "2.1.0", "Sender OK"))
    }

    /// The session's credential as it is now (at most a second old, through the credential
    /// cache, so a steady stream of messages costs no query each): it must still be the one
    /// that authenticated, unrevoked, and its own rate may have changed since AUTH. `None` for
    /// trusted-network sessions.
    async fn current_credential(&self) -> Result<Option<Credential>, CredentialCheck> {
        let Identity::Authenticated {
            username,
            credential_id,
            ..
        } = &self.identity
        else {
            return Ok(None);
        };
        let server = &self.server;
        let found = server
            .credentials
            .lookup(&server.store, username)
            .await
            .map_err(|error| {
                warn!(%error, username, "credential lookup failed");
                CredentialCheck::Refused(policy::lookup_failed())
            })?;
        match found {
            Some(credential)
                if credential.id == *credential_id && credential.revoked_at.is_none() =>
            {
                Ok(Some(credential))
            }
            _ => {
                info!(username, "credential revoked or deleted since AUTH");
                Err(CredentialCheck::Invalid)
            }
        }
    }
}

/// Why the session's credential cannot be used for this transaction.
enum CredentialCheck {
    /// No answer from the store: try again later.
    Refused(Refusal),
    /// Revoked, deleted or replaced since AUTH: the session is over.
    Invalid,
}
