//! The OpenAPI document against the router. Every route a handler declares is documented
//! with the same method and path, and every documented route is served; each path parameter
//! is declared; every error answer is problem+json; any other method on a documented path
//! answers 405 naming the methods it takes.

mod common;

use std::collections::BTreeSet;

use common::{Coordinator, fresh_store_url};
use reqwest::Method;
use serde_json::Value;

/// (METHOD, path) of every route the handlers declare with actix's attribute macros.
fn declared_routes() -> BTreeSet<(String, String)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/routes");
    let mut routes = BTreeSet::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        for line in text.lines().map(str::trim) {
            for method in ["get", "put", "post", "delete", "patch"] {
                let prefix = format!("#[{method}(\"");
                if let Some(rest) = line.strip_prefix(&prefix) {
                    let path = rest.split('"').next().unwrap();
                    routes.insert((method.to_uppercase(), path.to_string()));
                }
            }
        }
    }
    routes
}

fn document() -> Value {
    serde_json::to_value(civic_server::openapi::document()).unwrap()
}

/// (METHOD, path) of every documented operation.
fn documented_routes(doc: &Value) -> BTreeSet<(String, String)> {
    let mut routes = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            routes.insert((method.to_uppercase(), path.clone()));
        }
    }
    routes
}

/// The `{name}`s of a templated path.
fn template_names(path: &str) -> BTreeSet<String> {
    path.split('{')
        .skip(1)
        .map(|s| s.split('}').next().unwrap().to_string())
        .collect()
}

/// Whether `path` matches the documented template segment by segment, an integer
/// parameter only by a whole number.
fn matches_template(doc: &Value, template: &str, path: &str) -> bool {
    let integers: BTreeSet<String> = doc["paths"][template]
        .as_object()
        .into_iter()
        .flat_map(|item| item.values())
        .flat_map(|op| op["parameters"].as_array().cloned().unwrap_or_default())
        .filter(|p| p["schema"]["type"] == "integer")
        .map(|p| format!("{{{}}}", p["name"].as_str().unwrap()))
        .collect();
    let (t, p): (Vec<&str>, Vec<&str>) = (template.split('/').collect(), path.split('/').collect());
    t.len() == p.len()
        && t.iter().zip(&p).all(|(t, p)| {
            if integers.contains(*t) {
                p.parse::<i64>().is_ok()
            } else {
                t.starts_with('{') || t == p
            }
        })
}

/// A route as the document writes it: `{id:-?\\d+}` (the router's integer segment, as the
/// source spells it) is `{id}`.
fn as_documented(route: &str) -> String {
    let mut out = String::new();
    let mut in_pattern = false;
    for c in route.chars() {
        match c {
            ':' if out.rfind('{') > out.rfind('}') => in_pattern = true,
            '}' => {
                in_pattern = false;
                out.push(c);
            }
            _ if in_pattern => {}
            _ => out.push(c),
        }
    }
    out
}

#[test]
fn every_route_is_documented_with_its_parameters_and_problem_answers() {
    let doc = document();
    let declared = declared_routes();
    assert!(declared.len() > 20, "the source walk found {declared:?}");
    let routed: BTreeSet<(String, String)> = declared
        .iter()
        .map(|(m, p)| (m.clone(), as_documented(p)))
        .collect();
    assert_eq!(routed, documented_routes(&doc));
    // Every integer path parameter is an integer segment to the router as well, so that a
    // literal sibling (`/v1/queries/preview`) is never taken for an id.
    for (method, route) in &declared {
        let path = as_documented(route);
        let op = &doc["paths"][&path][method.to_lowercase()];
        for p in op["parameters"].as_array().into_iter().flatten() {
            if p["in"] == "path" && p["schema"]["type"] == "integer" {
                let name = p["name"].as_str().unwrap();
                assert!(
                    route.contains(&format!("{{{name}:-?\\\\d+}}")),
                    "{method} {route}: integer parameter {name} without the integer segment"
                );
            }
        }
    }

    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let what = format!("{method} {path}");
            let params = op["parameters"].as_array().cloned().unwrap_or_default();
            let in_path: BTreeSet<String> = params
                .iter()
                .filter(|p| p["in"] == "path")
                .map(|p| p["name"].as_str().unwrap().to_string())
                .collect();
            assert_eq!(in_path, template_names(path), "{what}: path parameters");
            for p in &params {
                assert!(
                    p["in"] == "path" || p["in"] == "query",
                    "{what}: parameter {p} is neither in the path nor the query"
                );
                assert!(
                    p["schema"].is_object(),
                    "{what}: parameter {p} has no schema"
                );
            }
            let responses = op["responses"].as_object().unwrap();
            let statuses: BTreeSet<&str> = responses.keys().map(String::as_str).collect();
            assert!(statuses.contains("503"), "{what}: {statuses:?}");
            let secured = op["security"].as_array().is_some_and(|s| !s.is_empty());
            if secured {
                for s in ["401", "403", "429"] {
                    assert!(statuses.contains(s), "{what}: no {s} in {statuses:?}");
                }
            }
            if op.get("requestBody").is_some() {
                for s in ["400", "413", "415"] {
                    assert!(statuses.contains(s), "{what}: no {s} in {statuses:?}");
                }
            }
            if !in_path.is_empty() {
                assert!(statuses.contains("404"), "{what}: no 404 in {statuses:?}");
            }
            for (status, response) in responses {
                if status.starts_with('4') || status.starts_with('5') {
                    assert_eq!(
                        response["content"]["application/problem+json"]["schema"]["$ref"],
                        "#/components/schemas/Problem",
                        "{what}: {status}"
                    );
                }
            }
        }
    }
}

#[actix_web::test]
async fn the_router_serves_every_documented_route_and_405s_other_methods() {
    let c = Coordinator::start(&fresh_store_url("openapi-router")).await;
    let doc = document();
    let documented = documented_routes(&doc);
    let paths: BTreeSet<&String> = documented.iter().map(|(_, p)| p).collect();
    for path in paths {
        // Numeric placeholders parse as ids and as names alike.
        let concrete = template_names(path).iter().fold(path.clone(), |p, name| {
            p.replace(&format!("{{{name}}}"), "1")
        });
        // Every documented route the concrete path matches (GET /v1/queries/preview is GET
        // /v1/queries/{id}, with an id that will not parse).
        let takes: BTreeSet<&str> = documented
            .iter()
            .filter(|(_, p)| matches_template(&doc, p, &concrete))
            .map(|(m, _)| m.as_str())
            .collect();
        for method in ["GET", "PUT", "POST", "DELETE", "PATCH"] {
            let response = c
                .http
                .request(
                    Method::from_bytes(method.as_bytes()).unwrap(),
                    format!("{}{concrete}", c.base),
                )
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            let allow = response
                .headers()
                .get("allow")
                .map(|v| v.to_str().unwrap().to_string());
            let body: Value = response.json().await.unwrap_or(Value::Null);
            let what = format!("{method} {concrete}");
            if takes.contains(method) {
                // Served: whatever it answers without a token or a body, it is not "no such
                // endpoint".
                assert!(
                    !(status == 404
                        && body["detail"]
                            .as_str()
                            .unwrap_or("")
                            .contains("no endpoint")),
                    "{what}: documented but not routed: {body}"
                );
                assert_ne!(status, 405, "{what}: {body}");
            } else {
                assert_eq!(status, 405, "{what}: {body}");
                assert_eq!(body["code"], "request.method", "{what}: {body}");
                let mut allowed: Vec<&str> = allow.as_deref().unwrap().split(", ").collect();
                allowed.sort_unstable();
                let mut expected: Vec<&str> = takes.iter().copied().collect();
                expected.sort_unstable();
                assert_eq!(allowed, expected, "{what}");
            }
        }
    }
    // A literal beside an integer parameter is not taken for an id: GET /v1/queries/preview
    // is a method the path does not take.
    let response = c
        .http
        .get(format!("{}/v1/queries/preview", c.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 405);
    assert_eq!(response.headers()["allow"], "POST");
    // A path no route matches is still 404.
    let (s, v) = c.call(Method::GET, "/v1/nothing-here", None, None).await;
    assert_eq!(s.as_u16(), 404, "{v}");
    assert_eq!(v["code"], "not_found");
    c.stop().await;
}
