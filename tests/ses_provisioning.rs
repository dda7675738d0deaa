//! SES provisioning end to end: the real `mailmux serve` provisioning a tenant's SES side
//! against **ministack** (the SES v2 emulator, started by the test setup on 127.0.0.1) behind
//! the recording proxy (tests/support/ses_recorder.py), which records every call and injects
//! failures.
//!
//! The proxy's probe at start finds what ministack does not emulate (reputation entities and
//! policies, PutEmailIdentityMailFromAttributes; tenant SendingStatus changes and throttling,
//! which no emulator API drives) and reports it: each test prints that report, and those
//! operations are answered by FakeSES, the named fake of the SES v2 wire format. The tests
//! that need SES to change a tenant's sending status run against FakeSES alone.

mod common;

use std::time::Duration;

use common::{Mailmux, Ministack, SesRecorder, http, wait_until};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);

/// mailmux on `ses` for every tenant, pointed at `ses`.
fn start(ses: &SesRecorder, sync_interval_secs: &str) -> Mailmux {
    let env = ses.env();
    let mut all: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    all.push(("MAILMUX_DELIVERY__TRANSPORT", "ses"));
    all.push(("MAILMUX_SES__SYNC_INTERVAL_SECS", sync_interval_secs));
    Mailmux::start(&all)
}

/// ministack behind the recording proxy; prints what ministack does not emulate.
fn proxy(ministack: &Ministack) -> SesRecorder {
    let ses = SesRecorder::proxy(&ministack.url());
    let missing = ses.not_emulated();
    eprintln!(
        "ministack does not emulate: {} (answered by FakeSES)",
        missing.join(", ")
    );
    assert!(
        missing.iter().any(|m| m == "tenant_sending_status_changes"),
        "{missing:?}"
    );
    ses
}

fn api(mm: &Mailmux, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    http(mm.admin(), method, path, Some(mm.admin_token()), body)
}

/// A tenant of `tier` (on `ses`, the default transport here).
fn tenant(mm: &Mailmux, tier: &str) -> String {
    mm.create_tenant("ses-provisioning", tier)
}

fn ses_state(mm: &Mailmux, tenant: &str) -> Value {
    let (status, body) = api(mm, "GET", &format!("/api/tenants/{tenant}/ses"), None);
    assert_eq!(status, 200, "{body}");
    body
}

fn wait_for_ses_status(mm: &Mailmux, tenant: &str, want: &str) -> Value {
    wait_for(mm, tenant, "status", want)
}

/// Waits until the tenant's SES state has `field` = `want`.
fn wait_for(mm: &Mailmux, tenant: &str, field: &str, want: &str) -> Value {
    wait_until(WAIT, || {
        let state = ses_state(mm, tenant);
        (state[field] == want).then_some(state)
    })
    .unwrap_or_else(|| panic!("SES {field} never {want}: {}", ses_state(mm, tenant)))
}

/// A call straight to ministack (not through mailmux or the proxy).
fn ministack_call(ministack: &Ministack, method: &str, path: &str, body: &Value) -> (u16, Value) {
    http(ministack.addr(), method, path, None, Some(body))
}

/// The calls that change something in SES, among `requests`.
fn writes(requests: &[Value]) -> Vec<String> {
    requests
        .iter()
        .filter(|r| {
            let path = r["path"].as_str().unwrap_or("");
            let read =
                r["method"] == "GET" || path.ends_with("/tenants/get") || path.ends_with("/list");
            !read
        })
        .map(|r| {
            format!(
                "{} {}",
                r["method"].as_str().unwrap(),
                r["path"].as_str().unwrap()
            )
        })
        .collect()
}

#[test]
fn adding_a_domain_provisions_the_ses_tenant_and_a_second_sync_changes_nothing() {
    let ministack = Ministack::get();
    let ses = proxy(&ministack);
    let mm = start(&ses, "3600");
    let id = tenant(&mm, "free");
    let domain = format!("ses-{}.example", id.to_lowercase().replace('_', "-"));

    // Adding the domain starts provisioning at once; Easy DKIM's CNAMEs come back with it.
    let (status, added) = api(
        &mm,
        "POST",
        &format!("/api/tenants/{id}/domains"),
        Some(&json!({"domain": domain})),
    );
    assert_eq!(status, 201, "{added}");
    let cnames: Vec<&Value> = added["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["type"] == "CNAME" && r["purpose"] == "ses_dkim")
        .collect();
    assert_eq!(cnames.len(), 3, "Easy DKIM's three CNAMEs: {added}");
    for cname in &cnames {
        let value = cname["value"].as_str().unwrap();
        assert!(value.ends_with(".dkim.amazonses.com"), "{cname}");
        assert!(
            cname["name"]
                .as_str()
                .unwrap()
                .ends_with(&format!("._domainkey.{domain}")),
            "{cname}"
        );
    }
    assert!(added["ses"]["verified_for_sending"].is_boolean(), "{added}");

    let state = wait_for_ses_status(&mm, &id, "synced");
    let tenant_name = state["tenant_name"].as_str().unwrap().to_string();
    assert_eq!(tenant_name, format!("mm-{id}"));
    assert!(
        state["aws_tenant_id"]
            .as_str()
            .is_some_and(|t| !t.is_empty()),
        "{state}"
    );
    assert_eq!(state["sending_status"], "ENABLED", "{state}");
    assert_eq!(state["reputation_policy"], "standard", "{state}");
    let steps: Vec<&str> = state["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step"].as_str().unwrap())
        .collect();
    for want in [
        "tenant".to_string(),
        "configuration_set".to_string(),
        format!("identity:{domain}"),
        format!("association:identity:{domain}"),
        "association:configuration_set".to_string(),
        "reputation_policy".to_string(),
    ] {
        assert!(steps.contains(&want.as_str()), "{want} in {state}");
    }
    assert!(
        state["steps"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["status"] == "done"),
        "{state}"
    );

    // Read back from ministack itself: the tenant, its identity and configuration set, both
    // associated with it.
    let (code, listed) = ministack_call(
        &ministack,
        "POST",
        "/v2/email/tenants/resources/list",
        &json!({"TenantName": tenant_name}),
    );
    assert_eq!(code, 200, "{listed}");
    let resources: Vec<(String, String)> = listed["TenantResources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["ResourceType"].as_str().unwrap().to_string(),
                r["ResourceArn"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(
        resources
            .iter()
            .any(|(t, arn)| t == "EMAIL_IDENTITY" && arn.ends_with(&format!(":identity/{domain}"))),
        "{resources:?}"
    );
    assert!(
        resources.iter().any(|(t, arn)| t == "CONFIGURATION_SET"
            && arn.ends_with(&format!(":configuration-set/{tenant_name}"))),
        "{resources:?}"
    );
    assert_eq!(resources.len(), 2, "{resources:?}");

    // SES verified it for sending (ministack does at once): the domain may send.
    let (_, shown) = api(
        &mm,
        "GET",
        &format!("/api/tenants/{id}/domains/{domain}"),
        None,
    );
    assert_eq!(shown["ses"]["verified_for_sending"], true, "{shown}");
    assert_eq!(shown["verified"], true, "{shown}");
    assert_eq!(shown["verified_by"], "ses", "{shown}");

    // A second sync: reads only, and every step row as it was.
    ses.reset();
    let (code, again) = api(&mm, "POST", &format!("/api/tenants/{id}/ses/sync"), None);
    assert_eq!(code, 200, "{again}");
    assert_eq!(again["status"], "synced", "{again}");
    assert_eq!(again["steps"], state["steps"], "step rows unchanged");
    let requests = ses.requests();
    assert!(!requests.is_empty());
    assert_eq!(
        writes(&requests),
        Vec::<String>::new(),
        "a no-op sync writes nothing"
    );

    // Deleting the tenant removes, in order, its associations, its identity, and the tenant.
    ses.reset();
    let (code, deleted) = api(&mm, "DELETE", &format!("/api/tenants/{id}"), None);
    assert_eq!(code, 200, "{deleted}");
    let order = writes(&ses.requests());
    let position = |what: &str| {
        order
            .iter()
            .position(|w| w == what)
            .unwrap_or_else(|| panic!("{what} not in {order:?}"))
    };
    let last_disassociation = order
        .iter()
        .rposition(|w| w == "POST /v2/email/tenants/resources/delete")
        .unwrap_or_else(|| panic!("no disassociation in {order:?}"));
    assert_eq!(
        order
            .iter()
            .filter(|w| *w == "POST /v2/email/tenants/resources/delete")
            .count(),
        2,
        "{order:?}"
    );
    let identity = position(&format!("DELETE /v2/email/identities/{domain}"));
    let ses_tenant = position("POST /v2/email/tenants/delete");
    assert!(
        last_disassociation < identity && identity < ses_tenant,
        "{order:?}"
    );
    let (code, _) = ministack_call(
        &ministack,
        "POST",
        "/v2/email/tenants/get",
        &json!({"TenantName": tenant_name}),
    );
    assert_eq!(code, 404, "the SES tenant is gone");
    let (code, _) = http(
        ministack.addr(),
        "GET",
        &format!("/v2/email/identities/{domain}"),
        None,
        None,
    );
    assert_eq!(code, 404, "the identity is gone");
}

#[test]
fn a_step_failing_mid_provisioning_is_shown_and_the_background_retry_completes_it() {
    let ministack = Ministack::get();
    let ses = proxy(&ministack);
    let mm = start(&ses, "3600");
    let id = tenant(&mm, "free");
    let domain = format!("retry-{}.example", id.to_lowercase().replace('_', "-"));

    // CreateTenantResourceAssociation answers 500 four times: the first two syncs fail there.
    ses.fail(
        "/v2/email/tenants/resources",
        500,
        "InternalFailure",
        "injected by the test",
        4,
    );
    let (status, added) = api(
        &mm,
        "POST",
        &format!("/api/tenants/{id}/domains"),
        Some(&json!({"domain": domain})),
    );
    assert_eq!(
        status, 201,
        "the local domain is created all the same: {added}"
    );

    let failed = wait_for_ses_status(&mm, &id, "error");
    let step = failed["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["status"] == "error")
        .unwrap_or_else(|| panic!("{failed}"));
    assert!(
        step["step"].as_str().unwrap().starts_with("association:"),
        "{failed}"
    );
    let error = step["last_error"].as_str().unwrap();
    assert!(
        error.contains("InternalFailure") && error.contains("injected by the test"),
        "{failed}"
    );
    assert!(failed["failures"].as_u64().unwrap() >= 1, "{failed}");

    // Nobody asks again: the background retry (backoff 1 s, 2 s) finishes the sync.
    let synced = wait_for_ses_status(&mm, &id, "synced");
    assert_eq!(synced["failures"], 0, "{synced}");
    let (code, listed) = ministack_call(
        &ministack,
        "POST",
        "/v2/email/tenants/resources/list",
        &json!({"TenantName": synced["tenant_name"]}),
    );
    assert_eq!(code, 200, "{listed}");
    assert_eq!(
        listed["TenantResources"].as_array().unwrap().len(),
        2,
        "{listed}"
    );
}

#[test]
fn the_cli_syncs_one_tenant_and_backfills_existing_ones() {
    let ministack = Ministack::get();
    let ses = proxy(&ministack);
    // mailmux with an hour between syncs: what the CLI does is not the background job's.
    let mm = start(&ses, "3600");
    // A tenant with a domain added before it moved to SES: only a backfill provisions it.
    let id = mm.create_tenant("existing", "free");
    let domain = format!("old-{}.example", id.to_lowercase().replace('_', "-"));
    let (status, body) = api(
        &mm,
        "PUT",
        &format!("/api/tenants/{id}"),
        Some(&json!({"transport": "mx"})),
    );
    assert_eq!(status, 200, "{body}");
    mm.add_verified_domain(&id, &domain);
    // Not on SES: nothing to sync.
    let (status, body) = api(&mm, "POST", &format!("/api/tenants/{id}/ses/sync"), None);
    assert_eq!(status, 422, "{body}");
    let (status, body) = mm_put_transport_without_sync(&mm, &id);
    assert_eq!(status, 200, "{body}");

    let dry = mm.cli_output(["ses", "backfill", "--dry-run"]);
    assert!(
        dry.status.success(),
        "{}",
        String::from_utf8_lossy(&dry.stderr)
    );
    let report: Value = serde_json::from_slice(&dry.stdout).unwrap();
    assert_eq!(report["dry_run"], true, "{report}");
    let progress = String::from_utf8_lossy(&dry.stderr);
    assert!(
        progress.contains("[1/1]") && progress.contains(&id),
        "{progress}"
    );
    assert!(progress.contains("tenant created"), "{progress}");
    assert_eq!(
        writes(&ses.requests()),
        Vec::<String>::new(),
        "a dry run changes nothing"
    );

    let run = mm.cli_output(["ses", "backfill"]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let state = ses_state(&mm, &id);
    assert_eq!(state["status"], "synced", "{state}");

    // Run again: nothing to do.
    ses.reset();
    let again = mm.cli_output(["ses", "backfill"]);
    assert!(again.status.success());
    let progress = String::from_utf8_lossy(&again.stderr);
    assert!(progress.contains("in sync, nothing to do"), "{progress}");
    assert_eq!(writes(&ses.requests()), Vec::<String>::new());

    // `ses sync --tenant` prints the tenant's SES state.
    let synced = mm.cli(["ses", "sync", "--tenant", &id]);
    assert_eq!(synced["status"], "synced", "{synced}");
}

/// Moves the tenant to `ses` behind mailmux's back (the CLI's update, which starts no sync),
/// as a tenant that predates SES provisioning would be.
fn mm_put_transport_without_sync(mm: &Mailmux, id: &str) -> (u16, Value) {
    let out = mm.cli_output(["tenant", "update", "--tenant", id, "--transport", "ses"]);
    let code = if out.status.success() { 200 } else { 500 };
    (code, json!(String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn reputation_policy_mail_from_and_sending_status_against_fake_ses() {
    let ses = SesRecorder::fake();
    let mm = start(&ses, "1");
    // Professional: mailmux signs (BYODKIM with its key) and has custom_domains (MAIL FROM).
    let id = tenant(&mm, "professional");
    let domain = format!("rep-{}.example", id.to_lowercase().replace('_', "-"));
    let (status, body) = api(
        &mm,
        "PUT",
        &format!("/api/tenants/{id}"),
        Some(&json!({"reputation_policy": "strict"})),
    );
    assert_eq!(status, 200, "{body}");
    mm.add_verified_domain(&id, &domain);
    let (status, body) = api(
        &mm,
        "PUT",
        &format!("/api/tenants/{id}/domains/{domain}/return-path"),
        Some(&json!({"return_path": format!("bounce.{domain}")})),
    );
    assert_eq!(status, 200, "{body}");
    // Its records are those SES's custom MAIL FROM needs: SES's feedback MX and SPF.
    let records = body["records"].as_array().unwrap();
    assert!(
        records.iter().any(|r| r["type"] == "MX"
            && r["name"] == format!("bounce.{domain}")
            && r["value"] == "10 feedback-smtp.us-east-1.amazonses.com"),
        "{body}"
    );
    assert!(
        records
            .iter()
            .any(|r| r["type"] == "TXT" && r["value"] == "v=spf1 include:amazonses.com ~all"),
        "{body}"
    );
    let (code, state) = api(&mm, "POST", &format!("/api/tenants/{id}/ses/sync"), None);
    assert_eq!(code, 200, "{state}");
    assert_eq!(state["status"], "synced", "{state}");
    let tenant_name = state["tenant_name"].as_str().unwrap().to_string();

    let requests = ses.requests();
    let create = requests
        .iter()
        .find(|r| r["method"] == "POST" && r["path"] == "/v2/email/identities")
        .unwrap_or_else(|| panic!("no CreateEmailIdentity"));
    let (_, shown) = api(
        &mm,
        "GET",
        &format!("/api/tenants/{id}/domains/{domain}"),
        None,
    );
    let attrs = &create["json"]["DkimSigningAttributes"];
    assert_eq!(
        attrs["DomainSigningSelector"], shown["dkim"]["selector"],
        "BYODKIM: {create}"
    );
    assert!(
        attrs["DomainSigningPrivateKey"]
            .as_str()
            .is_some_and(|k| k.len() > 100)
    );
    let mail_from = requests
        .iter()
        .find(|r| r["method"] == "PUT" && r["path"].as_str().unwrap().ends_with("/mail-from"))
        .unwrap_or_else(|| panic!("no PutEmailIdentityMailFromAttributes"));
    assert_eq!(
        mail_from["json"]["MailFromDomain"],
        format!("bounce.{domain}")
    );
    let policy = requests
        .iter()
        .find(|r| r["method"] == "PUT" && r["path"].as_str().unwrap().ends_with("/policy"))
        .unwrap_or_else(|| panic!("no UpdateReputationEntityPolicy"));
    assert!(
        policy["json"]["ReputationEntityPolicy"]
            .as_str()
            .unwrap()
            .ends_with("reputation-policy/strict"),
        "{policy}"
    );
    assert!(shown["ses"]["mail_from_status"].is_string(), "{shown}");

    // SES disables the tenant: the periodic sync pauses it with the cause …
    ses.set_tenant_status(&tenant_name, "DISABLED");
    let paused = wait_until(WAIT, || {
        let (_, t) = api(&mm, "GET", &format!("/api/tenants/{id}"), None);
        (t["status"] == "paused").then_some(t)
    })
    .expect("paused when SES disabled the tenant");
    let (_, audit) = api(&mm, "GET", &format!("/api/tenants/{id}/audit"), None);
    assert!(
        audit.to_string().contains("tenant.ses_pause"),
        "{paused} {audit}"
    );
    assert!(
        paused
            .to_string()
            .contains("SES disabled the tenant's sending"),
        "the pause names SES's cause: {paused}"
    );
    wait_for(&mm, &id, "sending_status", "DISABLED");

    // … and resumes it when SES enables it again.
    ses.set_tenant_status(&tenant_name, "ENABLED");
    wait_until(WAIT, || {
        let (_, t) = api(&mm, "GET", &format!("/api/tenants/{id}"), None);
        (t["status"] == "active").then_some(())
    })
    .expect("resumed when SES enabled the tenant again");

    // An operator's pause is the operator's: SES being enabled does not lift it.
    let (status, body) = api(
        &mm,
        "PUT",
        &format!("/api/tenants/{id}"),
        Some(&json!({"status": "paused"})),
    );
    assert_eq!(status, 200, "{body}");
    let before = ses.requests().len();
    wait_until(WAIT, || (ses.requests().len() > before + 3).then_some(()))
        .expect("the periodic sync ran again");
    let (_, t) = api(&mm, "GET", &format!("/api/tenants/{id}"), None);
    assert_eq!(t["status"], "paused", "{t}");

    // A domain removed locally: its association, then its identity, are taken away in SES.
    let (status, body) = api(
        &mm,
        "DELETE",
        &format!("/api/tenants/{id}/domains/{domain}"),
        None,
    );
    assert_eq!(status, 200, "{body}");
    let identity = format!("DELETE /v2/email/identities/{domain}");
    let order = wait_until(WAIT, || {
        let order = writes(&ses.requests());
        order.contains(&identity).then_some(order)
    })
    .expect("the identity is deleted in SES");
    let disassociated = order
        .iter()
        .position(|w| w == "POST /v2/email/tenants/resources/delete")
        .expect("disassociated first");
    assert!(disassociated < order.iter().position(|w| *w == identity).unwrap());
    let gone = [
        format!("identity:{domain}"),
        format!("association:identity:{domain}"),
        format!("mail_from:{domain}"),
        format!("release:identity:{domain}"),
    ];
    wait_until(WAIT, || {
        let state = ses_state(&mm, &id);
        let steps = state["steps"].as_array().unwrap();
        steps
            .iter()
            .all(|s| !gone.iter().any(|g| s["step"] == g.as_str()))
            .then_some(())
    })
    .unwrap_or_else(|| panic!("the domain's steps stay: {}", ses_state(&mm, &id)));
}
