//! The command line and configuration as an operator meets them.

mod common;

use std::process::Command;

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
    for command in ["serve", "migrate", "tenant", "credential", "domain"] {
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
