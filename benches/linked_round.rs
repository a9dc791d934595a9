//! A linked round end to end over loopback: a coordinator on an embedded SQLite store and
//! two partner agents (a housing association and a trust) reading CSV extracts with NHS
//! numbers, from submission to release: the relayed pairwise join (session keys, offers,
//! returns, sums, every message stored by the coordinator before it is taken), then the
//! secure sum with distributed noise. Beside it, the same join done in plaintext (a hash
//! join of the two extracts' rows) in the same run, and the ratio.
//!
//! `cargo bench --bench linked_round` runs 10^4 × 10^6 and 10^5 × 10^5 (about 4 minutes);
//! `cargo test --bench linked_round` one small round as a check. The table the round
//! unmasked (read through the coordinator's test hook, before the release's rounding) must
//! be within the noise's reach of the plaintext join's, or the bench stops.

#[path = "../server/tests/common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use civic_client_sdk::agent::{Agent, RoundOutcome};
use civic_client_sdk::config::AgentConfig;
use civic_client_sdk::synth::nhs_number;
use reqwest::StatusCode;
use serde_json::json;

struct Case {
    holder: u32,
    matcher: u32,
}

/// Residents 0..holder are the housing association's tenants; the trust holds every other
/// one of 0..2·matcher, so half the tenants are its patients (for matcher ≥ holder).
fn extracts(dir: &Path, case: &Case) -> (Vec<i64>, f64) {
    let damp = |i: u32| i.is_multiple_of(3);
    let admissions = |i: u32| i64::from(i % 7).min(5);
    let mut housing = String::from("tenant_nhs_number,damp_mould\n");
    for i in 0..case.holder {
        let flag = if damp(i) { "Y" } else { "N" };
        housing.push_str(&format!("{},{flag}\n", nhs_number(i)));
    }
    let mut trust = String::from("nhs_number,respiratory_admissions\n");
    for k in 0..case.matcher {
        trust.push_str(&format!("{},{}\n", nhs_number(2 * k), admissions(2 * k)));
    }
    std::fs::create_dir_all(dir.join("housing-north")).unwrap();
    std::fs::create_dir_all(dir.join("acute-trust")).unwrap();
    std::fs::write(dir.join("housing-north/extract.csv"), &housing).unwrap();
    std::fs::write(dir.join("acute-trust/extract.csv"), &trust).unwrap();
    // The plaintext join, timed: the trust's rows in a hash map by NHS number, the tenants'
    // scanned against it, counted per (damp, respiratory bin).
    let started = Instant::now();
    let by_number: HashMap<&str, i64> = trust
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(','))
        .map(|(n, a)| (n, a.parse().unwrap()))
        .collect();
    let mut table = vec![0i64; 6];
    for line in housing.lines().skip(1) {
        let (number, flag) = line.split_once(',').unwrap();
        if let Some(a) = by_number.get(number.replace(' ', "").as_str()) {
            table[usize::from(flag == "Y") * 3 + (*a).min(2) as usize] += 1;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    println!("  plaintext hash join of the same rows: {seconds:.3} s");
    (table, seconds)
}

/// The sample policy with one housing association, the trust, and capacities for `case`.
fn policy(case: &Case) -> String {
    include_str!("../examples/policies/housing-health.toml")
        .replace(
            "partners = [\"housing-north\", \"housing-south\"]\ncolumns",
            "partners = [\"housing-north\"]\ncolumns",
        )
        .replace(
            "\"housing-north\", \"housing-south\",\n",
            "\"housing-north\",\n",
        )
        .replace("capacity = 60000", &format!("capacity = {}", case.holder))
        .replace(
            "capacity = 1500000",
            &format!("capacity = {}", case.matcher),
        )
}

fn agent_config(dir: &Path, base: &str, token: &str, housing: bool) -> String {
    std::fs::write(dir.join("token"), token).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let private = std::fs::Permissions::from_mode(0o600);
        std::fs::set_permissions(dir.join("token"), private).unwrap();
    }
    let mapping = if housing {
        "side = \"housing\"\nresident_column = \"tenant_nhs_number\"\n\n[datasets.source]\nkind = \"csv\"\npath = \"extract.csv\"\n\n[datasets.columns]\ndamp_mould_reported = { column = \"damp_mould\", values = { Y = \"true\", N = \"false\" } }\n"
    } else {
        "side = \"admissions\"\nresident_column = \"nhs_number\"\n\n[datasets.source]\nkind = \"csv\"\npath = \"extract.csv\"\n\n[datasets.columns]\nrespiratory_admissions = \"respiratory_admissions\"\n"
    };
    format!(
        "identity_key = \"identity.key\"\nstate_dir = \"state\"\n\n{}\n[coordinator]\nurl = \"{base}\"\ntoken_file = \"token\"\npoll_seconds = 0.2\n\n[limits]\nmax_rho_per_query = 1.0\ntotal_rho = 10.0\nmin_survivors = 2\n\n[[datasets]]\nid = \"housing-health\"\n{mapping}",
        common::board_toml()
    )
}

/// Runs one linked round of `case` from submission to release; returns the wall time.
async fn run(case: &Case) -> f64 {
    println!(
        "{} tenants × {} patients (capacities the same):",
        case.holder, case.matcher
    );
    let root = tempfile::tempdir().unwrap();
    let (truth, plaintext) = extracts(root.path(), case);
    let store = format!("sqlite://{}", root.path().join("civic.db").display());
    let mut c = common::start_on_own_system(civic_server::Config {
        store_url: store,
        tick_millis: 20,
        max_rows_per_partner: 10_000_000,
        // A holder's offers at 10^5 are about 81 MB (811 B a resident): above the default
        // 64 MiB, which a submission would be refused over (`round.too_large`).
        binary_limit: 256 << 20,
        ..civic_server::Config::default()
    });
    let linked = policy(case);
    for name in ["housing-north", "acute-trust"] {
        c.add_partner(name).await;
    }
    c.add_dataset_for_falls("housing-health", &linked, 1.0)
        .await;
    let mut listed = Vec::new();
    let mut agents = Vec::new();
    for (name, housing) in [("housing-north", true), ("acute-trust", false)] {
        let dir = root.path().join(name);
        let token = &c.partners.iter().find(|p| p.0 == name).unwrap().2;
        std::fs::write(
            dir.join("partner.toml"),
            agent_config(&dir, &c.base, token, housing),
        )
        .unwrap();
        let key = civic_client_sdk::identity::generate(&dir.join("identity.key")).unwrap();
        listed.push((name.to_string(), key));
    }
    let manifest = common::city_manifest(&listed, &c.city_toml());
    let manifest = common::with_dataset(manifest, "housing-health", &linked);
    let (s, v) = c.publish(&common::signed(manifest, &[201, 203])).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    for (name, _) in &listed {
        let config = AgentConfig::load(&root.path().join(name).join("partner.toml")).unwrap();
        let agent = Arc::new(Agent::new(config).unwrap());
        agent.register().await.unwrap();
        agents.push(agent);
    }

    let started = Instant::now();
    let (s, q) = c
        .submit(json!({
            "project": "falls",
            "query": {
                "dataset": "housing-health",
                "statistic": {"histogram": {"columns": ["damp_mould_reported", "respiratory_admissions"]}},
            },
            "privacy": { "rho": 0.08 },
        }))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{q}");
    let id = q["id"].as_i64().unwrap();
    let tasks: Vec<_> = agents
        .iter()
        .map(|a| {
            let a = Arc::clone(a);
            tokio::spawn(async move { a.once().await.unwrap() })
        })
        .collect();
    for t in tasks {
        let outcome = t.await.unwrap();
        assert!(
            outcome.iter().all(|(_, o)| *o == RoundOutcome::Finished),
            "{outcome:?}"
        );
    }
    let done = c.wait_done(id).await;
    let seconds = started.elapsed().as_secs_f64();
    assert_eq!(done["state"], "released", "{done}");
    // Distributed noise at ρ = 0.08 (below the policy's approval threshold), sensitivity 1:
    // σ = 2.5 in all; 10σ is never reached.
    let noisy = c.state.rounds.unmasked_sum(id).unwrap();
    for (n, t) in noisy.iter().zip(&truth) {
        assert!(
            (n - t).abs() <= 25,
            "the round's table {noisy:?}, the join's {truth:?}"
        );
    }
    println!(
        "  linked round, submission to release over loopback: {seconds:.1} s ({:.0}× the plaintext join)",
        seconds / plaintext.max(1e-6)
    );
    c.stop().await;
    seconds
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let cases = if full {
        vec![
            Case {
                holder: 10_000,
                matcher: 1_000_000,
            },
            Case {
                holder: 100_000,
                matcher: 100_000,
            },
        ]
    } else {
        vec![Case {
            holder: 200,
            matcher: 300,
        }]
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    for case in &cases {
        runtime.block_on(run(case));
    }
}
