//! The page shell (navigation, who is logged in) and small shared pieces.

use civic_api::Role;
use civic_api::query::{QueryState, ReleaseView};
use maud::{DOCTYPE, Markup, html};

use super::Viewer;
use super::describe;

/// A whole page: `current` is the navigation entry it belongs to.
pub fn page(title: &str, viewer: Option<&Viewer>, current: &str, body: Markup) -> Markup {
    let role = viewer.map(|v| v.account.role);
    let mut links = vec![
        ("/ui/", "Public register"),
        ("/ui/federation", "Federation"),
    ];
    if role == Some(Role::Governance) {
        links.extend([
            ("/ui/board/", "Budgets"),
            ("/ui/board/approvals", "Approvals"),
            ("/ui/board/partners", "Partners"),
            ("/ui/board/audit", "Audit log"),
        ]);
    }
    if role == Some(Role::Admin) {
        links.extend([
            ("/ui/board/partners", "Partners"),
            ("/ui/board/audit", "Audit log"),
        ]);
    }
    if role == Some(Role::Researcher) {
        links.extend([
            ("/ui/research/", "My queries"),
            ("/ui/research/new", "New query"),
        ]);
    }
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Civic" }
                link rel="stylesheet" href="/ui/static/civic.css";
            }
            body {
                a class="skip" href="#main" { "Skip to the content" }
                header {
                    p class="brand" { "Civic" }
                    nav aria-label="Main" {
                        ul {
                            @for (href, label) in &links {
                                li {
                                    @if *href == current {
                                        a href=(href) aria-current="page" { (label) }
                                    } @else {
                                        a href=(href) { (label) }
                                    }
                                }
                            }
                        }
                    }
                    div class="who" {
                        @if let Some(v) = viewer {
                            span { "Logged in as " strong { (v.account.name) } " (" (v.account.role.as_str()) ")" }
                            form method="post" action="/ui/logout" class="inline" {
                                input type="hidden" name="csrf" value=(v.csrf);
                                button type="submit" { "Log out" }
                            }
                        } @else {
                            a href="/ui/login" { "Log in" }
                        }
                    }
                }
                main id="main" tabindex="-1" {
                    h1 { (title) }
                    (body)
                }
                footer {
                    p { "Civic pools statistics, never records: each figure here was computed by the partner organisations on their own data, added together under secure aggregation, and released with differential-privacy noise." }
                }
            }
        }
    }
}

/// A value as one segment of a URL path (ids come from policies and manifests: encoded so
/// that no id can make a link point elsewhere).
pub fn segment(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~'
                if s != "." && s != ".." =>
            {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A message saying what went wrong.
pub fn problem(detail: &str) -> Markup {
    html! { p class="problem" role="alert" { (detail) } }
}

/// A query's state in words.
pub fn state(s: QueryState) -> &'static str {
    match s {
        QueryState::AwaitingApproval => "awaiting the board's approval",
        QueryState::Running => "running",
        QueryState::Released => "released",
        QueryState::Aborted => "aborted (refunded)",
        QueryState::Rejected => "rejected (refunded)",
    }
}

/// A released table with its intervals, captioned.
pub fn release_table(caption: &str, r: &ReleaseView) -> Markup {
    let (headers, rows) = describe::release_table(r);
    html! {
        div class="scroll" {
            table {
                caption { (caption) }
                thead { tr { @for h in &headers { th scope="col" { (h) } } } }
                tbody {
                    @for row in &rows {
                        tr {
                            @for (i, k) in row.keys.iter().enumerate() {
                                @if i == 0 { th scope="row" { (k) } } @else { td { (k) } }
                            }
                            @for (v, interval) in &row.values {
                                td class="num" { (v) }
                                td class="num" { (interval) }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The privacy receipt of a release, as a definition list.
pub fn receipt(r: &serde_json::Value) -> Markup {
    let strings = |key: &str| -> Vec<String> {
        r[key]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let linkage = r.get("linkage").filter(|l| !l.is_null());
    html! {
        dl class="facts receipt" {
            @if let Some(unit) = r["privacy_unit"].as_str() { dt { "Whom the privacy protects" } dd { (unit) } }
            @if let Some(n) = r["survivors"].as_u64() { dt { "Partner organisations whose data is in it" } dd { (n) } }
            @if let Some(c) = r["confidence"].as_f64() { dt { "Confidence of the intervals" } dd { (describe::trim(c * 100.0)) "%" } }
            dt { "Noise" }
            dd {
                @match r["noise"].as_str() {
                    Some("distributed") => { "Each partner organisation added its share of the random noise before its figures left it, so no one ever saw the exact totals." }
                    Some("central") => { "The coordinator added random noise to the combined totals before release: it saw the exact totals, but never any one partner's figures." }
                    _ => { "Random noise was added before release." }
                }
                @let mechanisms = strings("mechanisms");
                @if !mechanisms.is_empty() {
                    details { summary { "Technical detail" } ul { @for m in &mechanisms { li { (m) } } } }
                }
            }
            @let bounds = strings("bounds");
            @if !bounds.is_empty() { dt { "Public bounds each person's values were clipped to" } dd { ul { @for b in &bounds { li { (b) } } } } }
            @let rules = strings("rules");
            dt { "Disclosure rules applied" }
            dd { @if rules.is_empty() { "none" } @else { ul { @for x in &rules { li { (x) } } } } }
            @let caveats = strings("caveats");
            @if !caveats.is_empty() { dt { "Caveats" } dd { ul { @for c in &caveats { li { (c) } } } } }
            @if let Some(l) = linkage {
                dt { "Linked records" }
                dd {
                    "Pairs of organisations joined: " (l["pairs_joined"].as_array().map_or(0, Vec::len))
                    "; pairs left out: " (l["pairs_dropped"].as_array().map_or(0, Vec::len))
                }
            }
        }
    }
}
