//! The columns of tenant policy: sending limits, credential rates, return paths, held messages and
//! priority.

use mailmux_core::credential::random_id;
use mailmux_core::queued::NewMessage;
use mailmux_core::{Domain, Tier};

use super::{message, new_credential, new_tenant};
use crate::{ReturnPathCheck, Store, StoreError};

/// Issue 4's columns: sending limits, credential rates, return paths; held messages; priority.
pub(super) async fn tenant_policy(store: &Store) {
    let mut tenant = new_tenant(Tier::Professional);
    tenant.limits.max_recipients_per_message = 7;
    tenant.limits.max_message_size = 12_345;
    tenant.limits.rate_per_second = 3;
    tenant.limits.rate_per_minute = 90;
    tenant.limits.max_connections = 4;
    store.create_tenant(&tenant, None).await.unwrap();
    assert_eq!(
        store.get_tenant(&tenant.id).await.unwrap(),
        Some(tenant.clone())
    );
    tenant.limits.rate_per_second = 0;
    tenant.limits.max_connections = 9;
    store.update_tenant(&tenant, None).await.unwrap();
    let updated = store.get_tenant(&tenant.id).await.unwrap().unwrap();
    tenant.updated_at = updated.updated_at;
    assert_eq!(updated, tenant);

    let credential = new_credential(&tenant.id);
    store.create_credential(&credential, 0, None).await.unwrap();
    assert!(
        store
            .set_credential_rates(&tenant.id, &credential.id, Some(2), None, None)
            .await
            .unwrap()
    );
    assert!(
        !store
            .set_credential_rates("t_other", &credential.id, Some(2), None, None)
            .await
            .unwrap(),
        "another tenant's credential is not touched"
    );
    let loaded = store
        .find_credential(&credential.username)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (loaded.rate_per_second, loaded.rate_per_minute),
        (Some(2), None)
    );

    let name = format!("{}.example", random_id("rp", 8));
    store
        .add_domain(&Domain {
            name: name.clone(),
            tenant_id: tenant.id.clone(),
            verified: true,
            verified_by: Some("operator".into()),
            verification_token: "x".into(),
            created_at: 1,
            inbound: false,
            dmarc_reject: false,
        })
        .await
        .unwrap();
    let bounce = format!("bounce.{name}");
    let unset = store.get_return_path(&name).await.unwrap().unwrap();
    assert_eq!(
        (unset.tenant_id.as_str(), unset.return_path),
        (tenant.id.as_str(), None)
    );
    store
        .set_return_path(&tenant.id, &name, Some(&bounce), None)
        .await
        .unwrap();
    let set = store.get_return_path(&name).await.unwrap().unwrap();
    assert_eq!(set.return_path.as_deref(), Some(bounce.as_str()));
    assert_eq!(
        set.verified(),
        None,
        "a new return path is not used before a check"
    );
    assert!(set.checks.is_empty());

    // A check of the current return path is recorded; one about another name is not.
    let found = ReturnPathCheck {
        checks: [("mx".to_string(), "verified".to_string())].into(),
        checked_at: 5,
        verified_at: Some(5),
    };
    assert!(
        !store
            .put_return_path_check(&name, &format!("old.{name}"), &found, None)
            .await
            .unwrap()
    );
    assert_eq!(
        store
            .get_return_path(&name)
            .await
            .unwrap()
            .unwrap()
            .verified(),
        None
    );
    assert!(
        store
            .put_return_path_check(&name, &bounce, &found, None)
            .await
            .unwrap()
    );
    let verified = store.get_return_path(&name).await.unwrap().unwrap();
    assert_eq!(verified.verified(), Some(bounce.as_str()));
    assert_eq!(
        (verified.checked_at, verified.checks),
        (Some(5), found.checks.clone())
    );
    let in_use = store.list_verified_return_paths().await.unwrap();
    assert!(in_use.iter().any(|r| r.domain == name));

    // Changing the return path forgets the verdict.
    let other = format!("mail.{name}");
    store
        .set_return_path(&tenant.id, &name, Some(&other), None)
        .await
        .unwrap();
    let changed = store.get_return_path(&name).await.unwrap().unwrap();
    assert_eq!((changed.verified(), changed.checked_at), (None, None));
    assert!(
        !store
            .list_verified_return_paths()
            .await
            .unwrap()
            .iter()
            .any(|r| r.domain == name)
    );
    assert!(matches!(
        store.set_return_path("t_other", &name, None, None).await,
        Err(StoreError::NotFound(_))
    ));
    store
        .set_return_path(&tenant.id, &name, None, None)
        .await
        .unwrap();
    assert_eq!(
        store
            .get_return_path(&name)
            .await
            .unwrap()
            .unwrap()
            .return_path,
        None
    );
    assert_eq!(store.get_return_path("nobody.example").await.unwrap(), None);

    // A held message is given back untried; only its owner's lease is released.
    let now = mailmux_core::now_ms();
    let mut held = message(&tenant.id, &["r@x.test"], now);
    held.lease = Some(("node-a".into(), now + 600_000));
    store
        .commit_batch(std::slice::from_ref(&held), &[])
        .await
        .unwrap();
    assert!(
        !store
            .release_lease(&held.id.0, "node-b", now)
            .await
            .unwrap()
    );
    assert!(
        store
            .release_lease(&held.id.0, "node-a", now)
            .await
            .unwrap()
    );
    let claimed = store
        .claim_due("node-b", now + 1, now + 600_000, 1000)
        .await
        .unwrap();
    let again = claimed
        .iter()
        .find(|m| m.id == held.id)
        .expect("claimable again");
    assert_eq!(again.attempts, 0, "no attempt was counted");

    // Priority first when the queue is contended: a later, higher-priority message is claimed
    // before earlier ones.
    let mut batch: Vec<NewMessage> = (0..3)
        .map(|n| message(&tenant.id, &["r@x.test"], now + n))
        .collect();
    let mut urgent = message(&tenant.id, &["r@x.test"], now + 10);
    urgent.priority = 10;
    batch.push(urgent.clone());
    store.commit_batch(&batch, &[]).await.unwrap();
    let first = store
        .claim_due("node-c", now + 20, now + 600_000, 1)
        .await
        .unwrap();
    assert_eq!(
        first.iter().map(|m| &m.id).collect::<Vec<_>>(),
        [&urgent.id]
    );
    assert!(store.delete_tenant(&tenant.id, None).await.unwrap());
}
