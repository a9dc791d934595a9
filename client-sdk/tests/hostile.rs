//! A hostile coordinator, written for this test: it speaks the real partner API (the same
//! JSON and binary bodies as `civic-coordinator`) but deviates, one attack per round, and
//! records everything an agent sends it. A real agent (`civic_client_sdk::agent::Agent`,
//! the code `civic-agent` runs) trusts the board's keys in its configuration; for each attack
//! it must decline with the attack's code and send nothing but the decline: no key
//! advertisement, so no masked vector, share or count can follow.
//!
//! An honest control round, set up the same way with no deviation, is joined (the agent
//! advertises its keys), so the refusals below are caused by the deviations and by nothing
//! else in the set-up. One attack can only show itself mid-round, a survivor list split
//! between two groups with one colluding partner: there the coordinator runs the protocol
//! with three simulated partners, and the agent must stop before revealing any share.

#[path = "../../server/tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use actix_web::{HttpResponse, web};
use civic_api::governance::ManifestChain;
use civic_api::round::{DeclineRound, Inbox, PartnerRounds, RosterEntry, RoundAnnouncement};
use civic_client_sdk::agent::{Agent, RoundOutcome};
use civic_client_sdk::config::AgentConfig;
use civic_client_sdk::decline::DeclineCode;
use civic_mechanisms::PricingContext;
use civic_policies::manifest::{
    self, BoardSignature, Manifest, ManifestPartner, SignedManifest, approval_message,
};
use civic_policies::{DatasetPolicy, PrivacyRequest, Query};
use civic_secagg::identity::survivors_transcript;
use civic_secagg::messages::{ClientMessage, Phase, SignedSurvivors, SurvivorList};
use civic_secagg::{
    GraphKind, IdentityKey, IdentityPublicKey, PartnerId, RoundConfig, RoundId, ServerOutput,
    Tolerances, Width,
};
use serde_json::json;

/// The honest partner under test, its three honest peers, and two keys of the coordinator's
/// own (sybils).
const PARTNERS: [&str; 4] = ["v", "p2", "p3", "p4"];
const SYBILS: [u8; 2] = [90, 91];

/// What the hostile coordinator serves: changed between rounds by the test.
#[derive(Clone)]
struct Script {
    manifests: Vec<SignedManifest>,
    policy: serde_json::Value,
    roster: Vec<RosterEntry>,
    rounds: Vec<RoundAnnouncement>,
}

/// What the agent sent it.
#[derive(Default)]
struct Recorded {
    /// Protocol messages, by round.
    messages: BTreeMap<i64, usize>,
    /// Declines, by round.
    declines: BTreeMap<i64, String>,
    /// The identity key the agent registered.
    identity: Option<String>,
}

#[derive(Clone)]
struct Hostile {
    script: Arc<Mutex<Script>>,
    recorded: Arc<Mutex<Recorded>>,
    /// A round run through the protocol, with the other three partners simulated.
    split: Arc<Mutex<Option<SplitRound>>>,
}

/// A round in which the coordinator colludes with partner 4 (it holds its identity key) and
/// shows two groups different survivor lists: the agent (partner 1) and the colluder are
/// told partner 2 dropped, so that they reveal partner 2's mask key, while partners 2 and 3
/// are told partner 1 dropped. Partners 2 and 3 run the real secagg client.
struct SplitRound {
    id: i64,
    config: RoundConfig,
    server: civic_secagg::ServerRound,
    roster: civic_secagg::Roster,
    peers: BTreeMap<PartnerId, civic_secagg::ClientRound>,
    rng: rand_chacha::ChaCha20Rng,
    /// What the agent reads next.
    inbox: Inbox,
    /// Signatures on the lists, by signer.
    signatures: BTreeMap<PartnerId, civic_secagg::Signature>,
    /// The phases of the messages the agent sent.
    sent: Vec<Phase>,
}

/// The list shown to the agent and the colluder, and the one shown to partners 2 and 3.
const AGENTS_LIST: [PartnerId; 3] = [PartnerId(1), PartnerId(3), PartnerId(4)];
const OTHERS_LIST: [PartnerId; 3] = [PartnerId(2), PartnerId(3), PartnerId(4)];

impl SplitRound {
    fn new(ann: &RoundAnnouncement, agent_key: IdentityPublicKey) -> Self {
        let mut roster: civic_secagg::Roster = (2..=4)
            .map(|p| (PartnerId(p), peer_key(p as usize - 1).public()))
            .collect();
        roster.insert(PartnerId(1), agent_key);
        Self {
            id: ann.round_id,
            config: ann.config.clone(),
            server: civic_secagg::ServerRound::new(ann.config.clone(), roster.clone()).unwrap(),
            roster,
            peers: BTreeMap::new(),
            rng: rand_core::SeedableRng::seed_from_u64(77),
            inbox: Inbox::Nothing,
            signatures: BTreeMap::new(),
            sent: Vec::new(),
        }
    }

    /// Takes the agent's message and plays the other partners and the coordinator up to the
    /// agent's next inbox.
    fn take(&mut self, msg: ClientMessage) {
        self.sent.push(msg.phase());
        let peers = [PartnerId(2), PartnerId(3), PartnerId(4)];
        let requirements = civic_secagg::Requirements {
            tolerances: Tolerances {
                max_dropout_rate: 0.0,
                max_corrupt_fraction: 0.0,
            },
            min_survivors: 2,
            min_colluders: 1,
        };
        let input = civic_secagg::RingVector::zeros(self.config.width, self.config.vector_len);
        match msg {
            ClientMessage::AdvertiseKeys(advert) => {
                self.server
                    .receive(ClientMessage::AdvertiseKeys(advert))
                    .unwrap();
                let roster = self.roster.clone();
                for p in peers {
                    let (client, advert) = civic_secagg::ClientRound::start(
                        self.config.clone(),
                        p,
                        &peer_key(p.0 as usize - 1),
                        roster.clone(),
                        &requirements,
                        &mut self.rng,
                    )
                    .unwrap();
                    self.server
                        .receive(ClientMessage::AdvertiseKeys(advert))
                        .unwrap();
                    self.peers.insert(p, client);
                }
                let ServerOutput::KeyRoster(keys) = self.server.advance().unwrap() else {
                    unreachable!()
                };
                for client in self.peers.values_mut() {
                    let shares = client.handle_key_roster(&keys, &mut self.rng).unwrap();
                    self.server
                        .receive(ClientMessage::ShareKeys(shares))
                        .unwrap();
                }
                self.inbox = Inbox::KeyRoster(keys);
            }
            ClientMessage::ShareKeys(shares) => {
                self.server
                    .receive(ClientMessage::ShareKeys(shares))
                    .unwrap();
                let ServerOutput::ForwardedShares(mut forwards) = self.server.advance().unwrap()
                else {
                    unreachable!()
                };
                for (p, client) in &mut self.peers {
                    let masked = client
                        .handle_forwarded_shares(&forwards[p], &input)
                        .unwrap();
                    self.server
                        .receive(ClientMessage::MaskedInput(masked))
                        .unwrap();
                }
                self.inbox = Inbox::ForwardedShares(forwards.remove(&PartnerId(1)).unwrap());
            }
            ClientMessage::MaskedInput(_) => {
                // The deviation: two lists. Partners 2 and 3 sign theirs; the colluder's key
                // signs both.
                let others = SurvivorList {
                    round_id: RoundId(self.id as u64),
                    survivors: OTHERS_LIST.to_vec(),
                };
                for p in [PartnerId(2), PartnerId(3)] {
                    let client = self.peers.get_mut(&p).unwrap();
                    let signed = client
                        .handle_survivor_list(&others, &peer_key(p.0 as usize - 1))
                        .unwrap();
                    self.signatures.insert(p, signed.signature);
                }
                let colluder =
                    peer_key(3).sign(&survivors_transcript(&self.config.digest(), &AGENTS_LIST));
                self.signatures.insert(PartnerId(4), colluder);
                self.inbox = Inbox::SurvivorList(SurvivorList {
                    round_id: RoundId(self.id as u64),
                    survivors: AGENTS_LIST.to_vec(),
                });
            }
            ClientMessage::ConsistencySignature(signed) => {
                // The agent's list with every signature the coordinator holds for a listed
                // partner: partner 3's is over the other list.
                self.signatures.insert(PartnerId(1), signed.signature);
                self.inbox = Inbox::SignedSurvivors(SignedSurvivors {
                    round_id: RoundId(self.id as u64),
                    survivors: AGENTS_LIST.to_vec(),
                    signatures: AGENTS_LIST
                        .iter()
                        .map(|p| (*p, self.signatures[p]))
                        .collect(),
                });
            }
            ClientMessage::UnmaskingShares(_) => self.inbox = Inbox::Nothing,
        }
    }
}

fn aborted() -> HttpResponse {
    HttpResponse::Conflict().json(json!({
        "type": "urn:civic:problem:round.aborted", "title": "Conflict", "status": 409,
        "detail": "aborted", "code": "round.aborted"
    }))
}

async fn identity(h: web::Data<Hostile>, body: web::Json<serde_json::Value>) -> HttpResponse {
    h.recorded.lock().unwrap().identity = body["public_key"].as_str().map(String::from);
    HttpResponse::Ok().json(json!({}))
}

async fn rounds(h: web::Data<Hostile>) -> HttpResponse {
    let rounds = h.script.lock().unwrap().rounds.clone();
    HttpResponse::Ok().json(PartnerRounds { rounds })
}

async fn manifests(h: web::Data<Hostile>) -> HttpResponse {
    let manifests = h.script.lock().unwrap().manifests.clone();
    HttpResponse::Ok().json(ManifestChain { manifests })
}

async fn dataset(h: web::Data<Hostile>, path: web::Path<(String, i64)>) -> HttpResponse {
    let policy = h.script.lock().unwrap().policy.clone();
    HttpResponse::Ok().json(json!({
        "id": path.0, "version": path.1, "created_at": "2026-12-02T00:00:00Z",
        "created_by": "board", "policy": policy
    }))
}

async fn roster(h: web::Data<Hostile>) -> HttpResponse {
    HttpResponse::Ok().json(h.script.lock().unwrap().roster.clone())
}

async fn message(h: web::Data<Hostile>, id: web::Path<i64>, body: web::Bytes) -> HttpResponse {
    *h.recorded.lock().unwrap().messages.entry(*id).or_default() += 1;
    if let Some(split) = h.split.lock().unwrap().as_mut().filter(|r| r.id == *id) {
        split.take(civic_api::decode_binary(&body).unwrap());
    }
    HttpResponse::Ok().finish()
}

async fn inbox(h: web::Data<Hostile>, id: web::Path<i64>) -> HttpResponse {
    match h.split.lock().unwrap().as_ref().filter(|r| r.id == *id) {
        Some(split) => HttpResponse::Ok()
            .content_type(civic_api::round::BINARY_CONTENT_TYPE)
            .body(civic_api::encode_binary(&split.inbox)),
        None => aborted(),
    }
}

async fn decline(
    h: web::Data<Hostile>,
    id: web::Path<i64>,
    body: web::Json<DeclineRound>,
) -> HttpResponse {
    h.recorded
        .lock()
        .unwrap()
        .declines
        .insert(*id, body.into_inner().reason);
    HttpResponse::Ok().finish()
}

/// Serves `h` on a loopback port, on a thread with its own actix system.
fn serve(h: Hostile) -> String {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let server = actix_web::HttpServer::new(move || {
                actix_web::App::new()
                    .app_data(web::Data::new(h.clone()))
                    .route("/v1/partner/identity", web::put().to(identity))
                    .route("/v1/partner/rounds", web::get().to(rounds))
                    .route("/v1/manifests", web::get().to(manifests))
                    .route(
                        "/v1/datasets/{id}/versions/{version}",
                        web::get().to(dataset),
                    )
                    .route("/v1/partners/roster", web::get().to(roster))
                    .route("/v1/partner/rounds/{id}/messages", web::post().to(message))
                    .route("/v1/partner/rounds/{id}/decline", web::post().to(decline))
                    .route("/v1/partner/rounds/{id}/inbox", web::get().to(inbox))
            })
            .workers(1)
            .bind("127.0.0.1:0")
            .unwrap();
            let addr = server.addrs()[0];
            tx.send(format!("http://{addr}")).unwrap();
            server.run().await.unwrap();
        })
    });
    rx.recv().unwrap()
}

/// The test "city" policy held by the four partners, with a floor per query (ρ 10⁻⁶) below
/// the manifest's (10⁻⁴), so that the manifest's is the one a cheap query meets.
fn four_partner_city() -> String {
    let names: Vec<String> = PARTNERS.iter().map(|p| format!("{p:?}")).collect();
    common::CITY_TOML
        .replace(
            r#"partners = ["trust-a", "council-b", "housing-c"]"#,
            &format!("partners = [{}]", names.join(", ")),
        )
        .replace(
            "min_per_query = { rho = 0.0001 }",
            "min_per_query = { rho = 0.000001 }",
        )
}

fn peer_key(i: usize) -> IdentityKey {
    IdentityKey::from_seed(&[i as u8 + 10; 32])
}

fn hex_key(k: &IdentityKey) -> String {
    hex::encode(k.public().0)
}

/// The agent's directory: a small CSV, a private token, a fresh identity key, and a
/// configuration that trusts the test board.
fn agent_dir(root: &Path, base: &str) -> (Arc<Agent>, String) {
    std::fs::write(
        root.join("city.csv"),
        "pid,age,fell\n1,70,true\n2,82,false\n3,40,true\n",
    )
    .unwrap();
    std::fs::write(root.join("token"), "not-a-real-token").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(root.join("token"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let key = civic_client_sdk::identity::generate(&root.join("identity.key")).unwrap();
    let config = format!(
        r#"identity_key = "identity.key"
state_dir = "state"

{board}
[coordinator]
url = "{base}"
token_file = "token"
poll_seconds = 0.1

[limits]
max_epsilon_per_query = 5000.0
max_rho_per_query = 5000.0
total_rho = 100000.0
min_survivors = 2

[[datasets]]
id = "city"
resident_column = "pid"

[datasets.source]
kind = "csv"
path = "city.csv"

[datasets.columns]
age = "age"
fell = "fell"
"#,
        board = common::board_toml()
    );
    std::fs::write(root.join("partner.toml"), config).unwrap();
    let config = AgentConfig::load(&root.join("partner.toml")).unwrap();
    (Arc::new(Agent::new(config).unwrap()), key)
}

/// The honest set-up: manifest v1 signed by two of three members, naming the four partners
/// with their keys and the four-partner policy; the roster as registered; partner ids 1..=4.
fn honest_script(v_key: &str) -> (Script, Manifest) {
    let mut listed = vec![("v".to_string(), v_key.to_string())];
    for (i, name) in PARTNERS.iter().enumerate().skip(1) {
        listed.push((name.to_string(), hex_key(&peer_key(i))));
    }
    let city = four_partner_city();
    let m = common::city_manifest(&listed, &city);
    let policy = DatasetPolicy::from_toml(&city, "city").unwrap();
    let roster = listed
        .iter()
        .enumerate()
        .map(|(i, (name, key))| RosterEntry {
            partner_id: i as u32 + 1,
            name: name.clone(),
            identity_key: Some(key.clone()),
        })
        .collect();
    let script = Script {
        manifests: vec![common::signed(m.clone(), &[201, 202])],
        policy: serde_json::to_value(&policy.file).unwrap(),
        roster,
        rounds: Vec::new(),
    };
    (script, m)
}

/// A count of "city" at `privacy` as round `id` over partners 1..=n, configured as an honest
/// coordinator would.
fn announcement(id: i64, privacy: PrivacyRequest, n: u32) -> RoundAnnouncement {
    announcement_of(
        id,
        json!({ "dataset": "city", "statistic": "count" }),
        privacy,
        n,
    )
}

/// A round of `query` (JSON), configured as an honest coordinator would.
fn announcement_of(
    id: i64,
    query: serde_json::Value,
    privacy: PrivacyRequest,
    n: u32,
) -> RoundAnnouncement {
    let policy = DatasetPolicy::from_toml(&four_partner_city(), "city").unwrap();
    let query: Query = serde_json::from_value(query).unwrap();
    let context = PricingContext {
        max_rows_per_partner: 1000,
        reporting_delta: 1e-6,
        board_floor: civic_policies::Rho::ZERO,
        honest_survivors: 2,
    };
    let priced = civic_mechanisms::price(&policy, &query, privacy, None, context).unwrap();
    let plan = &priced.plan;
    let participants: Vec<PartnerId> = (1..=n).map(PartnerId).collect();
    let width = Width::for_layout(plan.max_slot_per_partner, n as usize, 0).unwrap();
    let config = RoundConfig::new(
        RoundId(id as u64),
        participants,
        plan.vector_len,
        width,
        GraphKind::Complete,
        Tolerances {
            max_dropout_rate: 0.0,
            max_corrupt_fraction: 0.0,
        },
        2,
    )
    .unwrap();
    RoundAnnouncement {
        round_id: id,
        query_id: id,
        protocol: civic_client_sdk::decide::SECURE_SUM.into(),
        dataset: "city".into(),
        dataset_version: 1,
        query,
        privacy,
        confidence: None,
        max_rows_per_partner: 1000,
        reporting_delta: Some(1e-6),
        approvals: Vec::new(),
        config,
        training: None,
        phase: "advertise_keys".into(),
        phase_deadline: "2026-12-02T00:00:00Z".into(),
    }
}

fn fingerprint(ann: &RoundAnnouncement) -> String {
    civic_api::query::fingerprint(
        &ann.dataset,
        ann.dataset_version,
        &ann.query,
        &ann.privacy,
        civic_mechanisms::pricing::DEFAULT_CONFIDENCE,
    )
}

fn approval(ann: &RoundAnnouncement, seed: u8) -> BoardSignature {
    manifest::sign(
        &common::board_key(seed),
        &approval_message(&fingerprint(ann)),
    )
}

struct Harness {
    hostile: Hostile,
    agent: Arc<Agent>,
    v_key: String,
    dir: tempfile::TempDir,
}

impl Harness {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let script = Arc::new(Mutex::new(Script {
            manifests: Vec::new(),
            policy: json!(null),
            roster: Vec::new(),
            rounds: Vec::new(),
        }));
        let hostile = Hostile {
            script,
            recorded: Arc::default(),
            split: Arc::default(),
        };
        let base = serve(hostile.clone());
        let (agent, v_key) = agent_dir(dir.path(), &base);
        let (honest, _) = honest_script(&v_key);
        *hostile.script.lock().unwrap() = honest;
        Harness {
            hostile,
            agent,
            v_key,
            dir,
        }
    }

    /// Runs one pass of the agent over `script` and returns the outcome of each round.
    async fn pass(&self, script: Script) -> Vec<(i64, RoundOutcome)> {
        *self.hostile.script.lock().unwrap() = script;
        self.agent.once().await.unwrap()
    }

    /// Asserts round `id` was declined with `code`, the coordinator heard exactly the code's
    /// fixed text, and the agent sent it no protocol message.
    fn assert_refused(&self, outcomes: &[(i64, RoundOutcome)], id: i64, code: DeclineCode) {
        let outcome = outcomes.iter().find(|(r, _)| *r == id).map(|(_, o)| o);
        assert_eq!(
            outcome,
            Some(&RoundOutcome::Declined(code.public_reason())),
            "round {id}: {outcomes:?}"
        );
        let recorded = self.hostile.recorded.lock().unwrap();
        assert_eq!(recorded.declines.get(&id), Some(&code.public_reason()));
        assert_eq!(
            recorded.messages.get(&id),
            None,
            "round {id}: the agent sent protocol messages"
        );
    }

    fn messages(&self, id: i64) -> usize {
        self.hostile
            .recorded
            .lock()
            .unwrap()
            .messages
            .get(&id)
            .copied()
            .unwrap_or(0)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_refuses_every_deviation_of_a_hostile_coordinator_with_its_code() {
    let h = Harness::new();
    let (honest, m1) = honest_script(&h.v_key);
    let with = |rounds: Vec<RoundAnnouncement>| Script {
        rounds,
        ..honest.clone()
    };

    // Control: the honest round is joined (keys advertised; the coordinator then aborts it).
    let control = announcement(1, PrivacyRequest::Epsilon(1.0), 4);
    let out = h.pass(with(vec![control.clone()])).await;
    assert!(
        matches!(out[..], [(1, RoundOutcome::Abandoned(_))]),
        "{out:?}"
    );
    assert_eq!(h.messages(1), 1, "the control round's keys were advertised");
    assert_eq!(
        h.hostile.recorded.lock().unwrap().identity.as_deref(),
        Some(h.v_key.as_str())
    );

    // Sybils: V with two partners the coordinator made up, holding its own keys.
    let mut sybil = with(vec![announcement(2, PrivacyRequest::Epsilon(1.0), 3)]);
    for (i, seed) in SYBILS.iter().enumerate() {
        sybil.roster[i + 1] = RosterEntry {
            partner_id: i as u32 + 2,
            name: format!("sybil-{i}"),
            identity_key: Some(hex::encode(IdentityKey::from_seed(&[*seed; 32]).public().0)),
        };
    }
    let out = h.pass(sybil).await;
    h.assert_refused(&out, 2, DeclineCode::ParticipantNotInManifest);

    // A real partner's roster key swapped for the coordinator's.
    let mut swapped = with(vec![announcement(3, PrivacyRequest::Epsilon(1.0), 4)]);
    swapped.roster[2].identity_key = Some(hex::encode(
        IdentityKey::from_seed(&[SYBILS[0]; 32]).public().0,
    ));
    let out = h.pass(swapped).await;
    h.assert_refused(&out, 3, DeclineCode::ParticipantNotInManifest);

    // One real partner counted twice (two ids, one key) to fill a quorum.
    let mut twice = with(vec![announcement(4, PrivacyRequest::Epsilon(1.0), 4)]);
    twice.roster[3].identity_key = twice.roster[2].identity_key.clone();
    let out = h.pass(twice).await;
    h.assert_refused(&out, 4, DeclineCode::ParticipantNotInManifest);

    // A policy the board did not sign (one more row per resident), as a new version. (Under
    // a version already fetched the agent keeps the copy it verified: versions never change.)
    let mut newer = announcement(5, PrivacyRequest::Epsilon(1.0), 4);
    newer.dataset_version = 2;
    let mut unsigned = with(vec![newer]);
    unsigned.policy["contribution"]["rows_per_resident_per_partner"] = json!(2);
    let out = h.pass(unsigned).await;
    h.assert_refused(&out, 5, DeclineCode::PolicyNotSigned);

    // A manifest the coordinator made up (a sybil partner added) with one real member's
    // signature and one of its own.
    let mut forged = m1.clone();
    forged.partners.push(ManifestPartner {
        name: "sybil".into(),
        organisation: "the coordinator".into(),
        identity_key: hex::encode(IdentityKey::from_seed(&[SYBILS[0]; 32]).public().0),
    });
    let mut forged = common::signed(forged, &[201]);
    forged.signatures.push(manifest::sign(
        &ed25519_dalek::SigningKey::from_bytes(&[SYBILS[1]; 32]),
        &forged.manifest.signing_message(),
    ));
    let mut forged_script = with(vec![announcement(6, PrivacyRequest::Epsilon(1.0), 4)]);
    forged_script.manifests = vec![forged];
    let out = h.pass(forged_script).await;
    h.assert_refused(&out, 6, DeclineCode::ManifestUnverified);

    // A lowered threshold (t = 2 of 4: 2t ≤ n + 1) and a lowered survivor floor.
    let mut low = announcement(7, PrivacyRequest::Epsilon(1.0), 4);
    low.config.threshold = 2;
    let mut floor = announcement(8, PrivacyRequest::Epsilon(1.0), 4);
    floor.config.min_survivors = 1;
    let out = h.pass(with(vec![low, floor])).await;
    h.assert_refused(&out, 7, DeclineCode::ThresholdTooLow);
    h.assert_refused(&out, 8, DeclineCode::ThresholdTooLow);

    // A flood of near-free queries: below the manifest's least cost per query.
    let cheap: Vec<RoundAnnouncement> = (0..5)
        .map(|i| announcement(20 + i, PrivacyRequest::Rho(5e-5 + i as f64 * 1e-7), 4))
        .collect();
    let out = h.pass(with(cheap)).await;
    for i in 0..5 {
        h.assert_refused(&out, 20 + i, DeclineCode::CostBelowMinimum);
    }

    // A query costing more than the approval threshold (ρ 2500) with no approval, with one
    // member's approval, and with one member's approval twice plus a made-up signer's.
    let big = |id| announcement(id, PrivacyRequest::Rho(3000.0), 4);
    let none = big(30);
    let mut one = big(31);
    one.approvals = vec![approval(&one, 201)];
    let mut padded = big(32);
    padded.approvals = vec![
        approval(&padded, 202),
        approval(&padded, 202),
        manifest::sign(
            &ed25519_dalek::SigningKey::from_bytes(&[SYBILS[0]; 32]),
            &approval_message(&fingerprint(&padded)),
        ),
    ];
    // Two members' signatures over another question do not approve this one.
    let mut elsewhere = big(33);
    let other = announcement(99, PrivacyRequest::Rho(2900.0), 4);
    elsewhere.approvals = vec![approval(&other, 201), approval(&other, 202)];
    let out = h.pass(with(vec![none, one, padded, elsewhere])).await;
    for id in 30..=33 {
        h.assert_refused(&out, id, DeclineCode::ApprovalMissing);
    }
    // With two members' approvals the same query is joined.
    let mut approved = big(34);
    approved.approvals = vec![approval(&approved, 201), approval(&approved, 203)];
    let out = h.pass(with(vec![approved])).await;
    assert!(
        matches!(out[..], [(34, RoundOutcome::Abandoned(_))]),
        "{out:?}"
    );
    assert_eq!(h.messages(34), 1);

    // A round listed twice in one pass is handled once.
    let dup = announcement(40, PrivacyRequest::Epsilon(2.0), 4);
    let out = h.pass(with(vec![dup.clone(), dup])).await;
    let skipped = out
        .iter()
        .filter(|(_, o)| *o == RoundOutcome::Skipped)
        .count();
    assert_eq!((out.len(), skipped), (2, 1), "{out:?}");
    assert_eq!(h.messages(40), 1, "keys advertised once");

    // A rollback: the board publishes version 2; the coordinator later serves version 1
    // alone (to re-admit a partner version 2 removed, say).
    let mut m2 = m1.clone();
    m2.version = 2;
    m2.previous = Some(m1.digest());
    m2.requirements.max_rounds_per_dataset_per_day = 500;
    let mut v2 = with(vec![announcement(50, PrivacyRequest::Epsilon(3.0), 4)]);
    v2.manifests = vec![
        common::signed(m1.clone(), &[201, 202]),
        common::signed(m2, &[202, 203]),
    ];
    let out = h.pass(v2).await;
    assert!(
        matches!(out[..], [(50, RoundOutcome::Abandoned(_))]),
        "{out:?}"
    );
    let out = h
        .pass(with(vec![announcement(
            51,
            PrivacyRequest::Epsilon(3.5),
            4,
        )]))
        .await;
    h.assert_refused(&out, 51, DeclineCode::ManifestUnverified);
}

/// A round of a training job (falls on age, 3 iterations) at `step`.
fn training_round(id: i64, step: Option<(u32, Vec<f64>)>) -> RoundAnnouncement {
    let job = json!({ "dataset": "city", "statistic": { "logistic_regression": {
        "features": ["age"], "outcome": "fell", "iterations": 3
    } } });
    let mut ann = announcement_of(id, job, PrivacyRequest::Rho(0.3), 4);
    ann.training = step.map(|(iteration, coefficients)| civic_api::round::TrainingStep {
        iteration,
        coefficients,
    });
    ann
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_computes_a_training_step_only_at_coefficients_it_accepts() {
    let h = Harness::new();
    let (honest, _) = honest_script(&h.v_key);
    let with = |rounds: Vec<RoundAnnouncement>| Script {
        rounds,
        ..honest.clone()
    };
    // Control: the first step, at zero, is joined (keys advertised).
    let out = h
        .pass(with(vec![training_round(1, Some((0, vec![0.0, 0.0])))]))
        .await;
    assert!(
        matches!(out[..], [(1, RoundOutcome::Abandoned(_))]),
        "{out:?}"
    );
    assert_eq!(h.messages(1), 1, "the control round's keys were advertised");
    // Coefficients a hostile coordinator might announce to push the contributions past their
    // bound, or to make the agent compute more steps than the job has: each refused before
    // a row is read, with nothing sent but the decline. (JSON has no NaN or infinity: a
    // `null` or a string where a number belongs makes the round list unreadable, and the
    // agent takes part in nothing.)
    let bad = [
        Some((1, vec![1e300, 1e300])),
        Some((1, vec![1e7, 0.0])),
        Some((1, vec![0.0, 0.0, 0.0])),
        Some((3, vec![0.0, 0.0])),
        None,
    ];
    for (i, step) in bad.into_iter().enumerate() {
        let id = 10 + i as i64;
        let out = h.pass(with(vec![training_round(id, step)])).await;
        h.assert_refused(&out, id, DeclineCode::TrainingStepInvalid);
    }
    // A step announced for a query that trains nothing.
    let mut count = announcement(20, PrivacyRequest::Epsilon(1.0), 4);
    count.training = training_round(0, Some((0, vec![0.0, 0.0]))).training;
    let out = h.pass(with(vec![count])).await;
    h.assert_refused(&out, 20, DeclineCode::TrainingStepInvalid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_never_answers_the_same_question_twice_nor_beyond_its_daily_rounds() {
    let h = Harness::new();
    let (mut honest, mut m1) = honest_script(&h.v_key);
    // The board allows two rounds per dataset per day.
    m1.requirements.max_rounds_per_dataset_per_day = 2;
    honest.manifests = vec![common::signed(m1, &[201, 203])];
    let with = |rounds: Vec<RoundAnnouncement>| Script {
        rounds,
        ..honest.clone()
    };
    let first = announcement(1, PrivacyRequest::Epsilon(1.0), 4);
    let out = h.pass(with(vec![first.clone()])).await;
    assert!(
        matches!(out[..], [(1, RoundOutcome::Abandoned(_))]),
        "{out:?}"
    );
    let second = announcement(2, PrivacyRequest::Epsilon(1.5), 4);
    let out = h.pass(with(vec![second])).await;
    assert!(
        matches!(out[..], [(2, RoundOutcome::Abandoned(_))]),
        "{out:?}"
    );
    // A third round on the dataset today is refused, whatever it asks.
    let out = h
        .pass(with(vec![announcement(3, PrivacyRequest::Epsilon(2.0), 4)]))
        .await;
    h.assert_refused(&out, 3, DeclineCode::RoundRateExceeded);

    // The same question as round 1, as a new round: had round 1 delivered this partner's
    // input, the agent would refuse it (the coordinator must re-serve the release). Round 1
    // was abandoned before its input left, so this is what the journal would hold after a
    // round that got as far as the masked vector.
    let mut state = civic_client_sdk::state::StateFile::open(
        &h.dir.path().join("state"),
        h.agent.config().coordinator.url.trim_end_matches('/'),
    )
    .unwrap();
    state
        .update(|s| {
            s.answered.insert(fingerprint(&first));
            Ok(())
        })
        .unwrap();
    let h2 = Harness {
        hostile: h.hostile.clone(),
        agent: Arc::new(Agent::new(h.agent.config().clone()).unwrap()),
        v_key: h.v_key.clone(),
        dir: tempfile::tempdir().unwrap(),
    };
    let out = h2
        .pass(with(vec![announcement(4, PrivacyRequest::Epsilon(1.0), 4)]))
        .await;
    h2.assert_refused(&out, 4, DeclineCode::AlreadyAnswered);
}

/// Split survivor lists with one colluder, through the whole protocol: the agent is told
/// partner 2 dropped (so it would reveal partner 2's mask key) while partners 2 and 3 are told
/// the agent dropped. The agent counts only valid signatures over the list it signed, finds
/// partner 3's is over another list, and reveals nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_shown_a_split_survivor_list_with_one_colluder_reveals_nothing() {
    let h = Harness::new();
    let (honest, _) = honest_script(&h.v_key);
    let ann = announcement(60, PrivacyRequest::Epsilon(1.0), 4);
    assert_eq!(ann.config.threshold, 3, "2t > n + 1 at n = 4");
    let agent_key = IdentityPublicKey(hex::decode(&h.v_key).unwrap().try_into().unwrap());
    *h.hostile.split.lock().unwrap() = Some(SplitRound::new(&ann, agent_key));
    let out = h
        .pass(Script {
            rounds: vec![ann],
            ..honest
        })
        .await;
    let [(60, RoundOutcome::Abandoned(reason))] = &out[..] else {
        panic!("{out:?}");
    };
    assert!(
        reason.contains("bad signature from partner 3 on its survivor list"),
        "{reason}"
    );
    let split = h.hostile.split.lock().unwrap();
    let sent = &split.as_ref().unwrap().sent;
    assert_eq!(
        sent,
        &[
            Phase::AdvertiseKeys,
            Phase::ShareKeys,
            Phase::MaskedInputCollection,
            Phase::ConsistencyCheck
        ],
        "no share was revealed"
    );
}

/// Rounds listed together are decided side by side; the daily limit still holds for them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rounds_decided_side_by_side_count_each_other_against_the_daily_limit() {
    let h = Harness::new();
    let (mut honest, mut m1) = honest_script(&h.v_key);
    m1.requirements.max_rounds_per_dataset_per_day = 2;
    honest.manifests = vec![common::signed(m1, &[201, 203])];
    let rounds: Vec<RoundAnnouncement> = [1.0, 1.5, 2.0, 2.5]
        .iter()
        .enumerate()
        .map(|(i, e)| announcement(i as i64 + 1, PrivacyRequest::Epsilon(*e), 4))
        .collect();
    let out = h
        .pass(Script {
            rounds,
            ..honest.clone()
        })
        .await;
    let refused = RoundOutcome::Declined(DeclineCode::RoundRateExceeded.public_reason());
    let (over, joined): (Vec<_>, Vec<_>) = out.iter().partition(|(_, o)| *o == refused);
    assert_eq!((joined.len(), over.len()), (2, 2), "{out:?}");
    assert!(
        joined
            .iter()
            .all(|(_, o)| matches!(o, RoundOutcome::Abandoned(_))),
        "{out:?}"
    );
}

/// The same refusal from the `civic-agent once` binary a partner runs, in its own process,
/// beside an honest round it joins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_civic_agent_binary_refuses_sybils_and_joins_the_honest_round() {
    let h = Harness::new();
    let (honest, _) = honest_script(&h.v_key);
    // Round 1 is over V and two partners holding the coordinator's own keys.
    let mut script = Script {
        rounds: vec![
            announcement(1, PrivacyRequest::Epsilon(1.0), 3),
            announcement(2, PrivacyRequest::Epsilon(1.0), 4),
        ],
        ..honest
    };
    for (i, seed) in SYBILS.iter().enumerate() {
        script.roster.push(RosterEntry {
            partner_id: 10 + i as u32,
            name: format!("sybil-{i}"),
            identity_key: Some(hex::encode(IdentityKey::from_seed(&[*seed; 32]).public().0)),
        });
    }
    script.rounds[0].config.participants = vec![PartnerId(1), PartnerId(10), PartnerId(11)];
    *h.hostile.script.lock().unwrap() = script;
    let config = h.dir.path().join("partner.toml");
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_civic-agent"))
            .args(["once", "--config"])
            .arg(&config)
            .env("CIVIC_LOG", "warn")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let reason = DeclineCode::ParticipantNotInManifest.public_reason();
    assert!(
        stdout.contains(&format!("round 1: Declined({reason:?})")),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("round 2: Abandoned"), "{stdout}");
    // Its log, piped here as to a file, says why without terminal colour codes.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("declining") && !stderr.contains('\u{1b}'),
        "{stderr}"
    );
    let recorded = h.hostile.recorded.lock().unwrap();
    assert_eq!(recorded.declines.get(&1), Some(&reason));
    assert_eq!(
        recorded.messages.get(&1),
        None,
        "nothing but the decline for round 1"
    );
    assert_eq!(
        recorded.messages.get(&2),
        Some(&1),
        "round 2's keys advertised"
    );
}
