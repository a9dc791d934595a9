//! From a summed vector to a released statistic: noise once per block group, post-processing
//! (clamping, disclosure control, the statistic's own arithmetic), intervals and a receipt.
//!
//! [`ReleasePlan::new`] is the preview: it calibrates the noise and states the cost and the
//! interval half-widths without touching data, so the cost can be reserved first.
//! [`ReleasePlan::release`] samples, once; the caller stores the result and never samples
//! again for the same query.

use civic_policies::dataset::{ColumnType, DatasetPolicy};
use civic_policies::query::Statistic;
use civic_policies::{Disclosed, Rho};
use serde::{Deserialize, Serialize};

use crate::accounting::epsilon_at_delta;
use crate::accuracy::half_width;
use crate::distributed::{
    ShareCount, noise_tail, rho_of_shares, share_sigma_for_rho, sum_half_width,
};
use crate::error::MechanismError;
use crate::noise::{Cost, NoiseKind, NoiseSpec};
use crate::plan::{AggregationPlan, BlockKind};
use crate::suppression::{NoiseCdf, shown_count_interval};

/// The privacy a researcher spends on one release.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PrivacyChoice {
    /// Pure ε-DP with discrete Laplace noise.
    Epsilon(f64),
    /// ρ-zCDP with discrete Gaussian noise.
    Rho(f64),
}

/// Where a release's noise is added.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoiseSetting {
    /// By the coordinator, to the exact sum.
    Central,
    /// By the partners, in shares sized for the round's honest survivors (see
    /// [`crate::distributed`]).
    Distributed(ShareCount),
}

/// A group's distributed noise: what each contributing partner adds to each of its slots.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Shares {
    /// The shares counted as noise, and the partners that may add one.
    pub count: ShareCount,
    /// σ of each partner's N_Z(0, σ²), in fixed-point units.
    pub sigma: f64,
    /// ρ of the honest shares' sum (KLS21 Proposition 14): at most the group's charge.
    pub rho_bound: f64,
}

/// Blocks noised together, with their mechanism and cost.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NoiseGroup {
    /// Indices into the plan's blocks.
    pub blocks: Vec<usize>,
    /// The calibrated noise (scale in fixed-point units).
    pub spec: NoiseSpec,
    /// Its ε (pure DP), if any.
    pub epsilon: Option<f64>,
    /// Its ρ, as charged.
    pub rho: Rho,
    /// Distributed noise: the partners' shares (None: central noise, added by the
    /// coordinator with `spec`). For distributed noise `spec` is the discrete Gaussian the
    /// honest shares amount to (scale σ·√h), kept for the sensitivity it was calibrated for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shares: Option<Shares>,
}

/// The calibrated mechanisms of one release: what it costs and how accurate it will be.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReleasePlan {
    /// The groups, each noised independently.
    pub groups: Vec<NoiseGroup>,
    /// Significance level of the intervals (0.05 for 95%).
    pub alpha: f64,
    /// What the release costs, charged before it leaves the coordinator.
    pub cost: Rho,
}

/// One released cell.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Cell {
    /// The value after post-processing (None where suppressed or undefined).
    pub value: Option<f64>,
    /// The interval, where one is stated: the true value lies inside with probability ≥ 1 − α
    /// (before disclosure rounding).
    pub interval: Option<(f64, f64)>,
}

/// A released statistic with its receipt.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Release {
    /// What each output row is (e.g. "count", "mean(hba1c)", "q0.5(hba1c)", "beta(age)").
    pub names: Vec<String>,
    /// Cells per output row (one per group; histogram cells × groups for counts).
    pub rows: Vec<Vec<Cell>>,
    /// How it was made.
    pub receipt: Receipt,
}

/// The privacy receipt of a release.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Receipt {
    /// Always "one resident".
    pub privacy_unit: String,
    /// Rows per resident per partner × partners per resident.
    pub rows_per_resident: u64,
    /// The public clamping bounds of every column the statistic sums.
    pub bounds: Vec<String>,
    /// The mechanisms: name, scale, sensitivity and cost per group.
    pub mechanisms: Vec<String>,
    /// Total ρ charged.
    pub rho: f64,
    /// ε, for a pure-DP release.
    pub epsilon: Option<f64>,
    /// The charged ρ as (ε, δ) through OpenDP's conversion, at the coordinator's reporting δ
    /// (10⁻⁶ unless configured): how this release
    /// composes with others in the ledger (for one pure-ε release it reads looser than ε).
    pub approx_dp: (f64, f64),
    /// Partners whose data is in the sum.
    pub survivors: usize,
    /// Post-processing applied.
    pub rules: Vec<String>,
    /// The intervals' confidence: 0.95 for α = 0.05, and 1 − 2α (0.9) for a mean's, which
    /// combine two intervals.
    pub confidence: f64,
    /// Caveats a researcher must read (e.g. a ridge-regularised regression).
    pub caveats: Vec<String>,
    /// Where the noise was added: `distributed` (by the partners, before masking: the
    /// coordinator never held the exact sum) or `central` (by the coordinator).
    pub noise: civic_policies::dataset::NoisePlacement,
    /// For distributed noise: the shares counted as noise whatever the coordinator does (the
    /// round's least contributors minus the colluders it withstands), for which `rho` is
    /// guaranteed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub honest_shares: Option<usize>,
}

/// What each output row of `statistic` is called: "count", "sum(c)", "mean(c)", "q0.5(c)",
/// "beta(intercept) for y", "beta(x)".
pub fn row_names(statistic: &Statistic) -> Vec<String> {
    match statistic {
        Statistic::Count | Statistic::Histogram { .. } => vec!["count".into()],
        Statistic::Sum { column } => vec![format!("sum({column})")],
        Statistic::Mean { column } => vec![format!("mean({column})")],
        Statistic::Quantiles {
            column,
            probabilities,
        } => probabilities
            .iter()
            .map(|p| format!("q{p}({column})"))
            .collect(),
        Statistic::LinearRegression { features, target } => {
            std::iter::once(format!("beta(intercept) for {target}"))
                .chain(features.iter().map(|f| format!("beta({f})")))
                .collect()
        }
        // A multinomial model's rows are per class too: the plan's score blocks name them.
        Statistic::LogisticRegression {
            features, outcome, ..
        } => std::iter::once(format!("beta(intercept) for {outcome}"))
            .chain(features.iter().map(|f| format!("beta({f})")))
            .collect(),
        Statistic::DpSgd { parameters, .. } => {
            (0..*parameters).map(|i| format!("theta[{i}]")).collect()
        }
    }
}

/// A training job's coefficients' row names, from its plan's score blocks: "beta(age)",
/// "beta(intercept) for failed", and "… [class]" per class of a multinomial model.
pub fn coefficient_rows(plan: &AggregationPlan) -> Vec<String> {
    let outcome = match &plan.statistic {
        Statistic::LogisticRegression { outcome, .. } => outcome.as_str(),
        Statistic::DpSgd { .. } => return row_names(&plan.statistic),
        _ => return Vec::new(),
    };
    plan.blocks
        .iter()
        .filter_map(|b| match &b.kind {
            BlockKind::Score { coefficient } => Some(match coefficient.strip_prefix("intercept") {
                Some(class) => format!("beta(intercept) for {outcome}{class}"),
                None => format!("beta({coefficient})"),
            }),
            _ => None,
        })
        .collect()
}

/// How accurate one row of a release will be, as far as is known before any data: what a
/// preview shows a researcher about the statistic asked for (not its internal blocks).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RowAccuracy {
    /// The row, as the release will name it.
    pub name: String,
    /// The half-width of each cell's interval, in the statistic's units, where it does not
    /// depend on the data (counts, sums).
    pub half_width: Option<f64>,
    /// For a mean, whose half-width depends on its cell's rows: (rows, half-width) for cells
    /// of 100 to 100 000 rows, at the widest mean the column's bounds allow.
    pub half_width_at_rows: Vec<(u64, f64)>,
    /// The confidence of these intervals.
    pub confidence: f64,
    /// What else shapes the accuracy (rounding, no stated interval).
    pub note: Option<String>,
}

/// The cell sizes a mean's half-width is shown at.
const MEAN_ROWS: [u64; 4] = [100, 1_000, 10_000, 100_000];

fn split(choice: PrivacyChoice, parts: usize) -> PrivacyChoice {
    match choice {
        PrivacyChoice::Epsilon(e) => PrivacyChoice::Epsilon(e / parts as f64),
        PrivacyChoice::Rho(r) => PrivacyChoice::Rho(r / parts as f64),
    }
}

/// The mechanism with its scale raised by the fewest ulps, if any, for its cost (OpenDP's
/// map rounds up, and the ledger rounds that up again) to come within `charge`, the amount
/// asked for: so that a request for ρ = 0.1 is charged exactly 0.1 and compares as 0.1 with
/// thresholds and caps. In practice the scale moves by a few ulps. Should it not come within
/// after the last try, the mechanism's own cost stands (charged as computed, never less).
fn within_charge(spec: NoiseSpec, charge: Rho) -> Result<(NoiseSpec, Cost), MechanismError> {
    let mut candidate = spec;
    for step in 0..12 {
        let cost = candidate.cost()?;
        if cost.rho <= charge {
            return Ok((candidate, cost));
        }
        candidate.scale = spec.scale * (1.0 + f64::EPSILON * f64::from(1u32 << step));
    }
    let cost = spec.cost()?;
    Ok((spec, cost))
}

/// What each of `parts` groups is charged for `choice`, in exact ledger units: a ρ request's
/// units shared out whole (so the parts add up to the request), or each ε share's ε²/2.
fn charges(choice: PrivacyChoice, parts: usize) -> Result<Vec<Rho>, MechanismError> {
    let invalid = |e: civic_policies::PolicyError| MechanismError::InvalidParameter {
        stage: "calibrate",
        reason: e.to_string(),
    };
    match choice {
        PrivacyChoice::Rho(r) => {
            let total = Rho::nearest(r).map_err(invalid)?.units();
            let n = parts as u64;
            Ok((0..n)
                .map(|i| Rho::from_units(total / n + u64::from(i < total % n)))
                .collect())
        }
        PrivacyChoice::Epsilon(e) => {
            let rho = Rho::asked_of_pure_epsilon(e / parts as f64).map_err(invalid)?;
            Ok(vec![rho; parts])
        }
    }
}

impl ReleasePlan {
    /// Calibrates central noise for `statistic` under `plan` (see [`ReleasePlan::calibrate`]).
    pub fn new(
        plan: &AggregationPlan,
        privacy: PrivacyChoice,
        alpha: f64,
    ) -> Result<Self, MechanismError> {
        Self::calibrate(plan, privacy, alpha, NoiseSetting::Central)
    }

    /// Calibrates the noise for `statistic` under `plan`, central or in partners' shares: a
    /// mean splits the budget in half between its sum and its count; everything else is one
    /// group. Distributed noise is discrete Gaussian only (pure ε is central-only; see
    /// [`crate::distributed`]).
    pub fn calibrate(
        plan: &AggregationPlan,
        privacy: PrivacyChoice,
        alpha: f64,
        setting: NoiseSetting,
    ) -> Result<Self, MechanismError> {
        plan.check_layout()?;
        if let Some(spec) = &plan.learning {
            return Self::calibrate_iterations(plan, spec.iterations, privacy, alpha, setting);
        }
        let groups_of_blocks: Vec<Vec<usize>> = match plan.statistic {
            Statistic::Mean { .. } => vec![vec![0], vec![1]],
            _ => vec![(0..plan.blocks.len()).collect()],
        };
        let share = split(privacy, groups_of_blocks.len());
        let charges = charges(privacy, groups_of_blocks.len())?;
        let mut groups = Vec::new();
        for (blocks, charge) in groups_of_blocks.into_iter().zip(charges) {
            let members: Vec<_> = blocks.iter().map(|&i| plan.blocks[i].clone()).collect();
            let (l1, l2) = plan.joint_sensitivity(&members)?;
            if let NoiseSetting::Distributed(count) = setting {
                groups.push(distributed_group(
                    blocks, &members, share, charge, count, l1, l2,
                )?);
                continue;
            }
            let spec = match share {
                PrivacyChoice::Epsilon(e) => NoiseSpec::laplace_for_epsilon(l1, e)?,
                PrivacyChoice::Rho(r) => NoiseSpec::gaussian_for_rho(l2, r)?,
            };
            let (spec, cost) = within_charge(spec, charge)?;
            groups.push(NoiseGroup {
                blocks,
                spec,
                // The map's ε is at most the share asked for, which the receipt states.
                epsilon: cost.epsilon.map(|spent| match share {
                    PrivacyChoice::Epsilon(e) => e.max(spent),
                    PrivacyChoice::Rho(_) => spent,
                }),
                // Never less than the mechanism's own cost: the charge is a floor.
                rho: cost.rho.max(charge),
                shares: None,
            });
        }
        half_width(&groups[0].spec, alpha)?;
        let cost = Rho::from_units(groups.iter().map(|g| g.rho.units()).sum());
        Ok(Self {
            groups,
            alpha,
            cost,
        })
    }

    /// A training job's calibration: each iteration's whole vector is one noise group (one
    /// resident moves every slot at once), charged an equal share of the request; the
    /// plan's `cost` is the whole job's, the iterations' ρ added up (zCDP composition).
    fn calibrate_iterations(
        plan: &AggregationPlan,
        iterations: u32,
        privacy: PrivacyChoice,
        alpha: f64,
        setting: NoiseSetting,
    ) -> Result<Self, MechanismError> {
        let invalid = |reason: String| MechanismError::InvalidParameter {
            stage: "calibrate",
            reason,
        };
        let PrivacyChoice::Rho(rho) = privacy else {
            return Err(invalid(
                "a training job composes its rounds in zCDP: ask in ρ (ε = 1 is ρ = 0.5)".into(),
            ));
        };
        let total = Rho::nearest(rho).map_err(|e| invalid(e.to_string()))?;
        let per_iteration = Rho::from_units(total.units() / u64::from(iterations.max(1)));
        if per_iteration == Rho::ZERO {
            return Err(invalid(format!(
                "ρ = {rho} cannot be shared between {iterations} iterations"
            )));
        }
        let blocks: Vec<usize> = (0..plan.blocks.len()).collect();
        let (l1, l2) = plan.joint_sensitivity(&plan.blocks)?;
        let share = PrivacyChoice::Rho(per_iteration.as_f64());
        let group = match setting {
            NoiseSetting::Distributed(count) => {
                distributed_group(blocks, &plan.blocks, share, per_iteration, count, l1, l2)?
            }
            NoiseSetting::Central => {
                let spec = NoiseSpec::gaussian_for_rho(l2, per_iteration.as_f64())?;
                let (spec, cost) = within_charge(spec, per_iteration)?;
                NoiseGroup {
                    blocks,
                    spec,
                    epsilon: None,
                    rho: cost.rho.max(per_iteration),
                    shares: None,
                }
            }
        };
        half_width(&group.spec, alpha)?;
        let cost = group
            .rho
            .units()
            .checked_mul(u64::from(iterations))
            .map(Rho::from_units)
            .ok_or_else(|| invalid("the job's cost overflows the ledger's range".into()))?;
        Ok(Self {
            groups: vec![group],
            alpha,
            cost,
        })
    }

    /// What one round of a training job is charged (the whole release for other statistics).
    pub fn iteration_cost(&self, plan: &AggregationPlan) -> Rho {
        match plan.learning {
            Some(_) => self.groups.first().map_or(Rho::ZERO, |g| g.rho),
            None => self.cost,
        }
    }

    /// The standard deviation of one slot's noise in a sum of `contributors` partners, in
    /// fixed-point units: the central scale, or the partners' shares added up.
    pub fn sum_sigma(&self, contributors: usize) -> f64 {
        self.groups.first().map_or(0.0, |g| match g.shares {
            Some(s) => s.sigma * (contributors as f64).sqrt(),
            None => g.spec.scale,
        })
    }

    /// One round of a training job: checks the sum against the calibration (as a release
    /// does) and returns it noised, once: central noise sampled here, distributed noise as
    /// it arrived from the partners' shares. Refuses, without sampling, if the iteration
    /// costs more than `budget`.
    pub fn noised_iteration(
        &self,
        plan: &AggregationPlan,
        policy: &DatasetPolicy,
        summed: &[i64],
        survivors: usize,
        budget: Rho,
    ) -> Result<Vec<i64>, MechanismError> {
        let cost = self.iteration_cost(plan);
        if plan.learning.is_none() || cost > budget {
            return Err(MechanismError::OverBudget {
                stage: "training iteration",
                cost: cost.to_string(),
                budget: budget.to_string(),
            });
        }
        self.check_matches(plan, policy, survivors)?;
        plan.decode(summed)?;
        let g = &self.groups[0];
        match g.shares {
            Some(_) => Ok(summed.to_vec()),
            None => g.spec.release(summed, g.rho),
        }
    }

    /// A training job's release: the final coefficients (raw units, from the iterate
    /// `beta` in scaled ones, which the last step took from `previous`) with intervals from
    /// the last iteration's noisy `total` (real units), and the receipt for the whole job.
    #[allow(clippy::too_many_arguments)]
    pub fn training_release(
        &self,
        plan: &AggregationPlan,
        policy: &DatasetPolicy,
        previous: &[f64],
        beta: &[f64],
        total: &[f64],
        survivors: usize,
        reporting_delta: f64,
    ) -> Result<Release, MechanismError> {
        if plan.learning.as_ref().is_some_and(|l| l.sgd.is_some()) {
            return self.sgd_release(plan, policy, beta, total, survivors, reporting_delta);
        }
        let logistic = plan.logistic()?;
        logistic.check_beta(beta)?;
        let spec = plan
            .learning
            .as_ref()
            .ok_or_else(|| MechanismError::InvalidParameter {
                stage: "release",
                reason: "not a training job".into(),
            })?;
        let sigma = self.sum_sigma(survivors) / 2f64.powi(spec.frac_bits as i32);
        let confidence = 1.0 - self.alpha;
        let step: Vec<f64> = beta.iter().zip(previous).map(|(b, p)| b - p).collect();
        let widths = logistic.step_half_widths(total, sigma, confidence, &step)?;
        let rows = logistic
            .unscaled(beta)
            .into_iter()
            .enumerate()
            .map(|(i, b)| {
                vec![Cell {
                    value: Some(b),
                    interval: widths.as_ref().map(|w| (b - w[i], b + w[i])),
                }]
            })
            .collect();
        let rules = vec![format!(
            "{} Newton steps from zero on noisy sums, damped by a ridge of twice the noise's σ \
             × √(coefficients) (at least {} in scaled coordinates); each iterate was \
             announced to the partners",
            spec.iterations, spec.ridge
        )];
        let caveats = vec![
            match widths {
                Some(_) => {
                    "the intervals state the privacy noise's share of the error (to first \
                            order: the last step's gradient noise, and its matrix noise acting \
                            on the step), not the sampling error of the cohort"
                }
                None => {
                    "no intervals are stated: the privacy noise on the information matrix \
                         is too large beside the data's own information for a first-order \
                         interval to hold, so the noise may decide these coefficients; ask \
                         with more privacy budget, fewer features or more residents"
                }
            }
            .to_string(),
            "residents with a missing feature or outcome are left out (complete cases)".into(),
        ];
        let receipt = self.receipt(
            plan,
            policy,
            survivors,
            (rules, caveats),
            confidence,
            reporting_delta,
        )?;
        Ok(Release {
            names: coefficient_rows(plan),
            rows,
            receipt,
        })
    }

    /// A DP-SGD job's release: the final parameters `theta`, without intervals, and the
    /// receipt for the whole job, stating the noise on the last round's averaged gradient
    /// (from its noisy `total`: the gradient sum and the examples).
    fn sgd_release(
        &self,
        plan: &AggregationPlan,
        policy: &DatasetPolicy,
        theta: &[f64],
        total: &[f64],
        survivors: usize,
        reporting_delta: f64,
    ) -> Result<Release, MechanismError> {
        let sgd = plan.sgd()?;
        sgd.check_parameters(theta)?;
        // Both are there: `sgd()` refuses any other plan.
        let learning = plan.learning.as_ref();
        let iterations = learning.map_or(0, |l| l.iterations);
        let trainer = learning
            .and_then(|l| l.sgd.as_ref())
            .map_or("", |s| s.trainer.as_str());
        let examples = total.get(sgd.params).copied().unwrap_or(0.0).max(1.0);
        let sigma = self.sum_sigma(survivors) / 2f64.powi(sgd.frac_bits as i32) / examples;
        let rules = vec![format!(
            "{iterations} gradient steps of learning rate {} from zero, each on the noisy sum of \
             the partners' \"{trainer}\" trainers' gradients, each example's clipped to L2 norm \
             {}, over the noisy number of examples; each iterate was announced to the partners",
            sgd.learning_rate, sgd.clip
        )];
        let caveats = vec![
            format!(
                "no intervals are stated: the parameters of a model trained by gradient steps \
                 are not estimates with a known error; the last round's averaged gradient \
                 carried privacy noise of standard deviation {sigma:.3e} per parameter over \
                 about {examples:.0} examples (itself noisy)"
            ),
            "each partner's trainer is its own code: one that printed each example's gradient \
             had them bounded per resident and clipped by its agent; for one that printed its \
             clipped sum, that it clipped every example and kept a resident's examples within \
             the policy's rows is its contract with its partner (the agent checked the sum's \
             length and norm)"
                .into(),
        ];
        let receipt = self.receipt(
            plan,
            policy,
            survivors,
            (rules, caveats),
            1.0 - self.alpha,
            reporting_delta,
        )?;
        Ok(Release {
            names: row_names(&plan.statistic),
            rows: theta
                .iter()
                .map(|&t| {
                    vec![Cell {
                        value: Some(t),
                        interval: None,
                    }]
                })
                .collect(),
            receipt,
        })
    }

    /// The cheapest calibration whose every half-width, in statistic units, is at most
    /// `target`: what a researcher who asks for accuracy instead of a cost gets. Half-widths
    /// fall as 1/ε for Laplace and as 1/√ρ for Gaussian noise, so one probe gives an
    /// estimate; discrete noise has integer half-widths, flat over ranges of ε, so the
    /// estimate is then bracketed and bisected to the cheapest amount that meets the target
    /// (to a relative 10⁻⁶).
    pub fn for_target_half_width(
        plan: &AggregationPlan,
        kind: NoiseKind,
        target: f64,
        alpha: f64,
        setting: NoiseSetting,
    ) -> Result<Self, MechanismError> {
        if !(target.is_finite() && target > 0.0) {
            return Err(MechanismError::InvalidParameter {
                stage: "accuracy",
                reason: format!("the target half-width must be positive and finite, got {target}"),
            });
        }
        let calibrate = |amount: f64| {
            let choice = match kind {
                NoiseKind::DiscreteLaplace => PrivacyChoice::Epsilon(amount),
                NoiseKind::DiscreteGaussian => PrivacyChoice::Rho(amount),
            };
            let candidate = Self::calibrate(plan, choice, alpha, setting)?;
            let widest = candidate.half_widths(plan)?.into_iter().fold(0.0, f64::max);
            Ok::<_, MechanismError>((widest <= target, candidate))
        };
        let unreachable = || MechanismError::InvalidParameter {
            stage: "accuracy",
            reason: format!(
                "no calibration reaches a half-width of {target}: noise on integers cannot be \
                 made narrower than one unit"
            ),
        };
        let (_, probe) = calibrate(1.0)?;
        let widest = probe.half_widths(plan)?.into_iter().fold(0.0, f64::max);
        let ratio = widest / target;
        let estimate = match kind {
            NoiseKind::DiscreteLaplace => ratio,
            NoiseKind::DiscreteGaussian => ratio * ratio,
        };
        if !(estimate.is_finite() && estimate > 0.0) {
            return Err(unreachable());
        }
        // Bracket: `low` misses the target, `high` meets it.
        let (mut low, mut high) = (estimate, estimate);
        let mut best = None;
        for _ in 0..64 {
            match calibrate(high) {
                Ok((true, c)) => {
                    best = Some(c);
                    break;
                }
                Ok((false, _)) => {
                    low = high;
                    high *= 1.25;
                }
                Err(_) => return Err(unreachable()),
            }
        }
        let mut best = best.ok_or_else(unreachable)?;
        if low >= high {
            low = high;
            for _ in 0..64 {
                low /= 1.25;
                if !calibrate(low)?.0 {
                    break;
                }
            }
        }
        while (high - low) / high > 1e-6 {
            let mid = (low * high).sqrt();
            match calibrate(mid)? {
                (true, c) => {
                    high = mid;
                    best = c;
                }
                (false, _) => low = mid,
            }
        }
        Ok(best)
    }

    /// Refuses a release whose stored calibration does not fit the plan (a block left out or
    /// noised twice, a sensitivity below the plan's), a dataset mismatch, or fewer survivors
    /// than the policy's quorum.
    fn check_matches(
        &self,
        plan: &AggregationPlan,
        policy: &DatasetPolicy,
        survivors: usize,
    ) -> Result<(), MechanismError> {
        let refuse = |reason: String| {
            Err(MechanismError::InvalidParameter {
                stage: "release",
                reason,
            })
        };
        plan.check_layout()?;
        if plan.dataset != policy.id() {
            return refuse(format!(
                "the plan is for dataset {}, the policy for {}",
                plan.dataset,
                policy.id()
            ));
        }
        if survivors < policy.min_partners() as usize {
            return refuse(format!(
                "{survivors} partners survived; dataset {} releases nothing from fewer than {}",
                policy.id(),
                policy.min_partners()
            ));
        }
        let mut covered: Vec<usize> = self
            .groups
            .iter()
            .flat_map(|g| g.blocks.iter().copied())
            .collect();
        covered.sort_unstable();
        if covered != (0..plan.blocks.len()).collect::<Vec<_>>() {
            return refuse(
                "the calibration does not noise every block of the plan exactly once".into(),
            );
        }
        for g in &self.groups {
            let members: Vec<_> = g.blocks.iter().map(|&b| plan.blocks[b].clone()).collect();
            let (l1, l2) = plan.joint_sensitivity(&members)?;
            let needed = match g.spec.kind {
                NoiseKind::DiscreteLaplace => l1 as f64,
                NoiseKind::DiscreteGaussian => l2,
            };
            if g.spec.sensitivity < needed {
                return refuse(format!(
                    "the calibration assumed sensitivity {} where the plan needs {needed}",
                    g.spec.sensitivity
                ));
            }
            if let Some(sh) = g.shares {
                let dims = members.iter().map(|b| b.len).sum();
                let bound = rho_of_shares(sh.sigma, sh.count.honest, dims, l1 as f64, l2);
                if bound > g.rho.as_f64() {
                    return refuse(format!(
                        "the partners' noise shares (σ {}, {} honest) cost ρ {bound}, above the {} charged",
                        sh.sigma,
                        sh.count.honest,
                        g.rho.as_f64()
                    ));
                }
                if survivors < sh.count.honest {
                    return refuse(format!(
                        "{survivors} partners contributed; the noise was sized for at least {} honest shares",
                        sh.count.honest
                    ));
                }
            }
        }
        Ok(())
    }

    /// The (1 − α) half-width of each block's cells, in statistic units; for distributed
    /// noise, when every partner contributes a share (the most noise a round can carry).
    pub fn half_widths(&self, plan: &AggregationPlan) -> Result<Vec<f64>, MechanismError> {
        self.half_widths_with(plan, None)
    }

    /// [`ReleasePlan::half_widths`] for a sum of `contributors` partners' shares (None: all).
    fn half_widths_with(
        &self,
        plan: &AggregationPlan,
        contributors: Option<usize>,
    ) -> Result<Vec<f64>, MechanismError> {
        let mut out = vec![0.0; plan.blocks.len()];
        for g in &self.groups {
            let a = match g.shares {
                None => half_width(&g.spec, self.alpha)?,
                Some(s) => sum_half_width(
                    s.sigma,
                    contributors.unwrap_or(s.count.partners),
                    self.alpha,
                )?,
            };
            for &b in &g.blocks {
                out[b] = a / plan.blocks[b].units_per_value;
            }
        }
        Ok(out)
    }

    /// The accuracy of each row the release will state, before any data (see
    /// [`RowAccuracy`]). A count's half-width includes the most disclosure rounding moves it;
    /// a mean's follows the release's interval for a cell of n rows, (a_sum + M·a_count) /
    /// (n − a_count) with M the largest |value| the bounds allow.
    pub fn accuracy(
        &self,
        plan: &AggregationPlan,
        policy: &DatasetPolicy,
    ) -> Result<Vec<RowAccuracy>, MechanismError> {
        let widths = self.half_widths(plan)?;
        let confidence = 1.0 - self.alpha;
        let row = |name: String, half_width: Option<f64>, note: Option<String>| RowAccuracy {
            name,
            half_width,
            half_width_at_rows: Vec::new(),
            confidence,
            note,
        };
        let names = row_names(&plan.statistic);
        Ok(match &plan.statistic {
            Statistic::Count | Statistic::Histogram { .. } => {
                let (suppress, round_to) = policy.disclosure().rule();
                let rounding = f64::from(if round_to > 1 { round_to / 2 } else { 0 });
                let note = (round_to > 1 || suppress > 0).then(|| {
                    format!(
                        "counts 1-{suppress} are suppressed and the others rounded to the \
                         nearest {round_to}; the half-width includes the rounding, and a shown \
                         count near the suppression band gets a wider interval, one that covers \
                         given that the count was shown"
                    )
                });
                vec![row(names[0].clone(), Some(widths[0] + rounding), note)]
            }
            Statistic::Sum { .. } => vec![row(names[0].clone(), Some(widths[0]), None)],
            Statistic::Mean { column } => {
                let (lo, hi) = numeric_bounds(policy, column)?;
                let widest = lo.abs().max(hi.abs());
                let (a_sum, a_count) = (widths[0], widths[1]);
                let half_width_at_rows = MEAN_ROWS
                    .into_iter()
                    .filter(|&n| n as f64 > a_count)
                    .map(|n| {
                        (
                            n,
                            ((a_sum + widest * a_count) / (n as f64 - a_count)).min(hi - lo),
                        )
                    })
                    .collect();
                vec![RowAccuracy {
                    name: names[0].clone(),
                    half_width: None,
                    half_width_at_rows,
                    // To 12 decimals, so that 95% twice reads 0.9, not 0.8999999999999999.
                    confidence: ((1.0 - 2.0 * self.alpha) * 1e12).round() / 1e12,
                    note: Some(format!(
                        "a mean's interval combines its sum's (± {a_sum:.4} in the column's \
                         units) and its count's (± {a_count:.4} rows), so it narrows as its cell \
                         holds more rows; confidence at least {:.0}%",
                        (1.0 - 2.0 * self.alpha) * 100.0
                    )),
                }]
            }
            Statistic::Quantiles { .. } => names
                .into_iter()
                .map(|name| {
                    let note = format!(
                        "no interval is stated: quantiles are read from a noisy histogram whose \
                         bins are each within ± {:.4} counts",
                        widths[0]
                    );
                    row(name, None, Some(note))
                })
                .collect(),
            Statistic::LinearRegression { .. } => names
                .into_iter()
                .map(|name| {
                    let note = "no interval is stated: coefficients are solved from noisy \
                                sufficient statistics (the blocks' half-widths say how noisy)";
                    row(name, None, Some(note.to_string()))
                })
                .collect(),
            Statistic::LogisticRegression { .. } => self.coefficient_accuracy(plan)?,
            Statistic::DpSgd { .. } => self.gradient_accuracy(plan)?,
        })
    }

    /// A DP-SGD job's expected accuracy, before any data: the noise on each parameter's
    /// averaged gradient (the noisy gradient sum over the examples), at 1,000 to 1,000,000
    /// examples in all, with every partner's noise share in the sum: one row, the same for
    /// every parameter. Stated for the step's input, not the parameters, which the model's
    /// own loss decides.
    fn gradient_accuracy(
        &self,
        plan: &AggregationPlan,
    ) -> Result<Vec<RowAccuracy>, MechanismError> {
        let sgd = plan.sgd()?;
        let contributors = self.groups[0].shares.map_or(1, |s| s.count.partners);
        // The sum's noise is sub-Gaussian (a sum of the partners' discrete Gaussians).
        let sum_width = crate::accuracy::discrete_gaussian_half_width_bound(
            self.sum_sigma(contributors),
            self.alpha,
        )? / 2f64.powi(sgd.frac_bits as i32);
        let confidence = 1.0 - self.alpha;
        let at_rows: Vec<(u64, f64)> = MEAN_ROWS[1..]
            .iter()
            .chain(&[1_000_000])
            .map(|&n| (n, sum_width / n as f64))
            .collect();
        let note = format!(
            "the privacy noise on this parameter's averaged gradient in each of the {} \
             rounds (a gradient clipped to {} per example), for the examples the partners \
             hold in all; the release states the trained parameters without intervals",
            plan.learning.as_ref().map_or(0, |l| l.iterations),
            sgd.clip
        );
        // The same for every parameter: one row says it for all.
        Ok(vec![RowAccuracy {
            name: format!("each of theta[0] … theta[{}]", sgd.params - 1),
            half_width: None,
            half_width_at_rows: at_rows,
            confidence,
            note: Some(note),
        }])
    }

    /// A training job's expected accuracy, before any data: each coefficient's interval
    /// half-width at 1,000 to 100,000 residents, for features spread evenly over their bounds
    /// and equally likely outcome classes, with every partner's noise share in the sum.
    fn coefficient_accuracy(
        &self,
        plan: &AggregationPlan,
    ) -> Result<Vec<RowAccuracy>, MechanismError> {
        let logistic = plan.logistic()?;
        let contributors = self.groups[0].shares.map_or(1, |s| s.count.partners);
        let sigma = self.sum_sigma(contributors) / 2f64.powi(logistic.frac_bits as i32);
        let confidence = 1.0 - self.alpha;
        let at_rows = MEAN_ROWS[1..]
            .iter()
            .chain(&[1_000_000])
            .map(|&n| Ok((n, logistic.indicative_half_widths(n, sigma, confidence)?)))
            .collect::<Result<Vec<_>, MechanismError>>()?;
        Ok(coefficient_rows(plan)
            .into_iter()
            .enumerate()
            .map(|(i, name)| RowAccuracy {
                name,
                half_width: None,
                half_width_at_rows: at_rows.iter().map(|(n, w)| (*n, w[i])).collect(),
                confidence,
                note: Some(
                    "indicative: the privacy noise's share of the error once the Newton steps \
                     have converged, for residents whose features spread evenly over their \
                     bounds and whose outcome classes are equally likely; the release states \
                     each coefficient's interval from the fitted model"
                        .into(),
                ),
            })
            .collect())
    }

    /// Samples the noise (once), post-processes and assembles the statistic. Refuses, without
    /// sampling, if the plan's cost exceeds `budget` (the reservation being charged). The
    /// receipt states the cost as (ε, δ) at `reporting_delta`.
    pub fn release(
        &self,
        plan: &AggregationPlan,
        policy: &DatasetPolicy,
        summed: &[i64],
        survivors: usize,
        budget: Rho,
        reporting_delta: f64,
    ) -> Result<Release, MechanismError> {
        if self.cost > budget {
            return Err(MechanismError::OverBudget {
                stage: "release",
                cost: self.cost.to_string(),
                budget: budget.to_string(),
            });
        }
        self.check_matches(plan, policy, survivors)?;
        plan.decode(summed)?;
        let statistic = &plan.statistic;
        let mut noisy = vec![0i64; summed.len()];
        for g in &self.groups {
            let slots: Vec<usize> = g
                .blocks
                .iter()
                .flat_map(|&b| plan.blocks[b].offset..plan.blocks[b].offset + plan.blocks[b].len)
                .collect();
            let values: Vec<i64> = slots.iter().map(|&i| summed[i]).collect();
            // Distributed noise arrived in the sum, from the partners' shares.
            let out = match g.shares {
                None => g.spec.release(&values, g.rho)?,
                Some(_) => values,
            };
            slots.iter().zip(out).for_each(|(&i, v)| noisy[i] = v);
        }
        let widths = self.half_widths_with(plan, Some(survivors))?;
        let block = |i: usize| -> Vec<f64> {
            let b = &plan.blocks[i];
            noisy[b.offset..b.offset + b.len]
                .iter()
                .map(|v| *v as f64 / b.units_per_value)
                .collect()
        };
        let disclosure = policy.disclosure();
        let mut rules = vec!["counts clamped at 0".to_string()];
        let mut caveats = Vec::new();
        // A rounded count's interval is centred on the rounded value and widened by the
        // most rounding moves a count (half the step), so that it still covers the truth at
        // its rate and its midpoint does not give back the unrounded noisy count. Under a
        // suppression band, whether a count is shown depends on its noise, so a shown count's
        // interval is the one that covers given that it was shown (`crate::suppression`).
        let (suppress, round_to) = disclosure.rule();
        let rounding = f64::from(if round_to > 1 { round_to / 2 } else { 0 });
        let shown_noise = match statistic {
            Statistic::Count | Statistic::Histogram { .. } if suppress > 0 => {
                self.noise_cdf(0, survivors)
            }
            _ => None,
        };
        if suppress > 0 && shown_noise.is_none() {
            caveats.push(format!(
                "shown counts within reach of the suppression band (1-{suppress}) have their \
                 interval's lower end set to 0: whether they were shown depends on their noise"
            ));
        }
        let counts = |values: Vec<f64>, width: f64| -> Vec<Cell> {
            values
                .into_iter()
                .map(|v| match disclosure.apply(v.round() as i64) {
                    Disclosed::Value(x) => Cell {
                        value: Some(x as f64),
                        interval: Some(match &shown_noise {
                            Some(noise) => shown_count_interval(x, noise, disclosure, self.alpha),
                            None => {
                                let near = suppress > 0
                                    && (x as f64) <= f64::from(suppress) + 2.0 * (width + rounding);
                                (
                                    if near {
                                        0.0
                                    } else {
                                        (x as f64 - width - rounding).max(0.0)
                                    },
                                    (x as f64 + width + rounding).max(0.0),
                                )
                            }
                        }),
                    },
                    Disclosed::Redacted => Cell {
                        value: None,
                        interval: None,
                    },
                })
                .collect()
        };
        let (names, rows) = match statistic {
            Statistic::LogisticRegression { .. } | Statistic::DpSgd { .. } => {
                return Err(MechanismError::InvalidParameter {
                    stage: "release",
                    reason: "a training job releases round by round (noised_iteration, then \
                             training_release)"
                        .into(),
                });
            }
            Statistic::Count | Statistic::Histogram { .. } => {
                rules.push(disclosure.describe());
                (row_names(statistic), vec![counts(block(0), widths[0])])
            }
            Statistic::Sum { column } => {
                // A sum of values clamped to [lo, hi] has the sign of the bounds when they
                // share one: that is the feasible range known without data.
                let (lo, hi) = numeric_bounds(policy, column)?;
                let floor = if lo >= 0.0 { 0.0 } else { f64::NEG_INFINITY };
                let ceiling = if hi <= 0.0 { 0.0 } else { f64::INFINITY };
                rules.push(format!("sums clamped to [{floor}, {ceiling}]"));
                let cells = block(0)
                    .into_iter()
                    .map(|v| Cell {
                        value: Some(v.clamp(floor, ceiling)),
                        interval: Some((
                            (v - widths[0]).clamp(floor, ceiling),
                            (v + widths[0]).clamp(floor, ceiling),
                        )),
                    })
                    .collect();
                (row_names(statistic), vec![cells])
            }
            Statistic::Mean { column } => {
                let (lo, hi) = numeric_bounds(policy, column)?;
                rules.push(format!(
                    "means clamped to [{lo}, {hi}]; undefined where the noisy count is not positive"
                ));
                // Each of sum and count is within its half-width with probability ≥ 1 − α, so
                // both are with ≥ 1 − 2α; the interval says so in the receipt.
                caveats.push(format!(
                    "mean intervals combine the sum's and the count's intervals: confidence at least {:.0}%",
                    (1.0 - 2.0 * self.alpha) * 100.0
                ));
                let cells = block(0)
                    .into_iter()
                    .zip(block(1))
                    .map(|(s, c)| mean_cell(s, c, widths[0], widths[1], lo, hi))
                    .collect();
                (row_names(statistic), vec![cells])
            }
            Statistic::Quantiles {
                column,
                probabilities,
            } => {
                let edges = bin_edges(policy, column)?;
                rules.push("quantiles from the noisy histogram's CDF, linear within a bin".into());
                let bins = edges.len() - 1;
                let hist: Vec<f64> = block(0).into_iter().map(|v| v.max(0.0)).collect();
                let rows = probabilities
                    .iter()
                    .map(|p| {
                        hist.chunks(bins)
                            .map(|h| Cell {
                                value: quantile(h, &edges, *p),
                                interval: None,
                            })
                            .collect()
                    })
                    .collect();
                (row_names(statistic), rows)
            }
            Statistic::LinearRegression { features, .. } => {
                let (beta, ridge) = solve_regression(
                    features.len() + 1,
                    &(0..plan.blocks.len())
                        .map(|i| block(i)[0])
                        .collect::<Vec<_>>(),
                );
                if ridge > 0.0 {
                    caveats.push(format!(
                        "the noisy XᵀX was not positive definite; coefficients are ridge-regularised (λ = {ridge:.3e})"
                    ));
                }
                caveats.push("regression coefficients are post-processed from noisy sufficient statistics; no intervals are stated".into());
                let rows = beta
                    .into_iter()
                    .map(|b| {
                        vec![Cell {
                            value: b,
                            interval: None,
                        }]
                    })
                    .collect();
                (row_names(statistic), rows)
            }
        };
        // A mean's interval holds with at least 1 − 2α: the receipt says the true number.
        let confidence = match statistic {
            Statistic::Mean { .. } => ((1.0 - 2.0 * self.alpha) * 1e12).round() / 1e12,
            _ => 1.0 - self.alpha,
        };
        let receipt = self.receipt(
            plan,
            policy,
            survivors,
            (rules, caveats),
            confidence,
            reporting_delta,
        )?;
        Ok(Release {
            names,
            rows,
            receipt,
        })
    }
}

impl ReleasePlan {
    /// The receipt of a release from this calibration: the mechanisms, the cost in every
    /// form, the bounds the plan clamps to, and the rules and caveats the release applied.
    fn receipt(
        &self,
        plan: &AggregationPlan,
        policy: &DatasetPolicy,
        survivors: usize,
        (rules, caveats): (Vec<String>, Vec<String>),
        confidence: f64,
        reporting_delta: f64,
    ) -> Result<Receipt, MechanismError> {
        let epsilon = self.groups.iter().map(|g| g.epsilon).sum::<Option<f64>>();
        let mut bounds: Vec<String> = Vec::new();
        for b in &plan.blocks {
            let columns: Vec<&str> = match &b.kind {
                BlockKind::Count => Vec::new(),
                BlockKind::Sum { column } => vec![column.as_str()],
                BlockKind::Cross { left, right } => vec![left.as_str(), right.as_str()],
                BlockKind::Score { .. } | BlockKind::Information { .. } | BlockKind::Gradient => {
                    Vec::new()
                }
            };
            for c in columns.into_iter().filter(|c| *c != "1") {
                let (lo, hi) = numeric_bounds(policy, c)?;
                let line = format!("{c} clamped to [{lo}, {hi}]");
                if !bounds.contains(&line) {
                    bounds.push(line);
                }
            }
        }
        if let Some(sgd) = plan.learning.as_ref().and_then(|l| l.sgd.as_ref()) {
            bounds.push(format!(
                "each example's gradient clipped to L2 norm {}, and counted at half that weight",
                sgd.clip
            ));
        }
        for input in plan.learning.iter().flat_map(|l| &l.inputs) {
            bounds.push(match input.level {
                None => format!(
                    "{} clamped to [{}, {}] and scaled to [-1, 1]",
                    input.name, input.lo, input.hi
                ),
                Some(_) => format!("{} as an indicator (0 or 1), scaled to [-1, 1]", input.name),
            });
        }
        let delta = reporting_delta;
        let distributed = self.groups.iter().find_map(|g| g.shares);
        Ok(Receipt {
            privacy_unit: "one resident".into(),
            rows_per_resident: plan.rows_per_resident,
            bounds,
            mechanisms: self
                .groups
                .iter()
                .map(|g| {
                    let blocks: Vec<String> = match &plan.learning {
                        // Hundreds of slots: say what they are rather than list them.
                        Some(spec) => vec![format!(
                            "each of {} iterations' {} sums (the gradient and the information \
                             matrix's upper triangle)",
                            spec.iterations,
                            plan.blocks.len()
                        )],
                        None => g
                            .blocks
                            .iter()
                            .map(|&b| describe(&plan.blocks[b].kind))
                            .collect(),
                    };
                    if let Some(s) = g.shares {
                        return format!(
                            "distributed discrete Gaussian on {}: {survivors} partners' shares of \
                             σ {} each (fixed-point units; sum variance {}), sensitivity {}; rho \
                             {} guaranteed by the {} honest shares alone (KLS21 Prop. 14 bound {})",
                            blocks.join(", "),
                            significant(s.sigma),
                            significant(s.sigma * s.sigma * survivors as f64),
                            g.spec.sensitivity,
                            g.rho.as_f64(),
                            s.count.honest,
                            significant(s.rho_bound),
                        );
                    }
                    let name = match g.spec.kind {
                        NoiseKind::DiscreteLaplace => "discrete Laplace",
                        NoiseKind::DiscreteGaussian => "discrete Gaussian",
                    };
                    // The scale to 12 significant digits: the ulps `within_charge` may have
                    // added are noise about the noise.
                    format!(
                        "{name} on {}: scale {} (fixed-point units), sensitivity {}, rho {}",
                        blocks.join(", "),
                        significant(g.spec.scale),
                        g.spec.sensitivity,
                        g.rho.as_f64()
                    )
                })
                .collect(),
            rho: self.cost.as_f64(),
            epsilon,
            approx_dp: (epsilon_at_delta(self.cost, delta)?, delta),
            survivors,
            rules,
            confidence,
            caveats,
            noise: if distributed.is_some() {
                civic_policies::dataset::NoisePlacement::Distributed
            } else {
                civic_policies::dataset::NoisePlacement::Central
            },
            honest_shares: distributed.map(|s| s.count.honest),
        })
    }

    /// The law of group `group`'s noise in a sum of `contributors` partners (None where too
    /// wide to tabulate): central discrete Laplace or Gaussian, or the partners' shares.
    fn noise_cdf(&self, group: usize, contributors: usize) -> Option<NoiseCdf> {
        let g = self.groups.get(group)?;
        match (g.shares, g.spec.kind) {
            (Some(s), _) => NoiseCdf::gaussian_shares(s.sigma, contributors),
            (None, NoiseKind::DiscreteLaplace) => NoiseCdf::laplace(g.spec.scale),
            (None, NoiseKind::DiscreteGaussian) => NoiseCdf::gaussian(g.spec.scale),
        }
    }
}

/// `x` to 12 significant digits: the ulps a calibration may have added are noise about the
/// noise.
fn significant(x: f64) -> f64 {
    format!("{x:.12e}").parse::<f64>().unwrap_or(x)
}

/// A group of blocks noised by the partners' shares: the least share σ whose honest sum
/// costs at most the group's charge.
fn distributed_group(
    blocks: Vec<usize>,
    members: &[crate::plan::Block],
    share: PrivacyChoice,
    charge: Rho,
    count: ShareCount,
    l1: u64,
    l2: f64,
) -> Result<NoiseGroup, MechanismError> {
    if let PrivacyChoice::Epsilon(_) = share {
        return Err(MechanismError::InvalidParameter {
            stage: "calibrate",
            reason: "pure ε is central-only: distributed noise is discrete Gaussian (ask in ρ)"
                .into(),
        });
    }
    let dims = members.iter().map(|b| b.len).sum();
    let sigma = share_sigma_for_rho(charge.as_f64(), count, dims, l1 as f64, l2)?;
    Ok(NoiseGroup {
        blocks,
        spec: NoiseSpec {
            kind: NoiseKind::DiscreteGaussian,
            scale: sigma * (count.honest as f64).sqrt(),
            sensitivity: l2,
        },
        epsilon: None,
        rho: charge,
        shares: Some(Shares {
            count,
            sigma,
            rho_bound: rho_of_shares(sigma, count.honest, dims, l1 as f64, l2),
        }),
    })
}

impl ReleasePlan {
    /// Refuses a calibration whose noise Civic's exact samplers cannot draw (a central scale,
    /// or a partner's share σ, outside their range): priced requests are checked, so that
    /// nothing is reserved that could not be released.
    pub fn check_samplable(&self) -> Result<(), MechanismError> {
        for g in &self.groups {
            match g.shares {
                None => g.spec.check_samplable()?,
                Some(s) => NoiseSpec {
                    kind: NoiseKind::DiscreteGaussian,
                    scale: s.sigma,
                    sensitivity: g.spec.sensitivity,
                }
                .check_samplable()?,
            }
        }
        Ok(())
    }

    /// Where the noise is added.
    pub fn setting(&self) -> NoiseSetting {
        match self.groups.iter().find_map(|g| g.shares) {
            Some(s) => NoiseSetting::Distributed(s.count),
            None => NoiseSetting::Central,
        }
    }

    /// A bound on the noise any slot of a sum of every partner's shares carries, exceeded
    /// with probability below 2⁻⁴⁰ (0 for central noise): the ring must hold it, and a sum
    /// beyond the data's range by more is not a sum of honest inputs.
    pub fn noise_tail(&self, plan: &AggregationPlan) -> u128 {
        self.groups
            .iter()
            .filter_map(|g| {
                let s = g.shares?;
                let dims = g.blocks.iter().map(|&b| plan.blocks[b].len).sum();
                Some(noise_tail(s.sigma, s.count.partners, dims))
            })
            .max()
            .unwrap_or(0)
    }

    /// Adds this partner's share of the distributed noise to its vector `values`, in place,
    /// from `rng` (the agent seeds it from the OS for each round). Nothing for central noise.
    pub fn add_noise_shares<R: rand_core::Rng + ?Sized>(
        &self,
        plan: &AggregationPlan,
        values: &mut [i64],
        rng: &mut R,
    ) -> Result<(), MechanismError> {
        let invalid = |reason: String| MechanismError::InvalidParameter {
            stage: "noise share",
            reason,
        };
        if values.len() != plan.vector_len {
            return Err(invalid(format!(
                "the vector has {} slots, the plan {}",
                values.len(),
                plan.vector_len
            )));
        }
        for g in &self.groups {
            let Some(s) = g.shares else { continue };
            let scale = crate::sampler::GaussianScale::at_least(s.sigma).map_err(|_| {
                invalid(format!(
                    "share σ {} is outside the sampler's range",
                    s.sigma
                ))
            })?;
            for &b in &g.blocks {
                let block = &plan.blocks[b];
                for v in &mut values[block.offset..block.offset + block.len] {
                    *v = v.checked_add(scale.sample(rng)).ok_or_else(|| {
                        invalid("a slot plus its noise share overflows 64 bits".into())
                    })?;
                }
            }
        }
        Ok(())
    }
}

fn describe(kind: &BlockKind) -> String {
    match kind {
        BlockKind::Count => "count".into(),
        BlockKind::Sum { column } => format!("sum({column})"),
        BlockKind::Cross { left, right } => format!("Σ {left}·{right}"),
        BlockKind::Score { coefficient } => format!("score({coefficient})"),
        BlockKind::Information { left, right } => format!("information({left}, {right})"),
        BlockKind::Gradient => "Σ clipped gradients".into(),
    }
}

fn numeric_bounds(policy: &DatasetPolicy, column: &str) -> Result<(f64, f64), MechanismError> {
    match policy.column(column).map(|c| &c.kind) {
        Some(ColumnType::Integer { min, max, .. }) => Ok((*min as f64, *max as f64)),
        Some(ColumnType::Decimal { min, max, .. }) => Ok((*min, *max)),
        _ => Err(MechanismError::InvalidParameter {
            stage: "release",
            reason: format!("column \"{column}\" is not numeric"),
        }),
    }
}

fn bin_edges(policy: &DatasetPolicy, column: &str) -> Result<Vec<f64>, MechanismError> {
    match policy.column(column).map(|c| &c.kind) {
        Some(ColumnType::Integer { bins: Some(b), .. }) => {
            Ok(b.iter().map(|e| *e as f64).collect())
        }
        Some(ColumnType::Decimal { bins: Some(b), .. }) => Ok(b.clone()),
        _ => Err(MechanismError::InvalidParameter {
            stage: "release",
            reason: format!("column \"{column}\" has no bins"),
        }),
    }
}

/// Mean of one cell: noisy sum / noisy count, clamped to the bounds, with the interval from
/// the extremes of both intervals (defined only where the count's interval excludes 0).
fn mean_cell(sum: f64, count: f64, a_sum: f64, a_count: f64, lo: f64, hi: f64) -> Cell {
    if count <= 0.0 {
        return Cell {
            value: None,
            interval: None,
        };
    }
    let value = (sum / count).clamp(lo, hi);
    let interval = (count - a_count > 0.0).then(|| {
        let candidates = [
            (sum - a_sum) / (count - a_count),
            (sum - a_sum) / (count + a_count),
            (sum + a_sum) / (count - a_count),
            (sum + a_sum) / (count + a_count),
        ];
        let low = candidates
            .iter()
            .copied()
            .fold(f64::INFINITY, f64::min)
            .clamp(lo, hi);
        let high = candidates
            .iter()
            .copied()
            .fold(f64::NEG_INFINITY, f64::max)
            .clamp(lo, hi);
        (low, high)
    });
    Cell {
        value: Some(value),
        interval,
    }
}

/// The p-quantile from histogram counts over bins, interpolating linearly inside the bin.
fn quantile(hist: &[f64], edges: &[f64], p: f64) -> Option<f64> {
    let total: f64 = hist.iter().sum();
    if total <= 0.0 {
        return None;
    }
    let target = p * total;
    let mut below = 0.0;
    for (i, &h) in hist.iter().enumerate() {
        if below + h >= target && h > 0.0 {
            let within = (target - below) / h;
            return Some(edges[i] + within * (edges[i + 1] - edges[i]));
        }
        below += h;
    }
    edges.last().copied()
}

/// Solves (XᵀX + λI)β = Xᵀy from the packed upper triangle of XᵀX followed by Xᵀy. λ = 0 when
/// Cholesky succeeds; otherwise the smallest λ of the form 10^k · trace/p that makes it succeed.
// Index loops read as the textbook formulas.
#[allow(clippy::needless_range_loop)]
fn solve_regression(p: usize, packed: &[f64]) -> (Vec<Option<f64>>, f64) {
    let mut xtx = vec![vec![0.0; p]; p];
    let mut k = 0;
    for i in 0..p {
        for j in i..p {
            xtx[i][j] = packed[k];
            xtx[j][i] = packed[k];
            k += 1;
        }
    }
    let xty = &packed[k..k + p];
    let scale = (0..p).map(|i| xtx[i][i].abs()).sum::<f64>() / p as f64;
    for step in std::iter::once(0.0).chain((-8..=2).map(|e| 10f64.powi(e) * scale.max(1.0))) {
        let mut a = xtx.clone();
        (0..p).for_each(|i| a[i][i] += step);
        if let Some(l) = crate::linalg::cholesky(&a) {
            return (
                crate::linalg::cholesky_solve(&l, xty)
                    .into_iter()
                    .map(Some)
                    .collect(),
                step,
            );
        }
    }
    (vec![None; p], f64::INFINITY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regression_solves_exact_normal_equations() {
        // y = 2 + 3x over x = 0..9: XᵀX = [[10, 45], [45, 285]], Xᵀy = [155, 945].
        let (beta, ridge) = solve_regression(2, &[10.0, 45.0, 285.0, 155.0, 945.0]);
        assert_eq!(ridge, 0.0);
        assert!((beta[0].unwrap() - 2.0).abs() < 1e-9 && (beta[1].unwrap() - 3.0).abs() < 1e-9);
        // A singular XᵀX (a repeated column) is ridge-regularised, and says so.
        let (beta, ridge) = solve_regression(2, &[10.0, 10.0, 10.0, 20.0, 20.0]);
        assert!(ridge > 0.0 && beta.iter().all(|b| b.is_some_and(f64::is_finite)));
    }

    #[test]
    fn quantiles_interpolate_within_bins() {
        let edges = [0.0, 10.0, 20.0, 40.0];
        let hist = [10.0, 10.0, 20.0];
        assert_eq!(quantile(&hist, &edges, 0.25), Some(10.0));
        assert_eq!(quantile(&hist, &edges, 0.5), Some(20.0));
        assert_eq!(quantile(&hist, &edges, 0.75), Some(30.0));
        assert_eq!(quantile(&[0.0, 0.0, 0.0], &edges, 0.5), None);
    }

    #[test]
    fn mean_cells_clamp_and_bound_their_interval() {
        let c = mean_cell(500.0, 10.0, 20.0, 2.0, 0.0, 100.0);
        assert_eq!(c.value, Some(50.0));
        let (lo, hi) = c.interval.unwrap();
        assert!((lo - 480.0 / 12.0).abs() < 1e-12 && (hi - 520.0 / 8.0).abs() < 1e-12);
        assert_eq!(mean_cell(5.0, 0.0, 1.0, 1.0, 0.0, 1.0).value, None);
        assert_eq!(
            mean_cell(5000.0, 1.0, 1.0, 2.0, 0.0, 100.0),
            Cell {
                value: Some(100.0),
                interval: None
            }
        );
    }
}
