//! The Civic partner agent: data sources, local policy and the secagg client driver (filled by a later issue).
