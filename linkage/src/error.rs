//! What a linkage session refuses, with a stable code for each. No variant carries a data
//! value or a count derived from data: a refusal may be reported to the coordinator.

use thiserror::Error;

#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
pub enum LinkError {
    /// A message for another session (another round, pair or protocol version): a replay.
    #[error("the message belongs to another linkage session")]
    WrongSession,
    /// A list, key set or ciphertext block whose length is not the one the public
    /// parameters fix.
    #[error("a list in the message does not have the length the session's parameters fix")]
    WrongSize,
    /// Bytes that are not a canonical Ristretto255 point, or are the identity.
    #[error(
        "a point in the message is not a canonical Ristretto255 encoding of a non-identity point"
    )]
    BadPoint,
    /// The same point twice in one list: never the case for honest blinded identifiers.
    #[error("a point appears twice in one list")]
    DuplicatePoint,
    /// A Paillier modulus of the wrong size or form.
    #[error("the peer's Paillier modulus is not an odd 3070–3072-bit integer")]
    BadKey,
    /// A ciphertext outside [1, N²) (or, for the masked sums, not a unit mod N).
    #[error("a ciphertext is not an integer in [1, N²) prime to N")]
    CiphertextOutOfRange,
    /// Public parameters that cannot work (zero categories, slots wider than the plaintext,
    /// a capacity of zero, a noise scale out of range).
    #[error("the linkage parameters are not usable: {0}")]
    BadParameters(&'static str),
    /// A peer's session key not signed by the identity the manifest lists for it, for the
    /// wrong role, or a low-order point.
    #[error(
        "the peer's session key is not signed by its manifest identity, or is not a usable key"
    )]
    BadRelayKey,
    /// A relayed message that does not open: changed on the way, or made for another
    /// session, phase or direction.
    #[error("a relayed message does not open under the session's keys")]
    BadSeal,
    /// Local data over the public capacity the dataset declares for this kind of partner.
    #[error("more distinct identifiers than the dataset's declared capacity for this partner")]
    OverCapacity,
    /// The same linkage identifier twice in local data (the agent merges a resident's rows
    /// before linkage, so this is a bug or a malformed source).
    #[error("a linkage identifier appears twice in the local records")]
    DuplicateIdentifier,
    /// A local value outside the public bounds, or a category outside the public domain.
    #[error("a local value is outside the public bounds")]
    ValueOutOfRange,
}

impl LinkError {
    /// The stable code a decline or an HTTP problem carries.
    pub fn code(self) -> &'static str {
        match self {
            Self::WrongSession => "linkage.wrong_session",
            Self::WrongSize => "linkage.wrong_size",
            Self::BadPoint => "linkage.bad_point",
            Self::DuplicatePoint => "linkage.duplicate_point",
            Self::BadKey => "linkage.bad_key",
            Self::CiphertextOutOfRange => "linkage.ciphertext_out_of_range",
            Self::BadParameters(_) => "linkage.bad_parameters",
            Self::BadRelayKey => "linkage.bad_relay_key",
            Self::BadSeal => "linkage.bad_seal",
            Self::OverCapacity => "linkage.over_capacity",
            Self::DuplicateIdentifier => "linkage.duplicate_identifier",
            Self::ValueOutOfRange => "linkage.value_out_of_range",
        }
    }
}
