//! Identifiers and the validated configuration of one round.

use std::fmt;

use serde::{Deserialize, Serialize};

use sha2::{Digest, Sha256};

use crate::PROTOCOL_LABEL;
use crate::error::SecAggError;
use crate::graph::{
    GraphKind, MIN_TOLERATED_COLLUDERS, Tolerances, Topology, complete_threshold, derive_topology,
    sparse_parameters_hold, strict_majority,
};
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

/// What a partner insists on before it takes part in a round: its own local policy, checked
/// with [`RoundConfig::check_requirements`].
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Requirements {
    /// The dropouts and corruption the round must withstand.
    pub tolerances: Tolerances,
    /// The fewest survivors whose sum this partner lets the coordinator learn.
    pub min_survivors: usize,
    /// The fewest colluding partners the threshold must withstand, as a count (the board's
    /// manifest states it so); the larger of this and the tolerances' fraction applies.
    #[serde(default = "one")]
    pub min_colluders: usize,
}

fn one() -> usize {
    MIN_TOLERATED_COLLUDERS
}

/// The longest vector a round may have: 2^26 elements (512 MiB at 64 bits). A bound on what
/// a configuration can make either side allocate.
pub const MAX_VECTOR_LEN: usize = 1 << 26;

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
    /// Shamir threshold t: shares needed to recover a secret; more than half of every holder
    /// set, and more than that when corrupt partners are tolerated (see
    /// [`crate::graph::derive_topology`]).
    pub threshold: usize,
    /// The governance floor: fewer survivors than this aborts the round, whatever t allows.
    pub min_survivors: usize,
}

impl RoundConfig {
    /// A configuration whose topology and threshold follow from the graph choice and the
    /// tolerances (see [`crate::graph::derive_topology`]).
    pub fn new(
        round_id: RoundId,
        mut participants: Vec<PartnerId>,
        vector_len: usize,
        width: Width,
        graph: GraphKind,
        tolerances: Tolerances,
        min_survivors: usize,
    ) -> Result<Self, SecAggError> {
        participants.sort_unstable();
        let (topology, threshold) = derive_topology(participants.len(), graph, tolerances)?;
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

    /// The honest contributors every completed round of this configuration has, whatever
    /// the coordinator does: its least contributors (`max(threshold, min_survivors)` on the
    /// complete graph; `min_survivors` on a sparse graph, whose threshold is per
    /// neighbourhood) minus the colluders it must withstand: the most its threshold
    /// withstands (2t > holders + c, on the complete graph, where that is global), never
    /// fewer than `colluders` (the board's manifest) nor than one. At least 1. Distributed
    /// noise counts only these partners' shares.
    pub fn honest_contributors(&self, colluders: usize) -> usize {
        let n = self.participants.len();
        let (least, withstood) = match self.topology {
            Topology::Complete => (
                self.threshold.max(self.min_survivors),
                (2 * self.threshold).saturating_sub(n + 1),
            ),
            Topology::Harary { .. } => (self.min_survivors, 0),
        };
        least
            .saturating_sub(withstood.max(colluders).max(MIN_TOLERATED_COLLUDERS))
            .max(1)
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
        if self.vector_len == 0 || self.vector_len > MAX_VECTOR_LEN {
            return invalid(format!(
                "vector_len {} must be between 1 and {MAX_VECTOR_LEN}",
                self.vector_len
            ));
        }
        let holders = self.topology.holders_per_partner(n)?;
        let least = strict_majority(holders + MIN_TOLERATED_COLLUDERS);
        if self.threshold < least || self.threshold > holders {
            return invalid(format!(
                "threshold {} must be between {least} and the {holders} holders of each partner's \
                 shares: 2t > holders + 1, so that one colluding partner shown two survivor lists \
                 cannot unmask an honest input",
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

    /// A partner's own check of a proposed round against its local policy: defence in depth
    /// against a coordinator that weakens the threshold, the graph or the survivor floor.
    pub fn check_requirements(&self, required: &Requirements) -> Result<(), SecAggError> {
        self.validate()?;
        let refuse = |reason: String| Err(SecAggError::InvalidConfig { reason });
        let n = self.participants.len();
        if self.min_survivors < required.min_survivors {
            return refuse(format!(
                "round {} accepts results from {} survivors; this partner requires at least {}",
                self.round_id, self.min_survivors, required.min_survivors
            ));
        }
        required.tolerances.validate()?;
        let colluders = required
            .tolerances
            .corrupt_among(n)
            .max(required.min_colluders);
        match self.topology {
            Topology::Complete => {
                let needed = complete_threshold(n, required.tolerances)
                    .max(strict_majority(n + colluders))
                    .min(n + 1);
                if self.threshold < needed {
                    return refuse(format!(
                        "round {} has threshold {}; tolerating {colluders} colluding partner(s) among {n} needs {needed}",
                        self.round_id, self.threshold,
                    ));
                }
            }
            Topology::Harary { degree } => {
                if 2 * self.threshold <= degree + 1 + required.min_colluders
                    || !sparse_parameters_hold(n, degree, self.threshold, required.tolerances)
                {
                    return refuse(format!(
                        "round {}'s sparse graph (degree {degree}, threshold {}) does not meet this \
                         partner's tolerances ({:?}) for {n} partners",
                        self.round_id, self.threshold, required.tolerances
                    ));
                }
            }
        }
        Ok(())
    }

    /// A digest of everything in the configuration, bound into every signature so that
    /// partners shown different configurations under one round id reject each other.
    pub fn digest(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(PROTOCOL_LABEL);
        h.update(b"round-config\0");
        h.update(self.round_id.0.to_be_bytes());
        h.update((self.participants.len() as u64).to_be_bytes());
        self.participants
            .iter()
            .for_each(|p| h.update(p.0.to_be_bytes()));
        h.update((self.vector_len as u64).to_be_bytes());
        h.update(self.width.bits().to_be_bytes());
        let (tag, degree) = match self.topology {
            Topology::Complete => (0u8, 0u64),
            Topology::Harary { degree } => (1u8, degree as u64),
        };
        h.update([tag]);
        h.update(degree.to_be_bytes());
        h.update((self.threshold as u64).to_be_bytes());
        h.update((self.min_survivors as u64).to_be_bytes());
        h.finalize().into()
    }

    /// Whether `p` is invited.
    pub fn is_participant(&self, p: PartnerId) -> bool {
        self.participants.binary_search(&p).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> RoundConfig {
        RoundConfig::new(
            RoundId(1),
            vec![PartnerId(3), PartnerId(1), PartnerId(2), PartnerId(4)],
            10,
            Width::W32,
            GraphKind::Complete,
            Tolerances {
                max_dropout_rate: 0.25,
                max_corrupt_fraction: 0.0,
            },
            2,
        )
        .expect("valid")
    }

    #[test]
    fn honest_contributors_subtract_the_colluders_the_threshold_withstands() {
        let mut c = valid();
        c.participants = (1..=5).map(PartnerId).collect();
        c.topology = Topology::Complete;
        c.threshold = 4;
        c.min_survivors = 2;
        // 2·4 > 5 + c for c ≤ 2: 4 contributors, 2 of them perhaps colluding.
        assert_eq!(c.honest_contributors(1), 2);
        // A quorum above the threshold counts; so does a board asking for more colluders.
        c.min_survivors = 5;
        assert_eq!(c.honest_contributors(1), 3);
        assert_eq!(c.honest_contributors(3), 2);
        // t = n: everyone contributes, n − 1 may collude, one share is honest.
        c.threshold = 5;
        assert_eq!(c.honest_contributors(1), 1);
        // A sparse graph: the quorum minus the board's colluders.
        c.topology = Topology::Harary { degree: 2 };
        c.min_survivors = 4;
        assert_eq!(c.honest_contributors(2), 2);
    }

    #[test]
    fn new_sorts_participants_and_takes_a_strict_majority() {
        let c = valid();
        assert_eq!(
            c.participants,
            vec![PartnerId(1), PartnerId(2), PartnerId(3), PartnerId(4)]
        );
        assert_eq!(c.threshold, 3);
    }

    #[test]
    fn unsafe_or_inconsistent_configs_are_refused_with_the_reason() {
        let cases: Vec<(RoundConfig, &str)> = vec![
            (
                RoundConfig {
                    threshold: 2,
                    ..valid()
                },
                "2t > holders + 1",
            ),
            (
                RoundConfig {
                    threshold: 5,
                    ..valid()
                },
                "between 3 and the 4 holders",
            ),
            (
                RoundConfig {
                    vector_len: 0,
                    ..valid()
                },
                "vector_len 0",
            ),
            (
                RoundConfig {
                    vector_len: MAX_VECTOR_LEN + 1,
                    ..valid()
                },
                "vector_len",
            ),
            (
                RoundConfig {
                    min_survivors: 5,
                    ..valid()
                },
                "min_survivors 5",
            ),
            (
                RoundConfig {
                    participants: vec![PartnerId(2), PartnerId(1), PartnerId(3), PartnerId(4)],
                    ..valid()
                },
                "sorted and distinct",
            ),
            (
                RoundConfig {
                    participants: vec![PartnerId(1), PartnerId(1), PartnerId(3), PartnerId(4)],
                    ..valid()
                },
                "sorted and distinct",
            ),
            (
                RoundConfig {
                    participants: vec![PartnerId(1)],
                    threshold: 1,
                    min_survivors: 1,
                    ..valid()
                },
                "at least 2",
            ),
            (
                RoundConfig {
                    topology: Topology::Harary { degree: 3 },
                    ..valid()
                },
                "even",
            ),
            (
                RoundConfig {
                    topology: Topology::Harary { degree: 4 },
                    ..valid()
                },
                "below n",
            ),
        ];
        for (config, needle) in cases {
            let err = config.validate().expect_err(needle);
            assert_eq!(err.code(), "secagg.invalid_config");
            assert!(
                err.to_string().contains(needle),
                "{err} should mention {needle:?}"
            );
        }
    }

    #[test]
    fn a_partner_asking_for_more_colluders_refuses_a_lower_threshold() {
        let config = RoundConfig::new(
            RoundId(1),
            (1..=5).map(PartnerId).collect(),
            10,
            Width::W32,
            GraphKind::Complete,
            Tolerances {
                max_dropout_rate: 0.0,
                max_corrupt_fraction: 0.0,
            },
            3,
        )
        .unwrap();
        assert_eq!(config.threshold, 4);
        let asking = |min_colluders| Requirements {
            tolerances: Tolerances {
                max_dropout_rate: 0.0,
                max_corrupt_fraction: 0.0,
            },
            min_survivors: 3,
            min_colluders,
        };
        // 2t > n + c: t = 4 of 5 withstands two colluders, not three.
        assert!(config.check_requirements(&asking(2)).is_ok());
        let e = config.check_requirements(&asking(3)).unwrap_err();
        assert!(
            e.to_string()
                .contains("3 colluding partner(s) among 5 needs 5"),
            "{e}"
        );
    }
}
