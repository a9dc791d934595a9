//! One training iteration end to end over loopback: a coordinator on an embedded SQLite
//! store and 8 partner agents (the real `Agent`, as `civic-agent` runs it), each reading its
//! own CSV extract of 50,000 residents, fit a logistic model of 20 features: from the job's
//! submission to its release, every agent scanning its extract, computing its residents'
//! gradient and information contributions at the announced coefficients, adding its noise
//! share and masking its vector; the coordinator unmasking the noisy sum and taking the
//! Newton step. Beside it, the same iteration with masking off (civic-secagg's switch) and
//! no noise (central noise, switched off by the test hook): the same agents, scans, phases
//! and messages. Then a whole job of 5 iterations, with masking and the partners' noise.
//!
//! `cargo bench --features bench-unmasked --bench training_round` (about 3 minutes once
//! built); `cargo test --features bench-unmasked --bench training_round` one small case as a
//! check. The plain arm's coefficients must equal the Newton step on the pooled extracts to
//! 10⁻⁶, or the bench stops.

#[path = "../server/tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use civic_client_sdk::agent::{Agent, RoundOutcome};
use civic_client_sdk::config::AgentConfig;
use civic_mechanisms::AggregationPlan;
use civic_policies::{DatasetPolicy, Query};
use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const PARTNERS: usize = 8;
const FEATURES: usize = 20;
const REPEATS: usize = 3;

/// The dataset: 20 standardised measurements and an outcome; noise at the partners unless
/// `central`.
fn policy(id: &str, partners: &[String], central: bool) -> String {
    let names: Vec<String> = partners.iter().map(|p| format!("{p:?}")).collect();
    let mut columns = String::new();
    for j in 1..=FEATURES {
        columns.push_str(&format!(
            "[[columns]]\nname = \"x{j:02}\"\ntype = \"decimal\"\nmin = -3.0\nmax = 3.0\nresolution = 0.001\n\n"
        ));
    }
    format!(
        "[dataset]\nid = \"{id}\"\ntitle = \"A training bench\"\npartners = [{}]\n\n\
         [contribution]\nrows_per_resident_per_partner = 1\nmax_partners_per_person = 1\n\n\
         {columns}[[columns]]\nname = \"y\"\ntype = \"boolean\"\n\n\
         [budget]\ntotal = {{ rho = 100000.0 }}\nper_query = {{ rho = 5000.0 }}\n\n\
         [governance]\nmin_partners = 2\n{}\n[governance.approval]\nabove = {{ rho = 4000.0 }}\napprovals_required = 2\n\n\
         [disclosure]\nprofile = \"none\"\n",
        names.join(", "),
        if central { "noise = \"central\"\n" } else { "" }
    )
}

/// A partner's extract: standard normal measurements and an outcome from a logistic model
/// of them; the rows, for the pooled fit.
fn extract(path: &Path, seed: u64, rows: u32) -> Vec<(Vec<f64>, usize)> {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let mut unit = || (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
    let mut csv = String::from("pid");
    for j in 1..=FEATURES {
        csv.push_str(&format!(",x{j:02}"));
    }
    csv.push_str(",y\n");
    let mut data = Vec::new();
    for i in 0..rows {
        let x: Vec<f64> = (0..FEATURES)
            .map(|_| {
                let (u1, u2) = (unit().max(1e-12), unit());
                let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
                (z.clamp(-3.0, 3.0) * 1000.0).round() / 1000.0
            })
            .collect();
        let eta: f64 = -0.5
            + x.iter()
                .enumerate()
                .map(|(j, v)| v * 0.4 * if j % 2 == 0 { 1.0 } else { -0.5 })
                .sum::<f64>();
        let y = unit() < 1.0 / (1.0 + (-eta).exp());
        csv.push_str(&format!("{seed}-{i}"));
        for v in &x {
            csv.push_str(&format!(",{v}"));
        }
        csv.push_str(&format!(",{y}\n"));
        data.push((x, usize::from(y)));
    }
    std::fs::write(path, csv).unwrap();
    data
}

fn agent_config(dir: &Path, base: &str, token: &str) -> String {
    std::fs::write(dir.join("token"), token).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let private = std::fs::Permissions::from_mode(0o600);
        std::fs::set_permissions(dir.join("token"), private).unwrap();
    }
    let mut columns = String::new();
    for j in 1..=FEATURES {
        columns.push_str(&format!("x{j:02} = \"x{j:02}\"\n"));
    }
    columns.push_str("y = \"y\"\n");
    let mapping = |id: &str| {
        format!(
            "[[datasets]]\nid = \"{id}\"\nresident_column = \"pid\"\n\n[datasets.source]\nkind = \"csv\"\npath = \"extract.csv\"\n\n[datasets.columns]\n{columns}\n"
        )
    };
    format!(
        "identity_key = \"identity.key\"\nstate_dir = \"state\"\n\n{}\n[coordinator]\nurl = \"{base}\"\ntoken_file = \"token\"\npoll_seconds = 0.2\n\n[limits]\nmax_rho_per_query = 1000.0\ntotal_rho = 100000.0\nmin_survivors = 2\n\n{}{}",
        common::board_toml(),
        mapping("train"),
        mapping("train-plain")
    )
}

fn job(dataset: &str, iterations: u32, rho: f64) -> Value {
    let features: Vec<String> = (1..=FEATURES).map(|j| format!("x{j:02}")).collect();
    json!({
        "project": "falls",
        "query": {
            "dataset": dataset,
            "statistic": { "logistic_regression": {
                "features": features, "outcome": "y", "iterations": iterations
            } }
        },
        "privacy": { "rho": rho }
    })
}

/// Waits for job `id` to be released while the agents poll; the seconds from `started`, and
/// the job.
async fn run_job(c: &common::Coordinator, id: i64, started: Instant) -> (f64, Value) {
    loop {
        let (s, q) = c
            .call(
                Method::GET,
                &format!("/v1/queries/{id}"),
                Some(&c.researcher),
                None,
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{q}");
        match q["state"].as_str() {
            Some("running") | Some("submitted") => {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await
            }
            Some("released") => return (started.elapsed().as_secs_f64(), q),
            _ => panic!("training job {id}: {q}"),
        }
    }
}

/// Each agent polling on its own, as `civic-agent run` does (every 5 ms here), until
/// `stop`; a round any agent leaves stops the bench.
fn poll_agents(
    agents: &[Arc<Agent>],
    stop: &Arc<std::sync::atomic::AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    agents
        .iter()
        .map(|a| {
            let (a, stop) = (Arc::clone(a), Arc::clone(stop));
            tokio::spawn(async move {
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let outcomes = a.once().await.unwrap();
                    // Skipped: a round still listed that this agent has finished.
                    assert!(
                        outcomes.iter().all(|(_, o)| matches!(
                            o,
                            RoundOutcome::Finished | RoundOutcome::Skipped
                        )),
                        "{outcomes:?}"
                    );
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                }
            })
        })
        .collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

async fn run(rows: u32) {
    println!("{PARTNERS} partners × {rows} residents, {FEATURES} features:");
    let root = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}", root.path().join("civic.db").display());
    let mut c = common::start_on_own_system(civic_server::Config {
        store_url: store,
        tick_millis: 5,
        max_rows_per_partner: 100_000,
        ..civic_server::Config::default()
    });
    for i in 3..PARTNERS {
        c.add_partner(&format!("gp-{i}")).await;
    }
    let names: Vec<String> = c.partners.iter().map(|p| p.0.clone()).collect();
    let private = policy("train", &names, false);
    let plain = policy("train-plain", &names, true);
    c.add_dataset_for_falls("train", &private, 50_000.0).await;
    c.add_dataset_for_falls("train-plain", &plain, 50_000.0)
        .await;
    let mut listed = Vec::new();
    let mut pooled = Vec::new();
    for (i, (name, _, token)) in c.partners.iter().enumerate() {
        let dir = root.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        pooled.extend(extract(&dir.join("extract.csv"), 100 + i as u64, rows));
        std::fs::write(dir.join("partner.toml"), agent_config(&dir, &c.base, token)).unwrap();
        let key = civic_client_sdk::identity::generate(&dir.join("identity.key")).unwrap();
        listed.push((name.clone(), key));
    }
    let manifest = common::city_manifest(&listed, &c.city_toml());
    let manifest = common::with_dataset(manifest, "train", &private);
    let manifest = common::with_dataset(manifest, "train-plain", &plain);
    let (s, v) = c.publish(&common::signed(manifest, &[201, 203])).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let mut agents = Vec::new();
    for (name, _) in &listed {
        let config = AgentConfig::load(&root.path().join(name).join("partner.toml")).unwrap();
        let agent = Arc::new(Agent::new(config).unwrap());
        agent.register().await.unwrap();
        agents.push(agent);
    }
    c.state.rounds.switch_off_central_noise_for_tests();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let polling = poll_agents(&agents, &stop);

    // The plain arm's first step, against the same step on the pooled rows.
    let policy = DatasetPolicy::from_toml(&plain, "train-plain").unwrap();
    let query: Query = serde_json::from_value(job("train-plain", 1, 1.0)["query"].clone()).unwrap();
    let model = AggregationPlan::compile(&query.validate(&policy).unwrap(), &policy, 100_000)
        .unwrap()
        .logistic()
        .unwrap();
    let beta = vec![0.0; model.coefficients()];
    let total = model.partner_sum(&beta, pooled.iter().map(|(x, y)| (x.as_slice(), *y)));
    let expected = model.unscaled(&model.newton_step(&beta, &total).unwrap());

    let (mut masked, mut unmasked) = (Vec::new(), Vec::new());
    for rep in 0..REPEATS {
        // A different ρ makes each repeat a new question (an old one would be re-served).
        let rho = 100.0 + rep as f64;
        for (dataset, off) in [("train", false), ("train-plain", true)] {
            civic_secagg::baseline::set_masking_off(off);
            let started = Instant::now();
            let (s, q) = c.submit(job(dataset, 1, rho)).await;
            assert_eq!(s, StatusCode::CREATED, "{q}");
            let (seconds, done) = run_job(&c, q["id"].as_i64().unwrap(), started).await;
            if off {
                let rows = done["result"]["rows"].as_array().unwrap();
                for (i, (row, want)) in rows.iter().zip(&expected).enumerate() {
                    let got = row[0]["value"].as_f64().unwrap();
                    assert!(
                        (got - want).abs() <= 1e-6 * want.abs().max(1.0),
                        "coefficient {i}: plain {got}, pooled {want}"
                    );
                }
                unmasked.push(seconds);
            } else {
                assert_eq!(done["result"]["receipt"]["noise"], "distributed", "{done}");
                masked.push(seconds);
            }
        }
    }
    civic_secagg::baseline::set_masking_off(false);
    let (m, u) = (median(masked.clone()), median(unmasked.clone()));
    println!(
        "  one iteration, submission to release over loopback: {m:.2} s masked with the \
         partners' noise, {u:.2} s plain (median of {REPEATS}; {masked:.2?} and {unmasked:.2?}): \
         {:.2}×",
        m / u
    );
    let started = Instant::now();
    let (s, q) = c.submit(job("train", 5, 500.0)).await;
    assert_eq!(s, StatusCode::CREATED, "{q}");
    let (seconds, _) = run_job(&c, q["id"].as_i64().unwrap(), started).await;
    println!(
        "  a whole job of 5 iterations, masked with the partners' noise: {seconds:.1} s \
         ({:.2} s an iteration)",
        seconds / 5.0
    );
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for p in polling {
        p.await.unwrap();
    }
    c.stop().await;
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run(if full { 50_000 } else { 300 }));
}
