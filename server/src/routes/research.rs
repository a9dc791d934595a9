//! Researchers' endpoints and the public register.

use actix_web::{HttpResponse, get, post, web};
use civic_api::Role::{Governance, Researcher};
use civic_api::query::{Preview, QueryRequest, QueryView, RegisterEntry};
use serde::Deserialize;

use crate::AppState;
use crate::auth::Caller;
use crate::error::Result;
use crate::service::research as svc;

/// Cost, accuracy and remaining budget of a query; nothing is spent. Roles: researcher.
#[utoipa::path(post, path = "/v1/queries/preview", tag = "queries", request_body = QueryRequest,
    security(("bearer" = [])), responses((status = 200, body = Preview)))]
#[post("/v1/queries/preview")]
pub async fn preview(
    s: web::Data<AppState>,
    c: Caller,
    body: web::Json<QueryRequest>,
) -> Result<HttpResponse> {
    Ok(HttpResponse::Ok()
        .json(svc::preview(&s, c.require(&[Researcher])?, body.into_inner()).await?))
}

/// Submits a query: its cost is reserved, then it runs or waits for approval. Roles: researcher.
#[utoipa::path(post, path = "/v1/queries", tag = "queries", request_body = QueryRequest,
    security(("bearer" = [])), responses((status = 201, body = QueryView)))]
#[post("/v1/queries")]
pub async fn submit(
    s: web::Data<AppState>,
    c: Caller,
    body: web::Json<QueryRequest>,
) -> Result<HttpResponse> {
    Ok(HttpResponse::Created()
        .json(svc::submit(&s, c.require(&[Researcher])?, body.into_inner()).await?))
}

/// A query's status and, once released, its result and privacy receipt. Roles: researcher
/// (own project), governance.
#[utoipa::path(get, path = "/v1/queries/{id}", tag = "queries", params(("id" = i64, Path, description = "The query's id")), security(("bearer" = [])),
    responses((status = 200, body = QueryView)))]
#[get("/v1/queries/{id:-?\\d+}")]
pub async fn get_query(
    s: web::Data<AppState>,
    c: Caller,
    id: web::Path<i64>,
) -> Result<HttpResponse> {
    Ok(HttpResponse::Ok().json(svc::read(&s, c.require(&[Researcher, Governance])?, *id).await?))
}

/// Paging of the register.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct RegisterQuery {
    /// At most this many, newest first (default 100).
    #[serde(default = "default_limit")]
    #[param(minimum = 1, maximum = 1000)]
    pub limit: i64,
}

fn default_limit() -> i64 {
    100
}

/// The public register of releases: no token.
#[utoipa::path(get, path = "/v1/register", tag = "public", params(RegisterQuery),
    responses((status = 200, body = Vec<RegisterEntry>)))]
#[get("/v1/register")]
pub async fn register(
    s: web::Data<AppState>,
    q: web::Query<RegisterQuery>,
) -> Result<HttpResponse> {
    Ok(HttpResponse::Ok().json(svc::register(&s, q.limit).await?))
}
