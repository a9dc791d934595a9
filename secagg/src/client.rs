//! The partner side of a round (Bonawitz et al. 2017, Fig. 4, "User").
//!
//! ```text
//! start                    -> AdvertiseKeys
//! handle_key_roster        -> ShareKeys
//! handle_forwarded_shares  -> MaskedInput
//! handle_survivor_list     -> ConsistencySignature
//! handle_signed_survivors  -> UnmaskingShares
//! ```
//!
//! Each method checks its message completely and only then moves to the next phase, so an
//! error leaves the round as it was. The partner never reveals both the self-mask share and
//! the mask-key share of one peer: [`RevealLog`] records what was revealed, the agent
//! persists it, and [`ClientRound::restore_reveal_log`] restores it after a restart.

use std::collections::{BTreeMap, BTreeSet};
use std::num::NonZeroUsize;

use rand_core::CryptoRng;
use serde::{Deserialize, Serialize};
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

use crate::commitments::{Commitments, Dealing, PointBytes, check_count, verify_batch};
use crate::error::SecAggError;
use crate::graph::Graph;
use crate::identity::{IdentityKey, Roster, advertise_transcript, survivors_transcript};
use crate::kdf::{DerivedKey, pairwise_mask_key, share_encryption_key};
use crate::messages::{
    AdvertiseKeys, ConsistencySignature, EncryptedShare, ForwardedShares, KeyRoster, MaskedInput,
    Phase, RevealedShare, ShareKeys, SignedSurvivors, SurvivorList, UnmaskingShares,
};
use crate::prg::{Sign, SignedMask, apply_masks};
use crate::ring::RingVector;
use crate::round::{PartnerId, Requirements, RoundConfig, RoundId};
use crate::shamir::{SecretScalar, Share};
use crate::share_encryption::{SharePair, open, seal};

/// Which of a peer's two shares was revealed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RevealKind {
    /// The share of the peer's self-mask seed b_v (the peer survived).
    SelfMask,
    /// The share of the peer's mask secret key s_v^SK (the peer dropped).
    MaskKey,
}

impl RevealKind {
    /// "self-mask" or "mask-key".
    pub fn name(self) -> &'static str {
        match self {
            RevealKind::SelfMask => "self-mask",
            RevealKind::MaskKey => "mask-key",
        }
    }
}

/// What this partner has revealed in one round, per peer. Persist it before sending the
/// reveals; restore it with [`ClientRound::restore_reveal_log`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevealLog {
    round_id: RoundId,
    revealed: BTreeMap<PartnerId, RevealKind>,
}

impl RevealLog {
    /// An empty log for one round.
    pub fn new(round_id: RoundId) -> Self {
        Self {
            round_id,
            revealed: BTreeMap::new(),
        }
    }

    /// The round the log belongs to.
    pub fn round_id(&self) -> RoundId {
        self.round_id
    }

    /// What was revealed for `owner`, if anything.
    pub fn get(&self, owner: PartnerId) -> Option<RevealKind> {
        self.revealed.get(&owner).copied()
    }

    /// All reveals.
    pub fn iter(&self) -> impl Iterator<Item = (PartnerId, RevealKind)> + '_ {
        self.revealed.iter().map(|(p, k)| (*p, *k))
    }

    fn check(
        &self,
        round: RoundId,
        owner: PartnerId,
        requested: RevealKind,
    ) -> Result<(), SecAggError> {
        match self.get(owner) {
            Some(already) if already != requested => Err(SecAggError::ConflictingReveal {
                round,
                owner,
                requested: requested.name(),
                already: already.name(),
            }),
            _ => Ok(()),
        }
    }
}

/// This partner's secrets for one round. Zeroized on drop (each field zeroizes itself), which
/// happens as soon as the masked input is sent: nothing later needs them.
struct RoundSecrets {
    /// c_u^SK: decrypts the shares peers send us.
    encryption: StaticSecret,
    /// s_u^SK as a scalar (Shamir-shared) and as the X25519 key it encodes.
    mask_scalar: SecretScalar,
    mask: StaticSecret,
    /// b_u: seeds the self mask.
    self_mask_seed: SecretScalar,
    /// The polynomials sharing b_u and s_u^SK, committed to in the advertisement.
    self_mask_dealing: Dealing,
    mask_dealing: Dealing,
}

struct PeerKeys {
    encryption: PublicKey,
}

/// A peer's signed commitments to its two sharing polynomials, as advertised. Only the
/// polynomial whose share this partner reveals is ever parsed and checked: one of the two.
struct PeerCommitments {
    self_mask: Vec<PointBytes>,
    mask_key: Vec<PointBytes>,
}

/// Where a partner is in the round, with what it has learnt so far.
enum ClientState {
    Advertised {
        secrets: RoundSecrets,
    },
    SharedKeys {
        secrets: RoundSecrets,
        peers: BTreeMap<PartnerId, PeerKeys>,
        pairwise: BTreeMap<PartnerId, DerivedKey>,
        own_shares: SharePair,
    },
    SentMaskedInput {
        held: BTreeMap<PartnerId, SharePair>,
    },
    SignedSurvivors {
        held: BTreeMap<PartnerId, SharePair>,
        survivors: Vec<PartnerId>,
    },
    Finished,
}

/// One partner's state machine for one round.
pub struct ClientRound {
    config: RoundConfig,
    config_digest: [u8; 32],
    graph: Graph,
    me: PartnerId,
    roster: Roster,
    state: ClientState,
    reveals: RevealLog,
    /// Ed25519 signatures checked so far (advertisements and survivor-list signatures).
    signatures_verified: usize,
    /// The neighbours' commitments, from the key roster.
    peer_commitments: BTreeMap<PartnerId, PeerCommitments>,
    /// Keys the weights of the batched share check: random, and unknown to every dealer.
    batch_key: Zeroizing<[u8; 32]>,
    /// Tests only: a neighbour to deal a share off this partner's committed polynomial.
    #[cfg(any(test, feature = "test-util"))]
    wrong_share_for: Option<PartnerId>,
}

impl std::fmt::Debug for ClientRound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientRound")
            .field("round", &self.config.round_id)
            .field("me", &self.me)
            .field("phase", &self.phase())
            .finish_non_exhaustive()
    }
}

/// Masks a vector: `input + PRG(self_mask) ± Σ PRG(pairwise)`, in the input's ring.
///
/// This is the bulk of a partner's work; its keys come from [`crate::kdf`].
pub fn mask_vector<'a>(
    input: &RingVector,
    self_mask: &'a DerivedKey,
    pairwise: impl IntoIterator<Item = (&'a DerivedKey, Sign)>,
) -> RingVector {
    #[cfg(feature = "bench-unmasked")]
    if crate::baseline::masking_off() {
        return input.clone();
    }
    let width = input.width();
    let mut words = input.words().to_vec();
    let masks: Vec<SignedMask<'_>> = std::iter::once((self_mask, Sign::Add))
        .chain(pairwise)
        .collect();
    // One thread: a partner's agent masks one vector per round, beside its other work.
    apply_masks(&mut words, &masks, width, NonZeroUsize::MIN);
    RingVector::from_unreduced(width, words)
}

impl ClientRound {
    /// Checks the configuration against this partner's own requirements and its place in
    /// it, makes the round's key pairs and returns the signed advertisement.
    ///
    /// A partner takes part in a round at most once: an agent that restarts must not start
    /// a round again after sending its masked input (running one input through two rounds
    /// with different survivors would expose it). It persists the round ids it has sent
    /// inputs for, and the [`RevealLog`].
    pub fn start<R: CryptoRng + ?Sized>(
        config: RoundConfig,
        me: PartnerId,
        identity: &IdentityKey,
        roster: Roster,
        required: &Requirements,
        rng: &mut R,
    ) -> Result<(Self, AdvertiseKeys), SecAggError> {
        config.check_requirements(required)?;
        if !config.is_participant(me) {
            return Err(SecAggError::InvalidConfig {
                reason: format!(
                    "partner {me} is not a participant of round {}",
                    config.round_id
                ),
            });
        }
        if let Some(missing) = config.participants.iter().find(|p| !roster.contains_key(p)) {
            return Err(SecAggError::InvalidConfig {
                reason: format!("the roster has no identity key for participant {missing}"),
            });
        }
        if roster.get(&me) != Some(&identity.public()) {
            return Err(SecAggError::InvalidConfig {
                reason: format!(
                    "the roster's identity key for partner {me} is not this partner's key"
                ),
            });
        }
        let mut seed = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(seed.as_mut());
        let mut batch_key = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(batch_key.as_mut());
        let encryption = StaticSecret::from(*seed);
        let mask_scalar = SecretScalar::random(rng);
        let mask = mask_scalar.to_x25519();
        let self_mask_seed = SecretScalar::random(rng);
        let t = config.threshold;
        let secrets = RoundSecrets {
            encryption,
            mask,
            self_mask_dealing: Dealing::new(&self_mask_seed, t, rng),
            mask_dealing: Dealing::new(&mask_scalar, t, rng),
            mask_scalar,
            self_mask_seed,
        };
        let round_id = config.round_id;
        let config_digest = config.digest();
        let mut advert = AdvertiseKeys {
            round_id,
            sender: me,
            encryption_public_key: PublicKey::from(&secrets.encryption).to_bytes(),
            mask_public_key: PublicKey::from(&secrets.mask).to_bytes(),
            self_mask_commitments: secrets.self_mask_dealing.commitments.to_bytes(),
            mask_key_commitments: secrets.mask_dealing.commitments.to_bytes(),
            signature: crate::identity::Signature([0; 64]),
        };
        advert.signature = identity.sign(&advertise_transcript(&advert, &config_digest));
        let client = Self {
            graph: Graph::new(&config),
            config,
            config_digest,
            me,
            roster,
            state: ClientState::Advertised { secrets },
            reveals: RevealLog::new(round_id),
            signatures_verified: 0,
            peer_commitments: BTreeMap::new(),
            batch_key,
            #[cfg(any(test, feature = "test-util"))]
            wrong_share_for: None,
        };
        Ok((client, advert))
    }

    /// Restores what this partner revealed in this round before a restart, so that a replayed
    /// request can never extract the other share of the same peer. A log of another round is
    /// refused and changes nothing.
    pub fn restore_reveal_log(&mut self, log: RevealLog) -> Result<(), SecAggError> {
        if log.round_id != self.round() {
            return Err(SecAggError::WrongRound {
                expected: self.round(),
                got: log.round_id,
            });
        }
        self.reveals = log;
        Ok(())
    }

    /// Tests only: makes this partner deal `recipient` a self-mask share that its own
    /// commitments refute, as a cheating dealer would.
    #[cfg(any(test, feature = "test-util"))]
    pub fn deal_wrong_share_to(&mut self, recipient: PartnerId) {
        self.wrong_share_for = Some(recipient);
    }

    /// What this partner has revealed so far (persist it).
    pub fn reveal_log(&self) -> &RevealLog {
        &self.reveals
    }

    /// The last phase this partner completed.
    pub fn phase(&self) -> Phase {
        match self.state {
            ClientState::Advertised { .. } => Phase::AdvertiseKeys,
            ClientState::SharedKeys { .. } => Phase::ShareKeys,
            ClientState::SentMaskedInput { .. } => Phase::MaskedInputCollection,
            ClientState::SignedSurvivors { .. } => Phase::ConsistencyCheck,
            ClientState::Finished => Phase::Finished,
        }
    }

    /// How many signatures this partner has checked in the round: its own and its
    /// neighbours' advertisements, and its holders' survivor-list signatures. On the sparse
    /// graph this grows with the degree, not with the number of partners.
    pub fn signatures_verified(&self) -> usize {
        self.signatures_verified
    }

    /// This partner.
    pub fn partner(&self) -> PartnerId {
        self.me
    }

    fn round(&self) -> RoundId {
        self.config.round_id
    }

    fn expect(&self, round_id: RoundId, completed: Phase, next: Phase) -> Result<(), SecAggError> {
        if round_id != self.round() {
            return Err(SecAggError::WrongRound {
                expected: self.round(),
                got: round_id,
            });
        }
        if self.phase() != completed {
            return Err(SecAggError::OutOfPhase {
                round: self.round(),
                current: self.phase(),
                got: next,
            });
        }
        Ok(())
    }

    fn inconsistent(&self, reason: String) -> SecAggError {
        SecAggError::InconsistentCoordinator {
            round: self.round(),
            reason,
        }
    }

    fn quorum(&self, present: usize, phase: Phase) -> Result<(), SecAggError> {
        let needed = self.config.threshold;
        if present < needed {
            return Err(SecAggError::TooFewSurvivors {
                round: self.round(),
                phase,
                survivors: present,
                needed,
            });
        }
        Ok(())
    }

    /// The owners whose share this partner is about to reveal that their signed commitments
    /// refute (or whose commitments are not points): all checked at once, and one at a time
    /// only if that fails. Its own shares are not checked.
    fn refuted(&self, to_reveal: &[(PartnerId, RevealKind, &SecretScalar)]) -> BTreeSet<PartnerId> {
        let mut refuted = BTreeSet::new();
        let mut parsed = Vec::with_capacity(to_reveal.len());
        for &(owner, kind, value) in to_reveal.iter().filter(|(o, _, _)| *o != self.me) {
            let points = self.peer_commitments.get(&owner).map(|c| match kind {
                RevealKind::SelfMask => &c.self_mask,
                RevealKind::MaskKey => &c.mask_key,
            });
            match points.map(|p| Commitments::from_bytes(p, self.config.threshold)) {
                Some(Ok(commitments)) => parsed.push((owner, commitments, value)),
                _ => {
                    refuted.insert(owner);
                }
            }
        }
        let batch: Vec<(&Commitments, &SecretScalar)> =
            parsed.iter().map(|(_, c, v)| (c, *v)).collect();
        if !verify_batch(self.me, &batch, &self.batch_key) {
            for (owner, commitments, value) in &parsed {
                let share = Share {
                    holder: self.me,
                    value: (*value).clone(),
                };
                if !commitments.verify_share(&share) {
                    refuted.insert(*owner);
                }
            }
        }
        refuted
    }

    /// ShareKeys: checks every advertised key's signature, Shamir-shares b_u and s_u^SK among
    /// this partner's neighbours and itself, and encrypts each neighbour's shares to it.
    pub fn handle_key_roster<R: CryptoRng + ?Sized>(
        &mut self,
        msg: &KeyRoster,
        rng: &mut R,
    ) -> Result<ShareKeys, SecAggError> {
        let round = self.round();
        self.expect(msg.round_id, Phase::AdvertiseKeys, Phase::ShareKeys)?;
        let ClientState::Advertised { secrets } = &self.state else {
            unreachable!("phase AdvertiseKeys is the Advertised state");
        };
        let mut seen = BTreeSet::new();
        let mut peers = BTreeMap::new();
        let mut commitments = BTreeMap::new();
        let mut pairwise = BTreeMap::new();
        let mut saw_me = false;
        for entry in &msg.keys {
            if entry.round_id != round {
                return Err(SecAggError::WrongRound {
                    expected: round,
                    got: entry.round_id,
                });
            }
            let sender = entry.sender;
            let Some(identity) = self
                .roster
                .get(&sender)
                .filter(|_| self.config.is_participant(sender))
            else {
                return Err(SecAggError::UnknownSender {
                    round,
                    partner: sender,
                    expected: "a participant",
                });
            };
            if !seen.insert(sender) {
                return Err(SecAggError::Duplicate {
                    round,
                    partner: sender,
                    phase: Phase::AdvertiseKeys,
                });
            }
            // Only its own and its neighbours' keys are used (see `neighbourhood_roster` in
            // the server): any other entry is skipped unchecked.
            if sender != self.me && !self.graph.are_neighbours(self.me, sender) {
                continue;
            }
            self.signatures_verified += 1;
            if !identity.verify(
                &advertise_transcript(entry, &self.config_digest),
                &entry.signature,
            ) {
                return Err(SecAggError::BadSignature {
                    round,
                    partner: sender,
                    what: "round keys",
                });
            }
            if sender == self.me {
                let mine = (
                    PublicKey::from(&secrets.encryption).to_bytes(),
                    PublicKey::from(&secrets.mask).to_bytes(),
                    secrets.self_mask_dealing.commitments.to_bytes(),
                    secrets.mask_dealing.commitments.to_bytes(),
                );
                let theirs = (
                    entry.encryption_public_key,
                    entry.mask_public_key,
                    entry.self_mask_commitments.clone(),
                    entry.mask_key_commitments.clone(),
                );
                if theirs != mine {
                    return Err(self.inconsistent(
                        "the key roster carries keys for this partner that it did not advertise"
                            .into(),
                    ));
                }
                saw_me = true;
            } else if self.graph.are_neighbours(self.me, sender) {
                let shared = secrets
                    .mask
                    .diffie_hellman(&PublicKey::from(entry.mask_public_key));
                if !shared.was_contributory() {
                    return Err(SecAggError::Malformed {
                        round,
                        partner: sender,
                        reason: "its mask public key is a low-order point".into(),
                    });
                }
                pairwise.insert(
                    sender,
                    pairwise_mask_key(shared.as_bytes(), round, self.me, sender),
                );
                for points in [&entry.self_mask_commitments, &entry.mask_key_commitments] {
                    check_count(points, self.config.threshold).map_err(|reason| {
                        SecAggError::Malformed {
                            round,
                            partner: sender,
                            reason,
                        }
                    })?;
                }
                peers.insert(
                    sender,
                    PeerKeys {
                        encryption: PublicKey::from(entry.encryption_public_key),
                    },
                );
                commitments.insert(
                    sender,
                    PeerCommitments {
                        self_mask: entry.self_mask_commitments.clone(),
                        mask_key: entry.mask_key_commitments.clone(),
                    },
                );
            }
        }
        if !saw_me {
            return Err(self.inconsistent("the key roster leaves out this partner".into()));
        }
        self.quorum(peers.len() + 1, Phase::ShareKeys)?;

        let mut holders: Vec<PartnerId> = peers.keys().copied().collect();
        holders.push(self.me);
        holders.sort_unstable();
        let b_shares = secrets
            .self_mask_dealing
            .shares(&secrets.self_mask_seed, &holders);
        let sk_shares = secrets.mask_dealing.shares(&secrets.mask_scalar, &holders);
        let mut shares = Vec::with_capacity(peers.len());
        let mut own_shares = None;
        for (b, sk) in b_shares.into_iter().zip(sk_shares) {
            #[cfg_attr(not(any(test, feature = "test-util")), allow(unused_mut))]
            let mut pair = SharePair {
                self_mask: b.value,
                mask_key: sk.value,
            };
            let recipient = b.holder;
            #[cfg(any(test, feature = "test-util"))]
            if self.wrong_share_for == Some(recipient) {
                pair.self_mask =
                    SecretScalar::new(pair.self_mask.as_scalar() + curve25519_dalek::Scalar::ONE);
            }
            let Some(peer) = peers.get(&recipient) else {
                own_shares = Some(pair);
                continue;
            };
            let shared = secrets.encryption.diffie_hellman(&peer.encryption);
            if !shared.was_contributory() {
                return Err(SecAggError::Malformed {
                    round,
                    partner: recipient,
                    reason: "its encryption public key is a low-order point".into(),
                });
            }
            let key = share_encryption_key(shared.as_bytes(), round, self.me, recipient);
            let mut nonce = [0u8; 12];
            rng.fill_bytes(&mut nonce);
            shares.push(EncryptedShare {
                sender: self.me,
                recipient,
                nonce,
                ciphertext: seal(&key, &nonce, round, self.me, recipient, &pair),
            });
        }
        let own_shares = own_shares.ok_or_else(|| SecAggError::Shamir {
            reason: "no share was made for the partner itself".into(),
        })?;
        let ClientState::Advertised { secrets } =
            std::mem::replace(&mut self.state, ClientState::Finished)
        else {
            unreachable!("checked above");
        };
        self.state = ClientState::SharedKeys {
            secrets,
            peers,
            pairwise,
            own_shares,
        };
        self.peer_commitments = commitments;
        Ok(ShareKeys {
            round_id: round,
            sender: self.me,
            shares,
        })
    }

    /// MaskedInputCollection: decrypts and checks the shares neighbours sent (their senders are
    /// this partner's view of U2), then masks `input` with the self mask and one pairwise mask
    /// per neighbour in U2.
    pub fn handle_forwarded_shares(
        &mut self,
        msg: &ForwardedShares,
        input: &RingVector,
    ) -> Result<MaskedInput, SecAggError> {
        let round = self.round();
        self.expect(msg.round_id, Phase::ShareKeys, Phase::MaskedInputCollection)?;
        let ClientState::SharedKeys {
            secrets,
            peers,
            pairwise,
            own_shares,
        } = &self.state
        else {
            unreachable!("phase ShareKeys is the SharedKeys state");
        };
        if msg.recipient != self.me {
            return Err(self.inconsistent(format!(
                "forwarded shares addressed to partner {}",
                msg.recipient
            )));
        }
        if input.width() != self.config.width || input.len() != self.config.vector_len {
            return Err(SecAggError::WrongVectorShape {
                round,
                partner: self.me,
                expected_len: self.config.vector_len,
                got_len: input.len(),
                expected_bits: self.config.width.bits(),
                got_bits: input.width().bits(),
            });
        }
        let mut held = BTreeMap::new();
        for share in &msg.shares {
            let Some(peer) = peers.get(&share.sender) else {
                return Err(SecAggError::UnknownSender {
                    round,
                    partner: share.sender,
                    expected: "a neighbour that advertised keys",
                });
            };
            if share.recipient != self.me {
                return Err(self.inconsistent(format!(
                    "a share from partner {} addressed to partner {} was forwarded here",
                    share.sender, share.recipient
                )));
            }
            if held.contains_key(&share.sender) {
                return Err(SecAggError::Duplicate {
                    round,
                    partner: share.sender,
                    phase: Phase::ShareKeys,
                });
            }
            let shared = secrets.encryption.diffie_hellman(&peer.encryption);
            let key = share_encryption_key(shared.as_bytes(), round, share.sender, self.me);
            let pair = open(
                &key,
                &share.nonce,
                round,
                share.sender,
                self.me,
                &share.ciphertext,
            )?;
            held.insert(share.sender, pair);
        }
        held.insert(self.me, own_shares.clone());
        self.quorum(held.len(), Phase::MaskedInputCollection)?;

        let self_key = secrets.self_mask_seed.self_mask_key(round, self.me);
        let me = self.me;
        let masks = held.keys().filter(|&&v| v != me).map(|v| {
            (
                &pairwise[v],
                if me < *v { Sign::Add } else { Sign::Subtract },
            )
        });
        let vector = mask_vector(input, &self_key, masks);
        self.state = ClientState::SentMaskedInput { held };
        Ok(MaskedInput {
            round_id: round,
            sender: me,
            vector,
        })
    }

    /// ConsistencyCheck: checks the survivor list against what this partner saw and signs it.
    pub fn handle_survivor_list(
        &mut self,
        msg: &SurvivorList,
        identity: &IdentityKey,
    ) -> Result<ConsistencySignature, SecAggError> {
        let round = self.round();
        self.expect(
            msg.round_id,
            Phase::MaskedInputCollection,
            Phase::ConsistencyCheck,
        )?;
        let ClientState::SentMaskedInput { held } = &self.state else {
            unreachable!("phase MaskedInputCollection is the SentMaskedInput state");
        };
        let survivors = &msg.survivors;
        if survivors.windows(2).any(|w| w[0] >= w[1]) {
            return Err(self.inconsistent("the survivor list is not sorted and distinct".into()));
        }
        if let Some(p) = survivors.iter().find(|p| !self.config.is_participant(**p)) {
            return Err(self.inconsistent(format!(
                "the survivor list names partner {p}, who is not a participant"
            )));
        }
        if survivors.len() < self.config.min_survivors {
            return Err(SecAggError::TooFewSurvivors {
                round,
                phase: Phase::ConsistencyCheck,
                survivors: survivors.len(),
                needed: self.config.min_survivors,
            });
        }
        if survivors.binary_search(&self.me).is_err() {
            return Err(self.inconsistent(
                "the survivor list leaves out this partner, which sent its masked input".into(),
            ));
        }
        let mut local = 0;
        for &p in survivors
            .iter()
            .filter(|&&p| p == self.me || self.graph.are_neighbours(self.me, p))
        {
            if !held.contains_key(&p) {
                return Err(self.inconsistent(format!(
                    "the survivor list names partner {p}, who never sent this partner its shares"
                )));
            }
            local += 1;
        }
        self.quorum(local, Phase::ConsistencyCheck)?;
        let signature = identity.sign(&survivors_transcript(&self.config_digest, survivors));
        let held = std::mem::take(match &mut self.state {
            ClientState::SentMaskedInput { held } => held,
            _ => unreachable!("checked above"),
        });
        self.state = ClientState::SignedSurvivors {
            held,
            survivors: survivors.clone(),
        };
        Ok(ConsistencySignature {
            round_id: round,
            sender: self.me,
            signature,
        })
    }

    /// Unmasking: checks at least t signatures on the same survivor list, then reveals, for
    /// each peer whose shares it holds, the self-mask share if the peer survived or the
    /// mask-key share if it dropped, never both.
    pub fn handle_signed_survivors(
        &mut self,
        msg: &SignedSurvivors,
    ) -> Result<UnmaskingShares, SecAggError> {
        let round = self.round();
        self.expect(msg.round_id, Phase::ConsistencyCheck, Phase::Unmasking)?;
        let ClientState::SignedSurvivors { held, survivors } = &self.state else {
            unreachable!("phase ConsistencyCheck is the SignedSurvivors state");
        };
        if &msg.survivors != survivors {
            return Err(self.inconsistent(
                "the signed survivor list differs from the one this partner signed".into(),
            ));
        }
        let transcript = survivors_transcript(&self.config_digest, survivors);
        let mut signers = BTreeSet::new();
        // Only its holders' signatures count towards its threshold (see
        // `neighbourhood_signatures` in the server): any other is skipped unchecked.
        let holder = |p: &PartnerId| *p == self.me || self.graph.are_neighbours(self.me, *p);
        for (signer, signature) in msg.signatures.iter().filter(|(p, _)| holder(p)) {
            if survivors.binary_search(signer).is_err() {
                return Err(SecAggError::UnknownSender {
                    round,
                    partner: *signer,
                    expected: "in the survivor list",
                });
            }
            if !signers.insert(*signer) {
                return Err(SecAggError::Duplicate {
                    round,
                    partner: *signer,
                    phase: Phase::ConsistencyCheck,
                });
            }
            self.signatures_verified += 1;
            let valid = self
                .roster
                .get(signer)
                .is_some_and(|key| key.verify(&transcript, signature));
            if !valid {
                return Err(SecAggError::BadSignature {
                    round,
                    partner: *signer,
                    what: "survivor list",
                });
            }
        }
        self.quorum(signers.len(), Phase::Unmasking)?;

        let kind_of = |owner: &PartnerId| {
            if survivors.binary_search(owner).is_ok() {
                RevealKind::SelfMask
            } else {
                RevealKind::MaskKey
            }
        };
        for owner in held.keys() {
            self.reveals.check(round, *owner, kind_of(owner))?;
        }
        let mut reply = UnmaskingShares {
            round_id: round,
            sender: self.me,
            self_mask_shares: Vec::new(),
            mask_key_shares: Vec::new(),
            refuted: Vec::new(),
        };
        let to_reveal: Vec<(PartnerId, RevealKind, &SecretScalar)> = held
            .iter()
            .map(|(owner, pair)| {
                let kind = kind_of(owner);
                let value = match kind {
                    RevealKind::SelfMask => &pair.self_mask,
                    RevealKind::MaskKey => &pair.mask_key,
                };
                (*owner, kind, value)
            })
            .collect();
        // A share its dealer's own commitments refute is not revealed, so that no honest
        // holder is ever named for a dealer's fault; the reply names the dealer instead.
        let refuted = self.refuted(&to_reveal);
        for (owner, kind, value) in to_reveal {
            if refuted.contains(&owner) {
                reply.refuted.push(owner);
                continue;
            }
            let list = match kind {
                RevealKind::SelfMask => &mut reply.self_mask_shares,
                RevealKind::MaskKey => &mut reply.mask_key_shares,
            };
            list.push(RevealedShare {
                owner,
                value: value.to_bytes(),
            });
            self.reveals.revealed.insert(owner, kind);
        }
        self.state = ClientState::Finished;
        Ok(reply)
    }
}
