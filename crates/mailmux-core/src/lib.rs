//! mailmux-core: the domain model (tenants, tiers, limits, features, credentials, envelopes,
//! queue ids) and the typed configuration every other crate is handed at start-up.

pub mod config;
pub mod credential;
pub mod dns;
pub mod domain;
pub mod envelope;
pub mod error;
pub mod health;
pub mod message_bytes;
pub mod metrics;
pub mod queued;
pub mod receipt_rule;
pub mod reply;
pub mod srs;
pub mod sync;
pub mod tenant;

pub use config::{Config, ConfigError, SmarthostTls, TransportKind};
pub use credential::Credential;
pub use domain::{
    DnsRecord, Domain, DomainNameError, is_subdomain_of, normalize_domain, return_path_dns_records,
    sending_dns_records, spf_value,
};
pub use envelope::{BodyFlags, Envelope, QueueId, QueueIdGenerator, address_domain, now_ms};
pub use error::Permanence;
pub use metrics::MetricSource;
pub use receipt_rule::{ReceiptRule, RuleAction};
pub use tenant::{Feature, Features, Limits, Tenant, TenantId, TenantStatus, Tier};
