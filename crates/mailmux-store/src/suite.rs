//! The storage test suite: one body of checks, run against every backend (SQLite in a temp
//! dir by this crate's tests, Postgres by the root `tests/store.rs`). Compiled only for tests
//! and for the `test-suite` feature so the root package can call it.

use std::sync::Arc;

use mailmux_core::credential::{hash_secret, random_id};
use mailmux_core::{BodyFlags, Credential, Domain, Envelope, QueueId, Tenant, TenantStatus, Tier};

use sqlx::Executor;

use crate::{
    AuditEntry, Backend, DeliveryReport, DkimKey, DkimKeyStatus, DkimSigningState, NewMessage,
    RecipientResult, RecipientStatus, ReturnPathCheck, Store, StoreError,
};

/// Runs every check against `store` (freshly migrated, empty or not: ids are random).
pub async fn run_all(store: &Store) {
    tenants(store).await;
    domains_and_credentials(store).await;
    dkim_rotation(store).await;
    queue_lifecycle(store).await;
    concurrent_claims_never_overlap(store).await;
    journaled_deliveries_are_recorded_after_a_restart(store).await;
    tenant_policy(store).await;
    daily_quota_is_decided_in_the_commit(store).await;
    user_and_domain_limits_hold_under_concurrency(store).await;
    audit_entries_commit_with_their_change(store).await;
}

/// From now on the database refuses audit entries whose action is `action`, as a full disk or
/// a lost connection would refuse them: for tests that a change whose entry cannot be written
/// is undone. [`accept_audit_entries`] lifts it.
///
/// A trigger made once refuses the actions listed in a table: the schema is not changed again
/// afterwards (another pooled SQLite connection could still see the old schema and say that a
/// trigger dropped meanwhile "already exists").
pub async fn refuse_audit_entries(store: &Store, action: &str) {
    let setup = match store.backend() {
        Backend::Sqlite => {
            "CREATE TABLE IF NOT EXISTS refused_audit_actions (action TEXT PRIMARY KEY); \
             CREATE TRIGGER IF NOT EXISTS refuse_audit BEFORE INSERT ON audit_log \
             WHEN NEW.action IN (SELECT action FROM refused_audit_actions) \
             BEGIN SELECT RAISE(ABORT, 'audit log refused'); END"
        }
        Backend::Postgres => {
            "CREATE TABLE IF NOT EXISTS refused_audit_actions (action TEXT PRIMARY KEY); \
             CREATE OR REPLACE FUNCTION refuse_audit() RETURNS trigger LANGUAGE plpgsql AS $$ \
             BEGIN IF NEW.action IN (SELECT action FROM refused_audit_actions) THEN \
             RAISE EXCEPTION 'audit log refused'; END IF; RETURN NEW; END $$; \
             CREATE OR REPLACE TRIGGER refuse_audit BEFORE INSERT ON audit_log \
             FOR EACH ROW EXECUTE FUNCTION refuse_audit()"
        }
    };
    store.pool.execute(setup).await.unwrap();
    sqlx::query("INSERT INTO refused_audit_actions (action) VALUES ($1)")
        .bind(action)
        .execute(&store.pool)
        .await
        .unwrap();
}

/// Undoes [`refuse_audit_entries`].
pub async fn accept_audit_entries(store: &Store) {
    sqlx::query("DELETE FROM refused_audit_actions")
        .execute(&store.pool)
        .await
        .unwrap();
}

fn new_tenant(tier: Tier) -> Tenant {
    Tenant::new(random_id("t_", 16), "acme".into(), tier, 1_000)
}

fn new_credential(tenant_id: &str) -> Credential {
    Credential {
        id: random_id("c_", 16),
        tenant_id: tenant_id.to_string(),
        username: random_id("mm_", 20),
        secret_hash: hash_secret("pw"),
        created_at: 1,
        revoked_at: None,
        rate_per_second: None,
        rate_per_minute: None,
    }
}

async fn tenants(store: &Store) {
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

async fn domains_and_credentials(store: &Store) {
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

fn dkim_key(domain: &str, selector: &str, status: DkimKeyStatus, at: i64) -> DkimKey {
    DkimKey {
        domain: domain.into(),
        selector: selector.into(),
        key_type: "ed25519".into(),
        public_key: format!("pub-{selector}"),
        private_key_sealed: selector.as_bytes().to_vec(),
        created_at: at,
        status,
        activated_at: (status == DkimKeyStatus::Active).then_some(at),
        retire_at: None,
        updated_at: at,
    }
}

/// A domain's keys through a rotation: pending, switched (the old one retiring), dropped after
/// its grace period; one active and one pending key at most, whatever the callers do.
async fn dkim_rotation(store: &Store) {
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
    store.create_tenant(&tenant, None).await.unwrap();
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

    // The heartbeat: only the owner's leases are renewed.
    let ids = vec![first.id.0.clone(), dsn.id.0.clone(), "gone".to_string()];
    assert_eq!(
        store
            .renew_leases("node-a", &ids, now + 90_000)
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        store
            .renew_leases("node-b", &ids, now + 90_000)
            .await
            .unwrap(),
        0
    );

    // A report from a node that does not hold the lease (it lost it) changes nothing and its
    // bounce is not written.
    let mut bounce = message(&tenant.id, &["app@acme.test"], now);
    bounce.origin = "dsn";
    let report = DeliveryReport {
        message_id: first.id.clone(),
        lease_owner: "node-a".into(),
        at: now,
        next_attempt_at: now + 60_000,
        bounce: Some(bounce.clone()),
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
    let stale = DeliveryReport {
        lease_owner: "node-b".into(),
        ..report.clone()
    };
    let outcome = store.commit_batch(&[], &[stale]).await.unwrap();
    assert_eq!(outcome.recorded, [false]);
    let states = store.recipient_states(&first.id.0).await.unwrap();
    assert!(
        states.iter().all(|s| s.1 == "pending" && s.2 == 0),
        "{states:?}"
    );
    assert!(store.load_pending(&bounce.id.0).await.unwrap().is_none());

    let outcome = store.commit_batch(&[], &[report]).await.unwrap();
    assert_eq!(outcome.recorded, [true]);
    let queued_bounce = store.load_pending(&bounce.id.0).await.unwrap();
    assert!(
        queued_bounce.is_some(),
        "the bounce is written with its report"
    );
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
        lease_owner: "node-a".into(),
        at: now + 60_000,
        next_attempt_at: 0,
        bounce: None,
        results: vec![RecipientResult {
            idx: 1,
            status: RecipientStatus::Delivered,
            reply: "250 ok".into(),
        }],
    };
    let outcome = store
        .commit_batch(&[], std::slice::from_ref(&done))
        .await
        .unwrap();
    assert_eq!(outcome.recorded, [true]);
    assert!(store.load_pending(&first.id.0).await.unwrap().is_none());
    // The report released the lease: the same report again (a retried write) is refused.
    let outcome = store.commit_batch(&[], &[done]).await.unwrap();
    assert_eq!(outcome.recorded, [false]);
    // Retention forgets finished messages only, and only older ones.
    assert_eq!(
        store.purge_finished(now).await.unwrap(),
        0,
        "not older than `now`"
    );
    assert!(store.purge_finished(now + 1).await.unwrap() >= 1);
    assert!(
        store
            .recipient_states(&first.id.0)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store.load_pending(&dsn.id.0).await.unwrap().is_some(),
        "queued ones stay"
    );

    // A paused tenant's mail is held, not delivered.
    let mut paused = new_tenant(Tier::Enterprise);
    paused.status = TenantStatus::Paused;
    store.create_tenant(&paused, None).await.unwrap();
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
    assert!(store.release_leases("node-c", now).await.unwrap() >= 1);
    let claimed = store
        .claim_due("node-a", now + 10, now + 60_000, 100)
        .await
        .unwrap();
    assert!(claimed.iter().any(|m| m.id == leased.id));
}

/// What the delivery journal says a node delivered before it restarted is recorded for the
/// recipients still pending, only on messages no other node has leased since.
async fn journaled_deliveries_are_recorded_after_a_restart(store: &Store) {
    use crate::JournaledDelivery;
    let tenant = new_tenant(Tier::Enterprise);
    store.create_tenant(&tenant, None).await.unwrap();
    let now = mailmux_core::now_ms();
    let mut mine = message(&tenant.id, &["a@x.test", "b@x.test"], now);
    mine.lease = Some(("node-a".into(), now + 60_000));
    let mut taken = message(&tenant.id, &["c@x.test"], now);
    taken.lease = Some(("node-b".into(), now + 60_000));
    store
        .commit_batch(&[mine.clone(), taken.clone()], &[])
        .await
        .unwrap();
    let journaled = |id: &QueueId, idx: u32| JournaledDelivery {
        message_id: id.0.clone(),
        at: now + 5,
        recipients: vec![(idx, "250 2.0.0 ok".into())],
    };
    let recorded = store
        .record_journaled_deliveries("node-a", &[journaled(&mine.id, 0), journaled(&taken.id, 0)])
        .await
        .unwrap();
    assert_eq!(recorded, 1, "node-b's message is left to node-b");
    let states = store.recipient_states(&mine.id.0).await.unwrap();
    assert_eq!(states[0].1, "delivered");
    assert_eq!(states[0].3.as_deref(), Some("250 2.0.0 ok"));
    assert_eq!(states[1].1, "pending", "not journaled: sent again");
    assert!(store.load_pending(&mine.id.0).await.unwrap().is_some());
    assert_eq!(
        store.recipient_states(&taken.id.0).await.unwrap()[0].1,
        "pending"
    );
    // The same entry again (a second crash before the journal was emptied) changes nothing;
    // the last recipient finishes the message.
    let recorded = store
        .record_journaled_deliveries("node-a", &[journaled(&mine.id, 0), journaled(&mine.id, 1)])
        .await
        .unwrap();
    assert_eq!(recorded, 1);
    assert!(
        store.load_pending(&mine.id.0).await.unwrap().is_none(),
        "done"
    );
    let (view, attempts) = store
        .message_history(&tenant.id, &mine.id.0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        attempts.len(),
        2,
        "one attempt logged per recipient: {attempts:?}"
    );
    assert!(attempts.iter().all(|a| a.outcome == "delivered"));
    assert_eq!(view.recipients.len(), 2);
}

/// Several claimers at once: every message goes to exactly one of them.
async fn concurrent_claims_never_overlap(store: &Store) {
    let tenant = new_tenant(Tier::Enterprise);
    store.create_tenant(&tenant, None).await.unwrap();
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

/// Issue 4's columns: sending limits, credential rates, return paths; held messages; priority.
async fn tenant_policy(store: &Store) {
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

/// The daily quota inside the commit: exactly `max` messages of the window are written,
/// whatever the batches and however many writers commit at once (DSNs are never refused and
/// never counted).
async fn daily_quota_is_decided_in_the_commit(store: &Store) {
    use crate::Admission;
    let mut tenant = new_tenant(Tier::Free);
    tenant.limits.max_messages_per_day = 5;
    store.create_tenant(&tenant, None).await.unwrap();
    let now = mailmux_core::now_ms();
    // Outside the window: not counted.
    let old = message(
        &tenant.id,
        &["r@x.test"],
        now - crate::QUOTA_WINDOW_MS - 1_000,
    );
    store.commit_batch(&[old], &[]).await.unwrap();
    let batch: Vec<NewMessage> = (0..3)
        .map(|_| message(&tenant.id, &["r@x.test"], now))
        .collect();
    let admissions = store.commit_batch(&batch, &[]).await.unwrap().admissions;
    assert_eq!(admissions, vec![Admission::Written; 3]);
    let mut batch: Vec<NewMessage> = (0..4)
        .map(|_| message(&tenant.id, &["r@x.test"], now))
        .collect();
    let mut dsn = message(&tenant.id, &["sender@acme.test"], now);
    dsn.origin = "dsn";
    batch.insert(1, dsn);
    let admissions = store.commit_batch(&batch, &[]).await.unwrap().admissions;
    let over = Admission::OverQuota { max_per_day: 5 };
    assert_eq!(
        admissions,
        [
            Admission::Written,
            Admission::Written,
            Admission::Written,
            over,
            over
        ],
        "two of four fit; the DSN always does"
    );
    // Nothing of the refused ones was written.
    for (message, admission) in batch.iter().zip(&admissions) {
        let written = store.load_pending(&message.id.0).await.unwrap().is_some();
        assert_eq!(written, *admission == Admission::Written);
    }
    assert_eq!(
        store
            .count_messages_since(&tenant.id, now - crate::QUOTA_WINDOW_MS)
            .await
            .unwrap(),
        5
    );
    assert!(
        store
            .oldest_message_since(&tenant.id, now - crate::QUOTA_WINDOW_MS)
            .await
            .unwrap()
            .is_some()
    );

    // Many writers at once (on Postgres: concurrent transactions, as several nodes make):
    // still exactly the quota.
    let mut racing = new_tenant(Tier::Free);
    racing.limits.max_messages_per_day = 20;
    store.create_tenant(&racing, None).await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let store = store.clone();
        let id = racing.id.clone();
        tasks.push(tokio::spawn(async move {
            let mut written = 0;
            for _ in 0..3 {
                let batch: Vec<NewMessage> =
                    (0..2).map(|_| message(&id, &["r@x.test"], now)).collect();
                let admissions = store.commit_batch(&batch, &[]).await.unwrap().admissions;
                written += admissions
                    .iter()
                    .filter(|a| **a == Admission::Written)
                    .count();
            }
            written
        }));
    }
    let mut written = 0;
    for task in tasks {
        written += task.await.unwrap();
    }
    assert_eq!(written, 20, "48 offered, exactly the quota written");
    assert_eq!(
        store
            .count_messages_since(&racing.id, now - crate::QUOTA_WINDOW_MS)
            .await
            .unwrap(),
        20
    );
    assert!(store.delete_tenant(&tenant.id, None).await.unwrap());
    assert!(store.delete_tenant(&racing.id, None).await.unwrap());
}

/// max_users and max_domains are decided where the row is inserted: twelve concurrent creations
/// against a limit of three leave exactly three, and the others get `LimitReached`.
async fn user_and_domain_limits_hold_under_concurrency(store: &Store) {
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
async fn audit_entries_commit_with_their_change(store: &Store) {
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
