//! The schema, embedded: one list of migrations, each written for SQLite and PostgreSQL
//! (they differ only in key generation and the binary type). Applied in order at start-up
//! inside one transaction each, and recorded in `schema_migrations`.

/// (version, description, SQLite text, PostgreSQL text).
pub(super) const MIGRATIONS: &[(i64, &str, &str, &str)] = &[
    (1, "initial schema", V1_SQLITE, V1_POSTGRES),
    (2, "round driver lease", V2, V2),
];

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
