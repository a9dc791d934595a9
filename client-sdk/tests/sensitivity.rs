//! Sensitivity, checked on neighbouring datasets through the agent's real aggregator: adding
//! one resident (with up to K rows at each of `max_partners_per_person` partners, more rows
//! than that truncated, rows in different cells, extreme values) changes each noise group's
//! summed vector by at most the plan's L1 and L2 sensitivities; and the extreme resident
//! reaches them exactly, so a bound half as large would fail here.

use civic_client_sdk::evaluate::{Aggregator, CompiledPlan};
use civic_client_sdk::schema::{Cell, Value};
use civic_mechanisms::{AggregationPlan, PrivacyChoice, ReleasePlan};
use civic_policies::{DatasetPolicy, Query};
use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};
use serde_json::json;

/// Two rows per resident per partner, a resident at up to two of three partners (K = 4);
/// a decimal with a negative bound, so the largest magnitude is not the upper bound.
const POLICY: &str = r#"
[dataset]
id = "neighbours"
title = "Neighbouring datasets"
partners = ["a", "b", "c"]

[contribution]
rows_per_resident_per_partner = 2
max_partners_per_person = 2

[[columns]]
name = "age"
type = "integer"
min = 0
max = 100
bins = [0, 40, 70, 100]

[[columns]]
name = "hba1c"
type = "decimal"
min = -25.0
max = 20.0
resolution = 0.5

[[columns]]
name = "area"
type = "category"
domain = ["north", "south", "east"]

[budget]
total = { rho = 100.0 }
per_query = { rho = 10.0 }

[governance]
min_partners = 2

[disclosure]
profile = "none"
"#;

/// A row: age, HbA1c, area index.
type Row = (i64, f64, u32);

fn cells(plan: &CompiledPlan, (age, hba1c, area): Row) -> Vec<Cell> {
    plan.columns
        .iter()
        .map(|c| match c.as_str() {
            "age" => Cell::Value(Value::Int(age)),
            "hba1c" => Cell::Value(Value::Dec(hba1c)),
            "area" => Cell::Value(Value::Cat(area)),
            other => panic!("unexpected column {other}"),
        })
        .collect()
}

/// One partner's vector over its (resident id, row) list.
fn aggregate(plan: &CompiledPlan, rows: &[(u64, Row)]) -> Vec<i64> {
    let mut agg = Aggregator::new(plan);
    for (id, row) in rows {
        agg.push(&cells(plan, *row), Some(&id.to_le_bytes()));
    }
    agg.finish().0
}

fn random_row(rng: &mut ChaCha20Rng) -> Row {
    (
        i64::from(rng.next_u32() % 130) - 15, // some outside the bounds, clamped
        f64::from(rng.next_u32() % 1000) / 10.0 - 50.0,
        rng.next_u32() % 3,
    )
}

/// The base data: 60 residents over three partners, each at one or two of them.
fn base(rng: &mut ChaCha20Rng) -> Vec<Vec<(u64, Row)>> {
    let mut partners = vec![Vec::new(); 3];
    for id in 0..60u64 {
        let first = (rng.next_u32() % 3) as usize;
        for p in [first, (first + 1 + (rng.next_u32() % 2) as usize) % 3]
            .iter()
            .take(1 + (id % 2) as usize)
        {
            for _ in 0..1 + rng.next_u32() % 3 {
                partners[*p].push((id, random_row(rng)));
            }
        }
    }
    partners
}

/// For each noise group of `query` priced at ρ = 1: the L1 and L2 change that adding the
/// resident with `rows` (per partner) makes to the sum over partners, and the plan's bounds.
fn changes(
    query: serde_json::Value,
    data: &[Vec<(u64, Row)>],
    rows: &[Vec<Row>],
) -> Vec<(f64, f64, f64, f64)> {
    let policy = DatasetPolicy::from_toml(POLICY, "neighbours.toml").unwrap();
    let validated = serde_json::from_value::<Query>(query)
        .unwrap()
        .validate(&policy)
        .unwrap();
    let plan = AggregationPlan::compile(&validated, &policy, 1_000).unwrap();
    let compiled = CompiledPlan::new(&validated, &policy, &plan).unwrap();
    let noise = ReleasePlan::new(&plan, PrivacyChoice::Rho(1.0), 0.05).unwrap();
    let mut delta = vec![0i64; plan.vector_len];
    for (p, extra) in rows.iter().enumerate() {
        let before = aggregate(&compiled, &data[p]);
        let mut with: Vec<(u64, Row)> = data[p].clone();
        with.extend(extra.iter().map(|r| (u64::MAX, *r)));
        let after = aggregate(&compiled, &with);
        for (d, (a, b)) in delta.iter_mut().zip(after.iter().zip(&before)) {
            *d += a - b;
        }
    }
    noise
        .groups
        .iter()
        .map(|g| {
            let members: Vec<_> = g.blocks.iter().map(|&b| plan.blocks[b].clone()).collect();
            let (l1, l2) = plan.joint_sensitivity(&members).unwrap();
            let slots: Vec<i64> = members
                .iter()
                .flat_map(|b| delta[b.offset..b.offset + b.len].iter().copied())
                .collect();
            let observed_l1: f64 = slots.iter().map(|d| d.unsigned_abs() as f64).sum();
            let observed_l2 = slots
                .iter()
                .map(|d| (*d as f64).powi(2))
                .sum::<f64>()
                .sqrt();
            (observed_l1, observed_l2, l1 as f64, l2)
        })
        .collect()
}

fn queries() -> Vec<serde_json::Value> {
    vec![
        json!({ "dataset": "neighbours", "statistic": "count", "group_by": ["area"] }),
        json!({ "dataset": "neighbours", "statistic": { "histogram": { "columns": ["age"] } }, "group_by": ["area"] }),
        json!({ "dataset": "neighbours", "statistic": { "sum": { "column": "hba1c" } }, "group_by": ["area"] }),
        json!({ "dataset": "neighbours", "statistic": { "mean": { "column": "hba1c" } } }),
        json!({ "dataset": "neighbours", "statistic": { "linear_regression": { "features": ["age"], "target": "hba1c" } } }),
    ]
}

#[test]
fn one_more_resident_moves_each_noise_group_within_its_sensitivity() {
    let mut rng = ChaCha20Rng::seed_from_u64(15);
    for trial in 0..40 {
        let data = base(&mut rng);
        // The new resident at two partners (the most a resident may be at), with 1 to 4 rows
        // at each (beyond 2 truncated), in random cells with random, often extreme, values.
        let partners = [trial % 3, (trial + 1) % 3];
        let mut rows = vec![Vec::new(); 3];
        for p in partners {
            for _ in 0..1 + rng.next_u32() % 4 {
                let mut row = random_row(&mut rng);
                if rng.next_u32() % 2 == 0 {
                    row.1 = if rng.next_u32() % 2 == 0 { -25.0 } else { 20.0 };
                }
                rows[p].push(row);
            }
        }
        for query in queries() {
            for (l1, l2, bound1, bound2) in changes(query.clone(), &data, &rows) {
                assert!(l1 <= bound1, "trial {trial}, {query}: L1 {l1} > {bound1}");
                assert!(
                    l2 <= bound2 * (1.0 + 1e-12),
                    "trial {trial}, {query}: L2 {l2} > {bound2}"
                );
            }
        }
    }
}

#[test]
fn the_extreme_resident_reaches_each_bound_so_half_of_it_would_fail() {
    let mut rng = ChaCha20Rng::seed_from_u64(16);
    let data = base(&mut rng);
    // Two rows at each of two partners (three at one: the third is truncated), all in one
    // cell, at the largest magnitudes: age 100, HbA1c −25.
    let extreme: Row = (100, -25.0, 1);
    let rows = vec![vec![extreme; 3], vec![extreme; 2], Vec::new()];
    for query in queries() {
        for (l1, l2, bound1, bound2) in changes(query.clone(), &data, &rows) {
            assert_eq!(l1, bound1, "{query}");
            assert!(
                (l2 - bound2).abs() <= 1e-9 * bound2,
                "{query}: L2 {l2} vs {bound2}"
            );
            assert!(l1 > bound1 / 2.0 && l2 > bound2 / 2.0);
        }
    }
}
