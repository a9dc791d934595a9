//! The Liverpool demo: a coordinator on an embedded SQLite store and ten partner agents on
//! loopback, each with its own synthetic extract of a 200,000-resident city region, playing a
//! session a city-region data co-operative would recognise. Two housing associations join
//! the acute trust and the council's adult social care on a linked dataset: each holds only
//! its own columns and its residents' NHS numbers, and linked questions are answered by
//! private joins (`docs/linkage.md`), with the truth computed over the real join. A board of three (threshold 2)
//! signs the federation's manifest and the approval of a large query with `civic-board`'s
//! functions; the agents trust the board's keys, not the coordinator.
//!
//! ```sh
//! cargo run --release --example liverpool [-- --out DIR --residents N]
//! ```
//!
//! It prints each release beside the true value computed straight from the synthetic rows of
//! the partners whose data is in that release (one GP federation is stopped mid-round), the
//! cost and the budget left, and writes `report.json` and `report.html` (drawn by
//! `liverpool/report.rs`) to the output directory (default `liverpool-output`).

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use civic_api::Role;
use civic_client_sdk::agent::Agent;
use civic_client_sdk::board;
use civic_client_sdk::config::AgentConfig;
use civic_client_sdk::synth::{self, FALLS_PARTNERS, GP_FEDERATIONS, Resident};

/// The housing associations: partners of the linked dataset only.
const HOUSING_ASSOCIATIONS: [&str; 2] = ["housing-north", "housing-south"];
/// The partners that also serve the linked dataset, with their side's records.
const LINKED_ALSO: [&str; 2] = ["acute-trust", "council-asc"];
use civic_policies::manifest::{
    Board as ManifestBoard, BoardMember, Manifest, ManifestDataset, ManifestPartner,
    RoundRequirements,
};
use civic_server::{AppState, Config};
use reqwest::Method;
use serde_json::{Value, json};

/// The antibiotic-choice model's data, job and comparison.
#[path = "liverpool/antibiotics.rs"]
mod antibiotics;
/// The HTML report, shared with its browser test (`tests/report.rs`).
#[path = "liverpool/report.rs"]
mod report;

type Error = Box<dyn std::error::Error + Send + Sync>;

const SEED: u64 = 2026;

/// A released cell beside the truth.
struct Row {
    cell: Cell,
    released: Option<f64>,
    interval: Option<(f64, f64)>,
    truth: f64,
}

/// What a released cell is: its label in the terminal, and where the report draws it (the
/// chart of its panel, in the row of that name).
struct Cell {
    label: String,
    panel: Option<&'static str>,
    row: String,
}

impl Cell {
    /// A cell in row `row` of the chart for `panel` (or of the question's only chart).
    fn new(panel: Option<&'static str>, row: impl Into<String>) -> Self {
        let row = row.into();
        let label = match panel {
            Some(p) => format!("{row}, {p}"),
            None => row.clone(),
        };
        Cell { label, panel, row }
    }
}

/// A question's true values from the rows some partners hold (each partner's rows in turn,
/// as the round sums them), in the order of its cells.
type Truth = Box<dyn Fn(&[&Resident]) -> Vec<f64> + Send + Sync>;

/// One question of the session.
struct Question {
    title: &'static str,
    researcher: &'static str,
    request: Value,
    /// The partners holding the dataset, each invited to the round.
    partners: &'static [&'static str],
    /// A linked question: its truth is over the residents each joined pair both hold.
    linked: bool,
    /// For the report: the statistic, what the values are, and what the rows are.
    statistic: &'static str,
    value_axis: &'static str,
    category_axis: &'static str,
    cells: Vec<Cell>,
    /// Computed once the round says whose data is in the release.
    truth: Truth,
}

/// The coordinator's HTTP API as one person.
struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    async fn call(
        &self,
        method: Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> Result<(u16, Value), Error> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await?;
        let status = res.status().as_u16();
        let text = res.text().await?;
        Ok((
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        ))
    }

    async fn ok(
        &self,
        method: Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> Result<Value, Error> {
        let (status, v) = self.call(method, path, token, body).await?;
        if status >= 300 {
            return Err(format!("{path}: {status} {v}").into());
        }
        Ok(v)
    }
}

/// The Liverpool demo: a coordinator and eight partner agents on loopback, over a synthetic
/// city region, with a board of three signing the manifest and a large query's approval.
/// Prints each release beside the truth and writes report.json and report.html.
#[derive(clap::Parser)]
struct Args {
    /// Where to write report.json and report.html (created if missing).
    #[arg(long, default_value = "liverpool-output")]
    out: PathBuf,
    /// Synthetic residents in the city region.
    #[arg(long, default_value_t = 200_000, value_parser = clap::value_parser!(u32).range(1..))]
    residents: u32,
    /// After the demo, keep the coordinator, its dashboard and the agents running until
    /// Ctrl-C, so a person can look around (logins are written beside the report).
    #[arg(long)]
    serve: bool,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() -> Result<(), Error> {
    // Parsed before anything runs: `--help` and a bad flag exit here, writing nothing.
    let Args {
        out,
        residents,
        serve,
    } = clap::Parser::parse();
    let started = Instant::now();
    std::fs::create_dir_all(&out)?;
    let work = std::env::temp_dir().join(format!("civic-liverpool-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;

    println!("Civic: the Liverpool demo (synthetic data, seed {SEED})\n");
    let people = synth::population(SEED, residents);
    println!(
        "{residents} synthetic residents; working directory {}",
        work.display()
    );

    // The coordinator, on its own thread with its own actix system, as in production.
    let config = Config {
        store_url: format!("sqlite://{}", work.join("civic.db").display()),
        phase_deadline_secs: 4.0,
        tick_millis: 20,
        max_rows_per_partner: u64::from(residents),
        // A linked join's offers carry a padded list for each partner on the other side:
        // the trust's, encrypted, at 200,000 residents are about 150 MB, over the default
        // 64 MiB limit, which a submission would be refused over (`round.too_large`).
        binary_limit: 512 << 20,
        ..Config::default()
    };
    let (base, admin) = start_coordinator(config)?;
    let api = Api {
        base: base.clone(),
        http: reqwest::Client::new(),
    };
    println!("coordinator on {base} (store: embedded SQLite)");
    println!("dashboard: {base}/ui/ (the public register; board and researchers log in)\n");

    // Accounts: the board, researchers and partners, created by the administrator.
    let mut tokens: BTreeMap<&str, String> = BTreeMap::new();
    for (name, role) in [
        ("board-chair", "governance"),
        ("board-member", "governance"),
        ("dr-amara", "researcher"),
        ("dr-ben", "researcher"),
    ] {
        let v = api
            .ok(
                Method::POST,
                "/v1/admin/accounts",
                &admin,
                Some(json!({ "name": name, "role": role })),
            )
            .await?;
        tokens.insert(name, v["token"].as_str().unwrap_or_default().to_string());
    }
    let partners: Vec<&str> = GP_FEDERATIONS
        .iter()
        .chain(FALLS_PARTNERS.iter())
        .chain(HOUSING_ASSOCIATIONS.iter())
        .copied()
        .collect();
    for p in &partners {
        let v = api
            .ok(
                Method::POST,
                "/v1/admin/partners",
                &admin,
                Some(json!({ "name": p })),
            )
            .await?;
        tokens.insert(p, v["token"].as_str().unwrap_or_default().to_string());
    }

    // The board: dataset policies (with the NHS disclosure-control profile), projects and
    // their budgets.
    let chair = tokens["board-chair"].clone();
    let linked_policy = work.join("housing-health.toml");
    std::fs::write(&linked_policy, linked_policy_text(residents)?)?;
    let policies = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/liverpool");
    for (id, path) in [
        ("diabetes", policies.join("diabetes.toml")),
        ("falls-housing", policies.join("falls-housing.toml")),
        ("housing-health", linked_policy.clone()),
        ("antibiotics", antibiotics::policy_path()),
    ] {
        let text = std::fs::read_to_string(path)?;
        api.ok(
            Method::PUT,
            &format!("/v1/datasets/{id}"),
            &chair,
            Some(json!({ "policy": text })),
        )
        .await?;
    }
    for (project, title, member, dataset, cap) in [
        (
            "diabetes-care",
            "Catching diabetes complications early",
            "dr-amara",
            "diabetes",
            0.6,
        ),
        (
            "falls-prevention",
            "Preventing falls among older people",
            "dr-ben",
            "falls-housing",
            0.45,
        ),
        (
            "healthy-homes",
            "Damp, cold and overcrowded homes and health",
            "dr-ben",
            "housing-health",
            0.3,
        ),
        (
            "antibiotic-choice",
            "The right antibiotic for the right bug in the right patient",
            "dr-amara",
            "antibiotics",
            0.4,
        ),
    ] {
        api.ok(
            Method::POST,
            "/v1/projects",
            &chair,
            Some(json!({ "id": project, "title": title, "members": [member] })),
        )
        .await?;
        api.ok(
            Method::PUT,
            &format!("/v1/projects/{project}/allocations/{dataset}"),
            &chair,
            Some(json!({ "cap": { "rho": cap } })),
        )
        .await?;
    }
    println!(
        "board: datasets diabetes and antibiotics (5 GP federations), falls-housing (falls and frailty, as the acute trust, community & mental-health trust and council adult social care record them) and housing-health, linked on NHS numbers (housing associations' homes beside the acute trust's admissions and the council's care packages); NHS disclosure control; projects diabetes-care (ρ 0.6), falls-prevention (ρ 0.45), healthy-homes (ρ 0.3) and antibiotic-choice (ρ 0.4)\n"
    );

    // The board: three members, each with a key on their own machine (`civic-board keygen`).
    let board_dir = work.join("board");
    std::fs::create_dir_all(&board_dir)?;
    let mut board_keys = Vec::new();
    for member in BOARD {
        let public = board::keygen(&board_dir.join(format!("{member}.key")))?;
        board_keys.push((member, public));
    }

    // The partners: each writes its extract and makes its identity key, whose public half it
    // gives the board.
    let rx = antibiotics::population(SEED, residents);
    let mut identities = Vec::new();
    for p in &partners {
        let dir = work.join(p);
        std::fs::create_dir_all(&dir)?;
        // Housing associations hold only the linked dataset's housing side.
        let mut held = Vec::new();
        if !HOUSING_ASSOCIATIONS.contains(p) {
            let rows = synth::write_extract(p, &people, &dir.join("extract.csv"))?;
            held.push(format!("{rows:>6} rows"));
        }
        if GP_FEDERATIONS.contains(p) {
            let n = antibiotics::write_extract(p, &rx, &dir.join("prescriptions.csv"))?;
            held.push(format!("{n:>6} prescriptions"));
        }
        if HOUSING_ASSOCIATIONS.contains(p) || LINKED_ALSO.contains(p) {
            let n = synth::write_linked_extract(p, &people, &dir.join("linked.csv"))?;
            held.push(format!("{n:>6} linked records (with NHS numbers)"));
        }
        write_private(&dir.join("token"), &tokens[p])?;
        let public = civic_client_sdk::identity::generate(&dir.join("identity.key"))?;
        std::fs::write(
            dir.join("partner.toml"),
            partner_config(p, &base, &board_keys),
        )?;
        println!("  {p:<20} {}", held.join(", "));
        identities.push((*p, public));
    }
    println!();

    // The board's manifest: its members, the partners and their keys, each dataset's policy
    // by digest, and the least every round must meet. Two of the three sign it
    // (`civic-board sign`); the coordinator stores it and cannot make one of its own.
    let manifest = federation_manifest(&board_keys, &identities, &linked_policy)?;
    let manifest_toml = board_dir.join("manifest.toml");
    std::fs::write(&manifest_toml, toml::to_string(&manifest)?)?;
    let signed_path = board::signed_path(&manifest_toml);
    for member in ["chair", "vice-chair"] {
        let key = board::load(&board_dir.join(format!("{member}.key")))?;
        board::sign_manifest(&key, &manifest_toml, &signed_path)?;
    }
    let signed: Value = serde_json::from_str(&std::fs::read_to_string(&signed_path)?)?;
    api.ok(Method::PUT, "/v1/manifests", &chair, Some(signed))
        .await?;
    println!(
        "board: manifest version 1 (digest {}…) signed by the chair and the vice-chair: {} partners, 3 datasets; every round withstands one colluding partner\n",
        &manifest.digest()[..16],
        identities.len()
    );

    // The agents trust the board's keys, not the coordinator.
    let mut agents = BTreeMap::new();
    for p in &partners {
        agents.insert(*p, spawn_agent(&work.join(p))?);
    }

    let mut report = Vec::new();
    for (i, q) in questions().into_iter().enumerate() {
        // The second question (mean HbA1c) is the one a federation drops out of half-way.
        let dropout = (i == 1).then_some("gp-east");
        let entry = ask(&api, &tokens, q, dropout, &mut agents, &work, &people).await?;
        report.push(entry);
    }

    // The antibiotic-choice model: a training job of several rounds.
    let model = train(&api, &tokens["dr-amara"], &rx, residents).await?;

    // A question the project can no longer afford.
    let over = json!({
        "project": "falls-prevention",
        "query": { "dataset": "falls-housing", "statistic": { "linear_regression": { "features": ["decades_over_65", "lives_alone", "home_adaptations"], "target": "falls_admissions" } },
                   "filter": { "compare": { "column": "age", "op": "ge", "value": 75 } } },
        "privacy": { "rho": 0.32 }
    });
    let (status, refusal) = api
        .call(Method::POST, "/v1/queries", &tokens["dr-ben"], Some(over))
        .await?;
    println!(
        "dr-ben asks for another regression (over-75s) at ρ = 0.32: refused ({status} {})",
        refusal["code"].as_str().unwrap_or("")
    );
    println!("  {}\n", refusal["detail"].as_str().unwrap_or(""));

    let mut budgets = Vec::new();
    for d in ["diabetes", "falls-housing", "housing-health", "antibiotics"] {
        let b = api
            .ok(Method::GET, &format!("/v1/budgets/{d}"), &chair, None)
            .await?;
        println!(
            "budget {d}: ρ {:.4} charged of {:.2}; remaining {:.4}",
            b["charged_rho"].as_f64().unwrap_or(0.0),
            b["total_rho"].as_f64().unwrap_or(0.0),
            b["remaining_rho"].as_f64().unwrap_or(0.0)
        );
        budgets.push(b);
    }
    let verify = api
        .ok(Method::GET, "/v1/audit/verify", &chair, None)
        .await?;
    println!(
        "audit log: {} entries, chain verified: {}",
        verify["entries"], verify["verified"]
    );

    let json_report = json!({ "seed": SEED, "residents": residents, "questions": report, "antibiotics": model, "over_budget": { "status": status, "refusal": refusal }, "budgets": budgets, "audit": verify });
    std::fs::write(
        out.join("report.json"),
        serde_json::to_string_pretty(&json_report)?,
    )?;
    std::fs::write(out.join("report.html"), report::html(&json_report))?;
    println!(
        "\nreport: {} and {}",
        out.join("report.json").display(),
        out.join("report.html").display()
    );
    println!("finished in {:.1} s", started.elapsed().as_secs_f64());
    if serve {
        let logins = out.join("dashboard-logins.txt");
        write_private(
            &logins,
            &dashboard_logins(&base, &tokens, &work.join("board"))?,
        )?;
        println!(
            "\nserving the dashboard at {base}/ui/ until Ctrl-C; log in with the tokens in {}",
            logins.display()
        );
        tokio::signal::ctrl_c().await?;
        let _ = std::fs::remove_file(&logins);
    }
    for (_, a) in agents {
        a.abort();
    }
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}

/// Trains the antibiotic-choice model as dr-amara: previews the job (its cost and expected
/// accuracy), submits it, waits while the agents take part in each round, and compares the
/// released model with the non-private fit.
async fn train(
    api: &Api,
    token: &str,
    rx: &[synth::Prescription],
    residents: u32,
) -> Result<Value, Error> {
    println!(
        "── The antibiotic-choice model: first-line failure, a logistic regression trained across the five GP federations"
    );
    let request = antibiotics::request("antibiotic-choice");
    let preview = api
        .ok(
            Method::POST,
            "/v1/queries/preview",
            token,
            Some(request.clone()),
        )
        .await?;
    let widths = &preview["accuracy"][1]["half_width_at_rows"];
    println!(
        "   dr-amara previews the job: {} rounds, ρ = {} in all (ε = {:.2} at δ = 10⁻⁶); expected 95% half-width of the age coefficient at {} prescriptions ± {:.4}",
        antibiotics::ITERATIONS,
        preview["cost"]["rho"],
        preview["cost"]["approx_dp"][0].as_f64().unwrap_or(f64::NAN),
        widths[1][0],
        widths[1][1].as_f64().unwrap_or(f64::NAN)
    );
    let submitted = api
        .ok(Method::POST, "/v1/queries", token, Some(request))
        .await?;
    let id = submitted["id"].as_i64().ok_or("no query id")?;
    let started = Instant::now();
    let done = loop {
        let q = api
            .ok(Method::GET, &format!("/v1/queries/{id}"), token, None)
            .await?;
        if q["state"] != "running" {
            break q;
        }
        if started.elapsed() > Duration::from_secs(600) {
            return Err(format!("training job {id} did not finish in 10 minutes").into());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    if done["state"] != "released" {
        return Err(format!(
            "training job {id} ended {}: {}",
            done["state"], done["reason"]
        )
        .into());
    }
    println!(
        "   released after {} rounds in {:.1} s, each charged before its iterate went to the partners; noise {} (the coordinator never held an exact sum)",
        antibiotics::ITERATIONS,
        started.elapsed().as_secs_f64(),
        done["result"]["receipt"]["noise"].as_str().unwrap_or("?")
    );
    let held = antibiotics::held_out(SEED);
    let mut model = antibiotics::compare(&done, rx, &held, u64::from(residents))?;
    model["query_id"] = json!(id);
    model["cost"] = done["cost"].clone();
    println!();
    Ok(model)
}

/// What a person needs to log in to the demo's dashboard: its address, the board's and the
/// researchers' tokens, and the board members' key files (for signing approvals).
fn dashboard_logins(
    base: &str,
    tokens: &BTreeMap<&str, String>,
    board_dir: &Path,
) -> Result<String, Error> {
    let mut text = format!(
        "Civic Liverpool demo: the dashboard at {base}/ui/\n\
         Log in at {base}/ui/login with one of these tokens (synthetic data; this file is \
         removed when the demo stops).\n\n"
    );
    for name in ["board-chair", "board-member", "dr-amara", "dr-ben"] {
        let token = tokens
            .get(name)
            .ok_or_else(|| format!("no account {name}"))?;
        text += &format!("{name:<14} {token}\n");
    }
    text += "\nBoard members sign approvals with these key files (choose one on a query's page):\n";
    for member in BOARD {
        text += &format!("  {}\n", board_dir.join(format!("{member}.key")).display());
    }
    Ok(text)
}

/// Writes a secret file (a token) only its owner can read, as the agent requires: created
/// with that mode, so it is never readable by others, even for a moment.
fn write_private(path: &Path, text: &str) -> Result<(), Error> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    options.mode(0o600);
    options.open(path)?.write_all(text.as_bytes())?;
    Ok(())
}

/// The board's three members: each signs with a key of their own (threshold 2).
const BOARD: [&str; 3] = ["chair", "vice-chair", "resident-member"];

/// The organisation behind a demo partner, for the manifest.
fn organisation(partner: &str) -> &'static str {
    match partner {
        "acute-trust" => "an acute NHS trust",
        "community-mh-trust" => "a community and mental-health NHS trust",
        "council-asc" => "a council's adult social care",
        "housing-north" | "housing-south" => "a housing association",
        _ => "a GP federation",
    }
}

/// Version 1 of the federation's manifest.
fn federation_manifest(
    board_keys: &[(&str, String)],
    partners: &[(&str, String)],
    linked_policy: &Path,
) -> Result<Manifest, Error> {
    let policies = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/liverpool");
    let mut datasets = Vec::new();
    for (id, path) in [
        ("diabetes", policies.join("diabetes.toml")),
        ("falls-housing", policies.join("falls-housing.toml")),
        ("housing-health", linked_policy.to_path_buf()),
        ("antibiotics", antibiotics::policy_path()),
    ] {
        datasets.push(ManifestDataset {
            id: id.into(),
            policy_digest: board::policy_digest(&path)?,
        });
    }
    Ok(Manifest {
        federation: "Liverpool City Region data co-operative (synthetic)".into(),
        version: 1,
        previous: None,
        board: ManifestBoard {
            threshold: 2,
            members: board_keys
                .iter()
                .map(|(name, key)| BoardMember {
                    name: name.to_string(),
                    key: key.clone(),
                })
                .collect(),
        },
        requirements: RoundRequirements {
            tolerated_colluders: 1,
            min_survivors: 3,
            min_rho_per_query: 0.0005,
            max_rounds_per_dataset_per_day: 100,
        },
        partners: partners
            .iter()
            .map(|(name, key)| ManifestPartner {
                name: name.to_string(),
                organisation: organisation(name).into(),
                identity_key: key.clone(),
            })
            .collect(),
        datasets,
    })
}

/// The linked dataset's policy (`examples/policies/housing-health.toml`) with each side's
/// capacity sized by the board for a region of `residents`: every list a partner sends is
/// padded to its side's capacity, so it must exceed what any one partner of that kind
/// holds (public figures: an association's tenancies, a trust's patients), and it sets the
/// joins' cost.
fn linked_policy_text(residents: u32) -> Result<String, Error> {
    let sample = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/policies/housing-health.toml"),
    )?;
    let share = |fraction: f64| (f64::from(residents) * fraction).ceil().max(100.0) as u32;
    let mut text = sample;
    for (sample_capacity, fraction) in [
        (60_000, 0.3),
        (1_500_000, 0.45),
        (400_000, 0.3),
        (200_000, 0.35),
    ] {
        let line = format!("capacity = {sample_capacity}\n");
        if !text.contains(&line) {
            return Err(format!("the sample linked policy has no {line:?}").into());
        }
        text = text.replace(&line, &format!("capacity = {}\n", share(fraction)));
    }
    Ok(text)
}

/// Starts the coordinator on a thread of its own and bootstraps the administrator, as
/// `civic-coordinator admin create-account` does.
fn start_coordinator(config: Config) -> Result<(String, String), Error> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let base = format!("http://{}", listener.local_addr()?);
    let (tx, rx) = std::sync::mpsc::channel::<Result<String, String>>();
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let started = async {
                let state = AppState::open(config).await?;
                let admin = civic_server::service::governance::create(
                    &state,
                    "setup",
                    "admin",
                    Role::Admin,
                )
                .await
                .map_err(|e| e.to_string())?;
                let server =
                    civic_server::serve_listener(state, listener).map_err(|e| e.to_string())?;
                actix_web::rt::spawn(server);
                Ok::<_, String>(admin.token)
            }
            .await;
            let failed = started.is_err();
            let _ = tx.send(started);
            if !failed {
                std::future::pending::<()>().await;
            }
        })
    });
    Ok((base, rx.recv()??))
}

fn partner_config(partner: &str, base: &str, board_keys: &[(&str, String)]) -> String {
    let keys: Vec<String> = board_keys.iter().map(|(_, k)| format!("{k:?}")).collect();
    let keys = keys.join(", ");
    let mut config = format!(
        r#"identity_key = "identity.key"
state_dir = "state"

[board]
threshold = 2
keys = [{keys}]

[coordinator]
url = "{base}"
token_file = "token"
poll_seconds = 0.25

[limits]
max_epsilon_per_query = 1.0
max_rho_per_query = 0.5
total_rho = 2.0
min_survivors = 3
"#
    );
    if !HOUSING_ASSOCIATIONS.contains(&partner) {
        config.push_str(&own_dataset(partner));
    }
    if GP_FEDERATIONS.contains(&partner) {
        config.push_str(&antibiotics::dataset_entry());
    }
    if let Some(linked) = linked_dataset(partner) {
        config.push_str(&linked);
    }
    config
}

/// The `[[datasets]]` entry of a partner's own (not linked) dataset.
fn own_dataset(partner: &str) -> String {
    let gp = GP_FEDERATIONS.contains(&partner);
    let columns: String = if gp {
        // gp-north's system codes sex as F/M and registers as Y/N: mapped here.
        let sex = if partner == "gp-north" {
            r#"{ column = "sex", values = { F = "female", M = "male" } }"#
        } else {
            r#""sex""#
        };
        format!(
            "age = \"age\"\nsex = {sex}\ndeprivation_decile = \"deprivation_decile\"\nhas_diabetes = \"has_diabetes\"\nhba1c = \"hba1c\"\ncopd = \"copd\"\n"
        )
    } else {
        [
            "age",
            "decades_over_65",
            "sex",
            "deprivation_decile",
            "falls_admissions",
            "lives_alone",
            "home_adaptations",
            "respiratory_admissions",
            "care_package",
        ]
        .iter()
        .map(|c| format!("{c} = \"{c}\"\n"))
        .collect()
    };
    let (dataset, resident) = if gp {
        ("diabetes", "patient_id")
    } else {
        ("falls-housing", "person_id")
    };
    format!(
        r#"
[[datasets]]
id = "{dataset}"
resident_column = "{resident}"

[datasets.source]
kind = "csv"
path = "extract.csv"

[datasets.columns]
{columns}"#
    )
}

/// The `[[datasets]]` entry of the linked dataset, for the partners on one of its sides:
/// the side, the local column with the residents' NHS numbers, and the side's columns in
/// the partner's own spelling (`synth::linked_header`).
fn linked_dataset(partner: &str) -> Option<String> {
    let (side, resident, columns) = match partner {
        "housing-north" | "housing-south" => (
            "housing",
            "tenant_nhs_number",
            r#"property_type = "property"
tenure = { column = "tenure_code", values = { GN = "social_rent", SO = "shared_ownership", OT = "other" } }
damp_mould_reported = { column = "damp_mould", values = { Y = "true", N = "false" } }
adaptations = "adaptations_fitted"
"#,
        ),
        "acute-trust" => (
            "admissions",
            "nhs_number",
            r#"age_band = "age_band"
respiratory_admissions = "respiratory_admissions"
falls_admissions = "falls_admissions"
"#,
        ),
        "council-asc" => (
            "social-care",
            "nhs_number",
            "care_package = \"care_package\"\n",
        ),
        _ => return None,
    };
    Some(format!(
        r#"
[[datasets]]
id = "housing-health"
side = "{side}"
resident_column = "{resident}"

[datasets.source]
kind = "csv"
path = "linked.csv"

[datasets.columns]
{columns}"#
    ))
}

fn spawn_agent(dir: &Path) -> Result<tokio::task::JoinHandle<()>, Error> {
    let agent = Arc::new(Agent::new(AgentConfig::load(&dir.join("partner.toml"))?)?);
    Ok(tokio::spawn(agent.run()))
}

/// The session's questions, each with how to compute its true values straight from the
/// rows the contributing partners hold.
fn questions() -> Vec<Question> {
    const AGE_BANDS: [&str; 4] = ["18-39", "40-59", "60-79", "80+"];
    const TYPES: [&str; 5] = ["house", "bungalow", "flat", "maisonette", "other"];
    let band = |age: u32| match age.clamp(18, 100) {
        a if a < 40 => 0,
        a if a < 60 => 1,
        a if a < 80 => 2,
        _ => 3,
    };
    let prevalence = |rows: &[&Resident]| {
        let mut counts = vec![0.0; 20];
        for r in rows {
            counts[(r.decile as usize - 1) * 2 + usize::from(r.diabetes)] += 1.0;
        }
        counts
    };
    let means = move |rows: &[&Resident]| {
        let (mut sums, mut counts) = (vec![0.0; 4], vec![0.0; 4]);
        for r in rows.iter().filter(|r| r.diabetes) {
            if let Some(h) = r.hba1c {
                sums[band(r.age)] += h.clamp(20.0, 150.0);
                counts[band(r.age)] += 1.0;
            }
        }
        sums.iter().zip(&counts).map(|(s, c)| s / c).collect()
    };
    // The linked questions' truths, over the residents each joined pair both holds, as
    // the partners' extracts give them (damp: any report; admissions clamped to the public
    // bound 5; respiratory admissions binned 0, 1, 2+).
    let damp_respiratory = |rows: &[&Resident]| {
        let mut counts = vec![0.0; 6];
        for r in rows {
            let bin = r.respiratory_admissions.min(2) as usize;
            counts[usize::from(r.damp_mould_reports > 0) * 3 + bin] += 1.0;
        }
        counts
    };
    let falls_by_type = |rows: &[&Resident]| {
        let mut sums = vec![0.0; 5];
        for r in rows.iter().filter(|r| r.age >= 65) {
            let t = TYPES
                .iter()
                .position(|t| *t == r.property_type)
                .unwrap_or(4);
            sums[t] += f64::from(r.falls_admissions.min(5));
        }
        sums
    };
    let care_by_damp = |rows: &[&Resident]| {
        let mut counts = vec![0.0; 4];
        for r in rows {
            counts[usize::from(r.damp_mould_reports > 0) * 2 + usize::from(r.care_package)] += 1.0;
        }
        counts
    };
    let beta = |rows: &[&Resident]| {
        ols(&rows
            .iter()
            .filter(|r| r.age >= 65)
            .map(|r| {
                (
                    vec![
                        1.0,
                        f64::from(synth::decades_over_65(r.age)),
                        f64::from(u8::from(r.lives_alone)),
                        f64::from(r.home_adaptations.min(6)),
                    ],
                    f64::from(r.falls_admissions.min(5)),
                )
            })
            .collect::<Vec<_>>())
    };
    let decile = |d: u32| match d {
        1 => "decile 1 (most deprived)".to_string(),
        10 => "decile 10 (least deprived)".to_string(),
        d => format!("decile {d}"),
    };
    vec![
        Question {
            title: "Diabetes prevalence by deprivation decile",
            researcher: "dr-amara",
            request: json!({ "project": "diabetes-care", "query": { "dataset": "diabetes", "statistic": { "histogram": { "columns": ["has_diabetes"] } }, "group_by": ["deprivation_decile"] }, "privacy": { "rho": 0.05 } }),
            partners: &GP_FEDERATIONS,
            linked: false,
            statistic: "histogram",
            value_axis: "registered adults (count)",
            category_axis: "deprivation decile",
            cells: (1..=10)
                .flat_map(|d| {
                    [
                        Cell::new(Some("no diabetes"), decile(d)),
                        Cell::new(Some("with diabetes"), decile(d)),
                    ]
                })
                .collect(),
            truth: Box::new(prevalence),
        },
        Question {
            title: "Mean HbA1c (mmol/mol) among people with diabetes, by age band",
            researcher: "dr-amara",
            request: json!({ "project": "diabetes-care", "query": { "dataset": "diabetes", "statistic": { "mean": { "column": "hba1c" } }, "group_by": ["age"], "filter": { "compare": { "column": "has_diabetes", "op": "eq", "value": true } } }, "privacy": { "rho": 0.08 } }),
            partners: &GP_FEDERATIONS,
            linked: false,
            statistic: "mean",
            value_axis: "mean HbA1c (mmol/mol)",
            category_axis: "age band",
            cells: AGE_BANDS
                .iter()
                .map(|b| Cell::new(None, format!("age {b}")))
                .collect(),
            truth: Box::new(means),
        },
        Question {
            title: "Linear model of falls admissions (over-65s) on age (decades past 65), living alone and home adaptations",
            researcher: "dr-ben",
            request: json!({ "project": "falls-prevention", "query": { "dataset": "falls-housing", "statistic": { "linear_regression": { "features": ["decades_over_65", "lives_alone", "home_adaptations"], "target": "falls_admissions" } }, "filter": { "compare": { "column": "age", "op": "ge", "value": 65 } } }, "privacy": { "rho": 0.32 } }),
            partners: &FALLS_PARTNERS,
            linked: false,
            statistic: "linear_regression",
            value_axis: "coefficient (falls admissions a year)",
            category_axis: "term",
            cells: [
                "intercept",
                "decades over 65",
                "lives alone",
                "home adaptations",
            ]
            .iter()
            .map(|s| Cell::new(None, format!("β {s}")))
            .collect(),
            truth: Box::new(beta),
        },
        Question {
            title: "Damp and mould reports × respiratory admissions, linked (housing associations ⋈ acute trust)",
            researcher: "dr-ben",
            request: json!({ "project": "healthy-homes", "query": { "dataset": "housing-health", "statistic": { "histogram": { "columns": ["damp_mould_reported", "respiratory_admissions"] } } }, "privacy": { "rho": 0.05 } }),
            partners: &["housing-north", "housing-south", "acute-trust"],
            linked: true,
            statistic: "histogram",
            value_axis: "tenants admitted or not (count)",
            category_axis: "damp or mould reported",
            cells: ["no damp report", "damp or mould reported"]
                .iter()
                .flat_map(|d| {
                    [
                        "no resp. admission",
                        "1 resp. admission",
                        "2+ resp. admissions",
                    ]
                    .map(|a| Cell::new(Some(a), *d))
                })
                .collect(),
            truth: Box::new(damp_respiratory),
        },
        Question {
            title: "Falls admissions among over-65s, by property type, linked (housing associations ⋈ acute trust)",
            researcher: "dr-ben",
            request: json!({ "project": "healthy-homes", "query": { "dataset": "housing-health", "statistic": { "sum": { "column": "falls_admissions" } }, "group_by": ["property_type"], "filter": { "or": [ { "compare": { "column": "age_band", "op": "eq", "value": "65-74" } }, { "compare": { "column": "age_band", "op": "eq", "value": "75-84" } }, { "compare": { "column": "age_band", "op": "eq", "value": "85+" } } ] } }, "privacy": { "rho": 0.05 } }),
            partners: &["housing-north", "housing-south", "acute-trust"],
            linked: true,
            statistic: "sum",
            value_axis: "falls admissions of over-65 tenants (sum)",
            category_axis: "property type",
            cells: TYPES.iter().map(|t| Cell::new(None, *t)).collect(),
            truth: Box::new(falls_by_type),
        },
        Question {
            title: "Care packages by damp and mould reports, linked (housing associations ⋈ council adult social care)",
            researcher: "dr-ben",
            request: json!({ "project": "healthy-homes", "query": { "dataset": "housing-health", "statistic": { "histogram": { "columns": ["damp_mould_reported", "care_package"] } } }, "privacy": { "rho": 0.05 } }),
            partners: &["housing-north", "housing-south", "council-asc"],
            linked: true,
            statistic: "histogram",
            value_axis: "tenants (count)",
            category_axis: "damp or mould reported",
            cells: ["no damp report", "damp or mould reported"]
                .iter()
                .flat_map(|d| ["no care package", "care package"].map(|c| Cell::new(Some(c), *d)))
                .collect(),
            truth: Box::new(care_by_damp),
        },
    ]
}

/// Ordinary least squares by the normal equations (a handful of regressors).
fn ols(rows: &[(Vec<f64>, f64)]) -> Vec<f64> {
    let p = rows.first().map_or(0, |r| r.0.len());
    let mut a = vec![vec![0.0; p + 1]; p];
    for (x, y) in rows {
        for i in 0..p {
            for j in 0..p {
                a[i][j] += x[i] * x[j];
            }
            a[i][p] += x[i] * y;
        }
    }
    for c in 0..p {
        let pivot = (c..p)
            .max_by(|&i, &j| a[i][c].abs().total_cmp(&a[j][c].abs()))
            .unwrap_or(c);
        a.swap(c, pivot);
        for r in 0..p {
            if r != c && a[c][c] != 0.0 {
                let f = a[r][c] / a[c][c];
                let pivot_row = a[c].clone();
                for (x, y) in a[r].iter_mut().zip(pivot_row).skip(c) {
                    *x -= f * y;
                }
            }
        }
    }
    (0..p).map(|i| a[i][p] / a[i][i]).collect()
}

/// Previews, submits, gets approvals if needed, waits and prints one question; with
/// `dropout`, that partner's agent is killed half-way through the round and restarted after.
/// The true values are computed over the partners whose data is in the release.
async fn ask(
    api: &Api,
    tokens: &BTreeMap<&str, String>,
    q: Question,
    dropout: Option<&'static str>,
    agents: &mut BTreeMap<&'static str, tokio::task::JoinHandle<()>>,
    work: &Path,
    people: &[Resident],
) -> Result<Value, Error> {
    let board_dir = work.join("board");
    let token = &tokens[q.researcher];
    // What the terminal says during the round, for the report too.
    let mut events = Vec::new();
    println!("── {}", q.title);
    let preview = api
        .ok(
            Method::POST,
            "/v1/queries/preview",
            token,
            Some(q.request.clone()),
        )
        .await?;
    let submitted = api
        .ok(Method::POST, "/v1/queries", token, Some(q.request.clone()))
        .await?;
    let id = submitted["id"].as_i64().ok_or("no query id")?;
    println!(
        "   {} asks (query {id}); cost ρ = {:.4}{}",
        q.researcher,
        preview["cost"]["rho"].as_f64().unwrap_or(0.0),
        preview["cost"]["epsilon"]
            .as_f64()
            .map(|e| format!(" (ε = {e:.2})"))
            .unwrap_or_default()
    );
    if submitted["state"] == "awaiting_approval" {
        let line = format!(
            "above the board's threshold: waiting for {} approvals",
            submitted["approvals_required"]
        );
        println!("   {line}");
        events.push(line);
        // Each member signs the query's fingerprint with their own key
        // (`civic-board approve`); the agents check the signatures themselves.
        let fingerprint = submitted["fingerprint"].as_str().ok_or("no fingerprint")?;
        for (member, account) in [
            ("chair", "board-chair"),
            ("resident-member", "board-member"),
        ] {
            let key = board::load(&board_dir.join(format!("{member}.key")))?;
            let signature = board::approve(&key, fingerprint)?;
            api.ok(Method::POST, &format!("/v1/queries/{id}/decision"), &tokens[account], Some(json!({ "approve": true, "reason": "proportionate for the falls-prevention programme", "signature": signature }))).await?;
            let line = format!("approved by the {member}, signing the query's fingerprint");
            println!("   {line}");
            events.push(line);
        }
    }
    if let Some(victim) = dropout {
        let journal = work.join(victim).join("state/agent-state.json");
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let text = std::fs::read_to_string(&journal).unwrap_or_default();
            if text.contains(&format!("\"{id}\"")) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if let Some(a) = agents.remove(victim) {
            a.abort();
        }
        let line = format!(
            "{victim}'s agent stops mid-round (killed after joining); the round goes on without it"
        );
        println!("   {line}");
        events.push(line);
    }
    let done = loop {
        let v = api
            .ok(Method::GET, &format!("/v1/queries/{id}"), token, None)
            .await?;
        if v["state"] != "running" && v["state"] != "awaiting_approval" {
            break v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    if let Some(victim) = dropout {
        agents.insert(victim, spawn_agent(&work.join(victim))?);
        let line =
            format!("{victim}'s agent restarted: its journal keeps it out of the round it left");
        println!("   {line}");
        events.push(line);
    }
    if done["state"] != "released" {
        return Err(format!("query {id} ended {}: {}", done["state"], done["reason"]).into());
    }
    let result = &done["result"];
    let receipt = &result["receipt"];

    // Whose data is in the release, and the truth over exactly those partners' rows.
    let contributors = contributors(
        work,
        q.partners,
        done["round_id"].as_i64(),
        receipt["survivors"].as_u64(),
        dropout,
    )?;
    let held: Vec<&Resident> = if q.linked {
        // A resident counts once for each joined pair of partners that both hold them.
        joined_pairs(receipt)?
            .into_iter()
            .flat_map(|(a, b)| {
                people
                    .iter()
                    .filter(move |r| synth::linked_holds(&a, r) && synth::linked_holds(&b, r))
            })
            .collect()
    } else {
        contributors
            .contributed
            .iter()
            .flat_map(|p| people.iter().filter(move |r| synth::holds(p, r)))
            .collect()
    };
    let truth = (q.truth)(&held);

    let cells: Vec<&Value> = match result["rows"].as_array() {
        Some(rows) if rows.len() == 1 => rows[0]
            .as_array()
            .map(|c| c.iter().collect())
            .unwrap_or_default(),
        Some(rows) => rows.iter().filter_map(|r| r.get(0)).collect(),
        None => Vec::new(),
    };
    let rows: Vec<Row> = q
        .cells
        .into_iter()
        .zip(truth)
        .zip(cells)
        .map(|((cell, truth), c)| Row {
            cell,
            released: c["value"].as_f64(),
            interval: c["interval"]
                .as_array()
                .and_then(|i| Some((i.first()?.as_f64()?, i.get(1)?.as_f64()?))),
            truth,
        })
        .collect();
    // A mean's interval combines two (its sum's and its count's): the receipt's confidence
    // is already the combined one, a lower bound.
    let confidence = receipt["confidence"].as_f64().unwrap_or(0.95);
    let interval_label = if q.statistic == "mean" {
        format!("interval (confidence ≥ {:.0}%)", confidence * 100.0)
    } else {
        format!("{:.0}% interval", confidence * 100.0)
    };
    println!(
        "   released from {} of {} partners: {}",
        contributors.contributed.len(),
        q.partners.len(),
        contributors.contributed.join(", ")
    );
    for (partner, what) in &contributors.dropped {
        println!("   dropped out: {partner}: {what}");
    }
    if q.linked {
        let pairs: Vec<String> = joined_pairs(receipt)?
            .iter()
            .map(|(h, m)| format!("{h} ⋈ {m}"))
            .collect();
        println!(
            "   private joins: {} (dropped: {}); the trust or council saw only noisy match counts (ρ {} of the cost)",
            pairs.join(", "),
            receipt["linkage"]["pairs_dropped"]
                .as_array()
                .map_or(0, Vec::len),
            receipt["linkage"]["match_counts_rho"]
        );
    }
    if q.linked {
        println!("   true values over the real join of the synthetic extracts, pair by pair");
    } else {
        println!(
            "   true values over those {} partners ({})",
            contributors.contributed.len(),
            contributors.source
        );
    }
    println!(
        "   {:<38} {:>12} {:>25} {:>12}",
        "", "released", interval_label, "true"
    );
    for r in &rows {
        let released = r
            .released
            .map_or("suppressed".to_string(), |v| format!("{v:.2}"));
        let interval = r
            .interval
            .map_or(String::new(), |(lo, hi)| format!("[{lo:.2}, {hi:.2}]"));
        println!(
            "   {:<38} {:>12} {:>25} {:>12.2}",
            r.cell.label, released, interval, r.truth
        );
    }
    for c in receipt["caveats"].as_array().into_iter().flatten() {
        println!("   note: {}", c.as_str().unwrap_or(""));
    }
    match receipt["noise"].as_str() {
        Some("distributed") => println!(
            "   noise: distributed: each of the {} partners added its share before masking, so the coordinator only ever held the noisy sum; the cost is guaranteed by the honest contributors' shares alone ({} of them)",
            receipt["survivors"], receipt["honest_shares"]
        ),
        Some(other) => println!("   noise: {other}, added by the coordinator"),
        None => {}
    }
    let dataset = done["dataset"].as_str().unwrap_or("");
    let budget = api
        .ok(
            Method::GET,
            &format!("/v1/budgets/{dataset}"),
            &tokens["board-chair"],
            None,
        )
        .await?;
    println!(
        "   budget left on {dataset}: ρ = {:.4}\n",
        budget["remaining_rho"].as_f64().unwrap_or(0.0)
    );
    Ok(json!({
        "query_id": id,
        "round_id": done["round_id"],
        "title": q.title,
        "researcher": q.researcher,
        "dataset": dataset,
        "project": done["project"],
        "statistic": q.statistic,
        "value_axis": q.value_axis,
        "category_axis": q.category_axis,
        "interval_label": interval_label,
        "cost": done["cost"],
        "survivors": receipt["survivors"],
        "partners": {
            "invited": q.partners,
            "contributed": contributors.contributed,
            "dropped": contributors.dropped.iter().map(|(p, what)| json!({ "partner": p, "what": what })).collect::<Vec<_>>(),
            "source": contributors.source,
        },
        "approvals": done["approvals"],
        "events": events,
        "cells": rows.iter().map(|r| json!({ "label": r.cell.label, "panel": r.cell.panel, "row": r.cell.row, "released": r.released, "interval": r.interval, "truth": r.truth })).collect::<Vec<_>>(),
        "remaining_rho": budget["remaining_rho"],
        "receipt": receipt,
    }))
}

/// The pairs of partners a linked release joined, by name, from its receipt.
fn joined_pairs(receipt: &Value) -> Result<Vec<(String, String)>, Error> {
    receipt["linkage"]["pairs_joined"]
        .as_array()
        .ok_or("the linked release's receipt names no pairs")?
        .iter()
        .map(|p| match (p[0].as_str(), p[1].as_str()) {
            (Some(h), Some(m)) => Ok((h.to_string(), m.to_string())),
            _ => Err("a pair in the receipt is not two names".into()),
        })
        .collect()
}

/// Whose data is in a release.
struct Contributors {
    contributed: Vec<&'static str>,
    /// Invited partners whose data is not in it, with what happened to them.
    dropped: Vec<(&'static str, String)>,
    /// How we know.
    source: String,
}

/// Which of the `invited` partners' data is in the release of round `round`. The
/// coordinator's query view, receipt and audit log state only how many partners survived;
/// each partner's own journal (`state/agent-state.json`) says whether it sent its masked
/// input to the round, so those are read and checked against the receipt's count. Should
/// they not agree (or not be readable), the partners invited less the one the demo stopped
/// are taken if their number agrees, and the report says it was derived so.
fn contributors(
    work: &Path,
    invited: &'static [&'static str],
    round: Option<i64>,
    survivors: Option<u64>,
    stopped: Option<&'static str>,
) -> Result<Contributors, Error> {
    let survivors = survivors.ok_or("the receipt states no survivors")? as usize;
    let journal = |p: &str| -> Option<(Option<String>, Option<String>)> {
        let text = std::fs::read_to_string(work.join(p).join("state/agent-state.json")).ok()?;
        let state: Value = serde_json::from_str(&text).ok()?;
        let entry = &state["rounds"][round?.to_string()];
        Some((
            entry["status"].as_str().map(String::from),
            entry["reason"].as_str().map(String::from),
        ))
    };
    let what = |p: &str, status: Option<&(Option<String>, Option<String>)>| {
        let said = match status {
            Some((Some(s), Some(reason))) => {
                format!(
                    "its journal has the round {}: {reason}",
                    s.replace('_', " ")
                )
            }
            Some((Some(s), None)) => format!("its journal has the round {}", s.replace('_', " ")),
            Some((None, _)) => "its journal does not have the round".to_string(),
            None => "its journal could not be read".to_string(),
        };
        if Some(p) == stopped {
            format!(
                "the demo stopped its agent mid-round, after it joined and before it sent its masked input; the round went on without it and released from the others ({said})"
            )
        } else {
            format!("its masked input is not in the sum ({said})")
        }
    };
    let statuses: Vec<_> = invited.iter().map(|p| (*p, journal(p))).collect();
    let sent: Vec<&'static str> = statuses
        .iter()
        .filter(|(_, s)| {
            matches!(s, Some((Some(status), _)) if status == "input_sent" || status == "finished")
        })
        .map(|(p, _)| *p)
        .collect();
    let round_name = round.map_or("the round".to_string(), |r| format!("round {r}"));
    if sent.len() == survivors {
        return Ok(Contributors {
            dropped: statuses
                .iter()
                .filter(|(p, _)| !sent.contains(p))
                .map(|(p, s)| (*p, what(p, s.as_ref())))
                .collect(),
            contributed: sent,
            source: format!(
                "each partner's agent journal records whether it sent its masked input to {round_name}; the receipt's count of {survivors} partners agrees"
            ),
        });
    }
    let derived: Vec<&'static str> = invited
        .iter()
        .copied()
        .filter(|p| Some(*p) != stopped)
        .collect();
    if derived.len() == survivors {
        return Ok(Contributors {
            dropped: statuses
                .iter()
                .filter(|(p, _)| Some(*p) == stopped)
                .map(|(p, s)| (*p, what(p, s.as_ref())))
                .collect(),
            contributed: derived,
            source: format!(
                "derived: the partners invited less the one the demo stopped mid-round; the coordinator names none of them (its receipt and audit log give only the count, {survivors}, which agrees)"
            ),
        });
    }
    if invited.len() == survivors {
        return Ok(Contributors {
            contributed: invited.to_vec(),
            dropped: Vec::new(),
            source: format!("every invited partner: the receipt counts {survivors}"),
        });
    }
    Err(format!(
        "{round_name}: the receipt counts {survivors} partners, but neither the journals ({}) nor the dropout explain which",
        sent.join(", ")
    )
    .into())
}
