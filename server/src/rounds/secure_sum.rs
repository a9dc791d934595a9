//! Secure aggregation of a sum (Bonawitz et al., CCS 2017; the sparse graph of Bell et al.,
//! CCS 2020), as a [`Protocol`]: civic-secagg's server state machine behind the driver's
//! interface. Messages are bincode [`ClientMessage`]s; inboxes are bincode [`Inbox`]es,
//! encoded once when a phase closes.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use actix_web::web::Bytes;
use civic_api::round::Inbox;
use civic_api::{decode_binary, encode_binary};
use civic_secagg::server::{neighbourhood_roster, neighbourhood_signatures};
use civic_secagg::{ClientMessage, PartnerId, Phase, RoundId, ServerOutput, ServerRound, Topology};

use super::protocol::{Closed, Protocol, ProtocolError, ProtocolRound, RoundOutput};
use crate::store::RoundSetup;

/// The protocol.
#[derive(Clone, Copy, Debug, Default)]
pub struct SecureSum;

/// Its name, stored with each round.
/// v4: partners add their shares of distributed noise where the policy asks for it; an agent
/// that speaks only v3 would not, and refuses the round rather than send an un-noised vector.
pub const NAME: &str = "secure-sum/v4";

const STEPS: [&str; 5] = [
    "advertise_keys",
    "share_keys",
    "masked_input_collection",
    "consistency_check",
    "unmasking",
];

/// A phase's step name (its serde name, as announcements show it).
fn step_name(phase: Phase) -> &'static str {
    match phase {
        Phase::AdvertiseKeys => STEPS[0],
        Phase::ShareKeys => STEPS[1],
        Phase::MaskedInputCollection => STEPS[2],
        Phase::ConsistencyCheck => STEPS[3],
        Phase::Unmasking => STEPS[4],
        Phase::Finished => "finished",
        Phase::Aborted => "aborted",
    }
}

impl Protocol for SecureSum {
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
        Ok(Box::new(SecureSumRound::new(round, setup)?))
    }
}

/// The coordinator's state of a secure sum (also the last part of a linked round).
#[derive(Clone)]
pub(super) struct SecureSumRound {
    round: i64,
    server: ServerRound,
    /// What the last closed phase sent, encoded once.
    inboxes: Inboxes,
    /// "Nothing new", encoded once: for partners that answered the open phase.
    nothing_new: Bytes,
}

/// A closed phase's output as partners read it, encoded when the phase closes: a poll
/// costs a reference count, not an encoding (a thousand partners poll the same roster).
#[derive(Clone)]
enum Inboxes {
    /// The same bytes for every partner.
    Everyone(Bytes),
    /// Each partner's own (its forwarded shares; on the sparse graph its neighbourhood).
    PerPartner(Arc<HashMap<PartnerId, Bytes>>),
}

fn encoded(inbox: &Inbox) -> Bytes {
    Bytes::from(encode_binary(inbox))
}

impl Inboxes {
    /// The inboxes for a phase's output. On the sparse graph each partner gets only its
    /// neighbourhood of the key roster and of the survivor-list signatures (see
    /// [`neighbourhood_roster`] for why that is all it needs).
    fn of(output: &ServerOutput, server: &ServerRound) -> Self {
        let graph = server.graph();
        let sparse = graph.topology() != Topology::Complete;
        let per_partner = |partners: Vec<PartnerId>, view: &dyn Fn(PartnerId) -> Inbox| {
            Inboxes::PerPartner(Arc::new(
                partners
                    .into_iter()
                    .map(|p| (p, encoded(&view(p))))
                    .collect(),
            ))
        };
        match output {
            ServerOutput::KeyRoster(k) if sparse => {
                let partners = k.keys.iter().map(|e| e.sender).collect();
                per_partner(partners, &|p| {
                    Inbox::KeyRoster(neighbourhood_roster(k, graph, p))
                })
            }
            ServerOutput::KeyRoster(k) => Inboxes::Everyone(encoded(&Inbox::KeyRoster(k.clone()))),
            ServerOutput::ForwardedShares(map) => Inboxes::PerPartner(Arc::new(
                map.iter()
                    .map(|(p, f)| (*p, encoded(&Inbox::ForwardedShares(f.clone()))))
                    .collect(),
            )),
            ServerOutput::SurvivorList(list) => {
                Inboxes::Everyone(encoded(&Inbox::SurvivorList(list.clone())))
            }
            ServerOutput::SignedSurvivors(signed) if sparse => {
                let partners = signed.signatures.iter().map(|(p, _)| *p).collect();
                per_partner(partners, &|p| {
                    Inbox::SignedSurvivors(neighbourhood_signatures(signed, graph, p))
                })
            }
            ServerOutput::SignedSurvivors(signed) => {
                Inboxes::Everyone(encoded(&Inbox::SignedSurvivors(signed.clone())))
            }
            ServerOutput::Aggregate(_) => Inboxes::Everyone(encoded(&Inbox::Nothing)),
        }
    }
}

impl SecureSumRound {
    /// A round at AdvertiseKeys.
    pub(super) fn new(round: i64, setup: &RoundSetup) -> Result<Self, ProtocolError> {
        let nothing = encoded(&Inbox::Nothing);
        Ok(Self {
            round,
            server: ServerRound::new(setup.config.clone(), setup.roster.clone())?,
            inboxes: Inboxes::Everyone(nothing.clone()),
            nothing_new: nothing,
        })
    }

    /// Checks that a message names this round and its poster.
    pub(super) fn check_sender(
        &self,
        partner: PartnerId,
        msg: &ClientMessage,
    ) -> Result<(), ProtocolError> {
        if msg.sender() != partner {
            return Err(ProtocolError::Impersonation {
                partner,
                claimed: msg.sender(),
            });
        }
        if msg.round_id() != RoundId(self.round as u64) {
            return Err(ProtocolError::WrongRound {
                round: self.round,
                named: msg.round_id().0,
            });
        }
        Ok(())
    }

    /// The step a message belongs to.
    pub(super) fn step_of_message(msg: &ClientMessage) -> &'static str {
        step_name(msg.phase())
    }

    /// Takes a decoded message.
    pub(super) fn receive_message(
        &mut self,
        partner: PartnerId,
        msg: ClientMessage,
    ) -> Result<(), ProtocolError> {
        self.check_sender(partner, &msg)?;
        Ok(self.server.receive(msg)?)
    }

    /// Checks a decoded message without taking it.
    pub(super) fn check_message(
        &self,
        partner: PartnerId,
        msg: &ClientMessage,
    ) -> Result<(), ProtocolError> {
        self.check_sender(partner, msg)?;
        Ok(self.server.check(msg)?)
    }

    fn decode(&self, partner: PartnerId, body: &[u8]) -> Result<ClientMessage, ProtocolError> {
        let msg: ClientMessage =
            decode_binary(body).map_err(|reason| ProtocolError::Malformed {
                round: self.round,
                reason,
            })?;
        self.check_sender(partner, &msg)?;
        Ok(msg)
    }
}

impl ProtocolRound for SecureSumRound {
    fn step(&self) -> &'static str {
        step_name(self.server.phase())
    }

    fn receive(&mut self, partner: PartnerId, body: &[u8]) -> Result<(), ProtocolError> {
        let msg = self.decode(partner, body)?;
        self.receive_message(partner, msg)
    }

    fn step_of(&self, partner: PartnerId, body: &[u8]) -> Result<&'static str, ProtocolError> {
        Ok(step_name(self.decode(partner, body)?.phase()))
    }

    fn check(&self, partner: PartnerId, body: &[u8]) -> Result<(), ProtocolError> {
        self.check_message(partner, &self.decode(partner, body)?)
    }

    fn responded(&self) -> BTreeSet<PartnerId> {
        self.server.responded().into_iter().collect()
    }

    fn close_step(&mut self) -> Result<Closed, ProtocolError> {
        match self.server.advance()? {
            ServerOutput::Aggregate(aggregate) => Ok(Closed::Finished(RoundOutput {
                sum: aggregate.sum.to_signed(),
                contributors: aggregate.survivors,
                linked_pairs: None,
                misbehaviour: aggregate
                    .misbehaviour
                    .iter()
                    .map(ToString::to_string)
                    .collect(),
            })),
            output => {
                self.inboxes = Inboxes::of(&output, &self.server);
                Ok(Closed::Next)
            }
        }
    }

    fn inbox(&self, partner: PartnerId) -> Result<Bytes, ProtocolError> {
        if self.server.has_responded(partner) {
            return Ok(self.nothing_new.clone());
        }
        match &self.inboxes {
            Inboxes::Everyone(bytes) => Ok(bytes.clone()),
            Inboxes::PerPartner(map) => {
                map.get(&partner)
                    .cloned()
                    .ok_or(ProtocolError::NotForPartner {
                        round: self.round,
                        partner,
                    })
            }
        }
    }

    fn box_clone(&self) -> Box<dyn ProtocolRound> {
        Box::new(self.clone())
    }
}
