//! The Civic coordinator: REST API, store, rounds, budgets and audit log (filled by a later issue).
