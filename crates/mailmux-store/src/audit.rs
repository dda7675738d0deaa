//! The audit log: who changed what, when, with the state before and after. Written by the
//! admin API and the CLI for every change; read newest first.
//!
//! An entry is written in the transaction of the change it describes: each changing method of
//! [`Store`] takes an `audit: Option<&AuditEntry>` and commits the two together, so the log
//! never misses a change that happened nor shows one that did not (a failed log write undoes
//! the change). `None` is for changes nobody asked for by name (test fixtures).

use sqlx::any::AnyRow;
use sqlx::{Any, AnyConnection, Row, Transaction};

use crate::{Result, Store};

/// A change to record.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEntry {
    /// Unix milliseconds.
    pub at: i64,
    /// `operator`, `api_key:<id>`, `cli` or `system`.
    pub actor: String,
    /// The tenant the change concerns, if any (tenant-scoped listings filter on it).
    pub tenant_id: Option<String>,
    /// `<resource>.<verb>`, e.g. `tenant.update`.
    pub action: String,
    /// What was changed: a tenant id, a domain name, a credential id…
    pub target: String,
    pub before: Option<serde_json::Value>,
    pub after: Option<serde_json::Value>,
}

/// A stored entry with its position in the log.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditRecord {
    pub id: i64,
    pub entry: AuditEntry,
}

const COLUMNS: &str = "id, at, actor, tenant_id, action, target, before_json, after_json";

impl Store {
    /// Newest first: up to `limit` entries older than the `before_id` cursor, of one tenant or
    /// (`None`) of all.
    pub async fn list_audit(
        &self,
        tenant_id: Option<&str>,
        before_id: Option<i64>,
        limit: u32,
    ) -> Result<Vec<AuditRecord>> {
        let before_id = before_id.unwrap_or(i64::MAX);
        let rows = match tenant_id {
            Some(tenant) => {
                sqlx::query(&format!(
                    "SELECT {COLUMNS} FROM audit_log WHERE tenant_id = $1 AND id < $2 \
                     ORDER BY id DESC LIMIT $3"
                ))
                .bind(tenant)
                .bind(before_id)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?
            }
            None => {
                sqlx::query(&format!(
                    "SELECT {COLUMNS} FROM audit_log WHERE id < $1 ORDER BY id DESC LIMIT $2"
                ))
                .bind(before_id)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?
            }
        };
        rows.iter().map(audit_from_row).collect()
    }
}

/// Writes `audit` (if any) inside `tx`, then commits: the change made in `tx` and its entry
/// are stored together or not at all.
pub(crate) async fn commit_with_audit(
    mut tx: Transaction<'static, Any>,
    audit: Option<&AuditEntry>,
) -> Result<()> {
    if let Some(entry) = audit {
        insert_audit(&mut tx, entry).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// For a change that may find nothing to change: commits `tx` with `audit` and returns true when
/// `changed`, else rolls back (on drop) and returns false, so no entry says something happened.
pub(crate) async fn commit_if_changed(
    tx: Transaction<'static, Any>,
    changed: bool,
    audit: Option<&AuditEntry>,
) -> Result<bool> {
    if !changed {
        return Ok(false);
    }
    commit_with_audit(tx, audit).await?;
    Ok(true)
}

async fn insert_audit(conn: &mut AnyConnection, entry: &AuditEntry) -> Result<()> {
    let json = |v: &Option<serde_json::Value>| v.as_ref().map(|v| v.to_string());
    sqlx::query(
        "INSERT INTO audit_log (at, actor, tenant_id, action, target, before_json, \
         after_json) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(entry.at)
    .bind(&entry.actor)
    .bind(entry.tenant_id.as_deref())
    .bind(&entry.action)
    .bind(&entry.target)
    .bind(json(&entry.before))
    .bind(json(&entry.after))
    .execute(conn)
    .await?;
    Ok(())
}

fn audit_from_row(row: &AnyRow) -> Result<AuditRecord> {
    // A value that is not JSON (written by hand?) is shown as a string rather than failing the
    // whole listing.
    let json = |column: &str| -> Result<Option<serde_json::Value>> {
        let text: Option<String> = row.try_get(column)?;
        Ok(text.map(|t| serde_json::from_str(&t).unwrap_or(serde_json::Value::String(t))))
    };
    Ok(AuditRecord {
        id: row.try_get("id")?,
        entry: AuditEntry {
            at: row.try_get("at")?,
            actor: row.try_get("actor")?,
            tenant_id: row.try_get("tenant_id")?,
            action: row.try_get("action")?,
            target: row.try_get("target")?,
            before: json("before_json")?,
            after: json("after_json")?,
        },
    })
}
