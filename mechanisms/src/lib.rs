//! Differential-privacy mechanisms for Civic, on OpenDP's exact integer samplers.
//!
//! - [`noise`]: discrete Laplace (pure ε) and discrete Gaussian (zCDP) noise on integer
//!   vectors, calibrated from a sensitivity derived from public contribution bounds. The cost
//!   is read from OpenDP's privacy map and checked against the budget *before* sampling.
//! - [`accuracy`]: confidence-interval half-widths and their inverse (the budget a target
//!   half-width needs), through OpenDP's accuracy functions.
//! - [`accounting`]: zCDP totals reported as (ε, δ) through OpenDP's conversion.
//! - [`distributed`]: the partners' shares of discrete Gaussian noise, sized for a round's
//!   honest survivors, so the coordinator only ever unmasks a noisy sum.
//! - [`plan`], [`release`]: the vector layout of a query, and the calibrated release.
//! - [`learning`]: logistic regression by Newton steps on noisy secure sums, with each
//!   resident's contribution bounded by public feature bounds (the core of training jobs).
//! - [`pricing`]: request → calibrated plan → cost and half-widths, the one function the
//!   coordinator and every agent call.
//!
//! OpenDP's measurements are neither `Send` nor `Sync`, so they never leave the function that
//! builds them: this crate's API is plain values, callable from any thread.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod accounting;
pub mod accuracy;
pub mod distributed;
pub mod error;
pub mod learning;
mod linalg;
pub mod noise;
mod opendp_guard;
pub mod plan;
pub mod pricing;
pub mod release;
pub mod sampler;
pub mod suppression;

pub use distributed::ShareCount;
pub use error::MechanismError;
pub use noise::{NoiseKind, NoiseSpec};
pub use plan::{AggregationPlan, Block, BlockKind};
pub use pricing::{Cost, Priced, PricingContext, PricingError, price};
pub use release::{NoiseSetting, PrivacyChoice, Release, ReleasePlan, RowAccuracy};
