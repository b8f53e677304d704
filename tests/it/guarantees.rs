//! Delivery guarantees under faults, end to end through the local runner:
//! tries are counted on the attempt record (not from SQS's receive count),
//! a crashed run's lease expires before its message returns, and a copy
//! that finds a live lease waits instead of being acknowledged.

use crate::delivery::{AttemptsOf, seed_one, wait_empty};
use local::sinks::Fault;
use report_delivery_tests::{fast_stack, run_sample, running_stack, sample_execution};
use shared::contract::DeliveryTask;
use shared::domain::{AttemptStatus, TryNext};
use std::time::Duration;

const SETTLE: Duration = Duration::from_secs(90);

fn status(code: u16, retry_after: Option<u64>) -> Fault {
    Fault::Status { code, retry_after }
}

#[tokio::test]
async fn a_receiver_failing_three_times_then_succeeding_is_delivered_with_its_tries_in_order() {
    // Given a receiver that answers 503 three times, then 200
    let s = running_stack("g-3-then-ok", &[]).await;
    seed_one(&s, "rpt-3ok").await;
    for _ in 0..3 {
        s.webhook.push_fault(status(503, None));
    }
    // When the execution is delivered
    let (_, attempts) = run_sample(&s, "rpt-3ok", 1).await;
    // Then it is delivered on the fourth try: try, immediate retry, two backoffs
    let a = &attempts[0];
    assert_eq!(a.status, AttemptStatus::Delivered);
    assert_eq!((a.tries, a.retry_count), (4, 2));
    let history: Vec<(u32, Option<&str>, TryNext)> = a
        .history
        .iter()
        .map(|t| (t.n, t.code.as_deref(), t.then))
        .collect();
    assert_eq!(
        history,
        [
            (1, Some("http_503"), TryNext::ImmediateRetry),
            (2, Some("http_503"), TryNext::Backoff),
            (3, Some("http_503"), TryNext::Backoff),
            (4, None, TryNext::Delivered),
        ]
    );
    assert!(
        a.history.windows(2).all(|w| w[0].at <= w[1].at),
        "tries are recorded in order"
    );
    assert_eq!(s.webhook.received().len(), 4);
    s.down().await;
}

#[tokio::test]
async fn a_429_with_a_long_retry_after_is_not_tried_again_before_it() {
    // Given a receiver that answers 429 with Retry-After: 7 (longer than the
    // 5 s deliver waits out inline, and longer than the 1 s test backoff)
    let s = running_stack("g-retry-after", &[]).await;
    seed_one(&s, "rpt-ra").await;
    s.webhook.push_fault(status(429, Some(7)));
    let (_, attempts) = run_sample(&s, "rpt-ra", 1).await;
    // Then the immediate retry is skipped and the next try waits 7 s
    let a = &attempts[0];
    assert_eq!(a.status, AttemptStatus::Delivered);
    assert_eq!(a.history.len(), 2);
    let (first, second) = (&a.history[0], &a.history[1]);
    assert_eq!(first.then, TryNext::Backoff);
    assert!(first.delay_ms >= Some(7000), "{first:?}");
    let gap = second.at.millis_since(first.at);
    assert!(gap >= 7000, "second try {gap} ms after the first");
    s.down().await;
}

#[tokio::test]
async fn throttled_receives_do_not_use_up_the_retry_schedule() {
    // Given deliver is throttled for the first six receives of the message
    // (more than the three backoffs, and more than the old maxReceiveCount 4)
    let s = running_stack("g-throttle", &[]).await;
    seed_one(&s, "rpt-throttle").await;
    s.function("deliver").expect("deliver").throttle(6);
    // And a receiver that fails four times
    for _ in 0..4 {
        s.webhook.push_fault(status(503, None));
    }
    let (_, attempts) = run_sample(&s, "rpt-throttle", 1).await;
    // Then the full schedule was still available: delivered on the fifth try
    let a = &attempts[0];
    assert_eq!(a.status, AttemptStatus::Delivered, "{:?}", a.last_error);
    assert_eq!((a.tries, a.retry_count), (5, 3));
    s.down().await;
}

#[tokio::test]
async fn a_deliver_killed_mid_send_is_tried_again_after_its_lease_and_ends_delivered() {
    // Given the receiver holds the first request (longer than deliver's timeout)
    let s = fast_stack("g-kill-mid-send", &[]).await;
    seed_one(&s, "rpt-kill-mid").await;
    s.webhook.push_fault(Fault::Delay(Duration::from_secs(120)));
    let (execution_id, body) = sample_execution("rpt-kill-mid");
    s.send("ExecutionsQueue", &body).await.expect("send");
    // When deliver is killed while the request is in flight
    wait_until("the first request arrives", || s.webhook.arrived() >= 1).await;
    let host = s.function("deliver").expect("deliver");
    host.kill().await;
    // Then the message comes back after the lease and the attempt ends delivered
    let attempts = s
        .wait_settled(&execution_id, 1, SETTLE)
        .await
        .expect("settles, never stuck");
    let a = &attempts[0];
    assert_eq!(a.status, AttemptStatus::Delivered);
    assert_eq!(a.begins, 2, "a second run took over the expired lease");
    assert_eq!(a.tries, 1, "the killed try never finished");
    assert_eq!(
        s.webhook.arrived(),
        2,
        "sent again, with the same webhook-id"
    );
    wait_empty(&s, "WebhookDeliveryQueue").await;
    s.down().await;
}

#[tokio::test]
async fn a_copy_that_finds_a_live_lease_waits_for_it_and_is_not_a_try() {
    // Given the first send is slow
    let s = fast_stack("g-lease-copy", &[]).await;
    seed_one(&s, "rpt-lease").await;
    s.webhook.push_fault(Fault::Delay(Duration::from_secs(4)));
    let (execution_id, body) = sample_execution("rpt-lease");
    s.send("ExecutionsQueue", &body).await.expect("send");
    wait_until("the first request arrives", || s.webhook.arrived() >= 1).await;
    // When a duplicate of the delivery message arrives while it is in flight
    let attempt_id = shared::domain::attempt::attempt_id(&execution_id, "hook");
    let task = serde_json::to_string(&DeliveryTask::DeliverV1 {
        attempt_id,
        execution_id: execution_id.clone(),
        target_id: "hook".into(),
    })
    .expect("json");
    s.send("WebhookDeliveryQueue", &task).await.expect("send");
    // Then the attempt is delivered once, and the copy is kept until the
    // lease ends and only then acknowledged (the queue drains)
    let attempts = s
        .wait_settled(&execution_id, 1, SETTLE)
        .await
        .expect("settles");
    wait_empty(&s, "WebhookDeliveryQueue").await;
    let a = &s.store_attempts(&execution_id).await[0];
    assert_eq!(attempts[0].status, AttemptStatus::Delivered);
    assert_eq!(
        (a.tries, a.begins),
        (1, 1),
        "the copy took no lease and no try"
    );
    assert_eq!(s.webhook.arrived(), 1);
    s.down().await;
}

/// A fast stack whose deliver dies once at `point` (a marker file keeps
/// it to once).
async fn killed_once_at(test: &str, point: &str) -> local::stack::LocalStack {
    let once = report_delivery_tests::work_dir()
        .join(format!("kill-once-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&once).expect("marker dir");
    let once = once.to_string_lossy().into_owned();
    fast_stack(
        test,
        &[
            ("CHAOS_KILL_POINTS", point),
            ("CHAOS_KILL_ONCE_DIR", &once),
            ("DEAD_LETTER_REPAIR_SECONDS", "2"),
        ],
    )
    .await
}

#[tokio::test]
async fn a_deliver_killed_after_a_send_but_before_recording_it_sends_again_and_ends_delivered() {
    // Given deliver dies right after the receiver accepted the request
    let s = killed_once_at("g-kill-after-send", "deliver.after_send").await;
    seed_one(&s, "rpt-kill-after").await;
    let (execution_id, attempts) = run_sample_within(&s, "rpt-kill-after").await;
    // Then the message came back after the lease and the attempt is delivered
    let a = &attempts[0];
    assert_eq!(a.status, AttemptStatus::Delivered);
    assert_eq!((a.begins, a.tries), (2, 1));
    // And the receiver saw the event twice with the same webhook-id: the
    // documented duplicate window, which Standard Webhooks receivers drop
    let ids: Vec<_> = s
        .webhook
        .received()
        .iter()
        .filter_map(|r| r.headers.get("webhook-id").cloned())
        .collect();
    assert_eq!(ids, [a.id.clone(), a.id.clone()]);
    wait_empty(&s, "WebhookDeliveryQueue").await;
    let _ = execution_id;
    s.down().await;
}

#[tokio::test]
async fn a_deliver_killed_between_giving_up_and_dead_lettering_still_leaves_exactly_one_dead_letter()
 {
    // Given a receiver that always fails, and deliver dies right after it
    // records the exhausted failure, before the dead letter is sent
    let s = killed_once_at("g-kill-exhausted", "deliver.after_exhausted").await;
    seed_one(&s, "rpt-kill-dlq").await;
    for _ in 0..10 {
        s.webhook.push_fault(status(503, None));
    }
    let (_, attempts) = run_sample_within(&s, "rpt-kill-dlq").await;
    let a = &attempts[0];
    assert_eq!(
        a.last_error.as_ref().map(|e| e.code.as_str()),
        Some("retries_exhausted")
    );
    // Then the message's next copy finishes the dead letter: exactly one,
    // and the record says it is on the queue
    let dead = s
        .drain("DeliveryDeadLetterQueue", SETTLE)
        .await
        .expect("drain");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].attributes.get("attempt_id"), Some(&a.id));
    let start = std::time::Instant::now();
    loop {
        let now = &s.store_attempts(&a.report_execution_id).await[0];
        if now.dead_letter.as_ref().and_then(|d| d.sent_at).is_some() {
            break;
        }
        assert!(start.elapsed() < SETTLE, "dead letter never confirmed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    wait_empty(&s, "WebhookDeliveryQueue").await;
    assert!(
        s.drain("DeliveryDeadLetterQueue", Duration::from_secs(2))
            .await
            .expect("drain")
            .is_empty(),
        "no second dead letter"
    );
    assert_eq!(s.webhook.received().len(), 5, "no send after giving up");
    s.down().await;
}

async fn run_sample_within(
    s: &local::stack::LocalStack,
    report: &str,
) -> (String, Vec<shared::domain::DeliveryAttempt>) {
    let (execution_id, body) = sample_execution(report);
    s.send("ExecutionsQueue", &body).await.expect("send");
    let attempts = s
        .wait_settled(&execution_id, 1, SETTLE)
        .await
        .expect("settles");
    (execution_id, attempts)
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !done() {
        assert!(start.elapsed() < SETTLE, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A queued attempt of `execution_id` for the seeded "hook" target, stored
/// with no execution record and no message.
async fn queued_for_hook(
    s: &local::stack::LocalStack,
    execution_id: &str,
    report_id: &str,
) -> shared::domain::DeliveryAttempt {
    let a = shared::domain::DeliveryAttempt::queued(
        execution_id,
        report_id,
        "hook",
        shared::domain::TargetType::Webhook,
        shared::domain::Timestamp::now(),
    );
    shared::store::AttemptStore::create(&s.store, &a)
        .await
        .expect("create");
    a
}

fn deliver_task(execution_id: &str, target_id: &str) -> String {
    serde_json::to_string(&DeliveryTask::DeliverV1 {
        attempt_id: shared::domain::attempt::attempt_id(execution_id, target_id),
        execution_id: execution_id.into(),
        target_id: target_id.into(),
    })
    .expect("json")
}

#[tokio::test]
async fn a_second_message_during_a_backoff_waits_for_the_record_and_is_not_a_try() {
    // Given a 6 s backoff, and a receiver that fails the first try and its
    // immediate retry
    let s = running_stack("g-copy-in-backoff", &[("RETRY_SCHEDULE_SECONDS", "6,6,6")]).await;
    seed_one(&s, "rpt-copy-backoff").await;
    s.webhook.push_fault(status(503, None));
    s.webhook.push_fault(status(503, None));
    let (execution_id, body) = sample_execution("rpt-copy-backoff");
    s.send("ExecutionsQueue", &body).await.expect("send");
    wait_until("the backoff is recorded", || s.webhook.arrived() >= 2).await;
    let start = std::time::Instant::now();
    while s.store_attempts(&execution_id).await[0].retry_count < 1 {
        assert!(start.elapsed() < SETTLE, "backoff never recorded");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // When a second message for the attempt arrives during the backoff (a
    // fan-out re-run, the reconciler, or an SQS duplicate)
    s.send("WebhookDeliveryQueue", &deliver_task(&execution_id, "hook"))
        .await
        .expect("send");
    let attempts = s
        .wait_settled(&execution_id, 1, SETTLE)
        .await
        .expect("settles");
    // Then the third try waits for the backoff the record holds
    let a = &attempts[0];
    assert_eq!(a.status, AttemptStatus::Delivered);
    assert_eq!(a.tries, 3, "{:?}", a.history);
    let (second, third) = (&a.history[1], &a.history[2]);
    let waited = third.at.millis_since(second.at);
    let backoff = second.delay_ms.expect("a backoff delay") as i64;
    assert!(
        waited >= backoff,
        "third try {waited} ms after the second, inside its {backoff} ms backoff"
    );
    assert_eq!(s.webhook.arrived(), 3, "the copy sent nothing of its own");
    wait_empty(&s, "WebhookDeliveryQueue").await;
    s.down().await;
}

#[tokio::test]
async fn a_crash_loop_fails_as_crash_loop_at_its_lease_limit_with_one_dead_letter() {
    // Given deliver dies right after taking the lease, every time; one
    // backoff in the schedule, so the limit is 3 x 2 leases
    let s = crash_loop_stack("g-crash-loop").await;
    seed_one(&s, "rpt-crash-loop").await;
    let (execution_id, body) = sample_execution("rpt-crash-loop");
    s.send("ExecutionsQueue", &body).await.expect("send");
    // When the message keeps coming back
    let attempts = s
        .wait_settled(&execution_id, 1, Duration::from_secs(300))
        .await
        .expect("a crash loop ends, not at maxReceiveCount");
    // Then the attempt is failed as a crash loop after six dead leases,
    // with its reason, and exactly one dead letter carries its id
    let a = &attempts[0];
    assert_eq!(a.status, AttemptStatus::Failed);
    let error = a.last_error.as_ref().expect("a reason");
    assert_eq!(error.code, "crash_loop", "{error:?}");
    assert_eq!((a.begins, a.crashed_leases), (6, 6));
    assert_eq!(s.webhook.arrived(), 0);
    let dead = s
        .drain("DeliveryDeadLetterQueue", Duration::from_secs(30))
        .await
        .expect("drain");
    assert_eq!(dead.len(), 1, "one dead letter");
    assert_eq!(dead[0].attributes.get("attempt_id"), Some(&a.id));
    assert_eq!(
        dead[0].attributes.get("error_code").map(String::as_str),
        Some("crash_loop")
    );
    s.down().await;
}

/// A stack whose deliver dies after every lease, with a short timeout and
/// visibility so each dead lease comes back in seconds.
async fn crash_loop_stack(test: &str) -> local::stack::LocalStack {
    let prefix = format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
    let work = report_delivery_tests::work_dir().join(format!("{test}-{prefix}"));
    let mut s = local::stack::LocalStack::up_with(&prefix, &work, |t| {
        t.set_property("WebhookDeliveryQueue", "VisibilityTimeout", 20.into())?;
        t.set_property("DeliverFunction", "Timeout", 17.into())
    })
    .await
    .expect("provisioned");
    s.start_runner(&[
        ("RETRY_SCHEDULE_SECONDS", "1"),
        ("LEASE_MARGIN_SECONDS", "1"),
        ("CHAOS_KILL_POINTS", "deliver.after_begin"),
    ])
    .await
    .expect("runner starts");
    s
}

#[tokio::test]
async fn a_store_error_on_the_lease_leaves_the_message_to_come_back_and_mints_no_letter() {
    // Given deliver is misconfigured: its attempts table does not exist
    // (as an IAM or configuration mistake makes every lease fail)
    let s = running_stack(
        "g-lease-store-error",
        &[("ATTEMPTS_TABLE", "no-such-table")],
    )
    .await;
    seed_one(&s, "rpt-store-error").await;
    let execution_id = "exec-store-error";
    let a = queued_for_hook(&s, execution_id, "rpt-store-error").await;
    // When its message is received
    let host = s.function("deliver").expect("deliver");
    s.send("WebhookDeliveryQueue", &deliver_task(execution_id, "hook"))
        .await
        .expect("send");
    wait_until("deliver ran", || {
        host.invocations.load(std::sync::atomic::Ordering::Relaxed) >= 1
    })
    .await;
    // Then no dead letter is minted, the message stays on its queue to come
    // back once the configuration is fixed, and the attempt waits
    assert!(
        s.drain("DeliveryDeadLetterQueue", Duration::from_secs(2))
            .await
            .expect("drain")
            .is_empty(),
        "a letter without its attempt would outlive the fix"
    );
    assert_eq!(s.depth("WebhookDeliveryQueue").await.expect("depth"), 1);
    let now = shared::store::AttemptStore::get(&s.store, &a.id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(now.status, AttemptStatus::Queued);
    s.down().await;
}

#[tokio::test]
async fn an_execution_that_is_not_found_does_not_count_against_its_target() {
    // Given a target that is disabled after one permanent failure
    let s = running_stack("g-missing-exec", &[("AUTO_DISABLE_AFTER", "1")]).await;
    seed_one(&s, "rpt-missing-exec").await;
    // And an attempt whose execution record is gone (expired by TTL while
    // its message waited)
    let execution_id = "exec-expired";
    queued_for_hook(&s, execution_id, "rpt-missing-exec").await;
    // When its message is delivered
    s.send("WebhookDeliveryQueue", &deliver_task(execution_id, "hook"))
        .await
        .expect("send");
    let attempts = s
        .wait_settled(execution_id, 1, SETTLE)
        .await
        .expect("settles");
    // Then the attempt fails with the reason, and the target, which did
    // nothing wrong, stays active with no failure counted
    assert_eq!(
        attempts[0].last_error.as_ref().map(|e| e.code.as_str()),
        Some("execution_not_found")
    );
    let target = shared::store::TargetStore::get_target(&s.store, "hook")
        .await
        .expect("get")
        .expect("exists");
    assert!(target.active, "disabled for the execution's fault");
    assert_eq!(target.consecutive_failures, 0);
    s.down().await;
}
