//! The schema, embedded: one list of migrations, each written for SQLite and PostgreSQL
//! (they differ only in key generation and the binary type), some with a data step in Rust.
//! Applied in order at start-up inside one transaction each, and recorded in
//! `schema_migrations`.

use sqlx::{AnyConnection, Row};

use super::{Backend, Store, StoreError, StoreResult};

/// A migration's data step, run in its transaction after its SQL.
type DataStep = for<'c> fn(
    &'c mut AnyConnection,
) -> std::pin::Pin<Box<dyn Future<Output = StoreResult<()>> + Send + 'c>>;

/// (version, description, SQLite text, PostgreSQL text, data step).
const MIGRATIONS: &[(i64, &str, &str, &str, Option<DataStep>)] = &[
    (1, "initial schema", V1_SQLITE, V1_POSTGRES, None),
    (2, "round driver lease", V2, V2, None),
    (
        3,
        "ledger entries in their own table; rounds with their own ids and protocol; calibrations stored with queries",
        V3_SQLITE,
        V3_POSTGRES,
        Some(|conn| Box::pin(ledger_entries_out_of_the_ledger(conn))),
    ),
    (
        4,
        "the board's signed manifests; approvals carry the member's signature",
        V4,
        V4,
        None,
    ),
    (
        5,
        "the dashboard's browser sessions",
        V5_SQLITE,
        V5_POSTGRES,
        None,
    ),
    (6, "training jobs' rounds and iterates", V6, V6, None),
];

/// Applies every migration not yet recorded.
pub(super) async fn apply(store: &Store) -> StoreResult<()> {
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version BIGINT PRIMARY KEY, description TEXT NOT NULL, applied_at TEXT NOT NULL)",
    )
    .execute(store.writer())
    .await?;
    for &(version, description, sqlite, postgres, data) in MIGRATIONS {
        let mut tx = store.writer().begin().await?;
        // Claim the version first: a second coordinator migrating at the same moment
        // fails on the primary key and rolls back instead of applying it twice.
        let claimed = sqlx::query(
            "INSERT INTO schema_migrations (version, description, applied_at)
             VALUES ($1, $2, $3) ON CONFLICT (version) DO NOTHING",
        )
        .bind(version)
        .bind(description)
        .bind(crate::clock::rfc3339(std::time::SystemTime::now()))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if claimed == 0 {
            continue;
        }
        let text = if store.backend() == Backend::Sqlite {
            sqlite
        } else {
            postgres
        };
        for statement in text.split(';').map(str::trim).filter(|s| !s.is_empty()) {
            sqlx::query(statement).execute(&mut *tx).await?;
        }
        if let Some(step) = data {
            step(&mut tx).await?;
        }
        tx.commit().await?;
        tracing::info!(version, description, "applied store migration");
    }
    Ok(())
}

/// Version 3's data step: a ledger stored before it kept its entries (and a per-query map)
/// inside its JSON document; they move to `ledger_entries`, in their order, and the
/// document keeps only the caps and totals.
async fn ledger_entries_out_of_the_ledger(conn: &mut AnyConnection) -> StoreResult<()> {
    let rows = sqlx::query("SELECT dataset, ledger FROM budgets ORDER BY dataset")
        .fetch_all(&mut *conn)
        .await?;
    for row in rows {
        let dataset: String = row.try_get("dataset")?;
        let text: String = row.try_get("ledger")?;
        let mut doc: serde_json::Value = super::from_json("ledger", &text)?;
        let entries = doc
            .as_object_mut()
            .and_then(|o| {
                o.remove("queries");
                o.remove("entries")
            })
            .unwrap_or_default();
        let entries: Vec<civic_policies::budget::LedgerEntry> =
            serde_json::from_value(entries).map_err(|e| StoreError::corrupt("ledger", e))?;
        for e in &entries {
            super::budgets::append_entry(conn, &dataset, e, "(before migration 3)").await?;
        }
        sqlx::query("UPDATE budgets SET ledger = $1 WHERE dataset = $2")
            .bind(super::to_json("ledger", &doc)?)
            .bind(&dataset)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

macro_rules! v3 {
    ($id:literal) => {
        concat!(
            "CREATE TABLE ledger_entries (
                seq ", $id, ",
                dataset TEXT NOT NULL,
                query_id BIGINT,
                project TEXT NOT NULL,
                kind TEXT NOT NULL,
                amount_units BIGINT NOT NULL,
                at TEXT NOT NULL
            );
            CREATE INDEX ledger_entries_query ON ledger_entries (query_id);
            CREATE UNIQUE INDEX ledger_entries_one_reservation ON ledger_entries (query_id)
                WHERE kind = 'reserve';
            CREATE UNIQUE INDEX ledger_entries_one_settlement ON ledger_entries (query_id)
                WHERE kind IN ('charge', 'refund');
            ALTER TABLE rounds ADD COLUMN query_id BIGINT;
            UPDATE rounds SET query_id = id;
            UPDATE rounds SET phase = 'masked_input_collection' WHERE phase = 'masked_input';
            UPDATE round_messages SET phase = 'masked_input_collection' WHERE phase = 'masked_input';
            ALTER TABLE rounds ADD COLUMN protocol TEXT NOT NULL DEFAULT 'secure-sum/v1';
            CREATE INDEX rounds_query ON rounds (query_id);
            CREATE INDEX rounds_state ON rounds (state);
            CREATE TABLE counters (name TEXT PRIMARY KEY, value BIGINT NOT NULL);
            INSERT INTO counters (name, value) SELECT 'round', COALESCE(MAX(id), 0) FROM rounds;
            ALTER TABLE queries ADD COLUMN calibration TEXT"
        )
    };
}

const V3_SQLITE: &str = v3!("INTEGER PRIMARY KEY AUTOINCREMENT");
const V3_POSTGRES: &str = v3!("BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY");

/// Every manifest the board published (the signed JSON), and board signatures on approvals.
const V4: &str = "CREATE TABLE manifests (
        version BIGINT PRIMARY KEY,
        digest TEXT NOT NULL UNIQUE,
        body TEXT NOT NULL,
        published_by TEXT NOT NULL,
        published_at TEXT NOT NULL
    );
    ALTER TABLE approvals ADD COLUMN signature TEXT";

/// Browser sessions of `/ui`, by the SHA-256 of the cookie's value.
macro_rules! v5 {
    ($blob:literal) => {
        concat!(
            "CREATE TABLE ui_sessions (
                session_hash ",
            $blob,
            " PRIMARY KEY,
                account_id BIGINT NOT NULL,
                token_hash ",
            $blob,
            " NOT NULL,
                expires_ms BIGINT NOT NULL
            )"
        )
    };
}

const V5_SQLITE: &str = v5!("BLOB");
const V5_POSTGRES: &str = v5!("BYTEA");

/// Each round of a training job: its iteration, the coefficients it computes at (JSON), and
/// once it has finished, its noisy total in real units (JSON) and how many partners were in it.
const V6: &str = "CREATE TABLE training_rounds (
        round_id BIGINT PRIMARY KEY,
        query_id BIGINT NOT NULL,
        iteration BIGINT NOT NULL,
        coefficients TEXT NOT NULL,
        total TEXT,
        contributors BIGINT,
        opened_at TEXT NOT NULL,
        UNIQUE (query_id, iteration)
    )";

/// Which coordinator drives rounds, until when (milliseconds since the Unix epoch).
const V2: &str = "CREATE TABLE driver_lease (
        id BIGINT PRIMARY KEY,
        owner TEXT NOT NULL,
        expires_ms BIGINT NOT NULL
    );
    INSERT INTO driver_lease (id, owner, expires_ms) VALUES (1, '', 0)";

macro_rules! v1 {
    ($id:literal, $blob:literal) => {
        concat!(
            "CREATE TABLE accounts (
                id ", $id, ",
                name TEXT NOT NULL UNIQUE,
                role TEXT NOT NULL,
                token_hash ", $blob, " NOT NULL UNIQUE,
                identity_key ", $blob, ",
                created_at TEXT NOT NULL
            );
            CREATE TABLE datasets (
                id TEXT NOT NULL,
                version BIGINT NOT NULL,
                policy TEXT NOT NULL,
                source TEXT NOT NULL,
                created_by TEXT NOT NULL,
                created_at TEXT NOT NULL,
                PRIMARY KEY (id, version)
            );
            CREATE TABLE budgets (
                dataset TEXT PRIMARY KEY,
                ledger TEXT NOT NULL,
                writes BIGINT NOT NULL
            );
            CREATE TABLE projects (
                id TEXT PRIMARY KEY,
                title TEXT NOT NULL,
                created_by TEXT NOT NULL,
                created_at TEXT NOT NULL
            );
            CREATE TABLE project_members (
                project TEXT NOT NULL,
                account TEXT NOT NULL,
                PRIMARY KEY (project, account)
            );
            CREATE TABLE queries (
                id ", $id, ",
                project TEXT NOT NULL,
                dataset TEXT NOT NULL,
                dataset_version BIGINT NOT NULL,
                submitted_by TEXT NOT NULL,
                submitted_at TEXT NOT NULL,
                request TEXT NOT NULL,
                fingerprint TEXT NOT NULL,
                cost TEXT NOT NULL,
                cost_units BIGINT NOT NULL,
                approvals_required BIGINT NOT NULL,
                state TEXT NOT NULL,
                reason TEXT,
                round_id BIGINT,
                release_id BIGINT,
                reused BIGINT NOT NULL
            );
            CREATE INDEX queries_state ON queries (state);
            CREATE TABLE approvals (
                query_id BIGINT NOT NULL,
                member TEXT NOT NULL,
                approve BIGINT NOT NULL,
                reason TEXT NOT NULL,
                at TEXT NOT NULL,
                PRIMARY KEY (query_id, member)
            );
            CREATE TABLE rounds (
                id BIGINT PRIMARY KEY,
                setup ", $blob, " NOT NULL,
                phase TEXT NOT NULL,
                state TEXT NOT NULL,
                opened_at TEXT NOT NULL
            );
            CREATE TABLE round_messages (
                round_id BIGINT NOT NULL,
                phase TEXT NOT NULL,
                partner BIGINT NOT NULL,
                body ", $blob, " NOT NULL,
                PRIMARY KEY (round_id, phase, partner)
            );
            CREATE TABLE releases (
                id ", $id, ",
                query_id BIGINT NOT NULL UNIQUE,
                dataset TEXT NOT NULL,
                fingerprint TEXT NOT NULL,
                body TEXT NOT NULL,
                released_at TEXT NOT NULL
            );
            CREATE INDEX releases_fingerprint ON releases (fingerprint);
            CREATE TABLE audit_log (
                seq BIGINT PRIMARY KEY,
                at TEXT NOT NULL,
                actor TEXT NOT NULL,
                action TEXT NOT NULL,
                subject TEXT NOT NULL,
                details TEXT NOT NULL,
                prev_hash TEXT NOT NULL,
                hash TEXT NOT NULL
            );
            CREATE TABLE audit_head (
                id BIGINT PRIMARY KEY,
                seq BIGINT NOT NULL,
                hash TEXT NOT NULL
            );
            INSERT INTO audit_head (id, seq, hash)
                VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');"
        )
    };
}

const V1_SQLITE: &str = v1!("INTEGER PRIMARY KEY AUTOINCREMENT", "BLOB");
const V1_POSTGRES: &str = v1!("BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY", "BYTEA");

#[cfg(test)]
mod tests {
    use civic_policies::budget::{EntryKind, Held, QueryBudget};
    use civic_policies::{Ledger, Rho};

    use super::*;

    #[actix_web::test]
    async fn a_ledger_stored_before_version_3_moves_its_entries_to_their_table() {
        let dir = std::env::temp_dir().join(format!("civic-migrate-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let _ = std::fs::remove_file(dir.join("civic.db"));
        let url = format!("sqlite://{}", dir.join("civic.db").display());
        let store = Store::connect(&url, std::time::Duration::from_secs(5))
            .await
            .unwrap();
        // A ledger as version 2 wrote it: its entries and a per-query map inside the JSON.
        let r = |x| Rho::cap(x).unwrap();
        let mut doc = serde_json::to_value(Ledger::new("falls", r(1.0), r(0.5))).unwrap();
        doc["projects"] = serde_json::json!({
            "p1": { "cap": r(0.6), "reserved": r(0.1), "charged": r(0.2) }
        });
        doc["queries"] = serde_json::json!({ "7": ["p1", { "charged": r(0.2) }] });
        doc["entries"] = serde_json::json!([
            { "query": 0, "project": "p1", "kind": "allocate", "amount": r(0.6) },
            { "query": 7, "project": "p1", "kind": "reserve", "amount": r(0.2) },
            { "query": 7, "project": "p1", "kind": "charge", "amount": r(0.2) },
            { "query": 8, "project": "p1", "kind": "reserve", "amount": r(0.1) },
        ]);
        let held = store
            .run_tx("migrate", async |tx| {
                sqlx::query(
                    "INSERT INTO budgets (dataset, ledger, writes) VALUES ('falls', $1, 0)",
                )
                .bind(doc.to_string())
                .execute(&mut *tx)
                .await?;
                ledger_entries_out_of_the_ledger(tx).await?;
                let entries = crate::store::budgets::entries(tx, "falls").await?;
                assert_eq!(
                    entries.iter().map(|e| e.kind).collect::<Vec<_>>(),
                    [
                        EntryKind::Allocate,
                        EntryKind::Reserve,
                        EntryKind::Charge,
                        EntryKind::Reserve
                    ]
                );
                let ledger = crate::store::budgets::read(tx, "falls").await?.unwrap();
                assert_eq!(ledger.project("p1").unwrap().charged, r(0.2));
                let text: String = sqlx::query_scalar("SELECT ledger FROM budgets")
                    .fetch_one(&mut *tx)
                    .await?;
                assert!(
                    !text.contains("entries") && !text.contains("queries"),
                    "{text}"
                );
                Ok::<_, StoreError>((
                    crate::store::budgets::held(tx, 7).await?,
                    crate::store::budgets::held(tx, 8).await?,
                ))
            })
            .await
            .unwrap();
        assert_eq!(held.0.map(|h| h.state), Some(QueryBudget::Charged(r(0.2))));
        assert!(matches!(
            held.1,
            Some(Held {
                state: QueryBudget::Reserved(_),
                ..
            })
        ));
    }
}
