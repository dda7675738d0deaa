//! Adding a sending domain to a tenant: the name checked, a DKIM key made and sealed, the
//! verification token drawn, and the domain stored with its key in one transaction. Used by
//! `POST /api/tenants/{id}/domains` and by tenant creation with a first domain, so both go
//! through the same checks.

use mailmux_core::config::TransportKind;
use mailmux_core::credential::random_id;
use mailmux_core::{Config, Domain, Tenant, now_ms};
use mailmux_store::{DkimKeyStatus, Store};

use crate::auth::Actor;
use crate::dkim::{self, KeyType};
use crate::dns::sending::{self, DomainView};
use crate::error::{AdminError, Result};
use crate::lookup;

/// Adds `raw` to the tenant with a new DKIM key. `operator_verified` is the operator's
/// override that skips DNS verification; given for a domain this tenant already has, it marks
/// that domain verified and keeps its DKIM key (see [`mark_verified`]). `inbound` makes
/// mailmux the domain's MX from the start (its records then include the MX). 422 for a
/// malformed name or over `max_domains`, 409 when another tenant (or, without the override,
/// this one) holds it.
#[allow(clippy::too_many_arguments)]
pub async fn add_domain(
    store: &Store,
    config: &Config,
    actor: &Actor,
    tenant_id: &str,
    raw: &str,
    key_type: KeyType,
    operator_verified: bool,
    inbound: bool,
) -> Result<DomainView> {
    let tenant = lookup::tenant(store, tenant_id).await?;
    if operator_verified && let Ok(existing) = lookup::domain(store, &tenant.id, raw).await {
        let view = mark_verified(store, config, actor, existing).await?;
        if inbound && !view.inbound {
            let domain = lookup::domain(store, &tenant.id, raw).await?;
            return set_inbound(store, config, actor, domain, true).await;
        }
        return Ok(view);
    }
    let name = lookup::available_domain(store, raw).await?;
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
    let selector = dkim::selector_for(now);
    let key = dkim::new_key(
        config,
        &name,
        &selector,
        key_type,
        DkimKeyStatus::Active,
        now,
    )
    .await?;
    let domain = Domain {
        name: name.clone(),
        tenant_id: tenant.id.clone(),
        verified: operator_verified,
        verified_by: operator_verified.then(|| "operator".to_string()),
        verification_token: random_id("", 32),
        created_at: now,
        inbound,
        dmarc_reject: false,
    };
    let view = sending::view(
        &domain,
        std::slice::from_ref(&key),
        None,
        &config.smtp.hostname,
        tenant.features.dkim_signing,
    );
    let audit = crate::audit_log::entry(
        actor,
        Some(&tenant.id),
        "domain.add",
        &name,
        None,
        Some(sending::audit_json(&view)),
    );
    // The check above and this insert race with another request for the same name; the
    // primary key settles it (409 for the loser).
    store
        .add_domain_with_dkim(&domain, &key, max, Some(&audit))
        .await
        .map_err(|e| match AdminError::from(e) {
            AdminError::Conflict(_) => lookup::domain_taken(&name),
            other => other,
        })?;
    request_ses_sync(store, config, &tenant, now).await;
    Ok(view)
}

/// For a tenant on the `ses` transport, makes its SES sync due now, so provisioning a new
/// domain's identity (or releasing a deleted one's) starts at once (the background job, or the
/// caller, runs it). Never fails the domain change: it is made already, and a sync that cannot
/// be scheduled now still runs at the tenant's next periodic sync.
pub(crate) async fn request_ses_sync(store: &Store, config: &Config, tenant: &Tenant, now: i64) {
    if tenant.transport.unwrap_or(config.delivery.transport) != TransportKind::Ses {
        return;
    }
    let name = config.ses.tenant_name(&tenant.id);
    if let Err(error) = store.request_ses_sync(&tenant.id, &name, now).await {
        tracing::warn!(tenant = %tenant.id, %error, "cannot schedule the SES sync; the periodic one will run it");
    }
}

/// The operator's override on a domain the tenant already has: verified without DNS, its DKIM
/// key untouched. Deleting and re-adding the domain instead would replace the key, and with it
/// the DKIM record the tenant may already have published.
async fn mark_verified(
    store: &Store,
    config: &Config,
    actor: &Actor,
    mut domain: Domain,
) -> Result<DomainView> {
    let before = sending::load_view(store, config, &domain).await?;
    if domain.verified {
        return Ok(before);
    }
    domain.verified = true;
    domain.verified_by = Some("operator".to_string());
    let keys = store.list_dkim_keys(&domain.name).await?;
    let check = store.get_domain_check(&domain.name).await?;
    let tenant = lookup::tenant(store, &domain.tenant_id).await?;
    let after = sending::view(
        &domain,
        &keys,
        check.as_ref(),
        &config.smtp.hostname,
        tenant.features.dkim_signing,
    );
    let audit = crate::audit_log::entry(
        actor,
        Some(&domain.tenant_id),
        "domain.verify_override",
        &domain.name,
        Some(sending::audit_json(&before)),
        Some(sending::audit_json(&after)),
    );
    store
        .set_domain_verified(&domain.name, Some("operator"), Some(&audit))
        .await?;
    Ok(after)
}

/// Turns inbound mail on or off for a domain the tenant holds (`PUT` on the domain with
/// `{"inbound": …}`, `mailmux domain update --inbound`): on, the MX listener accepts mail for
/// the addresses its receipt rules match and the records list the MX. Unchanged: no audit entry.
pub async fn set_inbound(
    store: &Store,
    config: &Config,
    actor: &Actor,
    domain: Domain,
    inbound: bool,
) -> Result<DomainView> {
    set_flag(store, config, actor, domain, Flag::Inbound, inbound).await
}

/// Whether DMARC `p=reject` failures are refused on this inbound domain (`PUT` on the domain
/// with `{"dmarc_reject": …}`, `mailmux domain update --dmarc-reject`).
pub async fn set_dmarc_reject(
    store: &Store,
    config: &Config,
    actor: &Actor,
    domain: Domain,
    dmarc_reject: bool,
) -> Result<DomainView> {
    set_flag(
        store,
        config,
        actor,
        domain,
        Flag::DmarcReject,
        dmarc_reject,
    )
    .await
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Flag {
    Inbound,
    DmarcReject,
}

async fn set_flag(
    store: &Store,
    config: &Config,
    actor: &Actor,
    mut domain: Domain,
    flag: Flag,
    value: bool,
) -> Result<DomainView> {
    let before = sending::load_view(store, config, &domain).await?;
    let (field, name) = match flag {
        Flag::Inbound => (&mut domain.inbound, "inbound"),
        Flag::DmarcReject => (&mut domain.dmarc_reject, "dmarc_reject"),
    };
    if *field == value {
        return Ok(before);
    }
    *field = value;
    let keys = store.list_dkim_keys(&domain.name).await?;
    let check = store.get_domain_check(&domain.name).await?;
    let after = sending::view(
        &domain,
        &keys,
        check.as_ref(),
        &config.smtp.hostname,
        before.dkim_signing,
    );
    let action = format!("domain.{name}_{}", if value { "on" } else { "off" });
    let audit = crate::audit_log::entry(
        actor,
        Some(&domain.tenant_id),
        &action,
        &domain.name,
        Some(sending::audit_json(&before)),
        Some(sending::audit_json(&after)),
    );
    match flag {
        Flag::Inbound => {
            store
                .set_domain_inbound(&domain.tenant_id, &domain.name, value, Some(&audit))
                .await?
        }
        Flag::DmarcReject => {
            store
                .set_domain_dmarc_reject(&domain.tenant_id, &domain.name, value, Some(&audit))
                .await?
        }
    }
    Ok(after)
}
