//! The Liverpool demo's HTML report, from its `report.json`: one self-contained static page
//! (inline SVG and CSS, no scripts, nothing fetched). Shared by the example
//! (`examples/liverpool.rs`) and its browser test (`tests/report.rs`), which both pull it in
//! with `#[path = ...] mod report;`.
//!
//! Every question is drawn as one dot plot per panel, each with its own scale: the released
//! value (a dot), its interval (a bar, never under 2 px), and the true value (a tick)
//! computed over the partners whose data is in the release. Each chart has labelled axes
//! with ticks, a legend, a text alternative, and a table of the same numbers under it. The
//! receipt's caveats, the partners that dropped out and the refusal are stated in words.
//!
//! The JSON it reads (fields the demo writes; missing ones are left out of the page):
//! `seed`, `residents`, `budgets[]` (`dataset`, `projects[]` with `project`, `charged_rho`,
//! `cap_rho`), `questions[]`, `over_budget` (`status`, `refusal.detail`), `audit`
//! (`entries`, `verified`). A question has `query_id`, `title`, `researcher`, `project`,
//! `dataset`, `statistic`, `value_axis`, `category_axis`, `interval_label`, `cost`,
//! `remaining_rho`, `survivors`, `approvals[]`, `events[]`, `receipt` (`caveats[]`,
//! `mechanisms[]`, ...), `partners` (`invited[]`, `contributed[]`, `dropped[]` with
//! `partner` and `what`, `source`) and `cells[]` (`label`, `panel`, `row`, `released`,
//! `interval`, `truth`).

use std::fmt::Write as _;

use serde_json::Value;

/// The page's width budget for a chart, in CSS pixels.
const WIDTH: f64 = 900.0;
/// Between the two panels of a dot plot.
const GAP: f64 = 56.0;
/// Right of the last panel.
const RIGHT: f64 = 28.0;
/// One row of a dot plot.
const ROW: f64 = 26.0;
/// Where the plot area starts below the legend.
const PLOT_TOP: f64 = 50.0;
/// Room under the plot area for the tick labels and the axis title.
const BELOW: f64 = 50.0;
/// The thinnest an interval is drawn, in pixels.
const MIN_INTERVAL: f64 = 2.0;
/// Released values and intervals.
const BLUE: &str = "#1f5fa8";
/// True values (vermilion: told apart from the blue by colour-blind readers too).
const TRUE: &str = "#c2410c";

const STYLE: &str = "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;max-width:62rem;margin:2rem auto;padding:0 1rem;color:#1a1a1a;line-height:1.45}\
h1{margin-bottom:.2rem}h2{margin-top:2.6rem;border-top:1px solid #ccc;padding-top:1rem}h3{font-size:1rem;margin:1.2rem 0 .3rem}\
.meta{color:#444}.partners{margin:.4rem 0}\
.callout{border-left:4px solid #b45309;background:#fff7ed;padding:.5rem .8rem;margin:.6rem 0}\
.callout.note{border-color:#1f5fa8;background:#eff6ff}.callout ul{margin:.2rem 0;padding-left:1.2rem}\
figure{margin:1rem 0 .4rem}figcaption{font-weight:600;margin-bottom:.2rem}\
svg{display:block;max-width:100%;height:auto;font-size:12px}svg text{fill:#1a1a1a}\
.footnote{font-size:.85rem;color:#555;margin:.2rem 0}\
table{border-collapse:collapse;margin:.3rem 0 1.2rem;font-variant-numeric:tabular-nums}\
caption{text-align:left;font-size:.85rem;color:#555;padding-bottom:.2rem}\
.table{overflow-x:auto}td,th[scope=row]{white-space:nowrap}td,th{padding:.2rem .6rem;border-bottom:1px solid #ddd;text-align:right}td:first-child,th:first-child{text-align:left}\
details{margin:.3rem 0 1rem}summary{cursor:pointer;color:#1f5fa8}dl{display:grid;grid-template-columns:max-content 1fr;gap:.1rem 1rem}dt{font-weight:600}dd{margin:0}";

/// The report as one HTML page.
pub fn html(report: &Value) -> String {
    let mut page = String::new();
    let _ = write!(
        page,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width,initial-scale=1\"><title>Civic: the Liverpool demo</title><style>{STYLE}</style></head><body>"
    );
    page.push_str("<h1>Civic: the Liverpool demo</h1>");
    let _ = write!(
        page,
        "<p>Synthetic data{}. Each release was computed by secure aggregation over the partners' masked vectors, noised once and charged to the project's budget. True values are computed directly from the synthetic data, over the partners whose data is in that release.</p>",
        match (report["residents"].as_u64(), report["seed"].as_u64()) {
            (Some(n), Some(s)) => format!(": {} residents, seed {s}", num(n as f64, 0)),
            _ => String::new(),
        }
    );
    page.push_str(&session_summary(report));
    let mut ids = 0;
    page.push_str(&budget_section(report, &mut ids));
    for q in list(&report["questions"]) {
        page.push_str(&question(q, &mut ids));
    }
    page.push_str(&model_section(&report["antibiotics"]));
    if let Some(detail) = report["over_budget"]["refusal"]["detail"].as_str() {
        let _ = write!(
            page,
            "<h2>Refused</h2><p>A further question was refused{}: {}</p>",
            match (
                report["over_budget"]["status"].as_u64(),
                report["over_budget"]["refusal"]["code"].as_str(),
            ) {
                (Some(s), Some(code)) => format!(" (HTTP {s}, {})", escape(code)),
                (Some(s), None) => format!(" (HTTP {s})"),
                _ => String::new(),
            },
            escape(detail)
        );
    }
    if !report["audit"].is_null() {
        let _ = write!(
            page,
            "<h2>Audit log</h2><p>{} entries; hash chain verified: {}.</p>",
            report["audit"]["entries"],
            if report["audit"]["verified"].as_bool() == Some(true) {
                "yes"
            } else {
                "no"
            }
        );
    }
    page.push_str("</body></html>\n");
    page
}

/// A training job's model: each coefficient as released (with its interval, where one was
/// stated) beside the non-private fit of the same rows, and both models' held-out AUC.
/// Nothing when the report has no model.
fn model_section(model: &Value) -> String {
    let rows = list(&model["coefficients"]);
    let mut body = String::new();
    for c in rows {
        let interval = match (c["interval"][0].as_f64(), c["interval"][1].as_f64()) {
            (Some(lo), Some(hi)) => format!("{} to {}", num(lo, 4), num(hi, 4)),
            _ => "not stated".into(),
        };
        let _ = write!(
            body,
            "<tr><th scope=\"row\">{}</th><td>{}</td><td>{interval}</td><td>{}</td></tr>",
            escape(text(&c["name"])),
            num(c["private"].as_f64().unwrap_or(f64::NAN), 4),
            num(c["non_private"].as_f64().unwrap_or(f64::NAN), 4)
        );
    }
    if body.is_empty() {
        return String::new();
    }
    let mut out = String::from("<h2>The antibiotic-choice model (a training job)</h2>");
    let _ = write!(
        out,
        "<p>A logistic model of first-line treatment failure, trained across the GP federations in {} rounds: each Newton step's sums were securely aggregated with the federations' noise and charged before the next step's coefficients were announced. Beside it, the same model fitted on the pooled rows without privacy ({} steps).</p>",
        model["iterations"], model["non_private_iterations"]
    );
    if let (Some(private), Some(exact)) = (
        model["auc"]["private"].as_f64(),
        model["auc"]["non_private"].as_f64(),
    ) {
        let _ = write!(
            out,
            "<p>On {} held-out prescriptions no partner holds, the private model's AUC is {} and the non-private model's {}.</p>",
            num(model["auc"]["held_out"].as_f64().unwrap_or(0.0), 0),
            num(private, 4),
            num(exact, 4)
        );
    }
    let _ = write!(
        out,
        "<div class=\"table\"><table><caption>Coefficients (log-odds per unit; intervals state the privacy noise's share of the error)</caption><thead><tr><th scope=\"col\">coefficient</th><th scope=\"col\">private</th><th scope=\"col\">95% interval</th><th scope=\"col\">non-private</th></tr></thead><tbody>{body}</tbody></table></div>"
    );
    for caveat in list(&model["receipt"]["caveats"]) {
        let _ = write!(out, "<p class=\"footnote\">{}</p>", escape(text(caveat)));
    }
    out
}

/// The partners that dropped out, and every question's caveats, before the charts.
fn session_summary(report: &Value) -> String {
    let mut dropped = String::new();
    for q in list(&report["questions"]) {
        for d in list(&q["partners"]["dropped"]) {
            let _ = write!(
                dropped,
                "<li><strong>{}</strong> in query {} ({}): {}</li>",
                escape(text(&d["partner"])),
                q["query_id"],
                escape(text(&q["title"])),
                escape(text(&d["what"]))
            );
        }
    }
    let mut out = String::from("<h2>Session summary</h2>");
    if dropped.is_empty() {
        out.push_str("<p class=\"dropouts\">No partner dropped out: every invited partner's data is in every release.</p>");
    } else {
        let _ = write!(
            out,
            "<div class=\"callout dropouts\" role=\"note\"><strong>Partners that dropped out</strong><ul>{dropped}</ul>Each affected release was computed from the partners that stayed, and its true values are computed over those partners only.</div>"
        );
    }
    out.push_str("<p>How to read the charts: each row shows the released value (dot), its interval (bar) and the true value (tick). Each chart has its own horizontal scale; the numbers are in the table under it.</p>");
    out
}

fn budget_section(report: &Value, ids: &mut usize) -> String {
    let mut bars = Vec::new();
    for b in list(&report["budgets"]) {
        for p in list(&b["projects"]) {
            bars.push((
                format!("{} ({})", text(&p["project"]), text(&b["dataset"])),
                p["charged_rho"].as_f64().unwrap_or(0.0),
                p["cap_rho"].as_f64().unwrap_or(0.0),
            ));
        }
    }
    let mut out = String::from("<h2>Budget spent per project</h2>");
    if bars.is_empty() {
        return out;
    }
    *ids += 1;
    let id = format!("chart-{ids}");
    let values: Vec<f64> = bars.iter().flat_map(|b| [b.1, b.2]).collect();
    let axis_title = "project (dataset)";
    let left = left_margin(bars.iter().map(|b| b.0.as_str()), axis_title);
    let scale = Scale::new(&values, true, left, WIDTH - left - RIGHT);
    let height = PLOT_TOP + ROW * bars.len() as f64 + BELOW;
    let title = "Privacy budget charged per project, against its cap";
    let desc = format!(
        "Bar chart. Horizontal axis: zCDP ρ, from {} to {}. {}. The same numbers are in the table below.",
        num(scale.lo, scale.decimals),
        num(scale.hi, scale.decimals),
        bars.iter()
            .map(|(name, charged, cap)| format!(
                "{name}: ρ {} charged of a cap of {}",
                num(*charged, 3),
                num(*cap, 3)
            ))
            .collect::<Vec<_>>()
            .join("; ")
    );
    let _ = write!(
        out,
        "<figure class=\"chart\" id=\"{id}\"><figcaption>{title}</figcaption>{}",
        svg_open(&id, height, title, &desc)
    );
    out.push_str(&legend(
        scale.x0,
        &[
            (
                LegendMark::Bar(BLUE),
                "ρ charged (released queries)".to_string(),
            ),
            (LegendMark::Outline, "the project's cap".to_string()),
        ],
    ));
    out.push_str(&grid(&scale, height));
    for (i, (_, charged, cap)) in bars.iter().enumerate() {
        let cy = PLOT_TOP + ROW * i as f64 + ROW / 2.0;
        let _ = write!(
            out,
            "<rect class=\"cap\" x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"14\" fill=\"#f3f4f6\" stroke=\"#6b7280\"/><rect class=\"bar\" x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"14\" fill=\"{BLUE}\"/>",
            scale.x(0.0),
            cy - 7.0,
            (scale.x(*cap) - scale.x(0.0)).max(1.0),
            scale.x(0.0),
            cy - 7.0,
            (scale.x(*charged) - scale.x(0.0)).max(0.0),
        );
    }
    out.push_str(&y_axis(
        &scale,
        axis_title,
        bars.iter().map(|b| b.0.as_str()),
    ));
    out.push_str(&x_axis(&scale, height, "zCDP ρ"));
    out.push_str("</svg></figure>");
    let _ = write!(
        out,
        "<div class=\"table\"><table><caption>The numbers in the chart above</caption><thead><tr><th scope=\"col\">project (dataset)</th><th scope=\"col\">ρ charged</th><th scope=\"col\">cap ρ</th><th scope=\"col\">share of cap</th></tr></thead><tbody>"
    );
    for (name, charged, cap) in &bars {
        let _ = write!(
            out,
            "<tr><th scope=\"row\">{}</th><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(name),
            num(*charged, 4),
            num(*cap, 4),
            if *cap > 0.0 {
                format!("{}%", num(100.0 * charged / cap, 1))
            } else {
                "—".into()
            }
        );
    }
    out.push_str("</tbody></table></div>");
    out
}

/// One released cell.
struct Point {
    row: String,
    released: Option<f64>,
    interval: Option<(f64, f64)>,
    truth: Option<f64>,
}

fn question(q: &Value, ids: &mut usize) -> String {
    let mut out = String::new();
    let _ = write!(out, "<section><h2>{}</h2>", escape(text(&q["title"])));
    let mut meta = vec![
        escape(text(&q["researcher"])),
        format!("project {}", escape(text(&q["project"]))),
        format!("dataset {}", escape(text(&q["dataset"]))),
        format!("query {}", q["query_id"]),
    ];
    if let Some(rho) = q["cost"]["rho"].as_f64() {
        meta.push(format!(
            "cost ρ {}{}",
            num(rho, 4),
            q["cost"]["epsilon"]
                .as_f64()
                .map(|e| format!(" (ε {})", num(e, 2)))
                .unwrap_or_default()
        ));
    }
    if let Some(left) = q["remaining_rho"].as_f64() {
        meta.push(format!("budget left on the dataset ρ {}", num(left, 4)));
    }
    let _ = write!(out, "<p class=\"meta\">{}</p>", meta.join(" · "));
    let approvers: Vec<String> = list(&q["approvals"])
        .filter(|a| a["approve"].as_bool() != Some(false))
        .map(|a| escape(text(&a["member"])))
        .collect();
    if !approvers.is_empty() {
        let _ = write!(
            out,
            "<p>Above the board's threshold: approved by {}.</p>",
            approvers.join(" and ")
        );
    }
    out.push_str(&partners(q));
    let events: Vec<String> = list(&q["events"]).map(|e| escape(text(e))).collect();
    if !events.is_empty() {
        let _ = write!(
            out,
            "<h3>During the round</h3><ul class=\"events\"><li>{}</li></ul>",
            events.join("</li><li>")
        );
    }
    let caveats: Vec<String> = list(&q["receipt"]["caveats"])
        .map(|c| escape(text(c)))
        .collect();
    if !caveats.is_empty() {
        let _ = write!(
            out,
            "<div class=\"callout note notes\" role=\"note\"><strong>Notes</strong><ul><li>{}</li></ul></div>",
            caveats.join("</li><li>")
        );
    }

    // One chart per panel, in the order the cells come.
    let mut panels: Vec<(String, Vec<Point>)> = Vec::new();
    for c in list(&q["cells"]) {
        let panel = text(&c["panel"]).to_string();
        let point = Point {
            row: c["row"]
                .as_str()
                .or(c["label"].as_str())
                .unwrap_or("")
                .to_string(),
            released: c["released"].as_f64(),
            interval: c["interval"][0].as_f64().zip(c["interval"][1].as_f64()),
            truth: c["truth"].as_f64(),
        };
        match panels.iter_mut().find(|(p, _)| *p == panel) {
            Some((_, points)) => points.push(point),
            None => panels.push((panel, vec![point])),
        }
    }
    for (panel, points) in &panels {
        out.push_str(&dot_plot(q, panel, points, ids));
    }
    out.push_str(&receipt(&q["receipt"]));
    out.push_str("</section>");
    out
}

/// Who contributed, who dropped out, and over whom the true values are computed.
fn partners(q: &Value) -> String {
    let p = &q["partners"];
    let contributed: Vec<&str> = list(&p["contributed"]).map(text).collect();
    let invited = list(&p["invited"]).count();
    let mut out = String::new();
    if contributed.is_empty() {
        let _ = write!(
            out,
            "<p class=\"partners\">Released from {} partners.</p>",
            q["survivors"]
        );
        return out;
    }
    let _ = write!(
        out,
        "<p class=\"partners\">Released from {} of {invited} partners: {}. True values are computed over these {} partners only.",
        contributed.len(),
        escape(&contributed.join(", ")),
        contributed.len()
    );
    if let Some(source) = p["source"].as_str() {
        let _ = write!(out, " How we know who: {}.", escape(source));
    }
    out.push_str("</p>");
    for d in list(&p["dropped"]) {
        let _ = write!(
            out,
            "<div class=\"callout dropout\" role=\"note\"><strong>Dropped out: {}</strong>: {}</div>",
            escape(text(&d["partner"])),
            escape(text(&d["what"]))
        );
    }
    out
}

/// A question's panel as one chart: the released values beside the true ones on the
/// values' own scale, and, on a scale of its own, each released value less the true one,
/// where noise and intervals too small to see beside the values are drawn to size.
fn dot_plot(q: &Value, panel: &str, points: &[Point], ids: &mut usize) -> String {
    *ids += 1;
    let id = format!("chart-{ids}");
    let value_axis = q["value_axis"].as_str().unwrap_or("value");
    let category_axis = q["category_axis"].as_str().unwrap_or("cell");
    let interval_label = q["interval_label"].as_str().unwrap_or("95% interval");
    let zero = q["statistic"].as_str() == Some("linear_regression");
    let differences: Vec<Point> = points
        .iter()
        .map(|p| match p.truth.filter(|_| p.released.is_some()) {
            Some(t) => Point {
                row: p.row.clone(),
                released: p.released.map(|v| v - t),
                interval: p.interval.map(|(lo, hi)| (lo - t, hi - t)),
                truth: Some(0.0),
            },
            None => Point {
                row: p.row.clone(),
                released: None,
                interval: None,
                truth: None,
            },
        })
        .collect();
    let left = left_margin(points.iter().map(|p| p.row.as_str()), category_axis);
    let room = WIDTH - left - GAP - RIGHT;
    let values = Scale::new(&extent(points), zero, left, room * 0.55);
    let errors = Scale::new(
        &extent(&differences),
        true,
        left + room * 0.55 + GAP,
        room * 0.45,
    );
    let height = PLOT_TOP + ROW * points.len() as f64 + BELOW;
    let title = if panel.is_empty() {
        format!("{value_axis}, by {category_axis}")
    } else {
        format!("{value_axis}, by {category_axis}: {panel}")
    };
    let with_interval = points.iter().filter(|p| p.interval.is_some()).count();
    let inside = points
        .iter()
        .filter(
            |p| matches!((p.interval, p.truth), (Some((lo, hi)), Some(t)) if lo <= t && t <= hi),
        )
        .count();
    let suppressed = points.iter().filter(|p| p.released.is_none()).count();
    let mut desc = format!(
        "Dot plot in two panels with one row per {category_axis} ({}). Left panel, horizontal axis: {value_axis}, from {} to {}; each row shows the released value as a blue dot{} and the true value as an orange tick. Right panel, horizontal axis: released less true value, from {} to {}, the true value at 0.",
        points
            .iter()
            .map(|p| p.row.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        num(values.lo, values.decimals),
        num(values.hi, values.decimals),
        if with_interval > 0 {
            format!(" with its {interval_label} as a blue bar")
        } else {
            String::new()
        },
        num(errors.lo, errors.decimals),
        num(errors.hi, errors.decimals),
    );
    if with_interval > 0 {
        let _ = write!(
            desc,
            " {inside} of {with_interval} true values lie inside their intervals."
        );
    } else {
        desc.push_str(" No intervals are stated.");
    }
    if suppressed > 0 {
        let _ = write!(desc, " {suppressed} cells were suppressed.");
    }
    desc.push_str(" The same numbers are in the table below.");

    let mut out = String::new();
    let _ = write!(
        out,
        "<figure class=\"chart\" id=\"{id}\"><figcaption>{}</figcaption>{}",
        escape(&title),
        svg_open(&id, height, &title, &desc)
    );
    let mut items = vec![(LegendMark::Dot, "released value".to_string())];
    if with_interval > 0 {
        items.push((LegendMark::Interval, interval_label.to_string()));
    } else {
        items.push((LegendMark::None, "(no intervals stated)".to_string()));
    }
    items.push((
        LegendMark::Tick,
        "true value (contributing partners)".to_string(),
    ));
    out.push_str(&legend(left, &items));
    for (scale, heading) in [(&values, "value"), (&errors, "released − true (noise)")] {
        let _ = write!(
            out,
            "<text class=\"panel-title\" x=\"{:.1}\" y=\"{:.1}\" font-style=\"italic\">{heading}</text>",
            scale.x0,
            PLOT_TOP - 8.0
        );
    }
    let (value_marks, widened_values) = marks(&values, points, true);
    let (error_marks, widened_errors) = marks(&errors, &differences, false);
    for (scale, drawn) in [(&values, value_marks), (&errors, error_marks)] {
        out.push_str(&grid(scale, height));
        out.push_str(&drawn);
    }
    out.push_str(&y_axis(
        &values,
        category_axis,
        points.iter().map(|p| p.row.as_str()),
    ));
    out.push_str(&x_axis(&values, height, value_axis));
    out.push_str(&x_axis(&errors, height, "released − true value"));
    out.push_str("</svg>");
    if widened_values || widened_errors {
        let _ = write!(
            out,
            "<p class=\"footnote\">Intervals narrower than {MIN_INTERVAL} px at their panel's scale are drawn {MIN_INTERVAL} px wide{}; the table has their exact ends.</p>",
            if widened_values && !widened_errors {
                " (in the left panel: the right panel draws them to scale)"
            } else {
                ""
            }
        );
    }
    out.push_str("</figure>");

    // Two more places than the ticks need (at least two, as the terminal prints).
    let places = values.decimals + 2;
    let _ = write!(
        out,
        "<div class=\"table\"><table><caption>The numbers in the chart above ({})</caption><thead><tr><th scope=\"col\">{}</th><th scope=\"col\">released</th><th scope=\"col\">{}</th><th scope=\"col\">true</th><th scope=\"col\">released − true</th>{}</tr></thead><tbody>",
        escape(&title),
        escape(category_axis),
        escape(interval_label),
        if with_interval > 0 {
            "<th scope=\"col\">true value inside interval</th>"
        } else {
            ""
        }
    );
    for (p, d) in points.iter().zip(&differences) {
        let inside = match (p.interval, p.truth) {
            _ if with_interval == 0 => "",
            (Some((lo, hi)), Some(t)) if lo <= t && t <= hi => "<td>yes</td>",
            (Some(_), Some(_)) => "<td>no</td>",
            _ => "<td>—</td>",
        };
        let _ = write!(
            out,
            "<tr><th scope=\"row\">{}</th><td>{}</td><td>{}</td><td>{}</td><td>{}</td>{inside}</tr>",
            escape(&p.row),
            p.released
                .map_or("suppressed".to_string(), |v| num(v, places)),
            p.interval
                .map_or("none stated".to_string(), |(lo, hi)| format!(
                    "[{}, {}]",
                    num(lo, places),
                    num(hi, places)
                )),
            p.truth.map_or("—".to_string(), |v| num(v, places)),
            d.released.map_or("—".to_string(), |v| num(v, places)),
        );
    }
    out.push_str("</tbody></table></div>");
    out
}

/// Every value a panel draws.
fn extent(points: &[Point]) -> Vec<f64> {
    points
        .iter()
        .flat_map(|p| {
            [
                p.released,
                p.truth,
                p.interval.map(|i| i.0),
                p.interval.map(|i| i.1),
            ]
        })
        .flatten()
        .collect()
}

/// One panel's marks, row by row: interval, released dot, true tick. Also whether an
/// interval had to be widened to be seen.
fn marks(scale: &Scale, points: &[Point], say_suppressed: bool) -> (String, bool) {
    let mut out = String::new();
    let plot_bottom = PLOT_TOP + ROW * points.len() as f64;
    if scale.lo < 0.0 && scale.hi > 0.0 {
        let _ = write!(
            out,
            "<line class=\"zero\" x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"{PLOT_TOP}\" y2=\"{plot_bottom:.1}\" stroke=\"#374151\" stroke-dasharray=\"4 3\"/>",
            x = scale.x(0.0)
        );
    }
    let mut widened = false;
    for (i, p) in points.iter().enumerate() {
        let cy = PLOT_TOP + ROW * i as f64 + ROW / 2.0;
        out.push_str("<g class=\"row\">");
        if let Some((lo, hi)) = p.interval {
            let (mut x1, mut x2) = (scale.x(lo.min(hi)), scale.x(lo.max(hi)));
            if x2 - x1 < MIN_INTERVAL {
                widened = true;
                let mid = (x1 + x2) / 2.0;
                (x1, x2) = (mid - MIN_INTERVAL / 2.0, mid + MIN_INTERVAL / 2.0);
            }
            let _ = write!(
                out,
                "<rect class=\"interval\" x=\"{x1:.2}\" y=\"{:.1}\" width=\"{:.2}\" height=\"4\" fill=\"{BLUE}\" fill-opacity=\"0.6\"/>",
                cy - 2.0,
                x2 - x1
            );
            for x in [x1, x2 - 1.5] {
                let _ = write!(
                    out,
                    "<rect class=\"interval-cap\" x=\"{x:.2}\" y=\"{:.1}\" width=\"1.5\" height=\"12\" fill=\"{BLUE}\"/>",
                    cy - 6.0
                );
            }
        }
        match p.released {
            Some(v) => {
                let _ = write!(
                    out,
                    "<circle class=\"released\" cx=\"{:.2}\" cy=\"{cy:.1}\" r=\"4.5\" fill=\"{BLUE}\" stroke=\"#fff\" stroke-width=\"1\"/>",
                    scale.x(v)
                );
            }
            None if say_suppressed => {
                let _ = write!(
                    out,
                    "<text class=\"suppressed\" x=\"{:.1}\" y=\"{:.1}\" font-style=\"italic\" fill=\"#555\">suppressed</text>",
                    scale.x0 + 4.0,
                    cy + 4.0
                );
            }
            None => {}
        }
        if let Some(t) = p.truth {
            let _ = write!(
                out,
                "<rect class=\"truth\" x=\"{:.2}\" y=\"{:.1}\" width=\"3\" height=\"16\" fill=\"{TRUE}\"/>",
                scale.x(t) - 1.5,
                cy - 8.0
            );
        }
        out.push_str("</g>");
    }
    (out, widened)
}

/// The privacy receipt, folded (no script needed to open it).
fn receipt(r: &Value) -> String {
    if !r.is_object() {
        return String::new();
    }
    let mut out = String::from("<details><summary>Privacy receipt</summary><dl>");
    let mut item = |name: &str, value: String| {
        if !value.is_empty() {
            let _ = write!(out, "<dt>{name}</dt><dd>{}</dd>", escape(&value));
        }
    };
    item("privacy unit", text(&r["privacy_unit"]).to_string());
    item(
        "partners in the sum",
        r["survivors"]
            .as_u64()
            .map(|s| s.to_string())
            .unwrap_or_default(),
    );
    item(
        "ρ charged",
        r["rho"].as_f64().map(|v| num(v, 4)).unwrap_or_default(),
    );
    item(
        "ε",
        r["epsilon"].as_f64().map(|v| num(v, 3)).unwrap_or_default(),
    );
    item(
        "as (ε, δ)",
        match (r["approx_dp"][0].as_f64(), r["approx_dp"][1].as_f64()) {
            (Some(e), Some(d)) => format!("({}, {d:e})", num(e, 3)),
            _ => String::new(),
        },
    );
    item(
        "interval confidence",
        r["confidence"]
            .as_f64()
            .map(|c| format!("{}%", num(c * 100.0, 0)))
            .unwrap_or_default(),
    );
    for (name, key) in [
        ("mechanisms", "mechanisms"),
        ("bounds", "bounds"),
        ("rules", "rules"),
    ] {
        item(name, list(&r[key]).map(text).collect::<Vec<_>>().join("; "));
    }
    out.push_str("</dl></details>");
    out
}

/// A linear scale from `lo` to `hi` (nice round ends) onto `x0`..`x0 + width`.
struct Scale {
    lo: f64,
    hi: f64,
    step: f64,
    decimals: usize,
    x0: f64,
    width: f64,
}

impl Scale {
    /// The scale of one chart: the extent of its own values, padded and rounded out to
    /// ticks, with 0 when `zero` or when the values sit near it.
    fn new(values: &[f64], zero: bool, x0: f64, width: f64) -> Self {
        let finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
        let (mut lo, mut hi) = finite
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
                (a.min(v), b.max(v))
            });
        if finite.is_empty() {
            (lo, hi) = (0.0, 1.0);
        }
        if zero || (lo >= 0.0 && lo <= 0.25 * hi) {
            lo = lo.min(0.0);
            hi = hi.max(0.0);
        }
        let span = hi - lo;
        if span <= f64::EPSILON * hi.abs().max(1.0) {
            let pad = if hi == 0.0 { 1.0 } else { hi.abs() * 0.1 };
            (lo, hi) = (lo - pad, hi + pad);
        } else {
            if lo != 0.0 {
                lo -= span * 0.04;
            }
            if hi != 0.0 {
                hi += span * 0.04;
            }
        }
        // About one tick per 80 px.
        let step = nice_step((hi - lo) / (width / 80.0).clamp(2.0, 6.0));
        let lo = (lo / step).floor() * step;
        let hi = (hi / step).ceil() * step;
        let decimals = if step >= 1.0 {
            0
        } else {
            (-step.log10().floor()) as usize
        };
        Scale {
            lo,
            hi,
            step,
            decimals,
            x0,
            width,
        }
    }

    fn x(&self, v: f64) -> f64 {
        self.x0 + self.width * (v - self.lo) / (self.hi - self.lo)
    }

    fn ticks(&self) -> Vec<f64> {
        let n = ((self.hi - self.lo) / self.step).round() as usize;
        (0..=n)
            .map(|i| self.lo + self.step * i as f64)
            .map(|t| if t.abs() < self.step * 1e-9 { 0.0 } else { t })
            .collect()
    }
}

/// 1, 2 or 5 times a power of ten, at least `raw`.
fn nice_step(raw: f64) -> f64 {
    let magnitude = 10f64.powf(raw.log10().floor());
    let r = raw / magnitude;
    let m = if r <= 1.0 {
        1.0
    } else if r <= 2.0 {
        2.0
    } else if r <= 5.0 {
        5.0
    } else {
        10.0
    };
    m * magnitude
}

/// Room for the row labels (about 7 px a character at 12 px) and the axis title over them
/// (bold: about 8 px a character).
fn left_margin<'a>(labels: impl Iterator<Item = &'a str>, title: &str) -> f64 {
    let longest = labels.map(|l| l.chars().count()).max().unwrap_or(0);
    let width = (7.0 * longest as f64).max(8.0 * title.chars().count() as f64);
    (16.0 + width).clamp(90.0, 320.0)
}

fn svg_open(id: &str, height: f64, title: &str, desc: &str) -> String {
    format!(
        "<svg class=\"plot\" width=\"{WIDTH}\" height=\"{height:.0}\" viewBox=\"0 0 {WIDTH} {height:.0}\" role=\"img\" aria-labelledby=\"{id}-title {id}-desc\"><title id=\"{id}-title\">{}</title><desc id=\"{id}-desc\">{}</desc>",
        escape(title),
        escape(desc)
    )
}

enum LegendMark {
    Dot,
    Interval,
    Tick,
    Bar(&'static str),
    Outline,
    None,
}

fn legend(x0: f64, items: &[(LegendMark, String)]) -> String {
    let mut out = String::from("<g class=\"legend\" aria-hidden=\"true\">");
    // Aligned with the plot area, or moved left as far as it must to fit.
    let needed: f64 = items
        .iter()
        .map(|(_, label)| 46.0 + 6.6 * label.chars().count() as f64)
        .sum();
    let (mut x, y) = (x0.min(WIDTH - needed).max(8.0), 14.0);
    for (mark, label) in items {
        let drawn = match mark {
            LegendMark::Dot => format!(
                "<circle cx=\"{:.1}\" cy=\"{y}\" r=\"5\" fill=\"{BLUE}\"/>",
                x + 8.0
            ),
            LegendMark::Interval => format!(
                "<rect x=\"{x:.1}\" y=\"{}\" width=\"18\" height=\"4\" fill=\"{BLUE}\" fill-opacity=\"0.6\"/><rect x=\"{x:.1}\" y=\"{}\" width=\"1.5\" height=\"12\" fill=\"{BLUE}\"/><rect x=\"{:.1}\" y=\"{}\" width=\"1.5\" height=\"12\" fill=\"{BLUE}\"/>",
                y - 2.0,
                y - 6.0,
                x + 16.5,
                y - 6.0
            ),
            LegendMark::Tick => format!(
                "<rect x=\"{:.1}\" y=\"{}\" width=\"3\" height=\"16\" fill=\"{TRUE}\"/>",
                x + 6.5,
                y - 8.0
            ),
            LegendMark::Bar(colour) => format!(
                "<rect x=\"{x:.1}\" y=\"{}\" width=\"18\" height=\"12\" fill=\"{colour}\"/>",
                y - 6.0
            ),
            LegendMark::Outline => format!(
                "<rect x=\"{x:.1}\" y=\"{}\" width=\"18\" height=\"12\" fill=\"#f3f4f6\" stroke=\"#6b7280\"/>",
                y - 6.0
            ),
            LegendMark::None => String::new(),
        };
        let text_x = if matches!(mark, LegendMark::None) {
            x
        } else {
            x + 24.0
        };
        let _ = write!(
            out,
            "<g class=\"legend-item\">{drawn}<text x=\"{text_x:.1}\" y=\"{}\">{}</text></g>",
            y + 4.0,
            escape(label)
        );
        x = text_x + 6.6 * label.chars().count() as f64 + 22.0;
    }
    out.push_str("</g>");
    out
}

/// Light vertical lines at the ticks, behind the marks.
fn grid(scale: &Scale, height: f64) -> String {
    let mut out = String::from("<g class=\"grid\" aria-hidden=\"true\">");
    for t in scale.ticks() {
        let _ = write!(
            out,
            "<line x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"{PLOT_TOP}\" y2=\"{:.1}\" stroke=\"#e5e7eb\"/>",
            height - BELOW,
            x = scale.x(t)
        );
    }
    out.push_str("</g>");
    out
}

fn x_axis(scale: &Scale, height: f64, title: &str) -> String {
    let y = height - BELOW;
    let mut out = format!(
        "<g class=\"axis x-axis\" aria-hidden=\"true\"><line class=\"domain\" x1=\"{:.1}\" x2=\"{:.1}\" y1=\"{y}\" y2=\"{y}\" stroke=\"#374151\"/>",
        scale.x0,
        scale.x0 + scale.width
    );
    for t in scale.ticks() {
        let _ = write!(
            out,
            "<line class=\"tick\" x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"{y}\" y2=\"{:.1}\" stroke=\"#374151\"/><text class=\"tick-label\" x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            y + 5.0,
            y + 18.0,
            num(t, scale.decimals),
            x = scale.x(t)
        );
    }
    let _ = write!(
        out,
        "<text class=\"axis-title\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-weight=\"600\">{}</text></g>",
        scale.x0 + scale.width / 2.0,
        y + 38.0,
        escape(title)
    );
    out
}

fn y_axis<'a>(scale: &Scale, title: &str, rows: impl Iterator<Item = &'a str>) -> String {
    let rows: Vec<&str> = rows.collect();
    let bottom = PLOT_TOP + ROW * rows.len() as f64;
    let mut out = format!(
        "<g class=\"axis y-axis\" aria-hidden=\"true\"><line class=\"domain\" x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"{PLOT_TOP}\" y2=\"{bottom:.1}\" stroke=\"#374151\"/>",
        x = scale.x0
    );
    for (i, row) in rows.iter().enumerate() {
        let _ = write!(
            out,
            "<text class=\"tick-label\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            scale.x0 - 8.0,
            PLOT_TOP + ROW * i as f64 + ROW / 2.0 + 4.0,
            escape(row)
        );
    }
    let _ = write!(
        out,
        "<text class=\"axis-title\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" font-weight=\"600\">{}</text></g>",
        scale.x0 - 8.0,
        PLOT_TOP - 8.0,
        escape(title)
    );
    out
}

/// `v` with `decimals` places, thousands grouped and a true minus sign.
fn num(v: f64, decimals: usize) -> String {
    let s = format!("{:.*}", decimals, v.abs());
    let (int, frac) = match s.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (s.as_str(), None),
    };
    let mut grouped = String::new();
    for (i, ch) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(ch);
    }
    if let Some(f) = frac {
        grouped.push('.');
        grouped.push_str(f);
    }
    let zero = s.chars().all(|c| c == '0' || c == '.');
    if v < 0.0 && !zero {
        format!("−{grouped}")
    } else {
        grouped
    }
}

fn list(v: &Value) -> impl Iterator<Item = &Value> {
    v.as_array().into_iter().flatten()
}

fn text(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
