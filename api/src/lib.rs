//! Wire types shared by the Civic coordinator, the partner agent and any other client.
//!
//! Two parts, split by weight:
//! - always: the JSON types people and scripts read and write ([`governance`], [`query`],
//!   [`problem`] with its [`ProblemCode`]s), depending only on serde, utoipa and the pure
//!   `civic-policies`, so that a dashboard or a researcher's client compiles no cryptography;
//! - feature `protocol`: what partner agents and the coordinator exchange in rounds
//!   ([`round`], and bincode with fixed-width integers for protocol messages, whose masked
//!   vectors would be four times larger as JSON arrays), which pulls in `civic-secagg`.
//!
//! Light dependencies only, so that partners do not compile the server.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod decline;
pub mod governance;
pub mod problem;
pub mod query;
#[cfg(feature = "protocol")]
pub mod round;

pub use problem::{Problem, ProblemCode};

/// The path prefix of every versioned endpoint.
pub const API_PREFIX: &str = "/v1";

/// Who a token speaks for. Every endpoint states the roles it admits.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Creates accounts and partners.
    Admin,
    /// A governance-board member: datasets, projects, budgets, approvals, audit.
    Governance,
    /// Previews and submits queries for the projects it belongs to.
    Researcher,
    /// A partner organisation's agent.
    Partner,
}

impl Role {
    /// The name used in tokens' records and in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Governance => "governance",
            Role::Researcher => "researcher",
            Role::Partner => "partner",
        }
    }

    /// Parses [`Role::as_str`].
    pub fn parse(s: &str) -> Option<Role> {
        [
            Role::Admin,
            Role::Governance,
            Role::Researcher,
            Role::Partner,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
    }
}

#[cfg(feature = "protocol")]
/// The bincode configuration of every binary body: fixed-width integers (a masked vector
/// costs exactly its words) and a length limit checked before allocation.
pub fn bincode_config() -> impl bincode::config::Config {
    bincode::config::standard()
        .with_fixed_int_encoding()
        .with_limit::<{ 1 << 30 }>()
}

#[cfg(feature = "protocol")]
/// Encodes a binary body.
pub fn encode_binary<T: serde::Serialize>(value: &T) -> Vec<u8> {
    // Serialising an in-memory value of these types cannot fail.
    bincode::serde::encode_to_vec(value, bincode_config()).unwrap_or_default()
}

#[cfg(feature = "protocol")]
/// Decodes a binary body, refusing trailing bytes.
pub fn decode_binary<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    let (value, used) = bincode::serde::decode_from_slice(bytes, bincode_config())
        .map_err(|e| format!("not a valid message: {e}"))?;
    if used != bytes.len() {
        return Err(format!(
            "{} trailing bytes after the message",
            bytes.len() - used
        ));
    }
    Ok(value)
}
