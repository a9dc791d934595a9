//! Long-term partner identities: Ed25519 keys registered at onboarding.
//!
//! A partner signs its round keys (so the coordinator cannot substitute its own and sit in
//! the middle) and the survivor list (so the coordinator cannot tell different partners
//! different stories about who survived). Each signed transcript starts with the protocol
//! label and a purpose, so a signature is valid for exactly one statement.

use std::collections::BTreeMap;

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use rand_core::CryptoRng;
use serde::{Deserialize, Serialize};

use crate::PROTOCOL_LABEL;
use crate::messages::AdvertiseKeys;
use crate::round::PartnerId;

/// A partner's long-term signing key. Zeroized on drop; `Debug` shows only the public key.
pub struct IdentityKey(SigningKey);

impl std::fmt::Debug for IdentityKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("IdentityKey").field(&self.public()).finish()
    }
}

impl IdentityKey {
    /// A fresh key.
    pub fn generate<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
        Self(SigningKey::generate(rng))
    }

    /// The key from its 32-byte seed (as stored in the agent's 0600 key file).
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        Self(SigningKey::from_bytes(seed))
    }

    /// The 32-byte seed, for writing the key file. Handle as a secret.
    pub fn to_seed(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// The public key to register with the coordinator.
    pub fn public(&self) -> IdentityPublicKey {
        IdentityPublicKey(self.0.verifying_key().to_bytes())
    }

    /// Signs a message: in this crate, always one of the transcripts below.
    pub fn sign(&self, message: &[u8]) -> Signature {
        Signature(self.0.sign(message).to_bytes())
    }
}

/// A partner's registered Ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct IdentityPublicKey(#[serde(with = "crate::wire::byte_array")] pub [u8; 32]);

impl std::fmt::Debug for IdentityPublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "IdentityPublicKey(")?;
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))?;
        write!(f, ")")
    }
}

impl IdentityPublicKey {
    /// Strict Ed25519 verification (rejects small-order keys and malleable signatures).
    pub fn verify(&self, message: &[u8], signature: &Signature) -> bool {
        let Ok(key) = VerifyingKey::from_bytes(&self.0) else {
            return false;
        };
        let sig = ed25519_dalek::Signature::from_bytes(&signature.0);
        key.verify_strict(message, &sig).is_ok()
    }
}

/// An Ed25519 signature.
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Signature(#[serde(with = "crate::wire::byte_array")] pub [u8; 64]);

impl std::fmt::Debug for Signature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signature(..)")
    }
}

/// The identity keys of every partner, as the coordinator serves them and agents pin them.
pub type Roster = BTreeMap<PartnerId, IdentityPublicKey>;

/// What a partner signs when it advertises its two round public keys and its commitments to
/// the polynomials sharing its secrets. `config` is the round configuration's digest
/// ([`crate::RoundConfig::digest`]), which covers the round id.
pub fn advertise_transcript(advert: &AdvertiseKeys, config: &[u8; 32]) -> Vec<u8> {
    let mut m = transcript_header(b"advertise-keys", config);
    m.extend_from_slice(&advert.sender.0.to_be_bytes());
    m.extend_from_slice(&advert.encryption_public_key);
    m.extend_from_slice(&advert.mask_public_key);
    for points in [&advert.self_mask_commitments, &advert.mask_key_commitments] {
        m.extend_from_slice(&(points.len() as u64).to_be_bytes());
        points.iter().for_each(|p| m.extend_from_slice(&p.0));
    }
    m
}

/// What a partner signs in the consistency check: the round configuration's digest and the
/// exact survivor list.
pub fn survivors_transcript(config: &[u8; 32], survivors: &[PartnerId]) -> Vec<u8> {
    let mut m = transcript_header(b"consistency-check", config);
    m.extend_from_slice(&(survivors.len() as u64).to_be_bytes());
    survivors
        .iter()
        .for_each(|p| m.extend_from_slice(&p.0.to_be_bytes()));
    m
}

fn transcript_header(purpose: &[u8], config: &[u8; 32]) -> Vec<u8> {
    let mut m = Vec::with_capacity(128);
    m.extend_from_slice(PROTOCOL_LABEL);
    m.push(0);
    m.extend_from_slice(purpose);
    m.push(0);
    m.extend_from_slice(config);
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    #[test]
    fn signatures_bind_the_statement() {
        let mut rng = ChaCha20Rng::seed_from_u64(5);
        let key = IdentityKey::generate(&mut rng);
        let list = [PartnerId(1), PartnerId(2)];
        let sig = key.sign(&survivors_transcript(&[1; 32], &list));
        assert!(
            key.public()
                .verify(&survivors_transcript(&[1; 32], &list), &sig)
        );
        assert!(
            !key.public()
                .verify(&survivors_transcript(&[2; 32], &list), &sig)
        );
        assert!(
            !key.public()
                .verify(&survivors_transcript(&[1; 32], &list[..1]), &sig)
        );
        let other = IdentityKey::generate(&mut rng);
        assert!(
            !other
                .public()
                .verify(&survivors_transcript(&[1; 32], &list), &sig)
        );
        // A signature on one kind of statement is not valid for another.
        let advert = AdvertiseKeys {
            round_id: crate::round::RoundId(1),
            sender: PartnerId(1),
            encryption_public_key: [0; 32],
            mask_public_key: [0; 32],
            self_mask_commitments: Vec::new(),
            mask_key_commitments: Vec::new(),
            signature: Signature([0; 64]),
        };
        let adv = advertise_transcript(&advert, &[1; 32]);
        assert!(!key.public().verify(&adv, &sig));
    }

    #[test]
    fn seed_round_trips_and_debug_hides_it() {
        let mut rng = ChaCha20Rng::seed_from_u64(6);
        let key = IdentityKey::generate(&mut rng);
        let again = IdentityKey::from_seed(&key.to_seed());
        assert_eq!(key.public(), again.public());
        let shown = format!("{key:?}");
        let seed_hex: String = key.to_seed().iter().map(|b| format!("{b:02x}")).collect();
        assert!(
            !shown.contains(&seed_hex) && shown.contains("IdentityPublicKey"),
            "{shown}"
        );
    }
}
