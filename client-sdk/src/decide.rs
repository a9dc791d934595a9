//! How a partner decides to take part in a round: the checks that need no data and no
//! network, made before any row is read. The agent (`agent.rs`) fetches what they need (the
//! policy version the round names, this partner's ledger) and sends a refusal to the
//! coordinator as a decline with the reason.
//!
//! A round is refused unless:
//! - it runs the protocol this agent speaks (secure aggregation of a sum; for a linked
//!   dataset, the pairwise joins before it);
//! - the query fits the policy version it names and its statistic is one this partner
//!   answers (`allowed_statistics`);
//! - its cost, computed here with the same pricing function the coordinator uses (never
//!   taken from the coordinator), is at least the policy's, the manifest's and this partner's
//!   floor per query and within this partner's per-query limits (`max_epsilon_per_query`,
//!   `max_rho_per_query`);
//! - with what this partner has already spent on the dataset it stays within `total_rho`
//!   ([`check_total`], checked again under the ledger's lock just before the vector leaves);
//! - the round's configuration is the one the plan needs (round id, vector length, a ring wide
//!   enough for the sums and the noise shares' tail), it guarantees as many honest
//!   contributors under this partner's colluder assumption as under the board's (the number
//!   the noise shares are sized for), and its secure aggregation meets the manifest's and this partner's
//!   requirements (tolerated dropouts and colluders, the survivor floor).
//!
//! A refusal carries a [`DeclineCode`]: the coordinator hears only the code.

use civic_api::round::RoundAnnouncement;
use civic_mechanisms::pricing::{DEFAULT_REPORTING_DELTA, PricingContext, PricingError, price};
use civic_mechanisms::{AggregationPlan, ReleasePlan};
use civic_policies::Rho;
use civic_policies::dataset::{DatasetPolicy, NoisePlacement};
use civic_policies::manifest::RoundRequirements;
use civic_policies::query::Statistic;
use civic_secagg::{Requirements, Tolerances, Width};

use crate::config::LocalLimits;
use crate::decline::DeclineCode;
use crate::error::AgentError;
use crate::evaluate::CompiledPlan;

/// The protocol this agent speaks for a dataset's rounds.
pub const SECURE_SUM: &str = "secure-sum/v4";

/// The protocol this agent speaks for a linked dataset's rounds: the pairwise joins, then
/// the secure sum.
pub const LINKED_SUM: &str = "linked-sum/v1";

/// A round that passed the local policy.
pub struct CheckedRound {
    /// The plan compiled locally.
    pub plan: AggregationPlan,
    /// The noise calibrated locally: with distributed noise, the share this partner adds.
    pub noise: ReleasePlan,
    /// The plan against the row layout.
    pub compiled: CompiledPlan,
    /// What the query costs, as this agent computes it (for a training job, all its
    /// iterations: what the per-query limits and the approvals are checked against).
    pub cost: Rho,
    /// What this round charges this partner's ledger: the query's cost, or one iteration's
    /// share of a training job's.
    pub round_cost: Rho,
    /// What this partner records as answered, so it never answers it twice: the question's
    /// fingerprint, and for a training job the iteration.
    pub answer_key: Option<u32>,
    /// What this partner requires of the round's secure aggregation.
    pub requirements: Requirements,
}

/// The statistic's name as `allowed_statistics` spells it.
pub fn statistic_name(s: &Statistic) -> &'static str {
    match s {
        Statistic::Count => "count",
        Statistic::Sum { .. } => "sum",
        Statistic::Mean { .. } => "mean",
        Statistic::Histogram { .. } => "histogram",
        Statistic::Quantiles { .. } => "quantiles",
        Statistic::LinearRegression { .. } => "linear_regression",
        Statistic::LogisticRegression { .. } => "logistic_regression",
        Statistic::DpSgd { .. } => "dp_sgd",
    }
}

/// The checks that need no data and no state (see the module documentation); `floor` is
/// what the board's manifest requires of every round.
pub fn check_round(
    ann: &RoundAnnouncement,
    policy: &DatasetPolicy,
    limits: &LocalLimits,
    floor: &RoundRequirements,
) -> Result<CheckedRound, AgentError> {
    use DeclineCode::*;
    let refuse = |code: DeclineCode| move |m: String| AgentError::Refused(code, m);
    let speaks = match policy.linkage {
        Some(_) => LINKED_SUM,
        None => SECURE_SUM,
    };
    if ann.protocol != speaks {
        return Err(refuse(ProtocolUnsupported)(format!(
            "the round runs protocol {:?}; for dataset {} this agent takes part only in {speaks}",
            ann.protocol, ann.dataset
        )));
    }
    let validated = ann
        .query
        .clone()
        .validate(policy)
        .map_err(|e| refuse(QueryInvalid)(format!("the query does not fit the policy: {e}")))?;
    let name = statistic_name(&validated.query().statistic);
    if let Some(allowed) = &limits.allowed_statistics
        && !allowed.iter().any(|a| a == name)
    {
        return Err(refuse(StatisticNotAllowed)(format!(
            "statistic {name} is not among those this partner answers ({})",
            allowed.join(", ")
        )));
    }
    // The honest shares the round's configuration guarantees against the board's colluders:
    // what the coordinator sized the noise for. Under this partner's own colluder assumption,
    // if stricter, the round must guarantee as many, or the shares would be too thin.
    let honest = ann.config.honest_contributors(floor.tolerated_colluders);
    let honest_here = ann
        .config
        .honest_contributors(floor.tolerated_colluders.max(limits.min_colluders));
    if policy.noise() == NoisePlacement::Distributed && honest_here < honest {
        return Err(refuse(ThresholdTooLow)(format!(
            "the round guarantees {honest_here} honest contributors when {} partners may collude \
             (this partner's min_colluders), fewer than the {honest} its noise shares are sized for",
            limits.min_colluders
        )));
    }
    let context = PricingContext {
        max_rows_per_partner: ann.max_rows_per_partner,
        reporting_delta: ann.reporting_delta.unwrap_or(DEFAULT_REPORTING_DELTA),
        // From the manifest this agent verified, never from the announcement.
        board_floor: Rho::cap(floor.min_rho_per_query).unwrap_or(Rho::ZERO),
        // From the round's configuration, checked below against the manifest and this
        // partner's requirements: never a noise scale taken from the coordinator.
        honest_survivors: match policy.noise() {
            NoisePlacement::Distributed => honest,
            NoisePlacement::Central => 0,
        },
    };
    let priced = price(policy, &ann.query, ann.privacy, ann.confidence, context).map_err(|e| {
        let code = match e {
            PricingError::BelowFloor { .. } => CostBelowMinimum,
            _ => QueryInvalid,
        };
        refuse(code)(e.to_string())
    })?;
    let (cost, epsilon) = (priced.cost.rho, priced.cost.epsilon);
    if let (Some(max), Some(eps)) = (limits.max_epsilon_per_query, epsilon)
        && eps > max * (1.0 + 1e-12)
    {
        return Err(refuse(CostAboveLimit)(format!(
            "the query spends ε = {eps}, above this partner's limit of {max} per query"
        )));
    }
    if let Some(max) = limits.max_rho_per_query {
        let cap = Rho::cap(max).map_err(|e| refuse(CostAboveLimit)(e.to_string()))?;
        if cost > cap {
            return Err(refuse(CostAboveLimit)(format!(
                "the query spends ρ = {cost}, above this partner's limit of {max} per query"
            )));
        }
    } else if epsilon.is_none() {
        return Err(refuse(CostAboveLimit)(
            "the query is ρ-zCDP and this partner sets only max_epsilon_per_query".into(),
        ));
    }
    let least = floor
        .min_rho_per_query
        .max(limits.min_rho_per_query.unwrap_or(0.0));
    if cost.as_f64() < least * (1.0 - 1e-12) {
        return Err(refuse(CostBelowMinimum)(format!(
            "the query spends ρ = {cost}, below the least a query may cost ({least}: the \
             manifest's floor and this partner's)"
        )));
    }
    let (plan, noise) = (priced.plan, priced.release_plan);
    let c = &ann.config;
    if c.round_id.0 != ann.round_id as u64 || c.vector_len != plan.vector_len {
        return Err(refuse(ConfigurationMismatch)(format!(
            "the round's configuration (round {}, {} slots) does not match the plan compiled here (round {}, {} slots)",
            c.round_id, c.vector_len, ann.round_id, plan.vector_len
        )));
    }
    let needed = Width::for_layout(
        plan.max_slot_per_partner,
        c.participants.len(),
        noise.noise_tail(&plan),
    )
    .map_err(|e| refuse(ConfigurationMismatch)(e.to_string()))?;
    // A linked round's pair shares add up only in the full ring.
    let needed = match policy.linkage {
        Some(_) => Width::W64,
        None => needed,
    };
    if c.width.max_magnitude() < needed.max_magnitude() {
        return Err(refuse(ConfigurationMismatch)(format!(
            "the round's ring ({:?}) is too narrow for the plan's sums and noise (needs {needed:?})",
            c.width
        )));
    }
    let requirements = Requirements {
        tolerances: Tolerances {
            max_dropout_rate: limits.max_dropout_rate,
            max_corrupt_fraction: limits.max_corrupt_fraction,
        },
        min_survivors: limits
            .min_survivors
            .max(policy.min_partners() as usize)
            .max(floor.min_survivors),
        min_colluders: limits.min_colluders.max(floor.tolerated_colluders),
    };
    c.check_requirements(&requirements)
        .map_err(|e| refuse(ThresholdTooLow)(e.to_string()))?;
    let mut compiled =
        CompiledPlan::new(&validated, policy, &plan).map_err(refuse(QueryInvalid))?;
    let iteration = check_training_step(ann, &plan, &mut compiled)?;
    Ok(CheckedRound {
        cost,
        round_cost: noise.iteration_cost(&plan),
        plan,
        noise,
        compiled,
        requirements,
        answer_key: iteration,
    })
}

/// A training round's step, checked before any row is read: announced exactly when the plan
/// trains a model, an iteration within the job's, and coefficients the model accepts (the
/// right length, finite, Σ|β| within its cap), which are set on `compiled`. Returns the
/// iteration.
fn check_training_step(
    ann: &RoundAnnouncement,
    plan: &AggregationPlan,
    compiled: &mut CompiledPlan,
) -> Result<Option<u32>, AgentError> {
    let refuse = |m: String| AgentError::Refused(DeclineCode::TrainingStepInvalid, m);
    match (&plan.learning, &ann.training) {
        (None, None) => Ok(None),
        (None, Some(_)) => Err(refuse(
            "the round announces a training step but its query trains no model".into(),
        )),
        (Some(_), None) => Err(refuse(
            "the round trains a model but announces no step to compute".into(),
        )),
        (Some(spec), Some(step)) => {
            if step.iteration >= spec.iterations {
                return Err(refuse(format!(
                    "the round announces iteration {} of a job of {} iterations",
                    step.iteration, spec.iterations
                )));
            }
            compiled
                .set_coefficients(&step.coefficients)
                .map_err(refuse)?;
            Ok(Some(step.iteration))
        }
    }
}

/// What the coordinator is told when this partner declines: the code of a refusal and its
/// fixed description, never the details (which limit, which value); anything that went
/// wrong reading or evaluating the data is reported as `data.unavailable`, without a word of
/// it (no value, count, row, file or column), since the coordinator may be probing.
pub fn public_reason(refusal: &AgentError) -> String {
    match refusal {
        AgentError::Refused(code, _) => code.public_reason(),
        _ => DeclineCode::DataUnavailable.public_reason(),
    }
}

/// Makes a local aggregate fit the round whatever the data: each slot is clamped to the
/// magnitude the ring was sized for (`max_slot_per_partner`, from the public bound on rows
/// per partner), so that neither taking part nor the sum's not wrapping depends on the data.
/// Clamping a slot is 1-Lipschitz, so one resident still moves it by at most its
/// sensitivity. Returns the vector and how many slots were clamped.
pub fn fit_to_round(mut vector: Vec<i64>, max_slot_per_partner: u128) -> (Vec<i64>, usize) {
    let bound = i64::try_from(max_slot_per_partner).unwrap_or(i64::MAX);
    let mut clamped = 0;
    for v in &mut vector {
        let c = (*v).clamp(-bound, bound);
        clamped += usize::from(c != *v);
        *v = c;
    }
    (vector, clamped)
}

/// Refuses a round that would take the dataset's local spending past `limits.total_rho`.
pub fn check_total(
    limits: &LocalLimits,
    dataset: &str,
    spent: Rho,
    cost: Rho,
) -> Result<(), AgentError> {
    let total = Rho::cap(limits.total_rho)
        .map_err(|e| AgentError::Refused(DeclineCode::LocalBudgetExhausted, e.to_string()))?;
    match spent.checked_add(cost) {
        Some(after) if after <= total => Ok(()),
        _ => Err(AgentError::Refused(
            DeclineCode::LocalBudgetExhausted,
            format!(
                "dataset {dataset}: this partner has spent ρ = {spent} of its local total {}; the query's ρ = {cost} would exceed it",
                limits.total_rho
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use civic_api::query::PrivacyRequest;
    use civic_policies::samples::diabetes_central as diabetes;
    use civic_secagg::{GraphKind, PartnerId, RoundConfig, RoundId};
    use serde_json::json;

    fn limits() -> LocalLimits {
        toml::from_str(
            "max_epsilon_per_query = 1.0\nmax_rho_per_query = 0.1\ntotal_rho = 0.3\nmin_survivors = 3",
        )
        .unwrap()
    }

    /// An announcement for a diabetes query, configured as the coordinator would.
    fn announcement(
        query: serde_json::Value,
        privacy: PrivacyRequest,
        min_survivors: usize,
    ) -> RoundAnnouncement {
        let policy = diabetes();
        let q: civic_policies::Query = serde_json::from_value(query.clone()).unwrap();
        let plan =
            AggregationPlan::compile(&q.validate(&policy).unwrap(), &policy, 10_000).unwrap();
        let participants: Vec<PartnerId> = (1..=5).map(PartnerId).collect();
        let width = Width::for_layout(plan.max_slot_per_partner, 5, 0).unwrap();
        let tolerances = Tolerances {
            max_dropout_rate: 0.0,
            max_corrupt_fraction: 0.0,
        };
        let config = RoundConfig::new(
            RoundId(7),
            participants,
            plan.vector_len,
            width,
            GraphKind::Complete,
            tolerances,
            min_survivors,
        )
        .unwrap();
        serde_json::from_value(json!({
            "round_id": 7, "query_id": 7, "protocol": SECURE_SUM, "dataset": "diabetes", "dataset_version": 1,
            "query": query, "privacy": privacy, "max_rows_per_partner": 10_000,
            "config": config, "phase": "advertise_keys", "phase_deadline": "2026-11-23T00:00:00Z"
        }))
        .unwrap()
    }

    fn count() -> serde_json::Value {
        json!({ "dataset": "diabetes", "statistic": "count" })
    }

    fn floor() -> RoundRequirements {
        RoundRequirements {
            tolerated_colluders: 1,
            min_survivors: 3,
            min_rho_per_query: 1e-4,
            max_rounds_per_dataset_per_day: 100,
        }
    }

    fn refusal(r: Result<CheckedRound, AgentError>) -> String {
        match r {
            Err(AgentError::Refused(code, m)) => format!("{code}: {m}"),
            Err(e) => panic!("not a refusal: {e}"),
            Ok(_) => panic!("accepted"),
        }
    }

    #[test]
    fn a_training_round_is_costed_per_iteration_and_its_step_checked_before_any_row() {
        let policy = diabetes();
        let logistic = json!({ "dataset": "diabetes", "statistic": { "logistic_regression": {
            "features": ["age", "hba1c", "sex"], "outcome": "has_diabetes", "iterations": 4
        } } });
        let with_step = |iteration: u32, coefficients: Vec<f64>| {
            let mut ann = announcement(logistic.clone(), PrivacyRequest::Rho(0.08), 3);
            ann.training = Some(civic_api::round::TrainingStep {
                iteration,
                coefficients,
            });
            ann
        };
        let checked =
            check_round(&with_step(3, vec![0.5; 4]), &policy, &limits(), &floor()).unwrap();
        // The job is checked against the per-query limits; a round charges its share.
        assert!(
            (checked.cost.as_f64() - 0.08).abs() < 1e-12,
            "{}",
            checked.cost
        );
        assert!((checked.round_cost.as_f64() - 0.02).abs() < 1e-12);
        assert_eq!(checked.answer_key, Some(3));
        assert!(checked.compiled.trains());
        // Coefficients a hostile coordinator might announce are refused with one code.
        for (iteration, beta) in [
            (4, vec![0.0; 4]),
            (0, vec![0.0; 5]),
            (0, vec![f64::NAN, 0.0, 0.0, 0.0]),
            (0, vec![f64::INFINITY, 0.0, 0.0, 0.0]),
            (0, vec![1e6, 1.0, 0.0, 0.0]),
        ] {
            let e = refusal(check_round(
                &with_step(iteration, beta),
                &policy,
                &limits(),
                &floor(),
            ));
            assert!(e.starts_with("training.step_invalid"), "{e}");
        }
        let mut no_step = with_step(0, vec![0.0; 4]);
        no_step.training = None;
        let e = refusal(check_round(&no_step, &policy, &limits(), &floor()));
        assert!(e.contains("announces no step"), "{e}");
        let mut count_with_step = announcement(count(), PrivacyRequest::Epsilon(0.4), 3);
        count_with_step.training = with_step(0, vec![0.0; 4]).training;
        let e = refusal(check_round(&count_with_step, &policy, &limits(), &floor()));
        assert!(e.contains("trains no model"), "{e}");
    }

    #[test]
    fn a_dp_sgd_round_checks_its_parameters_before_the_trainer_runs() {
        let policy = diabetes();
        let sgd = json!({ "dataset": "diabetes", "statistic": { "dp_sgd": {
            "trainer": "eye-photos", "parameters": 3, "clip": 1.0, "learning_rate": 2.0,
            "iterations": 5
        } } });
        let with_step = |iteration: u32, coefficients: Vec<f64>| {
            let mut ann = announcement(sgd.clone(), PrivacyRequest::Rho(0.1), 3);
            ann.training = Some(civic_api::round::TrainingStep {
                iteration,
                coefficients,
            });
            ann
        };
        let checked = check_round(
            &with_step(2, vec![0.5, -1.0, 3.0]),
            &policy,
            &limits(),
            &floor(),
        )
        .unwrap();
        assert!((checked.round_cost.as_f64() - 0.02).abs() < 1e-12);
        assert_eq!(checked.answer_key, Some(2));
        let sgd_round = checked.compiled.sgd.as_ref().unwrap();
        assert_eq!(
            (sgd_round.trainer.as_str(), sgd_round.parameters.as_slice()),
            ("eye-photos", [0.5, -1.0, 3.0].as_slice())
        );
        for (iteration, theta) in [
            (5, vec![0.0; 3]),
            (0, vec![0.0; 4]),
            (0, vec![f64::NAN, 0.0, 0.0]),
            (0, vec![2e6, 0.0, 0.0]),
        ] {
            let e = refusal(check_round(
                &with_step(iteration, theta),
                &policy,
                &limits(),
                &floor(),
            ));
            assert!(e.starts_with("training.step_invalid"), "{e}");
        }
    }

    #[test]
    fn a_round_within_the_local_limits_is_accepted_and_costed_here() {
        let policy = diabetes();
        let ann = announcement(count(), PrivacyRequest::Epsilon(0.4), 3);
        let checked = check_round(&ann, &policy, &limits(), &floor()).unwrap();
        // ρ = ε²/2 for pure ε, rounded up to the ledger unit.
        assert!(
            (checked.cost.as_f64() - 0.08).abs() < 1e-9,
            "{}",
            checked.cost
        );
        assert_eq!(checked.requirements.min_survivors, 3);
        // The local total: 0.3 allows three such queries, not four.
        let spent = Rho::cap(0.2).unwrap();
        assert!(check_total(&limits(), "diabetes", spent, checked.cost).is_ok());
        let spent = Rho::cap(0.24).unwrap();
        let e = check_total(&limits(), "diabetes", spent, checked.cost).unwrap_err();
        assert!(e.to_string().contains("local total 0.3"), "{e}");
    }

    #[test]
    fn distributed_noise_is_sized_here_from_the_rounds_configuration() {
        // diabetes.toml itself: the partners add the noise.
        let policy = civic_policies::samples::diabetes();
        let ann = announcement(count(), PrivacyRequest::Rho(0.05), 3);
        let checked = check_round(&ann, &policy, &limits(), &floor()).unwrap();
        let shares = checked.noise.groups[0].shares.expect("distributed");
        assert_eq!(shares.count.honest, ann.config.honest_contributors(1));
        assert_eq!(shares.count.partners, 5);
        // A partner that assumes more colluders than the board refuses a round that leaves
        // fewer honest shares under its assumption than the noise is sized for.
        let wary: LocalLimits = toml::from_str(
            "max_rho_per_query = 0.1\ntotal_rho = 0.3\nmin_survivors = 3\nmin_colluders = 4",
        )
        .unwrap();
        let e = refusal(check_round(&ann, &policy, &wary, &floor()));
        assert!(
            e.starts_with("round.threshold_too_low") && e.contains("honest"),
            "{e}"
        );
        // Pure ε cannot be split into shares.
        let ann = announcement(count(), PrivacyRequest::Epsilon(0.4), 3);
        let e = refusal(check_round(&ann, &policy, &limits(), &floor()));
        assert!(e.contains("central-only"), "{e}");
    }

    #[test]
    fn rounds_over_a_local_limit_are_refused_with_the_reason() {
        let policy = diabetes();
        let e = refusal(check_round(
            &announcement(count(), PrivacyRequest::Epsilon(2.0), 3),
            &policy,
            &limits(),
            &floor(),
        ));
        assert!(
            e.contains("ε = 2") && e.contains("limit of 1 per query"),
            "{e}"
        );
        let e = refusal(check_round(
            &announcement(count(), PrivacyRequest::Rho(0.2), 3),
            &policy,
            &limits(),
            &floor(),
        ));
        assert!(e.contains("limit of 0.1 per query"), "{e}");
        let sum = json!({ "dataset": "diabetes", "statistic": { "sum": { "column": "hba1c" } } });
        let mut only_counts = limits();
        only_counts.allowed_statistics = Some(vec!["count".into()]);
        let e = refusal(check_round(
            &announcement(sum, PrivacyRequest::Rho(0.01), 3),
            &policy,
            &only_counts,
            &floor(),
        ));
        assert!(e.contains("statistic sum is not among"), "{e}");
        // A coordinator that would release from fewer survivors than this partner requires.
        let mut strict = limits();
        strict.min_survivors = 4;
        let e = refusal(check_round(
            &announcement(count(), PrivacyRequest::Rho(0.01), 3),
            &policy,
            &strict,
            &floor(),
        ));
        assert!(e.contains("requires at least 4"), "{e}");
    }

    #[test]
    fn what_the_coordinator_hears_carries_no_data() {
        let data = AgentError::Data {
            source_name: "/srv/extract.csv".into(),
            at: crate::source::RowAt::Line(305),
            column: "AGE_YRS".into(),
            reason: "expected a whole number".into(),
        };
        let reason = public_reason(&data);
        for secret in ["extract", "305", "AGE_YRS", "whole number"] {
            assert!(!reason.contains(secret), "{reason}");
        }
        let policy = AgentError::Refused(
            DeclineCode::StatisticNotAllowed,
            "statistic sum is not among those this partner answers (count)".into(),
        );
        assert_eq!(
            public_reason(&policy),
            "query.statistic_not_allowed: this partner does not answer this statistic"
        );
        let limit = AgentError::Refused(
            DeclineCode::CostAboveLimit,
            "the query spends ρ = 0.2, above this partner's limit of 0.1".into(),
        );
        assert!(!public_reason(&limit).contains("0.1"));
    }

    #[test]
    fn an_aggregate_is_fitted_to_the_ring_instead_of_declined() {
        assert_eq!(fit_to_round(vec![3, -4, 5], 10), (vec![3, -4, 5], 0));
        assert_eq!(fit_to_round(vec![30, -40, 5], 10), (vec![10, -10, 5], 2));
        // The fitted slots can never wrap the ring the round configured for the bound.
        let width = Width::for_layout(10, 5, 0).unwrap();
        let (fitted, _) = fit_to_round(vec![i64::MAX, i64::MIN], 10);
        assert!(civic_secagg::RingVector::from_signed(width, &fitted).is_ok());
    }

    #[test]
    fn a_flood_of_near_free_queries_is_refused_at_the_policys_floor() {
        let policy = diabetes();
        let e = refusal(check_round(
            &announcement(count(), PrivacyRequest::Rho(1e-12), 3),
            &policy,
            &limits(),
            &floor(),
        ));
        assert!(
            e.starts_with("query.cost_below_minimum") && e.contains("floor"),
            "{e}"
        );
    }

    #[test]
    fn a_round_whose_configuration_does_not_match_the_plan_is_refused() {
        let policy = diabetes();
        let mut ann = announcement(count(), PrivacyRequest::Rho(0.01), 3);
        ann.config.vector_len = 2;
        let e = refusal(check_round(&ann, &policy, &limits(), &floor()));
        assert!(e.contains("does not match the plan"), "{e}");
        let mut ann = announcement(count(), PrivacyRequest::Rho(0.01), 3);
        ann.query = serde_json::from_value(
            json!({ "dataset": "diabetes", "statistic": { "sum": { "column": "nhs_number" } } }),
        )
        .unwrap();
        let e = refusal(check_round(&ann, &policy, &limits(), &floor()));
        assert!(e.contains("does not fit the policy"), "{e}");
        let mut ann = announcement(count(), PrivacyRequest::Rho(0.01), 3);
        ann.protocol = "something-else/v9".into();
        let e = refusal(check_round(&ann, &policy, &limits(), &floor()));
        assert!(e.contains("takes part only in secure-sum/v4"), "{e}");
    }

    #[test]
    fn the_manifests_floor_refuses_cheap_queries_and_weak_thresholds_with_their_codes() {
        let policy = diabetes();
        let ann = announcement(count(), PrivacyRequest::Rho(5e-5), 3);
        let e = refusal(check_round(&ann, &policy, &limits(), &floor()));
        assert!(e.starts_with("query.cost_below_minimum"), "{e}");
        let ann = announcement(count(), PrivacyRequest::Rho(0.01), 3);
        assert_eq!(ann.config.threshold, 4);
        let two = RoundRequirements {
            tolerated_colluders: 2,
            ..floor()
        };
        assert!(check_round(&ann, &policy, &limits(), &two).is_ok());
        let three = RoundRequirements {
            tolerated_colluders: 3,
            ..floor()
        };
        let e = refusal(check_round(&ann, &policy, &limits(), &three));
        assert!(e.starts_with("round.threshold_too_low"), "{e}");
        let four_survivors = RoundRequirements {
            min_survivors: 4,
            ..floor()
        };
        let e = refusal(check_round(&ann, &policy, &limits(), &four_survivors));
        assert!(e.contains("requires at least 4"), "{e}");
    }
}
