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
        out.contains("columns.sex: 10 of 10 rows (100%) of gender would be dropped")
            && !out.contains("ready: no problems found"),
        "{out}"
    );

    // Unreadable values and a malformed record: one pass finds them all, by file line
    // (the header is line 1), and names the way out.
    let csv = dir.path().join("gp-north.csv");
    let clean = std::fs::read_to_string(&csv).unwrap();
    assert_eq!(clean.lines().count(), 11, "the sample's header and 10 rows");
    let mut data = clean.clone();
    data.push_str("p0010,seventy,F,3,Y,50.0,N\n");
    data.push_str("p0011,,M,3,Y,5O.1,N\n");
    data.push_str("p0012,40,F,3,Y\n");
    data.push_str("p0013,unknown,F,3,Y,44.0,N\n");
    std::fs::write(&csv, data).unwrap();
    let o = agent(&["check", "--config", config, "--offline"], dir.path());
    let out = text(&o);
    assert!(!o.status.success(), "{out}");
    for expected in [
        "rows found: 13",
        "age ← age_years: integer in [18, 100]; 10 values, 1 missing, 2 unreadable, refused (lines 12, 15)",
        "columns.age: 2 value(s) of age_years cannot be read as integer in [18, 100] (lines 12, 15)",
        "invalid = \"missing\"",
        "hba1c ← latest_hba1c: decimal in [20, 150] by 0.1; 9 values, 3 missing, 1 unreadable, refused (line 13)",
        "1 malformed record(s), skipped here but fatal to a round (line 14: malformed CSV: 5 fields where the header has 7)",
        "3 problem(s) found",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
    }
    assert!(!out.contains("seventy") && !out.contains("5O.1"), "{out}");

    // `once` (and `run`) refuse to start over the same problems, naming `check`; the data is
    // checked before the coordinator is contacted (none runs here).
    let once = |dir: &Path| {
        Command::new(env!("CARGO_BIN_EXE_civic-agent"))
            .args(["once", "--config", config])
            .current_dir(dir)
            .env("CIVIC_AGENT_TOKEN", "t")
            .output()
            .unwrap()
    };
    let o = once(dir.path());
    let out = text(&o);
    assert!(!o.status.success(), "{out}");
    assert!(
        out.contains("not starting")
            && out.contains("civic-agent check")
            && out.contains("columns.age"),
        "{out}"
    );

    // `invalid = "missing"` reads the unreadable ages as missing: that problem goes, the
    // others stay.
    let lenient = original.replace(
        "age = \"age_years\"",
        "age = { column = \"age_years\", invalid = \"missing\" }",
    );
    assert_ne!(lenient, original);
    std::fs::write(config, &lenient).unwrap();
    let o = agent(&["check", "--config", config, "--offline"], dir.path());
    let out = text(&o);
    assert!(
        out.contains("2 unreadable, read as missing (lines 12, 15)")
            && !out.contains("columns.age:")
            && out.contains("2 problem(s) found"),
        "{out}"
    );
    std::fs::write(config, &original).unwrap();
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
        // A key in the wrong table: the line, and where it belongs.
        (
            "path = \"gp-north.csv\"",
            "path = \"gp-north.csv\"\npushdown = true",
            "belongs in the [[datasets]] table",
        ),
        // A misspelt key of a column mapping is named.
        (
            "sex = { column = \"gender\", values",
            "sex = { column = \"gender\", valeus",
            "unknown field `valeus`",
        ),
        (
            "age = \"age_years\"",
            "age = { column = \"age_years\", invalid = \"drop\" }",
            "unknown variant `drop`",
        ),
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

/// A housing association on the linked housing-health dataset: only its side's columns are
/// mapped, and the linkage identifier's health is reported as counts and line numbers, never
/// an identifier.
#[test]
fn check_reports_a_linked_partners_identifier_health_without_printing_one() {
    let dir = tempfile::tempdir().unwrap();
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let sample = std::fs::read_to_string(examples.join("agent/partner.toml")).unwrap();
    let head = sample.split("[[datasets]]").next().unwrap();
    let config = format!(
        "{head}[[datasets]]\nid = \"housing-health\"\npolicy = {:?}\nresident_column = \"nhs_no\"\nside = \"housing\"\n\n\
         [datasets.source]\nkind = \"csv\"\npath = \"tenancies.csv\"\n\n\
         [datasets.columns]\nproperty_type = \"prop\"\ntenure = \"tenure\"\n\
         damp_mould_reported = {{ column = \"damp\", values = {{ Y = \"true\", N = \"false\" }} }}\nadaptations = \"adapt\"\n",
        examples.join("policies/housing-health.toml")
    );
    let config_path = dir.path().join("housing.toml");
    std::fs::write(&config_path, &config).unwrap();
    assert!(
        agent(&["keygen", "--out", "identity.key"], dir.path())
            .status
            .success()
    );

    // Valid NHS numbers: nine digits and their modulus-11 check digit.
    let valid: Vec<String> = (0..40u32)
        .map(|i| format!("{:09}", 401_023_000 + i * 37))
        .filter_map(|nine| {
            civic_policies::linkage::nhs_check_digit(nine.as_bytes()).map(|d| format!("{nine}{d}"))
        })
        .take(3)
        .collect();
    let mut wrong_digit = valid[2].clone().into_bytes();
    wrong_digit[9] = b'0' + (wrong_digit[9] - b'0' + 1) % 10;
    let wrong_digit = String::from_utf8(wrong_digit).unwrap();
    let rows = [
        valid[0].as_str(),
        valid[1].as_str(),
        "",
        "12345",
        wrong_digit.as_str(),
        valid[0].as_str(),
    ];
    let mut csv = String::from("nhs_no,prop,tenure,damp,adapt\n");
    for id in rows {
        csv.push_str(&format!("{id},flat,social_rent,Y,1\n"));
    }
    std::fs::write(dir.path().join("tenancies.csv"), &csv).unwrap();

    let run = || {
        agent(
            &[
                "check",
                "--config",
                config_path.to_str().unwrap(),
                "--offline",
            ],
            dir.path(),
        )
    };
    let o = run();
    let out = text(&o);
    assert!(!o.status.success(), "{out}");
    for expected in [
        "linked dataset: this partner is on the housing side (60000 residents at most",
        "linkage identifier (nhs_no, an NHS number): 2 residents; 1 missing, 1 malformed, 1 with a wrong check digit; 1 rows repeat an identifier",
        "nhs_no: 3 row(s) have no usable linkage identifier (lines 4, 5, 6)",
        "nhs_no: 1 row(s) repeat an identifier already seen (line 7)",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
    }
    assert!(
        !out.contains("federated column age_band"),
        "other sides' columns are not asked for:\n{out}"
    );
    for id in valid.iter().chain([&wrong_digit]) {
        assert!(
            !out.contains(id.as_str()),
            "an identifier was printed:\n{out}"
        );
    }

    // Clean identifiers: ready.
    let clean: String = std::iter::once("nhs_no,prop,tenure,damp,adapt\n".to_string())
        .chain(valid.iter().map(|id| format!("{id},house,other,N,0\n")))
        .collect();
    std::fs::write(dir.path().join("tenancies.csv"), clean).unwrap();
    let o = run();
    assert!(o.status.success(), "{}", text(&o));

    // A column of another side, or no side at all, is named.
    std::fs::write(
        &config_path,
        config.replace(
            "adaptations = \"adapt\"",
            "adaptations = \"adapt\"\nhba1c = \"adapt\"",
        ),
    )
    .unwrap();
    let out = text(&run());
    assert!(
        out.contains("columns.hba1c: held by the primary-care side, not housing"),
        "{out}"
    );
    std::fs::write(&config_path, config.replace("side = \"housing\"\n", "")).unwrap();
    let out = text(&run());
    assert!(
        out.contains("dataset housing-health is linked: set side = one of housing, admissions"),
        "{out}"
    );
}

#[test]
fn check_names_each_trainer_and_fails_on_one_whose_program_is_missing() {
    let (dir, config) = sample();
    assert!(
        agent(&["keygen", "--out", "identity.key"], dir.path())
            .status
            .success()
    );
    let original = std::fs::read_to_string(&config).unwrap();
    let with = |trainers: &str| format!("{original}\n{trainers}");
    let found = "[datasets.trainers.eye-photos]\ncommand = [\"sh\", \"-c\", \"exit 1\"]\n";
    std::fs::write(&config, with(found)).unwrap();
    let o = agent(
        &["check", "--config", config.to_str().unwrap(), "--offline"],
        dir.path(),
    );
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(
        out.contains("trainer eye-photos: sh -c exit 1 (program /") && out.contains("50 s"),
        "{out}"
    );
    // Only located, never run by check: its `exit 1` did not fail it.
    let missing = "[datasets.trainers.eye-photos]\ncommand = [\"./train-eyes.sh\"]\n";
    std::fs::write(&config, with(missing)).unwrap();
    let o = agent(
        &["check", "--config", config.to_str().unwrap(), "--offline"],
        dir.path(),
    );
    let out = text(&o);
    assert!(!o.status.success(), "{out}");
    assert!(
        out.contains("trainers.eye-photos: program \"./train-eyes.sh\" is not found"),
        "{out}"
    );
    // A trainer's name and command are checked when the configuration is read.
    for (bad, field) in [
        (
            "[datasets.trainers.Eye]\ncommand = [\"sh\"]\n",
            "trainers.Eye",
        ),
        (
            "[datasets.trainers.eye]\ncommand = []\n",
            "trainers.eye.command",
        ),
        (
            "[datasets.trainers.eye]\ncommand = [\"sh\"]\ntimeout_seconds = 0\n",
            "trainers.eye.timeout_seconds",
        ),
        ("[datasets.trainers.eye]\nprogram = \"sh\"\n", "program"),
    ] {
        std::fs::write(&config, with(bad)).unwrap();
        let o = agent(
            &["check", "--config", config.to_str().unwrap(), "--offline"],
            dir.path(),
        );
        let out = text(&o);
        assert!(!o.status.success() && out.contains(field), "{field}: {out}");
    }
}
