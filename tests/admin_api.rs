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
