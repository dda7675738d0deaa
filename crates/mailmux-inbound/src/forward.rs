//! Forwarding on the MX: `forward` and `list` rules, and bounces coming back to SRS addresses.
//!
//! A forwarded copy goes through the tenant's normal outbound queue (route, DKIM, limits, a
//! paused tenant's mail held), with the envelope sender rewritten by SRS (`mailmux_core::srs`)
//! so that the next hop's SPF check is made against a domain whose SPF covers this relay:
//!
//! - the **SRS domain** is the tenant's verified return-path (custom MAIL FROM) domain for the
//!   inbound domain, when it has one (its SPF names the relay and its MX is ours), else the
//!   inbound domain the mail was addressed to (its MX is ours: the bounce comes back here);
//! - a `list` rule sends one copy to all its members with a `List-Id:` header; its envelope
//!   sender is the same SRS address, so a member's bounce goes back to the poster (as with an
//!   alias), never to every member;
//! - a bounce arriving at the MX (null sender) for a valid SRS address of one of our SRS
//!   domains is queued on, still from the null sender, to the address the SRS one stands for;
//!   a forged or expired SRS address gets `550 5.1.1`; mail from anyone else to an SRS address
//!   is refused (`550 5.7.1`), so SRS addresses cannot be used to relay mail anywhere.
//!
//! Durability: at the end of DATA every copy is enqueued (committed) before the stored rows
//! are written and before the client hears 250; if either fails the client hears 4xx and keeps
//! its copy. (A retry after a failure between the two may forward a second copy: a duplicate,
//! never a loss.)

use std::collections::BTreeMap;

use mailmux_core::reply::Reply;
use mailmux_core::srs::{self, Srs};
use mailmux_core::{BodyFlags, Envelope, Feature, Tenant, TenantStatus, now_ms};
use mailmux_policy::rules::{lookup_failed, storage_failed};
use mailmux_policy::{Refusal, RejectReason};
use mailmux_queue::{QueueError, Submission};
use tracing::{info, warn};

use crate::address::Recipient;
use crate::{Accepted, Arrival, Inbound};

/// Where a recipient's copy goes, decided at RCPT and carried out at the end of DATA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forwarding {
    /// The copy's recipients: the rule's `forward_to` or `members`, or the original sender of
    /// a bounce that came back to an SRS address.
    pub to: Vec<String>,
    /// The domain of the SRS envelope sender; `None`: the copy keeps the null sender (a bounce
    /// relayed back).
    pub srs_domain: Option<String>,
    /// `list` rules: the `List-Id:` value (RFC 2919).
    pub list_id: Option<String>,
}

/// One queued copy per tenant, SRS domain (none: a relayed bounce) and list.
type CopyKey<'a> = (&'a str, Option<&'a str>, Option<&'a str>);

fn refuse(code: u16, status: &'static str, text: String) -> Refusal {
    Refusal::new(RejectReason::Relay, Reply::new(code, status, text))
}

/// The `List-Id:` identifier of the list at `local@domain` (RFC 2919: a dot-atom, its domain
/// part one the list's owner controls).
pub fn list_id(local: &str, domain: &str) -> String {
    let local: String = local
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("<{local}.{domain}>")
}

impl Inbound {
    /// RCPT on the MX, with the transaction's sender: an SRS address of ours is judged as one
    /// (a bounce coming back, see the module doc), any other address by
    /// [`Inbound::recipient`].
    pub async fn rcpt(&self, address: &str, mail_from: &str) -> Result<Accepted, Refusal> {
        if let Ok(Some(recipient)) = crate::address::parse(address)
            && let Some(judged) = self.srs_recipient(address, &recipient, mail_from).await
        {
            return judged;
        }
        self.recipient(address).await
    }

    /// The SRS signer (its secret read from the store, once).
    async fn srs(&self) -> Result<&Srs, Refusal> {
        self.srs
            .get_or_try_init(|| self.store.srs(&self.master_key_path))
            .await
            .map_err(|error| {
                warn!(%error, "cannot load the SRS secret");
                lookup_failed()
            })
    }

    /// A `forward` or `list` rule's recipient: where its copy goes. `list` needs the tenant's
    /// `mailing_lists` (a rule made while it had the feature stops when it is taken away).
    pub(crate) async fn forwarding(
        &self,
        tenant: &Tenant,
        recipient: &Recipient,
        rule: &mailmux_core::ReceiptRule,
    ) -> Result<Forwarding, Refusal> {
        let list = rule.action == mailmux_core::RuleAction::List;
        if list && !tenant.features.has(Feature::MailingLists) {
            return Err(refuse(
                550,
                "5.7.1",
                format!(
                    "Mailing list {} is not available (the mailing_lists feature is off for \
                     its owner)",
                    rule.address()
                ),
            ));
        }
        let return_path = self
            .store
            .get_return_path(&recipient.domain)
            .await
            .map_err(|error| {
                warn!(%error, domain = recipient.domain, "return-path lookup failed");
                lookup_failed()
            })?;
        let srs_domain = match return_path {
            Some(rp) if rp.tenant_id == tenant.id => rp.verified().map(str::to_string),
            _ => None,
        }
        .unwrap_or_else(|| recipient.domain.clone());
        Ok(Forwarding {
            to: rule.targets().to_vec(),
            srs_domain: Some(srs_domain),
            list_id: list.then(|| list_id(&rule.local_part, &rule.domain)),
        })
    }

    /// RCPT of an SRS address (`SRS0=…@`/`SRS1=…@` one of our SRS domains): accepted only for
    /// a bounce (null sender) whose address verifies and has not expired; `None` when
    /// `address` is no SRS address of ours (the usual rules then judge it).
    pub(crate) async fn srs_recipient(
        &self,
        address: &str,
        recipient: &Recipient,
        mail_from: &str,
    ) -> Option<Result<Accepted, Refusal>> {
        if !srs::is_srs_local(&recipient.local) {
            return None;
        }
        let owner = match self.srs_domain_owner(&recipient.domain).await {
            Ok(Some(owner)) => owner,
            Ok(None) => return None,
            Err(refusal) => return Some(Err(refusal)),
        };
        if !mail_from.is_empty() {
            return Some(Err(refuse(
                550,
                "5.7.1",
                "Relaying denied: SRS addresses take bounces (from <>) only".into(),
            )));
        }
        let srs = match self.srs().await {
            Ok(srs) => srs,
            Err(refusal) => return Some(Err(refusal)),
        };
        let original = match srs.reverse(address, srs::day(now_ms())) {
            Ok(original) => original,
            Err(error) => {
                info!(address, %error, "SRS address refused");
                return Some(Err(refuse(
                    550,
                    "5.1.1",
                    format!("No such user here: {address} ({error})"),
                )));
            }
        };
        Some(Ok(Accepted {
            address: address.to_string(),
            tenant_id: owner,
            rule_id: None,
            tag: None,
            bounce: true,
            dmarc_reject: false,
            webhook_id: None,
            forwarding: Some(Forwarding {
                to: vec![original],
                srs_domain: None,
                list_id: None,
            }),
            operator: false,
        }))
    }

    /// The tenant whose SRS addresses live on `domain`: the owner of a verified inbound domain
    /// or of a verified return-path domain, if its tenant may receive.
    async fn srs_domain_owner(&self, domain: &str) -> Result<Option<String>, Refusal> {
        let failed = |error: mailmux_store::StoreError| {
            warn!(%error, domain, "SRS domain lookup failed");
            lookup_failed()
        };
        let owner = match self.store.get_domain(domain).await.map_err(failed)? {
            Some(d) if d.verified && d.inbound => Some(d.tenant_id),
            _ => self
                .store
                .return_path_owner(domain)
                .await
                .map_err(failed)?
                .filter(|rp| rp.verified().is_some())
                .map(|rp| rp.tenant_id),
        };
        let Some(owner) = owner else {
            return Ok(None);
        };
        let tenant = self.store.get_tenant(&owner).await.map_err(failed)?;
        Ok(tenant
            .filter(|t| t.enabled && t.status != TenantStatus::Suspended)
            .map(|t| t.id))
    }

    /// Enqueues the copies of `arrival`'s forwarded recipients (one queued message per tenant,
    /// envelope sender and list), `message` being the bytes as accepted (our trace headers on
    /// top). Returns their queue ids once every one is committed.
    pub(crate) async fn enqueue_forwards(
        &self,
        arrival: &Arrival<'_>,
        message: &[u8],
    ) -> Result<Vec<String>, Refusal> {
        let mut copies: BTreeMap<CopyKey<'_>, Vec<String>> = BTreeMap::new();
        for accepted in arrival.recipients {
            let Some(forwarding) = &accepted.forwarding else {
                continue;
            };
            let targets = copies
                .entry((
                    accepted.tenant_id.as_str(),
                    forwarding.srs_domain.as_deref(),
                    forwarding.list_id.as_deref(),
                ))
                .or_default();
            for to in &forwarding.to {
                if !targets.iter().any(|t| t.eq_ignore_ascii_case(to)) {
                    targets.push(to.clone());
                }
            }
        }
        if copies.is_empty() {
            return Ok(Vec::new());
        }
        let srs = self.srs().await?;
        let today = srs::day(now_ms());
        let mut ids = Vec::with_capacity(copies.len());
        for ((tenant_id, srs_domain, list_id), to) in copies {
            let (mail_from, origin) = match srs_domain {
                Some(domain) => (srs.forward(arrival.mail_from, domain, today), "forward"),
                // A relayed bounce stays a bounce: from <>, and counted against no quota.
                None => (String::new(), "dsn"),
            };
            let body = match list_id {
                Some(id) => [format!("List-Id: {id}\r\n").as_bytes(), message].concat(),
                None => message.to_vec(),
            };
            let flags = BodyFlags {
                smtputf8: arrival.flags.smtputf8
                    || !mail_from.is_ascii()
                    || to.iter().any(|t| !t.is_ascii()),
                ..arrival.flags
            };
            let submission = Submission {
                id: self.queue.next_id(),
                tenant_id: tenant_id.to_string(),
                envelope: Envelope {
                    mail_from,
                    rcpt_to: to,
                    flags,
                },
                body,
                origin,
                priority: 0,
            };
            match self.queue.enqueue(submission).await {
                Ok(id) => ids.push(id.to_string()),
                Err(QueueError::OverQuota { max_per_day }) => {
                    return Err(Refusal::new(
                        RejectReason::Rate,
                        Reply::new(
                            451,
                            "4.7.1",
                            format!(
                                "The recipient's daily sending quota ({max_per_day} messages) \
                                 is used up, try again later"
                            ),
                        ),
                    ));
                }
                Err(error) => {
                    warn!(%error, id = arrival.id, "enqueueing a forwarded copy failed");
                    return Err(storage_failed());
                }
            }
        }
        Ok(ids)
    }
}

/// RFC 5321 §6.3: a message that has passed through more relays than `max` (its Received:
/// fields, ours about to be one more) is in a loop: `554 5.4.6`, never accepted.
pub fn hop_check(body: &[u8], max: usize) -> Result<(), Refusal> {
    let hops = mailmux_core::message_bytes::count_fields(body, "Received");
    if hops >= max {
        return Err(Refusal::new(
            RejectReason::Content,
            Reply::new(
                554,
                "5.4.6",
                format!("Too many hops: the message has {hops} Received: fields (mail loop)"),
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_ids_are_dot_atoms_under_the_domain() {
        assert_eq!(list_id("team", "acme.test"), "<team.acme.test>");
        assert_eq!(list_id("all+staff", "acme.test"), "<all-staff.acme.test>");
    }

    #[test]
    fn too_many_received_fields_are_a_loop() {
        let body = "Received: a\r\n".repeat(3) + "Subject: x\r\n\r\nbody\r\n";
        assert!(hop_check(body.as_bytes(), 4).is_ok());
        let refusal = hop_check(body.as_bytes(), 3).unwrap_err();
        assert_eq!(refusal.reply.code(), 554);
        assert_eq!(
            refusal.reply.status().map(|s| s.to_string()).as_deref(),
            Some("5.4.6")
        );
    }
}
