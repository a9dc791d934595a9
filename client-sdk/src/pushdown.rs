//! SQL pushdown: the aggregation plan run inside the partner's own database as one
//! parameterised query, giving the same vector as [`Aggregator`](crate::evaluate::Aggregator)
//! over the same rows (the rules are in [`crate::evaluate`]).
//!
//! The query is a chain of common table expressions:
//! 1. each plan slot's value, read as the agent's scan reads it ([`crate::source`]): a
//!    category's local spelling becomes its domain index, a boolean 0 or 1 (value mapping
//!    first, then the accepted spellings), an integer or decimal its number, an empty text
//!    NULL; anything else NULL;
//! 2. the filter as a `WHERE` (SQL's three-valued logic is the Rust one), the numbers of
//!    grouping and summed columns clamped, decimals divided by their resolution;
//! 3. each grouping column's cell (bins `[e_i, e_{i+1})`, the last closed) and each block's
//!    per-row term in fixed point (`trunc(v + 0.5)`, or `-trunc(0.5 - v)` below zero);
//! 4. with a resident column, rows with every cell and term non-null numbered per resident in
//!    `order_by` order and the first K kept (a row without a resident id is its own
//!    resident, as in the scan);
//! 5. `COUNT(*)` and one `SUM` per block, grouped by the cells.
//!
//! Names (table, columns) come from the partner's configuration, never from the network, and
//! are quoted as identifiers (a table may be `schema.table`). Every value from the policy or
//! the query — filter literals, bounds, bin edges, category spellings, boolean spellings,
//! resolutions, K — is a bind parameter; the text holds only the code's own constants (0, 1,
//! 0.5, cell and domain indices, type names).
//!
//! Where the two can differ: a value the reader rejects (text that is not a number, a
//! fractional number in an integer column, a real number in a category column, NaN) stops
//! the scan with an error but reads as NULL or as the database converts it here; decimals
//! stored as text in SQLite are parsed by SQLite; a resident id stored as a real number in
//! SQLite is compared in SQLite's text form; and a sum overflowing 64 bits (more rows than
//! the plan's public bound) is a database error here where the scan wraps.

use civic_policies::dataset::ColumnType;
use civic_policies::query::CompareOp;
use futures_util::TryStreamExt;
use sqlx::Row;

use crate::evaluate::{Binning, CompiledPlan, Encoding, Lit, Term, Test};
use crate::schema::{ColumnReader, FALSE_SPELLINGS, TRUE_SPELLINGS};

/// The SQL dialect to generate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// SQLite 3.25 or later (window functions); parameters `?1, ?2, …`.
    Sqlite,
    /// PostgreSQL; parameters `$1::type, $2::type, …`.
    Postgres,
}

/// A bind parameter.
#[derive(Clone, Debug, PartialEq)]
pub enum Param {
    /// A whole number (bounds, edges and literals of integer columns, indices, K).
    Int(i64),
    /// A floating-point number (bounds, edges, literals and resolutions of decimal columns).
    Real(f64),
    /// Text (category and boolean spellings).
    Text(String),
}

/// A generated query: the SQL text and its parameters, in placeholder order.
#[derive(Clone, Debug)]
pub struct PushdownQuery {
    /// The dialect the text is written in.
    pub dialect: Dialect,
    /// The SQL.
    pub sql: String,
    /// The parameters: the n-th binds placeholder n.
    pub params: Vec<Param>,
}

/// The most parameters a statement may bind: SQLite's default limit, PostgreSQL's protocol
/// limit.
fn max_params(dialect: Dialect) -> usize {
    match dialect {
        Dialect::Sqlite => 32_766,
        Dialect::Postgres => 65_535,
    }
}

/// `"name"` with embedded quotes doubled; refuses an empty name or one holding a NUL. Names
/// come from the partner's own configuration, never from the network.
pub(crate) fn quote_identifier(name: &str) -> Result<String, String> {
    if name.is_empty() || name.contains('\0') {
        return Err(format!("{name:?} is not a usable column or table name"));
    }
    Ok(format!("\"{}\"", name.replace('"', "\"\"")))
}

/// A table name, `schema.table` quoting each part (as the scan does).
pub(crate) fn quote_table(name: &str) -> Result<String, String> {
    if name.is_empty() || name.contains('\0') {
        return Err(format!("{name:?} is not a usable table name"));
    }
    Ok(name
        .split('.')
        .map(quote_identifier)
        .collect::<Result<Vec<_>, _>>()?
        .join("."))
}

/// Collects the parameters, handing out their placeholders.
struct Binder {
    dialect: Dialect,
    params: Vec<Param>,
}

impl Binder {
    fn push(&mut self, p: Param) -> String {
        let ty = match p {
            Param::Int(_) => "bigint",
            Param::Real(_) => "float8",
            Param::Text(_) => "text",
        };
        self.params.push(p);
        let n = self.params.len();
        match self.dialect {
            Dialect::Sqlite => format!("?{n}"),
            Dialect::Postgres => format!("${n}::{ty}"),
        }
    }

    fn int(&mut self, v: i64) -> String {
        self.push(Param::Int(v))
    }

    fn real(&mut self, v: f64) -> Result<String, String> {
        if !v.is_finite() {
            return Err(format!("the plan holds the non-finite number {v}"));
        }
        Ok(self.push(Param::Real(v)))
    }

    fn text(&mut self, v: &str) -> String {
        self.push(Param::Text(v.to_string()))
    }

    /// `CASE WHEN x < lo THEN lo WHEN x > hi THEN hi ELSE x END`.
    fn clamp(&mut self, x: &str, lo: Param, hi: Param) -> Result<String, String> {
        let (lo, hi) = match (lo, hi) {
            (Param::Real(a), Param::Real(b)) => (self.real(a)?, self.real(b)?),
            (a, b) => (self.push(a), self.push(b)),
        };
        Ok(format!(
            "CASE WHEN {x} < {lo} THEN {lo} WHEN {x} > {hi} THEN {hi} ELSE {x} END"
        ))
    }

    /// 1 if `text` (lower-cased) is a true spelling, 0 if a false one, else NULL.
    fn spelled_bool(&mut self, text: &str) -> String {
        let list = |b: &mut Self, spellings: &[&str]| -> String {
            spellings
                .iter()
                .map(|s| b.text(s))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let t = list(self, &TRUE_SPELLINGS);
        let f = list(self, &FALSE_SPELLINGS);
        format!("CASE WHEN LOWER({text}) IN ({t}) THEN 1 WHEN LOWER({text}) IN ({f}) THEN 0 END")
    }
}

/// 0/1 for a spelling the reader accepts after a value mapping.
fn spelling_value(s: &str) -> Option<i64> {
    let lower = s.to_ascii_lowercase();
    if TRUE_SPELLINGS.contains(&lower.as_str()) {
        Some(1)
    } else if FALSE_SPELLINGS.contains(&lower.as_str()) {
        Some(0)
    } else {
        None
    }
}

/// A slot's value as the scan reads it (step 1 of the module comment).
fn slot_value(b: &mut Binder, reader: &ColumnReader) -> Result<String, String> {
    let c = quote_identifier(&reader.local)?;
    let text = format!("CAST({c} AS TEXT)");
    let null = match b.dialect {
        Dialect::Sqlite => "NULL",
        Dialect::Postgres => "CAST(NULL AS bigint)",
    };
    Ok(match (&reader.column.kind, b.dialect) {
        // SQLite values keep their storage class (the scan reads them so); PostgreSQL values
        // are read through their text form.
        (ColumnType::Integer { .. }, Dialect::Sqlite) => {
            format!("CASE WHEN {c} = '' THEN NULL ELSE CAST({c} AS INTEGER) END")
        }
        (ColumnType::Integer { .. }, Dialect::Postgres) => {
            format!("CAST(NULLIF({text}, '') AS bigint)")
        }
        (ColumnType::Decimal { .. }, Dialect::Sqlite) => {
            format!("CASE WHEN {c} = '' THEN NULL ELSE CAST({c} AS REAL) END")
        }
        (ColumnType::Decimal { .. }, Dialect::Postgres) => {
            format!("CAST(NULLIF({text}, '') AS double precision)")
        }
        (ColumnType::Category { .. }, _) => {
            // Sorted so the text is the same from run to run; "" reads as missing.
            let mut spellings: Vec<(&str, u32)> = reader
                .category_spellings()
                .filter(|(s, _)| !s.is_empty())
                .collect();
            spellings.sort_unstable();
            if spellings.is_empty() {
                return Ok(null.into());
            }
            let mut sql = format!("CASE {text}");
            for (spelling, index) in spellings {
                let p = b.text(spelling);
                sql.push_str(&format!(" WHEN {p} THEN {index}"));
            }
            sql.push_str(" END");
            sql
        }
        (ColumnType::Boolean, _) => {
            let mut mapped = String::new();
            for (local, federated) in &reader.values {
                if local.is_empty() {
                    continue;
                }
                let v = spelling_value(federated).ok_or_else(|| {
                    format!("the value mapping sends \"{local}\" to \"{federated}\", which is not true or false")
                })?;
                let p = b.text(local);
                mapped.push_str(&format!(" WHEN {p} THEN {v}"));
            }
            let spelled = b.spelled_bool(&text);
            let from_text = if mapped.is_empty() {
                spelled
            } else {
                format!("CASE {text}{mapped} ELSE {spelled} END")
            };
            match b.dialect {
                // The scan takes integers 0 and 1 as they are, without the value mapping.
                Dialect::Sqlite => format!(
                    "CASE typeof({c}) WHEN 'integer' THEN CASE {c} WHEN 0 THEN 0 WHEN 1 THEN 1 END WHEN 'text' THEN {from_text} END"
                ),
                Dialect::Postgres => from_text,
            }
        }
    })
}

/// The filter over the slot values `s{i}`.
fn filter_sql(b: &mut Binder, test: &Test, kinds: &[&ColumnType]) -> Result<String, String> {
    let join = |b: &mut Binder, parts: &[Test], op: &str, empty: &str| -> Result<String, String> {
        if parts.is_empty() {
            return Ok(empty.into());
        }
        let parts = parts
            .iter()
            .map(|p| filter_sql(b, p, kinds))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(format!("({})", parts.join(op)))
    };
    Ok(match test {
        Test::And(parts) => join(b, parts, " AND ", "(1 = 1)")?,
        Test::Or(parts) => join(b, parts, " OR ", "(1 = 0)")?,
        Test::Not(inner) => format!("(NOT {})", filter_sql(b, inner, kinds)?),
        Test::Compare { slot, op, lit } => {
            let kind = kinds.get(*slot).ok_or_else(|| {
                format!("the filter names slot {slot}, beyond the plan's columns")
            })?;
            let p = match (kind, lit) {
                (ColumnType::Integer { .. }, Lit::Int(v)) => b.int(*v),
                (ColumnType::Decimal { .. }, Lit::Dec(v)) => b.real(*v)?,
                (ColumnType::Category { .. }, Lit::Cat(i)) => b.int(i64::from(*i)),
                (ColumnType::Boolean, Lit::Bool(v)) => b.int(i64::from(*v)),
                _ => {
                    return Err(format!(
                        "the filter's literal for slot {slot} has the wrong type"
                    ));
                }
            };
            let op = match op {
                CompareOp::Eq => "=",
                CompareOp::Ne => "<>",
                CompareOp::Lt => "<",
                CompareOp::Le => "<=",
                CompareOp::Gt => ">",
                CompareOp::Ge => ">=",
            };
            format!("(s{slot} {op} {p})")
        }
    })
}

fn same_encoding(a: &Encoding, b: &Encoding) -> bool {
    match (a, b) {
        (Encoding::Int { min: a0, max: a1 }, Encoding::Int { min: b0, max: b1 }) => {
            a0 == b0 && a1 == b1
        }
        (
            Encoding::Dec {
                min: a0,
                max: a1,
                resolution: a2,
            },
            Encoding::Dec {
                min: b0,
                max: b1,
                resolution: b2,
            },
        ) => a0 == b0 && a1 == b1 && a2 == b2,
        _ => false,
    }
}

/// Every (slot, encoding) summed by a term, once each, in order of first use.
fn summed(term: &Term, out: &mut Vec<(usize, Encoding)>) {
    match term {
        Term::One => {}
        Term::Column(slot, enc) => {
            if !out.iter().any(|(s, e)| s == slot && same_encoding(e, enc)) {
                out.push((*slot, *enc));
            }
        }
        Term::Product(a, b) => {
            summed(a, out);
            summed(b, out);
        }
    }
}

/// A term over the encoded values `n{i}` (indices into `summed`).
fn term_sql(term: &Term, summed: &[(usize, Encoding)], dialect: Dialect) -> Result<String, String> {
    Ok(match term {
        Term::One => "1".into(),
        Term::Column(slot, enc) => {
            let i = summed
                .iter()
                .position(|(s, e)| s == slot && same_encoding(e, enc))
                .ok_or("a term's column was not collected")?;
            match (enc, dialect) {
                (Encoding::Int { .. }, _) => format!("n{i}"),
                (Encoding::Dec { .. }, Dialect::Sqlite) => format!(
                    "(CASE WHEN n{i} >= 0 THEN CAST(n{i} + 0.5 AS INTEGER) ELSE -CAST(0.5 - n{i} AS INTEGER) END)"
                ),
                (Encoding::Dec { .. }, Dialect::Postgres) => format!(
                    "CAST(CASE WHEN n{i} >= 0 THEN trunc(n{i} + 0.5::float8) ELSE -trunc(0.5::float8 - n{i}) END AS bigint)"
                ),
            }
        }
        Term::Product(a, b) => format!(
            "({}) * ({})",
            term_sql(a, summed, dialect)?,
            term_sql(b, summed, dialect)?
        ),
    })
}

fn select_list(items: Vec<String>) -> String {
    if items.is_empty() {
        "0 AS z".into()
    } else {
        items.join(", ")
    }
}

/// Builds the query for `plan` over `table`. `readers` has one reader per plan slot
/// (`readers[i].column.name == plan.columns[i]`). With `resident`, contributions are bounded
/// to the first K rows per resident in `order_by` order, which is then required.
pub fn build(
    plan: &CompiledPlan,
    readers: &[ColumnReader],
    table: &str,
    resident: Option<&str>,
    order_by: Option<&str>,
    dialect: Dialect,
) -> Result<PushdownQuery, String> {
    if readers.len() != plan.columns.len()
        || readers
            .iter()
            .zip(&plan.columns)
            .any(|(r, c)| r.column.name != *c)
    {
        return Err("the column readers do not match the plan's columns".into());
    }
    if plan.terms.is_empty() {
        return Err("the plan has no blocks".into());
    }
    let table = quote_table(table)?;
    let bounding = match (resident, order_by) {
        (Some(r), Some(o)) => Some((quote_identifier(r)?, quote_identifier(o)?)),
        (Some(_), None) => {
            return Err(
                "bounding contributions per resident needs an order_by column (which rows come first)"
                    .into(),
            );
        }
        (None, _) => None,
    };
    let kinds: Vec<&ColumnType> = readers.iter().map(|r| &r.column.kind).collect();
    let mut b = Binder {
        dialect,
        params: Vec::new(),
    };
    let carry = |items: &mut Vec<String>| {
        if bounding.is_some() {
            items.push("r".into());
            items.push("o".into());
        }
    };

    // 1. The slots' values.
    let mut items = Vec::new();
    for (i, reader) in readers.iter().enumerate() {
        items.push(format!("{} AS s{i}", slot_value(&mut b, reader)?));
    }
    if let Some((r, o)) = &bounding {
        items.push(format!("CAST({r} AS TEXT) AS r"));
        items.push(format!("{o} AS o"));
    }
    let mut sql = format!(
        "WITH civic_slots AS (SELECT {} FROM {table})",
        select_list(items)
    );

    // 2. Filtered; grouping numbers clamped; summed numbers clamped and scaled.
    let mut items = Vec::new();
    for (j, (slot, n, binning)) in plan.cells.iter().enumerate() {
        let s = format!("s{slot}");
        let kind = kinds
            .get(*slot)
            .ok_or_else(|| format!("a cell names slot {slot}, beyond the plan's columns"))?;
        let expr = match (binning, kind) {
            (Binning::Category, ColumnType::Category { domain }) if domain.len() == *n => s,
            (Binning::Boolean, ColumnType::Boolean) if *n == 2 => s,
            (Binning::IntBins { min, max, edges }, ColumnType::Integer { .. })
                if edges.len() == n + 1 =>
            {
                b.clamp(&s, Param::Int(*min), Param::Int(*max))?
            }
            (Binning::DecBins { min, max, edges }, ColumnType::Decimal { .. })
                if edges.len() == n + 1 =>
            {
                b.clamp(&s, Param::Real(*min), Param::Real(*max))?
            }
            _ => return Err(format!("cell {j} does not fit its column's type")),
        };
        items.push(format!("{expr} AS b{j}"));
    }
    let mut sums = Vec::new();
    for t in &plan.terms {
        summed(t, &mut sums);
    }
    for (i, (slot, enc)) in sums.iter().enumerate() {
        let s = format!("s{slot}");
        let expr = match (enc, kinds.get(*slot)) {
            (Encoding::Int { min, max }, Some(ColumnType::Integer { .. })) => {
                b.clamp(&s, Param::Int(*min), Param::Int(*max))?
            }
            (
                Encoding::Dec {
                    min,
                    max,
                    resolution,
                },
                Some(ColumnType::Decimal { .. }),
            ) => {
                if *resolution <= 0.0 {
                    return Err("a decimal's resolution must be above 0".into());
                }
                let clamped = b.clamp(&s, Param::Real(*min), Param::Real(*max))?;
                let res = b.real(*resolution)?;
                format!("({clamped}) / {res}")
            }
            _ => {
                return Err(format!(
                    "slot {slot} is summed but is not of the summed type"
                ));
            }
        };
        items.push(format!("{expr} AS n{i}"));
    }
    carry(&mut items);
    sql.push_str(&format!(
        ", civic_kept AS (SELECT {} FROM civic_slots",
        select_list(items)
    ));
    if let Some(filter) = &plan.filter {
        sql.push_str(&format!(" WHERE {}", filter_sql(&mut b, filter, &kinds)?));
    }
    sql.push(')');

    // 3. Cells and terms.
    let mut items = Vec::new();
    for (j, (_, n, binning)) in plan.cells.iter().enumerate() {
        let x = format!("b{j}");
        let expr = match binning {
            Binning::Category | Binning::Boolean => x,
            Binning::IntBins { edges, .. } => {
                let edges: Vec<String> = edges.iter().map(|e| b.int(*e)).collect();
                bins_sql(&x, &edges, *n)
            }
            Binning::DecBins { edges, .. } => {
                let edges = edges
                    .iter()
                    .map(|e| b.real(*e))
                    .collect::<Result<Vec<_>, _>>()?;
                bins_sql(&x, &edges, *n)
            }
        };
        items.push(format!("{expr} AS g{j}"));
    }
    let mut needed = Vec::new();
    for (k, t) in plan.terms.iter().enumerate() {
        items.push(format!("{} AS t{k}", term_sql(t, &sums, dialect)?));
        if !matches!(t, Term::One) {
            needed.push(format!("t{k} IS NOT NULL"));
        }
    }
    carry(&mut items);
    sql.push_str(&format!(
        ", civic_cells AS (SELECT {} FROM civic_kept)",
        select_list(items)
    ));

    // 4. Eligible rows, bounded per resident.
    let groups: Vec<String> = (0..plan.cells.len()).map(|j| format!("g{j}")).collect();
    let terms: Vec<String> = (0..plan.terms.len()).map(|k| format!("t{k}")).collect();
    let mut eligible: Vec<String> = groups.iter().map(|g| format!("{g} IS NOT NULL")).collect();
    eligible.extend(needed);
    let where_eligible = if eligible.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", eligible.join(" AND "))
    };
    let from = if bounding.is_some() {
        let mut items: Vec<String> = groups.iter().chain(&terms).cloned().collect();
        items.push("r".into());
        items.push("ROW_NUMBER() OVER (PARTITION BY r ORDER BY o) AS rn".into());
        let k = b.int(i64::from(plan.rows_per_resident));
        sql.push_str(&format!(
            ", civic_ranked AS (SELECT {} FROM civic_cells{where_eligible})",
            items.join(", ")
        ));
        // A row without a resident id is its own resident (as in the scan): never dropped.
        format!(" FROM civic_ranked WHERE rn <= {k} OR r IS NULL")
    } else {
        format!(" FROM civic_cells{where_eligible}")
    };

    // 5. The aggregate.
    let out = |x: String| match dialect {
        Dialect::Sqlite => x,
        Dialect::Postgres => format!("CAST({x} AS bigint)"),
    };
    let mut items: Vec<String> = groups.iter().map(|g| out(g.clone())).collect();
    items.push("COUNT(*)".into());
    items.extend(terms.iter().map(|t| out(format!("SUM({t})"))));
    sql.push_str(&format!(" SELECT {}{from}", items.join(", ")));
    if !groups.is_empty() {
        sql.push_str(&format!(" GROUP BY {}", groups.join(", ")));
    }
    if b.params.len() > max_params(dialect) {
        return Err(format!(
            "the query needs {} parameters, more than the database takes ({}): ask for fewer cells or categories",
            b.params.len(),
            max_params(dialect)
        ));
    }
    Ok(PushdownQuery {
        dialect,
        sql,
        params: b.params,
    })
}

/// Bin i of `x` over `edges` (placeholders): `[e_i, e_{i+1})`, the last bin closed; NULL
/// outside.
fn bins_sql(x: &str, edges: &[String], n: usize) -> String {
    let mut sql = format!("CASE WHEN {x} < {} THEN NULL", edges[0]);
    for (i, e) in edges.iter().enumerate().skip(1) {
        let op = if i == n { "<=" } else { "<" };
        sql.push_str(&format!(" WHEN {x} {op} {e} THEN {}", i - 1));
    }
    sql.push_str(" END");
    sql
}

/// Runs a query built for SQLite. Returns the vector in the plan's layout (block-major:
/// block b's cell c at `b * cells + c`) and the number of rows aggregated.
pub async fn run_sqlite(
    pool: &sqlx::SqlitePool,
    q: &PushdownQuery,
    plan: &CompiledPlan,
) -> Result<(Vec<i64>, u64), String> {
    if q.dialect != Dialect::Sqlite {
        return Err("the query was built for PostgreSQL, not SQLite".into());
    }
    run(pool, q, plan).await
}

/// Runs a query built for PostgreSQL; see [`run_sqlite`].
pub async fn run_postgres(
    pool: &sqlx::PgPool,
    q: &PushdownQuery,
    plan: &CompiledPlan,
) -> Result<(Vec<i64>, u64), String> {
    if q.dialect != Dialect::Postgres {
        return Err("the query was built for SQLite, not PostgreSQL".into());
    }
    run(pool, q, plan).await
}

async fn run<DB>(
    pool: &sqlx::Pool<DB>,
    q: &PushdownQuery,
    plan: &CompiledPlan,
) -> Result<(Vec<i64>, u64), String>
where
    DB: sqlx::Database,
    for<'c> &'c sqlx::Pool<DB>: sqlx::Executor<'c, Database = DB>,
    for<'q> <DB as sqlx::Database>::Arguments<'q>: sqlx::IntoArguments<'q, DB>,
    for<'q> i64: sqlx::Encode<'q, DB> + sqlx::Decode<'q, DB> + sqlx::Type<DB>,
    for<'q> f64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> String: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    usize: sqlx::ColumnIndex<DB::Row>,
{
    let cells = plan.cells.len();
    let blocks = plan.terms.len();
    let n = plan.cells_per_block;
    let mut query = sqlx::query::<DB>(&q.sql);
    for p in &q.params {
        query = match p {
            Param::Int(v) => query.bind(*v),
            Param::Real(v) => query.bind(*v),
            Param::Text(v) => query.bind(v.clone()),
        };
    }
    let mut vector = vec![0i64; blocks * n];
    let mut aggregated = 0u64;
    let mut rows = query.fetch(pool);
    while let Some(row) = rows
        .try_next()
        .await
        .map_err(|e| format!("the pushed-down query failed: {e}"))?
    {
        if row.len() != cells + 1 + blocks {
            return Err(format!(
                "the query returns {} columns where the plan needs {}",
                row.len(),
                cells + 1 + blocks
            ));
        }
        let get = |i: usize| -> Result<Option<i64>, String> {
            row.try_get::<Option<i64>, _>(i)
                .map_err(|e| format!("cannot read result column {i}: {e}"))
        };
        let mut cell = 0usize;
        for (j, (_, size, _)) in plan.cells.iter().enumerate() {
            let g = get(j)?
                .and_then(|g| usize::try_from(g).ok())
                .filter(|g| g < size)
                .ok_or_else(|| format!("the query returned a cell outside grouping {j}"))?;
            cell = cell * size + g;
        }
        if cell >= n {
            return Err("the query returned a cell outside the plan".into());
        }
        let count = get(cells)?.unwrap_or(0);
        let count = u64::try_from(count).map_err(|_| "the query returned a negative count")?;
        if count == 0 {
            // The one row of an ungrouped aggregate over no rows.
            continue;
        }
        aggregated += count;
        for k in 0..blocks {
            let sum = get(cells + 1 + k)?.unwrap_or(0);
            let slot = &mut vector[k * n + cell];
            *slot = slot.wrapping_add(sum);
        }
    }
    Ok((vector, aggregated))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::str::FromStr;

    use civic_mechanisms::AggregationPlan;
    use civic_policies::{DatasetPolicy, Query};
    use serde_json::json;

    use super::*;
    use crate::evaluate::Aggregator;
    use crate::schema::Raw;

    const POLICY: &str = r#"
[dataset]
id = "pushdown-test"
title = "Pushdown test"
partners = ["north", "south"]

[contribution]
rows_per_resident_per_partner = 2

[[columns]]
name = "age"
type = "integer"
min = 0
max = 117
bins = [0, 18, 40, 65, 90]

[[columns]]
name = "hba1c"
type = "decimal"
min = 20.0
max = 151.5
resolution = 0.1
bins = [20.0, 42.0, 48.0, 58.0, 75.0, 151.5]

[[columns]]
name = "balance"
type = "decimal"
min = -50.0
max = 50.0
resolution = 0.3
bins = [-50.0, -10.0, 0.0, 10.0, 50.0]

[[columns]]
name = "sex"
type = "category"
domain = ["female", "male", "it's \"odd\""]

[[columns]]
name = "smoker"
type = "boolean"

[[columns]]
name = "alone"
type = "boolean"

[budget]
total = { rho = 1.0 }
per_query = { rho = 0.5 }

[governance]
min_partners = 2

[disclosure]
profile = "none"
"#;

    const ODD: &str = "it's \"odd\"";
    const TABLE: &str = "patients \"v2\"";
    const AGE: &str = "age \"years\"";
    /// The local columns holding the federated ones, in `Row::values` order.
    const LOCALS: [(&str, &str); 6] = [
        ("age", AGE),
        ("hba1c", "hba1c_mmol"),
        ("balance", "balance"),
        ("sex", "sex"),
        ("smoker", "smoker"),
        ("alone", "alone"),
    ];

    fn policy() -> DatasetPolicy {
        DatasetPolicy::from_toml(POLICY, "pushdown-test.toml").unwrap()
    }

    fn value_map(federated: &str) -> BTreeMap<String, String> {
        let pairs: &[(&str, &str)] = match federated {
            "sex" => &[
                ("F", "female"),
                ("M", "male"),
                ("1", "female"),
                ("X", ODD),
                ("male", "female"),
            ],
            // "0" → true: the scan applies the mapping to text only, never to SQLite's 0.
            "smoker" => &[("J", "true"), ("N", "FALSE"), ("0", "true")],
            _ => &[],
        };
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    fn readers(policy: &DatasetPolicy, plan: &CompiledPlan) -> Vec<ColumnReader> {
        plan.columns
            .iter()
            .map(|name| {
                let local = LOCALS.iter().find(|(f, _)| f == name).unwrap().1;
                let column = policy.column(name).unwrap().clone();
                ColumnReader::new(column, local.to_string(), value_map(name)).unwrap()
            })
            .collect()
    }

    /// A generated value, as stored.
    #[derive(Clone, Debug)]
    enum Gen {
        Null,
        Int(i64),
        Real(f64),
        Text(String),
        Bool(bool),
    }

    struct Row {
        id: i64,
        person: Option<String>,
        values: [Gen; 6],
    }

    struct Lcg(u64);

    impl Lcg {
        fn next(&mut self, n: u64) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (self.0 >> 33) % n
        }
    }

    const ROWS: i64 = 4000;

    fn rows() -> Vec<Row> {
        let mut g = Lcg(0x5eed);
        (0..ROWS)
            .map(|i| {
                let age = match g.next(100) {
                    0..8 => Gen::Null,
                    8..11 => Gen::Int(-(g.next(5) as i64) - 1),
                    11..14 => Gen::Int(118 + g.next(30) as i64),
                    _ => Gen::Int(g.next(118) as i64),
                };
                let hba1c = match g.next(100) {
                    0..8 => Gen::Null,
                    8..11 => Gen::Real(5.0),
                    11..14 => Gen::Real(200.25),
                    14..20 => Gen::Real([20.0, 42.0, 48.0, 58.0, 75.0, 151.5][g.next(6) as usize]),
                    _ => Gen::Real(20.0 + g.next(2631) as f64 * 0.05),
                };
                let balance = match g.next(100) {
                    0..8 => Gen::Null,
                    _ => Gen::Real(g.next(801) as f64 * 0.15 - 60.0),
                };
                let sex = match g.next(12) {
                    0 => Gen::Null,
                    1 => Gen::Text(String::new()),
                    2 => Gen::Int(1),
                    3 => Gen::Text("other".into()),
                    4 => Gen::Text(ODD.into()),
                    k => Gen::Text(
                        ["female", "male", "F", "M", "X", "female", "M"][k as usize - 5].into(),
                    ),
                };
                let smoker = match g.next(11) {
                    0 => Gen::Null,
                    1 => Gen::Text(String::new()),
                    2 => Gen::Int(0),
                    3 => Gen::Int(1),
                    k => Gen::Text(["J", "N", "yes", "TRUE", "f", "0", "n"][k as usize - 4].into()),
                };
                let alone = match g.next(7) {
                    0 => Gen::Null,
                    k => Gen::Bool(k % 2 == 0),
                };
                let person = (g.next(40) != 0).then(|| format!("p{}", g.next(1300)));
                Row {
                    // Stored out of order: the scan and the window must both follow `id`.
                    id: (i * 7919) % ROWS + 1,
                    person,
                    values: [age, hba1c, balance, sex, smoker, alone],
                }
            })
            .collect()
    }

    /// The value as the scan reads it: by storage class from SQLite, as text from PostgreSQL
    /// (where the smoker column is text and `alone` boolean).
    fn raw_text(g: &Gen, dialect: Dialect) -> Option<String> {
        match (g, dialect) {
            (Gen::Null, _) => None,
            (Gen::Text(t), _) => Some(t.clone()),
            (Gen::Int(i), _) => Some(i.to_string()),
            (Gen::Real(r), _) => Some(r.to_string()),
            (Gen::Bool(b), Dialect::Sqlite) => Some(i64::from(*b).to_string()),
            (Gen::Bool(b), Dialect::Postgres) => Some(b.to_string()),
        }
    }

    fn aggregate_in_rust(
        plan: &CompiledPlan,
        readers: &[ColumnReader],
        rows: &[Row],
        bounded: bool,
        dialect: Dialect,
    ) -> (Vec<i64>, crate::evaluate::ScanCounts) {
        let mut sorted: Vec<&Row> = rows.iter().collect();
        sorted.sort_by_key(|r| r.id);
        let mut agg = Aggregator::new(plan);
        for (n, row) in sorted.iter().enumerate() {
            let cells: Vec<_> = readers
                .iter()
                .map(|reader| {
                    let i = LOCALS.iter().position(|(_, l)| *l == reader.local).unwrap();
                    let g = &row.values[i];
                    let text = raw_text(g, dialect);
                    let raw = match (g, dialect, &text) {
                        (Gen::Null, ..) => Raw::Null,
                        (Gen::Int(v), Dialect::Sqlite, _) => Raw::Int(*v),
                        (Gen::Bool(b), Dialect::Sqlite, _) => Raw::Int(i64::from(*b)),
                        (Gen::Real(v), Dialect::Sqlite, _) => Raw::Real(*v),
                        (_, _, Some(t)) => Raw::Text(t),
                        (_, _, None) => Raw::Null,
                    };
                    reader.read(raw).unwrap()
                })
                .collect();
            // As the scan: a row without a resident id is its own resident.
            let own = (n as u64 + 1).to_le_bytes();
            let resident = match &row.person {
                Some(p) => p.as_bytes(),
                None => &own[..],
            };
            agg.push(&cells, bounded.then_some(resident));
        }
        agg.finish()
    }

    enum Db {
        Sqlite(sqlx::SqlitePool),
        Postgres(sqlx::PgPool),
    }

    impl Db {
        fn dialect(&self) -> Dialect {
            match self {
                Db::Sqlite(_) => Dialect::Sqlite,
                Db::Postgres(_) => Dialect::Postgres,
            }
        }

        async fn execute(&self, sql: &str, binds: Vec<Option<Gen>>) {
            match self {
                Db::Sqlite(pool) => {
                    let mut q = sqlx::query(sql);
                    for b in binds {
                        q = match b {
                            None | Some(Gen::Null) => q.bind(None::<i64>),
                            Some(Gen::Int(v)) => q.bind(v),
                            Some(Gen::Bool(v)) => q.bind(i64::from(v)),
                            Some(Gen::Real(v)) => q.bind(v),
                            Some(Gen::Text(v)) => q.bind(v),
                        };
                    }
                    q.execute(pool).await.unwrap();
                }
                Db::Postgres(pool) => {
                    // Every value as text, cast in the statement to the column's type.
                    let mut q = sqlx::query(sql);
                    for b in binds {
                        q = q.bind(b.and_then(|g| raw_text(&g, Dialect::Postgres)));
                    }
                    q.execute(pool).await.unwrap();
                }
            }
        }

        async fn run(
            &self,
            q: &PushdownQuery,
            plan: &CompiledPlan,
        ) -> Result<(Vec<i64>, u64), String> {
            match self {
                Db::Sqlite(pool) => run_sqlite(pool, q, plan).await,
                Db::Postgres(pool) => run_postgres(pool, q, plan).await,
            }
        }
    }

    async fn load(db: &Db, rows: &[Row]) {
        let quoted = |n: &str| quote_identifier(n).unwrap();
        let types: [&str; 8] = match db.dialect() {
            Dialect::Sqlite => [
                "INTEGER", "TEXT", "INTEGER", "REAL", "REAL", "", "", "INTEGER",
            ],
            Dialect::Postgres => [
                "bigint",
                "text",
                "bigint",
                "double precision",
                "double precision",
                "text",
                "text",
                "boolean",
            ],
        };
        let mut names = vec!["id", "person"];
        names.extend(LOCALS.iter().map(|(_, l)| *l));
        let columns: Vec<String> = names
            .iter()
            .zip(types)
            .map(|(n, t)| format!("{} {t}", quoted(n)))
            .collect();
        db.execute(
            &format!("CREATE TABLE {} ({})", quoted(TABLE), columns.join(", ")),
            vec![],
        )
        .await;
        let list: Vec<String> = names.iter().map(|n| quoted(n)).collect();
        for chunk in rows.chunks(100) {
            let mut tuples = Vec::new();
            let mut binds = Vec::new();
            for row in chunk {
                let mut slots = Vec::new();
                let mut values = vec![Some(Gen::Int(row.id)), row.person.clone().map(Gen::Text)];
                values.extend(row.values.iter().cloned().map(Some));
                for (v, t) in values.into_iter().zip(types) {
                    binds.push(v);
                    let n = binds.len();
                    slots.push(match db.dialect() {
                        Dialect::Sqlite => format!("?{n}"),
                        Dialect::Postgres => format!("CAST(${n}::text AS {t})"),
                    });
                }
                tuples.push(format!("({})", slots.join(", ")));
            }
            let sql = format!(
                "INSERT INTO {} ({}) VALUES {}",
                quoted(TABLE),
                list.join(", "),
                tuples.join(", ")
            );
            db.execute(&sql, binds).await;
        }
    }

    fn cases() -> Vec<(&'static str, serde_json::Value, bool)> {
        let cmp = |column: &str, op: &str, value: serde_json::Value| json!({"compare": {"column": column, "op": op, "value": value}});
        vec![
            (
                "count with and/or/not and a category",
                json!({
                    "dataset": "pushdown-test",
                    "statistic": "count",
                    "filter": {"and": [
                        {"or": [cmp("age", "ge", json!(40)), {"not": cmp("smoker", "eq", json!(true))}]},
                        cmp("sex", "ne", json!("female")),
                        {"not": cmp("hba1c", "lt", json!(48.5))},
                        {"or": [cmp("alone", "eq", json!(false)), cmp("balance", "le", json!(-10))]}
                    ]}
                }),
                true,
            ),
            (
                "histogram of age and sex by smoker",
                json!({
                    "dataset": "pushdown-test",
                    "statistic": {"histogram": {"columns": ["age", "sex"]}},
                    "group_by": ["smoker"]
                }),
                true,
            ),
            (
                "mean hba1c by alone",
                json!({
                    "dataset": "pushdown-test",
                    "statistic": {"mean": {"column": "hba1c"}},
                    "group_by": ["alone"]
                }),
                true,
            ),
            (
                "sum of age where balance > -10.25",
                json!({
                    "dataset": "pushdown-test",
                    "statistic": {"sum": {"column": "age"}},
                    "filter": cmp("balance", "gt", json!(-10.25))
                }),
                true,
            ),
            (
                "quantiles of hba1c",
                json!({
                    "dataset": "pushdown-test",
                    "statistic": {"quantiles": {"column": "hba1c", "probabilities": [0.25, 0.5, 0.75]}}
                }),
                true,
            ),
            (
                "linear regression of hba1c on age and balance",
                json!({
                    "dataset": "pushdown-test",
                    "statistic": {"linear_regression": {"features": ["age", "balance"], "target": "hba1c"}},
                    "filter": {"not": cmp("sex", "eq", json!(ODD))}
                }),
                true,
            ),
            (
                "sum of balance by sex and balance bins, unbounded",
                json!({
                    "dataset": "pushdown-test",
                    "statistic": {"sum": {"column": "balance"}},
                    "group_by": ["sex", "balance"]
                }),
                false,
            ),
            (
                "count of everything",
                json!({"dataset": "pushdown-test", "statistic": "count"}),
                true,
            ),
        ]
    }

    fn compile(policy: &DatasetPolicy, query: serde_json::Value) -> CompiledPlan {
        let query: Query = serde_json::from_value(query).unwrap();
        let validated = query.validate(policy).unwrap();
        let plan = AggregationPlan::compile(&validated, policy, 1_000_000).unwrap();
        CompiledPlan::new(&validated, policy, &plan).unwrap()
    }

    /// Every case through the database and through [`Aggregator`]: the same vectors.
    async fn pushdown_matches_rust(db: &Db) -> Result<(), String> {
        let policy = policy();
        let rows = rows();
        load(db, &rows).await;
        let dialect = db.dialect();
        for (name, query, bounded) in cases() {
            let plan = compile(&policy, query);
            let readers = readers(&policy, &plan);
            let resident = bounded.then_some("person");
            let q = build(&plan, &readers, TABLE, resident, Some("id"), dialect)?;
            let (vector, aggregated) = db
                .run(&q, &plan)
                .await
                .map_err(|e| format!("{name}: {e}\n{}", q.sql))?;
            let (expected, counts) = aggregate_in_rust(&plan, &readers, &rows, bounded, dialect);
            if vector != expected || aggregated != counts.aggregated {
                return Err(format!(
                    "{name} ({dialect:?}): pushdown {vector:?} ({aggregated} rows), Rust {expected:?} ({counts:?})"
                ));
            }
            assert!(counts.aggregated > 100, "{name}: too few rows to test");
            if bounded {
                assert!(counts.truncated > 0, "{name}: no row was truncated");
            }
        }
        Ok(())
    }

    #[tokio::test]
    async fn pushdown_equals_rust_evaluation_on_sqlite() {
        let pool = sqlx::sqlite::SqlitePoolOptions::new()
            .max_connections(1)
            .connect("sqlite::memory:")
            .await
            .unwrap();
        let db = Db::Sqlite(pool);
        pushdown_matches_rust(&db).await.unwrap();
    }

    #[tokio::test]
    async fn pushdown_equals_rust_evaluation_on_postgres() {
        let Ok(url) = std::env::var("CIVIC_TEST_POSTGRES_URL") else {
            eprintln!("CIVIC_TEST_POSTGRES_URL is not set: skipping the PostgreSQL pushdown test");
            return;
        };
        let admin = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect(&url)
            .await
            .unwrap();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let schema = format!("civic_pushdown_{nanos}");
        sqlx::query(&format!("CREATE SCHEMA {schema}"))
            .execute(&admin)
            .await
            .unwrap();
        let options = sqlx::postgres::PgConnectOptions::from_str(&url)
            .unwrap()
            .options([("search_path", schema.as_str())]);
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .unwrap();
        let db = Db::Postgres(pool);
        let result = pushdown_matches_rust(&db).await;
        if let Db::Postgres(pool) = db {
            pool.close().await;
        }
        sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
            .execute(&admin)
            .await
            .unwrap();
        result.unwrap();
    }

    #[test]
    fn literals_are_parameters_and_names_are_quoted() {
        let policy = policy();
        let plan = compile(
            &policy,
            json!({
                "dataset": "pushdown-test",
                "statistic": {"mean": {"column": "hba1c"}},
                "filter": {"and": [
                    {"compare": {"column": "sex", "op": "eq", "value": ODD}},
                    {"compare": {"column": "balance", "op": "ge", "value": 12.75}},
                    {"compare": {"column": "age", "op": "lt", "value": 77}}
                ]},
                "group_by": ["age"]
            }),
        );
        let readers = readers(&policy, &plan);
        for dialect in [Dialect::Sqlite, Dialect::Postgres] {
            let q = build(
                &plan,
                &readers,
                TABLE,
                Some("pers\"on"),
                Some("id"),
                dialect,
            )
            .unwrap();
            for literal in [
                "it's", "odd", "12.75", "77", "117", "151.5", "0.1", "42", "\"J\"",
            ] {
                assert!(
                    !q.sql.contains(literal),
                    "{literal} in {dialect:?}: {}",
                    q.sql
                );
            }
            for p in [
                Param::Text(ODD.into()),
                Param::Text("X".into()),
                Param::Real(12.75),
                Param::Real(151.5),
                Param::Real(0.1),
                Param::Int(77),
                Param::Int(117),
                Param::Int(2),
            ] {
                assert!(q.params.contains(&p), "{p:?} not bound in {dialect:?}");
            }
            assert!(q.sql.contains(r#"FROM "patients ""v2""""#), "{}", q.sql);
            assert!(q.sql.contains(r#"CAST("pers""on" AS TEXT)"#), "{}", q.sql);
            assert!(q.sql.contains(r#""age ""years""""#), "{}", q.sql);
            // Placeholders number the parameters, each used.
            let mark = if dialect == Dialect::Sqlite { "?" } else { "$" };
            for n in 1..=q.params.len() {
                assert!(
                    q.sql.contains(&format!("{mark}{n}")),
                    "placeholder {n} unused"
                );
            }
            assert!(!q.sql.contains(&format!("{mark}{}", q.params.len() + 1)));
        }
        let q = build(&plan, &readers, "main.t", None, None, Dialect::Sqlite).unwrap();
        assert!(q.sql.contains(r#"FROM "main"."t""#), "{}", q.sql);
    }

    #[test]
    fn bad_names_and_missing_order_are_refused() {
        let policy = policy();
        let plan = compile(
            &policy,
            json!({"dataset": "pushdown-test", "statistic": {"sum": {"column": "age"}}}),
        );
        let readers = readers(&policy, &plan);
        let build = |table: &str, resident: Option<&str>, order: Option<&str>| {
            build(&plan, &readers, table, resident, order, Dialect::Postgres)
        };
        assert!(build("t\0x", None, None).is_err());
        assert!(build("", None, None).is_err());
        assert!(build("t", Some("person\0"), Some("id")).is_err());
        let e = build("t", Some("person"), None).unwrap_err();
        assert!(e.contains("order_by"), "{e}");
        assert!(build("t", Some("person"), Some("id")).is_ok());
        let mut wrong = readers.clone();
        wrong[0].local = "x\0".into();
        assert!(super::build(&plan, &wrong, "t", None, None, Dialect::Sqlite).is_err());
        assert!(super::build(&plan, &[], "t", None, None, Dialect::Sqlite).is_err());
    }
}
