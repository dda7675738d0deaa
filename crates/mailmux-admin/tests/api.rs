//! Every admin endpoint against a real store, on SQLite and on Postgres: shapes of the
//! contract, limits, pagination, audit, metrics and the error mapping.

mod harness;

use std::sync::Arc;

use axum::http::{Method, StatusCode};
use harness::{Harness, OPERATOR_TOKEN};
use mailmux_core::queued::{DeliveryReport, NewMessage, RecipientResult, RecipientStatus};
use mailmux_core::{BodyFlags, Envelope, QueueId, now_ms};
use serde_json::{Value, json};

on_both_backends!(
    tenants_crud_and_tier_semantics,
    a_tenant_read_can_be_written_back_whole,
    deleting_a_tenant_with_queued_mail,
    usage_counts_what_exists,
    domains_records_keys_and_limits,
    credentials_limits_and_revocation,
    api_keys_scope_and_lifecycle,
    messages_status_history_and_paging,
    audit_log_records_every_change,
    a_change_whose_audit_entry_fails_is_undone,
    metrics_render_store_numbers_and_sources,
    errors_have_the_json_shape,
);

/// Queues a message for `tenant` with `rcpts`; returns its id.
async fn enqueue(h: &Harness, tenant: &str, id: &str, rcpts: &[&str], at: i64) -> String {
    let message = NewMessage {
        id: QueueId(id.to_string()),
        tenant_id: tenant.to_string(),
        envelope: Envelope {
            mail_from: "app@sender.test".into(),
            rcpt_to: rcpts.iter().map(|r| r.to_string()).collect(),
            flags: BodyFlags::default(),
        },
        body: Arc::new(b"Subject: hi\r\n\r\nhello\r\n".to_vec()),
        body_path: None,
        origin: "smtp",
        priority: 0,
        created_at: at,
        lease: None,
    };
    h.store.commit_batch(&[message], &[]).await.unwrap();
    id.to_string()
}

async fn report(h: &Harness, id: &str, results: &[(u32, RecipientStatus, &str)]) {
    // Reports are recorded only under the reporting node's lease: take every queued message
    // (due or not, whoever leased it) as this test's "node" first.
    const REPORTER: &str = "api-test-reporter";
    let far = i64::MAX / 4;
    h.store
        .claim_due_ids(REPORTER, far, far + 1, 10_000)
        .await
        .unwrap();
    let report = DeliveryReport {
        message_id: QueueId(id.to_string()),
        lease_owner: REPORTER.into(),
        bounce: None,
        at: now_ms(),
        results: results
            .iter()
            .map(|(idx, status, reply)| RecipientResult {
                idx: *idx,
                status: *status,
                reply: reply.to_string(),
                remote_id: None,
            })
            .collect(),
        next_attempt_at: now_ms() + 60_000,
    };
    let outcome = h.store.commit_batch(&[], &[report]).await.unwrap();
    assert_eq!(outcome.recorded, [true], "report for {id}");
}

/// GET, change a field, PUT the whole object back: what a client of the guide's API does. The
/// fields the relay keeps must come back unchanged, and a stale `updated_at` is 409 (somebody
/// changed the tenant meanwhile), so a round trip never undoes another change unseen.
async fn a_tenant_read_can_be_written_back_whole(h: Harness) {
    let created = h
        .op(
            Method::POST,
            "/api/tenants",
            Some(json!({"name": "Round", "tier": "starter", "domain": "round.example"})),
            201,
        )
        .await;
    let id = created["id"].as_str().unwrap().to_string();
    let path = format!("/api/tenants/{id}");
    let read = h.op(Method::GET, &path, None, 200).await;
    assert_eq!(read["domain"], "round.example", "{read}");

    let mut changed = read.clone();
    changed["max_users"] = json!(50);
    changed["limits"]["max_domains"] = json!(7);
    changed["features"]["webhooks"] = json!(true);
    let done = h.op(Method::PUT, &path, Some(changed.clone()), 200).await;
    assert_eq!(done, json!({"success": true}));
    let after = h.op(Method::GET, &path, None, 200).await;
    assert_eq!(
        after["max_users"], 50,
        "the flat field wins over limits: {after}"
    );
    assert_eq!(after["limits"]["max_domains"], 7, "{after}");
    assert_eq!(after["features"]["webhooks"], true, "{after}");
    assert!(after["updated_at"].as_i64() > read["updated_at"].as_i64());

    // The version read before that change is stale now: refused, nothing written.
    let mut stale = read.clone();
    stale["max_users"] = json!(1);
    let (status, body) = h
        .call(Method::PUT, &path, Some(OPERATOR_TOKEN), Some(stale))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("updated_at")
    );
    let unchanged = h.op(Method::GET, &path, None, 200).await;
    assert_eq!(unchanged["max_users"], 50);

    // What the relay keeps is read-only: sent changed, 422 naming the field.
    for (field, value) in [
        ("id", json!("t_other")),
        ("created_at", json!(1)),
        ("domain", json!("elsewhere.example")),
    ] {
        let mut edited = json!({});
        edited[field] = value;
        let (status, body) = h
            .call(Method::PUT, &path, Some(OPERATOR_TOKEN), Some(edited))
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{field}: {body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.starts_with(field), "{field}: {message}");
    }
    // Sent as read, they are accepted (and change nothing).
    let current = h.op(Method::GET, &path, None, 200).await;
    h.op(Method::PUT, &path, Some(current.clone()), 200).await;
    assert_eq!(h.op(Method::GET, &path, None, 200).await, current);
}

async fn tenants_crud_and_tier_semantics(h: Harness) {
    let created = h
        .op(
            Method::POST,
            "/api/tenants",
            Some(json!({"name": "Acme", "tier": "free"})),
            201,
        )
        .await;
    let id = created["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("t_"), "{created}");
    assert_eq!(created["tier"], "free");
    assert_eq!(created["limits"]["max_users"], 5);
    assert_eq!(created["limits"]["max_messages_per_day"], 100);
    assert_eq!(created["features"]["api_access"], false);
    assert_eq!(created["status"], "active");
    assert_eq!(created["enabled"], true);
    // The guide's flat fields: no domain yet is `null`; the limits also at the top level.
    assert_eq!(created["domain"], Value::Null, "{created}");
    assert_eq!(created["max_users"], 5);
    assert!(created["updated_at"].is_i64(), "{created}");

    // With a first domain: the records come back with it.
    let with_domain = h
        .op(
            Method::POST,
            "/api/tenants",
            Some(json!({"name": "Beta", "tier": "starter", "domain": "Beta.Example."})),
            201,
        )
        .await;
    assert_eq!(with_domain["domain"]["domain"], "beta.example");
    assert_eq!(
        with_domain["domain"]["records"].as_array().unwrap().len(),
        4
    );
    // A taken domain refuses the whole creation (no tenant left behind).
    let before = h.op(Method::GET, "/api/tenants", None, 200).await;
    let (status, body) = h
        .call(
            Method::POST,
            "/api/tenants",
            Some(OPERATOR_TOKEN),
            Some(json!({"name": "Gamma", "domain": "beta.example"})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let after = h.op(Method::GET, "/api/tenants", None, 200).await;
    assert_eq!(before["tenants"], after["tenants"]);

    let list = h.op(Method::GET, "/api/tenants", None, 200).await;
    let ids: Vec<&str> = list["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 2);
    assert!(ids.contains(&id.as_str()));

    let shown = h
        .op(Method::GET, &format!("/api/tenants/{id}"), None, 200)
        .await;
    assert_eq!(shown["name"], "Acme");

    // Limits, status with reason, enabled, features.
    let ok = h
        .op(
            Method::PUT,
            &format!("/api/tenants/{id}"),
            Some(json!({
                "max_users": 7, "max_domains": 2, "max_storage_mb": 50,
                "max_messages_per_day": 500, "enabled": false,
                "status": "paused", "status_reason": "bounce rate too high",
                "features": {"webhooks": true}
            })),
            200,
        )
        .await;
    assert_eq!(ok, json!({"success": true}));
    let t = h
        .op(Method::GET, &format!("/api/tenants/{id}"), None, 200)
        .await;
    assert_eq!(t["limits"]["max_users"], 7);
    assert_eq!(t["limits"]["max_domains"], 2);
    assert_eq!(t["limits"]["max_storage_mb"], 50);
    assert_eq!(t["limits"]["max_messages_per_day"], 500);
    assert_eq!(t["enabled"], false);
    assert_eq!(t["status"], "paused");
    assert_eq!(t["status_reason"], "bounce rate too high");
    assert_eq!(t["features"]["webhooks"], true);
    assert_eq!(t["features"]["spam_filtering"], true, "untouched flag kept");

    // Tier change: the new tier's defaults, except what the same request sets.
    h.op(
        Method::PUT,
        &format!("/api/tenants/{id}"),
        Some(json!({"tier": "professional", "max_users": 3, "status": "active"})),
        200,
    )
    .await;
    let t = h
        .op(Method::GET, &format!("/api/tenants/{id}"), None, 200)
        .await;
    assert_eq!(t["tier"], "professional");
    assert_eq!(t["limits"]["max_users"], 3);
    assert_eq!(t["limits"]["max_domains"], 10, "professional default");
    assert_eq!(t["features"]["custom_domains"], true);
    assert_eq!(t["status"], "active");
    assert_eq!(
        t["status_reason"],
        Value::Null,
        "reason cleared with active"
    );

    // Bad values are refused with the field named.
    let (status, body) = h
        .call(
            Method::PUT,
            &format!("/api/tenants/{id}"),
            Some(OPERATOR_TOKEN),
            Some(json!({"status": "sleeping"})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("status"),
        "{body}"
    );

    // Delete, then it is gone.
    let ok = h
        .op(Method::DELETE, &format!("/api/tenants/{id}"), None, 200)
        .await;
    assert_eq!(ok, json!({"success": true}));
    h.op(Method::GET, &format!("/api/tenants/{id}"), None, 404)
        .await;
    h.op(Method::DELETE, &format!("/api/tenants/{id}"), None, 404)
        .await;
    h.op(Method::PUT, "/api/tenants/t_nope", Some(json!({})), 404)
        .await;

    // Pagination over tenants.
    for i in 0..3 {
        h.tenant(&format!("page{i}"), "free").await;
    }
    let mut seen = Vec::new();
    let mut path = "/api/tenants?limit=2".to_string();
    loop {
        let page = h.op(Method::GET, &path, None, 200).await;
        let items = page["tenants"].as_array().unwrap();
        assert!(items.len() <= 2);
        seen.extend(items.iter().map(|t| t["id"].as_str().unwrap().to_string()));
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/api/tenants?limit=2&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(seen.len(), 4, "{seen:?}");
    let mut dedup = seen.clone();
    dedup.sort();
    dedup.dedup();
    assert_eq!(dedup.len(), 4, "no tenant twice: {seen:?}");
}

async fn deleting_a_tenant_with_queued_mail(h: Harness) {
    let id = h.tenant("Queued", "starter").await;
    h.op(
        Method::POST,
        &format!("/api/tenants/{id}/domains"),
        Some(json!({"domain": "queued.example", "key_type": "ed25519"})),
        201,
    )
    .await;
    h.op(
        Method::POST,
        &format!("/api/tenants/{id}/credentials"),
        None,
        201,
    )
    .await;
    enqueue(&h, &id, "0000000000100000001", &["a@x.test"], now_ms()).await;
    let (status, body) = h
        .call(
            Method::DELETE,
            &format!("/api/tenants/{id}"),
            Some(OPERATOR_TOKEN),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "conflict");
    assert!(body["error"]["message"].as_str().unwrap().contains("force"));
    h.op(Method::GET, &format!("/api/tenants/{id}"), None, 200)
        .await;

    h.op(
        Method::DELETE,
        &format!("/api/tenants/{id}?force=true"),
        None,
        200,
    )
    .await;
    assert_eq!(h.store.queue_depth(None).await.unwrap(), 0, "queue dropped");
    assert!(
        h.store
            .get_domain("queued.example")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        h.store
            .get_dkim_key("queued.example")
            .await
            .unwrap()
            .is_none()
    );
    assert!(h.store.list_credentials(&id).await.unwrap().is_empty());
    // The audit log outlives the tenant and says what was dropped.
    let audit = h.op(Method::GET, "/api/audit", None, 200).await;
    let delete = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "tenant.delete" && e["target"] == id.as_str())
        .expect("tenant.delete audited");
    assert_eq!(delete["after"]["forced"], true);
    assert_eq!(delete["after"]["dropped_queued_messages"], 1);
    assert_eq!(delete["actor"], "operator");
}

async fn usage_counts_what_exists(h: Harness) {
    let id = h.tenant("Usage", "starter").await;
    for _ in 0..2 {
        h.op(
            Method::POST,
            &format!("/api/tenants/{id}/credentials"),
            None,
            201,
        )
        .await;
    }
    h.op(
        Method::POST,
        &format!("/api/tenants/{id}/domains"),
        Some(json!({"domain": "usage.example", "key_type": "ed25519"})),
        201,
    )
    .await;
    let now = now_ms();
    enqueue(&h, &id, "0000000000200000001", &["a@x.test"], now).await;
    let done = enqueue(&h, &id, "0000000000200000002", &["b@x.test"], now).await;
    report(&h, &done, &[(0, RecipientStatus::Delivered, "250 ok")]).await;
    // Two days old: in neither daily count.
    enqueue(
        &h,
        &id,
        "0000000000200000003",
        &["c@x.test"],
        now - 2 * 86_400_000,
    )
    .await;

    let usage = h
        .op(Method::GET, &format!("/api/tenants/{id}/usage"), None, 200)
        .await;
    assert_eq!(usage["tenant_id"], id.as_str());
    let u = &usage["usage"];
    assert_eq!(u["users"], 2);
    assert_eq!(u["domains"], 1);
    assert_eq!(u["messages_24h"], 2);
    assert!(u["messages_today"].as_u64().unwrap() <= 2);
    assert_eq!(u["queued"], 2);
    assert_eq!(u["storage_mb"], 1, "two small bodies stored, rounded up");
    let l = &usage["limits"];
    assert_eq!(l["max_users"], 25);
    assert_eq!(l["max_domains"], 3);
    assert_eq!(l["max_storage_mb"], 10_240);
    assert_eq!(l["max_messages_per_day"], 1_000);
    let keys: Vec<&String> = usage.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["limits", "tenant_id", "usage"]);
    h.op(Method::GET, "/api/tenants/t_none/usage", None, 404)
        .await;
}

async fn domains_records_keys_and_limits(h: Harness) {
    let id = h.tenant("Domains", "free").await;
    let added = h
        .op(
            Method::POST,
            &format!("/api/tenants/{id}/domains"),
            Some(json!({"domain": "Bücher.Example."})),
            201,
        )
        .await;
    assert_eq!(added["domain"], "xn--bcher-kva.example");
    assert_eq!(added["verified"], false);
    let records = added["records"].as_array().unwrap();
    let purposes: Vec<&str> = records
        .iter()
        .map(|r| r["purpose"].as_str().unwrap())
        .collect();
    assert_eq!(purposes, ["verification", "dkim", "spf", "dmarc"]);
    for r in records {
        assert_eq!(r["type"], "TXT");
        assert_eq!(r["status"], "pending");
        assert!(
            r["name"]
                .as_str()
                .unwrap()
                .ends_with("xn--bcher-kva.example")
        );
    }
    let selector = added["dkim"]["selector"].as_str().unwrap();
    assert!(
        selector.starts_with("mm") && selector.len() == 8,
        "{selector}"
    );
    assert_eq!(added["dkim"]["key_type"], "rsa");
    assert_eq!(
        records[1]["name"],
        format!("{selector}._domainkey.xn--bcher-kva.example")
    );
    let dkim_value = records[1]["value"].as_str().unwrap();
    assert!(
        dkim_value.starts_with("v=DKIM1; k=rsa; p=MII"),
        "{dkim_value}"
    );
    assert!(
        records[0]["value"]
            .as_str()
            .unwrap()
            .starts_with("mailmux-verification=")
    );
    assert_eq!(records[2]["value"], "v=spf1 a:relay.mailmux.test ~all");

    // The private key is sealed at rest and opens with the master key (0600).
    let key = h
        .store
        .get_dkim_key("xn--bcher-kva.example")
        .await
        .unwrap()
        .unwrap();
    let master_path = h.config.storage.data_dir.join("master.key");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&master_path)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let master = mailmux_store::MasterKey::load_or_create(&master_path).unwrap();
    let der = master
        .open(
            &key.private_key_sealed,
            &mailmux_store::DkimKey::seal_context(&key.domain, &key.selector),
        )
        .unwrap();
    assert!(ring::signature::RsaKeyPair::from_pkcs8(&der).is_ok());
    assert!(
        !key.private_key_sealed
            .windows(16)
            .any(|w| der.windows(16).any(|d| d == w))
    );

    // Free tier: one domain. Then 422.
    let (status, body) = h
        .call(
            Method::POST,
            &format!("/api/tenants/{id}/domains"),
            Some(OPERATOR_TOKEN),
            Some(json!({"domain": "second.example"})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["code"], "limit_exceeded");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_domains")
    );

    // Another tenant cannot take it, in any spelling: 409.
    let other = h.tenant("Other", "enterprise").await;
    for spelling in ["xn--bcher-kva.example", "BÜCHER.example"] {
        let (status, body) = h
            .call(
                Method::POST,
                &format!("/api/tenants/{other}/domains"),
                Some(OPERATOR_TOKEN),
                Some(json!({"domain": spelling})),
            )
            .await;
        assert_eq!(status, StatusCode::CONFLICT, "{spelling}: {body}");
    }
    // Malformed names: 422.
    for bad in [
        "127.0.0.1",
        "[::1]",
        "localhost",
        "under_score.example",
        "a..b",
        "",
    ] {
        let (status, body) = h
            .call(
                Method::POST,
                &format!("/api/tenants/{other}/domains"),
                Some(OPERATOR_TOKEN),
                Some(json!({"domain": bad})),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad:?}: {body}");
    }
    // Ed25519 on request; operator override marks it verified.
    let ed = h
        .op(
            Method::POST,
            &format!("/api/tenants/{other}/domains"),
            Some(json!({"domain": "ed.example", "key_type": "ed25519", "verified": true})),
            201,
        )
        .await;
    assert_eq!(ed["dkim"]["key_type"], "ed25519");
    assert_eq!(ed["verified"], true);
    assert_eq!(ed["verified_by"], "operator");
    let ed_value = ed["records"][1]["value"].as_str().unwrap();
    assert!(ed_value.starts_with("v=DKIM1; k=ed25519; p="), "{ed_value}");
    assert_eq!(ed_value.len(), "v=DKIM1; k=ed25519; p=".len() + 44);

    // List with pagination, show (any spelling), delete.
    for name in ["a.example", "b.example"] {
        h.op(
            Method::POST,
            &format!("/api/tenants/{other}/domains"),
            Some(json!({"domain": name, "key_type": "ed25519"})),
            201,
        )
        .await;
    }
    let page1 = h
        .op(
            Method::GET,
            &format!("/api/tenants/{other}/domains?limit=2"),
            None,
            200,
        )
        .await;
    let names1: Vec<&str> = page1["domains"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["domain"].as_str().unwrap())
        .collect();
    assert_eq!(names1, ["a.example", "b.example"]);
    let cursor = page1["next_cursor"].as_str().unwrap();
    let page2 = h
        .op(
            Method::GET,
            &format!("/api/tenants/{other}/domains?limit=2&cursor={cursor}"),
            None,
            200,
        )
        .await;
    assert_eq!(page2["domains"][0]["domain"], "ed.example");
    assert_eq!(page2["next_cursor"], Value::Null);

    let shown = h
        .op(
            Method::GET,
            &format!("/api/tenants/{id}/domains/B%C3%BCcher.example"),
            None,
            200,
        )
        .await;
    assert_eq!(shown["domain"], "xn--bcher-kva.example");
    // Another tenant's domain under this tenant's path: 404 like a missing one.
    h.op(
        Method::GET,
        &format!("/api/tenants/{other}/domains/xn--bcher-kva.example"),
        None,
        404,
    )
    .await;
    h.op(
        Method::DELETE,
        &format!("/api/tenants/{id}/domains/xn--bcher-kva.example"),
        None,
        200,
    )
    .await;
    h.op(
        Method::GET,
        &format!("/api/tenants/{id}/domains/xn--bcher-kva.example"),
        None,
        404,
    )
    .await;
    assert!(
        h.store
            .get_dkim_key("xn--bcher-kva.example")
            .await
            .unwrap()
            .is_none()
    );
    // Freed: now the other tenant can have it.
    h.op(
        Method::POST,
        &format!("/api/tenants/{other}/domains"),
        Some(json!({"domain": "bücher.example", "key_type": "ed25519"})),
        201,
    )
    .await;
}

async fn credentials_limits_and_revocation(h: Harness) {
    let id = h.tenant("Creds", "free").await;
    h.op(
        Method::PUT,
        &format!("/api/tenants/{id}"),
        Some(json!({"max_users": 2})),
        200,
    )
    .await;
    let first = h
        .op(
            Method::POST,
            &format!("/api/tenants/{id}/credentials"),
            None,
            201,
        )
        .await;
    assert!(first["username"].as_str().unwrap().starts_with("mm_"));
    assert_eq!(first["password"].as_str().unwrap().len(), 64);
    let second = h
        .op(
            Method::POST,
            &format!("/api/tenants/{id}/credentials"),
            None,
            201,
        )
        .await;
    let (status, body) = h
        .call(
            Method::POST,
            &format!("/api/tenants/{id}/credentials"),
            Some(OPERATOR_TOKEN),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_users")
    );

    let list = h
        .op(
            Method::GET,
            &format!("/api/tenants/{id}/credentials"),
            None,
            200,
        )
        .await;
    let creds = list["credentials"].as_array().unwrap();
    assert_eq!(creds.len(), 2);
    for c in creds {
        assert!(
            c.get("password").is_none() && c.get("secret_hash").is_none(),
            "{c}"
        );
        assert_eq!(c["revoked_at"], Value::Null);
    }
    let page = h
        .op(
            Method::GET,
            &format!("/api/tenants/{id}/credentials?limit=1"),
            None,
            200,
        )
        .await;
    assert_eq!(page["credentials"].as_array().unwrap().len(), 1);
    assert!(page["next_cursor"].is_string());

    let cid = first["id"].as_str().unwrap();
    h.op(
        Method::DELETE,
        &format!("/api/tenants/{id}/credentials/{cid}"),
        None,
        200,
    )
    .await;
    let shown = h
        .op(
            Method::GET,
            &format!("/api/tenants/{id}/credentials/{cid}"),
            None,
            200,
        )
        .await;
    assert!(shown["revoked_at"].is_i64(), "{shown}");
    // What SMTP AUTH reads: the credential is revoked in the store.
    let stored = h
        .store
        .find_credential(first["username"].as_str().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert!(stored.revoked_at.is_some());
    // Revoking again is fine; a revoked credential frees its slot.
    h.op(
        Method::DELETE,
        &format!("/api/tenants/{id}/credentials/{cid}"),
        None,
        200,
    )
    .await;
    h.op(
        Method::POST,
        &format!("/api/tenants/{id}/credentials"),
        None,
        201,
    )
    .await;
    h.op(
        Method::DELETE,
        &format!("/api/tenants/{id}/credentials/c_missing"),
        None,
        404,
    )
    .await;
    let _ = second;
}

async fn api_keys_scope_and_lifecycle(h: Harness) {
    let free = h.tenant("NoApi", "free").await;
    let (status, body) = h
        .call(
            Method::POST,
            &format!("/api/tenants/{free}/api-keys"),
            Some(OPERATOR_TOKEN),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("api_access")
    );

    let id = h.tenant("Api", "starter").await;
    let created = h
        .op(
            Method::POST,
            &format!("/api/tenants/{id}/api-keys"),
            Some(json!({"name": "deploy"})),
            201,
        )
        .await;
    let key = created["key"].as_str().unwrap().to_string();
    assert!(key.starts_with("mmk_"), "{key}");
    // The key works on its own tenant...
    let (status, body) = h
        .call(Method::GET, &format!("/api/tenants/{id}"), Some(&key), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // ...lists only its own tenant...
    let (_, list) = h.call(Method::GET, "/api/tenants", Some(&key), None).await;
    assert_eq!(list["tenants"].as_array().unwrap().len(), 1);
    assert_eq!(list["tenants"][0]["id"], id.as_str());
    // ...may not do operator things (403, its own tenant)...
    let (status, _) = h
        .call(
            Method::PUT,
            &format!("/api/tenants/{id}"),
            Some(&key),
            Some(json!({"max_users": 1000})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = h
        .call(
            Method::POST,
            "/api/tenants",
            Some(&key),
            Some(json!({"name": "x"})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = h.call(Method::GET, "/api/audit", Some(&key), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = h
        .call(
            Method::POST,
            &format!("/api/tenants/{id}/domains"),
            Some(&key),
            Some(json!({"domain": "self-verified.example", "verified": true})),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "tenants cannot skip DNS checks"
    );
    // ...but manages its own resources, recorded as itself.
    let (status, body) = h
        .call(
            Method::POST,
            &format!("/api/tenants/{id}/credentials"),
            Some(&key),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (_, audit) = h
        .call(
            Method::GET,
            &format!("/api/tenants/{id}/audit"),
            Some(&key),
            None,
        )
        .await;
    assert_eq!(
        audit["entries"][0]["actor"],
        format!("api_key:{}", created["id"].as_str().unwrap())
    );

    let listed = h
        .op(
            Method::GET,
            &format!("/api/tenants/{id}/api-keys"),
            None,
            200,
        )
        .await;
    let keys = listed["api_keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    assert!(keys[0].get("key").is_none() && keys[0].get("secret_hash").is_none());
    assert_eq!(keys[0]["name"], "deploy");

    // Turning api_access off shuts the key out at once.
    h.op(
        Method::PUT,
        &format!("/api/tenants/{id}"),
        Some(json!({"features": {"api_access": false}})),
        200,
    )
    .await;
    let (status, body) = h
        .call(Method::GET, &format!("/api/tenants/{id}"), Some(&key), None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    h.op(
        Method::PUT,
        &format!("/api/tenants/{id}"),
        Some(json!({"features": {"api_access": true}})),
        200,
    )
    .await;
    // A wrong secret with a real key id is refused.
    let forged = format!("{}.{}", key.split('.').next().unwrap(), "A".repeat(43));
    let (status, _) = h
        .call(
            Method::GET,
            &format!("/api/tenants/{id}"),
            Some(&forged),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // Revoked: 401.
    let kid = created["id"].as_str().unwrap();
    h.op(
        Method::DELETE,
        &format!("/api/tenants/{id}/api-keys/{kid}"),
        None,
        200,
    )
    .await;
    let (status, body) = h
        .call(Method::GET, &format!("/api/tenants/{id}"), Some(&key), None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    h.op(
        Method::DELETE,
        &format!("/api/tenants/{id}/api-keys/k_missing"),
        None,
        404,
    )
    .await;
}

async fn messages_status_history_and_paging(h: Harness) {
    let id = h.tenant("Msgs", "starter").await;
    let now = now_ms();
    let queued = enqueue(&h, &id, "0000000000300000001", &["q@x.test"], now - 4000).await;
    let delivered = enqueue(&h, &id, "0000000000300000002", &["d@x.test"], now - 3000).await;
    let deferred = enqueue(&h, &id, "0000000000300000003", &["f@x.test"], now - 2000).await;
    let bounced = enqueue(
        &h,
        &id,
        "0000000000300000004",
        &["b1@x.test", "b2@x.test"],
        now - 1000,
    )
    .await;
    report(
        &h,
        &delivered,
        &[(0, RecipientStatus::Delivered, "250 2.0.0 ok")],
    )
    .await;
    report(
        &h,
        &deferred,
        &[(0, RecipientStatus::Deferred, "451 4.7.1 try later")],
    )
    .await;
    report(
        &h,
        &bounced,
        &[
            (0, RecipientStatus::Deferred, "421 busy"),
            (1, RecipientStatus::Bounced, "550 5.1.1 no such user"),
        ],
    )
    .await;
    report(
        &h,
        &bounced,
        &[(0, RecipientStatus::Bounced, "550 5.7.1 rejected")],
    )
    .await;

    let all = h
        .op(
            Method::GET,
            &format!("/api/tenants/{id}/messages"),
            None,
            200,
        )
        .await;
    let ids: Vec<&str> = all["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [&bounced, &deferred, &delivered, &queued],
        "newest first"
    );
    let status_of = |want: &str| -> String {
        all["messages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["id"] == want)
            .unwrap()["status"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(status_of(&queued), "queued");
    assert_eq!(status_of(&delivered), "delivered");
    assert_eq!(status_of(&deferred), "deferred");
    assert_eq!(status_of(&bounced), "bounced");
    let d = &all["messages"][1];
    assert_eq!(d["recipients"][0]["status"], "deferred");
    assert_eq!(d["recipients"][0]["attempts"], 1);
    assert_eq!(d["recipients"][0]["last_reply"], "451 4.7.1 try later");

    for (filter, want) in [
        ("queued", vec![&queued]),
        ("deferred", vec![&deferred]),
        ("delivered", vec![&delivered]),
        ("bounced", vec![&bounced]),
    ] {
        let page = h
            .op(
                Method::GET,
                &format!("/api/tenants/{id}/messages?status={filter}"),
                None,
                200,
            )
            .await;
        let got: Vec<String> = page["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap().to_string())
            .collect();
        let want: Vec<String> = want.into_iter().cloned().collect();
        assert_eq!(got, want, "status={filter}");
    }
    let since = h
        .op(
            Method::GET,
            &format!("/api/tenants/{id}/messages?since={}", now - 2500),
            None,
            200,
        )
        .await;
    assert_eq!(since["messages"].as_array().unwrap().len(), 2);

    let page1 = h
        .op(
            Method::GET,
            &format!("/api/tenants/{id}/messages?limit=3"),
            None,
            200,
        )
        .await;
    assert_eq!(page1["messages"].as_array().unwrap().len(), 3);
    let cursor = page1["next_cursor"].as_str().unwrap();
    let page2 = h
        .op(
            Method::GET,
            &format!("/api/tenants/{id}/messages?limit=3&cursor={cursor}"),
            None,
            200,
        )
        .await;
    assert_eq!(page2["messages"][0]["id"], queued.as_str());
    assert_eq!(page2["next_cursor"], Value::Null);

    let detail = h
        .op(
            Method::GET,
            &format!("/api/tenants/{id}/messages/{bounced}"),
            None,
            200,
        )
        .await;
    assert_eq!(detail["status"], "bounced");
    assert_eq!(detail["attempts"], 2);
    let history = detail["history"].as_array().unwrap();
    assert_eq!(history.len(), 3, "{detail}");
    assert!(history.iter().any(|a| a["recipient"] == "b2@x.test"
        && a["outcome"] == "bounced"
        && a["reply"] == "550 5.1.1 no such user"));
    assert!(
        history
            .iter()
            .any(|a| a["recipient"] == "b1@x.test" && a["outcome"] == "deferred")
    );
    assert_eq!(
        detail["recipients"][1]["last_reply"],
        "550 5.1.1 no such user"
    );

    h.op(
        Method::GET,
        &format!("/api/tenants/{id}/messages/ffffffffffffffffffff"),
        None,
        404,
    )
    .await;
    h.op(
        Method::GET,
        &format!("/api/tenants/{id}/messages?status=lost"),
        None,
        400,
    )
    .await;
}

/// The actions of an audit log page, newest first.
fn audit_actions(log: &Value) -> Vec<&str> {
    log["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect()
}

/// The audit entry is written in the change's transaction: when the log refuses it, the
/// request fails with 503 and nothing changed.
async fn a_change_whose_audit_entry_fails_is_undone(h: Harness) {
    let id = h.tenant("Logged", "starter").await;
    let tenant_path = format!("/api/tenants/{id}");
    let before = h.op(Method::GET, &tenant_path, None, 200).await;

    mailmux_store::suite::refuse_audit_entries(&h.store, "tenant.update").await;
    let (status, body) = h
        .call(
            Method::PUT,
            &tenant_path,
            Some(OPERATOR_TOKEN),
            Some(json!({"name": "Renamed", "max_users": 2})),
        )
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], "storage_unavailable", "{body}");
    assert_eq!(h.op(Method::GET, &tenant_path, None, 200).await, before);
    mailmux_store::suite::accept_audit_entries(&h.store).await;

    mailmux_store::suite::refuse_audit_entries(&h.store, "credential.create").await;
    let credentials = format!("/api/tenants/{id}/credentials");
    let (status, body) = h
        .call(Method::POST, &credentials, Some(OPERATOR_TOKEN), None)
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let listed = h.op(Method::GET, &credentials, None, 200).await;
    assert_eq!(
        listed["credentials"],
        json!([]),
        "no credential without its entry"
    );
    mailmux_store::suite::accept_audit_entries(&h.store).await;

    // The log takes entries again: the same requests go through, each logged once.
    h.op(
        Method::PUT,
        &tenant_path,
        Some(json!({"name": "Renamed"})),
        200,
    )
    .await;
    h.op(Method::POST, &credentials, None, 201).await;
    let log = h
        .op(Method::GET, &format!("{tenant_path}/audit"), None, 200)
        .await;
    let actions = audit_actions(&log);
    assert_eq!(
        actions,
        ["credential.create", "tenant.update", "tenant.create"]
    );
}

async fn audit_log_records_every_change(h: Harness) {
    let id = h.tenant("Audited", "starter").await;
    h.op(
        Method::PUT,
        &format!("/api/tenants/{id}"),
        Some(json!({"max_users": 9})),
        200,
    )
    .await;
    let cred = h
        .op(
            Method::POST,
            &format!("/api/tenants/{id}/credentials"),
            None,
            201,
        )
        .await;
    h.op(
        Method::DELETE,
        &format!(
            "/api/tenants/{id}/credentials/{}",
            cred["id"].as_str().unwrap()
        ),
        None,
        200,
    )
    .await;
    h.op(
        Method::POST,
        &format!("/api/tenants/{id}/domains"),
        Some(json!({"domain": "audit.example", "key_type": "ed25519"})),
        201,
    )
    .await;
    h.op(
        Method::DELETE,
        &format!("/api/tenants/{id}/domains/audit.example"),
        None,
        200,
    )
    .await;
    let key = h.api_key(&id).await;
    let other = h.tenant("Elsewhere", "free").await;

    let log = h
        .op(Method::GET, &format!("/api/tenants/{id}/audit"), None, 200)
        .await;
    let actions = audit_actions(&log);
    assert_eq!(
        actions,
        [
            "api_key.create",
            "domain.delete",
            "domain.add",
            "credential.revoke",
            "credential.create",
            "tenant.update",
            "tenant.create"
        ],
        "newest first"
    );
    let update = &log["entries"][5];
    assert_eq!(update["before"]["limits"]["max_users"], 25);
    assert_eq!(update["after"]["limits"]["max_users"], 9);
    assert_eq!(update["actor"], "operator");
    assert!(update["at"].as_i64().unwrap() > 0);
    assert!(
        !log.to_string().contains(cred["password"].as_str().unwrap()),
        "secrets never in the log"
    );

    // Paging through the tenant's log.
    let page = h
        .op(
            Method::GET,
            &format!("/api/tenants/{id}/audit?limit=4"),
            None,
            200,
        )
        .await;
    assert_eq!(page["entries"].as_array().unwrap().len(), 4);
    let cursor = page["next_cursor"].as_str().unwrap();
    let rest = h
        .op(
            Method::GET,
            &format!("/api/tenants/{id}/audit?limit=4&cursor={cursor}"),
            None,
            200,
        )
        .await;
    assert_eq!(rest["entries"].as_array().unwrap().len(), 3);
    assert_eq!(rest["entries"][2]["action"], "tenant.create");

    // The global log has both tenants; a tenant key sees only its own tenant's.
    let global = h.op(Method::GET, "/api/audit", None, 200).await;
    assert!(
        global["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["tenant_id"] == other.as_str())
    );
    let (status, own) = h
        .call(
            Method::GET,
            &format!("/api/tenants/{id}/audit"),
            Some(&key),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        own["entries"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["tenant_id"] == id.as_str())
    );
}

async fn metrics_render_store_numbers_and_sources(h: Harness) {
    let id = h.tenant("Metered", "starter").await;
    let a = enqueue(
        &h,
        &id,
        "0000000000400000001",
        &["a@x.test", "b@x.test"],
        now_ms(),
    )
    .await;
    enqueue(&h, &id, "0000000000400000002", &["c@x.test"], now_ms()).await;
    report(
        &h,
        &a,
        &[
            (0, RecipientStatus::Delivered, "250 ok"),
            (1, RecipientStatus::Deferred, "451 later"),
        ],
    )
    .await;
    report(&h, &a, &[(1, RecipientStatus::Bounced, "550 no")]).await;

    let (status, text) = h
        .call(Method::GET, "/metrics", Some(OPERATOR_TOKEN), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let text = text.as_str().unwrap().to_string();
    for line in [
        format!("mailmux_messages_accepted_total{{tenant=\"{id}\"}} 2"),
        format!("mailmux_recipients_delivered_total{{tenant=\"{id}\"}} 1"),
        format!("mailmux_recipients_deferred_total{{tenant=\"{id}\"}} 1"),
        format!("mailmux_recipients_bounced_total{{tenant=\"{id}\"}} 1"),
        format!("mailmux_tenant_queue_depth{{tenant=\"{id}\"}} 1"),
        "mailmux_queue_depth 1".to_string(),
        "mailmux_smtp_sessions_active 3".to_string(),
        "# TYPE mailmux_messages_accepted_total counter".to_string(),
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
    let key = h.api_key(&id).await;
    let (status, _) = h.call(Method::GET, "/metrics", Some(&key), None).await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "per-tenant numbers are the operator's"
    );
    let (status, _) = h.call(Method::GET, "/metrics", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

type ErrorCase = (
    Option<Vec<u8>>,
    &'static str,
    u16,
    &'static str,
    &'static str,
);

async fn errors_have_the_json_shape(h: Harness) {
    let id = h.tenant("Errors", "free").await;
    let put = format!("/api/tenants/{id}");
    // (body, content type, status, error code, a word the message must contain)
    let cases: Vec<ErrorCase> = vec![
        (
            Some(b"{\"max_users\": ".to_vec()),
            "application/json",
            400,
            "bad_request",
            "EOF",
        ),
        (
            Some(br#"{"max_users": "ten"}"#.to_vec()),
            "application/json",
            400,
            "bad_request",
            "max_users",
        ),
        (
            Some(br#"{"max_users": -1}"#.to_vec()),
            "application/json",
            400,
            "bad_request",
            "max_users",
        ),
        (
            Some(br#"{"max_user": 3}"#.to_vec()),
            "application/json",
            400,
            "bad_request",
            "max_user",
        ),
        (
            Some(br#"{"features": {"webhook": true}}"#.to_vec()),
            "application/json",
            400,
            "bad_request",
            "webhook",
        ),
        (
            Some(br#"{"max_users": 3}"#.to_vec()),
            "text/plain",
            415,
            "unsupported_media_type",
            "application/json",
        ),
        (
            Some(vec![b' '; 2 * 1024 * 1024]),
            "application/json",
            413,
            "payload_too_large",
            "larger",
        ),
    ];
    for (body, content_type, want, code, mentions) in cases {
        let (status, value) = h
            .call_raw(Method::PUT, &put, Some(OPERATOR_TOKEN), body, content_type)
            .await;
        assert_eq!(status.as_u16(), want, "{value}");
        assert_eq!(value["error"]["code"], code, "{value}");
        let message = value["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(mentions),
            "{message:?} should mention {mentions:?}"
        );
    }

    for token in [None, Some("wrong"), Some("mmk_nokey.secret"), Some("")] {
        let (status, value) = h.call(Method::GET, "/api/tenants", token, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{token:?}");
        assert_eq!(value["error"]["code"], "unauthorized");
    }
    let (status, value) = h
        .call(Method::GET, "/api/nothing-here", Some(OPERATOR_TOKEN), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(value["error"]["code"], "no_route");
    let (status, value) = h
        .call(Method::PATCH, "/api/tenants", Some(OPERATOR_TOKEN), None)
        .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(value["error"]["code"], "method_not_allowed");
    for path in [
        "/api/tenants?limit=0",
        "/api/tenants?limit=abc",
        "/api/tenants?cursor=%21%21",
        "/api/tenants?bogus=1",
    ] {
        let (status, value) = h.call(Method::GET, path, Some(OPERATOR_TOKEN), None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {value}");
        assert_eq!(value["error"]["code"], "bad_request");
    }
    let (status, value) = h
        .call(
            Method::POST,
            "/api/tenants",
            Some(OPERATOR_TOKEN),
            Some(json!({"name": "  "})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{value}");
    // /healthz is the one route without a token.
    let (status, value) = h.call(Method::GET, "/healthz", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(value["status"], "ok");
}
