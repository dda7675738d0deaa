//! Typed configuration: the embedded defaults, an optional TOML file on top, and
//! `MAILMUX_<SECTION>__<KEY>` environment variables on top of that.
//!
//! Every key has a default, so `mailmux serve` runs with no file at all. A bad value or an
//! unknown key is one error that names the key (`smtp.submission: invalid socket address`).
//!
//! Over 600 lines with its tests, on purpose: one struct per section with every key documented
//! where it is declared, and the cross-key checks beside them; split by section, the keys an
//! operator looks up and the rules between them would sit in different files.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

pub use crate::ses_config::SesConfig;

/// The embedded default configuration, shipped as `config/mailmux.toml`; it documents every key.
pub const DEFAULT_CONFIG_TOML: &str = include_str!("../../../config/mailmux.toml");

/// Prefix of environment variables that override configuration keys.
const ENV_PREFIX: &str = "MAILMUX_";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("{key}: {message}")]
    Invalid { key: String, message: String },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub smtp: SmtpConfig,
    pub admin: AdminConfig,
    pub storage: StorageConfig,
    pub tls: TlsConfig,
    pub delivery: DeliveryConfig,
    pub queue: QueueConfig,
    pub ses: SesConfig,
    pub dkim: DkimConfig,
    pub inbound: InboundConfig,
    pub webhooks: WebhooksConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpConfig {
    /// Submission with STARTTLS (587-style).
    pub submission: SocketAddr,
    /// Submission with implicit TLS (465-style).
    pub submission_tls: SocketAddr,
    /// Inbound MX.
    pub mx: SocketAddr,
    /// Name used in the greeting, EHLO reply and Received: headers.
    pub hostname: String,
    /// Client networks whose unauthenticated submission is accepted as `default_tenant`.
    pub trusted_networks: Vec<IpNet>,
    /// Tenant id that trusted networks submit as; the mapping is off unless both are set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_tenant: Option<String>,
    /// Largest message accepted, in bytes (advertised in EHLO SIZE); a cap over every
    /// tenant's own `max_message_size`.
    pub max_message_size: u64,
    /// Most recipients accepted in one transaction; a cap over every tenant's own
    /// `max_recipients_per_message`.
    pub max_recipients: usize,
    /// Concurrent sessions over all listeners.
    pub max_connections: usize,
    /// Concurrent sessions from one client IP.
    pub max_connections_per_ip: usize,
    /// MX: messages (MAIL commands) one client IP may start per minute; 0 = unlimited.
    pub mx_rate_per_minute: u64,
    /// Seconds to wait for the next command line (RFC 5321 §4.5.3.2 suggests 5 minutes).
    pub command_timeout_secs: u64,
    /// Seconds to wait for each chunk of DATA / BDAT.
    pub data_timeout_secs: u64,
    /// Upper bound on a whole session, whatever it does.
    pub session_timeout_secs: u64,
    /// Failed AUTH attempts for one username from one client IP within
    /// `auth_failure_window_secs` before that username is locked out from that IP (421). Per
    /// pair, so one app with a wrong password behind a shared NAT locks out only itself.
    pub auth_failure_limit: u32,
    /// Failed AUTH attempts from one client IP, over all usernames, within the window before
    /// the whole IP is locked out (new connections get 421): catches spraying many usernames.
    pub auth_failure_ip_limit: u32,
    pub auth_failure_window_secs: u64,
    /// Commands that are not mail (EHLO, HELO, NOOP, RSET, HELP, VRFY, unknown) allowed
    /// between accepted messages.
    pub max_idle_commands: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// REST API, `/metrics` and `/healthz`.
    pub listen: SocketAddr,
    /// Operator bearer token; generated on first start (and stored in the data dir) when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// The base URL tenants reach the REST API at (e.g. `https://mail.example.com`), for links
    /// mailmux hands out (a webhook payload's `raw_url`); unset means `http://<listen>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_url: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// Generated certificate, admin token, keys and the SQLite database live here.
    pub data_dir: PathBuf,
    /// `sqlite://PATH` or `postgres://…`; unset means `sqlite://<data_dir>/mailmux.db`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database_url: Option<String>,
    /// Pool size for the database.
    pub max_db_connections: u32,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain for the SMTP listeners; generated (self-signed) when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,
    /// PEM private key matching `cert`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
}

/// How mail for a tenant leaves mailmux.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TransportKind {
    /// Directly to the recipient domain's MX.
    Mx,
    /// Through one configured relay host.
    Smarthost,
    /// Through the tenant's AWS SES v2 tenant.
    Ses,
}

impl TransportKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TransportKind::Mx => "mx",
            TransportKind::Smarthost => "smarthost",
            TransportKind::Ses => "ses",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "mx" => Some(TransportKind::Mx),
            "smarthost" => Some(TransportKind::Smarthost),
            "ses" => Some(TransportKind::Ses),
            _ => None,
        }
    }
}

/// TLS towards the smarthost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmarthostTls {
    /// Plain SMTP, STARTTLS used if offered (certificate not checked).
    Opportunistic,
    /// STARTTLS required, certificate checked.
    Starttls,
    /// Implicit TLS (465-style), certificate checked.
    Tls,
    /// Never TLS (loopback relays only).
    None,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryConfig {
    /// DNS servers for MX/A/AAAA lookups; empty means the system resolver.
    pub dns_servers: Vec<SocketAddr>,
    /// TCP port used for direct MX delivery (25 in production).
    pub mx_port: u16,
    /// Default transport for tenants that set none.
    pub transport: TransportKind,
    /// `host:port` of the smarthost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smarthost: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smarthost_user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smarthost_password: Option<String>,
    pub smarthost_tls: SmarthostTls,
    /// Name sent in EHLO to remote servers; `smtp.hostname` when empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub helo_name: Option<String>,
    /// Messages delivered at once, over all destinations.
    pub concurrency: usize,
    /// Open connections kept per destination: one address of an MX host or of the smarthost,
    /// shared by every recipient domain that host serves.
    pub max_connections_per_destination: usize,
    /// Seconds an idle pooled connection is kept for reuse.
    pub idle_connection_secs: u64,
    pub connect_timeout_secs: u64,
    /// Per SMTP command towards the remote (end of DATA waits longer: 10 minutes per RFC 5321).
    pub command_timeout_secs: u64,
    /// Retry schedule: the first wait after a temporary failure...
    pub retry_initial_secs: u64,
    /// ...multiplied by this after each attempt...
    pub retry_factor: f64,
    /// ...never longer than this...
    pub retry_max_secs: u64,
    /// ...until the message is this old; then it bounces.
    pub max_age_secs: u64,
    /// Each retry delay is spread by up to this fraction either way (0.2 = ±20 %), so that
    /// mail deferred together (a destination that was down) does not come back together.
    pub retry_jitter: f64,
    /// Seconds a destination (one address of an MX host or smarthost) that refused the
    /// connection, timed out connecting or answered 421 is left alone; doubled for each
    /// further failure in a row (at most 16×). Its mail waits instead of each message
    /// spending a connect timeout on it.
    pub host_down_secs: u64,
    /// How long delivery trusts what it read of a tenant (transport, features, status) and of
    /// a domain's DKIM key before asking the store again: the bound on how soon a change made
    /// through the API reaches delivery on every node. 0 reads the store for every message.
    pub cache_ttl_ms: u64,
    /// Networks that direct MX delivery may connect to although they are loopback, private
    /// (RFC 1918, ULA, CGNAT), link-local (cloud metadata) or otherwise not public. Empty: only
    /// public addresses. A relay that connects wherever DNS points can be aimed at the
    /// operator's own network.
    pub allowed_networks: Vec<IpNet>,
    /// A message with more `Received:` header fields than this is bounced as a mail loop
    /// (RFC 5321 §6.3).
    pub max_received_headers: usize,
    /// At shutdown, seconds that deliveries in flight get to finish; what is still running
    /// then is stopped and its lease released, so another node (or the restart) takes it.
    pub shutdown_grace_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    /// Most messages made durable by one commit (group commit).
    pub max_batch: usize,
    /// Seconds a node owns a message it took for delivery before another node may take it.
    pub lease_secs: u64,
    /// How often the scheduler looks for due retries and orphaned leases.
    pub poll_interval_ms: u64,
    /// Days a finished message's record (envelope, per-recipient outcome, attempt history;
    /// the body is dropped at once) is kept for the messages API; 0 keeps them forever.
    pub retention_days: u64,
    /// Where queued bodies are written (one file each, in a sub-directory per node); unset:
    /// `<data_dir>/spool`. Nodes sharing one Postgres must share this directory too (a shared
    /// filesystem), so that any node can deliver any message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spool_dir: Option<PathBuf>,
}

/// The MX side after acceptance (`mailmux-inbound`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InboundConfig {
    /// Check SPF (at MAIL FROM), DKIM, DMARC and ARC (at end of DATA) on mail the MX accepts,
    /// and prepend their Authentication-Results header. Off only behind a gateway that already
    /// checked them: mail is then stored without verdicts, and DMARC is never enforced.
    pub verify_auth: bool,
    /// Days stored inbound mail (`store` rules, postmaster mail, return-path bounces) is kept;
    /// 0 keeps it until deleted. A tenant's own `inbound_retention_days` wins over it.
    pub retention_days: u64,
    /// Where mail to the bare `RCPT TO:<postmaster>` (RFC 5321 §4.5.1, no domain) goes: an
    /// address on a tenant's verified inbound domain, whose receipt rules then apply to it (a
    /// `forward` rule sends it on to any mailbox). Unset: such mail is refused with 550 rather
    /// than accepted and lost, since the relay would have nowhere to keep it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postmaster: Option<String>,
}

/// Webhook delivery (`mailmux-webhooks`): where endpoints may be, how long and how often a
/// failing one is tried.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhooksConfig {
    /// Networks webhook URLs may point into although they are loopback, private, link-local…
    /// (SSRF: by default only public addresses are reached).
    pub allowed_networks: Vec<IpNet>,
    /// A delivery failing for this long after its creation (or replay) is dead-lettered.
    pub max_age_secs: u64,
    /// Raw messages up to this size ride in the payload (base64); larger ones are linked
    /// (`raw_url`) and fetched with the tenant's API key.
    pub inline_raw_max_bytes: u64,
    pub connect_timeout_secs: u64,
    /// The whole request, connection included: a hanging endpoint is given up on after this.
    pub request_timeout_secs: u64,
    /// First retry delay; doubled at each failure (with jitter) up to `retry_max_secs`.
    pub retry_initial_ms: u64,
    pub retry_max_secs: u64,
    /// Requests in flight to one endpoint at once (per node): a slow endpoint occupies only
    /// its own slots, never another tenant's.
    pub concurrency_per_endpoint: usize,
    /// How often due deliveries are looked for.
    pub poll_interval_ms: u64,
}

/// DKIM key rotation (`POST …/dkim/rotate`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DkimConfig {
    /// Seconds a replaced key stays listed as `retiring` ("keep published") after signing
    /// switched to its successor: mail signed with it may still be queued elsewhere or checked
    /// again later.
    pub retiring_secs: u64,
    /// How often domains with a rotation in progress have the new key's record looked up; once
    /// found, signing switches to it.
    pub rotation_check_secs: u64,
}

impl Default for Config {
    fn default() -> Self {
        // The embedded file is part of the binary and covered by a unit test.
        toml::from_str(DEFAULT_CONFIG_TOML).expect("embedded default configuration is valid")
    }
}

impl Config {
    /// Defaults, then the file at `path` (if any), then `MAILMUX_*` variables from `env`.
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut merged: toml::Table =
            toml::from_str(DEFAULT_CONFIG_TOML).expect("embedded default configuration is TOML");
        if let Some(path) = path {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_owned(),
                source,
            })?;
            let file: toml::Table = toml::from_str(&text).map_err(|e| ConfigError::Syntax {
                path: path.to_owned(),
                message: e.message().to_string(),
            })?;
            merge_tables(&mut merged, file);
        }
        for (name, raw) in env {
            let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            let Some((section, key)) = rest.split_once("__") else {
                continue; // Not a configuration key (e.g. MAILMUX_TEST_PYTHON).
            };
            apply_env_override(
                &mut merged,
                &section.to_lowercase(),
                &key.to_lowercase(),
                &raw,
            )?;
        }
        let config: Config =
            serde_path_to_error::deserialize(toml::Value::Table(merged)).map_err(|e| {
                ConfigError::Invalid {
                    key: e.path().to_string(),
                    // The bare message: the path is already in `key`, and toml adds it again
                    // on a second line ("in `smtp.submission`").
                    message: e.inner().message().lines().next().unwrap_or("").to_string(),
                }
            })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks that serde cannot express: relations between keys and ranges.
    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: &str| {
            Err(ConfigError::Invalid {
                key: key.to_string(),
                message: message.to_string(),
            })
        };
        if self.smtp.hostname.trim().is_empty() {
            return invalid("smtp.hostname", "must not be empty");
        }
        if self.smtp.max_recipients == 0 {
            return invalid("smtp.max_recipients", "must be at least 1");
        }
        if self.smtp.max_connections == 0 || self.smtp.max_connections_per_ip == 0 {
            return invalid("smtp.max_connections", "must be at least 1");
        }
        if self.smtp.max_message_size < 1024 {
            return invalid("smtp.max_message_size", "must be at least 1024 bytes");
        }
        if self.tls.cert.is_some() != self.tls.key.is_some() {
            return invalid("tls.cert", "tls.cert and tls.key must be set together");
        }
        if let Some(url) = &self.storage.database_url
            && !(url.starts_with("sqlite:")
                || url.starts_with("postgres:")
                || url.starts_with("postgresql:"))
        {
            return invalid(
                "storage.database_url",
                "must start with sqlite:// or postgres://",
            );
        }
        if self.delivery.transport == TransportKind::Smarthost && self.delivery.smarthost.is_none()
        {
            return invalid(
                "delivery.smarthost",
                "must be set when delivery.transport = \"smarthost\"",
            );
        }
        if let Err((key, message)) = self.ses.check() {
            return invalid(key, &message);
        }
        if let Some(host) = &self.delivery.smarthost
            && parse_host_port(host).is_none()
        {
            return invalid("delivery.smarthost", "must be host:port");
        }
        if self.delivery.concurrency == 0 || self.delivery.max_connections_per_destination == 0 {
            return invalid("delivery.concurrency", "must be at least 1");
        }
        if self.delivery.retry_factor.is_nan() || self.delivery.retry_factor < 1.0 {
            return invalid("delivery.retry_factor", "must be at least 1.0");
        }
        if self.delivery.retry_initial_secs == 0 {
            return invalid("delivery.retry_initial_secs", "must be at least 1");
        }
        if self.queue.max_batch == 0 {
            return invalid("queue.max_batch", "must be at least 1");
        }
        if self.queue.lease_secs < 2 {
            // Renewed every third of the lease: shorter, and a slow commit loses leases.
            return invalid("queue.lease_secs", "must be at least 2");
        }
        if self.delivery.max_received_headers == 0 {
            return invalid("delivery.max_received_headers", "must be at least 1");
        }
        if !(0.0..=0.5).contains(&self.delivery.retry_jitter) {
            return invalid("delivery.retry_jitter", "must be between 0.0 and 0.5");
        }
        if self.delivery.host_down_secs == 0 {
            return invalid("delivery.host_down_secs", "must be at least 1");
        }
        if self.delivery.cache_ttl_ms > 60_000 {
            return invalid(
                "delivery.cache_ttl_ms",
                "must be at most 60000: a paused tenant's mail must stop within a minute",
            );
        }
        if let Some(postmaster) = &self.inbound.postmaster
            && !postmaster.contains('@')
        {
            return invalid(
                "inbound.postmaster",
                "must be an address (user@domain) on a tenant's inbound domain",
            );
        }
        if self.dkim.rotation_check_secs == 0 {
            return invalid("dkim.rotation_check_secs", "must be at least 1");
        }
        if self.webhooks.request_timeout_secs == 0 || self.webhooks.connect_timeout_secs == 0 {
            return invalid("webhooks.request_timeout_secs", "must be at least 1");
        }
        if self.webhooks.retry_initial_ms == 0 || self.webhooks.poll_interval_ms == 0 {
            return invalid("webhooks.retry_initial_ms", "must be at least 1");
        }
        if self.webhooks.concurrency_per_endpoint == 0 {
            return invalid("webhooks.concurrency_per_endpoint", "must be at least 1");
        }
        if let Some(url) = &self.admin.public_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return invalid("admin.public_url", "must start with http:// or https://");
        }
        Ok(())
    }

    /// The database URL in force: the configured one or SQLite inside the data dir.
    pub fn database_url(&self) -> String {
        match &self.storage.database_url {
            Some(url) => url.clone(),
            None => format!(
                "sqlite://{}",
                self.storage.data_dir.join("mailmux.db").display()
            ),
        }
    }

    /// The base URL of the REST API as tenants reach it (`admin.public_url`, else
    /// `http://<admin.listen>`), without a trailing slash.
    pub fn admin_public_url(&self) -> String {
        match &self.admin.public_url {
            Some(url) => url.trim_end_matches('/').to_string(),
            None => format!("http://{}", self.admin.listen),
        }
    }

    /// Whether `ip` may submit without AUTH (as `smtp.default_tenant`).
    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        self.smtp.default_tenant.is_some()
            && self
                .smtp
                .trusted_networks
                .iter()
                .any(|net| net.contains(&ip))
    }

    pub fn helo_name(&self) -> &str {
        self.delivery
            .helo_name
            .as_deref()
            .unwrap_or(&self.smtp.hostname)
    }
}

impl SmtpConfig {
    pub fn command_timeout(&self) -> Duration {
        Duration::from_secs(self.command_timeout_secs)
    }
    pub fn data_timeout(&self) -> Duration {
        Duration::from_secs(self.data_timeout_secs)
    }
    pub fn session_timeout(&self) -> Duration {
        Duration::from_secs(self.session_timeout_secs)
    }
}

/// Splits `host:port` (or `[v6]:port`) into its parts.
pub fn parse_host_port(value: &str) -> Option<(String, u16)> {
    let (host, port) = value.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return None;
    }
    Some((host.to_string(), port))
}

/// Overlays `overlay` onto `base`, table by table.
fn merge_tables(base: &mut toml::Table, overlay: toml::Table) {
    for (key, value) in overlay {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(base_table)), toml::Value::Table(overlay_table)) => {
                merge_tables(base_table, overlay_table)
            }
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

/// Sets `section.key` from an environment variable. The default's type decides how the text is
/// read: numbers, booleans and lists are parsed as TOML values, everything else is a string
/// (so a token of digits stays a string).
fn apply_env_override(
    merged: &mut toml::Table,
    section: &str,
    key: &str,
    raw: &str,
) -> Result<(), ConfigError> {
    let full_key = format!("{section}.{key}");
    let defaults = Config::default();
    let defaults = toml::Table::try_from(&defaults).expect("config serialises");
    let Some(toml::Value::Table(default_section)) = defaults.get(section) else {
        return Err(ConfigError::Invalid {
            key: full_key,
            message: format!(
                "unknown configuration section (from {ENV_PREFIX}{})",
                section.to_uppercase()
            ),
        });
    };
    let value = match default_section.get(key) {
        Some(toml::Value::String(_)) | None => toml::Value::String(raw.to_string()),
        Some(_) => {
            let doc = format!("v = {raw}");
            match toml::from_str::<toml::Table>(&doc) {
                Ok(mut table) => table.remove("v").expect("parsed key"),
                Err(_) => toml::Value::String(raw.to_string()),
            }
        }
    };
    let table = merged
        .entry(section.to_string())
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    if let toml::Value::Table(table) = table {
        table.insert(key.to_string(), value);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn embedded_defaults_match_the_contract() {
        let config = Config::load(None, env(&[])).unwrap();
        assert_eq!(config.smtp.submission.to_string(), "127.0.0.1:2587");
        assert_eq!(config.smtp.submission_tls.to_string(), "127.0.0.1:2465");
        assert_eq!(config.smtp.mx.to_string(), "127.0.0.1:2525");
        assert_eq!(config.admin.listen.to_string(), "127.0.0.1:8025");
        assert_eq!(config.storage.data_dir, PathBuf::from("./data"));
        assert_eq!(config.database_url(), "sqlite://./data/mailmux.db");
        assert_eq!(config.delivery.mx_port, 25);
        assert_eq!(config.delivery.transport, TransportKind::Mx);
        assert!(config.admin.token.is_none());
        assert!(config.smtp.trusted_networks.is_empty());
        // A replaced DKIM key stays listed for 7 days; pending keys are looked up every 5 min.
        assert_eq!(config.dkim.retiring_secs, 7 * 86_400);
        assert_eq!(config.dkim.rotation_check_secs, 300);
    }

    #[test]
    fn environment_overrides_each_type() {
        let config = Config::load(
            None,
            env(&[
                ("MAILMUX_SMTP__SUBMISSION", "127.0.0.1:0"),
                ("MAILMUX_DELIVERY__MX_PORT", "2526"),
                ("MAILMUX_DELIVERY__DNS_SERVERS", "[\"127.0.0.1:5353\"]"),
                ("MAILMUX_SMTP__TRUSTED_NETWORKS", "[\"127.0.0.0/8\"]"),
                ("MAILMUX_SMTP__DEFAULT_TENANT", "t1"),
                ("MAILMUX_ADMIN__TOKEN", "12345"),
                ("MAILMUX_TEST_PYTHON", "/usr/bin/python3"),
            ]),
        )
        .unwrap();
        assert_eq!(config.smtp.submission.port(), 0);
        assert_eq!(config.delivery.mx_port, 2526);
        assert_eq!(config.delivery.dns_servers.len(), 1);
        assert_eq!(config.admin.token.as_deref(), Some("12345"));
        assert!(config.is_trusted("127.0.0.9".parse().unwrap()));
        assert!(!config.is_trusted("10.0.0.1".parse().unwrap()));
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            ("MAILMUX_SMTP__SUBMISSION", "nonsense", "smtp.submission"),
            ("MAILMUX_DELIVERY__MX_PORT", "70000", "delivery.mx_port"),
            ("MAILMUX_SMTP__NO_SUCH_KEY", "1", "smtp"),
            ("MAILMUX_NOSECTION__KEY", "1", "nosection.key"),
            (
                "MAILMUX_DELIVERY__TRANSPORT",
                "carrier-pigeon",
                "delivery.transport",
            ),
            (
                "MAILMUX_DELIVERY__TRANSPORT",
                "smarthost",
                "delivery.smarthost",
            ),
            (
                "MAILMUX_STORAGE__DATABASE_URL",
                "mysql://x",
                "storage.database_url",
            ),
        ];
        for (name, value, key) in cases {
            let err = Config::load(None, env(&[(name, value)])).unwrap_err();
            let text = err.to_string();
            assert!(text.contains(key), "{name}={value}: {text}");
            assert_eq!(text.lines().count(), 1, "one line: {text}");
        }
    }

    #[test]
    fn file_overrides_defaults_and_env_overrides_file() {
        let dir = std::env::temp_dir().join(format!("mailmux-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("mailmux.toml");
        std::fs::write(
            &path,
            "[smtp]\nhostname = \"relay.example\"\nmax_recipients = 7\n",
        )
        .unwrap();
        let config =
            Config::load(Some(&path), env(&[("MAILMUX_SMTP__MAX_RECIPIENTS", "9")])).unwrap();
        assert_eq!(config.smtp.hostname, "relay.example");
        assert_eq!(config.smtp.max_recipients, 9);
        std::fs::write(&path, "[smtp\n").unwrap();
        let err = Config::load(Some(&path), env(&[])).unwrap_err();
        assert!(err.to_string().contains("not valid TOML"), "{err}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
