//! What partner agents see of rounds.

use civic_policies::Query;
use civic_secagg::RoundConfig;
use civic_secagg::messages::{ForwardedShares, KeyRoster, SignedSurvivors, SurvivorList};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::query::PrivacyRequest;

/// Media type of the binary protocol bodies (bincode, fixed-width integers).
pub const BINARY_CONTENT_TYPE: &str = "application/octet-stream";

/// `PUT /v1/partner/identity`: the partner's long-term Ed25519 public key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterIdentity {
    /// 32 bytes, hex.
    #[schema(pattern = r"^[0-9a-fA-F]{64}$")]
    pub public_key: String,
}

/// One partner in the roster agents verify signatures against.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RosterEntry {
    /// Id in rounds.
    pub partner_id: u32,
    /// Name in policies.
    pub name: String,
    /// Ed25519 public key, hex, once registered.
    pub identity_key: Option<String>,
}

/// A round a partner is invited to, with everything it needs to check before taking part.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RoundAnnouncement {
    /// The round.
    pub round_id: i64,
    /// The query it answers (a query may own several rounds).
    pub query_id: i64,
    /// The protocol the round runs (`secure-sum/v4`: secure aggregation of the plan's
    /// vector, masks from AES-256-CTR, each partner adding its share of the noise where the
    /// policy's noise is distributed; `secure-sum/v3` was the same without noise shares;
    /// absent from coordinators older than the field, which ran `secure-sum/v1`, masks from
    /// ChaCha12).
    #[serde(default = "secure_sum")]
    pub protocol: String,
    /// The dataset and the policy version the plan was compiled under (fetch it from
    /// `GET /v1/datasets/{id}/versions/{version}` and compile the plan locally).
    pub dataset: String,
    /// The version.
    pub dataset_version: i64,
    /// The query.
    #[schema(value_type = Object)]
    pub query: Query,
    /// Its privacy request.
    #[schema(value_type = Object)]
    pub privacy: PrivacyRequest,
    /// The confidence of its intervals (0.95 if absent): a target half-width's cost depends
    /// on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confidence: Option<f64>,
    /// The public bound on rows per partner the ring was sized for.
    pub max_rows_per_partner: u64,
    /// The δ at which the coordinator states ρ costs as (ε, δ) (10⁻⁶ if absent): part of the
    /// pricing context, so an agent prices the round exactly as the coordinator did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reporting_delta: Option<f64>,
    /// Board members' signatures approving the query (over its fingerprint), for a query
    /// whose cost needs approval: agents count the valid ones themselves.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<Object>)]
    pub approvals: Vec<civic_policies::manifest::BoardSignature>,
    /// The secure-aggregation configuration: check it against local requirements.
    #[schema(value_type = Object)]
    pub config: RoundConfig,
    /// For a round of a training job: which Newton step it computes and at which
    /// coefficients (absent for every other statistic).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub training: Option<TrainingStep>,
    /// The step now open (for secure aggregation: `advertise_keys`, `share_keys`,
    /// `masked_input_collection`, `consistency_check`, `unmasking`).
    pub phase: String,
    /// When it closes (RFC 3339).
    pub phase_deadline: String,
}

/// One Newton step of a training job, as its round announces it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TrainingStep {
    /// The step, from 0 (at coefficients all zero) to the job's iterations − 1.
    pub iteration: u32,
    /// The coefficients each partner computes its contributions at, in the model's scaled
    /// coordinates (features mapped to [−1, 1] by their public bounds), intercept first,
    /// class by class: post-processing of the earlier steps' noisy sums.
    pub coefficients: Vec<f64>,
}

fn secure_sum() -> String {
    "secure-sum/v1".into()
}

/// `POST /v1/partner/rounds/{id}/decline`: a partner's refusal under its local policy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeclineRound {
    /// Why, for the audit log (1 to 1000 characters, not blank).
    #[schema(pattern = r"\S", max_length = 1000)]
    pub reason: String,
}

/// `GET /v1/partner/rounds`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PartnerRounds {
    /// Open rounds this partner is invited to.
    pub rounds: Vec<RoundAnnouncement>,
}

/// `GET /v1/partner/rounds/{id}/inbox` (binary): what the coordinator sent when the last
/// phase closed, addressed to the caller.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Inbox {
    /// Nothing new: the round is in AdvertiseKeys, or this partner has answered the open
    /// phase and the next has not opened.
    Nothing,
    /// AdvertiseKeys closed.
    KeyRoster(KeyRoster),
    /// ShareKeys closed.
    ForwardedShares(ForwardedShares),
    /// MaskedInputCollection closed.
    SurvivorList(SurvivorList),
    /// ConsistencyCheck closed.
    SignedSurvivors(SignedSurvivors),
}

/// The steps of a linked round before its secure sum (`linked-sum/v1`), in order. In each,
/// every partner still in the round posts one [`LinkedMessage::Join`], with an envelope for
/// each partner its step has something for (none, if it has nothing to send: the post still
/// says it is there).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JoinStep {
    /// Each partner's session key for each pair it is in, signed by its identity key.
    RelayKeys,
    /// Holders' encrypted lists and matchers' blinded lists.
    Offers,
    /// Holders' re-blinded returns of the matchers' lists.
    Returns,
    /// Matchers' masked sums.
    Sums,
}

impl JoinStep {
    /// Every step, in order.
    pub const ALL: [JoinStep; 4] = [
        JoinStep::RelayKeys,
        JoinStep::Offers,
        JoinStep::Returns,
        JoinStep::Sums,
    ];

    /// The step's name, as announcements and the store show it.
    pub fn as_str(self) -> &'static str {
        match self {
            JoinStep::RelayKeys => "relay_keys",
            JoinStep::Offers => "offers",
            JoinStep::Returns => "returns",
            JoinStep::Sums => "sums",
        }
    }
}

/// A message sealed end to end for one other partner: the coordinator relays it as it is.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// The partner it is for.
    pub to: civic_secagg::PartnerId,
    /// Sealed by the pair's session channel; opaque to the coordinator.
    pub sealed: Vec<u8>,
}

impl std::fmt::Debug for Envelope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Envelope {{ to: {}, {} bytes }}",
            self.to,
            self.sealed.len()
        )
    }
}

/// `POST /v1/partner/rounds/{id}/messages` in a linked round (binary).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum LinkedMessage {
    /// A join step's envelopes.
    Join {
        /// The round.
        round: u64,
        /// The posting partner.
        sender: civic_secagg::PartnerId,
        /// The step.
        step: JoinStep,
        /// At most one per other partner.
        envelopes: Vec<Envelope>,
    },
    /// A message of the secure sum that follows the join.
    SecAgg(civic_secagg::ClientMessage),
}

/// `GET /v1/partner/rounds/{id}/inbox` of a linked round during its join steps (binary).
/// Its secure-sum steps answer with [`Inbox`]; `Nothing` encodes the same in both.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum JoinInbox {
    /// Nothing new: the first step is open, or this partner answered the open one.
    Nothing,
    /// What the other partners sealed for this one when `step` closed, by sender.
    Delivered {
        /// The step that closed.
        step: JoinStep,
        /// Sender and envelope body.
        from: Vec<(civic_secagg::PartnerId, Vec<u8>)>,
        /// The partners that answered every step so far: the ones still in the round. A
        /// session with any other partner is over.
        present: Vec<civic_secagg::PartnerId>,
    },
}
