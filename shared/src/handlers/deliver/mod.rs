//! deliver: one attempt → one send through its channel.
//!
//! Every change to the attempt is a [`Transition`] that
//! [`Transition::decide`] rules on; this handler only asks, in four steps
//! a reader finds in four files:
//! * here and `begin.rs` — take the lease (`Begin`); a refusal says what
//!   the message does: acknowledged when terminal, hidden until the lease
//!   ends or the next try is due, or the crash loop stopped;
//! * `prepare.rs` — read what the send needs, once per invocation;
//! * `send.rs` — send, with the immediate retry; each send's timeout
//!   starts after any local wait (an email slot) and ends before the
//!   invocation's deadline;
//! * `record.rs` — write how it ended (delivered, a backoff with
//!   `next_try_at`, a deferral, a failure with or without its dead letter),
//!   then statistics, events and the target's streak.

mod begin;
mod prepare;
mod record;
mod send;

use super::{Outcome, body_of, process_batch, store_outcome, valid_id};
use crate::blob::BlobStore;
use crate::channel::{
    Channel, Channels, ChartFile, DeliveryContext, DeliveryError, LinkedFile, Progress, Receipt,
};
use crate::contract::DeliveryTask;
use crate::domain::attempt::attempt_id as pair_id;
use crate::domain::execution::ReportExecution;
use crate::domain::retry::clamp_visibility;
use crate::domain::target::Format;
use crate::domain::{
    AttemptError, AttemptKind, DeliveryAttempt, DeliveryTarget, ErrorCategory, Refusal,
    RetryDecision, RetryPolicy, ServiceConnection, Timestamp, Transition, TriesUpdate, TryNext,
    TryRecord,
};
use crate::handlers::links::LinkIssuer;
use crate::metrics::{Dim, Metric, Metrics, Stage};
use crate::queue::{DeadLetter, Queue, queue_url_from_arn};
use crate::render::preview::Preview;
use crate::store::{
    Applied, AttemptStore, ConnectionStore, ExecutionStore, RateLimiter, StoreError, TargetStore,
};
use async_trait::async_trait;
use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use begin::*;
use prepare::*;
use record::*;
pub use record::{AutoDisable, disable_reason};
use send::*;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::{Span, error, info, warn};

/// What deliver needs.
pub struct Deps {
    /// EMF metrics.
    pub metrics: Metrics,
    pub attempts: Box<dyn AttemptStore>,
    pub targets: Box<dyn TargetStore>,
    pub executions: Box<dyn ExecutionStore>,
    pub connections: Box<dyn ConnectionStore>,
    /// Email addresses each target no longer mails.
    pub suppressions: Box<dyn crate::store::SuppressionStore>,
    /// Delivery statistics.
    pub stats: Box<dyn crate::store::StatsStore>,
    /// This invocation's statistics, written once at its end.
    pub stats_batch: super::StatsBatch,
    /// This invocation's settled attempts, for their outcome events.
    pub outcome_batch: super::outcomes::OutcomeBatch,
    /// Shared per-destination rate limits (Slack channels).
    pub rate_limits: Box<dyn RateLimiter>,
    pub blobs: Box<dyn BlobStore>,
    pub queue: Box<dyn Queue>,
    pub channels: Channels,
    pub policy: RetryPolicy,
    pub dead_letter_url: String,
    /// Outcome events for the reporting system (`None`: not sent).
    pub outcomes_url: Option<String>,
    /// What happens to targets that keep failing.
    pub auto_disable: AutoDisable,
    /// Signs download links served by the links function.
    pub links: LinkIssuer,
    /// How long download links stay valid.
    pub link_ttl: Duration,
    /// How the invocation's time is spent.
    pub timing: Timing,
    /// `AWS_ENDPOINT_URL`, to address queues from their ARNs locally.
    pub sqs_endpoint: Option<String>,
    /// Messages processed at once within a batch.
    pub concurrency: usize,
}

/// How deliver spends an invocation's time. The lease and the queues'
/// visibility timeouts both follow from the function timeout: the lease is
/// the deadline plus `lease_margin`, and `template.yaml` keeps every
/// delivery queue's visibility timeout above timeout + margin (checked by
/// a test over the template).
#[derive(Debug, Clone)]
pub struct Timing {
    /// Added to the invocation's deadline to make the lease.
    pub lease_margin: Duration,
    /// The lease when there is no deadline (direct calls in tests).
    pub lease_without_deadline: Duration,
    /// Time kept after a send for the writes that record it.
    pub reserve: Duration,
    /// A send is not started with less time than this left.
    pub min_send: Duration,
    /// The longest one send may take, deadline or not.
    pub max_send: Duration,
    /// How long a message put off near the deadline stays hidden.
    pub defer: Duration,
    /// A copy of a message finishes an unconfirmed dead letter only this
    /// long after the failure (its own run normally confirms at once).
    pub dead_letter_repair_after: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            lease_margin: Duration::from_secs(30),
            lease_without_deadline: Duration::from_secs(15 * 60),
            reserve: Duration::from_secs(5),
            min_send: Duration::from_secs(10),
            max_send: Duration::from_secs(120),
            defer: Duration::from_secs(2),
            dead_letter_repair_after: Duration::from_secs(60),
        }
    }
}

/// The invocation's clock: when the batch arrived and its deadline.
#[derive(Debug, Clone, Copy)]
struct Clock {
    received: Instant,
    deadline: Option<Timestamp>,
}

impl Clock {
    /// Time left before the deadline (`None` without one).
    fn remaining(&self) -> Option<Duration> {
        let ms = self.deadline?.millis_since(Timestamp::now());
        Some(Duration::from_millis(u64::try_from(ms).unwrap_or(0)))
    }

    /// Whether a send of at least `min_send` still fits, after `wait`.
    fn fits_a_send(&self, t: &Timing, wait: Duration) -> bool {
        self.remaining()
            .is_none_or(|left| left >= wait + t.min_send + t.reserve)
    }

    /// The timeout for a send starting now.
    fn send_budget(&self, t: &Timing) -> Duration {
        self.remaining()
            .map_or(t.max_send, |left| left.saturating_sub(t.reserve))
            .min(t.max_send)
    }

    /// When a lease taken now ends.
    fn lease_until(&self, t: &Timing, now: Timestamp) -> Timestamp {
        let (from, extra) = match self.deadline {
            Some(d) => (d, t.lease_margin),
            None => (now, t.lease_without_deadline),
        };
        from.plus(time::Duration::try_from(extra).unwrap_or(time::Duration::minutes(15)))
    }
}

/// Time kept after the end-of-invocation flush for the metrics line and
/// the runtime's answer.
const FLUSH_MARGIN: Duration = Duration::from_millis(500);

/// The Lambda handler. `deadline` is the invocation's deadline.
pub async fn handle(deps: &Deps, event: SqsEvent, deadline: Option<Timestamp>) -> SqsBatchResponse {
    let clock = Clock {
        received: Instant::now(),
        deadline,
    };
    let executions = Executions::default();
    let response = process_batch(
        &event,
        super::DeadLetters {
            queue: deps.queue.as_ref(),
            url: &deps.dead_letter_url,
            stage: Stage::Delivery,
            metrics: &deps.metrics,
        },
        deps.concurrency,
        |m: &SqsMessage| process(deps, m, clock, &executions),
    )
    .await;
    let outcomes = outcomes(deps);
    crate::chaos::point("deliver.before_flush");
    // The flush keeps to the deadline too: what it cannot write in time is
    // only counters and events, which the records (and the reconciler)
    // make up for.
    let flush = async {
        futures::join!(
            deps.stats_batch.flush(deps.stats.as_ref()),
            outcomes.flush(&deps.outcome_batch)
        )
    };
    let left = clock.remaining().map_or(deps.timing.max_send, |left| {
        left.saturating_sub(FLUSH_MARGIN)
    });
    if tokio::time::timeout(left, flush).await.is_err() {
        warn!(
            left_ms = millis(left),
            "the end-of-invocation flush did not finish before the deadline"
        );
    }
    deps.metrics.flush();
    response
}

fn temp(e: &dyn std::fmt::Display) -> Outcome {
    Outcome::Retry {
        reason: e.to_string(),
    }
}

/// A deliver task whose ids passed the edge checks.
struct Task {
    attempt_id: String,
    execution_id: String,
    target_id: String,
}

fn parse_task(body: &str) -> Result<Task, Outcome> {
    let DeliveryTask::DeliverV1 {
        attempt_id,
        execution_id,
        target_id,
    } = serde_json::from_str::<DeliveryTask>(body).map_err(|e| Outcome::Reject {
        code: "malformed_message",
        reason: format!("not a valid deliver.v1 task: {e}"),
    })?;
    if ![&attempt_id, &execution_id, &target_id]
        .iter()
        .all(|id| valid_id(id))
    {
        return Err(Outcome::Reject {
            code: "invalid_id",
            reason: "attempt_id, execution_id and target_id must be 1-128 of [A-Za-z0-9-_.:]"
                .into(),
        });
    }
    if pair_id(&execution_id, &target_id) != attempt_id {
        return Err(Outcome::Reject {
            code: "mismatched_attempt",
            reason: "attempt_id is not the attempt of this execution and target".into(),
        });
    }
    Ok(Task {
        attempt_id,
        execution_id,
        target_id,
    })
}

async fn process(deps: &Deps, m: &SqsMessage, clock: Clock, executions: &Executions) -> Outcome {
    let body = match body_of(m) {
        Ok(b) => b,
        Err(outcome) => return outcome,
    };
    let task = match parse_task(body) {
        Ok(t) => t,
        Err(outcome) => return outcome,
    };
    // Every line of this delivery carries its ids (the message span).
    let span = Span::current();
    span.record("attempt_id", task.attempt_id.as_str());
    span.record("execution_id", task.execution_id.as_str());
    span.record("target_id", task.target_id.as_str());
    if !clock.fits_a_send(&deps.timing, Duration::ZERO) {
        // Not a try: the message comes back to a fresh invocation.
        hide(deps, m, deps.timing.defer, &clock).await;
        return Outcome::Retry {
            reason: "too close to the deadline to start a send".into(),
        };
    }
    let token = uuid::Uuid::new_v4().simple().to_string();
    let now = Timestamp::now();
    let begin = Transition::Begin {
        token: token.clone(),
        now,
        lease_until: clock.lease_until(&deps.timing, now),
        execution_id: task.execution_id.clone(),
        target_id: task.target_id.clone(),
        crash_limit: deps.policy.crash_limit(),
    };
    let attempt = match deps.attempts.apply(&task.attempt_id, &begin).await {
        Ok(Applied::Yes(a)) => {
            crate::chaos::point("deliver.after_begin");
            a
        }
        Ok(Applied::Refused(None)) => {
            return Outcome::Reject {
                code: "unknown_attempt",
                reason: format!("attempt {} does not exist", task.attempt_id),
            };
        }
        Ok(Applied::Refused(Some(current))) => {
            return not_begun(deps, m, &clock, &begin, current).await;
        }
        // An unreadable record cannot be leased, ever.
        Err(e @ StoreError::Invalid { .. }) => return store_outcome(&e),
        // A refused lease is a configuration mistake (IAM, a table name):
        // the message comes back, and is delivered once it is fixed, instead
        // of leaving a dead letter behind that outlives the fix.
        Err(e) => {
            error!(attempt_id = %task.attempt_id, error = %e, "the lease could not be taken; the message will come back");
            return temp(&e);
        }
    };
    match prepare(deps, &attempt, executions).await {
        Ok(send) => {
            if let Some(slot) = rate_slot(deps, &send, &attempt).await {
                // Over the destination's shared limit: not a try; the
                // message comes back at its reserved slot.
                let tries = Tries {
                    attempt: &attempt,
                    new: Vec::new(),
                };
                let wait = Duration::from_millis(
                    u64::try_from(slot.millis_since(Timestamp::now())).unwrap_or(0),
                );
                return defer(deps, m, &clock, &attempt, &token, &tries, wait, Some(slot)).await;
            }
            send_with_retries(deps, m, &clock, &attempt, &token, send).await
        }
        // The lease stays until it expires; by then the message is back.
        Err(SendFailure::Store(e)) if e.is_retryable() => temp(&e),
        Err(SendFailure::Store(e)) => {
            let code = match e {
                StoreError::Invalid { .. } => "invalid_record",
                _ => "store_refused",
            };
            let error = DeliveryError::permanent(code, e.to_string());
            fail(deps, &attempt, &token, error, &[], Vec::new()).await
        }
        // Temporary (the link keys could not be read): the lease stays
        // until it expires; by then the message is back.
        Err(SendFailure::Delivery(e)) if e.is_retryable() => temp(&e),
        Err(SendFailure::Delivery(e)) => fail(deps, &attempt, &token, e, &[], Vec::new()).await,
        Err(SendFailure::AllSuppressed(recipients)) => {
            let e = DeliveryError::permanent(
                "all_recipients_suppressed",
                format!(
                    "all {} recipients are suppressed for this target (bounces, complaints or unsubscribes; see GET /targets/{{id}}/suppressions)",
                    recipients.len()
                ),
            );
            fail(deps, &attempt, &token, e, &[], recipients).await
        }
    }
}

/// Where this run's outcome events go.
fn outcomes(deps: &Deps) -> super::outcomes::Outcomes<'_> {
    super::outcomes::Outcomes {
        queue: deps.queue.as_ref(),
        url: deps.outcomes_url.as_deref(),
        executions: deps.executions.as_ref(),
        attempts: deps.attempts.as_ref(),
    }
}

/// The channel dimension of an attempt.
fn on(attempt: &DeliveryAttempt) -> [(Dim, &'static str); 1] {
    [(Dim::Channel, crate::metrics::channel(attempt.target_type))]
}

/// Counts how an attempt ended.
fn count_outcome(deps: &Deps, attempt: &DeliveryAttempt, outcome: crate::metrics::Outcome) {
    let channel = crate::metrics::channel(attempt.target_type);
    deps.metrics.count(
        Metric::Deliveries,
        &[(Dim::Channel, channel), (Dim::Outcome, outcome.as_str())],
    );
}

fn to_time(d: Duration) -> time::Duration {
    time::Duration::try_from(d).unwrap_or(time::Duration::hours(12))
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Hides the message for `delay` (clamped to what SQS accepts now).
async fn hide(deps: &Deps, m: &SqsMessage, delay: Duration, clock: &Clock) {
    let (Some(arn), Some(handle)) = (m.event_source_arn.as_deref(), m.receipt_handle.as_deref())
    else {
        return;
    };
    let Some(url) = queue_url_from_arn(arn, deps.sqs_endpoint.as_deref()) else {
        return;
    };
    let delay = clamp_visibility(delay, clock.received.elapsed());
    if let Err(e) = deps.queue.change_visibility(&url, handle, delay).await {
        // The queue's own visibility timeout still applies; the retry comes later, not never.
        warn!(error = %e, "could not set the message's visibility");
    }
}

impl Deps {
    /// Builds the deps from the environment `template.yaml` sets, and
    /// checks the queues' safety net against the retry schedule.
    pub async fn from_env() -> Result<Self, crate::config::ConfigError> {
        use crate::config::{ConfigError, optional, required, retry_policy, seconds, tables};
        let policy = retry_policy()?;
        let max_receive: u32 = required("DELIVERY_MAX_RECEIVE_COUNT")?
            .parse()
            .map_err(|_| ConfigError::Invalid {
                name: "DELIVERY_MAX_RECEIVE_COUNT",
                reason: "expected a whole number".into(),
            })?;
        policy
            .check_max_receive_count(max_receive)
            .map_err(|reason| ConfigError::Invalid {
                name: "DELIVERY_MAX_RECEIVE_COUNT",
                reason,
            })?;
        let sdk = crate::aws::load().await;
        let store = crate::store::dynamo::DynamoStore::new(crate::aws::dynamodb(&sdk), tables()?)
            .with_stats_retention(crate::config::stats_retention()?)
            .with_sealer(crate::keys::from_env(&sdk));
        Ok(Self {
            metrics: Metrics::from_env().buffered(),
            stats: Box::new(store.clone()),
            stats_batch: super::StatsBatch::default(),
            outcome_batch: super::outcomes::OutcomeBatch::default(),
            attempts: Box::new(store.clone()),
            targets: Box::new(store.clone()),
            executions: Box::new(store.clone()),
            connections: Box::new(store.clone()),
            suppressions: Box::new(store.clone()),
            rate_limits: Box::new(store),
            blobs: Box::new(crate::blob::s3::S3Blobs::new(
                crate::aws::s3(&sdk),
                required("REPORTS_BUCKET")?,
            )),
            queue: Box::new(crate::queue::sqs::SqsQueue::new(crate::aws::sqs(&sdk))),
            channels: Channels::from_env(&sdk)?,
            policy,
            dead_letter_url: required("DEAD_LETTER_QUEUE_URL")?,
            outcomes_url: optional("OUTCOMES_QUEUE_URL"),
            auto_disable: AutoDisable {
                disable: match optional("AUTO_DISABLE_POLICY").as_deref() {
                    None | Some("disable") => true,
                    Some("flag") => false,
                    Some(other) => {
                        return Err(ConfigError::Invalid {
                            name: "AUTO_DISABLE_POLICY",
                            reason: format!("expected disable or flag, got {other:?}"),
                        });
                    }
                },
                after: match optional("AUTO_DISABLE_AFTER") {
                    None => AutoDisable::default().after,
                    Some(v) => v
                        .parse()
                        .ok()
                        .filter(|n| *n >= 1)
                        .ok_or(ConfigError::Invalid {
                            name: "AUTO_DISABLE_AFTER",
                            reason: "expected a whole number, at least 1".into(),
                        })?,
                },
            },
            links: {
                let mut links = LinkIssuer::lazy(
                    Box::new(crate::handlers::links::SecretsManagerKeys::new(
                        aws_sdk_secretsmanager::Client::new(&sdk),
                        required("LINK_SIGNING_SECRET_ARN")?,
                    )),
                    required("LINKS_BASE_URL")?,
                );
                if let Some(base) = crate::config::optional("UNSUBSCRIBE_BASE_URL") {
                    links.unsubscribe_base = base;
                }
                links
            },
            link_ttl: seconds("DOWNLOAD_LINK_TTL_SECONDS", 7 * 24 * 3600)?,
            timing: Timing {
                lease_margin: seconds("LEASE_MARGIN_SECONDS", 30)?,
                dead_letter_repair_after: seconds("DEAD_LETTER_REPAIR_SECONDS", 60)?,
                ..Timing::default()
            },
            sqs_endpoint: optional("AWS_ENDPOINT_URL_SQS").or_else(|| optional("AWS_ENDPOINT_URL")),
            concurrency: 10,
        })
    }
}
