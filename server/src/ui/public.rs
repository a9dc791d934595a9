//! Pages anyone may read (the public register, the federation's manifests), and logging in
//! and out.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use civic_api::query::RegisterEntry;
use civic_policies::manifest::{Manifest, SignedManifest};
use maud::{Markup, html};
use serde::Deserialize;

use super::{UiError, layout, viewer};
use crate::AppState;
use crate::service::{dashboard as svc, governance, research};
use crate::ui::describe;

/// `GET /ui/login`.
#[derive(Deserialize)]
pub struct Next {
    #[serde(default)]
    next: String,
}

/// `POST /ui/login`.
#[derive(Deserialize)]
pub struct LoginForm {
    token: String,
    #[serde(default)]
    next: String,
}

/// `POST /ui/logout`.
#[derive(Deserialize)]
pub struct LogoutForm {
    #[serde(default)]
    csrf: String,
}

fn login_page(next: &str, problem: Option<&str>) -> Markup {
    layout::page(
        "Log in",
        None,
        "",
        html! {
            @if let Some(p) = problem { (layout::problem(p)) }
            p { "Board members, administrators and researchers log in with their account's token (the one the API takes). The browser then keeps a session for a few hours; the token itself is not kept." }
            form method="post" action="/ui/login" {
                input type="hidden" name="next" value=(next);
                div class="field" {
                    label for="token" { "Account token" }
                    input id="token" name="token" type="password" autocomplete="current-password" required;
                }
                button type="submit" { "Log in" }
            }
            p { "Residents need no account: the " a href="/ui/" { "public register" } " is open to all." }
        },
    )
}

/// The login form.
pub async fn login_form(q: web::Query<Next>) -> HttpResponse {
    let next = super::safe_next(&q.next).unwrap_or_default();
    super::html(StatusCode::OK, login_page(next, None))
}

/// Logs in with a token: a session cookie, then the page asked for (or the role's home).
pub async fn login(
    req: HttpRequest,
    s: web::Data<AppState>,
    form: web::Form<LoginForm>,
) -> Result<HttpResponse, UiError> {
    super::check_post(&req, &s.config, None, "")?;
    let next = super::safe_next(&form.next).unwrap_or_default();
    let ip = req.peer_addr().map(|a| a.ip());
    let held = req
        .cookie(super::cookie_name(&s))
        .map(|c| zeroize::Zeroizing::new(c.value().to_string()));
    match svc::login(&s, &form.token, ip, held.as_deref().map(String::as_str)).await {
        Ok(session) => {
            let to = if next.is_empty() {
                super::home(session.account.role)
            } else {
                next
            };
            Ok(HttpResponse::SeeOther()
                .cookie(super::session_cookie(&s, &session))
                .insert_header((actix_web::http::header::LOCATION, to))
                .finish())
        }
        Err(e) => {
            let problem = e.body();
            let status = StatusCode::from_u16(problem.status).unwrap_or(StatusCode::UNAUTHORIZED);
            if status.is_server_error() {
                return Err(e.into());
            }
            let detail = format!("Not logged in: {}.", problem.detail);
            let mut res = super::html(status, login_page(next, Some(&detail)));
            if let crate::error::Error::TooManyAuthFailures { retry_after_secs } = e {
                res.headers_mut().insert(
                    actix_web::http::header::RETRY_AFTER,
                    retry_after_secs.into(),
                );
            }
            Ok(res)
        }
    }
}

/// Ends the session.
pub async fn logout(
    req: HttpRequest,
    s: web::Data<AppState>,
    form: web::Form<LogoutForm>,
) -> Result<HttpResponse, UiError> {
    let v = viewer(&req, &s).await?;
    super::check_post(&req, &s.config, v.as_ref(), &form.csrf)?;
    if let Some(v) = &v {
        svc::logout(&s, &v.cookie).await?;
    }
    Ok(HttpResponse::SeeOther()
        .cookie(super::cleared_cookie(&s))
        .insert_header((actix_web::http::header::LOCATION, "/ui/"))
        .finish())
}

/// Releases the register lists on its page.
const REGISTER_PAGE: i64 = 100;

/// The public register: every release, newest first, in plain language.
pub async fn register(req: HttpRequest, s: web::Data<AppState>) -> Result<HttpResponse, UiError> {
    let v = viewer(&req, &s).await?;
    let entries = research::register(&s, REGISTER_PAGE).await?;
    let head = governance::audit_head(&s).await?;
    let body = html! {
        p class="lead" { "This is the public record of every figure released from the pooled health, care and housing data of this federation's partner organisations: what was asked, by which project, when, at what privacy cost, and what came out." }
        details {
            summary { "What the privacy cost means" }
            p { (describe::COST_MEANING) }
            p { "Every figure has random noise added before it leaves; the interval beside it is where the true figure lies with the stated confidence. Very small counts are withheld or rounded where the dataset's rules say so." }
        }
        @if entries.is_empty() {
            p { "Nothing has been released yet." }
        } @else {
            @if entries.len() as i64 == REGISTER_PAGE {
                p { "The newest " (REGISTER_PAGE) " releases, newest first (every release is in " code { "GET /v1/register?limit=1000" } ")." }
            } @else {
                p { (entries.len()) " release" @if entries.len() != 1 { "s" } ", newest first." }
            }
            ol class="releases" {
                @for e in &entries { li { (register_entry(e)) } }
            }
        }
        section aria-labelledby="chain" {
            h2 id="chain" { "Checking this record" }
            p { "Every change here — each release, approval and budget change — is an entry in a hash-chained audit log: each entry's hash covers the one before it, so rewriting any entry changes every hash after it." }
            dl class="facts" {
                dt { "Entries in the audit log" } dd { (head.seq) }
                dt { "Hash of the latest entry" } dd { code class="hash" { (head.hash) } }
            }
            p { "Anyone can read the latest entry at " code { "GET /v1/audit/head" } ". Partner organisations' agents record it as they go and check the whole log against what they recorded (" code { "civic-agent audit-check" } "), so a log rewritten by whoever runs this server is caught by someone who does not have to trust it." }
        }
    };
    Ok(super::html(
        StatusCode::OK,
        layout::page("Public register of releases", v.as_ref(), "/ui/", body),
    ))
}

fn register_entry(e: &RegisterEntry) -> Markup {
    let partners = e.release.receipt["survivors"].as_u64();
    html! {
        article class="release" {
            h2 { a href={ "/ui/releases/" (e.query_id) } { (describe::question(&e.query)) } }
            dl class="facts" {
                dt { "Dataset" } dd { (e.dataset) }
                dt { "Project" } dd { (e.project_title) " (" (e.project) ")" }
                dt { "Released" } dd { (describe::when(&e.released_at)) }
                dt { "Privacy cost" } dd { (describe::cost(&e.cost)) }
                @if let Some(n) = partners { dt { "Partner organisations" } dd { (n) } }
            }
        }
    }
}

/// One release in full: the table with its intervals and its receipt.
pub async fn release(
    req: HttpRequest,
    s: web::Data<AppState>,
    id: web::Path<i64>,
) -> Result<HttpResponse, UiError> {
    let v = viewer(&req, &s).await?;
    let (q, release) = svc::public_release(&s, *id).await?;
    let title = svc::project_title(&s, &q.project).await?;
    let confidence = release.receipt["confidence"].as_f64().unwrap_or(0.95);
    let withheld = release.rows.iter().flatten().any(|c| c.value.is_none());
    let body = html! {
        dl class="facts" {
            dt { "Release" } dd { "query " (q.id) }
            dt { "Dataset" } dd { (q.dataset) " (policy version " (q.dataset_version) ")" }
            dt { "Project" } dd { (title) " (" (q.project) ")" }
            dt { "Released" } dd { (describe::when(&release.released_at)) }
            dt { "Privacy cost" } dd { (describe::cost(&q.cost)) }
            dt { "Board approvals" } dd { @if q.approvals_required == 0 { "none required (its cost is within what the policy allows without them)" } @else { (q.approvals_required) ", signed by distinct board members" } }
        }
        (layout::release_table(
            &format!("The released figures, each with its {}% interval", describe::trim(confidence * 100.0)),
            &release,
        ))
        @if withheld { p { "“Withheld” means the dataset's disclosure rules held the cell back because its count was too small to publish safely." } }
        h2 { "How it was protected" }
        (layout::receipt(&release.receipt))
        p { a href="/ui/" { "Back to the register" } }
    };
    Ok(super::html(
        StatusCode::OK,
        layout::page(&describe::question(&q.request.query), v.as_ref(), "", body),
    ))
}

/// The federation as the board signed it: every manifest version, who signed it, and what
/// changed from the one before.
pub async fn federation(req: HttpRequest, s: web::Data<AppState>) -> Result<HttpResponse, UiError> {
    let v = viewer(&req, &s).await?;
    let chain = governance::manifest_chain(&s).await?.manifests;
    let body = html! {
        p class="lead" { "The governance board signs who the partner organisations are, their keys and the dataset policies. Partners' agents obey only what the board signed; the coordinator relays it and cannot change it." }
        @if chain.is_empty() {
            p { "The board has not published a manifest yet." }
        }
        @for (i, m) in chain.iter().enumerate().rev() {
            (manifest(m, i.checked_sub(1).and_then(|p| chain.get(p))))
        }
    };
    Ok(super::html(
        StatusCode::OK,
        layout::page("The federation", v.as_ref(), "/ui/federation", body),
    ))
}

fn manifest(s: &SignedManifest, previous: Option<&SignedManifest>) -> Markup {
    let m = &s.manifest;
    // Who signed: version 1 by its own board, later ones by the board before them.
    let signing_board = previous.map_or(&m.board, |p| &p.manifest.board);
    let message = m.signing_message();
    let signers: Vec<(String, bool)> = s
        .signatures
        .iter()
        .map(|sig| {
            let name = signing_board
                .members
                .iter()
                .find(|b| b.key.eq_ignore_ascii_case(&sig.key))
                .map_or_else(
                    || format!("unknown key {}", short(&sig.key)),
                    |b| b.name.clone(),
                );
            let valid = signing_board.valid_signers(&message, std::slice::from_ref(sig)) == 1;
            (name, valid)
        })
        .collect();
    html! {
        section class="manifest" aria-labelledby={ "manifest-" (m.version) } {
            h2 id={ "manifest-" (m.version) } { "Version " (m.version) ": " (m.federation) }
            dl class="facts" {
                dt { "Digest" } dd { code class="hash" { (m.digest()) } }
                @if let Some(p) = &m.previous { dt { "Follows" } dd { code class="hash" { (p) } } }
                dt { "Board" } dd { (m.board.threshold) " of " (m.board.members.len()) " members must sign: " (m.board.members.iter().map(|b| b.name.as_str()).collect::<Vec<_>>().join(", ")) }
                dt { "Signed by (as this coordinator checks it; " code { "civic-board verify" } " checks it on your own machine)" } dd {
                    ul { @for (name, valid) in &signers { li { (name) ": " @if *valid { "signature verifies" } @else { strong { "signature does not verify" } } } } }
                }
            }
            @if let Some(p) = previous { (changes(&p.manifest, m)) }
            div class="scroll" {
                table {
                    caption { "Partner organisations in version " (m.version) }
                    thead { tr { th scope="col" { "Name" } th scope="col" { "Organisation" } th scope="col" { "Identity key" } } }
                    tbody { @for p in &m.partners { tr { th scope="row" { (p.name) } td { (p.organisation) } td { code { (short(&p.identity_key)) } } } } }
                }
            }
            div class="scroll" {
                table {
                    caption { "Dataset policies signed in version " (m.version) }
                    thead { tr { th scope="col" { "Dataset" } th scope="col" { "Policy digest" } } }
                    tbody { @for d in &m.datasets { tr { th scope="row" { (d.id) } td { code class="hash" { (d.policy_digest) } } } } }
                }
            }
        }
    }
}

/// What changed between two manifests: partners, keys, policies, the board.
fn changes(old: &Manifest, new: &Manifest) -> Markup {
    let mut lines = Vec::new();
    for p in &new.partners {
        match old.partners.iter().find(|o| o.name == p.name) {
            None => lines.push(format!("partner {} ({}) joins", p.name, p.organisation)),
            Some(o) if o.identity_key != p.identity_key => {
                lines.push(format!("partner {} has a new identity key", p.name))
            }
            _ => {}
        }
    }
    for o in &old.partners {
        if !new.partners.iter().any(|p| p.name == o.name) {
            lines.push(format!("partner {} leaves", o.name));
        }
    }
    for d in &new.datasets {
        match old.datasets.iter().find(|o| o.id == d.id) {
            None => lines.push(format!("dataset {} is signed in", d.id)),
            Some(o) if o.policy_digest != d.policy_digest => {
                lines.push(format!("dataset {}'s policy changes", d.id))
            }
            _ => {}
        }
    }
    for o in &old.datasets {
        if !new.datasets.iter().any(|d| d.id == o.id) {
            lines.push(format!("dataset {} is no longer signed", o.id));
        }
    }
    if old.board != new.board {
        lines.push("the board's members or threshold change".into());
    }
    if old.requirements != new.requirements {
        lines.push("the round requirements change".into());
    }
    html! {
        p { strong { "Changes from version " (old.version) ": " } @if lines.is_empty() { "none" } @else { (lines.join("; ")) "." } }
        @for d in new.datasets.iter().filter(|d| old.datasets.iter().any(|o| o.id == d.id && o.policy_digest != d.policy_digest)) {
            p { a href={ "/ui/datasets/" (layout::segment(&d.id)) "/diff" } { "What changed in " (d.id) "'s policy" } " (for logged-in members)" }
        }
    }
}

/// The first 16 hex digits of a key or hash.
fn short(hex: &str) -> String {
    match hex.get(..16) {
        Some(s) if hex.len() > 16 => format!("{s}…"),
        _ => hex.to_string(),
    }
}
