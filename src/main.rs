//! `mailmux`: the relay's binary. The CLI (clap) for operators, and `serve`, which wires the
//! store, queue, SMTP listeners, delivery workers and admin API together.

mod commands;
mod health;
mod output;
mod serve;
mod tls;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use mailmux_admin::dkim::KeyType;
use mailmux_core::{Config, Tier};

use crate::commands::{ConfigSource, Context};
use crate::output::Format;

#[derive(Parser)]
#[command(
    name = "mailmux",
    version,
    about = "A self-hosted, multi-tenant SMTP relay"
)]
struct Cli {
    /// Configuration file (TOML). Without it: $MAILMUX_CONFIG, then ./mailmux.toml, then the
    /// embedded defaults; every key can also be set with MAILMUX_<SECTION>__<KEY>.
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    /// How commands print their answer: json (default; the REST API's shapes) or table.
    #[arg(long, global = true, value_enum, default_value_t = Format::Json)]
    output: Format,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the SMTP listeners, the admin API and the queue workers (applies migrations first,
    /// creating the database if there is none).
    Serve {
        /// Log lines as text (no colours unless stderr is a terminal) or as JSON, one object
        /// per line.
        #[arg(long, value_enum, env = "MAILMUX_LOG_FORMAT", default_value_t = serve::LogFormat::Text)]
        log_format: serve::LogFormat,
    },
    /// Apply database migrations and exit (creates the database if there is none).
    Migrate,
    /// Ask the running server's /healthz (at admin.listen); exit 0 when healthy, 1 otherwise.
    /// For container health checks: the image has no curl.
    Health {
        /// Seconds to wait for the answer.
        #[arg(long, default_value_t = 5)]
        timeout_secs: u64,
    },
    /// Manage tenants.
    Tenant {
        #[command(subcommand)]
        command: TenantCommand,
    },
    /// Manage SMTP credentials.
    Credential {
        #[command(subcommand)]
        command: CredentialCommand,
    },
    /// Manage domains.
    Domain {
        #[command(subcommand)]
        command: DomainCommand,
    },
    /// Manage tenant API keys (for the REST API and the HTTP send API).
    ApiKey {
        #[command(subcommand)]
        command: ApiKeyCommand,
    },
    /// Manage receipt rules: what the MX does with mail for an address (store, reject,
    /// forward, list).
    Address {
        #[command(subcommand)]
        command: commands::address::AddressCommand,
    },
    /// Look at a tenant's messages: per-recipient status, attempts, last reply.
    Message {
        #[command(subcommand)]
        command: MessageCommand,
    },
    /// Manage webhook endpoints (Standard Webhooks), their deliveries and replays.
    Webhook {
        #[command(subcommand)]
        command: commands::webhook::WebhookCommand,
    },
    /// Read the audit log.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// The operator's postmaster mailbox: mail to the bare <postmaster> while
    /// inbound.postmaster is unset.
    Postmaster {
        #[command(subcommand)]
        command: PostmasterCommand,
    },
    /// AWS SES tenants of tenants on the `ses` transport.
    Ses {
        #[command(subcommand)]
        command: SesCommand,
    },
}

#[derive(Subcommand)]
enum PostmasterCommand {
    /// The mailbox, newest first, a page at a time.
    List {
        /// Messages per page, 1-500.
        #[arg(long, default_value_t = mailmux_admin::pagination::DEFAULT_LIMIT)]
        limit: u32,
        /// `next_cursor` of the previous page.
        #[arg(long)]
        cursor: Option<String>,
    },
    /// One message, parsed.
    Show {
        #[arg(long)]
        id: String,
    },
}

#[derive(Subcommand)]
enum SesCommand {
    /// Provision the tenant's SES side now (idempotent); prints its SES state.
    Sync {
        #[arg(long)]
        tenant: String,
    },
    /// Create SES tenants for existing tenants on the `ses` transport and associate their
    /// domains; per tenant what it did, a progress line on stderr. Safe to re-run and to
    /// interrupt.
    Backfill {
        /// Only say what would be done.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Subcommand)]
enum TenantCommand {
    /// Create a tenant; prints it as JSON (with its `id`).
    Create {
        #[arg(long)]
        name: String,
        #[arg(long, default_value = "free", value_parser = parse_tier)]
        tier: Tier,
    },
    /// List every tenant (`{"tenants": [...]}`).
    List,
    /// Show one tenant with its usage.
    Show {
        #[arg(long)]
        tenant: String,
    },
    /// Change a tenant's limits, tier, status, enabled flag, transport or features; prints the
    /// tenant. A new tier brings its default limits and features, except those set in the
    /// same command.
    Update(Box<commands::tenant::TenantUpdateArgs>),
    /// Delete a tenant with its domains, keys and credentials. Refused while it has queued
    /// mail, unless --force (which drops that mail).
    Delete {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        force: bool,
    },
}

#[derive(Subcommand)]
enum CredentialCommand {
    /// Create an SMTP credential; prints `username` and `password` (shown only this once).
    Create {
        #[arg(long)]
        tenant: String,
    },
    /// List a tenant's credentials (never their passwords).
    List {
        #[arg(long)]
        tenant: String,
    },
    /// Revoke an SMTP credential (refused at its next AUTH, within a second); prints it.
    Revoke {
        /// The tenant; needed with --id, checked when given with --username.
        #[arg(long)]
        tenant: Option<String>,
        /// The credential's id (`c_…`).
        #[arg(
            long,
            required_unless_present = "username",
            conflicts_with = "username"
        )]
        id: Option<String>,
        /// The credential's SMTP username (`mm_…`).
        #[arg(long)]
        username: Option<String>,
    },
}

#[derive(Subcommand)]
enum DomainCommand {
    /// Add a domain to a tenant; prints the DNS records to publish. With --verified on a
    /// domain the tenant already has, marks it verified and keeps its DKIM key.
    Add {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        domain: String,
        /// Operator override: treat the domain as verified without checking DNS.
        #[arg(long)]
        verified: bool,
        /// DKIM key type: rsa (2048 bits, default) or ed25519.
        #[arg(long, default_value = "rsa", value_parser = parse_key_type)]
        key_type: KeyType,
        /// Make mailmux the domain's MX (receipt rules apply; the records include the MX).
        #[arg(long)]
        inbound: bool,
    },
    /// Change a domain: `--inbound true|false` turns mailmux as its MX on or off,
    /// `--dmarc-reject true|false` refuses inbound mail failing DMARC under p=reject.
    Update {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        domain: String,
        #[arg(long, action = clap::ArgAction::Set)]
        inbound: Option<bool>,
        /// Refuse inbound mail failing DMARC under the sender domain's p=reject (550 5.7.1).
        #[arg(long, action = clap::ArgAction::Set)]
        dmarc_reject: Option<bool>,
    },
    /// List a tenant's domains with their records.
    List {
        #[arg(long)]
        tenant: String,
    },
    /// Show one domain with its records and their last status.
    Show {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        domain: String,
    },
    /// Look the domain's records up in DNS now; prints the per-record status.
    Verify {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        domain: String,
    },
    /// Remove a domain and its DKIM keys; mail from it is refused from then on.
    Delete {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        domain: String,
    },
    /// Start a DKIM key rotation: a new key under a new selector; prints the record to
    /// publish. Signing switches to the new key once its record is found (`domain verify`, or
    /// serve's background check); the old record is then listed as retiring for a while.
    RotateDkim {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        domain: String,
        /// The new key's type: rsa or ed25519 (default: the type of the key in use).
        #[arg(long, value_parser = parse_key_type)]
        key_type: Option<KeyType>,
    },
}

#[derive(Subcommand)]
enum ApiKeyCommand {
    /// Create an API key (the tenant needs api_access); prints the key, shown only this once.
    Create {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        name: Option<String>,
    },
    /// List a tenant's API keys (never the keys themselves).
    List {
        #[arg(long)]
        tenant: String,
    },
    /// Revoke an API key; it is refused from its next request.
    Revoke {
        #[arg(long)]
        tenant: String,
        /// The key's id (`k_…`).
        #[arg(long)]
        id: String,
    },
}

#[derive(Subcommand)]
enum MessageCommand {
    /// A tenant's messages, newest first, a page at a time.
    List(commands::message::MessageListArgs),
    /// One message with its delivery history.
    Show {
        #[arg(long)]
        tenant: String,
        /// The queue id (as in "250 2.0.0 Ok: queued as <id>").
        #[arg(long)]
        id: String,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// The audit log, newest first, a page at a time: everything, or one tenant's.
    List {
        #[arg(long)]
        tenant: Option<String>,
        /// Entries per page, 1-500.
        #[arg(long, default_value_t = mailmux_admin::pagination::DEFAULT_LIMIT)]
        limit: u32,
        /// `next_cursor` of the previous page.
        #[arg(long)]
        cursor: Option<String>,
    },
}

fn parse_key_type(value: &str) -> Result<KeyType, String> {
    match value {
        "rsa" => Ok(KeyType::Rsa),
        "ed25519" => Ok(KeyType::Ed25519),
        _ => Err(format!("unknown key type {value:?} (rsa, ed25519)")),
    }
}

pub(crate) fn parse_tier(value: &str) -> Result<Tier, String> {
    Tier::parse(value)
        .ok_or_else(|| format!("unknown tier {value:?} (free, starter, professional, enterprise)"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let source = ConfigSource::find(cli.config);
    let config = match Config::load(source.path(), std::env::vars()) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("mailmux: invalid configuration: {error}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("mailmux: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let format = cli.output;
    let context = Context { config, source };
    let outcome = runtime.block_on(async move {
        let shown = match cli.command {
            Command::Serve { log_format } => {
                return serve::run(context.config, log_format).await;
            }
            Command::Migrate => commands::migrate(&context).await,
            Command::Health { timeout_secs } => {
                health::check(
                    &context.config,
                    std::time::Duration::from_secs(timeout_secs),
                )
                .await
            }
            Command::Tenant { command } => tenant(&context, command).await,
            Command::Credential { command } => credential(&context, command).await,
            Command::Domain { command } => domain(&context, command).await,
            Command::ApiKey { command } => api_key(&context, command).await,
            Command::Address { command } => commands::address::run(&context, command).await,
            Command::Message { command } => message(&context, command).await,
            Command::Audit { command } => audit(&context, command).await,
            Command::Webhook { command } => commands::webhook::run(&context, command).await,
            Command::Postmaster { command } => match command {
                PostmasterCommand::List { limit, cursor } => {
                    commands::postmaster::list(&context, limit, cursor).await
                }
                PostmasterCommand::Show { id } => commands::postmaster::show(&context, &id).await,
            },
            Command::Ses { command } => match command {
                SesCommand::Sync { tenant } => commands::ses::sync(&context, &tenant).await,
                SesCommand::Backfill { dry_run } => {
                    commands::ses::backfill(&context, dry_run).await
                }
            },
        }?;
        output::print(&shown, format)?;
        Ok(())
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("mailmux: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn tenant(context: &Context, command: TenantCommand) -> anyhow::Result<output::Shown> {
    match command {
        TenantCommand::Create { name, tier } => {
            commands::tenant::create(context, &name, tier).await
        }
        TenantCommand::List => commands::tenant::list(context).await,
        TenantCommand::Show { tenant } => commands::tenant::show(context, &tenant).await,
        TenantCommand::Update(update) => commands::tenant::update(context, *update).await,
        TenantCommand::Delete { tenant, force } => {
            commands::tenant::delete(context, &tenant, force).await
        }
    }
}

async fn credential(
    context: &Context,
    command: CredentialCommand,
) -> anyhow::Result<output::Shown> {
    match command {
        CredentialCommand::Create { tenant } => {
            commands::credential::create(context, &tenant).await
        }
        CredentialCommand::List { tenant } => commands::credential::list(context, &tenant).await,
        CredentialCommand::Revoke {
            tenant,
            id,
            username,
        } => {
            let which = match (id, username) {
                (Some(id), _) => commands::credential::CredentialRef::Id(id),
                (None, Some(username)) => commands::credential::CredentialRef::Username(username),
                (None, None) => anyhow::bail!("credential revoke: give --id or --username"),
            };
            commands::credential::revoke(context, tenant.as_deref(), which).await
        }
    }
}

async fn domain(context: &Context, command: DomainCommand) -> anyhow::Result<output::Shown> {
    match command {
        DomainCommand::Add {
            tenant,
            domain,
            verified,
            key_type,
            inbound,
        } => commands::domain::add(context, &tenant, &domain, verified, key_type, inbound).await,
        DomainCommand::Update {
            tenant,
            domain,
            inbound,
            dmarc_reject,
        } => commands::domain::update(context, &tenant, &domain, inbound, dmarc_reject).await,
        DomainCommand::List { tenant } => commands::domain::list(context, &tenant).await,
        DomainCommand::Show { tenant, domain } => {
            commands::domain::show(context, &tenant, &domain).await
        }
        DomainCommand::Verify { tenant, domain } => {
            commands::domain::verify(context, &tenant, &domain).await
        }
        DomainCommand::Delete { tenant, domain } => {
            commands::domain::delete(context, &tenant, &domain).await
        }
        DomainCommand::RotateDkim {
            tenant,
            domain,
            key_type,
        } => commands::domain::rotate_dkim(context, &tenant, &domain, key_type).await,
    }
}

async fn api_key(context: &Context, command: ApiKeyCommand) -> anyhow::Result<output::Shown> {
    match command {
        ApiKeyCommand::Create { tenant, name } => {
            commands::api_key::create(context, &tenant, name.as_deref()).await
        }
        ApiKeyCommand::List { tenant } => commands::api_key::list(context, &tenant).await,
        ApiKeyCommand::Revoke { tenant, id } => {
            commands::api_key::revoke(context, &tenant, &id).await
        }
    }
}

async fn message(context: &Context, command: MessageCommand) -> anyhow::Result<output::Shown> {
    match command {
        MessageCommand::List(args) => commands::message::list(context, args).await,
        MessageCommand::Show { tenant, id } => commands::message::show(context, &tenant, &id).await,
    }
}

async fn audit(context: &Context, command: AuditCommand) -> anyhow::Result<output::Shown> {
    match command {
        AuditCommand::List {
            tenant,
            limit,
            cursor,
        } => commands::message::audit_list(context, tenant.as_deref(), limit, cursor).await,
    }
}
