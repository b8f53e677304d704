//! Fan-out against moto with the real DynamoDB and SQS adapters: exact
//! counts, idempotent re-runs, inactive targets, continuation by cursor.

use local::bench::{fanout_deps, record_rendered, seed_webhook_targets};
use local::stack::LocalStack;
use report_delivery_tests::stack;
use shared::domain::Timestamp;
use shared::handlers::fanout::{Deps, handle};
use shared::store::{AttemptStore, ExecutionStore};
use std::time::Duration;

fn deps(s: &LocalStack) -> Deps {
    let mut d = fanout_deps(s, s.store.clone(), s.sqs.clone()).expect("deps");
    // Small pages, so the 1,000-target test crosses many page boundaries.
    d.page_size = 100;
    d
}

async fn seed(s: &LocalStack, report: &str, active: usize, inactive: usize) {
    seed_webhook_targets(&s.store, report, active, inactive)
        .await
        .expect("seeded");
}

async fn rendered(s: &LocalStack, execution_id: &str, report: &str) {
    record_rendered(&s.store, execution_id, report)
        .await
        .expect("recorded");
}

fn event(body: &str) -> aws_lambda_events::sqs::SqsEvent {
    serde_json::from_value(serde_json::json!({
        "Records": [{"messageId": "m-1", "body": body, "attributes": {"ApproximateReceiveCount": "1"}}]
    }))
    .expect("event")
}

fn task(execution_id: &str) -> String {
    format!(r#"{{"type":"fanout.v1","execution_id":"{execution_id}"}}"#)
}

#[tokio::test]
async fn a_thousand_targets_get_exactly_a_thousand_attempts_and_messages_even_when_run_twice() {
    // Given 1,000 active and 5 inactive webhook targets
    let s = stack("fanout-1000").await;
    seed(&s, "rpt-big", 1000, 5).await;
    rendered(&s, "exec-big", "rpt-big").await;
    let d = deps(&s);
    // When fan-out runs, and runs again for the same execution
    for run in 1..=2 {
        let response = handle(&d, event(&task("exec-big")), None).await;
        assert!(response.batch_item_failures.is_empty(), "run {run} failed");
        // Then there are exactly 1,000 attempts and 1,000 queued messages
        let attempts = s.store.by_execution("exec-big").await.expect("query");
        assert_eq!(attempts.len(), 1000, "after run {run}");
        assert_eq!(
            s.depth("WebhookDeliveryQueue").await.expect("depth"),
            1000,
            "after run {run}"
        );
    }
    // And no inactive target got an attempt
    let attempts = s.store.by_execution("exec-big").await.expect("query");
    for i in 1000..1005 {
        let id = format!("rpt-big-t{i:05}");
        assert!(
            attempts.iter().all(|a| a.delivery_target_id != id),
            "{id} is inactive"
        );
    }
    let execution = s
        .store
        .get_execution("exec-big")
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(execution.target_count, Some(1000));
    assert!(execution.fanned_out_at.is_some());
    assert_eq!(s.depth("EmailDeliveryQueue").await.expect("depth"), 0);
}

#[tokio::test]
async fn a_fanout_that_runs_out_of_time_continues_from_a_follow_up_message() {
    let s = stack("fanout-continue").await;
    seed(&s, "rpt-cont", 250, 0).await;
    rendered(&s, "exec-cont", "rpt-cont").await;
    let d = deps(&s);
    // An invocation with no time left hands over at once
    let past = Timestamp::now();
    let response = handle(&d, event(&task("exec-cont")), Some(past)).await;
    assert!(response.batch_item_failures.is_empty());
    let follow_up = s
        .drain("FanoutQueue", Duration::from_secs(5))
        .await
        .expect("drain");
    assert_eq!(follow_up.len(), 1, "a continuation was queued");
    assert!(
        s.store
            .by_execution("exec-cont")
            .await
            .expect("query")
            .is_empty()
    );
    // The follow-up finishes the job
    let response = handle(&d, event(&follow_up[0].body), None).await;
    assert!(response.batch_item_failures.is_empty());
    assert_eq!(
        s.store
            .by_execution("exec-cont")
            .await
            .expect("query")
            .len(),
        250
    );
    assert_eq!(s.depth("WebhookDeliveryQueue").await.expect("depth"), 250);
}

#[tokio::test]
async fn an_attempt_created_but_never_queued_is_queued_by_the_rerun() {
    // Given an attempt left behind by a fan-out that crashed before sending
    let s = stack("fanout-crash").await;
    seed(&s, "rpt-crash", 3, 0).await;
    rendered(&s, "exec-crash", "rpt-crash").await;
    let orphan = shared::domain::DeliveryAttempt::queued(
        "exec-crash",
        "rpt-crash",
        "rpt-crash-t00000",
        shared::domain::TargetType::Webhook,
        Timestamp::now(),
    );
    s.store.create(&orphan).await.expect("create");
    // When fan-out runs
    let response = handle(&deps(&s), event(&task("exec-crash")), None).await;
    assert!(response.batch_item_failures.is_empty());
    // Then every target, the orphan included, has exactly one message
    assert_eq!(s.depth("WebhookDeliveryQueue").await.expect("depth"), 3);
}
