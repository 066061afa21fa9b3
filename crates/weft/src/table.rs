//! What `weft get` prints: a list of rows, each with its name (`kind/name`), its JSON
//! and its table cells, written as a table (`-o wide` adds columns), names, YAML or
//! JSON. A cell is text from the store or from a peer, so its control characters are
//! escaped (a label value with a newline stays on its row) and it is cut short in a
//! plain table.

use serde_json::Value;

/// `-o`: how `weft get` writes what it found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Table,
    Wide,
    Name,
    Yaml,
    Json,
}

/// One thing found: `kind/name`, its JSON (for yaml and json) and its cells.
pub struct Row {
    pub name: String,
    pub value: Value,
    pub cells: Vec<String>,
    /// The cells `-o wide` adds.
    pub wide: Vec<String>,
}

/// Rows under their headers.
pub struct View {
    pub headers: Vec<&'static str>,
    pub wide_headers: Vec<&'static str>,
    pub rows: Vec<Row>,
}

/// The widest a cell of a plain table gets (`-o wide` shows it whole).
const MAX_CELL: usize = 60;

/// `s` with every control character escaped (`\n`, `\u{1b}`), so a cell is one line.
pub fn escape(s: &str) -> String {
    if !s.chars().any(hidden) {
        return s.to_owned();
    }
    s.chars().map(|c| if hidden(c) { c.escape_default().to_string() } else { c.to_string() }).collect()
}

/// Control characters, and the invisible ones that reorder or hide text on a terminal
/// (bidi overrides, zero-width characters): a name must show as what it is.
fn hidden(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{2069}' | '\u{feff}')
}

/// `s` escaped and cut to `max` characters (an ellipsis says so).
fn cell(s: &str, max: Option<usize>) -> String {
    let e = escape(s);
    match max {
        Some(m) if e.chars().count() > m => e.chars().take(m - 1).chain(std::iter::once('…')).collect(),
        _ => e,
    }
}

/// The table: headers, then one line per row, columns padded to their widest cell.
pub fn table(v: &View, wide: bool) -> String {
    let max = (!wide).then_some(MAX_CELL);
    let mut lines: Vec<Vec<String>> =
        vec![v.headers.iter().chain(if wide { &v.wide_headers[..] } else { &[] }).map(|h| h.to_string()).collect()];
    for r in &v.rows {
        let extra: &[String] = if wide { &r.wide } else { &[] };
        lines.push(r.cells.iter().chain(extra).map(|c| cell(c, max)).collect());
    }
    let cols = lines[0].len();
    let widths: Vec<usize> =
        (0..cols).map(|i| lines.iter().map(|l| l.get(i).map_or(0, |c| c.chars().count())).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for l in &lines {
        let padded: Vec<String> = l.iter().enumerate().map(|(i, c)| format!("{c:<w$}", w = widths[i])).collect();
        out.push_str(padded.join("   ").trim_end());
        out.push('\n');
    }
    out
}

/// What `-o` asks for; `one` is a get by name that found one (its object, not a list).
pub fn render(v: &View, output: Output, one: bool) -> String {
    match output {
        Output::Table | Output::Wide => table(v, output == Output::Wide),
        Output::Name => v.rows.iter().map(|r| format!("{}\n", escape(&r.name))).collect(),
        Output::Json => {
            let json = match (one, v.rows.first()) {
                (true, Some(r)) => r.value.clone(),
                _ => Value::Array(v.rows.iter().map(|r| r.value.clone()).collect()),
            };
            serde_json::to_string_pretty(&json).unwrap_or_default() + "\n"
        }
        Output::Yaml => match (one, v.rows.first()) {
            (true, Some(r)) => serde_saphyr::to_string(&r.value).unwrap_or_default(),
            _ => v.rows.iter().map(|r| format!("---\n{}", serde_saphyr::to_string(&r.value).unwrap_or_default())).collect(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(cells: &[&str]) -> View {
        let row =
            Row { name: "x/a".into(), value: Value::Null, cells: cells.iter().map(|c| c.to_string()).collect(), wide: vec!["w".into()] };
        View { headers: vec!["NAME", "LABELS"], wide_headers: vec!["MORE"], rows: vec![row] }
    }

    #[test]
    fn a_control_character_in_a_cell_stays_on_its_row() {
        let t = table(&view(&["a", "k=v\nINJECTED\x1b[2J"]), false);
        assert_eq!(t.lines().count(), 2, "{t}");
        assert!(t.contains("k=v\\nINJECTED\\u{1b}[2J"), "{t}");
    }

    #[test]
    fn invisible_characters_show_as_what_they_are() {
        // A right-to-left override and a zero-width space would make a name look like another.
        assert_eq!(escape("admin-proxy\u{202e}gnp.exe\u{200b}"), "admin-proxy\\u{202e}gnp.exe\\u{200b}");
        assert_eq!(escape("plain-name"), "plain-name");
    }

    #[test]
    fn columns_are_aligned_and_wide_adds_its_own() {
        let t = table(&view(&["a-long-name", "x"]), true);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0].find("LABELS"), lines[1].find('x'));
        assert!(lines[0].ends_with("MORE") && lines[1].ends_with('w'), "{t}");
    }

    #[test]
    fn a_plain_table_cuts_a_long_cell() {
        let t = table(&view(&["a", &"v".repeat(10_000)]), false);
        assert!(t.len() < 200 && t.contains('…'), "{}", t.len());
    }
}
