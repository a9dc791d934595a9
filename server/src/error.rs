//! One error type for every handler, mapped to HTTP in one place as RFC 9457 problem+json.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use civic_api::Problem;
use civic_api::problem::PROBLEM_CONTENT_TYPE;
use civic_mechanisms::MechanismError;
use civic_policies::PolicyError;
use civic_secagg::SecAggError;

/// An error with its status, stable code and a message for the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {detail}")]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The stable code.
    pub code: String,
    /// What was wrong.
    pub detail: String,
}

impl ApiError {
    /// An error with this status and code.
    pub fn new(status: StatusCode, code: &str, detail: impl Into<String>) -> Self {
        Self {
            status,
            code: code.to_string(),
            detail: detail.into(),
        }
    }

    /// 400: the request is malformed or invalid.
    pub fn bad_request(code: &str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, detail)
    }

    /// 404.
    pub fn not_found(what: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", what)
    }

    /// 409: valid, but not in the current state.
    pub fn conflict(code: &str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, detail)
    }

    /// 403: authenticated, but not allowed.
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "auth.forbidden", detail)
    }

    /// 500, logged with its cause; the caller sees no internals.
    pub fn internal(context: &str, cause: impl std::fmt::Display) -> Self {
        tracing::error!(context, %cause, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("internal error while {context}; the coordinator's log has the cause"),
        )
    }

    fn title(&self) -> &'static str {
        self.status.canonical_reason().unwrap_or("Error")
    }

    /// The problem+json body.
    pub fn problem(&self) -> Problem {
        Problem {
            kind: format!("urn:civic:problem:{}", self.code),
            title: self.title().to_string(),
            status: self.status.as_u16(),
            detail: self.detail.clone(),
            code: self.code.clone(),
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        HttpResponse::build(self.status)
            .content_type(PROBLEM_CONTENT_TYPE)
            .json(self.problem())
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        // Two requests raced for the same unique key (two uploads picking one version
        // number): the loser changed nothing and may retry.
        if e.as_database_error()
            .is_some_and(|d| d.is_unique_violation())
        {
            return Self::conflict(
                "store.concurrent_update",
                "another request changed the same record at the same moment; nothing was changed, retry",
            );
        }
        Self::internal("using the store", e)
    }
}

impl From<PolicyError> for ApiError {
    fn from(e: PolicyError) -> Self {
        let status = match e {
            PolicyError::OverBudget { .. } | PolicyError::Ledger { .. } => StatusCode::CONFLICT,
            _ => StatusCode::BAD_REQUEST,
        };
        Self::new(status, e.code(), e.to_string())
    }
}

impl From<MechanismError> for ApiError {
    fn from(e: MechanismError) -> Self {
        let status = match e {
            MechanismError::OverBudget { .. } => StatusCode::CONFLICT,
            _ => StatusCode::BAD_REQUEST,
        };
        Self::new(status, e.code(), e.to_string())
    }
}

impl From<SecAggError> for ApiError {
    fn from(e: SecAggError) -> Self {
        // A protocol message the round cannot take now (wrong phase, a repeat) conflicts
        // with the round's state; anything else is a bad message.
        let status = match e {
            SecAggError::OutOfPhase { .. }
            | SecAggError::Duplicate { .. }
            | SecAggError::RoundClosed { .. } => StatusCode::CONFLICT,
            _ => StatusCode::BAD_REQUEST,
        };
        Self::new(status, e.code(), e.to_string())
    }
}

/// Handlers' result.
pub type ApiResult<T> = Result<T, ApiError>;
