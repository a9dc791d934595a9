//! The dataset policy: what a federated dataset holds, who holds it, and the rules for
//! asking it questions.
//!
//! Written as TOML by a governance board (samples in `examples/policies/`), checked offline,
//! and uploaded through the API (also as JSON). [`DatasetPolicy::from_toml`] and
//! [`DatasetPolicy::from_json`] parse and validate in one step; every error names the source,
//! the field and what was expected.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::disclosure::DisclosureProfile;
use crate::error::PolicyError;
use crate::linkage::{Linkage, LinkageFile};
use crate::privacy::{PrivacyStatement, Rho};

/// The policy as written (the file's shape). Validated into [`DatasetPolicy`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    /// Identity, description and the partners holding it.
    pub dataset: DatasetInfo,
    /// How much one resident can contribute.
    pub contribution: ContributionFile,
    /// The federated schema.
    pub columns: Vec<ColumnFile>,
    /// The privacy budget.
    pub budget: BudgetFile,
    /// Quorum and approvals.
    pub governance: GovernanceFile,
    /// Disclosure control applied to released counts.
    pub disclosure: DisclosureProfile,
    /// For a linked dataset: which kinds of partner hold which columns, joined per resident
    /// on a linkage identifier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub linkage: Option<LinkageFile>,
}

/// `[dataset]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetInfo {
    /// A short id: lowercase letters, digits and hyphens.
    pub id: String,
    /// A human title.
    pub title: String,
    /// What the dataset is, for the public register.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Ids of the partners holding the dataset, each with the same harmonised schema.
    pub partners: Vec<String>,
}

/// `[contribution]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContributionFile {
    /// The most rows one resident has in one partner's data (larger counts are truncated by
    /// the agent before aggregation).
    pub rows_per_resident_per_partner: u32,
    /// In how many partners' data one resident can appear. Defaults to all partners: the
    /// safe assumption when records are not linked across organisations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_partners_per_person: Option<u32>,
}

/// `[[columns]]` as written.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnFile {
    /// Lowercase identifier.
    pub name: String,
    /// `integer`, `decimal`, `category` or `boolean`.
    #[serde(rename = "type")]
    pub column_type: String,
    /// For the register and researchers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Public lower clamping bound (numbers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// Public upper clamping bound (numbers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// Fixed-point resolution (decimal columns), e.g. 0.1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution: Option<f64>,
    /// Public bin edges for histograms and quantiles (numbers), strictly increasing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bins: Option<Vec<f64>>,
    /// Public domain (categories).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<Vec<String>>,
}

/// `[budget]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetFile {
    /// The whole dataset's budget: `{ epsilon, delta }` or `{ rho }`.
    pub total: PrivacyStatement,
    /// The most one query may spend.
    pub per_query: PrivacyStatement,
    /// The least one query may spend (default: the total / 10 000). A floor keeps the budget
    /// from being spent on floods of near-free queries, each of which still shows an
    /// operator who sees un-noised sums an exact aggregate, and keeps an absurdly small
    /// request from reaching the accuracy computations at all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_per_query: Option<PrivacyStatement>,
}

/// `[governance]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GovernanceFile {
    /// No release from fewer surviving partners.
    pub min_partners: u32,
    /// Queries costing more than `above` wait for `approvals_required` board members.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<ApprovalFile>,
    /// Where the noise is added: `distributed` (the default: each partner adds a share before
    /// masking, so the coordinator only ever unmasks a noisy sum) or `central` (the
    /// coordinator adds it to the exact sum it unmasks; the only way to pure ε-DP).
    #[serde(default, skip_serializing_if = "NoisePlacement::is_default")]
    pub noise: NoisePlacement,
}

/// Where a dataset's noise is added.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoisePlacement {
    /// Each partner adds a share of the noise before masking, sized so that the honest
    /// survivors' shares alone meet the charged cost: the coordinator never holds an
    /// un-noised statistic (guarantee 2).
    #[default]
    Distributed,
    /// The coordinator adds the noise to the exact sum it unmasks: it sees that sum. Only
    /// where a board asks for it explicitly (pure ε-DP, which no exactly divisible noise
    /// here provides, needs it).
    Central,
}

impl NoisePlacement {
    fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

/// `[governance.approval]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalFile {
    /// The cost above which approval is needed.
    pub above: PrivacyStatement,
    /// Distinct board members who must approve.
    pub approvals_required: u32,
}

/// A column's validated type, with its public bounds or domain.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ColumnType {
    /// Whole numbers clamped to [min, max].
    Integer {
        /// Lower bound.
        min: i64,
        /// Upper bound.
        max: i64,
        /// Bin edges, if declared.
        bins: Option<Vec<i64>>,
    },
    /// Decimals clamped to [min, max] and encoded as multiples of `resolution`.
    Decimal {
        /// Lower bound.
        min: f64,
        /// Upper bound.
        max: f64,
        /// Fixed-point step.
        resolution: f64,
        /// Bin edges, if declared.
        bins: Option<Vec<f64>>,
    },
    /// One of a public list of values.
    Category {
        /// The domain; values outside it are dropped, never released.
        domain: Vec<String>,
    },
    /// True or false.
    Boolean,
}

impl ColumnType {
    /// Numeric (summable) columns.
    pub fn is_numeric(&self) -> bool {
        matches!(
            self,
            ColumnType::Integer { .. } | ColumnType::Decimal { .. }
        )
    }

    /// Whether the column can index histogram cells or groups: categories, booleans, and
    /// numbers with declared bins.
    pub fn is_groupable(&self) -> bool {
        match self {
            ColumnType::Integer { bins, .. } => bins.is_some(),
            ColumnType::Decimal { bins, .. } => bins.is_some(),
            ColumnType::Category { .. } | ColumnType::Boolean => true,
        }
    }

    /// What each of the column's cells is called in a release, in cell order: a category's
    /// value, `false` then `true`, or a bin `[lo, hi)` (the last bin closed, `[lo, hi]`).
    pub fn cell_labels(&self) -> Option<Vec<String>> {
        fn bins<T: std::fmt::Display>(edges: &[T]) -> Vec<String> {
            let last = edges.len().saturating_sub(2);
            edges
                .windows(2)
                .enumerate()
                .map(|(i, e)| {
                    let close = if i == last { ']' } else { ')' };
                    format!("[{}, {}{close}", e[0], e[1])
                })
                .collect()
        }
        match self {
            ColumnType::Integer { bins: Some(b), .. } => Some(bins(b)),
            ColumnType::Decimal { bins: Some(b), .. } => Some(bins(b)),
            ColumnType::Category { domain } => Some(domain.clone()),
            ColumnType::Boolean => Some(vec!["false".into(), "true".into()]),
            _ => None,
        }
    }

    /// Number of cells the column contributes to a histogram: domain size, 2, or bins − 1.
    pub fn cells(&self) -> Option<usize> {
        match self {
            ColumnType::Integer { bins: Some(b), .. } => Some(b.len() - 1),
            ColumnType::Decimal { bins: Some(b), .. } => Some(b.len() - 1),
            ColumnType::Category { domain } => Some(domain.len()),
            ColumnType::Boolean => Some(2),
            _ => None,
        }
    }
}

/// A validated column.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Column {
    /// Its name.
    pub name: String,
    /// Its type and public bounds or domain.
    #[serde(flatten)]
    pub kind: ColumnType,
}

/// A validated dataset policy.
#[derive(Clone, Debug, PartialEq)]
pub struct DatasetPolicy {
    /// The policy as written (kept for the API and the audit log).
    pub file: PolicyFile,
    /// The columns with their validated types.
    pub columns: Vec<Column>,
    /// `max_partners_per_person`, defaulted to all partners.
    pub max_partners_per_person: u32,
    /// The dataset's total budget, in ρ.
    pub total: Rho,
    /// The per-query cap, in ρ.
    pub per_query: Rho,
    /// The per-query floor, in ρ: no query costs less.
    pub min_per_query: Rho,
    /// The cost above which approval is needed, and how many approvals.
    pub approval: Option<(Rho, u32)>,
    /// A linked dataset's sides.
    pub linkage: Option<Linkage>,
}

/// Without `budget.min_per_query`, the floor is the total divided by this: at most this many
/// queries can spend a dataset's budget.
pub const DEFAULT_QUERIES_PER_TOTAL: u64 = 10_000;

/// The longest list (partners, columns, domain, bins) a policy may declare.
pub const MAX_LIST: usize = 10_000;

impl DatasetPolicy {
    /// Parses and validates TOML. `source_name` (the file name) prefixes every error.
    pub fn from_toml(text: &str, source_name: &str) -> Result<Self, PolicyError> {
        let file: PolicyFile = toml::from_str(text).map_err(|e| PolicyError::Parse {
            source_name: source_name.to_string(),
            message: e.to_string().trim_end().replace('\n', " "),
        })?;
        Self::validate(file, source_name)
    }

    /// Parses and validates JSON (as the API receives it).
    pub fn from_json(text: &str, source_name: &str) -> Result<Self, PolicyError> {
        let file: PolicyFile = serde_json::from_str(text).map_err(|e| PolicyError::Parse {
            source_name: source_name.to_string(),
            message: e.to_string(),
        })?;
        Self::validate(file, source_name)
    }

    /// The dataset id.
    pub fn id(&self) -> &str {
        &self.file.dataset.id
    }

    /// A column by name.
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }

    /// The partners holding the dataset.
    pub fn partners(&self) -> &[String] {
        &self.file.dataset.partners
    }

    /// Rows per resident per partner.
    pub fn rows_per_resident_per_partner(&self) -> u32 {
        self.file.contribution.rows_per_resident_per_partner
    }

    /// Where the noise is added.
    pub fn noise(&self) -> NoisePlacement {
        self.file.governance.noise
    }

    /// No release from fewer surviving partners.
    pub fn min_partners(&self) -> u32 {
        self.file.governance.min_partners
    }

    /// The disclosure-control profile.
    pub fn disclosure(&self) -> DisclosureProfile {
        self.file.disclosure
    }

    /// Whether a query of this cost needs board approval, and how many approvals.
    pub fn approvals_needed(&self, cost: Rho) -> u32 {
        match self.approval {
            Some((above, required)) if cost > above => required,
            _ => 0,
        }
    }

    /// Checks every rule; the error names the first field that breaks one.
    pub fn validate(file: PolicyFile, source_name: &str) -> Result<Self, PolicyError> {
        let invalid = |field: &str, reason: String| PolicyError::Invalid {
            source_name: source_name.to_string(),
            field: field.to_string(),
            reason,
        };
        check_slug(&file.dataset.id).map_err(|r| invalid("dataset.id", r))?;
        if file.dataset.title.trim().is_empty() {
            return Err(invalid("dataset.title", "must not be empty".into()));
        }

        let n_partners = file.dataset.partners.len();
        if n_partners == 0 || n_partners > MAX_LIST {
            return Err(invalid(
                "dataset.partners",
                format!("must list 1 to {MAX_LIST} partner ids, got {n_partners}"),
            ));
        }
        for (i, p) in file.dataset.partners.iter().enumerate() {
            check_slug(p).map_err(|r| invalid(&format!("dataset.partners[{i}]"), r))?;
        }
        if let Some(dup) = first_duplicate(file.dataset.partners.iter()) {
            return Err(invalid(
                "dataset.partners",
                format!("partner \"{dup}\" is listed twice"),
            ));
        }

        let c = &file.contribution;
        if c.rows_per_resident_per_partner == 0 {
            return Err(invalid(
                "contribution.rows_per_resident_per_partner",
                "must be at least 1".into(),
            ));
        }
        let max_partners_per_person = c.max_partners_per_person.unwrap_or(n_partners as u32);
        if max_partners_per_person == 0 || max_partners_per_person as usize > n_partners {
            return Err(invalid(
                "contribution.max_partners_per_person",
                format!(
                    "must be between 1 and the {n_partners} partners, got {max_partners_per_person}"
                ),
            ));
        }

        if file.columns.is_empty() || file.columns.len() > MAX_LIST {
            return Err(invalid(
                "columns",
                format!("must declare 1 to {MAX_LIST} columns"),
            ));
        }
        let columns = file
            .columns
            .iter()
            .enumerate()
            .map(|(i, col)| {
                validate_column(col)
                    .map_err(|(field, reason)| invalid(&format!("columns[{i}]{field}"), reason))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(dup) = first_duplicate(columns.iter().map(|c| &c.name)) {
            return Err(invalid(
                "columns",
                format!("column \"{dup}\" is declared twice"),
            ));
        }

        if !file.budget.total.is_total_form() {
            return Err(invalid(
                "budget.total",
                "write { epsilon = ..., delta = ... } or { rho = ... }: a pure epsilon total cannot be kept when composing in zCDP".into(),
            ));
        }
        let total = file
            .budget
            .total
            .as_cap()
            .map_err(|e| invalid("budget.total", privacy_reason(e)))?;
        let per_query = file
            .budget
            .per_query
            .as_cap()
            .map_err(|e| invalid("budget.per_query", privacy_reason(e)))?;
        if per_query > total {
            return Err(invalid(
                "budget.per_query",
                format!("the per-query cap ({per_query}) exceeds the dataset total ({total})"),
            ));
        }
        let min_per_query = match &file.budget.min_per_query {
            Some(floor) => floor
                .as_cap()
                .map_err(|e| invalid("budget.min_per_query", privacy_reason(e)))?,
            None => Rho::from_units((total.units() / DEFAULT_QUERIES_PER_TOTAL).max(1)),
        };
        if min_per_query > per_query {
            return Err(invalid(
                "budget.min_per_query",
                format!(
                    "the per-query floor ({min_per_query}) exceeds the per-query cap ({per_query})"
                ),
            ));
        }

        let g = &file.governance;
        if g.min_partners < 2 || g.min_partners as usize > n_partners {
            return Err(invalid(
                "governance.min_partners",
                format!(
                    "must be at least 2 (one partner's total is never released) and at most the {n_partners} partners, got {}",
                    g.min_partners
                ),
            ));
        }
        let approval = match &g.approval {
            None => None,
            Some(a) => {
                let above = a
                    .above
                    .as_cap()
                    .map_err(|e| invalid("governance.approval.above", privacy_reason(e)))?;
                if a.approvals_required == 0 {
                    return Err(invalid(
                        "governance.approval.approvals_required",
                        "must be at least 1 (leave out [governance.approval] for no approvals)"
                            .into(),
                    ));
                }
                Some((above, a.approvals_required))
            }
        };

        if let DisclosureProfile::Custom { round_to: 0, .. } = file.disclosure {
            return Err(invalid(
                "disclosure.round_to",
                "must be at least 1 (1 = no rounding)".into(),
            ));
        }

        let linkage = Linkage::validate(&file, per_query, source_name)?;

        Ok(Self {
            file,
            columns,
            max_partners_per_person,
            total,
            per_query,
            min_per_query,
            approval,
            linkage,
        })
    }
}

fn privacy_reason(e: PolicyError) -> String {
    match e {
        PolicyError::Privacy { reason } => reason,
        other => other.to_string(),
    }
}

fn check_slug(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "\"{s}\" must be 1 to 64 lowercase letters, digits and hyphens"
        ))
    }
}

fn first_duplicate<'a>(items: impl Iterator<Item = &'a String>) -> Option<&'a String> {
    let mut seen = BTreeSet::new();
    items.into_iter().find(|s| !seen.insert(*s))
}

/// Validates one column; errors are (field suffix, reason).
fn validate_column(col: &ColumnFile) -> Result<Column, (String, String)> {
    let err = |field: &str, reason: String| (format!(".{field}"), reason);
    let name_ok = !col.name.is_empty()
        && col.name.len() <= 64
        && col.name.starts_with(|c: char| c.is_ascii_lowercase())
        && col
            .name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !name_ok {
        return Err(err(
            "name",
            format!(
                "\"{}\" must start with a lowercase letter and use only a-z, 0-9 and _",
                col.name
            ),
        ));
    }
    let named = |field: &str, reason: String| (format!(".{field} (column {})", col.name), reason);
    let unexpected = |fields: &[(&str, bool)]| -> Result<(), (String, String)> {
        match fields.iter().find(|(_, present)| *present) {
            Some((f, _)) => Err(named(
                f,
                format!("is not used by {} columns", col.column_type),
            )),
            None => Ok(()),
        }
    };
    let bounds = || -> Result<(f64, f64), (String, String)> {
        let (min, max) = match (col.min, col.max) {
            (Some(min), Some(max)) => (min, max),
            (None, _) => {
                return Err(named(
                    "min",
                    "numeric columns need public min and max bounds".into(),
                ));
            }
            (_, None) => {
                return Err(named(
                    "max",
                    "numeric columns need public min and max bounds".into(),
                ));
            }
        };
        if !min.is_finite() {
            return Err(named("min", format!("must be a finite number, got {min}")));
        }
        if !(max.is_finite() && min < max) {
            return Err(named(
                "max",
                format!("must be finite and above min, got [{min}, {max}]"),
            ));
        }
        Ok((min, max))
    };
    let check_bins =
        |bins: &Option<Vec<f64>>, min: f64, max: f64| -> Result<(), (String, String)> {
            if let Some(b) = bins {
                if b.len() < 2 || b.len() > MAX_LIST {
                    return Err(named(
                        "bins",
                        format!("need 2 to {MAX_LIST} edges, got {}", b.len()),
                    ));
                }
                if b.iter().any(|e| !e.is_finite()) || b.windows(2).any(|w| w[0] >= w[1]) {
                    return Err(named(
                        "bins",
                        "edges must be finite and strictly increasing".into(),
                    ));
                }
                if b[0] < min || b[b.len() - 1] > max {
                    return Err(named(
                        "bins",
                        format!("edges must lie within the bounds [{min}, {max}]"),
                    ));
                }
            }
            Ok(())
        };
    let kind = match col.column_type.as_str() {
        "integer" => {
            unexpected(&[
                ("resolution", col.resolution.is_some()),
                ("domain", col.domain.is_some()),
            ])?;
            let (min, max) = bounds()?;
            for (field, v) in [("min", min), ("max", max)] {
                if v.fract() != 0.0 || v.abs() > 2f64.powi(53) {
                    return Err(named(
                        field,
                        format!("integer bounds must be whole numbers within ±2^53, got {v}"),
                    ));
                }
            }
            check_bins(&col.bins, min, max)?;
            if col
                .bins
                .as_ref()
                .is_some_and(|b| b.iter().any(|e| e.fract() != 0.0))
            {
                return Err(named(
                    "bins",
                    "integer bin edges must be whole numbers".into(),
                ));
            }
            ColumnType::Integer {
                min: min as i64,
                max: max as i64,
                bins: col
                    .bins
                    .as_ref()
                    .map(|b| b.iter().map(|e| *e as i64).collect()),
            }
        }
        "decimal" => {
            unexpected(&[("domain", col.domain.is_some())])?;
            let (min, max) = bounds()?;
            let Some(resolution) = col.resolution else {
                return Err(named(
                    "resolution",
                    "decimal columns need a fixed-point resolution, e.g. 0.1".into(),
                ));
            };
            if !(resolution.is_finite() && resolution > 0.0)
                || min.abs().max(max.abs()) / resolution > 2f64.powi(40)
            {
                return Err(named(
                    "resolution",
                    format!(
                        "must be above 0, with both bounds at most 2^40 steps from 0, got {resolution}"
                    ),
                ));
            }
            check_bins(&col.bins, min, max)?;
            ColumnType::Decimal {
                min,
                max,
                resolution,
                bins: col.bins.clone(),
            }
        }
        "category" => {
            unexpected(&[
                ("min", col.min.is_some()),
                ("max", col.max.is_some()),
                ("resolution", col.resolution.is_some()),
                ("bins", col.bins.is_some()),
            ])?;
            let Some(domain) = &col.domain else {
                return Err(named(
                    "domain",
                    "category columns need their public domain".into(),
                ));
            };
            if domain.is_empty() || domain.len() > MAX_LIST {
                return Err(named("domain", format!("must list 1 to {MAX_LIST} values")));
            }
            if let Some(dup) = first_duplicate(domain.iter()) {
                return Err(named("domain", format!("value \"{dup}\" is listed twice")));
            }
            ColumnType::Category {
                domain: domain.clone(),
            }
        }
        "boolean" => {
            unexpected(&[
                ("min", col.min.is_some()),
                ("max", col.max.is_some()),
                ("resolution", col.resolution.is_some()),
                ("bins", col.bins.is_some()),
                ("domain", col.domain.is_some()),
            ])?;
            ColumnType::Boolean
        }
        other => {
            return Err(named(
                "type",
                format!("\"{other}\" is not one of integer, decimal, category, boolean"),
            ));
        }
    };
    Ok(Column {
        name: col.name.clone(),
        kind,
    })
}
