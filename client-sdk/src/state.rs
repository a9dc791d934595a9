//! The agent's own records, kept in `state_dir/agent-state.json` (mode 0600) and replaced
//! atomically (write, fsync, rename) on every change: the local privacy ledger, the newest
//! board manifest seen, the questions already answered, and a journal of rounds with what
//! was revealed in each. Restarting the agent never lets it take part in a round twice or
//! reveal both shares of one peer; a coordinator cannot roll the manifest back.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use civic_policies::Rho;
use civic_policies::audit::ChainHead;
use civic_secagg::RevealLog;
use serde::{Deserialize, Serialize};

use crate::error::AgentError;

/// Where a round stands for this partner.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "status")]
pub enum RoundStatus {
    /// Being checked: reserved before any check, so that a round listed twice is handled
    /// once. After a restart it is abandoned.
    Deciding,
    /// Refused under the local policy (the reason was sent to the coordinator).
    Declined {
        /// Why.
        reason: String,
    },
    /// Keys advertised; the round's secrets live only in this process. After a restart the
    /// round is abandoned (this partner drops out of it).
    Joined,
    /// The masked vector was sent and its cost charged to the local ledger.
    InputSent,
    /// Unmasking shares sent: nothing more to do.
    Finished,
    /// Left before sending the masked vector (dropped, aborted, or a restart).
    Abandoned {
        /// Why.
        reason: String,
    },
}

/// One round in the journal.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RoundRecord {
    /// The dataset.
    pub dataset: String,
    /// What the round costs, in ρ (charged when the masked vector is sent).
    pub cost_rho_units: u64,
    /// Where it stands.
    #[serde(flatten)]
    pub status: RoundStatus,
    /// The shares revealed (saved before they are sent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reveals: Option<RevealLog>,
    /// The UTC day (days since 1970-01-01) this partner joined the round, for the daily
    /// limit on rounds per dataset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub day: Option<u64>,
}

/// Audit heads kept in the state file.
pub const AUDIT_HEADS_KEPT: usize = 10_000;

/// The file's contents.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentState {
    /// The coordinator these records are about (round ids are the coordinator's).
    pub coordinator: String,
    /// ρ spent per dataset, in ledger units (see [`Rho::units`]).
    pub spent: BTreeMap<String, u64>,
    /// Read from files written before the board's manifest; no longer used (peers' keys
    /// come from the manifest, never from first use).
    #[serde(default, skip_serializing)]
    pub pinned_keys: BTreeMap<u32, String>,
    /// The newest manifest version (and its digest) this agent has verified: an older one
    /// served later is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest: Option<(u64, String)>,
    /// Fingerprints of the questions this partner sent its input for: the same question is
    /// never answered twice (the coordinator re-serves a release without a round).
    #[serde(default)]
    pub answered: std::collections::BTreeSet<String>,
    /// The audit log's heads as the coordinator published them, oldest first (the newest
    /// [`AUDIT_HEADS_KEPT`]): `civic-agent audit-check` compares an export with them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audit_heads: Vec<ChainHead>,
    /// Rounds by id.
    pub rounds: BTreeMap<i64, RoundRecord>,
}

/// The state file, loaded.
#[derive(Debug)]
pub struct StateFile {
    path: PathBuf,
    /// What it holds.
    pub state: AgentState,
}

impl StateFile {
    /// Loads `dir/agent-state.json`, or starts one for `coordinator`. Rounds left `Joined` by
    /// a previous process are marked abandoned: their secrets died with it. Refuses a file
    /// kept for another coordinator.
    pub fn open(dir: &Path, coordinator: &str) -> Result<Self, AgentError> {
        std::fs::create_dir_all(dir).map_err(|e| AgentError::local(dir, e))?;
        let path = dir.join("agent-state.json");
        let state = Self::read(dir, coordinator)?;
        let mut file = Self { path, state };
        let stale: Vec<i64> = file
            .state
            .rounds
            .iter()
            .filter(|(_, r)| matches!(r.status, RoundStatus::Joined | RoundStatus::Deciding))
            .map(|(id, _)| *id)
            .collect();
        if !stale.is_empty() {
            for id in stale {
                if let Some(r) = file.state.rounds.get_mut(&id) {
                    r.status = RoundStatus::Abandoned {
                        reason: "the agent restarted before sending its masked vector".into(),
                    };
                }
            }
            file.save()?;
        }
        Ok(file)
    }

    /// Reads the state without changing it (a running agent may own the file), or an empty
    /// state if there is none yet.
    pub fn read(dir: &Path, coordinator: &str) -> Result<AgentState, AgentError> {
        let path = dir.join("agent-state.json");
        let state = match std::fs::read_to_string(&path) {
            Ok(text) => {
                let s: AgentState = serde_json::from_str(&text)
                    .map_err(|e| AgentError::local(&path, format!("unreadable state: {e}")))?;
                if s.coordinator != coordinator {
                    return Err(AgentError::local(
                        &path,
                        format!(
                            "kept for coordinator {}, not {coordinator}: use another state_dir",
                            s.coordinator
                        ),
                    ));
                }
                s
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => AgentState {
                coordinator: coordinator.to_string(),
                ..Default::default()
            },
            Err(e) => return Err(AgentError::local(&path, e)),
        };
        Ok(state)
    }

    /// Writes the state atomically.
    pub fn save(&self) -> Result<(), AgentError> {
        let text =
            serde_json::to_vec_pretty(&self.state).map_err(|e| AgentError::local(&self.path, e))?;
        write_atomically(&self.path, &text)
    }

    /// Applies `change` and saves; on a failed save the change is undone, so memory never
    /// runs ahead of the file.
    pub fn update<T>(
        &mut self,
        change: impl FnOnce(&mut AgentState) -> Result<T, AgentError>,
    ) -> Result<T, AgentError> {
        let before = self.state.clone();
        let out = change(&mut self.state)?;
        if let Err(e) = self.save() {
            self.state = before;
            return Err(e);
        }
        Ok(out)
    }

    /// ρ spent on `dataset`.
    pub fn spent(&self, dataset: &str) -> Rho {
        Rho::from_units(self.state.spent.get(dataset).copied().unwrap_or(0))
    }

    /// Records the audit log's head if it moved; an error if it went backwards (the log was
    /// cut or replaced since this agent last looked).
    pub fn witness(&mut self, head: ChainHead) -> Result<(), AgentError> {
        let last = self.state.audit_heads.last().cloned();
        if last.as_ref() == Some(&head) {
            return Ok(());
        }
        self.update(|s| {
            s.audit_heads.push(head.clone());
            let excess = s.audit_heads.len().saturating_sub(AUDIT_HEADS_KEPT);
            s.audit_heads.drain(..excess);
            Ok(())
        })?;
        match last {
            Some(l) if l.seq >= head.seq => Err(AgentError::Coordinator(format!(
                "the audit log's head went from entry {} back to entry {}: the log was cut or \
                 replaced; run civic-agent audit-check on an export",
                l.seq, head.seq
            ))),
            _ => Ok(()),
        }
    }

    /// Rounds of `dataset` this partner joined, or is about to join, on `day` (a declined
    /// round does not count).
    pub fn joined_on(&self, dataset: &str, day: u64) -> usize {
        self.state
            .rounds
            .values()
            .filter(|r| r.dataset == dataset && r.day == Some(day))
            .filter(|r| !matches!(r.status, RoundStatus::Declined { .. }))
            .count()
    }
}

/// Replaces `path` with `bytes` atomically (write a private temporary file, fsync, rename):
/// readable by the owner only, since it may hold what a partner revealed.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), AgentError> {
    let tmp = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut f = options.open(&tmp).map_err(|e| AgentError::local(&tmp, e))?;
    #[cfg(unix)]
    {
        // A temporary file left by an older agent keeps its mode: set it.
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(|e| AgentError::local(&tmp, e))?;
    }
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(|e| AgentError::local(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| AgentError::local(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_is_private_and_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = StateFile::open(dir.path(), "http://c").unwrap();
        f.update(|s| {
            s.rounds.insert(
                7,
                RoundRecord {
                    dataset: "d".into(),
                    cost_rho_units: 5,
                    status: RoundStatus::Joined,
                    reveals: None,
                    day: Some(20_000),
                },
            );
            s.rounds.insert(
                8,
                RoundRecord {
                    dataset: "d".into(),
                    cost_rho_units: 5,
                    status: RoundStatus::Deciding,
                    reveals: None,
                    day: None,
                },
            );
            s.answered.insert("f00d".into());
            Ok(())
        })
        .unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("agent-state.json"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert_eq!(f.joined_on("d", 20_000), 1);
        assert_eq!(f.joined_on("d", 20_001), 0);

        let reopened = StateFile::open(dir.path(), "http://c").unwrap();
        assert!(reopened.state.answered.contains("f00d"));
        assert!(matches!(
            reopened.state.rounds[&8].status,
            RoundStatus::Abandoned { .. }
        ));
        assert!(matches!(
            reopened.state.rounds[&7].status,
            RoundStatus::Abandoned { .. }
        ));
        let e = StateFile::open(dir.path(), "http://other").unwrap_err();
        assert!(e.to_string().contains("another state_dir"), "{e}");
    }
}
