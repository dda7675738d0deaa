//! Building the SES v2 client once: credentials from the SDK's standard chain (environment,
//! profile, web identity, instance role), region and endpoint from `[ses]`, and an HTTP client
//! on rustls with ring, so the SDK adds no second TLS stack (its default is aws-lc-rs).
//!
//! The SDK's own retries are off: a send that fails is deferred by the queue, with its backoff
//! and its bounce-after-max-age, and a provisioning step that fails is retried by the sync's
//! backoff; retrying inside the call too would multiply the two and hide the failure from the
//! step's visible state.

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use mailmux_core::config::SesConfig;

use crate::Result;
use crate::error::SesError;
use crate::rate::SendRate;

/// The region used when neither `ses.region` nor the SDK's chain names one.
const DEFAULT_REGION: &str = "us-east-1";

/// The SES v2 client and what is shared with it: the account-wide send rate.
pub struct Ses {
    pub(crate) client: aws_sdk_sesv2::Client,
    pub(crate) config: SesConfig,
    /// One limiter for every tenant: SES's MaxSendRate is the account's.
    pub(crate) rate: SendRate,
    /// When the account (and so the rate) was last read; sends read it again once it is
    /// older than `ses.sync_interval_secs`. A tokio lock: one send refreshes, the others wait
    /// for its answer instead of asking too.
    pub(crate) account_read_at: tokio::sync::Mutex<Option<tokio::time::Instant>>,
}

/// What `GetAccount` says of the account.
#[derive(Debug, Clone, PartialEq)]
pub struct Account {
    /// Emails (recipients) per second.
    pub max_send_rate: f64,
    pub max_24_hour_send: f64,
    pub sending_enabled: bool,
    pub production_access: bool,
}

impl Ses {
    /// Builds the client. No request is made: credentials are resolved at the first call.
    pub async fn connect(config: &SesConfig) -> Ses {
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
            .build_https();
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .http_client(http)
            .retry_config(RetryConfig::disabled())
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(10))
                    .operation_timeout(Duration::from_secs(60))
                    .build(),
            );
        if let Some(region) = &config.region {
            loader = loader.region(Region::new(region.clone()));
        }
        if let Some(url) = &config.endpoint_url {
            loader = loader.endpoint_url(url.clone());
        }
        let shared = loader.load().await;
        let mut builder = aws_sdk_sesv2::config::Builder::from(&shared);
        if shared.region().is_none() {
            builder = builder.region(Region::new(DEFAULT_REGION));
        }
        Ses {
            client: aws_sdk_sesv2::Client::from_conf(builder.build()),
            config: config.clone(),
            rate: SendRate::new(),
            account_read_at: tokio::sync::Mutex::new(None),
        }
    }

    /// The region requests go to (the ARNs of SES's managed policies name it).
    pub fn region(&self) -> String {
        self.client
            .config()
            .region()
            .map_or_else(|| DEFAULT_REGION.to_string(), |r| r.to_string())
    }

    pub fn config(&self) -> &SesConfig {
        &self.config
    }

    /// The account-wide send rate every send waits for.
    pub fn rate(&self) -> &SendRate {
        &self.rate
    }

    /// `GetAccount`: the probe that says the endpoint and the credentials work. Also sets the
    /// shared limiter to the account's MaxSendRate.
    pub async fn account(&self) -> Result<Account> {
        let out = self
            .client
            .get_account()
            .send()
            .await
            .map_err(|e| SesError::from_sdk("GetAccount", e))?;
        let quota = out.send_quota();
        let account = Account {
            max_send_rate: quota.map_or(0.0, |q| q.max_send_rate()),
            max_24_hour_send: quota.map_or(0.0, |q| q.max24_hour_send()),
            sending_enabled: out.sending_enabled(),
            production_access: out.production_access_enabled(),
        };
        self.rate.set(account.max_send_rate);
        *self.account_read_at.lock().await = Some(tokio::time::Instant::now());
        Ok(account)
    }

    /// Reads the account again if the last read is older than `ses.sync_interval_secs` (or
    /// there was none), so the shared limiter follows the account's MaxSendRate. A failure
    /// keeps the rate in force and is retried at the next send after the interval.
    pub(crate) async fn refresh_rate_if_stale(&self) {
        let interval = Duration::from_secs(self.config.sync_interval_secs);
        let mut read_at = self.account_read_at.lock().await;
        if read_at.is_some_and(|at| at.elapsed() < interval) {
            return;
        }
        // Marked first: a failing GetAccount is not asked again by every send.
        *read_at = Some(tokio::time::Instant::now());
        drop(read_at);
        if let Err(error) = self.account().await {
            tracing::warn!(%error, "cannot read the SES account's send rate; keeping the one in force");
        }
    }
}
