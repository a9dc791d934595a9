//! A linked query across many partners: one pairwise session for every (holder partner,
//! matcher partner) pair, and every partner adding the shares of the pairs it is in to the
//! vector it sends to the secure sum, in the release's layout. The sum over all partners is
//! then the table over every pair's join, plus the partners' noise shares.

use civic_policies::linkage::{HolderValue, LinkedShape};

use crate::error::LinkError;
use crate::params::{DummyNoise, Setup};
use crate::protocol::Shares;

/// The failure probability of the dummies' clamp, per query (the matcher's view is
/// δ-approximately ρ-zCDP with this δ, which pricing adds to the query's stated δ).
pub const DUMMY_DELTA: f64 = civic_policies::linkage::MATCH_COUNT_DELTA;

/// One pairwise session's two partners.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pair {
    pub holder: String,
    pub matcher: String,
}

/// Every pair a query joins: each holder partner with each matcher partner.
pub fn pairs(shape: &LinkedShape) -> Vec<Pair> {
    shape
        .holder
        .partners
        .iter()
        .flat_map(|h| {
            shape.matcher.partners.iter().map(move |m| Pair {
                holder: h.clone(),
                matcher: m.clone(),
            })
        })
        .collect()
}

/// The dummies for the policy's match-count charge: each matcher partner sees, per cell, a
/// count one resident moves by one for each holder partner holding them.
pub fn dummy_noise(shape: &LinkedShape, match_counts_rho: f64) -> Result<DummyNoise, LinkError> {
    DummyNoise::calibrate(
        match_counts_rho,
        shape.match_count_l2_squared(),
        shape.matcher_cells() as u32,
        DUMMY_DELTA,
    )
}

/// One pair's session in one round. `round` names the round (both sides read it from the
/// same announcement); the pair and the protocol version are bound in too.
pub fn setup(shape: &LinkedShape, round: &[u8], pair: &Pair, dummies: DummyNoise) -> Setup {
    let mut context = b"civic-linkage/v1".to_vec();
    for part in [round, pair.holder.as_bytes(), pair.matcher.as_bytes()] {
        context.extend_from_slice(&(part.len() as u64).to_be_bytes());
        context.extend_from_slice(part);
    }
    Setup {
        context,
        categories: shape.matcher_cells() as u32,
        width: shape.width() as u32,
        value_max: shape.value.max(),
        holder_capacity: shape.holder.capacity,
        matcher_capacity: shape.matcher.capacity,
        dummies,
    }
}

/// A holder resident's values: its value (1 for a count) in its cell's first slot and, for
/// a mean, 1 in the second.
pub fn holder_values(shape: &LinkedShape, holder_cell: usize, value: u64) -> Vec<u64> {
    let slots = shape.value.slots();
    let mut values = vec![0; shape.width()];
    match shape.value {
        HolderValue::Count => values[holder_cell] = 1,
        HolderValue::Sum { .. } => values[holder_cell] = value,
        HolderValue::Mean { .. } => {
            values[holder_cell * slots] = value;
            values[holder_cell * slots + 1] = 1;
        }
    }
    values
}

/// Adds one pair's shares to a partner's vector, laid out as the aggregation plan: a block
/// of `cells` slots per value slot (a mean's sums, then its counts), cells in the query's
/// order. Additions wrap: the sum over partners is exact mod 2⁶⁴ (and so mod the ring).
pub fn add_shares(vector: &mut [u64], shape: &LinkedShape, cells: usize, shares: &Shares) {
    let slots = shape.value.slots();
    let width = shape.width();
    for c in 0..shape.matcher_cells() {
        for h in 0..shape.holder_cells() {
            for part in 0..slots {
                let share = shares.0[c * width + h * slots + part];
                let at = part * cells + shape.release_cell(c, h);
                vector[at] = vector[at].wrapping_add(share);
            }
        }
    }
}

/// The most bytes one partner posts in one join step of a linked round of this shape: a
/// holder's offers (its padded list and ciphertexts, once per matching partner) or a
/// matcher's (its padded list, once per holding partner), with room for the encoding and
/// the seals. From public parameters only, so the coordinator can refuse at submission a
/// query whose round its message limit could not carry.
pub fn largest_post(shape: &LinkedShape, match_counts_rho: f64) -> Result<u64, LinkError> {
    use crate::paillier::{CIPHERTEXT_BYTES, MODULUS_BYTES};
    let dummies = dummy_noise(shape, match_counts_rho)?;
    let pair = Pair {
        holder: String::new(),
        matcher: String::new(),
    };
    let params = crate::Params::new(setup(shape, b"", &pair, dummies))?;
    // A point, or a ciphertext with its length prefix; a list's length prefix; the seal.
    let point = 32;
    let ciphertext = CIPHERTEXT_BYTES as u64 + 8;
    let envelope = 64 + crate::relay::SEAL_OVERHEAD as u64;
    let holder_list = params.holder_list_len() as u64;
    let holder_offer = envelope
        + MODULUS_BYTES as u64
        + holder_list * (point + params.blocks() as u64 * ciphertext);
    let returned = envelope + params.returned_len() as u64 * point;
    let matcher_offer =
        envelope + (params.categories() as u64 + u64::from(shape.matcher.capacity)) * point;
    let matchers = shape.matcher.partners.len() as u64;
    let holders = shape.holder.partners.len() as u64;
    Ok((holder_offer.max(returned) * matchers).max(matcher_offer * holders))
}
