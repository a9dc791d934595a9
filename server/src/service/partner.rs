//! What partners' agents do: register their identity key, read the roster, list the rounds
//! they are in, read their inboxes, post protocol messages and decline rounds.
//!
//! A message is checked by the round's protocol on a copy of the round, stored, and only
//! then taken into the round: a refused or unstored message changes nothing, and a restart
//! replays exactly what was taken.

use std::collections::BTreeSet;
use std::sync::Arc;

use actix_web::web::Bytes;
use civic_api::ProblemCode;
use civic_api::decline::DeclineCode;
use civic_api::round::{RosterEntry, RoundAnnouncement, TrainingStep};
use civic_secagg::PartnerId;
use serde_json::json;
use tokio::sync::{Mutex, oneshot};

use super::event;
use crate::AppState;
use crate::error::{Error, Missing, Result};
use crate::rounds::{LiveRound, Pending, lease};
use crate::store::rounds::{RoundState, Stored};
use crate::store::{Account, StoreError, accounts, audit, manifests, queries, rounds, training};

/// Registers a partner's identity key: pinned once set (peers pin it too), audited.
pub async fn register_identity(state: &AppState, partner: &Account, key: [u8; 32]) -> Result<()> {
    let pinned = || {
        Error::conflict(
            ProblemCode::PartnerIdentityKeyPinned,
            format!(
                "partner {} already registered a different identity key; peers have pinned \
                 it, so it cannot be replaced through the API",
                partner.name
            ),
        )
    };
    match partner.identity_key {
        Some(existing) if existing == key => return Ok(()),
        Some(_) => return Err(pinned()),
        None => {}
    }
    let manifest = manifests::latest(&mut *state.store.read().await?).await?;
    if let Some(listed) = manifest
        .as_ref()
        .and_then(|s| s.manifest.partners.iter().find(|p| p.name == partner.name))
        && !listed.identity_key.eq_ignore_ascii_case(&hex::encode(key))
    {
        return Err(Error::conflict(
            ProblemCode::PartnerIdentityKeyNotInManifest,
            format!(
                "the board's manifest lists another identity key for partner {}; register the \
                 key the board signed (civic-agent keygen printed it), or ask the board for a \
                 manifest with this one",
                partner.name
            ),
        ));
    }
    let at = state.clock.rfc3339();
    state
        .store
        .run_tx("register an identity key", async |tx| {
            if !accounts::set_identity_key(tx, partner.id, key).await? {
                return Err(pinned());
            }
            audit::append(
                tx,
                event(
                    &partner.name,
                    "partner.identity_key",
                    format!("partner:{}", partner.name),
                    json!({ "public_key": hex::encode(key) }),
                ),
                &at,
            )
            .await?;
            Ok(())
        })
        .await
}

/// Every partner with its identity key.
pub async fn roster(state: &AppState) -> Result<Vec<RosterEntry>> {
    Ok(accounts::partners(&mut *state.store.read().await?)
        .await?
        .into_iter()
        .map(|a| RosterEntry {
            partner_id: a.id as u32,
            name: a.name,
            identity_key: a.identity_key.map(hex::encode),
        })
        .collect())
}

/// The rounds `partner` is still part of, as announcements; or 503 (retry) while a round
/// open in the store is not driven here yet, so that a partner polling just after a restart
/// is told to come back rather than handed a list with the round missing.
pub async fn announcements(state: &AppState, partner: PartnerId) -> Result<Vec<RoundAnnouncement>> {
    let open = rounds::open_ids(&mut *state.store.read().await?).await?;
    if let Some(id) = open.into_iter().find(|id| !state.rounds.contains(*id)) {
        return Err(Error::RoundNotDrivenHere(id));
    }
    let mut mine = Vec::new();
    for id in state.rounds.ids() {
        let Some(round) = state.rounds.get(id) else {
            continue;
        };
        let r = round.lock().await;
        if !r.closing && r.expected.contains(&partner) {
            mine.push((
                r.id,
                r.query_id,
                r.protocol,
                r.setup.clone(),
                r.state.step(),
                r.deadline,
            ));
        }
    }
    let mut conn = state.store.read().await?;
    let mut out = Vec::new();
    for (round_id, query_id, protocol, setup, step, deadline) in mine {
        let q = queries::get(&mut conn, query_id)
            .await?
            .ok_or(Error::NotFound(Missing::Query(query_id)))?;
        let approvals = queries::approvals(&mut conn, query_id)
            .await?
            .into_iter()
            .filter(|a| a.approve)
            .filter_map(|a| a.signature)
            .collect();
        let training = training::of_round(&mut conn, round_id)
            .await?
            .map(|t| TrainingStep {
                iteration: t.iteration,
                coefficients: t.coefficients,
            });
        out.push(RoundAnnouncement {
            training,
            approvals,
            round_id,
            query_id,
            protocol: protocol.to_string(),
            dataset: q.dataset,
            dataset_version: q.dataset_version,
            query: q.request.query,
            privacy: q.request.privacy,
            confidence: q.request.confidence,
            max_rows_per_partner: setup.max_rows_per_partner,
            reporting_delta: Some(state.config.reporting_delta),
            config: setup.config,
            phase: step.to_string(),
            phase_deadline: crate::clock::rfc3339(deadline),
        });
    }
    Ok(out)
}

/// The round in memory; or 503 (retry) if it is open in the store but not driven here yet
/// (a coordinator taking over after a restart, or a replica that does not drive rounds);
/// 409 `round.finished` or `round.aborted` once it has closed (so that an agent whose last
/// message was retried after the close knows its part is over); 404 if unknown.
async fn live(state: &AppState, id: i64) -> Result<Arc<Mutex<LiveRound>>> {
    if let Some(round) = state.rounds.get(id) {
        return Ok(round);
    }
    match rounds::state(&mut *state.store.read().await?, id).await? {
        Some(RoundState::Open) => Err(Error::RoundNotDrivenHere(id)),
        Some(RoundState::Finished) => Err(Error::conflict(
            ProblemCode::RoundFinished,
            format!("round {id} has finished and released; it takes no more messages"),
        )),
        Some(RoundState::Aborted) => Err(Error::conflict(
            ProblemCode::RoundAborted,
            format!("round {id} was aborted; it takes no more messages"),
        )),
        None => Err(Error::NotFound(Missing::Round(id))),
    }
}

fn not_invited(partner: PartnerId, id: i64) -> Error {
    Error::Forbidden(format!("partner {partner} is not invited to round {id}"))
}

/// What the last closed step sent to `partner`, encoded by the round's protocol.
pub async fn inbox(state: &AppState, id: i64, partner: PartnerId) -> Result<Bytes> {
    let round = live(state, id).await?;
    let r = round.lock().await;
    if !r.setup.config.is_participant(partner) {
        return Err(not_invited(partner, id));
    }
    if !r.expected.contains(&partner) {
        return Err(Error::conflict(
            ProblemCode::RoundDropped,
            format!("partner {partner} missed a step of round {id} and is no longer part of it"),
        ));
    }
    Ok(r.state.inbox(partner)?)
}

/// Accepts one protocol message from `partner`. A byte-identical copy of a message already
/// taken (a retry after a lost reply, even one arriving after its step closed) is accepted
/// as the same message.
///
/// Messages are group-committed: each poster queues its message and waits for the round's
/// lock; whoever gets it takes every message queued by then (checked against the round,
/// stored in one transaction, then taken), and the others find their outcome waiting. A
/// thousand partners posting at once cost a few transactions, not a thousand.
pub async fn receive(state: &AppState, id: i64, partner: PartnerId, body: &[u8]) -> Result<()> {
    let round = live(state, id).await?;
    let (reply, mut outcome) = oneshot::channel();
    state.rounds.enqueue(
        id,
        Pending {
            partner,
            body: body.to_vec(),
            reply,
        },
    );
    let mut r = round.lock().await;
    if let Ok(result) = outcome.try_recv() {
        return result;
    }
    let batch = state.rounds.take_pending(id);
    take_batch(state, &mut r, batch).await;
    drop(r);
    match outcome.await {
        Ok(result) => result,
        // The queue was dropped untaken: the round left memory (finished, aborted, or this
        // coordinator lost the lease or is stopping). Say which, so that the agent retries
        // a round that is still open.
        Err(_) => match live(state, id).await {
            Ok(_) => Err(Error::RoundNotDrivenHere(id)),
            Err(e) => Err(e),
        },
    }
}

/// Takes a batch of queued messages into round `r`, answering each poster. A partner's
/// second message in a batch waits for a later wave, so that the messages checked together
/// are from distinct partners (which a protocol checks independently of each other); so do
/// messages beyond [`WAVE_BYTES`].
async fn take_batch(state: &AppState, r: &mut LiveRound, mut batch: Vec<Pending>) {
    while !batch.is_empty() {
        let (mut seen, mut bytes) = (BTreeSet::new(), 0);
        let (wave, later): (Vec<Pending>, Vec<Pending>) = batch.into_iter().partition(|p| {
            let fits = seen.is_empty() || bytes + p.body.len() <= WAVE_BYTES;
            let take = fits && seen.insert(p.partner);
            if take {
                bytes += p.body.len();
            }
            take
        });
        take_wave(state, r, wave).await;
        batch = later;
    }
}

/// The most message bytes stored in one transaction (a wave holds at least one message).
const WAVE_BYTES: usize = 64 << 20;

/// Checks each message against the round, stores those that pass in one transaction, then
/// takes them: memory never runs ahead of the store.
async fn take_wave(state: &AppState, r: &mut LiveRound, wave: Vec<Pending>) {
    let id = r.id;
    let mut accepted = Vec::new();
    for p in wave {
        match check(state, r, &p).await {
            Ok(Some(step)) => accepted.push((p, step)),
            Ok(None) => {
                let _ = p.reply.send(Ok(()));
            }
            Err(e) => {
                let _ = p.reply.send(Err(e));
            }
        }
    }
    if accepted.is_empty() {
        return;
    }
    let stored = state
        .store
        .run_tx("store protocol messages", async |tx| {
            lease::fence(state, tx, id).await?;
            let mut stored = Vec::with_capacity(accepted.len());
            for (p, step) in &accepted {
                stored.push(rounds::insert_message(tx, id, step, p.partner.0, &p.body).await?);
            }
            Ok::<_, Error>(stored)
        })
        .await;
    let stored = match stored {
        Ok(stored) => stored,
        Err(e) => {
            for (p, _) in accepted {
                let _ = p.reply.send(Err(for_each_poster(&e)));
            }
            return;
        }
    };
    for ((p, step), stored) in accepted.into_iter().zip(stored) {
        let outcome = match stored {
            Stored::Different => Err(Error::conflict(
                ProblemCode::ProtocolDuplicate,
                format!(
                    "partner {} already sent a different {step} message in round {id}",
                    p.partner
                ),
            )),
            // Again: stored by an earlier attempt whose transaction committed but reported
            // failure, so never taken: take it now.
            Stored::New | Stored::Again => r.state.receive(p.partner, &p.body).map_err(|e| {
                Error::internal(
                    "taking a stored protocol message",
                    format!("the round refused a message it had accepted: {e}"),
                )
            }),
        };
        let _ = p.reply.send(outcome);
    }
    if r.complete() {
        state.rounds.wake();
    }
}

/// Whether round `r` would take `p`: its step if so; `None` for a byte-identical copy of a
/// message already taken; the refusal otherwise.
async fn check(state: &AppState, r: &LiveRound, p: &Pending) -> Result<Option<&'static str>> {
    if r.closing {
        return Err(Error::conflict(
            ProblemCode::RoundFinished,
            format!("round {} is closing; it takes no more messages", r.id),
        ));
    }
    let step = r.state.step_of(p.partner, &p.body)?;
    let Err(refused) = r.state.check(p.partner, &p.body) else {
        return Ok(Some(step));
    };
    let stored =
        rounds::message_of(&mut *state.store.read().await?, r.id, step, p.partner.0).await?;
    match stored {
        Some(s) if s == p.body => Ok(None),
        _ => Err(refused.into()),
    }
}

/// The failure of a batch's transaction, as each of its posters is told it: the same
/// status (retry after a passing failure), without the detail that belongs in the log.
fn for_each_poster(e: &Error) -> Error {
    match e {
        Error::RoundNotDrivenHere(id) => Error::RoundNotDrivenHere(*id),
        Error::Store(_) | Error::Timeout(_) => Error::Store(StoreError::Busy(e.to_string())),
        other => Error::internal("storing protocol messages", other.to_string()),
    }
}

/// Records that `partner` declines round `id` under its local policy, before taking part:
/// it leaves the round at once (the step need not wait for it) and the reason goes into the
/// audit log. Declining twice is accepted.
pub async fn decline(state: &AppState, id: i64, partner: PartnerId, reason: &str) -> Result<()> {
    let reason = reason.trim();
    if reason.is_empty() || reason.chars().count() > 1000 {
        return Err(Error::invalid(
            ProblemCode::RoundDeclineReason,
            "reason must be 1 to 1000 characters",
        ));
    }
    let round = live(state, id).await?;
    let mut r = round.lock().await;
    if !r.setup.config.is_participant(partner) {
        return Err(not_invited(partner, id));
    }
    if !r.expected.contains(&partner) {
        return Ok(());
    }
    let first_step = state
        .protocols
        .get(r.protocol)
        .map(|p| p.steps()[0])
        .unwrap_or_default();
    if r.state.step() != first_step || r.state.responded().contains(&partner) {
        return Err(Error::conflict(
            ProblemCode::RoundAlreadyJoined,
            format!(
                "partner {partner} already took part in round {id}; stop answering and it \
                 drops out at the step's deadline"
            ),
        ));
    }
    let (query, at) = (r.query_id, state.clock.rfc3339());
    state
        .store
        .run_tx("record a decline", async |tx| {
            audit::append(
                tx,
                event(
                    &format!("partner:{partner}"),
                    "round.declined",
                    format!("query:{query}"),
                    json!({ "partner": partner.0, "round": id, "reason": reason }),
                ),
                &at,
            )
            .await
        })
        .await?;
    r.expected.remove(&partner);
    let code = DeclineCode::from_reason(reason).map_or("other", DeclineCode::as_str);
    *r.declines.entry(code).or_insert(0) += 1;
    let complete = r.complete();
    drop(r);
    tracing::warn!(round = id, %partner, reason, "partner declined the round");
    if complete {
        state.rounds.wake();
    }
    Ok(())
}
