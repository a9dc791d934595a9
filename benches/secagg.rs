//! Secure-aggregation benchmarks, each beside its baseline in the same run.
//!
//! Criterion gives each measurement with its confidence interval; after each group a ratio
//! line (median of several timed runs of subject and baseline, interleaved) gives the figure
//! the target is stated in. Run with `cargo bench --bench secagg`; see `benches/README.md`.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

use civic_secagg::client::mask_vector;
use civic_secagg::commitments::{Commitments, Dealing, verify_batch};
use civic_secagg::graph::Graph;
use civic_secagg::kdf::{DerivedKey, Purpose, derive};
use civic_secagg::messages::{ClientMessage, Phase};
use civic_secagg::prg::{MaskPrg, Sign, SignedMask, apply_masks};
use civic_secagg::round::{PartnerId, RoundConfig, RoundId};
use civic_secagg::server::remove_masks;
use civic_secagg::shamir::{SecretScalar, Share, reconstruct, split};
use civic_secagg::testing::{RoundCapture, run_round_capturing};
use civic_secagg::{GraphKind, RingVector, Tolerances, Topology, Width};
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

fn key(i: u32) -> DerivedKey {
    derive(
        &[7; 32],
        Purpose::PairwiseMask,
        RoundId(1),
        PartnerId(i),
        PartnerId(i + 1),
    )
}

/// Every core this process may use.
fn all_cores() -> NonZeroUsize {
    std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN)
}

/// The baseline for masking: the raw AES-256-CTR keystream, one fresh generator per mask,
/// the same number of bytes, written into a reused 4 KiB buffer and discarded.
fn raw_keystream(keys: &[DerivedKey], bytes_per_key: usize) {
    let mut buf = [0u8; 4096];
    for k in keys {
        let mut prg = MaskPrg::new(k.as_bytes());
        let mut left = bytes_per_key;
        while left > 0 {
            let n = left.min(buf.len());
            prg.fill(&mut buf[..n]);
            left -= n;
        }
        black_box(&buf);
    }
}

/// Median wall time of `runs` calls of each, interleaved so drift hits both alike.
fn median_pair(
    runs: usize,
    mut subject: impl FnMut(),
    mut baseline: impl FnMut(),
) -> (Duration, Duration) {
    let mut s = Vec::with_capacity(runs);
    let mut b = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        subject();
        s.push(t.elapsed());
        let t = Instant::now();
        baseline();
        b.push(t.elapsed());
    }
    s.sort();
    b.sort();
    (s[runs / 2], b[runs / 2])
}

fn report(what: &str, subject: Duration, baseline: Duration, target: &str) {
    println!(
        "RATIO {what}: {:.3} ms vs baseline {:.3} ms = {:.2}x  (target {target})",
        subject.as_secs_f64() * 1e3,
        baseline.as_secs_f64() * 1e3,
        subject.as_secs_f64() / baseline.as_secs_f64()
    );
}

/// A group of 10 samples with the given measurement time, or None when the command line's
/// filter leaves it out (so its ratio report is skipped too).
fn group<'a>(
    c: &'a mut Criterion,
    name: &str,
    measurement: Duration,
) -> Option<criterion::BenchmarkGroup<'a, criterion::measurement::WallTime>> {
    if !selected(name) {
        return None;
    }
    let mut group = c.benchmark_group(name);
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(measurement);
    Some(group)
}

fn client_masking(c: &mut Criterion) {
    let Some(mut group) = group(c, "client_masking", Duration::from_secs(2)) else {
        return;
    };
    for n in [10u32, 100, 1000] {
        for m in [1_000usize, 100_000] {
            let width = Width::W64;
            let input = RingVector::zeros(width, m);
            let self_key = key(0);
            let pairwise: Vec<DerivedKey> = (1..n).map(key).collect();
            let mut all_keys = vec![self_key.clone()];
            all_keys.extend(pairwise.iter().cloned());
            let masks = || {
                pairwise.iter().enumerate().map(|(i, k)| {
                    (
                        k,
                        if i % 2 == 0 {
                            Sign::Add
                        } else {
                            Sign::Subtract
                        },
                    )
                })
            };
            let id = format!("n={n}/m={m}");
            group.throughput(Throughput::Bytes((n as usize * m * width.bytes()) as u64));
            group.bench_function(BenchmarkId::new("mask_vector", &id), |b| {
                b.iter(|| black_box(mask_vector(&input, &self_key, masks())))
            });
            group.bench_function(BenchmarkId::new("raw_keystream", &id), |b| {
                b.iter(|| raw_keystream(&all_keys, m * width.bytes()))
            });
            let runs = if n as usize * m >= 10_000_000 { 3 } else { 15 };
            let (s, k) = median_pair(
                runs,
                || {
                    black_box(mask_vector(&input, &self_key, masks()));
                },
                || raw_keystream(&all_keys, m * width.bytes()),
            );
            report(
                &format!("client masking n={n} m={m}"),
                s,
                k,
                "<= 1.3x raw keystream",
            );
        }
    }
    group.finish();
}

/// A real round of `n` partners with `dropout` of them dropping after ShareKeys (so their
/// pairwise masks must be recovered), captured for the coordinator benches.
fn captured_round(n: u32, m: usize, dropout: f64) -> RoundCapture {
    let participants: Vec<PartnerId> = (0..n).map(PartnerId).collect();
    let config = RoundConfig::new(
        RoundId(5),
        participants.clone(),
        m,
        Width::W64,
        GraphKind::Complete,
        Tolerances {
            max_dropout_rate: 0.3,
            max_corrupt_fraction: 0.0,
        },
        2,
    )
    .expect("valid");
    let inputs: BTreeMap<PartnerId, RingVector> = participants
        .iter()
        .map(|&p| {
            (
                p,
                RingVector::from_signed(Width::W64, &vec![i64::from(p.0); m]).expect("fits"),
            )
        })
        .collect();
    let dropped = (f64::from(n) * dropout).round() as usize;
    let drops: BTreeMap<PartnerId, Phase> = participants
        .iter()
        .take(dropped)
        .map(|&p| (p, Phase::MaskedInputCollection))
        .collect();
    let (aggregate, capture) =
        run_round_capturing(&config, &inputs, &drops, 3).expect("round completes");
    let expected: i64 = participants
        .iter()
        .skip(dropped)
        .map(|p| i64::from(p.0))
        .sum();
    assert!(
        aggregate.sum.to_signed().iter().all(|v| *v == expected),
        "bench round must be exact"
    );
    capture
}

/// The baseline for aggregation: a plain wrapping sum of the same vectors, taken as owned
/// buffers and freed after use, as the coordinator's decoded messages are.
fn plain_sum(vectors: Vec<Vec<u64>>, m: usize) -> Vec<u64> {
    let mut acc = vec![0u64; m];
    for v in vectors {
        acc.iter_mut()
            .zip(&v)
            .for_each(|(a, b)| *a = a.wrapping_add(*b));
    }
    acc
}

/// Whether a group was asked for: `cargo bench --bench secagg -- <filter>` runs only the groups
/// whose name contains the filter, including their ratio reports.
fn selected(group: &str) -> bool {
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    filters.is_empty() || filters.iter().any(|f| group.contains(f.as_str()))
}

fn coordinator(c: &mut Criterion) {
    let (n, m) = (100u32, 100_000usize);
    let Some(mut group) = group(c, "coordinator", Duration::from_secs(3)) else {
        return;
    };
    for dropout in [0.0, 0.1, 0.3] {
        let capture = captured_round(n, m, dropout);
        let vectors: Vec<Vec<u64>> = capture
            .masked_inputs
            .iter()
            .map(|mi| mi.vector.words().to_vec())
            .collect();
        let messages = || {
            capture
                .masked_inputs
                .iter()
                .cloned()
                .map(ClientMessage::MaskedInput)
                .collect::<Vec<_>>()
        };
        let id = format!("n={n}/m={m}/dropout={:.0}%", dropout * 100.0);
        group.bench_function(BenchmarkId::new("plain_wrapping_sum", &id), |b| {
            b.iter_batched(
                || vectors.clone(),
                |vs| plain_sum(vs, m),
                BatchSize::PerIteration,
            )
        });
        group.bench_function(BenchmarkId::new("aggregate_masked_inputs", &id), |b| {
            b.iter_batched(
                || (capture.before_masked_inputs.clone(), messages()),
                |(mut server, msgs)| {
                    for msg in msgs {
                        server.receive(msg).expect("accepted");
                    }
                    server
                },
                BatchSize::PerIteration,
            )
        });
        group.bench_function(BenchmarkId::new("unmask", &id), |b| {
            b.iter_batched(
                || capture.before_unmask.clone(),
                |mut server| server.advance().expect("unmasks"),
                BatchSize::PerIteration,
            )
        });

        let timed_aggregate = || {
            let (mut server, msgs) = (capture.before_masked_inputs.clone(), messages());
            let t = Instant::now();
            for msg in msgs {
                server.receive(msg).expect("accepted");
            }
            t.elapsed()
        };
        let timed_unmask = |threads: NonZeroUsize| {
            let mut server = capture.before_unmask.clone();
            server.set_threads(threads);
            let t = Instant::now();
            server.advance().expect("unmasks");
            t.elapsed()
        };
        let timed_plain = || {
            let vs = vectors.clone();
            let t = Instant::now();
            black_box(plain_sum(vs, m));
            t.elapsed()
        };
        // The same number of mask expansions from random keys, on all cores: what unmasking
        // costs beyond recovering the secrets and agreeing the dropouts' pairwise keys.
        let dropped = (f64::from(n) * dropout).round() as usize;
        let survivors = n as usize - dropped;
        let expansions = survivors + dropped * survivors;
        let expansion_keys: Vec<DerivedKey> = (0..expansions as u32).map(key).collect();
        let timed_expansion = || {
            let masks: Vec<SignedMask<'_>> =
                expansion_keys.iter().map(|k| (k, Sign::Subtract)).collect();
            let mut acc = vec![0u64; m];
            let t = Instant::now();
            apply_masks(&mut acc, &masks, Width::W64, all_cores());
            black_box(acc);
            t.elapsed()
        };
        let median = |f: &dyn Fn() -> Duration| {
            let mut v: Vec<Duration> = (0..7).map(|_| f()).collect();
            v.sort();
            v[3]
        };
        let (agg, unmask, unmask_one_core, plain) = (
            median(&timed_aggregate),
            median(&|| timed_unmask(all_cores())),
            median(&|| timed_unmask(NonZeroUsize::MIN)),
            median(&timed_plain),
        );
        let pct = dropout * 100.0;
        report(
            &format!("aggregation only, {pct:.0}% dropouts"),
            agg,
            plain,
            "<= 1.5x plain sum with no dropouts",
        );
        report(
            &format!(
                "aggregation + unmasking on {} threads, {pct:.0}% dropouts",
                all_cores()
            ),
            agg + unmask,
            plain,
            "<= 2x plain sum with no dropouts",
        );
        report(
            &format!("aggregation + unmasking on one thread, {pct:.0}% dropouts"),
            agg + unmask_one_core,
            plain,
            "none: the single-core figure",
        );
        let expansion = median(&timed_expansion);
        println!(
            "WHERE unmasking, {pct:.0}% dropouts, on {} threads: {:.1} ms in all; {expansions} \
             bare mask expansions ({survivors} self masks, {} pairwise) take {:.1} ms; the \
             rest is Shamir recovery and {} X25519 key agreements",
            all_cores(),
            unmask.as_secs_f64() * 1e3,
            expansions - survivors,
            expansion.as_secs_f64() * 1e3,
            dropped * survivors,
        );
        let wire = bincode::serde::encode_to_vec(
            &capture.masked_inputs[0],
            bincode::config::standard().with_fixed_int_encoding(),
        )
        .expect("encodes")
        .len();
        println!(
            "WIRE masked input: {wire} bytes for {m} elements = {:.5}x the plain {} bytes",
            wire as f64 / (m * 8) as f64,
            m * 8
        );
    }
    group.finish();
}

/// The coordinator's mask removal for n = 1000, m = 10^5, 10% dropouts, on the sparse graph
/// and on the complete graph, from the same secrets.
fn sparse_vs_complete(c: &mut Criterion) {
    if !selected("unmask_n1000_m1e5_10pct_dropouts") {
        return;
    }
    let (n, m) = (1000u32, 100_000usize);
    let participants: Vec<PartnerId> = (0..n).map(PartnerId).collect();
    let mut rng = ChaCha20Rng::seed_from_u64(9);
    let mask_scalars: Vec<SecretScalar> = participants
        .iter()
        .map(|_| SecretScalar::random(&mut rng))
        .collect();
    let mask_public_keys: BTreeMap<PartnerId, [u8; 32]> = participants
        .iter()
        .zip(&mask_scalars)
        .map(|(p, s)| (*p, x25519_dalek::PublicKey::from(&s.to_x25519()).to_bytes()))
        .collect();
    let dropped_ids: Vec<PartnerId> = participants.iter().copied().step_by(10).collect();
    let survivors: Vec<PartnerId> = participants
        .iter()
        .copied()
        .filter(|p| p.0 % 10 != 0)
        .collect();
    let seeds: Vec<(PartnerId, SecretScalar)> = survivors
        .iter()
        .map(|&p| (p, SecretScalar::random(&mut rng)))
        .collect();
    let dropped: Vec<(PartnerId, SecretScalar)> = dropped_ids
        .iter()
        .map(|&p| (p, mask_scalars[p.0 as usize].clone()))
        .collect();
    let graph_for = |kind, max_corrupt_fraction| {
        let tolerances = Tolerances {
            max_dropout_rate: 0.1,
            max_corrupt_fraction,
        };
        let config = RoundConfig::new(
            RoundId(8),
            participants.clone(),
            m,
            Width::W64,
            kind,
            tolerances,
            2,
        )
        .expect("valid");
        (Graph::new(&config), config.topology, config.threshold)
    };
    let run = |graph: &Graph| {
        let mut sum = vec![0u64; m];
        remove_masks(
            &mut sum,
            Width::W64,
            RoundId(8),
            graph,
            &survivors,
            &seeds,
            &dropped,
            &mask_public_keys,
            all_cores(),
        )
        .expect("removes");
        black_box(sum);
    };
    // The complete graph (t = 501 for no corrupt partners; the mask work does not depend on
    // t) takes tens of seconds: time it once.
    let (complete, _, _) = graph_for(GraphKind::Complete, 0.0);
    let t = Instant::now();
    run(&complete);
    let complete_time = t.elapsed();
    // The sparse degree grows with the corrupt fraction tolerated (see derive_topology).
    let Some(mut group) = group(
        c,
        "unmask_n1000_m1e5_10pct_dropouts",
        Duration::from_secs(15),
    ) else {
        return;
    };
    for gamma in [0.0, 0.05, 0.1] {
        let (sparse, topology, threshold) = graph_for(GraphKind::Sparse, gamma);
        let Topology::Harary { degree } = topology else {
            panic!("n = 1000 must get a sparse graph")
        };
        let name = format!(
            "sparse_corrupt{:.0}pct_k{degree}_t{threshold}",
            gamma * 100.0
        );
        if gamma == 0.0 {
            group.bench_function(&name, |b| b.iter(|| run(&sparse)));
        }
        let (sparse_time, _) = median_pair(3, || run(&sparse), || {});
        report(
            &format!("{name} vs complete graph"),
            sparse_time,
            complete_time,
            "<= 0.1x, and sparse under 2 s",
        );
    }
    group.finish();
}

fn shamir(c: &mut Criterion) {
    let Some(mut group) = group(c, "shamir", Duration::from_secs(2)) else {
        return;
    };
    let mut rng = ChaCha20Rng::seed_from_u64(4);
    for n in [10u32, 100, 1000] {
        let holders: Vec<PartnerId> = (0..n).map(PartnerId).collect();
        let t = n as usize / 2 + 1;
        let secret = SecretScalar::random(&mut rng);
        group.bench_function(BenchmarkId::new("split", format!("n={n}/t={t}")), |b| {
            b.iter(|| split(&secret, t, &holders, &mut rng).expect("splits"))
        });
        let shares = split(&secret, t, &holders, &mut rng).expect("splits");
        group.bench_function(
            BenchmarkId::new("reconstruct", format!("n={n}/t={t}")),
            |b| b.iter(|| reconstruct(&shares, t).expect("reconstructs")),
        );
    }
    group.finish();
}

/// Feldman commitments: dealing one secret, and a holder checking the shares k dealers dealt
/// it, all at once against one dealer at a time (the baseline).
fn feldman(c: &mut Criterion) {
    let Some(mut group) = group(c, "feldman", Duration::from_secs(2)) else {
        return;
    };
    let mut rng = ChaCha20Rng::seed_from_u64(5);
    // The complete graph at n = 10, and the sparse graph at n = 1000 (k = 122, t = 86). The
    // holder's id matters: its powers x^j are the multipliers, short while x is small.
    for (k, t, me) in [(9usize, 7usize, PartnerId(3)), (122, 86, PartnerId(516))] {
        let id = format!("k={k}/t={t}");
        let secrets: Vec<SecretScalar> = (0..k).map(|_| SecretScalar::random(&mut rng)).collect();
        group.bench_function(BenchmarkId::new("deal", &id), |b| {
            b.iter(|| Dealing::new(&secrets[0], t, &mut rng))
        });
        let dealings: Vec<Dealing> = secrets
            .iter()
            .map(|s| Dealing::new(s, t, &mut rng))
            .collect();
        let shares: Vec<Share> = dealings
            .iter()
            .zip(&secrets)
            .map(|(d, s)| d.shares(s, &[me]).remove(0))
            .collect();
        let dealt: Vec<(&Commitments, &SecretScalar)> = dealings
            .iter()
            .zip(&shares)
            .map(|(d, s)| (&d.commitments, &s.value))
            .collect();
        let batch = || assert!(verify_batch(me, &dealt, &[1; 32]));
        let one_by_one = || {
            for (d, s) in dealings.iter().zip(&shares) {
                assert!(d.commitments.verify_share(s));
            }
        };
        group.bench_function(BenchmarkId::new("verify_batch", &id), |b| b.iter(batch));
        group.bench_function(BenchmarkId::new("verify_one_by_one", &id), |b| {
            b.iter(one_by_one)
        });
        let (subject, baseline) = median_pair(9, batch, one_by_one);
        report(
            &format!("feldman {id}: one batch vs one dealer at a time"),
            subject,
            baseline,
            "< 1x",
        );
    }
    group.finish();
}

criterion_group!(
    benches,
    client_masking,
    coordinator,
    sparse_vs_complete,
    shamir,
    feldman
);
criterion_main!(benches);
