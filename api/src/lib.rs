//! Wire types shared by the Civic coordinator and the partner agent.
//!
//! JSON for everything people read (researchers, boards, partner IT teams); bincode with
//! fixed-width integers for the secure-aggregation messages, whose masked vectors would be
//! four times larger as JSON arrays. Light dependencies only, so that partners do not compile
//! the server.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod governance;
pub mod problem;
pub mod query;
pub mod round;

pub use problem::Problem;

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

/// The bincode configuration of every binary body: fixed-width integers (a masked vector
/// costs exactly its words) and a length limit checked before allocation.
pub fn bincode_config() -> impl bincode::config::Config {
    bincode::config::standard()
        .with_fixed_int_encoding()
        .with_limit::<{ 1 << 30 }>()
}

/// Encodes a binary body.
pub fn encode_binary<T: serde::Serialize>(value: &T) -> Vec<u8> {
    // Serialising an in-memory value of these types cannot fail.
    bincode::serde::encode_to_vec(value, bincode_config()).unwrap_or_default()
}

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
