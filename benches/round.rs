//! A whole secure-aggregation round over loopback HTTP, against the same round with masking
//! switched off.
//!
//! `cargo bench --features bench-unmasked --bench round` (about 4 minutes once built; the
//! feature compiles civic-secagg's masking switch, see `secagg/src/baseline.rs`).
//! `cargo test --features bench-unmasked --bench round` runs one small case of each kind
//! once, as a check (CI does).
//!
//! For n ∈ {5, 20, 100} partners and m ∈ {10, 10^4} cells, and n ∈ {300, 1000} with m = 10^4
//! (above 100 partners the graph is sparse): a researcher posts a histogram
//! query; n partners, each a tokio task speaking HTTP to a real coordinator (SQLite store) as
//! `civic-agent` does, run AdvertiseKeys → ShareKeys → MaskedInput → ConsistencyCheck →
//! Unmasking with the real secagg client; the coordinator unmasks, adds discrete Laplace
//! noise and stores the release. Latency is from the query's POST until the researcher's
//! poll (every 2 ms) sees the release.
//!
//! The baseline ("plain") is the same round with masking off: the same partners, phases,
//! requests and message sizes, but partners add no masks and the coordinator removes none.
//! Key agreement, Shamir sharing, share encryption and signatures run in both, as they are
//! what the flow's messages carry; so the ratio is the cost of the masks themselves.
//!
//! Both arms are checked: the coordinator's un-noised sum (test hook) must equal the sum of
//! the partners' inputs, and a plain partner's vector must go out equal to its input while a
//! masked one must not.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::web;
use civic_api::encode_binary;
use civic_api::round::Inbox;
use civic_secagg::messages::ClientMessage;
use civic_secagg::{ClientRound, RingVector};
use civic_server::AppState;
use common::{Bench, announcement, call, inbox, post, start_coordinator, temp_store};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use serde_json::json;

const PARTNERS: [usize; 5] = [5, 20, 100, 300, 1000];
/// Vector lengths run for up to 100 partners; above, only the larger.
const CELLS: [usize; 2] = [10, 10_000];
/// Repeats for up to 100 partners; above, one run of each arm.
const REPEATS: usize = 5;
/// How often a partner polls for the next phase (real agents poll every few seconds; here the
/// poll bounds the latency each phase adds, equally in both arms): 5 ms, or n/10 ms for more
/// than 100 partners, so that n partners' polls (n/poll per second) do not swamp two cores.
/// `CIVIC_BENCH_POLL_MS` overrides it.
fn poll(n: usize) -> Duration {
    let ms = std::env::var("CIVIC_BENCH_POLL_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if n > 100 { n as u64 / 10 } else { 5 });
    Duration::from_millis(ms)
}
/// Rounds must survive 10% dropouts and 5% colluding partners: at n = 1000 the sparse graph
/// then has degree 122 (`derive_topology`).
const TOLERATED: common::Tolerated = (0.1, 0.05);
/// The target: masked / plain latency at n = 20, m = 10^4.
const TARGET_RATIO: f64 = 1.5;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Arm {
    Masked,
    Plain,
}

/// Request bodies one partner sent in one round, by message, and what it read back.
#[derive(Clone, Copy, Debug, Default)]
struct Traffic {
    advertise: usize,
    share_keys: usize,
    vector: usize,
    signature: usize,
    unmasking: usize,
    /// The inbox bodies it used (one per phase; repeated polls not counted).
    received: usize,
    /// Every inbox body it read, polls answered "nothing new" included.
    downloaded: usize,
    /// Ed25519 signatures it checked (advertisements and survivor-list signatures).
    verified: usize,
}

impl Traffic {
    fn sent(&self) -> usize {
        self.advertise + self.share_keys + self.vector + self.signature + self.unmasking
    }
}

struct Outcome {
    latency: Duration,
    /// When each of the first six `STAGES` ended for the last partner, from the query's POST.
    stage_ends: [Duration; 6],
    /// The partners' own computation in `STAGES[1..6]`, summed over partners.
    compute: [Duration; 5],
    traffic: Vec<Traffic>,
    vector_len: usize,
    width_bytes: usize,
    threshold: usize,
}

async fn send(b: &Bench, round: i64, idx: usize, msg: ClientMessage) -> usize {
    let p = &b.partners[idx];
    let body = encode_binary(&msg);
    let len = body.len();
    let url = format!("{}/v1/partner/rounds/{round}/messages", b.base);
    post(&b.http, &url, &p.token, body).await;
    len
}

/// What one partner did in a round.
struct PartnerRun {
    traffic: Traffic,
    /// Its own computation in the first five `STAGES` (the secagg client's work for what
    /// the stage ends with: starting, then handling each inbox message).
    compute: [Duration; 5],
    /// When each of the first six `STAGES` ended for it.
    marks: [Instant; 6],
    input: Vec<i64>,
    width_bytes: usize,
    threshold: usize,
}

/// Runs a partner's computation on the blocking pool: a thousand partners' key agreements
/// and signature checks, inline on the runtime's two workers, would stall their HTTP
/// connections for seconds (a real agent runs on its own machine).
async fn cpu<T: Send + 'static>(spent: &mut Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (out, took) = tokio::task::spawn_blocking(move || {
        let t = Instant::now();
        let out = f();
        (out, t.elapsed())
    })
    .await
    .unwrap();
    *spent += took;
    out
}

/// One partner's side of a round.
async fn take_part(b: Arc<Bench>, idx: usize, round: i64, arm: Arm) -> PartnerRun {
    let p = &b.partners[idx];
    let poll = poll(b.partners.len());
    let config = announcement(&b, round, p, poll).await.config;
    let mut marks = [Instant::now(); 6];
    let (width_bytes, threshold) = (config.width.bits() as usize / 8, config.threshold);
    let values: Vec<i64> = (0..config.vector_len)
        .map(|c| ((c * 7 + idx * 3 + round as usize) % 5) as i64)
        .collect();
    let input = RingVector::from_signed(config.width, &values).unwrap();
    let mut compute = [Duration::ZERO; 5];
    let (bench, id) = (b.clone(), p.id);
    let (mut client, mut rng, adv) = cpu(&mut compute[0], move || {
        let requirements = civic_secagg::testing::lenient_requirements(&config);
        let mut rng = ChaCha20Rng::seed_from_u64(((round as u64) << 16) | idx as u64);
        let key = &bench.partners[idx].key;
        let (client, adv) =
            ClientRound::start(config, id, key, bench.roster(), &requirements, &mut rng).unwrap();
        (client, rng, adv)
    })
    .await;
    let mut t = Traffic {
        advertise: send(&b, round, idx, ClientMessage::AdvertiseKeys(adv)).await,
        ..Traffic::default()
    };

    let (Inbox::KeyRoster(keys), n, d) =
        inbox(&b, round, p, |i| matches!(i, Inbox::KeyRoster(_)), poll).await
    else {
        unreachable!()
    };
    t.received += n;
    t.downloaded += d;
    marks[1] = Instant::now();
    let shares;
    (client, shares) = cpu(&mut compute[1], move || {
        let shares = client.handle_key_roster(&keys, &mut rng).unwrap();
        (client, shares)
    })
    .await;
    t.share_keys = send(&b, round, idx, ClientMessage::ShareKeys(shares)).await;

    let (Inbox::ForwardedShares(fwd), n, d) = inbox(
        &b,
        round,
        p,
        |i| matches!(i, Inbox::ForwardedShares(_)),
        poll,
    )
    .await
    else {
        unreachable!()
    };
    t.received += n;
    t.downloaded += d;
    marks[2] = Instant::now();
    let masked;
    (client, masked) = cpu(&mut compute[2], move || {
        let masked = client.handle_forwarded_shares(&fwd, &input).unwrap();
        match arm {
            Arm::Plain => assert_eq!(masked.vector, input, "masking off sends the input"),
            Arm::Masked => assert_ne!(masked.vector, input, "masking on hides the input"),
        }
        (client, masked)
    })
    .await;
    t.vector = send(&b, round, idx, ClientMessage::MaskedInput(masked)).await;

    let (Inbox::SurvivorList(list), n, d) =
        inbox(&b, round, p, |i| matches!(i, Inbox::SurvivorList(_)), poll).await
    else {
        unreachable!()
    };
    t.received += n;
    t.downloaded += d;
    marks[3] = Instant::now();
    let bench = b.clone();
    let sig;
    (client, sig) = cpu(&mut compute[3], move || {
        let sig = client
            .handle_survivor_list(&list, &bench.partners[idx].key)
            .unwrap();
        (client, sig)
    })
    .await;
    t.signature = send(&b, round, idx, ClientMessage::ConsistencySignature(sig)).await;

    let (Inbox::SignedSurvivors(signed), n, d) = inbox(
        &b,
        round,
        p,
        |i| matches!(i, Inbox::SignedSurvivors(_)),
        poll,
    )
    .await
    else {
        unreachable!()
    };
    t.received += n;
    t.downloaded += d;
    marks[4] = Instant::now();
    let reveal;
    (client, reveal) = cpu(&mut compute[4], move || {
        let reveal = client.handle_signed_survivors(&signed).unwrap();
        (client, reveal)
    })
    .await;
    t.unmasking = send(&b, round, idx, ClientMessage::UnmaskingShares(reveal)).await;
    t.verified = client.signatures_verified();
    marks[5] = Instant::now();
    PartnerRun {
        traffic: t,
        compute,
        marks,
        input: values,
        width_bytes,
        threshold,
    }
}

/// Runs one round of an m-cell histogram in `arm`; `seq` makes each query distinct (an
/// identical query would be answered from the store).
async fn run_round(
    b: &Arc<Bench>,
    state: &web::Data<AppState>,
    cells: usize,
    arm: Arm,
    seq: usize,
) -> Outcome {
    civic_secagg::baseline::set_masking_off(arm == Arm::Plain);
    let columns = if cells == 10 {
        vec!["c"]
    } else {
        vec!["a", "b"]
    };
    let query = json!({
        "project": "b",
        "query": { "dataset": "bench", "statistic": { "histogram": { "columns": columns } } },
        "privacy": { "epsilon": 1.0 + seq as f64 * 1e-3 },
    });
    let start = Instant::now();
    let q = call(
        &b.http,
        reqwest::Method::POST,
        format!("{}/v1/queries", b.base),
        &b.researcher,
        Some(query),
    )
    .await;
    let id = q["id"].as_i64().unwrap();
    let round = q["round_id"].as_i64().unwrap();
    let tasks: Vec<_> = (0..b.partners.len())
        .map(|i| tokio::spawn(take_part(b.clone(), i, round, arm)))
        .collect();
    common::wait_released(b, id, Duration::from_millis(2)).await;
    let latency = start.elapsed();

    let runs: Vec<PartnerRun> = futures_util::future::join_all(tasks)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let mut expected = vec![0i64; cells];
    for r in &runs {
        assert_eq!(r.input.len(), cells, "the plan's vector is the histogram");
        expected.iter_mut().zip(&r.input).for_each(|(e, v)| *e += v);
    }
    assert_eq!(
        state.rounds.unmasked_sum(id).as_deref(),
        Some(&expected[..]),
        "{arm:?} round {id}: the aggregate is the sum of the inputs"
    );
    Outcome {
        latency,
        stage_ends: std::array::from_fn(|i| runs.iter().map(|r| r.marks[i] - start).max().unwrap()),
        compute: std::array::from_fn(|i| runs.iter().map(|r| r.compute[i]).sum()),
        traffic: runs.iter().map(|r| r.traffic).collect(),
        vector_len: cells,
        width_bytes: runs[0].width_bytes,
        threshold: runs[0].threshold,
    }
}

/// The stages of a round. The first six end when the last partner has what the next needs
/// (announced; key roster, forwarded shares, survivor list and signed survivors received;
/// unmasking shares accepted). "release" is everything after: recovering the seeds, removing
/// the masks, sampling noise, storing and auditing, and the researcher's next poll.
const STAGES: [&str; 7] = [
    "announce",
    "advertise keys",
    "share keys",
    "masked input",
    "consistency",
    "unmasking",
    "release",
];

/// How long each stage took (ms), the last partner's view, then the release.
fn stages(o: &Outcome) -> [f64; 7] {
    std::array::from_fn(|i| match i {
        0 => ms(o.stage_ends[0]),
        6 => ms(o.latency.saturating_sub(o.stage_ends[5])),
        _ => ms(o.stage_ends[i].saturating_sub(o.stage_ends[i - 1])),
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --bench round` passes nothing: a quick check.
    let full = std::env::args().any(|a| a == "--bench");
    // `CIVIC_BENCH_N=100` runs one number of partners only.
    let only: Option<usize> = std::env::var("CIVIC_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok());
    let partners = match (only, full) {
        (Some(n), _) => vec![n],
        (None, true) => PARTNERS.to_vec(),
        (None, false) => vec![PARTNERS[0]],
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CIVIC_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .init();
    // Partners' computations queue for two blocking threads (`cpu`): hundreds of them at
    // once would starve the threads that keep their HTTP connections going.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .max_blocking_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut seq = 0;
    let mut summary = Vec::new();
    for &n in &partners {
        let (base, state) = start_coordinator(temp_store(&format!("round-n{n}")), 5, TOLERATED);
        rt.block_on(async {
            let policy = common::policy_toml(n, &[("a", 100), ("b", 100), ("c", 10)]);
            let b = Arc::new(common::setup(base, &state, policy, n).await);
            let (cells, repeats) = match (full, n > 100) {
                (false, _) => (&CELLS[..], 1),
                (true, false) => (&CELLS[..], REPEATS),
                (true, true) => (&CELLS[1..], 1),
            };
            for &m in cells {
                let mut pairs = Vec::new();
                for rep in 0..repeats {
                    // Alternate which arm goes first, so neither always meets a cold pool.
                    let order = if rep % 2 == 0 {
                        [Arm::Masked, Arm::Plain]
                    } else {
                        [Arm::Plain, Arm::Masked]
                    };
                    let mut masked = None;
                    let mut plain = None;
                    for arm in order {
                        seq += 1;
                        let o = run_round(&b, &state, m, arm, seq).await;
                        let st = stages(&o);
                        println!(
                            "n = {n:3}, m = {m:5}, rep {rep}, {arm:?}: {:.1} ms; {}",
                            ms(o.latency),
                            STAGES
                                .iter()
                                .zip(st)
                                .map(|(name, t)| format!("{name} {t:.1}"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        );
                        match arm {
                            Arm::Masked => masked = Some(o),
                            Arm::Plain => plain = Some(o),
                        }
                    }
                    pairs.push((masked.unwrap(), plain.unwrap()));
                }
                summary.push(report(n, m, &pairs));
            }
        });
    }
    println!();
    println!(
        "| n | m | t | masked | plain | ratio | bytes sent per partner | masked vector message | plain vector | vector ratio | other messages | downloaded per partner | signatures verified per partner |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (line, _) in &summary {
        println!("{line}");
    }
    println!();
    println!(
        "Median time per stage (ms), masked / plain: | n | m | {} |",
        STAGES.join(" | ")
    );
    for (_, line) in &summary {
        println!("{line}");
    }
}

/// One summary row (median latencies, the median of the paired ratios, and bytes) and one
/// row of median stage times.
fn report(n: usize, m: usize, pairs: &[(Outcome, Outcome)]) -> (String, String) {
    let stage_medians = |pick: fn(&(Outcome, Outcome)) -> &Outcome| -> Vec<f64> {
        (0..STAGES.len())
            .map(|i| median(pairs.iter().map(|p| stages(pick(p))[i]).collect()))
            .collect()
    };
    let (masked_stages, plain_stages) = (stage_medians(|p| &p.0), stage_medians(|p| &p.1));
    let stage_row = format!(
        "| {n} | {m} | {} |",
        masked_stages
            .iter()
            .zip(&plain_stages)
            .map(|(a, b)| format!("{a:.0} / {b:.0}"))
            .collect::<Vec<_>>()
            .join(" | ")
    );
    let masked = median(pairs.iter().map(|(a, _)| ms(a.latency)).collect());
    let plain = median(pairs.iter().map(|(_, b)| ms(b.latency)).collect());
    let ratio = median(
        pairs
            .iter()
            .map(|(a, b)| a.latency.as_secs_f64() / b.latency.as_secs_f64())
            .collect(),
    );
    let (a, b) = &pairs[0];
    let sent: usize = a.traffic.iter().map(Traffic::sent).sum::<usize>() / n;
    let vector: usize = a.traffic.iter().map(|t| t.vector).sum::<usize>() / n;
    let received: usize = a.traffic.iter().map(|t| t.received).sum::<usize>() / n;
    let downloaded: usize = a.traffic.iter().map(|t| t.downloaded).sum::<usize>() / n;
    let verified = a.traffic.iter().map(|t| t.verified).sum::<usize>() as f64 / n as f64;
    let plain_sent: usize = b.traffic.iter().map(Traffic::sent).sum::<usize>() / n;
    assert_eq!(sent, plain_sent, "both arms send the same bytes");
    let plain_vector = a.vector_len * a.width_bytes;
    if n == 20 && m == 10_000 {
        println!(
            "RATIO round n=20 m=10^4 (masked / plain latency, median of {} paired runs): {ratio:.2} (target ≤ {TARGET_RATIO})",
            pairs.len()
        );
    }
    let first = a.traffic[0];
    println!(
        "COMPUTE n={n} m={m}: the partners' own computation, summed over the {n} partners (two \
         threads run it, so a stage takes at least half the sum): {}",
        STAGES[1..6]
            .iter()
            .zip(a.compute)
            .map(|(name, d)| format!("{name} {:.0} ms ({:.2} ms each)", ms(d), ms(d) / n as f64))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "NEIGHBOURHOOD n={n} m={m} (t = {}): per partner downloaded {downloaded} B in all \
         (inbox bodies used {received} B) and verified {verified:.1} signatures",
        a.threshold
    );
    println!(
        "BYTES n={n} m={m} (t = {}, {}-bit ring): per partner sent {sent} B (vector message {vector} B for a {plain_vector} B plain vector; other messages {} B: advertise {}, share keys {}, signature {}, unmasking {}), received {received} B",
        a.threshold,
        a.width_bytes * 8,
        sent - vector,
        first.advertise,
        first.share_keys,
        first.signature,
        first.unmasking,
    );
    let row = format!(
        "| {n} | {m} | {} | {masked:.1} ms | {plain:.1} ms | {ratio:.2} | {sent} B | {vector} B | {plain_vector} B | {:.3} | {} B | {downloaded} B | {verified:.1} |",
        a.threshold,
        vector as f64 / plain_vector.max(1) as f64,
        sent - vector
    );
    (row, stage_row)
}
