//! Claim-checked CSV objects: a few leading bytes pick the declared columns
//! (1-8, each of the five column types), the rest is the CSV. Runs
//! `Table::from_csv`, then what the render handler does next (validate,
//! totals, formatting, CSV).
//!
//! Spec: byte 0: bits 0-2 = column count - 1; bit 3 = take the names from
//! the CSV's own first line (else `c0`, `c1`, ...). Then one byte per column:
//! its type (value % 5). Then the CSV bytes.
//!
//! `from_csv` accepting a table does NOT imply `validate()` accepts it, so
//! that is not asserted: `from_csv` keeps `date_time` cells as text without
//! parsing them, and does not add up decimal columns (two cells of 1e308
//! overflow the total). What is asserted: an accepted table is rectangular
//! with the declared columns, and the only ways `validate()` can refuse it
//! are those two.

#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use shared::contract::{Column, ColumnType, Table, TableError};

const KINDS: [ColumnType; 5] = [
    ColumnType::String,
    ColumnType::Integer,
    ColumnType::Decimal,
    ColumnType::DateTime,
    ColumnType::Boolean,
];

fuzz_target!(|data: &[u8]| {
    let Some((&spec, rest)) = data.split_first() else {
        return;
    };
    let n = usize::from(spec & 0b111) + 1;
    let Some((kinds, csv)) = rest.split_at_checked(n) else {
        return;
    };
    let names = if spec & 0b1000 != 0 {
        own_header(csv)
    } else {
        Vec::new()
    };
    let columns: Vec<Column> = kinds
        .iter()
        .enumerate()
        .map(|(i, &k)| {
            Column::new(
                names.get(i).cloned().unwrap_or_else(|| format!("c{i}")),
                KINDS[usize::from(k) % KINDS.len()],
            )
        })
        .collect();

    let Ok(table) = Table::from_csv(csv, columns.clone()) else {
        return;
    };
    assert_eq!(table.columns, columns, "columns are the declared ones");
    for row in &table.rows {
        assert_eq!(row.len(), columns.len(), "every row has every column");
    }
    let tz = common::zone(Some("Europe/Zurich"));
    match common::exercise_table(&table, &tz) {
        Ok(()) => {}
        Err(TableError::Cell { expected, .. }) => {
            assert_eq!(
                expected,
                ColumnType::DateTime,
                "from_csv typed every other cell"
            )
        }
        Err(TableError::Value { column, .. }) => assert!(
            columns
                .iter()
                .any(|c| c.kind == ColumnType::DateTime && shown(&c.name) == column),
            "only a date_time cell can be out of range after from_csv: {column:?}"
        ),
        Err(TableError::Total { column, .. }) => assert!(
            columns
                .iter()
                .any(|c| c.kind == ColumnType::Decimal && shown(&c.name) == column),
            "only a decimal total can overflow after from_csv: {column:?}"
        ),
        Err(e) => panic!("from_csv accepted a table validate() refuses: {e}"),
    }
});

/// The names on the CSV's first line, as the csv crate reads them.
fn own_header(csv: &[u8]) -> Vec<String> {
    ::csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(csv)
        .headers()
        .map(|h| h.iter().map(str::to_owned).collect())
        .unwrap_or_default()
}

/// A column name as a `TableError` shows it.
fn shown(name: &str) -> String {
    shared::render::display::display(name, 100)
}
