//! Shamir t-of-n secret sharing over the prime field of the Ed25519 scalar group,
//! Z_l with l = 2^252 + 27742317777372353535851937790883648493 (Shamir 1979).
//!
//! The secret is f(0) of a random polynomial f of degree t − 1; partner p holds f(p + 1), so
//! that no partner id ever lands on the secret's evaluation point 0. Any t shares determine f
//! and hence the secret; any t − 1 shares are independent of it.

use curve25519_dalek::Scalar;
use rand_core::CryptoRng;
use x25519_dalek::StaticSecret;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::error::SecAggError;
use crate::kdf::DerivedKey;
use crate::round::{PartnerId, RoundId};

/// A secret scalar: zeroized on drop, never printed.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct SecretScalar(Scalar);

impl std::fmt::Debug for SecretScalar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretScalar(<redacted>)")
    }
}

impl SecretScalar {
    /// A uniformly random secret.
    pub fn random<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
        Self(Scalar::random(rng))
    }

    /// Wraps a scalar.
    pub fn new(scalar: Scalar) -> Self {
        Self(scalar)
    }

    /// Parses the canonical 32-byte little-endian encoding.
    pub fn from_canonical_bytes(bytes: [u8; 32]) -> Result<Self, SecAggError> {
        Option::<Scalar>::from(Scalar::from_canonical_bytes(bytes))
            .map(Self)
            .ok_or_else(|| SecAggError::Shamir {
                reason: "a share or secret is not a canonical scalar (its value is at least the group order l)".into(),
            })
    }

    /// The scalar (for commitments and arithmetic inside this crate).
    pub(crate) fn as_scalar(&self) -> &Scalar {
        &self.0
    }

    /// The canonical encoding (used as key material: never log it).
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// The X25519 secret key this scalar encodes (how a mask key s_u^SK is shared: as the
    /// scalar whose bytes are the key).
    pub fn to_x25519(&self) -> StaticSecret {
        StaticSecret::from(*Zeroizing::new(self.0.to_bytes()))
    }

    /// The self-mask PRG key of `owner`, when this scalar is its seed b_u.
    pub fn self_mask_key(&self, round: RoundId, owner: PartnerId) -> DerivedKey {
        crate::kdf::self_mask_key(&Zeroizing::new(self.0.to_bytes()), round, owner)
    }
}

/// One partner's share of a secret.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Share {
    /// The partner holding it; the evaluation point is `holder + 1`.
    pub holder: PartnerId,
    /// f(holder + 1).
    pub value: SecretScalar,
}

/// The point x = holder + 1 at which a holder's share is the polynomial's value.
pub(crate) fn evaluation_point(holder: PartnerId) -> Scalar {
    Scalar::from(u64::from(holder.0) + 1)
}

/// Shares `secret` among `holders` so that any `threshold` of them recover it.
pub fn split<R: CryptoRng + ?Sized>(
    secret: &SecretScalar,
    threshold: usize,
    holders: &[PartnerId],
    rng: &mut R,
) -> Result<Vec<Share>, SecAggError> {
    check_split(threshold, holders)?;
    let coefficients: Vec<SecretScalar> =
        (1..threshold).map(|_| SecretScalar::random(rng)).collect();
    Ok(split_with_coefficients(secret, &coefficients, holders))
}

fn check_split(threshold: usize, holders: &[PartnerId]) -> Result<(), SecAggError> {
    if threshold == 0 || threshold > holders.len() {
        return Err(SecAggError::Shamir {
            reason: format!(
                "threshold {threshold} must be between 1 and the {} holders",
                holders.len()
            ),
        });
    }
    first_duplicate(holders.iter().copied()).map_or(Ok(()), |p| {
        Err(SecAggError::Shamir {
            reason: format!("partner {p} is listed twice as a holder"),
        })
    })
}

fn first_duplicate(ids: impl Iterator<Item = PartnerId>) -> Option<PartnerId> {
    let mut seen = std::collections::BTreeSet::new();
    ids.into_iter().find(|p| !seen.insert(*p))
}

/// Shares with the given higher coefficients a_1..a_{t−1} (threshold = coefficients + 1).
///
/// Hazardous: the coefficients must be uniformly random and secret, or the shares leak the
/// secret. It exists for known-answer tests; use [`split`].
pub fn split_with_coefficients(
    secret: &SecretScalar,
    coefficients: &[SecretScalar],
    holders: &[PartnerId],
) -> Vec<Share> {
    holders
        .iter()
        .map(|&holder| {
            let x = evaluation_point(holder);
            // Horner's rule from the highest coefficient down to the secret.
            let mut y = Scalar::ZERO;
            for c in coefficients.iter().rev() {
                y = y * x + c.0;
            }
            let value = y * x + secret.0;
            y.zeroize();
            Share {
                holder,
                value: SecretScalar(value),
            }
        })
        .collect()
}

/// Recovers a secret from at least `threshold` shares with distinct holders.
///
/// Only the first `threshold` shares are used: with more, a wrong extra share would go
/// unnoticed rather than corrupt the result.
pub fn reconstruct(shares: &[Share], threshold: usize) -> Result<SecretScalar, SecAggError> {
    if let Some(p) = first_duplicate(shares.iter().map(|s| s.holder)) {
        return Err(SecAggError::Shamir {
            reason: format!("two shares come from partner {p}"),
        });
    }
    if threshold == 0 || shares.len() < threshold {
        return Err(SecAggError::Shamir {
            reason: format!("{} shares given, {threshold} needed", shares.len()),
        });
    }
    let used = &shares[..threshold];
    let holders: Vec<PartnerId> = used.iter().map(|s| s.holder).collect();
    let lagrange = LagrangeAtZero::new(&holders)?;
    lagrange.interpolate(used.iter().map(|s| &s.value))
}

/// Lagrange coefficients at 0 for a fixed set of holders: λ_i = Π_{j≠i} x_j / (x_j − x_i).
///
/// Computing them is O(t²); applying them is O(t). A coordinator recovering many secrets from
/// the same holders computes them once.
#[derive(Clone, Debug)]
pub struct LagrangeAtZero {
    holders: Vec<PartnerId>,
    coefficients: Vec<Scalar>,
}

impl LagrangeAtZero {
    /// Coefficients for these holders, in this order.
    pub fn new(holders: &[PartnerId]) -> Result<Self, SecAggError> {
        if let Some(p) = first_duplicate(holders.iter().copied()) {
            return Err(SecAggError::Shamir {
                reason: format!("partner {p} is listed twice"),
            });
        }
        let xs: Vec<Scalar> = holders.iter().map(|&h| evaluation_point(h)).collect();
        // λ_i = Π_{j≠i} x_j / (x_j − x_i) = (Π_j x_j) / (x_i · Π_{j≠i} (x_j − x_i)): one
        // product for every numerator, and one batch inversion for all the denominators.
        let product: Scalar = xs.iter().product();
        let mut denominators: Vec<Scalar> = xs
            .iter()
            .enumerate()
            .map(|(i, xi)| {
                xs.iter()
                    .enumerate()
                    .filter(|(j, _)| *j != i)
                    .fold(*xi, |den, (_, xj)| den * (xj - xi))
            })
            .collect();
        // Distinct holders give distinct nonzero x, so every denominator is invertible.
        Scalar::invert_batch_alloc(&mut denominators);
        let coefficients = denominators.iter().map(|d| product * d).collect();
        Ok(Self {
            holders: holders.to_vec(),
            coefficients,
        })
    }

    /// The holders these coefficients are for.
    pub fn holders(&self) -> &[PartnerId] {
        &self.holders
    }

    /// Σ λ_i · y_i, with `values` in the same order as the holders.
    pub fn interpolate<'a>(
        &self,
        values: impl IntoIterator<Item = &'a SecretScalar>,
    ) -> Result<SecretScalar, SecAggError> {
        let mut sum = Scalar::ZERO;
        let mut count = 0;
        for (l, v) in self.coefficients.iter().zip(values) {
            sum += l * v.0;
            count += 1;
        }
        if count != self.coefficients.len() {
            return Err(SecAggError::Shamir {
                reason: format!(
                    "{count} share values for {} holders",
                    self.coefficients.len()
                ),
            });
        }
        Ok(SecretScalar(sum))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    fn ids(range: std::ops::Range<u32>) -> Vec<PartnerId> {
        range.map(PartnerId).collect()
    }

    #[test]
    fn any_threshold_subset_recovers_and_fewer_do_not() {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let secret = SecretScalar::random(&mut rng);
        let shares = split(&secret, 4, &ids(0..7), &mut rng).unwrap();
        for start in 0..4 {
            let subset: Vec<Share> = shares[start..start + 4].to_vec();
            assert_eq!(reconstruct(&subset, 4).unwrap(), secret);
        }
        let too_few = LagrangeAtZero::new(&ids(0..3)).unwrap();
        let guess = too_few
            .interpolate(shares[..3].iter().map(|s| &s.value))
            .unwrap();
        assert_ne!(guess, secret);
        assert!(reconstruct(&shares[..3], 4).is_err());
    }

    #[test]
    fn bad_parameters_are_refused() {
        let mut rng = ChaCha20Rng::seed_from_u64(2);
        let secret = SecretScalar::random(&mut rng);
        assert!(split(&secret, 0, &ids(0..3), &mut rng).is_err());
        assert!(split(&secret, 4, &ids(0..3), &mut rng).is_err());
        let dup = [PartnerId(1), PartnerId(1)];
        assert!(split(&secret, 1, &dup, &mut rng).is_err());
        let shares = split(&secret, 2, &ids(0..3), &mut rng).unwrap();
        let twice = vec![shares[0].clone(), shares[0].clone()];
        let err = reconstruct(&twice, 2).unwrap_err();
        assert!(
            err.to_string().contains("two shares come from partner 0"),
            "{err}"
        );
    }

    #[test]
    fn debug_never_shows_share_values() {
        let share = Share {
            holder: PartnerId(3),
            value: SecretScalar::new(Scalar::from(12345u64)),
        };
        let shown = format!("{share:?}");
        assert!(
            shown.contains("redacted") && !shown.contains("12345"),
            "{shown}"
        );
    }
}
