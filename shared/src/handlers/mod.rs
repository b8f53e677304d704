//! The three Lambda handlers, each a plain async fn over a deps struct, and
//! the per-message plumbing they share: one span per message, partial batch
//! responses, and dead-lettering of messages that can never succeed.

#[cfg(feature = "api")]
pub mod api;
pub mod deliver;
pub mod fanout;
pub mod feedback;
pub mod links;
pub mod outcomes;
pub mod reconcile;
pub mod render;
pub mod unsubscribe;

use crate::metrics::{Dim, Metric, Metrics, Stage};
use crate::queue::{DeadLetter, Queue};
use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use futures::StreamExt;
use std::future::Future;
use tracing::{Instrument, error, info_span, warn};

/// What became of one message.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Finished (or nothing to do): delete it.
    Done,
    /// Temporary trouble: leave it for SQS to redeliver.
    Retry { reason: String },
    /// It can never succeed: move it to the dead-letter queue with a reason
    /// and delete it, so it does not loop.
    Reject { code: &'static str, reason: String },
}

/// A failure of the whole invocation (never of a single message).
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    #[error("batch is malformed: {0}")]
    Malformed(String),
}

impl From<HandlerError> for lambda_runtime::Diagnostic {
    fn from(e: HandlerError) -> Self {
        lambda_runtime::Diagnostic {
            error_type: "NonRetryable".into(),
            error_message: e.to_string(),
        }
    }
}

/// The SQS `ApproximateReceiveCount` of a message (1 if absent).
pub fn receive_count(m: &SqsMessage) -> u32 {
    m.attributes
        .get("ApproximateReceiveCount")
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
}

/// Where a stage's rejected messages go, and how they are counted.
#[derive(Clone, Copy)]
pub struct DeadLetters<'a> {
    pub queue: &'a dyn Queue,
    pub url: &'a str,
    pub stage: Stage,
    pub metrics: &'a Metrics,
}

/// Runs `process` over every record with up to `concurrency` in flight,
/// dead-letters rejects, and reports the rest as partial batch failures.
pub async fn process_batch<'a, F, Fut>(
    event: &'a SqsEvent,
    dead_letters: DeadLetters<'a>,
    concurrency: usize,
    process: F,
) -> SqsBatchResponse
where
    F: Fn(&'a SqsMessage) -> Fut,
    Fut: Future<Output = Outcome> + 'a,
{
    let results: Vec<(Option<String>, bool)> =
        futures::stream::iter(&event.records)
            .map(|m| {
                let id = m.message_id.clone().unwrap_or_default();
                let span = info_span!(
                    "message",
                    message_id = %id,
                    receive_count = receive_count(m),
                    attempt_id = tracing::field::Empty,
                    execution_id = tracing::field::Empty,
                    target_id = tracing::field::Empty
                );
                let fut = process(m);
                async move {
                let ok = match fut.await {
                    Outcome::Done => true,
                    Outcome::Retry { reason } => {
                        warn!(%reason, "left for redelivery");
                        false
                    }
                    Outcome::Reject { code, reason } => {
                        error!(code, %reason, "rejected; moving to the dead-letter queue");
                        let letter = DeadLetter {
                            body: m.body.as_deref().unwrap_or(""),
                            code,
                            reason: &reason,
                            source_message_id: &id,
                            attempt_id: None,
                            receive_count: Some(receive_count(m)),
                            episode: None,
                        };
                        match dead_letters.queue.dead_letter(dead_letters.url, letter).await {
                            Ok(()) => {
                                dead_letters.metrics.count(
                                    Metric::DeadLettered,
                                    &[(Dim::Stage, dead_letters.stage.as_str())],
                                );
                                true
                            }
                            Err(e) => {
                                error!(error = %e, "dead-lettering failed; leaving the message");
                                false
                            }
                        }
                    }
                };
                (m.message_id.clone(), ok)
            }
            .instrument(span)
            })
            .buffer_unordered(concurrency.max(1))
            .collect()
            .await;
    let mut response = SqsBatchResponse::default();
    for (id, ok) in results {
        if !ok {
            // A record without an id cannot be reported; SQS then retries
            // the whole batch, which is the safe side.
            response.add_failure(id.unwrap_or_default());
        }
    }
    response
}

/// Where a settled attempt's statistics go.
#[derive(Clone, Copy)]
pub enum StatsSink<'a> {
    /// Written at once.
    Store(&'a dyn crate::store::StatsStore),
    /// Kept for the invocation's one write per counter item.
    Batch(&'a StatsBatch),
}

/// Statistics of one invocation's settled attempts, written together at
/// its end ([`StatsBatch::flush`]): a batch of deliveries shares its
/// report's and the service's counter items. Like every statistics write
/// it is best effort: the attempt records are the truth, and a run that
/// dies before the flush loses only its counts.
#[derive(Debug, Default)]
pub struct StatsBatch {
    pending: std::sync::Mutex<Vec<crate::domain::stats::Settled>>,
}

impl StatsBatch {
    fn push(&self, settled: crate::domain::stats::Settled) {
        if let Ok(mut p) = self.pending.lock() {
            p.push(settled);
        }
    }

    /// Writes what was kept, and empties the batch.
    pub async fn flush(&self, store: &dyn crate::store::StatsStore) {
        let all = self
            .pending
            .lock()
            .map(|mut p| std::mem::take(&mut *p))
            .unwrap_or_default();
        if all.is_empty() {
            return;
        }
        if let Err(e) = store.record_all(&all).await {
            warn!(settled = all.len(), error = %e, "statistics not updated");
        }
    }
}

/// Counts a settled attempt in the statistics, and keeps its target's runs
/// of failures (a success writes only when it ends a run); returns the run
/// of permanent failures (0 after a delivery). Best effort: the
/// attempt is already settled, so a failed write is logged, not retried,
/// and never counts twice (only the run whose write settled it calls this).
pub async fn record_settled(
    stats: StatsSink<'_>,
    targets: &dyn crate::store::TargetStore,
    attempt: &crate::domain::DeliveryAttempt,
    failures_before: u32,
) -> u32 {
    use crate::domain::AttemptStatus;
    let delivered = attempt.status == AttemptStatus::Delivered;
    let at = if delivered {
        attempt.delivered_at
    } else {
        attempt.failed_at
    }
    .unwrap_or_else(crate::domain::Timestamp::now);
    let settled = crate::domain::stats::Settled {
        target_id: attempt.delivery_target_id.clone(),
        report_id: attempt.report_id.clone(),
        attempt_id: attempt.id.clone(),
        at,
        delivered,
        tries: attempt.tries,
        retries: attempt.retry_count,
        delivery_ms: attempt
            .delivery_millis()
            .and_then(|ms| u64::try_from(ms).ok()),
        error_code: attempt.last_error.as_ref().map(|e| e.code.clone()),
        recipients_sent: u32::try_from(
            attempt
                .recipients
                .iter()
                .filter(|r| r.message_id.is_some())
                .count(),
        )
        .unwrap_or(u32::MAX),
    };
    match stats {
        StatsSink::Store(store) => {
            if let Err(e) = store.record(&settled).await {
                warn!(attempt_id = %attempt.id, error = %e, "statistics not updated");
            }
        }
        StatsSink::Batch(batch) => batch.push(settled),
    }
    if delivered && failures_before == 0 {
        return 0;
    }
    if !delivered
        && attempt
            .last_error
            .as_ref()
            .is_some_and(|e| !e.counts_against_target())
    {
        // Not the target's doing: its streak is neither extended nor ended.
        return 0;
    }
    let streak = if delivered {
        crate::store::Streak::Delivered
    } else {
        crate::store::Streak::Failed {
            permanent: attempt
                .last_error
                .as_ref()
                .is_some_and(|e| e.category == crate::domain::ErrorCategory::Permanent),
        }
    };
    match targets
        .record_streak(&attempt.delivery_target_id, streak, at)
        .await
    {
        Ok(run) => run,
        Err(e) => {
            warn!(attempt_id = %attempt.id, error = %e, "failure streak not updated");
            0
        }
    }
}

/// What a store error means for a message: leave it for redelivery when
/// the store may recover; dead-letter it with the reason when the store
/// refused the request or a record is unreadable, so it never loops.
pub fn store_outcome(e: &crate::store::StoreError) -> Outcome {
    use crate::store::StoreError;
    match e {
        StoreError::Backend(_) => Outcome::Retry {
            reason: e.to_string(),
        },
        StoreError::Refused { .. } => Outcome::Reject {
            code: "store_refused",
            reason: e.to_string(),
        },
        StoreError::Invalid { .. } => Outcome::Reject {
            code: "invalid_record",
            reason: e.to_string(),
        },
    }
}

/// Reads a message body, refusing oversized ones before parsing.
pub fn body_of(m: &SqsMessage) -> Result<&str, Outcome> {
    let body = m.body.as_deref().unwrap_or("");
    if body.len() > crate::contract::MAX_INLINE_BODY_BYTES {
        return Err(Outcome::Reject {
            code: "payload_too_large",
            reason: format!(
                "message body is {} bytes, over the {} byte limit",
                body.len(),
                crate::contract::MAX_INLINE_BODY_BYTES
            ),
        });
    }
    Ok(body)
}

/// Ids end up in S3 keys and log lines, so they are kept plain.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'))
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::queue::fake::RecordingQueue as FakeQueue;

    fn event(bodies: &[&str]) -> SqsEvent {
        let records: Vec<serde_json::Value> = bodies
            .iter()
            .enumerate()
            .map(|(i, b)| serde_json::json!({"messageId": format!("m{i}"), "body": b}))
            .collect();
        serde_json::from_value(serde_json::json!({ "Records": records })).expect("event")
    }

    fn test_letters(queue: &FakeQueue) -> DeadLetters<'_> {
        static NONE: std::sync::OnceLock<Metrics> = std::sync::OnceLock::new();
        DeadLetters {
            queue,
            url: "dlq",
            stage: Stage::Delivery,
            metrics: NONE.get_or_init(Metrics::none),
        }
    }

    fn outcome_for(m: &SqsMessage) -> Outcome {
        match m.body.as_deref() {
            Some("ok") => Outcome::Done,
            Some("later") => Outcome::Retry {
                reason: "busy".into(),
            },
            _ => match body_of(m) {
                Err(o) => o,
                Ok(_) => Outcome::Reject {
                    code: "malformed_message",
                    reason: "bad".into(),
                },
            },
        }
    }

    #[tokio::test]
    async fn rejects_are_dead_lettered_and_only_retries_are_reported_as_failures() {
        let queue = FakeQueue::default();
        let ev = event(&["ok", "later", "{junk"]);
        let response = process_batch(
            &ev,
            test_letters(&queue),
            4,
            |m| async move { outcome_for(m) },
        )
        .await;
        let failed: Vec<_> = response
            .batch_item_failures
            .iter()
            .map(|f| f.item_identifier.as_str())
            .collect();
        assert_eq!(failed, ["m1"]);
        let letters = queue.letters.lock().expect("lock").clone();
        assert_eq!(
            letters,
            [("malformed_message".to_owned(), "{junk".to_owned())]
        );
    }

    #[tokio::test]
    async fn a_reject_that_cannot_be_dead_lettered_is_left_on_the_queue() {
        let queue = FakeQueue {
            broken: true,
            ..FakeQueue::default()
        };
        let ev = event(&["{junk"]);
        let response = process_batch(
            &ev,
            test_letters(&queue),
            1,
            |m| async move { outcome_for(m) },
        )
        .await;
        assert_eq!(response.batch_item_failures.len(), 1, "never lost");
    }

    #[tokio::test]
    async fn oversized_bodies_are_rejected_before_parsing() {
        let queue = FakeQueue::default();
        let big = "x".repeat(crate::contract::MAX_INLINE_BODY_BYTES + 1);
        let ev = event(&[&big]);
        let response = process_batch(
            &ev,
            test_letters(&queue),
            1,
            |m| async move { outcome_for(m) },
        )
        .await;
        assert!(response.batch_item_failures.is_empty());
        let letters = queue.letters.lock().expect("lock").clone();
        assert_eq!(letters.len(), 1);
        assert_eq!(letters[0].0, "payload_too_large");
    }

    #[test]
    fn ids_are_kept_plain() {
        assert!(valid_id("exec-2026-11-26_weekly.sales:1"));
        for bad in ["", "../x", "a b", "a/b", &"x".repeat(129)] {
            assert!(!valid_id(bad), "{bad:?}");
        }
    }
}
