//! Property tests for the budget ledger: no sequence of operations exceeds a cap, double
//! charges, refunds a charge, or lets the totals drift from the entries.

use civic_policies::Rho;
use civic_policies::budget::{EntryKind, Ledger, QueryBudget};
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
        for op in ops {
            let before = ledger.clone();
            let was = |q: u64| before.query(q);
            let result = match op {
                Op::Allocate(p, a) => ledger.allocate(PROJECTS[p], hundredths(a)).map(|_| ()),
                Op::Reserve(q, p, a) => ledger.reserve(q, PROJECTS[p], hundredths(a)),
                Op::Charge(q) => ledger.charge(q).map(|_| ()),
                Op::Refund(q) => {
                    let r = ledger.refund(q).map(|_| ());
                    // A refund after a charge is always refused.
                    if matches!(was(q), Some(QueryBudget::Charged(_))) {
                        prop_assert!(r.is_err());
                    }
                    r
                }
            };
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
            for e in ledger.entries() {
                if e.kind == EntryKind::Reserve {
                    prop_assert!(e.amount <= per_query);
                }
            }
            // The totals are the sum of the entries.
            for p in &PROJECTS[..3] {
                let Some(a) = ledger.project(p) else { continue };
                let sum = |k: EntryKind| -> u64 {
                    ledger.entries().iter().filter(|e| e.project == *p && e.kind == k).map(|e| e.amount.units()).sum()
                };
                prop_assert_eq!(a.charged.units(), sum(EntryKind::Charge));
                prop_assert_eq!(
                    a.reserved.units(),
                    sum(EntryKind::Reserve) - sum(EntryKind::Charge) - sum(EntryKind::Refund)
                );
            }
            // Each query is charged at most once.
            let mut charges = std::collections::BTreeMap::new();
            for e in ledger.entries().iter().filter(|e| e.kind == EntryKind::Charge) {
                *charges.entry(e.query).or_insert(0) += 1;
            }
            prop_assert!(charges.values().all(|c| *c == 1));
        }
    }
}
