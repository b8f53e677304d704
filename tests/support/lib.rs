//! Helpers for the integration and end-to-end tests: every test gets its own
//! stack (queues, tables, bucket under a unique prefix) in the moto server
//! that `make test` starts, so tests run in parallel without sharing state.

use local::stack::LocalStack;
use std::path::PathBuf;

/// A fresh, provisioned stack for one test (runner not started).
pub async fn stack(test: &str) -> LocalStack {
    assert!(
        std::env::var_os("AWS_ENDPOINT_URL").is_some(),
        "AWS_ENDPOINT_URL is not set: run the tests with `make test`, which starts moto"
    );
    let prefix = format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
    let work = work_dir().join(format!("{test}-{prefix}"));
    LocalStack::up(&prefix, &work)
        .await
        .unwrap_or_else(|e| panic!("provisioning {prefix} failed: {e:#}"))
}

/// A fresh stack with the functions running. Backoffs are shortened to one
/// second so retry paths finish quickly.
pub async fn running_stack(test: &str, overrides: &[(&str, &str)]) -> LocalStack {
    let mut s = stack(test).await;
    let mut env = vec![("RETRY_SCHEDULE_SECONDS", "1,1,1")];
    env.extend_from_slice(overrides);
    s.start_runner(&env).await.expect("runner starts");
    s
}

/// Deliver's timeout in a [`fast_stack`].
pub const FAST_DELIVER_TIMEOUT_SECS: u64 = 25;
/// The delivery queues' visibility timeout in a [`fast_stack`]: above the
/// deliver timeout plus the lease margin, as in `template.yaml`.
pub const FAST_VISIBILITY_SECS: u64 = 40;

/// A running stack whose deliver timeout (25 s) and delivery-queue
/// visibility (40 s) are short, with a 2 s lease margin and 1 s backoffs,
/// for tests that wait for a redelivery after a crash or a lease.
pub async fn fast_stack(test: &str, overrides: &[(&str, &str)]) -> LocalStack {
    assert!(
        std::env::var_os("AWS_ENDPOINT_URL").is_some(),
        "AWS_ENDPOINT_URL is not set: run the tests with `make test`, which starts moto"
    );
    let prefix = format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
    let work = work_dir().join(format!("{test}-{prefix}"));
    let mut s = LocalStack::up_with(&prefix, &work, |t| {
        for q in [
            "EmailDeliveryQueue",
            "SlackDeliveryQueue",
            "WebhookDeliveryQueue",
        ] {
            t.set_property(q, "VisibilityTimeout", FAST_VISIBILITY_SECS.into())?;
        }
        t.set_property(
            "DeliverFunction",
            "Timeout",
            FAST_DELIVER_TIMEOUT_SECS.into(),
        )
    })
    .await
    .unwrap_or_else(|e| panic!("provisioning {prefix} failed: {e:#}"));
    let mut env = vec![
        ("RETRY_SCHEDULE_SECONDS", "1,1,1"),
        ("LEASE_MARGIN_SECONDS", "2"),
    ];
    env.extend_from_slice(overrides);
    s.start_runner(&env).await.expect("runner starts");
    s
}

/// Where tests keep captures and function logs.
pub fn work_dir() -> PathBuf {
    local::stack::project_root().join("target/it")
}

/// The sample execution with a fresh execution id (so stacks never collide).
pub fn sample_execution(report_id: &str) -> (String, String) {
    let mut v: serde_json::Value =
        serde_json::from_str(include_str!("../../events/execution-completed.json"))
            .expect("sample");
    let id = format!("exec-{}", uuid::Uuid::new_v4().simple());
    v["execution_id"] = id.clone().into();
    v["report_id"] = report_id.into();
    (id, v.to_string())
}

/// A seed file with one webhook target per `(target_id, path, active, signed)`.
pub fn webhook_targets(report_id: &str, targets: &[(&str, &str, bool, bool)]) -> String {
    let list: Vec<serde_json::Value> = targets
        .iter()
        .map(|(id, path, active, signed)| {
            let mut t = serde_json::json!({
                "id": id,
                "report_id": report_id,
                "target_type": "webhook",
                "active": active,
                "config": {"url": format!("{{{{webhook_sink_url}}}}{path}")},
            });
            if *signed {
                t["service_connection_id"] = SIGNING_CONNECTION.into();
            }
            t
        })
        .collect();
    serde_json::json!({
        "connections": [{"id": SIGNING_CONNECTION, "kind": "webhook_signing", "secrets": [SIGNING_SECRET]}],
        "targets": list,
    })
    .to_string()
}

/// The connection id used by [`webhook_targets`].
pub const SIGNING_CONNECTION: &str = "conn-test-signing";
/// A 32-byte Standard Webhooks secret.
pub const SIGNING_SECRET: &str = "whsec_dGVzdC1zaWduaW5nLXNlY3JldC0zMi1ieXRlcy1sb25nIQ==";

/// Sends the sample execution for `report_id` and waits until its
/// `expected` attempts are delivered or failed.
pub async fn run_sample(
    s: &LocalStack,
    report_id: &str,
    expected: usize,
) -> (String, Vec<shared::domain::DeliveryAttempt>) {
    let (execution_id, body) = sample_execution(report_id);
    s.send("ExecutionsQueue", &body).await.expect("send");
    let attempts = s
        .wait_settled(&execution_id, expected, std::time::Duration::from_secs(60))
        .await
        .expect("settles");
    (execution_id, attempts)
}

/// Seeds one target of any type for `report_id`, with optional connection
/// (`(id, kind, secrets)`) and formats.
pub async fn seed_target(
    s: &LocalStack,
    report_id: &str,
    target_id: &str,
    target_type: &str,
    config: serde_json::Value,
    connection: Option<(&str, &str, &[&str])>,
    formats: &[&str],
) {
    let mut target = serde_json::json!({
        "id": target_id,
        "report_id": report_id,
        "target_type": target_type,
        "formats": formats,
        "config": config,
    });
    let mut connections = Vec::new();
    if let Some((id, kind, secrets)) = connection {
        target["service_connection_id"] = id.into();
        connections.push(serde_json::json!({"id": id, "kind": kind, "secrets": secrets}));
    }
    let seed = serde_json::json!({"connections": connections, "targets": [target]});
    s.seed(&seed.to_string()).await.expect("seed");
}

/// Follows a download link the way a browser does and returns the file:
/// the links function must answer 302 to a presigned S3 URL that serves it.
pub async fn download(link: &str) -> Vec<u8> {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let first = client
        .get(link)
        .send()
        .await
        .expect("links function answers");
    assert_eq!(first.status().as_u16(), 302, "link {link} redirects");
    let location = first
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .expect("Location header")
        .to_owned();
    assert!(
        location.contains("X-Amz-Signature"),
        "redirects to a presigned URL: {location}"
    );
    let file = client.get(&location).send().await.expect("S3 answers");
    assert_eq!(file.status().as_u16(), 200);
    file.bytes().await.expect("body").to_vec()
}

/// The status a link answers with (no redirects followed).
pub async fn link_status(link: &str) -> u16 {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
        .get(link)
        .send()
        .await
        .expect("links function answers")
        .status()
        .as_u16()
}

/// Asserts an attempt ended in `status` with its last error recorded as
/// `category` and `code`.
pub fn assert_outcome(
    a: &shared::domain::DeliveryAttempt,
    status: shared::domain::AttemptStatus,
    category: shared::domain::ErrorCategory,
    code: &str,
) {
    assert_eq!(a.status, status, "last error: {:?}", a.last_error);
    let e = a.last_error.as_ref().expect("an error is recorded");
    assert_eq!(
        (e.category, e.code.as_str()),
        (category, code),
        "{}",
        e.message
    );
}

/// The recorded execution and its PDF as stored in S3.
pub async fn rendered(
    s: &LocalStack,
    execution_id: &str,
) -> (shared::domain::ReportExecution, Vec<u8>) {
    use shared::store::ExecutionStore;
    let execution = s
        .store
        .get_execution(execution_id)
        .await
        .expect("get")
        .expect("the execution is recorded");
    let pdf = s
        .object(&execution.pdf.key)
        .await
        .expect("the PDF is in S3");
    (execution, pdf)
}

/// The reason a target was flagged for disabling (fails if it was not).
pub async fn disable_reason(s: &LocalStack, target_id: &str) -> String {
    use shared::store::TargetStore;
    s.store
        .get_target(target_id)
        .await
        .expect("get")
        .expect("the target exists")
        .disable_requested
        .expect("flagged for disabling")
        .reason
}
