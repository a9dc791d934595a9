//! The OpenAPI document, generated from the handlers' annotations and the wire types.

use std::sync::LazyLock;

use actix_web::dev::ResourceDef;
use civic_api::problem::PROBLEM_CONTENT_TYPE;
use utoipa::openapi::path::{Operation, ParameterIn, PathItem};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Response, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use crate::routes::{governance, ops, partner, research};

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        let components = api.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Civic coordinator", description = "Privacy-preserving analytics for data co-operatives. Errors are RFC 9457 problem+json with a stable `code`. Any endpoint may answer 503 (`store.busy`, `request.timeout`) with a `Retry-After` header; nothing was changed, retry after it."),
    modifiers(&BearerAuth, &ProblemResponses),
    paths(
        ops::healthz, ops::metrics, ops::openapi,
        governance::create_account, governance::create_partner,
        governance::rotate_token, governance::reissue_token, governance::revoke_token, governance::list_datasets,
        governance::get_dataset, governance::get_dataset_version, governance::put_dataset,
        governance::create_project, governance::set_allocation, governance::get_budget,
        governance::audit_head, governance::get_audit, governance::verify_audit, governance::decide,
        governance::publish_manifest, governance::manifests,
        research::preview, research::submit, research::get_query, research::register,
        partner::register_identity, partner::list_rounds, partner::inbox, partner::post_message, partner::decline, partner::roster,
    ),
    components(schemas(civic_api::Problem))
)]
struct ApiDoc;

/// Declares on every operation the problem+json answers the server can give it, from what
/// the operation takes and does, so that the document and the server cannot drift apart one
/// handler at a time (`tests/openapi.rs` walks the router against it):
/// - 503 (`store.busy`, `request.timeout`, `round.not_driven_here`) anywhere;
/// - 401, 403 and 429 (`auth.*`) where a token is required;
/// - 400 where there is a body, a path or a query parameter to get wrong;
/// - 404 where a path parameter or a body names something that may not exist;
/// - 409 where the state may stand in the way (every POST, PUT and DELETE);
/// - 413 and 415 where there is a body.
struct ProblemResponses;

impl ProblemResponses {
    fn problem(description: &str) -> RefOr<Response> {
        RefOr::T(
            ResponseBuilder::new()
                .description(description)
                .content(
                    PROBLEM_CONTENT_TYPE,
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("Problem")))
                        .build(),
                )
                .build(),
        )
    }

    fn add(op: &mut Operation, changes_state: bool) {
        let secured = op.security.as_ref().is_some_and(|s| !s.is_empty());
        let params = op.parameters.as_deref().unwrap_or_default();
        let in_path = params
            .iter()
            .any(|p| matches!(p.parameter_in, ParameterIn::Path));
        let body = op.request_body.is_some();
        let mut answers = vec![(
            "503",
            "The store is busy or the request timed out; nothing was changed: retry after `Retry-After`",
        )];
        if secured {
            answers.push((
                "401",
                "No token, a malformed `Authorization` header, or an unknown token",
            ));
            answers.push(("403", "The token's role may not use this endpoint"));
            answers.push((
                "429",
                "Too many unknown tokens from this address: retry after `Retry-After`",
            ));
        }
        if body || !params.is_empty() {
            answers.push((
                "400",
                "The request is malformed or invalid; `code` and `detail` say how",
            ));
        }
        if in_path || body {
            answers.push(("404", "What the request names does not exist"));
        }
        if changes_state {
            answers.push((
                "409",
                "The current state does not allow it; `code` and `detail` say why",
            ));
        }
        if body {
            answers.push(("413", "The body is larger than this coordinator accepts"));
            answers.push(("415", "The body was not sent as `application/json`"));
        }
        for (status, description) in answers {
            op.responses
                .responses
                .entry(status.to_string())
                .or_insert_with(|| Self::problem(description));
        }
    }
}

impl Modify for ProblemResponses {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        for item in api.paths.paths.values_mut() {
            let PathItem {
                get,
                put,
                post,
                delete,
                ..
            } = item;
            for (op, changes_state) in [(get, false), (put, true), (post, true), (delete, true)] {
                if let Some(op) = op {
                    Self::add(op, changes_state);
                }
            }
        }
    }
}

/// The document.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// Every documented path as the router matches it, with its methods.
static ROUTES: LazyLock<Vec<(ResourceDef, Vec<String>)>> = LazyLock::new(|| {
    document()
        .paths
        .paths
        .iter()
        .map(|(path, item)| {
            let methods = [
                ("GET", item.get.is_some()),
                ("PUT", item.put.is_some()),
                ("POST", item.post.is_some()),
                ("DELETE", item.delete.is_some()),
            ]
            .into_iter()
            .filter(|(_, present)| *present)
            .map(|(m, _)| m.to_string())
            .collect();
            (ResourceDef::new(path.as_str()), methods)
        })
        .collect()
});

/// The methods the endpoint at `path` takes (empty when there is no such endpoint): for a
/// 405's `Allow` header.
pub fn methods_of(path: &str) -> Vec<String> {
    ROUTES
        .iter()
        .filter(|(def, _)| def.is_match(path))
        .flat_map(|(_, methods)| methods.iter().cloned())
        .collect()
}
