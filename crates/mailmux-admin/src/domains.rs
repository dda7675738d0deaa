//! `/api/tenants/{id}/domains[/{domain}[/verify]]`: a tenant's sending domains. Adding one
//! generates its DKIM key and verification token and answers with every DNS record to publish;
//! verifying looks them up and records a status per record. A domain sends once its
//! verification TXT and DKIM record are found (or the operator said so).
//!
//! With a DKIM rotation in progress (`dkim_rotation.rs`) the records also list the new key
//! (`key_status: pending`; once a check finds it, signing switches to it) and, after the switch,
//! the old one (`status: retiring`, keep it published) until its grace period ends.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use mailmux_core::credential::random_id;
use mailmux_core::domain::verification_record_name;
use mailmux_core::{Config, Domain, normalize_domain, now_ms, sending_dns_records};
use mailmux_store::{DkimKey, DkimKeyStatus, DomainCheck, MasterKey, Store};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::AdminState;
use crate::auth::{Actor, Principal};
use crate::dkim::{self, KeyType};
use crate::dns_check::{self, DnsChecker, RecordKind};
use crate::error::{AdminError, ErrorBody, Result};
use crate::extract::{ApiJson, ApiQuery};
use crate::pagination::{self, PageQuery};
use crate::tenants::Success;

/// A DNS record the tenant must publish.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct DnsRecordView {
    /// `TXT` (and `MX` once inbound mail exists).
    #[serde(rename = "type")]
    pub record_type: String,
    pub name: String,
    pub value: String,
    /// `pending` (not checked yet), `verified`, `missing`, `mismatch` (something else is
    /// published there) or `error` (the lookup failed).
    pub status: String,
    /// `verification`, `dkim`, `spf` or `dmarc`.
    pub purpose: String,
    /// Whether the domain may send only once this record is found.
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
    /// `dns` or `operator`, once verified.
    pub verified_by: Option<String>,
    pub records: Vec<DnsRecordView>,
    pub dkim: Option<DkimView>,
    /// Last DNS check (Unix ms).
    pub checked_at: Option<i64>,
    /// Set when a re-check found a required record gone (the domain still sends; see the
    /// audit log and fix the records).
    pub flagged_at: Option<i64>,
    pub created_at: i64,
}

/// `POST /api/tenants/{id}/domains`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddDomain {
    /// The domain; internationalised names are stored as A-labels.
    pub domain: String,
    /// DKIM key type, default `rsa` (2048 bits).
    #[serde(default)]
    pub key_type: Option<KeyType>,
    /// Operator only: mark verified without a DNS check.
    #[serde(default)]
    pub verified: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DomainList {
    pub domains: Vec<DomainView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// Status shown for a retiring DKIM record: keep it published (it is not checked).
pub const RETIRING: &str = "retiring";

/// What one record should be, and which rule judges it.
pub(crate) struct Expected {
    kind: RecordKind,
    record_type: &'static str,
    name: String,
    value: String,
    /// Where its status is kept in the domain's check: the kind (`dkim` for the active key),
    /// or `dkim:<selector>` for a rotation's pending key.
    status_key: String,
    /// DKIM records: the key they publish.
    key: Option<(String, DkimKeyStatus, Option<i64>)>,
}

impl Expected {
    fn required(&self) -> bool {
        self.kind.required() && self.status_key == self.kind.as_str()
    }

    /// Retiring records are listed, not looked up: their verdict is "keep it".
    fn checked(&self) -> bool {
        !matches!(self.key, Some((_, DkimKeyStatus::Retiring, _)))
    }
}

/// The status key of a rotation's pending key `selector` in a domain's check.
pub(crate) fn pending_status_key(selector: &str) -> String {
    format!("{}:{selector}", RecordKind::Dkim.as_str())
}

/// Every record of `domain`, in the order shown: verification, DKIM (active, pending,
/// retiring), SPF, DMARC. Retiring keys whose grace period ended by `now` are left out.
pub(crate) fn expected_records(
    domain: &Domain,
    keys: &[DkimKey],
    now: i64,
    relay_hostname: &str,
) -> Vec<Expected> {
    let mut out = Vec::new();
    // Verification, SPF and DMARC values come from core (one definition for CLI and API).
    for record in sending_dns_records(domain, relay_hostname) {
        let kind = if record.name == verification_record_name(&domain.name) {
            RecordKind::Verification
        } else if record.name.starts_with("_dmarc.") {
            RecordKind::Dmarc
        } else {
            RecordKind::Spf
        };
        out.push(Expected {
            kind,
            record_type: "TXT",
            name: record.name,
            value: record.value,
            status_key: kind.as_str().to_string(),
            key: None,
        });
    }
    let dkim = keys
        .iter()
        .filter(|k| k.status != DkimKeyStatus::Retiring || k.retire_at.is_some_and(|at| at > now))
        .map(|key| Expected {
            kind: RecordKind::Dkim,
            record_type: "TXT",
            name: format!("{}._domainkey.{}", key.selector, domain.name),
            value: dkim::record_value(&key.key_type, &key.public_key),
            status_key: match key.status {
                DkimKeyStatus::Active => RecordKind::Dkim.as_str().to_string(),
                _ => pending_status_key(&key.selector),
            },
            key: Some((key.selector.clone(), key.status, key.retire_at)),
        });
    let at = 1.min(out.len());
    out.splice(at..at, dkim);
    out
}

pub(crate) fn record_view(expected: Expected, check: Option<&DomainCheck>) -> DnsRecordView {
    let status = if expected.checked() {
        check
            .and_then(|c| c.statuses.get(&expected.status_key).cloned())
            .unwrap_or_else(|| dns_check::PENDING.to_string())
    } else {
        RETIRING.to_string()
    };
    let required = expected.required();
    let (selector, key_status, retire_at) = match expected.key {
        Some((selector, status, retire_at)) => (
            Some(selector),
            Some(status.as_str().to_string()),
            retire_at.filter(|_| status == DkimKeyStatus::Retiring),
        ),
        None => (None, None, None),
    };
    DnsRecordView {
        status,
        record_type: expected.record_type.to_string(),
        purpose: expected.kind.as_str().to_string(),
        required,
        name: expected.name,
        value: expected.value,
        selector,
        key_status,
        retire_at,
    }
}

fn view(
    domain: &Domain,
    keys: &[DkimKey],
    check: Option<&DomainCheck>,
    relay_hostname: &str,
) -> DomainView {
    let records = expected_records(domain, keys, now_ms(), relay_hostname)
        .into_iter()
        .map(|e| record_view(e, check))
        .collect();
    let active = keys.iter().find(|k| k.status == DkimKeyStatus::Active);
    DomainView {
        domain: domain.name.clone(),
        tenant_id: domain.tenant_id.clone(),
        verified: domain.verified,
        verified_by: domain.verified_by.clone(),
        records,
        dkim: active.map(|k| DkimView {
            selector: k.selector.clone(),
            key_type: KeyType::from_name(&k.key_type),
        }),
        checked_at: check.map(|c| c.checked_at),
        flagged_at: check.and_then(|c| c.flagged_at),
        created_at: domain.created_at,
    }
}

async fn load_view(store: &Store, config: &Config, domain: &Domain) -> Result<DomainView> {
    let keys = store.list_dkim_keys(&domain.name).await?;
    let check = store.get_domain_check(&domain.name).await?;
    Ok(view(domain, &keys, check.as_ref(), &config.smtp.hostname))
}

pub(crate) fn not_found(name: &str) -> AdminError {
    AdminError::NotFound(format!("domain {name} not found"))
}

fn audit_json(view: &DomainView) -> serde_json::Value {
    serde_json::json!({
        "domain": view.domain,
        "verified": view.verified,
        "verified_by": view.verified_by,
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

// ---- operations (shared with the CLI) ------------------------------------------------------

/// The normalised name if no tenant holds it yet; 422 for a malformed name, 409 if taken.
pub async fn check_available(store: &Store, raw: &str) -> Result<String> {
    let name =
        normalize_domain(raw).map_err(|e| AdminError::Invalid(format!("domain {raw:?}: {e}")))?;
    if store.get_domain(&name).await?.is_some() {
        // Same message whoever holds it: no hint about which tenant that is.
        return Err(AdminError::Conflict(format!(
            "domain {name} is already registered"
        )));
    }
    Ok(name)
}

/// One domain of this tenant; 404 if it does not exist or is another tenant's.
pub async fn get_domain(store: &Store, tenant_id: &str, raw: &str) -> Result<Domain> {
    let name = normalize_domain(raw).map_err(|_| not_found(raw))?;
    match store.get_domain(&name).await? {
        Some(domain) if domain.tenant_id == tenant_id => Ok(domain),
        _ => Err(not_found(&name)),
    }
}

/// Adds a domain to a tenant with a new DKIM key. `operator_verified` is the operator's
/// override that skips DNS verification.
pub async fn add(
    store: &Store,
    config: &Config,
    actor: &Actor,
    tenant_id: &str,
    raw: &str,
    key_type: KeyType,
    operator_verified: bool,
) -> Result<DomainView> {
    let tenant = crate::tenants::get(store, tenant_id).await?;
    let name = check_available(store, raw).await?;
    let max = tenant.limits.max_domains;
    // Checked here first so that a refused request costs no key generation; the store checks
    // again, exactly, as it inserts.
    if max > 0 && store.count_domains(&tenant.id).await? >= max {
        return Err(AdminError::LimitExceeded(format!(
            "tenant {} already has its maximum of {max} domains (max_domains)",
            tenant.id
        )));
    }
    let now = now_ms();
    let generated = dkim::generate_blocking(key_type).await?;
    let selector = dkim::selector_for(now);
    let master = MasterKey::load_or_create(&config.storage.data_dir.join("master.key"))?;
    let sealed = master.seal(
        &generated.private_pkcs8,
        &DkimKey::seal_context(&name, &selector),
    )?;
    let domain = Domain {
        name: name.clone(),
        tenant_id: tenant.id.clone(),
        verified: operator_verified,
        verified_by: operator_verified.then(|| "operator".to_string()),
        verification_token: random_id("", 32),
        created_at: now,
    };
    let key = DkimKey {
        domain: name.clone(),
        selector,
        key_type: generated.key_type.as_str().to_string(),
        public_key: generated.public_key,
        private_key_sealed: sealed,
        created_at: now,
        status: DkimKeyStatus::Active,
        activated_at: Some(now),
        retire_at: None,
        updated_at: now,
    };
    let view = view(
        &domain,
        std::slice::from_ref(&key),
        None,
        &config.smtp.hostname,
    );
    let audit = crate::audit::entry(
        actor,
        Some(&tenant.id),
        "domain.add",
        &name,
        None,
        Some(audit_json(&view)),
    );
    // The check above and this insert race with another request for the same name; the
    // primary key settles it (409 for the loser).
    store
        .add_domain_with_dkim(&domain, &key, max, Some(&audit))
        .await
        .map_err(|e| match AdminError::from(e) {
            AdminError::Conflict(_) => {
                AdminError::Conflict(format!("domain {name} is already registered"))
            }
            other => other,
        })?;
    Ok(view)
}

pub async fn show(
    store: &Store,
    config: &Config,
    tenant_id: &str,
    raw: &str,
) -> Result<DomainView> {
    crate::tenants::get(store, tenant_id).await?;
    let domain = get_domain(store, tenant_id, raw).await?;
    load_view(store, config, &domain).await
}

pub async fn list(
    store: &Store,
    config: &Config,
    tenant_id: &str,
    page: &PageQuery,
) -> Result<DomainList> {
    crate::tenants::get(store, tenant_id).await?;
    let limit = page.limit()?;
    let after = page.cursor.as_deref().map(pagination::decode).transpose()?;
    let domains = store
        .list_domains_page(tenant_id, after.as_deref(), limit + 1)
        .await?;
    let (domains, next) = pagination::split_page(domains, limit, |d| pagination::encode(&d.name));
    let mut views = Vec::with_capacity(domains.len());
    for domain in &domains {
        views.push(load_view(store, config, domain).await?);
    }
    Ok(DomainList {
        domains: views,
        next_cursor: next,
    })
}

pub async fn delete(
    store: &Store,
    config: &Config,
    actor: &Actor,
    tenant_id: &str,
    raw: &str,
) -> Result<()> {
    crate::tenants::get(store, tenant_id).await?;
    let domain = get_domain(store, tenant_id, raw).await?;
    let before = load_view(store, config, &domain).await?;
    let audit = crate::audit::entry(
        actor,
        Some(tenant_id),
        "domain.delete",
        &domain.name,
        Some(audit_json(&before)),
        None,
    );
    if !store
        .delete_domain(tenant_id, &domain.name, Some(&audit))
        .await?
    {
        return Err(not_found(&domain.name));
    }
    Ok(())
}

/// Looks up every record of `domain` (but retiring ones) and judges each one.
async fn check_records(
    checker: &DnsChecker,
    domain: &Domain,
    keys: &[DkimKey],
    relay_hostname: &str,
) -> BTreeMap<String, String> {
    let expected: Vec<Expected> = expected_records(domain, keys, now_ms(), relay_hostname)
        .into_iter()
        .filter(Expected::checked)
        .collect();
    // The lookups run together: a verification costs one round trip (or one timeout), not four.
    let answers = futures::future::join_all(expected.iter().map(|e| checker.txt(&e.name))).await;
    let mut statuses = BTreeMap::new();
    for (expected, answer) in expected.iter().zip(answers) {
        let status = expected.kind.judge(&expected.value, &answer);
        if let dns_check::Answer::Failed(why) = &answer {
            tracing::info!(name = %expected.name, %why, "DNS lookup failed during verification");
        }
        statuses.insert(expected.status_key.clone(), status.to_string());
    }
    if !keys.iter().any(|k| k.status == DkimKeyStatus::Active) {
        // A domain without a key cannot pass: its DKIM record cannot exist.
        statuses.insert(RecordKind::Dkim.as_str().into(), dns_check::MISSING.into());
    }
    statuses
}

fn required_pass(statuses: &BTreeMap<String, String>) -> bool {
    [RecordKind::Verification, RecordKind::Dkim]
        .iter()
        .all(|k| statuses.get(k.as_str()).map(String::as_str) == Some(dns_check::VERIFIED))
}

/// Whether a required record is definitely gone (missing or replaced). A failed lookup is not
/// evidence: it says nothing about what is published.
fn required_gone(statuses: &BTreeMap<String, String>) -> bool {
    [RecordKind::Verification, RecordKind::Dkim]
        .iter()
        .any(|k| {
            matches!(
                statuses.get(k.as_str()).map(String::as_str),
                Some(dns_check::MISSING | dns_check::MISMATCH)
            )
        })
}

/// Checks a domain's records now and stores the per-record status. The domain becomes
/// verified (`verified_by = "dns"`) when its verification TXT and DKIM record are found. A
/// check never unverifies: on a verified domain, records found gone set `flagged_at`.
pub async fn verify(
    store: &Store,
    config: &Config,
    actor: &Actor,
    tenant_id: &str,
    raw: &str,
) -> Result<DomainView> {
    crate::tenants::get(store, tenant_id).await?;
    let domain = get_domain(store, tenant_id, raw).await?;
    let checker = DnsChecker::new(&config.delivery.dns_servers)?;
    check_and_store(store, config, actor, &checker, domain, "domain.verify").await
}

pub(crate) async fn check_and_store(
    store: &Store,
    config: &Config,
    actor: &Actor,
    checker: &DnsChecker,
    mut domain: Domain,
    action: &str,
) -> Result<DomainView> {
    let mut keys = store.list_dkim_keys(&domain.name).await?;
    let previous = store.get_domain_check(&domain.name).await?;
    let before = view(&domain, &keys, previous.as_ref(), &config.smtp.hostname);
    let mut statuses = check_records(checker, &domain, &keys, &config.smtp.hostname).await;
    let now = now_ms();
    // A rotation's key whose record is now found becomes the signing key; the old one is
    // listed as retiring for dkim.retiring_secs.
    if let Some(pending) = keys.iter().find(|k| k.status == DkimKeyStatus::Pending) {
        let status_key = pending_status_key(&pending.selector);
        if statuses.get(&status_key).map(String::as_str) == Some(dns_check::VERIFIED) {
            crate::dkim_rotation::activate(store, config, actor, &domain, pending, &keys, now)
                .await?;
            statuses.remove(&status_key);
            statuses.insert(RecordKind::Dkim.as_str().into(), dns_check::VERIFIED.into());
            keys = store.list_dkim_keys(&domain.name).await?;
        }
    }
    let passed = required_pass(&statuses);
    let flagged_at = if domain.verified && required_gone(&statuses) {
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
    let after = view(&domain, &keys, Some(&check), &config.smtp.hostname);
    let (before_json, after_json) = (audit_json(&before), audit_json(&after));
    // Only changes are logged: a daily re-check that finds everything in place adds nothing.
    let audit = (before_json != after_json).then(|| {
        let action = match (before.flagged_at, after.flagged_at) {
            (None, Some(_)) => "domain.flag",
            (Some(_), None) => "domain.unflag",
            _ => action,
        };
        crate::audit::entry(
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

/// What a re-check run did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RecheckSummary {
    pub checked: usize,
    /// Domains flagged by this run (they were not flagged before).
    pub flagged: usize,
    /// Return-path domains in use that were checked.
    pub return_paths_checked: usize,
    /// Return paths whose records were found gone: delivery no longer uses them.
    pub return_paths_dropped: usize,
}

/// Re-checks every domain verified by DNS (operator-verified ones are the operator's word and
/// may have no records at all), and every return path in use. Run daily by
/// [`crate::domain_rechecks`].
pub async fn recheck_verified(store: &Store, config: &Config) -> Result<RecheckSummary> {
    let checker = DnsChecker::new(&config.delivery.dns_servers)?;
    let mut summary = RecheckSummary::default();
    for domain in store.list_domains_verified_by("dns").await? {
        let was_flagged = store
            .get_domain_check(&domain.name)
            .await?
            .and_then(|c| c.flagged_at)
            .is_some();
        let name = domain.name.clone();
        match check_and_store(
            store,
            config,
            &Actor::system(),
            &checker,
            domain,
            "domain.recheck",
        )
        .await
        {
            Ok(view) => {
                summary.checked += 1;
                if view.flagged_at.is_some() && !was_flagged {
                    summary.flagged += 1;
                }
            }
            // One domain's failure (deleted meanwhile…) does not stop the others.
            Err(error) => tracing::warn!(domain = %name, %error, "re-check failed"),
        }
    }
    for setting in store.list_verified_return_paths().await? {
        let name = setting.domain.clone();
        match crate::return_path::check_and_store(
            store,
            config,
            &Actor::system(),
            &checker,
            setting,
            "domain.return_path_recheck",
        )
        .await
        {
            Ok(after) => {
                summary.return_paths_checked += 1;
                if after.verified().is_none() {
                    summary.return_paths_dropped += 1;
                }
            }
            Err(error) => tracing::warn!(domain = %name, %error, "return-path re-check failed"),
        }
    }
    Ok(summary)
}

// ---- handlers -------------------------------------------------------------------------------

/// Adds a domain: generates its DKIM key and returns the DNS records to publish.
#[utoipa::path(
    post, path = "/api/tenants/{id}/domains", tag = "domains",
    params(("id" = String, Path, description = "Tenant id")),
    request_body = AddDomain,
    responses(
        (status = 201, body = DomainView),
        (status = 400, body = ErrorBody),
        (status = 403, description = "`verified` needs the operator token", body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "Another tenant holds the domain", body = ErrorBody),
        (status = 422, description = "Invalid name, or over max_domains", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn add_domain(
    State(state): State<AdminState>,
    principal: Principal,
    Path(id): Path<String>,
    ApiJson(request): ApiJson<AddDomain>,
) -> Result<(StatusCode, Json<DomainView>)> {
    principal.scope(&id)?;
    if request.verified {
        principal.require_operator("marking a domain verified without DNS")?;
    }
    let view = add(
        &state.store,
        &state.config,
        &principal.actor(),
        &id,
        &request.domain,
        request.key_type.unwrap_or_default(),
        request.verified,
    )
    .await?;
    Ok((StatusCode::CREATED, Json(view)))
}

/// A tenant's domains.
#[utoipa::path(
    get, path = "/api/tenants/{id}/domains", tag = "domains",
    params(("id" = String, Path, description = "Tenant id"), PageQuery),
    responses((status = 200, body = DomainList), (status = 404, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn list_domains(
    State(state): State<AdminState>,
    principal: Principal,
    Path(id): Path<String>,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> Result<Json<DomainList>> {
    principal.scope(&id)?;
    Ok(Json(list(&state.store, &state.config, &id, &page).await?))
}

/// One domain with its records and their last status.
#[utoipa::path(
    get, path = "/api/tenants/{id}/domains/{domain}", tag = "domains",
    params(
        ("id" = String, Path, description = "Tenant id"),
        ("domain" = String, Path, description = "Domain name"),
    ),
    responses((status = 200, body = DomainView), (status = 404, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn show_domain(
    State(state): State<AdminState>,
    principal: Principal,
    Path((id, domain)): Path<(String, String)>,
) -> Result<Json<DomainView>> {
    principal.scope(&id)?;
    Ok(Json(show(&state.store, &state.config, &id, &domain).await?))
}

/// Removes a domain and its DKIM key; mail from it is refused from then on.
#[utoipa::path(
    delete, path = "/api/tenants/{id}/domains/{domain}", tag = "domains",
    params(
        ("id" = String, Path, description = "Tenant id"),
        ("domain" = String, Path, description = "Domain name"),
    ),
    responses((status = 200, body = Success), (status = 404, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn delete_domain(
    State(state): State<AdminState>,
    principal: Principal,
    Path((id, domain)): Path<(String, String)>,
) -> Result<Json<Success>> {
    principal.scope(&id)?;
    delete(
        &state.store,
        &state.config,
        &principal.actor(),
        &id,
        &domain,
    )
    .await?;
    Ok(Success::json())
}

/// Looks the domain's records up in DNS now and records a status per record.
#[utoipa::path(
    post, path = "/api/tenants/{id}/domains/{domain}/verify", tag = "domains",
    params(
        ("id" = String, Path, description = "Tenant id"),
        ("domain" = String, Path, description = "Domain name"),
    ),
    responses(
        (status = 200, description = "Checked; `verified` says whether it passed", body = DomainView),
        (status = 404, body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn verify_domain(
    State(state): State<AdminState>,
    principal: Principal,
    Path((id, domain)): Path<(String, String)>,
) -> Result<Json<DomainView>> {
    principal.scope(&id)?;
    Ok(Json(
        verify(
            &state.store,
            &state.config,
            &principal.actor(),
            &id,
            &domain,
        )
        .await?,
    ))
}
