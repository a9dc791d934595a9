//! The budget ledger of each dataset: one row per dataset holding the pure
//! [`civic_policies::Ledger`] (its caps and each project's totals) as JSON, and every change
//! as a row of the append-only `ledger_entries` table. A change locks the dataset's row
//! first, runs the pure transition, writes the totals back and appends the entry, all in the
//! caller's transaction.

use civic_policies::budget::{EntryKind, Held, LedgerEntry};
use civic_policies::{Ledger, Rho};
use sqlx::{AnyConnection, Row};

use super::{StoreError, StoreResult, from_json, to_json};

/// Stores a new dataset's ledger; false (and nothing written) if the dataset has one.
pub async fn create(conn: &mut AnyConnection, ledger: &Ledger) -> StoreResult<bool> {
    let inserted = sqlx::query(
        "INSERT INTO budgets (dataset, ledger, writes) VALUES ($1, $2, 0)
         ON CONFLICT (dataset) DO NOTHING",
    )
    .bind(ledger.dataset())
    .bind(to_json("ledger", ledger)?)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(inserted == 1)
}

/// Locks the dataset's ledger row for the rest of the transaction and returns the ledger;
/// `None` if the dataset has none.
pub async fn lock(conn: &mut AnyConnection, dataset: &str) -> StoreResult<Option<Ledger>> {
    let row =
        sqlx::query("UPDATE budgets SET writes = writes + 1 WHERE dataset = $1 RETURNING ledger")
            .bind(dataset)
            .fetch_optional(&mut *conn)
            .await?;
    row.map(|r| from_json("ledger", &r.try_get::<String, _>("ledger")?))
        .transpose()
}

/// Writes a ledger back (after [`lock`] in the same transaction).
pub async fn save(conn: &mut AnyConnection, ledger: &Ledger) -> StoreResult<()> {
    sqlx::query("UPDATE budgets SET ledger = $1 WHERE dataset = $2")
        .bind(to_json("ledger", ledger)?)
        .bind(ledger.dataset())
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Appends one entry. The table's unique keys refuse a second reservation or a second
/// settlement of one query ([`StoreError::Conflict`]).
pub async fn append_entry(
    conn: &mut AnyConnection,
    dataset: &str,
    entry: &LedgerEntry,
    at: &str,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO ledger_entries (dataset, query_id, project, kind, amount_units, at)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(dataset)
    .bind((entry.kind != EntryKind::Allocate).then_some(entry.query as i64))
    .bind(&entry.project)
    .bind(entry.kind.as_str())
    .bind(entry.amount.units() as i64)
    .bind(at)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Saves a changed ledger and appends the entry that changed it.
pub async fn record(
    conn: &mut AnyConnection,
    ledger: &Ledger,
    entry: &LedgerEntry,
    at: &str,
) -> StoreResult<()> {
    save(conn, ledger).await?;
    append_entry(conn, ledger.dataset(), entry, at).await
}

fn entry(row: &sqlx::any::AnyRow) -> StoreResult<LedgerEntry> {
    let kind: String = row.try_get("kind")?;
    Ok(LedgerEntry {
        query: row.try_get::<Option<i64>, _>("query_id")?.unwrap_or(0) as u64,
        project: row.try_get("project")?,
        kind: EntryKind::parse(&kind).ok_or_else(|| StoreError::corrupt("ledger entry", kind))?,
        amount: Rho::from_units(row.try_get::<i64, _>("amount_units")? as u64),
    })
}

/// The entries matching `filter` (a condition on one column, bound to `value`), in order.
async fn entries_where<T>(
    conn: &mut AnyConnection,
    filter: &str,
    value: T,
) -> StoreResult<Vec<LedgerEntry>>
where
    T: 'static + Send + for<'q> sqlx::Encode<'q, sqlx::Any> + sqlx::Type<sqlx::Any>,
{
    let sql = format!(
        "SELECT query_id, project, kind, amount_units FROM ledger_entries WHERE {filter}
         ORDER BY seq"
    );
    let rows = sqlx::query(&sql).bind(value).fetch_all(&mut *conn).await?;
    rows.iter().map(entry).collect()
}

/// Every entry of a dataset, in order.
pub async fn entries(conn: &mut AnyConnection, dataset: &str) -> StoreResult<Vec<LedgerEntry>> {
    entries_where(conn, "dataset = $1", dataset.to_string()).await
}

/// Every entry of a dataset with when it was made, in order (the board's chart over time).
pub async fn timeline(
    conn: &mut AnyConnection,
    dataset: &str,
) -> StoreResult<Vec<(String, LedgerEntry)>> {
    let rows = sqlx::query(
        "SELECT query_id, project, kind, amount_units, at FROM ledger_entries
         WHERE dataset = $1 ORDER BY seq",
    )
    .bind(dataset)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| Ok((r.try_get("at")?, entry(r)?)))
        .collect()
}

/// A query's budget, from its entries.
pub async fn held(conn: &mut AnyConnection, query: i64) -> StoreResult<Option<Held>> {
    let entries = entries_where(conn, "query_id = $1", query).await?;
    Held::from_entries(query as u64, &entries).map_err(|e| StoreError::corrupt("ledger entry", e))
}

/// The ledger as it stands (a snapshot, for reading); `None` if the dataset has none.
pub async fn read(conn: &mut AnyConnection, dataset: &str) -> StoreResult<Option<Ledger>> {
    let row = sqlx::query("SELECT ledger FROM budgets WHERE dataset = $1")
        .bind(dataset)
        .fetch_optional(&mut *conn)
        .await?;
    row.map(|r| from_json("ledger", &r.try_get::<String, _>("ledger")?))
        .transpose()
}
