//! A protocol the driver has never seen runs end to end over HTTP without any change to the
//! driver: "count the partners", registered by this test as the protocol statistic rounds
//! run with. Each partner posts `here`; closing the one step sums one per partner. The
//! announcement names the protocol and its step, a malformed or repeated message is refused
//! as the protocol says, the round survives a coordinator restart (replayed from the store
//! by the same driver), and the query is released, charged and audited as any other.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use actix_web::web::Bytes;
use civic_secagg::PartnerId;
use civic_server::clock::TestClock;
use civic_server::rounds::{
    Closed, Protocol, ProtocolError, ProtocolRound, Protocols, RoundOutput,
};
use civic_server::store::RoundSetup;
use civic_server::{AppState, Parts};
use common::{Coordinator, count_query, fresh_store_url, test_config};
use reqwest::{Method, StatusCode};
use serde_json::Value;

const NAME: &str = "count-partners/test";

struct CountPartners;

impl Protocol for CountPartners {
    fn name(&self) -> &'static str {
        NAME
    }

    fn steps(&self) -> &'static [&'static str] {
        &["count"]
    }

    fn start(
        &self,
        round: i64,
        setup: &RoundSetup,
    ) -> Result<Box<dyn ProtocolRound>, ProtocolError> {
        Ok(Box::new(Counting {
            round,
            participants: setup.config.participants.iter().copied().collect(),
            quorum: setup.config.min_survivors,
            vector_len: setup.config.vector_len,
            counted: BTreeSet::new(),
        }))
    }
}

#[derive(Clone)]
struct Counting {
    round: i64,
    participants: BTreeSet<PartnerId>,
    quorum: usize,
    vector_len: usize,
    counted: BTreeSet<PartnerId>,
}

impl ProtocolRound for Counting {
    fn step(&self) -> &'static str {
        "count"
    }

    fn receive(&mut self, partner: PartnerId, body: &[u8]) -> Result<(), ProtocolError> {
        self.check(partner, body)?;
        self.counted.insert(partner);
        Ok(())
    }

    fn step_of(&self, _: PartnerId, body: &[u8]) -> Result<&'static str, ProtocolError> {
        if body != b"here" {
            return Err(ProtocolError::Malformed {
                round: self.round,
                reason: "say \"here\"".into(),
            });
        }
        Ok("count")
    }

    fn check(&self, partner: PartnerId, body: &[u8]) -> Result<(), ProtocolError> {
        self.step_of(partner, body)?;
        if !self.participants.contains(&partner) {
            return Err(ProtocolError::Refused(format!(
                "{partner} is not counted here"
            )));
        }
        if self.counted.contains(&partner) {
            return Err(ProtocolError::Refused(format!(
                "{partner} was counted already"
            )));
        }
        Ok(())
    }

    fn responded(&self) -> BTreeSet<PartnerId> {
        self.counted.clone()
    }

    fn close_step(&mut self) -> Result<Closed, ProtocolError> {
        if self.counted.len() < self.quorum {
            return Err(ProtocolError::Refused(format!(
                "{} partners counted, {} needed",
                self.counted.len(),
                self.quorum
            )));
        }
        let mut sum = vec![0; self.vector_len];
        sum[0] = self.counted.len() as i64;
        Ok(Closed::Finished(RoundOutput {
            sum,
            contributors: self.counted.iter().copied().collect(),
            misbehaviour: Vec::new(),
            linked_pairs: None,
        }))
    }

    fn inbox(&self, _: PartnerId) -> Result<Bytes, ProtocolError> {
        Ok(Bytes::from_static(b"nothing to read"))
    }

    fn box_clone(&self) -> Box<dyn ProtocolRound> {
        Box::new(self.clone())
    }
}

fn parts(clock: &Arc<TestClock>) -> Parts {
    Parts {
        clock: clock.clone(),
        protocols: Protocols::new(Arc::new(CountPartners)),
    }
}

async fn post(
    c: &Coordinator,
    round: i64,
    token: &str,
    body: &'static [u8],
) -> (StatusCode, String) {
    let res = c
        .http
        .post(format!("{}/v1/partner/rounds/{round}/messages", c.base))
        .bearer_auth(token)
        .body(body)
        .send()
        .await
        .unwrap();
    (res.status(), res.text().await.unwrap())
}

#[actix_web::test]
async fn a_new_protocol_runs_end_to_end_through_the_unchanged_driver() {
    let url = fresh_store_url("protocol");
    let clock = TestClock::new();
    let c = Coordinator::start_with_parts(test_config(&url), parts(&clock)).await;
    c.register_partners().await;
    let (s, q) = c.submit(count_query(60.0)).await;
    assert_eq!(s, StatusCode::CREATED, "{q}");
    let (id, round) = (q["id"].as_i64().unwrap(), common::round_of(&q));

    // Partners see the round with its protocol and step.
    let token = |i: usize| c.partners[i].2.clone();
    let (s, list) = c
        .call(Method::GET, "/v1/partner/rounds", Some(&token(0)), None)
        .await;
    assert_eq!(s, StatusCode::OK, "{list}");
    let ann = &list["rounds"][0];
    assert_eq!(
        (ann["round_id"].as_i64(), ann["query_id"].as_i64()),
        (Some(round), Some(id))
    );
    assert_eq!(ann["protocol"], NAME);
    assert_eq!(ann["phase"], "count");

    // The protocol's own refusals reach the partner as problem+json.
    let (s, v) = post(&c, round, &token(0), b"who?").await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(v.contains("protocol.malformed") && v.contains("say"), "{v}");
    for i in 0..2 {
        let (s, v) = post(&c, round, &token(i), b"here").await;
        assert_eq!(s, StatusCode::NO_CONTENT, "{v}");
    }
    // A repeat of the same bytes is the same message (a retry), accepted once.
    let (s, v) = post(&c, round, &token(0), b"here").await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{v}");

    // The coordinator dies with two of three counted; another takes over once the first
    // one's lease has lapsed (by the test clock, no waiting) and rebuilds the round by
    // replaying the stored messages through the protocol.
    let addr = c.base.trim_start_matches("http://").to_string();
    c.handle.stop(false).await;
    c.state.rounds.halt();
    clock.advance(Duration::from_secs(10));
    let state = AppState::open_with(test_config(&url), parts(&clock))
        .await
        .unwrap();
    assert!(
        state.rounds.drives(),
        "the lapsed lease was taken over at once"
    );
    assert_eq!(state.rounds.count(), 1, "the open round was adopted");
    let listener = std::net::TcpListener::bind(&addr).unwrap();
    let server = civic_server::serve_listener(state.clone(), listener).unwrap();
    let handle = server.handle();
    actix_web::rt::spawn(server);
    let (s, v) = post(&c, round, &token(2), b"here").await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{v}");

    let done = c.wait_done(id).await;
    assert_eq!(done["state"], "released", "{done}");
    assert_eq!(
        done["result"]["rows"][0][0]["value"].as_f64(),
        Some(3.0),
        "three partners counted: {done}"
    );
    assert_eq!(done["result"]["receipt"]["survivors"], 3);
    assert_eq!(state.rounds.unmasked_sum(id), Some(vec![3]));
    let (_, budget) = c
        .call(Method::GET, "/v1/budgets/city", Some(&c.board[0]), None)
        .await;
    assert!(common::close(&budget["charged_rho"], 1800.0), "{budget}");
    let (_, verify) = c
        .call(Method::GET, "/v1/audit/verify", Some(&c.board[0]), None)
        .await;
    assert_eq!(verify["verified"], Value::Bool(true), "{verify}");
    handle.stop(true).await;
}

/// A coordinator whose counting round (query `id`, round `round`) partner 0 has answered.
/// The lease outlasts any jump of the test clock past a step deadline.
async fn counted_by_one(clock: &Arc<TestClock>, tag: &str) -> (Coordinator, i64, i64) {
    let config = civic_server::Config {
        driver_lease_secs: 3600.0,
        ..test_config(&fresh_store_url(tag))
    };
    let c = Coordinator::start_with_parts(config, parts(clock)).await;
    c.register_partners().await;
    let (_, q) = c.submit(count_query(60.0)).await;
    let (id, round) = (q["id"].as_i64().unwrap(), common::round_of(&q));
    let (s, v) = post(&c, round, &c.partners[0].2, b"here").await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{v}");
    (c, id, round)
}

#[actix_web::test]
async fn a_step_that_times_out_short_of_its_quorum_aborts_and_refunds() {
    let clock = TestClock::new();
    let (c, id, _) = counted_by_one(&clock, "protocol-abort").await;
    // The step's deadline passes by the test clock: the driver closes it with one of the
    // two partners the policy requires, and the round aborts.
    clock.advance(Duration::from_secs(21));
    let done = c.wait_done(id).await;
    assert_eq!(done["state"], "aborted", "{done}");
    assert!(
        done["reason"]
            .as_str()
            .unwrap()
            .contains("1 partners counted, 2 needed"),
        "{done}"
    );
    let (_, budget) = c
        .call(Method::GET, "/v1/budgets/city", Some(&c.board[0]), None)
        .await;
    assert!(
        common::close(&budget["used_rho"], 0.0),
        "refunded: {budget}"
    );
    c.stop().await;
}

#[actix_web::test]
async fn a_stored_message_the_round_never_took_is_taken_before_its_step_closes() {
    let clock = TestClock::new();
    let (c, id, round) = counted_by_one(&clock, "protocol-catch-up").await;
    // Partner 1's message reached the store but not the round: its transaction committed
    // and then reported failure, so its poster was told to retry and never did.
    let partner = c.partners[1].1;
    c.state
        .store
        .run_tx("store a message behind the round's back", async |tx| {
            civic_server::store::rounds::insert_message(tx, round, "count", partner, b"here").await
        })
        .await
        .unwrap();
    // At the deadline the round takes what the store holds (a restart would replay it),
    // so the step closes with both partners and releases instead of aborting.
    clock.advance(Duration::from_secs(21));
    let done = c.wait_done(id).await;
    assert_eq!(done["state"], "released", "{done}");
    assert_eq!(c.state.rounds.unmasked_sum(id), Some(vec![2]), "{done}");
    c.stop().await;
}
