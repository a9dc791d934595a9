//! Linked datasets: `[linkage]` is checked against the rest of the policy, and a query over a
//! linked dataset splits into what each of the two sides computes.

use civic_policies::linkage::{HolderValue, IdentifierFormat, LinkedShape};
use civic_policies::samples::{HOUSING_HEALTH_TOML, housing_health};
use civic_policies::{DatasetPolicy, PolicyError, Query, Rho};
use serde_json::json;

fn refused(edit: impl Fn(&str) -> String) -> (String, String) {
    match DatasetPolicy::from_toml(&edit(HOUSING_HEALTH_TOML), "housing-health.toml") {
        Err(PolicyError::Invalid { field, reason, .. }) => (field, reason),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn the_sample_linked_policy_parses_with_its_sides() {
    let p = housing_health();
    let l = p.linkage.as_ref().expect("linked");
    assert_eq!(l.identifier, IdentifierFormat::NhsNumber);
    assert_eq!(l.match_counts, Rho::cap(0.01).unwrap());
    let kinds: Vec<&str> = l.sides.iter().map(|s| s.kind.as_str()).collect();
    assert_eq!(
        kinds,
        ["housing", "admissions", "primary-care", "social-care"]
    );
    assert_eq!(l.side_of_partner("housing-south").unwrap().kind, "housing");
    assert_eq!(l.side_of_column("hba1c").unwrap().kind, "primary-care");
    // Default: a resident may be at every partner of a kind.
    assert_eq!(l.sides[1].max_partners_per_person, 1);
    assert_eq!(l.sides[0].max_partners_per_person, 1);
}

#[test]
fn inconsistent_linkage_sections_are_refused_with_the_field_named() {
    // (replace this, with this, the field named, a phrase of the reason)
    let cases: Vec<(&str, &str, &str, &str)> = vec![
        (
            "rows_per_resident_per_partner = 1",
            "rows_per_resident_per_partner = 2",
            "contribution.rows_per_resident_per_partner",
            "one record per resident",
        ),
        (
            "partners = [\"acute-trust\"]",
            "partners = [\"acute-trust\", \"housing-north\"]",
            "linkage.sides[1].partners[1]",
            "two sides",
        ),
        (
            "partners = [\"acute-trust\"]",
            "partners = [\"acute-trust\", \"elsewhere\"]",
            "linkage.sides[1].partners[1]",
            "not in dataset.partners",
        ),
        (
            "columns = [\"care_package\"]",
            "columns = [\"care_package\", \"hba1c\"]",
            "linkage.sides[3].columns[1]",
            "two sides",
        ),
        (
            "columns = [\"care_package\"]",
            "columns = [\"care_packages\"]",
            "linkage.sides[3].columns[0]",
            "not a column",
        ),
        (
            "columns = [\"diabetes\", \"hba1c\"]",
            "columns = [\"diabetes\"]",
            "linkage.sides",
            "column \"hba1c\" is held by no side",
        ),
        (
            "capacity = 60000",
            "capacity = 0",
            "linkage.sides[0].capacity",
            "between 1 and",
        ),
        (
            "max_partners_per_person = 1\n\n[[linkage.sides]]\nkind = \"admissions\"",
            "max_partners_per_person = 3\n\n[[linkage.sides]]\nkind = \"admissions\"",
            "linkage.sides[0].max_partners_per_person",
            "this kind's 2 partners",
        ),
        (
            "match_counts = { rho = 0.01 }",
            "match_counts = { rho = 0.5 }",
            "linkage.match_counts",
            "exceeds the per-query cap",
        ),
        (
            "kind = \"social-care\"",
            "kind = \"housing\"",
            "linkage.sides[3].kind",
            "declared twice",
        ),
    ];
    for (from, to, field, reason) in cases {
        let (f, r) = refused(|t| t.replacen(from, to, 1));
        assert_eq!(f, field, "{r}");
        assert!(r.contains(reason), "{field}: {r}");
    }
    // A side dropped entirely leaves its partners on no side.
    let without_care = HOUSING_HEALTH_TOML
        .split("[[linkage.sides]]\nkind = \"social-care\"")
        .next()
        .unwrap()
        .to_string();
    let (f, r) = refused(|_| without_care.clone());
    assert_eq!(f, "linkage.sides");
    assert!(r.contains("\"council-asc\" is on no side"), "{r}");
}

fn shape(query: serde_json::Value) -> Result<LinkedShape, PolicyError> {
    let policy = housing_health();
    let q: Query = serde_json::from_value(query).unwrap();
    let validated = q.validate(&policy)?;
    LinkedShape::of(&validated, &policy)
}

#[test]
fn a_contingency_table_puts_the_smaller_side_on_the_holder_and_keeps_the_query_order() {
    // damp × respiratory admissions: housing (60,000) holds, admissions (1.5 M) matches.
    let s = shape(json!({
        "dataset": "housing-health",
        "statistic": {"histogram": {"columns": ["respiratory_admissions", "damp_mould_reported"]}},
        "group_by": ["property_type"],
    }))
    .unwrap();
    assert_eq!(s.holder.kind, "housing");
    assert_eq!(s.matcher.kind, "admissions");
    assert_eq!(s.holder_keys, ["property_type", "damp_mould_reported"]);
    assert_eq!(s.matcher_keys, ["respiratory_admissions"]);
    assert_eq!(
        (s.holder_cells(), s.matcher_cells(), s.width()),
        (10, 3, 10)
    );
    assert_eq!(s.value, HolderValue::Count);
    // Release order: property_type (5) × respiratory (3) × damp (2), the last fastest.
    // Matcher cell 2 (respiratory "[2, 5]"), holder cell 7 (flat = 3, damp true = 1).
    assert_eq!(s.release_cell(2, 7), (3 * 3 + 2) * 2 + 1);
    let mut seen: Vec<usize> = (0..3)
        .flat_map(|m| (0..10).map(move |h| (m, h)))
        .map(|(m, h)| s.release_cell(m, h))
        .collect();
    seen.sort();
    assert_eq!(seen, (0..30).collect::<Vec<_>>(), "every cell exactly once");
    assert_eq!(s.sensitivity(), (1.0, 1.0));
}

#[test]
fn a_mean_is_held_by_its_column_side_with_filters_split_by_side() {
    let s = shape(json!({
        "dataset": "housing-health",
        "statistic": {"mean": {"column": "hba1c"}},
        "group_by": ["damp_mould_reported"],
        "filter": {"and": [
            {"compare": {"column": "diabetes", "op": "eq", "value": true}},
            {"compare": {"column": "tenure", "op": "eq", "value": "social_rent"}},
        ]},
    }))
    .unwrap();
    assert_eq!(s.holder.kind, "primary-care");
    assert_eq!(s.matcher.kind, "housing");
    assert_eq!(
        s.value,
        HolderValue::Mean {
            column: "hba1c".into(),
            max: 150
        }
    );
    assert_eq!(s.width(), 2);
    assert_eq!(s.matcher_cells(), 2);
    assert!(
        matches!(&s.holder_filter, Some(civic_policies::Filter::Compare { column, .. }) if column == "diabetes")
    );
    assert!(
        matches!(&s.matcher_filter, Some(civic_policies::Filter::Compare { column, .. }) if column == "tenure")
    );
    let (l1, l2) = s.sensitivity();
    assert_eq!(l1, 151.0);
    assert!((l2 - (150.0f64 * 150.0 + 1.0).sqrt()).abs() < 1e-9);
    assert_eq!(s.match_count_l2_squared(), 1.0);
}

#[test]
fn linked_queries_that_cannot_be_split_are_refused_with_a_reason() {
    let reason = |q| match shape(q) {
        Err(PolicyError::Query { field, reason, .. }) => format!("{field}: {reason}"),
        other => panic!("expected a refusal, got {other:?}"),
    };
    let one_side = reason(
        json!({"dataset": "housing-health", "statistic": {"histogram": {"columns": ["tenure"]}}}),
    );
    assert!(
        one_side.contains("exactly two kinds") && one_side.contains("housing"),
        "{one_side}"
    );
    let three = reason(json!({
        "dataset": "housing-health",
        "statistic": {"histogram": {"columns": ["tenure", "diabetes", "care_package"]}},
    }));
    assert!(three.contains("uses 3"), "{three}");
    let mixed = reason(json!({
        "dataset": "housing-health",
        "statistic": "count",
        "filter": {"or": [
            {"compare": {"column": "diabetes", "op": "eq", "value": true}},
            {"compare": {"column": "tenure", "op": "eq", "value": "social_rent"}},
        ]},
    }));
    assert!(
        mixed.starts_with("filter.and[0]") && mixed.contains("mixes columns"),
        "{mixed}"
    );
    let quantiles = reason(json!({
        "dataset": "housing-health",
        "statistic": {"quantiles": {"column": "respiratory_admissions", "probabilities": [0.5]}},
        "group_by": ["tenure"],
    }));
    assert!(
        quantiles.contains("not yet available over linked"),
        "{quantiles}"
    );
}
