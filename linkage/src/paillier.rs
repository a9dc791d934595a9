//! Paillier encryption with a 3072-bit modulus (about 128-bit security), on
//! `crypto-bigint`'s constant-time Montgomery arithmetic.
//!
//! - g = N + 1, so Enc(m; ρ) = (1 + mN)·ρ mod N², and Dec(c) = L(c^λ mod N²)·λ⁻¹ mod N with
//!   L(u) = (u − 1)/N and λ = (p − 1)(q − 1).
//! - The holder encrypts one ciphertext per record, so its randomness is the short-exponent
//!   form of Damgård, Jurik and Nielsen ("A generalization of Paillier's public-key system…",
//!   IJIS 2010, §4): ρ = h^x with h a random N-th residue fixed per key and x a random 256-bit
//!   exponent, taken from a fixed-base table of 8-bit windows (32 multiplications mod N²,
//!   against about 3,600 for r^N). Its semantic security rests on DCR plus the
//!   short-exponent indistinguishability of h^x (Koshiba and Kurosawa, PKC 2004).
//! - Anyone else (the matcher's masks) encrypts with full randomness r^N, r uniform in Z_N*,
//!   which also re-randomises a product of ciphertexts completely.
//! - The key lives for one session: a fresh key per linkage round, wiped on drop.

use crypto_bigint::modular::{FixedMontyForm, FixedMontyParams};
use crypto_bigint::{NonZero, Odd, RandomMod, U1536, U3072, U6144};
use rand_core::CryptoRng;
use serde::{Deserialize, Serialize};
use zeroize::Zeroize;

use crate::error::LinkError;

/// Bits of N: 3072, the size NIST SP 800-57 pairs with 128-bit security.
pub const MODULUS_BITS: u32 = 3072;
/// Bytes of N on the wire.
pub const MODULUS_BYTES: usize = 384;
/// Bytes of a ciphertext (mod N²) on the wire.
pub const CIPHERTEXT_BYTES: usize = 768;
/// The least bit length of an N this crate accepts from a peer (two 1536-bit primes with
/// their top bits set multiply to at least 2³⁰⁷⁰).
pub const MIN_MODULUS_BITS: u32 = 3070;
/// Bits of the short exponent x in ρ = h^x.
const SHORT_EXPONENT_BITS: usize = 256;
const WINDOW_BITS: usize = 8;
const WINDOWS: usize = SHORT_EXPONENT_BITS / WINDOW_BITS;

type Monty = FixedMontyForm<{ U6144::LIMBS }>;

/// A Paillier public key: N, and Montgomery parameters for N².
#[derive(Clone)]
pub struct PublicKey {
    n: Odd<U3072>,
    n_squared: FixedMontyParams<{ U6144::LIMBS }>,
    bits: u32,
}

/// N on the wire, big-endian.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireKey(#[serde(with = "serde_bytes_fixed")] pub Vec<u8>);

/// A ciphertext on the wire: an integer mod N², big-endian, `CIPHERTEXT_BYTES` long.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireCiphertext(#[serde(with = "serde_bytes_fixed")] pub Vec<u8>);

/// A ciphertext mod N², checked to lie in [1, N²).
#[derive(Clone, Copy)]
pub struct Ciphertext(U6144);

/// The secret key, with the holder's fixed-base table for fast encryption.
pub struct SecretKey {
    public: PublicKey,
    lambda: U3072,
    lambda_inverse: U3072,
    /// h^(j·2^(8i)) for window i and digit j, in Montgomery form.
    table: Vec<Monty>,
}

impl PublicKey {
    /// A peer's key, refused unless N is odd, at most 3072 and at least 3070 bits long.
    pub fn from_wire(wire: &WireKey) -> Result<Self, LinkError> {
        if wire.0.len() != MODULUS_BYTES {
            return Err(LinkError::BadKey);
        }
        let n = U3072::from_be_slice(&wire.0);
        if n.bit_width_vartime() < MIN_MODULUS_BITS {
            return Err(LinkError::BadKey);
        }
        let n = Odd::new(n).into_option().ok_or(LinkError::BadKey)?;
        Ok(Self::new(n))
    }

    fn new(n: Odd<U3072>) -> Self {
        let square: U6144 = n.get().concatenating_mul(n.as_ref());
        let square = Odd::new(square)
            .into_option()
            .expect("an odd N has an odd square");
        Self {
            bits: n.bit_width_vartime(),
            n,
            n_squared: FixedMontyParams::new_vartime(square),
        }
    }

    pub fn to_wire(&self) -> WireKey {
        WireKey(self.n.to_be_bytes().as_ref().to_vec())
    }

    /// Bits a plaintext may use without reaching N (two below N's length).
    pub fn plaintext_bits(&self) -> u32 {
        self.bits - 2
    }

    /// A peer's ciphertext, refused unless it is in [1, N²).
    pub fn ciphertext(&self, wire: &WireCiphertext) -> Result<Ciphertext, LinkError> {
        if wire.0.len() != CIPHERTEXT_BYTES {
            return Err(LinkError::CiphertextOutOfRange);
        }
        let c = U6144::from_be_slice(&wire.0);
        if bool::from(c.is_zero()) || c >= *self.n_squared.modulus().as_ref() {
            return Err(LinkError::CiphertextOutOfRange);
        }
        Ok(Ciphertext(c))
    }

    /// Like `ciphertext`, and also refused when it shares a factor with N (a ciphertext an
    /// honest party makes never does).
    pub fn unit_ciphertext(&self, wire: &WireCiphertext) -> Result<Ciphertext, LinkError> {
        let c = self.ciphertext(wire)?;
        let n_wide: U6144 = self.n.get().resize();
        let modulus = NonZero::new(n_wide).into_option().expect("N is not zero");
        let reduced: U3072 = c.0.rem_vartime(&modulus).resize();
        if reduced.gcd_vartime(&self.n.get()) != U3072::ONE {
            return Err(LinkError::CiphertextOutOfRange);
        }
        Ok(c)
    }

    /// 1 + mN mod N², the plaintext part of a ciphertext (m < N).
    fn plaintext_factor(&self, m: &U3072) -> Monty {
        let mn: U6144 = m.concatenating_mul(self.n.as_ref());
        Monty::new(&mn.wrapping_add(&U6144::ONE), &self.n_squared)
    }

    /// Enc(m) with full randomness r^N, r uniform in [1, N).
    pub fn encrypt<R: CryptoRng + ?Sized>(&self, m: &U3072, rng: &mut R) -> Ciphertext {
        let modulus = NonZero::new(self.n.get())
            .into_option()
            .expect("N is not zero");
        let r = loop {
            let r = U3072::random_mod_vartime(rng, &modulus);
            if !bool::from(r.is_zero()) {
                break r;
            }
        };
        let rho = Monty::new(&r.resize(), &self.n_squared).pow(self.n.as_ref());
        Ciphertext(self.plaintext_factor(m).mul(&rho).retrieve())
    }

    /// A mask uniform in [0, N − 2^used): added to a sum below 2^used it never wraps, and
    /// the result is within 2^(used − |N| + 1) of uniform whatever the sum.
    pub fn random_mask<R: CryptoRng + ?Sized>(&self, used: u32, rng: &mut R) -> U3072 {
        let bound = self.n.get().wrapping_sub(&U3072::ONE.shl_vartime(used));
        let bound = NonZero::new(bound)
            .into_option()
            .expect("used bits are far below N's");
        U3072::random_mod_vartime(rng, &bound)
    }

    /// The product of the ciphertexts whose flag is set, with a multiplication by 1 for
    /// each one whose flag is not, so that the work does not depend on the flags.
    pub fn product_where<'a>(
        &self,
        items: impl IntoIterator<Item = (&'a Ciphertext, bool)>,
    ) -> Ciphertext {
        let one = Monty::one(&self.n_squared);
        let mut acc = one;
        for (c, selected) in items {
            let converted = Monty::new(&c.0, &self.n_squared);
            let factor = if selected { converted } else { one };
            acc = acc.mul(&factor);
        }
        Ciphertext(acc.retrieve())
    }

    /// Enc(a + b) from Enc(a) and Enc(b).
    pub fn add(&self, a: &Ciphertext, b: &Ciphertext) -> Ciphertext {
        let a = Monty::new(&a.0, &self.n_squared);
        let b = Monty::new(&b.0, &self.n_squared);
        Ciphertext(a.mul(&b).retrieve())
    }

    /// The product of many ciphertexts (Enc of the sum), staying in Montgomery form.
    pub fn sum<'a>(&self, items: impl IntoIterator<Item = &'a Ciphertext>) -> Option<Ciphertext> {
        let mut acc: Option<Monty> = None;
        for c in items {
            let c = Monty::new(&c.0, &self.n_squared);
            acc = Some(match acc {
                None => c,
                Some(a) => a.mul(&c),
            });
        }
        acc.map(|a| Ciphertext(a.retrieve()))
    }
}

impl Ciphertext {
    pub fn to_wire(&self) -> WireCiphertext {
        WireCiphertext(self.0.to_be_bytes().as_ref().to_vec())
    }
}

impl SecretKey {
    /// A fresh key: two random 1536-bit primes (top two bits set, so N has 3071 or 3072
    /// bits), and the holder's table for h = r^N.
    pub fn generate<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
        let (p, q) = loop {
            let p: U1536 = crypto_primes::random_prime(rng, crypto_primes::Flavor::Any, 1536);
            let q: U1536 = crypto_primes::random_prime(rng, crypto_primes::Flavor::Any, 1536);
            if p != q {
                break (p, q);
            }
        };
        let (mut p, mut q) = (p, q);
        let key = Self::from_primes(&p, &q, rng);
        p.zeroize();
        q.zeroize();
        key
    }

    fn from_primes<R: CryptoRng + ?Sized>(p: &U1536, q: &U1536, rng: &mut R) -> Self {
        let n: U3072 = p.concatenating_mul(q);
        let n = Odd::new(n)
            .into_option()
            .expect("a product of odd primes is odd");
        let public = PublicKey::new(n);
        let lambda: U3072 = p
            .wrapping_sub(&U1536::ONE)
            .concatenating_mul(&q.wrapping_sub(&U1536::ONE));
        // gcd(λ, N) = 1 for primes of equal length, so λ is invertible mod N.
        let lambda_inverse = lambda
            .invert_odd_mod(&public.n)
            .into_option()
            .expect("λ is a unit mod N for primes of equal length");
        let h = public.encrypt(&U3072::ZERO, rng);
        let table = fixed_base_table(Monty::new(&h.0, &public.n_squared));
        Self {
            public,
            lambda,
            lambda_inverse,
            table,
        }
    }

    pub fn public(&self) -> &PublicKey {
        &self.public
    }

    /// Enc(m) with ρ = h^x, x a random 256-bit exponent read off the table.
    pub fn encrypt<R: CryptoRng + ?Sized>(&self, m: &U3072, rng: &mut R) -> Ciphertext {
        let mut x = [0u8; SHORT_EXPONENT_BITS / 8];
        rng.fill_bytes(&mut x);
        let mut acc = self.public.plaintext_factor(m);
        for (window, digit) in x.iter().enumerate() {
            acc = acc.mul(&self.table[window * 256 + usize::from(*digit)]);
        }
        x.zeroize();
        Ciphertext(acc.retrieve())
    }

    /// Dec(c) = L(c^λ mod N²)·λ⁻¹ mod N.
    pub fn decrypt(&self, c: &Ciphertext) -> U3072 {
        let n = &self.public.n;
        let u = Monty::new(&c.0, &self.public.n_squared)
            .pow(&self.lambda)
            .retrieve();
        let divisor = NonZero::new(n.get().resize::<{ U6144::LIMBS }>())
            .into_option()
            .expect("N is not zero");
        let (l, _) = u.wrapping_sub(&U6144::ONE).div_rem_vartime(&divisor);
        let modulus = NonZero::new(n.get()).into_option().expect("N is not zero");
        l.resize::<{ U3072::LIMBS }>()
            .mul_mod(&self.lambda_inverse, &modulus)
    }
}

impl Drop for SecretKey {
    fn drop(&mut self) {
        self.lambda.zeroize();
        self.lambda_inverse.zeroize();
        for entry in &mut self.table {
            entry.zeroize();
        }
    }
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(..)")
    }
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({} bits)", self.bits)
    }
}

/// T[i·256 + j] = h^(j·2^(8i)).
fn fixed_base_table(h: Monty) -> Vec<Monty> {
    let one = Monty::one(h.params());
    let mut table = Vec::with_capacity(WINDOWS * 256);
    let mut base = h;
    for _ in 0..WINDOWS {
        let mut power = one;
        for _ in 0..256 {
            table.push(power);
            power = power.mul(&base);
        }
        // `power` is now base^256, the next window's base.
        base = power;
    }
    table
}

/// Fixed-length byte strings in serde, as plain byte sequences.
mod serde_bytes_fixed {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(bytes)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        Vec::<u8>::deserialize(d)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;
    use std::sync::OnceLock;

    /// One key for the unit tests (generation takes a second or more).
    pub(crate) fn test_key() -> &'static SecretKey {
        static KEY: OnceLock<SecretKey> = OnceLock::new();
        KEY.get_or_init(|| SecretKey::generate(&mut ChaCha20Rng::seed_from_u64(7)))
    }

    #[test]
    fn encryption_round_trips_and_adds() {
        let key = test_key();
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        assert!(key.public().plaintext_bits() >= MIN_MODULUS_BITS - 2);
        let a = U3072::from_u128(u128::MAX - 5);
        let b = U3072::from_u64(12345);
        let ca = key.encrypt(&a, &mut rng);
        let cb = key.public().encrypt(&b, &mut rng);
        assert_eq!(key.decrypt(&ca), a);
        assert_eq!(key.decrypt(&cb), b);
        let sum = key.public().add(&ca, &cb);
        assert_eq!(key.decrypt(&sum), a.wrapping_add(&b));
        let total = key.public().sum([&ca, &cb, &cb]).unwrap();
        assert_eq!(key.decrypt(&total), a.wrapping_add(&b).wrapping_add(&b));
    }

    /// A deviating holder that put a tag above the slots sees, after the matcher's mask, a
    /// bit that is set half the time whether or not it tagged.
    #[test]
    fn the_full_range_mask_hides_bits_above_the_slots() {
        let public = test_key().public();
        let mut rng = ChaCha20Rng::seed_from_u64(9);
        let used = 110;
        let n = NonZero::new(public.n.get()).into_option().unwrap();
        for tag in [U3072::ZERO, U3072::ONE.shl_vartime(used + 5)] {
            let set = (0..400)
                .filter(|_| {
                    let y = tag.add_mod(&public.random_mask(used, &mut rng), &n);
                    bool::from(y.bit(used + 5))
                })
                .count();
            // Half of 400 within 5 standard errors (±50).
            assert!((150..=250).contains(&set), "{set}");
        }
    }

    #[test]
    fn two_encryptions_of_one_value_differ() {
        let key = test_key();
        let mut rng = ChaCha20Rng::seed_from_u64(2);
        let m = U3072::from_u64(1);
        assert_ne!(
            key.encrypt(&m, &mut rng).to_wire(),
            key.encrypt(&m, &mut rng).to_wire()
        );
    }

    #[test]
    fn out_of_range_ciphertexts_and_keys_are_refused() {
        let public = test_key().public();
        let zero = WireCiphertext(vec![0; CIPHERTEXT_BYTES]);
        assert_eq!(
            public.ciphertext(&zero).err(),
            Some(LinkError::CiphertextOutOfRange)
        );
        let too_big = WireCiphertext(vec![0xff; CIPHERTEXT_BYTES]);
        assert_eq!(
            public.ciphertext(&too_big).err(),
            Some(LinkError::CiphertextOutOfRange)
        );
        let short = WireCiphertext(vec![1; 10]);
        assert_eq!(
            public.ciphertext(&short).err(),
            Some(LinkError::CiphertextOutOfRange)
        );
        // N itself shares a factor with N.
        let mut n = vec![0; CIPHERTEXT_BYTES - MODULUS_BYTES];
        n.extend_from_slice(&public.to_wire().0);
        let n = WireCiphertext(n);
        assert!(public.ciphertext(&n).is_ok());
        assert_eq!(
            public.unit_ciphertext(&n).err(),
            Some(LinkError::CiphertextOutOfRange)
        );

        assert_eq!(
            PublicKey::from_wire(&WireKey(vec![0xff; 10])).err(),
            Some(LinkError::BadKey)
        );
        let mut small = vec![0; MODULUS_BYTES];
        small[MODULUS_BYTES - 1] = 15;
        assert_eq!(
            PublicKey::from_wire(&WireKey(small)).err(),
            Some(LinkError::BadKey)
        );
        let mut even = public.to_wire().0;
        even[MODULUS_BYTES - 1] &= 0xfe;
        assert_eq!(
            PublicKey::from_wire(&WireKey(even)).err(),
            Some(LinkError::BadKey)
        );
    }
}
