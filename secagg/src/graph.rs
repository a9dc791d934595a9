//! Who shares masks and secrets with whom.
//!
//! The complete graph (Bonawitz et al. 2017) costs every partner O(n) key agreements and the
//! coordinator O(n) mask expansions per dropped partner. SecAgg+ (Bell et al., CCS 2020)
//! replaces it with a sparse graph of degree k = O(log n): here a Harary graph H_{k,n}, the
//! ring in which each partner is joined to the k/2 nearest on each side, laid over a
//! pseudorandom order of the participants.
//!
//! k and the threshold are derived, never typed in, from n, the tolerated dropout rate δ and
//! the tolerated fraction γ of corrupt partners: see [`derive_topology`].

use std::collections::BTreeMap;

use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::PROTOCOL_LABEL;
use crate::error::SecAggError;
use crate::round::{PartnerId, RoundConfig};

/// Failure probability tolerated for privacy (a corrupt quorum, a disconnected honest graph),
/// as a power of two: the usual statistical security parameter σ = 40.
pub const PRIVACY_FAILURE_BITS: i32 = 40;
/// Failure probability tolerated for correctness (a dropped partner whose secret cannot be
/// recovered, which aborts the round): η = 20, one round in a million.
pub const CORRECTNESS_FAILURE_BITS: i32 = 20;

/// The graph a governance policy asks for.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum GraphKind {
    /// Every pair of partners shares a mask: right for tens of partners.
    Complete,
    /// SecAgg+: the sparse graph sized for these tolerances (for hundreds to thousands).
    Sparse {
        /// The fraction of partners expected to drop out at worst, in [0, 1).
        max_dropout_rate: f64,
        /// The fraction of partners that may collude with the coordinator, in [0, 1).
        max_corrupt_fraction: f64,
    },
}

/// The graph a round runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Topology {
    /// Every partner is every other's neighbour.
    Complete,
    /// H_{degree,n} over a pseudorandom order fixed by the round id and participant list.
    Harary {
        /// k: even, at least 2, below n − 1.
        degree: usize,
    },
}

impl Topology {
    /// How many partners hold shares of one partner's secrets: its neighbours and itself.
    pub fn holders_per_partner(self, n: usize) -> Result<usize, SecAggError> {
        match self {
            Topology::Complete => Ok(n),
            Topology::Harary { degree }
                if degree >= 2 && degree % 2 == 0 && degree < n.saturating_sub(1) =>
            {
                Ok(degree + 1)
            }
            Topology::Harary { degree } => Err(SecAggError::InvalidConfig {
                reason: format!(
                    "Harary degree {degree} must be even, at least 2 and below n − 1 = {}",
                    n.saturating_sub(1)
                ),
            }),
        }
    }
}

/// Picks the topology and threshold for `n` partners.
///
/// Complete: t = ⌊n/2⌋ + 1. Sparse: the smallest even k, with t = ⌊(k+1)/2⌋ + 1 (more than
/// half of the k + 1 holders, which stops a coordinator from collecting both shares of one
/// partner), such that, with a union bound over the n partners:
///
/// 1. n · P[Binomial(k, 1 − δ) < t] ≤ 2^−η: every dropped partner keeps t surviving holders;
/// 2. n · P[Binomial(k, γ) ≥ t] ≤ 2^−σ: no partner has t corrupt neighbours;
/// 3. n · (δ + γ)^(k/2) ≤ 2^−σ: no k/2 consecutive partners on the ring are all dropped or
///    corrupt, so the honest survivors stay connected and the coordinator learns only their
///    total, not the sums of separate pieces.
///
/// If no k < n − 1 satisfies these, the complete graph is used (small n: the sparse graph saves
/// nothing). Partners are treated as independent, as in Bell et al.'s analysis.
pub fn derive_topology(n: usize, kind: GraphKind) -> Result<(Topology, usize), SecAggError> {
    let complete = (Topology::Complete, strict_majority(n));
    let GraphKind::Sparse {
        max_dropout_rate: delta,
        max_corrupt_fraction: gamma,
    } = kind
    else {
        return Ok(complete);
    };
    for (name, rate) in [("max_dropout_rate", delta), ("max_corrupt_fraction", gamma)] {
        if !(0.0..1.0).contains(&rate) {
            return Err(SecAggError::InvalidConfig {
                reason: format!("{name} must be a number in [0, 1), got {rate}"),
            });
        }
    }
    if delta + gamma >= 1.0 {
        return Err(SecAggError::InvalidConfig {
            reason: format!(
                "max_dropout_rate + max_corrupt_fraction = {} leaves no honest survivors",
                delta + gamma
            ),
        });
    }
    let ln_n = (n.max(1) as f64).ln();
    let privacy = -f64::from(PRIVACY_FAILURE_BITS) * std::f64::consts::LN_2;
    let correctness = -f64::from(CORRECTNESS_FAILURE_BITS) * std::f64::consts::LN_2;
    let mut k = 2;
    while k < n.saturating_sub(1) {
        let t = strict_majority(k + 1);
        let recoverable = ln_n + ln_binomial_cdf_below(k, 1.0 - delta, t) <= correctness;
        let no_corrupt_quorum = ln_n + ln_binomial_tail_from(k, gamma, t) <= privacy;
        let connected = ln_n + (k / 2) as f64 * (delta + gamma).ln() <= privacy;
        if recoverable && no_corrupt_quorum && connected {
            return Ok((Topology::Harary { degree: k }, t));
        }
        k += 2;
    }
    Ok(complete)
}

/// The smallest threshold above half of `holders`: what stops a coordinator from collecting
/// t shares of one secret from one group of holders and t of the other from a disjoint group.
pub fn strict_majority(holders: usize) -> usize {
    holders / 2 + 1
}

/// ln P[Binomial(k, p) < t].
fn ln_binomial_cdf_below(k: usize, p: f64, t: usize) -> f64 {
    ln_sum((0..t.min(k + 1)).map(|i| ln_binomial_pmf(k, p, i)))
}

/// ln P[Binomial(k, p) ≥ t].
fn ln_binomial_tail_from(k: usize, p: f64, t: usize) -> f64 {
    ln_sum((t..=k).map(|i| ln_binomial_pmf(k, p, i)))
}

fn ln_binomial_pmf(k: usize, p: f64, i: usize) -> f64 {
    let ln_choose: f64 = (0..i)
        .map(|j| ((k - j) as f64).ln() - ((j + 1) as f64).ln())
        .sum();
    // 0 · ln 0 counts as 0: P[Bin(k, 0) = 0] = 1.
    let term = |count: usize, q: f64| {
        if count == 0 {
            0.0
        } else {
            count as f64 * q.ln()
        }
    };
    ln_choose + term(i, p) + term(k - i, 1.0 - p)
}

fn ln_sum(terms: impl Iterator<Item = f64>) -> f64 {
    let terms: Vec<f64> = terms.collect();
    let max = terms.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if max == f64::NEG_INFINITY {
        return max;
    }
    max + terms.iter().map(|t| (t - max).exp()).sum::<f64>().ln()
}

/// The neighbour relation of one round, computed once from its configuration.
#[derive(Clone, Debug)]
pub struct Graph {
    topology: Topology,
    participants: Vec<PartnerId>,
    /// Harary only: each partner's position on the ring, and the ring.
    position: BTreeMap<PartnerId, usize>,
    ring: Vec<PartnerId>,
}

impl Graph {
    /// The graph of a validated configuration.
    pub fn new(config: &RoundConfig) -> Self {
        let participants = config.participants.clone();
        let mut ring = participants.clone();
        if let Topology::Harary { .. } = config.topology {
            shuffle(&mut ring, &ring_seed(config));
        }
        let position = ring.iter().enumerate().map(|(i, p)| (*p, i)).collect();
        Self {
            topology: config.topology,
            participants,
            position,
            ring,
        }
    }

    /// Whether `u` and `v` (distinct participants) are neighbours.
    pub fn are_neighbours(&self, u: PartnerId, v: PartnerId) -> bool {
        if u == v {
            return false;
        }
        match self.topology {
            Topology::Complete => self.position.contains_key(&u) && self.position.contains_key(&v),
            Topology::Harary { degree } => match (self.position.get(&u), self.position.get(&v)) {
                (Some(&a), Some(&b)) => {
                    let d = a.abs_diff(b);
                    d.min(self.ring.len() - d) <= degree / 2
                }
                _ => false,
            },
        }
    }

    /// `u`'s neighbours, sorted (not including `u`).
    pub fn neighbours(&self, u: PartnerId) -> Vec<PartnerId> {
        let Some(&at) = self.position.get(&u) else {
            return Vec::new();
        };
        match self.topology {
            Topology::Complete => self
                .participants
                .iter()
                .copied()
                .filter(|&p| p != u)
                .collect(),
            Topology::Harary { degree } => {
                let n = self.ring.len();
                let mut out: Vec<PartnerId> = (1..=degree / 2)
                    .flat_map(|d| [self.ring[(at + d) % n], self.ring[(at + n - d) % n]])
                    .collect();
                out.sort_unstable();
                out
            }
        }
    }

    /// The partners holding shares of `u`'s secrets: its neighbours and itself, sorted.
    pub fn holders(&self, u: PartnerId) -> Vec<PartnerId> {
        let mut h = self.neighbours(u);
        if self.position.contains_key(&u) {
            let at = h.partition_point(|p| *p < u);
            h.insert(at, u);
        }
        h
    }

    /// The topology.
    pub fn topology(&self) -> Topology {
        self.topology
    }
}

/// The ring order's seed: a hash of the round id and participants, so every party computes the
/// same graph with no extra message. A coordinator that chooses round ids could grind this;
/// an external randomness beacon would close that gap.
fn ring_seed(config: &RoundConfig) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(PROTOCOL_LABEL);
    h.update(b"harary-ring\0");
    h.update(config.round_id.0.to_be_bytes());
    config
        .participants
        .iter()
        .for_each(|p| h.update(p.0.to_be_bytes()));
    h.finalize().into()
}

/// Fisher–Yates with unbiased indices (rejection sampling).
fn shuffle(items: &mut [PartnerId], seed: &[u8; 32]) {
    let mut rng = ChaCha20Rng::from_seed(*seed);
    for i in (1..items.len()).rev() {
        let bound = i as u64 + 1;
        let zone = u64::MAX - (u64::MAX % bound);
        let j = loop {
            let x = rng.next_u64();
            if x < zone {
                break x % bound;
            }
        };
        items.swap(i, j as usize);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::Width;
    use crate::round::RoundId;

    fn sparse(delta: f64, gamma: f64) -> GraphKind {
        GraphKind::Sparse {
            max_dropout_rate: delta,
            max_corrupt_fraction: gamma,
        }
    }

    #[test]
    fn complete_threshold_is_a_strict_majority() {
        assert_eq!(
            derive_topology(10, GraphKind::Complete).unwrap(),
            (Topology::Complete, 6)
        );
        assert_eq!(
            derive_topology(11, GraphKind::Complete).unwrap(),
            (Topology::Complete, 6)
        );
    }

    #[test]
    fn sparse_degree_grows_logarithmically_and_with_the_tolerances() {
        let k = |n, d, g| match derive_topology(n, sparse(d, g)).unwrap().0 {
            Topology::Harary { degree } => degree,
            Topology::Complete => n,
        };
        let k1000 = k(1000, 0.1, 0.1);
        let k10000 = k(10_000, 0.1, 0.1);
        let k100000 = k(100_000, 0.1, 0.1);
        // O(log n): a tenfold n adds a roughly constant amount to k.
        assert!(
            k1000 < 100 && k10000 > k1000 && k10000 - k1000 <= 6,
            "{k1000} {k10000}"
        );
        assert!(k100000 - k10000 <= 6, "{k10000} {k100000}");
        assert!(k(1000, 0.3, 0.1) > k1000);
        assert!(k(1000, 0.1, 0.3) > k1000);
        // Small n: the sparse graph would not be sparse, so the complete graph is used.
        assert_eq!(
            derive_topology(20, sparse(0.1, 0.1)).unwrap().0,
            Topology::Complete
        );
    }

    #[test]
    fn derived_sparse_parameters_meet_their_own_bounds() {
        let (topology, t) = derive_topology(1000, sparse(0.1, 0.1)).unwrap();
        let Topology::Harary { degree: k } = topology else {
            panic!("expected sparse")
        };
        assert!(2 * t > k + 1 && t <= k);
        let ln_n = 1000f64.ln();
        assert!(ln_n + ln_binomial_cdf_below(k, 0.9, t) <= -20.0 * std::f64::consts::LN_2);
        assert!(ln_n + ln_binomial_tail_from(k, 0.1, t) <= -40.0 * std::f64::consts::LN_2);
        // And k − 2 would not have met them all.
        let smaller = k - 2;
        let ts = strict_majority(smaller + 1);
        let ok = ln_n + ln_binomial_cdf_below(smaller, 0.9, ts) <= -20.0 * std::f64::consts::LN_2
            && ln_n + ln_binomial_tail_from(smaller, 0.1, ts) <= -40.0 * std::f64::consts::LN_2
            && ln_n + (smaller / 2) as f64 * 0.2f64.ln() <= -40.0 * std::f64::consts::LN_2;
        assert!(!ok);
    }

    #[test]
    fn binomial_helpers_match_exact_values() {
        // P[Bin(4, 0.5) < 2] = (1 + 4) / 16; P[Bin(4, 0.5) >= 3] = (4 + 1) / 16.
        assert!((ln_binomial_cdf_below(4, 0.5, 2).exp() - 5.0 / 16.0).abs() < 1e-12);
        assert!((ln_binomial_tail_from(4, 0.5, 3).exp() - 5.0 / 16.0).abs() < 1e-12);
        assert_eq!(ln_binomial_tail_from(4, 0.0, 1), f64::NEG_INFINITY);
        assert!((ln_binomial_cdf_below(4, 0.0, 1).exp() - 1.0).abs() < 1e-12);
    }

    #[test]
    fn bad_tolerances_are_refused_with_the_field_named() {
        for (d, g) in [
            (f64::NAN, 0.1),
            (-0.1, 0.1),
            (1.0, 0.0),
            (0.1, 1.5),
            (0.6, 0.5),
        ] {
            let err = derive_topology(100, sparse(d, g)).unwrap_err();
            assert_eq!(err.code(), "secagg.invalid_config");
            assert!(err.to_string().contains("max_"), "{err}");
        }
    }

    #[test]
    fn harary_graph_is_symmetric_regular_and_deterministic() {
        let participants: Vec<PartnerId> = (0..200).map(|i| PartnerId(i * 3)).collect();
        let config = RoundConfig {
            round_id: RoundId(9),
            participants: participants.clone(),
            vector_len: 1,
            width: Width::W32,
            topology: Topology::Harary { degree: 10 },
            threshold: 7,
            min_survivors: 1,
        };
        config.validate().unwrap();
        let g = Graph::new(&config);
        for &u in &participants {
            let nu = g.neighbours(u);
            assert_eq!(nu.len(), 10);
            for &v in &nu {
                assert!(g.are_neighbours(u, v) && g.are_neighbours(v, u));
                assert!(g.neighbours(v).contains(&u));
            }
            assert_eq!(g.holders(u).len(), 11);
        }
        let again = Graph::new(&config);
        assert_eq!(g.neighbours(PartnerId(0)), again.neighbours(PartnerId(0)));
        let other_round = Graph::new(&RoundConfig {
            round_id: RoundId(10),
            ..config
        });
        assert_ne!(
            g.ring, other_round.ring,
            "the ring order depends on the round"
        );
    }
}
