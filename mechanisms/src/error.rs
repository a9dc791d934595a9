//! The one error type of the mechanisms layer.

/// What can go wrong making or applying a mechanism. Each message names the stage and shows
/// both sides where there are two.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum MechanismError {
    /// A parameter that is not usable (NaN, ≤ 0, out of range).
    #[error("{stage}: {reason}")]
    InvalidParameter {
        /// Which step refused it, e.g. "calibrate" or "accuracy".
        stage: &'static str,
        /// What is wrong and what was expected.
        reason: String,
    },
    /// The mechanism would spend more than it was given; nothing was sampled.
    #[error(
        "{stage}: the mechanism costs {cost} but only {budget} was allowed; nothing was released"
    )]
    OverBudget {
        /// The stage.
        stage: &'static str,
        /// What OpenDP's privacy map says it costs.
        cost: String,
        /// What it was given.
        budget: String,
    },
    /// An error from OpenDP, with its message.
    #[error("{stage}: OpenDP: {message}")]
    OpenDp {
        /// The stage.
        stage: &'static str,
        /// OpenDP's message.
        message: String,
    },
}

impl MechanismError {
    /// A stable, machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidParameter { .. } => "mechanism.invalid_parameter",
            Self::OverBudget { .. } => "mechanism.over_budget",
            Self::OpenDp { .. } => "mechanism.opendp",
        }
    }

    pub(crate) fn opendp(stage: &'static str) -> impl Fn(opendp::error::Error) -> MechanismError {
        move |e| MechanismError::OpenDp {
            stage,
            message: e
                .message
                .clone()
                .unwrap_or_else(|| format!("{:?}", e.variant)),
        }
    }
}
