//! Pricing: from a question and its privacy request to a calibrated, costed plan. The one
//! computation behind a researcher's preview, a submission's reservation, a board's approval,
//! a round's release and each partner agent's own check of what a round will cost, so none
//! of them can disagree.
//!
//! The steps, each refusing with a reason a researcher can act on: the request's numbers
//! (confidence, ε, ρ, target half-width) are checked; the query is validated against the
//! policy and compiled into an aggregation plan; the noise is calibrated; the cost is
//! checked against the policy's per-query floor *before* any accuracy is computed (so an
//! absurdly small request never reaches the accuracy search); then the half-widths and the
//! cost in every form a board reads are stated.
//!
//! The result ([`Priced`]) is plain data: the coordinator stores it with the reservation and
//! releases from the stored copy, never from a second pricing.

use civic_policies::dataset::{DatasetPolicy, NoisePlacement};
use civic_policies::{MechanismChoice, PolicyError, PrivacyRequest, Query, Rho};
use serde::{Deserialize, Serialize};

use crate::accounting::epsilon_at_delta;
use crate::distributed::ShareCount;
use crate::error::MechanismError;
use crate::noise::NoiseKind;
use crate::plan::{AggregationPlan, BlockKind};
use crate::release::{NoiseSetting, PrivacyChoice, Release, ReleasePlan, RowAccuracy};

/// The interval confidence when a request names none.
pub const DEFAULT_CONFIDENCE: f64 = 0.95;

/// The δ at which a coordinator states ρ costs as (ε, δ) unless configured otherwise.
pub const DEFAULT_REPORTING_DELTA: f64 = 1e-6;

/// The public, data-independent settings a price depends on besides the policy and the
/// request. A round announces them, so an agent prices exactly as the coordinator did.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct PricingContext {
    /// The public bound on rows one partner holds (sizes the ring; no effect on the noise).
    pub max_rows_per_partner: u64,
    /// The δ at which ρ costs are also stated as (ε, δ).
    pub reporting_delta: f64,
    /// The board's least cost per query (its manifest's `min_rho_per_query`; zero before it
    /// has published one). With the policy's floor it is the least a query may cost, and
    /// where a target accuracy's search stops. Agents take it from the manifest they
    /// verified, never from the coordinator.
    #[serde(default)]
    pub board_floor: Rho,
    /// For a dataset with distributed noise: the shares counted as noise, which the round's
    /// configuration guarantees (`civic_secagg::RoundConfig::honest_contributors`). Each side derives
    /// it itself: the coordinator from the round it will run, an agent from the round's
    /// configuration it checked against the manifest. 0 where unknown (central noise).
    #[serde(default)]
    pub honest_survivors: usize,
}

/// A cost in every form a board reads.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Cost {
    /// zCDP ρ, as the ledger charges it.
    pub rho: Rho,
    /// Pure ε, when every noise group is discrete Laplace.
    pub epsilon: Option<f64>,
    /// ρ stated as (ε, δ) at the context's δ (OpenDP's conversion).
    pub approx_dp: (f64, f64),
}

/// A request compiled and calibrated against one policy version.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Priced {
    /// The vector layout.
    pub plan: AggregationPlan,
    /// The calibrated noise.
    pub release_plan: ReleasePlan,
    /// What a release costs.
    pub cost: Cost,
    /// The (confidence) half-width of each block's cells, in statistic units.
    pub half_widths: Vec<f64>,
    /// What each block is: `count`, `sum(column)`, `left·right`.
    pub blocks: Vec<String>,
    /// The accuracy of each row the release will state.
    pub accuracy: Vec<RowAccuracy>,
    /// The interval confidence.
    pub confidence: f64,
    /// The settings it was priced under.
    pub context: PricingContext,
    /// For a linked dataset, the part of `cost` charged for the matching partners' noisy
    /// match counts (zero otherwise).
    #[serde(default)]
    pub match_counts: Rho,
}

/// Why a request cannot be priced. Every message says what to change.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum PricingError {
    /// The query was sent for another dataset than the policy's.
    #[error("the query names dataset {query:?} but was priced against dataset {policy:?}")]
    DatasetMismatch {
        /// The dataset the query names.
        query: String,
        /// The policy's dataset.
        policy: String,
    },
    /// The confidence level is not a probability.
    #[error("confidence must be strictly between 0 and 1 (0.95 for 95%), got {0}")]
    Confidence(f64),
    /// ε, ρ or the target half-width is outside what can be priced.
    #[error("{name} must be a number {range}, got {value}")]
    Privacy {
        /// Which number.
        name: &'static str,
        /// Its value.
        value: f64,
        /// What it may be.
        range: String,
    },
    /// The query does not fit the policy.
    #[error(transparent)]
    Query(#[from] PolicyError),
    /// The noise cannot be calibrated as asked.
    #[error(transparent)]
    Mechanism(#[from] MechanismError),
    /// A pure-ε request (or a Laplace target) on a dataset whose noise is distributed.
    #[error(
        "dataset {dataset} adds its noise at the partners (distributed noise), and pure ε-DP is central-only: no exactly divisible discrete-Laplace share is implemented. Ask in ρ (zCDP) instead: {{\"rho\": ε²/2}} costs the ledger the same (ε = 1 is ρ = 0.5), or a target half-width with mechanism \"gaussian\"; or the board may set noise = \"central\" in the policy's [governance]"
    )]
    PureEpsilonCentralOnly {
        /// The dataset.
        dataset: String,
    },
    /// The request costs less than the least a query may cost: the policy's per-query floor
    /// or the board's, whichever is higher.
    #[error(
        "the request costs ρ = {}{epsilon}, below the least a query on dataset {dataset} may cost, ρ = {} (the higher of the policy's floor and the board's); ask for more privacy budget (or a narrower target half-width)",
        cost.as_f64(), floor.as_f64(),
        epsilon = epsilon.map_or_else(String::new, |e| format!(" (ε = {e})"))
    )]
    BelowFloor {
        /// The dataset.
        dataset: String,
        /// What the request would cost.
        cost: Rho,
        /// Its ε, for a pure-DP request.
        epsilon: Option<f64>,
        /// The higher of the policy's floor and the board's.
        floor: Rho,
    },
}

impl PricingError {
    /// A stable, machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::DatasetMismatch { .. } => "query.dataset_mismatch",
            Self::Confidence(_) => "query.confidence",
            Self::Privacy { .. } => "query.privacy",
            Self::Query(e) => e.code(),
            Self::Mechanism(e) => e.code(),
            Self::BelowFloor { .. } => "query.below_floor",
            Self::PureEpsilonCentralOnly { .. } => "query.pure_epsilon_central_only",
        }
    }
}

/// `value` if it lies in [`low`, `high`] (above 0 when `low` is 0), or the error naming it.
fn within(name: &'static str, value: f64, low: f64, high: f64) -> Result<f64, PricingError> {
    let above_low = if low == 0.0 {
        value > 0.0
    } else {
        value >= low
    };
    if value.is_finite() && above_low && value <= high {
        Ok(value)
    } else {
        let range = match (low == 0.0, high.is_finite()) {
            (true, true) => format!("above 0 and at most {high}"),
            (true, false) => "above 0".to_string(),
            (false, _) => format!("from {low} to {high}"),
        };
        Err(PricingError::Privacy { name, value, range })
    }
}

/// The ε range a ledger can charge: ρ = ε²/2 within (0, MAX_RHO], ε at least 10⁻⁶.
fn epsilon_range() -> (f64, f64) {
    (1e-6, (2.0 * civic_policies::privacy::MAX_RHO).sqrt())
}

/// Compiles and calibrates `query` with `privacy` under `policy`. Pure and deterministic:
/// the same inputs always give the same [`Priced`].
pub fn price(
    policy: &DatasetPolicy,
    query: &Query,
    privacy: PrivacyRequest,
    confidence: Option<f64>,
    context: PricingContext,
) -> Result<Priced, PricingError> {
    if query.dataset != policy.id() {
        return Err(PricingError::DatasetMismatch {
            query: query.dataset.clone(),
            policy: policy.id().to_string(),
        });
    }
    let confidence = confidence.unwrap_or(DEFAULT_CONFIDENCE);
    if !(confidence > 0.0 && confidence < 1.0) {
        return Err(PricingError::Confidence(confidence));
    }
    let alpha = 1.0 - confidence;
    let floor = policy.min_per_query.max(context.board_floor);
    let validated = query.clone().validate(policy)?;
    let setting = match policy.noise() {
        NoisePlacement::Central => NoiseSetting::Central,
        NoisePlacement::Distributed => {
            let laplace = matches!(
                privacy,
                PrivacyRequest::Epsilon(_)
                    | PrivacyRequest::TargetHalfWidth {
                        mechanism: MechanismChoice::Laplace,
                        ..
                    }
            );
            if laplace {
                return Err(PricingError::PureEpsilonCentralOnly {
                    dataset: policy.id().to_string(),
                });
            }
            NoiseSetting::Distributed(ShareCount {
                honest: context.honest_survivors,
                partners: policy.partners().len(),
            })
        }
    };
    let plan = AggregationPlan::compile(&validated, policy, context.max_rows_per_partner)?;
    let release_plan = match privacy {
        PrivacyRequest::Epsilon(e) => ReleasePlan::new(
            &plan,
            PrivacyChoice::Epsilon(within("epsilon", e, epsilon_range().0, epsilon_range().1)?),
            alpha,
        )?,
        PrivacyRequest::Rho(r) => {
            let r = within("rho", r, 0.0, civic_policies::privacy::MAX_RHO)?;
            ReleasePlan::calibrate(&plan, PrivacyChoice::Rho(r), alpha, setting)?
        }
        PrivacyRequest::TargetHalfWidth { .. } if plan.learning.is_some() => {
            return Err(PricingError::Mechanism(MechanismError::InvalidParameter {
                stage: "pricing",
                reason: "a training job cannot be priced by a target half-width (its accuracy \
                         depends on the fitted model): ask in ρ and read the preview's expected \
                         accuracy"
                    .into(),
            }));
        }
        PrivacyRequest::TargetHalfWidth {
            half_width,
            mechanism,
        } => {
            let kind = match mechanism {
                MechanismChoice::Laplace => NoiseKind::DiscreteLaplace,
                MechanismChoice::Gaussian => NoiseKind::DiscreteGaussian,
            };
            let target = within("half_width", half_width, 0.0, f64::INFINITY)?;
            // A target the floor's calibration already meets is priced at the floor: the
            // cheapest cost the policy allows, with intervals narrower than asked.
            match at_floor(&plan, kind, floor, alpha, setting) {
                Some(floor) if widest(&floor, &plan)? <= target => floor,
                _ => ReleasePlan::for_target_half_width(&plan, kind, target, alpha, setting)?,
            }
        }
    };
    let epsilon = release_plan
        .groups
        .iter()
        .map(|g| g.epsilon)
        .sum::<Option<f64>>();
    if release_plan.cost < floor {
        return Err(PricingError::BelowFloor {
            dataset: policy.id().to_string(),
            cost: release_plan.cost,
            epsilon,
            floor,
        });
    }
    release_plan.check_samplable()?;
    // A linked query also pays for the noisy match counts its joins show the matching
    // partners (their dummies are sized for exactly this).
    let match_counts = policy
        .linkage
        .as_ref()
        .map_or(Rho::ZERO, |l| l.match_counts);
    let total = release_plan.cost.checked_add(match_counts).ok_or_else(|| {
        MechanismError::InvalidParameter {
            stage: "pricing",
            reason: "the release and match-count costs overflow the ledger's range".into(),
        }
    })?;
    let cost = Cost {
        rho: total,
        epsilon: epsilon.filter(|_| match_counts == Rho::ZERO),
        approx_dp: (
            epsilon_at_delta(total, context.reporting_delta)?,
            context.reporting_delta
                + if policy.linkage.is_some() {
                    civic_policies::linkage::MATCH_COUNT_DELTA
                } else {
                    0.0
                },
        ),
    };
    let half_widths = release_plan.half_widths(&plan)?;
    let accuracy = release_plan.accuracy(&plan, policy)?;
    let blocks = plan
        .blocks
        .iter()
        .map(|b| match &b.kind {
            BlockKind::Count => "count".to_string(),
            BlockKind::Sum { column } => format!("sum({column})"),
            BlockKind::Cross { left, right } => format!("{left}·{right}"),
            BlockKind::Score { coefficient } => format!("score({coefficient})"),
            BlockKind::Information { left, right } => format!("information({left}, {right})"),
            BlockKind::Gradient => "gradient".to_string(),
        })
        .collect();
    Ok(Priced {
        plan,
        release_plan,
        cost,
        half_widths,
        blocks,
        accuracy,
        confidence,
        context,
        match_counts,
    })
}

/// The calibration of `kind` noise costing the floor (a hair above it, so the cost rounded
/// to the ledger's unit is not below it), if the floor is a calibratable amount.
fn at_floor(
    plan: &AggregationPlan,
    kind: NoiseKind,
    floor: Rho,
    alpha: f64,
    setting: NoiseSetting,
) -> Option<ReleasePlan> {
    let rho = floor.as_f64() * (1.0 + 1e-9);
    let choice = match kind {
        NoiseKind::DiscreteLaplace => PrivacyChoice::Epsilon((2.0 * rho).sqrt()),
        NoiseKind::DiscreteGaussian => PrivacyChoice::Rho(rho),
    };
    ReleasePlan::calibrate(plan, choice, alpha, setting)
        .ok()
        .filter(|p| p.cost >= floor)
}

fn widest(release_plan: &ReleasePlan, plan: &AggregationPlan) -> Result<f64, MechanismError> {
    Ok(release_plan
        .half_widths(plan)?
        .into_iter()
        .fold(0.0, f64::max))
}

impl Priced {
    /// Samples the release from the secure sum `summed` of `survivors` partners, once,
    /// refusing without sampling if the calibration costs more than `budget` (the
    /// reservation being charged).
    pub fn release(
        &self,
        policy: &DatasetPolicy,
        summed: &[i64],
        survivors: usize,
        budget: Rho,
    ) -> Result<Release, MechanismError> {
        self.release_plan.release(
            &self.plan,
            policy,
            summed,
            survivors,
            budget,
            self.context.reporting_delta,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use civic_policies::samples::{diabetes, diabetes_central};

    fn context() -> PricingContext {
        PricingContext {
            max_rows_per_partner: 10_000,
            reporting_delta: 1e-6,
            board_floor: Rho::ZERO,
            honest_survivors: 2,
        }
    }

    fn count() -> Query {
        serde_json::from_value(serde_json::json!({ "dataset": "diabetes", "statistic": "count" }))
            .unwrap()
    }

    #[test]
    fn a_pure_epsilon_count_costs_half_its_square_and_states_every_form() {
        let p = price(
            &diabetes_central(),
            &count(),
            PrivacyRequest::Epsilon(0.4),
            None,
            context(),
        )
        .unwrap();
        // Charged what was asked, exactly: no rounding slack to trip a threshold.
        assert_eq!(p.cost.rho, Rho::from_units(80_000_000_000));
        assert_eq!(p.cost.epsilon, Some(0.4));
        assert_eq!(p.cost.approx_dp.1, 1e-6);
        assert!(p.cost.approx_dp.0 > 0.4, "{:?}", p.cost);
        assert_eq!(p.confidence, DEFAULT_CONFIDENCE);
        assert_eq!(p.blocks, vec!["count"]);
        assert_eq!(p.half_widths.len(), 1);
        // Deterministic: the agent's price is the coordinator's.
        let again = price(
            &diabetes_central(),
            &count(),
            PrivacyRequest::Epsilon(0.4),
            Some(0.95),
            context(),
        )
        .unwrap();
        assert_eq!(p, again);
    }

    #[test]
    fn a_scale_the_exact_samplers_cannot_take_is_refused_before_anything_is_reserved() {
        // ρ = 10⁻⁴⁰ at Δ₂ = 2 is σ ≈ 1.4 × 10²⁰, beyond the Gaussian sampler's 10¹⁵; the
        // floor refuses it first, so a policy without one shows the samplers' refusal.
        let policy = DatasetPolicy::from_toml(
            &civic_policies::samples::central_noise(civic_policies::samples::DIABETES_TOML)
                .replace("[budget]\n", "[budget]\nmin_per_query = { rho = 1e-40 }\n"),
            "diabetes.toml",
        )
        .unwrap();
        let e = price(
            &policy,
            &count(),
            PrivacyRequest::Rho(1e-40),
            None,
            context(),
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("outside what the exact samplers take"),
            "{e}"
        );
        let fine = price(
            &policy,
            &count(),
            PrivacyRequest::Rho(1e-20),
            None,
            context(),
        );
        assert!(fine.is_ok(), "{fine:?}");
    }

    #[test]
    fn distributed_noise_is_gaussian_shares_for_the_honest_contributors() {
        // diabetes.toml asks for no central noise: its partners add shares.
        let policy = diabetes();
        let refused = price(
            &policy,
            &count(),
            PrivacyRequest::Epsilon(1.0),
            None,
            context(),
        );
        assert_eq!(
            refused.unwrap_err().code(),
            "query.pure_epsilon_central_only"
        );
        let p = price(&policy, &count(), PrivacyRequest::Rho(0.1), None, context()).unwrap();
        let group = &p.release_plan.groups[0];
        let shares = group.shares.expect("distributed");
        assert_eq!((shares.count.honest, shares.count.partners), (2, 5));
        // K = 2 rows per resident, so Δ₂ = 2; two honest shares carry ρ = Δ₂²/(2·2σ²).
        let expected = 2.0 / (2.0 * 2.0 * 0.1f64).sqrt();
        assert!(
            (shares.sigma / expected - 1.0).abs() < 1e-6,
            "{}",
            shares.sigma
        );
        assert_eq!(p.cost.rho, Rho::nearest(0.1).unwrap());
        // The preview's half-width is for all five partners' shares: √(5/2) × the honest sum's.
        let central = price(
            &diabetes_central(),
            &count(),
            PrivacyRequest::Rho(0.1),
            None,
            context(),
        )
        .unwrap();
        assert!(
            p.half_widths[0] > central.half_widths[0] * 1.4,
            "{:?}",
            p.half_widths
        );
        // With no honest count (a context that is not a round's) nothing is priced.
        let unknown = PricingContext {
            honest_survivors: 0,
            ..context()
        };
        assert!(price(&policy, &count(), PrivacyRequest::Rho(0.1), None, unknown).is_err());
    }

    #[test]
    fn a_stored_calibration_reads_back_bit_for_bit_and_releases() {
        // The coordinator stores the priced plan as JSON with the reservation and releases
        // from the stored copy: every float must survive the round trip exactly, or the
        // release's own cost check can refuse what was reserved.
        let policy = diabetes_central();
        for i in 1..200 {
            let privacy = if i % 2 == 0 {
                PrivacyRequest::Epsilon(0.013 * i as f64)
            } else {
                PrivacyRequest::Rho(0.000_37 * i as f64)
            };
            let p = price(&policy, &count(), privacy, None, context()).unwrap();
            let stored: Priced = serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
            assert_eq!(stored, p, "{privacy:?}");
            stored
                .release(&policy, &[1000], 5, p.cost.rho)
                .unwrap_or_else(|e| panic!("{privacy:?}: {e}"));
        }
    }

    #[test]
    fn the_reporting_delta_is_the_contexts() {
        let at = |delta| {
            price(
                &diabetes_central(),
                &count(),
                PrivacyRequest::Rho(0.05),
                None,
                PricingContext {
                    reporting_delta: delta,
                    ..context()
                },
            )
            .unwrap()
            .cost
            .approx_dp
        };
        let (loose, tight) = (at(1e-3), at(1e-9));
        assert_eq!((loose.1, tight.1), (1e-3, 1e-9));
        assert!(loose.0 < tight.0, "{loose:?} {tight:?}");
    }

    #[test]
    fn bad_numbers_are_refused_with_their_names() {
        let refuse = |privacy, confidence| {
            price(
                &diabetes_central(),
                &count(),
                privacy,
                confidence,
                context(),
            )
            .unwrap_err()
        };
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let e = refuse(PrivacyRequest::Epsilon(bad), None);
            assert_eq!(e.code(), "query.privacy", "{e}");
            assert!(e.to_string().starts_with("epsilon must be"), "{e}");
            let e = refuse(PrivacyRequest::Rho(bad), None);
            assert!(e.to_string().starts_with("rho must be"), "{e}");
            let target = PrivacyRequest::TargetHalfWidth {
                half_width: bad,
                mechanism: MechanismChoice::Gaussian,
            };
            assert!(
                refuse(target, None)
                    .to_string()
                    .starts_with("half_width must be")
            );
        }
        for bad in [0.0, 1.0, 1.5, f64::NAN] {
            let e = refuse(PrivacyRequest::Rho(0.05), Some(bad));
            assert_eq!(e.code(), "query.confidence", "{e}");
        }
        let mut other = count();
        other.dataset = "falls".into();
        let e = price(
            &diabetes_central(),
            &other,
            PrivacyRequest::Rho(0.05),
            None,
            context(),
        )
        .unwrap_err();
        assert_eq!(e.code(), "query.dataset_mismatch", "{e}");
    }

    #[test]
    fn requests_below_the_floor_are_refused_before_any_accuracy_is_computed() {
        let policy = diabetes_central();
        let floor = policy.min_per_query;
        assert!(floor > Rho::ZERO);
        for privacy in [
            PrivacyRequest::Rho(1e-300),
            PrivacyRequest::Rho(floor.as_f64() / 2.0),
            PrivacyRequest::Epsilon(1e-4),
        ] {
            let e = price(&policy, &count(), privacy, None, context()).unwrap_err();
            assert_eq!(e.code(), "query.below_floor", "{privacy:?}: {e}");
            assert!(e.to_string().contains("floor"), "{e}");
        }
        // A target the floor already meets costs the floor, not less.
        for mechanism in [MechanismChoice::Gaussian, MechanismChoice::Laplace] {
            let target = PrivacyRequest::TargetHalfWidth {
                half_width: 1e12,
                mechanism,
            };
            let p = price(&policy, &count(), target, None, context()).unwrap();
            assert!(p.cost.rho >= floor, "{mechanism:?}: {:?}", p.cost);
            assert!(
                p.cost.rho.as_f64() < floor.as_f64() * 1.001,
                "{mechanism:?}: {:?}",
                p.cost
            );
            assert!(p.half_widths[0] < 1e12);
        }
        // Just at the floor is priced.
        assert!(
            price(
                &policy,
                &count(),
                PrivacyRequest::Rho(floor.as_f64() * 1.001),
                None,
                context()
            )
            .is_ok()
        );
    }
}
