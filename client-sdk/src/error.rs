//! What can go wrong in the agent, each naming where.

use thiserror::Error;

/// An agent error. Messages are written for a partner's IT team.
#[derive(Debug, Error)]
pub enum AgentError {
    /// The configuration file.
    #[error("{file}: {field}: {reason}")]
    Config {
        /// The file.
        file: String,
        /// The field (dotted path).
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// A source could not be opened or read.
    #[error("{source_name}: {reason}")]
    Source {
        /// The file or table.
        source_name: String,
        /// What is wrong.
        reason: String,
    },
    /// A value in the data.
    #[error("{source_name}, {at}, column {column}: {reason}")]
    Data {
        /// The file or table.
        source_name: String,
        /// The CSV file's line, or the table row.
        at: crate::source::RowAt,
        /// The local column (and its federated name).
        column: String,
        /// What is wrong (never the value itself when it is in bounds).
        reason: String,
    },
    /// The round is refused under this partner's policy or the board's manifest: the code
    /// (all the coordinator hears) and the details (for the partner's own log).
    #[error("refused ({0}): {1}")]
    Refused(crate::decline::DeclineCode, String),
    /// The coordinator answered with an error, or could not be reached.
    #[error("coordinator: {0}")]
    Coordinator(String),
    /// The protocol failed (a bad or tampered message).
    #[error("protocol: {0}")]
    Protocol(String),
    /// `run` or `once` found, before starting, what `check` reports as problems.
    #[error(
        "not starting: rounds would be declined over these problems (fix them, then confirm with \
         `civic-agent check`):\n  - {}",
        .0.join("\n  - ")
    )]
    CheckFailed(Vec<String>),
    /// The agent's own files (identity key, state).
    #[error("{path}: {reason}")]
    Local {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
}

impl AgentError {
    /// A local-file error.
    pub fn local(path: &std::path::Path, reason: impl std::fmt::Display) -> Self {
        AgentError::Local {
            path: path.display().to_string(),
            reason: reason.to_string(),
        }
    }
}
