//! The two sides of a pairwise linkage session as state machines over messages.
//!
//! ```text
//!  holder (encrypts its values)                     matcher (groups by its category)
//!  ─ HolderOffer: N, [k₂·H(w), Enc(t_w)]  ──────►   ◄── MatcherOffer: [k₁,c·B], [k₁,c(v)·H(v)]
//!  ─ Returned: shuffled [k₂·Y] + dummies k₁,c·s·B ►
//!                                                    matches k₁,c·X against Returned, multiplies
//!  ◄──────────── MaskedSums: Enc(S_c + r_c) ───────  the matched Enc(t) per category, adds masks
//!  share = (S_c + r_c) mod 2⁶⁴                       share = −r_c mod 2⁶⁴
//! ```
//!
//! A method that refuses a message hands its state back unchanged, so a bad or replayed
//! message changes nothing and the session can still complete with the right one.

use std::collections::HashSet;

use curve25519_dalek::constants::{RISTRETTO_BASEPOINT_POINT, RISTRETTO_BASEPOINT_TABLE};
use curve25519_dalek::ristretto::RistrettoPoint;
use rand_chacha::ChaCha20Rng;
use rand_core::{CryptoRng, Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use zeroize::Zeroize;

use crate::error::LinkError;
use crate::group::{Secret, WirePoint, identifier_point};
use crate::paillier::{Ciphertext, PublicKey, SecretKey, WireCiphertext, WireKey};
use crate::params::Params;
use crate::slots;

/// A holder's record: a resident's linkage identifier and the values summed over matches.
/// Its `Debug` shows neither.
#[derive(Clone, PartialEq, Eq)]
pub struct HolderRecord {
    pub identifier: Vec<u8>,
    pub values: Vec<u64>,
}

/// A matcher's record: a resident's linkage identifier and the category its sums go to.
/// Its `Debug` shows neither.
#[derive(Clone, PartialEq, Eq)]
pub struct MatcherRecord {
    pub identifier: Vec<u8>,
    pub category: u32,
}

/// The holder's first message: its session key and its blinded, encrypted list.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HolderOffer {
    pub session: [u8; 32],
    pub key: WireKey,
    pub points: Vec<WirePoint>,
    /// `blocks` ciphertexts per point, in the points' order.
    pub ciphertexts: Vec<WireCiphertext>,
}

/// The matcher's first message: one public key per category and its blinded list.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MatcherOffer {
    pub session: [u8; 32],
    pub category_keys: Vec<WirePoint>,
    pub points: Vec<WirePoint>,
}

/// The holder's second message: the matcher's points blinded again, shuffled, with the
/// dummies and padding.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Returned {
    pub session: [u8; 32],
    pub points: Vec<WirePoint>,
}

/// The matcher's last message: per category and block, Enc(sum + mask).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MaskedSums {
    pub session: [u8; 32],
    pub ciphertexts: Vec<WireCiphertext>,
}

/// One side's additive shares of the table, mod 2⁶⁴: cell `c·width + j` is category c,
/// value j. The holder's and matcher's shares add up to the sums over the intersection.
/// Its `Debug` shows only the number of cells.
#[derive(Clone, PartialEq, Eq)]
pub struct Shares(pub Vec<u64>);

impl std::fmt::Debug for HolderRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "HolderRecord {{ identifier: .., {} values }}",
            self.values.len()
        )
    }
}

impl std::fmt::Debug for MatcherRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MatcherRecord { identifier: .., category: .. }")
    }
}

impl std::fmt::Debug for MatcherOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "MatcherOutput {{ shares: {:?}, noisy_match_counts: .. }}",
            self.shares
        )
    }
}

impl std::fmt::Debug for Shares {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Shares({} cells)", self.0.len())
    }
}

/// What the matcher ends with: its shares and the one thing the protocol lets it learn,
/// each category's match count plus the holder's dummies. Its `Debug` shows neither.
#[derive(Clone, PartialEq, Eq)]
pub struct MatcherOutput {
    pub shares: Shares,
    pub noisy_match_counts: Vec<u64>,
}

/// A refused message: the state it was offered to, unchanged, and why.
#[derive(Debug)]
pub struct Refused<S> {
    pub state: S,
    pub error: LinkError,
}

/// Where a holder entry's point comes from: an identifier (a record's, or a random one for
/// padding) blinded by k₂, or a dummy's exponent times the base point.
enum PointSource {
    Identifier(Vec<u8>),
    Base(curve25519_dalek::scalar::Scalar),
}

/// The holder before the matcher's offer arrives.
#[derive(Debug)]
pub struct HolderStarted {
    params: Params,
    key: SecretKey,
    blinding: Secret,
    /// Per category, the exponents of that category's dummies.
    dummies: Vec<Vec<Secret>>,
}

/// The holder waiting for the masked sums.
#[derive(Debug)]
pub struct HolderAwaitingSums {
    params: Params,
    key: SecretKey,
}

/// The matcher waiting for the holder's two messages.
#[derive(Debug)]
pub struct MatcherStarted {
    params: Params,
    /// k₁,c per category.
    keys: Vec<Secret>,
}

/// The holder's side: `start` → `respond` → `finish`.
pub fn holder_start<R: CryptoRng + ?Sized>(
    params: Params,
    records: &[HolderRecord],
    rng: &mut R,
    threads: usize,
) -> Result<(HolderStarted, HolderOffer), LinkError> {
    check_holder_records(&params, records)?;
    let key = SecretKey::generate(rng);
    let blinding = Secret::random(rng);
    let zero = vec![0u64; params.width()];

    // Real records, then each category's dummies (s·B, Enc(0)), then padding (a random
    // identifier's point, Enc(0)): padding and dummies cost what a record costs, so the time
    // taken says nothing of how many records there are.
    let mut dummies = Vec::with_capacity(params.categories());
    for _ in 0..params.categories() {
        let count = params.setup.dummies.sample(rng)?;
        dummies.push(
            (0..count)
                .map(|_| Secret::random(rng))
                .collect::<Vec<Secret>>(),
        );
    }
    let dummy_count: usize = dummies.iter().map(Vec::len).sum();
    let padding = params.holder_list_len() - records.len() - dummy_count;
    let mut sources: Vec<PointSource> = records
        .iter()
        .map(|r| PointSource::Identifier(r.identifier.clone()))
        .collect();
    sources.extend(
        dummies
            .iter()
            .flatten()
            .map(|s| PointSource::Base(*s.scalar())),
    );
    sources.extend((0..padding).map(|_| {
        let mut random = vec![0u8; 16];
        rng.fill_bytes(&mut random);
        PointSource::Identifier(random)
    }));
    let points = parallel_map(&sources, threads, |source| match source {
        PointSource::Identifier(id) => identifier_point(&params.session, id) * blinding.scalar(),
        PointSource::Base(s) => {
            // The hash a record's point costs, spent and discarded.
            std::hint::black_box(identifier_point(&params.session, &[]));
            RISTRETTO_BASEPOINT_POINT * s
        }
    });
    drop(sources);
    let encrypted: Vec<&[u64]> = records
        .iter()
        .map(|r| r.values.as_slice())
        .chain(std::iter::repeat_n(zero.as_slice(), dummy_count + padding))
        .collect();
    let ciphertexts = encrypt_all(&params, &key, &encrypted, rng, threads);
    let mut entries: Vec<(WirePoint, Vec<WireCiphertext>)> =
        points.iter().map(WirePoint::of).zip(ciphertexts).collect();
    shuffle(&mut entries, rng);
    let (points, ciphertexts): (Vec<_>, Vec<_>) = entries.into_iter().unzip();
    let offer = HolderOffer {
        session: params.session,
        key: key.public().to_wire(),
        points,
        ciphertexts: ciphertexts.into_iter().flatten().collect(),
    };
    Ok((
        HolderStarted {
            params,
            key,
            blinding,
            dummies,
        },
        offer,
    ))
}

impl HolderStarted {
    /// Blinds the matcher's points again, adds the dummies' partners k₁,c·s·B and padding,
    /// and shuffles. On a refused offer the state comes back untouched.
    pub fn respond<R: CryptoRng + ?Sized>(
        self,
        offer: &MatcherOffer,
        rng: &mut R,
        threads: usize,
    ) -> Result<(HolderAwaitingSums, Returned), Box<Refused<Self>>> {
        let checked = check_matcher_offer(&self.params, offer);
        let (category_keys, points) = match checked {
            Ok(v) => v,
            Err(error) => return Err(Box::new(Refused { state: self, error })),
        };
        let blinding = self.blinding.scalar();
        let mut returned: Vec<RistrettoPoint> = parallel_map(&points, threads, |p| p * blinding);
        for (key, secrets) in category_keys.iter().zip(&self.dummies) {
            returned.extend(secrets.iter().map(|s| key * s.scalar()));
        }
        // Padding costs a multiplication, as the points before it did.
        while returned.len() < self.params.returned_len() {
            returned.push(RistrettoPoint::random(rng) * Secret::random(rng).scalar());
        }
        shuffle(&mut returned, rng);
        let message = Returned {
            session: self.params.session,
            points: compress_all(&returned, threads),
        };
        Ok((
            HolderAwaitingSums {
                params: self.params,
                key: self.key,
            },
            message,
        ))
    }
}

impl HolderAwaitingSums {
    /// Decrypts the masked sums into the holder's shares.
    pub fn finish(self, sums: &MaskedSums) -> Result<Shares, Box<Refused<Self>>> {
        match self.shares(sums) {
            Ok(shares) => Ok(shares),
            Err(error) => Err(Box::new(Refused { state: self, error })),
        }
    }

    fn shares(&self, sums: &MaskedSums) -> Result<Shares, LinkError> {
        let params = &self.params;
        if sums.session != params.session {
            return Err(LinkError::WrongSession);
        }
        if sums.ciphertexts.len() != params.categories() * params.blocks() {
            return Err(LinkError::WrongSize);
        }
        let public = self.key.public();
        let ciphertexts = sums
            .ciphertexts
            .iter()
            .map(|c| public.unit_ciphertext(c))
            .collect::<Result<Vec<Ciphertext>, _>>()?;
        let mut shares = vec![0u64; params.categories() * params.width()];
        for (index, c) in ciphertexts.iter().enumerate() {
            let (category, block) = (index / params.blocks(), index % params.blocks());
            let values = params.block_values(block);
            // No check after decrypting: the bits above the slots are the matcher's mask, and
            // a refusal that depended on the plaintext would be a decryption oracle.
            let mut plaintext = self.key.decrypt(c);
            let mut slots = slots::read(&plaintext, params.slot_bits, values.len());
            for (j, slot) in values.zip(&slots) {
                shares[category * params.width() + j] = *slot as u64;
            }
            plaintext.zeroize();
            slots.zeroize();
        }
        Ok(Shares(shares))
    }
}

/// The matcher's side: `start` → `finish`.
pub fn matcher_start<R: CryptoRng + ?Sized>(
    params: Params,
    records: &[MatcherRecord],
    rng: &mut R,
    threads: usize,
) -> Result<(MatcherStarted, MatcherOffer), LinkError> {
    check_matcher_records(&params, records)?;
    let keys: Vec<Secret> = (0..params.categories())
        .map(|_| Secret::random(rng))
        .collect();
    let mut points: Vec<RistrettoPoint> = parallel_map(records, threads, |r| {
        identifier_point(&params.session, &r.identifier) * keys[r.category as usize].scalar()
    });
    // Padding: random identifiers under a random category's key, at a record's cost.
    while points.len() < params.setup.matcher_capacity as usize {
        let mut random = [0u8; 16];
        rng.fill_bytes(&mut random);
        let key = &keys[below(rng, keys.len() as u64) as usize];
        points.push(identifier_point(&params.session, &random) * key.scalar());
    }
    shuffle(&mut points, rng);
    let category_keys = keys
        .iter()
        .map(|k| WirePoint::of(&(RISTRETTO_BASEPOINT_TABLE * k.scalar())))
        .collect();
    let offer = MatcherOffer {
        session: params.session,
        category_keys,
        points: compress_all(&points, threads),
    };
    Ok((MatcherStarted { params, keys }, offer))
}

impl MatcherStarted {
    /// Finds the matches, sums the holder's ciphertexts per category, masks the sums.
    pub fn finish<R: CryptoRng + ?Sized>(
        self,
        offer: &HolderOffer,
        returned: &Returned,
        rng: &mut R,
        threads: usize,
    ) -> Result<(MatcherOutput, MaskedSums), Box<Refused<Self>>> {
        match self.sums(offer, returned, rng, threads) {
            Ok(done) => Ok(done),
            Err(error) => Err(Box::new(Refused { state: self, error })),
        }
    }

    fn sums<R: CryptoRng + ?Sized>(
        &self,
        offer: &HolderOffer,
        returned: &Returned,
        rng: &mut R,
        threads: usize,
    ) -> Result<(MatcherOutput, MaskedSums), LinkError> {
        let params = &self.params;
        let (public, holder_points, ciphertexts) = check_holder_offer(params, offer, threads)?;
        let returned = check_returned(params, returned, threads)?;

        // k₁,c·X for every holder point X and every category c (all of them, with no early
        // exit, so the time taken says nothing of the matches), looked up among the
        // returned points.
        let indices: Vec<usize> = (0..holder_points.len()).collect();
        let hits: Vec<Vec<bool>> = parallel_map(&indices, threads, |&i| {
            self.keys
                .iter()
                .map(|k| returned.contains(&(holder_points[i] * k.scalar()).compress().to_bytes()))
                .collect()
        });
        let mut counts = vec![0u64; params.categories()];
        for row in &hits {
            for (c, hit) in row.iter().enumerate() {
                counts[c] += u64::from(*hit);
            }
        }

        // Per category and block, the product over every holder entry of its ciphertext or
        // of 1: the same number of multiplications whatever matched.
        let blocks = params.blocks();
        let cells: Vec<(usize, usize)> = (0..params.categories())
            .flat_map(|c| (0..blocks).map(move |b| (c, b)))
            .collect();
        let products = parallel_map(&cells, threads, |&(c, b)| {
            public.product_where(
                (0..holder_points.len()).map(|i| (&ciphertexts[i * blocks + b], hits[i][c])),
            )
        });

        let mut shares = vec![0u64; params.categories() * params.width()];
        let mut masked = Vec::with_capacity(products.len());
        for (&(category, block), product) in cells.iter().zip(products) {
            let values = params.block_values(block);
            // R uniform in [0, N − 2^used): its slots are the matcher's masks, and the bits
            // above them hide anything a deviating holder put beyond its slots, so what the
            // holder decrypts is independent of the sum (to within 2^(used − |N|)).
            let used = values.len() as u32 * params.slot_bits;
            let mut mask = public.random_mask(used, rng);
            let mut slots_of_mask = slots::read(&mask, params.slot_bits, values.len());
            for (j, slot) in values.zip(&slots_of_mask) {
                shares[category * params.width() + j] = (*slot as u64).wrapping_neg();
            }
            let encrypted_mask = public.encrypt(&mask, rng);
            mask.zeroize();
            slots_of_mask.zeroize();
            masked.push(public.add(&product, &encrypted_mask).to_wire());
        }
        Ok((
            MatcherOutput {
                shares: Shares(shares),
                noisy_match_counts: counts,
            },
            MaskedSums {
                session: params.session,
                ciphertexts: masked,
            },
        ))
    }
}

fn check_holder_records(params: &Params, records: &[HolderRecord]) -> Result<(), LinkError> {
    if records.len() > params.setup.holder_capacity as usize {
        return Err(LinkError::OverCapacity);
    }
    let mut seen = HashSet::with_capacity(records.len());
    for r in records {
        if r.values.len() != params.width() || r.values.iter().any(|v| *v > params.setup.value_max)
        {
            return Err(LinkError::ValueOutOfRange);
        }
        if !seen.insert(r.identifier.as_slice()) {
            return Err(LinkError::DuplicateIdentifier);
        }
    }
    Ok(())
}

fn check_matcher_records(params: &Params, records: &[MatcherRecord]) -> Result<(), LinkError> {
    if records.len() > params.setup.matcher_capacity as usize {
        return Err(LinkError::OverCapacity);
    }
    let mut seen = HashSet::with_capacity(records.len());
    for r in records {
        if r.category >= params.setup.categories {
            return Err(LinkError::ValueOutOfRange);
        }
        if !seen.insert(r.identifier.as_slice()) {
            return Err(LinkError::DuplicateIdentifier);
        }
    }
    Ok(())
}

fn check_matcher_offer(
    params: &Params,
    offer: &MatcherOffer,
) -> Result<(Vec<RistrettoPoint>, Vec<RistrettoPoint>), LinkError> {
    if offer.session != params.session {
        return Err(LinkError::WrongSession);
    }
    if offer.category_keys.len() != params.categories()
        || offer.points.len() != params.setup.matcher_capacity as usize
    {
        return Err(LinkError::WrongSize);
    }
    let keys = decode_distinct(&offer.category_keys, 1)?;
    let points = decode_distinct(&offer.points, 1)?;
    Ok((keys, points))
}

fn check_holder_offer(
    params: &Params,
    offer: &HolderOffer,
    threads: usize,
) -> Result<(PublicKey, Vec<RistrettoPoint>, Vec<Ciphertext>), LinkError> {
    if offer.session != params.session {
        return Err(LinkError::WrongSession);
    }
    if offer.points.len() != params.holder_list_len()
        || offer.ciphertexts.len() != params.holder_list_len() * params.blocks()
    {
        return Err(LinkError::WrongSize);
    }
    let public = PublicKey::from_wire(&offer.key)?;
    let points = decode_distinct(&offer.points, threads)?;
    let ciphertexts = offer
        .ciphertexts
        .iter()
        .map(|c| public.ciphertext(c))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((public, points, ciphertexts))
}

fn check_returned(
    params: &Params,
    returned: &Returned,
    threads: usize,
) -> Result<HashSet<[u8; 32]>, LinkError> {
    if returned.session != params.session {
        return Err(LinkError::WrongSession);
    }
    if returned.points.len() != params.returned_len() {
        return Err(LinkError::WrongSize);
    }
    // Decoding checks canonical form, so equal points compare equal as bytes.
    decode_distinct(&returned.points, threads)?;
    Ok(returned.points.iter().map(|p| p.0).collect())
}

/// Every point decoded (canonical, not the identity) and no two alike.
fn decode_distinct(points: &[WirePoint], threads: usize) -> Result<Vec<RistrettoPoint>, LinkError> {
    let mut seen = HashSet::with_capacity(points.len());
    if !points.iter().all(|p| seen.insert(p.0)) {
        return Err(LinkError::DuplicatePoint);
    }
    parallel_map(points, threads, |p| p.decode())
        .into_iter()
        .collect()
}

/// Each record's values, packed into blocks and encrypted, fanned out over threads with a
/// seed per chunk drawn from the caller's generator.
fn encrypt_all<R: CryptoRng + ?Sized>(
    params: &Params,
    key: &SecretKey,
    values: &[&[u64]],
    rng: &mut R,
    threads: usize,
) -> Vec<Vec<WireCiphertext>> {
    let chunks = chunk_bounds(values.len(), threads);
    let seeds: Vec<[u8; 32]> = chunks
        .iter()
        .map(|_| {
            let mut seed = [0u8; 32];
            rng.fill_bytes(&mut seed);
            seed
        })
        .collect();
    std::thread::scope(|scope| {
        let handles: Vec<_> = chunks
            .iter()
            .zip(seeds)
            .map(|(range, seed)| {
                let slice = &values[range.clone()];
                scope.spawn(move || {
                    let mut rng = ChaCha20Rng::from_seed(seed);
                    slice
                        .iter()
                        .map(|v| {
                            (0..params.blocks())
                                .map(|b| {
                                    let slots: Vec<u128> = v[params.block_values(b)]
                                        .iter()
                                        .map(|x| u128::from(*x))
                                        .collect();
                                    key.encrypt(&slots::pack(&slots, params.slot_bits), &mut rng)
                                        .to_wire()
                                })
                                .collect()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("an encryption worker panicked"))
            .collect()
    })
}

fn compress_all(points: &[RistrettoPoint], threads: usize) -> Vec<WirePoint> {
    parallel_map(points, threads, WirePoint::of)
}

/// `f` over `items` in order, split into contiguous chunks over `threads` scoped threads.
fn parallel_map<T: Sync, U: Send>(
    items: &[T],
    threads: usize,
    f: impl Fn(&T) -> U + Sync,
) -> Vec<U> {
    let chunks = chunk_bounds(items.len(), threads);
    if chunks.len() <= 1 {
        return items.iter().map(&f).collect();
    }
    std::thread::scope(|scope| {
        let f = &f;
        let handles: Vec<_> = chunks
            .into_iter()
            .map(|range| scope.spawn(move || items[range].iter().map(f).collect::<Vec<U>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("a worker panicked"))
            .collect()
    })
}

fn chunk_bounds(len: usize, threads: usize) -> Vec<std::ops::Range<usize>> {
    let threads = threads.clamp(1, 64);
    let size = len.div_ceil(threads).max(1);
    (0..len)
        .step_by(size)
        .map(|s| s..(s + size).min(len))
        .collect()
}

/// Fisher–Yates with unbiased bounded draws.
fn shuffle<T, R: Rng + ?Sized>(items: &mut [T], rng: &mut R) {
    for i in (1..items.len()).rev() {
        let j = below(rng, i as u64 + 1) as usize;
        items.swap(i, j);
    }
}

/// Uniform in [0, bound) by rejection (bound > 0).
fn below<R: Rng + ?Sized>(rng: &mut R, bound: u64) -> u64 {
    let zone = u64::MAX - u64::MAX % bound;
    loop {
        let x = rng.next_u64();
        if x < zone {
            return x % bound;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_every_item_once() {
        for (len, threads) in [(0, 4), (1, 4), (10, 3), (10, 1), (7, 64)] {
            let chunks = chunk_bounds(len, threads);
            let covered: Vec<usize> = chunks.into_iter().flatten().collect();
            assert_eq!(covered, (0..len).collect::<Vec<_>>());
        }
        let doubled = parallel_map(&[1, 2, 3, 4, 5], 2, |x| x * 2);
        assert_eq!(doubled, vec![2, 4, 6, 8, 10]);
    }

    #[test]
    fn shuffles_and_bounded_draws_are_unbiased_enough() {
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        let mut counts = [0u32; 3];
        for _ in 0..30_000 {
            let mut v = [0, 1, 2];
            shuffle(&mut v, &mut rng);
            counts[v[0]] += 1;
        }
        // Each lands first 10,000 times; 5 SE ≈ 408.
        assert!(
            counts.iter().all(|c| (9_592..=10_408).contains(c)),
            "{counts:?}"
        );
    }
}
