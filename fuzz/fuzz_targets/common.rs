//! Checks shared by the table-carrying targets (`message`, `claim_csv`,
//! `claim_json`): what the render handler does with a table once it has one
//! (validate, totals, format, CSV), plus the invariants that hold for it.

use shared::contract::{ColumnType, Table, TableError};
use shared::render::csv::render_csv;
use shared::render::{format_cell, totals};

/// Tables at most this big are rendered (keeps the targets fast).
pub const MAX_RENDER_ROWS: usize = 50;
pub const MAX_RENDER_COLUMNS: usize = 20;

/// The named zone when it resolves, else UTC (the handler refuses an
/// unknown zone; formatting in UTC still exercises the rest).
pub fn zone(name: Option<&str>) -> jiff::tz::TimeZone {
    name.and_then(shared::render::time_zone)
        .unwrap_or(jiff::tz::TimeZone::UTC)
}

fn is_numeric(kind: ColumnType) -> bool {
    matches!(kind, ColumnType::Integer | ColumnType::Decimal)
}

/// Whether a spreadsheet would read `s` as a formula (the trigger set of
/// `shared::render::csv`).
fn starts_like_formula(s: &str) -> bool {
    matches!(
        s.chars().next(),
        Some('=' | '+' | '-' | '@' | '\t' | '\r' | '\n' | '＝' | '＋' | '－' | '＠')
    )
}

/// Validates `table` the way the render handler does and checks what
/// follows from the verdict; renders the CSV (and formats every cell) when
/// the table is valid and small.
pub fn exercise_table(table: &Table, tz: &jiff::tz::TimeZone) -> Result<(), TableError> {
    let verdict = table.validate();

    // totals(): one entry per column, `Some` exactly for numeric columns,
    // never "n/a" for a table validate() accepted.
    let shown = totals(table);
    assert_eq!(shown.len(), table.columns.len());
    for (total, col) in shown.iter().zip(&table.columns) {
        assert_eq!(total.is_some(), is_numeric(col.kind), "{col:?}");
        if verdict.is_ok() {
            assert_ne!(total.as_deref(), Some("n/a"), "valid table without a total");
        }
    }
    if verdict.is_ok() {
        let sums = table.totals().expect("validate() accepted the totals");
        assert_eq!(sums.len(), table.columns.len());
    }

    if verdict.is_ok()
        && table.rows.len() <= MAX_RENDER_ROWS
        && table.columns.len() <= MAX_RENDER_COLUMNS
    {
        for row in &table.rows {
            for (cell, col) in row.iter().zip(&table.columns) {
                let _ = format_cell(cell, col, tz);
            }
        }
        check_csv(table, &render_csv(table));
    }
    verdict
}

/// The rendered CSV reads back as the same shape, and no text field starts
/// like a formula (a number in a numeric column may start with `-`).
fn check_csv(table: &Table, bytes: &[u8]) {
    let text = std::str::from_utf8(bytes).expect("render_csv writes UTF-8");
    // The csv reader drops a leading UTF-8 byte-order mark, as spreadsheets
    // do; what is left is what a spreadsheet sees in cell A1.
    let mut reader = ::csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(text.as_bytes());
    let header = reader.headers().expect("header reads back").clone();
    assert_eq!(header.len(), table.columns.len(), "header width");
    for field in &header {
        assert!(
            !starts_like_formula(field),
            "column name {field:?} would run as a formula"
        );
    }
    let mut count = 0;
    for record in reader.records() {
        let record = record.expect("record reads back");
        assert_eq!(record.len(), table.columns.len(), "row {count} width");
        for (field, col) in record.iter().zip(&table.columns) {
            let plain_number =
                is_numeric(col.kind) && field.parse::<f64>().is_ok_and(f64::is_finite);
            assert!(
                plain_number || !starts_like_formula(field),
                "cell {field:?} ({:?}) would run as a formula",
                col.kind
            );
        }
        count += 1;
    }
    assert_eq!(count, table.rows.len(), "row count");
}
