//! The secagg messages on the wire: fixed-width binary for vectors, JSON that refuses unknown
//! fields, and decoders that never panic on arbitrary bytes.

use std::collections::BTreeMap;

use civic_secagg::messages::ClientMessage;
use civic_secagg::round::{PartnerId, RoundConfig, RoundId};
use civic_secagg::testing::run_round_capturing;
use civic_secagg::{GraphKind, RingVector, Tolerances, Width};

const TOLERANCES: Tolerances = Tolerances {
    max_dropout_rate: 0.25,
    max_corrupt_fraction: 0.0,
};
use proptest::prelude::*;

fn fixed() -> impl bincode::config::Config {
    bincode::config::standard().with_fixed_int_encoding()
}

fn sample_round() -> civic_secagg::testing::RoundCapture {
    let participants: Vec<PartnerId> = (1..=4).map(PartnerId).collect();
    let config = RoundConfig::new(
        RoundId(77),
        participants.clone(),
        1000,
        Width::W32,
        GraphKind::Complete,
        TOLERANCES,
        3,
    )
    .expect("valid");
    let inputs: BTreeMap<PartnerId, RingVector> = participants
        .iter()
        .map(|&p| {
            (
                p,
                RingVector::from_signed(Width::W32, &vec![i64::from(p.0); 1000]).expect("fits"),
            )
        })
        .collect();
    run_round_capturing(&config, &inputs, &BTreeMap::new(), 1)
        .expect("completes")
        .1
}

#[test]
fn masked_vectors_cost_their_fixed_width_and_nothing_more() {
    let capture = sample_round();
    let msg = ClientMessage::MaskedInput(capture.masked_inputs[0].clone());
    let bytes = bincode::serde::encode_to_vec(&msg, fixed()).expect("encodes");
    // 4 bytes per element, plus a fixed header: variant, round id, sender, width, length.
    assert_eq!(bytes.len(), 1000 * 4 + 4 + 8 + 4 + 4 + 8);
    let (back, used): (ClientMessage, usize) =
        bincode::serde::decode_from_slice(&bytes, fixed()).expect("decodes");
    assert_eq!((back, used), (msg, bytes.len()));
}

#[test]
fn json_round_trips_and_refuses_unknown_fields() {
    let capture = sample_round();
    let msg = ClientMessage::MaskedInput(capture.masked_inputs[1].clone());
    let json = serde_json::to_string(&msg).expect("encodes");
    assert_eq!(
        serde_json::from_str::<ClientMessage>(&json).expect("decodes"),
        msg
    );
    let extra = json.replacen("\"round_id\"", "\"debug\":true,\"round_id\"", 1);
    let err = serde_json::from_str::<ClientMessage>(&extra).expect_err("unknown field");
    assert!(err.to_string().contains("unknown field `debug`"), "{err}");
    let ragged =
        r#"{"masked_input":{"round_id":1,"sender":2,"vector":{"width":"64","bytes":[1,2,3]}}}"#;
    let err = serde_json::from_str::<ClientMessage>(ragged).expect_err("ragged vector");
    assert!(err.to_string().contains("whole number"), "{err}");
}

#[test]
fn a_truncated_message_is_an_error_not_a_panic() {
    let capture = sample_round();
    let msg = ClientMessage::MaskedInput(capture.masked_inputs[2].clone());
    let bytes = bincode::serde::encode_to_vec(&msg, fixed()).expect("encodes");
    for cut in [0, 1, 12, bytes.len() / 2, bytes.len() - 1] {
        assert!(
            bincode::serde::decode_from_slice::<ClientMessage, _>(&bytes[..cut], fixed()).is_err(),
            "cut at {cut}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, .. ProptestConfig::default() })]

    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        // Bound what a hostile length prefix may make the decoder allocate.
        let limited = bincode::config::standard().with_fixed_int_encoding().with_limit::<{ 1 << 20 }>();
        let _ = bincode::serde::decode_from_slice::<ClientMessage, _>(&bytes, limited);
        let _ = serde_json::from_slice::<ClientMessage>(&bytes);
    }

    #[test]
    fn decoding_mutated_messages_never_panics(flip in 0usize..4096, bit in 0u8..8) {
        let participants: Vec<PartnerId> = (1..=3).map(PartnerId).collect();
        let config = RoundConfig::new(RoundId(1), participants.clone(), 8, Width::W64, GraphKind::Complete, TOLERANCES, 2).expect("valid");
        let json = serde_json::to_vec(&config).expect("encodes");
        let mut mutated = json.clone();
        let i = flip % mutated.len();
        mutated[i] ^= 1 << bit;
        if let Ok(decoded) = serde_json::from_slice::<RoundConfig>(&mutated) {
            // Whatever decodes must still pass or fail validation cleanly.
            let _ = decoded.validate();
        }
    }
}
