//! Releases end to end from a summed vector: cost stated before sampling, post-processing,
//! intervals and the receipt.

use civic_mechanisms::plan::MAX_SENSITIVITY;
use civic_mechanisms::{AggregationPlan, NoiseKind, NoiseSetting, PrivacyChoice, ReleasePlan};
use civic_policies::samples;
use civic_policies::{DatasetPolicy, Query, Rho};

mod common;
use common::plan as compile;

#[test]
fn a_count_release_states_its_cost_first_and_applies_the_nhs_rule() {
    let falls = samples::falls_housing();
    let plan = compile(
        &falls,
        r#"{"dataset":"falls-housing","statistic":"count","group_by":["property_type"]}"#,
    );
    let release_plan =
        ReleasePlan::new(&plan, PrivacyChoice::Epsilon(0.5), 0.05).expect("calibrates");
    // Δ₁ = 3 (one row in each of three partners), ε = 0.5: scale 6 (and a few ulps, so
    // that the cost, as OpenDP and the ledger round it up, is what was asked), ρ = ε²/2
    // exactly.
    let scale = release_plan.groups[0].spec.scale;
    assert!((6.0..6.0 + 1e-12).contains(&scale), "{scale}");
    assert_eq!(release_plan.cost, Rho::from_units(125_000_000_000));
    let widths = release_plan.half_widths(&plan).unwrap();
    assert!(widths[0] > 15.0 && widths[0] < 20.0, "{widths:?}");

    let summed = [1200, 800, 450, 3, 0];
    let err = release_plan
        .release(
            &plan,
            &falls,
            &summed,
            3,
            Rho::cost_of_pure_epsilon(0.4).unwrap(),
            1e-6,
        )
        .unwrap_err();
    assert_eq!(err.code(), "mechanism.over_budget");

    let release = release_plan
        .release(&plan, &falls, &summed, 3, release_plan.cost, 1e-6)
        .expect("releases");
    assert_eq!(release.names, vec!["count"]);
    let cells = &release.rows[0];
    assert_eq!(cells.len(), 5);
    for (cell, truth) in cells.iter().zip(summed) {
        if let Some(v) = cell.value {
            assert_eq!(v % 5.0, 0.0, "NHS rounding to 5");
            // The interval is centred on the rounded value (its midpoint does not give back
            // the unrounded count) and widened by the most rounding moves a count, 2.
            let (lo, hi) = cell.interval.unwrap();
            if lo > 0.0 {
                assert_eq!((lo + hi) / 2.0, v, "{cell:?}");
                assert!((hi - lo - 2.0 * (widths[0] + 2.0)).abs() < 1e-9, "{cell:?}");
            }
            assert!(v == 0.0 || v >= 10.0, "1-7 redacted and 8/9 round to 10");
            assert!(
                (v - truth as f64).abs() < 80.0,
                "noise at scale 6 stays small: {v} vs {truth}"
            );
        }
    }
    let r = &release.receipt;
    assert_eq!(
        (r.privacy_unit.as_str(), r.rows_per_resident, r.survivors),
        ("one resident", 3, 3)
    );
    assert_eq!(r.epsilon, Some(0.5));
    assert!(
        r.rules.iter().any(|x| x.contains("counts 1-7 redacted")),
        "{:?}",
        r.rules
    );
    assert!(
        r.mechanisms[0].starts_with("discrete Laplace on count: scale 6"),
        "{:?}",
        r.mechanisms
    );
    // The ledger composes in ρ; as (ε, δ) one pure release reads looser than its own ε.
    assert_eq!(r.approx_dp.1, 1e-6);
    assert!(r.approx_dp.0 > 0.5 && r.approx_dp.0 < 0.125 + 2.0 * (0.125f64 * 1e6f64.ln()).sqrt());
}

#[test]
fn a_mean_splits_its_budget_and_bounds_its_interval() {
    let diabetes = samples::diabetes();
    let plan = compile(
        &diabetes,
        r#"{"dataset":"diabetes","statistic":{"mean":{"column":"hba1c"}},"group_by":["sex"]}"#,
    );
    let release_plan = ReleasePlan::new(&plan, PrivacyChoice::Rho(0.05), 0.05).expect("calibrates");
    assert_eq!(
        release_plan.groups.len(),
        2,
        "sum and count noised separately"
    );
    assert!(
        (release_plan.cost.as_f64() - 0.05).abs() < 1e-11,
        "the two halves add up to ρ"
    );
    // True means 53.0 and 61.5 over 20,000 and 18,000 people (in units of 0.1 for the sum).
    let summed = [10_600_000, 11_070_000, 20_000, 18_000];
    let release = release_plan
        .release(&plan, &diabetes, &summed, 5, release_plan.cost, 1e-6)
        .expect("releases");
    assert_eq!(release.names, vec!["mean(hba1c)"]);
    for (cell, truth) in release.rows[0].iter().zip([53.0, 61.5]) {
        let value = cell.value.expect("defined");
        let (lo, hi) = cell.interval.expect("count interval excludes 0");
        assert!(
            lo <= value && value <= hi && hi - lo < 5.0,
            "{lo} {value} {hi}"
        );
        assert!((value - truth).abs() < 2.5, "{value} vs {truth}");
    }
    assert!(
        release
            .receipt
            .caveats
            .iter()
            .any(|c| c.contains("at least 90%"))
    );
    assert_eq!(release.receipt.epsilon, None);
}

#[test]
fn a_regression_recovers_its_coefficients_from_noisy_sufficient_statistics() {
    let falls = samples::falls_housing();
    let plan = compile(
        &falls,
        r#"{"dataset":"falls-housing","statistic":{"linear_regression":{"features":["home_adaptations"],"target":"falls_admissions"}}}"#,
    );
    // falls = 0.5 + 0.25 × adaptations on average, for N = 100,000 people at each of 0..=4
    // adaptations: n = 5N, Σx = 10N, Σx² = 30N, Σy = 5N, Σxy = 12.5N. The noise (σ ≈ 86 on each
    // slot) moves the coefficients by about 10⁻³, so the tolerances below are over 20 standard
    // errors wide.
    let big_n = 100_000i64;
    let summed = [5 * big_n, 10 * big_n, 30 * big_n, 5 * big_n, 25 * big_n / 2];
    let release_plan = ReleasePlan::new(&plan, PrivacyChoice::Rho(2.0), 0.05).expect("calibrates");
    let release = release_plan
        .release(&plan, &falls, &summed, 3, release_plan.cost, 1e-6)
        .expect("releases");
    assert_eq!(
        release.names,
        vec![
            "beta(intercept) for falls_admissions",
            "beta(home_adaptations)"
        ]
    );
    let beta: Vec<f64> = release
        .rows
        .iter()
        .map(|r| r[0].value.expect("solved"))
        .collect();
    assert!(
        (beta[0] - 0.5).abs() < 0.1 && (beta[1] - 0.25).abs() < 0.05,
        "{beta:?}"
    );
    assert!(
        release
            .receipt
            .caveats
            .iter()
            .any(|c| c.contains("no intervals"))
    );
}

#[test]
fn quantiles_come_from_the_noisy_histogram() {
    let diabetes = samples::diabetes();
    let plan = compile(
        &diabetes,
        r#"{"dataset":"diabetes","statistic":{"quantiles":{"column":"hba1c","probabilities":[0.5]}}}"#,
    );
    // Bins [20, 42, 48, 58, 75, 150]: 1,000 / 4,000 / 3,000 / 1,500 / 500 people.
    let summed = [1000, 4000, 3000, 1500, 500];
    let release_plan =
        ReleasePlan::new(&plan, PrivacyChoice::Epsilon(1.0), 0.05).expect("calibrates");
    let release = release_plan
        .release(&plan, &diabetes, &summed, 5, release_plan.cost, 1e-6)
        .expect("releases");
    // The median is the 5,000th person: 4,000 into the 4,000-person bin [42, 48): 48.0.
    let median = release.rows[0][0].value.expect("defined");
    assert!((median - 48.0).abs() < 0.5, "{median}");
}

#[test]
fn a_release_below_the_quorum_or_off_its_plan_is_refused() {
    let falls = samples::falls_housing();
    let plan = compile(
        &falls,
        r#"{"dataset":"falls-housing","statistic":"count","group_by":["sex"]}"#,
    );
    let release_plan =
        ReleasePlan::new(&plan, PrivacyChoice::Epsilon(0.5), 0.05).expect("calibrates");
    let err = release_plan
        .release(&plan, &falls, &[10, 20], 2, release_plan.cost, 1e-6)
        .unwrap_err();
    assert!(
        err.to_string().contains(
            "2 partners survived; dataset falls-housing releases nothing from fewer than 3"
        ),
        "{err}"
    );
    // A calibration made for another plan (a sum, with a far larger sensitivity) is refused.
    let other = compile(
        &falls,
        r#"{"dataset":"falls-housing","statistic":{"sum":{"column":"age"}},"group_by":["sex"]}"#,
    );
    let err = release_plan
        .release(&other, &falls, &[10, 20], 3, release_plan.cost, 1e-6)
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("assumed sensitivity 3 where the plan needs 315"),
        "{err}"
    );
    let err = release_plan
        .release(&plan, &falls, &[10, 20, 30], 3, release_plan.cost, 1e-6)
        .unwrap_err();
    assert!(err.to_string().contains("3 slots, the plan 2"), "{err}");
}

#[test]
fn a_plan_whose_sensitivity_cannot_be_held_exactly_is_refused() {
    // HbA1c up to 150.0 at resolution 10⁻⁶ is 1.5·10⁸ units per row; its square in a
    // regression, 2.25·10¹⁶, is beyond 2^53 ≈ 9·10¹⁵.
    let text = samples::DIABETES_TOML.replace(
        "min = 20.0\nmax = 150.0\nresolution = 0.1",
        "min = 20.0\nmax = 150.0\nresolution = 0.000001",
    );
    let policy = DatasetPolicy::from_toml(&text, "fine.toml").expect("valid");
    let query: Query = serde_json::from_str(
        r#"{"dataset":"diabetes","statistic":{"linear_regression":{"features":["hba1c"],"target":"age"}}}"#,
    )
    .expect("parses");
    let err =
        AggregationPlan::compile(&query.validate(&policy).expect("valid"), &policy, 1).unwrap_err();
    assert!(err.to_string().contains("above 2^53"), "{err}");
    assert_eq!(MAX_SENSITIVITY, 1 << 53);
}

#[test]
fn a_tampered_plan_is_refused_not_panicked_on() {
    let diabetes = samples::diabetes();
    let mut plan = compile(
        &diabetes,
        r#"{"dataset":"diabetes","statistic":{"mean":{"column":"hba1c"}}}"#,
    );
    plan.blocks.pop();
    let err = ReleasePlan::new(&plan, PrivacyChoice::Rho(0.05), 0.05).unwrap_err();
    assert!(err.to_string().contains("inconsistent plan"), "{err}");
    let mut plan = compile(&diabetes, r#"{"dataset":"diabetes","statistic":"count"}"#);
    plan.blocks[0].len = 2;
    let err = ReleasePlan::new(&plan, PrivacyChoice::Rho(0.05), 0.05).unwrap_err();
    assert!(err.to_string().contains("one slot per cell"), "{err}");
}

#[test]
fn a_target_accuracy_buys_the_cheapest_calibration_that_meets_it() {
    let policy = civic_policies::samples::diabetes();
    for (json, target) in [
        (r#"{"dataset":"diabetes","statistic":"count"}"#, 25.0),
        (
            r#"{"dataset":"diabetes","statistic":{"histogram":{"columns":["sex"]}}}"#,
            10.0,
        ),
        (
            r#"{"dataset":"diabetes","statistic":{"mean":{"column":"hba1c"}}}"#,
            400.0,
        ),
    ] {
        let plan = compile(&policy, json);
        for kind in [NoiseKind::DiscreteLaplace, NoiseKind::DiscreteGaussian] {
            let chosen = ReleasePlan::for_target_half_width(
                &plan,
                kind,
                target,
                0.05,
                NoiseSetting::Central,
            )
            .unwrap();
            let widest = |p: &ReleasePlan| {
                p.half_widths(&plan)
                    .unwrap()
                    .into_iter()
                    .fold(0.0, f64::max)
            };
            assert!(
                widest(&chosen) <= target,
                "{json} {kind:?}: {} > {target}",
                widest(&chosen)
            );
            // 0.1% less privacy loss no longer meets the target: the choice is the cheapest,
            // to the search's precision.
            let amount = match kind {
                NoiseKind::DiscreteLaplace => chosen
                    .groups
                    .iter()
                    .map(|g| g.epsilon.unwrap())
                    .sum::<f64>(),
                NoiseKind::DiscreteGaussian => chosen.cost.as_f64(),
            };
            let cheaper = match kind {
                NoiseKind::DiscreteLaplace => PrivacyChoice::Epsilon(amount * 0.999),
                NoiseKind::DiscreteGaussian => PrivacyChoice::Rho(amount * 0.999),
            };
            let cheaper = ReleasePlan::new(&plan, cheaper, 0.05).unwrap();
            assert!(
                widest(&cheaper) > target,
                "{json} {kind:?}: a cheaper calibration also meets {target}"
            );
        }
    }
    let plan = compile(&policy, r#"{"dataset":"diabetes","statistic":"count"}"#);
    for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        assert!(
            ReleasePlan::for_target_half_width(
                &plan,
                NoiseKind::DiscreteLaplace,
                bad,
                0.05,
                NoiseSetting::Central
            )
            .is_err()
        );
    }
}

#[test]
fn a_request_is_charged_exactly_what_it_asks_and_never_less_than_it_spends() {
    let diabetes = samples::diabetes();
    let queries = [
        r#"{"dataset":"diabetes","statistic":"count","group_by":["sex"]}"#,
        r#"{"dataset":"diabetes","statistic":{"mean":{"column":"hba1c"}}}"#,
    ];
    for json in queries {
        let plan = compile(&diabetes, json);
        for (choice, asked) in [
            (PrivacyChoice::Rho(0.1), 100_000_000_000),
            (PrivacyChoice::Rho(0.3), 300_000_000_000),
            (PrivacyChoice::Rho(0.07), 70_000_000_000),
            (PrivacyChoice::Epsilon(0.1), 5_000_000_000),
            (PrivacyChoice::Epsilon(1.3), 845_000_000_000),
        ] {
            let p = ReleasePlan::new(&plan, choice, 0.05).unwrap();
            let groups = p.groups.len() as u64;
            // A mean's ε is split in two, whose ρ = (ε/2)²/2 each.
            let expected = match choice {
                PrivacyChoice::Rho(_) => asked,
                PrivacyChoice::Epsilon(_) => asked / groups,
            };
            assert_eq!(p.cost.units(), expected, "{json} {choice:?}");
            for g in &p.groups {
                let spent = g.spec.cost().unwrap().rho;
                assert!(
                    spent <= g.rho,
                    "{json} {choice:?}: spends {spent}, charged {}",
                    g.rho
                );
            }
        }
    }
}

#[test]
fn a_preview_states_the_accuracy_of_the_rows_the_release_will_name() {
    let falls = samples::falls_housing();
    let plan = compile(
        &falls,
        r#"{"dataset":"falls-housing","statistic":"count","group_by":["property_type"]}"#,
    );
    let p = ReleasePlan::new(&plan, PrivacyChoice::Epsilon(0.5), 0.05).unwrap();
    let accuracy = p.accuracy(&plan, &falls).unwrap();
    let widths = p.half_widths(&plan).unwrap();
    // The NHS rule rounds to 5: the half-width takes in the 2 rounding may move a count.
    assert_eq!(accuracy[0].name, "count");
    assert_eq!(accuracy[0].half_width, Some(widths[0] + 2.0));
    assert!(
        accuracy[0]
            .note
            .as_deref()
            .unwrap()
            .contains("rounded to the nearest 5")
    );

    // A mean: its own half-width, by the rows of its cell, never its blocks'.
    let diabetes = samples::diabetes();
    let plan = compile(
        &diabetes,
        r#"{"dataset":"diabetes","statistic":{"mean":{"column":"hba1c"}}}"#,
    );
    let p = ReleasePlan::new(&plan, PrivacyChoice::Rho(0.05), 0.05).unwrap();
    let accuracy = p.accuracy(&plan, &diabetes).unwrap();
    let widths = p.half_widths(&plan).unwrap();
    assert_eq!(accuracy.len(), 1);
    let mean = &accuracy[0];
    assert_eq!((mean.name.as_str(), mean.half_width), ("mean(hba1c)", None));
    assert_eq!(mean.confidence, 0.9);
    let rows: Vec<u64> = mean.half_width_at_rows.iter().map(|r| r.0).collect();
    assert_eq!(rows, [100, 1000, 10_000, 100_000]);
    // (a_sum + 150·a_count) / (n − a_count), HbA1c in [20, 150], capped at the range.
    for &(n, hw) in &mean.half_width_at_rows {
        let expected = ((widths[0] + 150.0 * widths[1]) / (n as f64 - widths[1])).min(130.0);
        assert!((hw - expected).abs() < 1e-9, "{n}: {hw} vs {expected}");
    }
    assert!(mean.half_width_at_rows.windows(2).all(|w| w[1].1 < w[0].1));

    // Quantiles and regression coefficients: named, with no interval and a note saying so.
    let plan = compile(
        &diabetes,
        r#"{"dataset":"diabetes","statistic":{"quantiles":{"column":"age","probabilities":[0.25,0.5]}}}"#,
    );
    let p = ReleasePlan::new(&plan, PrivacyChoice::Rho(0.05), 0.05).unwrap();
    let accuracy = p.accuracy(&plan, &diabetes).unwrap();
    let names: Vec<&str> = accuracy.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["q0.25(age)", "q0.5(age)"]);
    assert!(
        accuracy
            .iter()
            .all(|a| a.half_width.is_none() && a.note.is_some())
    );
}
