//! Outcome events end to end: what the reporting system reads from the
//! outcomes queue after real runs, counted against the attempts.

use local::sinks::Fault;
use local::stack::LocalStack;
use report_delivery_tests::{running_stack, sample_execution, seed_target, webhook_targets};
use serde_json::Value;
use std::time::{Duration, Instant};

/// Every event on the outcomes queue within `wait` after `expected` arrive.
pub(crate) async fn read_outcomes(s: &LocalStack, expected: usize, wait: Duration) -> Vec<Value> {
    let url = s.stack.queue_url("OutcomesQueue").expect("outcomes queue");
    let mut events = Vec::new();
    let until = Instant::now() + wait;
    while Instant::now() < until {
        let out = s
            .sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .expect("receive");
        for m in out.messages() {
            events.push(serde_json::from_str(m.body().unwrap_or("{}")).expect("JSON event"));
            if let Some(h) = m.receipt_handle() {
                s.sqs
                    .delete_message()
                    .queue_url(url)
                    .receipt_handle(h)
                    .send()
                    .await
                    .expect("delete");
            }
        }
        if events.len() >= expected && out.messages().is_empty() {
            break;
        }
    }
    events
}

/// Checks events against the published JSON Schema, with the reference
/// `jsonschema` validator from the project venv (not our types).
pub(crate) fn assert_schema_valid(events: &[Value]) {
    let root = local::stack::project_root();
    let script = "import json,sys,jsonschema\ns=json.load(open(sys.argv[1]))\nfor e in json.load(sys.stdin):\n    jsonschema.validate(e, s, cls=jsonschema.Draft202012Validator)\nprint('ok')";
    let mut child = std::process::Command::new(root.join(".venv/bin/python"))
        .args(["-c", script])
        .arg(root.join("events/schema/outcome-events.v1.schema.json"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python from the venv");
    use std::io::Write;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(serde_json::to_string(events).expect("json").as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("validator runs");
    assert!(
        out.status.success(),
        "events do not match the schema: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn of_type<'a>(events: &'a [Value], t: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["type"] == t).collect()
}

#[tokio::test]
async fn each_attempt_and_each_execution_gets_its_outcome_event_once_even_under_duplicates() {
    let s = running_stack("outcomes", &[]).await;
    s.seed(&webhook_targets(
        "rpt-out",
        &[("ow", "/hooks/ow", true, true)],
    ))
    .await
    .expect("seed");
    seed_target(
        &s,
        "rpt-out",
        "oe",
        "email",
        serde_json::json!({"to": ["finance@example.com"]}),
        None,
        &[],
    )
    .await;
    // The webhook refuses: one delivered, one failed
    s.webhook.push_fault(Fault::Status {
        code: 400,
        retry_after: None,
    });
    let (execution_id, body) = sample_execution("rpt-out");
    s.send("ExecutionsQueue", &body).await.expect("send");
    let attempts = s
        .wait_settled(&execution_id, 2, Duration::from_secs(60))
        .await
        .expect("settles");
    let events = read_outcomes(&s, 3, Duration::from_secs(20)).await;
    assert_schema_valid(&events);
    let deliveries = of_type(&events, "delivery_outcome.v1");
    assert_eq!(deliveries.len(), 2, "{events:#?}");
    for a in &attempts {
        let e = deliveries
            .iter()
            .find(|e| e["attempt_id"] == a.id.as_str())
            .expect("an event per attempt");
        assert_eq!(e["status"], a.status.as_str());
        assert_eq!(e["execution_id"], execution_id.as_str());
        assert_eq!(e["target_id"], a.delivery_target_id.as_str());
    }
    let failed = deliveries
        .iter()
        .find(|e| e["status"] == "failed")
        .expect("the failure");
    assert_eq!(failed["error"]["code"], "http_400");
    assert_eq!(failed["error"]["category"], "permanent");
    let executions = of_type(&events, "execution_outcome.v1");
    assert_eq!(executions.len(), 1, "{events:#?}");
    let e = executions[0];
    assert_eq!(e["event_id"], execution_id.as_str());
    assert_eq!(e["summary"], "delivered to 1 of 2 targets");
    assert_eq!(
        (e["delivered"].as_u64(), e["failed"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(e["attempts"].as_array().map(Vec::len), Some(2));

    // Duplicates of the final messages: the fan-out task and an attempt's
    // delivery task come again — no second execution event
    let fanout = serde_json::json!({"type": "fanout.v1", "execution_id": execution_id});
    s.send("FanoutQueue", &fanout.to_string())
        .await
        .expect("send");
    let task = shared::contract::DeliveryTask::for_attempt(&attempts[0]);
    let queue = match attempts[0].target_type {
        shared::domain::TargetType::Email => "EmailDeliveryQueue",
        _ => "WebhookDeliveryQueue",
    };
    s.send(queue, &serde_json::to_string(&task).expect("json"))
        .await
        .expect("send");
    s.send("ExecutionsQueue", &body).await.expect("send");
    let again = read_outcomes(&s, 1, Duration::from_secs(8)).await;
    assert!(
        of_type(&again, "execution_outcome.v1").is_empty(),
        "one execution event only: {again:#?}"
    );
    assert!(
        of_type(&again, "delivery_outcome.v1").is_empty(),
        "{again:#?}"
    );

    // An execution with nothing to deliver still gets its event
    s.seed(&webhook_targets(
        "rpt-none",
        &[("off", "/hooks/off", false, true)],
    ))
    .await
    .expect("seed");
    let (none_id, none_body) = sample_execution("rpt-none");
    s.send("ExecutionsQueue", &none_body).await.expect("send");
    let events = read_outcomes(&s, 1, Duration::from_secs(20)).await;
    let e = of_type(&events, "execution_outcome.v1");
    assert_eq!(e.len(), 1, "{events:#?}");
    assert_eq!(e[0]["execution_id"], none_id.as_str());
    assert_eq!(e[0]["summary"], "delivered to 0 of 0 targets");
    assert_eq!(e[0]["note"], "no_active_targets");
    s.down().await;
}

#[tokio::test]
async fn a_target_that_keeps_failing_is_disabled_after_n_permanent_failures_with_its_event() {
    use shared::store::TargetStore;
    let s = running_stack("auto-disable", &[("AUTO_DISABLE_AFTER", "3")]).await;
    s.seed(&webhook_targets(
        "rpt-broken",
        &[("br", "/hooks/br", true, true)],
    ))
    .await
    .expect("seed");
    // Three runs in a row refused for good (400)
    for run in 1..=3 {
        s.webhook.push_fault(Fault::Status {
            code: 400,
            retry_after: None,
        });
        let (id, body) = sample_execution("rpt-broken");
        s.send("ExecutionsQueue", &body).await.expect("send");
        s.wait_settled(&id, 1, Duration::from_secs(60))
            .await
            .expect("settles");
        // The policy applies right after the failure settles
        let mut active = true;
        for _ in 0..40 {
            let t = s
                .store
                .get_target("br")
                .await
                .expect("get")
                .expect("target");
            active = t.active;
            if run < 3 || !active {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        assert_eq!(active, run < 3, "after run {run}");
    }
    let t = s
        .store
        .get_target("br")
        .await
        .expect("get")
        .expect("target");
    let reason = t.disable_requested.expect("the reason is recorded").reason;
    assert!(
        reason.contains("3 consecutive permanent failures"),
        "{reason}"
    );
    let events = read_outcomes(&s, 7, Duration::from_secs(20)).await;
    assert_schema_valid(&events);
    let targets = of_type(&events, "target_outcome.v1");
    assert_eq!(targets.len(), 1, "{events:#?}");
    assert_eq!(targets[0]["event"], "disabled");
    assert_eq!(targets[0]["target_id"], "br");
    assert_eq!(targets[0]["consecutive_failures"], 3);
    // A fourth run delivers to nobody; re-enabling through the API resets
    // the count
    let (id, body) = sample_execution("rpt-broken");
    s.send("ExecutionsQueue", &body).await.expect("send");
    let mut fanned = None;
    for _ in 0..120 {
        use shared::store::ExecutionStore;
        if let Ok(Some(e)) = s.store.get_execution(&id).await
            && e.fanned_out_at.is_some()
        {
            fanned = Some(e);
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let e = fanned.expect("the fourth execution is fanned out");
    assert_eq!(e.target_count, Some(0), "no attempt for a disabled target");
    assert_eq!(s.webhook.received().len(), 3);
    s.down().await;
}

#[tokio::test]
async fn an_operator_retry_that_delivers_a_failed_attempt_sends_a_corrected_execution_outcome() {
    // Given an execution to two targets whose webhook refuses once: its
    // outcome says "delivered to 1 of 2 targets"
    let s = running_stack("outcomes-corrected", &[]).await;
    s.seed(&webhook_targets(
        "rpt-fix",
        &[
            ("ok", "/hooks/ok", true, false),
            ("bad", "/hooks/bad", true, false),
        ],
    ))
    .await
    .expect("seed");
    s.webhook.push_fault(Fault::Status {
        code: 400,
        retry_after: None,
    });
    let (execution_id, body) = sample_execution("rpt-fix");
    s.send("ExecutionsQueue", &body).await.expect("send");
    let attempts = s
        .wait_settled(&execution_id, 2, Duration::from_secs(60))
        .await
        .expect("settles");
    let failed = attempts
        .iter()
        .find(|a| a.status == shared::domain::AttemptStatus::Failed)
        .expect("one failed")
        .clone();
    let first = read_outcomes(&s, 3, Duration::from_secs(20)).await;
    let firsts = of_type(&first, "execution_outcome.v1");
    assert_eq!(firsts.len(), 1, "{first:#?}");
    assert_eq!(firsts[0]["summary"], "delivered to 1 of 2 targets");
    // When an operator retries the failed attempt and it is delivered
    let api = crate::api::Api::of(&s);
    let (status, _, r) = api
        .call("POST", &format!("/attempts/{}/retry", failed.id), None, &[])
        .await;
    assert_eq!(status, 202, "{r}");
    // Then a corrected execution outcome follows, with its own event id and
    // a higher revision, saying what is true now
    let later = read_outcomes(&s, 2, Duration::from_secs(30)).await;
    assert_schema_valid(&later);
    let corrected = of_type(&later, "execution_outcome.v1");
    assert_eq!(corrected.len(), 1, "{later:#?}");
    let c = corrected[0];
    assert_eq!(c["summary"], "delivered to 2 of 2 targets");
    assert!(c["revision"].as_u64() > Some(0), "{c}");
    assert_ne!(c["event_id"], firsts[0]["event_id"]);
    assert_eq!(c["execution_id"], execution_id.as_str());
    s.down().await;
}

#[tokio::test]
async fn an_execution_whose_last_run_died_before_its_check_is_completed_by_the_reconciler() {
    // Given deliver dies once after settling the execution's one attempt,
    // before the end-of-run check that would complete the execution
    let once = report_delivery_tests::work_dir()
        .join(format!("kill-once-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&once).expect("marker dir");
    let once = once.to_string_lossy().into_owned();
    let s = report_delivery_tests::fast_stack(
        "outcomes-backstop",
        &[
            ("CHAOS_KILL_POINTS", "deliver.before_flush"),
            ("CHAOS_KILL_ONCE_DIR", &once),
            ("RECONCILE_STALE_SECONDS", "1"),
        ],
    )
    .await;
    s.seed(&webhook_targets(
        "rpt-backstop",
        &[("ok", "/hooks/ok", true, false)],
    ))
    .await
    .expect("seed");
    let (execution_id, body) = sample_execution("rpt-backstop");
    s.send("ExecutionsQueue", &body).await.expect("send");
    s.wait_settled(&execution_id, 1, Duration::from_secs(60))
        .await
        .expect("settles");
    // Then no execution outcome went out (its message waits out the
    // visibility timeout of the run that died)
    let none = read_outcomes(&s, 1, Duration::from_secs(3)).await;
    assert!(
        of_type(&none, "execution_outcome.v1").is_empty(),
        "{none:#?}"
    );
    // When the reconciler runs
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let report = s
        .function("reconcile")
        .expect("reconcile")
        .invoke_json(&serde_json::json!({}))
        .await
        .expect("reconcile runs");
    // Then it completes the execution: one event, and out of the index
    assert_eq!(report["settled"], 1, "{report}");
    let events = read_outcomes(&s, 1, Duration::from_secs(10)).await;
    let executions = of_type(&events, "execution_outcome.v1");
    assert_eq!(executions.len(), 1, "{events:#?}");
    assert_eq!(executions[0]["summary"], "delivered to 1 of 1 targets");
    let report = s
        .function("reconcile")
        .expect("reconcile")
        .invoke_json(&serde_json::json!({}))
        .await
        .expect("reconcile runs");
    assert_eq!(report["executions"], 0, "{report}");
    s.down().await;
}
