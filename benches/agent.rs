//! Partner agent benchmarks: local aggregation of a 10⁶-row CSV extract (read, map, filter,
//! bin, bound per resident, sum) beside a plain csv-crate parse of the same file, then a
//! ratio report and the agent's peak memory for 10⁶ and 10⁷ rows.
//!
//! `cargo bench --bench agent` (a couple of minutes; `CIVIC_BENCH_SKIP_10M=1` skips the
//! 10⁷-row memory check). Figures in `benches/README.md`.

use std::collections::BTreeMap;
use std::fs::File;
use std::hint::black_box;
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use civic_client_sdk::evaluate::{Aggregator, CompiledPlan, ScanCounts};
use civic_client_sdk::schema::ColumnReader;
use civic_client_sdk::source::{ScanMode, scan_csv};
use civic_mechanisms::AggregationPlan;
use civic_policies::{DatasetPolicy, Query};
use criterion::{Criterion, SamplingMode, Throughput};

const ROWS: u64 = 1_000_000;
const BIG_ROWS: u64 = 10_000_000;
const SEED: u64 = 0x5eed_c1c1_0001;
const HEADER: &str = "patient_ref,age_years,gender,imd_decile,hba1c_mmol,diabetic,notes\n";
/// Local column of the resident pseudonym.
const RESIDENT: &str = "patient_ref";

const POLICY: &str = r#"
[dataset]
id = "diabetes"
title = "Diabetes prevalence and control"
partners = ["gp-north", "gp-central", "gp-south"]

[contribution]
rows_per_resident_per_partner = 1
max_partners_per_person = 2

[[columns]]
name = "age"
type = "integer"
min = 18
max = 100
bins = [18, 40, 60, 80, 100]

[[columns]]
name = "sex"
type = "category"
domain = ["female", "male"]

[[columns]]
name = "has_diabetes"
type = "boolean"

[[columns]]
name = "hba1c"
type = "decimal"
min = 20.0
max = 150.0
resolution = 0.1
bins = [20.0, 42.0, 48.0, 58.0, 75.0, 150.0]

[budget]
total = { rho = 0.5 }
per_query = { rho = 0.1 }

[governance]
min_partners = 2

[disclosure]
profile = "none"
"#;

/// Histogram of age by sex among residents with diabetes, bounded per resident.
const HISTOGRAM: &str = r#"{"dataset": "diabetes",
    "statistic": {"histogram": {"columns": ["age"]}},
    "filter": {"compare": {"column": "has_diabetes", "op": "eq", "value": true}},
    "group_by": ["sex"]}"#;
/// Mean HbA1c by diabetes status.
const MEAN: &str = r#"{"dataset": "diabetes",
    "statistic": {"mean": {"column": "hba1c"}},
    "group_by": ["has_diabetes"]}"#;
/// Every row counts: with a resident column, one map entry per distinct resident.
const COUNT: &str = r#"{"dataset": "diabetes", "statistic": "count"}"#;

/// SplitMix64: a small deterministic generator for the extract.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (the bias is irrelevant here).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A pseudonym: 16 hex digits derived from the resident's number.
fn pseudonym(resident: u64) -> u64 {
    Rng(resident ^ 0x0123_4567_89ab_cdef).next()
}

const NOTE_WORDS: [&str; 12] = [
    "reviewed",
    "by",
    "practice",
    "nurse",
    "foot",
    "check",
    "done",
    "retinal",
    "screening",
    "booked",
    "declined",
    "statin",
];

/// Writes a partner extract of `rows` rows. About 3% of rows repeat an earlier resident (cut
/// by the bound of one row per resident), and every read column has some gaps and oddities:
/// ages outside the policy's bounds, an unmapped sex code, missing values.
fn write_extract(path: &Path, rows: u64, seed: u64) -> std::io::Result<()> {
    let mut out = BufWriter::with_capacity(1 << 20, File::create(path)?);
    out.write_all(HEADER.as_bytes())?;
    let mut rng = Rng(seed);
    let mut line = String::with_capacity(256);
    for i in 0..rows {
        use std::fmt::Write as _;
        line.clear();
        let resident = if i > 0 && rng.below(100) < 3 {
            rng.below(i)
        } else {
            i
        };
        let diabetic = rng.below(100) < 12;
        write!(line, "P{:016x},", pseudonym(resident)).expect("formats");
        if rng.below(100) != 0 {
            write!(line, "{}", 16 + rng.below(89)).expect("formats");
        }
        line.push(',');
        line.push_str(match rng.below(100) {
            0..49 => "F",
            49..98 => "M",
            98 => "U",
            _ => "",
        });
        write!(line, ",{},", 1 + rng.below(10)).expect("formats");
        if rng.below(100) >= 8 {
            let tenths = if diabetic {
                400 + rng.below(800)
            } else {
                280 + rng.below(200)
            };
            write!(line, "{}.{}", tenths / 10, tenths % 10).expect("formats");
        }
        line.push_str(if diabetic { ",Y," } else { ",N," });
        let words = rng.below(9);
        let quoted = words > 3 && rng.below(2) == 0;
        if quoted {
            line.push('"');
        }
        for w in 0..words {
            if w > 0 {
                line.push_str(if quoted && w == 3 { ", " } else { " " });
            }
            line.push_str(NOTE_WORDS[rng.below(NOTE_WORDS.len() as u64) as usize]);
        }
        if quoted {
            line.push('"');
        }
        line.push('\n');
        out.write_all(line.as_bytes())?;
    }
    out.flush()
}

/// One query, compiled, with its column readers (the partner's mapping) and resident column.
struct Case {
    compiled: CompiledPlan,
    readers: Vec<ColumnReader>,
    resident: Option<&'static str>,
}

impl Case {
    fn new(policy: &DatasetPolicy, query: &str, resident: Option<&'static str>) -> Self {
        let query: Query = serde_json::from_str(query).expect("query parses");
        let validated = query.validate(policy).expect("query is valid");
        let plan = AggregationPlan::compile(&validated, policy, 10_000_000).expect("compiles");
        let compiled = CompiledPlan::new(&validated, policy, &plan).expect("plan compiles");
        let readers = compiled
            .columns
            .iter()
            .map(|name| {
                let column = policy.column(name).expect("in the policy").clone();
                let (local, values): (&str, &[(&str, &str)]) = match name.as_str() {
                    "age" => ("age_years", &[]),
                    "sex" => ("gender", &[("F", "female"), ("M", "male")]),
                    "has_diabetes" => ("diabetic", &[("Y", "true"), ("N", "false")]),
                    "hba1c" => ("hba1c_mmol", &[]),
                    other => panic!("unmapped column {other}"),
                };
                let values: BTreeMap<String, String> = values
                    .iter()
                    .map(|(l, f)| (l.to_string(), f.to_string()))
                    .collect();
                ColumnReader::new(column, local.to_string(), values).expect("valid mapping")
            })
            .collect();
        Self {
            compiled,
            readers,
            resident,
        }
    }

    /// What the agent does for a CSV source: stream the file through the aggregator.
    fn aggregate(&self, path: &Path) -> (Vec<i64>, ScanCounts) {
        let mut aggregator = Aggregator::new(&self.compiled);
        scan_csv(
            path,
            b',',
            &self.readers,
            self.resident,
            ScanMode::Strict,
            &mut |cells, resident, _| aggregator.push(cells, resident),
        )
        .expect("scans");
        aggregator.finish()
    }

    /// The same scan (UTF-8 check, parse, value mapping) with the rows discarded.
    fn scan_only(&self, path: &Path) -> u64 {
        let mut touched = 0u64;
        scan_csv(
            path,
            b',',
            &self.readers,
            self.resident,
            ScanMode::Strict,
            &mut |cells, resident, _| {
                touched += cells.len() as u64 + resident.map_or(0, |r| r.len() as u64);
            },
        )
        .expect("scans");
        black_box(touched)
    }
}

/// The baseline: the csv crate parsing every record of the file, read the way the agent
/// reads it, touching every field and nothing more.
fn plain_parse(path: &Path) -> u64 {
    let file = File::open(path).expect("opens");
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(BufReader::with_capacity(1 << 20, file));
    let mut record = csv::ByteRecord::new();
    let mut bytes = 0u64;
    while reader.read_byte_record(&mut record).expect("parses") {
        for field in record.iter() {
            bytes += field.len() as u64;
        }
    }
    black_box(bytes)
}

/// A field of /proc/self/status in KiB (Linux only).
fn status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line[field.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// The peak resident set over `f`: (resident set or peak before, peak after), in KiB. Where
/// the kernel lets us, the peak is reset to the current resident set first (`clear_refs` 5),
/// so the difference is what `f` added; otherwise it is the growth of the process's lifetime
/// peak, a lower bound.
fn peak_over<T>(f: impl FnOnce() -> T) -> Option<(u64, u64, T)> {
    let reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
    let before = status_kib(if reset { "VmRSS:" } else { "VmHWM:" })?;
    let out = f();
    let after = status_kib("VmHWM:")?;
    Some((before, after, out))
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort();
    xs[xs.len() / 2]
}

struct Fixture {
    _dir: tempfile::TempDir,
    path: PathBuf,
    big: Option<PathBuf>,
    rows: u64,
    histogram: Case,
    histogram_open: Case,
    mean: Case,
    mean_open: Case,
    count_residents: Case,
}

impl Fixture {
    fn new(rows: u64, big: bool) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("extract_1m.csv");
        let t = Instant::now();
        write_extract(&path, rows, SEED).expect("writes the extract");
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        println!(
            "agent fixture: {rows} rows, {:.1} MiB, written in {:.2?}",
            size as f64 / (1 << 20) as f64,
            t.elapsed()
        );
        let big = big.then(|| {
            let big = dir.path().join("extract_10m.csv");
            let t = Instant::now();
            write_extract(&big, BIG_ROWS, SEED ^ 0xb16).expect("writes the big extract");
            let size = std::fs::metadata(&big).map(|m| m.len()).unwrap_or(0);
            println!(
                "agent fixture: {BIG_ROWS} rows, {:.1} MiB, written in {:.2?}",
                size as f64 / (1 << 20) as f64,
                t.elapsed()
            );
            big
        });
        let policy = DatasetPolicy::from_toml(POLICY, "diabetes.toml").expect("policy is valid");
        Self {
            histogram: Case::new(&policy, HISTOGRAM, Some(RESIDENT)),
            histogram_open: Case::new(&policy, HISTOGRAM, None),
            mean: Case::new(&policy, MEAN, Some(RESIDENT)),
            mean_open: Case::new(&policy, MEAN, None),
            count_residents: Case::new(&policy, COUNT, Some(RESIDENT)),
            _dir: dir,
            path,
            big,
            rows,
        }
    }
}

/// Peak memory of aggregation, measured before anything else has grown the heap: without a
/// resident column (10⁶ and 10⁷ rows), then with one and every row eligible.
fn memory_report(fx: &mut Fixture) -> Vec<String> {
    let mut lines = Vec::new();
    let Some((before, after, _)) = peak_over(|| fx.histogram_open.aggregate(&fx.path)) else {
        return vec!["agent peak memory: /proc/self/status not available".into()];
    };
    let mut line = format!(
        "agent peak memory: +{:.1} MiB for 1M rows (VmHWM {:.1} → {:.1} MiB)",
        mib(after.saturating_sub(before)),
        mib(before),
        mib(after)
    );
    match fx.big.take() {
        Some(big) => {
            let t = Instant::now();
            let (before, after, (_, counts)) =
                peak_over(|| fx.histogram_open.aggregate(&big)).expect("status readable");
            let elapsed = t.elapsed();
            std::fs::remove_file(&big).ok();
            assert_eq!(counts.rows, BIG_ROWS);
            line += &format!(
                ", +{:.1} MiB for 10M rows (VmHWM {:.1} → {:.1} MiB), no resident column; the 10M rows took {:.2?} ({:.0} rows/s)",
                mib(after.saturating_sub(before)),
                mib(before),
                mib(after),
                elapsed,
                BIG_ROWS as f64 / elapsed.as_secs_f64()
            );
        }
        None => line += ", no resident column (10M rows skipped)",
    }
    lines.push(line);
    let (before, after, (_, counts)) =
        peak_over(|| fx.count_residents.aggregate(&fx.path)).expect("status readable");
    let grown = after.saturating_sub(before);
    lines.push(format!(
        "agent peak memory: +{:.1} MiB for 1M rows with a resident column (VmHWM {:.1} → {:.1} MiB; {} distinct residents, {:.0} bytes each at the peak; {} repeat rows cut)",
        mib(grown),
        mib(before),
        mib(after),
        counts.aggregated,
        grown as f64 * 1024.0 / counts.aggregated as f64,
        counts.truncated
    ));
    lines
}

fn bench(c: &mut Criterion, fx: &Fixture) {
    let mut group = c.benchmark_group("agent_csv_1m");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(7))
        .throughput(Throughput::Elements(fx.rows));
    group.bench_function("plain_csv_parse", |b| b.iter(|| plain_parse(&fx.path)));
    group.bench_function("aggregate_histogram_with_filter_and_resident_bound", |b| {
        b.iter(|| black_box(fx.histogram.aggregate(&fx.path)))
    });
    group.bench_function("aggregate_mean_decimal", |b| {
        b.iter(|| black_box(fx.mean.aggregate(&fx.path)))
    });
    group.finish();
}

/// Interleaved timed passes, median of each: the ratio lines.
fn ratio_report(fx: &Fixture, passes: usize) -> Vec<String> {
    type Pass<'a> = Box<dyn Fn() + 'a>;
    let subjects: Vec<(&str, Pass)> = vec![
        (
            "plain csv parse",
            Box::new(|| {
                black_box(plain_parse(&fx.path));
            }),
        ),
        (
            "scan only (readers, rows discarded)",
            Box::new(|| {
                black_box(fx.histogram.scan_only(&fx.path));
            }),
        ),
        (
            "histogram (filter, group, resident bound)",
            Box::new(|| {
                black_box(fx.histogram.aggregate(&fx.path));
            }),
        ),
        (
            "histogram without a resident column",
            Box::new(|| {
                black_box(fx.histogram_open.aggregate(&fx.path));
            }),
        ),
        (
            "mean of a decimal by a boolean (resident bound)",
            Box::new(|| {
                black_box(fx.mean.aggregate(&fx.path));
            }),
        ),
        (
            "mean without a resident column",
            Box::new(|| {
                black_box(fx.mean_open.aggregate(&fx.path));
            }),
        ),
    ];
    let mut times = vec![Vec::new(); subjects.len()];
    for _ in 0..passes {
        for (i, (_, run)) in subjects.iter().enumerate() {
            let t = Instant::now();
            run();
            times[i].push(t.elapsed());
        }
    }
    let medians: Vec<Duration> = times.into_iter().map(median).collect();
    let rate = |d: Duration| fx.rows as f64 / d.as_secs_f64();
    let plain = medians[0];
    let mut lines = vec![format!(
        "agent rate: plain csv parse {:.2?} per {} rows ({:.0} rows/s; median of {passes})",
        plain,
        fx.rows,
        rate(plain)
    )];
    for ((name, _), d) in subjects.iter().zip(&medians).skip(1) {
        lines.push(format!(
            "agent ratio: {name} {:.2}× the plain csv parse ({:.2?}; {:.0} rows/s vs {:.0} rows/s)",
            d.as_secs_f64() / plain.as_secs_f64(),
            d,
            rate(*d),
            rate(plain)
        ));
    }
    for (name, case) in [("histogram", &fx.histogram), ("mean", &fx.mean)] {
        let (_, c) = case.aggregate(&fx.path);
        lines.push(format!(
            "agent {name} counts (resident bound): {} rows, {} eligible, {} cut by the bound, {} aggregated",
            c.rows, c.eligible, c.truncated, c.aggregated
        ));
    }
    lines
}

fn main() {
    // `cargo bench` passes --bench; anything else (cargo test --benches, --list) is a smoke
    // run on a small file.
    let full = std::env::args().any(|a| a == "--bench")
        && !std::env::args().any(|a| a == "--list" || a == "--test");
    let skip_big = std::env::var("CIVIC_BENCH_SKIP_10M").is_ok_and(|v| v == "1");
    let mut fx = Fixture::new(if full { ROWS } else { 20_000 }, full && !skip_big);
    let memory = if full {
        memory_report(&mut fx)
    } else {
        Vec::new()
    };

    let mut criterion = Criterion::default().configure_from_args();
    bench(&mut criterion, &fx);
    criterion.final_summary();

    if full {
        println!();
        for line in ratio_report(&fx, 5).into_iter().chain(memory) {
            println!("{line}");
        }
    }
}
