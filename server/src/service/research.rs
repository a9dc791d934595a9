//! Researchers: preview, submit, read; the public register.

use actix_web::web;
use civic_api::query::{
    CostView, Preview, QueryRequest, QueryState, QueryView, RegisterEntry, RemainingView,
    StatisticAccuracy, TrainingView,
};
use civic_api::{ProblemCode, Role};
use civic_mechanisms::{Priced, PricingContext};
use civic_policies::dataset::NoisePlacement;
use civic_policies::manifest::SignedManifest;
use civic_policies::{DatasetPolicy, Query, Rho};
use serde_json::json;
use sqlx::AnyConnection;

use super::event;
use crate::AppState;
use crate::error::{Error, Missing, Result};
use crate::lifecycle::{self, Admission, Submission};
use crate::rounds::driver;
use crate::store::datasets::DatasetVersion;
use crate::store::training::{self, StoppedJob};
use crate::store::{
    Account, NewQuery, QueryRow, audit, budgets, datasets, manifests, projects, queries,
};

/// The pricing context of this coordinator under the board's newest manifest, if any, for
/// a query on `policy`: with distributed noise, the honest contributors its round will
/// guarantee.
pub fn context(
    state: &AppState,
    manifest: Option<&SignedManifest>,
    policy: &DatasetPolicy,
    query: &Query,
) -> Result<PricingContext> {
    let floor = manifest.map_or(0.0, |m| m.manifest.requirements.min_rho_per_query);
    let honest_survivors = match policy.noise() {
        NoisePlacement::Central => 0,
        NoisePlacement::Distributed => lifecycle::honest_contributors(
            policy,
            // A query that does not fit the policy is refused by pricing, with the reason.
            lifecycle::round_partners(policy, query).map_or(policy.partners().len(), |p| p.len()),
            super::rounds::settings(state),
            manifest.map(|m| &m.manifest),
        )?,
    };
    Ok(PricingContext {
        max_rows_per_partner: state.config.max_rows_per_partner,
        reporting_delta: state.config.reporting_delta,
        board_floor: Rho::cap(floor).unwrap_or(Rho::ZERO),
        honest_survivors,
    })
}

/// Prices a request with the shared pricing core, on a blocking thread (OpenDP is neither
/// Send nor Sync) and holding no store connection.
pub async fn price(
    state: &AppState,
    manifest: Option<&SignedManifest>,
    policy: &DatasetPolicy,
    request: &QueryRequest,
) -> Result<Priced> {
    price_in(
        context(state, manifest, policy, &request.query)?,
        policy,
        request,
    )
    .await
}

/// [`price`] in a given context.
pub async fn price_in(
    context: PricingContext,
    policy: &DatasetPolicy,
    request: &QueryRequest,
) -> Result<Priced> {
    let (policy, request) = (policy.clone(), request.clone());
    Ok(web::block(move || {
        civic_mechanisms::price(
            &policy,
            &request.query,
            request.privacy,
            request.confidence,
            context,
        )
    })
    .await
    .map_err(|e| Error::internal("pricing a query", e))??)
}

/// The cost view a board and a researcher read.
fn cost_view(priced: &Priced) -> CostView {
    CostView {
        rho: priced.cost.rho.as_f64(),
        epsilon: priced.cost.epsilon,
        approx_dp: priced.cost.approx_dp,
    }
}

/// The cost view of a re-served query: nothing spent.
fn free() -> CostView {
    CostView {
        rho: 0.0,
        epsilon: Some(0.0),
        approx_dp: (0.0, 0.0),
    }
}

/// Checks that `who` may submit for `project` and returns the dataset's latest version.
async fn admissible(
    conn: &mut AnyConnection,
    who: &Account,
    req: &QueryRequest,
) -> Result<DatasetVersion> {
    if projects::title(conn, &req.project).await?.is_none() {
        return Err(Error::NotFound(Missing::Project(req.project.clone())));
    }
    if !projects::is_member(conn, &req.project, &who.name).await? {
        return Err(Error::Forbidden(format!(
            "{} is not a member of project {:?}",
            who.name, req.project
        )));
    }
    datasets::latest(conn, &req.query.dataset)
        .await?
        .ok_or_else(|| Error::NotFound(Missing::Dataset(req.query.dataset.clone())))
}

/// What a submission would cost and how accurate it would be; nothing is spent.
pub async fn preview(state: &AppState, who: &Account, req: QueryRequest) -> Result<Preview> {
    let dataset = admissible(&mut *state.store.read().await?, who, &req).await?;
    let manifest = manifests::latest(&mut *state.store.read().await?).await?;
    let priced = price(state, manifest.as_ref(), &dataset.policy, &req).await?;
    let fingerprint = lifecycle::fingerprint(&dataset.id, dataset.version, &req, priced.confidence);
    let mut conn = state.store.read().await?;
    let reuses_release = queries::release_by_fingerprint(&mut conn, &fingerprint).await?;
    let stopped = training::stopped_with_answers(&mut conn, &fingerprint).await?;
    let ledger = budgets::read(&mut conn, &dataset.id)
        .await?
        .ok_or_else(|| Error::NotFound(Missing::Budget(dataset.id.clone())))?;
    drop(conn);
    let project_left = ledger
        .project(&req.project)
        .map(|a| a.cap.checked_sub(a.used()).unwrap_or_default())
        .unwrap_or_default();
    // The refusal a submission would meet, from the same pure check, changing nothing.
    let refusal = match reuses_release {
        Some(_) => None,
        None => ledger
            .check_reserve(&req.project, priced.cost.rho)
            .err()
            .map(|e| e.to_string()),
    };
    let mut notes = training_notes(&priced, &dataset.id, manifest.as_ref());
    notes.extend(stopped.map(|job| asked_before(&job, &req.project)));
    Ok(Preview {
        dataset: dataset.id,
        dataset_version: dataset.version,
        cells: priced.plan.cells,
        cost: if reuses_release.is_some() {
            free()
        } else {
            cost_view(&priced)
        },
        confidence: priced.confidence,
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
            approvals_needed(&dataset.policy, &priced, manifest.as_ref())
        },
        notes,
        reuses_release,
        blocks: priced.blocks,
        half_widths: priced.half_widths,
        accuracy: accuracy_views(priced.accuracy),
    })
}

/// For a training job, what its rounds meet: one round per iteration, each counted against
/// every partner's rounds of the dataset per day, which the board's manifest caps.
fn training_notes(
    priced: &Priced,
    dataset: &str,
    manifest: Option<&SignedManifest>,
) -> Vec<String> {
    let Some(iterations) = priced.plan.learning.as_ref().map(|l| l.iterations) else {
        return Vec::new();
    };
    let cap = manifest.map(|m| m.manifest.requirements.max_rounds_per_dataset_per_day);
    vec![match cap {
        Some(cap) if iterations > cap => format!(
            "this job takes {iterations} rounds, one per iteration, but the board's manifest lets \
             a partner join at most {cap} rounds of {dataset} a day: partners will decline the \
             rest and the job will stop part-way, keeping the charges of the rounds it ran; ask \
             for at most {cap} iterations"
        ),
        Some(cap) => format!(
            "this job takes {iterations} rounds, one per iteration, each counted against every \
             partner's rounds of {dataset} a day (the board's manifest allows {cap}; a partner \
             may allow fewer)"
        ),
        None => format!("this job takes {iterations} rounds, one per iteration"),
    }]
}

/// For a training job asking the same question as `job`, which stopped part-way: the
/// partners who answered its iterations will decline them now. Another project's job is not
/// named, as a submission does not name another project's query in flight.
fn asked_before(job: &StoppedJob, project: &str) -> String {
    let finished = job.finished;
    let noun = if finished == 1 {
        "iteration"
    } else {
        "iterations"
    };
    let (which, view) = match job.project == project {
        true => (
            format!("training job {}", job.query_id),
            format!("; job {}'s view shows the iterate it reached", job.query_id),
        ),
        false => (
            "a training job of another project".to_string(),
            String::new(),
        ),
    };
    format!(
        "{which} asked this same question and stopped after {finished} {noun}: the partners \
         who sent their inputs for those will not answer them again (an agent answers each \
         iteration of a question once), so this job is likely to stop at its first round, its \
         reservation refunded{view}; to train again, change the question (its iterations, \
         budget or features)"
    )
}

/// The accuracy of a priced query's rows, as the API shows it.
pub fn accuracy_views(
    accuracy: Vec<civic_mechanisms::release::RowAccuracy>,
) -> Vec<StatisticAccuracy> {
    accuracy
        .into_iter()
        .map(|a| StatisticAccuracy {
            name: a.name,
            half_width: a.half_width,
            half_width_at_rows: a.half_width_at_rows,
            confidence: a.confidence,
            note: a.note,
        })
        .collect()
}

/// Board approvals a query needs: the policy's count at its cost, raised to the board's
/// threshold once the board has published a manifest (approvals are then signatures).
fn approvals_needed(
    policy: &DatasetPolicy,
    priced: &Priced,
    manifest: Option<&SignedManifest>,
) -> u32 {
    let n = policy.approvals_needed(priced.cost.rho);
    manifest.map_or(n, |s| s.manifest.approvals_needed(n))
}

/// Submits a query: re-served at no cost if an identical release exists; otherwise its
/// calibrated plan is stored and its cost reserved (atomically against every cap), and it
/// waits for approval or runs.
pub async fn submit(state: &AppState, who: &Account, req: QueryRequest) -> Result<QueryView> {
    let dataset = admissible(&mut *state.store.read().await?, who, &req).await?;
    // Priced under the newest manifest, whose floor every agent also checks.
    let manifest = manifests::latest(&mut *state.store.read().await?).await?;
    let priced = price(state, manifest.as_ref(), &dataset.policy, &req).await?;
    let fingerprint = lifecycle::fingerprint(&dataset.id, dataset.version, &req, priced.confidence);
    let approvals_required = approvals_needed(&dataset.policy, &priced, manifest.as_ref());
    let at = state.clock.rfc3339();
    let (id, round, reused) = state
        .store
        .run_tx("submit a query", async |tx| {
            // The dataset's budget lock is held while deciding: two identical submissions
            // queue, and the second sees the first (one sample per question, guarantee 3).
            let mut ledger = budgets::lock(tx, &dataset.id)
                .await?
                .ok_or_else(|| Error::NotFound(Missing::Budget(dataset.id.clone())))?;
            let released = queries::release_by_fingerprint(tx, &fingerprint).await?;
            let in_flight = match released {
                Some(_) => None,
                None => queries::in_flight(tx, &fingerprint, &req.project).await?,
            };
            let admission = lifecycle::admit(Submission {
                approvals_required,
                released,
                in_flight,
            })?;
            let (state_now, reused) = match admission {
                Admission::Reuse { release } => (QueryState::Released, Some(release)),
                Admission::Reserve { state } => (state, None),
            };
            let cost = match reused {
                Some(_) => free(),
                None => cost_view(&priced),
            };
            let id = queries::insert(
                tx,
                &NewQuery {
                    project: &req.project,
                    dataset: &dataset.id,
                    dataset_version: dataset.version,
                    submitted_by: &who.name,
                    request: &req,
                    fingerprint: &fingerprint,
                    cost: &cost,
                    cost_units: if reused.is_some() {
                        0
                    } else {
                        priced.cost.rho.units()
                    },
                    approvals_required: if reused.is_some() {
                        0
                    } else {
                        approvals_required
                    },
                    state: state_now,
                    release_id: reused,
                    calibration: reused.is_none().then_some(&priced),
                },
                &at,
            )
            .await?;
            let mut round = None;
            if reused.is_none() {
                let (_, entry) = lifecycle::reserve(&mut ledger, id, &req.project, &priced)?;
                budgets::record(tx, &ledger, &entry, &at).await?;
                if state_now == QueryState::Running {
                    round = Some(
                        super::rounds::open(
                            state,
                            tx,
                            id,
                            &dataset.policy,
                            &req.query,
                            &priced,
                            &at,
                        )
                        .await?,
                    );
                } else {
                    // Checked now although approval comes first: a query that could never
                    // run (a partner without an identity key, a ring too narrow) is refused
                    // before it waits.
                    super::rounds::check(state, tx, &dataset.policy, &req.query, &priced).await?;
                }
            }
            audit::append(
                tx,
                event(
                    &who.name,
                    if reused.is_some() {
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
                        "reused_release": reused,
                        "approvals_required": approvals_required,
                        "round": round.as_ref().map(|r| r.id),
                    }),
                ),
                &at,
            )
            .await?;
            Ok::<_, Error>((id, round, reused.is_some()))
        })
        .await?;
    if let Some(row) = round {
        driver::start(state, row)?;
    }
    if reused {
        crate::metrics::RESERVED_RELEASES.inc();
    }
    view_of(state, id).await
}

/// A query as its researcher or the board sees it.
pub async fn read(state: &AppState, who: &Account, id: i64) -> Result<QueryView> {
    let mut conn = state.store.read().await?;
    let q = queries::get(&mut conn, id)
        .await?
        .ok_or(Error::NotFound(Missing::Query(id)))?;
    if who.role == Role::Researcher
        && q.submitted_by != who.name
        && !projects::is_member(&mut conn, &q.project, &who.name).await?
    {
        // Not 403: whether another project's query exists is not this researcher's business.
        return Err(Error::NotFound(Missing::Query(id)));
    }
    view(&mut conn, q).await
}

/// The view of query `id`.
pub async fn view_of(state: &AppState, id: i64) -> Result<QueryView> {
    let mut conn = state.store.read().await?;
    let q = queries::get(&mut conn, id)
        .await?
        .ok_or(Error::NotFound(Missing::Query(id)))?;
    view(&mut conn, q).await
}

/// Assembles the view of a stored query.
pub async fn view(conn: &mut AnyConnection, q: QueryRow) -> Result<QueryView> {
    let approvals = queries::approvals(conn, q.id).await?;
    let result = match q.release_id {
        Some(r) => {
            let mut release = queries::release(conn, r).await?.ok_or_else(|| {
                Error::internal("reading a release", format!("release {r} is missing"))
            })?;
            release.reused = q.reused;
            Some(release)
        }
        None => None,
    };
    Ok(QueryView {
        id: q.id,
        fingerprint: q.fingerprint,
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
        training: training_view(conn, q.id, q.calibration.as_ref()).await?,
        result,
    })
}

/// A training job's progress from its rounds (None for any other query).
async fn training_view(
    conn: &mut AnyConnection,
    query: i64,
    calibration: Option<&Priced>,
) -> Result<Option<TrainingView>> {
    let Some(priced) = calibration.filter(|p| p.plan.learning.is_some()) else {
        return Ok(None);
    };
    let model = priced
        .plan
        .training_model()
        .map_err(|e| Error::internal("reading a training job", e))?;
    let rounds = training::of_query(conn, query).await?;
    // Each round after the first starts from the iterate the one before produced; the last
    // round's is the release.
    let finished = rounds.iter().filter(|r| r.total.is_some()).count() as u32;
    let latest_announced = rounds
        .iter()
        .filter(|r| r.iteration > 0 && model.check(&r.coefficients).is_ok())
        .max_by_key(|r| r.iteration)
        .map(|r| model.reported(&r.coefficients));
    Ok(Some(TrainingView {
        iterations: priced.plan.learning.as_ref().map_or(0, |l| l.iterations),
        finished,
        names: civic_mechanisms::release::coefficient_rows(&priced.plan),
        latest_announced,
    }))
}

/// The most releases one page of the register holds.
pub const REGISTER_PAGE_MAX: i64 = 1000;

/// The public register: the newest `limit` releases, newest first.
pub async fn register(state: &AppState, limit: i64) -> Result<Vec<RegisterEntry>> {
    if !(1..=REGISTER_PAGE_MAX).contains(&limit) {
        return Err(Error::invalid(
            ProblemCode::RequestQueryString,
            format!("limit must be 1 to {REGISTER_PAGE_MAX}, got {limit}"),
        ));
    }
    let rows = queries::register(&mut *state.store.read().await?, limit).await?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stopped_job_is_named_only_to_its_own_project() {
        let job = StoppedJob {
            query_id: 17,
            project: "falls".into(),
            finished: 1,
        };
        let own = asked_before(&job, "falls");
        assert!(
            own.starts_with(
                "training job 17 asked this same question and stopped after 1 iteration:"
            ),
            "{own}"
        );
        assert!(own.contains("job 17's view shows"), "{own}");
        let other = asked_before(&job, "diabetes");
        assert!(!other.contains("17"), "{other}");
        assert!(
            other.starts_with("a training job of another project asked this same question"),
            "{other}"
        );
    }
}
