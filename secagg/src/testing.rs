//! An in-memory round for tests and benches (feature `test-util`): real cryptography, no
//! transport, with dropouts injected at any phase. Partners get what the coordinator relays
//! to them: on the sparse graph, their neighbourhood of the key roster and the signatures.

use std::collections::BTreeMap;

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

use crate::client::ClientRound;
use crate::error::SecAggError;
use crate::graph::Tolerances;
use crate::identity::{IdentityKey, Roster};
use crate::messages::{ClientMessage, MaskedInput, Phase};
use crate::ring::RingVector;
use crate::round::{PartnerId, Requirements, RoundConfig};
use crate::server::{
    Aggregate, ServerOutput, ServerRound, neighbourhood_roster, neighbourhood_signatures,
};

/// Identity keys for `participants`, derived from `seed`, and the roster of their public keys.
pub fn identities(
    participants: &[PartnerId],
    seed: u64,
) -> (BTreeMap<PartnerId, IdentityKey>, Roster) {
    let keys: BTreeMap<PartnerId, IdentityKey> = participants
        .iter()
        .map(|&p| (p, IdentityKey::generate(&mut partner_rng(seed ^ 0x1d, p))))
        .collect();
    let roster = keys.iter().map(|(p, k)| (*p, k.public())).collect();
    (keys, roster)
}

/// A deterministic per-partner RNG for simulations (never for production secrets).
pub fn partner_rng(seed: u64, partner: PartnerId) -> ChaCha20Rng {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..12].copy_from_slice(&partner.0.to_le_bytes());
    key[12] = 1;
    ChaCha20Rng::from_seed(key)
}

/// Requirements every simulated partner holds: no corruption or dropouts to plan for beyond
/// the configuration's own survivor floor, so any configuration that passes
/// [`RoundConfig::validate`] and keeps a sparse ring uncuttable is accepted.
pub fn lenient_requirements(config: &RoundConfig) -> Requirements {
    Requirements {
        tolerances: Tolerances {
            max_dropout_rate: 0.0,
            max_corrupt_fraction: 0.0,
        },
        min_survivors: config.min_survivors,
        min_colluders: 1,
    }
}

/// Snapshots of the coordinator at the two points a benchmark times.
#[derive(Clone, Debug)]
pub struct RoundCapture {
    /// The coordinator as MaskedInputCollection opens, before any masked vector arrives.
    pub before_masked_inputs: ServerRound,
    /// The masked vectors it then received, in order.
    pub masked_inputs: Vec<MaskedInput>,
    /// The coordinator with every reveal received, before the final `advance` unmasks.
    pub before_unmask: ServerRound,
}

/// [`run_round_capturing`] without the snapshots.
pub fn run_round(
    config: &RoundConfig,
    inputs: &BTreeMap<PartnerId, RingVector>,
    drop_at: &BTreeMap<PartnerId, Phase>,
    seed: u64,
) -> Result<Aggregate, SecAggError> {
    run_round_capturing(config, inputs, drop_at, seed).map(|(aggregate, _)| aggregate)
}

/// Runs a whole round. A partner listed in `drop_at` goes silent from that phase on: it does
/// not send that phase's message or any later one. A partner that refuses to go on because
/// too few peers are left (as a real agent would) also goes silent.
///
/// Returns the aggregate and the coordinator's snapshots, or the coordinator's abort.
pub fn run_round_capturing(
    config: &RoundConfig,
    inputs: &BTreeMap<PartnerId, RingVector>,
    drop_at: &BTreeMap<PartnerId, Phase>,
    seed: u64,
) -> Result<(Aggregate, RoundCapture), SecAggError> {
    let (keys, roster) = identities(&config.participants, seed);
    let mut server = ServerRound::new(config.clone(), roster.clone())?;
    let active = |p: PartnerId, phase: Phase| {
        drop_at
            .get(&p)
            .is_none_or(|&d| phase_index(phase) < phase_index(d))
    };
    let mut rngs: BTreeMap<PartnerId, ChaCha20Rng> = config
        .participants
        .iter()
        .map(|&p| (p, partner_rng(seed, p)))
        .collect();

    let mut clients = BTreeMap::new();
    for &p in &config.participants {
        let rng = rngs.get_mut(&p).expect("every participant has an rng");
        let (client, advert) = ClientRound::start(
            config.clone(),
            p,
            &keys[&p],
            roster.clone(),
            &lenient_requirements(config),
            rng,
        )?;
        if active(p, Phase::AdvertiseKeys) {
            server.receive(ClientMessage::AdvertiseKeys(advert))?;
            clients.insert(p, client);
        }
    }
    let ServerOutput::KeyRoster(key_roster) = server.advance()? else {
        unreachable!("AdvertiseKeys closes with the key roster")
    };

    let mut next = BTreeMap::new();
    for (p, client) in clients.iter_mut() {
        if !active(*p, Phase::ShareKeys) {
            continue;
        }
        let rng = rngs.get_mut(p).expect("every participant has an rng");
        // Each partner gets what the coordinator relays to it: its neighbourhood's keys.
        let view = neighbourhood_roster(&key_roster, server.graph(), *p);
        if let Some(msg) = quit_if_too_few(client.handle_key_roster(&view, rng))? {
            server.receive(ClientMessage::ShareKeys(msg))?;
            next.insert(*p, ());
        }
    }
    clients.retain(|p, _| next.contains_key(p));
    let ServerOutput::ForwardedShares(mut forwards) = server.advance()? else {
        unreachable!("ShareKeys closes with forwarded shares")
    };

    next.clear();
    let before_masked_inputs = server.clone();
    let mut masked_inputs = Vec::new();
    for (p, client) in clients.iter_mut() {
        let Some(shares) = forwards.remove(p) else {
            continue;
        };
        if !active(*p, Phase::MaskedInputCollection) {
            continue;
        }
        if let Some(msg) = quit_if_too_few(client.handle_forwarded_shares(&shares, &inputs[p]))? {
            masked_inputs.push(msg.clone());
            server.receive(ClientMessage::MaskedInput(msg))?;
            next.insert(*p, ());
        }
    }
    clients.retain(|p, _| next.contains_key(p));
    let ServerOutput::SurvivorList(survivors) = server.advance()? else {
        unreachable!("MaskedInputCollection closes with the survivor list")
    };

    next.clear();
    for (p, client) in clients.iter_mut() {
        if !active(*p, Phase::ConsistencyCheck) {
            continue;
        }
        if let Some(msg) = quit_if_too_few(client.handle_survivor_list(&survivors, &keys[p]))? {
            server.receive(ClientMessage::ConsistencySignature(msg))?;
            next.insert(*p, ());
        }
    }
    clients.retain(|p, _| next.contains_key(p));
    let ServerOutput::SignedSurvivors(signed) = server.advance()? else {
        unreachable!("ConsistencyCheck closes with the signed survivor list")
    };

    for (p, client) in clients.iter_mut() {
        if !active(*p, Phase::Unmasking) {
            continue;
        }
        let view = neighbourhood_signatures(&signed, server.graph(), *p);
        if let Some(msg) = quit_if_too_few(client.handle_signed_survivors(&view))? {
            server.receive(ClientMessage::UnmaskingShares(msg))?;
        }
    }
    let capture = RoundCapture {
        before_masked_inputs,
        masked_inputs,
        before_unmask: server.clone(),
    };
    match server.advance()? {
        ServerOutput::Aggregate(aggregate) => Ok((aggregate, capture)),
        _ => unreachable!("Unmasking closes with the aggregate"),
    }
}

fn quit_if_too_few<T>(result: Result<T, SecAggError>) -> Result<Option<T>, SecAggError> {
    match result {
        Ok(v) => Ok(Some(v)),
        Err(SecAggError::TooFewSurvivors { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The order of the five protocol phases (Finished and Aborted come after all of them).
pub fn phase_index(phase: Phase) -> usize {
    match phase {
        Phase::AdvertiseKeys => 0,
        Phase::ShareKeys => 1,
        Phase::MaskedInputCollection => 2,
        Phase::ConsistencyCheck => 3,
        Phase::Unmasking => 4,
        Phase::Finished | Phase::Aborted => 5,
    }
}
