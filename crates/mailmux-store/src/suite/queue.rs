//! The queue: messages through their life (enqueue, claim, lease, report, purge), the delivery
//! journal's recovery, concurrent claims, and the daily quota decided in the commit.

use mailmux_core::queued::{DeliveryReport, NewMessage, RecipientResult, RecipientStatus};
use mailmux_core::{QueueId, TenantStatus, Tier};

use super::{message, new_tenant};
use crate::Store;

pub(super) async fn queue_lifecycle(store: &Store) {
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
                remote_id: None,
            },
            RecipientResult {
                idx: 1,
                status: RecipientStatus::Deferred,
                reply: "451 4.3.0 later".into(),
                remote_id: None,
            },
            RecipientResult {
                idx: 2,
                status: RecipientStatus::Bounced,
                reply: "550 5.1.1 unknown".into(),
                remote_id: None,
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
            remote_id: None,
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
pub(super) async fn journaled_deliveries_are_recorded_after_a_restart(store: &Store) {
    use mailmux_core::queued::JournaledDelivery;
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
pub(super) async fn concurrent_claims_never_overlap(store: &Store) {
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

/// The daily quota inside the commit: exactly `max` messages of the window are written,
/// whatever the batches and however many writers commit at once (DSNs are never refused and
/// never counted).
pub(super) async fn daily_quota_is_decided_in_the_commit(store: &Store) {
    use mailmux_core::queued::Admission;
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

/// A spooled message's row keeps only where its body is: loaded back with an empty body and
/// its `body_path`, named by `referenced_bodies` while queued, and handed back in
/// `freed_bodies` by the report that finishes it (not by one that defers it).
pub(super) async fn spooled_bodies_are_pointed_at_then_freed(store: &Store) {
    let tenant = new_tenant(Tier::Enterprise);
    store.create_tenant(&tenant, None).await.unwrap();
    let now = mailmux_core::now_ms();
    let mut spooled = message(&tenant.id, &["a@x.test"], now);
    let path = format!("n_node/{}", spooled.id.0);
    spooled.body_path = Some(path.clone());
    spooled.lease = Some(("node-s".into(), now + 60_000));
    let inline = message(&tenant.id, &["b@x.test"], now);
    let outcome = store
        .commit_batch(&[spooled.clone(), inline.clone()], &[])
        .await
        .unwrap();
    assert!(outcome.freed_bodies.is_empty());

    let loaded = store.load_pending(&spooled.id.0).await.unwrap().unwrap();
    assert!(loaded.body.is_empty(), "the row holds no body");
    assert_eq!(loaded.body_path.as_deref(), Some(path.as_str()));
    let loaded_inline = store.load_pending(&inline.id.0).await.unwrap().unwrap();
    assert_eq!(loaded_inline.body.as_slice(), inline.body.as_slice());
    assert_eq!(loaded_inline.body_path, None);

    let stray = "n_node/00000000000000000000".to_string();
    let elsewhere = format!("n_other/{}", spooled.id.0);
    let referenced = store
        .referenced_bodies(&[path.clone(), stray, elsewhere])
        .await
        .unwrap();
    assert_eq!(
        referenced,
        vec![path.clone()],
        "only the path the row names"
    );

    let report = |status| DeliveryReport {
        message_id: spooled.id.clone(),
        lease_owner: "node-s".into(),
        at: now,
        next_attempt_at: now + 60_000,
        bounce: None,
        results: vec![RecipientResult {
            idx: 0,
            status,
            reply: "x".into(),
            remote_id: None,
        }],
    };
    let deferred = store
        .commit_batch(&[], &[report(RecipientStatus::Deferred)])
        .await
        .unwrap();
    assert_eq!(deferred.recorded, vec![true]);
    assert!(
        deferred.freed_bodies.is_empty(),
        "still queued: the body stays"
    );
    // Leased again, then delivered.
    let renewed = store
        .claim_due_ids("node-s", now + 60_000, now + 120_000, 1_000)
        .await
        .unwrap();
    assert!(renewed.contains(&spooled.id.0));
    let delivered = store
        .commit_batch(&[], &[report(RecipientStatus::Delivered)])
        .await
        .unwrap();
    assert_eq!(delivered.recorded, vec![true]);
    assert_eq!(delivered.freed_bodies, vec![path.clone()]);
    assert!(store.referenced_bodies(&[path]).await.unwrap().is_empty());
}
