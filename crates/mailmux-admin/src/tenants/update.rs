//! `PUT /api/tenants/{id}`'s request and the pure function that applies it to a tenant:
//! kept apart from the handlers because the rules (a tier change resets limits and features
//! but for the fields given beside it; a status back to `active` clears its reason) are the
//! part worth table-testing.

use mailmux_core::{Tenant, TenantStatus, Tier, TransportKind};
use serde::{Deserialize, Deserializer};
use utoipa::ToSchema;

use crate::error::{AdminError, Result};
use crate::views::{StatusName, TierName};

/// `PUT /api/tenants/{id}`: every field optional; only those given change.
///
/// Changing `tier` applies the new tier's default limits and features, except the ones given
/// in the same request (so `{"tier": "starter", "max_users": 50}` is starter with 50 users).
///
/// A tenant object as `GET` shows it can be sent back whole, changed where wanted: `limits`
/// is taken like the flat `max_*` fields (where both are given, the one that differs from the
/// stored value is the change); the fields the relay
/// keeps (`id`, `created_at`, `domain`) must be sent as they are (422 otherwise, naming the
/// field); and `updated_at`, when given, must still be the tenant's (409 otherwise: someone
/// changed it since it was read, so this write would undo their change unseen).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateTenant {
    pub name: Option<String>,
    pub tier: Option<TierName>,
    pub max_users: Option<u64>,
    pub max_domains: Option<u64>,
    pub max_storage_mb: Option<u64>,
    pub max_messages_per_day: Option<u64>,
    pub max_recipients_per_message: Option<u64>,
    pub max_message_size: Option<u64>,
    pub rate_per_second: Option<u64>,
    pub rate_per_minute: Option<u64>,
    pub max_connections: Option<u64>,
    pub enabled: Option<bool>,
    pub status: Option<StatusName>,
    /// Shown with the status; cleared when the status goes back to `active` unless given.
    pub status_reason: Option<String>,
    pub features: Option<FeatureUpdate>,
    /// `mx`, `smarthost` or `ses`; `null` goes back to the configured default
    /// (`delivery.transport`); left out, the transport stays as it is.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub transport: Option<Option<String>>,
    /// Days the tenant's stored inbound mail is kept; 0 goes back to the relay's
    /// `inbound.retention_days`.
    pub inbound_retention_days: Option<u64>,
    /// The limits as `GET` shows them; any subset.
    pub limits: Option<LimitsUpdate>,
    /// Read-only; accepted when unchanged.
    pub id: Option<String>,
    /// Read-only; accepted when unchanged.
    pub created_at: Option<i64>,
    /// The primary domain (the first one added); read-only, accepted when unchanged. Domains
    /// are added and removed under `/api/tenants/{id}/domains`.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub domain: Option<Option<String>>,
    /// When given, the write happens only if the tenant was not changed since this value was
    /// read (409 otherwise).
    pub updated_at: Option<i64>,
}

/// The `limits` object of a tenant, any subset.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitsUpdate {
    pub max_users: Option<u64>,
    pub max_domains: Option<u64>,
    pub max_storage_mb: Option<u64>,
    pub max_messages_per_day: Option<u64>,
    pub max_recipients_per_message: Option<u64>,
    pub max_message_size: Option<u64>,
    pub rate_per_second: Option<u64>,
    pub rate_per_minute: Option<u64>,
    pub max_connections: Option<u64>,
}

/// A field that is given, possibly as `null` (`Some(None)`), apart from one left out (`None`,
/// through `#[serde(default)]`): `null` means "back to the default", absence "unchanged".
fn present<'de, D, T>(deserializer: D) -> std::result::Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// Feature flags to set; the ones not named keep their value.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FeatureUpdate {
    pub spam_filtering: Option<bool>,
    pub virus_scanning: Option<bool>,
    pub dkim_signing: Option<bool>,
    pub mailing_lists: Option<bool>,
    pub webhooks: Option<bool>,
    pub api_access: Option<bool>,
    pub custom_domains: Option<bool>,
    pub priority_support: Option<bool>,
}

/// Applies `update` to `tenant` (no I/O; table-tested below).
pub fn apply_update(tenant: &Tenant, update: &UpdateTenant) -> Result<Tenant> {
    let mut next = tenant.clone();
    if let Some(name) = &update.name {
        let name = name.trim();
        if name.is_empty() {
            return Err(AdminError::Invalid("name must not be empty".into()));
        }
        next.name = name.to_string();
    }
    if let Some(tier) = update.tier {
        let tier = Tier::from(tier);
        if tier != tenant.tier {
            next.tier = tier;
            next.limits = tier.default_limits();
            next.features = tier.default_features();
        }
    }
    if update.id.as_deref().is_some_and(|id| id != tenant.id) {
        return Err(AdminError::Invalid(
            "id: a tenant's id cannot be changed".into(),
        ));
    }
    if update.created_at.is_some_and(|at| at != tenant.created_at) {
        return Err(AdminError::Invalid(
            "created_at: read-only; send it as GET shows it, or leave it out".into(),
        ));
    }
    if update.updated_at.is_some_and(|at| at != tenant.updated_at) {
        return Err(AdminError::Conflict(format!(
            "updated_at: the tenant was changed since it was read (now {}); read it again",
            tenant.updated_at
        )));
    }
    // Each limit may come flat (the guide's shape) or inside `limits` (a tenant as GET shows
    // it carries both): the one that differs from the stored value is the change; two
    // different changes to one limit are refused.
    let nested = update.limits.as_ref();
    let limits = &mut next.limits;
    let fields: [(&str, &mut u64, Option<u64>, Option<u64>); 9] = [
        (
            "max_users",
            &mut limits.max_users,
            update.max_users,
            nested.and_then(|l| l.max_users),
        ),
        (
            "max_domains",
            &mut limits.max_domains,
            update.max_domains,
            nested.and_then(|l| l.max_domains),
        ),
        (
            "max_storage_mb",
            &mut limits.max_storage_mb,
            update.max_storage_mb,
            nested.and_then(|l| l.max_storage_mb),
        ),
        (
            "max_messages_per_day",
            &mut limits.max_messages_per_day,
            update.max_messages_per_day,
            nested.and_then(|l| l.max_messages_per_day),
        ),
        (
            "max_recipients_per_message",
            &mut limits.max_recipients_per_message,
            update.max_recipients_per_message,
            nested.and_then(|l| l.max_recipients_per_message),
        ),
        (
            "max_message_size",
            &mut limits.max_message_size,
            update.max_message_size,
            nested.and_then(|l| l.max_message_size),
        ),
        (
            "rate_per_second",
            &mut limits.rate_per_second,
            update.rate_per_second,
            nested.and_then(|l| l.rate_per_second),
        ),
        (
            "rate_per_minute",
            &mut limits.rate_per_minute,
            update.rate_per_minute,
            nested.and_then(|l| l.rate_per_minute),
        ),
        (
            "max_connections",
            &mut limits.max_connections,
            update.max_connections,
            nested.and_then(|l| l.max_connections),
        ),
    ];
    for (name, field, flat, inside) in fields {
        let current = *field;
        let changed = |value: Option<u64>| value.filter(|v| *v != current);
        match (changed(flat), changed(inside)) {
            (Some(a), Some(b)) if a != b => {
                return Err(AdminError::Invalid(format!(
                    "{name}: given as {a} at the top level and as {b} in limits"
                )));
            }
            (Some(value), _) | (None, Some(value)) => *field = value,
            (None, None) => {}
        }
    }
    if let Some(f) = &update.features {
        let features = &mut next.features;
        let set = |field: &mut bool, value: Option<bool>| {
            if let Some(v) = value {
                *field = v;
            }
        };
        set(&mut features.spam_filtering, f.spam_filtering);
        set(&mut features.virus_scanning, f.virus_scanning);
        set(&mut features.dkim_signing, f.dkim_signing);
        set(&mut features.mailing_lists, f.mailing_lists);
        set(&mut features.webhooks, f.webhooks);
        set(&mut features.api_access, f.api_access);
        set(&mut features.custom_domains, f.custom_domains);
        set(&mut features.priority_support, f.priority_support);
    }
    if let Some(enabled) = update.enabled {
        next.enabled = enabled;
    }
    if let Some(transport) = &update.transport {
        next.transport = match transport.as_deref() {
            None => None,
            Some(name) => Some(TransportKind::parse(name).ok_or_else(|| {
                AdminError::Invalid(format!(
                    "transport: unknown value {name:?} (mx, smarthost, ses, or null for the \
                     configured default)"
                ))
            })?),
        };
    }
    if let Some(days) = update.inbound_retention_days {
        // Beyond a century is a typo, and days * 86_400_000 must stay far from overflowing.
        if days > 36_500 {
            return Err(AdminError::Invalid(
                "inbound_retention_days: at most 36500 (0 = the relay's inbound.retention_days)"
                    .into(),
            ));
        }
        next.inbound_retention_days = days;
    }
    if let Some(status) = update.status {
        next.status = status.into();
        if next.status == TenantStatus::Active && update.status_reason.is_none() {
            next.status_reason = None;
        }
    }
    if let Some(reason) = &update.status_reason {
        let reason = reason.trim();
        next.status_reason = (!reason.is_empty()).then(|| reason.to_string());
    }
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;

    fn tenant(tier: Tier) -> Tenant {
        Tenant::new("t_1".into(), "Acme".into(), tier, 1)
    }

    #[test]
    fn tier_change_applies_defaults_except_fields_given() {
        let mut before = tenant(Tier::Free);
        before.limits.max_users = 7;
        let update = UpdateTenant {
            tier: Some(TierName::Starter),
            max_domains: Some(9),
            features: Some(FeatureUpdate {
                webhooks: Some(true),
                ..Default::default()
            }),
            ..Default::default()
        };
        let after = apply_update(&before, &update).unwrap();
        assert_eq!(after.tier, Tier::Starter);
        assert_eq!(
            after.limits.max_users, 25,
            "tier default replaces the old override"
        );
        assert_eq!(
            after.limits.max_domains, 9,
            "field given wins over the tier default"
        );
        assert!(after.features.api_access, "starter default");
        assert_eq!(
            after.limits.rate_per_second,
            Tier::Starter.default_limits().rate_per_second,
            "the new tier's sending limits too"
        );
        assert!(after.features.webhooks, "feature given wins");
        // Same tier: nothing reset.
        let same = UpdateTenant {
            tier: Some(TierName::Free),
            ..Default::default()
        };
        assert_eq!(apply_update(&before, &same).unwrap().limits.max_users, 7);
    }

    #[test]
    fn sending_limits_are_set_one_by_one() {
        let before = tenant(Tier::Free);
        let update = UpdateTenant {
            max_recipients_per_message: Some(3),
            max_message_size: Some(2048),
            rate_per_second: Some(0),
            rate_per_minute: Some(7),
            max_connections: Some(1),
            ..Default::default()
        };
        let after = apply_update(&before, &update).unwrap();
        let l = after.limits;
        assert_eq!(
            (
                l.max_recipients_per_message,
                l.max_message_size,
                l.rate_per_second,
                l.rate_per_minute,
                l.max_connections
            ),
            (3, 2048, 0, 7, 1)
        );
        assert_eq!(l.max_users, before.limits.max_users, "others unchanged");
        // The update's JSON names: what PUT /api/tenants/{id} and the CLI accept.
        let parsed: UpdateTenant = serde_json::from_value(serde_json::json!({
            "max_recipients_per_message": 3, "max_message_size": 2048, "rate_per_second": 0,
            "rate_per_minute": 7, "max_connections": 1
        }))
        .unwrap();
        assert_eq!(apply_update(&before, &parsed).unwrap().limits, l);
    }

    #[test]
    fn transport_is_set_reset_or_left_alone() {
        let before = tenant(Tier::Free);
        let parse =
            |body: serde_json::Value| -> UpdateTenant { serde_json::from_value(body).unwrap() };
        let smarthost = apply_update(
            &before,
            &parse(serde_json::json!({"transport": "smarthost"})),
        )
        .unwrap();
        assert_eq!(smarthost.transport, Some(TransportKind::Smarthost));
        let untouched =
            apply_update(&smarthost, &parse(serde_json::json!({"max_users": 3}))).unwrap();
        assert_eq!(
            untouched.transport,
            Some(TransportKind::Smarthost),
            "absent: unchanged"
        );
        let reset =
            apply_update(&smarthost, &parse(serde_json::json!({"transport": null}))).unwrap();
        assert_eq!(reset.transport, None, "null: the configured default");
        let refused =
            apply_update(&before, &parse(serde_json::json!({"transport": "pigeon"}))).unwrap_err();
        assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert!(refused.to_string().contains("transport"), "{refused}");
    }

    #[test]
    fn status_reason_follows_status() {
        let before = tenant(Tier::Free);
        let paused = apply_update(
            &before,
            &UpdateTenant {
                status: Some(StatusName::Paused),
                status_reason: Some("bounce rate".into()),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(paused.status, TenantStatus::Paused);
        assert_eq!(paused.status_reason.as_deref(), Some("bounce rate"));
        let active = apply_update(
            &paused,
            &UpdateTenant {
                status: Some(StatusName::Active),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(active.status_reason, None);
        let renamed = UpdateTenant {
            name: Some("  ".into()),
            ..Default::default()
        };
        assert_eq!(
            apply_update(&before, &renamed).unwrap_err().status(),
            StatusCode::UNPROCESSABLE_ENTITY
        );
    }

    #[test]
    fn a_limit_changed_in_two_places_at_once_is_refused() {
        let before = tenant(Tier::Free);
        let both = |flat: u64, nested: u64| UpdateTenant {
            max_users: Some(flat),
            limits: Some(LimitsUpdate {
                max_users: Some(nested),
                ..Default::default()
            }),
            ..Default::default()
        };
        let kept = before.limits.max_users;
        // One of them as stored: the other is the change.
        assert_eq!(
            apply_update(&before, &both(kept, 9))
                .unwrap()
                .limits
                .max_users,
            9
        );
        assert_eq!(
            apply_update(&before, &both(9, kept))
                .unwrap()
                .limits
                .max_users,
            9
        );
        assert_eq!(
            apply_update(&before, &both(9, 9)).unwrap().limits.max_users,
            9
        );
        let error = apply_update(&before, &both(8, 9)).unwrap_err();
        assert_eq!(error.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert!(error.to_string().contains("max_users"), "{error}");
    }
}
