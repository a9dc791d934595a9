//! Accuracy: the half-width of a (1 − α) confidence interval for one noisy cell, and the
//! budget a target half-width needs, through OpenDP's accuracy functions.
//!
//! OpenDP's half-width `a` satisfies P[|noise| ≥ a] ≤ α, so the released value ± a covers the
//! true value with probability at least 1 − α.

use opendp::accuracy::{
    accuracy_to_discrete_gaussian_scale, accuracy_to_discrete_laplacian_scale,
    discrete_gaussian_scale_to_accuracy, discrete_laplacian_scale_to_accuracy,
};

use crate::error::MechanismError;
use crate::noise::{NoiseKind, NoiseSpec};

fn check_alpha(alpha: f64) -> Result<(), MechanismError> {
    if alpha > 0.0 && alpha < 1.0 {
        Ok(())
    } else {
        Err(MechanismError::InvalidParameter {
            stage: "accuracy",
            reason: format!(
                "alpha must be strictly between 0 and 1 (0.05 for a 95% interval), got {alpha}"
            ),
        })
    }
}

/// The half-width of the (1 − α) interval of one cell released with `spec`.
pub fn half_width(spec: &NoiseSpec, alpha: f64) -> Result<f64, MechanismError> {
    check_alpha(alpha)?;
    match spec.kind {
        NoiseKind::DiscreteLaplace => discrete_laplacian_scale_to_accuracy(spec.scale, alpha),
        NoiseKind::DiscreteGaussian => discrete_gaussian_scale_to_accuracy(spec.scale, alpha),
    }
    .map_err(MechanismError::opendp("accuracy"))
}

/// The largest scale whose (1 − α) half-width is at most `accuracy`.
pub fn scale_for_half_width(
    kind: NoiseKind,
    accuracy: f64,
    alpha: f64,
) -> Result<f64, MechanismError> {
    check_alpha(alpha)?;
    if !(accuracy.is_finite() && accuracy >= 1.0) {
        return Err(MechanismError::InvalidParameter {
            stage: "accuracy",
            reason: format!("a half-width on integer counts must be at least 1, got {accuracy}"),
        });
    }
    match kind {
        NoiseKind::DiscreteLaplace => accuracy_to_discrete_laplacian_scale(accuracy, alpha),
        // OpenDP truncates the target to a whole number for the discrete Gaussian.
        NoiseKind::DiscreteGaussian => accuracy_to_discrete_gaussian_scale(accuracy.floor(), alpha),
    }
    .map_err(MechanismError::opendp("accuracy"))
}

/// The ε a discrete-Laplace release with L1 sensitivity Δ₁ needs for a (1 − α) half-width
/// of at most `accuracy`: what a researcher who asks for accuracy instead of ε is charged.
pub fn epsilon_for_half_width(
    l1_sensitivity: u64,
    accuracy: f64,
    alpha: f64,
) -> Result<f64, MechanismError> {
    let scale = scale_for_half_width(NoiseKind::DiscreteLaplace, accuracy, alpha)?;
    Ok(l1_sensitivity as f64 / scale)
}

/// The ρ a discrete-Gaussian release with L2 sensitivity Δ₂ needs for a (1 − α) half-width
/// of at most `accuracy` (within one unit: OpenDP's search is conservative by up to 1).
pub fn rho_for_half_width(
    l2_sensitivity: f64,
    accuracy: f64,
    alpha: f64,
) -> Result<f64, MechanismError> {
    let sigma = scale_for_half_width(NoiseKind::DiscreteGaussian, accuracy, alpha)?;
    Ok((l2_sensitivity / sigma).powi(2) / 2.0)
}
