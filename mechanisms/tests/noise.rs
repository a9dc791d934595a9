//! Noise, accuracy and accounting against exact values and the exact distributions.
//!
//! OpenDP draws its randomness from OpenSSL and offers no seed, so the statistical tests here
//! cannot be replayed bit for bit. Each threshold is set so that a correct sampler fails it
//! with probability below 10⁻⁵; the figure is stated beside each.

use civic_mechanisms::accounting::epsilon_at_delta;
use civic_mechanisms::accuracy::{
    epsilon_for_half_width, half_width, rho_for_half_width, scale_for_half_width,
};
use civic_mechanisms::{NoiseKind, NoiseSpec};
use civic_policies::Rho;
use opendp::combinators::CompositionMeasure;
use opendp::measures::ZeroConcentratedDivergence;
use proptest::prelude::*;

fn everything() -> Rho {
    Rho::cap(1e6).expect("valid")
}

fn spec(kind: NoiseKind, scale: f64) -> NoiseSpec {
    NoiseSpec {
        kind,
        scale,
        sensitivity: 1.0,
    }
}

/// `n` draws of the noise alone (released on zeros).
fn draw(kind: NoiseKind, scale: f64, n: usize) -> Vec<i64> {
    spec(kind, scale)
        .release(&vec![0; n], everything())
        .expect("samples")
}

#[test]
fn privacy_maps_give_the_stated_cost_exactly() {
    // One resident, one row: Δ₁ = 1, ε = 0.5 → scale 2.
    let spec = NoiseSpec::laplace_for_epsilon(1, 0.5).unwrap();
    assert_eq!(spec.scale, 2.0);
    let cost = spec.cost().unwrap();
    assert_eq!(cost.epsilon, Some(0.5));
    assert_eq!(cost.rho, Rho::cost_of_pure_epsilon(0.5).unwrap());

    // A resident in up to three partners' data, one row each: Δ₁ = 3 at ε = 1 → scale 3,
    // and the map at Δ₁ = 3 is exactly ε = 1.
    let spec = NoiseSpec::laplace_for_epsilon(3, 1.0).unwrap();
    assert_eq!((spec.scale, spec.cost().unwrap().epsilon), (3.0, Some(1.0)));

    // Discrete Gaussian: Δ₂ = 1 at ρ = 1/32 → σ = 4; Δ₂ = 3 at ρ = 1/2 → σ = 3.
    let spec = NoiseSpec::gaussian_for_rho(1.0, 0.03125).unwrap();
    assert_eq!(spec.scale, 4.0);
    assert_eq!(spec.cost().unwrap().rho, Rho::cost(0.03125).unwrap());
    let spec = NoiseSpec::gaussian_for_rho(3.0, 0.5).unwrap();
    assert_eq!(spec.scale, 3.0);
    assert_eq!(
        spec.cost().unwrap(),
        civic_mechanisms::noise::Cost {
            epsilon: None,
            rho: Rho::cost(0.5).unwrap()
        }
    );
}

#[test]
fn a_release_over_budget_is_refused_before_sampling() {
    let spec = NoiseSpec::laplace_for_epsilon(1, 1.0).unwrap();
    let err = spec
        .release(&[10, 20], Rho::cost_of_pure_epsilon(0.5).unwrap())
        .unwrap_err();
    assert_eq!(err.code(), "mechanism.over_budget");
    assert!(
        err.to_string().contains("costs ρ=0.5") && err.to_string().contains("nothing was released"),
        "{err}"
    );
    assert_eq!(
        spec.release(&[10, 20], spec.cost().unwrap().rho)
            .unwrap()
            .len(),
        2
    );
}

#[test]
fn bad_parameters_are_refused_with_their_names() {
    for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        assert!(
            NoiseSpec::laplace_for_epsilon(1, bad)
                .unwrap_err()
                .to_string()
                .contains("epsilon must be")
        );
        assert!(
            NoiseSpec::gaussian_for_rho(1.0, bad)
                .unwrap_err()
                .to_string()
                .contains("rho must be")
        );
        assert!(
            NoiseSpec::gaussian_for_rho(bad, 0.1)
                .unwrap_err()
                .to_string()
                .contains("L2 sensitivity")
        );
    }
    assert!(NoiseSpec::laplace_for_epsilon(0, 1.0).is_err());
    let spec = NoiseSpec::laplace_for_epsilon(1, 1.0).unwrap();
    for alpha in [0.0, 1.0, -0.1, f64::NAN] {
        assert!(
            half_width(&spec, alpha)
                .unwrap_err()
                .to_string()
                .contains("alpha must be")
        );
    }
    assert!(epsilon_at_delta(Rho::cost(0.1).unwrap(), 0.0).is_err());
}

/// Chi-square of `samples` against `pmf` over the integers −k..=k plus two tail bins.
fn chi_square(samples: &[i64], pmf: impl Fn(i64) -> f64, k: i64) -> (f64, usize) {
    let n = samples.len() as f64;
    let mut observed = vec![0f64; (2 * k + 3) as usize];
    for &x in samples {
        let bin = if x < -k {
            0
        } else if x > k {
            2 * k + 2
        } else {
            x + k + 1
        };
        observed[bin as usize] += 1.0;
    }
    let inner: Vec<f64> = (-k..=k).map(&pmf).collect();
    let tail = (1.0 - inner.iter().sum::<f64>()) / 2.0;
    let expected: Vec<f64> = std::iter::once(tail)
        .chain(inner)
        .chain(std::iter::once(tail))
        .map(|p| p * n)
        .collect();
    let chi2 = observed
        .iter()
        .zip(&expected)
        .map(|(o, e)| (o - e).powi(2) / e)
        .sum();
    (chi2, observed.len() - 1)
}

#[test]
fn discrete_laplace_samples_follow_the_exact_pmf() {
    let b = 2.0f64;
    let noise = draw(NoiseKind::DiscreteLaplace, b, 50_000);
    let q = (-1.0 / b).exp();
    let (chi2, df) = chi_square(
        &noise,
        |x| (1.0 - q) / (1.0 + q) * q.powi(x.abs() as i32),
        8,
    );
    // df = 18; P[χ²₁₈ > 62.7] ≈ 10⁻⁶ (Wilson–Hilferty).
    assert_eq!(df, 18);
    assert!(chi2 < 62.7, "chi-square {chi2} on {df} degrees of freedom");
}

#[test]
fn discrete_gaussian_samples_follow_the_exact_pmf() {
    let sigma = 3.0f64;
    let noise = draw(NoiseKind::DiscreteGaussian, sigma, 50_000);
    let weight = |x: i64| (-(x * x) as f64 / (2.0 * sigma * sigma)).exp();
    let norm: f64 = (-200..=200).map(weight).sum();
    let (chi2, df) = chi_square(&noise, |x| weight(x) / norm, 9);
    // df = 20; P[χ²₂₀ > 66.5] ≈ 10⁻⁶.
    assert_eq!(df, 20);
    assert!(chi2 < 66.5, "chi-square {chi2} on {df} degrees of freedom");
}

#[test]
fn the_95_percent_interval_covers_95_percent_of_the_time() {
    // 40,000 cells at scale 50 each: the half-width from OpenDP, and the share of cells whose
    // noise is inside it. OpenDP's discrete half-widths are slightly conservative (true
    // coverage 95.07% Laplace, 95.12% Gaussian); with a binomial standard error of 0.11%,
    // [94%, 96%] is at least 8 standard errors from either (p < 10⁻¹⁵).
    for kind in [NoiseKind::DiscreteLaplace, NoiseKind::DiscreteGaussian] {
        let spec = spec(kind, 50.0);
        let a = half_width(&spec, 0.05).unwrap();
        let noise = spec.release(&vec![0; 40_000], everything()).unwrap();
        let covered = noise.iter().filter(|x| (x.abs() as f64) < a).count() as f64 / 4e4;
        assert!(
            (0.94..=0.96).contains(&covered),
            "{kind:?}: half-width {a}, coverage {covered}"
        );
    }
}

#[test]
fn noise_has_mean_zero_within_its_standard_error() {
    // Discrete Laplace, b = 10: variance 2q/(1 − q)², q = e^(−1/b). 100,000 draws; |mean| < 5 SE
    // (p ≈ 6·10⁻⁷).
    let b = 10.0f64;
    let q = (-1.0 / b).exp();
    let sd = (2.0 * q).sqrt() / (1.0 - q);
    let noise = draw(NoiseKind::DiscreteLaplace, b, 100_000);
    let mean = noise.iter().sum::<i64>() as f64 / 1e5;
    let se = sd / 1e5f64.sqrt();
    assert!(mean.abs() < 5.0 * se, "mean {mean}, standard error {se}");
    let var = noise
        .iter()
        .map(|x| (*x as f64 - mean).powi(2))
        .sum::<f64>()
        / (1e5 - 1.0);
    assert!(
        (var.sqrt() / sd - 1.0).abs() < 0.02,
        "sd {} vs {sd}",
        var.sqrt()
    );
}

#[test]
fn a_target_half_width_gives_the_budget_that_meets_it() {
    // Laplace: the ε for a 95% half-width of 10 counts at Δ₁ = 1, and back.
    let epsilon = epsilon_for_half_width(1, 10.0, 0.05).unwrap();
    let spec = NoiseSpec::laplace_for_epsilon(1, epsilon).unwrap();
    let a = half_width(&spec, 0.05).unwrap();
    assert!(a <= 10.0 + 1e-9 && a > 9.9, "{a}");
    // Gaussian: OpenDP's search lands one unit on the conservative side at most.
    let rho = rho_for_half_width(2.0, 10.0, 0.05).unwrap();
    let spec = NoiseSpec::gaussian_for_rho(2.0, rho).unwrap();
    let a = half_width(&spec, 0.05).unwrap();
    assert!((10.0..=11.0).contains(&a), "{a}");
    assert!(scale_for_half_width(NoiseKind::DiscreteLaplace, 0.5, 0.05).is_err());
}

#[test]
fn rho_is_reported_as_epsilon_delta_through_opendp() {
    // OpenDP's own reference: ρ = 0.03125 at δ = 10⁻³ is ε = 0.6880024554878085.
    let eps = epsilon_at_delta(Rho::cost(0.03125).unwrap(), 1e-3).unwrap();
    assert!((eps - 0.688_002_455_487_808_5).abs() < 1e-9, "{eps}");
    // Tighter than the classical bound ρ + 2√(ρ ln(1/δ)).
    let classical = 0.03125 + 2.0 * (0.03125f64 * 1e3f64.ln()).sqrt();
    assert!(eps < classical);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

    #[test]
    fn our_rho_arithmetic_matches_opendps_compositor(costs in prop::collection::vec(1e-6f64..2.0, 1..40)) {
        let ours: u64 = costs.iter().map(|c| Rho::cost(*c).unwrap().units()).sum();
        let ours = Rho::from_units(ours).as_f64();
        let theirs = ZeroConcentratedDivergence.compose(costs.clone()).unwrap();
        // Each of our costs rounds up to 10⁻¹²; OpenDP rounds the f64 sum up: ours is never less.
        prop_assert!(ours >= theirs, "ours {ours} < OpenDP {theirs}");
        prop_assert!(ours - theirs <= costs.len() as f64 * 1e-12 + 1e-12, "ours {ours} vs OpenDP {theirs}");
    }
}
