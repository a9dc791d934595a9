//! The federation manifest: the governance board's signed statement of who the board is,
//! who the partners are (with their identity keys), which policy each dataset runs under
//! (by digest), and the least every round must meet. Agents obey it, not the coordinator.
//!
//! Trust starts from the board's keys (or the first manifest's digest), given to each partner
//! out of band. A manifest takes effect only with `threshold` valid Ed25519 signatures from
//! the board of the manifest before it, and names that manifest's digest, so the coordinator
//! can store and serve manifests but cannot make, alter, reorder or roll one back (agents keep
//! the highest version they have seen). The board's threshold is a strict majority of its
//! members, so two disjoint groups of members cannot sign two different successors.
//!
//! Approvals of large queries are board signatures over the query's fingerprint: an agent
//! counts distinct members' keys, never accounts, so no operator can create approvers.
//!
//! Everything signed or digested is the SHA-256 of a domain tag and the canonical JSON of the
//! value (struct fields in declaration order, no maps with unordered keys).

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::dataset::PolicyFile;

const MANIFEST_TAG: &[u8] = b"civic-manifest/v1\0";
const APPROVAL_TAG: &[u8] = b"civic-approval/v1\0";
const POLICY_TAG: &[u8] = b"civic-policy/v1\0";

/// Why a manifest, a signature or a chain of manifests is refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ManifestError {
    /// A field breaks the manifest's rules.
    #[error("manifest: {field}: {reason}")]
    Invalid {
        /// The field's path.
        field: String,
        /// What is wrong and what was expected.
        reason: String,
    },
    /// Too few valid signatures from the board that must sign.
    #[error(
        "manifest version {version} carries {valid} valid signature(s) from the board that must sign it; {needed} needed"
    )]
    Unsigned {
        /// The manifest's version.
        version: u64,
        /// Distinct board members whose signature verified.
        valid: usize,
        /// The board's threshold.
        needed: usize,
    },
    /// The manifests do not follow one another.
    #[error("manifest chain: {reason}")]
    Chain {
        /// What is wrong.
        reason: String,
    },
}

impl ManifestError {
    /// A stable code for logs and HTTP bodies.
    pub fn code(&self) -> &'static str {
        match self {
            ManifestError::Invalid { .. } => "manifest.invalid",
            ManifestError::Unsigned { .. } => "manifest.unsigned",
            ManifestError::Chain { .. } => "manifest.chain",
        }
    }
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> ManifestError {
    ManifestError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

/// One version of the federation manifest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The federation's name.
    pub federation: String,
    /// 1 for the first manifest, then one more each time.
    #[serde(deserialize_with = "whole_number")]
    #[cfg_attr(feature = "openapi", schema(maximum = 9007199254740991_u64))]
    pub version: u64,
    /// The digest (hex) of the manifest this one replaces; absent for version 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<String>,
    /// The board that signs the next manifest and approves large queries.
    pub board: Board,
    /// What every round must meet, whatever the coordinator proposes.
    pub requirements: RoundRequirements,
    /// The partners: only these take part in rounds, each with its own key.
    #[serde(default)]
    pub partners: Vec<ManifestPartner>,
    /// Each dataset's policy, by digest.
    #[serde(default)]
    pub datasets: Vec<ManifestDataset>,
}

/// A whole number written as JSON's `2` or `2.0` alike (JSON Schema's integers include
/// both, and a manifest may pass through tools that write either); a fraction, a negative
/// or a number beyond the type is refused, naming it.
pub(crate) fn whole_number<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: TryFrom<u64>,
{
    struct Whole;
    impl serde::de::Visitor<'_> for Whole {
        type Value = u64;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a whole number, 0 or more")
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<u64, E> {
            Ok(v)
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<u64, E> {
            u64::try_from(v).map_err(|_| E::custom(format!("{v} is below 0")))
        }
        fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<u64, E> {
            if v.fract() == 0.0 && (0.0..=9_007_199_254_740_991.0).contains(&v) {
                Ok(v as u64)
            } else {
                Err(E::custom(format!(
                    "{v} is not a whole number up to 2^53 - 1"
                )))
            }
        }
    }
    let v = deserializer.deserialize_any(Whole)?;
    T::try_from(v).map_err(|_| serde::de::Error::custom(format!("{v} is too large here")))
}

/// The board: its members' keys and how many must sign.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Board {
    /// Signatures needed: more than half the members.
    #[serde(deserialize_with = "whole_number")]
    #[cfg_attr(feature = "openapi", schema(maximum = 9007199254740991_u64))]
    pub threshold: usize,
    /// The members.
    pub members: Vec<BoardMember>,
}

/// One board member.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct BoardMember {
    /// Their name, for people.
    pub name: String,
    /// Their Ed25519 public key, hex (`civic-board show`).
    pub key: String,
}

/// One partner organisation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ManifestPartner {
    /// Its account name at the coordinator, as policies list it.
    pub name: String,
    /// The organisation, for people.
    pub organisation: String,
    /// Its Ed25519 identity key, hex (`civic-agent keygen` prints it).
    pub identity_key: String,
}

/// One dataset and the digest of the policy it runs under.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ManifestDataset {
    /// The dataset's id.
    pub id: String,
    /// [`policy_digest`] of its policy (`civic-board digest policy.toml`).
    pub policy_digest: String,
}

/// The floor under every round, which each agent also raises by its own limits.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RoundRequirements {
    /// Partners that may collude with the coordinator without learning an honest input
    /// (at least 1): the round's threshold must satisfy 2t > n + this.
    #[serde(deserialize_with = "whole_number")]
    #[cfg_attr(feature = "openapi", schema(maximum = 9007199254740991_u64))]
    pub tolerated_colluders: usize,
    /// The fewest partners whose sum may be released (at least 2).
    #[serde(deserialize_with = "whole_number")]
    #[cfg_attr(feature = "openapi", schema(maximum = 9007199254740991_u64))]
    pub min_survivors: usize,
    /// The least ρ any query may cost: a flood of near-free queries is refused.
    pub min_rho_per_query: f64,
    /// The most rounds an agent joins per dataset per day (UTC).
    #[serde(deserialize_with = "whole_number")]
    #[cfg_attr(feature = "openapi", schema(maximum = 4294967295_u64))]
    pub max_rounds_per_dataset_per_day: u32,
}

/// A manifest with the board's signatures.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SignedManifest {
    /// The manifest (`civic-board sign` writes it).
    pub manifest: Manifest,
    /// Signatures by members of the previous manifest's board (for version 1, its own).
    pub signatures: Vec<BoardSignature>,
}

/// One member's signature.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct BoardSignature {
    /// The member's public key, hex.
    #[cfg_attr(feature = "openapi", schema(pattern = r"^[0-9a-fA-F]{64}$"))]
    pub key: String,
    /// The Ed25519 signature, hex.
    #[cfg_attr(feature = "openapi", schema(pattern = r"^[0-9a-fA-F]{128}$"))]
    pub signature: String,
}

/// Where an agent's trust starts, from its configuration.
#[derive(Clone, Debug, PartialEq)]
pub enum TrustAnchor {
    /// The board's keys and threshold, given out of band.
    Board(Board),
    /// The digest of a manifest (its own board then signs its successors).
    Digest(String),
}

/// SHA-256 of `tag` and the canonical JSON of `value`.
fn tagged_digest<T: Serialize>(tag: &[u8], value: &T) -> [u8; 32] {
    let json = serde_json::to_vec(value).expect("manifest types always serialise");
    let mut h = Sha256::new();
    h.update(tag);
    h.update(&json);
    h.finalize().into()
}

/// The digest of a dataset policy, as a manifest names it (hex).
pub fn policy_digest(policy: &PolicyFile) -> String {
    hex::encode(tagged_digest(POLICY_TAG, policy))
}

/// What a member signs to approve a query with this fingerprint.
pub fn approval_message(fingerprint: &str) -> Vec<u8> {
    [APPROVAL_TAG, fingerprint.as_bytes()].concat()
}

/// Parses a hex Ed25519 public key, refusing weak (small-order) keys.
pub fn parse_key(hex_key: &str) -> Option<VerifyingKey> {
    let mut bytes = [0u8; 32];
    hex::decode_to_slice(hex_key.trim(), &mut bytes).ok()?;
    let key = VerifyingKey::from_bytes(&bytes).ok()?;
    (!key.is_weak()).then_some(key)
}

/// Signs `message` with `key`, as a [`BoardSignature`].
pub fn sign(key: &SigningKey, message: &[u8]) -> BoardSignature {
    BoardSignature {
        key: hex::encode(key.verifying_key().as_bytes()),
        signature: hex::encode(key.sign(message).to_bytes()),
    }
}

impl Board {
    /// Checks the member list and the threshold.
    pub fn validate(&self, at: &str) -> Result<(), ManifestError> {
        let n = self.members.len();
        if n == 0 {
            return Err(invalid(format!("{at}.members"), "the board has no members"));
        }
        let mut keys = std::collections::BTreeSet::new();
        for (i, m) in self.members.iter().enumerate() {
            if parse_key(&m.key).is_none() {
                return Err(invalid(
                    format!("{at}.members[{i}].key"),
                    format!(
                        "{:?} is not an Ed25519 public key (64 hex digits from civic-board show)",
                        m.key
                    ),
                ));
            }
            if !keys.insert(m.key.trim().to_ascii_lowercase()) {
                return Err(invalid(
                    format!("{at}.members[{i}].key"),
                    format!("member {} has the same key as another member", m.name),
                ));
            }
        }
        if self.threshold <= n / 2 || self.threshold > n {
            return Err(invalid(
                format!("{at}.threshold"),
                format!(
                    "{} must be more than half of the {n} members and at most {n}, so that two \
                     groups of members cannot sign two different manifests",
                    self.threshold
                ),
            ));
        }
        Ok(())
    }

    /// The distinct members whose signature over `message` verifies.
    pub fn valid_signers(&self, message: &[u8], signatures: &[BoardSignature]) -> usize {
        let mut signers = std::collections::BTreeSet::new();
        for s in signatures {
            let Some(member) = self
                .members
                .iter()
                .find(|m| m.key.trim().eq_ignore_ascii_case(s.key.trim()))
            else {
                continue;
            };
            let (Some(key), Ok(bytes)) = (parse_key(&member.key), hex::decode(s.signature.trim()))
            else {
                continue;
            };
            let Ok(signature) = ed25519_dalek::Signature::from_slice(&bytes) else {
                continue;
            };
            if key.verify_strict(message, &signature).is_ok() {
                signers.insert(member.key.trim().to_ascii_lowercase());
            }
        }
        signers.len()
    }

    /// Whether `signatures` hold `threshold` distinct members' signatures over `message`.
    pub fn signed(&self, message: &[u8], signatures: &[BoardSignature]) -> bool {
        self.valid_signers(message, signatures) >= self.threshold
    }
}

impl Manifest {
    /// Reads a manifest from TOML (`name` is the file's name, for errors).
    pub fn from_toml(text: &str, name: &str) -> Result<Self, ManifestError> {
        let manifest: Manifest = toml::from_str(text).map_err(|e| {
            invalid(
                name,
                e.to_string()
                    .trim_end()
                    .replace('\n', " ")
                    .replace("  ", " "),
            )
        })?;
        manifest.validate()?;
        Ok(manifest)
    }

    /// Checks every rule a manifest must meet on its own.
    pub fn validate(&self) -> Result<(), ManifestError> {
        if self.federation.trim().is_empty() {
            return Err(invalid("federation", "must name the federation"));
        }
        match (self.version, &self.previous) {
            (0, _) => return Err(invalid("version", "versions start at 1")),
            (1, Some(_)) => {
                return Err(invalid("previous", "version 1 has no previous manifest"));
            }
            (v, None) if v > 1 => {
                return Err(invalid(
                    "previous",
                    "a manifest after version 1 names the digest of the one it replaces",
                ));
            }
            _ => {}
        }
        self.board.validate("board")?;
        let r = &self.requirements;
        if r.tolerated_colluders < 1 {
            return Err(invalid(
                "requirements.tolerated_colluders",
                "must be at least 1: with none, one colluding partner unmasks every input",
            ));
        }
        if r.min_survivors < 2 {
            return Err(invalid(
                "requirements.min_survivors",
                "must be at least 2: one partner's vector alone is never released",
            ));
        }
        if !(r.min_rho_per_query.is_finite() && r.min_rho_per_query > 0.0) {
            return Err(invalid(
                "requirements.min_rho_per_query",
                format!("must be a positive number, got {}", r.min_rho_per_query),
            ));
        }
        if r.max_rounds_per_dataset_per_day == 0 {
            return Err(invalid(
                "requirements.max_rounds_per_dataset_per_day",
                "must be at least 1",
            ));
        }
        let mut names = std::collections::BTreeSet::new();
        let mut keys = std::collections::BTreeSet::new();
        for (i, p) in self.partners.iter().enumerate() {
            if !names.insert(p.name.as_str()) {
                return Err(invalid(
                    format!("partners[{i}].name"),
                    format!("partner {} is listed twice", p.name),
                ));
            }
            if parse_key(&p.identity_key).is_none() {
                return Err(invalid(
                    format!("partners[{i}].identity_key"),
                    "not an Ed25519 public key (64 hex digits from civic-agent keygen)",
                ));
            }
            if !keys.insert(p.identity_key.trim().to_ascii_lowercase()) {
                return Err(invalid(
                    format!("partners[{i}].identity_key"),
                    format!("partner {} has the same key as another partner", p.name),
                ));
            }
        }
        let mut ids = std::collections::BTreeSet::new();
        for (i, d) in self.datasets.iter().enumerate() {
            if !ids.insert(d.id.as_str()) {
                return Err(invalid(
                    format!("datasets[{i}].id"),
                    format!("dataset {} is listed twice", d.id),
                ));
            }
            let ok = d.policy_digest.len() == 64 && hex::decode(&d.policy_digest).is_ok();
            if !ok {
                return Err(invalid(
                    format!("datasets[{i}].policy_digest"),
                    "expected 64 hex digits (civic-board digest POLICY.toml)",
                ));
            }
        }
        Ok(())
    }

    /// The manifest's digest, hex: what its successor names and what a partner may pin.
    pub fn digest(&self) -> String {
        hex::encode(tagged_digest(MANIFEST_TAG, self))
    }

    /// What board members sign to make this manifest take effect.
    pub fn signing_message(&self) -> Vec<u8> {
        [MANIFEST_TAG, self.digest().as_bytes()].concat()
    }

    /// Board signatures a query needs, given how many approvals its policy asks for at its
    /// cost: none if none, else at least the board's threshold (approvals are signatures).
    pub fn approvals_needed(&self, policy_needs: u32) -> u32 {
        match policy_needs {
            0 => 0,
            n => n.max(u32::try_from(self.board.threshold).unwrap_or(u32::MAX)),
        }
    }

    /// The partner holding this identity key (hex), if any.
    pub fn partner_with_key(&self, hex_key: &str) -> Option<&ManifestPartner> {
        self.partners
            .iter()
            .find(|p| p.identity_key.trim().eq_ignore_ascii_case(hex_key.trim()))
    }

    /// The policy digest the board signed for `dataset`.
    pub fn policy_digest(&self, dataset: &str) -> Option<&str> {
        self.datasets
            .iter()
            .find(|d| d.id == dataset)
            .map(|d| d.policy_digest.as_str())
    }
}

/// Follows `chain` (oldest first) from `anchor` and returns the newest manifest it
/// establishes. Each manifest must carry its signing board's threshold of signatures and
/// name its predecessor's digest. The chain is followed from the first manifest the anchor's
/// board signed (a partner onboarded after the board changed holds the new board's keys),
/// or, for a digest anchor, from the manifest with that digest, which is trusted as given;
/// each manifest's own board signs the next.
pub fn verify_chain<'a>(
    anchor: &TrustAnchor,
    chain: &'a [SignedManifest],
) -> Result<&'a Manifest, ManifestError> {
    let chain_err = |reason: String| ManifestError::Chain { reason };
    let (start, mut board) = match anchor {
        TrustAnchor::Board(board) => {
            let first = chain
                .iter()
                .position(|s| board.signed(&s.manifest.signing_message(), &s.signatures))
                .unwrap_or(0);
            (first, board.clone())
        }
        TrustAnchor::Digest(digest) => {
            let i = chain
                .iter()
                .position(|s| s.manifest.digest().eq_ignore_ascii_case(digest.trim()))
                .ok_or_else(|| {
                    chain_err(format!(
                        "no manifest served has the pinned digest {}",
                        digest.trim()
                    ))
                })?;
            chain[i].manifest.validate()?;
            if i + 1 == chain.len() {
                return Ok(&chain[i].manifest);
            }
            (i + 1, chain[i].manifest.board.clone())
        }
    };
    let mut previous: Option<&Manifest> = start.checked_sub(1).map(|i| &chain[i].manifest);
    let Some(rest) = chain.get(start..).filter(|r| !r.is_empty()) else {
        return Err(chain_err("the coordinator serves no manifest".into()));
    };
    for signed in rest {
        let m = &signed.manifest;
        m.validate()?;
        if let Some(p) = previous {
            if m.version != p.version + 1 || m.previous.as_deref() != Some(&p.digest()) {
                return Err(chain_err(format!(
                    "version {} does not follow version {} (it must be version {} and name its digest {})",
                    m.version,
                    p.version,
                    p.version + 1,
                    p.digest()
                )));
            }
            if m.federation != p.federation {
                return Err(chain_err(format!(
                    "version {} is for federation {:?}, not {:?}",
                    m.version, m.federation, p.federation
                )));
            }
        }
        let valid = board.valid_signers(&m.signing_message(), &signed.signatures);
        if valid < board.threshold {
            return Err(ManifestError::Unsigned {
                version: m.version,
                valid,
                needed: board.threshold,
            });
        }
        board = m.board.clone();
        previous = Some(m);
    }
    Ok(previous.expect("the chain is not empty"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn hexkey(seed: u8) -> String {
        hex::encode(key(seed).verifying_key().as_bytes())
    }

    fn board(seeds: &[u8], threshold: usize) -> Board {
        Board {
            threshold,
            members: seeds
                .iter()
                .map(|&s| BoardMember {
                    name: format!("member-{s}"),
                    key: hexkey(s),
                })
                .collect(),
        }
    }

    fn first() -> Manifest {
        Manifest {
            federation: "liverpool".into(),
            version: 1,
            previous: None,
            board: board(&[1, 2, 3], 2),
            requirements: RoundRequirements {
                tolerated_colluders: 1,
                min_survivors: 3,
                min_rho_per_query: 1e-4,
                max_rounds_per_dataset_per_day: 100,
            },
            partners: (10..13)
                .map(|s| ManifestPartner {
                    name: format!("trust-{s}"),
                    organisation: "NHS".into(),
                    identity_key: hexkey(s),
                })
                .collect(),
            datasets: vec![ManifestDataset {
                id: "falls".into(),
                policy_digest: "ab".repeat(32),
            }],
        }
    }

    fn signed_by(m: Manifest, seeds: &[u8]) -> SignedManifest {
        let message = m.signing_message();
        SignedManifest {
            signatures: seeds.iter().map(|&s| sign(&key(s), &message)).collect(),
            manifest: m,
        }
    }

    fn successor(prev: &Manifest) -> Manifest {
        Manifest {
            version: prev.version + 1,
            previous: Some(prev.digest()),
            ..prev.clone()
        }
    }

    #[test]
    fn a_chain_signed_by_each_previous_board_is_followed_to_its_newest_manifest() {
        let v1 = first();
        let mut v2 = successor(&v1);
        v2.board = board(&[2, 3, 4, 5], 3);
        let v3 = successor(&v2);
        let chain = vec![
            signed_by(v1.clone(), &[1, 2]),
            // v2 is signed by v1's board; it replaces member 1 with 4 and 5.
            signed_by(v2.clone(), &[1, 3]),
            signed_by(v3.clone(), &[2, 4, 5]),
        ];
        let anchor = TrustAnchor::Board(board(&[1, 2, 3], 2));
        assert_eq!(verify_chain(&anchor, &chain).unwrap(), &v3);
        let pinned = TrustAnchor::Digest(v2.digest());
        assert_eq!(verify_chain(&pinned, &chain).unwrap(), &v3);
        assert_eq!(verify_chain(&pinned, &chain[..2]).unwrap(), &v2);
        // A partner onboarded after v2 holds v2's board keys: it follows the chain from the
        // first manifest that board signed.
        let later = TrustAnchor::Board(board(&[2, 3, 4, 5], 3));
        assert_eq!(verify_chain(&later, &chain).unwrap(), &v3);
        assert_eq!(
            verify_chain(&later, &chain[..2]).unwrap_err().code(),
            "manifest.unsigned"
        );
    }

    #[test]
    fn a_manifest_short_of_its_boards_signatures_is_refused() {
        let anchor = TrustAnchor::Board(board(&[1, 2, 3], 2));
        let v1 = first();
        // One member, twice; a non-member; a member's signature over another manifest.
        let mut twice = signed_by(v1.clone(), &[1, 1]);
        let e = verify_chain(&anchor, std::slice::from_ref(&twice)).unwrap_err();
        assert_eq!(
            e,
            ManifestError::Unsigned {
                version: 1,
                valid: 1,
                needed: 2
            }
        );
        twice.signatures[1] = sign(&key(9), &v1.signing_message());
        assert_eq!(
            verify_chain(&anchor, &[twice]).unwrap_err().code(),
            "manifest.unsigned"
        );
        let mut other = v1.clone();
        other.partners.push(ManifestPartner {
            name: "sybil".into(),
            organisation: "coordinator".into(),
            identity_key: hexkey(66),
        });
        let mut forged = signed_by(v1.clone(), &[1, 2]);
        forged.manifest = other;
        assert_eq!(
            verify_chain(&anchor, &[forged]).unwrap_err().code(),
            "manifest.unsigned"
        );
        // A successor signed by its own new board but not by the previous one.
        let mut v2 = successor(&v1);
        v2.board = board(&[7, 8, 9], 2);
        let chain = vec![signed_by(v1.clone(), &[1, 2]), signed_by(v2, &[7, 8])];
        assert_eq!(
            verify_chain(&anchor, &chain).unwrap_err().code(),
            "manifest.unsigned"
        );
    }

    #[test]
    fn manifests_out_of_order_or_unlinked_are_refused() {
        let anchor = TrustAnchor::Board(board(&[1, 2, 3], 2));
        let v1 = first();
        let mut skip = successor(&v1);
        skip.version = 3;
        let chain = vec![signed_by(v1.clone(), &[1, 2]), signed_by(skip, &[1, 2])];
        let e = verify_chain(&anchor, &chain).unwrap_err();
        assert!(e.to_string().contains("does not follow version 1"), "{e}");
        let mut unlinked = successor(&v1);
        unlinked.previous = Some("00".repeat(32));
        let chain = vec![signed_by(v1.clone(), &[1, 2]), signed_by(unlinked, &[1, 2])];
        assert_eq!(
            verify_chain(&anchor, &chain).unwrap_err().code(),
            "manifest.chain"
        );
        assert_eq!(
            verify_chain(&anchor, &[]).unwrap_err().code(),
            "manifest.chain"
        );
        let pinned = TrustAnchor::Digest("11".repeat(32));
        let e = verify_chain(&pinned, &[signed_by(v1, &[1, 2])]).unwrap_err();
        assert!(e.to_string().contains("pinned digest"), "{e}");
    }

    #[test]
    fn unsafe_or_malformed_manifests_name_the_field() {
        type Change = fn(&mut Manifest);
        let cases: Vec<(Change, &str)> = vec![
            (|m| m.board.threshold = 1, "board.threshold"),
            (|m| m.board.threshold = 4, "board.threshold"),
            (
                |m| m.board.members[1].key = "zz".into(),
                "board.members[1].key",
            ),
            (
                |m| m.board.members[2].key = m.board.members[0].key.clone(),
                "same key",
            ),
            (
                |m| m.requirements.tolerated_colluders = 0,
                "tolerated_colluders",
            ),
            (|m| m.requirements.min_survivors = 1, "min_survivors"),
            (
                |m| m.requirements.min_rho_per_query = 0.0,
                "min_rho_per_query",
            ),
            (
                |m| m.requirements.min_rho_per_query = f64::NAN,
                "min_rho_per_query",
            ),
            (
                |m| m.requirements.max_rounds_per_dataset_per_day = 0,
                "max_rounds",
            ),
            (
                |m| m.partners[1].name = m.partners[0].name.clone(),
                "listed twice",
            ),
            (
                |m| m.partners[1].identity_key = m.partners[0].identity_key.clone(),
                "same key",
            ),
            (
                |m| m.partners[0].identity_key = "00".repeat(32),
                "partners[0].identity_key",
            ),
            (
                |m| m.datasets[0].policy_digest = "abc".into(),
                "policy_digest",
            ),
            (|m| m.version = 2, "previous"),
            (|m| m.previous = Some("00".repeat(32)), "previous"),
        ];
        for (change, needle) in cases {
            let mut m = first();
            change(&mut m);
            let e = m.validate().unwrap_err();
            assert!(e.to_string().contains(needle), "{e} should name {needle}");
        }
        assert!(first().validate().is_ok());
    }

    #[test]
    fn a_manifest_reads_from_toml_and_its_digest_is_stable() {
        let m = first();
        let text = toml::to_string(&m).unwrap();
        let back = Manifest::from_toml(&text, "manifest.toml").unwrap();
        assert_eq!(back, m);
        assert_eq!(back.digest(), m.digest());
        let mut changed = m.clone();
        changed.requirements.min_survivors = 4;
        assert_ne!(changed.digest(), m.digest());
        let e = Manifest::from_toml("federation = 'x'\nversion = 1\nsurprise = 2", "m.toml")
            .unwrap_err();
        assert!(e.to_string().contains("m.toml"), "{e}");
    }

    #[test]
    fn approvals_count_distinct_members_with_valid_signatures() {
        let b = board(&[1, 2, 3], 2);
        let message = approval_message("f00d");
        let one = sign(&key(1), &message);
        assert_eq!(b.valid_signers(&message, &[one.clone(), one.clone()]), 1);
        assert!(!b.signed(&message, &[one.clone(), sign(&key(9), &message)]));
        let other = sign(&key(2), &approval_message("beef"));
        assert!(!b.signed(&message, &[one.clone(), other]));
        assert!(b.signed(&message, &[one, sign(&key(3), &message)]));
    }

    #[test]
    fn the_policy_digest_changes_with_any_field() {
        let p = crate::samples::diabetes();
        let mut q = p.file.clone();
        assert_eq!(policy_digest(&p.file), policy_digest(&q));
        q.dataset.partners.push("sybil".into());
        assert_ne!(policy_digest(&p.file), policy_digest(&q));
    }
}
