//! Accounts, datasets, projects, allocations, approvals, budgets and the audit log.

use civic_api::Role;
use civic_api::governance::{
    AllocationView, AuditPage, AuditVerification, BudgetView, CreateAccount, CreatePartner,
    CreateProject, CreatedAccount, DatasetView, Decision, PolicyFormat, ProjectView, SetAllocation,
    UploadPolicy,
};
use civic_api::query::{QueryState, QueryView};
use civic_mechanisms::accounting::epsilon_at_delta;
use civic_policies::DatasetPolicy;
use civic_policies::audit::{ChainHead, verify_chain};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::event;
use super::research::{priced_for, view};
use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::rounds;
use crate::store::{Account, accounts, audit, budgets, datasets, projects, queries};

/// Creates an account (any role but partner) and returns its token, once.
pub async fn create_account(
    state: &AppState,
    by: &Account,
    req: CreateAccount,
) -> ApiResult<CreatedAccount> {
    if req.role == Role::Partner {
        return Err(ApiError::bad_request(
            "account.partner_via_partners",
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
) -> ApiResult<CreatedAccount> {
    create(state, &by.name, &req.name, Role::Partner).await
}

/// Creates an account of any role (also used by the bootstrap command).
pub async fn create(
    state: &AppState,
    by: &str,
    name: &str,
    role: Role,
) -> ApiResult<CreatedAccount> {
    let mut tx = state.store.begin().await?;
    let (account, token) = accounts::create(&mut tx, name, role).await?;
    let partner_id = (role == Role::Partner).then_some(account.id as u32);
    audit::append(
        &mut tx,
        event(
            by,
            "account.create",
            format!("account:{name}"),
            json!({ "role": role.as_str(), "partner_id": partner_id }),
        ),
    )
    .await?;
    tx.commit().await?;
    Ok(CreatedAccount {
        name: account.name,
        role,
        partner_id,
        token: token.reveal().to_string(),
    })
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
) -> ApiResult<DatasetView> {
    let policy = match req.format {
        PolicyFormat::Toml => DatasetPolicy::from_toml(&req.policy, "request body"),
        PolicyFormat::Json => DatasetPolicy::from_json(&req.policy, "request body"),
    }?;
    if policy.id() != id {
        return Err(ApiError::bad_request(
            "dataset.id_mismatch",
            format!(
                "the policy declares dataset {:?} but was uploaded to {id:?}",
                policy.id()
            ),
        ));
    }
    let mut tx = state.store.begin().await?;
    let version = datasets::insert(&mut tx, &policy, &req.policy, &by.name).await?;
    budgets::upsert_caps(&mut tx, id, policy.total, policy.per_query).await?;
    audit::append(
        &mut tx,
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
                "min_partners": policy.min_partners(),
            }),
        ),
    )
    .await?;
    tx.commit().await?;
    let mut conn = state.store.pool().acquire().await?;
    Ok(dataset_view(datasets::get(&mut conn, id, version).await?))
}

/// The latest version of a dataset.
pub async fn dataset(state: &AppState, id: &str) -> ApiResult<DatasetView> {
    let mut conn = state.store.pool().acquire().await?;
    Ok(dataset_view(datasets::require_latest(&mut conn, id).await?))
}

/// One version of a dataset.
pub async fn dataset_version(state: &AppState, id: &str, version: i64) -> ApiResult<DatasetView> {
    let mut conn = state.store.pool().acquire().await?;
    Ok(dataset_view(datasets::get(&mut conn, id, version).await?))
}

/// The latest version of every dataset.
pub async fn datasets(state: &AppState) -> ApiResult<Vec<DatasetView>> {
    let mut conn = state.store.pool().acquire().await?;
    Ok(datasets::list(&mut conn)
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
) -> ApiResult<ProjectView> {
    accounts::check_name("project id", &req.id)?;
    if req.title.trim().is_empty() {
        return Err(ApiError::bad_request(
            "project.title",
            "a project needs a title for the public register",
        ));
    }
    let mut tx = state.store.begin().await?;
    projects::insert(&mut tx, &req.id, &req.title, &by.name).await?;
    for member in &req.members {
        match accounts::by_name(&mut tx, member).await? {
            Some(a) if a.role == Role::Researcher => {
                projects::add_member(&mut tx, &req.id, member).await?
            }
            Some(a) => {
                return Err(ApiError::bad_request(
                    "project.member_role",
                    format!(
                        "{member} is a {} account; project members must be researchers",
                        a.role.as_str()
                    ),
                ));
            }
            None => {
                return Err(ApiError::bad_request(
                    "project.member_unknown",
                    format!("no account named {member:?}"),
                ));
            }
        }
    }
    audit::append(
        &mut tx,
        event(
            &by.name,
            "project.create",
            format!("project:{}", req.id),
            json!({ "title": req.title, "members": req.members }),
        ),
    )
    .await?;
    tx.commit().await?;
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
) -> ApiResult<BudgetView> {
    let cap = req.cap.as_cap()?;
    let mut tx = state.store.begin().await?;
    budgets::update(&mut tx, dataset, |l| Ok(l.allocate(project, cap)?)).await?;
    projects::title(&mut tx, project).await?;
    audit::append(
        &mut tx,
        event(
            &by.name,
            "budget.allocate",
            format!("project:{project}"),
            json!({ "dataset": dataset, "cap_rho": cap.as_f64(), "as_written": req.cap }),
        ),
    )
    .await?;
    tx.commit().await?;
    budget(state, dataset).await
}

/// A dataset's budget.
pub async fn budget(state: &AppState, dataset: &str) -> ApiResult<BudgetView> {
    let mut conn = state.store.pool().acquire().await?;
    let ledger = budgets::read(&mut conn, dataset).await?;
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
pub async fn decide(
    state: &AppState,
    by: &Account,
    id: i64,
    req: Decision,
) -> ApiResult<QueryView> {
    if req.reason.trim().is_empty() {
        return Err(ApiError::bad_request(
            "decision.reason",
            "a decision needs a reason for the audit log",
        ));
    }
    let mut tx = state.store.begin().await?;
    // Lock the query first: decisions on one query queue, and each sees the others'.
    if !queries::lock_awaiting_approval(&mut tx, id).await? {
        let query = queries::get(&mut tx, id).await?;
        return Err(ApiError::conflict(
            "query.not_awaiting_approval",
            format!(
                "query {id} is {}, not awaiting approval",
                query.state.as_str()
            ),
        ));
    }
    queries::decide(&mut tx, id, &by.name, req.approve, &req.reason).await?;
    let query = queries::get(&mut tx, id).await?;
    let moved = |ok: bool| {
        if ok {
            Ok(())
        } else {
            Err(ApiError::internal(
                "deciding on a query",
                format!("query {id} changed state under its lock"),
            ))
        }
    };
    let mut started = None;
    if !req.approve {
        moved(
            queries::transition(
                &mut tx,
                id,
                QueryState::AwaitingApproval,
                QueryState::Rejected,
                Some(&req.reason),
            )
            .await?,
        )?;
        budgets::update(&mut tx, &query.dataset, |l| Ok(l.refund(id as u64)?)).await?;
        audit::append(
            &mut tx,
            event(
                &by.name,
                "query.reject",
                format!("query:{id}"),
                json!({ "reason": req.reason }),
            ),
        )
        .await?;
    } else {
        let approvals = queries::approvals(&mut tx, id)
            .await?
            .iter()
            .filter(|a| a.approve)
            .count();
        audit::append(
            &mut tx,
            event(&by.name, "query.approve", format!("query:{id}"), json!({ "reason": req.reason, "approvals": approvals, "required": query.approvals_required })),
        )
        .await?;
        if approvals as u32 >= query.approvals_required {
            moved(
                queries::transition(
                    &mut tx,
                    id,
                    QueryState::AwaitingApproval,
                    QueryState::Running,
                    None,
                )
                .await?,
            )?;
            let version = datasets::get(&mut tx, &query.dataset, query.dataset_version).await?;
            let priced = priced_for(
                state,
                &version.policy,
                query.dataset_version,
                &query.request,
            )
            .await?;
            let setup = rounds::plan(state, &mut tx, id, &priced, &version.policy).await?;
            rounds::open(&mut tx, id, &setup).await?;
            started = Some(setup);
        }
    }
    tx.commit().await?;
    if let Some(setup) = started {
        rounds::start(state, id, setup)?;
    }
    let mut conn = state.store.pool().acquire().await?;
    let q = queries::get(&mut conn, id).await?;
    view(&mut conn, q).await
}

/// A page of the audit log.
pub async fn audit_page(state: &AppState, after: u64, limit: u64) -> ApiResult<AuditPage> {
    let mut conn = state.store.pool().acquire().await?;
    let head = audit::head(&mut conn).await?;
    let records = audit::page(&mut conn, after, limit.clamp(1, 10_000)).await?;
    Ok(AuditPage { records, head })
}

/// Verifies the whole log, page by page, up to the head as it stood when verification began
/// (entries appended meanwhile are left for the next check).
pub async fn verify_audit(state: &AppState) -> ApiResult<AuditVerification> {
    let mut conn = state.store.pool().acquire().await?;
    let stored = audit::head(&mut conn).await?;
    let mut head = ChainHead::genesis();
    while head.seq < stored.seq {
        let page = audit::page(&mut conn, head.seq, (stored.seq - head.seq).min(1000)).await?;
        if page.is_empty() {
            break;
        }
        match verify_chain(&head, &page) {
            Ok(next) => head = next,
            Err(e) => {
                return Ok(AuditVerification {
                    verified: false,
                    entries: head.seq,
                    head,
                    error: Some(e.to_string()),
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
        entries: head.seq,
        head,
        error,
    })
}

/// Registers a partner's identity key (pinned once set), audited.
pub async fn register_identity(
    state: &AppState,
    partner: &Account,
    key: [u8; 32],
) -> ApiResult<()> {
    let mut tx = state.store.begin().await?;
    if accounts::set_identity_key(&mut tx, partner, key).await? {
        audit::append(
            &mut tx,
            event(
                &partner.name,
                "partner.identity_key",
                format!("partner:{}", partner.name),
                json!({ "public_key": hex::encode(key) }),
            ),
        )
        .await?;
    }
    tx.commit().await?;
    Ok(())
}
