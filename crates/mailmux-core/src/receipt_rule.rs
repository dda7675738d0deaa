//! Receipt rules: what the MX does with mail for an address of a tenant's inbound domain
//! (`/api/tenants/{id}/addresses`). A rule names one address (`user@domain`) or the domain's
//! catch-all (`*@domain`); both may exist at once, and the individual rule wins (mixed mode).
//! The matching itself (plus-addressing, precedence) is the inbound crate's.

use serde::{Deserialize, Serialize};

use crate::tenant::TenantId;

/// The local part that stands for "every address of the domain".
pub const CATCH_ALL: &str = "*";

/// What happens to mail a rule matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleAction {
    /// Kept for retrieval (`GET /api/tenants/{id}/inbound`).
    Store,
    /// Refused at RCPT with `550 5.7.1` and the rule's text.
    Reject,
}

impl RuleAction {
    pub fn as_str(self) -> &'static str {
        match self {
            RuleAction::Store => "store",
            RuleAction::Reject => "reject",
        }
    }

    pub fn from_name(name: &str) -> Option<RuleAction> {
        match name {
            "store" => Some(RuleAction::Store),
            "reject" => Some(RuleAction::Reject),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptRule {
    pub id: String,
    pub tenant_id: TenantId,
    /// Normalised: lowercase A-labels.
    pub domain: String,
    /// Lowercase, or [`CATCH_ALL`].
    pub local_part: String,
    pub action: RuleAction,
    /// The text of the 550 a `reject` rule answers (a default when absent).
    pub reject_text: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl ReceiptRule {
    /// The address as the API shows it: `user@domain` or `*@domain`.
    pub fn address(&self) -> String {
        format!("{}@{}", self.local_part, self.domain)
    }

    pub fn is_catch_all(&self) -> bool {
        self.local_part == CATCH_ALL
    }
}
