//! `GET /openapi.json`: the OpenAPI 3 document, generated from the handlers' own annotations
//! and types. The router and this document are built from the same `routes!` list in
//! [`crate::routes`], so a route cannot be served without being documented.

use std::sync::Arc;

use axum::{Extension, Json};
use utoipa::Modify;
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

use crate::error::ErrorBody;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "mailmux admin API",
        description = "Tenants, domains, credentials, API keys, messages, usage and audit of a \
                       mailmux relay. Authenticate with `Authorization: Bearer <token>`: the \
                       operator token sees every tenant, a tenant API key only its own (anything \
                       else answers 404). Errors are `{\"error\": {\"code\", \"message\"}}`.",
    ),
    modifiers(&BearerAuth),
    components(schemas(ErrorBody)),
    tags(
        (name = "tenants", description = "Tenants, their limits, features and usage"),
        (name = "domains", description = "Sending domains, DKIM keys and DNS verification"),
        (name = "credentials", description = "SMTP credentials"),
        (name = "api-keys", description = "Tenant-scoped REST API keys"),
        (name = "messages", description = "The queue and delivery history"),
        (name = "inbound", description = "Receipt rules (addresses) and stored inbound mail"),
        (name = "webhooks", description = "Webhook endpoints (Standard Webhooks), deliveries, replay"),
        (name = "ses", description = "The tenant's AWS SES tenant and its provisioning"),
        (name = "send", description = "The HTTP send API (a tenant API key)"),
        (name = "audit", description = "Who changed what"),
        (name = "operations", description = "Health, metrics and this document"),
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "The operator token (admin.token) or a tenant API key (mmk_…)",
                    ))
                    .build(),
            ),
        );
    }
}

/// The document, shared by the router.
#[derive(Clone)]
pub struct Document(pub Arc<utoipa::openapi::OpenApi>);

/// This API's OpenAPI 3 document.
#[utoipa::path(
    get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "OpenAPI 3 document", content_type = "application/json")),
    security(("bearer" = []))
)]
pub async fn openapi_json(
    _principal: crate::auth::Principal,
    Extension(doc): Extension<Document>,
) -> Json<utoipa::openapi::OpenApi> {
    Json(doc.0.as_ref().clone())
}
