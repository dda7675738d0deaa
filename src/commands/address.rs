//! `mailmux address …`: receipt rules (what the MX does with mail for an address of a tenant's
//! inbound domain), the CLI side of `/api/tenants/{id}/addresses`.

use mailmux_admin::Actor;
use mailmux_admin::addresses::{self, RuleRequest};

use super::{Context, with_store};
use crate::output::Shown;

const RULE_COLUMNS: &[&str] = &["id", "address", "action", "created_at"];

#[derive(clap::Subcommand)]
pub enum AddressCommand {
    /// Add a rule: `--address user@domain` (or `*@domain`, the catch-all) and its action.
    Create(RuleArgs),
    /// A tenant's rules, by domain, catch-all last.
    List {
        #[arg(long)]
        tenant: String,
    },
    /// One rule.
    Show {
        #[arg(long)]
        tenant: String,
        /// The rule's id (`r_…`).
        #[arg(long)]
        id: String,
    },
    /// Replace a rule (address, action and its settings).
    Update {
        /// The rule's id (`r_…`).
        #[arg(long)]
        id: String,
        #[command(flatten)]
        rule: RuleArgs,
    },
    /// Remove a rule.
    Delete {
        #[arg(long)]
        tenant: String,
        /// The rule's id (`r_…`).
        #[arg(long)]
        id: String,
    },
}

/// A whole rule, as the REST body has it.
#[derive(clap::Args)]
pub struct RuleArgs {
    #[arg(long)]
    pub tenant: String,
    /// `user@domain`, or `*@domain` for the domain's catch-all.
    #[arg(long)]
    pub address: String,
    /// store, reject, forward or list.
    #[arg(long)]
    pub action: String,
    /// reject: the text of the 550.
    #[arg(long)]
    pub reject_text: Option<String>,
    /// forward: where the mail goes; comma-separated or repeated.
    #[arg(long, value_delimiter = ',')]
    pub forward_to: Vec<String>,
    /// list (feature mailing_lists): the members; comma-separated or repeated.
    #[arg(long, value_delimiter = ',')]
    pub members: Vec<String>,
}

impl RuleArgs {
    fn request(&self) -> RuleRequest {
        let given = |list: &Vec<String>| (!list.is_empty()).then(|| list.clone());
        RuleRequest {
            address: self.address.clone(),
            action: self.action.clone(),
            reject_text: self.reject_text.clone(),
            webhook_id: None,
            forward_to: given(&self.forward_to),
            members: given(&self.members),
        }
    }
}

pub async fn run(context: &Context, command: AddressCommand) -> anyhow::Result<Shown> {
    match command {
        AddressCommand::Create(rule) => {
            let request = rule.request();
            let view = with_store(context, async |store| {
                addresses::create(store, &Actor::cli(), &rule.tenant, &request).await
            })
            .await?;
            Shown::object(view)
        }
        AddressCommand::List { tenant } => {
            let list =
                with_store(context, async |store| addresses::list(store, &tenant).await).await?;
            Shown::list(list, "addresses", RULE_COLUMNS)
        }
        AddressCommand::Show { tenant, id } => {
            let view = with_store(context, async |store| {
                addresses::show(store, &tenant, &id).await
            })
            .await?;
            Shown::object(view)
        }
        AddressCommand::Update { id, rule } => {
            let request = rule.request();
            let view = with_store(context, async |store| {
                addresses::update(store, &Actor::cli(), &rule.tenant, &id, &request).await
            })
            .await?;
            Shown::object(view)
        }
        AddressCommand::Delete { tenant, id } => {
            with_store(context, async |store| {
                addresses::delete(store, &Actor::cli(), &tenant, &id).await
            })
            .await?;
            Shown::object(serde_json::json!({"success": true, "id": id}))
        }
    }
}
