//! A linked round's part of the agent: which side of the query this partner is on, its
//! records read from the extract, and the join steps (`crate::join`) over HTTP, before the
//! secure sum every round ends with.

use std::collections::BTreeMap;

use civic_api::round::{JoinInbox, JoinStep, LinkedMessage, RoundAnnouncement};
use civic_linkage::DummyNoise;
use civic_linkage::federation::dummy_noise;
use civic_policies::dataset::DatasetPolicy;
use civic_policies::linkage::LinkedShape;
use civic_secagg::{PartnerId, Roster};
use rand_core::CryptoRng;

use super::{Agent, Prepared, readers};
use crate::config::DatasetMapping;
use crate::decline::DeclineCode;
use crate::error::AgentError;
use crate::join::{Counterpart, Joins};
use crate::linked::{LinkedRecords, LinkedSide, Role};
use crate::schema::Cell;

/// This partner's side of a linked round, ready for the joins.
pub(super) struct LinkedPart {
    shape: LinkedShape,
    role: Role,
    me: String,
    records: LinkedRecords,
    counterparts: Vec<Counterpart>,
    dummies: DummyNoise,
    /// Cells per block of the plan's vector.
    cells: usize,
}

/// Works out this partner's side from the board's policy and its own name, its
/// counterparts among the round's participants (names and keys from the manifest), and reads
/// its records.
pub(super) async fn prepare(
    mapping: &DatasetMapping,
    policy: &DatasetPolicy,
    ann: &RoundAnnouncement,
    names: &BTreeMap<PartnerId, String>,
    roster: &Roster,
    me: PartnerId,
    cells: usize,
) -> Result<LinkedPart, AgentError> {
    let refuse = |code, m: String| AgentError::Refused(code, m);
    let validated = ann
        .query
        .clone()
        .validate(policy)
        .map_err(|e| refuse(DeclineCode::QueryInvalid, e.to_string()))?;
    let shape = LinkedShape::of(&validated, policy)
        .map_err(|e| refuse(DeclineCode::QueryInvalid, e.to_string()))?;
    let my_name = names.get(&me).cloned().unwrap_or_default();
    let (role, side, others) = if shape.holder.partners.contains(&my_name) {
        (Role::Holder, &shape.holder, &shape.matcher)
    } else if shape.matcher.partners.contains(&my_name) {
        (Role::Matcher, &shape.matcher, &shape.holder)
    } else {
        return Err(refuse(
            DeclineCode::NotInvited,
            format!(
                "the query joins the {} and {} sides; partner {my_name} is on neither",
                shape.holder.kind, shape.matcher.kind
            ),
        ));
    };
    if mapping.side.as_deref() != Some(side.kind.as_str()) {
        return Err(AgentError::Config {
            file: "partner.toml".into(),
            field: format!("datasets ({}).side", mapping.id),
            reason: format!(
                "the board's policy puts this partner on the {} side; set side = \"{}\"",
                side.kind, side.kind
            ),
        });
    }
    let counterparts: Vec<Counterpart> = names
        .iter()
        .filter(|(_, name)| others.partners.contains(name))
        .filter_map(|(id, name)| {
            Some(Counterpart {
                id: *id,
                name: name.clone(),
                identity: *roster.get(id)?,
            })
        })
        .collect();
    let match_counts = policy
        .linkage
        .as_ref()
        .map_or(0.0, |l| l.match_counts.as_f64());
    let dummies = dummy_noise(&shape, match_counts)
        .map_err(|e| refuse(DeclineCode::PolicyInvalid, e.to_string()))?;
    let reader = LinkedSide::new(&shape, policy, role).map_err(|e| {
        refuse(
            DeclineCode::QueryInvalid,
            format!("the query's {} side: {e}", side.kind),
        )
    })?;
    let records = read_records(mapping, policy, &shape, &reader, side.capacity).await?;
    Ok(LinkedPart {
        shape,
        role,
        me: my_name,
        records,
        counterparts,
        dummies,
        cells,
    })
}

/// Reads this side's records from the extract (the scan is strict, as for any round). More
/// residents than the side's public capacity are cut to it, with a warning, as a local
/// aggregate is clamped: whether this partner takes part must not depend on its data.
async fn read_records(
    mapping: &DatasetMapping,
    policy: &DatasetPolicy,
    shape: &LinkedShape,
    side: &LinkedSide,
    capacity: u32,
) -> Result<LinkedRecords, AgentError> {
    let readers = readers(mapping, policy, &side.columns)?;
    let mut rows: Vec<(Vec<Cell>, Vec<u8>)> = Vec::new();
    crate::source::scan(
        mapping,
        &readers,
        crate::source::ScanMode::Strict,
        &mut |cells, resident, _| rows.push((cells.to_vec(), resident.unwrap_or(b"").to_vec())),
    )
    .await?;
    let source = crate::source::source_name(&mapping.source);
    let (mut records, counts) = side
        .collect(
            shape,
            rows.iter().map(|(c, r)| (c.as_slice(), r.as_slice())),
        )
        .map_err(|e| AgentError::Source {
            source_name: source.clone(),
            reason: format!("{e} ({}): `civic-agent check` names the rows", e.code()),
        })?;
    tracing::info!(
        rows = counts.rows,
        kept = counts.kept,
        filtered_out = counts.filtered_out,
        incomplete = counts.incomplete,
        unusable_identifier = counts.unusable_identifier,
        repeated_identifier = counts.repeated_identifier,
        "read the linked side's records"
    );
    if counts.repeated_identifier > 0 {
        tracing::warn!(
            repeated = counts.repeated_identifier,
            "rows repeat a linkage identifier an earlier row has: only the first is linked \
             (`civic-agent check` names the lines; merge each resident's rows at source)"
        );
    }
    let cut = match &mut records {
        LinkedRecords::Holder(r) => truncate(r, capacity),
        LinkedRecords::Matcher(r) => truncate(r, capacity),
    };
    if cut > 0 {
        tracing::warn!(
            cut,
            capacity,
            "the extract holds more residents than the side's capacity in the policy; the \
             records beyond it are left out, so this release is biased: ask the board to raise \
             the capacity"
        );
    }
    Ok(records)
}

fn truncate<T>(records: &mut Vec<T>, capacity: u32) -> usize {
    let cut = records.len().saturating_sub(capacity as usize);
    records.truncate(capacity as usize);
    cut
}

impl Agent {
    /// Runs the join steps of round `id`, then adds every complete pair's share to the
    /// prepared vector (which already holds this partner's noise share). The local ledger is
    /// charged once the relay keys are exchanged, just before the offers (the first message
    /// derived from data) leave: the matchers' noisy counts are part of the query's cost.
    pub(super) async fn join<R: CryptoRng>(
        &self,
        id: i64,
        p: &mut Prepared,
        part: LinkedPart,
        rng: &mut R,
    ) -> Result<(), AgentError> {
        let me = p.me;
        let protocol = |e: civic_linkage::LinkError| {
            AgentError::Protocol(format!("linkage: {e} ({})", e.code()))
        };
        let (mut joins, keys) = Joins::start(
            &part.shape,
            part.role,
            &part.me,
            id as u64,
            part.counterparts,
            part.dummies,
            &self.identity,
            rng,
        )
        .map_err(protocol)?;
        self.post_join(id, me, JoinStep::RelayKeys, keys).await?;
        let delivered = self.wait_join(id, JoinStep::RelayKeys, &mut joins).await?;
        self.charge(id, p).await?;
        let offers = joins
            .offers(&delivered, &part.records, rng)
            .map_err(protocol)?;
        drop(part.records);
        self.post_join(id, me, JoinStep::Offers, offers).await?;
        let delivered = self.wait_join(id, JoinStep::Offers, &mut joins).await?;
        let returns = joins.returns(&delivered, rng);
        self.post_join(id, me, JoinStep::Returns, returns).await?;
        let delivered = self.wait_join(id, JoinStep::Returns, &mut joins).await?;
        let sums = joins.sums(&delivered, rng);
        self.post_join(id, me, JoinStep::Sums, sums).await?;
        let delivered = self.wait_join(id, JoinStep::Sums, &mut joins).await?;
        joins
            .finish(&delivered)
            .map_err(|e| AgentError::Protocol(e.to_string()))?;
        for (partner, outcome) in joins.outcomes() {
            match outcome {
                Ok(()) => tracing::info!(round = id, %partner, "joined"),
                Err(why) => {
                    tracing::warn!(round = id, %partner, %why, "pair dropped")
                }
            }
        }
        let mut words: Vec<u64> = p.vector.iter().map(|v| *v as u64).collect();
        joins.add_shares(&mut words, &part.shape, part.cells);
        for (v, w) in p.vector.iter_mut().zip(words) {
            *v = w as i64;
        }
        Ok(())
    }

    async fn post_join(
        &self,
        id: i64,
        me: PartnerId,
        step: JoinStep,
        envelopes: Vec<civic_api::round::Envelope>,
    ) -> Result<(), AgentError> {
        let message = LinkedMessage::Join {
            round: id as u64,
            sender: me,
            step,
            envelopes,
        };
        Ok(self.client.post_as(id, &message).await?)
    }

    /// Polls the inbox until `step` has closed; ends the sessions with partners no longer in
    /// the round and returns what the step delivered.
    async fn wait_join(
        &self,
        id: i64,
        step: JoinStep,
        joins: &mut Joins,
    ) -> Result<Vec<(PartnerId, Vec<u8>)>, AgentError> {
        let give_up = std::time::Instant::now() + std::time::Duration::from_secs(3600);
        loop {
            match self.client.inbox_as::<JoinInbox>(id).await? {
                JoinInbox::Delivered {
                    step: s,
                    from,
                    present,
                } if s == step => {
                    joins.leave_absent(&present);
                    return Ok(from);
                }
                JoinInbox::Delivered { step: s, .. } => {
                    return Err(AgentError::Protocol(format!(
                        "round {id}: waiting for step {} the inbox delivered step {}",
                        step.as_str(),
                        s.as_str()
                    )));
                }
                JoinInbox::Nothing => {}
            }
            if std::time::Instant::now() > give_up {
                return Err(AgentError::Coordinator(format!(
                    "round {id} made no progress for an hour"
                )));
            }
            tokio::time::sleep(self.phase_poll).await;
        }
    }
}
