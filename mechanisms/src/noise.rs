//! Exact integer noise (Canonne, Kamath & Steinke 2020): OpenDP's measurement gives the
//! privacy map; the noise itself comes from Civic's own samplers of the same distributions
//! ([`crate::sampler`], some 20–50× faster), on a ChaCha20 stream seeded from the OS for each
//! release. A scale they cannot take is refused at pricing; OpenDP's own samplers are only
//! the tests' reference (Civic builds OpenDP without `use-openssl`).
//!
//! - Discrete Laplace, pure ε-DP: for an integer vector whose L1 sensitivity is Δ₁ (the most
//!   one resident can change it, summed over slots), scale b = Δ₁/ε gives ε-DP, counted in the
//!   ledger as ρ = ε²/2.
//! - Discrete Gaussian, ρ-zCDP: for L2 sensitivity Δ₂, σ = Δ₂/√(2ρ) gives ρ-zCDP.
//!
//! Sensitivities come from the dataset's public contribution bounds (rows per resident per
//! partner × partners a resident may appear in × the largest clamped value), never from data.
//! The privacy map of the OpenDP measurement actually built is evaluated and compared with the
//! budget before anything is sampled.

use civic_policies::Rho;
use opendp::domains::{AtomDomain, VectorDomain};
use opendp::measurements::{make_gaussian, make_laplace};
use opendp::measures::{MaxDivergence, ZeroConcentratedDivergence};
use opendp::metrics::{L1Distance, L2Distance};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use serde::{Deserialize, Serialize};

use crate::error::MechanismError;
use crate::sampler::{GaussianScale, LaplaceScale};

/// Which noise.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoiseKind {
    /// Discrete Laplace: pure ε-DP, L1 sensitivity.
    DiscreteLaplace,
    /// Discrete Gaussian: ρ-zCDP, L2 sensitivity.
    DiscreteGaussian,
}

/// A calibrated mechanism: its noise, scale and the sensitivity it was calibrated for.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct NoiseSpec {
    /// Which noise.
    pub kind: NoiseKind,
    /// Laplace scale b, or Gaussian standard deviation σ.
    pub scale: f64,
    /// Δ₁ (Laplace) or Δ₂ (Gaussian).
    pub sensitivity: f64,
}

fn check(stage: &'static str, name: &str, value: f64) -> Result<(), MechanismError> {
    if value.is_finite() && value > 0.0 {
        Ok(())
    } else {
        Err(MechanismError::InvalidParameter {
            stage,
            reason: format!("{name} must be a finite number above 0, got {value}"),
        })
    }
}

/// Sensitivities above 2^53 are refused: beyond it f64 (and the i64 OpenDP map) no longer
/// hold them exactly, and a rounded-down sensitivity would under-noise.
fn check_exact(name: &str, value: f64) -> Result<(), MechanismError> {
    if value > crate::plan::MAX_SENSITIVITY as f64 {
        return Err(MechanismError::InvalidParameter {
            stage: "calibrate",
            reason: format!("{name} {value} is above 2^53"),
        });
    }
    Ok(())
}

impl NoiseSpec {
    /// Discrete Laplace for pure ε with L1 sensitivity Δ₁ (a whole number of units).
    pub fn laplace_for_epsilon(l1_sensitivity: u64, epsilon: f64) -> Result<Self, MechanismError> {
        check("calibrate", "epsilon", epsilon)?;
        check("calibrate", "L1 sensitivity", l1_sensitivity as f64)?;
        check_exact("L1 sensitivity", l1_sensitivity as f64)?;
        Ok(Self {
            kind: NoiseKind::DiscreteLaplace,
            scale: l1_sensitivity as f64 / epsilon,
            sensitivity: l1_sensitivity as f64,
        })
    }

    /// Discrete Gaussian for ρ-zCDP with L2 sensitivity Δ₂.
    pub fn gaussian_for_rho(l2_sensitivity: f64, rho: f64) -> Result<Self, MechanismError> {
        check("calibrate", "rho", rho)?;
        check("calibrate", "L2 sensitivity", l2_sensitivity)?;
        check_exact("L2 sensitivity", l2_sensitivity)?;
        Ok(Self {
            kind: NoiseKind::DiscreteGaussian,
            scale: l2_sensitivity / (2.0 * rho).sqrt(),
            sensitivity: l2_sensitivity,
        })
    }

    /// What the mechanism costs according to OpenDP's privacy map: ε for Laplace (with its ρ
    /// = ε²/2 for the ledger), ρ for Gaussian.
    pub fn cost(&self) -> Result<Cost, MechanismError> {
        self.measure("cost", None).map(|(cost, _)| cost)
    }

    /// Adds noise to `values` if the mechanism costs at most `budget`; otherwise refuses
    /// without sampling.
    pub fn release(&self, values: &[i64], budget: Rho) -> Result<Vec<i64>, MechanismError> {
        let (_, noisy) = self.measure("release", Some((values, budget)))?;
        Ok(noisy.unwrap_or_default())
    }

    /// Builds the OpenDP measurement, reads its cost from its privacy map and, when asked to
    /// sample, samples the same distribution with Civic's exact samplers, only if the cost is
    /// within the budget.
    fn measure(
        &self,
        stage: &'static str,
        sample: Option<(&[i64], Rho)>,
    ) -> Result<(Cost, Option<Vec<i64>>), MechanismError> {
        let _opendp = crate::opendp_guard::lock();
        check(stage, "scale", self.scale)?;
        let opendp = MechanismError::opendp(stage);
        let ledger = |r: Result<Rho, civic_policies::PolicyError>| {
            r.map_err(|e| MechanismError::InvalidParameter {
                stage,
                reason: e.to_string(),
            })
        };
        // Samples with the measurement whose map was just read, and only within the budget.
        let finish = |cost: Cost| {
            let Some((values, budget)) = sample else {
                return Ok((cost, None));
            };
            if cost.rho > budget {
                return Err(MechanismError::OverBudget {
                    stage,
                    cost: cost.rho.to_string(),
                    budget: budget.to_string(),
                });
            }
            // OpenDP's own sampler is never the fallback: built without `use-openssl`
            // (which vendored OpenSSL into every build), it draws from a generator OpenDP
            // itself calls non-secure. A scale the exact samplers cannot take is refused
            // at pricing (`check_samplable`), so this is not reached.
            let noisy = self.exact_noise(stage, values)?.ok_or_else(|| {
                MechanismError::InvalidParameter {
                    stage,
                    reason: self.unsamplable(),
                }
            })?;
            Ok((cost, Some(noisy)))
        };
        let domain = VectorDomain::new(AtomDomain::<i64>::default());
        match self.kind {
            NoiseKind::DiscreteLaplace => {
                let m = make_laplace::<_, _, MaxDivergence>(
                    domain,
                    L1Distance::<i64>::default(),
                    self.scale,
                    None,
                )
                .map_err(&opendp)?;
                let epsilon = m.map(&(self.sensitivity as i64)).map_err(&opendp)?;
                let cost = Cost {
                    epsilon: Some(epsilon),
                    rho: ledger(Rho::cost_of_pure_epsilon(epsilon))?,
                };
                finish(cost)
            }
            NoiseKind::DiscreteGaussian => {
                let m = make_gaussian::<_, _, ZeroConcentratedDivergence>(
                    domain,
                    L2Distance::<f64>::default(),
                    self.scale,
                    None,
                )
                .map_err(&opendp)?;
                let rho = m.map(&self.sensitivity).map_err(&opendp)?;
                let cost = Cost {
                    epsilon: None,
                    rho: ledger(Rho::cost(rho))?,
                };
                finish(cost)
            }
        }
    }
}

impl NoiseSpec {
    /// Refuses a scale Civic's exact samplers cannot take (a discrete Laplace narrower than
    /// 2⁻⁹ or wider than 2⁶³, a discrete Gaussian outside 10⁻⁶ to 10¹⁵): checked when a
    /// request is priced, before anything is reserved.
    pub fn check_samplable(&self) -> Result<(), MechanismError> {
        let fits = match self.kind {
            NoiseKind::DiscreteLaplace => LaplaceScale::exact(self.scale).is_ok(),
            NoiseKind::DiscreteGaussian => GaussianScale::at_least(self.scale).is_ok(),
        };
        if fits {
            Ok(())
        } else {
            Err(MechanismError::InvalidParameter {
                stage: "calibrate",
                reason: self.unsamplable(),
            })
        }
    }

    fn unsamplable(&self) -> String {
        format!(
            "the noise scale {} is outside what the exact samplers take (ask for less privacy \
             loss: at a scale this small the noise would be zero almost always; or narrow the \
             bounds, for one this large)",
            self.scale
        )
    }

    /// `values` plus this mechanism's noise from [`crate::sampler`], on a ChaCha20 stream
    /// seeded from the OS for this call; None where the scale does not fit the samplers (the
    /// caller refuses). The discrete Gaussian's σ² is rounded up, never
    /// down, from the scale the privacy map was read at. Sums saturate, as OpenDP's do.
    fn exact_noise(
        &self,
        stage: &'static str,
        values: &[i64],
    ) -> Result<Option<Vec<i64>>, MechanismError> {
        let mut rng = ChaCha20Rng::try_from_rng(&mut getrandom::SysRng).map_err(|e| {
            MechanismError::InvalidParameter {
                stage,
                reason: format!("the operating system gave no randomness: {e}"),
            }
        })?;
        let add = |sample: &mut dyn FnMut() -> i64| -> Vec<i64> {
            values.iter().map(|v| v.saturating_add(sample())).collect()
        };
        Ok(match self.kind {
            NoiseKind::DiscreteLaplace => LaplaceScale::exact(self.scale)
                .ok()
                .map(|scale| add(&mut || scale.sample(&mut rng))),
            NoiseKind::DiscreteGaussian => GaussianScale::at_least(self.scale)
                .ok()
                .map(|scale| add(&mut || scale.sample(&mut rng))),
        })
    }
}

/// A mechanism's cost.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Cost {
    /// ε, for pure-DP mechanisms.
    pub epsilon: Option<f64>,
    /// ρ, what the ledger charges (ε²/2 for pure ε).
    pub rho: Rho,
}
