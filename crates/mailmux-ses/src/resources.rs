//! The SES resources a mailmux tenant owns, one call per question or change: its SES tenant,
//! its configuration set, its domains' email identities (with their MAIL FROM domain), the
//! associations of those with the tenant, and its reputation entity. Each `ensure_*` reads
//! first and changes only what is missing or wrong (SES's `Create*` calls are not all
//! idempotent: a second `CreateEmailIdentity` may reset the identity's DKIM state), and says
//! whether it changed anything. With `dry_run` nothing is changed: the answer says what would
//! be. The order and the bookkeeping of a whole tenant's sync are `sync.rs`'s.

use aws_sdk_sesv2::types::{
    DkimSigningAttributes, ReputationEntityType, SendingStatus, TenantResource,
};

use crate::Result;
use crate::client::Ses;
use crate::error::SesError;

/// What a step did (or, in a dry run, would do).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// It was already right.
    None,
    Created,
    Updated,
    Deleted,
}

impl Change {
    pub fn as_str(self) -> &'static str {
        match self {
            Change::None => "unchanged",
            Change::Created => "created",
            Change::Updated => "updated",
            Change::Deleted => "deleted",
        }
    }
}

/// An SES tenant as `GetTenant` / `CreateTenant` describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SesTenant {
    pub tenant_id: String,
    pub arn: String,
    /// `ENABLED`, `REINSTATED` or `DISABLED`.
    pub sending_status: Option<String>,
}

/// How a new identity signs: SES's own keys (Easy DKIM: three CNAMEs to publish) or the
/// domain's mailmux key (BYODKIM: the DKIM record the tenant already published).
#[derive(Debug, Clone)]
pub enum DkimChoice {
    Easy,
    Byodkim {
        selector: String,
        /// Base64 of the private key's DER.
        private_key: String,
    },
}

/// A domain identity as `GetEmailIdentity` describes it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdentityState {
    pub dkim_tokens: Vec<String>,
    pub dkim_status: Option<String>,
    pub verified_for_sending: bool,
    pub mail_from_domain: Option<String>,
    pub mail_from_status: Option<String>,
}

/// The tenant's reputation entity (`GetReputationEntity`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReputationState {
    /// The policy's ARN.
    pub policy: Option<String>,
    /// What SES makes of the entity's sending, all statuses together.
    pub sending_status: Option<String>,
}

impl Ses {
    /// `GetTenant`; `None` when SES has no tenant of that name.
    pub async fn get_tenant(&self, name: &str) -> Result<Option<SesTenant>> {
        match self.client.get_tenant().tenant_name(name).send().await {
            Ok(out) => Ok(out.tenant().map(|t| SesTenant {
                tenant_id: t.tenant_id().unwrap_or_default().to_string(),
                arn: t.tenant_arn().unwrap_or_default().to_string(),
                sending_status: t.sending_status().map(|s| s.as_str().to_string()),
            })),
            Err(e) => none_if_missing(SesError::from_sdk("GetTenant", e)),
        }
    }

    /// The SES tenant `name`, created if missing.
    pub async fn ensure_tenant(&self, name: &str, dry_run: bool) -> Result<(SesTenant, Change)> {
        if let Some(tenant) = self.get_tenant(name).await? {
            return Ok((tenant, Change::None));
        }
        if dry_run {
            let planned = SesTenant {
                tenant_id: String::new(),
                arn: String::new(),
                sending_status: None,
            };
            return Ok((planned, Change::Created));
        }
        match self.client.create_tenant().tenant_name(name).send().await {
            Ok(out) => Ok((
                SesTenant {
                    tenant_id: out.tenant_id().unwrap_or_default().to_string(),
                    arn: out.tenant_arn().unwrap_or_default().to_string(),
                    sending_status: out.sending_status().map(|s| s.as_str().to_string()),
                },
                Change::Created,
            )),
            // Created meanwhile (another node's sync): read what is there.
            Err(e) => {
                let error = SesError::from_sdk("CreateTenant", e);
                if !error.is_already_exists() {
                    return Err(error);
                }
                let tenant = self.get_tenant(name).await?.ok_or(error)?;
                Ok((tenant, Change::None))
            }
        }
    }

    /// The configuration set `name`, created if missing.
    pub async fn ensure_configuration_set(&self, name: &str, dry_run: bool) -> Result<Change> {
        let found = self
            .client
            .get_configuration_set()
            .configuration_set_name(name)
            .send()
            .await;
        match found {
            Ok(_) => return Ok(Change::None),
            Err(e) => {
                let error = SesError::from_sdk("GetConfigurationSet", e);
                if !error.is_not_found() {
                    return Err(error);
                }
            }
        }
        if dry_run {
            return Ok(Change::Created);
        }
        let created = self
            .client
            .create_configuration_set()
            .configuration_set_name(name)
            .send()
            .await;
        created_or_there(created.map(drop), "CreateConfigurationSet")
    }

    /// `GetEmailIdentity`; `None` when SES has no such identity.
    pub async fn get_identity(&self, domain: &str) -> Result<Option<IdentityState>> {
        let out = match self
            .client
            .get_email_identity()
            .email_identity(domain)
            .send()
            .await
        {
            Ok(out) => out,
            Err(e) => return none_if_missing(SesError::from_sdk("GetEmailIdentity", e)),
        };
        let dkim = out.dkim_attributes();
        let mail_from = out.mail_from_attributes();
        Ok(Some(IdentityState {
            dkim_tokens: dkim.map(|d| d.tokens().to_vec()).unwrap_or_default(),
            dkim_status: dkim
                .and_then(|d| d.status())
                .map(|s| s.as_str().to_string()),
            verified_for_sending: out.verified_for_sending_status(),
            mail_from_domain: mail_from
                .map(|m| m.mail_from_domain().to_string())
                .filter(|d| !d.is_empty()),
            mail_from_status: mail_from.map(|m| m.mail_from_domain_status().as_str().to_string()),
        }))
    }

    /// The domain's identity, created (with `dkim`) if missing. An existing identity keeps
    /// its DKIM set-up: changing it would make SES verify the domain again.
    pub async fn ensure_identity(
        &self,
        domain: &str,
        dkim: &DkimChoice,
        dry_run: bool,
    ) -> Result<(IdentityState, Change)> {
        if let Some(state) = self.get_identity(domain).await? {
            return Ok((state, Change::None));
        }
        if dry_run {
            return Ok((IdentityState::default(), Change::Created));
        }
        let mut request = self.client.create_email_identity().email_identity(domain);
        if let DkimChoice::Byodkim {
            selector,
            private_key,
        } = dkim
        {
            request = request.dkim_signing_attributes(
                DkimSigningAttributes::builder()
                    .domain_signing_selector(selector)
                    .domain_signing_private_key(private_key)
                    .build(),
            );
        }
        if let Err(e) = request.send().await {
            let error = SesError::from_sdk("CreateEmailIdentity", e);
            if !error.is_already_exists() {
                return Err(error);
            }
        }
        // Read back: the create answer lacks the MAIL FROM part.
        let state = self
            .get_identity(domain)
            .await?
            .ok_or_else(|| missing("GetEmailIdentity", domain))?;
        Ok((state, Change::Created))
    }

    /// Sets the identity's custom MAIL FROM domain unless it is set to that already.
    pub async fn ensure_mail_from(
        &self,
        domain: &str,
        current: Option<&str>,
        mail_from: &str,
        dry_run: bool,
    ) -> Result<Change> {
        if current == Some(mail_from) {
            return Ok(Change::None);
        }
        if !dry_run {
            self.client
                .put_email_identity_mail_from_attributes()
                .email_identity(domain)
                .mail_from_domain(mail_from)
                .send()
                .await
                .map_err(|e| SesError::from_sdk("PutEmailIdentityMailFromAttributes", e))?;
        }
        Ok(if current.is_some() {
            Change::Updated
        } else {
            Change::Created
        })
    }

    /// The ARNs associated with the tenant (`ListTenantResources`, every page).
    pub async fn tenant_resources(&self, tenant_name: &str) -> Result<Vec<String>> {
        let mut arns = Vec::new();
        let mut token = None;
        loop {
            let out = self
                .client
                .list_tenant_resources()
                .tenant_name(tenant_name)
                .set_next_token(token)
                .send()
                .await
                .map_err(|e| SesError::from_sdk("ListTenantResources", e))?;
            arns.extend(
                out.tenant_resources()
                    .iter()
                    .filter_map(TenantResource::resource_arn)
                    .map(str::to_string),
            );
            token = out.next_token().map(str::to_string);
            if token.is_none() {
                return Ok(arns);
            }
        }
    }

    /// The names of the SES tenants `arn` is associated with (`ListResourceTenants`).
    pub async fn resource_tenants(&self, arn: &str) -> Result<Vec<String>> {
        let mut names = Vec::new();
        let mut token = None;
        loop {
            let out = self
                .client
                .list_resource_tenants()
                .resource_arn(arn)
                .set_next_token(token)
                .send()
                .await
                .map_err(|e| SesError::from_sdk("ListResourceTenants", e))?;
            names.extend(
                out.resource_tenants()
                    .iter()
                    .filter_map(|r| r.tenant_name())
                    .map(str::to_string),
            );
            token = out.next_token().map(str::to_string);
            if token.is_none() {
                return Ok(names);
            }
        }
    }

    /// Associates `arn` with the tenant unless `associated` (its current resources) has it.
    pub async fn ensure_association(
        &self,
        tenant_name: &str,
        arn: &str,
        associated: &[String],
        dry_run: bool,
    ) -> Result<Change> {
        if associated.iter().any(|a| a == arn) {
            return Ok(Change::None);
        }
        if dry_run {
            return Ok(Change::Created);
        }
        let created = self
            .client
            .create_tenant_resource_association()
            .tenant_name(tenant_name)
            .resource_arn(arn)
            .send()
            .await;
        created_or_there(created.map(drop), "CreateTenantResourceAssociation")
    }

    pub async fn delete_association(&self, tenant_name: &str, arn: &str) -> Result<Change> {
        let done = self
            .client
            .delete_tenant_resource_association()
            .tenant_name(tenant_name)
            .resource_arn(arn)
            .send()
            .await;
        deleted_or_gone(done.map(drop), "DeleteTenantResourceAssociation")
    }

    pub async fn delete_identity(&self, domain: &str) -> Result<Change> {
        let done = self
            .client
            .delete_email_identity()
            .email_identity(domain)
            .send()
            .await;
        deleted_or_gone(done.map(drop), "DeleteEmailIdentity")
    }

    pub async fn delete_configuration_set(&self, name: &str) -> Result<Change> {
        let done = self
            .client
            .delete_configuration_set()
            .configuration_set_name(name)
            .send()
            .await;
        deleted_or_gone(done.map(drop), "DeleteConfigurationSet")
    }

    pub async fn delete_tenant(&self, name: &str) -> Result<Change> {
        let done = self.client.delete_tenant().tenant_name(name).send().await;
        deleted_or_gone(done.map(drop), "DeleteTenant")
    }

    /// `GetReputationEntity` of a resource (the tenant, by its ARN).
    pub async fn reputation(&self, arn: &str) -> Result<ReputationState> {
        let out = self
            .client
            .get_reputation_entity()
            .reputation_entity_type(ReputationEntityType::Resource)
            .reputation_entity_reference(arn)
            .send()
            .await
            .map_err(|e| SesError::from_sdk("GetReputationEntity", e))?;
        let entity = out.reputation_entity();
        Ok(ReputationState {
            policy: entity
                .and_then(|e| e.reputation_management_policy())
                .map(str::to_string),
            sending_status: entity
                .and_then(|e| e.sending_status_aggregate())
                .map(SendingStatus::as_str)
                .map(str::to_string),
        })
    }

    /// Applies `policy` (`standard`, `strict`, `none`) unless `current` is it already.
    pub async fn ensure_reputation_policy(
        &self,
        arn: &str,
        current: Option<&str>,
        policy: &str,
        dry_run: bool,
    ) -> Result<Change> {
        let wanted = self.policy_arn(policy);
        if current.is_some_and(|c| c == wanted || c.ends_with(&format!("/{policy}"))) {
            return Ok(Change::None);
        }
        if !dry_run {
            self.client
                .update_reputation_entity_policy()
                .reputation_entity_type(ReputationEntityType::Resource)
                .reputation_entity_reference(arn)
                .reputation_entity_policy(wanted)
                .send()
                .await
                .map_err(|e| SesError::from_sdk("UpdateReputationEntityPolicy", e))?;
        }
        Ok(Change::Updated)
    }

    /// The ARN of SES's managed reputation policy `name`.
    fn policy_arn(&self, name: &str) -> String {
        format!("arn:aws:ses:{}:aws:reputation-policy/{name}", self.region())
    }
}

/// The ARN of an identity or configuration set in the account and region of `tenant_arn`
/// (`arn:aws:ses:REGION:ACCOUNT:tenant/…`).
pub fn sibling_arn(tenant_arn: &str, kind: &str, name: &str) -> Option<String> {
    let mut parts = tenant_arn.splitn(6, ':');
    let (arn, partition, service, region, account) = (
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
    );
    (arn == "arn" && service == "ses")
        .then(|| format!("arn:{partition}:ses:{region}:{account}:{kind}/{name}"))
}

fn none_if_missing<T>(error: SesError) -> Result<Option<T>> {
    if error.is_not_found() {
        Ok(None)
    } else {
        Err(error)
    }
}

/// A create's outcome: `Created`, or `None` when SES says it exists already.
fn created_or_there<E>(result: SdkResult<E>, operation: &'static str) -> Result<Change>
where
    E: aws_sdk_sesv2::error::ProvideErrorMetadata + std::error::Error + 'static,
{
    settle(
        result,
        operation,
        Change::Created,
        SesError::is_already_exists,
    )
}

/// A delete's outcome: `Deleted`, or `None` when SES says it is gone already.
fn deleted_or_gone<E>(result: SdkResult<E>, operation: &'static str) -> Result<Change>
where
    E: aws_sdk_sesv2::error::ProvideErrorMetadata + std::error::Error + 'static,
{
    settle(result, operation, Change::Deleted, SesError::is_not_found)
}

type SdkResult<E> = std::result::Result<(), aws_sdk_sesv2::error::SdkError<E>>;

/// `done` on success; `Change::None` when the error says the change was not needed.
fn settle<E>(
    result: SdkResult<E>,
    operation: &'static str,
    done: Change,
    not_needed: fn(&SesError) -> bool,
) -> Result<Change>
where
    E: aws_sdk_sesv2::error::ProvideErrorMetadata + std::error::Error + 'static,
{
    match result {
        Ok(()) => Ok(done),
        Err(e) => {
            let error = SesError::from_sdk(operation, e);
            if not_needed(&error) {
                Ok(Change::None)
            } else {
                Err(error)
            }
        }
    }
}

fn missing(operation: &'static str, what: &str) -> SesError {
    SesError {
        kind: crate::SesErrorKind::Transient,
        operation,
        code: None,
        message: format!("{what} not found right after it was created"),
    }
}

#[cfg(test)]
mod tests {
    use super::sibling_arn;

    #[test]
    fn sibling_arns_share_the_tenants_account_and_region() {
        assert_eq!(
            sibling_arn(
                "arn:aws:ses:eu-west-1:123456789012:tenant/mm-t_1/tn-abc",
                "identity",
                "example.com"
            )
            .as_deref(),
            Some("arn:aws:ses:eu-west-1:123456789012:identity/example.com")
        );
        assert_eq!(sibling_arn("not-an-arn", "identity", "x"), None);
    }
}
