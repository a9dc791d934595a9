//! Queries, approvals and releases.

use civic_api::query::{ApprovalView, CostView, QueryRequest, QueryState, ReleaseView};
use civic_mechanisms::Priced;
use civic_policies::manifest::BoardSignature;
use sqlx::{AnyConnection, Row};

use super::{StoreError, StoreResult, from_json, to_json};

/// A query as stored.
#[derive(Clone, Debug)]
pub struct QueryRow {
    /// Id.
    pub id: i64,
    /// Paying project.
    pub project: String,
    /// Dataset and policy version.
    pub dataset: String,
    /// Version.
    pub dataset_version: i64,
    /// Submitter.
    pub submitted_by: String,
    /// When.
    pub submitted_at: String,
    /// The request.
    pub request: QueryRequest,
    /// Identity of (dataset, version, query, privacy, confidence), for re-serving.
    pub fingerprint: String,
    /// Cost as shown.
    pub cost: CostView,
    /// Cost as reserved (ρ units).
    pub cost_units: u64,
    /// Approvals needed.
    pub approvals_required: u32,
    /// State.
    pub state: QueryState,
    /// Why aborted or rejected.
    pub reason: Option<String>,
    /// The round running now, or the last one.
    pub round_id: Option<i64>,
    /// Release, once made or re-served.
    pub release_id: Option<i64>,
    /// Re-served from an earlier release.
    pub reused: bool,
    /// The calibrated plan reserved at submission, which the release uses (absent for a
    /// re-served query, and for queries stored before calibrations were kept).
    pub calibration: Option<Priced>,
}

/// What a submission stores.
#[derive(Clone, Debug)]
pub struct NewQuery<'a> {
    /// Paying project.
    pub project: &'a str,
    /// Dataset.
    pub dataset: &'a str,
    /// Version.
    pub dataset_version: i64,
    /// Submitter.
    pub submitted_by: &'a str,
    /// Request.
    pub request: &'a QueryRequest,
    /// Fingerprint.
    pub fingerprint: &'a str,
    /// Cost.
    pub cost: &'a CostView,
    /// Cost in ρ units.
    pub cost_units: u64,
    /// Approvals needed.
    pub approvals_required: u32,
    /// Initial state.
    pub state: QueryState,
    /// For a re-served query, the release.
    pub release_id: Option<i64>,
    /// The calibrated plan (none for a re-served query).
    pub calibration: Option<&'a Priced>,
}

const COLUMNS: &str = "id, project, dataset, dataset_version, submitted_by, submitted_at, request, \
    fingerprint, cost, cost_units, approvals_required, state, reason, round_id, release_id, reused, \
    calibration";

fn query_row(row: &sqlx::any::AnyRow) -> StoreResult<QueryRow> {
    let state: String = row.try_get("state")?;
    let calibration: Option<String> = row.try_get("calibration")?;
    Ok(QueryRow {
        id: row.try_get("id")?,
        project: row.try_get("project")?,
        dataset: row.try_get("dataset")?,
        dataset_version: row.try_get("dataset_version")?,
        submitted_by: row.try_get("submitted_by")?,
        submitted_at: row.try_get("submitted_at")?,
        request: from_json("query request", &row.try_get::<String, _>("request")?)?,
        fingerprint: row.try_get("fingerprint")?,
        cost: from_json("query cost", &row.try_get::<String, _>("cost")?)?,
        cost_units: row.try_get::<i64, _>("cost_units")? as u64,
        approvals_required: row.try_get::<i64, _>("approvals_required")? as u32,
        state: QueryState::parse(&state)
            .ok_or_else(|| StoreError::corrupt("query state", state))?,
        reason: row.try_get("reason")?,
        round_id: row.try_get("round_id")?,
        release_id: row.try_get("release_id")?,
        reused: row.try_get::<i64, _>("reused")? != 0,
        calibration: calibration
            .map(|c| from_json("query calibration", &c))
            .transpose()?,
    })
}

/// Inserts a query and returns its id.
pub async fn insert(conn: &mut AnyConnection, q: &NewQuery<'_>, at: &str) -> StoreResult<i64> {
    let row = sqlx::query(
        "INSERT INTO queries (project, dataset, dataset_version, submitted_by, submitted_at,
            request, fingerprint, cost, cost_units, approvals_required, state, release_id, reused,
            calibration)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) RETURNING id",
    )
    .bind(q.project)
    .bind(q.dataset)
    .bind(q.dataset_version)
    .bind(q.submitted_by)
    .bind(at)
    .bind(to_json("query request", q.request)?)
    .bind(q.fingerprint)
    .bind(to_json("query cost", q.cost)?)
    .bind(q.cost_units as i64)
    .bind(i64::from(q.approvals_required))
    .bind(q.state.as_str())
    .bind(q.release_id)
    .bind(i64::from(q.release_id.is_some()))
    .bind(
        q.calibration
            .map(|c| to_json("query calibration", c))
            .transpose()?,
    )
    .fetch_one(&mut *conn)
    .await?;
    Ok(row.try_get("id")?)
}

/// A query, if it exists.
pub async fn get(conn: &mut AnyConnection, id: i64) -> StoreResult<Option<QueryRow>> {
    let row = sqlx::query(&format!("SELECT {COLUMNS} FROM queries WHERE id = $1"))
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    row.as_ref().map(query_row).transpose()
}

/// The newest `limit` queries in `state`, newest first (the board's list of pending
/// approvals).
pub async fn in_state(
    conn: &mut AnyConnection,
    state: QueryState,
    limit: i64,
) -> StoreResult<Vec<QueryRow>> {
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM queries WHERE state = $1 ORDER BY id DESC LIMIT $2"
    ))
    .bind(state.as_str())
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(query_row).collect()
}

/// The newest `limit` queries of the projects `account` belongs to, newest first.
pub async fn of_member(
    conn: &mut AnyConnection,
    account: &str,
    limit: i64,
) -> StoreResult<Vec<QueryRow>> {
    let rows = sqlx::query(&format!(
        "SELECT q.{} FROM queries q JOIN project_members m ON m.project = q.project
         WHERE m.account = $1 ORDER BY q.id DESC LIMIT $2",
        COLUMNS.replace(", ", ", q.")
    ))
    .bind(account)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(query_row).collect()
}

/// Locks a query for the rest of the transaction (every change to a query's state starts
/// here, so changes to one query queue and each sees the others') and returns it.
pub async fn lock(conn: &mut AnyConnection, id: i64) -> StoreResult<Option<QueryRow>> {
    let row = sqlx::query(&format!(
        "UPDATE queries SET state = state WHERE id = $1 RETURNING {COLUMNS}"
    ))
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    row.as_ref().map(query_row).transpose()
}

/// Sets a locked query's state and reason.
pub async fn set_state(
    conn: &mut AnyConnection,
    id: i64,
    state: QueryState,
    reason: Option<&str>,
) -> StoreResult<()> {
    sqlx::query("UPDATE queries SET state = $1, reason = $2 WHERE id = $3")
        .bind(state.as_str())
        .bind(reason)
        .bind(id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// A query with this fingerprint that is running or awaiting approval, with its state and
/// whether it belongs to `project`.
pub async fn in_flight(
    conn: &mut AnyConnection,
    fingerprint: &str,
    project: &str,
) -> StoreResult<Option<(i64, QueryState, bool)>> {
    let row = sqlx::query(
        "SELECT id, state, project FROM queries WHERE fingerprint = $1
         AND state IN ('running', 'awaiting_approval') ORDER BY id LIMIT 1",
    )
    .bind(fingerprint)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let state: String = row.try_get("state")?;
    let state =
        QueryState::parse(&state).ok_or_else(|| StoreError::corrupt("query state", state))?;
    let own = row.try_get::<String, _>("project")? == project;
    Ok(Some((row.try_get("id")?, state, own)))
}

/// Records the round of a query.
pub async fn set_round(conn: &mut AnyConnection, id: i64, round_id: i64) -> StoreResult<()> {
    sqlx::query("UPDATE queries SET round_id = $1 WHERE id = $2")
        .bind(round_id)
        .bind(id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Records a board member's decision; false (nothing written) if the member decided
/// already.
pub async fn decide(
    conn: &mut AnyConnection,
    query_id: i64,
    member: &str,
    approve: bool,
    reason: &str,
    signature: Option<&BoardSignature>,
    at: &str,
) -> StoreResult<bool> {
    let signature = signature
        .map(|s| super::to_json("approval signature", s))
        .transpose()?;
    let n = sqlx::query(
        "INSERT INTO approvals (query_id, member, approve, reason, signature, at)
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (query_id, member) DO NOTHING",
    )
    .bind(query_id)
    .bind(member)
    .bind(i64::from(approve))
    .bind(reason)
    .bind(signature)
    .bind(at)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// Decisions on a query, in order.
pub async fn approvals(conn: &mut AnyConnection, query_id: i64) -> StoreResult<Vec<ApprovalView>> {
    let rows = sqlx::query(
        "SELECT member, approve, reason, signature, at FROM approvals WHERE query_id = $1
         ORDER BY at, member",
    )
    .bind(query_id)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(ApprovalView {
                member: r.try_get("member")?,
                approve: r.try_get::<i64, _>("approve")? != 0,
                reason: r.try_get("reason")?,
                at: r.try_get("at")?,
                signature: r
                    .try_get::<Option<String>, _>("signature")?
                    .map(|t| super::from_json("approval signature", &t))
                    .transpose()?,
            })
        })
        .collect()
}

/// Stores a release and links it to its query (whose state the caller sets).
pub async fn insert_release(
    conn: &mut AnyConnection,
    query: &QueryRow,
    release: &ReleaseView,
) -> StoreResult<i64> {
    let row = sqlx::query(
        "INSERT INTO releases (query_id, dataset, fingerprint, body, released_at)
         VALUES ($1, $2, $3, $4, $5) RETURNING id",
    )
    .bind(query.id)
    .bind(&query.dataset)
    .bind(&query.fingerprint)
    .bind(to_json("release", release)?)
    .bind(&release.released_at)
    .fetch_one(&mut *conn)
    .await?;
    let id: i64 = row.try_get("id")?;
    sqlx::query("UPDATE queries SET release_id = $1 WHERE id = $2")
        .bind(id)
        .bind(query.id)
        .execute(&mut *conn)
        .await?;
    Ok(id)
}

/// A stored release, with its id filled in.
pub async fn release(conn: &mut AnyConnection, id: i64) -> StoreResult<Option<ReleaseView>> {
    let row = sqlx::query("SELECT id, body FROM releases WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    let Some(row) = row else { return Ok(None) };
    let mut view: ReleaseView = from_json("release", &row.try_get::<String, _>("body")?)?;
    view.release_id = row.try_get("id")?;
    Ok(Some(view))
}

/// The release with this fingerprint, if one exists.
pub async fn release_by_fingerprint(
    conn: &mut AnyConnection,
    fingerprint: &str,
) -> StoreResult<Option<i64>> {
    let row = sqlx::query("SELECT id FROM releases WHERE fingerprint = $1 ORDER BY id LIMIT 1")
        .bind(fingerprint)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(row.map(|r| r.try_get("id")).transpose()?)
}

/// Every original (not re-served) release with its query, newest first: the public register.
pub async fn register(
    conn: &mut AnyConnection,
    limit: i64,
) -> StoreResult<Vec<(QueryRow, ReleaseView, String)>> {
    let rows = sqlx::query(&format!(
        "SELECT q.{}, r.body AS body, p.title AS project_title FROM queries q
         JOIN releases r ON r.query_id = q.id JOIN projects p ON p.id = q.project
         ORDER BY r.id DESC LIMIT $1",
        COLUMNS.replace(", ", ", q.")
    ))
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| {
            let q = query_row(r)?;
            let mut release: ReleaseView = from_json("release", &r.try_get::<String, _>("body")?)?;
            release.release_id = q.release_id.unwrap_or_default();
            Ok((q, release, r.try_get("project_title")?))
        })
        .collect()
}
