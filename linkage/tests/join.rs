//! A pairwise linkage session against the plaintext join of the same data, and against peers
//! that send malformed or replayed messages.

use std::collections::HashMap;

use civic_linkage::group::{WirePoint, identifier_point};
use civic_linkage::paillier::WireCiphertext;
use civic_linkage::{
    DummyNoise, HolderOffer, HolderRecord, LinkError, MaskedSums, MatcherOffer, MatcherRecord,
    Params, Returned, Setup, holder_start, matcher_start,
};
use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};

const THREADS: usize = 2;

fn setup(categories: u32, width: u32, holder_capacity: u32, matcher_capacity: u32) -> Setup {
    Setup {
        context: b"test round / housing-1 x trust-1".to_vec(),
        categories,
        width,
        value_max: 9,
        holder_capacity,
        matcher_capacity,
        dummies: DummyNoise::calibrate(0.5, 1.0, categories, 1e-9).unwrap(),
    }
}

/// An NHS-number-like identifier for resident `i` (ten digits; the check digit is not
/// needed here).
fn id(i: u64) -> Vec<u8> {
    format!("{:010}", 4_000_000_000 + i).into_bytes()
}

struct Data {
    holder: Vec<HolderRecord>,
    matcher: Vec<MatcherRecord>,
}

/// Random residents from a universe of `universe`, each held by the holder with probability
/// `p_holder` and by the matcher with `p_matcher`.
fn random_data(seed: u64, universe: u64, p_holder: f64, p_matcher: f64, s: &Setup) -> Data {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let mut uniform = move || (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
    let mut holder = Vec::new();
    let mut matcher = Vec::new();
    for i in 0..universe {
        if uniform() < p_holder && holder.len() < s.holder_capacity as usize {
            let values = (0..s.width)
                .map(|_| (uniform() * (s.value_max + 1) as f64) as u64)
                .collect();
            holder.push(HolderRecord {
                identifier: id(i),
                values,
            });
        }
        if uniform() < p_matcher && matcher.len() < s.matcher_capacity as usize {
            let category = (uniform() * s.categories as f64) as u32;
            matcher.push(MatcherRecord {
                identifier: id(i),
                category,
            });
        }
    }
    Data { holder, matcher }
}

/// The table the protocol should produce, by a hash join in the clear.
fn plaintext_join(data: &Data, s: &Setup) -> (Vec<u64>, Vec<u64>) {
    let by_id: HashMap<&[u8], u32> = data
        .matcher
        .iter()
        .map(|m| (m.identifier.as_slice(), m.category))
        .collect();
    let width = s.width as usize;
    let mut table = vec![0u64; s.categories as usize * width];
    let mut counts = vec![0u64; s.categories as usize];
    for h in &data.holder {
        if let Some(&c) = by_id.get(h.identifier.as_slice()) {
            counts[c as usize] += 1;
            for (j, v) in h.values.iter().enumerate() {
                table[c as usize * width + j] += v;
            }
        }
    }
    (table, counts)
}

struct Transcript {
    holder_offer: HolderOffer,
    matcher_offer: MatcherOffer,
    returned: Returned,
    sums: MaskedSums,
    table: Vec<u64>,
    noisy_counts: Vec<u64>,
}

fn run(params: &Params, data: &Data, seed: u64) -> Transcript {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let (holder, holder_offer) =
        holder_start(params.clone(), &data.holder, &mut rng, THREADS).unwrap();
    let (matcher, matcher_offer) =
        matcher_start(params.clone(), &data.matcher, &mut rng, THREADS).unwrap();
    let (holder, returned) = holder
        .respond(&matcher_offer, &mut rng, THREADS)
        .map_err(|e| e.error)
        .unwrap();
    let (output, sums) = matcher
        .finish(&holder_offer, &returned, &mut rng, THREADS)
        .map_err(|e| e.error)
        .unwrap();
    let holder_shares = holder.finish(&sums).map_err(|e| e.error).unwrap();
    let table = holder_shares
        .0
        .iter()
        .zip(&output.shares.0)
        .map(|(a, b)| a.wrapping_add(*b))
        .collect();
    Transcript {
        holder_offer,
        matcher_offer,
        returned,
        sums,
        table,
        noisy_counts: output.noisy_match_counts,
    }
}

#[test]
fn linked_tables_equal_the_plaintext_join_for_random_data_and_overlaps() {
    // (categories, width, holder capacity, matcher capacity, universe, p_holder, p_matcher)
    let cases = [
        (3, 2, 60, 80, 100, 0.5, 0.7),
        (1, 1, 40, 40, 60, 0.6, 0.6),
        (4, 3, 50, 100, 200, 0.2, 0.4),
        // No overlap at all, and every resident at both.
        (2, 2, 30, 30, 30, 1.0, 0.0),
        (2, 2, 30, 30, 30, 1.0, 1.0),
        // Width over one plaintext block (55 slots of 46 bits fit in one; 70 need two).
        (2, 70, 20, 30, 40, 0.5, 0.7),
    ];
    for (n, (categories, width, hc, mc, universe, ph, pm)) in cases.into_iter().enumerate() {
        let s = setup(categories, width, hc, mc);
        let params = Params::new(s.clone()).unwrap();
        let data = random_data(100 + n as u64, universe, ph, pm, &s);
        let (truth, counts) = plaintext_join(&data, &s);
        let t = run(&params, &data, 200 + n as u64);
        assert_eq!(
            t.table, truth,
            "case {n}: the shares must add up to the join"
        );
        for (c, (noisy, exact)) in t.noisy_counts.iter().zip(&counts).enumerate() {
            let dummies = noisy - exact;
            assert!(
                dummies <= 2 * u64::from(s.dummies.shift),
                "case {n}, category {c}: {dummies} dummies"
            );
        }
    }
}

#[test]
fn the_matcher_counts_carry_the_holders_dummies() {
    let s = setup(2, 1, 30, 30);
    let params = Params::new(s.clone()).unwrap();
    let data = random_data(7, 40, 0.7, 0.7, &s);
    let (_, counts) = plaintext_join(&data, &s);
    let t = run(&params, &data, 8);
    // σ = 1 at ρ = 0.5: the counts differ from the truth by a shift of about 7 ± a few.
    let shift = u64::from(s.dummies.shift);
    for (noisy, exact) in t.noisy_counts.iter().zip(&counts) {
        assert!(noisy - exact >= shift - 6 && noisy - exact <= shift + 6);
    }
}

#[test]
fn no_message_carries_an_identifier_or_its_unblinded_point() {
    let s = setup(2, 2, 30, 40);
    let params = Params::new(s.clone()).unwrap();
    let data = random_data(11, 50, 0.6, 0.6, &s);
    let t = run(&params, &data, 12);
    let config = bincode::config::standard().with_fixed_int_encoding();
    let bytes = [
        bincode::serde::encode_to_vec(&t.holder_offer, config).unwrap(),
        bincode::serde::encode_to_vec(&t.matcher_offer, config).unwrap(),
        bincode::serde::encode_to_vec(&t.returned, config).unwrap(),
        bincode::serde::encode_to_vec(&t.sums, config).unwrap(),
    ]
    .concat();
    let identifiers = data
        .holder
        .iter()
        .map(|h| &h.identifier)
        .chain(data.matcher.iter().map(|m| &m.identifier));
    for identifier in identifiers {
        let hashed = WirePoint::of(&identifier_point(&params.session, identifier)).0;
        for needle in [identifier.as_slice(), &hashed[..]] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle),
                "an identifier or its hash is in a message"
            );
        }
    }
}

#[test]
fn message_sizes_depend_only_on_the_public_parameters() {
    let s = setup(3, 2, 50, 60);
    let params = Params::new(s.clone()).unwrap();
    let config = bincode::config::standard().with_fixed_int_encoding();
    let sizes = |data: &Data, seed| {
        let t = run(&params, data, seed);
        [
            bincode::serde::encode_to_vec(&t.holder_offer, config)
                .unwrap()
                .len(),
            bincode::serde::encode_to_vec(&t.matcher_offer, config)
                .unwrap()
                .len(),
            bincode::serde::encode_to_vec(&t.returned, config)
                .unwrap()
                .len(),
            bincode::serde::encode_to_vec(&t.sums, config)
                .unwrap()
                .len(),
        ]
    };
    // A small overlap of few records against a large overlap of full lists.
    let sparse = random_data(21, 200, 0.05, 0.05, &s);
    let dense = random_data(22, 50, 1.0, 1.0, &s);
    assert_eq!(sizes(&sparse, 23), sizes(&dense, 24));
}

/// Runs up to the matcher's `finish`, hands it a tampered message, and checks the refusal
/// and that the untouched state still completes the session with the real messages.
#[test]
fn malformed_replayed_and_out_of_range_messages_are_refused_and_change_nothing() {
    let s = setup(2, 2, 20, 20);
    let params = Params::new(s.clone()).unwrap();
    let data = random_data(31, 30, 0.6, 0.6, &s);
    let (truth, _) = plaintext_join(&data, &s);
    let mut rng = ChaCha20Rng::seed_from_u64(32);
    let (holder, holder_offer) =
        holder_start(params.clone(), &data.holder, &mut rng, THREADS).unwrap();
    let (matcher, matcher_offer) =
        matcher_start(params.clone(), &data.matcher, &mut rng, THREADS).unwrap();

    // A replay from another session: same data, another round.
    let other = Params::new(Setup {
        context: b"another round".to_vec(),
        ..s.clone()
    })
    .unwrap();
    let (_, other_matcher_offer) = matcher_start(other, &data.matcher, &mut rng, THREADS).unwrap();

    let bad_point = WirePoint([0xff; 32]);
    let identity = WirePoint([0; 32]);
    let mut matcher_offers: Vec<(MatcherOffer, LinkError)> =
        vec![(other_matcher_offer, LinkError::WrongSession)];
    let mut m = matcher_offer.clone();
    m.points.pop();
    matcher_offers.push((m, LinkError::WrongSize));
    let mut m = matcher_offer.clone();
    m.category_keys.push(m.category_keys[0]);
    matcher_offers.push((m, LinkError::WrongSize));
    let mut m = matcher_offer.clone();
    m.points[3] = bad_point;
    matcher_offers.push((m, LinkError::BadPoint));
    let mut m = matcher_offer.clone();
    m.category_keys[1] = identity;
    matcher_offers.push((m, LinkError::BadPoint));
    let mut m = matcher_offer.clone();
    m.points[5] = m.points[4];
    matcher_offers.push((m, LinkError::DuplicatePoint));

    let mut holder = holder;
    for (bad, expected) in &matcher_offers {
        let refused = holder.respond(bad, &mut rng, THREADS).expect_err("refused");
        let (back, error) = (refused.state, refused.error);
        assert_eq!(error, *expected);
        holder = back;
    }
    let (holder, returned) = holder
        .respond(&matcher_offer, &mut rng, THREADS)
        .map_err(|e| e.error)
        .unwrap();

    let mut holder_offers: Vec<(HolderOffer, LinkError)> = Vec::new();
    let mut h = holder_offer.clone();
    h.session[0] ^= 1;
    holder_offers.push((h, LinkError::WrongSession));
    let mut h = holder_offer.clone();
    h.ciphertexts.pop();
    holder_offers.push((h, LinkError::WrongSize));
    let mut h = holder_offer.clone();
    h.ciphertexts[2] = WireCiphertext(vec![0xff; 768]);
    holder_offers.push((h, LinkError::CiphertextOutOfRange));
    let mut h = holder_offer.clone();
    h.ciphertexts[2] = WireCiphertext(vec![0; 768]);
    holder_offers.push((h, LinkError::CiphertextOutOfRange));
    let mut h = holder_offer.clone();
    h.key.0[383] &= 0xfe;
    holder_offers.push((h, LinkError::BadKey));
    let mut h = holder_offer.clone();
    h.points[0] = identity;
    holder_offers.push((h, LinkError::BadPoint));

    let mut matcher = matcher;
    for (bad, expected) in &holder_offers {
        let refused = matcher
            .finish(bad, &returned, &mut rng, THREADS)
            .expect_err("refused");
        let (back, error) = (refused.state, refused.error);
        assert_eq!(error, *expected);
        matcher = back;
    }
    let mut r = returned.clone();
    r.points.truncate(r.points.len() - 1);
    let refused = matcher
        .finish(&holder_offer, &r, &mut rng, THREADS)
        .err()
        .unwrap();
    let (back, error) = (refused.state, refused.error);
    assert_eq!(error, LinkError::WrongSize);
    let mut r = returned.clone();
    r.points[1] = r.points[0];
    let refused = back
        .finish(&holder_offer, &r, &mut rng, THREADS)
        .err()
        .unwrap();
    let (matcher, error) = (refused.state, refused.error);
    assert_eq!(error, LinkError::DuplicatePoint);

    let (output, sums) = matcher
        .finish(&holder_offer, &returned, &mut rng, THREADS)
        .map_err(|e| e.error)
        .unwrap();

    let mut bad_sums = Vec::new();
    let mut b = sums.clone();
    b.ciphertexts.push(b.ciphertexts[0].clone());
    bad_sums.push((b, LinkError::WrongSize));
    let mut b = sums.clone();
    b.ciphertexts[0] = WireCiphertext(vec![0xff; 768]);
    bad_sums.push((b, LinkError::CiphertextOutOfRange));
    let mut b = sums.clone();
    b.session = [0; 32];
    bad_sums.push((b, LinkError::WrongSession));
    let mut holder = holder;
    for (bad, expected) in &bad_sums {
        let refused = holder.finish(bad).err().unwrap();
        let (back, error) = (refused.state, refused.error);
        assert_eq!(error, *expected);
        holder = back;
    }
    let holder_shares = holder.finish(&sums).map_err(|e| e.error).unwrap();
    let table: Vec<u64> = holder_shares
        .0
        .iter()
        .zip(&output.shares.0)
        .map(|(a, b)| a.wrapping_add(*b))
        .collect();
    assert_eq!(
        table, truth,
        "after every refusal the session still completes correctly"
    );
}

#[test]
fn local_records_outside_the_public_bounds_are_refused() {
    let s = setup(2, 2, 3, 3);
    let params = Params::new(s).unwrap();
    let mut rng = ChaCha20Rng::seed_from_u64(41);
    let record = |i, values: Vec<u64>| HolderRecord {
        identifier: id(i),
        values,
    };
    let cases = [
        (
            vec![record(1, vec![1, 1]); 2],
            LinkError::DuplicateIdentifier,
        ),
        (
            (0..4).map(|i| record(i, vec![0, 0])).collect(),
            LinkError::OverCapacity,
        ),
        (vec![record(1, vec![10, 0])], LinkError::ValueOutOfRange),
        (vec![record(1, vec![1])], LinkError::ValueOutOfRange),
    ];
    for (records, expected) in cases {
        assert_eq!(
            holder_start(params.clone(), &records, &mut rng, 1).err(),
            Some(expected)
        );
    }
    let out_of_domain = [MatcherRecord {
        identifier: id(1),
        category: 2,
    }];
    assert_eq!(
        matcher_start(params, &out_of_domain, &mut rng, 1).err(),
        Some(LinkError::ValueOutOfRange)
    );
}

/// What the coordinator records of a session: each message sealed end to end, in order.
fn coordinator_view(params: &Params, data: &Data, seed: u64) -> Vec<Vec<u8>> {
    use civic_linkage::relay::{Phase, RelayKey, Role};
    use civic_secagg::identity::IdentityKey;
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let (h_id, m_id) = (
        IdentityKey::generate(&mut rng),
        IdentityKey::generate(&mut rng),
    );
    let (h_key, h_signed) = RelayKey::new(&mut rng, &h_id, params.session, Role::Holder);
    let (m_key, m_signed) = RelayKey::new(&mut rng, &m_id, params.session, Role::Matcher);
    let h_channel = h_key.channel(&m_signed, &m_id.public()).unwrap();
    let m_channel = m_key.channel(&h_signed, &h_id.public()).unwrap();
    let t = run(params, data, seed + 1);
    let view = vec![
        h_channel.seal(&mut rng, Phase::HolderOffer, &encode(&t.holder_offer)),
        m_channel.seal(&mut rng, Phase::MatcherOffer, &encode(&t.matcher_offer)),
        h_channel.seal(&mut rng, Phase::Returned, &encode(&t.returned)),
        m_channel.seal(&mut rng, Phase::MaskedSums, &encode(&t.sums)),
    ];
    // The peers open what the coordinator relayed.
    assert_eq!(
        m_channel.open(Phase::HolderOffer, &view[0]).unwrap(),
        encode(&t.holder_offer)
    );
    assert_eq!(
        h_channel.open(Phase::MaskedSums, &view[3]).unwrap(),
        encode(&t.sums)
    );
    view
}

fn encode<T: serde::Serialize>(message: &T) -> Vec<u8> {
    let config = bincode::config::standard().with_fixed_int_encoding();
    bincode::serde::encode_to_vec(message, config).unwrap()
}

/// Pearson's χ² of byte values against uniform.
fn chi_square(bytes: &[u8]) -> f64 {
    let mut counts = [0u64; 256];
    bytes.iter().for_each(|b| counts[*b as usize] += 1);
    let expected = bytes.len() as f64 / 256.0;
    counts
        .iter()
        .map(|c| (*c as f64 - expected).powi(2) / expected)
        .sum()
}

#[test]
fn the_coordinators_view_of_two_datasets_is_sealed_bytes_of_the_same_lengths() {
    let s = setup(2, 2, 40, 60);
    let params = Params::new(s.clone()).unwrap();
    let sparse = random_data(51, 300, 0.05, 0.05, &s);
    let dense = random_data(52, 60, 1.0, 1.0, &s);
    let a = coordinator_view(&params, &sparse, 53);
    let b = coordinator_view(&params, &dense, 53);
    let lengths = |v: &[Vec<u8>]| v.iter().map(Vec::len).collect::<Vec<_>>();
    assert_eq!(
        lengths(&a),
        lengths(&b),
        "lengths are fixed by the public parameters"
    );
    // Sealed bytes are uniform: χ² with 255 degrees of freedom stays below 330 (p ≈ 0.001)
    // for each view, and the two views differ in every message.
    for view in [&a, &b] {
        let all: Vec<u8> = view.concat();
        assert!(all.len() > 50_000, "{}", all.len());
        let chi = chi_square(&all);
        assert!(chi < 330.0, "χ² = {chi}");
    }
    assert!(a.iter().zip(&b).all(|(x, y)| x != y));
    // The test can tell: the same messages unsealed are far from uniform.
    let t = run(&params, &dense, 54);
    let plain = [
        encode(&t.holder_offer),
        encode(&t.matcher_offer),
        encode(&t.returned),
        encode(&t.sums),
    ]
    .concat();
    assert!(chi_square(&plain) > 1000.0, "χ² = {}", chi_square(&plain));
}
