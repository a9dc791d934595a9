//! HTTP handlers: decode, authorise, call a service, respond. Each states its roles.

pub mod governance;
pub mod ops;
pub mod partner;
pub mod research;

use actix_web::{HttpRequest, web};
use civic_api::ProblemCode;
use futures_util::StreamExt;

use crate::error::{Error, Result};

/// Reads a binary body up to `limit` bytes (413 beyond it, before buffering the rest).
pub async fn read_limited(mut payload: web::Payload, limit: usize) -> Result<web::Bytes> {
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| {
            Error::invalid(
                ProblemCode::RequestBody,
                format!("could not read the body: {e}"),
            )
        })?;
        if body.len() + chunk.len() > limit {
            return Err(Error::TooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// Registers the extractor error handlers, so malformed JSON, unknown fields, bad paths and
/// query strings all answer problem+json naming what was wrong.
pub fn extractor_configs(cfg: &mut web::ServiceConfig, json_limit: usize) {
    cfg.app_data(web::JsonConfig::default().limit(json_limit).error_handler(
        |err, _req: &HttpRequest| {
            use actix_web::error::JsonPayloadError as E;
            let e = match &err {
                E::Overflow { limit } | E::OverflowKnownLength { limit, .. } => {
                    Error::TooLarge { limit: *limit }
                }
                E::ContentType => Error::UnsupportedMediaType,
                E::Deserialize(e) => Error::invalid(
                    ProblemCode::RequestJson,
                    format!("the JSON body is not valid: {e}"),
                ),
                other => Error::invalid(
                    ProblemCode::RequestJson,
                    format!("could not read the JSON body: {other}"),
                ),
            };
            e.into()
        },
    ))
    .app_data(web::PathConfig::default().error_handler(|err, _req| {
        Error::invalid(
            ProblemCode::RequestPath,
            format!("the URL path is not valid: {err}"),
        )
        .into()
    }))
    .app_data(web::QueryConfig::default().error_handler(|err, _req| {
        Error::invalid(
            ProblemCode::RequestQueryString,
            format!("the query string is not valid: {err}"),
        )
        .into()
    }));
}

/// Every route.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(ops::healthz)
        .service(ops::metrics)
        .service(ops::openapi)
        .service(governance::create_account)
        .service(governance::create_partner)
        .service(governance::rotate_token)
        .service(governance::reissue_token)
        .service(governance::revoke_token)
        .service(governance::list_datasets)
        .service(governance::get_dataset)
        .service(governance::get_dataset_version)
        .service(governance::put_dataset)
        .service(governance::create_project)
        .service(governance::set_allocation)
        .service(governance::get_budget)
        .service(governance::audit_head)
        .service(governance::get_audit)
        .service(governance::verify_audit)
        .service(governance::decide)
        .service(governance::publish_manifest)
        .service(governance::manifests)
        .service(research::preview)
        .service(research::submit)
        .service(research::get_query)
        .service(research::register)
        .service(partner::register_identity)
        .service(partner::list_rounds)
        .service(partner::inbox)
        .service(partner::post_message)
        .service(partner::decline)
        .service(partner::roster);
}
