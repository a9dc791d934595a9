//! The Liverpool demo's HTML report (`examples/liverpool/report.rs`), from a fixed report
//! JSON (no coordinator): what the page says, and how headless Chromium lays it out. The
//! browser test saves a screenshot to `target/report.png` (and the page beside it as
//! `target/report.html`) for people to look at, then
//! loads a copy of the page with a small script that writes the measured boxes of the
//! intervals, axes and legends into a DOM attribute, read back with `--dump-dom`.
//!
//! Needs Debian's `chromium` (`apt-get install -y chromium chromium-driver`); with
//! `CIVIC_SKIP_BROWSER=1` the browser test passes without it, saying so.

#[path = "../examples/liverpool/report.rs"]
mod report;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const MEAN_CAVEAT: &str =
    "mean intervals combine the sum's and the count's intervals: confidence at least 90%";
const REGRESSION_CAVEAT: &str = "regression coefficients are post-processed from noisy sufficient statistics; no intervals are stated";
const DROPOUT: &str = "the demo stopped its agent mid-round, after it joined and before it sent its masked input; the round went on without it";
const MODEL_CAVEAT: &str =
    "residents with a missing feature or outcome are left out (complete cases)";
const REFUSAL: &str = "the project falls-prevention has ρ 0.0120 left on falls-housing";

/// A report as the demo writes it: a histogram in two panels (one cell suppressed, one
/// interval far under a pixel at its scale), a mean a partner dropped out of, and a
/// regression without intervals.
fn fixture() -> Value {
    let gp = ["gp-north", "gp-central", "gp-south", "gp-east", "gp-west"];
    let falls = ["acute-trust", "community-mh-trust", "council-asc"];
    json!({
        "seed": 2026,
        "residents": 200000,
        "budgets": [
            { "dataset": "diabetes", "projects": [{ "project": "diabetes-care", "cap_rho": 0.6, "charged_rho": 0.13, "reserved_rho": 0.0 }] },
            { "dataset": "falls-housing", "projects": [{ "project": "falls-prevention", "cap_rho": 0.45, "charged_rho": 0.438, "reserved_rho": 0.0 }] }
        ],
        "questions": [
            {
                "query_id": 1, "title": "Diabetes prevalence by deprivation decile", "researcher": "dr-amara",
                "project": "diabetes-care", "dataset": "diabetes", "statistic": "histogram",
                "value_axis": "registered adults (count)", "category_axis": "deprivation decile",
                "interval_label": "95% interval", "cost": { "rho": 0.05, "epsilon": null }, "remaining_rho": 0.87,
                "survivors": 5, "approvals": [], "events": [],
                "partners": { "invited": gp, "contributed": gp, "dropped": [], "source": "each partner's agent journal" },
                "receipt": { "survivors": 5, "confidence": 0.95, "caveats": [], "mechanisms": ["gaussian"], "rho": 0.05 },
                "cells": [
                    { "label": "decile 1, no diabetes", "panel": "no diabetes", "row": "decile 1 (most deprived)", "released": 15021.3, "interval": [14987.1, 15055.5], "truth": 15010.0 },
                    { "label": "decile 1, with diabetes", "panel": "with diabetes", "row": "decile 1 (most deprived)", "released": 1502.2, "interval": [1468.0, 1536.4], "truth": 1490.0 },
                    { "label": "decile 2, no diabetes", "panel": "no diabetes", "row": "decile 2", "released": 2.0, "interval": [1.9, 2.1], "truth": 2.0 },
                    { "label": "decile 2, with diabetes", "panel": "with diabetes", "row": "decile 2", "released": null, "interval": null, "truth": 3.0 },
                    { "label": "decile 3, no diabetes", "panel": "no diabetes", "row": "decile 3", "released": 16250.9, "interval": [16216.7, 16285.1], "truth": 16260.0 },
                    { "label": "decile 3, with diabetes", "panel": "with diabetes", "row": "decile 3", "released": 1311.4, "interval": [1277.2, 1345.6], "truth": 1330.0 }
                ]
            },
            {
                "query_id": 2, "title": "Mean HbA1c (mmol/mol) among people with diabetes, by age band", "researcher": "dr-amara",
                "project": "diabetes-care", "dataset": "diabetes", "statistic": "mean",
                "value_axis": "mean HbA1c (mmol/mol)", "category_axis": "age band at the latest reading",
                "interval_label": "interval (confidence ≥ 90%)", "cost": { "rho": 0.08 }, "remaining_rho": 0.79,
                "survivors": 4, "approvals": [],
                "events": ["gp-east's agent stops mid-round (killed after joining); the round goes on without it"],
                "partners": {
                    "invited": gp, "contributed": ["gp-north", "gp-central", "gp-south", "gp-west"],
                    "dropped": [{ "partner": "gp-east", "what": DROPOUT }],
                    "source": "each partner's agent journal records whether it sent its masked input to round 2"
                },
                "receipt": { "survivors": 4, "confidence": 0.95, "caveats": [MEAN_CAVEAT] },
                "cells": [
                    { "label": "age 18-39", "released": 55.8, "interval": [53.1, 58.6], "truth": 56.2 },
                    { "label": "age 40-59", "released": 61.4, "interval": [60.2, 62.7], "truth": 61.0 },
                    { "label": "age 60-79", "released": 63.0, "interval": [62.1, 63.9], "truth": 63.3 },
                    { "label": "age 80+", "released": 66.9, "interval": [64.0, 69.9], "truth": 65.8 }
                ]
            },
            {
                "query_id": 3, "title": "Linear model of falls admissions (over-65s)", "researcher": "dr-ben",
                "project": "falls-prevention", "dataset": "falls-housing", "statistic": "linear_regression",
                "value_axis": "coefficient (falls admissions a year)", "category_axis": "term",
                "interval_label": "95% interval", "cost": { "rho": 0.32, "epsilon": 0.8 }, "remaining_rho": 0.012,
                "survivors": 3,
                "approvals": [{ "member": "chair", "approve": true }, { "member": "resident-member", "approve": true }],
                "events": ["approved by the chair, signing the query's fingerprint"],
                "partners": { "invited": falls, "contributed": falls, "dropped": [] },
                "receipt": { "survivors": 3, "confidence": 0.95, "caveats": [REGRESSION_CAVEAT] },
                "cells": [
                    { "label": "β intercept", "released": 0.061, "interval": null, "truth": 0.058 },
                    { "label": "β decades over 65", "released": 0.049, "interval": null, "truth": 0.052 },
                    { "label": "β lives alone", "released": 0.031, "interval": null, "truth": 0.027 },
                    { "label": "β home adaptations", "released": -0.012, "interval": null, "truth": -0.009 }
                ]
            }
        ],
        "over_budget": { "status": 409, "refusal": { "code": "budget.exhausted", "detail": REFUSAL } },
        "audit": { "entries": 42, "verified": true },
        "antibiotics": {
            "iterations": 5, "non_private_iterations": 25,
            "auc": { "private": 0.6846, "non_private": 0.6853, "held_out": 20000 },
            "coefficients": [
                { "name": "beta(intercept) for failed", "private": -1.9655, "interval": [-3.1, -0.8], "non_private": -2.0041 },
                { "name": "beta(antibiotic=amoxicillin)", "private": 0.8481, "interval": null, "non_private": 0.9246 }
            ],
            "receipt": { "caveats": [MODEL_CAVEAT] }
        }
    })
}

/// The budget chart and one chart per panel: 1 + 2 + 1 + 1.
const CHARTS: usize = 5;
/// Intervals drawn: each of the fixture's 5 + 4 cells with one, in both panels of its chart
/// (the values, and the released less the true value).
const INTERVALS: usize = 2 * (5 + 4);

#[test]
fn the_page_is_static_and_says_what_the_terminal_says() {
    let page = report::html(&fixture());
    for external in [
        "<script", "src=", "href=", "<link", "@import", "url(", "http:", "https:",
    ] {
        assert!(
            !page.contains(external),
            "the report must be self-contained: found {external:?}"
        );
    }
    for said in [
        MEAN_CAVEAT,
        REGRESSION_CAVEAT,
        REFUSAL,
        "Dropped out: gp-east",
        "gp-east</strong> in query 2",
        "Released from 4 of 5 partners: gp-north, gp-central, gp-south, gp-west. True values are computed over these 4 partners only.",
        "gp-east's agent stops mid-round",
    ] {
        assert!(page.contains(said), "the report does not say {said:?}");
    }
    assert_eq!(page.matches("<figure class=\"chart\"").count(), CHARTS);
    assert_eq!(
        page.matches("<table>").count(),
        CHARTS + 1,
        "a table per chart, and the model's"
    );
    // The trained model beside the non-private fit, with its held-out AUC.
    for said in [
        "The antibiotic-choice model (a training job)",
        "the private model's AUC is 0.6846",
        "<th scope=\"row\">beta(antibiotic=amoxicillin)</th><td>0.8481</td><td>not stated</td><td>0.9246</td>",
        "−3.1000 to −0.8000",
        MODEL_CAVEAT,
    ] {
        assert!(page.contains(said), "the report does not say {said:?}");
    }
    assert_eq!(page.matches("role=\"img\"").count(), CHARTS);
    assert_eq!(page.matches("<desc id=").count(), CHARTS);
    // The interval on a sub-pixel scale is widened, and the page says so.
    assert!(page.contains("drawn 2 px wide"));
    // The regression has no intervals: its table says none is stated.
    assert_eq!(page.matches("none stated").count(), 4 + 1);
    assert!(page.contains(">suppressed<"));
}

/// What a browser run found: Chromium's path, or why there is none.
fn chromium() -> Option<PathBuf> {
    for name in ["chromium", "chromium-browser"] {
        let found = Command::new(name)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if found {
            return Some(PathBuf::from(name));
        }
    }
    None
}

/// Runs `browser` headless on `page` with `args`; its standard output, within 90 s.
fn headless(browser: &Path, profile: &Path, args: &[&str], page: &Path) -> String {
    let mut child = Command::new(browser)
        .args([
            "--headless",
            "--disable-gpu",
            "--no-sandbox",
            "--hide-scrollbars",
            "--window-size=1200,3000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(format!("file://{}", page.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromium");
    let mut stdout = child.stdout.take().expect("chromium's stdout");
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        let _ = stdout.read_to_string(&mut out);
        out
    });
    let deadline = Instant::now() + Duration::from_secs(90);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for chromium") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish within 90 s: {args:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "chromium {args:?} failed: {status}");
    reader.join().expect("chromium's output")
}

/// Measures, in the page as laid out, each chart's intervals, axes, tick labels, legend,
/// text alternative and table, into the body's `data-geometry` attribute.
const MEASURE: &str = r#"<script>
(function () {
  function box(e) {
    var r = e.getBoundingClientRect();
    return { x: r.left, y: r.top, w: r.width, h: r.height, text: e.textContent };
  }
  function all(root, selector) { return [].map.call(root.querySelectorAll(selector), box); }
  var charts = [].map.call(document.querySelectorAll('figure.chart'), function (f) {
    var svg = f.querySelector('svg');
    var next = f.nextElementSibling;
    var table = next && (next.tagName === 'TABLE' ? next : next.querySelector('table'));
    return {
      id: f.id,
      svg: box(svg),
      labelledby: svg.getAttribute('aria-labelledby') || '',
      title: (svg.querySelector('title') || {}).textContent || '',
      desc: (svg.querySelector('desc') || {}).textContent || '',
      intervals: all(f, '.interval'),
      xAxes: [].map.call(f.querySelectorAll('.x-axis'), function (a) {
        return { box: box(a), domain: all(a, '.domain'), ticks: all(a, '.tick-label') };
      }),
      yAxis: all(f, '.y-axis'),
      yTicks: all(f, '.y-axis .tick-label'),
      axisTitles: all(f, '.axis-title'),
      legend: all(f, '.legend'),
      legendItems: all(f, '.legend-item'),
      texts: all(svg, 'text'),
      tableRows: table ? table.querySelectorAll('tbody tr').length : -1
    };
  });
  document.body.setAttribute('data-geometry', JSON.stringify({
    charts: charts,
    scrollWidth: document.documentElement.scrollWidth,
    viewport: window.innerWidth
  }));
})();
</script>"#;

#[test]
fn chromium_draws_axes_intervals_and_legends() {
    let Some(browser) = chromium() else {
        if std::env::var("CIVIC_SKIP_BROWSER").as_deref() == Ok("1") {
            eprintln!("CIVIC_SKIP_BROWSER=1: the report was not rendered in a browser");
            return;
        }
        panic!(
            "headless Chromium is needed to check the report's layout and was not found: install \
             Debian's package with `apt-get install -y chromium chromium-driver`, or set \
             CIVIC_SKIP_BROWSER=1 to skip this test"
        );
    };
    let page = report::html(&fixture());
    let dir = tempfile::tempdir().expect("a temporary directory");
    let html = dir.path().join("report.html");
    std::fs::write(&html, &page).expect("write the report");

    // A picture for people: target/report.png.
    let target = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("the target directory");
    let png = target.join("report.png");
    std::fs::write(target.join("report.html"), &page).expect("write target/report.html");
    let _ = std::fs::remove_file(&png);
    headless(
        &browser,
        &dir.path().join("profile"),
        &[&format!("--screenshot={}", png.display())],
        &html,
    );
    let picture = std::fs::read(&png).expect("chromium wrote the screenshot");
    assert!(
        picture.starts_with(b"\x89PNG\r\n\x1a\n") && picture.len() > 10_000,
        "{} is not a screenshot of the page",
        png.display()
    );
    eprintln!("screenshot: {}", png.display());

    // The same page with the measuring script, laid out and dumped.
    let measured = dir.path().join("measured.html");
    std::fs::write(
        &measured,
        page.replace("</body>", &format!("{MEASURE}</body>")),
    )
    .expect("write the measured copy");
    let dom = headless(
        &browser,
        &dir.path().join("profile"),
        &["--dump-dom"],
        &measured,
    );
    let geometry = attribute(&dom, "data-geometry")
        .unwrap_or_else(|| panic!("the measuring script left no data-geometry: {dom:.2000}"));
    let geometry: Value = serde_json::from_str(&geometry).expect("the measurements are JSON");

    let charts = geometry["charts"].as_array().expect("charts measured");
    assert_eq!(charts.len(), CHARTS, "every chart is in the page");
    let mut intervals = 0;
    for c in charts {
        let id = c["id"].as_str().unwrap_or("?");
        let svg = &c["svg"];
        assert!(
            width(svg) > 0.0 && height(svg) > 0.0,
            "{id}: no chart drawn"
        );
        let (left, right) = (num(&svg["x"]), num(&svg["x"]) + width(svg));

        // The axes: each panel's horizontal scale with labelled ticks, and labelled rows.
        let axes = c["xAxes"].as_array().expect("x axes");
        assert!(!axes.is_empty(), "{id}: no x axis");
        for axis in axes {
            assert!(
                width(&axis["box"]) > 0.0 && height(&axis["box"]) > 0.0,
                "{id}: an x axis has no size"
            );
            assert!(
                width(one(axis, "domain", id)) > 100.0,
                "{id}: an x axis line is too short to read"
            );
            let ticks = axis["ticks"].as_array().expect("x ticks");
            assert!(
                ticks.len() >= 2,
                "{id}: an x axis has {} tick labels",
                ticks.len()
            );
            for t in ticks {
                assert!(
                    width(t) > 0.0 && !t["text"].as_str().unwrap_or("").is_empty(),
                    "{id}: an empty x tick label {t}"
                );
                assert!(
                    num(&t["x"]) >= left - 1.0 && num(&t["x"]) + width(t) <= right + 1.0,
                    "{id}: an x tick label outside the chart {t}"
                );
            }
            // Neighbouring tick labels do not overlap.
            for pair in ticks.windows(2) {
                assert!(
                    num(&pair[0]["x"]) + width(&pair[0]) < num(&pair[1]["x"]),
                    "{id}: tick labels overlap: {} and {}",
                    pair[0],
                    pair[1]
                );
            }
        }
        assert!(
            width(one(c, "yAxis", id)) > 0.0,
            "{id}: the y axis has no size"
        );
        let rows = c["yTicks"].as_array().expect("y ticks");
        assert!(!rows.is_empty(), "{id}: no row labels");
        for r in rows {
            assert!(width(r) > 0.0, "{id}: an empty row label {r}");
            assert!(num(&r["x"]) >= left - 1.0, "{id}: a row label cut off {r}");
        }
        let titles = c["axisTitles"].as_array().expect("axis titles");
        assert_eq!(
            titles.len(),
            axes.len() + 1,
            "{id}: every axis needs a title"
        );
        for t in titles {
            assert!(width(t) > 0.0, "{id}: an empty axis title {t}");
        }

        // No text runs out of the chart (where the SVG would cut it off).
        for t in c["texts"].as_array().expect("texts") {
            assert!(
                num(&t["x"]) >= left - 1.0 && num(&t["x"]) + width(t) <= right + 1.0,
                "{id}: a text outside the chart: {t} in [{left}, {right}]"
            );
        }

        // The legend, whole inside the chart.
        let legend = one(c, "legend", id);
        assert!(
            width(legend) > 0.0 && height(legend) > 0.0,
            "{id}: no legend"
        );
        assert!(
            num(&legend["x"]) >= left - 1.0 && num(&legend["x"]) + width(legend) <= right + 1.0,
            "{id}: the legend runs out of the chart: {legend} in [{left}, {right}]"
        );
        assert!(
            c["legendItems"].as_array().map_or(0, Vec::len) >= 2,
            "{id}: the legend has too few entries"
        );

        // Intervals: visible, and inside the chart.
        for i in c["intervals"].as_array().expect("intervals") {
            intervals += 1;
            assert!(
                width(i) >= 2.0 && height(i) >= 2.0,
                "{id}: an interval drawn {} × {} px",
                width(i),
                height(i)
            );
            assert!(
                num(&i["x"]) >= left && num(&i["x"]) + width(i) <= right,
                "{id}: an interval outside the chart {i}"
            );
        }

        // The text alternative and the table with the same numbers.
        assert!(
            c["labelledby"].as_str().unwrap_or("").contains("-desc"),
            "{id}: the chart is not labelled by its description"
        );
        assert!(
            !c["title"].as_str().unwrap_or("").is_empty(),
            "{id}: no title"
        );
        assert!(
            c["desc"].as_str().unwrap_or("").len() > 40,
            "{id}: no text alternative"
        );
        assert_eq!(
            c["tableRows"].as_i64(),
            Some(rows.len() as i64),
            "{id}: the table under the chart must have a row per chart row"
        );
    }
    assert_eq!(intervals, INTERVALS, "every stated interval is drawn");
    assert!(
        geometry["scrollWidth"].as_f64() <= geometry["viewport"].as_f64(),
        "the page scrolls sideways at 1200 px: {geometry:.200}"
    );

    // The notes and the dropout, in the page as the browser has it.
    for said in [
        MEAN_CAVEAT,
        REGRESSION_CAVEAT,
        DROPOUT,
        "Dropped out: gp-east",
    ] {
        assert!(
            dom.contains(said),
            "the rendered page does not say {said:?}"
        );
    }
}

fn one<'a>(chart: &'a Value, key: &str, id: &str) -> &'a Value {
    let found = chart[key].as_array().map_or(0, Vec::len);
    assert_eq!(found, 1, "{id}: {found} elements for {key}");
    &chart[key][0]
}

fn num(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

fn width(v: &Value) -> f64 {
    num(&v["w"])
}

fn height(v: &Value) -> f64 {
    num(&v["h"])
}

/// The value of `name="..."` in serialised HTML, unescaped.
fn attribute(dom: &str, name: &str) -> Option<String> {
    let start = dom.find(&format!("{name}=\""))? + name.len() + 2;
    let end = start + dom[start..].find('"')?;
    Some(
        dom[start..end]
            .replace("&quot;", "\"")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&nbsp;", "\u{a0}")
            .replace("&amp;", "&"),
    )
}
