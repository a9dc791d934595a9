//! The coordinator's one source of time: phase deadlines, the driver lease and every stored
//! timestamp read it. `main` uses the system clock; tests inject a [`TestClock`] and move it
//! forward instead of sleeping through deadlines and leases.

use std::fmt::Debug;
use std::sync::Arc;
use std::time::SystemTime;

/// A source of the current time.
pub trait Clock: Send + Sync + Debug {
    /// Now.
    fn now(&self) -> SystemTime;

    /// Now, in milliseconds since the Unix epoch (as the store keeps lease expiries).
    fn now_ms(&self) -> i64 {
        self.now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or_default()
    }

    /// Now, as RFC 3339 UTC with milliseconds (as the store keeps timestamps).
    fn rfc3339(&self) -> String {
        rfc3339(self.now())
    }
}

/// A time as RFC 3339 UTC with milliseconds.
pub fn rfc3339(at: SystemTime) -> String {
    humantime::format_rfc3339_millis(at).to_string()
}

/// The operating system's clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A shared clock.
pub type SharedClock = Arc<dyn Clock>;

/// A clock that stands still until a test moves it (feature `test-util`). It starts at the
/// real time so that stored timestamps look ordinary.
#[cfg(any(test, feature = "test-util"))]
#[derive(Debug)]
pub struct TestClock {
    now: std::sync::Mutex<SystemTime>,
}

#[cfg(any(test, feature = "test-util"))]
impl TestClock {
    /// A clock stopped at the current real time.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            now: std::sync::Mutex::new(SystemTime::now()),
        })
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: std::time::Duration) {
        if let Ok(mut now) = self.now.lock() {
            *now += by;
        }
    }
}

#[cfg(any(test, feature = "test-util"))]
impl Clock for TestClock {
    fn now(&self) -> SystemTime {
        self.now
            .lock()
            .map(|t| *t)
            .unwrap_or_else(|e| *e.into_inner())
    }
}
