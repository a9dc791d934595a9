//! Admin and governance endpoints.

use actix_web::{HttpResponse, delete, get, post, put, web};
use civic_api::Role::{Admin, Governance, Partner, Researcher};
use civic_api::governance::{
    AuditPage, AuditVerification, BudgetView, CreateAccount, CreatePartner, CreateProject,
    CreatedAccount, DatasetView, Decision, ManifestChain, ProjectView, SetAllocation, UploadPolicy,
};
use civic_api::query::QueryView;
use civic_policies::manifest::SignedManifest;
use serde::Deserialize;

use crate::AppState;
use crate::auth::Caller;
use crate::error::Result;
use crate::service::governance as svc;

/// Creates an admin, governance or researcher account. Roles: admin.
#[utoipa::path(post, path = "/v1/admin/accounts", tag = "admin", request_body = CreateAccount,
    security(("bearer" = [])), responses((status = 201, body = CreatedAccount)))]
#[post("/v1/admin/accounts")]
pub async fn create_account(
    s: web::Data<AppState>,
    c: Caller,
    body: web::Json<CreateAccount>,
) -> Result<HttpResponse> {
    let created = svc::create_account(&s, c.require(&[Admin])?, body.into_inner()).await?;
    Ok(HttpResponse::Created().json(created))
}

/// Creates a partner organisation's account. Roles: admin.
#[utoipa::path(post, path = "/v1/admin/partners", tag = "admin", request_body = CreatePartner,
    security(("bearer" = [])), responses((status = 201, body = CreatedAccount)))]
#[post("/v1/admin/partners")]
pub async fn create_partner(
    s: web::Data<AppState>,
    c: Caller,
    body: web::Json<CreatePartner>,
) -> Result<HttpResponse> {
    let created = svc::create_partner(&s, c.require(&[Admin])?, body.into_inner()).await?;
    Ok(HttpResponse::Created().json(created))
}

/// Issues the caller a new token (shown once) and retires the one it used. Roles: all.
#[utoipa::path(post, path = "/v1/token/rotate", tag = "admin",
    security(("bearer" = [])), responses((status = 201, body = CreatedAccount)))]
#[post("/v1/token/rotate")]
pub async fn rotate_token(s: web::Data<AppState>, c: Caller) -> Result<HttpResponse> {
    let me = c.require(&[Admin, Governance, Researcher, Partner])?;
    let created = svc::replace_token(&s, &me.name, &me.name, false).await?;
    Ok(HttpResponse::Created().json(created))
}

/// Issues account `name` a new token (shown once), retiring its old one: for a lost or
/// leaked token. Roles: admin.
#[utoipa::path(post, path = "/v1/admin/accounts/{name}/token", tag = "admin", params(("name" = String, Path, description = "The account's name")),
    security(("bearer" = [])), responses((status = 201, body = CreatedAccount)))]
#[post("/v1/admin/accounts/{name}/token")]
pub async fn reissue_token(
    s: web::Data<AppState>,
    c: Caller,
    name: web::Path<String>,
) -> Result<HttpResponse> {
    let by = c.require(&[Admin])?;
    let created = svc::replace_token(&s, &by.name, &name, false).await?;
    Ok(HttpResponse::Created().json(created))
}

/// Revokes account `name`'s token: it stops working at once, and no new one is shown until
/// an administrator issues one (`POST /v1/admin/accounts/{name}/token`). Roles: admin.
#[utoipa::path(delete, path = "/v1/admin/accounts/{name}/token", tag = "admin", params(("name" = String, Path, description = "The account's name")),
    security(("bearer" = [])), responses((status = 204)))]
#[delete("/v1/admin/accounts/{name}/token")]
pub async fn revoke_token(
    s: web::Data<AppState>,
    c: Caller,
    name: web::Path<String>,
) -> Result<HttpResponse> {
    let by = c.require(&[Admin])?;
    svc::replace_token(&s, &by.name, &name, true).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// The latest version of every dataset. Roles: all.
#[utoipa::path(get, path = "/v1/datasets", tag = "datasets", security(("bearer" = [])),
    responses((status = 200, body = Vec<DatasetView>)))]
#[get("/v1/datasets")]
pub async fn list_datasets(s: web::Data<AppState>, c: Caller) -> Result<HttpResponse> {
    c.require(&[Admin, Governance, Researcher, Partner])?;
    Ok(HttpResponse::Ok().json(svc::datasets(&s).await?))
}

/// A dataset's latest policy. Roles: all.
#[utoipa::path(get, path = "/v1/datasets/{id}", tag = "datasets", params(("id" = String, Path, description = "The dataset's id")), security(("bearer" = [])),
    responses((status = 200, body = DatasetView)))]
#[get("/v1/datasets/{id}")]
pub async fn get_dataset(
    s: web::Data<AppState>,
    c: Caller,
    id: web::Path<String>,
) -> Result<HttpResponse> {
    c.require(&[Admin, Governance, Researcher, Partner])?;
    Ok(HttpResponse::Ok().json(svc::dataset(&s, &id).await?))
}

/// One version of a dataset's policy (agents compile plans against it). Roles: all.
#[utoipa::path(get, path = "/v1/datasets/{id}/versions/{version}", tag = "datasets", params(("id" = String, Path, description = "The dataset's id"), ("version" = i64, Path, description = "The policy version (1 for the first)")), security(("bearer" = [])),
    responses((status = 200, body = DatasetView)))]
#[get("/v1/datasets/{id}/versions/{version:-?\\d+}")]
pub async fn get_dataset_version(
    s: web::Data<AppState>,
    c: Caller,
    p: web::Path<(String, i64)>,
) -> Result<HttpResponse> {
    c.require(&[Admin, Governance, Researcher, Partner])?;
    Ok(HttpResponse::Ok().json(svc::dataset_version(&s, &p.0, p.1).await?))
}

/// Uploads a new version of a dataset's policy (TOML or JSON). Roles: governance.
#[utoipa::path(put, path = "/v1/datasets/{id}", tag = "datasets", params(("id" = String, Path, description = "The dataset's id")), request_body = UploadPolicy,
    security(("bearer" = [])), responses((status = 201, body = DatasetView)))]
#[put("/v1/datasets/{id}")]
pub async fn put_dataset(
    s: web::Data<AppState>,
    c: Caller,
    id: web::Path<String>,
    body: web::Json<UploadPolicy>,
) -> Result<HttpResponse> {
    let view = svc::upload_policy(&s, c.require(&[Governance])?, &id, body.into_inner()).await?;
    Ok(HttpResponse::Created().json(view))
}

/// Creates a research project. Roles: governance.
#[utoipa::path(post, path = "/v1/projects", tag = "governance", request_body = CreateProject,
    security(("bearer" = [])), responses((status = 201, body = ProjectView)))]
#[post("/v1/projects")]
pub async fn create_project(
    s: web::Data<AppState>,
    c: Caller,
    body: web::Json<CreateProject>,
) -> Result<HttpResponse> {
    let view = svc::create_project(&s, c.require(&[Governance])?, body.into_inner()).await?;
    Ok(HttpResponse::Created().json(view))
}

/// Sets a project's allocation of a dataset's budget. Roles: governance.
#[utoipa::path(put, path = "/v1/projects/{project}/allocations/{dataset}", tag = "governance", params(("project" = String, Path, description = "The project's id"), ("dataset" = String, Path, description = "The dataset's id")),
    request_body = SetAllocation, security(("bearer" = [])), responses((status = 200, body = BudgetView)))]
#[put("/v1/projects/{project}/allocations/{dataset}")]
pub async fn set_allocation(
    s: web::Data<AppState>,
    c: Caller,
    p: web::Path<(String, String)>,
    body: web::Json<SetAllocation>,
) -> Result<HttpResponse> {
    let view =
        svc::set_allocation(&s, c.require(&[Governance])?, &p.0, &p.1, body.into_inner()).await?;
    Ok(HttpResponse::Ok().json(view))
}

/// A dataset's budget: total, used, charged, per project. Roles: governance.
#[utoipa::path(get, path = "/v1/budgets/{dataset}", tag = "governance", params(("dataset" = String, Path, description = "The dataset's id")), security(("bearer" = [])),
    responses((status = 200, body = BudgetView)))]
#[get("/v1/budgets/{dataset}")]
pub async fn get_budget(
    s: web::Data<AppState>,
    c: Caller,
    dataset: web::Path<String>,
) -> Result<HttpResponse> {
    c.require(&[Governance])?;
    Ok(HttpResponse::Ok().json(svc::budget(&s, &dataset).await?))
}

/// Paging through the audit log.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Entries after this position (0 for the start).
    #[serde(default)]
    #[param(minimum = 0, maximum = 9223372036854775807_i64)]
    pub after: u64,
    /// At most this many (default 1000).
    #[serde(default = "default_limit")]
    #[param(minimum = 1, maximum = 10000)]
    pub limit: u64,
}

fn default_limit() -> u64 {
    1000
}

/// Reads (exports) the hash-chained audit log. Roles: governance, admin.
#[utoipa::path(get, path = "/v1/audit", tag = "governance", params(AuditQuery), security(("bearer" = [])),
    responses((status = 200, body = AuditPage)))]
#[get("/v1/audit")]
pub async fn get_audit(
    s: web::Data<AppState>,
    c: Caller,
    q: web::Query<AuditQuery>,
) -> Result<HttpResponse> {
    c.require(&[Governance, Admin])?;
    Ok(HttpResponse::Ok().json(svc::audit_page(&s, q.after, q.limit).await?))
}

/// The audit log's head (last position and hash), public: partners' agents record it as
/// they go, so that a log rewritten later is caught (`civic-agent audit-check`). No token.
#[utoipa::path(get, path = "/v1/audit/head", tag = "governance",
    responses((status = 200, body = Object)))]
#[get("/v1/audit/head")]
pub async fn audit_head(s: web::Data<AppState>) -> Result<HttpResponse> {
    Ok(HttpResponse::Ok().json(svc::audit_head(&s).await?))
}

/// Verifies the audit log's hash chain. Roles: governance, admin.
#[utoipa::path(get, path = "/v1/audit/verify", tag = "governance", security(("bearer" = [])),
    responses((status = 200, body = AuditVerification)))]
#[get("/v1/audit/verify")]
pub async fn verify_audit(s: web::Data<AppState>, c: Caller) -> Result<HttpResponse> {
    c.require(&[Governance, Admin])?;
    Ok(HttpResponse::Ok().json(svc::verify_audit(&s).await?))
}

/// Approves or rejects a query awaiting approval. Roles: governance.
#[utoipa::path(post, path = "/v1/queries/{id}/decision", tag = "governance", params(("id" = i64, Path, description = "The query's id")), request_body = Decision,
    security(("bearer" = [])), responses((status = 200, body = QueryView)))]
#[post("/v1/queries/{id:-?\\d+}/decision")]
pub async fn decide(
    s: web::Data<AppState>,
    c: Caller,
    id: web::Path<i64>,
    body: web::Json<Decision>,
) -> Result<HttpResponse> {
    let view = svc::decide(&s, c.require(&[Governance])?, *id, body.into_inner()).await?;
    Ok(HttpResponse::Ok().json(view))
}

/// Publishes a manifest the board signed (`civic-board sign` writes it): stored only if it
/// carries the threshold of signatures of the board before it and follows the newest stored
/// one. Roles: governance, admin (the signatures, not the role, make it valid).
#[utoipa::path(put, path = "/v1/manifests", tag = "governance",
    request_body(content = civic_policies::manifest::SignedManifest, description = "A signed manifest, as `civic-board sign` writes it"),
    security(("bearer" = [])), responses((status = 200, body = ManifestChain)))]
#[put("/v1/manifests")]
pub async fn publish_manifest(
    s: web::Data<AppState>,
    c: Caller,
    body: web::Json<SignedManifest>,
) -> Result<HttpResponse> {
    let by = c.require(&[Governance, Admin])?;
    Ok(HttpResponse::Ok().json(svc::publish_manifest(&s, by, body.into_inner()).await?))
}

/// Every manifest the board published, oldest first, with its signatures: public, so that
/// partners and residents can check who the federation is. No token.
#[utoipa::path(get, path = "/v1/manifests", tag = "governance",
    responses((status = 200, body = ManifestChain)))]
#[get("/v1/manifests")]
pub async fn manifests(s: web::Data<AppState>) -> Result<HttpResponse> {
    Ok(HttpResponse::Ok().json(svc::manifest_chain(&s).await?))
}
