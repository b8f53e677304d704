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
        outcome_revision: None,
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
mod tests;
