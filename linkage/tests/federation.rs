//! A linked query across several partners: every (housing association, trust) pair joins
//! privately, each partner adds its pairs' shares to its vector, and the sum of all vectors
//! is the table over every pair's join, in the release's layout.

use std::collections::HashMap;

use civic_linkage::federation::{Pair, add_shares, dummy_noise, holder_values, pairs, setup};
use civic_linkage::{HolderRecord, MatcherRecord, Params, holder_start, matcher_start};
use civic_policies::linkage::LinkedShape;
use civic_policies::samples::HOUSING_HEALTH_TOML;
use civic_policies::{DatasetPolicy, Query};
use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};
use serde_json::json;

/// The sample linked policy with small capacities, so that padding stays quick in a test.
fn policy() -> DatasetPolicy {
    let small = HOUSING_HEALTH_TOML
        .replace("capacity = 60000", "capacity = 120")
        .replace("capacity = 1500000", "capacity = 200")
        .replace("capacity = 400000", "capacity = 80")
        .replace("capacity = 200000", "capacity = 50");
    DatasetPolicy::from_toml(&small, "small.toml").unwrap()
}

fn shape(policy: &DatasetPolicy, query: serde_json::Value) -> (LinkedShape, usize) {
    let q: Query = serde_json::from_value(query).unwrap();
    let validated = q.validate(policy).unwrap();
    let cells = validated.cells();
    (LinkedShape::of(&validated, policy).unwrap(), cells)
}

/// A resident: where they live (one association, or none), whether the trust holds them, and
/// their cells and value.
struct Resident {
    id: Vec<u8>,
    housing: Option<usize>,
    at_trust: bool,
    holder_cell: usize,
    matcher_cell: usize,
    value: u64,
}

fn residents(seed: u64, n: usize, shape: &LinkedShape) -> Vec<Resident> {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    (0..n)
        .map(|i| Resident {
            id: format!("999{:07}", i).into_bytes(),
            housing: match rng.next_u64() % 3 {
                0 => None,
                k => Some(k as usize - 1),
            },
            at_trust: rng.next_u64() % 5 < 3,
            holder_cell: (rng.next_u64() % shape.holder_cells() as u64) as usize,
            matcher_cell: (rng.next_u64() % shape.matcher_cells() as u64) as usize,
            value: rng.next_u64() % 7,
        })
        .collect()
}

/// Runs every pair in `run` and returns the sum of all partners' vectors.
fn linked_sum(
    shape: &LinkedShape,
    cells: usize,
    people: &[Resident],
    run: &[Pair],
    seed: u64,
) -> Vec<u64> {
    let dummies = dummy_noise(shape, 0.01).unwrap();
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let mut vectors: HashMap<String, Vec<u64>> = HashMap::new();
    let len = cells * shape.value.slots();
    for pair in run {
        let h = shape
            .holder
            .partners
            .iter()
            .position(|p| *p == pair.holder)
            .unwrap();
        let holder: Vec<HolderRecord> = people
            .iter()
            .filter(|r| r.housing == Some(h))
            .map(|r| HolderRecord {
                identifier: r.id.clone(),
                values: holder_values(shape, r.holder_cell, r.value),
            })
            .collect();
        let matcher: Vec<MatcherRecord> = people
            .iter()
            .filter(|r| r.at_trust)
            .map(|r| MatcherRecord {
                identifier: r.id.clone(),
                category: r.matcher_cell as u32,
            })
            .collect();
        let params = Params::new(setup(shape, b"round 17", pair, dummies)).unwrap();
        let (hs, offer) = holder_start(params.clone(), &holder, &mut rng, 2).unwrap();
        let (ms, moffer) = matcher_start(params, &matcher, &mut rng, 2).unwrap();
        let (hs, returned) = hs
            .respond(&moffer, &mut rng, 2)
            .map_err(|e| e.error)
            .unwrap();
        let (out, sums) = ms
            .finish(&offer, &returned, &mut rng, 2)
            .map_err(|e| e.error)
            .unwrap();
        let holder_shares = hs.finish(&sums).map_err(|e| e.error).unwrap();
        for (partner, shares) in [(&pair.holder, &holder_shares), (&pair.matcher, &out.shares)] {
            let v = vectors
                .entry(partner.clone())
                .or_insert_with(|| vec![0; len]);
            add_shares(v, shape, cells, shares);
        }
    }
    // The secure sum: every partner's vector added, wrapping.
    let mut total = vec![0u64; len];
    for v in vectors.values() {
        for (t, x) in total.iter_mut().zip(v) {
            *t = t.wrapping_add(*x);
        }
    }
    total
}

/// The same table from the residents in the clear, over the pairs in `run`.
fn plaintext(shape: &LinkedShape, cells: usize, people: &[Resident], run: &[Pair]) -> Vec<u64> {
    let slots = shape.value.slots();
    let mut table = vec![0u64; cells * slots];
    for r in people.iter().filter(|r| r.at_trust) {
        let Some(h) = r.housing else { continue };
        let in_run = run.iter().any(|p| p.holder == shape.holder.partners[h]);
        if !in_run {
            continue;
        }
        let values = holder_values(shape, r.holder_cell, r.value);
        for part in 0..slots {
            let at = part * cells + shape.release_cell(r.matcher_cell, r.holder_cell);
            table[at] += values[r.holder_cell * slots + part];
        }
    }
    table
}

#[test]
fn a_contingency_table_over_two_associations_and_a_trust_is_the_join() {
    let policy = policy();
    let (shape, cells) = shape(
        &policy,
        json!({
            "dataset": "housing-health",
            "statistic": {"histogram": {"columns": ["respiratory_admissions", "damp_mould_reported"]}},
            "group_by": ["tenure"],
        }),
    );
    assert_eq!(shape.holder.kind, "housing");
    let all = pairs(&shape);
    assert_eq!(all.len(), 2);
    let people = residents(1, 180, &shape);
    let sum = linked_sum(&shape, cells, &people, &all, 2);
    assert_eq!(sum, plaintext(&shape, cells, &people, &all));
    assert!(sum.iter().sum::<u64>() > 50, "the join is not empty");

    // A side that drops out drops its pair: the round sums the pairs that ran.
    let without_south: Vec<Pair> = all
        .iter()
        .filter(|p| p.holder != "housing-south")
        .cloned()
        .collect();
    let sum = linked_sum(&shape, cells, &people, &without_south, 3);
    assert_eq!(sum, plaintext(&shape, cells, &people, &without_south));
}

#[test]
fn a_mean_of_a_holder_column_by_the_matchers_cells_sums_values_and_counts() {
    let policy = policy();
    // Sum and count of adaptations (housing) by respiratory admissions (the trust): housing
    // is the holder because the summed column is its own.
    let (shape, cells) = shape(
        &policy,
        json!({
            "dataset": "housing-health",
            "statistic": {"mean": {"column": "adaptations"}},
            "group_by": ["respiratory_admissions"],
        }),
    );
    assert_eq!(
        (shape.holder.kind.as_str(), shape.value.slots()),
        ("housing", 2)
    );
    let people: Vec<Resident> = residents(4, 150, &shape)
        .into_iter()
        .map(|r| Resident {
            value: r.value.min(6),
            ..r
        })
        .collect();
    let all = pairs(&shape);
    let sum = linked_sum(&shape, cells, &people, &all, 5);
    assert_eq!(sum, plaintext(&shape, cells, &people, &all));
}
