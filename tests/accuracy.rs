//! Accuracy held against truth: many small-ε releases of one fixed histogram, made end to end
//! (a coordinator on loopback, three partners running real secure aggregation over HTTP),
//! compared cell by cell with the exact counts the partners hold.
//!
//! Requirement: over at least 200 releases, the share of released cells inside their stated
//! 95% interval lies in [92%, 98%], and the mean error is 0 within its standard error.

#[path = "../server/tests/common/mod.rs"]
mod common;

use std::time::Instant;

use civic_mechanisms::NoiseSpec;
use civic_mechanisms::accuracy::half_width;
use common::partner::{StopAt, TestPartner};
use common::{Coordinator, fresh_store_url};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// The fixed test dataset: each partner's counts in the 6 cells of the age band × fell
/// histogram (3 age bands × 2); the truth is their sum, 40 to 200 per cell. Every true count
/// is far above 0 (the noise here has a standard deviation ≈ 2.3), so clamping counts and
/// intervals at 0 never bites (P[noise ≤ −40] ≈ 3·10⁻¹⁰ per cell at ε = 0.54).
const PARTNER_CELLS: [[i64; 6]; 3] = [
    [20, 35, 10, 60, 25, 50],
    [15, 40, 20, 70, 30, 80],
    [5, 25, 10, 50, 30, 70],
];

/// Releases in the run (the requirement asks for at least 200), 6 cells each: 2400 cells.
const RELEASES: usize = 400;
const _: () = assert!(
    RELEASES >= 200,
    "the requirement asks for at least 200 releases"
);

/// Queries in flight at once (distinct questions run their rounds concurrently).
const IN_FLIGHT: usize = 10;

/// The stated confidence, exactly the default 95%.
const CONFIDENCE: f64 = 0.95;

/// Distinct questions. The coordinator re-serves an identical released question for free
/// (and refuses an identical one in flight), and a question's identity covers dataset, policy
/// version, query, privacy and confidence. Confidence stays exactly 0.95 and the query and
/// dataset stay fixed, so what varies is ε: release k spends ε_k = EPS_LOW + k·EPS_STEP. Each
/// release is calibrated to its own ε and states its own 95% interval, so every cell is a
/// fair trial of "the stated 95% interval covers the truth".
///
/// Why this band. Discrete Laplace noise (scale 1/ε; a histogram of one-row-per-resident
/// data has L1 sensitivity 1) only takes integer values, and OpenDP's half-width `a` solves
/// P[|noise| ≥ a] = α for the continuous extension, so the interval covers the truth exactly
/// when |noise| ≤ ⌊a⌋: its true coverage lies between 95% (a just below an integer) and
/// 1 − 0.05·e^{−ε} (a just above one). At ε ≤ 0.92 that ceiling is ≤ 98%, inside the
/// requirement, but the closer the expectation gets to 98% the likelier a false failure.
/// The run sweeps ε ∈ [0.54, 0.652), one whole stretch where ⌊a⌋ = 5 (a falls from 5.98 to
/// 5.02), so it samples every position of the stated half-width between two integers rather
/// than a favourable one: the exact coverage rises from 95.05% to 97.4% across the run, and
/// its expectation, computed per release below and printed, is 96.33%. Small ε keeps the
/// cost low: ρ = ε²/2 ≤ 0.22 per release (far below the 2500 that needs approval), 71 in all
/// of the project's 8000.
const EPS_LOW: f64 = 0.54;
const EPS_STEP: f64 = 0.00028;

/// The truth: what the partners' vectors sum to, cell by cell.
fn truth() -> [i64; 6] {
    let mut t = [0; 6];
    for p in &PARTNER_CELLS {
        for (t, v) in t.iter_mut().zip(p) {
            *t += v;
        }
    }
    t
}

fn histogram(epsilon: f64) -> Value {
    json!({
        "project": "falls",
        "query": { "dataset": "city", "statistic": { "histogram": { "columns": ["age", "fell"] } } },
        "privacy": { "epsilon": epsilon },
        "confidence": CONFIDENCE,
    })
}

/// The exact probability that a discrete-Laplace cell at `epsilon` (sensitivity 1) lies
/// within `half_width` of the truth: P[|X| ≤ ⌊a⌋] = 1 − 2e^{−(⌊a⌋+1)ε} / (1 + e^{−ε}).
fn exact_coverage(epsilon: f64, half_width: f64) -> f64 {
    let k = half_width.floor() + 1.0;
    1.0 - 2.0 * (-k * epsilon).exp() / (1.0 + (-epsilon).exp())
}

/// The variance of discrete Laplace noise at `epsilon`: 2e^{−ε} / (1 − e^{−ε})².
fn noise_variance(epsilon: f64) -> f64 {
    let q = (-epsilon).exp();
    2.0 * q / (1.0 - q).powi(2)
}

/// Submits one query per ε, runs every round concurrently with the fixed vectors, and
/// returns each finished query's view in the same order.
async fn release_batch(c: &Coordinator, ps: &[TestPartner], epsilons: &[f64]) -> Vec<Value> {
    let mut ids = Vec::new();
    for &epsilon in epsilons {
        let (s, q) = c.submit(histogram(epsilon)).await;
        assert_eq!(s, StatusCode::CREATED, "{q}");
        assert_eq!(
            q["state"], "running",
            "a new question, below the approval threshold: {q}"
        );
        ids.push((q["id"].as_i64().unwrap(), common::round_of(&q)));
    }
    let runs = ids.iter().flat_map(|&(_, round)| {
        ps.iter()
            .zip(&PARTNER_CELLS)
            .map(move |(p, v)| p.take_part(round, v, StopAt::Never))
    });
    let results = futures_util::future::join_all(runs).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let mut done = Vec::new();
    for (id, _) in ids {
        done.push(c.wait_done(id).await);
    }
    done
}

#[actix_web::test]
#[ignore = "slow: 400 releases over loopback HTTP (about 20 s)"]
async fn stated_95_percent_intervals_cover_the_truth_and_errors_average_zero() {
    let started = Instant::now();
    let c = Coordinator::start(&fresh_store_url("accuracy")).await;
    let ps = c.register_partners().await;
    let truth = truth();

    let epsilons: Vec<f64> = (0..RELEASES)
        .map(|k| EPS_LOW + k as f64 * EPS_STEP)
        .collect();
    let mut cells = 0usize;
    let mut covered = 0usize;
    let mut errors = Vec::new();
    let mut expected_coverage = 0.0;
    let mut expected_variance = 0.0;
    for batch in epsilons.chunks(IN_FLIGHT) {
        let views = release_batch(&c, &ps, batch).await;
        for (&epsilon, done) in batch.iter().zip(&views) {
            assert_eq!(done["state"], "released", "{done}");
            let result = &done["result"];
            assert_eq!(result["reused"], false, "every release is fresh: {done}");
            assert_eq!(result["receipt"]["confidence"], CONFIDENCE, "{done}");
            assert_eq!(result["receipt"]["survivors"], 3, "{done}");
            // The half-width the mechanism states for this ε (sensitivity 1, α = 0.05).
            let spec = NoiseSpec::laplace_for_epsilon(1, epsilon).unwrap();
            let stated = half_width(&spec, 1.0 - CONFIDENCE).unwrap();
            let row = result["rows"][0].as_array().unwrap();
            assert_eq!(row.len(), truth.len(), "{done}");
            for (cell, &t) in row.iter().zip(&truth) {
                let value = cell["value"].as_f64().expect("no suppression");
                let lo = cell["interval"][0].as_f64().unwrap();
                let hi = cell["interval"][1].as_f64().unwrap();
                // Unclamped and symmetric: the interval is value ± the stated half-width.
                assert!(
                    (hi - value - stated).abs() < 1e-9 && (value - lo - stated).abs() < 1e-9,
                    "ε = {epsilon}: half-width {stated} expected, cell {cell}"
                );
                cells += 1;
                if lo <= t as f64 && t as f64 <= hi {
                    covered += 1;
                }
                errors.push(value - t as f64);
                expected_coverage += exact_coverage(epsilon, stated);
                expected_variance += noise_variance(epsilon);
            }
        }
    }
    c.stop().await;

    let n = cells as f64;
    let coverage = covered as f64 / n;
    let mean = errors.iter().sum::<f64>() / n;
    let variance = errors.iter().map(|e| (e - mean).powi(2)).sum::<f64>() / (n - 1.0);
    let se = (variance / n).sqrt();
    eprintln!(
        "{RELEASES} releases, {cells} cells, ε ∈ [{:.4}, {:.4}], in {:.1} s",
        epsilons[0],
        epsilons[RELEASES - 1],
        started.elapsed().as_secs_f64()
    );
    eprintln!(
        "coverage of the stated 95% intervals: {covered}/{cells} = {:.2}% (exact expectation {:.2}%)",
        100.0 * coverage,
        100.0 * expected_coverage / n
    );
    eprintln!(
        "mean error (released − truth): {mean:+.4} ± {se:.4} (SE; {:+.2} SE; noise SD {:.3}, expected {:.3})",
        mean / se,
        variance.sqrt(),
        (expected_variance / n).sqrt()
    );

    // Each cell's noise is independent (one draw per slot, fresh per release), so `covered`
    // is a sum of 2400 independent Bernoulli trials whose exact probabilities (above) average
    // 0.9633, an SD of 0.0038 on the share: 98% is 4.4 SD above and 92% 11 SD below. Summed
    // exactly (Poisson-binomial), a correct mechanism fails this with probability 8·10⁻⁷.
    assert!(
        (0.92..=0.98).contains(&coverage),
        "coverage {:.2}% is outside [92%, 98%]",
        100.0 * coverage
    );
    // The noise is symmetric with mean 0, so the mean error of 2400 cells is ≈ normal with
    // the standard error estimated here (≈ 2.35/√2400 ≈ 0.048): |mean| ≤ 3 SE fails an
    // unbiased mechanism with probability ≈ 0.27%, and a bias of 0.15 of a count or more is
    // caught more often than not.
    assert!(
        mean.abs() <= 3.0 * se,
        "mean error {mean:+.4} is more than 3 standard errors ({se:.4}) from 0"
    );
}

/// Small true counts around the NHS suppression band (1–7 redacted, the rest rounded to 5)
/// and two large ones: 0, 3, 4, 5, 45, 100.
const SMALL_CELLS: [[i64; 6]; 3] = [
    [0, 1, 1, 3, 20, 40],
    [0, 1, 2, 2, 15, 30],
    [0, 1, 1, 0, 10, 30],
];

/// Gaussian noise (ρ-zCDP), two rows per resident at each of up to two partners (K = 4), and
/// the NHS disclosure profile: the shown cells' stated 95% intervals cover the truth at 95%
/// given that they were shown, pooled over the true counts at and below the band, and over
/// the large ones; the errors of large cells average 0. The coordinator adds the noise
/// (central), as these test partners send their exact vectors.
#[actix_web::test]
#[ignore = "slow: 400 releases over loopback HTTP (about 30 s)"]
async fn gaussian_releases_under_the_nhs_profile_cover_given_that_a_cell_is_shown() {
    let c = Coordinator::start(&fresh_store_url("accuracy-nhs")).await;
    let ps = c.register_partners().await;
    let policy = c
        .city_toml()
        .replace(
            "rows_per_resident_per_partner = 1\nmax_partners_per_person = 1",
            "rows_per_resident_per_partner = 2\nmax_partners_per_person = 2",
        )
        .replace("profile = \"none\"", "profile = \"nhs\"");
    assert!(policy.contains("profile = \"nhs\"") && policy.contains("per_partner = 2"));
    let (s, body) = c
        .call(
            reqwest::Method::PUT,
            "/v1/datasets/city",
            Some(&c.board[0]),
            Some(json!({ "policy": policy })),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    let mut truth = [0i64; 6];
    for p in &SMALL_CELLS {
        truth.iter_mut().zip(p).for_each(|(t, v)| *t += v);
    }
    // ρ from 0.8 to 1.2: σ = Δ₂/√(2ρ) with Δ₂ = K = 4, from 3.2 to 2.6.
    let (mut small, mut large) = ((0usize, 0usize), (0usize, 0usize));
    let mut errors = Vec::new();
    for batch in (0..400).collect::<Vec<usize>>().chunks(IN_FLIGHT) {
        let mut ids = Vec::new();
        for &k in batch {
            let body = json!({
                "project": "falls",
                "query": { "dataset": "city", "statistic": { "histogram": { "columns": ["age", "fell"] } } },
                "privacy": { "rho": 0.8 + k as f64 * 0.001 },
            });
            let (s, q) = c.submit(body).await;
            assert_eq!(s, StatusCode::CREATED, "{q}");
            ids.push((q["id"].as_i64().unwrap(), common::round_of(&q)));
        }
        let runs = ids.iter().flat_map(|&(_, round)| {
            ps.iter()
                .zip(&SMALL_CELLS)
                .map(move |(p, v)| p.take_part(round, v, StopAt::Never))
        });
        let results = futures_util::future::join_all(runs).await;
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        for (id, _) in ids {
            let done = c.wait_done(id).await;
            assert_eq!(done["state"], "released", "{done}");
            let row = done["result"]["rows"][0].as_array().unwrap().clone();
            for (cell, &t) in row.iter().zip(&truth) {
                let Some(value) = cell["value"].as_f64() else {
                    continue; // redacted
                };
                let (lo, hi) = (
                    cell["interval"][0].as_f64().unwrap(),
                    cell["interval"][1].as_f64().unwrap(),
                );
                let hit = usize::from(lo <= t as f64 && t as f64 <= hi);
                let pool = if t <= 7 { &mut small } else { &mut large };
                *pool = (pool.0 + 1, pool.1 + hit);
                if t > 7 {
                    errors.push(value - t as f64);
                }
            }
        }
    }
    c.stop().await;
    for (name, (shown, covered)) in [("at or below the band", small), ("large", large)] {
        let coverage = covered as f64 / shown as f64;
        let se = (0.05 * 0.95 / shown as f64).sqrt();
        eprintln!(
            "true counts {name}: {covered}/{shown} shown cells covered = {:.2}%",
            100.0 * coverage
        );
        assert!(shown >= 300, "{name}: only {shown} shown");
        assert!(
            coverage >= 0.95 - 3.0 * se,
            "{name}: coverage {coverage} of {shown}"
        );
    }
    // Rounding to 5 moves 45 and 100 by nothing; the noise is symmetric: mean error 0
    // within 3 standard errors.
    let n = errors.len() as f64;
    let mean = errors.iter().sum::<f64>() / n;
    let sd = (errors.iter().map(|e| (e - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
    assert!(
        mean.abs() <= 3.0 * sd / n.sqrt(),
        "mean error {mean} (sd {sd}, n {n})"
    );
}
