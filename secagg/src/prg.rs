//! The mask generator: ChaCha12 keyed with a full 256-bit derived key.
//!
//! A mask of m elements over Z_{2^b} is the first m·b/8 bytes of the ChaCha12 keystream
//! (rand_chacha's `ChaCha12Rng`, stream 0, counter from 0), read as little-endian b-bit words.
//! Each key is derived for one purpose, round and pair (see [`crate::kdf`]), so no two masks
//! share a keystream.
//!
//! Why 12 rounds: the masks are the protocol's bulk cost (a coordinator recovering dropped
//! partners regenerates one mask per lost edge), ChaCha12 runs about 1.5× faster than
//! ChaCha20 here, and the best published attacks reach 7 rounds. It is the generator behind
//! `rand`'s `StdRng` for the same reason.

use rand_chacha::ChaCha12Rng;
use rand_core::{Rng, SeedableRng};

use crate::kdf::DerivedKey;
use crate::ring::{RingVector, Width};

/// The keyed generator masks are drawn from.
pub type MaskPrg = ChaCha12Rng;

/// Whether a mask is added to or subtracted from the accumulator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sign {
    /// `acc += mask`.
    Add,
    /// `acc -= mask`.
    Subtract,
}

/// Keystream bytes per refill: big enough to amortise the call, small enough for L1.
const CHUNK_BYTES: usize = 4096;

/// Adds (or subtracts) the mask keyed by `key` to `acc`, element by element, in wrapping u64
/// arithmetic. The caller reduces modulo 2^b at the end, which is exact since 2^b | 2^64.
pub fn apply_mask(acc: &mut [u64], key: &DerivedKey, width: Width, sign: Sign) {
    let mut prg = MaskPrg::from_seed(*key.as_bytes());
    let mut buf = [0u8; CHUNK_BYTES];
    match width {
        Width::W32 => apply_words::<4>(acc, &mut prg, &mut buf, sign, |c| {
            u64::from(u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        }),
        Width::W64 => apply_words::<8>(acc, &mut prg, &mut buf, sign, |c| {
            u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]])
        }),
    }
}

#[inline(always)]
fn apply_words<const BYTES: usize>(
    acc: &mut [u64],
    prg: &mut MaskPrg,
    buf: &mut [u8; CHUNK_BYTES],
    sign: Sign,
    read: impl Fn(&[u8]) -> u64,
) {
    for block in acc.chunks_mut(CHUNK_BYTES / BYTES) {
        let bytes = &mut buf[..block.len() * BYTES];
        prg.fill_bytes(bytes);
        let words = bytes.chunks_exact(BYTES).map(&read);
        match sign {
            Sign::Add => block
                .iter_mut()
                .zip(words)
                .for_each(|(a, w)| *a = a.wrapping_add(w)),
            Sign::Subtract => block
                .iter_mut()
                .zip(words)
                .for_each(|(a, w)| *a = a.wrapping_sub(w)),
        }
    }
}

/// The mask itself as a vector (for tests and known-answer checks).
pub fn expand(key: &DerivedKey, width: Width, len: usize) -> RingVector {
    let mut words = vec![0u64; len];
    apply_mask(&mut words, key, width, Sign::Add);
    RingVector::from_unreduced(width, words)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kdf::{Purpose, derive};
    use crate::round::{PartnerId, RoundId};

    fn key(b: u8) -> DerivedKey {
        derive(
            &[b; 32],
            Purpose::SelfMask,
            RoundId(0),
            PartnerId(0),
            PartnerId(0),
        )
    }

    #[test]
    fn add_then_subtract_is_identity_across_chunk_boundaries() {
        for width in [Width::W32, Width::W64] {
            for len in [0, 1, 511, 512, 513, 1025, 3000] {
                let original: Vec<u64> = (0..len as u64).map(|i| (i * 31) & width.mask()).collect();
                let mut acc = original.clone();
                apply_mask(&mut acc, &key(1), width, Sign::Add);
                if len > 4 {
                    assert_ne!(acc, original);
                }
                apply_mask(&mut acc, &key(1), width, Sign::Subtract);
                assert_eq!(
                    RingVector::from_unreduced(width, acc).words(),
                    &original[..]
                );
            }
        }
    }

    #[test]
    fn a_longer_mask_extends_a_shorter_one() {
        let short = expand(&key(2), Width::W64, 600);
        let long = expand(&key(2), Width::W64, 1200);
        assert_eq!(&long.words()[..600], short.words());
    }

    #[test]
    fn mask_words_are_roughly_uniform() {
        // 2^16 words into 16 buckets by the top 4 bits: chi-square with 15 degrees of freedom.
        // The 99.99th percentile of chi2(15) is 44.3; a fixed key makes this deterministic.
        let v = expand(&key(3), Width::W32, 1 << 16);
        let mut counts = [0f64; 16];
        v.words()
            .iter()
            .for_each(|w| counts[(w >> 28) as usize] += 1.0);
        let expected = (1 << 16) as f64 / 16.0;
        let chi2: f64 = counts
            .iter()
            .map(|c| (c - expected).powi(2) / expected)
            .sum();
        assert!(chi2 < 44.3, "chi2 = {chi2}");
    }
}
