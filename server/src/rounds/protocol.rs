//! The interface between the round driver and the protocols it runs.
//!
//! A round runs one protocol among the participants of its [`RoundSetup`], as a sequence of
//! named steps (for secure aggregation: AdvertiseKeys → ShareKeys → MaskedInputCollection →
//! ConsistencyCheck → Unmasking). In each step partners post messages; the driver closes the
//! step when every partner still expected has answered or the step's deadline passes; closing
//! it produces what each partner reads from its inbox for the next step, or the round's
//! [`RoundOutput`], or an error that aborts the round.
//!
//! The driver (`driver.rs`) knows nothing else about a protocol: it stores every accepted
//! message before the round takes it and replays them after a restart, step by step, so a
//! protocol's state must be a deterministic function of the messages it accepted and the
//! steps closed. A new protocol (a private set intersection before a sum, distributed noise,
//! an iteration of model fitting) is a new implementation of [`Protocol`] registered in
//! [`Protocols`], in the spirit of libprio's `Vdaf`/`Aggregator` traits.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use actix_web::web::Bytes;
use civic_secagg::{PartnerId, SecAggError};

use crate::store::RoundSetup;

/// Why a protocol refuses a message or cannot go on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// The body does not decode as this protocol's message.
    #[error("round {round}: {reason}")]
    Malformed {
        /// The round.
        round: i64,
        /// What is wrong.
        reason: String,
    },
    /// The message names another round.
    #[error("a message for round {named} was posted to round {round}")]
    WrongRound {
        /// The round posted to.
        round: i64,
        /// The round the message names.
        named: u64,
    },
    /// The message claims another sender than the partner whose token posted it.
    #[error(
        "the message claims to come from partner {claimed} but the token is partner {partner}'s"
    )]
    Impersonation {
        /// The token's partner.
        partner: PartnerId,
        /// The claimed sender.
        claimed: PartnerId,
    },
    /// The last closed step sent this partner nothing: it is no longer part of the round.
    #[error("round {round} has nothing for partner {partner}: it is no longer part of the round")]
    NotForPartner {
        /// The round.
        round: i64,
        /// The partner.
        partner: PartnerId,
    },
    /// Secure aggregation refused the message, or cannot go on.
    #[error(transparent)]
    SecAgg(#[from] SecAggError),
    /// Another protocol's refusal.
    #[error("{0}")]
    Refused(String),
}

/// What a finished round produced: the sum of the contributors' vectors, decoded as signed
/// integers, before any noise the release adds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoundOutput {
    /// The sum.
    pub sum: Vec<i64>,
    /// Whose vectors are in it.
    pub contributors: Vec<PartnerId>,
    /// Deviations the protocol detected and worked around, in words for the audit log (a
    /// partner that revealed a wrong share, and whom it named).
    pub misbehaviour: Vec<String>,
    /// For a linked round, the pairs of partners whose joins are in the sum (lower id first:
    /// the policy says which is the holder).
    pub linked_pairs: Option<Vec<(PartnerId, PartnerId)>>,
}

/// What closing a step did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Closed {
    /// The next step is open; partners read what it needs from their inboxes.
    Next,
    /// The round is over.
    Finished(RoundOutput),
}

/// A protocol: builds the coordinator's side of a round from its setup.
pub trait Protocol: Send + Sync {
    /// The name stored with each round (and announced to partners). A new version of a
    /// protocol is a new name.
    fn name(&self) -> &'static str;

    /// The steps, in order, by the names stored with messages.
    fn steps(&self) -> &'static [&'static str];

    /// The coordinator's state for a new round, at its first step.
    fn start(
        &self,
        round: i64,
        setup: &RoundSetup,
    ) -> Result<Box<dyn ProtocolRound>, ProtocolError>;
}

/// The coordinator's state of one round of a protocol. Every method that changes the state
/// validates its input completely first: on error nothing has changed.
pub trait ProtocolRound: Send + Sync {
    /// The name of the open step (one of [`Protocol::steps`]).
    fn step(&self) -> &'static str;

    /// Takes one message from `partner` for the open step. A message for another step, a
    /// repeat or a malformed body is refused.
    fn receive(&mut self, partner: PartnerId, body: &[u8]) -> Result<(), ProtocolError>;

    /// The step a message belongs to, without taking it (the driver stores messages by step).
    fn step_of(&self, partner: PartnerId, body: &[u8]) -> Result<&'static str, ProtocolError>;

    /// Whether [`ProtocolRound::receive`] would take this message, with nothing changed: a
    /// message is stored before the round takes it, and checking first costs less than
    /// copying the round for every message. Messages from distinct partners must not depend
    /// on each other: the coordinator checks a batch of them (one per partner) against the
    /// same state, stores them together, then takes them one by one.
    fn check(&self, partner: PartnerId, body: &[u8]) -> Result<(), ProtocolError>;

    /// Who has answered the open step.
    fn responded(&self) -> BTreeSet<PartnerId>;

    /// Closes the open step. An error aborts the round (too few partners left, say).
    fn close_step(&mut self) -> Result<Closed, ProtocolError>;

    /// What the last closed step sent `partner`, encoded for its inbox; the protocol's
    /// "nothing yet" before the first step closes and once `partner` has answered the open
    /// step (so that partners polling for the next step are not sent the last one again).
    /// Encoded once per step: this is called on every poll.
    fn inbox(&self, partner: PartnerId) -> Result<Bytes, ProtocolError>;

    /// A copy, to try a change on before storing it.
    fn box_clone(&self) -> Box<dyn ProtocolRound>;

    /// Whether the open step is one whose work grows with public sizes (a linked round's
    /// pairwise joins): it stays open for the configuration's `join_deadline_secs`.
    fn long_step(&self) -> bool {
        false
    }
}

/// The protocols a coordinator can run, by name, and the one it runs a statistic's round
/// with.
#[derive(Clone)]
pub struct Protocols {
    by_name: BTreeMap<&'static str, Arc<dyn Protocol>>,
    for_statistics: &'static str,
    for_linked: &'static str,
}

impl std::fmt::Debug for Protocols {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Protocols")
            .field("names", &self.by_name.keys().collect::<Vec<_>>())
            .field("for_statistics", &self.for_statistics)
            .finish()
    }
}

impl Default for Protocols {
    /// Secure aggregation of a sum, for every statistic; linked datasets' joins before it.
    fn default() -> Self {
        Self::new(Arc::new(super::secure_sum::SecureSum))
    }
}

impl Protocols {
    /// A registry whose statistic rounds run `protocol` (and linked datasets' rounds
    /// [`super::linked_sum::LinkedSum`]).
    pub fn new(protocol: Arc<dyn Protocol>) -> Self {
        let for_statistics = protocol.name();
        let linked: Arc<dyn Protocol> = Arc::new(super::linked_sum::LinkedSum);
        let for_linked = linked.name();
        Self {
            by_name: BTreeMap::from([(for_statistics, protocol), (for_linked, linked)]),
            for_statistics,
            for_linked,
        }
    }

    /// Adds a protocol (rounds already stored under its name can then be resumed).
    pub fn with(mut self, protocol: Arc<dyn Protocol>) -> Self {
        self.by_name.insert(protocol.name(), protocol);
        self
    }

    /// The protocol named `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<dyn Protocol>> {
        self.by_name.get(name)
    }

    /// The protocol a statistic's round runs.
    pub fn for_statistics(&self) -> &Arc<dyn Protocol> {
        &self.by_name[self.for_statistics]
    }

    /// The protocol a round of a dataset under `policy` runs.
    pub fn for_policy(&self, policy: &civic_policies::DatasetPolicy) -> &Arc<dyn Protocol> {
        match policy.linkage {
            Some(_) => &self.by_name[self.for_linked],
            None => self.for_statistics(),
        }
    }
}
