//! The agent's own records, kept in `state_dir/agent-state.json` and replaced atomically
//! (write, fsync, rename) on every change: the local privacy ledger, the peers' pinned
//! identity keys, and a journal of rounds with what was revealed in each. Restarting the
//! agent never lets it take part in a round twice or reveal both shares of one peer.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use civic_policies::Rho;
use civic_secagg::RevealLog;
use serde::{Deserialize, Serialize};

use crate::error::AgentError;

/// Where a round stands for this partner.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "status")]
pub enum RoundStatus {
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
}

/// The file's contents.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentState {
    /// The coordinator these records are about (round ids are the coordinator's).
    pub coordinator: String,
    /// ρ spent per dataset, in ledger units (see [`Rho::units`]).
    pub spent: BTreeMap<String, u64>,
    /// Peers' identity keys (hex) pinned on first use, by partner id.
    pub pinned_keys: BTreeMap<u32, String>,
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
        let mut file = Self { path, state };
        let stale: Vec<i64> = file
            .state
            .rounds
            .iter()
            .filter(|(_, r)| r.status == RoundStatus::Joined)
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

    /// Writes the state atomically.
    pub fn save(&self) -> Result<(), AgentError> {
        let tmp = self.path.with_extension("json.tmp");
        let text =
            serde_json::to_vec_pretty(&self.state).map_err(|e| AgentError::local(&self.path, e))?;
        let mut f = std::fs::File::create(&tmp).map_err(|e| AgentError::local(&tmp, e))?;
        f.write_all(&text)
            .and_then(|_| f.sync_all())
            .map_err(|e| AgentError::local(&tmp, e))?;
        std::fs::rename(&tmp, &self.path).map_err(|e| AgentError::local(&self.path, e))
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

    /// Pins every key not seen before and refuses a key that changed.
    pub fn pin_keys(&mut self, keys: &BTreeMap<u32, String>) -> Result<(), AgentError> {
        for (id, key) in keys {
            if let Some(pinned) = self.state.pinned_keys.get(id)
                && pinned != key
            {
                let prefix = |k: &str| k.chars().take(16).collect::<String>();
                return Err(AgentError::Refused(format!(
                    "partner {id}'s identity key changed from the one pinned on first use \
                     ({}…, now {}…); if the partner really rotated its key, remove its entry \
                     from {} after checking with them",
                    prefix(pinned),
                    prefix(key),
                    self.path.display()
                )));
            }
        }
        let new: Vec<(u32, String)> = keys
            .iter()
            .filter(|(id, _)| !self.state.pinned_keys.contains_key(id))
            .map(|(id, k)| (*id, k.clone()))
            .collect();
        if new.is_empty() {
            return Ok(());
        }
        self.update(|s| {
            s.pinned_keys.extend(new);
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_key_is_refused_and_state_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = StateFile::open(dir.path(), "http://c").unwrap();
        let keys: BTreeMap<u32, String> = [(1, "aa".repeat(32)), (2, "bb".repeat(32))].into();
        f.pin_keys(&keys).unwrap();
        f.update(|s| {
            s.rounds.insert(
                7,
                RoundRecord {
                    dataset: "d".into(),
                    cost_rho_units: 5,
                    status: RoundStatus::Joined,
                    reveals: None,
                },
            );
            Ok(())
        })
        .unwrap();
        let mut changed = keys.clone();
        changed.insert(2, "cc".repeat(32));
        let e = f.pin_keys(&changed).unwrap_err().to_string();
        assert!(e.contains("partner 2") && e.contains("changed"), "{e}");
        assert_eq!(
            f.state.pinned_keys[&2],
            "bb".repeat(32),
            "nothing re-pinned"
        );

        let reopened = StateFile::open(dir.path(), "http://c").unwrap();
        assert_eq!(reopened.state.pinned_keys.len(), 2);
        assert!(matches!(
            reopened.state.rounds[&7].status,
            RoundStatus::Abandoned { .. }
        ));
        let e = StateFile::open(dir.path(), "http://other").unwrap_err();
        assert!(e.to_string().contains("another state_dir"), "{e}");
    }
}
