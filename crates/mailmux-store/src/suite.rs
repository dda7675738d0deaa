//! The storage test suite: one body of checks, run against every backend (SQLite in a temp
//! dir by this crate's tests, Postgres by the root `tests/store.rs`). Compiled only for tests
//! and for the `test-suite` feature so the root package can call it.

use std::sync::Arc;

use mailmux_core::credential::{hash_secret, random_id};
use mailmux_core::{BodyFlags, Credential, Domain, Envelope, QueueId, Tenant, TenantStatus, Tier};

use crate::{DeliveryReport, NewMessage, RecipientResult, RecipientStatus, Store, StoreError};

/// Runs every check against `store` (freshly migrated, empty or not: ids are random).
pub async fn run_all(store: &Store) {
    tenants(store).await;
    domains_and_credentials(store).await;
    queue_lifecycle(store).await;
    concurrent_claims_never_overlap(store).await;
}

fn new_tenant(tier: Tier) -> Tenant {
    Tenant::new(random_id("t_", 16), "acme".into(), tier, 1_000)
}

async fn tenants(store: &Store) {
    let mut tenant = new_tenant(Tier::Starter);
    store.create_tenant(&tenant).await.unwrap();
    assert!(matches!(
        store.create_tenant(&tenant).await,
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
    store.update_tenant(&tenant).await.unwrap();
    assert_eq!(
        store.get_tenant(&tenant.id).await.unwrap().as_ref(),
        Some(&tenant)
    );
    assert!(
        store
            .list_tenants()
            .await
            .unwrap()
            .iter()
            .any(|t| t.id == tenant.id)
    );
    assert!(store.delete_tenant(&tenant.id).await.unwrap());
    assert!(store.get_tenant(&tenant.id).await.unwrap().is_none());
    assert!(!store.delete_tenant(&tenant.id).await.unwrap());
}

async fn domains_and_credentials(store: &Store) {
    let a = new_tenant(Tier::Free);
    let b = new_tenant(Tier::Free);
    store.create_tenant(&a).await.unwrap();
    store.create_tenant(&b).await.unwrap();
    let name = format!("{}.example.test", random_id("d", 8));
    let domain = Domain {
        name: name.clone(),
        tenant_id: a.id.clone(),
        verified: false,
        verified_by: None,
        verification_token: "tok".into(),
        created_at: 1,
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
        .set_domain_verified(&name, Some("operator"))
        .await
        .unwrap();
    let loaded = store.get_domain(&name).await.unwrap().unwrap();
    assert!(loaded.verified);
    assert_eq!(loaded.verified_by.as_deref(), Some("operator"));
    assert_eq!(store.count_domains(&a.id).await.unwrap(), 1);
    assert_eq!(store.list_domains(&b.id).await.unwrap().len(), 0);

    let credential = Credential {
        id: random_id("c_", 16),
        tenant_id: a.id.clone(),
        username: random_id("mm_", 20),
        secret_hash: hash_secret("s3cret"),
        created_at: 2,
        revoked_at: None,
    };
    store.create_credential(&credential).await.unwrap();
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
            .revoke_credential(&b.id, &credential.id, 3)
            .await
            .unwrap()
    );
    assert!(
        store
            .revoke_credential(&a.id, &credential.id, 3)
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
    assert!(store.delete_tenant(&a.id).await.unwrap());
    assert!(store.get_domain(&name).await.unwrap().is_none());
    assert!(
        store
            .find_credential(&credential.username)
            .await
            .unwrap()
            .is_none()
    );
}

fn message(tenant: &str, rcpts: &[&str], created_at: i64) -> NewMessage {
    NewMessage {
        id: QueueId(random_id("", 20)),
        tenant_id: tenant.into(),
        envelope: Envelope {
            mail_from: "app@acme.test".into(),
            rcpt_to: rcpts.iter().map(|r| r.to_string()).collect(),
            flags: BodyFlags {
                eight_bit: true,
                smtputf8: false,
            },
        },
        body: Arc::new(b"Subject: hi\r\n\r\n\xc3\xa9t\xc3\xa9\r\n".to_vec()),
        origin: "smtp",
        priority: 0,
        created_at,
        lease: None,
    }
}

async fn queue_lifecycle(store: &Store) {
    let tenant = new_tenant(Tier::Enterprise);
    store.create_tenant(&tenant).await.unwrap();
    let now = mailmux_core::now_ms();
    let first = message(&tenant.id, &["a@x.test", "b@Y.test", "c@x.test"], now);
    let mut dsn = message(&tenant.id, &["app@acme.test"], now);
    dsn.origin = "dsn";
    store
        .commit_batch(&[first.clone(), dsn.clone()], &[])
        .await
        .unwrap();
    assert_eq!(
        store
            .count_messages_since(&tenant.id, now - 1)
            .await
            .unwrap(),
        1,
        "DSNs are not counted"
    );
    assert_eq!(store.queue_depth(Some(&tenant.id)).await.unwrap(), 2);

    let claimed = store
        .claim_due("node-a", now, now + 60_000, 100)
        .await
        .unwrap();
    let mine: Vec<_> = claimed
        .iter()
        .filter(|m| m.tenant_id == tenant.id)
        .collect();
    assert_eq!(mine.len(), 2);
    let loaded = mine.iter().find(|m| m.id == first.id).unwrap();
    assert_eq!(loaded.body.as_slice(), first.body.as_slice());
    assert!(loaded.flags.eight_bit && !loaded.flags.smtputf8);
    assert_eq!(loaded.recipients.len(), 3);
    assert_eq!(loaded.recipients[1].domain, "y.test");
    // Leased: nobody else can take them now.
    let again = store
        .claim_due("node-b", now, now + 60_000, 100)
        .await
        .unwrap();
    assert!(again.iter().all(|m| m.tenant_id != tenant.id));

    let report = DeliveryReport {
        message_id: first.id.clone(),
        at: now,
        next_attempt_at: now + 60_000,
        results: vec![
            RecipientResult {
                idx: 0,
                status: RecipientStatus::Delivered,
                reply: "250 ok".into(),
            },
            RecipientResult {
                idx: 1,
                status: RecipientStatus::Deferred,
                reply: "451 4.3.0 later".into(),
            },
            RecipientResult {
                idx: 2,
                status: RecipientStatus::Bounced,
                reply: "550 5.1.1 unknown".into(),
            },
        ],
    };
    store.commit_batch(&[], &[report]).await.unwrap();
    let states = store.recipient_states(&first.id.0).await.unwrap();
    assert_eq!(states[0].1, "delivered");
    assert_eq!(states[1].1, "pending");
    assert_eq!(states[1].3.as_deref(), Some("451 4.3.0 later"));
    assert_eq!(states[2].1, "bounced");
    // Not due yet; then due with only the deferred recipient.
    let early = store
        .claim_due("node-a", now + 1, now + 60_000, 100)
        .await
        .unwrap();
    assert!(early.iter().all(|m| m.id != first.id));
    let later = store
        .claim_due("node-a", now + 60_000, now + 120_000, 100)
        .await
        .unwrap();
    let retry = later.iter().find(|m| m.id == first.id).unwrap();
    assert_eq!(retry.recipients.len(), 1);
    assert_eq!(retry.recipients[0].address, "b@Y.test");
    assert_eq!(retry.attempts, 1);

    let done = DeliveryReport {
        message_id: first.id.clone(),
        at: now + 60_000,
        next_attempt_at: 0,
        results: vec![RecipientResult {
            idx: 1,
            status: RecipientStatus::Delivered,
            reply: "250 ok".into(),
        }],
    };
    store.commit_batch(&[], &[done]).await.unwrap();
    assert!(store.load_pending(&first.id.0).await.unwrap().is_none());

    // A paused tenant's mail is held, not delivered.
    let mut paused = new_tenant(Tier::Enterprise);
    paused.status = TenantStatus::Paused;
    store.create_tenant(&paused).await.unwrap();
    let held = message(&paused.id, &["z@x.test"], now);
    store
        .commit_batch(std::slice::from_ref(&held), &[])
        .await
        .unwrap();
    let claimed = store
        .claim_due("node-a", now + 10, now + 60_000, 100)
        .await
        .unwrap();
    assert!(claimed.iter().all(|m| m.id != held.id));

    // Leases of a restarted node are given back.
    let leased = NewMessage {
        lease: Some(("node-c".into(), now + 600_000)),
        ..message(&tenant.id, &["q@x.test"], now)
    };
    store
        .commit_batch(std::slice::from_ref(&leased), &[])
        .await
        .unwrap();
    let claimed = store
        .claim_due("node-a", now + 10, now + 60_000, 100)
        .await
        .unwrap();
    assert!(claimed.iter().all(|m| m.id != leased.id));
    assert!(store.release_leases("node-c").await.unwrap() >= 1);
    let claimed = store
        .claim_due("node-a", now + 10, now + 60_000, 100)
        .await
        .unwrap();
    assert!(claimed.iter().any(|m| m.id == leased.id));
}

/// Several claimers at once: every message goes to exactly one of them.
async fn concurrent_claims_never_overlap(store: &Store) {
    let tenant = new_tenant(Tier::Enterprise);
    store.create_tenant(&tenant).await.unwrap();
    let now = mailmux_core::now_ms();
    let batch: Vec<NewMessage> = (0..60)
        .map(|_| message(&tenant.id, &["r@x.test"], now))
        .collect();
    store.commit_batch(&batch, &[]).await.unwrap();
    let mut tasks = Vec::new();
    for node in 0..4 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                let claimed = store
                    .claim_due(&format!("node-{node}"), now + 5, now + 600_000, 7)
                    .await
                    .unwrap();
                if claimed.is_empty() {
                    return got;
                }
                got.extend(claimed.into_iter().map(|m| m.id));
            }
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    let ours: Vec<_> = all
        .iter()
        .filter(|id| batch.iter().any(|m| &m.id == *id))
        .collect();
    let mut unique = ours.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(ours.len(), 60, "every message claimed");
    assert_eq!(unique.len(), 60, "no message claimed twice");
}
