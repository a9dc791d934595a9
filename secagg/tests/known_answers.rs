//! Known-answer tests for the KDF, PRG, AEAD and Shamir layers, against the vector files in
//! `tests/vectors/` (made by `generate.py`, an independent Python implementation checked
//! against RFC 5869, RFC 8439, FIPS 197 and NIST SP 800-38A). Each file has valid cases and negative cases.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};
use civic_secagg::kdf::{Purpose, derive, share_encryption_key};
use civic_secagg::prg::{MaskPrg, expand};
use civic_secagg::ring::Width;
use civic_secagg::round::{PartnerId, RoundId};
use civic_secagg::shamir::{
    LagrangeAtZero, SecretScalar, Share, reconstruct, split_with_coefficients,
};
use civic_secagg::share_encryption::{SharePair, associated_data, open, seal};
use serde_json::Value;

fn vectors(text: &str) -> Value {
    serde_json::from_str(text).expect("vector files are valid JSON")
}

fn hex_of(v: &Value, field: &str) -> Vec<u8> {
    hex::decode(
        v[field]
            .as_str()
            .unwrap_or_else(|| panic!("{field} is a string")),
    )
    .expect("hex")
}

fn arr32(v: &Value, field: &str) -> [u8; 32] {
    hex_of(v, field).try_into().expect("32 bytes")
}

fn num(v: &Value, field: &str) -> u64 {
    v[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} is a number"))
}

fn partner(v: &Value, field: &str) -> PartnerId {
    PartnerId(u32::try_from(num(v, field)).expect("u32 partner id"))
}

fn purpose(name: &str) -> Purpose {
    match name {
        "pairwise-mask" => Purpose::PairwiseMask,
        "share-encryption" => Purpose::ShareEncryption,
        "self-mask" => Purpose::SelfMask,
        other => panic!("unknown purpose {other}"),
    }
}

fn kdf_of(case: &Value) -> [u8; 32] {
    *derive(
        &arr32(case, "ikm"),
        purpose(case["purpose"].as_str().expect("purpose")),
        RoundId(num(case, "round_id")),
        partner(case, "first"),
        partner(case, "second"),
    )
    .as_bytes()
}

#[test]
fn kdf_matches_rfc5869_and_our_vectors() {
    let v = vectors(include_str!("vectors/kdf.json"));
    for case in v["rfc5869"].as_array().expect("rfc5869") {
        let okm = hex_of(case, "okm");
        let mut out = vec![0u8; okm.len()];
        hkdf::Hkdf::<sha2::Sha256>::new(Some(&hex_of(case, "salt")), &hex_of(case, "ikm"))
            .expand(&hex_of(case, "info"), &mut out)
            .expect("valid length");
        assert_eq!(out, okm);
    }
    let valid = v["valid"].as_array().expect("valid");
    assert!(valid.len() >= 6);
    for case in valid {
        assert_eq!(
            hex::encode(kdf_of(case)),
            case["okm"].as_str().expect("okm"),
            "{case}"
        );
    }
    let invalid = v["invalid"].as_array().expect("invalid");
    assert!(invalid.len() >= 3);
    for case in invalid {
        assert_ne!(
            hex::encode(kdf_of(case)),
            case["okm"].as_str().expect("okm"),
            "{}",
            case["why"]
        );
    }
}

/// The vector's expected words (decimal strings, for u64 safety in JSON).
fn listed_words(case: &Value) -> Vec<u64> {
    case["words"]
        .as_array()
        .expect("words")
        .iter()
        .map(|w| w.as_str().expect("decimal string").parse().expect("u64"))
        .collect()
}

/// The words our PRG layout produces for the vector's key and width.
fn prg_words(case: &Value) -> Vec<u64> {
    let width = match num(case, "width") {
        32 => Width::W32,
        64 => Width::W64,
        w => panic!("width {w}"),
    };
    let expected = listed_words(case);
    // The vector's key is used directly as the generator's key (a DerivedKey made through
    // the KDF cannot be forged from bytes).
    let mut bytes = vec![0u8; expected.len() * width.bytes()];
    MaskPrg::new(&arr32(case, "key")).fill(&mut bytes);
    let got: Vec<u64> = bytes
        .chunks_exact(width.bytes())
        .map(|c| {
            let mut w = [0u8; 8];
            w[..c.len()].copy_from_slice(c);
            u64::from_le_bytes(w)
        })
        .collect();
    assert_eq!(got.len(), expected.len());
    got
}

#[test]
fn prg_matches_fips197_and_sp800_38a_aes256_and_our_vectors() {
    use aes::cipher::{BlockEncrypt, KeyInit as _};
    let v = vectors(include_str!("vectors/prg.json"));
    for case in v["fips197_aes256"].as_array().expect("fips") {
        let cipher = aes::Aes256::new(&arr32(case, "key").into());
        let mut block: [u8; 16] = hex_of(case, "plaintext").try_into().expect("16");
        cipher.encrypt_block((&mut block).into());
        assert_eq!(hex::encode(block), case["ciphertext"].as_str().expect("ct"));
    }
    for case in v["sp800_38a_ctr_aes256"].as_array().expect("sp800-38a") {
        // Its counter starts at f0f1…ff, beyond any offset the generator seeks to.
        let start = u128::from_str_radix(case["counter"].as_str().expect("counter"), 16)
            .expect("hex counter");
        let mut prg = MaskPrg::new(&arr32(case, "key"));
        let mut stream = [0u8; 32];
        // A byte offset of start·16 overflows u64: check the block function the CTR mode
        // wraps instead, block by block.
        let cipher = aes::Aes256::new(&arr32(case, "key").into());
        for (i, out) in stream.chunks_exact_mut(16).enumerate() {
            let mut block = (start + i as u128).to_be_bytes();
            cipher.encrypt_block((&mut block).into());
            out.copy_from_slice(&block);
        }
        assert_eq!(hex::encode(stream), case["keystream"].as_str().expect("ks"));
        // And the generator's first block is the block function at counter 0.
        let mut zero = [0u8; 16];
        cipher.encrypt_block((&mut zero).into());
        let mut first = [0u8; 16];
        prg.fill(&mut first);
        assert_eq!(first, zero);
    }
    for case in v["valid"].as_array().expect("valid") {
        assert_eq!(prg_words(case), listed_words(case));
    }
    for case in v["invalid"].as_array().expect("invalid") {
        assert_ne!(prg_words(case), listed_words(case), "{}", case["why"]);
    }
}

#[test]
fn prg_expand_reads_the_keystream_as_little_endian_words() {
    // The mask generator itself, through a real derived key, against the raw keystream.
    let key = derive(
        &[9; 32],
        Purpose::SelfMask,
        RoundId(1),
        PartnerId(2),
        PartnerId(2),
    );
    let mut bytes = [0u8; 40 * 8];
    MaskPrg::new(key.as_bytes()).fill(&mut bytes);
    let w64: Vec<u64> = bytes
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().expect("8")))
        .collect();
    let w32: Vec<u64> = bytes
        .chunks_exact(4)
        .take(40)
        .map(|c| u64::from(u32::from_le_bytes(c.try_into().expect("4"))))
        .collect();
    assert_eq!(expand(&key, Width::W64, 40).words(), &w64[..]);
    assert_eq!(expand(&key, Width::W32, 40).words(), &w32[..]);
}

fn scalar(case: &Value, field: &str) -> SecretScalar {
    SecretScalar::from_canonical_bytes(arr32(case, field)).expect("canonical")
}

#[test]
fn aead_matches_rfc8439_and_our_vectors_and_rejects_tampering() {
    let v = vectors(include_str!("vectors/aead.json"));
    for case in v["rfc8439"].as_array().expect("rfc") {
        let cipher = ChaCha20Poly1305::new(&arr32(case, "key").into());
        let nonce: [u8; 12] = hex_of(case, "nonce").try_into().expect("12");
        let sealed = cipher
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: &hex_of(case, "plaintext"),
                    aad: &hex_of(case, "aad"),
                },
            )
            .expect("encrypts");
        assert_eq!(
            hex::encode(sealed),
            case["ciphertext_and_tag"].as_str().expect("ct")
        );
    }
    for case in v["valid"].as_array().expect("valid") {
        let (round, sender, recipient) = (
            RoundId(num(case, "round_id")),
            partner(case, "sender"),
            partner(case, "recipient"),
        );
        let key = share_encryption_key(&arr32(case, "ikm"), round, sender, recipient);
        assert_eq!(
            hex::encode(key.as_bytes()),
            case["key"].as_str().expect("key")
        );
        assert_eq!(
            hex::encode(associated_data(round, sender, recipient)),
            case["aad"].as_str().expect("aad")
        );
        let pair = SharePair {
            self_mask: scalar(case, "b_share"),
            mask_key: scalar(case, "sk_share"),
        };
        let nonce: [u8; 12] = hex_of(case, "nonce").try_into().expect("12");
        let ct = seal(&key, &nonce, round, sender, recipient, &pair);
        assert_eq!(
            hex::encode(&ct),
            case["ciphertext_and_tag"].as_str().expect("ct")
        );
        assert_eq!(
            open(&key, &nonce, round, sender, recipient, &ct).expect("opens"),
            pair
        );
    }
    let invalid = v["invalid"].as_array().expect("invalid");
    assert!(invalid.len() >= 4);
    for case in invalid {
        let (round, sender, recipient) = (
            RoundId(num(case, "round_id")),
            partner(case, "sender"),
            partner(case, "recipient"),
        );
        let key = share_encryption_key(&arr32(case, "ikm"), round, sender, recipient);
        let nonce: [u8; 12] = hex_of(case, "nonce").try_into().expect("12");
        let err = open(
            &key,
            &nonce,
            round,
            sender,
            recipient,
            &hex_of(case, "ciphertext_and_tag"),
        )
        .expect_err(case["why"].as_str().expect("why"));
        assert_eq!(err.code(), "secagg.bad_ciphertext", "{}", case["why"]);
    }
}

fn shares_of(case: &Value) -> Result<Vec<Share>, civic_secagg::SecAggError> {
    case["shares"]
        .as_array()
        .expect("shares")
        .iter()
        .map(|s| {
            Ok(Share {
                holder: partner(s, "partner"),
                value: SecretScalar::from_canonical_bytes(arr32(s, "value"))?,
            })
        })
        .collect()
}

#[test]
fn shamir_matches_our_vectors_and_rejects_bad_shares() {
    let v = vectors(include_str!("vectors/shamir.json"));
    for case in v["valid"].as_array().expect("valid") {
        let coefficients: Vec<SecretScalar> = case["coefficients"]
            .as_array()
            .expect("coefficients")
            .iter()
            .map(|c| {
                SecretScalar::from_canonical_bytes(
                    hex::decode(c.as_str().expect("hex"))
                        .expect("hex")
                        .try_into()
                        .expect("32"),
                )
                .expect("canonical")
            })
            .collect();
        assert_eq!(coefficients.len() + 1, num(case, "threshold") as usize);
        let expected = shares_of(case).expect("canonical shares");
        let holders: Vec<PartnerId> = expected.iter().map(|s| s.holder).collect();
        assert_eq!(
            split_with_coefficients(&scalar(case, "secret"), &coefficients, &holders),
            expected
        );
    }
    for case in v["reconstruct"].as_array().expect("reconstruct") {
        let shares = shares_of(case).expect("canonical shares");
        assert_eq!(
            reconstruct(&shares, num(case, "threshold") as usize).expect("enough shares"),
            scalar(case, "secret")
        );
    }
    for case in v["invalid"].as_array().expect("invalid") {
        let why = case["why"].as_str().expect("why");
        let t = num(case, "threshold") as usize;
        match case["expect"].as_str().expect("expect") {
            "wrong_secret" => {
                let shares = shares_of(case).expect("canonical shares");
                assert!(reconstruct(&shares, t).is_err(), "{why}");
                let holders: Vec<PartnerId> = shares.iter().map(|s| s.holder).collect();
                let guess = LagrangeAtZero::new(&holders)
                    .expect("distinct")
                    .interpolate(shares.iter().map(|s| &s.value))
                    .expect("same count");
                assert_ne!(guess, scalar(case, "secret"), "{why}");
            }
            "non_canonical" => {
                let err = shares_of(case).expect_err(why);
                assert_eq!(err.code(), "secagg.shamir");
            }
            "duplicate_partner" => {
                let err =
                    reconstruct(&shares_of(case).expect("canonical shares"), t).expect_err(why);
                assert!(
                    err.to_string().contains("two shares come from partner"),
                    "{why}: {err}"
                );
            }
            other => panic!("unknown expectation {other}"),
        }
    }
}
