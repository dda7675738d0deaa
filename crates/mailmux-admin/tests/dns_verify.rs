//! DNS verification against a real authoritative DNS server on loopback
//! (tests/support/dns_server.py, zone rewritten at runtime): published records pass, missing
//! or wrong ones fail with a per-record status, and the re-check flags a verified domain whose
//! records disappeared. On SQLite and Postgres.

mod harness;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use axum::http::Method;
use harness::Harness;
use serde_json::{Value, json};

struct DnsServer {
    child: Child,
    zone: PathBuf,
    addr: SocketAddr,
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The Python with dnslib: `MAILMUX_TEST_PYTHON`, the repo's `.venv`, or `python3`.
fn python() -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("MAILMUX_TEST_PYTHON").map(PathBuf::from),
        Some(repo_root().join(".venv/bin/python3")),
        Some(PathBuf::from("python3")),
    ];
    candidates.into_iter().flatten().find(|python| {
        Command::new(python)
            .args(["-c", "import dnslib"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

impl DnsServer {
    fn start(test: &str) -> Option<DnsServer> {
        let Some(python) = python() else {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("{test}: no Python with dnslib (run `bash .ci/run --install-only`)");
            }
            println!("SKIPPED {test}: no Python with dnslib (set MAILMUX_TEST_PYTHON)");
            return None;
        };
        let dir = std::env::temp_dir().join(format!(
            "mailmux-admin-dns-{}-{}",
            std::process::id(),
            mailmux_core::now_ms()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let zone = dir.join("zone.json");
        DnsServer::write(&zone, &[]);
        let mut child = Command::new(python)
            .arg(repo_root().join("tests/support/dns_server.py"))
            .arg("--zone")
            .arg(&zone)
            .stdin(Stdio::piped()) // the server exits when we do
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start dns_server.py");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port: Value = serde_json::from_str(&line).expect("dns_server prints {\"port\": N}");
        let addr = SocketAddr::from(([127, 0, 0, 1], port["port"].as_u64().unwrap() as u16));
        Some(DnsServer { child, zone, addr })
    }

    /// Replaces the zone (atomically: the server re-reads on change).
    fn write(zone: &Path, records: &[Value]) {
        let doc = json!({"zones": ["verify.test", "wrong.test"], "records": records});
        let tmp = zone.with_extension("tmp");
        std::fs::write(&tmp, doc.to_string()).unwrap();
        std::fs::rename(&tmp, zone).unwrap();
    }

    fn publish(&self, records: &[Value]) {
        DnsServer::write(&self.zone, records);
    }
}

fn txt(name: &str, value: &str) -> Value {
    json!({"name": name, "type": "TXT", "value": value})
}

fn record<'a>(view: &'a Value, purpose: &str) -> &'a Value {
    view["records"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["purpose"] == purpose)
        .unwrap_or_else(|| panic!("no {purpose} record in {view}"))
}

fn statuses(view: &Value) -> Vec<(String, String)> {
    view["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["purpose"].as_str().unwrap().to_string(),
                r["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verification_on_sqlite() {
    let Some(dns) = DnsServer::start("verification_on_sqlite") else {
        return;
    };
    let h = Harness::sqlite_with_dns(&[dns.addr]).await;
    verification(h, dns).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verification_on_postgres() {
    if harness::postgres_server("verification_on_postgres").is_none() {
        return;
    }
    let Some(dns) = DnsServer::start("verification_on_postgres") else {
        return;
    };
    let h = Harness::postgres_with_dns("verification_on_postgres", &[dns.addr])
        .await
        .unwrap();
    verification(h, dns).await;
}

async fn verification(h: Harness, dns: DnsServer) {
    let tenant = h.tenant("Verifier", "professional").await;
    let added = h
        .op(
            Method::POST,
            &format!("/api/tenants/{tenant}/domains"),
            Some(json!({"domain": "verify.test"})),
            201,
        )
        .await;
    let verify = format!("/api/tenants/{tenant}/domains/verify.test/verify");

    // Nothing published: every record missing, not verified.
    let view = h.op(Method::POST, &verify, None, 200).await;
    assert_eq!(view["verified"], false);
    assert_eq!(
        statuses(&view),
        pairs(&[
            ("verification", "missing"),
            ("dkim", "missing"),
            ("spf", "missing"),
            ("dmarc", "missing")
        ])
    );
    assert!(view["checked_at"].is_i64());

    // Verification TXT right, DKIM key wrong, SPF without us, DMARC published.
    let verification = record(&added, "verification");
    let dkim = record(&added, "dkim");
    let wrong_dkim = dkim["value"].as_str().unwrap().replace("p=MII", "p=XII");
    dns.publish(&[
        txt(
            verification["name"].as_str().unwrap(),
            verification["value"].as_str().unwrap(),
        ),
        txt(dkim["name"].as_str().unwrap(), &wrong_dkim),
        txt("verify.test", "v=spf1 ip4:192.0.2.1 -all"),
        txt("_dmarc.verify.test", "v=DMARC1; p=quarantine"),
    ]);
    let view = h.op(Method::POST, &verify, None, 200).await;
    assert_eq!(view["verified"], false, "{view}");
    assert_eq!(
        statuses(&view),
        pairs(&[
            ("verification", "verified"),
            ("dkim", "mismatch"),
            ("spf", "mismatch"),
            ("dmarc", "verified")
        ])
    );

    // Everything as asked (the 2048-bit DKIM record is longer than one TXT string and than a
    // UDP answer: split strings and the TCP retry are exercised).
    let all_published = [
        txt(
            verification["name"].as_str().unwrap(),
            verification["value"].as_str().unwrap(),
        ),
        txt(
            dkim["name"].as_str().unwrap(),
            dkim["value"].as_str().unwrap(),
        ),
        txt(
            "verify.test",
            record(&added, "spf")["value"].as_str().unwrap(),
        ),
        txt("_dmarc.verify.test", "v=DMARC1; p=none"),
    ];
    dns.publish(&all_published);
    let view = h.op(Method::POST, &verify, None, 200).await;
    assert_eq!(view["verified"], true, "{view}");
    assert_eq!(view["verified_by"], "dns");
    assert_eq!(
        statuses(&view),
        pairs(&[
            ("verification", "verified"),
            ("dkim", "verified"),
            ("spf", "verified"),
            ("dmarc", "verified")
        ])
    );
    // What the SMTP side reads: the domain is verified in the store.
    let stored = h.store.get_domain("verify.test").await.unwrap().unwrap();
    assert!(stored.verified);
    assert_eq!(stored.verified_by.as_deref(), Some("dns"));
    // GET shows the recorded statuses.
    let shown = h
        .op(
            Method::GET,
            &format!("/api/tenants/{tenant}/domains/verify.test"),
            None,
            200,
        )
        .await;
    assert_eq!(statuses(&shown), statuses(&view));

    // A second domain with only the verification record: not enough to send.
    let second = h
        .op(
            Method::POST,
            &format!("/api/tenants/{tenant}/domains"),
            Some(json!({"domain": "wrong.test", "key_type": "ed25519"})),
            201,
        )
        .await;
    let second_verification = record(&second, "verification");
    let mut published = all_published.to_vec();
    published.push(txt(
        second_verification["name"].as_str().unwrap(),
        second_verification["value"].as_str().unwrap(),
    ));
    dns.publish(&published);
    let view = h
        .op(
            Method::POST,
            &format!("/api/tenants/{tenant}/domains/wrong.test/verify"),
            None,
            200,
        )
        .await;
    assert_eq!(view["verified"], false);
    assert_eq!(record(&view, "verification")["status"], "verified");
    assert_eq!(record(&view, "dkim")["status"], "missing");

    // The re-check: all in place → nothing flagged, nothing logged.
    let summary = mailmux_admin::jobs::recheck_verified(&h.store, &h.config)
        .await
        .unwrap();
    assert_eq!((summary.checked, summary.flagged), (1, 0));
    // The DKIM record disappears → flagged, still verified, audited as the system.
    published.retain(|r| r["name"] != dkim["name"]);
    dns.publish(&published);
    let summary = mailmux_admin::jobs::recheck_verified(&h.store, &h.config)
        .await
        .unwrap();
    assert_eq!((summary.checked, summary.flagged), (1, 1));
    let shown = h
        .op(
            Method::GET,
            &format!("/api/tenants/{tenant}/domains/verify.test"),
            None,
            200,
        )
        .await;
    assert!(shown["flagged_at"].is_i64(), "{shown}");
    assert_eq!(
        shown["verified"], true,
        "a re-check flags, it does not unverify"
    );
    assert_eq!(record(&shown, "dkim")["status"], "missing");
    let audit = h
        .op(
            Method::GET,
            &format!("/api/tenants/{tenant}/audit"),
            None,
            200,
        )
        .await;
    let flag = &audit["entries"][0];
    assert_eq!(flag["action"], "domain.flag");
    assert_eq!(flag["actor"], "system");
    assert_eq!(flag["target"], "verify.test");
    // Restored → the flag is cleared.
    dns.publish(&all_published);
    mailmux_admin::jobs::recheck_verified(&h.store, &h.config)
        .await
        .unwrap();
    let shown = h
        .op(
            Method::GET,
            &format!("/api/tenants/{tenant}/domains/verify.test"),
            None,
            200,
        )
        .await;
    assert_eq!(shown["flagged_at"], Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_dns_is_an_error_status_not_missing() {
    // A port nothing answers on: lookups fail, and the verdict says so instead of "missing".
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let dead = socket.local_addr().unwrap();
    drop(socket);
    let h = Harness::sqlite_with_dns(&[dead]).await;
    let tenant = h.tenant("Offline", "starter").await;
    h.op(
        Method::POST,
        &format!("/api/tenants/{tenant}/domains"),
        Some(json!({"domain": "offline.test", "key_type": "ed25519"})),
        201,
    )
    .await;
    let view = h
        .op(
            Method::POST,
            &format!("/api/tenants/{tenant}/domains/offline.test/verify"),
            None,
            200,
        )
        .await;
    assert_eq!(view["verified"], false);
    assert_eq!(record(&view, "verification")["status"], "error", "{view}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn return_path_is_used_once_its_records_are_found() {
    let Some(dns) = DnsServer::start("return_path_is_used_once_its_records_are_found") else {
        return;
    };
    let h = Harness::sqlite_with_dns(&[dns.addr]).await;
    let tenant = h.tenant("Bouncer", "professional").await;
    h.op(
        Method::POST,
        &format!("/api/tenants/{tenant}/domains"),
        Some(json!({"domain": "verify.test", "verified": true, "key_type": "ed25519"})),
        201,
    )
    .await;
    let path = format!("/api/tenants/{tenant}/domains/verify.test/return-path");
    let set = h
        .op(
            Method::PUT,
            &path,
            Some(json!({"return_path": "bounce.verify.test"})),
            200,
        )
        .await;
    let mx = record(&set, "bounces").clone();
    let spf = record(&set, "spf").clone();
    assert_eq!((&mx["type"], &spf["type"]), (&json!("MX"), &json!("TXT")));
    let in_use = |store: &mailmux_store::Store| {
        let store = store.clone();
        async move {
            store
                .get_return_path("verify.test")
                .await
                .unwrap()
                .unwrap()
                .verified()
                .map(str::to_string)
        }
    };

    let verify_path = format!("{path}/verify");
    let verify = || h.op(Method::POST, &verify_path, None, 200);

    // Nothing published: both missing, not used.
    let view = verify().await;
    assert_eq!(
        statuses(&view),
        pairs(&[("bounces", "missing"), ("spf", "missing")])
    );
    assert_eq!(
        (&view["verified"], &view["in_use"]),
        (&json!(false), &json!(false))
    );
    assert!(view["checked_at"].is_i64());

    // SPF right, MX naming another host: still not used.
    let spf_record = txt("bounce.verify.test", spf["value"].as_str().unwrap());
    dns.publish(&[
        json!({"name": "bounce.verify.test", "type": "MX", "value": "10 mx.elsewhere.example"}),
        spf_record.clone(),
    ]);
    let view = verify().await;
    assert_eq!(
        statuses(&view),
        pairs(&[("bounces", "mismatch"), ("spf", "verified")])
    );
    assert_eq!(in_use(&h.store).await, None);

    // Both as asked (a backup MX beside ours is fine): verified and in use.
    let published = [
        json!({"name": "bounce.verify.test", "type": "MX", "value": mx["value"]}),
        json!({"name": "bounce.verify.test", "type": "MX", "value": "20 backup.elsewhere.example"}),
        spf_record.clone(),
    ];
    dns.publish(&published);
    let view = verify().await;
    assert_eq!(
        statuses(&view),
        pairs(&[("bounces", "verified"), ("spf", "verified")])
    );
    assert_eq!(
        (&view["verified"], &view["in_use"]),
        (&json!(true), &json!(true))
    );
    assert!(view["verified_at"].is_i64());
    assert_eq!(
        in_use(&h.store).await.as_deref(),
        Some("bounce.verify.test")
    );
    assert_eq!(h.op(Method::GET, &path, None, 200).await, view);
    let audit = h
        .op(
            Method::GET,
            &format!("/api/tenants/{tenant}/audit"),
            None,
            200,
        )
        .await;
    assert_eq!(audit["entries"][0]["action"], "domain.return_path_verify");

    // The daily re-check: in place → still used; the MX gone → dropped, by the system.
    let summary = mailmux_admin::jobs::recheck_verified(&h.store, &h.config)
        .await
        .unwrap();
    assert_eq!(
        (summary.return_paths_checked, summary.return_paths_dropped),
        (1, 0)
    );
    dns.publish(&[spf_record]);
    let summary = mailmux_admin::jobs::recheck_verified(&h.store, &h.config)
        .await
        .unwrap();
    assert_eq!(
        (summary.return_paths_checked, summary.return_paths_dropped),
        (1, 1)
    );
    assert_eq!(in_use(&h.store).await, None);
    let view = h.op(Method::GET, &path, None, 200).await;
    assert_eq!(record(&view, "bounces")["status"], "missing");
    assert_eq!(view["in_use"], false);
    let audit = h
        .op(
            Method::GET,
            &format!("/api/tenants/{tenant}/audit"),
            None,
            200,
        )
        .await;
    let dropped = &audit["entries"][0];
    assert_eq!(
        (&dropped["action"], &dropped["actor"]),
        (&json!("domain.return_path_recheck"), &json!("system"))
    );

    // Published again and verified again; the same value PUT again keeps its verdict, a new
    // return path starts over, unverified.
    dns.publish(&published);
    verify().await;
    assert!(in_use(&h.store).await.is_some());
    let same = h
        .op(
            Method::PUT,
            &path,
            Some(json!({"return_path": "bounce.verify.test"})),
            200,
        )
        .await;
    assert_eq!(same["in_use"], true, "{same}");
    let changed = h
        .op(
            Method::PUT,
            &path,
            Some(json!({"return_path": "mail.verify.test"})),
            200,
        )
        .await;
    assert_eq!(changed["verified"], false);
    assert_eq!(in_use(&h.store).await, None);
}
