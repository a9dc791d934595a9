//! The round driver: closes each round's open step when every partner still expected has
//! answered or the step's deadline (by the injected clock) has passed, and hands a finished
//! round's output, or its failure, to the query lifecycle (`service/rounds.rs`). It also
//! renews the driver lease and adopts open rounds from the store: at start-up (after a
//! restart, by replaying each round's stored messages step by step) and whenever a round
//! appears that is not in memory (opened by a coordinator that does not drive rounds).
//!
//! It knows protocols only through [`Protocol`]/[`ProtocolRound`]: a new protocol needs no
//! change here.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use actix_web::web;
use civic_secagg::PartnerId;
use tokio::sync::Mutex;

use super::lease;
use super::protocol::{Closed, Protocol, ProtocolError};
use super::registry::LiveRound;
use crate::AppState;
use crate::error::{Error, Result};
use crate::service;
use crate::store::{RoundRow, RoundSetup, rounds};

/// The tasks that drive rounds: this loop and the lease keeper.
pub struct Driving {
    state: web::Data<AppState>,
    tasks: Vec<actix_web::rt::task::JoinHandle<()>>,
}

/// Starts driving rounds: the loop below and, on a task of its own (so a long step cannot
/// starve it), the lease keeper.
pub fn spawn(state: &web::Data<AppState>) -> Driving {
    Driving {
        state: state.clone(),
        tasks: vec![
            actix_web::rt::spawn(drive(state.clone())),
            actix_web::rt::spawn(lease::keep(state.clone())),
        ],
    }
}

impl Driving {
    /// Stops both tasks and waits until they are gone, so that whatever they held (a store
    /// connection in a transaction) is dropped while the runtime still runs.
    pub async fn stop(self) {
        self.state.rounds.halt();
        for task in &self.tasks {
            task.abort();
        }
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// Runs until the registry is halted: adopts rounds it does not hold (as often as the lease
/// is renewed) and steps the rest.
async fn drive(state: web::Data<AppState>) {
    let tick = Duration::from_millis(state.config.tick_millis);
    let adopt_every = state.config.lease_renewal();
    let mut adopted = Instant::now();
    while !state.rounds.halted() {
        let _ = tokio::time::timeout(tick, state.rounds.woken()).await;
        if !state.rounds.drives() {
            continue;
        }
        if adopted.elapsed() >= adopt_every {
            adopted = Instant::now();
            if let Err(e) = adopt(&state).await {
                tracing::error!(error = %e, "adopting open rounds failed");
            }
        }
        for id in state.rounds.ids() {
            if let Err(e) = step(&state, id).await {
                tracing::error!(round = id, error = %e, "round step failed");
            }
        }
    }
}

/// Puts a round just committed to the store in memory and wakes the driver. On a
/// coordinator that does not drive rounds this does nothing: the driving coordinator adopts
/// the round from the store.
pub fn start(state: &AppState, row: RoundRow) -> Result<()> {
    if !state.rounds.drives() {
        return Ok(());
    }
    let protocol = protocol(state, &row.protocol)?;
    let round = protocol.start(row.id, &row.setup)?;
    let live = LiveRound {
        deadline: state.clock.now() + state.config.step_deadline(round.long_step()),
        state: round,
        expected: row.setup.config.participants.iter().copied().collect(),
        retry_at: std::time::UNIX_EPOCH,
        id: row.id,
        query_id: row.query_id,
        protocol: protocol.name(),
        setup: row.setup,
        closing: false,
        declines: Default::default(),
    };
    state.rounds.insert(live);
    crate::metrics::ROUNDS_OPENED.inc();
    Ok(())
}

fn protocol<'a>(state: &'a AppState, name: &str) -> Result<&'a dyn Protocol> {
    state
        .protocols
        .get(name)
        .map(|p| p.as_ref())
        .ok_or_else(|| Error::internal("opening a round", format!("no protocol named {name:?}")))
}

/// Takes into memory every open round in the store that is not there yet. A round that
/// cannot be rebuilt is aborted and refunded. Returns how many rounds were adopted.
pub async fn adopt(state: &AppState) -> Result<usize> {
    let open = rounds::open(&mut *state.store.read().await?).await?;
    let mut adopted = 0;
    for row in open {
        if state.rounds.contains(row.id) {
            continue;
        }
        match replay(state, &row).await {
            Ok(live) => {
                tracing::info!(
                    round = row.id,
                    step = live.state.step(),
                    "adopted an open round from the store"
                );
                state.rounds.insert(live);
                adopted += 1;
            }
            Err(e) => {
                tracing::error!(round = row.id, error = %e, "a stored round cannot be rebuilt");
                let reason =
                    "could not be rebuilt from the store (the coordinator's log has the cause)";
                if let Err(e) = service::rounds::abort(state, row.id, reason).await {
                    tracing::error!(round = row.id, error = %e, "could not abort a round that cannot be rebuilt");
                }
            }
        }
    }
    Ok(adopted)
}

/// Rebuilds a round by feeding its stored messages to its protocol, step by step, closing
/// each step before the one it is stored in. The messages are read first, so no store
/// connection is held while the protocol checks them.
async fn replay(state: &AppState, row: &RoundRow) -> std::result::Result<LiveRound, String> {
    let protocol = protocol(state, &row.protocol).map_err(|e| e.to_string())?;
    let steps = protocol.steps();
    let upto = steps
        .iter()
        .position(|s| *s == row.step)
        .ok_or_else(|| format!("stored step {} is not a step of {}", row.step, row.protocol))?;
    let mut stored = Vec::new();
    {
        let mut conn = state.store.read().await.map_err(|e| e.to_string())?;
        for step in &steps[..=upto] {
            stored.push(
                rounds::messages(&mut conn, row.id, step)
                    .await
                    .map_err(|e| e.to_string())?,
            );
        }
    }
    let mut round = protocol
        .start(row.id, &row.setup)
        .map_err(|e| e.to_string())?;
    let mut expected: BTreeSet<PartnerId> = row.setup.config.participants.iter().copied().collect();
    for (i, messages) in stored.into_iter().enumerate() {
        for (partner, body) in messages {
            round
                .receive(PartnerId(partner), &body)
                .map_err(|e| e.to_string())?;
        }
        if i == upto {
            break;
        }
        expected = round.responded();
        match round.close_step().map_err(|e| e.to_string())? {
            Closed::Next => {}
            Closed::Finished(_) => return Err("it finished before its stored step".into()),
        }
    }
    Ok(LiveRound {
        id: row.id,
        query_id: row.query_id,
        protocol: protocol.name(),
        setup: row.setup.clone(),
        deadline: state.clock.now() + state.config.step_deadline(round.long_step()),
        state: round,
        expected,
        retry_at: std::time::UNIX_EPOCH,
        closing: false,
        declines: Default::default(),
    })
}

/// Whether a failure is worth trying again later (the store busy or unreachable, the lease
/// lost for a moment) rather than a refusal that will not change.
fn transient(e: &Error) -> bool {
    matches!(
        e,
        Error::Store(_) | Error::Timeout(_) | Error::RoundNotDrivenHere(_)
    )
}

/// How long a round whose release or abort failed for a passing reason waits before the
/// driver tries again (by the clock).
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Closes round `id`'s open step if everyone expected answered or its deadline passed.
/// The step is closed on a copy and stored before the round takes it: memory never runs
/// ahead of the store. A finished round is released; a failed one aborted; if either fails
/// for a passing reason the round stays as it was and is tried again (a release's noise is
/// only ever drawn again if the first draw was never stored, so it never left).
async fn step(state: &AppState, id: i64) -> Result<()> {
    let Some(round) = state.rounds.get(id) else {
        return Ok(());
    };
    let mut r = round.lock().await;
    let now = state.clock.now();
    if r.closing || now < r.retry_at || (!r.complete() && now < r.deadline) {
        return Ok(());
    }
    catch_up(state, &mut r).await?;
    let closing = r.state.step();
    let responded = r.state.responded();
    tracing::debug!(
        round = id,
        step = closing,
        responded = responded.len(),
        expected = r.expected.len(),
        "closing step"
    );
    let mut next = r.state.box_clone();
    let (query, setup) = (r.query_id, r.setup.clone());
    let declines = r.declines_in_words();
    if protocol(state, r.protocol)?.steps().last() == Some(&closing) {
        // The last step computes the output (for a secure sum: the unmasking, the
        // coordinator's bulk work, on every core): off the round's lock, so polls are
        // answered meanwhile, and off the async workers. The round is marked closing first,
        // so it takes no message while it is off the lock.
        r.closing = true;
        drop(r);
        let started = Instant::now();
        let outcome = match web::block(move || next.close_step()).await {
            Ok(outcome) => outcome.map_err(|e| too_few(closing, e, &declines)),
            Err(e) => {
                tracing::error!(round = id, error = %e, "closing the last step failed");
                Err(format!(
                    "{closing} failed to run (the coordinator's log has the cause)"
                ))
            }
        };
        let took_ms = started.elapsed().as_millis() as u64;
        tracing::info!(round = id, closed = closing, took_ms, "last step closed");
        return end(state, &round, id, closing, query, &setup, outcome).await;
    }
    let started = Instant::now();
    let outcome = next
        .close_step()
        .map_err(|e| too_few(closing, e, &declines));
    let took_ms = started.elapsed().as_millis() as u64;
    if let Ok(Closed::Next) = outcome {
        let opened = next.step();
        state
            .store
            .run_tx("record a round's step", async |tx| {
                lease::fence(state, tx, id).await?;
                rounds::set_step(tx, id, opened).await?;
                Ok::<_, Error>(())
            })
            .await?;
        r.deadline = now + state.config.step_deadline(next.long_step());
        r.state = next;
        r.expected = responded;
        tracing::info!(round = id, closed = closing, opened, took_ms, "step closed");
        return Ok(());
    }
    // The round ends: keep it in memory, marked, until the store says so.
    r.closing = true;
    drop(r);
    end(state, &round, id, closing, query, &setup, outcome).await
}

/// Takes into round `r` every message the store holds for its open step that the round has
/// not taken: one whose transaction committed but reported failure to its poster. The store
/// is the truth (a restart replays it), so a step never closes without them.
async fn catch_up(state: &AppState, r: &mut LiveRound) -> Result<()> {
    let (id, step) = (r.id, r.state.step());
    let mut conn = state.store.read().await?;
    let taken = r.state.responded();
    for partner in rounds::senders(&mut conn, id, step).await? {
        let partner = PartnerId(partner);
        if taken.contains(&partner) {
            continue;
        }
        let Some(body) = rounds::message_of(&mut conn, id, step, partner.0).await? else {
            continue;
        };
        tracing::warn!(round = id, step, %partner, "taking a stored message its poster was told had failed");
        r.state.receive(partner, &body).map_err(|e| {
            Error::internal(
                "taking a stored protocol message",
                format!("round {id} refuses a message in its store: {e}"),
            )
        })?;
    }
    Ok(())
}

/// The abort reason for a step that could not close, with who declined and why (the
/// researcher reads it in the query's status).
fn too_few(closing: &str, e: ProtocolError, declines: &str) -> String {
    format!("{closing} closed with too few partners: {e}.{declines}")
}

/// Ends a round whose step `closing` closed with `outcome`: releases a finished round,
/// aborts a failed one (with the reason given), and keeps the round (no longer closing) for another try if either
/// fails for a passing reason.
async fn end(
    state: &AppState,
    round: &Mutex<LiveRound>,
    id: i64,
    closing: &str,
    query: i64,
    setup: &RoundSetup,
    outcome: std::result::Result<Closed, String>,
) -> Result<()> {
    let result = match outcome {
        Ok(Closed::Finished(output)) => {
            match service::rounds::release(state, id, query, setup, output).await {
                Err(e) if !transient(&e) => {
                    tracing::error!(round = id, error = %e, "the release failed");
                    let reason = format!("the release failed: {}", e.body().detail);
                    service::rounds::abort(state, id, &reason).await
                }
                other => other,
            }
        }
        Err(reason) => service::rounds::abort(state, id, &reason).await,
        Ok(Closed::Next) => {
            let reason = format!("the protocol opened a step after its last, {closing}");
            service::rounds::abort(state, id, &reason).await
        }
    };
    match result {
        Err(e) if transient(&e) => {
            tracing::warn!(round = id, error = %e, "ending the round failed; trying again shortly");
            let mut r = round.lock().await;
            r.closing = false;
            r.retry_at = state.clock.now() + RETRY_AFTER;
            Err(e)
        }
        other => {
            state.rounds.remove(id);
            other
        }
    }
}
