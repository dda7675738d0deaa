//! The end-to-end test harness: real processes on loopback, shared by every `tests/*.rs` through
//! `mod common;`.
//!
//! - [`DnsServer`]: an authoritative DNS server (tests/support/dns_server.py) serving MX/A/TXT
//!   records for test domains; records can be changed while it runs.
//! - [`SesRecorder`]: SES v2 on loopback (tests/support/ses_recorder.py): FakeSES, or a
//!   recording proxy in front of ministack.
//! - [`Ministack`]: the ministack SES v2 emulator, one per test binary, reset for each test.
//! - [`Sink`]: a receiving SMTP server (tests/support/smtp_sink.py): the remote MTA, the
//!   smarthost, the bench sink. Every accepted message is kept byte for byte.
//! - [`Mailmux`]: the real `mailmux serve` binary on `127.0.0.1:0` listeners, with its data dir
//!   in a temp dir, and its CLI on the same data dir.
//! - [`postgres_url`]: a fresh database on a private PostgreSQL cluster.
//! - [`WebhookReceiver`]: a tenant's webhook endpoint (tests/support/webhook_receiver.py)
//!   verifying every request with the `standardwebhooks` Python package.
//! - [`swaks`], [`submit_smtplib`] and [`smtplib_burst`]: real SMTP clients; [`http`]: a
//!   minimal HTTP client for the admin API.
//!
//! Nothing here listens on or talks to anything outside 127.0.0.1, and no port is fixed: every
//! server binds port 0 and reports the port it got.
//!
//! Missing tools: a test calls [`require_tool`] / [`require_python_module`] (or gets `None` from
//! [`postgres_url`]) and returns early, printing `SKIPPED: ...`; with `CI=true` a missing tool
//! fails the test instead, so CI can never pass by skipping.
//!
//! One file per part: `tools.rs`, `process.rs`, `dns.rs`, `sink.rs`, `mailmux.rs`,
//! `postgres.rs`, `clients.rs`, `http.rs`, `ses.rs`, `ministack.rs`, `webhooks.rs`; this file
//! names what tests use.
//!
//! Every child process is killed when its guard is dropped (also while a failing test unwinds).
//! The DNS server and the sink also exit when their stdin closes, so they die with the test
//! process even when it is killed; the Postgres cluster has a watchdog for the same reason.
//! `mailmux serve` has neither: only a killed test binary can leave one running.
#![allow(clippy::disallowed_methods)] // synchronous tests driving real processes: no runtime here for std::thread::sleep to block
#![allow(dead_code, unused_imports)] // each test binary uses a different part of the harness

use std::time::Duration;

mod clients;
mod dns;
mod http;
mod mailmux;
mod ministack;
mod postgres;
mod process;
mod ses;
mod sink;
mod tools;
mod webhooks;

pub use clients::{
    Burst, mx_send, python_eval, require_python_modules, require_support, smtp_data, smtplib_burst,
    submit_as, submit_smtplib, submit_smtplib_args, swaks, swaks_data, swaks_status,
};
pub use dns::DnsServer;
pub use http::{http, http_raw, http_with_headers};
pub use mailmux::{Listeners, Mailmux, TestTenant};
pub use ministack::Ministack;
pub use postgres::{postgres_url, psql};
pub use process::{TestDir, terminate, unique_suffix, wait_until};
pub use ses::SesRecorder;
pub use sink::{Received, Sink, header};
pub use tools::{
    find_tool, mailmux_bin, pg_bindir, python, repo_root, require, require_python_module,
    require_tool, support_dir,
};
pub use webhooks::WebhookReceiver;

/// The operator token every [`Mailmux`] is started with.
pub const ADMIN_TOKEN: &str = "test-admin-token";

/// How long a support process may take to print its `{"port": N}` line.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
