//! deliver: one attempt → one send through its channel.
//!
//! * A lease, taken with a conditional write, makes duplicates of a message
//!   never send twice. It ends shortly after the invocation's deadline, so
//!   it always expires before the message's visibility timeout; a copy that
//!   finds a live lease hides its message until the lease expires.
//! * Tries are counted on the attempt record, with a bounded history; the
//!   pure [`RetryPolicy`] decides from that count, never from SQS's receive
//!   count. Exhausted attempts are failed and dead-lettered by this code,
//!   in an order that a crash at any line leaves repairable.
//! * Every send gets a timeout from the invocation's remaining time; near
//!   the deadline, sends are put off without counting a try.

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
    futures::join!(
        deps.stats_batch.flush(deps.stats.as_ref()),
        outcomes.flush(&deps.outcome_batch)
    );
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

/// The executions one invocation has read: a batch's messages mostly share
/// one, and what deliver reads of it (files, name, times) never changes, so
/// it is read once per invocation (strongly consistent, since fan-out may
/// have just written it).
#[derive(Default)]
struct Executions {
    read: Cache<Option<ReportExecution>>,
    previews: Cache<Option<Arc<Preview>>>,
}

/// Values read once per invocation, by execution id.
type Cache<T> = Mutex<HashMap<String, Arc<tokio::sync::OnceCell<T>>>>;

impl Executions {
    async fn get(&self, deps: &Deps, id: &str) -> Result<Option<ReportExecution>, StoreError> {
        let cell = match self.read.lock() {
            Ok(mut read) => read.entry(id.to_owned()).or_default().clone(),
            Err(_) => Arc::default(),
        };
        cell.get_or_try_init(|| deps.executions.get_execution(id))
            .await
            .cloned()
    }

    /// The execution's preview, read once per invocation. A preview is
    /// decoration: one that cannot be read is left out of the message (and
    /// logged), never a reason to fail or delay the delivery.
    async fn preview(&self, deps: &Deps, execution: &ReportExecution) -> Option<Arc<Preview>> {
        let file = execution.preview.as_ref()?;
        let cell = match self.previews.lock() {
            Ok(mut read) => read.entry(execution.id.clone()).or_default().clone(),
            Err(_) => Arc::default(),
        };
        cell.get_or_init(|| async {
            let read = match deps.blobs.get(&file.key).await {
                Ok(bytes) => Preview::from_bytes(&bytes),
                Err(e) => Err(e.to_string()),
            };
            match read {
                Ok(p) => Some(Arc::new(p)),
                Err(error) => {
                    warn!(key = %file.key, %error, "preview unreadable; sending without it");
                    None
                }
            }
        })
        .await
        .clone()
    }
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
            fail(deps, &attempt, &token, error, &[]).await
        }
        // Temporary (the link keys could not be read): the lease stays
        // until it expires; by then the message is back.
        Err(SendFailure::Delivery(e)) if e.is_retryable() => temp(&e),
        Err(SendFailure::Delivery(e)) => fail(deps, &attempt, &token, e, &[]).await,
    }
}

/// The lease was refused: the transition rule says why, and the message
/// follows. It is acknowledged only when the attempt is terminal; an early
/// or second copy hides until the record says the next try is due.
async fn not_begun(
    deps: &Deps,
    m: &SqsMessage,
    clock: &Clock,
    begin: &Transition,
    current: DeliveryAttempt,
) -> Outcome {
    let now = Timestamp::now();
    let until = |t: Timestamp| {
        Duration::from_millis(u64::try_from(t.millis_since(now)).unwrap_or(0))
            + Duration::from_secs(1)
    };
    let refusal = match begin.decide(&current) {
        Err(refusal) => refusal,
        // It changed since the store read it: the message comes back soon.
        Ok(_) => Refusal::LeaseHeld { until: now },
    };
    match refusal {
        Refusal::WrongPair => Outcome::Reject {
            code: "mismatched_attempt",
            reason: "the message's execution or target is not the attempt's".into(),
        },
        Refusal::Terminal if current.dead_letter_pending() => {
            let age = current.failed_at.map_or(0, |at| now.millis_since(at));
            let wait = deps
                .timing
                .dead_letter_repair_after
                .saturating_sub(Duration::from_millis(u64::try_from(age).unwrap_or(0)));
            if wait.is_zero() {
                warn!(attempt_id = %current.id, "finishing an unconfirmed dead letter");
                deps.outcome_batch
                    .count_again(&current.report_execution_id, super::receive_count(m));
                finish_dead_letter(deps, m, clock, &current).await
            } else {
                hide(deps, m, wait + Duration::from_secs(1), clock).await;
                Outcome::Retry {
                    reason: "its run is dead-lettering the attempt".into(),
                }
            }
        }
        Refusal::Terminal => {
            deps.metrics.count(
                Metric::DuplicatesIgnored,
                &[(Dim::Stage, Stage::Delivery.as_str())],
            );
            info!(attempt_id = %current.id, status = %current.status, "duplicate message acknowledged");
            deps.outcome_batch
                .count_again(&current.report_execution_id, super::receive_count(m));
            Outcome::Done
        }
        Refusal::LeaseHeld { until: end } => {
            hide(deps, m, until(end), clock).await;
            info!(attempt_id = %current.id, "another run holds the lease; message hidden until it expires");
            Outcome::Retry {
                reason: "another run holds the lease".into(),
            }
        }
        Refusal::NotYet { due } => {
            hide(deps, m, until(due), clock).await;
            info!(attempt_id = %current.id, %due, "early copy hidden until the next try is due");
            Outcome::Retry {
                reason: format!("the next try is due at {due}"),
            }
        }
        Refusal::CrashLoop { leases } => stop_crash_loop(deps, m, clock, &current, leases).await,
        Refusal::NotHolder | Refusal::NotApplicable | Refusal::NoSuchLetter => {
            hide(deps, m, Duration::from_secs(1), clock).await;
            Outcome::Retry {
                reason: "the attempt changed while taking the lease".into(),
            }
        }
    }
}

/// Leases keep ending with no outcome (deliver dies on this attempt): fail
/// it as `crash_loop` and dead-letter it, instead of dying again.
async fn stop_crash_loop(
    deps: &Deps,
    m: &SqsMessage,
    clock: &Clock,
    current: &DeliveryAttempt,
    leases: u32,
) -> Outcome {
    let stop = Transition::StopCrashLoop {
        error: crate::domain::transition::crash_loop_error(current, leases, Timestamp::now()),
        crash_limit: deps.policy.crash_limit(),
    };
    match apply_settling(deps, current, &stop).await {
        Ok(Applied::Yes(failed)) => {
            error!(attempt_id = %failed.id, leases, "crash loop stopped");
            give_up(deps, m, clock, &failed).await
        }
        Ok(Applied::Refused(_)) => {
            hide(deps, m, Duration::from_secs(1), clock).await;
            Outcome::Retry {
                reason: "the attempt changed while stopping its crash loop".into(),
            }
        }
        Err(e) => temp(&e),
    }
}

fn missing_files(formats: &[&str]) -> SendFailure {
    SendFailure::Delivery(DeliveryError::permanent(
        "no_files",
        format!(
            "the execution has none of the formats the target asks for ({})",
            formats.join(", ")
        ),
    ))
}

enum SendFailure {
    Store(StoreError),
    Delivery(DeliveryError),
}

impl From<StoreError> for SendFailure {
    fn from(e: StoreError) -> Self {
        SendFailure::Store(e)
    }
}

/// Everything one send needs, read once per invocation.
struct Prepared<'a> {
    target: DeliveryTarget,
    execution: ReportExecution,
    connection: Option<ServiceConnection>,
    channel: &'a dyn Channel,
    files: Vec<LinkedFile>,
    link_expires_at: Timestamp,
    /// The rows (and parameters) a message may show.
    preview: Option<Arc<Preview>>,
    chart: Option<ChartFile>,
}

async fn prepare<'a>(
    deps: &'a Deps,
    attempt: &DeliveryAttempt,
    executions: &Executions,
) -> Result<Prepared<'a>, SendFailure> {
    let missing = |code: &str, what: &str| {
        SendFailure::Delivery(DeliveryError::permanent(code, what.to_owned()))
    };
    let target = deps
        .targets
        .get_target(&attempt.delivery_target_id)
        .await
        .map_err(|e| match e {
            StoreError::Invalid { reason, .. } => {
                SendFailure::Delivery(DeliveryError::permanent("invalid_target_config", reason))
            }
            other => SendFailure::Store(other),
        })?
        .ok_or_else(|| missing("target_not_found", "the delivery target no longer exists"))?;
    if !target.active && attempt.kind == AttemptKind::Delivery {
        return Err(missing(
            "target_inactive",
            "the delivery target was deactivated",
        ));
    }
    let execution = executions
        .get(deps, &attempt.report_execution_id)
        .await?
        .ok_or_else(|| {
            missing(
                "execution_not_found",
                "the report execution is not recorded",
            )
        })?;
    let connection = match &target.service_connection_id {
        Some(id) => Some(deps.connections.get_connection(id).await?.ok_or_else(|| {
            missing(
                "connection_not_found",
                "the service connection does not exist",
            )
        })?),
        None => None,
    };
    let channel = deps
        .channels
        .for_type(target.config.target_type())
        .map_err(SendFailure::Delivery)?;
    let link_expires_at = Timestamp::now()
        .plus(time::Duration::try_from(deps.link_ttl).unwrap_or(time::Duration::days(7)));
    let mut files = Vec::new();
    let wanted = target.formats();
    for &format in &wanted {
        let file = match format {
            Format::Pdf => Some(&execution.pdf),
            Format::Csv => execution.csv.as_ref(),
        };
        let Some(file) = file else { continue };
        files.push(LinkedFile {
            format,
            file: file.clone(),
            download_url: link(deps, &file.key, link_expires_at).await?,
        });
    }
    if files.is_empty() {
        let names: Vec<&str> = wanted.iter().map(|f| f.as_str()).collect();
        return Err(missing_files(&names));
    }
    // Read even when no rows are shown: messages list the parameters.
    let preview = executions.preview(deps, &execution).await;
    let chart = match &execution.chart {
        Some(file) => Some(ChartFile {
            file: file.clone(),
            download_url: link(deps, &file.key, link_expires_at).await?,
            title: preview
                .as_ref()
                .and_then(|p| p.chart_title.clone())
                .unwrap_or_else(|| "Chart".into()),
        }),
        None => None,
    };
    Ok(Prepared {
        target,
        execution,
        connection,
        channel,
        files,
        link_expires_at,
        preview,
        chart,
    })
}

/// A download link to `key`; unreadable link keys are worth a retry.
async fn link(deps: &Deps, key: &str, expires_at: Timestamp) -> Result<String, SendFailure> {
    deps.links
        .link(key, expires_at)
        .await
        .map_err(|e| SendFailure::Delivery(DeliveryError::temporary("link_keys", e)))
}

/// The future slot to put the send off to when its destination is over
/// its shared rate limit; `None` to send now. An attempt that already holds
/// a slot uses it without reserving again. A failing limiter lets the send
/// go: the provider's own 429 still applies.
async fn rate_slot(
    deps: &Deps,
    send: &Prepared<'_>,
    attempt: &DeliveryAttempt,
) -> Option<Timestamp> {
    let now = Timestamp::now();
    if let Some(slot) = attempt.rate_slot {
        return (slot.millis_since(now) > 250).then_some(slot);
    }
    let (key, limit) = send
        .channel
        .rate_limit(&send.target, send.connection.as_ref())?;
    match deps.rate_limits.reserve(&key, limit, now).await {
        Ok(None) => None,
        Ok(Some(wait)) => {
            info!(rate_key = %key, wait_ms = millis(wait), "destination over its rate limit; slot reserved");
            Some(now.plus(time::Duration::try_from(wait).unwrap_or(time::Duration::SECOND)))
        }
        Err(e) => {
            warn!(rate_key = %key, error = %e, "rate limiter unavailable; sending anyway");
            None
        }
    }
}

/// The tries of this invocation, appended to the attempt's.
struct Tries<'a> {
    attempt: &'a DeliveryAttempt,
    new: Vec<TryRecord>,
}

impl Tries<'_> {
    /// The total of finished sends, this invocation's included.
    fn total(&self) -> u32 {
        self.attempt
            .tries
            .saturating_add(u32::try_from(self.new.len()).unwrap_or(u32::MAX))
    }

    fn update(&self) -> TriesUpdate {
        TriesUpdate {
            tries: self.total(),
            history: self.attempt.history_with(&self.new),
        }
    }
}

/// Sends, retrying at once when the policy says so, and records the end.
async fn send_with_retries(
    deps: &Deps,
    m: &SqsMessage,
    clock: &Clock,
    attempt: &DeliveryAttempt,
    token: &str,
    send: Prepared<'_>,
) -> Outcome {
    let progress = AttemptProgress {
        attempts: deps.attempts.as_ref(),
        id: &attempt.id,
        token,
        saved: Mutex::new(attempt.metadata.clone()),
        lost: AtomicBool::new(false),
    };
    let mut tries = Tries {
        attempt,
        new: Vec::new(),
    };
    loop {
        let ctx = DeliveryContext {
            attempt,
            target: &send.target,
            execution: &send.execution,
            connection: send.connection.as_ref(),
            files: &send.files,
            link_expires_at: send.link_expires_at,
            preview: send.preview.as_deref(),
            chart: send.chart.as_ref(),
            now: Timestamp::now(),
            blobs: deps.blobs.as_ref(),
            progress: &progress,
        };
        let at = Timestamp::now();
        let started = Instant::now();
        let budget = clock.send_budget(&deps.timing);
        let result = match tokio::time::timeout(budget, send.channel.deliver(&ctx)).await {
            Ok(result) => result,
            Err(_) => Err(DeliveryError::temporary(
                "deadline",
                format!(
                    "the send did not finish in the {} ms left for it",
                    budget.as_millis()
                ),
            )),
        };
        let mut record = TryRecord {
            n: tries.total().saturating_add(1),
            at,
            ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            code: None,
            then: TryNext::Delivered,
            delay_ms: None,
        };
        crate::chaos::point("deliver.after_send");
        if record.n == 1 {
            deps.metrics.count(Metric::AttemptsStarted, &on(attempt));
        }
        deps.metrics
            .record(Metric::SendDuration, &on(attempt), record.ms as f64);
        if let Err(e) = &result {
            let channel = crate::metrics::channel(attempt.target_type);
            deps.metrics.count(
                Metric::SendErrors,
                &[
                    (Dim::Channel, channel),
                    (Dim::ErrorCode, crate::metrics::error_code(e.code())),
                ],
            );
        }
        let error = match result {
            Ok(receipt) => {
                tries.new.push(record);
                let generated_at = send.execution.generated_at;
                let streak = send.target.consecutive_failures;
                return delivered(deps, attempt, token, receipt, &tries, generated_at, streak)
                    .await;
            }
            Err(_) if progress.lost.load(Ordering::Relaxed) => {
                // Another copy of the message owns the attempt now; it finishes it.
                warn!(attempt_id = %attempt.id, "lease lost mid-send; leaving the attempt to its new owner");
                return Outcome::Done;
            }
            Err(e) => e,
        };
        record.code = Some(error.code().to_owned());
        if !error.is_retryable() {
            record.then = TryNext::Failed;
            tries.new.push(record);
            return fail(deps, attempt, token, error, &tries.new).await;
        }
        let jitter = uuid::Uuid::new_v4().as_u128() as f64 / u128::MAX as f64;
        let immediate = deps
            .policy
            .immediate_available(attempt.retry_count, tries.total().saturating_add(1));
        let decision =
            deps.policy
                .decide(attempt.retry_count, immediate, error.retry_after(), jitter);
        warn!(attempt_id = %attempt.id, code = error.code(), reason = error.message(), ?decision, "temporary failure");
        if attempt.kind == AttemptKind::Test
            && matches!(
                decision,
                RetryDecision::Backoff(_) | RetryDecision::Exhausted
            )
        {
            // A test answers now: no backoff schedule, no dead letter.
            record.then = TryNext::Failed;
            tries.new.push(record);
            return fail(deps, attempt, token, error, &tries.new).await;
        }
        match decision {
            RetryDecision::Immediate(wait) if clock.fits_a_send(&deps.timing, wait) => {
                record.then = TryNext::ImmediateRetry;
                deps.metrics.count(Metric::ImmediateRetries, &on(attempt));
                record.delay_ms = Some(millis(wait));
                tries.new.push(record);
                tokio::time::sleep(wait).await;
            }
            RetryDecision::Immediate(wait) => {
                // The immediate retry does not fit: it becomes the next
                // receive's try, without counting a backoff.
                let delay = wait.max(deps.timing.defer);
                record.then = TryNext::Deferred;
                record.delay_ms = Some(millis(delay));
                tries.new.push(record);
                return defer(deps, m, clock, attempt, token, &tries, delay, None).await;
            }
            RetryDecision::Backoff(delay) => {
                let delay = clamp_visibility(delay, clock.received.elapsed());
                record.then = TryNext::Backoff;
                deps.metrics.count(Metric::RetriesScheduled, &on(attempt));
                record.delay_ms = Some(millis(delay));
                tries.new.push(record);
                let recorded = attempt_error(&error);
                let retry = Transition::ScheduleRetry {
                    token: token.to_owned(),
                    next_try_at: recorded.at.plus(to_time(delay)),
                    error: recorded,
                    tries: tries.update(),
                };
                if let Err(e) = apply_settling(deps, attempt, &retry).await {
                    return temp(&e);
                }
                crate::chaos::point("deliver.before_backoff_visibility");
                hide(deps, m, delay, clock).await;
                return Outcome::Retry {
                    reason: format!("{}: retry in {}s", error.code(), delay.as_secs()),
                };
            }
            RetryDecision::Exhausted => {
                record.then = TryNext::Exhausted;
                tries.new.push(record);
                return exhaust(deps, m, clock, attempt, token, &error, &tries).await;
            }
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

async fn delivered(
    deps: &Deps,
    attempt: &DeliveryAttempt,
    token: &str,
    receipt: Receipt,
    tries: &Tries<'_>,
    generated_at: Timestamp,
    failures_before: u32,
) -> Outcome {
    let deliver = Transition::Deliver {
        token: token.to_owned(),
        now: Timestamp::now(),
        metadata: receipt.metadata,
        tries: tries.update(),
    };
    match apply_settling(deps, attempt, &deliver).await {
        Ok(Applied::Yes(done)) => {
            count_outcome(deps, &done, crate::metrics::Outcome::Delivered);
            if done.kind == AttemptKind::Delivery {
                super::record_settled(
                    super::StatsSink::Batch(&deps.stats_batch),
                    deps.targets.as_ref(),
                    &done,
                    failures_before,
                )
                .await;
            }
            // Test sends too: their execution settles (with no event).
            deps.outcome_batch.push(&done);
            let latency = done
                .delivered_at
                .map_or(0, |at| at.millis_since(generated_at).max(0));
            deps.metrics
                .record(Metric::EndToEndLatency, &on(&done), latency as f64);
            info!(
                attempt_id = %done.id,
                channel = %done.target_type,
                end_to_end_ms = latency,
                delivery_ms = done.delivery_millis().unwrap_or_default(),
                tries = done.tries,
                retries = done.retry_count,
                "delivered"
            );
            Outcome::Done
        }
        Ok(Applied::Refused(current)) => {
            warn!(attempt_id = %attempt.id, status = ?current.map(|c| c.status), "lease lost after a successful send");
            Outcome::Done
        }
        // Sent but not recorded: the message comes back and the send is
        // repeated (the documented duplicate window; webhooks carry the
        // same webhook-id, so receivers can drop it).
        Err(e) => temp(&e),
    }
}

/// Puts the next try off without counting a backoff (keeping a reserved
/// rate slot when there is one).
#[allow(clippy::too_many_arguments)]
async fn defer(
    deps: &Deps,
    m: &SqsMessage,
    clock: &Clock,
    attempt: &DeliveryAttempt,
    token: &str,
    tries: &Tries<'_>,
    delay: Duration,
    rate_slot: Option<Timestamp>,
) -> Outcome {
    let now = Timestamp::now();
    let t = Transition::Defer {
        token: token.to_owned(),
        now,
        tries: tries.update(),
        next_try_at: rate_slot.unwrap_or_else(|| now.plus(to_time(delay))),
        rate_slot,
    };
    if let Err(e) = apply_settling(deps, attempt, &t).await {
        return temp(&e);
    }
    hide(deps, m, delay, clock).await;
    Outcome::Retry {
        reason: if rate_slot.is_some() {
            "put off to its rate-limit slot".into()
        } else {
            "deferred near the deadline".into()
        },
    }
}

/// The schedule is used up: fail the attempt (asking for a dead letter),
/// send the dead letter, confirm it, then acknowledge the message. A crash
/// after the failure leaves `dead_letter` unconfirmed; the message comes
/// back and its next copy (or the reconciler) finishes the job.
async fn exhaust(
    deps: &Deps,
    m: &SqsMessage,
    clock: &Clock,
    attempt: &DeliveryAttempt,
    token: &str,
    last: &DeliveryError,
    tries: &Tries<'_>,
) -> Outcome {
    let fail = Transition::Fail {
        token: Some(token.to_owned()),
        error: AttemptError {
            code: "retries_exhausted".into(),
            message: format!(
                "gave up after {} tries ({} backoff retries); last error {}: {}",
                tries.total(),
                attempt.retry_count,
                last.code(),
                last.message()
            )
            .chars()
            .take(1000)
            .collect(),
            ..attempt_error(last)
        },
        tries: Some(tries.update()),
        dead_letter: true,
    };
    match apply_settling(deps, attempt, &fail).await {
        Ok(Applied::Yes(failed)) => {
            error!(attempt_id = %attempt.id, tries = failed.tries, "retries exhausted");
            give_up(deps, m, clock, &failed).await
        }
        Ok(Applied::Refused(current)) => {
            warn!(attempt_id = %attempt.id, status = ?current.map(|c| c.status), "lease lost before giving up");
            Outcome::Done
        }
        Err(e) => temp(&e),
    }
}

/// Counts an attempt that failed with a dead letter requested, then sends
/// and confirms the letter.
async fn give_up(deps: &Deps, m: &SqsMessage, clock: &Clock, failed: &DeliveryAttempt) -> Outcome {
    count_outcome(deps, failed, crate::metrics::Outcome::FailedExhausted);
    super::record_settled(
        super::StatsSink::Batch(&deps.stats_batch),
        deps.targets.as_ref(),
        failed,
        0,
    )
    .await;
    deps.outcome_batch.push(failed);
    crate::chaos::point("deliver.after_exhausted");
    finish_dead_letter(deps, m, clock, failed).await
}

/// Sends the dead letter of an exhausted attempt and confirms it on the
/// record; the message is acknowledged only after both.
async fn finish_dead_letter(
    deps: &Deps,
    m: &SqsMessage,
    clock: &Clock,
    attempt: &DeliveryAttempt,
) -> Outcome {
    let (code, reason) = attempt
        .last_error
        .as_ref()
        .map_or(("retries_exhausted", "retries exhausted"), |e| {
            (e.code.as_str(), e.message.as_str())
        });
    let letter = DeadLetter {
        body: m.body.as_deref().unwrap_or(""),
        code,
        reason,
        source_message_id: m.message_id.as_deref().unwrap_or(""),
        attempt_id: Some(&attempt.id),
        receive_count: Some(super::receive_count(m)),
        episode: Some(attempt.episode),
    };
    if let Err(e) = deps.queue.dead_letter(&deps.dead_letter_url, letter).await {
        hide(deps, m, deps.timing.dead_letter_repair_after, clock).await;
        return temp(&e);
    }
    deps.metrics.count(
        Metric::DeadLettered,
        &[(Dim::Stage, Stage::Delivery.as_str())],
    );
    crate::chaos::point("deliver.after_dead_letter");
    let confirm = Transition::ConfirmDeadLetter {
        now: Timestamp::now(),
        episode: attempt.episode,
    };
    match apply_settling(deps, attempt, &confirm).await {
        Ok(_) => Outcome::Done,
        Err(e) => temp(&e),
    }
}

/// Applies a write that settles an invocation's work, retrying briefly on
/// temporary store errors: losing it would repeat a send or a dead letter.
async fn apply_settling(
    deps: &Deps,
    seen: &DeliveryAttempt,
    t: &Transition,
) -> Result<Applied, StoreError> {
    let id = seen.id.as_str();
    let mut wait = Duration::from_millis(100);
    for _ in 0..2 {
        match deps.attempts.apply_from(seen, t).await {
            Err(e) if e.is_retryable() => {
                warn!(attempt_id = %id, error = %e, "store write failed; trying again");
                tokio::time::sleep(wait).await;
                wait *= 4;
            }
            other => return other,
        }
    }
    deps.attempts.apply(id, t).await
}

fn attempt_error(e: &DeliveryError) -> AttemptError {
    AttemptError {
        category: if e.is_retryable() {
            ErrorCategory::Temporary
        } else {
            ErrorCategory::Permanent
        },
        code: e.code().to_owned(),
        message: e.message().chars().take(1000).collect(),
        at: Timestamp::now(),
    }
}

/// Saves a channel's progress on the attempt (under the lease), so a retry
/// picks up where this try stopped.
struct AttemptProgress<'a> {
    attempts: &'a dyn AttemptStore,
    id: &'a str,
    token: &'a str,
    saved: Mutex<BTreeMap<String, String>>,
    /// Set when saving found the lease taken by another copy of the message.
    lost: AtomicBool,
}

#[async_trait]
impl Progress for AttemptProgress<'_> {
    fn get(&self, key: &str) -> Option<String> {
        self.saved.lock().ok()?.get(key).cloned()
    }

    async fn save(&self, values: BTreeMap<String, String>) -> Result<(), DeliveryError> {
        let t = Transition::Annotate {
            token: self.token.to_owned(),
            metadata: values.clone(),
        };
        match self.attempts.apply(self.id, &t).await {
            Ok(Applied::Yes(_)) => {
                if let Ok(mut m) = self.saved.lock() {
                    m.extend(values);
                }
                Ok(())
            }
            Ok(Applied::Refused(_)) => {
                self.lost.store(true, Ordering::Relaxed);
                Err(DeliveryError::temporary(
                    "lease_lost",
                    "another copy of this message took over the attempt",
                ))
            }
            Err(e) => Err(DeliveryError::temporary("store", e.to_string())),
        }
    }
}

async fn fail(
    deps: &Deps,
    attempt: &DeliveryAttempt,
    token: &str,
    e: DeliveryError,
    new_tries: &[TryRecord],
) -> Outcome {
    error!(attempt_id = %attempt.id, code = e.code(), reason = e.message(), "permanent failure");
    // A receiver that says it is gone: disabled (or flagged) before the
    // failure is recorded, so no later run sends to it.
    let counts = attempt.kind == AttemptKind::Delivery;
    let gone = if counts && e.target_gone() {
        let reason = disable_reason(&deps.auto_disable, &e, 0).unwrap_or_default();
        match stop_target(deps, attempt, &reason).await {
            Ok(event) => event.map(|ev| (ev, reason)),
            Err(err) => return temp(&err),
        }
    } else {
        None
    };
    let tries = Tries {
        attempt,
        new: new_tries.to_vec(),
    };
    let t = Transition::Fail {
        token: Some(token.to_owned()),
        error: attempt_error(&e),
        tries: Some(tries.update()),
        dead_letter: false,
    };
    match apply_settling(deps, attempt, &t).await {
        Ok(applied) => {
            if let Applied::Yes(failed) = applied {
                count_outcome(deps, &failed, crate::metrics::Outcome::FailedPermanent);
                deps.outcome_batch.push(&failed);
                if !counts {
                    info!(attempt_id = %failed.id, code = e.code(), "test send failed");
                    return Outcome::Done;
                }
                let run = super::record_settled(
                    super::StatsSink::Batch(&deps.stats_batch),
                    deps.targets.as_ref(),
                    &failed,
                    0,
                )
                .await;
                let changed = match gone {
                    Some(done) => Some(done),
                    None => auto_disable(deps, &failed, &e, run).await,
                };
                if let Some((event, reason)) = changed {
                    outcomes(deps)
                        .target_changed(&failed, event, &reason, run, Timestamp::now())
                        .await;
                }
            }
            Outcome::Done
        }
        Err(err) => temp(&err),
    }
}

/// What happens to a target that keeps failing or is gone for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AutoDisable {
    /// Deactivate it (`true`, the default) or only flag it for an operator.
    pub disable: bool,
    /// Consecutive permanent failures that count as broken.
    pub after: u32,
}

impl Default for AutoDisable {
    /// Disable after 5: a permanently failing target (a bad address, a
    /// revoked token, a removed hook) fails every run, pages through the
    /// success-rate alarm and spends sends for nothing; 5 in a row leaves
    /// room to fix a passing misconfiguration. A receiver that says it is
    /// gone (410, `no_service`) is disabled at once.
    fn default() -> Self {
        Self {
            disable: true,
            after: 5,
        }
    }
}

/// Why a target should stop receiving, if it should.
pub fn disable_reason(policy: &AutoDisable, e: &DeliveryError, run: u32) -> Option<String> {
    if e.target_gone() {
        Some(format!(
            "the receiver says the target is gone ({}: {})",
            e.code(),
            e.message()
        ))
    } else if run >= policy.after {
        Some(format!(
            "{run} consecutive permanent failures; the last: {}: {}",
            e.code(),
            e.message()
        ))
    } else {
        None
    }
}

/// Disables (or flags) a target after its run of permanent failures
/// reached the policy's count; what happened, and why.
async fn auto_disable(
    deps: &Deps,
    failed: &DeliveryAttempt,
    e: &DeliveryError,
    run: u32,
) -> Option<(&'static str, String)> {
    let reason = disable_reason(&deps.auto_disable, e, run)?;
    match stop_target(deps, failed, &reason).await {
        Ok(event) => event.map(|ev| (ev, reason)),
        Err(err) => {
            warn!(target_id = %failed.delivery_target_id, error = %err, "target not disabled");
            None
        }
    }
}

/// Applies the policy to a target: disabled (`Some("disabled")`, or `None`
/// when it already was) or flagged, with its metric.
async fn stop_target(
    deps: &Deps,
    attempt: &DeliveryAttempt,
    reason: &str,
) -> Result<Option<&'static str>, StoreError> {
    let target = &attempt.delivery_target_id;
    let now = Timestamp::now();
    if deps.auto_disable.disable {
        let changed = deps
            .targets
            .disable_target(target, attempt.target_type, reason, now)
            .await?;
        if changed {
            deps.metrics.count(
                Metric::TargetsStopped,
                &[
                    (Dim::Channel, crate::metrics::channel(attempt.target_type)),
                    (Dim::Change, "disabled"),
                ],
            );
            warn!(target_id = %target, %reason, "target disabled");
        }
        Ok(changed.then_some("disabled"))
    } else {
        deps.targets.flag_for_disabling(target, reason, now).await?;
        deps.metrics.count(
            Metric::TargetsStopped,
            &[
                (Dim::Channel, crate::metrics::channel(attempt.target_type)),
                (Dim::Change, "flagged"),
            ],
        );
        warn!(target_id = %target, %reason, "target flagged for disabling");
        Ok(Some("flagged"))
    }
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
            links: LinkIssuer::lazy(
                Box::new(crate::handlers::links::SecretsManagerKeys::new(
                    aws_sdk_secretsmanager::Client::new(&sdk),
                    required("LINK_SIGNING_SECRET_ARN")?,
                )),
                required("LINKS_BASE_URL")?,
            ),
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
