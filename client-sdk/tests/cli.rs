//! The `civic-agent` binary: keygen, and check on the sample configuration in
//! `examples/agent/` (offline, with the local policy copy).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn agent(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_civic-agent"))
        .args(args)
        .current_dir(dir)
        .env_remove("CIVIC_AGENT_TOKEN")
        .output()
        .expect("run civic-agent")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The sample configuration, copied with its data into a fresh directory (its policy path
/// points back at examples/policies).
fn sample() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let config = std::fs::read_to_string(examples.join("agent/partner.toml"))
        .unwrap()
        .replace(
            "\"../policies/diabetes.toml\"",
            &format!("{:?}", examples.join("policies/diabetes.toml")),
        );
    std::fs::write(dir.path().join("partner.toml"), config).unwrap();
    std::fs::copy(
        examples.join("agent/gp-north.csv"),
        dir.path().join("gp-north.csv"),
    )
    .unwrap();
    let path = dir.path().join("partner.toml");
    (dir, path)
}

#[test]
fn keygen_prints_the_public_key_and_never_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let first = agent(&["keygen", "--out", "id.key"], dir.path());
    assert!(first.status.success(), "{}", text(&first));
    let out = text(&first);
    let public = out.split_whitespace().last().unwrap();
    assert_eq!(public.len(), 64, "{out}");
    let again = agent(&["keygen", "--out", "id.key"], dir.path());
    assert!(!again.status.success());
    assert!(
        text(&again).contains("refusing to overwrite"),
        "{}",
        text(&again)
    );
}

#[test]
fn check_reports_counts_and_refusals_and_fails_on_problems() {
    let (dir, config) = sample();
    let config = config.to_str().unwrap();
    // Without an identity key, check names the problem and exits non-zero.
    let o = agent(&["check", "--config", config, "--offline"], dir.path());
    assert!(!o.status.success());
    assert!(text(&o).contains("identity.key"), "{}", text(&o));

    assert!(
        agent(&["keygen", "--out", "identity.key"], dir.path())
            .status
            .success()
    );
    let o = agent(&["check", "--config", config, "--offline"], dir.path());
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    for expected in [
        "rows found: 10",
        // p0008's "X" is outside the domain; p0007's age 101 and HbA1c 160.2 above the bounds.
        "sex ← gender: category of 2; 9 values, 0 missing, 1 outside the domain",
        "age ← age_years: integer in [18, 100]; 10 values, 0 missing, 0 below and 1 above",
        "hba1c ← latest_hba1c: decimal in [20, 150] by 0.1; 7 values, 3 missing, 0 below and 1 above",
        "residents (patient_pseudonym): 9; 1 with more than 1 row(s)",
        "refuses statistics: sum",
        "ready: no problems found",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
    }
    // Values are counted, never printed.
    assert!(!out.contains("160.2") && !out.contains("p0007"), "{out}");

    // A mapping written for other codes drops the whole column: check fails, naming it.
    let original = std::fs::read_to_string(config).unwrap();
    let other_codes = original.replace(
        "F = \"female\", M = \"male\"",
        "Female = \"female\", Male = \"male\"",
    );
    assert_ne!(other_codes, original);
    std::fs::write(config, other_codes).unwrap();
    let o = agent(&["check", "--config", config, "--offline"], dir.path());
    std::fs::write(config, &original).unwrap();
    let out = text(&o);
    assert!(!o.status.success(), "{out}");
    assert!(
        out.contains("columns.sex: 10 of 10 rows (100%) of gender fall outside the domain")
            && !out.contains("ready: no problems found"),
        "{out}"
    );

    // A malformed row: named by row and column, non-zero exit.
    let csv = dir.path().join("gp-north.csv");
    let mut data = std::fs::read_to_string(&csv).unwrap();
    data.push_str("p0010,seventy,F,3,Y,50.0,N\n");
    std::fs::write(&csv, data).unwrap();
    let o = agent(&["check", "--config", config, "--offline"], dir.path());
    assert!(!o.status.success());
    assert!(
        text(&o).contains("gp-north.csv, row 11, column age_years (federated age)"),
        "{}",
        text(&o)
    );
}

#[test]
fn a_bad_configuration_is_named_by_field() {
    let (dir, config) = sample();
    let original = std::fs::read_to_string(&config).unwrap();
    for (from, to, expected) in [
        (
            "total_rho = 1.0",
            "total_rho = -1.0",
            "limits.total_rho: must be a positive number",
        ),
        (
            "min_survivors = 3",
            "min_survivors = 1",
            "limits.min_survivors",
        ),
        (
            "\"linear_regression\"]",
            "\"median\"]",
            "unknown statistic \"median\"",
        ),
        (
            "kind = \"csv\"",
            "kind = \"excel\"",
            "unknown variant `excel`",
        ),
        ("url = \"http://", "url = \"ftp://", "coordinator.url"),
    ] {
        std::fs::write(&config, original.replace(from, to)).unwrap();
        let o = agent(
            &["check", "--config", config.to_str().unwrap(), "--offline"],
            dir.path(),
        );
        assert!(!o.status.success(), "{to}");
        assert!(text(&o).contains(expected), "{to}: {}", text(&o));
    }
}
