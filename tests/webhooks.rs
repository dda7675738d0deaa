//! End to end, webhooks: the real binary, mail to its MX from Python smtplib, and a real HTTP
//! receiver that verifies every request with the `standardwebhooks` Python package (never with
//! our own code). Mail for a `webhook` rule arrives signed with the envelope, verdicts, rule,
//! plus-tag and raw message; failures are retried and show every attempt; a permanently failing
//! endpoint is dead-lettered after `max_age`; replay delivers once more; a hanging endpoint of
//! one tenant does not hold up another's; loopback URLs need `allowed_networks`; redirects are
//! not followed; a rotation signs with both secrets during its overlap; a `kill -9` after the
//! 250 still delivers after the restart. Everything stays on 127.0.0.0/8.

mod common;

use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use common::{DnsServer, Mailmux, WebhookReceiver, http, mx_send, wait_until};
use serde_json::{Value, json};

const MESSAGE: &[u8] = b"From: Ann <ann@sender.test>\r\nTo: sales@hooks.test\r\n\
    Subject: Order 42\r\nMessage-ID: <o42@sender.test>\r\n\r\nPlease ship it.\r\n";

fn available() -> bool {
    common::require_support() && common::require_python_module("standardwebhooks")
}

/// The senders' zone: SPF passes for 127.0.0.1, DMARC published (p=none).
fn dns() -> DnsServer {
    DnsServer::start(json!({
        "zones": ["sender.test", "hooks.test", "test"],
        "records": [
            {"name": "sender.test", "type": "TXT", "value": "v=spf1 ip4:127.0.0.1 -all"},
            {"name": "_dmarc.sender.test", "type": "TXT", "value": "v=DMARC1; p=none"},
        ],
    }))
}

/// mailmux with webhooks allowed on loopback, quick retries and a short dead-letter age;
/// `extra` overrides.
fn start(dns: &DnsServer, extra: &[(&str, &str)]) -> Mailmux {
    let servers = dns.dns_servers_env();
    let mut env = vec![
        ("MAILMUX_DELIVERY__DNS_SERVERS", servers.as_str()),
        ("MAILMUX_WEBHOOKS__ALLOWED_NETWORKS", "[\"127.0.0.0/8\"]"),
        ("MAILMUX_WEBHOOKS__RETRY_INITIAL_MS", "200"),
        ("MAILMUX_WEBHOOKS__RETRY_MAX_SECS", "1"),
        ("MAILMUX_WEBHOOKS__POLL_INTERVAL_MS", "100"),
        ("MAILMUX_WEBHOOKS__MAX_AGE_SECS", "4"),
    ];
    env.extend_from_slice(extra);
    Mailmux::start(&env)
}

/// A professional tenant (it has the `webhooks` feature) with `domain` verified and inbound.
fn tenant(mm: &Mailmux, name: &str, domain: &str) -> String {
    let tenant = mm.create_tenant(name, "professional");
    let (status, answer) = mm.api(
        "POST",
        &format!("/api/tenants/{tenant}/domains"),
        Some(json!({"domain": domain, "verified": true, "inbound": true})),
    );
    assert_eq!(status, 201, "{answer}");
    tenant
}

/// An inbound endpoint at `url`: (its id, its secret).
fn endpoint(mm: &Mailmux, tenant: &str, body: Value) -> (String, String) {
    let (status, created) = mm.api(
        "POST",
        &format!("/api/tenants/{tenant}/webhooks"),
        Some(body),
    );
    assert_eq!(status, 201, "{created}");
    let secret = created["secret"].as_str().unwrap().to_string();
    assert!(secret.starts_with("whsec_"), "{created}");
    (created["id"].as_str().unwrap().to_string(), secret)
}

/// A `webhook` rule for `address` to `webhook_id`: the rule's id.
fn rule(mm: &Mailmux, tenant: &str, address: &str, webhook_id: &str) -> String {
    let (status, rule) = mm.api(
        "POST",
        &format!("/api/tenants/{tenant}/addresses"),
        Some(json!({"address": address, "action": "webhook", "webhook_id": webhook_id})),
    );
    assert_eq!(status, 201, "{rule}");
    assert_eq!(rule["webhook_id"], webhook_id);
    rule["id"].as_str().unwrap().to_string()
}

fn deliver(mm: &Mailmux, to: &str) {
    let (code, text) = mx_send(mm.mx(), "ann@sender.test", to, MESSAGE);
    assert_eq!(code, 250, "{text}");
}

fn deliveries(mm: &Mailmux, tenant: &str, webhook: &str) -> Vec<Value> {
    let (status, list) = mm.api(
        "GET",
        &format!("/api/tenants/{tenant}/webhooks/{webhook}/deliveries"),
        None,
    );
    assert_eq!(status, 200, "{list}");
    list["deliveries"].as_array().unwrap().clone()
}

/// Waits (≤ 30 s) until the endpoint's only delivery has `status`; returns it.
fn wait_status(mm: &Mailmux, tenant: &str, webhook: &str, status: &str) -> Value {
    wait_until(Duration::from_secs(30), || {
        deliveries(mm, tenant, webhook)
            .into_iter()
            .find(|d| d["status"] == status)
    })
    .unwrap_or_else(|| {
        panic!(
            "no {status} delivery: {:?}",
            deliveries(mm, tenant, webhook)
        )
    })
}

const WAIT: Duration = Duration::from_secs(30);

#[test]
fn mail_for_a_webhook_rule_arrives_signed_with_envelope_verdicts_rule_tag_and_raw() {
    if !available() {
        return;
    }
    let dns = dns();
    let receiver = WebhookReceiver::start();
    let mm = start(&dns, &[]);
    let tenant = tenant(&mm, "hooks", "hooks.test");
    let (webhook, secret) = endpoint(
        &mm,
        &tenant,
        json!({"url": receiver.url("/in"), "kind": "inbound"}),
    );
    receiver.configure("/in", json!({"secrets": [secret]}));
    let rule_id = rule(&mm, &tenant, "sales@hooks.test", &webhook);

    deliver(&mm, "sales+vip@hooks.test");
    let got = receiver.wait_for("/in", 1, WAIT);
    let request = &got[0];
    assert_eq!(request["verified"], json!([true]), "{request}");
    let body = &request["body"];
    assert_eq!(body["type"], "inbound.message");
    assert_eq!(body["tenant_id"], tenant.as_str());
    assert_eq!(body["subject"], "Order 42");
    assert_eq!(body["from"][0]["address"], "ann@sender.test");
    assert_eq!(body["envelope"]["mail_from"], "ann@sender.test");
    let recipient = &body["envelope"]["recipients"][0];
    assert_eq!(recipient["address"], "sales+vip@hooks.test");
    assert_eq!(recipient["tag"], "vip");
    assert_eq!(recipient["rule_id"], rule_id.as_str());
    assert_eq!(body["rule"]["id"], rule_id.as_str());
    assert_eq!(body["rule"]["webhook_id"], webhook.as_str());
    assert_eq!(body["verdicts"]["spf"]["result"], "pass", "{body}");
    assert!(body["verdicts"]["dmarc"]["result"].is_string(), "{body}");
    assert!(body["text"].as_str().unwrap().contains("Please ship it."));
    // The raw message is the stored one, byte for byte (our trace headers in front).
    let raw = STANDARD.decode(body["raw"].as_str().unwrap()).unwrap();
    let (status, stored) = mm.api(
        "GET",
        &format!(
            "/api/tenants/{tenant}/inbound/{}/raw",
            body["id"].as_str().unwrap()
        ),
        None,
    );
    assert_eq!(status, 200);
    assert_eq!(stored.as_str().unwrap().as_bytes(), raw.as_slice());
    assert!(raw.ends_with(MESSAGE));

    // The delivery: delivered on its first attempt, its id the webhook-id header.
    let list = deliveries(&mm, &tenant, &webhook);
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["id"], request["webhook_id"]);
    assert_eq!(list[0]["status"], "delivered");
    assert_eq!(list[0]["attempts"], 1);
    assert_eq!(list[0]["history"][0]["status_code"], 204);

    // An endpoint a rule uses cannot be deleted; the rule's checks.
    let (status, answer) = mm.api(
        "DELETE",
        &format!("/api/tenants/{tenant}/webhooks/{webhook}"),
        None,
    );
    assert_eq!(status, 409, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("sales@hooks.test"),
        "{answer}"
    );
    let rules = format!("/api/tenants/{tenant}/addresses");
    for (body, why) in [
        (
            json!({"address": "x@hooks.test", "action": "webhook"}),
            "webhook_id",
        ),
        (
            json!({"address": "x@hooks.test", "action": "webhook", "webhook_id": "wh_nope"}),
            "not one of this tenant's webhooks",
        ),
        (
            json!({"address": "x@hooks.test", "action": "store", "webhook_id": webhook}),
            "only for action webhook",
        ),
    ] {
        let (status, answer) = mm.api("POST", &rules, Some(body));
        assert_eq!(status, 422, "{answer}");
        assert!(
            answer["error"]["message"].as_str().unwrap().contains(why),
            "{answer}"
        );
    }
    // Another tenant's endpoint is not this tenant's.
    let other = mm.create_tenant("other", "professional");
    let (status, answer) = mm.api(
        "GET",
        &format!("/api/tenants/{other}/webhooks/{webhook}"),
        None,
    );
    assert_eq!(status, 404, "{answer}");
    // Without the feature: the resource is 403 and a webhook rule 422.
    let free = mm.create_tenant("free", "free");
    let (status, answer) = mm.api(
        "POST",
        &format!("/api/tenants/{free}/domains"),
        Some(json!({"domain": "free-hooks.test", "verified": true, "inbound": true})),
    );
    assert_eq!(status, 201, "{answer}");
    let (status, answer) = mm.api("GET", &format!("/api/tenants/{free}/webhooks"), None);
    assert_eq!(status, 403, "{answer}");
    let (status, answer) = mm.api(
        "POST",
        &format!("/api/tenants/{free}/addresses"),
        Some(json!({"address": "a@free-hooks.test", "action": "webhook", "webhook_id": "wh_x"})),
    );
    assert_eq!(status, 422, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("webhooks"),
        "{answer}"
    );
}

#[test]
fn failures_are_retried_then_dead_lettered_and_replay_delivers_once_more() {
    if !available() {
        return;
    }
    let dns = dns();
    let receiver = WebhookReceiver::start();
    // Large messages are linked, not inlined: fetched with the tenant's own API key.
    let mm = start(&dns, &[("MAILMUX_WEBHOOKS__INLINE_RAW_MAX_BYTES", "64")]);
    let tenant = tenant(&mm, "retry", "hooks.test");
    let (flaky, flaky_secret) = endpoint(
        &mm,
        &tenant,
        json!({"url": receiver.url("/flaky"), "kind": "inbound"}),
    );
    let (down, _) = endpoint(
        &mm,
        &tenant,
        json!({"url": receiver.url("/down"), "kind": "inbound"}),
    );
    receiver.configure(
        "/flaky",
        json!({"fail_first": 2, "secrets": [flaky_secret]}),
    );
    receiver.configure("/down", json!({"fail_first": 1_000_000, "status": 503}));
    rule(&mm, &tenant, "flaky@hooks.test", &flaky);
    rule(&mm, &tenant, "down@hooks.test", &down);

    // Failing twice, then delivered: three attempts, one webhook-id, every one verified.
    deliver(&mm, "flaky@hooks.test");
    let got = receiver.wait_for("/flaky", 3, WAIT);
    assert_eq!(got.len(), 3, "{got:?}");
    assert!(
        got.iter().all(|r| r["verified"] == json!([true])),
        "{got:?}"
    );
    assert!(got.iter().all(|r| r["webhook_id"] == got[0]["webhook_id"]));
    let answered: Vec<&Value> = got.iter().map(|r| &r["answered"]).collect();
    assert_eq!(answered, [&json!(500), &json!(500), &json!(204)]);
    let done = wait_status(&mm, &tenant, &flaky, "delivered");
    assert_eq!(done["attempts"], 3, "{done}");
    let codes: Vec<&Value> = done["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| &a["status_code"])
        .collect();
    assert_eq!(codes, [&json!(500), &json!(500), &json!(204)], "{done}");
    // raw_url instead of raw, fetched with the tenant's API key.
    let body = &got[2]["body"];
    assert_eq!(body["raw"], Value::Null);
    let raw_url = body["raw_url"]
        .as_str()
        .unwrap_or_else(|| panic!("no raw_url: {body}"));
    let path = raw_url
        .strip_prefix(&mm.admin_url())
        .unwrap_or_else(|| panic!("{raw_url} is not on {}", mm.admin_url()));
    let (status, key) = mm.api(
        "POST",
        &format!("/api/tenants/{tenant}/api-keys"),
        Some(json!({"name": "hooks"})),
    );
    assert_eq!(status, 201, "{key}");
    let (status, raw) = http(mm.admin(), "GET", path, key["key"].as_str(), None);
    assert_eq!(status, 200, "{raw}");
    assert!(raw.as_str().unwrap().ends_with("Please ship it.\r\n"));

    // Failing for good: dead after max_age (4 s here), with every attempt listed.
    deliver(&mm, "down@hooks.test");
    let dead = wait_status(&mm, &tenant, &down, "dead");
    let attempts = dead["attempts"].as_u64().unwrap();
    assert!(attempts >= 2, "{dead}");
    assert_eq!(dead["history"].as_array().unwrap().len() as u64, attempts);
    assert_eq!(dead["history"][0]["status_code"], 503);
    assert!(
        dead["last_error"].as_str().unwrap().contains("503"),
        "{dead}"
    );
    let before = receiver.received_at("/down").len();
    assert_eq!(before as u64, attempts);

    // Replay, once the endpoint works again: delivered, with one request more.
    receiver.configure("/down", json!({"fail_first": 0}));
    let (status, replayed) = mm.api(
        "POST",
        &format!(
            "/api/tenants/{tenant}/webhooks/{down}/deliveries/{}/replay",
            dead["id"].as_str().unwrap()
        ),
        None,
    );
    assert_eq!(status, 200, "{replayed}");
    assert_eq!(replayed["status"], "pending");
    let delivered = wait_status(&mm, &tenant, &down, "delivered");
    assert_eq!(delivered["attempts"].as_u64().unwrap(), attempts + 1);
    let after = receiver.received_at("/down");
    assert_eq!(after.len(), before + 1);
    assert_eq!(after.last().unwrap()["webhook_id"], dead["id"]);
    // The CLI shows the same deliveries.
    let cli = mm.cli(["webhook", "deliveries", "--tenant", &tenant, "--id", &down]);
    assert_eq!(cli["deliveries"][0]["status"], "delivered", "{cli}");
}

#[test]
fn a_hanging_endpoint_does_not_delay_another_tenants_delivery() {
    if !available() {
        return;
    }
    let dns = dns();
    let receiver = WebhookReceiver::start();
    let mm = start(
        &dns,
        &[
            ("MAILMUX_WEBHOOKS__REQUEST_TIMEOUT_SECS", "60"),
            ("MAILMUX_WEBHOOKS__CONCURRENCY_PER_ENDPOINT", "1"),
        ],
    );
    let slow = tenant(&mm, "slow", "slow.test");
    let fast = tenant(&mm, "fast", "hooks.test");
    let (slow_hook, _) = endpoint(
        &mm,
        &slow,
        json!({"url": receiver.url("/slow"), "kind": "inbound"}),
    );
    let (fast_hook, secret) = endpoint(
        &mm,
        &fast,
        json!({"url": receiver.url("/fast"), "kind": "inbound"}),
    );
    receiver.configure("/slow", json!({"hang_secs": 40}));
    receiver.configure("/fast", json!({"secrets": [secret]}));
    rule(&mm, &slow, "*@slow.test", &slow_hook);
    rule(&mm, &fast, "sales@hooks.test", &fast_hook);

    // Tenant A's endpoint hangs on its first request, with more of its mail queued behind it.
    for n in 0..3 {
        deliver(&mm, &format!("u{n}@slow.test"));
    }
    wait_until(WAIT, || {
        deliveries(&mm, &slow, &slow_hook)
            .iter()
            .any(|d| d["attempts"] == 0)
            .then_some(())
    })
    .expect("tenant A's deliveries exist");
    let sent = Instant::now();
    deliver(&mm, "sales@hooks.test");
    let got = receiver.wait_for("/fast", 1, Duration::from_secs(10));
    let took = sent.elapsed();
    assert_eq!(got[0]["verified"], json!([true]));
    assert!(took < Duration::from_secs(10), "tenant B waited {took:?}");
    // …while A's first request is still hanging (the receiver records it when it answers).
    assert!(receiver.received_at("/slow").is_empty());
    assert!(
        deliveries(&mm, &slow, &slow_hook)
            .iter()
            .all(|d| d["status"] == "pending")
    );
}

#[test]
fn urls_are_checked_redirects_not_followed() {
    if !available() {
        return;
    }
    // Without webhooks.allowed_networks: loopback (and any non-public address) is refused.
    let strict = Mailmux::start(&[]);
    let refused = strict.create_tenant("strict", "professional");
    let path = format!("/api/tenants/{refused}/webhooks");
    for url in [
        "http://127.0.0.1:9/h",
        "http://localhost:9/h",
        "http://169.254.169.254/latest/meta-data",
        "http://10.1.2.3/h",
        "http://[::1]/h",
        "http://user:pw@127.0.0.1:9/h",
        "ftp://127.0.0.1/h",
    ] {
        let (status, answer) =
            strict.api("POST", &path, Some(json!({"url": url, "kind": "inbound"})));
        assert_eq!(status, 422, "{url}: {answer}");
    }
    let (status, answer) = strict.api(
        "POST",
        &path,
        Some(json!({"url": "http://127.0.0.1:9/h", "kind": "inbound"})),
    );
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("allowed_networks"),
        "{status} {answer}"
    );
    drop(strict);

    // With allowed_networks = ["127.0.0.0/8"] it is accepted; a 302 is a failure, not followed.
    let dns = dns();
    let receiver = WebhookReceiver::start();
    let mm = start(&dns, &[]);
    let tenant = tenant(&mm, "redirect", "hooks.test");
    let (webhook, _) = endpoint(
        &mm,
        &tenant,
        json!({"url": receiver.url("/moved"), "kind": "inbound"}),
    );
    receiver.configure("/moved", json!({"redirect": receiver.url("/target")}));
    rule(&mm, &tenant, "sales@hooks.test", &webhook);
    deliver(&mm, "sales@hooks.test");
    receiver.wait_for("/moved", 1, WAIT);
    let failed = wait_until(WAIT, || {
        deliveries(&mm, &tenant, &webhook)
            .into_iter()
            .find(|d| d["attempts"].as_u64() >= Some(1))
    })
    .unwrap();
    assert_eq!(failed["history"][0]["status_code"], 302, "{failed}");
    assert!(
        failed["history"][0]["error"]
            .as_str()
            .unwrap()
            .contains("redirects are not followed"),
        "{failed}"
    );
    assert_ne!(failed["status"], "delivered");
    assert!(receiver.received_at("/target").is_empty());
}

#[test]
fn a_rotation_signs_with_both_secrets_during_its_overlap() {
    if !available() {
        return;
    }
    let dns = dns();
    let receiver = WebhookReceiver::start();
    let mm = start(&dns, &[]);
    let tenant = tenant(&mm, "rotate", "hooks.test");
    let (webhook, first) = endpoint(
        &mm,
        &tenant,
        json!({"url": receiver.url("/rot"), "kind": "inbound"}),
    );
    rule(&mm, &tenant, "sales@hooks.test", &webhook);
    let rotate = format!("/api/tenants/{tenant}/webhooks/{webhook}/rotate");

    let (status, rotated) = mm.api("POST", &rotate, Some(json!({"overlap_secs": 3600})));
    assert_eq!(status, 200, "{rotated}");
    let second = rotated["secret"].as_str().unwrap().to_string();
    assert_ne!(second, first);
    assert!(rotated["previous_secret_expires_at"].is_i64(), "{rotated}");
    receiver.configure("/rot", json!({"secrets": [second, first]}));
    deliver(&mm, "sales@hooks.test");
    let got = receiver.wait_for("/rot", 1, WAIT);
    assert_eq!(got[0]["verified"], json!([true, true]), "{:?}", got[0]);
    assert_eq!(got[0]["signature"].as_str().unwrap().split(' ').count(), 2);

    // Rotated again with no overlap (through the CLI): only the newest secret signs.
    let rotated = mm.cli([
        "webhook",
        "rotate",
        "--tenant",
        &tenant,
        "--id",
        &webhook,
        "--overlap-secs",
        "0",
    ]);
    let third = rotated["secret"].as_str().unwrap().to_string();
    receiver.configure("/rot", json!({"secrets": [third, second]}));
    deliver(&mm, "sales@hooks.test");
    let got = receiver.wait_for("/rot", 2, WAIT);
    assert_eq!(got[1]["verified"], json!([true, false]), "{:?}", got[1]);
    assert_eq!(got[1]["signature"].as_str().unwrap().split(' ').count(), 1);
}

#[test]
fn a_kill_after_250_still_delivers_the_webhook_after_restart() {
    if !available() {
        return;
    }
    let dns = dns();
    let receiver = WebhookReceiver::start();
    let mut mm = start(&dns, &[]);
    let tenant = tenant(&mm, "crash", "hooks.test");
    // Disabled: nothing is sent before the crash, so only what was committed before the 250
    // can deliver it afterwards.
    let (webhook, secret) = endpoint(
        &mm,
        &tenant,
        json!({"url": receiver.url("/crash"), "kind": "inbound", "enabled": false}),
    );
    receiver.configure("/crash", json!({"secrets": [secret]}));
    rule(&mm, &tenant, "sales@hooks.test", &webhook);
    deliver(&mm, "sales@hooks.test");
    mm.kill9();
    mm.restart();
    let pending = deliveries(&mm, &tenant, &webhook);
    assert_eq!(pending.len(), 1, "{pending:?}");
    assert_eq!(pending[0]["status"], "pending");
    let (status, answer) = mm.api(
        "PUT",
        &format!("/api/tenants/{tenant}/webhooks/{webhook}"),
        Some(json!({"enabled": true})),
    );
    assert_eq!(status, 200, "{answer}");
    let got = receiver.wait_for("/crash", 1, WAIT);
    assert_eq!(got[0]["verified"], json!([true]));
    assert_eq!(got[0]["webhook_id"], pending[0]["id"]);
    wait_status(&mm, &tenant, &webhook, "delivered");
}
