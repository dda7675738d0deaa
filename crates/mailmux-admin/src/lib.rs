//! mailmux-admin: the control plane. The REST API (axum) over the store: tenants, domains with
//! their DKIM keys (and their rotation) and DNS verification, SMTP credentials, tenant API keys, the queue as seen
//! by a tenant, receipt rules and stored inbound mail, webhook endpoints and their deliveries, usage, the audit log, `/metrics`,
//! `/healthz` and `/openapi.json`.
//!
//! Every resource module holds its operations as plain functions over the store (the CLI calls
//! the same ones) and the thin handlers that put HTTP around them. Errors become HTTP in one
//! place, `error.rs`; authentication happens in one place, `auth.rs`.
//!
//! Resource files never import each other; what several share sits below them: `lookup.rs`
//! (the tenant or domain a request names), `views.rs` (views several show), `audit_log.rs`
//! (writing the audit log), `provision.rs` (adding a domain with its key), `dns/` (the
//! DNS-record pipeline), `rule_targets.rs` (forward and list destinations) and `jobs.rs`
//! (background work). SES provisioning itself is mailmux-ses's; `ses.rs` shows its state and
//! runs it on request.

pub mod addresses;
pub mod api_keys;
pub mod audit;
pub mod audit_log;
pub mod auth;
pub mod compose;
pub mod credentials;
pub mod dkim;
pub mod dkim_rotation;
pub mod dns;
pub mod domains;
pub mod error;
mod extract;
pub mod features;
mod health;
pub mod inbound;
pub mod jobs;
pub mod lookup;
pub mod messages;
mod metrics;
mod openapi;
pub mod pagination;
pub mod postmaster;
pub mod provision;
pub mod return_path;
mod rule_targets;
pub mod send;
pub mod ses;
mod state;
pub mod tenants;
pub mod usage;
pub mod views;
pub mod webhooks;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::Uri;
use axum::{Extension, Router};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use auth::{Actor, Principal};
pub use error::{AdminError, Result};
pub use jobs::{dkim_rotation_checks, domain_rechecks, run_requested_ses_sync};
pub use state::AdminState;

/// Largest request body accepted (413 beyond): every request here is a small JSON object.
pub const BODY_LIMIT: usize = 1024 * 1024;

/// The routes: `(protected, public)`. This one list builds both the router and the OpenAPI
/// document (utoipa-axum's `routes!` registers a handler and its `#[utoipa::path]` together).
fn routes() -> (OpenApiRouter<AdminState>, OpenApiRouter<AdminState>) {
    let protected = OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(tenants::list_tenants, tenants::create_tenant))
        .routes(routes!(
            tenants::show_tenant,
            tenants::update_tenant,
            tenants::delete_tenant
        ))
        .routes(routes!(usage::tenant_usage))
        .routes(routes!(domains::list_domains, domains::add_domain))
        .routes(routes!(
            domains::show_domain,
            domains::update_domain,
            domains::delete_domain
        ))
        .routes(routes!(domains::verify_domain))
        .routes(routes!(
            return_path::show_return_path,
            return_path::set_return_path,
            return_path::delete_return_path
        ))
        .routes(routes!(return_path::verify_return_path))
        .routes(routes!(dkim_rotation::rotate_dkim))
        .routes(routes!(
            credentials::list_credentials,
            credentials::create_credential
        ))
        .routes(routes!(
            credentials::show_credential,
            credentials::update_credential,
            credentials::revoke_credential
        ))
        .routes(routes!(
            addresses::list_addresses,
            addresses::create_address
        ))
        .routes(routes!(
            addresses::show_address,
            addresses::update_address,
            addresses::delete_address
        ))
        .routes(routes!(inbound::list_inbound))
        .routes(routes!(inbound::show_inbound))
        .routes(routes!(inbound::raw_inbound))
        .routes(routes!(postmaster::list_postmaster))
        .routes(routes!(postmaster::show_postmaster))
        .routes(routes!(postmaster::raw_postmaster))
        .routes(routes!(webhooks::list_webhooks, webhooks::create_webhook))
        .routes(routes!(
            webhooks::show_webhook,
            webhooks::update_webhook,
            webhooks::delete_webhook
        ))
        .routes(routes!(webhooks::rotate_webhook))
        .routes(routes!(webhooks::list_deliveries))
        .routes(routes!(webhooks::replay_delivery))
        .routes(routes!(api_keys::list_api_keys, api_keys::create_api_key))
        .routes(routes!(api_keys::revoke_api_key))
        .routes(routes!(ses::show_ses))
        .routes(routes!(ses::sync_ses))
        .routes(routes!(send::send))
        .routes(routes!(messages::list_messages))
        .routes(routes!(messages::show_message))
        .routes(routes!(audit::tenant_audit))
        .routes(routes!(audit::all_audit))
        .routes(routes!(metrics::metrics))
        .routes(routes!(openapi::openapi_json));
    let public = OpenApiRouter::new().routes(routes!(health::healthz));
    (protected, public)
}

/// The OpenAPI 3 document of every route [`router`] serves.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let (protected, public) = routes();
    protected.merge(public).into_openapi()
}

/// The admin listener's routes.
pub fn router(state: AdminState) -> Router {
    let (protected, public) = routes();
    // The token check wraps only the protected routes: a route is public by being listed in
    // `public`, never by a path test inside the middleware.
    let protected = protected.layer(axum::middleware::from_fn_with_state(
        state.clone(),
        auth::authenticate,
    ));
    let (router, doc) = protected.merge(public).split_for_parts();
    router
        .fallback(|uri: Uri| async move { AdminError::NoRoute(uri.path().to_string()) })
        .method_not_allowed_fallback(|| async { AdminError::MethodNotAllowed })
        .layer(Extension(openapi::Document(Arc::new(doc))))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}
