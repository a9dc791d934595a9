//! Civic root package.
