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
    /// A claim check: a JSON [`Table`] stored in S3 (`s3://bucket/key`).
    S3 { uri: String },
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
