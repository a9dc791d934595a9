//! The coordinator's one error type, and its one mapping to HTTP: every error a service,
//! the store or a core returns becomes an RFC 9457 problem+json body with a stable
//! [`ProblemCode`] in [`Error::problem`], an exhaustive `match`. Store and internal errors
//! become a bare 500 (or 503 when busy) with the cause only in the log; 503 and 429 carry
//! `Retry-After`.

use actix_web::http::StatusCode;
use actix_web::http::header::{HeaderValue, RETRY_AFTER};
use actix_web::{HttpResponse, ResponseError};
use civic_api::problem::PROBLEM_CONTENT_TYPE;
use civic_api::{Problem, ProblemCode};
use civic_mechanisms::{MechanismError, PricingError};
use civic_policies::PolicyError;
use civic_secagg::SecAggError;

use crate::rounds::protocol::ProtocolError;
use crate::store::{StoreError, TxError};

/// Something the caller asked for that does not exist. Each names what it looked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Missing {
    /// An endpoint.
    Endpoint {
        /// The method.
        method: String,
        /// The path.
        path: String,
    },
    /// A query.
    Query(i64),
    /// A dataset.
    Dataset(String),
    /// A version of a dataset.
    DatasetVersion(String, i64),
    /// A project.
    Project(String),
    /// A dataset's budget (a dataset with no policy uploaded yet).
    Budget(String),
    /// A round.
    Round(i64),
    /// An account.
    Account(String),
    /// No public release answers this query.
    Release(i64),
}

impl std::fmt::Display for Missing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Missing::Endpoint { method, path } => {
                write!(
                    f,
                    "no endpoint {method} {path}; GET /openapi.json lists them"
                )
            }
            Missing::Query(id) => write!(f, "no query {id}"),
            Missing::Dataset(id) => write!(f, "no dataset {id:?}"),
            Missing::DatasetVersion(id, v) => write!(f, "no version {v} of dataset {id:?}"),
            Missing::Project(id) => write!(f, "no project {id:?}"),
            Missing::Account(name) => write!(f, "no account {name:?}"),
            Missing::Budget(id) => write!(f, "no budget for dataset {id:?}"),
            Missing::Round(id) => write!(f, "round {id} is unknown"),
            Missing::Release(id) => write!(f, "the register has no release for query {id}"),
        }
    }
}

/// Every way a request can fail.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The thing asked for does not exist (or is not the caller's to see).
    #[error("{0}")]
    NotFound(Missing),
    /// No usable token.
    #[error("{detail}")]
    Unauthorized {
        /// `AuthMissingToken`, `AuthMalformedHeader` or `AuthBadToken`.
        code: ProblemCode,
        /// What to send instead.
        detail: &'static str,
    },
    /// Too many unknown tokens from this address: try again after the window.
    #[error(
        "too many requests with unknown tokens from this address; try again in {retry_after_secs} s"
    )]
    TooManyAuthFailures {
        /// Seconds until the address may try again.
        retry_after_secs: u64,
    },
    /// Authenticated, but not allowed.
    #[error("{0}")]
    Forbidden(String),
    /// A request that is malformed or invalid in a way no core names (a field, a name).
    #[error("{detail}")]
    Invalid {
        /// The stable code.
        code: ProblemCode,
        /// What was wrong and what was expected.
        detail: String,
    },
    /// A body over the limit.
    #[error("the body exceeds this coordinator's limit of {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: usize,
    },
    /// An endpoint asked for with a method it does not take.
    #[error("{path} does not take {method}; it takes {}", .allowed.join(", "))]
    MethodNotAllowed {
        /// The method asked for.
        method: String,
        /// The path.
        path: String,
        /// The methods it takes.
        allowed: Vec<String>,
    },
    /// A JSON body sent with another content type.
    #[error("send the body as Content-Type: application/json")]
    UnsupportedMediaType,
    /// A valid request the current state does not allow.
    #[error("{detail}")]
    Conflict {
        /// The stable code.
        code: ProblemCode,
        /// What is in the way.
        detail: String,
    },
    /// A round open in the store that this coordinator does not drive (yet).
    #[error(
        "round {0} is open but not driven by this coordinator yet (the round driver is taking over, or this is a replica that does not drive rounds); retry shortly"
    )]
    RoundNotDrivenHere(i64),
    /// A policy, query or budget refusal.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// A request that cannot be priced.
    #[error(transparent)]
    Pricing(#[from] PricingError),
    /// A mechanism refusal.
    #[error(transparent)]
    Mechanism(#[from] MechanismError),
    /// A protocol message the round refuses.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// The store.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The request ran past the coordinator's request timeout.
    #[error(
        "the request took longer than {0} s and was cut off; a change it was making may have been made: check before retrying"
    )]
    Timeout(u64),
    /// A bug or an environment failure; `context` says what was being done.
    #[error("internal error while {context}: {cause}")]
    Internal {
        /// What was being done.
        context: &'static str,
        /// The cause (logged, never sent).
        cause: String,
    },
}

/// Results of services and handlers.
pub type Result<T> = std::result::Result<T, Error>;

impl TxError for Error {
    fn store_error(&self) -> Option<&StoreError> {
        match self {
            Error::Store(e) => Some(e),
            _ => None,
        }
    }
}

impl Error {
    /// An internal error while doing `context`.
    pub fn internal(context: &'static str, cause: impl std::fmt::Display) -> Self {
        Error::Internal {
            context,
            cause: cause.to_string(),
        }
    }

    /// A 400 with `code`.
    pub fn invalid(code: ProblemCode, detail: impl Into<String>) -> Self {
        Error::Invalid {
            code,
            detail: detail.into(),
        }
    }

    /// A 409 with `code`.
    pub fn conflict(code: ProblemCode, detail: impl Into<String>) -> Self {
        Error::Conflict {
            code,
            detail: detail.into(),
        }
    }

    /// The status, code and detail the caller sees: the one mapping.
    pub fn problem(&self) -> (StatusCode, ProblemCode, String) {
        use ProblemCode as C;
        let shown = |status, code| (status, code, self.to_string());
        match self {
            Error::NotFound(_) => shown(StatusCode::NOT_FOUND, C::NotFound),
            Error::Unauthorized { code, .. } => shown(StatusCode::UNAUTHORIZED, *code),
            Error::Forbidden(_) => shown(StatusCode::FORBIDDEN, C::AuthForbidden),
            Error::TooManyAuthFailures { .. } => {
                shown(StatusCode::TOO_MANY_REQUESTS, C::AuthTooManyFailures)
            }
            Error::Invalid { code, .. } => shown(StatusCode::BAD_REQUEST, *code),
            Error::TooLarge { .. } => shown(StatusCode::PAYLOAD_TOO_LARGE, C::RequestTooLarge),
            Error::UnsupportedMediaType => {
                shown(StatusCode::UNSUPPORTED_MEDIA_TYPE, C::RequestContentType)
            }
            Error::MethodNotAllowed { .. } => shown(StatusCode::METHOD_NOT_ALLOWED, C::RequestMethod),
            Error::Conflict { code, .. } => shown(StatusCode::CONFLICT, *code),
            Error::RoundNotDrivenHere(_) => {
                shown(StatusCode::SERVICE_UNAVAILABLE, C::RoundNotDrivenHere)
            }
            Error::Policy(e) => {
                let (status, code) = policy_problem(e);
                shown(status, code)
            }
            Error::Pricing(e) => match e {
                PricingError::Query(p) => {
                    let (status, code) = policy_problem(p);
                    shown(status, code)
                }
                PricingError::Mechanism(m) => shown(StatusCode::BAD_REQUEST, mechanism_code(m)),
                PricingError::DatasetMismatch { .. } => {
                    shown(StatusCode::BAD_REQUEST, C::QueryDatasetMismatch)
                }
                PricingError::Confidence(_) => shown(StatusCode::BAD_REQUEST, C::QueryConfidence),
                PricingError::Privacy { .. } => shown(StatusCode::BAD_REQUEST, C::QueryPrivacy),
                PricingError::BelowFloor { .. } => {
                    shown(StatusCode::BAD_REQUEST, C::QueryBelowFloor)
                }
                PricingError::PureEpsilonCentralOnly { .. } => {
                    shown(StatusCode::BAD_REQUEST, C::QueryPureEpsilonCentralOnly)
                }
                _ => shown(StatusCode::BAD_REQUEST, C::QueryPrivacy),
            },
            // Outside pricing (which wraps its own), a mechanism failure is the coordinator's:
            // a release refused over budget, or an accounting step that failed.
            Error::Mechanism(MechanismError::OverBudget { .. }) => {
                shown(StatusCode::CONFLICT, ProblemCode::MechanismOverBudget)
            }
            Error::Mechanism(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                C::Internal,
                "internal error in a privacy mechanism; the coordinator's log has the cause".into(),
            ),
            Error::Protocol(e) => match e {
                ProtocolError::Malformed { .. } => shown(StatusCode::BAD_REQUEST, C::ProtocolMalformed),
                ProtocolError::WrongRound { .. } => {
                    shown(StatusCode::BAD_REQUEST, C::ProtocolWrongRound)
                }
                ProtocolError::Impersonation { .. } => {
                    shown(StatusCode::FORBIDDEN, C::AuthForbidden)
                }
                ProtocolError::NotForPartner { .. } => shown(StatusCode::CONFLICT, C::RoundDropped),
                ProtocolError::Refused(_) => shown(StatusCode::BAD_REQUEST, C::ProtocolRefused),
                ProtocolError::SecAgg(s) => {
                    // A message the round cannot take now (wrong phase, a repeat) conflicts
                    // with the round's state; anything else is a bad message.
                    let status = match s {
                        SecAggError::OutOfPhase { .. }
                        | SecAggError::Duplicate { .. }
                        | SecAggError::RoundClosed { .. } => StatusCode::CONFLICT,
                        _ => StatusCode::BAD_REQUEST,
                    };
                    shown(status, secagg_code(s))
                }
            },
            Error::Store(StoreError::Busy(_)) => (
                StatusCode::SERVICE_UNAVAILABLE,
                C::StoreBusy,
                "the coordinator's store is busy; nothing was changed, retry after the Retry-After delay".into(),
            ),
            Error::Store(StoreError::Conflict) => (
                StatusCode::CONFLICT,
                C::StoreConcurrentUpdate,
                "another request changed the same record at the same moment; nothing was changed, retry".into(),
            ),
            Error::Store(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                C::Internal,
                "internal error while using the store; the coordinator's log has the cause".into(),
            ),
            Error::Timeout(_) => shown(StatusCode::SERVICE_UNAVAILABLE, C::RequestTimeout),
            Error::Internal { context, .. } => (
                StatusCode::INTERNAL_SERVER_ERROR,
                C::Internal,
                format!("internal error while {context}; the coordinator's log has the cause"),
            ),
        }
    }

    /// The problem+json body.
    pub fn body(&self) -> Problem {
        let (status, code, detail) = self.problem();
        Problem {
            kind: code.type_uri(),
            title: status.canonical_reason().unwrap_or("Error").to_string(),
            status: status.as_u16(),
            detail,
            code: code.as_str().to_string(),
        }
    }
}

fn policy_problem(e: &PolicyError) -> (StatusCode, ProblemCode) {
    use ProblemCode as C;
    match e {
        PolicyError::OverBudget { .. } => (StatusCode::CONFLICT, C::PolicyOverBudget),
        PolicyError::Ledger { .. } => (StatusCode::CONFLICT, C::PolicyLedger),
        PolicyError::Parse { .. } => (StatusCode::BAD_REQUEST, C::PolicyParse),
        PolicyError::Invalid { .. } => (StatusCode::BAD_REQUEST, C::PolicyInvalid),
        PolicyError::Privacy { .. } => (StatusCode::BAD_REQUEST, C::PolicyPrivacy),
        PolicyError::Query { .. } => (StatusCode::BAD_REQUEST, C::PolicyQuery),
        PolicyError::Audit { .. } => (StatusCode::BAD_REQUEST, C::PolicyAudit),
        _ => (StatusCode::BAD_REQUEST, C::PolicyInvalid),
    }
}

fn mechanism_code(e: &MechanismError) -> ProblemCode {
    match e {
        MechanismError::InvalidParameter { .. } => ProblemCode::MechanismInvalidParameter,
        MechanismError::OverBudget { .. } => ProblemCode::MechanismOverBudget,
        MechanismError::OpenDp { .. } => ProblemCode::MechanismOpenDp,
        _ => ProblemCode::MechanismInvalidParameter,
    }
}

fn secagg_code(e: &SecAggError) -> ProblemCode {
    use ProblemCode as C;
    match e {
        SecAggError::InvalidConfig { .. } => C::SecaggInvalidConfig,
        SecAggError::Ring { .. } => C::SecaggRing,
        SecAggError::WrongRound { .. } => C::SecaggWrongRound,
        SecAggError::UnknownSender { .. } => C::SecaggUnknownSender,
        SecAggError::Duplicate { .. } => C::SecaggDuplicate,
        SecAggError::OutOfPhase { .. } => C::SecaggOutOfPhase,
        SecAggError::WrongVectorShape { .. } => C::SecaggWrongVectorShape,
        SecAggError::BadSignature { .. } => C::SecaggBadSignature,
        SecAggError::BadCiphertext { .. } => C::SecaggBadCiphertext,
        SecAggError::Malformed { .. } => C::SecaggMalformed,
        SecAggError::InconsistentCoordinator { .. } => C::SecaggInconsistentCoordinator,
        SecAggError::ConflictingReveal { .. } => C::SecaggConflictingReveal,
        SecAggError::TooFewSurvivors { .. } => C::SecaggTooFewSurvivors,
        SecAggError::Shamir { .. } => C::SecaggShamir,
        SecAggError::RoundClosed { .. } => C::SecaggRoundClosed,
        _ => C::SecaggMalformed,
    }
}

/// Seconds a client should wait before retrying a 503 or 429.
const RETRY_AFTER_SECS: &str = "1";

impl ResponseError for Error {
    fn status_code(&self) -> StatusCode {
        self.problem().0
    }

    fn error_response(&self) -> HttpResponse {
        let (status, code, _) = self.problem();
        match self {
            Error::Store(StoreError::Busy(cause)) => {
                tracing::warn!(%cause, "store busy");
            }
            Error::Store(e) => tracing::error!(error = %e, "store error"),
            Error::Internal { context, cause } => {
                tracing::error!(context, %cause, "internal error")
            }
            Error::Mechanism(e) => tracing::error!(error = %e, "mechanism error"),
            _ => tracing::debug!(%code, error = %self, "request refused"),
        }
        let mut response = HttpResponse::build(status);
        response.content_type(PROBLEM_CONTENT_TYPE);
        if let Error::TooManyAuthFailures { retry_after_secs } = self {
            response.insert_header((RETRY_AFTER, HeaderValue::from(*retry_after_secs)));
        } else if let Error::MethodNotAllowed { allowed, .. } = self
            && let Ok(allow) = HeaderValue::from_str(&allowed.join(", "))
        {
            response.insert_header((actix_web::http::header::ALLOW, allow));
        } else if matches!(
            status,
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS
        ) {
            response.insert_header((RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_SECS)));
        }
        response.json(self.body())
    }
}

impl From<crate::lifecycle::LifecycleError> for Error {
    fn from(e: crate::lifecycle::LifecycleError) -> Self {
        use crate::lifecycle::LifecycleError as L;
        let detail = e.to_string();
        match e {
            L::IdenticalInFlight { .. } | L::IdenticalInFlightElsewhere => {
                Error::conflict(ProblemCode::QueryIdenticalInFlight, detail)
            }
            L::NotAwaitingApproval { .. } => {
                Error::conflict(ProblemCode::QueryNotAwaitingApproval, detail)
            }
            L::AlreadyDecided { .. } => Error::conflict(ProblemCode::QueryAlreadyDecided, detail),
            L::PartnerUnknown { .. } => Error::conflict(ProblemCode::RoundPartnerUnknown, detail),
            L::LinkedPostTooLarge { .. } => Error::conflict(ProblemCode::RoundTooLarge, detail),
            L::PartnerUnregistered { .. } => {
                Error::conflict(ProblemCode::RoundPartnerUnregistered, detail)
            }
            L::PartnerNotInManifest { .. } | L::PolicyNotInManifest { .. } => {
                Error::conflict(ProblemCode::RoundPartnerNotInManifest, detail)
            }
            L::Budget(p) => Error::Policy(p),
            // The round this coordinator would configure for the dataset is not valid (its
            // dropout and collusion settings against the dataset's partners, a ring too
            // narrow): a conflict between the coordinator and the dataset, not bad input.
            L::Round(_) => Error::conflict(ProblemCode::SecaggInvalidConfig, detail),
            L::NotRunning { .. } | L::NoReservation { .. } => {
                Error::internal("moving a query through its lifecycle", detail)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_core_code_is_a_problem_code_and_busy_answers_retry_after() {
        // The cores' own code strings (used in logs) agree with the codes sent.
        let policy = PolicyError::Query {
            dataset: "d".into(),
            field: "f".into(),
            reason: "r".into(),
        };
        assert_eq!(policy_problem(&policy).1.as_str(), policy.code());
        let m = MechanismError::InvalidParameter {
            stage: "s",
            reason: "r".into(),
        };
        assert_eq!(mechanism_code(&m).as_str(), m.code());
        let busy = Error::Store(StoreError::Busy("test".into()));
        let response = busy.error_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers().get(RETRY_AFTER).unwrap(), "1");
        assert_eq!(busy.body().code, "store.busy");
        let internal = Error::internal("testing", "a secret cause");
        assert!(!internal.body().detail.contains("secret"));
    }
}
