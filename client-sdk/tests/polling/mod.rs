//! Agents polling on their own while a test waits for a query, as each `civic-agent run`
//! does: an agent that has finished a round looks for the next without waiting for the
//! others (a test that polled them in lock-step could leave some waiting in a round for an
//! agent that looked too early, until the phase's deadline).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use civic_client_sdk::agent::{Agent, RoundOutcome};
use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::common::Coordinator;

/// Runs the agents, each polling every 20 ms, until query `id` leaves `running` (at most
/// two minutes); returns its view and each agent's round outcomes in order (rounds it had
/// finished and saw listed again are left out).
pub async fn until_done(
    c: &Coordinator,
    agents: &[Arc<Agent>],
    id: i64,
) -> (Value, Vec<Vec<(i64, RoundOutcome)>>) {
    let stop = Arc::new(AtomicBool::new(false));
    let outcomes = Arc::new(Mutex::new(vec![Vec::new(); agents.len()]));
    let polling: Vec<_> = agents
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let (a, stop, outcomes) = (Arc::clone(a), Arc::clone(&stop), Arc::clone(&outcomes));
            tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    let seen = a.once().await.unwrap();
                    outcomes.lock().unwrap()[i].extend(
                        seen.into_iter()
                            .filter(|(_, o)| *o != RoundOutcome::Skipped),
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
        })
        .collect();
    let started = Instant::now();
    let q = loop {
        let (s, q) = c
            .call(
                Method::GET,
                &format!("/v1/queries/{id}"),
                Some(&c.researcher),
                None,
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{q}");
        if q["state"] != "running" {
            break q;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "query {id} did not finish: {q}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    stop.store(true, Ordering::SeqCst);
    for p in polling {
        p.await.unwrap();
    }
    let outcomes = outcomes.lock().unwrap().clone();
    (q, outcomes)
}
