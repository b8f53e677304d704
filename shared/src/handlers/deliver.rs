//! deliver: one attempt → one send through its channel. Takes a lease with a
//! conditional write, so duplicates of a message never send twice and
//! `delivered` stays terminal; classifies failures and drives retries
//! through the pure [`RetryPolicy`].

use super::{Outcome, body_of, process_batch, receive_count};
use crate::blob::BlobStore;
use crate::channel::{Channels, DeliveryContext, DeliveryError, LinkedFile, Progress};
use crate::contract::DeliveryTask;
use crate::domain::target::Format;
use crate::domain::{
    AttemptError, DeliveryAttempt, ErrorCategory, RetryDecision, RetryPolicy, Timestamp, Transition,
};
use crate::handlers::links::LinkIssuer;
use crate::queue::{Queue, queue_url_from_arn};
use crate::store::{
    Applied, AttemptStore, ConnectionStore, ExecutionStore, StoreError, TargetStore,
};
use async_trait::async_trait;
use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tracing::{Span, error, info, warn};

/// What deliver needs.
pub struct Deps {
    pub attempts: Box<dyn AttemptStore>,
    pub targets: Box<dyn TargetStore>,
    pub executions: Box<dyn ExecutionStore>,
    pub connections: Box<dyn ConnectionStore>,
    pub blobs: Box<dyn BlobStore>,
    pub queue: Box<dyn Queue>,
    pub channels: Channels,
    pub policy: RetryPolicy,
    pub dead_letter_url: String,
    /// Signs download links served by the links function.
    pub links: LinkIssuer,
    /// How long download links stay valid.
    pub link_ttl: Duration,
    /// How long a processing lease lasts; at least the function timeout.
    pub lease: Duration,
    /// `AWS_ENDPOINT_URL`, to address queues from their ARNs locally.
    pub sqs_endpoint: Option<String>,
    /// Messages processed at once within a batch.
    pub concurrency: usize,
}

/// The Lambda handler.
pub async fn handle(deps: &Deps, event: SqsEvent) -> SqsBatchResponse {
    process_batch(
        &event,
        deps.queue.as_ref(),
        &deps.dead_letter_url,
        deps.concurrency,
        |m: &SqsMessage| process(deps, m),
    )
    .await
}

fn temp(e: &dyn std::fmt::Display) -> Outcome {
    Outcome::Retry {
        reason: e.to_string(),
    }
}

async fn process(deps: &Deps, m: &SqsMessage) -> Outcome {
    let body = match body_of(m) {
        Ok(b) => b,
        Err(outcome) => return outcome,
    };
    let (attempt_id, target_id) = match serde_json::from_str::<DeliveryTask>(body) {
        Ok(DeliveryTask::DeliverV1 {
            attempt_id,
            target_id,
            ..
        }) => (attempt_id, target_id),
        Err(e) => {
            return Outcome::Reject {
                code: "malformed_message",
                reason: format!("not a valid deliver.v1 task: {e}"),
            };
        }
    };
    Span::current().record("attempt_id", attempt_id.as_str());
    let token = uuid::Uuid::new_v4().simple().to_string();
    let now = Timestamp::now();
    let begin = Transition::Begin {
        token: token.clone(),
        now,
        lease_until: now
            .plus(time::Duration::try_from(deps.lease).unwrap_or(time::Duration::minutes(15))),
    };
    let attempt = match deps.attempts.apply(&attempt_id, &begin).await {
        Ok(Applied::Yes(a)) => a,
        Ok(Applied::Refused(None)) => {
            return Outcome::Reject {
                code: "unknown_attempt",
                reason: format!("attempt {attempt_id} does not exist"),
            };
        }
        Ok(Applied::Refused(Some(current))) => {
            // Delivered is terminal; a live lease means another copy of this
            // message is being handled. Either way this copy is done.
            info!(%attempt_id, status = %current.status, "duplicate message ignored");
            return Outcome::Done;
        }
        Err(e) => return temp(&e),
    };
    if attempt.delivery_target_id != target_id {
        return fail(
            deps,
            &attempt,
            &token,
            DeliveryError::permanent(
                "invalid_payload",
                "message target does not match the attempt",
            ),
        )
        .await;
    }
    match prepare_and_send(deps, &attempt, &token, m).await {
        Ok(outcome) => outcome,
        Err(SendFailure::Store(e)) if e.is_retryable() => temp(&e),
        Err(SendFailure::Store(e)) => {
            fail(
                deps,
                &attempt,
                &token,
                DeliveryError::permanent("invalid_record", e.to_string()),
            )
            .await
        }
        Err(SendFailure::Delivery(e)) => fail(deps, &attempt, &token, e).await,
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

async fn prepare_and_send(
    deps: &Deps,
    attempt: &DeliveryAttempt,
    token: &str,
    m: &SqsMessage,
) -> Result<Outcome, SendFailure> {
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
    if !target.active {
        return Err(missing(
            "target_inactive",
            "the delivery target was deactivated",
        ));
    }
    let execution = deps
        .executions
        .get_execution(&attempt.report_execution_id)
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
            download_url: deps.links.link(&file.key, link_expires_at),
        });
    }
    if files.is_empty() {
        let names: Vec<&str> = wanted.iter().map(|f| f.as_str()).collect();
        return Err(missing_files(&names));
    }
    let progress = AttemptProgress {
        attempts: deps.attempts.as_ref(),
        id: &attempt.id,
        token,
        saved: Mutex::new(attempt.metadata.clone()),
        lost: AtomicBool::new(false),
    };
    let receives = receive_count(m);
    let mut immediate_used = false;
    loop {
        let ctx = DeliveryContext {
            attempt,
            target: &target,
            execution: &execution,
            connection: connection.as_ref(),
            files: &files,
            link_expires_at,
            now: Timestamp::now(),
            blobs: deps.blobs.as_ref(),
            progress: &progress,
        };
        let started = std::time::Instant::now();
        let error = match channel.deliver(&ctx).await {
            Ok(receipt) => {
                let deliver = Transition::Deliver {
                    token: token.to_owned(),
                    now: Timestamp::now(),
                    metadata: receipt.metadata,
                };
                return match deps.attempts.apply(&attempt.id, &deliver).await? {
                    Applied::Yes(done) => {
                        info!(
                            attempt_id = %done.id,
                            channel = %done.target_type,
                            send_ms = started.elapsed().as_millis() as u64,
                            delivery_ms = done.delivery_millis().unwrap_or_default(),
                            retries = done.retry_count,
                            "delivered"
                        );
                        Ok(Outcome::Done)
                    }
                    Applied::Refused(current) => {
                        warn!(attempt_id = %attempt.id, status = ?current.map(|c| c.status), "lease lost after a successful send");
                        Ok(Outcome::Done)
                    }
                };
            }
            Err(_) if progress.lost.load(Ordering::Relaxed) => {
                // Another copy of the message owns the attempt now; it finishes it.
                warn!(attempt_id = %attempt.id, "lease lost mid-send; leaving the attempt to its new owner");
                return Ok(Outcome::Done);
            }
            Err(e) if !e.is_retryable() => return Err(SendFailure::Delivery(e)),
            Err(e) => e,
        };
        let jitter = uuid::Uuid::new_v4().as_u128() as f64 / u128::MAX as f64;
        let decision = deps
            .policy
            .decide(receives, immediate_used, error.retry_after(), jitter);
        warn!(attempt_id = %attempt.id, code = error.code(), reason = error.message(), ?decision, "temporary failure");
        match decision {
            RetryDecision::Immediate(wait) => {
                immediate_used = true;
                tokio::time::sleep(wait).await;
            }
            RetryDecision::Backoff(delay) => {
                let retry = Transition::ScheduleRetry {
                    token: token.to_owned(),
                    error: attempt_error(&error),
                };
                deps.attempts.apply(&attempt.id, &retry).await?;
                hide(deps, m, delay).await;
                return Ok(Outcome::Retry {
                    reason: format!("{}: retry in {}s", error.code(), delay.as_secs()),
                });
            }
            RetryDecision::Exhausted => {
                let fail = Transition::Fail {
                    token: Some(token.to_owned()),
                    error: AttemptError {
                        code: "retries_exhausted".into(),
                        message: format!(
                            "gave up after {receives} tries; last error {}: {}",
                            error.code(),
                            error.message()
                        ),
                        ..attempt_error(&error)
                    },
                };
                deps.attempts.apply(&attempt.id, &fail).await?;
                // Make it visible at once so the redrive policy moves it to
                // the dead-letter queue on the next receive.
                hide(deps, m, Duration::ZERO).await;
                return Ok(Outcome::Retry {
                    reason: "retries exhausted; left for the dead-letter queue".into(),
                });
            }
        }
    }
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

async fn fail(deps: &Deps, attempt: &DeliveryAttempt, token: &str, e: DeliveryError) -> Outcome {
    error!(attempt_id = %attempt.id, code = e.code(), reason = e.message(), "permanent failure");
    if e.target_gone() {
        let reason = format!("{}: {}", e.code(), e.message());
        match deps
            .targets
            .flag_for_disabling(&attempt.delivery_target_id, &reason, Timestamp::now())
            .await
        {
            Ok(()) => {
                warn!(target_id = %attempt.delivery_target_id, %reason, "target flagged for disabling")
            }
            Err(err) => return temp(&err),
        }
    }
    let t = Transition::Fail {
        token: Some(token.to_owned()),
        error: attempt_error(&e),
    };
    match deps.attempts.apply(&attempt.id, &t).await {
        Ok(_) => Outcome::Done,
        Err(err) => temp(&err),
    }
}

async fn hide(deps: &Deps, m: &SqsMessage, delay: Duration) {
    let (Some(arn), Some(handle)) = (m.event_source_arn.as_deref(), m.receipt_handle.as_deref())
    else {
        return;
    };
    let Some(url) = queue_url_from_arn(arn, deps.sqs_endpoint.as_deref()) else {
        return;
    };
    if let Err(e) = deps.queue.change_visibility(&url, handle, delay).await {
        // The queue's own visibility timeout still applies; the retry comes later, not never.
        warn!(error = %e, "could not set the backoff visibility");
    }
}

impl Deps {
    /// Builds the deps from the environment `template.yaml` sets.
    pub async fn from_env() -> Result<Self, crate::config::ConfigError> {
        use crate::config::{optional, required, retry_policy, seconds, tables};
        let sdk = crate::aws::load().await;
        let store = crate::store::dynamo::DynamoStore::new(crate::aws::dynamodb(&sdk), tables()?);
        Ok(Self {
            attempts: Box::new(store.clone()),
            targets: Box::new(store.clone()),
            executions: Box::new(store.clone()),
            connections: Box::new(store),
            blobs: Box::new(crate::blob::s3::S3Blobs::new(
                crate::aws::s3(&sdk),
                required("REPORTS_BUCKET")?,
            )),
            queue: Box::new(crate::queue::sqs::SqsQueue::new(crate::aws::sqs(&sdk))),
            channels: Channels::from_env(&sdk)?,
            policy: retry_policy()?,
            dead_letter_url: required("DEAD_LETTER_QUEUE_URL")?,
            // Deliver signs with the newest key at start-up; after a
            // rotation ("new,old") the links function accepts both.
            links: LinkIssuer {
                signer: crate::config::link_keys(&sdk).await?.signer(),
                base_url: required("LINKS_BASE_URL")?,
            },
            link_ttl: seconds("DOWNLOAD_LINK_TTL_SECONDS", 7 * 24 * 3600)?,
            lease: seconds("LEASE_SECONDS", 900)?,
            sqs_endpoint: optional("AWS_ENDPOINT_URL_SQS").or_else(|| optional("AWS_ENDPOINT_URL")),
            concurrency: 10,
        })
    }
}
