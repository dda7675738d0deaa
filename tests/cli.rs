//! The command line and configuration as an operator meets them: finding the configuration
//! and the database, every operator task of the REST API, output for scripts and for people,
//! the logs and the generated certificate of `serve`, the container image and the README's
//! first run.
#![allow(clippy::disallowed_methods)] // synchronous tests driving real processes: no runtime here for std::thread::sleep to block

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{Mailmux, http};
use serde_json::{Value, json};

fn mailmux(dir: &std::path::Path) -> Command {
    let mut command = Command::new(common::mailmux_bin());
    command.current_dir(dir);
    // Nothing from the developer's environment may leak into these runs.
    for (key, _) in std::env::vars() {
        if key.starts_with("MAILMUX_") {
            command.env_remove(key);
        }
    }
    command
}

#[test]
fn version_and_help() {
    let dir = common::TestDir::new("cli-version");
    let out = mailmux(dir.path()).arg("--version").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("mailmux "));
    let help = mailmux(dir.path()).arg("--help").output().unwrap();
    let text = String::from_utf8_lossy(&help.stdout);
    for command in [
        "serve",
        "migrate",
        "health",
        "tenant",
        "credential",
        "domain",
        "api-key",
        "message",
        "audit",
    ] {
        assert!(text.contains(command), "--help lists {command}: {text}");
    }
}

#[test]
fn invalid_configuration_names_the_key_and_fails() {
    let dir = common::TestDir::new("cli-badconfig");
    let cases: [(&[(&str, &str)], &str); 3] = [
        (
            &[("MAILMUX_SMTP__SUBMISSION", "not-an-address")],
            "smtp.submission",
        ),
        (
            &[("MAILMUX_DELIVERY__MX_PORT", "99999")],
            "delivery.mx_port",
        ),
        (&[("MAILMUX_SMTP__NO_SUCH_KEY", "1")], "no_such_key"),
    ];
    for (env, key) in cases {
        let out = mailmux(dir.path())
            .arg("migrate")
            .envs(env.iter().copied())
            .output()
            .unwrap();
        assert!(!out.status.success(), "{env:?} must fail");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(key), "{env:?}: error names {key}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "one clear line: {stderr}");
    }
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "[delivery]\ntransport = \"pigeon\"\n").unwrap();
    let out = mailmux(dir.path())
        .args(["migrate", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("delivery.transport"));
}

#[test]
fn first_start_on_the_embedded_default_generates_certificate_and_token() {
    let dir = common::TestDir::new("cli-default");
    // Only the ports move (other tests run at the same time); data dir, database, certificate
    // and token are the embedded defaults, relative to the working directory.
    let ports = [
        ("MAILMUX_SMTP__SUBMISSION", "127.0.0.1:0"),
        ("MAILMUX_SMTP__SUBMISSION_TLS", "127.0.0.1:0"),
        ("MAILMUX_SMTP__MX", "127.0.0.1:0"),
        ("MAILMUX_ADMIN__LISTEN", "127.0.0.1:0"),
    ];
    let start = || {
        mailmux(dir.path())
            .arg("serve")
            .envs(ports)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let listeners = dir.path().join("data/listeners.json");
    let mut first = start();
    assert!(
        common::wait_until(std::time::Duration::from_secs(30), || listeners
            .exists()
            .then_some(()))
        .is_some(),
        "serve did not come up on the defaults"
    );
    assert!(
        dir.path().join("data/mailmux.db").exists(),
        "SQLite under ./data"
    );
    assert!(
        dir.path().join("data/tls/cert.pem").exists(),
        "generated certificate"
    );
    let token_file = dir.path().join("data/admin.token");
    let token = std::fs::read_to_string(&token_file).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&token_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    common::terminate(&mut first, std::time::Duration::from_secs(10));
    let mut stdout = String::new();
    use std::io::Read;
    first
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    assert!(
        stdout.contains(token.trim()),
        "the token is printed on first start: {stdout}"
    );

    // Second start: same token, not printed again.
    std::fs::remove_file(&listeners).unwrap();
    let mut second = start();
    assert!(
        common::wait_until(std::time::Duration::from_secs(30), || listeners
            .exists()
            .then_some(()))
        .is_some()
    );
    common::terminate(&mut second, std::time::Duration::from_secs(10));
    let mut stdout = String::new();
    second
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    assert!(!stdout.contains(token.trim()), "printed once only");
    assert_eq!(std::fs::read_to_string(&token_file).unwrap(), token);
}

#[test]
fn provisioning_commands_print_json_and_enforce_limits() {
    let dir = common::TestDir::new("cli-provision");
    let run = |args: &[&str]| mailmux(dir.path()).args(args).output().unwrap();
    // Only migrate (and serve) create a database; everything else works on an existing one.
    assert!(run(&["migrate"]).status.success());
    let out = run(&["tenant", "create", "--name", "acme", "--tier", "free"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tenant: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = tenant["id"].as_str().unwrap();
    assert_eq!(tenant["tier"], "free");

    let out = run(&["domain", "add", "--tenant", id, "--domain", "Acme.TEST."]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let domain: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(domain["domain"], "acme.test", "normalised");
    assert_eq!(domain["verified"], false);
    let records = domain["records"].as_array().unwrap();
    assert!(
        records
            .iter()
            .any(|r| r["name"] == "_mailmux.acme.test" && r["type"] == "TXT")
    );
    // Free tier: one domain.
    let out = run(&["domain", "add", "--tenant", id, "--domain", "second.test"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("max_domains"));

    let out = run(&["credential", "create", "--tenant", id]);
    assert!(out.status.success());
    let credential: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(credential["username"].as_str().unwrap().len() > 8);
    assert!(credential["password"].as_str().unwrap().len() >= 40);

    let out = run(&["credential", "create", "--tenant", "t_doesnotexist"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found"));
    let out = run(&["tenant", "create", "--name", "x", "--tier", "platinum"]);
    assert!(!out.status.success());
}

fn json_of(out: &Output) -> Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

/// Point 1 of issue 11: wherever the CLI runs, it finds serve's data through the configuration
/// (`--config`, `MAILMUX_CONFIG`, `./mailmux.toml`) and never quietly makes a new database.
#[test]
fn the_cli_finds_one_database_wherever_it_runs_and_never_creates_one() {
    let home = common::TestDir::new("cli-home");
    let elsewhere = common::TestDir::new("cli-elsewhere");
    let run = |dir: &Path, args: &[&str]| mailmux(dir).args(args).output().unwrap();

    assert!(run(home.path(), &["migrate"]).status.success());
    let created = json_of(&run(home.path(), &["tenant", "create", "--name", "acme"]));
    let id = created["id"].as_str().unwrap().to_string();

    // Elsewhere, with no configuration: refused, naming the path and the way out.
    let out = run(elsewhere.path(), &["tenant", "list"]);
    assert!(!out.status.success(), "must refuse");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let looked_at = elsewhere.path().join("data").join("mailmux.db");
    assert!(
        stderr.contains(&looked_at.display().to_string()),
        "names {}: {stderr}",
        looked_at.display()
    );
    assert!(
        stderr.contains("--config") && stderr.contains("MAILMUX_CONFIG"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        !elsewhere.path().join("data").exists(),
        "no database (nor data dir) created elsewhere"
    );
    for args in [
        &["tenant", "create", "--name", "stray"][..],
        &["credential", "create", "--tenant", &id],
        &["audit", "list"],
    ] {
        let out = run(elsewhere.path(), args);
        assert!(!out.status.success(), "{args:?} must refuse");
    }
    assert!(!elsewhere.path().join("data").exists());

    // The configuration serve would use, found each of the three ways.
    let config = home.path().join("mailmux.toml");
    std::fs::write(
        &config,
        format!(
            "[storage]\ndata_dir = {:?}\n",
            home.path().join("data").display().to_string()
        ),
    )
    .unwrap();
    let listed = |out: Output| {
        let list = json_of(&out);
        assert!(
            list["tenants"]
                .as_array()
                .unwrap()
                .iter()
                .any(|t| t["id"] == id.as_str()),
            "{list}"
        );
    };
    listed(
        mailmux(elsewhere.path())
            .args(["tenant", "list", "--config"])
            .arg(&config)
            .output()
            .unwrap(),
    );
    listed(
        mailmux(elsewhere.path())
            .args(["tenant", "list"])
            .env("MAILMUX_CONFIG", &config)
            .output()
            .unwrap(),
    );
    std::fs::copy(&config, elsewhere.path().join("mailmux.toml")).unwrap();
    listed(run(elsewhere.path(), &["tenant", "list"]));
    std::fs::remove_file(elsewhere.path().join("mailmux.toml")).unwrap();
    // --config wins over MAILMUX_CONFIG.
    let out = mailmux(elsewhere.path())
        .args(["tenant", "list", "--config"])
        .arg(&config)
        .env("MAILMUX_CONFIG", elsewhere.path().join("missing.toml"))
        .output()
        .unwrap();
    listed(out);

    // migrate may create one, where it is told to.
    assert!(run(elsewhere.path(), &["migrate"]).status.success());
    assert!(looked_at.exists());
    assert_eq!(
        json_of(&run(elsewhere.path(), &["tenant", "list"]))["tenants"],
        json!([])
    );

    // Postgres: a database without mailmux's schema is refused the same way.
    if let Some(url) = common::postgres_url() {
        let out = run_with(elsewhere.path(), &["tenant", "list"], &url);
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("no mailmux schema"), "{stderr}");
        assert!(
            run_with(elsewhere.path(), &["migrate"], &url)
                .status
                .success()
        );
        assert_eq!(
            json_of(&run_with(elsewhere.path(), &["tenant", "list"], &url))["tenants"],
            json!([])
        );
    }
}

fn run_with(dir: &Path, args: &[&str], database_url: &str) -> Output {
    mailmux(dir)
        .args(args)
        .env("MAILMUX_STORAGE__DATABASE_URL", database_url)
        .output()
        .unwrap()
}

/// Point 2: every operator task of the REST API has a command, calling the same operation
/// (the audit log shows `cli`), JSON by default and aligned tables on request.
#[test]
fn every_operator_task_has_a_command() {
    if !common::require_python_module("dnslib") {
        return;
    }
    let dns = common::DnsServer::start(json!({"zones": ["ops.test", "far.test"], "records": []}));
    let mm = Mailmux::start(&[("MAILMUX_DELIVERY__DNS_SERVERS", &dns.dns_servers_env())]);
    let id = mm.create_tenant("ops", "starter");

    // Domains: add, list, show; --verified on the existing domain keeps its key.
    let added = mm.cli(["domain", "add", "--tenant", &id, "--domain", "ops.test"]);
    assert_eq!(added["verified"], false);
    let dkim_value = |view: &Value| {
        view["records"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["purpose"] == "dkim")
            .map(|r| r["value"].clone())
            .unwrap()
    };
    let verified = mm.add_verified_domain(&id, "ops.test");
    assert_eq!(verified["verified"], true, "{verified}");
    assert_eq!(verified["verified_by"], "operator");
    assert_eq!(verified["dkim"], added["dkim"], "same key: {verified}");
    assert_eq!(
        dkim_value(&verified),
        dkim_value(&added),
        "same DKIM record"
    );
    let listed = mm.cli(["domain", "list", "--tenant", &id]);
    assert_eq!(listed["domains"][0]["domain"], "ops.test");
    assert_eq!(listed["domains"][0]["verified"], true);
    let shown = mm.cli(["domain", "show", "--tenant", &id, "--domain", "ops.test"]);
    assert_eq!(dkim_value(&shown), dkim_value(&added));
    // Another tenant still cannot take it, override or not.
    let other = mm.create_tenant("other", "starter");
    let out = mm.cli_output([
        "domain",
        "add",
        "--tenant",
        &other,
        "--domain",
        "ops.test",
        "--verified",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already registered"));

    // Credentials: list, revoke by username (no tenant needed) and by id.
    let (first, _) = mm.create_credential(&id);
    let (second, _) = mm.create_credential(&id);
    let credentials = mm.cli(["credential", "list", "--tenant", &id]);
    let rows = credentials["credentials"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{credentials}");
    assert!(
        rows.iter().all(|c| c.get("password").is_none()),
        "no secrets: {credentials}"
    );
    let revoked = mm.cli(["credential", "revoke", "--username", &first]);
    assert!(revoked["revoked_at"].is_i64(), "{revoked}");
    let second_id = rows
        .iter()
        .find(|c| c["username"] == second.as_str())
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let revoked = mm.cli(["credential", "revoke", "--tenant", &id, "--id", &second_id]);
    assert_eq!(revoked["username"], second.as_str());
    let out = mm.cli_output([
        "credential",
        "revoke",
        "--tenant",
        &other,
        "--username",
        &first,
    ]);
    assert!(
        !out.status.success(),
        "another tenant's credential is not found"
    );

    // API keys: create, list, revoke.
    let key = mm.cli(["api-key", "create", "--tenant", &id, "--name", "app"]);
    let secret = key["key"].as_str().unwrap().to_string();
    let key_id = key["id"].as_str().unwrap().to_string();
    let keys = mm.cli(["api-key", "list", "--tenant", &id]);
    assert_eq!(keys["api_keys"][0]["id"], key_id.as_str());
    assert!(keys["api_keys"][0].get("key").is_none());

    // Messages: one sent over the HTTP send API with that key.
    let (status, sent) = http(
        mm.admin(),
        "POST",
        "/api/send",
        Some(&secret),
        Some(
            &json!({"from": "app@ops.test", "to": ["someone@far.test"], "subject": "hi", "text": "hello"}),
        ),
    );
    assert_eq!(status, 200, "{sent}");
    let queue_id = sent["id"].as_str().unwrap().to_string();
    // far.test does not exist: the message bounces at its first attempt.
    let bounced = common::wait_until(Duration::from_secs(30), || {
        let one = mm.cli(["message", "show", "--tenant", &id, "--id", &queue_id]);
        (one["status"] == "bounced").then_some(one)
    })
    .expect("the message bounces");
    assert_eq!(
        bounced["recipients"][0]["address"], "someone@far.test",
        "{bounced}"
    );
    assert!(
        !bounced["history"].as_array().unwrap().is_empty(),
        "{bounced}"
    );
    let ids = |list: &Value| -> Vec<String> {
        list["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap().to_string())
            .collect()
    };
    let recent = mm.cli(["message", "list", "--tenant", &id, "--since", "1h"]);
    assert!(ids(&recent).contains(&queue_id), "{recent}");
    let filtered = mm.cli(["message", "list", "--tenant", &id, "--status", "bounced"]);
    assert!(ids(&filtered).contains(&queue_id), "{filtered}");
    let filtered = mm.cli(["message", "list", "--tenant", &id, "--status", "queued"]);
    assert!(!ids(&filtered).contains(&queue_id), "{filtered}");
    let future = (common_now_ms() + 3_600_000).to_string();
    let later = mm.cli(["message", "list", "--tenant", &id, "--since", &future]);
    assert_eq!(later["messages"], json!([]));
    let out = mm.cli_output(["message", "list", "--tenant", &id, "--status", "lost"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("status"));

    mm.cli(["api-key", "revoke", "--tenant", &id, "--id", &key_id]);
    let keys = mm.cli(["api-key", "list", "--tenant", &id]);
    assert!(keys["api_keys"][0]["revoked_at"].is_i64(), "{keys}");

    // The audit log: one tenant's, everyone's; the CLI's changes are there as `cli`.
    let audit = mm.cli(["audit", "list", "--tenant", &id]);
    let actions: Vec<(&str, &str)> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["action"].as_str().unwrap(), e["actor"].as_str().unwrap()))
        .collect();
    for action in [
        "domain.verify_override",
        "credential.revoke",
        "api_key.create",
        "api_key.revoke",
    ] {
        assert!(
            actions.contains(&(action, "cli")),
            "{action} by cli: {actions:?}"
        );
    }
    assert!(!actions.iter().any(|(a, _)| *a == "domain.delete"));
    let everyone = mm.cli(["audit", "list", "--limit", "500"]);
    assert!(
        everyone["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["tenant_id"] == other.as_str())
    );
    let out = mm.cli_output(["audit", "list", "--tenant", "t_doesnotexist"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found"));

    // Tables for people: a header row and aligned columns.
    let out = mm.cli_output(["tenant", "list", "--output", "table"]);
    assert!(out.status.success());
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("ID  ") && lines[0].contains("NAME"),
        "{table}"
    );
    let name_at = lines[0].find("NAME").unwrap();
    for line in &lines[1..] {
        assert!(line.starts_with("t_"), "{table}");
        assert_eq!(&line[name_at - 2..name_at], "  ", "aligned: {table}");
        assert_ne!(&line[name_at..name_at + 1], " ", "aligned: {table}");
    }
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(&id) && l.contains("ops.test")),
        "{table}"
    );
    let out = mm.cli_output([
        "domain", "show", "--tenant", &id, "--domain", "ops.test", "--output", "table",
    ]);
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(table.starts_with("FIELD"), "{table}");
    assert!(
        table.contains("_mailmux.ops.test"),
        "the records as a table: {table}"
    );

    // Domain delete, tenant delete.
    mm.cli(["domain", "delete", "--tenant", &id, "--domain", "ops.test"]);
    assert_eq!(
        mm.cli(["domain", "list", "--tenant", &id])["domains"],
        json!([])
    );
    mm.cli(["tenant", "delete", "--tenant", &id]);
    let out = mm.cli_output(["tenant", "show", "--tenant", &id]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found"));
}

fn common_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// `mailmux tenant list | head -c1`: the reader goes away, the command ends quietly.
#[test]
fn a_closed_stdout_pipe_ends_the_command_quietly() {
    let dir = common::TestDir::new("cli-epipe");
    assert!(
        mailmux(dir.path())
            .arg("migrate")
            .output()
            .unwrap()
            .status
            .success()
    );
    for n in 0..5 {
        let out = mailmux(dir.path())
            .args(["tenant", "create", "--name", &format!("t{n}")])
            .output()
            .unwrap();
        assert!(out.status.success());
    }
    for format in ["json", "table"] {
        let mut child = mailmux(dir.path())
            .args(["tenant", "list", "--output", format])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Closed before the command has opened its database, so its first write meets EPIPE.
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{format}: {stderr}");
        assert!(out.status.success(), "{format}: {} {stderr}", out.status);
    }
}

/// Point 6: `mailmux health` asks the running server's /healthz (the image's HEALTHCHECK).
#[test]
fn health_command_succeeds_only_while_the_server_is_healthy() {
    let mut mm = Mailmux::start(&[]);
    let report = mm.cli(["health"]);
    assert_eq!(report["status"], "ok", "{report}");
    mm.terminate(Duration::from_secs(10));
    let out = mm.cli_output(["health", "--timeout-secs", "2"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("/healthz"));
}

/// Runs `serve` in `dir` with `args` and the log (stderr) in a file until it listens; returns
/// the log.
fn serve_log(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> String {
    let log = dir.join("serve.log");
    let mut child = mailmux(dir)
        .arg("serve")
        .args(args)
        .envs([
            ("MAILMUX_SMTP__SUBMISSION", "127.0.0.1:0"),
            ("MAILMUX_SMTP__SUBMISSION_TLS", "127.0.0.1:0"),
            ("MAILMUX_SMTP__MX", "127.0.0.1:0"),
            ("MAILMUX_ADMIN__LISTEN", "127.0.0.1:0"),
            ("MAILMUX_ADMIN__TOKEN", "t"),
            ("RUST_LOG", "info"),
        ])
        .envs(env.iter().copied())
        .env_remove("NO_COLOR")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    // "listening" is logged once every listener is up: the last line of a start.
    let up = common::wait_until(Duration::from_secs(30), || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        text.contains("listening").then_some(())
    });
    common::terminate(&mut child, Duration::from_secs(10));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(up.is_some(), "serve did not come up: {text}");
    text
}

/// Point 6: logs off a terminal carry no colour codes; --log-format json gives JSON lines.
#[test]
fn serve_logs_plain_text_off_a_terminal_and_json_lines_on_request() {
    let dir = common::TestDir::new("cli-logs");
    let text = serve_log(dir.path(), &[], &[]);
    assert!(text.contains("listening"), "{text}");
    assert!(
        !text.contains("\x1b["),
        "ANSI codes in a piped log: {text:?}"
    );

    for (args, env) in [
        (&["--log-format", "json"][..], &[][..]),
        (&[][..], &[("MAILMUX_LOG_FORMAT", "json")][..]),
    ] {
        let text = serve_log(dir.path(), args, env);
        let mut lines = 0;
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let value: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line:?}"));
            assert!(
                value["level"].is_string() && value["timestamp"].is_string(),
                "{line}"
            );
            lines += 1;
        }
        assert!(lines > 0 && text.contains("listening"), "{text}");
    }
}

/// Point 11: the generated certificate covers smtp.hostname and the loopback names.
#[test]
fn generated_certificate_covers_the_hostname_and_loopback() {
    if !common::require_tool("openssl") {
        return;
    }
    let mm = Mailmux::start(&[("MAILMUX_SMTP__HOSTNAME", "relay.example.test")]);
    let cert = mm.data_dir().join("tls/cert.pem");
    for (flag, name) in [
        ("-checkhost", "relay.example.test"),
        ("-checkhost", "localhost"),
        ("-checkip", "127.0.0.1"),
        ("-checkip", "::1"),
    ] {
        let out = Command::new("openssl")
            .args(["x509", "-noout", "-in"])
            .arg(&cert)
            .args([flag, name])
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(
            said.contains("does match certificate") && !said.contains("NOT match"),
            "{name}: {said}"
        );
    }
}

/// Point 10: the image's Dockerfile, read as an operator would check it.
#[test]
fn dockerfile_caches_dependencies_owns_its_volume_and_checks_health() {
    let root = common::repo_root();
    let dockerfile = std::fs::read_to_string(root.join("Dockerfile")).unwrap();
    // Instructions, with continuation lines joined.
    let joined = dockerfile.replace("\\\n", " ");
    let lines: Vec<&str> = joined
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let position = |needle: &str| {
        lines
            .iter()
            .position(|l| l.starts_with(needle))
            .unwrap_or_else(|| panic!("no `{needle}` in the Dockerfile"))
    };

    // Dependencies are built from the manifests before the sources are copied.
    let sources = position("COPY . .");
    assert!(position("COPY Cargo.toml Cargo.lock") < sources);
    let manifest: toml_like::Members =
        toml_like::members(&std::fs::read_to_string(root.join("Cargo.toml")).unwrap());
    for member in manifest.0.iter().filter(|m| *m != ".") {
        let copy = format!("COPY {member}/Cargo.toml");
        assert!(position(&copy) < sources, "{copy} before the sources");
    }
    let build = lines[..sources]
        .iter()
        .position(|l| l.starts_with("RUN") && l.contains("cargo build"))
        .expect("a dependency build before the sources");
    assert!(position("COPY crates/") < build);

    // The data directory exists, owned by the runtime user, before it is a volume.
    let volume = position("VOLUME");
    assert!(lines[volume].contains("/var/lib/mailmux/data"));
    let runtime = lines.iter().rposition(|l| l.starts_with("FROM")).unwrap();
    let prepared = lines[runtime..volume].iter().any(|l| {
        l.starts_with("RUN")
            && l.contains("mkdir -p /var/lib/mailmux/data")
            && l.contains("chown mailmux:mailmux /var/lib/mailmux/data")
    });
    assert!(prepared, "data dir made and chowned before VOLUME");

    // A health check with the binary itself (the image has no curl), and it is a real command.
    let health = lines[position("HEALTHCHECK")];
    assert!(health.contains("\"mailmux\", \"health\""), "{health}");
    assert!(!dockerfile.contains("curl "), "no curl in the image");
    let help = mailmux(&root).args(["health", "--help"]).output().unwrap();
    assert!(help.status.success());

    // Every listener the configuration has is bound on all interfaces and exposed.
    let exposed: Vec<&str> = lines[position("EXPOSE")]
        .split_whitespace()
        .skip(1)
        .collect();
    for key in [
        "MAILMUX_SMTP__SUBMISSION=",
        "MAILMUX_SMTP__SUBMISSION_TLS=",
        "MAILMUX_SMTP__MX=",
        "MAILMUX_ADMIN__LISTEN=",
    ] {
        let at = joined
            .find(key)
            .unwrap_or_else(|| panic!("{key} set in the image"));
        let value = joined[at + key.len()..].split_whitespace().next().unwrap();
        let port = value.rsplit(':').next().unwrap();
        assert!(value.starts_with("0.0.0.0:"), "{key}{value}");
        assert!(exposed.contains(&port), "{key}{value}: EXPOSE {exposed:?}");
    }
}

/// The workspace members listed in a Cargo.toml, read without a TOML crate.
mod toml_like {
    pub struct Members(pub Vec<String>);

    pub fn members(manifest: &str) -> Members {
        let start = manifest.find("members = [").expect("workspace members");
        let list = &manifest[start..];
        let end = list.find(']').unwrap();
        Members(
            list[..end]
                .split('"')
                .skip(1)
                .step_by(2)
                .map(str::to_string)
                .collect(),
        )
    }
}

/// The ```sh blocks of the README section that starts with `heading`, in order.
fn readme_blocks(readme: &str, heading: &str) -> Vec<String> {
    let start = readme
        .find(heading)
        .unwrap_or_else(|| panic!("README has {heading:?}"));
    let section = &readme[start + heading.len()..];
    let section = &section[..section.find("\n## ").unwrap_or(section.len())];
    section
        .split("```sh\n")
        .skip(1)
        .map(|rest| rest[..rest.find("```").unwrap()].to_string())
        .collect()
}

/// Point 12: the README's first run works as written. Its provisioning block runs verbatim in
/// bash against a real server, and the local-sink recipe's serve settings deliver the message
/// to a sink; only the fixed ports of the text are swapped for the ones this test got.
#[test]
fn readme_first_run_works_as_written() {
    if !common::require_support() || !common::require_tool("swaks") {
        return;
    }
    let readme = std::fs::read_to_string(common::repo_root().join("README.md")).unwrap();
    let first = readme_blocks(&readme, "# mailmux\n");
    let mut top = first[0].lines();
    assert!(
        top.next()
            .unwrap()
            .starts_with("cargo run --release -- serve ")
    );
    assert!(top.next().unwrap().starts_with("cargo test --workspace "));

    let blocks = readme_blocks(&readme, "## First run\n");
    assert_eq!(
        blocks.len(),
        4,
        "serve, provisioning, sink install, three terminals"
    );
    assert!(blocks[0].contains("cargo build --release") && blocks[0].contains("mailmux serve"));
    let recipe: Vec<&str> = blocks[3].lines().collect();
    assert_eq!(recipe.len(), 3, "three commands: {recipe:?}");
    let sink_module = recipe[0].split_whitespace().collect::<Vec<_>>();
    assert_eq!(
        &sink_module[1..],
        [
            "-m",
            "aiosmtpd",
            "-n",
            "-l",
            "127.0.0.1:2526",
            "#",
            "1:",
            "the",
            "sink"
        ]
    );
    // The sink's command line is aiosmtpd's own (checked against the installed module).
    let help = Command::new(common::python())
        .args(["-m", "aiosmtpd", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("--nosetuid") && help.contains("--listen"),
        "{help}"
    );

    // Terminal 2: serve with the recipe's settings, the sink's port in place of 2526.
    let sink = common::Sink::start(&[]);
    let settings: Vec<(String, String)> = recipe[1]
        .split_whitespace()
        .take_while(|w| w.starts_with("MAILMUX_"))
        .map(|w| {
            let (key, value) = w.split_once('=').unwrap();
            (
                key.to_string(),
                value.replace("127.0.0.1:2526", &sink.addr().to_string()),
            )
        })
        .collect();
    assert_eq!(settings.len(), 3, "{}", recipe[1]);
    assert!(recipe[1].contains("mailmux serve"));
    let env: Vec<(&str, &str)> = settings
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let mm = Mailmux::start(&env);

    // The provisioning block (which ends in terminal 3's swaks), verbatim but for the port.
    let submission = mm.submission().to_string();
    let script = blocks[1].replace("127.0.0.1:2587", &submission);
    assert_eq!(
        recipe[2]
            .replace("127.0.0.1:2587", &submission)
            .split("   #")
            .next()
            .unwrap()
            .trim(),
        script
            .lines()
            .skip_while(|l| !l.starts_with("swaks"))
            .map(|l| l.trim_end_matches('\\').trim())
            .collect::<Vec<_>>()
            .join(" "),
        "terminal 3 sends what the first run sent"
    );
    let bin_dir = common::mailmux_bin().parent().unwrap().to_path_buf();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut bash = Command::new("bash");
    for (key, _) in std::env::vars() {
        if key.starts_with("MAILMUX_") {
            bash.env_remove(key);
        }
    }
    let out = bash
        .args(["-euo", "pipefail", "-c", &script])
        .envs(mm.env().iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("PATH", path)
        .current_dir(mm.data_dir().parent().unwrap())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the README's commands failed: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let received = sink.wait_for_messages(1, Duration::from_secs(30));
    assert_eq!(received[0].rcpt_tos, ["someone@example.net"]);
    assert!(
        received[0].text().contains("DKIM-Signature:"),
        "a starter tenant signs"
    );
}
