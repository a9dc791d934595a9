//! Dataset policies: every version kept.

use civic_policies::DatasetPolicy;
use sqlx::{AnyConnection, Row};

use super::{StoreError, StoreResult};

/// A stored policy version.
#[derive(Clone, Debug)]
pub struct DatasetVersion {
    /// Dataset id.
    pub id: String,
    /// Version from 1.
    pub version: i64,
    /// The validated policy.
    pub policy: DatasetPolicy,
    /// Who uploaded it.
    pub created_by: String,
    /// When.
    pub created_at: String,
}

fn version(row: &sqlx::any::AnyRow) -> StoreResult<DatasetVersion> {
    let id: String = row.try_get("id")?;
    let version: i64 = row.try_get("version")?;
    let text: String = row.try_get("policy")?;
    let policy = DatasetPolicy::from_json(&text, &format!("stored policy {id} v{version}"))
        .map_err(|e| StoreError::corrupt("policy", e))?;
    Ok(DatasetVersion {
        id,
        version,
        policy,
        created_by: row.try_get("created_by")?,
        created_at: row.try_get("created_at")?,
    })
}

/// Stores a new version (the next number) and returns it.
pub async fn insert(
    conn: &mut AnyConnection,
    policy: &DatasetPolicy,
    source: &str,
    by: &str,
    at: &str,
) -> StoreResult<i64> {
    let json = super::to_json("policy", &policy.file)?;
    // The primary key (id, version) refuses a concurrent upload that picked the same number.
    let row = sqlx::query(
        "INSERT INTO datasets (id, version, policy, source, created_by, created_at)
         SELECT $1, COALESCE(MAX(version), 0) + 1, $2, $3, $4, $5 FROM datasets WHERE id = $6
         RETURNING version",
    )
    .bind(policy.id())
    .bind(json)
    .bind(source)
    .bind(by)
    .bind(at)
    .bind(policy.id())
    .fetch_one(&mut *conn)
    .await?;
    Ok(row.try_get("version")?)
}

/// The latest version of a dataset.
pub async fn latest(conn: &mut AnyConnection, id: &str) -> StoreResult<Option<DatasetVersion>> {
    let row = sqlx::query(
        "SELECT id, version, policy, created_by, created_at FROM datasets WHERE id = $1
         ORDER BY version DESC LIMIT 1",
    )
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    row.as_ref().map(version).transpose()
}

/// One version, if it exists.
pub async fn get(
    conn: &mut AnyConnection,
    id: &str,
    v: i64,
) -> StoreResult<Option<DatasetVersion>> {
    let row = sqlx::query(
        "SELECT id, version, policy, created_by, created_at FROM datasets
         WHERE id = $1 AND version = $2",
    )
    .bind(id)
    .bind(v)
    .fetch_optional(&mut *conn)
    .await?;
    row.as_ref().map(version).transpose()
}

/// The latest version of every dataset.
pub async fn list(conn: &mut AnyConnection) -> StoreResult<Vec<DatasetVersion>> {
    let rows = sqlx::query(
        "SELECT d.id, d.version, d.policy, d.created_by, d.created_at FROM datasets d
         WHERE d.version = (SELECT MAX(version) FROM datasets e WHERE e.id = d.id) ORDER BY d.id",
    )
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(version).collect()
}
