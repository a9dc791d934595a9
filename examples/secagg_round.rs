//! One secure-aggregation round among twelve partners of a city-region co-operative, in
//! memory, with real cryptography: each partner holds a count vector, one partner drops out
//! after sharing its keys, and the coordinator learns only the survivors' total.
//!
//! `cargo run --release --example secagg_round`

use std::collections::BTreeMap;

use civic_secagg::messages::Phase;
use civic_secagg::round::{PartnerId, RoundConfig, RoundId};
use civic_secagg::testing::run_round_capturing;
use civic_secagg::{GraphKind, RingVector, Tolerances, Width};

const PARTNERS: [&str; 12] = [
    "North GP federation",
    "Central GP federation",
    "South GP federation",
    "East GP federation",
    "West GP federation",
    "Riverside GP federation",
    "Acute hospital trust",
    "Community & mental-health trust",
    "Council adult social care",
    "Council housing",
    "Housing association A",
    "Housing association B",
];
const CELLS: [&str; 4] = ["falls 65-74", "falls 75-84", "falls 85+", "residents 65+"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let participants: Vec<PartnerId> = (0..PARTNERS.len() as u32).map(PartnerId).collect();
    // Each slot is a count: at most 50,000 per partner, so the 12-partner sum fits 32 bits.
    let width = Width::for_layout(50_000, participants.len(), 0)?;
    let config = RoundConfig::new(
        RoundId(1),
        participants.clone(),
        CELLS.len(),
        width,
        GraphKind::Complete,
        // Withstand three dropouts, and one partner colluding with the coordinator.
        Tolerances {
            max_dropout_rate: 0.25,
            max_corrupt_fraction: 0.1,
        },
        3,
    )?;

    let inputs: BTreeMap<PartnerId, RingVector> = participants
        .iter()
        .map(|&p| {
            let base = 40 + 13 * i64::from(p.0);
            let counts = [base, base * 2 / 3, base / 3, 900 + 120 * i64::from(p.0)];
            Ok((p, RingVector::from_signed(width, &counts)?))
        })
        .collect::<Result<_, civic_secagg::SecAggError>>()?;
    let dropped = PartnerId(7);
    let drops = BTreeMap::from([(dropped, Phase::MaskedInputCollection)]);

    let (aggregate, capture) = run_round_capturing(&config, &inputs, &drops, 2026)?;

    println!(
        "round {}: {} partners invited, threshold t = {}, ring Z_2^{}",
        config.round_id,
        participants.len(),
        config.threshold,
        width.bits()
    );
    println!(
        "{} dropped after ShareKeys; its pairwise masks were recovered from its neighbours' shares",
        PARTNERS[dropped.0 as usize]
    );
    println!(
        "survivors ({}): {:?}",
        aggregate.survivors.len(),
        aggregate.survivors.iter().map(|p| p.0).collect::<Vec<_>>()
    );
    let sum = aggregate.sum.to_signed();
    let truth: Vec<i64> = (0..CELLS.len())
        .map(|i| {
            aggregate
                .survivors
                .iter()
                .map(|p| inputs[p].to_signed()[i])
                .sum()
        })
        .collect();
    for ((cell, value), truth) in CELLS.iter().zip(&sum).zip(&truth) {
        println!("  {cell:<14} secure sum {value:>7}   plain sum {truth:>7}");
    }
    let p0 = &capture.masked_inputs[0];
    println!(
        "what the coordinator saw from {}: {:?}... (uniformly random words, not its counts {:?})",
        PARTNERS[p0.sender.0 as usize],
        &p0.vector.words()[..2],
        &inputs[&p0.sender].to_signed()[..2]
    );
    Ok(())
}
