//! This partner's pairwise joins in a linked round: one session (`civic_linkage`) with each
//! partner on the other side, driven through the round's four join steps. Pure: the agent
//! (`agent.rs`) posts the envelopes returned here and hands back what its inbox delivered.
//!
//! ```text
//!  step        holder                              matcher
//!  relay_keys  signed session key                  signed session key
//!  offers      HolderOffer (encrypted list)        MatcherOffer (blinded list)
//!  returns     Returned (re-blinded, dummies)      (nothing)
//!  sums        an acknowledgement                  MaskedSums
//! ```
//!
//! A pair is complete when the matcher sent its masked sums and the holder its
//! acknowledgement in the same step: then each side holds its share and adds it to its
//! vector; the coordinator sees the same two envelopes and counts the pair. A counterpart
//! that leaves the round (each inbox says who is still in it), or sends something its
//! session refuses before the sums, drops its pair: both sides leave it out. Masked sums or
//! an acknowledgement that arrive but are refused cannot be left out (the coordinator counts
//! the pair, and the other side its share), so they fail the round for this partner, and
//! the coordinator, missing a completed pair's share, releases nothing.

use std::collections::BTreeMap;

use civic_api::round::Envelope;
use civic_api::{decode_binary, encode_binary};
use civic_linkage::federation::{Pair, add_shares, setup};
use civic_linkage::relay::{Channel, Phase, RelayKey, Role as RelayRole, SignedRelayKey};
use civic_linkage::{
    DummyNoise, HolderAwaitingSums, HolderOffer, HolderStarted, LinkError, MatcherOffer,
    MatcherStarted, Params, Returned, Shares, holder_start, matcher_start,
};
use civic_policies::linkage::LinkedShape;
use civic_secagg::{IdentityKey, IdentityPublicKey, PartnerId};
use rand_core::CryptoRng;
use serde::de::DeserializeOwned;

use crate::linked::{LinkedRecords, Role};

/// A partner on the other side, as the board's manifest names and keys it.
#[derive(Clone, Debug)]
pub struct Counterpart {
    /// Its id in the round.
    pub id: PartnerId,
    /// Its name in the policy and manifest.
    pub name: String,
    /// Its identity key from the manifest: the one its session keys must be signed with.
    pub identity: IdentityPublicKey,
}

/// Every session of this partner in one round.
pub struct Joins {
    role: Role,
    threads: usize,
    sessions: BTreeMap<PartnerId, Session>,
}

struct Session {
    name: String,
    identity: IdentityPublicKey,
    params: Params,
    relay: RelayKey,
    channel: Option<Channel>,
    state: State,
}

enum State {
    Keyed,
    Holder(HolderStarted),
    HolderAwaiting(HolderAwaitingSums),
    Matcher(MatcherStarted),
    MatcherOffered(MatcherStarted, Box<HolderOffer>),
    /// The matcher sent its sums; complete once the holder's acknowledgement arrives.
    MatcherSent(Shares),
    Done(Shares),
    Dropped(String),
}

/// Masked sums or an acknowledgement a counterpart sent that this partner's session refused:
/// the pair cannot be left out, so the round fails for this partner.
#[derive(Debug, thiserror::Error)]
#[error("partner {partner}'s last message was refused ({error}): the pair cannot be completed")]
pub struct JoinFailed {
    /// The counterpart.
    pub partner: String,
    /// Why.
    pub error: LinkError,
}

impl Joins {
    /// One session with each counterpart, and the signed session keys to send them. `me` is
    /// this partner's name; `round` names the round (bound into every session).
    #[allow(clippy::too_many_arguments)]
    pub fn start<R: CryptoRng + ?Sized>(
        shape: &LinkedShape,
        role: Role,
        me: &str,
        round: u64,
        counterparts: Vec<Counterpart>,
        dummies: DummyNoise,
        identity: &IdentityKey,
        rng: &mut R,
    ) -> Result<(Self, Vec<Envelope>), LinkError> {
        let mut sessions = BTreeMap::new();
        let mut envelopes = Vec::new();
        for c in counterparts {
            let pair = match role {
                Role::Holder => Pair {
                    holder: me.to_string(),
                    matcher: c.name.clone(),
                },
                Role::Matcher => Pair {
                    holder: c.name.clone(),
                    matcher: me.to_string(),
                },
            };
            let params = Params::new(setup(shape, &round.to_be_bytes(), &pair, dummies))?;
            let (relay, signed) = RelayKey::new(rng, identity, params.session, relay_role(role));
            envelopes.push(Envelope {
                to: c.id,
                sealed: encode_binary(&signed),
            });
            sessions.insert(
                c.id,
                Session {
                    name: c.name,
                    identity: c.identity,
                    params,
                    relay,
                    channel: None,
                    state: State::Keyed,
                },
            );
        }
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        Ok((
            Self {
                role,
                threads,
                sessions,
            },
            envelopes,
        ))
    }

    /// Ends the sessions with counterparts no longer in the round (`present`, from the
    /// inbox): whatever they sent, nothing more will come.
    pub fn leave_absent(&mut self, present: &[PartnerId]) {
        for (id, s) in self.sessions.iter_mut() {
            let over = matches!(s.state, State::Done(_) | State::Dropped(_));
            if !over && !present.contains(id) {
                s.state = State::Dropped("it left the round".into());
            }
        }
    }

    /// The relay keys arrived: opens each channel and sends this side's first message. A
    /// counterpart whose key is missing or not signed by its manifest identity is dropped.
    /// Records this side cannot use (over its capacity, a value out of bounds) fail here.
    pub fn offers<R: CryptoRng + ?Sized>(
        &mut self,
        delivered: &[(PartnerId, Vec<u8>)],
        records: &LinkedRecords,
        rng: &mut R,
    ) -> Result<Vec<Envelope>, LinkError> {
        let mut out = Vec::new();
        for (id, s) in self.sessions.iter_mut() {
            let channel = from(delivered, *id)
                .ok_or(LinkError::BadRelayKey)
                .and_then(|b| decode::<SignedRelayKey>(b).ok_or(LinkError::BadRelayKey))
                .and_then(|key| s.relay.channel(&key, &s.identity));
            let channel = match channel {
                Ok(c) => c,
                Err(e) => {
                    s.state = State::Dropped(format!("its session key: {e}"));
                    continue;
                }
            };
            let (state, phase, message) = match (self.role, records) {
                (Role::Holder, LinkedRecords::Holder(r)) => {
                    let (started, offer) = holder_start(s.params.clone(), r, rng, self.threads)?;
                    (
                        State::Holder(started),
                        Phase::HolderOffer,
                        encode_binary(&offer),
                    )
                }
                (Role::Matcher, LinkedRecords::Matcher(r)) => {
                    let (started, offer) = matcher_start(s.params.clone(), r, rng, self.threads)?;
                    (
                        State::Matcher(started),
                        Phase::MatcherOffer,
                        encode_binary(&offer),
                    )
                }
                _ => return Err(LinkError::BadParameters("records of the other side")),
            };
            out.push(Envelope {
                to: *id,
                sealed: channel.seal(rng, phase, &message),
            });
            s.channel = Some(channel);
            s.state = state;
        }
        Ok(out)
    }

    /// The first messages arrived: a holder returns each matcher's list re-blinded; a
    /// matcher keeps each holder's offer for the sums.
    pub fn returns<R: CryptoRng + ?Sized>(
        &mut self,
        delivered: &[(PartnerId, Vec<u8>)],
        rng: &mut R,
    ) -> Vec<Envelope> {
        let mut out = Vec::new();
        for (id, s) in self.sessions.iter_mut() {
            let state = std::mem::replace(&mut s.state, State::Keyed);
            s.state = match state {
                State::Holder(started) => {
                    match open::<MatcherOffer>(
                        s.channel.as_ref(),
                        delivered,
                        *id,
                        Phase::MatcherOffer,
                    ) {
                        Ok(offer) => match started.respond(&offer, rng, self.threads) {
                            Ok((awaiting, returned)) => {
                                out.push(seal(
                                    s.channel.as_ref(),
                                    *id,
                                    rng,
                                    Phase::Returned,
                                    &returned,
                                ));
                                State::HolderAwaiting(awaiting)
                            }
                            Err(refused) => State::Dropped(format!("its offer: {}", refused.error)),
                        },
                        Err(e) => State::Dropped(format!("its offer: {e}")),
                    }
                }
                State::Matcher(started) => {
                    match open::<HolderOffer>(
                        s.channel.as_ref(),
                        delivered,
                        *id,
                        Phase::HolderOffer,
                    ) {
                        Ok(offer) => State::MatcherOffered(started, Box::new(offer)),
                        Err(e) => State::Dropped(format!("its offer: {e}")),
                    }
                }
                other => other,
            };
        }
        out
    }

    /// The holders' returns arrived: a matcher sends each holder its masked sums; a holder
    /// acknowledges each matcher it returned a list to, so that both sides count the pair
    /// only if both are still there.
    pub fn sums<R: CryptoRng + ?Sized>(
        &mut self,
        delivered: &[(PartnerId, Vec<u8>)],
        rng: &mut R,
    ) -> Vec<Envelope> {
        let mut out = Vec::new();
        for (id, s) in self.sessions.iter_mut() {
            let state = std::mem::replace(&mut s.state, State::Keyed);
            s.state = match state {
                State::MatcherOffered(started, offer) => {
                    match open::<Returned>(s.channel.as_ref(), delivered, *id, Phase::Returned) {
                        Ok(returned) => {
                            match started.finish(&offer, &returned, rng, self.threads) {
                                Ok((output, sums)) => {
                                    out.push(seal(
                                        s.channel.as_ref(),
                                        *id,
                                        rng,
                                        Phase::MaskedSums,
                                        &sums,
                                    ));
                                    // The noisy match counts are dropped here: nothing reads them.
                                    State::MatcherSent(output.shares)
                                }
                                Err(refused) => {
                                    State::Dropped(format!("its returned list: {}", refused.error))
                                }
                            }
                        }
                        Err(e) => State::Dropped(format!("its returned list: {e}")),
                    }
                }
                State::HolderAwaiting(awaiting) => {
                    out.push(seal(s.channel.as_ref(), *id, rng, Phase::MaskedSums, &()));
                    State::HolderAwaiting(awaiting)
                }
                other => other,
            };
        }
        out
    }

    /// The sums step closed: a holder decrypts each matcher's masked sums into its share; a
    /// matcher keeps the share of each holder that acknowledged.
    pub fn finish(&mut self, delivered: &[(PartnerId, Vec<u8>)]) -> Result<(), JoinFailed> {
        for (id, s) in self.sessions.iter_mut() {
            let state = std::mem::replace(&mut s.state, State::Keyed);
            s.state = match state {
                State::HolderAwaiting(awaiting) => {
                    if from(delivered, *id).is_none() {
                        State::Dropped("it sent no masked sums".into())
                    } else {
                        let shares = open(s.channel.as_ref(), delivered, *id, Phase::MaskedSums)
                            .and_then(|sums| awaiting.finish(&sums).map_err(|r| r.error));
                        match shares {
                            Ok(shares) => State::Done(shares),
                            Err(error) => {
                                return Err(JoinFailed {
                                    partner: s.name.clone(),
                                    error,
                                });
                            }
                        }
                    }
                }
                State::MatcherSent(_) if from(delivered, *id).is_none() => {
                    State::Dropped("it did not acknowledge the masked sums".into())
                }
                State::MatcherSent(shares) => {
                    match open::<()>(s.channel.as_ref(), delivered, *id, Phase::MaskedSums) {
                        Ok(()) => State::Done(shares),
                        Err(error) => {
                            return Err(JoinFailed {
                                partner: s.name.clone(),
                                error,
                            });
                        }
                    }
                }
                State::Done(shares) => State::Done(shares),
                State::Dropped(why) => State::Dropped(why),
                _ => State::Dropped("it missed a step".into()),
            };
        }
        Ok(())
    }

    /// Adds every complete pair's share to `vector` (the plan's layout, `cells` per block).
    pub fn add_shares(&self, vector: &mut [u64], shape: &LinkedShape, cells: usize) {
        for s in self.sessions.values() {
            if let State::Done(shares) = &s.state {
                add_shares(vector, shape, cells, shares);
            }
        }
    }

    /// Each counterpart's name and whether its pair completed (or why it was dropped): for
    /// the local log. It holds no data value.
    pub fn outcomes(&self) -> Vec<(String, Result<(), String>)> {
        self.sessions
            .values()
            .map(|s| {
                let outcome = match &s.state {
                    State::Done(_) => Ok(()),
                    State::Dropped(why) => Err(why.clone()),
                    _ => Err("unfinished".into()),
                };
                (s.name.clone(), outcome)
            })
            .collect()
    }
}

fn relay_role(role: Role) -> RelayRole {
    match role {
        Role::Holder => RelayRole::Holder,
        Role::Matcher => RelayRole::Matcher,
    }
}

fn from(delivered: &[(PartnerId, Vec<u8>)], id: PartnerId) -> Option<&[u8]> {
    delivered
        .iter()
        .find(|(p, _)| *p == id)
        .map(|(_, b)| b.as_slice())
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Option<T> {
    decode_binary(bytes).ok()
}

/// Opens and decodes what `id` sealed for this step.
fn open<T: DeserializeOwned>(
    channel: Option<&Channel>,
    delivered: &[(PartnerId, Vec<u8>)],
    id: PartnerId,
    phase: Phase,
) -> Result<T, LinkError> {
    let channel = channel.ok_or(LinkError::BadRelayKey)?;
    let sealed = from(delivered, id).ok_or(LinkError::BadSeal)?;
    let plain = channel.open(phase, sealed)?;
    decode(&plain).ok_or(LinkError::WrongSize)
}

fn seal<R: CryptoRng + ?Sized, T: serde::Serialize>(
    channel: Option<&Channel>,
    to: PartnerId,
    rng: &mut R,
    phase: Phase,
    message: &T,
) -> Envelope {
    let sealed = channel
        .map(|c| c.seal(rng, phase, &encode_binary(message)))
        .unwrap_or_default();
    Envelope { to, sealed }
}
