//! DP-SGD jobs end to end: four GP federations' agents run the example trainer
//! (`examples/retina/trainer.py`, Python with numpy) on their own synthetic screening
//! photographs, written as `civic-agent synth --dataset retina` writes them, with a real
//! coordinator on loopback; a fifth partner's trainer misbehaves, round by round, and is
//! declined with a code while the job goes on without it.

#[path = "../../server/tests/common/mod.rs"]
mod common;
#[path = "federation/mod.rs"]
mod federation;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use civic_client_sdk::agent::{Agent, RoundOutcome};
use civic_client_sdk::config::AgentConfig;
use civic_client_sdk::decline::DeclineCode;
use common::{Coordinator, test_config};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const PARAMETERS: usize = 65;

fn trainer_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/retina/trainer.py")
}

/// The screening dataset for partners `{partners}`; noise at the partners unless `central`.
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
name = "referable"
type = "boolean"
"#;
    let title = "Diabetic eye screening photographs";
    federation::policy("retina", title, partners, central, columns)
}

/// The job: the example trainer's 65 parameters, `iterations` steps of 8, at `rho`.
fn job(iterations: u32, rho: f64) -> Value {
    json!({
        "project": "falls",
        "query": {
            "dataset": "retina",
            "statistic": { "dp_sgd": {
                "trainer": "retina-spots", "parameters": PARAMETERS, "clip": 1.0,
                "learning_rate": 8.0, "iterations": iterations
            } }
        },
        "privacy": { "rho": rho }
    })
}

/// A trainer that misbehaves by iteration: a vector too long, a sum longer than the clip
/// allows, garbage, an exit with an error; honest (the example trainer) after.
const HOSTILE: &str = r#"
import json, subprocess, sys
round_ = json.load(sys.stdin)
k = round_["iteration"]
if k == 0:
    print(json.dumps({"examples": 10, "gradient_sum": [0.0] * 66}))
elif k == 1:
    print(json.dumps({"examples": 10, "gradient_sum": [100.0] + [0.0] * 64}))
elif k == 2:
    print("Traceback: not JSON at all")
elif k == 3:
    sys.exit("the photographs are on a drive that is not mounted")
else:
    sys.exit(subprocess.run([sys.executable] + sys.argv[1:], input=json.dumps(round_).encode()).returncode)
"#;

struct Site {
    dir: PathBuf,
    key: String,
}

impl Site {
    /// A partner's screening extract of `n` photographs and its agent's configuration;
    /// `hostile` wraps the example trainer in [`HOSTILE`]; the first site's trainer prints
    /// each example's gradient for the agent to clip, the others their clipped sums.
    fn create(root: &Path, site: usize, n: u32, base: &str, token: &str, hostile: bool) -> Site {
        let dir = root.join(format!("site-{site}"));
        std::fs::create_dir_all(&dir).unwrap();
        civic_client_sdk::synth::write_retina(site, 2026, n, &dir.join("retina.csv")).unwrap();
        let script = trainer_script();
        let command = if hostile {
            std::fs::write(dir.join("hostile.py"), HOSTILE).unwrap();
            json!(["python3", "hostile.py", script, "--extract", "retina.csv"])
        } else if site == 0 {
            json!([
                "python3",
                script,
                "--extract",
                "retina.csv",
                "--per-example"
            ])
        } else {
            json!(["python3", script, "--extract", "retina.csv"])
        };
        let datasets = format!(
            r#"
[[datasets]]
id = "retina"
resident_column = "pid"

[datasets.source]
kind = "csv"
path = "retina.csv"

[datasets.columns]
age = "age"
sex = "sex"
referable = "referable"

[datasets.trainers.retina-spots]
command = {command}
timeout_seconds = 50
"#
        );
        let key = federation::partner(&dir, base, token, 100_000.0, &datasets);
        Site { dir, key }
    }

    fn agent(&self) -> Arc<Agent> {
        let config = AgentConfig::load(&self.dir.join("partner.toml")).unwrap();
        Arc::new(Agent::new(config).unwrap())
    }
}

/// A coordinator with `partners` partners serving "retina", signed into the board's
/// manifest, and their agents; the last partner's trainer is hostile if `hostile`.
async fn federation(
    store: &str,
    root: &Path,
    partners: usize,
    central: bool,
    hostile: bool,
) -> (Coordinator, Vec<Site>, Vec<Arc<Agent>>) {
    let mut c = common::start_on_own_system(test_config(store));
    for name in ["clinic-d", "clinic-e"]
        .iter()
        .take(partners.saturating_sub(3))
    {
        c.add_partner(name).await;
    }
    let names: Vec<String> = c.partners.iter().map(|p| p.0.clone()).collect();
    let text = policy(&names, central);
    c.add_dataset_for_falls("retina", &text, 5000.0).await;
    let mut sites = Vec::new();
    let mut listed = Vec::new();
    for (i, (name, _, token)) in c.partners.iter().enumerate() {
        let bad = hostile && i + 1 == partners;
        let site = Site::create(root, i, 1500 + 100 * i as u32, &c.base, token, bad);
        listed.push((name.clone(), site.key.clone()));
        sites.push(site);
    }
    let manifest = common::with_dataset(
        common::city_manifest(&listed, &c.city_toml()),
        "retina",
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
    (c, sites, agents)
}

/// Runs the agents until query `id` leaves `running`; its view and each agent's outcomes.
async fn train(
    c: &Coordinator,
    agents: &[Arc<Agent>],
    id: i64,
) -> (Value, Vec<Vec<(i64, RoundOutcome)>>) {
    federation::until_done(c, agents, id).await
}

/// Runs Python with numpy on `code`, the example trainer importable as `trainer`; its
/// standard output as JSON. Fails, saying what to install, without numpy.
fn python(code: &str, dir: &Path) -> Value {
    let out = Command::new("python3")
        .arg("-c")
        .arg(format!(
            "import sys, json\nsys.path.insert(0, {:?})\nimport trainer\nimport numpy as np\n{code}",
            trainer_script().parent().unwrap()
        ))
        .current_dir(dir)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "python3 failed (the example trainer needs numpy: python3 -m pip install -r \
         examples/retina/requirements.txt): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The same steps on every site's photographs pooled, without noise: the non-private fit.
fn pooled_fit(sites: &[Site], iterations: u32, clip: f64) -> Vec<f64> {
    let extracts: Vec<String> = sites
        .iter()
        .map(|s| s.dir.join("retina.csv").display().to_string())
        .collect();
    let fit = python(
        &format!(
            "xs, ys = [], []
for e in {extracts:?}:
    images, y = trainer.load(e)
    xs.append(trainer.features(images)); ys.append(y)
x, y = np.vstack(xs), np.concatenate(ys)
theta = np.zeros(trainer.PARAMETERS)
for _ in range({iterations}):
    theta = theta - 8.0 * trainer.clipped_gradient_sum(x, y, theta, {clip}) / len(y)
print(json.dumps(theta.tolist()))"
        ),
        Path::new("."),
    );
    serde_json::from_value(fit).unwrap()
}

/// The held-out AUC of `theta` on photographs no partner holds.
fn held_out_auc(root: &Path, theta: &[f64]) -> f64 {
    let extract = root.join("held-out.csv");
    if !extract.exists() {
        civic_client_sdk::synth::write_retina(4, 7, 3000, &extract).unwrap();
    }
    std::fs::write(root.join("theta.json"), json!(theta).to_string()).unwrap();
    let scored = python(
        &format!(
            "images, y = trainer.load({:?})
scores = trainer.features(images) @ np.array(json.load(open('theta.json')))
print(json.dumps(trainer.auc(scores, y)))",
            extract.display().to_string()
        ),
        root,
    );
    scored.as_f64().unwrap()
}

fn parameters(q: &Value) -> Vec<f64> {
    q["result"]["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row[0]["value"].as_f64().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_the_noise_off_the_partners_trainers_take_the_pooled_gradient_steps() {
    let root = tempfile::tempdir().unwrap();
    let store = common::fresh_store_url("sgd-exact");
    let (c, sites, agents) = federation(&store, root.path(), 3, true, false).await;
    c.state.rounds.switch_off_central_noise_for_tests();
    let iterations = 6;
    let (s, q) = c.submit(job(iterations, 60.0)).await;
    assert_eq!(s, StatusCode::CREATED, "{q}");
    let (done, outcomes) = train(&c, &agents, q["id"].as_i64().unwrap()).await;
    assert_eq!(done["state"], "released", "{done}");
    for (i, o) in outcomes.iter().enumerate() {
        let finished = o
            .iter()
            .filter(|(_, o)| *o == RoundOutcome::Finished)
            .count();
        assert_eq!(finished, iterations as usize, "partner {i}: {o:?}");
    }
    let got = parameters(&done);
    let want = pooled_fit(&sites, iterations, 1.0);
    assert_eq!(got.len(), PARAMETERS);
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert!(
            (g - w).abs() <= 1e-6 * w.abs().max(1.0),
            "parameter {i}: federated {g}, pooled {w}"
        );
    }
    assert_eq!(done["result"]["names"][0], "theta[0]", "{done}");
    let training = &done["result"]["receipt"]["training"];
    assert_eq!(training["iterations"], iterations, "{done}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_trainer_that_returns_a_bad_sum_is_declined_with_its_code_and_the_job_goes_on() {
    let root = tempfile::tempdir().unwrap();
    let store = common::fresh_store_url("sgd-hostile");
    let (c, sites, agents) = federation(&store, root.path(), 5, false, true).await;
    let (iterations, rho) = (8, 40.0);
    let (s, preview) = c
        .call(
            Method::POST,
            "/v1/queries/preview",
            Some(&c.researcher),
            Some(job(iterations, rho)),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{preview}");
    // The preview states the noise on each averaged gradient, falling with the examples.
    let rows = preview["accuracy"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{preview}");
    assert_eq!(rows[0]["name"], "each of theta[0] … theta[64]", "{preview}");
    // And that the job's rounds count against the partners' rounds a day.
    let note = preview["notes"][0].as_str().unwrap();
    assert!(
        note.starts_with("this job takes 8 rounds") && note.contains("allows 1000"),
        "{preview}"
    );
    let at = &rows[0]["half_width_at_rows"];
    assert!(
        at[0][1].as_f64().unwrap() > at[2][1].as_f64().unwrap(),
        "{preview}"
    );

    let (s, q) = c.submit(job(iterations, rho)).await;
    assert_eq!(s, StatusCode::CREATED, "{q}");
    let (done, outcomes) = train(&c, &agents, q["id"].as_i64().unwrap()).await;
    assert_eq!(done["state"], "released", "{done}");
    assert_eq!(done["result"]["receipt"]["noise"], "distributed", "{done}");

    // The hostile trainer's first four rounds are declined, each with its code and nothing
    // of its output; its partner takes part once its trainer behaves.
    let hostile = &outcomes[4];
    let declined: Vec<&RoundOutcome> = hostile
        .iter()
        .map(|(_, o)| o)
        .filter(|o| matches!(o, RoundOutcome::Declined(_)))
        .collect();
    let expected = [
        DeclineCode::TrainerOutputLength,
        DeclineCode::TrainerNormExceeded,
        DeclineCode::TrainerOutputUnreadable,
        DeclineCode::TrainerFailed,
    ];
    assert_eq!(
        declined,
        expected
            .iter()
            .map(|c| RoundOutcome::Declined(c.public_reason()))
            .collect::<Vec<_>>()
            .iter()
            .collect::<Vec<_>>(),
        "{hostile:?}"
    );
    let finished = |o: &[(i64, RoundOutcome)]| {
        o.iter()
            .filter(|(_, o)| *o == RoundOutcome::Finished)
            .count()
    };
    assert_eq!(finished(hostile), iterations as usize - 4, "{hostile:?}");
    for honest in &outcomes[..4] {
        assert_eq!(finished(honest), iterations as usize, "{honest:?}");
    }

    // The noise the partners added leaves a model as good on photographs no partner holds
    // as the non-private steps on the honest partners' pooled photographs (within 0.05 AUC:
    // the noise on each averaged gradient is about 10⁻³ here), and a useful one.
    let theta = parameters(&done);
    let private = held_out_auc(root.path(), &theta);
    let pooled = held_out_auc(root.path(), &pooled_fit(&sites[..4], iterations, 1.0));
    println!(
        "held-out AUC after {iterations} DP-SGD rounds at rho = {rho}: {private:.4} (the \
         non-private steps: {pooled:.4})"
    );
    assert!(private > 0.8, "held-out AUC {private}");
    assert!(
        (private - pooled).abs() < 0.05,
        "held-out AUC {private}, non-private {pooled}"
    );
    // The public register shows the job in words and its parameters by name.
    let page = federation::register_page(&c, &done).await;
    assert!(page.contains("in 8 rounds of DP-SGD"), "{page}");
    assert!(page.contains("theta[64]"), "{page}");
    // The receipt says what was trained, and that the trainers' clipping is theirs.
    let receipt = &done["result"]["receipt"];
    let text = receipt.to_string();
    assert!(text.contains("retina-spots"), "{receipt}");
    assert!(text.contains("clipped to L2 norm 1"), "{receipt}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_partner_without_the_trainer_declines_and_a_bad_job_is_refused_by_name() {
    let root = tempfile::tempdir().unwrap();
    let store = common::fresh_store_url("sgd-refused");
    let (c, _sites, agents) = federation(&store, root.path(), 3, false, false).await;
    for (statistic, field) in [
        (
            json!({"trainer": "Retina Spots", "parameters": 65, "clip": 1.0, "learning_rate": 1.0, "iterations": 2}),
            "statistic.trainer",
        ),
        (
            json!({"trainer": "retina-spots", "parameters": 0, "clip": 1.0, "learning_rate": 1.0, "iterations": 2}),
            "statistic.parameters",
        ),
        (
            json!({"trainer": "retina-spots", "parameters": 65, "clip": -1.0, "learning_rate": 1.0, "iterations": 2}),
            "statistic.clip",
        ),
        (
            json!({"trainer": "retina-spots", "parameters": 65, "clip": 1.0, "learning_rate": 0.0, "iterations": 2}),
            "statistic.learning_rate",
        ),
        (
            json!({"trainer": "retina-spots", "parameters": 65, "clip": 1.0, "learning_rate": 1.0, "iterations": 101}),
            "statistic.iterations",
        ),
    ] {
        let body = json!({
            "project": "falls",
            "query": { "dataset": "retina", "statistic": { "dp_sgd": statistic } },
            "privacy": { "rho": 1.0 }
        });
        let (s, problem) = c
            .call(
                Method::POST,
                "/v1/queries/preview",
                Some(&c.researcher),
                Some(body),
            )
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{problem}");
        assert!(problem.to_string().contains(field), "{field}: {problem}");
    }
    // A partner whose partner.toml names no such trainer declines with its code.
    let mut other = job(2, 1.0);
    other["query"]["statistic"]["dp_sgd"]["trainer"] = json!("fundus-cnn");
    let (s, q) = c.submit(other).await;
    assert_eq!(s, StatusCode::CREATED, "{q}");
    let outcomes = agents[0].once().await.unwrap();
    assert!(
        outcomes.iter().any(|(_, o)| *o
            == RoundOutcome::Declined(DeclineCode::TrainerNotConfigured.public_reason())),
        "{outcomes:?}"
    );
}
