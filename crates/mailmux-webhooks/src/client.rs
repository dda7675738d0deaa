//! One POST to an endpoint: hyper 1 with hyper-rustls (ring, public CA roots), connecting only
//! where [`crate::destination`] allows, given up on after `webhooks.request_timeout_secs`.
//! Only a 2xx is a success; a 3xx is a failure like any other (redirects are never followed:
//! a redirect is a second destination nobody checked, and the tenant should fix the URL).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Uri, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use mailmux_core::address_policy::AddressPolicy;
use mailmux_core::config::WebhooksConfig;

use crate::destination::{GuardedResolver, literal_refusal};

/// Most of a response body read (then dropped): enough to keep the connection reusable.
const MAX_RESPONSE_BODY: usize = 64 * 1024;

/// What one request came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The HTTP status; `None` when none came back (refused address, connect error, timeout).
    pub status: Option<u16>,
    /// Why it is not a success (`None` for a 2xx).
    pub error: Option<String>,
    pub duration: Duration,
}

impl Response {
    pub fn delivered(&self) -> bool {
        self.error.is_none()
    }
}

/// Built once and shared: the connection pool is per endpoint host inside it.
#[derive(Clone)]
pub struct WebhookClient {
    client: Client<HttpsConnector<HttpConnector<GuardedResolver>>, Full<Bytes>>,
    policy: Arc<AddressPolicy>,
    timeout: Duration,
}

impl WebhookClient {
    pub fn new(config: &WebhooksConfig) -> WebhookClient {
        let policy = Arc::new(AddressPolicy::new(&config.allowed_networks));
        let mut http = HttpConnector::new_with_resolver(GuardedResolver::new(policy.clone()));
        http.enforce_http(false);
        http.set_connect_timeout(Some(Duration::from_secs(config.connect_timeout_secs)));
        http.set_nodelay(true);
        let roots =
            rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(4)
            .build(https);
        WebhookClient {
            client,
            policy,
            timeout: Duration::from_secs(config.request_timeout_secs),
        }
    }

    /// POSTs `body` (JSON) to `url` with `headers`.
    pub async fn post(
        &self,
        url: &Uri,
        headers: &[(&'static str, String)],
        body: Bytes,
    ) -> Response {
        let started = Instant::now();
        let done = |status: Option<u16>, error: Option<String>| Response {
            status,
            error,
            duration: started.elapsed(),
        };
        // The connector resolves names through the guard, but connects to IP literals as they
        // are: those are checked here, every time (allowed_networks may have changed).
        if let Some(refusal) = literal_refusal(url, &self.policy) {
            return done(None, Some(refusal));
        }
        let mut request = Request::post(url.clone())
            .header(header::CONTENT_TYPE, "application/json")
            .header(
                header::USER_AGENT,
                concat!("mailmux-webhooks/", env!("CARGO_PKG_VERSION")),
            );
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let request = match request.body(Full::new(body)) {
            Ok(request) => request,
            Err(e) => return done(None, Some(format!("cannot build the request: {e}"))),
        };
        let exchange = async {
            let response = self.client.request(request).await?;
            let status = response.status();
            // Read (a bounded amount of) the body so the connection can be reused; its content
            // does not matter.
            let _ = Limited::new(response.into_body(), MAX_RESPONSE_BODY)
                .collect()
                .await;
            Ok::<_, hyper_util::client::legacy::Error>(status)
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Err(_) => done(
                None,
                Some(format!("no response within {} s", self.timeout.as_secs())),
            ),
            Ok(Err(error)) => done(None, Some(describe(&error))),
            Ok(Ok(status)) if status.is_success() => done(Some(status.as_u16()), None),
            Ok(Ok(status)) if status.is_redirection() => done(
                Some(status.as_u16()),
                Some(format!("HTTP {status}: redirects are not followed")),
            ),
            Ok(Ok(status)) => done(Some(status.as_u16()), Some(format!("HTTP {status}"))),
        }
    }
}

/// hyper's error with its causes (the connector's reason is in the chain: "resolves to
/// 127.0.0.1 (loopback), not allowed").
fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
