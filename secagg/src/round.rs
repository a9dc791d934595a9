//! Identifiers and the validated configuration of one round.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::SecAggError;
use crate::graph::{GraphKind, Topology};
use crate::ring::Width;

/// A partner's id within the co-operative (stable across rounds).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PartnerId(pub u32);

impl fmt::Display for PartnerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A round's id, unique per coordinator store; bound into every key and signature.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RoundId(pub u64);

impl fmt::Display for RoundId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Everything both sides must agree on before a round starts.
///
/// Built by the coordinator with [`RoundConfig::new`], sent to partners, and checked by each
/// partner with [`RoundConfig::validate`] before it takes part: a partner never trusts a
/// threshold or graph it has not checked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoundConfig {
    /// The round.
    pub round_id: RoundId,
    /// Who is invited, sorted and distinct.
    pub participants: Vec<PartnerId>,
    /// Elements per vector.
    pub vector_len: usize,
    /// The ring.
    pub width: Width,
    /// Who shares masks and secrets with whom.
    pub topology: Topology,
    /// Shamir threshold t: shares needed to recover a secret, more than half of any holder set.
    pub threshold: usize,
    /// The governance floor: fewer survivors than this aborts the round, whatever t allows.
    pub min_survivors: usize,
}

impl RoundConfig {
    /// A configuration whose topology and threshold follow from the graph choice.
    ///
    /// For [`GraphKind::Complete`] the threshold is ⌊n/2⌋ + 1; for [`GraphKind::Sparse`] the
    /// degree and threshold are derived from n and the tolerated dropout and corruption rates
    /// (see [`crate::graph::derive_topology`]).
    pub fn new(
        round_id: RoundId,
        mut participants: Vec<PartnerId>,
        vector_len: usize,
        width: Width,
        graph: GraphKind,
        min_survivors: usize,
    ) -> Result<Self, SecAggError> {
        participants.sort_unstable();
        let (topology, threshold) = crate::graph::derive_topology(participants.len(), graph)?;
        let config = Self {
            round_id,
            participants,
            vector_len,
            width,
            topology,
            threshold,
            min_survivors,
        };
        config.validate()?;
        Ok(config)
    }

    /// Checks the invariants the protocol's security rests on.
    pub fn validate(&self) -> Result<(), SecAggError> {
        let invalid = |reason: String| Err(SecAggError::InvalidConfig { reason });
        let n = self.participants.len();
        if n < 2 {
            return invalid(format!(
                "round {} has {n} participants; secure aggregation needs at least 2",
                self.round_id
            ));
        }
        if self.participants.windows(2).any(|w| w[0] >= w[1]) {
            return invalid("participants must be sorted and distinct".into());
        }
        if self.vector_len == 0 {
            return invalid("vector_len must be at least 1".into());
        }
        let holders = self.topology.holders_per_partner(n)?;
        if 2 * self.threshold <= holders || self.threshold > holders {
            return invalid(format!(
                "threshold {} must be more than half of, and at most, the {holders} holders of each partner's shares",
                self.threshold
            ));
        }
        if self.min_survivors > n {
            return invalid(format!(
                "min_survivors {} exceeds the {n} participants",
                self.min_survivors
            ));
        }
        Ok(())
    }

    /// Whether `p` is invited.
    pub fn is_participant(&self, p: PartnerId) -> bool {
        self.participants.binary_search(&p).is_ok()
    }
}
