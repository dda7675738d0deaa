//! A return-path (custom MAIL FROM) domain's records: an MX naming this relay, so bounces
//! reach it, and SPF authorising it (for a tenant on the `ses` transport: SES's feedback MX and
//! SPF, as SES's custom MAIL FROM domain needs). Builds the view with their last status and checks them
//! ([`check_and_store`]): found, the return path is used; found gone, delivery falls back to
//! the sending domain; a lookup that failed proves nothing and keeps the previous verdict.

use std::collections::BTreeMap;

use mailmux_core::config::TransportKind;
use mailmux_core::{Config, Tenant, now_ms, return_path_dns_records, ses_mail_from_dns_records};
use mailmux_store::{ReturnPath, ReturnPathCheck, Store};
use serde::Serialize;
use utoipa::ToSchema;

use super::{DnsChecker, ExpectedRecord, MISMATCH, MISSING, PENDING, RecordKind, VERIFIED};
use crate::auth::Actor;
use crate::error::{AdminError, Result};

/// A record to publish for the return-path domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct ReturnPathRecord {
    /// `MX` or `TXT`.
    #[serde(rename = "type")]
    pub record_type: String,
    pub name: String,
    pub value: String,
    /// `bounces` (MX: bounces reach this relay) or `spf`.
    pub purpose: String,
    /// What the last check found: `pending` (never checked), `verified`, `missing`,
    /// `mismatch` or `error` (the lookup itself failed).
    pub status: String,
}

/// A domain's return-path setting.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReturnPathView {
    pub domain: String,
    /// The return-path domain; null when none is set (the sending domain itself is used).
    pub return_path: Option<String>,
    /// Whether its MX and SPF records were found (by the last check that could tell).
    pub verified: bool,
    /// Unix milliseconds since which the records are found.
    pub verified_at: Option<i64>,
    /// Unix milliseconds of the last check.
    pub checked_at: Option<i64>,
    /// Whether delivery uses it now: set, verified, and the tenant has `custom_domains`.
    pub in_use: bool,
    /// What to publish for it (empty when none is set).
    pub records: Vec<ReturnPathRecord>,
}

/// Who receives mail (bounces) for a return path, and so what its MX and SPF name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BounceHost {
    /// This relay (`smtp.hostname`): the return path is mailmux's MAIL FROM.
    Relay(String),
    /// SES in this region: for a tenant on the `ses` transport the return path is the SES
    /// identity's custom MAIL FROM domain, whose MX is SES's feedback endpoint and whose SPF
    /// authorises SES.
    Ses { region: String },
}

/// The region SES requests go to when `ses.region` names none (the SES client's default).
const SES_DEFAULT_REGION: &str = "us-east-1";

impl BounceHost {
    /// The host for `tenant`'s return paths: SES's when the tenant sends through SES.
    pub fn of(config: &Config, tenant: &Tenant) -> BounceHost {
        if tenant.transport.unwrap_or(config.delivery.transport) == TransportKind::Ses {
            let region = config.ses.region.as_deref().unwrap_or(SES_DEFAULT_REGION);
            BounceHost::Ses {
                region: region.to_string(),
            }
        } else {
            BounceHost::Relay(config.smtp.hostname.clone())
        }
    }
}

/// The records of `return_path`: the MX is about bounces, the TXT about SPF.
fn expected_records(return_path: &str, host: &BounceHost) -> Vec<ExpectedRecord> {
    let records = match host {
        BounceHost::Relay(relay) => return_path_dns_records(return_path, relay),
        BounceHost::Ses { region } => ses_mail_from_dns_records(return_path, region),
    };
    records
        .into_iter()
        .map(|r| {
            let kind = if r.record_type == "MX" {
                RecordKind::Mx
            } else {
                RecordKind::Spf
            };
            ExpectedRecord::new(kind, r.name, r.value)
        })
        .collect()
}

/// The setting as shown; `custom_domains` is whether the tenant has the feature.
pub fn view(setting: &ReturnPath, custom_domains: bool, host: &BounceHost) -> ReturnPathView {
    let records = match &setting.return_path {
        None => Vec::new(),
        Some(rp) => expected_records(rp, host)
            .into_iter()
            .map(|record| ReturnPathRecord {
                purpose: match record.kind {
                    RecordKind::Mx => "bounces",
                    _ => "spf",
                }
                .into(),
                status: setting
                    .checks
                    .get(&record.status_key)
                    .cloned()
                    .unwrap_or_else(|| PENDING.into()),
                record_type: record.kind.record_type().into(),
                name: record.name,
                value: record.value,
            })
            .collect(),
    };
    ReturnPathView {
        domain: setting.domain.clone(),
        return_path: setting.return_path.clone(),
        verified: setting.verified().is_some(),
        verified_at: setting.verified_at,
        checked_at: setting.checked_at,
        in_use: setting.verified().is_some() && custom_domains,
        records,
    }
}

/// One check of `setting`'s return path; answers the setting as stored afterwards. `action`
/// names a change of verdict in the audit log.
pub async fn check_and_store(
    store: &Store,
    config: &Config,
    actor: &Actor,
    checker: &DnsChecker,
    setting: ReturnPath,
    action: &str,
) -> Result<ReturnPath> {
    let Some(return_path) = setting.return_path.clone() else {
        return Ok(setting);
    };
    let tenant = store
        .get_tenant(&setting.tenant_id)
        .await?
        .ok_or_else(|| AdminError::NotFound(format!("tenant {} not found", setting.tenant_id)))?;
    let expected = expected_records(&return_path, &BounceHost::of(config, &tenant));
    let checks: BTreeMap<String, String> = super::check(checker, &expected).await;
    let found = checks.values().all(|s| s == VERIFIED);
    let gone = checks.values().any(|s| s == MISSING || s == MISMATCH);
    let now = now_ms();
    let verified_at = if found {
        setting.verified_at.or(Some(now))
    } else if gone {
        None
    } else {
        setting.verified_at
    };
    let check = ReturnPathCheck {
        checks,
        checked_at: now,
        verified_at,
    };
    let after = ReturnPath {
        checks: check.checks.clone(),
        checked_at: Some(check.checked_at),
        verified_at: check.verified_at,
        ..setting.clone()
    };
    // Only a change of verdict is logged: a daily re-check that finds everything in place adds
    // nothing.
    let verdict_changed = setting.verified().is_some() != after.verified().is_some();
    let audit = verdict_changed.then(|| {
        let before = serde_json::json!({
            "return_path": return_path,
            "verified": setting.verified().is_some(),
        });
        let now = serde_json::json!({
            "return_path": return_path,
            "verified": after.verified().is_some(),
            "records": after.checks,
        });
        crate::audit_log::entry(
            actor,
            Some(&after.tenant_id),
            action,
            &after.domain,
            Some(before),
            Some(now),
        )
    });
    if !store
        .put_return_path_check(&setting.domain, &return_path, &check, audit.as_ref())
        .await?
    {
        return Err(AdminError::Conflict(format!(
            "the return path of {} changed while it was being checked; check again",
            setting.domain
        )));
    }
    if verdict_changed && after.verified().is_none() {
        tracing::warn!(domain = %after.domain, %return_path,
            "return-path records are gone; mail leaves with the sending domain again");
    }
    Ok(after)
}
