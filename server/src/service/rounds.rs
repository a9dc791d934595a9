//! A query's rounds, as its lifecycle sees them: opening the round a running query needs,
//! and what the round's end means for the query. A finished round's output is released
//! (sampled once from the calibration stored with the reservation, then charged, stored and
//! audited in one transaction); a failed round is aborted and its query refunded.

use actix_web::web;
use civic_api::ProblemCode;
use civic_api::query::{CellView, QueryState, ReleaseView};
use civic_mechanisms::{Priced, Release};
use civic_policies::dataset::NoisePlacement;
use civic_policies::query::CellLabels;
use civic_policies::{DatasetPolicy, Query, Rho};
use serde_json::json;
use sqlx::AnyConnection;

use super::event;
use crate::AppState;
use crate::error::{Error, Missing, Result};
use crate::lifecycle::{self, Current, Partner, RoundSettings};
use crate::rounds::{RoundOutput, lease};
use crate::store::rounds::RoundState;
use crate::store::training::TrainingRound;
use crate::store::{
    QueryRow, RoundRow, RoundSetup, accounts, audit, budgets, datasets, manifests, queries, rounds,
    training,
};

/// The round settings of this coordinator's configuration.
pub fn settings(state: &AppState) -> RoundSettings {
    RoundSettings {
        max_rows_per_partner: state.config.max_rows_per_partner,
        max_dropout_rate: state.config.max_dropout_rate,
        max_corrupt_fraction: state.config.max_corrupt_fraction,
    }
}

/// Every partner account, as the lifecycle sees partners.
pub async fn partners(conn: &mut AnyConnection) -> Result<Vec<Partner>> {
    accounts::partners(conn)
        .await?
        .into_iter()
        .map(|a| {
            Ok(Partner {
                id: civic_secagg::PartnerId(
                    u32::try_from(a.id).map_err(|_| Error::internal("numbering partners", a.id))?,
                ),
                name: a.name,
                identity_key: a.identity_key,
            })
        })
        .collect()
}

/// Checks that a query could run as a round now (every partner registered, the ring wide
/// enough), without opening one: what a submission that waits for approval is checked for.
pub async fn check(
    state: &AppState,
    conn: &mut AnyConnection,
    policy: &DatasetPolicy,
    query: &Query,
    priced: &Priced,
) -> Result<()> {
    lifecycle::check_linked_posts(policy, query, state.config.binary_limit)?;
    let partners = partners(conn).await?;
    let manifest = manifests::latest(conn).await?.map(|s| s.manifest);
    lifecycle::round_setup(
        0,
        policy,
        &round_partners(policy, query)?,
        priced,
        &partners,
        settings(state),
        manifest.as_ref(),
    )?;
    Ok(())
}

/// Opens query `query`'s round inside the caller's transaction: a fresh round id, the
/// setup, the round stored at its protocol's first step and linked to the query. Call
/// [`crate::rounds::driver::start`] with the row after the commit.
pub async fn open(
    state: &AppState,
    tx: &mut AnyConnection,
    query: i64,
    policy: &DatasetPolicy,
    request: &Query,
    priced: &Priced,
    at: &str,
) -> Result<RoundRow> {
    open_step(state, tx, query, policy, request, priced, None, at).await
}

/// [`open`], for a training job's round at `step` (its iteration and coefficients; None is
/// the first, at zero).
#[allow(clippy::too_many_arguments)]
async fn open_step(
    state: &AppState,
    tx: &mut AnyConnection,
    query: i64,
    policy: &DatasetPolicy,
    request: &Query,
    priced: &Priced,
    step: Option<(u32, Vec<f64>)>,
    at: &str,
) -> Result<RoundRow> {
    lifecycle::check_linked_posts(policy, request, state.config.binary_limit)?;
    let partners = partners(tx).await?;
    let manifest = manifests::latest(tx).await?.map(|s| s.manifest);
    let id = rounds::next_id(tx).await?;
    let protocol = state.protocols.for_policy(policy);
    let row = RoundRow {
        id,
        query_id: query,
        protocol: protocol.name().to_string(),
        setup: lifecycle::round_setup(
            id,
            policy,
            &round_partners(policy, request)?,
            priced,
            &partners,
            settings(state),
            manifest.as_ref(),
        )?,
        step: protocol.steps()[0].to_string(),
    };
    rounds::insert(tx, &row, at).await?;
    queries::set_round(tx, query, id).await?;
    if priced.plan.learning.is_some() {
        // A training job starts from an iterate all zero; later rounds are opened by
        // `train`, at the iterate the round before it computed.
        let (iteration, coefficients) = match step {
            Some(step) => step,
            None => (0, training_model(priced)?.initial()),
        };
        let round = TrainingRound {
            round_id: id,
            query_id: query,
            iteration,
            coefficients,
            total: None,
        };
        training::insert(tx, &round, at).await?;
    }
    Ok(row)
}

/// The partners a query's round runs among (the query was priced, so it fits the policy).
fn round_partners(policy: &DatasetPolicy, query: &Query) -> Result<Vec<String>> {
    lifecycle::round_partners(policy, query)
        .map_err(|e| Error::internal("choosing a round's partners", e))
}

/// The lifecycle's view of a stored query.
pub fn current(q: &QueryRow) -> Current {
    Current {
        id: q.id,
        state: q.state,
        approvals_required: q.approvals_required,
    }
}

/// A query and the policy version it was submitted under.
pub async fn query_and_policy(state: &AppState, id: i64) -> Result<(QueryRow, DatasetPolicy)> {
    let mut conn = state.store.read().await?;
    let q = queries::get(&mut conn, id)
        .await?
        .ok_or(Error::NotFound(Missing::Query(id)))?;
    let version = datasets::get(&mut conn, &q.dataset, q.dataset_version)
        .await?
        .ok_or_else(|| {
            Error::NotFound(Missing::DatasetVersion(
                q.dataset.clone(),
                q.dataset_version,
            ))
        })?;
    Ok((q, version.policy))
}

/// The calibration reserved with a query, for a round guaranteeing `honest` contributors.
/// Queries stored before calibrations were kept (store version 3) have none, and a
/// distributed-noise calibration made for another honest count (the coordinator's settings
/// or the board's manifest changed since submission) no longer matches the shares the
/// partners add: either is priced again, once, with the same function, the row bound the
/// round is sized for, its honest contributors and today's reporting δ. If that price
/// exceeds what was reserved the release refuses and the query is refunded; if it is lower,
/// the reservation is charged in full (never less than the noise costs).
pub async fn calibration(
    state: &AppState,
    q: &QueryRow,
    policy: &DatasetPolicy,
    max_rows_per_partner: u64,
    honest: usize,
) -> Result<Priced> {
    let honest = match policy.noise() {
        NoisePlacement::Distributed => honest,
        NoisePlacement::Central => 0,
    };
    let board_floor = match &q.calibration {
        // A training job's fixed point follows the row bound: the partners encode with the
        // round's, so the coordinator must decode with it too.
        Some(p)
            if p.context.honest_survivors == honest
                && (p.plan.learning.is_none()
                    || p.context.max_rows_per_partner == max_rows_per_partner) =>
        {
            return Ok(p.clone());
        }
        Some(p) => p.context.board_floor,
        // Such queries were priced before the board's floor entered pricing.
        None => Rho::ZERO,
    };
    let context = civic_mechanisms::PricingContext {
        max_rows_per_partner,
        reporting_delta: state.config.reporting_delta,
        board_floor,
        honest_survivors: honest,
    };
    super::research::price_in(context, policy, &q.request).await
}

/// Releases query `query` from the output of round `round` (set up as `setup`): samples
/// central noise once from the stored calibration (on a blocking thread, holding no store
/// connection), or takes the partners' distributed noise as it arrived in the sum; then in
/// one transaction charges the reservation, stores the release, closes the round and
/// audits.
pub async fn release(
    state: &AppState,
    round: i64,
    query: i64,
    setup: &RoundSetup,
    output: RoundOutput,
) -> Result<()> {
    let (q, policy) = query_and_policy(state, query).await?;
    let manifest = {
        let mut conn = state.store.read().await?;
        manifests::latest(&mut conn).await?.map(|s| s.manifest)
    };
    let honest = setup
        .config
        .honest_contributors(lifecycle::board_colluders(manifest.as_ref()));
    let priced = calibration(state, &q, &policy, setup.max_rows_per_partner, honest).await?;
    state.rounds.record_unmasked_sum(query, &output.sum);
    let survivors = output.contributors.len();
    let contributors: Vec<u32> = output.contributors.iter().map(|p| p.0).collect();
    let misbehaviour = output.misbehaviour.clone();
    for m in &misbehaviour {
        tracing::warn!(round, query, misbehaviour = %m, "a partner deviated; the round recovered");
    }
    let noise_tail = priced.release_plan.noise_tail(&priced.plan);
    if !priced.plan.admits_sum(&output.sum, survivors, noise_tail) {
        // Never the value: with central noise it is the un-noised sum.
        return Err(Error::conflict(
            ProblemCode::RoundSumOutOfRange,
            format!(
                "the unmasked sum of round {round} has a slot outside what {survivors} partners' \
                 inputs can add up to: a partner sent a wrong share or a malformed input, and \
                 nothing was released"
            ),
        ));
    }
    if priced.plan.learning.is_some() {
        return train(state, round, q, policy, priced, output).await;
    }
    let labels = q
        .request
        .query
        .clone()
        .validate(&policy)
        .map_err(|e| Error::internal("labelling a release", e))?
        .cell_labels(&policy);
    let linkage = match &output.linked_pairs {
        Some(pairs) => {
            let names = partners(&mut *state.store.read().await?)
                .await?
                .into_iter()
                .map(|p| (p.id, p.name))
                .collect();
            let rho = priced.match_counts.as_f64();
            Some(
                lifecycle::linkage_receipt(&policy, &q.request.query, &names, pairs, rho)
                    .map_err(|e| Error::internal("stating a linked release's pairs", e))?,
            )
        }
        None => None,
    };
    let budget = Rho::from_units(q.cost_units);
    // OpenDP's measurements are neither Send nor Sync: build and sample on one thread.
    let release: Release =
        web::block(move || priced.release(&policy, &output.sum, survivors, budget))
            .await
            .map_err(|e| Error::internal("sampling a release", e))??;
    let at = state.clock.rfc3339();
    let mut view = release_view(release, labels, at.clone())?;
    if let (Some(linkage), Some(receipt)) = (linkage, view.receipt.as_object_mut()) {
        receipt.insert("linkage".into(), linkage);
    }
    let release_id = state
        .store
        .run_tx("release a query", async |tx| {
            let (q, mut ledger, held) = finish_round(state, tx, round, query).await?;
            let (_, entry) = lifecycle::charge(current(&q), &mut ledger, held.as_ref())?;
            budgets::record(tx, &ledger, &entry, &at).await?;
            let release_id = queries::insert_release(tx, &q, &view).await?;
            queries::set_state(tx, query, QueryState::Released, None).await?;
            audit::append(
                tx,
                event(
                    "coordinator",
                    "query.release",
                    format!("query:{query}"),
                    json!({
                        "release": release_id,
                        "round": round,
                        "dataset": q.dataset,
                        "dataset_version": q.dataset_version,
                        "project": q.project,
                        "charged_rho": entry.amount.as_f64(),
                        "survivors": survivors,
                        "contributors": contributors,
                        "misbehaviour": misbehaviour,
                        "names": view.names,
                        "values": view.rows,
                        "linkage": view.receipt.get("linkage"),
                    }),
                ),
                &at,
            )
            .await?;
            Ok::<_, Error>(release_id)
        })
        .await?;
    crate::metrics::RELEASES.inc();
    tracing::info!(round, query, release = release_id, survivors, "released");
    Ok(())
}

/// The most numbers a training job's receipt lists its iterates with.
const MAX_RECEIPT_ITERATE_NUMBERS: usize = 1_000_000;

/// A training job's model from its stored calibration.
fn training_model(priced: &Priced) -> Result<civic_mechanisms::learning::TrainingModel> {
    priced
        .plan
        .training_model()
        .map_err(|e| Error::internal("taking a training step", e))
}

/// Inside a release's transaction: closes round `round` as finished (it must still be
/// open: closed already, by another coordinator or an abort, there is nothing to release)
/// and locks its query and its dataset's ledger, with the query's budget as it stands.
async fn finish_round(
    state: &AppState,
    tx: &mut AnyConnection,
    round: i64,
    query: i64,
) -> Result<(
    QueryRow,
    civic_policies::Ledger,
    Option<civic_policies::budget::Held>,
)> {
    lease::fence(state, tx, round).await?;
    let q = queries::lock(tx, query)
        .await?
        .ok_or(Error::NotFound(Missing::Query(query)))?;
    if !rounds::close(tx, round, RoundState::Finished).await? {
        return Err(Error::internal(
            "releasing a round",
            format!("round {round} is no longer open"),
        ));
    }
    let ledger = budgets::lock(tx, &q.dataset)
        .await?
        .ok_or_else(|| Error::NotFound(Missing::Budget(q.dataset.clone())))?;
    let held = budgets::held(tx, query).await?;
    Ok((q, ledger, held))
}

/// One round of training job `q` has finished: its sum is noised (central noise sampled
/// once; distributed noise arrived in it), the step taken (Newton or gradient), and in one
/// transaction the round's share of the reservation charged before the new iterate leaves
/// the coordinator, the round's noisy total stored, and either the next round opened at the
/// new iterate or, after the last, the model released with its receipt and the job's whole
/// charge.
async fn train(
    state: &AppState,
    round: i64,
    q: QueryRow,
    policy: DatasetPolicy,
    priced: Priced,
    output: RoundOutput,
) -> Result<()> {
    let query = q.id;
    let step = training::of_round(&mut *state.store.read().await?, round)
        .await?
        .ok_or_else(|| {
            Error::internal(
                "taking a training step",
                format!("round {round} of training job {query} has no step"),
            )
        })?;
    let iterations = priced.plan.learning.as_ref().map_or(0, |l| l.iterations);
    let last = step.iteration + 1 >= iterations;
    // The calibration must cost what was reserved, and a round its share of it: a calibration
    // made again (another honest count) that cost more would overspend the rounds.
    if priced.cost.rho.units() != q.cost_units || iterations == 0 {
        return Err(Error::internal(
            "taking a training step",
            format!("training job {query}'s calibration no longer costs its reservation"),
        ));
    }
    let budget = Rho::from_units(q.cost_units / u64::from(iterations));
    let model = training_model(&priced)?;
    // Stored coefficients are input like any other.
    model
        .check(&step.coefficients)
        .map_err(|e| Error::internal("taking a training step", e))?;
    let survivors = output.contributors.len();
    let contributors: Vec<u32> = output.contributors.iter().map(|p| p.0).collect();
    let per_round = priced.release_plan.iteration_cost(&priced.plan);
    let delta = state.config.reporting_delta;
    let coefficients = step.coefficients.clone();
    let exact = state.rounds.central_noise_off()
        && priced
            .release_plan
            .groups
            .iter()
            .all(|g| g.shares.is_none());
    let (priced, policy, total, next, release) = web::block(move || {
        let noised = match exact {
            // Only a test's own code switches this on (feature `test-util`).
            true => output.sum.clone(),
            false => priced.release_plan.noised_iteration(
                &priced.plan,
                &policy,
                &output.sum,
                survivors,
                budget,
            )?,
        };
        let model = priced.plan.training_model()?;
        let total = model.decode(&noised);
        // A Newton step is damped by the noise the sums carry (none when a test switched it
        // off).
        let sigma = match exact {
            true => 0.0,
            false => {
                let unit = 2f64.powi(model.frac_bits() as i32);
                priced.release_plan.sum_sigma(survivors) / unit
            }
        };
        let next = model.step(&coefficients, &total, sigma)?;
        let release = match last {
            true => Some(priced.release_plan.training_release(
                &priced.plan,
                &policy,
                &coefficients,
                &next,
                &total,
                survivors,
                delta,
            )?),
            false => None,
        };
        Ok::<_, civic_mechanisms::MechanismError>((priced, policy, total, next, release))
    })
    .await
    .map_err(|e| Error::internal("taking a training step", e))?
    .map_err(|e| Error::internal("taking a training step", e))?;
    let at = state.clock.rfc3339();
    let mut iterates: Vec<serde_json::Value> = training::of_query(&mut *state.store.read().await?, query)
        .await?
        .iter()
        .filter(|r| r.iteration > 0 && model.check(&r.coefficients).is_ok())
        .map(|r| json!({ "iteration": r.iteration - 1, "coefficients": model.reported(&r.coefficients) }))
        .collect();
    iterates.push(json!({ "iteration": step.iteration, "coefficients": model.reported(&next), "contributors": survivors }));
    // A large model's every iterate would make the release hundreds of megabytes: beyond a
    // million numbers the receipt counts them, and the audit log's steps hold them.
    let numbers = iterates.len() * next.len();
    if numbers > MAX_RECEIPT_ITERATE_NUMBERS {
        for it in &mut iterates {
            it["coefficients"] = json!("in the audit log's training.step entries");
        }
    }
    let view = match release {
        Some(release) => {
            let mut view = release_view(release, CellLabels::default(), at.clone())?;
            if let Some(receipt) = view.receipt.as_object_mut() {
                receipt.insert(
                    "training".into(),
                    json!({
                        "iterations": iterations,
                        "rho_per_iteration": per_round.as_f64(),
                        "iterates": iterates,
                    }),
                );
            }
            Some(view)
        }
        None => None,
    };
    let opened = state
        .store
        .run_tx("take a training job's step", async |tx| {
            let (q, mut ledger, held) = finish_round(state, tx, round, query).await?;
            let (_, entry) = match last {
                true => lifecycle::charge(current(&q), &mut ledger, held.as_ref())?,
                false => {
                    lifecycle::charge_round(current(&q), &mut ledger, held.as_ref(), per_round)?
                }
            };
            budgets::record(tx, &ledger, &entry, &at).await?;
            training::finish(tx, round, &total, survivors).await?;
            let details = json!({
                "round": round,
                "iteration": step.iteration,
                "dataset": q.dataset,
                "project": q.project,
                "charged_rho": entry.amount.as_f64(),
                "survivors": survivors,
                "contributors": contributors,
                "coefficients": model.reported(&next),
            });
            if let Some(view) = &view {
                let release_id = queries::insert_release(tx, &q, view).await?;
                queries::set_state(tx, query, QueryState::Released, None).await?;
                let mut details = details;
                details["release"] = json!(release_id);
                details["names"] = json!(view.names);
                details["values"] = json!(view.rows);
                let event = event(
                    "coordinator",
                    "query.release",
                    format!("query:{query}"),
                    details,
                );
                audit::append(tx, event, &at).await?;
                return Ok::<_, Error>(None);
            }
            let row = open_step(
                state,
                tx,
                query,
                &policy,
                &q.request.query,
                &priced,
                Some((step.iteration + 1, next.clone())),
                &at,
            )
            .await?;
            let event = event(
                "coordinator",
                "training.step",
                format!("query:{query}"),
                details,
            );
            audit::append(tx, event, &at).await?;
            Ok(Some(row))
        })
        .await?;
    match opened {
        Some(row) => {
            tracing::info!(
                round,
                query,
                iteration = step.iteration,
                next = row.id,
                "training step taken"
            );
            crate::rounds::driver::start(state, row)
        }
        None => {
            crate::metrics::RELEASES.inc();
            tracing::info!(round, query, "training job released");
            Ok(())
        }
    }
}

fn release_view(release: Release, labels: CellLabels, released_at: String) -> Result<ReleaseView> {
    Ok(ReleaseView {
        release_id: 0,
        released_at,
        reused: false,
        names: release.names,
        rows: release
            .rows
            .into_iter()
            .map(|row| {
                row.into_iter()
                    .map(|c| CellView {
                        value: c.value,
                        interval: c.interval,
                    })
                    .collect()
            })
            .collect(),
        keys: labels.keys,
        cell_keys: labels.cells,
        receipt: serde_json::to_value(&release.receipt)
            .map_err(|e| Error::internal("encoding a receipt", e))?,
    })
}

/// Aborts round `round` and, if its query was still running, ends the query aborted and
/// refunds it: one transaction. A round no longer open (released, or aborted already) is
/// left as it is: nothing is refunded and nothing audited.
pub async fn abort(state: &AppState, round: i64, reason: &str) -> Result<()> {
    let at = state.clock.rfc3339();
    let aborted = state
        .store
        .run_tx("abort a round", async |tx| {
            lease::fence(state, tx, round).await?;
            // The query's lock first, as every change to a query takes it.
            let query = rounds::query_of(tx, round).await?;
            let q = match query {
                Some(id) => queries::lock(tx, id).await?,
                None => None,
            };
            if !rounds::close(tx, round, RoundState::Aborted).await? {
                return Ok(None);
            }
            let mut refunded = Rho::ZERO;
            if let Some(q) = q {
                let mut ledger = budgets::lock(tx, &q.dataset)
                    .await?
                    .ok_or_else(|| Error::NotFound(Missing::Budget(q.dataset.clone())))?;
                let held = budgets::held(tx, q.id).await?;
                if let Some((_, entry)) = lifecycle::abort(current(&q), &mut ledger, held.as_ref())?
                {
                    budgets::record(tx, &ledger, &entry, &at).await?;
                    queries::set_state(tx, q.id, QueryState::Aborted, Some(reason)).await?;
                    refunded = entry.amount;
                }
            }
            audit::append(
                tx,
                event(
                    "coordinator",
                    "round.abort",
                    format!("query:{}", query.unwrap_or_default()),
                    json!({ "round": round, "reason": reason, "refunded_rho": refunded.as_f64() }),
                ),
                &at,
            )
            .await?;
            Ok::<_, Error>(Some(refunded))
        })
        .await?;
    state.rounds.remove(round);
    if let Some(refunded) = aborted {
        crate::metrics::ROUNDS_ABORTED.inc();
        tracing::warn!(round, reason, refunded = refunded.as_f64(), "round aborted");
    }
    Ok(())
}
