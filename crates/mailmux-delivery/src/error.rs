//! Delivery errors. Start-up errors stop the binary; the others describe why one next hop (a
//! domain's DNS, or one host) could not take the mail, each with the reply that recipients will
//! carry, and so say whether the failure is transient (4xx) or permanent (5xx).

use mailmux_core::Permanence;

use mailmux_core::reply::Reply;

pub type Result<T> = std::result::Result<T, DeliveryError>;

#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// The DNS resolver could not be built from `delivery.dns_servers` or the system
    /// configuration.
    #[error("delivery.dns_servers: cannot set up the DNS resolver: {0}")]
    Resolver(String),
    /// `delivery.smarthost` cannot be used (checked at start-up, not per message).
    #[error("delivery.smarthost: {0}")]
    Smarthost(String),
    /// DNS gave no usable host for a recipient domain: permanent for a domain that does not
    /// exist or refuses mail (null MX), transient when DNS itself failed.
    #[error("{domain}: {reply}")]
    Dns { domain: String, reply: Reply },
    /// One host could not be reached, or the session with it failed (refused, timeout, TLS
    /// required but failed, 421, broken reply). Always transient: the next host may do better,
    /// and if none does, the recipients wait for the next attempt.
    #[error("{host}: {reply}")]
    Connection { host: String, reply: Reply },
}

impl DeliveryError {
    /// The reply recorded for every recipient this failure stopped.
    pub fn reply(&self) -> Reply {
        match self {
            DeliveryError::Resolver(message) | DeliveryError::Smarthost(message) => {
                Reply::parse(451, format!("4.3.5 delivery is misconfigured: {message}"))
            }
            DeliveryError::Dns { reply, .. } | DeliveryError::Connection { reply, .. } => {
                reply.clone()
            }
        }
    }

    pub fn permanence(&self) -> Permanence {
        self.reply().permanence()
    }

    /// The remote host involved, for DSNs (`Remote-MTA`) and logs.
    pub fn host(&self) -> Option<&str> {
        match self {
            DeliveryError::Connection { host, .. } => Some(host),
            _ => None,
        }
    }

    /// A connection-level failure: always a 4xx reply, whatever the remote said, because
    /// "this host would not talk to us" is never a verdict on the recipient.
    pub(crate) fn connection(host: &str, reply: Reply) -> DeliveryError {
        let reply = if reply.code() / 100 == 4 {
            reply
        } else {
            Reply::parse(451, format!("4.4.2 {host} failed the session: {reply}"))
        };
        DeliveryError::Connection {
            host: host.to_string(),
            reply,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_failures_are_always_transient() {
        let err = DeliveryError::connection("mx.example", Reply::parse(554, "5.7.1 go away"));
        assert_eq!(err.permanence(), Permanence::Transient);
        assert!(err.reply().to_string().starts_with("451 4.4.2"));
        assert!(err.reply().to_string().contains("554 5.7.1 go away"));
        let err = DeliveryError::connection("mx.example", Reply::parse(421, "4.3.2 shutting down"));
        assert_eq!(err.reply().to_string(), "421 4.3.2 shutting down");
        let err = DeliveryError::Dns {
            domain: "x.test".into(),
            reply: Reply::parse(556, "5.1.10 null MX"),
        };
        assert_eq!(err.permanence(), Permanence::Permanent);
    }
}
