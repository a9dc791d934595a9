//! RFC 9457 problem details: every error the coordinator returns, and the stable codes they
//! carry. The coordinator builds every code through [`ProblemCode`]; clients (the partner
//! agent, scripts) match on it instead of on string literals.

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
    /// The stable code (`auth.missing_token`, `policy.over_budget`, …): see [`ProblemCode`].
    pub code: String,
}

impl Problem {
    /// The code as a [`ProblemCode`]; `None` for a code this build does not know (a newer
    /// coordinator's).
    pub fn problem_code(&self) -> Option<ProblemCode> {
        ProblemCode::parse(&self.code)
    }
}

macro_rules! problem_codes {
    ($( $(#[$doc:meta])* $variant:ident = $code:literal, )*) => {
        /// Every stable problem code, as the `code` of a [`Problem`].
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum ProblemCode {
            $( $(#[$doc])* $variant, )*
        }

        impl ProblemCode {
            /// Every code, in declaration order.
            pub const ALL: &'static [ProblemCode] = &[ $( ProblemCode::$variant, )* ];

            /// The code as it appears on the wire.
            pub fn as_str(self) -> &'static str {
                match self {
                    $( ProblemCode::$variant => $code, )*
                }
            }
        }
    };
}

problem_codes! {
    /// No `Authorization` header.
    AuthMissingToken = "auth.missing_token",
    /// The header is not `Bearer <token>`.
    AuthMalformedHeader = "auth.malformed_header",
    /// The token is unknown to this coordinator.
    AuthBadToken = "auth.bad_token",
    /// The token's role may not use this endpoint, or the partner is not in this round.
    AuthForbidden = "auth.forbidden",
    /// Too many unknown tokens from this address: retry after `Retry-After`.
    AuthTooManyFailures = "auth.too_many_failures",
    /// No such endpoint or resource.
    NotFound = "not_found",
    /// The JSON body is malformed or has unknown or missing fields.
    RequestJson = "request.json",
    /// The body is larger than this coordinator accepts.
    RequestTooLarge = "request.too_large",
    /// The body was not sent as `application/json`.
    RequestContentType = "request.content_type",
    /// A path parameter is not valid.
    RequestPath = "request.path",
    /// The endpoint exists but not with this method: the `Allow` header lists those it takes.
    RequestMethod = "request.method",
    /// The query string is not valid.
    RequestQueryString = "request.query_string",
    /// The body could not be read.
    RequestBody = "request.body",
    /// An account or project name is not valid.
    RequestInvalidName = "request.invalid_name",
    /// The request took longer than the coordinator's request timeout; nothing was changed
    /// unless the request said otherwise. Retry after `Retry-After`.
    RequestTimeout = "request.timeout",
    /// The store is busy (every connection in use, or a write kept meeting a conflict);
    /// nothing was changed. Retry after `Retry-After`.
    StoreBusy = "store.busy",
    /// Another request changed the same record at the same moment; nothing was changed.
    StoreConcurrentUpdate = "store.concurrent_update",
    /// An internal error: the coordinator's log has the cause.
    Internal = "internal",
    /// An account with this name exists.
    AccountExists = "account.exists",
    /// Partner accounts are created with `POST /v1/admin/partners`.
    AccountPartnerViaPartners = "account.partner_via_partners",
    /// A project with this id exists.
    ProjectExists = "project.exists",
    /// A project needs a title.
    ProjectTitle = "project.title",
    /// A project member is not a researcher.
    ProjectMemberRole = "project.member_role",
    /// A project member has no account.
    ProjectMemberUnknown = "project.member_unknown",
    /// A policy uploaded to another dataset's URL.
    DatasetIdMismatch = "dataset.id_mismatch",
    /// A board decision without a reason.
    DecisionReason = "decision.reason",
    /// An approval without a valid signature of a board member the manifest names.
    DecisionSignature = "decision.signature",
    /// The query's author deciding on their own query (by account or board member name).
    DecisionOwnQuery = "decision.own_query",
    /// A manifest that breaks the manifest's rules or lacks its board's signatures.
    ManifestInvalid = "manifest.invalid",
    /// A manifest that does not follow the newest one stored (version, previous digest).
    ManifestNotSuccessor = "manifest.not_successor",
    /// The query names another dataset than the one it was priced against.
    QueryDatasetMismatch = "query.dataset_mismatch",
    /// The confidence level is not strictly between 0 and 1.
    QueryConfidence = "query.confidence",
    /// ε, ρ or the target half-width is not a positive, finite number.
    QueryPrivacy = "query.privacy",
    /// The request costs less than the dataset's per-query floor.
    QueryBelowFloor = "query.below_floor",
    /// Pure ε (discrete Laplace) asked of a dataset whose noise is distributed: ask in ρ.
    QueryPureEpsilonCentralOnly = "query.pure_epsilon_central_only",
    /// The query is not awaiting approval.
    QueryNotAwaitingApproval = "query.not_awaiting_approval",
    /// This board member already decided on the query.
    QueryAlreadyDecided = "query.already_decided",
    /// An identical query is running or awaiting approval.
    QueryIdenticalInFlight = "query.identical_in_flight",
    /// The policy text does not parse.
    PolicyParse = "policy.parse",
    /// A policy field breaks the rules.
    PolicyInvalid = "policy.invalid",
    /// A privacy amount is not usable.
    PolicyPrivacy = "policy.privacy",
    /// The query does not fit the dataset's schema or rules.
    PolicyQuery = "policy.query",
    /// A cap would be exceeded.
    PolicyOverBudget = "policy.over_budget",
    /// A budget operation in the wrong state.
    PolicyLedger = "policy.ledger",
    /// The audit log does not verify.
    PolicyAudit = "policy.audit",
    /// A mechanism parameter is not usable.
    MechanismInvalidParameter = "mechanism.invalid_parameter",
    /// A mechanism would spend more than its budget.
    MechanismOverBudget = "mechanism.over_budget",
    /// OpenDP refused.
    MechanismOpenDp = "mechanism.opendp",
    /// A dataset lists a partner with no account.
    RoundPartnerUnknown = "round.partner_unknown",
    /// A dataset's partner has not registered its identity key.
    RoundPartnerUnregistered = "round.partner_unregistered",
    /// A dataset's partner is not in the board's manifest, or registered another key.
    RoundPartnerNotInManifest = "round.partner_not_in_manifest",
    /// A linked query's joins would post messages larger than this coordinator takes.
    RoundTooLarge = "round.too_large",
    /// The round is open but not driven by this coordinator (yet): retry.
    RoundNotDrivenHere = "round.not_driven_here",
    /// The round finished and released; it takes no more messages.
    RoundFinished = "round.finished",
    /// The round was aborted; it takes no more messages.
    RoundAborted = "round.aborted",
    /// The partner missed a step of the round and is no longer part of it.
    RoundDropped = "round.dropped",
    /// The partner already took part, so it can no longer decline.
    RoundAlreadyJoined = "round.already_joined",
    /// The unmasked sum is outside what the survivors' inputs allow (a wrong share or
    /// input): nothing was released.
    RoundSumOutOfRange = "round.sum_out_of_range",
    /// A decline's reason is empty or too long.
    RoundDeclineReason = "round.decline_reason",
    /// The identity key is not 32 bytes of hex.
    PartnerIdentityKey = "partner.identity_key",
    /// A different identity key is registered.
    PartnerIdentityKeyPinned = "partner.identity_key_pinned",
    /// The board's manifest lists another identity key for this partner.
    PartnerIdentityKeyNotInManifest = "partner.identity_key_not_in_manifest",
    /// A protocol message that does not decode.
    ProtocolMalformed = "protocol.malformed",
    /// A protocol message for another round.
    ProtocolWrongRound = "protocol.wrong_round",
    /// A different message for a step this partner already answered.
    ProtocolDuplicate = "protocol.duplicate",
    /// A message this round's protocol refuses.
    ProtocolRefused = "protocol.refused",
    /// Secure aggregation: an unsafe or inconsistent round configuration.
    SecaggInvalidConfig = "secagg.invalid_config",
    /// Secure aggregation: a ring width or value problem.
    SecaggRing = "secagg.ring",
    /// Secure aggregation: a message for another round.
    SecaggWrongRound = "secagg.wrong_round",
    /// Secure aggregation: a sender outside the round.
    SecaggUnknownSender = "secagg.unknown_sender",
    /// Secure aggregation: a repeated message.
    SecaggDuplicate = "secagg.duplicate",
    /// Secure aggregation: a message for another phase.
    SecaggOutOfPhase = "secagg.out_of_phase",
    /// Secure aggregation: a vector of the wrong length or width.
    SecaggWrongVectorShape = "secagg.wrong_vector_shape",
    /// Secure aggregation: a signature that does not verify.
    SecaggBadSignature = "secagg.bad_signature",
    /// Secure aggregation: a share ciphertext that does not open.
    SecaggBadCiphertext = "secagg.bad_ciphertext",
    /// Secure aggregation: a message that is structurally wrong.
    SecaggMalformed = "secagg.malformed",
    /// Secure aggregation: the coordinator contradicted itself.
    SecaggInconsistentCoordinator = "secagg.inconsistent_coordinator",
    /// Secure aggregation: a partner revealed both shares of a peer.
    SecaggConflictingReveal = "secagg.conflicting_reveal",
    /// Secure aggregation: fewer survivors than the threshold.
    SecaggTooFewSurvivors = "secagg.too_few_survivors",
    /// Secure aggregation: Shamir reconstruction failed.
    SecaggShamir = "secagg.shamir",
    /// Secure aggregation: the round is closed.
    SecaggRoundClosed = "secagg.round_closed",
}

impl ProblemCode {
    /// Parses [`ProblemCode::as_str`].
    pub fn parse(code: &str) -> Option<ProblemCode> {
        ProblemCode::ALL
            .iter()
            .copied()
            .find(|c| c.as_str() == code)
    }

    /// The problem type URI of this code.
    pub fn type_uri(self) -> String {
        format!("urn:civic:problem:{}", self.as_str())
    }
}

impl std::fmt::Display for ProblemCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct_and_round_trip() {
        let mut seen = std::collections::BTreeSet::new();
        for &code in ProblemCode::ALL {
            assert!(seen.insert(code.as_str()), "{code} twice");
            assert_eq!(ProblemCode::parse(code.as_str()), Some(code));
        }
        assert_eq!(ProblemCode::parse("no.such_code"), None);
    }
}
