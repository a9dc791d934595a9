//! What a board member does on their own machine (`civic-board`): keep an Ed25519 key, sign
//! the federation manifest and approvals of queries. The key never leaves the file it was
//! written to (mode 0600); the coordinator only ever sees signatures.

use std::path::{Path, PathBuf};

use civic_policies::DatasetPolicy;
use civic_policies::manifest::{
    self, BoardSignature, Manifest, SignedManifest, TrustAnchor, approval_message,
};
use ed25519_dalek::SigningKey;

use crate::error::AgentError;

/// Writes a new board key (mode 0600, never replacing a file) and returns its public key.
pub fn keygen(path: &Path) -> Result<String, AgentError> {
    let seed = crate::identity::write_new_seed(path, "a board member's key")?;
    Ok(hex::encode(
        SigningKey::from_bytes(&seed).verifying_key().as_bytes(),
    ))
}

/// Loads a board key, refusing a file others can read.
pub fn load(path: &Path) -> Result<SigningKey, AgentError> {
    let seed = crate::identity::read_seed(path, "board key", "civic-board keygen")?;
    Ok(SigningKey::from_bytes(&seed))
}

/// The public key of the key in `path`, hex: what the manifest lists for this member.
pub fn public_key(path: &Path) -> Result<String, AgentError> {
    Ok(hex::encode(load(path)?.verifying_key().as_bytes()))
}

/// The digest of a policy file, as the manifest names it.
pub fn policy_digest(path: &Path) -> Result<String, AgentError> {
    let text = std::fs::read_to_string(path).map_err(|e| AgentError::local(path, e))?;
    let policy = DatasetPolicy::from_toml(&text, &path.display().to_string())
        .map_err(|e| AgentError::local(path, e))?;
    Ok(manifest::policy_digest(&policy.file))
}

/// Where `sign` writes by default: `manifest.toml` → `manifest.signed.json`.
pub fn signed_path(manifest: &Path) -> PathBuf {
    manifest.with_extension("signed.json")
}

/// Reads a signed manifest (JSON, as `sign` writes and the coordinator serves).
pub fn read_signed(path: &Path) -> Result<SignedManifest, AgentError> {
    let text = std::fs::read_to_string(path).map_err(|e| AgentError::local(path, e))?;
    serde_json::from_str(&text).map_err(|e| {
        AgentError::local(
            path,
            format!("not a signed manifest (civic-board sign writes one): {e}"),
        )
    })
}

/// Adds this member's signature to the signed copy of the manifest in `manifest_toml`,
/// creating the copy if needed. A copy holding any other manifest is refused, so signatures
/// gathered over one text are never attached to another.
pub fn sign_manifest(
    key: &SigningKey,
    manifest_toml: &Path,
    out: &Path,
) -> Result<SignedManifest, AgentError> {
    let text =
        std::fs::read_to_string(manifest_toml).map_err(|e| AgentError::local(manifest_toml, e))?;
    let manifest = Manifest::from_toml(&text, &manifest_toml.display().to_string())
        .map_err(|e| AgentError::local(manifest_toml, e))?;
    let mut signed = if out.exists() {
        let existing = read_signed(out)?;
        if existing.manifest != manifest {
            return Err(AgentError::local(
                out,
                format!(
                    "holds another manifest (version {}, digest {}) than {} (version {}, digest {}); \
                     sign into a new file",
                    existing.manifest.version,
                    existing.manifest.digest(),
                    manifest_toml.display(),
                    manifest.version,
                    manifest.digest()
                ),
            ));
        }
        existing
    } else {
        SignedManifest {
            manifest,
            signatures: Vec::new(),
        }
    };
    let signature = manifest::sign(key, &signed.manifest.signing_message());
    signed.signatures.retain(|s| s.key != signature.key);
    signed.signatures.push(signature);
    let json = serde_json::to_string_pretty(&signed)
        .map_err(|e| AgentError::local(out, format!("cannot encode: {e}")))?;
    crate::state::write_atomically(out, json.as_bytes())?;
    Ok(signed)
}

/// This member's approval of the query with `fingerprint` (64 hex digits, from the query's
/// page or `GET /v1/queries/{id}`).
pub fn approve(key: &SigningKey, fingerprint: &str) -> Result<BoardSignature, AgentError> {
    let fingerprint = fingerprint.trim().to_ascii_lowercase();
    if fingerprint.len() != 64 || hex::decode(&fingerprint).is_err() {
        return Err(AgentError::Config {
            file: "command line".into(),
            field: "FINGERPRINT".into(),
            reason: format!(
                "{fingerprint:?} is not a query fingerprint (64 hex digits, from the query's \
                 \"fingerprint\")"
            ),
        });
    }
    Ok(manifest::sign(key, &approval_message(&fingerprint)))
}

/// What a member approves, read from the query as the coordinator shows it (the JSON of
/// `GET /v1/queries/{id}`, or the dashboard's download): the fingerprint is recomputed from
/// the query's content rather than taken on the coordinator's word, so a page that shows
/// one question cannot collect a signature for another. Returns the fingerprint and a
/// summary of the question for the member to read.
pub fn approval_of(view: &Path) -> Result<(String, String), AgentError> {
    let text = std::fs::read_to_string(view)
        .map_err(|e| AgentError::local(view, format!("cannot read the query: {e}")))?;
    let q: civic_api::query::QueryView = serde_json::from_str(&text).map_err(|e| {
        AgentError::local(
            view,
            format!("not a query as GET /v1/queries/{{id}} shows it: {e}"),
        )
    })?;
    let confidence = q
        .request
        .confidence
        .unwrap_or(civic_mechanisms::pricing::DEFAULT_CONFIDENCE);
    let fingerprint = civic_api::query::fingerprint(
        &q.dataset,
        q.dataset_version,
        &q.request.query,
        &q.request.privacy,
        confidence,
    );
    if !fingerprint.eq_ignore_ascii_case(q.fingerprint.trim()) {
        return Err(AgentError::local(
            view,
            format!(
                "the query's content has fingerprint {fingerprint}, not the {} it claims: \
                 do not approve it",
                q.fingerprint
            ),
        ));
    }
    let summary = format!(
        "query {} for project {}, submitted by {}: dataset {} (policy version {})\n  \
         query: {}\n  privacy: {}, confidence {confidence}",
        q.id,
        q.project,
        q.submitted_by,
        q.dataset,
        q.dataset_version,
        serde_json::to_string(&q.request.query).unwrap_or_default(),
        serde_json::to_string(&q.request.privacy).unwrap_or_default(),
    );
    Ok((fingerprint, summary))
}

/// Verifies a signed manifest: against the board of the manifest before it, when given, or
/// else against its own board (version 1). Returns a summary for people.
pub fn verify(signed: &Path, previous: Option<&Path>) -> Result<String, AgentError> {
    let this = read_signed(signed)?;
    let (anchor, chain) = match previous {
        Some(p) => {
            let prev = read_signed(p)?;
            let anchor = TrustAnchor::Digest(prev.manifest.digest());
            (anchor, vec![prev, this.clone()])
        }
        None => (
            TrustAnchor::Board(this.manifest.board.clone()),
            vec![this.clone()],
        ),
    };
    let m = manifest::verify_chain(&anchor, &chain).map_err(|e| AgentError::local(signed, e))?;
    Ok(format!(
        "{}: manifest version {} of {:?} verified: digest {}, {} partner(s), {} dataset(s), \
         board of {} (threshold {})",
        signed.display(),
        m.version,
        m.federation,
        m.digest(),
        m.partners.len(),
        m.datasets.len(),
        m.board.members.len(),
        m.board.threshold
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use civic_policies::manifest::{Board, BoardMember, RoundRequirements};

    #[test]
    fn an_approval_is_of_the_query_read_not_of_the_fingerprint_claimed() {
        let dir = tempfile::tempdir().unwrap();
        let request = serde_json::json!({
            "project": "falls",
            "query": { "dataset": "city", "statistic": "count", "group_by": ["sex"] },
            "privacy": { "rho": 0.15 }
        });
        let fingerprint = civic_api::query::fingerprint(
            "city",
            2,
            &serde_json::from_value(request["query"].clone()).unwrap(),
            &serde_json::from_value(request["privacy"].clone()).unwrap(),
            0.95,
        );
        let view = |request: &serde_json::Value, fingerprint: &str| {
            serde_json::json!({
                "id": 7, "fingerprint": fingerprint, "project": "falls", "dataset": "city",
                "dataset_version": 2, "submitted_by": "rita", "submitted_at": "t",
                "request": request, "state": "awaiting_approval", "reason": null,
                "cost": { "rho": 0.15, "epsilon": null, "approx_dp": [2.0, 1e-6] },
                "approvals_required": 2, "approvals": [], "round_id": null, "result": null
            })
        };
        let path = dir.path().join("query.json");
        std::fs::write(&path, view(&request, &fingerprint).to_string()).unwrap();
        let (got, summary) = approval_of(&path).unwrap();
        assert_eq!(got, fingerprint);
        assert!(
            summary.contains("\"group_by\":[\"sex\"]") && summary.contains("0.15"),
            "{summary}"
        );
        // A page that shows one question and claims another's fingerprint is caught.
        let mut cheaper = request.clone();
        cheaper["privacy"] = serde_json::json!({ "rho": 0.01 });
        std::fs::write(&path, view(&cheaper, &fingerprint).to_string()).unwrap();
        let e = approval_of(&path).unwrap_err().to_string();
        assert!(e.contains("do not approve it"), "{e}");
        std::fs::write(&path, "{}").unwrap();
        assert!(
            approval_of(&path)
                .unwrap_err()
                .to_string()
                .contains("not a query")
        );
    }

    #[test]
    fn members_sign_one_manifest_file_and_it_verifies_at_their_threshold() {
        let dir = tempfile::tempdir().unwrap();
        let keys: Vec<PathBuf> = (0..3)
            .map(|i| dir.path().join(format!("m{i}.key")))
            .collect();
        let publics: Vec<String> = keys.iter().map(|k| keygen(k).unwrap()).collect();
        assert!(
            keygen(&keys[0])
                .unwrap_err()
                .to_string()
                .contains("refusing to overwrite")
        );
        let manifest = Manifest {
            federation: "test".into(),
            version: 1,
            previous: None,
            board: Board {
                threshold: 2,
                members: publics
                    .iter()
                    .enumerate()
                    .map(|(i, k)| BoardMember {
                        name: format!("m{i}"),
                        key: k.clone(),
                    })
                    .collect(),
            },
            requirements: RoundRequirements {
                tolerated_colluders: 1,
                min_survivors: 3,
                min_rho_per_query: 1e-4,
                max_rounds_per_dataset_per_day: 10,
            },
            partners: vec![],
            datasets: vec![],
        };
        let toml_path = dir.path().join("manifest.toml");
        std::fs::write(&toml_path, toml::to_string(&manifest).unwrap()).unwrap();
        let out = signed_path(&toml_path);
        sign_manifest(&load(&keys[0]).unwrap(), &toml_path, &out).unwrap();
        let e = verify(&out, None).unwrap_err().to_string();
        assert!(e.contains("1 valid signature(s)"), "{e}");
        // Signing twice replaces the signature; a second member makes two.
        sign_manifest(&load(&keys[0]).unwrap(), &toml_path, &out).unwrap();
        let signed = sign_manifest(&load(&keys[1]).unwrap(), &toml_path, &out).unwrap();
        assert_eq!(signed.signatures.len(), 2);
        assert!(verify(&out, None).unwrap().contains("verified"));
        // The TOML changed after signing: the third member's signature is not attached to it.
        std::fs::write(
            &toml_path,
            toml::to_string(&Manifest {
                federation: "other".into(),
                ..manifest
            })
            .unwrap(),
        )
        .unwrap();
        let e = sign_manifest(&load(&keys[2]).unwrap(), &toml_path, &out).unwrap_err();
        assert!(e.to_string().contains("holds another manifest"), "{e}");
    }

    #[test]
    fn an_approval_is_a_signature_over_a_well_formed_fingerprint() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.key");
        let public = keygen(&path).unwrap();
        let key = load(&path).unwrap();
        let fp = "ab".repeat(32);
        let s = approve(&key, &fp).unwrap();
        assert_eq!(s.key, public);
        let board = civic_policies::manifest::Board {
            threshold: 1,
            members: vec![BoardMember {
                name: "m".into(),
                key: public,
            }],
        };
        assert!(board.signed(&approval_message(&fp), &[s]));
        assert!(approve(&key, "query 7").is_err());
    }
}
