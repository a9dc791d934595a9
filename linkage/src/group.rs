//! Ristretto255 for the intersection: a domain-separated hash of an identifier to the group
//! (RFC 9380's `expand_message_xmd` with SHA-512 and a Civic tag, then the Elligator map
//! `from_uniform_bytes`, as RFC 9496's `hash_to_ristretto255` does), and the checks every
//! point from a peer passes.

use curve25519_dalek::ristretto::{CompressedRistretto, RistrettoPoint};
use curve25519_dalek::scalar::Scalar;
use serde::{Deserialize, Serialize};
use sha2::Sha512;
use sha2::digest::Digest;
use sha2::digest::common::BlockSizeUser;

use crate::error::LinkError;

/// Civic's tag for hashing linkage identifiers: never shared with another protocol, so a
/// point made here means nothing anywhere else.
pub const IDENTIFIER_TAG: &[u8] = b"CIVIC-LINKAGE-V1-ristretto255_XMD:SHA-512_R255MAP_RO_";

/// RFC 9380 §5.3.1: `len` uniform bytes from the message parts (concatenated) and the tag.
///
/// `len` ≤ 255 hash outputs and the tag ≤ 255 bytes, as the RFC requires; the callers here
/// pass constants, so breaking either is a programming error.
pub fn expand_message_xmd<H: Digest + BlockSizeUser>(
    message: &[&[u8]],
    tag: &[u8],
    len: usize,
) -> Vec<u8> {
    let b_in_bytes = <H as Digest>::output_size();
    let ell = len.div_ceil(b_in_bytes);
    assert!(
        ell <= 255 && len <= 0xffff && tag.len() <= 255,
        "expand_message_xmd bounds"
    );
    let tag_prime = |h: &mut H| {
        h.update(tag);
        h.update([tag.len() as u8]);
    };

    let mut h = H::new();
    h.update(vec![0u8; H::block_size()]);
    for part in message {
        h.update(part);
    }
    h.update((len as u16).to_be_bytes());
    h.update([0u8]);
    tag_prime(&mut h);
    let b0 = h.finalize();

    let mut out = Vec::with_capacity(ell * b_in_bytes);
    let mut previous = {
        let mut h = H::new();
        h.update(&b0);
        h.update([1u8]);
        tag_prime(&mut h);
        h.finalize()
    };
    out.extend_from_slice(&previous);
    for i in 2..=ell {
        let mixed: Vec<u8> = b0.iter().zip(previous.iter()).map(|(a, b)| a ^ b).collect();
        let mut h = H::new();
        h.update(&mixed);
        h.update([i as u8]);
        tag_prime(&mut h);
        previous = h.finalize();
        out.extend_from_slice(&previous);
    }
    out.truncate(len);
    out
}

/// An arbitrary message hashed to Ristretto255 under `tag` (RFC 9496 §4.3.4's
/// `hash_to_ristretto255`: 64 bytes from `expand_message_xmd` with SHA-512, then Elligator).
pub fn hash_to_point(message: &[&[u8]], tag: &[u8]) -> RistrettoPoint {
    let uniform = expand_message_xmd::<Sha512>(message, tag, 64);
    let bytes: [u8; 64] = uniform.try_into().expect("64 bytes asked for");
    RistrettoPoint::from_uniform_bytes(&bytes)
}

/// A linkage identifier's point for one session: the session is part of the message, so the
/// same resident hashes to unrelated points in two rounds even before any blinding.
pub fn identifier_point(session: &[u8; 32], identifier: &[u8]) -> RistrettoPoint {
    let len = (identifier.len() as u64).to_be_bytes();
    hash_to_point(&[session, &len, identifier], IDENTIFIER_TAG)
}

/// A point on the wire: its canonical 32-byte encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct WirePoint(pub [u8; 32]);

impl WirePoint {
    pub fn of(point: &RistrettoPoint) -> Self {
        Self(point.compress().to_bytes())
    }

    /// The point, if the bytes are a canonical encoding of a point other than the identity
    /// (the identity raised to any secret stays the identity, so it would match itself).
    pub fn decode(&self) -> Result<RistrettoPoint, LinkError> {
        let point = CompressedRistretto(self.0)
            .decompress()
            .ok_or(LinkError::BadPoint)?;
        if point == RistrettoPoint::default() {
            return Err(LinkError::BadPoint);
        }
        Ok(point)
    }
}

/// A per-session secret exponent: never zero, never leaves its holder, wiped on drop.
pub struct Secret(Scalar);

impl Secret {
    pub fn random<R: rand_core::CryptoRng + ?Sized>(rng: &mut R) -> Self {
        loop {
            let s = Scalar::random(rng);
            if s != Scalar::ZERO {
                return Self(s);
            }
        }
    }

    pub fn scalar(&self) -> &Scalar {
        &self.0
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::Sha256;

    // RFC 9380 Appendix K.1 (expand_message_xmd, SHA-256, DST QUUX-V01-CS02-with-expander-SHA256-128).
    #[test]
    fn expand_message_xmd_meets_the_rfc_9380_vectors() {
        let tag = b"QUUX-V01-CS02-with-expander-SHA256-128";
        assert_eq!(
            hex::encode(expand_message_xmd::<Sha256>(&[b""], tag, 0x20)),
            "68a985b87eb6b46952128911f2a4412bbc302a9d759667f87f7a21d803f07235"
        );
        assert_eq!(
            hex::encode(expand_message_xmd::<Sha256>(&[b"abc"], tag, 0x20)),
            "d8ccab23b5985ccea865c6c97b6e5b8350e794e603b4b97902f53a8a0d605615"
        );
        // Split messages are the concatenation.
        assert_eq!(
            expand_message_xmd::<Sha256>(&[b"a", b"bc"], tag, 0x80),
            expand_message_xmd::<Sha256>(&[b"abc"], tag, 0x80)
        );
    }

    #[test]
    fn identifiers_hash_apart_per_session_and_per_identifier() {
        let a = identifier_point(&[1; 32], b"9434765919");
        assert_eq!(a, identifier_point(&[1; 32], b"9434765919"));
        assert_ne!(a, identifier_point(&[2; 32], b"9434765919"));
        assert_ne!(a, identifier_point(&[1; 32], b"9434765870"));
    }

    #[test]
    fn the_identity_and_non_canonical_encodings_are_refused() {
        assert_eq!(WirePoint([0; 32]).decode(), Err(LinkError::BadPoint));
        assert_eq!(WirePoint([0xff; 32]).decode(), Err(LinkError::BadPoint));
        let p = identifier_point(&[0; 32], b"x");
        assert_eq!(WirePoint::of(&p).decode(), Ok(p));
    }
}
