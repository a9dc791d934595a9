//! Privacy costs and caps, in zero-concentrated DP (Bun & Steinke, TCC 2016).
//!
//! The ledger composes in zCDP: costs add up in ρ. A pure ε-DP release counts as ρ = ε²/2
//! (Bun & Steinke, Prop. 1.4). A cap written as (ε, δ) becomes the largest ρ whose standard
//! conversion stays within it: ρ-zCDP implies (ρ + 2√(ρ ln(1/δ)), δ)-DP (Prop. 1.3), so
//! ρ = (√(ln(1/δ) + ε) − √(ln(1/δ)))². OpenDP's own conversion is tighter, so this cap is
//! safe and at most slightly conservative.
//!
//! ρ is held as an integer count of 10^-12 units, so sums are exact and no budget check
//! depends on floating-point rounding. Costs round up and caps round down.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::PolicyError;

/// Units of ρ per 1.0.
const UNITS: f64 = 1e12;
/// The largest ρ accepted anywhere: far beyond any meaningful budget, far below u64's range.
pub const MAX_RHO: f64 = 1e6;
/// Relative slack covering the f64 rounding of a derived value (ε²/2, the (ε, δ) inversion),
/// applied in the safe direction. Values a board writes directly need none: their only
/// error is the decimal literal's, below half a unit.
const SLACK: f64 = 4.0 * f64::EPSILON;

/// A zCDP cost or cap ρ, exact to 10^-12.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Rho(u64);

impl Rho {
    /// No cost.
    pub const ZERO: Rho = Rho(0);

    /// A cost: rounded up (with slack for the f64 rounding of whatever computed it), so a
    /// release is never charged less than it spends.
    pub fn cost(rho: f64) -> Result<Rho, PolicyError> {
        Rho::derived_cost(rho)
    }

    /// An amount as a person wrote it (a request's ρ, or ε²/2 of a request's ε), to the
    /// nearest unit: what a release is charged when its mechanism provably spends no more
    /// (the caller takes the larger of this and the mechanism's [`Rho::cost`]), so that a
    /// request for ρ = 0.1 is charged 0.1, not 0.1 plus rounding slack.
    pub fn nearest(rho: f64) -> Result<Rho, PolicyError> {
        check_positive("rho", rho)?;
        Ok(Rho((rho * UNITS).round() as u64))
    }

    /// A cap: rounded down, so a cap is never looser than stated.
    pub fn cap(rho: f64) -> Result<Rho, PolicyError> {
        check_positive("rho", rho)?;
        Ok(Rho((rho * UNITS).floor() as u64))
    }

    fn derived_cost(rho: f64) -> Result<Rho, PolicyError> {
        check_positive("rho", rho)?;
        Ok(Rho((rho * UNITS * (1.0 + SLACK)).ceil() as u64))
    }

    fn derived_cap(rho: f64) -> Result<Rho, PolicyError> {
        check_positive("rho", rho)?;
        Ok(Rho((rho * UNITS * (1.0 - SLACK)).floor() as u64))
    }

    /// The cost of a pure ε-DP release: ρ = ε²/2.
    pub fn cost_of_pure_epsilon(epsilon: f64) -> Result<Rho, PolicyError> {
        check_epsilon(epsilon)?;
        Rho::derived_cost(epsilon * epsilon / 2.0)
    }

    /// The cap a pure ε statement sets: ρ = ε²/2, rounded down. An ε written with at most
    /// six decimals is exact in micro-ε, so its ρ is computed in integers: a cap of ε = 0.5 is
    /// ρ = 0.125 exactly, which a query at exactly ε = 0.5 (charged 0.125) meets.
    pub fn cap_from_pure_epsilon(epsilon: f64) -> Result<Rho, PolicyError> {
        check_epsilon(epsilon)?;
        match micro_epsilon(epsilon) {
            // (m·10⁻⁶)²/2 = m²/2 units of 10⁻¹².
            Some(m) => Ok(Rho(u64::try_from(m * m / 2).unwrap_or(u64::MAX))),
            None => Rho::derived_cap(epsilon * epsilon / 2.0),
        }
    }

    /// The cost of a pure ε request as asked for: ε²/2 to the unit, exact (rounded up) for an
    /// ε written with at most six decimals, the nearest unit otherwise. With
    /// [`Rho::cap_from_pure_epsilon`], a cap and a request of the same ε with at most five
    /// decimals are the same number of units.
    pub fn asked_of_pure_epsilon(epsilon: f64) -> Result<Rho, PolicyError> {
        check_epsilon(epsilon)?;
        match micro_epsilon(epsilon) {
            Some(m) => Ok(Rho(u64::try_from(m * m).unwrap_or(u64::MAX).div_ceil(2))),
            None => Rho::nearest(epsilon * epsilon / 2.0),
        }
    }

    /// The largest ρ within an (ε, δ) cap (see the module docs).
    pub fn cap_from_approx_dp(epsilon: f64, delta: f64) -> Result<Rho, PolicyError> {
        check_epsilon(epsilon)?;
        check_delta(delta)?;
        let l = (1.0 / delta).ln();
        // (√(L+ε) − √L)² written without the cancelling subtraction: ε² / (√(L+ε) + √L)².
        let denominator = (l + epsilon).sqrt() + l.sqrt();
        Rho::derived_cap((epsilon / denominator).powi(2))
    }

    /// ρ as a float, for reports and for OpenDP.
    pub fn as_f64(self) -> f64 {
        self.0 as f64 / UNITS
    }

    /// The raw count of 10^-12 units.
    pub fn units(self) -> u64 {
        self.0
    }

    /// From a raw count of units (as stored).
    pub fn from_units(units: u64) -> Rho {
        Rho(units)
    }

    /// `self + other`, or None on overflow.
    pub fn checked_add(self, other: Rho) -> Option<Rho> {
        self.0.checked_add(other.0).map(Rho)
    }

    /// `self − other`, or None if other is larger.
    pub fn checked_sub(self, other: Rho) -> Option<Rho> {
        self.0.checked_sub(other.0).map(Rho)
    }
}

impl fmt::Display for Rho {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ρ={}", self.as_f64())
    }
}

/// ε in whole micro-ε, when ε is exactly the double nearest a decimal of at most six places
/// (as a person writes it).
fn micro_epsilon(epsilon: f64) -> Option<u128> {
    let micros = (epsilon * 1e6).round();
    ((1.0..1e15).contains(&micros) && micros / 1e6 == epsilon).then_some(micros as u128)
}

fn check_positive(name: &str, value: f64) -> Result<(), PolicyError> {
    if !(value.is_finite() && value > 0.0 && value <= MAX_RHO) {
        return Err(PolicyError::Privacy {
            reason: format!("{name} must be a number above 0 and at most {MAX_RHO}, got {value}"),
        });
    }
    Ok(())
}

/// ε in a range whose ρ = ε²/2 is representable: above 1e-6 and at most √(2 · MAX_RHO).
fn check_epsilon(epsilon: f64) -> Result<(), PolicyError> {
    let max = (2.0 * MAX_RHO).sqrt();
    if !(epsilon.is_finite() && (1e-6..=max).contains(&epsilon)) {
        return Err(PolicyError::Privacy {
            reason: format!("epsilon must be a number from 0.000001 to {max}, got {epsilon}"),
        });
    }
    Ok(())
}

fn check_delta(delta: f64) -> Result<(), PolicyError> {
    if !(delta.is_finite() && delta > 0.0 && delta < 1.0) {
        return Err(PolicyError::Privacy {
            reason: format!("delta must be a number strictly between 0 and 1, got {delta}"),
        });
    }
    Ok(())
}

/// A privacy amount as a board writes it: `{ rho = 0.5 }`, `{ epsilon = 1.0 }` (pure) or
/// `{ epsilon = 3.0, delta = 1e-6 }`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrivacyStatement {
    /// ε (pure, or with δ).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epsilon: Option<f64>,
    /// δ, only with ε.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta: Option<f64>,
    /// ρ (zCDP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rho: Option<f64>,
}

// By hand: the three forms a board writes, each closed, where a derived schema would allow
// any combination of the three optional fields.
#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for PrivacyStatement {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, OneOfBuilder, Type};
        let number = |description: &str, below_one: bool| {
            let n = ObjectBuilder::new()
                .schema_type(Type::Number)
                .exclusive_minimum(Some(0.0))
                .description(Some(description));
            if below_one {
                n.exclusive_maximum(Some(1.0))
            } else {
                n
            }
        };
        let form = |fields: &[(&str, &str, bool)], description: &str| {
            let mut o = ObjectBuilder::new()
                .description(Some(description))
                .additional_properties(Some(AdditionalProperties::FreeForm(false)));
            for (name, what, below_one) in fields {
                o = o.property(*name, number(what, *below_one)).required(*name);
            }
            o
        };
        OneOfBuilder::new()
            .item(form(&[("rho", "ρ (zCDP)", false)], "ρ-zCDP"))
            .item(form(&[("epsilon", "ε", false)], "pure ε-DP"))
            .item(form(
                &[("epsilon", "ε", false), ("delta", "δ", true)],
                "(ε, δ)-DP, held as the largest ρ within it",
            ))
            .description(Some("A privacy amount as a board writes it."))
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for PrivacyStatement {}

impl PrivacyStatement {
    /// The cap this statement sets, in ρ.
    pub fn as_cap(&self) -> Result<Rho, PolicyError> {
        match (self.epsilon, self.delta, self.rho) {
            (None, None, Some(rho)) => Rho::cap(rho),
            (Some(epsilon), None, None) => Rho::cap_from_pure_epsilon(epsilon),
            (Some(epsilon), Some(delta), None) => Rho::cap_from_approx_dp(epsilon, delta),
            _ => Err(PolicyError::Privacy {
                reason: "write either rho, or epsilon (pure), or epsilon with delta".into(),
            }),
        }
    }

    /// Whether the statement is (ε, δ) or ρ: the forms that may bound a whole budget (a pure
    /// ε total cannot be kept by composing in zCDP).
    pub fn is_total_form(&self) -> bool {
        matches!(
            (self.epsilon, self.delta, self.rho),
            (Some(_), Some(_), None) | (None, None, Some(_))
        )
    }
}

/// How much privacy a researcher spends on one release, or how accurate it must be: the
/// request that [`crate::Query`] travels with, priced by `civic_mechanisms::pricing`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum PrivacyRequest {
    /// Pure ε-DP (discrete Laplace noise).
    Epsilon(f64),
    /// ρ-zCDP (discrete Gaussian noise).
    Rho(f64),
    /// The smallest cost whose confidence interval half-width is at most this, per cell.
    TargetHalfWidth {
        /// The half-width, in the statistic's units (for a mean: of its sum and count).
        half_width: f64,
        /// Which noise: Laplace (pure ε) or Gaussian (ρ).
        mechanism: MechanismChoice,
    },
}

/// A privacy request as JSON, read field by field so that a request in the wrong form (two
/// amounts, or an (ε, δ) pair, which is a form for caps) is told which forms there are.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestFields {
    epsilon: Option<f64>,
    rho: Option<f64>,
    delta: Option<f64>,
    target_half_width: Option<TargetFields>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TargetFields {
    half_width: f64,
    mechanism: MechanismChoice,
}

impl<'de> Deserialize<'de> for PrivacyRequest {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        const FORMS: &str = "a query's privacy is one of {\"rho\": …} (zCDP, discrete \
            Gaussian noise), {\"epsilon\": …} (pure ε, discrete Laplace noise) or \
            {\"target_half_width\": {\"half_width\": …, \"mechanism\": \"laplace\" | \
            \"gaussian\"}}";
        let f = RequestFields::deserialize(deserializer)?;
        match (f.epsilon, f.rho, f.delta, f.target_half_width) {
            (Some(e), None, None, None) => Ok(PrivacyRequest::Epsilon(e)),
            (None, Some(r), None, None) => Ok(PrivacyRequest::Rho(r)),
            (None, None, None, Some(t)) => Ok(PrivacyRequest::TargetHalfWidth {
                half_width: t.half_width,
                mechanism: t.mechanism,
            }),
            (_, _, Some(_), _) => Err(serde::de::Error::custom(format!(
                "{FORMS}; (ε, δ) is a form for budget caps, not for a query: ask for ρ \
                 instead (a ρ-zCDP release is (ρ + 2√(ρ ln(1/δ)), δ)-DP)"
            ))),
            _ => Err(serde::de::Error::custom(format!("{FORMS}, exactly one"))),
        }
    }
}

/// The noise family of a target-accuracy request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum MechanismChoice {
    /// Discrete Laplace, pure ε.
    Laplace,
    /// Discrete Gaussian, ρ-zCDP.
    Gaussian,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pure_epsilon_costs_half_its_square() {
        let r = Rho::cost_of_pure_epsilon(1.0).unwrap();
        assert_eq!(
            r.units(),
            500_000_000_000 + 1,
            "rounded up past the exact 0.5"
        );
        assert!((Rho::cost_of_pure_epsilon(0.2).unwrap().as_f64() - 0.02).abs() < 1e-11);
    }

    #[test]
    fn an_epsilon_written_as_a_decimal_caps_and_costs_exactly() {
        for (epsilon, units) in [
            (0.5, 125_000_000_000),
            (0.1, 5_000_000_000),
            (1.3, 845_000_000_000),
        ] {
            let cap = Rho::cap_from_pure_epsilon(epsilon).unwrap();
            let asked = Rho::asked_of_pure_epsilon(epsilon).unwrap();
            assert_eq!(
                (cap.units(), asked.units()),
                (units, units),
                "ε = {epsilon}"
            );
        }
        // Six decimals, odd in micro-ε: half a unit apart, the cap below and the cost above.
        let (cap, asked) = (
            Rho::cap_from_pure_epsilon(0.000003).unwrap(),
            Rho::asked_of_pure_epsilon(0.000003).unwrap(),
        );
        assert_eq!((cap.units(), asked.units()), (4, 5));
        // Not a short decimal: the derived path, never looser than ε²/2.
        let third = 1.0 / 3.0;
        assert!(Rho::cap_from_pure_epsilon(third).unwrap().as_f64() <= third * third / 2.0);
    }

    #[test]
    fn caps_round_down_and_costs_round_up() {
        let third = 1.0 / 3.0;
        assert_eq!(
            Rho::cost(third).unwrap().units(),
            Rho::cap(third).unwrap().units() + 1
        );
        assert!(Rho::cap(third).unwrap().as_f64() <= third);
        assert!(Rho::cost(third).unwrap().as_f64() >= third);
        // A cap a board writes to 12 places is held exactly; a computed cost of the same
        // value rounds up past it.
        assert_eq!(Rho::cap(0.3).unwrap().units(), 300_000_000_000);
        assert_eq!(Rho::cost(0.3).unwrap().units(), 300_000_000_001);
    }

    #[test]
    fn approx_dp_cap_converts_back_within_the_statement() {
        for (eps, delta) in [(1.0, 1e-6), (3.0, 1e-9), (0.1, 1e-5), (10.0, 1e-7)] {
            let rho = Rho::cap_from_approx_dp(eps, delta).unwrap().as_f64();
            let back = rho + 2.0 * (rho * (1.0 / delta).ln()).sqrt();
            assert!(
                back <= eps && back > eps * 0.999_999,
                "eps {eps} -> rho {rho} -> {back}"
            );
        }
        // A known value: ε = 1, δ = 1e-6: L = ln 1e6, ρ = (√(L + 1) − √L)² = 0.0174689047698…
        let rho = Rho::cap_from_approx_dp(1.0, 1e-6).unwrap().as_f64();
        assert!((rho - 0.017_468_904_769).abs() < 2e-12, "{rho}");
    }

    #[test]
    fn bad_amounts_are_refused_with_the_name() {
        for bad in [f64::NAN, 0.0, -1.0, f64::INFINITY, 2e6] {
            let err = Rho::cost(bad).unwrap_err();
            assert!(err.to_string().contains("rho must be"), "{err}");
            assert!(
                Rho::cost_of_pure_epsilon(bad)
                    .unwrap_err()
                    .to_string()
                    .contains("epsilon")
            );
        }
        for bad in [0.0, 1.0, -0.1, f64::NAN] {
            let err = Rho::cap_from_approx_dp(1.0, bad).unwrap_err();
            assert!(err.to_string().contains("delta must be"), "{err}");
        }
    }

    #[test]
    fn statements_take_exactly_one_form() {
        let s = |e, d, r| PrivacyStatement {
            epsilon: e,
            delta: d,
            rho: r,
        };
        assert!(s(Some(1.0), Some(1e-6), None).as_cap().is_ok());
        assert!(s(None, None, Some(0.5)).as_cap().is_ok());
        assert!(s(Some(1.0), None, None).as_cap().is_ok());
        for bad in [
            s(None, None, None),
            s(Some(1.0), None, Some(0.5)),
            s(None, Some(1e-6), None),
        ] {
            assert!(
                bad.as_cap()
                    .unwrap_err()
                    .to_string()
                    .contains("write either")
            );
        }
        assert!(!s(Some(1.0), None, None).is_total_form());
    }
}
