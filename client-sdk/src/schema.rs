//! From a partner's local values to the federated schema: the column mapping, value mappings
//! for categories and booleans, and type checks. One [`ColumnReader`] per federated column;
//! every source (CSV, SQLite, PostgreSQL) hands it the same [`Raw`] values, so the three
//! agree on what a value means.

use std::collections::{BTreeMap, HashMap};

use civic_policies::dataset::{Column, ColumnType};

/// A value as a source holds it, before mapping.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Raw<'a> {
    /// SQL NULL, or an empty CSV field.
    Null,
    /// A whole number.
    Int(i64),
    /// A floating-point number.
    Real(f64),
    /// Text (every CSV field).
    Text(&'a str),
    /// A boolean (PostgreSQL).
    Bool(bool),
}

/// A value in the federated schema.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Value {
    /// Boolean column.
    Bool(bool),
    /// Integer column, unclamped.
    Int(i64),
    /// Decimal column, unclamped.
    Dec(f64),
    /// Category column: the index of the value in the public domain.
    Cat(u32),
}

/// What one field reads as.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Cell {
    /// No value: the row counts for nothing that needs this column.
    Missing,
    /// A category outside the public domain (after value mapping): treated as missing and
    /// counted for `civic-agent check`, never released.
    OutOfDomain,
    /// A value that cannot be read as the column's type (text in a number column, say), read
    /// as missing because the column's mapping says `invalid = "missing"`, or because `check`
    /// is surveying the whole extract. Counted by `check`, never released.
    Invalid,
    /// A value.
    Value(Value),
}

/// What to do with a value that cannot be read as its column's type: the mapping's
/// `invalid = "refuse" | "missing"`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InvalidRule {
    /// Stop: the agent declines rounds on the dataset until the extract is fixed (`check`
    /// lists every such value's line). The default, so that junk is never silently dropped.
    #[default]
    Refuse,
    /// Read it as missing, like an empty field: rows needing the column do not count.
    Missing,
}

/// Spellings accepted for booleans (after the value mapping), compared in lower case.
pub const TRUE_SPELLINGS: [&str; 5] = ["true", "t", "1", "yes", "y"];
/// See [`TRUE_SPELLINGS`].
pub const FALSE_SPELLINGS: [&str; 5] = ["false", "f", "0", "no", "n"];

/// Reads one federated column from its local column.
#[derive(Clone, Debug)]
pub struct ColumnReader {
    /// The federated column.
    pub column: Column,
    /// The local column it is read from.
    pub local: String,
    /// Local spelling → federated spelling (categories and booleans).
    pub values: BTreeMap<String, String>,
    /// What an unreadable value becomes.
    pub invalid: InvalidRule,
    /// For categories: every local spelling that lands in the domain → the domain index.
    category_index: HashMap<String, u32>,
}

impl ColumnReader {
    /// A reader for `column` from local column `local` with value mapping `values`. Refuses a
    /// value mapping on a numeric column, or one whose target is outside the domain.
    pub fn new(
        column: Column,
        local: String,
        values: BTreeMap<String, String>,
    ) -> Result<Self, String> {
        let mut category_index = HashMap::new();
        match &column.kind {
            ColumnType::Category { domain } => {
                for (local_value, federated) in &values {
                    let i = domain.iter().position(|d| d == federated).ok_or_else(|| {
                        format!(
                            "the value mapping sends \"{local_value}\" to \"{federated}\", which is not in the domain of \"{}\": {}",
                            column.name,
                            domain.join(", ")
                        )
                    })?;
                    category_index.insert(local_value.clone(), i as u32);
                }
                // A domain value passes through unless the mapping redirects that spelling.
                for (i, d) in domain.iter().enumerate() {
                    if !values.contains_key(d) {
                        category_index.insert(d.clone(), i as u32);
                    }
                }
            }
            ColumnType::Boolean => {
                if let Some((l, f)) = values.iter().find(|(_, f)| spelled_bool(f).is_none()) {
                    return Err(format!(
                        "the value mapping sends \"{l}\" to \"{f}\", which is not true or false"
                    ));
                }
            }
            _ if !values.is_empty() => {
                return Err(format!(
                    "\"{}\" is numeric: value mappings are for category and boolean columns",
                    column.name
                ));
            }
            _ => {}
        }
        Ok(Self {
            column,
            local,
            values,
            invalid: InvalidRule::Refuse,
            category_index,
        })
    }

    /// The same reader, reading an unreadable value as `rule` says.
    pub fn with_invalid(self, rule: InvalidRule) -> Self {
        Self {
            invalid: rule,
            ..self
        }
    }

    /// Every local spelling of a category value with its domain index (for SQL pushdown).
    pub fn category_spellings(&self) -> impl Iterator<Item = (&str, u32)> {
        self.category_index.iter().map(|(s, i)| (s.as_str(), *i))
    }

    /// Reads one raw value; the error says what was expected (the caller adds file, row and
    /// column).
    pub fn read(&self, raw: Raw<'_>) -> Result<Cell, String> {
        if matches!(raw, Raw::Null) || matches!(raw, Raw::Text(t) if t.is_empty()) {
            return Ok(Cell::Missing);
        }
        let value = match &self.column.kind {
            ColumnType::Integer { .. } => Value::Int(match raw {
                Raw::Int(i) => i,
                Raw::Real(r) if r.fract() == 0.0 && r.abs() < 9.0e15 => r as i64,
                Raw::Text(t) => t
                    .trim()
                    .parse::<i64>()
                    .map_err(|_| "expected a whole number, found text".to_string())?,
                other => {
                    return Err(format!(
                        "expected a whole number, found {}",
                        describe(other)
                    ));
                }
            }),
            ColumnType::Decimal { .. } => Value::Dec(match raw {
                Raw::Int(i) => i as f64,
                Raw::Real(r) if r.is_finite() => r,
                Raw::Text(t) => t
                    .trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|v| v.is_finite())
                    .ok_or_else(|| "expected a finite number, found text".to_string())?,
                other => {
                    return Err(format!(
                        "expected a finite number, found {}",
                        describe(other)
                    ));
                }
            }),
            ColumnType::Category { .. } => {
                let owned;
                let text = match raw {
                    Raw::Text(t) => t,
                    Raw::Int(i) => {
                        owned = i.to_string();
                        &owned
                    }
                    other => {
                        return Err(format!(
                            "expected a category value, found {}",
                            describe(other)
                        ));
                    }
                };
                return Ok(match self.category_index.get(text) {
                    Some(i) => Cell::Value(Value::Cat(*i)),
                    None => Cell::OutOfDomain,
                });
            }
            ColumnType::Boolean => Value::Bool(match raw {
                Raw::Bool(b) => b,
                Raw::Int(0) => false,
                Raw::Int(1) => true,
                Raw::Text(t) => {
                    let mapped = self.values.get(t).map(String::as_str).unwrap_or(t);
                    spelled_bool(mapped).ok_or_else(|| {
                        "expected true or false (or a mapped value), found other text".to_string()
                    })?
                }
                other => return Err(format!("expected true or false, found {}", describe(other))),
            }),
        };
        Ok(Cell::Value(value))
    }
}

fn spelled_bool(text: &str) -> Option<bool> {
    // Compared in place: this runs once per row and should not allocate.
    let spelled = |list: &[&str]| list.iter().any(|s| s.eq_ignore_ascii_case(text));
    if spelled(&TRUE_SPELLINGS) {
        Some(true)
    } else if spelled(&FALSE_SPELLINGS) {
        Some(false)
    } else {
        None
    }
}

/// The kind of a raw value, never the value: error messages may reach logs.
fn describe(raw: Raw<'_>) -> &'static str {
    match raw {
        Raw::Null => "an empty value",
        Raw::Int(_) => "a whole number out of range",
        Raw::Real(_) => "a fractional or non-finite number",
        Raw::Text(_) => "text",
        Raw::Bool(_) => "a boolean",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader(kind: ColumnType, values: &[(&str, &str)]) -> Result<ColumnReader, String> {
        let column = Column {
            name: "x".into(),
            kind,
        };
        let values = values
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        ColumnReader::new(column, "local_x".into(), values)
    }

    fn category() -> ColumnType {
        ColumnType::Category {
            domain: vec!["house".into(), "flat".into(), "bungalow".into()],
        }
    }

    #[test]
    fn categories_map_local_codes_and_pass_domain_values_through() {
        let r = reader(
            category(),
            &[("H", "house"), ("F", "flat"), ("flat", "house")],
        )
        .unwrap();
        assert_eq!(r.read(Raw::Text("H")), Ok(Cell::Value(Value::Cat(0))));
        assert_eq!(r.read(Raw::Text("F")), Ok(Cell::Value(Value::Cat(1))));
        // "flat" is redirected by the mapping, "bungalow" passes through.
        assert_eq!(r.read(Raw::Text("flat")), Ok(Cell::Value(Value::Cat(0))));
        assert_eq!(
            r.read(Raw::Text("bungalow")),
            Ok(Cell::Value(Value::Cat(2)))
        );
        assert_eq!(r.read(Raw::Text("caravan")), Ok(Cell::OutOfDomain));
        assert_eq!(r.read(Raw::Text("")), Ok(Cell::Missing));
        assert_eq!(r.read(Raw::Null), Ok(Cell::Missing));
    }

    #[test]
    fn a_mapping_outside_the_domain_or_on_a_number_is_refused() {
        let e = reader(category(), &[("C", "caravan")]).unwrap_err();
        assert!(e.contains("\"caravan\"") && e.contains("domain"), "{e}");
        let int = ColumnType::Integer {
            min: 0,
            max: 9,
            bins: None,
        };
        assert!(reader(int, &[("a", "b")]).unwrap_err().contains("numeric"));
        let e = reader(ColumnType::Boolean, &[("J", "maybe")]).unwrap_err();
        assert!(e.contains("maybe"), "{e}");
    }

    #[test]
    fn numbers_are_typed_and_mismatches_named() {
        let int = reader(
            ColumnType::Integer {
                min: 0,
                max: 120,
                bins: None,
            },
            &[],
        )
        .unwrap();
        assert_eq!(int.read(Raw::Text(" 67")), Ok(Cell::Value(Value::Int(67))));
        assert_eq!(int.read(Raw::Real(67.0)), Ok(Cell::Value(Value::Int(67))));
        let e = int.read(Raw::Text("67.5")).unwrap_err();
        assert!(e.contains("whole number") && !e.contains("67"), "{e}");
        assert!(int.read(Raw::Real(1.5)).is_err());
        let dec = reader(
            ColumnType::Decimal {
                min: 0.0,
                max: 20.0,
                resolution: 0.1,
                bins: None,
            },
            &[],
        )
        .unwrap();
        assert_eq!(dec.read(Raw::Text("7.3")), Ok(Cell::Value(Value::Dec(7.3))));
        assert_eq!(dec.read(Raw::Int(7)), Ok(Cell::Value(Value::Dec(7.0))));
        assert!(dec.read(Raw::Text("NaN")).is_err());
        let e = dec.read(Raw::Text("high")).unwrap_err();
        assert!(
            e.contains("number") && !e.contains("high"),
            "values stay out of errors: {e}"
        );
    }

    #[test]
    fn booleans_accept_common_spellings_and_mapped_codes() {
        let b = reader(ColumnType::Boolean, &[("J", "true"), ("N", "false")]).unwrap();
        for (raw, want) in [
            (Raw::Text("J"), true),
            (Raw::Text("N"), false),
            (Raw::Text("TRUE"), true),
            (Raw::Text("0"), false),
            (Raw::Int(1), true),
            (Raw::Bool(false), false),
        ] {
            assert_eq!(b.read(raw), Ok(Cell::Value(Value::Bool(want))), "{raw:?}");
        }
        assert!(b.read(Raw::Text("perhaps")).is_err());
        assert!(b.read(Raw::Int(2)).is_err());
    }
}
