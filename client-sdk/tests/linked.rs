//! Linked rounds end to end: housing associations and acute trusts, each an agent reading
//! its own CSV extract with its residents' NHS numbers, run the pairwise private joins
//! through a real coordinator on loopback, then the secure sum. The policy's noise is
//! central here, so the coordinator's test hook (feature `test-util`) holds the exact sum
//! of the partners' shares: it must equal the table computed here over the plaintext join
//! of the same extracts, for random data and random overlaps.

#[path = "../../server/tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use civic_client_sdk::agent::{Agent, RoundOutcome};
use civic_client_sdk::config::AgentConfig;
use civic_client_sdk::synth::nhs_number;
use common::{Coordinator, fresh_store_url, test_config};
use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};
use reqwest::StatusCode;
use serde_json::{Value, json};

const HOUSING: [&str; 2] = ["housing-north", "housing-south"];
const TRUSTS: [&str; 2] = ["acute-trust", "acute-trust-2"];

/// The sample housing-health policy with a second acute trust, small capacities (lists
/// are padded to them, so they set the joins' cost) and central noise.
fn policy() -> String {
    distributed_policy().replace("[governance]\n", "[governance]\nnoise = \"central\"\n")
}

/// [`policy`] with the sample's distributed noise.
fn distributed_policy() -> String {
    civic_policies::samples::HOUSING_HEALTH_TOML
        .replace(
            "\"acute-trust\",\n",
            "\"acute-trust\", \"acute-trust-2\",\n",
        )
        .replace(
            "partners = [\"acute-trust\"]\ncolumns",
            "partners = [\"acute-trust\", \"acute-trust-2\"]\ncolumns",
        )
        .replace("capacity = 60000", "capacity = 150")
        .replace("capacity = 1500000", "capacity = 250")
}

/// One resident: which association (if any) and trusts hold them, and their values.
struct Resident {
    nhs: String,
    housing: Option<usize>,
    trusts: [bool; 2],
    damp: bool,
    respiratory: i64,
}

fn residents(seed: u64, n: u32) -> Vec<Resident> {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let mut unit = move || (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
    (0..n)
        .map(|i| {
            let u = unit();
            Resident {
                nhs: nhs_number(i),
                housing: if u < 0.3 {
                    Some(0)
                } else if u < 0.55 {
                    Some(1)
                } else {
                    None
                },
                trusts: [unit() < 0.5, unit() < 0.35],
                damp: unit() < 0.3,
                respiratory: (unit() * 6.0) as i64,
            }
        })
        .collect()
}

/// The histogram damp × respiratory admissions (bins {0}, {1}, [2, 5]) over the plaintext
/// join of every (association, trust) pair in `pairs`: a resident counts once per pair
/// holding them.
fn plaintext_join(people: &[Resident], pairs: &[(usize, usize)]) -> Vec<i64> {
    let mut table = vec![0; 6];
    for r in people {
        for &(h, t) in pairs {
            if r.housing == Some(h) && r.trusts[t] {
                let bin = match r.respiratory {
                    0 => 0,
                    1 => 1,
                    _ => 2,
                };
                table[usize::from(r.damp) * 3 + bin] += 1;
            }
        }
    }
    table
}

/// A partner's extract, with its own spelling of the columns and the NHS number written
/// with spaces, as a patient record system prints it.
fn write_extract(path: &Path, partner: usize, people: &[Resident]) {
    let mut text = String::new();
    let spaced = |n: &str| format!("{} {} {}", &n[..3], &n[3..6], &n[6..]);
    if partner < 2 {
        text.push_str("tenant_nhs_number,damp_mould\n");
        for r in people.iter().filter(|r| r.housing == Some(partner)) {
            let damp = if r.damp { "Y" } else { "N" };
            text.push_str(&format!("{},{damp}\n", spaced(&r.nhs)));
        }
    } else {
        text.push_str("nhs_no,resp_admissions\n");
        for r in people.iter().filter(|r| r.trusts[partner - 2]) {
            text.push_str(&format!("{},{}\n", r.nhs, r.respiratory));
        }
    }
    std::fs::write(path, text).unwrap();
}

struct Site {
    dir: PathBuf,
    key: String,
}

fn create_site(
    root: &Path,
    partner: usize,
    base: &str,
    token: &str,
    people: &[Resident],
    max_rho: f64,
) -> Site {
    let dir = root.join(format!("site-{partner}"));
    std::fs::create_dir_all(&dir).unwrap();
    write_extract(&dir.join("extract.csv"), partner, people);
    std::fs::write(dir.join("token"), token).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let private = std::fs::Permissions::from_mode(0o600);
        std::fs::set_permissions(dir.join("token"), private).unwrap();
    }
    let key = civic_client_sdk::identity::generate(&dir.join("identity.key")).unwrap();
    let mapping = if partner < 2 {
        r#"side = "housing"
resident_column = "tenant_nhs_number"

[datasets.source]
kind = "csv"
path = "extract.csv"

[datasets.columns]
damp_mould_reported = { column = "damp_mould", values = { Y = "true", N = "false" } }"#
    } else {
        r#"side = "admissions"
resident_column = "nhs_no"

[datasets.source]
kind = "csv"
path = "extract.csv"

[datasets.columns]
respiratory_admissions = "resp_admissions""#
    };
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
max_rho_per_query = {max_rho}
total_rho = 10.0
min_survivors = 2

[[datasets]]
id = "housing-health"
{mapping}
"#
    );
    std::fs::write(dir.join("partner.toml"), config).unwrap();
    Site { dir, key }
}

/// The four linked partners' accounts, the linked policy, the board's manifest over both
/// datasets, an allocation, and the agents (`max_rho` per partner), registered.
async fn setup(
    c: &mut Coordinator,
    root: &Path,
    people: &[Resident],
    max_rho: [f64; 4],
) -> Vec<Arc<Agent>> {
    setup_with(c, root, people, max_rho, &policy()).await
}

/// [`setup`] with the linked policy `linked`.
async fn setup_with(
    c: &mut Coordinator,
    root: &Path,
    people: &[Resident],
    max_rho: [f64; 4],
    linked: &str,
) -> Vec<Arc<Agent>> {
    for name in HOUSING.iter().chain(&TRUSTS) {
        c.add_partner(name).await;
    }
    c.add_dataset_for_falls("housing-health", linked, 1.0).await;
    let mut sites = Vec::new();
    let mut listed = Vec::new();
    for (i, name) in HOUSING.iter().chain(&TRUSTS).enumerate() {
        let token = &c.partners.iter().find(|p| p.0 == *name).unwrap().2;
        let site = create_site(root, i, &c.base, token, people, max_rho[i]);
        listed.push((name.to_string(), site.key.clone()));
        sites.push(site);
    }
    let manifest = common::city_manifest(&listed, &c.city_toml());
    let manifest = common::with_dataset(manifest, "housing-health", linked);
    let (s, v) = c.publish(&common::signed(manifest, &[201, 203])).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let mut agents = Vec::new();
    for site in &sites {
        let config = AgentConfig::load(&site.dir.join("partner.toml")).unwrap();
        let agent = Arc::new(Agent::new(config).unwrap());
        agent.register().await.unwrap();
        agents.push(agent);
    }
    agents
}

fn damp_by_respiratory() -> Value {
    json!({
        "project": "falls",
        "query": {
            "dataset": "housing-health",
            "statistic": {"histogram": {"columns": ["damp_mould_reported", "respiratory_admissions"]}},
        },
        "privacy": { "rho": 0.05 },
    })
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

fn pairs_of(receipt: &Value, key: &str) -> BTreeMap<String, String> {
    receipt["linkage"][key]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p[0].as_str().unwrap().to_string(),
                p[1].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_linked_table_equals_the_plaintext_join_of_the_partners_extracts() {
    let mut c = common::start_on_own_system(test_config(&fresh_store_url("linked-happy")));
    let root = tempfile::tempdir().unwrap();
    let people = residents(7, 400);
    let agents = setup(&mut c, root.path(), &people, [1.0; 4]).await;

    let (s, q) = c.submit(damp_by_respiratory()).await;
    assert_eq!(s, StatusCode::CREATED, "{q}");
    let (id, round) = (q["id"].as_i64().unwrap(), common::round_of(&q));
    let outcomes = all_once(&agents).await;
    for o in &outcomes {
        assert_eq!(o, &vec![(round, RoundOutcome::Finished)]);
    }
    let done = c.wait_done(id).await;
    assert_eq!(done["state"], "released", "{done}");
    let truth = plaintext_join(&people, &[(0, 0), (0, 1), (1, 0), (1, 1)]);
    assert!(
        truth.iter().all(|n| *n > 0),
        "every cell is exercised: {truth:?}"
    );
    assert_eq!(c.state.rounds.unmasked_sum(id), Some(truth));
    assert_eq!(
        done["result"]["keys"],
        json!(["damp_mould_reported", "respiratory_admissions"]),
        "{done}"
    );
    let receipt = &done["result"]["receipt"];
    assert_eq!(
        receipt["linkage"]["pairs_joined"].as_array().unwrap().len(),
        4,
        "{receipt}"
    );
    assert!(
        receipt["linkage"]["pairs_dropped"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert_eq!(receipt["linkage"]["match_counts_rho"], json!(0.01));
    c.stop().await;
}

/// A trust that declines leaves the round before the joins: its pairs are dropped, the
/// receipt names them, and the table is the join over the pairs that remain.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_partner_that_declines_drops_its_pairs_and_the_receipt_names_them() {
    let mut c = common::start_on_own_system(test_config(&fresh_store_url("linked-dropped")));
    let root = tempfile::tempdir().unwrap();
    let people = residents(11, 300);
    // The second trust's local limit is below the query's cost: it declines.
    let agents = setup(&mut c, root.path(), &people, [1.0, 1.0, 1.0, 0.01]).await;

    let (s, q) = c.submit(damp_by_respiratory()).await;
    assert_eq!(s, StatusCode::CREATED, "{q}");
    let id = q["id"].as_i64().unwrap();
    let outcomes = all_once(&agents).await;
    assert!(
        matches!(outcomes[3][0].1, RoundOutcome::Declined(_)),
        "{outcomes:?}"
    );
    let done = c.wait_done(id).await;
    assert_eq!(done["state"], "released", "{done}");
    let truth = plaintext_join(&people, &[(0, 0), (1, 0)]);
    assert_eq!(c.state.rounds.unmasked_sum(id), Some(truth));
    let receipt = &done["result"]["receipt"];
    let dropped = pairs_of(receipt, "pairs_dropped");
    assert_eq!(dropped.len(), 2, "{receipt}");
    assert!(dropped.values().all(|m| m == "acute-trust-2"), "{receipt}");
    assert_eq!(pairs_of(receipt, "pairs_joined").len(), 2, "{receipt}");
    c.stop().await;
}

/// With the policy's distributed noise, each partner adds its noise share to its pairs'
/// shares: the coordinator only ever holds a noisy table, within the noise's reach of the
/// join's.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_distributed_noise_the_coordinator_holds_only_a_noisy_join() {
    let mut c = common::start_on_own_system(test_config(&fresh_store_url("linked-distributed")));
    let root = tempfile::tempdir().unwrap();
    let people = residents(13, 300);
    let policy = distributed_policy();
    let agents = setup_with(&mut c, root.path(), &people, [1.0; 4], &policy).await;

    let (s, q) = c.submit(damp_by_respiratory()).await;
    assert_eq!(s, StatusCode::CREATED, "{q}");
    let id = q["id"].as_i64().unwrap();
    all_once(&agents).await;
    let done = c.wait_done(id).await;
    assert_eq!(done["state"], "released", "{done}");
    assert_eq!(done["result"]["receipt"]["noise"], "distributed", "{done}");
    let truth = plaintext_join(&people, &[(0, 0), (0, 1), (1, 0), (1, 1)]);
    let noisy = c.state.rounds.unmasked_sum(id).unwrap();
    // Sensitivity 2 (a resident is in up to two pairs) at ρ = 0.05: σ ≈ 6.3 in all. Each
    // cell within 10σ, and not all exact (the chance that six cells all draw 0 is < 10⁻⁵).
    let off: Vec<i64> = noisy.iter().zip(&truth).map(|(n, t)| n - t).collect();
    assert!(off.iter().all(|d| d.abs() <= 63), "{off:?}");
    assert!(off.iter().any(|d| *d != 0), "{off:?}");
    c.stop().await;
}

/// A trust whose agent stops in the middle of the joins (after it charged its ledger and
/// its offers may have gone): the other partners end their sessions with it, its pairs are
/// dropped and named, and the table is the join over the pairs that remain.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_partner_that_stops_mid_join_drops_its_pairs_and_the_round_goes_on() {
    let mut config = test_config(&fresh_store_url("linked-stopped"));
    // Long enough for a holder's Paillier keys on a busy machine; the stopped trust costs one.
    config.join_deadline_secs = 12.0;
    let mut c = common::start_on_own_system(config);
    let root = tempfile::tempdir().unwrap();
    let people = residents(17, 300);
    let agents = setup(&mut c, root.path(), &people, [1.0; 4]).await;

    let (s, q) = c.submit(damp_by_respiratory()).await;
    assert_eq!(s, StatusCode::CREATED, "{q}");
    let id = q["id"].as_i64().unwrap();
    let victim = {
        let a = Arc::clone(&agents[3]);
        tokio::spawn(async move { a.once().await })
    };
    let others = all_once(&agents[..3]);
    let journal = root.path().join("site-3/state/agent-state.json");
    let stopped = async {
        for _ in 0..5000 {
            let text = std::fs::read_to_string(&journal).unwrap_or_default();
            if text.contains("input_sent") {
                victim.abort();
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        panic!("the trust never charged its ledger");
    };
    let (outcomes, ()) = tokio::join!(others, stopped);
    let done = c.wait_done(id).await;
    assert_eq!(done["state"], "released", "{done} {outcomes:?}");
    assert!(
        outcomes.iter().all(|o| o[0].1 == RoundOutcome::Finished),
        "{outcomes:?}"
    );
    let truth = plaintext_join(&people, &[(0, 0), (1, 0)]);
    assert_eq!(c.state.rounds.unmasked_sum(id), Some(truth));
    let receipt = &done["result"]["receipt"];
    let dropped = pairs_of(receipt, "pairs_dropped");
    assert_eq!(dropped.len(), 2, "{receipt}");
    assert!(dropped.values().all(|m| m == "acute-trust-2"), "{receipt}");
    c.stop().await;
}
