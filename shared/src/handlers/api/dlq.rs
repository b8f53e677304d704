//! `POST /dlq/{stage}/redrive`: moves dead-lettered messages back to work,
//! with a limit and a dry run. Executions and fan-out letters go back to
//! their source queue (render and fan-out are idempotent). A delivery letter
//! names an attempt, which is terminal once it failed: redriving it is an
//! operator retry of that attempt (recorded as such), so the records and
//! the queues stay consistent; letters of attempts that are not failed are
//! left to the reconciler.

use super::problem::Problem;
use super::targets::store_problem;
use super::{Deps, Principal};
use crate::contract::DeliveryTask;
use crate::domain::attempt::{HISTORY_LIMIT, OperatorAction};
use crate::domain::{AttemptStatus, Timestamp, Transition};
use crate::queue::ReceivedMessage;
use crate::store::Applied;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use tracing::{info, warn};

/// The most messages one request moves.
pub const MAX_LIMIT: usize = 100;

/// Body of a redrive (all optional).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedriveInput {
    /// At most this many messages (default 10, at most 100).
    #[serde(default, deserialize_with = "super::integral::optional")]
    pub limit: Option<usize>,
    /// Report what would move, move nothing.
    #[serde(default)]
    pub dry_run: bool,
}

/// What happened to one message.
fn entry(m: &ReceivedMessage, action: &str, detail: impl Into<String>) -> Value {
    json!({"message_id": m.message_id, "action": action, "detail": detail.into()})
}

/// `POST /dlq/{stage}/redrive` (`stage`: executions, fanout or delivery).
pub async fn redrive(
    State(deps): State<Arc<Deps>>,
    Path(stage): Path<String>,
    principal: Principal,
    body: Bytes,
) -> Response {
    let input: RedriveInput = match super::optional_body(&body, "redrive") {
        Ok(i) => i,
        Err(p) => return p.into_response(),
    };
    let limit = input.limit.unwrap_or(10);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Problem::bad_request("invalid_limit", format!("limit is 1 to {MAX_LIMIT}"))
            .into_response();
    }
    let url = |name: &str| {
        deps.queues
            .iter()
            .find(|q| q.name == name)
            .map(|q| q.url.clone())
    };
    let (dlq, source) = match stage.as_str() {
        "executions" => (url("executions-dlq"), url("executions")),
        "fanout" => (url("fanout-dlq"), url("fanout")),
        "delivery" => (url("delivery-dlq"), None),
        _ => {
            return Problem::not_found("stage is executions, fanout or delivery").into_response();
        }
    };
    let Some(dlq) = dlq else {
        return Problem::not_found("no such dead-letter queue").into_response();
    };
    // Received messages stay hidden this long; a dry run gives them back.
    let hold = Duration::from_secs(60);
    let mut results = Vec::new();
    let mut moved = 0;
    // Messages to give back at the end (kept hidden meanwhile, so one
    // request never reads a message twice).
    let mut give_back = Vec::new();
    while results.len() < limit {
        let want = i32::try_from((limit - results.len()).min(10)).unwrap_or(10);
        let batch = match deps.queue.receive(&dlq, want, hold).await {
            Ok(b) => b,
            Err(e) => {
                warn!(error = %e, "dead-letter queue not read");
                return Problem::unavailable(
                    "queue_unavailable",
                    "the dead-letter queue did not answer",
                )
                .into_response();
            }
        };
        if batch.is_empty() {
            break;
        }
        for m in batch {
            let (action, detail) = match &source {
                Some(src) => back_to_source(&deps, src, &m, input.dry_run).await,
                None => retry_attempt(&deps, &m, &principal, input.dry_run).await,
            };
            let counted = action == "moved" || action == "retried";
            if counted {
                moved += 1;
            }
            results.push(entry(&m, action, detail));
            if counted && !input.dry_run {
                if let Err(e) = deps.queue.delete(&dlq, &m.receipt_handle).await {
                    warn!(error = %e, "moved, but the dead letter stays (it will be seen again)");
                }
            } else {
                give_back.push(m.receipt_handle);
            }
        }
    }
    for handle in give_back {
        let _ = deps
            .queue
            .change_visibility(&dlq, &handle, Duration::ZERO)
            .await;
    }
    info!(%stage, moved, examined = results.len(), dry_run = input.dry_run, by = %principal.0, "redrive");
    Json(json!({
        "stage": stage,
        "dry_run": input.dry_run,
        "examined": results.len(),
        "moved": moved,
        "messages": results,
    }))
    .into_response()
}

async fn back_to_source(
    deps: &Deps,
    source: &str,
    m: &ReceivedMessage,
    dry_run: bool,
) -> (&'static str, String) {
    if dry_run {
        return ("moved", "would go back to its source queue".into());
    }
    match deps.queue.send(source, &m.body).await {
        Ok(()) => ("moved", "back on its source queue".into()),
        Err(e) => {
            warn!(error = %e, "redrive send failed");
            (
                "left",
                "the source queue did not answer; left on the dead-letter queue".into(),
            )
        }
    }
}

/// A delivery dead letter: retry its attempt when it failed.
async fn retry_attempt(
    deps: &Deps,
    m: &ReceivedMessage,
    principal: &Principal,
    dry_run: bool,
) -> (&'static str, String) {
    let Ok(DeliveryTask::DeliverV1 { attempt_id, .. }) = serde_json::from_str(&m.body) else {
        return ("left", "not a delivery task; left for a person".into());
    };
    let a = match deps.attempts.get(&attempt_id).await {
        Ok(Some(a)) => a,
        Ok(None) => return ("left", format!("attempt {attempt_id} does not exist")),
        Err(e) => {
            let _ = store_problem(&e);
            return ("left", "the store did not answer".into());
        }
    };
    if a.status != AttemptStatus::Failed {
        return (
            "left",
            format!(
                "attempt {attempt_id} is {}; the reconciler handles it",
                a.status
            ),
        );
    }
    if dry_run {
        return ("retried", format!("attempt {attempt_id} would be retried"));
    }
    let action = OperatorAction {
        action: "redrive".into(),
        by: principal.0.clone(),
        at: Timestamp::now(),
        force: true,
        rerendered: false,
    };
    let mut actions = a.operator_actions.clone();
    actions.push(action.clone());
    let excess = actions.len().saturating_sub(HISTORY_LIMIT);
    actions.drain(..excess);
    // The attempt and its execution reopen in one atomic write.
    match deps
        .attempts
        .apply_reopening(&a.id, &Transition::OperatorRetry { action, actions })
        .await
    {
        Ok(Applied::Yes(q)) => {
            let body = serde_json::to_string(&DeliveryTask::for_attempt(&q)).unwrap_or_default();
            // A lost send is left to the reconciler.
            let _ = deps
                .queue
                .send(deps.channel_queues.for_type(q.target_type), &body)
                .await;
            // Queued again either way: the reconciler sends a lost message.
            ("retried", format!("attempt {attempt_id} queued again"))
        }
        Ok(Applied::Refused(_)) => ("left", format!("attempt {attempt_id} changed meanwhile")),
        Err(_) => ("left", "the store did not answer".into()),
    }
}
