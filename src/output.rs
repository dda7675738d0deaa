//! How the CLI prints what a command returns: JSON by default (for scripts), or `--output
//! table` for people: a list as aligned columns under a header row, one object as FIELD/VALUE
//! rows with its nested lists (a domain's DNS records) as tables of their own.
//!
//! Everything goes through one locked stdout with `writeln!`. A reader that goes away early
//! (`mailmux tenant list | head -c1`) closes the pipe; Rust ignores SIGPIPE, so `println!`
//! would panic on the EPIPE that follows. Here a broken pipe ends the output quietly and the
//! command still succeeds: what it did is done, and nobody is left to read the rest.

use std::io::{self, Write};

use serde_json::Value;

/// `--output`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Pretty-printed JSON, the same shapes as the REST API.
    #[default]
    Json,
    /// Aligned columns with a header row.
    Table,
}

/// What a command shows, and how its table looks.
pub struct Shown {
    pub value: Value,
    pub layout: Layout,
}

/// The table form of a command's answer.
pub enum Layout {
    /// One object: FIELD/VALUE rows.
    Object,
    /// `{"<key>": [rows…], …}`: these columns of each row (dotted paths reach into nested
    /// objects, e.g. `dkim.selector`), then any other top-level field (`next_cursor`).
    List {
        key: &'static str,
        columns: &'static [&'static str],
    },
}

impl Shown {
    pub fn object(value: impl serde::Serialize) -> anyhow::Result<Shown> {
        Ok(Shown {
            value: serde_json::to_value(value)?,
            layout: Layout::Object,
        })
    }

    pub fn list(
        value: impl serde::Serialize,
        key: &'static str,
        columns: &'static [&'static str],
    ) -> anyhow::Result<Shown> {
        Ok(Shown {
            value: serde_json::to_value(value)?,
            layout: Layout::List { key, columns },
        })
    }
}

/// Prints `shown` on stdout in `format`. A closed stdout is success (see the module header).
pub fn print(shown: &Shown, format: Format) -> io::Result<()> {
    let text = match format {
        Format::Json => {
            let mut text = serde_json::to_string_pretty(&shown.value).map_err(io::Error::other)?;
            text.push('\n');
            text
        }
        Format::Table => render_table(shown),
    };
    write_stdout(&text)
}

/// Writes `text` to stdout; a reader that went away is not an error.
pub fn write_stdout(text: &str) -> io::Result<()> {
    let mut out = io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(error) if error.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

fn render_table(shown: &Shown) -> String {
    match &shown.layout {
        Layout::Object => object_table(&shown.value),
        Layout::List { key, columns } => {
            let rows = shown.value[*key].as_array().cloned().unwrap_or_default();
            let header: Vec<String> = columns.iter().map(|c| c.to_uppercase()).collect();
            let body: Vec<Vec<String>> = rows
                .iter()
                .map(|row| columns.iter().map(|c| cell(lookup(row, c))).collect())
                .collect();
            let mut out = aligned(&header, &body);
            // Whatever else the answer carries (a cursor for the next page) goes below.
            if let Some(fields) = shown.value.as_object() {
                for (name, value) in fields {
                    if name != key && !value.is_null() {
                        out.push_str(&format!("\n{name}: {}\n", cell(Some(value))));
                    }
                }
            }
            out
        }
    }
}

/// FIELD/VALUE rows for the scalars (nested objects flattened as `a.b`), then each list of
/// objects as its own table under its name.
fn object_table(value: &Value) -> String {
    let mut rows = Vec::new();
    let mut tables = Vec::new();
    flatten("", value, &mut rows, &mut tables);
    let header = vec!["FIELD".to_string(), "VALUE".to_string()];
    let mut out = aligned(&header, &rows);
    for (name, items) in tables {
        let mut columns: Vec<String> = Vec::new();
        for item in &items {
            if let Some(fields) = item.as_object() {
                for key in fields.keys() {
                    if !columns.contains(key) {
                        columns.push(key.clone());
                    }
                }
            }
        }
        let header: Vec<String> = columns.iter().map(|c| c.to_uppercase()).collect();
        let body: Vec<Vec<String>> = items
            .iter()
            .map(|item| columns.iter().map(|c| cell(item.get(c))).collect())
            .collect();
        out.push_str(&format!("\n{name}:\n"));
        out.push_str(&aligned(&header, &body));
    }
    out
}

fn flatten(
    prefix: &str,
    value: &Value,
    rows: &mut Vec<Vec<String>>,
    tables: &mut Vec<(String, Vec<Value>)>,
) {
    match value {
        Value::Object(fields) => {
            for (key, inner) in fields {
                let name = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                flatten(&name, inner, rows, tables);
            }
        }
        Value::Array(items) if !items.is_empty() && items.iter().all(Value::is_object) => {
            tables.push((prefix.to_string(), items.clone()));
        }
        other => rows.push(vec![prefix.to_string(), cell(Some(other))]),
    }
}

/// `a.b` inside `row`.
fn lookup<'a>(row: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(row, |value, key| value.get(key))
}

/// A value as one cell: strings bare, null as `-`, lists of scalars comma-separated, anything
/// else as compact JSON.
fn cell(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => "-".to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(items)) if items.iter().all(|v| !v.is_object() && !v.is_array()) => items
            .iter()
            .map(|v| cell(Some(v)))
            .collect::<Vec<_>>()
            .join(","),
        Some(other) => other.to_string(),
    }
}

/// Columns padded to their widest cell (counted in characters), two spaces apart; the last
/// column is not padded, so lines carry no trailing blanks.
fn aligned(header: &[String], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, value) in row.iter().enumerate() {
            widths[i] = widths[i].max(value.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(header).chain(rows.iter().map(Vec::as_slice)) {
        let last = row.len().saturating_sub(1);
        for (i, value) in row.iter().enumerate() {
            out.push_str(value);
            if i < last {
                let pad = widths[i] - value.chars().count() + 2;
                out.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_list_is_aligned_columns_under_a_header() {
        let shown = Shown::list(
            json!({"tenants": [
                {"id": "t_1", "name": "acme", "limits": {"max_users": 5}, "domain": null},
                {"id": "t_22", "name": "b", "limits": {"max_users": 25}, "domain": "b.test"},
            ], "next_cursor": null}),
            "tenants",
            &["id", "name", "limits.max_users", "domain"],
        )
        .unwrap();
        assert_eq!(
            render_table(&shown),
            "ID    NAME  LIMITS.MAX_USERS  DOMAIN\n\
             t_1   acme  5                 -\n\
             t_22  b     25                b.test\n"
        );
    }

    #[test]
    fn an_object_is_field_value_rows_and_its_lists_are_tables() {
        let shown = Shown::object(json!({
            "domain": "a.test",
            "dkim": {"selector": "mm1"},
            "records": [{"type": "TXT", "name": "a.test"}, {"type": "TXT", "name": "_dmarc.a.test"}],
        }))
        .unwrap();
        assert_eq!(
            render_table(&shown),
            "FIELD          VALUE\n\
             dkim.selector  mm1\n\
             domain         a.test\n\
             \n\
             records:\n\
             NAME           TYPE\n\
             a.test         TXT\n\
             _dmarc.a.test  TXT\n"
        );
    }
}
