//! Linked statistics for Civic (see the crate's README section in `docs/linkage.md`).
//!
//! Placeholder: the module doc is written with the protocol below.

pub mod error;
pub mod group;
pub mod paillier;
pub mod params;
pub mod protocol;
pub mod slots;

pub use error::LinkError;
pub use params::{DummyNoise, Params, Setup};
pub use protocol::{
    HolderAwaitingSums, HolderOffer, HolderRecord, HolderStarted, MaskedSums, MatcherOffer,
    MatcherOutput, MatcherRecord, MatcherStarted, Returned, Shares, holder_start, matcher_start,
};
