//! A sending domain's records: the verification TXT, its DKIM keys (active, and during a
//! rotation the pending and retiring ones), SPF and DMARC. Builds the records to publish with
//! their last status ([`DomainView`]), and checks them ([`check_and_store`]): a domain becomes
//! verified when its required records are found, a verified one whose records went away is
//! flagged, and a rotation's pending key whose record is found becomes the signing key.

use std::collections::BTreeMap;

use mailmux_core::domain::verification_record_name;
use mailmux_core::{Config, Domain, now_ms, sending_dns_records};
use mailmux_store::{DkimKey, DkimKeyStatus, DomainCheck, Store};
use serde::Serialize;
use utoipa::ToSchema;

use super::{DnsChecker, ExpectedRecord, MISMATCH, MISSING, PENDING, RecordKind, VERIFIED};
use crate::auth::Actor;
use crate::dkim::{self, KeyType};
use crate::error::Result;

/// A DNS record the tenant must publish.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct DnsRecordView {
    /// `TXT`, `MX` for an inbound domain's MX record, or `CNAME` for SES's Easy DKIM.
    #[serde(rename = "type")]
    pub record_type: String,
    pub name: String,
    pub value: String,
    /// `pending` (not checked yet), `verified`, `missing`, `mismatch` (something else is
    /// published there) or `error` (the lookup failed).
    pub status: String,
    /// `verification`, `dkim`, `spf`, `dmarc`, `mx` or `ses_dkim` (Easy DKIM, SES transport).
    pub purpose: String,
    /// Whether the domain may send only once this record is found. A DKIM record is required
    /// only while the tenant signs (`features.dkim_signing`); otherwise it is listed for when
    /// signing is turned on.
    pub required: bool,
    /// DKIM records: the key's selector.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// DKIM records: `active` (signs now), `pending` (a rotation's new key: signing switches
    /// to it once this record is found) or `retiring` (replaced; keep it published until
    /// `retire_at`, then it leaves this list).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_status: Option<String>,
    /// Retiring DKIM records: until when (Unix ms) to keep the record published.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retire_at: Option<i64>,
}

/// The DKIM key of a domain (public part).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DkimView {
    pub selector: String,
    pub key_type: KeyType,
}

/// A domain with the records to publish and where its verification stands.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DomainView {
    /// Normalised: lowercase A-labels, no trailing dot.
    pub domain: String,
    pub tenant_id: String,
    pub verified: bool,
    /// `dns`, `operator` or `ses` (SES verified it for sending; `ses` transport), once verified.
    pub verified_by: Option<String>,
    /// Whether mailmux is the domain's MX (receipt rules apply; the records list the MX).
    pub inbound: bool,
    /// Inbound mail failing DMARC under the sender domain's `p=reject` is refused (550 5.7.1).
    pub dmarc_reject: bool,
    pub records: Vec<DnsRecordView>,
    pub dkim: Option<DkimView>,
    /// Whether the tenant's mail is DKIM-signed (its tier or `features.dkim_signing`). When
    /// false the DKIM record is not required for verification, and `note` says so.
    pub dkim_signing: bool,
    /// What a person should know about these records (set when DKIM signing is off).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Last DNS check (Unix ms).
    pub checked_at: Option<i64>,
    /// Set when a re-check found a required record gone (the domain still sends; see the
    /// audit log and fix the records).
    pub flagged_at: Option<i64>,
    pub created_at: i64,
    /// For a tenant on the `ses` transport, SES's own view of the domain's identity (beside
    /// mailmux's DNS checks above); absent until the first SES sync created it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ses: Option<SesIdentityView>,
}

/// What SES says of a domain's email identity (`GetEmailIdentity`, as of the last sync).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SesIdentityView {
    /// `PENDING`, `SUCCESS`, `FAILED`, `TEMPORARY_FAILURE` or `NOT_STARTED`.
    pub dkim_status: Option<String>,
    /// SES's `VerifiedForSendingStatus`: the domain may send through SES only once true.
    pub verified_for_sending: bool,
    /// The custom MAIL FROM domain's status, when one is set.
    pub mail_from_status: Option<String>,
    /// When the sync last read it (Unix ms).
    pub checked_at: i64,
}

/// Status shown for a retiring DKIM record: keep it published (it is not checked).
pub const RETIRING: &str = "retiring";

/// The note on a domain of a tenant that does not sign.
pub const UNSIGNED_NOTE: &str = "DKIM signing is off for this tenant (its tier or \
    features.dkim_signing): mail leaves unsigned, so the DKIM record is not required to verify \
    the domain. Publish it anyway to be ready when signing is turned on.";

/// One record of a sending domain: the record, and for DKIM records the key it publishes.
pub struct SendingRecord {
    pub record: ExpectedRecord,
    /// DKIM records: selector, key status, and until when a retiring key stays listed.
    key: Option<(String, DkimKeyStatus, Option<i64>)>,
}

impl SendingRecord {
    /// Only the record of the active key counts: a pending one is a rotation's next step. A
    /// DKIM record counts only when the tenant `signs`.
    fn required(&self, signs: bool) -> bool {
        self.record.kind.required()
            && self.record.status_key == self.record.kind.as_str()
            && (signs || self.record.kind != RecordKind::Dkim)
    }

    /// Retiring records are listed, not looked up: their verdict is "keep it".
    fn checked(&self) -> bool {
        !matches!(self.key, Some((_, DkimKeyStatus::Retiring, _)))
    }

    pub fn selector(&self) -> Option<&str> {
        self.key.as_ref().map(|(selector, _, _)| selector.as_str())
    }
}

/// The status key of a rotation's pending key `selector` in a domain's check.
pub fn pending_status_key(selector: &str) -> String {
    format!("{}:{selector}", RecordKind::Dkim.as_str())
}

/// Every record of `domain`, in the order shown: verification, DKIM (active, pending,
/// retiring), SPF, DMARC, and the MX of an inbound domain. Retiring keys whose grace period ended by `now` are left out.
pub fn expected_records(
    domain: &Domain,
    keys: &[DkimKey],
    now: i64,
    relay_hostname: &str,
) -> Vec<SendingRecord> {
    let mut out = Vec::new();
    // Verification, SPF and DMARC values come from core (one definition for CLI and API).
    for record in sending_dns_records(domain, relay_hostname) {
        let kind = if record.record_type == "MX" {
            RecordKind::Mx
        } else if record.name == verification_record_name(&domain.name) {
            RecordKind::Verification
        } else if record.name.starts_with("_dmarc.") {
            RecordKind::Dmarc
        } else {
            RecordKind::Spf
        };
        out.push(SendingRecord {
            record: ExpectedRecord::new(kind, record.name, record.value),
            key: None,
        });
    }
    let dkim = keys
        .iter()
        .filter(|k| k.status != DkimKeyStatus::Retiring || k.retire_at.is_some_and(|at| at > now))
        .map(|key| SendingRecord {
            record: ExpectedRecord {
                kind: RecordKind::Dkim,
                name: format!("{}._domainkey.{}", key.selector, domain.name),
                value: dkim::record_value(&key.key_type, &key.public_key),
                status_key: match key.status {
                    DkimKeyStatus::Active => RecordKind::Dkim.as_str().to_string(),
                    _ => pending_status_key(&key.selector),
                },
            },
            key: Some((key.selector.clone(), key.status, key.retire_at)),
        });
    let at = 1.min(out.len());
    out.splice(at..at, dkim);
    out
}

/// A record as shown, with its status from `check` (or `pending` if never checked), for a
/// tenant that `signs` or not.
pub fn record_view(
    expected: SendingRecord,
    check: Option<&DomainCheck>,
    signs: bool,
) -> DnsRecordView {
    let status = if expected.checked() {
        check
            .and_then(|c| c.statuses.get(&expected.record.status_key).cloned())
            .unwrap_or_else(|| PENDING.to_string())
    } else {
        RETIRING.to_string()
    };
    let required = expected.required(signs);
    let (selector, key_status, retire_at) = match expected.key {
        Some((selector, status, retire_at)) => (
            Some(selector),
            Some(status.as_str().to_string()),
            retire_at.filter(|_| status == DkimKeyStatus::Retiring),
        ),
        None => (None, None, None),
    };
    let record = expected.record;
    DnsRecordView {
        status,
        record_type: record.kind.record_type().to_string(),
        purpose: record.kind.as_str().to_string(),
        required,
        name: record.name,
        value: record.value,
        selector,
        key_status,
        retire_at,
    }
}

/// The view of `domain` with `keys` and its last `check`, for a tenant that `signs` or not.
pub fn view(
    domain: &Domain,
    keys: &[DkimKey],
    check: Option<&DomainCheck>,
    relay_hostname: &str,
    signs: bool,
) -> DomainView {
    let records = expected_records(domain, keys, now_ms(), relay_hostname)
        .into_iter()
        .map(|e| record_view(e, check, signs))
        .collect();
    let active = keys.iter().find(|k| k.status == DkimKeyStatus::Active);
    DomainView {
        domain: domain.name.clone(),
        tenant_id: domain.tenant_id.clone(),
        verified: domain.verified,
        verified_by: domain.verified_by.clone(),
        inbound: domain.inbound,
        dmarc_reject: domain.dmarc_reject,
        records,
        dkim: active.map(|k| DkimView {
            selector: k.selector.clone(),
            key_type: KeyType::from_name(&k.key_type),
        }),
        dkim_signing: signs,
        note: (!signs).then(|| UNSIGNED_NOTE.to_string()),
        checked_at: check.map(|c| c.checked_at),
        flagged_at: check.and_then(|c| c.flagged_at),
        created_at: domain.created_at,
        ses: None,
    }
}

/// Adds SES's identity to a view: its status, and Easy DKIM's three CNAME records to publish
/// (`TOKEN._domainkey.DOMAIN CNAME TOKEN.dkim.amazonses.com`), `verified` once SES found them.
fn with_ses(mut view: DomainView, identity: mailmux_store::SesIdentity) -> DomainView {
    let status = if identity.dkim_status.as_deref() == Some("SUCCESS") {
        VERIFIED
    } else {
        PENDING
    };
    for token in &identity.dkim_tokens {
        view.records.push(DnsRecordView {
            record_type: "CNAME".into(),
            name: format!("{token}._domainkey.{}", view.domain),
            value: format!("{token}.dkim.amazonses.com"),
            status: status.into(),
            purpose: "ses_dkim".into(),
            required: true,
            selector: Some(token.clone()),
            key_status: None,
            retire_at: None,
        });
    }
    view.ses = Some(SesIdentityView {
        dkim_status: identity.dkim_status,
        verified_for_sending: identity.verified_for_sending,
        mail_from_status: identity.mail_from_status,
        checked_at: identity.checked_at,
    });
    view
}

/// Whether `tenant_id` signs its mail (a tenant deleted meanwhile: no).
async fn tenant_signs(store: &Store, tenant_id: &str) -> Result<bool> {
    Ok(store
        .get_tenant(tenant_id)
        .await?
        .is_some_and(|t| t.features.dkim_signing))
}

/// The view of `domain` as stored now.
pub async fn load_view(store: &Store, config: &Config, domain: &Domain) -> Result<DomainView> {
    let keys = store.list_dkim_keys(&domain.name).await?;
    let check = store.get_domain_check(&domain.name).await?;
    let signs = tenant_signs(store, &domain.tenant_id).await?;
    let shown = view(domain, &keys, check.as_ref(), &config.smtp.hostname, signs);
    Ok(match store.get_ses_identity(&domain.name).await? {
        Some(identity) if identity.tenant_id == domain.tenant_id => with_ses(shown, identity),
        _ => shown,
    })
}

/// What the audit log keeps of a domain: its verification and each record's status.
pub fn audit_json(view: &DomainView) -> serde_json::Value {
    serde_json::json!({
        "domain": view.domain,
        "verified": view.verified,
        "verified_by": view.verified_by,
        "inbound": view.inbound,
        "dmarc_reject": view.dmarc_reject,
        "statuses": view.records.iter()
            .map(|r| match (&r.selector, r.key_status.as_deref()) {
                (Some(selector), Some("pending" | "retiring")) => {
                    (pending_status_key(selector), r.status.clone())
                }
                _ => (r.purpose.clone(), r.status.clone()),
            })
            .collect::<BTreeMap<_, _>>(),
        "dkim_selector": view.dkim.as_ref().map(|d| d.selector.clone()),
        "flagged_at": view.flagged_at,
    })
}

/// Looks up every record of `domain` (but retiring ones) and judges each one.
async fn check_records(
    checker: &DnsChecker,
    domain: &Domain,
    keys: &[DkimKey],
    relay_hostname: &str,
) -> BTreeMap<String, String> {
    let expected: Vec<ExpectedRecord> = expected_records(domain, keys, now_ms(), relay_hostname)
        .into_iter()
        .filter(SendingRecord::checked)
        .map(|e| e.record)
        .collect();
    let mut statuses = super::check(checker, &expected).await;
    if !keys.iter().any(|k| k.status == DkimKeyStatus::Active) {
        // A domain without a key cannot pass: its DKIM record cannot exist.
        statuses.insert(RecordKind::Dkim.as_str().into(), MISSING.into());
    }
    statuses
}

/// The records a domain needs to verify: its verification TXT, and its DKIM record when the
/// tenant `signs`. A tenant that does not sign sends no DKIM signature that could fail, so
/// holding its domain back for a record nobody checks would only block it.
fn required(signs: bool) -> &'static [RecordKind] {
    if signs {
        &[RecordKind::Verification, RecordKind::Dkim]
    } else {
        &[RecordKind::Verification]
    }
}

fn required_pass(statuses: &BTreeMap<String, String>, signs: bool) -> bool {
    required(signs)
        .iter()
        .all(|k| statuses.get(k.as_str()).map(String::as_str) == Some(VERIFIED))
}

/// Whether a required record is definitely gone (missing or replaced). A failed lookup is not
/// evidence: it says nothing about what is published.
fn required_gone(statuses: &BTreeMap<String, String>, signs: bool) -> bool {
    required(signs).iter().any(|k| {
        matches!(
            statuses.get(k.as_str()).map(String::as_str),
            Some(MISSING | MISMATCH)
        )
    })
}

/// Checks a domain's records now and stores the per-record status. The domain becomes
/// verified (`verified_by = "dns"`) when its verification TXT and (if the tenant signs) its
/// DKIM record are found. A
/// check never unverifies: on a verified domain, records found gone set `flagged_at`. A
/// rotation's pending key whose record is found becomes the signing key. `action` names the
/// change in the audit log (`domain.verify`, `domain.recheck`).
pub async fn check_and_store(
    store: &Store,
    config: &Config,
    actor: &Actor,
    checker: &DnsChecker,
    mut domain: Domain,
    action: &str,
) -> Result<DomainView> {
    let mut keys = store.list_dkim_keys(&domain.name).await?;
    let previous = store.get_domain_check(&domain.name).await?;
    let signs = tenant_signs(store, &domain.tenant_id).await?;
    let before = view(
        &domain,
        &keys,
        previous.as_ref(),
        &config.smtp.hostname,
        signs,
    );
    let mut statuses = check_records(checker, &domain, &keys, &config.smtp.hostname).await;
    let now = now_ms();
    // A rotation's key whose record is now found becomes the signing key; the old one is
    // listed as retiring for dkim.retiring_secs.
    if let Some(pending) = keys.iter().find(|k| k.status == DkimKeyStatus::Pending) {
        let status_key = pending_status_key(&pending.selector);
        if statuses.get(&status_key).map(String::as_str) == Some(VERIFIED) {
            activate(store, config, actor, &domain, pending, &keys, now).await?;
            statuses.remove(&status_key);
            statuses.insert(RecordKind::Dkim.as_str().into(), VERIFIED.into());
            keys = store.list_dkim_keys(&domain.name).await?;
        }
    }
    let passed = required_pass(&statuses, signs);
    let flagged_at = if domain.verified && required_gone(&statuses, signs) {
        previous.as_ref().and_then(|c| c.flagged_at).or(Some(now))
    } else if passed {
        None
    } else {
        previous.as_ref().and_then(|c| c.flagged_at)
    };
    let newly_verified = passed && !domain.verified;
    let check = DomainCheck {
        statuses,
        checked_at: now,
        flagged_at,
    };
    if newly_verified {
        domain.verified = true;
        domain.verified_by = Some("dns".into());
    }
    let after = view(&domain, &keys, Some(&check), &config.smtp.hostname, signs);
    let (before_json, after_json) = (audit_json(&before), audit_json(&after));
    // Only changes are logged: a daily re-check that finds everything in place adds nothing.
    let audit = (before_json != after_json).then(|| {
        let action = match (before.flagged_at, after.flagged_at) {
            (None, Some(_)) => "domain.flag",
            (Some(_), None) => "domain.unflag",
            _ => action,
        };
        crate::audit_log::entry(
            actor,
            Some(&domain.tenant_id),
            action,
            &domain.name,
            Some(before_json),
            Some(after_json),
        )
    });
    store
        .put_domain_check(
            &domain.name,
            &check,
            newly_verified.then_some("dns"),
            audit.as_ref(),
        )
        .await?;
    if after.flagged_at.is_some() && before.flagged_at.is_none() {
        tracing::warn!(domain = %domain.name, tenant = %domain.tenant_id,
            "verified domain's DNS records are gone; flagged");
    }
    Ok(after)
}

/// Switches `domain`'s signing to its `pending` key (whose record was just found); the active
/// one starts its grace period as retiring (see `dkim_rotation.rs` for the whole rotation).
async fn activate(
    store: &Store,
    config: &Config,
    actor: &Actor,
    domain: &Domain,
    pending: &DkimKey,
    keys: &[DkimKey],
    now: i64,
) -> Result<()> {
    let retiring_ms =
        i64::try_from(config.dkim.retiring_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
    let retire_at = now.saturating_add(retiring_ms);
    let old = keys
        .iter()
        .find(|k| k.status == DkimKeyStatus::Active)
        .map(|k| k.selector.clone());
    let audit = crate::audit_log::entry(
        actor,
        Some(&domain.tenant_id),
        "domain.dkim_activate",
        &domain.name,
        Some(serde_json::json!({
            "dkim_selector": old,
            "pending_selector": pending.selector,
        })),
        Some(serde_json::json!({
            "dkim_selector": pending.selector,
            "retiring_selector": old,
            "retire_at": retire_at,
        })),
    );
    if !store
        .activate_dkim_key(
            &domain.name,
            &pending.selector,
            now,
            retire_at,
            Some(&audit),
        )
        .await?
    {
        // Another check (another node, the background task) switched it first.
        return Ok(());
    }
    tracing::info!(domain = %domain.name, selector = %pending.selector, retiring = ?old,
        "DKIM record found: signing switched to the new key");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn statuses(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn dkim_is_required_only_when_the_tenant_signs() {
        // (statuses, signs, passes, gone)
        let cases = [
            (
                &[("verification", VERIFIED), ("dkim", MISSING)][..],
                false,
                true,
                false,
            ),
            (
                &[("verification", VERIFIED), ("dkim", MISSING)][..],
                true,
                false,
                true,
            ),
            (
                &[("verification", VERIFIED), ("dkim", VERIFIED)][..],
                true,
                true,
                false,
            ),
            (
                &[("verification", MISSING), ("dkim", VERIFIED)][..],
                false,
                false,
                true,
            ),
            (&[("verification", VERIFIED)][..], true, false, false),
        ];
        for (pairs, signs, passes, gone) in cases {
            let statuses = statuses(pairs);
            assert_eq!(
                required_pass(&statuses, signs),
                passes,
                "{pairs:?} signs={signs}"
            );
            assert_eq!(
                required_gone(&statuses, signs),
                gone,
                "{pairs:?} signs={signs}"
            );
        }
    }
}
