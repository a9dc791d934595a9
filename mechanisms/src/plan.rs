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
//! Cells are ordered group-major: for each group (the group-by columns in order, the last
//! varying fastest), the histogram's cells (its columns in order, the last varying fastest;
//! a quantile column's bins in order). Agents and the coordinator both follow this order.
//!
//! Values are clamped to the column's public bounds and encoded in fixed point (a decimal
//! column in units of its resolution). Sensitivities follow from the contribution bounds:
//! adding or removing one resident changes at most K = rows per resident per partner ×
//! partners per resident rows, and each row adds at most the block's per-row maximum to a
//! slot. Nothing here looks at data.

use civic_policies::dataset::{ColumnType, DatasetPolicy};
use civic_policies::linkage::LinkedShape;
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
    /// Σ of one coefficient's gradient contributions, in fixed point ([`crate::learning`]).
    Score {
        /// The coefficient ("intercept" or a feature, with the class for a multinomial model).
        coefficient: String,
    },
    /// Σ of one entry of the information matrix's contributions, in fixed point.
    Information {
        /// Row coefficient.
        left: String,
        /// Column coefficient.
        right: String,
    },
    /// A DP-SGD job's clipped gradient sum, one slot per parameter, in fixed point
    /// ([`crate::learning::SgdPlan`]); the examples follow in a count block.
    Gradient,
}

/// What a training job's plan adds to the layout: the public values its Newton steps and
/// their sensitivity follow from ([`crate::learning::LogisticPlan`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LearningSpec {
    /// The model's inputs after the intercept, in order.
    pub inputs: Vec<LearningInput>,
    /// Outcome classes (2 for a boolean outcome).
    pub classes: usize,
    /// The labels of the classes but the reference, in coefficient order.
    pub class_labels: Vec<String>,
    /// Fractional bits of the partners' fixed-point sums.
    pub frac_bits: u32,
    /// The ridge added to the information matrix before each step.
    pub ridge: f64,
    /// Newton steps, one round each.
    pub iterations: u32,
    /// The public bound on rows one partner sums (the round's).
    pub max_rows: u64,
    /// For a DP-SGD job, its trainer and step (the logistic fields are then empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sgd: Option<SgdSpec>,
}

/// A DP-SGD job's public values, as the researcher asked.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SgdSpec {
    /// The trainer's name, as partners configure it locally.
    pub trainer: String,
    /// The model's parameters.
    pub parameters: u32,
    /// Each example's gradient's L2 clip.
    pub clip: f64,
    /// The gradient step's multiplier.
    pub learning_rate: f64,
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
    /// The statistic the plan computes (kept with the layout so the two cannot diverge).
    pub statistic: Statistic,
    /// The blocks, in vector order.
    pub blocks: Vec<Block>,
    /// Total number of slots.
    pub vector_len: usize,
    /// Cells per block (groups × histogram cells).
    pub cells: usize,
    /// K: the most rows one resident has across all partners.
    pub rows_per_resident: u64,
    /// The magnitude bound of one partner's slot, for choosing the ring width: the most
    /// rows a partner may hold × the per-row maximum. For a linked dataset, what one
    /// holder's records can add to a cell over all its pairs (its capacity × the matching
    /// partners): the partners' shares are masked over the whole ring, but their sum is
    /// bounded so.
    pub max_slot_per_partner: u128,
    /// For a training job, what its Newton steps need (None for every other statistic).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub learning: Option<LearningSpec>,
}

impl AggregationPlan {
    /// Whether every slot of a sum over `contributors` partners lies within what their
    /// inputs can produce: |slot| ≤ contributors × `max_slot_per_partner` + `noise_tail`
    /// (the partners' noise shares, beyond which a sum strays with probability below 2⁻⁴⁰).
    /// A slot outside it means a partner sent a wrong share or an input the round was not
    /// sized for, so the unmasked sum is garbage and must not be released.
    pub fn admits_sum(&self, sum: &[i64], contributors: usize, noise_tail: u128) -> bool {
        let bound = self
            .max_slot_per_partner
            .saturating_mul(contributors as u128)
            .saturating_add(noise_tail);
        sum.len() == self.vector_len && sum.iter().all(|v| u128::from(v.unsigned_abs()) <= bound)
    }

    /// Compiles a validated query. `max_rows_per_partner` is the public bound on how many rows
    /// one partner can contribute (its population size), used only to size the ring.
    pub fn compile(
        query: &ValidatedQuery,
        policy: &DatasetPolicy,
        max_rows_per_partner: u64,
    ) -> Result<Self, MechanismError> {
        let cells = query.cells();
        let mut blocks = Vec::new();
        let mut learning = None;
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
            Statistic::LogisticRegression { .. } => {
                let spec = learning_spec(query, policy, max_rows_per_partner)?;
                let unit = 2f64.powi(spec.frac_bits as i32);
                // |each entry of a row's contribution| ≤ 1, so its encoding is at most a unit.
                let per_row = 1u64 << spec.frac_bits;
                let names = coefficient_names(&spec);
                for name in &names {
                    let kind = BlockKind::Score {
                        coefficient: name.clone(),
                    };
                    push(kind, unit, per_row);
                }
                for i in 0..names.len() {
                    for j in i..names.len() {
                        let kind = BlockKind::Information {
                            left: names[i].clone(),
                            right: names[j].clone(),
                        };
                        push(kind, unit, per_row);
                    }
                }
                learning = Some(spec);
            }
            Statistic::DpSgd { .. } => {
                let (spec, sgd) = sgd_spec(query, policy, max_rows_per_partner)?;
                let unit = 2f64.powi(spec.frac_bits as i32);
                blocks.push(Block {
                    kind: BlockKind::Gradient,
                    offset: 0,
                    len: sgd.params,
                    units_per_value: unit,
                    per_row_max: sgd.per_row_max(),
                });
                blocks.push(Block {
                    kind: BlockKind::Count,
                    offset: sgd.params,
                    len: 1,
                    units_per_value: sgd.count_unit() as f64,
                    per_row_max: sgd.count_unit() as u64,
                });
                learning = Some(spec);
            }
        }
        let vector_len: usize = blocks.iter().map(|b| b.len).sum();
        let refuse = |reason: String| {
            Err(MechanismError::InvalidParameter {
                stage: "plan",
                reason,
            })
        };
        if vector_len > MAX_VECTOR_LEN {
            return refuse(format!(
                "the query needs {vector_len} slots; at most {MAX_VECTOR_LEN} are allowed: ask for fewer cells or features"
            ));
        }
        let (rows_per_resident, rows_per_partner) = match &policy.linkage {
            Some(_) => {
                let shape = LinkedShape::of(query, policy).map_err(|e| {
                    MechanismError::InvalidParameter {
                        stage: "plan",
                        reason: e.to_string(),
                    }
                })?;
                // A linked table gets one "row" per pair of partners holding the resident;
                // a holder's records join at most once per matching partner.
                let joined = u64::from(shape.holder.capacity)
                    .saturating_mul(shape.matcher.partners.len() as u64);
                (shape.pairs_per_resident(), joined)
            }
            None => (
                u64::from(policy.rows_per_resident_per_partner())
                    * u64::from(policy.max_partners_per_person),
                max_rows_per_partner,
            ),
        };
        let max_slot_per_partner = blocks
            .iter()
            .map(|b| u128::from(b.per_row_max) * u128::from(rows_per_partner))
            .max()
            .unwrap_or(0);
        // The summed vector is decoded as i64: the largest possible sum must fit.
        if max_slot_per_partner.saturating_mul(policy.partners().len() as u128) > i64::MAX as u128 {
            return refuse(format!(
                "{} partners × {max_slot_per_partner} per partner could overflow the sum: narrow the bounds or coarsen the resolution",
                policy.partners().len()
            ));
        }
        let plan = Self {
            dataset: policy.id().to_string(),
            statistic: query.query().statistic.clone(),
            blocks,
            vector_len,
            cells,
            rows_per_resident,
            max_slot_per_partner,
            learning,
        };
        if plan.learning.is_some() {
            // The model's own checks (bounds, classes, the encoding's overflow margin).
            plan.training_model()?;
        }
        // Every sensitivity the release may need must be exact: refuse the plan now if not.
        plan.joint_sensitivity(&plan.blocks)?;
        Ok(plan)
    }

    /// The L1 sensitivity of one block: K rows, each adding at most `per_row_max` to one slot
    /// (a count or sum block) or to every slot of a regression's cross-product blocks. Refused
    /// above 2^53, where the noise calibration in f64 would no longer be exact.
    pub fn l1_sensitivity(&self, block: &Block) -> Result<u64, MechanismError> {
        self.rows_per_resident
            .checked_mul(block.per_row_max)
            .filter(|s| *s <= MAX_SENSITIVITY)
            .ok_or_else(|| too_sensitive(self.rows_per_resident, block.per_row_max))
    }

    /// The L1 and L2 sensitivities of a group of blocks released together (a regression's
    /// cross products, where one row touches a slot in every block).
    pub fn joint_sensitivity(&self, blocks: &[Block]) -> Result<(u64, f64), MechanismError> {
        if let Some(spec) = &self.learning {
            // One resident moves every slot of an iteration at once; the learning core bounds
            // the whole vector's norms (much tighter than the blocks' sum).
            let (l1, l2) = match spec.sgd {
                Some(_) => {
                    let sgd = self.sgd()?;
                    (sgd.encoded_l1(), sgd.encoded_l2())
                }
                None => {
                    let logistic = self.logistic()?;
                    (logistic.encoded_l1(), logistic.encoded_l2())
                }
            };
            let l1 = l1.ceil();
            if blocks.len() != self.blocks.len() || l1 > MAX_SENSITIVITY as f64 {
                return Err(MechanismError::InvalidParameter {
                    stage: "plan",
                    reason: "a training job's iteration is noised as one vector, whose \
                             sensitivity must stay below 2^53"
                        .into(),
                });
            }
            return Ok((l1 as u64, l2));
        }
        let mut l1: u64 = 0;
        // Summed exactly: each square is below 2^106 and a query has fewer than 2^20 blocks.
        let mut squares: u128 = 0;
        for b in blocks {
            let s = self.l1_sensitivity(b)?;
            l1 = l1
                .checked_add(s)
                .filter(|s| *s <= MAX_SENSITIVITY)
                .ok_or_else(|| too_sensitive(self.rows_per_resident, b.per_row_max))?;
            squares = squares.saturating_add(u128::from(s) * u128::from(s));
        }
        Ok((l1, sqrt_up(squares)))
    }

    /// Checks that the layout is what [`AggregationPlan::compile`] makes for the plan's
    /// statistic (a plan read back from a store is input like any other): the number of
    /// blocks, contiguous offsets, one slot per cell.
    pub fn check_layout(&self) -> Result<(), MechanismError> {
        let expected_blocks = match &self.statistic {
            Statistic::Count
            | Statistic::Histogram { .. }
            | Statistic::Quantiles { .. }
            | Statistic::Sum { .. } => 1,
            Statistic::Mean { .. } => 2,
            Statistic::LinearRegression { features, .. } => {
                let p = features.len() + 1;
                p * (p + 1) / 2 + p
            }
            Statistic::LogisticRegression { .. } => match &self.learning {
                Some(spec) => {
                    let d = (spec.inputs.len() + 1) * spec.classes.saturating_sub(1);
                    d + d * (d + 1) / 2
                }
                None => {
                    return Err(layout_error(
                        "a logistic regression without its learning spec",
                    ));
                }
            },
            Statistic::DpSgd {
                trainer,
                parameters,
                clip,
                learning_rate,
                ..
            } => {
                // The gradient's slots, then the examples, for the job asked.
                let params = *parameters as usize;
                let expected = [(0, params), (params, 1)];
                let laid: Vec<(usize, usize)> =
                    self.blocks.iter().map(|b| (b.offset, b.len)).collect();
                let kinds = self.blocks.iter().map(|b| &b.kind).collect::<Vec<_>>();
                if laid != expected
                    || kinds != [&BlockKind::Gradient, &BlockKind::Count]
                    || self.vector_len != params + 1
                    || self.learning.as_ref().and_then(|l| l.sgd.as_ref())
                        != Some(&SgdSpec {
                            trainer: trainer.clone(),
                            parameters: *parameters,
                            clip: *clip,
                            learning_rate: *learning_rate,
                        })
                {
                    return Err(layout_error(
                        "a DP-SGD job is its gradient's slots and then its examples'",
                    ));
                }
                return Ok(());
            }
        };
        let mut offset = 0;
        for b in &self.blocks {
            if b.offset != offset || b.len != self.cells {
                return Err(layout_error(
                    "blocks are not contiguous with one slot per cell",
                ));
            }
            offset += b.len;
        }
        if self.blocks.len() != expected_blocks || offset != self.vector_len {
            return Err(layout_error(&format!(
                "{} blocks of {} slots in all, where the statistic needs {expected_blocks} blocks",
                self.blocks.len(),
                offset
            )));
        }
        Ok(())
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

/// The longest vector a plan may have (as in the secure-aggregation layer).
pub const MAX_VECTOR_LEN: usize = 1 << 26;
/// The largest sensitivity calibrated: f64 holds every integer up to 2^53 exactly.
pub const MAX_SENSITIVITY: u64 = 1 << 53;

/// The least f64 at or above √q: an L2 sensitivity is never rounded down (a rounded-down one
/// would under-noise).
pub fn sqrt_up(q: u128) -> f64 {
    let mut root = (q as f64).sqrt();
    while !square_at_least(root, q) {
        root = root.next_up();
    }
    root
}

/// Whether x² ≥ q exactly, for finite x ≥ 0: x = m·2^e with m a 53-bit integer, so x² ≥ q is
/// m² ≥ q·2^(−2e) (e < 0) or m²·2^(2e) ≥ q (e ≥ 0), compared in arbitrary precision.
fn square_at_least(x: f64, q: u128) -> bool {
    use dashu_int::UBig;
    let bits = x.to_bits();
    let exponent_bits = ((bits >> 52) & 0x7ff) as i64;
    let fraction = bits & ((1u64 << 52) - 1);
    let (m, e) = if exponent_bits == 0 {
        (fraction, -1074)
    } else {
        (fraction | (1u64 << 52), exponent_bits - 1075)
    };
    let square = UBig::from(m) * UBig::from(m);
    let q = UBig::from(q);
    if e >= 0 {
        (square << (2 * e as usize)) >= q
    } else {
        square >= (q << (-2 * e) as usize)
    }
}

impl AggregationPlan {
    /// A training job's Newton steps, from the plan (None for other statistics is an error).
    pub fn logistic(&self) -> Result<crate::learning::LogisticPlan, MechanismError> {
        let spec = self
            .learning
            .as_ref()
            .filter(|l| l.sgd.is_none())
            .ok_or_else(|| layout_error("the plan is not a logistic regression's"))?;
        let rows_per_resident = u32::try_from(self.rows_per_resident)
            .map_err(|_| layout_error("a training job needs fewer than 2^32 rows per resident"))?;
        let max_rows = spec.max_rows;
        crate::learning::LogisticPlan::new(
            spec.inputs
                .iter()
                .map(|i| crate::learning::FeatureBounds { lo: i.lo, hi: i.hi })
                .collect(),
            spec.classes,
            spec.frac_bits,
            spec.ridge,
            crate::learning::ResidentBounds {
                rows_per_resident,
                partners_per_person: 1,
                max_rows,
            },
        )
    }
}

impl AggregationPlan {
    /// A training job's model, whichever kind (an error for any other plan).
    pub fn training_model(&self) -> Result<crate::learning::TrainingModel, MechanismError> {
        use crate::learning::TrainingModel;
        match self.learning.as_ref().map(|l| l.sgd.is_some()) {
            Some(true) => self.sgd().map(TrainingModel::Sgd),
            Some(false) => self.logistic().map(TrainingModel::Logistic),
            None => Err(layout_error("the plan is not a training job's")),
        }
    }

    /// A DP-SGD job's steps, from the plan (an error for any other plan).
    pub fn sgd(&self) -> Result<crate::learning::SgdPlan, MechanismError> {
        let spec = self
            .learning
            .as_ref()
            .filter(|l| l.sgd.is_some())
            .ok_or_else(|| layout_error("the plan is not a DP-SGD job's"))?;
        let rows_per_resident = u32::try_from(self.rows_per_resident)
            .map_err(|_| layout_error("a training job needs fewer than 2^32 rows per resident"))?;
        spec_sgd_plan(spec, rows_per_resident)
    }
}

/// The DP-SGD plan a spec describes, for `rows_per_resident` rows of one resident in all.
fn spec_sgd_plan(
    spec: &LearningSpec,
    rows_per_resident: u32,
) -> Result<crate::learning::SgdPlan, MechanismError> {
    let sgd = spec
        .sgd
        .as_ref()
        .ok_or_else(|| layout_error("the plan is not a DP-SGD job's"))?;
    crate::learning::SgdPlan::new(
        sgd.parameters as usize,
        sgd.clip,
        sgd.learning_rate,
        crate::learning::ResidentBounds {
            rows_per_resident,
            partners_per_person: 1,
            max_rows: spec.max_rows,
        },
        spec.frac_bits,
    )
}

/// A DP-SGD job's public spec from its query, and its plan: the fixed point as fine as the
/// clip, the parameters and the row bound allow.
fn sgd_spec(
    query: &ValidatedQuery,
    policy: &DatasetPolicy,
    max_rows_per_partner: u64,
) -> Result<(LearningSpec, crate::learning::SgdPlan), MechanismError> {
    let Statistic::DpSgd {
        trainer,
        parameters,
        clip,
        learning_rate,
        iterations,
    } = &query.query().statistic
    else {
        return Err(layout_error("not a DP-SGD job"));
    };
    let rows = u32::try_from(
        u64::from(policy.rows_per_resident_per_partner())
            * u64::from(policy.max_partners_per_person),
    )
    .map_err(|_| layout_error("a training job needs fewer than 2^32 rows per resident"))?;
    let residents = crate::learning::ResidentBounds {
        rows_per_resident: rows,
        partners_per_person: 1,
        max_rows: max_rows_per_partner,
    };
    let frac_bits = crate::learning::SgdPlan::frac_bits_for(
        *parameters as usize,
        *clip,
        *learning_rate,
        residents,
    )
    .ok_or_else(|| MechanismError::InvalidParameter {
        stage: "plan",
        reason: format!(
            "a clip of {clip} for {parameters} parameters over {max_rows_per_partner} examples \
             per partner leaves no room for a fixed-point sum: ask with a smaller clip or fewer \
             parameters"
        ),
    })?;
    let spec = LearningSpec {
        inputs: Vec::new(),
        classes: 0,
        class_labels: Vec::new(),
        frac_bits,
        ridge: 0.0,
        iterations: *iterations,
        max_rows: max_rows_per_partner,
        sgd: Some(SgdSpec {
            trainer: trainer.clone(),
            parameters: *parameters,
            clip: *clip,
            learning_rate: *learning_rate,
        }),
    };
    let sgd = spec_sgd_plan(&spec, rows)?;
    Ok((spec, sgd))
}

/// The fractional bits of a training job's sums: as many as leave every partner's sum and the
/// federation's total inside i64 for `max_rows` rows (see [`crate::learning::LogisticPlan`]),
/// at most 30.
fn learning_frac_bits(max_rows: u64) -> u32 {
    let row_bits = 64 - max_rows.max(1).leading_zeros();
    49u32.saturating_sub(row_bits).clamp(8, 30)
}

/// The ridge added before each Newton step, in scaled coordinates: small beside any
/// information matrix of more than a handful of residents.
const LEARNING_RIDGE: f64 = 1e-3;

/// A logistic regression's public spec from its query and the schema's bounds.
fn learning_spec(
    query: &ValidatedQuery,
    policy: &DatasetPolicy,
    max_rows_per_partner: u64,
) -> Result<LearningSpec, MechanismError> {
    let Statistic::LogisticRegression {
        features,
        outcome,
        iterations,
    } = &query.query().statistic
    else {
        return Err(layout_error("not a logistic regression"));
    };
    let kind = |name: &str| {
        policy
            .column(name)
            .map(|c| &c.kind)
            .ok_or_else(|| MechanismError::InvalidParameter {
                stage: "plan",
                reason: format!("column \"{name}\" is not in dataset {}", policy.id()),
            })
    };
    let mut inputs = Vec::new();
    for f in features {
        let indicator = |level: u32, name: String| LearningInput {
            column: f.clone(),
            name,
            level: Some(level),
            lo: 0.0,
            hi: 1.0,
        };
        let numeric = |lo: f64, hi: f64| LearningInput {
            column: f.clone(),
            name: f.clone(),
            level: None,
            lo,
            hi,
        };
        match kind(f)? {
            ColumnType::Integer { min, max, .. } => inputs.push(numeric(*min as f64, *max as f64)),
            ColumnType::Decimal { min, max, .. } => inputs.push(numeric(*min, *max)),
            ColumnType::Boolean => inputs.push(indicator(1, f.clone())),
            ColumnType::Category { domain } => {
                for (i, value) in domain.iter().enumerate().skip(1) {
                    inputs.push(indicator(i as u32, format!("{f}={value}")));
                }
            }
        }
    }
    let labels: Vec<String> = match kind(outcome)? {
        ColumnType::Boolean => vec!["false".into(), "true".into()],
        ColumnType::Category { domain } => domain.clone(),
        _ => return Err(layout_error("the outcome is not a boolean or category")),
    };
    Ok(LearningSpec {
        inputs,
        classes: labels.len(),
        class_labels: labels[1..].to_vec(),
        frac_bits: learning_frac_bits(max_rows_per_partner),
        ridge: LEARNING_RIDGE,
        iterations: *iterations,
        max_rows: max_rows_per_partner,
        sgd: None,
    })
}

/// One input of a logistic model: a numeric column clamped to its bounds, or an indicator of
/// one value of a boolean or category column.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LearningInput {
    /// The column it is read from.
    pub column: String,
    /// Its name among the coefficients: the column, or `column=value`.
    pub name: String,
    /// For an indicator, the value's index in the column's cells (`true` is 1); None for a
    /// numeric column.
    pub level: Option<u32>,
    /// Public bounds (0 and 1 for an indicator).
    pub lo: f64,
    /// Upper bound.
    pub hi: f64,
}

/// A training job's coefficients by name, in order: "intercept" and the features, for each
/// class but the reference (named "… [class]" when there are several).
pub fn coefficient_names(spec: &LearningSpec) -> Vec<String> {
    if let Some(sgd) = &spec.sgd {
        return (0..sgd.parameters).map(|i| format!("theta[{i}]")).collect();
    }
    let inputs: Vec<&str> = std::iter::once("intercept")
        .chain(spec.inputs.iter().map(|i| i.name.as_str()))
        .collect();
    spec.class_labels
        .iter()
        .flat_map(|class| {
            inputs.iter().map(move |i| match spec.classes {
                2 => (*i).to_string(),
                _ => format!("{i} [{class}]"),
            })
        })
        .collect()
}

fn layout_error(reason: &str) -> MechanismError {
    MechanismError::InvalidParameter {
        stage: "plan",
        reason: format!("inconsistent plan: {reason}"),
    }
}

fn too_sensitive(rows: u64, per_row: u64) -> MechanismError {
    MechanismError::InvalidParameter {
        stage: "plan",
        reason: format!(
            "{rows} rows per resident × {per_row} per row makes a sensitivity above 2^53: narrow the bounds or coarsen the resolution"
        ),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn l2_sensitivities_are_never_rounded_down() {
        for q in [
            0u128,
            1,
            2,
            3,
            4,
            5,
            10,
            99,
            1 << 60,
            (1 << 100) + 12_345,
            u128::MAX >> 22,
        ] {
            let r = sqrt_up(q);
            assert!(square_at_least(r, q), "{q}");
            // ... and it is the least such f64.
            if r > 0.0 {
                assert!(
                    !square_at_least(r.next_down(), q),
                    "{q}: {r} is not the least"
                );
            }
        }
        // The f64 square root of 2^106 − 1 rounds to 2^53, which is above; of 2 it is below.
        assert!(sqrt_up(2) * sqrt_up(2) >= 2.0);
    }
}
