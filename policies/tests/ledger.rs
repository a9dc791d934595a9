//! Property tests for the budget ledger: no sequence of operations exceeds a cap, double
//! charges, refunds a charge, or lets the totals drift from the entries.

use civic_policies::Rho;
use std::collections::BTreeMap;

use civic_policies::budget::{EntryKind, Held, Ledger, LedgerEntry, QueryBudget};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    Allocate(usize, u64),
    Reserve(u64, usize, u64),
    Charge(u64),
    Refund(u64),
}

fn op() -> impl Strategy<Value = Op> {
    // Amounts in units of 0.01 ρ; few query ids so that repeats and conflicts are common.
    prop_oneof![
        1 => (0usize..3, 1u64..60).prop_map(|(p, a)| Op::Allocate(p, a)),
        4 => (0u64..12, 0usize..4, 1u64..30).prop_map(|(q, p, a)| Op::Reserve(q, p, a)),
        2 => (0u64..12).prop_map(Op::Charge),
        2 => (0u64..12).prop_map(Op::Refund),
    ]
}

fn hundredths(x: u64) -> Rho {
    Rho::from_units(x * 10_000_000_000)
}

const PROJECTS: [&str; 4] = ["p0", "p1", "p2", "unallocated"];

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, .. ProptestConfig::default() })]

    #[test]
    fn no_sequence_breaks_a_cap_or_the_books(ops in prop::collection::vec(op(), 1..80)) {
        let total = hundredths(100);
        let per_query = hundredths(25);
        let mut ledger = Ledger::new("falls", total, per_query);
        // What a store keeps beside the ledger: the append-only entries.
        let mut entries: Vec<LedgerEntry> = Vec::new();
        for op in ops {
            let before = ledger.clone();
            let held = |q: u64| Held::from_entries(q, &entries).unwrap();
            let result = match op {
                Op::Allocate(p, a) => ledger.allocate(PROJECTS[p], hundredths(a)).map(Some),
                // The store keeps one reservation per query.
                Op::Reserve(q, _, _) if held(q).is_some() => continue,
                Op::Reserve(q, p, a) => ledger.reserve(q, PROJECTS[p], hundredths(a)).map(|(_, e)| Some(e)),
                Op::Charge(q) => match held(q) {
                    Some(h) => ledger.charge(&h).map(|(_, e)| Some(e)),
                    None => continue,
                },
                Op::Refund(q) => match held(q) {
                    Some(h) => {
                        let r = ledger.refund(&h).map(|(_, e)| Some(e));
                        // A refund after a charge is always refused.
                        if matches!(h.state, QueryBudget::Charged(_)) {
                            prop_assert!(r.is_err());
                        }
                        r
                    }
                    None => continue,
                },
            };
            if let Ok(Some(e)) = &result {
                entries.push(e.clone());
            }
            if result.is_err() {
                prop_assert_eq!(&ledger, &before, "a refused operation changed the ledger");
            }
            // Caps hold at every level, after every step.
            prop_assert!(ledger.used() <= total);
            let mut caps = 0;
            for p in &PROJECTS[..3] {
                if let Some(a) = ledger.project(p) {
                    prop_assert!(a.used() <= a.cap);
                    caps += a.cap.units();
                }
            }
            prop_assert!(caps <= total.units());
            for e in &entries {
                if e.kind == EntryKind::Reserve {
                    prop_assert!(e.amount <= per_query);
                }
            }
            // The totals are the sum of the entries.
            for p in &PROJECTS[..3] {
                let Some(a) = ledger.project(p) else { continue };
                let sum = |k: EntryKind| -> u64 {
                    entries.iter().filter(|e| e.project == *p && e.kind == k).map(|e| e.amount.units()).sum()
                };
                prop_assert_eq!(a.charged.units(), sum(EntryKind::Charge));
                prop_assert_eq!(
                    a.reserved.units(),
                    sum(EntryKind::Reserve) - sum(EntryKind::Charge) - sum(EntryKind::Refund)
                );
            }
            // Each query is charged at most once.
            let mut charges = BTreeMap::new();
            for e in entries.iter().filter(|e| e.kind == EntryKind::Charge) {
                *charges.entry(e.query).or_insert(0) += 1;
            }
            prop_assert!(charges.values().all(|c| *c == 1));
        }
    }
}
