//! `civic-coordinator serve | admin …`.

use std::path::PathBuf;
use std::process::ExitCode;

use civic_api::Role;
use civic_server::{AppState, Config};
use clap::{Parser, Subcommand};

// The benchmark's switch that turns masking off must never reach a deployable binary.
const _: () = assert!(
    !civic_secagg::MASKING_SWITCH_COMPILED,
    "civic-coordinator must not be built with civic-secagg's `bench-unmasked` feature"
);

#[derive(Parser)]
#[command(
    name = "civic-coordinator",
    version,
    about = "The Civic coordinator: REST API, secure-aggregation rounds, budgets and the audit log"
)]
struct Cli {
    /// The configuration file (every key optional; defaults: 127.0.0.1:8440, sqlite://civic.db).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Log as JSON lines instead of text.
    #[arg(long, global = true)]
    json_logs: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the API until SIGINT or SIGTERM.
    Serve,
    /// Bootstrap and administration against the store, without the server.
    Admin {
        #[command(subcommand)]
        action: Admin,
    },
}

#[derive(Subcommand)]
enum Admin {
    /// Create an account and print its token (shown once). Start with an admin; partners
    /// also get their numeric id.
    CreateAccount {
        /// The account's name (for a partner: the id datasets' policies use).
        name: String,
        /// admin, governance, researcher or partner.
        #[arg(long, value_parser = parse_role)]
        role: Role,
    },
}

fn parse_role(s: &str) -> Result<Role, String> {
    Role::parse(s)
        .ok_or_else(|| format!("unknown role {s:?}: use admin, governance, researcher or partner"))
}

fn load_config(path: Option<&PathBuf>) -> Result<Config, String> {
    match path {
        None => Ok(Config::default()),
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .map_err(|e| format!("cannot read {}: {e}", p.display()))?;
            Config::from_toml(&text, &p.display().to_string())
        }
    }
}

async fn run(cli: Cli) -> Result<(), String> {
    let config = load_config(cli.config.as_ref())?;
    match cli.command {
        Command::Serve => civic_server::serve(config).await,
        Command::Admin { action } => {
            let Admin::CreateAccount { name, role } = action;
            let state = AppState::connect(config).await?;
            let created =
                civic_server::service::governance::create(&state, "admin-cli", &name, role)
                    .await
                    .map_err(|e| e.body().detail)?;
            println!("created {} account {:?}", role.as_str(), created.name);
            if let Some(id) = created.partner_id {
                println!("partner id: {id}");
            }
            println!("token (shown once; store it now): {}", created.token);
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("CIVIC_LOG").unwrap_or_else(|_| "info".into());
    // Colours only for a person at a terminal, never in a file or a log collector.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    if cli.json_logs {
        builder.json().init();
    } else {
        builder.init();
    }
    let result = actix_web::rt::System::new().block_on(run(cli));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("civic-coordinator: {e}");
            ExitCode::FAILURE
        }
    }
}
