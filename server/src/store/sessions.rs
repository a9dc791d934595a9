//! Browser sessions of the dashboard (`/ui`). A session is a 256-bit random value held only
//! in the browser's HttpOnly cookie; the store keeps its SHA-256, the account, the hash of
//! the account's token it was opened with (so a rotated or revoked token ends its sessions
//! at once) and when it expires.

use sqlx::{AnyConnection, Row};
use subtle::ConstantTimeEq;

use super::StoreResult;
use super::accounts::{Account, account};

/// Stores a new session.
pub async fn create(
    conn: &mut AnyConnection,
    session_hash: &[u8; 32],
    account_id: i64,
    token_hash: &[u8; 32],
    expires_ms: i64,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO ui_sessions (session_hash, account_id, token_hash, expires_ms)
         VALUES ($1, $2, $3, $4)",
    )
    .bind(session_hash.to_vec())
    .bind(account_id)
    .bind(token_hash.to_vec())
    .bind(expires_ms)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The account of an unexpired session whose account still holds the token it was opened
/// with, and when the session expires.
pub async fn find(
    conn: &mut AnyConnection,
    session_hash: &[u8; 32],
    now_ms: i64,
) -> StoreResult<Option<(Account, i64)>> {
    let row = sqlx::query(
        "SELECT a.id, a.name, a.role, a.identity_key, s.session_hash, s.expires_ms
         FROM ui_sessions s JOIN accounts a ON a.id = s.account_id
         WHERE s.session_hash = $1 AND s.expires_ms > $2 AND a.token_hash = s.token_hash",
    )
    .bind(session_hash.to_vec())
    .bind(now_ms)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let stored: Vec<u8> = row.try_get("session_hash")?;
    if !bool::from(stored.as_slice().ct_eq(session_hash)) {
        return Ok(None);
    }
    Ok(Some((account(&row)?, row.try_get("expires_ms")?)))
}

/// Ends a session (logging out).
pub async fn delete(conn: &mut AnyConnection, session_hash: &[u8; 32]) -> StoreResult<()> {
    sqlx::query("DELETE FROM ui_sessions WHERE session_hash = $1")
        .bind(session_hash.to_vec())
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Forgets sessions that expired before `now_ms`.
pub async fn purge_expired(conn: &mut AnyConnection, now_ms: i64) -> StoreResult<()> {
    sqlx::query("DELETE FROM ui_sessions WHERE expires_ms <= $1")
        .bind(now_ms)
        .execute(&mut *conn)
        .await?;
    Ok(())
}
