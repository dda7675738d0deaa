//! The admin REST API and the admin CLI against the real `mailmux serve`: over real HTTP on
//! loopback, with DNS verification against the loopback DNS server, a revoked credential
//! refused at its next AUTH, and the CLI and the API writing the same audit log. On SQLite and
//! on Postgres.

mod common;

use std::time::{Duration, Instant};

use common::{Mailmux, http};
use serde_json::{Value, json};

fn record<'a>(view: &'a Value, purpose: &str) -> &'a Value {
    view["records"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["purpose"] == purpose)
        .unwrap_or_else(|| panic!("no {purpose} record: {view}"))
}

/// Whether `user`/`password` pass AUTH on submission (STARTTLS), per swaks' exit status.
fn auth_ok(mm: &Mailmux, user: &str, password: &str) -> bool {
    let server = mm.submission().to_string();
    let (status, transcript) = common::swaks_status(&[
        "--server",
        &server,
        "--tls",
        "--auth",
        "PLAIN",
        "--auth-user",
        user,
        "--auth-password",
        password,
        "--quit-after",
        "AUTH",
    ]);
    match status.code() {
        Some(0) => true,
        Some(28) => false,
        other => panic!("swaks exited {other:?}:\n{transcript}"),
    }
}

fn scenario(mm: &Mailmux, dns: &common::DnsServer) {
    let admin = mm.admin();
    let token = Some(mm.admin_token());

    // Health without a token; everything else needs one.
    let (status, health) = http(admin, "GET", "/healthz", None, None);
    assert_eq!((status, health["status"].as_str()), (200, Some("ok")));
    // Every long-running part reports, each one ok.
    for component in [
        "database",
        "queue_writer",
        "scheduler",
        "lease_heartbeat",
        "delivery",
        "domain_rechecks",
        "dkim_rotation",
    ] {
        assert_eq!(
            health["components"][component]["status"], "ok",
            "{component}: {health}"
        );
    }
    let (status, body) = http(admin, "GET", "/api/tenants", None, None);
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["code"], "unauthorized");

    // A tenant with its first domain, over REST.
    let (status, created) = http(
        admin,
        "POST",
        "/api/tenants",
        token,
        Some(&json!({"name": "E2E", "tier": "starter", "domain": "e2e.test"})),
    );
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    let domain = &created["domain"];
    assert_eq!(domain["verified"], false);

    // Publish its records; verification over the real resolver path (delivery.dns_servers).
    let mut records = Vec::new();
    for purpose in ["verification", "dkim", "spf", "dmarc"] {
        let r = record(domain, purpose);
        records.push(json!({"name": r["name"], "type": "TXT", "value": r["value"]}));
    }
    dns.set_records(json!({"zones": ["e2e.test"], "records": records}));
    let (status, verified) = http(
        admin,
        "POST",
        &format!("/api/tenants/{id}/domains/e2e.test/verify"),
        token,
        None,
    );
    assert_eq!(status, 200, "{verified}");
    assert_eq!(verified["verified"], true, "{verified}");
    assert_eq!(verified["verified_by"], "dns");

    // The CLI sees and changes the same data.
    let listed = mm.cli(["tenant", "list"]);
    assert!(
        listed["tenants"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["id"] == id.as_str())
    );
    let updated = mm.cli(["tenant", "update", "--tenant", &id, "--max-users", "1"]);
    assert_eq!(updated["limits"]["max_users"], 1);
    let shown = mm.cli(["tenant", "show", "--tenant", &id]);
    assert_eq!(shown["usage"]["domains"], 1);
    let checked = mm.cli(["domain", "verify", "--tenant", &id, "--domain", "e2e.test"]);
    assert_eq!(record(&checked, "dkim")["status"], "verified");

    // max_users = 1: one credential, then 422 over REST.
    let (status, credential) = http(
        admin,
        "POST",
        &format!("/api/tenants/{id}/credentials"),
        token,
        None,
    );
    assert_eq!(status, 201, "{credential}");
    let (status, refused) = http(
        admin,
        "POST",
        &format!("/api/tenants/{id}/credentials"),
        token,
        None,
    );
    assert_eq!(status, 422, "{refused}");

    // Revocation bites at the next AUTH, within a second.
    let (user, password) = (
        credential["username"].as_str().unwrap(),
        credential["password"].as_str().unwrap(),
    );
    if common::require_tool("swaks") {
        assert!(
            auth_ok(mm, user, password),
            "fresh credential must authenticate"
        );
        let revoked = mm.cli([
            "credential",
            "revoke",
            "--tenant",
            &id,
            "--id",
            credential["id"].as_str().unwrap(),
        ]);
        assert!(revoked["revoked_at"].is_i64(), "{revoked}");
        // The listeners trust a credential for a second (their cache's bound, checked on
        // tokio's clock in the SMTP crate's tests); here: refused soon after, never again
        // accepted.
        let start = Instant::now();
        let refused_after = common::wait_until(Duration::from_secs(5), || {
            (!auth_ok(mm, user, password)).then(|| start.elapsed())
        })
        .expect("revoked credential still authenticates 5 s after revocation");
        assert!(
            refused_after < Duration::from_secs(3),
            "revocation took {refused_after:?}"
        );
        assert!(!auth_ok(mm, user, password), "accepted again after refusal");
    }

    // A tenant API key sees its tenant only; another tenant is 404.
    let (status, key) = http(
        admin,
        "POST",
        &format!("/api/tenants/{id}/api-keys"),
        token,
        Some(&json!({"name": "e2e"})),
    );
    assert_eq!(status, 201, "{key}");
    let key = key["key"].as_str().unwrap().to_string();
    let other = mm.cli(["tenant", "create", "--name", "Other"]);
    let other_id = other["id"].as_str().unwrap();
    let (status, _) = http(
        admin,
        "GET",
        &format!("/api/tenants/{id}/usage"),
        Some(&key),
        None,
    );
    assert_eq!(status, 200);
    let (status, body) = http(
        admin,
        "GET",
        &format!("/api/tenants/{other_id}"),
        Some(&key),
        None,
    );
    assert_eq!(status, 404, "{body}");

    // One audit log for REST and CLI changes.
    let (status, audit) = http(
        admin,
        "GET",
        &format!("/api/tenants/{id}/audit"),
        token,
        None,
    );
    assert_eq!(status, 200);
    let entries = audit["entries"].as_array().unwrap();
    let by = |action: &str| -> Vec<String> {
        entries
            .iter()
            .filter(|e| e["action"] == action)
            .map(|e| e["actor"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(by("tenant.create"), ["operator"]);
    assert_eq!(by("tenant.update"), ["cli"]);
    assert_eq!(by("domain.verify"), ["operator"]);
    if common::require_tool("swaks") {
        assert_eq!(by("credential.revoke"), ["cli"]);
    }

    // OpenAPI and metrics over the real listener.
    let (status, doc) = http(admin, "GET", "/openapi.json", token, None);
    assert_eq!(status, 200);
    assert!(doc["paths"]["/api/tenants/{id}/domains/{domain}/verify"]["post"].is_object());
    let (status, metrics) = http(admin, "GET", "/metrics", token, None);
    assert_eq!(status, 200);
    assert!(
        metrics
            .as_str()
            .unwrap()
            .lines()
            .any(|l| l == "mailmux_queue_depth 0"),
        "{metrics}"
    );

    // Delete; the CLI and REST agree it is gone.
    let (status, done) = http(admin, "DELETE", &format!("/api/tenants/{id}"), token, None);
    assert_eq!((status, &done), (200, &json!({"success": true})));
    let out = mm.cli_output(["tenant", "show", "--tenant", &id]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found"));
}

#[test]
fn admin_api_and_cli_on_sqlite() {
    if !common::require_python_module("dnslib") {
        return;
    }
    let dns = common::DnsServer::start(json!({"zones": ["e2e.test"], "records": []}));
    let mm = Mailmux::start(&[("MAILMUX_DELIVERY__DNS_SERVERS", &dns.dns_servers_env())]);
    scenario(&mm, &dns);
}

#[test]
fn admin_api_and_cli_on_postgres() {
    if !common::require_python_module("dnslib") {
        return;
    }
    let Some(url) = common::postgres_url() else {
        return;
    };
    let dns = common::DnsServer::start(json!({"zones": ["e2e.test"], "records": []}));
    let mm = Mailmux::start_with_db(
        &url,
        &[("MAILMUX_DELIVERY__DNS_SERVERS", &dns.dns_servers_env())],
    );
    scenario(&mm, &dns);
}

/// `swaks` from `from` to `to` as `user`; (exit code, transcript).
fn send(mm: &Mailmux, user: &str, password: &str, from: &str, to: &str) -> (Option<i32>, String) {
    let server = mm.submission().to_string();
    let (status, transcript) = common::swaks_status(&[
        "--server",
        &server,
        "--tls",
        "--auth",
        "PLAIN",
        "--auth-user",
        user,
        "--auth-password",
        password,
        "--from",
        from,
        "--to",
        to,
    ]);
    (status.code(), transcript)
}

fn get_tenant(mm: &Mailmux, id: &str) -> Value {
    let (status, tenant) = http(
        mm.admin(),
        "GET",
        &format!("/api/tenants/{id}"),
        Some(mm.admin_token()),
        None,
    );
    assert_eq!(status, 200, "{tenant}");
    tenant
}

fn put_tenant(mm: &Mailmux, id: &str, body: Value) -> (u16, Value) {
    http(
        mm.admin(),
        "PUT",
        &format!("/api/tenants/{id}"),
        Some(mm.admin_token()),
        Some(&body),
    )
}

/// The multi-tenancy guide's tenant shape, a per-tenant transport that delivery follows, and
/// the guide's `PUT {"enabled": false}`, over real HTTP against the real server.
fn tenant_shapes_transport_and_enabled(mm: &Mailmux, sink: &common::Sink) {
    let token = Some(mm.admin_token());
    let (status, created) = http(
        mm.admin(),
        "POST",
        "/api/tenants",
        token,
        Some(&json!({"name": "Acme Corp", "domain": "guide.test", "tier": "starter"})),
    );
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_string();

    // GET /api/tenants/{id}: the guide's flat fields beside the existing ones.
    let tenant = get_tenant(mm, &id);
    assert_eq!(tenant["domain"], "guide.test", "{tenant}");
    assert_eq!(tenant["enabled"], true);
    assert!(tenant["created_at"].is_i64(), "{tenant}");
    assert!(
        tenant["updated_at"].as_i64().unwrap() >= tenant["created_at"].as_i64().unwrap(),
        "{tenant}"
    );
    for (field, value) in [
        ("max_users", 25),
        ("max_domains", 3),
        ("max_storage_mb", 10_240),
        ("max_messages_per_day", 1_000),
    ] {
        assert_eq!(tenant[field], value, "{field}: {tenant}");
        assert_eq!(
            tenant["limits"][field], value,
            "limits.{field} kept: {tenant}"
        );
    }
    let features = tenant["features"].as_object().expect("features object");
    assert_eq!(features["dkim_signing"], true);
    assert_eq!(features["webhooks"], false);
    assert_eq!(tenant["tier"], "starter", "existing fields kept");
    assert_eq!(tenant["status"], "active");
    assert_eq!(tenant["transport"], Value::Null, "the configured default");

    // GET /api/tenants: each row carries them too.
    let (status, list) = http(mm.admin(), "GET", "/api/tenants", token, None);
    assert_eq!(status, 200, "{list}");
    let row = list["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == id.as_str())
        .unwrap_or_else(|| panic!("tenant {id} listed: {list}"));
    for field in [
        "domain",
        "enabled",
        "created_at",
        "updated_at",
        "max_users",
        "max_domains",
        "max_storage_mb",
        "max_messages_per_day",
        "features",
        "limits",
    ] {
        assert_eq!(row[field], tenant[field], "{field} in the list row: {row}");
    }

    // Transport: an unknown value is 422 naming the field; a known one is kept and shown.
    let (status, refused) = put_tenant(mm, &id, json!({"transport": "pigeon"}));
    assert_eq!(status, 422, "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("transport"),
        "{refused}"
    );
    // A later millisecond than the last write, so that updated_at can be seen to move.
    let last_write = tenant["updated_at"].as_i64().unwrap();
    common::wait_until(Duration::from_secs(1), || {
        (mailmux_core::now_ms() > last_write).then_some(())
    });
    let (status, done) = put_tenant(mm, &id, json!({"transport": "smarthost"}));
    assert_eq!((status, &done), (200, &json!({"success": true})));
    let after = get_tenant(mm, &id);
    assert_eq!(after["transport"], "smarthost");
    assert!(
        after["updated_at"].as_i64() > tenant["updated_at"].as_i64(),
        "updated_at moves on a change: {after}"
    );
    // The CLI sets it as well, `default` meaning null; the limits PUT leaves it alone.
    let shown = mm.cli(["tenant", "update", "--tenant", &id, "--transport", "mx"]);
    assert_eq!(shown["transport"], "mx");
    let shown = mm.cli([
        "tenant",
        "update",
        "--tenant",
        &id,
        "--transport",
        "default",
    ]);
    assert_eq!(shown["transport"], Value::Null);
    let out = mm.cli_output(["tenant", "update", "--tenant", &id, "--transport", "pigeon"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("transport"));
    assert_eq!(
        put_tenant(mm, &id, json!({"transport": "smarthost"})).0,
        200
    );
    assert_eq!(put_tenant(mm, &id, json!({"max_users": 30})).0, 200);
    assert_eq!(get_tenant(mm, &id)["transport"], "smarthost");

    // Mail of a smarthost tenant goes through the smarthost (the default transport is mx,
    // and far.test has no MX anywhere).
    mm.add_verified_domain(&id, "guide.test");
    let (user, password) = mm.create_credential(&id);
    if common::require_tool("swaks") {
        let (code, transcript) = send(mm, &user, &password, "app@guide.test", "someone@far.test");
        assert_eq!(code, Some(0), "{transcript}");
        let received = sink.wait_for_messages(1, Duration::from_secs(30));
        assert_eq!(received[0].rcpt_tos, ["someone@far.test"]);
        assert_eq!(received[0].mail_from, "app@guide.test");
    }

    // null: back to the configured default.
    assert_eq!(put_tenant(mm, &id, json!({"transport": null})).0, 200);
    assert_eq!(get_tenant(mm, &id)["transport"], Value::Null);

    // PUT {"enabled": false} as the guide shows: success, and the tenant's mail is refused.
    let (status, done) = put_tenant(mm, &id, json!({"enabled": false}));
    assert_eq!((status, &done), (200, &json!({"success": true})));
    assert_eq!(get_tenant(mm, &id)["enabled"], false);
    if common::require_tool("swaks") {
        let (code, transcript) = send(mm, &user, &password, "app@guide.test", "someone@far.test");
        assert_ne!(
            code,
            Some(0),
            "a disabled tenant's mail is refused: {transcript}"
        );
        assert!(transcript.contains("550 5.7.1"), "{transcript}");
    }
    assert_eq!(put_tenant(mm, &id, json!({"enabled": true})).0, 200);
    assert_eq!(get_tenant(mm, &id)["enabled"], true);
}

fn smarthost_relay(sink: &common::Sink, dns: &common::DnsServer, db: Option<&str>) -> Mailmux {
    let smarthost = sink.addr().to_string();
    let env = [
        ("MAILMUX_DELIVERY__DNS_SERVERS", dns.dns_servers_env()),
        ("MAILMUX_DELIVERY__SMARTHOST", smarthost),
        ("MAILMUX_DELIVERY__SMARTHOST_TLS", "none".to_string()),
        ("MAILMUX_QUEUE__POLL_INTERVAL_MS", "200".to_string()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    match db {
        Some(url) => Mailmux::start_with_db(url, &env),
        None => Mailmux::start(&env),
    }
}

#[test]
fn tenant_shapes_transport_and_enabled_on_sqlite() {
    if !common::require_support() {
        return;
    }
    let sink = common::Sink::start(&[]);
    let dns = common::DnsServer::start(json!({"zones": ["far.test"], "records": []}));
    let mm = smarthost_relay(&sink, &dns, None);
    tenant_shapes_transport_and_enabled(&mm, &sink);
}

#[test]
fn tenant_shapes_transport_and_enabled_on_postgres() {
    if !common::require_support() {
        return;
    }
    let Some(url) = common::postgres_url() else {
        return;
    };
    let sink = common::Sink::start(&[]);
    let dns = common::DnsServer::start(json!({"zones": ["far.test"], "records": []}));
    let mm = smarthost_relay(&sink, &dns, Some(&url));
    tenant_shapes_transport_and_enabled(&mm, &sink);
}

/// A DKIM record is required only of a tenant that signs: a free tenant's domain verifies
/// with its verification TXT alone, and says why the DKIM record is optional.
#[test]
fn dkim_record_is_required_only_when_the_tenant_signs() {
    if !common::require_python_module("dnslib") {
        return;
    }
    let dns =
        common::DnsServer::start(json!({"zones": ["free.test", "signs.test"], "records": []}));
    let mm = Mailmux::start(&[("MAILMUX_DELIVERY__DNS_SERVERS", &dns.dns_servers_env())]);
    let token = Some(mm.admin_token());
    let create = |name: &str, tier: &str, domain: &str| -> (String, Value) {
        let (status, created) = http(
            mm.admin(),
            "POST",
            "/api/tenants",
            token,
            Some(&json!({"name": name, "tier": tier, "domain": domain})),
        );
        assert_eq!(status, 201, "{created}");
        (
            created["id"].as_str().unwrap().to_string(),
            created["domain"].clone(),
        )
    };
    let (free_id, free) = create("Free", "free", "free.test");
    let (_, signs) = create("Signs", "starter", "signs.test");

    assert_eq!(free["dkim_signing"], false, "{free}");
    assert!(free["note"].as_str().unwrap().contains("DKIM"), "{free}");
    assert_eq!(record(&free, "dkim")["required"], false, "{free}");
    assert_eq!(record(&free, "verification")["required"], true);
    assert_eq!(signs["dkim_signing"], true, "{signs}");
    assert!(signs.get("note").is_none(), "{signs}");
    assert_eq!(record(&signs, "dkim")["required"], true, "{signs}");

    // Only the verification TXT published for both.
    let txt = |view: &Value| {
        let r = record(view, "verification");
        json!({"name": r["name"], "type": "TXT", "value": r["value"]})
    };
    dns.set_records(
        json!({"zones": ["free.test", "signs.test"], "records": [txt(&free), txt(&signs)]}),
    );
    let verify = |id: &str, domain: &str| {
        let (status, view) = http(
            mm.admin(),
            "POST",
            &format!("/api/tenants/{id}/domains/{domain}/verify"),
            token,
            None,
        );
        assert_eq!(status, 200, "{view}");
        view
    };
    let free_checked = verify(&free_id, "free.test");
    assert_eq!(free_checked["verified"], true, "{free_checked}");
    assert_eq!(record(&free_checked, "dkim")["status"], "missing");
    let signs_id = signs["tenant_id"].as_str().unwrap();
    let signs_checked = verify(signs_id, "signs.test");
    assert_eq!(signs_checked["verified"], false, "{signs_checked}");

    // Signing turned on: the record is required from now on, and the note is gone.
    let (status, _) = http(
        mm.admin(),
        "PUT",
        &format!("/api/tenants/{free_id}"),
        token,
        Some(&json!({"features": {"dkim_signing": true}})),
    );
    assert_eq!(status, 200);
    let (status, shown) = http(
        mm.admin(),
        "GET",
        &format!("/api/tenants/{free_id}/domains/free.test"),
        token,
        None,
    );
    assert_eq!(status, 200, "{shown}");
    assert_eq!(shown["dkim_signing"], true);
    assert!(shown.get("note").is_none(), "{shown}");
    assert_eq!(record(&shown, "dkim")["required"], true, "{shown}");
}
