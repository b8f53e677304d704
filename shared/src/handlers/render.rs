//! render: execution-completed message → PDF in S3 → execution record →
//! fan-out task. Idempotent: a redelivered message re-sends the fan-out
//! task for the execution already recorded. A message that reuses an
//! execution id with different content is refused (`execution_conflict`);
//! the first execution stands.

use super::{Outcome, body_of, process_batch, valid_id};
use crate::blob::{BlobError, BlobStore, ClaimCheckScope};
use crate::contract::{
    ClaimCheck, ClaimFormat, ExecutionCompletedV1, ExecutionMessage, FanoutTask, ReportData,
    TableError,
};
use crate::domain::Timestamp;
use crate::domain::execution::{ReportExecution, StoredFile};
use crate::metrics::{Dim, Metric, Metrics, Stage};
use crate::queue::Queue;
use crate::render::display::{MAX_REASON, MAX_REPORT_NAME, display};
use crate::render::{ReportMeta, csv::render_csv, render_pdf, time_zone};
use crate::store::ExecutionStore;
use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use sha2::{Digest, Sha256};
use tracing::{info, warn};

/// What render needs.
pub struct Deps {
    /// EMF metrics.
    pub metrics: Metrics,
    pub executions: Box<dyn ExecutionStore>,
    pub blobs: Box<dyn BlobStore>,
    pub queue: Box<dyn Queue>,
    pub fanout_queue_url: String,
    pub dead_letter_url: String,
    /// Where claim-check objects may be read from.
    pub claim_checks: ClaimCheckScope,
}

/// The Lambda handler.
pub async fn handle(deps: &Deps, event: SqsEvent) -> SqsBatchResponse {
    process_batch(
        &event,
        super::DeadLetters {
            queue: deps.queue.as_ref(),
            url: &deps.dead_letter_url,
            stage: Stage::Executions,
            metrics: &deps.metrics,
        },
        1,
        |m: &SqsMessage| process(deps, m),
    )
    .await
}

/// Processes one message; reasons are cleaned and bounded, since they can
/// quote the message and go to logs and dead-letter attributes.
async fn process(deps: &Deps, m: &SqsMessage) -> Outcome {
    match process_unbounded(deps, m).await {
        Outcome::Reject { code, reason } => Outcome::Reject {
            code,
            reason: display(&reason, MAX_REASON),
        },
        Outcome::Retry { reason } => Outcome::Retry {
            reason: display(&reason, MAX_REASON),
        },
        Outcome::Done => Outcome::Done,
    }
}

async fn process_unbounded(deps: &Deps, m: &SqsMessage) -> Outcome {
    let body = match body_of(m) {
        Ok(b) => b,
        Err(outcome) => return outcome,
    };
    let (msg, test_target) = match serde_json::from_str::<ExecutionMessage>(body) {
        Ok(ExecutionMessage::CompletedV1(msg)) => (msg, None),
        Ok(ExecutionMessage::TestSendV1(t)) if valid_id(&t.target_id) => {
            (t.execution, Some(t.target_id))
        }
        Ok(ExecutionMessage::TestSendV1(_)) => {
            return Outcome::Reject {
                code: "invalid_id",
                reason: "target_id must be 1-128 of [A-Za-z0-9-_.:]".into(),
            };
        }
        Err(e) => {
            return Outcome::Reject {
                code: "malformed_message",
                reason: format!("not a valid execution_completed.v1 message: {e}"),
            };
        }
    };
    if valid_id(&msg.execution_id) {
        tracing::Span::current().record("execution_id", msg.execution_id.as_str());
    }
    if !valid_id(&msg.execution_id) || !valid_id(&msg.report_id) {
        return Outcome::Reject {
            code: "invalid_id",
            reason: "execution_id and report_id must be 1-128 of [A-Za-z0-9-_.:]".into(),
        };
    }
    match render_and_store(deps, msg, test_target).await {
        Ok(execution) => {
            let task = FanoutTask::FanoutV1 {
                execution_id: execution.id.clone(),
                cursor: None,
                queued_so_far: 0,
            };
            let body = serde_json::to_string(&task).unwrap_or_default();
            match deps.queue.send(&deps.fanout_queue_url, &body).await {
                Ok(()) => {
                    info!(execution_id = %execution.id, "fan-out requested");
                    Outcome::Done
                }
                Err(e) => Outcome::Retry {
                    reason: e.to_string(),
                },
            }
        }
        Err(outcome) => outcome,
    }
}

async fn render_and_store(
    deps: &Deps,
    msg: ExecutionCompletedV1,
    test_target_id: Option<String>,
) -> Result<ReportExecution, Outcome> {
    let retry = |e: &dyn std::fmt::Display| Outcome::Retry {
        reason: e.to_string(),
    };
    let input_sha256 = input_hash(&msg);
    if let Some(existing) = deps
        .executions
        .get_execution(&msg.execution_id)
        .await
        .map_err(|e| retry(&e))?
    {
        deps.metrics.count(
            Metric::DuplicatesIgnored,
            &[(Dim::Stage, Stage::Executions.as_str())],
        );
        info!(execution_id = %existing.id, "already rendered");
        return same_input(existing, &input_sha256);
    }
    let tz = time_zone(&msg.time_zone).ok_or_else(|| Outcome::Reject {
        code: "invalid_time_zone",
        reason: format!("{:?} is not an IANA time zone", display(&msg.time_zone, 64)),
    })?;
    let rows = load_rows(deps, &msg.data).await?;
    let summary = crate::contract::summarize(&*rows).map_err(|e| match e {
        TableError::Unreadable(reason) => Outcome::Reject {
            code: "invalid_claim_check",
            reason,
        },
        other => Outcome::Reject {
            code: "invalid_rows",
            reason: other.to_string(),
        },
    })?;
    if let Some(chart) = &msg.chart {
        chart
            .resolve(rows.columns())
            .map_err(|reason| Outcome::Reject {
                code: "invalid_chart",
                reason,
            })?;
    }
    keep_input(deps, &msg, &*rows).await?;
    let started = std::time::Instant::now();
    let row_count = summary.rows as u64;
    let rows: std::sync::Arc<dyn crate::contract::Rows> = rows.into();
    let failed = |reason| Outcome::Reject {
        code: "render_failed",
        reason,
    };
    // One file in memory at a time: each is stored before the next renders.
    let pdf = render_file(&msg, &tz, &rows, &summary, Format::Pdf)
        .await
        .map_err(failed)?;
    let mut render_ms = started.elapsed().as_millis();
    let pdf = store_file(deps, &msg, pdf, "report", "pdf", "application/pdf").await?;
    let csv_started = std::time::Instant::now();
    let csv = render_file(&msg, &tz, &rows, &summary, Format::Csv)
        .await
        .map_err(failed)?;
    render_ms += csv_started.elapsed().as_millis();
    let render_ms = u64::try_from(render_ms).unwrap_or(u64::MAX);
    let csv = store_file(deps, &msg, csv, "report", "csv", "text/csv; charset=utf-8").await?;
    let preview = render_file(&msg, &tz, &rows, &summary, Format::Preview)
        .await
        .map_err(failed)?;
    let preview = store_file(deps, &msg, preview, "preview", "json", "application/json").await?;
    // The picture is decoration: one that cannot be drawn is left out of
    // the messages (and logged), never a reason to fail the report.
    let chart = match &msg.chart {
        Some(_) => match render_file(&msg, &tz, &rows, &summary, Format::Chart).await {
            Ok(png) => Some(store_file(deps, &msg, png, "chart", "png", "image/png").await?),
            Err(error) => {
                warn!(execution_id = %msg.execution_id, %error, "chart picture not drawn");
                None
            }
        },
        None => None,
    };
    info!(
        execution_id = %msg.execution_id,
        rows = row_count,
        pdf_bytes = pdf.size,
        csv_bytes = csv.size,
        render_ms,
        key = %pdf.key,
        "rendered"
    );
    deps.metrics
        .record(Metric::RenderDuration, &[], render_ms as f64);
    deps.metrics.record(Metric::PdfBytes, &[], pdf.size as f64);
    let now = Timestamp::now();
    let execution = ReportExecution {
        id: msg.execution_id,
        report_id: msg.report_id,
        report_name: display(&msg.report_name, MAX_REPORT_NAME),
        generated_at: msg.generated_at,
        time_zone: msg.time_zone,
        row_count,
        pdf,
        csv: Some(csv),
        preview: Some(preview),
        chart,
        rendered_at: now,
        fanned_out_at: None,
        target_count: None,
        fanout_note: None,
        created_at: now,
        updated_at: now,
        input_sha256: Some(input_sha256.clone()),
        test_target_id,
        reopened: 0,
    };
    // If another render of this id won the race, its record comes back.
    let stored = deps
        .executions
        .put_rendered(&execution)
        .await
        .map_err(|e| retry(&e))?;
    same_input(stored, &input_sha256)
}

/// Where an execution's input (the message) is kept for re-rendering.
pub fn input_key(report_id: &str, execution_id: &str) -> String {
    format!("reports/{report_id}/{execution_id}/input.json")
}

/// Where a claim-checked execution's rows are kept for re-rendering.
pub fn input_rows_key(report_id: &str, execution_id: &str, format: ClaimFormat) -> String {
    let ext = match format {
        ClaimFormat::Csv => "csv",
        ClaimFormat::Json => "json",
    };
    format!("reports/{report_id}/{execution_id}/input-rows.{ext}")
}

/// Keeps what re-rendering needs when the files are gone (an operator's
/// retry), since claim-check objects expire: the message, and for a claim
/// check a copy of its object beside the files, which the kept message then
/// points at. Inline rows stay in the message.
async fn keep_input(
    deps: &Deps,
    msg: &ExecutionCompletedV1,
    rows: &dyn crate::contract::Rows,
) -> Result<(), Outcome> {
    let retry = |e: &dyn std::fmt::Display| Outcome::Retry {
        reason: e.to_string(),
    };
    let kept = match (&msg.data, rows.raw()) {
        (ReportData::S3(check), Some(raw)) => {
            let key = input_rows_key(&msg.report_id, &msg.execution_id, check.format);
            deps.blobs
                .put(&key, raw.to_vec(), "application/octet-stream")
                .await
                .map_err(|e| retry(&e))?;
            ExecutionCompletedV1 {
                data: ReportData::S3(ClaimCheck {
                    uri: format!("s3://{}/{key}", deps.claim_checks.bucket),
                    format: check.format,
                    columns: Some(rows.columns().to_vec()),
                }),
                ..msg.clone()
            }
        }
        _ => msg.clone(),
    };
    deps.blobs
        .put(
            &input_key(&msg.report_id, &msg.execution_id),
            serde_json::to_vec(&kept).unwrap_or_default(),
            "application/json",
        )
        .await
        .map_err(|e| retry(&e))
}

/// The files render writes.
#[derive(Debug, Clone, Copy)]
enum Format {
    Pdf,
    Csv,
    /// The first rows for messages.
    Preview,
    /// The chart as a picture for messages.
    Chart,
}

/// Renders one file off the async runtime. Deterministic: the same message
/// gives the same bytes.
async fn render_file(
    msg: &ExecutionCompletedV1,
    tz: &jiff::tz::TimeZone,
    rows: &std::sync::Arc<dyn crate::contract::Rows>,
    summary: &crate::contract::Summary,
    format: Format,
) -> Result<Vec<u8>, String> {
    let (msg, tz, rows, summary) = (msg.clone(), tz.clone(), rows.clone(), summary.clone());
    tokio::task::spawn_blocking(move || match format {
        Format::Pdf => {
            let chart = chart_drawing(&msg, &*rows, &tz)?;
            render_pdf(&ReportMeta::of(&msg, &tz, chart.as_ref()), &*rows, &summary)
        }
        Format::Csv => Ok(render_csv(&*rows)),
        Format::Preview => {
            let mut preview = crate::render::preview::build(&*rows, &summary, &tz, &msg.parameters);
            preview.chart_title = msg
                .chart
                .as_ref()
                .map(|c| display(&c.title, crate::contract::MAX_CHART_TITLE));
            Ok(preview.to_bytes())
        }
        Format::Chart => chart_png(&msg, &*rows, &tz),
    })
    .await
    .map_err(|e| e.to_string())?
}

/// Width and height of a chart, in points (the PDF draws it at this size
/// above the table; the PNG is twice as many pixels).
pub const CHART_SIZE: (f32, f32) = (540.0, 220.0);

/// The execution's chart laid out, if it asks for one.
pub fn chart_drawing(
    msg: &ExecutionCompletedV1,
    rows: &dyn crate::contract::Rows,
    tz: &jiff::tz::TimeZone,
) -> Result<Option<crate::render::chart::Drawing>, String> {
    use crate::render::chart::{ChartData, font_measure, layout};
    let Some(spec) = &msg.chart else {
        return Ok(None);
    };
    let data = ChartData::collect(rows, spec, tz)?;
    Ok(Some(layout(
        &data,
        CHART_SIZE.0,
        CHART_SIZE.1,
        &font_measure,
    )))
}

/// The execution's chart as a PNG.
#[cfg(feature = "chart")]
fn chart_png(
    msg: &ExecutionCompletedV1,
    rows: &dyn crate::contract::Rows,
    tz: &jiff::tz::TimeZone,
) -> Result<Vec<u8>, String> {
    let drawing = chart_drawing(msg, rows, tz)?.ok_or("no chart asked for")?;
    crate::render::chart::png::to_png(&drawing)
}

/// Without the `chart` feature (functions other than render) there is no
/// rasteriser.
#[cfg(not(feature = "chart"))]
fn chart_png(
    _: &ExecutionCompletedV1,
    _: &dyn crate::contract::Rows,
    _: &jiff::tz::TimeZone,
) -> Result<Vec<u8>, String> {
    Err("this build draws no charts (the chart feature is off)".into())
}

/// Why an execution's files could not be rendered again.
#[derive(Debug, thiserror::Error)]
pub enum RerenderError {
    /// No stored input (rendered before inputs were kept, or removed).
    #[error("no stored input to render {0} again")]
    NoInput(String),
    #[error("re-rendering failed: {0}")]
    Failed(String),
    /// The store may recover.
    #[error("the file store failed: {0}")]
    Store(String),
}

/// Renders an execution's files again from its stored input and writes
/// them to the keys its record names (the spec's "re-attach the report").
pub async fn rerender(
    blobs: &dyn crate::blob::BlobStore,
    execution: &ReportExecution,
) -> Result<(), RerenderError> {
    use crate::blob::BlobError;
    let key = input_key(&execution.report_id, &execution.id);
    let bytes = blobs.get(&key).await.map_err(|e| match e {
        BlobError::NotFound(_) => RerenderError::NoInput(execution.id.clone()),
        other => RerenderError::Store(other.to_string()),
    })?;
    let msg: ExecutionCompletedV1 = serde_json::from_slice(&bytes)
        .map_err(|e| RerenderError::Failed(format!("stored input: {e}")))?;
    let rows: Box<dyn crate::contract::Rows> = match &msg.data {
        ReportData::Inline(table) => Box::new(table.clone()),
        ReportData::S3(check) => {
            // Only the copy render kept beside this execution's files.
            let key = input_rows_key(&execution.report_id, &execution.id, check.format);
            if !check.uri.starts_with("s3://") || !check.uri.ends_with(&format!("/{key}")) {
                return Err(RerenderError::Failed(
                    "the stored input points outside its execution".into(),
                ));
            }
            let bytes = blobs.get(&key).await.map_err(|e| match e {
                BlobError::NotFound(_) => RerenderError::NoInput(execution.id.clone()),
                other => RerenderError::Store(other.to_string()),
            })?;
            rows_from(check, bytes).map_err(RerenderError::Failed)?
        }
    };
    let tz = time_zone(&msg.time_zone)
        .ok_or_else(|| RerenderError::Failed("unknown time zone".into()))?;
    let summary = crate::contract::summarize(&*rows)
        .map_err(|e| RerenderError::Failed(format!("stored input: {e}")))?;
    let rows: std::sync::Arc<dyn crate::contract::Rows> = rows.into();
    let mut files = vec![(&execution.pdf, Format::Pdf)];
    if let Some(c) = &execution.csv {
        files.push((c, Format::Csv));
    }
    if let Some(p) = &execution.preview {
        files.push((p, Format::Preview));
    }
    if let Some(c) = &execution.chart {
        files.push((c, Format::Chart));
    }
    for (file, format) in files {
        let bytes = render_file(&msg, &tz, &rows, &summary, format)
            .await
            .map_err(RerenderError::Failed)?;
        let sha = hex::encode(Sha256::digest(&bytes));
        if sha != file.sha256 {
            warn!(key = %file.key, "re-rendered bytes differ from the recorded hash");
        }
        blobs
            .put(&file.key, bytes, &file.content_type)
            .await
            .map_err(|e| RerenderError::Store(e.to_string()))?;
    }
    info!(execution_id = %execution.id, "re-rendered from the stored input");
    Ok(())
}

/// Lower-case hex SHA-256 of the message's canonical JSON (fields in
/// declaration order, parameters sorted, the time normalised to UTC).
pub fn input_hash(msg: &ExecutionCompletedV1) -> String {
    let canonical = serde_json::to_vec(msg).unwrap_or_default();
    hex::encode(Sha256::digest(&canonical))
}

/// The recorded execution, unless it was rendered from different content:
/// then the message is refused and the first execution stands. Records
/// from before hashes were kept are taken as they are.
fn same_input(existing: ReportExecution, input_sha256: &str) -> Result<ReportExecution, Outcome> {
    match existing.input_sha256.as_deref() {
        Some(stored) if stored != input_sha256 => {
            warn!(
                execution_id = %existing.id,
                stored_sha256 = %stored,
                message_sha256 = %input_sha256,
                "execution id reused with different content; refusing the message"
            );
            Err(Outcome::Reject {
                code: "execution_conflict",
                reason: format!(
                    "execution {} was already rendered from different content \
                     (sha256 {stored}); this message has sha256 {input_sha256}; \
                     the first execution stands",
                    existing.id
                ),
            })
        }
        _ => Ok(existing),
    }
}

/// Stores one rendered file under `reports/<report>/<execution>/` as
/// `<stem>-<hash>.<ext>`; the hash
/// in the name keeps the record and the object consistent even if two
/// renders of one execution race.
async fn store_file(
    deps: &Deps,
    msg: &ExecutionCompletedV1,
    bytes: Vec<u8>,
    stem: &str,
    ext: &str,
    content_type: &str,
) -> Result<StoredFile, Outcome> {
    let sha256 = hex::encode(Sha256::digest(&bytes));
    let size = bytes.len() as u64;
    let key = format!(
        "reports/{}/{}/{stem}-{}.{ext}",
        msg.report_id,
        msg.execution_id,
        &sha256[..12]
    );
    deps.blobs
        .put(&key, bytes, content_type)
        .await
        .map_err(|e| Outcome::Retry {
            reason: e.to_string(),
        })?;
    Ok(StoredFile {
        key,
        content_type: content_type.to_owned(),
        size,
        sha256,
    })
}

async fn load_rows(
    deps: &Deps,
    data: &ReportData,
) -> Result<Box<dyn crate::contract::Rows>, Outcome> {
    let check: &ClaimCheck = match data {
        ReportData::Inline(table) => return Ok(Box::new(table.clone())),
        ReportData::S3(check) => check,
    };
    let invalid = |reason: String| Outcome::Reject {
        code: "invalid_claim_check",
        reason,
    };
    // Only the configured bucket and prefix, checked before any read.
    let key = deps.claim_checks.check(&check.uri).map_err(invalid)?;
    let uri = format!("s3://{}/{key}", deps.claim_checks.bucket);
    let bytes = deps.blobs.get_uri(&uri).await.map_err(|e| match e {
        BlobError::NotFound(what) => Outcome::Reject {
            code: "claim_check_missing",
            reason: format!("claim-check object not found: {what}"),
        },
        BlobError::Permanent { .. } => Outcome::Reject {
            code: "claim_check_unreadable",
            reason: format!("claim-check object cannot be read: {e}"),
        },
        BlobError::Temporary(_) => Outcome::Retry {
            reason: e.to_string(),
        },
    })?;
    rows_from(check, bytes).map_err(invalid)
}

/// A claim-checked object's rows, kept as its bytes (see
/// [`crate::contract::Rows`]): the CSV header or the JSON table's shape is
/// checked here, the cells on each pass.
fn rows_from(check: &ClaimCheck, bytes: Vec<u8>) -> Result<Box<dyn crate::contract::Rows>, String> {
    match check.format {
        ClaimFormat::Csv => {
            let columns = check
                .columns
                .clone()
                .ok_or_else(|| "a CSV claim check must declare its columns".to_owned())?;
            Ok(Box::new(crate::contract::CsvRows::new(bytes, columns)?))
        }
        ClaimFormat::Json => {
            let rows = crate::contract::JsonRows::new(bytes)?;
            match &check.columns {
                Some(declared) if declared.as_slice() != crate::contract::Rows::columns(&rows) => {
                    Err("the message's columns differ from the claim-check object's".into())
                }
                _ => Ok(Box::new(rows)),
            }
        }
    }
}

impl Deps {
    /// Builds the deps from the environment `template.yaml` sets.
    pub async fn from_env() -> Result<Self, crate::config::ConfigError> {
        use crate::config::{required, tables};
        let sdk = crate::aws::load().await;
        let store = crate::store::dynamo::DynamoStore::new(crate::aws::dynamodb(&sdk), tables()?)
            .with_record_retention(crate::config::record_retention()?);
        let bucket = required("REPORTS_BUCKET")?;
        Ok(Self {
            metrics: Metrics::from_env(),
            executions: Box::new(store),
            blobs: Box::new(crate::blob::s3::S3Blobs::new(
                crate::aws::s3(&sdk),
                bucket.clone(),
            )),
            queue: Box::new(crate::queue::sqs::SqsQueue::new(crate::aws::sqs(&sdk))),
            fanout_queue_url: required("FANOUT_QUEUE_URL")?,
            dead_letter_url: required("DEAD_LETTER_QUEUE_URL")?,
            claim_checks: ClaimCheckScope::reports(bucket),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreError;
    use async_trait::async_trait;
    use serde_json::{Value, json};
    use std::collections::HashMap;
    use std::sync::Mutex;
    use std::time::Duration;

    const BUCKET: &str = "reports-bucket";

    /// Executions in memory; `put_rendered` keeps the first, like the
    /// conditional write.
    #[derive(Default)]
    struct FakeExecutions(Mutex<HashMap<String, ReportExecution>>);

    #[async_trait]
    impl ExecutionStore for FakeExecutions {
        async fn put_rendered(&self, e: &ReportExecution) -> Result<ReportExecution, StoreError> {
            let mut map = self
                .0
                .lock()
                .map_err(|e| StoreError::Backend(e.to_string()))?;
            Ok(map.entry(e.id.clone()).or_insert_with(|| e.clone()).clone())
        }
        async fn get_execution(&self, id: &str) -> Result<Option<ReportExecution>, StoreError> {
            let map = self
                .0
                .lock()
                .map_err(|e| StoreError::Backend(e.to_string()))?;
            Ok(map.get(id).cloned())
        }
        async fn mark_fanned_out(
            &self,
            _: &str,
            _: u64,
            _: Option<&str>,
            _: Timestamp,
        ) -> Result<crate::store::Progress, StoreError> {
            Ok(crate::store::Progress::default())
        }
        async fn count_settled(
            &self,
            _: &str,
            _: u64,
        ) -> Result<crate::store::Progress, StoreError> {
            Ok(crate::store::Progress::default())
        }
        async fn claim_outcome(&self, _: &str, _: Timestamp, _: u64) -> Result<bool, StoreError> {
            Ok(false)
        }
        async fn release_outcome(&self, _: &str) -> Result<(), StoreError> {
            Ok(())
        }
        async fn unsettled(
            &self,
            _: u8,
            _: Timestamp,
            _: Option<String>,
            _: i32,
        ) -> Result<crate::store::Page<String>, StoreError> {
            Ok(crate::store::Page {
                items: Vec::new(),
                next: None,
            })
        }
        async fn mark_unsettled(&self, _: &str) -> Result<(), StoreError> {
            Ok(())
        }
        async fn mark_settled(&self, _: &str, _: u64, _: bool) -> Result<(), StoreError> {
            Ok(())
        }
        async fn oldest_unsettled(&self) -> Result<Option<Timestamp>, StoreError> {
            Ok(None)
        }
    }

    /// Objects in memory; reads of `failing` answer with its error. Every
    /// read and write is recorded.
    #[derive(Default)]
    struct FakeBlobs {
        objects: Mutex<HashMap<String, Vec<u8>>>,
        failing: Option<BlobError>,
        reads: Mutex<Vec<String>>,
        puts: Mutex<Vec<String>>,
    }

    #[async_trait]
    impl BlobStore for FakeBlobs {
        async fn put(&self, key: &str, bytes: Vec<u8>, _: &str) -> Result<(), BlobError> {
            self.puts.lock().expect("lock").push(key.to_owned());
            self.objects
                .lock()
                .expect("lock")
                .insert(format!("s3://{BUCKET}/{key}"), bytes);
            Ok(())
        }
        async fn get(&self, key: &str) -> Result<Vec<u8>, BlobError> {
            self.get_uri(&format!("s3://{BUCKET}/{key}")).await
        }
        async fn get_uri(&self, uri: &str) -> Result<Vec<u8>, BlobError> {
            self.reads.lock().expect("lock").push(uri.to_owned());
            if let Some(e) = &self.failing {
                return Err(e.clone());
            }
            self.objects
                .lock()
                .expect("lock")
                .get(uri)
                .cloned()
                .ok_or_else(|| BlobError::NotFound(uri.to_owned()))
        }
        async fn presign_get(&self, key: &str, _: Duration) -> Result<String, BlobError> {
            Ok(key.to_owned())
        }
    }

    use crate::queue::fake::RecordingQueue as FakeQueue;

    fn deps(blobs: FakeBlobs) -> Deps {
        Deps {
            metrics: Metrics::none(),
            executions: Box::new(FakeExecutions::default()),
            blobs: Box::new(blobs),
            queue: Box::new(FakeQueue::default()),
            fanout_queue_url: "fanout".into(),
            dead_letter_url: "dlq".into(),
            claim_checks: ClaimCheckScope::reports(BUCKET),
        }
    }

    fn message(body: &Value) -> SqsMessage {
        serde_json::from_value(json!({"messageId": "m1", "body": body.to_string()}))
            .expect("message")
    }

    fn inline(execution_id: &str, rows: Value) -> Value {
        json!({
            "type": "execution_completed.v1",
            "execution_id": execution_id,
            "report_id": "rpt-weekly-sales",
            "report_name": "Weekly sales",
            "generated_at": "2026-11-26T07:00:00Z",
            "time_zone": "Europe/Zurich",
            "data": {
                "source": "inline",
                "columns": [{"name": "City"}, {"name": "Orders", "type": "integer"}],
                "rows": rows
            }
        })
    }

    fn claim_check(uri: &str) -> Value {
        let mut m = inline("exec-cc", json!([]));
        m["data"] = json!({"source": "s3", "uri": uri, "format": "json"});
        m
    }

    fn code_of(outcome: &Outcome) -> &str {
        match outcome {
            Outcome::Reject { code, .. } => code,
            Outcome::Retry { .. } => "retry",
            Outcome::Done => "done",
        }
    }

    #[tokio::test]
    async fn given_claim_checks_outside_the_reports_bucket_incoming_when_rendered_then_they_are_refused_unread()
     {
        for uri in [
            "s3://other-bucket/incoming/rows.json",
            "s3://reports-bucket/reports/rpt/exec/report-abc.pdf",
            "s3://reports-bucket/incoming/../reports/x.json",
            "s3://reports-bucket/incoming//rows.json",
            "s3://reports-bucket/incoming/",
        ] {
            // Given a claim check pointing outside incoming/ of the reports bucket
            let blobs = std::sync::Arc::new(FakeBlobs::default());
            let d = Deps {
                blobs: Box::new(ArcBlobs(blobs.clone())),
                ..deps(FakeBlobs::default())
            };
            // When it is processed
            let outcome = process(&d, &message(&claim_check(uri))).await;
            // Then it is refused at once, and nothing was read
            assert_eq!(code_of(&outcome), "invalid_claim_check", "{uri}");
            assert!(
                blobs.reads.lock().expect("lock").is_empty(),
                "{uri} was read"
            );
        }
    }

    /// Shares a [`FakeBlobs`] with the test.
    struct ArcBlobs(std::sync::Arc<FakeBlobs>);

    #[async_trait]
    impl BlobStore for ArcBlobs {
        async fn put(&self, key: &str, bytes: Vec<u8>, ct: &str) -> Result<(), BlobError> {
            self.0.put(key, bytes, ct).await
        }
        async fn get(&self, key: &str) -> Result<Vec<u8>, BlobError> {
            self.0.get(key).await
        }
        async fn get_uri(&self, uri: &str) -> Result<Vec<u8>, BlobError> {
            self.0.get_uri(uri).await
        }
        async fn presign_get(&self, key: &str, ttl: Duration) -> Result<String, BlobError> {
            self.0.presign_get(key, ttl).await
        }
    }

    #[tokio::test]
    async fn given_a_claim_check_inside_incoming_when_rendered_then_it_is_read_and_rendered() {
        let blobs = FakeBlobs::default();
        blobs.objects.lock().expect("lock").insert(
            format!("s3://{BUCKET}/incoming/rows.json"),
            json!({"columns": [{"name": "City"}], "rows": [["Zürich"]]})
                .to_string()
                .into_bytes(),
        );
        let d = deps(blobs);
        let uri = format!("s3://{BUCKET}/incoming/rows.json");
        assert_eq!(
            process(&d, &message(&claim_check(&uri))).await,
            Outcome::Done
        );
    }

    #[tokio::test]
    async fn given_storage_errors_on_a_claim_check_when_rendered_then_only_temporary_ones_are_retried()
     {
        let cases = [
            (
                BlobError::Permanent {
                    code: "NoSuchBucket".into(),
                    reason: "The specified bucket does not exist".into(),
                },
                "claim_check_unreadable",
            ),
            (
                BlobError::Permanent {
                    code: "AccessDenied".into(),
                    reason: "Access Denied".into(),
                },
                "claim_check_unreadable",
            ),
            (BlobError::NotFound("k".into()), "claim_check_missing"),
            (BlobError::Temporary("SlowDown".into()), "retry"),
        ];
        for (error, expected) in cases {
            let d = deps(FakeBlobs {
                failing: Some(error.clone()),
                ..FakeBlobs::default()
            });
            let uri = format!("s3://{BUCKET}/incoming/rows.json");
            let outcome = process(&d, &message(&claim_check(&uri))).await;
            assert_eq!(code_of(&outcome), expected, "{error}");
        }
    }

    #[tokio::test]
    async fn given_an_execution_id_reused_with_different_rows_when_rendered_then_it_is_refused_and_the_first_stands()
     {
        // Given an execution rendered once
        let d = deps(FakeBlobs::default());
        let first = inline("exec-1", json!([["Zürich", 1]]));
        assert_eq!(process(&d, &message(&first)).await, Outcome::Done);
        let recorded = d
            .executions
            .get_execution("exec-1")
            .await
            .expect("store")
            .expect("recorded");
        assert_eq!(recorded.input_sha256.as_ref().map(String::len), Some(64));
        // When the same id arrives with other rows
        let second = inline("exec-1", json!([["Zürich", 999]]));
        let outcome = process(&d, &message(&second)).await;
        // Then it is refused with a reason, and the first execution stands
        match &outcome {
            Outcome::Reject { code, reason } => {
                assert_eq!(*code, "execution_conflict");
                assert!(reason.contains("first execution stands"), "{reason}");
            }
            other => panic!("expected a conflict, got {other:?}"),
        }
        let after = d.executions.get_execution("exec-1").await.expect("store");
        assert_eq!(after, Some(recorded));
    }

    #[tokio::test]
    async fn given_an_identical_redelivery_when_rendered_then_it_is_done_without_rendering_again() {
        let blobs = std::sync::Arc::new(FakeBlobs::default());
        let d = Deps {
            blobs: Box::new(ArcBlobs(blobs.clone())),
            ..deps(FakeBlobs::default())
        };
        let m = inline("exec-2", json!([["Zürich", 1]]));
        assert_eq!(process(&d, &message(&m)).await, Outcome::Done);
        let puts = blobs.puts.lock().expect("lock").len();
        // The same content, with the time written in another offset
        let mut again = m.clone();
        again["generated_at"] = json!("2026-11-26T08:00:00+01:00");
        assert_eq!(process(&d, &message(&again)).await, Outcome::Done);
        assert_eq!(
            blobs.puts.lock().expect("lock").len(),
            puts,
            "not rendered again"
        );
    }

    #[tokio::test]
    async fn given_a_record_from_before_hashes_when_redelivered_then_it_is_done() {
        let d = deps(FakeBlobs::default());
        let m = inline("exec-3", json!([["Zürich", 1]]));
        assert_eq!(process(&d, &message(&m)).await, Outcome::Done);
        let mut old = d
            .executions
            .get_execution("exec-3")
            .await
            .expect("store")
            .expect("recorded");
        old.input_sha256 = None;
        let d = Deps {
            executions: Box::new(FakeExecutions(Mutex::new(HashMap::from([(
                "exec-3".to_owned(),
                old,
            )])))),
            ..d
        };
        let other = inline("exec-3", json!([["Zürich", 2]]));
        assert_eq!(process(&d, &message(&other)).await, Outcome::Done);
    }

    #[tokio::test]
    async fn given_a_huge_report_name_with_control_characters_when_rendered_then_the_record_keeps_it_clean_and_bounded()
     {
        let d = deps(FakeBlobs::default());
        let mut m = inline("exec-4", json!([["Zürich", 1]]));
        m["report_name"] = json!(format!("Sales\u{202e}\u{1b}[2J\n{}", "x".repeat(250_000)));
        assert_eq!(process(&d, &message(&m)).await, Outcome::Done);
        let e = d
            .executions
            .get_execution("exec-4")
            .await
            .expect("store")
            .expect("recorded");
        assert_eq!(e.report_name.chars().count(), MAX_REPORT_NAME);
        assert!(
            e.report_name.starts_with("Sales[2J xxx"),
            "{:.20}",
            e.report_name
        );
        assert!(e.report_name.ends_with('…'));
    }

    #[tokio::test]
    async fn given_hostile_values_when_rendered_then_they_are_refused_with_bounded_reasons_not_panics()
     {
        let d = deps(FakeBlobs::default());
        let mut late = inline("exec-5", json!([]));
        late["generated_at"] = json!("9999-12-31T23:59:59-01:00");
        let mut zone = inline("exec-6", json!([]));
        zone["time_zone"] = json!("Z".repeat(100_000));
        let big = inline("exec-7", json!([["a", 9223372036854775808_u64]]));
        let mut nan = inline("exec-8", json!([["a", 1]]));
        nan["data"]["columns"][1]["type"] = json!("decimal");
        nan["data"]["rows"] = json!([["a", "NaN"]]);
        let chart = |id: &str, spec: Value| {
            let mut m = inline(id, json!([["a", 1]]));
            m["chart"] = spec;
            m
        };
        let text_series = chart(
            "exec-9",
            json!({"type": "bar", "x": "City", "y": ["City"], "title": "t"}),
        );
        let missing = chart(
            "exec-10",
            json!({"type": "line", "x": "Nope\u{202e}", "y": ["Orders"], "title": "t"}),
        );
        let four = chart(
            "exec-11",
            json!({"type": "bar", "x": "City", "y": ["Orders", "Orders", "Orders", "Orders"], "title": "t"}),
        );
        let long_title = chart(
            "exec-12",
            json!({"type": "bar", "x": "City", "y": ["Orders"], "title": "x".repeat(100_000)}),
        );
        let pie = chart(
            "exec-13",
            json!({"type": "pie", "x": "City", "y": ["Orders"], "title": "t"}),
        );
        let mut decimals = inline("exec-14", json!([["a", 1]]));
        decimals["data"]["columns"][1]["decimals"] = json!(2);
        let mut many = inline("exec-15", json!([["a", 1]]));
        many["data"]["columns"][1] = json!({"name": "Orders", "type": "decimal", "decimals": 10});
        for (m, expected) in [
            (late, "malformed_message"),
            (zone, "invalid_time_zone"),
            (big, "invalid_rows"),
            (nan, "invalid_rows"),
            (text_series, "invalid_chart"),
            (missing, "invalid_chart"),
            (four, "invalid_chart"),
            (long_title, "invalid_chart"),
            (pie, "malformed_message"),
            (decimals, "invalid_rows"),
            (many, "invalid_rows"),
        ] {
            let outcome = process(&d, &message(&m)).await;
            assert_eq!(code_of(&outcome), expected);
            if let Outcome::Reject { reason, .. } = outcome {
                assert!(reason.chars().count() <= MAX_REASON, "{expected}");
            }
        }
    }
}
