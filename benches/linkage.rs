//! A pairwise linkage session (`civic-linkage`) beside the same join done in plaintext.
//!
//! `cargo bench --bench linkage` runs the two sizes (a housing association of 10^4
//! residents against a trust of 10^6, and 10^5 against 10^5; about 3 minutes in all), then
//! criterion's per-operation figures. `cargo test --bench linkage` runs one small session
//! as a check.
//!
//! The session runs in one process with two worker threads per step, as an agent would on
//! this 2-core machine: both sides' work is timed step by step and added up (on one machine
//! the two sides could not run at once anyway), every message is encoded and decoded with
//! bincode as it would be on the wire, and the two sides' shares must add up to the
//! plaintext join's table, or the bench stops. Not included: HTTP and the end-to-end
//! encryption of the relay, which add a copy of each message.
//!
//! The baseline is a hash join in the clear: the holder's records in a `HashMap` keyed by
//! identifier, the matcher's scanned against it, the values summed per category.

use std::collections::HashMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use civic_linkage::group::identifier_point;
use civic_linkage::paillier::SecretKey;
use civic_linkage::{
    DummyNoise, HolderRecord, MatcherRecord, Params, Setup, holder_start, matcher_start, slots,
};
use criterion::Criterion;
use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};
use serde::Serialize;
use serde::de::DeserializeOwned;

const THREADS: usize = 2;
/// The matcher's categories (e.g. respiratory admission: none, one, more) and the holder's
/// values per resident (e.g. damp and mould reported, overcrowded).
const CATEGORIES: u32 = 3;
const WIDTH: u32 = 2;

struct Case {
    holder: usize,
    matcher: usize,
    /// Residents at both.
    overlap: usize,
}

const FULL: [Case; 2] = [
    Case {
        holder: 10_000,
        matcher: 1_000_000,
        overlap: 6_000,
    },
    Case {
        holder: 100_000,
        matcher: 100_000,
        overlap: 40_000,
    },
];
const CHECK: Case = Case {
    holder: 300,
    matcher: 2_000,
    overlap: 150,
};

fn id(i: usize) -> Vec<u8> {
    format!("{:010}", 4_000_000_000u64 + i as u64).into_bytes()
}

/// Holder residents 0..h; matcher residents h − overlap .. h − overlap + m.
fn data(case: &Case) -> (Vec<HolderRecord>, Vec<MatcherRecord>) {
    let mut rng = ChaCha20Rng::seed_from_u64(2026);
    let holder = (0..case.holder)
        .map(|i| HolderRecord {
            identifier: id(i),
            values: (0..WIDTH).map(|_| rng.next_u64() % 2).collect(),
        })
        .collect();
    let first = case.holder - case.overlap;
    let matcher = (first..first + case.matcher)
        .map(|i| MatcherRecord {
            identifier: id(i),
            category: (rng.next_u64() % u64::from(CATEGORIES)) as u32,
        })
        .collect();
    (holder, matcher)
}

fn plaintext_join(holder: &[HolderRecord], matcher: &[MatcherRecord]) -> Vec<u64> {
    let by_id: HashMap<&[u8], &[u64]> = holder
        .iter()
        .map(|h| (h.identifier.as_slice(), h.values.as_slice()))
        .collect();
    let mut table = vec![0u64; (CATEGORIES * WIDTH) as usize];
    for m in matcher {
        if let Some(values) = by_id.get(m.identifier.as_slice()) {
            for (j, v) in values.iter().enumerate() {
                table[m.category as usize * WIDTH as usize + j] += v;
            }
        }
    }
    table
}

fn params(case: &Case) -> Params {
    Params::new(Setup {
        context: b"bench round / housing x trust".to_vec(),
        categories: CATEGORIES,
        width: WIDTH,
        value_max: 1,
        holder_capacity: case.holder as u32,
        matcher_capacity: case.matcher as u32,
        // The matcher's counts at ρ = 0.01 (σ ≈ 7), failure below 10⁻¹²: about 60 dummies
        // per category.
        dummies: DummyNoise::calibrate(0.01, 1.0, CATEGORIES, 1e-12).expect("valid"),
    })
    .expect("valid")
}

/// A message through the wire encoding: its bytes, and the copy the peer decodes.
fn wire<T: Serialize + DeserializeOwned>(message: &T) -> (usize, T) {
    let config = bincode::config::standard().with_fixed_int_encoding();
    let bytes = bincode::serde::encode_to_vec(message, config).expect("encodes");
    let (decoded, _) = bincode::serde::decode_from_slice(&bytes, config).expect("decodes");
    (bytes.len(), decoded)
}

struct Report {
    steps: Vec<(&'static str, Duration)>,
    /// Bytes of the holder's offer, the returned list, the matcher's offer, the masked sums.
    messages: [usize; 4],
    plaintext: Duration,
}

fn session(case: &Case) -> Report {
    let (holder_records, matcher_records) = data(case);
    let params = params(case);
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    let mut steps = Vec::new();
    let mut step = |name, start: Instant| steps.push((name, start.elapsed()));

    let t = Instant::now();
    let (holder, holder_offer) =
        holder_start(params.clone(), &holder_records, &mut rng, THREADS).expect("holder starts");
    let (offer_bytes, holder_offer) = wire(&holder_offer);
    step("holder: key, hash, blind, encrypt", t);

    let t = Instant::now();
    let (matcher, matcher_offer) =
        matcher_start(params, &matcher_records, &mut rng, THREADS).expect("matcher starts");
    let (matcher_offer_bytes, matcher_offer) = wire(&matcher_offer);
    step("matcher: hash, blind", t);

    let t = Instant::now();
    let (holder, returned) = holder
        .respond(&matcher_offer, &mut rng, THREADS)
        .map_err(|e| e.error)
        .expect("holder responds");
    let (returned_bytes, returned) = wire(&returned);
    step("holder: blind the matcher's list", t);

    let t = Instant::now();
    let (output, sums) = matcher
        .finish(&holder_offer, &returned, &mut rng, THREADS)
        .map_err(|e| e.error)
        .expect("matcher finishes");
    let (sums_bytes, sums) = wire(&sums);
    step("matcher: match, sum, mask", t);

    let t = Instant::now();
    let holder_shares = holder
        .finish(&sums)
        .map_err(|e| e.error)
        .expect("holder finishes");
    step("holder: decrypt shares", t);

    let t = Instant::now();
    let truth = black_box(plaintext_join(&holder_records, &matcher_records));
    let plaintext = t.elapsed();
    let table: Vec<u64> = holder_shares
        .0
        .iter()
        .zip(&output.shares.0)
        .map(|(a, b)| a.wrapping_add(*b))
        .collect();
    assert_eq!(table, truth, "the shares must add up to the plaintext join");

    Report {
        steps,
        messages: [offer_bytes, returned_bytes, matcher_offer_bytes, sums_bytes],
        plaintext,
    }
}

fn print(case: &Case, r: &Report) {
    let total: Duration = r.steps.iter().map(|s| s.1).sum();
    println!(
        "\n{} × {} records ({} in both), {CATEGORIES} categories × {WIDTH} values:",
        case.holder, case.matcher, case.overlap
    );
    for (name, d) in &r.steps {
        println!("  {name:36} {:9.2} s", d.as_secs_f64());
    }
    println!("  {:36} {:9.2} s", "total", total.as_secs_f64());
    println!(
        "  plaintext hash join                  {:9.4} s  (RATIO linkage/plaintext {:.0}×)",
        r.plaintext.as_secs_f64(),
        total.as_secs_f64() / r.plaintext.as_secs_f64()
    );
    let [offer, returned, matcher_offer, sums] = r.messages.map(|b| b as f64);
    let (h, m) = (case.holder as f64, case.matcher as f64);
    println!(
        "  holder sends {:.1} MB: its list {:.0} B per own record, the returned list {:.0} B per matcher record",
        (offer + returned) / 1e6,
        offer / h,
        returned / m
    );
    println!(
        "  matcher sends {:.1} MB: its list {:.0} B per own record, the masked sums {:.0} B in all",
        (matcher_offer + sums) / 1e6,
        matcher_offer / m,
        sums
    );
}

/// Per-operation costs: what the session's steps are made of.
fn operations(c: &mut Criterion) {
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let key = SecretKey::generate(&mut rng);
    let m = slots::pack(&[1, 0], 55);
    let c1 = key.encrypt(&m, &mut rng);
    let point = identifier_point(&[0; 32], b"4000000001");
    let scalar = curve25519_dalek::scalar::Scalar::from(123_456_789u64);
    let mut group = c.benchmark_group("linkage_operations");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(3));
    group.bench_function("hash_to_ristretto", |b| {
        b.iter(|| identifier_point(black_box(&[0; 32]), black_box(b"4000000001")))
    });
    group.bench_function("scalar_mult_and_compress", |b| {
        b.iter(|| (black_box(point) * black_box(scalar)).compress())
    });
    group.bench_function("paillier_encrypt_short_exponent", |b| {
        b.iter(|| key.encrypt(black_box(&m), &mut rng))
    });
    group.bench_function("paillier_encrypt_full_randomness", |b| {
        b.iter(|| key.public().encrypt(black_box(&m), &mut rng))
    });
    group.bench_function("paillier_add", |b| {
        b.iter(|| key.public().add(black_box(&c1), black_box(&c1)))
    });
    group.bench_function("paillier_decrypt", |b| {
        b.iter(|| key.decrypt(black_box(&c1)))
    });
    group.sample_size(10);
    group.bench_function("paillier_keygen", |b| {
        b.iter(|| SecretKey::generate(&mut rng))
    });
    group.finish();
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let cases: &[Case] = if full {
        &FULL
    } else {
        std::slice::from_ref(&CHECK)
    };
    for case in cases {
        let report = session(case);
        print(case, &report);
    }
    if full {
        let mut c = Criterion::default().configure_from_args();
        operations(&mut c);
        c.final_summary();
    }
}
