//! Webhooks: endpoints with sealed secrets; deliveries written in the inbound message's commit,
//! leased to one claimant at a time (busy endpoints skipped, concurrent claims never overlap),
//! finished with their attempts only under the lease, replayed; an endpoint a rule uses cannot
//! be deleted; everything goes with the tenant.

use mailmux_core::credential::random_id;
use mailmux_core::{ReceiptRule, RuleAction, Tier};

use super::{inbound_domain, new_tenant};
use crate::{
    DeliveryOutcome, InboundMessage, NewWebhookDelivery, Store, StoreError, Webhook, WebhookAttempt,
};

fn webhook(tenant_id: &str) -> Webhook {
    Webhook {
        id: random_id("wh_", 16),
        tenant_id: tenant_id.into(),
        url: "https://hooks.example/in".into(),
        kind: "inbound".into(),
        event_types: vec![],
        secret_sealed: vec![1, 2, 3],
        previous_secret_sealed: None,
        previous_secret_expires_at: None,
        enabled: true,
        created_at: 10,
        updated_at: 10,
    }
}

fn delivery(webhook: &Webhook, message_id: &str, at: i64) -> NewWebhookDelivery {
    NewWebhookDelivery {
        id: random_id("msg_", 24),
        webhook_id: webhook.id.clone(),
        tenant_id: webhook.tenant_id.clone(),
        event_type: "inbound.message".into(),
        message_id: Some(message_id.into()),
        payload: format!("{{\"id\":\"{message_id}\"}}"),
        created_at: at,
    }
}

fn attempt(n: u32, at: i64, status: Option<u16>) -> WebhookAttempt {
    WebhookAttempt {
        attempt: n,
        at,
        status_code: status,
        error: status.filter(|s| *s >= 300).map(|s| format!("HTTP {s}")),
        duration_ms: 7,
    }
}

pub(super) async fn webhooks_and_deliveries(store: &Store) {
    let tenant = new_tenant(Tier::Professional);
    store.create_tenant(&tenant, None).await.unwrap();
    let mut a = webhook(&tenant.id);
    let b = webhook(&tenant.id);
    store.create_webhook(&a, None).await.unwrap();
    store.create_webhook(&b, None).await.unwrap();
    assert_eq!(
        store.get_webhook(&tenant.id, &a.id).await.unwrap(),
        Some(a.clone())
    );
    assert_eq!(store.get_webhook("t_other", &a.id).await.unwrap(), None);
    assert_eq!(store.list_webhooks(&tenant.id).await.unwrap().len(), 2);
    // Rotation: the previous secret kept with its expiry.
    a.previous_secret_sealed = Some(a.secret_sealed.clone());
    a.previous_secret_expires_at = Some(99);
    a.secret_sealed = vec![4, 5, 6];
    a.event_types = vec!["bounced".into()];
    a.updated_at = 11;
    store.update_webhook(&a, None).await.unwrap();
    assert_eq!(
        store.get_webhook(&tenant.id, &a.id).await.unwrap(),
        Some(a.clone())
    );

    // Deliveries are written with the message, in one commit.
    let message = InboundMessage {
        id: random_id("m", 12),
        tenant_id: tenant.id.clone(),
        mail_from: "ann@example.org".into(),
        recipients: "[]".into(),
        size: 3,
        raw: b"x\r\n".to_vec(),
        received_at: 100,
        verdicts: Some("{\"spf\":{\"result\":\"pass\"}}".into()),
    };
    let to_a = delivery(&a, &message.id, 100);
    let to_b = delivery(&b, &message.id, 100);
    store
        .store_inbound_with_webhooks(
            std::slice::from_ref(&message),
            &[to_a.clone(), to_b.clone()],
        )
        .await
        .unwrap();
    let stored = store
        .get_inbound(&tenant.id, &message.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.verdicts, message.verdicts);
    // A delivery that cannot be written takes its message with it (same commit).
    let again = InboundMessage {
        id: random_id("m", 12),
        ..message.clone()
    };
    let mut broken = delivery(&a, &again.id, 100);
    broken.id = to_a.id.clone();
    assert!(
        store
            .store_inbound_with_webhooks(std::slice::from_ref(&again), &[broken])
            .await
            .is_err()
    );
    assert_eq!(
        store.get_inbound(&tenant.id, &again.id).await.unwrap(),
        None
    );

    // Claims: due only, never to two claimants, busy endpoints skipped.
    assert!(
        store
            .claim_webhook_deliveries("n1", 99, 1_000, 10, &[])
            .await
            .unwrap()
            .is_empty()
    );
    let skipped = store
        .claim_webhook_deliveries("n1", 100, 1_000, 10, std::slice::from_ref(&a.id))
        .await
        .unwrap();
    let ids: Vec<&str> = skipped.iter().map(|d| d.id.as_str()).collect();
    assert!(
        ids.contains(&to_b.id.as_str()) && !ids.contains(&to_a.id.as_str()),
        "{ids:?}"
    );
    let claimed = store
        .claim_webhook_deliveries("n2", 100, 1_000, 10, &[])
        .await
        .unwrap();
    let claimed: Vec<_> = claimed
        .into_iter()
        .filter(|d| d.tenant_id == tenant.id)
        .collect();
    assert_eq!(claimed.len(), 1, "b is leased to n1");
    assert_eq!(claimed[0].id, to_a.id);
    assert_eq!(claimed[0].payload, to_a.payload);
    // Only the lease holder records an attempt.
    assert!(
        !store
            .finish_webhook_attempt(
                &to_a.id,
                "n1",
                &attempt(1, 200, Some(500)),
                DeliveryOutcome::Retry(300)
            )
            .await
            .unwrap()
    );
    assert!(
        store
            .finish_webhook_attempt(
                &to_a.id,
                "n2",
                &attempt(1, 200, Some(500)),
                DeliveryOutcome::Retry(300)
            )
            .await
            .unwrap()
    );
    assert!(
        store
            .finish_webhook_attempt(
                &to_b.id,
                "n1",
                &attempt(1, 200, Some(204)),
                DeliveryOutcome::Delivered
            )
            .await
            .unwrap()
    );
    // Due again at 300, not before; then dead.
    assert!(
        store
            .claim_webhook_deliveries("n3", 299, 2_000, 10, &[])
            .await
            .unwrap()
            .iter()
            .all(|d| d.tenant_id != tenant.id)
    );
    let retried = store
        .claim_webhook_deliveries("n3", 300, 2_000, 10, &[])
        .await
        .unwrap();
    assert!(retried.iter().any(|d| d.id == to_a.id && d.attempts == 1));
    store
        .finish_webhook_attempt(
            &to_a.id,
            "n3",
            &attempt(2, 400, None),
            DeliveryOutcome::Dead,
        )
        .await
        .unwrap();
    let listed = store
        .list_webhook_deliveries(&tenant.id, &a.id, None, 10)
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].status, "dead");
    assert_eq!(listed[0].attempts, 2);
    assert_eq!(listed[0].payload, "", "listings carry no payload");
    let history = store.webhook_attempts(&to_a.id).await.unwrap();
    assert_eq!(history.len(), 2);
    assert_eq!(history[0].status_code, Some(500));
    assert_eq!(history[1].status_code, None);

    // Replay: due at once with a new window, whatever the status.
    assert!(
        store
            .replay_webhook_delivery(&tenant.id, &a.id, &to_a.id, 500, None)
            .await
            .unwrap()
    );
    assert!(
        !store
            .replay_webhook_delivery(&tenant.id, &b.id, &to_a.id, 500, None)
            .await
            .unwrap()
    );
    let replayed = store
        .get_webhook_delivery(&tenant.id, &a.id, &to_a.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (replayed.status.as_str(), replayed.retry_from),
        ("pending", 500)
    );
    // A lease released on restart makes it due at once.
    let leased = store
        .claim_webhook_deliveries("n4", 500, 9_000, 10, &[])
        .await
        .unwrap();
    assert!(leased.iter().any(|d| d.id == to_a.id));
    assert!(store.release_webhook_leases("n4").await.unwrap() >= 1);
    assert!(
        store
            .claim_webhook_deliveries("n5", 500, 9_000, 10, &[])
            .await
            .unwrap()
            .iter()
            .any(|d| d.id == to_a.id)
    );

    // Paging: (created_at, id) cursor, newest first.
    let page = store
        .list_webhook_deliveries(&tenant.id, &b.id, Some((100, &to_b.id)), 10)
        .await
        .unwrap();
    assert!(page.is_empty());

    // An endpoint a rule uses is not deleted; once the rule goes, it is.
    let domain = format!("{}.hooks.test", random_id("d", 8));
    store
        .add_domain(&inbound_domain(&tenant.id, &domain))
        .await
        .unwrap();
    let rule = ReceiptRule {
        id: random_id("r_", 16),
        tenant_id: tenant.id.clone(),
        domain: domain.clone(),
        local_part: "sales".into(),
        action: RuleAction::Webhook,
        reject_text: None,
        webhook_id: Some(b.id.clone()),
        forward_to: Vec::new(),
        members: Vec::new(),
        created_at: 1,
        updated_at: 1,
    };
    store.create_receipt_rule(&rule, None).await.unwrap();
    assert_eq!(
        store
            .get_receipt_rule(&tenant.id, &rule.id)
            .await
            .unwrap()
            .unwrap()
            .webhook_id,
        Some(b.id.clone())
    );
    match store.delete_webhook(&tenant.id, &b.id, None).await {
        Err(StoreError::InUse(why)) => assert!(why.contains(&format!("sales@{domain}")), "{why}"),
        other => panic!("expected InUse, got {other:?}"),
    }
    store
        .delete_receipt_rule(&tenant.id, &rule.id, None)
        .await
        .unwrap();
    assert!(store.delete_webhook(&tenant.id, &b.id, None).await.unwrap());
    assert!(
        store
            .get_webhook_delivery(&tenant.id, &b.id, &to_b.id)
            .await
            .unwrap()
            .is_none()
    );

    // Everything goes with the tenant, endpoints that rules still use included (the rules go
    // in the same statement).
    let uses_a = ReceiptRule {
        id: random_id("r_", 16),
        webhook_id: Some(a.id.clone()),
        ..rule
    };
    store.create_receipt_rule(&uses_a, None).await.unwrap();
    assert!(store.delete_tenant(&tenant.id, None).await.unwrap());
    assert_eq!(store.get_webhook(&tenant.id, &a.id).await.unwrap(), None);
}

/// Several nodes claiming at once (Postgres: `SKIP LOCKED`) each get different deliveries, and
/// together all of them.
pub(super) async fn concurrent_delivery_claims_never_overlap(store: &Store) {
    let tenant = new_tenant(Tier::Professional);
    store.create_tenant(&tenant, None).await.unwrap();
    let endpoint = webhook(&tenant.id);
    store.create_webhook(&endpoint, None).await.unwrap();
    let now = mailmux_core::now_ms();
    let message = InboundMessage {
        id: random_id("m", 12),
        tenant_id: tenant.id.clone(),
        mail_from: "ann@example.org".into(),
        recipients: "[]".into(),
        size: 3,
        raw: b"x\r\n".to_vec(),
        received_at: now,
        verdicts: None,
    };
    let batch: Vec<NewWebhookDelivery> = (0..40)
        .map(|_| delivery(&endpoint, &message.id, now))
        .collect();
    store
        .store_inbound_with_webhooks(std::slice::from_ref(&message), &batch)
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for node in 0..4 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                let claimed = store
                    .claim_webhook_deliveries(
                        &format!("node-{node}"),
                        now + 5,
                        now + 600_000,
                        3,
                        &[],
                    )
                    .await
                    .unwrap();
                if claimed.is_empty() {
                    return got;
                }
                got.extend(claimed.into_iter().map(|d| d.id));
            }
        }));
    }
    let mut ours = Vec::new();
    for task in tasks {
        ours.extend(
            task.await
                .unwrap()
                .into_iter()
                .filter(|id| batch.iter().any(|d| &d.id == id)),
        );
    }
    let mut unique = ours.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(ours.len(), 40, "every delivery claimed");
    assert_eq!(unique.len(), 40, "no delivery claimed twice");
}
