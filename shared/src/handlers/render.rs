//! render: execution-completed message → PDF in S3 → execution record →
//! fan-out task. Idempotent: a redelivered message re-sends the fan-out
//! task for the execution already recorded.

use super::{Outcome, body_of, process_batch, valid_id};
use crate::blob::{BlobError, BlobStore};
use crate::contract::{
    ClaimCheck, ClaimFormat, ExecutionCompletedV1, ExecutionMessage, FanoutTask, ReportData, Table,
};
use crate::domain::Timestamp;
use crate::domain::execution::{ReportExecution, StoredFile};
use crate::queue::Queue;
use crate::render::{ReportMeta, csv::render_csv, render_pdf, time_zone};
use crate::store::ExecutionStore;
use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use sha2::{Digest, Sha256};
use tracing::info;

/// What render needs.
pub struct Deps {
    pub executions: Box<dyn ExecutionStore>,
    pub blobs: Box<dyn BlobStore>,
    pub queue: Box<dyn Queue>,
    pub fanout_queue_url: String,
    pub dead_letter_url: String,
}

/// The Lambda handler.
pub async fn handle(deps: &Deps, event: SqsEvent) -> SqsBatchResponse {
    process_batch(
        &event,
        deps.queue.as_ref(),
        &deps.dead_letter_url,
        1,
        |m: &SqsMessage| process(deps, m),
    )
    .await
}

async fn process(deps: &Deps, m: &SqsMessage) -> Outcome {
    let body = match body_of(m) {
        Ok(b) => b,
        Err(outcome) => return outcome,
    };
    let msg = match serde_json::from_str::<ExecutionMessage>(body) {
        Ok(ExecutionMessage::CompletedV1(msg)) => msg,
        Err(e) => {
            return Outcome::Reject {
                code: "malformed_message",
                reason: format!("not a valid execution_completed.v1 message: {e}"),
            };
        }
    };
    if !valid_id(&msg.execution_id) || !valid_id(&msg.report_id) {
        return Outcome::Reject {
            code: "invalid_id",
            reason: "execution_id and report_id must be 1-128 of [A-Za-z0-9-_.:]".into(),
        };
    }
    match render_and_store(deps, msg).await {
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
) -> Result<ReportExecution, Outcome> {
    let retry = |e: &dyn std::fmt::Display| Outcome::Retry {
        reason: e.to_string(),
    };
    if let Some(existing) = deps
        .executions
        .get_execution(&msg.execution_id)
        .await
        .map_err(|e| retry(&e))?
    {
        info!(execution_id = %existing.id, "already rendered");
        return Ok(existing);
    }
    let tz = time_zone(&msg.time_zone).ok_or_else(|| Outcome::Reject {
        code: "invalid_time_zone",
        reason: format!("{:?} is not an IANA time zone", msg.time_zone),
    })?;
    let table = load_table(deps, &msg.data).await?;
    table.validate().map_err(|e| Outcome::Reject {
        code: "invalid_rows",
        reason: e.to_string(),
    })?;
    let started = std::time::Instant::now();
    let row_count = table.rows.len() as u64;
    let (pdf, csv) = tokio::task::spawn_blocking({
        let msg = msg.clone();
        move || {
            let pdf = render_pdf(
                &ReportMeta {
                    report_name: &msg.report_name,
                    execution_id: &msg.execution_id,
                    generated_at: msg.generated_at,
                    time_zone: &tz,
                    time_zone_name: &msg.time_zone,
                    parameters: &msg.parameters,
                },
                &table,
            );
            pdf.map(|pdf| (pdf, render_csv(&table)))
        }
    })
    .await
    .map_err(|e| retry(&e))?
    .map_err(|reason| Outcome::Reject {
        code: "render_failed",
        reason,
    })?;
    let render_ms = started.elapsed().as_millis() as u64;
    let pdf = store_file(deps, &msg, pdf, "pdf", "application/pdf").await?;
    let csv = store_file(deps, &msg, csv, "csv", "text/csv; charset=utf-8").await?;
    info!(
        execution_id = %msg.execution_id,
        rows = row_count,
        pdf_bytes = pdf.size,
        csv_bytes = csv.size,
        render_ms,
        key = %pdf.key,
        "rendered"
    );
    let now = Timestamp::now();
    let execution = ReportExecution {
        id: msg.execution_id,
        report_id: msg.report_id,
        report_name: msg.report_name,
        generated_at: msg.generated_at,
        time_zone: msg.time_zone,
        row_count,
        pdf,
        csv: Some(csv),
        rendered_at: now,
        fanned_out_at: None,
        target_count: None,
        fanout_note: None,
        created_at: now,
        updated_at: now,
    };
    deps.executions
        .put_rendered(&execution)
        .await
        .map_err(|e| retry(&e))
}

/// Stores one rendered file under `reports/<report>/<execution>/`; the hash
/// in the name keeps the record and the object consistent even if two
/// renders of one execution race.
async fn store_file(
    deps: &Deps,
    msg: &ExecutionCompletedV1,
    bytes: Vec<u8>,
    ext: &str,
    content_type: &str,
) -> Result<StoredFile, Outcome> {
    let sha256 = hex::encode(Sha256::digest(&bytes));
    let size = bytes.len() as u64;
    let key = format!(
        "reports/{}/{}/report-{}.{ext}",
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

async fn load_table(deps: &Deps, data: &ReportData) -> Result<Table, Outcome> {
    let check: &ClaimCheck = match data {
        ReportData::Inline(table) => return Ok(table.clone()),
        ReportData::S3(check) => check,
    };
    let invalid = |reason: String| Outcome::Reject {
        code: "invalid_claim_check",
        reason,
    };
    let bytes = deps.blobs.get_uri(&check.uri).await.map_err(|e| match e {
        BlobError::NotFound(what) => Outcome::Reject {
            code: "claim_check_missing",
            reason: format!("claim-check object not found: {what}"),
        },
        other => Outcome::Retry {
            reason: other.to_string(),
        },
    })?;
    match check.format {
        ClaimFormat::Csv => {
            let columns = check
                .columns
                .clone()
                .ok_or_else(|| invalid("a CSV claim check must declare its columns".into()))?;
            Table::from_csv(&bytes, columns).map_err(invalid)
        }
        ClaimFormat::Json => {
            let table: Table = serde_json::from_slice(&bytes)
                .map_err(|e| invalid(format!("claim-check object is not a valid table: {e}")))?;
            match &check.columns {
                Some(declared) if *declared != table.columns => Err(invalid(
                    "the message's columns differ from the claim-check object's".into(),
                )),
                _ => Ok(table),
            }
        }
    }
}

impl Deps {
    /// Builds the deps from the environment `template.yaml` sets.
    pub async fn from_env() -> Result<Self, crate::config::ConfigError> {
        use crate::config::{required, tables};
        let sdk = crate::aws::load().await;
        let store = crate::store::dynamo::DynamoStore::new(crate::aws::dynamodb(&sdk), tables()?);
        Ok(Self {
            executions: Box::new(store),
            blobs: Box::new(crate::blob::s3::S3Blobs::new(
                crate::aws::s3(&sdk),
                required("REPORTS_BUCKET")?,
            )),
            queue: Box::new(crate::queue::sqs::SqsQueue::new(crate::aws::sqs(&sdk))),
            fanout_queue_url: required("FANOUT_QUEUE_URL")?,
            dead_letter_url: required("DEAD_LETTER_QUEUE_URL")?,
        })
    }
}
