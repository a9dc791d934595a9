//! Key derivation: HKDF-SHA256 (RFC 5869) with domain separation.
//!
//! Every key the protocol uses comes from one place:
//!
//! ```text
//! okm = HKDF-SHA256(salt = PROTOCOL_LABEL, ikm,
//!                   info = purpose || 0x00 || round_id (u64 BE) || first (u32 BE) || second (u32 BE))
//! ```
//!
//! The purpose names what the key is for, so a key derived for one use is never valid for
//! another; the round id ties it to one round; the partner pair ties it to one pair (ordered
//! for the symmetric pairwise mask, directed for share encryption). The output is the full
//! 256 bits and is used whole: never truncated.

use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::PROTOCOL_LABEL;
use crate::round::{PartnerId, RoundId};

/// What a derived key is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// The seed of the pairwise mask PRG(s_uv); pair ordered (min, max).
    PairwiseMask,
    /// The ChaCha20-Poly1305 key for shares sent from `first` to `second`.
    ShareEncryption,
    /// The seed of the self mask PRG(b_u); `first = second = u`.
    SelfMask,
}

impl Purpose {
    /// The ASCII label bound into `info`.
    pub fn label(self) -> &'static str {
        match self {
            Purpose::PairwiseMask => "pairwise-mask",
            Purpose::ShareEncryption => "share-encryption",
            Purpose::SelfMask => "self-mask",
        }
    }
}

/// A 256-bit derived key. Zeroized on drop; `Debug` never shows it.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct DerivedKey([u8; 32]);

impl std::fmt::Debug for DerivedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DerivedKey(<redacted>)")
    }
}

impl DerivedKey {
    /// The key bytes, for the cipher or PRG that consumes them.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

/// The raw derivation; the helpers below fix the pair order for each purpose.
pub fn derive(
    ikm: &[u8; 32],
    purpose: Purpose,
    round: RoundId,
    first: PartnerId,
    second: PartnerId,
) -> DerivedKey {
    let label = purpose.label().as_bytes();
    let mut info = Vec::with_capacity(label.len() + 1 + 8 + 4 + 4);
    info.extend_from_slice(label);
    info.push(0);
    info.extend_from_slice(&round.0.to_be_bytes());
    info.extend_from_slice(&first.0.to_be_bytes());
    info.extend_from_slice(&second.0.to_be_bytes());
    let mut okm = [0u8; 32];
    Hkdf::<Sha256>::new(Some(PROTOCOL_LABEL), ikm)
        .expand(&info, &mut okm)
        // 32 bytes is far below HKDF-SHA256's 255 × 32 byte limit.
        .expect("32-byte HKDF output is always valid");
    DerivedKey(okm)
}

/// The seed of the pairwise mask between `u` and `v`: the same from either side.
pub fn pairwise_mask_key(
    shared: &[u8; 32],
    round: RoundId,
    u: PartnerId,
    v: PartnerId,
) -> DerivedKey {
    derive(shared, Purpose::PairwiseMask, round, u.min(v), u.max(v))
}

/// The key for shares `sender` encrypts to `recipient`: the two directions differ, so the
/// same key and nonce never protect two messages.
pub fn share_encryption_key(
    shared: &[u8; 32],
    round: RoundId,
    sender: PartnerId,
    recipient: PartnerId,
) -> DerivedKey {
    derive(shared, Purpose::ShareEncryption, round, sender, recipient)
}

/// The seed of `owner`'s self mask, from its Shamir-shared secret b_u.
pub fn self_mask_key(secret: &[u8; 32], round: RoundId, owner: PartnerId) -> DerivedKey {
    derive(secret, Purpose::SelfMask, round, owner, owner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairwise_is_symmetric_and_share_encryption_is_directed() {
        let s = [7u8; 32];
        let (r, a, b) = (RoundId(3), PartnerId(1), PartnerId(2));
        assert_eq!(
            pairwise_mask_key(&s, r, a, b),
            pairwise_mask_key(&s, r, b, a)
        );
        assert_ne!(
            share_encryption_key(&s, r, a, b),
            share_encryption_key(&s, r, b, a)
        );
    }

    #[test]
    fn every_input_separates_the_output() {
        let s = [7u8; 32];
        let base = derive(
            &s,
            Purpose::PairwiseMask,
            RoundId(1),
            PartnerId(1),
            PartnerId(2),
        );
        assert_ne!(
            base,
            derive(
                &[8; 32],
                Purpose::PairwiseMask,
                RoundId(1),
                PartnerId(1),
                PartnerId(2)
            )
        );
        assert_ne!(
            base,
            derive(
                &s,
                Purpose::SelfMask,
                RoundId(1),
                PartnerId(1),
                PartnerId(2)
            )
        );
        assert_ne!(
            base,
            derive(
                &s,
                Purpose::PairwiseMask,
                RoundId(2),
                PartnerId(1),
                PartnerId(2)
            )
        );
        assert_ne!(
            base,
            derive(
                &s,
                Purpose::PairwiseMask,
                RoundId(1),
                PartnerId(1),
                PartnerId(3)
            )
        );
    }

    #[test]
    fn debug_does_not_print_the_key() {
        let k = derive(
            &[0xab; 32],
            Purpose::SelfMask,
            RoundId(0),
            PartnerId(0),
            PartnerId(0),
        );
        let shown = format!("{k:?}");
        assert!(!shown.contains(&format!("{:?}", k.as_bytes()[0])) || shown.contains("redacted"));
        assert_eq!(shown, "DerivedKey(<redacted>)");
    }
}
