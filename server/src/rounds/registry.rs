//! The rounds this coordinator drives, in memory: each open round's protocol state, who must
//! still answer its open step, and the step's deadline. The store holds the truth (every
//! accepted message, every step closed); this is its working copy, rebuilt by replay.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex as SyncMutex};
use std::time::SystemTime;

use civic_api::decline::DeclineCode;
use civic_secagg::PartnerId;
use tokio::sync::{Mutex, Notify, oneshot};

use super::protocol::ProtocolRound;
use crate::store::RoundSetup;

/// One round in memory.
pub struct LiveRound {
    /// The round.
    pub id: i64,
    /// Its query.
    pub query_id: i64,
    /// The protocol's name.
    pub protocol: &'static str,
    /// What it was opened with.
    pub setup: RoundSetup,
    /// The protocol's state.
    pub state: Box<dyn ProtocolRound>,
    /// Who must answer the open step: everyone who answered the last one (minus partners
    /// who declined).
    pub expected: BTreeSet<PartnerId>,
    /// When the open step closes whoever has answered.
    pub deadline: SystemTime,
    /// Not stepped before this (a release or abort that failed for a passing reason).
    pub retry_at: SystemTime,
    /// Being released or aborted: kept in memory (so it is not adopted again) but no longer
    /// driven.
    pub closing: bool,
    /// The partners who declined, by decline code (`other` for a reason that carries none):
    /// what a researcher is told when the round cannot go on. Kept in memory only; a round
    /// adopted after a restart counts its declines from then (the audit log has them all).
    pub declines: BTreeMap<&'static str, usize>,
}

impl LiveRound {
    /// The declines in plain words, for an abort's reason: "2 partners declined:
    /// data.unavailable (this partner could not …) from 2." Empty when none declined.
    pub fn declines_in_words(&self) -> String {
        let total: usize = self.declines.values().sum();
        if total == 0 {
            return String::new();
        }
        let parts: Vec<String> = self
            .declines
            .iter()
            .map(|(code, n)| {
                let what = DeclineCode::ALL
                    .into_iter()
                    .find(|c| c.as_str() == *code)
                    .map_or("a reason without a code", DeclineCode::description);
                format!("{code} ({what}) from {n}")
            })
            .collect();
        let noun = if total == 1 { "partner" } else { "partners" };
        format!(" {total} {noun} declined: {}.", parts.join("; "))
    }

    /// Whether everyone expected has answered the open step.
    pub fn complete(&self) -> bool {
        self.expected.is_subset(&self.state.responded())
    }
}

/// A protocol message waiting to be taken into its round, with the channel its poster
/// waits on for the outcome.
pub struct Pending {
    /// The partner whose token posted it.
    pub partner: PartnerId,
    /// The message.
    pub body: Vec<u8>,
    /// Where the outcome goes.
    pub reply: oneshot::Sender<crate::error::Result<()>>,
}

/// The open rounds of this coordinator.
pub struct Rounds {
    live: SyncMutex<HashMap<i64, Arc<Mutex<LiveRound>>>>,
    /// Messages posted to each round and not yet taken: whoever holds the round's lock next
    /// takes all of them in one transaction (group commit).
    pending: SyncMutex<HashMap<i64, Vec<Pending>>>,
    wake: Notify,
    halted: AtomicBool,
    /// This process's name in the driver lease.
    owner: String,
    holds_lease: AtomicBool,
    /// The sum each query's last round unmasked, for tests only (feature `test-util`).
    #[cfg(feature = "test-util")]
    unmasked_sums: SyncMutex<HashMap<i64, Vec<i64>>>,
    /// Training steps taken on the exact sum, for tests only (feature `test-util`).
    #[cfg(feature = "test-util")]
    central_noise_off: AtomicBool,
}

impl Rounds {
    /// An empty registry whose lease owner is `owner`.
    pub fn new(owner: String) -> Self {
        Self {
            live: SyncMutex::default(),
            pending: SyncMutex::default(),
            wake: Notify::new(),
            halted: AtomicBool::default(),
            owner,
            holds_lease: AtomicBool::default(),
            #[cfg(feature = "test-util")]
            unmasked_sums: SyncMutex::default(),
            #[cfg(feature = "test-util")]
            central_noise_off: AtomicBool::default(),
        }
    }

    /// This process's name in the driver lease.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// Whether this coordinator holds the driver lease.
    pub fn drives(&self) -> bool {
        self.holds_lease.load(Ordering::SeqCst)
    }

    /// Records whether the lease is held; returns whether it was.
    pub(crate) fn set_drives(&self, held: bool) -> bool {
        let had = self.holds_lease.swap(held, Ordering::SeqCst);
        if had && !held {
            self.clear();
        }
        had
    }

    /// A round in memory.
    pub fn get(&self, id: i64) -> Option<Arc<Mutex<LiveRound>>> {
        self.live.lock().ok()?.get(&id).cloned()
    }

    /// The ids of the rounds in memory, in order.
    pub fn ids(&self) -> Vec<i64> {
        let mut ids: Vec<i64> = self
            .live
            .lock()
            .map(|m| m.keys().copied().collect())
            .unwrap_or_default();
        ids.sort_unstable();
        ids
    }

    /// Takes a round into memory and wakes the driver. A round already in memory is never
    /// replaced: its step bookkeeping is the live one.
    pub fn insert(&self, round: LiveRound) {
        if self.halted() {
            return;
        }
        if let Ok(mut m) = self.live.lock() {
            m.entry(round.id)
                .or_insert_with(|| Arc::new(Mutex::new(round)));
        }
        self.wake();
    }

    /// Whether a round is in memory (true if the registry is unreadable, so that nothing is
    /// adopted twice).
    pub fn contains(&self, id: i64) -> bool {
        self.live
            .lock()
            .map(|m| m.contains_key(&id))
            .unwrap_or(true)
    }

    /// Forgets a round (a message still pending for it is dropped, and its poster told so).
    pub fn remove(&self, id: i64) {
        if let Ok(mut m) = self.live.lock() {
            m.remove(&id);
        }
        if let Ok(mut p) = self.pending.lock() {
            p.remove(&id);
        }
    }

    fn clear(&self) {
        if let Ok(mut m) = self.live.lock() {
            m.clear();
        }
        if let Ok(mut p) = self.pending.lock() {
            p.clear();
        }
    }

    /// Queues a message for round `id`.
    pub fn enqueue(&self, id: i64, message: Pending) {
        if let Ok(mut p) = self.pending.lock() {
            p.entry(id).or_default().push(message);
        }
    }

    /// Every message queued for round `id`, in arrival order.
    pub fn take_pending(&self, id: i64) -> Vec<Pending> {
        self.pending
            .lock()
            .ok()
            .and_then(|mut p| p.remove(&id))
            .unwrap_or_default()
    }

    /// Wakes the driver (a step may be complete).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Waits until woken.
    pub(crate) async fn woken(&self) {
        self.wake.notified().await
    }

    /// Stops driving rounds and forgets them, as if the process died: what is in the store
    /// stays, and the next coordinator on the same store resumes it.
    pub fn halt(&self) {
        self.halted.store(true, Ordering::SeqCst);
        self.clear();
        self.wake();
    }

    /// Whether [`Rounds::halt`] was called.
    pub fn halted(&self) -> bool {
        self.halted.load(Ordering::SeqCst)
    }

    /// Open rounds in memory.
    pub fn count(&self) -> usize {
        self.live.lock().map(|m| m.len()).unwrap_or_default()
    }

    /// Keeps the sum a query's round unmasked, for tests (feature `test-util`; a no-op
    /// otherwise).
    pub(crate) fn record_unmasked_sum(&self, _query: i64, _sum: &[i64]) {
        #[cfg(feature = "test-util")]
        if let Ok(mut sums) = self.unmasked_sums.lock() {
            sums.insert(_query, _sum.to_vec());
        }
    }

    /// The sum query `query`'s last round unmasked here, before any central noise: all the
    /// coordinator ever holds of the data. A test hook (feature `test-util`): with
    /// distributed noise it is already noisy (a test shows it), and with central noise it is
    /// the exact sum, which lets a whole-system test check partners' local aggregation
    /// without any switch that could turn noise off.
    #[cfg(feature = "test-util")]
    pub fn unmasked_sum(&self, query: i64) -> Option<Vec<i64>> {
        self.unmasked_sums.lock().ok()?.get(&query).cloned()
    }
}

impl Rounds {
    /// From now on, training jobs of datasets with central noise take their Newton steps on
    /// the exact sums: the test hook (feature `test-util`) that checks a federated fit
    /// against the pooled one. Nothing but a test's own code can call it.
    #[cfg(feature = "test-util")]
    pub fn switch_off_central_noise_for_tests(&self) {
        self.central_noise_off.store(true, Ordering::SeqCst);
    }

    /// Whether [`Rounds::switch_off_central_noise_for_tests`] was called (never without
    /// feature `test-util`).
    pub(crate) fn central_noise_off(&self) -> bool {
        #[cfg(feature = "test-util")]
        return self.central_noise_off.load(Ordering::SeqCst);
        #[cfg(not(feature = "test-util"))]
        false
    }
}

impl Default for Rounds {
    fn default() -> Self {
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        Self::new(format!("coordinator-{}-{nanos}", std::process::id()))
    }
}
