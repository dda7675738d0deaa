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

    /// The tier's default limits (DESIGN.md, "Tiers"); 0 means unlimited.
    pub fn default_limits(self) -> Limits {
        let (users, domains, storage_mb, per_day) = match self {
            Tier::Free => (5, 1, 1_024, 100),
            Tier::Starter => (25, 3, 10_240, 1_000),
            Tier::Professional => (100, 10, 102_400, 10_000),
            Tier::Enterprise => (0, 0, 0, 0),
        };
        Limits {
            max_users: users,
            max_domains: domains,
            max_storage_mb: storage_mb,
            max_messages_per_day: per_day,
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
    /// Unix milliseconds.
    pub created_at: i64,
}

impl Tenant {
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
            created_at: now_ms,
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
}
