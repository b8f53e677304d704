//! Bad input end to end: every case is kept where an operator sees it (a
//! dead-letter queue with the reason, or a failed attempt with the reason),
//! and none loops or vanishes.

use report_delivery_tests::{assert_outcome, running_stack, sample_execution, webhook_targets};
use shared::contract::DeliveryTask;
use shared::domain::{AttemptStatus, DeliveryAttempt, ErrorCategory, TargetType, Timestamp};
use shared::store::{AttemptStore, ExecutionStore};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

async fn dead_lettered(s: &local::stack::LocalStack, queue: &str) -> local::stack::DrainedMessage {
    let mut got = s.drain(queue, WAIT).await.expect("drain");
    assert_eq!(got.len(), 1, "exactly one message dead-lettered on {queue}");
    got.remove(0)
}

#[tokio::test]
async fn malformed_and_invalid_execution_messages_go_to_the_dead_letter_queue_with_a_reason() {
    let s = running_stack("bad-executions", &[]).await;
    let (_, good) = sample_execution("rpt-bad");
    let mut wrong_version: serde_json::Value = serde_json::from_str(&good).expect("json");
    wrong_version["type"] = "execution_completed.v9".into();
    let mut bad_rows: serde_json::Value = serde_json::from_str(&good).expect("json");
    bad_rows["data"]["rows"][1][1] = "many".into();
    let mut missing_claim: serde_json::Value = serde_json::from_str(&good).expect("json");
    missing_claim["data"] = serde_json::json!({"source": "s3", "uri": format!("s3://{}/incoming/nope.json", s.stack.buckets["ReportsBucket"])});
    let mut bad_zone: serde_json::Value = serde_json::from_str(&good).expect("json");
    bad_zone["time_zone"] = "Mars/Olympus_Mons".into();
    let columns = serde_json::json!([{"name": "City"}, {"name": "Orders", "type": "integer"}]);
    let uri = s
        .put_object("incoming/bad.csv", b"Town,Orders\nZurich,1\n".to_vec())
        .await
        .expect("upload");
    let mut bad_header: serde_json::Value = serde_json::from_str(&good).expect("json");
    bad_header["data"] =
        serde_json::json!({"source": "s3", "uri": uri, "format": "csv", "columns": columns});
    let mut no_columns: serde_json::Value = serde_json::from_str(&good).expect("json");
    no_columns["data"] = serde_json::json!({"source": "s3", "uri": uri, "format": "csv"});
    let mut bad_id: serde_json::Value = serde_json::from_str(&good).expect("json");
    bad_id["execution_id"] = "../../etc/passwd".into();
    let cases = [
        ("{not json", "malformed_message"),
        (&wrong_version.to_string(), "malformed_message"),
        (&bad_rows.to_string(), "invalid_rows"),
        (&missing_claim.to_string(), "claim_check_missing"),
        (&bad_id.to_string(), "invalid_id"),
        (&bad_zone.to_string(), "invalid_time_zone"),
        (&bad_header.to_string(), "invalid_claim_check"),
        (&no_columns.to_string(), "invalid_claim_check"),
    ];
    for (body, code) in cases {
        s.send("ExecutionsQueue", body).await.expect("send");
        let dead = dead_lettered(&s, "ExecutionsDeadLetterQueue").await;
        assert_eq!(dead.body, body, "the original body is kept");
        assert_eq!(
            dead.attributes.get("error_code").map(String::as_str),
            Some(code)
        );
        assert!(!dead.attributes["error_reason"].is_empty());
        assert!(dead.attributes.contains_key("source_message_id"));
    }
    // Nothing loops: the input queue is empty and nothing reached fan-out
    assert_eq!(s.depth("ExecutionsQueue").await.expect("depth"), 0);
    assert_eq!(s.depth("FanoutQueue").await.expect("depth"), 0);
    s.down().await;
}

#[tokio::test]
async fn a_report_without_active_targets_is_recorded_on_the_execution_not_dead_lettered() {
    let s = running_stack("bad-report", &[]).await;
    let (execution_id, body) = sample_execution("rpt-nobody-knows");
    s.send("ExecutionsQueue", &body).await.expect("send");
    // Then fan-out records the outcome on the execution
    let start = std::time::Instant::now();
    let execution = loop {
        let e = s
            .store
            .get_execution(&execution_id)
            .await
            .expect("get")
            .filter(|e| e.fanned_out_at.is_some());
        if let Some(e) = e {
            break e;
        }
        assert!(start.elapsed() < WAIT, "fan-out did not finish");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert_eq!(execution.target_count, Some(0));
    assert_eq!(execution.fanout_note.as_deref(), Some("no_active_targets"));
    // And nothing went to a dead-letter queue (no alarm for a legitimate case)
    // (the fan-out message is deleted once its invocation returns)
    crate::delivery::wait_empty(&s, "FanoutQueue").await;
    assert_eq!(s.depth("FanoutDeadLetterQueue").await.expect("depth"), 0);
    s.down().await;
}

#[tokio::test]
async fn unknown_attempts_and_malformed_delivery_tasks_are_dead_lettered() {
    let s = running_stack("bad-deliver", &[]).await;
    s.send("WebhookDeliveryQueue", "[]").await.expect("send");
    let dead = dead_lettered(&s, "DeliveryDeadLetterQueue").await;
    assert_eq!(
        dead.attributes.get("error_code").map(String::as_str),
        Some("malformed_message")
    );
    let task = |attempt_id: &str, target_id: &str| {
        serde_json::to_string(&DeliveryTask::DeliverV1 {
            attempt_id: attempt_id.into(),
            execution_id: "e".into(),
            target_id: target_id.into(),
        })
        .expect("json")
    };
    let ghost = shared::domain::attempt::attempt_id("e", "t");
    for (body, code) in [
        (task(&ghost, "t"), "unknown_attempt"),
        (task("att_forged", "t"), "mismatched_attempt"),
        (task(&ghost, "t2"), "mismatched_attempt"),
        (task("", "t"), "invalid_id"),
        (task(&ghost, &"t".repeat(3000)), "invalid_id"),
    ] {
        s.send("WebhookDeliveryQueue", &body).await.expect("send");
        let dead = dead_lettered(&s, "DeliveryDeadLetterQueue").await;
        assert_eq!(
            dead.attributes.get("error_code").map(String::as_str),
            Some(code),
            "{}",
            &body[..body.len().min(120)]
        );
    }
    s.down().await;
}

#[tokio::test]
async fn an_attempt_whose_target_vanished_fails_with_the_reason() {
    let s = running_stack("bad-target", &[]).await;
    // Given an attempt whose target was deleted after fan-out
    let attempt = DeliveryAttempt::queued(
        "exec-x",
        "rpt-x",
        "tgt-deleted",
        TargetType::Webhook,
        Timestamp::now(),
    );
    s.store.create(&attempt).await.expect("create");
    let task = serde_json::to_string(&DeliveryTask::DeliverV1 {
        attempt_id: attempt.id.clone(),
        execution_id: "exec-x".into(),
        target_id: "tgt-deleted".into(),
    })
    .expect("json");
    s.send("WebhookDeliveryQueue", &task).await.expect("send");
    let settled = s.wait_settled("exec-x", 1, WAIT).await.expect("settles");
    assert_outcome(
        &settled[0],
        AttemptStatus::Failed,
        ErrorCategory::Permanent,
        "target_not_found",
    );
    s.down().await;
}

#[tokio::test]
async fn a_webhook_to_loopback_is_refused_unless_the_local_setting_allows_it() {
    // The local stack turns ALLOW_PRIVATE_WEBHOOK_TARGETS on; here it stays off, as in production.
    let s = running_stack("bad-ssrf", &[("ALLOW_PRIVATE_WEBHOOK_TARGETS", "false")]).await;
    s.seed(&webhook_targets(
        "rpt-ssrf",
        &[("loopback", "/x", true, false)],
    ))
    .await
    .expect("seed");
    let (execution_id, body) = sample_execution("rpt-ssrf");
    s.send("ExecutionsQueue", &body).await.expect("send");
    let settled = s
        .wait_settled(&execution_id, 1, WAIT)
        .await
        .expect("settles");
    assert_outcome(
        &settled[0],
        AttemptStatus::Failed,
        ErrorCategory::Permanent,
        "forbidden_url",
    );
    assert!(
        s.webhook.received().is_empty(),
        "nothing reached the loopback receiver"
    );
    s.down().await;
}
