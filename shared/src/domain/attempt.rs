//! Delivery attempts: one per (execution, target), with a status machine in
//! which `delivered` is terminal.

use super::Timestamp;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use uuid::Uuid;

/// Namespace for deterministic attempt ids (UUID v5).
const ATTEMPT_NAMESPACE: Uuid = Uuid::from_u128(0x5d1e_7a8e_0b5c_4d2e_9f3a_61c4_7e2b_9a10);

/// The id of the attempt that delivers `execution_id` to `target_id`. The same
/// pair always gives the same id, so a duplicate fan-out cannot create a
/// second attempt.
pub fn attempt_id(execution_id: &str, target_id: &str) -> String {
    let name = format!("{}\u{1f}{}", execution_id, target_id);
    format!(
        "att_{}",
        Uuid::new_v5(&ATTEMPT_NAMESPACE, name.as_bytes()).simple()
    )
}

/// Where an attempt stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttemptStatus {
    /// Waiting for a deliver invocation (first time, after a backoff, or
    /// after a deferral).
    Queued,
    /// A deliver invocation holds the lease and is sending.
    Processing,
    /// Sent. Terminal.
    Delivered,
    /// Given up: a permanent error, or retries exhausted. Terminal for
    /// deliver; only an explicit operator transition may leave it.
    Failed,
}

impl AttemptStatus {
    /// Every status, for queries and tests.
    pub const ALL: [AttemptStatus; 4] = [
        AttemptStatus::Queued,
        AttemptStatus::Processing,
        AttemptStatus::Delivered,
        AttemptStatus::Failed,
    ];

    /// Parses the text form.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == s)
    }

    /// The stored text form.
    pub fn as_str(&self) -> &'static str {
        match self {
            AttemptStatus::Queued => "queued",
            AttemptStatus::Processing => "processing",
            AttemptStatus::Delivered => "delivered",
            AttemptStatus::Failed => "failed",
        }
    }

    /// True when no delivery transition may leave this status; a duplicate
    /// message for such an attempt is acknowledged and nothing is sent.
    pub fn is_terminal(&self) -> bool {
        matches!(self, AttemptStatus::Delivered | AttemptStatus::Failed)
    }
}

impl fmt::Display for AttemptStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether an error is worth retrying.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ErrorCategory {
    /// Rate limits, timeouts, 5xx, service unavailable.
    Temporary,
    /// Bad credentials, missing permissions, invalid payload or config.
    Permanent,
}

impl ErrorCategory {
    /// The text form.
    pub fn as_str(&self) -> &'static str {
        match self {
            ErrorCategory::Temporary => "temporary",
            ErrorCategory::Permanent => "permanent",
        }
    }
}

/// The last error recorded on an attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptError {
    /// Temporary or permanent.
    pub category: ErrorCategory,
    /// A short machine-readable code, e.g. `http_503` or `target_not_found`.
    pub code: String,
    /// A human-readable reason. Never contains secrets.
    pub message: String,
    /// When it happened.
    pub at: Timestamp,
}

/// Most tries kept in an attempt's history (the oldest are dropped; the
/// `tries` count keeps counting).
pub const HISTORY_LIMIT: usize = 20;

/// What followed one try.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TryNext {
    /// The send succeeded.
    Delivered,
    /// A permanent error: the attempt failed.
    Failed,
    /// Retried at once inside the same invocation (after `delay_ms`).
    ImmediateRetry,
    /// A backoff retry was scheduled `delay_ms` later.
    Backoff,
    /// The next try was put off without counting against the schedule
    /// (too close to the invocation's deadline).
    Deferred,
    /// The schedule was used up: failed and dead-lettered.
    Exhausted,
}

/// One send: when it started, how long it took, how it ended and what
/// followed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TryRecord {
    /// 1-based number of the try over the attempt's life.
    pub n: u32,
    pub at: Timestamp,
    pub ms: u64,
    /// The error code; `None` when the send succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    pub then: TryNext,
    /// The wait before the next try, for retries and deferrals.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
}

/// Dead-lettering of an attempt whose retries ran out: requested with the
/// failure, confirmed once the message is on the dead-letter queue. A
/// request without a confirmation is finished by the next copy of the
/// message or by the reconciler.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetterState {
    pub requested_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_at: Option<Timestamp>,
}

/// Why an attempt exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttemptKind {
    /// A report delivery (fan-out of a real execution).
    #[default]
    Delivery,
    /// An operator's test send (`POST /targets/{id}/test`): one try and the
    /// immediate retry, no backoff, no dead letter, and no statistics,
    /// failure streak or outcome events, so a test never changes a target.
    Test,
}

impl AttemptKind {
    /// `true` for the default, so records of deliveries do not carry it.
    pub fn is_delivery(&self) -> bool {
        *self == AttemptKind::Delivery
    }
}

/// One delivery of one execution to one target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeliveryAttempt {
    /// Deterministic, see [`attempt_id`].
    pub id: String,
    pub delivery_target_id: String,
    pub report_execution_id: String,
    pub report_id: String,
    /// The channel, copied from the target for reporting.
    pub target_type: super::TargetType,
    /// A delivery, or an operator's test send.
    #[serde(default, skip_serializing_if = "AttemptKind::is_delivery")]
    pub kind: AttemptKind,
    pub status: AttemptStatus,
    /// Channel results (e.g. a provider message id) and progress markers.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// Backoff retries scheduled so far.
    #[serde(default)]
    pub retry_count: u32,
    /// Sends that finished (with any outcome), the immediate retry included.
    #[serde(default)]
    pub tries: u32,
    /// Leases taken. More leases than finished invocations means runs died
    /// mid-way; the reconciler uses it to stop a crash loop.
    #[serde(default)]
    pub begins: u32,
    /// The last [`HISTORY_LIMIT`] tries, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<TryRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<AttemptError>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// When the current or last deliver invocation began.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivered_at: Option<Timestamp>,
    /// Set when the attempt fails for good.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_at: Option<Timestamp>,
    /// Set when retries ran out: the message goes to the dead-letter queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter: Option<DeadLetterState>,
    /// Token of the invocation that holds the processing lease.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_expires_at: Option<Timestamp>,
    /// A send slot reserved in the destination's rate limit; the next try
    /// sends at this time without reserving again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_slot: Option<Timestamp>,
    /// What operators did to it (the last [`HISTORY_LIMIT`]), oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub operator_actions: Vec<OperatorAction>,
}

/// One operator action on an attempt, with who asked and when.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OperatorAction {
    /// e.g. `retry`.
    pub action: String,
    /// The IAM principal of the request.
    pub by: String,
    pub at: Timestamp,
    /// Past the retry limit, on purpose.
    #[serde(default)]
    pub force: bool,
    /// The report was rendered again first (its file was gone).
    #[serde(default)]
    pub rerendered: bool,
}

impl DeliveryAttempt {
    /// A new queued attempt for the pair.
    pub fn queued(
        execution_id: &str,
        report_id: &str,
        target_id: &str,
        target_type: super::TargetType,
        now: Timestamp,
    ) -> Self {
        Self {
            id: attempt_id(execution_id, target_id),
            delivery_target_id: target_id.to_owned(),
            report_execution_id: execution_id.to_owned(),
            report_id: report_id.to_owned(),
            target_type,
            kind: AttemptKind::Delivery,
            status: AttemptStatus::Queued,
            metadata: BTreeMap::new(),
            retry_count: 0,
            tries: 0,
            begins: 0,
            history: Vec::new(),
            last_error: None,
            created_at: now,
            updated_at: now,
            started_at: None,
            delivered_at: None,
            failed_at: None,
            dead_letter: None,
            lease_token: None,
            lease_expires_at: None,
            rate_slot: None,
            operator_actions: Vec::new(),
        }
    }

    /// Whether the attempt is finished (delivered or failed).
    pub fn is_settled(&self) -> bool {
        self.status.is_terminal()
    }

    /// Whether the attempt failed by exhaustion and its dead letter is not
    /// yet confirmed on the queue.
    pub fn dead_letter_pending(&self) -> bool {
        self.status == AttemptStatus::Failed
            && self
                .dead_letter
                .as_ref()
                .is_some_and(|d| d.sent_at.is_none())
    }

    /// Milliseconds from creation to delivery, once delivered.
    pub fn delivery_millis(&self) -> Option<i64> {
        self.delivered_at.map(|d| d.millis_since(self.created_at))
    }

    /// The history with `new` tries appended, bounded to [`HISTORY_LIMIT`].
    pub fn history_with(&self, new: &[TryRecord]) -> Vec<TryRecord> {
        let mut all: Vec<TryRecord> = self.history.iter().chain(new).cloned().collect();
        let excess = all.len().saturating_sub(HISTORY_LIMIT);
        all.drain(..excess);
        all
    }
}

/// The tries one invocation adds, applied together with its final write.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TriesUpdate {
    /// The new total of finished sends.
    pub tries: u32,
    /// The whole bounded history after this invocation.
    pub history: Vec<TryRecord>,
}

/// A change of status. Each names the statuses it may start from; the store
/// turns that into a conditional write, so an illegal change never lands.
#[derive(Debug, Clone, PartialEq)]
pub enum Transition {
    /// Take the processing lease: from queued, or from processing whose
    /// lease has expired (a crashed run). The message's execution and
    /// target must be the attempt's. Never from a terminal status.
    Begin {
        token: String,
        now: Timestamp,
        lease_until: Timestamp,
        execution_id: String,
        target_id: String,
    },
    /// The send succeeded. Needs the lease.
    Deliver {
        token: String,
        now: Timestamp,
        metadata: BTreeMap<String, String>,
        tries: TriesUpdate,
    },
    /// A temporary failure with retries left: back to queued with one more
    /// backoff counted. Needs the lease.
    ScheduleRetry {
        token: String,
        error: AttemptError,
        tries: TriesUpdate,
    },
    /// Back to queued without counting a backoff: the next try was put off
    /// (near the invocation's deadline, or to a reserved `rate_slot` of the
    /// destination's rate limit). Needs the lease.
    Defer {
        token: String,
        now: Timestamp,
        tries: TriesUpdate,
        rate_slot: Option<Timestamp>,
    },
    /// Give up. With a token it needs the lease; without one it starts from
    /// queued or from processing whose lease has expired at `error.at` (the
    /// reconciler stops a crash loop). `dead_letter` asks for the message to
    /// be dead-lettered (retries exhausted).
    Fail {
        token: Option<String>,
        error: AttemptError,
        tries: Option<TriesUpdate>,
        dead_letter: bool,
    },
    /// Keep provider state (e.g. an uploaded file id) while still processing.
    Annotate {
        token: String,
        metadata: BTreeMap<String, String>,
    },
    /// The dead letter of an exhausted attempt is on its queue.
    ConfirmDeadLetter { now: Timestamp },
    /// An operator sends a failed attempt again (the spec's RetryJob): back
    /// to queued with a fresh retry schedule, the action recorded. Only
    /// from failed.
    OperatorRetry {
        action: OperatorAction,
        /// The bounded list of actions after this one.
        actions: Vec<OperatorAction>,
    },
}

impl Transition {
    /// The status after the change.
    pub fn to(&self) -> AttemptStatus {
        match self {
            Transition::Begin { .. } | Transition::Annotate { .. } => AttemptStatus::Processing,
            Transition::Deliver { .. } => AttemptStatus::Delivered,
            Transition::ScheduleRetry { .. }
            | Transition::Defer { .. }
            | Transition::OperatorRetry { .. } => AttemptStatus::Queued,
            Transition::Fail { .. } | Transition::ConfirmDeadLetter { .. } => AttemptStatus::Failed,
        }
    }

    /// The statuses the change may start from.
    pub fn allowed_from(&self) -> &'static [AttemptStatus] {
        use AttemptStatus::*;
        match self {
            Transition::Begin { .. } => &[Queued, Processing],
            Transition::Deliver { .. }
            | Transition::ScheduleRetry { .. }
            | Transition::Defer { .. }
            | Transition::Annotate { .. } => &[Processing],
            Transition::Fail { token: Some(_), .. } => &[Processing],
            Transition::Fail { token: None, .. } => &[Queued, Processing],
            Transition::ConfirmDeadLetter { .. } | Transition::OperatorRetry { .. } => &[Failed],
        }
    }

    /// Pure check of the whole rule against a current record, used by fakes
    /// and tests; the DynamoDB store enforces the same rule in its condition.
    pub fn permits(&self, current: &DeliveryAttempt) -> bool {
        if !self.allowed_from().contains(&current.status) {
            return false;
        }
        let holds = |token: &str| current.lease_token.as_deref() == Some(token);
        match self {
            Transition::Begin {
                now,
                execution_id,
                target_id,
                ..
            } => {
                current.report_execution_id == *execution_id
                    && current.delivery_target_id == *target_id
                    && (current.status != AttemptStatus::Processing
                        || current.lease_expires_at.is_none_or(|until| until < *now))
            }
            Transition::Deliver { token, .. }
            | Transition::ScheduleRetry { token, .. }
            | Transition::Defer { token, .. }
            | Transition::Annotate { token, .. } => holds(token),
            Transition::Fail {
                token: Some(token), ..
            } => holds(token),
            Transition::Fail {
                token: None, error, ..
            } => {
                current.status == AttemptStatus::Queued
                    || current
                        .lease_expires_at
                        .is_none_or(|until| until < error.at)
            }
            Transition::ConfirmDeadLetter { .. } => current.dead_letter_pending(),
            Transition::OperatorRetry { .. } => true,
        }
    }

    /// Applies the change to a record in memory (after [`Self::permits`]).
    pub fn apply(&self, a: &mut DeliveryAttempt) {
        a.status = self.to();
        let release = |a: &mut DeliveryAttempt| {
            a.lease_token = None;
            a.lease_expires_at = None;
        };
        let count = |a: &mut DeliveryAttempt, t: &TriesUpdate| {
            a.tries = t.tries;
            a.history = t.history.clone();
        };
        match self {
            Transition::Begin {
                token,
                now,
                lease_until,
                ..
            } => {
                a.lease_token = Some(token.clone());
                a.lease_expires_at = Some(*lease_until);
                a.started_at = Some(*now);
                a.updated_at = *now;
                a.begins += 1;
            }
            Transition::Deliver {
                now,
                metadata,
                tries,
                ..
            } => {
                a.delivered_at = Some(*now);
                a.updated_at = *now;
                a.metadata.extend(metadata.clone());
                count(a, tries);
                release(a);
                a.rate_slot = None;
            }
            Transition::ScheduleRetry { error, tries, .. } => {
                a.retry_count += 1;
                a.updated_at = error.at;
                a.last_error = Some(error.clone());
                count(a, tries);
                release(a);
                a.rate_slot = None;
            }
            Transition::Defer {
                now,
                tries,
                rate_slot,
                ..
            } => {
                a.updated_at = *now;
                count(a, tries);
                release(a);
                a.rate_slot = *rate_slot;
            }
            Transition::Fail {
                error,
                tries,
                dead_letter,
                ..
            } => {
                a.updated_at = error.at;
                a.failed_at = Some(error.at);
                a.last_error = Some(error.clone());
                if let Some(t) = tries {
                    count(a, t);
                }
                if *dead_letter {
                    a.dead_letter = Some(DeadLetterState {
                        requested_at: error.at,
                        sent_at: None,
                    });
                }
                release(a);
            }
            Transition::Annotate { metadata, .. } => {
                a.metadata.extend(metadata.clone());
            }
            Transition::ConfirmDeadLetter { now } => {
                if let Some(d) = a.dead_letter.as_mut() {
                    d.sent_at = Some(*now);
                }
                a.updated_at = *now;
            }
            Transition::OperatorRetry { action, actions } => {
                a.retry_count = 0;
                a.begins = 0;
                a.failed_at = None;
                a.dead_letter = None;
                a.rate_slot = None;
                a.updated_at = action.at;
                a.operator_actions = actions.clone();
                release(a);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::TargetType;

    fn attempt(status: AttemptStatus) -> DeliveryAttempt {
        let now = Timestamp::now();
        let mut a = DeliveryAttempt::queued("e1", "r1", "t1", TargetType::Webhook, now);
        a.status = status;
        if status == AttemptStatus::Processing {
            a.lease_token = Some("tok".into());
            a.lease_expires_at = Some(now.plus(time::Duration::minutes(5)));
        }
        a
    }

    fn err() -> AttemptError {
        AttemptError {
            category: ErrorCategory::Temporary,
            code: "http_503".into(),
            message: "service unavailable".into(),
            at: Timestamp::now(),
        }
    }

    fn begin(token: &str, now: Timestamp) -> Transition {
        Transition::Begin {
            token: token.into(),
            now,
            lease_until: now.plus(time::Duration::minutes(1)),
            execution_id: "e1".into(),
            target_id: "t1".into(),
        }
    }

    fn every_delivery_transition(now: Timestamp) -> Vec<Transition> {
        vec![
            begin("x", now),
            Transition::Deliver {
                token: "tok".into(),
                now,
                metadata: BTreeMap::new(),
                tries: TriesUpdate::default(),
            },
            Transition::ScheduleRetry {
                token: "tok".into(),
                error: err(),
                tries: TriesUpdate::default(),
            },
            Transition::Defer {
                token: "tok".into(),
                now,
                tries: TriesUpdate::default(),
                rate_slot: None,
            },
            Transition::Fail {
                token: None,
                error: err(),
                tries: None,
                dead_letter: false,
            },
            Transition::Fail {
                token: Some("tok".into()),
                error: err(),
                tries: None,
                dead_letter: true,
            },
        ]
    }

    #[test]
    fn attempt_ids_are_deterministic_and_distinct_per_pair() {
        assert_eq!(attempt_id("e1", "t1"), attempt_id("e1", "t1"));
        assert_ne!(attempt_id("e1", "t1"), attempt_id("e1", "t2"));
        assert_ne!(attempt_id("e1", "t1"), attempt_id("e1t", "1"));
    }

    #[test]
    fn delivered_and_failed_are_terminal_for_every_delivery_transition() {
        for status in [AttemptStatus::Delivered, AttemptStatus::Failed] {
            let mut a = attempt(status);
            a.lease_token = Some("tok".into());
            for t in every_delivery_transition(Timestamp::now()) {
                assert!(!t.permits(&a), "{t:?} must not leave {status}");
            }
        }
    }

    #[test]
    fn a_live_lease_blocks_a_second_begin_but_an_expired_one_does_not() {
        let a = attempt(AttemptStatus::Processing);
        let now = Timestamp::now();
        assert!(!begin("other", now).permits(&a));
        assert!(begin("other", now.plus(time::Duration::minutes(6))).permits(&a));
    }

    #[test]
    fn begin_refuses_a_message_whose_pair_is_not_the_attempts() {
        let a = attempt(AttemptStatus::Queued);
        let now = Timestamp::now();
        let mut wrong = begin("x", now);
        if let Transition::Begin { target_id, .. } = &mut wrong {
            *target_id = "t2".into();
        }
        assert!(!wrong.permits(&a));
        assert!(begin("x", now).permits(&a));
    }

    #[test]
    fn only_the_lease_holder_may_finish() {
        let a = attempt(AttemptStatus::Processing);
        let deliver = |token: &str| Transition::Deliver {
            token: token.into(),
            now: Timestamp::now(),
            metadata: BTreeMap::new(),
            tries: TriesUpdate::default(),
        };
        assert!(deliver("tok").permits(&a));
        assert!(!deliver("stale").permits(&a));
    }

    #[test]
    fn schedule_retry_counts_a_backoff_but_a_deferral_does_not() {
        let mut a = attempt(AttemptStatus::Processing);
        let record = TryRecord {
            n: 1,
            at: Timestamp::now(),
            ms: 12,
            code: Some("http_503".into()),
            then: TryNext::Backoff,
            delay_ms: Some(300_000),
        };
        let t = Transition::ScheduleRetry {
            token: "tok".into(),
            error: err(),
            tries: TriesUpdate {
                tries: 1,
                history: a.history_with(std::slice::from_ref(&record)),
            },
        };
        assert!(t.permits(&a));
        t.apply(&mut a);
        assert_eq!(a.status, AttemptStatus::Queued);
        assert_eq!((a.retry_count, a.tries), (1, 1));
        assert_eq!(a.history, [record]);
        assert_eq!(
            a.last_error.as_ref().map(|e| e.code.as_str()),
            Some("http_503")
        );
        assert!(a.lease_token.is_none());

        let now = Timestamp::now();
        begin("tok2", now).apply(&mut a);
        let defer = Transition::Defer {
            token: "tok2".into(),
            now,
            tries: TriesUpdate {
                tries: 1,
                history: a.history.clone(),
            },
            rate_slot: Some(now),
        };
        assert!(defer.permits(&a));
        defer.apply(&mut a);
        assert_eq!(
            (a.status, a.retry_count, a.begins),
            (AttemptStatus::Queued, 1, 1)
        );
    }

    #[test]
    fn history_keeps_the_newest_tries_only() {
        let mut a = attempt(AttemptStatus::Queued);
        let tries: Vec<TryRecord> = (1..=HISTORY_LIMIT as u32 + 5)
            .map(|n| TryRecord {
                n,
                at: Timestamp::now(),
                ms: 1,
                code: None,
                then: TryNext::Deferred,
                delay_ms: None,
            })
            .collect();
        a.history = a.history_with(&tries);
        assert_eq!(a.history.len(), HISTORY_LIMIT);
        assert_eq!(a.history.first().map(|t| t.n), Some(6));
        assert_eq!(
            a.history.last().map(|t| t.n),
            Some(HISTORY_LIMIT as u32 + 5)
        );
    }

    #[test]
    fn an_exhausted_failure_asks_for_a_dead_letter_until_it_is_confirmed() {
        let mut a = attempt(AttemptStatus::Processing);
        let confirm = Transition::ConfirmDeadLetter {
            now: Timestamp::now(),
        };
        let fail = Transition::Fail {
            token: Some("tok".into()),
            error: err(),
            tries: None,
            dead_letter: true,
        };
        assert!(fail.permits(&a));
        fail.apply(&mut a);
        assert!(a.dead_letter_pending());
        assert!(confirm.permits(&a));
        confirm.apply(&mut a);
        assert!(!a.dead_letter_pending());
        assert!(!confirm.permits(&a), "confirmed once");
        assert_eq!(a.status, AttemptStatus::Failed);
    }

    #[test]
    fn queued_cannot_be_delivered_without_a_lease() {
        let a = attempt(AttemptStatus::Queued);
        let t = Transition::Deliver {
            token: "tok".into(),
            now: Timestamp::now(),
            metadata: BTreeMap::new(),
            tries: TriesUpdate::default(),
        };
        assert!(!t.permits(&a));
    }
}
