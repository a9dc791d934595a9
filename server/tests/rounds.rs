//! Whole queries over loopback HTTP: three partners run real secure aggregation through the
//! coordinator; releases, re-serving, dropouts, aborts with refunds, approvals.

mod common;

use std::sync::Arc;
use std::time::Duration;

use civic_server::Parts;
use civic_server::clock::TestClock;
use common::partner::{StopAt, TestPartner};
use common::{Coordinator, age_histogram, count_query, fresh_store_url, test_config};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

async fn partners(c: &Coordinator) -> Vec<TestPartner> {
    c.register_partners().await
}

async fn budget(c: &Coordinator) -> Value {
    let (s, b) = c
        .call(Method::GET, "/v1/budgets/city", Some(&c.board[0]), None)
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    b
}

/// Runs the partners on `values` (one vector each) concurrently.
async fn run_partners(
    ps: &[TestPartner],
    round: i64,
    values: &[Vec<i64>],
    stops: &[StopAt],
) -> Vec<Result<(), String>> {
    let futures = ps
        .iter()
        .zip(values)
        .zip(stops)
        .map(|((p, v), s)| p.take_part(round, v, *s));
    futures_util::future::join_all(futures).await
}

#[actix_web::test]
async fn a_count_and_a_histogram_are_released_once_and_re_served_free() {
    let c = Coordinator::start(&fresh_store_url("release")).await;
    let ps = partners(&c).await;

    // Preview: cost and accuracy, nothing spent.
    let (s, preview) = c
        .call(
            Method::POST,
            "/v1/queries/preview",
            Some(&c.researcher),
            Some(count_query(60.0)),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{preview}");
    assert!(common::close(&preview["cost"]["rho"], 1800.0));
    assert_eq!(preview["affordable"], true);
    assert_eq!(preview["approvals_required"], 0);
    assert!(
        preview["half_widths"][0].as_f64().unwrap() <= 1.0,
        "{preview}"
    );
    assert!(common::close(&budget(&c).await["used_rho"], 0.0));
    // Or ask for an accuracy and be told the cost.
    let mut target = count_query(1.0);
    target["privacy"] =
        json!({ "target_half_width": { "half_width": 5.0, "mechanism": "laplace" } });
    let (s, p) = c
        .call(
            Method::POST,
            "/v1/queries/preview",
            Some(&c.researcher),
            Some(target),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{p}");
    assert!(p["half_widths"][0].as_f64().unwrap() <= 5.0, "{p}");
    let eps = p["cost"]["epsilon"].as_f64().unwrap();
    assert!(
        eps > 0.3 && eps < 1.0,
        "a ±5 count at 95% needs ε ≈ ln(20)/5 ≈ 0.6: {p}"
    );

    // Count: 10 + 20 + 12 residents.
    let (s, q) = c.submit(count_query(60.0)).await;
    assert_eq!(s, StatusCode::CREATED, "{q}");
    assert_eq!(q["state"], "running");
    let id = q["id"].as_i64().unwrap();
    assert!(
        common::close(&budget(&c).await["used_rho"], 1800.0),
        "reserved at submission"
    );
    let results = run_partners(
        &ps,
        common::round_of(&q),
        &[vec![10], vec![20], vec![12]],
        &[StopAt::Never; 3],
    )
    .await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let done = c.wait_done(id).await;
    assert_eq!(done["state"], "released", "{done}");
    let result = &done["result"];
    // ε = 60 at sensitivity 1: the noise is 0 except with probability ~1e-26.
    assert_eq!(
        result["rows"][0][0]["value"].as_f64().unwrap(),
        42.0,
        "{result}"
    );
    assert_eq!(result["receipt"]["survivors"], 3);
    assert_eq!(result["reused"], false);
    let b = budget(&c).await;
    assert!(common::close(&b["charged_rho"], 1800.0), "{b}");
    assert!(common::close(&b["used_rho"], 1800.0), "{b}");

    // The identical question is answered from the store at no cost, with the same value.
    let (s, again) = c.submit(count_query(60.0)).await;
    assert_eq!(s, StatusCode::CREATED, "{again}");
    assert_eq!(again["state"], "released");
    assert_eq!(again["result"]["reused"], true);
    assert_eq!(again["result"]["rows"], result["rows"]);
    assert!(common::close(&again["cost"]["rho"], 0.0));
    assert!(common::close(&budget(&c).await["charged_rho"], 1800.0));

    // A histogram of three age bands.
    let (s, h) = c.submit(age_histogram(60.0)).await;
    assert_eq!(s, StatusCode::CREATED, "{h}");
    let hid = h["id"].as_i64().unwrap();
    let values = [vec![1, 2, 3], vec![4, 5, 6], vec![0, 10, 1]];
    let results = run_partners(&ps, common::round_of(&h), &values, &[StopAt::Never; 3]).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let done = c.wait_done(hid).await;
    assert_eq!(done["state"], "released", "{done}");
    let cells: Vec<f64> = done["result"]["rows"][0]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["value"].as_f64().unwrap())
        .collect();
    assert_eq!(cells, vec![5.0, 17.0, 10.0], "{done}");

    // The public register shows both releases without a token; the audit log verifies.
    let (s, register) = c.call(Method::GET, "/v1/register", None, None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(register.as_array().unwrap().len(), 2, "{register}");
    assert_eq!(register[0]["project_title"], "Falls prevention");
    let (s, v) = c
        .call(Method::GET, "/v1/audit/verify", Some(&c.board[1]), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["verified"], true, "{v}");
    let (_, log) = c
        .call(Method::GET, "/v1/audit?limit=1000", Some(&c.board[1]), None)
        .await;
    let actions: Vec<&str> = log["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions.iter().filter(|a| **a == "query.release").count(),
        2,
        "{actions:?}"
    );
    assert!(actions.contains(&"query.reserve_reused"), "{actions:?}");
    let (_, metrics) = c.call(Method::GET, "/metrics", None, None).await;
    let metrics = metrics.as_str().unwrap();
    assert!(
        metrics.contains("# TYPE civic_releases_total counter"),
        "{metrics}"
    );
    assert!(!metrics.contains("civic_releases_total 0\n"), "{metrics}");
    c.stop().await;
}

/// Drives the test clock past a step's deadline whenever the round `round` stalls: it is
/// open, not every expected partner has answered, and nobody has answered for 100 ms. What
/// a dropout test would otherwise sleep through in real time.
fn expire_stalled_steps(c: &Coordinator, clock: Arc<TestClock>, round: i64) {
    let state = c.state.clone();
    actix_web::rt::spawn(async move {
        let mut last = None;
        let mut since = std::time::Instant::now();
        loop {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let Some(live) = state.rounds.get(round) else {
                if last.is_some() {
                    return;
                }
                continue;
            };
            let (responded, complete) = {
                let r = live.lock().await;
                (r.state.responded(), r.complete())
            };
            if last.as_ref() != Some(&responded) {
                last = Some(responded);
                since = std::time::Instant::now();
            } else if !complete && since.elapsed() > Duration::from_millis(100) {
                clock.advance(state.config.phase_deadline());
                since = std::time::Instant::now();
            }
        }
    });
}

#[actix_web::test]
async fn a_dropout_above_the_threshold_still_releases_and_below_it_aborts_and_refunds() {
    let clock = TestClock::new();
    let parts = Parts {
        clock: clock.clone(),
        ..Parts::default()
    };
    // The clock jumps a whole step deadline at a time: a lease longer than any jump keeps the
    // driver's writes within it.
    let config = civic_server::Config {
        driver_lease_secs: 3600.0,
        ..test_config(&fresh_store_url("dropout"))
    };
    let mut c = Coordinator::start_with_parts(config, parts).await;
    // Four partners: t = 3 (2t > n + 1 withstands one colluder), so one may drop out.
    c.add_partner("clinic-d").await;
    let ps = partners(&c).await;

    // One of four drops before sending its masked vector: t = 3 survive, and the sum is
    // theirs alone.
    let (_, q) = c.submit(count_query(60.0)).await;
    let (id, round) = (q["id"].as_i64().unwrap(), common::round_of(&q));
    expire_stalled_steps(&c, clock.clone(), round);
    let stops = [
        StopAt::Never,
        StopAt::BeforeMaskedInput,
        StopAt::Never,
        StopAt::Never,
    ];
    let values = [vec![10], vec![20], vec![12], vec![5]];
    let results = run_partners(&ps, round, &values, &stops).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let done = c.wait_done(id).await;
    assert_eq!(done["state"], "released", "{done}");
    assert_eq!(
        done["result"]["rows"][0][0]["value"].as_f64().unwrap(),
        27.0
    );
    assert_eq!(done["result"]["receipt"]["survivors"], 3);
    // A partner asking after the close (a retry whose reply was lost) learns it is over.
    let inbox = format!("/v1/partner/rounds/{round}/inbox");
    let (s, v) = c.call(Method::GET, &inbox, Some(&ps[0].token), None).await;
    assert_eq!(
        (s, &v["code"]),
        (StatusCode::CONFLICT, &json!("round.finished")),
        "{v}"
    );

    // Two of four drop: too few survivors; the reservation comes back.
    let before = budget(&c).await;
    let (_, q) = c.submit(age_histogram(60.0)).await;
    let (id, round) = (q["id"].as_i64().unwrap(), common::round_of(&q));
    expire_stalled_steps(&c, clock.clone(), round);
    let stops = [
        StopAt::Never,
        StopAt::BeforeMaskedInput,
        StopAt::BeforeMaskedInput,
        StopAt::Never,
    ];
    let _ = run_partners(
        &ps,
        round,
        &[vec![1, 1, 1], vec![2, 2, 2], vec![3, 3, 3], vec![4, 4, 4]],
        &stops,
    )
    .await;
    let done = c.wait_done(id).await;
    assert_eq!(done["state"], "aborted", "{done}");
    assert!(
        done["reason"].as_str().unwrap().contains("too few"),
        "{done}"
    );
    assert!(done["result"].is_null());
    let inbox = format!("/v1/partner/rounds/{round}/inbox");
    let (s, v) = c.call(Method::GET, &inbox, Some(&ps[0].token), None).await;
    assert_eq!(
        (s, &v["code"]),
        (StatusCode::CONFLICT, &json!("round.aborted")),
        "{v}"
    );
    let (s, v) = c
        .call(
            Method::GET,
            "/v1/partner/rounds/999999/inbox",
            Some(&ps[0].token),
            None,
        )
        .await;
    assert_eq!(
        (s, &v["code"]),
        (StatusCode::NOT_FOUND, &json!("not_found")),
        "{v}"
    );
    let after = budget(&c).await;
    assert_eq!(after["used_rho"], before["used_rho"], "refunded: {after}");
    assert_eq!(after["charged_rho"], before["charged_rho"]);
    let (_, v) = c
        .call(Method::GET, "/v1/audit/verify", Some(&c.board[0]), None)
        .await;
    assert_eq!(v["verified"], true, "{v}");
    c.stop().await;
}

#[actix_web::test]
async fn a_query_above_the_threshold_needs_two_distinct_board_members() {
    let c = Coordinator::start(&fresh_store_url("approval")).await;
    let ps = partners(&c).await;
    // ε = 75: ρ = 2812.5, above the policy's 2500 threshold.
    let (s, q) = c.submit(count_query(75.0)).await;
    assert_eq!(s, StatusCode::CREATED, "{q}");
    assert_eq!(q["state"], "awaiting_approval");
    assert_eq!(q["approvals_required"], 2);
    let id = q["id"].as_i64().unwrap();
    let path = format!("/v1/queries/{id}/decision");
    let yes = json!({ "approve": true, "reason": "protocol reviewed" });
    let (s, v) = c
        .call(Method::POST, &path, Some(&c.board[0]), Some(yes.clone()))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["state"], "awaiting_approval");
    // The same member twice still counts once.
    let (s, v) = c
        .call(Method::POST, &path, Some(&c.board[0]), Some(yes.clone()))
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert_eq!(v["code"], "query.already_decided");
    let (s, v) = c
        .call(Method::POST, &path, Some(&c.board[1]), Some(yes))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["state"], "running");
    let results = run_partners(
        &ps,
        common::round_of(&v),
        &[vec![1], vec![2], vec![3]],
        &[StopAt::Never; 3],
    )
    .await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let done = c.wait_done(id).await;
    assert_eq!(
        done["result"]["rows"][0][0]["value"].as_f64().unwrap(),
        6.0,
        "{done}"
    );
    assert_eq!(done["approvals"].as_array().unwrap().len(), 2);

    // A rejection ends a query and refunds it.
    let used = budget(&c).await["used_rho"].as_f64().unwrap();
    let (_, q) = c.submit(age_histogram(75.0)).await;
    let id = q["id"].as_i64().unwrap();
    assert!(
        common::close(&budget(&c).await["used_rho"], used + 2812.5),
        "reserved on submission"
    );
    let (s, v) = c
        .call(
            Method::POST,
            &format!("/v1/queries/{id}/decision"),
            Some(&c.board[1]),
            Some(json!({ "approve": false, "reason": "too broad" })),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["state"], "rejected");
    assert!(common::close(&budget(&c).await["used_rho"], used));
    c.stop().await;
}

#[actix_web::test]
async fn concurrent_submissions_that_together_overspend_admit_exactly_the_affordable_ones() {
    let c = Coordinator::start(&fresh_store_url("concurrent")).await;
    let _ps = partners(&c).await;
    // Project cap 8000, each query ρ = 1800: four fit, whatever the interleaving.
    let futures = (0..10).map(|i| {
        let body = json!({
            "project": "falls",
            "query": { "dataset": "city", "statistic": "count", "filter": { "compare": { "column": "age", "op": "ge", "value": i } } },
            "privacy": { "epsilon": 60.0 }
        });
        c.call(Method::POST, "/v1/queries", Some(&c.researcher), Some(body))
    });
    let results = futures_util::future::join_all(futures).await;
    let created = results
        .iter()
        .filter(|(s, _)| *s == StatusCode::CREATED)
        .count();
    let refused: Vec<&Value> = results
        .iter()
        .filter(|(s, _)| *s == StatusCode::CONFLICT)
        .map(|(_, v)| v)
        .collect();
    assert_eq!(created, 4, "{results:?}");
    assert_eq!(refused.len(), 6, "{results:?}");
    assert!(
        refused.iter().all(|v| v["code"] == "policy.over_budget"),
        "{refused:?}"
    );
    let b = budget(&c).await;
    assert!(common::close(&b["used_rho"], 4.0 * 1800.0), "{b}");
    // One more is refused too, and says which cap.
    let (s, v) = c.submit(count_query(60.0)).await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert!(
        v["detail"].as_str().unwrap().contains("project allocation"),
        "{v}"
    );
    c.stop().await;
}

#[actix_web::test]
async fn a_release_on_each_backend_is_stored_charged_and_audited() {
    // The HTTP path over PostgreSQL too (when CIVIC_TEST_POSTGRES_URL is set).
    for url in common::backends("release-backend").await {
        let c = Coordinator::start(&url).await;
        let ps = partners(&c).await;
        let (_, q) = c.submit(count_query(60.0)).await;
        let id = q["id"].as_i64().unwrap();
        let results = run_partners(
            &ps,
            common::round_of(&q),
            &[vec![7], vec![8], vec![9]],
            &[StopAt::Never; 3],
        )
        .await;
        assert!(results.iter().all(Result::is_ok), "{url}: {results:?}");
        let done = c.wait_done(id).await;
        assert_eq!(
            done["result"]["rows"][0][0]["value"].as_f64().unwrap(),
            24.0,
            "{url}: {done}"
        );
        assert!(
            common::close(&budget(&c).await["charged_rho"], 1800.0),
            "{url}"
        );
        let (_, v) = c
            .call(Method::GET, "/v1/audit/verify", Some(&c.board[0]), None)
            .await;
        assert_eq!(v["verified"], true, "{url}: {v}");
        c.stop().await;
        common::drop_schema(&url).await;
    }
}

#[actix_web::test]
async fn an_unmasked_sum_beyond_what_the_partners_can_add_up_to_is_not_released() {
    let c = Coordinator::start(&fresh_store_url("out-of-range")).await;
    let ps = partners(&c).await;
    let before = budget(&c).await;
    // Each partner adds at most 1,000,000 (the public row bound) to a count: one that sends
    // 5,000,000 (as a wrong share would leave garbage) makes the sum impossible.
    let (_, q) = c.submit(count_query(60.0)).await;
    let id = q["id"].as_i64().unwrap();
    let values = [vec![10], vec![5_000_000], vec![12]];
    let results = run_partners(&ps, common::round_of(&q), &values, &[StopAt::Never; 3]).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let done = c.wait_done(id).await;
    assert_eq!(done["state"], "aborted", "{done}");
    let reason = done["reason"].as_str().unwrap();
    assert!(reason.contains("outside what 3 partners"), "{done}");
    assert!(
        !reason.contains("5000"),
        "the un-noised sum is never shown: {reason}"
    );
    assert!(done["result"].is_null());
    let after = budget(&c).await;
    assert_eq!(after["used_rho"], before["used_rho"], "refunded: {after}");
    c.stop().await;
}

#[actix_web::test]
async fn a_partner_revealing_wrong_shares_gets_the_round_aborted_not_a_garbage_release() {
    let c = Coordinator::start(&fresh_store_url("wrong-shares")).await;
    let ps = partners(&c).await;
    let (_, q) = c.submit(count_query(60.0)).await;
    let id = q["id"].as_i64().unwrap();
    let stops = [StopAt::Never, StopAt::NeverButWrongShares, StopAt::Never];
    let values = [vec![10], vec![20], vec![12]];
    let results = run_partners(&ps, common::round_of(&q), &values, &stops).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let done = c.wait_done(id).await;
    assert_eq!(done["state"], "aborted", "{done}");
    // t = 3 of 3: with one holder's shares refuted by their owners' commitments, no seed can
    // be rebuilt, and the reason names who sent them.
    let reason = done["reason"].as_str().unwrap();
    assert!(
        reason.contains(&format!("wrong shares came from partner(s) {}", ps[1].id)),
        "{done}"
    );
    assert!(done["result"].is_null());
    c.stop().await;
}

#[actix_web::test]
async fn a_wrong_share_is_named_in_the_audit_log_and_the_round_recovers_from_the_others() {
    let mut c = Coordinator::start(&fresh_store_url("wrong-share-recovered")).await;
    // Four partners, t = 3: three honest holders of every seed remain.
    c.add_partner("clinic-d").await;
    let ps = partners(&c).await;
    let (_, q) = c.submit(count_query(60.0)).await;
    let id = q["id"].as_i64().unwrap();
    let stops = [
        StopAt::Never,
        StopAt::Never,
        StopAt::NeverButWrongShares,
        StopAt::Never,
    ];
    let values = [vec![10], vec![20], vec![12], vec![5]];
    let results = run_partners(&ps, common::round_of(&q), &values, &stops).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let done = c.wait_done(id).await;
    assert_eq!(done["state"], "released", "{done}");
    assert_eq!(done["result"]["receipt"]["survivors"], 4);
    let (_, log) = c
        .call(Method::GET, "/v1/audit?limit=1000", Some(&c.board[0]), None)
        .await;
    let release = log["records"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["action"] == "query.release")
        .expect("the release is audited");
    let details: Value = serde_json::from_str(release["details"].as_str().unwrap()).unwrap();
    let named: Vec<&str> = details["misbehaviour"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap())
        .collect();
    let culprit = format!("partner {} revealed a self-mask share", ps[2].id);
    assert_eq!(named.len(), 4, "one wrong share per owner: {named:?}");
    assert!(named.iter().all(|m| m.contains(&culprit)), "{named:?}");
    c.stop().await;
}

/// A linked dataset's queries are priced with the match counts' charge. A submission whose
/// joins would post more than the coordinator's message limit (the sample policy's trust
/// capacity, 1.5 million, for two housing associations, at the default 64 MiB) is refused,
/// saying what to change; one whose sides name partners the coordinator has no accounts for
/// is refused, naming one. Neither reserves anything. (Linked rounds run end to end in
/// `client-sdk/tests/linked.rs`.)
#[actix_web::test]
async fn linked_queries_are_priced_with_the_match_counts_and_checked_before_reserving() {
    let c = Coordinator::start(&fresh_store_url("linked")).await;
    let policy = civic_policies::samples::HOUSING_HEALTH_TOML;
    c.add_dataset_for_falls("housing-health", policy, 0.5).await;
    let query = json!({
        "project": "falls",
        "query": {
            "dataset": "housing-health",
            "statistic": {"histogram": {"columns": ["damp_mould_reported", "respiratory_admissions"]}},
        },
        "privacy": { "rho": 0.05 },
    });
    let (s, preview) = c
        .call(
            Method::POST,
            "/v1/queries/preview",
            Some(&c.researcher),
            Some(query.clone()),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{preview}");
    assert!(common::close(&preview["cost"]["rho"], 0.06), "{preview}");
    let (s, refused) = c.submit(query.clone()).await;
    assert_eq!(s, StatusCode::CONFLICT, "{refused}");
    assert_eq!(refused["code"], "round.too_large", "{refused}");
    assert!(
        refused["detail"].as_str().unwrap().contains("binary_limit"),
        "{refused}"
    );
    let smaller = policy.replace("capacity = 1500000", "capacity = 100000");
    let (s, body) = c
        .call(
            Method::PUT,
            "/v1/datasets/housing-health",
            Some(&c.board[0]),
            Some(json!({ "policy": smaller })),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    let (s, refused) = c.submit(query).await;
    assert_eq!(s, StatusCode::CONFLICT, "{refused}");
    assert_eq!(refused["code"], "round.partner_unknown", "{refused}");
    assert!(
        refused["detail"]
            .as_str()
            .unwrap()
            .contains("housing-north"),
        "{refused}"
    );
    let (s, b) = c
        .call(
            Method::GET,
            "/v1/budgets/housing-health",
            Some(&c.board[0]),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert!(common::close(&b["used_rho"], 0.0), "{b}");
    c.stop().await;
}
