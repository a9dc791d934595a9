//! Coordinator benchmarks over loopback HTTP (`cargo bench --bench coordinator`).
//!
//! 1. Ingest: n = 100 partners post masked vectors of m = 10^4 elements into a live round, all
//!    at once (decode, check against the round, group-commit to the store, take in), against
//!    the same bytes posted to an endpoint that only reads the body and stores it in the same
//!    table, one transaction each. The ratio of wall times, and each request's p50, p99 and
//!    worst latency.
//! 2. Re-serving a stored release: GET /v1/queries/{id} and an identical POST /v1/queries
//!    (answered from the store at no cost) under 64 concurrent clients.
//! 3. Submissions: 64 clients submit distinct queries (each priced, its budget reserved, its
//!    round opened for the 100 partners, audited): requests per second, p50, p99, worst.
//!
//! The store is SQLite unless `CIVIC_BENCH_STORE` holds a PostgreSQL URL (a fresh schema is
//! made there and dropped after):
//! `CIVIC_BENCH_STORE=postgres://postgres@127.0.0.1:5432/test cargo bench --bench coordinator`.
//! The server and the load generator share this machine's two cores, so absolute rates are
//! lower bounds.

mod common;

use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::{App, HttpResponse, HttpServer, web};
use civic_api::encode_binary;
use civic_api::round::Inbox;
use civic_secagg::messages::ClientMessage;
use civic_secagg::{ClientRound, RingVector};
use civic_server::store::{Store, rounds};
use common::{Bench, announcement, call, inbox, post, start_coordinator};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use serde_json::json;

const PARTNERS: usize = 100;
const CELLS: usize = 10_000;
/// Every partner posts at once.
const SENDERS: usize = PARTNERS;
const CLIENTS: usize = 64;
const REPEATS: usize = 5;
const POLL: Duration = Duration::from_millis(5);

/// Runs a round to the point where every partner has its masked vector ready, and returns
/// the partners' clients with their encoded MaskedInput bodies.
async fn prepare_round(b: &Bench, round: i64) -> Vec<(ClientRound, Vec<u8>)> {
    let ann = announcement(b, round, &b.partners[0], Duration::ZERO).await;
    let config = ann.config;
    let roster = b.roster();
    let requirements = civic_secagg::testing::lenient_requirements(&config);
    let url = format!("{}/v1/partner/rounds/{round}/messages", b.base);
    let mut clients = Vec::new();
    for p in &b.partners {
        let mut rng = ChaCha20Rng::from_seed([p.id.0 as u8; 32]);
        let (client, adv) = ClientRound::start(
            config.clone(),
            p.id,
            &p.key,
            roster.clone(),
            &requirements,
            &mut rng,
        )
        .unwrap();
        post(
            &b.http,
            &url,
            &p.token,
            encode_binary(&ClientMessage::AdvertiseKeys(adv)),
        )
        .await;
        clients.push((client, rng));
    }
    let mut next = Vec::new();
    for (p, (mut client, mut rng)) in b.partners.iter().zip(clients) {
        let Inbox::KeyRoster(keys) = inbox(b, round, p, |i| matches!(i, Inbox::KeyRoster(_)), POLL)
            .await
            .0
        else {
            unreachable!()
        };
        let shares = client.handle_key_roster(&keys, &mut rng).unwrap();
        post(
            &b.http,
            &url,
            &p.token,
            encode_binary(&ClientMessage::ShareKeys(shares)),
        )
        .await;
        next.push(client);
    }
    let mut out = Vec::new();
    for (i, (p, mut client)) in b.partners.iter().zip(next).enumerate() {
        let Inbox::ForwardedShares(fwd) = inbox(
            b,
            round,
            p,
            |i| matches!(i, Inbox::ForwardedShares(_)),
            POLL,
        )
        .await
        .0
        else {
            unreachable!()
        };
        let values: Vec<i64> = (0..config.vector_len)
            .map(|c| ((c * 7 + i) % 13) as i64)
            .collect();
        let input = RingVector::from_signed(config.width, &values).unwrap();
        let masked = client.handle_forwarded_shares(&fwd, &input).unwrap();
        out.push((client, encode_binary(&ClientMessage::MaskedInput(masked))));
    }
    out
}

/// Posts `bodies` with `SENDERS` concurrent senders; returns the wall time and each
/// request's latency.
async fn ingest(
    http: &reqwest::Client,
    urls: Vec<(String, String, Vec<u8>)>,
) -> (Duration, Vec<Duration>) {
    let queue = Arc::new(tokio::sync::Mutex::new(urls));
    let start = Instant::now();
    let senders = (0..SENDERS).map(|_| {
        let queue = queue.clone();
        let http = http.clone();
        async move {
            let mut latencies = Vec::new();
            loop {
                let Some((url, token, body)) = queue.lock().await.pop() else {
                    break;
                };
                let t = Instant::now();
                post(&http, &url, &token, body).await;
                latencies.push(t.elapsed());
            }
            latencies
        }
    });
    let latencies = futures_util::future::join_all(senders).await.concat();
    (start.elapsed(), latencies)
}

/// p50, p99 and the worst of `latencies`, in ms.
fn spread(mut latencies: Vec<Duration>) -> String {
    latencies.sort_unstable();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    format!(
        "p50 {:.1} ms, p99 {:.1} ms, worst {:.1} ms",
        ms(percentile(&latencies, 0.5)),
        ms(percentile(&latencies, 0.99)),
        ms(*latencies.last().unwrap())
    )
}

/// An endpoint that only reads the body and stores it: the floor for ingest. Inserts are
/// serialised as the round's are (SQLite has one writer; letting inserts contend instead
/// puts them in SQLite's busy handler, which sleeps in steps of up to 100 ms).
fn start_store_only(store: Store, limit: usize) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let store = web::Data::new((store, tokio::sync::Mutex::new(())));
            HttpServer::new(move || {
                App::new().app_data(store.clone()).route(
                    "/store/{round}/{partner}",
                    web::post().to(
                        move |store: web::Data<(Store, tokio::sync::Mutex<()>)>,
                              path: web::Path<(i64, u32)>,
                              body: web::Payload| async move {
                            let bytes = civic_server::routes::read_limited(body, limit).await?;
                            let _one_writer = store.1.lock().await;
                            store
                                .0
                                .run_tx("store a message", async |tx| {
                                    rounds::insert_message(
                                        tx,
                                        path.0,
                                        "masked_input_collection",
                                        path.1,
                                        &bytes,
                                    )
                                    .await
                                })
                                .await?;
                            Ok::<_, civic_server::error::Error>(HttpResponse::NoContent().finish())
                        },
                    ),
                )
            })
            .workers(2)
            .listen(listener)
            .unwrap()
            .run()
            .await
            .unwrap();
        })
    });
    base
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

/// `total` requests from `CLIENTS` concurrent clients (`make` gets the request's number);
/// returns requests per second and each request's latency.
async fn load(
    total: usize,
    make: impl Fn(usize) -> reqwest::RequestBuilder + Send + Sync + 'static,
) -> (f64, Vec<Duration>) {
    let make = Arc::new(make);
    let left = Arc::new(std::sync::atomic::AtomicUsize::new(total));
    let start = Instant::now();
    let tasks = (0..CLIENTS).map(|_| {
        let (make, left) = (make.clone(), left.clone());
        tokio::spawn(async move {
            let mut lat = Vec::new();
            while let Ok(n) = left.fetch_update(
                std::sync::atomic::Ordering::SeqCst,
                std::sync::atomic::Ordering::SeqCst,
                |n| n.checked_sub(1),
            ) {
                let t = Instant::now();
                let res = make(n).send().await.unwrap();
                let status = res.status();
                let body = res.bytes().await.unwrap();
                assert!(
                    status.is_success(),
                    "{status} {}",
                    String::from_utf8_lossy(&body)
                );
                lat.push(t.elapsed());
            }
            lat
        })
    });
    let mut all = Vec::new();
    for t in futures_util::future::join_all(tasks).await {
        all.extend(t.unwrap());
    }
    (total as f64 / start.elapsed().as_secs_f64(), all)
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` would pass nothing: only run when benched.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CIVIC_LOG")
                .unwrap_or_else(|_| "error".into()),
        )
        .init();
    let setup = tokio::runtime::Runtime::new().unwrap();
    let (coordinator_store, baseline_url) = setup.block_on(async {
        (
            common::bench_store("coordinator").await,
            common::bench_store("baseline").await,
        )
    });
    let backend = if coordinator_store.starts_with("postgres") {
        "PostgreSQL"
    } else {
        "SQLite"
    };
    println!("STORE {backend}");
    let (base, state) = start_coordinator(coordinator_store.clone(), 10, (0.0, 0.0));
    let baseline_store = setup
        .block_on(Store::connect(&baseline_url, Duration::from_secs(5)))
        .unwrap();
    let baseline = start_store_only(baseline_store, 64 << 20);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let policy = common::policy_toml(PARTNERS, &[("a", CELLS.isqrt()), ("b", CELLS.isqrt())]);
        let b = common::setup(base, &state, policy, PARTNERS).await;
        let histogram = |e: f64| json!({ "project": "b", "query": { "dataset": "bench", "statistic": { "histogram": { "columns": ["a", "b"] } } }, "privacy": { "epsilon": e } });
        let mut ratios = Vec::new();
        let (mut live_latencies, mut store_latencies) = (Vec::new(), Vec::new());
        let mut released = None;
        for rep in 0..REPEATS {
            let q = call(&b.http, reqwest::Method::POST, format!("{}/v1/queries", b.base), &b.researcher, Some(histogram(1.0 + rep as f64))).await;
            let id = q["id"].as_i64().unwrap();
            let round = q["round_id"].as_i64().unwrap();
            let ready = prepare_round(&b, round).await;
            let bytes = ready[0].1.len();
            let live: Vec<_> = b.partners.iter().zip(&ready).map(|(p, (_, body))| (format!("{}/v1/partner/rounds/{round}/messages", b.base), p.token.clone(), body.clone())).collect();
            let stored: Vec<_> = b.partners.iter().zip(&ready).map(|(p, (_, body))| (format!("{baseline}/store/{}/{}", round, p.id.0), p.token.clone(), body.clone())).collect();
            // Alternate which goes first, so neither always meets a cold connection pool.
            let ((t_base, l_base), (t_live, l_live)) = if rep % 2 == 0 {
                let base = ingest(&b.http, stored).await;
                (base, ingest(&b.http, live).await)
            } else {
                let live = ingest(&b.http, live).await;
                (ingest(&b.http, stored).await, live)
            };
            let ratio = t_live.as_secs_f64() / t_base.as_secs_f64();
            println!(
                "ingest rep {rep}: {PARTNERS} × {bytes} B, all at once: round endpoint {:.1} ms ({:.0} req/s), store-only {:.1} ms ({:.0} req/s), ratio {ratio:.2}",
                t_live.as_secs_f64() * 1e3,
                PARTNERS as f64 / t_live.as_secs_f64(),
                t_base.as_secs_f64() * 1e3,
                PARTNERS as f64 / t_base.as_secs_f64()
            );
            ratios.push(ratio);
            live_latencies.extend(l_live);
            store_latencies.extend(l_base);
            if released.is_none() {
                finish_round(&b, round, id, ready).await;
                released = Some(id);
            }
        }
        ratios.sort_by(f64::total_cmp);
        println!("RATIO ingest on {backend} (round endpoint / store-only endpoint, median of {REPEATS}): {:.2}", ratios[REPEATS / 2]);
        println!("LATENCY ingest on {backend}, each post, {REPEATS} × {PARTNERS}: round endpoint {}; store-only {}", spread(live_latencies), spread(store_latencies));

        // A one-cell release beside the 10^4-cell one: re-serving cost grows with the body.
        let count = json!({ "project": "b", "query": { "dataset": "bench", "statistic": "count" }, "privacy": { "epsilon": 1.0 } });
        let q = call(&b.http, reqwest::Method::POST, format!("{}/v1/queries", b.base), &b.researcher, Some(count.clone())).await;
        let count_id = q["id"].as_i64().unwrap();
        let count_round = q["round_id"].as_i64().unwrap();
        let ready = prepare_round(&b, count_round).await;
        let bodies = b.partners.iter().zip(&ready).map(|(p, (_, body))| (format!("{}/v1/partner/rounds/{count_round}/messages", b.base), p.token.clone(), body.clone())).collect();
        ingest(&b.http, bodies).await;
        finish_round(&b, count_round, count_id, ready).await;

        for (label, id, body) in [("count, 1 cell", count_id, count), ("histogram, 10^4 cells", released.unwrap(), histogram(1.0))] {
            let (http, token) = (b.http.clone(), b.researcher.clone());
            let get_url = format!("{}/v1/queries/{id}", b.base);
            let (rps, latencies) = load(20_000, move |_| http.get(&get_url).bearer_auth(&token)).await;
            println!("re-serve GET /v1/queries/{{id}} [{label}] on {backend} ({CLIENTS} clients, 20000 requests): {rps:.0} req/s, {}", spread(latencies));
            let (http, token) = (b.http.clone(), b.researcher.clone());
            let post_url = format!("{}/v1/queries", b.base);
            let (rps, latencies) = load(5_000, move |_| http.post(&post_url).bearer_auth(&token).json(&body)).await;
            println!("re-serve identical POST /v1/queries [{label}] on {backend} ({CLIENTS} clients, 5000 requests, each a new audited query row): {rps:.0} req/s, {}", spread(latencies));
        }
        // Distinct submissions, last: each is priced, reserves budget, opens a round and is
        // audited (the rounds then abort at their deadline, after the bench).
        let (http, token) = (b.http.clone(), b.researcher.clone());
        let post_url = format!("{}/v1/queries", b.base);
        let submissions = CLIENTS * 5;
        let (rps, latencies) = load(submissions, move |n| http.post(&post_url).bearer_auth(&token).json(&histogram(2.0 + n as f64 * 1e-3))).await;
        println!("LATENCY submit on {backend}: {CLIENTS} clients, {submissions} distinct POST /v1/queries (priced, reserved, a round of {PARTNERS} opened, audited): {rps:.0} req/s, {}", spread(latencies));
    });
    setup.block_on(async {
        common::drop_store(&coordinator_store).await;
        common::drop_store(&baseline_url).await;
    });
}

/// Takes a prepared round through consistency and unmasking, so that its query releases.
async fn finish_round(b: &Bench, id: i64, query: i64, ready: Vec<(ClientRound, Vec<u8>)>) {
    let url = format!("{}/v1/partner/rounds/{id}/messages", b.base);
    let mut clients = Vec::new();
    for (p, (client, _)) in b.partners.iter().zip(ready) {
        let Inbox::SurvivorList(list) =
            inbox(b, id, p, |i| matches!(i, Inbox::SurvivorList(_)), POLL)
                .await
                .0
        else {
            unreachable!()
        };
        let mut client = client;
        let sig = client.handle_survivor_list(&list, &p.key).unwrap();
        post(
            &b.http,
            &url,
            &p.token,
            encode_binary(&ClientMessage::ConsistencySignature(sig)),
        )
        .await;
        clients.push(client);
    }
    for (p, mut client) in b.partners.iter().zip(clients) {
        let Inbox::SignedSurvivors(signed) =
            inbox(b, id, p, |i| matches!(i, Inbox::SignedSurvivors(_)), POLL)
                .await
                .0
        else {
            unreachable!()
        };
        let reveal = client.handle_signed_survivors(&signed).unwrap();
        post(
            &b.http,
            &url,
            &p.token,
            encode_binary(&ClientMessage::UnmaskingShares(reveal)),
        )
        .await;
    }
    common::wait_released(b, query, Duration::from_millis(20)).await;
}
