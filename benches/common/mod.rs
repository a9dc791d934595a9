//! What the loopback-HTTP benches share: a real coordinator on its own actix thread, the
//! board's setup of one dataset with `n` registered partners, and the partner-side calls.
#![allow(dead_code)] // each bench uses a different part

use std::net::TcpListener;
use std::time::Duration;

use actix_web::web;
use civic_api::Role;
use civic_api::decode_binary;
use civic_api::round::{Inbox, RoundAnnouncement};
use civic_secagg::{IdentityKey, PartnerId, Roster};
use civic_server::{AppState, Config};
use serde_json::{Value, json};

pub struct Partner {
    pub id: PartnerId,
    pub token: String,
    pub key: IdentityKey,
}

pub struct Bench {
    pub base: String,
    pub http: reqwest::Client,
    pub researcher: String,
    pub partners: Vec<Partner>,
}

impl Bench {
    /// Every partner's identity key, as each partner would fetch it from the roster.
    pub fn roster(&self) -> Roster {
        self.partners
            .iter()
            .map(|p| (p.id, p.key.public()))
            .collect()
    }
}

/// A dataset `bench` held by `partners` partners (`p000`, `p001`, …), with one integer column
/// per `(name, bins)` of unit-width bins over `0..bins`. Budgets are large: the benches
/// measure time, not privacy.
pub fn policy_toml(partners: usize, columns: &[(&str, usize)]) -> String {
    let names: Vec<String> = (0..partners).map(|i| format!("\"p{i:03}\"")).collect();
    let columns: String = columns
        .iter()
        .map(|(name, bins)| {
            let edges: Vec<String> = (0..=*bins).map(|i| i.to_string()).collect();
            format!(
                "[[columns]]\nname = \"{name}\"\ntype = \"integer\"\nmin = 0\nmax = {bins}\nbins = [{}]\n\n",
                edges.join(", ")
            )
        })
        .collect();
    // Central noise: the benches' partners send their exact vectors through the secure-sum
    // protocol (what is measured is the masking), and check the unmasked sum against them.
    format!(
        "[dataset]\nid = \"bench\"\ntitle = \"Bench\"\npartners = [{}]\n\n\
         [contribution]\nrows_per_resident_per_partner = 1\nmax_partners_per_person = 1\n\n\
         {columns}\
         [budget]\ntotal = {{ rho = 1000000.0 }}\nper_query = {{ rho = 100000.0 }}\nmin_per_query = {{ rho = 0.0001 }}\n\n\
         [governance]\nmin_partners = 2\nnoise = \"central\"\n\n[disclosure]\nprofile = \"none\"\n",
        names.join(", "),
    )
}

/// A JSON call that must succeed.
pub async fn call(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    token: &str,
    body: Option<Value>,
) -> Value {
    let mut req = http.request(method, url).bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let res = req.send().await.unwrap();
    let status = res.status();
    let v: Value = res.json().await.unwrap();
    assert!(status.is_success(), "{status} {v}");
    v
}

/// A binary post that must succeed.
pub async fn post(http: &reqwest::Client, url: &str, token: &str, body: Vec<u8>) {
    let res = http
        .post(url)
        .bearer_auth(token)
        .body(body)
        .send()
        .await
        .unwrap();
    assert!(
        res.status().is_success(),
        "{} {}",
        res.status(),
        res.text().await.unwrap()
    );
}

/// The tolerances a bench's rounds are configured for: dropouts, then colluding partners
/// (fractions of the partners).
pub type Tolerated = (f64, f64);

/// Starts a coordinator on its own actix system thread (phases close as soon as every
/// partner has answered; the driver's idle tick is `tick_millis`).
pub fn start_coordinator(
    store_url: String,
    tick_millis: u64,
    (max_dropout_rate, max_corrupt_fraction): Tolerated,
) -> (String, web::Data<AppState>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let config = Config {
                store_url,
                json_limit: 1 << 20,
                tick_millis,
                max_rows_per_partner: 1_000_000,
                max_dropout_rate,
                max_corrupt_fraction,
                // A thousand simulated partners share two cores here, so a step takes about a
                // thousand times one partner's work (a minute for the Feldman checks before
                // unmasking at n = 1000, 0.1 s each); a deployed partner has its own machine.
                phase_deadline_secs: 600.0,
                ..Config::default()
            };
            let state = AppState::open(config).await.unwrap();
            let server = civic_server::serve_listener(state.clone(), listener).unwrap();
            tx.send(state).unwrap();
            server.await.unwrap();
        })
    });
    (base, rx.recv().unwrap())
}

/// The board's setup: accounts, the dataset, a project `b` for researcher `rita` with a
/// large allocation, and `partners` partners with registered identity keys.
pub async fn setup(
    base: String,
    state: &web::Data<AppState>,
    policy: String,
    partners: usize,
) -> Bench {
    use civic_server::service::governance::create;
    let board = create(state, "bench", "board", Role::Governance)
        .await
        .unwrap()
        .token;
    let researcher = create(state, "bench", "rita", Role::Researcher)
        .await
        .unwrap()
        .token;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(128)
        // Below the coordinator's keep-alive, as the agent does.
        .pool_idle_timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    call(
        &http,
        reqwest::Method::PUT,
        format!("{base}/v1/datasets/bench"),
        &board,
        Some(json!({ "policy": policy })),
    )
    .await;
    call(
        &http,
        reqwest::Method::POST,
        format!("{base}/v1/projects"),
        &board,
        Some(json!({ "id": "b", "title": "Bench", "members": ["rita"] })),
    )
    .await;
    call(
        &http,
        reqwest::Method::PUT,
        format!("{base}/v1/projects/b/allocations/bench"),
        &board,
        Some(json!({ "cap": { "rho": 1000000.0 } })),
    )
    .await;
    let mut registered = Vec::new();
    for i in 0..partners {
        let created = create(state, "bench", &format!("p{i:03}"), Role::Partner)
            .await
            .unwrap();
        let mut seed = [1u8; 32];
        seed[..8].copy_from_slice(&(i as u64).to_le_bytes());
        let key = IdentityKey::from_seed(&seed);
        call(
            &http,
            reqwest::Method::PUT,
            format!("{base}/v1/partner/identity"),
            &created.token,
            Some(json!({ "public_key": hex::encode(key.public().0) })),
        )
        .await;
        registered.push(Partner {
            id: PartnerId(created.partner_id.unwrap()),
            token: created.token,
            key,
        });
    }
    Bench {
        base,
        http,
        researcher,
        partners: registered,
    }
}

/// Waits for round `round` to be announced to `p`.
pub async fn announcement(b: &Bench, round: i64, p: &Partner, poll: Duration) -> RoundAnnouncement {
    loop {
        let rounds: civic_api::round::PartnerRounds = b
            .http
            .get(format!("{}/v1/partner/rounds", b.base))
            .bearer_auth(&p.token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if let Some(a) = rounds.rounds.into_iter().find(|a| a.round_id == round) {
            return a;
        }
        tokio::time::sleep(poll).await;
    }
}

/// Polls until the inbox holds what `want` accepts; returns it with its encoded size and
/// the bytes of every inbox body read on the way (polls answered "nothing new" included).
pub async fn inbox(
    b: &Bench,
    round: i64,
    p: &Partner,
    want: fn(&Inbox) -> bool,
    poll: Duration,
) -> (Inbox, usize, usize) {
    let mut downloaded = 0;
    loop {
        let res = b
            .http
            .get(format!("{}/v1/partner/rounds/{round}/inbox", b.base))
            .bearer_auth(&p.token)
            .send()
            .await
            .unwrap();
        if !res.status().is_success() {
            let text = res.text().await.unwrap();
            let q = call(
                &b.http,
                reqwest::Method::GET,
                format!("{}/v1/queries/{round}", b.base),
                &b.researcher,
                None,
            )
            .await;
            panic!(
                "round {round}, partner {}: {text}; query {} {}",
                p.id, q["state"], q["reason"]
            );
        }
        let body = res.bytes().await.unwrap();
        downloaded += body.len();
        let inbox: Inbox = decode_binary(&body).unwrap();
        if want(&inbox) {
            return (inbox, body.len(), downloaded);
        }
        tokio::time::sleep(poll).await;
    }
}

/// Polls the researcher's view of query `id` until it is released.
pub async fn wait_released(b: &Bench, id: i64, poll: Duration) -> Value {
    loop {
        let v = call(
            &b.http,
            reqwest::Method::GET,
            format!("{}/v1/queries/{id}", b.base),
            &b.researcher,
            None,
        )
        .await;
        if v["state"] == "released" {
            return v;
        }
        assert_eq!(v["state"], "running", "{v}");
        tokio::time::sleep(poll).await;
    }
}

/// The store a bench runs on: a fresh SQLite file, or, if `CIVIC_BENCH_STORE` holds a
/// PostgreSQL URL, a fresh schema in that database (dropped by [`drop_store`]).
pub async fn bench_store(tag: &str) -> String {
    match std::env::var("CIVIC_BENCH_STORE") {
        Ok(base) if base.starts_with("postgres") => {
            civic_server::store::scratch::postgres_schema(&base, &format!("bench_{tag}")).await
        }
        _ => temp_store(tag),
    }
}

/// Drops a bench's PostgreSQL schema (nothing for SQLite).
pub async fn drop_store(url: &str) {
    civic_server::store::scratch::drop_schema(url).await
}

/// A fresh SQLite store in a temporary directory.
pub fn temp_store(tag: &str) -> String {
    let dir = std::env::temp_dir().join(format!("civic-bench-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    format!("sqlite://{}", dir.join("civic.db").display())
}
