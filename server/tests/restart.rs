//! A coordinator killed mid-round restarts from the same SQLite file into a consistent
//! state: the round resumes from its stored messages, the release is made once, and the
//! budget is charged once. The driver lease lapses by a test clock, not by waiting.

mod common;

use std::net::TcpListener;
use std::time::Duration;

use civic_server::clock::TestClock;
use civic_server::store::rounds::{self, RoundState};
use civic_server::{AppState, Parts};
use common::partner::StopAt;
use common::{Coordinator, count_query, fresh_store_url, test_config};
use reqwest::{Method, StatusCode};

#[actix_web::test]
async fn a_round_survives_a_coordinator_restart_and_is_charged_once() {
    let url = fresh_store_url("restart");
    let clock = TestClock::new();
    let parts = || Parts {
        clock: clock.clone(),
        ..Parts::default()
    };
    let c = Coordinator::start_with_parts(test_config(&url), parts()).await;
    let ps = c.register_partners().await;
    let (s, q) = c.submit(count_query(60.0)).await;
    assert_eq!(s, StatusCode::CREATED, "{q}");
    let (id, round) = (q["id"].as_i64().unwrap(), common::round_of(&q));

    let partners = actix_web::rt::spawn(async move {
        let inputs = [vec![3], vec![4], vec![5]];
        let futures = ps
            .iter()
            .zip(inputs.iter())
            .map(|(p, x)| p.take_part(round, x, StopAt::Never));
        futures_util::future::join_all(futures).await
    });
    // Kill the coordinator once the masked vectors are in (the round is past
    // MaskedInputCollection), with no graceful shutdown.
    let partner_token = c.partners[0].2.clone();
    loop {
        let (_, rounds) = c
            .call(
                Method::GET,
                "/v1/partner/rounds",
                Some(&partner_token),
                None,
            )
            .await;
        let phase = rounds["rounds"][0]["phase"]
            .as_str()
            .unwrap_or("")
            .to_string();
        if phase == "consistency_check" || phase == "unmasking" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let addr = c.base.trim_start_matches("http://").to_string();
    // Stop answering first (a dead process answers nothing), then stop driving rounds.
    c.handle.stop(false).await;
    c.state.rounds.halt();
    let (researcher, board) = (c.researcher.clone(), c.board[0].clone());

    // A new coordinator on the same file and port. The dead one's driver lease has not
    // lapsed yet: a partner polling now is told to retry (503), never handed a list without
    // the open round (a cron `civic-agent once` would then miss it).
    let state = AppState::open_with(test_config(&url), parts())
        .await
        .unwrap();
    assert!(!state.rounds.drives());
    let listener = TcpListener::bind(&addr).unwrap();
    let server = civic_server::serve_listener(state.clone(), listener).unwrap();
    let handle = server.handle();
    actix_web::rt::spawn(server);
    let http = reqwest::Client::new();
    let poll = || async {
        let res = http
            .get(format!("http://{addr}/v1/partner/rounds"))
            .bearer_auth(&partner_token)
            .send()
            .await
            .unwrap();
        let (status, retry) = (res.status(), res.headers().get("retry-after").cloned());
        (
            status,
            retry,
            res.json::<serde_json::Value>().await.unwrap(),
        )
    };
    let (status, retry, body) = poll().await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(retry.unwrap(), "1");
    assert_eq!(body["code"], "round.not_driven_here", "{body}");
    // The lease lapses (by the clock): the new coordinator takes over at its next renewal
    // and rebuilds the open round from the store.
    clock.advance(Duration::from_secs(3));
    for attempt in 0.. {
        assert!(attempt < 200, "the new coordinator never adopted the round");
        // Until it has, still 503; never a list without the open round.
        let (status, _, body) = poll().await;
        match status {
            StatusCode::SERVICE_UNAVAILABLE => {
                assert_eq!(body["code"], "round.not_driven_here", "{body}")
            }
            // A list comes from the new driver only: it has adopted the round. The round is
            // missing from it only if it has moved past this partner since (closing or
            // finished: the other partners can finish it between two polls).
            StatusCode::OK => {
                if body["rounds"][0]["round_id"] != round {
                    assert!(past_this_partner(&state, round).await, "{body}");
                }
                break;
            }
            other => panic!("{other} {body}"),
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(state.rounds.drives());

    let results = partners.await.unwrap();
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let get = |path: String, token: String| {
        let http = http.clone();
        let addr = addr.clone();
        async move {
            http.get(format!("http://{addr}{path}"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .json::<serde_json::Value>()
                .await
                .unwrap()
        }
    };
    let mut view = serde_json::Value::Null;
    for _ in 0..400 {
        view = get(format!("/v1/queries/{id}"), researcher.clone()).await;
        if view["state"] != "running" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(view["state"], "released", "{view}");
    assert_eq!(
        view["result"]["rows"][0][0]["value"].as_f64().unwrap(),
        12.0
    );
    let budget = get("/v1/budgets/city".into(), board.clone()).await;
    assert!(
        common::close(&budget["charged_rho"], 1800.0),
        "charged once: {budget}"
    );
    assert!(
        common::close(&budget["used_rho"], 1800.0),
        "no reservation leaked: {budget}"
    );
    let verify = get("/v1/audit/verify".into(), board).await;
    assert_eq!(verify["verified"], true, "{verify}");
    handle.stop(true).await;
}

/// Whether `round` no longer waits for partners: closing here, or no longer open in the store.
async fn past_this_partner(state: &AppState, round: i64) -> bool {
    if let Some(live) = state.rounds.get(round) {
        return live.lock().await.closing;
    }
    let mut conn = state.store.read().await.unwrap();
    rounds::state(&mut conn, round).await.unwrap() != Some(RoundState::Open)
}

#[actix_web::test]
async fn a_coordinator_that_does_not_drive_rounds_leaves_them_to_the_one_that_does() {
    let url = fresh_store_url("replicas");
    let driver = Coordinator::start(&url).await;
    let ps = driver.register_partners().await;
    // A second coordinator on the same store, serving researchers only.
    let mut config = test_config(&url);
    config.drive_rounds = false;
    let (replica, replica_state, replica_handle) = common::serve(config).await;
    let http = reqwest::Client::new();
    let res = http
        .post(format!("{replica}/v1/queries"))
        .bearer_auth(&driver.researcher)
        .json(&count_query(60.0))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let q: serde_json::Value = res.json().await.unwrap();
    let (id, round) = (q["id"].as_i64().unwrap(), common::round_of(&q));
    assert_eq!(
        replica_state.rounds.count(),
        0,
        "the replica does not drive the round"
    );
    // A partner asking the replica for its rounds is told to retry, not handed an empty list.
    let res = http
        .get(format!("{replica}/v1/partner/rounds"))
        .bearer_auth(&ps[0].token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["code"], "round.not_driven_here", "{body}");
    // A second coordinator configured to drive rounds defers to the lease holder.
    let (_, rival, rival_handle) = common::serve(test_config(&url)).await;
    assert!(driver.state.rounds.drives());
    assert!(
        !rival.rounds.drives(),
        "two coordinators drive rounds at once"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !rival.rounds.drives() && rival.rounds.count() == 0,
        "the rival took rounds from a live driver"
    );
    // The driving coordinator adopts it from the store; partners talk to it.
    let inputs = [vec![1], vec![2], vec![3]];
    let futures = ps
        .iter()
        .zip(inputs.iter())
        .map(|(p, x)| p.take_part(round, x, StopAt::Never));
    let results = futures_util::future::join_all(futures).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let done = driver.wait_done(id).await;
    assert_eq!(
        done["result"]["rows"][0][0]["value"].as_f64().unwrap(),
        6.0,
        "{done}"
    );
    // Both coordinators serve the same result.
    let res = http
        .get(format!("{replica}/v1/queries/{id}"))
        .bearer_auth(&driver.researcher)
        .send()
        .await
        .unwrap();
    let seen: serde_json::Value = res.json().await.unwrap();
    assert_eq!(seen["result"]["rows"], done["result"]["rows"]);
    replica_handle.stop(true).await;
    rival_handle.stop(true).await;
    rival.rounds.halt();
    driver.stop().await;
}
