//! The `[ses]` section: where the SES v2 API is (region, an endpoint override for emulators)
//! and how mailmux names what it creates there for each tenant. In a file of its own because
//! config.rs already holds every other section at its size limit.

use serde::{Deserialize, Serialize};

/// The placeholder a name pattern must contain: one SES tenant per mailmux tenant, so two
/// tenants must never map to the same name.
pub const TENANT_ID_PLACEHOLDER: &str = "{tenant_id}";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SesConfig {
    /// SES v2 endpoint override (tests point it at a local emulator). Unset: AWS's endpoint
    /// for `region`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_url: Option<String>,
    /// AWS region; unset: the SDK's chain (`AWS_REGION`, the profile), else `us-east-1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Name of a mailmux tenant's SES tenant; `{tenant_id}` is replaced by the tenant's id.
    pub tenant_name_pattern: String,
    /// Name of a mailmux tenant's configuration set (the one its mail is sent with).
    pub configuration_set_pattern: String,
    /// How often every SES tenant is synced: missing resources repaired, sending status and
    /// reputation read, the account's MaxSendRate refreshed. Failed provisioning is retried
    /// sooner, with its own backoff.
    pub sync_interval_secs: u64,
}

impl Default for SesConfig {
    fn default() -> Self {
        SesConfig {
            endpoint_url: None,
            region: None,
            tenant_name_pattern: "mm-{tenant_id}".into(),
            configuration_set_pattern: "mm-{tenant_id}".into(),
            sync_interval_secs: 300,
        }
    }
}

impl SesConfig {
    /// The SES tenant name of mailmux tenant `tenant_id`.
    pub fn tenant_name(&self, tenant_id: &str) -> String {
        self.tenant_name_pattern
            .replace(TENANT_ID_PLACEHOLDER, tenant_id)
    }

    /// The configuration set of mailmux tenant `tenant_id`.
    pub fn configuration_set(&self, tenant_id: &str) -> String {
        self.configuration_set_pattern
            .replace(TENANT_ID_PLACEHOLDER, tenant_id)
    }

    /// `(key, message)` for the first invalid key.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        // SES allows letters, digits, '_' and '-' in tenant and configuration set names, up to
        // 64 characters; a tenant id is `t_` + 16 hex, so the pattern's own part must leave room.
        for (key, pattern) in [
            ("ses.tenant_name_pattern", &self.tenant_name_pattern),
            (
                "ses.configuration_set_pattern",
                &self.configuration_set_pattern,
            ),
        ] {
            if !pattern.contains(TENANT_ID_PLACEHOLDER) {
                return Err((key, format!("must contain {TENANT_ID_PLACEHOLDER}")));
            }
            let sample = pattern.replace(TENANT_ID_PLACEHOLDER, "t_0123456789abcdef");
            if sample.len() > 64
                || !sample
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                return Err((
                    key,
                    "must give names of letters, digits, '_' and '-', at most 64 long".into(),
                ));
            }
        }
        if self.sync_interval_secs == 0 {
            return Err(("ses.sync_interval_secs", "must be at least 1".into()));
        }
        if let Some(url) = &self.endpoint_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err((
                "ses.endpoint_url",
                "must be an http:// or https:// URL".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_patterns_and_bad_patterns_are_refused() {
        let config = SesConfig::default();
        assert_eq!(config.tenant_name("t_1"), "mm-t_1");
        assert_eq!(config.configuration_set("t_1"), "mm-t_1");
        assert!(config.check().is_ok());
        let cases = [
            ("mm-fixed", "ses.tenant_name_pattern"),
            ("mm {tenant_id}", "ses.tenant_name_pattern"),
            (
                "a-very-long-prefix-that-leaves-no-room-for-the-id-{tenant_id}",
                "ses.tenant_name_pattern",
            ),
        ];
        for (pattern, key) in cases {
            let config = SesConfig {
                tenant_name_pattern: pattern.into(),
                ..SesConfig::default()
            };
            assert_eq!(config.check().unwrap_err().0, key, "{pattern}");
        }
        let config = SesConfig {
            endpoint_url: Some("127.0.0.1:4566".into()),
            ..SesConfig::default()
        };
        assert_eq!(config.check().unwrap_err().0, "ses.endpoint_url");
    }
}
