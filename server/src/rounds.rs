//! Rounds: how the coordinator runs the protocols partners take part in.
//!
//! - [`protocol`]: the interface every protocol implements, and the registry of protocols;
//! - [`secure_sum`]: secure aggregation of a sum, the protocol every statistic runs;
//! - [`linked_sum`]: a linked dataset's statistics: pairwise private joins relayed between
//!   two kinds of partner, then the secure sum of their shares;
//! - [`registry`]: the open rounds in memory;
//! - [`lease`]: which coordinator drives rounds;
//! - [`driver`]: the loop that closes steps at their deadlines, and adoption after a restart.
//!
//! Partners reach rounds through `service/partner.rs`; what a finished or failed round means
//! for its query (release and charge, or abort and refund) is `service/rounds.rs`.

pub mod driver;
pub mod lease;
pub mod linked_sum;
pub mod protocol;
pub mod registry;
pub mod secure_sum;

pub use protocol::{Closed, Protocol, ProtocolError, ProtocolRound, Protocols, RoundOutput};
pub use registry::{LiveRound, Pending, Rounds};
