//! Tenants, their credentials and domains with their limits: created, read, changed, deleted;
//! max_users and max_domains decided where the row is inserted; every change committed with its
//! audit entry.

use mailmux_core::credential::{hash_secret, random_id};
use mailmux_core::{Credential, Domain, Tenant, TenantStatus, Tier};

use super::{accept_audit_entries, dkim_key, new_credential, new_tenant, refuse_audit_entries};
use crate::{AuditEntry, DkimKeyStatus, Store, StoreError};

pub(super) async fn tenants(store: &Store) {
    let mut tenant = new_tenant(Tier::Starter);
    store.create_tenant(&tenant, None).await.unwrap();
    assert!(matches!(
        store.create_tenant(&tenant, None).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(
        store.get_tenant(&tenant.id).await.unwrap().as_ref(),
        Some(&tenant)
    );
    tenant.status = TenantStatus::Paused;
    tenant.status_reason = Some("reputation review".into());
    tenant.limits.max_messages_per_day = 5;
    tenant.features.webhooks = true;
    tenant.enabled = false;
    store.update_tenant(&tenant, None).await.unwrap();
    let updated = store.get_tenant(&tenant.id).await.unwrap().unwrap();
    // Every write dates itself, whatever the caller passed.
    assert!(updated.updated_at > tenant.updated_at, "updated_at moves");
    assert_eq!(updated.created_at, tenant.created_at, "created_at does not");
    tenant.updated_at = updated.updated_at;
    assert_eq!(updated, tenant);
    assert!(
        store
            .list_tenants()
            .await
            .unwrap()
            .iter()
            .any(|t| t.id == tenant.id)
    );
    assert!(store.delete_tenant(&tenant.id, None).await.unwrap());
    assert!(store.get_tenant(&tenant.id).await.unwrap().is_none());
    assert!(!store.delete_tenant(&tenant.id, None).await.unwrap());
}

pub(super) async fn domains_and_credentials(store: &Store) {
    let a = new_tenant(Tier::Free);
    let b = new_tenant(Tier::Free);
    store.create_tenant(&a, None).await.unwrap();
    store.create_tenant(&b, None).await.unwrap();
    let name = format!("{}.example.test", random_id("d", 8));
    let domain = Domain {
        name: name.clone(),
        tenant_id: a.id.clone(),
        verified: false,
        verified_by: None,
        verification_token: "tok".into(),
        created_at: 1,
        inbound: false,
        dmarc_reject: false,
    };
    store.add_domain(&domain).await.unwrap();
    // One owner per domain, whoever asks.
    let stolen = Domain {
        tenant_id: b.id.clone(),
        ..domain.clone()
    };
    assert!(matches!(
        store.add_domain(&stolen).await,
        Err(StoreError::Conflict(_))
    ));
    store
        .set_domain_verified(&name, Some("operator"), None)
        .await
        .unwrap();
    let loaded = store.get_domain(&name).await.unwrap().unwrap();
    assert!(loaded.verified);
    assert_eq!(loaded.verified_by.as_deref(), Some("operator"));
    assert_eq!(store.count_domains(&a.id).await.unwrap(), 1);
    assert_eq!(store.list_domains(&b.id).await.unwrap().len(), 0);
    // Inbound is off until turned on, and only the owner turns it on.
    assert!(!loaded.inbound);
    assert!(matches!(
        store.set_domain_inbound(&b.id, &name, true, None).await,
        Err(StoreError::NotFound(_))
    ));
    store
        .set_domain_inbound(&a.id, &name, true, None)
        .await
        .unwrap();
    assert!(store.get_domain(&name).await.unwrap().unwrap().inbound);
    store
        .set_domain_dmarc_reject(&a.id, &name, true, None)
        .await
        .unwrap();
    assert!(store.get_domain(&name).await.unwrap().unwrap().dmarc_reject);
    // The primary domain is the first one added, not the first by name.
    let later = Domain {
        name: format!("a{name}"),
        created_at: 2,
        ..domain.clone()
    };
    store.add_domain(&later).await.unwrap();
    let primary = store.primary_domains(&[&a.id, &b.id]).await.unwrap();
    assert_eq!(primary.get(&a.id), Some(&name));
    assert!(!primary.contains_key(&b.id), "no domain, no entry");
    assert!(store.delete_domain(&a.id, &later.name, None).await.unwrap());

    let credential = Credential {
        id: random_id("c_", 16),
        tenant_id: a.id.clone(),
        username: random_id("mm_", 20),
        secret_hash: hash_secret("s3cret"),
        created_at: 2,
        revoked_at: None,
        rate_per_second: None,
        rate_per_minute: Some(30),
    };
    store.create_credential(&credential, 0, None).await.unwrap();
    assert_eq!(
        store
            .find_credential(&credential.username)
            .await
            .unwrap()
            .as_ref(),
        Some(&credential)
    );
    assert_eq!(store.count_credentials(&a.id).await.unwrap(), 1);
    assert!(
        !store
            .revoke_credential(&b.id, &credential.id, 3, None)
            .await
            .unwrap()
    );
    assert!(
        store
            .revoke_credential(&a.id, &credential.id, 3, None)
            .await
            .unwrap()
    );
    assert_eq!(store.count_credentials(&a.id).await.unwrap(), 0);
    let revoked = store
        .find_credential(&credential.username)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(revoked.revoked_at, Some(3));

    // Deleting a tenant takes its domains and credentials with it.
    assert!(store.delete_tenant(&a.id, None).await.unwrap());
    assert!(store.get_domain(&name).await.unwrap().is_none());
    assert!(
        store
            .find_credential(&credential.username)
            .await
            .unwrap()
            .is_none()
    );
}

/// max_users and max_domains are decided where the row is inserted: twelve concurrent creations
/// against a limit of three leave exactly three, and the others get `LimitReached`.
pub(super) async fn user_and_domain_limits_hold_under_concurrency(store: &Store) {
    let tenant = new_tenant(Tier::Starter);
    store.create_tenant(&tenant, None).await.unwrap();
    let mut tasks = Vec::new();
    for n in 0..12 {
        let store = store.clone();
        let tenant_id = tenant.id.clone();
        tasks.push(tokio::spawn(async move {
            let credential = new_credential(&tenant_id);
            let user = store.create_credential(&credential, 3, None).await;
            let name = format!("{}.example.test", random_id(&format!("l{n}"), 8));
            let domain = Domain {
                name: name.clone(),
                tenant_id,
                verified: false,
                verified_by: None,
                verification_token: "tok".into(),
                created_at: 1,
                inbound: false,
                dmarc_reject: false,
            };
            let key = dkim_key(&name, "mm1", DkimKeyStatus::Active, 1);
            let domain = store.add_domain_with_dkim(&domain, &key, 3, None).await;
            (user, domain)
        }));
    }
    let (mut users, mut domains) = (0, 0);
    for task in tasks {
        let (user, domain) = task.await.unwrap();
        match user {
            Ok(()) => users += 1,
            Err(StoreError::LimitReached(why)) => assert!(why.contains("max_users"), "{why}"),
            Err(other) => panic!("credential: {other}"),
        }
        match domain {
            Ok(()) => domains += 1,
            Err(StoreError::LimitReached(why)) => assert!(why.contains("max_domains"), "{why}"),
            Err(other) => panic!("domain: {other}"),
        }
    }
    assert_eq!((users, domains), (3, 3));
    assert_eq!(store.count_credentials(&tenant.id).await.unwrap(), 3);
    assert_eq!(store.count_domains(&tenant.id).await.unwrap(), 3);
}

/// A change and its audit entry are one transaction: when the entry cannot be written the
/// change is undone, and a change that does not happen writes no entry.
pub(super) async fn audit_entries_commit_with_their_change(store: &Store) {
    let mut tenant = new_tenant(Tier::Free);
    let entry = |action: &str, tenant_id: &str| AuditEntry {
        at: 1,
        actor: "operator".into(),
        tenant_id: Some(tenant_id.to_string()),
        action: action.to_string(),
        target: tenant_id.to_string(),
        before: None,
        after: Some(serde_json::json!({ "step": action })),
    };
    let logged = |tenant_id: String| async move {
        let records = store.list_audit(Some(&tenant_id), None, 10).await.unwrap();
        records
            .into_iter()
            .map(|r| r.entry.action)
            .collect::<Vec<_>>()
    };
    store
        .create_tenant(&tenant, Some(&entry("tenant.create", &tenant.id)))
        .await
        .unwrap();
    let stored = store.list_audit(Some(&tenant.id), None, 10).await.unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].entry, entry("tenant.create", &tenant.id));

    refuse_audit_entries(store, "test.refused").await;
    let refused = entry("test.refused", &tenant.id);
    let renamed = Tenant {
        name: "renamed".into(),
        ..tenant.clone()
    };
    assert!(store.update_tenant(&renamed, Some(&refused)).await.is_err());
    let credential = new_credential(&tenant.id);
    assert!(
        store
            .create_credential(&credential, 0, Some(&refused))
            .await
            .is_err()
    );
    assert!(
        store
            .delete_tenant(&tenant.id, Some(&refused))
            .await
            .is_err()
    );
    accept_audit_entries(store).await;
    assert_eq!(
        store.get_tenant(&tenant.id).await.unwrap().as_ref(),
        Some(&tenant),
        "neither renamed nor deleted"
    );
    assert!(
        store
            .get_credential(&tenant.id, &credential.id)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(logged(tenant.id.clone()).await, ["tenant.create"]);

    // Changes that do not happen log nothing.
    tenant.name = "renamed".into();
    store
        .update_tenant(&tenant, Some(&entry("tenant.update", &tenant.id)))
        .await
        .unwrap();
    assert!(
        !store
            .revoke_credential(
                &tenant.id,
                &credential.id,
                2,
                Some(&entry("credential.revoke", &tenant.id))
            )
            .await
            .unwrap()
    );
    assert!(
        store
            .delete_tenant(&tenant.id, Some(&entry("tenant.delete", &tenant.id)))
            .await
            .unwrap()
    );
    assert!(
        !store
            .delete_tenant(&tenant.id, Some(&entry("tenant.delete", &tenant.id)))
            .await
            .unwrap()
    );
    assert_eq!(
        logged(tenant.id.clone()).await,
        ["tenant.delete", "tenant.update", "tenant.create"],
        "newest first, one entry per change made"
    );
}
