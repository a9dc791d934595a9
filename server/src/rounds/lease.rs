//! The driver lease: with several coordinators on one PostgreSQL database, exactly one
//! drives rounds. It holds a lease in the store and renews it; if it stops renewing, another
//! coordinator configured to drive takes over once the lease lapses (by the injected clock)
//! and adopts the open rounds from the store.

use actix_web::web;
use sqlx::AnyConnection;

use crate::AppState;
use crate::error::{Error, Result};
use crate::store::rounds;

/// Takes or renews the lease. A coordinator that loses it (it stalled past the lease and
/// another took over) forgets its rounds at once; the new holder has adopted them.
pub async fn renew(state: &AppState) -> Result<bool> {
    if state.rounds.halted() {
        return Ok(false);
    }
    let ttl = state.config.driver_lease().as_millis() as i64;
    let owner = state.rounds.owner();
    let held = state
        .store
        .run_tx("renew the driver lease", async |tx| {
            // The time is read once the writer is ours, so a wait for it is not counted
            // into the lease.
            rounds::claim_driver_lease(tx, owner, state.clock.now_ms(), ttl).await
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

/// Keeps the lease, on its own task so that a long step or release cannot starve it. A
/// renewal that fails (the store unreachable) is treated as the lease lost: the rounds are
/// forgotten here, to be adopted again from the store once it is held again.
pub async fn keep(state: web::Data<AppState>) {
    let every = state.config.lease_renewal();
    loop {
        tokio::time::sleep(every).await;
        if state.rounds.halted() {
            return;
        }
        if let Err(e) = renew(&state).await {
            tracing::error!(error = %e, "renewing the round-driver lease failed; not driving rounds until it is renewed");
            state.rounds.set_drives(false);
        }
    }
}

/// The fence every write a driver makes to a round starts with, inside its transaction:
/// refused (503, retry) unless this coordinator holds the lease now, and the lease row stays
/// locked until the transaction ends, so a coordinator that lost its lease cannot change a
/// round another one now drives.
pub async fn fence(state: &AppState, tx: &mut AnyConnection, round: i64) -> Result<()> {
    if rounds::hold_driver_lease(tx, state.rounds.owner(), state.clock.now_ms()).await? {
        Ok(())
    } else {
        Err(Error::RoundNotDrivenHere(round))
    }
}
