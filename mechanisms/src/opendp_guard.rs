//! One OpenDP call at a time, process-wide.
//!
//! OpenDP 0.16 swaps the process-wide panic hook around some of its arithmetic
//! (`catch_unwind_silent`: take the hook, install a silent one, put the old one back). Two
//! threads doing that at once can leave the silent hook installed for good, after which no
//! panic anywhere in the process prints a word (seen in the coordinator, which prices on
//! several threads). Every entry into OpenDP from this crate holds this lock, re-entrant
//! within a thread, so the swaps never interleave.

use std::cell::Cell;
use std::sync::{Mutex, MutexGuard, PoisonError};

static LOCK: Mutex<()> = Mutex::new(());

thread_local! {
    static DEPTH: Cell<u32> = const { Cell::new(0) };
}

/// Held while this thread is inside OpenDP.
pub(crate) struct Guard {
    _outermost: Option<MutexGuard<'static, ()>>,
}

/// Takes the lock, unless this thread holds it already.
pub(crate) fn lock() -> Guard {
    let outermost = DEPTH.with(|d| {
        d.set(d.get() + 1);
        d.get() == 1
    });
    Guard {
        _outermost: outermost.then(|| LOCK.lock().unwrap_or_else(PoisonError::into_inner)),
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        DEPTH.with(|d| d.set(d.get() - 1));
    }
}
