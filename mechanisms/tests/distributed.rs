//! Distributed noise: the bound the intervals rest on, checked against exact convolutions;
//! the intervals' coverage by simulation; the privacy bound against OpenDP's central map; and
//! the shares an agent adds.

use civic_mechanisms::distributed::{
    ShareCount, rho_of_shares, share_sigma_for_rho, sum_half_width, tau,
};
use civic_mechanisms::sampler::GaussianScale;
use civic_mechanisms::{
    AggregationPlan, NoiseKind, NoiseSetting, NoiseSpec, PrivacyChoice, ReleasePlan,
};
use civic_policies::samples::diabetes;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

/// The pmf of N_Z(0, σ²) on [−r, r], normalised over a range wide enough that the rest is
/// below f64's resolution.
fn discrete_gaussian(sigma2: f64, r: i64) -> Vec<f64> {
    let weights: Vec<f64> = (-r..=r)
        .map(|x| (-(x * x) as f64 / (2.0 * sigma2)).exp())
        .collect();
    let total: f64 = weights.iter().sum();
    weights.into_iter().map(|w| w / total).collect()
}

fn convolve(a: &[f64], b: &[f64]) -> Vec<f64> {
    let mut out = vec![0.0; a.len() + b.len() - 1];
    for (i, x) in a.iter().enumerate() {
        for (j, y) in b.iter().enumerate() {
            out[i + j] += x * y;
        }
    }
    out
}

#[test]
fn a_sum_of_shares_is_within_e_to_the_tau_of_the_discrete_gaussian_pointwise() {
    // The closeness behind both the privacy bound and `sum_half_width`: for every x within
    // 6 standard deviations, P[sum = x] / P[N_Z(0, kσ²) = x] ∈ [e^−τ, e^τ].
    for sigma in [0.5f64, 0.6, 0.8, 1.0, 1.5] {
        for k in [2usize, 3, 5] {
            let r = (40.0 * sigma).ceil() as i64 + 10;
            let one = discrete_gaussian(sigma * sigma, r);
            let mut sum = one.clone();
            for _ in 1..k {
                sum = convolve(&sum, &one);
            }
            let reach = (sum.len() as i64 - 1) / 2;
            let target = discrete_gaussian(k as f64 * sigma * sigma, reach);
            let t = tau(sigma, k);
            let spread = sigma * (k as f64).sqrt();
            let mut worst: f64 = 0.0;
            for x in -(6.0 * spread).ceil() as i64..=(6.0 * spread).ceil() as i64 {
                let i = (x + reach) as usize;
                worst = worst.max((sum[i] / target[i]).ln().abs());
            }
            assert!(
                worst <= t + 1e-9,
                "σ {sigma}, k {k}: |ln ratio| reaches {worst}, τ is {t}"
            );
        }
    }
}

#[test]
fn intervals_for_a_sum_of_shares_cover_at_their_stated_rate() {
    // 20,000 sums of k shares each (fixed seed): the 95% interval covers at least 95% (less
    // three standard errors, 0.46 points), and for wide sums not far more.
    let mut rng = ChaCha20Rng::seed_from_u64(15);
    for (sigma, k) in [(0.7, 3usize), (2.0, 5), (10.0, 8), (40.0, 20)] {
        let width = sum_half_width(sigma, k, 0.05).unwrap();
        let scale = GaussianScale::at_least(sigma).unwrap();
        let draws = 20_000;
        let covered = (0..draws)
            .filter(|_| {
                let s: i64 = (0..k).map(|_| scale.sample(&mut rng)).sum();
                (s as f64).abs() <= width
            })
            .count() as f64
            / draws as f64;
        assert!(
            covered >= 0.95 - 0.0046,
            "σ {sigma}, k {k}: ± {width} covers {covered}"
        );
        if sigma * (k as f64).sqrt() > 20.0 {
            assert!(
                covered <= 0.96,
                "σ {sigma}, k {k}: ± {width} covers {covered}"
            );
        }
    }
}

#[test]
fn the_bound_is_never_below_the_central_mechanisms_and_meets_it_for_wide_shares() {
    // h honest shares of σ amount to at least a central discrete Gaussian of σ√h: the
    // bound may only exceed OpenDP's central map, by τ's terms, which vanish for σ ≥ 2.
    for (sigma, h, l2) in [
        (0.6, 3usize, 1.0),
        (1.0, 2, 2.0),
        (2.0, 5, 3.0),
        (25.0, 20, 10.0),
    ] {
        let central = NoiseSpec::gaussian_for_rho(l2, 0.5)
            .map(|mut s| {
                s.scale = sigma * (h as f64).sqrt();
                s
            })
            .unwrap()
            .cost()
            .unwrap()
            .rho
            .as_f64();
        let bound = rho_of_shares(sigma, h, 1, l2, l2);
        assert!(
            bound >= central * (1.0 - 1e-9),
            "σ {sigma}, h {h}: {bound} < {central}"
        );
        if sigma >= 2.0 {
            assert!(
                bound <= central * (1.0 + 1e-6),
                "σ {sigma}, h {h}: {bound} vs {central}"
            );
        }
    }
}

#[test]
fn each_partner_adds_a_share_of_the_calibrated_variance_to_every_slot() {
    let policy = diabetes();
    let query = serde_json::from_value::<civic_policies::Query>(serde_json::json!({
        "dataset": "diabetes",
        "statistic": { "histogram": { "columns": ["deprivation_decile"] } }
    }))
    .unwrap()
    .validate(&policy)
    .unwrap();
    let plan = AggregationPlan::compile(&query, &policy, 10_000).unwrap();
    let count = ShareCount {
        honest: 2,
        partners: 5,
    };
    let noise = ReleasePlan::calibrate(
        &plan,
        PrivacyChoice::Rho(0.01),
        0.05,
        NoiseSetting::Distributed(count),
    )
    .unwrap();
    let sigma = noise.groups[0].shares.unwrap().sigma;
    let expected = share_sigma_for_rho(0.01, count, plan.vector_len, 2.0, 2.0).unwrap();
    assert_eq!(sigma, expected);
    // 2,000 vectors of 10 slots: the sample variance of 20,000 shares is within 4% of σ²
    // (its standard error is √(2/20,000) = 1%).
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    let mut sum_sq = 0.0;
    let mut n = 0.0;
    for _ in 0..2_000 {
        let mut v = vec![100i64; plan.vector_len];
        noise.add_noise_shares(&plan, &mut v, &mut rng).unwrap();
        for x in v {
            sum_sq += ((x - 100) as f64).powi(2);
            n += 1.0;
        }
    }
    let variance = sum_sq / n;
    assert!(
        (variance / (sigma * sigma) - 1.0).abs() < 0.04,
        "{variance} vs {}",
        sigma * sigma
    );
    // Central noise adds nothing at the partner.
    let central = ReleasePlan::new(&plan, PrivacyChoice::Rho(0.01), 0.05).unwrap();
    let mut v = vec![100i64; plan.vector_len];
    central.add_noise_shares(&plan, &mut v, &mut rng).unwrap();
    assert!(v.iter().all(|x| *x == 100));
    // Pure ε cannot be split into shares.
    assert!(
        ReleasePlan::calibrate(
            &plan,
            PrivacyChoice::Epsilon(1.0),
            0.05,
            NoiseSetting::Distributed(count)
        )
        .is_err()
    );
    assert_eq!(noise.groups[0].spec.kind, NoiseKind::DiscreteGaussian);
}
