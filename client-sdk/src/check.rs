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
use civic_policies::linkage::{IdentifierFormat, IdentifierProblem, Side};
use civic_policies::manifest::{Manifest, policy_digest, verify_chain};

use crate::config::{AgentConfig, DatasetMapping, STATISTICS};
use crate::error::AgentError;
use crate::http::CoordinatorClient;
use crate::schema::{Cell, ColumnReader, InvalidRule, Value};
use crate::source::{FIRST_FEW, RowAt, ScanMode};

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

/// What one column held, over the whole extract (counts and line numbers, never values).
#[derive(Clone, Default)]
struct ColumnCounts {
    values: u64,
    missing: u64,
    out_of_domain: u64,
    invalid: u64,
    below_min: u64,
    above_max: u64,
    /// The first few places of each problem, for the partner to look at.
    first_out_of_domain: Vec<RowAt>,
    first_invalid: Vec<RowAt>,
    first_clamped: Vec<RowAt>,
}

/// The share of a column's rows a mapping may drop (outside the public domain, or unreadable
/// and read as missing) before `check` fails: beyond it, the mapping (or the extract) is
/// almost surely wrong, and every query on the column would quietly count only what is left.
pub const MAX_DROPPED_SHARE: f64 = 0.25;

impl ColumnCounts {
    fn rows(&self) -> u64 {
        self.values + self.missing + self.out_of_domain + self.invalid
    }

    /// The problems a partner must fix before going live. The numbers stay on this machine:
    /// `check` reports to the partner, never to the coordinator.
    fn problems(&self, reader: &ColumnReader) -> Vec<String> {
        let (column, local) = (&reader.column.name, &reader.local);
        let mut problems = Vec::new();
        if self.invalid > 0 && reader.invalid == InvalidRule::Refuse {
            problems.push(format!(
                "columns.{column}: {} value(s) of {local} cannot be read as {} ({}): rounds \
                 needing the column are declined until they are fixed; fix the extract, or add \
                 invalid = \"missing\" to the column's mapping to read them as missing",
                self.invalid,
                type_name(&reader.column.kind),
                places(&self.first_invalid, self.invalid),
            ));
        }
        let dropped = self.out_of_domain
            + match reader.invalid {
                InvalidRule::Missing => self.invalid,
                InvalidRule::Refuse => 0,
            };
        let share = dropped as f64 / self.rows().max(1) as f64;
        if share > MAX_DROPPED_SHARE {
            problems.push(format!(
                "columns.{column}: {dropped} of {} rows ({:.0}%) of {local} would be dropped, as \
                 outside the domain after mapping or unreadable (at most {:.0}% may be): check \
                 the column's mapping against the policy",
                self.rows(),
                share * 100.0,
                MAX_DROPPED_SHARE * 100.0
            ));
        }
        problems
    }

    /// The report's line for the column.
    fn describe(&self, reader: &ColumnReader) -> String {
        let mut notes = vec![
            format!("{} values", self.values),
            format!("{} missing", self.missing),
        ];
        if self.out_of_domain > 0 {
            notes.push(format!(
                "{} outside the domain, dropped ({})",
                self.out_of_domain,
                places(&self.first_out_of_domain, self.out_of_domain)
            ));
        }
        if self.invalid > 0 {
            let fate = match reader.invalid {
                InvalidRule::Refuse => "refused",
                InvalidRule::Missing => "read as missing",
            };
            notes.push(format!(
                "{} unreadable, {fate} ({})",
                self.invalid,
                places(&self.first_invalid, self.invalid)
            ));
        }
        if self.below_min + self.above_max > 0 {
            notes.push(format!(
                "{} below and {} above the public bounds, clamped ({})",
                self.below_min,
                self.above_max,
                places(&self.first_clamped, self.below_min + self.above_max)
            ));
        }
        format!(
            "  {} ← {}: {}; {}",
            reader.column.name,
            reader.local,
            type_name(&reader.column.kind),
            notes.join(", ")
        )
    }
}

/// "lines 305, 1022 and 3 more" (or "rows …" for a table).
fn places(first: &[RowAt], total: u64) -> String {
    let numbers: Vec<String> = first
        .iter()
        .map(|at| match at {
            RowAt::Line(n) | RowAt::Row(n) => n.to_string(),
        })
        .collect();
    let noun = match (first.first(), total) {
        (Some(RowAt::Line(_)), 1) => "line",
        (Some(RowAt::Line(_)), _) => "lines",
        (_, 1) => "row",
        _ => "rows",
    };
    let more = total.saturating_sub(first.len() as u64);
    let more = if more > 0 {
        format!(" and {more} more")
    } else {
        String::new()
    };
    format!("{noun} {}{more}", numbers.join(", "))
}

fn note_place(list: &mut Vec<RowAt>, at: RowAt) {
    if list.len() < FIRST_FEW {
        list.push(at);
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

/// What `run` and `once` check before taking part: the data half of `check`, for every
/// dataset whose policy can be had now (its local copy, or the coordinator's). A problem here
/// would have rounds on the dataset declined, so the agent refuses to start and names
/// `check`. A dataset whose policy cannot be had yet (the coordinator down, the dataset not
/// registered) is left to the rounds, with a warning.
pub async fn preflight(config: &AgentConfig) -> Result<(), AgentError> {
    let client = crate::agent::connect(config, std::time::Duration::from_secs(10))?;
    let mut report = CheckReport::default();
    for mapping in &config.datasets {
        match load_policy(mapping, Some(&client)).await {
            Ok(policy) => check_dataset(config, mapping, &policy, &mut report).await,
            Err(e) => tracing::warn!(
                dataset = %mapping.id,
                error = %e,
                "the extract is not checked before starting: its policy cannot be had yet"
            ),
        }
    }
    if report.problems.is_empty() {
        Ok(())
    } else {
        Err(AgentError::CheckFailed(report.problems))
    }
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
    for (name, trainer) in &mapping.trainers {
        let command = trainer.command.join(" ");
        match crate::trainer::locate(trainer) {
            Some(path) => report.line(format!(
                "  trainer {name}: {command} (program {}; run in {}, at most {} s a round)",
                path.display(),
                trainer.directory.display(),
                trainer.timeout_seconds
            )),
            None => report.problem(format!(
                "trainers.{name}: program {:?} is not found (neither a file from {} nor on PATH): \
                 DP-SGD rounds asking for it will be declined",
                trainer.command[0],
                trainer.directory.display()
            )),
        }
    }
    for name in mapping.columns.keys() {
        if policy.column(name).is_none() {
            report.problem(format!(
                "columns.{name}: the federated schema has no such column"
            ));
        }
    }
    let Some(side) = linked_side(mapping, policy, report) else {
        return;
    };
    let mut readers = Vec::new();
    let held = |name: &str| side.is_none_or(|s: &Side| s.columns.iter().any(|c| c == name));
    for column in policy.columns.iter().filter(|c| held(&c.name)) {
        let Some(m) = mapping.columns.get(&column.name) else {
            report.problem(format!(
                "federated column {} is not mapped: queries using it will be declined",
                column.name
            ));
            continue;
        };
        match m.reader(column.clone()) {
            Ok(r) => readers.push(r),
            Err(e) => report.problem(format!("columns.{}: {e}", column.name)),
        }
    }
    let k = policy.rows_per_resident_per_partner();
    let mut counts = vec![ColumnCounts::default(); readers.len()];
    let mut per_resident: HashMap<Vec<u8>, u32> = HashMap::new();
    let format = policy.linkage.as_ref().map(|l| l.identifier);
    let mut identifiers = IdentifierHealth::default();
    let scanned = crate::source::scan(
        mapping,
        &readers,
        ScanMode::Survey,
        &mut |cells, resident, at| {
            for ((cell, reader), c) in cells.iter().zip(&readers).zip(counts.iter_mut()) {
                tally(c, &reader.column.kind, *cell, at);
            }
            if let Some(r) = resident {
                match format {
                    Some(f) => identifiers.tally(f, r, at),
                    None => *per_resident.entry(r.to_vec()).or_insert(0) += 1,
                }
            }
        },
    )
    .await;
    match scanned {
        Ok(summary) => {
            report.line(format!("  rows found: {}", summary.rows));
            if summary.malformed > 0 {
                let first: Vec<String> = summary
                    .first_malformed
                    .iter()
                    .map(|(at, reason)| format!("{at}: {reason}"))
                    .collect();
                report.problem(format!(
                    "{source}: {} malformed record(s), skipped here but fatal to a round ({}{}): \
                     fix the extract",
                    summary.malformed,
                    first.join("; "),
                    if summary.malformed > first.len() as u64 {
                        "; …"
                    } else {
                        ""
                    }
                ));
            }
        }
        Err(e) => report.problem(e.to_string()),
    }
    for (reader, c) in readers.iter().zip(&counts) {
        report.line(c.describe(reader));
        for problem in c.problems(reader) {
            report.problem(problem);
        }
    }
    if let (Some(side), Some(format)) = (side, format) {
        identifiers.report(mapping, side, format, report);
        refusals(config, policy, report);
        return;
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

/// For a linked dataset, the side this partner declared (`Some(Some(side))`); for another
/// dataset `Some(None)`; `None` (with the problem reported) when the mapping cannot be
/// checked further.
fn linked_side<'p>(
    mapping: &DatasetMapping,
    policy: &'p DatasetPolicy,
    report: &mut CheckReport,
) -> Option<Option<&'p Side>> {
    let Some(linkage) = &policy.linkage else {
        if mapping.side.is_some() {
            report.problem(format!(
                "side: dataset {} is not linked (its policy has no [linkage]): remove side",
                policy.id()
            ));
            return None;
        }
        return Some(None);
    };
    let kinds: Vec<&str> = linkage.sides.iter().map(|s| s.kind.as_str()).collect();
    let Some(declared) = &mapping.side else {
        report.problem(format!(
            "dataset {} is linked: set side = one of {} in its [[datasets]] entry, and resident_column to the local column holding the residents' linkage identifier",
            policy.id(),
            kinds.join(", ")
        ));
        return None;
    };
    let Some(side) = linkage.sides.iter().find(|s| &s.kind == declared) else {
        report.problem(format!(
            "side: \"{declared}\" is not a side of dataset {}; its sides are {}",
            policy.id(),
            kinds.join(", ")
        ));
        return None;
    };
    report.line(format!(
        "  linked dataset: this partner is on the {} side ({} residents at most; lists are padded to that size)",
        side.kind, side.capacity
    ));
    for name in mapping.columns.keys() {
        if let Some(other) = linkage.side_of_column(name).filter(|o| o.kind != side.kind) {
            report.problem(format!(
                "columns.{name}: held by the {} side, not {}: remove it from this mapping",
                other.kind, side.kind
            ));
        }
    }
    if mapping.resident_column.is_none() {
        report.problem(format!(
            "resident_column: a linked dataset needs the local column holding the residents'              linkage identifier ({})",
            identifier_name(linkage.identifier)
        ));
    }
    Some(Some(side))
}

fn identifier_name(format: IdentifierFormat) -> &'static str {
    match format {
        IdentifierFormat::NhsNumber => "an NHS number",
        IdentifierFormat::Pseudonym => "a pseudonym made at source",
    }
}

/// The linkage identifiers of an extract, as counts and row places (never values).
#[derive(Default)]
struct IdentifierHealth {
    usable: HashMap<String, u32>,
    missing: u64,
    malformed: u64,
    check_digit: u64,
    duplicated_rows: u64,
    first_bad: Vec<RowAt>,
    first_duplicate: Vec<RowAt>,
}

impl IdentifierHealth {
    fn tally(&mut self, format: IdentifierFormat, raw: &[u8], at: RowAt) {
        let normalised = std::str::from_utf8(raw)
            .map_err(|_| IdentifierProblem::Malformed)
            .and_then(|text| format.normalise(text));
        match normalised {
            Ok(id) => {
                let seen = self.usable.entry(id).or_insert(0);
                *seen += 1;
                if *seen > 1 {
                    self.duplicated_rows += 1;
                    note_place(&mut self.first_duplicate, at);
                }
            }
            Err(problem) => {
                match problem {
                    IdentifierProblem::Missing => self.missing += 1,
                    IdentifierProblem::Malformed => self.malformed += 1,
                    IdentifierProblem::CheckDigit => self.check_digit += 1,
                }
                note_place(&mut self.first_bad, at);
            }
        }
    }

    fn report(
        &self,
        mapping: &DatasetMapping,
        side: &Side,
        format: IdentifierFormat,
        report: &mut CheckReport,
    ) {
        let column = mapping.resident_column.as_deref().unwrap_or("?");
        let bad = self.missing + self.malformed + self.check_digit;
        report.line(format!(
            "  linkage identifier ({column}, {}): {} residents; {} missing, {} malformed, {} with a wrong check digit; {} rows repeat an identifier",
            identifier_name(format),
            self.usable.len(),
            self.missing,
            self.malformed,
            self.check_digit,
            self.duplicated_rows,
        ));
        if bad > 0 {
            report.problem(format!(
                "{column}: {bad} row(s) have no usable linkage identifier ({}): they cannot be linked and are left out of every join; fix them at source",
                places(&self.first_bad, bad)
            ));
        }
        if self.duplicated_rows > 0 {
            report.problem(format!(
                "{column}: {} row(s) repeat an identifier already seen ({}): a linked dataset holds one record per resident, and only the first row is linked; merge each resident's rows in the extract",
                self.duplicated_rows,
                places(&self.first_duplicate, self.duplicated_rows)
            ));
        }
        if self.usable.len() as u64 > u64::from(side.capacity) {
            report.problem(format!(
                "{column}: more residents than the {} side's capacity of {} in the policy: ask the board to raise it: until then the residents beyond it are left out of every join",
                side.kind, side.capacity
            ));
        }
    }
}

fn tally(c: &mut ColumnCounts, kind: &ColumnType, cell: Cell, at: RowAt) {
    match cell {
        Cell::Missing => c.missing += 1,
        Cell::OutOfDomain => {
            c.out_of_domain += 1;
            note_place(&mut c.first_out_of_domain, at);
        }
        Cell::Invalid => {
            c.invalid += 1;
            note_place(&mut c.first_invalid, at);
        }
        Cell::Value(v) => {
            c.values += 1;
            let (below, above) = match (kind, v) {
                (ColumnType::Integer { min, max, .. }, Value::Int(x)) => (x < *min, x > *max),
                (ColumnType::Decimal { min, max, .. }, Value::Dec(x)) => (x < *min, x > *max),
                _ => (false, false),
            };
            c.below_min += u64::from(below);
            c.above_max += u64::from(above);
            if below || above {
                note_place(&mut c.first_clamped, at);
            }
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
