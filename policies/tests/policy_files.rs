//! The sample policies parse; every broken policy is refused with its own message.

use std::path::Path;

use civic_policies::{DatasetPolicy, Disclosed, DisclosureProfile, Rho};

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn samples() -> Vec<(String, DatasetPolicy)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/policies");
    let mut out: Vec<(String, DatasetPolicy)> = std::fs::read_dir(&dir)
        .expect("examples/policies exists")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .map(|p| {
            let name = p.file_name().expect("file").to_string_lossy().into_owned();
            let policy =
                DatasetPolicy::from_toml(&read(&p), &name).unwrap_or_else(|e| panic!("{e}"));
            (name, policy)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[test]
fn sample_policies_parse_with_the_values_they_state() {
    let samples = samples();
    let names: Vec<&str> = samples.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        vec!["diabetes.toml", "falls-housing.toml", "housing-health.toml"]
    );
    let (_, diabetes) = &samples[0];
    assert_eq!(diabetes.id(), "diabetes");
    assert_eq!(diabetes.partners().len(), 5);
    assert_eq!(diabetes.max_partners_per_person, 2);
    assert_eq!(diabetes.total, Rho::cap(0.5).unwrap());
    assert_eq!(diabetes.approvals_needed(Rho::cost(0.06).unwrap()), 2);
    assert_eq!(diabetes.approvals_needed(Rho::cost(0.04).unwrap()), 0);
    assert_eq!(diabetes.disclosure().apply(9), Disclosed::Redacted);
    assert!(
        diabetes
            .column("hba1c")
            .is_some_and(|c| c.kind.is_numeric() && c.kind.cells() == Some(5))
    );

    let (_, falls) = &samples[1];
    assert_eq!(falls.disclosure(), DisclosureProfile::Nhs);
    assert_eq!(falls.max_partners_per_person, 3);
    // (ε = 4, δ = 1e-7) as a ρ cap: (√(ln 1e7 + 4) − √(ln 1e7))² = 0.221450430030…
    assert!(
        (falls.total.as_f64() - 0.221_450_430_03).abs() < 2e-12,
        "{}",
        falls.total
    );
    // A pure ε = 0.5 per-query cap is ρ = 1/8, rounded down.
    assert_eq!(falls.per_query, Rho::cap_from_pure_epsilon(0.5).unwrap());
    assert!((falls.per_query.as_f64() - 0.125).abs() < 2e-12);
}

#[test]
fn json_and_toml_give_the_same_policy() {
    for (name, policy) in samples() {
        let json = serde_json::to_string(&policy.file).expect("serialises");
        let again = DatasetPolicy::from_json(&json, "request body")
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(again, policy, "{name}");
    }
}

#[test]
fn every_broken_policy_is_refused_with_its_own_message() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/broken");
    let mut messages = std::collections::BTreeSet::new();
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).expect("tests/broken exists") {
        let path = entry.expect("entry").path();
        let name = path
            .file_name()
            .expect("file")
            .to_string_lossy()
            .into_owned();
        let text = read(&path);
        let expect = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# expect: "))
            .unwrap_or_else(|| panic!("{name}: first line must be `# expect: <message>`"));
        let err = DatasetPolicy::from_toml(&text, &name).expect_err(&name);
        let message = err.to_string();
        assert!(
            message.starts_with(&format!("{name}: ")),
            "the error names the file: {message}"
        );
        assert!(
            message.contains(expect),
            "{name}: expected {expect:?} in {message:?}"
        );
        assert!(
            messages.insert(message.clone()),
            "{name}: message not distinct: {message}"
        );
        count += 1;
    }
    assert!(count >= 25, "only {count} broken policies");
}
