//! The preview: an execution's first rows, formatted once by render exactly
//! as the PDF shows them (plus their typed values and the totals line), so
//! that messages can show the data without anyone parsing it again. Render
//! stores it beside the files; deliver reads it and shows as many rows as
//! each target asks for.

use super::display::{MAX_COLUMN_NAME, display};
use super::{format_cell, shown_totals};
use crate::contract::{ColumnType, Rows, Summary, Total};
use serde::{Deserialize, Serialize};
use std::ops::ControlFlow;
use unicode_width::UnicodeWidthStr;

/// Rows render keeps: the most any target may show.
pub const KEPT_ROWS: usize = crate::domain::target::MAX_PREVIEW_ROWS as usize;
/// Columns a preview keeps; a wider report's preview says how many it left
/// out (messages are read on phones).
pub const MAX_COLUMNS: usize = 8;
/// A preview cell's longest text, in characters, before `…`.
pub const MAX_CELL: usize = 40;
/// Longest string kept as a typed value, in characters.
pub const MAX_VALUE: usize = 200;
/// The stored preview's largest size: rows are dropped from the end to
/// fit. Far below what a message or a DynamoDB item could hold.
pub const MAX_BYTES: usize = 64 * 1024;

/// A preview of an execution's data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Preview {
    /// The kept columns (the first [`MAX_COLUMNS`]).
    pub columns: Vec<PreviewColumn>,
    /// The first rows as people read them (as in the PDF, cut shorter).
    pub rows: Vec<Vec<String>>,
    /// The same rows as typed JSON values (long strings cut).
    pub values: Vec<Vec<serde_json::Value>>,
    /// The totals line, formatted, when the report has numeric columns:
    /// `None` per column without a total.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub totals: Option<Vec<Option<String>>>,
    /// The same totals as typed values (`null` per column without one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_values: Option<Vec<serde_json::Value>>,
    /// Rows in the whole execution.
    pub row_count: u64,
    /// Columns of the report not in the preview.
    pub hidden_columns: usize,
    /// The execution's parameters, cleaned and bounded (the first
    /// [`MAX_PARAMETERS`]).
    #[serde(default)]
    pub parameters: Vec<(String, String)>,
    /// The chart's title, when the execution has a chart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chart_title: Option<String>,
}

/// Parameters a preview keeps.
pub const MAX_PARAMETERS: usize = 20;

/// A column of the preview.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PreviewColumn {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: ColumnType,
}

impl PreviewColumn {
    /// Whether its cells are right-aligned numbers.
    pub fn is_numeric(&self) -> bool {
        matches!(self.kind, ColumnType::Integer | ColumnType::Decimal)
    }
}

/// Builds the preview of `rows` (the first [`KEPT_ROWS`]), reading no
/// further than those.
pub fn build(
    rows: &dyn Rows,
    summary: &Summary,
    tz: &jiff::tz::TimeZone,
    parameters: &std::collections::BTreeMap<String, String>,
) -> Preview {
    let all = rows.columns();
    let columns = &all[..all.len().min(MAX_COLUMNS)];
    let mut shown = Vec::new();
    let mut values = Vec::new();
    let _ = rows.scan(&mut |row| {
        if shown.len() == KEPT_ROWS {
            return ControlFlow::Break(());
        }
        shown.push(
            row.iter()
                .zip(columns)
                .map(|(v, c)| display(&format_cell(v, c, tz), MAX_CELL))
                .collect(),
        );
        values.push(row.iter().take(columns.len()).map(bounded_value).collect());
        ControlFlow::Continue(())
    });
    let sums = shown_totals(all, Ok(summary.totals.clone()));
    let totals = sums
        .iter()
        .any(Option::is_some)
        .then(|| sums.into_iter().take(columns.len()).collect());
    let total_values = totals.as_ref().map(|_| {
        summary
            .totals
            .iter()
            .take(columns.len())
            .map(|t| match t {
                None => serde_json::Value::Null,
                Some(Total::Integer(n)) => i64::try_from(*n)
                    .map(serde_json::Value::from)
                    .or_else(|_| u64::try_from(*n).map(serde_json::Value::from))
                    .unwrap_or_else(|_| serde_json::Value::String(n.to_string())),
                Some(Total::Decimal(f)) => serde_json::Value::from(*f),
            })
            .collect()
    });
    let mut preview = Preview {
        columns: columns
            .iter()
            .map(|c| PreviewColumn {
                // Whole (as the PDF bounds it), so webhook receivers can
                // match columns; messages cut it for display.
                name: display(&c.name, MAX_COLUMN_NAME),
                kind: c.kind,
            })
            .collect(),
        rows: shown,
        values,
        totals,
        total_values,
        row_count: summary.rows as u64,
        hidden_columns: all.len() - columns.len(),
        parameters: parameters
            .iter()
            .take(MAX_PARAMETERS)
            .map(|(k, v)| {
                (
                    display(k, super::display::MAX_PARAMETER_KEY),
                    display(v, super::display::MAX_PARAMETER_VALUE),
                )
            })
            .collect(),
        chart_title: None,
    };
    while !preview.rows.is_empty() && preview.to_bytes().len() > MAX_BYTES {
        preview.rows.pop();
        preview.values.pop();
    }
    preview
}

/// A typed value as the preview keeps it: long strings are cut, and an
/// array or object (a `string` column accepts any JSON) becomes its text,
/// cut the same way.
fn bounded_value(v: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value as V;
    match v {
        V::String(s) if s.chars().count() > MAX_VALUE => V::String(display(s, MAX_VALUE)),
        V::Array(_) | V::Object(_) => V::String(display(&v.to_string(), MAX_VALUE)),
        other => other.clone(),
    }
}

impl Preview {
    /// The stored form.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Reads the stored form.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, String> {
        serde_json::from_slice(bytes).map_err(|e| format!("preview is not readable: {e}"))
    }

    /// The first `n` rows (fewer if the report has fewer).
    pub fn first(&self, n: usize) -> &[Vec<String>] {
        &self.rows[..n.min(self.rows.len())]
    }

    /// Rows of the report not among the first `n` shown.
    pub fn rows_after(&self, n: usize) -> u64 {
        self.row_count.saturating_sub(n.min(self.rows.len()) as u64)
    }

    /// The totals line with `Total` in the first text cell, as the PDF
    /// writes it; `None` without numeric columns.
    pub fn totals_line(&self) -> Option<Vec<String>> {
        let totals = self.totals.as_ref()?;
        Some(
            totals
                .iter()
                .enumerate()
                .map(|(i, t)| match t {
                    Some(v) => v.clone(),
                    None if i == 0 => "Total".to_owned(),
                    None => String::new(),
                })
                .collect(),
        )
    }

    /// The rows laid out as an aligned plain-text table (numbers right,
    /// text left; a rule under the names and above the totals), for text
    /// email and Slack's monospaced block. Cells are cut to `max_cell`;
    /// widths count East Asian wide characters as two columns.
    pub fn text_table(&self, n: usize, max_cell: usize) -> Vec<String> {
        let cut = |s: &str| display(s, max_cell);
        let names: Vec<String> = self.columns.iter().map(|c| cut(&c.name)).collect();
        let rows: Vec<Vec<String>> = self
            .first(n)
            .iter()
            .map(|r| r.iter().map(|c| cut(c)).collect())
            .collect();
        let totals = self
            .totals_line()
            .filter(|_| !rows.is_empty())
            .map(|t| t.iter().map(|c| cut(c)).collect::<Vec<_>>());
        let width = |i: usize| {
            std::iter::once(&names)
                .chain(&rows)
                .chain(totals.iter())
                .filter_map(|r| r.get(i))
                .map(|c| c.width())
                .max()
                .unwrap_or(0)
        };
        let widths: Vec<usize> = (0..names.len()).map(width).collect();
        let line = |cells: &[String]| {
            let mut out = String::new();
            for (i, c) in cells.iter().enumerate() {
                let w = widths.get(i).copied().unwrap_or(0);
                let pad = " ".repeat(w.saturating_sub(c.width()));
                if i > 0 {
                    out.push_str("  ");
                }
                if self.columns.get(i).is_some_and(PreviewColumn::is_numeric) {
                    out.push_str(&pad);
                    out.push_str(c);
                } else {
                    out.push_str(c);
                    out.push_str(&pad);
                }
            }
            out.trim_end().to_owned()
        };
        let rule = || {
            widths
                .iter()
                .map(|w| "-".repeat(*w))
                .collect::<Vec<_>>()
                .join("  ")
        };
        let mut out = vec![line(&names), rule()];
        out.extend(rows.iter().map(|r| line(r)));
        if let Some(t) = totals {
            out.push(rule());
            out.push(line(&t));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::{Column, Table, summarize};
    use serde_json::json;

    fn table(rows: usize, columns: usize) -> Table {
        let mut cols = vec![Column::new("City", ColumnType::String)];
        cols.extend((1..columns).map(|i| Column::new(format!("N{i}"), ColumnType::Decimal)));
        Table {
            rows: (0..rows)
                .map(|r| {
                    let mut row = vec![json!(format!("city {r}"))];
                    row.extend((1..columns).map(|i| json!(1000.5 * (r * i) as f64)));
                    row
                })
                .collect(),
            columns: cols,
        }
    }

    fn preview_of(t: &Table) -> Preview {
        build(
            t,
            &summarize(t).expect("valid"),
            &jiff::tz::TimeZone::UTC,
            &Default::default(),
        )
    }

    #[test]
    fn given_many_rows_when_previewed_then_the_first_fifty_are_kept_formatted_with_totals() {
        let p = preview_of(&table(120, 3));
        assert_eq!(p.rows.len(), KEPT_ROWS);
        assert_eq!(p.row_count, 120);
        assert_eq!(p.rows[2], ["city 2", "2,001.00", "4,002.00"]);
        assert_eq!(p.values[2][1], json!(2001.0));
        let totals = p.totals_line().expect("numeric columns");
        assert_eq!(totals[0], "Total");
        assert_eq!(totals[1], "7,143,570.00");
        assert_eq!(
            p.total_values.as_ref().map(|t| t[..2].to_vec()),
            Some(vec![json!(null), json!(7143570.0)])
        );
        assert_eq!(p.first(10).len(), 10);
        assert_eq!(p.rows_after(10), 110);
        assert_eq!(Preview::from_bytes(&p.to_bytes()).expect("round trip"), p);
    }

    #[test]
    fn given_a_wide_report_with_long_cells_when_previewed_then_columns_and_cells_are_bounded() {
        let mut t = table(3, 20);
        t.rows[0][0] = json!("x".repeat(5000));
        let p = preview_of(&t);
        assert_eq!(p.columns.len(), MAX_COLUMNS);
        assert_eq!(p.hidden_columns, 12);
        assert!(p.rows.iter().all(|r| r.len() == MAX_COLUMNS));
        assert_eq!(p.rows[0][0].chars().count(), MAX_CELL);
        assert!(p.rows[0][0].ends_with('…'));
        assert_eq!(
            p.values[0][0].as_str().map(|s| s.chars().count()),
            Some(MAX_VALUE)
        );
        assert!(p.to_bytes().len() <= MAX_BYTES);
    }

    #[test]
    fn given_huge_json_cells_and_long_names_when_previewed_then_the_stored_preview_stays_bounded() {
        let mut t = table(50, 2);
        t.columns[0].name = format!("{}{}", "n".repeat(60), "unique tail");
        for row in &mut t.rows {
            row[0] = json!({"blob": "y".repeat(100_000), "list": vec![1; 10_000]});
        }
        let p = preview_of(&t);
        assert!(p.to_bytes().len() <= MAX_BYTES, "{}", p.to_bytes().len());
        assert!(
            p.values[0][0]
                .as_str()
                .is_some_and(|s| s.chars().count() == MAX_VALUE)
        );
        assert!(p.rows[0][0].chars().count() <= MAX_CELL);
        assert!(
            p.columns[0].name.ends_with("unique tail"),
            "names kept whole"
        );
        assert!(
            p.text_table(1, 30)[0].chars().count() < 80,
            "and cut for display"
        );
    }

    #[test]
    fn given_a_preview_when_laid_out_as_text_then_numbers_align_right_under_a_rule() {
        let p = preview_of(&table(2, 2));
        let lines = p.text_table(10, 30);
        assert_eq!(
            lines,
            [
                "City          N1",
                "------  --------",
                "city 0      0.00",
                "city 1  1,000.50",
                "------  --------",
                "Total   1,000.50",
            ]
        );
        assert_eq!(p.text_table(1, 30).len(), 5);
    }

    #[test]
    fn given_no_rows_when_previewed_then_there_is_no_totals_line_in_the_text() {
        let p = preview_of(&table(0, 2));
        assert!(p.rows.is_empty());
        assert_eq!(p.text_table(10, 30).len(), 2);
    }
}
