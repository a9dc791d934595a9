//! Health, metrics and the OpenAPI document: no token.

use actix_web::{HttpResponse, get, web};

use crate::AppState;
use crate::error::{Error, Result};
use crate::store::StoreError;

/// Liveness and store reachability.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "The coordinator and its store answer", body = Object)))]
#[get("/healthz")]
pub async fn healthz(state: web::Data<AppState>) -> Result<HttpResponse> {
    if state.store.ping().await {
        Ok(HttpResponse::Ok()
            .json(serde_json::json!({ "status": "ok", "open_rounds": state.rounds.count() })))
    } else {
        // A problem like any other 503, with Retry-After, for load balancers and people alike.
        Err(Error::Store(StoreError::Busy(
            "the store does not answer".into(),
        )))
    }
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text exposition", content_type = "text/plain")))]
#[get("/metrics")]
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    let text = crate::metrics::render(state.rounds.count(), state.store.ping().await);
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(text)
}

/// This API's OpenAPI 3.1 document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "The OpenAPI document")))]
#[get("/openapi.json")]
pub async fn openapi() -> HttpResponse {
    HttpResponse::Ok().json(crate::openapi::document())
}
