//! Distributed noise: each partner adds a share of discrete Gaussian noise to its own vector
//! before masking, so the sum the coordinator unmasks already carries the release's noise.
//!
//! # The mechanism: distributed discrete Gaussian shares
//!
//! Kairouz, Liu and Steinke, "The Distributed Discrete Gaussian Mechanism for Federated
//! Learning with Secure Aggregation" (ICML 2021). Every partner adds an independent
//! N_Z(0, σ²) to each slot. The sum of discrete Gaussians is not itself a discrete Gaussian,
//! but its privacy loss is bounded rigorously (their Proposition 14): for h honest shares,
//! a group of d slots whose sensitivity vector has norms Δ₁ and Δ₂, σ ≥ ½ and
//! τ = 10 Σ_{k=1}^{h−1} exp(−2π²σ²·k/(k+1)), the Rényi divergence of order α ≥ 1 is at most
//! α·ρ with
//!
//! ρ = min{ Δ₂²/(2hσ²) + τd,  ½(Δ₂²/(hσ²) + 2Δ₁τ/(√h σ) + τ²d),  ½(Δ₂/(√h σ) + τ√d)² }
//!
//! (the first form's additive τd is at most α·τd for α ≥ 1, so each form is ρ-zCDP). This
//! is what the ledger charges: an upper bound, never an approximation by a continuous
//! Gaussian. When σ is a few units τ is far below 10⁻¹⁰ and ρ is the central discrete
//! Gaussian's Δ₂²/(2hσ²); for small σ and wide tables τd is not negligible and the
//! calibration raises σ until the bound meets the charge.
//!
//! Why not Skellam shares (Agarwal, Kairouz and Liu, NeurIPS 2021), which are exactly closed
//! under summation: their Rényi bound is proved for integer orders only, so turning it into
//! the zCDP the ledger composes loses a constant, and they need an exact Poisson sampler
//! besides; the discrete Gaussian shares reuse the exact sampler every central release
//! already uses ([`crate::sampler`]) and price within a hair of the central mechanism.
//!
//! # Pure ε is central-only
//!
//! The discrete Laplace is infinitely divisible only through negative-binomial shares of
//! fractional order, whose exact sampling Civic does not implement. A pure-ε request is
//! therefore answered only on a dataset whose policy asks for central noise, and refused,
//! with that reason, elsewhere.
//!
//! # Calibrated for the honest survivors
//!
//! A round completes with at least `s` contributors (its threshold, or its quorum if higher),
//! of whom up to `c` may collude with the coordinator (the most its threshold withstands:
//! 2t > holders + c). Colluders know their own shares and can subtract them, so only
//! h = s − c shares are counted as noise. Each partner computes h itself from the round's
//! configuration, which it has checked against the board's manifest and its own
//! requirements (`civic_secagg::RoundConfig::honest_contributors`); no noise scale is ever taken from the coordinator.
//! With k ≥ h actual contributors the sum carries k shares: more noise than charged for,
//! which the receipt states.

use crate::error::MechanismError;
use crate::noise::{NoiseKind, NoiseSpec};

/// The least σ of a share: Proposition 14 holds for σ ≥ ½.
pub const MIN_SHARE_SIGMA: f64 = 0.5;

/// The probability, at most, that any slot of a sum of noise shares leaves the ring sized by
/// [`noise_tail`]: 2⁻⁴⁰.
pub const RING_TAIL_LOG2: u32 = 40;

/// Who the noise is split across, as the round's configuration fixes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ShareCount {
    /// h: shares counted as noise (the round's least contributors minus the colluders its
    /// threshold withstands).
    pub honest: usize,
    /// n: partners invited, each adding a share if it contributes (the most shares a sum can
    /// carry).
    pub partners: usize,
}

/// τ of Proposition 14 for h shares of σ.
pub fn tau(sigma: f64, honest: usize) -> f64 {
    let two_pi2_s2 = 2.0 * std::f64::consts::PI.powi(2) * sigma * sigma;
    10.0 * (1..honest)
        .map(|k| (-two_pi2_s2 * k as f64 / (k as f64 + 1.0)).exp())
        .sum::<f64>()
}

/// The zCDP ρ of the sum of `honest` shares of N_Z(0, σ²) on `dims` slots whose sensitivity
/// has norms `l1` and `l2` (Proposition 14, as above). Infinite below σ = ½.
pub fn rho_of_shares(sigma: f64, honest: usize, dims: usize, l1: f64, l2: f64) -> f64 {
    if !(sigma >= MIN_SHARE_SIGMA && honest > 0) {
        return f64::INFINITY;
    }
    let (h, d, t) = (honest as f64, dims as f64, tau(sigma, honest));
    let spread = h.sqrt() * sigma;
    let first = l2 * l2 / (2.0 * spread * spread) + t * d;
    let second = 0.5 * (l2 * l2 / (spread * spread) + 2.0 * l1 * t / spread + t * t * d);
    let third = 0.5 * (l2 / spread + t * d.sqrt()).powi(2);
    // Rounded up by a relative allowance far above the few roundings of the f64 arithmetic.
    first.min(second).min(third) * (1.0 + 1e-12)
}

/// The least share σ (to a relative 10⁻⁹, rounded up) whose sum over `count.honest` shares
/// costs at most `rho`: what each partner adds to each slot of the group.
pub fn share_sigma_for_rho(
    rho: f64,
    count: ShareCount,
    dims: usize,
    l1: f64,
    l2: f64,
) -> Result<f64, MechanismError> {
    let invalid = |reason: String| MechanismError::InvalidParameter {
        stage: "calibrate",
        reason,
    };
    let positive = |x: f64| x.is_finite() && x > 0.0;
    if !positive(rho) || !positive(l2) || dims == 0 {
        return Err(invalid(format!(
            "distributed noise needs ρ > 0, a positive L2 sensitivity and a slot, got ρ {rho}, Δ₂ {l2}, {dims} slots"
        )));
    }
    if count.honest == 0 || count.honest > count.partners {
        return Err(invalid(format!(
            "distributed noise needs between 1 and {} honest shares, got {}",
            count.partners, count.honest
        )));
    }
    let cost = |s: f64| rho_of_shares(s, count.honest, dims, l1, l2);
    // The central σ split h ways is the least that could do; τ only ever adds to it.
    let mut low = (l2 / (2.0 * rho * count.honest as f64).sqrt()).max(MIN_SHARE_SIGMA);
    if cost(low) <= rho {
        return Ok(low);
    }
    let mut high = low;
    while cost(high) > rho {
        low = high;
        high *= 2.0;
        if !high.is_finite() {
            return Err(invalid(format!("no share σ meets ρ {rho}")));
        }
    }
    while (high - low) / high > 1e-9 {
        let mid = 0.5 * (low + high);
        if cost(mid) <= rho {
            high = mid;
        } else {
            low = mid;
        }
    }
    Ok(high)
}

/// The half-width, in fixed-point units, of a closed (1 − α) interval for the sum of `shares`
/// independent N_Z(0, σ²): the smaller of two bounds that both hold.
///
/// - Near the discrete Gaussian of variance kσ² (Y): each point's probability under the sum
///   is within a factor e^{±τ} of Y's (KLS21, the closeness the privacy bound rests on, with
///   τ for k shares; `tests/distributed.rs` checks it against exact convolutions), so an
///   interval holding Y with probability (1 − α)·e^τ holds the sum with 1 − α.
/// - Sub-Gaussian: each share is σ-sub-Gaussian (CKS20), so P[|sum| ≥ w] ≤ 2·exp(−w²/(2kσ²)).
pub fn sum_half_width(sigma: f64, shares: usize, alpha: f64) -> Result<f64, MechanismError> {
    let k = shares.max(1) as f64;
    // P[|sum| ≥ w] ≤ α at the whole w below, so the closed interval ± (w − 1) holds.
    let sub_gaussian =
        (sigma * k.sqrt() * (2.0 * (2.0 / alpha).ln()).sqrt() * (1.0 + 1e-12)).ceil() - 1.0;
    let near = 1.0 - (1.0 - alpha) * tau(sigma, shares).exp();
    if near <= 0.0 {
        return Ok(sub_gaussian);
    }
    let y = NoiseSpec {
        kind: NoiseKind::DiscreteGaussian,
        scale: sigma * k.sqrt(),
        sensitivity: 1.0,
    };
    Ok(crate::accuracy::half_width(&y, near)?.min(sub_gaussian))
}

/// A bound B on every slot of a sum of up to `partners` shares of N_Z(0, σ²) over `dims`
/// slots, exceeded with probability below 2⁻⁴⁰ (sub-Gaussian tail, union over the slots):
/// what the ring must hold beyond the data.
pub fn noise_tail(sigma: f64, partners: usize, dims: usize) -> u128 {
    let log_terms =
        (2.0 * dims.max(1) as f64).ln() + f64::from(RING_TAIL_LOG2) * std::f64::consts::LN_2;
    let bound = sigma * (partners.max(1) as f64).sqrt() * (2.0 * log_terms).sqrt();
    // Beyond u128 the ring could not hold it anyway; the width check refuses.
    if bound.is_finite() && bound < u128::MAX as f64 {
        bound.ceil() as u128 + 1
    } else {
        u128::MAX
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_honest_share_is_the_central_discrete_gaussian() {
        // No other share: τ = 0 and ρ = Δ₂²/(2σ²) exactly (up to the allowance).
        let rho = rho_of_shares(2.0, 1, 10, 1.0, 1.0);
        assert!((rho - 0.125).abs() < 1e-12, "{rho}");
    }

    #[test]
    fn calibration_meets_the_charge_and_not_much_more() {
        for (rho, honest, dims) in [
            (0.5, 3, 1),
            (0.01, 5, 100),
            (1.0, 20, 1_000_000),
            (0.1, 2, 4),
        ] {
            let count = ShareCount {
                honest,
                partners: honest + 2,
            };
            let sigma = share_sigma_for_rho(rho, count, dims, 1.0, 1.0).unwrap();
            let cost = rho_of_shares(sigma, honest, dims, 1.0, 1.0);
            assert!(cost <= rho, "ρ {rho}: σ {sigma} costs {cost}");
            // A hair less noise would cost more than charged (unless at the σ ≥ ½ floor).
            if sigma > MIN_SHARE_SIGMA {
                let less = rho_of_shares(sigma * (1.0 - 1e-6), honest, dims, 1.0, 1.0);
                assert!(
                    less > rho * (1.0 - 1e-5),
                    "ρ {rho}: σ {sigma} is not the least"
                );
            }
        }
    }

    #[test]
    fn wide_tables_need_more_than_the_split_central_noise_when_shares_are_small() {
        // ρ = 0.5, Δ = 1, 3 honest shares: the split central σ is 1/√3 ≈ 0.577; at such small
        // shares τ matters: one slot needs σ ≈ 0.67, a 10⁶-slot table σ ≈ 0.98.
        let count = ShareCount {
            honest: 3,
            partners: 5,
        };
        let one = share_sigma_for_rho(0.5, count, 1, 1.0, 1.0).unwrap();
        let wide = share_sigma_for_rho(0.5, count, 1_000_000, 1.0, 1.0).unwrap();
        assert!(one > 0.6 && one < 0.75, "{one}");
        assert!(wide > 0.9 && wide < 1.1, "{wide}");
        // Larger shares leave τ negligible: ρ = 0.02 needs the split central σ, 5/√3.
        let central = 5.0 / 3f64.sqrt();
        let sigma = share_sigma_for_rho(0.02, count, 1_000_000, 1.0, 1.0).unwrap();
        assert!((sigma / central - 1.0).abs() < 1e-6, "{sigma} vs {central}");
    }

    #[test]
    fn the_ring_tail_grows_with_shares_and_slots() {
        let one = noise_tail(10.0, 1, 1);
        assert!(one > 74 && one < 80, "{one}"); // 10·√(2·(ln 2 + 40 ln 2)) ≈ 75.4
        assert!(noise_tail(10.0, 4, 1) >= 2 * one - 3);
        assert!(noise_tail(10.0, 1, 1_000_000) > one);
    }
}
