//! Local aggregation: the aggregation plan from civic-mechanisms evaluated over a partner's
//! rows, streaming, in memory bounded by the plan (plus one counter per resident when
//! contributions are bounded by a resident column).
//!
//! The rules, which the SQL pushdown (`crate::pushdown`) follows exactly:
//! - The filter uses SQL's three-valued logic: a comparison with a missing value (or a
//!   category outside the domain) is unknown, `not unknown` is unknown, and only rows for
//!   which the filter is true count. Numbers are compared unclamped.
//! - A row counts for the statistic only if every column the plan needs (grouping, histogram,
//!   summed or regression columns) has a value and every grouping value falls in a cell.
//! - Numbers are clamped to the column's public bounds, then binned: bin i holds
//!   `[edge_i, edge_{i+1})`, the last bin also its upper edge. Booleans have cells
//!   `[false, true]`; categories their domain's order.
//! - Decimals are encoded in fixed point: `v = clamped / resolution`, rounded half away from
//!   zero as `trunc(v + 0.5)` (or `-trunc(0.5 - v)` below zero), so SQL computes the same.
//! - Contribution bounding: of the rows that count, each resident's first K (in source order:
//!   file order for CSV, the `order_by` column for SQL) are kept, K being the policy's rows
//!   per resident per partner; later ones are dropped and counted.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};

use civic_mechanisms::{AggregationPlan, BlockKind};
use civic_policies::dataset::{ColumnType, DatasetPolicy};
use civic_policies::query::{CompareOp, Filter, Literal, Statistic, ValidatedQuery};

use crate::schema::{Cell, Value};

/// A filter compiled against the row layout.
#[derive(Clone, Debug)]
pub(crate) enum Test {
    Compare {
        slot: usize,
        op: CompareOp,
        lit: Lit,
    },
    And(Vec<Test>),
    Or(Vec<Test>),
    Not(Box<Test>),
}

#[derive(Clone, Copy, Debug)]
pub(crate) enum Lit {
    Int(i64),
    Dec(f64),
    Cat(u32),
    Bool(bool),
}

/// How a grouping or histogram column picks its cell.
#[derive(Clone, Debug)]
pub(crate) enum Binning {
    /// The category's domain index.
    Category,
    /// false → 0, true → 1.
    Boolean,
    /// Integer bins over the clamped value.
    IntBins { min: i64, max: i64, edges: Vec<i64> },
    /// Decimal bins over the clamped value.
    DecBins { min: f64, max: f64, edges: Vec<f64> },
}

/// How a numeric column is encoded in fixed point.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Encoding {
    Int { min: i64, max: i64 },
    Dec { min: f64, max: f64, resolution: f64 },
}

/// A block's per-row value.
#[derive(Clone, Debug)]
pub(crate) enum Term {
    /// 1 per row.
    One,
    /// The encoded value of a slot.
    Column(usize, Encoding),
    /// The product of two terms (a regression's cross product).
    Product(Box<Term>, Box<Term>),
}

/// The plan compiled against a row layout: which federated columns are read, in which slot.
#[derive(Clone, Debug)]
pub struct CompiledPlan {
    /// Federated columns read, in slot order.
    pub columns: Vec<String>,
    pub(crate) filter: Option<Test>,
    /// Grouping then histogram columns, most significant first: (slot, cells, binning).
    pub(crate) cells: Vec<(usize, usize, Binning)>,
    /// One term per block, in plan order, each repeated over the block's cells.
    pub(crate) terms: Vec<Term>,
    pub(crate) cells_per_block: usize,
    /// K, the rows a resident may contribute at this partner.
    pub rows_per_resident: u32,
    /// A training round's model, inputs and announced coefficients (None otherwise).
    pub(crate) learning: Option<LearningRows>,
    /// A DP-SGD round's model, trainer and announced parameters (None otherwise).
    pub sgd: Option<SgdRound>,
}

/// What a DP-SGD round asks of this partner's trainer.
#[derive(Clone, Debug)]
pub struct SgdRound {
    /// The public model: parameters, clip, bounds and encoding.
    pub model: civic_mechanisms::learning::SgdPlan,
    /// The trainer's name, as configured in `partner.toml`.
    pub trainer: String,
    /// The parameters the coordinator announced (checked before the trainer sees them).
    pub parameters: Vec<f64>,
}

/// How a training round reads a row: its model's inputs and outcome by slot, and the
/// coefficients the coordinator announced (checked by the plan before any row is read).
#[derive(Clone, Debug)]
pub(crate) struct LearningRows {
    model: civic_mechanisms::learning::LogisticPlan,
    beta: Vec<f64>,
    /// Each input's slot, and for an indicator the value it indicates.
    inputs: Vec<(usize, Option<u32>)>,
    /// The outcome's slot.
    outcome: usize,
}

impl LearningRows {
    /// The row's raw inputs and outcome class, if every one has a value (complete cases).
    fn read(&self, row: &[Cell], raw: &mut Vec<f64>) -> Option<usize> {
        raw.clear();
        for &(slot, level) in &self.inputs {
            let Cell::Value(v) = row[slot] else {
                return None;
            };
            raw.push(match (v, level) {
                (Value::Int(x), None) => x as f64,
                (Value::Dec(x), None) if !x.is_nan() => x,
                (Value::Bool(b), Some(_)) => f64::from(u8::from(b)),
                (Value::Cat(i), Some(l)) => f64::from(u8::from(i == l)),
                _ => return None,
            });
        }
        match row[self.outcome] {
            Cell::Value(Value::Bool(b)) => Some(usize::from(b)),
            Cell::Value(Value::Cat(i)) => Some(i as usize),
            _ => None,
        }
    }
}

impl CompiledPlan {
    /// Sets the coefficients a training round computes at, after the model's own check
    /// (the right length, finite, Σ|β| within its cap): refused before any row is read.
    pub fn set_coefficients(&mut self, beta: &[f64]) -> Result<(), String> {
        if let Some(sgd) = self.sgd.as_mut() {
            sgd.model
                .check_parameters(beta)
                .map_err(|e| e.to_string())?;
            sgd.parameters = beta.to_vec();
            return Ok(());
        }
        let learning = self
            .learning
            .as_mut()
            .ok_or("coefficients were announced for a round that trains no model")?;
        learning.model.check_beta(beta).map_err(|e| e.to_string())?;
        learning.beta = beta.to_vec();
        Ok(())
    }

    /// Whether the plan is a training round's.
    pub fn trains(&self) -> bool {
        self.learning.is_some() || self.sgd.is_some()
    }
}

impl CompiledPlan {
    /// Compiles `plan` (made by `AggregationPlan::compile` from `query` and `policy`).
    pub fn new(
        query: &ValidatedQuery,
        policy: &DatasetPolicy,
        plan: &AggregationPlan,
    ) -> Result<Self, String> {
        plan.check_layout().map_err(|e| e.to_string())?;
        let mut columns: Vec<String> = Vec::new();
        let mut slot = |name: &str| slot_of(&mut columns, name);
        let kind = |name: &str| column_kind(policy, name);
        let q = query.query();
        let mut grouping: Vec<&str> = q.group_by.iter().map(String::as_str).collect();
        match &q.statistic {
            Statistic::Histogram { columns } => grouping.extend(columns.iter().map(String::as_str)),
            Statistic::Quantiles { column, .. } => grouping.push(column),
            _ => {}
        }
        let mut cells = Vec::new();
        for name in grouping {
            let k = kind(name)?;
            let n = k
                .cells()
                .ok_or_else(|| format!("column \"{name}\" cannot be grouped"))?;
            cells.push((slot(name), n, binning(&k)?));
        }
        let mut terms = Vec::new();
        for block in &plan.blocks {
            let mut term = |name: &str| -> Result<Term, String> {
                if name == "1" {
                    return Ok(Term::One);
                }
                Ok(Term::Column(slot(name), encoding(&kind(name)?)?))
            };
            terms.push(match &block.kind {
                // A training round's slots are filled by its model, not term by term.
                // So are a DP-SGD round's, by the partner's trainer.
                BlockKind::Score { .. } | BlockKind::Information { .. } | BlockKind::Gradient => {
                    continue;
                }
                BlockKind::Count => Term::One,
                BlockKind::Sum { column } => term(column)?,
                BlockKind::Cross { left, right } => {
                    Term::Product(Box::new(term(left)?), Box::new(term(right)?))
                }
            });
        }
        let filter = match &q.filter {
            Some(f) => Some(compile_filter(f, policy, &mut slot)?),
            None => None,
        };
        let learning = match (&q.statistic, &plan.learning) {
            (Statistic::LogisticRegression { outcome, .. }, Some(spec)) => {
                let model = plan.logistic().map_err(|e| e.to_string())?;
                let inputs = spec
                    .inputs
                    .iter()
                    .map(|i| (slot(&i.column), i.level))
                    .collect();
                Some(LearningRows {
                    beta: vec![0.0; model.coefficients()],
                    model,
                    inputs,
                    outcome: slot(outcome),
                })
            }
            (Statistic::LogisticRegression { .. }, None) => {
                return Err("a logistic regression's plan has no learning spec".into());
            }
            _ => None,
        };
        let sgd = match &q.statistic {
            Statistic::DpSgd { trainer, .. } => {
                let model = plan.sgd().map_err(|e| e.to_string())?;
                Some(SgdRound {
                    parameters: vec![0.0; model.params],
                    model,
                    trainer: trainer.clone(),
                })
            }
            _ => None,
        };
        let cells_per_block = cells.iter().map(|c| c.1).product::<usize>();
        if cells_per_block != plan.cells {
            return Err(format!(
                "the plan has {} cells, the query {cells_per_block}",
                plan.cells
            ));
        }
        Ok(Self {
            columns,
            filter,
            cells,
            terms,
            cells_per_block,
            rows_per_resident: policy.rows_per_resident_per_partner(),
            learning,
            sgd,
        })
    }

    /// Whether the row passes the filter (true, not unknown).
    fn passes(&self, row: &[Cell]) -> bool {
        self.filter
            .as_ref()
            .is_none_or(|f| evaluate(f, row) == Some(true))
    }

    /// The row's cell, if every grouping value falls in one.
    fn cell(&self, row: &[Cell]) -> Option<usize> {
        let mut index = 0usize;
        for (slot, n, binning) in &self.cells {
            let Cell::Value(v) = row[*slot] else {
                return None;
            };
            index = index * n + bin(binning, v)?;
        }
        Some(index)
    }
}

/// The slot of federated column `name` in a row layout, appended if new.
pub(crate) fn slot_of(columns: &mut Vec<String>, name: &str) -> usize {
    if let Some(i) = columns.iter().position(|c| c == name) {
        return i;
    }
    columns.push(name.to_string());
    columns.len() - 1
}

/// A column's type, or why the plan cannot use it.
pub(crate) fn column_kind(policy: &DatasetPolicy, name: &str) -> Result<ColumnType, String> {
    policy
        .column(name)
        .map(|c| c.kind.clone())
        .ok_or_else(|| format!("the plan names column \"{name}\", which the policy lacks"))
}

pub(crate) fn binning(kind: &ColumnType) -> Result<Binning, String> {
    Ok(match kind {
        ColumnType::Category { .. } => Binning::Category,
        ColumnType::Boolean => Binning::Boolean,
        ColumnType::Integer {
            min,
            max,
            bins: Some(edges),
        } => Binning::IntBins {
            min: *min,
            max: *max,
            edges: edges.clone(),
        },
        ColumnType::Decimal {
            min,
            max,
            bins: Some(edges),
            ..
        } => Binning::DecBins {
            min: *min,
            max: *max,
            edges: edges.clone(),
        },
        _ => return Err("a numeric column without bins cannot be grouped".into()),
    })
}

pub(crate) fn encoding(kind: &ColumnType) -> Result<Encoding, String> {
    Ok(match kind {
        ColumnType::Integer { min, max, .. } => Encoding::Int {
            min: *min,
            max: *max,
        },
        ColumnType::Decimal {
            min,
            max,
            resolution,
            ..
        } => Encoding::Dec {
            min: *min,
            max: *max,
            resolution: *resolution,
        },
        _ => return Err("only numeric columns are summed".into()),
    })
}

pub(crate) fn compile_filter(
    f: &Filter,
    policy: &DatasetPolicy,
    slot: &mut dyn FnMut(&str) -> usize,
) -> Result<Test, String> {
    let mut all = |parts: &[Filter]| -> Result<Vec<Test>, String> {
        parts
            .iter()
            .map(|p| compile_filter(p, policy, slot))
            .collect()
    };
    Ok(match f {
        Filter::And(parts) => Test::And(all(parts)?),
        Filter::Or(parts) => Test::Or(all(parts)?),
        Filter::Not(inner) => Test::Not(Box::new(compile_filter(inner, policy, slot)?)),
        Filter::Compare { column, op, value } => {
            let kind = &policy
                .column(column)
                .ok_or_else(|| format!("the filter names unknown column \"{column}\""))?
                .kind;
            let lit =
                match (kind, value) {
                    (ColumnType::Integer { .. }, Literal::Integer(i)) => Lit::Int(*i),
                    (ColumnType::Decimal { .. }, Literal::Integer(i)) => Lit::Dec(*i as f64),
                    (ColumnType::Decimal { .. }, Literal::Decimal(d)) => Lit::Dec(*d),
                    (ColumnType::Boolean, Literal::Boolean(b)) => Lit::Bool(*b),
                    (ColumnType::Category { domain }, Literal::Category(c)) => {
                        Lit::Cat(domain.iter().position(|d| d == c).ok_or_else(|| {
                            format!("\"{c}\" is not in the domain of \"{column}\"")
                        })? as u32)
                    }
                    _ => {
                        return Err(format!(
                            "the filter's literal for \"{column}\" has the wrong type"
                        ));
                    }
                };
            Test::Compare {
                slot: slot(column),
                op: *op,
                lit,
            }
        }
    })
}

/// SQL's three-valued logic: None is unknown.
pub(crate) fn evaluate(t: &Test, row: &[Cell]) -> Option<bool> {
    match t {
        Test::Compare { slot, op, lit } => {
            let Cell::Value(v) = row[*slot] else {
                return None;
            };
            let ordering = match (v, lit) {
                (Value::Int(a), Lit::Int(b)) => a.cmp(b),
                (Value::Dec(a), Lit::Dec(b)) => a.partial_cmp(b)?,
                (Value::Cat(a), Lit::Cat(b)) => a.cmp(b),
                (Value::Bool(a), Lit::Bool(b)) => a.cmp(b),
                _ => return None,
            };
            use std::cmp::Ordering::*;
            Some(match op {
                CompareOp::Eq => ordering == Equal,
                CompareOp::Ne => ordering != Equal,
                CompareOp::Lt => ordering == Less,
                CompareOp::Le => ordering != Greater,
                CompareOp::Gt => ordering == Greater,
                CompareOp::Ge => ordering != Less,
            })
        }
        Test::Not(inner) => evaluate(inner, row).map(|b| !b),
        Test::And(parts) => {
            let mut unknown = false;
            for p in parts {
                match evaluate(p, row) {
                    Some(false) => return Some(false),
                    None => unknown = true,
                    Some(true) => {}
                }
            }
            if unknown { None } else { Some(true) }
        }
        Test::Or(parts) => {
            let mut unknown = false;
            for p in parts {
                match evaluate(p, row) {
                    Some(true) => return Some(true),
                    None => unknown = true,
                    Some(false) => {}
                }
            }
            if unknown { None } else { Some(false) }
        }
    }
}

pub(crate) fn bin(binning: &Binning, v: Value) -> Option<usize> {
    fn find<T: PartialOrd + Copy>(edges: &[T], x: T) -> Option<usize> {
        let last = edges.len() - 1;
        if x < edges[0] || x > edges[last] {
            return None;
        }
        // The largest i with edges[i] ≤ x, the top edge falling in the last bin.
        Some(
            edges
                .partition_point(|e| *e <= x)
                .saturating_sub(1)
                .min(last - 1),
        )
    }
    match (binning, v) {
        (Binning::Category, Value::Cat(i)) => Some(i as usize),
        (Binning::Boolean, Value::Bool(b)) => Some(usize::from(b)),
        (Binning::IntBins { min, max, edges }, Value::Int(x)) => find(edges, x.clamp(*min, *max)),
        (Binning::DecBins { min, max, edges }, Value::Dec(x)) => find(edges, x.clamp(*min, *max)),
        _ => None,
    }
}

/// Fixed-point encoding of a clamped value (see the module comment for the rounding).
pub(crate) fn encode(encoding: Encoding, v: Value) -> Option<i64> {
    match (encoding, v) {
        (Encoding::Int { min, max }, Value::Int(x)) => Some(x.clamp(min, max)),
        (
            Encoding::Dec {
                min,
                max,
                resolution,
            },
            Value::Dec(x),
        ) => {
            let v = x.clamp(min, max) / resolution;
            let rounded = if v >= 0.0 {
                (v + 0.5).trunc()
            } else {
                -(0.5 - v).trunc()
            };
            Some(rounded as i64)
        }
        _ => None,
    }
}

fn term_value(term: &Term, row: &[Cell]) -> Option<i64> {
    match term {
        Term::One => Some(1),
        Term::Column(slot, enc) => match row[*slot] {
            Cell::Value(v) => encode(*enc, v),
            _ => None,
        },
        Term::Product(a, b) => term_value(a, row)?.checked_mul(term_value(b, row)?),
    }
}

/// What a scan saw, for logs and `civic-agent check` (counts only, never values).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScanCounts {
    /// Rows read.
    pub rows: u64,
    /// Rows that passed the filter and had every value the plan needs.
    pub eligible: u64,
    /// Of those, rows dropped by contribution bounding.
    pub truncated: u64,
    /// Rows aggregated.
    pub aggregated: u64,
}

/// The aggregation in progress.
#[derive(Debug)]
pub struct Aggregator<'p> {
    plan: &'p CompiledPlan,
    vector: Vec<i64>,
    per_resident: HashMap<u64, u32>,
    values: Vec<i64>,
    /// A training row's raw inputs (reused).
    raw: Vec<f64>,
    /// A training round's exact sums (clamped when finished).
    learned: Vec<i128>,
    /// What was seen so far.
    pub counts: ScanCounts,
}

impl<'p> Aggregator<'p> {
    /// An empty aggregate.
    pub fn new(plan: &'p CompiledPlan) -> Self {
        Self {
            plan,
            // Empty for a training round (no terms): its sums are `learned`.
            vector: vec![0; plan.terms.len() * plan.cells_per_block],
            per_resident: HashMap::new(),
            values: Vec::with_capacity(plan.terms.len()),
            raw: Vec::new(),
            learned: vec![0; plan.learning.as_ref().map_or(0, |l| l.model.dims())],
            counts: ScanCounts::default(),
        }
    }

    /// Adds one row (`row` in the plan's slot order). `resident` identifies the resident when
    /// the mapping names a resident column.
    pub fn push(&mut self, row: &[Cell], resident: Option<&[u8]>) {
        self.counts.rows += 1;
        if !self.plan.passes(row) {
            return;
        }
        let Some(cell) = self.plan.cell(row) else {
            return;
        };
        self.values.clear();
        for t in &self.plan.terms {
            match term_value(t, row) {
                Some(v) => self.values.push(v),
                None => return,
            }
        }
        let outcome = match &self.plan.learning {
            Some(l) => match l.read(row, &mut self.raw) {
                Some(y) => Some(y),
                None => return,
            },
            None => None,
        };
        self.counts.eligible += 1;
        if let Some(id) = resident {
            // Keyed by a 64-bit hash rather than the id (about 40 bytes a resident in the
            // table, 56 at its peak while it grows: benches/README.md); a collision (about 3 in
            // a million at 10^7 residents) can only drop a row, never add one.
            let mut h = DefaultHasher::new();
            id.hash(&mut h);
            let seen = self.per_resident.entry(h.finish()).or_insert(0);
            if *seen >= self.plan.rows_per_resident {
                self.counts.truncated += 1;
                return;
            }
            *seen += 1;
        }
        if let (Some(l), Some(y)) = (&self.plan.learning, outcome) {
            // Every row counts; the finished sum is clamped to what the ring was sized for.
            self.counts.aggregated += 1;
            l.model
                .add_encoded(&l.beta, &self.raw, y, &mut self.learned);
            return;
        }
        self.counts.aggregated += 1;
        let n = self.plan.cells_per_block;
        for (b, v) in self.values.iter().enumerate() {
            let slot = &mut self.vector[b * n + cell];
            *slot = slot.wrapping_add(*v);
        }
    }

    /// The partner's vector, in the plan's layout.
    pub fn finish(self) -> (Vec<i64>, ScanCounts) {
        match &self.plan.learning {
            Some(l) => (l.model.clamped(&self.learned), self.counts),
            None => (self.vector, self.counts),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use civic_policies::Query;
    use civic_policies::samples::diabetes;
    use serde_json::json;

    /// Compiles a query on the sample diabetes policy (rows per resident 1).
    fn compile(query: serde_json::Value) -> CompiledPlan {
        let policy = diabetes();
        let q: Query = serde_json::from_value(query).unwrap();
        let validated = q.validate(&policy).unwrap();
        let plan = AggregationPlan::compile(&validated, &policy, 1000).unwrap();
        CompiledPlan::new(&validated, &policy, &plan).unwrap()
    }

    /// A row in the plan's slot order, from (column, cell) pairs.
    fn row(plan: &CompiledPlan, cells: &[(&str, Cell)]) -> Vec<Cell> {
        plan.columns
            .iter()
            .map(|c| {
                cells
                    .iter()
                    .find(|(n, _)| n == c)
                    .map(|(_, v)| *v)
                    .unwrap_or(Cell::Missing)
            })
            .collect()
    }

    fn v(x: Value) -> Cell {
        Cell::Value(x)
    }

    #[test]
    fn filters_use_three_valued_logic() {
        // not (age >= 60): a missing age is unknown, and so is its negation.
        let plan = compile(json!({
            "dataset": "diabetes", "statistic": "count",
            "filter": { "not": { "compare": { "column": "age", "op": "ge", "value": 60 } } }
        }));
        let mut agg = Aggregator::new(&plan);
        for age in [Some(30), Some(70), None, Some(59), Some(60)] {
            let cell = age.map_or(Cell::Missing, |a| v(Value::Int(a)));
            agg.push(&row(&plan, &[("age", cell)]), None);
        }
        assert_eq!(agg.finish().0, vec![2], "30 and 59 only");

        // copd = true OR age < 40: true wins over unknown; false OR unknown is unknown.
        let plan = compile(json!({
            "dataset": "diabetes", "statistic": "count",
            "filter": { "or": [
                { "compare": { "column": "copd", "op": "eq", "value": true } },
                { "compare": { "column": "age", "op": "lt", "value": 40 } }
            ] }
        }));
        let mut agg = Aggregator::new(&plan);
        agg.push(&row(&plan, &[("copd", v(Value::Bool(true)))]), None);
        agg.push(&row(&plan, &[("copd", v(Value::Bool(false)))]), None);
        agg.push(
            &row(
                &plan,
                &[("copd", v(Value::Bool(false))), ("age", v(Value::Int(20)))],
            ),
            None,
        );
        assert_eq!(agg.finish().0, vec![2]);
    }

    #[test]
    fn values_are_clamped_then_binned_group_major() {
        // Histogram of age (4 bins over [18, 100]) grouped by sex: cell = sex × 4 + band.
        let plan = compile(json!({
            "dataset": "diabetes",
            "statistic": { "histogram": { "columns": ["age"] } },
            "group_by": ["sex"]
        }));
        let mut agg = Aggregator::new(&plan);
        let female = v(Value::Cat(0));
        let male = v(Value::Cat(1));
        for (sex, age) in [
            (female, 5),
            (female, 40),
            (male, 79),
            (male, 100),
            (male, 140),
        ] {
            agg.push(
                &row(&plan, &[("sex", sex), ("age", v(Value::Int(age)))]),
                None,
            );
        }
        // Out of domain or missing grouping values count nowhere.
        agg.push(
            &row(
                &plan,
                &[("sex", Cell::OutOfDomain), ("age", v(Value::Int(50)))],
            ),
            None,
        );
        agg.push(&row(&plan, &[("sex", female)]), None);
        let (vector, counts) = agg.finish();
        // 5 → 18 (first bin); 40 → [40, 60); 79 → [60, 80); 100 and 140 → 100, the top edge.
        assert_eq!(vector, vec![1, 1, 0, 0, 0, 0, 1, 2]);
        assert_eq!((counts.rows, counts.aggregated), (7, 5));
    }

    #[test]
    fn decimals_are_fixed_point_rounded_half_away_from_zero() {
        let enc = Encoding::Dec {
            min: -10.0,
            max: 10.0,
            resolution: 0.1,
        };
        let cases = [
            (7.3, 73),
            (0.25, 3),
            (-0.25, -3),
            (0.04, 0),
            (99.0, 100),
            (-99.0, -100),
        ];
        for (x, want) in cases {
            assert_eq!(encode(enc, Value::Dec(x)), Some(want), "{x}");
        }
        assert_eq!(
            encode(Encoding::Int { min: 0, max: 5 }, Value::Int(-3)),
            Some(0)
        );
        // A mean of HbA1c: Σ in tenths (clamped to [20, 150]) and the count.
        let plan = compile(json!({
            "dataset": "diabetes", "statistic": { "mean": { "column": "hba1c" } }
        }));
        let mut agg = Aggregator::new(&plan);
        for x in [48.0, 52.35, 200.0] {
            agg.push(&row(&plan, &[("hba1c", v(Value::Dec(x)))]), None);
        }
        agg.push(&row(&plan, &[]), None);
        assert_eq!(agg.finish().0, vec![480 + 524 + 1500, 3]);
    }

    #[test]
    fn each_resident_contributes_at_most_k_eligible_rows() {
        let plan = compile(json!({
            "dataset": "diabetes", "statistic": "count",
            "filter": { "compare": { "column": "copd", "op": "eq", "value": true } }
        }));
        let mut agg = Aggregator::new(&plan);
        let copd = |b| row(&plan, &[("copd", v(Value::Bool(b)))]);
        // Resident a's first row is filtered out, so its second (eligible) row is kept.
        agg.push(&copd(false), Some(b"a"));
        agg.push(&copd(true), Some(b"a"));
        agg.push(&copd(true), Some(b"a"));
        agg.push(&copd(true), Some(b"b"));
        let (vector, counts) = agg.finish();
        assert_eq!(vector, vec![2]);
        assert_eq!((counts.eligible, counts.truncated), (3, 1));
    }

    #[test]
    fn a_regression_sums_cross_products_with_an_intercept() {
        let plan = compile(json!({
            "dataset": "diabetes",
            "statistic": { "linear_regression": { "features": ["age"], "target": "hba1c" } }
        }));
        let mut agg = Aggregator::new(&plan);
        for (age, h) in [(30, 40.0), (50, 60.5)] {
            agg.push(
                &row(
                    &plan,
                    &[("age", v(Value::Int(age))), ("hba1c", v(Value::Dec(h)))],
                ),
                None,
            );
        }
        // A row missing the target counts nowhere.
        agg.push(&row(&plan, &[("age", v(Value::Int(70)))]), None);
        // Blocks: 1·1, 1·age, age·age, then 1·y, age·y (y in tenths).
        assert_eq!(
            agg.finish().0,
            vec![2, 80, 900 + 2500, 400 + 605, 30 * 400 + 50 * 605]
        );
    }
}
