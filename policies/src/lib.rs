//! Governance for Civic: what may be asked of a dataset, and what it costs.
//!
//! - [`privacy`]: privacy costs held as exact integers of zCDP ρ, and the conversions from
//!   the forms a board writes caps in (ρ, pure ε, or (ε, δ)).
//! - [`dataset`]: the dataset policy (TOML, or JSON through the API): schema with public
//!   bounds and domains, partners, contribution bounds, budget, governance, disclosure control.
//! - [`budget`]: the ledger as pure state transitions: reserve, charge, refund, checked
//!   against the dataset total, the project allocation and the per-query cap in one step.
//! - [`audit`]: the hash-chained audit log's entries and their verification.
//! - [`manifest`]: the board's signed federation manifest (partners, keys, policy
//!   digests, round requirements) and approvals, verified from a trust anchor.
//! - [`query`]: the statistics a researcher may ask for and the typed filter AST, validated
//!   against a policy. No query text is ever executed.
//!
//! Pure library: no I/O, no clock. Parsing takes the text and a name for it (the file name,
//! or "request body"), so every error can say where it is.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod audit;
pub mod budget;
pub mod dataset;
pub mod disclosure;
pub mod error;
pub mod linkage;
pub mod manifest;
pub mod privacy;
pub mod query;
#[cfg(any(test, feature = "test-util"))]
pub mod samples;

pub use budget::{Ledger, ProjectId, QueryId};
pub use dataset::{Column, ColumnType, DatasetPolicy};
pub use disclosure::{Disclosed, DisclosureProfile};
pub use error::PolicyError;
pub use privacy::{MechanismChoice, PrivacyRequest, PrivacyStatement, Rho};
pub use query::{Filter, Literal, Query, Statistic, ValidatedQuery};
