//! Training jobs end to end: four partner agents reading their own CSV extracts of
//! synthetic antibiotic prescriptions fit a logistic model of first-line failure with a real
//! coordinator on loopback, one round per Newton step, trusting the board's signed manifest.

#[path = "../../server/tests/common/mod.rs"]
mod common;
#[path = "federation/mod.rs"]
mod federation;

use std::path::{Path, PathBuf};
use std::sync::Arc;

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
    let columns = r#"
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
"#;
    let title = "First-line antibiotic failure in primary care";
    federation::policy("antibiotics", title, partners, central, columns)
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

struct Site {
    dir: PathBuf,
    rows: Vec<Prescription>,
    key: String,
}

impl Site {
    /// A partner's extract of `n` prescriptions and its agent's configuration.
    fn create(root: &Path, site: usize, n: u32, base: &str, token: &str, total_rho: f64) -> Site {
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
        let datasets = r#"
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
recent_antibiotic = { column = "recent_abx", values = { "Y" = "true", "N" = "false" } }
care_home = "care_home"
antibiotic = "antibiotic"
organism = "organism"
failed = "failed"
"#;
        let key = federation::partner(&dir, base, token, total_rho, datasets);
        Site { dir, rows, key }
    }

    fn agent(&self) -> Arc<Agent> {
        let config = AgentConfig::load(&self.dir.join("partner.toml")).unwrap();
        Arc::new(Agent::new(config).unwrap())
    }

    fn journal(&self) -> Value {
        let text = std::fs::read_to_string(self.dir.join("state/agent-state.json")).unwrap();
        serde_json::from_str(&text).unwrap()
    }
}

/// A coordinator with four partners serving "antibiotics" (noise `central` or at the
/// partners), signed into the board's manifest, and their agents, whose local totals are
/// `totals`.
async fn federation(
    store: &str,
    root: &Path,
    rows: u32,
    central: bool,
    totals: [f64; 4],
) -> (Coordinator, Vec<Site>, Vec<Arc<Agent>>, DatasetPolicy) {
    let mut c = common::start_on_own_system(test_config(store));
    c.add_partner("clinic-d").await;
    let names: Vec<String> = c.partners.iter().map(|p| p.0.clone()).collect();
    let text = policy(&names, central);
    c.add_dataset_for_falls("antibiotics", &text, 5000.0).await;
    let mut sites = Vec::new();
    let mut listed = Vec::new();
    for (i, (name, _, token)) in c.partners.iter().enumerate() {
        let site = Site::create(root, i, rows + 100 * i as u32, &c.base, token, totals[i]);
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

/// Runs the agents until query `id` leaves `running`; its view and each agent's outcomes.
async fn train(
    c: &Coordinator,
    agents: &[Arc<Agent>],
    id: i64,
) -> (Value, Vec<Vec<(i64, RoundOutcome)>>) {
    federation::until_done(c, agents, id).await
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

/// On SQLite, and on PostgreSQL when `CIVIC_TEST_POSTGRES_URL` is set.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_the_noise_off_the_federated_fit_is_the_pooled_newton_fit() {
    for store in common::backends("training-exact").await {
        noise_off_fit_is_the_pooled_fit(&store).await;
        common::drop_schema(&store).await;
    }
}

async fn noise_off_fit_is_the_pooled_fit(store: &str) {
    let root = tempfile::tempdir().unwrap();
    let (c, sites, agents, policy) = federation(store, root.path(), 500, true, [1e5; 4]).await;
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

/// The audit log's entries with action `action`.
async fn audited(c: &Coordinator, action: &str) -> Vec<Value> {
    let (s, page) = c
        .call(Method::GET, "/v1/audit?limit=1000", Some(&c.board[0]), None)
        .await;
    assert_eq!(s, StatusCode::OK, "{page}");
    page["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["action"] == action)
        .map(|r| serde_json::from_str(r["details"].as_str().unwrap()).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_the_partners_noise_the_model_lands_within_its_intervals_charged_round_by_round() {
    let root = tempfile::tempdir().unwrap();
    let (c, sites, agents, policy) = federation(
        &fresh_store_url("training-noisy"),
        root.path(),
        2000,
        false,
        [1e5; 4],
    )
    .await;
    let (iterations, rho) = (5, 50.0);
    let (s, preview) = c
        .call(
            Method::POST,
            "/v1/queries/preview",
            Some(&c.researcher),
            Some(job(iterations, rho)),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{preview}");
    // The preview states the expected accuracy per coefficient, narrowing with residents.
    let rows = preview["accuracy"].as_array().unwrap();
    assert_eq!(rows.len(), 10, "{preview}");
    let at = &rows[1]["half_width_at_rows"];
    assert!(
        at[0][1].as_f64().unwrap() > at[2][1].as_f64().unwrap(),
        "{preview}"
    );

    let (s, q) = c.submit(job(iterations, rho)).await;
    assert_eq!(s, StatusCode::CREATED, "{q}");
    let id = q["id"].as_i64().unwrap();
    let (done, _) = train(&c, &agents, id).await;
    assert_eq!(done["state"], "released", "{done}");
    assert_eq!(done["result"]["receipt"]["noise"], "distributed", "{done}");

    // The distributed noise moves the fit by its stated intervals at most: each coefficient
    // within twice its 95% half-width of the same steps on the pooled rows (the chance
    // that one of ten strays that far is about 10⁻³).
    let expected = pooled_fit(&model(&policy, iterations), &sites, iterations);
    for (i, ((value, (lo, hi)), want)) in coefficients(&done).iter().zip(&expected).enumerate() {
        let half = (hi - lo) / 2.0;
        assert!(
            half > 0.0 && half.is_finite(),
            "coefficient {i}: {lo}..{hi}"
        );
        assert!(
            (value - want).abs() <= 2.0 * half,
            "coefficient {i}: {value} ± {half}, pooled {want}"
        );
    }

    // The reservation was charged round by round before each iterate left, the last round
    // charging what was left: the whole job, once.
    let steps = audited(&c, "training.step").await;
    assert_eq!(steps.len(), iterations as usize - 1);
    let per_round = rho / f64::from(iterations);
    for (k, step) in steps.iter().enumerate() {
        assert_eq!(step["iteration"], k, "{step}");
        assert!(
            (step["charged_rho"].as_f64().unwrap() - per_round).abs() < 1e-9,
            "{step}"
        );
    }
    let released = audited(&c, "query.release").await;
    assert!((released[0]["charged_rho"].as_f64().unwrap() - per_round).abs() < 1e-9);
    let (s, budget) = c
        .call(
            Method::GET,
            "/v1/budgets/antibiotics",
            Some(&c.board[0]),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{budget}");
    assert!(
        (budget["charged_rho"].as_f64().unwrap() - rho).abs() < 1e-9,
        "{budget}"
    );
    assert!(
        (budget["used_rho"].as_f64().unwrap() - rho).abs() < 1e-9,
        "{budget}"
    );
    // Each partner charged its own ledger the same, and answered each iteration once.
    for site in &sites {
        let j = site.journal();
        let spent = j["spent"]["antibiotics"].as_u64().unwrap();
        assert_eq!(
            spent,
            civic_policies::Rho::nearest(rho).unwrap().units(),
            "{j}"
        );
        assert_eq!(
            j["answered"].as_array().unwrap().len(),
            iterations as usize,
            "{j}"
        );
    }
    // The public register shows the model, coefficient by coefficient.
    let page = federation::register_page(&c, &done).await;
    assert!(page.contains("beta(antibiotic=amoxicillin)"), "{page}");
    assert!(
        page.contains("a logistic model trained in 5 rounds"),
        "{page}"
    );
    // Asking again re-serves the model at no cost.
    let (s, again) = c.submit(job(iterations, rho)).await;
    assert_eq!(s, StatusCode::CREATED, "{again}");
    assert_eq!(again["cost"]["rho"], 0.0, "{again}");
    assert_eq!(again["result"]["rows"], done["result"]["rows"]);
}

/// On SQLite, and on PostgreSQL when `CIVIC_TEST_POSTGRES_URL` is set.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_whose_partners_stop_mid_way_keeps_its_rounds_charges_and_refunds_the_rest() {
    for store in common::backends("training-abort").await {
        partners_stop_mid_way(&store).await;
        common::drop_schema(&store).await;
    }
}

async fn partners_stop_mid_way(store: &str) {
    let root = tempfile::tempdir().unwrap();
    // Two partners' local totals cover two of the four rounds (ρ = 2 each).
    let (c, _sites, agents, _) =
        federation(store, root.path(), 300, false, [1e5, 5.0, 5.0, 1e5]).await;
    let (s, q) = c.submit(job(4, 8.0)).await;
    assert_eq!(s, StatusCode::CREATED, "{q}");
    let id = q["id"].as_i64().unwrap();
    let (done, _) = train(&c, &agents, id).await;
    assert_eq!(done["state"], "aborted", "{done}");
    let reason = done["reason"].as_str().unwrap();
    assert!(reason.contains("budget.local_total_exhausted"), "{reason}");
    let steps = audited(&c, "training.step").await;
    assert_eq!(steps.len(), 2);
    // The researcher sees what the two charged rounds produced: the iterate announced last.
    let training = &done["training"];
    assert_eq!(
        (
            training["iterations"].as_u64(),
            training["finished"].as_u64()
        ),
        (Some(4), Some(2)),
        "{done}"
    );
    assert_eq!(
        training["latest_announced"], steps[1]["coefficients"],
        "{done}"
    );
    assert_eq!(training["names"][0], "beta(intercept) for failed", "{done}");
    let aborted = audited(&c, "round.abort").await;
    assert!(
        (aborted[0]["refunded_rho"].as_f64().unwrap() - 4.0).abs() < 1e-9,
        "{aborted:?}"
    );
    let (_, budget) = c
        .call(
            Method::GET,
            "/v1/budgets/antibiotics",
            Some(&c.board[0]),
            None,
        )
        .await;
    // The two rounds that ran stay charged; nothing else is held.
    assert!(
        (budget["charged_rho"].as_f64().unwrap() - 4.0).abs() < 1e-9,
        "{budget}"
    );
    assert!(
        (budget["used_rho"].as_f64().unwrap() - 4.0).abs() < 1e-9,
        "{budget}"
    );
    // Asking the same question again is foretold to stop: the partners answered two of its
    // iterations. Another question is not.
    let c = &c;
    let notes = |job: Value| async move {
        let (s, v) = c
            .call(
                Method::POST,
                "/v1/queries/preview",
                Some(&c.researcher),
                Some(job),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        v["notes"].to_string()
    };
    let again = notes(job(4, 8.0)).await;
    assert!(
        again.contains(&format!(
            "training job {id} asked this same question and stopped after 2 iterations"
        )),
        "{again}"
    );
    let other = notes(job(3, 8.0)).await;
    assert!(!other.contains("asked this same question"), "{other}");
}

/// A multinomial model through real rounds: the organism class of the lab result (three
/// values, the first the reference) on the same features, noise off.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_multinomial_model_through_the_rounds_is_the_pooled_newton_fit() {
    let root = tempfile::tempdir().unwrap();
    let (c, sites, agents, policy) = federation(
        &fresh_store_url("training-multinomial"),
        root.path(),
        500,
        true,
        [1e5; 4],
    )
    .await;
    c.state.rounds.switch_off_central_noise_for_tests();
    let iterations = 4;
    let mut body = job(iterations, 60.0);
    body["query"]["statistic"]["logistic_regression"]["outcome"] = json!("organism");
    let query: Query = serde_json::from_value(body["query"].clone()).unwrap();
    let model = AggregationPlan::compile(&query.validate(&policy).unwrap(), &policy, 1_000_000)
        .unwrap()
        .logistic()
        .unwrap();
    let (s, q) = c.submit(body).await;
    assert_eq!(s, StatusCode::CREATED, "{q}");
    let (done, _) = train(&c, &agents, q["id"].as_i64().unwrap()).await;
    assert_eq!(done["state"], "released", "{done}");

    let classes = ["gram_negative", "gram_positive", "other"];
    let rows: Vec<(Vec<f64>, usize)> = sites
        .iter()
        .flat_map(|s| s.rows.iter())
        .map(|p| {
            let class = classes.iter().position(|c| *c == p.organism).unwrap();
            (inputs(p).0, class)
        })
        .collect();
    let mut beta = vec![0.0; model.coefficients()];
    for _ in 0..iterations {
        let total = model.partner_sum(&beta, rows.iter().map(|(x, y)| (x.as_slice(), *y)));
        beta = model.newton_step(&beta, &total).unwrap();
    }
    let expected = model.unscaled(&beta);
    // Noise off, so no interval is stated (none is needed); the values only.
    let got: Vec<f64> = done["result"]["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row[0]["value"].as_f64().unwrap())
        .collect();
    // Ten coefficients for each class but the reference.
    assert_eq!((got.len(), expected.len()), (20, 20));
    for (i, (value, want)) in got.iter().zip(&expected).enumerate() {
        assert!(
            (value - want).abs() <= 1e-6 * want.abs().max(1.0),
            "coefficient {i}: federated {value}, pooled {want}"
        );
    }
    let names = done["result"]["names"].as_array().unwrap();
    assert_eq!(
        names[0], "beta(intercept) for organism [gram_positive]",
        "{done}"
    );
    assert!(names.contains(&json!("beta(age [other])")), "{done}");
}
