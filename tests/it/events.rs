//! `events/`: the SQS-envelope events, which `sam local invoke -e` and
//! `cargo lambda invoke --data-file` take as they are, fed to their
//! functions through the local runner, and checked against the bare bodies.

use report_delivery_tests::running_stack;
use serde_json::{Value, json};
use shared::domain::AttemptStatus;
use std::time::Duration;

fn event(file: &str) -> Value {
    let path = local::stack::project_root().join("events").join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{file}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{file} is not JSON: {e}"))
}

/// The one record's body, parsed.
fn body(envelope: &Value) -> Value {
    let parsed: aws_lambda_events::sqs::SqsEvent =
        serde_json::from_value(envelope.clone()).expect("an SQS event as Lambda sends it");
    assert_eq!(parsed.records.len(), 1);
    let text = parsed.records[0].body.as_deref().expect("a body");
    serde_json::from_str(text).expect("the body is JSON")
}

#[tokio::test]
async fn each_sqs_envelope_in_events_is_taken_by_its_function_as_it_is() {
    // The envelopes carry the bare bodies.
    let execution = event("execution-completed.json");
    assert_eq!(body(&event("sqs-execution-completed.json")), execution);
    let id = execution["execution_id"].as_str().expect("id");
    assert_eq!(
        body(&event("sqs-fanout.json")),
        json!({"type": "fanout.v1", "execution_id": id})
    );
    let task = body(&event("sqs-deliver-webhook.json"));
    let target = task["target_id"].as_str().expect("target");
    assert_eq!(task["execution_id"], id);
    assert_eq!(
        task["attempt_id"],
        shared::domain::attempt::attempt_id(id, target),
        "the deliver envelope names the attempt fan-out creates"
    );

    // Fed to render, fan-out and deliver in turn, each is accepted whole.
    let s = running_stack("events", &[]).await;
    let targets = std::fs::read_to_string(local::stack::project_root().join("events/targets.json"))
        .expect("targets.json");
    s.seed(&targets).await.expect("seeded");
    let active = serde_json::from_str::<Value>(&targets).expect("JSON")["targets"]
        .as_array()
        .expect("targets")
        .iter()
        .filter(|t| t["report_id"] == execution["report_id"] && t["active"] == true)
        .count();
    let invoke = |file: &'static str, function: &'static str| {
        let s = &s;
        async move {
            let answer = s
                .function(function)
                .expect("function")
                .invoke_json(&event(file))
                .await
                .unwrap_or_else(|e| panic!("{file}: {e:#}"));
            assert_eq!(answer["batchItemFailures"], json!([]), "{file}: {answer}");
        }
    };
    invoke("sqs-execution-completed.json", "render").await;
    invoke("sqs-fanout.json", "fanout").await;
    let attempts = s
        .wait_settled(id, active, Duration::from_secs(90))
        .await
        .expect("settled");
    let webhook = attempts
        .iter()
        .find(|a| a.delivery_target_id == target)
        .expect("the webhook attempt");
    assert_eq!(webhook.status, AttemptStatus::Delivered);
    // The deliver envelope names that attempt: taken as a copy of its
    // message, acknowledged, and nothing is sent again.
    let posts = s.webhook.received().len();
    invoke("sqs-deliver-webhook.json", "deliver").await;
    assert_eq!(
        s.webhook.received().len(),
        posts,
        "a delivered attempt was sent again"
    );
    let log = std::fs::read_to_string(s.work_dir.join("logs/deliver.log")).expect("log");
    let record = body(&event("sqs-deliver-webhook.json"));
    let id_of_message = event("sqs-deliver-webhook.json")["Records"][0]["messageId"]
        .as_str()
        .expect("id")
        .to_owned();
    assert!(
        log.lines().any(|l| l.contains(&id_of_message)
            && l.contains(record["attempt_id"].as_str().expect("id"))),
        "deliver did not take the envelope's message for its attempt"
    );
    s.down().await;
}
