//! [`WebhookReceiver`]: a tenant's webhook endpoint (tests/support/webhook_receiver.py) that
//! verifies every request with the `standardwebhooks` Python package and records it; paths can
//! be told to fail, hang or redirect.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};

use super::http::http;
use super::process::{SupportProcess, wait_until};

pub struct WebhookReceiver {
    process: SupportProcess,
}

impl WebhookReceiver {
    /// Starts the receiver on 127.0.0.1; call [`super::require_python_module`]`("standardwebhooks")`
    /// first.
    pub fn start() -> WebhookReceiver {
        WebhookReceiver {
            process: SupportProcess::spawn("webhook_receiver.py", "webhook_receiver.py", &[]),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.process.port))
    }

    /// `http://127.0.0.1:<port><path>`
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr())
    }

    /// Configures the endpoint at `path`: `{"secrets", "fail_first", "status", "hang_secs",
    /// "redirect"}` (see the script).
    pub fn configure(&self, path: &str, config: Value) {
        let mut body = config;
        body["path"] = json!(path);
        let (status, answer) = http(self.addr(), "POST", "/_control", None, Some(&body));
        assert_eq!(status, 200, "{answer}");
    }

    /// Every request so far, in arrival order: `{"path", "webhook_id", "timestamp",
    /// "signature", "verified": [..], "body", "answered", "at"}`.
    pub fn received(&self) -> Vec<Value> {
        let (status, answer) = http(self.addr(), "GET", "/_received", None, None);
        assert_eq!(status, 200, "{answer}");
        answer["requests"].as_array().cloned().unwrap_or_default()
    }

    /// The requests to `path`.
    pub fn received_at(&self, path: &str) -> Vec<Value> {
        self.received()
            .into_iter()
            .filter(|r| r["path"] == path)
            .collect()
    }

    /// Waits (≤ `timeout`) until `path` got at least `n` requests; returns them.
    pub fn wait_for(&self, path: &str, n: usize, timeout: Duration) -> Vec<Value> {
        wait_until(timeout, || {
            let got = self.received_at(path);
            (got.len() >= n).then_some(got)
        })
        .unwrap_or_else(|| {
            panic!(
                "{path}: expected {n} request(s) within {timeout:?}, got {:?}",
                self.received_at(path)
            )
        })
    }
}
