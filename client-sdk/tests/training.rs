//! Training jobs end to end: four partner agents reading their own CSV extracts of
//! synthetic antibiotic prescriptions fit a logistic model of first-line failure with a real
//! coordinator on loopback, one round per Newton step, trusting the board's signed manifest.

#[path = "../../server/tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use civic_client_sdk::agent::{Agent, RoundOutcome};
use civic_client_sdk::config::AgentConfig;
use civic_client_sdk::synth::{Prescription, prescriptions};
use civic_mechanisms::AggregationPlan;
use civic_mechanisms::learning::LogisticPlan;
use civic_policies::{DatasetPolicy, Query};
use common::{Coordinator, fresh_store_url, test_config};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// The prescribing dataset, for partners `{partners}`; noise at the partners unless
/// `central`.
fn policy(partners: &[String], central: bool) -> String {
    let names: Vec<String> = partners.iter().map(|p| format!("{p:?}")).collect();
    format!(
        r#"
[dataset]
id = "antibiotics"
title = "First-line antibiotic failure in primary care"
partners = [{}]

[contribution]
rows_per_resident_per_partner = 1
max_partners_per_person = 1

[[columns]]
name = "age"
type = "integer"
min = 18
max = 100

[[columns]]
name = "sex"
type = "category"
domain = ["female", "male"]

[[columns]]
name = "egfr"
type = "decimal"
min = 10.0
max = 120.0
resolution = 0.1

[[columns]]
name = "recent_antibiotic"
type = "boolean"

[[columns]]
name = "care_home"
type = "boolean"

[[columns]]
name = "antibiotic"
type = "category"
domain = ["nitrofurantoin", "trimethoprim", "amoxicillin", "doxycycline", "flucloxacillin"]

[[columns]]
name = "organism"
type = "category"
domain = ["gram_negative", "gram_positive", "other"]

[[columns]]
name = "failed"
type = "boolean"

[budget]
total = {{ rho = 10000.0 }}
per_query = {{ rho = 5000.0 }}
min_per_query = {{ rho = 0.0001 }}

[governance]
min_partners = 2
{}
[governance.approval]
above = {{ rho = 2500.0 }}
approvals_required = 2

[disclosure]
profile = "none"
"#,
        names.join(", "),
        if central { "noise = \"central\"\n" } else { "" }
    )
}

const FEATURES: [&str; 6] = [
    "age",
    "sex",
    "egfr",
    "recent_antibiotic",
    "care_home",
    "antibiotic",
];

/// The job: failure on the features, in `iterations` Newton steps, at `rho` for the whole.
fn job(iterations: u32, rho: f64) -> Value {
    json!({
        "project": "falls",
        "query": {
            "dataset": "antibiotics",
            "statistic": { "logistic_regression": {
                "features": FEATURES, "outcome": "failed", "iterations": iterations
            } }
        },
        "privacy": { "rho": rho }
    })
}

fn write_private(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
}

struct Site {
    dir: PathBuf,
    rows: Vec<Prescription>,
    key: String,
}

impl Site {
    /// A partner's extract of `n` prescriptions and its agent's configuration.
    fn create(root: &Path, site: usize, n: u32, base: &str, token: &str) -> Site {
        let dir = root.join(format!("site-{site}"));
        std::fs::create_dir_all(&dir).unwrap();
        let rows = prescriptions(40 + site as u64, n);
        let mut csv =
            String::from("pid,age,sex,egfr,recent_abx,care_home,antibiotic,organism,failed\n");
        for (i, p) in rows.iter().enumerate() {
            csv.push_str(&format!(
                "{}-{i},{},{},{},{},{},{},{},{}\n",
                site,
                p.age,
                p.sex,
                p.egfr,
                if p.recent_antibiotic { "Y" } else { "N" },
                p.care_home,
                p.antibiotic,
                p.organism,
                p.failed
            ));
        }
        std::fs::write(dir.join("prescriptions.csv"), csv).unwrap();
        write_private(&dir.join("token"), token);
        let key = civic_client_sdk::identity::generate(&dir.join("identity.key")).unwrap();
        let board = common::board_toml();
        let config = format!(
            r#"
identity_key = "identity.key"
state_dir = "state"

{board}
[coordinator]
url = "{base}"
token_file = "token"
poll_seconds = 0.2

[limits]
max_rho_per_query = 100000.0
total_rho = 100000.0
min_survivors = 2

[[datasets]]
id = "antibiotics"
resident_column = "pid"

[datasets.source]
kind = "csv"
path = "prescriptions.csv"

[datasets.columns]
age = "age"
sex = "sex"
egfr = "egfr"
recent_antibiotic = {{ column = "recent_abx", values = {{ "Y" = "true", "N" = "false" }} }}
care_home = "care_home"
antibiotic = "antibiotic"
organism = "organism"
failed = "failed"
"#
        );
        std::fs::write(dir.join("partner.toml"), config).unwrap();
        Site { dir, rows, key }
    }

    fn agent(&self) -> Arc<Agent> {
        let config = AgentConfig::load(&self.dir.join("partner.toml")).unwrap();
        Arc::new(Agent::new(config).unwrap())
    }
}

/// A coordinator with four partners serving "antibiotics" (noise `central` or at the
/// partners), signed into the board's manifest, and their agents.
async fn federation(
    tag: &str,
    root: &Path,
    rows: u32,
    central: bool,
) -> (Coordinator, Vec<Site>, Vec<Arc<Agent>>, DatasetPolicy) {
    let mut c = common::start_on_own_system(test_config(&fresh_store_url(tag)));
    c.add_partner("clinic-d").await;
    let names: Vec<String> = c.partners.iter().map(|p| p.0.clone()).collect();
    let text = policy(&names, central);
    c.add_dataset_for_falls("antibiotics", &text, 5000.0).await;
    let mut sites = Vec::new();
    let mut listed = Vec::new();
    for (i, (name, _, token)) in c.partners.iter().enumerate() {
        let site = Site::create(root, i, rows + 100 * i as u32, &c.base, token);
        listed.push((name.clone(), site.key.clone()));
        sites.push(site);
    }
    let manifest = common::with_dataset(
        common::city_manifest(&listed, &c.city_toml()),
        "antibiotics",
        &text,
    );
    let (s, v) = c.publish(&common::signed(manifest, &[201, 203])).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let mut agents = Vec::new();
    for site in &sites {
        let agent = site.agent();
        agent.register().await.unwrap();
        agents.push(agent);
    }
    let policy = DatasetPolicy::from_toml(&text, "antibiotics").unwrap();
    (c, sites, agents, policy)
}

async fn all_once(agents: &[Arc<Agent>]) -> Vec<Vec<(i64, RoundOutcome)>> {
    let tasks: Vec<_> = agents
        .iter()
        .map(|a| {
            let a = Arc::clone(a);
            tokio::spawn(async move { a.once().await.unwrap() })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

/// Runs the agents until query `id` leaves `running`; returns its view and every round's
/// outcomes.
async fn train(
    c: &Coordinator,
    agents: &[Arc<Agent>],
    id: i64,
) -> (Value, Vec<Vec<(i64, RoundOutcome)>>) {
    let mut outcomes = Vec::new();
    for _ in 0..400 {
        let (s, q) = c
            .call(
                Method::GET,
                &format!("/v1/queries/{id}"),
                Some(&c.researcher),
                None,
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{q}");
        if q["state"] != "running" {
            return (q, outcomes);
        }
        outcomes.extend(all_once(agents).await.into_iter().filter(|o| !o.is_empty()));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_, q) = c
        .call(
            Method::GET,
            &format!("/v1/queries/{id}"),
            Some(&c.researcher),
            None,
        )
        .await;
    panic!("training job {id} did not finish: {q}");
}

/// Each row's raw model inputs (the features in the plan's order, a category as indicators
/// of its values but the first) and outcome class.
fn inputs(p: &Prescription) -> (Vec<f64>, usize) {
    let flag = |b: bool| f64::from(u8::from(b));
    let mut x = vec![
        f64::from(p.age),
        flag(p.sex == "male"),
        p.egfr,
        flag(p.recent_antibiotic),
        flag(p.care_home),
    ];
    for a in [
        "trimethoprim",
        "amoxicillin",
        "doxycycline",
        "flucloxacillin",
    ] {
        x.push(flag(p.antibiotic == a));
    }
    (x, usize::from(p.failed))
}

/// The model the job fits, as the coordinator plans it.
fn model(policy: &DatasetPolicy, iterations: u32) -> LogisticPlan {
    let query: Query = serde_json::from_value(job(iterations, 1.0)["query"].clone()).unwrap();
    let plan =
        AggregationPlan::compile(&query.validate(policy).unwrap(), policy, 1_000_000).unwrap();
    plan.logistic().unwrap()
}

/// The same Newton steps on the pooled rows, in floating point and without noise: the
/// non-private fit, in raw units.
fn pooled_fit(model: &LogisticPlan, sites: &[Site], iterations: u32) -> Vec<f64> {
    let rows: Vec<(Vec<f64>, usize)> = sites
        .iter()
        .flat_map(|s| s.rows.iter().map(inputs))
        .collect();
    let mut beta = vec![0.0; model.coefficients()];
    for _ in 0..iterations {
        let total = model.partner_sum(&beta, rows.iter().map(|(x, y)| (x.as_slice(), *y)));
        beta = model.newton_step(&beta, &total).unwrap();
    }
    model.unscaled(&beta)
}

fn coefficients(q: &Value) -> Vec<(f64, (f64, f64))> {
    q["result"]["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            let cell = &row[0];
            let interval = &cell["interval"];
            (
                cell["value"].as_f64().unwrap(),
                (interval[0].as_f64().unwrap(), interval[1].as_f64().unwrap()),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_the_noise_off_the_federated_fit_is_the_pooled_newton_fit() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("civic_server=warn")
        .try_init();
    let root = tempfile::tempdir().unwrap();
    let (c, sites, agents, policy) = federation("training-exact", root.path(), 500, true).await;
    c.state.rounds.switch_off_central_noise_for_tests();
    let iterations = 6;
    let (s, q) = c.submit(job(iterations, 60.0)).await;
    assert_eq!(s, StatusCode::CREATED, "{q}");
    let id = q["id"].as_i64().unwrap();
    let (done, outcomes) = train(&c, &agents, id).await;
    assert_eq!(done["state"], "released", "{done}");
    // Every agent took part in every round, one per iteration.
    let finished = outcomes
        .iter()
        .flatten()
        .filter(|(_, o)| *o == RoundOutcome::Finished)
        .count();
    assert_eq!(finished, 4 * iterations as usize, "{outcomes:?}");

    let expected = pooled_fit(&model(&policy, iterations), &sites, iterations);
    let got = coefficients(&done);
    assert_eq!(got.len(), expected.len());
    for (i, ((value, _), want)) in got.iter().zip(&expected).enumerate() {
        assert!(
            (value - want).abs() <= 1e-6 * want.abs().max(1.0),
            "coefficient {i}: federated {value}, pooled {want}"
        );
    }
    // The rows are named by feature, categories by value.
    let names = done["result"]["names"].as_array().unwrap();
    assert_eq!(names[0], "beta(intercept) for failed", "{done}");
    assert!(
        names.contains(&json!("beta(antibiotic=amoxicillin)")),
        "{done}"
    );
    // The receipt states the job and each iterate.
    let training = &done["result"]["receipt"]["training"];
    assert_eq!(training["iterations"], iterations, "{done}");
    assert_eq!(
        training["iterates"].as_array().unwrap().len(),
        iterations as usize
    );
}
