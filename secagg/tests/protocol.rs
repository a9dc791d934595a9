//! The protocol end to end: correctness under any dropout pattern (property tests), bad input
//! refused without a change of state, a deviating coordinator refused, and what a coordinator
//! without the honest partners' reveals can see.

use std::collections::{BTreeMap, BTreeSet};

use civic_secagg::messages::{
    ClientMessage, ForwardedShares, KeyRoster, MaskedInput, SignedSurvivors, SurvivorList,
};
use civic_secagg::round::{PartnerId, RoundId};
use civic_secagg::testing::{
    identities, lenient_requirements, partner_rng, phase_index, run_round,
};
use civic_secagg::{
    ClientRound, GraphKind, IdentityKey, Phase, Requirements, RevealKind, RevealLog, RingVector,
    Roster, RoundConfig, SecAggError, ServerOutput, ServerRound, Tolerances, Topology, Width,
};
use proptest::prelude::*;
use rand_chacha::ChaCha20Rng;

fn ids(n: u32) -> Vec<PartnerId> {
    // Sparse, non-contiguous ids, as a real co-operative's would be.
    (0..n).map(|i| PartnerId(i * 7 + 3)).collect()
}

fn tolerances(max_dropout_rate: f64, max_corrupt_fraction: f64) -> Tolerances {
    Tolerances {
        max_dropout_rate,
        max_corrupt_fraction,
    }
}

/// A complete-graph round planned for no corrupt partners (t = ⌊n/2⌋ + 1). Dropouts beyond
/// the plan still happen in these tests; the round then aborts when t is lost.
fn complete(n: u32, len: usize, width: Width) -> RoundConfig {
    RoundConfig::new(
        RoundId(42),
        ids(n),
        len,
        width,
        GraphKind::Complete,
        tolerances(0.0, 0.0),
        2,
    )
    .expect("valid config")
}

fn plain_sum(
    config: &RoundConfig,
    inputs: &BTreeMap<PartnerId, RingVector>,
    who: &[PartnerId],
) -> RingVector {
    let mut sum = RingVector::zeros(config.width, config.vector_len);
    for p in who {
        sum.wrapping_add_assign(&inputs[p]).expect("same shape");
    }
    sum
}

fn random_inputs(config: &RoundConfig, values: &[i64]) -> BTreeMap<PartnerId, RingVector> {
    let limit = config.width.max_magnitude() as i64 / config.participants.len() as i64;
    config
        .participants
        .iter()
        .enumerate()
        .map(|(i, &p)| {
            let v: Vec<i64> = (0..config.vector_len)
                .map(|j| values[(i * 31 + j) % values.len()].rem_euclid(2 * limit + 1) - limit)
                .collect();
            (
                p,
                RingVector::from_signed(config.width, &v).expect("within the limit"),
            )
        })
        .collect()
}

fn phase_strategy() -> impl Strategy<Value = Option<Phase>> {
    prop_oneof![
        4 => Just(None),
        1 => Just(Some(Phase::AdvertiseKeys)),
        1 => Just(Some(Phase::ShareKeys)),
        1 => Just(Some(Phase::MaskedInputCollection)),
        1 => Just(Some(Phase::ConsistencyCheck)),
        1 => Just(Some(Phase::Unmasking)),
    ]
}

/// The partners still talking at `phase` under a drop pattern.
fn active_at(
    config: &RoundConfig,
    drops: &BTreeMap<PartnerId, Phase>,
    phase: Phase,
) -> Vec<PartnerId> {
    config
        .participants
        .iter()
        .copied()
        .filter(|p| {
            drops
                .get(p)
                .is_none_or(|d| phase_index(phase) < phase_index(*d))
        })
        .collect()
}

fn check_outcome(
    config: &RoundConfig,
    inputs: &BTreeMap<PartnerId, RingVector>,
    drops: &BTreeMap<PartnerId, Phase>,
    result: Result<civic_secagg::Aggregate, SecAggError>,
) -> Result<(), TestCaseError> {
    match result {
        Ok(aggregate) => {
            // Never a wrong sum: exactly the survivors' inputs, and the survivors are partners
            // that really sent a masked vector.
            let sent_input: BTreeSet<PartnerId> =
                active_at(config, drops, Phase::MaskedInputCollection)
                    .into_iter()
                    .collect();
            prop_assert!(aggregate.survivors.iter().all(|p| sent_input.contains(p)));
            prop_assert!(aggregate.survivors.len() >= config.threshold.max(config.min_survivors));
            prop_assert_eq!(
                aggregate.sum,
                plain_sum(config, inputs, &aggregate.survivors)
            );
        }
        Err(SecAggError::TooFewSurvivors { .. }) => {
            // An abort is only allowed when a quorum really was lost.
            if config.topology == Topology::Complete {
                let last = active_at(config, drops, Phase::Unmasking).len();
                prop_assert!(
                    last < config.threshold.max(config.min_survivors),
                    "aborted with {last} partners active to the end"
                );
            }
        }
        Err(other) => prop_assert!(false, "unexpected error {other}"),
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, .. ProptestConfig::default() })]

    #[test]
    fn complete_graph_sums_the_survivors_or_aborts(
        n in 2u32..=40,
        len in 1usize..=24,
        wide in any::<bool>(),
        values in prop::collection::vec(any::<i64>(), 1..64),
        drops in prop::collection::vec(phase_strategy(), 40),
        seed in any::<u64>(),
    ) {
        let width = if wide { Width::W64 } else { Width::W32 };
        let config = complete(n, len, width);
        let inputs = random_inputs(&config, &values);
        let drops: BTreeMap<PartnerId, Phase> = config.participants.iter().zip(&drops)
            .filter_map(|(p, d)| d.map(|d| (*p, d))).collect();
        let result = run_round(&config, &inputs, &drops, seed);
        check_outcome(&config, &inputs, &drops, result)?;
    }

    #[test]
    fn sparse_graph_sums_the_survivors_or_aborts(
        n in 12u32..=40,
        half_degree in 2usize..=5,
        len in 1usize..=16,
        values in prop::collection::vec(any::<i64>(), 1..64),
        drops in prop::collection::vec(prop_oneof![6 => Just(None), 1 => phase_strategy()], 40),
        seed in any::<u64>(),
    ) {
        let degree = 2 * half_degree;
        let config = RoundConfig {
            round_id: RoundId(7),
            participants: ids(n),
            vector_len: len,
            width: Width::W64,
            topology: Topology::Harary { degree },
            // The least threshold that keeps the ring uncuttable (see derive_topology).
            threshold: degree / 2 + 2,
            min_survivors: 2,
        };
        config.validate().expect("valid sparse config");
        let inputs = random_inputs(&config, &values);
        let drops: BTreeMap<PartnerId, Phase> = config.participants.iter().zip(&drops)
            .filter_map(|(p, d)| d.map(|d| (*p, d))).collect();
        let result = run_round(&config, &inputs, &drops, seed);
        check_outcome(&config, &inputs, &drops, result)?;
    }
}

#[test]
fn derived_sparse_round_of_120_partners_with_dropouts_is_exact() {
    let config = RoundConfig::new(
        RoundId(3),
        ids(120),
        8,
        Width::W32,
        GraphKind::Sparse,
        tolerances(0.1, 0.0),
        10,
    )
    .expect("valid");
    let Topology::Harary { degree } = config.topology else {
        panic!("120 partners should get a sparse graph")
    };
    assert!(degree < 119);
    let inputs = random_inputs(&config, &[5, -3, 1 << 20, 77]);
    let drops: BTreeMap<PartnerId, Phase> = ids(120)
        .into_iter()
        .step_by(12)
        .zip(
            [
                Phase::ShareKeys,
                Phase::MaskedInputCollection,
                Phase::ConsistencyCheck,
                Phase::Unmasking,
            ]
            .into_iter()
            .cycle(),
        )
        .collect();
    let aggregate = run_round(&config, &inputs, &drops, 11).expect("10% dropouts are tolerated");
    assert_eq!(
        aggregate.sum,
        plain_sum(&config, &inputs, &aggregate.survivors)
    );
    assert_eq!(
        aggregate.survivors.len(),
        120 - 6,
        "those dropped before MaskedInputCollection are excluded"
    );
}

/// A round driven step by step, so tests can interfere between steps.
struct Harness {
    config: RoundConfig,
    keys: BTreeMap<PartnerId, IdentityKey>,
    roster: Roster,
    rngs: BTreeMap<PartnerId, ChaCha20Rng>,
    server: ServerRound,
    clients: BTreeMap<PartnerId, ClientRound>,
    inputs: BTreeMap<PartnerId, RingVector>,
}

impl Harness {
    fn new(n: u32, seed: u64) -> Self {
        Self::with_config(complete(n, 5, Width::W32), seed)
    }

    fn with_config(config: RoundConfig, seed: u64) -> Self {
        let (keys, roster) = identities(&config.participants, seed);
        let rngs = config
            .participants
            .iter()
            .map(|&p| (p, partner_rng(seed, p)))
            .collect();
        let inputs = random_inputs(&config, &[1, -2, 300, 4000, -50000]);
        Self {
            server: ServerRound::new(config.clone(), roster.clone()).expect("valid"),
            config,
            keys,
            roster,
            rngs,
            clients: BTreeMap::new(),
            inputs,
        }
    }

    fn advertise(&mut self) -> KeyRoster {
        for &p in &self.config.participants {
            let (client, advert) = ClientRound::start(
                self.config.clone(),
                p,
                &self.keys[&p],
                self.roster.clone(),
                &lenient_requirements(&self.config),
                self.rngs.get_mut(&p).expect("rng"),
            )
            .expect("starts");
            self.server
                .receive(ClientMessage::AdvertiseKeys(advert))
                .expect("accepted");
            self.clients.insert(p, client);
        }
        match self.server.advance().expect("quorum") {
            ServerOutput::KeyRoster(r) => r,
            other => panic!("unexpected {other:?}"),
        }
    }

    fn share_keys(&mut self, roster: &KeyRoster) -> BTreeMap<PartnerId, ForwardedShares> {
        for (p, client) in self.clients.iter_mut() {
            let msg = client
                .handle_key_roster(roster, self.rngs.get_mut(p).expect("rng"))
                .expect("shares");
            self.server
                .receive(ClientMessage::ShareKeys(msg))
                .expect("accepted");
        }
        match self.server.advance().expect("quorum") {
            ServerOutput::ForwardedShares(f) => f,
            other => panic!("unexpected {other:?}"),
        }
    }

    fn masked_inputs(
        &mut self,
        forwards: &BTreeMap<PartnerId, ForwardedShares>,
    ) -> BTreeMap<PartnerId, MaskedInput> {
        self.clients
            .iter_mut()
            .map(|(p, client)| {
                (
                    *p,
                    client
                        .handle_forwarded_shares(&forwards[p], &self.inputs[p])
                        .expect("masks"),
                )
            })
            .collect()
    }

    fn collect_inputs(&mut self, masked: BTreeMap<PartnerId, MaskedInput>) -> SurvivorList {
        for (_, m) in masked {
            self.server
                .receive(ClientMessage::MaskedInput(m))
                .expect("accepted");
        }
        match self.server.advance().expect("quorum") {
            ServerOutput::SurvivorList(s) => s,
            other => panic!("unexpected {other:?}"),
        }
    }

    fn consistency(&mut self, list: &SurvivorList) -> SignedSurvivors {
        for (p, client) in self.clients.iter_mut() {
            let sig = client
                .handle_survivor_list(list, &self.keys[p])
                .expect("signs");
            self.server
                .receive(ClientMessage::ConsistencySignature(sig))
                .expect("accepted");
        }
        match self.server.advance().expect("quorum") {
            ServerOutput::SignedSurvivors(s) => s,
            other => panic!("unexpected {other:?}"),
        }
    }

    fn finish(&mut self, signed: &SignedSurvivors) -> civic_secagg::Aggregate {
        for client in self.clients.values_mut() {
            let reveal = client.handle_signed_survivors(signed).expect("reveals");
            self.server
                .receive(ClientMessage::UnmaskingShares(reveal))
                .expect("accepted");
        }
        match self.server.advance().expect("unmasks") {
            ServerOutput::Aggregate(a) => a,
            other => panic!("unexpected {other:?}"),
        }
    }

    fn expected_sum(&self) -> RingVector {
        plain_sum(&self.config, &self.inputs, &self.config.participants)
    }
}

/// Asserts that `msg` is refused with `code` and that the coordinator's state is unchanged.
fn refused(server: &mut ServerRound, msg: ClientMessage, code: &str) {
    let (phase, responded) = (server.phase(), server.responded());
    let err = server.receive(msg).expect_err("must be refused");
    assert_eq!(err.code(), code, "{err}");
    assert_eq!(
        (server.phase(), server.responded()),
        (phase, responded),
        "state changed by a refused message"
    );
}

#[test]
fn coordinator_refuses_bad_messages_without_changing_state() {
    let mut h = Harness::new(5, 1);
    let roster = h.advertise();
    let a0 = roster.keys[0].clone();

    // Out of phase: an advertisement replayed during ShareKeys.
    refused(
        &mut h.server,
        ClientMessage::AdvertiseKeys(a0.clone()),
        "secagg.out_of_phase",
    );

    let forwards = h.share_keys(&roster);
    let mut masked = h.masked_inputs(&forwards);
    let p0 = h.config.participants[0];
    let good = masked.remove(&p0).expect("p0's input");

    type Mutation = fn(&mut MaskedInput);
    let mutations: [(Mutation, &str); 4] = [
        (|m| m.round_id = RoundId(43), "secagg.wrong_round"),
        (|m| m.sender = PartnerId(999), "secagg.unknown_sender"),
        (
            |m| m.vector = RingVector::zeros(Width::W32, 4),
            "secagg.wrong_vector_shape",
        ),
        (
            |m| m.vector = RingVector::zeros(Width::W64, 5),
            "secagg.wrong_vector_shape",
        ),
    ];
    for (mutate, code) in mutations {
        let mut bad = good.clone();
        mutate(&mut bad);
        refused(&mut h.server, ClientMessage::MaskedInput(bad), code);
    }

    h.server
        .receive(ClientMessage::MaskedInput(good.clone()))
        .expect("first copy accepted");
    refused(
        &mut h.server,
        ClientMessage::MaskedInput(good),
        "secagg.duplicate",
    );

    let list = h.collect_inputs(masked);
    // A consistency signature made with the wrong key.
    let mut p0_client = h.clients.remove(&p0).expect("client");
    let impostor = IdentityKey::generate(&mut partner_rng(99, p0));
    let forged = p0_client
        .handle_survivor_list(&list, &impostor)
        .expect("signs with whatever key it is given");
    refused(
        &mut h.server,
        ClientMessage::ConsistencySignature(forged),
        "secagg.bad_signature",
    );

    // The refused messages changed nothing: the round still produces the exact sum over all
    // five inputs (p0's vector is in; only its signature is missing).
    let signed = h.consistency(&list);
    assert!(signed.signatures.iter().all(|(p, _)| *p != p0));
    let aggregate = h.finish(&signed);
    assert_eq!(aggregate.sum, h.expected_sum());
    // A finished round accepts nothing more.
    let reveal = p0_client
        .handle_signed_survivors(&signed)
        .expect("p0 can still reveal");
    refused(
        &mut h.server,
        ClientMessage::UnmaskingShares(reveal),
        "secagg.round_closed",
    );
}

#[test]
fn advertisement_with_a_bad_signature_is_refused() {
    let mut h = Harness::new(3, 2);
    let p = h.config.participants[1];
    let (_, mut advert) = ClientRound::start(
        h.config.clone(),
        p,
        &h.keys[&p],
        h.roster.clone(),
        &lenient_requirements(&h.config),
        &mut partner_rng(5, p),
    )
    .expect("starts");
    advert.mask_public_key[0] ^= 1;
    refused(
        &mut h.server,
        ClientMessage::AdvertiseKeys(advert),
        "secagg.bad_signature",
    );
}

#[test]
fn partner_refuses_a_tampered_share_and_can_still_continue() {
    let mut h = Harness::new(4, 3);
    let roster = h.advertise();
    let forwards = h.share_keys(&roster);
    let p = h.config.participants[2];
    let mut tampered = forwards[&p].clone();
    tampered.shares[0].ciphertext[10] ^= 0x80;
    let client = h.clients.get_mut(&p).expect("client");
    let err = client
        .handle_forwarded_shares(&tampered, &h.inputs[&p])
        .expect_err("bad tag");
    assert_eq!(err.code(), "secagg.bad_ciphertext");
    assert_eq!(client.phase(), Phase::ShareKeys, "nothing changed");
    // A wrong-length input is refused the same way.
    let err = client
        .handle_forwarded_shares(&forwards[&p], &RingVector::zeros(Width::W32, 6))
        .expect_err("length");
    assert_eq!(err.code(), "secagg.wrong_vector_shape");
    // The genuine message still works, and the round completes exactly.
    let masked = h.masked_inputs(&forwards);
    let list = h.collect_inputs(masked);
    let signed = h.consistency(&list);
    assert_eq!(h.finish(&signed).sum, h.expected_sum());
}

#[test]
fn partner_refuses_replayed_and_foreign_messages() {
    let mut h = Harness::new(3, 4);
    let roster = h.advertise();
    let p = h.config.participants[0];
    let mut rng = partner_rng(77, p);
    let client = h.clients.get_mut(&p).expect("client");

    let mut other_round = roster.clone();
    other_round.round_id = RoundId(1);
    assert_eq!(
        client
            .handle_key_roster(&other_round, &mut rng)
            .unwrap_err()
            .code(),
        "secagg.wrong_round"
    );

    let mut dup = roster.clone();
    dup.keys.push(dup.keys[1].clone());
    assert_eq!(
        client.handle_key_roster(&dup, &mut rng).unwrap_err().code(),
        "secagg.duplicate"
    );

    let mut forged = roster.clone();
    forged.keys[1].encryption_public_key[3] ^= 4;
    assert_eq!(
        client
            .handle_key_roster(&forged, &mut rng)
            .unwrap_err()
            .code(),
        "secagg.bad_signature"
    );

    let mut stranger = roster.clone();
    stranger.keys[1].sender = PartnerId(1000);
    assert_eq!(
        client
            .handle_key_roster(&stranger, &mut rng)
            .unwrap_err()
            .code(),
        "secagg.unknown_sender"
    );

    assert_eq!(client.phase(), Phase::AdvertiseKeys);
    client
        .handle_key_roster(&roster, &mut rng)
        .expect("the genuine roster");
    let replay = client.handle_key_roster(&roster, &mut rng).unwrap_err();
    assert_eq!(replay.code(), "secagg.out_of_phase", "{replay}");
}

#[test]
fn deviating_coordinator_is_refused() {
    let mut h = Harness::new(5, 5);
    let roster = h.advertise();
    let forwards = h.share_keys(&roster);
    let masked = h.masked_inputs(&forwards);
    let list = h.collect_inputs(masked);
    let signed = h.consistency(&list);
    let [a, b, c, ..] = h.config.participants[..] else {
        unreachable!()
    };

    // Inconsistent survivor lists: a partner is shown a list without c, where everyone
    // signed the list with c.
    let mut other = signed.clone();
    other.survivors.retain(|p| *p != c);
    let client = h.clients.get_mut(&a).expect("client");
    let err = client.handle_signed_survivors(&other).unwrap_err();
    assert_eq!(err.code(), "secagg.inconsistent_coordinator", "{err}");

    // Too few valid signatures: the coordinator withholds all but two.
    let mut thin = signed.clone();
    thin.signatures.truncate(2);
    let err = client.handle_signed_survivors(&thin).unwrap_err();
    assert_eq!(err.code(), "secagg.too_few_survivors", "{err}");

    // A signature moved onto another signer.
    let mut swapped = signed.clone();
    swapped.signatures[0].1 = swapped.signatures[1].1;
    assert_eq!(
        client.handle_signed_survivors(&swapped).unwrap_err().code(),
        "secagg.bad_signature"
    );
    assert_eq!(
        client.phase(),
        Phase::ConsistencyCheck,
        "refusals changed nothing"
    );

    // Genuine request: a reveals b's self-mask share. A replay that now claims b dropped (to
    // get b's mask-key share too) is out of phase.
    let reveal = client.handle_signed_survivors(&signed).expect("reveals");
    assert!(reveal.self_mask_shares.iter().any(|s| s.owner == b));
    assert!(reveal.mask_key_shares.is_empty());
    assert_eq!(client.reveal_log().get(b), Some(RevealKind::SelfMask));
    let mut replay = signed.clone();
    replay.survivors.retain(|p| *p != b);
    assert_eq!(
        client.handle_signed_survivors(&replay).unwrap_err().code(),
        "secagg.out_of_phase"
    );
}

#[test]
fn reveal_log_survives_a_restart_and_blocks_the_other_share() {
    // Partner `a` restarts after revealing b's mask-key share (b had dropped). Restored from
    // its log, it must refuse a request for b's self-mask share.
    let mut h = Harness::new(4, 6);
    let roster = h.advertise();
    let forwards = h.share_keys(&roster);
    let masked = h.masked_inputs(&forwards);
    let list = h.collect_inputs(masked);
    let signed = h.consistency(&list);
    let [a, b, ..] = h.config.participants[..] else {
        unreachable!()
    };

    // The log as the agent persisted it before the restart.
    let json = format!(
        r#"{{"round_id":{},"revealed":{{"{}":"mask_key"}}}}"#,
        h.config.round_id, b.0
    );
    let earlier: RevealLog = serde_json::from_str(&json).expect("a persisted log parses");
    assert_eq!(earlier.get(b), Some(RevealKind::MaskKey));
    let mut client = h.clients.remove(&a).expect("client");
    let err = client
        .restore_reveal_log(RevealLog::new(RoundId(1)))
        .unwrap_err();
    assert_eq!(
        err.code(),
        "secagg.wrong_round",
        "a log of another round is refused"
    );
    client
        .restore_reveal_log(earlier)
        .expect("this round's log");
    let err = client.handle_signed_survivors(&signed).unwrap_err();
    assert_eq!(err.code(), "secagg.conflicting_reveal", "{err}");
    assert!(err.to_string().contains(&format!("partner {b}")), "{err}");
    assert_eq!(client.phase(), Phase::ConsistencyCheck);
}

#[test]
fn survivor_list_naming_a_partner_that_never_shared_is_refused() {
    let mut h = Harness::new(4, 8);
    let roster = h.advertise();
    let forwards = h.share_keys(&roster);
    let [a, b, ..] = h.config.participants[..] else {
        unreachable!()
    };
    // The coordinator withheld b's share from a, then claims b survived.
    let mut to_a = forwards[&a].clone();
    to_a.shares.retain(|s| s.sender != b);
    let client = h.clients.get_mut(&a).expect("client");
    client
        .handle_forwarded_shares(&to_a, &h.inputs[&a])
        .expect("a still has a quorum");
    let list = SurvivorList {
        round_id: h.config.round_id,
        survivors: h.config.participants.clone(),
    };
    let err = client.handle_survivor_list(&list, &h.keys[&a]).unwrap_err();
    assert_eq!(err.code(), "secagg.inconsistent_coordinator");
    assert!(err.to_string().contains(&format!("partner {b}")), "{err}");
}

#[test]
fn too_few_survivors_aborts_before_anything_is_revealed() {
    // 5 partners, t = 4: if only 2 send masked inputs, the coordinator aborts at the survivor
    // list, before any partner reveals a share.
    let config = complete(5, 3, Width::W32);
    assert_eq!(config.threshold, 4);
    let inputs = random_inputs(&config, &[1, 2, 3]);
    let drops: BTreeMap<PartnerId, Phase> = config.participants[2..]
        .iter()
        .map(|&p| (p, Phase::MaskedInputCollection))
        .collect();
    let err = run_round(&config, &inputs, &drops, 1).unwrap_err();
    match err {
        SecAggError::TooFewSurvivors {
            phase,
            survivors,
            needed,
            ..
        } => {
            assert_eq!(
                (phase, survivors, needed),
                (Phase::MaskedInputCollection, 2, 4)
            );
        }
        other => panic!("unexpected {other}"),
    }
}

#[test]
fn aborted_round_accepts_nothing_more() {
    let config = complete(3, 1, Width::W32);
    let (keys, roster) = identities(&config.participants, 3);
    let mut server = ServerRound::new(config.clone(), roster.clone()).expect("valid");
    let p = config.participants[0];
    let (_, advert) = ClientRound::start(
        config.clone(),
        p,
        &keys[&p],
        roster,
        &lenient_requirements(&config),
        &mut partner_rng(3, p),
    )
    .expect("starts");
    server
        .receive(ClientMessage::AdvertiseKeys(advert.clone()))
        .expect("accepted");
    assert_eq!(
        server.advance().unwrap_err().code(),
        "secagg.too_few_survivors"
    );
    assert_eq!(server.phase(), Phase::Aborted);
    assert_eq!(
        server
            .receive(ClientMessage::AdvertiseKeys(advert))
            .unwrap_err()
            .code(),
        "secagg.round_closed"
    );
    assert_eq!(server.advance().unwrap_err().code(), "secagg.round_closed");
}

/// The coordinator's view of a round up to the point where honest partners would reveal:
/// every message it received or sent, serialised.
fn coordinator_view(inputs_of_p0: &[i64], seed: u64) -> (Vec<Vec<u8>>, RingVector) {
    let config = complete(3, 64, Width::W32);
    let (keys, roster) = identities(&config.participants, seed);
    let mut rngs: BTreeMap<PartnerId, ChaCha20Rng> = config
        .participants
        .iter()
        .map(|&p| (p, partner_rng(seed, p)))
        .collect();
    let mut server = ServerRound::new(config.clone(), roster.clone()).expect("valid");
    let json = |m: &dyn erased::Ser| m.bytes();
    let mut view = Vec::new();
    let mut clients = BTreeMap::new();
    for &p in &config.participants {
        let (c, advert) = ClientRound::start(
            config.clone(),
            p,
            &keys[&p],
            roster.clone(),
            &lenient_requirements(&config),
            rngs.get_mut(&p).expect("rng"),
        )
        .expect("start");
        view.push(json(&advert));
        server
            .receive(ClientMessage::AdvertiseKeys(advert))
            .expect("ok");
        clients.insert(p, c);
    }
    let ServerOutput::KeyRoster(key_roster) = server.advance().expect("ok") else {
        unreachable!()
    };
    for (p, c) in clients.iter_mut() {
        let m = c
            .handle_key_roster(&key_roster, rngs.get_mut(p).expect("rng"))
            .expect("ok");
        view.push(json(&m));
        server.receive(ClientMessage::ShareKeys(m)).expect("ok");
    }
    let ServerOutput::ForwardedShares(forwards) = server.advance().expect("ok") else {
        unreachable!()
    };
    let p0 = config.participants[0];
    let mut masked_p0 = None;
    for (p, c) in clients.iter_mut() {
        let input = if *p == p0 {
            RingVector::from_signed(Width::W32, inputs_of_p0).expect("fits")
        } else {
            RingVector::from_signed(Width::W32, &[7; 64]).expect("fits")
        };
        let m = c.handle_forwarded_shares(&forwards[p], &input).expect("ok");
        if *p == p0 {
            masked_p0 = Some(m.vector.clone());
        } else {
            view.push(json(&m));
        }
    }
    (view, masked_p0.expect("p0 masked"))
}

mod erased {
    /// Serialises any message for comparison.
    pub trait Ser {
        fn bytes(&self) -> Vec<u8>;
    }
    impl<T: serde::Serialize> Ser for T {
        fn bytes(&self) -> Vec<u8> {
            serde_json::to_vec(self).expect("serialisable")
        }
    }
}

#[test]
fn coordinator_without_honest_reveals_sees_a_view_independent_of_the_input() {
    // 1. With every seed fixed, everything the coordinator receives except p0's masked vector
    //    is byte-identical whether p0's input is all zeros or all at the magnitude limit:
    //    no other message depends on the input.
    let zeros = [0i64; 64];
    let extreme = [Width::W32.max_magnitude() as i64 / 3; 64];
    let mut masked_zero = Vec::new();
    let mut masked_extreme = Vec::new();
    for seed in 0..400 {
        let (view_a, ya) = coordinator_view(&zeros, seed);
        let (view_b, yb) = coordinator_view(&extreme, seed);
        assert_eq!(
            view_a, view_b,
            "seed {seed}: a message other than p0's masked vector depends on its input"
        );
        masked_zero.extend_from_slice(ya.words());
        masked_extreme.extend_from_slice(yb.words());
    }
    // 2. p0's masked vector is uniform over Z_2^32 whatever its input: 25,600 words per input
    //    in 16 buckets by their top 4 bits; each against uniform, and the two against each
    //    other (chi-square, 15 degrees of freedom, 99.9th percentile 37.7; seeds are fixed so
    //    the outcome is deterministic).
    let buckets = |words: &[u64]| {
        let mut counts = [0f64; 16];
        words.iter().for_each(|w| counts[(w >> 28) as usize] += 1.0);
        counts
    };
    let (a, b) = (buckets(&masked_zero), buckets(&masked_extreme));
    let expected = masked_zero.len() as f64 / 16.0;
    for counts in [a, b] {
        let chi2: f64 = counts
            .iter()
            .map(|c| (c - expected).powi(2) / expected)
            .sum();
        assert!(chi2 < 37.7, "masked vector not uniform: chi2 = {chi2}");
    }
    let homogeneity: f64 = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).powi(2) / (x + y))
        .sum();
    assert!(
        homogeneity < 37.7,
        "masked vectors for the two inputs differ in distribution: chi2 = {homogeneity}"
    );
    // Sanity: the unmasked inputs themselves would be trivially distinguishable.
    assert_ne!(
        buckets(&[0; 64]),
        buckets(&[Width::W32.max_magnitude() / 3; 64])
    );
}

#[test]
fn partner_refuses_a_round_weaker_than_its_own_requirements() {
    let mut h = Harness::new(10, 9);
    let p = h.config.participants[0];
    let strict = Requirements {
        tolerances: tolerances(0.1, 0.2),
        min_survivors: 5,
        min_colluders: 1,
    };
    // The coordinator's round has t = 6; two corrupt partners among ten need t = 7.
    let mut start = |config: RoundConfig| {
        ClientRound::start(
            config,
            p,
            &h.keys[&p],
            h.roster.clone(),
            &strict,
            h.rngs.get_mut(&p).expect("rng"),
        )
        .map(|_| ())
        .unwrap_err()
    };
    let err = start(RoundConfig {
        min_survivors: 5,
        ..h.config.clone()
    });
    assert!(
        err.to_string().contains("threshold 6") && err.to_string().contains("needs 7"),
        "{err}"
    );
    let err = start(RoundConfig {
        threshold: 7,
        min_survivors: 2,
        ..h.config.clone()
    });
    assert!(err.to_string().contains("requires at least 5"), "{err}");
    // A sparse graph of degree 4 is far below what these tolerances need.
    let sparse = RoundConfig {
        topology: Topology::Harary { degree: 4 },
        threshold: 4,
        min_survivors: 5,
        ..h.config.clone()
    };
    let err = start(sparse);
    assert!(
        err.to_string()
            .contains("does not meet this partner's tolerances"),
        "{err}"
    );
    // What the partner asks for is accepted.
    let ok = RoundConfig {
        threshold: 7,
        min_survivors: 5,
        ..h.config.clone()
    };
    ClientRound::start(
        ok,
        p,
        &h.keys[&p],
        h.roster.clone(),
        &strict,
        h.rngs.get_mut(&p).expect("rng"),
    )
    .expect("accepted");
}

#[test]
fn partners_shown_different_configurations_reject_each_others_keys() {
    // Same round id, but one partner was told another threshold: the digest in every
    // signature differs, so the others refuse its advertisement.
    let mut h = Harness::new(5, 10);
    let roster = h.advertise();
    let p = h.config.participants[4];
    assert_eq!(h.config.threshold, 4);
    let weaker = RoundConfig {
        threshold: 5,
        ..h.config.clone()
    };
    weaker.validate().expect("still structurally valid");
    let (_, advert) = ClientRound::start(
        weaker,
        p,
        &h.keys[&p],
        h.roster.clone(),
        &lenient_requirements(&h.config),
        &mut partner_rng(1, p),
    )
    .expect("starts");
    let mut mixed = roster.clone();
    mixed.keys.retain(|a| a.sender != p);
    mixed.keys.push(advert);
    let q = h.config.participants[0];
    let err = h
        .clients
        .get_mut(&q)
        .expect("client")
        .handle_key_roster(&mixed, &mut partner_rng(2, q))
        .unwrap_err();
    assert_eq!(err.code(), "secagg.bad_signature", "{err}");
}

/// The two-list attack: the coordinator tells group A that `u` survived and group B that it
/// dropped, and one corrupt partner signs both lists. Returns how many of `u`'s self-mask
/// shares and mask-key shares the coordinator collects (honest reveals plus the corrupt
/// partner's one of each).
fn two_list_attack(config: RoundConfig) -> (usize, usize) {
    let mut h = Harness::with_config(config, 12);
    let roster = h.advertise();
    let forwards = h.share_keys(&roster);
    let masked = h.masked_inputs(&forwards);
    let everyone = h.collect_inputs(masked);
    let [u, a1, b1, b2, corrupt] = h.config.participants[..] else {
        unreachable!("five partners")
    };
    let without_u = SurvivorList {
        round_id: everyone.round_id,
        survivors: everyone
            .survivors
            .iter()
            .copied()
            .filter(|p| *p != u)
            .collect(),
    };
    let digest = h.config.digest();
    let mut attack = |group: [PartnerId; 2], list: &SurvivorList| {
        let mut signatures: Vec<(PartnerId, civic_secagg::Signature)> = group
            .iter()
            .map(|p| {
                let c = h.clients.get_mut(p).expect("client");
                (
                    *p,
                    c.handle_survivor_list(list, &h.keys[p])
                        .expect("list is consistent with its view")
                        .signature,
                )
            })
            .collect();
        let corrupt_signature = h.keys[&corrupt].sign(
            &civic_secagg::identity::survivors_transcript(&digest, &list.survivors),
        );
        signatures.push((corrupt, corrupt_signature));
        let signed = SignedSurvivors {
            round_id: list.round_id,
            survivors: list.survivors.clone(),
            signatures,
        };
        let (mut b_shares, mut sk_shares) = (1, 1); // the corrupt partner's own
        for p in group {
            match h
                .clients
                .get_mut(&p)
                .expect("client")
                .handle_signed_survivors(&signed)
            {
                Ok(reveal) => {
                    b_shares += reveal
                        .self_mask_shares
                        .iter()
                        .filter(|s| s.owner == u)
                        .count();
                    sk_shares += reveal
                        .mask_key_shares
                        .iter()
                        .filter(|s| s.owner == u)
                        .count();
                }
                Err(err) => assert_eq!(err.code(), "secagg.too_few_survivors", "{err}"),
            }
        }
        (b_shares, sk_shares)
    };
    let (b_from_a, _) = attack([u, a1], &everyone);
    let (_, sk_from_b) = attack([b1, b2], &without_u);
    (b_from_a, sk_from_b)
}

#[test]
fn one_colluding_partner_cannot_use_a_bare_majority_threshold() {
    // t = 3 of 5 would let the attack collect 3 shares of each secret, enough to unmask u's
    // input: t > n/2 alone is not enough. Such a configuration is refused by every partner.
    let derived = complete(5, 5, Width::W32);
    let bare = RoundConfig {
        threshold: 3,
        ..derived.clone()
    };
    let err = bare.validate().unwrap_err();
    assert!(err.to_string().contains("2t > holders + 1"), "{err}");
    let (keys, roster) = identities(&bare.participants, 7);
    let p = bare.participants[0];
    assert!(
        ClientRound::start(
            bare.clone(),
            p,
            &keys[&p],
            roster,
            &lenient_requirements(&derived),
            &mut partner_rng(7, p),
        )
        .is_err()
    );

    // Planning for one corrupt partner among five gives t = 4: the honest partners see only
    // three signatures on their list and reveal nothing.
    let planned = RoundConfig::new(
        RoundId(42),
        ids(5),
        5,
        Width::W32,
        GraphKind::Complete,
        tolerances(0.0, 0.2),
        2,
    )
    .expect("valid");
    assert_eq!(planned.threshold, 4);
    let (b, sk) = two_list_attack(planned);
    assert!(
        b < 4 && sk < 4,
        "the attack must fail against t = 4: {b} and {sk} shares"
    );
}

/// A five-partner round (t = 4) run to its reveals, with `cheat` applied to them.
fn reveal_with(
    h: &mut Harness,
    cheat: impl Fn(PartnerId, &mut civic_secagg::messages::UnmaskingShares),
) -> Result<civic_secagg::Aggregate, SecAggError> {
    let roster = h.advertise();
    let forwards = h.share_keys(&roster);
    let masked = h.masked_inputs(&forwards);
    let list = h.collect_inputs(masked);
    let signed = h.consistency(&list);
    for (p, client) in h.clients.iter_mut() {
        let mut reveal = client.handle_signed_survivors(&signed).expect("reveals");
        cheat(*p, &mut reveal);
        h.server
            .receive(ClientMessage::UnmaskingShares(reveal))
            .expect("a wrong share is well formed: it is found only against the commitments");
    }
    match h.server.advance()? {
        ServerOutput::Aggregate(a) => Ok(a),
        other => panic!("unexpected {other:?}"),
    }
}

fn flip_self_mask_shares(reveal: &mut civic_secagg::messages::UnmaskingShares) {
    for share in &mut reveal.self_mask_shares {
        share.value[0] ^= 2;
    }
}

#[test]
fn a_wrong_revealed_share_is_named_and_the_round_recovers_from_the_others() {
    let mut h = Harness::new(5, 21);
    assert_eq!(h.config.threshold, 4);
    let cheater = h.config.participants[1];
    let aggregate = reveal_with(&mut h, |p, reveal| {
        if p == cheater {
            flip_self_mask_shares(reveal);
        }
    })
    .expect("four honest holders of every seed remain");
    assert_eq!(
        aggregate.sum,
        h.expected_sum(),
        "the wrong shares were not used"
    );
    let expected: Vec<civic_secagg::Misbehaviour> = h
        .config
        .participants
        .iter()
        .map(|&owner| civic_secagg::Misbehaviour::WrongShare {
            revealer: cheater,
            owner,
            kind: RevealKind::SelfMask,
        })
        .collect();
    assert_eq!(aggregate.misbehaviour, expected);
    let said = aggregate.misbehaviour[0].to_string();
    assert!(
        said.contains(&format!("partner {cheater} revealed a self-mask share")),
        "{said}"
    );
}

#[test]
fn too_many_wrong_shares_abort_the_round_naming_who_sent_them() {
    let mut h = Harness::new(5, 22);
    let cheaters = [h.config.participants[0], h.config.participants[3]];
    let err = reveal_with(&mut h, |p, reveal| {
        if cheaters.contains(&p) {
            flip_self_mask_shares(reveal);
        }
    })
    .expect_err("three valid shares of four needed");
    assert_eq!(err.code(), "secagg.unrecoverable", "{err}");
    let said = err.to_string();
    assert!(
        said.contains("3 valid shares, 4 needed")
            && said.contains(&format!(
                "wrong shares came from partner(s) {}, {}",
                cheaters[0], cheaters[1]
            )),
        "{said}"
    );
    assert_eq!(h.server.phase(), Phase::Aborted);
}

#[test]
fn honest_rounds_name_no_one() {
    let mut h = Harness::new(5, 23);
    let aggregate = reveal_with(&mut h, |_, _| {}).expect("honest");
    assert_eq!(aggregate.sum, h.expected_sum());
    assert!(aggregate.misbehaviour.is_empty());
}

#[test]
fn a_share_dealt_off_the_commitments_is_refuted_by_its_holder_and_the_round_recovers() {
    let mut h = Harness::new(5, 24);
    let (dealer, holder) = (h.config.participants[1], h.config.participants[3]);
    let roster = h.advertise();
    h.clients
        .get_mut(&dealer)
        .expect("dealer")
        .deal_wrong_share_to(holder);
    let forwards = h.share_keys(&roster);
    let masked = h.masked_inputs(&forwards);
    let list = h.collect_inputs(masked);
    let signed = h.consistency(&list);
    let reveal = h.clients.get_mut(&holder).expect("holder");
    let reveal = reveal.handle_signed_survivors(&signed).expect("reveals");
    assert_eq!(reveal.refuted, vec![dealer]);
    assert!(
        reveal.self_mask_shares.iter().all(|s| s.owner != dealer),
        "nothing of the refuted dealer is revealed"
    );
    h.server
        .receive(ClientMessage::UnmaskingShares(reveal))
        .expect("accepted");
    h.clients.remove(&holder);
    let aggregate = h.finish(&signed);
    assert_eq!(aggregate.sum, h.expected_sum());
    assert_eq!(
        aggregate.misbehaviour,
        vec![civic_secagg::Misbehaviour::Refuted {
            accuser: holder,
            dealer
        }]
    );
}

#[test]
fn commitments_are_checked_on_arrival() {
    let mut h = Harness::new(4, 25);
    let p = h.config.participants[0];
    let (_, mut advert) = ClientRound::start(
        h.config.clone(),
        p,
        &h.keys[&p],
        h.roster.clone(),
        &lenient_requirements(&h.config),
        h.rngs.get_mut(&p).expect("rng"),
    )
    .expect("starts");
    // Changed by the coordinator: the signature no longer covers them.
    let mut swapped = advert.clone();
    swapped.self_mask_commitments.swap(0, 1);
    refused(
        &mut h.server,
        ClientMessage::AdvertiseKeys(swapped),
        "secagg.bad_signature",
    );
    // Signed by the partner itself, but one short or not a point: malformed.
    advert.mask_key_commitments.pop();
    advert.signature = h.keys[&p].sign(&civic_secagg::identity::advertise_transcript(
        &advert,
        &h.config.digest(),
    ));
    refused(
        &mut h.server,
        ClientMessage::AdvertiseKeys(advert.clone()),
        "secagg.malformed",
    );
    advert
        .mask_key_commitments
        .push(civic_secagg::commitments::PointBytes([0xff; 32]));
    advert.signature = h.keys[&p].sign(&civic_secagg::identity::advertise_transcript(
        &advert,
        &h.config.digest(),
    ));
    let err = h
        .server
        .receive(ClientMessage::AdvertiseKeys(advert))
        .expect_err("not a point");
    assert!(
        err.to_string()
            .contains("mask-key commitments: share commitment 2 is not a Ristretto255 point"),
        "{err}"
    );
}
