//! SIGTERM while a request is in flight: the real `civic-coordinator` binary answers the
//! request (or closes its connection cleanly), refuses or answers new connections rather
//! than leaving them hanging, and exits by itself with success within the request timeout
//! plus its five seconds of grace, without a panic.
//!
//! The long request is made the realistic way: the store's write lock is held from outside
//! the coordinator (an operator's shell, a backup), so a write request waits for it.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::{backends, drop_schema, fresh_store_url};
use sqlx::Connection;

/// The coordinator's request timeout in this test, seconds.
const REQUEST_TIMEOUT_SECS: u64 = 2;

/// What `serve` waits for requests in flight beyond the request timeout.
const GRACE_SECS: u64 = 5;

/// Slack for a loaded test machine on top of timeout + grace.
const SLACK: Duration = Duration::from_secs(3);

/// What the coordinator's log shows once it has looked up a request's token (sqlx's record
/// of the statement, at debug level).
const AUTHENTICATED: &str = "FROM accounts WHERE token_hash";

/// How long a new connection may go unanswered after SIGTERM before it counts as hung.
const NEW_CONNECTION_BOUND: Duration = Duration::from_secs(1);

/// A server process killed when the test ends, even by a panic.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// What the store holds that the in-flight request could have changed: accounts named
/// `late`, and the audit head's sequence number.
async fn store_state(url: &str) -> (i64, i64) {
    let mut conn = sqlx::AnyConnection::connect(url).await.unwrap();
    let late: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM accounts WHERE name = 'late'")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    let seq: i64 = sqlx::query_scalar("SELECT seq FROM audit_head WHERE id = 1")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    (late, seq)
}

/// What a new connection met after SIGTERM.
#[derive(Debug)]
enum NewConnection {
    /// The port refused it.
    Refused,
    /// The server answered (a status line).
    Answered(String),
    /// The server closed it without an answer (EOF or reset).
    Closed(std::io::ErrorKind),
}

impl NewConnection {
    /// Refused, closed, or answered with an HTTP status line: anything but a hang.
    fn check(self) -> Self {
        match &self {
            NewConnection::Answered(line) => {
                assert!(
                    line.starts_with("HTTP/1.1 "),
                    "not an HTTP answer: {line:?}"
                )
            }
            NewConnection::Closed(kind) => assert!(
                matches!(
                    kind,
                    std::io::ErrorKind::UnexpectedEof
                        | std::io::ErrorKind::ConnectionReset
                        | std::io::ErrorKind::BrokenPipe
                        | std::io::ErrorKind::ConnectionAborted
                ),
                "{kind:?}"
            ),
            NewConnection::Refused => {}
        }
        self
    }
}

/// Opens a new connection and asks for /healthz; panics if nothing happens within
/// [`NEW_CONNECTION_BOUND`] (a connection queued where no one will ever accept it).
fn new_connection(port: u16) -> NewConnection {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = match TcpStream::connect_timeout(&addr, NEW_CONNECTION_BOUND) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            return NewConnection::Refused;
        }
        // The listener closed during the handshake: as good as closed (seen once in CI).
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted
            ) =>
        {
            return NewConnection::Closed(e.kind());
        }
        Err(e) => panic!("connecting after SIGTERM: {e}"),
    };
    s.set_read_timeout(Some(NEW_CONNECTION_BOUND)).unwrap();
    let sent = write!(
        s,
        "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    );
    if let Err(e) = sent {
        return NewConnection::Closed(e.kind());
    }
    let mut out = Vec::new();
    match s.read_to_end(&mut out) {
        Ok(_) if out.is_empty() => NewConnection::Closed(std::io::ErrorKind::UnexpectedEof),
        Ok(_) => NewConnection::Answered(
            String::from_utf8_lossy(&out)
                .lines()
                .next()
                .unwrap_or("")
                .to_string(),
        ),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            panic!("a new connection after SIGTERM hung for {NEW_CONNECTION_BOUND:?}")
        }
        Err(e) => NewConnection::Closed(e.kind()),
    }
}

/// The log's last lines, without sqlx's statement records.
fn tail(log: &str) -> String {
    let lines: Vec<_> = log.lines().filter(|l| !l.contains("sqlx::query")).collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

#[actix_web::test]
async fn sigterm_with_a_request_in_flight_answers_it_and_exits_cleanly_on_sqlite() {
    sigterm_during_a_held_write(&fresh_store_url("shutdown")).await;
}

#[actix_web::test]
async fn sigterm_with_a_request_in_flight_answers_it_and_exits_cleanly_on_postgres() {
    // `backends` gives a fresh SQLite file first, then a fresh PostgreSQL schema if
    // `CIVIC_TEST_POSTGRES_URL` is set.
    for url in backends("shutdown").await.into_iter().skip(1) {
        sigterm_during_a_held_write(&url).await;
        drop_schema(&url).await;
    }
}

async fn sigterm_during_a_held_write(url: &str) {
    sqlx::any::install_default_drivers();
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "civic-shutdown-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port();
    let config = dir.join("coordinator.toml");
    std::fs::write(
        &config,
        format!(
            "bind = \"127.0.0.1:{port}\"\nstore_url = \"{url}\"\nrequest_timeout_secs = {REQUEST_TIMEOUT_SECS}\n"
        ),
    )
    .unwrap();
    let bin = env!("CARGO_BIN_EXE_civic-coordinator");
    let out = Command::new(bin)
        .args(["--config", config.to_str().unwrap()])
        .args(["admin", "create-account", "root", "--role", "admin"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("token (shown once; store it now): "))
        .expect("a token printed")
        .to_string();

    let stderr_path = dir.join("stderr.log");
    let mut server = KillOnDrop(
        Command::new(bin)
            .args(["--config", config.to_str().unwrap(), "serve"])
            // sqlx logs each statement once it has run: the token lookup of the long request
            // tells this test that the request is being handled.
            .env("CIVIC_LOG", "info,sqlx::query=debug")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr_path).unwrap())
            .spawn()
            .unwrap(),
    );
    let health = common::http_get(&format!("http://127.0.0.1:{port}/healthz"), "");
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    let before = store_state(url).await;
    let log = || std::fs::read_to_string(&stderr_path).unwrap();
    assert!(
        !log().contains(AUTHENTICATED),
        "a token was looked up before the request"
    );

    let mut lock = common::hold_write_lock(url).await;
    // The long request: an admin creating an account, which must write.
    let in_flight = std::thread::spawn(move || {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let body = r#"{"name":"late","role":"researcher"}"#;
        write!(
            s,
            "POST /v1/admin/accounts HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let sent = Instant::now();
        let mut out = Vec::new();
        let read = s.read_to_end(&mut out).map(|_| out);
        (sent, read, Instant::now())
    });
    // Wait (polling the log, bounded) until the server has authenticated the request: its
    // handler then runs, waiting for the write lock.
    let waiting = Instant::now();
    while !log().contains(AUTHENTICATED) {
        assert!(
            waiting.elapsed() < Duration::from_secs(5),
            "the request was never authenticated; stderr:\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // Reads answer while the write waits.
    let health = common::http_get(&format!("http://127.0.0.1:{port}/healthz"), "");
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert!(
        !in_flight.is_finished(),
        "the write was answered before SIGTERM: it was not long-running"
    );
    let term = Instant::now();
    let killed = Command::new("kill")
        .args(["-TERM", &server.0.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let right_after = new_connection(port).check();

    let (sent, read, answered) = in_flight.join().unwrap();
    assert!(answered > term, "the write was answered before SIGTERM");
    let during_grace = match server.0.try_wait().unwrap() {
        None => Some(new_connection(port).check()),
        Some(_) => None,
    };

    let bound = Duration::from_secs(REQUEST_TIMEOUT_SECS + GRACE_SECS) + SLACK;
    let exited = loop {
        if let Some(status) = server.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            term.elapsed() < bound,
            "the coordinator was still running {bound:?} after SIGTERM; stderr:\n{}",
            std::fs::read_to_string(&stderr_path).unwrap()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let exit_after = term.elapsed();
    let stderr = std::fs::read_to_string(&stderr_path).unwrap();
    let response = match read {
        Ok(bytes) => String::from_utf8(bytes).unwrap(),
        Err(e) => panic!(
            "the in-flight request's connection failed: {e}; stderr:\n{}",
            tail(&stderr)
        ),
    };
    let status_line = response.lines().next().unwrap_or("").to_string();
    sqlx::raw_sql("ROLLBACK").execute(&mut lock).await.unwrap();
    lock.close().await.unwrap();
    let after = store_state(url).await;
    let panicked = stderr.contains("panicked") || stderr.contains("Tokio context");
    eprintln!(
        "{url}: in-flight request answered after {:?} ({}), SIGTERM {:?} after it was sent; \
         new connection right after SIGTERM: {right_after:?}, during the grace: {during_grace:?}; \
         exited {exited} {exit_after:?} after SIGTERM; panicked: {panicked}; \
         (accounts named late, audit seq) before {before:?}, after {after:?}",
        answered - sent,
        if response.is_empty() {
            "connection closed without a response"
        } else {
            &status_line
        },
        term - sent,
    );

    assert!(
        !panicked,
        "{url}: the coordinator panicked while shutting down; stderr:\n{}",
        tail(&stderr)
    );
    assert!(exited.success(), "{exited:?}; stderr:\n{}", tail(&stderr));
    // Written to a file, the log carries no terminal colour codes.
    assert!(
        !stderr.contains('\u{1b}'),
        "ANSI escapes in a log written to a file:\n{}",
        tail(&stderr)
    );
    // The in-flight request got an answer: a 503 problem+json with Retry-After (its
    // timeout), or the completed creation; or a clean close (EOF).
    let head = response
        .split("\r\n\r\n")
        .next()
        .unwrap()
        .to_ascii_lowercase();
    let completed = if response.is_empty() {
        false
    } else if status_line.starts_with("HTTP/1.1 503") {
        assert!(head.contains("retry-after: 1"), "{response}");
        assert!(
            head.contains("content-type: application/problem+json"),
            "{response}"
        );
        assert!(
            response.contains(r#""code":"request.timeout""#)
                || response.contains(r#""code":"store.busy""#),
            "{response}"
        );
        false
    } else {
        assert!(status_line.starts_with("HTTP/1.1 201"), "{response}");
        true
    };
    // An answered 503 (or a close) changed nothing; a completed creation changed it once.
    if completed {
        assert_eq!(after, (1, before.1 + 1), "{url}");
    } else {
        assert_eq!(
            after, before,
            "{url}: the refused request changed the store"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
