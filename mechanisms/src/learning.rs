//! Logistic regression by Newton steps on noisy secure sums: the pure core of a training
//! job (issue 19; the job's rounds, agents and examples are not built yet).
//!
//! Each iteration, every partner computes from the announced coefficients β and its own
//! residents the sum of per-resident contributions to the log-likelihood's gradient
//! `(y − p)·x` and to Newton's information matrix `p(1 − p)·x·xᵀ` (its upper triangle), where
//! `x` is the resident's features scaled by their public bounds into [−1, 1] with an
//! intercept 1, and `p = σ(βᵀx)`; a multinomial model has a block of each per class. Scaling
//! clips: a resident's contribution is bounded whatever their data (for a binary outcome
//! `‖g‖₂ ≤ √q` and `‖H‖_F ≤ q/4` with `q` inputs; [`LogisticPlan::gradient_l2`] and
//! [`LogisticPlan::information_l2`] give the multinomial bounds). The partners
//! encode their sums in fixed point, the secure sum adds them with noise, and the
//! coordinator takes the Newton step `β ← β + (H + λI)⁻¹ g` on the noisy totals: every
//! iterate is post-processing of noisy sums, and the job's ρ is the sum of its iterations'
//! (zCDP composition). This is the noisy Newton method of Avella-Medina, Bradshaw and Loh
//! (2023) with the Gaussian mechanism on sufficient statistics, as DataSHIELD's `ds.glm` fits
//! a GLM on per-study information matrices and scores, but with neither sent in the clear.

use crate::distributed::ShareCount;
use crate::error::MechanismError;

/// A feature's public bounds: values outside are clamped to them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FeatureBounds {
    /// The least value.
    pub lo: f64,
    /// The greatest value.
    pub hi: f64,
}

/// A logistic model's plan: public, the same at the coordinator and every partner. With
/// `classes` K > 2 it is multinomial: class 0 is the reference, and each other class has its
/// own coefficients (intercept first), class by class.
#[derive(Clone, Debug, PartialEq)]
pub struct LogisticPlan {
    /// Each feature's bounds, in order (the intercept is added first).
    pub features: Vec<FeatureBounds>,
    /// Outcome classes: 2 for a binary outcome (class 1 is "yes").
    pub classes: usize,
    /// Fractional bits of the fixed-point encoding of a partner's sums.
    pub frac_bits: u32,
    /// The ridge λ added to the information matrix's diagonal before each step (in the
    /// scaled coordinates), keeping the step defined when the noisy matrix is not
    /// positive definite.
    pub ridge: f64,
}

impl LogisticPlan {
    /// Checks the bounds, the classes and the encoding.
    pub fn new(
        features: Vec<FeatureBounds>,
        classes: usize,
        frac_bits: u32,
        ridge: f64,
    ) -> Result<Self, MechanismError> {
        if !(2..=16).contains(&classes) {
            return Err(invalid(format!(
                "a logistic model has 2 to 16 outcome classes, got {classes}"
            )));
        }
        for (i, b) in features.iter().enumerate() {
            if !(b.lo.is_finite() && b.hi.is_finite() && b.lo < b.hi) {
                return Err(invalid(format!(
                    "feature {i}: bounds must be finite with lo < hi, got [{}, {}]",
                    b.lo, b.hi
                )));
            }
        }
        if features.is_empty() || (features.len() + 1) * (classes - 1) > 64 {
            return Err(invalid(format!(
                "a logistic model has 1 to 64 coefficients (features and an intercept, for each \
                 class but the reference), got {} features and {classes} classes",
                features.len()
            )));
        }
        if !((8..=40).contains(&frac_bits) && ridge.is_finite() && ridge >= 0.0) {
            return Err(invalid(format!(
                "frac_bits must be 8 to 40 and ridge finite and non-negative, got {frac_bits} and {ridge}"
            )));
        }
        Ok(Self {
            features,
            classes,
            frac_bits,
            ridge,
        })
    }

    /// Inputs of one class's linear predictor: the intercept and the features.
    pub fn inputs(&self) -> usize {
        self.features.len() + 1
    }

    /// Coefficients: the inputs for each class but the reference.
    pub fn coefficients(&self) -> usize {
        self.inputs() * (self.classes - 1)
    }

    /// The length of one iteration's vector: the gradient, then the information matrix's
    /// upper triangle, row by row.
    pub fn dims(&self) -> usize {
        let d = self.coefficients();
        d + d * (d + 1) / 2
    }

    /// A resident's features scaled into [−1, 1] by their bounds (clamped), intercept first.
    pub fn scaled(&self, raw: &[f64]) -> Vec<f64> {
        std::iter::once(1.0)
            .chain(self.features.iter().zip(raw).map(|(b, &v)| {
                let v = if v.is_nan() {
                    b.lo
                } else {
                    v.clamp(b.lo, b.hi)
                };
                2.0 * (v - b.lo) / (b.hi - b.lo) - 1.0
            }))
            .collect()
    }

    /// One resident's contribution at `beta` (scaled coordinates), whose outcome is class
    /// `outcome` (an outcome outside the classes counts as the reference): the gradient
    /// `(yₖ − pₖ)·x`, then the upper triangle of the information matrix, whose (k, l) block
    /// is `(pₖδₖₗ − pₖpₗ)·x·xᵀ`.
    pub fn contribution(&self, beta: &[f64], raw: &[f64], outcome: usize) -> Vec<f64> {
        let x = self.scaled(raw);
        let q = x.len();
        let p = self.probabilities(beta, &x);
        let k_of = |a: usize| a / q;
        let mut out: Vec<f64> = (0..self.coefficients())
            .map(|a| {
                let k = k_of(a);
                (f64::from(u8::from(outcome == k + 1)) - p[k]) * x[a % q]
            })
            .collect();
        for a in 0..self.coefficients() {
            for b in a..self.coefficients() {
                let (k, l) = (k_of(a), k_of(b));
                let w = if k == l {
                    p[k] * (1.0 - p[k])
                } else {
                    -p[k] * p[l]
                };
                out.push(w * x[a % q] * x[b % q]);
            }
        }
        out
    }

    /// The probabilities of the classes but the reference, at `beta` for scaled inputs `x`
    /// (a softmax with the reference's predictor fixed at 0, without overflow).
    pub fn probabilities(&self, beta: &[f64], x: &[f64]) -> Vec<f64> {
        let eta: Vec<f64> = beta
            .chunks(x.len())
            .map(|b| b.iter().zip(x).map(|(b, x)| b * x).sum())
            .collect();
        let top = eta.iter().copied().fold(0.0f64, f64::max);
        let reference = (-top).exp();
        let exps: Vec<f64> = eta.iter().map(|e| (e - top).exp()).collect();
        let total = reference + exps.iter().sum::<f64>();
        exps.iter().map(|e| e / total).collect()
    }

    /// The sum of `rows`' contributions at `beta`: what a partner computes locally.
    pub fn partner_sum<'a>(
        &self,
        beta: &[f64],
        rows: impl IntoIterator<Item = (&'a [f64], usize)>,
    ) -> Vec<f64> {
        let mut sum = vec![0.0; self.dims()];
        for (raw, y) in rows {
            for (s, c) in sum.iter_mut().zip(self.contribution(beta, raw, y)) {
                *s += c;
            }
        }
        sum
    }

    /// The most one resident moves the gradient, in L2, with `q` inputs (`‖x‖₂ ≤ √q`):
    /// `Σₖ(yₖ − pₖ)² ≤ 1` for a binary outcome and `≤ 2` for more classes.
    pub fn gradient_l2(&self) -> f64 {
        let spread = if self.classes == 2 { 1.0 } else { 2.0 };
        (spread * self.inputs() as f64).sqrt()
    }

    /// The most one resident moves the information matrix's upper triangle, in L2: at most
    /// its Frobenius norm, `‖W‖_F·‖x‖²` with `W = diag(p) − ppᵀ`, positive semi-definite, so
    /// `‖W‖_F ≤ tr W = Σₖpₖ(1 − pₖ) ≤ min(1, (K − 1)/4)`.
    pub fn information_l2(&self) -> f64 {
        let trace = ((self.classes - 1) as f64 / 4.0).min(1.0);
        trace * self.inputs() as f64
    }

    /// The L2 sensitivity of a partner's encoded vector: one resident's contribution in
    /// fixed-point units, plus the rounding of the sum, which can move each coordinate by
    /// one unit more when one resident is added.
    pub fn encoded_l2(&self) -> f64 {
        let real = (self.gradient_l2().powi(2) + self.information_l2().powi(2)).sqrt();
        real * self.unit() + (self.dims() as f64).sqrt()
    }

    /// The L1 sensitivity of the encoded vector, from the L2 one (`‖v‖₁ ≤ √n‖v‖₂`).
    pub fn encoded_l1(&self) -> f64 {
        self.encoded_l2() * (self.dims() as f64).sqrt()
    }

    fn unit(&self) -> f64 {
        2f64.powi(self.frac_bits as i32)
    }

    /// A partner's sum in fixed point, for the secure sum.
    pub fn encode(&self, sum: &[f64]) -> Vec<i64> {
        sum.iter()
            .map(|v| (v * self.unit()).round() as i64)
            .collect()
    }

    /// The secure sum's total back in real units.
    pub fn decode(&self, total: &[i64]) -> Vec<f64> {
        total.iter().map(|&v| v as f64 / self.unit()).collect()
    }

    /// The σ (in fixed-point units) of Gaussian noise on the encoded total that costs `rho`
    /// (zCDP: `ρ = Δ₂² / 2σ²` for the discrete Gaussian, Canonne, Kamath and Steinke 2020).
    pub fn sigma_for_rho(&self, rho: f64) -> Result<f64, MechanismError> {
        if !(rho.is_finite() && rho > 0.0) {
            return Err(invalid(format!(
                "an iteration's ρ must be positive, got {rho}"
            )));
        }
        Ok(self.encoded_l2() / (2.0 * rho).sqrt())
    }

    /// The σ (fixed-point units) each partner adds to each slot of its encoded sum so that
    /// the shares of `count.honest` partners alone cost `rho` (Kairouz, Liu and Steinke's
    /// distributed discrete Gaussian, as every other statistic's shares are sized): the
    /// coordinator then only ever unmasks a noisy total.
    pub fn share_sigma(&self, rho: f64, count: ShareCount) -> Result<f64, MechanismError> {
        crate::distributed::share_sigma_for_rho(
            rho,
            count,
            self.dims(),
            self.encoded_l1(),
            self.encoded_l2(),
        )
    }

    /// The Newton step from `beta` on a total (real units): `β + (H + λI)⁻¹ g`, in scaled
    /// coordinates. The ridge grows by tenfold steps until the matrix factors.
    pub fn newton_step(&self, beta: &[f64], total: &[f64]) -> Result<Vec<f64>, MechanismError> {
        let d = self.coefficients();
        if total.len() != self.dims() || beta.len() != d {
            return Err(invalid(format!(
                "a step needs {d} coefficients and {} sums, got {} and {}",
                self.dims(),
                beta.len(),
                total.len()
            )));
        }
        let (g, upper) = total.split_at(d);
        if let Some(l) = self.factor(upper) {
            let step = crate::linalg::cholesky_solve(&l, g);
            return Ok(beta.iter().zip(step).map(|(b, s)| b + s).collect());
        }
        Err(invalid(
            "the information matrix is not finite: no Newton step",
        ))
    }

    /// Half-widths of intervals around each raw coefficient that hold the noise-free fit with
    /// probability `confidence`, from the last iteration's noisy `total` (real units) and the
    /// noise's σ per slot on it (real units: the encoded σ over the unit). To first order the
    /// last Newton step carries the gradient's noise `e` into the coefficients as `H⁻¹e`
    /// (the earlier iterations' errors are what the step corrects, and the matrix's own
    /// noise meets a gradient that is already near zero): the covariance is `σ²H⁻²` in
    /// scaled coordinates, carried to raw ones through the scaling. They state the noise's
    /// share of the error only, not the sampling error of the cohort.
    // Index loops read as the textbook formulas.
    #[allow(clippy::needless_range_loop)]
    pub fn noise_half_widths(
        &self,
        total: &[f64],
        sigma: f64,
        confidence: f64,
    ) -> Result<Vec<f64>, MechanismError> {
        let d = self.coefficients();
        if total.len() != self.dims() || !(sigma.is_finite() && sigma >= 0.0) {
            return Err(invalid(format!(
                "intervals need {} sums and σ ≥ 0, got {} and {sigma}",
                self.dims(),
                total.len()
            )));
        }
        if !(confidence > 0.0 && confidence < 1.0) {
            return Err(invalid(format!(
                "confidence must be in (0, 1), got {confidence}"
            )));
        }
        let z = crate::accuracy::standard_quantile(1.0 - confidence)
            .ok_or_else(|| invalid(format!("no quantile for confidence {confidence}")))?;
        let l = self
            .factor(&total[d..])
            .ok_or_else(|| invalid("the information matrix is not finite: no intervals"))?;
        // H⁻¹, column by column.
        let inverse: Vec<Vec<f64>> = (0..d)
            .map(|j| {
                let e: Vec<f64> = (0..d).map(|i| f64::from(u8::from(i == j))).collect();
                crate::linalg::cholesky_solve(&l, &e)
            })
            .collect();
        // The scaling as a matrix T (raw = T·scaled), then each raw coefficient's
        // variance (T·σ²H⁻²·Tᵀ)ᵢᵢ = σ²‖(T·H⁻¹)ᵢ‖².
        let t = self.scaling();
        Ok((0..d)
            .map(|i| {
                let row_norm: f64 = (0..d)
                    .map(|k| {
                        let th: f64 = (0..d).map(|m| t[i][m] * inverse[k][m]).sum();
                        th * th
                    })
                    .sum();
                z * sigma * row_norm.sqrt()
            })
            .collect())
    }

    /// The Cholesky factor of the information matrix (packed upper triangle) with the
    /// plan's ridge, grown by tenfold steps until it factors.
    // Index loops read as the textbook formulas.
    #[allow(clippy::needless_range_loop)]
    fn factor(&self, upper: &[f64]) -> Option<Vec<Vec<f64>>> {
        let d = self.coefficients();
        let mut h = vec![vec![0.0; d]; d];
        let mut k = 0;
        for i in 0..d {
            for j in i..d {
                h[i][j] = upper[k];
                h[j][i] = upper[k];
                k += 1;
            }
        }
        let scale = (0..d).map(|i| h[i][i].abs()).sum::<f64>() / d as f64;
        let ridges = std::iter::once(self.ridge)
            .chain((-8..=4).map(|e| self.ridge.max(10f64.powi(e) * scale.max(1.0))));
        for ridge in ridges {
            let mut a = h.clone();
            (0..d).for_each(|i| a[i][i] += ridge);
            if let Some(l) = crate::linalg::cholesky(&a) {
                return Some(l);
            }
        }
        None
    }

    /// Coefficients in scaled coordinates as coefficients of the raw features, class by
    /// class (the intercept first): `x_s = a·x + c` per feature with `a = 2/(hi − lo)` and
    /// `c = −1 − a·lo`.
    pub fn unscaled(&self, beta: &[f64]) -> Vec<f64> {
        let t = self.scaling();
        (0..beta.len())
            .map(|i| (0..beta.len()).map(|j| t[i][j] * beta[j]).sum())
            .collect()
    }

    /// The scaling as a matrix T over all coefficients (raw = T·scaled): one block a class.
    fn scaling(&self) -> Vec<Vec<f64>> {
        let (q, d) = (self.inputs(), self.coefficients());
        let mut t = vec![vec![0.0; d]; d];
        for k in 0..self.classes - 1 {
            let o = k * q;
            t[o][o] = 1.0;
            for (j, b) in self.features.iter().enumerate() {
                let a = 2.0 / (b.hi - b.lo);
                t[o][o + j + 1] = -1.0 - a * b.lo;
                t[o + j + 1][o + j + 1] = a;
            }
        }
        t
    }
}

/// Models Civic does not fit itself (the eye-photo path): a trainer command the partner
/// configures locally returns the sum of its examples' gradients, each clipped to L2 norm
/// `clip`, at the announced parameters (DP-SGD across partners). The agent checks what the
/// trainer returned before any of it is noised, masked and sent.
#[derive(Clone, Debug, PartialEq)]
pub struct ClippedSumPlan {
    /// The model's parameters: the vector's length.
    pub params: usize,
    /// Each example's gradient is clipped to this L2 norm.
    pub clip: f64,
    /// The most examples one partner may sum (public, as for every statistic).
    pub max_rows: u64,
    /// Fractional bits of the fixed-point encoding.
    pub frac_bits: u32,
}

/// Why a trainer's output was refused: its code and what was wrong, naming no value of it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {reason}")]
pub struct TrainerRefusal {
    /// `trainer.output_unreadable`, `trainer.output_length`, `trainer.output_not_finite` or
    /// `trainer.output_norm`.
    pub code: &'static str,
    /// What was wrong.
    pub reason: String,
}

impl ClippedSumPlan {
    /// Reads a trainer's output: a JSON array of numbers, nothing else. Garbage, the wrong
    /// length, a non-finite entry or a norm above `clip × max_rows` (no sum of clipped
    /// gradients over at most `max_rows` examples can be longer) is refused.
    pub fn check(&self, output: &[u8]) -> Result<Vec<f64>, TrainerRefusal> {
        let refuse = |code, reason: String| TrainerRefusal { code, reason };
        let values: Vec<serde_json::Value> = serde_json::from_slice(output).map_err(|e| {
            refuse(
                "trainer.output_unreadable",
                format!("the trainer must print a JSON array of numbers ({e})"),
            )
        })?;
        if values.len() != self.params {
            return Err(refuse(
                "trainer.output_length",
                format!(
                    "the trainer returned {} numbers for a model of {} parameters",
                    values.len(),
                    self.params
                ),
            ));
        }
        let sum: Vec<f64> = values
            .iter()
            .map(|v| v.as_f64().filter(|x| x.is_finite()))
            .collect::<Option<_>>()
            .ok_or_else(|| {
                refuse(
                    "trainer.output_not_finite",
                    "every entry must be a finite number".into(),
                )
            })?;
        let bound = self.clip * self.max_rows as f64;
        if sum.iter().map(|x| x * x).sum::<f64>().sqrt() > bound * (1.0 + 1e-12) {
            return Err(refuse(
                "trainer.output_norm",
                format!(
                    "the sum's L2 norm is above {bound} (the clip {} times at most {} examples): \
                     the trainer does not clip its gradients",
                    self.clip, self.max_rows
                ),
            ));
        }
        Ok(sum)
    }

    /// The L2 sensitivity of the encoded sum: one example's clipped gradient in fixed-point
    /// units, plus a unit a coordinate for the rounding.
    pub fn encoded_l2(&self) -> f64 {
        self.clip * 2f64.powi(self.frac_bits as i32) + (self.params as f64).sqrt()
    }
}

/// The area under the ROC curve of `scores` for `outcomes`: the chance that a random
/// positive scores above a random negative, ties counting a half (the Mann–Whitney
/// statistic over ranks). `None` without both outcomes.
pub fn auc(scores: &[f64], outcomes: &[bool]) -> Option<f64> {
    let mut order: Vec<usize> = (0..scores.len().min(outcomes.len())).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let positives = order.iter().filter(|&&i| outcomes[i]).count() as f64;
    let negatives = order.len() as f64 - positives;
    if positives == 0.0 || negatives == 0.0 {
        return None;
    }
    // Sum of the positives' ranks (1-based, ties given their mean rank).
    let (mut rank_sum, mut start) = (0.0, 0);
    while start < order.len() {
        let mut end = start;
        while end + 1 < order.len() && scores[order[end + 1]] == scores[order[start]] {
            end += 1;
        }
        let mean_rank = (start + end) as f64 / 2.0 + 1.0;
        rank_sum += order[start..=end].iter().filter(|&&i| outcomes[i]).count() as f64 * mean_rank;
        start = end + 1;
    }
    Some((rank_sum - positives * (positives + 1.0) / 2.0) / (positives * negatives))
}

fn invalid(reason: impl Into<String>) -> MechanismError {
    MechanismError::InvalidParameter {
        stage: "logistic regression",
        reason: reason.into(),
    }
}

/// The logistic function, without overflow.
pub fn sigmoid(eta: f64) -> f64 {
    if eta >= 0.0 {
        1.0 / (1.0 + (-eta).exp())
    } else {
        let e = eta.exp();
        e / (1.0 + e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::{Rng, SeedableRng};

    /// Uniform in [0, 1).
    fn uniform(rng: &mut impl Rng) -> f64 {
        (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A synthetic cohort: three features, an outcome drawn from a known logistic model.
    fn cohort(n: usize, seed: u64) -> Vec<(Vec<f64>, bool)> {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(seed);
        (0..n)
            .map(|_| {
                let age = 18.0 + 82.0 * uniform(&mut rng);
                let egfr = 15.0 + 105.0 * uniform(&mut rng);
                let care_home = uniform(&mut rng) < 0.1;
                let eta = -3.0 + 0.03 * age - 0.02 * egfr + 1.2 * f64::from(u8::from(care_home));
                let y = uniform(&mut rng) < sigmoid(eta);
                (vec![age, egfr, f64::from(u8::from(care_home))], y)
            })
            .collect()
    }

    fn plan() -> LogisticPlan {
        LogisticPlan::new(
            vec![
                FeatureBounds {
                    lo: 18.0,
                    hi: 100.0,
                },
                FeatureBounds {
                    lo: 15.0,
                    hi: 120.0,
                },
                FeatureBounds { lo: 0.0, hi: 1.0 },
            ],
            2,
            32,
            0.0,
        )
        .unwrap()
    }

    fn rows(data: &[(Vec<f64>, bool)]) -> impl Iterator<Item = (&[f64], usize)> {
        data.iter().map(|(x, y)| (x.as_slice(), usize::from(*y)))
    }

    #[test]
    fn partners_sums_give_the_pooled_newton_fit_to_1e_6() {
        let plan = plan();
        let data = cohort(20_000, 7);
        let partners: Vec<&[(Vec<f64>, bool)]> = data.chunks(20_000 / 8 + 1).collect();
        let (mut pooled, mut federated) = (vec![0.0; 4], vec![0.0; 4]);
        for _ in 0..8 {
            // Pooled: one sum over everyone, in floating point.
            pooled = plan
                .newton_step(&pooled, &plan.partner_sum(&pooled, rows(&data)))
                .unwrap();
            // Federated: each partner's sum in fixed point, added as the secure sum does.
            let mut total = vec![0i64; plan.dims()];
            for p in &partners {
                let encoded = plan.encode(&plan.partner_sum(&federated, rows(p)));
                total.iter_mut().zip(encoded).for_each(|(t, e)| *t += e);
            }
            federated = plan.newton_step(&federated, &plan.decode(&total)).unwrap();
        }
        for (a, b) in pooled.iter().zip(&federated) {
            assert!((a - b).abs() < 1e-6, "{pooled:?} against {federated:?}");
        }
        // Converged, and near the model the cohort was drawn from (raw coordinates).
        let raw = plan.unscaled(&pooled);
        let truth = [-3.0, 0.03, -0.02, 1.2];
        for (b, t) in raw.iter().zip(truth) {
            assert!((b - t).abs() < 0.25 * t.abs().max(0.1), "{raw:?}");
        }
        let next = plan
            .newton_step(&pooled, &plan.partner_sum(&pooled, rows(&data)))
            .unwrap();
        assert!(next.iter().zip(&pooled).all(|(a, b)| (a - b).abs() < 1e-9));
    }

    #[test]
    fn one_extreme_resident_moves_an_iteration_by_at_most_its_bound() {
        let plan = plan();
        let data = cohort(500, 11);
        let extremes = [
            (vec![1e9, -1e9, 7.0], true),
            (vec![f64::NAN, f64::INFINITY, -3.0], false),
            (vec![100.0, 15.0, 1.0], false),
        ];
        for beta in [
            vec![0.0; 4],
            vec![5.0, -5.0, 5.0, -5.0],
            vec![-40.0, 40.0, 0.0, 1.0],
        ] {
            let base = plan.encode(&plan.partner_sum(&beta, rows(&data)));
            for (x, y) in &extremes {
                let one = plan.contribution(&beta, x, usize::from(*y));
                let (g, h) = one.split_at(plan.coefficients());
                let norm = |v: &[f64]| v.iter().map(|a| a * a).sum::<f64>().sqrt();
                assert!(norm(g) <= plan.gradient_l2() + 1e-12, "{g:?}");
                assert!(norm(h) <= plan.information_l2() + 1e-12, "{h:?}");
                let mut with = data.clone();
                with.push((x.clone(), *y));
                let moved = plan.encode(&plan.partner_sum(&beta, rows(&with)));
                let l2 = base
                    .iter()
                    .zip(&moved)
                    .map(|(a, b)| ((a - b) as f64).powi(2))
                    .sum::<f64>()
                    .sqrt();
                assert!(l2 <= plan.encoded_l2(), "{l2} > {}", plan.encoded_l2());
            }
        }
    }

    #[test]
    fn noisy_newton_at_rho_one_lands_near_the_non_private_fit() {
        // 20,000 residents, 5 iterations at ρ 0.2 each (ρ 1 for the job), discrete Gaussian
        // noise on the encoded totals, fixed seeds. Tolerance: 0.05 per coefficient in
        // scaled coordinates (σ ≈ 3.5 per sum against an information matrix of order 10³:
        // a coefficient's noise is of order 10⁻³).
        let plan = LogisticPlan::new(plan().features, 2, 16, 0.0).unwrap();
        let data = cohort(20_000, 3);
        let sigma = plan.sigma_for_rho(0.2).unwrap();
        let noise = crate::sampler::GaussianScale::at_least(sigma).unwrap();
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(99);
        let (mut exact, mut noisy) = (vec![0.0; 4], vec![0.0; 4]);
        for _ in 0..5 {
            exact = plan
                .newton_step(&exact, &plan.partner_sum(&exact, rows(&data)))
                .unwrap();
            let mut total = plan.encode(&plan.partner_sum(&noisy, rows(&data)));
            total.iter_mut().for_each(|t| *t += noise.sample(&mut rng));
            noisy = plan.newton_step(&noisy, &plan.decode(&total)).unwrap();
        }
        for (a, b) in exact.iter().zip(&noisy) {
            assert!((a - b).abs() < 0.05, "{exact:?} against {noisy:?}");
        }
        assert_ne!(exact, noisy, "the noise is really there");
    }

    #[test]
    fn the_noise_intervals_cover_the_non_private_fit_at_their_rate() {
        // 300 noisy fits of one cohort of 3,000 at ρ 0.1 for the job (5 iterations), seeds
        // 0..300: each raw coefficient's 95% interval should hold the exact fit in about 95%
        // of them. Tolerance: 91% to 99% (three binomial standard deviations, 1.26% each).
        let plan = LogisticPlan::new(plan().features, 2, 16, 0.0).unwrap();
        let data = cohort(3_000, 5);
        let iterations = 5;
        let sigma_int = plan.sigma_for_rho(0.1 / f64::from(iterations)).unwrap();
        let noise = crate::sampler::GaussianScale::at_least(sigma_int).unwrap();
        let sigma = sigma_int / 2f64.powi(16);
        let mut exact = vec![0.0; 4];
        for _ in 0..10 {
            exact = plan
                .newton_step(&exact, &plan.partner_sum(&exact, rows(&data)))
                .unwrap();
        }
        let exact = plan.unscaled(&exact);
        let runs = 300;
        let mut covered = [0u32; 4];
        let mut widths = [0.0; 4];
        for seed in 0..runs {
            let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(seed);
            let mut beta = vec![0.0; 4];
            let mut last = Vec::new();
            for _ in 0..iterations {
                let mut total = plan.encode(&plan.partner_sum(&beta, rows(&data)));
                total.iter_mut().for_each(|t| *t += noise.sample(&mut rng));
                last = plan.decode(&total);
                beta = plan.newton_step(&beta, &last).unwrap();
            }
            let half = plan.noise_half_widths(&last, sigma, 0.95).unwrap();
            for (i, (b, e)) in plan.unscaled(&beta).iter().zip(&exact).enumerate() {
                covered[i] += u32::from((b - e).abs() <= half[i]);
                widths[i] += half[i] / runs as f64;
            }
        }
        for (i, c) in covered.iter().enumerate() {
            let rate = f64::from(*c) / runs as f64;
            assert!(
                (0.91..=0.99).contains(&rate),
                "coefficient {i}: {rate} of {runs} intervals cover (mean half-width {}; {covered:?})",
                widths[i]
            );
        }
    }

    #[test]
    fn partners_shares_cost_the_iterations_rho_through_the_honest_ones_alone() {
        let plan = plan();
        let count = ShareCount {
            honest: 6,
            partners: 8,
        };
        let share = plan.share_sigma(0.05, count).unwrap();
        let cost = crate::distributed::rho_of_shares(
            share,
            count.honest,
            plan.dims(),
            plan.encoded_l1(),
            plan.encoded_l2(),
        );
        assert!(cost <= 0.05 && cost > 0.049, "{cost}");
        // Fewer honest shares each carry more noise.
        let fewer = ShareCount {
            honest: 3,
            partners: 8,
        };
        assert!(plan.share_sigma(0.05, fewer).unwrap() > share);
    }

    /// Three outcome classes (say, the organism class a lab reports: 0 other, 1
    /// gram-negative, 2 gram-positive) from a known multinomial model of two features.
    fn three_classes(n: usize, seed: u64) -> Vec<(Vec<f64>, usize)> {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(seed);
        (0..n)
            .map(|_| {
                let age = 18.0 + 82.0 * uniform(&mut rng);
                let catheter = f64::from(u8::from(uniform(&mut rng) < 0.2));
                let eta = [0.0, -1.0 + 0.02 * age + 1.0 * catheter, 0.5 - 0.01 * age];
                let top = eta.iter().copied().fold(f64::MIN, f64::max);
                let w: Vec<f64> = eta.iter().map(|e| (e - top).exp()).collect();
                let mut u = uniform(&mut rng) * w.iter().sum::<f64>();
                let class = w
                    .iter()
                    .position(|wk| {
                        u -= wk;
                        u < 0.0
                    })
                    .unwrap_or(2);
                (vec![age, catheter], class)
            })
            .collect()
    }

    #[test]
    fn a_multinomial_fit_from_partners_sums_is_the_pooled_one_and_stays_bounded() {
        let plan = LogisticPlan::new(
            vec![
                FeatureBounds {
                    lo: 18.0,
                    hi: 100.0,
                },
                FeatureBounds { lo: 0.0, hi: 1.0 },
            ],
            3,
            32,
            0.0,
        )
        .unwrap();
        assert_eq!((plan.coefficients(), plan.dims()), (6, 27));
        let data = three_classes(30_000, 17);
        let sum = |beta: &[f64], d: &[(Vec<f64>, usize)]| {
            plan.partner_sum(beta, d.iter().map(|(x, y)| (x.as_slice(), *y)))
        };
        let (mut pooled, mut federated) = (vec![0.0; 6], vec![0.0; 6]);
        for _ in 0..10 {
            pooled = plan.newton_step(&pooled, &sum(&pooled, &data)).unwrap();
            let mut total = vec![0i64; plan.dims()];
            for part in data.chunks(3_750) {
                let encoded = plan.encode(&sum(&federated, part));
                total.iter_mut().zip(encoded).for_each(|(t, e)| *t += e);
            }
            federated = plan.newton_step(&federated, &plan.decode(&total)).unwrap();
        }
        for (a, b) in pooled.iter().zip(&federated) {
            assert!((a - b).abs() < 1e-6, "{pooled:?} against {federated:?}");
        }
        // Near the model drawn from, class by class (raw coordinates).
        let raw = plan.unscaled(&pooled);
        let truth = [-1.0, 0.02, 1.0, 0.5, -0.01, 0.0];
        for (b, t) in raw.iter().zip(truth) {
            assert!((b - t).abs() < 0.2, "{raw:?}");
        }
        // One resident, however extreme, within the bounds at any coefficients.
        let norm = |v: &[f64]| v.iter().map(|a| a * a).sum::<f64>().sqrt();
        for beta in [vec![0.0; 6], vec![9.0, -9.0, 9.0, -9.0, 9.0, -9.0]] {
            for (x, y) in [
                (vec![1e9, 5.0], 1),
                (vec![-1e9, f64::NAN], 2),
                (vec![50.0, 0.0], 0),
            ] {
                let one = plan.contribution(&beta, &x, y);
                let (g, h) = one.split_at(plan.coefficients());
                assert!(norm(g) <= plan.gradient_l2() + 1e-12, "{g:?}");
                assert!(norm(h) <= plan.information_l2() + 1e-12, "{h:?}");
            }
        }
    }

    #[test]
    fn auc_is_the_chance_a_positive_outranks_a_negative() {
        let y = [false, false, true, true];
        assert_eq!(auc(&[0.1, 0.2, 0.8, 0.9], &y), Some(1.0));
        assert_eq!(auc(&[0.9, 0.8, 0.2, 0.1], &y), Some(0.0));
        assert_eq!(auc(&[0.5; 4], &y), Some(0.5));
        // One positive below one negative of four pairs: 3/4.
        assert_eq!(auc(&[0.1, 0.6, 0.5, 0.9], &y), Some(0.75));
        assert_eq!(auc(&[0.1, 0.2], &[true, true]), None);
        // The fitted model separates its own cohort better than chance.
        let plan = plan();
        let data = cohort(5_000, 21);
        let mut beta = vec![0.0; 4];
        for _ in 0..8 {
            beta = plan
                .newton_step(&beta, &plan.partner_sum(&beta, rows(&data)))
                .unwrap();
        }
        let scores: Vec<f64> = data
            .iter()
            .map(|(x, _)| plan.probabilities(&beta, &plan.scaled(x))[0])
            .collect();
        let outcomes: Vec<bool> = data.iter().map(|(_, y)| *y).collect();
        let a = auc(&scores, &outcomes).unwrap();
        assert!((0.6..0.9).contains(&a), "{a}");
    }

    #[test]
    fn a_trainers_output_is_read_strictly_and_bounded() {
        let plan = ClippedSumPlan {
            params: 3,
            clip: 1.0,
            max_rows: 10,
            frac_bits: 16,
        };
        assert_eq!(
            plan.check(b"[1.5, -2, 0.25]").unwrap(),
            vec![1.5, -2.0, 0.25]
        );
        for (output, code) in [
            (&b"1.5 -2 0.25"[..], "trainer.output_unreadable"),
            (b"", "trainer.output_unreadable"),
            (b"[1, 2, \"three\"]", "trainer.output_not_finite"),
            (b"[1, 2, null]", "trainer.output_not_finite"),
            (b"[1, 2, 3, 4]", "trainer.output_length"),
            (b"[1, 2]", "trainer.output_length"),
            (b"[10, 0, 0.5]", "trainer.output_norm"),
            (b"[1e308, 1e308, 1e308]", "trainer.output_norm"),
        ] {
            let e = plan.check(output).unwrap_err();
            assert_eq!(e.code, code, "{}", String::from_utf8_lossy(output));
        }
        // No value of the output is in a refusal's reason.
        let e = plan.check(b"[10, 0, 0.5]").unwrap_err();
        assert!(
            !e.reason.contains("10.0") && !e.reason.contains("0.5"),
            "{e}"
        );
    }

    #[test]
    fn bad_plans_and_steps_are_refused() {
        let b = FeatureBounds { lo: 0.0, hi: 1.0 };
        for (features, bits, ridge) in [
            (vec![], 32, 0.0),
            (vec![FeatureBounds { lo: 1.0, hi: 1.0 }], 32, 0.0),
            (
                vec![FeatureBounds {
                    lo: f64::NAN,
                    hi: 1.0,
                }],
                32,
                0.0,
            ),
            (vec![b], 4, 0.0),
            (vec![b], 32, -1.0),
        ] {
            assert!(LogisticPlan::new(features, 2, bits, ridge).is_err());
        }
        for classes in [0, 1, 17] {
            assert!(LogisticPlan::new(vec![b], classes, 32, 0.0).is_err());
        }
        let plan = plan();
        assert!(plan.newton_step(&[0.0; 4], &[0.0; 3]).is_err());
        assert!(plan.sigma_for_rho(0.0).is_err());
        // An all-zero (or non-positive-definite, noisy) matrix still steps, ridged.
        let step = plan
            .newton_step(&[0.0; 4], &vec![0.0; plan.dims()])
            .unwrap();
        assert_eq!(step, vec![0.0; 4]);
        assert!(plan.sigma_for_rho(0.5).unwrap() >= plan.encoded_l2());
    }
}
