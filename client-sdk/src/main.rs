//! `civic-agent`: the partner agent. `keygen`, `check`, `run`, `once`, `synth`, `audit-check`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use civic_client_sdk::agent::{Agent, RoundOutcome};
use civic_client_sdk::config::AgentConfig;
use civic_client_sdk::error::AgentError;
use clap::{Parser, Subcommand};

// The benchmark's switch that turns masking off must never reach a deployable binary.
const _: () = assert!(
    !civic_secagg::MASKING_SWITCH_COMPILED,
    "civic-agent must not be built with civic-secagg's `bench-unmasked` feature"
);

#[derive(Parser)]
#[command(
    name = "civic-agent",
    version,
    about = "The Civic partner agent: raw data stays here; only masked vectors leave."
)]
struct Cli {
    /// Log as JSON lines.
    #[arg(long, global = true)]
    json_logs: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Writes a new Ed25519 identity key (mode 0600; never overwrites) and prints the
    /// public key to register.
    Keygen {
        /// Where to write it.
        #[arg(long, default_value = "identity.key")]
        out: PathBuf,
    },
    /// Checks the configuration, the mappings and the data; non-zero exit on any problem.
    Check {
        /// The agent's configuration.
        #[arg(long, default_value = "partner.toml")]
        config: PathBuf,
        /// Use the local policy copies only; do not contact the coordinator.
        #[arg(long)]
        offline: bool,
    },
    /// Polls the coordinator and takes part in rounds until stopped. Refuses to start when
    /// the data would have rounds declined (the problems `check` reports).
    Run {
        /// The agent's configuration.
        #[arg(long, default_value = "partner.toml")]
        config: PathBuf,
    },
    /// Writes a partner's extract of a synthetic city population as CSV, to rehearse with.
    Synth {
        /// The partner: gp-north, gp-central, gp-south, gp-east, gp-west (diabetes), or
        /// acute-trust, community-mh-trust, council-asc (falls and frailty).
        #[arg(long)]
        partner: String,
        /// `housing-health` for the linked dataset's extracts (partners housing-north,
        /// housing-south, acute-trust, gp-fed-1 … gp-fed-5, council-asc, with NHS numbers in
        /// the never-issued 999 range); `retina` for a GP federation's diabetic eye-screening
        /// photographs (32×32 grey, as a NumPy array beside the CSV, for the example DP-SGD
        /// trainer); without it, the partner's diabetes or falls extract.
        #[arg(long)]
        dataset: Option<String>,
        /// Where to write the CSV.
        #[arg(long)]
        out: PathBuf,
        /// Residents in the whole population (default 200,000); for `retina`, the
        /// photographs this partner holds (default 2,000).
        #[arg(long)]
        residents: Option<u32>,
        /// The population's seed (the same seed gives the same people).
        #[arg(long, default_value_t = 2026)]
        seed: u64,
    },
    /// Checks an export of the coordinator's audit log (`GET /v1/audit?limit=10000`) against
    /// the heads this agent recorded; non-zero exit, naming the entry, if it was rewritten.
    AuditCheck {
        /// The agent's configuration.
        #[arg(long, default_value = "partner.toml")]
        config: PathBuf,
        /// The export (JSON).
        #[arg(long)]
        export: PathBuf,
    },
    /// Takes part in the rounds open now, then exits (for cron and tests).
    Once {
        /// The agent's configuration.
        #[arg(long, default_value = "partner.toml")]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("CIVIC_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only for a person at a terminal, never in a file or a log collector.
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    if cli.json_logs {
        logs.json().init();
    } else {
        logs.init();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("civic-agent: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(execute(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("civic-agent: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn execute(command: Command) -> Result<ExitCode, AgentError> {
    match command {
        Command::Keygen { out } => {
            let public = civic_client_sdk::identity::generate(&out)?;
            println!("identity key written to {} (mode 0600)", out.display());
            println!(
                "public key (give it to the board for the federation's manifest; `civic-agent run` \
                 registers it with the coordinator): {public}"
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Synth {
            partner,
            dataset,
            out,
            residents,
            seed,
        } => {
            use civic_client_sdk::synth;
            if dataset.as_deref() == Some("retina") {
                let Some(index) = synth::GP_FEDERATIONS.iter().position(|p| *p == partner) else {
                    return Err(AgentError::Config {
                        file: "command line".into(),
                        field: "--partner".into(),
                        reason: format!(
                            "unknown partner {partner:?} of retina: one of {}",
                            synth::GP_FEDERATIONS.join(", ")
                        ),
                    });
                };
                let n = residents.unwrap_or(2_000);
                let (rows, npy) = synth::write_retina(index, seed, n, &out)
                    .map_err(|e| AgentError::local(&out, e))?;
                println!(
                    "{rows} screening photographs for {partner} (retina) written to {} and {}",
                    out.display(),
                    npy.display()
                );
                return Ok(ExitCode::SUCCESS);
            }
            let residents = residents.unwrap_or(200_000);
            let people = || synth::population(seed, residents);
            if dataset.as_deref() == Some("housing-health") {
                if !synth::LINKED_PARTNERS.contains(&partner.as_str()) {
                    return Err(AgentError::Config {
                        file: "command line".into(),
                        field: "--partner".into(),
                        reason: format!(
                            "unknown partner {partner:?} of housing-health: one of {}",
                            synth::LINKED_PARTNERS.join(", ")
                        ),
                    });
                }
                let rows = synth::write_linked_extract(&partner, &people(), &out)
                    .map_err(|e| AgentError::local(&out, e))?;
                println!(
                    "{rows} rows for {partner} (housing-health) written to {}",
                    out.display()
                );
                return Ok(ExitCode::SUCCESS);
            }
            if let Some(other) = dataset
                .as_deref()
                .filter(|d| *d != "diabetes" && *d != "falls-housing")
            {
                return Err(AgentError::Config {
                    file: "command line".into(),
                    field: "--dataset".into(),
                    reason: format!(
                        "unknown dataset {other:?}: diabetes, falls-housing, housing-health or retina"
                    ),
                });
            }
            if !synth::GP_FEDERATIONS.contains(&partner.as_str())
                && !synth::FALLS_PARTNERS.contains(&partner.as_str())
            {
                return Err(AgentError::Config {
                    file: "command line".into(),
                    field: "--partner".into(),
                    reason: format!(
                        "unknown partner {partner:?}: one of {}, {}",
                        synth::GP_FEDERATIONS.join(", "),
                        synth::FALLS_PARTNERS.join(", ")
                    ),
                });
            }
            let rows = synth::write_extract(&partner, &people(), &out)
                .map_err(|e| AgentError::local(&out, e))?;
            println!("{rows} rows for {partner} written to {}", out.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Check { config, offline } => {
            let config = AgentConfig::load(&config)?;
            let client = if offline {
                None
            } else {
                Some(civic_client_sdk::agent::connect(
                    &config,
                    std::time::Duration::from_secs(10),
                )?)
            };
            let report = civic_client_sdk::check::check(&config, client.as_ref()).await;
            print!("{}", report.text);
            Ok(if report.problems.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::AuditCheck { config, export } => {
            let config = AgentConfig::load(&config)?;
            println!(
                "{}",
                civic_client_sdk::audit::check_export(&config, &export)?
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Run { config } => {
            let config = AgentConfig::load(&config)?;
            civic_client_sdk::check::preflight(&config).await?;
            let agent = Arc::new(Agent::new(config)?);
            tokio::select! {
                _ = agent.run() => {}
                _ = shutdown() => tracing::info!("stopping"),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Once { config } => {
            let config = AgentConfig::load(&config)?;
            civic_client_sdk::check::preflight(&config).await?;
            let agent = Arc::new(Agent::new(config)?);
            let outcomes = agent.once().await?;
            if outcomes.is_empty() {
                println!("no open rounds");
            }
            let mut failed = false;
            for (id, outcome) in outcomes {
                failed |= matches!(outcome, RoundOutcome::Abandoned(_));
                println!("round {id}: {outcome:?}");
            }
            Ok(if failed {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
    }
}

async fn shutdown() {
    #[cfg(unix)]
    {
        if let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
