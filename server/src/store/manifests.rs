//! The board's signed manifests, every version kept. The coordinator only stores and serves
//! them: agents verify each from the board's keys.

use civic_policies::manifest::SignedManifest;
use sqlx::{AnyConnection, Row};

use super::StoreResult;

/// Every manifest, oldest first.
pub async fn all(conn: &mut AnyConnection) -> StoreResult<Vec<SignedManifest>> {
    let rows = sqlx::query("SELECT body FROM manifests ORDER BY version")
        .fetch_all(&mut *conn)
        .await?;
    rows.iter()
        .map(|r| super::from_json("manifest", &r.try_get::<String, _>("body")?))
        .collect()
}

/// The newest manifest, if any.
pub async fn latest(conn: &mut AnyConnection) -> StoreResult<Option<SignedManifest>> {
    let row = sqlx::query("SELECT body FROM manifests ORDER BY version DESC LIMIT 1")
        .fetch_optional(&mut *conn)
        .await?;
    row.map(|r| super::from_json("manifest", &r.try_get::<String, _>("body")?))
        .transpose()
}

/// Stores a manifest; false (nothing written) if its version is already stored.
pub async fn insert(
    conn: &mut AnyConnection,
    signed: &SignedManifest,
    by: &str,
    at: &str,
) -> StoreResult<bool> {
    let n = sqlx::query(
        "INSERT INTO manifests (version, digest, body, published_by, published_at)
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (version) DO NOTHING",
    )
    .bind(i64::try_from(signed.manifest.version).unwrap_or(i64::MAX))
    .bind(signed.manifest.digest())
    .bind(super::to_json("manifest", signed)?)
    .bind(by)
    .bind(at)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(n == 1)
}
