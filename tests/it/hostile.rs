//! Hostile input through the real functions: malformed, oversized and
//! path-like bodies on the executions, fan-out and delivery queues. Each
//! must end on its first receive in its dead-letter queue with a code and a
//! reason, and no function may panic.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use local::stack::{DrainedMessage, LocalStack};
use report_delivery_tests::{running_stack, sample_execution};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(120);

/// Sends every body and waits for each to be dead-lettered; returns the
/// dead letters by body.
async fn refuse_all(
    s: &LocalStack,
    queue: &str,
    dlq: &str,
    cases: &[(String, &str)],
) -> BTreeMap<String, DrainedMessage> {
    for (body, _) in cases {
        s.send(queue, body).await.expect("send");
    }
    let start = Instant::now();
    let mut got = BTreeMap::new();
    while got.len() < cases.len() {
        assert!(
            start.elapsed() < WAIT,
            "{queue}: only {} of {} dead-lettered",
            got.len(),
            cases.len()
        );
        for m in s.drain(dlq, Duration::from_secs(2)).await.expect("drain") {
            got.insert(m.body.clone(), m);
        }
    }
    for (body, code) in cases {
        let dead = got
            .get(body.as_str())
            .unwrap_or_else(|| panic!("{queue}: not dead-lettered: {}", preview(body)));
        assert_eq!(
            dead.attributes.get("error_code").map(String::as_str),
            Some(*code),
            "{queue}: {} ({:?})",
            preview(body),
            dead.attributes.get("error_reason")
        );
        assert!(
            !dead.attributes["error_reason"].is_empty(),
            "a reason is recorded"
        );
        assert_eq!(
            dead.attributes
                .get("source_receive_count")
                .map(String::as_str),
            Some("1"),
            "{queue}: refused on its first receive: {}",
            preview(body)
        );
    }
    got
}

fn preview(body: &str) -> String {
    body.chars().take(100).collect()
}

fn with(good: &str, f: impl FnOnce(&mut serde_json::Value)) -> String {
    let mut v: serde_json::Value = serde_json::from_str(good).expect("json");
    f(&mut v);
    v.to_string()
}

#[tokio::test]
async fn fifty_hostile_bodies_are_each_refused_on_their_first_receive_with_a_reason() {
    let s = running_stack("hostile", &[]).await;
    let bucket = s.stack.buckets["ReportsBucket"].clone();
    let (_, good) = sample_execution("rpt-hostile");
    let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
    let columns = serde_json::json!([{"name": "n", "type": "integer"}]);
    let rows = |cell: serde_json::Value| serde_json::json!({"source": "inline", "columns": [{"name": "x", "type": "decimal"}], "rows": [[cell]]});
    let claim = |uri: &str| serde_json::json!({"source": "s3", "uri": uri, "format": "csv", "columns": columns});
    let wide: Vec<serde_json::Value> = (0..1001)
        .map(|i| serde_json::json!({"name": format!("c{i}")}))
        .collect();
    let executions: Vec<(String, &str)> = vec![
        (" ".into(), "malformed_message"),
        ("{not json".into(), "malformed_message"),
        ("[]".into(), "malformed_message"),
        ("null".into(), "malformed_message"),
        ("42".into(), "malformed_message"),
        ("{}".into(), "malformed_message"),
        (deep.clone(), "malformed_message"),
        (good[..good.len() / 2].to_owned(), "malformed_message"),
        (
            with(&good, |v| v["type"] = "execution_completed.v2".into()),
            "malformed_message",
        ),
        (
            with(&good, |v| v["execution_id"] = 5.into()),
            "malformed_message",
        ),
        (
            with(&good, |v| v["surprise"] = true.into()),
            "malformed_message",
        ),
        (
            with(&good, |v| {
                v["parameters"] = serde_json::json!({"a": {"b": 1}})
            }),
            "malformed_message",
        ),
        (
            with(&good, |v| {
                v["generated_at"] = "9999-12-31T23:59:59-01:00".into()
            }),
            "malformed_message",
        ),
        (with(&good, |v| v["execution_id"] = "".into()), "invalid_id"),
        (
            with(&good, |v| v["execution_id"] = "../../etc/passwd".into()),
            "invalid_id",
        ),
        (
            with(&good, |v| v["execution_id"] = "exec\u{0}\u{202e}".into()),
            "invalid_id",
        ),
        (
            with(&good, |v| v["report_id"] = "r".repeat(3000).into()),
            "invalid_id",
        ),
        (
            with(&good, |v| v["time_zone"] = "../../etc/localtime".into()),
            "invalid_time_zone",
        ),
        (
            with(&good, |v| v["data"] = rows("NaN".into())),
            "invalid_rows",
        ),
        (
            with(&good, |v| v["data"] = rows("-infinity".into())),
            "invalid_rows",
        ),
        (
            with(&good, |v| v["data"] = rows("1e400".into())),
            "invalid_rows",
        ),
        (
            with(
                &good,
                |v| v["data"] = serde_json::json!({"source": "inline", "columns": columns, "rows": [[18446744073709551615u64]]}),
            ),
            "invalid_rows",
        ),
        (
            with(
                &good,
                |v| v["data"] = serde_json::json!({"source": "inline", "columns": [{"name": "t", "type": "date_time"}], "rows": [["9999-12-31T23:59:59-01:00"]]}),
            ),
            "invalid_rows",
        ),
        (
            with(
                &good,
                |v| {
                    v["data"] = serde_json::json!({"source": "inline", "columns": wide, "rows": []})
                },
            ),
            "invalid_rows",
        ),
        (
            with(&good, |v| {
                v["data"] = claim("s3://some-other-bucket/incoming/x.csv")
            }),
            "invalid_claim_check",
        ),
        (
            with(&good, |v| {
                v["data"] = claim(&format!("s3://{bucket}/reports/secret.pdf"))
            }),
            "invalid_claim_check",
        ),
        (
            with(&good, |v| {
                v["data"] = claim(&format!("s3://{bucket}/incoming/../reports/x.pdf"))
            }),
            "invalid_claim_check",
        ),
        (
            with(&good, |v| {
                v["data"] = claim(&format!("s3://{bucket}/incoming//x.csv"))
            }),
            "invalid_claim_check",
        ),
        (
            with(&good, |v| v["data"] = claim("https://example.com/x.csv")),
            "invalid_claim_check",
        ),
        (
            with(&good, |v| {
                v["data"] = claim(&format!("s3://{bucket}/incoming/missing.csv"))
            }),
            "claim_check_missing",
        ),
    ];
    refuse_all(
        &s,
        "ExecutionsQueue",
        "ExecutionsDeadLetterQueue",
        &executions,
    )
    .await;

    // A known execution (its report has no targets) for the cursor cases
    let (known, body) = sample_execution("rpt-hostile-known");
    s.send("ExecutionsQueue", &body).await.expect("send");
    let start = Instant::now();
    while s.depth("FanoutQueue").await.expect("depth") > 0
        || shared::store::ExecutionStore::get_execution(&s.store, &known)
            .await
            .expect("get")
            .is_none_or(|e| e.fanned_out_at.is_none())
    {
        assert!(start.elapsed() < WAIT, "the known execution fanned out");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let fanout = |execution_id: &str, cursor: Option<String>| {
        serde_json::json!({"type": "fanout.v1", "execution_id": execution_id, "cursor": cursor})
            .to_string()
    };
    let b64 = |v: serde_json::Value| Some(URL_SAFE_NO_PAD.encode(v.to_string()));
    let fanouts: Vec<(String, &str)> = vec![
        (" ".into(), "malformed_message"),
        ("{\"type\":\"fanout.v1\"}".into(), "malformed_message"),
        (
            "{\"type\":\"fanout.v2\",\"execution_id\":\"e\"}".into(),
            "malformed_message",
        ),
        (
            format!("{{\"type\":\"fanout.v1\",\"execution_id\":\"{known}\",\"queued_so_far\":-1}}"),
            "malformed_message",
        ),
        (fanout("", None), "invalid_id"),
        (fanout("a/../../b", None), "invalid_id"),
        (fanout("exec-never-rendered", None), "unknown_execution"),
        (
            fanout(&known, Some("!!!not base64!!!".into())),
            "invalid_cursor",
        ),
        (fanout(&known, Some(String::new())), "invalid_cursor"),
        (fanout(&known, Some("A".repeat(5000))), "invalid_cursor"),
        (
            fanout(&known, b64(serde_json::json!([1, 2]))),
            "invalid_cursor",
        ),
        (
            fanout(&known, b64(serde_json::json!({"id": "x"}))),
            "invalid_cursor",
        ),
        (
            fanout(
                &known,
                b64(
                    serde_json::json!({"id": "x", "report_id": "rpt-other", "active_type": "active#email"}),
                ),
            ),
            "invalid_cursor",
        ),
    ];
    refuse_all(&s, "FanoutQueue", "FanoutDeadLetterQueue", &fanouts).await;

    let deliver = |attempt: &str, execution: &str, target: &str| {
        serde_json::json!({"type": "deliver.v1", "attempt_id": attempt, "execution_id": execution, "target_id": target}).to_string()
    };
    let ghost = shared::domain::attempt::attempt_id("e", "t");
    let delivers: Vec<(String, &str)> = vec![
        (" ".into(), "malformed_message"),
        ("{}".into(), "malformed_message"),
        ("[]".into(), "malformed_message"),
        (deep, "malformed_message"),
        ("{\"type\":\"deliver.v1\"}".into(), "malformed_message"),
        (
            "{\"type\":\"deliver.v9\",\"attempt_id\":\"a\"}".into(),
            "malformed_message",
        ),
        (
            "{\"type\":\"deliver.v1\",\"attempt_id\":1,\"execution_id\":\"e\",\"target_id\":\"t\"}"
                .into(),
            "malformed_message",
        ),
        (deliver("", "e", "t"), "invalid_id"),
        (deliver(&ghost, "e\n", "t"), "invalid_id"),
        (deliver(&ghost, "e", &"t".repeat(3000)), "invalid_id"),
        (deliver(&ghost, "../e", "t"), "invalid_id"),
        (deliver("att_forged", "e", "t"), "mismatched_attempt"),
        (deliver(&ghost, "e", "t2"), "mismatched_attempt"),
        (deliver(&ghost, "e", "t"), "unknown_attempt"),
    ];
    refuse_all(
        &s,
        "WebhookDeliveryQueue",
        "DeliveryDeadLetterQueue",
        &delivers,
    )
    .await;

    let total = executions.len() + fanouts.len() + delivers.len();
    assert!(total >= 50, "{total} cases");
    // And no function panicked on any of them
    for log in ["render", "fanout", "deliver"] {
        let path = s.work_dir.join(format!("logs/{log}.log"));
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            !text.contains("panicked"),
            "{log} panicked: see {}",
            path.display()
        );
    }
    s.down().await;
}

#[tokio::test]
async fn hostile_but_valid_text_is_delivered_cleaned_and_csv_formulas_are_neutralised() {
    // Given a 250 KB report name with control and bidi characters, and
    // claim-checked CSV whose cells look like formulas
    let s = running_stack("hostile-valid", &[]).await;
    s.seed(
        &report_delivery_tests::webhook_targets("rpt-hv", &[("hook", "/hooks/hv", true, false)])
            .replace(
                r#""active":true,"#,
                r#""active":true,"formats":["pdf","csv"],"#,
            ),
    )
    .await
    .expect("seed");
    let csv = "City,Note,Orders\n\"=HYPERLINK(\"\"http://evil\"\")\",\"+1\n@x\",-2\n\"a,\"\"b\"\"\",\"-3\",4\n";
    let uri = s
        .put_object("incoming/formulas.csv", csv.as_bytes().to_vec())
        .await
        .expect("upload");
    let (execution_id, good) = sample_execution("rpt-hv");
    let name = format!("\u{202e}Evil\u{0007}{}", "n".repeat(250_000));
    let body = with(&good, |v| {
        v["report_name"] = name.into();
        v["data"] = serde_json::json!({"source": "s3", "uri": uri, "format": "csv", "columns": [
            {"name": "City"}, {"name": "Note"}, {"name": "Orders", "type": "integer"}]});
    });
    s.send("ExecutionsQueue", &body).await.expect("send");
    let attempts = s
        .wait_settled(&execution_id, 1, WAIT)
        .await
        .expect("settles");
    assert_eq!(attempts[0].status, shared::domain::AttemptStatus::Delivered);
    // Then the stored and delivered name is bounded and clean
    let (execution, _) = report_delivery_tests::rendered(&s, &execution_id).await;
    assert!(execution.report_name.chars().count() <= 200);
    assert!(execution.report_name.starts_with("Evil"));
    assert!(
        !execution
            .report_name
            .chars()
            .any(|c| c.is_control() || c == '\u{202e}')
    );
    let event = s.webhook.received()[0].json().expect("json");
    assert!(event["report"]["name"].as_str().expect("name").len() < 1000);
    // And the CSV neutralises formula-like text but keeps numbers numbers
    let csv_key = execution.csv.expect("csv").key;
    let out = String::from_utf8(s.object(&csv_key).await.expect("csv")).expect("utf-8");
    let mut reader = csv::Reader::from_reader(out.as_bytes());
    let rows: Vec<Vec<String>> = reader
        .records()
        .map(|r| r.expect("row").iter().map(str::to_owned).collect())
        .collect();
    assert_eq!(rows[0][0], "'=HYPERLINK(\"http://evil\")");
    assert_eq!(rows[0][1], "'+1\n@x");
    assert_eq!(rows[0][2], "-2", "a number stays a number");
    assert_eq!(rows[1][1], "'-3", "text that looks like a number is text");
    s.down().await;
}
