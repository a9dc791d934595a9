//! The agent: polls the coordinator, decides each round under the partner's own policy,
//! aggregates the local data and takes part in secure aggregation.
//!
//! The agent obeys the board, not the coordinator: it follows the chain of signed manifests
//! from the trust anchor in its configuration (`[board]`) and takes part only in a round
//! whose participants are all manifest partners of the dataset with the manifest's keys,
//! whose policy is the one the manifest signs, whose query carries the board approvals its
//! cost needs, and whose threshold and survivor floor meet the manifest's requirements and
//! this partner's own.
//!
//! A round goes: reserve its journal entry (a round listed twice is handled once) → check
//! (dataset served, manifest verified, policy signed, plan compiled from the announced query,
//! statistic allowed, cost within the floors and the per-query and total local limits, the
//! same question not answered before, the daily round limit, approvals, participants and
//! keys from the manifest, threshold) → aggregate the local rows → advertise keys → share
//! keys → charge the local ledger and send the masked vector → sign the survivor list →
//! reveal shares (the reveal log saved first). A refusal before advertising is sent to the
//! coordinator as a decline with its code only.
//!
//! A linked dataset's round (`linked`) reads this partner's side's records instead of
//! aggregating, exchanges signed session keys with the partners on the other side, charges
//! the local ledger, runs the pairwise joins, and then takes part in the secure sum with its
//! pairs' shares plus its noise share.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex as SyncMutex};
use std::time::Duration;

use civic_api::ProblemCode;
use civic_api::round::{Inbox, LinkedMessage, RoundAnnouncement};
use civic_mechanisms::pricing::DEFAULT_CONFIDENCE;
use civic_policies::Rho;
use civic_policies::dataset::DatasetPolicy;
use civic_policies::manifest::{Manifest, approval_message, policy_digest, verify_chain};
use civic_secagg::messages::ClientMessage;
use civic_secagg::{
    ClientRound, IdentityKey, IdentityPublicKey, PartnerId, Requirements, RingVector, Roster,
};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use tokio::sync::Mutex;
use zeroize::Zeroizing;

use crate::config::{AgentConfig, DatasetMapping, SourceConfig};
use crate::decide::{CheckedRound, check_round, check_total, fit_to_round, public_reason};
use crate::decline::DeclineCode;
use crate::error::AgentError;
use crate::evaluate::{Aggregator, CompiledPlan, ScanCounts};
use crate::http::{CallError, CoordinatorClient};
use crate::schema::ColumnReader;
use crate::state::{RoundRecord, RoundStatus, StateFile};

mod linked;

/// How a round ended for this partner.
#[derive(Clone, Debug, PartialEq)]
pub enum RoundOutcome {
    /// Took part to the end.
    Finished,
    /// Refused under the local policy (and told the coordinator).
    Declined(String),
    /// Left part-way (dropped by the coordinator, the round aborted, or an error).
    Abandoned(String),
    /// Already handled earlier (per the journal).
    Skipped,
}

/// A round checked and aggregated, ready to take part in.
struct Prepared {
    dataset: String,
    cost: Rho,
    vector: Vec<i64>,
    requirements: Requirements,
    /// The participants' keys, from the manifest.
    roster: Roster,
    /// This partner's id in the round.
    me: PartnerId,
    /// The question's fingerprint, recorded as answered once the input is sent.
    fingerprint: String,
    /// A linked round's side, records and counterparts; `vector` then holds only the noise
    /// share until the joins add the pairs' shares.
    linked: Option<linked::LinkedPart>,
}

/// One partner's agent.
pub struct Agent {
    config: AgentConfig,
    identity: IdentityKey,
    client: CoordinatorClient,
    state: Mutex<StateFile>,
    policies: SyncMutex<HashMap<(String, i64), Arc<DatasetPolicy>>>,
    /// Inbox polling interval.
    phase_poll: Duration,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("coordinator", &self.client.base())
            .finish_non_exhaustive()
    }
}

impl Agent {
    /// Loads the identity key, the token and the local state named by `config`.
    pub fn new(config: AgentConfig) -> Result<Self, AgentError> {
        let identity = crate::identity::load(&config.identity_key)?;
        let poll = Duration::from_secs_f64(config.coordinator.poll_seconds);
        let client = connect(&config, Duration::from_secs(30))?;
        let state = StateFile::open(&config.state_dir, client.base())?;
        Ok(Self {
            phase_poll: (poll / 10).clamp(Duration::from_millis(20), Duration::from_secs(1)),
            config,
            identity,
            client,
            state: Mutex::new(state),
            policies: SyncMutex::default(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &AgentConfig {
        &self.config
    }

    /// Registers the identity key with the coordinator (accepted again if unchanged; refused
    /// if a different key is registered).
    pub async fn register(&self) -> Result<(), AgentError> {
        let public = hex::encode(self.identity.public().0);
        Ok(self.client.register_identity(&public).await?)
    }

    /// Takes part in every round open now and returns when each has ended for this partner.
    pub async fn once(self: &Arc<Self>) -> Result<Vec<(i64, RoundOutcome)>, AgentError> {
        self.register().await?;
        self.witness_audit_head().await;
        let rounds = self.client.rounds().await?.rounds;
        // The rounds run concurrently, owned by this future: dropping it stops them all.
        let mut tasks = tokio::task::JoinSet::new();
        for ann in rounds {
            let me = Arc::clone(self);
            tasks.spawn(async move { (ann.round_id, me.handle(ann).await) });
        }
        let mut out = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            let (id, outcome) =
                joined.map_err(|e| AgentError::Protocol(format!("a round's task failed: {e}")))?;
            out.push((id, outcome?));
        }
        out.sort_by_key(|(id, _)| *id);
        Ok(out)
    }

    /// Polls for ever, with back-off and jitter after errors; each round runs in its own
    /// task, so a slow one does not hold up the next.
    pub async fn run(self: Arc<Self>) {
        let poll = Duration::from_secs_f64(self.config.coordinator.poll_seconds);
        let max_backoff = Duration::from_secs_f64(self.config.coordinator.max_backoff_seconds);
        let mut backoff = poll;
        let mut active = std::collections::HashSet::new();
        let mut tasks = tokio::task::JoinSet::new();
        let mut registered = false;
        loop {
            while let Some(done) = tasks.try_join_next() {
                if let Ok(id) = done {
                    active.remove(&id);
                }
            }
            let result = async {
                if !registered {
                    self.register().await?;
                    registered = true;
                    tracing::info!(coordinator = self.client.base(), "registered; polling");
                }
                self.witness_audit_head().await;
                self.client.rounds().await.map_err(AgentError::from)
            }
            .await;
            match result {
                Ok(list) => {
                    backoff = poll;
                    for ann in list.rounds {
                        let id = ann.round_id;
                        if !active.insert(id) {
                            continue;
                        }
                        let me = Arc::clone(&self);
                        tasks.spawn(async move {
                            match me.handle(ann).await {
                                Ok(o) => tracing::info!(round = id, outcome = ?o, "round ended"),
                                Err(e) => tracing::warn!(round = id, error = %e, "round failed"),
                            }
                            id
                        });
                    }
                    tokio::time::sleep(jitter(poll)).await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?backoff, "coordinator unavailable");
                    tokio::time::sleep(jitter(backoff)).await;
                    backoff = (backoff * 2).min(max_backoff);
                }
            }
        }
    }

    /// Records the coordinator's published audit head in the journal (for `audit-check`);
    /// problems are logged, never fatal: the head is evidence, not a condition of taking part.
    async fn witness_audit_head(&self) {
        let head = match self.client.audit_head().await {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(error = %AgentError::from(e), "could not read the audit log's head");
                return;
            }
        };
        if let Err(e) = self.state.lock().await.witness(head) {
            tracing::error!(error = %e, "audit log");
        }
    }

    /// Decides one announced round and, if accepted, takes part.
    pub async fn handle(&self, ann: RoundAnnouncement) -> Result<RoundOutcome, AgentError> {
        let id = ann.round_id;
        // Reserved under the state lock before any check: a round listed twice (or handled
        // by two tasks) is taken part in once.
        let known = self.state.lock().await.update(|s| {
            if let Some(record) = s.rounds.get(&id) {
                return Ok(Some(record.clone()));
            }
            s.rounds.insert(
                id,
                RoundRecord {
                    dataset: ann.dataset.clone(),
                    cost_rho_units: 0,
                    status: RoundStatus::Deciding,
                    reveals: None,
                    day: None,
                },
            );
            Ok(None)
        })?;
        if let Some(record) = known {
            if let RoundStatus::Declined { reason } = record.status {
                // Announced again (the coordinator restarted): say no again.
                self.client.decline(id, &reason).await.ok();
            }
            return Ok(RoundOutcome::Skipped);
        }
        let prepared = match self.prepare(&ann).await {
            Ok(p) => p,
            Err(AgentError::Coordinator(e)) => {
                // Not a decision: the coordinator could not be asked. Try again next poll.
                self.state.lock().await.update(|s| {
                    s.rounds.remove(&id);
                    Ok(())
                })?;
                return Err(AgentError::Coordinator(e));
            }
            Err(refusal) => {
                // The coordinator hears only a reason that carries no data; the local log has
                // the whole story.
                let reason = public_reason(&refusal);
                tracing::warn!(round = id, reason = %reason, detail = %refusal, "declining");
                self.journal(id, |r| {
                    r.status = RoundStatus::Declined {
                        reason: reason.clone(),
                    }
                })
                .await?;
                self.client.decline(id, &reason).await?;
                return Ok(RoundOutcome::Declined(reason));
            }
        };
        match self.take_part(&ann, prepared).await {
            Ok(()) => Ok(RoundOutcome::Finished),
            Err(e) => {
                let reason = e.to_string();
                // Left before the vector went: the journal says why. After it went, the
                // entry stays `input_sent` (its cost is charged either way).
                self.journal(id, |r| {
                    if r.status == RoundStatus::Joined {
                        r.status = RoundStatus::Abandoned {
                            reason: reason.clone(),
                        };
                    }
                })
                .await?;
                tracing::warn!(round = id, reason = %reason, "left the round");
                Ok(RoundOutcome::Abandoned(reason))
            }
        }
    }

    /// The policy version a round was compiled under (cached: versions never change).
    async fn policy(&self, dataset: &str, version: i64) -> Result<Arc<DatasetPolicy>, AgentError> {
        let key = (dataset.to_string(), version);
        if let Some(p) = self.policies.lock().ok().and_then(|m| m.get(&key).cloned()) {
            return Ok(p);
        }
        let view = self.client.dataset_version(dataset, version).await?;
        let name = format!("dataset {dataset} version {version}");
        let policy = Arc::new(DatasetPolicy::validate(view.policy, &name).map_err(|e| {
            AgentError::Refused(
                DeclineCode::PolicyInvalid,
                format!("the coordinator's policy is invalid: {e}"),
            )
        })?);
        if let Ok(mut m) = self.policies.lock() {
            m.insert(key, Arc::clone(&policy));
        }
        Ok(policy)
    }

    /// The newest manifest the coordinator serves, verified from this partner's trust
    /// anchor, and never older than one verified before (recorded in the state file).
    async fn manifest(&self) -> Result<Manifest, AgentError> {
        let chain = self.client.manifests().await?.manifests;
        let unverified = |m: String| AgentError::Refused(DeclineCode::ManifestUnverified, m);
        let manifest = verify_chain(&self.config.board.anchor(), &chain)
            .map_err(|e| unverified(e.to_string()))?
            .clone();
        let digest = manifest.digest();
        self.state.lock().await.update(|s| match &s.manifest {
            Some((v, _)) if *v > manifest.version => Err(unverified(format!(
                "the coordinator serves manifest version {} but this agent verified version {v} \
                 before: a rollback",
                manifest.version
            ))),
            Some((v, d)) if *v == manifest.version && *d != digest => Err(unverified(format!(
                "the coordinator serves another manifest as version {v} than this agent \
                 verified before (digest {digest}, not {d})"
            ))),
            _ => {
                s.manifest = Some((manifest.version, digest.clone()));
                Ok(())
            }
        })?;
        Ok(manifest)
    }

    /// Every check before taking part, then the local aggregation.
    async fn prepare(&self, ann: &RoundAnnouncement) -> Result<Prepared, AgentError> {
        use DeclineCode::*;
        let mapping = self.config.dataset(&ann.dataset).ok_or_else(|| {
            AgentError::Refused(
                DatasetNotServed,
                format!("this partner does not serve dataset {}", ann.dataset),
            )
        })?;
        let manifest = self.manifest().await?;
        let policy = self.policy(&ann.dataset, ann.dataset_version).await?;
        let digest = policy_digest(&policy.file);
        if manifest.policy_digest(&ann.dataset) != Some(digest.as_str()) {
            return Err(AgentError::Refused(
                PolicyNotSigned,
                format!(
                    "dataset {} version {} has policy digest {digest}; the board's manifest \
                     (version {}) signs {}",
                    ann.dataset,
                    ann.dataset_version,
                    manifest.version,
                    manifest
                        .policy_digest(&ann.dataset)
                        .unwrap_or("no policy for it")
                ),
            ));
        }
        if let Some(path) = &mapping.policy {
            // Defence in depth: the board's policy as this partner has it must be the one the
            // coordinator compiled the round under.
            let text = std::fs::read_to_string(path).map_err(|e| AgentError::local(path, e))?;
            let local = DatasetPolicy::from_toml(&text, &path.display().to_string())
                .map_err(|e| AgentError::local(path, e))?;
            if local.file != policy.file {
                return Err(AgentError::Refused(
                    PolicyDiffersFromLocalCopy,
                    format!(
                        "the coordinator's policy for {} (version {}) differs from the local copy {}",
                        ann.dataset,
                        ann.dataset_version,
                        path.display()
                    ),
                ));
            }
        }
        let checked = check_round(ann, &policy, &self.config.limits, &manifest.requirements)?;
        let confidence = ann.confidence.unwrap_or(DEFAULT_CONFIDENCE);
        let fingerprint = civic_api::query::fingerprint(
            &ann.dataset,
            ann.dataset_version,
            &ann.query,
            &ann.privacy,
            confidence,
        );
        check_approvals(&manifest, &policy, checked.cost, &fingerprint, ann)?;
        // A training job's rounds answer the same question, one iteration each.
        let fingerprint = match checked.answer_key {
            Some(iteration) => format!("{fingerprint}/iteration {iteration}"),
            None => fingerprint,
        };
        {
            // One lock for the checks and the day's mark: rounds prepared side by side count
            // each other against the daily limit.
            let mut state = self.state.lock().await;
            if state.state.answered.contains(&fingerprint) {
                return Err(AgentError::Refused(
                    AlreadyAnswered,
                    format!(
                        "this partner already sent its input for the same question (fingerprint \
                         {fingerprint}): the coordinator must re-serve that release"
                    ),
                ));
            }
            let most = self
                .config
                .limits
                .max_rounds_per_dataset_per_day
                .unwrap_or(u32::MAX)
                .min(manifest.requirements.max_rounds_per_dataset_per_day);
            if state.joined_on(&ann.dataset, today()) >= most as usize {
                return Err(AgentError::Refused(
                    RoundRateExceeded,
                    format!(
                        "this partner joined {most} rounds on {} today, its most",
                        ann.dataset
                    ),
                ));
            }
            check_total(
                &self.config.limits,
                &ann.dataset,
                state.spent(&ann.dataset),
                checked.round_cost,
            )?;
            state.update(|s| {
                if let Some(r) = s.rounds.get_mut(&ann.round_id) {
                    r.day = Some(today());
                }
                Ok(())
            })?;
        }
        let (roster, me, names) = self.roster(&manifest, &policy, ann).await?;
        // A linked round's vector starts empty: the joins add the pairs' shares to it.
        let (mut vector, linked) = if policy.linkage.is_some() {
            let cells = checked.plan.cells;
            let part = linked::prepare(mapping, &policy, ann, &names, &roster, me, cells).await?;
            (vec![0; checked.plan.vector_len], Some(part))
        } else {
            (
                local_aggregate(ann, mapping, &policy, &checked).await?,
                None,
            )
        };
        add_noise_share(&checked, &mut vector)?;
        Ok(Prepared {
            dataset: ann.dataset.clone(),
            cost: checked.round_cost,
            vector,
            requirements: checked.requirements,
            roster,
            me,
            fingerprint,
            linked,
        })
    }

    /// The round's roster, from the board's manifest: every participant must be a manifest
    /// partner named by the policy, registered at the coordinator with the manifest's key
    /// (one participant per partner), and this partner among them with its own key. Only
    /// the manifest's keys are returned, so every signature in the round is checked against
    /// keys the board signed, never keys the coordinator chose.
    async fn roster(
        &self,
        manifest: &Manifest,
        policy: &DatasetPolicy,
        ann: &RoundAnnouncement,
    ) -> Result<(Roster, PartnerId, BTreeMap<PartnerId, String>), AgentError> {
        let registered = self.client.roster().await?;
        let mine = hex::encode(self.identity.public().0);
        let refuse = |m: String| AgentError::Refused(DeclineCode::ParticipantNotInManifest, m);
        let mut roster = Roster::new();
        let mut names = BTreeMap::new();
        let mut seen = std::collections::BTreeSet::new();
        let mut me = None;
        for &p in &ann.config.participants {
            let key = registered
                .get(&p.0)
                .ok_or_else(|| refuse(format!("participant {p} has no registered key")))?;
            let partner = manifest.partner_with_key(key).ok_or_else(|| {
                refuse(format!(
                    "participant {p}'s key {key} is not a partner key in manifest version {}",
                    manifest.version
                ))
            })?;
            if !policy.partners().contains(&partner.name) {
                return Err(refuse(format!(
                    "participant {p} is manifest partner {}, which does not hold dataset {}",
                    partner.name, ann.dataset
                )));
            }
            if !seen.insert(partner.name.clone()) {
                return Err(refuse(format!(
                    "manifest partner {} takes part twice",
                    partner.name
                )));
            }
            let mut bytes = [0u8; 32];
            hex::decode_to_slice(partner.identity_key.trim(), &mut bytes)
                .map_err(|_| refuse(format!("partner {}'s key is not hex", partner.name)))?;
            if key.eq_ignore_ascii_case(&mine) {
                me = Some(p);
            }
            roster.insert(p, IdentityPublicKey(bytes));
            names.insert(p, partner.name.clone());
        }
        let me = me.ok_or_else(|| {
            AgentError::Refused(
                DeclineCode::NotInvited,
                "the round's participants do not include this partner's identity key".into(),
            )
        })?;
        Ok((roster, me, names))
    }

    async fn take_part(&self, ann: &RoundAnnouncement, mut p: Prepared) -> Result<(), AgentError> {
        let id = ann.round_id;
        let (roster, me) = (p.roster.clone(), p.me);
        let mut rng = ChaCha20Rng::try_from_rng(&mut rand::rngs::SysRng)
            .map_err(|e| AgentError::Protocol(format!("the OS random source failed: {e}")))?;
        let ring = |vector: &[i64]| {
            RingVector::from_signed(ann.config.width, vector).map_err(|e| {
                AgentError::Refused(
                    DeclineCode::ConfigurationMismatch,
                    format!("the local aggregate does not fit the ring: {e}"),
                )
            })
        };
        let linked = p.linked.take();
        let wire = Wire {
            linked: linked.is_some(),
        };
        // A local aggregate is checked against the ring before joining; a linked vector is
        // whole only after the joins.
        let early = match &linked {
            None => Some(ring(&p.vector)?),
            Some(_) => None,
        };
        let (mut round, advert) = ClientRound::start(
            ann.config.clone(),
            me,
            &self.identity,
            roster,
            &p.requirements,
            &mut rng,
        )
        .map_err(|e| AgentError::Refused(DeclineCode::ThresholdTooLow, e.to_string()))?;
        // Journal first: a restart after this point never joins the round again.
        let cost = p.cost.units();
        self.journal(id, |r| {
            r.cost_rho_units = cost;
            r.status = RoundStatus::Joined;
            r.day = Some(today());
        })
        .await?;
        if let Some(part) = linked {
            // Charges the local ledger before anything derived from the data leaves.
            self.join(id, &mut p, part, &mut rng).await?;
        }
        let input = match early {
            Some(input) => input,
            None => ring(&p.vector)?,
        };
        self.post(id, wire, ClientMessage::AdvertiseKeys(advert))
            .await?;
        let keys = self
            .wait(id, |i| match i {
                Inbox::KeyRoster(x) => Some(x),
                _ => None,
            })
            .await?;
        let shares = round.handle_key_roster(&keys, &mut rng).map_err(protocol)?;
        self.post(id, wire, ClientMessage::ShareKeys(shares))
            .await?;
        let forwarded = self
            .wait(id, |i| match i {
                Inbox::ForwardedShares(x) => Some(x),
                _ => None,
            })
            .await?;
        let masked = round
            .handle_forwarded_shares(&forwarded, &input)
            .map_err(protocol)?;
        if !wire.linked {
            // Charge the local ledger before the vector leaves.
            self.charge(id, &p).await?;
        }
        self.post(id, wire, ClientMessage::MaskedInput(masked))
            .await?;
        let list = self
            .wait(id, |i| match i {
                Inbox::SurvivorList(x) => Some(x),
                _ => None,
            })
            .await?;
        let signature = round
            .handle_survivor_list(&list, &self.identity)
            .map_err(protocol)?;
        self.post(id, wire, ClientMessage::ConsistencySignature(signature))
            .await?;
        let signed = self
            .wait(id, |i| match i {
                Inbox::SignedSurvivors(x) => Some(x),
                _ => None,
            })
            .await?;
        let reveal = round.handle_signed_survivors(&signed).map_err(protocol)?;
        for dealer in &reveal.refuted {
            tracing::warn!(
                round = id,
                %dealer,
                "partner {dealer} dealt this partner a share its own signed commitments refute; \
                 it is not revealed, and the reveal names partner {dealer} to the coordinator"
            );
        }
        let log = round.reveal_log().clone();
        self.journal(id, |r| r.reveals = Some(log)).await?;
        match self
            .post(id, wire, ClientMessage::UnmaskingShares(reveal))
            .await
        {
            Ok(()) => {}
            // The round closed before this post landed: a retry whose first attempt was
            // taken, or shares the coordinator no longer needed. This partner's part is done.
            Err(CallError::Refused {
                code: Some(ProblemCode::RoundFinished),
                ..
            }) => {
                tracing::info!(
                    round = id,
                    "the round finished as the unmasking shares went"
                );
            }
            Err(e) => return Err(e.into()),
        }
        self.journal(id, |r| r.status = RoundStatus::Finished).await
    }

    /// Charges this partner's ledger for round `id`'s question, checking the total again
    /// under the lock (another round of the same dataset may have been charged meanwhile),
    /// and marks the question answered and the input sent.
    async fn charge(&self, id: i64, p: &Prepared) -> Result<(), AgentError> {
        let limits = &self.config.limits;
        self.state.lock().await.update(|s| {
            // Two rounds of one question prepared side by side: only the first input leaves.
            if s.answered.contains(&p.fingerprint) {
                return Err(AgentError::Refused(
                    DeclineCode::AlreadyAnswered,
                    format!(
                        "another round sent this partner's input for the same question \
                         (fingerprint {}) first",
                        p.fingerprint
                    ),
                ));
            }
            let before = Rho::from_units(s.spent.get(&p.dataset).copied().unwrap_or(0));
            check_total(limits, &p.dataset, before, p.cost)?;
            let spent = s.spent.entry(p.dataset.clone()).or_insert(0);
            *spent = spent.saturating_add(p.cost.units());
            s.answered.insert(p.fingerprint.clone());
            if let Some(r) = s.rounds.get_mut(&id) {
                r.status = RoundStatus::InputSent;
            }
            Ok(())
        })
    }

    /// Posts a secure-sum message, wrapped as a linked round takes it.
    async fn post(&self, id: i64, wire: Wire, message: ClientMessage) -> Result<(), CallError> {
        if wire.linked {
            self.client
                .post_as(id, &LinkedMessage::SecAgg(message))
                .await
        } else {
            self.client.post(id, &message).await
        }
    }

    /// Polls the inbox until the coordinator has closed the phase this partner waits on,
    /// and returns what `pick` takes from it.
    async fn wait<T>(&self, id: i64, pick: fn(Inbox) -> Option<T>) -> Result<T, AgentError> {
        let give_up = std::time::Instant::now() + Duration::from_secs(3600);
        loop {
            if let Some(wanted) = pick(self.client.inbox(id).await?) {
                return Ok(wanted);
            }
            if std::time::Instant::now() > give_up {
                return Err(AgentError::Coordinator(format!(
                    "round {id} made no progress for an hour"
                )));
            }
            tokio::time::sleep(self.phase_poll).await;
        }
    }

    /// Changes this partner's journal entry for round `id` (saved before returning).
    async fn journal(
        &self,
        id: i64,
        change: impl FnOnce(&mut RoundRecord),
    ) -> Result<(), AgentError> {
        self.state.lock().await.update(|s| {
            if let Some(r) = s.rounds.get_mut(&id) {
                change(r);
            }
            Ok(())
        })
    }
}

/// This partner's local aggregate of a round's plan, fitted to the round's ring.
async fn local_aggregate(
    ann: &RoundAnnouncement,
    mapping: &DatasetMapping,
    policy: &DatasetPolicy,
    checked: &CheckedRound,
) -> Result<Vec<i64>, AgentError> {
    if let Some(sgd) = &checked.compiled.sgd {
        // A DP-SGD round: the partner's own trainer, checked; its refusals are declines.
        let iteration = checked.answer_key.unwrap_or(0);
        let rows = checked.compiled.rows_per_resident;
        let vector = crate::trainer::gradient_sum(mapping, sgd, iteration, rows).await?;
        let (vector, _) = fit_to_round(vector, checked.plan.max_slot_per_partner);
        tracing::info!(round = ann.round_id, trainer = %sgd.trainer, "trainer's gradient sum checked");
        return Ok(vector);
    }
    let (vector, counts) = aggregate(mapping, policy, &checked.compiled).await?;
    tracing::info!(
        round = ann.round_id,
        rows = counts.rows,
        aggregated = counts.aggregated,
        truncated = counts.truncated,
        "aggregated locally"
    );
    let (vector, clamped) = fit_to_round(vector, checked.plan.max_slot_per_partner);
    if clamped > 0 || counts.aggregated > ann.max_rows_per_partner {
        // Never a refusal: whether this partner takes part must not depend on its data.
        tracing::warn!(
            round = ann.round_id,
            aggregated = counts.aggregated,
            bound = ann.max_rows_per_partner,
            clamped,
            "the extract holds more rows than the round's public bound per partner; \
             the slots beyond what the ring was sized for are clamped, so this release \
             is biased: raise the coordinator's max_rows_per_partner"
        );
    }
    Ok(vector)
}

/// How a round's secure-sum messages travel: as they are, or wrapped in a linked round's.
#[derive(Clone, Copy)]
struct Wire {
    linked: bool,
}

/// Adds this partner's share of distributed noise to `vector`, from its own OS-seeded
/// generator: the coordinator only ever unmasks a noisy sum.
fn add_noise_share(checked: &CheckedRound, vector: &mut [i64]) -> Result<(), AgentError> {
    let mut rng = ChaCha20Rng::try_from_rng(&mut rand::rngs::SysRng)
        .map_err(|e| AgentError::Protocol(format!("the OS random source failed: {e}")))?;
    checked
        .noise
        .add_noise_shares(&checked.plan, vector, &mut rng)
        .map_err(|e| AgentError::Protocol(format!("adding the noise share: {e}")))
}

/// A query whose cost needs the board's approval must carry valid signatures over its
/// fingerprint from enough distinct members of the manifest's board.
fn check_approvals(
    manifest: &Manifest,
    policy: &DatasetPolicy,
    cost: Rho,
    fingerprint: &str,
    ann: &RoundAnnouncement,
) -> Result<(), AgentError> {
    let needed = manifest.approvals_needed(policy.approvals_needed(cost));
    if needed == 0 {
        return Ok(());
    }
    let valid = manifest
        .board
        .valid_signers(&approval_message(fingerprint), &ann.approvals);
    if valid < needed as usize {
        return Err(AgentError::Refused(
            DeclineCode::ApprovalMissing,
            format!(
                "the query (fingerprint {fingerprint}) costs ρ = {cost} and needs {needed} board \
                 approvals; it carries {valid} valid signature(s) of manifest version {}'s board",
                manifest.version
            ),
        ));
    }
    Ok(())
}

/// Today, UTC, as days since 1970-01-01.
fn today() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 86_400)
}

fn protocol(e: civic_secagg::SecAggError) -> AgentError {
    AgentError::Protocol(e.to_string())
}

fn jitter(d: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|t| t.subsec_nanos())
        .unwrap_or(0);
    // ±20%, from the clock's low bits: spreads agents' polls without another RNG.
    let factor = 0.8 + 0.4 * f64::from(nanos % 1000) / 1000.0;
    d.mul_f64(factor)
}

/// A client for the configured coordinator, with the token and any extra CA; calls retry on
/// unavailability for `retry_for`.
pub fn connect(config: &AgentConfig, retry_for: Duration) -> Result<CoordinatorClient, AgentError> {
    let token = read_token(config)?;
    let ca = match &config.coordinator.ca_certificate {
        Some(p) => Some(std::fs::read(p).map_err(|e| AgentError::local(p, e))?),
        None => None,
    };
    CoordinatorClient::new(&config.coordinator.url, token, ca.as_deref(), retry_for)
}

fn read_token(config: &AgentConfig) -> Result<Zeroizing<String>, AgentError> {
    if let Ok(t) = std::env::var("CIVIC_AGENT_TOKEN") {
        return Ok(Zeroizing::new(t.trim().to_string()));
    }
    let path: &PathBuf =
        config
            .coordinator
            .token_file
            .as_ref()
            .ok_or_else(|| AgentError::Config {
                file: "partner.toml".into(),
                field: "coordinator.token_file".into(),
                reason: "set token_file (or the CIVIC_AGENT_TOKEN environment variable)".into(),
            })?;
    crate::identity::refuse_if_shared(path, "token")?;
    let text = Zeroizing::new(
        std::fs::read_to_string(path)
            .map_err(|e| AgentError::local(path, format!("cannot read the token: {e}")))?,
    );
    Ok(Zeroizing::new(text.trim().to_string()))
}

/// The readers for the plan's columns, in slot order, from the dataset mapping.
pub fn readers(
    mapping: &DatasetMapping,
    policy: &DatasetPolicy,
    columns: &[String],
) -> Result<Vec<ColumnReader>, AgentError> {
    columns
        .iter()
        .map(|name| {
            let column = policy.column(name).cloned().ok_or_else(|| {
                AgentError::Refused(
                    DeclineCode::QueryInvalid,
                    format!("the policy has no column {name}"),
                )
            })?;
            mapping
                .columns
                .get(name)
                .ok_or_else(|| "the query needs this federated column and it is not mapped".into())
                .and_then(|m| m.reader(column))
                .map_err(|reason| AgentError::Config {
                    file: "partner.toml".into(),
                    field: format!("datasets ({}).columns.{name}", mapping.id),
                    reason,
                })
        })
        .collect()
}

/// Evaluates the plan over the dataset's rows: pushed down as SQL where configured,
/// otherwise streamed through [`Aggregator`].
pub async fn aggregate(
    mapping: &DatasetMapping,
    policy: &DatasetPolicy,
    compiled: &CompiledPlan,
) -> Result<(Vec<i64>, ScanCounts), AgentError> {
    let readers = readers(mapping, policy, &compiled.columns)?;
    // A training round's contributions are computed row by row here, never in SQL.
    if mapping.pushdown && !compiled.trains() {
        return pushdown(mapping, compiled, &readers).await;
    }
    let mut aggregator = Aggregator::new(compiled);
    let mode = crate::source::ScanMode::Strict;
    crate::source::scan(mapping, &readers, mode, &mut |cells, resident, _| {
        aggregator.push(cells, resident)
    })
    .await?;
    Ok(aggregator.finish())
}

async fn pushdown(
    mapping: &DatasetMapping,
    compiled: &CompiledPlan,
    readers: &[ColumnReader],
) -> Result<(Vec<i64>, ScanCounts), AgentError> {
    use crate::pushdown::{Dialect, build, run_postgres, run_sqlite};
    let name = crate::source::source_name(&mapping.source);
    let err = |reason: String| AgentError::Source {
        source_name: name.clone(),
        reason,
    };
    let resident = mapping.resident_column.as_deref();
    let order = mapping.order_by.as_deref();
    let (vector, aggregated) = match &mapping.source {
        SourceConfig::Sqlite { path, table } => {
            let q =
                build(compiled, readers, table, resident, order, Dialect::Sqlite).map_err(&err)?;
            let pool = crate::source::open_sqlite(path).await?;
            let out = run_sqlite(&pool, &q, compiled).await.map_err(&err);
            pool.close().await;
            out?
        }
        SourceConfig::Postgres { url, table } => {
            let q = build(compiled, readers, table, resident, order, Dialect::Postgres)
                .map_err(&err)?;
            let pool = crate::source::open_postgres(url, table).await?;
            let out = run_postgres(&pool, &q, compiled).await.map_err(&err);
            pool.close().await;
            out?
        }
        SourceConfig::Csv { .. } => return Err(err("pushdown needs a SQL source".into())),
    };
    let counts = ScanCounts {
        aggregated,
        ..ScanCounts::default()
    };
    Ok((vector, counts))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_unreachable_coordinator_is_named() {
        let client = CoordinatorClient::new(
            "http://127.0.0.1:9",
            Zeroizing::new("t".into()),
            None,
            Duration::from_millis(100),
        )
        .unwrap();
        let e = AgentError::from(client.rounds().await.unwrap_err()).to_string();
        assert!(e.contains("http://127.0.0.1:9 unreachable"), "{e}");
    }
}
