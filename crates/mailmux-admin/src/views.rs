//! Views more than one resource shows: the tier, status, limits and feature flags of a tenant
//! (the tenant itself and its usage), and the `{"success": true}` answer.

use axum::Json;
use mailmux_core::{Features, Limits, TenantStatus, Tier};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A tier (DESIGN.md "Tiers"): the default limits and features of a tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TierName {
    Free,
    Starter,
    Professional,
    Enterprise,
}

impl From<TierName> for Tier {
    fn from(tier: TierName) -> Tier {
        match tier {
            TierName::Free => Tier::Free,
            TierName::Starter => Tier::Starter,
            TierName::Professional => Tier::Professional,
            TierName::Enterprise => Tier::Enterprise,
        }
    }
}

impl From<Tier> for TierName {
    fn from(tier: Tier) -> TierName {
        match tier {
            Tier::Free => TierName::Free,
            Tier::Starter => TierName::Starter,
            Tier::Professional => TierName::Professional,
            Tier::Enterprise => TierName::Enterprise,
        }
    }
}

/// `active`; `paused` (temporary: submissions get 451); `suspended` (submissions get 550).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum StatusName {
    Active,
    Paused,
    Suspended,
}

impl From<StatusName> for TenantStatus {
    fn from(status: StatusName) -> TenantStatus {
        match status {
            StatusName::Active => TenantStatus::Active,
            StatusName::Paused => TenantStatus::Paused,
            StatusName::Suspended => TenantStatus::Suspended,
        }
    }
}

impl From<TenantStatus> for StatusName {
    fn from(status: TenantStatus) -> StatusName {
        match status {
            TenantStatus::Active => StatusName::Active,
            TenantStatus::Paused => StatusName::Paused,
            TenantStatus::Suspended => StatusName::Suspended,
        }
    }
}

/// Per-tenant limits; 0 means unlimited. `smtp.max_message_size` and `smtp.max_recipients`
/// still cap a tenant whose own limit is larger (or 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
pub struct LimitsView {
    /// SMTP credentials.
    pub max_users: u64,
    pub max_domains: u64,
    pub max_storage_mb: u64,
    /// Rolling 24 hours, exact over restarts and nodes (counted from the queue's rows).
    pub max_messages_per_day: u64,
    /// Recipients of one message (SMTP `452 4.5.3`, HTTP 422 beyond).
    pub max_recipients_per_message: u64,
    /// Bytes of one message (EHLO SIZE after AUTH; `552 5.3.4`, HTTP 413 beyond).
    pub max_message_size: u64,
    /// Messages per second, with a burst of as many (`451 4.7.1`, HTTP 429 beyond).
    pub rate_per_second: u64,
    /// Messages per minute, with a burst of as many.
    pub rate_per_minute: u64,
    /// Concurrent authenticated SMTP sessions (per node).
    pub max_connections: u64,
}

impl From<Limits> for LimitsView {
    fn from(l: Limits) -> Self {
        LimitsView {
            max_users: l.max_users,
            max_domains: l.max_domains,
            max_storage_mb: l.max_storage_mb,
            max_messages_per_day: l.max_messages_per_day,
            max_recipients_per_message: l.max_recipients_per_message,
            max_message_size: l.max_message_size,
            rate_per_second: l.rate_per_second,
            rate_per_minute: l.rate_per_minute,
            max_connections: l.max_connections,
        }
    }
}

/// Feature flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
pub struct FeaturesView {
    pub spam_filtering: bool,
    pub virus_scanning: bool,
    pub dkim_signing: bool,
    pub mailing_lists: bool,
    pub webhooks: bool,
    /// Tenant API keys work only while this is on.
    pub api_access: bool,
    pub custom_domains: bool,
    pub priority_support: bool,
}

impl From<Features> for FeaturesView {
    fn from(f: Features) -> Self {
        FeaturesView {
            spam_filtering: f.spam_filtering,
            virus_scanning: f.virus_scanning,
            dkim_signing: f.dkim_signing,
            mailing_lists: f.mailing_lists,
            webhooks: f.webhooks,
            api_access: f.api_access,
            custom_domains: f.custom_domains,
            priority_support: f.priority_support,
        }
    }
}

/// `{"success": true}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Success {
    pub success: bool,
}

impl Success {
    pub fn json() -> Json<Success> {
        Json(Success { success: true })
    }
}
