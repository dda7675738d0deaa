//! A mailmux tenant's SES side, brought to what mailmux says it should be: the SES tenant,
//! its configuration set, an identity per domain (Easy DKIM, or BYODKIM with the domain's
//! mailmux key when mailmux signs), the MAIL FROM domain where the tenant has a return path
//! and `custom_domains`, the associations of identities and configuration set with the
//! tenant, and its reputation policy. Then SES's view of the tenant is mirrored: a tenant whose
//! sending SES disabled is paused locally with SES's cause, and resumed when SES enables it
//! again (only if the pause was SES's).
//!
//! Every step reads before it writes, so a second run over a synced tenant changes nothing in
//! SES and leaves every step row as it was; a run after a failure repairs what is missing.
//! Each step's outcome is stored (`ses_steps`), so a failure is visible in
//! `GET /api/tenants/{id}/ses` and the background job (`sync_job.rs`) retries it with backoff.
//! Identities associated with the tenant whose domain mailmux no longer has are taken away:
//! the association, then the identity if no other SES tenant uses it (`teardown` does the
//! same for a deleted tenant, and then deletes the SES tenant).

use std::path::PathBuf;
use std::sync::Arc;

use base64::Engine;
use mailmux_core::{Domain, Tenant, TenantStatus, now_ms};
use mailmux_store::{AuditEntry, DkimKey, MasterKey, SesIdentity, SesTenantRecord, Store};
use serde::Serialize;
use tracing::{info, warn};

use crate::client::Ses;
use crate::error::SesError;
use crate::resources::{Change, DkimChoice, sibling_arn};

/// Runs syncs: the SES client, the store the state is kept in, and the master key that opens
/// the domains' DKIM keys (for BYODKIM). One per process, shared by the admin API, the
/// background job and the CLI.
pub struct Provisioner {
    pub ses: Arc<Ses>,
    pub store: Store,
    master_key_path: PathBuf,
    /// One sync at a time per process: the API's and the background job's runs on one tenant
    /// would otherwise race to create the same resources. A sync is a few calls; serialising
    /// them costs little and keeps the step rows one run's work.
    running: tokio::sync::Mutex<()>,
    /// Wakes the background job (a domain was added, a sync was asked for).
    pub(crate) wake: tokio::sync::Notify,
}

/// What one step did, or in a dry run would do.
#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    pub step: String,
    /// `unchanged`, `created`, `updated`, `deleted`, or `error`.
    pub action: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One tenant's sync.
#[derive(Debug, Clone, Serialize)]
pub struct SyncReport {
    pub tenant_id: String,
    pub tenant_name: String,
    pub dry_run: bool,
    pub steps: Vec<StepReport>,
}

impl SyncReport {
    pub fn ok(&self) -> bool {
        self.steps.iter().all(|s| s.error.is_none())
    }

    /// Whether anything was (or would be) changed in SES.
    pub fn changed(&self) -> bool {
        self.steps.iter().any(|s| s.action != Change::None.as_str())
    }
}

/// A sync that could not run at all (the store failed).
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Store(#[from] mailmux_store::StoreError),
    #[error("tenant {0} not found")]
    NoTenant(String),
}

/// One run's steps, recorded as they finish (unless dry).
struct Run<'a> {
    provisioner: &'a Provisioner,
    report: SyncReport,
    now: i64,
}

impl Run<'_> {
    async fn record(
        &mut self,
        step: String,
        result: Result<Change, SesError>,
    ) -> Result<bool, SyncError> {
        let (action, error) = match &result {
            Ok(change) => (change.as_str().to_string(), None),
            Err(error) => ("error".to_string(), Some(error.to_string())),
        };
        if !self.report.dry_run {
            let store = &self.provisioner.store;
            store
                .set_ses_step(&self.report.tenant_id, &step, error.as_deref(), self.now)
                .await?;
        }
        if let Some(error) = &error {
            warn!(tenant = %self.report.tenant_id, %step, %error, "SES sync step failed");
        }
        self.report.steps.push(StepReport {
            step,
            action,
            error,
        });
        Ok(result.is_ok())
    }
}

impl Provisioner {
    pub fn new(ses: Arc<Ses>, store: Store, data_dir: &std::path::Path) -> Provisioner {
        Provisioner {
            ses,
            store,
            master_key_path: data_dir.join("master.key"),
            running: tokio::sync::Mutex::new(()),
            wake: tokio::sync::Notify::new(),
        }
    }

    /// Marks the tenant's sync due now and wakes the background job; returns at once.
    pub async fn request(&self, tenant_id: &str) -> Result<(), SyncError> {
        let name = self.ses.config().tenant_name(tenant_id);
        self.store
            .request_ses_sync(tenant_id, &name, now_ms())
            .await?;
        self.wake.notify_one();
        Ok(())
    }

    /// Syncs one tenant now (see the module comment); with `dry_run`, only reads.
    pub async fn sync(&self, tenant_id: &str, dry_run: bool) -> Result<SyncReport, SyncError> {
        let _one = self.running.lock().await;
        let tenant = self
            .store
            .get_tenant(tenant_id)
            .await?
            .ok_or_else(|| SyncError::NoTenant(tenant_id.to_string()))?;
        let config = self.ses.config();
        let mut run = Run {
            provisioner: self,
            report: SyncReport {
                tenant_id: tenant.id.clone(),
                tenant_name: config.tenant_name(&tenant.id),
                dry_run,
                steps: Vec::new(),
            },
            now: now_ms(),
        };
        let name = run.report.tenant_name.clone();
        let mut record = match self.store.get_ses_tenant(&tenant.id).await? {
            Some(record) => record,
            None => SesTenantRecord {
                tenant_id: tenant.id.clone(),
                tenant_name: name.clone(),
                aws_tenant_id: None,
                tenant_arn: None,
                sending_status: None,
                paused_by_ses: false,
                failures: 0,
                next_sync_at: run.now,
                synced_at: None,
                updated_at: run.now,
            },
        };
        let outcome = self.sync_steps(&mut run, &tenant, &mut record).await;
        if !dry_run {
            let ok = outcome.is_ok() && run.report.ok();
            self.finish(&mut record, ok, run.now).await?;
        }
        outcome?;
        Ok(run.report)
    }

    async fn sync_steps(
        &self,
        run: &mut Run<'_>,
        tenant: &Tenant,
        record: &mut SesTenantRecord,
    ) -> Result<(), SyncError> {
        let ses = &self.ses;
        let dry = run.report.dry_run;
        let name = run.report.tenant_name.clone();
        let set_name = ses.config().configuration_set(&tenant.id);

        let ses_tenant = match ses.ensure_tenant(&name, dry).await {
            Ok((found, change)) => {
                run.record("tenant".into(), Ok(change)).await?;
                found
            }
            Err(error) => {
                run.record("tenant".into(), Err(error)).await?;
                return Ok(());
            }
        };
        if !dry {
            record.aws_tenant_id = Some(ses_tenant.tenant_id.clone());
            record.tenant_arn = Some(ses_tenant.arn.clone());
            record.sending_status = ses_tenant.sending_status.clone();
            self.store.put_ses_tenant(record).await?;
        }
        let change = ses.ensure_configuration_set(&set_name, dry).await;
        let set_ok = run.record("configuration_set".into(), change).await?;

        // What is associated now; nothing when the tenant is yet to be created (dry run).
        let associated = if ses_tenant.arn.is_empty() {
            Vec::new()
        } else {
            match ses.tenant_resources(&name).await {
                Ok(arns) => arns,
                Err(error) => {
                    run.record("associations".into(), Err(error)).await?;
                    return Ok(());
                }
            }
        };
        let arn_of = |kind: &str, resource: &str| {
            sibling_arn(&ses_tenant.arn, kind, resource).unwrap_or_default()
        };

        let domains = self.store.list_domains(&tenant.id).await?;
        for domain in &domains {
            let identity_ok = self.sync_identity(run, tenant, domain).await?;
            if identity_ok {
                let arn = arn_of("identity", &domain.name);
                let change = ses.ensure_association(&name, &arn, &associated, dry).await;
                run.record(format!("association:identity:{}", domain.name), change)
                    .await?;
            }
        }
        if set_ok {
            let arn = arn_of("configuration-set", &set_name);
            let change = ses.ensure_association(&name, &arn, &associated, dry).await;
            run.record("association:configuration_set".into(), change)
                .await?;
        }

        // Identities of domains mailmux no longer has: the association, then the identity.
        let identity_prefix = arn_of("identity", "");
        for arn in &associated {
            let Some(domain) = arn.strip_prefix(&identity_prefix) else {
                continue;
            };
            if domains.iter().any(|d| d.name == domain) {
                continue;
            }
            let change = self.release_identity(&name, arn, domain, dry).await;
            let released = run
                .record(format!("release:identity:{domain}"), change)
                .await?;
            // Once released, nothing of the domain is left to show; a failed release stays
            // visible (and is retried) until it succeeds.
            if released && !dry {
                for step in [
                    "identity",
                    "association:identity",
                    "mail_from",
                    "release:identity",
                ] {
                    let stale = format!("{step}:{domain}");
                    self.store.delete_ses_step(&tenant.id, &stale).await?;
                }
            }
        }

        if !ses_tenant.arn.is_empty() {
            self.sync_reputation(run, tenant, record, &ses_tenant.arn)
                .await?;
        }
        Ok(())
    }

    /// The domain's identity (and MAIL FROM); true when the identity exists.
    async fn sync_identity(
        &self,
        run: &mut Run<'_>,
        tenant: &Tenant,
        domain: &Domain,
    ) -> Result<bool, SyncError> {
        let dry = run.report.dry_run;
        let dkim = self.dkim_choice(tenant, domain).await?;
        let (state, change) = match self.ses.ensure_identity(&domain.name, &dkim, dry).await {
            Ok(found) => found,
            Err(error) => {
                run.record(format!("identity:{}", domain.name), Err(error))
                    .await?;
                return Ok(false);
            }
        };
        run.record(format!("identity:{}", domain.name), Ok(change))
            .await?;
        let mut mail_from_status = state.mail_from_status.clone();
        if tenant.features.custom_domains
            && let Some(return_path) = self
                .store
                .get_return_path(&domain.name)
                .await?
                .and_then(|r| r.return_path)
        {
            let change = self
                .ses
                .ensure_mail_from(
                    &domain.name,
                    state.mail_from_domain.as_deref(),
                    &return_path,
                    dry,
                )
                .await;
            if matches!(change, Ok(Change::Created | Change::Updated)) {
                mail_from_status = Some("PENDING".into());
            }
            run.record(format!("mail_from:{}", domain.name), change)
                .await?;
        }
        if dry {
            return Ok(true);
        }
        self.store
            .put_ses_identity(&SesIdentity {
                domain: domain.name.clone(),
                tenant_id: tenant.id.clone(),
                dkim_tokens: state.dkim_tokens.clone(),
                dkim_status: state.dkim_status.clone(),
                verified_for_sending: state.verified_for_sending,
                mail_from_status,
                checked_at: run.now,
            })
            .await?;
        // SES verified the domain for sending (it found the DKIM records): on the `ses`
        // transport that is the verification that counts, so the domain may send.
        if state.verified_for_sending && !domain.verified {
            let audit = AuditEntry {
                at: run.now,
                actor: "system".into(),
                tenant_id: Some(tenant.id.clone()),
                action: "domain.verify_ses".into(),
                target: domain.name.clone(),
                before: None,
                after: Some(serde_json::json!({"verified": true, "verified_by": "ses"})),
            };
            self.store
                .set_domain_verified(&domain.name, Some("ses"), Some(&audit))
                .await?;
        }
        Ok(true)
    }

    /// BYODKIM with the domain's mailmux key when mailmux signs for the tenant (SES then
    /// verifies the DKIM record the tenant already published) and the key is RSA (SES takes
    /// no other); Easy DKIM otherwise.
    async fn dkim_choice(&self, tenant: &Tenant, domain: &Domain) -> Result<DkimChoice, SyncError> {
        if !tenant.features.dkim_signing {
            return Ok(DkimChoice::Easy);
        }
        let Some(key) = self.store.get_dkim_key(&domain.name).await? else {
            return Ok(DkimChoice::Easy);
        };
        if key.key_type != "rsa" {
            return Ok(DkimChoice::Easy);
        }
        let opened = MasterKey::load(&self.master_key_path).and_then(|master| {
            master.open(
                &key.private_key_sealed,
                &DkimKey::seal_context(&key.domain, &key.selector),
            )
        });
        Ok(match opened {
            Ok(der) => DkimChoice::Byodkim {
                selector: key.selector.clone(),
                private_key: base64::engine::general_purpose::STANDARD.encode(der),
            },
            Err(error) => {
                warn!(domain = %domain.name, %error, "cannot open the DKIM key; SES identity uses Easy DKIM");
                DkimChoice::Easy
            }
        })
    }

    /// Disassociates `arn` from the tenant and deletes the identity if no SES tenant uses it.
    async fn release_identity(
        &self,
        tenant_name: &str,
        arn: &str,
        domain: &str,
        dry_run: bool,
    ) -> Result<Change, SesError> {
        if dry_run {
            return Ok(Change::Deleted);
        }
        self.ses.delete_association(tenant_name, arn).await?;
        if self.ses.resource_tenants(arn).await?.is_empty() {
            self.ses.delete_identity(domain).await?;
        }
        Ok(Change::Deleted)
    }

    /// Applies the reputation policy and mirrors SES's sending status onto the tenant.
    async fn sync_reputation(
        &self,
        run: &mut Run<'_>,
        tenant: &Tenant,
        record: &mut SesTenantRecord,
        arn: &str,
    ) -> Result<(), SyncError> {
        let dry = run.report.dry_run;
        let reputation = match self.ses.reputation(arn).await {
            Ok(found) => found,
            Err(error) => {
                run.record("reputation_policy".into(), Err(error)).await?;
                return Ok(());
            }
        };
        let policy = tenant.reputation_policy.as_str();
        let change = self
            .ses
            .ensure_reputation_policy(arn, reputation.policy.as_deref(), policy, dry)
            .await;
        run.record("reputation_policy".into(), change).await?;
        if dry {
            return Ok(());
        }
        // Disabled by SES, on the tenant itself or by its reputation findings.
        let disabled_by = [
            ("SendingStatus", record.sending_status.as_deref()),
            ("reputation findings", reputation.sending_status.as_deref()),
        ]
        .into_iter()
        .find(|(_, status)| *status == Some("DISABLED"));
        let now = run.now;
        let audit = |action: &str| AuditEntry {
            at: now,
            actor: "system".into(),
            tenant_id: Some(tenant.id.clone()),
            action: action.into(),
            target: tenant.id.clone(),
            before: None,
            after: None,
        };
        if let Some((what, _)) = disabled_by {
            let reason = format!("SES disabled the tenant's sending ({what}: DISABLED)");
            let audit = audit("tenant.ses_pause");
            if self
                .store
                .pause_tenant_for_ses(&tenant.id, &reason, now, Some(&audit))
                .await?
            {
                info!(tenant = %tenant.id, %reason, "tenant paused: SES disabled its sending");
            }
        } else if tenant.status == TenantStatus::Paused
            && self
                .store
                .resume_tenant_from_ses(&tenant.id, now, Some(&audit("tenant.ses_resume")))
                .await?
        {
            info!(tenant = %tenant.id, "tenant resumed: SES enabled its sending again");
        }
        Ok(())
    }

    /// Dates the run and the next one: the interval after success, backoff after a failure.
    async fn finish(
        &self,
        record: &mut SesTenantRecord,
        ok: bool,
        now: i64,
    ) -> Result<(), SyncError> {
        // Read again: the pause/resume above changed `paused_by_ses`.
        if let Some(current) = self.store.get_ses_tenant(&record.tenant_id).await? {
            record.paused_by_ses = current.paused_by_ses;
        }
        let interval_ms = i64::try_from(self.ses.config().sync_interval_secs)
            .unwrap_or(i64::MAX / 1000)
            .max(1)
            * 1000;
        if ok {
            record.failures = 0;
            record.synced_at = Some(now);
            record.next_sync_at = now + interval_ms;
        } else {
            record.failures = record.failures.saturating_add(1);
            record.next_sync_at = now + backoff_ms(record.failures).min(interval_ms);
        }
        record.updated_at = now;
        self.store.put_ses_tenant(record).await?;
        Ok(())
    }

    /// Removes the tenant's SES side, in this order: its associations, the identities only it
    /// used, its configuration set, and the SES tenant. Safe to run again after a failure:
    /// what is gone already is skipped.
    pub async fn teardown(&self, tenant_id: &str) -> Result<Vec<StepReport>, SesError> {
        let _one = self.running.lock().await;
        let ses = &self.ses;
        let name = ses.config().tenant_name(tenant_id);
        let mut steps = Vec::new();
        let mut done = |step: String, change: Change| {
            steps.push(StepReport {
                step,
                action: change.as_str().into(),
                error: None,
            })
        };
        let Some(found) = ses.get_tenant(&name).await? else {
            return Ok(steps);
        };
        let resources = ses.tenant_resources(&name).await?;
        for arn in &resources {
            done(
                format!("association:{arn}"),
                ses.delete_association(&name, arn).await?,
            );
        }
        let identity_prefix = sibling_arn(&found.arn, "identity", "").unwrap_or_default();
        for arn in &resources {
            if let Some(domain) = arn.strip_prefix(&identity_prefix)
                && ses.resource_tenants(arn).await?.is_empty()
            {
                done(
                    format!("identity:{domain}"),
                    ses.delete_identity(domain).await?,
                );
            }
        }
        let set_name = ses.config().configuration_set(tenant_id);
        done(
            "configuration_set".into(),
            ses.delete_configuration_set(&set_name).await?,
        );
        done("tenant".into(), ses.delete_tenant(&name).await?);
        Ok(steps)
    }
}

/// Backoff after `failures` failed syncs in a row: 1 s, 2 s, 4 s … (capped by the caller at
/// the sync interval).
fn backoff_ms(failures: u32) -> i64 {
    1000_i64.saturating_mul(1_i64 << failures.saturating_sub(1).min(20))
}

#[cfg(test)]
mod tests {
    use super::backoff_ms;

    #[test]
    fn backoff_doubles_from_a_second() {
        assert_eq!(backoff_ms(1), 1000);
        assert_eq!(backoff_ms(2), 2000);
        assert_eq!(backoff_ms(4), 8000);
        assert!(backoff_ms(u32::MAX) > 0);
    }
}
