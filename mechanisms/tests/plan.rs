//! Aggregation plans compiled from the sample policies: layouts, fixed-point units and
//! sensitivities derived from the contribution bounds.

use civic_mechanisms::BlockKind;
use civic_policies::samples;

mod common;
use common::plan;

#[test]
fn a_grouped_count_is_one_block_and_its_sensitivity_counts_every_partner() {
    let falls = samples::falls_housing();
    let p = plan(
        &falls,
        r#"{"dataset":"falls-housing","statistic":"count","group_by":["property_type"]}"#,
    );
    assert_eq!((p.vector_len, p.cells, p.blocks.len()), (5, 5, 1));
    // A resident can be in all three partners' data, one row each: adding them changes the
    // counts by at most 3 in total.
    assert_eq!(p.rows_per_resident, 3);
    assert_eq!(p.l1_sensitivity(&p.blocks[0]).unwrap(), 3);
    assert_eq!(p.max_slot_per_partner, 1_000_000);
}

#[test]
fn a_mean_of_a_decimal_column_is_a_fixed_point_sum_and_a_count() {
    let diabetes = samples::diabetes();
    let p = plan(
        &diabetes,
        r#"{"dataset":"diabetes","statistic":{"mean":{"column":"hba1c"}},"group_by":["age"]}"#,
    );
    assert_eq!(p.vector_len, 8, "four age bands × (sum, count)");
    let (sum, count) = (&p.blocks[0], &p.blocks[1]);
    assert_eq!(
        sum.kind,
        BlockKind::Sum {
            column: "hba1c".into()
        }
    );
    assert_eq!(
        (sum.offset, sum.len, sum.units_per_value, sum.per_row_max),
        (0, 4, 10.0, 1500)
    );
    assert_eq!((count.kind.clone(), count.offset), (BlockKind::Count, 4));
    // Two practices per resident at most, one row each, HbA1c at most 150.0 = 1500 units.
    assert_eq!(p.l1_sensitivity(sum).unwrap(), 3000);
    assert_eq!(p.l1_sensitivity(count).unwrap(), 2);

    // In units of 0.1: 4215.0 and 5102.3.
    let summed = [42_150, 51_023, 0, 10, 900, 1000, 0, 1];
    let decoded = p.decode(&summed).expect("right length");
    assert_eq!(decoded[0].1, vec![4215.0, 5102.3, 0.0, 1.0]);
    assert_eq!(decoded[1].1, vec![900.0, 1000.0, 0.0, 1.0]);
    let err = p.decode(&summed[..7]).unwrap_err();
    assert!(err.to_string().contains("7 slots, the plan 8"), "{err}");
}

#[test]
fn a_regression_carries_the_upper_triangle_of_xtx_and_xty() {
    let falls = samples::falls_housing();
    let p = plan(
        &falls,
        r#"{"dataset":"falls-housing","statistic":{"linear_regression":{"features":["age","home_adaptations"],"target":"falls_admissions"}}}"#,
    );
    let layout: Vec<(String, String, u64)> = p
        .blocks
        .iter()
        .map(|b| match &b.kind {
            BlockKind::Cross { left, right } => (left.clone(), right.clone(), b.per_row_max),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    let expected = [
        ("1", "1", 1),
        ("1", "age", 105),
        ("1", "home_adaptations", 6),
        ("age", "age", 105 * 105),
        ("age", "home_adaptations", 105 * 6),
        ("home_adaptations", "home_adaptations", 36),
        ("1", "falls_admissions", 5),
        ("age", "falls_admissions", 105 * 5),
        ("home_adaptations", "falls_admissions", 6 * 5),
    ];
    let expected: Vec<(String, String, u64)> = expected
        .iter()
        .map(|(a, b, m)| (a.to_string(), b.to_string(), *m))
        .collect();
    assert_eq!(layout, expected);
    // One row touches every slot: L1 = K × Σ per-row maxima, L2 = K × √Σ maxima².
    let (l1, l2) = p.joint_sensitivity(&p.blocks).unwrap();
    let maxima: Vec<f64> = expected.iter().map(|e| e.2 as f64).collect();
    assert_eq!(l1, 3 * expected.iter().map(|e| e.2).sum::<u64>());
    assert!((l2 - 3.0 * maxima.iter().map(|m| m * m).sum::<f64>().sqrt()).abs() < 1e-9);
}

#[test]
fn histograms_and_quantiles_count_over_their_cells() {
    let diabetes = samples::diabetes();
    let p = plan(
        &diabetes,
        r#"{"dataset":"diabetes","statistic":{"histogram":{"columns":["has_diabetes"]}},"group_by":["deprivation_decile"]}"#,
    );
    assert_eq!((p.vector_len, p.blocks.len()), (20, 1));
    let p = plan(
        &diabetes,
        r#"{"dataset":"diabetes","statistic":{"quantiles":{"column":"hba1c","probabilities":[0.5]}}}"#,
    );
    assert_eq!(p.vector_len, 5, "five HbA1c bins");
}

#[test]
fn a_sum_outside_what_the_survivors_can_add_up_to_is_not_admitted() {
    let falls = samples::falls_housing();
    let p = plan(
        &falls,
        r#"{"dataset":"falls-housing","statistic":"count","group_by":["property_type"]}"#,
    );
    // Each partner adds at most 1,000,000 to a slot.
    assert!(p.admits_sum(&[0, 3_000_000, -3_000_000, 5, 7], 3, 0));
    // The partners' noise shares widen it by their tail, no more.
    assert!(p.admits_sum(&[0, 3_000_040, 0, 5, 7], 3, 40));
    assert!(!p.admits_sum(&[0, 3_000_041, 0, 5, 7], 3, 40));
    assert!(!p.admits_sum(&[0, 3_000_001, 0, 5, 7], 3, 0));
    assert!(!p.admits_sum(&[0, 2_000_001, 0, 5, 7], 2, 0));
    // A masked value left in by a wrong share is almost surely far outside.
    assert!(!p.admits_sum(&[0, i64::MIN, 0, 5, 7], 3, 0));
    assert!(!p.admits_sum(&[0, 0, 0, 0], 3, 0), "wrong length");
}
