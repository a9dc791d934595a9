//! What a researcher may ask: a statistic, an optional typed filter, and groups, validated
//! against the dataset's schema. Queries are data (JSON through the API), never text to run.

use serde::{Deserialize, Serialize};

use crate::dataset::{ColumnType, DatasetPolicy};
use crate::error::PolicyError;

/// The statistic asked for: `"count"`, or an object naming one statistic (`{"mean":
/// {"column": "hba1c"}}`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Statistic {
    /// Number of residents (rows) matching.
    Count,
    /// Sum of a clamped numeric column.
    Sum {
        /// The column.
        column: String,
    },
    /// Noisy sum / noisy count of a clamped numeric column.
    Mean {
        /// The column.
        column: String,
    },
    /// Counts over the cells of one or more groupable columns (a contingency table).
    Histogram {
        /// The columns, at least one.
        #[cfg_attr(feature = "openapi", schema(min_items = 1))]
        columns: Vec<String>,
    },
    /// Quantiles of a numeric column, from a noisy histogram over its declared bins.
    Quantiles {
        /// The column (must declare bins).
        column: String,
        /// The probabilities, each in (0, 1).
        #[cfg_attr(feature = "openapi", schema(min_items = 1, max_items = 99))]
        probabilities: Vec<f64>,
    },
    /// Sufficient statistics XᵀX and Xᵀy of a linear model over clamped columns.
    LinearRegression {
        /// The regressors (an intercept is added).
        #[cfg_attr(feature = "openapi", schema(min_items = 1, max_items = 32))]
        features: Vec<String>,
        /// The response.
        target: String,
    },
    /// A logistic regression fitted by a training job: `iterations` rounds, each a Newton
    /// step on the noisy sums of every resident's gradient and information contributions.
    LogisticRegression {
        /// The regressors (an intercept is added): numeric columns, scaled by their public
        /// bounds; booleans as 0/1; a category as one indicator per value but its first.
        #[cfg_attr(feature = "openapi", schema(min_items = 1, max_items = 32))]
        features: Vec<String>,
        /// The outcome: a boolean column (`true` is the event) or a category column (its
        /// first value is the reference class; more than two values is multinomial).
        outcome: String,
        /// Newton steps, one round each (1 to 20): the job's privacy is split evenly
        /// between them.
        #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 20))]
        #[serde(deserialize_with = "crate::manifest::whole_number")]
        iterations: u32,
    },
    /// A model Civic does not fit itself, trained by DP-SGD across the partners: each round,
    /// every partner's locally configured trainer computes the sum of its examples'
    /// gradients, each clipped to L2 norm `clip`, at the announced parameters; the noisy
    /// total over the partners, divided by the noisy number of examples, takes one gradient
    /// step of `learning_rate`. The trainer reads the partner's own data (no filter applies).
    DpSgd {
        /// The trainer's name, as partners configure it locally (`[datasets.trainers]`).
        trainer: String,
        /// The model's parameters: each gradient's length (1 to 100,000).
        #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 100000))]
        #[serde(deserialize_with = "crate::manifest::whole_number")]
        parameters: u32,
        /// Each example's gradient is clipped to this L2 norm (public).
        clip: f64,
        /// The step: parameters − learning_rate × (noisy gradient sum / noisy examples).
        learning_rate: f64,
        /// Gradient steps, one round each (1 to 100): the job's privacy is split evenly
        /// between them.
        #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 100))]
        #[serde(deserialize_with = "crate::manifest::whole_number")]
        iterations: u32,
    },
}

/// The most gradient steps (rounds) one DP-SGD job may take.
pub const MAX_SGD_ITERATIONS: u32 = 100;
/// The most parameters a DP-SGD model may have (every round announces them all).
pub const MAX_SGD_PARAMETERS: u32 = 100_000;

/// Whether `name` may name a partner's trainer: 1 to 64 lowercase letters, digits, `-` and
/// `_` (it selects a local command; it is never run as text).
pub fn valid_trainer_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// The most Newton steps (rounds) one training job may take.
pub const MAX_ITERATIONS: u32 = 20;
/// The most coefficients a logistic model may have (features and intercept, per class but
/// the reference).
pub const MAX_COEFFICIENTS: usize = 64;

/// A comparison operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum CompareOp {
    /// =
    Eq,
    /// ≠
    Ne,
    /// <
    Lt,
    /// ≤
    Le,
    /// >
    Gt,
    /// ≥
    Ge,
}

/// A literal in a filter; its type must match the column's.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Literal {
    /// true or false (boolean columns).
    Boolean(bool),
    /// A whole number (integer or decimal columns).
    Integer(i64),
    /// A number (decimal columns).
    Decimal(f64),
    /// A category value, from the column's domain.
    Category(String),
}

impl std::fmt::Display for Literal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Literal::Boolean(b) => write!(f, "{b}"),
            Literal::Integer(i) => write!(f, "{i}"),
            // 65.0 stays 65.0: a decimal literal where a whole number is wanted says so.
            Literal::Decimal(d) if d.fract() == 0.0 && d.abs() < 1e16 => write!(f, "{d:.1}"),
            Literal::Decimal(d) => write!(f, "{d}"),
            Literal::Category(c) => write!(f, "{c:?}"),
        }
    }
}

// By hand rather than `untagged`, so that a null, a list or an out-of-range number is named
// (serde's untagged enums only say that nothing matched).
impl<'de> Deserialize<'de> for Literal {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Literal;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a filter value: true or false, a number, or a category in quotes")
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Literal, E> {
                Ok(Literal::Boolean(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Literal, E> {
                Ok(Literal::Integer(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Literal, E> {
                // Beyond i64 a whole number can only be a decimal column's.
                Ok(i64::try_from(v).map_or(Literal::Decimal(v as f64), Literal::Integer))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Literal, E> {
                Ok(Literal::Decimal(v))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Literal, E> {
                Ok(Literal::Category(v.to_string()))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

// By hand: a derived untagged enum is a `oneOf`, which a whole number (both an integer and a
// number) would fail.
#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for Literal {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{AnyOfBuilder, ObjectBuilder, Type};
        let of = |t: Type, description: &str| {
            ObjectBuilder::new()
                .schema_type(t)
                .description(Some(description))
        };
        AnyOfBuilder::new()
            .item(of(Type::Boolean, "true or false (boolean columns)"))
            .item(of(
                Type::Integer,
                "a whole number (integer or decimal columns)",
            ))
            .item(of(Type::Number, "a number (decimal columns)"))
            .item(of(
                Type::String,
                "a category value, from the column's domain",
            ))
            .description(Some(
                "A literal in a filter; its type must match the column's.",
            ))
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for Literal {}

/// A typed filter: comparisons of a column with a literal, combined with AND, OR and NOT
/// (at most 16 operators deep and 256 comparisons in all).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Filter {
    /// `column op value`.
    Compare {
        /// The column.
        column: String,
        /// The operator.
        op: CompareOp,
        /// The literal.
        value: Literal,
    },
    /// All of these.
    #[cfg_attr(feature = "openapi", schema(no_recursion))]
    And(Vec<Filter>),
    /// Any of these.
    #[cfg_attr(feature = "openapi", schema(no_recursion))]
    Or(Vec<Filter>),
    /// Not this.
    #[cfg_attr(feature = "openapi", schema(no_recursion))]
    Not(Box<Filter>),
}

/// A query as a researcher submits it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Query {
    /// The dataset's id.
    #[cfg_attr(feature = "openapi", schema(pattern = r"^[a-z0-9][a-z0-9-]{0,63}$"))]
    pub dataset: String,
    /// What to compute.
    pub statistic: Statistic,
    /// Which rows count (all if absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<Filter>,
    /// Groupable columns to break the statistic down by.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub group_by: Vec<String>,
}

/// A query that fits its dataset's schema. Only [`Query::validate`] makes one.
#[derive(Clone, Debug, PartialEq)]
pub struct ValidatedQuery {
    query: Query,
    cells: usize,
}

/// What indexes a release's cells, cell by cell.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CellLabels {
    /// The key columns: the group-by columns, then a histogram's columns.
    pub keys: Vec<String>,
    /// For each cell, in release order, each key column's value.
    pub cells: Vec<Vec<String>>,
}

impl ValidatedQuery {
    /// The query.
    pub fn query(&self) -> &Query {
        &self.query
    }

    /// The labels of the released cells, in release order: group-major (the group-by
    /// columns, then a histogram's columns, the last varying fastest). A quantile's bins fold
    /// into one value per group, and a regression has one unlabelled cell.
    pub fn cell_labels(&self, policy: &DatasetPolicy) -> CellLabels {
        let mut keys = self.query.group_by.clone();
        if let Statistic::Histogram { columns } = &self.query.statistic {
            keys.extend(columns.iter().cloned());
        }
        let mut cells = vec![Vec::new()];
        for key in &keys {
            // Validation saw every key column is groupable.
            let labels = policy
                .column(key)
                .and_then(|c| c.kind.cell_labels())
                .unwrap_or_default();
            cells = cells
                .iter()
                .flat_map(|prefix| {
                    labels.iter().map(move |l| {
                        let mut cell = prefix.clone();
                        cell.push(l.clone());
                        cell
                    })
                })
                .collect();
        }
        CellLabels { keys, cells }
    }

    /// The number of released cells: the product of the cells of the histogram's columns and
    /// of the group-by columns (1 for an ungrouped count, sum or mean).
    pub fn cells(&self) -> usize {
        self.cells
    }
}

/// The most operators (`and`, `or`, `not`) a filter may nest one inside another (bounds the
/// recursion of evaluating one).
pub const MAX_FILTER_DEPTH: usize = 16;
/// The most comparisons a filter may hold (with the depth, bounds the work of evaluating one).
pub const MAX_FILTER_TERMS: usize = 256;
/// The most cells a query may release.
pub const MAX_CELLS: usize = 1_000_000;

impl Query {
    /// Checks the query against the policy: the dataset, every column's existence and type,
    /// literals of the right type within the domain, and the size of the result.
    pub fn validate(self, policy: &DatasetPolicy) -> Result<ValidatedQuery, PolicyError> {
        let err = |field: &str, reason: String| PolicyError::Query {
            dataset: self.dataset.clone(),
            field: field.to_string(),
            reason,
        };
        if self.dataset != policy.id() {
            return Err(err(
                "dataset",
                format!("this policy is for dataset \"{}\"", policy.id()),
            ));
        }
        let column = |field: &str, name: &str| {
            policy.column(name).map(|c| &c.kind).ok_or_else(|| {
                let known: Vec<&str> = policy.columns.iter().map(|c| c.name.as_str()).collect();
                err(
                    field,
                    format!("no column \"{name}\"; the schema has {}", known.join(", ")),
                )
            })
        };
        let numeric = |field: &str, name: &str| {
            let kind = column(field, name)?;
            if !kind.is_numeric() {
                return Err(err(
                    field,
                    format!("column \"{name}\" is not numeric (integer or decimal)"),
                ));
            }
            Ok(kind)
        };
        let mut cells: usize = 1;
        let mut add_cells = |field: &str, name: &str| -> Result<(), PolicyError> {
            let kind = column(field, name)?;
            let n = kind.cells().ok_or_else(|| {
                err(
                    field,
                    format!("column \"{name}\" has no declared bins or domain to group by"),
                )
            })?;
            cells = cells
                .checked_mul(n)
                .filter(|c| *c <= MAX_CELLS)
                .ok_or_else(|| {
                    err(
                        field,
                        format!("the result would have more than {MAX_CELLS} cells"),
                    )
                })?;
            Ok(())
        };
        match &self.statistic {
            Statistic::Count => {}
            Statistic::Sum { column } | Statistic::Mean { column } => {
                numeric("statistic.column", column)?;
            }
            Statistic::Histogram { columns } => {
                if columns.is_empty() {
                    return Err(err("statistic.columns", "name at least one column".into()));
                }
                for (i, c) in columns.iter().enumerate() {
                    add_cells(&format!("statistic.columns[{i}]"), c)?;
                }
            }
            Statistic::Quantiles {
                column,
                probabilities,
            } => {
                let kind = numeric("statistic.column", column)?;
                if kind.cells().is_none() {
                    return Err(err(
                        "statistic.column",
                        format!("column \"{column}\" declares no bins to take quantiles over"),
                    ));
                }
                if probabilities.is_empty() || probabilities.len() > 99 {
                    return Err(err(
                        "statistic.probabilities",
                        "give 1 to 99 probabilities".into(),
                    ));
                }
                if let Some(p) = probabilities.iter().find(|p| !(**p > 0.0 && **p < 1.0)) {
                    return Err(err(
                        "statistic.probabilities",
                        format!("{p} is not strictly between 0 and 1"),
                    ));
                }
                add_cells("statistic.column", column)?;
            }
            Statistic::LinearRegression { features, target } => {
                if features.is_empty() || features.len() > 32 {
                    return Err(err("statistic.features", "give 1 to 32 features".into()));
                }
                for (i, f) in features.iter().enumerate() {
                    numeric(&format!("statistic.features[{i}]"), f)?;
                }
                numeric("statistic.target", target)?;
            }
            Statistic::LogisticRegression {
                features,
                outcome,
                iterations,
            } => {
                if features.is_empty() || features.len() > 32 {
                    return Err(err("statistic.features", "give 1 to 32 features".into()));
                }
                // Each feature is one input, or a category's values but its first, each an
                // indicator (the first is the reference level).
                let mut inputs = 0;
                for (i, f) in features.iter().enumerate() {
                    let field = format!("statistic.features[{i}]");
                    inputs += match column(&field, f)? {
                        ColumnType::Category { domain } => domain.len().saturating_sub(1),
                        _ => 1,
                    };
                    if features[..i].contains(f) || f == outcome {
                        return Err(err(
                            &field,
                            format!("column \"{f}\" is named twice among the features and outcome"),
                        ));
                    }
                }
                let classes = match column("statistic.outcome", outcome)? {
                    ColumnType::Boolean => 2,
                    ColumnType::Category { domain } => domain.len(),
                    _ => {
                        return Err(err(
                            "statistic.outcome",
                            format!(
                                "column \"{outcome}\" is not a boolean or category column: a \
                                 logistic model predicts an outcome class"
                            ),
                        ));
                    }
                };
                if !(2..=16).contains(&classes) {
                    return Err(err(
                        "statistic.outcome",
                        format!(
                            "the outcome has {classes} classes; a logistic model takes 2 to 16"
                        ),
                    ));
                }
                if (inputs + 1) * (classes - 1) > MAX_COEFFICIENTS {
                    return Err(err(
                        "statistic.features",
                        format!(
                            "{inputs} inputs (a category counts its values but the first) and \
                             {classes} outcome classes make {} coefficients; at most \
                             {MAX_COEFFICIENTS} are fitted",
                            (inputs + 1) * (classes - 1)
                        ),
                    ));
                }
                if !(1..=MAX_ITERATIONS).contains(iterations) {
                    return Err(err(
                        "statistic.iterations",
                        format!("give 1 to {MAX_ITERATIONS} iterations, got {iterations}"),
                    ));
                }
            }
            Statistic::DpSgd {
                trainer,
                parameters,
                clip,
                learning_rate,
                iterations,
            } => {
                if !valid_trainer_name(trainer) {
                    return Err(err(
                        "statistic.trainer",
                        "name a trainer in 1 to 64 lowercase letters, digits, - and _".into(),
                    ));
                }
                if !(1..=MAX_SGD_PARAMETERS).contains(parameters) {
                    return Err(err(
                        "statistic.parameters",
                        format!("give 1 to {MAX_SGD_PARAMETERS} parameters, got {parameters}"),
                    ));
                }
                if !(clip.is_finite() && *clip > 0.0 && *clip <= 1e6) {
                    return Err(err(
                        "statistic.clip",
                        format!("the clip is an L2 norm above 0 and at most 10^6, got {clip}"),
                    ));
                }
                if !(learning_rate.is_finite() && *learning_rate > 0.0 && *learning_rate <= 1e6) {
                    return Err(err(
                        "statistic.learning_rate",
                        format!(
                            "the learning rate is above 0 and at most 10^6, got {learning_rate}"
                        ),
                    ));
                }
                if !(1..=MAX_SGD_ITERATIONS).contains(iterations) {
                    return Err(err(
                        "statistic.iterations",
                        format!("give 1 to {MAX_SGD_ITERATIONS} iterations, got {iterations}"),
                    ));
                }
                if self.filter.is_some() {
                    return Err(err(
                        "filter",
                        "a partner's trainer reads its own examples: a DP-SGD job takes no \
                         filter"
                            .into(),
                    ));
                }
            }
        }
        if matches!(
            self.statistic,
            Statistic::LinearRegression { .. }
                | Statistic::LogisticRegression { .. }
                | Statistic::DpSgd { .. }
        ) && !self.group_by.is_empty()
        {
            return Err(err(
                "group_by",
                "a regression is fitted over all rows; filter instead of grouping".into(),
            ));
        }
        for (i, g) in self.group_by.iter().enumerate() {
            add_cells(&format!("group_by[{i}]"), g)?;
        }
        // A column indexing the cells twice would release impossible combinations (male ×
        // female) as noisy zeros.
        let histogram: &[String] = match &self.statistic {
            Statistic::Histogram { columns } => columns,
            _ => &[],
        };
        let keys: Vec<(String, &String)> = histogram
            .iter()
            .enumerate()
            .map(|(i, c)| (format!("statistic.columns[{i}]"), c))
            .chain(
                self.group_by
                    .iter()
                    .enumerate()
                    .map(|(i, g)| (format!("group_by[{i}]"), g)),
            )
            .collect();
        for (i, (field, column)) in keys.iter().enumerate() {
            if keys[..i].iter().any(|(_, c)| c == column) {
                return Err(err(
                    field,
                    format!(
                        "column \"{column}\" is named twice among the histogram's columns and \
                         group_by: each column may index the cells once"
                    ),
                ));
            }
        }
        if let Some(filter) = &self.filter {
            let mut terms = 0;
            check_filter(filter, policy, "filter", 0, &mut terms)
                .map_err(|(field, reason)| err(&field, reason))?;
        }
        Ok(ValidatedQuery { query: self, cells })
    }
}

/// Checks `filter`, found inside `depth` operators, of which `terms` comparisons were seen.
fn check_filter(
    filter: &Filter,
    policy: &DatasetPolicy,
    path: &str,
    depth: usize,
    terms: &mut usize,
) -> Result<(), (String, String)> {
    *terms += usize::from(matches!(filter, Filter::Compare { .. }));
    if depth > MAX_FILTER_DEPTH || *terms > MAX_FILTER_TERMS {
        return Err((
            path.to_string(),
            format!(
                "filters may nest {MAX_FILTER_DEPTH} operators (and, or, not) one inside \
                 another and hold {MAX_FILTER_TERMS} comparisons at most"
            ),
        ));
    }
    match filter {
        Filter::And(parts) | Filter::Or(parts) => {
            let op = if matches!(filter, Filter::And(_)) {
                "and"
            } else {
                "or"
            };
            if parts.is_empty() {
                return Err((format!("{path}.{op}"), "needs at least one term".into()));
            }
            for (i, p) in parts.iter().enumerate() {
                check_filter(p, policy, &format!("{path}.{op}[{i}]"), depth + 1, terms)?;
            }
            Ok(())
        }
        Filter::Not(inner) => check_filter(inner, policy, &format!("{path}.not"), depth + 1, terms),
        Filter::Compare { column, op, value } => {
            let here = |field: &str| format!("{path}.compare.{field}");
            let Some(col) = policy.column(column) else {
                return Err((here("column"), format!("no column \"{column}\"")));
            };
            let ordered = !matches!(op, CompareOp::Eq | CompareOp::Ne);
            let fits = match (&col.kind, value) {
                (ColumnType::Integer { .. }, Literal::Integer(_)) => true,
                (ColumnType::Decimal { .. }, Literal::Integer(_) | Literal::Decimal(_)) => {
                    !matches!(value, Literal::Decimal(d) if !d.is_finite())
                }
                (ColumnType::Category { domain }, Literal::Category(v)) => {
                    if ordered {
                        return Err((
                            here("op"),
                            format!("category column \"{column}\" only takes eq and ne"),
                        ));
                    }
                    if !domain.contains(v) {
                        return Err((
                            here("value"),
                            format!(
                                "\"{v}\" is not in the domain of \"{column}\": {}",
                                domain.join(", ")
                            ),
                        ));
                    }
                    true
                }
                (ColumnType::Boolean, Literal::Boolean(_)) => {
                    if ordered {
                        return Err((
                            here("op"),
                            format!("boolean column \"{column}\" only takes eq and ne"),
                        ));
                    }
                    true
                }
                _ => false,
            };
            if !fits {
                let expected = match &col.kind {
                    ColumnType::Integer { .. } => "a whole number",
                    ColumnType::Decimal { .. } => "a number",
                    ColumnType::Category { .. } => "a category value (string)",
                    ColumnType::Boolean => "true or false",
                };
                return Err((
                    here("value"),
                    format!("column \"{column}\" takes {expected}, got {value}"),
                ));
            }
            Ok(())
        }
    }
}
