//! The typed messages of one round, in protocol order (Bonawitz et al. 2017, §4 and Fig. 4):
//!
//! | phase | partner → coordinator | coordinator → partners |
//! |---|---|---|
//! | AdvertiseKeys | [`AdvertiseKeys`] | [`KeyRoster`] |
//! | ShareKeys | [`ShareKeys`] | [`ForwardedShares`] (one per partner) |
//! | MaskedInputCollection | [`MaskedInput`] | [`SurvivorList`] |
//! | ConsistencyCheck | [`ConsistencySignature`] | [`SignedSurvivors`] |
//! | Unmasking | [`UnmaskingShares`] | (the aggregate stays with the coordinator) |

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::commitments::PointBytes;
use crate::identity::Signature;
use crate::ring::RingVector;
use crate::round::{PartnerId, RoundId};

/// The phases of a round.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Round 0: partners publish signed X25519 public keys.
    AdvertiseKeys,
    /// Round 1: partners send Shamir shares, encrypted to each neighbour.
    ShareKeys,
    /// Round 2: partners send their masked vectors.
    MaskedInputCollection,
    /// Round 3: survivors sign the survivor list.
    ConsistencyCheck,
    /// Round 4: survivors reveal the shares that remove the masks.
    Unmasking,
    /// The aggregate has been computed.
    Finished,
    /// The round stopped without a result.
    Aborted,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::AdvertiseKeys => "AdvertiseKeys",
            Phase::ShareKeys => "ShareKeys",
            Phase::MaskedInputCollection => "MaskedInputCollection",
            Phase::ConsistencyCheck => "ConsistencyCheck",
            Phase::Unmasking => "Unmasking",
            Phase::Finished => "Finished",
            Phase::Aborted => "Aborted",
        })
    }
}

/// A partner's two round public keys and its commitments to the polynomials that will share
/// its two secrets, all signed with its identity key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdvertiseKeys {
    /// The round.
    pub round_id: RoundId,
    /// The partner.
    pub sender: PartnerId,
    /// X25519 key for encrypting shares to this partner (c_u^PK).
    #[serde(with = "crate::wire::byte_array")]
    pub encryption_public_key: [u8; 32],
    /// X25519 key for agreeing pairwise masks (s_u^PK).
    #[serde(with = "crate::wire::byte_array")]
    pub mask_public_key: [u8; 32],
    /// Feldman commitments C_0 … C_{t−1} to the polynomial sharing b_u (see
    /// [`crate::commitments`]).
    pub self_mask_commitments: Vec<PointBytes>,
    /// Feldman commitments to the polynomial sharing s_u^SK.
    pub mask_key_commitments: Vec<PointBytes>,
    /// Ed25519 over [`crate::identity::advertise_transcript`].
    pub signature: Signature,
}

/// Every partner's advertised keys, as the coordinator relays them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyRoster {
    /// The round.
    pub round_id: RoundId,
    /// One entry per partner that advertised in time (U1).
    pub keys: Vec<AdvertiseKeys>,
}

/// One partner's shares for one other partner, encrypted to it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncryptedShare {
    /// Whose secrets these are shares of (the encrypting partner).
    pub sender: PartnerId,
    /// Who can decrypt them.
    pub recipient: PartnerId,
    /// ChaCha20-Poly1305 nonce.
    #[serde(with = "crate::wire::byte_array")]
    pub nonce: [u8; 12],
    /// Ciphertext and tag.
    #[serde(with = "crate::wire::byte_vec")]
    pub ciphertext: Vec<u8>,
}

/// A partner's encrypted shares for all its neighbours.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShareKeys {
    /// The round.
    pub round_id: RoundId,
    /// The partner.
    pub sender: PartnerId,
    /// One per neighbour that advertised keys.
    pub shares: Vec<EncryptedShare>,
}

/// The shares addressed to one partner, from every partner that completed ShareKeys (U2).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardedShares {
    /// The round.
    pub round_id: RoundId,
    /// The partner they are for.
    pub recipient: PartnerId,
    /// The shares.
    pub shares: Vec<EncryptedShare>,
}

/// A partner's masked vector y_u.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaskedInput {
    /// The round.
    pub round_id: RoundId,
    /// The partner.
    pub sender: PartnerId,
    /// y_u = x_u + PRG(b_u) ± Σ PRG(s_uv).
    pub vector: RingVector,
}

/// The partners whose masked vectors arrived in time (U3).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SurvivorList {
    /// The round.
    pub round_id: RoundId,
    /// Sorted.
    pub survivors: Vec<PartnerId>,
}

/// A survivor's signature on the survivor list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsistencySignature {
    /// The round.
    pub round_id: RoundId,
    /// The signer.
    pub sender: PartnerId,
    /// Ed25519 over [`crate::identity::survivors_transcript`].
    pub signature: Signature,
}

/// The survivor list with the signatures of those who confirmed it (U4).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedSurvivors {
    /// The round.
    pub round_id: RoundId,
    /// The survivor list every signature covers.
    pub survivors: Vec<PartnerId>,
    /// (signer, signature) pairs.
    pub signatures: Vec<(PartnerId, Signature)>,
}

/// A revealed share: whose secret it is and its value (canonical scalar bytes).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevealedShare {
    /// The partner whose secret this is a share of.
    pub owner: PartnerId,
    /// The share value.
    #[serde(with = "crate::wire::byte_array")]
    pub value: [u8; 32],
}

impl fmt::Debug for RevealedShare {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RevealedShare")
            .field("owner", &self.owner)
            .finish_non_exhaustive()
    }
}

/// A survivor's reveals: for each survivor, its self-mask share; for each partner that
/// dropped after sharing, its mask-key share. Never both for one owner. A partner whose
/// shares to the sender failed its own signed commitments is listed in `refuted` instead.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnmaskingShares {
    /// The round.
    pub round_id: RoundId,
    /// The revealing partner.
    pub sender: PartnerId,
    /// Shares of b_v for v in the survivor list.
    pub self_mask_shares: Vec<RevealedShare>,
    /// Shares of s_v^SK for v that shared keys but sent no masked vector.
    pub mask_key_shares: Vec<RevealedShare>,
    /// Partners whose shares to the sender did not match their commitments: the sender holds
    /// no usable share of theirs, and says so rather than reveal a wrong one.
    pub refuted: Vec<PartnerId>,
}

/// Any partner-to-coordinator message, for transports that carry them on one channel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientMessage {
    /// Phase AdvertiseKeys.
    AdvertiseKeys(AdvertiseKeys),
    /// Phase ShareKeys.
    ShareKeys(ShareKeys),
    /// Phase MaskedInputCollection.
    MaskedInput(MaskedInput),
    /// Phase ConsistencyCheck.
    ConsistencySignature(ConsistencySignature),
    /// Phase Unmasking.
    UnmaskingShares(UnmaskingShares),
}

impl ClientMessage {
    /// The phase this message belongs to.
    pub fn phase(&self) -> Phase {
        match self {
            ClientMessage::AdvertiseKeys(_) => Phase::AdvertiseKeys,
            ClientMessage::ShareKeys(_) => Phase::ShareKeys,
            ClientMessage::MaskedInput(_) => Phase::MaskedInputCollection,
            ClientMessage::ConsistencySignature(_) => Phase::ConsistencyCheck,
            ClientMessage::UnmaskingShares(_) => Phase::Unmasking,
        }
    }

    /// The round named in the message.
    pub fn round_id(&self) -> RoundId {
        match self {
            ClientMessage::AdvertiseKeys(m) => m.round_id,
            ClientMessage::ShareKeys(m) => m.round_id,
            ClientMessage::MaskedInput(m) => m.round_id,
            ClientMessage::ConsistencySignature(m) => m.round_id,
            ClientMessage::UnmaskingShares(m) => m.round_id,
        }
    }

    /// The partner the message claims to come from.
    pub fn sender(&self) -> PartnerId {
        match self {
            ClientMessage::AdvertiseKeys(m) => m.sender,
            ClientMessage::ShareKeys(m) => m.sender,
            ClientMessage::MaskedInput(m) => m.sender,
            ClientMessage::ConsistencySignature(m) => m.sender,
            ClientMessage::UnmaskingShares(m) => m.sender,
        }
    }
}
