//! A line diff between two texts (policy versions), by longest common subsequence over the
//! lines between their common beginning and end. The table it needs grows with the product
//! of the changed regions' lengths; past [`MAX_CELLS`] the diff is not computed.

/// The most (old lines × new lines) of the changed region compared (4 MB of table).
pub const MAX_CELLS: usize = 1_000_000;

/// One line of a diff.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Line<'a> {
    /// In both.
    Same(&'a str),
    /// Only in the old text.
    Removed(&'a str),
    /// Only in the new text.
    Added(&'a str),
}

/// The lines of `old` and `new` in order, each marked; `None` if the changed region is too
/// large.
pub fn lines<'a>(old: &'a str, new: &'a str) -> Option<Vec<Line<'a>>> {
    let (a, b): (Vec<&str>, Vec<&str>) = (old.lines().collect(), new.lines().collect());
    let head = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let tail = a[head..]
        .iter()
        .rev()
        .zip(b[head..].iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    let (am, bm) = (&a[head..a.len() - tail], &b[head..b.len() - tail]);
    if (am.len() + 1).saturating_mul(bm.len() + 1) > MAX_CELLS {
        return None;
    }
    let mut out: Vec<Line> = a[..head].iter().map(|l| Line::Same(l)).collect();
    out.extend(middle(am, bm));
    out.extend(a[a.len() - tail..].iter().map(|l| Line::Same(l)));
    Some(out)
}

/// The diff of the changed region, by its LCS table.
fn middle<'a>(a: &[&'a str], b: &[&'a str]) -> Vec<Line<'a>> {
    // lcs[i][j]: the longest common subsequence of a[i..] and b[j..].
    let w = b.len() + 1;
    let mut lcs = vec![0u32; (a.len() + 1) * w];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i * w + j] = if a[i] == b[j] {
                lcs[(i + 1) * w + j + 1] + 1
            } else {
                lcs[(i + 1) * w + j].max(lcs[i * w + j + 1])
            };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, Vec::with_capacity(a.len() + b.len()));
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            out.push(Line::Same(a[i]));
            (i, j) = (i + 1, j + 1);
        } else if i < a.len() && (j == b.len() || lcs[(i + 1) * w + j] >= lcs[i * w + j + 1]) {
            // Removals first, as diff tools show them.
            out.push(Line::Removed(a[i]));
            i += 1;
        } else {
            out.push(Line::Added(b[j]));
            j += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use Line::*;

    #[test]
    fn changed_lines_are_marked_and_the_rest_kept() {
        let old = "a\nb\nc\nd";
        let new = "a\nc\nd2\nd\ne";
        assert_eq!(
            lines(old, new).unwrap(),
            vec![
                Same("a"),
                Removed("b"),
                Same("c"),
                Added("d2"),
                Same("d"),
                Added("e")
            ]
        );
        assert_eq!(lines("x", "x").unwrap(), vec![Same("x")]);
        // Long texts with a small change are compared; wholly different long ones are not.
        let long: String = (0..5000).map(|i| format!("line {i}\n")).collect();
        let changed = long.replace("line 2500\n", "line 2500 changed\n");
        let d = lines(&long, &changed).unwrap();
        assert_eq!(d.len(), 5001);
        assert_eq!(d[2500], Removed("line 2500"));
        assert_eq!(d[2501], Added("line 2500 changed"));
        let other: String = (0..5000).map(|i| format!("other {i}\n")).collect();
        assert!(lines(&long, &other).is_none());
    }
}
