//! Recording how a send ended: each outcome is one transition written by
//! the lease holder, then its statistics, events, dead letter and the
//! target's failure streak.

use super::*;

pub(super) async fn delivered(
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
        recipients: receipt.recipients,
    };
    match apply_settling(deps, attempt, &deliver).await {
        Ok(Applied::Yes(done)) => {
            count_outcome(deps, &done, crate::metrics::Outcome::Delivered);
            if done.kind == AttemptKind::Delivery {
                super::super::record_settled(
                    super::super::StatsSink::Batch(&deps.stats_batch),
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
pub(super) async fn defer(
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
pub(super) async fn exhaust(
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
        recipients: Vec::new(),
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
pub(super) async fn give_up(
    deps: &Deps,
    m: &SqsMessage,
    clock: &Clock,
    failed: &DeliveryAttempt,
) -> Outcome {
    count_outcome(deps, failed, crate::metrics::Outcome::FailedExhausted);
    super::super::record_settled(
        super::super::StatsSink::Batch(&deps.stats_batch),
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
pub(super) async fn finish_dead_letter(
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
        receive_count: Some(super::super::receive_count(m)),
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
pub(super) async fn apply_settling(
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

pub(super) async fn fail(
    deps: &Deps,
    attempt: &DeliveryAttempt,
    token: &str,
    e: DeliveryError,
    new_tries: &[TryRecord],
    recipients: Vec<crate::domain::RecipientOutcome>,
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
        recipients,
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
                let run = super::super::record_settled(
                    super::super::StatsSink::Batch(&deps.stats_batch),
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
pub(super) async fn auto_disable(
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
pub(super) async fn stop_target(
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
