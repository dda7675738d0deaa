//! [`Sink`]: a receiving SMTP server (tests/support/smtp_sink.py), the remote MTA, the smarthost, the bench sink; every accepted message is kept byte for byte ([`Received`]).

use std::io::BufRead;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};

use super::process::{SupportProcess, TestDir, wait_until};

/// One message the sink accepted.
#[derive(Debug, Clone)]
pub struct Received {
    /// The sink's sequence number (1, 2, ...), in order of acceptance.
    pub seq: u64,
    pub mail_from: String,
    pub rcpt_tos: Vec<String>,
    /// The DATA content exactly as received, after dot-unstuffing.
    pub raw: Vec<u8>,
    /// Everything the sink recorded: `mail_options`, `rcpt_options`, `peer`, `helo`, `tls`,
    /// `auth_login`, `received_at`.
    pub meta: Value,
}

impl Received {
    /// The raw message as text (lossy), for `contains` checks on headers.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.raw).into_owned()
    }

    /// The value of the first header `name` (case-insensitive), unfolded; see [`header`].
    pub fn header(&self, name: &str) -> Option<String> {
        header(&self.raw, name)
    }
}

/// The value of the first header field `name` (case-insensitive) of a raw message, unfolded
/// and trimmed (`"<id@host>"` for Message-ID). Only the header section is searched.
pub fn header(raw: &[u8], name: &str) -> Option<String> {
    let text = String::from_utf8_lossy(raw);
    let head = text.split("\r\n\r\n").next().unwrap_or("");
    let mut found: Option<String> = None;
    for line in head.split("\r\n") {
        if line.starts_with([' ', '\t']) {
            if let Some(v) = found.as_mut() {
                v.push(' ');
                v.push_str(line.trim());
            }
            continue;
        }
        if found.is_some() {
            break;
        }
        if let Some((k, v)) = line.split_once(':')
            && k.trim().eq_ignore_ascii_case(name)
        {
            found = Some(v.trim().to_string());
        }
    }
    found
}

/// The receiving SMTP server (aiosmtpd) on 127.0.0.1, in its own process, keeping every accepted
/// message in its temp dir.
///
/// Switches (see `smtp_sink.py --help`): `--reject-rcpt REGEX`, `--tempfail-rcpt REGEX:N`,
/// `--tempfail-data N`, `--no-8bitmime`, `--no-smtputf8`, `--starttls CERT KEY`,
/// `--starttls-self-signed`, `--require-starttls`, `--implicit-tls`, `--auth USER:PASS`,
/// `--delay-ms N`, `--discard`, `--close-after-dot N` (read the message, close without a reply),
/// `--data-log FILE` (one JSON line per DATA transaction, as its final dot arrives),
/// `--address IP` with `--port N` (e.g. a second sink on 127.0.0.2 with the first one's port).
pub struct Sink {
    process: SupportProcess,
    dir: TestDir,
}

impl Sink {
    /// Starts the sink with extra `args` (it always gets `--dir` and `--count-file` in its own
    /// temp dir). Panics if it cannot start; call [`require_python_module`]`("aiosmtpd")` first.
    pub fn start(args: &[&str]) -> Sink {
        let dir = TestDir::new("mailmux-sink");
        let mut all: Vec<String> = vec![
            "--dir".into(),
            dir.path().join("messages").display().to_string(),
            "--count-file".into(),
            dir.path().join("counts.json").display().to_string(),
        ];
        all.extend(args.iter().map(|s| s.to_string()));
        let process = SupportProcess::spawn("smtp_sink.py", "smtp_sink.py", &all);
        Sink { process, dir }
    }

    pub fn port(&self) -> u16 {
        self.process.port
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port()))
    }

    /// Where `<seq>.eml` / `<seq>.json` land.
    pub fn messages_dir(&self) -> PathBuf {
        self.dir.path().join("messages")
    }

    /// The sink's counters `{"messages", "recipients", "rejected", "tempfailed", "connections",
    /// "data_received", "closed_after_dot"}` (refreshed by the sink every 100 ms; before its
    /// first write, the first four as zero).
    pub fn counts(&self) -> Value {
        std::fs::read(self.dir.path().join("counts.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_else(
                || json!({"messages": 0, "recipients": 0, "rejected": 0, "tempfailed": 0}),
            )
    }

    /// Every message accepted so far, in order.
    pub fn messages(&self) -> Vec<Received> {
        let Ok(entries) = std::fs::read_dir(self.messages_dir()) else {
            return Vec::new();
        };
        let mut seqs: Vec<u64> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                name.strip_suffix(".json")?.parse::<u64>().ok()
            })
            .collect();
        seqs.sort_unstable();
        seqs.into_iter()
            .filter_map(|seq| self.read_message(seq))
            .collect()
    }

    fn read_message(&self, seq: u64) -> Option<Received> {
        // The sink writes <seq>.eml before <seq>.json, both by rename: seeing the .json means
        // the .eml is complete.
        let base = self.messages_dir().join(format!("{seq:06}"));
        let meta: Value =
            serde_json::from_slice(&std::fs::read(base.with_extension("json")).ok()?).ok()?;
        let raw = std::fs::read(base.with_extension("eml")).ok()?;
        Some(Received {
            seq,
            // aiosmtpd reports the null sender as "<>"; the envelope's reverse path is empty.
            mail_from: match meta["mail_from"].as_str().unwrap_or_default() {
                "<>" => String::new(),
                other => other.to_string(),
            },
            rcpt_tos: meta["rcpt_tos"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
            raw,
            meta,
        })
    }

    /// Waits until at least `n` messages have arrived and returns all of them; panics after
    /// `timeout` saying how many did arrive.
    pub fn wait_for_messages(&self, n: usize, timeout: Duration) -> Vec<Received> {
        match wait_until(timeout, || {
            let msgs = self.messages();
            (msgs.len() >= n).then_some(msgs)
        }) {
            Some(msgs) => msgs,
            None => panic!(
                "sink on port {}: expected {n} message(s) within {timeout:?}, got {} (counts {})",
                self.port(),
                self.messages().len(),
                self.counts()
            ),
        }
    }
}
