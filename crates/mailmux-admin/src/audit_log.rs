//! Writing the audit log: every operation that changes something (from the REST API and the
//! CLI alike) hands the store an [`entry`] with the change, which commits both together.
//! Reading it back is the `audit.rs` resource.

use mailmux_core::now_ms;
use mailmux_store::AuditEntry;
use serde_json::Value;

use crate::auth::Actor;

/// The entry describing a change, for the store method that makes the change: it writes the
/// entry in the same transaction, so a change is never applied unlogged (if the log cannot be
/// written, the change is undone and the request fails with 503).
pub fn entry(
    actor: &Actor,
    tenant_id: Option<&str>,
    action: &str,
    target: &str,
    before: Option<Value>,
    after: Option<Value>,
) -> AuditEntry {
    AuditEntry {
        at: now_ms(),
        actor: actor.0.clone(),
        tenant_id: tenant_id.map(str::to_string),
        action: action.to_string(),
        target: target.to_string(),
        before,
        after,
    }
}
