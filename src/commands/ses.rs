//! `mailmux ses …`: sync one tenant's SES side now, or backfill every tenant on the `ses`
//! transport (SES tenants for existing tenants, their existing domains associated). Both run
//! the same provisioning as the admin API (mailmux-ses's `Provisioner`), in this process.

use std::io::Write;
use std::sync::Arc;

use mailmux_admin::ses;
use mailmux_core::config::TransportKind;
use mailmux_ses::{Provisioner, Ses};
use mailmux_store::Store;

use super::{Context, open_store};
use crate::output::Shown;

/// The provisioner for a one-shot command (the SES client makes no request until used).
pub async fn provisioner(context: &Context, store: &Store) -> Provisioner {
    let client = Arc::new(Ses::connect(&context.config.ses).await);
    Provisioner::new(client, store.clone(), &context.config.storage.data_dir)
}

/// `mailmux ses sync --tenant ID`: the tenant's SES state after the run (a failed step shows as
/// `status: error`, and the command fails).
pub async fn sync(context: &Context, tenant_id: &str) -> anyhow::Result<Shown> {
    let store = open_store(context).await?;
    let provisioner = provisioner(context, &store).await;
    let result = ses::sync(&provisioner, &context.config, tenant_id).await;
    store.close().await;
    let (report, view) = result?;
    if !report.ok() {
        let failed: Vec<String> = report
            .steps
            .iter()
            .filter_map(|s| s.error.as_ref().map(|e| format!("{}: {e}", s.step)))
            .collect();
        anyhow::bail!(
            "SES sync of {tenant_id} failed (the background sync retries it): {}",
            failed.join("; ")
        );
    }
    Shown::object(view)
}

/// `mailmux ses backfill [--dry-run]`: every tenant on the `ses` transport, one at a time. Each
/// tenant's sync is idempotent, so the command is safe to interrupt and to run again: a second
/// run finds what the first did and changes nothing. Prints per tenant what it did (or would
/// do), and a progress line on stderr.
pub async fn backfill(context: &Context, dry_run: bool) -> anyhow::Result<Shown> {
    let store = open_store(context).await?;
    let provisioner = provisioner(context, &store).await;
    let default = context.config.delivery.transport;
    let tenants: Vec<_> = store
        .list_tenants()
        .await?
        .into_iter()
        .filter(|t| t.transport.unwrap_or(default) == TransportKind::Ses)
        .collect();
    let total = tenants.len();
    let mut reports = Vec::with_capacity(total);
    let mut failed = 0;
    for (done, tenant) in tenants.iter().enumerate() {
        let report = provisioner.sync(&tenant.id, dry_run).await;
        let line = match &report {
            Ok(report) if report.ok() => serde_json::to_value(report)?,
            Ok(report) => {
                failed += 1;
                serde_json::to_value(report)?
            }
            Err(error) => {
                failed += 1;
                serde_json::json!({"tenant_id": tenant.id, "error": error.to_string()})
            }
        };
        let mut err = std::io::stderr().lock();
        writeln!(
            err,
            "ses backfill{}: [{}/{total}] {} {}",
            if dry_run { " (dry run)" } else { "" },
            done + 1,
            tenant.id,
            summary(&line)
        )?;
        reports.push(line);
    }
    store.close().await;
    Shown::object(serde_json::json!({
        "dry_run": dry_run,
        "tenants": total,
        "failed": failed,
        "reports": reports,
    }))
}

/// One tenant's outcome in a few words: which steps changed (or would), or the errors.
fn summary(report: &serde_json::Value) -> String {
    if let Some(error) = report["error"].as_str() {
        return format!("failed: {error}");
    }
    let steps = report["steps"].as_array().cloned().unwrap_or_default();
    let changed: Vec<String> = steps
        .iter()
        .filter(|s| s["action"] != "unchanged")
        .map(|s| {
            format!(
                "{} {}",
                s["step"].as_str().unwrap_or(""),
                s["action"].as_str().unwrap_or("")
            )
        })
        .collect();
    if changed.is_empty() {
        "in sync, nothing to do".into()
    } else {
        changed.join(", ")
    }
}
