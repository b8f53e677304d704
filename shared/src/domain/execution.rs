//! Report executions: one finished run of a report and the files rendered
//! from it.

use super::Timestamp;
use serde::{Deserialize, Serialize};

/// A rendered file stored in the blob store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredFile {
    /// Object key inside the reports bucket.
    pub key: String,
    pub content_type: String,
    pub size: u64,
    /// Lower-case hex SHA-256 of the bytes.
    pub sha256: String,
}

/// One finished run of a report. `report_name` is stored cleaned and
/// bounded (see [`crate::render::display`]), since emails, Slack messages
/// and webhook bodies show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportExecution {
    pub id: String,
    pub report_id: String,
    pub report_name: String,
    /// When the reporting system produced the data.
    pub generated_at: Timestamp,
    /// IANA zone the report is presented in.
    pub time_zone: String,
    pub row_count: u64,
    /// The rendered PDF.
    pub pdf: StoredFile,
    /// The same rows as CSV.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub csv: Option<StoredFile>,
    /// The first rows formatted for messages (a
    /// [`Preview`](crate::render::preview::Preview) as JSON).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview: Option<StoredFile>,
    /// The chart as a PNG, when the execution asked for one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chart: Option<StoredFile>,
    pub rendered_at: Timestamp,
    /// Set once fan-out has queued every active target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fanned_out_at: Option<Timestamp>,
    /// Attempts queued by fan-out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_count: Option<u64>,
    /// Why fan-out queued nothing, e.g. `no_active_targets`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fanout_note: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// Lower-case hex SHA-256 of the message the execution was rendered
    /// from, so that a later message reusing the id with other content is
    /// refused instead of silently ignored. Absent on older records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_sha256: Option<String>,
    /// Set on an operator's test send: fan-out queues a test attempt for
    /// this one target (whatever its state) instead of the report's targets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_target_id: Option<String>,
    /// Times an operator retry reopened the execution (its revision): the
    /// completion claim holds only if it did not change since the attempts
    /// were read.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub reopened: u64,
    /// The revision (`reopened` count) at which the execution was last
    /// recorded complete, its outcome event sent; written only by the
    /// completion claim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome_revision: Option<u64>,
}

impl ReportExecution {
    /// Whether its completion is recorded at its current revision (no
    /// operator reopened it since).
    pub fn completion_recorded(&self) -> bool {
        self.outcome_revision.is_some_and(|r| r >= self.reopened)
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}
