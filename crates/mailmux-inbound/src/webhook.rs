//! The hand-off of an accepted message to the tenant's webhook endpoints: one delivery per
//! (message, endpoint) its `webhook` rules name, each with the JSON payload the endpoint will
//! receive. [`crate::Inbound::accept`] writes them in the same commit as the message, so a
//! message the MX answered 250 for is handed over even if the process dies right after.
//!
//! The payload is the stored message's parsed view (`parsed.rs`: headers, subject, from/to,
//! text, HTML, attachment metadata) with the envelope, the verdicts, the rule, and the raw
//! message: inline as base64 up to `webhooks.inline_raw_max_bytes`, else a `raw_url` to fetch
//! with the tenant's API key (`GET /api/tenants/{id}/inbound/{message}/raw`).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use mailmux_core::Config;
use mailmux_store::{InboundMessage, NewWebhookDelivery};
use serde_json::{Value, json};

use crate::Accepted;
use crate::parsed;

/// What building payloads needs from the configuration, read once at start-up.
#[derive(Debug, Clone)]
pub struct PayloadSettings {
    /// Raw messages up to this many bytes are inlined.
    pub inline_raw_max_bytes: u64,
    /// The REST API's base URL as tenants reach it, for `raw_url`.
    pub api_base_url: String,
}

impl PayloadSettings {
    pub fn from_config(config: &Config) -> PayloadSettings {
        PayloadSettings {
            inline_raw_max_bytes: config.webhooks.inline_raw_max_bytes,
            api_base_url: config.admin_public_url(),
        }
    }
}

/// The deliveries of `message` (one tenant's copy) to the endpoints its recipients' `webhook`
/// rules name: one per endpoint, whatever the number of recipients routed to it.
pub fn deliveries(
    message: &InboundMessage,
    recipients: &[&Accepted],
    settings: &PayloadSettings,
) -> Vec<NewWebhookDelivery> {
    let mut endpoints: Vec<&str> = recipients
        .iter()
        .filter_map(|r| r.webhook_id.as_deref())
        .collect();
    endpoints.sort_unstable();
    endpoints.dedup();
    if endpoints.is_empty() {
        return Vec::new();
    }
    // Parsed once, shared by every endpoint's payload.
    let view = parsed::parsed(message);
    endpoints
        .into_iter()
        .map(|endpoint| {
            let routed: Vec<&Accepted> = recipients
                .iter()
                .copied()
                .filter(|r| r.webhook_id.as_deref() == Some(endpoint))
                .collect();
            NewWebhookDelivery {
                id: mailmux_webhooks::new_delivery_id(),
                webhook_id: endpoint.to_string(),
                tenant_id: message.tenant_id.clone(),
                event_type: mailmux_webhooks::EVENT_INBOUND_MESSAGE.to_string(),
                message_id: Some(message.id.clone()),
                payload: payload(message, &view, &routed, endpoint, settings).to_string(),
                created_at: message.received_at,
            }
        })
        .collect()
}

/// The JSON one endpoint receives for `message`.
fn payload(
    message: &InboundMessage,
    view: &Value,
    routed: &[&Accepted],
    endpoint: &str,
    settings: &PayloadSettings,
) -> Value {
    let mut out = view.clone();
    let recipients: Vec<Value> = routed
        .iter()
        .map(|r| json!({"address": r.address, "rule_id": r.rule_id, "tag": r.tag}))
        .collect();
    out["type"] = json!(mailmux_webhooks::EVENT_INBOUND_MESSAGE);
    out["tenant_id"] = json!(message.tenant_id);
    out["envelope"] = json!({"mail_from": message.mail_from, "recipients": recipients});
    // The recipients this endpoint gets (the listing view's `recipients` would show every
    // recipient of the tenant, other rules' included).
    out["recipients"] = json!(recipients);
    out["rule"] = json!({
        "id": routed.first().and_then(|r| r.rule_id.clone()),
        "action": "webhook",
        "webhook_id": endpoint,
    });
    if message.raw.len() as u64 <= settings.inline_raw_max_bytes {
        out["raw"] = json!(STANDARD.encode(&message.raw));
    } else {
        out["raw"] = Value::Null;
        out["raw_url"] = json!(format!(
            "{}/api/tenants/{}/inbound/{}/raw",
            settings.api_base_url, message.tenant_id, message.id
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accepted(address: &str, webhook: Option<&str>, tag: Option<&str>) -> Accepted {
        Accepted {
            address: address.into(),
            tenant_id: "t_1".into(),
            rule_id: Some(format!("r_{address}")),
            tag: tag.map(str::to_string),
            bounce: false,
            dmarc_reject: false,
            webhook_id: webhook.map(str::to_string),
            forwarding: None,
            operator: false,
        }
    }

    fn message(raw: &[u8]) -> InboundMessage {
        InboundMessage {
            id: "m_1".into(),
            tenant_id: "t_1".into(),
            mail_from: "ann@example.org".into(),
            recipients: "[]".into(),
            size: raw.len() as u64,
            raw: raw.to_vec(),
            received_at: 1_700_000_000_000,
            verdicts: Some(r#"{"spf":{"result":"pass"}}"#.into()),
        }
    }

    #[test]
    fn one_delivery_per_endpoint_with_envelope_rule_verdicts_and_raw() {
        let raw = b"From: Ann <ann@example.org>\r\nSubject: Hi\r\n\r\nHello\r\n";
        let a = accepted("sales+vip@acme.test", Some("wh_a"), Some("vip"));
        let b = accepted("info@acme.test", Some("wh_a"), None);
        let c = accepted("ops@acme.test", Some("wh_b"), None);
        let stored = accepted("keep@acme.test", None, None);
        let settings = PayloadSettings {
            inline_raw_max_bytes: 1024,
            api_base_url: "https://mail.example".into(),
        };
        let out = deliveries(&message(raw), &[&a, &b, &c, &stored], &settings);
        assert_eq!(out.len(), 2);
        let first: Value = serde_json::from_str(&out[0].payload).unwrap();
        assert_eq!(out[0].webhook_id, "wh_a");
        assert!(out[0].id.starts_with("msg_"));
        assert_ne!(out[0].id, out[1].id);
        assert_eq!(first["type"], "inbound.message");
        assert_eq!(first["id"], "m_1");
        assert_eq!(first["subject"], "Hi");
        assert_eq!(first["envelope"]["mail_from"], "ann@example.org");
        assert_eq!(first["envelope"]["recipients"].as_array().unwrap().len(), 2);
        assert_eq!(first["envelope"]["recipients"][0]["tag"], "vip");
        assert_eq!(first["rule"]["webhook_id"], "wh_a");
        assert_eq!(first["verdicts"]["spf"]["result"], "pass");
        assert_eq!(
            STANDARD.decode(first["raw"].as_str().unwrap()).unwrap(),
            raw.to_vec()
        );
        assert!(deliveries(&message(raw), &[&stored], &settings).is_empty());
        // Too large to inline: a link to the raw bytes instead.
        let small = PayloadSettings {
            inline_raw_max_bytes: 10,
            ..settings
        };
        let linked: Value =
            serde_json::from_str(&deliveries(&message(raw), &[&c], &small)[0].payload).unwrap();
        assert_eq!(linked["raw"], Value::Null);
        assert_eq!(
            linked["raw_url"],
            "https://mail.example/api/tenants/t_1/inbound/m_1/raw"
        );
    }
}
