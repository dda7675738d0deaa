//! `mailmux serve`: builds the shared context once and runs every part until SIGINT/SIGTERM.
//!
//! Start-up order matters: the database is migrated before anything listens; the queue gives
//! back this node's old leases (so mail accepted before a crash is delivered again) before
//! delivery starts; `listeners.json` is written only once every listener is bound, so whoever
//! waits for it (tests, scripts) can connect at once.

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use mailmux_core::Config;
use mailmux_core::credential::random_id;
use mailmux_core::health::{Health, supervise};
use tracing::{info, warn};

use crate::commands::{open_or_create_store, redact};

/// How often verified domains' DNS records are checked again.
const DOMAIN_RECHECK_INTERVAL: std::time::Duration = std::time::Duration::from_secs(86_400);

/// `serve --log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines; ANSI colours only when stderr is a terminal and NO_COLOR is unset.
    Text,
    /// One JSON object per line (for log collectors).
    Json,
}

pub async fn run(config: Config, log_format: LogFormat) -> anyhow::Result<()> {
    init_tracing(log_format);
    let config = Arc::new(config);
    let data_dir = &config.storage.data_dir.clone();
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("storage.data_dir: cannot create {}", data_dir.display()))?;

    let tls = crate::tls::server_config(&config)?;
    let admin_token = admin_token(&config)?;
    let store = open_or_create_store(&config).await?;
    info!(database = %redact(&config.database_url()), "database ready");

    // Every background task runs under the supervisor and reports to /healthz.
    let health = Health::default();
    let node_id = persistent_value(&data_dir.join("node.id"), || random_id("n_", 16))?;
    let (queue, jobs) = mailmux_queue::Queue::start(
        store.clone(),
        node_id.clone(),
        data_dir,
        &config.queue,
        &config.delivery,
        &health,
    )
    .await?;

    // Set once at SIGTERM/SIGINT: listeners stop accepting, delivery stops taking jobs.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // One SES client for the process (delivery and the admin side share it, and with it the
    // account's send-rate limiter). Building it makes no request; the probe below does.
    let ses = Arc::new(mailmux_ses::Ses::connect(&config.ses).await);
    if uses_ses(&config, &store).await {
        probe_ses(&ses).await;
    }

    let deliverer =
        mailmux_delivery::Deliverer::with_ses(config.clone(), queue.clone(), Some(ses.clone()))?;
    let jobs = Arc::new(tokio::sync::Mutex::new(jobs));
    let delivery_task = tokio::spawn(supervise(health.component("delivery"), {
        let stop = stop_rx.clone();
        move || deliverer.clone().run(jobs.clone(), stop.clone())
    }));

    // Webhook hand-offs (inbound mail of webhook rules): leased under this node's id, so a
    // restarted node takes its own deliveries in flight back at once.
    let webhooks = Arc::new(mailmux_webhooks::Worker::new(
        store.clone(),
        &config,
        node_id,
        Arc::new(mailmux_webhooks::SystemClock),
    ));
    tokio::spawn(supervise(health.component("webhooks"), {
        let stop = stop_rx.clone();
        move || webhooks.clone().run(stop.clone())
    }));

    let admin_listener = tokio::net::TcpListener::bind(config.admin.listen)
        .await
        .with_context(|| format!("admin.listen: cannot bind {}", config.admin.listen))?;
    let admin_addr = admin_listener.local_addr()?;
    // Links mailmux hands out (a webhook payload's raw_url) name the API where it really
    // listens: with port 0 in admin.listen that is known only now.
    let config = if config.admin.public_url.is_some() {
        config
    } else {
        let mut known = (*config).clone();
        known.admin.public_url = Some(format!("http://{admin_addr}"));
        Arc::new(known)
    };

    let smtp = mailmux_smtp::Server::new(config.clone(), store.clone(), queue.clone(), tls);
    let smtp_metrics: Arc<dyn mailmux_core::MetricSource> = smtp.metrics().clone();
    let listeners = smtp.bind().await.context(
        "cannot bind the SMTP listeners (smtp.submission, smtp.submission_tls, smtp.mx)",
    )?;

    // SES provisioning: the API's and the CLI's syncs, and the background one (domains just
    // added, failed steps retried with backoff, SES's sending status mirrored periodically).
    let provisioner = Arc::new(mailmux_ses::Provisioner::new(
        ses.clone(),
        store.clone(),
        &config.storage.data_dir,
    ));
    tokio::spawn(supervise(health.component("ses_sync"), {
        let provisioner = provisioner.clone();
        let transport = config.delivery.transport;
        move || {
            let provisioner = provisioner.clone();
            async move { provisioner.run_sync_job(transport).await }
        }
    }));
    let admin_state = mailmux_admin::AdminState {
        config: config.clone(),
        store: store.clone(),
        operator_token: Arc::new(admin_token),
        metric_sources: vec![smtp_metrics, queue.commit_stats().clone()],
        // One policy (and one set of rate limiters) for SMTP and the HTTP send API.
        policy: smtp.policy().clone(),
        queue: queue.clone(),
        health: health.clone(),
        ses: Some(provisioner),
    };
    // Verified domains whose DNS records disappear are flagged (not unverified) once a day.
    tokio::spawn(supervise(health.component("domain_rechecks"), {
        let state = admin_state.clone();
        move || mailmux_admin::domain_rechecks(state.clone(), DOMAIN_RECHECK_INTERVAL)
    }));
    // Stored inbound mail past its tenant's inbound_retention_days (else the relay's
    // inbound.retention_days) is deleted, checked hourly.
    tokio::spawn(supervise(health.component("inbound_retention"), {
        let inbound = smtp.inbound().clone();
        let days = config.inbound.retention_days;
        move || {
            let inbound = inbound.clone();
            async move {
                inbound
                    .expire(days, std::time::Duration::from_secs(3600))
                    .await
            }
        }
    }));
    // DKIM rotations: pending keys' records looked up (a found one switches signing), retired
    // keys dropped at the end of their grace period.
    let rotation_interval = std::time::Duration::from_secs(config.dkim.rotation_check_secs);
    tokio::spawn(supervise(health.component("dkim_rotation"), {
        let state = admin_state.clone();
        move || mailmux_admin::dkim_rotation_checks(state.clone(), rotation_interval)
    }));
    let admin = mailmux_admin::router(admin_state);

    let addresses = Addresses {
        submission: listeners.submission_addr(),
        submission_tls: listeners.submission_tls_addr(),
        mx: listeners.mx_addr(),
        admin: admin_addr,
    };
    write_atomically(
        &data_dir.join("listeners.json"),
        serde_json::to_string_pretty(&addresses)?.as_bytes(),
    )?;
    info!(
        submission = %addresses.submission,
        submission_tls = %addresses.submission_tls,
        mx = %addresses.mx,
        admin = %addresses.admin,
        "mailmux {} listening",
        env!("CARGO_PKG_VERSION")
    );

    let admin_stop = {
        let mut stop = stop_rx.clone();
        async move {
            let _ = stop.wait_for(|stopped| *stopped).await;
        }
    };
    let admin_task = tokio::spawn(async move {
        // With connection info: the send API names its client in the Received: header.
        axum::serve(
            admin_listener,
            admin.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .with_graceful_shutdown(admin_stop)
        .await
    });
    let smtp_stop = {
        let mut stop = stop_rx.clone();
        async move {
            let _ = stop.wait_for(|stopped| *stopped).await;
        }
    };
    let smtp_task = tokio::spawn(mailmux_smtp::serve(smtp, listeners, smtp_stop));

    shutdown_signal().await;
    // Order: no new mail in (listeners), no new deliveries (scheduler, delivery), deliveries
    // in flight finish or are stopped after the grace period, then this node's leases are
    // given back so other nodes (or the restart) take its mail at once.
    info!("shutting down: no new sessions or deliveries; work in flight may finish");
    queue.stop_claiming();
    let _ = stop_tx.send(true);
    let _ = smtp_task.await;
    let _ = admin_task.await;
    let _ = delivery_task.await;
    match queue.release_leases().await {
        Ok(released) => info!(released, "leases given back"),
        Err(error) => warn!(%error, "cannot give the leases back; they run out instead"),
    }
    store.close().await;
    info!("stopped");
    Ok(())
}

#[derive(serde::Serialize)]
struct Addresses {
    submission: SocketAddr,
    submission_tls: SocketAddr,
    mx: SocketAddr,
    admin: SocketAddr,
}

/// Logs go to stderr (stdout carries only the generated admin token, once). Colour codes are
/// for terminals: written into a file, a pipe or a container's log they are noise that log
/// tools do not strip, so they are on only when stderr is a terminal and NO_COLOR is unset.
fn init_tracing(format: LogFormat) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => {
            let colour = std::io::stderr().is_terminal()
                && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
            builder.with_ansi(colour).init();
        }
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_ansi(false)
            .init(),
    }
}

async fn shutdown_signal() {
    let mut terminate =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async {
            match terminate.as_mut() {
                Some(signal) => { signal.recv().await; }
                None => std::future::pending::<()>().await,
            }
        } => {}
    }
}

/// The operator token: configured, or generated on first start, kept in the data dir and
/// printed this once (stdout, so it is not mixed into the logs).
fn admin_token(config: &Config) -> anyhow::Result<String> {
    if let Some(token) = &config.admin.token {
        return Ok(token.clone());
    }
    let path = config.storage.data_dir.join("admin.token");
    if path.exists() {
        let token = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        return Ok(token.trim().to_string());
    }
    let token = mailmux_core::credential::generate_secret();
    write_private_file(&path, token.as_bytes())?;
    // A closed stdout (a service manager that discards it) must not stop the start: the token
    // is in the file either way.
    let shown = crate::output::write_stdout(&format!(
        "admin token (shown once; kept in {}): {token}\n",
        path.display()
    ));
    if let Err(error) = shown {
        warn!(%error, path = %path.display(), "cannot print the admin token; read it from the file");
    }
    Ok(token)
}

/// Reads a small value kept in a file, creating it with `make` the first time.
fn persistent_value(path: &Path, make: impl FnOnce() -> String) -> anyhow::Result<String> {
    if let Ok(value) = std::fs::read_to_string(path) {
        let value = value.trim();
        if !value.is_empty() {
            return Ok(value.to_string());
        }
    }
    let value = make();
    write_atomically(path, value.as_bytes())?;
    Ok(value)
}

/// Writes a secret readable by this user only (0600).
pub fn write_private_file(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(contents)?;
    file.sync_all()?;
    // The new name is durable only once its directory is.
    mailmux_store::sync_dir(path).with_context(|| format!("cannot sync {}", path.display()))?;
    Ok(())
}

/// Temp file, fsync, rename, fsync the directory: readers see the old file or the whole new
/// one, and after a crash the new one is still there.
pub(crate) fn write_atomically(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file =
        std::fs::File::create(&tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
    file.write_all(contents)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    mailmux_store::sync_dir(path).with_context(|| format!("cannot sync {}", path.display()))?;
    Ok(())
}

/// Whether SES is in use: the default transport, or any tenant's.
async fn uses_ses(config: &Config, store: &mailmux_store::Store) -> bool {
    use mailmux_core::TransportKind;
    config.delivery.transport == TransportKind::Ses
        || store.list_tenants().await.is_ok_and(|tenants| {
            tenants
                .iter()
                .any(|t| t.transport == Some(TransportKind::Ses))
        })
}

/// `GetAccount` once at start-up: says in the log whether the endpoint and the credentials
/// work, and sets the shared send rate to the account's MaxSendRate. A failure is logged, not
/// fatal: SES mail waits (deferred) until SES answers, other mail is not held up.
async fn probe_ses(ses: &mailmux_ses::Ses) {
    match ses.account().await {
        Ok(account) => info!(
            max_send_rate = account.max_send_rate,
            max_24_hour_send = account.max_24_hour_send,
            sending_enabled = account.sending_enabled,
            "SES account reachable"
        ),
        Err(error) => {
            warn!(%error, "SES probe (GetAccount) failed; SES mail is deferred until it answers")
        }
    }
}
