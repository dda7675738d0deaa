//! SES provisioning state: a tenant's SES tenant (`ses_tenants`), the state of each
//! provisioning step (`ses_steps`) and each domain's SES identity as SES last described it
//! (`ses_identities`). The SES crate writes them as it syncs; the admin API reads them.

use sqlx::Row;
use sqlx::any::AnyRow;

use crate::audit::commit_with_audit;
use crate::{AuditEntry, Result, Store};

/// A mailmux tenant's SES tenant, as the last sync left it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SesTenantRecord {
    pub tenant_id: String,
    pub tenant_name: String,
    pub aws_tenant_id: Option<String>,
    pub tenant_arn: Option<String>,
    pub sending_status: Option<String>,
    /// Mailmux paused the tenant because SES disabled its sending.
    pub paused_by_ses: bool,
    /// Failed syncs in a row.
    pub failures: u32,
    pub next_sync_at: i64,
    pub synced_at: Option<i64>,
    pub updated_at: i64,
}

/// One provisioning step's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SesStep {
    pub step: String,
    /// `done` or `error`.
    pub status: String,
    pub last_error: Option<String>,
    pub updated_at: i64,
}

/// A domain's SES identity as SES last described it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SesIdentity {
    pub domain: String,
    pub tenant_id: String,
    /// Easy DKIM's tokens: `TOKEN._domainkey.DOMAIN CNAME TOKEN.dkim.amazonses.com`.
    pub dkim_tokens: Vec<String>,
    pub dkim_status: Option<String>,
    pub verified_for_sending: bool,
    pub mail_from_status: Option<String>,
    pub checked_at: i64,
}

const TENANT_COLUMNS: &str = "tenant_id, tenant_name, aws_tenant_id, tenant_arn, sending_status, \
     paused_by_ses, failures, next_sync_at, synced_at, updated_at";

impl Store {
    pub async fn get_ses_tenant(&self, tenant_id: &str) -> Result<Option<SesTenantRecord>> {
        let row = sqlx::query(&format!(
            "SELECT {TENANT_COLUMNS} FROM ses_tenants WHERE tenant_id = $1"
        ))
        .bind(tenant_id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| ses_tenant_from_row(&row)).transpose()
    }

    /// SES tenants whose sync is due at `now`, the most overdue first.
    pub async fn list_ses_tenants_due(&self, now: i64, limit: u32) -> Result<Vec<SesTenantRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {TENANT_COLUMNS} FROM ses_tenants WHERE next_sync_at <= $1 \
             ORDER BY next_sync_at LIMIT $2"
        ))
        .bind(now)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(ses_tenant_from_row).collect()
    }

    /// Writes the whole record (inserted on first sync).
    pub async fn put_ses_tenant(&self, record: &SesTenantRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO ses_tenants (tenant_id, tenant_name, aws_tenant_id, tenant_arn, \
             sending_status, paused_by_ses, failures, next_sync_at, synced_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
             ON CONFLICT (tenant_id) DO UPDATE SET tenant_name = $2, aws_tenant_id = $3, \
             tenant_arn = $4, sending_status = $5, paused_by_ses = $6, failures = $7, \
             next_sync_at = $8, synced_at = $9, updated_at = $10",
        )
        .bind(&record.tenant_id)
        .bind(&record.tenant_name)
        .bind(record.aws_tenant_id.as_deref())
        .bind(record.tenant_arn.as_deref())
        .bind(record.sending_status.as_deref())
        .bind(i64::from(record.paused_by_ses))
        .bind(i64::from(record.failures))
        .bind(record.next_sync_at)
        .bind(record.synced_at)
        .bind(record.updated_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Asks for a sync of `tenant_id` now: the record is created (due at `now`) if the
    /// tenant has none yet, or made due at `now` if its next sync was later. A domain added to
    /// an `ses` tenant, `POST …/ses/sync` and `mailmux domain add` come through here, so the
    /// background sync starts on it at once instead of at the next interval.
    pub async fn request_ses_sync(
        &self,
        tenant_id: &str,
        tenant_name: &str,
        now: i64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO ses_tenants (tenant_id, tenant_name, next_sync_at, updated_at) \
             VALUES ($1, $2, $3, $3) \
             ON CONFLICT (tenant_id) DO UPDATE SET tenant_name = $2, next_sync_at = \
             CASE WHEN ses_tenants.next_sync_at > $3 THEN $3 ELSE ses_tenants.next_sync_at END",
        )
        .bind(tenant_id)
        .bind(tenant_name)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn list_ses_steps(&self, tenant_id: &str) -> Result<Vec<SesStep>> {
        let rows = sqlx::query(
            "SELECT step, status, last_error, updated_at FROM ses_steps WHERE tenant_id = $1 \
             ORDER BY updated_at, step",
        )
        .bind(tenant_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(SesStep {
                    step: row.try_get("step")?,
                    status: row.try_get("status")?,
                    last_error: row.try_get("last_error")?,
                    updated_at: row.try_get("updated_at")?,
                })
            })
            .collect()
    }

    /// Records one step's outcome. A step that was already `done` and is done again keeps its
    /// date: the date says when it was last *changed*, so a no-op re-run leaves every row as it
    /// was.
    pub async fn set_ses_step(
        &self,
        tenant_id: &str,
        step: &str,
        error: Option<&str>,
        now: i64,
    ) -> Result<()> {
        let status = if error.is_some() { "error" } else { "done" };
        sqlx::query(
            "INSERT INTO ses_steps (tenant_id, step, status, last_error, updated_at) \
             VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (tenant_id, step) DO UPDATE SET status = $3, last_error = $4, \
             updated_at = CASE WHEN ses_steps.status = $3 AND $3 = 'done' \
                 THEN ses_steps.updated_at ELSE $5 END",
        )
        .bind(tenant_id)
        .bind(step)
        .bind(status)
        .bind(error)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Forgets steps of resources that are gone (a deleted domain's identity).
    pub async fn delete_ses_step(&self, tenant_id: &str, step: &str) -> Result<()> {
        sqlx::query("DELETE FROM ses_steps WHERE tenant_id = $1 AND step = $2")
            .bind(tenant_id)
            .bind(step)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn get_ses_identity(&self, domain: &str) -> Result<Option<SesIdentity>> {
        let row = sqlx::query(
            "SELECT domain, tenant_id, dkim_tokens, dkim_status, verified_for_sending, \
             mail_from_status, checked_at FROM ses_identities WHERE domain = $1",
        )
        .bind(domain)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| {
            let tokens: String = row.try_get("dkim_tokens")?;
            Ok(SesIdentity {
                domain: row.try_get("domain")?,
                tenant_id: row.try_get("tenant_id")?,
                dkim_tokens: serde_json::from_str(&tokens).unwrap_or_default(),
                dkim_status: row.try_get("dkim_status")?,
                verified_for_sending: row.try_get::<i64, _>("verified_for_sending")? != 0,
                mail_from_status: row.try_get("mail_from_status")?,
                checked_at: row.try_get("checked_at")?,
            })
        })
        .transpose()
    }

    /// Stores what SES said of a domain's identity (only while the domain exists: the row
    /// goes with it).
    pub async fn put_ses_identity(&self, identity: &SesIdentity) -> Result<()> {
        let tokens = serde_json::to_string(&identity.dkim_tokens).expect("tokens serialise");
        sqlx::query(
            "INSERT INTO ses_identities (domain, tenant_id, dkim_tokens, dkim_status, \
             verified_for_sending, mail_from_status, checked_at) \
             SELECT $1, $2, $3, $4, $5, $6, $7 WHERE EXISTS \
             (SELECT 1 FROM domains WHERE name = $1) \
             ON CONFLICT (domain) DO UPDATE SET tenant_id = $2, dkim_tokens = $3, \
             dkim_status = $4, verified_for_sending = $5, mail_from_status = $6, checked_at = $7",
        )
        .bind(&identity.domain)
        .bind(&identity.tenant_id)
        .bind(tokens)
        .bind(identity.dkim_status.as_deref())
        .bind(i64::from(identity.verified_for_sending))
        .bind(identity.mail_from_status.as_deref())
        .bind(identity.checked_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Pauses an active tenant because SES stopped its sending, with SES's cause as the
    /// reason; marks the pause as SES's so that only it is lifted when SES re-enables the
    /// tenant. False when the tenant was not active (an operator's status stays as it is).
    pub async fn pause_tenant_for_ses(
        &self,
        tenant_id: &str,
        reason: &str,
        now: i64,
        audit: Option<&AuditEntry>,
    ) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "UPDATE tenants SET status = 'paused', status_reason = $2, updated_at = $3 \
             WHERE id = $1 AND status = 'active'",
        )
        .bind(tenant_id)
        .bind(reason)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            tx.rollback().await?;
            return Ok(false);
        }
        sqlx::query("UPDATE ses_tenants SET paused_by_ses = 1 WHERE tenant_id = $1")
            .bind(tenant_id)
            .execute(&mut *tx)
            .await?;
        commit_with_audit(tx, audit).await?;
        Ok(true)
    }

    /// Lifts a pause that [`Store::pause_tenant_for_ses`] set, if the tenant is still paused
    /// by it (not since paused, suspended or resumed by an operator). True when resumed.
    pub async fn resume_tenant_from_ses(
        &self,
        tenant_id: &str,
        now: i64,
        audit: Option<&AuditEntry>,
    ) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "UPDATE tenants SET status = 'active', status_reason = NULL, updated_at = $2 \
             WHERE id = $1 AND status = 'paused' AND EXISTS \
             (SELECT 1 FROM ses_tenants WHERE tenant_id = $1 AND paused_by_ses = 1)",
        )
        .bind(tenant_id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE ses_tenants SET paused_by_ses = 0 WHERE tenant_id = $1")
            .bind(tenant_id)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            tx.commit().await?;
            return Ok(false);
        }
        commit_with_audit(tx, audit).await?;
        Ok(true)
    }
}

fn ses_tenant_from_row(row: &AnyRow) -> Result<SesTenantRecord> {
    Ok(SesTenantRecord {
        tenant_id: row.try_get("tenant_id")?,
        tenant_name: row.try_get("tenant_name")?,
        aws_tenant_id: row.try_get("aws_tenant_id")?,
        tenant_arn: row.try_get("tenant_arn")?,
        sending_status: row.try_get("sending_status")?,
        paused_by_ses: row.try_get::<i64, _>("paused_by_ses")? != 0,
        failures: row
            .try_get::<i64, _>("failures")?
            .clamp(0, i64::from(u32::MAX)) as u32,
        next_sync_at: row.try_get("next_sync_at")?,
        synced_at: row.try_get("synced_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}
