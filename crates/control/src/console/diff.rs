//! A line diff (longest common subsequence), for showing what a revision changed in
//! a document. Bounded: past [`MAX_CELLS`] comparisons the old lines are shown as
//! removed and the new ones as added.

/// The most line pairs compared (the table is this many bytes).
pub const MAX_CELLS: usize = 4_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Line<'a> {
    Same(&'a str),
    Removed(&'a str),
    Added(&'a str),
}

/// The lines of `before` and `after`, as a diff.
pub fn lines<'a>(before: &'a str, after: &'a str) -> Vec<Line<'a>> {
    let (a, b): (Vec<&str>, Vec<&str>) = (before.lines().collect(), after.lines().collect());
    if a.len().saturating_mul(b.len()) > MAX_CELLS {
        return a.iter().map(|l| Line::Removed(l)).chain(b.iter().map(|l| Line::Added(l))).collect();
    }
    // common[i][j]: the longest common subsequence of a[i..] and b[j..] (u16 would
    // overflow past 65,535 lines; u32 costs 16 MB at the bound).
    let w = b.len() + 1;
    let mut common = vec![0u32; (a.len() + 1) * w];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            common[i * w + j] =
                if a[i] == b[j] { common[(i + 1) * w + j + 1] + 1 } else { common[(i + 1) * w + j].max(common[i * w + j + 1]) };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, Vec::with_capacity(a.len() + b.len()));
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            out.push(Line::Same(a[i]));
            (i, j) = (i + 1, j + 1);
        } else if i < a.len() && (j == b.len() || common[(i + 1) * w + j] >= common[i * w + j + 1]) {
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

    #[test]
    fn a_changed_line_is_removed_then_added() {
        let d = lines("a\nb\nc\n", "a\nx\nc\nd\n");
        assert_eq!(d, [Line::Same("a"), Line::Removed("b"), Line::Added("x"), Line::Same("c"), Line::Added("d")]);
        assert_eq!(lines("", "a"), [Line::Added("a")]);
        assert_eq!(lines("a", ""), [Line::Removed("a")]);
    }
}
