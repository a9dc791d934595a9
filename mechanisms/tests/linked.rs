//! Pricing a query over a linked dataset: the table's sensitivity counts the pairs of
//! partners one resident can be in, and the cost adds the match counts' charge.

use civic_mechanisms::{PricingContext, price};
use civic_policies::samples::{HOUSING_HEALTH_TOML, housing_health};
use civic_policies::{DatasetPolicy, PrivacyRequest, Query, Rho};
use serde_json::json;

fn context() -> PricingContext {
    PricingContext {
        max_rows_per_partner: 60_000,
        reporting_delta: 1e-7,
        board_floor: Rho::ZERO,
        honest_survivors: 2,
    }
}

fn damp_by_respiratory() -> Query {
    serde_json::from_value(json!({
        "dataset": "housing-health",
        "statistic": {"histogram": {"columns": ["damp_mould_reported", "respiratory_admissions"]}},
    }))
    .unwrap()
}

fn priced(policy: &DatasetPolicy) -> civic_mechanisms::Priced {
    price(
        policy,
        &damp_by_respiratory(),
        PrivacyRequest::Rho(0.05),
        None,
        context(),
    )
    .unwrap()
}

#[test]
fn a_linked_query_pays_its_release_and_the_match_counts() {
    let p = priced(&housing_health());
    assert_eq!(p.plan.cells, 6);
    // One housing association and one trust per resident: one pair.
    assert_eq!(p.plan.rows_per_resident, 1);
    assert_eq!(p.match_counts, Rho::cap(0.01).unwrap());
    assert_eq!(
        p.cost.rho,
        p.release_plan.cost.checked_add(p.match_counts).unwrap()
    );
    assert!((p.cost.rho.as_f64() - 0.06).abs() < 1e-9, "{}", p.cost.rho);
    assert_eq!(p.cost.epsilon, None);
    // The match counts' clamp adds its δ to the stated (ε, δ).
    assert_eq!(
        p.cost.approx_dp.1,
        1e-7 + civic_policies::linkage::MATCH_COUNT_DELTA
    );
}

#[test]
fn residents_at_several_partners_of_a_kind_widen_the_table_noise() {
    let two_homes = HOUSING_HEALTH_TOML.replacen(
        "max_partners_per_person = 1\n\n[[linkage.sides]]\nkind = \"admissions\"",
        "max_partners_per_person = 2\n\n[[linkage.sides]]\nkind = \"admissions\"",
        1,
    );
    let policy = DatasetPolicy::from_toml(&two_homes, "two-homes.toml").unwrap();
    let one = priced(&housing_health());
    let two = priced(&policy);
    assert_eq!(two.plan.rows_per_resident, 2);
    // Twice the sensitivity at the same ρ: about twice the interval.
    let ratio = two.half_widths[0] / one.half_widths[0];
    assert!((1.8..=2.2).contains(&ratio), "{ratio}");
}

#[test]
fn linked_queries_that_cannot_be_split_are_refused_at_pricing() {
    let q: Query = serde_json::from_value(json!({
        "dataset": "housing-health",
        "statistic": {"histogram": {"columns": ["tenure"]}},
    }))
    .unwrap();
    let e = price(
        &housing_health(),
        &q,
        PrivacyRequest::Rho(0.05),
        None,
        context(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("exactly two kinds"), "{e}");
}
