//! The smarthost transport: every recipient of a message goes, in one transaction, to the one
//! relay configured in `delivery.smarthost`, with the TLS mode of `delivery.smarthost_tls`
//! and AUTH when `delivery.smarthost_user` is set.

use std::net::IpAddr;

use lettre::transport::smtp::authentication::Credentials;
use mailmux_core::SmarthostTls;
use mailmux_core::config::DeliveryConfig;
use mailmux_core::config::parse_host_port;
use mailmux_core::reply::Reply;

use crate::attempt::NextHop;
use crate::client::{SessionPolicy, TlsMode};
use crate::error::{DeliveryError, Result};

/// The smarthost as configured.
pub(crate) struct Smarthost {
    host: String,
    port: u16,
    /// Who we are to the smarthost, for the connection pool: its login, if any. Made once.
    identity: String,
    pub policy: SessionPolicy,
}

impl Smarthost {
    /// `None` when no smarthost is configured. `base` carries EHLO name and timeouts.
    pub(crate) fn from_config(
        config: &DeliveryConfig,
        base: &SessionPolicy,
    ) -> Result<Option<Smarthost>> {
        let Some(value) = &config.smarthost else {
            return Ok(None);
        };
        let (host, port) = parse_host_port(value)
            .ok_or_else(|| DeliveryError::Smarthost(format!("{value:?} is not host:port")))?;
        let credentials = match (&config.smarthost_user, &config.smarthost_password) {
            (Some(user), Some(password)) => Some(Credentials::new(user.clone(), password.clone())),
            (Some(user), None) => Some(Credentials::new(user.clone(), String::new())),
            (None, Some(_)) => {
                return Err(DeliveryError::Smarthost(
                    "smarthost_password is set but smarthost_user is not".into(),
                ));
            }
            (None, None) => None,
        };
        let tls = match config.smarthost_tls {
            SmarthostTls::Opportunistic => TlsMode::Opportunistic,
            SmarthostTls::Starttls => TlsMode::Starttls,
            SmarthostTls::Tls => TlsMode::Implicit,
            SmarthostTls::None => TlsMode::None,
        };
        Ok(Some(Smarthost {
            host,
            port,
            identity: match &config.smarthost_user {
                Some(user) => format!("smarthost:{user}"),
                None => "smarthost".to_string(),
            },
            policy: SessionPolicy {
                tls,
                credentials,
                ..base.clone()
            },
        }))
    }

    pub(crate) fn identity(&self) -> &str {
        &self.identity
    }

    pub(crate) fn hop(&self) -> NextHop {
        NextHop::Smarthost(format!("{}:{}", self.host, self.port))
    }

    pub(crate) fn host(&self) -> &str {
        &self.host
    }

    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// The smarthost's addresses. Its name is the operator's, so it is resolved like any
    /// other name on this machine (system resolver, /etc/hosts), not through the MX resolver.
    pub(crate) async fn addresses(&self) -> Result<Vec<IpAddr>> {
        let failed = |why: String| DeliveryError::Connection {
            host: self.host.clone(),
            reply: Reply::parse(
                451,
                format!("4.4.3 cannot resolve smarthost {}: {why}", self.host),
            ),
        };
        let addrs: Vec<IpAddr> = tokio::net::lookup_host((self.host.as_str(), self.port))
            .await
            .map_err(|e| failed(e.to_string()))?
            .map(|addr| addr.ip())
            .collect();
        if addrs.is_empty() {
            return Err(failed("no address".into()));
        }
        Ok(addrs)
    }
}
