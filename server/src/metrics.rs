//! Prometheus counters, rendered as text at `/metrics`.

use std::sync::atomic::{AtomicU64, Ordering};

/// A monotonically increasing counter.
pub struct Counter {
    name: &'static str,
    help: &'static str,
    value: AtomicU64,
}

impl Counter {
    const fn new(name: &'static str, help: &'static str) -> Self {
        Self {
            name,
            help,
            value: AtomicU64::new(0),
        }
    }

    /// Adds one.
    pub fn inc(&self) {
        self.value.fetch_add(1, Ordering::Relaxed);
    }

    /// The value.
    pub fn get(&self) -> u64 {
        self.value.load(Ordering::Relaxed)
    }
}

/// HTTP responses by class.
pub static RESPONSES_2XX: Counter = Counter::new(
    "civic_http_responses_2xx_total",
    "HTTP responses with a 2xx status.",
);
/// Client errors.
pub static RESPONSES_4XX: Counter = Counter::new(
    "civic_http_responses_4xx_total",
    "HTTP responses with a 4xx status.",
);
/// Server errors.
pub static RESPONSES_5XX: Counter = Counter::new(
    "civic_http_responses_5xx_total",
    "HTTP responses with a 5xx status.",
);
/// Rounds opened.
pub static ROUNDS_OPENED: Counter = Counter::new(
    "civic_rounds_opened_total",
    "Secure-aggregation rounds opened.",
);
/// Rounds aborted.
pub static ROUNDS_ABORTED: Counter = Counter::new(
    "civic_rounds_aborted_total",
    "Rounds aborted (reservation refunded).",
);
/// Releases made.
pub static RELEASES: Counter = Counter::new(
    "civic_releases_total",
    "Differentially private releases sampled and stored.",
);
/// Releases re-served.
pub static RESERVED_RELEASES: Counter = Counter::new(
    "civic_releases_reserved_total",
    "Identical queries answered from a stored release at no cost.",
);

/// Requests with an unknown token.
pub static AUTH_FAILURES: Counter = Counter::new(
    "civic_auth_failures_total",
    "Requests with an unknown bearer token.",
);
/// Requests refused for an address's earlier failures.
pub static AUTH_THROTTLED: Counter = Counter::new(
    "civic_auth_throttled_total",
    "Requests refused (429) because their address sent too many unknown tokens.",
);

const ALL: [&Counter; 9] = [
    &RESPONSES_2XX,
    &RESPONSES_4XX,
    &RESPONSES_5XX,
    &ROUNDS_OPENED,
    &ROUNDS_ABORTED,
    &RELEASES,
    &RESERVED_RELEASES,
    &AUTH_FAILURES,
    &AUTH_THROTTLED,
];

/// The exposition text, with the gauges passed in.
pub fn render(open_rounds: usize, store_up: bool) -> String {
    let mut out = String::new();
    for c in ALL {
        out.push_str(&format!(
            "# HELP {} {}\n# TYPE {} counter\n{} {}\n",
            c.name,
            c.help,
            c.name,
            c.name,
            c.get()
        ));
    }
    out.push_str(&format!(
        "# HELP civic_rounds_open Rounds open on this coordinator.\n# TYPE civic_rounds_open gauge\ncivic_rounds_open {open_rounds}\n"
    ));
    out.push_str(&format!(
        "# HELP civic_store_up Whether the store answered.\n# TYPE civic_store_up gauge\ncivic_store_up {}\n",
        u8::from(store_up)
    ));
    out
}

/// Counts a response by its status.
pub fn count_status(status: u16) {
    match status {
        200..=299 => RESPONSES_2XX.inc(),
        400..=499 => RESPONSES_4XX.inc(),
        500..=599 => RESPONSES_5XX.inc(),
        _ => {}
    }
}
