//! Receipt rules and stored inbound mail: one rule per address (the catch-all included), the
//! few rules a recipient can match found in one query, rules and mail gone with their domain
//! or tenant; stored mail byte for byte, listed newest first without its bytes, counted towards
//! storage, expired by age.

use mailmux_core::credential::random_id;
use mailmux_core::{ReceiptRule, RuleAction, Tier};

use super::{inbound_domain, new_tenant};
use crate::{InboundMessage, Store, StoreError};

fn rule(tenant_id: &str, domain: &str, local: &str, action: RuleAction) -> ReceiptRule {
    ReceiptRule {
        id: random_id("r_", 16),
        tenant_id: tenant_id.into(),
        domain: domain.into(),
        local_part: local.into(),
        action,
        reject_text: None,
        webhook_id: None,
        forward_to: Vec::new(),
        members: Vec::new(),
        created_at: 1,
        updated_at: 1,
    }
}

pub(super) async fn receipt_rules_and_inbound_mail(store: &Store) {
    let tenant = new_tenant(Tier::Professional);
    store.create_tenant(&tenant, None).await.unwrap();
    let name = format!("{}.inbound.test", random_id("d", 8));
    store
        .add_domain(&inbound_domain(&tenant.id, &name))
        .await
        .unwrap();
    let sales = rule(&tenant.id, &name, "sales", RuleAction::Store);
    let any = rule(&tenant.id, &name, "*", RuleAction::Store);
    let mut gone = rule(&tenant.id, &name, "gone", RuleAction::Reject);
    gone.reject_text = Some("moved".into());
    for r in [&sales, &any, &gone] {
        store.create_receipt_rule(r, None).await.unwrap();
    }
    let twice = rule(&tenant.id, &name, "sales", RuleAction::Reject);
    assert!(matches!(
        store.create_receipt_rule(&twice, None).await,
        Err(StoreError::Conflict(_))
    ));
    let listed: Vec<String> = store
        .list_receipt_rules(&tenant.id)
        .await
        .unwrap()
        .iter()
        .map(|r| r.local_part.clone())
        .collect();
    assert_eq!(listed, ["gone", "sales", "*"], "catch-all last");
    let mut found = store
        .matching_receipt_rules(&name, &["sales+x", "sales", "*"])
        .await
        .unwrap();
    found.sort_by(|a, b| a.local_part.cmp(&b.local_part));
    assert_eq!(found, vec![any.clone(), sales.clone()]);
    let mut changed = gone.clone();
    changed.local_part = "left".into();
    changed.action = RuleAction::Forward;
    changed.reject_text = None;
    changed.forward_to = vec!["a@example.org".into(), "b@example.net".into()];
    changed.updated_at = 2;
    store.update_receipt_rule(&changed, None).await.unwrap();
    assert_eq!(
        store.get_receipt_rule(&tenant.id, &gone.id).await.unwrap(),
        Some(changed.clone())
    );
    assert!(
        store
            .delete_receipt_rule(&tenant.id, &gone.id, None)
            .await
            .unwrap()
    );
    assert!(
        !store
            .delete_receipt_rule(&tenant.id, &gone.id, None)
            .await
            .unwrap()
    );

    // Stored mail: exact bytes (a NUL and 8-bit included), newest first, counted, expired.
    let message = |id: &str, at: i64| InboundMessage {
        id: id.into(),
        tenant_id: tenant.id.clone(),
        mail_from: "a@example.org".into(),
        recipients: "[]".into(),
        size: 10,
        raw: b"Subject: \xc3\xa9\r\n\r\nx\0y\r\n".to_vec(),
        received_at: at,
        verdicts: None,
    };
    let older = format!("{}-1", random_id("m", 8));
    let newer = format!("{older}-2");
    store
        .store_inbound(&[message(&older, 100), message(&newer, 200)])
        .await
        .unwrap();
    let list = store.list_inbound(&tenant.id, None, 10).await.unwrap();
    assert_eq!(
        list.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(),
        [newer.as_str(), older.as_str()]
    );
    assert!(list[0].raw.is_empty(), "listings carry no bytes");
    assert_eq!(
        store.get_inbound(&tenant.id, &older).await.unwrap(),
        Some(message(&older, 100))
    );
    assert_eq!(store.get_inbound("t_other", &older).await.unwrap(), None);
    assert_eq!(store.inbound_bytes(&tenant.id).await.unwrap(), 20);
    // Retention on an injected clock: ten days after `older`, with ten days the default.
    const DAY: i64 = 86_400_000;
    assert!(store.expire_inbound(10 * DAY + 150, 10).await.unwrap() >= 1);
    assert_eq!(store.inbound_bytes(&tenant.id).await.unwrap(), 10);
    // A tenant's own retention wins over the default, for its mail only.
    let mut short = new_tenant(Tier::Professional);
    short.inbound_retention_days = 1;
    store.create_tenant(&short, None).await.unwrap();
    let short_id = format!("{}-s", random_id("m", 8));
    let at = 20 * DAY;
    store
        .store_inbound(&[
            InboundMessage {
                tenant_id: short.id.clone(),
                ..message(&short_id, at)
            },
            message(&format!("{short_id}-default"), at),
        ])
        .await
        .unwrap();
    // Two days on: the short tenant's day has passed; the other tenant keeps its two-day-old
    // message (ten days) and loses only `newer`, from the epoch.
    store.expire_inbound(at + 2 * DAY, 10).await.unwrap();
    assert_eq!(store.inbound_bytes(&short.id).await.unwrap(), 0);
    assert_eq!(store.inbound_bytes(&tenant.id).await.unwrap(), 10);
    // Default 0 keeps the mail of tenants without their own setting.
    store.expire_inbound(at + 400 * DAY, 0).await.unwrap();
    assert_eq!(store.inbound_bytes(&tenant.id).await.unwrap(), 10);
    let got = store.get_tenant(&short.id).await.unwrap().unwrap();
    assert_eq!(got.inbound_retention_days, 1);
    assert!(store.delete_tenant(&short.id, None).await.unwrap());

    // Rules go with their tenant, and so does its mail.
    assert!(store.delete_tenant(&tenant.id, None).await.unwrap());
    assert!(
        store
            .list_receipt_rules(&tenant.id)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.inbound_bytes(&tenant.id).await.unwrap(), 0);
}

/// The SRS secret: made once, the same on every read (every node), sealed under the master key.
pub(super) async fn srs_secret_is_shared(store: &Store) {
    let dir = std::env::temp_dir().join(format!("mailmux-srs-{}", random_id("d", 8)));
    let master = crate::MasterKey::load_or_create(&dir.join("master.key")).unwrap();
    // A database reused across runs may hold a secret sealed by an earlier run's key.
    sqlx::query("DELETE FROM srs_secret")
        .execute(&store.pool)
        .await
        .unwrap();
    let first = store.srs_secret(&master).await.unwrap();
    assert_eq!(first.len(), 32);
    assert_eq!(store.srs_secret(&master).await.unwrap(), first);
    let other = crate::MasterKey::load_or_create(&dir.join("other.key")).unwrap();
    assert!(
        store.srs_secret(&other).await.is_err(),
        "another master key"
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// The operator's postmaster mailbox: kept byte for byte, listed newest first without bytes,
/// paged by id, expired by age (0 days: kept).
pub(super) async fn postmaster_mailbox(store: &Store) {
    let day = 86_400_000;
    let now = 400 * day;
    let message = |id: &str, at: i64| crate::InboundMessage {
        id: id.into(),
        tenant_id: String::new(),
        mail_from: "alice@sender.test".into(),
        recipients: "[]".into(),
        size: 5,
        raw: b"x\r\n\xff\x00".to_vec(),
        received_at: at,
        verdicts: None,
    };
    let prefix = mailmux_core::credential::random_id("pm", 8);
    let (old, new) = (format!("{prefix}a"), format!("{prefix}b"));
    store
        .store_postmaster(&message(&old, now - 40 * day))
        .await
        .unwrap();
    store.store_postmaster(&message(&new, now)).await.unwrap();
    let got = store.get_postmaster(&new).await.unwrap().unwrap();
    assert_eq!(got.raw, b"x\r\n\xff\x00");
    let listed = store.list_postmaster(None, 1000).await.unwrap();
    let mine: Vec<&str> = listed
        .iter()
        .map(|m| m.id.as_str())
        .filter(|id| id.starts_with(&prefix))
        .collect();
    assert_eq!(mine, [new.as_str(), old.as_str()], "newest first");
    assert!(
        listed.iter().all(|m| m.raw.is_empty()),
        "no bytes in listings"
    );
    let after_new = store.list_postmaster(Some(&new), 1000).await.unwrap();
    assert!(after_new.iter().any(|m| m.id == old) && after_new.iter().all(|m| m.id != new));
    assert_eq!(
        store.expire_postmaster(now, 0).await.unwrap(),
        0,
        "0 days: kept"
    );
    assert!(store.expire_postmaster(now, 30).await.unwrap() >= 1);
    assert!(store.get_postmaster(&old).await.unwrap().is_none());
    assert!(store.get_postmaster(&new).await.unwrap().is_some());
}
