//! `mailmux webhook …`: a tenant's webhook endpoints (the secret shown once, at `add` and
//! `rotate`), their deliveries with every attempt, and replaying one. The same operations as
//! `/api/tenants/{id}/webhooks`, as the actor `cli`.

use clap::Subcommand;
use mailmux_admin::Actor;
use mailmux_admin::webhooks::{self, CreateWebhook, RotateWebhook, UpdateWebhook};

use super::{Context, all_pages, with_store};
use crate::output::Shown;

const WEBHOOK_COLUMNS: &[&str] = &["id", "kind", "url", "enabled", "created_at"];
const DELIVERY_COLUMNS: &[&str] = &[
    "id",
    "status",
    "attempts",
    "message_id",
    "last_error",
    "created_at",
];

#[derive(Subcommand)]
pub enum WebhookCommand {
    /// List a tenant's endpoints (never their secrets).
    List {
        #[arg(long)]
        tenant: String,
    },
    /// Add an endpoint; prints it with its signing secret (whsec_…), shown only this once.
    Add {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        url: String,
        /// inbound (mail of webhook receipt rules) or events (delivery events).
        #[arg(long, default_value = "inbound")]
        kind: String,
        /// events endpoints: an event type to send (repeat; none: all).
        #[arg(long = "event-type")]
        event_types: Vec<String>,
        /// Add it disabled (its deliveries wait until it is enabled).
        #[arg(long)]
        disabled: bool,
    },
    /// Show one endpoint.
    Show {
        #[arg(long)]
        tenant: String,
        /// The endpoint's id (`wh_…`).
        #[arg(long)]
        id: String,
    },
    /// Change an endpoint's URL, event types or enabled flag.
    Update {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        id: String,
        #[arg(long)]
        url: Option<String>,
        /// Replaces the event types (repeat).
        #[arg(long = "event-type")]
        event_types: Option<Vec<String>>,
        #[arg(long, action = clap::ArgAction::Set)]
        enabled: Option<bool>,
    },
    /// Delete an endpoint and its deliveries (refused while a receipt rule uses it).
    Delete {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        id: String,
    },
    /// A new signing secret (shown once); the old one keeps signing for --overlap-secs.
    Rotate {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        id: String,
        /// Seconds the old secret keeps signing beside the new one (default 86400).
        #[arg(long)]
        overlap_secs: Option<u64>,
    },
    /// An endpoint's deliveries, newest first, with every attempt.
    Deliveries {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        id: String,
    },
    /// Deliver once more (a dead delivery included).
    Replay {
        #[arg(long)]
        tenant: String,
        /// The endpoint's id (`wh_…`).
        #[arg(long)]
        id: String,
        /// The delivery's id (`msg_…`, its webhook-id header).
        #[arg(long)]
        delivery: String,
    },
}

pub async fn run(context: &Context, command: WebhookCommand) -> anyhow::Result<Shown> {
    let config = &context.config;
    let actor = Actor::cli();
    match command {
        WebhookCommand::List { tenant } => {
            let list =
                with_store(context, async |store| webhooks::list(store, &tenant).await).await?;
            Shown::list(list, "webhooks", WEBHOOK_COLUMNS)
        }
        WebhookCommand::Add {
            tenant,
            url,
            kind,
            event_types,
            disabled,
        } => {
            let request = CreateWebhook {
                url,
                kind,
                event_types,
                enabled: !disabled,
            };
            Shown::object(
                with_store(context, async |store| {
                    webhooks::create(store, config, &actor, &tenant, &request).await
                })
                .await?,
            )
        }
        WebhookCommand::Show { tenant, id } => Shown::object(
            with_store(context, async |store| {
                webhooks::show(store, &tenant, &id).await
            })
            .await?,
        ),
        WebhookCommand::Update {
            tenant,
            id,
            url,
            event_types,
            enabled,
        } => {
            let request = UpdateWebhook {
                url,
                event_types,
                enabled,
            };
            Shown::object(
                with_store(context, async |store| {
                    webhooks::update(store, config, &actor, &tenant, &id, &request).await
                })
                .await?,
            )
        }
        WebhookCommand::Delete { tenant, id } => {
            with_store(context, async |store| {
                webhooks::delete(store, &actor, &tenant, &id).await
            })
            .await?;
            Shown::object(serde_json::json!({"success": true}))
        }
        WebhookCommand::Rotate {
            tenant,
            id,
            overlap_secs,
        } => {
            let request = RotateWebhook { overlap_secs };
            Shown::object(
                with_store(context, async |store| {
                    webhooks::rotate(store, config, &actor, &tenant, &id, &request).await
                })
                .await?,
            )
        }
        WebhookCommand::Deliveries { tenant, id } => {
            let all = with_store(context, async |store| {
                all_pages(async |page| {
                    let list = webhooks::deliveries(store, &tenant, &id, page).await?;
                    Ok((list.deliveries, list.next_cursor))
                })
                .await
            })
            .await?;
            Shown::list(
                serde_json::json!({ "deliveries": all }),
                "deliveries",
                DELIVERY_COLUMNS,
            )
        }
        WebhookCommand::Replay {
            tenant,
            id,
            delivery,
        } => Shown::object(
            with_store(context, async |store| {
                webhooks::replay(store, &actor, &tenant, &id, &delivery).await
            })
            .await?,
        ),
    }
}
