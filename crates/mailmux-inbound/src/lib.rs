//! mailmux-inbound: the MX side of mailmux once an SMTP session has a recipient or a message.
//!
//! `address.rs` judges a recipient's syntax as the MX must (relay tricks are refused, never
//! looked up), `rules.rs` picks the receipt rule a recipient falls under (individual, then its
//! `+tag` base, then the domain's catch-all), `auth.rs` gives the SPF, DKIM, ARC and DMARC
//! verdicts, and [`Inbound`] ties them to the store: [`Inbound::spf`] judges MAIL FROM,
//! [`Inbound::rcpt`] answers RCPT (SRS addresses in forward.rs, every other address by the
//! rules in [`Inbound::recipient`]), [`Inbound::accept`] checks the complete message and
//! makes it durable before the session may answer 250, and `parsed.rs` shows a stored message
//! as JSON, `webhook.rs` the deliveries (and payloads) of mail for `webhook` rules.
//! `forward.rs` carries out `forward` and `list` rules and relays bounces that come back to SRS
//! addresses, through the outbound queue; `postmaster.rs` takes the bare `<postmaster>`;
//! `retention.rs` expires stored mail.
//! Verdicts are values: a refusal carries the SMTP reply the session sends.

pub mod address;
pub mod auth;
pub mod forward;
pub mod parsed;
mod postmaster;
mod retention;
pub mod rules;
pub mod webhook;

use mailmux_core::reply::Reply;
use std::net::IpAddr;
use std::sync::Arc;

use mailmux_core::srs::Srs;
use mailmux_core::{BodyFlags, Config, ReceiptRule, RuleAction, TenantStatus, now_ms};
use mailmux_policy::rules::{lookup_failed, storage_failed};
use mailmux_policy::{Refusal, RejectReason};
use mailmux_queue::Queue;
use mailmux_store::{InboundMessage, Store};
use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::address::Recipient;
use crate::auth::{SpfVerdict, Verifier};
use crate::forward::Forwarding;

const MB: u64 = 1024 * 1024;

/// A recipient the MX accepted, and what it is delivered under.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accepted {
    /// As the client gave it.
    pub address: String,
    #[serde(skip)]
    pub tenant_id: String,
    /// The rule that matched; `None` for postmaster mail no rule covers (kept for the tenant).
    pub rule_id: Option<String>,
    /// Plus-addressing: the `tag` of `user+tag@`.
    pub tag: Option<String>,
    /// Mail to a tenant's verified return-path domain: a bounce of its own outbound mail, kept
    /// for the events work rather than refused.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub bounce: bool,
    /// The recipient's domain refuses mail failing DMARC under `p=reject`.
    #[serde(skip)]
    pub dmarc_reject: bool,
    /// A `webhook` rule's endpoint: the message is handed to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_id: Option<String>,
    /// `forward` and `list` rules, bounces to SRS addresses: the copy queued for it (such a
    /// recipient's mail is not stored).
    #[serde(skip)]
    pub forwarding: Option<Forwarding>,
    /// The bare `<postmaster>` while `inbound.postmaster` names no address: kept in the
    /// operator's postmaster mailbox (RFC 5321 §4.5.1 requires accepting it).
    #[serde(skip)]
    pub operator: bool,
}

/// A complete message on the MX, as [`Inbound::accept`] needs it.
pub struct Arrival<'a> {
    /// The transaction's queue id.
    pub id: &'a str,
    pub ip: IpAddr,
    pub mail_from: &'a str,
    /// SPF's verdict from MAIL FROM; `None` when the checks are off.
    pub spf: Option<&'a SpfVerdict>,
    pub recipients: &'a [Accepted],
    /// MAIL's SMTPUTF8 and the body's 8-bit content: forwarded copies need the same path.
    pub flags: BodyFlags,
}

/// Whether the MX checks authentication (`inbound.verify_auth`), and with what.
enum Checks {
    Off,
    On(Arc<Verifier>),
    /// On, but the resolver could not be built: every message gets 451 until it can (a
    /// message is never stored unchecked because DNS set-up failed).
    Unavailable,
}

/// The MX's view of the store: built once at start-up, shared by every MX session.
#[derive(Clone)]
pub struct Inbound {
    store: Store,
    checks: Arc<Checks>,
    payloads: Arc<webhook::PayloadSettings>,
    /// Forwarded copies go out through the tenant's normal outbound path.
    queue: Arc<Queue>,
    /// The SRS signer, built on first use from the store's secret (see forward.rs).
    srs: Arc<tokio::sync::OnceCell<Srs>>,
    /// Opens the sealed SRS secret.
    master_key_path: std::path::PathBuf,
    /// `inbound.postmaster`: where the bare `<postmaster>` goes.
    postmaster: Option<String>,
    /// `delivery.max_received_headers`: more hops than this is a loop.
    max_hops: usize,
}

fn refuse(reason: RejectReason, code: u16, status: &'static str, text: String) -> Refusal {
    Refusal::new(reason, Reply::new(code, status, text))
}

fn not_served(what: &str) -> Refusal {
    refuse(
        RejectReason::Relay,
        550,
        "5.7.1",
        format!("Relaying denied: {what} is not served here"),
    )
}

impl Inbound {
    pub fn new(store: Store, queue: Arc<Queue>, config: &Config) -> Inbound {
        let checks = if !config.inbound.verify_auth {
            Checks::Off
        } else {
            match Verifier::new(&config.delivery.dns_servers, &config.smtp.hostname) {
                Ok(verifier) => Checks::On(Arc::new(verifier)),
                Err(error) => {
                    warn!(%error, "no DNS resolver for inbound authentication checks");
                    Checks::Unavailable
                }
            }
        };
        Inbound {
            store,
            checks: Arc::new(checks),
            payloads: Arc::new(webhook::PayloadSettings::from_config(config)),
            queue,
            srs: Arc::default(),
            master_key_path: config.storage.data_dir.join("master.key"),
            postmaster: config.inbound.postmaster.clone(),
            max_hops: config.delivery.max_received_headers,
        }
    }

    /// MAIL FROM on the MX: SPF's verdict on the sender, or the 451 a DNS temporary failure
    /// gets. `Ok(None)` when the checks are off.
    pub async fn spf(
        &self,
        ip: IpAddr,
        helo: &str,
        mail_from: &str,
    ) -> Result<Option<SpfVerdict>, Refusal> {
        match self.checks.as_ref() {
            Checks::Off => Ok(None),
            Checks::Unavailable => Err(checks_unavailable()),
            Checks::On(verifier) => {
                let verdict = verifier.spf(ip, helo, mail_from).await;
                match verdict.refusal() {
                    Some(refusal) => Err(refusal),
                    None => Ok(Some(verdict)),
                }
            }
        }
    }

    /// RCPT on the MX: accepted only for an address of a verified inbound domain that a rule
    /// matches (or its postmaster); `550 5.7.1` for anything else's domain and for relay
    /// tricks, `550 5.1.1` for an unknown local address, the rule's `550 5.7.1` for a `reject`
    /// rule, `452 4.2.2` when a `store` rule's tenant is over `max_storage_mb`.
    pub async fn recipient(&self, address: &str) -> Result<Accepted, Refusal> {
        let recipient = match address::parse(address) {
            Ok(Some(recipient)) => recipient,
            Ok(None) => return Err(not_served(address.rsplit_once('@').map_or("", |p| p.1))),
            Err(trick) => {
                return Err(refuse(
                    RejectReason::Relay,
                    550,
                    "5.7.1",
                    format!("Relaying denied: {} is not accepted here", trick.as_str()),
                ));
            }
        };
        let domain = self
            .store
            .get_domain(&recipient.domain)
            .await
            .map_err(|error| {
                warn!(%error, domain = recipient.domain, "domain lookup failed");
                lookup_failed()
            })?;
        let Some(domain) = domain.filter(|d| d.verified && d.inbound) else {
            return self.bounce(address, &recipient).await;
        };
        let tenant = self
            .store
            .get_tenant(&domain.tenant_id)
            .await
            .map_err(|error| {
                warn!(%error, tenant = domain.tenant_id, "tenant lookup failed");
                lookup_failed()
            })?;
        let Some(tenant) = tenant.filter(|t| t.enabled && t.status != TenantStatus::Suspended)
        else {
            return Err(not_served(&recipient.domain));
        };
        let rule = self.rule(&recipient).await?;
        let mut webhook_id = None;
        let mut forwarding = None;
        let rule_id = match rule {
            Some(ReceiptRule {
                id,
                action: RuleAction::Store,
                ..
            }) => Some(id),
            Some(ReceiptRule {
                action: RuleAction::Reject,
                reject_text,
                ..
            }) => {
                return Err(refuse(
                    RejectReason::Relay,
                    550,
                    "5.7.1",
                    reject_text.unwrap_or_else(|| "Mail to this address is refused".into()),
                ));
            }
            Some(ReceiptRule {
                id,
                action: RuleAction::Webhook,
                webhook_id: endpoint,
                ..
            }) => {
                // The rule was made while the tenant had the feature; without it now, the mail
                // is refused rather than accepted and never handed over.
                if !tenant.features.webhooks {
                    return Err(refuse(
                        RejectReason::Relay,
                        550,
                        "5.7.1",
                        "Mail to this address cannot be handed over (webhooks are off for its owner)"
                            .into(),
                    ));
                }
                webhook_id = endpoint;
                Some(id)
            }
            Some(rule) => {
                forwarding = Some(self.forwarding(&tenant, &recipient, &rule).await?);
                Some(rule.id)
            }
            // RFC 5321 §4.5.1: postmaster is always accepted; without a rule the tenant keeps it.
            None if recipient.is_postmaster() => None,
            None => {
                return Err(refuse(
                    RejectReason::Relay,
                    550,
                    "5.1.1",
                    format!("No such user here: {address}"),
                ));
            }
        };
        self.check_storage(&tenant.id, tenant.limits.max_storage_mb)
            .await?;
        Ok(Accepted {
            address: address.to_string(),
            tenant_id: tenant.id,
            rule_id,
            tag: recipient.base_and_tag().1.map(str::to_string),
            bounce: false,
            dmarc_reject: domain.dmarc_reject,
            webhook_id,
            forwarding,
            operator: false,
        })
    }

    /// A recipient on a domain that is no inbound one: accepted when the domain is a tenant's
    /// verified return path (the MX its records name is ours, so its bounces come here, under
    /// any local part: VERP addresses included), else refused as relaying.
    async fn bounce(&self, address: &str, recipient: &Recipient) -> Result<Accepted, Refusal> {
        let owner = self
            .store
            .return_path_owner(&recipient.domain)
            .await
            .map_err(|error| {
                warn!(%error, domain = recipient.domain, "return-path lookup failed");
                lookup_failed()
            })?;
        let Some(owner) = owner.filter(|o| o.verified().is_some()) else {
            return Err(not_served(&recipient.domain));
        };
        Ok(Accepted {
            address: address.to_string(),
            tenant_id: owner.tenant_id,
            rule_id: None,
            tag: None,
            bounce: true,
            dmarc_reject: false,
            webhook_id: None,
            forwarding: None,
            operator: false,
        })
    }

    /// The winning rule.
    async fn rule(&self, recipient: &Recipient) -> Result<Option<ReceiptRule>, Refusal> {
        let found = self
            .store
            .matching_receipt_rules(&recipient.domain, &rules::candidates(recipient))
            .await
            .map_err(|error| {
                warn!(%error, domain = recipient.domain, "receipt rule lookup failed");
                lookup_failed()
            })?;
        Ok(rules::winner(recipient, &found).cloned())
    }

    /// Stored mail (inbound and queued) against the tenant's `max_storage_mb` (0: unlimited).
    async fn check_storage(&self, tenant_id: &str, max_mb: u64) -> Result<(), Refusal> {
        if max_mb == 0 {
            return Ok(());
        }
        let used = async {
            Ok::<_, mailmux_store::StoreError>(
                self.store.inbound_bytes(tenant_id).await?
                    + self.store.stored_bytes(tenant_id).await?,
            )
        }
        .await
        .map_err(|error| {
            warn!(%error, tenant = tenant_id, "storage lookup failed");
            lookup_failed()
        })?;
        if used >= max_mb.saturating_mul(MB) {
            return Err(refuse(
                RejectReason::Storage,
                452,
                "4.2.2",
                format!("Mailbox storage full (max_storage_mb {max_mb}), try again later"),
            ));
        }
        Ok(())
    }

    /// Checks the complete message (DKIM, ARC, DMARC; a DNS temporary failure is 451, a DMARC
    /// `p=reject` failure 550 when a recipient's domain enforces it) and makes it durable: one
    /// stored copy per tenant among the recipients, the Authentication-Results header and
    /// `received` on top of `body`, all in one commit. Returns only after that commit, so the
    /// session's 250 follows it; on any error the client hears 4xx and keeps its copy. A
    /// message for several tenants gets `id.1`, `id.2`… so that each tenant sees its own.
    /// Recipients under `webhook` rules add one webhook delivery per endpoint, in that same
    /// commit (`webhook.rs`): durable before the 250 like the message.
    pub async fn accept(
        &self,
        arrival: &Arrival<'_>,
        received: &str,
        body: &[u8],
    ) -> Result<Vec<String>, Refusal> {
        forward::hop_check(body, self.max_hops)?;
        let (results, verdicts) = match (self.checks.as_ref(), arrival.spf) {
            (Checks::Off, _) => (String::new(), None),
            (Checks::On(verifier), Some(spf)) => {
                let verdicts = verifier.verify(arrival.ip, spf, body).await;
                if let Some(refusal) = verdicts.temp_error {
                    return Err(refusal);
                }
                if let Some(domain) = &verdicts.dmarc_reject
                    && arrival.recipients.iter().any(|r| r.dmarc_reject)
                {
                    return Err(auth::dmarc_refusal(domain));
                }
                (verdicts.header, Some(verdicts.json.to_string()))
            }
            _ => return Err(checks_unavailable()),
        };
        let mut message = Vec::with_capacity(results.len() + received.len() + body.len());
        message.extend_from_slice(results.as_bytes());
        message.extend_from_slice(received.as_bytes());
        message.extend_from_slice(body);
        let (id, mail_from) = (arrival.id, arrival.mail_from);
        let message = message.as_slice();
        // Forwarded copies are committed first, then the stored rows: 250 only after both.
        let mut ids = self.enqueue_forwards(arrival, message).await?;
        if arrival.recipients.iter().any(|r| r.operator) {
            let row = InboundMessage {
                id: id.to_string(),
                tenant_id: String::new(),
                mail_from: mail_from.to_string(),
                recipients: "[]".into(),
                size: message.len() as u64,
                raw: message.to_vec(),
                received_at: now_ms(),
                verdicts: verdicts.clone(),
            };
            self.store.store_postmaster(&row).await.map_err(|error| {
                warn!(%error, id, "keeping postmaster mail failed");
                storage_failed()
            })?;
            ids.push(row.id);
        }
        let recipients: Vec<&Accepted> = arrival
            .recipients
            .iter()
            .filter(|r| r.forwarding.is_none() && !r.operator)
            .collect();
        if recipients.is_empty() {
            return Ok(ids);
        }
        let mut tenants: Vec<&str> = recipients.iter().map(|r| r.tenant_id.as_str()).collect();
        tenants.sort_unstable();
        tenants.dedup();
        let now = now_ms();
        let mut rows = Vec::with_capacity(tenants.len());
        let mut deliveries = Vec::new();
        for (n, tenant) in tenants.iter().enumerate() {
            let own: Vec<&Accepted> = recipients
                .iter()
                .copied()
                .filter(|r| r.tenant_id == *tenant)
                .collect();
            let recipients = serde_json::to_string(&own).map_err(|error| {
                warn!(%error, "recipient list not serialisable");
                storage_failed()
            })?;
            let row = InboundMessage {
                id: if tenants.len() == 1 {
                    id.to_string()
                } else {
                    format!("{id}.{}", n + 1)
                },
                tenant_id: tenant.to_string(),
                mail_from: mail_from.to_string(),
                recipients,
                size: message.len() as u64,
                raw: message.to_vec(),
                received_at: now,
                verdicts: verdicts.clone(),
            };
            deliveries.extend(webhook::deliveries(&row, &own, &self.payloads));
            rows.push(row);
        }
        self.store
            .store_inbound_with_webhooks(&rows, &deliveries)
            .await
            .map_err(|error| {
                warn!(%error, id, "storing inbound mail failed");
                storage_failed()
            })?;
        ids.extend(rows.into_iter().map(|r| r.id));
        Ok(ids)
    }
}

fn checks_unavailable() -> Refusal {
    refuse(
        RejectReason::Storage,
        451,
        "4.7.0",
        "Authentication checks are unavailable, try again later".into(),
    )
}
