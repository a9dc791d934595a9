//! The Civic partner agent: reads a partner's data where it lives (CSV, SQLite, PostgreSQL),
//! evaluates a query's aggregation plan locally, checks the partner's own limits, and takes
//! part in secure aggregation over HTTP. Raw rows never leave this process; only masked
//! vectors do.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod agent;
pub mod audit;
pub mod board;
pub mod check;
pub mod config;
pub mod decide;
pub use civic_api::decline;
pub mod error;
pub mod evaluate;
pub mod http;
pub mod identity;
pub mod join;
pub mod linked;
pub mod pushdown;
pub mod schema;
pub mod source;
pub mod state;
pub mod synth;
pub mod trainer;
