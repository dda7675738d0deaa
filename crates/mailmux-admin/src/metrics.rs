//! `GET /metrics` (Prometheus text format, operator only): the in-process counters of the SMTP
//! listeners and delivery (handed in as [`mailmux_core::MetricSource`]s), then numbers counted
//! from the database, which are exact across restarts and identical on every node.

use std::fmt::Write;

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};

use crate::auth::Principal;
use crate::error::{ErrorBody, Result};
use crate::state::AdminState;

/// A per-tenant metric family: name, type, help and which counter it shows.
type Family = (
    &'static str,
    &'static str,
    &'static str,
    fn(&mailmux_store::TenantCounters) -> u64,
);

/// Renders every metric family.
pub async fn render(state: &AdminState) -> Result<String> {
    let mut out = String::new();
    for source in &state.metric_sources {
        source.render(&mut out);
    }
    let counters = state.store.tenant_counters().await?;
    let families: [Family; 5] = [
        (
            "mailmux_messages_accepted_total",
            "counter",
            "Messages accepted from the tenant (DSNs excluded).",
            |c| c.accepted,
        ),
        (
            "mailmux_recipients_delivered_total",
            "counter",
            "Recipients accepted by the next hop.",
            |c| c.delivered,
        ),
        (
            "mailmux_recipients_deferred_total",
            "counter",
            "Temporary delivery failures (one per recipient per attempt).",
            |c| c.deferred,
        ),
        (
            "mailmux_recipients_bounced_total",
            "counter",
            "Recipients that failed permanently.",
            |c| c.bounced,
        ),
        (
            "mailmux_tenant_queue_depth",
            "gauge",
            "Messages of the tenant waiting for delivery.",
            |c| c.queued,
        ),
    ];
    for (name, kind, help, value) in families {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (tenant, c) in &counters {
            let _ = writeln!(
                out,
                "{name}{{tenant=\"{}\"}} {}",
                escape_label(tenant),
                value(c)
            );
        }
    }
    mailmux_core::metrics::render_single(
        &mut out,
        "mailmux_queue_depth",
        "gauge",
        "Messages waiting for delivery, all tenants.",
        counters.values().map(|c| c.queued).sum::<u64>(),
    );
    Ok(out)
}

/// Label values escape backslash, double quote and newline (exposition format).
fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Prometheus metrics (operator only).
#[utoipa::path(
    get, path = "/metrics", tag = "operations",
    responses(
        (status = 200, description = "Prometheus text format", content_type = "text/plain", body = String),
        (status = 403, body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn metrics(State(state): State<AdminState>, principal: Principal) -> Result<Response> {
    principal.require_operator("/metrics")?;
    let body = render(&state).await?;
    Ok((
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        body,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    #[test]
    fn label_values_are_escaped() {
        assert_eq!(super::escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
