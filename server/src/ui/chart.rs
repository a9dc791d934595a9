//! A dataset's budget over time: the series from its ledger entries, and an SVG step chart
//! of it (the page shows the same figures as a table beside it). Pure.

use civic_policies::budget::{EntryKind, LedgerEntry};
use maud::{Markup, html};

use super::describe::amount;

/// The budget after one ledger entry.
#[derive(Clone, Debug, PartialEq)]
pub struct Point {
    /// When (RFC 3339).
    pub at: String,
    /// Spent so far, in ρ.
    pub charged: f64,
    /// Held by running or pending queries, in ρ.
    pub reserved: f64,
}

/// The budget after each entry that moves it (allocations only divide it, so they are left
/// out). A charge turns its reservation into spending; a refund returns it.
pub fn series(entries: &[(String, LedgerEntry)]) -> Vec<Point> {
    let (mut charged, mut reserved) = (0.0f64, 0.0f64);
    entries
        .iter()
        .filter(|(_, e)| e.kind != EntryKind::Allocate)
        .map(|(at, e)| {
            let x = e.amount.as_f64();
            match e.kind {
                EntryKind::Reserve => reserved += x,
                EntryKind::Charge | EntryKind::ChargeRound => {
                    reserved = (reserved - x).max(0.0);
                    charged += x;
                }
                EntryKind::Refund => reserved = (reserved - x).max(0.0),
                EntryKind::Allocate => {}
            }
            Point {
                at: at.clone(),
                charged,
                reserved,
            }
        })
        .collect()
}

const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 220.0;
const LEFT: f64 = 64.0;
const BOTTOM: f64 = 28.0;
const TOP: f64 = 22.0;

/// A step chart of spent and spent-plus-reserved against the total, one step per entry.
/// Decorative for screen readers (`aria-hidden`): the table beside it carries the figures.
pub fn svg(points: &[Point], total: f64) -> Markup {
    let plot_w = WIDTH - LEFT - 8.0;
    let plot_h = HEIGHT - BOTTOM - TOP;
    let top = points
        .iter()
        .map(|p| p.charged + p.reserved)
        .fold(total, f64::max)
        .max(f64::MIN_POSITIVE);
    let n = points.len().max(1) as f64;
    let x = |i: usize| LEFT + plot_w * i as f64 / n;
    let y = |v: f64| TOP + plot_h * (1.0 - v / top);
    let steps = |value: &dyn Fn(&Point) -> f64| {
        let mut d = format!("M{:.1},{:.1}", x(0), y(0.0));
        for (i, p) in points.iter().enumerate() {
            d += &format!(" H{:.1} V{:.1}", x(i), y(value(p)));
        }
        d += &format!(" H{:.1}", x(points.len()));
        d
    };
    html! {
        svg class="chart" viewBox={ "0 0 " (WIDTH) " " (HEIGHT) } width=(WIDTH) height=(HEIGHT)
            aria-hidden="true" focusable="false" {
            line class="axis" x1=(LEFT) y1=(y(0.0)) x2=(WIDTH - 8.0) y2=(y(0.0)) {}
            line class="axis" x1=(LEFT) y1=(TOP) x2=(LEFT) y2=(y(0.0)) {}
            line class="total" x1=(LEFT) y1=(y(total)) x2=(WIDTH - 8.0) y2=(y(total)) {}
            text class="label" x=(LEFT - 6.0) y=(y(total) + 4.0) text-anchor="end" { (amount(total)) }
            text class="label" x=(LEFT - 6.0) y=(y(0.0) + 4.0) text-anchor="end" { "0" }
            text class="label" x=(WIDTH - 10.0) y=(y(total) - 5.0) text-anchor="end" { "total budget" }
            path class="used" d=(steps(&|p: &Point| p.charged + p.reserved)) {}
            path class="charged" d=(steps(&|p: &Point| p.charged)) {}
            @if let (Some(first), Some(last)) = (points.first(), points.last()) {
                text class="label" x=(LEFT) y=(HEIGHT - 8.0) { (first.at.get(..10).unwrap_or(&first.at)) }
                text class="label" x=(WIDTH - 8.0) y=(HEIGHT - 8.0) text-anchor="end" { (last.at.get(..10).unwrap_or(&last.at)) }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use civic_policies::privacy::Rho;

    fn e(kind: EntryKind, rho: f64) -> (String, LedgerEntry) {
        (
            "2026-12-04T10:00:00Z".into(),
            LedgerEntry {
                query: 1,
                project: "p".into(),
                kind,
                amount: Rho::nearest(rho).unwrap(),
            },
        )
    }

    #[test]
    fn reservations_become_charges_or_come_back() {
        use EntryKind::*;
        let s = series(&[
            e(Allocate, 5.0),
            e(Reserve, 1.0),
            e(Reserve, 0.5),
            e(Charge, 1.0),
            e(Refund, 0.5),
        ]);
        let got: Vec<(f64, f64)> = s
            .iter()
            .map(|p| {
                (
                    (p.charged * 1e6).round() / 1e6,
                    (p.reserved * 1e6).round() / 1e6,
                )
            })
            .collect();
        assert_eq!(got, [(0.0, 1.0), (0.0, 1.5), (1.0, 0.5), (1.0, 0.0)]);
        let svg = svg(&s, 2.0).into_string();
        assert!(svg.contains("class=\"charged\""), "{svg}");
        assert!(svg.contains("aria-hidden=\"true\""), "{svg}");
    }
}
