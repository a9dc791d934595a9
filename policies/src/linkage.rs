//! Linked datasets: a schema whose columns are held by different kinds of partner (housing
//! associations, acute trusts, GP federations, councils), joined per resident on a linkage
//! identifier that each partner maps locally and that never leaves it in the clear.
//!
//! `[linkage]` in a dataset policy names the identifier's format, the cost charged to every
//! linked query for the one count a pairwise join lets a partner learn, and the sides: which
//! partners hold which columns, how many residents one partner of the kind may hold (the
//! public size lists are padded to), and at how many partners of the kind one resident can
//! appear. [`LinkedShape::of`] splits a query over such a dataset into what each side
//! computes.

use serde::{Deserialize, Serialize};

use crate::dataset::{ColumnType, DatasetPolicy, PolicyFile};
use crate::error::PolicyError;
use crate::privacy::{PrivacyStatement, Rho};
use crate::query::{Filter, Statistic, ValidatedQuery};

/// The most residents one partner may hold in a linked dataset (lists are padded to the
/// declared capacity, so this bounds every message of a join).
pub const MAX_CAPACITY: u32 = 1 << 26;
/// The δ of the matching partners' noisy counts (their dummies are clamped to be
/// non-negative; see `civic_linkage::params::DummyNoise`): added to a linked query's stated
/// (ε, δ).
pub const MATCH_COUNT_DELTA: f64 = 1e-12;
/// The most kinds of partner in one linked dataset.
pub const MAX_SIDES: usize = 16;

/// `[linkage]` as written.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkageFile {
    /// How partners' identifiers are written.
    pub identifier: IdentifierFormat,
    /// Charged to every linked query for the per-category match counts a matching partner
    /// learns (noised by dummy records): `{ rho = ... }`.
    pub match_counts: PrivacyStatement,
    /// `[[linkage.sides]]`: the kinds of partner and what each holds.
    pub sides: Vec<SideFile>,
}

/// `[[linkage.sides]]` as written.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SideFile {
    /// A short name for the kind of partner, e.g. `housing`.
    pub kind: String,
    /// The partners of this kind (each also in `dataset.partners`).
    pub partners: Vec<String>,
    /// The schema columns partners of this kind hold.
    pub columns: Vec<String>,
    /// The most residents one partner of this kind may hold: every list it sends is padded
    /// to this public size, so the size says nothing about its data.
    pub capacity: u32,
    /// At how many partners of this kind one resident can appear (default: all of them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_partners_per_person: Option<u32>,
}

/// The linkage identifier's format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdentifierFormat {
    /// An NHS number: ten digits, the last a modulus-11 check digit (spaces and hyphens
    /// between digits are ignored).
    NhsNumber,
    /// A pseudonym made at source with a key the partners share and the coordinator never
    /// holds: 16 to 128 letters, digits, `-` or `_`.
    Pseudonym,
}

/// Why a local identifier cannot be used. Carries no part of the identifier.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdentifierProblem {
    /// Empty.
    Missing,
    /// Not in the format's shape (length or characters).
    Malformed,
    /// An NHS number whose check digit is wrong.
    CheckDigit,
}

impl IdentifierProblem {
    /// Plain words for a partner's `check` report.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Malformed => "malformed",
            Self::CheckDigit => "wrong check digit",
        }
    }
}

impl IdentifierFormat {
    /// The identifier as both sides hash it: an NHS number's ten digits, or the pseudonym as
    /// written.
    pub fn normalise(self, raw: &str) -> Result<String, IdentifierProblem> {
        let raw = raw.trim();
        if raw.is_empty() {
            return Err(IdentifierProblem::Missing);
        }
        match self {
            Self::NhsNumber => {
                let digits: String = raw.chars().filter(|c| *c != ' ' && *c != '-').collect();
                if digits.len() != 10 || !digits.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(IdentifierProblem::Malformed);
                }
                if !nhs_check_digit_holds(digits.as_bytes()) {
                    return Err(IdentifierProblem::CheckDigit);
                }
                Ok(digits)
            }
            Self::Pseudonym => {
                let ok = (16..=128).contains(&raw.len())
                    && raw
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
                if ok {
                    Ok(raw.to_string())
                } else {
                    Err(IdentifierProblem::Malformed)
                }
            }
        }
    }
}

/// The NHS number's modulus-11 check: the first nine digits weighted 10 down to 2; eleven
/// less the remainder (11 reads as 0) is the tenth digit, and 10 is never valid.
pub fn nhs_check_digit_holds(digits: &[u8]) -> bool {
    nhs_check_digit(&digits[..9]).is_some_and(|d| d == digits[9] - b'0')
}

/// The check digit for nine ASCII digits, or `None` when no tenth digit makes them valid.
pub fn nhs_check_digit(first_nine: &[u8]) -> Option<u8> {
    let sum: u32 = first_nine
        .iter()
        .zip((2..=10).rev())
        .map(|(d, w)| u32::from(d - b'0') * w)
        .sum();
    match 11 - sum % 11 {
        11 => Some(0),
        10 => None,
        d => Some(d as u8),
    }
}

/// A validated side.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Side {
    /// The kind's name.
    pub kind: String,
    /// Its partners.
    pub partners: Vec<String>,
    /// The columns they hold.
    pub columns: Vec<String>,
    /// The public size one partner's lists are padded to.
    pub capacity: u32,
    /// At how many partners of the kind one resident can appear.
    pub max_partners_per_person: u32,
}

/// A validated `[linkage]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Linkage {
    /// The identifier's format.
    pub identifier: IdentifierFormat,
    /// Charged to every linked query for the matchers' noisy match counts.
    pub match_counts: Rho,
    /// The kinds of partner.
    pub sides: Vec<Side>,
}

impl Linkage {
    /// The side a partner belongs to.
    pub fn side_of_partner(&self, partner: &str) -> Option<&Side> {
        self.sides
            .iter()
            .find(|s| s.partners.iter().any(|p| p == partner))
    }

    /// The side holding a column.
    pub fn side_of_column(&self, column: &str) -> Option<&Side> {
        self.sides
            .iter()
            .find(|s| s.columns.iter().any(|c| c == column))
    }

    /// Checks `[linkage]` against the rest of the policy. `None` when there is none.
    pub(crate) fn validate(
        file: &PolicyFile,
        per_query: Rho,
        source_name: &str,
    ) -> Result<Option<Self>, PolicyError> {
        let Some(linkage) = &file.linkage else {
            return Ok(None);
        };
        let invalid = |field: String, reason: String| PolicyError::Invalid {
            source_name: source_name.to_string(),
            field,
            reason,
        };
        if file.contribution.rows_per_resident_per_partner != 1 {
            return Err(invalid(
                "contribution.rows_per_resident_per_partner".into(),
                "a linked dataset holds one record per resident at each partner (a partner merges a resident's rows before linkage): write 1".into(),
            ));
        }
        let match_counts = linkage
            .match_counts
            .as_cap()
            .map_err(|e| invalid("linkage.match_counts".into(), e.to_string()))?;
        if match_counts > per_query {
            return Err(invalid(
                "linkage.match_counts".into(),
                format!(
                    "the match counts' cost ({match_counts}) exceeds the per-query cap ({per_query}), and every linked query pays it"
                ),
            ));
        }
        if linkage.sides.len() < 2 || linkage.sides.len() > MAX_SIDES {
            return Err(invalid(
                "linkage.sides".into(),
                format!(
                    "must declare 2 to {MAX_SIDES} kinds of partner, got {}",
                    linkage.sides.len()
                ),
            ));
        }
        let mut sides = Vec::new();
        for (i, side) in linkage.sides.iter().enumerate() {
            let field = |f: &str| format!("linkage.sides[{i}].{f}");
            let ok_kind = !side.kind.is_empty()
                && side.kind.len() <= 64
                && side
                    .kind
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if !ok_kind {
                return Err(invalid(
                    field("kind"),
                    "must be 1 to 64 lowercase letters, digits or hyphens".into(),
                ));
            }
            if linkage.sides[..i].iter().any(|s| s.kind == side.kind) {
                return Err(invalid(
                    field("kind"),
                    format!("kind \"{}\" is declared twice", side.kind),
                ));
            }
            if side.partners.is_empty() {
                return Err(invalid(
                    field("partners"),
                    "must list at least one partner".into(),
                ));
            }
            for (j, p) in side.partners.iter().enumerate() {
                if !file.dataset.partners.contains(p) {
                    return Err(invalid(
                        format!("linkage.sides[{i}].partners[{j}]"),
                        format!("\"{p}\" is not in dataset.partners"),
                    ));
                }
                let earlier = linkage.sides[..i].iter().any(|s| s.partners.contains(p))
                    || side.partners[..j].contains(p);
                if earlier {
                    return Err(invalid(
                        format!("linkage.sides[{i}].partners[{j}]"),
                        format!("\"{p}\" is listed on two sides (a partner is one kind)"),
                    ));
                }
            }
            if side.columns.is_empty() {
                return Err(invalid(
                    field("columns"),
                    "must list at least one column".into(),
                ));
            }
            for (j, c) in side.columns.iter().enumerate() {
                if !file.columns.iter().any(|col| &col.name == c) {
                    return Err(invalid(
                        format!("linkage.sides[{i}].columns[{j}]"),
                        format!("\"{c}\" is not a column of the schema"),
                    ));
                }
                let earlier = linkage.sides[..i].iter().any(|s| s.columns.contains(c))
                    || side.columns[..j].contains(c);
                if earlier {
                    return Err(invalid(
                        format!("linkage.sides[{i}].columns[{j}]"),
                        format!("\"{c}\" is listed on two sides (each column has one holder kind)"),
                    ));
                }
            }
            if side.capacity == 0 || side.capacity > MAX_CAPACITY {
                return Err(invalid(
                    field("capacity"),
                    format!(
                        "must be between 1 and {MAX_CAPACITY} residents, got {}",
                        side.capacity
                    ),
                ));
            }
            let n = side.partners.len() as u32;
            let mpp = side.max_partners_per_person.unwrap_or(n);
            if mpp == 0 || mpp > n {
                return Err(invalid(
                    field("max_partners_per_person"),
                    format!("must be between 1 and this kind's {n} partners, got {mpp}"),
                ));
            }
            sides.push(Side {
                kind: side.kind.clone(),
                partners: side.partners.clone(),
                columns: side.columns.clone(),
                capacity: side.capacity,
                max_partners_per_person: mpp,
            });
        }
        if let Some(p) = file
            .dataset
            .partners
            .iter()
            .find(|p| !sides.iter().any(|s| s.partners.contains(p)))
        {
            return Err(invalid(
                "linkage.sides".into(),
                format!("partner \"{p}\" is on no side"),
            ));
        }
        if let Some(c) = file
            .columns
            .iter()
            .find(|c| !sides.iter().any(|s| s.columns.contains(&c.name)))
        {
            return Err(invalid(
                "linkage.sides".into(),
                format!("column \"{}\" is held by no side", c.name),
            ));
        }
        Ok(Some(Self {
            identifier: linkage.identifier,
            match_counts,
            sides,
        }))
    }
}

/// What the holder side sums per resident in each of its cells.
#[derive(Clone, Debug, PartialEq)]
pub enum HolderValue {
    /// 1 per resident (a count or a contingency table).
    Count,
    /// A non-negative numeric column, in units of its resolution, at most `max`.
    Sum {
        /// The column.
        column: String,
        /// Its largest encoded value.
        max: u64,
    },
    /// The sum and the count, for a mean.
    Mean {
        /// The column.
        column: String,
        /// Its largest encoded value.
        max: u64,
    },
}

impl HolderValue {
    /// Slots per holder cell.
    pub fn slots(&self) -> usize {
        match self {
            Self::Count | Self::Sum { .. } => 1,
            Self::Mean { .. } => 2,
        }
    }

    /// The largest value one resident puts in one slot.
    pub fn max(&self) -> u64 {
        match self {
            Self::Count => 1,
            Self::Sum { max, .. } | Self::Mean { max, .. } => (*max).max(1),
        }
    }
}

/// A query over a linked dataset split into what the two sides compute: the holder sums
/// `value` into its own cells (the key columns it holds), the matcher groups by its cells,
/// and each evaluates its part of the filter on its own records.
#[derive(Clone, Debug, PartialEq)]
pub struct LinkedShape {
    /// The side that encrypts its values (one ciphertext per resident).
    pub holder: Side,
    /// The side that groups by its cells and learns the noisy match counts.
    pub matcher: Side,
    /// The key columns the holder holds, in the query's order.
    pub holder_keys: Vec<String>,
    /// The key columns the matcher holds, in the query's order.
    pub matcher_keys: Vec<String>,
    /// The holder's part of the filter.
    pub holder_filter: Option<Filter>,
    /// The matcher's part of the filter.
    pub matcher_filter: Option<Filter>,
    /// What the holder sums.
    pub value: HolderValue,
    /// Cells per key column, in the query's key order (group-by, then histogram columns).
    key_cells: Vec<(String, usize, bool)>,
}

impl LinkedShape {
    /// The split of a validated query over a linked dataset.
    pub fn of(query: &ValidatedQuery, policy: &DatasetPolicy) -> Result<Self, PolicyError> {
        let q = query.query();
        let err = |field: &str, reason: String| PolicyError::Query {
            dataset: q.dataset.clone(),
            field: field.to_string(),
            reason,
        };
        let linkage = policy
            .linkage
            .as_ref()
            .ok_or_else(|| err("dataset", "is not a linked dataset".into()))?;
        let side_of = |field: &str, column: &str| {
            linkage
                .side_of_column(column)
                .ok_or_else(|| err(field, format!("column \"{column}\" is held by no side")))
        };

        let mut keys = q.group_by.clone();
        let value_column = match &q.statistic {
            Statistic::Count => None,
            Statistic::Histogram { columns } => {
                keys.extend(columns.iter().cloned());
                None
            }
            Statistic::Sum { column } | Statistic::Mean { column } => Some(column.clone()),
            Statistic::Quantiles { .. }
            | Statistic::LinearRegression { .. }
            | Statistic::LogisticRegression { .. }
            | Statistic::DpSgd { .. } => {
                return Err(err(
                    "statistic",
                    "quantiles, regressions and trained models are not yet available over linked datasets: ask for a histogram over the binned column, or a count, sum or mean".into(),
                ));
            }
        };

        // The kinds the query touches, in order of first use.
        let mut kinds: Vec<&Side> = Vec::new();
        fn touch<'a>(kinds: &mut Vec<&'a Side>, side: &'a Side) {
            if !kinds.iter().any(|k| k.kind == side.kind) {
                kinds.push(side);
            }
        }
        let value_side = match &value_column {
            Some(c) => Some(side_of("statistic.column", c)?),
            None => None,
        };
        if let Some(side) = value_side {
            touch(&mut kinds, side);
        }
        for key in &keys {
            touch(&mut kinds, side_of("group_by", key)?);
        }
        let mut filter_parts: Vec<(&Side, Filter)> = Vec::new();
        if let Some(filter) = &q.filter {
            let parts = match filter {
                Filter::And(parts) => parts.clone(),
                other => vec![other.clone()],
            };
            for (i, part) in parts.into_iter().enumerate() {
                let mut columns = Vec::new();
                filter_columns(&part, &mut columns);
                let mut side: Option<&Side> = None;
                for c in &columns {
                    let s = side_of("filter", c)?;
                    if side.is_some_and(|prior| prior.kind != s.kind) {
                        return Err(err(
                            &format!("filter.and[{i}]"),
                            format!(
                                "mixes columns of two kinds of partner (\"{}\" and \"{}\"): write the filter as an `and` of conditions each on one kind's columns, as each side evaluates its own",
                                side.map(|p| p.kind.as_str()).unwrap_or(""),
                                s.kind
                            ),
                        ));
                    }
                    side = Some(s);
                }
                if let Some(s) = side {
                    touch(&mut kinds, s);
                    filter_parts.push((s, part));
                }
            }
        }
        if kinds.len() != 2 {
            let named: Vec<&str> = kinds.iter().map(|k| k.kind.as_str()).collect();
            return Err(err(
                "statistic",
                format!(
                    "a linked query joins exactly two kinds of partner; this one uses {} ({}). The kinds are {}",
                    kinds.len(),
                    if named.is_empty() {
                        "none".to_string()
                    } else {
                        named.join(", ")
                    },
                    linkage
                        .sides
                        .iter()
                        .map(|s| s.kind.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }

        // The holder encrypts one ciphertext per resident: the summed column's side, or else
        // the side with the smaller lists.
        let (holder, matcher) = match value_side {
            Some(side) => {
                let other = kinds
                    .iter()
                    .find(|k| k.kind != side.kind)
                    .expect("two kinds");
                (side.clone(), (*other).clone())
            }
            None if kinds[0].capacity <= kinds[1].capacity => (kinds[0].clone(), kinds[1].clone()),
            None => (kinds[1].clone(), kinds[0].clone()),
        };
        let value = match (&q.statistic, value_column) {
            (Statistic::Sum { .. }, Some(column)) => HolderValue::Sum {
                max: encoded_max(policy, &column).map_err(|r| err("statistic.column", r))?,
                column,
            },
            (Statistic::Mean { .. }, Some(column)) => HolderValue::Mean {
                max: encoded_max(policy, &column).map_err(|r| err("statistic.column", r))?,
                column,
            },
            _ => HolderValue::Count,
        };
        let part_of = |side: &Side| {
            let parts: Vec<Filter> = filter_parts
                .iter()
                .filter(|(s, _)| s.kind == side.kind)
                .map(|(_, f)| f.clone())
                .collect();
            match parts.len() {
                0 => None,
                1 => parts.into_iter().next(),
                _ => Some(Filter::And(parts)),
            }
        };
        let key_cells = keys
            .iter()
            .map(|k| {
                let cells = policy.column(k).and_then(|c| c.kind.cells()).unwrap_or(1);
                (k.clone(), cells, holder.columns.contains(k))
            })
            .collect::<Vec<_>>();
        Ok(Self {
            holder_keys: keys
                .iter()
                .filter(|k| holder.columns.contains(k))
                .cloned()
                .collect(),
            matcher_keys: keys
                .iter()
                .filter(|k| matcher.columns.contains(k))
                .cloned()
                .collect(),
            holder_filter: part_of(&holder),
            matcher_filter: part_of(&matcher),
            holder,
            matcher,
            value,
            key_cells,
        })
    }

    /// Cells of the holder's own keys (1 without any).
    pub fn holder_cells(&self) -> usize {
        self.key_cells.iter().filter(|k| k.2).map(|k| k.1).product()
    }

    /// Cells of the matcher's keys: the pairwise session's categories.
    pub fn matcher_cells(&self) -> usize {
        self.key_cells
            .iter()
            .filter(|k| !k.2)
            .map(|k| k.1)
            .product()
    }

    /// Values per holder record in a session: its cells times the value's slots.
    pub fn width(&self) -> usize {
        self.holder_cells() * self.value.slots()
    }

    /// The released cell (in the query's order) of matcher cell `m` and holder cell `h`.
    pub fn release_cell(&self, matcher_cell: usize, holder_cell: usize) -> usize {
        // Split each side's index into its keys' digits (its keys in query order, the last
        // varying fastest), then recombine in the query's order.
        let mut m = matcher_cell;
        let mut h = holder_cell;
        let mut digits = vec![0; self.key_cells.len()];
        for (i, (_, cells, on_holder)) in self.key_cells.iter().enumerate().rev() {
            let index = if *on_holder { &mut h } else { &mut m };
            digits[i] = *index % cells;
            *index /= cells;
        }
        self.key_cells
            .iter()
            .zip(digits)
            .fold(0, |acc, ((_, cells, _), d)| acc * cells + d)
    }

    /// Pairs one resident can be in: at most this many holder partners times this many
    /// matcher partners hold them.
    pub fn pairs_per_resident(&self) -> u64 {
        u64::from(self.holder.max_partners_per_person)
            * u64::from(self.matcher.max_partners_per_person)
    }

    /// L1 and L2 sensitivity of the released table (in encoded units): per pair a resident
    /// adds its value to one cell (and 1 to the count beside it, for a mean), and a resident
    /// is in at most `pairs_per_resident` pairs, which may all land in the same cell.
    pub fn sensitivity(&self) -> (f64, f64) {
        let k = self.pairs_per_resident() as f64;
        let v = self.value.max() as f64;
        match self.value {
            HolderValue::Mean { .. } => (k * (v + 1.0), k * (v * v + 1.0).sqrt()),
            _ => (k * v, k * v),
        }
    }

    /// The L2 sensitivity squared of the match counts the matching partners learn, taken
    /// together (they may collude with the coordinator): one resident moves one count by one
    /// in each pair they are in.
    pub fn match_count_l2_squared(&self) -> f64 {
        self.pairs_per_resident() as f64
    }
}

/// A summable column's largest encoded value, refusing negative lower bounds (the pairwise
/// session sums non-negative integers).
fn encoded_max(policy: &DatasetPolicy, column: &str) -> Result<u64, String> {
    match policy.column(column).map(|c| &c.kind) {
        Some(ColumnType::Integer { min, max, .. }) if *min >= 0 => Ok(*max as u64),
        Some(ColumnType::Decimal {
            min,
            max,
            resolution,
            ..
        }) if *min >= 0.0 => Ok((max / resolution).round() as u64),
        Some(k) if k.is_numeric() => Err(format!(
            "column \"{column}\" has a negative lower bound; linked sums need columns bounded below by 0"
        )),
        _ => Err(format!(
            "column \"{column}\" is not numeric (integer or decimal)"
        )),
    }
}

fn filter_columns(filter: &Filter, out: &mut Vec<String>) {
    match filter {
        Filter::Compare { column, .. } => out.push(column.clone()),
        Filter::And(parts) | Filter::Or(parts) => parts.iter().for_each(|p| filter_columns(p, out)),
        Filter::Not(inner) => filter_columns(inner, out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nhs_numbers_are_checked_by_their_check_digit() {
        // 943 476 5919 is the NHS's published example of a valid number.
        let f = IdentifierFormat::NhsNumber;
        assert_eq!(f.normalise("943 476 5919"), Ok("9434765919".into()));
        assert_eq!(f.normalise("943-476-5919"), Ok("9434765919".into()));
        assert_eq!(
            f.normalise("9434765918"),
            Err(IdentifierProblem::CheckDigit)
        );
        assert_eq!(f.normalise("943476591"), Err(IdentifierProblem::Malformed));
        assert_eq!(f.normalise("94347659x9"), Err(IdentifierProblem::Malformed));
        assert_eq!(f.normalise("  "), Err(IdentifierProblem::Missing));
        // Nine digits whose check would be 10 have no valid tenth digit.
        let no_valid = (0..1000u32)
            .map(|i| format!("{:09}", 100_000_000 + i * 7919))
            .find(|s| nhs_check_digit(s.as_bytes()).is_none())
            .expect("some prefix has no check digit");
        for last in 0..10 {
            let candidate = format!("{no_valid}{last}");
            assert!(f.normalise(&candidate).is_err());
        }
    }

    #[test]
    fn pseudonyms_are_checked_for_shape_only() {
        let f = IdentifierFormat::Pseudonym;
        assert!(f.normalise("a1b2c3d4e5f6a7b8").is_ok());
        assert_eq!(f.normalise("short"), Err(IdentifierProblem::Malformed));
        assert_eq!(
            f.normalise("has spaces in it here"),
            Err(IdentifierProblem::Malformed)
        );
    }
}
