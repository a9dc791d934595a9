//! What the dashboard's pages (`/ui`) read, and its browser sessions. The pages render what
//! these return; every rule (roles, budgets, approvals) stays in the services the API uses.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Mutex;

use civic_api::ProblemCode;
use civic_api::Role;
use civic_api::governance::{AuditVerification, BudgetView};
use civic_api::query::{QueryState, QueryView, ReleaseView, StatisticAccuracy};
use civic_policies::audit::{AuditRecord, ChainHead};
use civic_policies::budget::LedgerEntry;
use rand::TryRng;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::research;
use crate::AppState;
use crate::error::{Error, Missing, Result};
use crate::store::queries::QueryRow;
use crate::store::sessions;
use crate::store::{Account, accounts, audit, budgets, datasets, manifests, projects, queries};

/// Rows one list page shows at most.
pub const LIST_LIMIT: i64 = 200;

/// A session opened by logging in: the cookie's value (hex, shown to the browser only) and
/// when it expires.
pub struct NewSession {
    /// The cookie's value.
    pub cookie: Zeroizing<String>,
    /// Milliseconds since the Unix epoch.
    pub expires_ms: i64,
    /// Who.
    pub account: Account,
}

/// The session's digest as stored: the cookie's value is never stored.
pub fn session_hash(cookie: &str) -> [u8; 32] {
    Sha256::new()
        .chain_update(b"civic-ui-session/v1\0")
        .chain_update(cookie.as_bytes())
        .finalize()
        .into()
}

/// The CSRF token of a session: derived from the cookie's value, which only the browser
/// holds (HttpOnly), so a page of another site can neither read nor compute it.
pub fn csrf_token(cookie: &str) -> String {
    hex::encode(
        Sha256::new()
            .chain_update(b"civic-ui-csrf/v1\0")
            .chain_update(cookie.as_bytes())
            .finalize(),
    )
}

/// Logs in with an account's API token: a new session of `ttl_ms`. Unknown tokens count
/// against the address as they do on the API; partner tokens are refused (an agent's token
/// has no business in a browser).
pub async fn login(
    state: &AppState,
    token: &str,
    ip: Option<IpAddr>,
    replacing: Option<&str>,
) -> Result<NewSession> {
    let now = state.clock.now_ms();
    if let Some(ip) = ip {
        state.auth_throttle.check(ip, now)?;
    }
    let token = Zeroizing::new(token.trim().to_string());
    let account = accounts::by_token(&mut *state.store.read().await?, &token).await?;
    let Some(account) = account else {
        if let Some(ip) = ip {
            state.auth_throttle.failed(ip, now);
        }
        return Err(Error::Unauthorized {
            code: ProblemCode::AuthBadToken,
            detail: "that token is not valid for this coordinator",
        });
    };
    if account.role == Role::Partner {
        return Err(Error::Forbidden(format!(
            "{} is a partner organisation's agent account: its token is for the agent, not the \
             dashboard",
            account.name
        )));
    }
    let mut raw = Zeroizing::new([0u8; 32]);
    rand::rngs::SysRng
        .try_fill_bytes(raw.as_mut())
        .map_err(|e| Error::internal("drawing a session", e))?;
    let cookie = Zeroizing::new(hex::encode(raw.as_ref()));
    let expires_ms = now + (state.config.ui_session_secs * 1000.0) as i64;
    state
        .store
        .run_tx("open a dashboard session", async |tx| {
            sessions::purge_expired(tx, now).await?;
            // A new login ends the session the browser held, whoever's it was.
            if let Some(old) = replacing {
                sessions::delete(tx, &session_hash(old)).await?;
            }
            sessions::create(
                tx,
                &session_hash(&cookie),
                account.id,
                &accounts::token_hash(&token),
                expires_ms,
            )
            .await?;
            Ok::<_, Error>(())
        })
        .await?;
    tracing::info!(account = %account.name, role = account.role.as_str(), "dashboard login");
    Ok(NewSession {
        cookie,
        expires_ms,
        account,
    })
}

/// The account of a live session.
pub async fn session(state: &AppState, cookie: &str) -> Result<Option<Account>> {
    let now = state.clock.now_ms();
    let found = sessions::find(&mut *state.store.read().await?, &session_hash(cookie), now).await?;
    Ok(found.map(|(account, _)| account))
}

/// Ends a session.
pub async fn logout(state: &AppState, cookie: &str) -> Result<()> {
    let hash = session_hash(cookie);
    state
        .store
        .run_tx("end a dashboard session", async |tx| {
            sessions::delete(tx, &hash).await?;
            Ok::<_, Error>(())
        })
        .await
}

/// One release of the public register, by its query: only original releases (a re-served
/// answer is the same release, listed once).
pub async fn public_release(state: &AppState, query: i64) -> Result<(QueryRow, ReleaseView)> {
    let mut conn = state.store.read().await?;
    let q = queries::get(&mut conn, query)
        .await?
        .filter(|q| q.state == QueryState::Released && !q.reused)
        .ok_or(Error::NotFound(Missing::Release(query)))?;
    let release_id = q
        .release_id
        .ok_or(Error::NotFound(Missing::Release(query)))?;
    let release = queries::release(&mut conn, release_id)
        .await?
        .ok_or(Error::NotFound(Missing::Release(query)))?;
    Ok((q, release))
}

/// A project's title.
pub async fn project_title(state: &AppState, project: &str) -> Result<String> {
    Ok(projects::title(&mut *state.store.read().await?, project)
        .await?
        .unwrap_or_else(|| project.to_string()))
}

/// Every dataset's budget.
pub async fn budgets(state: &AppState) -> Result<Vec<BudgetView>> {
    let mut out = Vec::new();
    for d in super::governance::datasets(state).await? {
        out.push(super::governance::budget(state, &d.id).await?);
    }
    Ok(out)
}

/// A dataset's budget and its ledger entries with their times.
pub async fn budget_history(
    state: &AppState,
    dataset: &str,
) -> Result<(BudgetView, Vec<(String, LedgerEntry)>)> {
    let view = super::governance::budget(state, dataset).await?;
    let entries = budgets::timeline(&mut *state.store.read().await?, dataset).await?;
    Ok((view, entries))
}

/// Queries awaiting the board's approval, newest first.
pub async fn pending(state: &AppState) -> Result<Vec<QueryView>> {
    let mut conn = state.store.read().await?;
    let rows = queries::in_state(&mut conn, QueryState::AwaitingApproval, LIST_LIMIT).await?;
    let mut out = Vec::with_capacity(rows.len());
    for q in rows {
        out.push(research::view(&mut conn, q).await?);
    }
    Ok(out)
}

/// What a board member reads before deciding: the query, the accuracy of what it would
/// release, and the disclosure control its release would get.
pub struct Review {
    /// The query.
    pub query: QueryView,
    /// The accuracy of each row of the release and its disclosure control, in sentences;
    /// or why the query cannot be priced now (the page still shows it, to reject).
    pub accuracy: std::result::Result<(Vec<StatisticAccuracy>, Vec<String>), String>,
    /// Whether approving needs a board member's signature (once a manifest is published).
    pub signatures_required: bool,
}

/// A query with its accuracy and disclosure control, as priced now under the newest manifest.
pub async fn review(state: &AppState, id: i64) -> Result<Review> {
    let (q, policy) = super::rounds::query_and_policy(state, id).await?;
    let manifest = manifests::latest(&mut *state.store.read().await?).await?;
    let accuracy = match research::price(state, manifest.as_ref(), &policy, &q.request).await {
        Ok(priced) => {
            let disclosure = crate::ui::describe::disclosure_summary(
                &policy,
                &q.request.query,
                priced.plan.cells,
            );
            Ok((research::accuracy_views(priced.accuracy), disclosure))
        }
        Err(e) if e.body().status < 500 => Err(e.body().detail),
        Err(e) => return Err(e),
    };
    Ok(Review {
        query: research::view_of(state, id).await?,
        accuracy,
        signatures_required: manifest.is_some(),
    })
}

/// How many queries await the board's decision (at most [`LIST_LIMIT`]).
pub async fn pending_count(state: &AppState) -> Result<usize> {
    let mut conn = state.store.read().await?;
    Ok(
        queries::in_state(&mut conn, QueryState::AwaitingApproval, LIST_LIMIT)
            .await?
            .len(),
    )
}

/// When each partner last asked for rounds, since this coordinator started (kept in memory:
/// polls are too frequent to write down).
#[derive(Debug, Default)]
pub struct PollLog(Mutex<HashMap<i64, i64>>);

impl PollLog {
    /// Records a poll by partner `id` at `now_ms`.
    pub fn seen(&self, id: i64, now_ms: i64) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, now_ms);
    }

    /// Partner `id`'s last poll.
    pub fn last(&self, id: i64) -> Option<i64> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .copied()
    }
}

/// One partner as the board sees it.
pub struct PartnerStatus {
    /// The account.
    pub account: Account,
    /// Its organisation, from the newest manifest (none if it is not in it).
    pub organisation: Option<String>,
    /// Whether its registered identity key is the one the newest manifest gives it (none if
    /// it is not in the manifest or has registered none).
    pub key_matches_manifest: Option<bool>,
    /// Its last poll, in milliseconds since the Unix epoch.
    pub last_poll_ms: Option<i64>,
    /// Releases its input went into, among the audit entries read.
    pub releases: u64,
    /// Its declines, newest first: (when, round, query, code).
    pub declines: Vec<(String, i64, String, &'static str)>,
}

/// Audit entries read for the partners' page (each release's entry holds its values).
pub const PARTNER_ENTRIES: u64 = 1000;

/// Every partner's status, from the accounts, the newest manifest, the polls seen and the
/// newest releases and declines in the audit log.
pub async fn partners(state: &AppState) -> Result<Vec<PartnerStatus>> {
    let mut conn = state.store.read().await?;
    let accounts = accounts::partners(&mut conn).await?;
    let manifest = manifests::latest(&mut conn).await?;
    let entries = audit::newest_of(
        &mut conn,
        &["query.release", "round.declined"],
        PARTNER_ENTRIES,
    )
    .await?;
    drop(conn);
    let mut releases: BTreeMap<i64, u64> = BTreeMap::new();
    let mut declines: BTreeMap<i64, Vec<_>> = BTreeMap::new();
    for e in &entries {
        let details: serde_json::Value = serde_json::from_str(&e.details).unwrap_or_default();
        if e.action == "query.release" {
            for id in details["contributors"].as_array().into_iter().flatten() {
                *releases.entry(id.as_i64().unwrap_or(-1)).or_default() += 1;
            }
        } else if let Some(id) = details["partner"].as_i64() {
            let reason = details["reason"].as_str().unwrap_or_default();
            let code = civic_api::decline::DeclineCode::from_reason(reason)
                .map_or("other", civic_api::decline::DeclineCode::as_str);
            declines.entry(id).or_default().push((
                e.at.clone(),
                details["round"].as_i64().unwrap_or_default(),
                e.subject.clone(),
                code,
            ));
        }
    }
    Ok(accounts
        .into_iter()
        .map(|a| {
            let listed = manifest
                .as_ref()
                .and_then(|m| m.manifest.partners.iter().find(|p| p.name == a.name));
            PartnerStatus {
                organisation: listed.map(|p| p.organisation.clone()),
                key_matches_manifest: listed.zip(a.identity_key).map(|(p, key)| {
                    p.identity_key
                        .trim()
                        .eq_ignore_ascii_case(&hex::encode(key))
                }),
                last_poll_ms: state.partner_polls.last(a.id),
                releases: releases.get(&a.id).copied().unwrap_or(0),
                declines: declines.remove(&a.id).unwrap_or_default(),
                account: a,
            }
        })
        .collect())
}

/// Audit entries a page shows.
pub const AUDIT_PAGE: u64 = 50;

/// The audit log's verification, its head, and a page of entries after `after` (the newest
/// page when `None`).
pub async fn audit(
    state: &AppState,
    after: Option<u64>,
) -> Result<(AuditVerification, ChainHead, Vec<AuditRecord>)> {
    let verification = super::governance::verify_audit(state).await?;
    let mut conn = state.store.read().await?;
    let head = audit::head(&mut conn).await?;
    let after = after.unwrap_or(head.seq.saturating_sub(AUDIT_PAGE));
    if after > i64::MAX as u64 {
        return Err(Error::invalid(
            ProblemCode::RequestQueryString,
            format!("after must be 0 to {}, got {after}", i64::MAX),
        ));
    }
    let records = audit::page(&mut conn, after, AUDIT_PAGE).await?;
    Ok((verification, head, records))
}

/// A researcher's projects and their newest queries.
pub async fn research(
    state: &AppState,
    who: &Account,
) -> Result<(Vec<(String, String)>, Vec<QueryRow>)> {
    let mut conn = state.store.read().await?;
    let projects = projects::of_member(&mut conn, &who.name).await?;
    let queries = queries::of_member(&mut conn, &who.name, LIST_LIMIT).await?;
    Ok((projects, queries))
}

/// Two versions of a dataset's policy as TOML, for a diff.
pub async fn policy_versions(
    state: &AppState,
    dataset: &str,
    from: i64,
    to: i64,
) -> Result<(String, String)> {
    let mut conn = state.store.read().await?;
    let mut text = async |version: i64| -> Result<String> {
        let v = datasets::get(&mut conn, dataset, version)
            .await?
            .ok_or_else(|| Error::NotFound(Missing::DatasetVersion(dataset.into(), version)))?;
        toml::to_string_pretty(&v.policy.file)
            .map_err(|e| Error::internal("writing a policy as TOML", e))
    };
    let old = text(from).await?;
    let new = text(to).await?;
    Ok((old, new))
}
