//! `mailmux credential …`: SMTP credentials, created (the password shown once), listed, revoked by id or username.

use mailmux_admin::{Actor, credentials};

use super::{Context, all_pages, with_store};
use crate::output::Shown;

const CREDENTIAL_COLUMNS: &[&str] = &[
    "id",
    "username",
    "created_at",
    "revoked_at",
    "rate_per_second",
    "rate_per_minute",
];

pub async fn create(context: &Context, tenant_id: &str) -> anyhow::Result<Shown> {
    let credential = with_store(context, async |store| {
        credentials::create(store, &Actor::cli(), tenant_id).await
    })
    .await?;
    Shown::object(credential)
}

pub async fn list(context: &Context, tenant_id: &str) -> anyhow::Result<Shown> {
    let all = with_store(context, async |store| {
        all_pages(async |page| {
            let list = credentials::list(store, tenant_id, page).await?;
            Ok((list.credentials, list.next_cursor))
        })
        .await
    })
    .await?;
    Shown::list(
        serde_json::json!({ "credentials": all }),
        "credentials",
        CREDENTIAL_COLUMNS,
    )
}

/// Which credential `credential revoke` names.
pub enum CredentialRef {
    Id(String),
    Username(String),
}

pub async fn revoke(
    context: &Context,
    tenant_id: Option<&str>,
    which: CredentialRef,
) -> anyhow::Result<Shown> {
    let revoked = with_store(context, async |store| {
        let (tenant_id, id) = match which {
            CredentialRef::Id(id) => {
                let tenant = tenant_id.ok_or_else(|| {
                    mailmux_admin::AdminError::Invalid(
                        "--tenant is needed with --id (or name the credential by --username)"
                            .into(),
                    )
                })?;
                (tenant.to_string(), id)
            }
            CredentialRef::Username(username) => {
                let not_found = || {
                    mailmux_admin::AdminError::NotFound(format!("credential {username} not found"))
                };
                let found = store
                    .find_credential(&username)
                    .await?
                    .ok_or_else(not_found)?;
                if tenant_id.is_some_and(|t| t != found.tenant_id) {
                    return Err(not_found());
                }
                (found.tenant_id, found.id)
            }
        };
        credentials::revoke(store, &Actor::cli(), &tenant_id, &id).await
    })
    .await?;
    Shown::object(revoked)
}
