//! Researchers: preview, submit, read.

use civic_api::Role;
use civic_api::query::{
    Preview, QueryRequest, QueryState, QueryView, RegisterEntry, RemainingView,
};
use civic_policies::DatasetPolicy;
use serde_json::json;
use sqlx::AnyConnection;

use super::event;
use super::pricing::{Priced, free, price};
use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::rounds;
use crate::store::{Account, NewQuery, QueryRow, audit, budgets, datasets, projects, queries};

/// Prices a request on a blocking thread (OpenDP is neither Send nor Sync).
pub async fn priced_for(
    state: &AppState,
    policy: &DatasetPolicy,
    version: i64,
    request: &QueryRequest,
) -> ApiResult<Priced> {
    let (policy, request) = (policy.clone(), request.clone());
    let (max_rows, delta) = (
        state.config.max_rows_per_partner,
        state.config.reporting_delta,
    );
    actix_web::web::block(move || price(&policy, version, &request, max_rows, delta))
        .await
        .map_err(|e| ApiError::internal("pricing a query", e))?
}

async fn check_member(conn: &mut AnyConnection, who: &Account, project: &str) -> ApiResult<()> {
    projects::title(conn, project).await?;
    if !projects::is_member(conn, project, &who.name).await? {
        return Err(ApiError::forbidden(format!(
            "{} is not a member of project {project:?}",
            who.name
        )));
    }
    Ok(())
}

/// What a submission would cost and how accurate it would be; nothing is spent.
pub async fn preview(state: &AppState, who: &Account, req: QueryRequest) -> ApiResult<Preview> {
    let mut conn = state.store.pool().acquire().await?;
    check_member(&mut conn, who, &req.project).await?;
    let dataset = datasets::require_latest(&mut conn, &req.query.dataset).await?;
    let priced = priced_for(state, &dataset.policy, dataset.version, &req).await?;
    let reuses_release = queries::release_by_fingerprint(&mut conn, &priced.fingerprint).await?;
    let ledger = budgets::read(&mut conn, &dataset.id).await?;
    let project_left = ledger
        .project(&req.project)
        .map(|a| a.cap.checked_sub(a.used()).unwrap_or_default())
        .unwrap_or_default();
    // The refusal a submission would meet, from the same pure check, on a copy.
    let refusal = if reuses_release.is_some() {
        None
    } else {
        let mut trial = ledger.clone();
        trial
            .reserve(u64::MAX, &req.project, priced.release_plan.cost)
            .err()
            .map(|e| e.to_string())
    };
    Ok(Preview {
        dataset: dataset.id,
        dataset_version: dataset.version,
        cells: priced.plan.cells,
        blocks: priced.blocks,
        cost: if reuses_release.is_some() {
            free()
        } else {
            priced.cost
        },
        confidence: priced.confidence,
        half_widths: priced.half_widths,
        remaining: RemainingView {
            dataset_rho: ledger.remaining().as_f64(),
            project_rho: project_left.as_f64(),
            per_query_rho: ledger.per_query().as_f64(),
        },
        affordable: refusal.is_none(),
        refusal,
        approvals_required: if reuses_release.is_some() {
            0
        } else {
            priced.approvals_required
        },
        reuses_release,
    })
}

/// Submits a query: re-served at no cost if an identical release exists; otherwise its cost
/// is reserved (atomically against every cap) and it waits for approval or runs.
pub async fn submit(state: &AppState, who: &Account, req: QueryRequest) -> ApiResult<QueryView> {
    let (dataset, priced) = {
        let mut conn = state.store.pool().acquire().await?;
        check_member(&mut conn, who, &req.project).await?;
        let dataset = datasets::require_latest(&mut conn, &req.query.dataset).await?;
        let priced = priced_for(state, &dataset.policy, dataset.version, &req).await?;
        (dataset, priced)
    };
    let mut tx = state.store.begin().await?;
    // Hold the dataset's budget lock while deciding: two identical submissions queue, and the
    // second sees the first (one sample per question, guarantee 3).
    budgets::lock(&mut tx, &dataset.id).await?;
    let reuse = queries::release_by_fingerprint(&mut tx, &priced.fingerprint).await?;
    if reuse.is_none()
        && let Some((other, other_state)) = queries::in_flight(&mut tx, &priced.fingerprint).await?
    {
        return Err(ApiError::conflict(
            "query.identical_in_flight",
            format!(
                "an identical query ({other}) is already {other_state}; once it is released, \
                 submitting again re-serves its result at no cost (GET /v1/queries/{other})"
            ),
        ));
    }
    let state_now = match (reuse, priced.approvals_required) {
        (Some(_), _) => QueryState::Released,
        (None, 0) => QueryState::Running,
        (None, _) => QueryState::AwaitingApproval,
    };
    let cost = if reuse.is_some() {
        free()
    } else {
        priced.cost.clone()
    };
    let id = queries::insert(
        &mut tx,
        &NewQuery {
            project: &req.project,
            dataset: &dataset.id,
            dataset_version: dataset.version,
            submitted_by: &who.name,
            request: &req,
            fingerprint: &priced.fingerprint,
            cost: &cost,
            cost_units: if reuse.is_some() {
                0
            } else {
                priced.release_plan.cost.units()
            },
            approvals_required: if reuse.is_some() {
                0
            } else {
                priced.approvals_required
            },
            state: state_now,
            release_id: reuse,
        },
    )
    .await?;
    let mut setup = None;
    if reuse.is_none() {
        budgets::update(&mut tx, &dataset.id, |l| {
            Ok(l.reserve(id as u64, &req.project, priced.release_plan.cost)?)
        })
        .await?;
        // Checked now even when approval comes first: a query that could never run (a
        // partner without an identity key, a ring too narrow) is refused before it waits.
        let planned = rounds::plan(state, &mut tx, id, &priced, &dataset.policy).await?;
        if state_now == QueryState::Running {
            rounds::open(&mut tx, id, &planned).await?;
            setup = Some(planned);
        }
    }
    audit::append(
        &mut tx,
        event(
            &who.name,
            if reuse.is_some() {
                "query.reserve_reused"
            } else {
                "query.submit"
            },
            format!("query:{id}"),
            json!({
                "project": req.project,
                "dataset": dataset.id,
                "dataset_version": dataset.version,
                "query": req.query,
                "privacy": req.privacy,
                "reserved_rho": cost.rho,
                "reused_release": reuse,
                "approvals_required": priced.approvals_required,
            }),
        ),
    )
    .await?;
    tx.commit().await?;
    if let Some(setup) = setup {
        rounds::start(state, id, setup)?;
    }
    if reuse.is_some() {
        crate::metrics::RESERVED_RELEASES.inc();
    }
    let mut conn = state.store.pool().acquire().await?;
    let q = queries::get(&mut conn, id).await?;
    view(&mut conn, q).await
}

/// A query as its researcher or the board sees it.
pub async fn read(state: &AppState, who: &Account, id: i64) -> ApiResult<QueryView> {
    let mut conn = state.store.pool().acquire().await?;
    let q = queries::get(&mut conn, id).await?;
    if who.role == Role::Researcher
        && q.submitted_by != who.name
        && !projects::is_member(&mut conn, &q.project, &who.name).await?
    {
        // Not 403: whether another project's query exists is not this researcher's business.
        return Err(ApiError::not_found(format!("no query {id}")));
    }
    view(&mut conn, q).await
}

/// Assembles the view of a stored query.
pub async fn view(conn: &mut AnyConnection, q: QueryRow) -> ApiResult<QueryView> {
    let approvals = queries::approvals(conn, q.id).await?;
    let result = match q.release_id {
        Some(r) => {
            let mut release = queries::release(conn, r).await?;
            release.reused = q.reused;
            Some(release)
        }
        None => None,
    };
    Ok(QueryView {
        id: q.id,
        project: q.project,
        dataset: q.dataset,
        dataset_version: q.dataset_version,
        submitted_by: q.submitted_by,
        submitted_at: q.submitted_at,
        request: q.request,
        state: q.state,
        reason: q.reason,
        cost: q.cost,
        approvals_required: q.approvals_required,
        approvals,
        round_id: q.round_id,
        result,
    })
}

/// The public register: every release, newest first.
pub async fn register(state: &AppState, limit: i64) -> ApiResult<Vec<RegisterEntry>> {
    let mut conn = state.store.pool().acquire().await?;
    let rows = queries::register(&mut conn, limit.clamp(1, 1000)).await?;
    Ok(rows
        .into_iter()
        .map(|(q, release, title)| RegisterEntry {
            query_id: q.id,
            dataset: q.dataset,
            project: q.project,
            project_title: title,
            query: q.request.query,
            released_at: release.released_at.clone(),
            cost: q.cost,
            release,
        })
        .collect())
}
