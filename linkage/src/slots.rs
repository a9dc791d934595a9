//! Several values in one Paillier plaintext: value j in bits [j·w, (j+1)·w), w ≤ 128. The
//! slot width leaves room for the largest sum, its mask and a carry, so slots never spill
//! into each other under homomorphic addition.

use crypto_bigint::U3072;

/// The plaintext holding `values` (each below 2^w) in consecutive w-bit slots.
pub fn pack(values: &[u128], slot_bits: u32) -> U3072 {
    let mut bytes = [0u8; 384];
    for (j, value) in values.iter().enumerate() {
        write_bits(&mut bytes, j as u32 * slot_bits, slot_bits, *value);
    }
    U3072::from_le_slice(&bytes)
}

/// The first `count` slots of a plaintext (any bits above them are ignored: in a masked sum
/// they are the mask's).
pub fn read(plaintext: &U3072, slot_bits: u32, count: usize) -> Vec<u128> {
    let bytes = plaintext.to_le_bytes();
    (0..count as u32)
        .map(|j| read_bits(bytes.as_ref(), j * slot_bits, slot_bits))
        .collect()
}

fn write_bits(bytes: &mut [u8], offset: u32, width: u32, value: u128) {
    for bit in 0..width.min(128) {
        if (value >> bit) & 1 == 1 {
            let at = offset + bit;
            bytes[(at / 8) as usize] |= 1 << (at % 8);
        }
    }
}

fn read_bits(bytes: &[u8], offset: u32, width: u32) -> u128 {
    (0..width.min(128)).fold(0u128, |acc, bit| {
        let at = offset + bit;
        let set = (bytes[(at / 8) as usize] >> (at % 8)) & 1;
        acc | (u128::from(set) << bit)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_round_trip_and_add_without_spilling() {
        let w = 55;
        let a = [1u128, (1 << 54) - 1, 0, 12345];
        let b = [2u128, 0, (1 << 53), 1];
        let packed = pack(&a, w).wrapping_add(&pack(&b, w));
        let sums: Vec<u128> = a.iter().zip(&b).map(|(x, y)| x + y).collect();
        assert_eq!(read(&packed, w, 4), sums);
    }

    #[test]
    fn bits_above_the_slots_read_are_ignored() {
        let packed = pack(&[1, 2, 3], 55);
        assert_eq!(read(&packed, 55, 2), vec![1, 2]);
    }
}
