//! Reporting zCDP totals as (ε, δ).
//!
//! The ledger composes in ρ. A board or a resident reading the register sees (ε, δ): the
//! conversion is OpenDP's (the optimal conversion of Canonne, Kamath & Steinke 2020, tighter
//! than ρ + 2√(ρ ln(1/δ))).

use civic_policies::Rho;
use opendp::combinators::make_zCDP_to_approxDP;
use opendp::core::{Function, Measurement, PrivacyMap};
use opendp::domains::AtomDomain;
use opendp::measures::ZeroConcentratedDivergence;
use opendp::metrics::AbsoluteDistance;

use crate::error::MechanismError;

/// The ε at which a total of ρ-zCDP satisfies (ε, δ)-DP.
pub fn epsilon_at_delta(rho: Rho, delta: f64) -> Result<f64, MechanismError> {
    if !(delta > 0.0 && delta < 1.0) {
        return Err(MechanismError::InvalidParameter {
            stage: "accounting",
            reason: format!("delta must be strictly between 0 and 1, got {delta}"),
        });
    }
    let rho = rho.as_f64();
    // OpenDP converts measurements, not bare numbers: wrap ρ in a measurement whose map is ρ.
    let carrier = Measurement::new(
        AtomDomain::<i64>::default(),
        AbsoluteDistance::<i64>::default(),
        ZeroConcentratedDivergence,
        Function::new(|x: &i64| *x),
        PrivacyMap::new(move |_: &i64| rho),
    )
    .map_err(MechanismError::opendp("accounting"))?;
    make_zCDP_to_approxDP(carrier)
        .and_then(|m| m.map(&1))
        .and_then(|profile| profile.epsilon(delta))
        .map_err(MechanismError::opendp("accounting"))
}
