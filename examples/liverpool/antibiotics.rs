//! The demo's antibiotic-choice model: the five GP federations' prescriptions (synthetic),
//! a training job fitting first-line failure on them (one round per Newton step, each
//! securely aggregated with the federations' noise), and what a researcher compares it
//! with: the same model fitted on the pooled rows without privacy, and both models' AUC on
//! a held-out set of prescriptions no partner holds.

use std::io::Write as _;
use std::path::Path;

use civic_client_sdk::synth::{GP_FEDERATIONS, Prescription, prescriptions};
use civic_mechanisms::AggregationPlan;
use civic_mechanisms::learning::{LogisticPlan, auc};
use civic_mechanisms::plan::LearningSpec;
use civic_policies::{DatasetPolicy, Query};
use serde_json::{Value, json};

type Error = Box<dyn std::error::Error + Send + Sync>;

/// What the model predicts failure from.
pub const FEATURES: [&str; 8] = [
    "age",
    "sex",
    "egfr",
    "recent_antibiotic",
    "care_home",
    "site",
    "organism",
    "antibiotic",
];
/// Newton steps: one round each.
pub const ITERATIONS: u32 = 5;
/// The whole job's privacy: ε ≈ 3.5 at δ = 10⁻⁶, at the board's approval threshold.
pub const RHO: f64 = 0.25;
/// Steps for the non-private fit: to convergence.
const CONVERGED: u32 = 25;

/// The policy's file.
pub fn policy_path() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/liverpool/antibiotics.toml")
}

/// The region's prescriptions (one per resident, `n` in all): each federation holds those
/// of its registered patients.
pub fn population(seed: u64, n: u32) -> Vec<Prescription> {
    prescriptions(seed, n)
}

/// A held-out set no partner holds, to compare the models' discrimination on.
pub fn held_out(seed: u64) -> Vec<Prescription> {
    prescriptions(seed ^ 0x5eed_0fba_5e00, 20_000)
}

/// Writes federation `gp`'s extract; returns its rows.
pub fn write_extract(gp: &str, rows: &[Prescription], path: &Path) -> std::io::Result<u64> {
    let index = GP_FEDERATIONS
        .iter()
        .position(|g| *g == gp)
        .unwrap_or(usize::MAX);
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(
        out,
        "prescription_id,age,sex,egfr,recent_antibiotic,care_home,site,organism,antibiotic,failed"
    )?;
    let mut n = 0;
    for (i, p) in rows.iter().enumerate().filter(|(_, p)| p.gp == index) {
        writeln!(
            out,
            "rx{i},{},{},{},{},{},{},{},{},{}",
            p.age,
            p.sex,
            p.egfr,
            p.recent_antibiotic,
            p.care_home,
            p.site,
            p.organism,
            p.antibiotic,
            p.failed
        )?;
        n += 1;
    }
    out.flush()?;
    Ok(n)
}

/// A GP federation's `[[datasets]]` entry for the prescriptions.
pub fn dataset_entry() -> String {
    let columns: String = FEATURES
        .iter()
        .chain(&["failed"])
        .map(|c| format!("{c} = \"{c}\"\n"))
        .collect();
    format!(
        r#"
[[datasets]]
id = "antibiotics"
resident_column = "prescription_id"

[datasets.source]
kind = "csv"
path = "prescriptions.csv"

[datasets.columns]
{columns}"#
    )
}

/// The training job, as the researcher submits it.
pub fn request(project: &str) -> Value {
    json!({
        "project": project,
        "query": {
            "dataset": "antibiotics",
            "statistic": { "logistic_regression": {
                "features": FEATURES, "outcome": "failed", "iterations": ITERATIONS
            } }
        },
        "privacy": { "rho": RHO }
    })
}

/// The model the job fits and its inputs, as the coordinator plans them.
fn model(policy: &DatasetPolicy, max_rows: u64) -> Result<(LogisticPlan, LearningSpec), Error> {
    let query: Query = serde_json::from_value(request("-")["query"].clone())?;
    let plan = AggregationPlan::compile(&query.validate(policy)?, policy, max_rows)?;
    let spec = plan.learning.clone().ok_or("not a training job")?;
    Ok((plan.logistic()?, spec))
}

/// A prescription's field by column name, as its extract writes it.
fn field(p: &Prescription, column: &str) -> String {
    match column {
        "age" => p.age.to_string(),
        "sex" => p.sex.into(),
        "egfr" => p.egfr.to_string(),
        "recent_antibiotic" => p.recent_antibiotic.to_string(),
        "care_home" => p.care_home.to_string(),
        "site" => p.site.into(),
        "organism" => p.organism.into(),
        "antibiotic" => p.antibiotic.into(),
        _ => String::new(),
    }
}

/// A prescription's model inputs, in the plan's order (a category as indicators).
fn inputs(p: &Prescription, spec: &LearningSpec) -> Vec<f64> {
    spec.inputs
        .iter()
        .map(|input| {
            let value = field(p, &input.column);
            match (input.level, input.name.split_once('=')) {
                (None, _) => value.parse().unwrap_or(f64::NAN),
                (Some(_), Some((_, level))) => f64::from(u8::from(value == level)),
                (Some(_), None) => f64::from(u8::from(value == "true")),
            }
        })
        .collect()
}

/// The held-out AUC of raw coefficients `beta` (intercept first).
fn held_out_auc(beta: &[f64], spec: &LearningSpec, held: &[Prescription]) -> Option<f64> {
    let scores: Vec<f64> = held
        .iter()
        .map(|p| {
            let x = inputs(p, spec);
            beta[0] + beta[1..].iter().zip(&x).map(|(b, x)| b * x).sum::<f64>()
        })
        .collect();
    let outcomes: Vec<bool> = held.iter().map(|p| p.failed).collect();
    auc(&scores, &outcomes)
}

/// The released model beside the non-private fit of the same rows, and both models' AUC on
/// the held-out set; printed, and returned for the report.
pub fn compare(
    released: &Value,
    rows: &[Prescription],
    held: &[Prescription],
    max_rows: u64,
) -> Result<Value, Error> {
    let policy =
        DatasetPolicy::from_toml(&std::fs::read_to_string(policy_path())?, "antibiotics.toml")?;
    let (model, spec) = model(&policy, max_rows)?;
    let pooled: Vec<(Vec<f64>, usize)> = rows
        .iter()
        .map(|p| (inputs(p, &spec), usize::from(p.failed)))
        .collect();
    let mut beta = vec![0.0; model.coefficients()];
    for _ in 0..CONVERGED {
        let total = model.partner_sum(&beta, pooled.iter().map(|(x, y)| (x.as_slice(), *y)));
        beta = model.newton_step(&beta, &total)?;
    }
    let exact = model.unscaled(&beta);
    let names = released["result"]["names"].as_array().ok_or("no names")?;
    let cells = released["result"]["rows"].as_array().ok_or("no rows")?;
    let private: Vec<f64> = cells
        .iter()
        .map(|r| r[0]["value"].as_f64().unwrap_or(f64::NAN))
        .collect();
    println!(
        "   {:<38} {:>10} {:>22} {:>12}",
        "coefficient", "private", "95% interval (noise)", "non-private"
    );
    let mut table = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let name = name.as_str().unwrap_or("");
        let interval = &cells[i][0]["interval"];
        let shown = match (interval[0].as_f64(), interval[1].as_f64()) {
            (Some(lo), Some(hi)) => format!("[{lo:.4}, {hi:.4}]"),
            _ => "not stated".into(),
        };
        println!(
            "   {name:<38} {:>10.4} {shown:>22} {:>12.4}",
            private[i], exact[i]
        );
        table.push(json!({
            "name": name, "private": private[i], "interval": interval, "non_private": exact[i]
        }));
    }
    // Why the intervals mean what they do, or why there are none (the release's own words).
    if let Some(caveat) = released["result"]["receipt"]["caveats"][0].as_str() {
        println!("   {caveat}");
    }
    let (auc_private, auc_exact) = (
        held_out_auc(&private, &spec, held),
        held_out_auc(&exact, &spec, held),
    );
    println!(
        "   held-out AUC ({} prescriptions no partner holds): private model {:.4}, non-private model {:.4}",
        held.len(),
        auc_private.unwrap_or(f64::NAN),
        auc_exact.unwrap_or(f64::NAN)
    );
    Ok(json!({
        "coefficients": table,
        "iterations": ITERATIONS,
        "non_private_iterations": CONVERGED,
        "auc": { "private": auc_private, "non_private": auc_exact, "held_out": held.len() },
        "receipt": released["result"]["receipt"],
    }))
}
