//! End to end through the local runner: execution message → render → fan-out
//! → webhook delivery, with faults injected by the local receiver.

use local::sinks::Fault;
use local::stack::LocalStack;
use report_delivery_tests::{
    SIGNING_SECRET, assert_outcome, run_sample, running_stack, sample_execution, webhook_targets,
};
use shared::contract::DeliveryTask;
use shared::domain::{AttemptStatus, ErrorCategory, TryNext};
use shared::store::ExecutionStore;
use std::time::Duration;

const SETTLE: Duration = Duration::from_secs(60);

/// Verifies a Standard Webhooks signature with the reference Python
/// implementation (the `standardwebhooks` package), not ours.
fn verify_with_reference(
    secret: &str,
    headers: &std::collections::BTreeMap<String, String>,
    body: &[u8],
) -> bool {
    let python = local::stack::project_root().join(".venv/bin/python");
    let script = "import sys, json\nfrom standardwebhooks import Webhook\nh = json.loads(sys.argv[2])\nWebhook(sys.argv[1]).verify(sys.stdin.buffer.read(), h)\nprint('ok')";
    let mut child = std::process::Command::new(python)
        .args([
            "-c",
            script,
            secret,
            &serde_json::to_string(headers).expect("json"),
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python from the project venv runs");
    use std::io::Write;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(body)
        .expect("write body");
    let out = child.wait_with_output().expect("verifier finishes");
    out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "ok"
}

pub(crate) async fn seed_one(s: &LocalStack, report: &str) {
    s.seed(&webhook_targets(
        report,
        &[("hook", "/hooks/a", true, true)],
    ))
    .await
    .expect("seed");
}

#[tokio::test]
async fn an_execution_message_ends_as_one_signed_webhook_delivery_and_a_pdf_in_s3() {
    // Given a report with one signed active webhook target and one inactive one
    let s = running_stack("e2e-happy", &[]).await;
    s.seed(&webhook_targets(
        "rpt-e2e",
        &[
            ("hook", "/hooks/a", true, true),
            ("off", "/hooks/off", false, false),
        ],
    ))
    .await
    .expect("seed");
    // When the execution-completed message lands on the input queue
    let (execution_id, body) = sample_execution("rpt-e2e");
    s.send("ExecutionsQueue", &body).await.expect("send");
    // Then exactly one attempt exists and it is delivered
    let attempts = s
        .wait_settled(&execution_id, 1, SETTLE)
        .await
        .expect("settles");
    assert_eq!(attempts.len(), 1, "the inactive target gets nothing");
    let attempt = &attempts[0];
    assert_eq!(attempt.status, AttemptStatus::Delivered);
    assert_eq!(attempt.delivery_target_id, "hook");
    assert_eq!(attempt.retry_count, 0);
    assert!(attempt.delivered_at.is_some());
    // And the PDF in S3 is a real PDF matching the recorded size and hash
    let (execution, pdf) = report_delivery_tests::rendered(&s, &execution_id).await;
    assert!(pdf.starts_with(b"%PDF"));
    assert_eq!(pdf.len() as u64, execution.pdf.size);
    use sha2_check::hex_sha256;
    assert_eq!(hex_sha256(&pdf), execution.pdf.sha256);
    let parsed = printpdf::PdfDocument::parse(&pdf, &Default::default(), &mut Vec::new())
        .expect("PDF parses");
    assert_eq!(parsed.pages.len(), 1);
    assert_eq!(execution.row_count, 5);
    assert_eq!(execution.target_count, Some(1));
    // And the receiver got exactly one POST with the expected fields and a valid signature
    let received = s.webhook.received();
    assert_eq!(received.len(), 1);
    let post = &received[0];
    assert_eq!(
        (post.method.as_str(), post.path.as_str()),
        ("POST", "/hooks/a")
    );
    assert_eq!(post.headers.get("webhook-id"), Some(&attempt.id));
    let json = post.json().expect("JSON body");
    assert_eq!(json["type"], "report.ready");
    assert_eq!(json["schema_version"], "1.1");
    assert!(json.get("preview").is_none(), "webhook previews are opt-in");
    assert_eq!(json["execution"]["id"], execution_id.as_str());
    assert_eq!(json["report"]["name"], "Weekly sales");
    let files = json["files"].as_array().expect("files");
    assert_eq!(files.len(), 1, "PDF only by default");
    assert_eq!(files[0]["format"], "pdf");
    assert_eq!(files[0]["sha256"], execution.pdf.sha256.as_str());
    assert_eq!(files[0]["size"], execution.pdf.size);
    let link = files[0]["download_url"].as_str().expect("link");
    assert_eq!(
        report_delivery_tests::download(link).await,
        pdf,
        "the download link serves the PDF"
    );
    assert!(
        verify_with_reference(SIGNING_SECRET, &post.headers, &post.body),
        "signature verifies"
    );
    let mut tampered = post.body.clone();
    tampered.push(b' ');
    assert!(
        !verify_with_reference(SIGNING_SECRET, &post.headers, &tampered),
        "a tampered body fails"
    );
    s.down().await;
}

mod sha2_check {
    /// Hex SHA-256 computed independently of the code under test's helper.
    pub fn hex_sha256(bytes: &[u8]) -> String {
        let out = std::process::Command::new("sha256sum")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin.take().expect("stdin").write_all(bytes)?;
                c.wait_with_output()
            })
            .expect("sha256sum runs");
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_owned()
    }
}

#[tokio::test]
async fn a_503_is_retried_at_once_then_after_backoff_and_delivered_once() {
    let s = running_stack("e2e-503", &[]).await;
    seed_one(&s, "rpt-503").await;
    // The first try and its immediate retry both get 503
    s.webhook.push_fault(Fault::Status {
        code: 503,
        retry_after: None,
    });
    s.webhook.push_fault(Fault::Status {
        code: 503,
        retry_after: None,
    });
    let (_, attempts) = run_sample(&s, "rpt-503", 1).await;
    let a = &attempts[0];
    assert_eq!(a.status, AttemptStatus::Delivered);
    assert_eq!(a.retry_count, 1, "one backoff retry was scheduled");
    assert_eq!(
        a.last_error.as_ref().map(|e| e.code.as_str()),
        Some("http_503")
    );
    let answered: Vec<_> = s.webhook.received().iter().map(|r| r.answered).collect();
    assert_eq!(answered, [Some(503), Some(503), Some(200)]);
    s.down().await;
}

#[tokio::test]
async fn a_429_with_retry_after_is_waited_out_and_a_closed_connection_is_retried() {
    let s = running_stack("e2e-429", &[]).await;
    seed_one(&s, "rpt-429").await;
    s.webhook.push_fault(Fault::Status {
        code: 429,
        retry_after: Some(1),
    });
    s.webhook.push_fault(Fault::Close);
    let (_, attempts) = run_sample(&s, "rpt-429", 1).await;
    assert_eq!(attempts[0].status, AttemptStatus::Delivered);
    let received = s.webhook.received();
    assert_eq!(
        received.iter().map(|r| r.answered).collect::<Vec<_>>(),
        [Some(429), None, Some(200)]
    );
    // All three were the same event for the same attempt
    assert!(
        received
            .iter()
            .all(|r| r.headers.get("webhook-id") == Some(&attempts[0].id))
    );
    s.down().await;
}

#[tokio::test]
async fn a_permanent_4xx_fails_at_once_with_its_reason() {
    let s = running_stack("e2e-400", &[]).await;
    seed_one(&s, "rpt-400").await;
    s.webhook.push_fault(Fault::Status {
        code: 400,
        retry_after: None,
    });
    let (_, attempts) = run_sample(&s, "rpt-400", 1).await;
    let a = &attempts[0];
    assert_outcome(
        a,
        AttemptStatus::Failed,
        ErrorCategory::Permanent,
        "http_400",
    );
    assert_eq!(a.retry_count, 0);
    assert_eq!(
        a.history.iter().map(|t| t.then).collect::<Vec<_>>(),
        [TryNext::Failed]
    );
    assert_eq!(
        s.webhook.received().len(),
        1,
        "no retry of a permanent failure"
    );
    s.down().await;
}

#[tokio::test]
async fn exhausted_retries_fail_the_attempt_and_move_the_message_to_the_dead_letter_queue() {
    let s = running_stack("e2e-exhausted", &[]).await;
    seed_one(&s, "rpt-dlq").await;
    for _ in 0..10 {
        s.webhook.push_fault(Fault::Status {
            code: 503,
            retry_after: None,
        });
    }
    let (_, attempts) = run_sample(&s, "rpt-dlq", 1).await;
    let a = &attempts[0];
    assert_eq!(a.status, AttemptStatus::Failed);
    assert_eq!(
        a.last_error.as_ref().map(|e| e.code.as_str()),
        Some("retries_exhausted")
    );
    assert_eq!(a.retry_count, 3, "three backoff retries");
    // 1 try + 1 immediate retry + 3 backoff retries, each in the history
    assert_eq!(s.webhook.received().len(), 5);
    assert_eq!(a.tries, 5);
    let then: Vec<TryNext> = a.history.iter().map(|t| t.then).collect();
    assert_eq!(
        then,
        [
            TryNext::ImmediateRetry,
            TryNext::Backoff,
            TryNext::Backoff,
            TryNext::Backoff,
            TryNext::Exhausted
        ]
    );
    assert!(
        a.history
            .iter()
            .all(|t| t.code.as_deref() == Some("http_503"))
    );
    // Deliver moved the message itself, with its reason, and confirmed it
    let dead = s
        .drain("DeliveryDeadLetterQueue", Duration::from_secs(20))
        .await
        .expect("drain");
    assert_eq!(dead.len(), 1, "exactly one dead letter");
    let task: DeliveryTask = serde_json::from_str(&dead[0].body).expect("original body kept");
    let DeliveryTask::DeliverV1 { attempt_id, .. } = task;
    assert_eq!(attempt_id, a.id);
    assert_eq!(
        dead[0].attributes.get("error_code").map(String::as_str),
        Some("retries_exhausted")
    );
    assert_eq!(dead[0].attributes.get("attempt_id"), Some(&a.id));
    let record = s.store_attempts(&a.report_execution_id).await;
    assert!(
        record[0]
            .dead_letter
            .as_ref()
            .and_then(|d| d.sent_at)
            .is_some(),
        "the record says the dead letter is on the queue"
    );
    wait_empty(&s, "WebhookDeliveryQueue").await;
    let more = s
        .drain("DeliveryDeadLetterQueue", Duration::from_secs(2))
        .await
        .expect("drain");
    assert!(more.is_empty(), "no second dead letter: {more:?}");
    s.down().await;
}

#[tokio::test]
async fn a_duplicate_delivery_message_never_sends_twice() {
    let s = running_stack("e2e-duplicate", &[]).await;
    seed_one(&s, "rpt-dup").await;
    let (execution_id, body) = sample_execution("rpt-dup");
    s.send("ExecutionsQueue", &body).await.expect("send");
    let attempts = s
        .wait_settled(&execution_id, 1, SETTLE)
        .await
        .expect("settles");
    let a = &attempts[0];
    let execution = s
        .store
        .get_execution(&execution_id)
        .await
        .expect("get")
        .expect("exists");
    // When the same delivery message arrives twice more (at-least-once delivery)
    let task = serde_json::to_string(&DeliveryTask::DeliverV1 {
        attempt_id: a.id.clone(),
        execution_id: execution_id.clone(),
        target_id: a.delivery_target_id.clone(),
    })
    .expect("json");
    s.send("WebhookDeliveryQueue", &task).await.expect("send");
    s.send("WebhookDeliveryQueue", &task).await.expect("send");
    // And the same execution message arrives again (render and fan-out re-run)
    s.send("ExecutionsQueue", &body).await.expect("send");
    for queue in ["ExecutionsQueue", "FanoutQueue", "WebhookDeliveryQueue"] {
        wait_empty(&s, queue).await;
    }
    // Then the receiver still has exactly one request
    assert_eq!(s.webhook.received().len(), 1);
    assert_eq!(s.store_attempts(&execution_id).await.len(), 1);
    // And the second render changed nothing: one PDF and one CSV, same hash
    let before = execution.pdf.sha256.clone();
    let after = s
        .store
        .get_execution(&execution_id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(after.pdf.sha256, before);
    let keys = s
        .keys(&format!("reports/rpt-dup/{execution_id}/"))
        .await
        .expect("list");
    // The PDF, the CSV, the preview and the input kept for re-rendering;
    // nothing twice
    assert_eq!(keys.len(), 4, "{keys:?}");
    assert!(keys.iter().any(|k| k.contains("/preview-")), "{keys:?}");
    assert!(keys.iter().any(|k| k.ends_with("/input.json")), "{keys:?}");
    s.down().await;
}

#[tokio::test]
async fn the_runner_restarts_a_killed_function_and_nothing_is_lost() {
    let s = running_stack("e2e-kill", &[]).await;
    seed_one(&s, "rpt-kill").await;
    let runner = s.runner.as_ref().expect("runner");
    // Given deliver's process is running, when it is killed
    let host = runner.host("deliver").expect("deliver host");
    let first = wait_for_pid(host, None).await;
    host.kill().await;
    // Then the runner starts a new one
    let second = wait_for_pid(host, Some(first)).await;
    assert_ne!(first, second);
    let (_, attempts) = run_sample(&s, "rpt-kill", 1).await;
    assert_eq!(attempts[0].status, AttemptStatus::Delivered);
    assert_eq!(s.webhook.received().len(), 1);
    s.down().await;
}

/// Waits until the host runs a process other than `not`.
async fn wait_for_pid(host: &local::runner::FunctionHost, not: Option<u32>) -> u32 {
    let start = std::time::Instant::now();
    loop {
        if let Some(pid) = host.pid().await
            && Some(pid) != not
        {
            return pid;
        }
        assert!(start.elapsed() < SETTLE, "no new process");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until a queue holds no message, visible or in flight (hidden
/// copies wait out a lease, so the bound is generous).
pub(crate) async fn wait_empty(s: &LocalStack, queue: &str) {
    let start = std::time::Instant::now();
    while s.depth(queue).await.expect("depth") > 0 {
        assert!(
            start.elapsed() < Duration::from_secs(180),
            "{queue} did not drain"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub(crate) trait AttemptsOf {
    async fn store_attempts(&self, execution_id: &str) -> Vec<shared::domain::DeliveryAttempt>;
}

impl AttemptsOf for LocalStack {
    async fn store_attempts(&self, execution_id: &str) -> Vec<shared::domain::DeliveryAttempt> {
        use shared::store::AttemptStore;
        self.store.by_execution(execution_id).await.expect("query")
    }
}

#[tokio::test]
async fn a_csv_claim_check_is_rendered_in_unicode_and_delivered_with_both_formats() {
    // Given a target that asks for PDF and CSV, and claim-checked CSV data in S3
    let s = running_stack("e2e-claim-check", &[]).await;
    let seed = webhook_targets("rpt-claim", &[("both", "/hooks/both", true, false)]).replace(
        r#""active":true,"#,
        r#""active":true,"formats":["pdf","csv"],"#,
    );
    s.seed(&seed).await.expect("seed");
    let csv = include_bytes!("../../events/weekly-sales-2026-w48.csv").to_vec();
    let uri = s
        .put_object("incoming/w48.csv", csv.clone())
        .await
        .expect("upload");
    let mut msg: serde_json::Value = serde_json::from_str(include_str!(
        "../../events/execution-completed-claim-check.json"
    ))
    .expect("sample");
    let execution_id = format!("exec-{}", uuid::Uuid::new_v4().simple());
    msg["execution_id"] = execution_id.clone().into();
    msg["report_id"] = "rpt-claim".into();
    msg["data"]["uri"] = uri.into();
    // When the claim-check message arrives
    s.send("ExecutionsQueue", &msg.to_string())
        .await
        .expect("send");
    // Then it is delivered with a PDF and a CSV link
    let attempts = s
        .wait_settled(&execution_id, 1, SETTLE)
        .await
        .expect("settles");
    assert_eq!(attempts[0].status, AttemptStatus::Delivered);
    let execution = s
        .store
        .get_execution(&execution_id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(execution.row_count, 12);
    let body = s.webhook.received()[0].json().expect("json");
    let formats: Vec<&str> = body["files"]
        .as_array()
        .expect("files")
        .iter()
        .filter_map(|f| f["format"].as_str())
        .collect();
    assert_eq!(formats, ["pdf", "csv"]);
    // And the chart the message asked for is a PNG file of its own, whose
    // link serves the picture render stored
    assert_eq!(body["chart"]["format"], "png");
    assert_eq!(body["chart"]["title"], "Revenue by city, week 48");
    let chart = execution.chart.as_ref().expect("chart stored");
    let png =
        report_delivery_tests::download(body["chart"]["download_url"].as_str().expect("url")).await;
    assert_eq!(png, s.object(&chart.key).await.expect("chart"));
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG");
    // And the CSV holds the same rows; the PDF shows the non-Latin names
    let csv_key = execution.csv.as_ref().expect("csv").key.clone();
    let stored_csv = String::from_utf8(s.object(&csv_key).await.expect("csv")).expect("utf-8");
    assert_eq!(stored_csv.lines().count(), 13);
    assert!(stored_csv.contains("東京") && stored_csv.contains("\"Αθήνα, Ελλάδα\""));
    let pdf_path = report_delivery_tests::work_dir().join(format!("{execution_id}.pdf"));
    std::fs::write(&pdf_path, s.object(&execution.pdf.key).await.expect("pdf")).expect("write");
    let text = std::process::Command::new("pdftotext")
        .args([pdf_path.to_str().expect("path"), "-"])
        .output()
        .expect("pdftotext runs");
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("Revenue by city, week 48"),
        "the chart is drawn on the first page: {text}"
    );
    for name in ["Zürich", "Łódź", "東京", "Αθήνα", "Москва"] {
        assert!(text.contains(name), "{name} in the PDF text");
    }
    // And when the claim-check object and the PDF are both gone, the files
    // are rendered again, byte for byte, from the copy render kept
    let kept = shared::handlers::render::input_rows_key(
        "rpt-claim",
        &execution_id,
        shared::contract::ClaimFormat::Csv,
    );
    assert_eq!(s.object(&kept).await.expect("kept rows"), csv);
    let pdf = s.object(&execution.pdf.key).await.expect("pdf");
    let bucket = s
        .stack
        .buckets
        .get("ReportsBucket")
        .expect("bucket")
        .clone();
    for key in ["incoming/w48.csv", execution.pdf.key.as_str()] {
        s.s3.delete_object()
            .bucket(&bucket)
            .key(key)
            .send()
            .await
            .expect("delete");
    }
    let blobs = shared::blob::s3::S3Blobs::new(s.s3.clone(), bucket);
    shared::handlers::render::rerender(&blobs, &execution)
        .await
        .expect("re-rendered from the kept rows");
    assert_eq!(s.object(&execution.pdf.key).await.expect("pdf again"), pdf);
    s.down().await;
}

#[tokio::test]
async fn a_410_fails_the_attempt_and_flags_the_target_for_disabling() {
    let s = running_stack("e2e-410", &[]).await;
    seed_one(&s, "rpt-410").await;
    s.webhook.push_fault(Fault::Status {
        code: 410,
        retry_after: None,
    });
    let (_, attempts) = run_sample(&s, "rpt-410", 1).await;
    let a = &attempts[0];
    assert_outcome(
        a,
        AttemptStatus::Failed,
        ErrorCategory::Permanent,
        "http_410_gone",
    );
    assert_eq!(s.webhook.received().len(), 1, "no retry");
    let reason = report_delivery_tests::disable_reason(&s, &a.delivery_target_id).await;
    assert!(reason.contains("410"), "{reason}");
    // The default policy disables a target that is gone at once
    use shared::store::TargetStore;
    let t = s
        .store
        .get_target(&a.delivery_target_id)
        .await
        .expect("get")
        .expect("target");
    assert!(!t.active, "disabled");
    s.down().await;
}

#[tokio::test]
async fn unreadable_link_keys_leave_the_delivery_to_be_retried_not_failed() {
    use shared::store::AttemptStore;
    // Deliver reads the link signing keys on first use; here they are missing
    let s = report_delivery_tests::running_stack(
        "delivery-link-keys",
        &[("LINK_SIGNING_SECRET_ARN", "no-such-secret")],
    )
    .await;
    s.seed(&report_delivery_tests::webhook_targets(
        "rpt-keys",
        &[("hook", "/hooks/keys", true, true)],
    ))
    .await
    .expect("seed");
    let (execution_id, body) = report_delivery_tests::sample_execution("rpt-keys");
    s.send("ExecutionsQueue", &body).await.expect("send");
    let mut seen = None;
    for _ in 0..80 {
        let attempts = s.store.by_execution(&execution_id).await.expect("read");
        if let Some(a) = attempts.into_iter().find(|a| a.begins > 0) {
            seen = Some(a);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    let a = seen.expect("deliver took the attempt");
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let a = s.store.get(&a.id).await.expect("read").expect("exists");
    assert_ne!(
        a.status,
        shared::domain::AttemptStatus::Failed,
        "a missing key is temporary: {:?}",
        a.last_error
    );
    assert!(
        s.webhook.received().is_empty(),
        "nothing sent without a link"
    );
    s.down().await;
}
