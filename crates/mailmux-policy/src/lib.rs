//! mailmux-policy: the submission policy, one for every way mail enters. The SMTP listeners
//! (MAIL, RCPT, end of DATA) and the HTTP send API ask the same [`Policy`] the same questions in
//! the same order and get the same answers: values ([`Verdict`], [`Refusal`]) carrying the SMTP
//! reply of the contract, which the HTTP side maps to a status.
//!
//! ```text
//! open_transaction: tenant (read now) → status → declared size → sender domain → rate → quota
//! per recipient:    rules::recipient_count against limits.max_recipients
//! complete message: size → completion (submission.rs) → content → From:/Sender: domains →
//!                   content hooks (gated by feature flags)
//! queue commit:     the daily quota again, atomically with the insert (mailmux-store)
//! ```
//!
//! Files: `rules.rs` holds the pure checks, `rate.rs` the governor limiters, `hooks.rs` the
//! feature-gated content hooks, `content.rs` the byte-level message checks, `submission.rs` what
//! a submission server adds or repairs at acceptance (Date:, Message-ID:, long lines through
//! `long_lines.rs`), `headers.rs` the header senders, `received.rs` the trace header,
//! `verdict.rs` the values (replies are `mailmux_core::reply`). This file fetches the facts (the
//! store) and runs the checks.
//!
//! Freshness: the tenant is read from the store at every transaction, never cached, so a change
//! of status, tier, limit or flag made through the API applies to the next transaction on every
//! node.

pub mod content;
mod headers;
pub mod hooks;
pub mod long_lines;
pub mod rate;
pub mod received;

pub mod rules;
pub mod submission;
mod verdict;

use std::time::Duration;

use mailmux_core::{Config, Credential, Tenant, address_domain, now_ms};
use mailmux_store::{QUOTA_WINDOW_MS, Store};
use tracing::warn;

pub use headers::header_senders;
pub use hooks::{ContentHook, ContentHooks, HookKind};
pub use mailmux_core::reply::Reply;
pub use rate::{RateExceeded, RateKey, RateLimits};
pub use verdict::{Refusal, RejectReason, Verdict};

use crate::rules::RateOwner;

/// Who starts a transaction.
#[derive(Debug, Clone, Copy)]
pub struct Submitter<'a> {
    pub tenant_id: &'a str,
    /// The SMTP credential used, if any: its own rate applies on top of the tenant's.
    pub credential: Option<&'a Credential>,
}

/// The limits of one message: the tenant's, under the relay's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageLimits {
    /// Bytes (what EHLO's SIZE advertises).
    pub max_size: u64,
    pub max_recipients: usize,
}

/// A transaction the policy let start.
#[derive(Debug, Clone)]
pub struct Admitted {
    /// The tenant as read for this transaction.
    pub tenant: Tenant,
    pub limits: MessageLimits,
    /// Queue priority of the message ([`rules::queue_priority`]).
    pub priority: i64,
}

/// The policy context: built once at start-up, shared by the SMTP server and the admin API.
pub struct Policy {
    store: Store,
    /// `smtp.max_message_size` and `smtp.max_recipients`: caps over every tenant's own limits.
    relay: MessageLimits,
    rates: RateLimits,
    hooks: ContentHooks,
}

impl Policy {
    pub fn new(config: &Config, store: Store) -> Policy {
        Policy {
            store,
            relay: MessageLimits {
                max_size: config.smtp.max_message_size,
                max_recipients: config.smtp.max_recipients,
            },
            rates: RateLimits::default(),
            hooks: ContentHooks::default(),
        }
    }

    /// Installs content hooks (spam, virus, mailing lists); none exist yet.
    pub fn with_hooks(mut self, hooks: ContentHooks) -> Policy {
        self.hooks = hooks;
        self
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The relay's own limits: what applies where no tenant is known yet (before AUTH, MX).
    pub fn relay_limits(&self) -> MessageLimits {
        self.relay
    }

    /// The limits of `tenant`'s messages: its own, under the relay's.
    pub fn limits_for(&self, tenant: &Tenant) -> MessageLimits {
        let max_recipients = tenant
            .limits
            .recipients_within(self.relay.max_recipients as u64);
        MessageLimits {
            max_size: tenant.limits.message_size_within(self.relay.max_size),
            max_recipients: usize::try_from(max_recipients).unwrap_or(usize::MAX),
        }
    }

    /// The tenant, read now; a refusal when it is gone or the store does not answer.
    pub async fn tenant(&self, tenant_id: &str) -> Result<Tenant, Refusal> {
        match self.store.get_tenant(tenant_id).await {
            Ok(Some(tenant)) => Ok(tenant),
            Ok(None) => Err(rules::tenant_missing()),
            Err(error) => {
                warn!(%error, tenant = tenant_id, "tenant lookup failed");
                Err(rules::lookup_failed())
            }
        }
    }

    /// The checks at the start of a transaction (SMTP MAIL, an API send), in the order a
    /// client can act on them: account status, the declared size, the sender's domain, the
    /// sending rate, the daily quota. `declared_size` is 0 when none was declared.
    pub async fn open_transaction(
        &self,
        who: Submitter<'_>,
        mail_from: &str,
        declared_size: u64,
    ) -> Result<Admitted, Refusal> {
        let tenant = self.tenant(who.tenant_id).await?;
        rules::tenant_status(&tenant).into_result()?;
        let limits = self.limits_for(&tenant);
        rules::message_size(declared_size, limits.max_size).into_result()?;
        // The null sender (bounces, auto-replies) has no domain to check.
        if !mail_from.is_empty() {
            let domain = ascii_domain(mail_from);
            let record = self.store.get_domain(&domain).await.map_err(|error| {
                warn!(%error, domain, "domain lookup failed");
                rules::lookup_failed()
            })?;
            rules::sender_domain(&domain, record.as_ref(), &tenant.id).into_result()?;
        }
        self.check_rate(&tenant, who.credential)?;
        let max = tenant.limits.max_messages_per_day;
        if max > 0 {
            let sent = self
                .store
                .count_messages_since(&tenant.id, now_ms() - QUOTA_WINDOW_MS)
                .await
                .map_err(|error| {
                    warn!(%error, tenant = %tenant.id, "quota lookup failed");
                    rules::lookup_failed()
                })?;
            if rules::daily_quota(sent, &tenant.limits) != Verdict::Accept {
                return Err(self.quota_refusal(&tenant.id, max).await);
            }
        }
        Ok(Admitted {
            priority: rules::queue_priority(&tenant),
            tenant,
            limits,
        })
    }

    /// The credential's own rate (when it has one), then the tenant's.
    fn check_rate(&self, tenant: &Tenant, credential: Option<&Credential>) -> Result<(), Refusal> {
        if let Some(credential) = credential
            && (credential.rate_per_second.is_some() || credential.rate_per_minute.is_some())
        {
            let key = RateKey::Credential(credential.id.clone());
            let (per_second, per_minute) = (
                credential.rate_per_second.unwrap_or(0),
                credential.rate_per_minute.unwrap_or(0),
            );
            self.rates
                .check(&key, per_second, per_minute)
                .map_err(|e| {
                    rules::rate_exceeded(RateOwner::Credential, e.window, e.limit, e.retry_after)
                })?;
        }
        let limits = &tenant.limits;
        self.rates
            .check(
                &RateKey::Tenant(tenant.id.clone()),
                limits.rate_per_second,
                limits.rate_per_minute,
            )
            .map_err(|e| rules::rate_exceeded(RateOwner::Tenant, e.window, e.limit, e.retry_after))
    }

    /// The daily-quota refusal, with when the oldest message of the window leaves it (the
    /// earliest a new one can be accepted).
    pub async fn quota_refusal(&self, tenant_id: &str, max: u64) -> Refusal {
        let now = now_ms();
        let wait = match self
            .store
            .oldest_message_since(tenant_id, now - QUOTA_WINDOW_MS)
            .await
        {
            Ok(Some(oldest)) => {
                Duration::from_millis((oldest + QUOTA_WINDOW_MS - now).max(1000) as u64)
            }
            // Nothing in the window any more (it just moved on) or no answer: soon.
            _ => Duration::from_secs(60),
        };
        rules::quota_reached(max).with_retry_after(wait)
    }

    /// A complete submitted message (SMTP submission, an API send), as it is accepted: its
    /// size checked as the client sent it, then completed as a submission server must
    /// ([`submission::complete`]: long body lines re-encoded, Date: and Message-ID: added),
    /// then the checks of [`Policy::check_completed`]. Returns the message to store and what
    /// the content scan found (8-bit bytes) for the envelope's flags.
    pub async fn accept_message(
        &self,
        tenant: &Tenant,
        limits: &MessageLimits,
        message: Vec<u8>,
        stamp: &submission::Stamp<'_>,
    ) -> Result<(Vec<u8>, content::Scan), Refusal> {
        // The limit is on what the client sent: what completion adds must not tip a message
        // the client could see was within it.
        rules::message_size(message.len() as u64, limits.max_size).into_result()?;
        let (message, scan) = submission::complete(message, stamp)?;
        let scan = content::verdict(scan)?;
        self.check_senders_and_hooks(tenant, &message).await?;
        Ok((message, scan))
    }

    /// The checks of a complete message, in order: size, content (line endings, NUL, line
    /// length), the senders in its headers, the content hooks. Returns what the content scan
    /// found (8-bit bytes) for the envelope's flags.
    pub async fn check_message(
        &self,
        tenant: &Tenant,
        limits: &MessageLimits,
        message: &[u8],
    ) -> Result<content::Scan, Refusal> {
        rules::message_size(message.len() as u64, limits.max_size).into_result()?;
        let scan = content::check(message)?;
        self.check_senders_and_hooks(tenant, message).await?;
        Ok(scan)
    }

    /// The senders in the message's headers, then the content hooks.
    async fn check_senders_and_hooks(
        &self,
        tenant: &Tenant,
        message: &[u8],
    ) -> Result<(), Refusal> {
        self.check_header_senders(&tenant.id, message).await?;
        self.check_content(tenant, message).into_result()
    }

    /// Every From:/Sender: address of the complete message must be in a verified domain of
    /// the tenant.
    pub async fn check_header_senders(
        &self,
        tenant_id: &str,
        message: &[u8],
    ) -> Result<(), Refusal> {
        for (field, address) in header_senders(message)? {
            let domain = ascii_domain(&address);
            let record = self.store.get_domain(&domain).await.map_err(|error| {
                warn!(%error, domain, "domain lookup failed");
                rules::lookup_failed()
            })?;
            rules::header_address(field, &address, record.as_ref(), tenant_id).into_result()?;
        }
        Ok(())
    }

    /// The content hooks the tenant's features turn on.
    pub fn check_content(&self, tenant: &Tenant, message: &[u8]) -> Verdict {
        self.hooks.check(tenant, message)
    }
}

/// The domain of an address as the store keeps it: lowercase A-labels (an SMTPUTF8 sender
/// may write it in Unicode).
pub fn ascii_domain(address: &str) -> String {
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
