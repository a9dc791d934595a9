//! Secure aggregation of a sum (Bonawitz et al., CCS 2017; the sparse graph of Bell et al.,
//! CCS 2020), as a [`Protocol`]: civic-secagg's server state machine behind the driver's
//! interface. Messages are bincode [`ClientMessage`]s; inboxes are bincode [`Inbox`]es.

use std::collections::BTreeSet;

use civic_api::round::Inbox;
use civic_api::{decode_binary, encode_binary};
use civic_secagg::{ClientMessage, PartnerId, Phase, RoundId, ServerOutput, ServerRound};

use super::protocol::{Closed, Protocol, ProtocolError, ProtocolRound, RoundOutput};
use crate::store::RoundSetup;

/// The protocol.
#[derive(Clone, Copy, Debug, Default)]
pub struct SecureSum;

/// Its name, stored with each round.
pub const NAME: &str = "secure-sum/v1";

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
        Ok(Box::new(SecureSumRound {
            round,
            server: ServerRound::new(setup.config.clone(), setup.roster.clone())?,
            last: None,
        }))
    }
}

#[derive(Clone)]
struct SecureSumRound {
    round: i64,
    server: ServerRound,
    /// What the last closed phase produced.
    last: Option<ServerOutput>,
}

impl SecureSumRound {
    fn decode(&self, partner: PartnerId, body: &[u8]) -> Result<ClientMessage, ProtocolError> {
        let msg: ClientMessage =
            decode_binary(body).map_err(|reason| ProtocolError::Malformed {
                round: self.round,
                reason,
            })?;
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
        Ok(msg)
    }
}

impl ProtocolRound for SecureSumRound {
    fn step(&self) -> &'static str {
        step_name(self.server.phase())
    }

    fn receive(&mut self, partner: PartnerId, body: &[u8]) -> Result<(), ProtocolError> {
        let msg = self.decode(partner, body)?;
        Ok(self.server.receive(msg)?)
    }

    fn step_of(&self, partner: PartnerId, body: &[u8]) -> Result<&'static str, ProtocolError> {
        Ok(step_name(self.decode(partner, body)?.phase()))
    }

    fn responded(&self) -> BTreeSet<PartnerId> {
        self.server.responded().into_iter().collect()
    }

    fn close_step(&mut self) -> Result<Closed, ProtocolError> {
        match self.server.advance()? {
            ServerOutput::Aggregate(aggregate) => Ok(Closed::Finished(RoundOutput {
                sum: aggregate.sum.to_signed(),
                contributors: aggregate.survivors,
            })),
            output => {
                self.last = Some(output);
                Ok(Closed::Next)
            }
        }
    }

    fn inbox(&self, partner: PartnerId) -> Result<Vec<u8>, ProtocolError> {
        let inbox = match &self.last {
            None | Some(ServerOutput::Aggregate(_)) => Inbox::Nothing,
            Some(ServerOutput::KeyRoster(k)) => Inbox::KeyRoster(k.clone()),
            Some(ServerOutput::ForwardedShares(map)) => match map.get(&partner) {
                Some(f) => Inbox::ForwardedShares(f.clone()),
                None => {
                    return Err(ProtocolError::NotForPartner {
                        round: self.round,
                        partner,
                    });
                }
            },
            Some(ServerOutput::SurvivorList(s)) => Inbox::SurvivorList(s.clone()),
            Some(ServerOutput::SignedSurvivors(s)) => Inbox::SignedSurvivors(s.clone()),
        };
        Ok(encode_binary(&inbox))
    }

    fn box_clone(&self) -> Box<dyn ProtocolRound> {
        Box::new(self.clone())
    }
}
