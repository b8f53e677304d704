//! The one rule for changing an attempt record.
//!
//! Every writer (deliver, the reconciler, the API's retry, the redrive, a
//! test send) names the change it wants as a [`Transition`]. The pure
//! [`Transition::decide`] reads the record as it is and answers with the
//! whole record after the change, or a [`Refusal`] with its reason. A store
//! writes that answer with one conditional write whose condition is the
//! `version` the decision was made from, so a decision taken on a stale
//! record never lands: the store reads again and decides again.
//!
//! The promises, each kept here and nowhere else:
//! * **One send in flight.** `Begin` takes a lease that only its holder's
//!   writes may end; a live lease refuses every other `Begin`.
//! * **Backoff is a fact on the record.** A backoff or a deferral sets
//!   `next_try_at`, and `Begin` refuses before it, whatever message asks.
//! * **Terminal is terminal.** Nothing leaves `delivered`; only an
//!   operator's retry leaves `failed`, and it starts a new `episode`.
//! * **A crash loop ends.** A `Begin` over an expired lease counts a lease
//!   that ended with no outcome (`crashed_leases`); at the limit, `Begin`
//!   refuses and only [`Transition::StopCrashLoop`] may follow.
//! * **News of a recipient changes only that recipient.** SES feedback
//!   ([`Transition::Feedback`]) lands in any status, and leaves the status,
//!   lease, schedule and letter as they are; see [`super::recipient`].
//! * **One dead letter per exhausted episode.** Exhaustion and a stopped
//!   crash loop request the letter; `ConfirmDeadLetter` confirms it once,
//!   for the episode that requested it.

use super::Timestamp;
use super::attempt::{
    AttemptError, AttemptStatus, DeadLetterState, DeliveryAttempt, OperatorAction, TriesUpdate,
};
use super::recipient::{Feedback, Ignored, RecipientOutcome};
use std::collections::BTreeMap;

/// A change to an attempt record, as a writer asks for it.
#[derive(Debug, Clone, PartialEq)]
pub enum Transition {
    /// Take the processing lease: from `queued` once its next try is due,
    /// or from `processing` whose lease has expired (its run died). The
    /// message's execution and target must be the attempt's.
    Begin {
        token: String,
        now: Timestamp,
        lease_until: Timestamp,
        execution_id: String,
        target_id: String,
        /// Leases in a row that may end with no outcome before the attempt
        /// counts as a crash loop.
        crash_limit: u32,
    },
    /// The send succeeded. Needs the lease. `recipients` (email) replaces
    /// the record's when not empty.
    Deliver {
        token: String,
        now: Timestamp,
        metadata: BTreeMap<String, String>,
        tries: TriesUpdate,
        recipients: Vec<RecipientOutcome>,
    },
    /// A temporary failure with retries left: back to `queued` with one
    /// more backoff counted, not to be begun before `next_try_at`. Needs
    /// the lease.
    ScheduleRetry {
        token: String,
        error: AttemptError,
        tries: TriesUpdate,
        next_try_at: Timestamp,
    },
    /// Back to `queued` without counting a backoff, not to be begun before
    /// `next_try_at` (near the invocation's deadline, or a reserved
    /// `rate_slot` of the destination's rate limit). Needs the lease.
    Defer {
        token: String,
        now: Timestamp,
        tries: TriesUpdate,
        next_try_at: Timestamp,
        rate_slot: Option<Timestamp>,
    },
    /// Give up. With a token it needs the lease; without one only a
    /// `queued` attempt may be given up (a test send whose message never
    /// left). `dead_letter` requests a dead letter (retries exhausted).
    /// `recipients` (email) replaces the record's when not empty.
    Fail {
        token: Option<String>,
        error: AttemptError,
        tries: Option<TriesUpdate>,
        dead_letter: bool,
        recipients: Vec<RecipientOutcome>,
    },
    /// Fail an attempt whose leases keep ending with no outcome, and
    /// request its dead letter. Only once `crash_limit` is reached.
    StopCrashLoop {
        error: AttemptError,
        crash_limit: u32,
    },
    /// Keep provider state (e.g. an uploaded file id) while still
    /// processing. Needs the lease.
    Annotate {
        token: String,
        metadata: BTreeMap<String, String>,
    },
    /// The reconciler sends a new message for an attempt that has been
    /// quiet since `quiet_since` (its message is presumed lost), or at once
    /// with `None` (its message is known to be off its queue). Recorded, so
    /// the next pass waits again before sending another.
    Requeue {
        now: Timestamp,
        quiet_since: Option<Timestamp>,
    },
    /// The dead letter that `episode` requested is on its queue.
    ConfirmDeadLetter { now: Timestamp, episode: u32 },
    /// SES news of one recipient of a sent message. Lands in any status
    /// when the record sent that message to that address and does not
    /// already know as much.
    Feedback(Feedback),
    /// An operator sends a failed attempt again (the spec's RetryJob): back
    /// to `queued`, due now, with a fresh schedule and a new episode (the
    /// old episode's dead letter, if any, is no longer the record's).
    OperatorRetry {
        action: OperatorAction,
        /// The bounded list of actions after this one.
        actions: Vec<OperatorAction>,
    },
}

/// Why a transition was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Delivered or failed: nothing but an operator's retry may follow.
    Terminal,
    /// The message's execution or target is not the attempt's.
    WrongPair,
    /// Another run holds a live lease until then.
    LeaseHeld { until: Timestamp },
    /// The next try is not due before then.
    NotYet { due: Timestamp },
    /// This many leases in a row ended with no outcome.
    CrashLoop { leases: u32 },
    /// The caller does not hold the lease (it was taken over, or the
    /// attempt moved on).
    NotHolder,
    /// The attempt is not in a status this change starts from, or was not
    /// quiet for long enough.
    NotApplicable,
    /// The dead letter belongs to another episode, or is not pending.
    NoSuchLetter,
    /// Feedback about a message and address the record did not send.
    NoSuchRecipient,
    /// Feedback the record already knows as much as (a copy, or an event
    /// out of order).
    AlreadyKnown,
}

impl Transition {
    /// The one rule: the record after this change, or why not. Pure; the
    /// answer's `version` is one more than `current`'s.
    pub fn decide(&self, current: &DeliveryAttempt) -> Result<DeliveryAttempt, Refusal> {
        use AttemptStatus::*;
        let mut a = current.clone();
        let holds = |token: &str| -> Result<(), Refusal> {
            if current.status == Processing && current.lease_token.as_deref() == Some(token) {
                Ok(())
            } else if current.status.is_terminal() {
                Err(Refusal::Terminal)
            } else {
                Err(Refusal::NotHolder)
            }
        };
        match self {
            Transition::Begin {
                token,
                now,
                lease_until,
                execution_id,
                target_id,
                crash_limit,
            } => {
                if current.report_execution_id != *execution_id
                    || current.delivery_target_id != *target_id
                {
                    return Err(Refusal::WrongPair);
                }
                match current.status {
                    Delivered | Failed => return Err(Refusal::Terminal),
                    Processing => {
                        if let Some(until) = current.lease_expires_at.filter(|u| u >= now) {
                            return Err(Refusal::LeaseHeld { until });
                        }
                    }
                    Queued => {
                        if let Some(due) = current.next_try_at.filter(|d| d > now) {
                            return Err(Refusal::NotYet { due });
                        }
                    }
                }
                let crashed = current.crashed_leases_at(*now);
                if crashed >= *crash_limit {
                    return Err(Refusal::CrashLoop { leases: crashed });
                }
                a.status = Processing;
                a.lease_token = Some(token.clone());
                a.lease_expires_at = Some(*lease_until);
                a.started_at = Some(*now);
                a.updated_at = *now;
                a.begins = a.begins.saturating_add(1);
                a.crashed_leases = crashed;
            }
            Transition::Deliver {
                token,
                now,
                metadata,
                tries,
                recipients,
            } => {
                holds(token)?;
                a.status = Delivered;
                a.delivered_at = Some(*now);
                a.updated_at = *now;
                a.metadata.extend(metadata.clone());
                if !recipients.is_empty() {
                    a.recipients = recipients.clone();
                }
                a.rate_slot = None;
                outcome_recorded(&mut a, Some(tries));
            }
            Transition::ScheduleRetry {
                token,
                error,
                tries,
                next_try_at,
            } => {
                holds(token)?;
                a.status = Queued;
                a.retry_count = a.retry_count.saturating_add(1);
                a.updated_at = error.at;
                a.last_error = Some(error.clone());
                a.next_try_at = Some(*next_try_at);
                a.rate_slot = None;
                outcome_recorded(&mut a, Some(tries));
            }
            Transition::Defer {
                token,
                now,
                tries,
                next_try_at,
                rate_slot,
            } => {
                holds(token)?;
                a.status = Queued;
                a.updated_at = *now;
                a.next_try_at = Some(*next_try_at);
                a.rate_slot = *rate_slot;
                outcome_recorded(&mut a, Some(tries));
            }
            Transition::Fail {
                token,
                error,
                tries,
                dead_letter,
                recipients,
            } => {
                match token {
                    Some(token) => holds(token)?,
                    None if current.status == Queued => {}
                    None if current.status.is_terminal() => return Err(Refusal::Terminal),
                    None => return Err(Refusal::NotApplicable),
                }
                fail(&mut a, error, *dead_letter);
                outcome_recorded(&mut a, tries.as_ref());
                if !recipients.is_empty() {
                    a.recipients = recipients.clone();
                }
            }
            Transition::StopCrashLoop { error, crash_limit } => {
                if current.status.is_terminal() {
                    return Err(Refusal::Terminal);
                }
                if let Some(until) = current.live_lease(error.at) {
                    return Err(Refusal::LeaseHeld { until });
                }
                let crashed = current.crashed_leases_at(error.at);
                if crashed < *crash_limit {
                    return Err(Refusal::NotApplicable);
                }
                a.crashed_leases = crashed;
                fail(&mut a, error, true);
                a.lease_token = None;
                a.lease_expires_at = None;
            }
            Transition::Annotate { token, metadata } => {
                holds(token)?;
                a.metadata.extend(metadata.clone());
            }
            Transition::Requeue { now, quiet_since } => {
                if current.status.is_terminal() {
                    return Err(Refusal::Terminal);
                }
                if let Some(until) = current.live_lease(*now) {
                    return Err(Refusal::LeaseHeld { until });
                }
                if quiet_since.is_some_and(|quiet| current.last_activity() > quiet) {
                    return Err(Refusal::NotApplicable);
                }
                a.requeued_at = Some(*now);
            }
            Transition::ConfirmDeadLetter { now, episode } => {
                if !current.dead_letter_pending() || current.episode != *episode {
                    return Err(Refusal::NoSuchLetter);
                }
                if let Some(d) = a.dead_letter.as_mut() {
                    d.sent_at = Some(*now);
                }
                a.updated_at = *now;
            }
            Transition::Feedback(news) => {
                a.recipients = news.apply(&current.recipients).map_err(|e| match e {
                    Ignored::NoSuchRecipient => Refusal::NoSuchRecipient,
                    Ignored::AlreadyKnown => Refusal::AlreadyKnown,
                })?;
            }
            Transition::OperatorRetry { action, actions } => {
                if current.status != Failed {
                    return Err(Refusal::NotApplicable);
                }
                a.status = Queued;
                a.episode = a.episode.saturating_add(1);
                a.retry_count = 0;
                a.begins = 0;
                a.crashed_leases = 0;
                a.next_try_at = None;
                a.requeued_at = None;
                a.failed_at = None;
                a.dead_letter = None;
                a.rate_slot = None;
                a.lease_token = None;
                a.lease_expires_at = None;
                a.updated_at = action.at;
                a.operator_actions = actions.clone();
            }
        }
        a.version = current.version.saturating_add(1);
        Ok(a)
    }

    /// Whether the change would land on `current` (see [`Self::decide`]).
    pub fn permits(&self, current: &DeliveryAttempt) -> bool {
        self.decide(current).is_ok()
    }
}

/// The error recorded when a crash loop is stopped at `at`.
pub fn crash_loop_error(a: &DeliveryAttempt, leases: u32, at: Timestamp) -> AttemptError {
    AttemptError {
        category: super::ErrorCategory::Temporary,
        code: "crash_loop".into(),
        message: format!(
            "{leases} leases in a row ended with no outcome (deliver died each time); last error: {}",
            a.last_error
                .as_ref()
                .map_or("none".to_owned(), |e| format!("{}: {}", e.code, e.message))
        )
        .chars()
        .take(1000)
        .collect(),
        at,
    }
}

/// The lease holder recorded an outcome: the lease ends, the crash streak
/// is broken, and its tries are kept.
fn outcome_recorded(a: &mut DeliveryAttempt, tries: Option<&TriesUpdate>) {
    a.lease_token = None;
    a.lease_expires_at = None;
    a.crashed_leases = 0;
    if let Some(t) = tries {
        a.tries = t.tries;
        a.history = t.history.clone();
    }
}

fn fail(a: &mut DeliveryAttempt, error: &AttemptError, dead_letter: bool) {
    a.status = AttemptStatus::Failed;
    a.updated_at = error.at;
    a.failed_at = Some(error.at);
    a.last_error = Some(error.clone());
    if dead_letter {
        a.dead_letter = Some(DeadLetterState {
            requested_at: error.at,
            sent_at: None,
        });
    }
}

#[cfg(test)]
mod tests;
