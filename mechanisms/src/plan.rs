//! Compiling a validated query into an aggregation plan: the layout of the vector each
//! partner computes, masks and sends, and each block's sensitivity.
//!
//! The vector is a sequence of blocks; each block has one slot per cell (group, or histogram
//! cell × group) and a homogeneous kind:
//!
//! | statistic | blocks |
//! |---|---|
//! | count | `count` |
//! | sum of c | `sum(c)` |
//! | mean of c | `sum(c)`, `count` (the budget split in half between them) |
//! | histogram / quantiles | `count` over the cells |
//! | linear regression | `cross(i, j)` for the upper triangle of XᵀX with an intercept, then `cross(i, y)` for Xᵀy |
//!
//! Values are clamped to the column's public bounds and encoded in fixed point (a decimal
//! column in units of its resolution). Sensitivities follow from the contribution bounds:
//! adding or removing one resident changes at most K = rows per resident per partner ×
//! partners per resident rows, and each row adds at most the block's per-row maximum to a
//! slot. Nothing here looks at data.

use civic_policies::dataset::{ColumnType, DatasetPolicy};
use civic_policies::query::{Statistic, ValidatedQuery};
use serde::{Deserialize, Serialize};

use crate::error::MechanismError;

/// What a block's slots hold.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlockKind {
    /// Rows per cell.
    Count,
    /// Σ clamped column values per cell, in fixed point.
    Sum {
        /// The column.
        column: String,
    },
    /// Σ x_i·x_j per group, in fixed point; "1" names the intercept.
    Cross {
        /// First factor.
        left: String,
        /// Second factor.
        right: String,
    },
}

/// One block of the vector.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Block {
    /// What the slots hold.
    pub kind: BlockKind,
    /// Index of the first slot.
    pub offset: usize,
    /// Number of slots.
    pub len: usize,
    /// Fixed-point units per unit of the statistic (1 for counts; 1/resolution for a decimal
    /// sum; the product of both factors' for a cross product).
    pub units_per_value: f64,
    /// The most one row can add to one slot, in fixed-point units.
    pub per_row_max: u64,
}

/// The whole vector layout with the sensitivities that follow from the contribution bounds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AggregationPlan {
    /// The dataset.
    pub dataset: String,
    /// The blocks, in vector order.
    pub blocks: Vec<Block>,
    /// Total number of slots.
    pub vector_len: usize,
    /// Cells per block (groups × histogram cells).
    pub cells: usize,
    /// K: the most rows one resident has across all partners.
    pub rows_per_resident: u64,
    /// The magnitude bound of one partner's slot, for choosing the ring width: the most
    /// rows a partner may hold × the per-row maximum.
    pub max_slot_per_partner: u128,
}

impl AggregationPlan {
    /// Compiles a validated query. `max_rows_per_partner` is the public bound on how many rows
    /// one partner can contribute (its population size), used only to size the ring.
    pub fn compile(
        query: &ValidatedQuery,
        policy: &DatasetPolicy,
        max_rows_per_partner: u64,
    ) -> Result<Self, MechanismError> {
        let cells = query.cells();
        let mut blocks = Vec::new();
        let mut push = |kind: BlockKind, units_per_value: f64, per_row_max: u64| {
            let offset = blocks.iter().map(|b: &Block| b.len).sum();
            blocks.push(Block {
                kind,
                offset,
                len: cells,
                units_per_value,
                per_row_max,
            });
        };
        let factor = |name: &str| -> Result<(f64, u64), MechanismError> {
            let column = policy
                .column(name)
                .ok_or_else(|| MechanismError::InvalidParameter {
                    stage: "plan",
                    reason: format!("column \"{name}\" is not in dataset {}", policy.id()),
                })?;
            fixed_point(&column.kind).ok_or_else(|| MechanismError::InvalidParameter {
                stage: "plan",
                reason: format!("column \"{name}\" is not numeric"),
            })
        };
        match &query.query().statistic {
            Statistic::Count | Statistic::Histogram { .. } | Statistic::Quantiles { .. } => {
                push(BlockKind::Count, 1.0, 1)
            }
            Statistic::Sum { column } | Statistic::Mean { column } => {
                let (units, max) = factor(column)?;
                let kind = BlockKind::Sum {
                    column: column.clone(),
                };
                push(kind, units, max);
                if matches!(query.query().statistic, Statistic::Mean { .. }) {
                    push(BlockKind::Count, 1.0, 1);
                }
            }
            Statistic::LinearRegression { features, target } => {
                let mut names: Vec<&str> = vec!["1"];
                names.extend(features.iter().map(String::as_str));
                let scaled = |n: &str| if n == "1" { Ok((1.0, 1)) } else { factor(n) };
                for i in 0..names.len() {
                    for j in i..names.len() {
                        let ((ui, mi), (uj, mj)) = (scaled(names[i])?, scaled(names[j])?);
                        let kind = BlockKind::Cross {
                            left: names[i].into(),
                            right: names[j].into(),
                        };
                        push(kind, ui * uj, checked_product(mi, mj)?);
                    }
                }
                let (uy, my) = factor(target)?;
                for name in &names {
                    let (u, m) = scaled(name)?;
                    let kind = BlockKind::Cross {
                        left: (*name).into(),
                        right: target.clone(),
                    };
                    push(kind, u * uy, checked_product(m, my)?);
                }
            }
        }
        let vector_len = blocks.iter().map(|b| b.len).sum();
        let rows_per_resident = u64::from(policy.rows_per_resident_per_partner())
            * u64::from(policy.max_partners_per_person);
        let max_slot_per_partner = blocks
            .iter()
            .map(|b| u128::from(b.per_row_max) * u128::from(max_rows_per_partner))
            .max()
            .unwrap_or(0);
        Ok(Self {
            dataset: policy.id().to_string(),
            blocks,
            vector_len,
            cells,
            rows_per_resident,
            max_slot_per_partner,
        })
    }

    /// The L1 sensitivity of one block: K rows, each adding at most `per_row_max` to one slot
    /// (a count or sum block) or to every slot of a regression's cross-product blocks.
    pub fn l1_sensitivity(&self, block: &Block) -> u64 {
        self.rows_per_resident.saturating_mul(block.per_row_max)
    }

    /// The L1 and L2 sensitivities of a group of blocks released together (a regression's
    /// cross products, where one row touches a slot in every block).
    pub fn joint_sensitivity(&self, blocks: &[Block]) -> (u64, f64) {
        let l1 = blocks
            .iter()
            .map(|b| self.l1_sensitivity(b))
            .fold(0u64, u64::saturating_add);
        let l2 = blocks
            .iter()
            .map(|b| (self.l1_sensitivity(b) as f64).powi(2))
            .sum::<f64>()
            .sqrt();
        (l1, l2)
    }

    /// Splits a summed vector back into its blocks' values, in statistic units.
    pub fn decode<'a>(
        &'a self,
        summed: &'a [i64],
    ) -> Result<Vec<(&'a Block, Vec<f64>)>, MechanismError> {
        if summed.len() != self.vector_len {
            return Err(MechanismError::InvalidParameter {
                stage: "decode",
                reason: format!(
                    "the summed vector has {} slots, the plan {}",
                    summed.len(),
                    self.vector_len
                ),
            });
        }
        Ok(self
            .blocks
            .iter()
            .map(|b| {
                let values = summed[b.offset..b.offset + b.len]
                    .iter()
                    .map(|v| *v as f64 / b.units_per_value)
                    .collect();
                (b, values)
            })
            .collect())
    }
}

/// A numeric column's fixed-point units per value and its largest clamped magnitude in units.
fn fixed_point(kind: &ColumnType) -> Option<(f64, u64)> {
    match kind {
        ColumnType::Integer { min, max, .. } => {
            Some((1.0, min.unsigned_abs().max(max.unsigned_abs())))
        }
        ColumnType::Decimal {
            min,
            max,
            resolution,
            ..
        } => {
            let units = 1.0 / resolution;
            let largest = (min.abs().max(max.abs()) * units).ceil();
            Some((units, largest as u64))
        }
        _ => None,
    }
}

fn checked_product(a: u64, b: u64) -> Result<u64, MechanismError> {
    a.checked_mul(b).ok_or_else(|| MechanismError::InvalidParameter {
        stage: "plan",
        reason: format!("a cross product of bounds {a} × {b} overflows 64 bits: narrow the bounds or coarsen the resolution"),
    })
}
