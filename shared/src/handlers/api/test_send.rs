//! `POST /targets/{id}/test`: a test send. A small sample report goes
//! through the real path (render, fan-out, deliver and the target's
//! channel) to this one target, whatever its state, recorded as an attempt
//! of kind `test`. The answer is the attempt: settled when it settled
//! within `wait_seconds`, otherwise queued, with its address to poll.

use super::problem::Problem;
use super::targets::{load, store_problem};
use super::{Deps, Principal};
use crate::contract::{ExecutionMessage, TestSendV1};
use crate::domain::Transition;
use crate::domain::attempt::OperatorAction;
use crate::domain::{AttemptError, AttemptKind, DeliveryAttempt, ErrorCategory, Timestamp};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// The longest a caller may wait for the outcome in the request.
pub const MAX_WAIT_SECONDS: u64 = 20;

/// Body of a test send (optional).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestInput {
    /// Wait up to this long (at most [`MAX_WAIT_SECONDS`]) for the outcome.
    #[serde(default, deserialize_with = "super::integral::integer")]
    pub wait_seconds: u64,
}

/// Reads the optional JSON body.
fn input(body: &[u8]) -> Result<TestInput, Problem> {
    let i: TestInput = super::optional_body(body, "test")?;
    if i.wait_seconds > MAX_WAIT_SECONDS {
        return Err(Problem::bad_request(
            "invalid_wait",
            format!("wait_seconds is at most {MAX_WAIT_SECONDS}; poll the attempt for longer"),
        ));
    }
    Ok(i)
}

/// `POST /targets/{id}/test`.
pub async fn send(
    State(deps): State<Arc<Deps>>,
    Path(id): Path<String>,
    principal: Principal,
    body: axum::body::Bytes,
) -> Response {
    match run(&deps, &id, &principal, &body).await {
        Ok(r) => r,
        Err(p) => p.into_response(),
    }
}

async fn run(
    deps: &Deps,
    id: &str,
    principal: &Principal,
    body: &[u8],
) -> Result<Response, Problem> {
    let wait = Duration::from_secs(input(body)?.wait_seconds);
    let target = load(deps, id).await?;
    let now = Timestamp::now();
    let msg = TestSendV1::sample(&target.id, &target.report_id, now);
    let mut attempt = DeliveryAttempt {
        kind: AttemptKind::Test,
        ..DeliveryAttempt::queued(
            &msg.execution.execution_id,
            &target.report_id,
            &target.id,
            target.config.target_type(),
            now,
        )
    };
    attempt.operator_actions.push(OperatorAction {
        action: "test".into(),
        by: principal.0.clone(),
        at: now,
        force: false,
        rerendered: false,
    });
    // Recorded first, so the answer's attempt can be polled at once;
    // fan-out finds it queued and sends its message.
    deps.attempts
        .create(&attempt)
        .await
        .map_err(|e| store_problem(&e))?;
    let body = serde_json::to_string(&ExecutionMessage::TestSendV1(msg)).unwrap_or_default();
    if let Err(e) = deps.queue.send(&deps.executions_queue_url, &body).await {
        warn!(attempt_id = %attempt.id, error = %e, "test send not queued");
        not_sent(deps, &attempt.id).await;
        return Err(Problem::unavailable(
            "queue_unavailable",
            "the test could not be queued; try again",
        ));
    }
    info!(attempt_id = %attempt.id, target_id = %target.id, by = %principal.0, "test send requested");
    let current = settle(deps, &attempt, wait).await;
    let status = if current.status.is_terminal() {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    let mut r = (status, Json(super::attempts::view(&current))).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("/attempts/{}", current.id)) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    Ok(r)
}

/// Fails a test whose message never left, so it does not stay queued.
async fn not_sent(deps: &Deps, id: &str) {
    let fail = Transition::Fail {
        token: None,
        error: AttemptError {
            category: ErrorCategory::Temporary,
            code: "test_not_queued".into(),
            message: "the test send could not be queued".into(),
            at: Timestamp::now(),
        },
        tries: None,
        dead_letter: false,
        recipients: Vec::new(),
    };
    if let Err(e) = deps.attempts.apply(id, &fail).await {
        warn!(attempt_id = %id, error = %e, "unqueued test left queued; the reconciler settles it");
    }
}

/// The attempt once settled, or as it stands when `wait` is over.
async fn settle(deps: &Deps, attempt: &DeliveryAttempt, wait: Duration) -> DeliveryAttempt {
    let until = Instant::now() + wait;
    let mut current = attempt.clone();
    while Instant::now() < until && !current.status.is_terminal() {
        tokio::time::sleep(Duration::from_millis(250)).await;
        match deps.attempts.get(&attempt.id).await {
            Ok(Some(a)) => current = a,
            Ok(None) => {}
            Err(e) => warn!(attempt_id = %attempt.id, error = %e, "test not read back"),
        }
    }
    current
}
