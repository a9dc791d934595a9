//! The audit log in the store: appended inside the transaction of the action it records,
//! so an action and its entry commit together or not at all.

use civic_policies::audit::{AuditEvent, AuditRecord, ChainHead};
use sqlx::{AnyConnection, Row};

use super::StoreResult;

/// Appends `event`. Takes the head row's lock first, so concurrent appenders queue and the
/// chain never forks.
pub async fn append(
    conn: &mut AnyConnection,
    event: AuditEvent,
    at: &str,
) -> StoreResult<AuditRecord> {
    let row = sqlx::query("UPDATE audit_head SET seq = seq + 1 WHERE id = 1 RETURNING seq, hash")
        .fetch_one(&mut *conn)
        .await?;
    let seq: i64 = row.try_get("seq")?;
    let head = ChainHead {
        seq: (seq - 1) as u64,
        hash: row.try_get("hash")?,
    };
    let record = event.chain(&head, at.to_string());
    sqlx::query(
        "INSERT INTO audit_log (seq, at, actor, action, subject, details, prev_hash, hash)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(record.seq as i64)
    .bind(&record.at)
    .bind(&record.actor)
    .bind(&record.action)
    .bind(&record.subject)
    .bind(&record.details)
    .bind(&record.prev_hash)
    .bind(&record.hash)
    .execute(&mut *conn)
    .await?;
    sqlx::query("UPDATE audit_head SET hash = $1 WHERE id = 1")
        .bind(&record.hash)
        .execute(&mut *conn)
        .await?;
    Ok(record)
}

/// The head: last seq and hash.
pub async fn head(conn: &mut AnyConnection) -> StoreResult<ChainHead> {
    let row = sqlx::query("SELECT seq, hash FROM audit_head WHERE id = 1")
        .fetch_one(&mut *conn)
        .await?;
    Ok(ChainHead {
        seq: row.try_get::<i64, _>("seq")? as u64,
        hash: row.try_get("hash")?,
    })
}

/// Up to `limit` entries after `after`, in order.
pub async fn page(
    conn: &mut AnyConnection,
    after: u64,
    limit: u64,
) -> StoreResult<Vec<AuditRecord>> {
    let rows = sqlx::query(
        "SELECT seq, at, actor, action, subject, details, prev_hash, hash FROM audit_log
         WHERE seq > $1 ORDER BY seq LIMIT $2",
    )
    .bind(after as i64)
    .bind(limit as i64)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(record).collect()
}

fn record(r: &sqlx::any::AnyRow) -> StoreResult<AuditRecord> {
    Ok(AuditRecord {
        seq: r.try_get::<i64, _>("seq")? as u64,
        at: r.try_get("at")?,
        actor: r.try_get("actor")?,
        action: r.try_get("action")?,
        subject: r.try_get("subject")?,
        details: r.try_get("details")?,
        prev_hash: r.try_get("prev_hash")?,
        hash: r.try_get("hash")?,
    })
}

/// The newest `limit` entries whose action is one of `actions`, newest first.
pub async fn newest_of(
    conn: &mut AnyConnection,
    actions: &[&str],
    limit: u64,
) -> StoreResult<Vec<AuditRecord>> {
    let placeholders: Vec<String> = (2..actions.len() + 2).map(|i| format!("${i}")).collect();
    let sql = format!(
        "SELECT seq, at, actor, action, subject, details, prev_hash, hash FROM audit_log
         WHERE action IN ({}) ORDER BY seq DESC LIMIT $1",
        placeholders.join(", ")
    );
    let mut query = sqlx::query(&sql).bind(limit as i64);
    for action in actions {
        query = query.bind(*action);
    }
    query
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(record)
        .collect()
}
