//! Training jobs' pure cores: logistic regression by Newton steps on noisy secure sums, and
//! DP-SGD steps on the clipped gradient sums of partners' own trainers ([`SgdPlan`]).
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

/// How much of the data one resident can be, as a dataset policy bounds it (public): the
/// sensitivity is of adding or removing one resident, not one row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResidentBounds {
    /// Rows one resident may have at one partner (the agent keeps no more).
    pub rows_per_resident: u32,
    /// Partners one resident may appear at.
    pub partners_per_person: u32,
    /// Rows one partner sums at most (the agent keeps no more).
    pub max_rows: u64,
}

impl ResidentBounds {
    fn check(&self) -> Result<(), MechanismError> {
        if self.rows_per_resident == 0 || self.partners_per_person == 0 || self.max_rows == 0 {
            return Err(invalid(format!(
                "rows per resident, partners per person and rows per partner must be at least \
                 1, got {self:?}"
            )));
        }
        Ok(())
    }

    /// How many rows one resident can be across the federation.
    fn rows(&self) -> f64 {
        f64::from(self.rows_per_resident) * f64::from(self.partners_per_person)
    }
}

/// Partners a round may add up without its encoded sums leaving i64 (with the noise).
const MAX_PARTNERS: u64 = 1 << 12;

/// The largest Σ|β| a partner computes contributions at: coefficients from the coordinator
/// are refused beyond it (a public check, before any data is read), so every predictor is
/// finite. Far beyond any fitted model on scaled features.
pub const BETA_CAP: f64 = 1e6;

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
    /// How much of the data one resident can be.
    pub residents: ResidentBounds,
}

impl LogisticPlan {
    /// Checks the bounds, the classes and the encoding.
    pub fn new(
        features: Vec<FeatureBounds>,
        classes: usize,
        frac_bits: u32,
        ridge: f64,
        residents: ResidentBounds,
    ) -> Result<Self, MechanismError> {
        residents.check()?;
        if !(2..=16).contains(&classes) {
            return Err(invalid(format!(
                "a logistic model has 2 to 16 outcome classes, got {classes}"
            )));
        }
        for (i, b) in features.iter().enumerate() {
            if !(b.lo.is_finite() && b.hi.is_finite() && b.lo < b.hi && (b.hi - b.lo).is_finite()) {
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
        // Every entry of a row's contribution is at most 1 in size, so a partner's encoded
        // slot is at most max_rows·(unit + 1): with room for MAX_PARTNERS of them and the
        // noise, no sum can overflow, whatever the data.
        let unit = 2u128.pow(frac_bits);
        let slot = u128::from(residents.max_rows).saturating_mul(unit + 1);
        if slot.saturating_mul(u128::from(MAX_PARTNERS) * 2) > i64::MAX as u128 {
            return Err(invalid(format!(
                "{} rows per partner at {frac_bits} fractional bits could overflow the sum: \
                 use fewer fractional bits",
                residents.max_rows
            )));
        }
        Ok(Self {
            features,
            classes,
            frac_bits,
            ridge,
            residents,
        })
    }

    /// Refuses coefficients a partner should not compute at: the wrong length, a value that
    /// is not finite, or Σ|β| above [`BETA_CAP`]. Public: it reads no data.
    pub fn check_beta(&self, beta: &[f64]) -> Result<(), MechanismError> {
        let total: f64 = beta.iter().map(|b| b.abs()).sum();
        if beta.len() != self.coefficients() || !(total.is_finite() && total <= BETA_CAP) {
            return Err(invalid(format!(
                "the announced coefficients must be {} finite numbers with Σ|β| at most {BETA_CAP}",
                self.coefficients()
            )));
        }
        Ok(())
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

    /// A resident's features scaled into [−1, 1] by their bounds (clamped; a missing or
    /// NaN value counts as the lower bound), intercept first.
    pub fn scaled(&self, raw: &[f64]) -> Vec<f64> {
        std::iter::once(1.0)
            .chain(self.features.iter().enumerate().map(|(i, b)| {
                let v = raw.get(i).copied().filter(|v| !v.is_nan()).unwrap_or(b.lo);
                let v = v.clamp(b.lo, b.hi);
                (((v - b.lo) / (b.hi - b.lo)) * 2.0 - 1.0).clamp(-1.0, 1.0)
            }))
            .collect()
    }

    /// One resident's contribution at `beta` (scaled coordinates), whose outcome is class
    /// `outcome` (an outcome outside the classes counts as the reference): the gradient
    /// `(yₖ − pₖ)·x`, then the upper triangle of the information matrix, whose (k, l) block
    /// is `(pₖδₖₗ − pₖpₗ)·x·xᵀ`. `beta` must pass [`LogisticPlan::check_beta`].
    pub fn contribution(&self, beta: &[f64], raw: &[f64], outcome: usize) -> Vec<f64> {
        let x = self.scaled(raw);
        let q = self.inputs();
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

    /// What a partner sends into an iteration's secure sum (before its noise share): each
    /// of `rows`' contributions at `beta` encoded in fixed point, then added exactly, so the
    /// sum does not depend on the rows' order and one resident's rows move it by at most
    /// [`LogisticPlan::encoded_l2`]; then each slot clamped to [`LogisticPlan::slot_bound`].
    /// Every row counts (the agent keeps at most `rows_per_resident` of one resident's):
    /// leaving rows out beyond a cap would let one resident's rows push another's out, and
    /// clamping a slot, unlike that, moves no two sums further apart.
    pub fn partner_sum_encoded<'a>(
        &self,
        beta: &[f64],
        rows: impl IntoIterator<Item = (&'a [f64], usize)>,
    ) -> Result<Vec<i64>, MechanismError> {
        self.check_beta(beta)?;
        let mut sum = vec![0i128; self.dims()];
        for (raw, y) in rows {
            self.add_encoded(beta, raw, y, &mut sum);
        }
        Ok(self.clamped(&sum))
    }

    /// Adds one row's contribution at `beta`, encoded in fixed point, to `sum` (of
    /// [`LogisticPlan::dims`] slots): what [`LogisticPlan::partner_sum_encoded`] does for each
    /// row, for an agent that streams its rows; [`LogisticPlan::clamped`] then makes the sum
    /// it sends. `beta` must pass [`LogisticPlan::check_beta`].
    pub fn add_encoded(&self, beta: &[f64], raw: &[f64], outcome: usize, sum: &mut [i128]) {
        let unit = self.unit();
        for (s, c) in sum.iter_mut().zip(self.contribution(beta, raw, outcome)) {
            // |c| ≤ 1: a row adds at most a unit, so i128 holds any number of rows.
            *s = s.saturating_add((c * unit).round() as i128);
        }
    }

    /// The most one partner's slot may hold: `max_rows` rows of a unit each, which the
    /// plan's check keeps far inside i64 for the whole federation.
    pub fn slot_bound(&self) -> i64 {
        // |round(c·unit)| ≤ unit for |c| ≤ 1.
        let bound = u128::from(self.residents.max_rows) * (1u128 << self.frac_bits);
        i64::try_from(bound).unwrap_or(i64::MAX)
    }

    /// An exact partner sum clamped slot by slot to [`LogisticPlan::slot_bound`]: what it
    /// sends, whatever number of rows it holds.
    pub fn clamped(&self, sum: &[i128]) -> Vec<i64> {
        let bound = i128::from(self.slot_bound());
        sum.iter()
            .map(|s| (*s).clamp(-bound, bound) as i64)
            .collect()
    }

    /// The sum of `rows`' contributions at `beta` in floating point: the non-private fit a
    /// release is compared with (the synthetic examples), not what a partner sends.
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

    /// The L2 sensitivity of an iteration's encoded total to adding or removing one
    /// resident: each of their rows (at most `rows_per_resident` at each of at most
    /// `partners_per_person` partners) moves it by its contribution in fixed-point units
    /// and its rounding (half a unit a coordinate); rounded up.
    pub fn encoded_l2(&self) -> f64 {
        let real = (self.gradient_l2().powi(2) + self.information_l2().powi(2)).sqrt();
        let row = real * self.unit() + (self.dims() as f64).sqrt() / 2.0;
        self.residents.rows() * row * (1.0 + 1e-12)
    }

    /// The L1 sensitivity of the encoded vector, from the L2 one (`‖v‖₁ ≤ √n‖v‖₂`).
    pub fn encoded_l1(&self) -> f64 {
        self.encoded_l2() * (self.dims() as f64).sqrt()
    }

    fn unit(&self) -> f64 {
        2f64.powi(self.frac_bits as i32)
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
    /// coordinates. The ridge grows by tenfold steps until the matrix factors; the result is
    /// brought within Σ|β| ≤ [`BETA_CAP`], so that partners take the next round.
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
            let next: Vec<f64> = beta.iter().zip(step).map(|(b, s)| b + s).collect();
            return Ok(within_cap(next));
        }
        Err(invalid(
            "the information matrix is not finite: no Newton step",
        ))
    }

    /// Half-widths of intervals around each raw coefficient that hold the noise-free fit with
    /// probability `confidence`, from the last iteration's noisy `total` (real units) and the
    /// total noise's σ per slot on it (real units: the encoded σ over the unit; with
    /// distributed noise, the share σ times √contributors). To first order the
    /// last Newton step carries the gradient's noise `e` into the coefficients as `H⁻¹e`
    /// (the earlier iterations' errors are what the step corrects, and the matrix's own
    /// noise meets a gradient that is already near zero): the covariance is `σ²H⁻²` in
    /// scaled coordinates, carried to raw ones through the scaling. They state the noise's
    /// share of the error only, not the sampling error of the cohort.
    pub fn noise_half_widths(
        &self,
        total: &[f64],
        sigma: f64,
        confidence: f64,
    ) -> Result<Vec<f64>, MechanismError> {
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
        Ok(self
            .carried(total)?
            .into_iter()
            .map(|norm| z * sigma * norm)
            .collect())
    }

    /// [`LogisticPlan::newton_step`] on a total whose slots carry noise of σ (real units),
    /// damped by a ridge of at least `2σ√d`, about the spectral norm of the information
    /// matrix's noise: where the noise could make a direction of the matrix look weaker than
    /// it is (or negative), the step along it is shortened instead of thrown far. The fixed
    /// point is the same (the gradient is zero there whatever the ridge): only the
    /// approach is slower, which [`LogisticPlan::step_half_widths`] accounts for.
    pub fn damped_step(
        &self,
        beta: &[f64],
        total: &[f64],
        sigma: f64,
    ) -> Result<Vec<f64>, MechanismError> {
        let damping = 2.0 * sigma * (self.coefficients() as f64).sqrt();
        let damped = Self {
            ridge: self.ridge.max(damping),
            ..self.clone()
        };
        damped.newton_step(beta, total)
    }

    /// Half-widths of intervals around each raw coefficient of an iterate that the last
    /// Newton step, of `step` (the iterate minus the one before, scaled coordinates), took
    /// from the noisy `total`, meant to hold the complete cases' maximum-likelihood fit with
    /// probability `confidence`; `None` where the noise may decide the fit. Three noise
    /// events, each allowed a third of the error probability: the gradient noise `e` along
    /// each coefficient (a Gaussian tail), `‖E‖` of the matrix's noise
    /// ([`matrix_noise_bound`]) and `‖e‖` (a χ² tail of Laurent and Massart 2000). With λ the
    /// noisy matrix's weakest eigenvalue (by bisection on positive definiteness) and `r` the
    /// bound on `‖E‖` over λ, the true matrix's is at least `(1 − r)λ` (Weyl); from `r = 3/4`
    /// on, or where the noisy matrix was not positive definite, no interval is stated. Otherwise each half-width is, to first
    /// order in the noise, the gradient noise carried through `H̃⁻¹` and the matrix noise
    /// acting on the noise-free step (at most `‖step‖ + ‖e‖/λ`), both widened by `1/(1 − r)`,
    /// plus the step itself in raw units: how far the fit may still be from settling (Newton
    /// converges quadratically, so near the fit what is left is smaller than the last step).
    pub fn step_half_widths(
        &self,
        total: &[f64],
        sigma: f64,
        confidence: f64,
        step: &[f64],
    ) -> Result<Option<Vec<f64>>, MechanismError> {
        let d = self.coefficients();
        if step.len() != d || step.iter().any(|s| !s.is_finite()) {
            return Err(invalid(format!("a step has {d} finite coefficients")));
        }
        let third = (1.0 - confidence) / 3.0;
        let gradient = self.noise_half_widths(total, sigma, 1.0 - third)?;
        let carried = self.carried(total)?;
        let Some(weakest) = self.weakest_eigenvalue(&total[d..]) else {
            return Ok(None);
        };
        // Σ of n squared N(0, σ²) is at most σ²(n + 2√(nx) + 2x) with probability 1 − e^(−x).
        let x = (1.0 / third).ln();
        let chi = |n: f64| sigma * (n + 2.0 * (n * x).sqrt() + 2.0 * x).sqrt();
        let m = (self.dims() - d) as f64;
        let matrix = matrix_noise_bound(sigma, d, chi(m), third);
        let r = matrix / weakest;
        if r.is_nan() || r >= 0.75 {
            return Ok(None);
        }
        let moved = step.iter().map(|s| s * s).sum::<f64>().sqrt() + chi(d as f64) / weakest;
        let unsettled = self.unscaled(step);
        Ok(Some(
            gradient
                .into_iter()
                .zip(carried)
                .zip(unsettled)
                .map(|((g, norm), u)| (g + norm * matrix * moved) / (1.0 - r) + u.abs())
                .collect(),
        ))
    }

    /// A lower bound on the weakest eigenvalue of the information matrix (packed upper
    /// triangle) with the plan's ridge: the largest μ found, by bisection, at which it less
    /// μ still factors. `None` if it does not factor with the plan's ridge alone.
    // Index loops read as the textbook formulas.
    #[allow(clippy::needless_range_loop)]
    fn weakest_eigenvalue(&self, upper: &[f64]) -> Option<f64> {
        let d = self.coefficients();
        let mut h = symmetric(upper, d);
        (0..d).for_each(|i| h[i][i] += self.ridge);
        let factors = |mu: f64| {
            let mut a = h.clone();
            (0..d).for_each(|i| a[i][i] -= mu);
            crate::linalg::cholesky(&a).is_some()
        };
        if !factors(0.0) {
            return None;
        }
        let (mut low, mut high) = (
            0.0f64,
            (0..d).map(|i| h[i][i]).fold(f64::INFINITY, f64::min),
        );
        for _ in 0..60 {
            let mid = low + (high - low) / 2.0;
            if factors(mid) {
                low = mid;
            } else {
                high = mid;
            }
        }
        (low > 0.0).then_some(low)
    }

    /// `‖(T·H⁻¹)ᵢ‖` for each raw coefficient i: how a unit of noise on the gradient moves
    /// it, through the (noisy, ridged) information matrix of `total` and the scaling T.
    // Index loops read as the textbook formulas.
    #[allow(clippy::needless_range_loop)]
    fn carried(&self, total: &[f64]) -> Result<Vec<f64>, MechanismError> {
        let d = self.coefficients();
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
                row_norm.sqrt()
            })
            .collect())
    }

    /// [`LogisticPlan::noise_half_widths`] before any data, for `rows` residents whose
    /// scaled features are spread evenly over [−1, 1] and independent (`E[x²] = 1/3`, no
    /// correlation) and whose outcome classes are equally likely (`p = 1/K`): what a preview
    /// states as a training job's expected accuracy.
    pub fn indicative_half_widths(
        &self,
        rows: u64,
        sigma: f64,
        confidence: f64,
    ) -> Result<Vec<f64>, MechanismError> {
        let (d, q) = (self.coefficients(), self.inputs());
        let p = 1.0 / self.classes as f64;
        let mut total = vec![0.0; self.dims()];
        let mut k = d;
        for a in 0..d {
            for b in a..d {
                if a % q == b % q {
                    let second_moment = if a % q == 0 { 1.0 } else { 1.0 / 3.0 };
                    let w = if a / q == b / q { p - p * p } else { -p * p };
                    total[k] = rows as f64 * second_moment * w;
                }
                k += 1;
            }
        }
        self.noise_half_widths(&total, sigma, confidence)
    }

    /// The Cholesky factor of the information matrix (packed upper triangle) with the
    /// plan's ridge, grown by tenfold steps until it factors.
    // Index loops read as the textbook formulas.
    #[allow(clippy::needless_range_loop)]
    fn factor(&self, upper: &[f64]) -> Option<Vec<Vec<f64>>> {
        let d = self.coefficients();
        let h = symmetric(upper, d);
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

/// The d × d symmetric matrix whose upper triangle, row by row, is `upper`.
// Index loops read as the textbook formula.
#[allow(clippy::needless_range_loop)]
fn symmetric(upper: &[f64], d: usize) -> Vec<Vec<f64>> {
    let mut h = vec![vec![0.0; d]; d];
    let mut k = 0;
    for i in 0..d {
        for j in i..d {
            h[i][j] = upper[k];
            h[j][i] = upper[k];
            k += 1;
        }
    }
    h
}

/// A bound on the spectral norm of a d × d symmetric noise matrix whose entries on and above
/// the diagonal are independent N(0, σ²), exceeded with probability at most `p`: the smaller
/// of two bounds fixed by σ, d and p alone (so choosing one does not look at the noise). One
/// is its Frobenius norm, `‖E‖²_F ≤ 2·Σ` over those entries, given `chi` (a χ² tail of that
/// sum). The other: `E λ_max(E) ≤ 2σ√d` (Sudakov–Fernique against `2σ⟨g, u⟩`, whose
/// increments dominate those of `uᵀEu`), and `λ_max`, `−λ_min` are each `√2σ`-Lipschitz in
/// the standard entries, so each exceeds `2σ(√d + √ln(2/p))` with probability at most p/2
/// (Gaussian concentration). For 14 coefficients the second is about 1.5 times tighter.
fn matrix_noise_bound(sigma: f64, d: usize, chi: f64, p: f64) -> f64 {
    let frobenius = std::f64::consts::SQRT_2 * chi;
    let spectral = 2.0 * sigma * ((d as f64).sqrt() + (2.0 / p).ln().sqrt());
    frobenius.min(spectral)
}

/// `beta` brought within what partners compute at ([`LogisticPlan::check_beta`]): a value
/// that is not finite becomes 0, and the whole is scaled down to Σ|β| ≤ [`BETA_CAP`]. A step
/// on very noisy sums can overshoot; the next round must still be one partners take.
fn within_cap(mut beta: Vec<f64>) -> Vec<f64> {
    beta.iter_mut()
        .filter(|b| !b.is_finite())
        .for_each(|b| *b = 0.0);
    let total: f64 = beta.iter().map(|b| b.abs()).sum();
    if total > BETA_CAP {
        let shrink = BETA_CAP / total * (1.0 - 1e-9);
        beta.iter_mut().for_each(|b| *b *= shrink);
    }
    beta
}

/// Models Civic does not fit itself (the eye-photo path), trained by DP-SGD across the
/// partners (Abadi et al. 2016, with full batches and the noise added by the partners'
/// shares). Each round, a trainer command the partner configures locally computes, at the
/// announced parameters θ, the sum of its examples' gradients, each clipped to L2 norm
/// `clip`, and how many examples it used; the agent checks that output
/// ([`SgdPlan::encode_trainer_output`]), encodes it in fixed point with the examples as a
/// last slot, and the secure sum adds the partners' vectors with noise. The coordinator steps
/// `θ ← θ − η · G / max(n, 1)` on the noisy total `G` and noisy examples `n`.
///
/// The agent cannot see inside a sum: that each example was clipped and that a resident has
/// at most the policy's rows is then the trainer's contract with its own partner (as the
/// extract's row bound is for a plain query). The agent checks what it can: the length, and
/// the sum's norm against `clip` × examples, which a trainer that clipped nothing fails as
/// soon as its examples' gradients, added up, are longer than that. A trainer may instead
/// print each example's gradient with its resident, and the agent bounds and clips them.
/// A partner's examples are never truncated to the round's bound (dropping some to make
/// room for others would let one resident displace another): slots beyond what the ring was
/// sized for are clamped instead, as for every round.
#[derive(Clone, Debug, PartialEq)]
pub struct SgdPlan {
    /// The model's parameters: each gradient's length.
    pub params: usize,
    /// Each example's gradient is clipped to this L2 norm.
    pub clip: f64,
    /// The gradient step's multiplier.
    pub learning_rate: f64,
    /// How much of the data one resident can be.
    pub residents: ResidentBounds,
    /// Fractional bits of the fixed-point encoding.
    pub frac_bits: u32,
}

/// The largest parameter a DP-SGD step leaves (each is clamped to ±this): partners compute
/// at finite, bounded parameters whatever the noise did.
pub const PARAMETER_CAP: f64 = 1e6;

/// Why a trainer's output was refused: its shape, never its values.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {reason}")]
pub struct TrainerRefusal {
    /// `trainer.output_unreadable`, `trainer.output_length` or `trainer.norm_exceeded` (the
    /// agent's decline codes).
    pub code: &'static str,
    /// What was wrong, for the partner's own log.
    pub reason: String,
}

/// What a trainer prints: its clipped sum and examples, or each example's gradient with
/// its resident for the agent to bound and clip.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TrainerOutput {
    examples: Option<u64>,
    gradient_sum: Option<Vec<f64>>,
    gradients: Option<Vec<ExampleGradient>>,
}

/// One example's gradient, unclipped, and whose it is (a pseudonym local to the partner).
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ExampleGradient {
    resident: String,
    gradient: Vec<f64>,
}

/// The output's two forms, told apart.
enum TrainerSum {
    Clipped { examples: u64, sum: Vec<f64> },
    PerExample(Vec<ExampleGradient>),
}

impl SgdPlan {
    /// Checks the plan: parameters, a finite positive clip and learning rate, the bounds,
    /// and that no encoded sum of `MAX_PARTNERS` partners can overflow.
    pub fn new(
        params: usize,
        clip: f64,
        learning_rate: f64,
        residents: ResidentBounds,
        frac_bits: u32,
    ) -> Result<Self, MechanismError> {
        residents.check()?;
        let slot = (clip * 2f64.powi(frac_bits as i32) + 1.0) * residents.max_rows as f64;
        let usable = (1..=10_000_000).contains(&params)
            && clip.is_finite()
            && clip > 0.0
            && learning_rate.is_finite()
            && learning_rate > 0.0
            && (8..=40).contains(&frac_bits)
            && slot * (MAX_PARTNERS * 2) as f64 <= i64::MAX as f64;
        if !usable {
            return Err(invalid(format!(
                "a DP-SGD job needs 1 to 10^7 parameters, a finite positive clip and learning \
                 rate, and 8 to 40 fractional bits within i64 for {} rows, got {params}, \
                 {clip}, {learning_rate} and {frac_bits}",
                residents.max_rows
            )));
        }
        Ok(Self {
            params,
            clip,
            learning_rate,
            residents,
            frac_bits,
        })
    }

    /// The most fractional bits (8 to 30) that make a valid plan (each partner's slots and
    /// `MAX_PARTNERS` of them inside i64) with an L1 sensitivity below 2^53; None if even 8
    /// do not.
    pub fn frac_bits_for(
        params: usize,
        clip: f64,
        learning_rate: f64,
        residents: ResidentBounds,
    ) -> Option<u32> {
        (8..=30u32).rev().find(|&bits| {
            Self::new(params, clip, learning_rate, residents, bits)
                .is_ok_and(|plan| plan.encoded_l1().ceil() < (1u64 << 53) as f64)
        })
    }

    fn unit(&self) -> f64 {
        2f64.powi(self.frac_bits as i32)
    }

    /// What one example adds to the examples' slot: half the clip, in fixed point, so the
    /// count costs a quarter of the gradient's privacy (its share of the L2 sensitivity).
    pub fn count_unit(&self) -> i64 {
        ((self.clip * self.unit() / 2.0).round() as i64).max(1)
    }

    /// The encoded vector's length: the gradient, then the examples.
    pub fn dims(&self) -> usize {
        self.params + 1
    }

    /// The most one example adds to a gradient slot, in fixed point (with its rounding).
    pub fn per_row_max(&self) -> u64 {
        (self.clip * self.unit()).ceil() as u64 + 1
    }

    /// Checks announced parameters before the trainer sees them: the model's length, finite,
    /// within ±[`PARAMETER_CAP`]. Public: it reads no data.
    pub fn check_parameters(&self, theta: &[f64]) -> Result<(), MechanismError> {
        if theta.len() != self.params
            || !theta
                .iter()
                .all(|t| t.is_finite() && t.abs() <= PARAMETER_CAP)
        {
            return Err(invalid(format!(
                "the announced parameters must be {} finite numbers within ±{PARAMETER_CAP}",
                self.params
            )));
        }
        Ok(())
    }

    /// Reads a trainer's output and encodes it: the gradient's slots in fixed point, then the
    /// examples × [`Self::count_unit`]. Two forms:
    ///
    /// - `{"examples": n, "gradient_sum": [numbers]}`: the trainer clipped each example;
    ///   refused if the sum is longer than `clip` × n (a trainer that clipped nothing);
    /// - `{"gradients": [{"resident": id, "gradient": [numbers]}, …]}`: each example's
    ///   gradient, which the agent clips to `clip` and rounds, keeping at most
    ///   `examples_per_resident` of one resident (the first), and adds exactly. Nothing is
    ///   then the trainer's word but which resident an example is.
    ///
    /// Refused for its shape too; a refusal names no value of the output. Examples beyond the
    /// round's bound are not refused: the round clamps the slots they overflow.
    pub fn encode_trainer_output(
        &self,
        output: &[u8],
        examples_per_resident: u32,
    ) -> Result<Vec<i64>, TrainerRefusal> {
        let unreadable = |detail: String| TrainerRefusal {
            code: "trainer.output_unreadable",
            reason: format!(
                "the trainer must print one JSON object, {{\"examples\": whole number, \
                 \"gradient_sum\": [numbers]}} or {{\"gradients\": [{{\"resident\": text, \
                 \"gradient\": [numbers]}}, …]}} ({detail})"
            ),
        };
        let out: TrainerOutput = serde_json::from_slice(output).map_err(|e| {
            // Where, not what.
            unreadable(format!(
                "{:?} error at line {} column {}",
                e.classify(),
                e.line(),
                e.column()
            ))
        })?;
        let form = match out {
            TrainerOutput {
                examples: Some(examples),
                gradient_sum: Some(sum),
                gradients: None,
            } => TrainerSum::Clipped { examples, sum },
            TrainerOutput {
                examples: None,
                gradient_sum: None,
                gradients: Some(g),
            } => TrainerSum::PerExample(g),
            _ => {
                return Err(unreadable(
                    "it printed neither form, or parts of both".into(),
                ));
            }
        };
        let wrong_length = |len: usize| TrainerRefusal {
            code: "trainer.output_length",
            reason: format!(
                "a gradient has {len} values for a model of {} parameters",
                self.params
            ),
        };
        let unit = self.unit();
        let (mut encoded, examples) = match form {
            TrainerSum::Clipped { examples, sum } => {
                if sum.len() != self.params {
                    return Err(wrong_length(sum.len()));
                }
                // Beyond any count a partner holds; keeps the count's encoding inside i64.
                let examples = examples.min(1 << 40);
                let norm = sum.iter().map(|g| g * g).sum::<f64>().sqrt();
                // A relative margin for the trainer's own floating-point sums.
                if norm > self.clip * examples as f64 * (1.0 + 1e-9) {
                    return Err(TrainerRefusal {
                        code: "trainer.norm_exceeded",
                        reason: format!(
                            "the gradient sum is longer than the clip {} times the examples: \
                             the trainer must clip each example's gradient before summing",
                            self.clip
                        ),
                    });
                }
                let encoded = sum.iter().map(|g| (g * unit).round() as i64).collect();
                (encoded, examples)
            }
            TrainerSum::PerExample(gradients) => {
                if let Some(bad) = gradients.iter().find(|e| e.gradient.len() != self.params) {
                    return Err(wrong_length(bad.gradient.len()));
                }
                let mut encoded = vec![0i64; self.params];
                let mut per_resident: std::collections::HashMap<&str, u32> = Default::default();
                let mut kept = 0u64;
                for e in &gradients {
                    let seen = per_resident.entry(e.resident.as_str()).or_default();
                    if *seen >= examples_per_resident {
                        continue;
                    }
                    *seen += 1;
                    kept += 1;
                    let norm = e.gradient.iter().map(|g| g * g).sum::<f64>().sqrt();
                    let scale = if norm > self.clip {
                        self.clip / norm
                    } else {
                        1.0
                    };
                    for (slot, g) in encoded.iter_mut().zip(&e.gradient) {
                        *slot = slot.saturating_add((g * scale * unit).round() as i64);
                    }
                }
                (encoded, kept)
            }
        };
        // Saturating: a partner's slots beyond the ring's bound are clamped by the round.
        encoded.push((examples.min(1 << 40) as i64).saturating_mul(self.count_unit()));
        Ok(encoded)
    }

    /// The L2 sensitivity of the encoded total to adding or removing one resident: their
    /// examples' clipped gradients and count, plus each slot's rounding at each partner that
    /// holds them (a partner's sums with and without them are rounded separately, at most a
    /// unit apart beyond their difference; a resident at several partners has a row at each,
    /// so `rows` counts those partners too).
    pub fn encoded_l2(&self) -> f64 {
        let rows = self.residents.rows();
        let example = (self.clip * self.unit()).hypot(self.count_unit() as f64);
        rows * (example + (self.params as f64).sqrt()) * (1.0 + 1e-12)
    }

    /// The L1 sensitivity, from the L2 one over the vector's slots.
    pub fn encoded_l1(&self) -> f64 {
        (self.dims() as f64).sqrt() * self.encoded_l2() * (1.0 + 1e-12)
    }

    /// The noisy total in real units: the gradient sum, then the examples.
    pub fn decode(&self, total: &[i64]) -> Vec<f64> {
        let unit = self.unit();
        let mut out: Vec<f64> = total
            .iter()
            .take(self.params)
            .map(|&g| g as f64 / unit)
            .collect();
        out.push(total.get(self.params).map_or(0.0, |&n| n as f64) / self.count_unit() as f64);
        out
    }

    /// One gradient step from `theta` on the decoded noisy `total`: θ − η·G / max(n, 1),
    /// each parameter brought within ±[`PARAMETER_CAP`] (a value that is not finite becomes
    /// 0), so that partners take the next round.
    pub fn step(&self, theta: &[f64], total: &[f64]) -> Vec<f64> {
        let n = total.get(self.params).copied().unwrap_or(0.0).max(1.0);
        theta
            .iter()
            .zip(total)
            .map(|(t, g)| {
                let next = t - self.learning_rate * g / n;
                if next.is_finite() {
                    next.clamp(-PARAMETER_CAP, PARAMETER_CAP)
                } else {
                    0.0
                }
            })
            .collect()
    }
}

/// A training job's model, whichever kind: what the coordinator steps and the agents check.
#[derive(Clone, Debug)]
pub enum TrainingModel {
    /// Newton steps on a logistic model's scores and information.
    Logistic(LogisticPlan),
    /// Gradient steps on partners' trainers' clipped sums.
    Sgd(SgdPlan),
}

impl TrainingModel {
    /// The iterate every job starts from: all zeros.
    pub fn initial(&self) -> Vec<f64> {
        match self {
            Self::Logistic(m) => vec![0.0; m.coefficients()],
            Self::Sgd(m) => vec![0.0; m.params],
        }
    }

    /// Checks an iterate (announced, or read back from a store) before use.
    pub fn check(&self, iterate: &[f64]) -> Result<(), MechanismError> {
        match self {
            Self::Logistic(m) => m.check_beta(iterate),
            Self::Sgd(m) => m.check_parameters(iterate),
        }
    }

    /// The fixed-point units of the summed vector.
    pub fn frac_bits(&self) -> u32 {
        match self {
            Self::Logistic(m) => m.frac_bits,
            Self::Sgd(m) => m.frac_bits,
        }
    }

    /// The noisy summed vector in real units.
    pub fn decode(&self, total: &[i64]) -> Vec<f64> {
        match self {
            Self::Logistic(m) => m.decode(total),
            Self::Sgd(m) => m.decode(total),
        }
    }

    /// The next iterate from `iterate` on the decoded `total`, whose slots carry noise of
    /// `sigma` (real units; the logistic step is damped by it).
    pub fn step(
        &self,
        iterate: &[f64],
        total: &[f64],
        sigma: f64,
    ) -> Result<Vec<f64>, MechanismError> {
        match self {
            Self::Logistic(m) => m.damped_step(iterate, total, sigma),
            Self::Sgd(m) => Ok(m.step(iterate, total)),
        }
    }

    /// An iterate as a researcher reads it: a logistic model's coefficients in raw units; a
    /// trained model's parameters as they are.
    pub fn reported(&self, iterate: &[f64]) -> Vec<f64> {
        match self {
            Self::Logistic(m) => m.unscaled(iterate),
            Self::Sgd(_) => iterate.to_vec(),
        }
    }
}

/// The area under the ROC curve of `scores` for `outcomes`: the chance that a random
/// positive scores above a random negative, ties counting a half (the Mann–Whitney
/// statistic over ranks). `None` without both outcomes, with a NaN score, or with as many
/// scores as outcomes. Exact: for synthetic or public data (a private cohort's AUC would
/// need noise of its own).
pub fn auc(scores: &[f64], outcomes: &[bool]) -> Option<f64> {
    if scores.len() != outcomes.len() || scores.iter().any(|s| s.is_nan()) {
        return None;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
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

    /// The spectral norm of a symmetric matrix: the square root of `A²`'s largest
    /// eigenvalue, by power iteration.
    fn spectral_norm(a: &[Vec<f64>]) -> f64 {
        let d = a.len();
        let times = |v: &[f64]| -> Vec<f64> {
            (0..d)
                .map(|i| (0..d).map(|j| a[i][j] * v[j]).sum())
                .collect()
        };
        let mut v: Vec<f64> = vec![1.0 / (d as f64).sqrt(); d];
        let mut norm = 0.0;
        for _ in 0..500 {
            let w = times(&times(&v));
            let size = w.iter().map(|x| x * x).sum::<f64>().sqrt();
            if size == 0.0 {
                return 0.0;
            }
            norm = size.sqrt();
            v = w.iter().map(|x| x / size).collect();
        }
        norm
    }

    #[test]
    fn the_matrix_noise_bound_holds_at_its_rate_and_is_not_far_above_the_noise() {
        // 4,000 symmetric 14 × 14 matrices with packed entries N(0, σ²), seed 7; the bound at
        // p = 0.05. Tolerance: at most 5% + 3 binomial standard deviations (1%) exceed it;
        // and it is within twice the matrices' own 95th percentile, so a bound loosened by
        // half again (as the Frobenius one is) would fail.
        let (d, sigma, p, trials) = (14, 3.0, 0.05, 4000);
        let m = d * (d + 1) / 2;
        let x = (1.0f64 / p).ln();
        let chi = sigma * (m as f64 + 2.0 * (m as f64 * x).sqrt() + 2.0 * x).sqrt();
        let bound = matrix_noise_bound(sigma, d, chi, p);
        assert!(
            bound < std::f64::consts::SQRT_2 * chi / 1.4,
            "{bound} {chi}"
        );
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(7);
        let mut gaussian = || {
            // Box–Muller.
            let (u, v) = (1.0 - uniform(&mut rng), uniform(&mut rng));
            (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
        };
        let mut norms: Vec<f64> = (0..trials)
            .map(|_| {
                let upper: Vec<f64> = (0..m).map(|_| sigma * gaussian()).collect();
                spectral_norm(&symmetric(&upper, d))
            })
            .collect();
        let above = norms.iter().filter(|n| **n > bound).count();
        assert!(
            above <= trials * 6 / 100,
            "{above} of {trials} above {bound}"
        );
        norms.sort_by(f64::total_cmp);
        let p95 = norms[trials * 95 / 100];
        assert!(bound < 2.0 * p95, "bound {bound}, 95th percentile {p95}");
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

    /// One row per resident at one partner, up to a million rows.
    const ONE: ResidentBounds = ResidentBounds {
        rows_per_resident: 1,
        partners_per_person: 1,
        max_rows: 1_000_000,
    };

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
            24,
            0.0,
            ONE,
        )
        .unwrap()
    }

    /// The L2 distance between two encoded sums.
    fn distance(a: &[i64], b: &[i64]) -> f64 {
        a.iter()
            .zip(b)
            .map(|(a, b)| ((a - b) as f64).powi(2))
            .sum::<f64>()
            .sqrt()
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
                let encoded = plan.partner_sum_encoded(&federated, rows(p)).unwrap();
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
            let base = plan.partner_sum_encoded(&beta, rows(&data)).unwrap();
            for (x, y) in &extremes {
                let one = plan.contribution(&beta, x, usize::from(*y));
                let (g, h) = one.split_at(plan.coefficients());
                let norm = |v: &[f64]| v.iter().map(|a| a * a).sum::<f64>().sqrt();
                assert!(norm(g) <= plan.gradient_l2() + 1e-12, "{g:?}");
                assert!(norm(h) <= plan.information_l2() + 1e-12, "{h:?}");
                let mut with = data.clone();
                with.push((x.clone(), *y));
                let moved = plan.partner_sum_encoded(&beta, rows(&with)).unwrap();
                let l2 = distance(&base, &moved);
                assert!(l2 <= plan.encoded_l2(), "{l2} > {}", plan.encoded_l2());
            }
        }
    }

    #[test]
    fn a_resident_with_several_rows_moves_the_sum_by_all_of_them() {
        let three = ResidentBounds {
            rows_per_resident: 3,
            ..ONE
        };
        let plan3 = LogisticPlan::new(plan().features, 2, 24, 0.0, three).unwrap();
        let data = cohort(200, 13);
        let beta = vec![-3.0, 2.0, -2.0, 1.0];
        let base = plan3.partner_sum_encoded(&beta, rows(&data)).unwrap();
        let mut with = data.clone();
        for _ in 0..3 {
            with.push((vec![100.0, 15.0, 1.0], false));
        }
        let moved = plan3.partner_sum_encoded(&beta, rows(&with)).unwrap();
        let l2 = distance(&base, &moved);
        assert!(l2 <= plan3.encoded_l2(), "{l2} > {}", plan3.encoded_l2());
        assert!(
            l2 > plan().encoded_l2() * 2.0,
            "one row's bound would not hold for three rows: {l2}"
        );
    }

    #[test]
    fn noisy_newton_at_rho_one_lands_near_the_non_private_fit() {
        // 20,000 residents, 5 iterations at ρ 0.2 each (ρ 1 for the job), discrete Gaussian
        // noise on the encoded totals, fixed seeds. Tolerance: 0.05 per coefficient in
        // scaled coordinates (σ ≈ 3.5 per sum against an information matrix of order 10³:
        // a coefficient's noise is of order 10⁻³).
        let plan = LogisticPlan::new(plan().features, 2, 16, 0.0, ONE).unwrap();
        let data = cohort(20_000, 3);
        let sigma = plan.sigma_for_rho(0.2).unwrap();
        let noise = crate::sampler::GaussianScale::at_least(sigma).unwrap();
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(99);
        let (mut exact, mut noisy) = (vec![0.0; 4], vec![0.0; 4]);
        for _ in 0..5 {
            exact = plan
                .newton_step(&exact, &plan.partner_sum(&exact, rows(&data)))
                .unwrap();
            let mut total = plan.partner_sum_encoded(&noisy, rows(&data)).unwrap();
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
        let plan = LogisticPlan::new(plan().features, 2, 16, 0.0, ONE).unwrap();
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
                let mut total = plan.partner_sum_encoded(&beta, rows(&data)).unwrap();
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

    /// A harder cohort than [`cohort`]: five features, two indicators that mostly go
    /// together (a site and the drug given for it) and one that is rare.
    fn collinear_cohort(n: usize, seed: u64) -> Vec<(Vec<f64>, bool)> {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(seed);
        let flag = |b: bool| f64::from(u8::from(b));
        (0..n)
            .map(|_| {
                let age = 18.0 + 82.0 * uniform(&mut rng);
                let egfr = 15.0 + 105.0 * uniform(&mut rng);
                let skin = uniform(&mut rng) < 0.15;
                let fluclox = if skin {
                    uniform(&mut rng) < 0.85
                } else {
                    uniform(&mut rng) < 0.03
                };
                let care_home = uniform(&mut rng) < 0.05;
                let eta = -2.0 + 0.01 * age - 0.01 * egfr - 1.0 * flag(skin)
                    + 1.2 * flag(fluclox)
                    + 0.8 * flag(care_home);
                let y = uniform(&mut rng) < sigmoid(eta);
                (
                    vec![age, egfr, flag(skin), flag(fluclox), flag(care_home)],
                    y,
                )
            })
            .collect()
    }

    /// 200 noisy fits (seeds 1000..1200) of a collinear cohort of `n` at ρ 0.1 for a job of
    /// 5 damped iterations, as the coordinator takes them: how many fits stated step
    /// intervals, how many of those covered each exact coefficient, and how many of the last
    /// step's gradient-noise intervals alone did.
    fn collinear_coverage(n: usize) -> (u32, [u32; 6], [u32; 6]) {
        let bounds = [
            (18.0, 100.0),
            (15.0, 120.0),
            (0.0, 1.0),
            (0.0, 1.0),
            (0.0, 1.0),
        ];
        let features = bounds
            .iter()
            .map(|&(lo, hi)| FeatureBounds { lo, hi })
            .collect();
        let plan = LogisticPlan::new(features, 2, 16, 1e-3, ONE).unwrap();
        let data = collinear_cohort(n, 8);
        let iterations = 5;
        let sigma_int = plan.sigma_for_rho(0.1 / f64::from(iterations)).unwrap();
        let noise = crate::sampler::GaussianScale::at_least(sigma_int).unwrap();
        let sigma = sigma_int / 2f64.powi(16);
        let mut exact = vec![0.0; 6];
        for _ in 0..25 {
            exact = plan
                .newton_step(&exact, &plan.partner_sum(&exact, rows(&data)))
                .unwrap();
        }
        let exact = plan.unscaled(&exact);
        let (mut stated, mut step_covered, mut last_covered) = (0, [0u32; 6], [0u32; 6]);
        for seed in 1000..1200 {
            let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(seed);
            let (mut beta, mut previous, mut last) = (vec![0.0; 6], vec![0.0; 6], vec![]);
            for _ in 0..iterations {
                let mut total = plan.partner_sum_encoded(&beta, rows(&data)).unwrap();
                total.iter_mut().for_each(|t| *t += noise.sample(&mut rng));
                last = plan.decode(&total);
                previous = beta.clone();
                beta = plan.damped_step(&beta, &last, sigma).unwrap();
            }
            let step: Vec<f64> = beta.iter().zip(&previous).map(|(b, p)| b - p).collect();
            let wide = plan.step_half_widths(&last, sigma, 0.95, &step).unwrap();
            let narrow = plan.noise_half_widths(&last, sigma, 0.95).unwrap();
            stated += u32::from(wide.is_some());
            for (i, (b, e)) in plan.unscaled(&beta).iter().zip(&exact).enumerate() {
                let within = |w: f64| u32::from((b - e).abs() <= w);
                step_covered[i] += wide.as_ref().map_or(0, |w| within(w[i]));
                last_covered[i] += within(narrow[i]);
            }
        }
        (stated, step_covered, last_covered)
    }

    #[test]
    fn step_intervals_are_stated_only_where_they_cover() {
        // A cohort of 1,500 is too small for ρ 0.1 in this design: the last step's gradient
        // noise alone under-covers badly (the noisy matrix keeps the steps from settling),
        // and the step intervals are withheld, but for at most 5% of fits. At 30,000 they
        // are stated in at least 90% of fits and cover at their 95% at least. Tolerance:
        // ≥ 91% of the fits that stated them (three binomial standard deviations). (They
        // are conservative: in a scan before the steps were damped they were first stated at
        // 15,000, in 20 of 200 fits, and every one stated at 1,500 to 60,000 covered.)
        let (stated, _, last) = collinear_coverage(1_500);
        assert!(stated <= 10, "stated in {stated} of 200 small fits");
        assert!(last.iter().any(|c| *c < 182), "{last:?}");
        let (stated, step, _) = collinear_coverage(30_000);
        assert!(stated >= 180, "stated in only {stated} of 200 fits");
        for (i, c) in step.iter().enumerate() {
            assert!(
                f64::from(*c) >= 0.91 * f64::from(stated),
                "coefficient {i}: {c} of {stated} cover ({step:?})"
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
            24,
            0.0,
            ONE,
        )
        .unwrap();
        assert_eq!((plan.coefficients(), plan.dims()), (6, 27));
        let data = three_classes(30_000, 17);
        let sum = |beta: &[f64], d: &[(Vec<f64>, usize)]| {
            plan.partner_sum(beta, d.iter().map(|(x, y)| (x.as_slice(), *y)))
        };
        let encoded = |beta: &[f64], d: &[(Vec<f64>, usize)]| {
            plan.partner_sum_encoded(beta, d.iter().map(|(x, y)| (x.as_slice(), *y)))
                .unwrap()
        };
        let (mut pooled, mut federated) = (vec![0.0; 6], vec![0.0; 6]);
        for _ in 0..10 {
            pooled = plan.newton_step(&pooled, &sum(&pooled, &data)).unwrap();
            let mut total = vec![0i64; plan.dims()];
            for part in data.chunks(3_750) {
                let part = encoded(&federated, part);
                total.iter_mut().zip(part).for_each(|(t, e)| *t += e);
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
    fn a_trainers_output_is_checked_encoded_and_bounded() {
        let bounds = ResidentBounds {
            rows_per_resident: 2,
            partners_per_person: 1,
            max_rows: 5,
        };
        let plan = SgdPlan::new(3, 1.0, 0.5, bounds, 16).unwrap();
        let unit: f64 = 65536.0;
        let out = |examples: u64, sum: &str| {
            format!("{{\"examples\": {examples}, \"gradient_sum\": {sum}}}").into_bytes()
        };
        // Within the clip: encoded as given, the examples in the last slot.
        let v = plan
            .encode_trainer_output(&out(2, "[0.5, -0.25, 0.5]"), 2)
            .unwrap();
        assert_eq!(
            v,
            vec![
                (0.5 * unit) as i64,
                (-0.25 * unit) as i64,
                (0.5 * unit) as i64,
                2 * plan.count_unit()
            ]
        );
        assert_eq!(plan.count_unit(), 32768);
        assert_eq!(plan.decode(&v), vec![0.5, -0.25, 0.5, 2.0]);
        // One resident's two clipped examples and their count move the encoded vector by at
        // most the sensitivity, rounding included.
        let without = plan
            .encode_trainer_output(&out(3, "[0.1, 0.2, 0.3]"), 2)
            .unwrap();
        let with = plan
            .encode_trainer_output(&out(5, "[0.7, 0.2, -1.3]"), 2)
            .unwrap();
        let moved = distance(&with, &without);
        let resident =
            ((0.6f64.powi(2) + 1.6f64.powi(2)).sqrt() * unit).hypot(2.0 * plan.count_unit() as f64);
        assert!(
            moved <= plan.encoded_l2() && moved > resident - 2.0,
            "{moved}"
        );
        // More examples than the round's bound are not refused (the round clamps the slots).
        assert!(
            plan.encode_trainer_output(&out(6, "[0.1, 0.2, 0.3]"), 2)
                .is_ok()
        );
        // Refused for its shape or an unclipped sum, naming no value.
        for (output, code) in [
            (b"[0.1, 0.2, 0.3]".to_vec(), "trainer.output_unreadable"),
            (b"".to_vec(), "trainer.output_unreadable"),
            (b"{\"examples\": 1}".to_vec(), "trainer.output_unreadable"),
            (out(1, "[0.1, null, 0.3]"), "trainer.output_unreadable"),
            (out(1, "[0.1, 1e999, 0.3]"), "trainer.output_unreadable"),
            (out(0, "[0.1, 0.2, 0.3, 0.4]"), "trainer.output_length"),
            (out(1, "[0.9, 0.2, 0.7]"), "trainer.norm_exceeded"),
            (out(0, "[0.1, 0.2, 0.3]"), "trainer.norm_exceeded"),
        ] {
            let e = plan.encode_trainer_output(&output, 2).unwrap_err();
            assert_eq!(e.code, code, "{}", String::from_utf8_lossy(&output));
            assert!(
                !e.reason.contains("0.1") && !e.reason.contains("0.9"),
                "{e}"
            );
        }
        // Each example's gradient, for the agent to clip: a resident's third example is left
        // out (two per resident here), a long one scaled to the clip, each rounded and added
        // exactly.
        let each = |examples: &[(&str, &str)]| {
            let items: Vec<String> = examples
                .iter()
                .map(|(r, g)| format!("{{\"resident\": \"{r}\", \"gradient\": {g}}}"))
                .collect();
            format!("{{\"gradients\": [{}]}}", items.join(", ")).into_bytes()
        };
        let v = plan
            .encode_trainer_output(
                &each(&[
                    ("a", "[300, 400, 0]"),
                    ("a", "[0, 0, 0.5]"),
                    ("a", "[0, 0, 1]"),
                    ("b", "[0.1, 0.2, 0.3]"),
                ]),
                2,
            )
            .unwrap();
        let enc = |x: f64| (x * unit).round() as i64;
        assert_eq!(
            v,
            vec![
                enc(0.6) + enc(0.1),
                enc(0.8) + enc(0.2),
                enc(0.5) + enc(0.3),
                3 * plan.count_unit()
            ]
        );
        // One resident with long gradients moves the vector by at most the sensitivity.
        let base = [("b", "[0.1, 0.2, 0.3]")];
        let without = plan.encode_trainer_output(&each(&base), 2).unwrap();
        let with = plan
            .encode_trainer_output(
                &each(&[
                    base[0],
                    ("x", "[9, 9, 9]"),
                    ("x", "[-9, 9, -9]"),
                    ("x", "[9, 9, 9]"),
                ]),
                2,
            )
            .unwrap();
        let moved = distance(&with, &without);
        assert!(moved <= plan.encoded_l2(), "{moved}");
        for (output, code) in [
            (each(&[("a", "[1, 2]")]), "trainer.output_length"),
            (
                b"{\"examples\": 1, \"gradient_sum\": [0, 0, 0], \"gradients\": []}".to_vec(),
                "trainer.output_unreadable",
            ),
            (b"{}".to_vec(), "trainer.output_unreadable"),
            (
                b"{\"gradients\": [{\"gradient\": [0, 0, 0]}]}".to_vec(),
                "trainer.output_unreadable",
            ),
        ] {
            let e = plan.encode_trainer_output(&output, 2).unwrap_err();
            assert_eq!(e.code, code, "{}", String::from_utf8_lossy(&output));
        }
        for (params, clip, rate) in [
            (0, 1.0, 1.0),
            (3, f64::NAN, 1.0),
            (3, 0.0, 1.0),
            (3, f64::INFINITY, 1.0),
            (3, 1.0, 0.0),
            (3, 1.0, f64::NAN),
        ] {
            assert!(SgdPlan::new(params, clip, rate, bounds, 16).is_err());
        }
        // Steps stay finite and capped; parameters the model cannot take are refused.
        assert_eq!(
            plan.step(&[0.0, 1.0, 2.0], &[2.0, -2.0, f64::NAN, 4.0]),
            vec![-0.25, 1.25, 0.0]
        );
        assert_eq!(
            plan.step(&[0.0; 3], &[1e300, 0.0, 0.0, -3.0])[0],
            -PARAMETER_CAP
        );
        assert!(plan.check_parameters(&[0.0; 3]).is_ok());
        for bad in [vec![0.0; 2], vec![f64::NAN, 0.0, 0.0], vec![2e6, 0.0, 0.0]] {
            assert!(plan.check_parameters(&bad).is_err());
        }
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
            assert!(LogisticPlan::new(features, 2, bits, ridge, ONE).is_err());
        }
        for classes in [0, 1, 17] {
            assert!(LogisticPlan::new(vec![b], classes, 24, 0.0, ONE).is_err());
        }
        // Bounds whose width overflows; a plan whose sums could overflow; no rows.
        let wide = FeatureBounds {
            lo: -1e308,
            hi: 1e308,
        };
        assert!(LogisticPlan::new(vec![wide], 2, 24, 0.0, ONE).is_err());
        assert!(LogisticPlan::new(vec![b], 2, 40, 0.0, ONE).is_err());
        let none = ResidentBounds {
            rows_per_resident: 0,
            ..ONE
        };
        assert!(LogisticPlan::new(vec![b], 2, 24, 0.0, none).is_err());
        // Coefficients from the coordinator that are not finite, too large or too few are
        // refused before any row is read.
        let plan = plan();
        let rows: [(&[f64], usize); 1] = [(&[50.0, 60.0, 1.0], 1)];
        for beta in [
            vec![f64::NAN, 0.0, 0.0, 0.0],
            vec![1e308, 1e308, 0.0, 0.0],
            vec![BETA_CAP, 1.0, 0.0, 0.0],
            vec![0.0; 3],
        ] {
            assert!(plan.partner_sum_encoded(&beta, rows).is_err(), "{beta:?}");
        }
        // A short row counts its missing features at their lower bounds.
        assert_eq!(plan.scaled(&[100.0]), vec![1.0, 1.0, -1.0, -1.0]);
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
