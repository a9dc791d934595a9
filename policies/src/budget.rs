//! The privacy-budget ledger as pure state transitions.
//!
//! Budgets nest: dataset total → project allocations → per-query cap. A query's cost is
//! *reserved* when it is accepted (checked against all three levels in one step), *charged*
//! when its release is about to leave the coordinator, or *refunded* if it released nothing.
//! Every operation validates first and changes nothing on error.
//!
//! The state is split the way a store keeps it: the [`Ledger`] holds the caps and each
//! project's running totals (one small record per dataset), and every change returns the
//! [`LedgerEntry`] to append to an append-only list. A query's own budget ([`Held`]) is
//! derived from its entries ([`Held::from_entries`]), so the totals can always be checked
//! against the entries, and charging or refunding starts from what the entries say.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::PolicyError;
use crate::privacy::Rho;

/// A research project's id.
pub type ProjectId = String;
/// A query's id (assigned by the coordinator's store).
pub type QueryId = u64;

/// Where a query's cost stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QueryBudget {
    /// Held against the caps while the query waits or runs.
    Reserved(Rho),
    /// Spent: the release exists (for a training job that ended early, what its rounds
    /// spent; the rest was refunded).
    Charged(Rho),
    /// A training job's rounds so far are charged, the rest still held.
    PartlyCharged {
        /// Charged for the rounds released so far.
        charged: Rho,
        /// Still held for the rounds to come.
        reserved: Rho,
    },
    /// Returned: the query released nothing.
    Refunded(Rho),
}

/// One line of the ledger.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerEntry {
    /// The query (0 for an allocation).
    pub query: QueryId,
    /// Its project.
    pub project: ProjectId,
    /// What happened.
    pub kind: EntryKind,
    /// How much.
    pub amount: Rho,
}

/// What a ledger entry records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    /// A project's allocation was set.
    Allocate,
    /// A query's cost was reserved.
    Reserve,
    /// A reservation (or what was left of it) became a charge.
    Charge,
    /// One round of a training job charged part of its reservation; the rest stays held.
    ChargeRound,
    /// A reservation was returned.
    Refund,
}

impl EntryKind {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::Allocate => "allocate",
            EntryKind::Reserve => "reserve",
            EntryKind::Charge => "charge",
            EntryKind::ChargeRound => "charge_round",
            EntryKind::Refund => "refund",
        }
    }

    /// Parses [`EntryKind::as_str`].
    pub fn parse(s: &str) -> Option<EntryKind> {
        [
            Self::Allocate,
            Self::Reserve,
            Self::Charge,
            Self::ChargeRound,
            Self::Refund,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// One query's budget: its project and where its cost stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Held {
    /// The query.
    pub query: QueryId,
    /// The project that pays.
    pub project: ProjectId,
    /// Where its cost stands.
    pub state: QueryBudget,
}

impl Held {
    /// A query's budget from its entries, in order: none before a reservation. Entries that
    /// do not make a valid history (a charge without a reservation, two settlements, a
    /// project or amount that changes) are refused rather than trusted.
    pub fn from_entries(
        query: QueryId,
        entries: &[LedgerEntry],
    ) -> Result<Option<Held>, PolicyError> {
        let corrupt = |reason: &str| PolicyError::Ledger {
            query,
            reason: format!("its ledger entries are inconsistent: {reason}"),
        };
        let mut held: Option<Held> = None;
        for e in entries
            .iter()
            .filter(|e| e.query == query && e.kind != EntryKind::Allocate)
        {
            held = Some(match (held.as_ref().map(|h| h.state), e.kind) {
                (None, EntryKind::Reserve) => Held {
                    query,
                    project: e.project.clone(),
                    state: QueryBudget::Reserved(e.amount),
                },
                (
                    Some(state),
                    kind @ (EntryKind::Charge | EntryKind::ChargeRound | EntryKind::Refund),
                ) => {
                    let h = held.as_ref().filter(|h| h.project == e.project);
                    let (h, state) = h.zip(settled(state, kind, e.amount)).ok_or_else(|| {
                        corrupt("a settlement that does not match its reservation")
                    })?;
                    Held { state, ..h.clone() }
                }
                _ => return Err(corrupt("an entry out of order")),
            });
        }
        Ok(held)
    }
}

/// A project's share of the dataset budget.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allocation {
    /// The most the project may spend.
    pub cap: Rho,
    /// Held by queries waiting or running.
    pub reserved: Rho,
    /// Spent by releases.
    pub charged: Rho,
}

impl Allocation {
    /// Reserved plus charged.
    pub fn used(&self) -> Rho {
        Rho::from_units(self.reserved.units() + self.charged.units())
    }
}

/// One dataset's caps and running totals.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ledger {
    dataset: String,
    total: Rho,
    per_query: Rho,
    projects: BTreeMap<ProjectId, Allocation>,
}

impl Ledger {
    /// An empty ledger for a dataset with these caps.
    pub fn new(dataset: &str, total: Rho, per_query: Rho) -> Self {
        Self {
            dataset: dataset.to_string(),
            total,
            per_query,
            projects: BTreeMap::new(),
        }
    }

    /// The dataset.
    pub fn dataset(&self) -> &str {
        &self.dataset
    }

    /// The dataset total.
    pub fn total(&self) -> Rho {
        self.total
    }

    /// Reserved plus charged over all projects.
    pub fn used(&self) -> Rho {
        Rho::from_units(self.projects.values().map(|a| a.used().units()).sum())
    }

    /// Charged over all projects.
    pub fn charged(&self) -> Rho {
        Rho::from_units(self.projects.values().map(|a| a.charged.units()).sum())
    }

    /// The dataset budget not yet reserved or charged.
    pub fn remaining(&self) -> Rho {
        self.total.checked_sub(self.used()).unwrap_or(Rho::ZERO)
    }

    /// A project's allocation.
    pub fn project(&self, project: &str) -> Option<&Allocation> {
        self.projects.get(project)
    }

    fn over(
        &self,
        level: &'static str,
        spent: Rho,
        requested: Rho,
        cap: Rho,
        project: &str,
    ) -> PolicyError {
        PolicyError::OverBudget {
            level,
            spent,
            requested,
            cap,
            project: project.to_string(),
            dataset: self.dataset.clone(),
        }
    }

    /// Applies a new policy version's caps. Existing reservations and charges stand; the new
    /// caps bind every later reservation. Refused if the project allocations already exceed
    /// the new total: lower them first, so that no allocation is silently unbacked.
    pub fn set_caps(&mut self, total: Rho, per_query: Rho) -> Result<(), PolicyError> {
        let allocated: u64 = self.projects.values().map(|a| a.cap.units()).sum();
        if allocated > total.units() {
            return Err(PolicyError::OverBudget {
                level: "dataset total",
                spent: Rho::from_units(allocated),
                requested: Rho::ZERO,
                cap: total,
                project: "(all project allocations)".into(),
                dataset: self.dataset.clone(),
            });
        }
        self.total = total;
        self.per_query = per_query;
        Ok(())
    }

    /// The per-query cap.
    pub fn per_query(&self) -> Rho {
        self.per_query
    }

    /// Every project's allocation.
    pub fn projects(&self) -> impl Iterator<Item = (&str, &Allocation)> {
        self.projects.iter().map(|(p, a)| (p.as_str(), a))
    }

    /// Sets (or changes) a project's allocation. The allocations together may not exceed the
    /// dataset total, and a project's cap may not drop below what it has already used.
    pub fn allocate(&mut self, project: &str, cap: Rho) -> Result<LedgerEntry, PolicyError> {
        let current = self.projects.get(project).copied().unwrap_or_default();
        let others: u64 = self
            .projects
            .iter()
            .filter(|(p, _)| p.as_str() != project)
            .map(|(_, a)| a.cap.units())
            .sum();
        if others
            .checked_add(cap.units())
            .is_none_or(|sum| sum > self.total.units())
        {
            return Err(self.over(
                "dataset total",
                Rho::from_units(others),
                cap,
                self.total,
                project,
            ));
        }
        if cap < current.used() {
            return Err(self.over(
                "project allocation",
                current.used(),
                Rho::ZERO,
                cap,
                project,
            ));
        }
        self.projects
            .insert(project.to_string(), Allocation { cap, ..current });
        Ok(LedgerEntry {
            query: 0,
            project: project.to_string(),
            kind: EntryKind::Allocate,
            amount: cap,
        })
    }

    /// Checks that `project` could reserve `cost` now (the per-query cap, the project's
    /// allocation and the dataset total), changing nothing: what a preview reports.
    pub fn check_reserve(&self, project: &str, cost: Rho) -> Result<(), PolicyError> {
        self.clone().reserve(0, project, cost).map(|_| ())
    }

    /// Reserves a new query's cost against the per-query cap, the project's allocation and
    /// the dataset total, all at once. The query must have no entries yet (the store keeps
    /// one reservation per query).
    pub fn reserve(
        &mut self,
        query: QueryId,
        project: &str,
        cost: Rho,
    ) -> Result<(Held, LedgerEntry), PolicyError> {
        let Some(allocation) = self.projects.get(project).copied() else {
            return Err(PolicyError::Ledger {
                query,
                reason: format!(
                    "project \"{project}\" has no allocation on dataset {}",
                    self.dataset
                ),
            });
        };
        if cost > self.per_query {
            return Err(self.over("per-query cap", Rho::ZERO, cost, self.per_query, project));
        }
        let project_after = allocation.used().checked_add(cost);
        if project_after.is_none_or(|after| after > allocation.cap) {
            return Err(self.over(
                "project allocation",
                allocation.used(),
                cost,
                allocation.cap,
                project,
            ));
        }
        let used = self.used();
        if used
            .checked_add(cost)
            .is_none_or(|after| after > self.total)
        {
            return Err(self.over("dataset total", used, cost, self.total, project));
        }
        let a = self.projects.entry(project.to_string()).or_default();
        a.reserved = Rho::from_units(a.reserved.units() + cost.units());
        Ok((
            Held {
                query,
                project: project.to_string(),
                state: QueryBudget::Reserved(cost),
            },
            LedgerEntry {
                query,
                project: project.to_string(),
                kind: EntryKind::Reserve,
                amount: cost,
            },
        ))
    }

    /// Turns a reservation (what is left of it, for a training job) into a charge, before
    /// the release leaves the coordinator.
    pub fn charge(&mut self, held: &Held) -> Result<(Held, LedgerEntry), PolicyError> {
        let amount = still_reserved(held)?;
        self.settle(held, EntryKind::Charge, amount)
    }

    /// Charges `amount` of a training job's reservation for one round, before anything the
    /// round computed leaves the coordinator; the rest stays held. Charging all that is left
    /// is [`Ledger::charge`].
    pub fn charge_part(
        &mut self,
        held: &Held,
        amount: Rho,
    ) -> Result<(Held, LedgerEntry), PolicyError> {
        let left = still_reserved(held)?;
        if amount >= left {
            return Err(PolicyError::Ledger {
                query: held.query,
                reason: format!(
                    "a round's charge of {amount} would not leave part of the {left} its \
                     reservation still holds (the last round charges the rest)"
                ),
            });
        }
        self.settle(held, EntryKind::ChargeRound, amount)
    }

    /// Returns a reservation whose query released nothing, or what is left of a training
    /// job's after the rounds it charged. A charged query is never refunded.
    pub fn refund(&mut self, held: &Held) -> Result<(Held, LedgerEntry), PolicyError> {
        let amount = still_reserved(held)?;
        self.settle(held, EntryKind::Refund, amount)
    }

    fn settle(
        &mut self,
        held: &Held,
        kind: EntryKind,
        amount: Rho,
    ) -> Result<(Held, LedgerEntry), PolicyError> {
        let query = held.query;
        let project = &held.project;
        // A ledger whose totals do not cover the reservation is refused rather than trusted.
        let inconsistent = || PolicyError::Ledger {
            query,
            reason: format!(
                "the ledger's record of project \"{project}\" does not cover this reservation"
            ),
        };
        let state = settled(held.state, kind, amount).ok_or_else(inconsistent)?;
        let a = self.projects.get(project).ok_or_else(inconsistent)?;
        let reserved = a.reserved.checked_sub(amount).ok_or_else(inconsistent)?;
        let charged = a.charged.checked_add(amount).ok_or_else(inconsistent)?;
        let a = self.projects.get_mut(project).ok_or_else(inconsistent)?;
        a.reserved = reserved;
        if kind != EntryKind::Refund {
            a.charged = charged;
        }
        Ok((
            Held {
                state,
                ..held.clone()
            },
            LedgerEntry {
                query,
                project: project.clone(),
                kind,
                amount,
            },
        ))
    }
}

/// What a query's reservation still holds, or why nothing can be settled.
fn still_reserved(held: &Held) -> Result<Rho, PolicyError> {
    match held.state {
        QueryBudget::Reserved(amount)
        | QueryBudget::PartlyCharged {
            reserved: amount, ..
        } => Ok(amount),
        QueryBudget::Charged(_) => Err(PolicyError::Ledger {
            query: held.query,
            reason: "is already charged: its release exists, so it can be neither charged again \
                     nor refunded"
                .into(),
        }),
        QueryBudget::Refunded(_) => Err(PolicyError::Ledger {
            query: held.query,
            reason: "was refunded; it has no reservation left".into(),
        }),
    }
}

/// The state after settling `amount` of `state` as `kind` (a round's charge of part of it,
/// a charge of all that is left, or a refund of all that is left), or None if that is not a
/// valid step. A query has one final settlement (charge or refund) and any number of round
/// charges before it.
fn settled(state: QueryBudget, kind: EntryKind, amount: Rho) -> Option<QueryBudget> {
    let (charged, reserved) = match state {
        QueryBudget::Reserved(r) => (Rho::ZERO, r),
        QueryBudget::PartlyCharged { charged, reserved } => (charged, reserved),
        _ => return None,
    };
    let left = reserved.checked_sub(amount)?;
    match kind {
        EntryKind::Charge if left == Rho::ZERO => {
            Some(QueryBudget::Charged(charged.checked_add(amount)?))
        }
        EntryKind::ChargeRound if amount > Rho::ZERO && left > Rho::ZERO => {
            Some(QueryBudget::PartlyCharged {
                charged: charged.checked_add(amount)?,
                reserved: left,
            })
        }
        EntryKind::Refund if left == Rho::ZERO && charged == Rho::ZERO => {
            Some(QueryBudget::Refunded(amount))
        }
        // What a training job's rounds charged stays charged; the rest is returned.
        EntryKind::Refund if left == Rho::ZERO => Some(QueryBudget::Charged(charged)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rho(x: f64) -> Rho {
        Rho::cap(x).unwrap()
    }

    fn ledger() -> Ledger {
        let mut l = Ledger::new("falls", rho(1.0), rho(0.4));
        l.allocate("p1", rho(0.6)).unwrap();
        l.allocate("p2", rho(0.4)).unwrap();
        l
    }

    #[test]
    fn reserve_charge_and_refund_move_the_budget() {
        let mut l = ledger();
        let (one, _) = l.reserve(1, "p1", rho(0.3)).unwrap();
        let (two, _) = l.reserve(2, "p1", rho(0.3)).unwrap();
        assert_eq!(l.remaining(), rho(0.4));
        let (_, e) = l.charge(&one).unwrap();
        assert_eq!((e.kind, e.amount), (EntryKind::Charge, rho(0.3)));
        let (refunded, _) = l.refund(&two).unwrap();
        assert_eq!(l.project("p1").unwrap().charged, rho(0.3));
        assert_eq!(l.project("p1").unwrap().reserved, Rho::ZERO);
        assert_eq!(l.remaining(), rho(0.7));
        assert_eq!(refunded.state, QueryBudget::Refunded(rho(0.3)));
    }

    #[test]
    fn a_training_job_is_charged_round_by_round_and_refunds_only_what_is_left() {
        let mut l = ledger();
        let (held, reserve) = l.reserve(1, "p1", rho(0.3)).unwrap();
        let mut entries = vec![reserve];
        let (part, e) = l.charge_part(&held, rho(0.1)).unwrap();
        entries.push(e);
        assert_eq!(
            part.state,
            QueryBudget::PartlyCharged {
                charged: rho(0.1),
                reserved: rho(0.2)
            }
        );
        assert_eq!(l.project("p1").unwrap().charged, rho(0.1));
        assert_eq!(l.project("p1").unwrap().reserved, rho(0.2));
        // More than is left is refused, and changes nothing.
        let before = l.clone();
        assert!(l.charge_part(&part, rho(0.25)).is_err());
        assert_eq!(l, before);
        // An abort now refunds the rest; what the round charged stays charged.
        let mut aborted = l.clone();
        let (ended, e) = aborted.refund(&part).unwrap();
        assert_eq!((e.kind, e.amount), (EntryKind::Refund, rho(0.2)));
        assert_eq!(ended.state, QueryBudget::Charged(rho(0.1)));
        assert_eq!(aborted.project("p1").unwrap().charged, rho(0.1));
        assert_eq!(aborted.remaining(), rho(0.9));
        let mut history = entries.clone();
        history.push(e);
        assert_eq!(Held::from_entries(1, &history).unwrap().unwrap(), ended);
        // Or the last round charges all that is left.
        let (done, e) = l.charge(&part).unwrap();
        entries.push(e);
        assert_eq!(done.state, QueryBudget::Charged(rho(0.3)));
        assert_eq!(Held::from_entries(1, &entries).unwrap().unwrap(), done);
        assert!(l.refund(&done).is_err() && l.charge_part(&done, Rho::from_units(1)).is_err());
    }

    #[test]
    fn every_level_is_checked_and_named() {
        let mut l = ledger();
        let err = l.reserve(1, "p1", rho(0.5)).unwrap_err();
        assert!(err.to_string().contains("per-query cap"), "{err}");
        l.reserve(1, "p1", rho(0.4)).unwrap();
        let err = l.reserve(2, "p1", rho(0.3)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "budget: project allocation: spent 0.4 + requested 0.3 > cap 0.6 (project p1, dataset falls)"
        );
        assert!(l.check_reserve("p1", rho(0.3)).is_err());
        assert!(l.check_reserve("p1", rho(0.2)).is_ok());
        let err = l.reserve(3, "nobody", rho(0.1)).unwrap_err();
        assert!(err.to_string().contains("no allocation"), "{err}");
        let err = l.allocate("p3", rho(0.1)).unwrap_err();
        assert!(err.to_string().contains("dataset total"), "{err}");
        let before = l.clone();
        assert!(
            l.allocate("p1", rho(0.2)).is_err(),
            "below what p1 already holds"
        );
        assert_eq!(l, before, "a refused operation changes nothing");
    }

    #[test]
    fn no_double_charge_and_no_refund_after_charge() {
        let mut l = ledger();
        let (held, reserve) = l.reserve(7, "p2", rho(0.2)).unwrap();
        let (charged, charge) = l.charge(&held).unwrap();
        let before = l.clone();
        for e in [
            l.charge(&charged).unwrap_err(),
            l.refund(&charged).unwrap_err(),
        ] {
            assert!(e.to_string().contains("already charged"), "{e}");
        }
        assert_eq!(l, before);
        // The query's budget is what its entries say.
        let entries = [reserve.clone(), charge];
        assert_eq!(Held::from_entries(7, &entries).unwrap(), Some(charged));
        assert_eq!(Held::from_entries(8, &entries).unwrap(), None);
        let twice = [reserve.clone(), reserve];
        assert!(Held::from_entries(7, &twice).is_err());
    }
}
