//! RFC 9457 problem details: every error the coordinator returns.

use serde::{Deserialize, Serialize};

/// The media type of error bodies.
pub const PROBLEM_CONTENT_TYPE: &str = "application/problem+json";

/// An error body. `code` is stable and machine-readable; `detail` says what was wrong with
/// this request in words a partner IT team or researcher can act on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Problem {
    /// A URI naming the problem type (`urn:civic:problem:<code>`).
    #[serde(rename = "type")]
    pub kind: String,
    /// A short summary of the type.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What was wrong with this request.
    pub detail: String,
    /// The stable code (`auth.missing_token`, `policy.over_budget`, …).
    pub code: String,
}
