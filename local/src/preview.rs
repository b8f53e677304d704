//! `local preview`: the messages of the demo's chart execution
//! (`events/execution-completed-claim-check.json` with its CSV), built by
//! the real code without the stack: the email's HTML and text (the chart
//! inlined from a file instead of a CID, so a browser shows it), the Slack
//! blocks and bot comment, the webhook event, the chart PNG and the PDF.
//! `make preview` then screenshots the email in headless Chromium.

use anyhow::{Context, Result, anyhow};
use shared::channel::email::{CHART_CID, EmailView, render_parts};
use shared::channel::sample::{Sample, SampleReport, target};
use shared::channel::{ChartFile, slack, webhook};
use shared::contract::{CsvRows, ExecutionCompletedV1, ExecutionMessage, ReportData, summarize};
use shared::domain::execution::StoredFile;
use shared::render::chart::png::to_png;
use std::path::Path;

/// Writes the previews into `out` and lists what it wrote.
pub fn write(root: &Path, out: &Path) -> Result<Vec<String>> {
    std::fs::create_dir_all(out)?;
    let text = std::fs::read_to_string(root.join("events/execution-completed-claim-check.json"))?;
    let ExecutionMessage::CompletedV1(msg) = serde_json::from_str(&text)? else {
        return Err(anyhow!("the sample is not an execution"));
    };
    let ExecutionCompletedV1 {
        data: ReportData::S3(check),
        ..
    } = &msg
    else {
        return Err(anyhow!("the sample is not a claim check"));
    };
    let csv = std::fs::read(root.join("events/weekly-sales-2026-w48.csv"))?;
    let rows = CsvRows::new(csv, check.columns.clone().unwrap_or_default())
        .map_err(|e| anyhow!("sample CSV: {e}"))?;
    let tz = shared::render::time_zone(&msg.time_zone).context("sample zone")?;
    let mut written = Vec::new();
    let mut put = |name: &str, bytes: &[u8]| -> Result<()> {
        std::fs::write(out.join(name), bytes)?;
        written.push(out.join(name).display().to_string());
        Ok(())
    };
    // The chart, as render draws it.
    let spec = msg.chart.as_ref().context("the sample asks for a chart")?;
    let drawing = shared::handlers::render::chart_drawing(&msg, &rows, &tz)
        .map_err(|e| anyhow!(e))?
        .context("the sample asks for a chart")?;
    let png = to_png(&drawing).map_err(|e| anyhow!(e))?;
    put("chart.png", &png)?;
    let summary = summarize(&rows).map_err(|e| anyhow!("{e}"))?;
    let pdf = shared::render::render_pdf(
        &shared::render::ReportMeta::of(&msg, &tz, Some(&drawing)),
        &rows,
        &summary,
    )
    .map_err(|e| anyhow!(e))?;
    put("report.pdf", &pdf)?;
    let sample = |target_type: &str, config: serde_json::Value, preview_rows| -> Result<Sample> {
        let mut s = Sample::new(
            SampleReport {
                execution_id: &msg.execution_id,
                report_name: &msg.report_name,
                generated_at: msg.generated_at,
                time_zone: &msg.time_zone,
                parameters: &msg.parameters,
                rows: &rows,
            },
            target(target_type, config, preview_rows).map_err(|e| anyhow!(e))?,
        )
        .map_err(|e| anyhow!(e))?;
        s.chart = Some(ChartFile {
            file: StoredFile {
                key: "chart.png".into(),
                content_type: "image/png".into(),
                size: png.len() as u64,
                sha256: String::new(),
            },
            download_url: "https://links.example.com/d/chart.png?sig=sample".into(),
            title: spec.title.clone(),
        });
        if let Some(p) = s.preview.as_mut() {
            p.chart_title = Some(spec.title.clone());
        }
        Ok(s)
    };
    let email = sample(
        "email",
        serde_json::json!({"to": ["team@example.com"]}),
        None,
    )?;
    let (html, text) = render_parts(&EmailView::new(&email.ctx(), true, 10 << 20))?;
    // A browser cannot resolve cid: links; point it at the file instead.
    put(
        "email.html",
        html.replace(&format!("cid:{CHART_CID}"), "chart.png")
            .as_bytes(),
    )?;
    put("email.txt", text.as_bytes())?;
    let hook = sample(
        "slack",
        serde_json::json!({"mode": "incoming_webhook"}),
        None,
    )?;
    put(
        "slack-blocks.json",
        serde_json::to_string_pretty(&slack::block_message(&hook.ctx()))?.as_bytes(),
    )?;
    let hooked = sample(
        "webhook",
        serde_json::json!({"url": "https://hooks.example.com/reports"}),
        Some(5),
    )?;
    put(
        "webhook-event.json",
        serde_json::to_string_pretty(&webhook::event(&hooked.ctx()))?.as_bytes(),
    )?;
    Ok(written)
}
