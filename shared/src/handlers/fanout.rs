//! fanout: one execution → one queued attempt and one SQS message per active
//! target. Attempts are created with deterministic ids and conditional
//! writes, and marked once their message is on the queue, so a re-run sends
//! nothing twice and a crash in between loses nothing.

use super::{Outcome, body_of, process_batch, store_outcome, valid_id};
use crate::contract::{DeliveryTask, FanoutTask};
use crate::domain::{
    AttemptKind, AttemptStatus, DeliveryAttempt, ReportExecution, TargetType, Timestamp,
};
use crate::metrics::{Dim, Metric, Metrics, Stage};
use crate::queue::{OutMessage, Queue};
use crate::store::{AttemptStore, Created, ExecutionStore, StoreError, TargetRef, TargetStore};

/// The fan-out note of an execution whose report had no active target.
pub const NO_ACTIVE_TARGETS: &str = "no_active_targets";
use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use futures::{StreamExt, TryStreamExt};
use std::time::Duration;
use tracing::{info, warn};

/// Queue URL per channel, so an outage of one channel does not delay another.
#[derive(Debug, Clone)]
pub struct ChannelQueues {
    pub email: String,
    pub slack: String,
    pub webhook: String,
}

impl ChannelQueues {
    /// The three queue URLs from the environment `template.yaml` sets.
    pub fn from_env() -> Result<Self, crate::config::ConfigError> {
        use crate::config::required;
        Ok(Self {
            email: required("EMAIL_QUEUE_URL")?,
            slack: required("SLACK_QUEUE_URL")?,
            webhook: required("WEBHOOK_QUEUE_URL")?,
        })
    }

    /// The queue for a channel.
    pub fn for_type(&self, t: TargetType) -> &str {
        match t {
            TargetType::Email => &self.email,
            TargetType::Slack => &self.slack,
            TargetType::Webhook => &self.webhook,
        }
    }
}

/// What fan-out needs.
pub struct Deps {
    /// EMF metrics.
    pub metrics: Metrics,
    pub targets: Box<dyn TargetStore>,
    pub attempts: Box<dyn AttemptStore>,
    pub executions: Box<dyn ExecutionStore>,
    pub queue: Box<dyn Queue>,
    pub channel_queues: ChannelQueues,
    pub fanout_queue_url: String,
    pub dead_letter_url: String,
    /// Outcome events for the reporting system (`None`: not sent).
    pub outcomes_url: Option<String>,
    /// Targets read per query.
    pub page_size: i32,
    /// Conditional writes and sends in flight at once.
    pub concurrency: usize,
    /// Hand over to a continuation message when less than this is left.
    pub reserve: Duration,
}

/// The Lambda handler. `deadline` is the invocation's deadline.
pub async fn handle(deps: &Deps, event: SqsEvent, deadline: Option<Timestamp>) -> SqsBatchResponse {
    process_batch(
        &event,
        super::DeadLetters {
            queue: deps.queue.as_ref(),
            url: &deps.dead_letter_url,
            stage: Stage::Fanout,
            metrics: &deps.metrics,
        },
        1,
        |m: &SqsMessage| process(deps, m, deadline),
    )
    .await
}

async fn process(deps: &Deps, m: &SqsMessage, deadline: Option<Timestamp>) -> Outcome {
    let started = std::time::Instant::now();
    let body = match body_of(m) {
        Ok(b) => b,
        Err(outcome) => return outcome,
    };
    let (execution_id, mut cursor, mut queued) = match serde_json::from_str::<FanoutTask>(body) {
        Ok(FanoutTask::FanoutV1 {
            execution_id,
            cursor,
            queued_so_far,
        }) => (execution_id, cursor, queued_so_far),
        Err(e) => {
            return Outcome::Reject {
                code: "malformed_message",
                reason: format!("not a valid fanout.v1 task: {e}"),
            };
        }
    };
    if !valid_id(&execution_id) {
        return Outcome::Reject {
            code: "invalid_id",
            reason: "execution_id must be 1-128 of [A-Za-z0-9-_.:]".into(),
        };
    }
    tracing::Span::current().record("execution_id", execution_id.as_str());
    let retry = |e: &dyn std::fmt::Display| Outcome::Retry {
        reason: e.to_string(),
    };
    let execution = match deps.executions.get_execution(&execution_id).await {
        Ok(Some(e)) => e,
        Ok(None) => {
            return Outcome::Reject {
                code: "unknown_execution",
                reason: format!("execution {execution_id} is not recorded"),
            };
        }
        Err(e) => return store_outcome(&e),
    };
    // A copy of the first message of a fan-out that already finished:
    // every attempt exists and was sent (the reconciler sends any lost
    // message). A continuation goes on, so that its cursor is checked.
    if execution.fanned_out_at.is_some() && cursor.is_none() {
        deps.metrics.count(
            Metric::DuplicatesIgnored,
            &[(Dim::Stage, Stage::Fanout.as_str())],
        );
        info!(%execution_id, "fan-out already finished; duplicate ignored");
        return Outcome::Done;
    }
    if let Some(target_id) = &execution.test_target_id {
        return test_send(deps, &execution, target_id).await;
    }
    loop {
        if let Some(deadline) = deadline
            && deadline.millis_since(Timestamp::now()) < deps.reserve.as_millis() as i64
        {
            let task = FanoutTask::FanoutV1 {
                execution_id: execution_id.clone(),
                cursor: cursor.clone(),
                queued_so_far: queued,
            };
            let body = serde_json::to_string(&task).unwrap_or_default();
            return match deps.queue.send(&deps.fanout_queue_url, &body).await {
                Ok(()) => {
                    info!(%execution_id, queued, "continuing fan-out in a new message");
                    Outcome::Done
                }
                Err(e) => retry(&e),
            };
        }
        let page = match deps
            .targets
            .active_targets(&execution.report_id, None, cursor.clone(), deps.page_size)
            .await
        {
            Ok(p) => p,
            Err(StoreError::Invalid { reason, .. }) => {
                return Outcome::Reject {
                    code: "invalid_cursor",
                    reason,
                };
            }
            Err(e) => return store_outcome(&e),
        };
        if let Err(outcome) = queue_page(
            deps,
            &execution.id,
            &execution.report_id,
            &page.items,
            AttemptKind::Delivery,
        )
        .await
        {
            return outcome;
        }
        queued += page.items.len() as u64;
        cursor = page.next;
        if cursor.is_none() {
            break;
        }
    }
    // A report with no active targets is a legitimate, recorded outcome,
    // not a dead letter.
    let note = (queued == 0).then_some(NO_ACTIVE_TARGETS);
    if let Err(e) = deps
        .executions
        .mark_fanned_out(&execution_id, queued, note, Timestamp::now())
        .await
    {
        return store_outcome(&e);
    }
    // Every attempt may have settled already (or there were none).
    outcomes(deps).fanned_out(&execution_id).await;
    deps.metrics.record(
        Metric::FanoutDuration,
        &[],
        started.elapsed().as_millis() as f64,
    );
    deps.metrics
        .record(Metric::TargetsPerExecution, &[], queued as f64);
    info!(%execution_id, targets = queued, note, "fan-out complete");
    Outcome::Done
}

/// An operator's test send: one attempt of kind `test` for the one target,
/// whatever its state (testing a disabled target before enabling it is the
/// point); no outcome events.
async fn test_send(deps: &Deps, execution: &ReportExecution, target_id: &str) -> Outcome {
    let target = match deps.targets.get_target(target_id).await {
        Ok(Some(t)) => t,
        Ok(None) => {
            return Outcome::Reject {
                code: "unknown_target",
                reason: format!("test target {target_id} is not recorded"),
            };
        }
        Err(e) => return store_outcome(&e),
    };
    let one = [TargetRef {
        id: target.id.clone(),
        target_type: target.config.target_type(),
    }];
    if let Err(outcome) = queue_page(
        deps,
        &execution.id,
        &execution.report_id,
        &one,
        AttemptKind::Test,
    )
    .await
    {
        return outcome;
    }
    if let Err(e) = deps
        .executions
        .mark_fanned_out(&execution.id, 1, None, Timestamp::now())
        .await
    {
        return store_outcome(&e);
    }
    // Its attempt may have settled already; a test sends no event.
    outcomes(deps).fanned_out(&execution.id).await;
    info!(execution_id = %execution.id, %target_id, "test send queued");
    Outcome::Done
}

fn outcomes(deps: &Deps) -> super::outcomes::Outcomes<'_> {
    super::outcomes::Outcomes {
        queue: deps.queue.as_ref(),
        url: deps.outcomes_url.as_deref(),
        executions: deps.executions.as_ref(),
        attempts: deps.attempts.as_ref(),
    }
}

/// Creates the page's attempts and sends the messages that are not yet sent.
async fn queue_page(
    deps: &Deps,
    execution_id: &str,
    report_id: &str,
    targets: &[TargetRef],
    kind: AttemptKind,
) -> Result<(), Outcome> {
    let now = Timestamp::now();
    let created: Vec<Created> = futures::stream::iter(targets)
        .map(|t| {
            let attempt = DeliveryAttempt {
                kind,
                ..DeliveryAttempt::queued(execution_id, report_id, &t.id, t.target_type, now)
            };
            async move { deps.attempts.create(&attempt).await }
        })
        .buffer_unordered(deps.concurrency)
        .try_collect()
        .await
        .map_err(|e| store_outcome(&e))?;
    crate::chaos::point("fanout.after_attempts");
    let pending: Vec<DeliveryAttempt> = created
        .into_iter()
        .filter_map(|c| match c {
            Created::New(a) => Some(a),
            // Never begun: its message may not have been sent. A second
            // message for it is harmless (the lease admits one send).
            Created::Existing(a) if a.status == AttemptStatus::Queued && a.begins == 0 => Some(a),
            Created::Existing(_) => {
                deps.metrics.count(
                    Metric::DuplicatesIgnored,
                    &[(Dim::Stage, Stage::Fanout.as_str())],
                );
                None
            }
        })
        .collect();
    let mut batches: Vec<(&str, Vec<&DeliveryAttempt>)> = Vec::new();
    for t in [TargetType::Email, TargetType::Slack, TargetType::Webhook] {
        let of_type: Vec<&DeliveryAttempt> =
            pending.iter().filter(|a| a.target_type == t).collect();
        for chunk in of_type.chunks(10) {
            batches.push((deps.channel_queues.for_type(t), chunk.to_vec()));
        }
    }
    futures::stream::iter(batches)
        .map(|(url, batch)| send_batch(deps, url, batch))
        .buffer_unordered(deps.concurrency)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

async fn send_batch(deps: &Deps, url: &str, batch: Vec<&DeliveryAttempt>) -> Result<(), Outcome> {
    let messages: Vec<OutMessage> = batch
        .iter()
        .enumerate()
        .map(|(i, a)| OutMessage {
            entry_id: i.to_string(),
            body: serde_json::to_string(&DeliveryTask::for_attempt(a)).unwrap_or_default(),
        })
        .collect();
    let mut to_send = messages;
    // One retry for entries SQS reports as failed; then surface them.
    for round in 0..2 {
        let failed = deps
            .queue
            .send_batch(url, &to_send)
            .await
            .map_err(|e| Outcome::Retry {
                reason: e.to_string(),
            })?;
        to_send.retain(|m| failed.contains(&m.entry_id));
        if to_send.is_empty() {
            break;
        }
        warn!(
            failed = to_send.len(),
            round, "SQS refused some batch entries"
        );
    }
    if to_send.is_empty() {
        Ok(())
    } else {
        Err(Outcome::Retry {
            reason: format!("{} delivery messages could not be queued", to_send.len()),
        })
    }
}

impl Deps {
    /// Builds the deps from the environment `template.yaml` sets.
    pub async fn from_env() -> Result<Self, crate::config::ConfigError> {
        use crate::config::{required, seconds, tables};
        let sdk = crate::aws::load().await;
        let store = crate::store::dynamo::DynamoStore::new(crate::aws::dynamodb(&sdk), tables()?)
            .with_record_retention(crate::config::record_retention()?);
        Ok(Self {
            metrics: Metrics::from_env(),
            targets: Box::new(store.clone()),
            attempts: Box::new(store.clone()),
            executions: Box::new(store),
            queue: Box::new(crate::queue::sqs::SqsQueue::new(crate::aws::sqs(&sdk))),
            channel_queues: ChannelQueues::from_env()?,
            fanout_queue_url: required("FANOUT_QUEUE_URL")?,
            outcomes_url: crate::config::optional("OUTCOMES_QUEUE_URL"),
            dead_letter_url: required("DEAD_LETTER_QUEUE_URL")?,
            page_size: 500,
            concurrency: 16,
            reserve: seconds("FANOUT_RESERVE_SECONDS", 20)?,
        })
    }
}
