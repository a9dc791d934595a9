//! Reading a dataset where the partner keeps it: CSV (streamed record by record), SQLite
//! (opened read-only) and PostgreSQL. Every source yields rows of [`Cell`]s in the order of
//! the readers it is given, and the resident id when the mapping names one; memory does not
//! grow with the number of rows.

use std::io::IsTerminal;
use std::path::Path;
use std::time::{Duration, Instant};

use futures_util::TryStreamExt;
use sqlx::{Column as _, Row, TypeInfo, ValueRef};

use crate::config::{DatasetMapping, SourceConfig};
use crate::error::AgentError;
use crate::pushdown::{quote_identifier, quote_table};
use crate::schema::{Cell, ColumnReader, InvalidRule, Raw};

/// A sink for rows: the cells in reader order, the resident id if mapped, and where the row
/// is.
pub type RowSink<'a> = dyn FnMut(&[Cell], Option<&[u8]>, RowAt) + Send + 'a;

/// Where a row is, for messages a partner acts on: its line in a CSV file (the header is line
/// 1, so a spreadsheet or an editor finds it), or its place in a table's scan order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RowAt {
    /// A CSV file's line (where the record starts).
    Line(u64),
    /// The nth row a SQL source returned (1-based, in `order_by` order when set).
    Row(u64),
}

impl std::fmt::Display for RowAt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RowAt::Line(n) => write!(f, "line {n}"),
            RowAt::Row(n) => write!(f, "row {n}"),
        }
    }
}

/// What a scan does with a value its reader cannot read, or a record it cannot parse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScanMode {
    /// Answering a round: a value is read as its mapping's `invalid` rule says; a refused
    /// value or a malformed record stops the scan with an error naming where.
    Strict,
    /// `check`: every unreadable value is read as [`Cell::Invalid`] and every malformed
    /// record is skipped and counted, so that one pass finds every problem.
    Survey,
}

/// How many places of each kind of problem `check` names.
pub const FIRST_FEW: usize = 5;

/// What a scan read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScanSummary {
    /// Rows handed to the sink.
    pub rows: u64,
    /// Records skipped as malformed ([`ScanMode::Survey`] only).
    pub malformed: u64,
    /// The first [`FIRST_FEW`] of them, with what is wrong.
    pub first_malformed: Vec<(RowAt, String)>,
}

/// The hint after a refused value: both ways out.
const INVALID_HINT: &str = "fix the extract, or read such values as missing with \
     invalid = \"missing\" on the column's mapping (`civic-agent check` lists every one)";

/// How a scan reports progress: a bar on a terminal, log lines otherwise.
pub struct Progress {
    bar: Option<indicatif::ProgressBar>,
    label: String,
    started: Instant,
    last_log: Instant,
}

/// Log a line this often when not on a terminal.
const LOG_EVERY: Duration = Duration::from_secs(10);

impl Progress {
    /// Starts reporting a scan of `label`; `total` is the size in bytes, when known.
    pub fn start(label: &str, total: Option<u64>) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = match total {
                Some(t) => indicatif::ProgressBar::new(t).with_style(
                    indicatif::ProgressStyle::with_template(
                        "{msg} [{bar:30}] {bytes}/{total_bytes} ({eta})",
                    )
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
                ),
                None => indicatif::ProgressBar::new_spinner(),
            };
            bar.set_message(label.to_string());
            bar
        });
        tracing::info!(source = label, "scan started");
        Self {
            bar,
            label: label.to_string(),
            started: Instant::now(),
            last_log: Instant::now(),
        }
    }

    fn tick(&mut self, rows: u64, position: Option<u64>) {
        if let Some(bar) = &self.bar {
            match position {
                Some(p) => bar.set_position(p),
                None => bar.set_message(format!("{} ({rows} rows)", self.label)),
            }
        } else if self.last_log.elapsed() >= LOG_EVERY {
            self.last_log = Instant::now();
            tracing::info!(source = %self.label, rows, "scanning");
        }
    }

    fn finish(self, rows: u64) {
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
        let seconds = self.started.elapsed().as_secs_f64();
        tracing::info!(source = %self.label, rows, seconds, "scan finished");
    }
}

/// A human name for the source (file or table; never a database URL, which may hold a
/// password).
pub fn source_name(source: &SourceConfig) -> String {
    match source {
        SourceConfig::Csv { path, .. } => path.display().to_string(),
        SourceConfig::Sqlite { path, table } => format!("{} table {table}", path.display()),
        SourceConfig::Postgres { table, .. } => format!("PostgreSQL table {table}"),
    }
}

/// Reads every row of the mapping's source, handing each to `sink`; `mode` says what an
/// unreadable value or record does.
pub async fn scan(
    mapping: &DatasetMapping,
    readers: &[ColumnReader],
    mode: ScanMode,
    sink: &mut RowSink<'_>,
) -> Result<ScanSummary, AgentError> {
    match &mapping.source {
        SourceConfig::Csv { path, delimiter } => {
            let delimiter = delimiter.unwrap_or(',') as u8;
            let resident = mapping.resident_column.as_deref();
            // CSV reading is blocking file I/O: keep it off the async workers' toes.
            tokio::task::block_in_place(|| scan_csv(path, delimiter, readers, resident, mode, sink))
        }
        SourceConfig::Sqlite { path, table } => {
            let pool = open_sqlite(path).await?;
            let rows = scan_sql(&pool, mapping, table, readers, mode, sink, false).await;
            pool.close().await;
            rows
        }
        SourceConfig::Postgres { url, table } => {
            let pool = open_postgres(url, table).await?;
            let rows = scan_sql(&pool, mapping, table, readers, mode, sink, true).await;
            pool.close().await;
            rows
        }
    }
}

/// Streams a CSV file with a header row.
pub fn scan_csv(
    path: &Path,
    delimiter: u8,
    readers: &[ColumnReader],
    resident: Option<&str>,
    mode: ScanMode,
    sink: &mut RowSink<'_>,
) -> Result<ScanSummary, AgentError> {
    let name = path.display().to_string();
    let source_err = |reason: String| AgentError::Source {
        source_name: name.clone(),
        reason,
    };
    let file = std::fs::File::open(path).map_err(|e| source_err(format!("cannot open: {e}")))?;
    let size = file.metadata().ok().map(|m| m.len());
    let mut csv = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .has_headers(true)
        .from_reader(std::io::BufReader::with_capacity(1 << 20, file));
    let headers = csv
        .byte_headers()
        .map_err(|e| source_err(format!("cannot read the header row: {e}")))?
        .clone();
    let index_of = |local: &str| -> Result<usize, AgentError> {
        headers
            .iter()
            .position(|h| h == local.as_bytes())
            .ok_or_else(|| {
                let found: Vec<String> = headers
                    .iter()
                    .map(|h| String::from_utf8_lossy(h).into_owned())
                    .collect();
                source_err(format!(
                    "no column \"{local}\" in the header row (found: {})",
                    found.join(", ")
                ))
            })
    };
    let indices = readers
        .iter()
        .map(|r| index_of(&r.local))
        .collect::<Result<Vec<_>, _>>()?;
    let resident_index = resident.map(index_of).transpose()?;
    let mut progress = Progress::start(&name, size);
    let mut record = csv::ByteRecord::new();
    let mut cells = vec![Cell::Missing; readers.len()];
    let mut summary = ScanSummary::default();
    loop {
        match csv.read_byte_record(&mut record) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => {
                let at = RowAt::Line(e.position().map_or(0, |p| p.line()));
                let reason = format!("malformed CSV: {}", csv_reason(&e));
                // A record of the wrong length leaves the reader at the next one.
                let skippable = matches!(e.kind(), csv::ErrorKind::UnequalLengths { .. });
                if mode == ScanMode::Survey && skippable {
                    summary.malformed += 1;
                    if summary.first_malformed.len() < FIRST_FEW {
                        summary.first_malformed.push((at, reason));
                    }
                    continue;
                }
                return Err(AgentError::Data {
                    source_name: name,
                    at,
                    column: "-".into(),
                    reason,
                });
            }
        }
        summary.rows += 1;
        let at = RowAt::Line(record.position().map_or(0, |p| p.line()));
        for ((reader, &i), cell) in readers.iter().zip(&indices).zip(cells.iter_mut()) {
            let field = record.get(i).unwrap_or_default();
            let read = std::str::from_utf8(field)
                .map_err(|_| "not valid UTF-8".to_string())
                .and_then(|text| reader.read(Raw::Text(text)));
            *cell = settle(read, reader, mode).map_err(|reason| AgentError::Data {
                source_name: name.clone(),
                at,
                column: format!("{} (federated {})", reader.local, reader.column.name),
                reason,
            })?;
        }
        let resident = resident_index.map(|i| record.get(i).unwrap_or_default());
        sink(&cells, resident, at);
        if summary.rows.is_multiple_of(65_536) {
            let position = record.position().map(|p| p.byte()).unwrap_or(0);
            progress.tick(summary.rows, Some(position));
        }
    }
    progress.finish(summary.rows);
    Ok(summary)
}

/// A read value under the scan's mode and the reader's `invalid` rule: the cell, or the reason
/// the scan stops.
fn settle(
    read: Result<Cell, String>,
    reader: &ColumnReader,
    mode: ScanMode,
) -> Result<Cell, String> {
    match read {
        Ok(cell) => Ok(cell),
        Err(_) if mode == ScanMode::Survey || reader.invalid == InvalidRule::Missing => {
            Ok(Cell::Invalid)
        }
        Err(reason) => Err(format!("{reason}; {INVALID_HINT}")),
    }
}

/// The csv crate's error without the record's contents.
fn csv_reason(e: &csv::Error) -> String {
    match e.kind() {
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => format!("{len} fields where the header has {expected_len}"),
        csv::ErrorKind::Utf8 { .. } => "not valid UTF-8".into(),
        csv::ErrorKind::Io(io) => io.to_string(),
        _ => "cannot parse the record".into(),
    }
}

/// Opens a SQLite file read-only (the agent never writes to a partner's database).
pub async fn open_sqlite(path: &Path) -> Result<sqlx::SqlitePool, AgentError> {
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(path)
        .read_only(true);
    sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .map_err(|e| AgentError::Source {
            source_name: path.display().to_string(),
            reason: format!("cannot open the SQLite database: {e}"),
        })
}

/// Connects to PostgreSQL (the error names the table, not the URL).
pub async fn open_postgres(url: &str, table: &str) -> Result<sqlx::PgPool, AgentError> {
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(url)
        .await
        .map_err(|e| AgentError::Source {
            source_name: format!("PostgreSQL table {table}"),
            reason: format!("cannot connect: {e}"),
        })
}

async fn scan_sql<DB: sqlx::Database>(
    pool: &sqlx::Pool<DB>,
    mapping: &DatasetMapping,
    table: &str,
    readers: &[ColumnReader],
    mode: ScanMode,
    sink: &mut RowSink<'_>,
    postgres: bool,
) -> Result<ScanSummary, AgentError>
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    for<'q> <DB as sqlx::Database>::Arguments<'q>: sqlx::IntoArguments<'q, DB>,
    usize: sqlx::ColumnIndex<DB::Row>,
    i64: for<'r> sqlx::Decode<'r, DB>,
    f64: for<'r> sqlx::Decode<'r, DB>,
    String: for<'r> sqlx::Decode<'r, DB>,
{
    let name = source_name(&mapping.source);
    let config_err = |reason: String| AgentError::Source {
        source_name: name.clone(),
        reason,
    };
    // PostgreSQL's text output is exact (shortest round-trip floats, exact numerics), so
    // every column is read as text there; SQLite values are read by their storage class.
    let select = |col: &str| -> Result<String, AgentError> {
        let q = quote_identifier(col).map_err(&config_err)?;
        Ok(if postgres {
            format!("CAST({q} AS TEXT)")
        } else {
            q
        })
    };
    let mut columns = readers
        .iter()
        .map(|r| select(&r.local))
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(r) = &mapping.resident_column {
        columns.push(select(r)?);
    }
    let mut sql = format!(
        "SELECT {} FROM {}",
        columns.join(", "),
        quote_table(table).map_err(&config_err)?
    );
    if let Some(o) = &mapping.order_by {
        sql.push_str(&format!(
            " ORDER BY {}",
            quote_identifier(o).map_err(&config_err)?
        ));
    }
    let mut progress = Progress::start(&name, None);
    let mut conn = pool
        .acquire()
        .await
        .map_err(|e| config_err(format!("cannot connect: {e}")))?;
    let mut stream = sqlx::raw_sql(&sql).fetch(&mut *conn);
    let mut cells = vec![Cell::Missing; readers.len()];
    let mut rows = 0u64;
    let mut resident_buf: Vec<u8> = Vec::new();
    while let Some(row) = stream
        .try_next()
        .await
        .map_err(|e| config_err(format!("reading failed: {e}")))?
    {
        rows += 1;
        let at = RowAt::Row(rows);
        for (i, (reader, cell)) in readers.iter().zip(cells.iter_mut()).enumerate() {
            let read = match sql_raw(&row, i) {
                Ok(SqlValue::Null) => reader.read(Raw::Null),
                Ok(SqlValue::Int(v)) => reader.read(Raw::Int(v)),
                Ok(SqlValue::Real(v)) => reader.read(Raw::Real(v)),
                Ok(SqlValue::Text(t)) => reader.read(Raw::Text(&t)),
                Err(reason) => Err(reason),
            };
            *cell = settle(read, reader, mode).map_err(|reason| AgentError::Data {
                source_name: name.clone(),
                at,
                column: format!("{} (federated {})", reader.local, reader.column.name),
                reason,
            })?;
        }
        let resident = if mapping.resident_column.is_some() {
            resident_buf.clear();
            match sql_raw(&row, readers.len()) {
                Ok(SqlValue::Text(t)) => resident_buf.extend_from_slice(t.as_bytes()),
                Ok(SqlValue::Int(v)) => resident_buf.extend_from_slice(v.to_string().as_bytes()),
                Ok(SqlValue::Real(v)) => resident_buf.extend_from_slice(v.to_string().as_bytes()),
                // A row without a resident id cannot be bounded: it counts as its own resident.
                Ok(SqlValue::Null) => resident_buf.extend_from_slice(&rows.to_le_bytes()),
                Err(reason) => {
                    return Err(AgentError::Data {
                        source_name: name,
                        at,
                        column: mapping.resident_column.clone().unwrap_or_default(),
                        reason,
                    });
                }
            }
            Some(resident_buf.as_slice())
        } else {
            None
        };
        sink(&cells, resident, at);
        if rows.is_multiple_of(65_536) {
            progress.tick(rows, None);
        }
    }
    progress.finish(rows);
    Ok(ScanSummary {
        rows,
        ..ScanSummary::default()
    })
}

enum SqlValue {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
}

/// One column of a row by its storage type (SQLite) or as text (PostgreSQL, which is cast).
fn sql_raw<R: Row>(row: &R, i: usize) -> Result<SqlValue, String>
where
    usize: sqlx::ColumnIndex<R>,
    i64: for<'r> sqlx::Decode<'r, R::Database>,
    f64: for<'r> sqlx::Decode<'r, R::Database>,
    String: for<'r> sqlx::Decode<'r, R::Database>,
{
    let value = row.try_get_raw(i).map_err(|e| e.to_string())?;
    if value.is_null() {
        return Ok(SqlValue::Null);
    }
    let kind = value.type_info().name().to_ascii_uppercase();
    let decode =
        |e: sqlx::Error| format!("cannot read the value ({}): {e}", row.columns()[i].name());
    Ok(match kind.as_str() {
        "INTEGER" | "INT" | "INT8" | "BIGINT" => {
            SqlValue::Int(row.try_get_unchecked::<i64, _>(i).map_err(decode)?)
        }
        "REAL" | "FLOAT" | "FLOAT8" | "DOUBLE" | "NUMERIC" => {
            SqlValue::Real(row.try_get_unchecked::<f64, _>(i).map_err(decode)?)
        }
        "TEXT" | "VARCHAR" => {
            SqlValue::Text(row.try_get_unchecked::<String, _>(i).map_err(decode)?)
        }
        other => return Err(format!("unsupported storage type {other}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use civic_policies::samples::diabetes;
    use std::collections::BTreeMap;

    use crate::schema::Value;

    /// Readers for age, sex (local codes M/F) and hba1c from local columns.
    fn readers() -> Vec<ColumnReader> {
        let policy = diabetes();
        let col = |n: &str| policy.column(n).unwrap().clone();
        let sex: BTreeMap<String, String> =
            [("F".into(), "female".into()), ("M".into(), "male".into())].into();
        vec![
            ColumnReader::new(col("age"), "age_years".into(), BTreeMap::new()).unwrap(),
            ColumnReader::new(col("sex"), "gender".into(), sex).unwrap(),
            ColumnReader::new(col("hba1c"), "hba1c_mmol".into(), BTreeMap::new()).unwrap(),
        ]
    }

    /// Rows as read: cells and resident id.
    type Rows = Vec<(Vec<Cell>, Option<Vec<u8>>)>;

    fn collect_csv(text: &str) -> Result<Rows, AgentError> {
        scan_text(text, &readers(), ScanMode::Strict).map(|(rows, _)| rows)
    }

    fn scan_text(
        text: &str,
        readers: &[ColumnReader],
        mode: ScanMode,
    ) -> Result<(Rows, ScanSummary), AgentError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("extract.csv");
        std::fs::write(&path, text).unwrap();
        let mut rows = Vec::new();
        let summary = scan_csv(
            &path,
            b',',
            readers,
            Some("nhs_pseudo"),
            mode,
            &mut |c, r, _| rows.push((c.to_vec(), r.map(<[u8]>::to_vec))),
        )?;
        Ok((rows, summary))
    }

    #[test]
    fn csv_rows_are_mapped_by_header_in_any_order() {
        let rows = collect_csv(
            "gender,notes,nhs_pseudo,hba1c_mmol,age_years\n\
             F,\"a, b\",p1,48.5,67\n\
             M,,p2,,30\n\
             X,,p3,51,\n",
        )
        .unwrap();
        assert_eq!(rows.len(), 3);
        assert_eq!(
            rows[0].0,
            vec![
                Cell::Value(Value::Int(67)),
                Cell::Value(Value::Cat(0)),
                Cell::Value(Value::Dec(48.5))
            ]
        );
        assert_eq!(rows[0].1.as_deref(), Some(&b"p1"[..]));
        assert_eq!(rows[1].0[2], Cell::Missing);
        assert_eq!(rows[2].0[0], Cell::Missing);
        assert_eq!(rows[2].0[1], Cell::OutOfDomain);
    }

    #[test]
    fn csv_errors_name_the_file_row_and_column_but_not_the_value() {
        let header = "nhs_pseudo,age_years,gender,hba1c_mmol\n";
        let e = collect_csv(&format!("{header}p1,67,F,48\np2,sixty,M,50\n"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("extract.csv, line 3, column age_years (federated age)")
                && e.contains("whole number")
                && e.contains("invalid = \"missing\"")
                && !e.contains("sixty"),
            "{e}"
        );
        let e = collect_csv(&format!("{header}p1,67,F\n"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("line 2") && e.contains("3 fields where the header has 4"),
            "{e}"
        );
        let e = collect_csv("nhs_pseudo,age,gender,hba1c_mmol\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("no column \"age_years\"") && e.contains("found: nhs_pseudo, age"),
            "{e}"
        );
        let e = collect_csv(&format!("{header}p1,67,F,4\u{fffd}8\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("hba1c_mmol") && e.contains("number"), "{e}");
    }

    #[test]
    fn a_survey_reads_past_every_problem_and_a_lenient_mapping_reads_junk_as_missing() {
        let text = "nhs_pseudo,age_years,gender,hba1c_mmol\n\
                    p1,sixty,F,48\n\
                    p2,\"6\n7\",M\n\
                    p3,40,F,x\n\
                    p4,41,M,50\n";
        // Strict: the first unreadable value stops the scan.
        assert!(scan_text(text, &readers(), ScanMode::Strict).is_err());
        // Survey: every row is read; unreadable values are Invalid; the malformed record
        // (a quoted field over two lines, and one field short) is skipped and placed by the
        // line it starts on.
        let (rows, summary) = scan_text(text, &readers(), ScanMode::Survey).unwrap();
        assert_eq!(summary.rows, 3);
        assert_eq!(summary.malformed, 1);
        assert_eq!(summary.first_malformed[0].0, RowAt::Line(3));
        assert_eq!(rows[0].0[0], Cell::Invalid);
        assert_eq!(rows[1].0[2], Cell::Invalid);
        assert_eq!(rows[2].0[0], Cell::Value(Value::Int(41)));
        // Strict, with invalid = "missing" on age and hba1c: junk reads as Invalid (missing
        // to every query); the malformed record still stops the scan.
        let lenient: Vec<ColumnReader> = readers()
            .into_iter()
            .map(|r| r.with_invalid(InvalidRule::Missing))
            .collect();
        let e = scan_text(text, &lenient, ScanMode::Strict)
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 3") && e.contains("malformed"), "{e}");
        let without_malformed = text.replace("p2,\"6\n7\",M\n", "");
        let (rows, _) = scan_text(&without_malformed, &lenient, ScanMode::Strict).unwrap();
        assert_eq!(rows[0].0[0], Cell::Invalid);
        assert_eq!(rows[1].0[2], Cell::Invalid);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn sqlite_values_are_read_by_storage_class() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gp.db");
        let url = format!("sqlite://{}?mode=rwc", path.display());
        let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
        for sql in [
            "CREATE TABLE extract (id INTEGER PRIMARY KEY, nhs_pseudo TEXT, age_years INTEGER, gender TEXT, hba1c_mmol REAL)",
            "INSERT INTO extract VALUES (1, 'p1', 67, 'F', 48.5), (2, 'p2', 30, 'M', NULL), (3, 'p1', '41', 'M', 50)",
        ] {
            sqlx::query(sql).execute(&pool).await.unwrap();
        }
        pool.close().await;
        let mapping: DatasetMapping = toml::from_str(&format!(
            r#"id = "diabetes"
            resident_column = "nhs_pseudo"
            order_by = "id"
            source = {{ kind = "sqlite", path = "{}", table = "extract" }}
            columns = {{ age = "age_years" }}"#,
            path.display()
        ))
        .unwrap();
        let mut rows = Vec::new();
        let n = scan(&mapping, &readers(), ScanMode::Strict, &mut |c, r, _| {
            rows.push((c.to_vec(), r.map(<[u8]>::to_vec)))
        })
        .await
        .unwrap();
        assert_eq!(n.rows, 3);
        assert_eq!(rows[0].0[2], Cell::Value(Value::Dec(48.5)));
        assert_eq!(rows[1].0[2], Cell::Missing);
        // Text '41' in an INTEGER column (SQLite's type affinity stored it as 41) and an
        // integer 50 read as a decimal.
        assert_eq!(rows[2].0[0], Cell::Value(Value::Int(41)));
        assert_eq!(rows[2].0[2], Cell::Value(Value::Dec(50.0)));
        assert_eq!(rows[2].1.as_deref(), Some(&b"p1"[..]));

        // A value of the wrong type names the table, row and column.
        let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
        sqlx::query("INSERT INTO extract VALUES (4, 'p4', 'old', 'F', 40)")
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
        let e = scan(&mapping, &readers(), ScanMode::Strict, &mut |_, _, _| {})
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("table extract, row 4, column age_years"), "{e}");
        let survey = scan(&mapping, &readers(), ScanMode::Survey, &mut |_, _, _| {}).await;
        assert_eq!(survey.unwrap().rows, 4);
    }
}
