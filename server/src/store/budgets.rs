//! The budget ledger of each dataset, one row per dataset holding the pure
//! [`civic_policies::Ledger`] as JSON. Every change locks the row first, runs the pure
//! transition, and writes the result back in the same transaction.

use civic_policies::{Ledger, Rho};
use sqlx::{AnyConnection, Row};

use crate::error::{ApiError, ApiResult};

/// Creates the ledger of a new dataset, or applies a new version's caps to an existing one.
pub async fn upsert_caps(
    conn: &mut AnyConnection,
    dataset: &str,
    total: Rho,
    per_query: Rho,
) -> ApiResult<()> {
    let fresh = Ledger::new(dataset, total, per_query);
    let text = encode(&fresh)?;
    let inserted = sqlx::query(
        "INSERT INTO budgets (dataset, ledger, writes) VALUES ($1, $2, 0)
         ON CONFLICT (dataset) DO NOTHING",
    )
    .bind(dataset)
    .bind(text)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if inserted == 0 {
        update(conn, dataset, |l| {
            l.set_caps(total, per_query).map_err(Into::into)
        })
        .await?;
    }
    Ok(())
}

/// Locks the dataset's ledger, applies `change`, and stores the result. Nothing is written
/// if `change` fails.
pub async fn update<T>(
    conn: &mut AnyConnection,
    dataset: &str,
    change: impl FnOnce(&mut Ledger) -> ApiResult<T>,
) -> ApiResult<T> {
    let row =
        sqlx::query("UPDATE budgets SET writes = writes + 1 WHERE dataset = $1 RETURNING ledger")
            .bind(dataset)
            .fetch_optional(&mut *conn)
            .await?
            .ok_or_else(|| ApiError::not_found(format!("no budget for dataset {dataset:?}")))?;
    let mut ledger = decode(&row.try_get::<String, _>("ledger")?)?;
    let out = change(&mut ledger)?;
    sqlx::query("UPDATE budgets SET ledger = $1 WHERE dataset = $2")
        .bind(encode(&ledger)?)
        .bind(dataset)
        .execute(&mut *conn)
        .await?;
    Ok(out)
}

/// Takes the dataset's budget lock for the rest of the transaction without changing the
/// ledger: what a submission holds while it looks for an identical query.
pub async fn lock(conn: &mut AnyConnection, dataset: &str) -> ApiResult<()> {
    let n = sqlx::query("UPDATE budgets SET writes = writes + 1 WHERE dataset = $1")
        .bind(dataset)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    if n == 0 {
        return Err(ApiError::not_found(format!(
            "no budget for dataset {dataset:?}"
        )));
    }
    Ok(())
}

/// The ledger as it stands (a snapshot, for reading).
pub async fn read(conn: &mut AnyConnection, dataset: &str) -> ApiResult<Ledger> {
    let row = sqlx::query("SELECT ledger FROM budgets WHERE dataset = $1")
        .bind(dataset)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no budget for dataset {dataset:?}")))?;
    decode(&row.try_get::<String, _>("ledger")?)
}

fn encode(ledger: &Ledger) -> ApiResult<String> {
    serde_json::to_string(ledger).map_err(|e| ApiError::internal("encoding a ledger", e))
}

fn decode(text: &str) -> ApiResult<Ledger> {
    serde_json::from_str(text).map_err(|e| ApiError::internal("reading a ledger", e))
}
