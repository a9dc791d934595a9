//! The round driver: opens a round for each running query, feeds partners' messages to
//! civic-secagg's server state machine, closes each phase when everyone expected has
//! answered or its deadline passes, and on the aggregate charges, samples the noise once,
//! stores the release and audits it, all in one transaction. A round that loses its quorum
//! is aborted and its reservation refunded.
//!
//! Every accepted message is stored before the in-memory round takes it, so a restarted
//! coordinator rebuilds each open round by replaying its messages.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex as SyncMutex};
use std::time::{Duration, Instant, SystemTime};

use civic_api::query::{CellView, QueryState, ReleaseView};
use civic_api::round::{Inbox, RoundAnnouncement};
use civic_api::{decode_binary, encode_binary};
use civic_mechanisms::Release;
use civic_policies::Rho;
use civic_policies::audit::AuditEvent;
use civic_secagg::{
    Aggregate, ClientMessage, GraphKind, PartnerId, Phase, RoundConfig, RoundId, SecAggError,
    ServerOutput, ServerRound, Tolerances, Width,
};
use serde_json::json;
use tokio::sync::{Mutex, Notify};

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::service::pricing::{Priced, price};
use crate::store::{
    RoundSetup, Store, Tx, accounts, audit, budgets, datasets, queries, rfc3339, rounds,
};

/// How often the driver renews its lease and looks in the store for open rounds it does
/// not hold.
const ADOPT_EVERY: Duration = Duration::from_secs(1);

/// Above this many partners a round uses the sparse (Harary) graph.
const COMPLETE_GRAPH_MAX: usize = 100;

/// One round in memory.
struct LiveRound {
    setup: RoundSetup,
    server: ServerRound,
    /// Who must answer the open phase: everyone who answered the last one.
    expected: BTreeSet<PartnerId>,
    deadline: Instant,
    deadline_at: SystemTime,
    /// What the last closed phase produced, for partners' inboxes.
    last_output: Option<ServerOutput>,
    /// Being released or aborted: kept in memory (so it is not adopted again) but no longer
    /// driven.
    closing: bool,
}

/// The open rounds of this coordinator.
pub struct Rounds {
    live: SyncMutex<HashMap<i64, Arc<Mutex<LiveRound>>>>,
    wake: Notify,
    halted: std::sync::atomic::AtomicBool,
    /// This process's name in the driver lease.
    owner: String,
    holds_lease: std::sync::atomic::AtomicBool,
    /// The un-noised sum of each released round, for tests only (feature `test-util`).
    #[cfg(feature = "test-util")]
    exact_sums: SyncMutex<HashMap<i64, Vec<i64>>>,
}

impl Default for Rounds {
    fn default() -> Self {
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        Self {
            live: SyncMutex::default(),
            wake: Notify::new(),
            halted: Default::default(),
            owner: format!("coordinator-{}-{nanos}", std::process::id()),
            holds_lease: Default::default(),
            #[cfg(feature = "test-util")]
            exact_sums: SyncMutex::default(),
        }
    }
}

impl Rounds {
    /// Whether this coordinator holds the driver lease.
    pub fn drives(&self) -> bool {
        self.holds_lease.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn get(&self, id: i64) -> Option<Arc<Mutex<LiveRound>>> {
        self.live.lock().ok()?.get(&id).cloned()
    }

    fn ids(&self) -> Vec<i64> {
        self.live
            .lock()
            .map(|m| m.keys().copied().collect())
            .unwrap_or_default()
    }

    fn insert(&self, id: i64, round: LiveRound) {
        if self.halted() {
            return;
        }
        if let Ok(mut m) = self.live.lock() {
            // A round already in memory is never replaced: it may hold messages the store
            // copy also holds, but its phase bookkeeping is the live one.
            m.entry(id).or_insert_with(|| Arc::new(Mutex::new(round)));
        }
        self.wake.notify_one();
    }

    fn contains(&self, id: i64) -> bool {
        self.live
            .lock()
            .map(|m| m.contains_key(&id))
            .unwrap_or(true)
    }

    fn remove(&self, id: i64) {
        if let Ok(mut m) = self.live.lock() {
            m.remove(&id);
        }
    }

    /// Stops driving rounds and forgets them, as if the process died: what is in the store
    /// stays, and the next coordinator on the same store resumes it.
    pub fn halt(&self) {
        self.halted.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Ok(mut m) = self.live.lock() {
            m.clear();
        }
        self.wake.notify_one();
    }

    fn halted(&self) -> bool {
        self.halted.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The secure aggregate of round `id` before noise, if it was released here. A test hook
    /// (feature `test-util`): lets a whole-system test check partners' local aggregation
    /// exactly without any switch that could turn noise off.
    #[cfg(feature = "test-util")]
    pub fn exact_sum(&self, id: i64) -> Option<Vec<i64>> {
        self.exact_sums.lock().ok()?.get(&id).cloned()
    }

    /// Open rounds in memory.
    pub fn count(&self) -> usize {
        self.live.lock().map(|m| m.len()).unwrap_or_default()
    }
}

fn deadline(state: &AppState) -> (Instant, SystemTime) {
    let d = state.config.phase_deadline();
    (Instant::now() + d, SystemTime::now() + d)
}

/// The round a query would run as: checks that every partner of the dataset has an account
/// and a registered identity key, and sizes the ring. Called at submission (so a query that
/// could never run is refused before anything is reserved) and again when it starts.
pub async fn plan(
    state: &AppState,
    conn: &mut sqlx::AnyConnection,
    query: i64,
    priced: &Priced,
    policy: &civic_policies::DatasetPolicy,
) -> ApiResult<RoundSetup> {
    let all = accounts::partners(conn).await?;
    let mut participants = Vec::new();
    let mut roster = civic_secagg::Roster::new();
    for name in policy.partners() {
        let account = all.iter().find(|a| &a.name == name).ok_or_else(|| {
            ApiError::conflict(
                "round.partner_unknown",
                format!(
                    "dataset {} lists partner {name:?}, which has no account on this coordinator",
                    policy.id()
                ),
            )
        })?;
        let key = account.identity_key.ok_or_else(|| {
            ApiError::conflict(
                "round.partner_unregistered",
                format!(
                    "partner {name:?} has not registered its identity key yet (civic-agent keygen, \
                     then PUT /v1/partner/identity); no round can start without it"
                ),
            )
        })?;
        let id = PartnerId(
            u32::try_from(account.id)
                .map_err(|_| ApiError::internal("numbering partners", account.id))?,
        );
        participants.push(id);
        roster.insert(id, civic_secagg::IdentityPublicKey(key));
    }
    let width = Width::for_layout(priced.plan.max_slot_per_partner, participants.len(), 0)?;
    let graph = if participants.len() > COMPLETE_GRAPH_MAX {
        GraphKind::Sparse
    } else {
        GraphKind::Complete
    };
    let tolerances = Tolerances {
        max_dropout_rate: state.config.max_dropout_rate,
        max_corrupt_fraction: state.config.max_corrupt_fraction,
    };
    let config = RoundConfig::new(
        RoundId(query as u64),
        participants,
        priced.plan.vector_len,
        width,
        graph,
        tolerances,
        policy.min_partners() as usize,
    )?;
    Ok(RoundSetup {
        config,
        roster,
        max_rows_per_partner: state.config.max_rows_per_partner,
    })
}

/// Stores a round inside the caller's transaction; call [`start`] after the commit.
pub async fn open(tx: &mut Tx<'_>, query: i64, setup: &RoundSetup) -> ApiResult<()> {
    rounds::insert(tx, query, setup).await?;
    queries::set_round(tx, query, query).await
}

/// Puts a committed round in memory and wakes the driver. On a coordinator that does not
/// drive rounds this does nothing: the driving coordinator adopts the round from the store.
pub fn start(state: &AppState, id: i64, setup: RoundSetup) -> ApiResult<()> {
    if !state.rounds.drives() {
        return Ok(());
    }
    let server = ServerRound::new(setup.config.clone(), setup.roster.clone())?;
    let (deadline, deadline_at) = deadline(state);
    state.rounds.insert(
        id,
        LiveRound {
            expected: setup.config.participants.iter().copied().collect(),
            setup,
            server,
            deadline,
            deadline_at,
            last_output: None,
            closing: false,
        },
    );
    crate::metrics::ROUNDS_OPENED.inc();
    Ok(())
}

/// Takes or renews the lease that makes this coordinator the one that drives rounds. A
/// coordinator that loses it (it stalled past the lease and another took over) forgets its
/// rounds at once; the new holder has adopted them from the store.
pub async fn renew_lease(state: &AppState) -> ApiResult<bool> {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default();
    let ttl = (state.config.driver_lease_secs * 1000) as i64;
    let mut conn = state.store.pool().acquire().await?;
    let held = rounds::claim_driver_lease(&mut conn, &state.rounds.owner, now, ttl).await?;
    let had = state
        .rounds
        .holds_lease
        .swap(held, std::sync::atomic::Ordering::SeqCst);
    if had && !held {
        if let Ok(mut m) = state.rounds.live.lock() {
            m.clear();
        }
        tracing::error!(
            "lost the round-driver lease to another coordinator; its rounds are now driven there"
        );
    } else if !had && held {
        tracing::info!(owner = %state.rounds.owner, "holding the round-driver lease");
    } else if !held {
        let (owner, until) = rounds::driver_lease(&mut conn).await?;
        tracing::debug!(%owner, until, "another coordinator drives rounds");
    }
    Ok(held)
}

/// Takes into memory every open round in the store that is not there yet: at start-up
/// (after a restart, by replaying each round's stored messages) and then on every few
/// ticks (rounds opened by a coordinator that does not drive rounds, or whose start was
/// lost). A round that cannot be rebuilt is aborted and refunded. Returns how many rounds
/// were adopted.
pub async fn adopt(state: &AppState) -> ApiResult<usize> {
    let open = {
        let mut conn = state.store.pool().acquire().await?;
        rounds::open(&mut conn).await?
    };
    let mut adopted = 0;
    for row in open {
        if state.rounds.contains(row.id) {
            continue;
        }
        match replay(&state.store, &row).await {
            Ok((server, expected, last_output)) => {
                let (deadline, deadline_at) = deadline(state);
                tracing::info!(round = row.id, phase = %server.phase(), "adopted an open round from the store");
                state.rounds.insert(
                    row.id,
                    LiveRound {
                        setup: row.setup,
                        server,
                        expected,
                        deadline,
                        deadline_at,
                        last_output,
                        closing: false,
                    },
                );
                adopted += 1;
            }
            Err(e) => {
                let reason = format!("could not be rebuilt from the store: {e}");
                if let Err(e) = abort(state, row.id, &reason).await {
                    tracing::error!(round = row.id, error = %e, "could not abort a round that cannot be rebuilt");
                }
            }
        }
    }
    Ok(adopted)
}

type Replayed = (ServerRound, BTreeSet<PartnerId>, Option<ServerOutput>);

async fn replay(store: &Store, row: &crate::store::RoundRow) -> Result<Replayed, String> {
    let mut server = ServerRound::new(row.setup.config.clone(), row.setup.roster.clone())
        .map_err(|e| e.to_string())?;
    let mut expected: BTreeSet<PartnerId> = row.setup.config.participants.iter().copied().collect();
    let mut last = None;
    let mut conn = store.pool().acquire().await.map_err(|e| e.to_string())?;
    for phase in [
        Phase::AdvertiseKeys,
        Phase::ShareKeys,
        Phase::MaskedInputCollection,
        Phase::ConsistencyCheck,
        Phase::Unmasking,
    ] {
        for body in rounds::messages(&mut conn, row.id, phase)
            .await
            .map_err(|e| e.detail)?
        {
            let msg: ClientMessage = decode_binary(&body)?;
            server.receive(msg).map_err(|e| e.to_string())?;
        }
        if phase == row.phase {
            return Ok((server, expected, last));
        }
        expected = server.responded().into_iter().collect();
        last = Some(server.advance().map_err(|e| e.to_string())?);
    }
    Err(format!(
        "stored phase {} cannot be replayed",
        rounds::phase_name(row.phase)
    ))
}

/// The rounds `partner` is still part of, as announcements; or 503 (retry) while a round
/// open in the store is not driven here yet, so that a partner polling just after a restart
/// is told to come back rather than handed a list with the round missing.
pub async fn announcements(
    state: &AppState,
    partner: PartnerId,
) -> ApiResult<Vec<RoundAnnouncement>> {
    let open = {
        let mut conn = state.store.pool().acquire().await?;
        rounds::open_ids(&mut conn).await?
    };
    if let Some(id) = open.into_iter().find(|id| !state.rounds.contains(*id)) {
        return Err(not_driven_here(id));
    }
    let mut out = Vec::new();
    let mut ids = state.rounds.ids();
    ids.sort_unstable();
    for id in ids {
        let Some(round) = state.rounds.get(id) else {
            continue;
        };
        let (setup, phase, deadline_at) = {
            let r = round.lock().await;
            if r.closing
                || !r.expected.contains(&partner)
                || matches!(r.server.phase(), Phase::Finished | Phase::Aborted)
            {
                continue;
            }
            (r.setup.clone(), r.server.phase(), r.deadline_at)
        };
        let mut conn = state.store.pool().acquire().await?;
        let q = queries::get(&mut conn, id).await?;
        out.push(RoundAnnouncement {
            round_id: id,
            query_id: id,
            dataset: q.dataset,
            dataset_version: q.dataset_version,
            query: q.request.query,
            privacy: q.request.privacy,
            confidence: q.request.confidence,
            max_rows_per_partner: setup.max_rows_per_partner,
            reporting_delta: Some(state.config.reporting_delta),
            config: setup.config,
            phase,
            phase_deadline: rfc3339(deadline_at),
        });
    }
    Ok(out)
}

/// The round in memory; or 503 (retry) if it is open in the store but not driven here yet
/// (a coordinator taking over after a restart, or a replica that does not drive rounds);
/// 409 `round.finished` or `round.aborted` once it has closed (so that an agent whose last
/// message was retried after the close knows its part is over); 404 if unknown.
async fn live(state: &AppState, id: i64) -> ApiResult<Arc<Mutex<LiveRound>>> {
    if let Some(round) = state.rounds.get(id) {
        return Ok(round);
    }
    let mut conn = state.store.pool().acquire().await?;
    match rounds::state(&mut conn, id).await?.as_deref() {
        Some("open") => Err(not_driven_here(id)),
        Some("finished") => Err(ApiError::conflict(
            "round.finished",
            format!("round {id} has finished and released; it takes no more messages"),
        )),
        Some("aborted") => Err(ApiError::conflict(
            "round.aborted",
            format!("round {id} was aborted; it takes no more messages"),
        )),
        _ => Err(ApiError::not_found(format!("round {id} is unknown"))),
    }
}

fn not_driven_here(id: i64) -> ApiError {
    ApiError::new(
        actix_web::http::StatusCode::SERVICE_UNAVAILABLE,
        "round.not_driven_here",
        format!(
            "round {id} is open but not driven by this coordinator yet (the round driver is \
             taking over, or this is a replica that does not drive rounds); retry shortly"
        ),
    )
}

/// What the last closed phase sent to `partner`.
pub async fn inbox(state: &AppState, id: i64, partner: PartnerId) -> ApiResult<Inbox> {
    let round = live(state, id).await?;
    let r = round.lock().await;
    if !r.setup.config.is_participant(partner) {
        return Err(ApiError::forbidden(format!(
            "partner {partner} is not invited to round {id}"
        )));
    }
    if !r.expected.contains(&partner) {
        return Err(ApiError::conflict(
            "round.dropped",
            format!("partner {partner} missed a phase of round {id} and is no longer part of it"),
        ));
    }
    Ok(match &r.last_output {
        None => Inbox::Nothing,
        Some(ServerOutput::KeyRoster(k)) => Inbox::KeyRoster(k.clone()),
        Some(ServerOutput::ForwardedShares(map)) => match map.get(&partner) {
            Some(f) => Inbox::ForwardedShares(f.clone()),
            None => {
                return Err(ApiError::conflict(
                    "round.dropped",
                    format!("no shares for partner {partner} in round {id}"),
                ));
            }
        },
        Some(ServerOutput::SurvivorList(s)) => Inbox::SurvivorList(s.clone()),
        Some(ServerOutput::SignedSurvivors(s)) => Inbox::SignedSurvivors(s.clone()),
        Some(ServerOutput::Aggregate(_)) => Inbox::Nothing,
    })
}

/// Accepts one protocol message from `partner`: checked by the state machine on a copy,
/// stored, and only then taken into the round, so a refused or unstored message changes
/// nothing.
pub async fn receive(state: &AppState, id: i64, partner: PartnerId, body: &[u8]) -> ApiResult<()> {
    let msg: ClientMessage = decode_binary(body)
        .map_err(|e| ApiError::bad_request("protocol.malformed", format!("round {id}: {e}")))?;
    if msg.sender() != partner {
        return Err(ApiError::forbidden(format!(
            "the message claims to come from partner {} but the token is partner {partner}'s",
            msg.sender()
        )));
    }
    if msg.round_id() != RoundId(id as u64) {
        return Err(ApiError::bad_request(
            "protocol.wrong_round",
            format!(
                "a message for round {} was posted to round {id}",
                msg.round_id()
            ),
        ));
    }
    let round = live(state, id).await?;
    let mut r = round.lock().await;
    let phase = msg.phase();
    let mut next = r.server.clone();
    match next.receive(msg) {
        Ok(()) => {}
        // The same message again (a retry after a lost reply, even one arriving after its
        // phase closed): already taken, so accepted.
        Err(SecAggError::Duplicate { .. } | SecAggError::OutOfPhase { .. })
            if stored_already(state, id, phase, partner, body).await? =>
        {
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    }
    let mut conn = state.store.pool().acquire().await?;
    rounds::insert_message(&mut conn, id, phase, partner.0, body).await?;
    r.server = next;
    let responded = r.server.responded();
    let complete = r.expected.iter().all(|p| responded.contains(p));
    drop(r);
    if complete {
        state.rounds.wake.notify_one();
    }
    Ok(())
}

/// Records that `partner` declines round `id` under its local policy, before advertising
/// keys: it leaves the round at once (the phase need not wait for it) and the reason goes
/// into the audit log. Declining twice is accepted.
pub async fn decline(state: &AppState, id: i64, partner: PartnerId, reason: &str) -> ApiResult<()> {
    let round = live(state, id).await?;
    let mut r = round.lock().await;
    if !r.setup.config.is_participant(partner) {
        return Err(ApiError::forbidden(format!(
            "partner {partner} is not invited to round {id}"
        )));
    }
    if !r.expected.contains(&partner) {
        return Ok(());
    }
    if r.server.phase() != Phase::AdvertiseKeys || r.server.responded().contains(&partner) {
        return Err(ApiError::conflict(
            "round.already_joined",
            format!(
                "partner {partner} already took part in round {id}; stop answering and it \
                 drops out at the phase deadline"
            ),
        ));
    }
    let mut tx = state.store.begin().await?;
    audit::append(
        &mut tx,
        AuditEvent {
            actor: format!("partner:{partner}"),
            action: "round.declined".into(),
            subject: format!("query:{id}"),
            details: json!({ "partner": partner.0, "reason": reason }),
        },
    )
    .await?;
    tx.commit().await?;
    r.expected.remove(&partner);
    let complete = r.expected.iter().all(|p| r.server.responded().contains(p));
    drop(r);
    tracing::warn!(round = id, %partner, reason, "partner declined the round");
    if complete {
        state.rounds.wake.notify_one();
    }
    Ok(())
}

async fn stored_already(
    state: &AppState,
    id: i64,
    phase: Phase,
    partner: PartnerId,
    body: &[u8],
) -> ApiResult<bool> {
    let mut conn = state.store.pool().acquire().await?;
    Ok(rounds::messages_of(&mut conn, id, phase, partner.0)
        .await?
        .as_deref()
        == Some(body))
}

/// The driver: closes phases whose deadline passed or whose partners all answered.
pub async fn drive(state: actix_web::web::Data<AppState>) {
    let tick = Duration::from_millis(state.config.tick_millis);
    let mut last_adoption = Instant::now();
    while !state.rounds.halted() {
        let _ = tokio::time::timeout(tick, state.rounds.wake.notified()).await;
        if last_adoption.elapsed() >= ADOPT_EVERY {
            last_adoption = Instant::now();
            match renew_lease(&state).await {
                Ok(true) => {
                    if let Err(e) = adopt(&state).await {
                        tracing::error!(error = %e, "adopting open rounds failed");
                    }
                }
                Ok(false) => continue,
                Err(e) => tracing::error!(error = %e, "renewing the round-driver lease failed"),
            }
        }
        if !state.rounds.drives() {
            continue;
        }
        for id in state.rounds.ids() {
            if let Err(e) = step(&state, id).await {
                tracing::error!(round = id, error = %e, "round step failed");
            }
        }
    }
}

async fn step(state: &AppState, id: i64) -> ApiResult<()> {
    let Some(round) = state.rounds.get(id) else {
        return Ok(());
    };
    let mut r = round.lock().await;
    if r.closing {
        return Ok(());
    }
    let responded: BTreeSet<PartnerId> = r.server.responded().into_iter().collect();
    if !r.expected.is_subset(&responded) && Instant::now() < r.deadline {
        return Ok(());
    }
    let closing = r.server.phase();
    tracing::debug!(round = id, phase = %closing, responded = responded.len(), expected = r.expected.len(), "closing phase");
    // Advance a copy, store the new phase, and only then take it: memory never runs ahead
    // of the store.
    let mut next = r.server.clone();
    let outcome = match next.advance() {
        Ok(ServerOutput::Aggregate(aggregate)) => Ok(Some(aggregate)),
        Ok(output) => {
            let mut conn = state.store.pool().acquire().await?;
            rounds::set_phase(&mut conn, id, next.phase()).await?;
            let (deadline, deadline_at) = deadline(state);
            r.server = next;
            r.expected = responded;
            r.deadline = deadline;
            r.deadline_at = deadline_at;
            r.last_output = Some(output);
            tracing::info!(round = id, closed = %closing, opened = %r.server.phase(), "phase closed");
            Ok(None)
        }
        Err(e) => Err(e),
    };
    let (Ok(Some(_)) | Err(_)) = &outcome else {
        return Ok(());
    };
    // The round ends: keep it in memory, marked, until the store says so.
    r.closing = true;
    let max_rows = r.setup.max_rows_per_partner;
    drop(r);
    let result = match outcome {
        Ok(Some(aggregate)) => match finish(state, id, aggregate, max_rows).await {
            Ok(()) => Ok(()),
            Err(e) => abort(state, id, &format!("the release failed: {}", e.detail)).await,
        },
        Err(e) => {
            abort(
                state,
                id,
                &format!("{closing} closed with too few partners: {e}"),
            )
            .await
        }
        Ok(None) => Ok(()),
    };
    state.rounds.remove(id);
    result
}

/// Charges, samples once, stores and audits, in one transaction.
async fn finish(state: &AppState, id: i64, aggregate: Aggregate, max_rows: u64) -> ApiResult<()> {
    let (query, policy) = {
        let mut conn = state.store.pool().acquire().await?;
        let q = queries::get(&mut conn, id).await?;
        let v = datasets::get(&mut conn, &q.dataset, q.dataset_version).await?;
        (q, v.policy)
    };
    let delta = state.config.reporting_delta;
    let survivors = aggregate.survivors.len();
    let summed = aggregate.sum.to_signed();
    #[cfg(feature = "test-util")]
    if let Ok(mut sums) = state.rounds.exact_sums.lock() {
        sums.insert(id, summed.clone());
    }
    let budget = Rho::from_units(query.cost_units);
    let (request, version) = (query.request.clone(), query.dataset_version);
    let released_at = crate::store::now_rfc3339();
    // The plan is recompiled with the row bound the ring was sized for, not today's config.
    // OpenDP's measurements are neither Send nor Sync: build and sample on one blocking thread.
    let release: Release = actix_web::web::block(move || -> ApiResult<Release> {
        let priced = price(&policy, version, &request, max_rows, delta)?;
        Ok(priced
            .release_plan
            .release(&priced.plan, &policy, &summed, survivors, budget, delta)?)
    })
    .await
    .map_err(|e| ApiError::internal("sampling a release", e))??;
    let view = release_view(release, released_at)?;
    let mut tx = state.store.begin().await?;
    let charged = budgets::update(&mut tx, &query.dataset, |l| Ok(l.charge(id as u64)?)).await?;
    let release_id = queries::insert_release(&mut tx, &query, &view).await?;
    rounds::set_phase(&mut tx, id, Phase::Finished).await?;
    rounds::delete_messages(&mut tx, id).await?;
    audit::append(
        &mut tx,
        AuditEvent {
            actor: "coordinator".into(),
            action: "query.release".into(),
            subject: format!("query:{id}"),
            details: json!({
                "release": release_id,
                "dataset": query.dataset,
                "dataset_version": query.dataset_version,
                "project": query.project,
                "charged_rho": charged.as_f64(),
                "survivors": survivors,
                "names": view.names,
                "values": view.rows,
            }),
        },
    )
    .await?;
    tx.commit().await?;
    crate::metrics::RELEASES.inc();
    tracing::info!(round = id, release = release_id, survivors, "released");
    Ok(())
}

fn release_view(release: Release, released_at: String) -> ApiResult<ReleaseView> {
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
        receipt: serde_json::to_value(&release.receipt)
            .map_err(|e| ApiError::internal("encoding a receipt", e))?,
    })
}

/// Aborts a round and, if its query was still running, refunds it: one transaction. The
/// round is closed and its messages dropped whatever state the query is in.
pub async fn abort(state: &AppState, id: i64, reason: &str) -> ApiResult<()> {
    let mut tx = state.store.begin().await?;
    // The write comes first: it takes the lock (see the store's module comment).
    let was_running = queries::transition(
        &mut tx,
        id,
        QueryState::Running,
        QueryState::Aborted,
        Some(reason),
    )
    .await?;
    rounds::set_phase(&mut tx, id, Phase::Aborted).await?;
    rounds::delete_messages(&mut tx, id).await?;
    let mut refunded = 0.0;
    if was_running {
        let query = queries::get(&mut tx, id).await?;
        refunded = budgets::update(&mut tx, &query.dataset, |l| Ok(l.refund(id as u64)?))
            .await?
            .as_f64();
    }
    audit::append(
        &mut tx,
        AuditEvent {
            actor: "coordinator".into(),
            action: "round.abort".into(),
            subject: format!("query:{id}"),
            details: json!({ "reason": reason, "refunded_rho": refunded }),
        },
    )
    .await?;
    tx.commit().await?;
    state.rounds.remove(id);
    crate::metrics::ROUNDS_ABORTED.inc();
    tracing::warn!(round = id, reason, refunded, "round aborted");
    Ok(())
}

/// Encodes an inbox for the wire.
pub fn encode_inbox(inbox: &Inbox) -> Vec<u8> {
    encode_binary(inbox)
}
