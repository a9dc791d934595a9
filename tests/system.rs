//! Whole-system tests: the coordinator (`civic-coordinator serve`) and the partner agents
//! (`civic-agent run` and `civic-agent once`) as separate processes on loopback, set up as an
//! operator would: accounts from the admin command line, the policy, project and allocation
//! over REST, and each agent configured by its own `partner.toml` over a CSV extract written
//! here with a known truth.
//!
//! - `happy_path_…` and `concurrent_researchers_…` are fast and run with `cargo test`.
//! - `a_partner_dropping_out_…` and `the_coordinator_killed_…` are slow (`#[ignore]`); CI runs
//!   them with `cargo test -p civic --test system -- --ignored`.
//! - `a_message_retried_after_its_phase_closed_…` is the regression test for a coordinator
//!   bug these tests found (a retried message refused once its phase had closed).
//!
//! Releases are made at ε = 60 on counts of sensitivity 1: the discrete Laplace noise is 0
//! except with probability ~2e-26, so each released value is checked exactly against the
//! sum of the extracts of exactly the partners the round counted.
//!
//! Timing kills. The dropout and restart tests must kill a process in a given protocol
//! phase. They watch the coordinator's SQLite store through a read-only connection: the
//! coordinator stores every accepted protocol message (`round_messages`) and every phase
//! change (`rounds.phase`) before it acts on it, so the store says exactly what a partner
//! had sent, and which phase was open, when the kill landed. The tests write nothing there.
//! In the restart test the agents reach the coordinator through a proxy the test holds
//! while it kills the coordinator, so that no agent loses the reply to a message the
//! coordinator took (see [`Proxy`]; that case is covered by its own test).
//!
//! The binaries are found next to this test (`target/<profile>/`); `cargo test --workspace`
//! builds them. If they are missing (`cargo test -p civic --test system` on a clean tree),
//! the first test builds them with `cargo build -p civic-server -p civic-client-sdk --bins`.
//! They are not rebuilt when present: after changing server/ or client-sdk/, run
//! `cargo build --bins` (or `cargo test --workspace`) first.
//!
//! `CIVIC_SYSTEM_KEEP=1` keeps each test's directory (store, configurations, extracts,
//! agents' journals, every process's log) and prints where it is.

use std::collections::BTreeSet;
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// The phases of a secure-aggregation round, as the store names them.
const PHASES: [&str; 5] = [
    "advertise_keys",
    "share_keys",
    "masked_input_collection",
    "consistency_check",
    "unmasking",
];

/// An agent that answers each phase within about 20 ms (its inbox poll is a tenth of
/// `poll_seconds`, at least 20 ms).
const FAST: f64 = 0.2;
/// An agent that looks at its inbox every 150 ms: a phase it takes part in stays open that
/// long, which leaves time to kill a process inside it.
const SLOW: f64 = 1.5;

// ---------------------------------------------------------------------------------------
// Processes.

/// The directory holding `civic-coordinator` and `civic-agent`, built if missing.
fn bin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let exe = std::env::current_exe().expect("the test executable's path");
        // target/<profile>/deps/system-… → target/<profile>
        let dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("the test runs from target/<profile>/deps")
            .to_path_buf();
        let missing = ["civic-coordinator", "civic-agent", "civic-board"]
            .iter()
            .any(|b| !dir.join(b).exists());
        if missing {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let mut build = Command::new(cargo);
            build.current_dir(env!("CARGO_MANIFEST_DIR")).args([
                "build",
                "-p",
                "civic-server",
                "-p",
                "civic-client-sdk",
                "--bins",
            ]);
            if dir.file_name().is_some_and(|n| n == "release") {
                build.arg("--release");
            }
            let status = build.status().expect("run cargo to build the binaries");
            assert!(status.success(), "building the binaries failed: {status}");
        }
        dir
    })
}

fn bin(name: &str) -> PathBuf {
    bin_dir().join(name)
}

/// A child process, killed with SIGKILL when dropped (also when a test fails, so no
/// coordinator or agent outlives its test); on a failure the end of its log is printed.
struct Proc {
    name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Proc {
    fn spawn(name: &str, mut cmd: Command, log: &Path) -> Proc {
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let err = out.try_clone().unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Proc {
            name: name.to_string(),
            child: Some(child),
            log: log.to_path_buf(),
        }
    }

    /// SIGKILL (what `Child::kill` sends on Unix), then reaps it.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The exit status, if it has exited.
    fn exited(&mut self) -> Option<ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok()??;
        self.child = None;
        Some(status)
    }

    /// Waits for the process to exit by itself.
    async fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(s) = self.exited() {
                return s;
            }
            assert!(self.child.is_some(), "{} was already reaped", self.name);
            assert!(
                start.elapsed() < limit,
                "{} still running after {limit:?}",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(30)..].join("\n");
            eprintln!(
                "---- last lines of {} ({}):\n{tail}",
                self.name,
                self.log.display()
            );
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The network between the agents and the coordinator in the restart test: a reverse proxy
/// on loopback that forwards each HTTP/1.1 request as it comes (agents keep connections
/// alive and send sized bodies, which is all it handles).
///
/// Before the coordinator is killed the test holds it: requests already forwarded complete
/// (their replies reach the agents) and new ones wait, to go on to the restarted
/// coordinator once released. So the kill never falls between the coordinator taking a
/// message and the agent getting the reply: a retry of a taken message after its phase has
/// closed was refused before the fix tested by `a_message_retried_after_its_phase_closed_…`;
/// the proxy keeps the restart test about restarts alone.
struct Proxy {
    url: String,
    gate: std::sync::Arc<tokio::sync::RwLock<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start(upstream: String, http: reqwest::Client) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let gate = std::sync::Arc::new(tokio::sync::RwLock::new(()));
        let shared = gate.clone();
        let task = tokio::spawn(async move {
            // Owned here: aborting the accept loop drops (and aborts) every connection.
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                let (upstream, http, gate) = (upstream.clone(), http.clone(), shared.clone());
                connections.spawn(async move {
                    let _ = Self::serve(stream, &upstream, &http, &gate).await;
                });
                while connections.try_join_next().is_some() {}
            }
        });
        Proxy { url, gate, task }
    }

    /// Waits for the requests in flight to complete and holds back new ones until the guard
    /// is dropped.
    async fn hold(&self) -> tokio::sync::OwnedRwLockWriteGuard<()> {
        self.gate.clone().write_owned().await
    }

    async fn serve(
        stream: tokio::net::TcpStream,
        upstream: &str,
        http: &reqwest::Client,
        gate: &tokio::sync::RwLock<()>,
    ) -> std::io::Result<()> {
        use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
        let (read, mut write) = stream.into_split();
        let mut read = tokio::io::BufReader::new(read);
        loop {
            let mut line = String::new();
            if read.read_line(&mut line).await? == 0 {
                return Ok(());
            }
            let mut words = line.split_whitespace();
            let (Some(method), Some(target)) = (words.next(), words.next()) else {
                return Ok(());
            };
            let method = Method::from_bytes(method.as_bytes()).unwrap();
            let target = target.to_string();
            let mut headers = Vec::new();
            let mut length = 0;
            loop {
                let mut header = String::new();
                if read.read_line(&mut header).await? == 0 {
                    return Ok(());
                }
                let Some((name, value)) = header.trim_end().split_once(':') else {
                    break;
                };
                let (name, value) = (name.trim().to_ascii_lowercase(), value.trim().to_string());
                match name.as_str() {
                    "content-length" => length = value.parse().unwrap(),
                    "authorization" | "content-type" | "accept" => headers.push((name, value)),
                    _ => {}
                }
            }
            let mut body = vec![0; length];
            read.read_exact(&mut body).await?;
            let (status, content_type, reply) = {
                let _pass = gate.read().await;
                let mut req = http
                    .request(method, format!("{upstream}{target}"))
                    .body(body);
                for (name, value) in headers {
                    req = req.header(name, value);
                }
                match req.send().await {
                    Ok(res) => {
                        let status = res.status();
                        let content_type = res
                            .headers()
                            .get("content-type")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("application/octet-stream")
                            .to_string();
                        match res.bytes().await {
                            Ok(b) => (status, content_type, b.to_vec()),
                            Err(e) => (
                                StatusCode::BAD_GATEWAY,
                                "text/plain".into(),
                                e.to_string().into_bytes(),
                            ),
                        }
                    }
                    Err(e) => (
                        StatusCode::BAD_GATEWAY,
                        "text/plain".into(),
                        e.to_string().into_bytes(),
                    ),
                }
            };
            let head = format!(
                "HTTP/1.1 {} {}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n\r\n",
                status.as_u16(),
                status.canonical_reason().unwrap_or("Unknown"),
                reply.len()
            );
            write.write_all(head.as_bytes()).await?;
            write.write_all(&reply).await?;
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// ---------------------------------------------------------------------------------------
// Data with a known truth.

/// One row of a partner's extract.
#[derive(Clone, Debug)]
struct Row {
    pid: u32,
    age: Option<i64>,
    fell: bool,
}

/// `n` residents (one row each), reproducible from `seed`: some ages missing, some above
/// the public bound (the agent clamps them).
fn rows(seed: u64, n: u32) -> Vec<Row> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut next = move || {
        x = x
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (x >> 33) as u32
    };
    (0..n)
        .map(|i| Row {
            pid: i + 1,
            age: match next() % 20 {
                0 => None,
                1 => Some(120 + i64::from(next() % 20)),
                _ => Some(i64::from(next() % 100)),
            },
            fell: next() % 3 == 0,
        })
        .collect()
}

fn write_csv(path: &Path, rows: &[Row]) {
    let mut text = String::from("resident,age_years,fall_flag\n");
    for r in rows {
        let age = r.age.map(|a| a.to_string()).unwrap_or_default();
        let fell = if r.fell { "Y" } else { "N" };
        text.push_str(&format!("r{},{age},{fell}\n", r.pid));
    }
    std::fs::write(path, text).unwrap();
}

/// Residents whose age is at least `min` (a missing age never passes a filter).
fn count_age_at_least(rows: &[Row], min: i64) -> i64 {
    rows.iter()
        .filter(|r| r.age.is_some_and(|a| a >= min))
        .count() as i64
}

/// Residents who fell, by age band [0, 65), [65, 80), [80, 119] (ages clamped to 119;
/// a missing age counts in no band).
fn falls_by_band(rows: &[Row]) -> [i64; 3] {
    let mut bands = [0; 3];
    for r in rows.iter().filter(|r| r.fell) {
        if let Some(a) = r.age {
            let a = a.clamp(0, 119);
            bands[if a < 65 {
                0
            } else if a < 80 {
                1
            } else {
                2
            }] += 1;
        }
    }
    bands
}

/// A dataset policy over the test schema.
fn policy(id: &str, partners: &[&str], min_partners: usize) -> String {
    let list = partners
        .iter()
        .map(|p| format!("\"{p}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        r#"
[dataset]
id = "{id}"
title = "System test cohort"
partners = [{list}]

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
total = {{ rho = 100000.0 }}
per_query = {{ rho = 5000.0 }}

[governance]
min_partners = {min_partners}
# Central noise: these tests check the partners' exact sums at a vanishing noise (ε = 60);
# client-sdk's agents tests and the Liverpool demo run the default, distributed noise.
noise = "central"

[disclosure]
profile = "none"
"#
    )
}

/// A count for project `project` on `dataset` at ε, optionally of residents aged at least
/// `min_age` (distinct filters make distinct questions: an identical one would be re-served).
fn count_query(project: &str, dataset: &str, epsilon: f64, min_age: Option<i64>) -> Value {
    let mut query = json!({ "dataset": dataset, "statistic": "count" });
    if let Some(min) = min_age {
        query["filter"] = json!({ "compare": { "column": "age", "op": "ge", "value": min } });
    }
    json!({ "project": project, "query": query, "privacy": { "epsilon": epsilon } })
}

fn released_values(view: &Value) -> Vec<i64> {
    view["result"]["rows"][0]
        .as_array()
        .unwrap_or_else(|| panic!("no released row: {view}"))
        .iter()
        .map(|c| {
            let v = c["value"].as_f64().unwrap();
            assert_eq!(v, v.round(), "{view}");
            v as i64
        })
        .collect()
}

fn survivors(view: &Value) -> u64 {
    view["result"]["receipt"]["survivors"]
        .as_u64()
        .unwrap_or_else(|| panic!("no receipt: {view}"))
}

/// ρ values are exact integers of 10⁻¹² units: compare to a relative 10⁻⁹.
fn close(actual: &Value, expected: f64) -> bool {
    let a = actual.as_f64().unwrap_or(f64::NAN);
    (a - expected).abs() <= 1e-9 * expected.abs().max(1.0)
}

// ---------------------------------------------------------------------------------------
// The system: one coordinator process, its store, partners and their agent processes.

/// A partner organisation: its account, its directory (extract, token, identity key,
/// configurations, state) and its rows.
struct Partner {
    name: String,
    id: u32,
    token: String,
    dir: PathBuf,
    rows: Vec<Row>,
}

impl Partner {
    fn config(&self, speed: f64) -> PathBuf {
        self.dir.join(format!(
            "partner-{}.toml",
            if speed == FAST { "fast" } else { "slow" }
        ))
    }

    /// The agent's round journal and ledger (`state/agent-state.json`).
    fn journal(&self) -> Value {
        let text = std::fs::read_to_string(self.dir.join("state/agent-state.json"))
            .unwrap_or_else(|_| "{}".into());
        serde_json::from_str(&text).unwrap()
    }

    fn round_status(&self, round: i64) -> Value {
        self.journal()["rounds"][round.to_string()]["status"].clone()
    }
}

/// What a test's system looks like.
struct Setup {
    dataset: &'static str,
    /// (name, rows) per partner.
    partners: Vec<(&'static str, u32)>,
    min_partners: usize,
    phase_deadline_secs: u64,
    /// Whether the agents reach the coordinator through a [`Proxy`] the test can hold.
    proxy: bool,
}

struct System {
    // Field order matters for Drop: processes go before the directory they live in.
    coordinator: Option<Proc>,
    agents: Vec<Proc>,
    peek: Option<sqlx::SqlitePool>,
    proxy: Option<Proxy>,
    dataset: &'static str,
    base: String,
    /// The coordinator's URL as the agents are configured with it (the proxy's, if any).
    agents_url: String,
    deadline: u64,
    config: PathBuf,
    db: PathBuf,
    http: reqwest::Client,
    admin: String,
    board: String,
    researcher: String,
    partners: Vec<Partner>,
    /// The board members' public keys (`civic-board keygen`), threshold 2.
    board_keys: Vec<String>,
    starts: usize,
    dir: tempfile::TempDir,
}

impl System {
    /// A coordinator on a fresh SQLite file with accounts made from the admin command line,
    /// the dataset, project "falls" (researcher "rita") and its allocation over REST, and
    /// each partner's directory with its extract, token and identity key, registered with
    /// the coordinator by a first `civic-agent once`.
    async fn start(setup: Setup) -> System {
        let mut dir = tempfile::Builder::new()
            .prefix("civic-system-")
            .tempdir()
            .unwrap();
        // CIVIC_SYSTEM_KEEP=1 keeps the store, configurations and logs for a post-mortem.
        if std::env::var_os("CIVIC_SYSTEM_KEEP").is_some() {
            dir.disable_cleanup(true);
            eprintln!("keeping {}", dir.path().display());
        }
        let db = dir.path().join("civic.db");
        let config = dir.path().join("coordinator.toml");
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            // A killed coordinator leaves pooled connections dead: open one per request.
            .pool_max_idle_per_host(0)
            .build()
            .unwrap();
        let mut sys = System {
            coordinator: None,
            agents: Vec::new(),
            peek: None,
            proxy: None,
            dataset: setup.dataset,
            base: String::new(),
            agents_url: String::new(),
            deadline: setup.phase_deadline_secs,
            config,
            db,
            http,
            admin: String::new(),
            board: String::new(),
            researcher: String::new(),
            partners: Vec::new(),
            board_keys: Vec::new(),
            starts: 0,
            dir,
        };
        sys.configure(free_port());
        sys.admin = sys.create_account("root", "admin").0;
        sys.board = sys.create_account("board-1", "governance").0;
        sys.researcher = sys.create_account("rita", "researcher").0;
        for (i, (name, n)) in setup.partners.iter().enumerate() {
            let (token, id) = sys.create_account(name, "partner");
            let dir = sys.dir.path().join(name);
            std::fs::create_dir_all(&dir).unwrap();
            sys.partners.push(Partner {
                name: name.to_string(),
                id: id.expect("a partner id"),
                token,
                dir,
                rows: rows(i as u64 + 7 * u64::from(*n), *n),
            });
        }
        // A port chosen free may be taken before the coordinator binds it: then try another.
        let mut tries = 0;
        while let Err(e) = sys.try_start_coordinator().await {
            tries += 1;
            assert!(tries < 3, "{e}");
            sys.configure(free_port());
        }

        let names: Vec<&str> = setup.partners.iter().map(|p| p.0).collect();
        let text = policy(setup.dataset, &names, setup.min_partners);
        let path = format!("/v1/datasets/{}", setup.dataset);
        let (s, v) = sys
            .call(
                Method::PUT,
                &path,
                &sys.board,
                Some(json!({ "policy": text })),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        sys.create_project("falls", &["rita"], 50_000.0).await;

        sys.agents_url = sys.base.clone();
        if setup.proxy {
            let proxy = Proxy::start(sys.base.clone(), sys.http.clone()).await;
            sys.agents_url = proxy.url.clone();
            sys.proxy = Some(proxy);
        }
        sys.board_keys = (1..=3)
            .map(|i| sys.board_cli(&["keygen", "--out", &format!("member-{i}.key")]))
            .collect();
        let keys: Vec<String> = (0..sys.partners.len())
            .map(|i| sys.prepare_partner(i, setup.min_partners))
            .collect();
        sys.publish_manifest(&text, &keys).await;
        // A first `once` registers each identity key (no query can run before all are):
        // there is no open round yet, so it exits at once.
        let mut first: Vec<Proc> = (0..sys.partners.len())
            .map(|i| sys.spawn_agent(i, "once", FAST))
            .collect();
        for p in &mut first {
            let status = p.wait_exit(Duration::from_secs(30)).await;
            assert!(status.success(), "{}: {status}", p.name);
        }
        sys
    }

    /// `civic-coordinator --config … admin create-account NAME --role ROLE`: the token and,
    /// for a partner, its id.
    fn create_account(&self, name: &str, role: &str) -> (String, Option<u32>) {
        let out = Command::new(bin("civic-coordinator"))
            .arg("--config")
            .arg(&self.config)
            .args(["admin", "create-account", name, "--role", role])
            .env("CIVIC_LOG", "warn")
            .output()
            .expect("run civic-coordinator admin");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "create-account {name}: {}{stdout}",
            String::from_utf8_lossy(&out.stderr)
        );
        let token = stdout
            .lines()
            .find_map(|l| l.strip_prefix("token (shown once; store it now): "))
            .unwrap_or_else(|| panic!("no token printed: {stdout}"))
            .to_string();
        let id = stdout
            .lines()
            .find_map(|l| l.strip_prefix("partner id: "))
            .map(|n| n.trim().parse().unwrap());
        (token, id)
    }

    /// Runs `civic-board ARGS` in the board's directory and returns its standard output.
    fn board_cli(&self, args: &[&str]) -> String {
        let dir = self.dir.path().join("board");
        std::fs::create_dir_all(&dir).unwrap();
        let out = Command::new(bin("civic-board"))
            .args(args)
            .current_dir(&dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "civic-board {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    /// The board lists the partners' keys and the policy's digest in a manifest, two of its
    /// three members sign it with `civic-board`, and it is published.
    async fn publish_manifest(&self, policy: &str, partner_keys: &[String]) {
        let dir = self.dir.path().join("board");
        std::fs::write(dir.join("policy.toml"), policy).unwrap();
        let digest = self.board_cli(&["digest", "policy.toml"]);
        let digest = digest.split_whitespace().next().unwrap();
        let mut manifest = String::from(
            "federation = \"system test\"\nversion = 1\n\n[board]\nthreshold = 2\n\n\
             [requirements]\ntolerated_colluders = 1\nmin_survivors = 2\n\
             min_rho_per_query = 0.0001\nmax_rounds_per_dataset_per_day = 1000\n",
        );
        for (i, key) in self.board_keys.iter().enumerate() {
            manifest += &format!("\n[[board.members]]\nname = \"member {i}\"\nkey = \"{key}\"\n");
        }
        for (p, key) in self.partners.iter().zip(partner_keys) {
            manifest += &format!(
                "\n[[partners]]\nname = \"{}\"\norganisation = \"{} (test)\"\nidentity_key = \"{key}\"\n",
                p.name, p.name
            );
        }
        manifest += &format!(
            "\n[[datasets]]\nid = \"{}\"\npolicy_digest = \"{digest}\"\n",
            self.dataset
        );
        std::fs::write(dir.join("manifest.toml"), manifest).unwrap();
        for key in ["member-1.key", "member-3.key"] {
            self.board_cli(&["sign", "--key", key, "manifest.toml"]);
        }
        let signed: Value = serde_json::from_str(
            &std::fs::read_to_string(dir.join("manifest.signed.json")).unwrap(),
        )
        .unwrap();
        let (s, v) = self
            .call(Method::PUT, "/v1/manifests", &self.board, Some(signed))
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }

    /// The partner's extract, token file (mode 0600), identity key (`civic-agent keygen`)
    /// and two configurations differing only in how often the agent polls; returns the
    /// identity's public key.
    fn prepare_partner(&self, i: usize, min_survivors: usize) -> String {
        let p = &self.partners[i];
        write_csv(&p.dir.join("extract.csv"), &p.rows);
        let token = p.dir.join("token");
        std::fs::write(&token, &p.token).unwrap();
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let out = Command::new(bin("civic-agent"))
            .args(["keygen", "--out"])
            .arg(p.dir.join("identity.key"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "keygen: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let public = String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|l| {
                l.rsplit_once(": ")
                    .map(|(_, k)| k.trim().to_string())
                    .filter(|k| k.len() == 64)
            })
            .expect("keygen prints the public key");
        let board_keys: Vec<String> = self.board_keys.iter().map(|k| format!("{k:?}")).collect();
        for speed in [FAST, SLOW] {
            let config = format!(
                r#"identity_key = "identity.key"
state_dir = "state"

[board]
threshold = 2
keys = [{board_keys}]

[coordinator]
url = "{base}"
token_file = "token"
poll_seconds = {speed:?}
max_backoff_seconds = 1.0

[limits]
max_epsilon_per_query = 100.0
total_rho = 1000000.0
min_survivors = {min_survivors}

[[datasets]]
id = "{dataset}"
resident_column = "resident"

[datasets.source]
kind = "csv"
path = "extract.csv"

[datasets.columns]
age = "age_years"
fell = {{ column = "fall_flag", values = {{ Y = "true", N = "false" }} }}
"#,
                base = self.agents_url,
                dataset = self.dataset,
                board_keys = board_keys.join(", "),
            );
            std::fs::write(p.config(speed), config).unwrap();
        }
        public
    }

    /// Starts `civic-agent run|once` for partner `i`. The process is kept in `agents` (and
    /// killed when the system is dropped); the returned index finds it there.
    fn agent(&mut self, i: usize, command: &str, speed: f64) -> usize {
        let proc = self.spawn_agent(i, command, speed);
        self.agents.push(proc);
        self.agents.len() - 1
    }

    fn spawn_agent(&self, i: usize, command: &str, speed: f64) -> Proc {
        let p = &self.partners[i];
        let mut cmd = Command::new(bin("civic-agent"));
        cmd.arg(command)
            .arg("--config")
            .arg(p.config(speed))
            .current_dir(&p.dir)
            .env_remove("CIVIC_AGENT_TOKEN")
            .env("CIVIC_LOG", "info");
        let log = p.dir.join("agent.log");
        Proc::spawn(&format!("civic-agent {command} ({})", p.name), cmd, &log)
    }

    /// Writes the coordinator's configuration for `port`.
    fn configure(&mut self, port: u16) {
        self.base = format!("http://127.0.0.1:{port}");
        std::fs::write(
            &self.config,
            format!(
                "bind = \"127.0.0.1:{port}\"\nstore_url = \"sqlite://{}\"\n\
                 phase_deadline_secs = {}\ntick_millis = 20\nmax_rows_per_partner = 100000\n\
                 driver_lease_secs = 0.6\n",
                self.db.display(),
                self.deadline
            ),
        )
        .unwrap();
    }

    /// Restarts the coordinator on the same configuration, store and port, and waits until
    /// it answers.
    async fn start_coordinator(&mut self) {
        if let Err(e) = self.try_start_coordinator().await {
            panic!("{e}");
        }
    }

    async fn try_start_coordinator(&mut self) -> Result<(), String> {
        assert!(self.coordinator.is_none(), "a coordinator is running");
        let mut cmd = Command::new(bin("civic-coordinator"));
        cmd.arg("--config")
            .arg(&self.config)
            .arg("serve")
            .env("CIVIC_LOG", "info");
        self.starts += 1;
        let log = self.dir.path().join("coordinator.log");
        let mut proc = Proc::spawn(
            &format!("civic-coordinator (start {})", self.starts),
            cmd,
            &log,
        );
        let started = Instant::now();
        loop {
            if let Some(status) = proc.exited() {
                self.starts -= 1;
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                let last = text.lines().last().unwrap_or_default().to_string();
                return Err(format!(
                    "the coordinator exited at start ({status}): {last}"
                ));
            }
            let up = self
                .http
                .get(format!("{}/healthz", self.base))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if up {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the coordinator never answered /healthz"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.coordinator = Some(proc);
        if self.peek.is_none() {
            let options = sqlx::sqlite::SqliteConnectOptions::new()
                .filename(&self.db)
                .read_only(true);
            let pool = sqlx::sqlite::SqlitePoolOptions::new()
                .max_connections(1)
                .connect_with(options)
                .await
                .expect("open the store read-only");
            self.peek = Some(pool);
        }
        Ok(())
    }

    /// SIGKILL: no graceful shutdown, no chance to finish anything. With a proxy, it is held
    /// first (requests already forwarded get their replies, new ones wait) and the guard
    /// returned: drop it once the coordinator is back.
    async fn kill_coordinator(&mut self) -> Option<tokio::sync::OwnedRwLockWriteGuard<()>> {
        let held = match &self.proxy {
            Some(p) => Some(p.hold().await),
            None => None,
        };
        self.coordinator
            .as_mut()
            .expect("a running coordinator")
            .kill();
        self.coordinator = None;
        held
    }

    /// One JSON call (retried while the coordinator is unreachable, as during a restart).
    async fn call(
        &self,
        method: Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let started = Instant::now();
        loop {
            let mut req = self
                .http
                .request(method.clone(), format!("{}{path}", self.base))
                .bearer_auth(token);
            if let Some(b) = &body {
                req = req.json(b);
            }
            match req.send().await {
                Ok(res) => {
                    let status = res.status();
                    let text = res.text().await.unwrap_or_default();
                    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
                    return (status, value);
                }
                Err(e) => {
                    assert!(
                        started.elapsed() < Duration::from_secs(30),
                        "{method} {path}: {e}"
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    async fn create_project(&self, id: &str, members: &[&str], cap: f64) {
        let (s, v) = self
            .call(
                Method::POST,
                "/v1/projects",
                &self.board,
                Some(json!({ "id": id, "title": format!("Project {id}"), "members": members })),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        let path = format!("/v1/projects/{id}/allocations/{}", self.dataset);
        let (s, v) = self
            .call(
                Method::PUT,
                &path,
                &self.board,
                Some(json!({ "cap": { "rho": cap } })),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }

    /// Submits as the researcher; returns the query's id and its cost in ρ.
    async fn submit(&self, body: Value) -> (i64, f64) {
        let (s, v) = self
            .call(Method::POST, "/v1/queries", &self.researcher, Some(body))
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        assert_eq!(v["state"], "running", "{v}");
        (
            v["id"].as_i64().unwrap(),
            v["cost"]["rho"].as_f64().unwrap(),
        )
    }

    /// Waits until query `id` has left `running`, and returns its view.
    async fn wait_done(&self, id: i64, limit: Duration) -> Value {
        let started = Instant::now();
        loop {
            let (s, v) = self
                .call(Method::GET, &format!("/v1/queries/{id}"), &self.board, None)
                .await;
            assert_eq!(s, StatusCode::OK, "{v}");
            if v["state"] != "running" && v["state"] != "awaiting_approval" {
                return v;
            }
            assert!(
                started.elapsed() < limit,
                "query {id} still {} after {limit:?}",
                v["state"]
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn budget(&self) -> Value {
        let path = format!("/v1/budgets/{}", self.dataset);
        let (s, v) = self.call(Method::GET, &path, &self.board, None).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        v
    }

    async fn audit(&self) -> Vec<Value> {
        let (s, v) = self
            .call(Method::GET, "/v1/audit?limit=10000", &self.board, None)
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        v["records"].as_array().unwrap().clone()
    }

    /// Audit entries with `action` about query `id`.
    async fn audited(&self, action: &str, id: i64) -> Vec<Value> {
        let subject = format!("query:{id}");
        self.audit()
            .await
            .into_iter()
            .filter(|r| r["action"] == action && r["subject"] == subject.as_str())
            .collect()
    }

    /// The hash chain verifies from the first entry to the head.
    async fn assert_audit_verifies(&self) {
        let (s, v) = self
            .call(Method::GET, "/v1/audit/verify", &self.board, None)
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(v["verified"], true, "{v}");
        assert!(v["entries"].as_u64().unwrap() > 0, "{v}");
    }

    fn peek(&self) -> &sqlx::SqlitePool {
        self.peek.as_ref().expect("the store is open")
    }

    /// The phase query `id`'s round is in, as stored.
    async fn stored_phase(&self, id: i64) -> Option<String> {
        sqlx::query_scalar("SELECT phase FROM rounds WHERE query_id = ? ORDER BY id DESC LIMIT 1")
            .bind(id)
            .fetch_optional(self.peek())
            .await
            .expect("read the round's phase")
    }

    /// The phases for which the coordinator has stored partner `i`'s message in query `id`'s
    /// round (until the round ends and its messages are dropped).
    async fn stored_messages(&self, id: i64, i: usize) -> BTreeSet<String> {
        sqlx::query_scalar::<_, String>(
            "SELECT phase FROM round_messages WHERE partner = ? AND round_id =
                (SELECT MAX(id) FROM rounds WHERE query_id = ?)",
        )
        .bind(i64::from(self.partners[i].id))
        .bind(id)
        .fetch_all(self.peek())
        .await
        .expect("read the round's messages")
        .into_iter()
        .collect()
    }

    /// How many partners' messages for `phase` of query `id`'s round are stored.
    async fn messages_in(&self, id: i64, phase: &str) -> usize {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM round_messages WHERE phase = ? AND round_id =
                (SELECT MAX(id) FROM rounds WHERE query_id = ?)",
        )
        .bind(phase)
        .bind(id)
        .fetch_one(self.peek())
        .await
        .expect("count the round's messages");
        n as usize
    }

    /// Polls until `done` holds, every 2 ms: a kill timed on the store lands within a few
    /// milliseconds of what it waits for.
    async fn until<F: AsyncFnMut(&System) -> bool>(&self, what: &str, done: F) {
        self.until_every(what, Duration::from_millis(2), done).await
    }

    async fn until_every<F: AsyncFnMut(&System) -> bool>(
        &self,
        what: &str,
        every: Duration,
        mut done: F,
    ) {
        let started = Instant::now();
        while !done(self).await {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "timed out waiting for {what}"
            );
            tokio::time::sleep(every).await;
        }
    }

    /// Starts agents for `partners` 100 ms apart, so that slow agents look at their
    /// inboxes at different moments (a phase then stays open until the last one looks).
    async fn staggered(&mut self, partners: &[usize], command: &str, speed: f64) -> Vec<usize> {
        let mut procs = Vec::new();
        for &i in partners {
            procs.push(self.agent(i, command, speed));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        procs
    }

    /// Whether query `id`'s round is announced to partner `i`.
    async fn announced(&self, id: i64, i: usize) -> bool {
        let token = self.partners[i].token.clone();
        let (s, v) = self
            .call(Method::GET, "/v1/partner/rounds", &token, None)
            .await;
        s == StatusCode::OK
            && v["rounds"]
                .as_array()
                .is_some_and(|rs| rs.iter().any(|r| r["query_id"] == id))
    }

    /// Query `id`'s (last) round, as stored.
    async fn round_of(&self, id: i64) -> i64 {
        sqlx::query_scalar("SELECT MAX(id) FROM rounds WHERE query_id = ?")
            .bind(id)
            .fetch_one(self.peek())
            .await
            .expect("read the query's round")
    }

    /// Waits until every partner's journal says `status` for query `id`'s round (a `run` agent
    /// writes it just after its last reply, which can come after the release).
    async fn assert_journals(&self, id: i64, status: &str) {
        let started = Instant::now();
        let round = self.round_of(id).await;
        for p in &self.partners {
            while p.round_status(round) != status {
                assert!(
                    started.elapsed() < Duration::from_secs(10),
                    "{}: round {id} is not {status}: {}",
                    p.name,
                    p.journal()
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }

    /// Waits for the `once` agents `procs` (indices into `agents`) to exit; each must
    /// succeed (exit 0: every round it was in ended `Finished` for it).
    async fn assert_agents_finished(&mut self, procs: &[usize]) {
        for &a in procs {
            let status = self.agents[a].wait_exit(Duration::from_secs(60)).await;
            assert!(status.success(), "{}: {status}", self.agents[a].name);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Fast tests.

fn city() -> Setup {
    Setup {
        dataset: "city",
        partners: vec![("trust-a", 120), ("council-b", 150), ("housing-c", 180)],
        min_partners: 2,
        phase_deadline_secs: 5,
        proxy: false,
    }
}

/// Three `civic-agent run` processes over their own CSV extracts and a coordinator process:
/// a count and a histogram released exactly, charged once each, the audit log verifying.
#[tokio::test(flavor = "multi_thread")]
async fn happy_path_three_agents_release_a_count_and_a_histogram_exactly() {
    let mut sys = System::start(city()).await;
    let agents: Vec<usize> = (0..3).map(|i| sys.agent(i, "run", FAST)).collect();

    let (count, count_cost) = sys.submit(count_query("falls", "city", 60.0, None)).await;
    let done = sys.wait_done(count, Duration::from_secs(30)).await;
    assert_eq!(done["state"], "released", "{done}");
    let truth: i64 = sys.partners.iter().map(|p| p.rows.len() as i64).sum();
    assert_eq!(released_values(&done), vec![truth], "{done}");
    assert_eq!(survivors(&done), 3, "{done}");

    let histogram = json!({
        "project": "falls",
        "query": {
            "dataset": "city",
            "statistic": { "histogram": { "columns": ["age"] } },
            "filter": { "compare": { "column": "fell", "op": "eq", "value": true } }
        },
        "privacy": { "epsilon": 60.0 }
    });
    let (hist, hist_cost) = sys.submit(histogram).await;
    let done = sys.wait_done(hist, Duration::from_secs(30)).await;
    assert_eq!(done["state"], "released", "{done}");
    let bands: Vec<i64> = (0..3)
        .map(|b| sys.partners.iter().map(|p| falls_by_band(&p.rows)[b]).sum())
        .collect();
    assert!(
        bands.iter().all(|&b| b > 0),
        "every band is exercised: {bands:?}"
    );
    assert_eq!(released_values(&done), bands, "{done}");

    // Charged once each, nothing left reserved, one release entry each.
    let budget = sys.budget().await;
    assert!(
        close(&budget["charged_rho"], count_cost + hist_cost),
        "{budget}"
    );
    assert!(
        close(&budget["used_rho"], count_cost + hist_cost),
        "{budget}"
    );
    for id in [count, hist] {
        assert_eq!(sys.audited("query.release", id).await.len(), 1);
        sys.assert_journals(id, "finished").await;
    }
    // The agents are still polling: `run` does not exit after a round.
    for &a in &agents {
        assert!(
            sys.agents[a].exited().is_none(),
            "{} exited",
            sys.agents[a].name
        );
    }
    sys.assert_audit_verifies().await;
}

/// Eight researchers of one project submit eight distinct queries at once against an
/// allocation that affords three: exactly three are accepted, five are refused with
/// `policy.over_budget`, the allocation is never exceeded, the three are released exactly.
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_researchers_exhaust_the_budget_exactly() {
    let mut sys = System::start(city()).await;
    for i in 0..3 {
        sys.agent(i, "run", FAST);
    }
    const RESEARCHERS: usize = 8;
    const AFFORDED: usize = 3;
    // Every count at ε = 60 costs ρ = ε²/2 = 1800; the cap leaves half a query spare.
    let cost = 1800.0;
    let cap = cost * AFFORDED as f64 + cost / 2.0;
    let mut names = Vec::new();
    let mut tokens = Vec::new();
    for r in 0..RESEARCHERS {
        let name = format!("researcher-{r}");
        let (s, v) = sys
            .call(
                Method::POST,
                "/v1/admin/accounts",
                &sys.admin,
                Some(json!({ "name": name, "role": "researcher" })),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        tokens.push(v["token"].as_str().unwrap().to_string());
        names.push(name);
    }
    let members: Vec<&str> = names.iter().map(String::as_str).collect();
    sys.create_project("rush", &members, cap).await;

    // A watcher reads the budget throughout: the project never holds more than its cap.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let (http, base, board, stop) = (
            sys.http.clone(),
            sys.base.clone(),
            sys.board.clone(),
            stop.clone(),
        );
        tokio::spawn(async move {
            let mut reads = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let b: Value = http
                    .get(format!("{base}/v1/budgets/city"))
                    .bearer_auth(&board)
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                let rush = b["projects"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|p| p["project"] == "rush")
                    .cloned()
                    .unwrap();
                let held =
                    rush["reserved_rho"].as_f64().unwrap() + rush["charged_rho"].as_f64().unwrap();
                assert!(held <= cap * (1.0 + 1e-12), "over the cap: {rush}");
                reads += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            reads
        })
    };

    let submissions: Vec<_> = tokens
        .iter()
        .enumerate()
        .map(|(r, token)| {
            let (http, base, token) = (sys.http.clone(), sys.base.clone(), token.clone());
            let min_age = 10 * r as i64;
            let body = count_query("rush", "city", 60.0, Some(min_age));
            tokio::spawn(async move {
                let res = http
                    .post(format!("{base}/v1/queries"))
                    .bearer_auth(&token)
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                let status = res.status();
                (min_age, status, res.json::<Value>().await.unwrap())
            })
        })
        .collect();
    let mut accepted = Vec::new();
    let mut refused = 0;
    for s in submissions {
        let (min_age, status, v) = s.await.unwrap();
        match status {
            StatusCode::CREATED => {
                assert!(close(&v["cost"]["rho"], cost), "{v}");
                accepted.push((min_age, v["id"].as_i64().unwrap()));
            }
            StatusCode::CONFLICT => {
                assert_eq!(v["code"], "policy.over_budget", "{v}");
                refused += 1;
            }
            other => panic!("unexpected {other}: {v}"),
        }
    }
    assert_eq!(accepted.len(), AFFORDED, "{accepted:?}");
    assert_eq!(refused, RESEARCHERS - AFFORDED);

    for &(min_age, id) in &accepted {
        let done = sys.wait_done(id, Duration::from_secs(30)).await;
        assert_eq!(done["state"], "released", "{done}");
        let truth: i64 = sys
            .partners
            .iter()
            .map(|p| count_age_at_least(&p.rows, min_age))
            .sum();
        assert_eq!(
            released_values(&done),
            vec![truth],
            "age ≥ {min_age}: {done}"
        );
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(watcher.await.unwrap() > 0);

    let budget = sys.budget().await;
    let rush = budget["projects"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["project"] == "rush")
        .unwrap();
    assert!(
        close(&rush["charged_rho"], cost * AFFORDED as f64),
        "{budget}"
    );
    assert!(close(&rush["reserved_rho"], 0.0), "{budget}");
    assert!(
        close(&budget["charged_rho"], cost * AFFORDED as f64),
        "{budget}"
    );
    // The refused ones left no trace in the ledger, and a fourth is still refused.
    let (s, v) = sys
        .call(
            Method::POST,
            "/v1/queries",
            &tokens[0],
            Some(count_query("rush", "city", 60.0, Some(99))),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert_eq!(v["code"], "policy.over_budget", "{v}");
    let releases = sys
        .audit()
        .await
        .iter()
        .filter(|r| r["action"] == "query.release")
        .count();
    assert_eq!(releases, AFFORDED);
    sys.assert_audit_verifies().await;
}

// ---------------------------------------------------------------------------------------
// Slow tests.

/// Four partners, `min_partners = 3` (and a Shamir threshold of 3 of 4).
fn ward() -> Setup {
    Setup {
        dataset: "ward",
        // Distinct sizes: every set of partners has a distinct total, so a released count
        // names exactly whose data it summed.
        partners: vec![("gp-1", 40), ("gp-2", 70), ("gp-3", 110), ("gp-4", 160)],
        min_partners: 3,
        phase_deadline_secs: 1,
        proxy: false,
    }
}

/// How one dropout attempt went.
struct Dropout {
    /// The phases the victim's messages were stored for when it died.
    sent: BTreeSet<String>,
}

impl Dropout {
    /// The phase the victim dropped out in: the first it sent nothing for.
    fn phase(&self) -> &'static str {
        PHASES
            .iter()
            .find(|p| !self.sent.contains(**p))
            .copied()
            .unwrap_or("none")
    }
}

/// Runs one count on "ward" with partner `victim` killed (SIGKILL) so that it drops out in
/// phase `PHASES[k]`, and checks the release against what the store says it had sent:
/// a partner whose masked input was stored is in the sum (the others reveal its self-mask
/// seed), one that died before is not (they reveal its mask key instead).
async fn drop_out(sys: &mut System, victim: usize, k: usize, epsilon: f64) -> Dropout {
    let others: Vec<usize> = (0..4).filter(|&i| i != victim).collect();
    let before = sys.budget().await;
    let (id, cost) = sys
        .submit(count_query("falls", "ward", epsilon, None))
        .await;
    let mut survivors_procs = Vec::new();
    let sent = match k {
        // AdvertiseKeys: the victim never starts, so it drops out before joining.
        0 => {
            for &i in &others {
                survivors_procs.push(sys.agent(i, "once", FAST));
            }
            BTreeSet::new()
        }
        // ShareKeys: the victim advertises its keys while one other partner is held back,
        // so AdvertiseKeys cannot close (and no ShareKeys message can be sent) before the
        // victim dies; then the held-back partner starts.
        1 => {
            let (held, started) = others.split_last().unwrap();
            for &i in started {
                survivors_procs.push(sys.agent(i, "once", FAST));
            }
            let v = sys.agent(victim, "once", FAST);
            sys.until("the victim's keys", async |s: &System| {
                s.stored_messages(id, victim).await.contains(PHASES[0])
            })
            .await;
            sys.agents[v].kill();
            assert_eq!(sys.stored_phase(id).await.as_deref(), Some(PHASES[0]));
            let sent = sys.stored_messages(id, victim).await;
            survivors_procs.push(sys.agent(*held, "once", FAST));
            sent
        }
        // Later phases: the victim answers within 20 ms, the others every 150 ms. It is
        // killed as soon as its message for the phase before is stored; that phase is then
        // almost always still open (waiting for the slow ones), so it never sends the next.
        _ => {
            survivors_procs = sys.staggered(&others, "once", SLOW).await;
            let v = sys.agent(victim, "once", FAST);
            sys.until("the victim's message", async |s: &System| {
                s.stored_messages(id, victim).await.contains(PHASES[k - 1])
            })
            .await;
            sys.agents[v].kill();
            // A request the victim had written to its socket just before dying may still be
            // taken: let it land before reading what it sent. (Its round cannot end in the
            // meantime: some phase waits out the 1 s deadline for the victim.)
            tokio::time::sleep(Duration::from_millis(200)).await;
            sys.stored_messages(id, victim).await
        }
    };
    let dropout = Dropout { sent };
    let included = dropout.sent.contains("masked_input_collection");
    let done = sys.wait_done(id, Duration::from_secs(60)).await;
    assert_eq!(
        done["state"],
        "released",
        "dropped in {}: {done}",
        dropout.phase()
    );
    let counted: Vec<usize> = if included {
        (0..4).collect()
    } else {
        others.clone()
    };
    let truth: i64 = counted
        .iter()
        .map(|&i| sys.partners[i].rows.len() as i64)
        .sum();
    assert_eq!(
        released_values(&done),
        vec![truth],
        "dropped in {} (input {}): {done}",
        dropout.phase(),
        if included { "sent" } else { "not sent" }
    );
    assert_eq!(survivors(&done), counted.len() as u64, "{done}");
    sys.assert_agents_finished(&survivors_procs).await;
    for &i in &others {
        assert_eq!(
            sys.partners[i].round_status(sys.round_of(id).await),
            "finished"
        );
    }
    let after = sys.budget().await;
    let charged = after["charged_rho"].as_f64().unwrap() - before["charged_rho"].as_f64().unwrap();
    assert!((charged - cost).abs() < 1e-6, "{before} → {after}");
    assert_eq!(sys.audited("query.release", id).await.len(), 1);
    eprintln!(
        "round {id}: the victim dropped out in {}; released {truth} from {} partners",
        dropout.phase(),
        counted.len()
    );
    dropout
}

/// A partner's agent process killed in each phase of secure aggregation: with three of four
/// left the round completes (the released count is exactly the sum over the partners the
/// receipt counts, including a partner that died after its masked input was stored); with
/// two of four it aborts and the reservation is refunded. The audit log verifies after all
/// of it.
///
/// AdvertiseKeys (the victim never starts) and ShareKeys (another partner is held back
/// until the victim is dead) are hit by construction. The later phases are hit by a fast
/// victim among slow partners, checked against the store after the kill; in the rare case
/// its next message got through first the attempt is repeated with a new query (at most
/// three attempts; none was needed in 30 runs, also under CPU load). Every attempt's
/// release is checked against whatever phase it hit.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "slow: an agent killed in each secure-aggregation phase, six 1 s phase deadlines waited out (about 10 s)"]
async fn a_partner_dropping_out_in_each_phase_completes_with_three_of_four_and_aborts_with_two() {
    let mut sys = System::start(ward()).await;
    let victim = 3;
    let mut epsilon = 60.0;
    for (k, phase) in PHASES.iter().enumerate() {
        let mut attempts = 0;
        loop {
            attempts += 1;
            // Distinct ε: an identical question would be re-served, not run.
            let d = drop_out(&mut sys, victim, k, epsilon).await;
            epsilon -= 0.5;
            if d.phase() == *phase {
                break;
            }
            assert!(
                attempts < 3,
                "the victim never dropped out in {phase} (last: {})",
                d.phase()
            );
        }
    }
    // A victim killed after its masked input was stored was charged locally; one killed
    // before was not (the agent charges its own ledger just before the vector leaves).
    let journal = sys.partners[victim].journal();
    assert!(journal["spent"]["ward"].as_u64().unwrap() > 0, "{journal}");

    // Two of four die after advertising (a third is held back until they are dead): the
    // round aborts at ShareKeys and the reservation is refunded.
    let before = sys.budget().await;
    let (id, cost) = sys
        .submit(count_query("falls", "ward", epsilon, None))
        .await;
    let during = sys.budget().await;
    assert!(
        (during["used_rho"].as_f64().unwrap() - before["used_rho"].as_f64().unwrap() - cost).abs()
            < 1e-6,
        "reserved while running: {before} → {during}"
    );
    let first = sys.agent(0, "once", FAST);
    let victims = [sys.agent(2, "once", FAST), sys.agent(3, "once", FAST)];
    sys.until("both victims' keys", async |s: &System| {
        s.stored_messages(id, 2).await.contains(PHASES[0])
            && s.stored_messages(id, 3).await.contains(PHASES[0])
    })
    .await;
    for v in victims {
        sys.agents[v].kill();
    }
    let held = sys.agent(1, "once", FAST);
    let done = sys.wait_done(id, Duration::from_secs(60)).await;
    assert_eq!(done["state"], "aborted", "{done}");
    assert!(done["result"].is_null(), "{done}");
    let after = sys.budget().await;
    assert!(
        close(&after["used_rho"], before["used_rho"].as_f64().unwrap()),
        "{before} → {after}"
    );
    assert!(
        close(
            &after["charged_rho"],
            before["charged_rho"].as_f64().unwrap()
        ),
        "{after}"
    );
    assert!(sys.audited("query.release", id).await.is_empty());
    let aborts = sys.audited("round.abort", id).await;
    assert_eq!(aborts.len(), 1, "{aborts:?}");
    let details: Value = serde_json::from_str(aborts[0]["details"].as_str().unwrap()).unwrap();
    assert!(close(&details["refunded_rho"], cost), "{details}");
    // The two that stayed left the round when it aborted, before sending any vector.
    for a in [first, held] {
        sys.agents[a].wait_exit(Duration::from_secs(30)).await;
    }
    for i in [0, 1] {
        let round = sys.round_of(id).await;
        let status = &sys.partners[i].journal()["rounds"][round.to_string()];
        assert_eq!(status["status"], "abandoned", "{status}");
    }
    sys.assert_audit_verifies().await;
}

/// What one coordinator kill hit: the round's stored phase when the coordinator died, and
/// how many partners' messages for that phase were stored.
struct Kill {
    phase: String,
    answered: usize,
}

/// Kills the coordinator (SIGKILL) once round `id` is stored in phase `PHASES[k]` with at
/// least one partner's message for it taken (so the restart replays a partly answered
/// phase), or once it is past that phase if it closed between two looks; reads what the
/// kill hit from the store; restarts the coordinator on the same store and port.
///
/// The agents must answer slowly enough (every 150 ms) for the phase to stay open a while.
async fn kill_in_phase(sys: &mut System, id: i64, k: usize) -> Kill {
    let target = PHASES[k];
    sys.until(target, async |s: &System| {
        let p = s.stored_phase(id).await.unwrap_or_default();
        match PHASES.iter().position(|x| *x == p) {
            Some(a) if a == k => s.messages_in(id, target).await > 0,
            Some(a) => a > k,
            None => p == "finished",
        }
    })
    .await;
    let held = sys.kill_coordinator().await;
    let phase = sys.stored_phase(id).await.unwrap();
    let answered = sys.messages_in(id, &phase).await;
    sys.start_coordinator().await;
    drop(held);
    Kill { phase, answered }
}

/// Query `id` (a count of residents aged at least `min_age`) was released exactly, once,
/// and the dataset has been charged for exactly `released` queries of `cost` with nothing
/// left reserved.
async fn assert_released_once(
    sys: &System,
    id: i64,
    min_age: i64,
    released: usize,
    cost: f64,
    kill: Option<&Kill>,
) {
    let phase = kill.map_or("no phase (no kill)", |k| k.phase.as_str());
    let done = sys.wait_done(id, Duration::from_secs(60)).await;
    assert_eq!(done["state"], "released", "killed in {phase}: {done}");
    let truth: i64 = sys
        .partners
        .iter()
        .map(|p| count_age_at_least(&p.rows, min_age))
        .sum();
    assert_eq!(
        released_values(&done),
        vec![truth],
        "killed in {phase}: {done}"
    );
    assert_eq!(survivors(&done), 3, "{done}");
    assert_eq!(
        sys.audited("query.release", id).await.len(),
        1,
        "killed in {phase}"
    );
    assert!(sys.audited("round.abort", id).await.is_empty());
    let budget = sys.budget().await;
    let charged = cost * released as f64;
    assert!(
        close(&budget["charged_rho"], charged),
        "killed in {phase}: {budget}"
    );
    assert!(
        close(&budget["used_rho"], charged),
        "killed in {phase}: {budget}"
    );
    if let Some(kill) = kill {
        eprintln!(
            "round {id}: the coordinator was killed in {phase} with {} of 3 partners' \
             messages for it stored; the round resumed and was released once",
            kill.answered
        );
    }
}

/// Runs one count on "city" with `civic-agent once` processes and kills the coordinator in
/// phase `PHASES[k]`; the agents carry on across the restart. Checks that the round resumes
/// and is released exactly once and charged exactly once.
async fn kill_coordinator(sys: &mut System, k: usize, min_age: i64, released: usize) -> Kill {
    let (id, cost) = sys
        .submit(count_query("falls", "city", 60.0, Some(min_age)))
        .await;
    let (kill, procs) = if k == 0 {
        // AdvertiseKeys, by construction: two agents advertise, the third is held back, so
        // the phase cannot close before the kill.
        let procs = vec![sys.agent(0, "once", FAST), sys.agent(1, "once", FAST)];
        sys.until("two advertisements", async |s: &System| {
            s.messages_in(id, PHASES[0]).await == 2
        })
        .await;
        let held = sys.kill_coordinator().await;
        let kill = Kill {
            phase: sys.stored_phase(id).await.unwrap(),
            answered: sys.messages_in(id, PHASES[0]).await,
        };
        sys.start_coordinator().await;
        drop(held);
        (kill, procs)
    } else {
        let procs = sys.staggered(&[0, 1, 2], "once", SLOW).await;
        (kill_in_phase(sys, id, k).await, procs)
    };
    if k == 0 {
        // `once` takes the rounds announced when it starts: start the third agent after the
        // restarted coordinator has adopted the round (once the dead one's lease lapsed).
        sys.until_every(
            "the round adopted",
            Duration::from_millis(50),
            async |s: &System| s.announced(id, 2).await,
        )
        .await;
        let third = sys.agent(2, "once", FAST);
        sys.assert_agents_finished(&[third]).await;
    }
    assert_released_once(sys, id, min_age, released + 1, cost, Some(&kill)).await;
    sys.assert_agents_finished(&procs).await;
    for p in &sys.partners {
        let round = sys.round_of(id).await;
        assert_eq!(p.round_status(round), "finished", "{}", p.journal());
    }
    kill
}

/// The coordinator killed with SIGKILL in each phase of a round and restarted on the same
/// SQLite file and port: the round resumes from its stored messages and is released exactly
/// once and charged exactly once; the agents keep running across the restart, as `once`
/// processes in the middle of a round and as `run` processes polling for ever. The audit log
/// verifies after all of it.
///
/// AdvertiseKeys is hit by construction. The later phases are hit by killing as soon as the
/// store shows the phase open (and partly answered) while the agents answer only every
/// 150 ms; the phase actually hit is read from the store after the kill, and an attempt that
/// landed later is retried (at most three attempts; none was needed in 30 runs, also under
/// CPU load; every attempt is checked whatever it hit).
///
/// What is not covered: the agents reach the coordinator through a [`Proxy`] held while the
/// coordinator is killed, so no agent is waiting for the reply to a message the coordinator
/// already took. That case (a reply lost in the crash) is tested on its own by
/// `a_message_retried_after_its_phase_closed_is_accepted`.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "slow: six coordinator kills and restarts, each waiting out the 0.6 s driver lease (about 13 s)"]
async fn the_coordinator_killed_in_each_phase_resumes_and_releases_exactly_once() {
    let mut sys = System::start(Setup {
        proxy: true,
        ..city()
    })
    .await;
    let mut min_age = 0;
    let mut released = 0;
    for (k, phase) in PHASES.iter().enumerate() {
        let mut attempts = 0;
        loop {
            attempts += 1;
            // A distinct filter per attempt: an identical question would be re-served.
            let kill = kill_coordinator(&mut sys, k, min_age, released).await;
            min_age += 3;
            released += 1;
            if kill.phase == *phase {
                break;
            }
            assert!(
                attempts < 3,
                "the kill never landed in {phase} (last: {})",
                kill.phase
            );
        }
    }

    // `civic-agent run` across a restart: killed mid-round, the coordinator comes back and
    // the agents, which kept polling (backing off) through the outage, finish the round and
    // then take the next one.
    let runners = sys.staggered(&[0, 1, 2], "run", SLOW).await;
    let (id, cost) = sys
        .submit(count_query("falls", "city", 60.0, Some(min_age)))
        .await;
    let kill = kill_in_phase(&mut sys, id, 2).await;
    released += 1;
    assert_released_once(&sys, id, min_age, released, cost, Some(&kill)).await;
    let (next, cost) = sys
        .submit(count_query("falls", "city", 60.0, Some(min_age + 1)))
        .await;
    released += 1;
    assert_released_once(&sys, next, min_age + 1, released, cost, None).await;
    for &r in &runners {
        assert!(
            sys.agents[r].exited().is_none(),
            "{} exited",
            sys.agents[r].name
        );
    }
    sys.assert_journals(id, "finished").await;
    sys.assert_journals(next, "finished").await;
    // One start, then one restart per kill (every released round but the last had one).
    assert_eq!(sys.starts, released);
    sys.assert_audit_verifies().await;
}

// ---------------------------------------------------------------------------------------
// A bug these tests found, fixed.

/// Regression test (coordinator, `server/src/rounds.rs`, `receive`): a partner's protocol
/// message retried after the phase it belongs to has closed used to be refused, although the
/// coordinator took it; a byte-identical copy of a stored message is now accepted.
///
/// An agent retries a message whose reply it did not get (connection reset, coordinator
/// restarting: `client-sdk/src/http.rs` retries on connection errors and 5xx). `receive`
/// accepts an identical copy of a stored message only while its phase is still open
/// (`SecAggError::Duplicate`, then `stored_already`). Once the phase has closed (and it
/// closes at once when that message was the last one expected) the copy meets
/// `SecAggError::OutOfPhase` and is refused with 409 `secagg.out_of_phase` (404 once the
/// round had ended: now 409 `round.finished`, which the agent takes as its part done), and
/// the agent abandons a round it is still part of: it drops out at the next phase, or, for
/// its unmasking shares, reports a round released with its input as abandoned. Seen in the restart test under CPU load before the proxy: the coordinator was
/// SIGKILLed after storing council-b's AdvertiseKeys but before replying; the agent retried
/// after the restarted coordinator had closed AdvertiseKeys, got "409 secagg.out_of_phase:
/// round 1: got a AdvertiseKeys message while in phase ShareKeys", left, and the round was
/// released from 2 partners instead of 3.
///
/// Here the retry is made by hand: the exact bytes of a partner's stored AdvertiseKeys,
/// posted again with its token once ShareKeys is open.
#[tokio::test(flavor = "multi_thread")]
async fn a_message_retried_after_its_phase_closed_is_accepted() {
    let mut sys = System::start(city()).await;
    let (id, _) = sys.submit(count_query("falls", "city", 60.0, None)).await;
    let procs = sys.staggered(&[0, 1, 2], "once", SLOW).await;
    sys.until("ShareKeys", async |s: &System| {
        s.stored_phase(id).await.as_deref() == Some(PHASES[1])
    })
    .await;
    let round = sys.round_of(id).await;
    let body: Vec<u8> = sqlx::query_scalar(
        "SELECT body FROM round_messages WHERE round_id = ? AND phase = ? AND partner = ?",
    )
    .bind(round)
    .bind(PHASES[0])
    .bind(i64::from(sys.partners[0].id))
    .fetch_one(sys.peek())
    .await
    .unwrap();
    let res = sys
        .http
        .post(format!("{}/v1/partner/rounds/{round}/messages", sys.base))
        .bearer_auth(&sys.partners[0].token)
        .header("content-type", "application/octet-stream")
        .body(body)
        .send()
        .await
        .unwrap();
    let (status, text) = (res.status(), res.text().await.unwrap());
    // The copy changes nothing else: the round goes on with all three.
    let done = sys.wait_done(id, Duration::from_secs(30)).await;
    assert_eq!(survivors(&done), 3, "{done}");
    sys.assert_agents_finished(&procs).await;
    assert_eq!(
        status,
        StatusCode::NO_CONTENT,
        "a retried copy of a message the coordinator took, refused: {text}"
    );
}
