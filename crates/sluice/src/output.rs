//! What operator commands print: aligned tables for people, JSON for scripts, from the same
//! rows. A column's JSON key is its header in lower case with `-` as `_` (`LOG-END` is
//! `log_end`), so the two forms cannot drift apart.

use serde_json::{Map, Value};

/// `--output`: how a command prints its result.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OutputFormat {
    /// Aligned columns under a header row.
    #[default]
    Table,
    /// One JSON document on stdout.
    Json,
}

#[derive(clap::Args)]
pub struct OutputArgs {
    /// Print a table, or one JSON document.
    #[arg(long, value_enum, default_value_t)]
    pub output: OutputFormat,
}

/// One value of a row: its text in a table and its value in JSON.
pub struct Cell {
    text: String,
    json: Value,
}

impl Cell {
    pub fn new(text: impl Into<String>, json: Value) -> Self {
        Self {
            text: text.into(),
            json,
        }
    }

    /// A missing value: `-` in a table, `null` in JSON.
    pub fn none() -> Self {
        Self::new("-", Value::Null)
    }
}

impl From<&str> for Cell {
    fn from(v: &str) -> Self {
        Self::new(v, Value::from(v))
    }
}

impl From<String> for Cell {
    fn from(v: String) -> Self {
        let json = Value::from(v.as_str());
        Self::new(v, json)
    }
}

impl From<bool> for Cell {
    fn from(v: bool) -> Self {
        Self::new(if v { "yes" } else { "no" }, Value::from(v))
    }
}

macro_rules! numeric_cells {
    ($($t:ty),*) => {$(
        impl From<$t> for Cell {
            fn from(v: $t) -> Self {
                Self::new(v.to_string(), Value::from(v))
            }
        }
    )*};
}
numeric_cells!(i16, i32, i64, usize);

impl<T: Into<Cell>> From<Option<T>> for Cell {
    fn from(v: Option<T>) -> Self {
        v.map_or_else(Cell::none, Into::into)
    }
}

/// Rows under named columns.
pub struct Table {
    headers: &'static [&'static str],
    rows: Vec<Vec<Cell>>,
}

impl Table {
    pub fn new(headers: &'static [&'static str]) -> Self {
        Self {
            headers,
            rows: Vec::new(),
        }
    }

    pub fn push(&mut self, row: Vec<Cell>) {
        assert_eq!(
            row.len(),
            self.headers.len(),
            "a row has one cell per column"
        );
        self.rows.push(row);
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The header row and every row, columns padded to their widest cell, two spaces apart.
    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.text.chars().count());
            }
        }
        let mut out = String::new();
        let mut line = |cells: &mut dyn Iterator<Item = &str>| {
            let padded: Vec<String> = cells
                .zip(&widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect();
            out.push_str(padded.join("  ").trim_end());
            out.push('\n');
        };
        line(&mut self.headers.iter().copied());
        for row in &self.rows {
            line(&mut row.iter().map(|c| c.text.as_str()));
        }
        out
    }

    /// The rows as JSON objects keyed by column.
    pub fn objects(&self) -> Vec<Map<String, Value>> {
        let keys: Vec<String> = self
            .headers
            .iter()
            .map(|h| h.to_lowercase().replace('-', "_"))
            .collect();
        self.rows
            .iter()
            .map(|row| {
                keys.iter()
                    .cloned()
                    .zip(row.iter().map(|c| c.json.clone()))
                    .collect()
            })
            .collect()
    }

    /// The rows as a JSON array of objects.
    pub fn to_json(&self) -> Value {
        Value::Array(self.objects().into_iter().map(Value::Object).collect())
    }

    /// Prints the table, or its rows as a JSON array.
    pub fn print(&self, format: OutputFormat) {
        match format {
            OutputFormat::Table => print!("{}", self.render()),
            OutputFormat::Json => print_json(&self.to_json()),
        }
    }
}

/// One JSON document on one line of stdout.
pub fn print_json(value: &Value) {
    println!("{value}");
}

/// What a command that changes something did: a sentence for people, an object for scripts.
pub fn report(format: OutputFormat, text: String, json: Value) {
    match format {
        OutputFormat::Table => println!("{text}"),
        OutputFormat::Json => print_json(&json),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Table {
        let mut t = Table::new(&["TOPIC", "LOG-END", "INTERNAL"]);
        t.push(vec!["orders".into(), 12i64.into(), false.into()]);
        t.push(vec!["a".into(), Cell::none(), true.into()]);
        t
    }

    #[test]
    fn a_table_aligns_columns_under_its_header() {
        assert_eq!(
            sample().render(),
            "TOPIC   LOG-END  INTERNAL\norders  12       no\na       -        yes\n"
        );
    }

    #[test]
    fn json_rows_carry_the_same_cells_typed_under_column_keys() {
        assert_eq!(
            sample().to_json().to_string(),
            r#"[{"internal":false,"log_end":12,"topic":"orders"},{"internal":true,"log_end":null,"topic":"a"}]"#
        );
    }

    #[test]
    fn an_empty_table_is_its_header() {
        assert_eq!(Table::new(&["GROUP", "STATE"]).render(), "GROUP  STATE\n");
    }
}
