//! End-to-end encryption of a pairwise session through the coordinator, which relays the
//! messages and must learn nothing but their lengths.
//!
//! - Each side makes an X25519 key for the session and signs it with its long-term identity
//!   key, the one the board's manifest lists, never one the coordinator supplies.
//! - HKDF-SHA256 of the shared secret, salted with the session id, gives one key per
//!   direction.
//! - Each message is ChaCha20-Poly1305 under a random nonce. Its associated data is the
//!   session, the phase and the sender's role, so a message replayed into another session,
//!   phase or direction fails to open.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};
use civic_secagg::identity::{IdentityKey, IdentityPublicKey, Signature};
use hkdf::Hkdf;
use rand_core::CryptoRng;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

use crate::error::LinkError;

const LABEL: &[u8] = b"civic-linkage/v1 relay";
/// Bytes a sealed message adds to its plaintext: the nonce and the tag.
pub const SEAL_OVERHEAD: usize = 12 + 16;

/// Which side of the session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    Holder,
    Matcher,
}

impl Role {
    fn byte(self) -> u8 {
        match self {
            Role::Holder => 1,
            Role::Matcher => 2,
        }
    }

    fn other(self) -> Role {
        match self {
            Role::Holder => Role::Matcher,
            Role::Matcher => Role::Holder,
        }
    }
}

/// The session's messages, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    HolderOffer,
    MatcherOffer,
    Returned,
    MaskedSums,
}

impl Phase {
    fn byte(self) -> u8 {
        match self {
            Phase::HolderOffer => 1,
            Phase::MatcherOffer => 2,
            Phase::Returned => 3,
            Phase::MaskedSums => 4,
        }
    }
}

/// A side's session key, signed by its identity, as sent through the coordinator.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedRelayKey {
    pub session: [u8; 32],
    pub role: Role,
    pub key: [u8; 32],
    pub signature: Signature,
}

/// A side's secret session key, until the peer's signed key arrives.
pub struct RelayKey {
    secret: StaticSecret,
    session: [u8; 32],
    role: Role,
}

/// The two directions' keys of a session.
pub struct Channel {
    send: Zeroizing<[u8; 32]>,
    receive: Zeroizing<[u8; 32]>,
    session: [u8; 32],
    role: Role,
}

fn transcript(session: &[u8; 32], role: Role, key: &[u8; 32]) -> Vec<u8> {
    let mut t = Vec::with_capacity(LABEL.len() + 65);
    t.extend_from_slice(LABEL);
    t.extend_from_slice(session);
    t.push(role.byte());
    t.extend_from_slice(key);
    t
}

impl RelayKey {
    /// A fresh key for `session`, and its signed public half for the peer.
    pub fn new<R: CryptoRng + ?Sized>(
        rng: &mut R,
        identity: &IdentityKey,
        session: [u8; 32],
        role: Role,
    ) -> (Self, SignedRelayKey) {
        let mut seed = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(seed.as_mut());
        let secret = StaticSecret::from(*seed);
        let key = PublicKey::from(&secret).to_bytes();
        let signature = identity.sign(&transcript(&session, role, &key));
        (
            Self {
                secret,
                session,
                role,
            },
            SignedRelayKey {
                session,
                role,
                key,
                signature,
            },
        )
    }

    /// The channel with the peer whose signed key this is, checked against the identity the
    /// manifest lists for it.
    pub fn channel(
        &self,
        peer: &SignedRelayKey,
        peer_identity: &IdentityPublicKey,
    ) -> Result<Channel, LinkError> {
        if peer.session != self.session {
            return Err(LinkError::WrongSession);
        }
        let signed = peer_identity.verify(
            &transcript(&peer.session, peer.role, &peer.key),
            &peer.signature,
        );
        if peer.role != self.role.other() || !signed {
            return Err(LinkError::BadRelayKey);
        }
        let shared = self.secret.diffie_hellman(&PublicKey::from(peer.key));
        if !shared.was_contributory() {
            return Err(LinkError::BadRelayKey);
        }
        let hkdf = Hkdf::<Sha256>::new(Some(&self.session), shared.as_bytes());
        let direction = |from: Role| {
            let mut key = Zeroizing::new([0u8; 32]);
            let mut info = LABEL.to_vec();
            info.push(from.byte());
            hkdf.expand(&info, key.as_mut())
                .expect("32 bytes is a valid HKDF length");
            key
        };
        Ok(Channel {
            send: direction(self.role),
            receive: direction(self.role.other()),
            session: self.session,
            role: self.role,
        })
    }
}

impl Channel {
    fn associated_data(&self, phase: Phase, sender: Role) -> Vec<u8> {
        let mut ad = LABEL.to_vec();
        ad.extend_from_slice(&self.session);
        ad.push(phase.byte());
        ad.push(sender.byte());
        ad
    }

    /// This side's message for `phase`: a random nonce, then the ciphertext and tag.
    pub fn seal<R: CryptoRng + ?Sized>(
        &self,
        rng: &mut R,
        phase: Phase,
        plaintext: &[u8],
    ) -> Vec<u8> {
        let mut nonce = [0u8; 12];
        rng.fill_bytes(&mut nonce);
        let key: &[u8; 32] = &self.send;
        let cipher = ChaCha20Poly1305::new(key.into());
        let ad = self.associated_data(phase, self.role);
        let sealed = cipher
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: plaintext,
                    aad: &ad,
                },
            )
            .expect("ChaCha20-Poly1305 encrypts any length a session produces");
        [nonce.to_vec(), sealed].concat()
    }

    /// The peer's message for `phase`, refused if it was made for another session, phase or
    /// direction, or changed on the way.
    pub fn open(&self, phase: Phase, sealed: &[u8]) -> Result<Vec<u8>, LinkError> {
        if sealed.len() < SEAL_OVERHEAD {
            return Err(LinkError::BadSeal);
        }
        let (nonce, body) = sealed.split_at(12);
        let nonce: [u8; 12] = nonce.try_into().expect("12 bytes split off");
        let key: &[u8; 32] = &self.receive;
        let cipher = ChaCha20Poly1305::new(key.into());
        let ad = self.associated_data(phase, self.role.other());
        cipher
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: body,
                    aad: &ad,
                },
            )
            .map_err(|_| LinkError::BadSeal)
    }
}

impl std::fmt::Debug for RelayKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RelayKey({:?}, ..)", self.role)
    }
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Channel({:?}, ..)", self.role)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    fn pair(session: [u8; 32]) -> (Channel, Channel, IdentityKey) {
        let mut rng = ChaCha20Rng::seed_from_u64(5);
        let (h_id, m_id) = (
            IdentityKey::generate(&mut rng),
            IdentityKey::generate(&mut rng),
        );
        let (h, h_signed) = RelayKey::new(&mut rng, &h_id, session, Role::Holder);
        let (m, m_signed) = RelayKey::new(&mut rng, &m_id, session, Role::Matcher);
        let hc = h.channel(&m_signed, &m_id.public()).unwrap();
        let mc = m.channel(&h_signed, &h_id.public()).unwrap();
        (hc, mc, h_id)
    }

    #[test]
    fn messages_open_only_in_their_session_phase_and_direction() {
        let mut rng = ChaCha20Rng::seed_from_u64(6);
        let (holder, matcher, _) = pair([1; 32]);
        let sealed = holder.seal(&mut rng, Phase::HolderOffer, b"offer");
        assert_eq!(sealed.len(), 5 + SEAL_OVERHEAD);
        assert_eq!(matcher.open(Phase::HolderOffer, &sealed).unwrap(), b"offer");
        // Replayed as another phase, or back to its sender, or changed: refused.
        assert_eq!(
            matcher.open(Phase::Returned, &sealed),
            Err(LinkError::BadSeal)
        );
        assert_eq!(
            holder.open(Phase::HolderOffer, &sealed),
            Err(LinkError::BadSeal)
        );
        let mut changed = sealed.clone();
        changed[20] ^= 1;
        assert_eq!(
            matcher.open(Phase::HolderOffer, &changed),
            Err(LinkError::BadSeal)
        );
        assert_eq!(
            matcher.open(Phase::HolderOffer, &sealed[..10]),
            Err(LinkError::BadSeal)
        );
        // Another session's channel (same identities, fresh keys) cannot open it.
        let (_, other_matcher, _) = pair([2; 32]);
        assert_eq!(
            other_matcher.open(Phase::HolderOffer, &sealed),
            Err(LinkError::BadSeal)
        );
    }

    #[test]
    fn a_key_not_signed_by_the_manifests_identity_is_refused() {
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        let session = [3; 32];
        let (h_id, m_id) = (
            IdentityKey::generate(&mut rng),
            IdentityKey::generate(&mut rng),
        );
        let coordinator = IdentityKey::generate(&mut rng);
        let (h, _) = RelayKey::new(&mut rng, &h_id, session, Role::Holder);
        // The coordinator substitutes its own key, signed by itself.
        let (_, forged) = RelayKey::new(&mut rng, &coordinator, session, Role::Matcher);
        assert_eq!(
            h.channel(&forged, &m_id.public()).err(),
            Some(LinkError::BadRelayKey)
        );
        // A genuine key for the wrong role, or another session.
        let (_, same_role) = RelayKey::new(&mut rng, &m_id, session, Role::Holder);
        assert_eq!(
            h.channel(&same_role, &m_id.public()).err(),
            Some(LinkError::BadRelayKey)
        );
        let (_, elsewhere) = RelayKey::new(&mut rng, &m_id, [4; 32], Role::Matcher);
        assert_eq!(
            h.channel(&elsewhere, &m_id.public()).err(),
            Some(LinkError::WrongSession)
        );
        // A low-order point instead of a key.
        let (_, mut weak) = RelayKey::new(&mut rng, &m_id, session, Role::Matcher);
        weak.key = [0; 32];
        weak.signature = m_id.sign(&transcript(&session, Role::Matcher, &weak.key));
        assert_eq!(
            h.channel(&weak, &m_id.public()).err(),
            Some(LinkError::BadRelayKey)
        );
    }
}
