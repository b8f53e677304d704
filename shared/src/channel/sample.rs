//! A self-contained send, for looking at messages without the stack: unit
//! tests of each channel's message, and `make preview`, which writes the
//! demo's email and Slack blocks to files. The preview is built by the
//! same code render uses.

use super::{DeliveryContext, LinkedFile, MemoryProgress};
use crate::blob::{BlobError, BlobStore};
use crate::contract::{Rows, summarize};
use crate::domain::execution::{ReportExecution, StoredFile};
use crate::domain::target::Format;
use crate::domain::{DeliveryAttempt, DeliveryTarget, Timestamp};
use crate::render::preview::{Preview, build};
use async_trait::async_trait;
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

/// Objects kept in memory.
#[derive(Default)]
pub struct MemoryBlobs(Mutex<HashMap<String, Vec<u8>>>);

#[async_trait]
impl BlobStore for MemoryBlobs {
    async fn put(&self, key: &str, bytes: Vec<u8>, _: &str) -> Result<(), BlobError> {
        if let Ok(mut m) = self.0.lock() {
            m.insert(key.to_owned(), bytes);
        }
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Vec<u8>, BlobError> {
        self.0
            .lock()
            .ok()
            .and_then(|m| m.get(key).cloned())
            .ok_or_else(|| BlobError::NotFound(key.to_owned()))
    }

    async fn get_uri(&self, uri: &str) -> Result<Vec<u8>, BlobError> {
        Err(BlobError::NotFound(uri.to_owned()))
    }

    async fn presign_get(&self, key: &str, _: Duration) -> Result<String, BlobError> {
        Ok(format!("https://files.example.com/{key}"))
    }
}

/// Everything one send borrows, owned.
pub struct Sample {
    pub attempt: DeliveryAttempt,
    pub target: DeliveryTarget,
    pub execution: ReportExecution,
    pub files: Vec<LinkedFile>,
    pub preview: Option<Preview>,
    pub chart: Option<super::ChartFile>,
    pub link_expires_at: Timestamp,
    pub blobs: MemoryBlobs,
    pub progress: MemoryProgress,
}

/// What the sample report is.
pub struct SampleReport<'a> {
    pub execution_id: &'a str,
    pub report_name: &'a str,
    pub generated_at: Timestamp,
    pub time_zone: &'a str,
    pub parameters: &'a BTreeMap<String, String>,
    pub rows: &'a dyn Rows,
}

impl Sample {
    /// A send of `report` to `target`, with a PDF and CSV of made-up sizes
    /// (stored as small stand-ins) and links that expire a week after it
    /// was generated. Fails if the rows do not check out.
    pub fn new(report: SampleReport<'_>, target: DeliveryTarget) -> Result<Self, String> {
        let summary = summarize(report.rows).map_err(|e| e.to_string())?;
        let tz = crate::render::time_zone(report.time_zone).ok_or("unknown time zone")?;
        let preview = build(report.rows, &summary, &tz, report.parameters);
        let file = |ext: &str, content_type: &str, size| StoredFile {
            key: format!(
                "reports/{}/{}/report.{ext}",
                target.report_id, report.execution_id
            ),
            content_type: content_type.into(),
            size,
            sha256: "0".repeat(64),
        };
        let (pdf, csv) = (
            file("pdf", "application/pdf", 48_213),
            file("csv", "text/csv; charset=utf-8", 9_876),
        );
        let execution = ReportExecution {
            id: report.execution_id.into(),
            report_id: target.report_id.clone(),
            report_name: crate::render::display::display(
                report.report_name,
                crate::render::display::MAX_REPORT_NAME,
            ),
            generated_at: report.generated_at,
            time_zone: report.time_zone.into(),
            row_count: summary.rows as u64,
            pdf: pdf.clone(),
            csv: Some(csv.clone()),
            preview: None,
            chart: None,
            rendered_at: report.generated_at,
            fanned_out_at: None,
            target_count: None,
            fanout_note: None,
            created_at: report.generated_at,
            updated_at: report.generated_at,
            input_sha256: None,
            test_target_id: None,
            reopened: 0,
            outcome_revision: None,
        };
        let blobs = MemoryBlobs::default();
        let mut files = Vec::new();
        for format in target.formats() {
            let stored = match format {
                Format::Pdf => pdf.clone(),
                Format::Csv => csv.clone(),
            };
            if let Ok(mut m) = blobs.0.lock() {
                m.insert(
                    stored.key.clone(),
                    format!("stand-in {}", format.as_str()).into(),
                );
            }
            files.push(LinkedFile {
                format,
                download_url: format!(
                    "https://links.example.com/d/{}?sig=sample",
                    stored.key.replace('/', "_")
                ),
                file: stored,
            });
        }
        Ok(Self {
            attempt: DeliveryAttempt::queued(
                report.execution_id,
                &target.report_id,
                &target.id,
                target.config.target_type(),
                report.generated_at,
            ),
            target,
            execution,
            files,
            preview: Some(preview),
            chart: None,
            link_expires_at: report.generated_at.plus(time::Duration::days(7)),
            blobs,
            progress: MemoryProgress::default(),
        })
    }

    /// The send's context.
    pub fn ctx(&self) -> DeliveryContext<'_> {
        DeliveryContext {
            attempt: &self.attempt,
            target: &self.target,
            execution: &self.execution,
            connection: None,
            files: &self.files,
            link_expires_at: self.link_expires_at,
            preview: self.preview.as_ref(),
            chart: self.chart.as_ref(),
            now: self.execution.generated_at,
            blobs: &self.blobs,
            progress: &self.progress,
            suppressed: &[],
            unsubscribe: &[],
        }
    }
}

/// A target of `target_type` with `config`, for samples.
pub fn target(
    target_type: &str,
    config: serde_json::Value,
    preview_rows: Option<u8>,
) -> Result<DeliveryTarget, String> {
    Ok(DeliveryTarget {
        id: format!("tgt-sample-{target_type}"),
        report_id: "rpt-sample".into(),
        service_connection_id: None,
        config: crate::domain::TargetConfig::from_json(target_type, config, true)
            .map_err(|e| e.to_string())?,
        formats: vec![Format::Pdf, Format::Csv],
        preview_rows,
        active: true,
        disable_requested: None,
        consecutive_failures: 0,
        version: 1,
        created_at: Timestamp::MIN,
        updated_at: Timestamp::MIN,
    })
}
