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

impl AttemptError {
    /// Whether the failure says something about the target (and so counts
    /// in its failure streak). Failures of the execution or of this
    /// service (a missing execution or file, an unreadable record, a crash
    /// loop) do not.
    pub fn counts_against_target(&self) -> bool {
        !matches!(
            self.code.as_str(),
            "execution_not_found"
                | "no_files"
                | "invalid_record"
                | "store_refused"
                | "link_keys"
                | "crash_loop"
        )
    }
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
    /// Leases taken.
    #[serde(default)]
    pub begins: u32,
    /// Leases in a row that ended with no recorded outcome (their runs
    /// died); see [`super::transition`].
    #[serde(default)]
    pub crashed_leases: u32,
    /// The next try is not begun before this (a backoff or a deferral);
    /// `None` when it is due now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_try_at: Option<Timestamp>,
    /// When the reconciler last sent a new message for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requeued_at: Option<Timestamp>,
    /// Starts at 0; each operator retry begins a new episode. A dead letter
    /// belongs to the episode that requested it.
    #[serde(default)]
    pub episode: u32,
    /// Bumped by every write; the condition of the next one.
    #[serde(default)]
    pub version: u64,
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
    /// Email only: each recipient of the last send and the strongest news
    /// of it (see [`super::recipient`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recipients: Vec<super::recipient::RecipientOutcome>,
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
            crashed_leases: 0,
            next_try_at: None,
            requeued_at: None,
            episode: 0,
            version: 0,
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
            recipients: Vec::new(),
        }
    }

    /// Whether the attempt is finished (delivered or failed).
    pub fn is_settled(&self) -> bool {
        self.status.is_terminal()
    }

    /// Whether something is still to happen to the attempt: it is not
    /// settled, or its dead letter is not yet confirmed. Open attempts
    /// carry the sparse `open_shard` key, so the reconciler finds them.
    pub fn is_open(&self) -> bool {
        !self.is_settled() || self.dead_letter_pending()
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

    /// The end of a lease that is still live at `now`.
    pub fn live_lease(&self, now: Timestamp) -> Option<Timestamp> {
        (self.status == AttemptStatus::Processing)
            .then_some(self.lease_expires_at)
            .flatten()
            .filter(|until| *until >= now)
    }

    /// Leases in a row that ended with no outcome, counting the current
    /// one when it has expired at `now` (its run died).
    pub fn crashed_leases_at(&self, now: Timestamp) -> u32 {
        let expired = self.status == AttemptStatus::Processing && self.live_lease(now).is_none();
        self.crashed_leases.saturating_add(u32::from(expired))
    }

    /// The latest moment anything happened to it or is due: its last
    /// write, its next try, its lease's end, its last requeue.
    pub fn last_activity(&self) -> Timestamp {
        [self.next_try_at, self.lease_expires_at, self.requeued_at]
            .into_iter()
            .flatten()
            .fold(self.updated_at, Timestamp::max)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::TargetType;

    #[test]
    fn attempt_ids_are_deterministic_and_distinct_per_pair() {
        assert_eq!(attempt_id("e1", "t1"), attempt_id("e1", "t1"));
        assert_ne!(attempt_id("e1", "t1"), attempt_id("e1", "t2"));
        assert_ne!(attempt_id("e1", "t1"), attempt_id("e1t", "1"));
    }

    #[test]
    fn history_keeps_the_newest_tries_only() {
        let mut a =
            DeliveryAttempt::queued("e1", "r1", "t1", TargetType::Webhook, Timestamp::now());
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
}
