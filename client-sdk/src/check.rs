//! `civic-agent check`: what a partner IT team needs to see before going live. For each
//! dataset: the policy (from the coordinator, or the local copy), every mapped column
//! against the federated schema, the rows found, and per column how many values are
//! missing, outside the public domain or outside the public bounds (counts only, never
//! values); then which queries this agent's local policy would refuse. Online, it also
//! follows the board's manifests from `[board]` and says whether this partner's key and each
//! dataset's policy are in the newest one (until they are, rounds are declined).

use std::collections::HashMap;
use std::fmt::Write as _;

use civic_policies::Rho;
use civic_policies::dataset::{ColumnType, DatasetPolicy};
use civic_policies::manifest::{Manifest, policy_digest, verify_chain};

use crate::config::{AgentConfig, DatasetMapping, STATISTICS};
use crate::error::AgentError;
use crate::http::CoordinatorClient;
use crate::schema::{Cell, ColumnReader, Value};

/// What `check` found.
#[derive(Debug, Default)]
pub struct CheckReport {
    /// The report, for the terminal.
    pub text: String,
    /// Problems that must be fixed before going live (non-zero exit).
    pub problems: Vec<String>,
}

impl CheckReport {
    fn line(&mut self, s: impl AsRef<str>) {
        let _ = writeln!(self.text, "{}", s.as_ref());
    }

    fn problem(&mut self, s: String) {
        self.line(format!("  PROBLEM: {s}"));
        self.problems.push(s);
    }
}

#[derive(Clone, Default)]
struct ColumnCounts {
    values: u64,
    missing: u64,
    out_of_domain: u64,
    below_min: u64,
    above_max: u64,
}

/// The share of a column's rows a mapping may drop as outside the public domain before
/// `check` fails: beyond it, the mapping (or the extract) is almost surely wrong, and every
/// query on the column would quietly count only what is left.
pub const MAX_DROPPED_SHARE: f64 = 0.25;

impl ColumnCounts {
    /// The problem, if more than [`MAX_DROPPED_SHARE`] of the rows were dropped. The numbers
    /// stay on this machine: `check` reports to the partner, never to the coordinator.
    fn too_many_dropped(&self, column: &str, local: &str) -> Option<String> {
        let rows = self.values + self.missing + self.out_of_domain;
        let share = self.out_of_domain as f64 / rows.max(1) as f64;
        (share > MAX_DROPPED_SHARE).then(|| {
            format!(
                "columns.{column}: {} of {rows} rows ({:.0}%) of {local} fall outside the \
                 domain after mapping and would be dropped (at most {:.0}% may be): check the \
                 column's value mapping against the policy's categories",
                self.out_of_domain,
                share * 100.0,
                MAX_DROPPED_SHARE * 100.0
            )
        })
    }
}

/// Runs every check; `client` is None with `--offline` (local policy copies only).
pub async fn check(config: &AgentConfig, client: Option<&CoordinatorClient>) -> CheckReport {
    let mut report = CheckReport::default();
    report.line(format!("coordinator: {}", config.coordinator.url));
    match crate::identity::load(&config.identity_key) {
        Ok(k) => report.line(format!(
            "identity key: {} (public)",
            hex::encode(k.public().0)
        )),
        Err(e) => report.problem(e.to_string()),
    }
    let mut manifest = None;
    if let Some(client) = client {
        match client.roster().await {
            Ok(_) => report.line("coordinator reachable; token accepted"),
            Err(e) => report.problem(format!("coordinator: {}", AgentError::from(e))),
        }
        manifest = check_manifest(config, client, &mut report).await;
    }
    if config.datasets.is_empty() {
        report.problem("no [[datasets]]: this agent serves nothing".into());
    }
    for mapping in &config.datasets {
        report.line(format!("\ndataset {}", mapping.id));
        let policy = match load_policy(mapping, client).await {
            Ok(p) => p,
            Err(e) => {
                report.problem(e.to_string());
                continue;
            }
        };
        if let Some(m) = &manifest {
            let digest = policy_digest(&policy.file);
            match m.policy_digest(&mapping.id) {
                Some(d) if d == digest => {
                    report.line("  policy: the one the board's manifest signs")
                }
                signed => report.problem(format!(
                    "the policy (digest {digest}) is not the one the board's manifest signs ({}): \
                     rounds on it will be declined until the board publishes a manifest naming it",
                    signed.unwrap_or("none for this dataset")
                )),
            }
        }
        check_dataset(config, mapping, &policy, &mut report).await;
    }
    report.line(if report.problems.is_empty() {
        "\nready: no problems found".to_string()
    } else {
        format!("\n{} problem(s) found", report.problems.len())
    });
    report
}

/// Follows the coordinator's manifests from this partner's `[board]` keys and reports where
/// this partner stands in the newest one.
async fn check_manifest(
    config: &AgentConfig,
    client: &CoordinatorClient,
    report: &mut CheckReport,
) -> Option<Manifest> {
    let chain = match client.manifests().await {
        Ok(c) => c.manifests,
        Err(e) => {
            report.problem(format!("manifests: {}", AgentError::from(e)));
            return None;
        }
    };
    if chain.is_empty() {
        report.line(
            "note: the board has published no manifest yet; rounds are declined until it \
             does (give the board this partner's public key above)",
        );
        return None;
    }
    let manifest = match verify_chain(&config.board.anchor(), &chain) {
        Ok(m) => m.clone(),
        Err(e) => {
            report.problem(format!(
                "the coordinator's manifests do not verify from [board] (check the keys the \
                 board gave you): {e}"
            ));
            return None;
        }
    };
    report.line(format!(
        "board manifest: version {} of {:?} verified (digest {})",
        manifest.version,
        manifest.federation,
        manifest.digest()
    ));
    let mine = crate::identity::load(&config.identity_key)
        .map(|k| hex::encode(k.public().0))
        .unwrap_or_default();
    match manifest.partner_with_key(&mine) {
        Some(p) => report.line(format!(
            "  this partner is listed as {} ({})",
            p.name, p.organisation
        )),
        None => report.line(
            "note: this partner's identity key is not in the manifest yet; rounds are declined \
             until the board lists it",
        ),
    }
    Some(manifest)
}

async fn load_policy(
    mapping: &DatasetMapping,
    client: Option<&CoordinatorClient>,
) -> Result<DatasetPolicy, AgentError> {
    if let Some(path) = &mapping.policy {
        let text = std::fs::read_to_string(path).map_err(|e| AgentError::local(path, e))?;
        return DatasetPolicy::from_toml(&text, &path.display().to_string())
            .map_err(|e| AgentError::local(path, e));
    }
    let client = client.ok_or_else(|| AgentError::Config {
        file: "partner.toml".into(),
        field: format!("datasets ({}).policy", mapping.id),
        reason: "offline, and no local policy copy: set datasets.policy".into(),
    })?;
    let view = client.latest_dataset(&mapping.id).await?;
    DatasetPolicy::validate(
        view.policy,
        &format!("dataset {} version {}", mapping.id, view.version),
    )
    .map_err(|e| AgentError::Refused(crate::decline::DeclineCode::PolicyInvalid, e.to_string()))
}

async fn check_dataset(
    config: &AgentConfig,
    mapping: &DatasetMapping,
    policy: &DatasetPolicy,
    report: &mut CheckReport,
) {
    let source = crate::source::source_name(&mapping.source);
    report.line(format!("  source: {source}"));
    for name in mapping.columns.keys() {
        if policy.column(name).is_none() {
            report.problem(format!(
                "columns.{name}: the federated schema has no such column"
            ));
        }
    }
    let mut readers = Vec::new();
    for column in &policy.columns {
        let Some(m) = mapping.columns.get(&column.name) else {
            report.problem(format!(
                "federated column {} is not mapped: queries using it will be declined",
                column.name
            ));
            continue;
        };
        let (local, values) = m.parts();
        match ColumnReader::new(column.clone(), local.to_string(), values) {
            Ok(r) => readers.push(r),
            Err(e) => report.problem(format!("columns.{}: {e}", column.name)),
        }
    }
    let k = policy.rows_per_resident_per_partner();
    let mut counts = vec![ColumnCounts::default(); readers.len()];
    let mut per_resident: HashMap<Vec<u8>, u32> = HashMap::new();
    let scanned = crate::source::scan(mapping, &readers, &mut |cells, resident| {
        for ((cell, reader), c) in cells.iter().zip(&readers).zip(counts.iter_mut()) {
            tally(c, &reader.column.kind, *cell);
        }
        if let Some(r) = resident {
            *per_resident.entry(r.to_vec()).or_insert(0) += 1;
        }
    })
    .await;
    match scanned {
        Ok(rows) => report.line(format!("  rows found: {rows}")),
        Err(e) => report.problem(e.to_string()),
    }
    for (reader, c) in readers.iter().zip(&counts) {
        let mut notes = vec![
            format!("{} values", c.values),
            format!("{} missing", c.missing),
        ];
        if c.out_of_domain > 0 {
            notes.push(format!("{} outside the domain (dropped)", c.out_of_domain));
        }
        if c.below_min + c.above_max > 0 {
            notes.push(format!(
                "{} below and {} above the public bounds (clamped)",
                c.below_min, c.above_max
            ));
        }
        report.line(format!(
            "  {} ← {}: {}; {}",
            reader.column.name,
            reader.local,
            type_name(&reader.column.kind),
            notes.join(", ")
        ));
        if let Some(problem) = c.too_many_dropped(&reader.column.name, &reader.local) {
            report.problem(problem);
        }
    }
    match &mapping.resident_column {
        Some(col) => {
            let over = per_resident.values().filter(|n| **n > k).count();
            report.line(format!(
                "  residents ({col}): {}; {over} with more than {k} row(s), whose extra rows are dropped",
                per_resident.len()
            ));
        }
        None => report.line(format!(
            "  no resident_column: the extract is trusted to hold at most {k} row(s) per resident"
        )),
    }
    refusals(config, policy, report);
}

fn tally(c: &mut ColumnCounts, kind: &ColumnType, cell: Cell) {
    match cell {
        Cell::Missing => c.missing += 1,
        Cell::OutOfDomain => c.out_of_domain += 1,
        Cell::Value(v) => {
            c.values += 1;
            let (below, above) = match (kind, v) {
                (ColumnType::Integer { min, max, .. }, Value::Int(x)) => (x < *min, x > *max),
                (ColumnType::Decimal { min, max, .. }, Value::Dec(x)) => (x < *min, x > *max),
                _ => (false, false),
            };
            c.below_min += u64::from(below);
            c.above_max += u64::from(above);
        }
    }
}

fn type_name(kind: &ColumnType) -> String {
    match kind {
        ColumnType::Integer { min, max, .. } => format!("integer in [{min}, {max}]"),
        ColumnType::Decimal {
            min,
            max,
            resolution,
            ..
        } => format!("decimal in [{min}, {max}] by {resolution}"),
        ColumnType::Category { domain } => format!("category of {}", domain.len()),
        ColumnType::Boolean => "boolean".into(),
    }
}

/// What the local policy would refuse of this dataset's queries.
fn refusals(config: &AgentConfig, policy: &DatasetPolicy, report: &mut CheckReport) {
    let l = &config.limits;
    if let Some(allowed) = &l.allowed_statistics {
        let refused: Vec<&str> = STATISTICS
            .iter()
            .copied()
            .filter(|s| !allowed.iter().any(|a| a == s))
            .collect();
        if !refused.is_empty() {
            report.line(format!("  refuses statistics: {}", refused.join(", ")));
        }
    }
    if let Some(max) = l.max_rho_per_query
        && let Ok(cap) = Rho::cap(max)
        && policy.per_query > cap
    {
        report.line(format!(
            "  refuses queries costing more than ρ = {max} (the dataset allows up to {})",
            policy.per_query
        ));
    }
    if let Some(max) = l.max_epsilon_per_query {
        report.line(format!(
            "  refuses pure-DP queries spending more than ε = {max}"
        ));
    }
    report.line(format!("  local total: ρ = {}", l.total_rho));
    let floor = l.min_survivors.max(policy.min_partners() as usize);
    if floor > policy.partners().len() {
        report.problem(format!(
            "limits.min_survivors = {} but the dataset has only {} partners: every round would be refused",
            l.min_survivors,
            policy.partners().len()
        ));
    } else if l.min_survivors > policy.min_partners() as usize {
        report.line(format!(
            "  refuses rounds that would release from fewer than {} partners (the policy allows {})",
            l.min_survivors,
            policy.min_partners()
        ));
    }
}
