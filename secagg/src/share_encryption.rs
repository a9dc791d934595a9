//! Shares in transit: ChaCha20-Poly1305 (RFC 8439) between two partners, through the
//! coordinator, which cannot read them.
//!
//! Key: HKDF of the X25519 secret of the two partners' encryption keys, directed from sender to
//! recipient (see [`crate::kdf::share_encryption_key`]). Nonce: 12 random bytes sent with the
//! ciphertext. Associated data: `PROTOCOL_LABEL || round_id || sender || recipient`, so a
//! ciphertext moved to another round or pair fails authentication. The plaintext repeats the
//! sender and recipient and carries the two shares: the owner's self-mask seed share and its
//! mask-key share.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};
use zeroize::Zeroizing;

use crate::PROTOCOL_LABEL;
use crate::error::SecAggError;
use crate::kdf::DerivedKey;
use crate::round::{PartnerId, RoundId};
use crate::shamir::SecretScalar;

/// Plaintext bytes: sender (4) + recipient (4) + two 32-byte shares.
pub const PLAINTEXT_LEN: usize = 4 + 4 + 32 + 32;
/// Ciphertext bytes including the 16-byte Poly1305 tag.
pub const CIPHERTEXT_LEN: usize = PLAINTEXT_LEN + 16;

/// The two shares one partner (the owner) gives another.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SharePair {
    /// Share of the owner's self-mask seed b_u.
    pub self_mask: SecretScalar,
    /// Share of the owner's mask secret key s_u^SK.
    pub mask_key: SecretScalar,
}

/// The associated data binding a ciphertext to its round and direction.
pub fn associated_data(round: RoundId, sender: PartnerId, recipient: PartnerId) -> Vec<u8> {
    let mut aad = Vec::with_capacity(PROTOCOL_LABEL.len() + 16);
    aad.extend_from_slice(PROTOCOL_LABEL);
    aad.extend_from_slice(&round.0.to_be_bytes());
    aad.extend_from_slice(&sender.0.to_be_bytes());
    aad.extend_from_slice(&recipient.0.to_be_bytes());
    aad
}

fn plaintext(sender: PartnerId, recipient: PartnerId, shares: &SharePair) -> Zeroizing<Vec<u8>> {
    let mut pt = Zeroizing::new(Vec::with_capacity(PLAINTEXT_LEN));
    pt.extend_from_slice(&sender.0.to_be_bytes());
    pt.extend_from_slice(&recipient.0.to_be_bytes());
    pt.extend_from_slice(&shares.self_mask.to_bytes());
    pt.extend_from_slice(&shares.mask_key.to_bytes());
    pt
}

/// Encrypts `shares` from `sender` to `recipient` under `key` with `nonce`.
pub fn seal(
    key: &DerivedKey,
    nonce: &[u8; 12],
    round: RoundId,
    sender: PartnerId,
    recipient: PartnerId,
    shares: &SharePair,
) -> Vec<u8> {
    let cipher = ChaCha20Poly1305::new(key.as_bytes().into());
    let pt = plaintext(sender, recipient, shares);
    let aad = associated_data(round, sender, recipient);
    cipher
        .encrypt(
            &Nonce::from(*nonce),
            Payload {
                msg: &pt,
                aad: &aad,
            },
        )
        // Encryption fails only for messages beyond 2^38 bytes; ours is 72.
        .expect("a 72-byte plaintext always encrypts")
}

/// Decrypts and checks a ciphertext: the tag, the length, and the ids inside.
pub fn open(
    key: &DerivedKey,
    nonce: &[u8; 12],
    round: RoundId,
    sender: PartnerId,
    recipient: PartnerId,
    ciphertext: &[u8],
) -> Result<SharePair, SecAggError> {
    let bad = || SecAggError::BadCiphertext {
        round,
        sender,
        recipient,
    };
    if ciphertext.len() != CIPHERTEXT_LEN {
        return Err(bad());
    }
    let cipher = ChaCha20Poly1305::new(key.as_bytes().into());
    let aad = associated_data(round, sender, recipient);
    let pt = Zeroizing::new(
        cipher
            .decrypt(
                &Nonce::from(*nonce),
                Payload {
                    msg: ciphertext,
                    aad: &aad,
                },
            )
            .map_err(|_| bad())?,
    );
    // Authenticated, so the length and ids are the sender's own; check them anyway.
    let malformed = |reason: &str| SecAggError::Malformed {
        round,
        partner: sender,
        reason: reason.to_string(),
    };
    if pt.len() != PLAINTEXT_LEN
        || pt[..4] != sender.0.to_be_bytes()
        || pt[4..8] != recipient.0.to_be_bytes()
    {
        return Err(malformed(
            "the ids inside an encrypted share do not match its envelope",
        ));
    }
    let scalar = |range: std::ops::Range<usize>| {
        let mut bytes = [0u8; 32];
        bytes.copy_from_slice(&pt[range]);
        SecretScalar::from_canonical_bytes(bytes)
            .map_err(|_| malformed("an encrypted share is not a canonical scalar"))
    };
    Ok(SharePair {
        self_mask: scalar(8..40)?,
        mask_key: scalar(40..72)?,
    })
}
