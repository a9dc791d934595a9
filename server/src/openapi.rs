//! The OpenAPI document, generated from the handlers' annotations and the wire types.

use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
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
    modifiers(&BearerAuth),
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

/// The document.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}
