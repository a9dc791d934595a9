//! The one error type of the secagg layer.

use crate::messages::Phase;
use crate::round::{PartnerId, RoundId};

/// Everything that can go wrong in secure aggregation.
///
/// Each variant carries the round and partner it concerns, and [`SecAggError::code`] gives a
/// stable string for logs, metrics and HTTP bodies. A method that returns an error has left
/// its state machine unchanged, except [`crate::ServerRound::advance`], whose errors abort the
/// round.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SecAggError {
    /// A round configuration that is unsafe or inconsistent.
    #[error("invalid round configuration: {reason}")]
    InvalidConfig {
        /// What is wrong, in words an operator can act on.
        reason: String,
    },
    /// A value that does not fit the chosen ring, or a layout that could wrap.
    #[error("ring: {reason}")]
    Ring {
        /// What is wrong.
        reason: String,
    },
    /// A message for another round.
    #[error("round {expected}: received a message for round {got}")]
    WrongRound {
        /// This round.
        expected: RoundId,
        /// The round named in the message.
        got: RoundId,
    },
    /// A sender that is not a participant of this round, or not one at this stage.
    #[error("round {round}: partner {partner} is not {expected}")]
    UnknownSender {
        /// The round.
        round: RoundId,
        /// The sender named in the message.
        partner: PartnerId,
        /// What the sender had to be, e.g. "a participant" or "in the survivor list".
        expected: &'static str,
    },
    /// A second message of the same phase from one sender.
    #[error("round {round}: partner {partner} already sent its {phase} message")]
    Duplicate {
        /// The round.
        round: RoundId,
        /// The sender.
        partner: PartnerId,
        /// The phase the message belongs to.
        phase: Phase,
    },
    /// A message that belongs to another phase than the current one (late, early or replayed).
    #[error("round {round}: got a {got} message while in phase {current}")]
    OutOfPhase {
        /// The round.
        round: RoundId,
        /// The phase the state machine is in.
        current: Phase,
        /// The phase the message belongs to.
        got: Phase,
    },
    /// A vector whose length or width does not match the round's plan.
    #[error(
        "round {round}: vector from partner {partner} has {got_len} elements of {got_bits} bits, the plan has {expected_len} of {expected_bits} bits"
    )]
    WrongVectorShape {
        /// The round.
        round: RoundId,
        /// The partner whose vector it is.
        partner: PartnerId,
        /// Elements in the plan.
        expected_len: usize,
        /// Elements received.
        got_len: usize,
        /// Bits per element in the plan.
        expected_bits: u32,
        /// Bits per element received.
        got_bits: u32,
    },
    /// An Ed25519 signature that does not verify, or a public key that is not a valid point.
    #[error("round {round}: bad signature from partner {partner} on its {what}")]
    BadSignature {
        /// The round.
        round: RoundId,
        /// The claimed signer.
        partner: PartnerId,
        /// What was signed.
        what: &'static str,
    },
    /// An encrypted share whose ChaCha20-Poly1305 tag does not verify.
    #[error(
        "round {round}: encrypted share from partner {sender} to partner {recipient} failed authentication"
    )]
    BadCiphertext {
        /// The round.
        round: RoundId,
        /// The claimed sender.
        sender: PartnerId,
        /// The recipient.
        recipient: PartnerId,
    },
    /// A message that is well formed but says something impossible (wrong recipient, a share
    /// for a non-neighbour, a low-order key, a non-canonical scalar).
    #[error("round {round}: malformed message from partner {partner}: {reason}")]
    Malformed {
        /// The round.
        round: RoundId,
        /// The sender.
        partner: PartnerId,
        /// What is wrong.
        reason: String,
    },
    /// The coordinator told this partner something that contradicts what it said before:
    /// a different survivor list, or a survivor that never sent its shares.
    #[error("round {round}: the coordinator is inconsistent: {reason}")]
    InconsistentCoordinator {
        /// The round.
        round: RoundId,
        /// What did not match.
        reason: String,
    },
    /// The coordinator asked for the self-mask share of a partner whose mask-key share this
    /// partner has already revealed, or the reverse. Revealing both would expose that
    /// partner's input.
    #[error(
        "round {round}: refusing to reveal the {requested} share of partner {owner}: its {already} share was already revealed"
    )]
    ConflictingReveal {
        /// The round.
        round: RoundId,
        /// The partner whose secret the shares belong to.
        owner: PartnerId,
        /// What was asked for now.
        requested: &'static str,
        /// What was revealed before.
        already: &'static str,
    },
    /// Too few partners are left to continue safely; the round is aborted and releases nothing.
    #[error(
        "round {round}: aborted in {phase}: {survivors} partners left, at least {needed} required"
    )]
    TooFewSurvivors {
        /// The round.
        round: RoundId,
        /// The phase in which the quorum was lost.
        phase: Phase,
        /// How many took part in that phase (or, in a sparse graph, in the thinnest neighbourhood).
        survivors: usize,
        /// How many were needed.
        needed: usize,
    },
    /// Too few of the revealed shares of one partner's secret match its commitments, so its
    /// mask cannot be removed; the round aborts and releases nothing.
    #[error(
        "round {round}: partner {owner}'s {kind} secret cannot be rebuilt: {valid} valid shares, {needed} needed{}{}",
        named(", wrong shares came from", wrong_from),
        named(
            ", its shares were refuted as not matching its commitments by",
            refuted_by
        )
    )]
    Unrecoverable {
        /// The round.
        round: RoundId,
        /// Whose secret it is.
        owner: PartnerId,
        /// "self-mask" or "mask-key".
        kind: &'static str,
        /// Shares that match the owner's commitments.
        valid: usize,
        /// The threshold.
        needed: usize,
        /// Holders that revealed shares the commitments refute.
        wrong_from: Vec<PartnerId>,
        /// Holders that reported the owner's shares to them as refuted by its commitments.
        refuted_by: Vec<PartnerId>,
    },
    /// A Shamir operation on invalid shares.
    #[error("shamir: {reason}")]
    Shamir {
        /// What is wrong.
        reason: String,
    },
    /// The round has already aborted or finished; nothing more is accepted.
    #[error("round {round}: the round has {state}; no further messages are accepted")]
    RoundClosed {
        /// The round.
        round: RoundId,
        /// "finished" or "aborted".
        state: &'static str,
    },
}

impl SecAggError {
    /// A stable, machine-readable code for logs, metrics and problem+json bodies.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidConfig { .. } => "secagg.invalid_config",
            Self::Ring { .. } => "secagg.ring",
            Self::WrongRound { .. } => "secagg.wrong_round",
            Self::UnknownSender { .. } => "secagg.unknown_sender",
            Self::Duplicate { .. } => "secagg.duplicate",
            Self::OutOfPhase { .. } => "secagg.out_of_phase",
            Self::WrongVectorShape { .. } => "secagg.wrong_vector_shape",
            Self::BadSignature { .. } => "secagg.bad_signature",
            Self::BadCiphertext { .. } => "secagg.bad_ciphertext",
            Self::Malformed { .. } => "secagg.malformed",
            Self::InconsistentCoordinator { .. } => "secagg.inconsistent_coordinator",
            Self::ConflictingReveal { .. } => "secagg.conflicting_reveal",
            Self::TooFewSurvivors { .. } => "secagg.too_few_survivors",
            Self::Unrecoverable { .. } => "secagg.unrecoverable",
            Self::Shamir { .. } => "secagg.shamir",
            Self::RoundClosed { .. } => "secagg.round_closed",
        }
    }
}

/// ", LABEL partner(s) 1, 2" for a non-empty list, nothing for an empty one.
fn named(label: &str, partners: &[PartnerId]) -> String {
    if partners.is_empty() {
        return String::new();
    }
    let ids: Vec<String> = partners.iter().map(ToString::to_string).collect();
    format!("{label} partner(s) {}", ids.join(", "))
}
