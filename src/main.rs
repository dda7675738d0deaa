//! `mailmux`: the relay's binary. The CLI (clap) for operators, and `serve`, which wires the
//! store, queue, SMTP listeners, delivery workers and admin API together.

mod commands;
mod serve;
mod tls;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
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
}

#[derive(Subcommand)]
enum CredentialCommand {
    /// Create an SMTP credential; prints `username` and `password` (shown only this once).
    Create {
        #[arg(long)]
        tenant: String,
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
    },
}

fn parse_tier(value: &str) -> Result<Tier, String> {
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
            Command::Tenant {
                command: TenantCommand::Create { name, tier },
            } => commands::tenant_create(&config, &name, tier).await,
            Command::Credential {
                command: CredentialCommand::Create { tenant },
            } => commands::credential_create(&config, &tenant).await,
            Command::Domain {
                command:
                    DomainCommand::Add {
                        tenant,
                        domain,
                        verified,
                    },
            } => commands::domain_add(&config, &tenant, &domain, verified).await,
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
