//! Queries validated against the sample policies: what is accepted, and what is refused with
//! the field named.

use civic_policies::samples;
use civic_policies::{DatasetPolicy, PolicyError, Query};

fn query(json: &str) -> Query {
    serde_json::from_str(json).unwrap_or_else(|e| panic!("{json}: {e}"))
}

fn refused(policy: &DatasetPolicy, json: &str) -> String {
    let err: PolicyError = query(json).validate(policy).expect_err(json);
    assert_eq!(err.code(), "policy.query");
    err.to_string()
}

#[test]
fn the_demo_questions_are_accepted() {
    let falls = samples::falls_housing();
    let diabetes = samples::diabetes();
    let q = query(
        r#"{"dataset":"falls-housing","statistic":{"sum":{"column":"falls_admissions"}},
            "filter":{"compare":{"column":"age","op":"ge","value":65}},"group_by":["property_type"]}"#,
    )
    .validate(&falls)
    .expect("falls by property type");
    assert_eq!(q.cells(), 5);
    let q = query(
        r#"{"dataset":"diabetes","statistic":{"histogram":{"columns":["has_diabetes"]}},"group_by":["deprivation_decile"]}"#,
    )
    .validate(&diabetes)
    .expect("prevalence by decile");
    assert_eq!(q.cells(), 20, "diabetes yes/no by ten deciles");
    query(
        r#"{"dataset":"diabetes","statistic":{"mean":{"column":"hba1c"}},
            "filter":{"and":[{"compare":{"column":"has_diabetes","op":"eq","value":true}},
                             {"not":{"compare":{"column":"hba1c","op":"lt","value":20.5}}}]},
            "group_by":["age"]}"#,
    )
    .validate(&diabetes)
    .expect("mean HbA1c by age band");
    query(
        r#"{"dataset":"falls-housing","statistic":{"histogram":{"columns":["damp_mould_reports","respiratory_admissions"]}}}"#,
    )
    .validate(&falls)
    .expect_err("integer columns without bins cannot index cells");
    query(
        r#"{"dataset":"falls-housing","statistic":{"linear_regression":{"features":["age","home_adaptations"],"target":"falls_admissions"}},
            "filter":{"compare":{"column":"lives_alone","op":"eq","value":true}}}"#,
    )
    .validate(&falls)
    .expect("falls on age and adaptations");
    query(r#"{"dataset":"diabetes","statistic":{"quantiles":{"column":"hba1c","probabilities":[0.25,0.5,0.75]}}}"#)
        .validate(&diabetes)
        .expect("HbA1c quartiles");
}

#[test]
fn bad_queries_are_refused_with_the_field_and_what_was_expected() {
    let falls = samples::falls_housing();
    let diabetes = samples::diabetes();
    let cases = [
        (
            &falls,
            r#"{"dataset":"diabetes","statistic":"count"}"#,
            "dataset: this policy is for dataset \"falls-housing\"",
        ),
        (
            &falls,
            r#"{"dataset":"falls-housing","statistic":{"sum":{"column":"postcode"}}}"#,
            "no column \"postcode\"; the schema has age, sex",
        ),
        (
            &falls,
            r#"{"dataset":"falls-housing","statistic":{"mean":{"column":"sex"}}}"#,
            "column \"sex\" is not numeric",
        ),
        (
            &falls,
            r#"{"dataset":"falls-housing","statistic":"count","group_by":["falls_admissions"]}"#,
            "group_by[0]: column \"falls_admissions\" has no declared bins or domain",
        ),
        (
            &falls,
            r#"{"dataset":"falls-housing","statistic":"count","filter":{"compare":{"column":"age","op":"gt","value":"old"}}}"#,
            "filter.compare.value: column \"age\" takes a whole number, got \"old\"",
        ),
        (
            &falls,
            r#"{"dataset":"falls-housing","statistic":"count","filter":{"compare":{"column":"tenure","op":"eq","value":"council"}}}"#,
            "\"council\" is not in the domain of \"tenure\": owner, social_rent",
        ),
        (
            &falls,
            r#"{"dataset":"falls-housing","statistic":"count","filter":{"compare":{"column":"tenure","op":"lt","value":"owner"}}}"#,
            "filter.compare.op: category column \"tenure\" only takes eq and ne",
        ),
        (
            &falls,
            r#"{"dataset":"falls-housing","statistic":"count","filter":{"and":[]}}"#,
            "filter.and: needs at least one term",
        ),
        (
            &falls,
            r#"{"dataset":"falls-housing","statistic":"count","filter":{"or":[{"compare":{"column":"lives_alone","op":"eq","value":1}}]}}"#,
            "filter.or[0].compare.value: column \"lives_alone\" takes true or false, got 1",
        ),
        (
            &diabetes,
            r#"{"dataset":"diabetes","statistic":{"quantiles":{"column":"hba1c","probabilities":[0.5,1.0]}}}"#,
            "1 is not strictly between 0 and 1",
        ),
        (
            &falls,
            r#"{"dataset":"falls-housing","statistic":{"quantiles":{"column":"falls_admissions","probabilities":[0.5]}}}"#,
            "declares no bins to take quantiles over",
        ),
        (
            &falls,
            r#"{"dataset":"falls-housing","statistic":{"histogram":{"columns":[]}}}"#,
            "statistic.columns: name at least one column",
        ),
        (
            &falls,
            r#"{"dataset":"falls-housing","statistic":{"linear_regression":{"features":["sex"],"target":"falls_admissions"}}}"#,
            "statistic.features[0]: column \"sex\" is not numeric",
        ),
        (
            &falls,
            r#"{"dataset":"falls-housing","statistic":{"linear_regression":{"features":["age"],"target":"falls_admissions"}},"group_by":["sex"]}"#,
            "group_by: a regression is fitted over all rows",
        ),
        (
            &falls,
            r#"{"dataset":"falls-housing","statistic":{"histogram":{"columns":["sex"]}},"group_by":["tenure","sex"]}"#,
            "group_by[1]: column \"sex\" is named twice",
        ),
        (
            &diabetes,
            r#"{"dataset":"diabetes","statistic":"count","filter":{"compare":{"column":"age","op":"ge","value":65.0}}}"#,
            "takes a whole number, got 65.0",
        ),
    ];
    let mut seen = std::collections::BTreeSet::new();
    for (policy, json, expected) in cases {
        let message = refused(policy, json);
        assert!(
            message.contains(expected),
            "{json}\n  expected {expected:?}\n  got {message:?}"
        );
        assert!(seen.insert(message), "messages are distinct");
    }
}

#[test]
fn deep_or_wide_filters_are_refused_not_evaluated_exactly_at_the_stated_limits() {
    let falls = samples::falls_housing();
    let leaf = r#"{"compare":{"column":"age","op":"ge","value":65}}"#;
    let count_where = |filter: &str| {
        format!(r#"{{"dataset":"falls-housing","statistic":"count","filter":{filter}}}"#)
    };
    let nested = |operators: usize| {
        (0..operators).fold(leaf.to_string(), |inner, _| format!(r#"{{"not":{inner}}}"#))
    };
    // "may nest 16 operators": 16 are accepted, 17 refused.
    query(&count_where(&nested(16)))
        .validate(&falls)
        .expect("16 nested operators are within the limit");
    let message = refused(&falls, &count_where(&nested(17)));
    assert!(message.contains("nest 16 operators"), "{message}");
    // "256 comparisons at most": 256 are accepted, 257 refused.
    let and_of = |n: usize| format!(r#"{{"and":[{}]}}"#, vec![leaf; n].join(","));
    query(&count_where(&and_of(256)))
        .validate(&falls)
        .expect("256 comparisons are within the limit");
    let message = refused(&falls, &count_where(&and_of(257)));
    assert!(message.contains("256 comparisons at most"), "{message}");
}

#[test]
fn unknown_fields_and_statistics_do_not_parse() {
    for json in [
        r#"{"dataset":"d","statistic":"count","sql":"select 1"}"#,
        r#"{"dataset":"d","statistic":{"median":{"column":"age"}}}"#,
        r#"{"dataset":"d","statistic":"count","filter":{"raw":"age > 3"}}"#,
    ] {
        assert!(serde_json::from_str::<Query>(json).is_err(), "{json}");
    }
}

#[test]
fn cells_are_labelled_group_major_with_the_last_key_varying_fastest() {
    let diabetes = samples::diabetes();
    let q = query(
        r#"{"dataset":"diabetes","statistic":{"histogram":{"columns":["copd","age"]}},"group_by":["sex"]}"#,
    )
    .validate(&diabetes)
    .unwrap();
    let labels = q.cell_labels(&diabetes);
    assert_eq!(labels.keys, ["sex", "copd", "age"]);
    assert_eq!(labels.cells.len(), q.cells());
    let cell = |i: usize| labels.cells[i].join(" | ");
    assert_eq!(cell(0), "female | false | [18, 40)");
    assert_eq!(cell(3), "female | false | [80, 100]");
    assert_eq!(cell(4), "female | true | [18, 40)");
    assert_eq!(cell(8), "male | false | [18, 40)");
    assert_eq!(cell(15), "male | true | [80, 100]");

    // Decimal bins; a quantile folds its column's bins into one value per group.
    let q = query(
        r#"{"dataset":"diabetes","statistic":{"quantiles":{"column":"hba1c","probabilities":[0.5]}},"group_by":["has_diabetes"]}"#,
    )
    .validate(&diabetes)
    .unwrap();
    let labels = q.cell_labels(&diabetes);
    assert_eq!(labels.keys, ["has_diabetes"]);
    assert_eq!(labels.cells, [["false"], ["true"]]);
    let hba1c = diabetes
        .column("hba1c")
        .unwrap()
        .kind
        .cell_labels()
        .unwrap();
    assert_eq!(hba1c.first().unwrap(), "[20, 42)");
    assert_eq!(hba1c.last().unwrap(), "[75, 150]");

    // Ungrouped: one cell with no keys.
    let q = query(r#"{"dataset":"diabetes","statistic":{"mean":{"column":"hba1c"}}}"#)
        .validate(&diabetes)
        .unwrap();
    let labels = q.cell_labels(&diabetes);
    assert!(labels.keys.is_empty());
    assert_eq!(labels.cells, [Vec::<String>::new()]);
}

#[test]
fn malformed_literals_and_privacy_requests_say_what_is_expected() {
    let parse = |json: &str| serde_json::from_str::<Query>(json).unwrap_err().to_string();
    let e = parse(
        r#"{"dataset":"diabetes","statistic":"count","filter":{"compare":{"column":"age","op":"ge","value":null}}}"#,
    );
    assert!(
        e.contains("expected a filter value: true or false, a number"),
        "{e}"
    );
    let e = parse(
        r#"{"dataset":"diabetes","statistic":"count","filter":{"compare":{"column":"age","op":"ge","value":[1]}}}"#,
    );
    assert!(e.contains("expected a filter value"), "{e}");

    use civic_policies::PrivacyRequest;
    let request = |json: &str| serde_json::from_str::<PrivacyRequest>(json);
    assert_eq!(
        request(r#"{"rho": 0.1}"#).unwrap(),
        PrivacyRequest::Rho(0.1)
    );
    assert_eq!(
        request(r#"{"epsilon": 1}"#).unwrap(),
        PrivacyRequest::Epsilon(1.0)
    );
    assert!(
        request(r#"{"target_half_width": {"half_width": 5, "mechanism": "gaussian"}}"#).is_ok()
    );
    let e = request(r#"{"epsilon": 1, "delta": 1e-6}"#)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("(ε, δ) is a form for budget caps") && e.contains("{\"rho\": …}"),
        "{e}"
    );
    let e = request(r#"{"epsilon": 1, "rho": 0.1}"#)
        .unwrap_err()
        .to_string();
    assert!(e.contains("exactly one"), "{e}");
    let e = request(r#"{"epsilom": 1}"#).unwrap_err().to_string();
    assert!(e.contains("unknown field `epsilom`"), "{e}");
}

#[test]
fn a_training_job_names_its_inputs_outcome_and_iterations_or_is_refused_by_field() {
    let diabetes = samples::diabetes();
    // A whole number written as 5.0 is 5 (JSON Schema's integers include it).
    let q = query(
        r#"{"dataset":"diabetes","statistic":{"logistic_regression":
            {"features":["age","hba1c","sex","deprivation_decile"],"outcome":"has_diabetes","iterations":5.0}}}"#,
    );
    q.validate(&diabetes).expect("a binary model");
    // Ten outcome classes: 6 coefficients (intercept and 5 inputs) for each of 9 classes.
    query(
        r#"{"dataset":"diabetes","statistic":{"logistic_regression":
            {"features":["age","hba1c","sex","has_diabetes","copd"],"outcome":"deprivation_decile","iterations":3}}}"#,
    )
    .validate(&diabetes)
    .expect("a multinomial model of 54 coefficients");
    for (json, says) in [
        (
            r#"{"dataset":"diabetes","statistic":{"logistic_regression":{"features":["age"],"outcome":"hba1c","iterations":5}}}"#,
            "statistic.outcome: column \"hba1c\" is not a boolean or category column",
        ),
        (
            r#"{"dataset":"diabetes","statistic":{"logistic_regression":{"features":["age","age"],"outcome":"copd","iterations":5}}}"#,
            "statistic.features[1]: column \"age\" is named twice",
        ),
        (
            r#"{"dataset":"diabetes","statistic":{"logistic_regression":{"features":["copd"],"outcome":"copd","iterations":5}}}"#,
            "statistic.features[0]: column \"copd\" is named twice",
        ),
        (
            r#"{"dataset":"diabetes","statistic":{"logistic_regression":{"features":["age"],"outcome":"copd","iterations":0}}}"#,
            "statistic.iterations: give 1 to 20 iterations, got 0",
        ),
        (
            r#"{"dataset":"diabetes","statistic":{"logistic_regression":{"features":["deprivation_decile","age"],"outcome":"deprivation_decile","iterations":3}}}"#,
            "statistic.features[0]: column \"deprivation_decile\" is named twice",
        ),
        (
            r#"{"dataset":"diabetes","statistic":{"logistic_regression":{"features":["age"],"outcome":"copd","iterations":3}},"group_by":["sex"]}"#,
            "group_by: a regression is fitted over all rows",
        ),
    ] {
        let e = refused(&diabetes, json);
        assert!(e.contains(says), "{json}: {e}");
    }
    // A fraction or a negative is no number of iterations.
    for iterations in ["2.5", "-1"] {
        let json = format!(
            r#"{{"dataset":"diabetes","statistic":{{"logistic_regression":{{"features":["age"],"outcome":"copd","iterations":{iterations}}}}}}}"#
        );
        assert!(serde_json::from_str::<Query>(&json).is_err(), "{json}");
    }
}
