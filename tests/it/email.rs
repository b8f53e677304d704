//! Email end to end: execution message → render → fan-out → deliver → SES v2
//! (moto), with the raw MIME read back from moto and parsed by an
//! independent parser (mail-parser).

use local::sinks::{Fault, WebhookSink};
use mail_parser::{MessageParser, MimeHeaders};
use report_delivery_tests::{
    assert_outcome, download, rendered, run_sample, running_stack, seed_target,
};
use shared::domain::{AttemptStatus, ErrorCategory};

fn email_config() -> serde_json::Value {
    serde_json::json!({
        "to": ["finance@example.com", "cfo@example.com"],
        "cc": ["controller@example.com"],
        "bcc": ["audit@example.com"],
        "reply_to": "reporting-team@example.com",
        "subject": "[Reports] {report_name} for {date}",
    })
}

fn addresses(a: Option<&mail_parser::Address<'_>>) -> Vec<String> {
    a.map(|a| {
        a.iter()
            .filter_map(|x| x.address().map(str::to_owned))
            .collect()
    })
    .unwrap_or_default()
}

#[tokio::test]
async fn an_email_target_gets_a_mime_copy_per_recipient_with_both_files_and_rfc_8058_headers() {
    let s = running_stack("email-happy", &[]).await;
    seed_target(
        &s,
        "rpt-mail",
        "mail",
        "email",
        email_config(),
        None,
        &["pdf", "csv"],
    )
    .await;
    let (execution_id, attempts) = run_sample(&s, "rpt-mail", 1).await;
    let a = &attempts[0];
    assert_eq!(a.status, AttemptStatus::Delivered, "{:?}", a.last_error);
    assert_eq!(
        a.metadata.get("files").map(String::as_str),
        Some("attached")
    );
    assert!(a.metadata.contains_key("ses_message_id"));

    // One copy per recipient (each with its own unsubscribe link), Bcc
    // included; moto lists the Destination we pass plus the To/Cc it
    // parses from the headers.
    let sent = s.emails(&execution_id).await.expect("moto state");
    assert_eq!(sent.len(), 4, "one copy per recipient");
    let mut envelope: Vec<String> = sent.iter().flat_map(|e| e.destinations.clone()).collect();
    envelope.sort();
    envelope.dedup();
    assert_eq!(
        envelope,
        [
            "audit@example.com",
            "cfo@example.com",
            "controller@example.com",
            "finance@example.com"
        ],
        "Bcc is in the envelope"
    );
    let parsed: Vec<_> = sent
        .iter()
        .map(|e| {
            MessageParser::default()
                .parse(e.raw.as_bytes())
                .expect("MIME parses")
        })
        .collect();
    // RFC 8058, read by an independent MIME parser: an HTTPS URI, its own
    // per copy, and the exact one-click value.
    let mut urls = Vec::new();
    for m in &parsed {
        let header = |name: &str| {
            m.header_raw(name)
                .map(|v| v.trim().to_owned())
                .unwrap_or_else(|| panic!("no {name} header"))
        };
        let list = header("List-Unsubscribe");
        assert!(
            list.starts_with("<https://") && list.ends_with('>'),
            "{list}"
        );
        assert!(list.contains("/u/"), "{list}");
        assert_eq!(
            header("List-Unsubscribe-Post"),
            "List-Unsubscribe=One-Click"
        );
        let url = list.trim_matches(|c| c == '<' || c == '>').to_owned();
        let text = m.body_text(0).expect("text body");
        assert!(text.contains(&url), "the text footer links it: {text}");
        let html = m.body_html(0).expect("html body");
        assert!(
            html.contains(&url.replace('&', "&amp;")),
            "the HTML footer links it"
        );
        urls.push(url);
    }
    urls.sort();
    urls.dedup();
    assert_eq!(urls.len(), 4, "a token per recipient");
    let m = parsed
        .iter()
        .find(|m| m.message_id() == Some(format!("{}@report-delivery", a.id).as_str()))
        .expect("the first copy");
    assert_eq!(m.subject(), Some("[Reports] Weekly sales for 2026-11-26"));
    assert_eq!(addresses(m.from()), ["reports@reports.example.com"]);
    assert_eq!(
        addresses(m.to()),
        ["finance@example.com", "cfo@example.com"]
    );
    assert_eq!(addresses(m.cc()), ["controller@example.com"]);
    assert_eq!(addresses(m.reply_to()), ["reporting-team@example.com"]);
    assert!(m.bcc().is_none(), "Bcc never appears in the headers");
    assert_eq!(
        m.message_id(),
        Some(format!("{}@report-delivery", a.id).as_str())
    );
    // multipart/alternative: a text and an HTML body
    let text = m.body_text(0).expect("text body").into_owned();
    let html = m.body_html(0).expect("html body").into_owned();
    assert!(
        text.contains("Generated: Thu 26 Nov 2026, 08:00 CET"),
        "{text}"
    );
    assert!(text.contains("region: EMEA"), "{text}");
    assert!(
        text.contains("Zurich") && text.contains("98,231.50"),
        "{text}"
    );
    assert!(
        text.contains("Total") && text.contains("231,610.65"),
        "{text}"
    );
    // The HTML, read by a real HTML5 parser: the preview table has every
    // row (the sample has five, under the default of ten), five cells a
    // row, numbers right-aligned, and the totals line.
    let doc = scraper::Html::parse_document(&html);
    let select = |css: &str| {
        doc.select(&scraper::Selector::parse(css).expect("selector"))
            .collect::<Vec<_>>()
    };
    let cells = |e: &scraper::ElementRef<'_>| -> Vec<String> {
        e.children()
            .filter_map(scraper::ElementRef::wrap)
            .map(|c| c.text().collect::<String>())
            .collect()
    };
    assert_eq!(select("h1")[0].text().collect::<String>(), "Weekly sales");
    let rows = select("table.preview tbody tr");
    assert_eq!(rows.len(), 5);
    assert!(rows.iter().all(|r| cells(r).len() == 5));
    assert_eq!(
        cells(&rows[0]),
        ["Zurich", "412", "98,231.50", "2026-11-25 19:42 CET", "Yes"]
    );
    let totals = select("table.preview tfoot tr");
    assert_eq!(cells(&totals[0]), ["Total", "1,151", "231,610.65", "", ""]);
    assert_eq!(
        select("table.preview tbody td[align=right]").len(),
        10,
        "the two numeric columns align right"
    );
    // The attachments are byte-for-byte the rendered files in S3
    let (e, pdf) = rendered(&s, &execution_id).await;
    let csv = s
        .object(&e.csv.as_ref().expect("csv").key)
        .await
        .expect("csv");
    let attachments: Vec<_> = m.attachments().collect();
    assert_eq!(attachments.len(), 2);
    assert_eq!(
        attachments[0].attachment_name(),
        Some("weekly-sales-2026-11-26.pdf")
    );
    assert_eq!(attachments[0].contents(), pdf.as_slice());
    assert_eq!(
        attachments[0].content_type().map(|c| c.subtype()),
        Some(Some("pdf"))
    );
    assert_eq!(
        attachments[1].attachment_name(),
        Some("weekly-sales-2026-11-26.csv")
    );
    assert_eq!(attachments[1].contents(), csv.as_slice());
    s.down().await;
}

#[tokio::test]
async fn a_chart_is_inlined_by_content_id_beside_the_attachments() {
    let s = running_stack("email-chart", &[]).await;
    seed_target(
        &s,
        "rpt-chart",
        "mail",
        "email",
        email_config(),
        None,
        &["pdf"],
    )
    .await;
    let (execution_id, body) = report_delivery_tests::sample_execution("rpt-chart");
    let mut msg: serde_json::Value = serde_json::from_str(&body).expect("json");
    msg["chart"] = serde_json::json!({
        "type": "line", "x": "City", "y": ["Orders", "Revenue (EUR)"], "title": "Orders & revenue <by city>"
    });
    s.send("ExecutionsQueue", &msg.to_string())
        .await
        .expect("send");
    let attempts = s
        .wait_settled(&execution_id, 1, std::time::Duration::from_secs(60))
        .await
        .expect("settles");
    assert_eq!(
        attempts[0].status,
        AttemptStatus::Delivered,
        "{:?}",
        attempts[0].last_error
    );
    let sent = s.emails(&execution_id).await.expect("moto state");
    let m = MessageParser::default()
        .parse(sent[0].raw.as_bytes())
        .expect("MIME parses");
    // mixed [ related [ alternative [text, html], the chart ], the PDF ]
    let kinds: Vec<String> = m
        .parts
        .iter()
        .filter_map(|p| p.content_type())
        .map(|c| format!("{}/{}", c.ctype(), c.subtype().unwrap_or_default()))
        .collect();
    assert_eq!(
        kinds,
        [
            "multipart/mixed",
            "multipart/related",
            "multipart/alternative",
            "text/plain",
            "text/html",
            "image/png",
            "application/pdf"
        ]
    );
    let chart = m
        .parts
        .iter()
        .find(|p| p.content_id() == Some("chart@report-delivery"))
        .expect("the chart part");
    let (e, stored) = rendered(&s, &execution_id).await;
    let key = e.chart.as_ref().expect("chart stored").key.clone();
    assert_eq!(
        chart.contents(),
        s.object(&key).await.expect("png").as_slice()
    );
    let info = png::Decoder::new(std::io::Cursor::new(chart.contents()))
        .read_info()
        .expect("decodes")
        .info()
        .clone();
    assert_eq!((info.width, info.height), (1080, 440));
    let html = m.body_html(0).expect("html").into_owned();
    let doc = scraper::Html::parse_document(&html);
    let img = doc
        .select(&scraper::Selector::parse("img").expect("selector"))
        .next()
        .expect("an img");
    assert_eq!(img.value().attr("src"), Some("cid:chart@report-delivery"));
    assert_eq!(img.value().attr("alt"), Some("Orders & revenue <by city>"));
    assert!(stored.starts_with(b"%PDF"));
    s.down().await;
}

#[tokio::test]
async fn files_above_the_size_limit_are_linked_and_the_link_serves_them() {
    let s = running_stack("email-big", &[("EMAIL_ATTACHMENT_LIMIT_BYTES", "1000")]).await;
    seed_target(&s, "rpt-big", "mail", "email", email_config(), None, &[]).await;
    let (execution_id, attempts) = run_sample(&s, "rpt-big", 1).await;
    assert_eq!(attempts[0].status, AttemptStatus::Delivered);
    assert_eq!(
        attempts[0].metadata.get("files").map(String::as_str),
        Some("linked")
    );
    let sent = s.emails(&execution_id).await.expect("moto state");
    let m = MessageParser::default()
        .parse(sent[0].raw.as_bytes())
        .expect("MIME parses");
    assert_eq!(m.attachment_count(), 0, "nothing attached");
    let text = m.body_text(0).expect("text").into_owned();
    assert!(text.contains("too large to attach"), "{text}");
    let link = text
        .split_whitespace()
        .find(|w| w.contains("/d/"))
        .expect("a download link in the body");
    let (_, pdf) = rendered(&s, &execution_id).await;
    assert_eq!(download(link).await, pdf);
    s.down().await;
}

#[tokio::test]
async fn an_unverified_sender_is_a_permanent_failure_with_the_ses_reason() {
    let s = running_stack(
        "email-rejected",
        &[("EMAIL_FROM_ADDRESS", "reports@unverified.example.org")],
    )
    .await;
    seed_target(&s, "rpt-rej", "mail", "email", email_config(), None, &[]).await;
    let (execution_id, attempts) = run_sample(&s, "rpt-rej", 1).await;
    let a = &attempts[0];
    assert_eq!(a.status, AttemptStatus::Failed);
    let e = a.last_error.as_ref().expect("reason recorded");
    assert_eq!(e.category, ErrorCategory::Permanent);
    assert_eq!(e.code, "MessageRejected");
    assert!(e.message.contains("SES"), "{}", e.message);
    assert_eq!(a.retry_count, 0, "no retry");
    assert!(s.emails(&execution_id).await.expect("moto").is_empty());
    s.down().await;
}

#[tokio::test]
async fn ses_unavailable_is_retried_and_then_sent_once() {
    // SES is reached through a local HTTP server that answers 503 twice
    // (the first try and the immediate retry), then accepts. The SDK is
    // asked for three attempts per call, and must still make one: a send
    // is not idempotent, so only deliver retries it, on the record.
    let ses = WebhookSink::start(None, None).await.expect("fault server");
    for _ in 0..2 {
        ses.push_fault(Fault::Status {
            code: 503,
            retry_after: None,
        });
    }
    let s = running_stack(
        "email-503",
        &[
            ("AWS_ENDPOINT_URL_SESV2", &ses.url),
            ("AWS_MAX_ATTEMPTS", "3"),
        ],
    )
    .await;
    seed_target(&s, "rpt-503m", "mail", "email", email_config(), None, &[]).await;
    let (_, attempts) = run_sample(&s, "rpt-503m", 1).await;
    let a = &attempts[0];
    assert_outcome(
        a,
        AttemptStatus::Delivered,
        ErrorCategory::Temporary,
        "http_503",
    );
    assert_eq!(a.retry_count, 1, "one backoff retry");
    assert_eq!(a.tries, 3);
    let received = ses.received();
    // One request per failed try, then one per recipient (four), each
    // addressed to that recipient alone.
    assert_eq!(
        received.len(),
        2 + 4,
        "one request per failed try, then per copy"
    );
    assert!(
        received
            .iter()
            .all(|r| r.method == "POST" && r.path == "/v2/email/outbound-emails")
    );
    for r in &received[2..] {
        let body = r.json().expect("JSON request");
        assert!(body["Content"]["Raw"]["Data"].is_string(), "raw content");
        let d = &body["Destination"];
        let n: usize = ["ToAddresses", "CcAddresses", "BccAddresses"]
            .iter()
            .map(|k| d[k].as_array().map_or(0, Vec::len))
            .sum();
        assert_eq!(n, 1, "one recipient per copy: {d}");
    }
    s.down().await;
}

#[tokio::test]
async fn duplicate_deliver_messages_never_send_a_second_email() {
    use shared::contract::DeliveryTask;
    let s = running_stack("email-dup", &[]).await;
    seed_target(&s, "rpt-dupm", "mail", "email", email_config(), None, &[]).await;
    let (execution_id, attempts) = run_sample(&s, "rpt-dupm", 1).await;
    let a = &attempts[0];
    assert_eq!(a.status, AttemptStatus::Delivered);
    // The same deliver message arrives twice more (at-least-once delivery)
    let task = serde_json::to_string(&DeliveryTask::DeliverV1 {
        attempt_id: a.id.clone(),
        execution_id: execution_id.clone(),
        target_id: a.delivery_target_id.clone(),
    })
    .expect("json");
    s.send("EmailDeliveryQueue", &task).await.expect("send");
    s.send("EmailDeliveryQueue", &task).await.expect("send");
    crate::delivery::wait_empty(&s, "EmailDeliveryQueue").await;
    assert_eq!(
        s.emails(&execution_id).await.expect("moto").len(),
        4,
        "still exactly one copy per recipient"
    );
    s.down().await;
}

#[tokio::test]
async fn waiting_for_an_email_slot_is_never_counted_against_a_send_or_repeats_one() {
    // Given SES accepts each send at once but answers 7 s later, deliver has
    // 25 s per invocation, and eight email targets arrive together (two
    // attached sends in flight per instance, so the later ones wait)
    let proxy = local::chaos::FaultProxy::slow(
        &local::endpoint().expect("moto"),
        std::time::Duration::from_secs(7),
    )
    .await
    .expect("slow SES");
    let s =
        report_delivery_tests::fast_stack("email-slots", &[("AWS_ENDPOINT_URL_SESV2", &proxy.url)])
            .await;
    let targets: Vec<serde_json::Value> = (1..=8)
        .map(|i| {
            serde_json::json!({
                "id": format!("mail{i}"),
                "report_id": "rpt-slots",
                "target_type": "email",
                "config": {"to": [format!("ops{i}@example.com")]},
            })
        })
        .collect();
    s.seed(&serde_json::json!({"targets": targets}).to_string())
        .await
        .expect("seed");
    // When the execution is delivered
    let (execution_id, attempts) = run_sample(&s, "rpt-slots", 8).await;
    // Then each attempt was sent once, in one try: no send timed out while
    // it waited for a slot, and none was cut off after SES accepted it
    for a in &attempts {
        assert_eq!(a.status, AttemptStatus::Delivered, "{:?}", a.last_error);
        assert!(
            a.history.iter().all(|t| t.code.is_none()),
            "{}: {:?}",
            a.id,
            a.history
        );
        assert_eq!(a.tries, 1, "{}", a.id);
    }
    assert_eq!(
        s.emails(&execution_id).await.expect("moto").len(),
        8,
        "exactly one email per target"
    );
    s.down().await;
}
