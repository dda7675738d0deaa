//! Provisioning shared by the REST API and the CLI: creating tenants, credentials and domains
//! with the tenant's limits enforced in one place.

use mailmux_core::credential::{generate_secret, hash_secret, random_id};
use mailmux_core::{
    Credential, DnsRecord, Domain, Tenant, Tier, normalize_domain, now_ms, sending_dns_records,
};
use mailmux_store::Store;
use serde::Serialize;

use crate::error::{AdminError, Result};

pub async fn create_tenant(store: &Store, name: &str, tier: Tier) -> Result<Tenant> {
    let name = name.trim();
    if name.is_empty() {
        return Err(AdminError::Invalid("name must not be empty".into()));
    }
    let tenant = Tenant::new(random_id("t_", 16), name.to_string(), tier, now_ms());
    store.create_tenant(&tenant).await?;
    Ok(tenant)
}

pub async fn tenant(store: &Store, id: &str) -> Result<Tenant> {
    store
        .get_tenant(id)
        .await?
        .ok_or_else(|| AdminError::NotFound(format!("tenant {id} not found")))
}

/// A new SMTP credential; the password exists only in this value (the store keeps a hash).
#[derive(Debug, Serialize)]
pub struct NewCredential {
    pub id: String,
    pub tenant_id: String,
    pub username: String,
    pub password: String,
    pub created_at: i64,
}

pub async fn create_credential(store: &Store, tenant_id: &str) -> Result<NewCredential> {
    let tenant = tenant(store, tenant_id).await?;
    let max = tenant.limits.max_users;
    if max > 0 && store.count_credentials(&tenant.id).await? >= max {
        return Err(AdminError::LimitExceeded(format!(
            "tenant {} already has its maximum of {max} users (max_users)",
            tenant.id
        )));
    }
    let password = generate_secret();
    let credential = Credential {
        id: random_id("c_", 16),
        tenant_id: tenant.id.clone(),
        username: random_id("mm_", 20),
        secret_hash: hash_secret(&password),
        created_at: now_ms(),
        revoked_at: None,
    };
    store.create_credential(&credential).await?;
    Ok(NewCredential {
        id: credential.id,
        tenant_id: credential.tenant_id,
        username: credential.username,
        password,
        created_at: credential.created_at,
    })
}

#[derive(Debug, Serialize)]
pub struct DomainView {
    pub domain: String,
    pub tenant_id: String,
    pub verified: bool,
    pub verified_by: Option<String>,
    pub records: Vec<DnsRecord>,
}

impl DomainView {
    pub fn new(domain: &Domain, relay_hostname: &str) -> DomainView {
        DomainView {
            domain: domain.name.clone(),
            tenant_id: domain.tenant_id.clone(),
            verified: domain.verified,
            verified_by: domain.verified_by.clone(),
            records: sending_dns_records(domain, relay_hostname),
        }
    }
}

/// Adds a domain to a tenant. `operator_verified` is the operator's override that skips DNS
/// verification.
pub async fn add_domain(
    store: &Store,
    tenant_id: &str,
    raw_name: &str,
    operator_verified: bool,
) -> Result<Domain> {
    let tenant = tenant(store, tenant_id).await?;
    let name = normalize_domain(raw_name)
        .map_err(|e| AdminError::Invalid(format!("domain {raw_name:?}: {e}")))?;
    if let Some(existing) = store.get_domain(&name).await? {
        // Same message whoever holds it: no hint about which tenant that is.
        let _ = existing;
        return Err(AdminError::Conflict(format!(
            "domain {name} is already registered"
        )));
    }
    let max = tenant.limits.max_domains;
    if max > 0 && store.count_domains(&tenant.id).await? >= max {
        return Err(AdminError::LimitExceeded(format!(
            "tenant {} already has its maximum of {max} domains (max_domains)",
            tenant.id
        )));
    }
    let domain = Domain {
        name,
        tenant_id: tenant.id,
        verified: operator_verified,
        verified_by: operator_verified.then(|| "operator".to_string()),
        verification_token: random_id("", 32),
        created_at: now_ms(),
    };
    store.add_domain(&domain).await?;
    Ok(domain)
}
