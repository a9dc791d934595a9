//! Researchers' pages: their projects' queries with results and receipts, and a form that
//! previews a query's cost and accuracy before it is submitted.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use civic_api::Role::{Governance, Researcher};
use civic_api::query::{Preview, PrivacyRequest, QueryRequest};
use civic_policies::Query;
use civic_policies::query::Statistic;
use maud::{Markup, html};
use serde::Deserialize;

use super::{SeenBy, UiError, Viewer, describe, layout, require};
use crate::AppState;
use crate::service::{dashboard as svc, governance, research};

fn page(title: &str, v: &Viewer, current: &str, status: StatusCode, body: Markup) -> HttpResponse {
    super::html(status, layout::page(title, Some(v), current, body))
}

/// The researcher's projects' queries, newest first.
pub async fn queries(req: HttpRequest, s: web::Data<AppState>) -> Result<HttpResponse, UiError> {
    let v = require(&req, &s, &[Researcher]).await?;
    let (projects, queries) = svc::research(&s, &v.account).await.seen_by(&v)?;
    let body = html! {
        p { "Your projects: " @if projects.is_empty() { "none yet (the board adds researchers to projects)." } @else {
            (projects.iter().map(|(id, title)| format!("{title} ({id})")).collect::<Vec<_>>().join(", "))
        } }
        p { a href="/ui/research/new" { "Preview a new query" } }
        @if queries.is_empty() { p { "No queries yet." } } @else {
            div class="scroll" {
                table {
                    caption { "Queries of your projects, newest first" }
                    thead { tr { th scope="col" { "Query" } th scope="col" { "Question" } th scope="col" { "Project" } th scope="col" { "State" } th scope="col" { "Cost" } th scope="col" { "Submitted" } } }
                    tbody {
                        @for q in &queries {
                            tr {
                                th scope="row" { a href={ "/ui/research/queries/" (q.id) } { "Query " (q.id) } }
                                td { (describe::question(&q.request.query)) }
                                td { (q.project) }
                                td { (layout::state(q.state)) }
                                td { (describe::cost(&q.cost)) }
                                td { (q.submitted_by) ", " (describe::when(&q.submitted_at)) }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(page(
        "My queries",
        &v,
        "/ui/research/",
        StatusCode::OK,
        body,
    ))
}

/// One query: its state, result with intervals, and receipt.
pub async fn query(
    req: HttpRequest,
    s: web::Data<AppState>,
    id: web::Path<i64>,
) -> Result<HttpResponse, UiError> {
    let v = require(&req, &s, &[Researcher, Governance]).await?;
    let q = research::read(&s, &v.account, *id).await.seen_by(&v)?;
    let body = html! {
        p class="lead" { (describe::question(&q.request.query)) }
        dl class="facts" {
            dt { "State" } dd id="query-state" { (layout::state(q.state)) @if let Some(r) = &q.reason { ": " (r) } }
            dt { "Dataset" } dd { (q.dataset) " (policy version " (q.dataset_version) ")" }
            dt { "Project" } dd { (q.project) }
            dt { "Submitted by" } dd { (q.submitted_by) ", " (describe::when(&q.submitted_at)) }
            dt { "Cost" } dd { (describe::cost(&q.cost)) }
            dt { "Approvals" } dd { (q.approvals.iter().filter(|a| a.approve).count()) " of " (q.approvals_required) " required" }
            @if let Some(r) = q.round_id { dt { "Round" } dd { (r) } }
        }
        @match &q.result {
            Some(result) => {
                @let confidence = result.receipt["confidence"].as_f64().unwrap_or(0.95);
                (layout::release_table(&format!("Result, each figure with its {}% interval{}", describe::trim(confidence * 100.0), if result.reused { " (re-served from an identical earlier release, at no cost)" } else { "" }), result))
                h2 { "Privacy receipt" }
                (layout::receipt(&result.receipt))
                details {
                    summary { "The receipt as JSON" }
                    pre { (serde_json::to_string_pretty(&result.receipt).unwrap_or_default()) }
                }
            }
            None => { p { "No result yet." } }
        }
        details {
            summary { "The query as submitted (JSON)" }
            pre { (serde_json::to_string_pretty(&q.request).unwrap_or_default()) }
        }
    };
    Ok(page(
        &format!("Query {id}"),
        &v,
        "/ui/research/",
        StatusCode::OK,
        body,
    ))
}

/// The query form, as filled in.
#[derive(Clone, Default, Deserialize)]
pub struct QueryForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    project: String,
    #[serde(default)]
    dataset: String,
    #[serde(default)]
    statistic: String,
    #[serde(default)]
    columns: String,
    #[serde(default)]
    group_by: String,
    #[serde(default)]
    filter: String,
    #[serde(default)]
    privacy: String,
    #[serde(default)]
    amount: String,
    #[serde(default)]
    confidence: String,
    #[serde(default)]
    query_json: String,
}

/// The request a filled-in form makes, or what is wrong with it (naming the field).
fn request_of(f: &QueryForm) -> Result<QueryRequest, String> {
    let names = |text: &str| -> Vec<String> {
        text.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    };
    let query: Query = if f.query_json.trim().is_empty() {
        let columns = names(&f.columns);
        let one = |what: &str| -> Result<String, String> {
            match columns.as_slice() {
                [c] => Ok(c.clone()),
                _ => Err(format!("Column(s): {what} takes exactly one column")),
            }
        };
        let statistic = match f.statistic.as_str() {
            "count" => Statistic::Count,
            "sum" => Statistic::Sum {
                column: one("a sum")?,
            },
            "mean" => Statistic::Mean {
                column: one("a mean")?,
            },
            "histogram" if !columns.is_empty() => Statistic::Histogram { columns },
            "histogram" => return Err("Column(s): a histogram needs at least one column".into()),
            other => {
                return Err(format!(
                    "Statistic: {other:?} is not one this form builds (count, sum, mean, \
                     histogram); write others as JSON below"
                ));
            }
        };
        let filter =
            match f.filter.trim() {
                "" => None,
                text => Some(serde_json::from_str(text).map_err(|e| {
                    format!("Filter: not a filter in the query language's JSON: {e}")
                })?),
            };
        Query {
            dataset: f.dataset.trim().to_string(),
            statistic,
            filter,
            group_by: names(&f.group_by),
        }
    } else {
        serde_json::from_str(&f.query_json)
            .map_err(|e| format!("Query as JSON: not a query of the query language: {e}"))?
    };
    let amount: f64 = f
        .amount
        .trim()
        .parse()
        .map_err(|_| format!("Privacy amount: {:?} is not a number", f.amount.trim()))?;
    let privacy = match f.privacy.as_str() {
        "epsilon" => PrivacyRequest::Epsilon(amount),
        "rho" => PrivacyRequest::Rho(amount),
        other => return Err(format!("Privacy: {other:?} is neither epsilon nor rho")),
    };
    let confidence = match f.confidence.trim() {
        "" => None,
        text => Some(
            text.parse::<f64>()
                .map_err(|_| format!("Confidence: {text:?} is not a number"))?,
        ),
    };
    Ok(QueryRequest {
        project: f.project.trim().to_string(),
        query,
        privacy,
        confidence,
    })
}

/// The query form, filled in with `f`.
async fn form(s: &AppState, v: &Viewer, f: &QueryForm) -> Result<Markup, UiError> {
    let (projects, _) = svc::research(s, &v.account).await?;
    let datasets = governance::datasets(s).await?;
    let selected = |a: &str, b: &str| a == b;
    Ok(html! {
        form method="post" action="/ui/research/preview" class="query" {
            input type="hidden" name="csrf" value=(v.csrf);
            div class="field" {
                label for="project" { "Project (pays from its allocation)" }
                select id="project" name="project" required {
                    @for (id, title) in &projects { option value=(id) selected[selected(id, &f.project)] { (title) " (" (id) ")" } }
                }
            }
            div class="field" {
                label for="dataset" { "Dataset" }
                select id="dataset" name="dataset" {
                    @for d in &datasets { option value=(d.id) selected[selected(&d.id, &f.dataset)] { (d.id) " (version " (d.version) ")" } }
                }
            }
            div class="field" {
                label for="statistic" { "Statistic" }
                select id="statistic" name="statistic" {
                    @for (value, label) in [("count", "count of people"), ("sum", "sum of a column"), ("mean", "mean of a column"), ("histogram", "counts in each group of columns")] {
                        option value=(value) selected[selected(value, &f.statistic)] { (label) }
                    }
                }
            }
            div class="field" {
                label for="columns" { "Column(s), comma-separated (for sum, mean, histogram)" }
                input id="columns" name="columns" type="text" value=(f.columns);
            }
            div class="field" {
                label for="group_by" { "Break down by (columns, comma-separated; optional)" }
                input id="group_by" name="group_by" type="text" value=(f.group_by);
            }
            div class="field" {
                label for="filter" { "Filter (optional, as JSON; docs/queries.md)" }
                textarea id="filter" name="filter" rows="2" spellcheck="false" { (f.filter) }
            }
            fieldset {
                legend { "Privacy" }
                div class="field" {
                    label for="privacy" { "Noise" }
                    select id="privacy" name="privacy" {
                        option value="epsilon" selected[selected("epsilon", &f.privacy)] { "ε (pure, Laplace noise)" }
                        option value="rho" selected[selected("rho", &f.privacy)] { "ρ (zCDP, Gaussian noise)" }
                    }
                }
                div class="field" {
                    label for="amount" { "Amount" }
                    input id="amount" name="amount" type="text" inputmode="decimal" required value=(f.amount);
                }
                div class="field" {
                    label for="confidence" { "Confidence of the intervals (default 0.95)" }
                    input id="confidence" name="confidence" type="text" inputmode="decimal" value=(f.confidence);
                }
            }
            details open[!f.query_json.trim().is_empty()] {
                summary { "Or write the whole query as JSON (any statistic)" }
                div class="field" {
                    label for="query_json" { "Query as JSON (replaces the fields above but privacy)" }
                    textarea id="query_json" name="query_json" rows="6" spellcheck="false" { (f.query_json) }
                }
            }
            button type="submit" { "Preview cost and accuracy" }
        }
    })
}

/// The empty query form.
pub async fn new_form(req: HttpRequest, s: web::Data<AppState>) -> Result<HttpResponse, UiError> {
    let v = require(&req, &s, &[Researcher]).await?;
    let initial = QueryForm {
        statistic: "count".into(),
        privacy: "epsilon".into(),
        amount: "1".into(),
        ..QueryForm::default()
    };
    let body = html! {
        p { "Nothing is spent by a preview. It shows the cost, the accuracy of every figure and what your project has left; then you can submit." }
        (form(&s, &v, &initial).await?)
    };
    Ok(page(
        "New query",
        &v,
        "/ui/research/new",
        StatusCode::OK,
        body,
    ))
}

/// The preview of a filled-in form, with the form again and a button to submit.
pub async fn preview(
    req: HttpRequest,
    s: web::Data<AppState>,
    f: web::Form<QueryForm>,
) -> Result<HttpResponse, UiError> {
    let v = require(&req, &s, &[Researcher]).await?;
    super::check_post(&req, &s.config, Some(&v), &f.csrf).seen_by(&v)?;
    let outcome = match request_of(&f) {
        Ok(request) => research::preview(&s, &v.account, request.clone())
            .await
            .map(|p| (request, p))
            .map_err(|e| {
                let p = e.body();
                (
                    StatusCode::from_u16(p.status).unwrap_or(StatusCode::BAD_REQUEST),
                    format!("{} ({})", p.detail, p.code),
                )
            }),
        Err(problem) => Err((StatusCode::BAD_REQUEST, problem)),
    };
    let (status, body) = match outcome {
        Ok((request, p)) => (
            StatusCode::OK,
            html! {
                (preview_view(&request, &p))
                @if p.affordable {
                    form method="post" action="/ui/research/submit" {
                        input type="hidden" name="csrf" value=(v.csrf);
                        input type="hidden" name="request" value=(serde_json::to_string(&request).unwrap_or_default());
                        button type="submit" id="submit-query" { "Submit this query" }
                    }
                }
                h2 { "Change it" }
                (form(&s, &v, &f).await?)
            },
        ),
        Err((status, _)) if status.is_server_error() => {
            return Err(UiError::shown(status, "The preview failed", "try again"));
        }
        Err((status, problem)) => (
            status,
            html! {
                (layout::problem(&problem))
                (form(&s, &v, &f).await?)
            },
        ),
    };
    Ok(page("Preview", &v, "/ui/research/new", status, body))
}

fn preview_view(request: &QueryRequest, p: &Preview) -> Markup {
    html! {
        p class="lead" { (describe::question(&request.query)) }
        dl class="facts" id="preview" {
            dt { "Cost" } dd { (describe::cost(&p.cost)) }
            dt { "Cells in the result" } dd { (p.cells) }
            dt { "Left for your project" } dd { "ρ " (describe::amount(p.remaining.project_rho)) " (dataset: ρ " (describe::amount(p.remaining.dataset_rho)) "; at most ρ " (describe::amount(p.remaining.per_query_rho)) " per query)" }
            dt { "Board approvals needed" } dd { (p.approvals_required) }
            dt { "Affordable now" } dd { @if p.affordable { "yes" } @else { "no: " (p.refusal.as_deref().unwrap_or("")) } }
            @if let Some(r) = p.reuses_release { dt { "Already answered" } dd { "release " (r) " answers the same question; it would be re-served at no cost" } }
        }
        div class="scroll" {
            table {
                caption { "Accuracy of each row of the result (" (describe::trim(p.confidence * 100.0)) "% intervals)" }
                thead { tr { th scope="col" { "Row" } th scope="col" { "Half-width" } th scope="col" { "Notes" } } }
                tbody {
                    @for a in &p.accuracy {
                        tr {
                            th scope="row" { (a.name) }
                            td class="num" { (describe::half_width(a)) }
                            td { (a.note.as_deref().unwrap_or("")) }
                        }
                    }
                }
            }
        }
    }
}

/// `POST /ui/research/submit`.
#[derive(Deserialize)]
pub struct SubmitForm {
    #[serde(default)]
    csrf: String,
    request: String,
}

/// Submits a previewed query; its page follows.
pub async fn submit(
    req: HttpRequest,
    s: web::Data<AppState>,
    f: web::Form<SubmitForm>,
) -> Result<HttpResponse, UiError> {
    let v = require(&req, &s, &[Researcher]).await?;
    super::check_post(&req, &s.config, Some(&v), &f.csrf).seen_by(&v)?;
    let request: QueryRequest = serde_json::from_str(&f.request)
        .map_err(|e| {
            UiError::shown(
                StatusCode::BAD_REQUEST,
                "The query could not be read",
                format!("the submitted query is not a query request: {e}"),
            )
        })
        .seen_by(&v)?;
    let q = research::submit(&s, &v.account, request)
        .await
        .seen_by(&v)?;
    Ok(super::see_other(&format!("/ui/research/queries/{}", q.id)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(f: impl FnOnce(&mut QueryForm)) -> QueryForm {
        let mut q = QueryForm {
            project: "falls".into(),
            dataset: "city".into(),
            statistic: "count".into(),
            privacy: "epsilon".into(),
            amount: "1".into(),
            ..QueryForm::default()
        };
        f(&mut q);
        q
    }

    #[test]
    fn a_form_makes_the_request_the_api_takes_or_names_the_field() {
        let r = request_of(&form(|f| {
            f.statistic = "histogram".into();
            f.columns = "age, fell".into();
            f.group_by = "sex".into();
            f.filter = r#"{"compare": {"column": "age", "op": "ge", "value": 65}}"#.into();
            f.confidence = "0.9".into();
        }))
        .unwrap();
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            serde_json::json!({
                "project": "falls",
                "query": { "dataset": "city", "statistic": { "histogram": { "columns": ["age", "fell"] } },
                    "filter": { "compare": { "column": "age", "op": "ge", "value": 65 } },
                    "group_by": ["sex"] },
                "privacy": { "epsilon": 1.0 },
                "confidence": 0.9
            })
        );
        for (change, field) in [
            (
                Box::new(|f: &mut QueryForm| f.amount = "lots".into())
                    as Box<dyn Fn(&mut QueryForm)>,
                "Privacy amount",
            ),
            (
                Box::new(|f: &mut QueryForm| f.statistic = "mean".into()),
                "Column(s)",
            ),
            (
                Box::new(|f: &mut QueryForm| f.filter = "{".into()),
                "Filter",
            ),
            (
                Box::new(|f: &mut QueryForm| f.query_json = "[]".into()),
                "Query as JSON",
            ),
            (
                Box::new(|f: &mut QueryForm| f.privacy = "delta".into()),
                "Privacy",
            ),
            (
                Box::new(|f: &mut QueryForm| f.confidence = "high".into()),
                "Confidence",
            ),
        ] {
            let e = request_of(&form(|f| change(f))).unwrap_err();
            assert!(e.starts_with(field), "{e}");
        }
    }
}
