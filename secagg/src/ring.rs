//! Vectors over the ring Z_{2^b}, b ∈ {32, 64}.
//!
//! Masked inputs, masks and sums all live here. Arithmetic wraps modulo 2^b, and a sum is
//! decoded as a signed integer in [-2^(b-1), 2^(b-1)). That is only the true sum if the true
//! sum's magnitude stays below 2^(b-1): [`Width::for_max_magnitude`] picks b from the largest
//! magnitude the plan allows and refuses layouts that could wrap.

use serde::{Deserialize, Serialize};

use crate::error::SecAggError;

/// The number of bits b of the ring Z_{2^b}.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Width {
    /// Z_{2^32}: 4 bytes per element on the wire.
    #[serde(rename = "32")]
    W32,
    /// Z_{2^64}: 8 bytes per element on the wire.
    #[serde(rename = "64")]
    W64,
}

impl Width {
    /// b.
    pub fn bits(self) -> u32 {
        match self {
            Width::W32 => 32,
            Width::W64 => 64,
        }
    }

    /// Bytes per element in the fixed-width encoding.
    pub fn bytes(self) -> usize {
        self.bits() as usize / 8
    }

    /// The largest magnitude M such that every integer in [-M, M] decodes to itself.
    pub fn max_magnitude(self) -> u64 {
        (1u64 << (self.bits() - 1)) - 1
    }

    /// All-ones in the low b bits: reducing a u64 modulo 2^b is `value & mask`.
    ///
    /// Arithmetic is done in wrapping u64 and reduced only at the edges; this is exact because
    /// 2^b divides 2^64.
    pub(crate) fn mask(self) -> u64 {
        match self {
            Width::W32 => u64::from(u32::MAX),
            Width::W64 => u64::MAX,
        }
    }

    /// The narrowest width whose signed range holds every value in [-max_abs, max_abs].
    ///
    /// `max_abs` is the largest magnitude the *aggregate* can take (all partners' worst case
    /// plus any noise tail), derived from public bounds. Beyond 2^63 - 1 nothing fits and the
    /// layout is refused.
    ///
    /// ```
    /// use civic_secagg::Width;
    /// assert_eq!(Width::for_max_magnitude(1_000).unwrap(), Width::W32);
    /// assert_eq!(Width::for_max_magnitude(1 << 31).unwrap(), Width::W64);
    /// assert!(Width::for_max_magnitude(1 << 63).is_err());
    /// ```
    pub fn for_max_magnitude(max_abs: u128) -> Result<Width, SecAggError> {
        [Width::W32, Width::W64]
            .into_iter()
            .find(|w| max_abs <= u128::from(w.max_magnitude()))
            .ok_or_else(|| SecAggError::Ring {
                reason: format!(
                    "an aggregate of magnitude up to {max_abs} could wrap even in Z_2^64 (limit {})",
                    Width::W64.max_magnitude()
                ),
            })
    }

    /// The width for a layout where each of `partners` contributes at most `per_partner_max_abs`
    /// in magnitude to a slot, plus a noise tail of at most `noise_tail` (0 without
    /// distributed noise). Overflow of the bound itself is refused, never wrapped.
    pub fn for_layout(
        per_partner_max_abs: u128,
        partners: usize,
        noise_tail: u128,
    ) -> Result<Width, SecAggError> {
        let bound = per_partner_max_abs
            .checked_mul(partners as u128)
            .and_then(|s| s.checked_add(noise_tail))
            .ok_or_else(|| SecAggError::Ring {
                reason: format!(
                    "{partners} partners × {per_partner_max_abs} + noise tail {noise_tail} overflows 128 bits"
                ),
            })?;
        Self::for_max_magnitude(bound)
    }

    /// Encodes a signed value, refusing one outside [-max_magnitude, max_magnitude].
    pub fn encode(self, value: i64) -> Result<u64, SecAggError> {
        if value.unsigned_abs() > self.max_magnitude() {
            return Err(SecAggError::Ring {
                reason: format!(
                    "value {value} does not fit in Z_2^{} (magnitude limit {})",
                    self.bits(),
                    self.max_magnitude()
                ),
            });
        }
        Ok((value as u64) & self.mask())
    }

    /// Decodes a ring element as signed: the upper half of the ring is negative.
    pub fn decode(self, word: u64) -> i64 {
        let word = word & self.mask();
        match self {
            Width::W32 => i64::from(word as u32 as i32),
            Width::W64 => word as i64,
        }
    }
}

/// A vector over Z_{2^b}. Every element is kept reduced (below 2^b).
#[derive(Clone, PartialEq, Eq)]
pub struct RingVector {
    width: Width,
    words: Vec<u64>,
}

impl std::fmt::Debug for RingVector {
    // A masked or plain vector can be large and, before masking, sensitive: show its shape only.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RingVector")
            .field("width", &self.width)
            .field("len", &self.words.len())
            .finish_non_exhaustive()
    }
}

impl RingVector {
    /// The zero vector.
    pub fn zeros(width: Width, len: usize) -> Self {
        Self {
            width,
            words: vec![0; len],
        }
    }

    /// Encodes signed values, refusing any that does not fit `width`.
    pub fn from_signed(width: Width, values: &[i64]) -> Result<Self, SecAggError> {
        let words = values
            .iter()
            .map(|&v| width.encode(v))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { width, words })
    }

    /// Takes ring elements as they are, refusing any not below 2^b.
    pub fn from_words(width: Width, words: Vec<u64>) -> Result<Self, SecAggError> {
        if let Some((i, w)) = words
            .iter()
            .enumerate()
            .find(|(_, w)| **w & !width.mask() != 0)
        {
            return Err(SecAggError::Ring {
                reason: format!("element {i} = {w} is not below 2^{}", width.bits()),
            });
        }
        Ok(Self { width, words })
    }

    /// Wraps words that may exceed 2^b, reducing them (internal: wrapping u64 arithmetic).
    pub(crate) fn from_unreduced(width: Width, mut words: Vec<u64>) -> Self {
        if width == Width::W32 {
            words.iter_mut().for_each(|w| *w &= width.mask());
        }
        Self { width, words }
    }

    /// The ring.
    pub fn width(&self) -> Width {
        self.width
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.words.len()
    }

    /// True for the empty vector.
    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    /// The elements as reduced ring words.
    pub fn words(&self) -> &[u64] {
        &self.words
    }

    /// The elements decoded as signed integers.
    pub fn to_signed(&self) -> Vec<i64> {
        self.words.iter().map(|&w| self.width.decode(w)).collect()
    }

    /// `self += other` in the ring; shapes must match.
    pub fn wrapping_add_assign(&mut self, other: &RingVector) -> Result<(), SecAggError> {
        if self.width != other.width || self.len() != other.len() {
            return Err(SecAggError::Ring {
                reason: format!(
                    "cannot add a {}-element Z_2^{} vector to a {}-element Z_2^{} vector",
                    other.len(),
                    other.width.bits(),
                    self.len(),
                    self.width.bits()
                ),
            });
        }
        add_words(&mut self.words, &other.words);
        let mask = self.width.mask();
        self.words.iter_mut().for_each(|w| *w &= mask);
        Ok(())
    }

    /// The fixed-width little-endian encoding: b/8 bytes per element, no length prefix.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len() * self.width.bytes());
        match self.width {
            Width::W32 => self
                .words
                .iter()
                .for_each(|&w| out.extend_from_slice(&(w as u32).to_le_bytes())),
            Width::W64 => self
                .words
                .iter()
                .for_each(|&w| out.extend_from_slice(&w.to_le_bytes())),
        }
        out
    }

    /// Decodes the fixed-width encoding of exactly `expected_len` elements.
    pub fn from_bytes(
        width: Width,
        expected_len: usize,
        bytes: &[u8],
    ) -> Result<Self, SecAggError> {
        let per = width.bytes();
        if bytes.len() != expected_len.saturating_mul(per) {
            return Err(SecAggError::Ring {
                reason: format!(
                    "expected {expected_len} elements of {per} bytes ({} bytes), got {} bytes",
                    expected_len.saturating_mul(per),
                    bytes.len()
                ),
            });
        }
        Ok(Self::decode_unchecked_len(width, bytes))
    }

    fn decode_unchecked_len(width: Width, bytes: &[u8]) -> Self {
        let words = match width {
            Width::W32 => bytes
                .chunks_exact(4)
                .map(|c| u64::from(u32::from_le_bytes([c[0], c[1], c[2], c[3]])))
                .collect(),
            Width::W64 => bytes
                .chunks_exact(8)
                .map(|c| u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
                .collect(),
        };
        Self { width, words }
    }
}

/// Wrapping element-wise sum in u64; the caller reduces. Kept separate so it vectorises.
pub(crate) fn add_words(acc: &mut [u64], other: &[u64]) {
    acc.iter_mut()
        .zip(other)
        .for_each(|(a, b)| *a = a.wrapping_add(*b));
}

/// On the wire a vector is its width and its fixed-width bytes (never a list of numbers).
#[derive(Serialize, Deserialize)]
#[serde(rename = "RingVector", deny_unknown_fields)]
struct RingVectorWire {
    width: Width,
    #[serde(with = "crate::wire::byte_vec")]
    bytes: Vec<u8>,
}

impl Serialize for RingVector {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        RingVectorWire {
            width: self.width,
            bytes: self.to_bytes(),
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for RingVector {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let wire = RingVectorWire::deserialize(deserializer)?;
        if wire.bytes.len() % wire.width.bytes() != 0 {
            return Err(serde::de::Error::custom(format!(
                "vector of {} bytes is not a whole number of {}-byte elements",
                wire.bytes.len(),
                wire.width.bytes()
            )));
        }
        Ok(Self::decode_unchecked_len(wire.width, &wire.bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn width_choice_is_the_narrowest_that_cannot_wrap() {
        assert_eq!(Width::for_max_magnitude(0).unwrap(), Width::W32);
        assert_eq!(Width::for_max_magnitude((1 << 31) - 1).unwrap(), Width::W32);
        assert_eq!(Width::for_max_magnitude(1 << 31).unwrap(), Width::W64);
        assert_eq!(Width::for_max_magnitude((1 << 63) - 1).unwrap(), Width::W64);
        let err = Width::for_max_magnitude(1 << 63).unwrap_err();
        assert_eq!(err.code(), "secagg.ring");
        assert!(err.to_string().contains("could wrap"), "{err}");
    }

    #[test]
    fn layout_bound_multiplies_partners_and_adds_the_noise_tail() {
        // 1000 partners × 2^22 ≈ 4.2e9, beyond the 32-bit limit 2^31 − 1 ≈ 2.1e9.
        assert_eq!(Width::for_layout(1 << 22, 1000, 0).unwrap(), Width::W64);
        assert_eq!(Width::for_layout(1 << 20, 1000, 0).unwrap(), Width::W32);
        assert_eq!(
            Width::for_layout(1 << 20, 2048, 0).unwrap(),
            Width::W64,
            "2048 × 2^20 = 2^31 exceeds 2^31 - 1"
        );
        assert!(Width::for_layout(u128::MAX, 2, 0).is_err());
        assert!(Width::for_layout(1, 1, u128::MAX).is_err());
    }

    #[test]
    fn signed_round_trip_at_the_limits() {
        for width in [Width::W32, Width::W64] {
            let m = width.max_magnitude() as i64;
            let v = RingVector::from_signed(width, &[0, 1, -1, m, -m]).unwrap();
            assert_eq!(v.to_signed(), vec![0, 1, -1, m, -m]);
        }
        assert!(RingVector::from_signed(Width::W32, &[1 << 31]).is_err());
        assert!(RingVector::from_signed(Width::W64, &[i64::MIN]).is_err());
    }

    #[test]
    fn wrapping_sum_of_signed_values_decodes_exactly() {
        let a = RingVector::from_signed(Width::W32, &[5, -7, 1_000_000]).unwrap();
        let b = RingVector::from_signed(Width::W32, &[-9, -7, 2_000_000]).unwrap();
        let mut s = a.clone();
        s.wrapping_add_assign(&b).unwrap();
        assert_eq!(s.to_signed(), vec![-4, -14, 3_000_000]);
        assert!(s.words().iter().all(|w| *w <= u64::from(u32::MAX)));
    }

    #[test]
    fn shape_mismatch_is_refused_and_changes_nothing() {
        let mut a = RingVector::from_signed(Width::W32, &[1, 2]).unwrap();
        let before = a.clone();
        assert!(
            a.wrapping_add_assign(&RingVector::zeros(Width::W32, 3))
                .is_err()
        );
        assert!(
            a.wrapping_add_assign(&RingVector::zeros(Width::W64, 2))
                .is_err()
        );
        assert_eq!(a, before);
    }

    #[test]
    fn fixed_width_bytes_round_trip_and_reject_wrong_lengths() {
        for width in [Width::W32, Width::W64] {
            let v = RingVector::from_signed(width, &[1, -2, 3]).unwrap();
            let bytes = v.to_bytes();
            assert_eq!(bytes.len(), 3 * width.bytes());
            assert_eq!(RingVector::from_bytes(width, 3, &bytes).unwrap(), v);
            assert!(RingVector::from_bytes(width, 4, &bytes).is_err());
            assert!(RingVector::from_bytes(width, 3, &bytes[1..]).is_err());
        }
        assert!(RingVector::from_words(Width::W32, vec![1 << 32]).is_err());
    }

    #[test]
    fn serde_uses_fixed_width_bytes_and_rejects_ragged_input() {
        let v = RingVector::from_signed(Width::W32, &[7, -1]).unwrap();
        let config = bincode::config::standard().with_fixed_int_encoding();
        let bytes = bincode::serde::encode_to_vec(&v, config).unwrap();
        // width tag (4) + length prefix (8) + 2 × 4 bytes.
        assert_eq!(bytes.len(), 4 + 8 + 8);
        let (back, _): (RingVector, usize) =
            bincode::serde::decode_from_slice(&bytes, config).unwrap();
        assert_eq!(back, v);
        let json = r#"{"width":"32","bytes":[1,2,3]}"#;
        let err = serde_json::from_str::<RingVector>(json).unwrap_err();
        assert!(err.to_string().contains("whole number"), "{err}");
    }
}
