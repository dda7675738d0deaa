//! Receipt rules (`receipt_rules`): one per address of an inbound domain, or the domain's
//! catch-all. The MX looks up the few rules that can match a recipient in one query
//! ([`Store::matching_receipt_rules`]); the inbound crate picks the winner.

use mailmux_core::{ReceiptRule, RuleAction};
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::audit::{commit_if_changed, commit_with_audit};
use crate::{AuditEntry, Result, Store, StoreError};

const COLUMNS: &str = "id, tenant_id, domain, local_part, action, reject_text, created_at, \
     updated_at, forward_to, members";

impl Store {
    /// Adds a rule; `Conflict` when the address (or the domain's catch-all) already has one.
    pub async fn create_receipt_rule(
        &self,
        rule: &ReceiptRule,
        audit: Option<&AuditEntry>,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(&format!(
            "INSERT INTO receipt_rules ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
        ))
        .bind(&rule.id)
        .bind(&rule.tenant_id)
        .bind(&rule.domain)
        .bind(&rule.local_part)
        .bind(rule.action.as_str())
        .bind(rule.reject_text.as_deref())
        .bind(rule.created_at)
        .bind(rule.updated_at)
        .bind(addresses_json(&rule.forward_to))
        .bind(addresses_json(&rule.members))
        .execute(&mut *tx)
        .await
        .map_err(|e| StoreError::conflict_or(e, format!("rule for {}", rule.address())))?;
        commit_with_audit(tx, audit).await
    }

    /// Replaces a rule's address, action and text; `NotFound` when the tenant has no such rule,
    /// `Conflict` when the new address already has one.
    pub async fn update_receipt_rule(
        &self,
        rule: &ReceiptRule,
        audit: Option<&AuditEntry>,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "UPDATE receipt_rules SET domain = $3, local_part = $4, action = $5, \
             reject_text = $6, updated_at = $7, forward_to = $8, members = $9 \
             WHERE tenant_id = $1 AND id = $2",
        )
        .bind(&rule.tenant_id)
        .bind(&rule.id)
        .bind(&rule.domain)
        .bind(&rule.local_part)
        .bind(rule.action.as_str())
        .bind(rule.reject_text.as_deref())
        .bind(rule.updated_at)
        .bind(addresses_json(&rule.forward_to))
        .bind(addresses_json(&rule.members))
        .execute(&mut *tx)
        .await
        .map_err(|e| StoreError::conflict_or(e, format!("rule for {}", rule.address())))?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("rule {}", rule.id)));
        }
        commit_with_audit(tx, audit).await
    }

    pub async fn delete_receipt_rule(
        &self,
        tenant_id: &str,
        id: &str,
        audit: Option<&AuditEntry>,
    ) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query("DELETE FROM receipt_rules WHERE tenant_id = $1 AND id = $2")
            .bind(tenant_id)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        commit_if_changed(tx, done.rows_affected() > 0, audit).await
    }

    pub async fn get_receipt_rule(&self, tenant_id: &str, id: &str) -> Result<Option<ReceiptRule>> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM receipt_rules WHERE tenant_id = $1 AND id = $2"
        ))
        .bind(tenant_id)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| rule_from_row(&row)).transpose()
    }

    /// A tenant's rules by domain, catch-all last within a domain ('*' sorts first in ASCII,
    /// so the order is spelled out).
    pub async fn list_receipt_rules(&self, tenant_id: &str) -> Result<Vec<ReceiptRule>> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM receipt_rules WHERE tenant_id = $1 \
             ORDER BY domain, CASE WHEN local_part = '*' THEN 1 ELSE 0 END, local_part"
        ))
        .bind(tenant_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(rule_from_row).collect()
    }

    /// The rules of `domain` whose local part is one of `local_parts` (the recipient's, its
    /// base without a `+tag`, and `*`): every rule that could match, in one query.
    pub async fn matching_receipt_rules(
        &self,
        domain: &str,
        local_parts: &[&str],
    ) -> Result<Vec<ReceiptRule>> {
        if local_parts.is_empty() {
            return Ok(Vec::new());
        }
        let placeholders = (2..local_parts.len() + 2)
            .map(|i| format!("${i}"))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "SELECT {COLUMNS} FROM receipt_rules WHERE domain = $1 AND local_part IN ({placeholders})"
        );
        let mut query = sqlx::query(&sql).bind(domain);
        for local in local_parts {
            query = query.bind(*local);
        }
        let rows = query.fetch_all(&self.pool).await?;
        rows.iter().map(rule_from_row).collect()
    }
}

fn rule_from_row(row: &AnyRow) -> Result<ReceiptRule> {
    let action: String = row.try_get("action")?;
    Ok(ReceiptRule {
        id: row.try_get("id")?,
        tenant_id: row.try_get("tenant_id")?,
        domain: row.try_get("domain")?,
        local_part: row.try_get("local_part")?,
        action: RuleAction::from_name(&action)
            .ok_or_else(|| StoreError::Corrupt(format!("receipt rule action {action:?}")))?,
        reject_text: row.try_get("reject_text")?,
        forward_to: addresses_from(row, "forward_to")?,
        members: addresses_from(row, "members")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

/// A `forward_to`/`members` list as its JSON column (NULL when empty).
fn addresses_json(addresses: &[String]) -> Option<String> {
    (!addresses.is_empty())
        .then(|| serde_json::to_string(addresses).expect("a list of strings serialises"))
}

fn addresses_from(row: &AnyRow, column: &str) -> Result<Vec<String>> {
    let json: Option<String> = row.try_get(column)?;
    match json {
        None => Ok(Vec::new()),
        Some(json) => serde_json::from_str(&json)
            .map_err(|_| StoreError::Corrupt(format!("receipt rule {column}: {json:?}"))),
    }
}
