//! Finding what a request names: a tenant, or one of its domains. Every resource answers 404
//! for a missing one and for another tenant's alike, so a tenant key learns nothing about
//! other tenants; the messages are made here once.

use mailmux_core::{Domain, Tenant, normalize_domain};
use mailmux_store::Store;

use crate::auth::tenant_not_found;
use crate::error::{AdminError, Result};

/// The tenant `id`; 404 when there is none.
pub async fn tenant(store: &Store, id: &str) -> Result<Tenant> {
    store
        .get_tenant(id)
        .await?
        .ok_or_else(|| tenant_not_found(id))
}

/// One domain of this tenant; 404 if it does not exist or is another tenant's.
pub async fn domain(store: &Store, tenant_id: &str, raw: &str) -> Result<Domain> {
    let name = normalize_domain(raw).map_err(|_| domain_not_found(raw))?;
    match store.get_domain(&name).await? {
        Some(domain) if domain.tenant_id == tenant_id => Ok(domain),
        _ => Err(domain_not_found(&name)),
    }
}

pub fn domain_not_found(name: &str) -> AdminError {
    AdminError::NotFound(format!("domain {name} not found"))
}

/// The normalised name if no tenant holds it yet; 422 for a malformed name, 409 if taken.
pub async fn available_domain(store: &Store, raw: &str) -> Result<String> {
    let name =
        normalize_domain(raw).map_err(|e| AdminError::Invalid(format!("domain {raw:?}: {e}")))?;
    if store.get_domain(&name).await?.is_some() {
        return Err(domain_taken(&name));
    }
    Ok(name)
}

/// The same message whoever holds the domain: no hint about which tenant that is.
pub fn domain_taken(name: &str) -> AdminError {
    AdminError::Conflict(format!("domain {name} is already registered"))
}
