//! The lease: what a refused `Begin` means for the message (the
//! transition rule's reason decides), and stopping a crash loop.

use super::*;

/// The lease was refused: the transition rule says why, and the message
/// follows. It is acknowledged only when the attempt is terminal; an early
/// or second copy hides until the record says the next try is due.
pub(super) async fn not_begun(
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
                deps.outcome_batch.touch(&current);
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
            // The run that settled it may have died before its flush.
            deps.outcome_batch.touch(&current);
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
        Refusal::NotHolder
        | Refusal::NotApplicable
        | Refusal::NoSuchLetter
        | Refusal::NoSuchRecipient
        | Refusal::AlreadyKnown => {
            hide(deps, m, Duration::from_secs(1), clock).await;
            Outcome::Retry {
                reason: "the attempt changed while taking the lease".into(),
            }
        }
    }
}

/// Leases keep ending with no outcome (deliver dies on this attempt): fail
/// it as `crash_loop` and dead-letter it, instead of dying again.
pub(super) async fn stop_crash_loop(
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
