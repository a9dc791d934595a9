//! The agent's configuration (`partner.toml`): where the coordinator is, where the identity
//! key and local state live, the partner's own limits, and each dataset's mapping to a local
//! source. Every error names the file and the field.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use civic_policies::dataset::Column;
use civic_policies::manifest::{Board, BoardMember, TrustAnchor};
use serde::Deserialize;

use crate::error::AgentError;
use crate::schema::{ColumnReader, InvalidRule};

/// The whole file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// `[coordinator]`.
    pub coordinator: CoordinatorConfig,
    /// Path of the Ed25519 identity key written by `civic-agent keygen`.
    pub identity_key: PathBuf,
    /// Directory for the agent's own records: ledger, pinned keys, round journal.
    pub state_dir: PathBuf,
    /// `[board]`: where trust starts.
    pub board: BoardTrust,
    /// `[limits]`: the partner's own policy.
    pub limits: LocalLimits,
    /// `[[datasets]]`: what this partner serves.
    #[serde(default)]
    pub datasets: Vec<DatasetMapping>,
}

/// `[coordinator]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoordinatorConfig {
    /// Base URL, e.g. `https://civic.example.org:8440`.
    pub url: String,
    /// File holding the partner's API token (mode 0600). `CIVIC_AGENT_TOKEN` overrides it.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Extra CA certificate (PEM) to trust, for a coordinator with a private CA.
    #[serde(default)]
    pub ca_certificate: Option<PathBuf>,
    /// Seconds between polls when idle (default 5).
    #[serde(default = "default_poll")]
    pub poll_seconds: f64,
    /// The longest back-off after errors, in seconds (default 300).
    #[serde(default = "default_backoff")]
    pub max_backoff_seconds: f64,
}

/// `[board]`: the governance board's keys and threshold, or the digest of a manifest, as the
/// board gave them at onboarding (out of band, never from the coordinator). The agent takes
/// part only in rounds the manifest they establish backs.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BoardTrust {
    /// The board members' Ed25519 public keys, hex (`civic-board show`).
    #[serde(default)]
    pub keys: Vec<String>,
    /// How many of them sign a manifest.
    #[serde(default)]
    pub threshold: Option<usize>,
    /// Or: the digest of a manifest the board gave this partner (`civic-board verify`).
    #[serde(default)]
    pub manifest_digest: Option<String>,
}

impl BoardTrust {
    /// The trust anchor this names.
    pub fn anchor(&self) -> TrustAnchor {
        match &self.manifest_digest {
            Some(d) => TrustAnchor::Digest(d.trim().to_ascii_lowercase()),
            None => TrustAnchor::Board(Board {
                threshold: self.threshold.unwrap_or(0),
                members: self
                    .keys
                    .iter()
                    .enumerate()
                    .map(|(i, k)| BoardMember {
                        name: format!("board key {}", i + 1),
                        key: k.trim().to_ascii_lowercase(),
                    })
                    .collect(),
            }),
        }
    }

    fn check(&self) -> Result<(), (String, String)> {
        let digest_form = self.manifest_digest.is_some();
        let keys_form = !self.keys.is_empty() || self.threshold.is_some();
        match (digest_form, keys_form) {
            (true, true) => Err((
                "board".into(),
                "give either keys and threshold, or manifest_digest, not both".into(),
            )),
            (false, false) => Err((
                "board".into(),
                "set keys and threshold (the board's public keys, from the board at onboarding), \
                 or manifest_digest"
                    .into(),
            )),
            (true, false) => {
                let d = self.manifest_digest.as_deref().unwrap_or_default().trim();
                if d.len() == 64 && hex::decode(d).is_ok() {
                    Ok(())
                } else {
                    Err((
                        "board.manifest_digest".into(),
                        "expected 64 hex digits".into(),
                    ))
                }
            }
            (false, true) => match self.anchor() {
                TrustAnchor::Board(b) => b
                    .validate("board")
                    .map_err(|e| ("board".into(), e.to_string())),
                TrustAnchor::Digest(_) => Ok(()),
            },
        }
    }
}

fn default_poll() -> f64 {
    5.0
}

fn default_backoff() -> f64 {
    300.0
}

/// `[limits]`: refused rounds are declined, with the reason sent to the coordinator.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalLimits {
    /// The most ε one pure-DP query may spend.
    #[serde(default)]
    pub max_epsilon_per_query: Option<f64>,
    /// The most ρ one query may spend (pure-ε queries count ε²/2).
    #[serde(default)]
    pub max_rho_per_query: Option<f64>,
    /// The most ρ all queries together may spend on this partner's data, per dataset.
    pub total_rho: f64,
    /// Statistics this partner answers: `count`, `sum`, `mean`, `histogram`, `quantiles`,
    /// `linear_regression`, `logistic_regression` (a training job; all if absent).
    #[serde(default)]
    pub allowed_statistics: Option<Vec<String>>,
    /// The fewest surviving partners whose sum this partner lets the coordinator learn
    /// (at least the policy's `min_partners`; default 3).
    #[serde(default = "default_min_survivors")]
    pub min_survivors: usize,
    /// Dropout fraction the round's threshold must withstand (default 0).
    #[serde(default)]
    pub max_dropout_rate: f64,
    /// Fraction of corrupt partners the round's threshold must withstand (default 0).
    #[serde(default)]
    pub max_corrupt_fraction: f64,
    /// Colluding partners the round's threshold must withstand, as a count (default 1, the
    /// least allowed; the manifest's `tolerated_colluders` applies if larger).
    #[serde(default = "default_min_colluders")]
    pub min_colluders: usize,
    /// The least ρ a query may cost (the manifest's floor applies if larger).
    #[serde(default)]
    pub min_rho_per_query: Option<f64>,
    /// The most rounds joined per dataset per day, UTC (the manifest's applies if smaller).
    #[serde(default)]
    pub max_rounds_per_dataset_per_day: Option<u32>,
}

fn default_min_colluders() -> usize {
    1
}

fn default_min_survivors() -> usize {
    3
}

/// `[[datasets]]`: one federated dataset and where this partner keeps it.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetMapping {
    /// The federated dataset's id.
    pub id: String,
    /// A local copy of the dataset policy (TOML), for `check` without the coordinator.
    #[serde(default)]
    pub policy: Option<PathBuf>,
    /// The source.
    pub source: SourceConfig,
    /// A local column identifying the resident (a pseudonym), for contribution bounding.
    /// Without it the agent relies on the extract holding at most the policy's rows per
    /// resident, and `check` says so.
    #[serde(default)]
    pub resident_column: Option<String>,
    /// For a linked dataset (one with `[linkage]` in its policy): the kind of partner this
    /// is, one of the policy's sides (e.g. `housing`). Only that side's columns are mapped,
    /// and `resident_column` holds the linkage identifier (an NHS number, or a pseudonym made
    /// at source), which never leaves this machine in the clear.
    #[serde(default)]
    pub side: Option<String>,
    /// SQL sources with a resident column: a unique column giving the rows' order, so that
    /// "the first K rows of each resident" is well defined.
    #[serde(default)]
    pub order_by: Option<String>,
    /// SQL sources: aggregate inside the database with parameterised SQL generated from the
    /// plan (values of the wrong type then count as missing instead of stopping the round:
    /// run `civic-agent check` after each load).
    #[serde(default)]
    pub pushdown: bool,
    /// Federated column → local column (a name, or `{ column, values }` with a value mapping).
    pub columns: BTreeMap<String, ColumnMapping>,
    /// `[datasets.trainers.NAME]`: local commands that train models Civic does not fit
    /// itself (DP-SGD jobs ask for one by name). Configured here only: a round names a
    /// trainer, never a command.
    #[serde(default)]
    pub trainers: BTreeMap<String, TrainerConfig>,
}

/// A partner's trainer: a program and its arguments, run without a shell in the directory of
/// `partner.toml`, given the round's parameters as JSON on standard input, printing the sum
/// of its examples' clipped gradients, or each example's gradient, as JSON on standard
/// output (see `docs/training.md`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainerConfig {
    /// The program, then its arguments (e.g. `["python3", "trainer.py", "--extract",
    /// "retina.csv"]`).
    pub command: Vec<String>,
    /// How long one round's run may take (default 50 s); it is killed after, with what it
    /// started. The coordinator's `phase_deadline_secs` (60 s by default) must leave room
    /// for it: the trainer runs before this partner's first message of the round.
    #[serde(default = "default_trainer_timeout")]
    pub timeout_seconds: f64,
    /// The directory it runs in: `partner.toml`'s.
    #[serde(skip)]
    pub directory: PathBuf,
}

fn default_trainer_timeout() -> f64 {
    50.0
}

/// Where a federated column comes from: a local column's name, or
/// `{ column = "…", values = { … }, invalid = "missing" }`.
#[derive(Clone, Debug)]
pub enum ColumnMapping {
    /// The local column's name.
    Name(String),
    /// The local column with a value mapping or a rule for unreadable values.
    Mapped(MappedColumn),
}

/// The table form of a column mapping.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MappedColumn {
    /// The local column's name.
    pub column: String,
    /// Local spelling → federated spelling (categories and booleans).
    #[serde(default)]
    pub values: BTreeMap<String, String>,
    /// What a value that cannot be read as the column's type becomes (default: refuse).
    #[serde(default)]
    pub invalid: InvalidRule,
}

// By hand rather than `untagged`, so that a misspelt key in the table form is named (serde's
// untagged enums only say that nothing matched).
impl<'de> Deserialize<'de> for ColumnMapping {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = ColumnMapping;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str(
                    "a local column name, or a table { column = \"…\", values = { … }, invalid = \"missing\" }",
                )
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ColumnMapping, E> {
                Ok(ColumnMapping::Name(v.to_string()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<ColumnMapping, A::Error> {
                MappedColumn::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(ColumnMapping::Mapped)
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

impl ColumnMapping {
    /// The local column's name.
    pub fn local(&self) -> &str {
        match self {
            ColumnMapping::Name(n) => n,
            ColumnMapping::Mapped(m) => &m.column,
        }
    }

    /// The reader of federated `column` from this local column.
    pub fn reader(&self, column: Column) -> Result<ColumnReader, String> {
        match self {
            ColumnMapping::Name(n) => ColumnReader::new(column, n.clone(), BTreeMap::new()),
            ColumnMapping::Mapped(m) => {
                ColumnReader::new(column, m.column.clone(), m.values.clone())
                    .map(|r| r.with_invalid(m.invalid))
            }
        }
    }
}

/// A local source.
#[derive(Clone, Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum SourceConfig {
    /// A CSV file with a header row.
    Csv {
        /// The file.
        path: PathBuf,
        /// Field delimiter (default `,`).
        #[serde(default)]
        delimiter: Option<char>,
    },
    /// A table or view in a SQLite file (opened read-only).
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// Table or view.
        table: String,
    },
    /// A table or view in PostgreSQL.
    Postgres {
        /// `postgres://…` (use a read-only role).
        url: String,
        /// Table or view, optionally `schema.table`.
        table: String,
    },
}

/// A TOML error as a partner's IT team reads it: the line, toml's message without its
/// snippet (which flattens badly into one log line), and where a misplaced key belongs.
fn parse_error(file: &str, text: &str, e: &toml::de::Error) -> AgentError {
    let field = e.span().map_or_else(
        || "-".to_string(),
        |span| {
            let before = &text[..span.start.min(text.len())];
            format!("line {}", before.matches('\n').count() + 1)
        },
    );
    let mut reason = e.message().trim_end().replace('\n', " ");
    if reason.contains("`pushdown`") {
        reason.push_str(
            " (`pushdown = true` belongs in the [[datasets]] table, beside `source`, not inside it)",
        );
    }
    AgentError::Config {
        file: file.to_string(),
        field,
        reason,
    }
}

impl AgentConfig {
    /// Reads and checks the file; relative paths are taken from the file's directory.
    pub fn load(path: &Path) -> Result<Self, AgentError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| AgentError::Config {
            file: name.clone(),
            field: "-".into(),
            reason: format!("cannot read: {e}"),
        })?;
        let mut config: AgentConfig =
            toml::from_str(&text).map_err(|e| parse_error(&name, &text, &e))?;
        // `partner.toml` alone has the parent "", where no command can run.
        let base = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        config.resolve_paths(base);
        config.check(&name)?;
        Ok(config)
    }

    fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        fix(&mut self.identity_key);
        fix(&mut self.state_dir);
        if let Some(p) = self.coordinator.token_file.as_mut() {
            fix(p);
        }
        if let Some(p) = self.coordinator.ca_certificate.as_mut() {
            fix(p);
        }
        for d in &mut self.datasets {
            if let Some(p) = d.policy.as_mut() {
                fix(p);
            }
            match &mut d.source {
                SourceConfig::Csv { path, .. } | SourceConfig::Sqlite { path, .. } => fix(path),
                SourceConfig::Postgres { .. } => {}
            }
            for t in d.trainers.values_mut() {
                t.directory = base.to_path_buf();
            }
        }
    }

    fn check(&self, file: &str) -> Result<(), AgentError> {
        let bad = |field: &str, reason: String| {
            Err(AgentError::Config {
                file: file.into(),
                field: field.into(),
                reason,
            })
        };
        let url = &self.coordinator.url;
        if !(url.starts_with("https://") || (url.starts_with("http://") && is_loopback(url))) {
            return bad(
                "coordinator.url",
                format!(
                    "{url:?} must start with https:// (plain http:// only to 127.0.0.1, [::1] or \
                     localhost): the token and the round's messages must not cross a network in \
                     the clear"
                ),
            );
        }
        if let Err((field, reason)) = self.board.check() {
            return bad(&field, reason);
        }
        let positive = |v: f64| v.is_finite() && v > 0.0;
        if !positive(self.coordinator.poll_seconds)
            || !positive(self.coordinator.max_backoff_seconds)
        {
            return bad(
                "coordinator.poll_seconds",
                "poll_seconds and max_backoff_seconds must be positive".into(),
            );
        }
        let l = &self.limits;
        for (field, v) in [
            ("limits.max_epsilon_per_query", l.max_epsilon_per_query),
            ("limits.max_rho_per_query", l.max_rho_per_query),
            ("limits.total_rho", Some(l.total_rho)),
        ] {
            if let Some(v) = v.filter(|v| !positive(*v)) {
                return bad(field, format!("must be a positive number, got {v}"));
            }
        }
        if l.max_epsilon_per_query.is_none() && l.max_rho_per_query.is_none() {
            return bad(
                "limits",
                "set max_epsilon_per_query or max_rho_per_query (or both)".into(),
            );
        }
        if let Some(stats) = &l.allowed_statistics
            && let Some(s) = stats.iter().find(|s| !STATISTICS.contains(&s.as_str()))
        {
            return bad(
                "limits.allowed_statistics",
                format!("unknown statistic {s:?}; known: {}", STATISTICS.join(", ")),
            );
        }
        if l.min_colluders < 1 {
            return bad(
                "limits.min_colluders",
                "must be at least 1: with none, one colluding partner unmasks every input".into(),
            );
        }
        if let Some(v) = l.min_rho_per_query.filter(|v| !positive(*v)) {
            return bad(
                "limits.min_rho_per_query",
                format!("must be a positive number, got {v}"),
            );
        }
        if l.max_rounds_per_dataset_per_day == Some(0) {
            return bad(
                "limits.max_rounds_per_dataset_per_day",
                "must be at least 1".into(),
            );
        }
        if l.min_survivors < 2 {
            return bad(
                "limits.min_survivors",
                "must be at least 2: one partner's vector alone is never unmasked".into(),
            );
        }
        for (field, v) in [
            ("limits.max_dropout_rate", l.max_dropout_rate),
            ("limits.max_corrupt_fraction", l.max_corrupt_fraction),
        ] {
            if !(0.0..1.0).contains(&v) {
                return bad(field, format!("must be in [0, 1), got {v}"));
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, d) in self.datasets.iter().enumerate() {
            let at = |f: &str| format!("datasets[{i}] ({}).{f}", d.id);
            if !seen.insert(&d.id) {
                return bad(&at("id"), "the dataset is listed twice".into());
            }
            if d.columns.is_empty() {
                return bad(&at("columns"), "map at least one column".into());
            }
            let sql = !matches!(d.source, SourceConfig::Csv { .. });
            if sql && d.resident_column.is_some() && d.order_by.is_none() {
                return bad(
                    &at("order_by"),
                    "a SQL source with a resident column needs a unique order_by column, so the first rows of each resident are well defined".into(),
                );
            }
            if !sql && d.pushdown {
                return bad(
                    &at("pushdown"),
                    "pushdown is for SQLite and PostgreSQL sources".into(),
                );
            }
            for (name, t) in &d.trainers {
                let field = at(&format!("trainers.{name}"));
                if !civic_policies::query::valid_trainer_name(name) {
                    return bad(
                        &field,
                        "name a trainer in 1 to 64 lowercase letters, digits, - and _".into(),
                    );
                }
                if t.command.first().is_none_or(|p| p.is_empty()) {
                    return bad(
                        &format!("{field}.command"),
                        "give the program and its arguments, e.g. [\"python3\", \"trainer.py\"]"
                            .into(),
                    );
                }
                // Not NaN, above 0, at most a day.
                if !(t.timeout_seconds > 0.0 && t.timeout_seconds <= 86_400.0) {
                    return bad(
                        &format!("{field}.timeout_seconds"),
                        format!(
                            "must be above 0 and at most a day, got {}",
                            t.timeout_seconds
                        ),
                    );
                }
            }
            if let SourceConfig::Csv {
                delimiter: Some(c), ..
            } = d.source
                && (!c.is_ascii() || c == '"' || c == '\n')
            {
                return bad(
                    &at("source.delimiter"),
                    format!("{c:?} cannot delimit CSV fields"),
                );
            }
        }
        Ok(())
    }

    /// The mapping of dataset `id`, if this partner serves it.
    pub fn dataset(&self, id: &str) -> Option<&DatasetMapping> {
        self.datasets.iter().find(|d| d.id == id)
    }
}

/// The statistics a query can ask for, as named in `allowed_statistics`.
pub const STATISTICS: [&str; 8] = [
    "count",
    "sum",
    "mean",
    "histogram",
    "quantiles",
    "linear_regression",
    "logistic_regression",
    "dp_sgd",
];

/// Whether an `http://` URL's host is this machine.
fn is_loopback(url: &str) -> bool {
    let rest = url.trim_start_matches("http://");
    let host_port = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = match host_port.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host_port.split(':').next().unwrap_or(""),
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_is_accepted_only_to_this_machine() {
        for url in [
            "http://127.0.0.1:8440",
            "http://localhost/",
            "http://[::1]:80/x",
        ] {
            assert!(is_loopback(url), "{url}");
        }
        for url in [
            "http://civic.example.org",
            "http://127.0.0.1.evil.example",
            "http://10.0.0.1:8440",
            "http://localhost.example.org",
        ] {
            assert!(!is_loopback(url), "{url}");
        }
    }

    #[test]
    fn the_board_section_takes_keys_and_threshold_or_a_digest() {
        let key = |s: u8| {
            hex::encode(
                ed25519_dalek::SigningKey::from_bytes(&[s; 32])
                    .verifying_key()
                    .as_bytes(),
            )
        };
        let trust = |keys: Vec<String>, threshold, digest: Option<&str>| BoardTrust {
            keys,
            threshold,
            manifest_digest: digest.map(String::from),
        };
        assert!(
            trust(vec![key(1), key(2), key(3)], Some(2), None)
                .check()
                .is_ok()
        );
        assert!(trust(vec![], None, Some(&"ab".repeat(32))).check().is_ok());
        let e = trust(vec![key(1), key(2), key(3)], Some(1), None)
            .check()
            .unwrap_err();
        assert!(e.1.contains("more than half"), "{e:?}");
        let e = trust(vec![], None, None).check().unwrap_err();
        assert!(e.1.contains("set keys and threshold"), "{e:?}");
        let e = trust(vec![key(1)], Some(1), Some(&"ab".repeat(32)))
            .check()
            .unwrap_err();
        assert!(e.1.contains("not both"), "{e:?}");
        let e = trust(vec![], None, Some("abc")).check().unwrap_err();
        assert_eq!(e.0, "board.manifest_digest");
    }
}
