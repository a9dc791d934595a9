//! A query's life, as pure transitions: how a submission is admitted and its cost reserved,
//! how board decisions move it, how it becomes a round, and where its budget is charged or
//! refunded. No I/O: the services load what a transition needs, call it, persist what it
//! returns (the new state, the ledger and its entry) in one transaction, and respond.
//!
//! ```text
//!  submit ──┬── an identical release exists ───────────────────────────→ released (re-served, free)
//!           ├── refused: over a cap, an identical query in flight ─────→ (nothing stored)
//!           └── cost reserved ─┬── needs approval → awaiting_approval ─┬─ approvals → running
//!                              │                                        └─ a rejection → rejected (refunded)
//!                              └── running: one or more rounds ─┬─ released (charged, then sampled once)
//!                                                               └─ aborted (refunded)
//! ```
//!
//! The reservation is the calibrated plan priced at submission (`civic_mechanisms::pricing`)
//! and stored with the query; the release samples from that stored plan and charges exactly
//! the reservation, so what was reserved is what is charged.

use std::collections::{BTreeMap, BTreeSet};

use civic_api::query::{QueryRequest, QueryState};
use civic_mechanisms::Priced;
use civic_policies::budget::{Held, LedgerEntry, QueryBudget};
use civic_policies::linkage::LinkedShape;
use civic_policies::manifest::{Manifest, policy_digest};
use civic_policies::{DatasetPolicy, Ledger, PolicyError, Query};
use civic_secagg::{
    GraphKind, IdentityPublicKey, PartnerId, Roster, RoundConfig, RoundId, SecAggError, Tolerances,
    Width,
};

use crate::store::RoundSetup;

/// Above this many partners a round uses the sparse (Harary) graph.
pub const COMPLETE_GRAPH_MAX: usize = 100;

/// Why a transition is refused. Nothing changed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum LifecycleError {
    /// An identical question is already waiting or running.
    #[error(
        "an identical query ({other}) is already {}; once it is released, submitting again re-serves its result at no cost (GET /v1/queries/{other})",
        state.as_str()
    )]
    IdenticalInFlight {
        /// The other query.
        other: i64,
        /// Its state.
        state: QueryState,
    },
    /// An identical question is waiting or running for another project: its id is that
    /// project's business, so it is not named.
    #[error(
        "an identical question is already being answered for another project; once it is released, submitting again re-serves its result at no cost"
    )]
    IdenticalInFlightElsewhere,
    /// A decision on a query that is not awaiting one.
    #[error("query {query} is {}, not awaiting approval", state.as_str())]
    NotAwaitingApproval {
        /// The query.
        query: i64,
        /// Its state.
        state: QueryState,
    },
    /// A board member deciding twice.
    #[error("{member} has already decided on query {query}")]
    AlreadyDecided {
        /// The query.
        query: i64,
        /// The member.
        member: String,
    },
    /// A round outcome for a query that is not running.
    #[error("query {query} is {}, not running", state.as_str())]
    NotRunning {
        /// The query.
        query: i64,
        /// Its state.
        state: QueryState,
    },
    /// A query with a cost and no reservation in the ledger.
    #[error("query {query} has no reservation in the ledger")]
    NoReservation {
        /// The query.
        query: i64,
    },
    /// The ledger refused.
    #[error(transparent)]
    Budget(#[from] PolicyError),
    /// A dataset's partner with no account here.
    #[error(
        "dataset {dataset} lists partner {partner:?}, which has no account on this coordinator"
    )]
    PartnerUnknown {
        /// The dataset.
        dataset: String,
        /// The partner.
        partner: String,
    },
    /// A linked query's join step would post more than the coordinator's message limit.
    #[error(
        "a partner in this linked query's joins would post about {} MB in one step (its side's \
         padded list for each partner on the other side), above this coordinator's limit of {} \
         MB (binary_limit): the coordinator's operator can raise binary_limit, or the board can \
         lower the sides' capacities",
        bytes / 1_000_000 + 1,
        limit / 1_000_000
    )]
    LinkedPostTooLarge {
        /// The largest post.
        bytes: u64,
        /// The limit.
        limit: u64,
    },
    /// A dataset's partner the board's manifest does not back as registered.
    #[error(
        "partner {partner:?} {why}; agents take part only with the manifest's partners and keys"
    )]
    PartnerNotInManifest {
        /// The partner.
        partner: String,
        /// What is wrong.
        why: &'static str,
    },
    /// A policy version the board's manifest does not sign.
    #[error(
        "dataset {dataset}'s policy (digest {digest}) is not the one the board's newest manifest signs; \
         publish a manifest naming it, or upload the signed policy"
    )]
    PolicyNotInManifest {
        /// The dataset.
        dataset: String,
        /// The policy's digest.
        digest: String,
    },
    /// A partner that has not registered its identity key.
    #[error(
        "partner {partner:?} has not registered its identity key yet (civic-agent keygen, then PUT /v1/partner/identity); no round can start without it"
    )]
    PartnerUnregistered {
        /// The partner.
        partner: String,
    },
    /// The round's configuration is not valid (a ring too narrow, thresholds).
    #[error(transparent)]
    Round(#[from] SecAggError),
}

/// The request's fingerprint ([`civic_api::query::fingerprint`]).
pub fn fingerprint(dataset: &str, version: i64, request: &QueryRequest, confidence: f64) -> String {
    civic_api::query::fingerprint(
        dataset,
        version,
        &request.query,
        &request.privacy,
        confidence,
    )
}

/// What a submission finds when it arrives.
#[derive(Clone, Copy, Debug)]
pub struct Submission {
    /// Board approvals its cost needs.
    pub approvals_required: u32,
    /// A release of the same question, if one exists.
    pub released: Option<i64>,
    /// A query asking the same question that is waiting or running, if any, and whether it
    /// is the submitting project's own.
    pub in_flight: Option<(i64, QueryState, bool)>,
}

/// How a submission is admitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Answered from an existing release, at no cost.
    Reuse {
        /// The release.
        release: i64,
    },
    /// Its cost is to be reserved ([`reserve`]); it then waits for approval or runs.
    Reserve {
        /// `AwaitingApproval` or `Running`.
        state: QueryState,
    },
}

/// Admits a submission: re-served if its question was released, refused if the same
/// question is waiting or running, otherwise to be reserved.
pub fn admit(s: Submission) -> Result<Admission, LifecycleError> {
    if let Some(release) = s.released {
        return Ok(Admission::Reuse { release });
    }
    match s.in_flight {
        Some((other, state, true)) => {
            return Err(LifecycleError::IdenticalInFlight { other, state });
        }
        Some((_, _, false)) => return Err(LifecycleError::IdenticalInFlightElsewhere),
        None => {}
    }
    Ok(Admission::Reserve {
        state: if s.approvals_required == 0 {
            QueryState::Running
        } else {
            QueryState::AwaitingApproval
        },
    })
}

/// Reserves an admitted query's cost, as priced, against the per-query cap, the project's
/// allocation and the dataset total, in one step.
pub fn reserve(
    ledger: &mut Ledger,
    query: i64,
    project: &str,
    priced: &Priced,
) -> Result<(Held, LedgerEntry), LifecycleError> {
    Ok(ledger.reserve(query as u64, project, priced.cost.rho)?)
}

/// A query as a decision or a round outcome finds it.
#[derive(Clone, Copy, Debug)]
pub struct Current {
    /// The query.
    pub id: i64,
    /// Its state.
    pub state: QueryState,
    /// Approvals it needs.
    pub approvals_required: u32,
}

/// What a board member's decision did.
#[derive(Clone, Debug, PartialEq)]
pub enum Decided {
    /// An approval, with more still needed.
    Approved {
        /// Distinct members who have approved.
        approvals: usize,
    },
    /// The last approval needed: the query runs.
    Runs {
        /// Distinct members who have approved.
        approvals: usize,
    },
    /// A rejection: the query ends and its reservation is refunded.
    Rejected {
        /// The refunded reservation.
        held: Held,
        /// The ledger entry to append.
        entry: LedgerEntry,
    },
}

impl Decided {
    /// The state the query is in after the decision.
    pub fn state(&self) -> QueryState {
        match self {
            Decided::Approved { .. } => QueryState::AwaitingApproval,
            Decided::Runs { .. } => QueryState::Running,
            Decided::Rejected { .. } => QueryState::Rejected,
        }
    }
}

/// A decision by `member`. `first_by_member` says whether this member had not decided
/// before; `approvals` counts distinct approving members including this decision.
pub fn decide(
    query: Current,
    member: &str,
    first_by_member: bool,
    approve: bool,
    approvals: usize,
    ledger: &mut Ledger,
    held: Option<&Held>,
) -> Result<Decided, LifecycleError> {
    if query.state != QueryState::AwaitingApproval {
        return Err(LifecycleError::NotAwaitingApproval {
            query: query.id,
            state: query.state,
        });
    }
    if !first_by_member {
        return Err(LifecycleError::AlreadyDecided {
            query: query.id,
            member: member.to_string(),
        });
    }
    if !approve {
        let held = held.ok_or(LifecycleError::NoReservation { query: query.id })?;
        let (held, entry) = ledger.refund(held)?;
        return Ok(Decided::Rejected { held, entry });
    }
    Ok(if approvals as u32 >= query.approvals_required {
        Decided::Runs { approvals }
    } else {
        Decided::Approved { approvals }
    })
}

/// The charge a release makes, before its value leaves the coordinator: the reservation
/// becomes a charge, in full. Only a running query is released.
pub fn charge(
    query: Current,
    ledger: &mut Ledger,
    held: Option<&Held>,
) -> Result<(Held, LedgerEntry), LifecycleError> {
    if query.state != QueryState::Running {
        return Err(LifecycleError::NotRunning {
            query: query.id,
            state: query.state,
        });
    }
    let held = held.ok_or(LifecycleError::NoReservation { query: query.id })?;
    Ok(ledger.charge(held)?)
}

/// The charge one round of a running training job makes before its iterate leaves the
/// coordinator (announced to the partners for the next round): `amount` of the reservation.
pub fn charge_round(
    query: Current,
    ledger: &mut Ledger,
    held: Option<&Held>,
    amount: civic_policies::Rho,
) -> Result<(Held, LedgerEntry), LifecycleError> {
    if query.state != QueryState::Running {
        return Err(LifecycleError::NotRunning {
            query: query.id,
            state: query.state,
        });
    }
    let held = held.ok_or(LifecycleError::NoReservation { query: query.id })?;
    Ok(ledger.charge_part(held, amount)?)
}

/// What aborting a query's round does to the query: a running query ends aborted and its
/// reservation is refunded; a query in any other state (released by another round, aborted
/// already) is left as it is.
pub fn abort(
    query: Current,
    ledger: &mut Ledger,
    held: Option<&Held>,
) -> Result<Option<(Held, LedgerEntry)>, LifecycleError> {
    if query.state != QueryState::Running {
        return Ok(None);
    }
    match held {
        Some(h)
            if matches!(
                h.state,
                QueryBudget::Reserved(_) | QueryBudget::PartlyCharged { .. }
            ) =>
        {
            Ok(Some(ledger.refund(h)?))
        }
        // A running query whose reservation was settled cannot be refunded again.
        Some(h) => Err(PolicyError::Ledger {
            query: h.query,
            reason: "is running but its reservation is already settled".into(),
        }
        .into()),
        None => Err(LifecycleError::NoReservation { query: query.id }),
    }
}

/// A partner of a dataset as the store knows it.
#[derive(Clone, Debug)]
pub struct Partner {
    /// Its name in policies.
    pub name: String,
    /// Its id in rounds.
    pub id: PartnerId,
    /// Its registered identity key.
    pub identity_key: Option<[u8; 32]>,
}

/// The coordinator's settings a round is configured with.
#[derive(Clone, Copy, Debug)]
pub struct RoundSettings {
    /// The public bound on rows per partner (sizes the ring).
    pub max_rows_per_partner: u64,
    /// Dropouts each round must survive.
    pub max_dropout_rate: f64,
    /// Colluding partners each round must withstand.
    pub max_corrupt_fraction: f64,
}

/// The partners a query's round runs among: every partner of the dataset; for a linked
/// dataset, the partners of the two sides the query joins.
pub fn round_partners(policy: &DatasetPolicy, query: &Query) -> Result<Vec<String>, String> {
    if policy.linkage.is_none() {
        return Ok(policy.partners().to_vec());
    }
    let validated = query.clone().validate(policy).map_err(|e| e.to_string())?;
    let shape = LinkedShape::of(&validated, policy).map_err(|e| e.to_string())?;
    Ok(shape
        .holder
        .partners
        .iter()
        .chain(&shape.matcher.partners)
        .cloned()
        .collect())
}

/// What a linked release's receipt says of its joins: the two sides, the pairs joined and
/// the pairs dropped (a partner that missed a join step drops its pairs, and the table
/// lacks their residents), by partner name; and the charge for the matching partners'
/// noisy match counts. `pairs` are the joined pairs' ids, in either order; `names` maps ids
/// to names.
pub fn linkage_receipt(
    policy: &DatasetPolicy,
    query: &Query,
    names: &BTreeMap<PartnerId, String>,
    pairs: &[(PartnerId, PartnerId)],
    match_counts_rho: f64,
) -> Result<serde_json::Value, String> {
    let validated = query.clone().validate(policy).map_err(|e| e.to_string())?;
    let shape = LinkedShape::of(&validated, policy).map_err(|e| e.to_string())?;
    let name = |id: &PartnerId| names.get(id).cloned().unwrap_or_else(|| id.to_string());
    let joined: BTreeSet<(String, String)> = pairs
        .iter()
        .map(|(a, b)| match shape.holder.partners.contains(&name(a)) {
            true => (name(a), name(b)),
            false => (name(b), name(a)),
        })
        .collect();
    let dropped: Vec<[&String; 2]> = shape
        .holder
        .partners
        .iter()
        .flat_map(|h| shape.matcher.partners.iter().map(move |m| (h, m)))
        .filter(|(h, m)| !joined.contains(&((*h).clone(), (*m).clone())))
        .map(|(h, m)| [h, m])
        .collect();
    Ok(serde_json::json!({
        "holder_side": shape.holder.kind,
        "matcher_side": shape.matcher.kind,
        "pairs_joined": joined.iter().map(|(h, m)| [h, m]).collect::<Vec<_>>(),
        "pairs_dropped": dropped,
        "match_counts_rho": match_counts_rho,
        "note": if dropped.is_empty() {
            "every pair of partners joined"
        } else {
            "the residents held by a dropped pair are not in the table"
        },
    }))
}

/// Refuses a linked query whose joins would post more in one step than `binary_limit`
/// bytes (a partner's offers: its padded list for each partner on the other side).
pub fn check_linked_posts(
    policy: &DatasetPolicy,
    query: &Query,
    binary_limit: usize,
) -> Result<(), LifecycleError> {
    let Some(linkage) = &policy.linkage else {
        return Ok(());
    };
    let shape = query
        .clone()
        .validate(policy)
        .ok()
        .and_then(|v| LinkedShape::of(&v, policy).ok());
    let Some(shape) = shape else {
        // Pricing refuses such a query first, with its reason.
        return Ok(());
    };
    let bytes = civic_linkage::federation::largest_post(&shape, linkage.match_counts.as_f64())
        .unwrap_or(u64::MAX);
    let limit = binary_limit as u64;
    if bytes > limit {
        return Err(LifecycleError::LinkedPostTooLarge { bytes, limit });
    }
    Ok(())
}

/// How a query becomes a round: the partners `names` ([`round_partners`]), each with its
/// registered identity key, take part; the ring is sized for the plan's largest sum over all
/// of them (for a linked dataset, the full 2⁶⁴ its pairs' shares add up in); the graph is
/// complete up to [`COMPLETE_GRAPH_MAX`] partners and sparse above. Checked at submission
/// too, so that a query that could never run is refused before anything is reserved.
pub fn round_setup(
    round: i64,
    policy: &DatasetPolicy,
    names: &[String],
    priced: &Priced,
    partners: &[Partner],
    settings: RoundSettings,
    manifest: Option<&Manifest>,
) -> Result<RoundSetup, LifecycleError> {
    if let Some(m) = manifest {
        let digest = policy_digest(&policy.file);
        if m.policy_digest(policy.id()) != Some(digest.as_str()) {
            return Err(LifecycleError::PolicyNotInManifest {
                dataset: policy.id().to_string(),
                digest,
            });
        }
    }
    let mut participants = Vec::new();
    let mut roster = Roster::new();
    for name in names {
        let partner = partners.iter().find(|p| &p.name == name).ok_or_else(|| {
            LifecycleError::PartnerUnknown {
                dataset: policy.id().to_string(),
                partner: name.clone(),
            }
        })?;
        let key = partner
            .identity_key
            .ok_or_else(|| LifecycleError::PartnerUnregistered {
                partner: name.clone(),
            })?;
        if let Some(m) = manifest {
            let listed = m.partners.iter().find(|p| &p.name == name).ok_or_else(|| {
                LifecycleError::PartnerNotInManifest {
                    partner: name.clone(),
                    why: "is not in the board's manifest",
                }
            })?;
            if !listed.identity_key.eq_ignore_ascii_case(&hex::encode(key)) {
                return Err(LifecycleError::PartnerNotInManifest {
                    partner: name.clone(),
                    why: "registered another identity key than the board's manifest lists",
                });
            }
        }
        participants.push(partner.id);
        roster.insert(partner.id, IdentityPublicKey(key));
    }
    let n = participants.len();
    let needed = Width::for_layout(
        priced.plan.max_slot_per_partner,
        n,
        priced.release_plan.noise_tail(&priced.plan),
    )?;
    let width = match policy.linkage {
        // A pair's two shares add up only mod 2⁶⁴ (the matcher's is minus a mask over the
        // whole plaintext): the sum and its noise must still fit, as checked above.
        Some(_) => Width::W64,
        None => needed,
    };
    let config = round_config(
        round,
        participants,
        priced.plan.vector_len,
        width,
        policy,
        settings,
        manifest,
    )?;
    Ok(RoundSetup {
        config,
        roster,
        max_rows_per_partner: settings.max_rows_per_partner,
    })
}

/// The configuration of a round among `participants` (the graph, the threshold for the
/// settings' tolerances raised to the board's colluders, the survivor floor).
fn round_config(
    round: i64,
    participants: Vec<PartnerId>,
    vector_len: usize,
    width: Width,
    policy: &DatasetPolicy,
    settings: RoundSettings,
    manifest: Option<&Manifest>,
) -> Result<RoundConfig, LifecycleError> {
    let n = participants.len();
    let graph = if n > COMPLETE_GRAPH_MAX {
        GraphKind::Sparse
    } else {
        GraphKind::Complete
    };
    let requirements = manifest.map(|m| m.requirements);
    // More than the partners (a manifest asking for more survivors than a dataset has) is
    // refused by `RoundConfig::new`, naming both.
    let min_survivors =
        (policy.min_partners() as usize).max(requirements.map_or(0, |r| r.min_survivors));
    let mut config = RoundConfig::new(
        RoundId(round as u64),
        participants,
        vector_len,
        width,
        graph,
        Tolerances {
            max_dropout_rate: settings.max_dropout_rate,
            max_corrupt_fraction: settings.max_corrupt_fraction,
        },
        min_survivors,
    )?;
    if let Some(r) = requirements {
        // The board may ask for more colluders than the coordinator's fraction gives:
        // 2t > holders + c.
        let holders = config.topology.holders_per_partner(n)?;
        config.threshold = config.threshold.max(civic_secagg::graph::strict_majority(
            holders + r.tolerated_colluders,
        ));
        config.validate()?;
    }
    Ok(config)
}

/// The honest contributors a round of `policy` will guarantee (see
/// `RoundConfig::honest_contributors`), before the round exists: what distributed noise is
/// priced for at preview and submission. The same configuration [`round_setup`] builds.
pub fn honest_contributors(
    policy: &DatasetPolicy,
    partners: usize,
    settings: RoundSettings,
    manifest: Option<&Manifest>,
) -> Result<usize, LifecycleError> {
    let participants = (1..=partners as u32).map(PartnerId).collect();
    let config = round_config(0, participants, 1, Width::W64, policy, settings, manifest)?;
    Ok(config.honest_contributors(board_colluders(manifest)))
}

/// The colluders the board's manifest asks every round to withstand (one without a manifest).
pub fn board_colluders(manifest: Option<&Manifest>) -> usize {
    manifest.map_or(1, |m| m.requirements.tolerated_colluders)
}

#[cfg(test)]
mod tests {
    use super::*;
    use civic_mechanisms::PricingContext;
    use civic_policies::Rho;
    use civic_policies::samples::diabetes_central as diabetes;

    fn priced(epsilon: f64) -> Priced {
        let query = serde_json::from_value(serde_json::json!({
            "dataset": "diabetes", "statistic": "count"
        }))
        .unwrap();
        civic_mechanisms::price(
            &diabetes(),
            &query,
            civic_policies::PrivacyRequest::Epsilon(epsilon),
            None,
            PricingContext {
                max_rows_per_partner: 10_000,
                reporting_delta: 1e-6,
                board_floor: civic_policies::Rho::ZERO,
                honest_survivors: 2,
            },
        )
        .unwrap()
    }

    fn ledger() -> Ledger {
        let policy = diabetes();
        let mut l = Ledger::new("diabetes", policy.total, policy.per_query);
        l.allocate("p", policy.total).unwrap();
        l
    }

    fn submission(approvals_required: u32) -> Submission {
        Submission {
            approvals_required,
            released: None,
            in_flight: None,
        }
    }

    /// Admits and reserves query 1 for project "p".
    fn reserved(l: &mut Ledger, p: &Priced, approvals_required: u32) -> (QueryState, Held) {
        let Admission::Reserve { state } = admit(submission(approvals_required)).unwrap() else {
            panic!("not reserved")
        };
        let (held, _) = reserve(l, 1, "p", p).unwrap();
        (state, held)
    }

    fn current(state: QueryState, approvals_required: u32) -> Current {
        Current {
            id: 1,
            state,
            approvals_required,
        }
    }

    #[test]
    fn a_submission_is_reserved_and_runs_or_waits_for_approval() {
        let p = priced(0.3);
        let mut l = ledger();
        let (state, held) = reserved(&mut l, &p, 0);
        assert_eq!(state, QueryState::Running);
        assert_eq!(held.state, QueryBudget::Reserved(p.cost.rho));
        assert_eq!(l.used(), p.cost.rho);
        let Admission::Reserve { state } = admit(submission(2)).unwrap() else {
            panic!("not reserved")
        };
        assert_eq!(state, QueryState::AwaitingApproval);
    }

    #[test]
    fn a_released_question_is_re_served_free_and_one_in_flight_is_refused() {
        let mut s = submission(0);
        s.released = Some(9);
        assert_eq!(admit(s).unwrap(), Admission::Reuse { release: 9 });
        s.released = None;
        s.in_flight = Some((4, QueryState::Running, true));
        let e = admit(s).unwrap_err();
        assert!(
            e.to_string()
                .contains("identical query (4) is already running"),
            "{e}"
        );
        // Another project's query is not named.
        s.in_flight = Some((4, QueryState::Running, false));
        let e = admit(s).unwrap_err().to_string();
        assert!(e.contains("another project") && !e.contains('4'), "{e}");
    }

    #[test]
    fn a_reservation_over_a_cap_is_refused_and_changes_nothing() {
        let p = priced(0.3);
        let policy = diabetes();
        let mut l = Ledger::new("diabetes", policy.total, policy.per_query);
        l.allocate("p", Rho::from_units(p.cost.rho.units() - 1))
            .unwrap();
        let before = l.clone();
        let e = reserve(&mut l, 1, "p", &p).unwrap_err();
        assert!(
            matches!(e, LifecycleError::Budget(PolicyError::OverBudget { .. })),
            "{e}"
        );
        assert_eq!(l, before);
    }

    #[test]
    fn approvals_count_distinct_members_and_a_rejection_refunds() {
        let p = priced(0.3);
        let mut l = ledger();
        let (_, held) = reserved(&mut l, &p, 2);
        let waiting = current(QueryState::AwaitingApproval, 2);
        assert_eq!(
            decide(waiting, "a", true, true, 1, &mut l, Some(&held)).unwrap(),
            Decided::Approved { approvals: 1 }
        );
        let e = decide(waiting, "a", false, true, 1, &mut l, Some(&held)).unwrap_err();
        assert!(e.to_string().contains("a has already decided"), "{e}");
        let runs = decide(waiting, "b", true, true, 2, &mut l, Some(&held)).unwrap();
        assert_eq!(runs.state(), QueryState::Running);
        // A rejection refunds the whole reservation.
        let Decided::Rejected {
            held: refunded,
            entry,
        } = decide(waiting, "c", true, false, 2, &mut l, Some(&held)).unwrap()
        else {
            panic!()
        };
        assert_eq!(refunded.state, QueryBudget::Refunded(p.cost.rho));
        assert_eq!(entry.amount, p.cost.rho);
        assert_eq!(l.used(), Rho::ZERO);
        // Decisions on a query not awaiting approval are refused.
        let e = decide(
            current(QueryState::Running, 2),
            "d",
            true,
            true,
            3,
            &mut l,
            Some(&held),
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("is running, not awaiting approval"),
            "{e}"
        );
    }

    #[test]
    fn a_release_charges_exactly_the_reservation_once() {
        let p = priced(0.3);
        let mut l = ledger();
        let (_, held) = reserved(&mut l, &p, 0);
        let running = current(QueryState::Running, 0);
        let (charged, entry) = charge(running, &mut l, Some(&held)).unwrap();
        assert_eq!(charged.state, QueryBudget::Charged(p.cost.rho));
        assert_eq!(entry.amount, p.cost.rho, "reservation = charge");
        assert_eq!(l.charged(), p.cost.rho);
        // Charging again (from the new state) is refused, as is charging a finished query.
        assert!(charge(running, &mut l, Some(&charged)).is_err());
        let e = charge(current(QueryState::Released, 0), &mut l, Some(&held)).unwrap_err();
        assert!(e.to_string().contains("not running"), "{e}");
        assert!(charge(running, &mut l, None).is_err());
    }

    #[test]
    fn an_abort_refunds_a_running_query_and_leaves_others_alone() {
        let p = priced(0.3);
        let mut l = ledger();
        let (_, held) = reserved(&mut l, &p, 0);
        let (refunded, _) = abort(current(QueryState::Running, 0), &mut l, Some(&held))
            .unwrap()
            .unwrap();
        assert_eq!(refunded.state, QueryBudget::Refunded(p.cost.rho));
        assert_eq!(l.used(), Rho::ZERO);
        for state in [
            QueryState::Released,
            QueryState::Aborted,
            QueryState::Rejected,
        ] {
            assert_eq!(abort(current(state, 0), &mut l, Some(&held)).unwrap(), None);
        }
        // A running query whose reservation was already settled is refused, not refunded twice.
        assert!(abort(current(QueryState::Running, 0), &mut l, Some(&refunded)).is_err());
    }

    #[test]
    fn a_round_takes_every_registered_partner_or_is_refused_by_name() {
        let policy = diabetes();
        let p = priced(0.3);
        let settings = RoundSettings {
            max_rows_per_partner: 10_000,
            max_dropout_rate: 0.0,
            max_corrupt_fraction: 0.0,
        };
        let mut partners: Vec<Partner> = policy
            .partners()
            .iter()
            .enumerate()
            .map(|(i, name)| Partner {
                name: name.clone(),
                id: PartnerId(i as u32 + 1),
                identity_key: Some([i as u8; 32]),
            })
            .collect();
        let setup =
            round_setup(7, &policy, policy.partners(), &p, &partners, settings, None).unwrap();
        assert_eq!(setup.config.round_id, RoundId(7));
        assert_eq!(setup.config.participants.len(), policy.partners().len());
        assert_eq!(setup.config.vector_len, p.plan.vector_len);
        partners[0].identity_key = None;
        let e =
            round_setup(7, &policy, policy.partners(), &p, &partners, settings, None).unwrap_err();
        assert!(
            e.to_string()
                .contains("has not registered its identity key"),
            "{e}"
        );
        partners.remove(0);
        let e =
            round_setup(7, &policy, policy.partners(), &p, &partners, settings, None).unwrap_err();
        assert!(e.to_string().contains("which has no account"), "{e}");
    }

    #[test]
    fn the_fingerprint_is_the_question_not_who_asks() {
        let request = |project: &str, eps: f64| -> QueryRequest {
            serde_json::from_value(serde_json::json!({
                "project": project,
                "query": { "dataset": "diabetes", "statistic": "count" },
                "privacy": { "epsilon": eps }
            }))
            .unwrap()
        };
        let f = |r: &QueryRequest, v| fingerprint("diabetes", v, r, 0.95);
        assert_eq!(f(&request("a", 1.0), 1), f(&request("b", 1.0), 1));
        assert_ne!(f(&request("a", 1.0), 1), f(&request("a", 2.0), 1));
        assert_ne!(f(&request("a", 1.0), 1), f(&request("a", 1.0), 2));
    }
}
