//! Feature gates of the admin API: a resource that a feature flag names answers 403 to a
//! tenant without the flag. `api_access` is checked for every tenant API key in auth.rs (and so
//! gates the HTTP send API); `custom_domains` gates the return-path resource; `webhooks` gates
//! the webhooks resource (`webhooks.rs`).
//!
//! The gate is the policy's ([`mailmux_policy::rules::feature_gate`]): one definition of
//! "this tenant has that feature" for SMTP and HTTP alike.

use mailmux_core::{Feature, Tenant};
use mailmux_policy::{Verdict, rules};

use crate::error::Result;

/// Ok when `tenant` has `feature`; else 403 naming the feature.
pub fn require(tenant: &Tenant, feature: Feature) -> Result<()> {
    match rules::feature_gate(tenant, feature) {
        Verdict::Accept => Ok(()),
        Verdict::Refuse(refusal) => Err(refusal.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;
    use mailmux_core::Tier;

    #[test]
    fn gates_answer_403_naming_the_feature() {
        let mut tenant = Tenant::new("t_1".into(), "a".into(), Tier::Starter, 0);
        for (feature, on) in [
            (Feature::Webhooks, false),
            (Feature::CustomDomains, false),
            (Feature::ApiAccess, true),
        ] {
            match require(&tenant, feature) {
                Ok(()) => assert!(on, "{feature:?}"),
                Err(error) => {
                    assert!(!on, "{feature:?}");
                    assert_eq!(error.status(), StatusCode::FORBIDDEN);
                    assert_eq!(error.code(), "feature_disabled");
                    assert!(error.to_string().contains(feature.as_str()), "{error}");
                }
            }
        }
        tenant.features.webhooks = true;
        assert!(require(&tenant, Feature::Webhooks).is_ok());
    }
}
