//! The send: one try (and the immediate retry) through the channel, each
//! with its own timeout started after any local wait, and its record.

use super::*;

/// The tries of this invocation, appended to the attempt's.
pub(super) struct Tries<'a> {
    pub(super) attempt: &'a DeliveryAttempt,
    pub(super) new: Vec<TryRecord>,
}

impl Tries<'_> {
    /// The total of finished sends, this invocation's included.
    pub(super) fn total(&self) -> u32 {
        self.attempt
            .tries
            .saturating_add(u32::try_from(self.new.len()).unwrap_or(u32::MAX))
    }

    pub(super) fn update(&self) -> TriesUpdate {
        TriesUpdate {
            tries: self.total(),
            history: self.attempt.history_with(&self.new),
        }
    }
}

/// Sends, retrying at once when the policy says so, and records the end.
pub(super) async fn send_with_retries(
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
            suppressed: &send.suppressed,
            unsubscribe: &send.unsubscribe,
        };
        // A local slot first: the send's timeout starts once it is held,
        // and a wait that used up the invocation is not a try.
        let _slot = match send.channel.slot(&ctx).await {
            Ok(slot) => slot,
            Err(e) => return temp(&e),
        };
        if !clock.fits_a_send(&deps.timing, Duration::ZERO) {
            let delay = deps.timing.defer;
            return defer(deps, m, clock, attempt, token, &tries, delay, None).await;
        }
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
            return fail(deps, attempt, token, error, &tries.new, Vec::new()).await;
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
            return fail(deps, attempt, token, error, &tries.new, Vec::new()).await;
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

pub(super) fn attempt_error(e: &DeliveryError) -> AttemptError {
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
pub(super) struct AttemptProgress<'a> {
    pub(super) attempts: &'a dyn AttemptStore,
    pub(super) id: &'a str,
    pub(super) token: &'a str,
    pub(super) saved: Mutex<BTreeMap<String, String>>,
    /// Set when saving found the lease taken by another copy of the message.
    pub(super) lost: AtomicBool,
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
