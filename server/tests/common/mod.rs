//! A coordinator on loopback with a fresh store, accounts bootstrapped, and an HTTP client.
#![allow(dead_code)]

pub mod partner;

use std::net::TcpListener;
use std::sync::atomic::{AtomicU32, Ordering};

use actix_web::web;
use civic_api::Role;
use civic_server::{AppState, Config, Parts};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// A three-partner test dataset with a budget large enough for near-exact releases
/// (ε = 60 on a count of sensitivity 1 leaves P(noise ≠ 0) ≈ 2e⁻⁶⁰).
pub const CITY_TOML: &str = r#"
[dataset]
id = "city"
title = "City test cohort"
partners = ["trust-a", "council-b", "housing-c"]

[contribution]
rows_per_resident_per_partner = 1
max_partners_per_person = 1

[[columns]]
name = "age"
type = "integer"
min = 0
max = 119
bins = [0, 65, 80, 119]

[[columns]]
name = "fell"
type = "boolean"

[budget]
total = { rho = 10000.0 }
per_query = { rho = 5000.0 }
# Below the default floor (the total / 10 000), so that small target accuracies price freely.
min_per_query = { rho = 0.0001 }

[governance]
min_partners = 2
# These tests' partners speak the secure-sum protocol without adding noise shares: the
# coordinator noises centrally (client-sdk's tests run real agents with distributed noise).
noise = "central"

[governance.approval]
above = { rho = 2500.0 }
approvals_required = 2

[disclosure]
profile = "none"
"#;

/// Where the store lives: a fresh SQLite file, or a fresh schema on PostgreSQL.
pub fn fresh_store_url(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("civic-test-{}-{tag}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    format!("sqlite://{}", dir.join("civic.db").display())
}

/// A fresh SQLite file, and a fresh PostgreSQL schema if `CIVIC_TEST_POSTGRES_URL` is set.
pub async fn backends(tag: &str) -> Vec<String> {
    let mut urls = vec![fresh_store_url(tag)];
    if let Ok(base) = std::env::var("CIVIC_TEST_POSTGRES_URL") {
        urls.push(civic_server::store::scratch::postgres_schema(&base, tag).await);
    } else {
        eprintln!("CIVIC_TEST_POSTGRES_URL is not set: this test runs on SQLite only");
    }
    urls
}

/// Drops a test's PostgreSQL schema (a no-op for SQLite URLs).
pub async fn drop_schema(url: &str) {
    civic_server::store::scratch::drop_schema(url).await
}

/// Holds the store's write lock from outside the coordinator, as an operator's shell or a
/// backup would: on SQLite a `BEGIN IMMEDIATE` transaction (the database's one write lock);
/// on PostgreSQL a transaction holding the audit head's row lock, which every write
/// transaction that audits must take.
pub async fn hold_write_lock(url: &str) -> sqlx::AnyConnection {
    let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(url)
        .await
        .unwrap();
    if url.starts_with("sqlite:") {
        sqlx::raw_sql("BEGIN IMMEDIATE")
            .execute(&mut conn)
            .await
            .unwrap();
    } else {
        sqlx::raw_sql("BEGIN; SELECT seq FROM audit_head WHERE id = 1 FOR UPDATE")
            .execute(&mut conn)
            .await
            .unwrap();
    }
    conn
}

/// A GET over a plain TCP socket with `Connection: close` (for tests with no async runtime),
/// retried while the server starts; returns the whole response, head and body.
pub fn http_get(url: &str, token: &str) -> String {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    for _ in 0..100 {
        if let Ok(mut s) = std::net::TcpStream::connect(host) {
            let auth = if token.is_empty() {
                String::new()
            } else {
                format!("Authorization: Bearer {token}\r\n")
            };
            write!(
                s,
                "GET /{path} HTTP/1.1\r\nHost: {host}\r\n{auth}Connection: close\r\n\r\n"
            )
            .unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).unwrap();
            return out;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("{url} never answered");
}

/// A running coordinator and the tokens of its bootstrap accounts.
pub struct Coordinator {
    pub base: String,
    pub state: web::Data<AppState>,
    pub handle: actix_web::dev::ServerHandle,
    pub http: reqwest::Client,
    pub admin: String,
    pub board: Vec<String>,
    pub researcher: String,
    pub outsider: String,
    pub partners: Vec<(String, u32, String)>,
}

pub fn test_config(store_url: &str) -> Config {
    Config {
        store_url: store_url.to_string(),
        phase_deadline_secs: 20.0,
        tick_millis: 20,
        max_rows_per_partner: 1_000_000,
        driver_lease_secs: 2.0,
        ..Config::default()
    }
}

/// Starts a coordinator on `config`'s store and serves it on an ephemeral loopback port.
pub async fn serve(config: Config) -> (String, web::Data<AppState>, actix_web::dev::ServerHandle) {
    serve_with(config, Parts::default()).await
}

/// [`serve`] with a clock and protocols of the test's choosing.
pub async fn serve_with(
    config: Config,
    parts: Parts,
) -> (String, web::Data<AppState>, actix_web::dev::ServerHandle) {
    let state = AppState::open_with(config, parts)
        .await
        .expect("open the coordinator");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let server = civic_server::serve_listener(state.clone(), listener).unwrap();
    let handle = server.handle();
    actix_web::rt::spawn(server);
    (base, state, handle)
}

async fn create(state: &AppState, name: &str, role: Role) -> (String, Option<u32>) {
    let c = civic_server::service::governance::create(state, "test", name, role)
        .await
        .unwrap();
    (c.token, c.partner_id)
}

/// A coordinator on its own thread with its own actix system, as in production, so that
/// agents can run on the calling multi-threaded tokio runtime.
pub fn start_on_own_system(config: Config) -> Coordinator {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            tx.send(Coordinator::start_with(config).await).unwrap();
            std::future::pending::<()>().await;
        })
    });
    tokio::task::block_in_place(|| rx.recv().unwrap())
}

impl Coordinator {
    /// A coordinator with an admin, two board members, a researcher in project "falls",
    /// a researcher in no project, three partners, and the "city" dataset with an allocation.
    pub async fn start(store_url: &str) -> Self {
        Self::start_with(test_config(store_url)).await
    }

    pub async fn start_with(config: Config) -> Self {
        Self::start_with_parts(config, Parts::default()).await
    }

    /// [`Coordinator::start_with`] with a clock and protocols of the test's choosing.
    pub async fn start_with_parts(config: Config, parts: Parts) -> Self {
        let (base, state, handle) = serve_with(config, parts).await;
        let (admin, _) = create(&state, "root", Role::Admin).await;
        let board = vec![
            create(&state, "board-1", Role::Governance).await.0,
            create(&state, "board-2", Role::Governance).await.0,
        ];
        let (researcher, _) = create(&state, "rita", Role::Researcher).await;
        let (outsider, _) = create(&state, "oscar", Role::Researcher).await;
        let mut partners = Vec::new();
        for name in ["trust-a", "council-b", "housing-c"] {
            let (token, id) = create(&state, name, Role::Partner).await;
            partners.push((name.to_string(), id.unwrap(), token));
        }
        let c = Coordinator {
            base,
            state,
            handle,
            http: reqwest::Client::new(),
            admin,
            board,
            researcher,
            outsider,
            partners,
        };
        let (s, body) = c
            .call(
                Method::PUT,
                "/v1/datasets/city",
                Some(&c.board[0]),
                Some(json!({ "policy": CITY_TOML })),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{body}");
        let (s, body) = c
            .call(
                Method::POST,
                "/v1/projects",
                Some(&c.board[0]),
                Some(json!({ "id": "falls", "title": "Falls prevention", "members": ["rita"] })),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{body}");
        let (s, body) = c
            .call(
                Method::PUT,
                "/v1/projects/falls/allocations/city",
                Some(&c.board[0]),
                Some(json!({ "cap": { "rho": 8000.0 } })),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{body}");
        c
    }

    /// One JSON call: status and body (JSON, or the text as a JSON string).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.expect("request");
        let status = res.status();
        let text = res.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// Waits until query `id` leaves `running`, and returns its view.
    pub async fn wait_done(&self, id: i64) -> Value {
        for _ in 0..600 {
            let (s, v) = self
                .call(
                    Method::GET,
                    &format!("/v1/queries/{id}"),
                    Some(&self.researcher),
                    None,
                )
                .await;
            assert_eq!(s, StatusCode::OK, "{v}");
            if v["state"] != "running" && v["state"] != "awaiting_approval" {
                return v;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("query {id} did not finish");
    }

    /// Submits a query as the researcher.
    pub async fn submit(&self, body: Value) -> (StatusCode, Value) {
        self.call(
            Method::POST,
            "/v1/queries",
            Some(&self.researcher),
            Some(body),
        )
        .await
    }

    /// The three partners, each with a registered identity key, ready to take part.
    pub async fn register_partners(&self) -> Vec<partner::TestPartner> {
        let mut out = Vec::new();
        for (i, (_, id, token)) in self.partners.iter().enumerate() {
            out.push(partner::TestPartner::register(&self.base, token, *id, i as u8 + 1).await);
        }
        out
    }

    pub async fn stop(self) {
        self.handle.stop(true).await;
    }
}

/// The round a query view says its query runs as.
pub fn round_of(query: &Value) -> i64 {
    query["round_id"]
        .as_i64()
        .unwrap_or_else(|| panic!("no round in {query}"))
}

/// A count query on "city" for project "falls" at ε.
pub fn count_query(epsilon: f64) -> Value {
    json!({ "project": "falls", "query": { "dataset": "city", "statistic": "count" }, "privacy": { "epsilon": epsilon } })
}

/// A histogram of age bands (3 cells).
pub fn age_histogram(epsilon: f64) -> Value {
    json!({
        "project": "falls",
        "query": { "dataset": "city", "statistic": { "histogram": { "columns": ["age"] } } },
        "privacy": { "epsilon": epsilon }
    })
}

/// Costs are rounded up to the ledger's 10⁻¹² unit with a little slack, never down: compare
/// them to a relative 10⁻⁹.
pub fn close(actual: &Value, expected: f64) -> bool {
    let a = actual.as_f64().unwrap_or(f64::NAN);
    (a - expected).abs() <= 1e-9 * expected.abs().max(1.0)
}

/// The test board: three members (key seeds 201, 202, 203), threshold 2.
pub const BOARD_SEEDS: [u8; 3] = [201, 202, 203];

/// A board member's key.
pub fn board_key(seed: u8) -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::from_bytes(&[seed; 32])
}

/// The `[board]` section of an agent's configuration that trusts the test board.
pub fn board_toml() -> String {
    let keys: Vec<String> = BOARD_SEEDS
        .iter()
        .map(|&s| format!("{:?}", hex::encode(board_key(s).verifying_key().as_bytes())))
        .collect();
    format!("[board]\nthreshold = 2\nkeys = [{}]\n", keys.join(", "))
}

/// The partners' test identity keys (seeds 1, 2, 3, as `register_partners` uses): (name,
/// public key hex), for a manifest.
pub fn partner_keys(c: &Coordinator) -> Vec<(String, String)> {
    c.partners
        .iter()
        .enumerate()
        .map(|(i, (name, _, _))| {
            let key = civic_secagg::IdentityKey::from_seed(&[i as u8 + 1; 32]);
            (name.clone(), hex::encode(key.public().0))
        })
        .collect()
}

/// A coordinator with the test board's manifest (version 1, the three partners' test keys)
/// published by members 201 and 202, and its partners registered.
pub async fn federation(tag: &str) -> (Coordinator, Vec<partner::TestPartner>) {
    let c = Coordinator::start(&fresh_store_url(tag)).await;
    let (s, v) = c
        .publish(&signed(
            city_manifest(&partner_keys(&c), CITY_TOML),
            &[201, 202],
        ))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let ps = c.register_partners().await;
    (c, ps)
}

/// Version 1 of the test federation's manifest: `partners` (name, identity key hex) and the
/// "city" policy, signed by `signers` of the test board.
pub fn city_manifest(
    partners: &[(String, String)],
    city_toml: &str,
) -> civic_policies::manifest::Manifest {
    use civic_policies::manifest::*;
    let city = civic_policies::DatasetPolicy::from_toml(city_toml, "city").unwrap();
    Manifest {
        federation: "test city".into(),
        version: 1,
        previous: None,
        board: Board {
            threshold: 2,
            members: BOARD_SEEDS
                .iter()
                .map(|&s| BoardMember {
                    name: format!("member-{s}"),
                    key: hex::encode(board_key(s).verifying_key().as_bytes()),
                })
                .collect(),
        },
        requirements: RoundRequirements {
            tolerated_colluders: 1,
            min_survivors: 2,
            min_rho_per_query: 1e-4,
            max_rounds_per_dataset_per_day: 1000,
        },
        partners: partners
            .iter()
            .map(|(name, key)| ManifestPartner {
                name: name.clone(),
                organisation: format!("{name} (test)"),
                identity_key: key.clone(),
            })
            .collect(),
        datasets: vec![ManifestDataset {
            id: "city".into(),
            policy_digest: policy_digest(&city.file),
        }],
    }
}

/// `manifest` with dataset `id`'s policy (TOML text) signed in too.
pub fn with_dataset(
    mut manifest: civic_policies::manifest::Manifest,
    id: &str,
    policy: &str,
) -> civic_policies::manifest::Manifest {
    let parsed = civic_policies::DatasetPolicy::from_toml(policy, id).unwrap();
    manifest
        .datasets
        .push(civic_policies::manifest::ManifestDataset {
            id: id.into(),
            policy_digest: civic_policies::manifest::policy_digest(&parsed.file),
        });
    manifest
}

/// `manifest` with the signatures of the board members with these seeds.
pub fn signed(
    manifest: civic_policies::manifest::Manifest,
    signers: &[u8],
) -> civic_policies::manifest::SignedManifest {
    let message = manifest.signing_message();
    civic_policies::manifest::SignedManifest {
        signatures: signers
            .iter()
            .map(|&s| civic_policies::manifest::sign(&board_key(s), &message))
            .collect(),
        manifest,
    }
}

impl Coordinator {
    /// The "city" policy listing every partner account of this coordinator.
    pub fn city_toml(&self) -> String {
        let names: Vec<String> = self.partners.iter().map(|p| format!("{:?}", p.0)).collect();
        CITY_TOML.replace(
            r#"partners = ["trust-a", "council-b", "housing-c"]"#,
            &format!("partners = [{}]", names.join(", ")),
        )
    }

    /// Adds a partner account and lists it in "city" (a new policy version). Four partners
    /// survive one dropout; three cannot, since every round withstands one colluder
    /// (2t > n + 1 gives t = 3 of 3).
    pub async fn add_partner(&mut self, name: &str) {
        let (token, id) = create(&self.state, name, Role::Partner).await;
        self.partners.push((name.to_string(), id.unwrap(), token));
        let (s, body) = self
            .call(
                Method::PUT,
                "/v1/datasets/city",
                Some(&self.board[0]),
                Some(json!({ "policy": self.city_toml() })),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{body}");
    }

    /// Uploads `policy` as dataset `id` as board member 1, and gives project "falls" a cap
    /// of `rho` on it.
    pub async fn add_dataset_for_falls(&self, id: &str, policy: &str, rho: f64) {
        let (s, body) = self
            .call(
                Method::PUT,
                &format!("/v1/datasets/{id}"),
                Some(&self.board[0]),
                Some(json!({ "policy": policy })),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{body}");
        let (s, body) = self
            .call(
                Method::PUT,
                &format!("/v1/projects/falls/allocations/{id}"),
                Some(&self.board[0]),
                Some(json!({ "cap": { "rho": rho } })),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{body}");
    }

    /// Publishes a signed manifest as board member 1; returns the status and body.
    pub async fn publish(
        &self,
        signed: &civic_policies::manifest::SignedManifest,
    ) -> (StatusCode, Value) {
        self.call(
            Method::PUT,
            "/v1/manifests",
            Some(&self.board[0]),
            Some(serde_json::to_value(signed).unwrap()),
        )
        .await
    }

    /// A board member's approval of query `id`, signed over its fingerprint.
    pub async fn approve_signed(&self, id: i64, seed: u8, account: usize) -> (StatusCode, Value) {
        let (_, q) = self
            .call(
                Method::GET,
                &format!("/v1/queries/{id}"),
                Some(&self.board[0]),
                None,
            )
            .await;
        let fingerprint = q["fingerprint"].as_str().unwrap().to_string();
        let signature = civic_policies::manifest::sign(
            &board_key(seed),
            &civic_policies::manifest::approval_message(&fingerprint),
        );
        self.call(
            Method::POST,
            &format!("/v1/queries/{id}/decision"),
            Some(&self.board[account]),
            Some(json!({ "approve": true, "reason": "proportionate", "signature": signature })),
        )
        .await
    }
}
