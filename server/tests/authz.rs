//! The authorisation matrix: every endpoint × every role, plus no token and a bad token.
//! A role outside an endpoint's list gets 403, a missing or unknown token 401, and a role
//! inside it never gets either.

mod common;

use common::{Coordinator, fresh_store_url};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Who {
    Admin,
    Governance,
    Researcher,
    Partner,
}
use Who::*;

#[actix_web::test]
async fn every_endpoint_admits_exactly_its_roles() {
    let c = Coordinator::start(&fresh_store_url("authz")).await;
    let count = json!({ "project": "falls", "query": { "dataset": "city", "statistic": "count" }, "privacy": { "epsilon": 1.0 } });
    let matrix: Vec<(Method, &str, Option<serde_json::Value>, Vec<Who>)> = vec![
        (
            Method::POST,
            "/v1/admin/accounts",
            Some(json!({ "name": "new-user", "role": "researcher" })),
            vec![Admin],
        ),
        (
            Method::POST,
            "/v1/admin/partners",
            Some(json!({ "name": "new-partner" })),
            vec![Admin],
        ),
        (
            Method::GET,
            "/v1/datasets",
            None,
            vec![Admin, Governance, Researcher, Partner],
        ),
        (
            Method::GET,
            "/v1/datasets/city",
            None,
            vec![Admin, Governance, Researcher, Partner],
        ),
        (
            Method::GET,
            "/v1/datasets/city/versions/1",
            None,
            vec![Admin, Governance, Researcher, Partner],
        ),
        (
            Method::PUT,
            "/v1/datasets/city",
            Some(json!({ "policy": common::CITY_TOML })),
            vec![Governance],
        ),
        (
            Method::POST,
            "/v1/projects",
            Some(json!({ "id": "p2", "title": "Second", "members": [] })),
            vec![Governance],
        ),
        (
            Method::PUT,
            "/v1/projects/falls/allocations/city",
            Some(json!({ "cap": { "rho": 8000.0 } })),
            vec![Governance],
        ),
        (Method::GET, "/v1/budgets/city", None, vec![Governance]),
        (Method::GET, "/v1/audit", None, vec![Governance, Admin]),
        (
            Method::GET,
            "/v1/audit/verify",
            None,
            vec![Governance, Admin],
        ),
        (
            Method::POST,
            "/v1/queries/1/decision",
            Some(json!({ "approve": true, "reason": "ok" })),
            vec![Governance],
        ),
        (
            Method::POST,
            "/v1/admin/accounts/oscar/token",
            None,
            vec![Admin],
        ),
        (
            Method::DELETE,
            "/v1/admin/accounts/nobody/token",
            None,
            vec![Admin],
        ),
        (
            Method::PUT,
            "/v1/manifests",
            Some(json!({ "signatures": [], "manifest": {
                "federation": "x", "version": 1, "board": { "threshold": 1, "members": [] },
                "requirements": { "tolerated_colluders": 1, "min_survivors": 2,
                    "min_rho_per_query": 0.001, "max_rounds_per_dataset_per_day": 1 } } })),
            vec![Governance, Admin],
        ),
        (
            Method::POST,
            "/v1/queries/preview",
            Some(count.clone()),
            vec![Researcher],
        ),
        (Method::POST, "/v1/queries", Some(count), vec![Researcher]),
        (
            Method::GET,
            "/v1/queries/1",
            None,
            vec![Researcher, Governance],
        ),
        (
            Method::PUT,
            "/v1/partner/identity",
            Some(json!({ "public_key": "11".repeat(32) })),
            vec![Partner],
        ),
        (Method::GET, "/v1/partner/rounds", None, vec![Partner]),
        (
            Method::GET,
            "/v1/partner/rounds/1/inbox",
            None,
            vec![Partner],
        ),
        (
            Method::POST,
            "/v1/partner/rounds/1/messages",
            None,
            vec![Partner],
        ),
        (
            Method::POST,
            "/v1/partner/rounds/1/decline",
            Some(json!({ "reason": "over the local limit" })),
            vec![Partner],
        ),
        (
            Method::GET,
            "/v1/partners/roster",
            None,
            vec![Partner, Governance, Admin],
        ),
    ];
    let tokens = [
        (Admin, c.admin.clone()),
        (Governance, c.board[0].clone()),
        (Researcher, c.researcher.clone()),
        (Partner, c.partners[0].2.clone()),
    ];
    for (method, path, body, allowed) in &matrix {
        for token in [None, Some("not-a-token"), Some("Bearer")] {
            let (s, v) = c.call(method.clone(), path, token, body.clone()).await;
            assert_eq!(
                s,
                StatusCode::UNAUTHORIZED,
                "{method} {path} with {token:?}: {v}"
            );
            assert!(v["code"].as_str().unwrap().starts_with("auth."), "{v}");
        }
        for (who, token) in &tokens {
            let (s, v) = c
                .call(method.clone(), path, Some(token), body.clone())
                .await;
            if allowed.contains(who) {
                assert!(
                    s != StatusCode::UNAUTHORIZED && s != StatusCode::FORBIDDEN,
                    "{method} {path} as {who:?}: {s} {v}"
                );
                assert!(s.as_u16() < 500, "{method} {path} as {who:?}: {s} {v}");
            } else {
                assert_eq!(s, StatusCode::FORBIDDEN, "{method} {path} as {who:?}: {v}");
                assert_eq!(v["code"], "auth.forbidden");
            }
        }
    }
    // Public endpoints need no token.
    for path in [
        "/healthz",
        "/metrics",
        "/openapi.json",
        "/v1/register",
        "/v1/manifests",
        "/v1/audit/head",
    ] {
        let (s, v) = c.call(Method::GET, path, None, None).await;
        assert_eq!(s, StatusCode::OK, "{path}: {v}");
    }
    // The OpenAPI document lists every endpoint of the matrix.
    let (_, doc) = c.call(Method::GET, "/openapi.json", None, None).await;
    for (_, path, _, _) in &matrix {
        let templated = path
            .replace("/1/", "/{id}/")
            .replace("/city/versions/1", "/{id}/versions/{version}");
        let templated = if templated.ends_with("/queries/1") {
            templated.replace("/1", "/{id}")
        } else {
            templated
        };
        let templated = templated
            .replace("/datasets/city", "/datasets/{id}")
            .replace(
                "/projects/falls/allocations/{id}",
                "/projects/{project}/allocations/{dataset}",
            )
            .replace(
                "/projects/falls/allocations/city",
                "/projects/{project}/allocations/{dataset}",
            )
            .replace("/budgets/city", "/budgets/{dataset}")
            .replace("/accounts/oscar/", "/accounts/{name}/")
            .replace("/accounts/nobody/", "/accounts/{name}/");
        assert!(
            doc["paths"].get(&templated).is_some(),
            "{templated} missing from /openapi.json"
        );
    }
    c.stop().await;
}

#[actix_web::test]
async fn an_address_guessing_tokens_is_slowed_and_counted() {
    let c = Coordinator::start(&fresh_store_url("authz-throttle")).await;
    let limit = civic_server::auth::FAILURES_ALLOWED;
    for i in 0..limit {
        let (s, v) = c
            .call(
                Method::GET,
                "/v1/datasets",
                Some(&format!("guess-{i}")),
                None,
            )
            .await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");
    }
    // The next request from this address is refused before its token is looked up, even a
    // valid one, until the window ends.
    let res = c
        .http
        .get(format!("{}/v1/datasets", c.base))
        .bearer_auth(&c.researcher)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    let v: Value = res.json().await.unwrap();
    assert_eq!(v["code"], "auth.too_many_failures", "{v}");
    // Failures are counted for the operator.
    let (_, metrics) = c.call(Method::GET, "/metrics", None, None).await;
    let text = metrics.as_str().unwrap();
    let failures: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("civic_auth_failures_total "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(failures >= u64::from(limit), "{text}");
    assert!(text.contains("civic_auth_throttled_total"), "{text}");
    c.stop().await;
}

#[actix_web::test]
async fn a_token_can_be_rotated_reissued_and_revoked_and_the_old_one_stops_working() {
    let c = Coordinator::start(&fresh_store_url("authz-tokens")).await;
    let datasets = |token: String| {
        let c = &c;
        async move {
            c.call(Method::GET, "/v1/datasets", Some(&token), None)
                .await
                .0
        }
    };
    // The researcher rotates their own token.
    let (s, v) = c
        .call(Method::POST, "/v1/token/rotate", Some(&c.researcher), None)
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let rotated = v["token"].as_str().unwrap().to_string();
    assert_eq!(
        datasets(c.researcher.clone()).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(datasets(rotated.clone()).await, StatusCode::OK);
    // The administrator revokes it, then issues a new one.
    let (s, _) = c
        .call(
            Method::DELETE,
            "/v1/admin/accounts/rita/token",
            Some(&c.admin),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(datasets(rotated).await, StatusCode::UNAUTHORIZED);
    let (s, v) = c
        .call(
            Method::POST,
            "/v1/admin/accounts/rita/token",
            Some(&c.admin),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["name"], "rita");
    assert_eq!(
        datasets(v["token"].as_str().unwrap().into()).await,
        StatusCode::OK
    );
    let (s, v) = c
        .call(
            Method::POST,
            "/v1/admin/accounts/nobody/token",
            Some(&c.admin),
            None,
        )
        .await;
    assert_eq!(
        (s, &v["code"]),
        (StatusCode::NOT_FOUND, &json!("not_found")),
        "{v}"
    );
    // Each change is in the audit log, without the token.
    let (_, log) = c
        .call(Method::GET, "/v1/audit?limit=1000", Some(&c.admin), None)
        .await;
    let actions: Vec<&str> = log["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["action"].as_str())
        .filter(|a| a.starts_with("account.token") || *a == "account.revoke")
        .collect();
    assert_eq!(
        actions,
        [
            "account.token_replace",
            "account.revoke",
            "account.token_replace"
        ]
    );
    c.stop().await;
}

/// The dashboard's pages honour the same roles as the API: each page × each role, plus no
/// session. A page outside a role's list answers 403 ("This page is for …"), a page behind
/// a login sends a visitor without a session to log in, and a role inside the list is never
/// refused. Partner tokens open no session at all.
#[actix_web::test]
async fn every_dashboard_page_admits_exactly_its_roles() {
    let c = Coordinator::start(&fresh_store_url("authz-ui")).await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let login = async |token: &str| -> (StatusCode, Option<String>) {
        let res = http
            .post(format!("{}/ui/login", c.base))
            .form(&[("token", token)])
            .send()
            .await
            .unwrap();
        let cookie = res
            .headers()
            .get("set-cookie")
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap().to_string());
        (res.status(), cookie)
    };
    let (s, cookie) = login(&c.partners[0].2).await;
    assert_eq!(
        (s, cookie),
        (StatusCode::FORBIDDEN, None),
        "partners open no session"
    );
    let mut sessions = Vec::new();
    for (who, token) in [
        (Admin, &c.admin),
        (Governance, &c.board[0]),
        (Researcher, &c.researcher),
    ] {
        let (s, cookie) = login(token).await;
        assert_eq!(s, StatusCode::SEE_OTHER, "{who:?}");
        sessions.push((who, cookie.unwrap()));
    }
    let all = vec![Admin, Governance, Researcher];
    // (method, path, roles; None = public)
    let pages: Vec<(Method, &str, Option<Vec<Who>>)> = vec![
        (Method::GET, "/ui/", None),
        (Method::GET, "/ui/federation", None),
        (Method::GET, "/ui/login", None),
        (Method::GET, "/ui/releases/1", None),
        (Method::GET, "/ui/board/", Some(vec![Governance])),
        (
            Method::GET,
            "/ui/board/budgets/city",
            Some(vec![Governance]),
        ),
        (Method::GET, "/ui/board/approvals", Some(vec![Governance])),
        (Method::GET, "/ui/board/queries/1", Some(vec![Governance])),
        (
            Method::POST,
            "/ui/board/queries/1/decision",
            Some(vec![Governance]),
        ),
        (
            Method::GET,
            "/ui/board/partners",
            Some(vec![Governance, Admin]),
        ),
        (
            Method::GET,
            "/ui/board/audit",
            Some(vec![Governance, Admin]),
        ),
        (Method::GET, "/ui/datasets/city/diff", Some(all.clone())),
        (Method::GET, "/ui/research/", Some(vec![Researcher])),
        (Method::GET, "/ui/research/new", Some(vec![Researcher])),
        (
            Method::GET,
            "/ui/research/queries/1",
            Some(vec![Researcher, Governance]),
        ),
        (Method::POST, "/ui/research/preview", Some(vec![Researcher])),
        (Method::POST, "/ui/research/submit", Some(vec![Researcher])),
    ];
    let form = [
        ("decision", "approve"),
        ("reason", "x"),
        ("request", "{}"),
        ("csrf", ""),
    ];
    for (method, path, roles) in &pages {
        let send = |cookie: Option<&str>| {
            let mut req = http.request(method.clone(), format!("{}{path}", c.base));
            if let Some(cookie) = cookie {
                req = req.header("cookie", cookie);
            }
            if *method == Method::POST {
                req = req.form(&form);
            }
            req.send()
        };
        let res = send(None).await.unwrap();
        match roles {
            None => assert!(
                res.status().as_u16() < 500 && res.status() != StatusCode::SEE_OTHER,
                "{method} {path} without a session: {}",
                res.status()
            ),
            Some(_) => {
                assert_eq!(res.status(), StatusCode::SEE_OTHER, "{method} {path}");
                assert!(
                    res.headers()["location"]
                        .to_str()
                        .unwrap()
                        .starts_with("/ui/login?next="),
                    "{method} {path}"
                );
            }
        }
        for (who, cookie) in &sessions {
            let res = send(Some(cookie)).await.unwrap();
            let status = res.status();
            let body = res.text().await.unwrap();
            let refused = status == StatusCode::FORBIDDEN && body.contains("This page is for");
            let allowed = roles.as_ref().is_none_or(|r| r.contains(who));
            assert_eq!(
                refused, !allowed,
                "{method} {path} as {who:?}: {status} {body}"
            );
            assert!(
                status.as_u16() < 500,
                "{method} {path} as {who:?}: {status}"
            );
            assert_ne!(
                status,
                StatusCode::SEE_OTHER,
                "{method} {path} as {who:?}: a login loop"
            );
        }
    }
    c.stop().await;
}
