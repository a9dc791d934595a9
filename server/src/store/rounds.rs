//! Rounds and every protocol message they accepted, so that a restarted coordinator can
//! rebuild each open round by replaying its messages through its protocol. A round has its
//! own id and belongs to one query; a query may own several rounds.

use civic_api::{decode_binary, encode_binary};
use civic_secagg::{Roster, RoundConfig};
use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use super::{StoreError, StoreResult};

/// What a round was opened with: fixed for its life. Every protocol runs among a
/// configured set of participants with registered identity keys.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RoundSetup {
    /// The participants, thresholds, vector layout and ring.
    pub config: RoundConfig,
    /// The participants' identity keys as registered when the round opened.
    pub roster: Roster,
    /// The public row bound the ring was sized for.
    pub max_rows_per_partner: u64,
}

/// A round as stored.
#[derive(Clone, Debug)]
pub struct RoundRow {
    /// The round.
    pub id: i64,
    /// The query it belongs to.
    pub query_id: i64,
    /// The protocol it runs (a name in the coordinator's protocol registry).
    pub protocol: String,
    /// Setup.
    pub setup: RoundSetup,
    /// The step it reached.
    pub step: String,
}

/// Where a round stands in the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoundState {
    /// Taking messages.
    Open,
    /// Released.
    Finished,
    /// Ended without a release.
    Aborted,
}

impl RoundState {
    fn as_str(self) -> &'static str {
        match self {
            RoundState::Open => "open",
            RoundState::Finished => "finished",
            RoundState::Aborted => "aborted",
        }
    }
}

/// What storing a message did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stored {
    /// It is new.
    New,
    /// The same bytes were stored already (a retry).
    Again,
    /// A different message from the same partner for the same step is stored.
    Different,
}

/// A fresh round id (ids of rounds are their own, not their queries').
pub async fn next_id(conn: &mut AnyConnection) -> StoreResult<i64> {
    let row =
        sqlx::query("UPDATE counters SET value = value + 1 WHERE name = 'round' RETURNING value")
            .fetch_one(&mut *conn)
            .await?;
    Ok(row.try_get("value")?)
}

/// Opens a round at its first step.
pub async fn insert(conn: &mut AnyConnection, round: &RoundRow, at: &str) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO rounds (id, query_id, protocol, setup, phase, state, opened_at)
         VALUES ($1, $2, $3, $4, $5, 'open', $6)",
    )
    .bind(round.id)
    .bind(round.query_id)
    .bind(&round.protocol)
    .bind(encode_binary(&round.setup))
    .bind(&round.step)
    .bind(at)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Records that an open round moved to `step`.
pub async fn set_step(conn: &mut AnyConnection, id: i64, step: &str) -> StoreResult<()> {
    sqlx::query("UPDATE rounds SET phase = $1 WHERE id = $2 AND state = 'open'")
        .bind(step)
        .bind(id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Closes a round (finished or aborted) and drops its messages (the masked vectors are the
/// bulk of the store). False if it was not open.
pub async fn close(conn: &mut AnyConnection, id: i64, state: RoundState) -> StoreResult<bool> {
    let n =
        sqlx::query("UPDATE rounds SET phase = $1, state = $1 WHERE id = $2 AND state = 'open'")
            .bind(state.as_str())
            .bind(id)
            .execute(&mut *conn)
            .await?
            .rows_affected();
    sqlx::query("DELETE FROM round_messages WHERE round_id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    Ok(n == 1)
}

/// Keeps an accepted protocol message (as received). A partner's retry of a message already
/// stored (its first attempt's reply was lost) is [`Stored::Again`]; a different message for
/// the same step is [`Stored::Different`] and nothing is written.
pub async fn insert_message(
    conn: &mut AnyConnection,
    round: i64,
    step: &str,
    partner: u32,
    body: &[u8],
) -> StoreResult<Stored> {
    let inserted = sqlx::query(
        "INSERT INTO round_messages (round_id, phase, partner, body) VALUES ($1, $2, $3, $4)
         ON CONFLICT (round_id, phase, partner) DO NOTHING",
    )
    .bind(round)
    .bind(step)
    .bind(i64::from(partner))
    .bind(body.to_vec())
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if inserted == 1 {
        return Ok(Stored::New);
    }
    Ok(
        if message_of(conn, round, step, partner).await?.as_deref() == Some(body) {
            Stored::Again
        } else {
            Stored::Different
        },
    )
}

/// The accepted messages of one step, by partner.
pub async fn messages(
    conn: &mut AnyConnection,
    round: i64,
    step: &str,
) -> StoreResult<Vec<(u32, Vec<u8>)>> {
    let rows = sqlx::query(
        "SELECT partner, body FROM round_messages WHERE round_id = $1 AND phase = $2
         ORDER BY partner",
    )
    .bind(round)
    .bind(step)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| Ok((sender(r)?, r.try_get("body")?)))
        .collect()
}

/// A message row's sender.
fn sender(row: &AnyRow) -> StoreResult<u32> {
    let partner: i64 = row.try_get("partner")?;
    u32::try_from(partner).map_err(|_| StoreError::corrupt("message sender", partner))
}

/// One partner's stored message for one step.
pub async fn message_of(
    conn: &mut AnyConnection,
    round: i64,
    step: &str,
    partner: u32,
) -> StoreResult<Option<Vec<u8>>> {
    let row = sqlx::query(
        "SELECT body FROM round_messages WHERE round_id = $1 AND phase = $2 AND partner = $3",
    )
    .bind(round)
    .bind(step)
    .bind(i64::from(partner))
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.map(|r| r.try_get("body")).transpose()?)
}

/// The partners with a stored message for one step, in order.
pub async fn senders(conn: &mut AnyConnection, round: i64, step: &str) -> StoreResult<Vec<u32>> {
    let rows = sqlx::query(
        "SELECT partner FROM round_messages WHERE round_id = $1 AND phase = $2 ORDER BY partner",
    )
    .bind(round)
    .bind(step)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(sender).collect()
}

/// A round's state in the store, if it exists.
pub async fn state(conn: &mut AnyConnection, id: i64) -> StoreResult<Option<RoundState>> {
    let row = sqlx::query("SELECT state FROM rounds WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    let Some(row) = row else { return Ok(None) };
    let state: String = row.try_get("state")?;
    [RoundState::Open, RoundState::Finished, RoundState::Aborted]
        .into_iter()
        .find(|s| s.as_str() == state)
        .map(Some)
        .ok_or_else(|| StoreError::corrupt("round state", state))
}

/// The ids of every open round.
pub async fn open_ids(conn: &mut AnyConnection) -> StoreResult<Vec<i64>> {
    let rows = sqlx::query("SELECT id FROM rounds WHERE state = 'open' ORDER BY id")
        .fetch_all(&mut *conn)
        .await?;
    rows.iter().map(|r| Ok(r.try_get("id")?)).collect()
}

/// Every open round.
pub async fn open(conn: &mut AnyConnection) -> StoreResult<Vec<RoundRow>> {
    let rows = sqlx::query(
        "SELECT id, query_id, protocol, setup, phase FROM rounds WHERE state = 'open' ORDER BY id",
    )
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| {
            let setup: Vec<u8> = r.try_get("setup")?;
            Ok(RoundRow {
                id: r.try_get("id")?,
                query_id: r.try_get("query_id")?,
                protocol: r.try_get("protocol")?,
                setup: decode_binary(&setup).map_err(|e| StoreError::corrupt("round setup", e))?,
                step: r.try_get("phase")?,
            })
        })
        .collect()
}

/// Takes or renews the lease that lets one coordinator drive rounds: granted if it is free,
/// expired, or already `owner`'s. Returns whether `owner` holds it until `now_ms + ttl_ms`.
pub async fn claim_driver_lease(
    conn: &mut AnyConnection,
    owner: &str,
    now_ms: i64,
    ttl_ms: i64,
) -> StoreResult<bool> {
    let n = sqlx::query(
        "UPDATE driver_lease SET owner = $1, expires_ms = $2
         WHERE id = 1 AND (owner = $3 OR expires_ms < $4)",
    )
    .bind(owner)
    .bind(now_ms + ttl_ms)
    .bind(owner)
    .bind(now_ms)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// Who holds the driver lease, and until when.
pub async fn driver_lease(conn: &mut AnyConnection) -> StoreResult<(String, i64)> {
    let row = sqlx::query("SELECT owner, expires_ms FROM driver_lease WHERE id = 1")
        .fetch_one(&mut *conn)
        .await?;
    Ok((row.try_get("owner")?, row.try_get("expires_ms")?))
}

/// The query a round belongs to.
pub async fn query_of(conn: &mut AnyConnection, id: i64) -> StoreResult<Option<i64>> {
    let row = sqlx::query("SELECT query_id FROM rounds WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(row.map(|r| r.try_get("query_id")).transpose()?)
}

/// Whether `owner` holds the driver lease at `now_ms`, locking the lease row for the rest
/// of the transaction (so that no other coordinator can take the lease before it commits):
/// the fence every write a driver makes to a round starts with.
pub async fn hold_driver_lease(
    conn: &mut AnyConnection,
    owner: &str,
    now_ms: i64,
) -> StoreResult<bool> {
    let n = sqlx::query(
        "UPDATE driver_lease SET owner = owner WHERE id = 1 AND owner = $1 AND expires_ms >= $2",
    )
    .bind(owner)
    .bind(now_ms)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(n == 1)
}
