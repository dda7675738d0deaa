//! Tenant isolation, over every route the OpenAPI document lists (which is every route the
//! router serves, see openapi.rs): tenant A's key on anything of tenant B is 404 exactly like
//! a resource that does not exist, B's data is untouched afterwards, and no route but
//! `/healthz` answers without a valid token.

mod harness;

use axum::http::{Method, StatusCode};
use harness::{Harness, OPERATOR_TOKEN};
use serde_json::{Value, json};

on_both_backends!(tenant_keys_see_only_their_tenant, no_route_without_a_token);

/// Every (method, path template) of the API.
fn operations() -> Vec<(Method, String)> {
    let doc = serde_json::to_value(mailmux_admin::openapi()).unwrap();
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            if let Ok(m) = method.to_uppercase().parse::<Method>() {
                out.push((m, path.clone()));
            }
        }
    }
    assert!(out.len() >= 25, "suspiciously few routes: {out:?}");
    out
}

/// One tenant's resources, by path parameter name.
struct Fixture {
    tenant: String,
    key: String,
    domain: String,
    credential: String,
    api_key_id: String,
    message: String,
    rule: String,
    inbound: String,
    webhook: String,
}

async fn fixture(h: &Harness, name: &str, n: u8) -> Fixture {
    // Professional: the tier with `webhooks`, so another tenant's endpoint is a 404, not the
    // feature's 403.
    let tenant = h.tenant(name, "professional").await;
    let domain = format!("{}.example", name.to_lowercase());
    h.op(
        Method::POST,
        &format!("/api/tenants/{tenant}/domains"),
        Some(json!({"domain": domain, "key_type": "ed25519"})),
        201,
    )
    .await;
    let credential = h
        .op(
            Method::POST,
            &format!("/api/tenants/{tenant}/credentials"),
            None,
            201,
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let created = h
        .op(
            Method::POST,
            &format!("/api/tenants/{tenant}/api-keys"),
            None,
            201,
        )
        .await;
    let message = format!("00000000005000000{n:02}0");
    h.store
        .commit_batch(
            &[mailmux_core::queued::NewMessage {
                id: mailmux_core::QueueId(message.clone()),
                tenant_id: tenant.clone(),
                envelope: mailmux_core::Envelope {
                    mail_from: format!("a@{domain}"),
                    rcpt_to: vec!["r@x.test".into()],
                    flags: Default::default(),
                },
                body: std::sync::Arc::new(b"Subject: x\r\n\r\nx\r\n".to_vec()),
                body_path: None,
                origin: "smtp",
                priority: 0,
                created_at: mailmux_core::now_ms(),
                lease: None,
            }],
            &[],
        )
        .await
        .unwrap();
    let rule = h
        .op(
            Method::POST,
            &format!("/api/tenants/{tenant}/addresses"),
            Some(json!({"address": format!("*@{domain}"), "action": "store"})),
            201,
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let inbound = format!("00000000006000000{n:02}0");
    h.store
        .store_inbound(&[mailmux_store::InboundMessage {
            id: inbound.clone(),
            tenant_id: tenant.clone(),
            mail_from: "x@example.org".into(),
            recipients: "[]".into(),
            size: 3,
            raw: b"x\r\n".to_vec(),
            received_at: mailmux_core::now_ms(),
            verdicts: None,
        }])
        .await
        .unwrap();
    // A public IP literal: accepted without allowed_networks and without a DNS lookup.
    let webhook = h
        .op(
            Method::POST,
            &format!("/api/tenants/{tenant}/webhooks"),
            Some(json!({"url": "https://192.0.2.10/in", "kind": "inbound"})),
            201,
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    Fixture {
        tenant,
        webhook,
        key: created["key"].as_str().unwrap().to_string(),
        domain,
        credential,
        api_key_id: created["id"].as_str().unwrap().to_string(),
        message,
        rule,
        inbound,
    }
}

fn fill(template: &str, id: &str, of: &Fixture) -> String {
    template
        .replace("{id}", id)
        .replace("{domain}", &of.domain)
        .replace("{credential_id}", &of.credential)
        .replace("{key_id}", &of.api_key_id)
        .replace("{queue_id}", &of.message)
        .replace("{rule_id}", &of.rule)
        .replace("{message_id}", &of.inbound)
        .replace("{webhook_id}", &of.webhook)
        .replace("{delivery_id}", "msg_000000000000000000000000")
}

/// A well-formed body for the operations that take one, so a 404 cannot come from the body.
fn body_for(method: &Method, template: &str) -> Option<Value> {
    match (method.as_str(), template) {
        ("POST", "/api/tenants/{id}/domains") => Some(json!({"domain": "fresh-a.example"})),
        ("PUT", "/api/tenants/{id}/domains/{domain}") => Some(json!({"inbound": true})),
        ("POST", "/api/tenants/{id}/addresses")
        | ("PUT", "/api/tenants/{id}/addresses/{rule_id}") => {
            Some(json!({"address": "x@alpha.example", "action": "store"}))
        }
        ("PUT", "/api/tenants/{id}") => Some(json!({"max_users": 1000})),
        ("POST", "/api/tenants/{id}/api-keys") => Some(json!({"name": "intruder"})),
        ("POST", "/api/tenants/{id}/webhooks") => {
            Some(json!({"url": "https://192.0.2.11/in", "kind": "inbound"}))
        }
        ("PUT", "/api/tenants/{id}/webhooks/{webhook_id}") => Some(json!({"enabled": false})),
        ("PUT", "/api/tenants/{id}/credentials/{credential_id}") => {
            Some(json!({"rate_per_second": 1}))
        }
        ("PUT", "/api/tenants/{id}/domains/{domain}/return-path") => {
            Some(json!({"return_path": "bounce.fresh-a.example"}))
        }
        _ => None,
    }
}

/// What B can see of itself, to compare before and after the probes.
async fn snapshot(h: &Harness, b: &Fixture) -> Vec<Value> {
    let mut all = Vec::new();
    for path in [
        format!("/api/tenants/{}", b.tenant),
        format!("/api/tenants/{}/domains", b.tenant),
        format!("/api/tenants/{}/credentials", b.tenant),
        format!("/api/tenants/{}/api-keys", b.tenant),
        format!("/api/tenants/{}/messages", b.tenant),
        format!("/api/tenants/{}/addresses", b.tenant),
        format!("/api/tenants/{}/inbound", b.tenant),
        format!("/api/tenants/{}/webhooks", b.tenant),
    ] {
        all.push(h.op(Method::GET, &path, None, 200).await);
    }
    all
}

async fn tenant_keys_see_only_their_tenant(h: Harness) {
    let a = fixture(&h, "Alpha", 1).await;
    let b = fixture(&h, "Bravo", 2).await;
    let before = snapshot(&h, &b).await;
    let nobody = Fixture {
        tenant: "t_0000000000000000".into(),
        key: String::new(),
        domain: "nobody.example".into(),
        credential: "c_0000000000000000".into(),
        api_key_id: "k_0000000000000000".into(),
        message: "00000000009999999999".into(),
        rule: "r_0000000000000000".into(),
        inbound: "00000000009999999998".into(),
        webhook: "wh_0000000000000000".into(),
    };

    let mut checked = 0;
    for (method, template) in operations() {
        if !template.contains("{id}") {
            continue;
        }
        // 1. A's key, B's tenant id and B's resources.
        // 2. A's key, A's own tenant id but B's resources (domain, credential, key, message).
        let mut probes = vec![(fill(&template, &b.tenant, &b), "B's tenant")];
        if template.matches('{').count() > 1 {
            probes.push((fill(&template, &a.tenant, &b), "A's tenant, B's resource"));
        }
        for (path, what) in probes {
            let (status, value) = h
                .call(
                    method.clone(),
                    &path,
                    Some(&a.key),
                    body_for(&method, &template),
                )
                .await;
            assert_eq!(
                status,
                StatusCode::NOT_FOUND,
                "{method} {path} ({what}) with A's key must be 404: {value}"
            );
            assert_eq!(value["error"]["code"], "not_found", "{method} {path}");
            // Indistinguishable from a resource that does not exist at all.
            let ghost = if what == "B's tenant" {
                fill(&template, &nobody.tenant, &nobody)
            } else {
                fill(&template, &a.tenant, &nobody)
            };
            let (ghost_status, ghost_value) = h
                .call(
                    method.clone(),
                    &ghost,
                    Some(OPERATOR_TOKEN),
                    body_for(&method, &template),
                )
                .await;
            assert_eq!(
                ghost_status,
                StatusCode::NOT_FOUND,
                "{method} {ghost}: {ghost_value}"
            );
            let strip = |v: &Value, id: &str, of: &Fixture| {
                v["error"]["message"]
                    .as_str()
                    .unwrap()
                    .replace(id, "<tenant>")
                    .replace(&of.domain, "<x>")
                    .replace(&of.credential, "<x>")
                    .replace(&of.api_key_id, "<x>")
                    .replace(&of.message, "<x>")
                    .replace(&of.rule, "<x>")
                    .replace(&of.inbound, "<x>")
                    .replace(&of.webhook, "<x>")
            };
            let (id_a, id_g) = if what == "B's tenant" {
                (&b.tenant, &nobody.tenant)
            } else {
                (&a.tenant, &a.tenant)
            };
            assert_eq!(
                strip(&value, id_a, &b),
                strip(&ghost_value, id_g, &nobody),
                "{method} {path}: the message must not tell B's resource from a missing one"
            );
            checked += 1;
        }
    }
    assert!(checked >= 25, "only {checked} probes");
    // Nothing of B changed (its credential is not revoked, its domain still there…).
    assert_eq!(before, snapshot(&h, &b).await);
    // And A's key still works on A.
    let (status, _) = h
        .call(
            Method::GET,
            &format!("/api/tenants/{}", a.tenant),
            Some(&a.key),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    // The global listing shows A only its own tenant.
    let (_, list) = h
        .call(Method::GET, "/api/tenants", Some(&a.key), None)
        .await;
    assert_eq!(list["tenants"].as_array().unwrap().len(), 1);
    assert_eq!(list["tenants"][0]["id"], a.tenant.as_str());
}

async fn no_route_without_a_token(h: Harness) {
    let a = fixture(&h, "Alpha", 1).await;
    let mut checked = 0;
    for (method, template) in operations() {
        let path = fill(&template, &a.tenant, &a);
        for token in [None, Some("not-the-token"), Some("mmk_k_0000.secret")] {
            let (status, value) = h
                .call(method.clone(), &path, token, body_for(&method, &template))
                .await;
            if template == "/healthz" {
                assert_eq!(status, StatusCode::OK);
                continue;
            }
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "{method} {path} with {token:?}: {value}"
            );
            assert_eq!(value["error"]["code"], "unauthorized");
            checked += 1;
        }
    }
    assert_eq!(
        checked,
        (operations().len() - 1) * 3,
        "every route but /healthz, 3 ways"
    );
    // Nothing was changed by those requests.
    let t = h
        .op(
            Method::GET,
            &format!("/api/tenants/{}", a.tenant),
            None,
            200,
        )
        .await;
    assert_eq!(t["limits"]["max_users"], 100);
}
