//! The driver lease: with several coordinators on one PostgreSQL database, exactly one
//! drives rounds. It holds a lease in the store and renews it; if it stops renewing, another
//! coordinator configured to drive takes over once the lease lapses (by the injected clock)
//! and adopts the open rounds from the store.

use crate::AppState;
use crate::error::Result;
use crate::store::rounds;

/// Takes or renews the lease. A coordinator that loses it (it stalled past the lease and
/// another took over) forgets its rounds at once; the new holder has adopted them.
pub async fn renew(state: &AppState) -> Result<bool> {
    let now = state.clock.now_ms();
    let ttl = state.config.driver_lease().as_millis() as i64;
    let owner = state.rounds.owner();
    let held = state
        .store
        .run_tx("renew the driver lease", async |tx| {
            rounds::claim_driver_lease(tx, owner, now, ttl).await
        })
        .await?;
    let had = state.rounds.set_drives(held);
    if had && !held {
        tracing::error!(
            "lost the round-driver lease to another coordinator; its rounds are now driven there"
        );
    } else if !had && held {
        tracing::info!(owner, "holding the round-driver lease");
    } else if !held {
        let (owner, until) = rounds::driver_lease(&mut *state.store.read().await?).await?;
        tracing::debug!(%owner, until, "another coordinator drives rounds");
    }
    Ok(held)
}
