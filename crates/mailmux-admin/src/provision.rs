//! Adding a sending domain to a tenant: the name checked, a DKIM key made and sealed, the
//! verification token drawn, and the domain stored with its key in one transaction. Used by
//! `POST /api/tenants/{id}/domains` and by tenant creation with a first domain, so both go
//! through the same checks.

use mailmux_core::credential::random_id;
use mailmux_core::{Config, Domain, now_ms};
use mailmux_store::{DkimKeyStatus, Store};

use crate::auth::Actor;
use crate::dkim::{self, KeyType};
use crate::dns::sending::{self, DomainView};
use crate::error::{AdminError, Result};
use crate::lookup;

/// Adds `raw` to the tenant with a new DKIM key. `operator_verified` is the operator's
/// override that skips DNS verification. 422 for a malformed name or over `max_domains`, 409
/// when another tenant (or this one) holds it.
pub async fn add_domain(
    store: &Store,
    config: &Config,
    actor: &Actor,
    tenant_id: &str,
    raw: &str,
    key_type: KeyType,
    operator_verified: bool,
) -> Result<DomainView> {
    let tenant = lookup::tenant(store, tenant_id).await?;
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
    };
    let view = sending::view(
        &domain,
        std::slice::from_ref(&key),
        None,
        &config.smtp.hostname,
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
    Ok(view)
}
