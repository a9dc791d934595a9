//! This partner's side of a linked query: its extract read into the records a pairwise join
//! takes (`civic_linkage`), by the same rules as local aggregation (`crate::evaluate`).
//!
//! - The side's part of the filter is evaluated here, with SQL's three-valued logic. A
//!   resident whose row fails it is left out of this side's list, so they match nothing.
//! - A row whose key columns (or summed column) lack a value, or fall outside every cell, is
//!   left out, as a row that cannot count.
//! - The linkage identifier is normalised by the policy's format. A row without a usable
//!   identifier cannot be linked and is left out.
//! - A linked dataset holds one record per resident: of an identifier seen twice, the first
//!   row is kept and the others are left out, as rows beyond the bound per resident are in
//!   local aggregation (whether the partner takes part must not depend on its data).
//!   `civic-agent check` names the lines, to merge them at source.
//!
//! The counts returned stay on this machine. A refusal sent to the coordinator carries only
//! its code.

use std::collections::HashSet;

use civic_linkage::federation::holder_values;
use civic_linkage::{HolderRecord, LinkError, MatcherRecord};
use civic_policies::dataset::DatasetPolicy;
use civic_policies::linkage::{HolderValue, IdentifierFormat, LinkedShape};

use crate::evaluate::{
    Binning, Encoding, Test, bin, binning, column_kind, compile_filter, encode, encoding, evaluate,
    slot_of,
};
use crate::schema::Cell;

/// Which side of the pairs this partner is on, for one linked query.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Encrypts its values (the shape's holder kind).
    Holder,
    /// Groups the matches by its cells (the shape's matcher kind).
    Matcher,
}

/// The query compiled against this side's row layout.
#[derive(Clone, Debug)]
pub struct LinkedSide {
    /// Federated columns read, in slot order.
    pub columns: Vec<String>,
    role: Role,
    filter: Option<Test>,
    keys: Vec<(usize, usize, Binning)>,
    value: Option<(usize, Encoding)>,
    format: IdentifierFormat,
}

/// What reading the extract found (counts stay local).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LinkedCounts {
    /// Rows read.
    pub rows: u64,
    /// Rows that became records.
    pub kept: u64,
    /// Rows the side's filter left out.
    pub filtered_out: u64,
    /// Rows lacking a key or summed value, or outside every cell.
    pub incomplete: u64,
    /// Rows without a usable linkage identifier.
    pub unusable_identifier: u64,
    /// Rows whose identifier an earlier row had (left out).
    pub repeated_identifier: u64,
}

/// The records for this side's pairwise sessions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkedRecords {
    /// This partner encrypts these.
    Holder(Vec<HolderRecord>),
    /// This partner groups by these.
    Matcher(Vec<MatcherRecord>),
}

impl LinkedSide {
    /// Compiles the shape's part for `role`.
    pub fn new(shape: &LinkedShape, policy: &DatasetPolicy, role: Role) -> Result<Self, String> {
        let format = policy
            .linkage
            .as_ref()
            .map(|l| l.identifier)
            .ok_or_else(|| format!("dataset {} is not linked", policy.id()))?;
        let mut columns: Vec<String> = Vec::new();
        let mut slot = |name: &str| slot_of(&mut columns, name);
        let kind = |name: &str| column_kind(policy, name);
        let (key_names, filter) = match role {
            Role::Holder => (&shape.holder_keys, &shape.holder_filter),
            Role::Matcher => (&shape.matcher_keys, &shape.matcher_filter),
        };
        let mut keys = Vec::new();
        for name in key_names {
            let k = kind(name)?;
            let cells = k
                .cells()
                .ok_or_else(|| format!("column \"{name}\" cannot be grouped"))?;
            keys.push((slot(name), cells, binning(&k)?));
        }
        let value = match (&shape.value, role) {
            (HolderValue::Sum { column, .. } | HolderValue::Mean { column, .. }, Role::Holder) => {
                Some((slot(column), encoding(&kind(column)?)?))
            }
            _ => None,
        };
        let filter = match filter {
            Some(f) => Some(compile_filter(f, policy, &mut slot)?),
            None => None,
        };
        Ok(Self {
            columns,
            role,
            filter,
            keys,
            value,
            format,
        })
    }

    /// Reads rows (cells in `columns` order, with each row's raw identifier) into this side's
    /// records.
    pub fn collect<'r>(
        &self,
        shape: &LinkedShape,
        rows: impl IntoIterator<Item = (&'r [Cell], &'r [u8])>,
    ) -> Result<(LinkedRecords, LinkedCounts), LinkError> {
        let mut counts = LinkedCounts::default();
        let mut seen = HashSet::new();
        let mut holder = Vec::new();
        let mut matcher = Vec::new();
        for (row, raw) in rows {
            counts.rows += 1;
            let Some(identifier) = std::str::from_utf8(raw)
                .ok()
                .and_then(|t| self.format.normalise(t).ok())
            else {
                counts.unusable_identifier += 1;
                continue;
            };
            if !seen.insert(identifier.clone()) {
                counts.repeated_identifier += 1;
                continue;
            }
            if self
                .filter
                .as_ref()
                .is_some_and(|f| evaluate(f, row) != Some(true))
            {
                counts.filtered_out += 1;
                continue;
            }
            let Some(cell) = self.cell(row) else {
                counts.incomplete += 1;
                continue;
            };
            let identifier = identifier.into_bytes();
            match self.role {
                Role::Holder => {
                    let value = match self.value {
                        Some((slot, encoding)) => match row[slot] {
                            Cell::Value(v) => {
                                match encode(encoding, v).and_then(|x| u64::try_from(x).ok()) {
                                    Some(x) => x,
                                    None => {
                                        counts.incomplete += 1;
                                        continue;
                                    }
                                }
                            }
                            _ => {
                                counts.incomplete += 1;
                                continue;
                            }
                        },
                        None => 1,
                    };
                    holder.push(HolderRecord {
                        identifier,
                        values: holder_values(shape, cell, value),
                    });
                }
                Role::Matcher => matcher.push(MatcherRecord {
                    identifier,
                    category: cell as u32,
                }),
            }
            counts.kept += 1;
        }
        let records = match self.role {
            Role::Holder => LinkedRecords::Holder(holder),
            Role::Matcher => LinkedRecords::Matcher(matcher),
        };
        Ok((records, counts))
    }

    /// The row's cell among this side's keys (0 without keys), if every key has one.
    fn cell(&self, row: &[Cell]) -> Option<usize> {
        let mut index = 0;
        for (slot, cells, binning) in &self.keys {
            let Cell::Value(v) = row[*slot] else {
                return None;
            };
            index = index * cells + bin(binning, v)?;
        }
        Some(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::Value;
    use civic_policies::Query;
    use civic_policies::samples::housing_health;
    use serde_json::json;

    fn shape(query: serde_json::Value) -> (LinkedShape, DatasetPolicy) {
        let policy = housing_health();
        let q: Query = serde_json::from_value(query).unwrap();
        let shape = LinkedShape::of(&q.validate(&policy).unwrap(), &policy).unwrap();
        (shape, policy)
    }

    #[test]
    fn each_side_keeps_its_filtered_complete_rows_with_normalised_identifiers() {
        let (shape, policy) = shape(json!({
            "dataset": "housing-health",
            "statistic": {"histogram": {"columns": ["damp_mould_reported", "respiratory_admissions"]}},
            "filter": {"and": [
                {"compare": {"column": "tenure", "op": "eq", "value": "social_rent"}},
                {"compare": {"column": "falls_admissions", "op": "ge", "value": 0}},
            ]},
        }));
        let housing = LinkedSide::new(&shape, &policy, Role::Holder).unwrap();
        // Slots: damp, then tenure (the filter's).
        assert_eq!(housing.columns, ["damp_mould_reported", "tenure"]);
        let v = |x| Cell::Value(x);
        let rows: Vec<(Vec<Cell>, &[u8])> = vec![
            (
                vec![v(Value::Bool(true)), v(Value::Cat(0))],
                b"943 476 5919",
            ),
            (vec![v(Value::Bool(false)), v(Value::Cat(2))], b"9000000009"),
            (vec![Cell::Missing, v(Value::Cat(0))], b"9000000017"),
            (
                vec![v(Value::Bool(false)), v(Value::Cat(0))],
                b"not a number",
            ),
        ];
        let (records, counts) = housing
            .collect(&shape, rows.iter().map(|(r, id)| (r.as_slice(), *id)))
            .unwrap();
        assert_eq!(
            counts,
            LinkedCounts {
                rows: 4,
                kept: 1,
                filtered_out: 1,
                incomplete: 1,
                unusable_identifier: 1,
                repeated_identifier: 0
            }
        );
        assert_eq!(
            records,
            LinkedRecords::Holder(vec![HolderRecord {
                identifier: b"9434765919".to_vec(),
                values: vec![0, 1]
            }])
        );

        let trust = LinkedSide::new(&shape, &policy, Role::Matcher).unwrap();
        assert_eq!(
            trust.columns,
            ["respiratory_admissions", "falls_admissions"]
        );
        let rows: Vec<(Vec<Cell>, &[u8])> = vec![
            (vec![v(Value::Int(4)), v(Value::Int(0))], b"9434765919"),
            (vec![v(Value::Int(1)), Cell::Missing], b"9000000009"),
        ];
        let (records, counts) = trust
            .collect(&shape, rows.iter().map(|(r, id)| (r.as_slice(), *id)))
            .unwrap();
        // 4 admissions fall in the last bin, [2, 5]; an unknown filter leaves the row out.
        assert_eq!(
            records,
            LinkedRecords::Matcher(vec![MatcherRecord {
                identifier: b"9434765919".to_vec(),
                category: 2
            }])
        );
        assert_eq!(counts.filtered_out, 1);

        // The same resident twice: the first row is kept, the second left out and counted.
        let twice = [
            (rows[0].0.as_slice(), b"9434765919".as_slice()),
            (rows[1].0.as_slice(), b"943-476-5919".as_slice()),
        ];
        let (records, counts) = trust.collect(&shape, twice).unwrap();
        assert_eq!(
            records,
            LinkedRecords::Matcher(vec![MatcherRecord {
                identifier: b"9434765919".to_vec(),
                category: 2
            }])
        );
        assert_eq!((counts.kept, counts.repeated_identifier), (1, 1));
    }

    #[test]
    fn a_holder_sums_its_encoded_value_and_counts_for_a_mean() {
        let (shape, policy) = shape(json!({
            "dataset": "housing-health",
            "statistic": {"mean": {"column": "adaptations"}},
            "group_by": ["respiratory_admissions"],
        }));
        let housing = LinkedSide::new(&shape, &policy, Role::Holder).unwrap();
        let rows = [
            (vec![Cell::Value(Value::Int(9))], b"9434765919".as_slice()),
            (vec![Cell::Missing], b"9000000009".as_slice()),
        ];
        let (records, counts) = housing
            .collect(&shape, rows.iter().map(|(r, id)| (r.as_slice(), *id)))
            .unwrap();
        // Clamped to the public bound 6; the count slot beside it.
        assert_eq!(
            records,
            LinkedRecords::Holder(vec![HolderRecord {
                identifier: b"9434765919".to_vec(),
                values: vec![6, 1]
            }])
        );
        assert_eq!(counts.incomplete, 1);
    }
}
