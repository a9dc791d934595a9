//! Rounds and every protocol message they accepted, so that a restarted coordinator can
//! rebuild each open round by replaying its messages through the state machine. A round's
//! id is its query's id: one query, one round.

use civic_api::{decode_binary, encode_binary};
use civic_secagg::{Phase, Roster, RoundConfig};
use serde::{Deserialize, Serialize};
use sqlx::{AnyConnection, Row};

use super::now_rfc3339;
use crate::error::{ApiError, ApiResult};

/// What a round was opened with: fixed for its life.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RoundSetup {
    /// The secure-aggregation configuration.
    pub config: RoundConfig,
    /// The participants' identity keys as registered when the round opened.
    pub roster: Roster,
    /// The public row bound the ring was sized for.
    pub max_rows_per_partner: u64,
}

/// A round as stored.
#[derive(Clone, Debug)]
pub struct RoundRow {
    /// Id (= query id).
    pub id: i64,
    /// Setup.
    pub setup: RoundSetup,
    /// The phase it reached.
    pub phase: Phase,
}

/// The stored name of a phase.
pub fn phase_name(p: Phase) -> &'static str {
    match p {
        Phase::AdvertiseKeys => "advertise_keys",
        Phase::ShareKeys => "share_keys",
        Phase::MaskedInputCollection => "masked_input",
        Phase::ConsistencyCheck => "consistency_check",
        Phase::Unmasking => "unmasking",
        Phase::Finished => "finished",
        Phase::Aborted => "aborted",
    }
}

/// Parses [`phase_name`].
pub fn parse_phase(s: &str) -> Option<Phase> {
    use Phase::*;
    [
        AdvertiseKeys,
        ShareKeys,
        MaskedInputCollection,
        ConsistencyCheck,
        Unmasking,
        Finished,
        Aborted,
    ]
    .into_iter()
    .find(|p| phase_name(*p) == s)
}

fn corrupt(what: impl std::fmt::Display) -> ApiError {
    ApiError::internal("reading a stored round", what)
}

/// Opens a round.
pub async fn insert(conn: &mut AnyConnection, id: i64, setup: &RoundSetup) -> ApiResult<()> {
    sqlx::query(
        "INSERT INTO rounds (id, setup, phase, state, opened_at) VALUES ($1, $2, $3, 'open', $4)",
    )
    .bind(id)
    .bind(encode_binary(setup))
    .bind(phase_name(Phase::AdvertiseKeys))
    .bind(now_rfc3339())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Records that a round moved to `phase` (closing it when Finished or Aborted).
pub async fn set_phase(conn: &mut AnyConnection, id: i64, phase: Phase) -> ApiResult<()> {
    let state = match phase {
        Phase::Finished => "finished",
        Phase::Aborted => "aborted",
        _ => "open",
    };
    sqlx::query("UPDATE rounds SET phase = $1, state = $2 WHERE id = $3")
        .bind(phase_name(phase))
        .bind(state)
        .bind(id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Keeps an accepted protocol message (bincode, as received). A partner's retry of a message
/// already stored (its first attempt's reply was lost) is accepted as the same message; a
/// different message for the same phase is refused.
pub async fn insert_message(
    conn: &mut AnyConnection,
    round: i64,
    phase: Phase,
    partner: u32,
    body: &[u8],
) -> ApiResult<()> {
    let inserted = sqlx::query(
        "INSERT INTO round_messages (round_id, phase, partner, body) VALUES ($1, $2, $3, $4)
         ON CONFLICT (round_id, phase, partner) DO NOTHING",
    )
    .bind(round)
    .bind(phase_name(phase))
    .bind(i64::from(partner))
    .bind(body.to_vec())
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if inserted == 1 {
        return Ok(());
    }
    let stored = messages_of(conn, round, phase, partner).await?;
    if stored.as_deref() == Some(body) {
        Ok(())
    } else {
        Err(ApiError::conflict(
            "protocol.duplicate",
            format!(
                "partner {partner} already sent a different {} message in round {round}",
                phase_name(phase)
            ),
        ))
    }
}

/// The accepted messages of one phase, by partner.
pub async fn messages(
    conn: &mut AnyConnection,
    round: i64,
    phase: Phase,
) -> ApiResult<Vec<Vec<u8>>> {
    let rows = sqlx::query(
        "SELECT body FROM round_messages WHERE round_id = $1 AND phase = $2 ORDER BY partner",
    )
    .bind(round)
    .bind(phase_name(phase))
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(|r| Ok(r.try_get("body")?)).collect()
}

/// One partner's stored message for one phase.
pub async fn messages_of(
    conn: &mut AnyConnection,
    round: i64,
    phase: Phase,
    partner: u32,
) -> ApiResult<Option<Vec<u8>>> {
    let row = sqlx::query(
        "SELECT body FROM round_messages WHERE round_id = $1 AND phase = $2 AND partner = $3",
    )
    .bind(round)
    .bind(phase_name(phase))
    .bind(i64::from(partner))
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.map(|r| r.try_get("body")).transpose()?)
}

/// Drops a closed round's messages (the masked vectors are the bulk of the store).
pub async fn delete_messages(conn: &mut AnyConnection, round: i64) -> ApiResult<()> {
    sqlx::query("DELETE FROM round_messages WHERE round_id = $1")
        .bind(round)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// A round's state in the store (`open`, `finished` or `aborted`), if it exists.
pub async fn state(conn: &mut AnyConnection, id: i64) -> ApiResult<Option<String>> {
    let row = sqlx::query("SELECT state FROM rounds WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(row.map(|r| r.try_get("state")).transpose()?)
}

/// The ids of every open round.
pub async fn open_ids(conn: &mut AnyConnection) -> ApiResult<Vec<i64>> {
    let rows = sqlx::query("SELECT id FROM rounds WHERE state = 'open' ORDER BY id")
        .fetch_all(&mut *conn)
        .await?;
    rows.iter().map(|r| Ok(r.try_get("id")?)).collect()
}

/// Every open round.
pub async fn open(conn: &mut AnyConnection) -> ApiResult<Vec<RoundRow>> {
    let rows = sqlx::query("SELECT id, setup, phase FROM rounds WHERE state = 'open' ORDER BY id")
        .fetch_all(&mut *conn)
        .await?;
    rows.iter()
        .map(|r| {
            let setup: Vec<u8> = r.try_get("setup")?;
            let phase: String = r.try_get("phase")?;
            Ok(RoundRow {
                id: r.try_get("id")?,
                setup: decode_binary(&setup).map_err(corrupt)?,
                phase: parse_phase(&phase).ok_or_else(|| corrupt(phase))?,
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
) -> ApiResult<bool> {
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
pub async fn driver_lease(conn: &mut AnyConnection) -> ApiResult<(String, i64)> {
    let row = sqlx::query("SELECT owner, expires_ms FROM driver_lease WHERE id = 1")
        .fetch_one(&mut *conn)
        .await?;
    Ok((row.try_get("owner")?, row.try_get("expires_ms")?))
}
