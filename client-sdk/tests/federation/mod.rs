//! What the agent tests of training jobs share: a dataset policy and a partner's
//! configuration around their own columns and mappings, and agents polling on their own
//! while a test waits for a query, as each `civic-agent run` does (an agent that has
//! finished a round looks for the next without waiting for the others; a test that polled
//! them in lock-step could leave some waiting in a round for an agent that looked too early,
//! until the phase's deadline).

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use civic_client_sdk::agent::{Agent, RoundOutcome};
use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::common::{self, Coordinator};

/// Dataset `id` held by `partners`, one row per resident at one partner, with `columns`
/// (`[[columns]]` tables), a budget of ρ = 10,000 (5,000 a query), two partners at least,
/// approvals above ρ = 2,500; noise at the partners unless `central`.
pub fn policy(id: &str, title: &str, partners: &[String], central: bool, columns: &str) -> String {
    let names: Vec<String> = partners.iter().map(|p| format!("{p:?}")).collect();
    format!(
        r#"
[dataset]
id = "{id}"
title = "{title}"
partners = [{}]

[contribution]
rows_per_resident_per_partner = 1
max_partners_per_person = 1
{columns}
[budget]
total = {{ rho = 10000.0 }}
per_query = {{ rho = 5000.0 }}
min_per_query = {{ rho = 0.0001 }}

[governance]
min_partners = 2
{}
[governance.approval]
above = {{ rho = 2500.0 }}
approvals_required = 2

[disclosure]
profile = "none"
"#,
        names.join(", "),
        if central { "noise = \"central\"\n" } else { "" }
    )
}

/// Writes a partner's token (readable by its owner only, as the agent insists), identity
/// key and `partner.toml` into `dir`, for coordinator `base`, a local total of `total_rho`,
/// and `datasets` (its `[[datasets]]` tables); returns the identity's public key.
pub fn partner(dir: &Path, base: &str, token: &str, total_rho: f64, datasets: &str) -> String {
    std::fs::write(dir.join("token"), token).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let private = std::fs::Permissions::from_mode(0o600);
        std::fs::set_permissions(dir.join("token"), private).unwrap();
    }
    let key = civic_client_sdk::identity::generate(&dir.join("identity.key")).unwrap();
    let board = common::board_toml();
    let config = format!(
        r#"
identity_key = "identity.key"
state_dir = "state"

{board}
[coordinator]
url = "{base}"
token_file = "token"
poll_seconds = 0.2

[limits]
max_rho_per_query = 100000.0
total_rho = {total_rho}
min_survivors = 2
{datasets}"#
    );
    std::fs::write(dir.join("partner.toml"), config).unwrap();
    key
}

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

/// The public register's page of the release a finished query `done` made.
pub async fn register_page(c: &Coordinator, done: &Value) -> String {
    let release = done["result"]["release_id"].as_i64().unwrap();
    let page = c
        .http
        .get(format!("{}/ui/releases/{release}", c.base))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    page.text().await.unwrap()
}
