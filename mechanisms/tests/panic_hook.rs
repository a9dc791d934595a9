//! Pricing on many threads at once leaves the process's panic hook alone. OpenDP swaps the
//! hook around some of its arithmetic; interleaved swaps used to leave a silent hook
//! installed, after which no panic printed anything (this test failed 3 runs in 3 without
//! the crate's OpenDP lock).

use std::sync::atomic::{AtomicUsize, Ordering};

use civic_mechanisms::PricingContext;
use civic_policies::{PrivacyRequest, Query};

static SEEN: AtomicUsize = AtomicUsize::new(0);

#[test]
fn concurrent_pricing_leaves_the_panic_hook_in_place() {
    std::panic::set_hook(Box::new(|_| {
        SEEN.fetch_add(1, Ordering::SeqCst);
    }));
    let policy = civic_policies::samples::diabetes();
    let query: Query =
        serde_json::from_value(serde_json::json!({ "dataset": "diabetes", "statistic": "count" }))
            .unwrap();
    let context = PricingContext {
        max_rows_per_partner: 10_000,
        reporting_delta: 1e-6,
        board_floor: civic_policies::Rho::ZERO,
        honest_survivors: 2,
    };
    std::thread::scope(|scope| {
        for t in 0..8 {
            let (policy, query) = (&policy, &query);
            scope.spawn(move || {
                for i in 0..150 {
                    let privacy = PrivacyRequest::Rho(0.001 * (1 + (t * 150 + i) % 97) as f64);
                    civic_mechanisms::price(policy, query, privacy, None, context).unwrap();
                }
            });
        }
    });
    let before = SEEN.load(Ordering::SeqCst);
    let _ = std::panic::catch_unwind(|| panic!("a panic the hook must see"));
    assert_eq!(
        SEEN.load(Ordering::SeqCst),
        before + 1,
        "the panic hook was replaced while pricing"
    );
    let _ = std::panic::take_hook();
}
