//! A switch that turns masking off, for one benchmark only.
//!
//! `benches/round.rs` measures a whole round against the same round with plain vectors: the
//! same partners, phases, messages and sizes, with no masks added by partners and none
//! removed by the coordinator. This module exists only with feature `bench-unmasked`, which
//! only that bench enables; `civic-coordinator` and `civic-agent` refuse to compile with it
//! (see [`crate::MASKING_SWITCH_COMPILED`]), and nothing reads it from configuration.

use std::sync::atomic::{AtomicBool, Ordering};

static MASKING_OFF: AtomicBool = AtomicBool::new(false);

/// Turns masking off (`true`) or back on for every round in this process.
pub fn set_masking_off(off: bool) {
    MASKING_OFF.store(off, Ordering::SeqCst);
}

pub(crate) fn masking_off() -> bool {
    MASKING_OFF.load(Ordering::SeqCst)
}
