//! `civic-board`: what a governance board member runs on their own machine. The key stays
//! in its file; only public keys and signatures leave.

use std::path::PathBuf;
use std::process::ExitCode;

use civic_client_sdk::board;
use civic_client_sdk::error::AgentError;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "civic-board",
    version,
    about = "A Civic board member's keys and signatures: the federation manifest and query approvals."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Writes a new Ed25519 key (mode 0600; never overwrites) and prints its public key.
    Keygen {
        /// Where to write it.
        #[arg(long, default_value = "board.key")]
        out: PathBuf,
    },
    /// Prints the public key of a key file, for the manifest's `[[board.members]]`.
    Show {
        /// The key file.
        #[arg(long, default_value = "board.key")]
        key: PathBuf,
    },
    /// Prints the digest of each policy file, for the manifest's `[[datasets]]`.
    Digest {
        /// Policy files (TOML).
        #[arg(required = true)]
        policies: Vec<PathBuf>,
    },
    /// Adds this member's signature to the signed copy of a manifest (creating it), and
    /// says how many signatures it holds. Publish it with `PUT /v1/manifests`.
    Sign {
        /// The key file.
        #[arg(long, default_value = "board.key")]
        key: PathBuf,
        /// The manifest (TOML).
        manifest: PathBuf,
        /// The signed copy (JSON); default: beside the manifest, `.signed.json`.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Prints this member's approval of a query, as JSON for the decision's `signature`.
    /// Give the query itself (`--query`, the JSON of `GET /v1/queries/{id}` or the
    /// dashboard's download): its fingerprint is recomputed from what it asks and its
    /// summary printed, so what is signed is what was read. Or give the fingerprint.
    Approve {
        /// The key file.
        #[arg(long, default_value = "board.key")]
        key: PathBuf,
        /// The query, as JSON (`GET /v1/queries/{id}`).
        #[arg(
            long,
            conflicts_with = "fingerprint",
            required_unless_present = "fingerprint"
        )]
        query: Option<PathBuf>,
        /// The query's fingerprint (`GET /v1/queries/{id}` shows it).
        fingerprint: Option<String>,
    },
    /// Verifies a signed manifest against the manifest before it (or, for version 1, its own
    /// board); non-zero exit if it does not verify.
    Verify {
        /// The signed manifest (JSON).
        signed: PathBuf,
        /// The signed manifest it replaces.
        #[arg(long)]
        previous: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    match execute(Cli::parse().command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("civic-board: {e}");
            ExitCode::FAILURE
        }
    }
}

fn execute(command: Command) -> Result<(), AgentError> {
    match command {
        Command::Keygen { out } => {
            let public = board::keygen(&out)?;
            eprintln!("board key written to {} (mode 0600)", out.display());
            println!("{public}");
        }
        Command::Show { key } => println!("{}", board::public_key(&key)?),
        Command::Digest { policies } => {
            for p in policies {
                println!("{}  {}", board::policy_digest(&p)?, p.display());
            }
        }
        Command::Sign { key, manifest, out } => {
            let out = out.unwrap_or_else(|| board::signed_path(&manifest));
            let signed = board::sign_manifest(&board::load(&key)?, &manifest, &out)?;
            println!(
                "{}: manifest version {} (digest {}) now holds {} signature(s)",
                out.display(),
                signed.manifest.version,
                signed.manifest.digest(),
                signed.signatures.len()
            );
        }
        Command::Approve {
            key,
            query,
            fingerprint,
        } => {
            let fingerprint = match (query, fingerprint) {
                (Some(view), _) => {
                    let (fingerprint, summary) = board::approval_of(&view)?;
                    eprintln!("approving {summary}\n  fingerprint {fingerprint}");
                    fingerprint
                }
                (None, Some(fingerprint)) => fingerprint,
                (None, None) => {
                    return Err(AgentError::Config {
                        file: "command line".into(),
                        field: "FINGERPRINT".into(),
                        reason: "give the query (--query FILE) or its fingerprint".into(),
                    });
                }
            };
            let signature = board::approve(&board::load(&key)?, &fingerprint)?;
            println!(
                "{}",
                serde_json::to_string(&signature).expect("a signature serialises")
            );
        }
        Command::Verify { signed, previous } => {
            println!("{}", board::verify(&signed, previous.as_deref())?);
        }
    }
    Ok(())
}
