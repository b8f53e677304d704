//! The email channel's unit tests: messages read back with real parsers,
//! and per-recipient copies with a fake sender.
use super::*;

#[test]
fn ses_errors_map_to_categories() {
    for code in [
        "MessageRejected",
        "MailFromDomainNotVerifiedException",
        "AccountSendingPausedException",
        "SendingPausedException",
        "AccountSuspendedException",
        "BadRequestException",
    ] {
        let e = classify_ses(Some(code), Some(400), "");
        assert!(!e.is_retryable(), "{code}");
        assert_eq!(e.code(), code);
    }
    for code in [
        "TooManyRequestsException",
        "Throttling",
        "LimitExceededException",
        "ServiceUnavailable",
    ] {
        assert!(
            classify_ses(Some(code), Some(400), "").is_retryable(),
            "{code}"
        );
    }
    assert!(classify_ses(None, Some(503), "").is_retryable());
    assert!(classify_ses(Some("Weird"), Some(500), "").is_retryable());
    assert!(!classify_ses(Some("Weird"), Some(403), "").is_retryable());
    assert_eq!(classify_ses(None, Some(502), "").code(), "http_502");
}

#[test]
fn subjects_fill_the_template_and_cannot_inject_headers() {
    assert_eq!(
        subject(None, "Weekly sales", "2026-11-26"),
        "Weekly sales – 2026-11-26"
    );
    assert_eq!(
        subject(Some("[{date}] {report_name}"), "Q4", "2026-11-26"),
        "[2026-11-26] Q4"
    );
    assert_eq!(
        subject(None, "Evil\r\nBcc: x@evil.com", "d"),
        "Evil  Bcc: x@evil.com – d"
    );
}

#[test]
fn big_files_are_linked() {
    let file = |size| LinkedFile {
        format: crate::domain::target::Format::Pdf,
        file: crate::domain::execution::StoredFile {
            key: "k".into(),
            content_type: "application/pdf".into(),
            size,
            sha256: String::new(),
        },
        download_url: "https://x".into(),
    };
    assert_eq!(mode(&[file(10)], 10), Mode::Attached);
    assert_eq!(mode(&[file(6), file(5)], 10), Mode::Linked);
}

use crate::channel::sample::{Sample, SampleReport};
use crate::contract::{Column, ColumnType, Table};
use scraper::{Html, Selector};
use serde_json::json;

const HOSTILE: &str = "<script>alert('x')</script> & \"Sales\" <b>bold</b>";

fn sample(name: &str, rows: usize, preview_rows: Option<u8>) -> Sample {
    let table = Table {
        columns: vec![
            Column::new(HOSTILE, ColumnType::String),
            Column::new("Orders", ColumnType::Integer),
            Column::new("Revenue", ColumnType::Decimal),
            Column::new("On target", ColumnType::Boolean),
        ],
        rows: (0..rows)
            .map(|i| {
                json!([
                    format!("<img src=x onerror=alert({i})>"),
                    i * 1000,
                    12.5 * i as f64,
                    i % 2 == 0
                ])
            })
            .map(|v| v.as_array().cloned().unwrap_or_default())
            .collect(),
    };
    let params =
        std::collections::BTreeMap::from([("region".to_owned(), "<EMEA> & \"co\"".to_owned())]);
    let mut target = crate::domain::DeliveryTarget {
        id: "tgt-1".into(),
        report_id: "rpt-1".into(),
        service_connection_id: None,
        config: TargetConfig::from_json("email", json!({"to": ["a@example.com"]}), false)
            .expect("config"),
        formats: vec![
            crate::domain::target::Format::Pdf,
            crate::domain::target::Format::Csv,
        ],
        preview_rows,
        active: true,
        disable_requested: None,
        consecutive_failures: 0,
        version: 1,
        created_at: crate::domain::Timestamp::MIN,
        updated_at: crate::domain::Timestamp::MIN,
    };
    target.preview_rows = preview_rows;
    Sample::new(
        SampleReport {
            execution_id: "exec-1",
            report_name: name,
            generated_at: crate::domain::Timestamp::parse("2026-11-27T05:19:00Z").expect("t"),
            time_zone: "Europe/Zurich",
            parameters: &params,
            rows: &table,
        },
        target,
    )
    .expect("sample")
}

fn select<'a>(doc: &'a Html, css: &str) -> Vec<scraper::ElementRef<'a>> {
    doc.select(&Selector::parse(css).expect("selector"))
        .collect()
}

fn text(e: &scraper::ElementRef<'_>) -> String {
    e.text().collect::<String>()
}

#[test]
fn given_hostile_names_and_cells_when_the_email_is_rendered_then_a_real_parser_finds_them_as_text_only()
 {
    let s = sample(HOSTILE, 3, None);
    let (html, plain) = render_parts(&EmailView::new(&s.ctx(), true, 10)).expect("render");
    let doc = Html::parse_document(&html);
    assert!(select(&doc, "script").is_empty(), "no script element");
    assert!(select(&doc, "b").is_empty(), "no injected markup");
    assert!(
        select(&doc, "td img, th img").is_empty(),
        "no injected images"
    );
    assert_eq!(text(&select(&doc, "h1")[0]), HOSTILE.trim());
    let cut = crate::render::display::display(HOSTILE, crate::render::preview::MAX_CELL);
    assert_eq!(text(&select(&doc, "table.preview th")[0]), cut);
    assert!(
        select(&doc, "td")
            .iter()
            .any(|td| text(td) == "<EMEA> & \"co\""),
        "parameter as text"
    );
    assert!(!html.contains("<EMEA>"), "raw markup in the HTML");
    assert!(
        select(&doc, "img")
            .iter()
            .all(|i| i.value().attr("src").is_some_and(|s| s.starts_with("cid:"))),
        "no remote images"
    );
    // The text part is not HTML: it carries the name as written.
    assert!(plain.contains(HOSTILE.trim()), "{plain}");
}

#[test]
fn given_twelve_rows_and_the_default_preview_when_rendered_then_the_table_has_ten_rows_totals_and_a_note()
 {
    let s = sample("Weekly sales", 12, None);
    let (html, plain) = render_parts(&EmailView::new(&s.ctx(), true, 10)).expect("render");
    let doc = Html::parse_document(&html);
    let rows = select(&doc, "table.preview tbody tr");
    assert_eq!(rows.len(), 10);
    for row in &rows {
        let cells: Vec<_> = row
            .children()
            .filter_map(scraper::ElementRef::wrap)
            .collect();
        assert_eq!(cells.len(), 4);
        assert_eq!(cells[1].value().attr("align"), Some("right"));
        assert_eq!(cells[0].value().attr("align"), Some("left"));
    }
    assert_eq!(
        text(
            &rows[3]
                .children()
                .filter_map(scraper::ElementRef::wrap)
                .nth(1)
                .expect("cell")
        ),
        "3,000"
    );
    let totals: Vec<String> = select(&doc, "table.preview tfoot td")
        .iter()
        .map(text)
        .collect();
    assert_eq!(totals, ["Total", "66,000", "825.00", ""]);
    assert!(
        html.contains("…and 2 more rows in the attached PDF and CSV."),
        "{html}"
    );
    assert!(
        html.contains("Generated Fri 27 Nov 2026, 06:19 CET"),
        "{html}"
    );
    assert!(html.contains("until Fri 4 Dec 2026, 06:19 CET"), "{html}");
    assert_eq!(
        select(&doc, "a[href^='https://links.example.com/']").len(),
        2
    );
    assert!(
        plain.contains("Generated: Fri 27 Nov 2026, 06:19 CET"),
        "{plain}"
    );
    assert!(plain.contains("  3,000  "), "{plain}");
    assert!(plain.contains("Total"), "{plain}");
    assert!(
        plain.contains("…and 2 more rows in the attached PDF and CSV."),
        "{plain}"
    );
}

#[test]
fn given_a_target_without_preview_rows_when_rendered_then_no_table_is_shown() {
    let s = sample("Weekly sales", 12, Some(0));
    let (html, plain) = render_parts(&EmailView::new(&s.ctx(), false, 10)).expect("render");
    let doc = Html::parse_document(&html);
    assert!(select(&doc, "table.preview").is_empty());
    assert!(html.contains("too large to attach"));
    assert!(!plain.contains("Total"));
    assert!(plain.contains("region: <EMEA>"), "{plain}");
}

/// Accepts sends, except the ones numbered in `fail` (from 1).
struct FlakySender {
    calls: std::sync::Arc<std::sync::Mutex<Vec<Vec<String>>>>,
    fail: Vec<usize>,
}

#[async_trait]
impl MailSender for FlakySender {
    async fn send_raw(&self, envelope: &Envelope, _: Vec<u8>) -> Result<String, DeliveryError> {
        let mut calls = self.calls.lock().expect("lock");
        let to: Vec<String> = envelope
            .to
            .iter()
            .chain(&envelope.cc)
            .chain(&envelope.bcc)
            .cloned()
            .collect();
        calls.push(to.clone());
        if self.fail.contains(&calls.len()) {
            return Err(DeliveryError::temporary("Throttling", "slow down"));
        }
        Ok(format!("m-{}", to.join(",")))
    }
}

#[tokio::test]
async fn a_copy_per_recipient_and_a_retry_after_a_partial_failure_sends_only_the_rest() {
    let mut s = sample("Weekly", 3, Some(0));
    s.target.config = TargetConfig::from_json(
        "email",
        json!({"to": ["a@example.com", "b@example.com"], "bcc": ["c@example.com"]}),
        false,
    )
    .expect("config");
    let calls = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sender = FlakySender {
        calls: calls.clone(),
        fail: vec![2],
    };
    let from = EmailAddress::parse("reports@example.com").expect("from");
    let channel = EmailChannel::new(Box::new(sender), from, "Reports", 10_000_000);
    let first = channel.deliver(&s.ctx()).await;
    assert!(matches!(first, Err(DeliveryError::Temporary { .. })));
    // The first copy went out: saved, so the retry skips it.
    assert_eq!(
        crate::channel::Progress::get(&s.progress, SENT_KEY).as_deref(),
        Some("a@example.com m-a@example.com")
    );
    let receipt = channel
        .deliver(&s.ctx())
        .await
        .expect("the retry sends the rest");
    let ids: Vec<Option<&str>> = receipt
        .recipients
        .iter()
        .map(|r| r.message_id.as_deref())
        .collect();
    assert_eq!(
        ids,
        [
            Some("m-a@example.com"),
            Some("m-b@example.com"),
            Some("m-c@example.com")
        ]
    );
    let calls = calls.lock().expect("lock").clone();
    let one = |a: &str| vec![a.to_owned()];
    assert_eq!(
        calls,
        [
            one("a@example.com"),
            one("b@example.com"),
            one("b@example.com"),
            one("c@example.com")
        ],
        "each copy to its recipient alone; a was not sent twice"
    );
}
