//! The reconciler end to end: the scheduled function, invoked through the
//! local runner, finds attempts left behind in moto and repairs them.

use crate::delivery::{AttemptsOf, seed_one, wait_empty};
use report_delivery_tests::{run_sample, running_stack, webhook_targets};
use shared::contract::DeliveryTask;
use shared::domain::attempt::attempt_id;
use shared::domain::{AttemptStatus, DeliveryAttempt, TargetType, Timestamp};
use shared::store::{AttemptStore, ExecutionStore};
use std::time::Duration;

fn task(execution_id: &str, target_id: &str) -> String {
    serde_json::to_string(&DeliveryTask::DeliverV1 {
        attempt_id: attempt_id(execution_id, target_id),
        execution_id: execution_id.into(),
        target_id: target_id.into(),
    })
    .expect("json")
}

/// An attempt as a crashed fan-out or a dead-lettered message leaves it:
/// queued, with no message on its queue, last touched `age` ago.
fn left_behind(execution_id: &str, target_id: &str, age: time::Duration) -> DeliveryAttempt {
    let then = Timestamp::now().plus(-age);
    DeliveryAttempt::queued(
        execution_id,
        "rpt-rec",
        target_id,
        TargetType::Webhook,
        then,
    )
}

#[tokio::test]
async fn the_reconciler_requeues_lost_messages_fails_crash_loops_and_clears_strays() {
    // Given a report delivered once to "hook", and three more targets
    let s = running_stack("reconcile", &[("RECONCILE_STALE_SECONDS", "600")]).await;
    seed_one(&s, "rpt-rec").await;
    let (execution_id, attempts) = run_sample(&s, "rpt-rec", 1).await;
    assert_eq!(attempts[0].status, AttemptStatus::Delivered);
    s.seed(&webhook_targets(
        "rpt-rec",
        &[
            ("lost", "/hooks/lost", true, false),
            ("stray", "/hooks/stray", true, false),
            ("looping", "/hooks/looping", true, false),
        ],
    ))
    .await
    .expect("seed");
    let old = time::Duration::minutes(40);
    // And an execution of the same report whose fan-out died 40 minutes ago,
    // after writing attempts: rendered, never marked fanned out
    let mut crashed = s
        .store
        .get_execution(&execution_id)
        .await
        .expect("get")
        .expect("exists");
    crashed.id = format!("{execution_id}-crashed");
    crashed.created_at = Timestamp::now().plus(-old);
    crashed.fanned_out_at = None;
    crashed.target_count = None;
    crashed.outcome_revision = None;
    s.store.put_rendered(&crashed).await.expect("put");
    let crashed_record = crashed.clone();
    let crashed = crashed.id;
    // And an execution whose one attempt settled in a run that died before
    // its check: fanned out, settled, still in the incomplete index
    let mut uncounted = crashed_record;
    uncounted.id = format!("{execution_id}-uncounted");
    uncounted.fanned_out_at = Some(uncounted.created_at);
    uncounted.target_count = Some(1);
    s.store.put_rendered(&uncounted).await.expect("put");
    let mut done = left_behind(&uncounted.id, "hook", old);
    done.status = AttemptStatus::Delivered;
    done.delivered_at = Some(uncounted.created_at);
    s.store.create(&done).await.expect("create");
    // With an attempt whose message was lost
    s.store
        .create(&left_behind(&crashed, "lost", old))
        .await
        .expect("create");
    // And one whose message the redrive safety net moved to the DLQ
    s.store
        .create(&left_behind(&crashed, "stray", time::Duration::seconds(5)))
        .await
        .expect("create");
    s.send("DeliveryDeadLetterQueue", &task(&crashed, "stray"))
        .await
        .expect("send");
    // And a stray copy of the delivered attempt, and one of our own dead letters
    s.send("DeliveryDeadLetterQueue", &task(&execution_id, "hook"))
        .await
        .expect("send");
    // And an attempt deliver keeps dying on: eleven leases in a row ended
    // with no outcome, and the twelfth has just expired
    let mut looping = left_behind(&crashed, "looping", old);
    looping.status = AttemptStatus::Processing;
    looping.begins = 12;
    looping.crashed_leases = 11;
    looping.lease_token = Some("dead-run".into());
    looping.lease_expires_at = Some(Timestamp::now().plus(time::Duration::seconds(-1)));
    s.store.create(&looping).await.expect("create");

    // When the scheduled reconciler runs
    let host = s.function("reconcile").expect("reconcile function");
    let report = host
        .invoke_json(&serde_json::json!({"source": "aws.events", "detail-type": "Scheduled Event"}))
        .await
        .expect("reconcile runs");

    // Then it says what it did
    assert_eq!(report["requeued"], 2, "{report}");
    assert_eq!(report["failed"], 1, "{report}");
    assert_eq!(report["strays_removed"], 2, "{report}");
    // And the uncounted execution is settled; the crashed one is not (its
    // fan-out never finished)
    assert_eq!(report["settled"], 1, "{report}");
    let later = Timestamp::now().plus(time::Duration::seconds(1));
    let mut unsettled = Vec::new();
    for shard in 0..shared::store::PENDING_SHARDS {
        let page = s
            .store
            .unsettled(shard, later, None, 100)
            .await
            .expect("query");
        unsettled.extend(page.items);
    }
    assert!(unsettled.contains(&crashed), "{unsettled:?}");
    assert!(!unsettled.contains(&uncounted.id), "{unsettled:?}");
    // And the lost and stray attempts are delivered
    let settled = s
        .wait_settled(&crashed, 3, Duration::from_secs(60))
        .await
        .expect("settles");
    let by_target = |t: &str| {
        settled
            .iter()
            .find(|a| a.delivery_target_id == t)
            .cloned()
            .expect("attempt")
    };
    assert_eq!(by_target("lost").status, AttemptStatus::Delivered);
    assert_eq!(by_target("stray").status, AttemptStatus::Delivered);
    // And the crash loop is failed with its reason, with exactly one dead letter
    let looping = by_target("looping");
    assert_eq!(looping.status, AttemptStatus::Failed);
    assert_eq!(
        looping.last_error.as_ref().map(|e| e.code.as_str()),
        Some("crash_loop")
    );
    assert!(looping.dead_letter.and_then(|d| d.sent_at).is_some());
    wait_empty(&s, "WebhookDeliveryQueue").await;
    let dead = s
        .drain("DeliveryDeadLetterQueue", Duration::from_secs(20))
        .await
        .expect("drain");
    assert_eq!(dead.len(), 1, "only the crash loop's dead letter: {dead:?}");
    assert_eq!(
        dead[0].attributes.get("error_code").map(String::as_str),
        Some("crash_loop")
    );
    assert_eq!(dead[0].attributes.get("attempt_id"), Some(&looping.id));
    assert_eq!(s.store_attempts(&crashed).await.len(), 3);
    assert_eq!(s.store_attempts(&execution_id).await.len(), 1);
    s.down().await;
}

#[tokio::test]
async fn a_dead_letter_is_removed_once_an_operator_retry_delivers_its_attempt() {
    use local::sinks::Fault;
    // Given an attempt that exhausted its retries, its letter sent and
    // confirmed on the dead-letter queue
    let s = running_stack("reconcile-retried-letter", &[]).await;
    seed_one(&s, "rpt-retried").await;
    for _ in 0..5 {
        s.webhook.push_fault(Fault::Status {
            code: 503,
            retry_after: None,
        });
    }
    let (execution_id, attempts) = run_sample(&s, "rpt-retried", 1).await;
    let a = &attempts[0];
    assert_eq!(a.status, AttemptStatus::Failed);
    wait_empty(&s, "WebhookDeliveryQueue").await;
    assert_eq!(s.depth("DeliveryDeadLetterQueue").await.expect("depth"), 1);
    // When an operator retries it and it is delivered
    let api = crate::api::Api::of(&s);
    let (status, _, r) = api
        .call(
            "POST",
            &format!("/attempts/{}/retry", a.id),
            Some(serde_json::json!({"force": true})),
            &[],
        )
        .await;
    assert_eq!(status, 202, "{r}");
    let start = std::time::Instant::now();
    loop {
        let now = s.store.get(&a.id).await.expect("get").expect("exists");
        if now.status == AttemptStatus::Delivered {
            assert_eq!(now.episode, 1, "the retry began a new episode");
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "not delivered");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Then the next reconciler pass removes the letter, which is no longer
    // the record's, so the queue, /health and the alarm agree with it
    let host = s.function("reconcile").expect("reconcile function");
    let report = host
        .invoke_json(&serde_json::json!({"source": "aws.events", "detail-type": "Scheduled Event"}))
        .await
        .expect("reconcile runs");
    assert_eq!(report["stale_removed"], 1, "{report}");
    assert_eq!(s.depth("DeliveryDeadLetterQueue").await.expect("depth"), 0);
    let _ = execution_id;
    s.down().await;
}

#[tokio::test]
async fn an_attempt_waiting_in_a_backlog_gets_one_extra_message_per_stale_window_not_one_per_pass()
{
    // Given an execution from 40 minutes ago whose attempt still waits: its
    // message sits in a backlog that deliver is not reading (throttled)
    let s = running_stack("reconcile-backlog", &[("RECONCILE_STALE_SECONDS", "600")]).await;
    seed_one(&s, "rpt-backlog").await;
    let (execution_id, _) = run_sample(&s, "rpt-backlog", 1).await;
    s.function("deliver").expect("deliver").throttle(1_000);
    let old = time::Duration::minutes(40);
    let mut waiting = s
        .store
        .get_execution(&execution_id)
        .await
        .expect("get")
        .expect("exists");
    waiting.id = format!("{execution_id}-waiting");
    waiting.created_at = Timestamp::now().plus(-old);
    waiting.fanned_out_at = Some(waiting.created_at);
    waiting.target_count = Some(1);
    s.store.put_rendered(&waiting).await.expect("put");
    s.store
        .create(&left_behind(&waiting.id, "hook", old))
        .await
        .expect("create");
    s.send("WebhookDeliveryQueue", &task(&waiting.id, "hook"))
        .await
        .expect("send");
    // When the reconciler runs twice, five minutes apart in its schedule
    let host = s.function("reconcile").expect("reconcile function");
    let pass = || async {
        host.invoke_json(
            &serde_json::json!({"source": "aws.events", "detail-type": "Scheduled Event"}),
        )
        .await
        .expect("reconcile runs")
    };
    let first = pass().await;
    let second = pass().await;
    // Then the first pass sends one more message and records it; the second
    // finds the record's requeue too recent and sends nothing
    assert_eq!(first["requeued"], 1, "{first}");
    assert_eq!(second["requeued"], 0, "{second}");
    let a = s
        .store
        .get(&attempt_id(&waiting.id, "hook"))
        .await
        .expect("get")
        .expect("exists");
    assert!(a.requeued_at.is_some(), "the requeue is on the record");
    assert_eq!(s.depth("WebhookDeliveryQueue").await.expect("depth"), 2);
    s.down().await;
}
