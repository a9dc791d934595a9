//! Civic's exact samplers against the exact pmf and against OpenDP's samplers, with fixed
//! seeds: chi-square goodness of fit (10⁵ draws per scale, integer and non-integer rational
//! scales), a two-sample test against OpenDP, variance, tails and known answers.
//!
//! Thresholds: each chi-square statistic must stay below the 0.999 quantile of its
//! distribution (Wilson–Hilferty), so a correct sampler fails one scale with probability
//! 10⁻³ for a given seed; the seeds are fixed, so the outcome is too.

use civic_mechanisms::sampler::{GaussianScale, LaplaceScale};
use opendp::domains::{AtomDomain, VectorDomain};
use opendp::measurements::{make_gaussian, make_laplace};
use opendp::measures::{MaxDivergence, ZeroConcentratedDivergence};
use opendp::metrics::{L1Distance, L2Distance};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

const DRAWS: usize = 100_000;

/// The 0.999 quantile of χ² with `df` degrees of freedom (Wilson–Hilferty; z = 3.0902).
fn chi2_critical(df: usize) -> f64 {
    let k = df as f64;
    let a = 2.0 / (9.0 * k);
    k * (1.0 - a + 3.0902 * a.sqrt()).powi(3)
}

/// P[X = x] for a discrete Laplace of scale b.
fn laplace_pmf(b: f64, x: i64) -> f64 {
    let r = (-1.0 / b).exp();
    (1.0 - r) / (1.0 + r) * r.powi(x.unsigned_abs() as i32)
}

/// P[X = x] for a discrete Gaussian of scale σ (normalised over ±(50σ + 50)).
fn gaussian_pmf(sigma: f64) -> impl Fn(i64) -> f64 {
    let reach = (50.0 * sigma + 50.0) as i64;
    let z: f64 = (-reach..=reach)
        .map(|y| (-(y as f64).powi(2) / (2.0 * sigma * sigma)).exp())
        .sum();
    move |x| (-(x as f64).powi(2) / (2.0 * sigma * sigma)).exp() / z
}

/// Chi-square statistic and degrees of freedom of `samples` against `pmf`: one bin per value
/// whose expected count is at least 5, the two tails pooled.
fn chi_square(samples: &[i64], pmf: &dyn Fn(i64) -> f64) -> (f64, usize) {
    let n = samples.len() as f64;
    // The central values with expected count ≥ 5 (the pmfs here are symmetric, unimodal).
    let mut reach = 0i64;
    while pmf(reach + 1) * n >= 5.0 {
        reach += 1;
    }
    let mut observed = vec![0f64; (2 * reach + 3) as usize];
    for &x in samples {
        let bin = if x < -reach {
            0
        } else if x > reach {
            observed.len() - 1
        } else {
            (x + reach + 1) as usize
        };
        observed[bin] += 1.0;
    }
    let central: f64 = (-reach..=reach).map(pmf).sum();
    let tail = (1.0 - central) / 2.0;
    let mut expected = vec![tail * n];
    expected.extend((-reach..=reach).map(|x| pmf(x) * n));
    expected.push(tail * n);
    let stat = observed
        .iter()
        .zip(&expected)
        .filter(|(_, e)| **e > 0.0)
        .map(|(o, e)| (o - e).powi(2) / e)
        .sum();
    (stat, expected.len() - 1)
}

fn laplace_draws(b: f64, seed: u64, n: usize) -> Vec<i64> {
    let scale = LaplaceScale::exact(b).unwrap();
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    (0..n).map(|_| scale.sample(&mut rng)).collect()
}

fn gaussian_draws(sigma: f64, seed: u64, n: usize) -> Vec<i64> {
    let scale = GaussianScale::at_least(sigma).unwrap();
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    (0..n).map(|_| scale.sample(&mut rng)).collect()
}

#[test]
fn laplace_draws_fit_the_exact_pmf_at_integer_and_fractional_scales() {
    // 0.3 and 2.5 are non-integer rationals; 6.000…01 is a scale raised by one ulp.
    for (i, b) in [0.3, 1.0, 2.5, 6.0, 6.0f64.next_up(), 37.0]
        .into_iter()
        .enumerate()
    {
        let samples = laplace_draws(b, 100 + i as u64, DRAWS);
        let (stat, df) = chi_square(&samples, &|x| laplace_pmf(b, x));
        assert!(
            stat < chi2_critical(df),
            "b = {b}: χ² = {stat:.1} on {df} df"
        );
    }
}

#[test]
fn gaussian_draws_fit_the_exact_pmf_at_integer_and_fractional_scales() {
    for (i, sigma) in [0.6, 1.0, 2.449_489_742_783_178, 3.0, 17.25]
        .into_iter()
        .enumerate()
    {
        let samples = gaussian_draws(sigma, 200 + i as u64, DRAWS);
        let (stat, df) = chi_square(&samples, &gaussian_pmf(sigma));
        assert!(
            stat < chi2_critical(df),
            "σ = {sigma}: χ² = {stat:.1} on {df} df"
        );
    }
}

#[test]
fn variance_and_tails_match_the_distributions() {
    // Discrete Laplace of scale b: variance 2r/(1−r)², r = e^(−1/b); P[|X| ≥ k] = 2r^k/(1+r).
    let b = 6.0;
    let samples = laplace_draws(b, 7, DRAWS);
    let r = (-1.0f64 / b).exp();
    let variance = 2.0 * r / (1.0 - r).powi(2);
    let mean = samples.iter().sum::<i64>() as f64 / DRAWS as f64;
    let observed = samples
        .iter()
        .map(|&x| (x as f64 - mean).powi(2))
        .sum::<f64>()
        / DRAWS as f64;
    assert!(
        (observed / variance - 1.0).abs() < 0.03,
        "{observed} vs {variance}"
    );
    let k = 30;
    let tail = samples.iter().filter(|x| x.unsigned_abs() >= k).count() as f64 / DRAWS as f64;
    let expected = 2.0 * r.powi(k as i32) / (1.0 + r);
    // ≈ 0.0113: within 5 standard errors of a binomial proportion.
    let se = (expected * (1.0 - expected) / DRAWS as f64).sqrt();
    assert!((tail - expected).abs() < 5.0 * se, "{tail} vs {expected}");

    // Discrete Gaussian of scale 3: variance within 3% of σ² (the discrete one is a hair
    // below σ² for small σ, 8.9999… at σ = 3).
    let samples = gaussian_draws(3.0, 8, DRAWS);
    let observed = samples.iter().map(|&x| (x as f64).powi(2)).sum::<f64>() / DRAWS as f64;
    assert!((observed / 9.0 - 1.0).abs() < 0.03, "{observed}");
}

/// OpenDP's vector measurement invoked on zeros: `n` of its own samples.
fn opendp_draws(gaussian: bool, scale: f64, n: usize) -> Vec<i64> {
    let zeros = vec![0i64; n];
    let domain = VectorDomain::new(AtomDomain::<i64>::default());
    if gaussian {
        make_gaussian::<_, _, ZeroConcentratedDivergence>(
            domain,
            L2Distance::<f64>::default(),
            scale,
            None,
        )
        .and_then(|m| m.invoke(&zeros))
    } else {
        make_laplace::<_, _, MaxDivergence>(domain, L1Distance::<i64>::default(), scale, None)
            .and_then(|m| m.invoke(&zeros))
    }
    .unwrap()
}

/// The chi-square two-sample statistic on shared bins (tails pooled where either sample
/// expects fewer than 5) and its degrees of freedom.
fn two_sample(a: &[i64], b: &[i64]) -> (f64, usize) {
    let reach = (1..)
        .find(|r| {
            let count = |s: &[i64]| s.iter().filter(|x| x.abs() > *r).count();
            count(a) < 20 || count(b) < 20
        })
        .unwrap();
    let bin = |x: i64| (x.clamp(-reach - 1, reach + 1) + reach + 1) as usize;
    let bins = (2 * reach + 3) as usize;
    let (mut ca, mut cb) = (vec![0f64; bins], vec![0f64; bins]);
    a.iter().for_each(|&x| ca[bin(x)] += 1.0);
    b.iter().for_each(|&x| cb[bin(x)] += 1.0);
    let (na, nb) = (a.len() as f64, b.len() as f64);
    let stat = ca
        .iter()
        .zip(&cb)
        .filter(|(x, y)| *x + *y > 0.0)
        .map(|(x, y)| {
            let pooled = (x + y) / (na + nb);
            (x - na * pooled).powi(2) / (na * pooled) + (y - nb * pooled).powi(2) / (nb * pooled)
        })
        .sum();
    (stat, bins - 1)
}

#[test]
fn the_samplers_draw_what_opendp_draws() {
    for (gaussian, scale) in [
        (false, 2.5),
        (false, 6.0f64.next_up()),
        (true, 2.449_489_742_783_178),
    ] {
        let ours = if gaussian {
            gaussian_draws(scale, 300, DRAWS)
        } else {
            laplace_draws(scale, 301, DRAWS)
        };
        let theirs = opendp_draws(gaussian, scale, 20_000);
        let (stat, df) = two_sample(&ours, &theirs);
        assert!(
            stat < chi2_critical(df),
            "gaussian {gaussian}, scale {scale}: χ² = {stat:.1} on {df} df"
        );
    }
}

#[test]
fn a_wide_gaussian_takes_the_arbitrary_precision_path_and_stays_centred() {
    // σ = 10⁹: products outgrow u128 for candidates a few σ out, and those coins are computed
    // with arbitrary-precision integers.
    let sigma = 1.0e9;
    let samples = gaussian_draws(sigma, 9, 20_000);
    let mean = samples.iter().map(|&x| x as f64).sum::<f64>() / 20_000.0;
    let sd = (samples.iter().map(|&x| (x as f64).powi(2)).sum::<f64>() / 20_000.0).sqrt();
    assert!(mean.abs() < 5.0 * sigma / 20_000f64.sqrt(), "{mean}");
    assert!((sd / sigma - 1.0).abs() < 0.03, "{sd}");
}

#[test]
fn fixed_seeds_give_known_answers() {
    assert_eq!(laplace_draws(6.0, 42, 8), KNOWN_LAPLACE);
    assert_eq!(gaussian_draws(3.0, 42, 8), KNOWN_GAUSSIAN);
}

const KNOWN_LAPLACE: [i64; 8] = [-15, -9, 3, -7, 7, -2, 6, -1];
const KNOWN_GAUSSIAN: [i64; 8] = [0, -1, 4, 5, 6, 1, 1, 0];
