//! Intervals for counts shown under a suppression rule, which cover at their stated rate
//! *given that the count was shown*.
//!
//! A disclosure profile that redacts counts 1 to s decides on the same noisy value it
//! releases, so the counts that are shown are selected by their noise: a true count of 3 is
//! shown only when its noise pushed it past s, and an interval of the usual half-width
//! around it then misses the truth far more often than stated (about 56% coverage for true
//! counts of 3 to 5 at ε = 3, measured). The interval here is the Neyman construction on the
//! released value's distribution *conditional on being shown*: the set of true counts t ≥ 0
//! for which the released value x is neither in the lower nor in the upper α/2 tail of the
//! values a count t can be released as, given that it is shown. By construction it covers
//! every true count with probability at least 1 − α given that the count is shown; it is
//! computed from the released value alone (never the unrounded noisy count), and far from
//! the band it is the usual interval widened by the rounding.
//!
//! The noise's law on the integers is symmetric and log-concave (discrete Laplace, discrete
//! Gaussian, or a sum of discrete Gaussian shares), so the released value is stochastically
//! increasing in t and the set is an interval, found by bisection.

use civic_policies::DisclosureProfile;

use crate::distributed::tau;

/// The cumulative distribution of integer noise Y: P[Y ≤ y].
#[derive(Clone, Debug)]
pub enum NoiseCdf {
    /// Discrete Laplace of scale b: q = e^(−1/b).
    Laplace {
        /// e^(−1/b).
        q: f64,
    },
    /// A tabulated law on [−reach, reach] (nothing beyond, to f64's resolution).
    Table {
        /// The table's half-range.
        reach: i64,
        /// `cdf[i]` = P[Y ≤ i − reach].
        cdf: Vec<f64>,
    },
}

/// The longest table built: beyond it (σ above ~10⁵) the caller falls back.
const MAX_TABLE: usize = 4_000_000;

/// The most narrow shares convolved exactly: beyond it the caller falls back.
const MAX_CONVOLVED: usize = 256;

impl NoiseCdf {
    /// The discrete Laplace of scale `b`.
    pub fn laplace(b: f64) -> Option<Self> {
        let q = (-1.0 / b).exp();
        (q.is_finite() && q < 1.0).then_some(Self::Laplace { q })
    }

    /// N_Z(0, σ²).
    pub fn gaussian(sigma: f64) -> Option<Self> {
        Self::table(&discrete_gaussian_pmf(sigma)?)
    }

    /// The sum of `shares` independent N_Z(0, σ²): by exact convolution where the shares are
    /// narrow (τ not negligible), else as N_Z(0, kσ²), to which it is pointwise within
    /// e^(±τ) (see [`crate::distributed`]), τ below 10⁻¹². None for narrow shares of more
    /// than [`MAX_CONVOLVED`] partners (the convolution's cost grows as their square).
    pub fn gaussian_shares(sigma: f64, shares: usize) -> Option<Self> {
        if shares <= 1 || tau(sigma, shares) < 1e-12 {
            return Self::gaussian(sigma * (shares.max(1) as f64).sqrt());
        }
        if shares > MAX_CONVOLVED {
            return None;
        }
        let one = discrete_gaussian_pmf(sigma)?;
        let mut sum = one.clone();
        for _ in 1..shares {
            let mut next = vec![0.0; sum.len() + one.len() - 1];
            for (i, a) in sum.iter().enumerate() {
                for (j, b) in one.iter().enumerate() {
                    next[i + j] += a * b;
                }
            }
            sum = next;
        }
        Self::table(&sum)
    }

    fn table(pmf: &[f64]) -> Option<Self> {
        let reach = (pmf.len() as i64 - 1) / 2;
        let mut total = 0.0;
        let mut cdf: Vec<f64> = pmf
            .iter()
            .map(|p| {
                total += p;
                total
            })
            .collect();
        cdf.iter_mut().for_each(|c| *c /= total);
        Some(Self::Table { reach, cdf })
    }

    /// P[Y ≤ y].
    pub fn at(&self, y: i64) -> f64 {
        match self {
            Self::Laplace { q } => {
                if y >= 0 {
                    1.0 - q.powf(y as f64 + 1.0) / (1.0 + q)
                } else {
                    q.powf(-(y as f64)) / (1.0 + q)
                }
            }
            Self::Table { reach, cdf } => {
                if y < -reach {
                    0.0
                } else if y >= *reach {
                    1.0
                } else {
                    cdf[(y + reach) as usize]
                }
            }
        }
    }
}

/// The pmf of N_Z(0, σ²) on [−R, R], R = ⌈12σ⌉ + 2 (the mass beyond is below e^(−72)),
/// unnormalised.
fn discrete_gaussian_pmf(sigma: f64) -> Option<Vec<f64>> {
    let reach = (12.0 * sigma).ceil() + 2.0;
    if !(reach.is_finite() && (2.0 * reach + 1.0) as usize <= MAX_TABLE) {
        return None;
    }
    let reach = reach as i64;
    Some(
        (-reach..=reach)
            .map(|y| (-((y * y) as f64) / (2.0 * sigma * sigma)).exp())
            .collect(),
    )
}

/// The interval of true counts consistent, at level 1 − α given that the count was shown,
/// with the released value `x` of a count shown under `profile` (whose suppression band is
/// not empty) with noise `noise`. Its ends are whole counts.
pub fn shown_count_interval(
    x: i64,
    noise: &NoiseCdf,
    profile: DisclosureProfile,
    alpha: f64,
) -> (f64, f64) {
    let (suppress, step) = profile.rule();
    let (s, step) = (i64::from(suppress), i64::from(step.max(1)));
    // The noisy counts n released as at most x: n ≤ 0 (shown as 0) and s < n ≤ n_hi; as at
    // least x: every shown n if x is 0, else n ≥ n_lo. `apply` rounds halves up.
    let n_hi = ((x.div_euclid(step) + 1) * step - step / 2 - 1).max(s);
    let n_lo = (x - step / 2).max(s + 1);
    let shown = |t: i64| noise.at(-t) + (1.0 - noise.at(s - t));
    let at_most = |t: i64| noise.at(-t) + (noise.at(n_hi - t) - noise.at(s - t)).max(0.0);
    let at_least = |t: i64| {
        if x <= 0 {
            shown(t)
        } else {
            1.0 - noise.at(n_lo - 1 - t)
        }
    };
    // A hair of α covers the f64 arithmetic and the tables' truncation.
    let level = alpha / 2.0 * (1.0 - 1e-9);
    // t is consistent from below while x is not in its upper tail, from above while not in
    // its lower tail; each test is monotone in t.
    let not_too_low = |t: i64| at_least(t) > level * shown(t);
    let not_too_high = |t: i64| at_most(t) > level * shown(t);
    let low = if not_too_low(0) {
        0
    } else {
        first_true(0, x.max(1), not_too_low)
    };
    let high = last_true(low.max(x), not_too_high);
    (low as f64, high as f64)
}

/// The least t in (from, …] at which `test` holds, `test(from)` being false and `test`
/// monotone (false then true).
fn first_true(from: i64, mut to: i64, test: impl Fn(i64) -> bool) -> i64 {
    let mut from = from;
    while !test(to) && to < i64::MAX / 4 {
        from = to;
        to = to.saturating_mul(2);
    }
    while to - from > 1 {
        let mid = from + (to - from) / 2;
        if test(mid) {
            to = mid;
        } else {
            from = mid;
        }
    }
    to
}

/// The greatest t ≥ `from` at which `test` holds (monotone: true then false), or `from`.
fn last_true(from: i64, test: impl Fn(i64) -> bool) -> i64 {
    if !test(from) {
        return from;
    }
    let (mut low, mut high) = (from, from.max(1).saturating_mul(2));
    while test(high) && high < i64::MAX / 4 {
        low = high;
        high = high.saturating_mul(2);
    }
    while high - low > 1 {
        let mid = low + (high - low) / 2;
        if test(mid) {
            low = mid;
        } else {
            high = mid;
        }
    }
    low
}
