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
    /// Waiting for a deliver invocation (first time or after a backoff).
    Queued,
    /// A deliver invocation holds the lease and is sending.
    Processing,
    /// Sent. Terminal.
    Delivered,
    /// Given up: a permanent error, or retries exhausted.
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

    /// The stored text form.
    pub fn as_str(&self) -> &'static str {
        match self {
            AttemptStatus::Queued => "queued",
            AttemptStatus::Processing => "processing",
            AttemptStatus::Delivered => "delivered",
            AttemptStatus::Failed => "failed",
        }
    }

    /// True when no transition may leave this status.
    pub fn is_terminal(&self) -> bool {
        matches!(self, AttemptStatus::Delivered)
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
    pub status: AttemptStatus,
    /// Channel results (e.g. a provider message id) and progress markers.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// Backoff retries scheduled so far.
    #[serde(default)]
    pub retry_count: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<AttemptError>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// When the delivery message was handed to SQS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enqueued_at: Option<Timestamp>,
    /// When the current or last deliver invocation began.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivered_at: Option<Timestamp>,
    /// Set when the attempt fails for good.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_at: Option<Timestamp>,
    /// Token of the invocation that holds the processing lease.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_expires_at: Option<Timestamp>,
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
            status: AttemptStatus::Queued,
            metadata: BTreeMap::new(),
            retry_count: 0,
            last_error: None,
            created_at: now,
            updated_at: now,
            enqueued_at: None,
            started_at: None,
            delivered_at: None,
            failed_at: None,
            lease_token: None,
            lease_expires_at: None,
        }
    }

    /// Whether the attempt is finished (delivered or failed).
    pub fn is_settled(&self) -> bool {
        matches!(
            self.status,
            AttemptStatus::Delivered | AttemptStatus::Failed
        )
    }

    /// Milliseconds from creation to delivery, once delivered.
    pub fn delivery_millis(&self) -> Option<i64> {
        self.delivered_at.map(|d| d.millis_since(self.created_at))
    }
}

/// A change of status. Each names the statuses it may start from; the store
/// turns that into a conditional write, so an illegal change never lands.
#[derive(Debug, Clone, PartialEq)]
pub enum Transition {
    /// Take the processing lease: from queued, from failed (an operator's
    /// redrive), or from processing whose lease has expired (a crashed run).
    Begin {
        token: String,
        now: Timestamp,
        lease_until: Timestamp,
    },
    /// The send succeeded. Needs the lease.
    Deliver {
        token: String,
        now: Timestamp,
        metadata: BTreeMap<String, String>,
    },
    /// A temporary failure with retries left: back to queued. Needs the lease.
    ScheduleRetry { token: String, error: AttemptError },
    /// Give up. From processing it needs the lease; from queued it does not
    /// (e.g. the target vanished before a lease was taken).
    Fail {
        token: Option<String>,
        error: AttemptError,
    },
    /// Keep provider state (e.g. an uploaded file id) while still processing.
    Annotate {
        token: String,
        metadata: BTreeMap<String, String>,
    },
}

impl Transition {
    /// The status after the change.
    pub fn to(&self) -> AttemptStatus {
        match self {
            Transition::Begin { .. } | Transition::Annotate { .. } => AttemptStatus::Processing,
            Transition::Deliver { .. } => AttemptStatus::Delivered,
            Transition::ScheduleRetry { .. } => AttemptStatus::Queued,
            Transition::Fail { .. } => AttemptStatus::Failed,
        }
    }

    /// The statuses the change may start from.
    pub fn allowed_from(&self) -> &'static [AttemptStatus] {
        use AttemptStatus::*;
        match self {
            Transition::Begin { .. } => &[Queued, Processing, Failed],
            Transition::Deliver { .. }
            | Transition::ScheduleRetry { .. }
            | Transition::Annotate { .. } => &[Processing],
            Transition::Fail { token: Some(_), .. } => &[Processing],
            Transition::Fail { token: None, .. } => &[Queued],
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
            Transition::Begin { now, .. } => {
                current.status != AttemptStatus::Processing
                    || current.lease_expires_at.is_none_or(|until| until < *now)
            }
            Transition::Deliver { token, .. }
            | Transition::ScheduleRetry { token, .. }
            | Transition::Annotate { token, .. } => holds(token),
            Transition::Fail { token, .. } => token.as_deref().is_none_or(holds),
        }
    }

    /// Applies the change to a record in memory (after [`Self::permits`]).
    pub fn apply(&self, a: &mut DeliveryAttempt) {
        a.status = self.to();
        match self {
            Transition::Begin {
                token,
                now,
                lease_until,
            } => {
                a.lease_token = Some(token.clone());
                a.lease_expires_at = Some(*lease_until);
                a.started_at = Some(*now);
                a.updated_at = *now;
            }
            Transition::Deliver { now, metadata, .. } => {
                a.delivered_at = Some(*now);
                a.updated_at = *now;
                a.metadata.extend(metadata.clone());
                a.lease_token = None;
                a.lease_expires_at = None;
            }
            Transition::ScheduleRetry { error, .. } => {
                a.retry_count += 1;
                a.updated_at = error.at;
                a.last_error = Some(error.clone());
                a.lease_token = None;
                a.lease_expires_at = None;
            }
            Transition::Fail { error, .. } => {
                a.updated_at = error.at;
                a.failed_at = Some(error.at);
                a.last_error = Some(error.clone());
                a.lease_token = None;
                a.lease_expires_at = None;
            }
            Transition::Annotate { metadata, .. } => {
                a.metadata.extend(metadata.clone());
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

    #[test]
    fn attempt_ids_are_deterministic_and_distinct_per_pair() {
        assert_eq!(attempt_id("e1", "t1"), attempt_id("e1", "t1"));
        assert_ne!(attempt_id("e1", "t1"), attempt_id("e1", "t2"));
        assert_ne!(attempt_id("e1", "t1"), attempt_id("e1t", "1"));
    }

    #[test]
    fn delivered_is_terminal_for_every_transition() {
        let a = attempt(AttemptStatus::Delivered);
        let now = Timestamp::now();
        let all = [
            Transition::Begin {
                token: "x".into(),
                now,
                lease_until: now,
            },
            Transition::Deliver {
                token: "tok".into(),
                now,
                metadata: BTreeMap::new(),
            },
            Transition::ScheduleRetry {
                token: "tok".into(),
                error: err(),
            },
            Transition::Fail {
                token: None,
                error: err(),
            },
            Transition::Fail {
                token: Some("tok".into()),
                error: err(),
            },
        ];
        for t in all {
            assert!(!t.permits(&a), "{t:?} must not leave delivered");
        }
    }

    #[test]
    fn a_live_lease_blocks_a_second_begin_but_an_expired_one_does_not() {
        let a = attempt(AttemptStatus::Processing);
        let now = Timestamp::now();
        let begin = |now| Transition::Begin {
            token: "other".into(),
            now,
            lease_until: now,
        };
        assert!(!begin(now).permits(&a));
        assert!(begin(now.plus(time::Duration::minutes(6))).permits(&a));
    }

    #[test]
    fn only_the_lease_holder_may_finish() {
        let a = attempt(AttemptStatus::Processing);
        let deliver = |token: &str| Transition::Deliver {
            token: token.into(),
            now: Timestamp::now(),
            metadata: BTreeMap::new(),
        };
        assert!(deliver("tok").permits(&a));
        assert!(!deliver("stale").permits(&a));
    }

    #[test]
    fn schedule_retry_counts_and_records_the_error() {
        let mut a = attempt(AttemptStatus::Processing);
        let t = Transition::ScheduleRetry {
            token: "tok".into(),
            error: err(),
        };
        assert!(t.permits(&a));
        t.apply(&mut a);
        assert_eq!(a.status, AttemptStatus::Queued);
        assert_eq!(a.retry_count, 1);
        assert_eq!(
            a.last_error.as_ref().map(|e| e.code.as_str()),
            Some("http_503")
        );
        assert!(a.lease_token.is_none());
    }

    #[test]
    fn queued_cannot_be_delivered_without_a_lease() {
        let a = attempt(AttemptStatus::Queued);
        let t = Transition::Deliver {
            token: "tok".into(),
            now: Timestamp::now(),
            metadata: BTreeMap::new(),
        };
        assert!(!t.permits(&a));
    }
}
