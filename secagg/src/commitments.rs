//! Feldman's verifiable secret sharing (Feldman, FOCS 1987) on Ristretto255, whose group
//! order is the prime l of the Shamir field in [`crate::shamir`].
//!
//! A dealer sharing f(x) = a_0 + a_1·x + … + a_{t−1}·x^{t−1} (a_0 the secret) publishes
//! C_j = a_j·G. The share y = f(x) of the holder at x is correct exactly when
//! y·G = Σ_j x^j·C_j, which anyone can check without learning y's secret.
//!
//! Why Civic needs it: the coordinator rebuilds every self-mask seed and dropped mask key from
//! t revealed shares, and one wrong share among them gives a wrong secret and a garbage sum,
//! with nothing to say who sent it. With the dealer's commitments signed in its advertisement,
//! a holder checks each share before it reveals it (a dealer's bad share is refuted, not
//! revealed), and
//! the coordinator checks each rebuilt secret against C_0, and, only when that fails, each
//! share, so it names the partner that revealed a wrong one and rebuilds from the others.
//!
//! What it reveals: C_0 = secret·G. The secrets are uniformly random scalars used only as key
//! material, and finding one from C_0 is a discrete logarithm in Ristretto255 (about 2^126
//! operations). The other C_j commit to uniformly random coefficients.
//!
//! Cost: dealing is t fixed-base multiplications per secret; checking one share is one
//! fixed-base multiplication and one t-term variable-time multi-scalar multiplication over
//! public points and public evaluation points (the share itself is multiplied in constant
//! time: before it is revealed it is a secret). A holder checks all the shares it reveals at
//! once ([`verify_batch`]): one multi-scalar multiplication over every dealer's points
//! (`cargo bench --bench secagg -- feldman`: 43 ms for 122 dealers × 86 points, against 66 ms
//! one dealer at a time). Only the polynomial whose share is revealed is parsed and checked:
//! one of each dealer's two.

use curve25519_dalek::Scalar;
use curve25519_dalek::ristretto::{CompressedRistretto, RistrettoPoint};
use curve25519_dalek::traits::VartimeMultiscalarMul;
use rand_core::CryptoRng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha512};

use crate::round::PartnerId;
use crate::shamir::{SecretScalar, Share, evaluation_point, split_with_coefficients};

/// A compressed Ristretto255 point as it travels (32 bytes).
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PointBytes(#[serde(with = "crate::wire::byte_array")] pub [u8; 32]);

impl std::fmt::Debug for PointBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PointBytes(")?;
        self.0[..4].iter().try_for_each(|b| write!(f, "{b:02x}"))?;
        write!(f, "..)")
    }
}

/// A dealer's commitments to one sharing polynomial: C_0 … C_{t−1}.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Commitments(Vec<RistrettoPoint>);

/// A secret's shares and the commitments that let their holders and the coordinator check them.
pub struct Dealing {
    /// The polynomial's higher coefficients a_1 … a_{t−1} (secret; zeroized on drop).
    coefficients: Vec<SecretScalar>,
    /// C_0 … C_{t−1}.
    pub commitments: Commitments,
}

impl Dealing {
    /// A random polynomial of degree t − 1 with `secret` at 0, and its commitments.
    pub fn new<R: CryptoRng + ?Sized>(
        secret: &SecretScalar,
        threshold: usize,
        rng: &mut R,
    ) -> Self {
        let coefficients: Vec<SecretScalar> = (1..threshold.max(1))
            .map(|_| SecretScalar::random(rng))
            .collect();
        let commitments = Commitments(
            std::iter::once(secret)
                .chain(&coefficients)
                .map(|a| RistrettoPoint::mul_base(a.as_scalar()))
                .collect(),
        );
        Self {
            coefficients,
            commitments,
        }
    }

    /// The shares of `secret` for `holders` (the secret this dealing was made for).
    pub fn shares(&self, secret: &SecretScalar, holders: &[PartnerId]) -> Vec<Share> {
        split_with_coefficients(secret, &self.coefficients, holders)
    }
}

impl Commitments {
    /// The wire form.
    pub fn to_bytes(&self) -> Vec<PointBytes> {
        self.0
            .iter()
            .map(|p| PointBytes(p.compress().to_bytes()))
            .collect()
    }

    /// Parses the wire form of commitments for threshold `threshold`; the reason names what is
    /// wrong.
    pub fn from_bytes(points: &[PointBytes], threshold: usize) -> Result<Self, String> {
        check_count(points, threshold)?;
        points
            .iter()
            .enumerate()
            .map(|(j, p)| {
                CompressedRistretto(p.0)
                    .decompress()
                    .ok_or_else(|| format!("share commitment {j} is not a Ristretto255 point"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Self)
    }

    /// Whether `share` is the dealer's polynomial at its holder's point: y·G = Σ_j x^j·C_j.
    pub fn verify_share(&self, share: &Share) -> bool {
        let (scalars, points): (Vec<Scalar>, Vec<RistrettoPoint>) =
            self.terms(share.holder, Scalar::ONE).unzip();
        RistrettoPoint::mul_base(share.value.as_scalar())
            == RistrettoPoint::vartime_multiscalar_mul(scalars, points)
    }

    /// Σ_j x^j·C_j, weighted by `weight`, as (scalar, point) terms of a multi-scalar product.
    fn terms(
        &self,
        holder: PartnerId,
        weight: Scalar,
    ) -> impl Iterator<Item = (Scalar, RistrettoPoint)> + '_ {
        let x = evaluation_point(holder);
        std::iter::successors(Some(weight), move |p| Some(p * x)).zip(self.0.iter().copied())
    }

    /// Whether `secret` is the committed one: secret·G = C_0.
    pub fn opens_to(&self, secret: &SecretScalar) -> bool {
        self.0
            .first()
            .is_some_and(|c0| RistrettoPoint::mul_base(secret.as_scalar()) == *c0)
    }
}

/// Whether there is one commitment per coefficient of a threshold-`threshold` polynomial;
/// the reason names the counts.
pub fn check_count(points: &[PointBytes], threshold: usize) -> Result<(), String> {
    if points.len() != threshold {
        return Err(format!(
            "{} share commitments for a threshold of {threshold}",
            points.len()
        ));
    }
    Ok(())
}

/// Whether every share one holder was dealt matches its dealer's commitments, in one
/// multi-scalar multiplication: Σ_i r_i·y_i·G = Σ_i r_i·Σ_j x^j·C_{i,j} with 128-bit weights
/// r_i. If any one share is wrong the sums differ except with probability 2^-128 over the
/// weights, which are derived from `weight_key`, a secret of the holder that no dealer knows
/// when it deals. False says only that some share is wrong: check them one by one to find it.
pub fn verify_batch(
    holder: PartnerId,
    dealt: &[(&Commitments, &SecretScalar)],
    weight_key: &[u8; 32],
) -> bool {
    let weights: Vec<Scalar> = (0..dealt.len() as u64)
        .map(|i| {
            let digest = Sha512::new()
                .chain_update(b"civic-feldman-batch/v1")
                .chain_update(weight_key)
                .chain_update(i.to_be_bytes())
                .finalize();
            let mut low = [0u8; 16];
            low.copy_from_slice(&digest[..16]);
            Scalar::from(u128::from_le_bytes(low))
        })
        .collect();
    let weighted_shares: Scalar = dealt
        .iter()
        .zip(&weights)
        .map(|((_, y), r)| r * y.as_scalar())
        .sum();
    let (scalars, points): (Vec<Scalar>, Vec<RistrettoPoint>) = dealt
        .iter()
        .zip(&weights)
        .flat_map(|((c, _), r)| c.terms(holder, *r))
        .unzip();
    RistrettoPoint::mul_base(&weighted_shares)
        == RistrettoPoint::vartime_multiscalar_mul(scalars, points)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shamir::reconstruct;
    use curve25519_dalek::constants::RISTRETTO_BASEPOINT_POINT as G;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    fn ids(n: u32) -> Vec<PartnerId> {
        (0..n).map(PartnerId).collect()
    }

    #[test]
    fn honest_shares_verify_and_their_secret_opens_the_commitments() {
        let mut rng = ChaCha20Rng::seed_from_u64(11);
        let secret = SecretScalar::random(&mut rng);
        let dealing = Dealing::new(&secret, 3, &mut rng);
        let shares = dealing.shares(&secret, &ids(5));
        assert!(shares.iter().all(|s| dealing.commitments.verify_share(s)));
        let rebuilt = reconstruct(&shares[1..4], 3).unwrap();
        assert_eq!(rebuilt, secret);
        assert!(dealing.commitments.opens_to(&rebuilt));
    }

    #[test]
    fn a_changed_share_or_secret_fails() {
        let mut rng = ChaCha20Rng::seed_from_u64(12);
        let secret = SecretScalar::random(&mut rng);
        let dealing = Dealing::new(&secret, 3, &mut rng);
        let mut shares = dealing.shares(&secret, &ids(4));
        // Off by one, and a correct value presented as another holder's.
        shares[1].value = SecretScalar::new(shares[1].value.as_scalar() + Scalar::ONE);
        assert!(!dealing.commitments.verify_share(&shares[1]));
        let moved = Share {
            holder: PartnerId(3),
            value: shares[0].value.clone(),
        };
        assert!(!dealing.commitments.verify_share(&moved));
        let wrong = reconstruct(&shares[..3], 3).unwrap();
        assert!(!dealing.commitments.opens_to(&wrong));
        // Another dealing's commitments refute these shares.
        let other = Dealing::new(&secret, 3, &mut rng);
        assert!(!other.commitments.verify_share(&shares[0]));
    }

    #[test]
    fn a_batch_passes_exactly_when_every_share_does() {
        let mut rng = ChaCha20Rng::seed_from_u64(15);
        let me = PartnerId(2);
        let dealings: Vec<(Dealing, SecretScalar)> = (0..6)
            .map(|_| {
                let secret = SecretScalar::random(&mut rng);
                (Dealing::new(&secret, 4, &mut rng), secret)
            })
            .collect();
        let mut mine: Vec<Share> = dealings
            .iter()
            .map(|(d, s)| d.shares(s, &[me]).remove(0))
            .collect();
        let batch = |shares: &[Share]| {
            let dealt: Vec<(&Commitments, &SecretScalar)> = dealings
                .iter()
                .zip(shares)
                .map(|((d, _), s)| (&d.commitments, &s.value))
                .collect();
            verify_batch(me, &dealt, &[9; 32])
        };
        assert!(batch(&mine));
        assert!(batch(&[]), "nothing dealt, nothing wrong");
        mine[4].value = SecretScalar::new(mine[4].value.as_scalar() + Scalar::ONE);
        assert!(!batch(&mine));
        // Two wrong shares that cancel in an unweighted sum still fail.
        mine[4].value = SecretScalar::new(mine[4].value.as_scalar() - Scalar::ONE);
        mine[1].value = SecretScalar::new(mine[1].value.as_scalar() + Scalar::ONE);
        mine[3].value = SecretScalar::new(mine[3].value.as_scalar() - Scalar::ONE);
        assert!(!batch(&mine));
    }

    #[test]
    fn the_wire_form_round_trips_and_bad_points_are_named() {
        let mut rng = ChaCha20Rng::seed_from_u64(13);
        let secret = SecretScalar::random(&mut rng);
        let dealing = Dealing::new(&secret, 4, &mut rng);
        let bytes = dealing.commitments.to_bytes();
        assert_eq!(
            Commitments::from_bytes(&bytes, 4).unwrap(),
            dealing.commitments
        );
        let err = Commitments::from_bytes(&bytes, 3).unwrap_err();
        assert!(
            err.contains("4 share commitments for a threshold of 3"),
            "{err}"
        );
        let mut bad = bytes.clone();
        bad[2] = PointBytes([0xff; 32]);
        let err = Commitments::from_bytes(&bad, 4).unwrap_err();
        assert!(err.contains("commitment 2 is not"), "{err}");
    }

    #[test]
    fn commitment_zero_is_the_secret_times_the_generator() {
        let mut rng = ChaCha20Rng::seed_from_u64(14);
        let secret = SecretScalar::new(Scalar::from(7u64));
        let dealing = Dealing::new(&secret, 2, &mut rng);
        let seven_g = G + G + G + G + G + G + G;
        assert_eq!(
            dealing.commitments.to_bytes()[0].0,
            seven_g.compress().to_bytes()
        );
    }
}
