//! The OpenAPI document, generated from the handlers' annotations and the wire types.

use std::sync::LazyLock;

use actix_web::dev::ResourceDef;
use civic_api::problem::PROBLEM_CONTENT_TYPE;
use utoipa::openapi::path::{Operation, ParameterIn, PathItem};
use utoipa::openapi::schema::{AdditionalProperties, Schema};
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
    modifiers(&BearerAuth, &ProblemResponses, &ClosedRequestObjects),
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

/// Marks every object in the query language's and the privacy request's schemas closed
/// (`additionalProperties: false`), as serde reads them (`deny_unknown_fields`): utoipa
/// closes structs but not the objects of an enum's variants.
struct ClosedRequestObjects;

impl ClosedRequestObjects {
    fn close(schema: &mut Schema) {
        match schema {
            Schema::Object(o) => {
                if !o.properties.is_empty() && o.additional_properties.is_none() {
                    o.additional_properties = Some(Box::new(AdditionalProperties::FreeForm(false)));
                }
                for property in o.properties.values_mut() {
                    if let RefOr::T(s) = property {
                        Self::close(s);
                    }
                }
            }
            Schema::OneOf(one) => one.items.iter_mut().for_each(|i| {
                if let RefOr::T(s) = i {
                    Self::close(s);
                }
            }),
            _ => {}
        }
    }
}

impl Modify for ClosedRequestObjects {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        let Some(components) = api.components.as_mut() else {
            return;
        };
        for name in ["Statistic", "Filter", "PrivacyRequest"] {
            if let Some(RefOr::T(schema)) = components.schemas.get_mut(name) {
                Self::close(schema);
            }
        }
    }
}

/// The document.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// The pattern an integer path parameter's route matches (`/v1/queries/{id}` is
/// `/v1/queries/{id:-?\d+}` to the router, so that `/v1/queries/preview` is not a query id).
pub const INTEGER_SEGMENT: &str = r"-?\d+";

/// A documented path as the router matches it (integer parameters as integer segments) and
/// as a loose pattern (any segment), with its methods.
struct Route {
    template: String,
    strict: ResourceDef,
    loose: ResourceDef,
    methods: Vec<String>,
}

/// Every documented path.
static ROUTES: LazyLock<Vec<Route>> = LazyLock::new(|| {
    let doc = serde_json::to_value(document()).unwrap_or_default();
    let Some(paths) = doc["paths"].as_object() else {
        return Vec::new();
    };
    paths
        .iter()
        .map(|(path, item)| {
            let mut pattern = path.clone();
            let mut methods = Vec::new();
            for (method, op) in item.as_object().into_iter().flatten() {
                methods.push(method.to_uppercase());
                for p in op["parameters"].as_array().into_iter().flatten() {
                    if p["in"] == "path" && p["schema"]["type"] == "integer" {
                        let name = p["name"].as_str().unwrap_or_default();
                        pattern = pattern.replace(
                            &format!("{{{name}}}"),
                            &format!("{{{name}:{INTEGER_SEGMENT}}}"),
                        );
                    }
                }
            }
            Route {
                template: path.clone(),
                strict: ResourceDef::new(pattern),
                loose: ResourceDef::new(path.as_str()),
                methods,
            }
        })
        .collect()
});

/// The methods the endpoint at `path` takes (empty when there is no such endpoint): for a
/// 405's `Allow` header.
pub fn methods_of(path: &str) -> Vec<String> {
    ROUTES
        .iter()
        .filter(|r| r.strict.is_match(path))
        .flat_map(|r| r.methods.iter().cloned())
        .collect()
}

/// The documented template `path` would match with `method` if its integer parameters took
/// any text (`/v1/queries/abc` → `/v1/queries/{id}`): the path names the endpoint, with an id
/// that is not a whole number.
pub fn template_with_integer_of(path: &str, method: &str) -> Option<String> {
    ROUTES
        .iter()
        .find(|r| r.loose.is_match(path) && r.methods.iter().any(|m| m == method))
        .map(|r| r.template.clone())
}
