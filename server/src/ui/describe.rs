//! Plain-language descriptions of queries, costs and releases, for people who do not read
//! JSON: residents on the public register, board members deciding on an approval. Pure.

use civic_api::query::{CostView, ReleaseView, StatisticAccuracy};
use civic_policies::disclosure::DisclosureProfile;
use civic_policies::query::{CompareOp, Filter, Statistic};
use civic_policies::{DatasetPolicy, Query};

/// What a query asks, as a sentence: "How many people, among those with age at least 65,
/// broken down by sex?".
pub fn question(query: &Query) -> String {
    let what = match &query.statistic {
        Statistic::Count => "How many people".to_string(),
        Statistic::Sum { column } => format!("The total of {}", named(column)),
        Statistic::Mean { column } => format!("The average {}", named(column)),
        Statistic::Histogram { columns } => format!(
            "How many people by {}",
            list(&columns.iter().map(|c| named(c)).collect::<Vec<_>>())
        ),
        Statistic::Quantiles {
            column,
            probabilities,
        } => format!(
            "The {} of {}",
            list(
                &probabilities
                    .iter()
                    .map(|&p| percentile(p))
                    .collect::<Vec<_>>()
            ),
            named(column)
        ),
        Statistic::LinearRegression { features, target } => format!(
            "How {} changes with {} (a linear model)",
            words(target),
            list(&features.iter().map(|c| words(c)).collect::<Vec<_>>())
        ),
        Statistic::LogisticRegression {
            features,
            outcome,
            iterations,
        } => format!(
            "How the chance of {} changes with {} (a logistic model trained in {iterations} rounds)",
            words(outcome),
            list(&features.iter().map(|c| words(c)).collect::<Vec<_>>())
        ),
        Statistic::DpSgd {
            trainer,
            parameters,
            iterations,
            ..
        } => format!(
            "What model of {parameters} parameters do the partners' \"{trainer}\" trainers learn \
             in {iterations} rounds of DP-SGD"
        ),
    };
    let among = query
        .filter
        .as_ref()
        .map(|f| format!(", among people for whom {}", filter(f)))
        .unwrap_or_default();
    let by = match query.group_by.as_slice() {
        [] => String::new(),
        cols => format!(
            ", broken down by {}",
            list(&cols.iter().map(|c| named(c)).collect::<Vec<_>>())
        ),
    };
    format!("{what}{among}{by}?")
}

/// A filter in words: "age is at least 65 and fell is yes".
pub fn filter(f: &Filter) -> String {
    match f {
        Filter::Compare { column, op, value } => {
            let op = match op {
                CompareOp::Eq => "is",
                CompareOp::Ne => "is not",
                CompareOp::Lt => "is below",
                CompareOp::Le => "is at most",
                CompareOp::Gt => "is above",
                CompareOp::Ge => "is at least",
            };
            let value = match value.to_string().as_str() {
                "true" => "yes".to_string(),
                "false" => "no".to_string(),
                v => v.trim_matches('"').to_string(),
            };
            format!("{} {op} {value}", named(column))
        }
        Filter::And(parts) => join(parts, " and "),
        Filter::Or(parts) => one_of(parts).unwrap_or_else(|| join(parts, " or ")),
        Filter::Not(inner) => format!("not ({})", filter(inner)),
    }
}

/// `a = x or a = y or a = z` as "a is x, y or z".
fn one_of(parts: &[Filter]) -> Option<String> {
    let mut column = None;
    let mut values = Vec::new();
    for p in parts {
        let Filter::Compare {
            column: c,
            op: CompareOp::Eq,
            value,
        } = p
        else {
            return None;
        };
        if column.is_some_and(|prev: &String| prev != c) {
            return None;
        }
        column = Some(c);
        values.push(value.to_string().trim_matches('"').to_string());
    }
    let column = column?;
    (values.len() > 1).then(|| {
        let last = values.pop().unwrap_or_default();
        format!("{} is {} or {last}", named(column), values.join(", "))
    })
}

fn join(parts: &[Filter], sep: &str) -> String {
    let inner: Vec<String> = parts
        .iter()
        .map(|p| match p {
            Filter::And(_) | Filter::Or(_) => format!("({})", filter(p)),
            _ => filter(p),
        })
        .collect();
    inner.join(sep)
}

/// A column name as words: `lives_alone` → "lives alone".
pub fn words(column: &str) -> String {
    column.replace(['_', '-'], " ")
}

/// A column named in a sentence: `lives_alone` → "“lives alone”".
fn named(column: &str) -> String {
    format!("“{}”", words(column))
}

fn percentile(p: f64) -> String {
    let pct = p * 100.0;
    match pct {
        50.0 => "median".into(),
        _ => format!("{}th percentile", trim(pct)),
    }
}

fn list(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

/// A number without trailing zeros: 65.0 → "65", 0.050 → "0.05".
pub fn trim(x: f64) -> String {
    let s = format!("{x:.6}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" { "0".into() } else { s.into() }
}

/// A privacy amount to a sensible number of significant figures.
pub fn amount(x: f64) -> String {
    if x == 0.0 {
        return "0".into();
    }
    let digits = (3 - x.abs().log10().floor() as i32 - 1).clamp(0, 12) as usize;
    trim(format!("{x:.digits$}").parse().unwrap_or(x))
}

/// A cost as a board reads it: "ρ = 0.05 (ε = 2.36 at δ = 10⁻⁶)".
pub fn cost(c: &CostView) -> String {
    let (eps, delta) = c.approx_dp;
    let pure = c
        .epsilon
        .map(|e| format!("; pure ε = {}", amount(e)))
        .unwrap_or_default();
    format!(
        "ρ = {} (ε = {} at δ {}{pure})",
        amount(c.rho),
        amount(eps),
        with_equals(&delta_text(delta))
    )
}

/// "= 10⁻⁶", or "≈ 10⁻⁶" as it stands.
pub fn with_equals(text: &str) -> String {
    match text.starts_with('≈') {
        true => text.to_string(),
        false => format!("= {text}"),
    }
}

/// An RFC 3339 time for people: "4 Dec 2026, 18:36 UTC" (as stored if it does not parse).
pub fn when(at: &str) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let parsed = (|| {
        let (date, time) = at.split_once('T')?;
        let mut d = date.split('-');
        let (y, m, day) = (d.next()?, d.next()?, d.next()?);
        let month = MONTHS.get(m.parse::<usize>().ok()?.checked_sub(1)?)?;
        let day: u32 = day.parse().ok()?;
        let hm = time.get(..5)?;
        Some(format!("{day} {month} {y}, {hm} UTC"))
    })();
    parsed.unwrap_or_else(|| at.to_string())
}

/// δ as a power of ten where it is one: 1e-6 → "10⁻⁶"; "≈ 10⁻⁶" where it is within a
/// ten-thousandth of one (δ composed over several releases: 1.000001e-6).
pub fn delta_text(delta: f64) -> String {
    let exp = delta.log10();
    let off = (exp - exp.round()).abs();
    if delta > 0.0 && off < 1e-4 {
        let approx = if off < 1e-9 { "" } else { "≈ " };
        let sup: String = format!("{}", exp.round() as i64)
            .chars()
            .map(|c| match c {
                '-' => '⁻',
                d => "⁰¹²³⁴⁵⁶⁷⁸⁹"
                    .chars()
                    .nth(d.to_digit(10).unwrap_or(0) as usize)
                    .unwrap_or(d),
            })
            .collect();
        format!("{approx}10{sup}")
    } else {
        format!("{delta:e}")
    }
}

/// What a resident should take from a privacy cost, in one sentence.
pub const COST_MEANING: &str = "The privacy cost bounds how much anyone could learn about any \
    one person from this release, whatever else they know: smaller is more private. Each \
    dataset has a total budget the board set; every release spends from it, and when it is \
    spent no more questions are answered.";

/// A statistic's value for display: counts as whole numbers, others to 4 significant figures.
pub fn value(x: f64, whole: bool) -> String {
    if whole {
        format!("{}", x.round() as i64)
    } else if x == 0.0 || !x.is_finite() {
        trim(x)
    } else {
        let digits = (4 - x.abs().log10().floor() as i32 - 1).clamp(0, 10) as usize;
        let text = format!("{x:.digits$}");
        match text.contains('.') {
            true => text.trim_end_matches('0').trim_end_matches('.').to_string(),
            false => text,
        }
    }
}

/// A row's interval half-width, in words: "± 3.2", or for a mean by the cell's rows.
pub fn half_width(a: &StatisticAccuracy) -> String {
    match (a.half_width, a.half_width_at_rows.as_slice()) {
        (Some(h), _) => format!("± {}", value(h, false)),
        (None, []) => "not stated".into(),
        (None, at) => at
            .iter()
            .map(|(n, h)| format!("± {} at {n} rows", value(*h, false)))
            .collect::<Vec<_>>()
            .join("; "),
    }
}

/// One row of a released table: the cell's key values, then per statistic its value (or why
/// there is none) and interval.
#[derive(Clone, Debug, PartialEq)]
pub struct TableRow {
    /// The key columns' values.
    pub keys: Vec<String>,
    /// Per statistic: (value, interval).
    pub values: Vec<(String, String)>,
}

/// A release as a table: one row per cell, the key columns first.
pub fn release_table(r: &ReleaseView) -> (Vec<String>, Vec<TableRow>) {
    let mut headers: Vec<String> = r.keys.iter().map(|k| words(k)).collect();
    for name in &r.names {
        headers.push(name.clone());
        headers.push(format!("{name}: interval"));
    }
    let cells = r.rows.first().map_or(0, Vec::len);
    let rows = (0..cells)
        .map(|j| TableRow {
            keys: r.cell_keys.get(j).cloned().unwrap_or_default(),
            values: r
                .names
                .iter()
                .zip(&r.rows)
                .map(|(name, row)| {
                    let whole = name == "count";
                    match row.get(j) {
                        Some(c) => (
                            c.value.map_or_else(
                                || "withheld".to_string(),
                                |v| value(v, whole && v.fract() == 0.0),
                            ),
                            c.interval.map_or_else(
                                || "not stated".to_string(),
                                |(lo, hi)| format!("{} to {}", value(lo, false), value(hi, false)),
                            ),
                        ),
                        None => ("—".into(), "—".into()),
                    }
                })
                .collect(),
        })
        .collect();
    (headers, rows)
}

/// What a board member should know about the disclosure control a query's release would get,
/// before any data: the rule, and which of the release's rows it applies to. Which cells it
/// will suppress depends on the noisy counts, so it cannot be said in advance.
pub fn disclosure_summary(policy: &DatasetPolicy, query: &Query, cells: usize) -> Vec<String> {
    let profile: DisclosureProfile = policy.disclosure();
    let (suppress, round_to) = profile.rule();
    let counts = match &query.statistic {
        Statistic::Count | Statistic::Histogram { .. } => "its counts",
        Statistic::Mean { .. } => "the counts behind its averages",
        Statistic::Quantiles { .. } => "the histogram its percentiles come from",
        Statistic::Sum { .. }
        | Statistic::LinearRegression { .. }
        | Statistic::LogisticRegression { .. }
        | Statistic::DpSgd { .. } => "no count it shows",
    };
    let mut out = vec![format!(
        "The release will have {cells} cell{}.",
        if cells == 1 { "" } else { "s" }
    )];
    if (suppress, round_to) == (0, 1) {
        out.push(format!(
            "The dataset's policy applies no suppression or rounding ({}); only the noise protects small counts.",
            profile.describe()
        ));
        return out;
    }
    out.push(format!(
        "The dataset's rule ({}) applies to {counts}.",
        profile.describe()
    ));
    if suppress > 0 {
        out.push(format!(
            "Any cell whose noisy count is between 1 and {suppress} will be withheld; which \
             ones depends on the data and is not known until release."
        ));
    }
    if round_to > 1 {
        out.push(format!(
            "Every other count will be shown to the nearest {round_to}."
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use civic_api::query::CellView;

    fn query(json: serde_json::Value) -> Query {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn questions_read_as_sentences() {
        let q = query(serde_json::json!({
            "dataset": "city", "statistic": "count",
            "filter": { "and": [
                { "compare": { "column": "age", "op": "ge", "value": 65 } },
                { "compare": { "column": "fell", "op": "eq", "value": true } } ] },
            "group_by": ["sex", "lives_alone"]
        }));
        assert_eq!(
            question(&q),
            "How many people, among people for whom “age” is at least 65 and “fell” is yes, \
             broken down by “sex” and “lives alone”?"
        );
        let q = query(serde_json::json!({
            "dataset": "d", "statistic": { "quantiles": { "column": "hba1c", "probabilities": [0.5, 0.9] } },
            "filter": { "not": { "or": [
                { "compare": { "column": "site", "op": "eq", "value": "north" } },
                { "compare": { "column": "age", "op": "lt", "value": 18 } } ] } }
        }));
        assert_eq!(
            question(&q),
            "The median and 90th percentile of “hba1c”, among people for whom not (“site” is north or “age” is below 18)?"
        );
    }

    #[test]
    fn costs_and_numbers() {
        let c = CostView {
            rho: 0.05,
            epsilon: None,
            approx_dp: (2.3637, 1e-6),
        };
        assert_eq!(cost(&c), "ρ = 0.05 (ε = 2.36 at δ = 10⁻⁶)");
        assert_eq!(amount(3200.0), "3200");
        assert_eq!(amount(0.000123456), "0.000123");
        assert_eq!(delta_text(1e-9), "10⁻⁹");
        assert_eq!(delta_text(1.000001e-6), "≈ 10⁻⁶");
        assert_eq!(when("2026-12-04T18:36:00.229Z"), "4 Dec 2026, 18:36 UTC");
        assert_eq!(when("(before migration 3)"), "(before migration 3)");
        let bands = query(serde_json::json!({
            "dataset": "d", "statistic": { "histogram": { "columns": ["damp"] } },
            "filter": { "or": [
                { "compare": { "column": "age_band", "op": "eq", "value": "65-74" } },
                { "compare": { "column": "age_band", "op": "eq", "value": "75-84" } },
                { "compare": { "column": "age_band", "op": "eq", "value": "85+" } } ] }
        }));
        assert_eq!(
            question(&bands),
            "How many people by “damp”, among people for whom “age band” is 65-74, 75-84 or 85+?"
        );
        assert_eq!(delta_text(2.5e-7), "2.5e-7");
        assert_eq!(value(1234.5678, false), "1235");
        assert_eq!(value(0.012345, false), "0.01235");
        assert_eq!(value(15.0, true), "15");
        assert_eq!(value(10.0, false), "10");
        assert_eq!(value(55.80, false), "55.8");
    }

    #[test]
    fn a_release_becomes_a_table_with_withheld_cells_named() {
        let r = ReleaseView {
            release_id: 1,
            released_at: "t".into(),
            reused: false,
            names: vec!["count".into()],
            rows: vec![vec![
                CellView {
                    value: Some(120.0),
                    interval: Some((110.2, 129.8)),
                },
                CellView {
                    value: None,
                    interval: None,
                },
            ]],
            keys: vec!["age_band".into()],
            cell_keys: vec![vec!["[0, 65)".into()], vec!["[65, 119]".into()]],
            receipt: serde_json::json!({}),
        };
        let (headers, rows) = release_table(&r);
        assert_eq!(headers, ["age band", "count", "count: interval"]);
        assert_eq!(rows[0].values[0], ("120".into(), "110.2 to 129.8".into()));
        assert_eq!(rows[1].values[0], ("withheld".into(), "not stated".into()));
    }
}
