//! The public parameters of one pairwise linkage session, which both sides derive from the
//! round and the plan, and the slot layout and list sizes they fix.

use rand_core::Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::LinkError;
use crate::paillier::MIN_MODULUS_BITS;

/// A slot's headroom above the largest sum: a carry out of a slot (which would put one cell
/// of the shares off) happens with probability below 2⁻⁴⁰ under a uniform mask.
pub const MASK_SECURITY_BITS: u32 = 40;
/// Plaintext bits every key accepted by this crate offers (N ≥ 2³⁰⁷⁰, less two).
pub const PLAINTEXT_BITS: u32 = MIN_MODULUS_BITS - 2;
/// The widest sum a slot may hold (so that a slot with its mask fits in 128 bits).
pub const MAX_SUM_BITS: u32 = 80;
/// Cells per session (categories × values), a bound that keeps a malformed plan from
/// asking for gigabytes of ciphertexts.
pub const MAX_CELLS: u64 = 1 << 16;
/// The largest message a session may make (the holder's list).
pub const MAX_MESSAGE_BYTES: u64 = 1 << 32;
/// The most scalar multiplications matching may take (holder entries × matcher cells).
pub const MAX_MATCHING_WORK: u64 = 1 << 30;
/// Records per side: the policy's own bound on a side's capacity.
pub const MAX_CAPACITY: u32 = civic_policies::linkage::MAX_CAPACITY;

/// The dummy matches the holder adds so that the counts the matcher sees are noisy: per
/// category, D = clamp(shift + Z, 0, 2·shift) dummies with Z ~ N_Z(0, σ²).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct DummyNoise {
    pub sigma: f64,
    pub shift: u32,
}

impl DummyNoise {
    /// σ for a ρ-zCDP view of counts whose L2 sensitivity squared is `l2_squared` (one
    /// resident moves one count by one in each of up to `l2_squared` sessions), and the
    /// shift that keeps the clamp from mattering. A neighbour shifts a count by one, so the
    /// clamp can tell neighbours apart only when |Z| ≥ shift − 1, for one of the
    /// `categories` counts of one of the `l2_squared` sessions. The discrete Gaussian's tail
    /// (P[|Z| ≥ t] ≤ 2·exp(−t²/2σ²), Canonne, Kamath and Steinke 2020) with a union bound
    /// over those counts puts that below `delta`. The view is then δ-approximately ρ-zCDP:
    /// outside an event of probability δ, the mechanism is the unclamped Gaussian one.
    pub fn calibrate(
        rho: f64,
        l2_squared: f64,
        categories: u32,
        delta: f64,
    ) -> Result<Self, LinkError> {
        let valid = rho.is_finite()
            && rho > 0.0
            && l2_squared.is_finite()
            && (1.0..=1e6).contains(&l2_squared)
            && delta > 0.0
            && delta < 1.0
            && categories > 0;
        if !valid {
            return Err(LinkError::BadParameters(
                "the dummy noise needs ρ > 0, a sensitivity and 0 < δ < 1",
            ));
        }
        let sigma = (l2_squared / (2.0 * rho)).sqrt();
        let counts = f64::from(categories) * l2_squared.ceil();
        let tail = (sigma * (2.0 * (2.0 * counts / delta).ln()).sqrt()).ceil();
        let shift = tail + 1.0;
        if !(2.0..=1e6).contains(&shift) {
            return Err(LinkError::BadParameters(
                "the dummy noise's scale is out of range",
            ));
        }
        Ok(Self {
            sigma,
            shift: shift as u32,
        })
    }

    /// ρ of the matcher's view for counts of L2 sensitivity squared `l2_squared`.
    pub fn rho(&self, l2_squared: f64) -> f64 {
        l2_squared / (2.0 * self.sigma * self.sigma)
    }

    /// The most dummies one category can receive.
    pub fn most(&self) -> usize {
        2 * self.shift as usize
    }

    /// One category's dummy count.
    pub(crate) fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> Result<usize, LinkError> {
        let scale = civic_mechanisms::sampler::GaussianScale::at_least(self.sigma)
            .map_err(|_| LinkError::BadParameters("the dummy noise's scale is out of range"))?;
        let z = scale.sample(rng);
        Ok((i64::from(self.shift) + z).clamp(0, 2 * i64::from(self.shift)) as usize)
    }
}

/// What both sides agree on before a session: the round, the pair, the shapes and bounds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Setup {
    /// Binds the session to its round, pair and protocol version (the caller's choice of
    /// bytes, e.g. round id and the two partners' ids).
    pub context: Vec<u8>,
    /// Matcher-side groups (the matcher's category of a resident).
    pub categories: u32,
    /// Values per holder record (summed per matcher category).
    pub width: u32,
    /// Each holder value lies in [0, value_max].
    pub value_max: u64,
    /// Public bound on the holder's distinct identifiers.
    pub holder_capacity: u32,
    /// Public bound on the matcher's distinct identifiers.
    pub matcher_capacity: u32,
    pub dummies: DummyNoise,
}

/// A checked `Setup` with its derived layout.
#[derive(Clone, Debug, PartialEq)]
pub struct Params {
    pub setup: Setup,
    /// Every message of the session carries this.
    pub session: [u8; 32],
    /// Bits of one slot: the largest sum, the mask's margin, and one carry bit.
    pub slot_bits: u32,
    /// Slots in one plaintext.
    pub slots_per_block: u32,
    /// Ciphertexts per holder record (and per category in the masked sums).
    pub blocks: u32,
}

impl Params {
    pub fn new(setup: Setup) -> Result<Self, LinkError> {
        if setup.categories == 0 || setup.width == 0 || setup.value_max == 0 {
            return Err(LinkError::BadParameters(
                "categories, width and value bound must be positive",
            ));
        }
        if setup.holder_capacity == 0
            || setup.matcher_capacity == 0
            || setup.holder_capacity > MAX_CAPACITY
            || setup.matcher_capacity > MAX_CAPACITY
        {
            return Err(LinkError::BadParameters(
                "capacities must be between 1 and 2^26",
            ));
        }
        if u64::from(setup.categories) * u64::from(setup.width) > MAX_CELLS {
            return Err(LinkError::BadParameters("more than 65,536 cells"));
        }
        if !setup.dummies.sigma.is_finite()
            || setup.dummies.sigma <= 0.0
            || setup.dummies.shift == 0
        {
            return Err(LinkError::BadParameters(
                "the dummy noise needs σ > 0 and a positive shift",
            ));
        }
        let largest_sum = u128::from(setup.holder_capacity) * u128::from(setup.value_max);
        let sum_bits = 128 - largest_sum.leading_zeros();
        if sum_bits > MAX_SUM_BITS {
            return Err(LinkError::BadParameters("sums wider than 80 bits"));
        }
        let slot_bits = sum_bits + MASK_SECURITY_BITS + 1;
        let slots_per_block = PLAINTEXT_BITS / slot_bits;
        let blocks = setup.width.div_ceil(slots_per_block);
        let entries = u64::from(setup.holder_capacity)
            + u64::from(setup.categories) * 2 * u64::from(setup.dummies.shift);
        if entries * u64::from(blocks) * crate::paillier::CIPHERTEXT_BYTES as u64
            > MAX_MESSAGE_BYTES
        {
            return Err(LinkError::BadParameters(
                "the holder's list would exceed 4 GiB: lower the capacity or the cells",
            ));
        }
        if entries * u64::from(setup.categories) > MAX_MATCHING_WORK {
            return Err(LinkError::BadParameters(
                "matching would take more than 2^30 scalar multiplications: lower the capacity or the matcher's cells",
            ));
        }
        let session = session_id(&setup);
        Ok(Self {
            setup,
            session,
            slot_bits,
            slots_per_block,
            blocks,
        })
    }

    pub fn categories(&self) -> usize {
        self.setup.categories as usize
    }

    pub fn width(&self) -> usize {
        self.setup.width as usize
    }

    pub fn blocks(&self) -> usize {
        self.blocks as usize
    }

    /// Entries in the holder's list: its capacity and room for every possible dummy.
    pub fn holder_list_len(&self) -> usize {
        self.setup.holder_capacity as usize + self.dummy_room()
    }

    /// Points in the list the holder returns: the matcher's capacity and every dummy.
    pub fn returned_len(&self) -> usize {
        self.setup.matcher_capacity as usize + self.dummy_room()
    }

    fn dummy_room(&self) -> usize {
        self.categories() * self.setup.dummies.most()
    }

    /// The slots block `b` holds: values `b·slots_per_block ..` up to the width.
    pub fn block_values(&self, block: usize) -> std::ops::Range<usize> {
        let start = block * self.slots_per_block as usize;
        start..(start + self.slots_per_block as usize).min(self.width())
    }
}

/// SHA-256 over a tag and every field of the setup, so two sides that disagree on anything
/// refuse each other's first message.
fn session_id(setup: &Setup) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"civic-linkage/v1 session");
    h.update((setup.context.len() as u64).to_be_bytes());
    h.update(&setup.context);
    h.update(setup.categories.to_be_bytes());
    h.update(setup.width.to_be_bytes());
    h.update(setup.value_max.to_be_bytes());
    h.update(setup.holder_capacity.to_be_bytes());
    h.update(setup.matcher_capacity.to_be_bytes());
    h.update(setup.dummies.sigma.to_bits().to_be_bytes());
    h.update(setup.dummies.shift.to_be_bytes());
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> Setup {
        Setup {
            context: b"round 1".to_vec(),
            categories: 4,
            width: 3,
            value_max: 1,
            holder_capacity: 10_000,
            matcher_capacity: 1_000_000,
            dummies: DummyNoise::calibrate(0.05, 1.0, 4, 1e-12).unwrap(),
        }
    }

    #[test]
    fn the_layout_leaves_room_for_the_sum_and_its_mask() {
        let p = Params::new(setup()).unwrap();
        // 10,000 × 1 needs 14 bits; 14 + 40 + 1 = 55.
        assert_eq!(p.slot_bits, 55);
        assert_eq!(p.slots_per_block, 3068 / 55);
        assert_eq!(p.blocks, 1);
        let wide = Params::new(Setup {
            width: 200,
            ..setup()
        })
        .unwrap();
        assert_eq!(wide.blocks, 200u32.div_ceil(3068 / 55));
        assert_eq!(wide.block_values(3), 165..200);
    }

    #[test]
    fn any_difference_in_the_setup_changes_the_session() {
        let a = Params::new(setup()).unwrap().session;
        assert_ne!(
            a,
            Params::new(Setup {
                context: b"round 2".to_vec(),
                ..setup()
            })
            .unwrap()
            .session
        );
        assert_ne!(
            a,
            Params::new(Setup {
                value_max: 2,
                ..setup()
            })
            .unwrap()
            .session
        );
        assert_ne!(
            a,
            Params::new(Setup {
                holder_capacity: 10_001,
                ..setup()
            })
            .unwrap()
            .session
        );
    }

    #[test]
    fn dummy_noise_meets_its_rho_and_its_delta() {
        let d = DummyNoise::calibrate(0.05, 2.0, 4, 1e-12).unwrap();
        assert!((d.rho(2.0) - 0.05).abs() < 1e-12);
        // σ = √20 ≈ 4.47; the clamp matters when |Z| ≥ shift − 1, in one of 4 × 2 counts:
        // 8 · 2·e^(−(shift−1)²/2σ²) ≤ 1e-12, and one less would not do.
        let tail = |t: f64| 16.0 * (-t * t / (2.0 * d.sigma * d.sigma)).exp();
        let t = f64::from(d.shift) - 1.0;
        assert!(tail(t) <= 1e-12);
        assert!(tail(t - 1.0) > 1e-12);
    }

    #[test]
    fn unusable_setups_are_refused() {
        for bad in [
            Setup {
                categories: 0,
                ..setup()
            },
            Setup {
                width: 0,
                ..setup()
            },
            Setup {
                holder_capacity: 0,
                ..setup()
            },
            Setup {
                matcher_capacity: MAX_CAPACITY + 1,
                ..setup()
            },
            Setup {
                value_max: u64::MAX,
                holder_capacity: 1 << 26,
                ..setup()
            },
            Setup {
                categories: 1 << 10,
                width: 1 << 10,
                ..setup()
            },
            Setup {
                dummies: DummyNoise {
                    sigma: f64::NAN,
                    shift: 3,
                },
                ..setup()
            },
        ] {
            assert!(matches!(Params::new(bad), Err(LinkError::BadParameters(_))));
        }
    }
}
