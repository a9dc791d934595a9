//! The mask generator: AES-256 in counter mode, keyed with a full 256-bit derived key.
//!
//! A mask of m elements over Z_{2^b} is the first m·b/8 bytes of the keystream
//! AES-256_K(0) ‖ AES-256_K(1) ‖ …, the counter a 128-bit big-endian integer from 0 (CTR
//! mode of NIST SP 800-38A with an all-zero initial counter block), read as little-endian
//! b-bit words. Each key is derived for one purpose, round and pair (see [`crate::kdf`]) and
//! expands exactly one mask, so no keystream is used twice and no nonce is needed.
//!
//! Why AES-256-CTR (since protocol `civic-secagg/v2`; v1 used ChaCha12): the masks are the
//! protocol's bulk cost, and the coordinator expands one per survivor and one per edge to a
//! dropout. With AES-NI, AES-256-CTR runs about 2× faster than ChaCha12 here (7.3 against 3.5
//! GB/s on one core; ChaCha8 would give only 1.5×, with one round of margin over the best
//! published attack, on 7 rounds). Its security: with a 256-bit key there is no multi-key
//! shortcut over the many masks a coordinator sees, and a mask of q blocks is
//! distinguishable from uniform with advantage at most q²/2^129 beyond AES's own, under
//! 2^-79 for the longest vector a round allows ([`crate::round::MAX_VECTOR_LEN`] 64-bit
//! cells, 2^25 blocks). The cost falls on partners without AES instructions (the `aes`
//! crate then runs a constant-time bitsliced AES, several times slower than ChaCha): on
//! x86-64 the instructions are detected at run time; on 64-bit ARM they are used when built
//! with `RUSTFLAGS="--cfg aes_armv8"`.

use std::num::NonZeroUsize;

use aes::Aes256;
use ctr::Ctr128BE;
use ctr::cipher::{KeyIvInit, StreamCipher, StreamCipherSeek};
use zeroize::Zeroizing;

use crate::kdf::DerivedKey;
use crate::ring::{RingVector, Width};

/// The keyed generator masks are drawn from (its key schedule is wiped on drop).
pub struct MaskPrg(Ctr128BE<Aes256>);

impl MaskPrg {
    /// The generator for one mask, at the start of its keystream.
    pub fn new(key: &[u8; 32]) -> Self {
        Self(Ctr128BE::new(key.into(), &[0u8; 16].into()))
    }

    /// Moves to byte `offset` of the keystream.
    pub fn seek(&mut self, offset: u64) {
        self.0.seek(offset);
    }

    /// Fills `buf` with the next bytes of keystream.
    pub fn fill(&mut self, buf: &mut [u8]) {
        buf.fill(0);
        self.0.apply_keystream(buf);
    }
}

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

/// A mask to apply: the key it is expanded from and whether it is added or subtracted.
pub type SignedMask<'a> = (&'a DerivedKey, Sign);

/// Adds (or subtracts) the mask keyed by `key` to `acc`, element by element, in wrapping u64
/// arithmetic. The caller reduces modulo 2^b at the end, which is exact since 2^b | 2^64.
pub fn apply_mask(acc: &mut [u64], key: &DerivedKey, width: Width, sign: Sign) {
    apply_masks(acc, &[(key, sign)], width, NonZeroUsize::MIN);
}

/// Applies every mask in `masks` to `acc`, on up to `threads` threads; the result does not
/// depend on the number of threads.
///
/// The cells are cut into one contiguous range per thread. Each range is walked in blocks of
/// [`CHUNK_BYTES`] of keystream, and every mask is applied to a block before the next, so
/// the block stays in L1 and the accumulator is read and written once, not once per mask.
/// A range's generators start at its offset in their keystreams (CTR mode is seekable), so
/// the ranges are independent. The coordinator's unmasking is n such masks over one vector,
/// which is why it can use every core.
pub fn apply_masks(acc: &mut [u64], masks: &[SignedMask<'_>], width: Width, threads: NonZeroUsize) {
    let block_cells = CHUNK_BYTES / width.bytes();
    let blocks = acc.len().div_ceil(block_cells);
    let threads = threads.get().min(blocks).max(1);
    if threads == 1 {
        apply_range(acc, 0, masks, width);
        return;
    }
    let range_cells = blocks.div_ceil(threads) * block_cells;
    std::thread::scope(|scope| {
        for (i, range) in acc.chunks_mut(range_cells).enumerate() {
            scope.spawn(move || apply_range(range, i * range_cells, masks, width));
        }
    });
}

/// Applies `masks` to the cells `first_cell..first_cell + acc.len()` of the masked vector.
fn apply_range(acc: &mut [u64], first_cell: usize, masks: &[SignedMask<'_>], width: Width) {
    let offset = (first_cell * width.bytes()) as u64;
    let mut prgs: Vec<(MaskPrg, Sign)> = masks
        .iter()
        .map(|(key, sign)| {
            let mut prg = MaskPrg::new(key.as_bytes());
            prg.seek(offset);
            (prg, *sign)
        })
        .collect();
    let mut buf = Zeroizing::new([0u8; CHUNK_BYTES]);
    for block in acc.chunks_mut(CHUNK_BYTES / width.bytes()) {
        for (prg, sign) in &mut prgs {
            match width {
                Width::W32 => apply_block::<4>(block, prg, &mut buf, *sign, |c| {
                    u64::from(u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                }),
                Width::W64 => apply_block::<8>(block, prg, &mut buf, *sign, |c| {
                    u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]])
                }),
            }
        }
    }
}

#[inline(always)]
fn apply_block<const BYTES: usize>(
    block: &mut [u64],
    prg: &mut MaskPrg,
    buf: &mut [u8; CHUNK_BYTES],
    sign: Sign,
    read: impl Fn(&[u8]) -> u64,
) {
    let bytes = &mut buf[..block.len() * BYTES];
    prg.fill(bytes);
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
    fn masks_applied_together_on_any_number_of_threads_equal_masks_applied_one_by_one() {
        let keys: Vec<DerivedKey> = (10..15).map(key).collect();
        let signs = [
            Sign::Add,
            Sign::Subtract,
            Sign::Add,
            Sign::Add,
            Sign::Subtract,
        ];
        for width in [Width::W32, Width::W64] {
            // Lengths around the block size (512 or 1024 cells) and uneven splits.
            for len in [0, 1, 511, 512, 513, 1024, 1025, 5000] {
                let start: Vec<u64> = (0..len as u64).map(|i| i * 977).collect();
                let mut one_by_one = start.clone();
                for (k, s) in keys.iter().zip(signs) {
                    apply_mask(&mut one_by_one, k, width, s);
                }
                let masks: Vec<SignedMask<'_>> = keys.iter().zip(signs).collect();
                for threads in [1, 2, 3, 8] {
                    let mut together = start.clone();
                    apply_masks(
                        &mut together,
                        &masks,
                        width,
                        NonZeroUsize::new(threads).unwrap(),
                    );
                    assert_eq!(
                        together, one_by_one,
                        "{width:?}, {len} cells, {threads} threads"
                    );
                }
            }
        }
    }

    #[test]
    fn the_keystream_is_aes256_of_a_big_endian_counter_from_zero() {
        // Known answer, from `openssl enc -aes-256-ecb -nopad -K 000102…1f` over the blocks
        // 0 and 1 (128-bit big-endian): a partner on another implementation must match it.
        let key: [u8; 32] = std::array::from_fn(|i| i as u8);
        let mut stream = [0u8; 32];
        MaskPrg::new(&key).fill(&mut stream);
        assert_eq!(
            hex::encode(stream),
            "f29000b62a499fd0a9f39a6add2e7780f05d76ae4ab99fe5a6f69b3148c2363d"
        );
        // Seeking lands mid-block.
        let mut prg = MaskPrg::new(&key);
        prg.seek(20);
        let mut tail = [0u8; 12];
        prg.fill(&mut tail);
        assert_eq!(tail, stream[20..]);
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
