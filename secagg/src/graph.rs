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
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GraphKind {
    /// Every pair of partners shares a mask: right for tens of partners.
    Complete,
    /// SecAgg+: a sparse graph sized for the tolerances (for hundreds to thousands).
    Sparse,
}

/// What a round must withstand, as a governance policy (and each partner's own policy)
/// states it. Both rates are fractions of the invited partners.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tolerances {
    /// The fraction of partners that may drop out and the round still complete, in [0, 1).
    pub max_dropout_rate: f64,
    /// The fraction of partners that may collude with the coordinator without learning an
    /// honest partner's input, in [0, 1).
    pub max_corrupt_fraction: f64,
}

impl Tolerances {
    /// Checks both rates are in [0, 1) and leave honest survivors.
    pub fn validate(&self) -> Result<(), SecAggError> {
        for (name, rate) in [
            ("max_dropout_rate", self.max_dropout_rate),
            ("max_corrupt_fraction", self.max_corrupt_fraction),
        ] {
            if !(0.0..1.0).contains(&rate) {
                return Err(SecAggError::InvalidConfig {
                    reason: format!("{name} must be a number in [0, 1), got {rate}"),
                });
            }
        }
        let total = self.max_dropout_rate + self.max_corrupt_fraction;
        if total >= 1.0 {
            return Err(SecAggError::InvalidConfig {
                reason: format!(
                    "max_dropout_rate + max_corrupt_fraction = {total} leaves no honest survivors"
                ),
            });
        }
        Ok(())
    }

    /// The number of corrupt partners tolerated among `n`: ⌊γ·n⌋, and never fewer than
    /// [`MIN_TOLERATED_COLLUDERS`].
    pub fn corrupt_among(&self, n: usize) -> usize {
        ((self.max_corrupt_fraction * n as f64).floor() as usize).max(MIN_TOLERATED_COLLUDERS)
    }

    /// The number of dropouts tolerated among `n`: ⌊δ·n⌋.
    pub fn dropouts_among(&self, n: usize) -> usize {
        (self.max_dropout_rate * n as f64).floor() as usize
    }
}

/// Every round withstands at least this many partners colluding with the coordinator,
/// whatever the tolerances say: with none, one colluder shown two survivor lists unmasks every
/// honest input (see [`derive_topology`]), and the coordinator can create accounts.
pub const MIN_TOLERATED_COLLUDERS: usize = 1;

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
                if degree >= 2 && degree.is_multiple_of(2) && degree < n.saturating_sub(1) =>
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
/// The threshold must defeat a coordinator that tells two groups of partners different
/// survivor lists, to collect t self-mask shares of one partner from one group and t
/// mask-key shares from the other. Honest holders reveal once, corrupt ones in both groups,
/// so with h holders of which c are corrupt this needs 2t > h + c. (With c = 0 this is the
/// familiar t > h/2; one colluding partner already breaks t = ⌊h/2⌋ + 1.)
///
/// Complete graph: h = n, c = max(1, ⌊γ·n⌋), t = ⌊(n + c)/2⌋ + 1, and the tolerated
/// dropouts must leave t partners. So t = n for n ≤ 3: a round of three partners survives no
/// dropout, which is the price of withstanding one colluder.
///
/// Sparse: the smallest even degree k, with the smallest t for it, such that, with a union
/// bound over the n partners (see [`sparse_parameters_hold`]):
///
/// 1. n · P[Binomial(k, 1 − δ) < t] ≤ 2^−η: every partner keeps t surviving holders, so a
///    dropout's secret can be recovered and no survivor's quorum check fails;
/// 2. n · P[Binomial(k, γ) ≥ 2t − k − 1] ≤ 2^−σ: no neighbourhood holds enough corrupt
///    partners for the two-list attack above;
/// 3. n · P[Binomial(k/2, γ) ≥ t − k/2 − 1] ≤ 2^−σ: the coordinator cannot cut the ring.
///    Isolating a segment needs k/2 consecutive places with no honest survivor. The honest
///    survivor beside such a gap has all k/2 neighbours on that side in it, and it refuses to
///    go on unless t of its k + 1 holders survive. So the gap must hold at least t − k/2 − 1
///    corrupt partners, whichever partners the coordinator declares dropped.
///
/// If no k < n − 1 satisfies these, the complete graph is used: for small n the sparse graph
/// saves nothing. Partners are treated as independently corrupt or dropped, as in Bell et
/// al.'s analysis, and the ring order is fixed by a hash of the configuration.
pub fn derive_topology(
    n: usize,
    kind: GraphKind,
    tolerances: Tolerances,
) -> Result<(Topology, usize), SecAggError> {
    tolerances.validate()?;
    if kind == GraphKind::Sparse {
        for k in (2..n.saturating_sub(1).min(MAX_SPARSE_DEGREE)).step_by(2) {
            let bounds = SparseBounds::new(n, k, tolerances);
            let least = strict_majority(k + 1 + MIN_TOLERATED_COLLUDERS);
            if let Some(t) = (least..=k).find(|&t| bounds.hold(t)) {
                return Ok((Topology::Harary { degree: k }, t));
            }
        }
    }
    let t = complete_threshold(n, tolerances);
    let survivors = n - tolerances.dropouts_among(n);
    if survivors < t {
        return Err(SecAggError::InvalidConfig {
            reason: format!(
                "{n} partners cannot tolerate both {} corrupt and {} dropouts: the threshold \
                 would be {t} but only {survivors} would remain",
                tolerances.corrupt_among(n),
                tolerances.dropouts_among(n)
            ),
        });
    }
    Ok((Topology::Complete, t))
}

/// The largest sparse degree searched for; beyond it the complete graph is used. Degrees
/// derived for realistic tolerances are a few hundred at most.
pub const MAX_SPARSE_DEGREE: usize = 4096;

/// The complete graph's threshold for these tolerances: ⌊(n + c)/2⌋ + 1.
pub fn complete_threshold(n: usize, tolerances: Tolerances) -> usize {
    strict_majority(n + tolerances.corrupt_among(n))
}

/// Whether degree k and threshold t meet the three bounds of [`derive_topology`] for n
/// partners. A partner uses it to check a sparse round the coordinator proposes.
pub fn sparse_parameters_hold(n: usize, k: usize, t: usize, tolerances: Tolerances) -> bool {
    k >= 2 && k.is_multiple_of(2) && SparseBounds::new(n, k, tolerances).hold(t)
}

/// The three bounds of [`derive_topology`] for one degree, as tables over t.
struct SparseBounds {
    k: usize,
    ln_n: f64,
    /// ln P[Binomial(k, 1 − δ) < x] for x = 0..=k + 1.
    survivors_below: Vec<f64>,
    /// ln P[Binomial(k, γ) ≥ x] for x = 0..=k + 1.
    corrupt_at_least: Vec<f64>,
    /// ln P[Binomial(k/2, γ) ≥ x] for x = 0..=k/2 + 1.
    corrupt_in_half_at_least: Vec<f64>,
}

impl SparseBounds {
    fn new(n: usize, k: usize, tolerances: Tolerances) -> Self {
        let (delta, gamma) = (tolerances.max_dropout_rate, tolerances.max_corrupt_fraction);
        Self {
            k,
            ln_n: (n.max(1) as f64).ln(),
            survivors_below: ln_cdf_below(&ln_binomial_pmfs(k, 1.0 - delta)),
            corrupt_at_least: ln_tail_from(&ln_binomial_pmfs(k, gamma)),
            corrupt_in_half_at_least: ln_tail_from(&ln_binomial_pmfs(k / 2, gamma)),
        }
    }

    fn hold(&self, t: usize) -> bool {
        let k = self.k;
        let half = k / 2;
        if t > k || t < strict_majority(k + 1 + MIN_TOLERATED_COLLUDERS) || t <= half + 1 {
            return false;
        }
        let privacy = -f64::from(PRIVACY_FAILURE_BITS) * std::f64::consts::LN_2;
        let correctness = -f64::from(CORRECTNESS_FAILURE_BITS) * std::f64::consts::LN_2;
        self.ln_n + self.survivors_below[t] <= correctness
            && self.ln_n + self.corrupt_at_least[2 * t - k - 1] <= privacy
            && self.ln_n + self.corrupt_in_half_at_least[t - half - 1] <= privacy
    }
}

/// The smallest threshold above half of `holders`: the least that stops a coordinator from
/// collecting t shares of one secret from one group of holders and t of the other from a
/// disjoint group, when no holder colludes with it.
pub fn strict_majority(holders: usize) -> usize {
    holders / 2 + 1
}

/// ln P[Binomial(k, p) = i] for i = 0..=k.
fn ln_binomial_pmfs(k: usize, p: f64) -> Vec<f64> {
    // 0 · ln 0 counts as 0: P[Bin(k, 0) = 0] = 1.
    let term = |count: usize, q: f64| {
        if count == 0 {
            0.0
        } else {
            count as f64 * q.ln()
        }
    };
    let mut ln_choose = 0.0;
    (0..=k)
        .map(|i| {
            if i > 0 {
                ln_choose += ((k - i + 1) as f64).ln() - (i as f64).ln();
            }
            ln_choose + term(i, p) + term(k - i, 1.0 - p)
        })
        .collect()
}

/// ln(e^a + e^b), exact at −∞.
fn ln_add(a: f64, b: f64) -> f64 {
    let (hi, lo) = if a >= b { (a, b) } else { (b, a) };
    if lo == f64::NEG_INFINITY {
        hi
    } else {
        hi + (lo - hi).exp().ln_1p()
    }
}

/// From ln pmf over 0..=k: ln P[X < x] for x = 0..=k + 1.
fn ln_cdf_below(pmfs: &[f64]) -> Vec<f64> {
    let mut out = Vec::with_capacity(pmfs.len() + 1);
    out.push(f64::NEG_INFINITY);
    for &p in pmfs {
        let last = *out.last().unwrap_or(&f64::NEG_INFINITY);
        out.push(ln_add(last, p));
    }
    out
}

/// From ln pmf over 0..=k: ln P[X ≥ x] for x = 0..=k + 1.
fn ln_tail_from(pmfs: &[f64]) -> Vec<f64> {
    let mut out = vec![f64::NEG_INFINITY; pmfs.len() + 1];
    for x in (0..pmfs.len()).rev() {
        out[x] = ln_add(out[x + 1], pmfs[x]);
    }
    out
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

    fn tol(delta: f64, gamma: f64) -> Tolerances {
        Tolerances {
            max_dropout_rate: delta,
            max_corrupt_fraction: gamma,
        }
    }

    fn sparse_degree(n: usize, delta: f64, gamma: f64) -> usize {
        match derive_topology(n, GraphKind::Sparse, tol(delta, gamma))
            .unwrap()
            .0
        {
            Topology::Harary { degree } => degree,
            Topology::Complete => n,
        }
    }

    #[test]
    fn complete_threshold_outvotes_the_tolerated_corrupt_partners() {
        let t = |n, gamma| derive_topology(n, GraphKind::Complete, tol(0.1, gamma)).unwrap();
        // At least one colluder is always tolerated: 2t > n + 1.
        assert_eq!(t(10, 0.0), (Topology::Complete, 6));
        assert_eq!(t(11, 0.0), (Topology::Complete, 7));
        assert_eq!(t(5, 0.0), (Topology::Complete, 4));
        assert_eq!(t(4, 0.0), (Topology::Complete, 3));
        // Three partners: all three must stay, so no dropout is survivable.
        assert_eq!(
            derive_topology(3, GraphKind::Complete, tol(0.0, 0.0)).unwrap(),
            (Topology::Complete, 3)
        );
        // 3 corrupt among 10: 2t > 10 + 3.
        assert_eq!(t(10, 0.3), (Topology::Complete, 7));
        let err = derive_topology(10, GraphKind::Complete, tol(0.4, 0.3)).unwrap_err();
        assert!(
            err.to_string()
                .contains("cannot tolerate both 3 corrupt and 4 dropouts"),
            "{err}"
        );
    }

    #[test]
    fn two_list_attack_needs_more_corrupt_holders_than_the_threshold_allows() {
        // The attack: honest holders split into two groups, each topped up to t by the c
        // corrupt holders. It works exactly when 2t <= h + c.
        let works =
            |h: usize, c: usize, t: usize| (h - c) / 2 + c >= t && (h - c).div_ceil(2) + c >= t;
        for n in 3..40 {
            for gamma in [0.0, 0.1, 0.2, 0.3] {
                let Ok((_, t)) = derive_topology(n, GraphKind::Complete, tol(0.0, gamma)) else {
                    continue;
                };
                let c = tol(0.0, gamma).corrupt_among(n);
                assert!(!works(n, c, t), "n={n} c={c} t={t}");
                // And t is the least that stops it.
                assert!(works(n, c, t - 1) || t - 1 <= n / 2, "n={n} c={c} t={t}");
            }
        }
    }

    #[test]
    fn sparse_degree_grows_logarithmically_and_with_the_tolerances() {
        let (k1000, k10000, k100000) = (
            sparse_degree(1000, 0.1, 0.1),
            sparse_degree(10_000, 0.1, 0.1),
            sparse_degree(100_000, 0.1, 0.1),
        );
        // O(log n): a tenfold n adds a roughly constant amount to k.
        assert!(
            k1000 < 200 && k10000 >= k1000 && k100000 >= k10000,
            "{k1000} {k10000} {k100000}"
        );
        assert!(
            k10000 - k1000 <= 20 && k100000 - k10000 <= 20,
            "{k1000} {k10000} {k100000}"
        );
        assert!(sparse_degree(1000, 0.3, 0.1) > k1000);
        assert!(sparse_degree(1000, 0.1, 0.2) > k1000);
        // Small n: the sparse graph would not be sparse, so the complete graph is used.
        assert_eq!(
            derive_topology(20, GraphKind::Sparse, tol(0.1, 0.1))
                .unwrap()
                .0,
            Topology::Complete
        );
    }

    #[test]
    fn derived_sparse_parameters_meet_their_own_bounds_and_are_the_smallest() {
        let tolerances = tol(0.1, 0.1);
        let (topology, t) = derive_topology(1000, GraphKind::Sparse, tolerances).unwrap();
        let Topology::Harary { degree: k } = topology else {
            panic!("expected sparse")
        };
        assert!(sparse_parameters_hold(1000, k, t, tolerances));
        assert!(2 * t > k + 1 + 1, "t outvotes at least one corrupt holder");
        assert!(
            !(strict_majority(k + 1)..t).any(|t| sparse_parameters_hold(1000, k, t, tolerances))
        );
        assert!(
            !(strict_majority(k - 1)..=k - 2).any(|t| sparse_parameters_hold(
                1000,
                k - 2,
                t,
                tolerances
            ))
        );
        // A weaker degree or threshold from a coordinator is recognised as such.
        assert!(!sparse_parameters_hold(1000, 2, 2, tolerances));
        assert!(!sparse_parameters_hold(
            1000,
            k,
            strict_majority(k + 1),
            tolerances
        ));
    }

    #[test]
    fn binomial_helpers_match_exact_values() {
        // P[Bin(4, 0.5) < 2] = (1 + 4) / 16; P[Bin(4, 0.5) >= 3] = (4 + 1) / 16.
        let half = ln_binomial_pmfs(4, 0.5);
        assert!((ln_cdf_below(&half)[2].exp() - 5.0 / 16.0).abs() < 1e-12);
        assert!((ln_tail_from(&half)[3].exp() - 5.0 / 16.0).abs() < 1e-12);
        assert!((ln_tail_from(&half)[0].exp() - 1.0).abs() < 1e-12);
        assert_eq!(ln_cdf_below(&half)[0], f64::NEG_INFINITY);
        let never = ln_binomial_pmfs(4, 0.0);
        assert_eq!(ln_tail_from(&never)[1], f64::NEG_INFINITY);
        assert!((ln_cdf_below(&never)[1].exp() - 1.0).abs() < 1e-12);
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
            for kind in [GraphKind::Complete, GraphKind::Sparse] {
                let err = derive_topology(100, kind, tol(d, g)).unwrap_err();
                assert_eq!(err.code(), "secagg.invalid_config");
                assert!(err.to_string().contains("max_"), "{err}");
            }
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
