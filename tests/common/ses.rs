//! [`SesRecorder`]: tests/support/ses_recorder.py, SES v2 on loopback: FakeSES (a named fake
//! of the SES v2 wire format for what ministack does not emulate) or a recording pass-through
//! proxy in front of ministack. Either way every request is recorded for the test to read.

use std::net::SocketAddr;

use serde_json::{Value, json};

use super::http::http;
use super::process::SupportProcess;

pub struct SesRecorder {
    process: SupportProcess,
}

impl SesRecorder {
    /// FakeSES, answering the SES v2 operations the tests use.
    pub fn fake() -> SesRecorder {
        SesRecorder {
            process: SupportProcess::spawn("ses_recorder.py", "ses_recorder.py", &[]),
        }
    }

    /// A recording proxy in front of `upstream` (ministack's URL).
    pub fn proxy(upstream: &str) -> SesRecorder {
        let args = ["--upstream".to_string(), upstream.to_string()];
        SesRecorder {
            process: SupportProcess::spawn("ses_recorder.py", "ses_recorder.py", &args),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.process.port))
    }

    /// What mailmux's `ses.endpoint_url` is set to.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// The environment that points `mailmux serve` (and the CLI) at this endpoint, with dummy
    /// credentials: the SDK's chain stops at the environment, so nothing reaches AWS.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("MAILMUX_SES__ENDPOINT_URL", self.url()),
            ("MAILMUX_SES__REGION", "us-east-1".into()),
            ("AWS_ACCESS_KEY_ID", "AKIAMAILMUXTEST00000".into()),
            ("AWS_SECRET_ACCESS_KEY", "mailmux-test-secret".into()),
            ("AWS_EC2_METADATA_DISABLED", "true".into()),
        ]
    }

    /// What the upstream does not emulate (proxy mode; the probe's findings), answered by
    /// FakeSES instead.
    pub fn not_emulated(&self) -> Vec<String> {
        self.process.first["not_emulated"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Forgets the requests recorded so far and the failures not yet used.
    pub fn reset(&self) {
        let (status, body) = http(self.addr(), "POST", "/_test/reset", None, None);
        assert_eq!(status, 200, "{body}");
    }

    /// Every request so far (`method`, `path`, `json`).
    pub fn requests(&self) -> Vec<Value> {
        let (status, body) = http(self.addr(), "GET", "/_test/requests", None, None);
        assert_eq!(status, 200, "{body}");
        body.as_array().cloned().unwrap_or_default()
    }

    /// The SendEmail requests so far.
    pub fn sends(&self) -> Vec<Value> {
        self.requests()
            .into_iter()
            .filter(|r| r["path"] == "/v2/email/outbound-emails")
            .map(|r| r["json"].clone())
            .collect()
    }

    /// The next `times` requests to `path` get `status` with error code `code`.
    pub fn fail(&self, path: &str, status: u16, code: &str, message: &str, times: u32) {
        let body = json!({"path": path, "status": status, "type": code, "message": message,
                          "times": times});
        let (status, reply) = http(self.addr(), "POST", "/_test/fail", None, Some(&body));
        assert_eq!(status, 200, "{reply}");
    }

    /// FakeSES: marks `domain`'s identity verified for sending (DKIM SUCCESS) or not; with
    /// `None`, whether identities created from now on are.
    pub fn set_identity_verified(&self, domain: Option<&str>, verified: bool) {
        let mut body = json!({"VerifiedForSendingStatus": verified});
        if let Some(domain) = domain {
            body["EmailIdentity"] = json!(domain);
        }
        let (code, reply) = http(self.addr(), "POST", "/_test/identity", None, Some(&body));
        assert_eq!(code, 200, "{reply}");
    }

    /// FakeSES: sets an SES tenant's SendingStatus (creating the tenant if needed).
    pub fn set_tenant_status(&self, tenant_name: &str, status: &str) {
        let body = json!({"TenantName": tenant_name, "SendingStatus": status});
        let (code, reply) = http(self.addr(), "POST", "/_test/tenant", None, Some(&body));
        assert_eq!(code, 200, "{reply}");
    }
}
