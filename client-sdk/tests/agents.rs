//! Four partner agents reading their own CSV files take part in real rounds with a real
//! coordinator on loopback, trusting the board's signed manifest (four, so that a round
//! survives one partner leaving: every round withstands one colluder, 2t > n + 1). The un-noised secure-aggregation sum is read through the
//! coordinator's test hook (feature `test-util`) and checked exactly against the truth
//! computed here straight from the rows.

#[path = "../../server/tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use civic_client_sdk::agent::{Agent, RoundOutcome};
use civic_client_sdk::config::AgentConfig;
use common::{Coordinator, fresh_store_url, test_config};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// One synthetic person in a partner's extract.
#[derive(Clone, Debug)]
struct Person {
    pid: u32,
    age: Option<i64>,
    fell: bool,
}

/// How each partner spells its columns: (header for pid, age, fell; true and false codes).
const SPELLINGS: [(&str, &str, &str, &str, &str); 4] = [
    ("pid", "patient_age", "fall_flag", "Y", "N"),
    ("person", "age", "fell", "true", "false"),
    ("ref", "AGE", "FALL", "1", "0"),
    ("nhs_pseudonym", "age_years", "fall", "yes", "no"),
];

fn people(site: usize, n: u32) -> Vec<Person> {
    let mut x: u64 = 0x9e37_79b9 ^ site as u64;
    let mut next = move || {
        x = x
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (x >> 33) as u32
    };
    (0..n)
        .map(|i| {
            // Every tenth row repeats an earlier resident: the agent keeps only the first.
            let pid = if i % 10 == 9 { next() % i.max(1) } else { i };
            let age = match next() % 20 {
                0 => None,
                1 => Some(130 + i64::from(next() % 10)), // above the public bound: clamped
                _ => Some(i64::from(next() % 100)),
            };
            Person {
                pid: pid + 100_000 * site as u32,
                age,
                fell: next() % 3 == 0,
            }
        })
        .collect()
}

fn write_csv(path: &Path, site: usize, rows: &[Person]) {
    let (pid, age, fell, yes, no) = SPELLINGS[site];
    let mut text = format!("{pid},{age},{fell},notes\n");
    for p in rows {
        let a = p.age.map(|a| a.to_string()).unwrap_or_default();
        let f = if p.fell { yes } else { no };
        text.push_str(&format!("{},{a},{f},\"free text, never read\"\n", p.pid));
    }
    std::fs::write(path, text).unwrap();
}

/// What the agent should aggregate: of the rows that count for a statistic, each
/// resident's first; (count of all rows, falls by age band).
fn truth(rows: &[Person]) -> (i64, [i64; 3]) {
    let first = |eligible: &dyn Fn(&Person) -> bool| -> Vec<&Person> {
        let mut seen = std::collections::HashSet::new();
        rows.iter()
            .filter(|p| eligible(p) && seen.insert(p.pid))
            .collect()
    };
    let count = first(&|_| true).len() as i64;
    let mut bands = [0i64; 3];
    for p in first(&|p| p.fell && p.age.is_some()) {
        let a = p.age.unwrap_or_default().clamp(0, 119);
        bands[if a < 65 {
            0
        } else if a < 80 {
            1
        } else {
            2
        }] += 1;
    }
    (count, bands)
}

struct Site {
    dir: PathBuf,
    rows: Vec<Person>,
    /// The identity public key, hex.
    key: String,
}

/// A secret file only its owner can read, as the agent requires of a token.
fn write_private(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
}

impl Site {
    fn create(root: &Path, site: usize, base: &str, token: &str, max_epsilon: f64) -> Site {
        let dir = root.join(format!("site-{site}"));
        std::fs::create_dir_all(&dir).unwrap();
        let rows = people(site, 300 + 50 * site as u32);
        write_csv(&dir.join("city.csv"), site, &rows);
        write_private(&dir.join("token"), token);
        let key = civic_client_sdk::identity::generate(&dir.join("identity.key")).unwrap();
        let (pid, age, fell, yes, no) = SPELLINGS[site];
        let board = common::board_toml();
        let config = format!(
            r#"
identity_key = "identity.key"
state_dir = "state"

{board}
[coordinator]
url = "{base}"
token_file = "token"
poll_seconds = 0.2

[limits]
max_epsilon_per_query = {max_epsilon}
max_rho_per_query = 100000.0
total_rho = 100000.0
min_survivors = 2

[[datasets]]
id = "city"
resident_column = "{pid}"

[datasets.source]
kind = "csv"
path = "city.csv"

[datasets.columns]
age = "{age}"
fell = {{ column = "{fell}", values = {{ "{yes}" = "true", "{no}" = "false" }} }}
"#
        );
        std::fs::write(dir.join("partner.toml"), config).unwrap();
        Site { dir, rows, key }
    }

    fn agent(&self) -> Arc<Agent> {
        let config = AgentConfig::load(&self.dir.join("partner.toml")).unwrap();
        Arc::new(Agent::new(config).unwrap())
    }

    fn journal(&self) -> Value {
        let text = std::fs::read_to_string(self.dir.join("state/agent-state.json"))
            .unwrap_or_else(|_| "{}".into());
        serde_json::from_str(&text).unwrap()
    }
}

async fn setup(
    c: &mut Coordinator,
    root: &Path,
    max_epsilon: [f64; 4],
) -> (Vec<Site>, Vec<Arc<Agent>>) {
    setup_with(c, root, max_epsilon, true).await
}

/// [`setup`], with the "city" policy's central noise (`central`) or without it: then the
/// partners add distributed noise shares, the default.
async fn setup_with(
    c: &mut Coordinator,
    root: &Path,
    max_epsilon: [f64; 4],
    central: bool,
) -> (Vec<Site>, Vec<Arc<Agent>>) {
    c.add_partner("clinic-d").await;
    let mut city = c.city_toml();
    if !central {
        city = city.replace("noise = \"central\"\n", "");
        let (s, body) = c
            .call(
                Method::PUT,
                "/v1/datasets/city",
                Some(&c.board[0]),
                Some(json!({ "policy": city })),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{body}");
    }
    let mut sites = Vec::new();
    let mut agents = Vec::new();
    let mut listed = Vec::new();
    for (i, (name, _, token)) in c.partners.iter().enumerate() {
        let site = Site::create(root, i, &c.base, token, max_epsilon[i]);
        listed.push((name.clone(), site.key.clone()));
        sites.push(site);
    }
    // The board signs the partners' keys into the federation's manifest.
    let (s, v) = c
        .publish(&common::signed(
            common::city_manifest(&listed, &city),
            &[201, 203],
        ))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    for site in &sites {
        let agent = site.agent();
        agent.register().await.unwrap();
        agents.push(agent);
    }
    (sites, agents)
}

fn histogram_of_falls(epsilon: f64) -> Value {
    json!({
        "project": "falls",
        "query": {
            "dataset": "city",
            "statistic": { "histogram": { "columns": ["age"] } },
            "filter": { "compare": { "column": "fell", "op": "eq", "value": true } }
        },
        "privacy": { "epsilon": epsilon }
    })
}

/// Submits a query; returns its id and its round's.
async fn submit(c: &Coordinator, body: Value) -> (i64, i64) {
    let (s, q) = c.submit(body).await;
    assert_eq!(s, StatusCode::CREATED, "{q}");
    (q["id"].as_i64().unwrap(), common::round_of(&q))
}

async fn all_once(agents: &[Arc<Agent>]) -> Vec<Vec<(i64, RoundOutcome)>> {
    let tasks: Vec<_> = agents
        .iter()
        .map(|a| {
            let a = Arc::clone(a);
            tokio::spawn(async move { a.once().await.unwrap() })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

fn released_values(done: &Value) -> Vec<f64> {
    done["result"]["rows"][0]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["value"].as_f64().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn four_csv_agents_release_a_count_and_a_histogram_whose_sum_is_exact() {
    let mut c = common::start_on_own_system(test_config(&fresh_store_url("agents-happy")));
    let root = tempfile::tempdir().unwrap();
    let (sites, agents) = setup(&mut c, root.path(), [100.0; 4]).await;
    let truths: Vec<(i64, [i64; 3])> = sites.iter().map(|s| truth(&s.rows)).collect();

    let (id, round) = submit(&c, common::count_query(60.0)).await;
    let outcomes = all_once(&agents).await;
    for o in &outcomes {
        assert_eq!(o, &vec![(round, RoundOutcome::Finished)]);
    }
    let done = c.wait_done(id).await;
    assert_eq!(done["state"], "released", "{done}");
    let exact: i64 = truths.iter().map(|t| t.0).sum();
    assert_eq!(c.state.rounds.unmasked_sum(id), Some(vec![exact]));
    // ε = 60 at sensitivity 1: the noise is 0 except with probability ~1e-26.
    assert_eq!(released_values(&done), vec![exact as f64]);

    let (hid, hround) = submit(&c, histogram_of_falls(60.0)).await;
    let outcomes = all_once(&agents).await;
    assert!(
        outcomes
            .iter()
            .all(|o| o == &vec![(hround, RoundOutcome::Finished)]),
        "{outcomes:?}"
    );
    let done = c.wait_done(hid).await;
    assert_eq!(done["state"], "released", "{done}");
    let bands: Vec<i64> = (0..3)
        .map(|b| truths.iter().map(|t| t.1[b]).sum())
        .collect();
    assert!(
        bands.iter().all(|b| *b > 0),
        "the data exercise every band: {bands:?}"
    );
    assert_eq!(c.state.rounds.unmasked_sum(hid), Some(bands));
    // Each cell says which band it is.
    assert_eq!(done["result"]["keys"], json!(["age"]), "{done}");
    assert_eq!(
        done["result"]["cell_keys"],
        json!([["[0, 65)"], ["[65, 80)"], ["[80, 119]"]]),
        "{done}"
    );

    // Each agent charged its own ledger and kept a journal with the shares it revealed.
    for site in &sites {
        let j = site.journal();
        assert_eq!(j["rounds"][id.to_string()]["status"], "finished", "{j}");
        assert!(j["rounds"][hid.to_string()]["reveals"].is_object(), "{j}");
        assert!(j["spent"]["city"].as_u64().unwrap() > 0, "{j}");
        // The manifest it verified, and the questions it answered (never answered twice).
        assert_eq!(j["manifest"][0], 1, "{j}");
        assert_eq!(j["answered"].as_array().unwrap().len(), 2, "{j}");
    }
    // Nothing more to do: a second pass finds no open rounds.
    assert!(all_once(&agents).await.iter().all(Vec::is_empty));

    // Each agent recorded the audit log's head as it went: an export checks against them,
    // and the same log rewritten and rehashed from one entry on does not.
    let (s, export) = c
        .call(
            Method::GET,
            "/v1/audit?limit=10000",
            Some(&c.board[0]),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let path = root.path().join("audit.json");
    std::fs::write(&path, export.to_string()).unwrap();
    let config = AgentConfig::load(&sites[0].dir.join("partner.toml")).unwrap();
    let summary = civic_client_sdk::audit::check_export(&config, &path).unwrap();
    assert!(summary.contains("match the"), "{summary}");
    let heads = sites[0].journal()["audit_heads"].as_array().unwrap().len();
    assert!(heads >= 2, "heads recorded: {heads}");
    let page: civic_api::governance::AuditPage = serde_json::from_value(export).unwrap();
    let forged = rewrite_from(&page.records, 3);
    std::fs::write(
        &path,
        serde_json::to_string(&civic_api::governance::AuditPage {
            records: forged,
            head: page.head,
        })
        .unwrap(),
    )
    .unwrap();
    let e = civic_client_sdk::audit::check_export(&config, &path)
        .unwrap_err()
        .to_string();
    assert!(e.contains("rewritten"), "{e}");
    c.stop().await;
}

/// The log as an operator with write access could leave it: entry `seq` altered and every
/// entry from it rehashed, so that the chain verifies again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_distributed_noise_the_coordinator_only_ever_holds_a_noisy_sum() {
    let mut c = common::start_on_own_system(test_config(&fresh_store_url("agents-distributed")));
    let root = tempfile::tempdir().unwrap();
    let (sites, agents) = setup_with(&mut c, root.path(), [100.0; 4], false).await;
    let truths: Vec<(i64, [i64; 3])> = sites.iter().map(|s| truth(&s.rows)).collect();

    // Pure ε is central-only: refused at submission, with its code, reserving nothing.
    let (s, body) = c.submit(histogram_of_falls(1.0)).await;
    assert!(s.is_client_error(), "{body}");
    assert_eq!(body["code"], "query.pure_epsilon_central_only", "{body}");

    let mut query = histogram_of_falls(1.0);
    query["privacy"] = json!({ "rho": 0.01 });
    let (id, round) = submit(&c, query).await;
    let outcomes = all_once(&agents).await;
    for o in &outcomes {
        assert_eq!(o, &vec![(round, RoundOutcome::Finished)]);
    }
    let done = c.wait_done(id).await;
    assert_eq!(done["state"], "released", "{done}");
    let bands: Vec<i64> = (0..3)
        .map(|b| truths.iter().map(|t| t.1[b]).sum())
        .collect();
    // The only sum the coordinator held is noisy: four partners' shares of σ ≈ 14 each
    // (Δ₂ = 2 for 2 rows per resident, ρ = 0.01, 2 honest shares) leave every band exact
    // with probability ~10⁻⁴, and none beyond the ring's tail.
    let unmasked = c.state.rounds.unmasked_sum(id).unwrap();
    assert_ne!(unmasked, bands, "the partners added no noise");
    for (u, b) in unmasked.iter().zip(&bands) {
        assert!((u - b).abs() < 300, "{unmasked:?} vs {bands:?}");
    }
    // The release is that sum post-processed (clamped at 0), never noised a second time.
    let released: Vec<f64> = released_values(&done);
    let expected: Vec<f64> = unmasked.iter().map(|u| (*u).max(0) as f64).collect();
    assert_eq!(released, expected, "{done}");
    let receipt = &done["result"]["receipt"];
    assert_eq!(receipt["noise"], "distributed", "{receipt}");
    // Four partners, one colluder withstood: t = 3, of which 2 are surely honest.
    assert_eq!(receipt["honest_shares"], 2, "{receipt}");
    assert_eq!(receipt["survivors"], 4, "{receipt}");
    let mechanism = receipt["mechanisms"][0].as_str().unwrap();
    assert!(
        mechanism.starts_with("distributed discrete Gaussian"),
        "{mechanism}"
    );
    c.stop().await;
}

fn rewrite_from(
    records: &[civic_policies::audit::AuditRecord],
    seq: usize,
) -> Vec<civic_policies::audit::AuditRecord> {
    use civic_policies::audit::{AuditEvent, ChainHead};
    let mut out = records[..seq - 1].to_vec();
    let mut head = ChainHead {
        seq: seq as u64 - 1,
        hash: records[seq - 2].hash.clone(),
    };
    for r in &records[seq - 1..] {
        let new = AuditEvent {
            actor: if r.seq == seq as u64 {
                "someone-else".into()
            } else {
                r.actor.clone()
            },
            action: r.action.clone(),
            subject: r.subject.clone(),
            details: serde_json::from_str(&r.details).unwrap(),
        }
        .chain(&head, r.at.clone());
        head = ChainHead {
            seq: new.seq,
            hash: new.hash.clone(),
        };
        out.push(new);
    }
    assert!(civic_policies::audit::verify_chain(&ChainHead::genesis(), &out).is_ok());
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_agent_killed_mid_round_drops_out_and_never_rejoins_after_restart() {
    let config = civic_server::Config {
        phase_deadline_secs: 2.0,
        ..test_config(&fresh_store_url("agents-killed"))
    };
    let mut c = common::start_on_own_system(config);
    let root = tempfile::tempdir().unwrap();
    let (sites, agents) = setup(&mut c, root.path(), [100.0; 4]).await;
    let (id, round) = submit(&c, common::count_query(60.0)).await;

    let survivors: Vec<_> = [&agents[0], &agents[1], &agents[3]]
        .into_iter()
        .map(|a| {
            let a = Arc::clone(a);
            tokio::spawn(async move { a.once().await.unwrap() })
        })
        .collect();
    let victim = {
        let a = Arc::clone(&agents[2]);
        tokio::spawn(async move { a.once().await })
    };
    // Kill the third agent once it has joined the round (journal written, keys advertised
    // or about to be), before it can send its masked vector.
    let key = round.to_string();
    for _ in 0..500 {
        if sites[2].journal()["rounds"][&key]["status"] == "joined" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    victim.abort();
    assert_eq!(sites[2].journal()["rounds"][&key]["status"], "joined");
    for s in survivors {
        assert_eq!(s.await.unwrap(), vec![(round, RoundOutcome::Finished)]);
    }
    let done = c.wait_done(id).await;
    assert_eq!(done["state"], "released", "{done}");
    assert_eq!(done["result"]["receipt"]["survivors"], 3, "{done}");
    let exact: i64 = [0, 1, 3].iter().map(|&i| truth(&sites[i].rows).0).sum();
    assert_eq!(c.state.rounds.unmasked_sum(id), Some(vec![exact]));

    // Restarted on the same state directory, the agent knows it lost the round's secrets.
    let restarted = sites[2].agent();
    assert!(restarted.once().await.unwrap().is_empty());
    let j = sites[2].journal();
    assert_eq!(j["rounds"][&key]["status"], "abandoned", "{j}");
    assert!(
        j["spent"].get("city").is_none(),
        "nothing sent, nothing charged: {j}"
    );
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_agent_declines_a_plan_over_its_local_limit_and_the_round_goes_on() {
    let mut c = common::start_on_own_system(test_config(&fresh_store_url("agents-refuse")));
    let root = tempfile::tempdir().unwrap();
    // The third partner answers at most ε = 1 per query.
    let (sites, agents) = setup(&mut c, root.path(), [100.0, 100.0, 1.0, 100.0]).await;
    let (id, round) = submit(&c, histogram_of_falls(60.0)).await;
    let started = std::time::Instant::now();
    let outcomes = all_once(&agents).await;
    assert_eq!(outcomes[0], vec![(round, RoundOutcome::Finished)]);
    let RoundOutcome::Declined(reason) = &outcomes[2][0].1 else {
        panic!("{outcomes:?}");
    };
    // The coordinator hears the code only, never the limit or the amount.
    assert_eq!(
        reason,
        "query.cost_above_limit: the query costs more than this partner allows per query"
    );
    // The decline lets the phase close at once rather than at its 20 s deadline.
    assert!(started.elapsed() < Duration::from_secs(15));
    let done = c.wait_done(id).await;
    assert_eq!(done["state"], "released", "{done}");
    let bands: Vec<i64> = (0..3)
        .map(|b| [0, 1, 3].iter().map(|&i| truth(&sites[i].rows).1[b]).sum())
        .collect();
    assert_eq!(c.state.rounds.unmasked_sum(id), Some(bands));
    // The board sees why in the audit log.
    let (s, log) = c
        .call(Method::GET, "/v1/audit?limit=1000", Some(&c.board[0]), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    let declined: Vec<&Value> = log["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["action"] == "round.declined")
        .collect();
    assert_eq!(declined.len(), 1, "{log}");
    assert!(
        declined[0]["details"]
            .as_str()
            .unwrap()
            .contains("query.cost_above_limit")
    );
    // Nothing was charged locally for the declined round.
    assert!(sites[2].journal()["spent"].get("city").is_none());
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_researcher_reads_why_a_round_did_not_release() {
    let mut c = common::start_on_own_system(test_config(&fresh_store_url("agents-declined")));
    let root = tempfile::tempdir().unwrap();
    // Two of four partners answer at most ε = 1 per query: two are left, fewer than three.
    let (_sites, agents) = setup(&mut c, root.path(), [100.0, 1.0, 1.0, 100.0]).await;
    let (id, _) = submit(&c, histogram_of_falls(60.0)).await;
    all_once(&agents).await;
    let done = c.wait_done(id).await;
    assert_eq!(done["state"], "aborted", "{done}");
    let reason = done["reason"].as_str().unwrap();
    assert!(
        reason.contains(
            "2 partners declined: query.cost_above_limit (the query costs more than this \
             partner allows per query) from 2."
        ),
        "{reason}"
    );
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_agent_refuses_a_round_under_a_policy_unlike_its_local_copy() {
    let mut c = common::start_on_own_system(test_config(&fresh_store_url("agents-policy")));
    let root = tempfile::tempdir().unwrap();
    let (sites, mut agents) = setup(&mut c, root.path(), [100.0; 4]).await;
    // The third partner keeps its own copy of the board's policy, and it says K = 2.
    let copy = sites[2].dir.join("city.toml");
    let local = c.city_toml().replace(
        "rows_per_resident_per_partner = 1",
        "rows_per_resident_per_partner = 2",
    );
    std::fs::write(&copy, local).unwrap();
    let config = sites[2].dir.join("partner.toml");
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "id = \"city\"\n",
        &format!("id = \"city\"\npolicy = {:?}\n", copy.display().to_string()),
    );
    std::fs::write(&config, text).unwrap();
    agents[2] = sites[2].agent();

    let (id, _) = submit(&c, common::count_query(60.0)).await;
    let outcomes = all_once(&agents).await;
    let RoundOutcome::Declined(reason) = &outcomes[2][0].1 else {
        panic!("{outcomes:?}");
    };
    assert!(
        reason.starts_with("policy.differs_from_local_copy"),
        "{reason}"
    );
    let done = c.wait_done(id).await;
    assert_eq!(done["state"], "released", "{done}");
    assert_eq!(done["result"]["receipt"]["survivors"], 3);
    c.stop().await;
}
