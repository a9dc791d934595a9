//! Training jobs' rounds: which Newton step each round computes, at which coefficients, and
//! once it finished, its noisy total. A job's iterates are these rows in order.

use sqlx::{AnyConnection, Row};

use super::{StoreError, StoreResult, from_json, to_json};

/// One round of a training job.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainingRound {
    /// The round.
    pub round_id: i64,
    /// The job.
    pub query_id: i64,
    /// Its Newton step, from 0.
    pub iteration: u32,
    /// The coefficients it computes at (scaled coordinates).
    pub coefficients: Vec<f64>,
    /// Once finished: its noisy total (real units) and its contributors.
    pub total: Option<(Vec<f64>, usize)>,
}

/// Records that `round` computes step `iteration` of job `query` at `coefficients`.
pub async fn insert(conn: &mut AnyConnection, round: &TrainingRound, at: &str) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO training_rounds (round_id, query_id, iteration, coefficients, opened_at)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(round.round_id)
    .bind(round.query_id)
    .bind(i64::from(round.iteration))
    .bind(to_json("coefficients", &round.coefficients)?)
    .bind(at)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Records round `round`'s noisy total and contributors.
pub async fn finish(
    conn: &mut AnyConnection,
    round: i64,
    total: &[f64],
    contributors: usize,
) -> StoreResult<()> {
    sqlx::query("UPDATE training_rounds SET total = $1, contributors = $2 WHERE round_id = $3")
        .bind(to_json("total", &total)?)
        .bind(contributors as i64)
        .bind(round)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

fn training_round(r: &sqlx::any::AnyRow) -> StoreResult<TrainingRound> {
    let iteration: i64 = r.try_get("iteration")?;
    let total: Option<String> = r.try_get("total")?;
    let contributors: Option<i64> = r.try_get("contributors")?;
    Ok(TrainingRound {
        round_id: r.try_get("round_id")?,
        query_id: r.try_get("query_id")?,
        iteration: u32::try_from(iteration)
            .map_err(|_| StoreError::corrupt("training round", iteration))?,
        coefficients: from_json("coefficients", &r.try_get::<String, _>("coefficients")?)?,
        total: match (total, contributors) {
            (Some(t), Some(c)) => Some((
                from_json("total", &t)?,
                usize::try_from(c).map_err(|_| StoreError::corrupt("training round", c))?,
            )),
            _ => None,
        },
    })
}

const COLUMNS: &str = "round_id, query_id, iteration, coefficients, total, contributors";

/// The training step round `round` computes, if it is a training job's.
pub async fn of_round(conn: &mut AnyConnection, round: i64) -> StoreResult<Option<TrainingRound>> {
    let sql = format!("SELECT {COLUMNS} FROM training_rounds WHERE round_id = $1");
    let row = sqlx::query(&sql)
        .bind(round)
        .fetch_optional(&mut *conn)
        .await?;
    row.as_ref().map(training_round).transpose()
}

/// Job `query`'s rounds, by iteration.
pub async fn of_query(conn: &mut AnyConnection, query: i64) -> StoreResult<Vec<TrainingRound>> {
    let sql =
        format!("SELECT {COLUMNS} FROM training_rounds WHERE query_id = $1 ORDER BY iteration");
    let rows = sqlx::query(&sql).bind(query).fetch_all(&mut *conn).await?;
    rows.iter().map(training_round).collect()
}

/// A stopped job that asked the question `fingerprint` and finished some of its iterations:
/// its partners sent their inputs for those, and an agent never answers an iteration of the
/// same question twice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoppedJob {
    /// The job.
    pub query_id: i64,
    /// Its project.
    pub project: String,
    /// Its iterations that finished.
    pub finished: u32,
}

/// Of the stopped jobs that asked the question `fingerprint`, the one that finished the most
/// iterations.
pub async fn stopped_with_answers(
    conn: &mut AnyConnection,
    fingerprint: &str,
) -> StoreResult<Option<StoppedJob>> {
    let row = sqlx::query(
        "SELECT t.query_id AS query_id, q.project AS project, COUNT(*) AS finished
         FROM training_rounds t JOIN queries q ON q.id = t.query_id
         WHERE q.fingerprint = $1 AND q.state = 'aborted' AND t.total IS NOT NULL
         GROUP BY t.query_id, q.project ORDER BY finished DESC, t.query_id LIMIT 1",
    )
    .bind(fingerprint)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let finished: i64 = row.try_get("finished")?;
    Ok(Some(StoppedJob {
        query_id: row.try_get("query_id")?,
        project: row.try_get("project")?,
        finished: u32::try_from(finished)
            .map_err(|_| StoreError::corrupt("training rounds", finished))?,
    }))
}
