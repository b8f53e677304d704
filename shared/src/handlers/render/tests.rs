//! Tests of the module above: the handler and its helpers, with fakes.

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
    ) -> Result<(), StoreError> {
        Ok(())
    }
    async fn claim_outcome(
        &self,
        _: &str,
        _: Timestamp,
        _: Timestamp,
        _: u64,
    ) -> Result<bool, StoreError> {
        Ok(false)
    }
    async fn record_outcome(&self, _: &str, _: Timestamp, _: u64) -> Result<bool, StoreError> {
        Ok(false)
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
    serde_json::from_value(json!({"messageId": "m1", "body": body.to_string()})).expect("message")
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
