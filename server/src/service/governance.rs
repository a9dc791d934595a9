//! Accounts, datasets, projects, allocations, approvals, budgets and the audit log.

use civic_api::governance::{
    AllocationView, AuditPage, AuditVerification, BudgetView, CreateAccount, CreatePartner,
    CreateProject, CreatedAccount, DatasetView, Decision, ManifestChain, PolicyFormat, ProjectView,
    SetAllocation, UploadPolicy,
};
use civic_api::query::{QueryState, QueryView};
use civic_api::{ProblemCode, Role};
use civic_mechanisms::accounting::epsilon_at_delta;
use civic_policies::audit::{ChainHead, verify_chain as verify_audit_chain};
use civic_policies::manifest::{
    Manifest, ManifestError, SignedManifest, TrustAnchor, approval_message, verify_chain,
};
use civic_policies::{DatasetPolicy, Ledger};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::event;
use super::research::view_of;
use super::rounds::{calibration, current, query_and_policy};
use crate::AppState;
use crate::error::{Error, Missing, Result};
use crate::lifecycle::{self, Decided};
use crate::rounds::driver;
use crate::store::{
    Account, NewToken, QueryRow, accounts, audit, budgets, datasets, manifests, projects, queries,
};

/// Creates an account (any role but partner) and returns its token, once.
pub async fn create_account(
    state: &AppState,
    by: &Account,
    req: CreateAccount,
) -> Result<CreatedAccount> {
    if req.role == Role::Partner {
        return Err(Error::invalid(
            ProblemCode::AccountPartnerViaPartners,
            "create partner accounts with POST /v1/admin/partners",
        ));
    }
    create(state, &by.name, &req.name, req.role).await
}

/// Creates a partner and returns its token, once.
pub async fn create_partner(
    state: &AppState,
    by: &Account,
    req: CreatePartner,
) -> Result<CreatedAccount> {
    create(state, &by.name, &req.name, Role::Partner).await
}

/// Checks an account or project name.
fn check_name(what: &str, name: &str) -> Result<()> {
    if accounts::valid_name(name) {
        Ok(())
    } else {
        Err(Error::invalid(
            ProblemCode::RequestInvalidName,
            format!(
                "{what} {name:?} is not a valid name: use 1 to 64 letters, digits, '.', '-', '_' or '@'"
            ),
        ))
    }
}

/// Creates an account of any role (also used by the bootstrap command).
pub async fn create(state: &AppState, by: &str, name: &str, role: Role) -> Result<CreatedAccount> {
    check_name("account name", name)?;
    let token = NewToken::generate().map_err(|e| Error::internal("drawing a token", e))?;
    let at = state.clock.rfc3339();
    let account = state
        .store
        .run_tx("create an account", async |tx| {
            let account = accounts::create(tx, name, role, &token, &at)
                .await?
                .ok_or_else(|| {
                    Error::conflict(
                        ProblemCode::AccountExists,
                        format!("an account named {name:?} already exists"),
                    )
                })?;
            let partner_id = (role == Role::Partner).then_some(account.id as u32);
            audit::append(
                tx,
                event(
                    by,
                    "account.create",
                    format!("account:{name}"),
                    json!({ "role": role.as_str(), "partner_id": partner_id }),
                ),
                &at,
            )
            .await?;
            Ok::<_, Error>(account)
        })
        .await?;
    Ok(CreatedAccount {
        partner_id: (role == Role::Partner).then_some(account.id as u32),
        name: account.name,
        role,
        token: token.reveal().to_string(),
    })
}

/// Gives account `name` a new token, shown once; the old one stops working at once. With
/// `revoke`, the new token is not shown to anyone: the account is locked out until an
/// administrator issues it another. Audited either way.
pub async fn replace_token(
    state: &AppState,
    by: &str,
    name: &str,
    revoke: bool,
) -> Result<Option<CreatedAccount>> {
    let token = NewToken::generate().map_err(|e| Error::internal("drawing a token", e))?;
    let at = state.clock.rfc3339();
    let account = state
        .store
        .run_tx("replace a token", async |tx| {
            let account = accounts::set_token(tx, name, &token)
                .await?
                .ok_or_else(|| Error::NotFound(Missing::Account(name.to_string())))?;
            let action = if revoke {
                "account.revoke"
            } else {
                "account.token_replace"
            };
            audit::append(
                tx,
                event(by, action, format!("account:{name}"), json!({})),
                &at,
            )
            .await?;
            Ok::<_, Error>(account)
        })
        .await?;
    Ok((!revoke).then(|| CreatedAccount {
        partner_id: (account.role == Role::Partner).then_some(account.id as u32),
        name: account.name,
        role: account.role,
        token: token.reveal().to_string(),
    }))
}

fn dataset_view(v: datasets::DatasetVersion) -> DatasetView {
    DatasetView {
        id: v.id,
        version: v.version,
        created_at: v.created_at,
        created_by: v.created_by,
        policy: v.policy.file,
    }
}

/// Stores a new version of a dataset's policy and applies its budget caps.
pub async fn upload_policy(
    state: &AppState,
    by: &Account,
    id: &str,
    req: UploadPolicy,
) -> Result<DatasetView> {
    let policy = match req.format {
        PolicyFormat::Toml => DatasetPolicy::from_toml(&req.policy, "request body"),
        PolicyFormat::Json => DatasetPolicy::from_json(&req.policy, "request body"),
    }?;
    if policy.id() != id {
        return Err(Error::invalid(
            ProblemCode::DatasetIdMismatch,
            format!(
                "the policy declares dataset {:?} but was uploaded to {id:?}",
                policy.id()
            ),
        ));
    }
    let at = state.clock.rfc3339();
    let version = state
        .store
        .run_tx("upload a policy", async |tx| {
            let version = datasets::insert(tx, &policy, &req.policy, &by.name, &at).await?;
            if !budgets::create(tx, &Ledger::new(id, policy.total, policy.per_query)).await? {
                let mut ledger = budgets::lock(tx, id)
                    .await?
                    .ok_or_else(|| Error::NotFound(Missing::Budget(id.to_string())))?;
                ledger.set_caps(policy.total, policy.per_query)?;
                budgets::save(tx, &ledger).await?;
            }
            audit::append(
                tx,
                event(
                    &by.name,
                    if version == 1 {
                        "dataset.create"
                    } else {
                        "dataset.update"
                    },
                    format!("dataset:{id}"),
                    json!({
                        "version": version,
                        "policy_sha256": hex::encode(Sha256::digest(req.policy.as_bytes())),
                        "partners": policy.partners(),
                        "total_rho": policy.total.as_f64(),
                        "per_query_rho": policy.per_query.as_f64(),
                        "min_per_query_rho": policy.min_per_query.as_f64(),
                        "min_partners": policy.min_partners(),
                    }),
                ),
                &at,
            )
            .await?;
            Ok::<_, Error>(version)
        })
        .await?;
    dataset_version(state, id, version).await
}

/// The latest version of a dataset.
pub async fn dataset(state: &AppState, id: &str) -> Result<DatasetView> {
    datasets::latest(&mut *state.store.read().await?, id)
        .await?
        .map(dataset_view)
        .ok_or_else(|| Error::NotFound(Missing::Dataset(id.to_string())))
}

/// One version of a dataset.
pub async fn dataset_version(state: &AppState, id: &str, version: i64) -> Result<DatasetView> {
    datasets::get(&mut *state.store.read().await?, id, version)
        .await?
        .map(dataset_view)
        .ok_or_else(|| Error::NotFound(Missing::DatasetVersion(id.to_string(), version)))
}

/// The latest version of every dataset.
pub async fn datasets(state: &AppState) -> Result<Vec<DatasetView>> {
    Ok(datasets::list(&mut *state.store.read().await?)
        .await?
        .into_iter()
        .map(dataset_view)
        .collect())
}

/// Creates a project with its researchers.
pub async fn create_project(
    state: &AppState,
    by: &Account,
    req: CreateProject,
) -> Result<ProjectView> {
    check_name("project id", &req.id)?;
    if req.title.trim().is_empty() {
        return Err(Error::invalid(
            ProblemCode::ProjectTitle,
            "a project needs a title for the public register",
        ));
    }
    let at = state.clock.rfc3339();
    state
        .store
        .run_tx("create a project", async |tx| {
            if !projects::insert(tx, &req.id, &req.title, &by.name, &at).await? {
                return Err(Error::conflict(
                    ProblemCode::ProjectExists,
                    format!("project {:?} already exists", req.id),
                ));
            }
            for member in &req.members {
                match accounts::by_name(tx, member).await? {
                    Some(a) if a.role == Role::Researcher => {
                        projects::add_member(tx, &req.id, member).await?
                    }
                    Some(a) => {
                        return Err(Error::invalid(
                            ProblemCode::ProjectMemberRole,
                            format!(
                                "{member} is a {} account; project members must be researchers",
                                a.role.as_str()
                            ),
                        ));
                    }
                    None => {
                        return Err(Error::invalid(
                            ProblemCode::ProjectMemberUnknown,
                            format!("no account named {member:?}"),
                        ));
                    }
                }
            }
            audit::append(
                tx,
                event(
                    &by.name,
                    "project.create",
                    format!("project:{}", req.id),
                    json!({ "title": req.title, "members": req.members }),
                ),
                &at,
            )
            .await?;
            Ok(())
        })
        .await?;
    Ok(ProjectView {
        id: req.id,
        title: req.title,
        members: req.members,
    })
}

/// Sets a project's allocation on a dataset.
pub async fn set_allocation(
    state: &AppState,
    by: &Account,
    project: &str,
    dataset: &str,
    req: SetAllocation,
) -> Result<BudgetView> {
    let cap = req.cap.as_cap()?;
    let at = state.clock.rfc3339();
    state
        .store
        .run_tx("set an allocation", async |tx| {
            let mut ledger = budgets::lock(tx, dataset)
                .await?
                .ok_or_else(|| Error::NotFound(Missing::Budget(dataset.to_string())))?;
            if projects::title(tx, project).await?.is_none() {
                return Err(Error::NotFound(Missing::Project(project.to_string())));
            }
            let entry = ledger.allocate(project, cap)?;
            budgets::record(tx, &ledger, &entry, &at).await?;
            audit::append(
                tx,
                event(
                    &by.name,
                    "budget.allocate",
                    format!("project:{project}"),
                    json!({ "dataset": dataset, "cap_rho": cap.as_f64(), "as_written": req.cap }),
                ),
                &at,
            )
            .await?;
            Ok(())
        })
        .await?;
    budget(state, dataset).await
}

/// A dataset's budget.
pub async fn budget(state: &AppState, dataset: &str) -> Result<BudgetView> {
    let ledger = budgets::read(&mut *state.store.read().await?, dataset)
        .await?
        .ok_or_else(|| Error::NotFound(Missing::Budget(dataset.to_string())))?;
    let delta = state.config.reporting_delta;
    let charged = ledger.charged();
    let eps = if charged.units() == 0 {
        0.0
    } else {
        epsilon_at_delta(charged, delta)?
    };
    Ok(BudgetView {
        dataset: dataset.to_string(),
        total_rho: ledger.total().as_f64(),
        per_query_rho: ledger.per_query().as_f64(),
        used_rho: ledger.used().as_f64(),
        charged_rho: charged.as_f64(),
        remaining_rho: ledger.remaining().as_f64(),
        charged_approx_dp: (eps, delta),
        projects: ledger
            .projects()
            .map(|(p, a)| AllocationView {
                project: p.to_string(),
                cap_rho: a.cap.as_f64(),
                reserved_rho: a.reserved.as_f64(),
                charged_rho: a.charged.as_f64(),
            })
            .collect(),
    })
}

/// A board member approves or rejects a query awaiting approval. Approvals count distinct
/// members; the last one needed starts the round. One rejection ends the query and refunds.
pub async fn decide(state: &AppState, by: &Account, id: i64, req: Decision) -> Result<QueryView> {
    if req.reason.trim().is_empty() {
        return Err(Error::invalid(
            ProblemCode::DecisionReason,
            "a decision needs a reason for the audit log",
        ));
    }
    // Everything a round would need is read (and, for a query stored before calibrations
    // were kept, priced) before the transaction: pricing is CPU work no transaction may wait
    // on. A rejection needs none of it.
    let (q, policy) = query_and_policy(state, id).await?;
    let manifest = manifests::latest(&mut *state.store.read().await?).await?;
    let member = deciding_member(manifest.as_ref().map(|s| &s.manifest), by, &q, &req)?;
    let priced = match req.approve {
        true => {
            let honest =
                super::research::context(state, manifest.as_ref(), &policy, &q.request.query)?
                    .honest_survivors;
            let rows = state.config.max_rows_per_partner;
            Some(calibration(state, &q, &policy, rows, honest).await?)
        }
        false => None,
    };
    let at = state.clock.rfc3339();
    let round = state
        .store
        .run_tx("decide on a query", async |tx| {
            // The query's lock first: decisions on one query queue, and each sees the others'.
            let q = queries::lock(tx, id)
                .await?
                .ok_or(Error::NotFound(Missing::Query(id)))?;
            let first = queries::decide(
                tx,
                id,
                &member,
                req.approve,
                &req.reason,
                req.signature.as_ref(),
                &at,
            )
            .await?;
            // Under a manifest only board signatures count (one row per member's key).
            let approvals = queries::approvals(tx, id)
                .await?
                .iter()
                .filter(|a| a.approve && (manifest.is_none() || a.signature.is_some()))
                .count();
            let mut ledger = budgets::lock(tx, &q.dataset)
                .await?
                .ok_or_else(|| Error::NotFound(Missing::Budget(q.dataset.clone())))?;
            let held = budgets::held(tx, id).await?;
            let decided = lifecycle::decide(
                current(&q),
                &member,
                first,
                req.approve,
                approvals,
                &mut ledger,
                held.as_ref(),
            )?;
            let mut round = None;
            match &decided {
                Decided::Rejected { entry, .. } => {
                    budgets::record(tx, &ledger, entry, &at).await?;
                    queries::set_state(tx, id, QueryState::Rejected, Some(&req.reason)).await?;
                }
                Decided::Runs { .. } => {
                    let priced = priced.as_ref().ok_or_else(|| {
                        Error::internal("starting an approved query", "no calibration")
                    })?;
                    queries::set_state(tx, id, QueryState::Running, None).await?;
                    round = Some(
                        super::rounds::open(state, tx, id, &policy, &q.request.query, priced, &at)
                            .await?,
                    );
                }
                Decided::Approved { .. } => {}
            }
            let details = match &decided {
                Decided::Rejected { .. } => json!({ "reason": req.reason, "member": member }),
                Decided::Approved { approvals } | Decided::Runs { approvals } => json!({
                    "reason": req.reason,
                    "member": member,
                    "signature": req.signature,
                    "approvals": approvals,
                    "required": q.approvals_required,
                }),
            };
            let action = if req.approve {
                "query.approve"
            } else {
                "query.reject"
            };
            audit::append(
                tx,
                event(&by.name, action, format!("query:{id}"), details),
                &at,
            )
            .await?;
            Ok::<_, Error>(round)
        })
        .await?;
    if let Some(row) = round {
        driver::start(state, row)?;
    }
    view_of(state, id).await
}

/// Who a decision is recorded as. Before the board publishes a manifest: the account.
/// After: an approval must carry a valid signature over the query's fingerprint by a member
/// of the newest manifest's board, and is recorded as that member (`board:NAME`), so one
/// member approves once however many accounts they hold; a rejection (which only stops the
/// query and refunds it) is recorded as the member who signed it, if any, or the account.
fn deciding_member(
    manifest: Option<&Manifest>,
    by: &Account,
    q: &QueryRow,
    req: &Decision,
) -> Result<String> {
    let member = signing_member(manifest, by, q, req)?;
    // An author never decides on their own query. Only researchers submit and only board
    // accounts decide, so an account cannot; a board member whose manifest name is the
    // submitting researcher's account name is taken to be that person and refused too.
    let author_member = format!("board:{}", q.submitted_by);
    if member.eq_ignore_ascii_case(&author_member) {
        return Err(Error::conflict(
            ProblemCode::DecisionOwnQuery,
            format!(
                "{} submitted query {}: its author does not decide on it; other board members do",
                q.submitted_by, q.id
            ),
        ));
    }
    Ok(member)
}

/// [`deciding_member`] before the author rule.
fn signing_member(
    manifest: Option<&Manifest>,
    by: &Account,
    q: &QueryRow,
    req: &Decision,
) -> Result<String> {
    let Some(m) = manifest else {
        return Ok(by.name.clone());
    };
    let Some(signature) = &req.signature else {
        return match req.approve {
            true => Err(Error::invalid(
                ProblemCode::DecisionSignature,
                format!(
                    "approving needs a board member's signature over the query's fingerprint: run \
                     `civic-board approve --key YOUR.key {}` and send its output as \"signature\"",
                    q.fingerprint
                ),
            )),
            false => Ok(by.name.clone()),
        };
    };
    let member = m
        .board
        .members
        .iter()
        .find(|b| b.key.eq_ignore_ascii_case(signature.key.trim()))
        .ok_or_else(|| {
            Error::invalid(
                ProblemCode::DecisionSignature,
                format!(
                    "key {} is not a member of the board in manifest version {}",
                    signature.key, m.version
                ),
            )
        })?;
    let message = approval_message(&q.fingerprint);
    if m.board
        .valid_signers(&message, std::slice::from_ref(signature))
        != 1
    {
        return Err(Error::invalid(
            ProblemCode::DecisionSignature,
            format!(
                "the signature of board member {} does not verify over query {}'s fingerprint {}",
                member.name, q.id, q.fingerprint
            ),
        ));
    }
    Ok(format!("board:{}", member.name))
}

/// Stores a manifest the board signed, if it follows the newest one stored: version 1 must
/// carry its own board's threshold of signatures; each later one the previous board's, and
/// name the previous digest. The coordinator cannot make a manifest, only relay one.
pub async fn publish_manifest(
    state: &AppState,
    by: &Account,
    signed: SignedManifest,
) -> Result<ManifestChain> {
    let at = state.clock.rfc3339();
    state
        .store
        .run_tx("publish a manifest", async |tx| {
            let latest = manifests::latest(tx).await?;
            let (anchor, chain) = match latest {
                Some(prev) => (
                    TrustAnchor::Digest(prev.manifest.digest()),
                    vec![prev, signed.clone()],
                ),
                None => (
                    TrustAnchor::Board(signed.manifest.board.clone()),
                    vec![signed.clone()],
                ),
            };
            if chain.len() == 1 && signed.manifest.version != 1 {
                return Err(Error::conflict(
                    ProblemCode::ManifestNotSuccessor,
                    format!(
                        "no manifest is stored yet, so the first must be version 1, not {}",
                        signed.manifest.version
                    ),
                ));
            }
            verify_chain(&anchor, &chain).map_err(|e| match e {
                ManifestError::Chain { .. } => {
                    Error::conflict(ProblemCode::ManifestNotSuccessor, e.to_string())
                }
                _ => Error::invalid(ProblemCode::ManifestInvalid, e.to_string()),
            })?;
            if !manifests::insert(tx, &signed, &by.name, &at).await? {
                return Err(Error::conflict(
                    ProblemCode::ManifestNotSuccessor,
                    format!(
                        "manifest version {} is already stored",
                        signed.manifest.version
                    ),
                ));
            }
            let m = &signed.manifest;
            audit::append(
                tx,
                event(
                    &by.name,
                    "manifest.publish",
                    format!("manifest:{}", m.version),
                    json!({
                        "digest": m.digest(),
                        "signers": signed.signatures.iter().map(|s| &s.key).collect::<Vec<_>>(),
                        "partners": m.partners.iter().map(|p| &p.name).collect::<Vec<_>>(),
                        "datasets": m.datasets,
                    }),
                ),
                &at,
            )
            .await?;
            Ok::<_, Error>(())
        })
        .await?;
    manifest_chain(state).await
}

/// Every manifest published, oldest first.
pub async fn manifest_chain(state: &AppState) -> Result<ManifestChain> {
    Ok(ManifestChain {
        manifests: manifests::all(&mut *state.store.read().await?).await?,
    })
}

/// The audit log's head.
pub async fn audit_head(state: &AppState) -> Result<ChainHead> {
    Ok(audit::head(&mut *state.store.read().await?).await?)
}

/// The most entries one page of the audit log holds.
pub const AUDIT_PAGE_MAX: u64 = 10_000;

/// A page of the audit log: at most `limit` entries after position `after`.
pub async fn audit_page(state: &AppState, after: u64, limit: u64) -> Result<AuditPage> {
    if !(1..=AUDIT_PAGE_MAX).contains(&limit) || after > i64::MAX as u64 {
        return Err(Error::invalid(
            ProblemCode::RequestQueryString,
            format!(
                "limit must be 1 to {AUDIT_PAGE_MAX} (got {limit}) and after 0 to {} (got {after})",
                i64::MAX
            ),
        ));
    }
    let mut conn = state.store.read().await?;
    let head = audit::head(&mut conn).await?;
    let records = audit::page(&mut conn, after, limit).await?;
    Ok(AuditPage { records, head })
}

/// Verifies the whole log, page by page, up to the head as it stood when verification began
/// (entries appended meanwhile are left for the next check).
pub async fn verify_audit(state: &AppState) -> Result<AuditVerification> {
    let mut conn = state.store.read().await?;
    let stored = audit::head(&mut conn).await?;
    let mut head = ChainHead::genesis();
    while head.seq < stored.seq {
        let page = audit::page(&mut conn, head.seq, (stored.seq - head.seq).min(1000)).await?;
        if page.is_empty() {
            break;
        }
        match verify_audit_chain(&head, &page) {
            Ok(next) => head = next,
            Err(e) => {
                let first_broken = match &e {
                    civic_policies::PolicyError::Audit { seq, .. } => Some(*seq),
                    _ => None,
                };
                return Ok(AuditVerification {
                    verified: false,
                    // The entries before the broken one verify, even within this page.
                    entries: first_broken.map_or(head.seq, |s| s.saturating_sub(1)),
                    head,
                    error: Some(e.to_string()),
                    first_broken,
                });
            }
        }
    }
    let error = (stored != head).then(|| {
        format!(
            "the log ends at entry {} but its recorded head is entry {} ({})",
            head.seq, stored.seq, stored.hash
        )
    });
    Ok(AuditVerification {
        verified: error.is_none(),
        first_broken: error.is_some().then_some(head.seq + 1),
        entries: head.seq,
        head,
        error,
    })
}
