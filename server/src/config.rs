//! `coordinator.toml`: every key optional; the defaults run a coordinator on 127.0.0.1 with
//! a SQLite file in the working directory.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// The coordinator's configuration.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where to listen.
    pub bind: SocketAddr,
    /// `sqlite://civic.db` (created if missing) or `postgres://user@host/db`.
    pub store_url: String,
    /// TLS (rustls): PEM certificate chain and private key. Plain HTTP without.
    pub tls: Option<TlsConfig>,
    /// Largest JSON body, bytes.
    pub json_limit: usize,
    /// Largest binary protocol message (a masked vector), bytes.
    pub binary_limit: usize,
    /// How long each step of a round (a secure-aggregation phase) stays open, seconds
    /// (fractions allowed).
    pub phase_deadline_secs: f64,
    /// How long each join step of a linked round stays open, seconds: a pairwise join's
    /// step takes time in proportion to the sides' public capacities (at the sample
    /// policy's capacities, a minute or two on two cores), so its deadline is its own.
    pub join_deadline_secs: f64,
    /// How often the round driver checks deadlines, milliseconds.
    pub tick_millis: u64,
    /// The public bound on rows one partner holds, used only to size the ring.
    pub max_rows_per_partner: u64,
    /// Dropouts each round must survive (fraction of partners).
    pub max_dropout_rate: f64,
    /// Colluding partners each round must withstand (fraction of partners).
    pub max_corrupt_fraction: f64,
    /// δ at which costs are also stated as (ε, δ).
    pub reporting_delta: f64,
    /// Whether this coordinator drives secure-aggregation rounds. With several coordinators
    /// on one PostgreSQL database exactly one drives rounds (and partners' traffic must reach
    /// it); the others serve everything else and leave rounds they open to it.
    pub drive_rounds: bool,
    /// How long the round driver's lease lasts without renewal, seconds (fractions allowed;
    /// renewed every third of it, at least every second). A second coordinator set to
    /// drive rounds waits until it lapses; a restarted one too.
    pub driver_lease_secs: f64,
    /// How long a request may wait for a store connection before it is answered 503 with
    /// `Retry-After`, milliseconds.
    pub store_wait_ms: u64,
    /// How long a request may run before it is answered 503 with `Retry-After`, seconds.
    /// Shutdown waits this long (and five seconds more) for requests in flight.
    pub request_timeout_secs: u64,
    /// How long a dashboard (`/ui`) login lasts, seconds; the browser then logs in again.
    pub ui_session_secs: f64,
    /// The origin people's browsers reach this coordinator at (`https://civic.example.org`),
    /// where it differs from what it serves: behind a TLS-terminating proxy. Its scheme
    /// decides whether the dashboard's cookie is `Secure`, and dashboard forms must come
    /// from it.
    pub public_url: Option<String>,
}

/// Certificate and key files.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain.
    pub certificate: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub private_key: PathBuf,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 8440)),
            store_url: "sqlite://civic.db".into(),
            tls: None,
            json_limit: 256 * 1024,
            binary_limit: 64 * 1024 * 1024,
            phase_deadline_secs: 60.0,
            join_deadline_secs: 900.0,
            tick_millis: 200,
            max_rows_per_partner: 10_000_000,
            max_dropout_rate: 0.0,
            max_corrupt_fraction: 0.0,
            reporting_delta: 1e-6,
            drive_rounds: true,
            driver_lease_secs: 10.0,
            store_wait_ms: 5_000,
            request_timeout_secs: 30,
            ui_session_secs: 8.0 * 3600.0,
            public_url: None,
        }
    }
}

impl Config {
    /// Whether the dashboard's session cookie is `Secure`: always, unless the coordinator
    /// serves plain HTTP on a loopback address (a browser on the same machine), where a
    /// `Secure` cookie would never come back.
    pub fn ui_cookie_secure(&self) -> bool {
        match &self.public_url {
            Some(url) => url.starts_with("https://"),
            None => self.tls.is_some() || !self.bind.ip().is_loopback(),
        }
    }

    /// Parses and checks a configuration file's text; errors name the file and the key.
    pub fn from_toml(text: &str, source: &str) -> Result<Self, String> {
        let config: Config = toml::from_str(text).map_err(|e| format!("{source}: {e}"))?;
        config.check().map_err(|e| format!("{source}: {e}"))?;
        Ok(config)
    }

    /// Checks the values serde cannot.
    pub fn check(&self) -> Result<(), String> {
        if !(self.store_url.starts_with("sqlite:") || self.store_url.starts_with("postgres")) {
            return Err("store_url must start with sqlite: or postgres://".into());
        }
        if self.json_limit < 1024 || self.binary_limit < 1024 {
            return Err("json_limit and binary_limit must be at least 1024 bytes".into());
        }
        if !(self.phase_deadline_secs.is_finite() && self.phase_deadline_secs >= 0.05)
            || self.phase_deadline_secs > 86_400.0
        {
            return Err(format!(
                "phase_deadline_secs must be from 0.05 to 86400, got {}",
                self.phase_deadline_secs
            ));
        }
        if !(self.join_deadline_secs.is_finite() && self.join_deadline_secs >= 0.05)
            || self.join_deadline_secs > 86_400.0
        {
            return Err(format!(
                "join_deadline_secs must be from 0.05 to 86400, got {}",
                self.join_deadline_secs
            ));
        }
        if let Some(url) = &self.public_url {
            let origin = url
                .strip_prefix("https://")
                .or_else(|| url.strip_prefix("http://"));
            if !origin.is_some_and(|o| !o.is_empty() && !o.contains(['/', '?', '#', '@', ' '])) {
                return Err(format!(
                    "public_url must be an origin such as \"https://civic.example.org\" (a \
                     scheme and host, with a port if any, and no path), got {url:?}"
                ));
            }
        }
        if !(self.ui_session_secs.is_finite() && self.ui_session_secs >= 60.0)
            || self.ui_session_secs > 30.0 * 86_400.0
        {
            return Err(format!(
                "ui_session_secs must be from 60 to 2592000 (30 days), got {}",
                self.ui_session_secs
            ));
        }
        if self.tick_millis == 0 || self.tick_millis > 10_000 {
            return Err(format!(
                "tick_millis must be from 1 to 10000, got {}",
                self.tick_millis
            ));
        }
        if !(self.driver_lease_secs.is_finite() && self.driver_lease_secs >= 0.3)
            || self.driver_lease_secs > 3_600.0
        {
            return Err(format!(
                "driver_lease_secs must be from 0.3 to 3600 (it is renewed every third of it), got {}",
                self.driver_lease_secs
            ));
        }
        if !(10..=600_000).contains(&self.store_wait_ms) {
            return Err(format!(
                "store_wait_ms must be from 10 to 600000, got {}",
                self.store_wait_ms
            ));
        }
        if !(1..=3_600).contains(&self.request_timeout_secs) {
            return Err(format!(
                "request_timeout_secs must be from 1 to 3600, got {}",
                self.request_timeout_secs
            ));
        }
        if self.max_rows_per_partner == 0 {
            return Err("max_rows_per_partner must be positive".into());
        }
        for (name, v) in [
            ("max_dropout_rate", self.max_dropout_rate),
            ("max_corrupt_fraction", self.max_corrupt_fraction),
        ] {
            if !(0.0..0.5).contains(&v) {
                return Err(format!("{name} must be in [0, 0.5), got {v}"));
            }
        }
        if !(self.reporting_delta > 0.0 && self.reporting_delta < 1.0) {
            return Err(format!(
                "reporting_delta must be in (0, 1), got {}",
                self.reporting_delta
            ));
        }
        Ok(())
    }

    /// The phase deadline.
    pub fn phase_deadline(&self) -> Duration {
        Duration::from_secs_f64(self.phase_deadline_secs)
    }

    /// How long a round's open step stays open: a linked round's join steps have their own
    /// deadline.
    pub fn step_deadline(&self, long: bool) -> Duration {
        match long {
            true => Duration::from_secs_f64(self.join_deadline_secs),
            false => self.phase_deadline(),
        }
    }

    /// How long the driver lease lasts.
    pub fn driver_lease(&self) -> Duration {
        Duration::from_secs_f64(self.driver_lease_secs)
    }

    /// How often the driver renews its lease: a third of it, at least every second.
    pub fn lease_renewal(&self) -> Duration {
        (self.driver_lease() / 3).min(Duration::from_secs(1))
    }

    /// The bound on waiting for a store connection.
    pub fn store_wait(&self) -> Duration {
        Duration::from_millis(self.store_wait_ms)
    }

    /// The bound on one request.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sample_and_the_defaults_parse_and_bad_values_are_named() {
        let sample = include_str!("../../examples/coordinator.toml");
        let c = Config::from_toml(sample, "coordinator.toml").unwrap();
        assert_eq!(c.bind.port(), 8440);
        assert_eq!(Config::from_toml("", "empty").unwrap(), Config::default());
        let e = Config::from_toml("bind = \"nowhere\"", "c.toml").unwrap_err();
        assert!(e.contains("c.toml") && e.contains("bind"), "{e}");
        let e = Config::from_toml("colour = 1", "c.toml").unwrap_err();
        assert!(e.contains("colour"), "{e}");
        let e = Config::from_toml("store_url = \"mysql://x\"", "c.toml").unwrap_err();
        assert!(e.contains("store_url"), "{e}");
        let e = Config::from_toml("max_dropout_rate = 0.7", "c.toml").unwrap_err();
        assert!(e.contains("max_dropout_rate"), "{e}");
        // Whole seconds as before, and fractions now.
        let c = Config::from_toml("phase_deadline_secs = 3\ndriver_lease_secs = 0.6", "c").unwrap();
        assert_eq!(c.phase_deadline(), Duration::from_secs(3));
        assert_eq!(c.lease_renewal(), Duration::from_millis(200));
        let e = Config::from_toml("driver_lease_secs = 0.1", "c.toml").unwrap_err();
        assert!(e.contains("driver_lease_secs"), "{e}");
    }

    #[test]
    fn the_dashboard_cookie_is_secure_except_plain_http_on_loopback() {
        let secure = |text: &str| Config::from_toml(text, "c").unwrap().ui_cookie_secure();
        assert!(!secure(""));
        assert!(secure("bind = \"0.0.0.0:8440\""));
        // Behind a TLS-terminating proxy on loopback, the public origin decides.
        assert!(secure("public_url = \"https://civic.example.org\""));
        assert!(!secure("public_url = \"http://127.0.0.1:8440\""));
        for bad in [
            "civic.example.org",
            "https://civic.example.org/ui",
            "https://",
            "ftp://x",
        ] {
            let e = Config::from_toml(&format!("public_url = {bad:?}"), "c.toml").unwrap_err();
            assert!(e.contains("public_url"), "{bad}: {e}");
        }
        let e = Config::from_toml("ui_session_secs = 5", "c.toml").unwrap_err();
        assert!(e.contains("ui_session_secs"), "{e}");
    }
}
