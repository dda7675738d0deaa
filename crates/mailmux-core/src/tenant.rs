//! Tenants: who owns mail. A tenant has a tier (which sets default limits and features), its own
//! limits and feature flags (overridable one by one) and a status that gates all its mail.

use serde::{Deserialize, Serialize};

use crate::config::TransportKind;

/// Opaque tenant identifier (`t_` + 16 hex characters).
pub type TenantId = String;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    Free,
    Starter,
    Professional,
    Enterprise,
}

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Free => "free",
            Tier::Starter => "starter",
            Tier::Professional => "professional",
            Tier::Enterprise => "enterprise",
        }
    }

    pub fn parse(value: &str) -> Option<Tier> {
        match value {
            "free" => Some(Tier::Free),
            "starter" => Some(Tier::Starter),
            "professional" => Some(Tier::Professional),
            "enterprise" => Some(Tier::Enterprise),
            _ => None,
        }
    }

    /// The tier's default limits; 0 means unlimited.
    ///
    /// Users, domains, storage and messages per day are DESIGN.md's table. The sending limits
    /// are ours, chosen so that each tier can do what its daily quota allows without bursts
    /// that harm the relay's reputation:
    ///
    /// | tier         | recipients/msg | message size | rate/s | rate/min | sessions |
    /// |--------------|----------------|--------------|--------|----------|----------|
    /// | free         | 50             | 10 MiB       | 2      | 60       | 5        |
    /// | starter      | 100            | 25 MiB       | 20     | 600      | 20       |
    /// | professional | 500            | 50 MiB       | 100    | 3,000    | 100      |
    /// | enterprise   | 0              | 0            | 0      | 0        | 0        |
    ///
    /// `smtp.max_recipients` and `smtp.max_message_size` still cap every tenant: the relay's
    /// own limits win over a tier's larger one (see [`Limits::message_size_within`]).
    pub fn default_limits(self) -> Limits {
        const MIB: u64 = 1024 * 1024;
        let (users, domains, storage_mb, per_day) = match self {
            Tier::Free => (5, 1, 1_024, 100),
            Tier::Starter => (25, 3, 10_240, 1_000),
            Tier::Professional => (100, 10, 102_400, 10_000),
            Tier::Enterprise => (0, 0, 0, 0),
        };
        let (recipients, size, per_second, per_minute, connections) = match self {
            Tier::Free => (50, 10 * MIB, 2, 60, 5),
            Tier::Starter => (100, 25 * MIB, 20, 600, 20),
            Tier::Professional => (500, 50 * MIB, 100, 3_000, 100),
            Tier::Enterprise => (0, 0, 0, 0, 0),
        };
        Limits {
            max_users: users,
            max_domains: domains,
            max_storage_mb: storage_mb,
            max_messages_per_day: per_day,
            max_recipients_per_message: recipients,
            max_message_size: size,
            rate_per_second: per_second,
            rate_per_minute: per_minute,
            max_connections: connections,
        }
    }

    /// The tier's default feature flags: each tier adds to the one below.
    pub fn default_features(self) -> Features {
        let mut features = Features {
            spam_filtering: true,
            ..Features::default()
        };
        if self >= Tier::Starter {
            features.virus_scanning = true;
            features.dkim_signing = true;
            features.api_access = true;
        }
        if self >= Tier::Professional {
            features.mailing_lists = true;
            features.webhooks = true;
            features.custom_domains = true;
        }
        if self == Tier::Enterprise {
            features.priority_support = true;
        }
        features
    }
}

impl PartialOrd for Tier {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Tier {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (*self as u8).cmp(&(*other as u8))
    }
}

/// Per-tenant limits; 0 means unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// SMTP credentials.
    pub max_users: u64,
    pub max_domains: u64,
    pub max_storage_mb: u64,
    /// Rolling 24 hours.
    pub max_messages_per_day: u64,
    /// Recipients in one message (SMTP transaction or API send).
    pub max_recipients_per_message: u64,
    /// Bytes of one message.
    pub max_message_size: u64,
    /// Messages started per second (burst: this many at once).
    pub rate_per_second: u64,
    /// Messages started per minute (burst: this many at once).
    pub rate_per_minute: u64,
    /// Concurrent authenticated SMTP sessions.
    pub max_connections: u64,
}

impl Limits {
    /// The tenant's message size limit under the relay's `global` one: the smaller, where 0
    /// (unlimited) never wins.
    pub fn message_size_within(&self, global: u64) -> u64 {
        within(self.max_message_size, global)
    }

    /// The tenant's recipients-per-message limit under the relay's `global` one.
    pub fn recipients_within(&self, global: u64) -> u64 {
        within(self.max_recipients_per_message, global)
    }
}

/// `min(tenant, global)` where 0 means "no limit" on either side.
fn within(tenant: u64, global: u64) -> u64 {
    match (tenant, global) {
        (0, g) => g,
        (t, 0) => t,
        (t, g) => t.min(g),
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Features {
    pub spam_filtering: bool,
    pub virus_scanning: bool,
    pub dkim_signing: bool,
    pub mailing_lists: bool,
    pub webhooks: bool,
    pub api_access: bool,
    pub custom_domains: bool,
    pub priority_support: bool,
}

/// One feature flag, by name: what a gate asks [`Features::has`] about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Feature {
    SpamFiltering,
    VirusScanning,
    DkimSigning,
    MailingLists,
    Webhooks,
    ApiAccess,
    CustomDomains,
    PrioritySupport,
}

impl Feature {
    /// The flag's name in the API and the CLI (`api_access`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Feature::SpamFiltering => "spam_filtering",
            Feature::VirusScanning => "virus_scanning",
            Feature::DkimSigning => "dkim_signing",
            Feature::MailingLists => "mailing_lists",
            Feature::Webhooks => "webhooks",
            Feature::ApiAccess => "api_access",
            Feature::CustomDomains => "custom_domains",
            Feature::PrioritySupport => "priority_support",
        }
    }
}

impl Features {
    pub fn has(&self, feature: Feature) -> bool {
        match feature {
            Feature::SpamFiltering => self.spam_filtering,
            Feature::VirusScanning => self.virus_scanning,
            Feature::DkimSigning => self.dkim_signing,
            Feature::MailingLists => self.mailing_lists,
            Feature::Webhooks => self.webhooks,
            Feature::ApiAccess => self.api_access,
            Feature::CustomDomains => self.custom_domains,
            Feature::PrioritySupport => self.priority_support,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TenantStatus {
    Active,
    /// Temporary (e.g. reputation): submissions get 451, queued mail is held.
    Paused,
    /// Submissions get 550.
    Suspended,
}

impl TenantStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TenantStatus::Active => "active",
            TenantStatus::Paused => "paused",
            TenantStatus::Suspended => "suspended",
        }
    }

    pub fn parse(value: &str) -> Option<TenantStatus> {
        match value {
            "active" => Some(TenantStatus::Active),
            "paused" => Some(TenantStatus::Paused),
            "suspended" => Some(TenantStatus::Suspended),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tenant {
    pub id: TenantId,
    pub name: String,
    pub tier: Tier,
    pub limits: Limits,
    pub features: Features,
    pub status: TenantStatus,
    /// Why the tenant is paused or suspended; shown in SMTP replies.
    pub status_reason: Option<String>,
    /// An operator's off switch, independent of status; disabled tenants are refused like
    /// suspended ones.
    pub enabled: bool,
    /// Transport for this tenant's mail; `delivery.transport` when unset.
    pub transport: Option<TransportKind>,
    /// Days this tenant's stored inbound mail is kept; 0: the relay's `inbound.retention_days`.
    #[serde(default)]
    pub inbound_retention_days: u64,
    /// Unix milliseconds.
    pub created_at: i64,
    /// Unix milliseconds of the last change through the admin API or the CLI (the store sets
    /// it on every write).
    pub updated_at: i64,
}

impl Tenant {
    /// Whether the tenant may send now: active and enabled. Mail of any other tenant is
    /// refused at submission and held in the queue.
    pub fn is_sending(&self) -> bool {
        self.enabled && self.status == TenantStatus::Active
    }

    /// A new active tenant with its tier's defaults.
    pub fn new(id: TenantId, name: String, tier: Tier, now_ms: i64) -> Tenant {
        Tenant {
            id,
            name,
            tier,
            limits: tier.default_limits(),
            features: tier.default_features(),
            status: TenantStatus::Active,
            status_reason: None,
            enabled: true,
            transport: None,
            inbound_retention_days: 0,
            created_at: now_ms,
            updated_at: now_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiers_match_the_design_table() {
        let table = [
            (Tier::Free, 5, 1, 1_024, 100),
            (Tier::Starter, 25, 3, 10_240, 1_000),
            (Tier::Professional, 100, 10, 102_400, 10_000),
            (Tier::Enterprise, 0, 0, 0, 0),
        ];
        for (tier, users, domains, storage, per_day) in table {
            let limits = tier.default_limits();
            assert_eq!(
                (
                    limits.max_users,
                    limits.max_domains,
                    limits.max_storage_mb,
                    limits.max_messages_per_day
                ),
                (users, domains, storage, per_day),
                "{tier:?}"
            );
            assert_eq!(Tier::parse(tier.as_str()), Some(tier));
        }
        let free = Tier::Free.default_features();
        assert!(free.spam_filtering && !free.dkim_signing && !free.api_access);
        let starter = Tier::Starter.default_features();
        assert!(
            starter.dkim_signing
                && starter.api_access
                && starter.virus_scanning
                && !starter.webhooks
        );
        let pro = Tier::Professional.default_features();
        assert!(pro.webhooks && pro.custom_domains && pro.mailing_lists && !pro.priority_support);
        let ent = Tier::Enterprise.default_features();
        assert!(ent.priority_support && ent.webhooks && ent.spam_filtering);
    }

    #[test]
    fn sending_limits_grow_with_the_tier_and_enterprise_has_none() {
        let tiers = [Tier::Free, Tier::Starter, Tier::Professional];
        for pair in tiers.windows(2) {
            let (lower, higher) = (pair[0].default_limits(), pair[1].default_limits());
            assert!(lower.rate_per_second < higher.rate_per_second);
            assert!(lower.rate_per_minute < higher.rate_per_minute);
            assert!(lower.max_connections < higher.max_connections);
            assert!(lower.max_message_size < higher.max_message_size);
            assert!(lower.max_recipients_per_message < higher.max_recipients_per_message);
        }
        for tier in tiers {
            let l = tier.default_limits();
            // A minute at the per-second rate is at least the per-minute allowance: the
            // per-minute limit is the one that smooths a sustained stream.
            assert!(l.rate_per_second * 60 >= l.rate_per_minute, "{tier:?}");
        }
        let ent = Tier::Enterprise.default_limits();
        assert_eq!(
            (
                ent.rate_per_second,
                ent.rate_per_minute,
                ent.max_connections,
                ent.max_message_size,
                ent.max_recipients_per_message
            ),
            (0, 0, 0, 0, 0)
        );
    }

    #[test]
    fn tenant_limits_sit_under_the_relays() {
        let mut limits = Tier::Enterprise.default_limits();
        let cases = [
            // (tenant, global, effective)
            (0, 100, 100),
            (50, 100, 50),
            (500, 100, 100),
            (7, 0, 7),
            (0, 0, 0),
        ];
        for (tenant, global, want) in cases {
            limits.max_message_size = tenant;
            limits.max_recipients_per_message = tenant;
            assert_eq!(
                limits.message_size_within(global),
                want,
                "{tenant}/{global}"
            );
            assert_eq!(limits.recipients_within(global), want, "{tenant}/{global}");
        }
    }
}
