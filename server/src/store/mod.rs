//! The store: SQLite (embedded default, WAL) or PostgreSQL (several coordinators on one
//! database), through sqlx's `Any` driver so that every query is written once.
//!
//! Portability rules every query here follows: `$n` placeholders (both backends accept
//! them), integers as BIGINT and `i64`, booleans as 0/1, times as RFC 3339 text, and every
//! read-modify-write transaction *starts with a write* to the row it serialises on (the
//! dataset's budget row, the audit head), so SQLite takes its write lock before reading and
//! PostgreSQL takes the row lock: concurrent requests queue instead of racing.

pub mod accounts;
pub mod audit;
pub mod budgets;
pub mod datasets;
pub mod projects;
pub mod queries;
pub mod rounds;
mod schema;

use std::time::{Duration, SystemTime};

use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::{Any, AnyPool, Transaction};

pub use accounts::{Account, NewToken};
pub use queries::{NewQuery, QueryRow};
pub use rounds::{RoundRow, RoundSetup};

/// Which database is behind the pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// One file, WAL.
    Sqlite,
    /// A server.
    Postgres,
}

/// The coordinator's database.
#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
}

/// A transaction on the store.
pub type Tx<'a> = Transaction<'a, Any>;

impl Store {
    /// Connects (creating a SQLite file if missing) and applies any pending migrations.
    pub async fn connect(url: &str) -> Result<Self, String> {
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
        let pool = AnyPoolOptions::new()
            .max_connections(if backend == Backend::Sqlite { 8 } else { 16 })
            .acquire_timeout(Duration::from_secs(30))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // Waits for the write lock instead of failing at once.
                        sqlx::query("PRAGMA busy_timeout = 30000")
                            .execute(&mut *conn)
                            .await?;
                        sqlx::query("PRAGMA foreign_keys = ON")
                            .execute(&mut *conn)
                            .await?;
                    }
                    Ok(())
                })
            })
            .connect(&url)
            .await
            .map_err(|e| format!("cannot open the store at {}: {e}", redact(&url)))?;
        if backend == Backend::Sqlite {
            sqlx::query("PRAGMA journal_mode = WAL")
                .execute(&pool)
                .await
                .map_err(|e| format!("cannot switch the SQLite store to WAL: {e}"))?;
        }
        let store = Self { pool, backend };
        store
            .migrate()
            .await
            .map_err(|e| format!("cannot migrate the store: {e}"))?;
        Ok(store)
    }

    /// Which backend.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The pool, for reads outside a transaction.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Starts a transaction.
    pub async fn begin(&self) -> Result<Tx<'static>, sqlx::Error> {
        self.pool.begin().await
    }

    async fn migrate(&self) -> Result<(), sqlx::Error> {
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                version BIGINT PRIMARY KEY, description TEXT NOT NULL, applied_at TEXT NOT NULL)",
        )
        .execute(&self.pool)
        .await?;
        for &(version, description, sqlite, postgres) in schema::MIGRATIONS {
            let mut tx = self.begin().await?;
            // Claim the version first: a second coordinator migrating at the same moment
            // fails on the primary key and rolls back instead of applying it twice.
            let claimed = sqlx::query(
                "INSERT INTO schema_migrations (version, description, applied_at)
                 VALUES ($1, $2, $3) ON CONFLICT (version) DO NOTHING",
            )
            .bind(version)
            .bind(description)
            .bind(now_rfc3339())
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if claimed == 0 {
                continue;
            }
            let text = if self.backend == Backend::Sqlite {
                sqlite
            } else {
                postgres
            };
            for statement in text.split(';').map(str::trim).filter(|s| !s.is_empty()) {
                sqlx::query(statement).execute(&mut *tx).await?;
            }
            tx.commit().await?;
            tracing::info!(version, description, "applied store migration");
        }
        Ok(())
    }

    /// Whether the store answers.
    pub async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.pool).await.is_ok()
    }
}

/// A URL with any password replaced, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &creds[..c], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// Now, as RFC 3339 UTC with milliseconds.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

/// A time, as RFC 3339 UTC with milliseconds.
pub fn rfc3339(at: SystemTime) -> String {
    humantime::format_rfc3339_millis(at).to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(
            super::redact("postgres://civic:s3cret@db/civic"),
            "postgres://civic:***@db/civic"
        );
        assert_eq!(super::redact("sqlite://civic.db"), "sqlite://civic.db");
    }
}
