//! The CSV of an execution's rows: a header of column names, then one line
//! per row with machine-readable values (RFC 4180 quoting).
//!
//! Spreadsheets run cells that start with `=`, `+`, `-` or `@` (or a tab,
//! carriage return or line feed, or the full-width `＝＋－＠`) as formulas.
//! Such text — column names and cells of every non-numeric column — is
//! written with a leading `'` (the OWASP advice), so it shows as text.
//! Numbers in `integer` and `decimal` columns are written plain (`-2`,
//! `-3.5`); a text cell such as `"-2"` in a `string` column is text, so it
//! gets the quote like any other.

use crate::contract::{ColumnType, Rows};
use serde_json::Value;
use std::ops::ControlFlow;

/// Renders CSV bytes, one row at a time. Rows a source cannot read (which
/// checking refuses before rendering) end the file early.
pub fn render_csv(rows: &dyn Rows) -> Vec<u8> {
    let columns = rows.columns();
    let mut w = ::csv::Writer::from_writer(Vec::new());
    let _ = w.write_record(columns.iter().map(|c| neutralise(&c.name)));
    let _ = rows.scan(&mut |row| {
        let cells = row.iter().zip(columns).map(|(v, c)| cell_text(v, c.kind));
        let _ = w.write_record(cells);
        ControlFlow::Continue(())
    });
    w.into_inner().unwrap_or_default()
}

/// One cell as CSV text: numbers in numeric columns plain, anything else
/// neutralised.
fn cell_text(v: &Value, kind: ColumnType) -> String {
    let numeric = matches!(kind, ColumnType::Integer | ColumnType::Decimal);
    match v {
        Value::Null => String::new(),
        Value::Number(n) if numeric => n.to_string(),
        // A decimal given as text, e.g. "-3.50": a number if it reads as one.
        Value::String(s) if numeric && s.parse::<f64>().is_ok_and(f64::is_finite) => s.clone(),
        Value::String(s) => neutralise(s),
        other => neutralise(&other.to_string()),
    }
}

/// Whether a spreadsheet would read text starting with `c` as a formula.
fn is_formula_start(c: char) -> bool {
    matches!(
        c,
        '=' | '+' | '-' | '@' | '\t' | '\r' | '\n' | '＝' | '＋' | '－' | '＠'
    )
}

/// Invisible characters a reader may drop from the start of a field (a
/// byte-order mark at the start of the file, zero-width spaces and joiners).
fn is_invisible_lead(c: char) -> bool {
    matches!(
        c,
        '\u{feff}' | '\u{200b}' | '\u{200c}' | '\u{200d}' | '\u{2060}'
    )
}

/// `s` with a leading `'` when it starts like a formula, looking past
/// invisible leading characters (which also get the `'`, so that a dropped
/// byte-order mark can never turn the text behind it into a formula or
/// empty the header line).
pub fn neutralise(s: &str) -> String {
    let visible = s.trim_start_matches(is_invisible_lead);
    match visible.chars().next() {
        Some(c) if is_formula_start(c) => format!("'{s}"),
        _ if visible.len() != s.len() => format!("'{s}"),
        _ => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::Table;

    fn csv_of(table: serde_json::Value) -> String {
        let table: Table = serde_json::from_value(table).expect("table");
        String::from_utf8(render_csv(&table)).expect("utf-8")
    }

    #[test]
    fn a_byte_order_mark_cannot_smuggle_a_formula_or_empty_the_header() {
        // Found by the claim_json fuzz target (fuzz/regressions/claim_json).
        assert_eq!(neutralise("\u{feff}=cmd"), "'\u{feff}=cmd");
        assert_eq!(neutralise("\u{feff}"), "'\u{feff}");
        assert_eq!(neutralise("\u{200b}-2"), "'\u{200b}-2");
        assert_eq!(neutralise("plain"), "plain");
        let text = csv_of(serde_json::json!({
            "columns": [{"name": "\u{feff}=HYPERLINK(\"x\")"}, {"name": "n"}],
            "rows": []
        }));
        assert!(text.starts_with("\"'\u{feff}=HYPERLINK"), "{text:?}");
    }

    #[test]
    fn rows_round_trip_with_quoting() {
        let text = csv_of(serde_json::json!({
            "columns": [{"name": "City"}, {"name": "n", "type": "integer"}],
            "rows": [["Αθήνα, Ελλάδα", 1], ["東京", null]]
        }));
        assert_eq!(text, "City,n\n\"Αθήνα, Ελλάδα\",1\n東京,\n");
    }

    #[test]
    fn given_text_cells_that_start_like_formulas_when_rendered_then_each_gets_a_leading_quote() {
        // Given one string cell per formula trigger
        let triggers = [
            "=HYPERLINK(\"http://x\")",
            "+1+1",
            "-2",
            "@SUM(A1)",
            "\tx",
            "\rx",
            "\nx",
            "＝1+1",
        ];
        let rows: Vec<_> = triggers.iter().map(|t| serde_json::json!([t])).collect();
        // When the CSV is rendered
        let table: Table = serde_json::from_value(serde_json::json!({
            "columns": [{"name": "Note"}], "rows": rows
        }))
        .expect("table");
        let bytes = render_csv(&table);
        // Then reading it back gives every cell with a quote in front
        let mut reader = ::csv::Reader::from_reader(bytes.as_slice());
        let cells: Vec<String> = reader
            .records()
            .map(|r| r.expect("record")[0].to_owned())
            .collect();
        let expected: Vec<String> = triggers.iter().map(|t| format!("'{t}")).collect();
        assert_eq!(cells, expected);
    }

    #[test]
    fn given_negative_numbers_in_numeric_columns_when_rendered_then_they_stay_plain_numbers() {
        let text = csv_of(serde_json::json!({
            "columns": [
                {"name": "n", "type": "integer"},
                {"name": "d", "type": "decimal"},
                {"name": "s", "type": "decimal"},
                {"name": "ok", "type": "boolean"},
                {"name": "at", "type": "date_time"}
            ],
            "rows": [[-2, -3.5, "-3.50", false, "2026-11-26T08:00:00Z"]]
        }));
        assert_eq!(
            text,
            "n,d,s,ok,at\n-2,-3.5,-3.50,false,2026-11-26T08:00:00Z\n"
        );
    }

    #[test]
    fn given_a_column_name_or_a_non_numeric_text_in_a_numeric_column_when_rendered_then_it_is_neutralised()
     {
        let text = csv_of(serde_json::json!({
            "columns": [{"name": "=cmd|' /C calc'!A0", "type": "decimal"}],
            "rows": [["-1+cmd"]]
        }));
        assert_eq!(text, "'=cmd|' /C calc'!A0\n'-1+cmd\n");
    }

    #[test]
    fn given_ordinary_text_when_rendered_then_it_is_unchanged() {
        assert_eq!(neutralise("Zürich"), "Zürich");
        assert_eq!(neutralise("a=b"), "a=b");
        assert_eq!(neutralise(" -2"), " -2");
        assert_eq!(neutralise(""), "");
    }
}
