//! Bad input of every kind gets a 4xx problem+json naming what is wrong, and changes
//! nothing: the budget, the audit log and the round are as they were.

mod common;

use civic_api::encode_binary;
use civic_secagg::messages::{ClientMessage, MaskedInput};
use civic_secagg::{PartnerId, RingVector, RoundId, Width};
use common::partner::StopAt;
use common::{Coordinator, count_query, fresh_store_url};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

async fn snapshot(c: &Coordinator) -> (Value, Value) {
    let (_, b) = c
        .call(Method::GET, "/v1/budgets/city", Some(&c.board[0]), None)
        .await;
    let (_, a) = c
        .call(Method::GET, "/v1/audit", Some(&c.board[0]), None)
        .await;
    (b, a["head"].clone())
}

fn problem(s: StatusCode, v: &Value, status: u16, code: &str, mentions: &str) {
    assert_eq!(s.as_u16(), status, "{v}");
    assert_eq!(v["code"], code, "{v}");
    assert_eq!(v["status"], status);
    assert!(
        v["type"]
            .as_str()
            .unwrap()
            .starts_with("urn:civic:problem:"),
        "{v}"
    );
    let detail = v["detail"].as_str().unwrap();
    assert!(
        detail.contains(mentions),
        "{detail:?} should mention {mentions:?}"
    );
}

#[actix_web::test]
async fn bad_requests_are_refused_clearly_and_change_nothing() {
    let c = Coordinator::start(&fresh_store_url("bad")).await;
    let before = snapshot(&c).await;
    let r = Some(c.researcher.as_str());

    // Raw bodies: not JSON, wrong content type, too large.
    let raw = |body: &'static str, ct: &'static str| {
        c.http
            .post(format!("{}/v1/queries", c.base))
            .bearer_auth(&c.researcher)
            .header("content-type", ct)
            .body(body)
            .send()
    };
    let res = raw("{not json", "application/json").await.unwrap();
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    let (s, v) = (res.status(), res.json::<Value>().await.unwrap());
    problem(s, &v, 400, "request.json", "JSON");
    let res = raw("{}", "text/plain").await.unwrap();
    let (s, v) = (res.status(), res.json::<Value>().await.unwrap());
    problem(s, &v, 415, "request.content_type", "application/json");
    let huge = json!({ "project": "x".repeat(300_000) });
    let (s, v) = c.call(Method::POST, "/v1/queries", r, Some(huge)).await;
    problem(s, &v, 413, "request.too_large", "limit");

    // Well-formed JSON that is wrong.
    let mut unknown = count_query(1.0);
    unknown["colour"] = json!("blue");
    let (s, v) = c.call(Method::POST, "/v1/queries", r, Some(unknown)).await;
    problem(s, &v, 400, "request.json", "colour");
    for eps in [-1.0, 0.0] {
        let (s, v) = c
            .call(Method::POST, "/v1/queries", r, Some(count_query(eps)))
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "ε = {eps}: {v}");
        assert!(v["detail"].as_str().unwrap().contains("epsilon"), "{v}");
    }
    // NaN cannot be written in JSON; a string in its place is a type error.
    let mut nan = count_query(1.0);
    nan["privacy"]["epsilon"] = json!("NaN");
    let (s, v) = c.call(Method::POST, "/v1/queries", r, Some(nan)).await;
    problem(s, &v, 400, "request.json", "");
    let mut unknown_ds = count_query(1.0);
    unknown_ds["query"]["dataset"] = json!("nowhere");
    let (s, v) = c
        .call(Method::POST, "/v1/queries", r, Some(unknown_ds))
        .await;
    problem(s, &v, 404, "not_found", "nowhere");
    let column = json!({ "project": "falls", "query": { "dataset": "city", "statistic": { "sum": { "column": "income" } } }, "privacy": { "epsilon": 1.0 } });
    let (s, v) = c.call(Method::POST, "/v1/queries", r, Some(column)).await;
    problem(s, &v, 400, "policy.query", "income");
    let mut other_project = count_query(1.0);
    other_project["project"] = json!("falls");
    let (s, v) = c
        .call(
            Method::POST,
            "/v1/queries",
            Some(&c.outsider),
            Some(other_project),
        )
        .await;
    problem(s, &v, 403, "auth.forbidden", "not a member");
    let (s, v) = c.call(Method::GET, "/v1/queries/abc", r, None).await;
    problem(s, &v, 400, "request.path", "");
    let (s, v) = c
        .call(Method::GET, "/v1/audit?after=-1", Some(&c.board[0]), None)
        .await;
    problem(s, &v, 400, "request.query_string", "");
    let (s, v) = c.call(Method::GET, "/v1/nothing-here", r, None).await;
    problem(s, &v, 404, "not_found", "/v1/nothing-here");

    // Governance: a broken policy, a policy for another id, an impossible allocation.
    let g = Some(c.board[0].as_str());
    let (s, v) = c
        .call(
            Method::PUT,
            "/v1/datasets/city",
            g,
            Some(json!({ "policy": "[dataset]\nid = 3" })),
        )
        .await;
    problem(s, &v, 400, "policy.parse", "request body");
    let other = common::CITY_TOML.replace("id = \"city\"", "id = \"town\"");
    let (s, v) = c
        .call(
            Method::PUT,
            "/v1/datasets/city",
            g,
            Some(json!({ "policy": other })),
        )
        .await;
    problem(s, &v, 400, "dataset.id_mismatch", "town");
    let (s, v) = c
        .call(
            Method::PUT,
            "/v1/projects/falls/allocations/city",
            g,
            Some(json!({ "cap": { "rho": 20000.0 } })),
        )
        .await;
    problem(s, &v, 409, "policy.over_budget", "dataset total");
    let (s, v) = c
        .call(
            Method::PUT,
            "/v1/projects/falls/allocations/city",
            g,
            Some(json!({ "cap": { "rho": -1.0 } })),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");

    assert_eq!(
        snapshot(&c).await,
        before,
        "a refused request changed the budget or the audit log"
    );
    c.stop().await;
}

#[actix_web::test]
async fn bad_protocol_messages_are_refused_and_the_round_goes_on() {
    let c = Coordinator::start(&fresh_store_url("bad-protocol")).await;
    let ps = c.register_partners().await;
    // A partner cannot swap its pinned identity key.
    let (s, v) = c
        .call(
            Method::PUT,
            "/v1/partner/identity",
            Some(&c.partners[0].2),
            Some(json!({ "public_key": "22".repeat(32) })),
        )
        .await;
    problem(s, &v, 409, "partner.identity_key_pinned", "trust-a");
    let (s, v) = c
        .call(
            Method::PUT,
            "/v1/partner/identity",
            Some(&c.partners[0].2),
            Some(json!({ "public_key": "zz" })),
        )
        .await;
    problem(s, &v, 400, "partner.identity_key", "64 hex");

    let (_, q) = c.submit(count_query(60.0)).await;
    let id = common::round_of(&q);
    let me = PartnerId(c.partners[0].1);
    let post = |token: String, body: Vec<u8>| {
        let url = format!("{}/v1/partner/rounds/{id}/messages", c.base);
        let http = c.http.clone();
        async move {
            let res = http
                .post(url)
                .bearer_auth(token)
                .body(body)
                .send()
                .await
                .unwrap();
            (res.status(), res.json::<Value>().await.unwrap())
        }
    };
    let token = c.partners[0].2.clone();
    let (s, v) = post(token.clone(), vec![1, 2, 3]).await;
    problem(s, &v, 400, "protocol.malformed", "round");
    let masked = |sender: PartnerId, round: u64, len: usize| {
        encode_binary(&ClientMessage::MaskedInput(MaskedInput {
            round_id: RoundId(round),
            sender,
            vector: RingVector::zeros(Width::W32, len),
        }))
    };
    // Posting as another partner.
    let (s, v) = post(
        token.clone(),
        masked(PartnerId(c.partners[1].1), id as u64, 1),
    )
    .await;
    problem(s, &v, 403, "auth.forbidden", "claims to come from");
    // Another round's message.
    let (s, v) = post(token.clone(), masked(me, id as u64 + 7, 1)).await;
    problem(s, &v, 400, "protocol.wrong_round", "was posted to round");
    // Out of phase: a masked vector during AdvertiseKeys.
    let (s, v) = post(token.clone(), masked(me, id as u64, 1)).await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert_eq!(v["code"], "secagg.out_of_phase", "{v}");
    // Oversized body.
    let (s, v) = post(token.clone(), vec![0u8; 70 * 1024 * 1024]).await;
    problem(s, &v, 413, "request.too_large", "limit");
    // Declines need a reason, and an unknown round is 404; neither changes the round.
    let path = format!("/v1/partner/rounds/{id}/decline");
    let (s, v) = c
        .call(
            Method::POST,
            &path,
            Some(&token),
            Some(json!({ "reason": "  " })),
        )
        .await;
    problem(s, &v, 400, "round.decline_reason", "1 to 1000");
    let (s, v) = c
        .call(
            Method::POST,
            "/v1/partner/rounds/999/decline",
            Some(&token),
            Some(json!({ "reason": "no" })),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");

    // The round is untouched: it still completes with the exact sum, even though one
    // partner replays an earlier phase's message and sends a vector of the wrong length on
    // the way (both refused, checked inside take_part).
    let inputs = [vec![5], vec![6], vec![7]];
    let stops = [StopAt::NeverButMisbehave, StopAt::Never, StopAt::Never];
    let futures = ps
        .iter()
        .zip(inputs.iter())
        .zip(stops)
        .map(|((p, x), s)| p.take_part(id, x, s));
    let results = futures_util::future::join_all(futures).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let done = c.wait_done(q["id"].as_i64().unwrap()).await;
    assert_eq!(
        done["result"]["rows"][0][0]["value"].as_f64().unwrap(),
        18.0,
        "{done}"
    );
    c.stop().await;
}
