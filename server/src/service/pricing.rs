//! From a researcher's request to a calibrated, costed plan: the same computation for a
//! preview, a submission, a round's release and an agent's own check, so they cannot
//! disagree. Pure (no store); run it inside `web::block`, since it calls OpenDP.

use civic_api::query::{CostView, MechanismChoice, PrivacyRequest, QueryRequest};
use civic_mechanisms::accounting::epsilon_at_delta;
use civic_mechanisms::{AggregationPlan, BlockKind, NoiseKind, PrivacyChoice, ReleasePlan};
use civic_policies::DatasetPolicy;
use sha2::{Digest, Sha256};

use crate::error::{ApiError, ApiResult};

/// A request compiled and calibrated against one policy version.
#[derive(Clone, Debug)]
pub struct Priced {
    /// The vector layout.
    pub plan: AggregationPlan,
    /// The calibrated noise.
    pub release_plan: ReleasePlan,
    /// The cost in every form.
    pub cost: CostView,
    /// Per block, in statistic units.
    pub half_widths: Vec<f64>,
    /// Labels of the blocks.
    pub blocks: Vec<String>,
    /// The interval confidence.
    pub confidence: f64,
    /// Identity of the question, for re-serving an identical release.
    pub fingerprint: String,
    /// Board approvals a submission needs.
    pub approvals_required: u32,
}

/// Compiles and calibrates `request` under `policy` (version `version`).
pub fn price(
    policy: &DatasetPolicy,
    version: i64,
    request: &QueryRequest,
    max_rows_per_partner: u64,
    reporting_delta: f64,
) -> ApiResult<Priced> {
    if request.query.dataset != policy.id() {
        return Err(ApiError::bad_request(
            "query.dataset_mismatch",
            format!(
                "the query names dataset {:?} but was sent for {:?}",
                request.query.dataset,
                policy.id()
            ),
        ));
    }
    let confidence = request.confidence.unwrap_or(0.95);
    if !(confidence > 0.0 && confidence < 1.0) {
        return Err(ApiError::bad_request(
            "query.confidence",
            format!("confidence must be strictly between 0 and 1 (0.95 for 95%), got {confidence}"),
        ));
    }
    let alpha = 1.0 - confidence;
    let validated = request.query.clone().validate(policy)?;
    let plan = AggregationPlan::compile(&validated, policy, max_rows_per_partner)?;
    let positive = |name: &str, v: f64| {
        if v.is_finite() && v > 0.0 {
            Ok(v)
        } else {
            Err(ApiError::bad_request(
                "query.privacy",
                format!("{name} must be a positive, finite number, got {v}"),
            ))
        }
    };
    let release_plan = match request.privacy {
        PrivacyRequest::Epsilon(e) => ReleasePlan::new(
            &plan,
            PrivacyChoice::Epsilon(positive("epsilon", e)?),
            alpha,
        )?,
        PrivacyRequest::Rho(r) => {
            ReleasePlan::new(&plan, PrivacyChoice::Rho(positive("rho", r)?), alpha)?
        }
        PrivacyRequest::TargetHalfWidth {
            half_width,
            mechanism,
        } => {
            let kind = match mechanism {
                MechanismChoice::Laplace => NoiseKind::DiscreteLaplace,
                MechanismChoice::Gaussian => NoiseKind::DiscreteGaussian,
            };
            ReleasePlan::for_target_half_width(
                &plan,
                kind,
                positive("half_width", half_width)?,
                alpha,
            )?
        }
    };
    let epsilon = release_plan
        .groups
        .iter()
        .map(|g| g.epsilon)
        .sum::<Option<f64>>();
    let cost = CostView {
        rho: release_plan.cost.as_f64(),
        epsilon,
        approx_dp: (
            epsilon_at_delta(release_plan.cost, reporting_delta)?,
            reporting_delta,
        ),
    };
    let half_widths = release_plan.half_widths(&plan)?;
    let blocks = plan
        .blocks
        .iter()
        .map(|b| match &b.kind {
            BlockKind::Count => "count".to_string(),
            BlockKind::Sum { column } => format!("sum({column})"),
            BlockKind::Cross { left, right } => format!("{left}·{right}"),
        })
        .collect();
    let fingerprint = fingerprint(policy.id(), version, request, confidence);
    Ok(Priced {
        approvals_required: policy.approvals_needed(release_plan.cost),
        plan,
        release_plan,
        cost,
        half_widths,
        blocks,
        confidence,
        fingerprint,
    })
}

/// SHA-256 over the canonical JSON of what determines a release: dataset, policy version,
/// query, privacy and confidence (not the project or the researcher).
fn fingerprint(dataset: &str, version: i64, request: &QueryRequest, confidence: f64) -> String {
    let canonical = serde_json::json!({
        "dataset": dataset,
        "version": version,
        "query": request.query,
        "privacy": request.privacy,
        "confidence": confidence,
    });
    hex::encode(Sha256::digest(canonical.to_string().as_bytes()))
}

/// The cost view of a re-served query: nothing spent.
pub fn free() -> CostView {
    CostView {
        rho: 0.0,
        epsilon: Some(0.0),
        approx_dp: (0.0, 0.0),
    }
}
