//! Queue message contracts. Every payload is a tagged, versioned enum, so a
//! later version can live beside the old one while messages drain.

use crate::domain::Timestamp;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// SQS refuses bodies over 256 KiB per message by default (1 MiB with the
/// larger limit); we reject anything larger than this before parsing.
pub const MAX_INLINE_BODY_BYTES: usize = 1024 * 1024;

/// What the reporting system puts on the executions queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum ExecutionMessage {
    /// A report execution finished.
    #[serde(rename = "execution_completed.v1")]
    CompletedV1(ExecutionCompletedV1),
}

/// Version 1 of the execution-completed event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecutionCompletedV1 {
    pub execution_id: String,
    pub report_id: String,
    pub report_name: String,
    pub generated_at: Timestamp,
    /// IANA zone name, e.g. `Europe/Zurich`.
    #[serde(default = "utc")]
    pub time_zone: String,
    #[serde(default)]
    pub parameters: BTreeMap<String, String>,
    pub data: ReportData,
}

fn utc() -> String {
    "UTC".into()
}

/// Where the rows are.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "source", rename_all = "snake_case")]
pub enum ReportData {
    /// Rows inside the message.
    Inline(Table),
    /// A claim check: the rows are in an S3 object.
    S3(ClaimCheck),
}

/// An S3 object holding the rows, for reports of any size.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimCheck {
    /// `s3://bucket/key`.
    pub uri: String,
    #[serde(default)]
    pub format: ClaimFormat,
    /// Required for CSV (which has no types); for JSON, when given, they
    /// must equal the stored table's columns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub columns: Option<Vec<Column>>,
}

/// The claim-checked object's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClaimFormat {
    /// A JSON [`Table`].
    #[default]
    Json,
    /// RFC 4180 CSV with a header row of the column names.
    Csv,
}

/// Columns and rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Table {
    pub columns: Vec<Column>,
    pub rows: Vec<Vec<serde_json::Value>>,
}

/// A column and its type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Column {
    pub name: String,
    #[serde(rename = "type", default)]
    pub kind: ColumnType,
}

/// Column types the renderer formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ColumnType {
    #[default]
    String,
    Integer,
    Decimal,
    DateTime,
    Boolean,
}

/// Why a table was refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TableError {
    #[error("table has no columns")]
    NoColumns,
    #[error("row {row} has {got} cells, expected {expected}")]
    Width {
        row: usize,
        got: usize,
        expected: usize,
    },
    #[error("row {row}, column {column:?}: expected {expected:?}, got {got}")]
    Cell {
        row: usize,
        column: String,
        expected: ColumnType,
        got: String,
    },
}

impl Table {
    /// Checks that every row matches the columns in width and type. `null`
    /// is allowed anywhere.
    pub fn validate(&self) -> Result<(), TableError> {
        if self.columns.is_empty() {
            return Err(TableError::NoColumns);
        }
        for (r, row) in self.rows.iter().enumerate() {
            if row.len() != self.columns.len() {
                return Err(TableError::Width {
                    row: r + 1,
                    got: row.len(),
                    expected: self.columns.len(),
                });
            }
            for (cell, col) in row.iter().zip(&self.columns) {
                use serde_json::Value as V;
                let ok = match (col.kind, cell) {
                    (_, V::Null) => true,
                    (ColumnType::String, _) => true,
                    (ColumnType::Integer, V::Number(n)) => n.is_i64() || n.is_u64(),
                    (ColumnType::Decimal, V::Number(_)) => true,
                    (ColumnType::Decimal, V::String(s)) => s.parse::<f64>().is_ok(),
                    (ColumnType::DateTime, V::String(s)) => Timestamp::parse(s).is_ok(),
                    (ColumnType::Boolean, V::Bool(_)) => true,
                    _ => false,
                };
                if !ok {
                    let mut got = cell.to_string();
                    got.truncate(60);
                    return Err(TableError::Cell {
                        row: r + 1,
                        column: col.name.clone(),
                        expected: col.kind,
                        got,
                    });
                }
            }
        }
        Ok(())
    }
}

impl Table {
    /// Parses claim-checked CSV against its declared columns: the header must
    /// name the columns in order; empty cells become `null`; cells are
    /// converted to their column's type.
    pub fn from_csv(bytes: &[u8], columns: Vec<Column>) -> Result<Self, String> {
        let mut reader = ::csv::ReaderBuilder::new()
            .has_headers(true)
            .from_reader(bytes);
        let header: Vec<String> = reader
            .headers()
            .map_err(|e| format!("CSV header: {e}"))?
            .iter()
            .map(|h| h.trim_start_matches('\u{feff}').to_owned())
            .collect();
        let names: Vec<&str> = columns.iter().map(|c| c.name.as_str()).collect();
        if header != names {
            return Err(format!(
                "CSV header {header:?} does not match the columns {names:?}"
            ));
        }
        let mut rows = Vec::new();
        for (r, record) in reader.records().enumerate() {
            let record = record.map_err(|e| format!("CSV row {}: {e}", r + 1))?;
            let mut row = Vec::with_capacity(columns.len());
            for (cell, col) in record.iter().zip(&columns) {
                use serde_json::Value as V;
                let bad = || {
                    format!(
                        "CSV row {}, column {:?}: {cell:?} is not {:?}",
                        r + 1,
                        col.name,
                        col.kind
                    )
                };
                let value = if cell.is_empty() {
                    V::Null
                } else {
                    match col.kind {
                        ColumnType::String | ColumnType::DateTime => V::String(cell.to_owned()),
                        ColumnType::Integer => V::from(cell.parse::<i64>().map_err(|_| bad())?),
                        ColumnType::Decimal => {
                            let f = cell.parse::<f64>().map_err(|_| bad())?;
                            serde_json::Number::from_f64(f)
                                .map(V::Number)
                                .ok_or_else(bad)?
                        }
                        ColumnType::Boolean => match cell.to_ascii_lowercase().as_str() {
                            "true" => V::Bool(true),
                            "false" => V::Bool(false),
                            _ => return Err(bad()),
                        },
                    }
                };
                row.push(value);
            }
            rows.push(row);
        }
        Ok(Table { columns, rows })
    }
}

/// What render sends to fan-out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum FanoutTask {
    /// Queue deliveries for an execution, from `cursor` on (a continuation
    /// when one invocation could not finish every target).
    #[serde(rename = "fanout.v1")]
    FanoutV1 {
        execution_id: String,
        #[serde(default)]
        cursor: Option<String>,
        /// Attempts queued by earlier invocations of this fan-out.
        #[serde(default)]
        queued_so_far: u64,
    },
}

/// What fan-out sends to a channel queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum DeliveryTask {
    /// Deliver one execution to one target.
    #[serde(rename = "deliver.v1")]
    DeliverV1 {
        attempt_id: String,
        execution_id: String,
        target_id: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_event_parses() {
        let body = include_str!("../../events/execution-completed.json");
        let ExecutionMessage::CompletedV1(m) = serde_json::from_str(body).expect("sample parses");
        assert_eq!(m.report_id, "rpt-weekly-sales");
        let ReportData::Inline(table) = m.data else {
            panic!("sample is inline")
        };
        table.validate().expect("sample rows match columns");
    }

    #[test]
    fn claim_check_sample_parses_and_its_csv_matches_its_columns() {
        let body = include_str!("../../events/execution-completed-claim-check.json");
        let ExecutionMessage::CompletedV1(m) = serde_json::from_str(body).expect("sample parses");
        let ReportData::S3(check) = m.data else {
            panic!("sample is a claim check")
        };
        assert_eq!(check.format, ClaimFormat::Csv);
        let csv = include_bytes!("../../events/weekly-sales-2026-w48.csv");
        let table = Table::from_csv(csv, check.columns.expect("columns")).expect("CSV parses");
        table.validate().expect("typed cells");
        assert_eq!(table.rows.len(), 12);
        assert!(table.rows.iter().any(|r| r[0] == "東京"));
    }

    #[test]
    fn csv_with_the_wrong_header_or_a_bad_cell_is_refused() {
        let cols: Vec<Column> =
            serde_json::from_str(r#"[{"name":"a"},{"name":"n","type":"integer"}]"#).expect("cols");
        assert!(Table::from_csv(b"a,x\n1,2\n", cols.clone()).is_err());
        let err = Table::from_csv(b"a,n\nq,lots\n", cols.clone()).expect_err("bad cell");
        assert!(err.contains("row 1"), "{err}");
        let ok = Table::from_csv(b"a,n\nq,\n", cols).expect("empty is null");
        assert_eq!(ok.rows[0][1], serde_json::Value::Null);
    }

    #[test]
    fn unknown_versions_are_refused() {
        let body = r#"{"type":"execution_completed.v9","execution_id":"e"}"#;
        assert!(serde_json::from_str::<ExecutionMessage>(body).is_err());
    }

    #[test]
    fn rows_must_match_columns() {
        let t: Table = serde_json::from_str(
            r#"{"columns":[{"name":"n","type":"integer"}],"rows":[[1],["x"]]}"#,
        )
        .expect("shape");
        assert!(matches!(t.validate(), Err(TableError::Cell { row: 2, .. })));
        let t: Table =
            serde_json::from_str(r#"{"columns":[{"name":"n"}],"rows":[[1,2]]}"#).expect("shape");
        assert!(matches!(t.validate(), Err(TableError::Width { .. })));
    }
}
