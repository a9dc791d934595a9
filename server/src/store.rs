//! The store: SQLite (embedded default, WAL) or PostgreSQL (several coordinators on one
//! database), through sqlx's `Any` driver so that every query is written once.
//!
//! - Reads take a connection from the read pool ([`Store::read`]) and hold it only for the
//!   queries themselves: never across CPU work (pricing, sampling) or a network call.
//! - Writes go through [`Store::run_tx`]: a named transaction, retried when the database
//!   reports a serialisation failure, a deadlock or a lock it could not take. On SQLite every
//!   write transaction runs on one writer connection, so writers queue in the pool (fairly,
//!   with a bounded wait) instead of spinning in SQLite's busy handler.
//! - Every wait for a connection is bounded (`store_wait_ms`): past it the caller gets
//!   [`StoreError::Busy`], which the API answers with 503 and `Retry-After`.
//!
//! Portability rules every query here follows: `$n` placeholders (both backends accept
//! them), integers as BIGINT and `i64`, booleans as 0/1, times as RFC 3339 text, and every
//! read-modify-write transaction *starts with a write* to the row it serialises on (the
//! dataset's budget row, the audit head, the query), so SQLite takes its write lock before
//! reading and PostgreSQL takes the row lock: concurrent requests queue instead of racing.
//!
//! Functions here know no HTTP: they return [`StoreError`], or `Option`/`bool` where a row
//! may be missing or a conditional write may not apply, and the services decide what that
//! means for the caller.

pub mod accounts;
pub mod audit;
pub mod budgets;
pub mod datasets;
pub mod manifests;
mod migrations;
pub mod projects;
pub mod queries;
pub mod rounds;
#[cfg(any(test, feature = "test-util"))]
pub mod scratch;
pub mod sessions;
pub mod training;

use std::time::Duration;

use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyConnection, AnyPool};

pub use accounts::{Account, NewToken};
pub use queries::{NewQuery, QueryRow};
pub use rounds::{RoundRow, RoundSetup};

/// Which database is behind the pools.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// One file, WAL.
    Sqlite,
    /// A server.
    Postgres,
}

/// What can go wrong in the store. No variant carries a data value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// No connection came free within the configured wait, or a write kept meeting
    /// conflicts through every retry. Nothing was changed; the caller may retry.
    #[error("the store is busy ({0})")]
    Busy(String),
    /// Two requests raced for the same unique key; the loser changed nothing.
    #[error("another request changed the same record at the same moment")]
    Conflict,
    /// A stored value that cannot be read back (a bug or tampering, never bad input).
    #[error("a stored {what} cannot be read: {reason}")]
    Corrupt {
        /// What was being read.
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// Any other database error.
    #[error("database error: {0}")]
    Database(sqlx::Error),
}

impl StoreError {
    /// A stored value that does not decode.
    pub fn corrupt(what: &'static str, reason: impl std::fmt::Display) -> Self {
        StoreError::Corrupt {
            what,
            reason: reason.to_string(),
        }
    }

    /// Whether running the transaction again may succeed: a serialisation failure, a
    /// deadlock, or a lock the database could not take (SQLite's BUSY/LOCKED).
    pub fn is_retryable(&self) -> bool {
        let StoreError::Database(e) = self else {
            return false;
        };
        let Some(db) = e.as_database_error() else {
            return false;
        };
        match db.code().as_deref() {
            // PostgreSQL: serialization_failure, deadlock_detected, lock_not_available.
            Some("40001" | "40P01" | "55P03") => true,
            // SQLite: SQLITE_BUSY, SQLITE_LOCKED and their extended codes.
            Some(code) => {
                code.parse::<i64>().is_ok_and(|c| matches!(c & 0xff, 5 | 6))
                    || db.message().contains("database is locked")
            }
            None => db.message().contains("database is locked"),
        }
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::PoolTimedOut => StoreError::Busy("no connection came free".into()),
            sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) => {
                StoreError::corrupt("value", &e)
            }
            _ if e
                .as_database_error()
                .is_some_and(|d| d.is_unique_violation()) =>
            {
                StoreError::Conflict
            }
            _ => StoreError::Database(e),
        }
    }
}

/// Results of store functions.
pub type StoreResult<T> = Result<T, StoreError>;

/// An error that a transaction's body may return: it must be able to carry a store error,
/// and to say whether it is one worth retrying.
pub trait TxError: From<StoreError> {
    /// The store error inside, if any.
    fn store_error(&self) -> Option<&StoreError>;
}

impl TxError for StoreError {
    fn store_error(&self) -> Option<&StoreError> {
        Some(self)
    }
}

/// How many times a transaction runs before a retryable failure is reported as busy.
const TX_ATTEMPTS: u32 = 6;

/// The coordinator's database.
#[derive(Clone, Debug)]
pub struct Store {
    read: AnyPool,
    write: AnyPool,
    backend: Backend,
}

/// A read connection.
pub type ReadConn = PoolConnection<Any>;

impl Store {
    /// Connects (creating a SQLite file if missing) and applies any pending migrations.
    /// `wait` bounds every wait for a connection.
    pub async fn connect(url: &str, wait: Duration) -> Result<Self, String> {
        install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            return Err(format!(
                "unsupported store URL {url:?}: use sqlite: or postgres://"
            ));
        };
        let url = match backend {
            Backend::Sqlite if !url.contains("mode=") => {
                let sep = if url.contains('?') { '&' } else { '?' };
                format!("{url}{sep}mode=rwc")
            }
            _ => url.to_string(),
        };
        let busy_ms = wait.as_millis().min(600_000);
        let options = |max: u32| {
            AnyPoolOptions::new()
                .max_connections(max)
                .acquire_timeout(wait)
                // An embedded SQLite connection cannot be dropped by a server: pinging it on
                // every acquire (a round trip to its worker thread) only costs each request.
                .test_before_acquire(backend == Backend::Postgres)
                .after_connect(move |conn, _| {
                    Box::pin(async move {
                        if backend == Backend::Sqlite {
                            // Only another process (an operator's sqlite3 shell, a backup)
                            // can hold the lock: wait for it as long as for a connection.
                            sqlx::query(&format!("PRAGMA busy_timeout = {busy_ms}"))
                                .execute(&mut *conn)
                                .await?;
                            sqlx::query("PRAGMA foreign_keys = ON")
                                .execute(&mut *conn)
                                .await?;
                        }
                        Ok(())
                    })
                })
        };
        let open = |e: sqlx::Error| format!("cannot open the store at {}: {e}", redact(&url));
        let (read, write) = match backend {
            Backend::Sqlite => {
                let write = options(1).connect(&url).await.map_err(open)?;
                sqlx::query("PRAGMA journal_mode = WAL")
                    .execute(&write)
                    .await
                    .map_err(|e| format!("cannot switch the SQLite store to WAL: {e}"))?;
                (options(8).connect(&url).await.map_err(open)?, write)
            }
            Backend::Postgres => {
                let pool = options(16).connect(&url).await.map_err(open)?;
                (pool.clone(), pool)
            }
        };
        let store = Self {
            read,
            write,
            backend,
        };
        migrations::apply(&store)
            .await
            .map_err(|e| format!("cannot migrate the store: {e}"))?;
        Ok(store)
    }

    /// Which backend.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// A connection for reads; hold it only for the queries.
    pub async fn read(&self) -> StoreResult<ReadConn> {
        Ok(self.read.acquire().await?)
    }

    /// The read pool (for tests that inspect the store directly).
    pub fn pool(&self) -> &AnyPool {
        &self.read
    }

    /// Runs `body` in a transaction named `name`, committing if it returns `Ok`. A
    /// retryable store failure (serialisation, deadlock, lock not available) runs it again,
    /// up to a few times with a short, growing pause; after that the caller gets
    /// [`StoreError::Busy`]. `body` must therefore be safe to run more than once: it may only
    /// touch the database through the connection it is given.
    pub async fn run_tx<T, E>(
        &self,
        name: &'static str,
        body: impl AsyncFn(&mut AnyConnection) -> Result<T, E>,
    ) -> Result<T, E>
    where
        E: TxError,
    {
        let mut pause = Duration::from_millis(5);
        let mut attempt = 1;
        loop {
            let mut tx = self.write.begin().await.map_err(StoreError::from)?;
            let failure: E = match body(&mut tx).await {
                Ok(value) => match tx.commit().await {
                    Ok(()) => return Ok(value),
                    Err(e) => StoreError::from(e).into(),
                },
                Err(e) => {
                    // Dropping the transaction rolls it back.
                    drop(tx);
                    e
                }
            };
            if !failure.store_error().is_some_and(StoreError::is_retryable) {
                return Err(failure);
            }
            if attempt == TX_ATTEMPTS {
                tracing::warn!(
                    tx = name,
                    attempts = attempt,
                    "transaction kept conflicting"
                );
                return Err(StoreError::Busy(format!("{name} kept conflicting")).into());
            }
            tracing::debug!(tx = name, attempt, "transaction conflicted; retrying");
            tokio::time::sleep(pause).await;
            pause *= 2;
            attempt += 1;
        }
    }

    /// Closes both pools, waiting for connections in use to come back.
    pub async fn close(&self) {
        self.write.close().await;
        self.read.close().await;
    }

    /// Whether the store answers.
    pub async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.read).await.is_ok()
    }

    /// The pool write transactions run on (migrations).
    pub(crate) fn writer(&self) -> &AnyPool {
        &self.write
    }
}

/// A URL with any password replaced, for messages.
fn redact(url: &str) -> String {
    // The query string, if any, starts at the first '?'; credentials end at the last '@'
    // before it (a password may itself hold '@' or '/').
    let (base, query) = match url.find('?') {
        Some(q) => (&url[..q], Some(&url[q + 1..])),
        None => (url, None),
    };
    let mut out = match (base.find("://"), base.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &base[s + 3..at];
            let user = creds.split(':').next().unwrap_or_default();
            format!("{}{user}:***{}", &base[..s + 3], &base[at..])
        }
        _ => base.to_string(),
    };
    if let Some(query) = query {
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((k, _)) if k.to_ascii_lowercase().contains("password") => format!("{k}=***"),
                _ => pair.to_string(),
            })
            .collect();
        out = format!("{out}?{}", pairs.join("&"));
    }
    out
}

/// Decodes a JSON column.
pub(crate) fn from_json<T: serde::de::DeserializeOwned>(
    what: &'static str,
    text: &str,
) -> StoreResult<T> {
    serde_json::from_str(text).map_err(|e| StoreError::corrupt(what, e))
}

/// Encodes a value for a JSON column.
pub(crate) fn to_json<T: serde::Serialize>(what: &'static str, value: &T) -> StoreResult<String> {
    serde_json::to_string(value).map_err(|e| StoreError::corrupt(what, e))
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    /// A database error with the code a real driver would report.
    #[derive(Debug)]
    struct Reported(&'static str);

    impl std::fmt::Display for Reported {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "reported {}", self.0)
        }
    }

    impl std::error::Error for Reported {}

    impl sqlx::error::DatabaseError for Reported {
        fn message(&self) -> &str {
            "reported by the test"
        }
        fn code(&self) -> Option<std::borrow::Cow<'_, str>> {
            Some(self.0.into())
        }
        fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
            self
        }
        fn kind(&self) -> sqlx::error::ErrorKind {
            sqlx::error::ErrorKind::Other
        }
    }

    fn reported(code: &'static str) -> StoreError {
        StoreError::Database(sqlx::Error::Database(Box::new(Reported(code))))
    }

    async fn store() -> Store {
        let dir = std::env::temp_dir().join(format!(
            "civic-store-unit-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let url = format!("sqlite://{}", dir.join("civic.db").display());
        Store::connect(&url, Duration::from_secs(5)).await.unwrap()
    }

    #[test]
    fn serialisation_failures_deadlocks_and_locks_are_retryable_and_nothing_else() {
        for code in ["40001", "40P01", "55P03", "5", "6", "517", "262"] {
            assert!(reported(code).is_retryable(), "{code}");
        }
        for code in ["23505", "42P01", "19", "1"] {
            assert!(!reported(code).is_retryable(), "{code}");
        }
        assert!(!StoreError::Conflict.is_retryable());
        assert!(!StoreError::Busy("x".into()).is_retryable());
    }

    #[actix_web::test]
    async fn a_transaction_is_retried_on_conflict_and_rolled_back_each_time() {
        let store = store().await;
        let attempts = Cell::new(0);
        // Fails twice with a serialisation failure after writing, then succeeds: the writes
        // of the failed attempts are rolled back, so exactly one row is left.
        let value = store
            .run_tx("retried", async |tx| {
                attempts.set(attempts.get() + 1);
                sqlx::query("INSERT INTO counters (name, value) VALUES ('test', $1)")
                    .bind(i64::from(attempts.get()))
                    .execute(&mut *tx)
                    .await?;
                if attempts.get() < 3 {
                    return Err(reported("40001"));
                }
                Ok(attempts.get())
            })
            .await
            .unwrap();
        assert_eq!((value, attempts.get()), (3, 3));
        let rows: Vec<i64> = sqlx::query_scalar("SELECT value FROM counters WHERE name = 'test'")
            .fetch_all(store.pool())
            .await
            .unwrap();
        assert_eq!(rows, vec![3]);
        // Always conflicting: the caller is told the store is busy, after a bounded number
        // of attempts.
        attempts.set(0);
        let e = store
            .run_tx("always conflicting", async |_| {
                attempts.set(attempts.get() + 1);
                Err::<(), _>(reported("40P01"))
            })
            .await
            .unwrap_err();
        assert!(matches!(e, StoreError::Busy(_)), "{e}");
        assert_eq!(attempts.get(), TX_ATTEMPTS);
        // Anything else is returned at once.
        attempts.set(0);
        let e = store
            .run_tx("refused", async |_| {
                attempts.set(attempts.get() + 1);
                Err::<(), _>(StoreError::Conflict)
            })
            .await
            .unwrap_err();
        assert!(matches!(e, StoreError::Conflict), "{e}");
        assert_eq!(attempts.get(), 1);
    }

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(
            super::redact("postgres://civic:s3cret@db/civic"),
            "postgres://civic:***@db/civic"
        );
        assert_eq!(super::redact("sqlite://civic.db"), "sqlite://civic.db");
        assert_eq!(
            super::redact("postgres://civic:p@ss/w@rd@db:5432/civic?sslmode=require"),
            "postgres://civic:***@db:5432/civic?sslmode=require"
        );
        assert_eq!(
            super::redact("postgres://db/civic?user=civic&password=s3cret&sslpassword=k3y"),
            "postgres://db/civic?user=civic&password=***&sslpassword=***"
        );
    }
}
