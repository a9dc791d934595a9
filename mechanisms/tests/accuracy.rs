//! Confidence-interval half-widths and their inverses: coverage (never narrower than the exact
//! half-width), tightness, behaviour at the switch from OpenDP's exact search to the
//! closed-form bound, consistency of the inverse with the forward function, and extreme
//! inputs. Speed is measured by the benches, not here; a hang would time the suite out.

use civic_mechanisms::accounting::epsilon_at_delta;
use civic_mechanisms::accuracy::{
    EXACT_GAUSSIAN_MAX_SCALE, EXACT_GAUSSIAN_MIN_ALPHA, discrete_gaussian_half_width_bound,
    epsilon_for_half_width, excluded_half_width, half_width, rho_for_half_width,
    scale_for_half_width,
};
use civic_mechanisms::{MechanismError, NoiseKind, NoiseSpec};
use civic_policies::Rho;
use opendp::accuracy::{discrete_gaussian_scale_to_accuracy, discrete_laplacian_scale_to_accuracy};
use opendp::combinators::make_zCDP_to_approxDP;
use opendp::core::{Function, Measurement, PrivacyMap};
use opendp::domains::AtomDomain;
use opendp::measures::ZeroConcentratedDivergence;
use opendp::metrics::AbsoluteDistance;

const KINDS: [NoiseKind; 2] = [NoiseKind::DiscreteLaplace, NoiseKind::DiscreteGaussian];

fn spec(kind: NoiseKind, scale: f64) -> NoiseSpec {
    NoiseSpec {
        kind,
        scale,
        sensitivity: 1.0,
    }
}

fn gaussian(sigma: f64, alpha: f64) -> f64 {
    excluded_half_width(&spec(NoiseKind::DiscreteGaussian, sigma), alpha).unwrap()
}

fn opendp_gaussian(sigma: f64, alpha: f64) -> f64 {
    discrete_gaussian_scale_to_accuracy(sigma, alpha).unwrap()
}

/// P[|X| ≥ a] for X ~ N_Z(0, σ²), summed term by term (smallest terms first) over ±40σ,
/// beyond which the mass is below e^-800.
fn exact_gaussian_tail(sigma: f64, a: f64) -> f64 {
    let pdf = |x: f64| (-(x / sigma).powi(2) / 2.0).exp();
    let end = (40.0 * sigma).ceil() + a;
    let (mut tail, mut rest) = (0.0, 0.0);
    let mut x = end;
    while x >= 1.0 {
        if x >= a {
            tail += pdf(x);
        } else {
            rest += pdf(x);
        }
        x -= 1.0;
    }
    let normaliser = 1.0 + 2.0 * (tail + rest);
    2.0 * tail / normaliser
}

fn invalid(e: &MechanismError) -> bool {
    e.code() == "mechanism.invalid_parameter"
}

#[test]
fn gaussian_half_widths_at_the_switch_cover_and_stay_within_a_few_units() {
    // Just below the threshold the half-width is OpenDP's exact search (at α less a 10⁻¹⁰
    // allowance for its rounding); just above, the closed-form bound. The bound is never
    // narrower than the exact value and at most two units wider (observed: equal for
    // 10⁻⁶ ≤ α ≤ 0.2, one unit wider at α = 0.5, a ratio of 1.0015), and the switch never
    // makes the half-width fall.
    let below = EXACT_GAUSSIAN_MAX_SCALE;
    let above = EXACT_GAUSSIAN_MAX_SCALE.next_up();
    for alpha in [0.5, 0.2, 0.05, 0.01, 1e-3, 1e-4, EXACT_GAUSSIAN_MIN_ALPHA] {
        let exact_below = opendp_gaussian(below, alpha);
        let ours_below = gaussian(below, alpha);
        assert!(
            ours_below >= exact_below && ours_below <= exact_below + 1.0,
            "α={alpha}: {ours_below} vs OpenDP {exact_below}"
        );
        let exact_above = opendp_gaussian(above, alpha);
        let ours_above = gaussian(above, alpha);
        assert!(
            ours_above >= exact_above,
            "α={alpha}: bound {ours_above} narrower than exact {exact_above}"
        );
        assert!(
            ours_above <= exact_above + 2.0 && ours_above / exact_above <= 1.01,
            "α={alpha}: bound {ours_above} vs exact {exact_above}, ratio {}",
            ours_above / exact_above
        );
        assert!(ours_below <= ours_above, "α={alpha}: falls at the switch");
        assert_eq!(ours_above, ours_above.round(), "whole number");
    }
}

#[test]
fn the_bound_is_never_narrower_than_opendps_exact_half_width_at_any_scale() {
    // The bound alone, at scales where OpenDP's exact search is still fast, small σ included.
    for sigma in [0.1, 0.5, 1.0, 2.5, 10.0, 99.5, 1e3, 3.3e3, 1e4] {
        for alpha in [0.9, 0.5, 0.05, 0.01, 1e-3, 1e-6, 1e-9] {
            let bound = discrete_gaussian_half_width_bound(sigma, alpha).unwrap();
            let exact = opendp_gaussian(sigma, alpha);
            assert!(
                bound >= exact,
                "σ={sigma} α={alpha}: {bound} < exact {exact}"
            );
            // Within two units (Proposition 25 shifts the continuous tail by one; observed: 0
            // or 1 over this whole grid).
            assert!(
                bound <= exact + 2.0,
                "σ={sigma} α={alpha}: {bound} vs exact {exact}"
            );
        }
    }
}

#[test]
fn the_bound_covers_by_exact_summation_of_the_pmf() {
    // Independently of OpenDP: sum the discrete Gaussian pmf and check P[|X| ≥ a] ≤ α at the
    // bound's a, and that it is not needlessly wide: two units narrower already fails.
    for sigma in [1e3, 2.5e3, 1e4] {
        for alpha in [0.5, 0.05, 0.01, 1e-3, 1e-6, 1e-9] {
            let a = discrete_gaussian_half_width_bound(sigma, alpha).unwrap();
            let tail = exact_gaussian_tail(sigma, a);
            assert!(tail <= alpha, "σ={sigma} α={alpha}: P[|X| ≥ {a}] = {tail}");
            let narrower = exact_gaussian_tail(sigma, a - 2.0);
            assert!(narrower > alpha, "σ={sigma} α={alpha}: {a} is 2 too wide");
        }
    }
    // And through the public function above the threshold.
    let a = gaussian(5e3, 0.05);
    assert!(exact_gaussian_tail(5e3, a) <= 0.05);
}

#[test]
fn tiny_alpha_uses_the_subgaussian_bound_and_still_covers() {
    // Below ~10⁻⁴⁰ OpenDP's f32 erfc cannot certify a tail; the sub-Gaussian bound
    // σ√(2 ln(2/α)) takes over. Compare with the exact tail in log space at σ = 10:
    // Σ_{x≥a} e^(−x²/2σ²) ≤ e^(−a²/2σ²) / (1 − e^(−a/σ²)), normaliser ≥ σ√(2π).
    for alpha in [1e-50, 1e-100, 1e-300, f64::MIN_POSITIVE] {
        let sigma = 10.0;
        let a = gaussian(sigma, alpha);
        let ln_tail = (2.0f64).ln()
            - a * a / (2.0 * sigma * sigma)
            - (1.0 - (-a / (sigma * sigma)).exp()).ln()
            - (sigma * (2.0 * std::f64::consts::PI).sqrt()).ln();
        assert!(ln_tail <= alpha.ln(), "α={alpha}: a={a}");
        // Within 1% of the continuous quantile's order: a ≤ 1.01 σ√(2 ln(2/α)) + 1.
        assert!(a <= 1.01 * sigma * (2.0 * (2.0 / alpha).ln()).sqrt() + 1.0);
    }
}

#[test]
fn laplace_half_widths_match_opendp_and_never_fall_below_it() {
    for b in [1e-2, 0.1, 0.5, 1.0, 10.0, 1e3, 1e6, 1e12] {
        for alpha in [0.9, 0.5, 0.05, 1e-3, 1e-12] {
            let ours = excluded_half_width(&spec(NoiseKind::DiscreteLaplace, b), alpha).unwrap();
            let theirs = discrete_laplacian_scale_to_accuracy(b, alpha).unwrap();
            let allowance = 64.0 * f64::EPSILON * b * (1.0 + (2.0 / alpha).ln());
            assert!(
                ours >= theirs && ours - theirs <= allowance + 1e-12 * theirs.abs(),
                "b={b} α={alpha}: {ours} vs OpenDP {theirs}"
            );
            // Coverage from the closed form at the whole number ⌈a⌉ (as a log to avoid overflow).
            let k = ours.ceil().max(1.0);
            let ln_tail = 2f64.ln() + (1.0 - k) / b - (1.0 / b + (-1.0 / b).exp().ln_1p());
            assert!(ln_tail <= alpha.ln() + 1e-12, "b={b} α={alpha}");
        }
    }
    // Where OpenDP's form overflows (it returns −∞ below b ≈ 1/710), a small positive width.
    for b in [1e-3, 1e-10, 1e-300] {
        let a = excluded_half_width(&spec(NoiseKind::DiscreteLaplace, b), 0.05).unwrap();
        assert!(a > 0.0 && a < 1.0, "b={b}: {a}");
        assert!(discrete_laplacian_scale_to_accuracy(b, 0.05).unwrap() < 0.0);
    }
}

fn targets(alpha: f64) -> Vec<f64> {
    let mut targets = vec![1.0, 1.5, 2.0, 3.0];
    let mut t = 3.0f64;
    while t < 1e15 {
        t *= 1.37;
        targets.push(t);
    }
    // Every whole number around the switch: the exact half-width at the threshold scale.
    let switch = opendp_gaussian(
        EXACT_GAUSSIAN_MAX_SCALE,
        alpha.max(EXACT_GAUSSIAN_MIN_ALPHA),
    );
    targets.extend((-6..=6).map(|d| switch + f64::from(d)));
    targets.extend([1e15, 1e300, f64::MAX]);
    targets.sort_by(f64::total_cmp);
    targets
}

#[test]
fn the_inverse_meets_its_target_is_nearly_the_largest_and_is_monotone() {
    for alpha in [0.5, 0.05, 0.01, 1e-6, 1e-12] {
        for kind in KINDS {
            let mut previous = 0.0;
            for target in targets(alpha) {
                let scale = scale_for_half_width(kind, target, alpha).unwrap();
                let a = half_width(&spec(kind, scale), alpha).unwrap();
                assert!(
                    a <= target,
                    "{kind:?} α={alpha}: {target} gave {scale} → {a}"
                );
                // The grid's spacing is below 10⁻⁹ relative: a slightly wider scale misses.
                if scale < 1e300 {
                    let wider = half_width(&spec(kind, scale * (1.0 + 1e-9)), alpha).unwrap();
                    let whole = match kind {
                        NoiseKind::DiscreteGaussian => target.floor(),
                        _ => target,
                    };
                    assert!(
                        wider > whole,
                        "{kind:?} α={alpha}: {target} not the largest"
                    );
                }
                assert!(
                    scale >= previous,
                    "{kind:?} α={alpha}: not monotone at {target}"
                );
                previous = scale;
            }
        }
    }
}

#[test]
fn the_budget_for_a_target_half_width_round_trips_through_calibration() {
    // What a researcher asking for accuracy gets: the ρ (or ε), calibrated into a mechanism
    // the way a release is, has a half-width within the target.
    for alpha in [0.05, 1e-6] {
        for target in [1.0, 7.0, 150.0, 1_961.0, 1_963.0, 1e4, 1e7, 1e15] {
            let rho = rho_for_half_width(3.0, target, alpha).unwrap();
            let spec = NoiseSpec::gaussian_for_rho(3.0, rho).unwrap();
            let a = half_width(&spec, alpha).unwrap();
            assert!(a <= target, "α={alpha} ρ for {target}: {a}");
            let epsilon = epsilon_for_half_width(3, target, alpha).unwrap();
            let spec = NoiseSpec::laplace_for_epsilon(3, epsilon).unwrap();
            let a = half_width(&spec, alpha).unwrap();
            assert!(a <= target, "α={alpha} ε for {target}: {a}");
        }
    }
}

#[test]
fn extreme_inputs_return_a_value_or_a_clear_error() {
    // ρ = 10⁻³⁰⁰ at Δ₂ = 1 is σ ≈ 7 × 10¹⁴⁹: OpenDP's search would never return.
    let tiny_rho = NoiseSpec::gaussian_for_rho(1.0, 1e-300).unwrap();
    let a = excluded_half_width(&tiny_rho, 0.05).unwrap();
    assert!(
        a >= 1.959 * tiny_rho.scale && a <= 1.97 * tiny_rho.scale,
        "{a}"
    );
    for kind in KINDS {
        for scale in [5e-324, 1e-300, 1e-3, 1.0, 7e6, 1e15, 1e300] {
            for alpha in [1e-300, 1e-12, 0.05, 0.5, 1.0 - 1e-12] {
                let a = excluded_half_width(&spec(kind, scale), alpha).unwrap();
                assert!(a.is_finite() && a > 0.0, "{kind:?} {scale} {alpha}: {a}");
                if kind == NoiseKind::DiscreteGaussian {
                    assert!(a >= 1.0 && a == a.floor(), "{scale} {alpha}: {a}");
                }
            }
        }
        // Half-widths beyond f64.
        let e = excluded_half_width(&spec(kind, f64::MAX), 0.05).unwrap_err();
        assert!(
            invalid(&e) && e.to_string().contains("beyond the range of f64"),
            "{e}"
        );
        // Targets, both kinds, at extreme α.
        for target in [1.0, 1e15, 1e300, f64::MAX] {
            for alpha in [1e-300, 1e-12, 0.05, 1.0 - 1e-12] {
                let s = scale_for_half_width(kind, target, alpha).unwrap();
                assert!(s.is_finite() && s > 0.0, "{kind:?} {target} {alpha}: {s}");
            }
        }
        // Invalid scale, α and target: named in the error.
        for scale in [0.0, -1.0, f64::NAN, f64::INFINITY, -0.0] {
            let e = excluded_half_width(&spec(kind, scale), 0.05).unwrap_err();
            assert!(invalid(&e) && e.to_string().contains("noise scale"), "{e}");
        }
        for alpha in [0.0, 1.0, -0.1, 1.5, f64::NAN, f64::INFINITY] {
            let e = excluded_half_width(&spec(kind, 10.0), alpha).unwrap_err();
            assert!(
                invalid(&e) && e.to_string().contains("alpha must be"),
                "{e}"
            );
            let e = scale_for_half_width(kind, 10.0, alpha).unwrap_err();
            assert!(
                invalid(&e) && e.to_string().contains("alpha must be"),
                "{e}"
            );
        }
        for target in [0.5, 0.0, -3.0, f64::NAN, f64::INFINITY] {
            let e = scale_for_half_width(kind, target, 0.05).unwrap_err();
            assert!(invalid(&e) && e.to_string().contains("half-width"), "{e}");
        }
    }
    // Budgets for extreme targets: Ok, or a clear error when ρ would underflow f64.
    assert!(rho_for_half_width(1.0, 1e15, 0.05).unwrap() > 0.0);
    assert!(epsilon_for_half_width(1, 1e15, 0.05).unwrap() > 0.0);
    assert!(rho_for_half_width(1.0, 1e15, 1e-12).unwrap() > 0.0);
    assert!(epsilon_for_half_width(1, 1e15, 1.0 - 1e-12).unwrap() > 0.0);
    let e = rho_for_half_width(1.0, 1e300, 0.05).unwrap_err();
    assert!(
        invalid(&e) && e.to_string().contains("outside the range of f64"),
        "{e}"
    );
    for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        let e = rho_for_half_width(bad, 10.0, 0.05).unwrap_err();
        assert!(
            invalid(&e) && e.to_string().contains("L2 sensitivity"),
            "{e}"
        );
    }
    let e = epsilon_for_half_width(0, 10.0, 0.05).unwrap_err();
    assert!(
        invalid(&e) && e.to_string().contains("L1 sensitivity"),
        "{e}"
    );
}

fn opendp_profile(rho: f64) -> opendp::measures::PrivacyProfile {
    let carrier = Measurement::new(
        AtomDomain::<i64>::default(),
        AbsoluteDistance::<i64>::default(),
        ZeroConcentratedDivergence,
        Function::new(|x: &i64| *x),
        PrivacyMap::new(move |_: &i64| rho),
    )
    .unwrap();
    make_zCDP_to_approxDP(carrier).unwrap().map(&1).unwrap()
}

#[test]
fn epsilon_at_delta_is_opendps_conversion_proven_and_within_a_relative_1e_12() {
    // Where OpenDP's own inverse is fast: the same ε to a relative 10⁻¹², never below it.
    for rho in [1e-6, 0.03125, 1.0, 40.0] {
        for delta in [1e-300, 1e-12, 1e-6, 0.1] {
            let ours = epsilon_at_delta(Rho::cost(rho).unwrap(), delta).unwrap();
            let rho_charged = Rho::cost(rho).unwrap().as_f64();
            let profile = opendp_profile(rho_charged);
            let theirs = profile.epsilon(delta).unwrap();
            assert!(
                ours >= theirs * (1.0 - 1e-15) && ours <= theirs * (1.0 + 2e-12) + 1e-15,
                "ρ={rho} δ={delta}: {ours} vs OpenDP {theirs}"
            );
            assert!(profile.delta(ours).unwrap() <= delta, "ρ={rho} δ={delta}");
        }
    }
}

#[test]
fn epsilon_at_delta_handles_extreme_inputs() {
    // ρ from 0 to the largest a Rho holds; δ from the smallest normal to just below 1.
    for units in [0u64, 1, 1_000_000_000_000, 10u64.pow(18), u64::MAX] {
        let rho = Rho::from_units(units);
        for delta in [
            f64::MIN_POSITIVE,
            1e-300,
            1e-12,
            0.5,
            1.0 - 1e-12,
            1.0 - 1e-16,
        ] {
            let eps = epsilon_at_delta(rho, delta).unwrap();
            assert!(eps.is_finite() && eps >= 0.0, "{rho} δ={delta}: {eps}");
            if units == 0 {
                assert_eq!(eps, 0.0);
            } else {
                // Proven by OpenDP's profile (a zero ε only where δ(0) ≤ δ).
                let d = opendp_profile(rho.as_f64()).delta(eps).unwrap();
                assert!(d <= delta, "{rho} δ={delta}: δ({eps}) = {d}");
            }
        }
    }
    // Near-zero ε where OpenDP's inverse walks the subnormals (26 to 82 ms there).
    assert_eq!(
        epsilon_at_delta(Rho::cost(1e-12).unwrap(), 0.5).unwrap(),
        0.0
    );
    assert_eq!(
        epsilon_at_delta(Rho::cost(1.0).unwrap(), 1.0 - 1e-12).unwrap(),
        0.0
    );
    for delta in [0.0, 1.0, -1e-3, f64::NAN] {
        let e = epsilon_at_delta(Rho::cost(1.0).unwrap(), delta).unwrap_err();
        assert!(invalid(&e) && e.to_string().contains("delta"), "{e}");
    }
}

#[test]
fn published_closed_intervals_cover_at_their_rate_not_a_unit_more() {
    // The released value ± a is a closed interval, so a is one unit below OpenDP's
    // excluded end point: at σ = 3 the 95% interval was ± 7 (covering 98.8%); it is ± 6,
    // covering 97.0%, and ± 5 would cover 93.4%. Checked here from the exact pmf.
    for (sigma, alpha) in [(3.0, 0.05), (1.0, 0.05), (10.0, 0.1), (30.0, 0.01)] {
        let a = half_width(&spec(NoiseKind::DiscreteGaussian, sigma), alpha).unwrap();
        let excluded =
            excluded_half_width(&spec(NoiseKind::DiscreteGaussian, sigma), alpha).unwrap();
        assert_eq!(a, excluded - 1.0, "σ {sigma}");
        let weight = |x: i64| (-(x * x) as f64 / (2.0 * sigma * sigma)).exp();
        let reach = (60.0 * sigma) as i64;
        let total: f64 = (-reach..=reach).map(weight).sum();
        let covered: f64 = (-(a as i64)..=a as i64).map(weight).sum::<f64>() / total;
        assert!(covered >= 1.0 - alpha, "σ {sigma}: ± {a} covers {covered}");
        let wider: f64 = (-(a as i64 + 1)..=a as i64 + 1).map(weight).sum::<f64>() / total;
        assert!(wider > covered, "σ {sigma}");
        // One unit narrower would not cover: a is the least.
        let narrower: f64 = (-(a as i64 - 1)..=a as i64 - 1).map(weight).sum::<f64>() / total;
        assert!(
            a == 0.0 || narrower < 1.0 - alpha,
            "σ {sigma}: ± {} covers {narrower}",
            a - 1.0
        );
    }
    let three = half_width(&spec(NoiseKind::DiscreteGaussian, 3.0), 0.05).unwrap();
    assert_eq!(three, 6.0);
}
