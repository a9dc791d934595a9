//! The one error type of the governance layer.

use crate::privacy::Rho;

/// Everything a policy, a query or a budget operation can be refused for.
///
/// Each variant names where the problem is (file and field, column, project, query) and what
/// was expected; [`PolicyError::code`] gives a stable string for logs and HTTP bodies. An
/// operation that returns an error has changed nothing.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// The text is not valid TOML/JSON for a policy (syntax, unknown field, wrong type).
    #[error("{source_name}: {message}")]
    Parse {
        /// The file name, or "request body".
        source_name: String,
        /// The parser's message, with its line and column.
        message: String,
    },
    /// A field has a value the policy rules do not allow.
    #[error("{source_name}: {field}: {reason}")]
    Invalid {
        /// The file name, or "request body".
        source_name: String,
        /// The field's path, e.g. `columns[2].bins` or `budget.total`.
        field: String,
        /// What is wrong and what was expected.
        reason: String,
    },
    /// A privacy amount that is not a usable number (NaN, ≤ 0, δ ∉ (0, 1), too large).
    #[error("privacy: {reason}")]
    Privacy {
        /// What is wrong.
        reason: String,
    },
    /// A query that does not fit the dataset's schema or rules.
    #[error("query on dataset {dataset}: {field}: {reason}")]
    Query {
        /// The dataset asked.
        dataset: String,
        /// Where in the query, e.g. `statistic.column` or `filter.and[1].compare.value`.
        field: String,
        /// What is wrong and what was expected.
        reason: String,
    },
    /// A budget operation that would break a cap.
    #[error(
        "budget: {level}: spent {} + requested {} > cap {} (project {project}, dataset {dataset})",
        spent.as_f64(), requested.as_f64(), cap.as_f64()
    )]
    OverBudget {
        /// Which cap: "dataset total", "project allocation" or "per-query cap".
        level: &'static str,
        /// ρ already reserved or charged at that level.
        spent: Rho,
        /// ρ asked for.
        requested: Rho,
        /// The cap.
        cap: Rho,
        /// The project.
        project: String,
        /// The dataset.
        dataset: String,
    },
    /// An audit log that does not verify: an entry altered, removed, reordered or inserted.
    #[error("audit log: entry {seq}: {reason}")]
    Audit {
        /// The first entry that does not verify.
        seq: u64,
        /// What is wrong.
        reason: String,
    },
    /// A budget operation in the wrong state (charge without reservation, refund after charge).
    #[error("budget: query {query}: {reason}")]
    Ledger {
        /// The query.
        query: u64,
        /// What is wrong.
        reason: String,
    },
}

impl PolicyError {
    /// A stable, machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Parse { .. } => "policy.parse",
            Self::Invalid { .. } => "policy.invalid",
            Self::Privacy { .. } => "policy.privacy",
            Self::Query { .. } => "policy.query",
            Self::OverBudget { .. } => "policy.over_budget",
            Self::Ledger { .. } => "policy.ledger",
            Self::Audit { .. } => "policy.audit",
        }
    }
}
