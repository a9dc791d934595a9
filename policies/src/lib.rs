//! Governance policies and budgets (filled by a later issue).
