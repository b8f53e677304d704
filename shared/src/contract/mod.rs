//! Queue message contracts. Every payload is a tagged, versioned enum, so a
//! later version can live beside the old one while messages drain.

pub mod display;
mod rows;
pub mod ses_event;

pub use rows::{CsvRows, JsonRows, Rows, Summary, summarize, totals_of};

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
    /// An operator's test send (sent by the operator API, not by the
    /// reporting system): a sample execution delivered to one target only,
    /// as an attempt of kind `test`.
    #[serde(rename = "test_send.v1")]
    TestSendV1(TestSendV1),
}

/// Version 1 of the test-send message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestSendV1 {
    /// The one target that receives it.
    pub target_id: String,
    /// The sample execution (rows inline).
    pub execution: ExecutionCompletedV1,
}

impl TestSendV1 {
    /// A small sample report for a test send to `target_id`, stamped `now`.
    pub fn sample(target_id: &str, report_id: &str, now: Timestamp) -> Self {
        let column = |name: &str, kind| Column::new(name, kind);
        let rows = [
            ("Zurich", 1250, "1234.50", true),
            ("Lisbon", 830, "987.25", true),
            ("Osaka", 412, "55.00", false),
        ];
        TestSendV1 {
            target_id: target_id.to_owned(),
            execution: ExecutionCompletedV1 {
                execution_id: format!("test-{}", uuid::Uuid::new_v4().simple()),
                report_id: report_id.to_owned(),
                report_name: "Test delivery from report-delivery".into(),
                generated_at: now,
                time_zone: "UTC".into(),
                parameters: BTreeMap::from([("test".to_owned(), "true".to_owned())]),
                data: ReportData::Inline(Table {
                    columns: vec![
                        column("City", ColumnType::String),
                        column("Orders", ColumnType::Integer),
                        column("Revenue", ColumnType::Decimal),
                        column("On target", ColumnType::Boolean),
                    ],
                    rows: rows
                        .iter()
                        .map(|(c, o, r, t)| {
                            vec![
                                serde_json::json!(c),
                                serde_json::json!(o),
                                serde_json::json!(r),
                                serde_json::json!(t),
                            ]
                        })
                        .collect(),
                }),
                chart: Some(ChartSpec {
                    kind: ChartKind::Bar,
                    x: "City".into(),
                    y: vec!["Revenue".into()],
                    title: "Revenue by city".into(),
                }),
            },
        }
    }
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
    /// A chart of the rows, drawn on the PDF's first page and sent as a
    /// picture with the message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chart: Option<ChartSpec>,
}

/// What chart to draw: `kind` over the `x` column, one line or bar series
/// per `y` column.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChartSpec {
    #[serde(rename = "type")]
    pub kind: ChartKind,
    /// The column along the horizontal axis.
    pub x: String,
    /// One to [`MAX_CHART_SERIES`] numeric columns.
    pub y: Vec<String>,
    pub title: String,
}

/// The chart types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChartKind {
    Bar,
    Line,
}

/// Most series one chart draws.
pub const MAX_CHART_SERIES: usize = 3;
/// Longest chart title, in characters.
pub const MAX_CHART_TITLE: usize = 120;

/// A chart spec resolved against the table: column positions.
#[derive(Debug, Clone, PartialEq)]
pub struct ChartColumns {
    pub x: usize,
    pub y: Vec<usize>,
}

impl ChartSpec {
    /// Checks the spec against the table's columns: `x` names a column,
    /// `y` names one to three distinct numeric columns, the title is short.
    pub fn resolve(&self, columns: &[Column]) -> Result<ChartColumns, String> {
        let find = |name: &str| columns.iter().position(|c| c.name == name);
        let x = find(&self.x)
            .ok_or_else(|| format!("chart x column {:?} is not a column", shown(&self.x)))?;
        if self.y.is_empty() || self.y.len() > MAX_CHART_SERIES {
            return Err(format!(
                "chart needs 1 to {MAX_CHART_SERIES} y columns, got {}",
                self.y.len()
            ));
        }
        let mut y = Vec::new();
        for name in &self.y {
            let i = find(name)
                .ok_or_else(|| format!("chart y column {:?} is not a column", shown(name)))?;
            if !columns[i].is_numeric() {
                return Err(format!(
                    "chart y column {:?} is not numeric (integer or decimal)",
                    shown(name)
                ));
            }
            if y.contains(&i) {
                return Err(format!("chart y column {:?} is named twice", shown(name)));
            }
            y.push(i);
        }
        if self.title.chars().count() > MAX_CHART_TITLE {
            return Err(format!(
                "chart title is longer than {MAX_CHART_TITLE} characters"
            ));
        }
        Ok(ChartColumns { x, y })
    }
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
    /// Decimal places shown for a `decimal` column (default
    /// [`DEFAULT_DECIMALS`], at most [`MAX_DECIMALS`]); not allowed on other
    /// types.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decimals: Option<u8>,
}

/// Decimal places a `decimal` column shows unless it declares its own.
pub const DEFAULT_DECIMALS: u8 = 2;
/// Most decimal places a column may declare.
pub const MAX_DECIMALS: u8 = 9;

impl Column {
    /// A column of `kind` with the default presentation.
    pub fn new(name: impl Into<String>, kind: ColumnType) -> Self {
        Self {
            name: name.into(),
            kind,
            decimals: None,
        }
    }

    /// Decimal places people see: the declared ones for a decimal column,
    /// none for the others.
    pub fn shown_decimals(&self) -> usize {
        match self.kind {
            ColumnType::Decimal => usize::from(self.decimals.unwrap_or(DEFAULT_DECIMALS)),
            _ => 0,
        }
    }

    /// Whether the column holds numbers (right-aligned, totalled).
    pub fn is_numeric(&self) -> bool {
        matches!(self.kind, ColumnType::Integer | ColumnType::Decimal)
    }
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

/// Most columns a table may have (wider reports are split across pages in
/// the PDF, and past this they stop being a report anyone can read).
pub const MAX_COLUMNS: usize = 1000;

/// Why a table was refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TableError {
    #[error("table has no columns")]
    NoColumns,
    #[error("table has {0} columns, more than the {MAX_COLUMNS} allowed")]
    TooManyColumns(usize),
    #[error("row {row} has {got} cells, expected {expected}")]
    Width {
        row: usize,
        got: usize,
        expected: usize,
    },
    /// A cell of the wrong type.
    #[error("row {row}, column {column:?}: expected {expected:?}, got {got}")]
    Cell {
        row: usize,
        column: String,
        expected: ColumnType,
        got: String,
    },
    /// A cell of the right type whose value cannot be totalled or shown
    /// exactly (an integer outside 64 bits, a non-finite decimal, a time
    /// outside years 0001–9999).
    #[error("row {row}, column {column:?}: {reason}")]
    Value {
        row: usize,
        column: String,
        reason: String,
    },
    /// A numeric column whose total cannot be represented.
    #[error("column {column:?}: {reason}")]
    Total { column: String, reason: String },
    /// A column's declaration is not usable (decimals on a non-decimal
    /// column, too many decimals).
    #[error("column {column:?}: {reason}")]
    Declaration { column: String, reason: String },
    /// The claim-checked object itself cannot be read as rows (bad CSV,
    /// malformed JSON, a cell that is not of its column's type).
    #[error("{0}")]
    Unreadable(String),
}

/// A numeric column's total.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Total {
    /// The exact sum of an integer column.
    Integer(i128),
    /// The (finite) sum of a decimal column.
    Decimal(f64),
}

/// A column name bounded and cleaned for an error message.
pub(crate) fn shown(name: &str) -> String {
    crate::contract::display::display(name, 100)
}

/// Why an integer above `i64::MAX` is refused.
pub(crate) const OUTSIDE_I64: &str =
    "integer is outside the 64-bit signed range (-9223372036854775808..=9223372036854775807)";

/// A decimal cell's value: `Ok(None)` for the wrong type, `Err` for a
/// number that is not finite.
pub(crate) fn decimal_value(cell: &serde_json::Value) -> Result<Option<f64>, &'static str> {
    let f = match cell {
        serde_json::Value::Number(n) => n.as_f64(),
        serde_json::Value::String(s) => s.parse::<f64>().ok(),
        _ => None,
    };
    match f {
        Some(f) if !f.is_finite() => Err(
            "decimal is not a finite number (NaN, infinity and values beyond ±1.8e308 are refused)",
        ),
        other => Ok(other),
    }
}

impl Table {
    /// Checks that every row matches the columns in width and type, that
    /// every number can be totalled exactly (integers within i64, finite
    /// decimals) and that the totals are finite. `null` is allowed anywhere.
    pub fn validate(&self) -> Result<(), TableError> {
        summarize(self).map(|_| ())
    }

    /// The total of every numeric column (`None` for the others). Integers
    /// are summed exactly in 128 bits; a decimal total that is not finite,
    /// or a cell that cannot be totalled, is an error.
    pub fn totals(&self) -> Result<Vec<Option<Total>>, TableError> {
        totals_of(self)
    }

    /// Parses claim-checked CSV against its declared columns (see
    /// [`CsvRows`]) into a table.
    pub fn from_csv(bytes: &[u8], columns: Vec<Column>) -> Result<Self, String> {
        let source = CsvRows::new(bytes.to_vec(), columns)?;
        let mut rows = Vec::new();
        source
            .scan(&mut |row| {
                rows.push(row.to_vec());
                std::ops::ControlFlow::Continue(())
            })
            .map_err(|e| e.to_string())?;
        Ok(Table {
            columns: source.columns().to_vec(),
            rows,
        })
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

impl DeliveryTask {
    /// The task that delivers `attempt`.
    pub fn for_attempt(attempt: &crate::domain::DeliveryAttempt) -> Self {
        DeliveryTask::DeliverV1 {
            attempt_id: attempt.id.clone(),
            execution_id: attempt.report_execution_id.clone(),
            target_id: attempt.delivery_target_id.clone(),
        }
    }
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

/// What the service tells the reporting system on the outcomes queue.
/// Consumers dedupe on `event_id` (SQS delivers at least once).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum OutcomeEvent {
    /// One attempt ended: delivered or failed.
    #[serde(rename = "delivery_outcome.v1")]
    DeliveryV1(DeliveryOutcomeV1),
    /// Every attempt of an execution ended; sent once per execution.
    #[serde(rename = "execution_outcome.v1")]
    ExecutionV1(ExecutionOutcomeV1),
    /// A target was disabled or flagged for disabling.
    #[serde(rename = "target_outcome.v1")]
    TargetV1(TargetOutcomeV1),
    /// A recipient of a delivered email bounced (SES `Bounce`).
    #[serde(rename = "delivery_bounced.v1")]
    BouncedV1(RecipientNewsV1),
    /// A recipient of a delivered email marked it as spam (SES `Complaint`).
    #[serde(rename = "delivery_complained.v1")]
    ComplainedV1(RecipientNewsV1),
}

/// Version 1 of the news of one recipient of an email attempt. The
/// attempt's status stays as it was (the send succeeded); its
/// `confirmation` in the API turns `bounced` or `complained`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecipientNewsV1 {
    /// `<attempt_id>:<address>:<status>`: one per recipient and kind.
    pub event_id: String,
    pub attempt_id: String,
    pub execution_id: String,
    pub report_id: String,
    pub target_id: String,
    /// Lower-cased.
    pub address: String,
    /// `to`, `cc` or `bcc`.
    pub role: String,
    /// The SES message id of the send.
    pub message_id: String,
    /// `permanent`, `transient` or `undetermined` (bounces only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bounce_type: Option<String>,
    /// SES's diagnostic or feedback type, at most 500 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Whether the target no longer mails the address after this.
    pub suppressed: bool,
    /// When SES saw it.
    pub at: Timestamp,
}

/// Version 1 of a target's change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetOutcomeV1 {
    /// `<target_id>:<at>`.
    pub event_id: String,
    pub target_id: String,
    pub report_id: String,
    /// `disabled` or `flagged`.
    pub event: String,
    pub reason: String,
    /// Consecutive permanent failures when it happened.
    pub consecutive_failures: u32,
    /// The attempt whose failure decided it.
    pub attempt_id: String,
    pub at: Timestamp,
}

/// The error of a failed attempt, as outcome events carry it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutcomeError {
    pub code: String,
    /// `temporary` (retries ran out) or `permanent`.
    pub category: String,
    pub message: String,
}

/// Version 1 of the per-attempt outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeliveryOutcomeV1 {
    /// `<attempt_id>:<settled_at>`: one per settling (an operator retry
    /// settles an attempt again).
    pub event_id: String,
    pub attempt_id: String,
    pub execution_id: String,
    pub report_id: String,
    pub target_id: String,
    /// `email`, `slack` or `webhook`.
    pub channel: String,
    /// `delivered` or `failed`.
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<OutcomeError>,
    pub tries: u32,
    pub retries: u32,
    pub created_at: Timestamp,
    pub settled_at: Timestamp,
}

/// One attempt in an execution's outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecutionOutcomeAttempt {
    pub attempt_id: String,
    pub target_id: String,
    pub channel: String,
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Version 1 of the per-execution outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecutionOutcomeV1 {
    /// The execution id for the first outcome; `<execution id>.r<revision>`
    /// for a later revision.
    pub event_id: String,
    /// 0 (absent) for the first outcome. After an operator retry or redrive
    /// settles the execution again, a new event with a higher revision
    /// supersedes the earlier ones.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub revision: u64,
    pub execution_id: String,
    pub report_id: String,
    pub targets: u64,
    pub delivered: u64,
    pub failed: u64,
    /// e.g. "delivered to 5 of 6 targets".
    pub summary: String,
    /// Set when there was nothing to deliver (`no_active_targets`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    pub attempts: Vec<ExecutionOutcomeAttempt>,
    pub completed_at: Timestamp,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_event_parses() {
        let body = include_str!("../../../events/execution-completed.json");
        let Ok(ExecutionMessage::CompletedV1(m)) = serde_json::from_str(body) else {
            panic!("sample parses")
        };
        assert_eq!(m.report_id, "rpt-weekly-sales");
        let ReportData::Inline(table) = m.data else {
            panic!("sample is inline")
        };
        table.validate().expect("sample rows match columns");
    }

    #[test]
    fn claim_check_sample_parses_and_its_csv_matches_its_columns() {
        let body = include_str!("../../../events/execution-completed-claim-check.json");
        let Ok(ExecutionMessage::CompletedV1(m)) = serde_json::from_str(body) else {
            panic!("sample parses")
        };
        let ReportData::S3(check) = m.data else {
            panic!("sample is a claim check")
        };
        assert_eq!(check.format, ClaimFormat::Csv);
        let csv = include_bytes!("../../../events/weekly-sales-2026-w48.csv");
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

    fn table(columns: serde_json::Value, rows: serde_json::Value) -> Table {
        serde_json::from_value(serde_json::json!({"columns": columns, "rows": rows}))
            .expect("shape")
    }

    #[test]
    fn given_an_integer_above_i64_max_when_validated_then_it_is_refused_with_row_column_and_reason()
    {
        let t = table(
            serde_json::json!([{"name": "Orders", "type": "integer"}]),
            serde_json::json!([[1], [9223372036854775808_u64]]),
        );
        match t.validate() {
            Err(TableError::Value {
                row,
                column,
                reason,
            }) => {
                assert_eq!((row, column.as_str()), (2, "Orders"));
                assert!(reason.contains("64-bit"), "{reason}");
            }
            other => panic!("expected a value error, got {other:?}"),
        }
        let edge = table(
            serde_json::json!([{"name": "n", "type": "integer"}]),
            serde_json::json!([[i64::MAX], [i64::MIN]]),
        );
        assert_eq!(edge.validate(), Ok(()));
    }

    #[test]
    fn given_non_finite_decimals_when_validated_then_each_is_refused() {
        for bad in [
            "NaN",
            "nan",
            "inf",
            "-infinity",
            "+Infinity",
            "1e400",
            "-1e999",
        ] {
            let t = table(
                serde_json::json!([{"name": "d", "type": "decimal"}]),
                serde_json::json!([["1.5"], [bad]]),
            );
            assert!(
                matches!(t.validate(), Err(TableError::Value { row: 2, .. })),
                "{bad} must be refused"
            );
        }
    }

    #[test]
    fn given_decimals_whose_total_overflows_when_validated_then_the_total_is_refused() {
        let t = table(
            serde_json::json!([{"name": "d", "type": "decimal"}]),
            serde_json::json!([[1.7e308], ["1.7e308"]]),
        );
        assert!(matches!(t.validate(), Err(TableError::Total { .. })));
    }

    #[test]
    fn given_a_time_past_year_9999_in_a_date_time_cell_when_validated_then_it_is_refused() {
        let t = table(
            serde_json::json!([{"name": "at", "type": "date_time"}]),
            serde_json::json!([["9999-12-31T23:59:59-01:00"]]),
        );
        assert!(matches!(
            t.validate(),
            Err(TableError::Value { row: 1, .. })
        ));
    }

    #[test]
    fn given_a_long_multibyte_cell_of_the_wrong_type_when_validated_then_the_error_is_bounded() {
        let long = "東".repeat(10_000);
        let t = table(
            serde_json::json!([{"name": "n".repeat(1000), "type": "integer"}]),
            serde_json::json!([[long]]),
        );
        let err = t.validate().expect_err("not an integer").to_string();
        assert!(err.chars().count() < 300, "{} chars", err.chars().count());
        assert!(err.contains('東'));
    }

    #[test]
    fn given_more_than_the_allowed_columns_when_validated_then_the_table_is_refused() {
        let columns: Vec<_> = (0..=MAX_COLUMNS)
            .map(|i| serde_json::json!({"name": format!("c{i}")}))
            .collect();
        let t = table(serde_json::json!(columns), serde_json::json!([]));
        assert_eq!(
            t.validate(),
            Err(TableError::TooManyColumns(MAX_COLUMNS + 1))
        );
    }

    #[test]
    fn given_csv_numbers_that_cannot_be_totalled_when_parsed_then_they_are_refused_with_a_reason() {
        let cols: Vec<Column> = serde_json::from_str(
            r#"[{"name":"n","type":"integer"},{"name":"d","type":"decimal"}]"#,
        )
        .expect("cols");
        let err =
            Table::from_csv(b"n,d\n9223372036854775808,1\n", cols.clone()).expect_err("above i64");
        assert!(err.contains("row 1") && err.contains("64-bit"), "{err}");
        for bad in ["NaN", "inf", "-infinity", "1e400"] {
            let csv = format!("n,d\n1,{bad}\n");
            let err = Table::from_csv(csv.as_bytes(), cols.clone()).expect_err(bad);
            assert!(err.contains("finite"), "{bad}: {err}");
        }
        let ok = Table::from_csv(b"n,d\n-9223372036854775808,-3.5\n", cols).expect("in range");
        assert_eq!(ok.validate(), Ok(()));
    }

    #[test]
    fn given_a_csv_header_that_differs_when_parsed_then_the_error_names_the_first_difference_briefly()
     {
        let cols: Vec<Column> =
            serde_json::from_str(r#"[{"name":"a"},{"name":"b"}]"#).expect("cols");
        let header = format!("a,{}\n", "x".repeat(100_000));
        let err = Table::from_csv(header.as_bytes(), cols).expect_err("wrong header");
        assert!(err.contains("name 2"), "{err}");
        assert!(err.len() < 400, "{} bytes", err.len());
    }

    #[test]
    fn the_test_send_sample_is_a_valid_report_and_round_trips_as_a_message() {
        let t = TestSendV1::sample("tgt-1", "rpt-1", Timestamp::now());
        let ReportData::Inline(table) = &t.execution.data else {
            panic!("inline rows")
        };
        assert_eq!(table.validate(), Ok(()));
        assert!(t.execution.execution_id.starts_with("test-"));
        let body = serde_json::to_string(&ExecutionMessage::TestSendV1(t.clone())).expect("json");
        assert!(body.contains(r#""type":"test_send.v1""#), "{body}");
        let back: ExecutionMessage = serde_json::from_str(&body).expect("parses");
        assert_eq!(back, ExecutionMessage::TestSendV1(t));
    }
}
