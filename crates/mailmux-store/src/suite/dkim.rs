//! DKIM keys through a rotation.

use mailmux_core::credential::random_id;
use mailmux_core::{Domain, Tier};

use super::{dkim_key, new_tenant};
use crate::{DkimKey, DkimKeyStatus, DkimSigningState, Store, StoreError};

/// A domain's keys through a rotation: pending, switched (the old one retiring), dropped after
/// its grace period; one active and one pending key at most, whatever the callers do.
pub(super) async fn dkim_rotation(store: &Store) {
    let tenant = new_tenant(Tier::Starter);
    store.create_tenant(&tenant, None).await.unwrap();
    let name = format!("{}.example.test", random_id("k", 8));
    let domain = Domain {
        name: name.clone(),
        tenant_id: tenant.id.clone(),
        verified: true,
        verified_by: Some("operator".into()),
        verification_token: "tok".into(),
        created_at: 10,
        inbound: false,
        dmarc_reject: false,
    };
    let first = dkim_key(&name, "mm202601", DkimKeyStatus::Active, 10);
    store
        .add_domain_with_dkim(&domain, &first, 0, None)
        .await
        .unwrap();
    let state = |active: Option<(&str, i64)>| DkimSigningState {
        tenant_id: tenant.id.clone(),
        verified: true,
        active: active.map(|(s, at)| (s.to_string(), at)),
    };
    assert_eq!(
        store.dkim_signing_state(&name).await.unwrap(),
        Some(state(Some(("mm202601", 10))))
    );
    assert_eq!(
        store
            .dkim_signing_state("nobody.example.test")
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store.get_dkim_key(&name).await.unwrap(),
        Some(first.clone())
    );

    // A rotation adds a pending key; a second rotation replaces it.
    let pending = dkim_key(&name, "mm202602", DkimKeyStatus::Pending, 20);
    assert_eq!(
        store.add_pending_dkim_key(&pending, None).await.unwrap(),
        None
    );
    let pending2 = dkim_key(&name, "mm202602b", DkimKeyStatus::Pending, 21);
    assert_eq!(
        store
            .add_pending_dkim_key(&pending2, None)
            .await
            .unwrap()
            .as_deref(),
        Some("mm202602")
    );
    // A taken selector is a conflict; a key for a domain that does not exist is not found.
    assert!(matches!(
        store
            .add_pending_dkim_key(
                &dkim_key(&name, "mm202601", DkimKeyStatus::Pending, 22),
                None
            )
            .await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store
            .add_pending_dkim_key(
                &dkim_key("gone.example.test", "s", DkimKeyStatus::Pending, 22),
                None
            )
            .await,
        Err(StoreError::NotFound(_))
    ));
    let keys = store.list_dkim_keys(&name).await.unwrap();
    assert_eq!(
        keys.iter()
            .map(|k| (k.selector.as_str(), k.status))
            .collect::<Vec<_>>(),
        [
            ("mm202601", DkimKeyStatus::Active),
            ("mm202602b", DkimKeyStatus::Pending)
        ]
    );
    assert_eq!(
        store
            .list_domains_with_pending_dkim()
            .await
            .unwrap()
            .iter()
            .filter(|d| d.name == name)
            .count(),
        1
    );
    // Signing still uses the active key while the new one is pending.
    assert_eq!(
        store.dkim_signing_state(&name).await.unwrap(),
        Some(state(Some(("mm202601", 10))))
    );

    // Only the pending key can be activated, once.
    assert!(
        !store
            .activate_dkim_key(&name, "mm202601", 30, 100, None)
            .await
            .unwrap()
    );
    assert!(
        store
            .activate_dkim_key(&name, "mm202602b", 30, 100, None)
            .await
            .unwrap()
    );
    assert!(
        !store
            .activate_dkim_key(&name, "mm202602b", 31, 101, None)
            .await
            .unwrap()
    );
    assert_eq!(
        store.dkim_signing_state(&name).await.unwrap(),
        Some(state(Some(("mm202602b", 21))))
    );
    let keys = store.list_dkim_keys(&name).await.unwrap();
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0].selector, "mm202602b");
    assert_eq!(keys[0].status, DkimKeyStatus::Active);
    assert_eq!(keys[0].activated_at, Some(30));
    assert_eq!(keys[1].selector, "mm202601");
    assert_eq!(keys[1].status, DkimKeyStatus::Retiring);
    assert_eq!(keys[1].retire_at, Some(100));
    assert_eq!(keys[1].private_key_sealed, first.private_key_sealed);
    assert!(
        store
            .list_domains_with_pending_dkim()
            .await
            .unwrap()
            .iter()
            .all(|d| d.name != name)
    );

    // The retiring key stays until its time, then goes; the active one never does.
    let drop_key = async |selector: &str, now: i64| {
        store
            .drop_retired_dkim_key(&name, selector, now, None)
            .await
            .unwrap()
    };
    let retired = store.list_retired_dkim_keys(99).await.unwrap();
    assert!(retired.iter().all(|k| k.domain != name));
    assert!(
        !drop_key("mm202601", 99).await,
        "a key is not dropped before its time"
    );
    let retired = store.list_retired_dkim_keys(100).await.unwrap();
    assert_eq!(
        retired
            .iter()
            .filter(|k| k.domain == name)
            .map(|k| k.selector.as_str())
            .collect::<Vec<_>>(),
        ["mm202601"]
    );
    assert!(
        !drop_key("mm202602b", 100).await,
        "the active key is never dropped"
    );
    assert!(drop_key("mm202601", 100).await);
    assert!(!drop_key("mm202601", 100).await, "dropped once");
    assert_eq!(store.list_dkim_keys(&name).await.unwrap().len(), 1);

    // The database allows one active key per domain, whatever a caller tries.
    let second_active = dkim_key(&name, "mm209912", DkimKeyStatus::Active, 40);
    assert!(
        store
            .add_pending_dkim_key(
                &DkimKey {
                    status: DkimKeyStatus::Pending,
                    ..second_active.clone()
                },
                None
            )
            .await
            .is_ok()
    );
    assert!(
        store
            .activate_dkim_key(&name, "mm209912", 41, 41, None)
            .await
            .unwrap()
    );
    assert_eq!(
        store
            .list_dkim_keys(&name)
            .await
            .unwrap()
            .iter()
            .filter(|k| k.status == DkimKeyStatus::Active)
            .count(),
        1
    );

    // Deleting the domain takes its keys with it.
    assert!(store.delete_domain(&tenant.id, &name, None).await.unwrap());
    assert!(store.list_dkim_keys(&name).await.unwrap().is_empty());
    assert_eq!(store.dkim_signing_state(&name).await.unwrap(), None);
    assert!(store.delete_tenant(&tenant.id, None).await.unwrap());
}
