//! `mailmux`: the relay's binary. The CLI (clap) for operators, and `serve`, which wires the
//! store, queue, SMTP listeners, delivery workers and admin API together.

mod commands;
mod serve;
mod tls;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use mailmux_admin::dkim::KeyType;
use mailmux_core::{Config, Tier};

#[derive(Parser)]
#[command(
    name = "mailmux",
    version,
    about = "A self-hosted, multi-tenant SMTP relay"
)]
struct Cli {
    /// Configuration file (TOML). Without one, the embedded defaults apply; every key can also
    /// be set with MAILMUX_<SECTION>__<KEY>.
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the SMTP listeners, the admin API and the queue workers (applies migrations first).
    Serve,
    /// Apply database migrations and exit.
    Migrate,
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
    /// List every tenant as JSON (`{"tenants": [...]}`).
    List,
    /// Show one tenant with its usage.
    Show {
        #[arg(long)]
        tenant: String,
    },
    /// Change a tenant's limits, tier, status, enabled flag or features; prints the tenant.
    /// A new tier brings its default limits and features, except those set in the same command.
    Update(Box<commands::TenantUpdateArgs>),
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
    /// Revoke an SMTP credential (refused at its next AUTH, within a second); prints it.
    Revoke {
        #[arg(long)]
        tenant: String,
        /// The credential's id (`c_…`).
        #[arg(long)]
        id: String,
    },
}

#[derive(Subcommand)]
enum DomainCommand {
    /// Add a domain to a tenant; prints the DNS records to publish.
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
    },
    /// Look the domain's records up in DNS now; prints the per-record status.
    Verify {
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
    let config = match Config::load(cli.config.as_deref(), std::env::vars()) {
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
    let outcome = runtime.block_on(async move {
        match cli.command {
            Command::Serve => serve::run(config).await,
            Command::Migrate => commands::migrate(&config).await,
            Command::Tenant { command } => match command {
                TenantCommand::Create { name, tier } => {
                    commands::tenant_create(&config, &name, tier).await
                }
                TenantCommand::List => commands::tenant_list(&config).await,
                TenantCommand::Show { tenant } => commands::tenant_show(&config, &tenant).await,
                TenantCommand::Update(update) => commands::tenant_update(&config, *update).await,
                TenantCommand::Delete { tenant, force } => {
                    commands::tenant_delete(&config, &tenant, force).await
                }
            },
            Command::Credential { command } => match command {
                CredentialCommand::Create { tenant } => {
                    commands::credential_create(&config, &tenant).await
                }
                CredentialCommand::Revoke { tenant, id } => {
                    commands::credential_revoke(&config, &tenant, &id).await
                }
            },
            Command::Domain { command } => match command {
                DomainCommand::Add {
                    tenant,
                    domain,
                    verified,
                    key_type,
                } => commands::domain_add(&config, &tenant, &domain, verified, key_type).await,
                DomainCommand::Verify { tenant, domain } => {
                    commands::domain_verify(&config, &tenant, &domain).await
                }
                DomainCommand::RotateDkim {
                    tenant,
                    domain,
                    key_type,
                } => commands::domain_rotate_dkim(&config, &tenant, &domain, key_type).await,
            },
        }
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("mailmux: {error:#}");
            ExitCode::FAILURE
        }
    }
}
