//! `civic-agent audit-check`: compares an export of the coordinator's audit log with the
//! heads this partner's agent recorded as it ran. The export must verify as a hash chain and
//! hold, at every recorded position, the hash recorded then: a log rewritten and rehashed by
//! anyone with write access to the coordinator's store fails here, naming the entry.

use std::path::Path;

use civic_api::governance::AuditPage;
use civic_policies::audit::check_witnessed;

use crate::config::AgentConfig;
use crate::error::AgentError;
use crate::state::StateFile;

/// Checks the export in `export` (the JSON of `GET /v1/audit?limit=…`, the whole log) against
/// the heads in this agent's state; returns a summary.
pub fn check_export(config: &AgentConfig, export: &Path) -> Result<String, AgentError> {
    let text = std::fs::read_to_string(export).map_err(|e| AgentError::local(export, e))?;
    let page: AuditPage = serde_json::from_str(&text).map_err(|e| {
        AgentError::local(
            export,
            format!("not an audit export (GET /v1/audit?limit=10000 writes one): {e}"),
        )
    })?;
    let url = config.coordinator.url.trim_end_matches('/');
    let state = StateFile::read(&config.state_dir, url)?;
    let heads = &state.audit_heads;
    check_witnessed(&page.records, heads).map_err(|e| AgentError::local(export, e))?;
    Ok(format!(
        "{}: {} entries verify as a chain and match the {} head(s) this partner recorded{}",
        export.display(),
        page.records.len(),
        heads.len(),
        heads
            .iter()
            .map(|h| h.seq)
            .max()
            .map(|s| format!(" (the newest at entry {s})"))
            .unwrap_or_default()
    ))
}
