//! Researchers' queries: preview, submission, status and result; the public register.

use civic_policies::Query;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub use civic_policies::privacy::{MechanismChoice, PrivacyRequest};

/// SHA-256 (hex) over the canonical JSON of what determines a release: dataset, policy
/// version, query, privacy and confidence (not the project or the researcher). Two
/// submissions with the same fingerprint are the same question: the second is re-served the
/// first's release. Board members approve a query by signing its fingerprint, and agents
/// compute it from the round's announcement to check those signatures.
pub fn fingerprint(
    dataset: &str,
    version: i64,
    query: &Query,
    privacy: &PrivacyRequest,
    confidence: f64,
) -> String {
    use sha2::Digest;
    let canonical = serde_json::json!({
        "dataset": dataset,
        "version": version,
        "query": query,
        "privacy": privacy,
        "confidence": confidence,
    });
    hex::encode(sha2::Sha256::digest(canonical.to_string().as_bytes()))
}

/// `POST /v1/queries/preview` and `POST /v1/queries`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QueryRequest {
    /// The project whose allocation pays.
    #[schema(pattern = r"^[A-Za-z0-9._@-]{1,64}$")]
    pub project: String,
    /// The question (`docs/queries.md` has the whole language).
    pub query: Query,
    /// Its privacy cost or target accuracy: `{"epsilon": 0.5}` (pure ε, discrete Laplace),
    /// `{"rho": 0.05}` (zCDP, discrete Gaussian) or `{"target_half_width": {"half_width": 10,
    /// "mechanism": "laplace" | "gaussian"}}`.
    pub privacy: PrivacyRequest,
    /// Confidence level of the intervals (default 0.95).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(exclusive_minimum = 0.0, exclusive_maximum = 1.0)]
    pub confidence: Option<f64>,
}

/// A cost in every form a board reads.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CostView {
    /// zCDP ρ, as the ledger charges it.
    pub rho: f64,
    /// Pure ε, when the mechanism is Laplace.
    pub epsilon: Option<f64>,
    /// (ε, δ) at δ = 10⁻⁶ (or the policy's δ).
    pub approx_dp: (f64, f64),
}

/// What is left to spend, in ρ.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RemainingView {
    /// On the dataset.
    pub dataset_rho: f64,
    /// On the project's allocation (0 if it has none).
    pub project_rho: f64,
    /// The per-query cap.
    pub per_query_rho: f64,
}

/// How accurate one row of a release will be, known before any data.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StatisticAccuracy {
    /// The row, as the release will name it: "count", "mean(hba1c)", "q0.5(hba1c)".
    pub name: String,
    /// Each cell's interval half-width in the statistic's units, where it does not depend on
    /// the data (counts, including disclosure rounding; sums).
    pub half_width: Option<f64>,
    /// For a mean: `[rows, half-width]` for cells of 100 to 100 000 rows, at the widest mean
    /// the column's bounds allow.
    pub half_width_at_rows: Vec<(u64, f64)>,
    /// The confidence of these intervals.
    pub confidence: f64,
    /// What else shapes the accuracy (rounding; no interval stated for quantiles and
    /// regression coefficients).
    pub note: Option<String>,
}

/// `POST /v1/queries/preview`: what a submission would cost and how accurate it would be.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Preview {
    /// The dataset.
    pub dataset: String,
    /// The policy version it was checked against.
    pub dataset_version: i64,
    /// Cells in the result.
    pub cells: usize,
    /// What each half-width is for: `count`, `sum(column)`, `left·right`.
    pub blocks: Vec<String>,
    /// The cost.
    pub cost: CostView,
    /// Confidence level of the half-widths.
    pub confidence: f64,
    /// The confidence-interval half-width of each block's cells, in its own units.
    pub half_widths: Vec<f64>,
    /// The accuracy of what the release will state, row by row as it will name them (a
    /// mean's, not its sum's and count's).
    pub accuracy: Vec<StatisticAccuracy>,
    /// The budget left.
    pub remaining: RemainingView,
    /// Whether the cost fits every cap now.
    pub affordable: bool,
    /// Why not, if not.
    pub refusal: Option<String>,
    /// Board approvals a submission would need.
    pub approvals_required: u32,
    /// An identical release already exists and would be re-served at no cost.
    pub reuses_release: Option<i64>,
    /// What else a submission would meet: for a training job, its rounds against the
    /// partners' rounds per dataset per day, and an earlier job that asked the same question
    /// and stopped part-way (its partners will not answer those iterations again).
    #[serde(default)]
    pub notes: Vec<String>,
}

/// Where a query is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum QueryState {
    /// Cost reserved; waiting for board approvals.
    AwaitingApproval,
    /// Cost reserved; a round is collecting partners' masked vectors.
    Running,
    /// Charged and released.
    Released,
    /// The round released nothing (too few partners); the reservation was refunded.
    Aborted,
    /// A board member rejected it; the reservation was refunded.
    Rejected,
}

impl QueryState {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            QueryState::AwaitingApproval => "awaiting_approval",
            QueryState::Running => "running",
            QueryState::Released => "released",
            QueryState::Aborted => "aborted",
            QueryState::Rejected => "rejected",
        }
    }

    /// Parses [`QueryState::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        use QueryState::*;
        [AwaitingApproval, Running, Released, Aborted, Rejected]
            .into_iter()
            .find(|q| q.as_str() == s)
    }
}

/// A board member's decision.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ApprovalView {
    /// Who.
    pub member: String,
    /// Approved or rejected.
    pub approve: bool,
    /// Why.
    pub reason: String,
    /// When.
    pub at: String,
    /// The board member's signature over the query's fingerprint, for an approval made
    /// under a manifest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub signature: Option<civic_policies::manifest::BoardSignature>,
}

/// One released cell.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CellView {
    /// The value (absent where disclosure control suppressed it or it is undefined).
    pub value: Option<f64>,
    /// The confidence interval, where one is stated.
    pub interval: Option<(f64, f64)>,
}

/// A stored release.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ReleaseView {
    /// The release.
    pub release_id: i64,
    /// When it was sampled.
    pub released_at: String,
    /// True when this query was answered from an earlier identical release, at no cost.
    pub reused: bool,
    /// What each row is: "count", "mean(hba1c)", "q0.5(hba1c)", "beta(age)".
    pub names: Vec<String>,
    /// Rows of cells, one row per name; every row has one cell per entry of `cell_keys`.
    pub rows: Vec<Vec<CellView>>,
    /// The columns that index the cells: the query's `group_by` columns, then a histogram's
    /// columns (empty for an ungrouped statistic).
    #[serde(default)]
    pub keys: Vec<String>,
    /// For each cell position, each key column's value: a category value, `false`/`true`, or
    /// a bin `[lo, hi)` (the last bin closed, `[lo, hi]`). Cells run group-major, the last key
    /// varying fastest.
    #[serde(default)]
    pub cell_keys: Vec<Vec<String>>,
    /// The privacy receipt: privacy unit, bounds, mechanism, scale, ε/δ/ρ, survivors,
    /// disclosure rules and caveats.
    #[schema(value_type = Object)]
    pub receipt: serde_json::Value,
}

/// `GET /v1/queries/{id}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct QueryView {
    /// The query id.
    pub id: i64,
    /// What board members sign to approve it (`civic-board approve FINGERPRINT`).
    pub fingerprint: String,
    /// The paying project.
    pub project: String,
    /// The dataset and policy version.
    pub dataset: String,
    /// The version.
    pub dataset_version: i64,
    /// Who submitted it.
    pub submitted_by: String,
    /// When.
    pub submitted_at: String,
    /// The request as submitted.
    pub request: QueryRequest,
    /// Where it is.
    pub state: QueryState,
    /// Why it was aborted or rejected.
    pub reason: Option<String>,
    /// Its cost (0 when re-served).
    pub cost: CostView,
    /// Approvals needed.
    pub approvals_required: u32,
    /// Decisions so far.
    pub approvals: Vec<ApprovalView>,
    /// The round, once opened.
    pub round_id: Option<i64>,
    /// The result, once released.
    pub result: Option<ReleaseView>,
    /// For a training job: how far it got, and the latest iterate announced to the partners.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub training: Option<TrainingView>,
}

/// A training job's progress. Every iterate was charged to the budget before the coordinator
/// announced it to the partners, so it is the researcher's while the job runs and after it
/// stops, whether it was released or aborted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TrainingView {
    /// The iterations the job asked for.
    pub iterations: u32,
    /// The rounds finished so far (each produced one iterate).
    pub finished: u32,
    /// The coefficients' or parameters' names, as the release names its rows.
    pub names: Vec<String>,
    /// The latest iterate announced to the partners, in the release's units (none before
    /// the first round finished; a released job's final iterate is its result).
    pub latest_announced: Option<Vec<f64>>,
}

/// One line of the public register.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RegisterEntry {
    /// The query.
    pub query_id: i64,
    /// The dataset.
    pub dataset: String,
    /// The project and its title.
    pub project: String,
    /// The project's title.
    pub project_title: String,
    /// What was asked.
    #[schema(value_type = Object)]
    pub query: Query,
    /// When it was released.
    pub released_at: String,
    /// What it cost.
    pub cost: CostView,
    /// The released values.
    pub release: ReleaseView,
}
