//! Rows read in order from where they are, as many times as a render needs
//! (check and total, size the columns, draw, write the CSV): a parsed
//! [`Table`], or a claim-checked object kept as its raw bytes and parsed
//! again on every pass, one row at a time ([`CsvRows`], [`JsonRows`]). A
//! 100,000-row claim check is then held as its ~15 MB of text, never as a
//! table of JSON values several times that size.

use super::{
    Column, ColumnType, MAX_COLUMNS, MAX_DECIMALS, OUTSIDE_I64, Table, TableError, Total,
    decimal_value, shown,
};
use crate::domain::Timestamp;
use serde::de::{DeserializeSeed, Error as _, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use std::cell::Cell;
use std::ops::ControlFlow;

/// A source of rows under fixed columns.
pub trait Rows: Send + Sync {
    /// The columns every row follows.
    fn columns(&self) -> &[Column];

    /// Calls `f` with each row in order until it returns `Break` or the rows
    /// end. Fails when the source cannot be read as rows.
    fn scan(&self, f: &mut dyn FnMut(&[Value]) -> ControlFlow<()>) -> Result<(), TableError>;

    /// The claim-checked object's bytes, for sources that hold them.
    fn raw(&self) -> Option<&[u8]> {
        None
    }
}

impl Rows for Table {
    fn columns(&self) -> &[Column] {
        &self.columns
    }

    fn scan(&self, f: &mut dyn FnMut(&[Value]) -> ControlFlow<()>) -> Result<(), TableError> {
        for row in &self.rows {
            if f(row).is_break() {
                break;
            }
        }
        Ok(())
    }
}

/// What one checking pass found.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// Data rows.
    pub rows: usize,
    /// Each column's total (`None` for non-numeric columns).
    pub totals: Vec<Option<Total>>,
}

/// Checks, in one pass, that every row matches the columns in width and
/// type, that every number can be totalled exactly (integers within i64,
/// finite decimals) and that the totals are finite; counts the rows and
/// totals the numeric columns. `null` is allowed anywhere.
pub fn summarize(rows: &dyn Rows) -> Result<Summary, TableError> {
    let columns = rows.columns();
    if columns.is_empty() {
        return Err(TableError::NoColumns);
    }
    if columns.len() > MAX_COLUMNS {
        return Err(TableError::TooManyColumns(columns.len()));
    }
    check_declarations(columns)?;
    let mut sums = Sums::new(columns);
    let mut count = 0;
    let mut failed = None;
    rows.scan(&mut |row| {
        count += 1;
        match check_row(columns, count, row).and_then(|()| sums.add(columns, count, row)) {
            Ok(()) => ControlFlow::Continue(()),
            Err(e) => {
                failed = Some(e);
                ControlFlow::Break(())
            }
        }
    })?;
    if let Some(e) = failed {
        return Err(e);
    }
    Ok(Summary {
        rows: count,
        totals: sums.finish(columns)?,
    })
}

/// Checks what each column declares beyond its type.
fn check_declarations(columns: &[Column]) -> Result<(), TableError> {
    for c in columns {
        let refuse = |reason: String| TableError::Declaration {
            column: shown(&c.name),
            reason,
        };
        match (c.kind, c.decimals) {
            (_, None) => {}
            (ColumnType::Decimal, Some(d)) if d <= MAX_DECIMALS => {}
            (ColumnType::Decimal, Some(d)) => {
                return Err(refuse(format!(
                    "{d} decimals is more than the {MAX_DECIMALS} allowed"
                )));
            }
            (kind, Some(_)) => {
                return Err(refuse(format!(
                    "decimals are for decimal columns, not {kind:?}"
                )));
            }
        }
    }
    Ok(())
}

/// The totals of the numeric columns, in one pass, without the type checks
/// of [`summarize`] beyond what totalling needs.
pub fn totals_of(rows: &dyn Rows) -> Result<Vec<Option<Total>>, TableError> {
    let columns = rows.columns();
    let mut sums = Sums::new(columns);
    let mut count = 0;
    let mut failed = None;
    rows.scan(&mut |row| {
        count += 1;
        match sums.add(columns, count, row) {
            Ok(()) => ControlFlow::Continue(()),
            Err(e) => {
                failed = Some(e);
                ControlFlow::Break(())
            }
        }
    })?;
    match failed {
        Some(e) => Err(e),
        None => sums.finish(columns),
    }
}

/// Checks one row (1-based `r`) against the columns.
fn check_row(columns: &[Column], r: usize, row: &[Value]) -> Result<(), TableError> {
    if row.len() != columns.len() {
        return Err(TableError::Width {
            row: r,
            got: row.len(),
            expected: columns.len(),
        });
    }
    for (cell, col) in row.iter().zip(columns) {
        let problem = |reason: &str| TableError::Value {
            row: r,
            column: shown(&col.name),
            reason: reason.to_owned(),
        };
        let ok = match (col.kind, cell) {
            (_, Value::Null) => true,
            (ColumnType::String, _) => true,
            (ColumnType::Integer, Value::Number(n)) => {
                if n.is_u64() && !n.is_i64() {
                    return Err(problem(OUTSIDE_I64));
                }
                n.is_i64()
            }
            (ColumnType::Decimal, Value::Number(_) | Value::String(_)) => {
                match decimal_value(cell) {
                    Ok(found) => found.is_some(),
                    Err(reason) => return Err(problem(reason)),
                }
            }
            (ColumnType::DateTime, Value::String(s)) => match Timestamp::parse(s) {
                Ok(_) => true,
                Err(e @ crate::domain::time::TimestampError::OutOfRange) => {
                    return Err(problem(&e.to_string()));
                }
                Err(_) => false,
            },
            (ColumnType::Boolean, Value::Bool(_)) => true,
            _ => false,
        };
        if !ok {
            return Err(TableError::Cell {
                row: r,
                column: shown(&col.name),
                expected: col.kind,
                got: crate::contract::display::display(&cell.to_string(), 60),
            });
        }
    }
    Ok(())
}

/// Running totals of the numeric columns: integers exactly in 128 bits,
/// decimals as f64 checked for finiteness at the end.
struct Sums {
    integers: Vec<i128>,
    decimals: Vec<f64>,
}

impl Sums {
    fn new(columns: &[Column]) -> Self {
        Sums {
            integers: vec![0; columns.len()],
            decimals: vec![0.0; columns.len()],
        }
    }

    fn add(&mut self, columns: &[Column], r: usize, row: &[Value]) -> Result<(), TableError> {
        for (i, (col, v)) in columns.iter().zip(row).enumerate() {
            if v.is_null() {
                continue;
            }
            let problem = |reason: &str| TableError::Value {
                row: r,
                column: shown(&col.name),
                reason: reason.to_owned(),
            };
            match col.kind {
                ColumnType::Integer => {
                    let n = v.as_i64().ok_or_else(|| problem("not a 64-bit integer"))?;
                    let sum = &mut self.integers[i];
                    *sum = sum
                        .checked_add(i128::from(n))
                        .ok_or_else(|| TableError::Total {
                            column: shown(&col.name),
                            reason: "the total overflows".into(),
                        })?;
                }
                ColumnType::Decimal => {
                    let f = decimal_value(v)
                        .map_err(problem)?
                        .ok_or_else(|| problem("not a decimal"))?;
                    self.decimals[i] += f;
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn finish(self, columns: &[Column]) -> Result<Vec<Option<Total>>, TableError> {
        columns
            .iter()
            .enumerate()
            .map(|(i, col)| match col.kind {
                ColumnType::Integer => Ok(Some(Total::Integer(self.integers[i]))),
                ColumnType::Decimal if self.decimals[i].is_finite() => {
                    Ok(Some(Total::Decimal(self.decimals[i])))
                }
                ColumnType::Decimal => Err(TableError::Total {
                    column: shown(&col.name),
                    reason: "the total is beyond ±1.8e308".into(),
                }),
                _ => Ok(None),
            })
            .collect()
    }
}

/// Claim-checked CSV, kept as its bytes: RFC 4180 with a header row that
/// must name the declared columns in order; empty cells are `null`; cells
/// are converted to their column's type on every pass (integers must fit in
/// i64, decimals must be finite).
pub struct CsvRows {
    bytes: Vec<u8>,
    columns: Vec<Column>,
}

impl CsvRows {
    /// Checks the header against `columns`; the rows are read by [`Rows::scan`].
    pub fn new(bytes: Vec<u8>, columns: Vec<Column>) -> Result<Self, String> {
        use crate::contract::display::display;
        let mut reader = ::csv::ReaderBuilder::new()
            .has_headers(true)
            .from_reader(bytes.as_slice());
        let header: Vec<String> = reader
            .headers()
            .map_err(|e| format!("CSV header: {}", display(&e.to_string(), 200)))?
            .iter()
            .map(|h| h.trim_start_matches('\u{feff}').to_owned())
            .collect();
        if header.len() != columns.len() {
            return Err(format!(
                "CSV header has {} names, the columns are {}",
                header.len(),
                columns.len()
            ));
        }
        if let Some((i, (h, c))) = header
            .iter()
            .zip(&columns)
            .enumerate()
            .find(|(_, (h, c))| **h != c.name)
        {
            return Err(format!(
                "CSV header name {} is {:?}, expected {:?}",
                i + 1,
                display(h, 100),
                shown(&c.name)
            ));
        }
        Ok(CsvRows { bytes, columns })
    }
}

/// One CSV cell as its column's value.
fn csv_cell(cell: &str, col: &Column, r: usize) -> Result<Value, String> {
    use crate::contract::display::display;
    let bad = |why: &str| {
        format!(
            "CSV row {r}, column {:?}: {:?} {why}",
            shown(&col.name),
            display(cell, 60),
        )
    };
    let not_a = || bad(&format!("is not {:?}", col.kind));
    if cell.is_empty() {
        return Ok(Value::Null);
    }
    Ok(match col.kind {
        ColumnType::String | ColumnType::DateTime => Value::String(cell.to_owned()),
        ColumnType::Integer => match cell.parse::<i64>() {
            Ok(n) => Value::from(n),
            Err(_) if cell.parse::<i128>().is_ok() => {
                return Err(bad("is outside the 64-bit signed integer range"));
            }
            Err(_) => return Err(not_a()),
        },
        ColumnType::Decimal => {
            let f = cell.parse::<f64>().map_err(|_| not_a())?;
            serde_json::Number::from_f64(f)
                .map(Value::Number)
                .ok_or_else(|| bad("is not a finite number"))?
        }
        ColumnType::Boolean => match cell.to_ascii_lowercase().as_str() {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => return Err(not_a()),
        },
    })
}

impl Rows for CsvRows {
    fn columns(&self) -> &[Column] {
        &self.columns
    }

    fn scan(&self, f: &mut dyn FnMut(&[Value]) -> ControlFlow<()>) -> Result<(), TableError> {
        use crate::contract::display::display;
        let mut reader = ::csv::ReaderBuilder::new()
            .has_headers(true)
            .from_reader(self.bytes.as_slice());
        let mut record = ::csv::StringRecord::new();
        let mut row: Vec<Value> = Vec::with_capacity(self.columns.len());
        let mut r = 0;
        loop {
            match reader.read_record(&mut record) {
                Ok(false) => return Ok(()),
                Ok(true) => {}
                Err(e) => {
                    return Err(TableError::Unreadable(format!(
                        "CSV row {}: {}",
                        r + 1,
                        display(&e.to_string(), 200)
                    )));
                }
            }
            r += 1;
            row.clear();
            for (cell, col) in record.iter().zip(&self.columns) {
                row.push(csv_cell(cell, col, r).map_err(TableError::Unreadable)?);
            }
            if f(&row).is_break() {
                return Ok(());
            }
        }
    }

    fn raw(&self) -> Option<&[u8]> {
        Some(&self.bytes)
    }
}

/// A claim-checked JSON table (`{"columns": [...], "rows": [[...], ...]}`),
/// kept as its bytes; each pass streams the `rows` array one row at a time.
pub struct JsonRows {
    bytes: Vec<u8>,
    columns: Vec<Column>,
}

impl JsonRows {
    /// Reads the whole document once: it must be a table with `columns` and
    /// `rows` and nothing else, and every row an array.
    pub fn new(bytes: Vec<u8>) -> Result<Self, String> {
        let columns = walk(
            &bytes,
            &mut |_| ControlFlow::Continue(()),
            &Cell::new(false),
        )
        .map_err(|e| format!("claim-check object is not a valid table: {e}"))?;
        Ok(JsonRows { bytes, columns })
    }
}

impl Rows for JsonRows {
    fn columns(&self) -> &[Column] {
        &self.columns
    }

    fn scan(&self, f: &mut dyn FnMut(&[Value]) -> ControlFlow<()>) -> Result<(), TableError> {
        let stopped = Cell::new(false);
        match walk(&self.bytes, f, &stopped) {
            Ok(_) => Ok(()),
            Err(_) if stopped.get() => Ok(()),
            Err(e) => Err(TableError::Unreadable(format!(
                "claim-check object is not a valid table: {e}"
            ))),
        }
    }

    fn raw(&self) -> Option<&[u8]> {
        Some(&self.bytes)
    }
}

/// Parses a JSON table, handing each row to `on_row`, and returns its
/// columns. When `on_row` breaks, parsing ends with an error and `stopped`
/// is set.
fn walk(
    bytes: &[u8],
    on_row: &mut dyn FnMut(&[Value]) -> ControlFlow<()>,
    stopped: &Cell<bool>,
) -> Result<Vec<Column>, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let columns = serde::Deserializer::deserialize_map(&mut de, TableVisitor { on_row, stopped })?;
    de.end()?;
    Ok(columns)
}

struct TableVisitor<'a> {
    on_row: &'a mut dyn FnMut(&[Value]) -> ControlFlow<()>,
    stopped: &'a Cell<bool>,
}

impl<'de> Visitor<'de> for TableVisitor<'_> {
    type Value = Vec<Column>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a table object with columns and rows")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Vec<Column>, A::Error> {
        let mut columns: Option<Vec<Column>> = None;
        let mut rows_seen = false;
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            match key.as_ref() {
                "columns" if columns.is_none() => columns = Some(map.next_value()?),
                "rows" if !rows_seen => {
                    map.next_value_seed(RowsSeed {
                        on_row: &mut *self.on_row,
                        stopped: self.stopped,
                    })?;
                    rows_seen = true;
                }
                "columns" | "rows" => return Err(A::Error::duplicate_field("columns or rows")),
                other => return Err(A::Error::unknown_field(other, &["columns", "rows"])),
            }
        }
        if !rows_seen {
            return Err(A::Error::missing_field("rows"));
        }
        columns.ok_or_else(|| A::Error::missing_field("columns"))
    }
}

struct RowsSeed<'a> {
    on_row: &'a mut dyn FnMut(&[Value]) -> ControlFlow<()>,
    stopped: &'a Cell<bool>,
}

impl<'de> DeserializeSeed<'de> for RowsSeed<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for RowsSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an array of rows")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(row) = seq.next_element::<Vec<Value>>()? {
            if (self.on_row)(&row).is_break() {
                // Stop reading: the caller has what it needs.
                self.stopped.set(true);
                return Err(A::Error::custom("scan stopped"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn columns() -> Vec<Column> {
        vec![
            Column::new("City", ColumnType::String),
            Column::new("Orders", ColumnType::Integer),
        ]
    }

    fn collect(rows: &dyn Rows) -> Vec<Vec<Value>> {
        let mut out = Vec::new();
        rows.scan(&mut |r| {
            out.push(r.to_vec());
            ControlFlow::Continue(())
        })
        .expect("scans");
        out
    }

    #[test]
    fn csv_json_and_a_table_give_the_same_rows_and_summary() {
        let table = Table {
            columns: columns(),
            rows: vec![
                vec![json!("Zürich"), json!(3)],
                vec![json!("東京"), json!(null)],
            ],
        };
        let csv = CsvRows::new(
            b"City,Orders\nZ\xc3\xbcrich,3\n\xe6\x9d\xb1\xe4\xba\xac,\n".to_vec(),
            columns(),
        )
        .expect("header matches");
        let json = JsonRows::new(serde_json::to_vec(&table).expect("json")).expect("a table");
        for source in [&table as &dyn Rows, &csv, &json] {
            assert_eq!(source.columns(), columns().as_slice());
            assert_eq!(collect(source), table.rows);
            let s = summarize(source).expect("valid");
            assert_eq!(s.rows, 2);
            assert_eq!(s.totals, vec![None, Some(Total::Integer(3))]);
        }
        assert!(table.raw().is_none() && csv.raw().is_some() && json.raw().is_some());
    }

    #[test]
    fn a_scan_stops_when_told_and_can_run_again() {
        let rows: Vec<Vec<Value>> = (0..100).map(|i| vec![json!("c"), json!(i)]).collect();
        let json = JsonRows::new(
            serde_json::to_vec(&json!({"rows": rows, "columns": columns()})).expect("json"),
        )
        .expect("rows before columns is fine");
        let mut seen = 0;
        json.scan(&mut |_| {
            seen += 1;
            if seen == 10 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .expect("a stop is not an error");
        assert_eq!(seen, 10);
        assert_eq!(collect(&json).len(), 100);
    }

    #[test]
    fn malformed_json_tables_are_refused_whole_at_once() {
        for bad in [
            &br#"{"columns": [], "rows": [1]}"#[..],
            br#"{"columns": [], "rows": [], "extra": 1}"#,
            br#"{"rows": []}"#,
            br#"{"columns": []}"#,
            br#"{"columns": [], "rows": [[]]} trailing"#,
            br#"{"columns": [], "rows": [[], "#,
            br#"[]"#,
            br#"[[], []]"#,
        ] {
            assert!(
                JsonRows::new(bad.to_vec()).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn a_bad_csv_cell_is_unreadable_with_its_row_and_column() {
        let csv = CsvRows::new(b"City,Orders\nA,1\nB,many\n".to_vec(), columns()).expect("header");
        let e = summarize(&csv).expect_err("refused");
        assert!(
            matches!(&e, TableError::Unreadable(m) if m.contains("row 2") && m.contains("Orders")),
            "{e}"
        );
    }
}
