//! The coordinator side of a round (Bonawitz et al. 2017, Fig. 4, "Server").
//!
//! The caller feeds partner messages to [`ServerRound::receive`] as they arrive and calls
//! [`ServerRound::advance`] when a phase's deadline passes (or everyone has answered). Each
//! `advance` closes the phase, checks the quorum, and returns what to send next; after
//! Unmasking it returns the [`Aggregate`]. Masked vectors are summed on arrival, so the
//! coordinator holds one running sum, not n vectors.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::num::NonZeroUsize;

use x25519_dalek::PublicKey;

use crate::client::RevealKind;
use crate::commitments::Commitments;
use crate::error::SecAggError;
use crate::graph::{Graph, Topology};
use crate::identity::{Roster, Signature, advertise_transcript, survivors_transcript};
use crate::kdf::{DerivedKey, pairwise_mask_key};
use crate::messages::{
    AdvertiseKeys, ClientMessage, ConsistencySignature, EncryptedShare, ForwardedShares, KeyRoster,
    MaskedInput, Phase, RevealedShare, ShareKeys, SignedSurvivors, SurvivorList, UnmaskingShares,
};
use crate::prg::{Sign, SignedMask, apply_masks};
use crate::ring::{RingVector, Width, add_words};
use crate::round::{PartnerId, RoundConfig, RoundId};
use crate::shamir::{LagrangeAtZero, SecretScalar, Share, reconstruct};
use crate::share_encryption::CIPHERTEXT_LEN;

/// The result of a successful round: the sum of the survivors' vectors, and who they are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Aggregate {
    /// The round.
    pub round_id: RoundId,
    /// U3: the partners whose vectors are in the sum.
    pub survivors: Vec<PartnerId>,
    /// Σ_{u ∈ U3} x_u over Z_{2^b}; decode with [`RingVector::to_signed`].
    pub sum: RingVector,
    /// Deviations the coordinator detected and worked around (for the audit log).
    pub misbehaviour: Vec<Misbehaviour>,
}

/// A partner's deviation from the protocol, found by checking shares against their dealer's
/// signed commitments (see [`crate::commitments`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Misbehaviour {
    /// `revealer` revealed a share of `owner`'s secret that `owner`'s commitments refute; it
    /// was not used.
    WrongShare {
        /// Who revealed it.
        revealer: PartnerId,
        /// Whose secret it claimed to be a share of.
        owner: PartnerId,
        /// Which secret.
        kind: RevealKind,
    },
    /// `accuser` reported that the shares `dealer` sent it do not match `dealer`'s own
    /// commitments. The shares travelled encrypted between the two, so the coordinator cannot
    /// tell which one lies; several accusers of one dealer point at the dealer.
    Refuted {
        /// Who reported it.
        accuser: PartnerId,
        /// Whose shares it refuted.
        dealer: PartnerId,
    },
}

impl std::fmt::Display for Misbehaviour {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Misbehaviour::WrongShare {
                revealer,
                owner,
                kind,
            } => write!(
                f,
                "partner {revealer} revealed a {} share of partner {owner}'s secret that \
                 partner {owner}'s signed commitments refute",
                kind.name()
            ),
            Misbehaviour::Refuted { accuser, dealer } => write!(
                f,
                "partner {accuser} reports that the shares partner {dealer} dealt it do not \
                 match partner {dealer}'s signed commitments"
            ),
        }
    }
}

/// What validating a message parsed, for taking it without parsing it again.
enum Parsed {
    Nothing,
    Commitments(DealerCommitments),
    Reveals(Reveals),
}

/// One partner's revealed shares, parsed: (owner, share) for self masks and for mask keys,
/// and the dealers whose shares to it failed their commitments.
struct Reveals {
    self_mask: Vec<(PartnerId, SecretScalar)>,
    mask_key: Vec<(PartnerId, SecretScalar)>,
    refuted: Vec<PartnerId>,
}

/// A partner's signed commitments to the polynomials sharing its two secrets.
#[derive(Clone, Debug)]
struct DealerCommitments {
    self_mask: Commitments,
    mask_key: Commitments,
}

/// What the coordinator sends when a phase closes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerOutput {
    /// After AdvertiseKeys: broadcast to every partner in the roster.
    KeyRoster(KeyRoster),
    /// After ShareKeys: each partner gets its own entry.
    ForwardedShares(BTreeMap<PartnerId, ForwardedShares>),
    /// After MaskedInputCollection: broadcast to the survivors.
    SurvivorList(SurvivorList),
    /// After ConsistencyCheck: broadcast to those who signed.
    SignedSurvivors(SignedSurvivors),
    /// After Unmasking: the result.
    Aggregate(Aggregate),
}

/// The coordinator's state machine for one round. `Clone` so that a caller can snapshot it.
#[derive(Clone, Debug)]
pub struct ServerRound {
    config: RoundConfig,
    config_digest: [u8; 32],
    graph: Graph,
    roster: Roster,
    phase: Phase,
    /// U1 with their keys, and their parsed commitments.
    advertised: BTreeMap<PartnerId, AdvertiseKeys>,
    commitments: BTreeMap<PartnerId, DealerCommitments>,
    /// U2, and the shares waiting for each recipient.
    shared: BTreeSet<PartnerId>,
    outbox: BTreeMap<PartnerId, Vec<EncryptedShare>>,
    /// U3 (while collecting), and the running sum of their masked vectors, unreduced.
    masked: BTreeSet<PartnerId>,
    sum: Vec<u64>,
    /// U3 frozen when MaskedInputCollection closes.
    survivors: Vec<PartnerId>,
    /// U4 with their signatures.
    signatures: BTreeMap<PartnerId, Signature>,
    /// U5, and the revealed shares per owner.
    unmasked: BTreeSet<PartnerId>,
    self_mask_shares: BTreeMap<PartnerId, Vec<Share>>,
    mask_key_shares: BTreeMap<PartnerId, Vec<Share>>,
    /// Per dealer, the holders that reported its shares refuted by its commitments.
    refutations: BTreeMap<PartnerId, BTreeSet<PartnerId>>,
    /// Threads the unmasking may use.
    threads: NonZeroUsize,
}

impl ServerRound {
    /// A round waiting for AdvertiseKeys. Every participant needs an identity key in `roster`.
    pub fn new(config: RoundConfig, roster: Roster) -> Result<Self, SecAggError> {
        config.validate()?;
        if let Some(missing) = config.participants.iter().find(|p| !roster.contains_key(p)) {
            return Err(SecAggError::InvalidConfig {
                reason: format!("participant {missing} has no registered identity key"),
            });
        }
        Ok(Self {
            graph: Graph::new(&config),
            config_digest: config.digest(),
            sum: vec![0; config.vector_len],
            config,
            roster,
            phase: Phase::AdvertiseKeys,
            advertised: BTreeMap::new(),
            commitments: BTreeMap::new(),
            shared: BTreeSet::new(),
            outbox: BTreeMap::new(),
            masked: BTreeSet::new(),
            survivors: Vec::new(),
            signatures: BTreeMap::new(),
            unmasked: BTreeSet::new(),
            self_mask_shares: BTreeMap::new(),
            mask_key_shares: BTreeMap::new(),
            refutations: BTreeMap::new(),
            threads: std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN),
        })
    }

    /// Limits the threads the unmasking uses (by default, every core the process may use).
    pub fn set_threads(&mut self, threads: NonZeroUsize) {
        self.threads = threads;
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// The configuration.
    pub fn config(&self) -> &RoundConfig {
        &self.config
    }

    /// Who shares masks and secrets with whom.
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// The partners that have sent this phase's message so far.
    pub fn responded(&self) -> Vec<PartnerId> {
        match self.phase {
            Phase::AdvertiseKeys => self.advertised.keys().copied().collect(),
            Phase::ShareKeys => self.shared.iter().copied().collect(),
            Phase::MaskedInputCollection => self.masked.iter().copied().collect(),
            Phase::ConsistencyCheck => self.signatures.keys().copied().collect(),
            Phase::Unmasking => self.unmasked.iter().copied().collect(),
            Phase::Finished | Phase::Aborted => Vec::new(),
        }
    }

    /// Whether `partner` has sent this phase's message.
    pub fn has_responded(&self, partner: PartnerId) -> bool {
        match self.phase {
            Phase::AdvertiseKeys => self.advertised.contains_key(&partner),
            Phase::ShareKeys => self.shared.contains(&partner),
            Phase::MaskedInputCollection => self.masked.contains(&partner),
            Phase::ConsistencyCheck => self.signatures.contains_key(&partner),
            Phase::Unmasking => self.unmasked.contains(&partner),
            Phase::Finished | Phase::Aborted => false,
        }
    }

    fn round(&self) -> RoundId {
        self.config.round_id
    }

    /// Accepts one partner message for the current phase, or refuses it with nothing changed.
    pub fn receive(&mut self, msg: ClientMessage) -> Result<(), SecAggError> {
        let parsed = self.validate(&msg)?;
        self.take(msg, parsed);
        Ok(())
    }

    /// Whether [`ServerRound::receive`] would accept `msg`, without taking it: a caller that
    /// must store a message before the round takes it checks first, instead of copying the
    /// round.
    pub fn check(&self, msg: &ClientMessage) -> Result<(), SecAggError> {
        self.validate(msg).map(|_| ())
    }

    /// Every check `receive` makes, with what it parsed.
    fn validate(&self, msg: &ClientMessage) -> Result<Parsed, SecAggError> {
        let round = self.round();
        match self.phase {
            Phase::Finished => {
                return Err(SecAggError::RoundClosed {
                    round,
                    state: "finished",
                });
            }
            Phase::Aborted => {
                return Err(SecAggError::RoundClosed {
                    round,
                    state: "aborted",
                });
            }
            _ => {}
        }
        if msg.round_id() != round {
            return Err(SecAggError::WrongRound {
                expected: round,
                got: msg.round_id(),
            });
        }
        if msg.phase() != self.phase {
            return Err(SecAggError::OutOfPhase {
                round,
                current: self.phase,
                got: msg.phase(),
            });
        }
        match msg {
            ClientMessage::AdvertiseKeys(m) => self.check_advertise(m).map(Parsed::Commitments),
            ClientMessage::ShareKeys(m) => self.check_share_keys(m).map(|()| Parsed::Nothing),
            ClientMessage::MaskedInput(m) => self.check_masked_input(m).map(|()| Parsed::Nothing),
            ClientMessage::ConsistencySignature(m) => {
                self.check_signature(m).map(|()| Parsed::Nothing)
            }
            ClientMessage::UnmaskingShares(m) => self.check_unmasking(m).map(Parsed::Reveals),
        }
    }

    /// Takes a validated message into the round.
    fn take(&mut self, msg: ClientMessage, parsed: Parsed) {
        match msg {
            ClientMessage::AdvertiseKeys(m) => {
                if let Parsed::Commitments(c) = parsed {
                    self.commitments.insert(m.sender, c);
                }
                self.advertised.insert(m.sender, m);
            }
            ClientMessage::ShareKeys(m) => {
                for share in m.shares {
                    self.outbox.entry(share.recipient).or_default().push(share);
                }
                self.shared.insert(m.sender);
            }
            ClientMessage::MaskedInput(m) => {
                add_words(&mut self.sum, m.vector.words());
                self.masked.insert(m.sender);
            }
            ClientMessage::ConsistencySignature(m) => {
                self.signatures.insert(m.sender, m.signature);
            }
            ClientMessage::UnmaskingShares(m) => {
                let Parsed::Reveals(Reveals {
                    self_mask,
                    mask_key,
                    refuted,
                }) = parsed
                else {
                    unreachable!("an unmasking message parses to reveals")
                };
                for dealer in refuted {
                    self.refutations.entry(dealer).or_default().insert(m.sender);
                }
                for (owner, value) in self_mask {
                    self.self_mask_shares.entry(owner).or_default().push(Share {
                        holder: m.sender,
                        value,
                    });
                }
                for (owner, value) in mask_key {
                    self.mask_key_shares.entry(owner).or_default().push(Share {
                        holder: m.sender,
                        value,
                    });
                }
                self.unmasked.insert(m.sender);
            }
        }
    }

    fn check_sender(
        &self,
        sender: PartnerId,
        eligible: bool,
        expected: &'static str,
        already: bool,
    ) -> Result<(), SecAggError> {
        if !eligible {
            return Err(SecAggError::UnknownSender {
                round: self.round(),
                partner: sender,
                expected,
            });
        }
        if already {
            return Err(SecAggError::Duplicate {
                round: self.round(),
                partner: sender,
                phase: self.phase,
            });
        }
        Ok(())
    }

    fn malformed(&self, partner: PartnerId, reason: String) -> SecAggError {
        SecAggError::Malformed {
            round: self.round(),
            partner,
            reason,
        }
    }

    fn check_advertise(&self, m: &AdvertiseKeys) -> Result<DealerCommitments, SecAggError> {
        let sender = m.sender;
        self.check_sender(
            sender,
            self.config.is_participant(sender),
            "a participant",
            self.advertised.contains_key(&sender),
        )?;
        let transcript = advertise_transcript(m, &self.config_digest);
        if !self.roster[&sender].verify(&transcript, &m.signature) {
            return Err(SecAggError::BadSignature {
                round: self.round(),
                partner: sender,
                what: "round keys",
            });
        }
        // A low-order key would make every neighbour refuse the key roster: refuse it here,
        // so one partner cannot stall the round for everyone.
        for (what, key) in [
            ("encryption", &m.encryption_public_key),
            ("mask", &m.mask_public_key),
        ] {
            if is_low_order(key) {
                return Err(self.malformed(
                    sender,
                    format!("its {what} public key is a low-order point"),
                ));
            }
        }
        // Checked here, so that malformed commitments cannot make every neighbour refuse the
        // key roster either.
        let t = self.config.threshold;
        let parse = |points: &[_], what: &str| {
            Commitments::from_bytes(points, t)
                .map_err(|reason| self.malformed(sender, format!("{what}: {reason}")))
        };
        Ok(DealerCommitments {
            self_mask: parse(&m.self_mask_commitments, "self-mask commitments")?,
            mask_key: parse(&m.mask_key_commitments, "mask-key commitments")?,
        })
    }

    fn check_share_keys(&self, m: &ShareKeys) -> Result<(), SecAggError> {
        let sender = m.sender;
        self.check_sender(
            sender,
            self.advertised.contains_key(&sender),
            "a partner that advertised keys",
            self.shared.contains(&sender),
        )?;
        // Exactly one share for each neighbour in U1: a missing one would leave that neighbour
        // unable to cancel the pairwise mask, and the sum would be wrong.
        let expected: BTreeSet<PartnerId> = self
            .graph
            .neighbours(sender)
            .into_iter()
            .filter(|v| self.advertised.contains_key(v))
            .collect();
        let mut got = BTreeSet::new();
        for share in &m.shares {
            if share.sender != sender {
                return Err(self.malformed(
                    sender,
                    format!("a share claims to come from partner {}", share.sender),
                ));
            }
            if !expected.contains(&share.recipient) {
                return Err(self.malformed(
                    sender,
                    format!(
                        "a share for partner {}, who is not a neighbour that advertised keys",
                        share.recipient
                    ),
                ));
            }
            if !got.insert(share.recipient) {
                return Err(self.malformed(
                    sender,
                    format!("two shares for partner {}", share.recipient),
                ));
            }
            if share.ciphertext.len() != CIPHERTEXT_LEN {
                return Err(self.malformed(
                    sender,
                    format!(
                        "a share ciphertext of {} bytes (expected {CIPHERTEXT_LEN})",
                        share.ciphertext.len()
                    ),
                ));
            }
        }
        if got != expected {
            let missing: Vec<String> = expected.difference(&got).map(|p| p.to_string()).collect();
            return Err(self.malformed(
                sender,
                format!("no share for neighbour(s) {}", missing.join(", ")),
            ));
        }
        Ok(())
    }

    fn check_masked_input(&self, m: &MaskedInput) -> Result<(), SecAggError> {
        let sender = m.sender;
        self.check_sender(
            sender,
            self.shared.contains(&sender),
            "a partner that shared keys",
            self.masked.contains(&sender),
        )?;
        if m.vector.width() != self.config.width || m.vector.len() != self.config.vector_len {
            return Err(SecAggError::WrongVectorShape {
                round: self.round(),
                partner: sender,
                expected_len: self.config.vector_len,
                got_len: m.vector.len(),
                expected_bits: self.config.width.bits(),
                got_bits: m.vector.width().bits(),
            });
        }
        Ok(())
    }

    fn check_signature(&self, m: &ConsistencySignature) -> Result<(), SecAggError> {
        let sender = m.sender;
        self.check_sender(
            sender,
            self.survivors.binary_search(&sender).is_ok(),
            "in the survivor list",
            self.signatures.contains_key(&sender),
        )?;
        let transcript = survivors_transcript(&self.config_digest, &self.survivors);
        if !self.roster[&sender].verify(&transcript, &m.signature) {
            return Err(SecAggError::BadSignature {
                round: self.round(),
                partner: sender,
                what: "survivor list",
            });
        }
        Ok(())
    }

    fn check_unmasking(&self, m: &UnmaskingShares) -> Result<Reveals, SecAggError> {
        let sender = m.sender;
        self.check_sender(
            sender,
            self.signatures.contains_key(&sender),
            "a partner that confirmed the survivor list",
            self.unmasked.contains(&sender),
        )?;
        // The sender holds shares from its neighbours in U2 and itself; it must reveal the
        // self-mask share of each survivor among them and the mask-key share of each dropout.
        let held = self
            .graph
            .holders(sender)
            .into_iter()
            .filter(|p| self.shared.contains(p));
        let (mut expect_b, mut expect_sk): (BTreeSet<PartnerId>, BTreeSet<PartnerId>) =
            held.partition(|p| self.survivors.binary_search(p).is_ok());
        // A dealer whose shares the sender refutes is named instead of revealed.
        let mut refuted = BTreeSet::new();
        for &dealer in &m.refuted {
            let known = dealer != sender && (expect_b.remove(&dealer) || expect_sk.remove(&dealer));
            if !known || !refuted.insert(dealer) {
                return Err(self.malformed(
                    sender,
                    format!(
                        "it refutes partner {dealer}'s shares, which it was not dealt, or twice"
                    ),
                ));
            }
        }
        Ok(Reveals {
            self_mask: self.parse_reveals(sender, &m.self_mask_shares, &expect_b, "self-mask")?,
            mask_key: self.parse_reveals(sender, &m.mask_key_shares, &expect_sk, "mask-key")?,
            refuted: refuted.into_iter().collect(),
        })
    }

    fn parse_reveals(
        &self,
        sender: PartnerId,
        reveals: &[RevealedShare],
        expected: &BTreeSet<PartnerId>,
        kind: &str,
    ) -> Result<Vec<(PartnerId, SecretScalar)>, SecAggError> {
        let mut out = Vec::with_capacity(reveals.len());
        let mut owners = BTreeSet::new();
        for r in reveals {
            if !expected.contains(&r.owner) || !owners.insert(r.owner) {
                return Err(self.malformed(
                    sender,
                    format!(
                        "an unexpected or repeated {kind} share for partner {}",
                        r.owner
                    ),
                ));
            }
            let value = SecretScalar::from_canonical_bytes(r.value).map_err(|_| {
                self.malformed(
                    sender,
                    format!(
                        "the {kind} share for partner {} is not a canonical scalar",
                        r.owner
                    ),
                )
            })?;
            out.push((r.owner, value));
        }
        if owners.len() != expected.len() {
            let missing: Vec<String> = expected
                .difference(&owners)
                .map(|p| p.to_string())
                .collect();
            return Err(self.malformed(
                sender,
                format!("no {kind} share for partner(s) {}", missing.join(", ")),
            ));
        }
        Ok(out)
    }

    /// Closes the current phase: checks the quorum and returns what to send next.
    ///
    /// Any error from `advance` in an open round aborts it (moves it to `Aborted`, nothing
    /// released): too few survivors, or, at Unmasking, shares that do not reconstruct.
    pub fn advance(&mut self) -> Result<ServerOutput, SecAggError> {
        let round = self.round();
        match self.phase {
            Phase::AdvertiseKeys => {
                let u1: BTreeSet<PartnerId> = self.advertised.keys().copied().collect();
                self.check_quorum(&u1, &u1)?;
                self.phase = Phase::ShareKeys;
                Ok(ServerOutput::KeyRoster(KeyRoster {
                    round_id: round,
                    keys: self.advertised.values().cloned().collect(),
                }))
            }
            Phase::ShareKeys => {
                let u2 = self.shared.clone();
                self.check_quorum(&u2, &u2)?;
                let mut outbox = std::mem::take(&mut self.outbox);
                let forwards = u2
                    .iter()
                    .map(|&v| {
                        let shares = outbox
                            .remove(&v)
                            .unwrap_or_default()
                            .into_iter()
                            .filter(|s| u2.contains(&s.sender))
                            .collect();
                        (
                            v,
                            ForwardedShares {
                                round_id: round,
                                recipient: v,
                                shares,
                            },
                        )
                    })
                    .collect();
                self.phase = Phase::MaskedInputCollection;
                Ok(ServerOutput::ForwardedShares(forwards))
            }
            Phase::MaskedInputCollection => {
                let u3 = self.masked.clone();
                let owners = self.shared.clone();
                self.check_quorum(&u3, &owners)?;
                self.survivors = u3.into_iter().collect();
                self.phase = Phase::ConsistencyCheck;
                Ok(ServerOutput::SurvivorList(SurvivorList {
                    round_id: round,
                    survivors: self.survivors.clone(),
                }))
            }
            Phase::ConsistencyCheck => {
                let u4: BTreeSet<PartnerId> = self.signatures.keys().copied().collect();
                let owners = self.shared.clone();
                self.check_quorum(&u4, &owners)?;
                self.phase = Phase::Unmasking;
                Ok(ServerOutput::SignedSurvivors(SignedSurvivors {
                    round_id: round,
                    survivors: self.survivors.clone(),
                    signatures: self.signatures.iter().map(|(p, s)| (*p, *s)).collect(),
                }))
            }
            Phase::Unmasking => {
                let u5 = self.unmasked.clone();
                let owners = self.shared.clone();
                self.check_quorum(&u5, &owners)?;
                match self.unmask() {
                    Ok((sum, misbehaviour)) => {
                        self.phase = Phase::Finished;
                        Ok(ServerOutput::Aggregate(Aggregate {
                            round_id: round,
                            survivors: self.survivors.clone(),
                            sum,
                            misbehaviour,
                        }))
                    }
                    Err(e) => {
                        self.phase = Phase::Aborted;
                        Err(e)
                    }
                }
            }
            Phase::Finished => Err(SecAggError::RoundClosed {
                round,
                state: "finished",
            }),
            Phase::Aborted => Err(SecAggError::RoundClosed {
                round,
                state: "aborted",
            }),
        }
    }

    /// Aborts unless `present` is a quorum: at least `min_survivors`, and at least t present
    /// holders of the shares of every partner in `owners` (in the complete graph, t overall).
    /// From MaskedInputCollection on, the owners are every partner that shared its secrets:
    /// a survivor's self-mask and a dropout's mask key must both be rebuilt from present
    /// holders, so a dropout whose holders left too is a lost quorum, not a failed unmasking.
    fn check_quorum(
        &mut self,
        present: &BTreeSet<PartnerId>,
        owners: &BTreeSet<PartnerId>,
    ) -> Result<(), SecAggError> {
        let t = self.config.threshold;
        let thinnest = match self.config.topology {
            Topology::Complete => present.len(),
            Topology::Harary { .. } => owners
                .iter()
                .map(|&u| {
                    self.graph
                        .holders(u)
                        .iter()
                        .filter(|h| present.contains(h))
                        .count()
                })
                .min()
                .unwrap_or(0),
        };
        let (survivors, needed) = if present.len() < self.config.min_survivors {
            (present.len(), self.config.min_survivors)
        } else {
            (thinnest, t)
        };
        if survivors < needed {
            let phase = self.phase;
            self.phase = Phase::Aborted;
            return Err(SecAggError::TooFewSurvivors {
                round: self.round(),
                phase,
                survivors,
                needed,
            });
        }
        Ok(())
    }

    /// Recovers the survivors' self-mask seeds and the dropouts' mask keys, checks each against
    /// its dealer's commitments, and removes their masks from the running sum.
    fn unmask(&self) -> Result<(RingVector, Vec<Misbehaviour>), SecAggError> {
        let round = self.round();
        // Each secret from its t lowest holders: in the complete graph one holder set serves
        // every owner; on the sparse graph each owner has its own, and the O(t²) Lagrange
        // coefficients for the distinct sets are computed on every core.
        let dropouts: Vec<PartnerId> = self
            .shared
            .iter()
            .copied()
            .filter(|u| self.survivors.binary_search(u).is_err())
            .collect();
        let self_mask_shares = self
            .survivors
            .iter()
            .map(|&u| self.lowest_holders(u, RevealKind::SelfMask))
            .collect::<Result<Vec<_>, _>>()?;
        let mask_key_shares = dropouts
            .iter()
            .map(|&u| self.lowest_holders(u, RevealKind::MaskKey))
            .collect::<Result<Vec<_>, _>>()?;
        let holder_sets: BTreeSet<Vec<PartnerId>> = self_mask_shares
            .iter()
            .chain(&mask_key_shares)
            .map(|shares| shares.iter().map(|s| s.holder).collect())
            .collect();
        let holder_sets: Vec<Vec<PartnerId>> = holder_sets.into_iter().collect();
        let coefficients = parallel_map(&holder_sets, self.threads, |h| LagrangeAtZero::new(h));
        let mut lagrange: HashMap<&[PartnerId], LagrangeAtZero> = HashMap::new();
        for (holders, c) in holder_sets.iter().zip(coefficients) {
            lagrange.insert(holders, c?);
        }
        let recover = |shares: &[&Share]| -> Result<SecretScalar, SecAggError> {
            let holders: Vec<PartnerId> = shares.iter().map(|s| s.holder).collect();
            lagrange[holders.as_slice()].interpolate(shares.iter().map(|s| &s.value))
        };
        let mut misbehaviour: Vec<Misbehaviour> = self
            .refutations
            .iter()
            .flat_map(|(&dealer, accusers)| {
                accusers
                    .iter()
                    .map(move |&accuser| Misbehaviour::Refuted { accuser, dealer })
            })
            .collect();
        let mut seeds = Vec::with_capacity(self.survivors.len());
        for (&u, shares) in self.survivors.iter().zip(&self_mask_shares) {
            let seed = recover(shares)?;
            seeds.push((
                u,
                self.verified(u, RevealKind::SelfMask, seed, &mut misbehaviour)?,
            ));
        }
        let mut dropped = Vec::new();
        for (&u, shares) in dropouts.iter().zip(&mask_key_shares) {
            let secret = recover(shares)?;
            let secret = self.verified(u, RevealKind::MaskKey, secret, &mut misbehaviour)?;
            // Shares that match the commitments can still open a key the partner does not use,
            // if it dealt one: its pairwise masks could not be removed.
            let public = PublicKey::from(&secret.to_x25519()).to_bytes();
            if public != self.advertised[&u].mask_public_key {
                return Err(SecAggError::Shamir {
                    reason: format!(
                        "round {round}: partner {u}'s mask-key shares match its commitments but \
                         not its advertised mask key: partner {u} dealt a key it does not use"
                    ),
                });
            }
            dropped.push((u, secret));
        }
        let mask_public_keys: BTreeMap<PartnerId, [u8; 32]> = self
            .advertised
            .iter()
            .map(|(p, a)| (*p, a.mask_public_key))
            .collect();
        let mut sum = self.sum.clone();
        remove_masks(
            &mut sum,
            self.config.width,
            round,
            &self.graph,
            &self.survivors,
            &seeds,
            &dropped,
            &mask_public_keys,
            self.threads,
        )?;
        Ok((
            RingVector::from_unreduced(self.config.width, sum),
            misbehaviour,
        ))
    }

    /// The revealed shares of one secret of `owner`.
    fn revealed(&self, owner: PartnerId, kind: RevealKind) -> (&Commitments, &[Share]) {
        let dealt = &self.commitments[&owner];
        let (commitments, shares) = match kind {
            RevealKind::SelfMask => (&dealt.self_mask, self.self_mask_shares.get(&owner)),
            RevealKind::MaskKey => (&dealt.mask_key, self.mask_key_shares.get(&owner)),
        };
        (commitments, shares.map_or(&[], Vec::as_slice))
    }

    /// The shares of one secret from its `t` lowest holders, or why there are too few.
    fn lowest_holders(
        &self,
        owner: PartnerId,
        kind: RevealKind,
    ) -> Result<Vec<&Share>, SecAggError> {
        let t = self.config.threshold;
        let (_, shares) = self.revealed(owner, kind);
        if shares.len() < t {
            return Err(self.unrecoverable(owner, kind, shares.len(), Vec::new()));
        }
        let mut shares: Vec<&Share> = shares.iter().collect();
        shares.sort_by_key(|s| s.holder);
        shares.truncate(t);
        Ok(shares)
    }

    /// `candidate` if it opens `owner`'s commitments (one fixed-base multiplication, the common
    /// case); otherwise the secret rebuilt from the shares the commitments confirm, with each
    /// holder whose share they refute named in `misbehaviour`.
    fn verified(
        &self,
        owner: PartnerId,
        kind: RevealKind,
        candidate: SecretScalar,
        misbehaviour: &mut Vec<Misbehaviour>,
    ) -> Result<SecretScalar, SecAggError> {
        let (commitments, shares) = self.revealed(owner, kind);
        if commitments.opens_to(&candidate) {
            return Ok(candidate);
        }
        let (mut valid, wrong): (Vec<Share>, Vec<Share>) = shares
            .iter()
            .cloned()
            .partition(|s| commitments.verify_share(s));
        let wrong_from: Vec<PartnerId> = wrong.iter().map(|s| s.holder).collect();
        misbehaviour.extend(wrong_from.iter().map(|&revealer| Misbehaviour::WrongShare {
            revealer,
            owner,
            kind,
        }));
        let t = self.config.threshold;
        if valid.len() < t {
            return Err(self.unrecoverable(owner, kind, valid.len(), wrong_from));
        }
        valid.sort_by_key(|s| s.holder);
        // Any t shares that match the commitments interpolate to the committed secret.
        reconstruct(&valid, t)
    }

    fn unrecoverable(
        &self,
        owner: PartnerId,
        kind: RevealKind,
        valid: usize,
        wrong_from: Vec<PartnerId>,
    ) -> SecAggError {
        SecAggError::Unrecoverable {
            round: self.round(),
            owner,
            kind: kind.name(),
            valid,
            needed: self.config.threshold,
            wrong_from,
            refuted_by: self
                .refutations
                .get(&owner)
                .map(|a| a.iter().copied().collect())
                .unwrap_or_default(),
        }
    }
}

/// The part of the key roster `partner` uses: its own entry and its neighbours'.
///
/// Why that is enough (SecAgg+, Bell et al., CCS 2020): a partner agrees pairwise masks and
/// encrypts shares only with its neighbours, and every quorum it checks counts only its
/// neighbours and itself, so no other entry changes anything it sends. Relaying every entry
/// would cost each partner O(n) bytes and signature checks and protect nothing. Leaving a
/// neighbour's entry out is the same as declaring that neighbour an AdvertiseKeys dropout,
/// which a coordinator can always do: the partner counts one holder fewer and refuses below
/// t. A partner missing its own entry refuses. On the complete graph this is the whole
/// roster.
pub fn neighbourhood_roster(roster: &KeyRoster, graph: &Graph, partner: PartnerId) -> KeyRoster {
    KeyRoster {
        round_id: roster.round_id,
        keys: roster
            .keys
            .iter()
            .filter(|k| k.sender == partner || graph.are_neighbours(partner, k.sender))
            .cloned()
            .collect(),
    }
}

/// The part of the signed survivor list `partner` uses: the whole list (each signature
/// covers all of it) and the signatures of its holders, its neighbours and itself.
///
/// Why that is enough: a partner reveals only after t of its own holders signed the same
/// list, and no other signature counts towards that. What stops a coordinator from showing
/// two lists to two groups is the threshold over each owner's k + 1 holders (2t > k + 1 + c,
/// see [`crate::graph::derive_topology`]), not signatures from beyond the neighbourhood.
pub fn neighbourhood_signatures(
    signed: &SignedSurvivors,
    graph: &Graph,
    partner: PartnerId,
) -> SignedSurvivors {
    SignedSurvivors {
        round_id: signed.round_id,
        survivors: signed.survivors.clone(),
        signatures: signed
            .signatures
            .iter()
            .filter(|(p, _)| *p == partner || graph.are_neighbours(partner, *p))
            .copied()
            .collect(),
    }
}

/// Whether an X25519 public key is one of the low-order points, which give every secret the
/// same (all-zero) shared secret. Clamping multiplies by 8, which sends exactly those points
/// to zero, so any fixed secret tells them apart.
fn is_low_order(public: &[u8; 32]) -> bool {
    x25519_dalek::x25519([1; 32], *public) == [0; 32]
}

/// Removes masks from a running sum: each survivor's self mask, and for each partner that
/// dropped after sharing keys, the pairwise masks its surviving neighbours added for it.
///
/// This is the coordinator's bulk work: one mask expansion per survivor plus one key
/// agreement and one expansion per edge between a dropout and a survivor. Both run on up to
/// `threads` threads: the key agreements split by edge, the expansions by cell range (see
/// [`apply_masks`]); the result does not depend on `threads`.
#[allow(clippy::too_many_arguments)]
pub fn remove_masks(
    sum: &mut [u64],
    width: Width,
    round: RoundId,
    graph: &Graph,
    survivors: &[PartnerId],
    self_mask_seeds: &[(PartnerId, SecretScalar)],
    dropped_mask_keys: &[(PartnerId, SecretScalar)],
    mask_public_keys: &BTreeMap<PartnerId, [u8; 32]>,
    threads: NonZeroUsize,
) -> Result<(), SecAggError> {
    #[cfg(feature = "bench-unmasked")]
    if crate::baseline::masking_off() {
        return Ok(());
    }
    let mut edges = Vec::new();
    for (u, key) in dropped_mask_keys {
        for v in graph.neighbours(*u) {
            if survivors.binary_search(&v).is_err() {
                continue;
            }
            let Some(public) = mask_public_keys.get(&v) else {
                return Err(SecAggError::InvalidConfig {
                    reason: format!("round {round}: no mask public key for survivor {v}"),
                });
            };
            edges.push((*u, key, v, *public));
        }
    }
    let pair_keys = parallel_map(&edges, threads, |(u, key, v, public)| {
        let shared = key.to_x25519().diffie_hellman(&PublicKey::from(*public));
        let pair_key = pairwise_mask_key(shared.as_bytes(), round, *u, *v);
        // v added +PRG(s_uv) if v < u and −PRG(s_uv) if v > u; undo exactly that.
        (pair_key, if v < u { Sign::Subtract } else { Sign::Add })
    });
    let self_keys: Vec<DerivedKey> = self_mask_seeds
        .iter()
        .map(|(u, seed)| seed.self_mask_key(round, *u))
        .collect();
    let masks: Vec<SignedMask<'_>> = self_keys
        .iter()
        .map(|k| (k, Sign::Subtract))
        .chain(pair_keys.iter().map(|(k, sign)| (k, *sign)))
        .collect();
    apply_masks(sum, &masks, width, threads);
    Ok(())
}

/// `f` over `items`, in order, on up to `threads` threads.
fn parallel_map<T: Sync, U: Send>(
    items: &[T],
    threads: NonZeroUsize,
    f: impl Fn(&T) -> U + Sync,
) -> Vec<U> {
    let per_thread = items.len().div_ceil(threads.get()).max(1);
    if items.len() <= per_thread {
        return items.iter().map(&f).collect();
    }
    std::thread::scope(|scope| {
        let f = &f;
        let parts: Vec<_> = items
            .chunks(per_thread)
            .map(|chunk| scope.spawn(move || chunk.iter().map(f).collect::<Vec<U>>()))
            .collect();
        parts
            .into_iter()
            .flat_map(|part| part.join().expect("a key agreement does not panic"))
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::{GraphKind, Tolerances};
    use crate::identity::Signature;
    use crate::ring::Width;

    #[test]
    fn a_partners_view_holds_exactly_itself_and_its_neighbours() {
        let participants: Vec<PartnerId> = (0..200).map(PartnerId).collect();
        let tolerances = Tolerances {
            max_dropout_rate: 0.1,
            max_corrupt_fraction: 0.0,
        };
        for kind in [GraphKind::Sparse, GraphKind::Complete] {
            let config = RoundConfig::new(
                RoundId(3),
                participants.clone(),
                4,
                Width::W32,
                kind,
                tolerances,
                2,
            )
            .unwrap();
            let graph = Graph::new(&config);
            let entry = |p: PartnerId| AdvertiseKeys {
                round_id: RoundId(3),
                sender: p,
                encryption_public_key: [1; 32],
                mask_public_key: [2; 32],
                self_mask_commitments: Vec::new(),
                mask_key_commitments: Vec::new(),
                signature: Signature([0; 64]),
            };
            let roster = KeyRoster {
                round_id: RoundId(3),
                keys: participants.iter().map(|&p| entry(p)).collect(),
            };
            let signed = SignedSurvivors {
                round_id: RoundId(3),
                survivors: participants.clone(),
                signatures: participants
                    .iter()
                    .map(|&p| (p, Signature([0; 64])))
                    .collect(),
            };
            for p in [PartnerId(0), PartnerId(77), PartnerId(199)] {
                let holders = graph.holders(p);
                let keys: Vec<PartnerId> = neighbourhood_roster(&roster, &graph, p)
                    .keys
                    .iter()
                    .map(|k| k.sender)
                    .collect();
                assert_eq!(keys, holders, "{kind:?}, partner {p}");
                let view = neighbourhood_signatures(&signed, &graph, p);
                let signers: Vec<PartnerId> = view.signatures.iter().map(|(s, _)| *s).collect();
                assert_eq!(signers, holders, "{kind:?}, partner {p}");
                assert_eq!(view.survivors, participants, "the list itself is whole");
            }
            if kind == GraphKind::Sparse {
                assert!(
                    graph.holders(PartnerId(0)).len() < 100,
                    "a sparse view is small"
                );
            }
        }
    }
}
