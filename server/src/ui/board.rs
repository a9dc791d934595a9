//! The board's pages: budgets, approvals, partners, the audit log, policy diffs.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use civic_api::Role::{Admin, Governance, Researcher};
use civic_api::governance::{BudgetView, Decision};
use civic_api::query::QueryState;
use civic_policies::manifest::BoardSignature;
use maud::{Markup, html};
use serde::Deserialize;

use super::{SeenBy, UiError, Viewer, chart, describe, diff, layout, require};
use crate::AppState;
use crate::service::{dashboard as svc, governance};

fn page(title: &str, v: &Viewer, current: &str, body: Markup) -> HttpResponse {
    super::html(StatusCode::OK, layout::page(title, Some(v), current, body))
}

/// Every dataset's budget, per project.
pub async fn budgets(req: HttpRequest, s: web::Data<AppState>) -> Result<HttpResponse, UiError> {
    let v = require(&req, &s, &[Governance]).await?;
    let budgets = svc::budgets(&s).await.seen_by(&v)?;
    let pending = svc::pending_count(&s).await.seen_by(&v)?;
    let body = html! {
        @if pending > 0 {
            p class="notice" { a href="/ui/board/approvals" { (pending) " quer" @if pending == 1 { "y awaits" } @else { "ies await" } " the board's decision" } }
        }
        @if budgets.is_empty() { p { "No dataset has a policy yet." } }
        @for b in &budgets { (budget_table(b, true)) }
        p { "Budgets are in ρ (zero-concentrated differential privacy), the unit the ledger charges; each query's page also states its cost as ε at δ." }
    };
    Ok(page("Privacy budgets", &v, "/ui/board/", body))
}

fn budget_table(b: &BudgetView, link: bool) -> Markup {
    let a = describe::amount;
    html! {
        section aria-labelledby=[link.then(|| format!("budget-{}", b.dataset))] {
            @if link { h2 id={ "budget-" (b.dataset) } { a href={ "/ui/board/budgets/" (layout::segment(&b.dataset)) } { (b.dataset) } } }
            div class="scroll" {
                table {
                    caption { "Budget of " (b.dataset) ", in ρ" }
                    thead { tr { th scope="col" { "Who" } th scope="col" { "Cap" } th scope="col" { "Spent" } th scope="col" { "Reserved" } th scope="col" { "Remaining" } } }
                    tbody {
                        tr class="total" {
                            th scope="row" { "The whole dataset" }
                            td class="num" { (a(b.total_rho)) }
                            td class="num" { (a(b.charged_rho)) }
                            td class="num" { (a(b.used_rho - b.charged_rho)) }
                            td class="num" { (a(b.remaining_rho)) }
                        }
                        @for p in &b.projects {
                            tr {
                                th scope="row" { "project " (p.project) }
                                td class="num" { (a(p.cap_rho)) }
                                td class="num" { (a(p.charged_rho)) }
                                td class="num" { (a(p.reserved_rho)) }
                                td class="num" { (a((p.cap_rho - p.charged_rho - p.reserved_rho).max(0.0))) }
                            }
                        }
                    }
                }
            }
            p { "At most ρ " (a(b.per_query_rho)) " per query (" a href={ "/ui/datasets/" (layout::segment(&b.dataset)) "/diff" } { "policy changes" } "). Spent so far is ε = " (a(b.charged_approx_dp.0)) " at δ " (describe::with_equals(&describe::delta_text(b.charged_approx_dp.1))) "." }
        }
    }
}

/// One dataset's budget over time: a chart and the same figures as a table.
pub async fn budget(
    req: HttpRequest,
    s: web::Data<AppState>,
    dataset: web::Path<String>,
) -> Result<HttpResponse, UiError> {
    let v = require(&req, &s, &[Governance]).await?;
    let (b, entries) = svc::budget_history(&s, &dataset).await.seen_by(&v)?;
    let points = chart::series(&entries);
    let moves: Vec<_> = entries
        .iter()
        .filter(|(_, e)| e.kind != civic_policies::budget::EntryKind::Allocate)
        .zip(&points)
        .collect();
    let body = html! {
        (budget_table(&b, false))
        h2 { "Over time" }
        figure {
            (chart::svg(&points, b.total_rho))
            figcaption { "Spent (solid) and spent plus reserved (dashed) after each ledger entry, against the total budget (dotted). The table below holds the same figures." }
        }
        div class="scroll" {
            table {
                caption { "Ledger entries that moved " (b.dataset) "'s budget, oldest first" }
                thead { tr { th scope="col" { "When" } th scope="col" { "What" } th scope="col" { "Query" } th scope="col" { "Project" } th scope="col" { "Amount (ρ)" } th scope="col" { "Spent after" } th scope="col" { "Reserved after" } } }
                tbody {
                    @for ((at, e), p) in &moves {
                        tr {
                            td { (at) }
                            td { (e.kind.as_str()) }
                            td { a href={ "/ui/board/queries/" (e.query) } { (e.query) } }
                            td { (e.project) }
                            td class="num" { (describe::amount(e.amount.as_f64())) }
                            td class="num" { (describe::amount(p.charged)) }
                            td class="num" { (describe::amount(p.reserved)) }
                        }
                    }
                }
            }
        }
    };
    Ok(page(
        &format!("Budget of {}", b.dataset),
        &v,
        "/ui/board/",
        body,
    ))
}

/// Queries awaiting the board's decision.
pub async fn approvals(req: HttpRequest, s: web::Data<AppState>) -> Result<HttpResponse, UiError> {
    let v = require(&req, &s, &[Governance]).await?;
    let pending = svc::pending(&s).await.seen_by(&v)?;
    let body = html! {
        @if pending.is_empty() {
            p { "No query awaits a decision." }
        } @else {
            div class="scroll" {
                table {
                    caption { "Queries awaiting the board's decision, newest first" }
                    thead { tr { th scope="col" { "Query" } th scope="col" { "Question" } th scope="col" { "Project" } th scope="col" { "Submitted" } th scope="col" { "Cost" } th scope="col" { "Approvals" } } }
                    tbody {
                        @for q in &pending {
                            tr {
                                th scope="row" { a href={ "/ui/board/queries/" (q.id) } { "Query " (q.id) } }
                                td { (describe::question(&q.request.query)) }
                                td { (q.project) }
                                td { (q.submitted_by) ", " (describe::when(&q.submitted_at)) }
                                td { (describe::cost(&q.cost)) }
                                td class="num" { (q.approvals.iter().filter(|a| a.approve).count()) " of " (q.approvals_required) }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(page("Approvals", &v, "/ui/board/approvals", body))
}

/// `POST /ui/board/queries/{id}/decision`.
#[derive(Deserialize)]
pub struct DecisionForm {
    #[serde(default)]
    csrf: String,
    decision: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    signature: String,
}

/// A query as the board decides on it.
pub async fn query(
    req: HttpRequest,
    s: web::Data<AppState>,
    id: web::Path<i64>,
) -> Result<HttpResponse, UiError> {
    let v = require(&req, &s, &[Governance]).await?;
    let body = review(&s, &v, *id, None, "").await.seen_by(&v)?;
    Ok(page(
        &format!("Query {id}"),
        &v,
        "/ui/board/approvals",
        body,
    ))
}

/// Records a board member's decision through the same service as the API.
pub async fn decide(
    req: HttpRequest,
    s: web::Data<AppState>,
    id: web::Path<i64>,
    form: web::Form<DecisionForm>,
) -> Result<HttpResponse, UiError> {
    let v = require(&req, &s, &[Governance]).await?;
    super::check_post(&req, &s.config, Some(&v), &form.csrf).seen_by(&v)?;
    let decision = decision(&form);
    let outcome = match decision {
        Ok(d) => governance::decide(&s, &v.account, *id, d)
            .await
            .map_err(|e| {
                let p = e.body();
                (
                    StatusCode::from_u16(p.status).unwrap_or(StatusCode::BAD_REQUEST),
                    format!("{} ({})", p.detail, p.code),
                )
            }),
        Err(problem) => Err((StatusCode::BAD_REQUEST, problem)),
    };
    match outcome {
        Ok(_) => Ok(super::see_other(&format!("/ui/board/queries/{id}"))),
        Err((status, problem)) if !status.is_server_error() => {
            let body = review(&s, &v, *id, Some(&problem), &form.reason)
                .await
                .seen_by(&v)?;
            Ok(super::html(
                status,
                layout::page(
                    &format!("Query {id}"),
                    Some(&v),
                    "/ui/board/approvals",
                    body,
                ),
            ))
        }
        Err((status, problem)) => Err(UiError::shown(status, "The decision failed", problem)),
    }
}

/// The form's decision, or what is wrong with it.
fn decision(form: &DecisionForm) -> Result<Decision, String> {
    let approve = match form.decision.as_str() {
        "approve" => true,
        "reject" => false,
        other => return Err(format!("decision must be approve or reject, not {other:?}")),
    };
    let signature = match form.signature.trim() {
        "" => None,
        text => Some(serde_json::from_str::<BoardSignature>(text).map_err(|e| {
            format!(
                "the signature is not what `civic-board approve` prints (a JSON object with \
                 \"key\" and \"signature\"): {e}"
            )
        })?),
    };
    Ok(Decision {
        approve,
        reason: form.reason.clone(),
        signature,
    })
}

/// The query as `GET /v1/queries/{id}` shows it, to download for `civic-board approve
/// --query`, which recomputes its fingerprint from what it asks.
pub async fn query_json(
    req: HttpRequest,
    s: web::Data<AppState>,
    id: web::Path<i64>,
) -> Result<HttpResponse, UiError> {
    require(&req, &s, &[Governance]).await?;
    let q = crate::service::research::view_of(&s, *id).await?;
    Ok(HttpResponse::Ok()
        .insert_header((
            actix_web::http::header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"query-{id}.json\""),
        ))
        .json(q))
}

/// The review of query `id`, with the decision form while it awaits approval.
async fn review(
    s: &AppState,
    v: &Viewer,
    id: i64,
    problem: Option<&str>,
    reason: &str,
) -> Result<Markup, UiError> {
    let r = svc::review(s, id).await?;
    let q = &r.query;
    let approvals = q.approvals.iter().filter(|a| a.approve).count();
    let file = format!("query-{}.json", q.id);
    let command = format!("civic-board approve --key YOUR.key --query {file}");
    Ok(html! {
        @if let Some(p) = problem { (layout::problem(p)) }
        p class="lead" { (describe::question(&q.request.query)) }
        dl class="facts" {
            dt { "State" } dd { (layout::state(q.state)) @if let Some(r) = &q.reason { ": " (r) } }
            dt { "Dataset" } dd { (q.dataset) " (policy version " (q.dataset_version) ")" }
            dt { "Project" } dd { (q.project) }
            dt { "Submitted by" } dd { (q.submitted_by) ", " (describe::when(&q.submitted_at)) }
            dt { "Cost" } dd { (describe::cost(&q.cost)) }
            dt { "Fingerprint (what members sign)" } dd { code class="hash" id="fingerprint" { (q.fingerprint) } }
        }
        details {
            summary { "The query as submitted (JSON)" }
            pre { (serde_json::to_string_pretty(&q.request).unwrap_or_default()) }
        }
        @match &r.accuracy {
            Ok((accuracy, disclosure)) => {
                h2 { "Accuracy of what it would release" }
                div class="scroll" {
                    table {
                        caption { "Interval half-width of each row, known before any data" }
                        thead { tr { th scope="col" { "Row" } th scope="col" { "Half-width" } th scope="col" { "Confidence" } th scope="col" { "Notes" } } }
                        tbody {
                            @for a in accuracy {
                                tr {
                                    th scope="row" { (a.name) }
                                    td class="num" { (describe::half_width(a)) }
                                    td class="num" { (describe::trim(a.confidence * 100.0)) "%" }
                                    td { (a.note.as_deref().unwrap_or("")) }
                                }
                            }
                        }
                    }
                }
                h2 { "Disclosure control" }
                ul { @for line in disclosure { li { (line) } } }
            }
            Err(why) => {
                h2 { "Accuracy" }
                p class="problem" { "This query cannot be priced under the current manifest and policy, so it could not run as it stands: " (why) }
            }
        }
        h2 { "Decisions" }
        p { "It needs " (q.approvals_required) " approval" @if q.approvals_required != 1 { "s" } " from distinct board members, each signing with their own key (one member's signature counts once, whichever account sends it). Only board accounts decide, and a board member whose name in the manifest is the submitting researcher's is refused. One rejection ends the query and returns its budget." }
        @if q.approvals.is_empty() { p { "No decision yet." } } @else {
            div class="scroll" {
                table {
                    caption { "Decisions so far (" (approvals) " approval" @if approvals != 1 { "s" } ")" }
                    thead { tr { th scope="col" { "Member" } th scope="col" { "Decision" } th scope="col" { "Reason" } th scope="col" { "When" } th scope="col" { "Signed" } } }
                    tbody {
                        @for a in &q.approvals {
                            tr {
                                th scope="row" { (a.member) }
                                td { @if a.approve { "approved" } @else { "rejected" } }
                                td { (a.reason) }
                                td { (describe::when(&a.at)) }
                                td { @if let Some(sig) = &a.signature { "key " code { (sig.key.get(..16).unwrap_or(&sig.key)) "…" } } @else { "no" } }
                            }
                        }
                    }
                }
            }
        }
        @if q.state == QueryState::AwaitingApproval {
            h2 { "Your decision" }
            form method="post" action={ "/ui/board/queries/" (q.id) "/decision" } class="decision" {
                input type="hidden" name="csrf" value=(v.csrf);
                div class="field" {
                    label for="reason" { "Reason (recorded in the audit log)" }
                    textarea id="reason" name="reason" rows="3" required { (reason) }
                }
                @if r.signatures_required {
                    fieldset {
                        legend { "Your signature (approving needs one)" }
                        p { "Sign on your own machine, with your board key, the query you read: "
                            a href={ "/ui/board/queries/" (q.id) "/query.json" } download=(file) { "download it" }
                            ", then run:" }
                        pre { code id="approve-command" { (command) } }
                        p { "The command recomputes the fingerprint from the query itself and prints what it asks, so you sign what you read, not what this page claims. Your key never comes here: this server is not trusted with it." }
                        div class="field" {
                            label for="signature" { "Signature (the command's output)" }
                            textarea id="signature" name="signature" rows="3" spellcheck="false" {}
                        }
                    }
                } @else {
                    p { "The board has not published a manifest yet, so no signature is needed: the decision is recorded under your account." }
                }
                div class="buttons" {
                    button type="submit" name="decision" value="approve" id="approve" { "Approve" }
                    button type="submit" name="decision" value="reject" id="reject" class="secondary" { "Reject" }
                }
            }
        }
        @if let Some(result) = &q.result {
            h2 { "Result" }
            (layout::release_table("The release", result))
        }
    })
}

/// Every partner: in the manifest, last poll, releases contributed to, declines with codes.
pub async fn partners(req: HttpRequest, s: web::Data<AppState>) -> Result<HttpResponse, UiError> {
    let v = require(&req, &s, &[Governance, Admin]).await?;
    let now = s.clock.now_ms();
    let partners = svc::partners(&s).await.seen_by(&v)?;
    let body = html! {
        p { "Last poll is when the partner's agent last asked for rounds, since this coordinator started. Releases and declines are counted over the newest " (svc::PARTNER_ENTRIES) " of those audit entries." }
        div class="scroll" {
            table {
                caption { "Partner organisations" }
                thead { tr { th scope="col" { "Partner" } th scope="col" { "Organisation (manifest)" } th scope="col" { "Identity key" } th scope="col" { "Last poll" } th scope="col" { "Releases contributed to" } th scope="col" { "Declines" } } }
                tbody {
                    @for p in &partners {
                        tr {
                            th scope="row" { (p.account.name) " (id " (p.account.id) ")" }
                            td { (p.organisation.as_deref().unwrap_or("not in the manifest")) }
                            td {
                                @if let Some(k) = p.account.identity_key { code { (hex::encode(&k[..8])) "…" } } @else { "not registered" }
                                @match p.key_matches_manifest {
                                    Some(true) => { " (the manifest's)" }
                                    Some(false) => { " " strong class="bad" { "differs from the manifest's: rounds refuse it" } }
                                    None => {}
                                }
                            }
                            td { @match p.last_poll_ms { Some(ms) => { (ago(now - ms)) }, None => { "not since this coordinator started" } } }
                            td class="num" { (p.releases) }
                            td {
                                @if p.declines.is_empty() { "none" } @else {
                                    ul { @for (at, round, query, code) in p.declines.iter().take(10) { li { code { (code) } " — round " (round) ", " (query) ", " (at) } } }
                                    @if p.declines.len() > 10 { (p.declines.len() - 10) " more" }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(page("Partners", &v, "/ui/board/partners", body))
}

fn ago(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match s {
        0..=59 => format!("{s} s ago"),
        60..=3599 => format!("{} min ago", s / 60),
        _ => format!("{} h ago", s / 3600),
    }
}

/// `GET /ui/board/audit`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    after: Option<u64>,
}

/// The audit log: whether the chain verifies (and the first entry that does not), and its
/// entries a page at a time.
pub async fn audit(
    req: HttpRequest,
    s: web::Data<AppState>,
    q: web::Query<AuditQuery>,
) -> Result<HttpResponse, UiError> {
    let v = require(&req, &s, &[Governance, Admin]).await?;
    let (check, head, records) = svc::audit(&s, q.after).await.seen_by(&v)?;
    let first = records.first().map_or(0, |r| r.seq);
    let body = html! {
        p { "This coordinator checks its own log here. That cannot prove it was not rewritten by whoever runs it: partners' agents check the log against the heads they recorded (" code { "civic-agent audit-check" } "), and anyone can check an export (" code { "GET /v1/audit" } ") with any SHA-256 tool." }
        @if check.verified {
            p class="ok" id="audit-status" { "Verified: all " (check.entries) " entries chain correctly up to the head." }
        } @else {
            div class="problem" id="audit-status" role="alert" {
                p { strong { "The chain does not verify" } @if let Some(n) = check.first_broken { " at entry " (n) } "." }
                @if let Some(e) = &check.error { p { (e) } }
                p { (check.entries) " entries verify before it. Compare the log with the heads partners' agents recorded (" code { "civic-agent audit-check" } ") to see what was changed." }
                @if let Some(n) = check.first_broken { p { a href={ "/ui/board/audit?after=" (n.saturating_sub(1)) } { "Show entry " (n) } } }
            }
        }
        dl class="facts" {
            dt { "Head" } dd { "entry " (head.seq) ", hash " code class="hash" { (head.hash) } }
        }
        nav aria-label="Audit pages" class="pager" {
            @if first > 1 { a href={ "/ui/board/audit?after=" (first.saturating_sub(1 + svc::AUDIT_PAGE)) } { "Older entries" } }
            " "
            @if records.last().is_some_and(|r| r.seq < head.seq) { a href={ "/ui/board/audit?after=" (records.last().map_or(0, |r| r.seq)) } { "Newer entries" } }
        }
        div class="scroll" {
            table class="audit" {
                caption { "Audit entries " (first) " to " (records.last().map_or(0, |r| r.seq)) }
                thead { tr { th scope="col" { "Entry" } th scope="col" { "When" } th scope="col" { "Who" } th scope="col" { "What" } th scope="col" { "Subject" } th scope="col" { "Details" } th scope="col" { "Hash" } } }
                tbody {
                    @for r in &records {
                        @let broken = check.first_broken == Some(r.seq);
                        @let after = check.first_broken.is_some_and(|n| r.seq > n);
                        tr class=[(broken || after).then_some("broken")] id={ "entry-" (r.seq) } {
                            th scope="row" { (r.seq) @if broken { " (does not verify)" } @if after { " (after the break: unverified)" } }
                            td { (r.at) }
                            td { (r.actor) }
                            td { (r.action) }
                            td { (r.subject) }
                            td { code class="details" { (truncate(&r.details, 400)) } }
                            td { code { (r.hash.get(..12).unwrap_or(&r.hash)) "…" } }
                        }
                    }
                }
            }
        }
    };
    Ok(page("Audit log", &v, "/ui/board/audit", body))
}

fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// `GET /ui/datasets/{id}/diff`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiffQuery {
    from: Option<i64>,
    to: Option<i64>,
}

/// Two versions of a dataset's policy, line by line (the latest and the one before it
/// unless asked otherwise).
pub async fn policy_diff(
    req: HttpRequest,
    s: web::Data<AppState>,
    id: web::Path<String>,
    q: web::Query<DiffQuery>,
) -> Result<HttpResponse, UiError> {
    let v = require(&req, &s, &[Governance, Admin, Researcher]).await?;
    let latest = governance::dataset(&s, &id).await.seen_by(&v)?.version;
    let to = q.to.unwrap_or(latest);
    let from = q.from.unwrap_or(to.saturating_sub(1).max(1));
    for (name, version) in [("from", from), ("to", to)] {
        if !(1..=latest).contains(&version) {
            return Err::<HttpResponse, _>(UiError::shown(
                StatusCode::NOT_FOUND,
                "No such version",
                format!("{name} must be a version of {id} from 1 to {latest}, got {version}"),
            ))
            .seen_by(&v);
        }
    }
    let (old, new) = svc::policy_versions(&s, &id, from, to).await.seen_by(&v)?;
    let lines = diff::lines(&old, &new);
    let body = html! {
        p { "Version " (from) " against version " (to) " of " (id) "'s policy (of " (latest) "). Lines marked − are only in version " (from) ", lines marked + only in version " (to) "." }
        form method="get" class="inline" {
            label for="from" { "From version" } input id="from" name="from" type="number" min="1" max=(latest) value=(from);
            label for="to" { "to version" } input id="to" name="to" type="number" min="1" max=(latest) value=(to);
            button type="submit" { "Compare" }
        }
        @match &lines {
            None => { p { "The versions differ in too many lines to compare here; compare the policies' TOML with a diff tool (" code { "GET /v1/datasets/ID/versions/N" } ")." } }
            Some(lines) => {
                pre class="diff" {
                    @for l in lines {
                        @match l {
                            diff::Line::Same(t) => { span { "  " (t) "\n" } }
                            diff::Line::Removed(t) => { del { "− " (t) "\n" } }
                            diff::Line::Added(t) => { ins { "+ " (t) "\n" } }
                        }
                    }
                }
            }
        }
    };
    Ok(page(&format!("Policy of {id}: changes"), &v, "", body))
}
