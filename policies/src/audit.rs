//! The hash-chained audit log: every governance action and every release, each entry
//! carrying the hash of the one before, so that anyone holding an export can check that
//! nothing was altered, removed, inserted or reordered.
//!
//! The hash of entry n is SHA-256 over a domain label and, length-prefixed, the previous
//! hash, n, the time, the actor, the action, the subject and the details. The details are
//! kept as the exact JSON text that was hashed: a verifier hashes the bytes it holds and
//! never re-serialises (JSON libraries disagree on floats and key order). Length prefixes
//! keep two different entries from hashing the same bytes.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::PolicyError;

/// The `prev_hash` of the first entry.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

const DOMAIN: &[u8] = b"civic-audit/v1";

/// One entry, as stored and exported.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditRecord {
    /// Position in the log, from 1, without gaps.
    pub seq: u64,
    /// When, RFC 3339 UTC.
    pub at: String,
    /// Who: an account name, or "coordinator" for what the server does itself.
    pub actor: String,
    /// What, as a stable dotted name (`dataset.create`, `query.release`, …).
    pub action: String,
    /// What it was done to (`dataset:falls-housing`, `query:12`).
    pub subject: String,
    /// The particulars: JSON text, exactly as hashed.
    pub details: String,
    /// The previous entry's hash (hex), or [`GENESIS_HASH`].
    pub prev_hash: String,
    /// This entry's hash (hex).
    pub hash: String,
}

/// An entry before it is chained.
#[derive(Clone, Debug, PartialEq)]
pub struct AuditEvent {
    /// Who.
    pub actor: String,
    /// What.
    pub action: String,
    /// To what.
    pub subject: String,
    /// The particulars.
    pub details: serde_json::Value,
}

/// The end of a verified chain: its last position and hash. Publish it, and a later export
/// can be checked to extend it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainHead {
    /// Last seq (0 for an empty log).
    pub seq: u64,
    /// Last hash (hex).
    pub hash: String,
}

impl ChainHead {
    /// The head of an empty log.
    pub fn genesis() -> Self {
        Self {
            seq: 0,
            hash: GENESIS_HASH.to_string(),
        }
    }
}

impl AuditEvent {
    /// Chains the event after `head`, at time `at`.
    pub fn chain(self, head: &ChainHead, at: String) -> AuditRecord {
        let seq = head.seq + 1;
        let details = self.details.to_string();
        let hash = entry_hash(
            &head.hash,
            seq,
            &at,
            &self.actor,
            &self.action,
            &self.subject,
            &details,
        );
        AuditRecord {
            seq,
            at,
            actor: self.actor,
            action: self.action,
            subject: self.subject,
            details,
            prev_hash: head.hash.clone(),
            hash,
        }
    }
}

fn entry_hash(
    prev_hash: &str,
    seq: u64,
    at: &str,
    actor: &str,
    action: &str,
    subject: &str,
    details: &str,
) -> String {
    let mut h = Sha256::new();
    h.update(DOMAIN);
    let seq = seq.to_be_bytes();
    for field in [
        prev_hash.as_bytes(),
        &seq,
        at.as_bytes(),
        actor.as_bytes(),
        action.as_bytes(),
        subject.as_bytes(),
        details.as_bytes(),
    ] {
        h.update((field.len() as u64).to_be_bytes());
        h.update(field);
    }
    hex::encode(h.finalize())
}

/// Verifies `records` as the continuation of `from` (the genesis head for a whole log) and
/// returns the new head. Names the first entry that fails and why.
pub fn verify_chain(from: &ChainHead, records: &[AuditRecord]) -> Result<ChainHead, PolicyError> {
    let mut head = from.clone();
    for r in records {
        let fail = |reason: String| PolicyError::Audit { seq: r.seq, reason };
        if r.seq != head.seq + 1 {
            return Err(fail(format!(
                "expected entry {} next: an entry is missing, repeated or out of order",
                head.seq + 1
            )));
        }
        if r.prev_hash != head.hash {
            return Err(fail(format!(
                "prev_hash {} does not match the previous entry's hash {}",
                r.prev_hash, head.hash
            )));
        }
        let expected = entry_hash(
            &r.prev_hash,
            r.seq,
            &r.at,
            &r.actor,
            &r.action,
            &r.subject,
            &r.details,
        );
        if r.hash != expected {
            return Err(fail(
                "hash does not match the entry's contents: the entry was altered".into(),
            ));
        }
        head = ChainHead {
            seq: r.seq,
            hash: r.hash.clone(),
        };
    }
    Ok(head)
}

/// Checks a whole exported log against heads witnessed earlier (by a partner's agent, which
/// records the coordinator's published head as it goes). The export must verify from the
/// genesis head, reach every witnessed position, and hold the witnessed hash there: an
/// operator with write access can rewrite an entry and rehash everything after it so the
/// chain verifies again, but not so that it matches a hash someone else recorded before.
/// Names the first witnessed entry that differs, and the last that still matches.
pub fn check_witnessed(
    records: &[AuditRecord],
    witnessed: &[ChainHead],
) -> Result<(), PolicyError> {
    let head = verify_chain(&ChainHead::genesis(), records)?;
    let mut sorted: Vec<&ChainHead> = witnessed.iter().collect();
    sorted.sort_by_key(|h| h.seq);
    let mut last_good = 0;
    for w in sorted {
        if w.seq == 0 {
            continue;
        }
        let Some(r) = records.get((w.seq - 1) as usize) else {
            return Err(PolicyError::Audit {
                seq: w.seq,
                reason: format!(
                    "the export ends at entry {} but entry {} was published before: entries were removed",
                    head.seq, w.seq
                ),
            });
        };
        if r.hash != w.hash {
            return Err(PolicyError::Audit {
                seq: w.seq,
                reason: format!(
                    "entry {} differs from the head recorded earlier: the log was rewritten after \
                     entry {last_good} (which still matches) and at or before entry {}",
                    w.seq, w.seq
                ),
            });
        }
        last_good = w.seq;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn log(n: u64) -> Vec<AuditRecord> {
        let mut head = ChainHead::genesis();
        (0..n)
            .map(|i| {
                let r = AuditEvent {
                    actor: format!("board-{}", i % 3),
                    action: "query.approve".into(),
                    subject: format!("query:{i}"),
                    details: json!({"epsilon": 0.5 + i as f64, "note": "ok"}),
                }
                .chain(&head, format!("2026-11-23T00:00:{i:02}Z"));
                head = ChainHead {
                    seq: r.seq,
                    hash: r.hash.clone(),
                };
                r
            })
            .collect()
    }

    #[test]
    fn an_intact_log_verifies_and_extends_its_head() {
        let records = log(6);
        let head = verify_chain(&ChainHead::genesis(), &records[..3]).unwrap();
        assert_eq!(head.seq, 3);
        let tail = verify_chain(&head, &records[3..]).unwrap();
        assert_eq!(tail, verify_chain(&ChainHead::genesis(), &records).unwrap());
        // An export survives JSON.
        let text = serde_json::to_string(&records).unwrap();
        let back: Vec<AuditRecord> = serde_json::from_str(&text).unwrap();
        assert_eq!(verify_chain(&ChainHead::genesis(), &back).unwrap(), tail);
    }

    #[test]
    fn every_kind_of_tampering_is_found_at_the_right_entry() {
        let records = log(5);
        let seq_of = |r: Result<ChainHead, PolicyError>| match r {
            Err(PolicyError::Audit { seq, .. }) => seq,
            other => panic!("expected an audit error, got {other:?}"),
        };
        let mut altered = records.clone();
        altered[2].details = json!({"epsilon": 0.1, "note": "ok"}).to_string();
        assert_eq!(seq_of(verify_chain(&ChainHead::genesis(), &altered)), 3);

        let mut actor = records.clone();
        actor[1].actor = "someone-else".into();
        assert_eq!(seq_of(verify_chain(&ChainHead::genesis(), &actor)), 2);

        let mut removed = records.clone();
        removed.remove(3);
        assert_eq!(seq_of(verify_chain(&ChainHead::genesis(), &removed)), 5);

        let mut swapped = records.clone();
        swapped.swap(0, 1);
        assert_eq!(seq_of(verify_chain(&ChainHead::genesis(), &swapped)), 2);

        // Rehashing one altered entry still breaks the link to the next.
        let mut rehashed = records.clone();
        let prev = ChainHead {
            seq: 1,
            hash: rehashed[0].hash.clone(),
        };
        let mut forged = AuditEvent {
            actor: rehashed[1].actor.clone(),
            action: "query.reject".into(),
            subject: rehashed[1].subject.clone(),
            details: serde_json::from_str(&rehashed[1].details).unwrap(),
        }
        .chain(&prev, rehashed[1].at.clone());
        forged.seq = 2;
        rehashed[1] = forged;
        assert_eq!(seq_of(verify_chain(&ChainHead::genesis(), &rehashed)), 3);

        // A truncated log verifies, but to an older head than the one published.
        let head = verify_chain(&ChainHead::genesis(), &records[..4]).unwrap();
        assert_ne!(head, verify_chain(&ChainHead::genesis(), &records).unwrap());
    }

    /// The heads a partner would have recorded after entries `at`.
    fn heads(records: &[AuditRecord], at: &[u64]) -> Vec<ChainHead> {
        at.iter()
            .map(|&s| ChainHead {
                seq: s,
                hash: records[s as usize - 1].hash.clone(),
            })
            .collect()
    }

    #[test]
    fn a_log_rewritten_and_rehashed_verifies_but_not_against_heads_seen_before() {
        let records = log(8);
        let seen = heads(&records, &[2, 5, 8]);
        assert!(check_witnessed(&records, &seen).is_ok());
        // The operator rewrites entry 4 and rehashes 4..=8: the chain verifies again.
        let mut head = ChainHead {
            seq: 3,
            hash: records[2].hash.clone(),
        };
        let mut rewritten = records[..3].to_vec();
        for r in &records[3..] {
            let details = if r.seq == 4 {
                json!({"epsilon": 0.001, "note": "ok"})
            } else {
                serde_json::from_str(&r.details).unwrap()
            };
            let new = AuditEvent {
                actor: r.actor.clone(),
                action: r.action.clone(),
                subject: r.subject.clone(),
                details,
            }
            .chain(&head, r.at.clone());
            head = ChainHead {
                seq: new.seq,
                hash: new.hash.clone(),
            };
            rewritten.push(new);
        }
        assert!(verify_chain(&ChainHead::genesis(), &rewritten).is_ok());
        let e = check_witnessed(&rewritten, &seen).unwrap_err();
        assert!(
            matches!(&e, PolicyError::Audit { seq: 5, reason } if reason.contains("after entry 2")),
            "{e}"
        );
        // A log cut short of a head someone saw.
        let e = check_witnessed(&records[..6], &seen).unwrap_err();
        assert!(e.to_string().contains("entries were removed"), "{e}");
    }
}
