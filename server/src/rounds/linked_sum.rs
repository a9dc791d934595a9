//! A linked round (`linked-sum/v1`): the pairwise private joins between the two sides'
//! partners (`civic_linkage`), relayed, then the secure sum of what each partner holds of
//! the joins' tables plus its noise share.
//!
//! The coordinator is a relay here. Each join step, every partner still in the round posts
//! one message whose envelopes are sealed end to end for other partners (X25519 keys signed
//! by the identities the board's manifest lists, which agents check, never the coordinator).
//! When the step closes each partner's inbox holds what was sealed for it, and who is still
//! in the round. The coordinator checks only what it can see: the round and sender, one post
//! per partner per step, and at most one envelope for each other participant. It takes no
//! part in the sessions: which partner is on which side is the agents' to check, from the
//! board's policy.
//!
//! A partner that misses a join step is out of the round: envelopes still addressed to it
//! are dropped, its counterparts end their sessions with it, and the release's receipt names
//! its pairs as dropped. The joins must leave at least one complete pair, among at least the
//! round's survivor floor of partners, or the round is aborted. Once the joins are done, a
//! pair's two shares only add up to its table together, so every partner in a completed pair
//! must be among the secure sum's contributors: if one has not advertised its keys when that
//! step closes (or drops out later), the round is aborted and refunded rather than release a
//! sum with half a pair in it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use actix_web::web::Bytes;
use civic_api::round::{Envelope, JoinInbox, JoinStep, LinkedMessage};
use civic_api::{decode_binary, encode_binary};
use civic_secagg::{ClientMessage, PartnerId};

use super::protocol::{Closed, Protocol, ProtocolError, ProtocolRound};
use super::secure_sum::SecureSumRound;
use crate::store::RoundSetup;

/// The protocol.
#[derive(Clone, Copy, Debug, Default)]
pub struct LinkedSum;

/// Its name, stored with each round.
pub const NAME: &str = "linked-sum/v1";

const STEPS: [&str; 9] = [
    "relay_keys",
    "offers",
    "returns",
    "sums",
    "advertise_keys",
    "share_keys",
    "masked_input_collection",
    "consistency_check",
    "unmasking",
];

impl Protocol for LinkedSum {
    fn name(&self) -> &'static str {
        NAME
    }

    fn steps(&self) -> &'static [&'static str] {
        &STEPS
    }

    fn start(
        &self,
        round: i64,
        setup: &RoundSetup,
    ) -> Result<Box<dyn ProtocolRound>, ProtocolError> {
        Ok(Box::new(LinkedSumRound::new(round, setup)?))
    }
}

#[derive(Clone)]
struct LinkedSumRound {
    round: i64,
    /// The join's state while a join step is open; `None` once the secure sum has begun.
    join: Option<Join>,
    /// Partners that answered every closed join step (at first, every participant): the
    /// ones still in the round.
    present: BTreeSet<PartnerId>,
    /// Every participant.
    participants: BTreeSet<PartnerId>,
    /// The fewest partners the complete pairs must hold between them.
    min_survivors: usize,
    /// What the last closed join step delivered to each partner, encoded once.
    delivered: Arc<HashMap<PartnerId, Bytes>>,
    nothing_new: Bytes,
    /// Each pair whose join completed (the matcher's masked sums delivered one way and the
    /// holder's acknowledgement the other), lower id first: the coordinator does not know
    /// which is which.
    pairs: Vec<(PartnerId, PartnerId)>,
    sum: SecureSumRound,
}

#[derive(Clone)]
struct Join {
    /// The open step's index in [`JoinStep::ALL`].
    step: usize,
    /// The open step's posts.
    /// Shared, so that the copy the driver closes a step on does not copy every envelope
    /// (a padded list is tens of megabytes).
    posted: Arc<BTreeMap<PartnerId, Vec<Envelope>>>,
}

/// A decoded message, with what it belongs to.
enum Message {
    Join(Vec<Envelope>),
    Sum(ClientMessage),
}

impl LinkedSumRound {
    fn new(round: i64, setup: &RoundSetup) -> Result<Self, ProtocolError> {
        Ok(Self {
            round,
            join: Some(Join {
                step: 0,
                posted: Arc::default(),
            }),
            present: setup.config.participants.iter().copied().collect(),
            participants: setup.config.participants.iter().copied().collect(),
            min_survivors: setup.config.min_survivors,
            delivered: Arc::new(HashMap::new()),
            nothing_new: Bytes::from(encode_binary(&JoinInbox::Nothing)),
            pairs: Vec::new(),
            sum: SecureSumRound::new(round, setup)?,
        })
    }

    fn malformed(&self, reason: impl Into<String>) -> ProtocolError {
        ProtocolError::Malformed {
            round: self.round,
            reason: reason.into(),
        }
    }

    /// Decodes a message and checks it names this round and its poster (both parts).
    fn decode(
        &self,
        partner: PartnerId,
        body: &[u8],
    ) -> Result<(&'static str, Message), ProtocolError> {
        match decode_binary::<LinkedMessage>(body).map_err(|r| self.malformed(r))? {
            LinkedMessage::Join {
                round,
                sender,
                step,
                envelopes,
            } => {
                if sender != partner {
                    return Err(ProtocolError::Impersonation {
                        partner,
                        claimed: sender,
                    });
                }
                if round != self.round as u64 {
                    return Err(ProtocolError::WrongRound {
                        round: self.round,
                        named: round,
                    });
                }
                Ok((step.as_str(), Message::Join(envelopes)))
            }
            LinkedMessage::SecAgg(msg) => {
                self.sum.check_sender(partner, &msg)?;
                Ok((SecureSumRound::step_of_message(&msg), Message::Sum(msg)))
            }
        }
    }

    /// Whether `partner` may post `envelopes` in the open join step, changing nothing.
    fn check_join(
        &self,
        partner: PartnerId,
        step: &'static str,
        envelopes: &[Envelope],
    ) -> Result<(), ProtocolError> {
        let Some(join) = &self.join else {
            return Err(self.refused(format!(
                "the joins are over; a {step} message comes too late"
            )));
        };
        let open = JoinStep::ALL[join.step].as_str();
        if step != open {
            return Err(self.refused(format!(
                "a {step} message was posted while step {open} is open"
            )));
        }
        if !self.present.contains(&partner) {
            return Err(ProtocolError::NotForPartner {
                round: self.round,
                partner,
            });
        }
        if join.posted.contains_key(&partner) {
            return Err(self.refused(format!(
                "partner {partner} has already posted its {step} message"
            )));
        }
        let mut to = BTreeSet::new();
        for e in envelopes {
            // One addressed to a participant that has left is taken and dropped: the sender
            // could not know it had left.
            if e.to == partner || !self.participants.contains(&e.to) {
                return Err(self.malformed(format!(
                    "an envelope is addressed to partner {}, which is not another participant",
                    e.to
                )));
            }
            if !to.insert(e.to) {
                return Err(
                    self.malformed(format!("two envelopes are addressed to partner {}", e.to))
                );
            }
        }
        Ok(())
    }

    /// Whether a decoded message may be taken now, changing nothing.
    fn check_message(
        &self,
        partner: PartnerId,
        step: &'static str,
        message: &Message,
    ) -> Result<(), ProtocolError> {
        match message {
            Message::Join(envelopes) => self.check_join(partner, step, envelopes),
            Message::Sum(msg) => {
                if self.join.is_some() {
                    return Err(self.refused(format!(
                        "a {step} message was posted before the joins are over"
                    )));
                }
                if !self.present.contains(&partner) {
                    return Err(ProtocolError::NotForPartner {
                        round: self.round,
                        partner,
                    });
                }
                self.sum.check_message(partner, msg)
            }
        }
    }

    fn refused(&self, why: String) -> ProtocolError {
        ProtocolError::Refused(format!("round {}: {why}", self.round))
    }

    /// Closes the open join step: who posted stays in the round, and each gets what the
    /// others posted for it.
    fn close_join(&mut self) -> Result<Closed, ProtocolError> {
        let Some(join) = self.join.as_mut() else {
            return Err(self.refused("no join step is open".into()));
        };
        let step = JoinStep::ALL[join.step];
        let present: BTreeSet<PartnerId> = join.posted.keys().copied().collect();
        if present.len() < 2 {
            return Err(self.refused(format!(
                "{} partner(s) answered step {}; a join needs two",
                present.len(),
                step.as_str()
            )));
        }
        let mut inboxes: HashMap<PartnerId, Vec<(PartnerId, Vec<u8>)>> =
            present.iter().map(|p| (*p, Vec::new())).collect();
        let mut sent = BTreeSet::new();
        let posted = std::mem::take(&mut join.posted);
        for (from, envelopes) in posted.iter() {
            for e in envelopes {
                if let Some(inbox) = inboxes.get_mut(&e.to) {
                    sent.insert((*from, e.to));
                    inbox.push((*from, e.sealed.clone()));
                }
            }
        }
        drop(posted);
        let listed: Vec<PartnerId> = present.iter().copied().collect();
        if step == JoinStep::Sums {
            // The matcher's sums one way and the holder's acknowledgement the other.
            let pairs: Vec<(PartnerId, PartnerId)> = sent
                .iter()
                .filter(|(a, b)| a < b && sent.contains(&(*b, *a)))
                .copied()
                .collect();
            let joined: BTreeSet<PartnerId> = pairs.iter().flat_map(|(a, b)| [*a, *b]).collect();
            if pairs.is_empty() || joined.len() < self.min_survivors {
                return Err(self.refused(format!(
                    "the joins completed {} pair(s) among {} partner(s); the round needs at \
                     least one pair, among at least {} partners",
                    pairs.len(),
                    joined.len(),
                    self.min_survivors
                )));
            }
            self.pairs = pairs;
        }
        self.delivered = Arc::new(
            inboxes
                .into_iter()
                .map(|(p, from)| {
                    let present = listed.clone();
                    let inbox = JoinInbox::Delivered {
                        step,
                        from,
                        present,
                    };
                    (p, Bytes::from(encode_binary(&inbox)))
                })
                .collect(),
        );
        self.present = present;
        match self.join.as_mut() {
            Some(join) if step != JoinStep::Sums => join.step += 1,
            _ => self.join = None,
        }
        Ok(Closed::Next)
    }

    /// Partners that took part in a complete join.
    fn joined(&self) -> BTreeSet<PartnerId> {
        self.pairs.iter().flat_map(|(h, m)| [*h, *m]).collect()
    }
}

impl ProtocolRound for LinkedSumRound {
    fn step(&self) -> &'static str {
        match &self.join {
            Some(join) => JoinStep::ALL[join.step].as_str(),
            None => self.sum.step(),
        }
    }

    fn receive(&mut self, partner: PartnerId, body: &[u8]) -> Result<(), ProtocolError> {
        // Decoded once: a join post holds padded lists of tens of megabytes.
        let (step, message) = self.decode(partner, body)?;
        self.check_message(partner, step, &message)?;
        match message {
            Message::Join(envelopes) => {
                if let Some(join) = self.join.as_mut() {
                    Arc::make_mut(&mut join.posted).insert(partner, envelopes);
                }
                Ok(())
            }
            Message::Sum(msg) => self.sum.receive_message(partner, msg),
        }
    }

    fn step_of(&self, partner: PartnerId, body: &[u8]) -> Result<&'static str, ProtocolError> {
        Ok(self.decode(partner, body)?.0)
    }

    fn check(&self, partner: PartnerId, body: &[u8]) -> Result<(), ProtocolError> {
        let (step, message) = self.decode(partner, body)?;
        self.check_message(partner, step, &message)
    }

    fn responded(&self) -> BTreeSet<PartnerId> {
        match &self.join {
            Some(join) => join.posted.keys().copied().collect(),
            None => self.sum.responded(),
        }
    }

    fn close_step(&mut self) -> Result<Closed, ProtocolError> {
        if self.join.is_some() {
            return self.close_join();
        }
        if self.sum.step() == STEPS[4] {
            // Nothing can complete a pair whose partner advertised no keys: stop now.
            let advertised = self.sum.responded();
            let missing: Vec<String> = self
                .joined()
                .difference(&advertised)
                .map(ToString::to_string)
                .collect();
            if !missing.is_empty() {
                return Err(self.refused(format!(
                    "partner(s) {} completed joins but did not join the secure sum, so the \
                     pairs they are in cannot add up; nothing was released",
                    missing.join(", ")
                )));
            }
        }
        match self.sum.close_step()? {
            Closed::Finished(mut output) => {
                let contributors: BTreeSet<PartnerId> =
                    output.contributors.iter().copied().collect();
                let missing: Vec<String> = self
                    .joined()
                    .difference(&contributors)
                    .map(ToString::to_string)
                    .collect();
                if !missing.is_empty() {
                    return Err(self.refused(format!(
                        "partner(s) {} completed joins but their shares are not in the sum, \
                         so the pairs they are in cannot add up; nothing was released",
                        missing.join(", ")
                    )));
                }
                output.linked_pairs = Some(self.pairs.clone());
                Ok(Closed::Finished(output))
            }
            Closed::Next => Ok(Closed::Next),
        }
    }

    fn inbox(&self, partner: PartnerId) -> Result<Bytes, ProtocolError> {
        let gone = || ProtocolError::NotForPartner {
            round: self.round,
            partner,
        };
        let last_delivery = || self.delivered.get(&partner).cloned().ok_or_else(gone);
        match &self.join {
            Some(join) if join.posted.contains_key(&partner) => Ok(self.nothing_new.clone()),
            Some(_) if !self.present.contains(&partner) => Err(gone()),
            Some(join) if join.step == 0 => Ok(self.nothing_new.clone()),
            Some(_) => last_delivery(),
            // The secure sum's first step: its partners still read the masked sums.
            None if self.sum.step() == STEPS[4] && !self.sum.responded().contains(&partner) => {
                last_delivery()
            }
            None => self.sum.inbox(partner),
        }
    }

    fn box_clone(&self) -> Box<dyn ProtocolRound> {
        Box::new(self.clone())
    }

    fn long_step(&self) -> bool {
        self.join.is_some()
    }
}

#[cfg(test)]
mod tests {
    use civic_secagg::{GraphKind, RoundConfig, RoundId, Tolerances, Width};

    use super::*;

    const ROUND: i64 = 5;

    fn round() -> LinkedSumRound {
        let participants: Vec<PartnerId> = (1..=4).map(PartnerId).collect();
        let (_, roster) = civic_secagg::testing::identities(&participants, 9);
        let tolerances = Tolerances {
            max_dropout_rate: 0.25,
            max_corrupt_fraction: 0.25,
        };
        let config = RoundConfig::new(
            RoundId(ROUND as u64),
            participants,
            6,
            Width::W64,
            GraphKind::Complete,
            tolerances,
            2,
        )
        .unwrap();
        let setup = RoundSetup {
            config,
            roster,
            max_rows_per_partner: 100,
        };
        LinkedSumRound::new(ROUND, &setup).unwrap()
    }

    fn join(sender: u32, step: JoinStep, to: &[u32]) -> Vec<u8> {
        let envelopes = to
            .iter()
            .map(|t| Envelope {
                to: PartnerId(*t),
                sealed: vec![sender as u8, *t as u8],
            })
            .collect();
        encode_binary(&LinkedMessage::Join {
            round: ROUND as u64,
            sender: PartnerId(sender),
            step,
            envelopes,
        })
    }

    fn delivered(r: &dyn ProtocolRound, p: u32) -> JoinInbox {
        decode_binary(&r.inbox(PartnerId(p)).unwrap()).unwrap()
    }

    #[test]
    fn bad_posts_are_refused_and_change_nothing() {
        let mut r = round();
        let p = PartnerId(1);
        r.receive(PartnerId(2), &join(2, JoinStep::RelayKeys, &[1]))
            .unwrap();
        let before = (r.responded(), r.inbox(p).unwrap());
        let wrong_round = encode_binary(&LinkedMessage::Join {
            round: 6,
            sender: p,
            step: JoinStep::RelayKeys,
            envelopes: Vec::new(),
        });
        let too_early = join(1, JoinStep::Sums, &[]);
        let refused: [(&str, Vec<u8>, &str); 7] = [
            ("garbage", vec![1, 2, 3], "not a valid message"),
            (
                "to itself",
                join(1, JoinStep::RelayKeys, &[1]),
                "not another participant",
            ),
            (
                "to a stranger",
                join(1, JoinStep::RelayKeys, &[9]),
                "not another participant",
            ),
            (
                "twice to one",
                join(1, JoinStep::RelayKeys, &[2, 2]),
                "two envelopes",
            ),
            (
                "as another",
                join(3, JoinStep::RelayKeys, &[2]),
                "claims to come from",
            ),
            ("another round", wrong_round, "round 6"),
            ("a later step", too_early, "while step relay_keys is open"),
        ];
        for (what, body, says) in refused {
            let e = r.receive(p, &body).unwrap_err().to_string();
            assert!(e.contains(says), "{what}: {e}");
            assert_eq!((r.responded(), r.inbox(p).unwrap()), before, "{what}");
        }
        // A second post by the same partner in one step.
        let e = r
            .receive(PartnerId(2), &join(2, JoinStep::RelayKeys, &[3]))
            .unwrap_err();
        assert!(e.to_string().contains("already posted"), "{e}");
    }

    #[test]
    fn each_partner_reads_what_was_sealed_for_it_and_a_silent_one_is_out() {
        let mut r = round();
        // Partners 1 and 2 hold one side, 3 and 4 the other; 4 never answers.
        r.receive(PartnerId(1), &join(1, JoinStep::RelayKeys, &[3, 4]))
            .unwrap();
        r.receive(PartnerId(2), &join(2, JoinStep::RelayKeys, &[3, 4]))
            .unwrap();
        r.receive(PartnerId(3), &join(3, JoinStep::RelayKeys, &[1, 2]))
            .unwrap();
        assert_eq!(r.close_step().unwrap(), Closed::Next);
        assert_eq!(r.step(), "offers");
        let present = vec![PartnerId(1), PartnerId(2), PartnerId(3)];
        assert_eq!(
            delivered(&r, 3),
            JoinInbox::Delivered {
                step: JoinStep::RelayKeys,
                from: vec![(PartnerId(1), vec![1, 3]), (PartnerId(2), vec![2, 3])],
                present: present.clone(),
            }
        );
        assert!(matches!(
            r.inbox(PartnerId(4)),
            Err(ProtocolError::NotForPartner { .. })
        ));
        // The partner that left may not post.
        assert!(matches!(
            r.receive(PartnerId(4), &join(4, JoinStep::Offers, &[1])),
            Err(ProtocolError::NotForPartner { .. })
        ));
        // Through the steps: only pairs with the sums one way and the acknowledgement the
        // other are complete (2 acknowledges nobody: its pair is dropped). An envelope still
        // addressed to the partner that left is taken, and dropped.
        for (step, posts) in [
            (
                JoinStep::Offers,
                [(1, vec![3, 4]), (2, vec![3]), (3, vec![1, 2])],
            ),
            (JoinStep::Returns, [(1, vec![3]), (2, vec![3]), (3, vec![])]),
            (JoinStep::Sums, [(1, vec![3]), (2, vec![]), (3, vec![1, 2])]),
        ] {
            for (p, to) in posts {
                r.receive(PartnerId(p), &join(p, step, &to)).unwrap();
                // Answered: nothing new until the step closes.
                assert_eq!(delivered(&r, p), JoinInbox::Nothing);
            }
            assert_eq!(r.close_step().unwrap(), Closed::Next);
        }
        assert_eq!(r.step(), "advertise_keys");
        // The sums are still read in the secure sum's first step.
        assert_eq!(
            delivered(&r, 2),
            JoinInbox::Delivered {
                step: JoinStep::Sums,
                from: vec![(PartnerId(3), vec![3, 2])],
                present,
            }
        );
        assert_eq!(r.pairs, vec![(PartnerId(1), PartnerId(3))]);
        // The secure sum's first step closes: partner 1 completed a join but advertised no
        // keys, so nothing could add up.
        let e = r.close_step().unwrap_err().to_string();
        assert!(e.contains("did not join the secure sum"), "{e}");
    }

    #[test]
    fn joins_that_complete_no_pair_end_the_round() {
        let mut r = round();
        for step in JoinStep::ALL {
            for p in [1, 3] {
                let to = match step {
                    JoinStep::Sums => vec![],
                    _ => vec![4 - p],
                };
                r.receive(PartnerId(p), &join(p, step, &to)).unwrap();
            }
            let closed = r.close_step();
            if step == JoinStep::Sums {
                let e = closed.unwrap_err().to_string();
                assert!(e.contains("completed 0 pair(s)"), "{e}");
            } else {
                assert_eq!(closed.unwrap(), Closed::Next);
            }
        }
    }
}
