//! Reporting zCDP totals as (ε, δ).
//!
//! The ledger composes in ρ. A board or a resident reading the register sees (ε, δ): the
//! conversion is OpenDP's (the optimal conversion of Canonne, Kamath & Steinke 2020, tighter
//! than ρ + 2√(ρ ln(1/δ))), whose privacy profile δ(ε) is proven to round up.
//!
//! OpenDP's own inverse, `PrivacyProfile::epsilon`, bisects ε down to the last f64 ulp: when
//! the answer is 0 or tiny it walks through the subnormals, some 1,100 evaluations of δ(ε)
//! each with its own inner search (26 ms at ρ = 10⁻¹², δ = 0.5; 82 ms at ρ = 1, δ → 1). Here
//! the same profile is inverted with a bounded search instead (about 2.5 ms at worst),
//! stopping at a relative 10⁻¹² (or an absolute 10⁻¹⁵) on the conservative side. It also
//! answers for large ρ (10⁶ and up), where `epsilon` fails: its first probe, ε = 2,
//! overflows OpenDP's rounded-up exp.

use civic_policies::Rho;
use opendp::combinators::make_zCDP_to_approxDP;
use opendp::core::{Function, Measurement, PrivacyMap};
use opendp::domains::AtomDomain;
use opendp::measures::ZeroConcentratedDivergence;
use opendp::metrics::AbsoluteDistance;

use crate::error::MechanismError;

/// The bisection stops once the bracket is this narrow relative to its upper end...
const RELATIVE_TOLERANCE: f64 = 1e-12;
/// ...or this narrow in absolute terms (an ε of 10⁻¹⁵ is 0 for any reader of the register).
const ABSOLUTE_TOLERANCE: f64 = 1e-15;

/// The ε at which a total of ρ-zCDP satisfies (ε, δ)-DP: the smallest ε, to a relative
/// 10⁻¹² and never below it, whose δ(ε) under OpenDP's conversion is at most `delta`.
pub fn epsilon_at_delta(rho: Rho, delta: f64) -> Result<f64, MechanismError> {
    let _opendp = crate::opendp_guard::lock();
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
    let profile = make_zCDP_to_approxDP(carrier)
        .and_then(|m| m.map(&1))
        .map_err(MechanismError::opendp("accounting"))?;
    // δ(ε) decreases in ε. An error from OpenDP (its rounded-up arithmetic overflowing, as it
    // does for large ρ at small ε) leaves ε unproven, which the search treats as too small.
    let meets = |epsilon: f64| profile.delta(epsilon).is_ok_and(|d| d <= delta);
    if meets(0.0) {
        return Ok(0.0);
    }
    // Start above the answer: the classical ρ + 2√(ρ ln(1/δ)) (Bun & Steinke 2016, Prop. 1.3),
    // which OpenDP's conversion improves on; doubled until OpenDP confirms it.
    let mut high = rho + 2.0 * (rho * -delta.ln()).sqrt();
    let mut doublings = 0;
    while !meets(high) {
        high *= 2.0;
        doublings += 1;
        if doublings > 64 || !high.is_finite() {
            return Err(MechanismError::InvalidParameter {
                stage: "accounting",
                reason: format!("no finite epsilon is proven for ρ={rho} at delta {delta}"),
            });
        }
    }
    let mut low = 0.0f64;
    // About 75 halvings at most: the start is below ~2 × 10⁷ for any ρ a Rho holds (≤ 1.8 × 10⁷),
    // and the bracket stops at 10⁻¹⁵. The cap only guards the arithmetic.
    for _ in 0..200 {
        if high - low <= (RELATIVE_TOLERANCE * high).max(ABSOLUTE_TOLERANCE) {
            break;
        }
        let mid = low + (high - low) / 2.0;
        if meets(mid) {
            high = mid;
        } else {
            low = mid;
        }
    }
    Ok(high)
}
