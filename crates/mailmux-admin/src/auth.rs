//! Who is calling: the operator (one bearer token, sees everything) or a tenant API key (sees
//! its own tenant only). The middleware authenticates every protected route and leaves a
//! [`Principal`] in the request; handlers ask it for a scope before touching anything.

use axum::extract::{FromRequestParts, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use mailmux_core::credential::{hash_secret, verify_secret};

use crate::error::{AdminError, Result};
use crate::state::AdminState;

/// Prefix of tenant API keys: `mmk_<key id>.<secret>`. The id finds the row; the secret is
/// compared with its stored hash in constant time.
pub const API_KEY_PREFIX: &str = "mmk_";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    Operator,
    TenantKey { key_id: String, tenant_id: String },
}

impl Principal {
    /// Allows access to `tenant_id`'s resources. For another tenant's key the answer is the
    /// same 404 a tenant that does not exist gets: a key learns nothing about other tenants.
    pub fn scope(&self, tenant_id: &str) -> Result<()> {
        match self {
            Principal::Operator => Ok(()),
            Principal::TenantKey { tenant_id: own, .. } if own == tenant_id => Ok(()),
            Principal::TenantKey { .. } => Err(tenant_not_found(tenant_id)),
        }
    }

    /// Operator-only actions (creating tenants, changing limits, the global audit log…). Call
    /// after [`Principal::scope`] where a tenant is involved, so other tenants stay 404.
    pub fn require_operator(&self, what: &str) -> Result<()> {
        match self {
            Principal::Operator => Ok(()),
            Principal::TenantKey { .. } => Err(AdminError::Forbidden(format!(
                "{what} needs the operator token"
            ))),
        }
    }

    pub fn actor(&self) -> Actor {
        match self {
            Principal::Operator => Actor::operator(),
            Principal::TenantKey { key_id, .. } => Actor(format!("api_key:{key_id}")),
        }
    }

    /// The tenant a key is bound to (None for the operator).
    pub fn tenant(&self) -> Option<&str> {
        match self {
            Principal::Operator => None,
            Principal::TenantKey { tenant_id, .. } => Some(tenant_id),
        }
    }
}

/// The message every "no such tenant" answer carries, whether it exists or not.
pub fn tenant_not_found(tenant_id: &str) -> AdminError {
    AdminError::NotFound(format!("tenant {tenant_id} not found"))
}

/// Who made a change, as the audit log records it: `operator`, `api_key:<id>`, `cli`, `system`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor(pub String);

impl Actor {
    pub fn operator() -> Actor {
        Actor("operator".into())
    }
    pub fn cli() -> Actor {
        Actor("cli".into())
    }
    /// mailmux itself (the daily DNS re-check).
    pub fn system() -> Actor {
        Actor("system".into())
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = AdminError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self> {
        // Present on every route behind `authenticate`; a handler mounted outside it by
        // mistake refuses rather than serving anonymously.
        parts
            .extensions
            .get::<Principal>()
            .cloned()
            .ok_or(AdminError::Unauthorized)
    }
}

/// Middleware on every route but `/healthz`: 401 without a valid token.
pub async fn authenticate(
    State(state): State<AdminState>,
    mut request: Request,
    next: Next,
) -> Response {
    match principal_for(&state, bearer_token(&request)).await {
        Ok(principal) => {
            request.extensions_mut().insert(principal);
            next.run(request).await
        }
        Err(error) => error.into_response(),
    }
}

fn bearer_token(request: &Request) -> Option<&str> {
    let value = request.headers().get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

async fn principal_for(state: &AdminState, token: Option<&str>) -> Result<Principal> {
    let token = token.ok_or(AdminError::Unauthorized)?;
    // Compared as SHA-256 digests in constant time: neither the token's length nor a common
    // prefix shows in the timing. An empty configured token matches nothing.
    if !state.operator_token.is_empty()
        && verify_secret(token, &hash_secret(state.operator_token.as_str()))
    {
        return Ok(Principal::Operator);
    }
    let Some((key_id, secret)) = token
        .strip_prefix(API_KEY_PREFIX)
        .and_then(|rest| rest.split_once('.'))
    else {
        return Err(AdminError::Unauthorized);
    };
    let key = state
        .store
        .get_api_key(key_id)
        .await?
        .filter(|key| key.revoked_at.is_none())
        .ok_or(AdminError::Unauthorized)?;
    if !verify_secret(secret, &key.secret_hash) {
        return Err(AdminError::Unauthorized);
    }
    let tenant = state
        .store
        .get_tenant(&key.tenant_id)
        .await?
        .ok_or(AdminError::Unauthorized)?;
    // Checked at every request, not only when the key was made: an operator who turns
    // api_access off shuts every key of the tenant out at once.
    if !tenant.features.api_access {
        return Err(AdminError::Forbidden(format!(
            "tenant {} does not have the api_access feature",
            tenant.id
        )));
    }
    Ok(Principal::TenantKey {
        key_id: key.id,
        tenant_id: key.tenant_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_hides_other_tenants_behind_404() {
        let key = Principal::TenantKey {
            key_id: "k1".into(),
            tenant_id: "t_a".into(),
        };
        assert!(key.scope("t_a").is_ok());
        let err = key.scope("t_b").unwrap_err();
        assert_eq!(err.status(), axum::http::StatusCode::NOT_FOUND);
        // Same text as for a tenant that does not exist.
        assert_eq!(err.to_string(), tenant_not_found("t_b").to_string());
        assert!(Principal::Operator.scope("t_b").is_ok());
        assert_eq!(
            key.require_operator("x").unwrap_err().status(),
            axum::http::StatusCode::FORBIDDEN
        );
        assert_eq!(key.actor(), Actor("api_key:k1".into()));
    }
}
