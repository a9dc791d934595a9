//! Partner agents' endpoints. Protocol messages are bincode (fixed-width integers).

use actix_web::{HttpResponse, get, post, put, web};
use civic_api::ProblemCode;
use civic_api::Role::{Admin, Governance, Partner};
use civic_api::round::{
    BINARY_CONTENT_TYPE, DeclineRound, PartnerRounds, RegisterIdentity, RosterEntry,
};
use civic_secagg::PartnerId;

use crate::AppState;
use crate::auth::Caller;
use crate::error::{Error, Result};
use crate::service::partner as svc;

/// Registers the partner's long-term Ed25519 identity key (once; it is pinned). Roles: partner.
#[utoipa::path(put, path = "/v1/partner/identity", tag = "partners", request_body = RegisterIdentity,
    security(("bearer" = [])), responses((status = 200, body = RosterEntry)))]
#[put("/v1/partner/identity")]
pub async fn register_identity(
    s: web::Data<AppState>,
    c: Caller,
    body: web::Json<RegisterIdentity>,
) -> Result<HttpResponse> {
    let id = c.partner_id()?;
    let key: [u8; 32] = hex::decode(body.public_key.trim())
        .ok()
        .and_then(|k| k.try_into().ok())
        .ok_or_else(|| {
            Error::invalid(
                ProblemCode::PartnerIdentityKey,
                "public_key must be 32 bytes as 64 hex digits (civic-agent keygen prints it)",
            )
        })?;
    svc::register_identity(&s, &c.0, key).await?;
    Ok(HttpResponse::Ok().json(RosterEntry {
        partner_id: id,
        name: c.0.name.clone(),
        identity_key: Some(hex::encode(key)),
    }))
}

/// Open rounds this partner is part of. Roles: partner.
#[utoipa::path(get, path = "/v1/partner/rounds", tag = "partners", security(("bearer" = [])),
    responses((status = 200, body = PartnerRounds),
        (status = 503, body = civic_api::Problem, content_type = "application/problem+json", description = "round.not_driven_here: a round is open but not driven by this coordinator yet; retry after Retry-After")))]
#[get("/v1/partner/rounds")]
pub async fn list_rounds(s: web::Data<AppState>, c: Caller) -> Result<HttpResponse> {
    let me = PartnerId(c.partner_id()?);
    s.partner_polls.seen(c.0.id, s.clock.now_ms());
    Ok(HttpResponse::Ok().json(PartnerRounds {
        rounds: svc::announcements(&s, me).await?,
    }))
}

/// What the last closed phase sent this partner (binary `Inbox`). Roles: partner.
#[utoipa::path(get, path = "/v1/partner/rounds/{id}/inbox", tag = "partners", params(("id" = i64, Path, description = "The round's id")), security(("bearer" = [])),
    responses((status = 200, description = "bincode Inbox", content_type = "application/octet-stream"),
        (status = 409, body = civic_api::Problem, content_type = "application/problem+json", description = "round.dropped, round.finished or round.aborted"),
        (status = 503, body = civic_api::Problem, content_type = "application/problem+json", description = "round.not_driven_here: retry after Retry-After")))]
#[get("/v1/partner/rounds/{id:-?\\d+}/inbox")]
pub async fn inbox(s: web::Data<AppState>, c: Caller, id: web::Path<i64>) -> Result<HttpResponse> {
    let inbox = svc::inbox(&s, *id, PartnerId(c.partner_id()?)).await?;
    Ok(HttpResponse::Ok()
        .content_type(BINARY_CONTENT_TYPE)
        .body(inbox))
}

/// Posts one protocol message (binary `ClientMessage`). Roles: partner (as itself).
#[utoipa::path(post, path = "/v1/partner/rounds/{id}/messages", tag = "partners", params(("id" = i64, Path, description = "The round's id")), security(("bearer" = [])),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "bincode ClientMessage"),
    responses((status = 204, description = "Accepted (also a byte-identical retry of a message already taken)"),
        (status = 400, body = civic_api::Problem, content_type = "application/problem+json", description = "protocol.malformed, protocol.wrong_round, or the protocol's refusal"),
        (status = 409, body = civic_api::Problem, content_type = "application/problem+json", description = "out of phase, a different message for the same step (protocol.duplicate), round.finished or round.aborted"),
        (status = 503, body = civic_api::Problem, content_type = "application/problem+json", description = "round.not_driven_here: retry after Retry-After")))]
#[post("/v1/partner/rounds/{id:-?\\d+}/messages")]
pub async fn post_message(
    s: web::Data<AppState>,
    c: Caller,
    id: web::Path<i64>,
    body: web::Payload,
) -> Result<HttpResponse> {
    let me = PartnerId(c.partner_id()?);
    let bytes = super::read_limited(body, s.config.binary_limit).await?;
    // On a task of its own: a request timeout must not cut it between storing the message
    // and taking it into the round.
    let (state, id) = (s.clone(), *id);
    actix_web::rt::spawn(async move { svc::receive(&state, id, me, &bytes).await })
        .await
        .map_err(|e| Error::internal("taking a protocol message", e))??;
    Ok(HttpResponse::NoContent().finish())
}

/// Declines a round under the partner's local policy, before taking part; the reason is
/// audited. Roles: partner.
#[utoipa::path(post, path = "/v1/partner/rounds/{id}/decline", tag = "partners", params(("id" = i64, Path, description = "The round's id")), security(("bearer" = [])),
    request_body = DeclineRound, responses((status = 204, description = "Declined"),
        (status = 409, body = civic_api::Problem, content_type = "application/problem+json", description = "round.already_joined, round.finished or round.aborted"),
        (status = 503, body = civic_api::Problem, content_type = "application/problem+json", description = "round.not_driven_here: retry after Retry-After")))]
#[post("/v1/partner/rounds/{id:-?\\d+}/decline")]
pub async fn decline(
    s: web::Data<AppState>,
    c: Caller,
    id: web::Path<i64>,
    body: web::Json<DeclineRound>,
) -> Result<HttpResponse> {
    let me = PartnerId(c.partner_id()?);
    svc::decline(&s, *id, me, &body.reason).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Every partner with its identity key, for verifying signatures. Roles: partner, governance, admin.
#[utoipa::path(get, path = "/v1/partners/roster", tag = "partners", security(("bearer" = [])),
    responses((status = 200, body = Vec<RosterEntry>)))]
#[get("/v1/partners/roster")]
pub async fn roster(s: web::Data<AppState>, c: Caller) -> Result<HttpResponse> {
    c.require(&[Partner, Governance, Admin])?;
    let entries: Vec<RosterEntry> = svc::roster(&s).await?;
    Ok(HttpResponse::Ok().json(entries))
}
