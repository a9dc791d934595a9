//! A line diff between two texts (policy versions), by longest common subsequence. Policies
//! are a few hundred lines; past [`MAX_LINES`] the diff is not computed.

/// The most lines either side may have.
pub const MAX_LINES: usize = 3000;

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

/// The lines of `old` and `new` in order, each marked; `None` if either is too long.
pub fn lines<'a>(old: &'a str, new: &'a str) -> Option<Vec<Line<'a>>> {
    let (a, b): (Vec<&str>, Vec<&str>) = (old.lines().collect(), new.lines().collect());
    if a.len() > MAX_LINES || b.len() > MAX_LINES {
        return None;
    }
    // lcs[i][j]: the longest common subsequence of a[i..] and b[j..].
    let mut lcs = vec![vec![0u32; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, Vec::with_capacity(a.len() + b.len()));
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            out.push(Line::Same(a[i]));
            (i, j) = (i + 1, j + 1);
        } else if j < b.len() && (i == a.len() || lcs[i][j + 1] >= lcs[i + 1][j]) {
            out.push(Line::Added(b[j]));
            j += 1;
        } else {
            out.push(Line::Removed(a[i]));
            i += 1;
        }
    }
    Some(out)
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
        assert!(lines(&"l\n".repeat(MAX_LINES + 1), "").is_none());
    }
}
