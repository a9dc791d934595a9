//! Secure aggregation for Civic.
//!
//! Partners hold integer vectors; the coordinator must learn only their sum over at least
//! `t` surviving partners, never one partner's vector. This crate implements the protocol of
//! Bonawitz et al., *Practical Secure Aggregation for Privacy-Preserving Machine Learning*
//! (CCS 2017), with the sparse neighbour graph of Bell et al., *Secure Single-Server
//! Aggregation with (Poly)Logarithmic Overhead* (CCS 2020) as an option.
//!
//! It is a pure library: no I/O, no clock, no globals (bar a benchmark's switch, compiled only
//! with feature `bench-unmasked`: see [`MASKING_SWITCH_COMPILED`]). Randomness is passed in as a
//! [`rand_core::CryptoRng`]; the caller decides when a phase's deadline has passed and
//! calls [`ServerRound::advance`].
//!
//! The layers, bottom up:
//! - [`ring`]: vectors over Z_{2^b}, b ∈ {32, 64}, and the choice of b that cannot wrap;
//! - [`kdf`], [`prg`], [`share_encryption`], [`shamir`]: HKDF-SHA256 key derivation, the
//!   AES-256-CTR mask generator, ChaCha20-Poly1305 for shares in transit, and Shamir sharing over
//!   the Ed25519 scalar field;
//! - [`identity`], [`graph`], [`round`]: long-term Ed25519 identities, the neighbour graph
//!   and the validated round configuration;
//! - [`messages`], [`client`], [`server`]: the typed messages and the two state machines for
//!   AdvertiseKeys → ShareKeys → MaskedInputCollection → ConsistencyCheck → Unmasking.
//!
//! Every state machine method validates its input completely before changing any state, so
//! a bad message leaves the round exactly as it was.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

#[cfg(feature = "bench-unmasked")]
pub mod baseline;
pub mod client;
pub mod commitments;
pub mod error;
pub mod graph;
pub mod identity;
pub mod kdf;
pub mod messages;
pub mod prg;
pub mod ring;
pub mod round;
pub mod server;
pub mod shamir;
pub mod share_encryption;
#[cfg(any(test, feature = "test-util"))]
pub mod testing;
mod wire;

pub use client::{ClientRound, RevealKind, RevealLog};
pub use error::SecAggError;
pub use graph::{Graph, GraphKind, Tolerances, Topology};
pub use identity::{IdentityKey, IdentityPublicKey, Roster, Signature};
pub use messages::{ClientMessage, Phase};
pub use ring::{RingVector, Width};
pub use round::{PartnerId, Requirements, RoundConfig, RoundId};
pub use server::{Aggregate, Misbehaviour, ServerOutput, ServerRound};

/// Bound into every key derivation, signature and associated-data string, so that keys and
/// signatures from another protocol, or another version of this one, are never accepted.
pub const PROTOCOL_LABEL: &[u8] = b"civic-secagg/v3";

/// Whether this build holds the benchmark's switch that turns masking off (feature
/// `bench-unmasked`). Shipped binaries assert at compile time that it does not.
pub const MASKING_SWITCH_COMPILED: bool = cfg!(feature = "bench-unmasked");
