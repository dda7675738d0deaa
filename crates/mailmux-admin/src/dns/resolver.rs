//! The lookups: hickory-resolver asking the configured servers (`delivery.dns_servers`) or
//! the system's, without a cache, so a check sees what is published now.

use std::net::SocketAddr;
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::rr::{Name, RData, RecordType};

use super::rules::{Answer, RecordKind};
use crate::error::{AdminError, Result};

/// Asks DNS for TXT records: the configured servers (`delivery.dns_servers`) or the system's.
pub struct DnsChecker {
    resolver: TokioResolver,
}

impl DnsChecker {
    pub fn new(servers: &[SocketAddr]) -> Result<DnsChecker> {
        let failed = |e: NetError| AdminError::Internal(format!("DNS resolver: {e}"));
        let mut builder = mailmux_core::dns::resolver_builder(servers).map_err(failed)?;
        let options = builder.options_mut();
        // A verification must see what is published now, not what was cached an hour ago: a
        // tenant who just fixed a record clicks "verify" again.
        options.cache_size = 0;
        // Someone is waiting on the answer (a REST call): two tries of three seconds at most.
        options.timeout = Duration::from_secs(3);
        options.attempts = 2;
        Ok(DnsChecker {
            resolver: builder.build().map_err(failed)?,
        })
    }

    /// Looks up the record type `kind` is published as.
    pub async fn lookup_kind(&self, kind: RecordKind, name: &str) -> Answer {
        match kind {
            RecordKind::Mx => self.mx(name).await,
            _ => self.txt(name).await,
        }
    }

    pub async fn txt(&self, name: &str) -> Answer {
        self.lookup(name, RecordType::TXT, |data| match data {
            RData::TXT(txt) => Some(
                txt.txt_data
                    .iter()
                    .map(|part| String::from_utf8_lossy(part))
                    .collect::<String>(),
            ),
            _ => None,
        })
        .await
    }

    pub async fn mx(&self, name: &str) -> Answer {
        self.lookup(name, RecordType::MX, |data| match data {
            RData::MX(mx) => Some(
                mx.exchange
                    .to_ascii()
                    .trim_end_matches('.')
                    .to_ascii_lowercase(),
            ),
            _ => None,
        })
        .await
    }

    async fn lookup(
        &self,
        name: &str,
        record_type: RecordType,
        value: impl Fn(&RData) -> Option<String>,
    ) -> Answer {
        // from_ascii: our names are already A-labels, and underscores (`_dmarc`) are valid in
        // DNS though not in hostnames. The trailing dot keeps search domains out of it.
        let Ok(mut fqdn) = Name::from_ascii(name) else {
            return Answer::Failed(format!("{name:?} is not a DNS name"));
        };
        fqdn.set_fqdn(true);
        match self.resolver.lookup(fqdn, record_type).await {
            Ok(lookup) => {
                let records: Vec<String> = lookup
                    .answers()
                    .iter()
                    .filter_map(|record| value(&record.data))
                    .collect();
                if records.is_empty() {
                    Answer::None
                } else {
                    Answer::Records(records)
                }
            }
            Err(NetError::Dns(DnsError::NoRecordsFound(_))) => Answer::None,
            Err(error) => Answer::Failed(error.to_string()),
        }
    }
}
