//! From a researcher's request to a calibrated, costed plan: the same computation for a
//! preview, a submission, a round's release and an agent's own check, so they cannot
//! disagree. Pure (no store); run it inside `web::block`, since it calls OpenDP.

use civic_api::query::{CostView, QueryRequest};
use civic_mechanisms::{AggregationPlan, PricingContext, ReleasePlan};
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

/// Compiles and calibrates `request` under `policy` (version `version`) with the shared
/// pricing core, and adds what only the coordinator needs: the fingerprint and approvals.
pub fn price(
    policy: &DatasetPolicy,
    version: i64,
    request: &QueryRequest,
    max_rows_per_partner: u64,
    reporting_delta: f64,
) -> ApiResult<Priced> {
    let context = PricingContext {
        max_rows_per_partner,
        reporting_delta,
    };
    let core = civic_mechanisms::price(
        policy,
        &request.query,
        request.privacy,
        request.confidence,
        context,
    )
    .map_err(pricing_error)?;
    let fingerprint = fingerprint(policy.id(), version, request, core.confidence);
    Ok(Priced {
        approvals_required: policy.approvals_needed(core.cost.rho),
        cost: CostView {
            rho: core.cost.rho.as_f64(),
            epsilon: core.cost.epsilon,
            approx_dp: core.cost.approx_dp,
        },
        plan: core.plan,
        release_plan: core.release_plan,
        half_widths: core.half_widths,
        blocks: core.blocks,
        confidence: core.confidence,
        fingerprint,
    })
}

fn pricing_error(e: civic_mechanisms::PricingError) -> ApiError {
    use civic_mechanisms::PricingError as P;
    match e {
        P::Query(e) => e.into(),
        P::Mechanism(e) => e.into(),
        other => ApiError::bad_request(other.code(), other.to_string()),
    }
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
