//! Shown counts under the NHS profile (1–7 redacted, the rest rounded to 5): their intervals
//! cover at the stated rate given that they were shown, by simulation with fixed seeds.

use civic_mechanisms::sampler::{GaussianScale, LaplaceScale};
use civic_mechanisms::suppression::{NoiseCdf, shown_count_interval};
use civic_policies::{Disclosed, DisclosureProfile};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

const ALPHA: f64 = 0.05;

/// Coverage given shown, for true count `t`, over `draws` noisy counts; None when too few
/// were shown to say. Also the coverage of the unconditional interval ± `width` (widened by
/// the rounding), the one released before.
fn coverage(
    t: i64,
    draws: usize,
    noise: &NoiseCdf,
    sample: &mut dyn FnMut() -> i64,
    width: f64,
) -> Option<(f64, f64, usize)> {
    let nhs = DisclosureProfile::Nhs;
    let (mut shown, mut covered, mut covered_before) = (0usize, 0usize, 0usize);
    for _ in 0..draws {
        let Disclosed::Value(x) = nhs.apply(t + sample()) else {
            continue;
        };
        shown += 1;
        let (lo, hi) = shown_count_interval(x, noise, nhs, ALPHA);
        covered += usize::from(lo <= t as f64 && t as f64 <= hi);
        let (lo, hi) = ((x as f64 - width - 2.0).max(0.0), x as f64 + width + 2.0);
        covered_before += usize::from(lo <= t as f64 && t as f64 <= hi);
    }
    (shown >= 2_000).then(|| {
        (
            covered as f64 / shown as f64,
            covered_before as f64 / shown as f64,
            shown,
        )
    })
}

#[test]
fn shown_counts_cover_given_that_they_were_shown() {
    let mut rng = ChaCha20Rng::seed_from_u64(2026);
    // Discrete Laplace b = 1 and b = 2 (closed 95% half-widths 3 and 6), discrete Gaussian
    // σ = 3 (6), four distributed shares of σ = 0.8 (3; narrow, so their law is convolved
    // exactly).
    let narrow = LaplaceScale::exact(1.0).unwrap();
    let laplace = LaplaceScale::exact(2.0).unwrap();
    let gaussian = GaussianScale::at_least(3.0).unwrap();
    let share = GaussianScale::at_least(0.8).unwrap();
    let cases: Vec<(&str, NoiseCdf, f64)> = vec![
        ("laplace b=1", NoiseCdf::laplace(1.0).unwrap(), 3.0),
        ("laplace b=2", NoiseCdf::laplace(2.0).unwrap(), 6.0),
        ("gaussian σ=3", NoiseCdf::gaussian(3.0).unwrap(), 6.0),
        (
            "4 shares σ=0.8",
            NoiseCdf::gaussian_shares(0.8, 4).unwrap(),
            3.0,
        ),
    ];
    let mut worst_before: f64 = 1.0;
    for (name, noise, width) in &cases {
        for t in [0i64, 2, 3, 4, 5, 6, 8, 10, 15, 30, 200] {
            let mut sample = || -> i64 {
                match *name {
                    "laplace b=1" => narrow.sample(&mut rng),
                    "laplace b=2" => laplace.sample(&mut rng),
                    "gaussian σ=3" => gaussian.sample(&mut rng),
                    _ => (0..4).map(|_| share.sample(&mut rng)).sum(),
                }
            };
            let Some((now, before, shown)) = coverage(t, 100_000, noise, &mut sample, *width)
            else {
                continue;
            };
            // Three standard errors below 95% at the number shown.
            let se = (ALPHA * (1.0 - ALPHA) / shown as f64).sqrt();
            assert!(
                now >= 1.0 - ALPHA - 3.0 * se,
                "{name}, t = {t}: covers {now} of {shown} shown"
            );
            if (3..=5).contains(&t) {
                worst_before = worst_before.min(before);
            }
        }
    }
    // The interval released before (unconditional, widened by the rounding) fell far short
    // for true counts just below the band: the test can tell the difference.
    assert!(worst_before < 0.7, "{worst_before}");
}

#[test]
fn far_from_the_band_the_interval_is_the_usual_one_widened_by_rounding() {
    let noise = NoiseCdf::gaussian(3.0).unwrap();
    let (lo, hi) = shown_count_interval(1_000, &noise, DisclosureProfile::Nhs, ALPHA);
    // ± 6 for the noise (the closed 95% half-width at σ = 3) and ± 2 for rounding to 5.
    assert!(
        (990.0..=993.0).contains(&lo) && (1_007.0..=1_010.0).contains(&hi),
        "{lo} {hi}"
    );
    // A shown 10 may come from a true 0 pushed over the band: the lower end reaches down.
    let (lo, _) = shown_count_interval(10, &noise, DisclosureProfile::Nhs, ALPHA);
    assert!(lo <= 2.0, "{lo}");
}
