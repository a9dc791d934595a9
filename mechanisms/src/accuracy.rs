//! Accuracy: the half-width of a (1 − α) confidence interval for one noisy cell, and the
//! budget a target half-width needs.
//!
//! The convention is OpenDP's: a half-width `a` satisfies P[|noise| ≥ a] ≤ α, so the released
//! value ± a covers the true value with probability at least 1 − α. Every half-width returned
//! here is at least the smallest such `a` (never narrower), and every function returns in
//! bounded time for any finite input: these run on untrusted input in the coordinator's
//! preview endpoint.
//!
//! - Discrete Laplace: OpenDP's closed form, P[|X| ≥ k] = 2e^((1−k)/b) / (e^(1/b) + 1) at whole
//!   k, solved for `a` and written so it neither overflows at small b nor loses `a` to
//!   cancellation, then rounded up by an explicit error allowance. The half-width is a real
//!   number, as OpenDP's is: P[|X| ≥ a] = P[|X| ≥ ⌈a⌉].
//! - Discrete Gaussian: OpenDP's exact search (`discrete_gaussian_scale_to_accuracy`) sums
//!   the pmf term by term, so its time grows linearly with σ (~0.3 ms per 1000 units of σ
//!   here, unbounded at σ = 10^300). It is used up to [`EXACT_GAUSSIAN_MAX_SCALE`]; above that,
//!   and for α below [`EXACT_GAUSSIAN_MIN_ALPHA`], the half-width is the smaller of two
//!   rigorous closed-form tail bounds (see [`discrete_gaussian_half_width_bound`]), at most a
//!   unit or two wider than the exact one. Either way the result is a whole number.
//! - The inverses ([`scale_for_half_width`]) search a fixed grid of scales for the largest
//!   one whose half-width, computed by the very function above, meets the target: so the
//!   forward half-width at the returned scale never exceeds the target, across both regimes,
//!   and the returned scale never decreases as the target grows.

use std::cell::OnceCell;
use std::f64::consts::LN_2;

use opendp::accuracy::{
    conservative_continuous_gaussian_tail_to_alpha, discrete_gaussian_scale_to_accuracy,
};

use crate::error::MechanismError;
use crate::noise::{NoiseKind, NoiseSpec};

/// The largest σ at which a discrete-Gaussian half-width comes from OpenDP's exact search.
///
/// That search costs about 0.3 µs per unit of σ (measured: 0.28 ms at σ = 10³, 2.8 ms at
/// 10⁴, 28 ms at 10⁵, in the workspace's dev profile), and [`scale_for_half_width`] may
/// evaluate it some 35 times near the answer, so 10³ keeps a preview within ~10 ms. Just
/// above it the closed-form bound is equal to the exact half-width or one unit wider
/// (observed for 10⁻⁶ ≤ α ≤ 0.5; at most 0.15%).
pub const EXACT_GAUSSIAN_MAX_SCALE: f64 = 1_000.0;

/// The smallest α at which a discrete-Gaussian half-width comes from OpenDP's exact search.
///
/// The search works in f64: at σ ≤ [`EXACT_GAUSSIAN_MAX_SCALE`] it sums at most ~80,000
/// terms, whose rounding moves the probabilities it compares by at most ~10⁻¹¹. It is
/// therefore run at α − 10⁻¹⁰, which is only a negligible change of α when
/// α is at least 10⁻⁶; smaller α go to the rigorous bound.
pub const EXACT_GAUSSIAN_MIN_ALPHA: f64 = 1e-6;

/// Absolute allowance for the f64 rounding inside OpenDP's exact search (see
/// [`EXACT_GAUSSIAN_MIN_ALPHA`]): ten times the worst-case error at the largest exact σ.
const EXACT_ALPHA_SLACK: f64 = 1e-10;

/// Scales searched by the inverses are the positive f64 whose lowest `GRID_SHIFT` bits are
/// zero (32 stored mantissa bits): a relative spacing of at most 2^-32 ≈ 2.3 × 10⁻¹⁰. The grid is
/// fixed, so the searched scale is monotone in the target; it costs at most that relative
/// amount of noise (twice that of ρ).
const GRID_SHIFT: u32 = 20;

/// Relative allowance, far above the few f64 roundings it covers, applied in the safe
/// direction to √(2 ln(2/α)) and to the ε or ρ derived from a searched scale.
const RELATIVE_SLACK: f64 = 1e-12;

const STAGE: &str = "accuracy";

fn invalid(reason: String) -> MechanismError {
    MechanismError::InvalidParameter {
        stage: STAGE,
        reason,
    }
}

fn check_alpha(alpha: f64) -> Result<(), MechanismError> {
    if alpha > 0.0 && alpha < 1.0 {
        Ok(())
    } else {
        Err(invalid(format!(
            "alpha must be strictly between 0 and 1 (0.05 for a 95% interval), got {alpha}"
        )))
    }
}

fn check_scale(scale: f64) -> Result<(), MechanismError> {
    if scale.is_finite() && scale > 0.0 {
        Ok(())
    } else {
        Err(invalid(format!(
            "the noise scale must be a finite number above 0, got {scale}"
        )))
    }
}

fn check_target(accuracy: f64) -> Result<(), MechanismError> {
    if accuracy.is_finite() && accuracy >= 1.0 {
        Ok(())
    } else {
        Err(invalid(format!(
            "a half-width on integer counts must be a finite number of at least 1, got {accuracy}"
        )))
    }
}

fn overflow(kind: NoiseKind, scale: f64, alpha: f64) -> MechanismError {
    invalid(format!(
        "the {kind:?} half-width at scale {scale} and alpha {alpha} is beyond the range of f64"
    ))
}

/// The half-width of the closed (1 − α) interval of one cell released with `spec`: the
/// released value ± a covers the truth with probability at least 1 − α, P[|noise| > a] ≤ α.
///
/// The noise is an integer, so this is a whole number of fixed-point units: one less than the
/// least whole a' with P[|noise| ≥ a'] ≤ α, OpenDP's convention (which leaves a' itself out).
/// Published intervals are closed, so a' would state 95% where the truth is nearer 99% (at
/// σ = 3, 98.8%), and charge a target accuracy for more noise than it needs.
pub fn half_width(spec: &NoiseSpec, alpha: f64) -> Result<f64, MechanismError> {
    let _opendp = crate::opendp_guard::lock();
    check_alpha(alpha)?;
    check_scale(spec.scale)?;
    closed_half_width(spec.kind, spec.scale, alpha)
        .ok_or_else(|| overflow(spec.kind, spec.scale, alpha))
}

/// OpenDP's convention: the least a with P[|noise| ≥ a] ≤ α (real for the discrete Laplace,
/// whole for the discrete Gaussian). What [`half_width`] is one whole unit below; public so
/// that it can be checked against OpenDP's accuracy functions.
pub fn excluded_half_width(spec: &NoiseSpec, alpha: f64) -> Result<f64, MechanismError> {
    let _opendp = crate::opendp_guard::lock();
    check_alpha(alpha)?;
    check_scale(spec.scale)?;
    excluded(spec.kind, spec.scale, alpha).ok_or_else(|| overflow(spec.kind, spec.scale, alpha))
}

fn excluded(kind: NoiseKind, scale: f64, alpha: f64) -> Option<f64> {
    match kind {
        NoiseKind::DiscreteLaplace => laplace_half_width(scale, alpha),
        NoiseKind::DiscreteGaussian => GaussianTail::new(alpha).half_width(scale),
    }
}

/// [`half_width`] without the lock or the checks.
fn closed_half_width(kind: NoiseKind, scale: f64, alpha: f64) -> Option<f64> {
    Some((excluded(kind, scale, alpha)?.ceil() - 1.0).max(0.0))
}

/// The discrete-Gaussian half-width from the closed-form tail bounds alone, at any σ: what
/// [`half_width`] returns above [`EXACT_GAUSSIAN_MAX_SCALE`] (or for α below
/// [`EXACT_GAUSSIAN_MIN_ALPHA`]). Public so that it can be checked against OpenDP's exact
/// search where that search is still fast.
///
/// Let X ~ N_Z(0, σ²), P[X = x] ∝ exp(−x²/(2σ²)) on the integers (Canonne, Kamath & Steinke,
/// "The Discrete Gaussian for Differential Privacy", NeurIPS 2020, arXiv:2004.00010). This is
/// exactly what OpenDP samples for integer data at `scale` = σ (its accuracy code evaluates
/// the same pmf, `exp(-(x / scale)^2 / 2)`); σ² is the parameter, not the variance (which is
/// smaller), and both bounds below are stated in that parameter. The result is the smaller of:
///
/// 1. **Continuous tail, shifted by one** (CKS20, Proposition 25, the bound behind OpenDP's
///    `conservative_discrete_gaussian_tail_to_alpha`): for every integer m ≥ 1,
///    P[X ≥ m] ≤ P[Y ≥ m − 1] with Y ~ N(0, σ²). (Each term e^(−x²/2σ²), x ≥ 1, is at most
///    the integral of e^(−t²/2σ²) over [x − 1, x]; the normaliser Σ_Z e^(−x²/2σ²) is at least
///    σ√(2π) by Poisson summation.) With symmetry, P[|X| ≥ a] ≤ 2·P[Y ≥ a − 1]: `a` is the
///    smallest candidate, 1 + ⌈σz⌉ with z bisected on the standard normal, for which
///    2·`conservative_continuous_gaussian_tail_to_alpha(σ, a − 1)` ≤ α, evaluated at the
///    actual σ and a − 1 (exact rationals, erfc rounded up). Within a unit or two of the
///    exact half-width; usable while α ≥ ~10⁻⁴⁰ (OpenDP rounds the erfc through f32, whose
///    relative 2⁻²³ also makes it loose, though valid, for α within ~10⁻⁷ of 1: at
///    α = 1 − 10⁻¹² it gives ~1.5 × 10⁻⁷σ where the exact half-width is ~10⁻¹²σ).
/// 2. **Sub-Gaussian tail** (CKS20, Corollary 9: X is σ²-sub-Gaussian, E[e^(tX)] ≤ e^(t²σ²/2),
///    hence P[X ≥ λ] ≤ e^(−λ²/(2σ²)) for λ ≥ 0): P[|X| ≥ a] ≤ 2e^(−a²/(2σ²)) ≤ α once
///    a ≥ σ√(2 ln(2/α)). About 1.4× wider at α = 0.05 but valid at every α, down to 10⁻³⁰⁰.
///
/// An error when the half-width is beyond f64 (σ near f64::MAX) or an argument is invalid.
pub fn discrete_gaussian_half_width_bound(sigma: f64, alpha: f64) -> Result<f64, MechanismError> {
    let _opendp = crate::opendp_guard::lock();
    check_alpha(alpha)?;
    check_scale(sigma)?;
    GaussianTail::new(alpha)
        .bound(sigma)
        .ok_or_else(|| overflow(NoiseKind::DiscreteGaussian, sigma, alpha))
}

/// The largest scale whose (1 − α) half-width is at most `accuracy` (to the grid's relative
/// 2.3 × 10⁻¹⁰, on the smaller side). [`half_width`] at the returned scale is at most
/// `accuracy` (for the discrete Gaussian, at most ⌊accuracy⌋: its half-widths are whole).
pub fn scale_for_half_width(
    kind: NoiseKind,
    accuracy: f64,
    alpha: f64,
) -> Result<f64, MechanismError> {
    let _opendp = crate::opendp_guard::lock();
    check_alpha(alpha)?;
    check_target(accuracy)?;
    let found = match kind {
        NoiseKind::DiscreteLaplace => {
            largest_grid_scale(|b| closed_half_width(kind, b, alpha).is_some_and(|a| a <= accuracy))
        }
        NoiseKind::DiscreteGaussian => {
            let whole = accuracy.floor();
            largest_grid_scale(|sigma| {
                closed_half_width(kind, sigma, alpha).is_some_and(|a| a <= whole)
            })
        }
    };
    found.ok_or_else(|| {
        invalid(format!(
            "no {kind:?} scale gives a half-width of at most {accuracy} at alpha {alpha}"
        ))
    })
}

/// The ε a discrete-Laplace release with L1 sensitivity Δ₁ needs for a (1 − α) half-width
/// of at most `accuracy`: what a researcher who asks for accuracy instead of ε is charged.
pub fn epsilon_for_half_width(
    l1_sensitivity: u64,
    accuracy: f64,
    alpha: f64,
) -> Result<f64, MechanismError> {
    if l1_sensitivity == 0 {
        return Err(invalid(
            "the L1 sensitivity must be at least 1, got 0".into(),
        ));
    }
    let scale = scale_for_half_width(NoiseKind::DiscreteLaplace, accuracy, alpha)?;
    // Rounded up, so the scale calibrated from this ε is no wider than the one searched.
    let epsilon = l1_sensitivity as f64 / scale * (1.0 + RELATIVE_SLACK);
    finite_cost("epsilon", epsilon, accuracy)
}

/// The ρ a discrete-Gaussian release with L2 sensitivity Δ₂ needs for a (1 − α) half-width
/// of at most `accuracy` (for the discrete Gaussian, at most ⌊accuracy⌋).
pub fn rho_for_half_width(
    l2_sensitivity: f64,
    accuracy: f64,
    alpha: f64,
) -> Result<f64, MechanismError> {
    if !(l2_sensitivity.is_finite() && l2_sensitivity > 0.0) {
        return Err(invalid(format!(
            "the L2 sensitivity must be a finite number above 0, got {l2_sensitivity}"
        )));
    }
    let sigma = scale_for_half_width(NoiseKind::DiscreteGaussian, accuracy, alpha)?;
    // Rounded up, so the σ calibrated from this ρ is no wider than the one searched.
    let rho = (l2_sensitivity / sigma).powi(2) / 2.0 * (1.0 + RELATIVE_SLACK);
    finite_cost("rho", rho, accuracy)
}

fn finite_cost(name: &str, value: f64, accuracy: f64) -> Result<f64, MechanismError> {
    if value.is_normal() && value > 0.0 {
        Ok(value)
    } else {
        Err(invalid(format!(
            "the {name} for a half-width of {accuracy} is {value}, outside the range of f64"
        )))
    }
}

/// The discrete-Laplace half-width at scale `b`: the real `a` with
/// 2e^((1−a)/b) / (e^(1/b) + 1) = α (OpenDP's `discrete_laplacian_scale_to_accuracy`,
/// `b·ln(2/(α(e^(1/b) + 1))) + 1`), rearranged as `b·(ln(2/α) − ln(1 + e^(−1/b)))`. The
/// rearrangement is exact algebra; unlike OpenDP's form it neither overflows (OpenDP returns
/// −∞ for b below ~1/710) nor cancels the `+ 1`. Its f64 error is below 2.5ε·b·(1 + ln(2/α))
/// (ε the machine epsilon, each libm call within an ulp); 32ε·b·(1 + ln(2/α)) is added, so the
/// result is never below the exact value. `None` if it overflows.
fn laplace_half_width(b: f64, alpha: f64) -> Option<f64> {
    let log_2_over_alpha = LN_2 - alpha.ln();
    let a = b * (log_2_over_alpha - (-b.recip()).exp().ln_1p());
    let a = a + 32.0 * f64::EPSILON * b * (1.0 + log_2_over_alpha);
    (a.is_finite() && a > 0.0).then_some(a)
}

/// Discrete-Gaussian half-widths at one α, for as many σ as a search needs.
struct GaussianTail {
    alpha: f64,
    /// The standard-normal quantile of the shifted-continuous bound, found at first use.
    z: OnceCell<Option<f64>>,
}

impl GaussianTail {
    fn new(alpha: f64) -> Self {
        Self {
            alpha,
            z: OnceCell::new(),
        }
    }

    /// OpenDP's exact search where it is fast and its f64 error is covered; the rigorous
    /// bound elsewhere.
    fn half_width(&self, sigma: f64) -> Option<f64> {
        let exact = (sigma <= EXACT_GAUSSIAN_MAX_SCALE && self.alpha >= EXACT_GAUSSIAN_MIN_ALPHA)
            .then(|| discrete_gaussian_scale_to_accuracy(sigma, self.alpha - EXACT_ALPHA_SLACK));
        match exact {
            Some(Ok(a)) if a.is_finite() && a >= 1.0 => Some(a),
            // Not in the exact regime, or OpenDP gave up: the bound.
            _ => self.bound(sigma),
        }
    }

    /// The smaller of the two bounds of [`discrete_gaussian_half_width_bound`].
    fn bound(&self, sigma: f64) -> Option<f64> {
        match (self.shifted_continuous(sigma), self.subgaussian(sigma)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Bound 1: the smallest 1 + ⌈σz⌉ (or the next few whole numbers above it, should f64
    /// rounding of σz fall short) that OpenDP's conservative tail certifies.
    fn shifted_continuous(&self, sigma: f64) -> Option<f64> {
        let z = (*self.z.get_or_init(|| standard_quantile(self.alpha)))?;
        let mut a = (sigma * z).ceil() + 1.0;
        for _ in 0..4 {
            if !a.is_finite() {
                return None;
            }
            if certifies(sigma, a, self.alpha) {
                return Some(a);
            }
            a = if a < 2f64.powi(53) {
                a + 1.0
            } else {
                a.next_up()
            };
        }
        None
    }

    /// Bound 2: ⌈σ√(2 ln(2/α))⌉, the root rounded up by [`RELATIVE_SLACK`] (which covers
    /// the few ulps of error in ln, sqrt and the product).
    fn subgaussian(&self, sigma: f64) -> Option<f64> {
        let root = (2.0 * (LN_2 - self.alpha.ln())).sqrt() * (1.0 + RELATIVE_SLACK);
        let a = (sigma * root).ceil().max(1.0);
        a.is_finite().then_some(a)
    }
}

/// Whether P[|X| ≥ a] ≤ α, X ~ N_Z(0, σ²), is certified through 2·P[Y ≥ a − 1] ≤ α,
/// Y ~ N(0, σ²). `a` is a whole f64 ≥ 1; a − 1 is taken rounded down (exact below 2^53).
fn certifies(sigma: f64, a: f64, alpha: f64) -> bool {
    let shifted = if a <= 2f64.powi(53) {
        a - 1.0
    } else {
        a.next_down()
    };
    tail_within(sigma, shifted, alpha)
}

/// Whether 2·P[Y ≥ t] ≤ α for Y ~ N(0, σ²), by OpenDP's conservatively rounded tail (σ and t
/// converted exactly to rationals; erfc rounded up).
fn tail_within(sigma: f64, t: f64, alpha: f64) -> bool {
    // OpenDP's tail swaps the panic hook: one caller at a time, whoever calls (the lock is
    // re-entrant, `crate::opendp_guard`).
    let _opendp = crate::opendp_guard::lock();
    let (Ok(scale), Ok(tail)) = (sigma.try_into(), t.try_into()) else {
        return false;
    };
    conservative_continuous_gaussian_tail_to_alpha(scale, tail).is_ok_and(|p| 2.0 * p <= alpha)
}

/// The smallest z (to f64 precision, rounded up) with 2·P[N(0, 1) ≥ z] ≤ α as certified by
/// OpenDP's conservative tail; `None` when α is too small for it (below ~10⁻⁴⁰).
pub(crate) fn standard_quantile(alpha: f64) -> Option<f64> {
    let fits = |z: f64| tail_within(1.0, z, alpha);
    let (mut low, mut high) = (0.0f64, 40.0f64);
    if !fits(high) {
        return None;
    }
    for _ in 0..64 {
        let mid = low + (high - low) / 2.0;
        if mid <= low || mid >= high {
            break;
        }
        if fits(mid) {
            high = mid;
        } else {
            low = mid;
        }
    }
    Some(high)
}

/// The largest scale on the grid (see [`GRID_SHIFT`]) at which `fits` holds, by bisection
/// over the whole positive range of f64: 43 evaluations. Because the bracket does not depend
/// on the target, and `fits` only tightens as the target falls, the result is monotone in the
/// target. `None` if even the smallest grid scale does not fit.
fn largest_grid_scale(mut fits: impl FnMut(f64) -> bool) -> Option<f64> {
    let at = |k: u64| f64::from_bits(k << GRID_SHIFT);
    let (mut low, mut high) = (1u64, f64::MAX.to_bits() >> GRID_SHIFT);
    if !fits(at(low)) {
        return None;
    }
    if fits(at(high)) {
        return Some(at(high));
    }
    while high - low > 1 {
        let mid = low + (high - low) / 2;
        if fits(at(mid)) {
            low = mid;
        } else {
            high = mid;
        }
    }
    Some(at(low))
}
