//! Mechanism benchmarks: noise throughput beside OpenDP's own vector measurement, Civic's
//! exact samplers (`civic_mechanisms::sampler`) beside OpenDP's on 10⁶ cells, plan compile
//! and decode for a 10⁴-cell contingency table, and the accuracy cost of distributed noise
//! against central noise at the same ρ (a table, calibrated and simulated).
//!
//! `cargo bench --bench mechanisms`; figures in `benches/README.md`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use civic_mechanisms::sampler::{GaussianScale, LaplaceScale};
use civic_mechanisms::{AggregationPlan, NoiseKind, NoiseSpec};
use civic_policies::{DatasetPolicy, Query, Rho};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use opendp::domains::{AtomDomain, VectorDomain};
use opendp::measurements::{make_gaussian, make_laplace};
use opendp::measures::{MaxDivergence, ZeroConcentratedDivergence};
use opendp::metrics::{L1Distance, L2Distance};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

/// OpenDP's own vector measurement, built and invoked directly: the baseline.
fn opendp_direct(kind: NoiseKind, scale: f64, values: &Vec<i64>) -> Vec<i64> {
    match kind {
        NoiseKind::DiscreteLaplace => make_laplace::<_, _, MaxDivergence>(
            VectorDomain::new(AtomDomain::<i64>::default()),
            L1Distance::<i64>::default(),
            scale,
            None,
        )
        .and_then(|m| m.invoke(values)),
        NoiseKind::DiscreteGaussian => make_gaussian::<_, _, ZeroConcentratedDivergence>(
            VectorDomain::new(AtomDomain::<i64>::default()),
            L2Distance::<f64>::default(),
            scale,
            None,
        )
        .and_then(|m| m.invoke(values)),
    }
    .expect("samples")
}

fn spec(kind: NoiseKind) -> NoiseSpec {
    match kind {
        NoiseKind::DiscreteLaplace => NoiseSpec::laplace_for_epsilon(3, 1.0).expect("valid"),
        NoiseKind::DiscreteGaussian => NoiseSpec::gaussian_for_rho(3.0, 0.5).expect("valid"),
    }
}

fn noise(c: &mut Criterion) {
    let budget = Rho::cap(1e6).expect("valid");
    let mut group = c.benchmark_group("noise");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(3));
    for kind in [NoiseKind::DiscreteLaplace, NoiseKind::DiscreteGaussian] {
        let spec = spec(kind);
        for n in [1_000usize, 10_000, 100_000, 1_000_000] {
            let values = vec![100i64; n];
            let id = format!("{kind:?}/{n}");
            if n < 1_000_000 {
                group.throughput(Throughput::Elements(n as u64));
                group.bench_function(BenchmarkId::new("civic_release", &id), |b| {
                    b.iter(|| black_box(spec.release(&values, budget).expect("samples")))
                });
                group.bench_function(BenchmarkId::new("opendp_direct", &id), |b| {
                    b.iter(|| black_box(opendp_direct(kind, spec.scale, &values)))
                });
            }
            // One timed run of each for the ratio line (10⁶ cells take seconds).
            let t = Instant::now();
            black_box(spec.release(&values, budget).expect("samples"));
            let ours = t.elapsed();
            let t = Instant::now();
            black_box(opendp_direct(kind, spec.scale, &values));
            let theirs = t.elapsed();
            println!(
                "RATE {kind:?} {n} cells: civic {:.0} samples/s, OpenDP direct {:.0} samples/s, civic {:.1}x faster",
                n as f64 / ours.as_secs_f64(),
                n as f64 / theirs.as_secs_f64(),
                theirs.as_secs_f64() / ours.as_secs_f64()
            );
        }
    }
    group.finish();
}

/// `values` with Civic's exact sampler's noise at `spec`'s scale, on one core.
fn civic_sampler(spec: &NoiseSpec, values: &[i64], rng: &mut ChaCha20Rng) -> Vec<i64> {
    match spec.kind {
        NoiseKind::DiscreteLaplace => {
            let scale = LaplaceScale::exact(spec.scale).expect("fits");
            values.iter().map(|v| v + scale.sample(rng)).collect()
        }
        NoiseKind::DiscreteGaussian => {
            let scale = GaussianScale::at_least(spec.scale).expect("fits");
            values.iter().map(|v| v + scale.sample(rng)).collect()
        }
    }
}

/// Civic's exact samplers beside OpenDP's on the same scales: criterion on 10⁵ cells, and one
/// timed run each on 10⁶ cells for the ratio line (goal: 10⁶ cells under 0.5 s, ≥ 20× OpenDP).
fn samplers(c: &mut Criterion) {
    let mut group = c.benchmark_group("exact_samplers");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(3));
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    for (kind, scales) in [
        (NoiseKind::DiscreteLaplace, [3.0, 3.0f64.next_up(), 1000.0]),
        (
            NoiseKind::DiscreteGaussian,
            [3.0, 2.449_489_742_783_178, 1000.0],
        ),
    ] {
        for scale in scales {
            let spec = NoiseSpec {
                kind,
                scale,
                sensitivity: 1.0,
            };
            let values = vec![100i64; 100_000];
            group.throughput(Throughput::Elements(values.len() as u64));
            let id = format!("{kind:?}/scale {scale}/100000");
            group.bench_function(BenchmarkId::new("civic", &id), |b| {
                b.iter(|| black_box(civic_sampler(&spec, &values, &mut rng)))
            });
            let n = 1_000_000;
            let values = vec![100i64; n];
            let t = Instant::now();
            black_box(civic_sampler(&spec, &values, &mut rng));
            let ours = t.elapsed();
            let t = Instant::now();
            black_box(opendp_direct(kind, scale, &values));
            let theirs = t.elapsed();
            println!(
                "SAMPLER {kind:?} scale {scale} {n} cells: civic {:.3} s ({:.1} M/s), OpenDP {:.3} s ({:.2} M/s), civic {:.1}x faster",
                ours.as_secs_f64(),
                n as f64 / ours.as_secs_f64() / 1e6,
                theirs.as_secs_f64(),
                n as f64 / theirs.as_secs_f64() / 1e6,
                theirs.as_secs_f64() / ours.as_secs_f64()
            );
        }
    }
    group.finish();
}

/// A policy whose four 10-value categories make a 10⁴-cell contingency table.
fn wide_policy() -> DatasetPolicy {
    let mut toml = String::from(
        "[dataset]\nid = \"wide\"\ntitle = \"Wide\"\npartners = [\"a\", \"b\", \"c\"]\n\n\
         [contribution]\nrows_per_resident_per_partner = 1\n\n",
    );
    for name in ["c1", "c2", "c3", "c4"] {
        let domain: Vec<String> = (0..10).map(|v| format!("\"{v}\"")).collect();
        toml += &format!(
            "[[columns]]\nname = \"{name}\"\ntype = \"category\"\ndomain = [{}]\n\n",
            domain.join(", ")
        );
    }
    toml += "[budget]\ntotal = { rho = 1.0 }\nper_query = { rho = 0.5 }\n\n[governance]\nmin_partners = 2\n\n[disclosure]\nprofile = \"none\"\n";
    DatasetPolicy::from_toml(&toml, "wide.toml").expect("valid")
}

fn plan(c: &mut Criterion) {
    let policy = wide_policy();
    let query: Query = serde_json::from_str(
        r#"{"dataset":"wide","statistic":{"histogram":{"columns":["c1","c2","c3","c4"]}}}"#,
    )
    .expect("parses");
    let validated = query.validate(&policy).expect("valid");
    let mut group = c.benchmark_group("plan_10k_cells");
    group.bench_function("compile", |b| {
        b.iter(|| {
            black_box(AggregationPlan::compile(&validated, &policy, 1_000_000).expect("compiles"))
        })
    });
    let plan = AggregationPlan::compile(&validated, &policy, 1_000_000).expect("compiles");
    assert_eq!(plan.vector_len, 10_000);
    let summed = vec![7i64; plan.vector_len];
    group.bench_function("decode", |b| {
        b.iter(|| black_box(plan.decode(&summed).expect("decodes").len()))
    });
    group.finish();
}

/// Distributed against central noise at the same ρ, for n partners with no dropout and with
/// the most dropouts the round tolerates: the share σ each partner adds (for the honest
/// contributors the round guarantees), and the released error's standard deviation against
/// the central mechanism's, calibrated (σ·√k against σ_central) and simulated (20,000 sums
/// of k exact shares, fixed seed). Rounds as the coordinator configures them with a 20%
/// dropout tolerance and one colluder (the board's default), for a count (Δ = 1) at
/// ρ = 0.005 (σ_central = 10).
fn distributed_accuracy(c: &mut Criterion) {
    use civic_mechanisms::ShareCount;
    use civic_mechanisms::distributed::share_sigma_for_rho;
    use civic_secagg::{GraphKind, PartnerId, RoundConfig, RoundId, Tolerances, Width};
    let rho = 0.005;
    let central = 1.0 / (2.0f64 * rho).sqrt();
    let mut rng = ChaCha20Rng::seed_from_u64(19);
    println!("DISTRIBUTED rho {rho}, count, central sigma {central:.3}");
    println!(
        "DISTRIBUTED | n | t | least contributors k | honest h | share σ | error/central, no dropout (calibrated, simulated) | error/central, worst dropout (calibrated, simulated) |"
    );
    for n in [3usize, 5, 8, 20] {
        let mut config = RoundConfig::new(
            RoundId(1),
            (1..=n as u32).map(PartnerId).collect(),
            1,
            Width::W64,
            GraphKind::Complete,
            Tolerances {
                max_dropout_rate: 0.2,
                max_corrupt_fraction: 0.0,
            },
            2,
        )
        .unwrap();
        config.threshold = config
            .threshold
            .max(civic_secagg::graph::strict_majority(n + 1));
        let honest = config.honest_contributors(1);
        let least = config.threshold.max(config.min_survivors);
        let count = ShareCount {
            honest,
            partners: n,
        };
        let sigma = share_sigma_for_rho(rho, count, 1, 1.0, 1.0).unwrap();
        let scale = GaussianScale::at_least(sigma).unwrap();
        let mut simulate = |k: usize| {
            let draws = 20_000;
            let sq: f64 = (0..draws)
                .map(|_| {
                    let s: i64 = (0..k).map(|_| scale.sample(&mut rng)).sum();
                    (s as f64).powi(2)
                })
                .sum();
            (sq / draws as f64).sqrt() / central
        };
        let (all, fewest) = (simulate(n), simulate(least));
        println!(
            "DISTRIBUTED | {n} | {} | {least} | {honest} | {sigma:.3} | {:.2}, {all:.2} | {:.2}, {fewest:.2} |",
            config.threshold,
            sigma * (n as f64).sqrt() / central,
            sigma * (least as f64).sqrt() / central,
        );
    }
    let mut group = c.benchmark_group("distributed");
    group.sample_size(10);
    group.bench_function("calibrate share σ, 10^6 slots, h = 10", |b| {
        let count = ShareCount {
            honest: 10,
            partners: 20,
        };
        b.iter(|| black_box(share_sigma_for_rho(rho, count, 1_000_000, 1.0, 1.0)))
    });
    group.finish();
}

criterion_group!(benches, noise, samplers, plan, distributed_accuracy);
criterion_main!(benches);
