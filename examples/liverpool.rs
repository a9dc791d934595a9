//! The Liverpool demo: a coordinator on an embedded SQLite store and eight partner agents on
//! loopback, each with its own synthetic extract of a 200,000-resident city region, playing a
//! session a city-region data co-operative would recognise. A board of three (threshold 2)
//! signs the federation's manifest and the approval of a large query with `civic-board`'s
//! functions; the agents trust the board's keys, not the coordinator.
//!
//! ```sh
//! cargo run --release --example liverpool [-- --out DIR --residents N]
//! ```
//!
//! It prints each release beside the true value computed straight from the synthetic data,
//! the cost and the budget left, and writes `report.json` and `report.html` to the output
//! directory (default `liverpool-output`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use civic_api::Role;
use civic_client_sdk::agent::Agent;
use civic_client_sdk::board;
use civic_client_sdk::config::AgentConfig;
use civic_client_sdk::synth::{self, FALLS_PARTNERS, GP_FEDERATIONS, Resident};
use civic_policies::manifest::{
    Board as ManifestBoard, BoardMember, Manifest, ManifestDataset, ManifestPartner,
    RoundRequirements,
};
use civic_server::{AppState, Config};
use reqwest::Method;
use serde_json::{Value, json};

type Error = Box<dyn std::error::Error + Send + Sync>;

const SEED: u64 = 2026;

/// A released cell beside the truth.
struct Row {
    label: String,
    released: Option<f64>,
    interval: Option<(f64, f64)>,
    truth: f64,
}

/// One question of the session.
struct Question {
    title: &'static str,
    researcher: &'static str,
    request: Value,
    labels: Vec<String>,
    truth: Vec<f64>,
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
}

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() -> Result<(), Error> {
    // Parsed before anything runs: `--help` and a bad flag exit here, writing nothing.
    let Args { out, residents } = clap::Parser::parse();
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
        ..Config::default()
    };
    let (base, admin) = start_coordinator(config)?;
    let api = Api {
        base: base.clone(),
        http: reqwest::Client::new(),
    };
    println!("coordinator on {base} (store: embedded SQLite)\n");

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
    for (id, file) in [
        ("diabetes", "diabetes.toml"),
        ("falls-housing", "falls-housing.toml"),
    ] {
        let text = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("examples/liverpool")
                .join(file),
        )?;
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
        "board: datasets diabetes (5 GP federations) and falls-housing (acute trust, community & mental-health trust, council adult social care); NHS disclosure control; projects diabetes-care (ρ 0.6) and falls-prevention (ρ 0.45)\n"
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
    let mut identities = Vec::new();
    for p in &partners {
        let dir = work.join(p);
        std::fs::create_dir_all(&dir)?;
        let rows = synth::write_extract(p, &people, &dir.join("extract.csv"))?;
        write_private(&dir.join("token"), &tokens[p])?;
        let public = civic_client_sdk::identity::generate(&dir.join("identity.key"))?;
        std::fs::write(
            dir.join("partner.toml"),
            partner_config(p, &base, &board_keys),
        )?;
        println!("  {p:<20} {rows:>6} rows");
        identities.push((*p, public));
    }
    println!();

    // The board's manifest: its members, the partners and their keys, each dataset's policy
    // by digest, and the least every round must meet. Two of the three sign it
    // (`civic-board sign`); the coordinator stores it and cannot make one of its own.
    let manifest = federation_manifest(&board_keys, &identities)?;
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
        "board: manifest version 1 (digest {}…) signed by the chair and the vice-chair: {} partners, 2 datasets; every round withstands one colluding partner\n",
        &manifest.digest()[..16],
        identities.len()
    );

    // The agents trust the board's keys, not the coordinator.
    let mut agents = BTreeMap::new();
    for p in &partners {
        agents.insert(*p, spawn_agent(&work.join(p))?);
    }

    let diabetes_rows: Vec<&Resident> = people.iter().filter(|r| r.age >= 18).collect();
    let falls_rows: Vec<&Resident> = FALLS_PARTNERS
        .iter()
        .flat_map(|p| people.iter().filter(move |r| synth::holds(p, r)))
        .collect();
    let mut report = Vec::new();
    for (i, q) in questions(&diabetes_rows, &falls_rows)
        .into_iter()
        .enumerate()
    {
        // The third question is the one a federation drops out of half-way.
        let dropout = (i == 1).then_some("gp-east");
        let entry = ask(&api, &tokens, q, dropout, &mut agents, &work).await?;
        report.push(entry);
    }

    // A question the project can no longer afford.
    let over = json!({
        "project": "falls-prevention",
        "query": { "dataset": "falls-housing", "statistic": { "linear_regression": { "features": ["decades_over_65", "lives_alone", "home_adaptations"], "target": "falls_admissions" } },
                   "filter": { "compare": { "column": "age", "op": "ge", "value": 75 } } },
        "privacy": { "epsilon": 0.8 }
    });
    let (status, refusal) = api
        .call(Method::POST, "/v1/queries", &tokens["dr-ben"], Some(over))
        .await?;
    println!(
        "dr-ben asks for another regression (over-75s) at ε = 0.8: refused ({status} {})",
        refusal["code"].as_str().unwrap_or("")
    );
    println!("  {}\n", refusal["detail"].as_str().unwrap_or(""));

    let mut budgets = Vec::new();
    for d in ["diabetes", "falls-housing"] {
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

    let json_report = json!({ "seed": SEED, "residents": residents, "questions": report, "over_budget": { "status": status, "refusal": refusal }, "budgets": budgets, "audit": verify });
    std::fs::write(
        out.join("report.json"),
        serde_json::to_string_pretty(&json_report)?,
    )?;
    std::fs::write(out.join("report.html"), html(&json_report))?;
    println!(
        "\nreport: {} and {}",
        out.join("report.json").display(),
        out.join("report.html").display()
    );
    println!("finished in {:.1} s", started.elapsed().as_secs_f64());
    for (_, a) in agents {
        a.abort();
    }
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}

/// The board's three members: each signs with a key of their own (threshold 2).
const BOARD: [&str; 3] = ["chair", "vice-chair", "resident-member"];

/// Writes a secret file (a token) only its owner can read, as the agent requires.
fn write_private(path: &Path, text: &str) -> Result<(), Error> {
    std::fs::write(path, text)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}

/// The organisation behind a demo partner, for the manifest.
fn organisation(partner: &str) -> &'static str {
    match partner {
        "acute-trust" => "an acute NHS trust",
        "community-mh-trust" => "a community and mental-health NHS trust",
        "council-asc" => "a council's adult social care",
        _ => "a GP federation",
    }
}

/// Version 1 of the federation's manifest.
fn federation_manifest(
    board_keys: &[(&str, String)],
    partners: &[(&str, String)],
) -> Result<Manifest, Error> {
    let policies = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/liverpool");
    let mut datasets = Vec::new();
    for (id, file) in [
        ("diabetes", "diabetes.toml"),
        ("falls-housing", "falls-housing.toml"),
    ] {
        datasets.push(ManifestDataset {
            id: id.into(),
            policy_digest: board::policy_digest(&policies.join(file))?,
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
    let gp = GP_FEDERATIONS.contains(&partner);
    let columns = if gp {
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
            "property_type",
            "tenure",
            "damp_mould_reports",
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

fn spawn_agent(dir: &Path) -> Result<tokio::task::JoinHandle<()>, Error> {
    let agent = Arc::new(Agent::new(AgentConfig::load(&dir.join("partner.toml"))?)?);
    Ok(tokio::spawn(agent.run()))
}

/// The session's questions with their true values, computed straight from the rows the
/// partners hold.
fn questions(diabetes: &[&Resident], falls: &[&Resident]) -> Vec<Question> {
    let age_bands = ["18-39", "40-59", "60-79", "80+"];
    let band = |age: u32| match age.clamp(18, 100) {
        a if a < 40 => 0,
        a if a < 60 => 1,
        a if a < 80 => 2,
        _ => 3,
    };
    let mut prevalence = vec![0.0; 20];
    for r in diabetes {
        prevalence[(r.decile as usize - 1) * 2 + usize::from(r.diabetes)] += 1.0;
    }
    let (mut sums, mut counts) = (vec![0.0; 4], vec![0.0; 4]);
    for r in diabetes.iter().filter(|r| r.diabetes) {
        if let Some(h) = r.hba1c {
            sums[band(r.age)] += h.clamp(20.0, 150.0);
            counts[band(r.age)] += 1.0;
        }
    }
    let means: Vec<f64> = sums.iter().zip(&counts).map(|(s, c)| s / c).collect();
    let types = ["house", "bungalow", "flat", "maisonette", "other"];
    let mut falls_by_type = vec![0.0; 5];
    for r in falls.iter().filter(|r| r.age >= 65) {
        let t = types
            .iter()
            .position(|t| *t == r.property_type)
            .unwrap_or(4);
        falls_by_type[t] += f64::from(r.falls_admissions.min(5));
    }
    let mut damp = vec![0.0; 6];
    for r in falls {
        let d = match r.damp_mould_reports.min(4) {
            0 => 0,
            1 => 1,
            _ => 2,
        };
        damp[d * 2 + usize::from(r.respiratory_admissions > 0)] += 1.0;
    }
    let over65: Vec<&&Resident> = falls.iter().filter(|r| r.age >= 65).collect();
    let beta = ols(&over65
        .iter()
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
        .collect::<Vec<_>>());
    let deciles: Vec<String> = (1..=10)
        .flat_map(|d| {
            [
                format!("decile {d}, no diabetes"),
                format!("decile {d}, diabetes"),
            ]
        })
        .collect();
    vec![
        Question {
            title: "Diabetes prevalence by deprivation decile",
            researcher: "dr-amara",
            request: json!({ "project": "diabetes-care", "query": { "dataset": "diabetes", "statistic": { "histogram": { "columns": ["has_diabetes"] } }, "group_by": ["deprivation_decile"] }, "privacy": { "rho": 0.05 } }),
            labels: deciles,
            truth: prevalence,
        },
        Question {
            title: "Mean HbA1c (mmol/mol) among people with diabetes, by age band",
            researcher: "dr-amara",
            request: json!({ "project": "diabetes-care", "query": { "dataset": "diabetes", "statistic": { "mean": { "column": "hba1c" } }, "group_by": ["age"], "filter": { "compare": { "column": "has_diabetes", "op": "eq", "value": true } } }, "privacy": { "rho": 0.08 } }),
            labels: age_bands.iter().map(|b| format!("age {b}")).collect(),
            truth: means,
        },
        Question {
            title: "Falls admissions among over-65s, by property type",
            researcher: "dr-ben",
            request: json!({ "project": "falls-prevention", "query": { "dataset": "falls-housing", "statistic": { "sum": { "column": "falls_admissions" } }, "group_by": ["property_type"], "filter": { "compare": { "column": "age", "op": "ge", "value": 65 } } }, "privacy": { "epsilon": 0.3 } }),
            labels: types.iter().map(|t| t.to_string()).collect(),
            truth: falls_by_type,
        },
        Question {
            title: "Damp and mould reports × respiratory admissions",
            researcher: "dr-ben",
            request: json!({ "project": "falls-prevention", "query": { "dataset": "falls-housing", "statistic": { "histogram": { "columns": ["damp_mould_reports", "respiratory_admissions"] } } }, "privacy": { "epsilon": 0.3 } }),
            labels: ["no damp", "1 damp report", "2+ damp reports"]
                .iter()
                .flat_map(|d| {
                    [
                        format!("{d}, no resp. admission"),
                        format!("{d}, resp. admission"),
                    ]
                })
                .collect(),
            truth: damp,
        },
        Question {
            title: "Linear model of falls admissions (over-65s) on age (decades past 65), living alone and home adaptations",
            researcher: "dr-ben",
            request: json!({ "project": "falls-prevention", "query": { "dataset": "falls-housing", "statistic": { "linear_regression": { "features": ["decades_over_65", "lives_alone", "home_adaptations"], "target": "falls_admissions" } }, "filter": { "compare": { "column": "age", "op": "ge", "value": 65 } } }, "privacy": { "epsilon": 0.8 } }),
            labels: [
                "intercept",
                "decades over 65",
                "lives alone",
                "home adaptations",
            ]
            .iter()
            .map(|s| format!("β {s}"))
            .collect(),
            truth: beta,
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
async fn ask(
    api: &Api,
    tokens: &BTreeMap<&str, String>,
    q: Question,
    dropout: Option<&'static str>,
    agents: &mut BTreeMap<&'static str, tokio::task::JoinHandle<()>>,
    work: &Path,
) -> Result<Value, Error> {
    let board_dir = work.join("board");
    let token = &tokens[q.researcher];
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
        println!(
            "   above the board's threshold: waiting for {} approvals",
            submitted["approvals_required"]
        );
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
            println!("   approved by the {member}, signing the query's fingerprint");
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
        println!(
            "   {victim}'s agent stops mid-round (killed after joining); the round goes on without it"
        );
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
        println!("   {victim}'s agent restarted: its journal keeps it out of the round it left");
    }
    if done["state"] != "released" {
        return Err(format!("query {id} ended {}: {}", done["state"], done["reason"]).into());
    }
    let result = &done["result"];
    let cells: Vec<&Value> = match result["rows"].as_array() {
        Some(rows) if rows.len() == 1 => rows[0]
            .as_array()
            .map(|c| c.iter().collect())
            .unwrap_or_default(),
        Some(rows) => rows.iter().filter_map(|r| r.get(0)).collect(),
        None => Vec::new(),
    };
    let rows: Vec<Row> = q
        .labels
        .iter()
        .zip(&q.truth)
        .zip(cells)
        .map(|((label, truth), c)| Row {
            label: label.clone(),
            released: c["value"].as_f64(),
            interval: c["interval"]
                .as_array()
                .and_then(|i| Some((i.first()?.as_f64()?, i.get(1)?.as_f64()?))),
            truth: *truth,
        })
        .collect();
    println!(
        "   released from {} partners:",
        result["receipt"]["survivors"]
    );
    println!(
        "   {:<38} {:>12} {:>25} {:>12}",
        "", "released", "95% interval", "true"
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
            r.label, released, interval, r.truth
        );
    }
    for c in result["receipt"]["caveats"]
        .as_array()
        .into_iter()
        .flatten()
    {
        println!("   note: {}", c.as_str().unwrap_or(""));
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
        "title": q.title,
        "researcher": q.researcher,
        "dataset": dataset,
        "project": done["project"],
        "cost": done["cost"],
        "survivors": result["receipt"]["survivors"],
        "approvals": done["approvals"],
        "cells": rows.iter().map(|r| json!({ "label": r.label, "released": r.released, "interval": r.interval, "truth": r.truth })).collect::<Vec<_>>(),
        "remaining_rho": budget["remaining_rho"],
        "receipt": result["receipt"],
    }))
}

/// A small self-contained HTML report: budget spent per project, and released against true
/// values with their intervals (inline SVG, no scripts).
fn html(report: &Value) -> String {
    let mut page = String::from(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Civic: Liverpool demo</title><style>body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;color:#222}table{border-collapse:collapse;margin:.5rem 0 1.5rem}td,th{padding:.2rem .6rem;border-bottom:1px solid #ddd;text-align:right}td:first-child,th:first-child{text-align:left}.true{fill:#c0392b}.rel{fill:#1f6fb2}</style></head><body><h1>Civic: the Liverpool demo</h1><p>Synthetic data. Each release was computed by secure aggregation over the partners' masked vectors, noised once and charged to the project's budget; true values are computed directly from the synthetic data.</p><h2>Budget spent per project</h2>",
    );
    let mut bars = Vec::new();
    for b in report["budgets"].as_array().into_iter().flatten() {
        for p in b["projects"].as_array().into_iter().flatten() {
            bars.push((
                format!(
                    "{} ({})",
                    p["project"].as_str().unwrap_or(""),
                    b["dataset"].as_str().unwrap_or("")
                ),
                p["charged_rho"].as_f64().unwrap_or(0.0),
                p["cap_rho"].as_f64().unwrap_or(1.0),
            ));
        }
    }
    let _ = write!(
        page,
        "<svg width=\"640\" height=\"{}\">",
        30 * bars.len() + 10
    );
    for (i, (name, charged, cap)) in bars.iter().enumerate() {
        let y = 10 + 30 * i;
        let w = 400.0 * (charged / cap).min(1.0);
        let _ = write!(
            page,
            "<text x=\"0\" y=\"{}\" font-size=\"12\">{}</text><rect x=\"230\" y=\"{y}\" width=\"400\" height=\"18\" fill=\"#eee\"/><rect x=\"230\" y=\"{y}\" width=\"{w:.1}\" height=\"18\" class=\"rel\"/><text x=\"235\" y=\"{}\" font-size=\"11\" fill=\"#fff\">ρ {charged:.3} of {cap}</text>",
            y + 13,
            escape(name),
            y + 13
        );
    }
    page.push_str("</svg>");
    for q in report["questions"].as_array().into_iter().flatten() {
        let _ = write!(
            page,
            "<h2>{}</h2><p>{} · query {} · cost ρ {:.4} · {} partners</p>",
            escape(q["title"].as_str().unwrap_or("")),
            escape(q["researcher"].as_str().unwrap_or("")),
            q["query_id"],
            q["cost"]["rho"].as_f64().unwrap_or(0.0),
            q["survivors"]
        );
        let cells: Vec<&Value> = q["cells"]
            .as_array()
            .map(|c| c.iter().collect())
            .unwrap_or_default();
        let top = cells
            .iter()
            .flat_map(|c| {
                [
                    c["truth"].as_f64(),
                    c["released"].as_f64(),
                    c["interval"][1].as_f64(),
                ]
            })
            .flatten()
            .fold(0f64, |a, b| a.max(b.abs()))
            .max(1e-9);
        let _ = write!(
            page,
            "<svg width=\"640\" height=\"{}\">",
            22 * cells.len() + 10
        );
        for (i, c) in cells.iter().enumerate() {
            let y = 10 + 22 * i;
            let x = |v: f64| 230.0 + 400.0 * (v / top).clamp(-1.0, 1.0).max(0.0);
            let _ = write!(
                page,
                "<text x=\"0\" y=\"{}\" font-size=\"11\">{}</text>",
                y + 10,
                escape(c["label"].as_str().unwrap_or(""))
            );
            if let (Some(lo), Some(hi)) = (c["interval"][0].as_f64(), c["interval"][1].as_f64()) {
                let _ = write!(
                    page,
                    "<line x1=\"{:.1}\" x2=\"{:.1}\" y1=\"{}\" y2=\"{}\" stroke=\"#1f6fb2\"/>",
                    x(lo),
                    x(hi),
                    y + 6,
                    y + 6
                );
            }
            if let Some(v) = c["released"].as_f64() {
                let _ = write!(
                    page,
                    "<circle cx=\"{:.1}\" cy=\"{}\" r=\"4\" class=\"rel\"/>",
                    x(v),
                    y + 6
                );
            }
            let _ = write!(
                page,
                "<rect x=\"{:.1}\" y=\"{}\" width=\"3\" height=\"12\" class=\"true\"/>",
                x(c["truth"].as_f64().unwrap_or(0.0)) - 1.5,
                y
            );
        }
        page.push_str("</svg><table><tr><th>cell</th><th>released</th><th>95% interval</th><th>true</th></tr>");
        for c in &cells {
            let released = c["released"]
                .as_f64()
                .map_or("suppressed".into(), |v| format!("{v:.2}"));
            let interval = match (c["interval"][0].as_f64(), c["interval"][1].as_f64()) {
                (Some(lo), Some(hi)) => format!("[{lo:.2}, {hi:.2}]"),
                _ => String::new(),
            };
            let _ = write!(
                page,
                "<tr><td>{}</td><td>{released}</td><td>{interval}</td><td>{:.2}</td></tr>",
                escape(c["label"].as_str().unwrap_or("")),
                c["truth"].as_f64().unwrap_or(0.0)
            );
        }
        page.push_str("</table>");
    }
    let _ = write!(
        page,
        "<h2>Refused</h2><p>{}</p><p>Audit log: {} entries, chain verified: {}.</p></body></html>",
        escape(
            report["over_budget"]["refusal"]["detail"]
                .as_str()
                .unwrap_or("")
        ),
        report["audit"]["entries"],
        report["audit"]["verified"]
    );
    page
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
