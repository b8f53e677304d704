//! Storage ports for targets, attempts, executions and connections, with the
//! DynamoDB adapter in [`dynamo`].

pub mod dynamo;

use crate::domain::execution::ReportExecution;
use crate::domain::{
    AttemptStatus, DeliveryAttempt, DeliveryTarget, ServiceConnection, TargetType, Timestamp,
    Transition,
};
use async_trait::async_trait;

/// A storage failure, classified: throttling, timeouts and server errors
/// are temporary; validation and access errors are permanent.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend failed, timed out or throttled; worth retrying.
    #[error("storage backend error: {0}")]
    Backend(String),
    /// The backend refused the request (validation, access denied, missing
    /// table). Retrying the same request will not help.
    #[error("storage refused the request ({code}): {reason}")]
    Refused { code: String, reason: String },
    /// A stored record or a cursor could not be read into the domain (e.g.
    /// an invalid target config). Retrying will not help.
    #[error("stored record {id} is invalid: {reason}")]
    Invalid { id: String, reason: String },
}

impl StoreError {
    /// Whether retrying could help.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Backend(_))
    }
}

/// Shards of the two sparse indexes: open attempts (keyed by their
/// execution's shard) and executions whose completion is not yet recorded
/// spread over this many partition keys, so no read or write makes one hot
/// partition.
pub const PENDING_SHARDS: u8 = 16;

/// Reads and decisions in a row that may lose a race for one attempt
/// before a write gives up (as a temporary error).
pub const MAX_RACES: usize = 8;

/// One page of a query, with the cursor for the next one.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Opaque; `None` when this was the last page.
    pub next: Option<String>,
}

/// An active target as fan-out needs it: id and channel only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetRef {
    pub id: String,
    pub target_type: TargetType,
}

/// The outcome of creating an attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum Created {
    /// The attempt is new.
    New(DeliveryAttempt),
    /// An attempt for the pair already existed; it is returned unchanged.
    Existing(DeliveryAttempt),
}

/// The outcome of a status transition.
#[derive(Debug, Clone, PartialEq)]
pub enum Applied {
    /// The write landed; the record after it.
    Yes(DeliveryAttempt),
    /// The condition refused it; the record as it is (`None` if missing).
    Refused(Option<DeliveryAttempt>),
}

/// What a settled attempt does to its target's runs of failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Streak {
    Delivered,
    Failed { permanent: bool },
}

/// Whose attempts to list.
#[derive(Debug, Clone, PartialEq)]
pub enum AttemptsOf {
    Target {
        id: String,
        since: Option<Timestamp>,
    },
    /// An execution's attempts, by target id; one target's when `target`
    /// is set.
    Execution {
        id: String,
        target: Option<String>,
        since: Option<Timestamp>,
    },
}

/// The outcome of a versioned write (optimistic concurrency).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Versioned {
    /// Written; the new version.
    Done(u64),
    /// No such record.
    Missing,
    /// The stored version is another one (someone changed it meanwhile).
    Conflict(u64),
}

/// Delivery statistics (see [`crate::domain::stats`]).
#[async_trait]
pub trait StatsStore: Send + Sync {
    /// Adds one settled attempt to its target's day, its report's hour and
    /// the service's hour.
    async fn record(&self, settled: &crate::domain::stats::Settled) -> Result<(), StoreError>;
    /// Adds several at once (an invocation's), with as few writes as the
    /// counters allow.
    async fn record_all(&self, all: &[crate::domain::stats::Settled]) -> Result<(), StoreError> {
        for settled in all {
            self.record(settled).await?;
        }
        Ok(())
    }
    /// Adds one email recipient's change of status to its target's day
    /// (and bounces and complaints to the service's hour) at `at`: the
    /// recipient's attempt's creation, so every change of one recipient
    /// lands on the same items.
    async fn record_recipient(
        &self,
        target_id: &str,
        at: Timestamp,
        delta: crate::domain::stats::RecipientDelta,
    ) -> Result<(), StoreError>;
    /// A target's counters per UTC day (`2026-11-27`), `from` to `to`.
    async fn target_days(
        &self,
        target_id: &str,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<(String, crate::domain::stats::Counters)>, StoreError>;
    /// A report's counters per UTC day, its shards summed.
    async fn report_days(
        &self,
        report_id: &str,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<(String, crate::domain::stats::Counters)>, StoreError>;
    /// The whole service's counters over the hours `from` to `to`.
    async fn service_hours(
        &self,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<crate::domain::stats::Counters, StoreError>;
}

/// Delivery targets.
#[async_trait]
pub trait TargetStore: Send + Sync {
    /// Creates or replaces a target (configs are validated before this).
    async fn put_target(&self, target: &DeliveryTarget) -> Result<(), StoreError>;
    /// Reads a target; an invalid stored config is [`StoreError::Invalid`].
    async fn get_target(&self, id: &str) -> Result<Option<DeliveryTarget>, StoreError>;
    /// Flags a target for disabling (a receiver said it is gone).
    async fn flag_for_disabling(
        &self,
        id: &str,
        reason: &str,
        at: Timestamp,
    ) -> Result<(), StoreError>;
    /// Active targets of a report, optionally of one type, a page at a time.
    async fn active_targets(
        &self,
        report_id: &str,
        target_type: Option<TargetType>,
        cursor: Option<String>,
        page_size: i32,
    ) -> Result<Page<TargetRef>, StoreError>;
    /// Whether the report has any target at all, active or not.
    async fn report_known(&self, report_id: &str) -> Result<bool, StoreError>;
    /// Creates a target at version 1; `false` when the id is taken.
    async fn create_target(&self, target: &DeliveryTarget) -> Result<bool, StoreError>;
    /// Replaces a target's operator-owned fields (report, config, formats,
    /// connection, active) when its version is `expected`, keeping the
    /// system-owned ones; `clear_flags` also clears `disable_requested` and
    /// the failure streak (re-enabling).
    async fn update_target(
        &self,
        target: &DeliveryTarget,
        expected: u64,
        clear_flags: bool,
    ) -> Result<Versioned, StoreError>;
    /// Deletes a target (when its version is `expected`, if given).
    async fn delete_target(&self, id: &str, expected: Option<u64>)
    -> Result<Versioned, StoreError>;
    /// Every target of a report, active or not.
    async fn targets_of_report(&self, report_id: &str) -> Result<Vec<DeliveryTarget>, StoreError>;
    /// Keeps a target's runs of failures: one more after a failure (and
    /// one more permanent one after a permanent failure; a temporary one
    /// ends that run), back to zero after a delivery. Returns the run of
    /// permanent failures.
    async fn record_streak(
        &self,
        id: &str,
        streak: Streak,
        at: Timestamp,
    ) -> Result<u32, StoreError>;
    /// Deactivates an active target, recording why (auto-disable); `false`
    /// when it was already inactive or is gone.
    async fn disable_target(
        &self,
        id: &str,
        target_type: TargetType,
        reason: &str,
        at: Timestamp,
    ) -> Result<bool, StoreError>;
}

/// Delivery attempts.
#[async_trait]
pub trait AttemptStore: Send + Sync {
    /// Creates the attempt unless one exists for its id.
    async fn create(&self, attempt: &DeliveryAttempt) -> Result<Created, StoreError>;
    /// Reads an attempt.
    async fn get(&self, id: &str) -> Result<Option<DeliveryAttempt>, StoreError>;
    /// Reads the attempt, decides the transition on it
    /// ([`Transition::decide`]) and writes the answer on condition that the
    /// record is still the one read; a lost race reads and decides again.
    async fn apply(&self, id: &str, transition: &Transition) -> Result<Applied, StoreError>;
    /// Applies a transition that reopens a settled attempt (an operator
    /// retry or redrive) and reopens its execution (back among the
    /// incomplete, `reopened` one more) in one atomic write, so no
    /// completion can record the execution complete between the two.
    async fn apply_reopening(
        &self,
        id: &str,
        transition: &Transition,
    ) -> Result<Applied, StoreError>;
    /// Like [`Self::apply`], deciding first on `seen`, the record as the
    /// caller last had it: when nothing changed since, the read is saved.
    async fn apply_from(
        &self,
        seen: &DeliveryAttempt,
        transition: &Transition,
    ) -> Result<Applied, StoreError> {
        self.apply(&seen.id, transition).await
    }
    /// Decides the transition on `seen` and writes the answer on condition
    /// that the record is still `seen`, once: the record after it only when
    /// this very write landed. `None` when the transition refuses `seen` or
    /// the condition refused the write (the record moved on, or a twin
    /// wrote the same answer first); no read and no second try. For callers
    /// whose side effects must follow their own write and no other.
    async fn apply_once(
        &self,
        seen: &DeliveryAttempt,
        transition: &Transition,
    ) -> Result<Option<DeliveryAttempt>, StoreError>;
    /// One page of the open attempts (not settled, or failed with their
    /// dead letter not yet confirmed) in one shard of the sparse `open`
    /// index, created before `created_before`; read back from the table.
    async fn open_page(
        &self,
        shard: u8,
        created_before: Timestamp,
        cursor: Option<String>,
        limit: i32,
    ) -> Result<Page<DeliveryAttempt>, StoreError>;
    /// Ids of up to `limit` open attempts of an execution, from the `open`
    /// index (eventually consistent: a write a moment ago may not show).
    async fn open_of_execution(
        &self,
        execution_id: &str,
        limit: i32,
    ) -> Result<Vec<String>, StoreError>;
    /// Attempts of a target, optionally in one status.
    async fn by_target(
        &self,
        target_id: &str,
        status: Option<AttemptStatus>,
    ) -> Result<Vec<DeliveryAttempt>, StoreError>;
    /// Attempts of an execution.
    async fn by_execution(&self, execution_id: &str) -> Result<Vec<DeliveryAttempt>, StoreError>;
    /// One page of a target's attempts (newest first, created at or after
    /// `since`) or of an execution's, by target id. `cursor` comes from the
    /// previous page; a page may hold fewer than `limit`.
    async fn attempts_page(
        &self,
        of: &AttemptsOf,
        cursor: Option<String>,
        limit: i32,
    ) -> Result<Page<DeliveryAttempt>, StoreError>;
}

/// Report executions.
#[async_trait]
pub trait ExecutionStore: Send + Sync {
    /// Records a rendered execution. A second render of the same execution
    /// keeps the first record and returns it.
    async fn put_rendered(
        &self,
        execution: &ReportExecution,
    ) -> Result<ReportExecution, StoreError>;
    /// Reads an execution.
    async fn get_execution(&self, id: &str) -> Result<Option<ReportExecution>, StoreError>;
    /// Records that fan-out finished with `target_count` attempts, with a
    /// note when there was nothing to deliver (e.g. `no_active_targets`).
    async fn mark_fanned_out(
        &self,
        id: &str,
        target_count: u64,
        note: Option<&str>,
        at: Timestamp,
    ) -> Result<(), StoreError>;
    /// Claims the sending of the execution's outcome event at revision
    /// `reopened` until `until` (the caller read the execution at that
    /// revision, then every attempt settled): `false` when it is recorded
    /// at this revision already, another run holds a live claim, it was
    /// reopened since, or it has not finished fanning out. A claim that
    /// runs out (its run died before [`Self::record_outcome`]) may be
    /// taken again.
    async fn claim_outcome(
        &self,
        id: &str,
        now: Timestamp,
        until: Timestamp,
        reopened: u64,
    ) -> Result<bool, StoreError>;
    /// Records the execution complete at revision `reopened` and takes it
    /// out of the incomplete index, in one conditional write: `false` when
    /// it was recorded at this revision before or reopened since.
    async fn record_outcome(
        &self,
        id: &str,
        at: Timestamp,
        reopened: u64,
    ) -> Result<bool, StoreError>;
    /// Ids of executions whose completion is not yet recorded, created
    /// before `created_before`, in one shard of the sparse incomplete
    /// index, oldest first. A rendered execution is in it from birth; the
    /// claim takes it out and a reopening puts it back.
    async fn unsettled(
        &self,
        shard: u8,
        created_before: Timestamp,
        cursor: Option<String>,
        page_size: i32,
    ) -> Result<Page<String>, StoreError>;
    /// When the oldest execution not yet complete was created (`None`:
    /// none).
    async fn oldest_unsettled(&self) -> Result<Option<Timestamp>, StoreError>;
}

/// Service connections (credentials).
#[async_trait]
pub trait ConnectionStore: Send + Sync {
    /// Creates or replaces a connection.
    async fn put_connection(&self, connection: &ServiceConnection) -> Result<(), StoreError>;
    /// Reads a connection.
    async fn get_connection(&self, id: &str) -> Result<Option<ServiceConnection>, StoreError>;
    /// Creates a connection; `false` when the id is taken.
    async fn create_connection(
        &self,
        connection: &ServiceConnection,
        at: Timestamp,
    ) -> Result<bool, StoreError>;
    /// Replaces a connection's secrets (and drops retiring ones); `false`
    /// when there is no such connection.
    async fn replace_connection(
        &self,
        connection: &ServiceConnection,
        at: Timestamp,
    ) -> Result<bool, StoreError>;
    /// Makes `secret` the signing secret and keeps the current ones valid
    /// until `grace_until` (webhook signing rotation); `false` when there is
    /// no such connection, it changed meanwhile, or more than
    /// [`MAX_RETIRING_SECRETS`](crate::domain::connection::MAX_RETIRING_SECRETS) would be retiring.
    async fn rotate_connection(
        &self,
        id: &str,
        secret: &str,
        grace_until: Timestamp,
        at: Timestamp,
    ) -> Result<bool, StoreError>;
    /// Deletes a connection; `false` when there was none.
    async fn delete_connection(&self, id: &str) -> Result<bool, StoreError>;
    /// What may be shown of a connection: never its secrets.
    async fn connection_info(&self, id: &str) -> Result<Option<ConnectionInfo>, StoreError>;
}

/// A connection as the API shows it: no secret, only how many.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ConnectionInfo {
    pub id: String,
    pub kind: String,
    /// Secrets in use (signing uses all of them).
    pub secrets: usize,
    /// When each retiring secret stops being used.
    pub retiring_until: Vec<Timestamp>,
    pub created_at: Option<Timestamp>,
    pub updated_at: Option<Timestamp>,
}

/// Shared per-destination rate limits (token buckets), so that concurrent
/// deliver instances together respect a provider's limit.
/// The email addresses each target no longer mails, and the runs of soft
/// bounces on the way there.
#[async_trait]
pub trait SuppressionStore: Send + Sync {
    /// Every suppressed address of a target (deliver reads them before
    /// each send).
    async fn suppressed(
        &self,
        target_id: &str,
    ) -> Result<Vec<crate::domain::suppression::Suppression>, StoreError>;
    /// A page of a target's suppressed addresses, for the API.
    async fn suppressions_page(
        &self,
        target_id: &str,
        cursor: Option<String>,
        limit: i32,
    ) -> Result<Page<crate::domain::suppression::Suppression>, StoreError>;
    /// One address's suppression, if it is suppressed.
    async fn suppression(
        &self,
        target_id: &str,
        address: &str,
    ) -> Result<Option<crate::domain::suppression::Suppression>, StoreError>;
    /// Suppresses an address; `false` when it already was (the first
    /// reason stays).
    async fn suppress(
        &self,
        s: &crate::domain::suppression::Suppression,
    ) -> Result<bool, StoreError>;
    /// Counts one soft bounce in a row, once per `message_id`, and
    /// suppresses the address as `s` says at `limit`; `true` when this one
    /// suppressed it.
    async fn count_soft_bounce(
        &self,
        s: &crate::domain::suppression::Suppression,
        message_id: &str,
        limit: u32,
    ) -> Result<bool, StoreError>;
    /// A delivery ends a run of soft bounces; a suppression stays.
    async fn reset_soft_bounces(&self, target_id: &str, address: &str) -> Result<(), StoreError>;
    /// Lifts a suppression; with `only`, only one of that reason (undoing
    /// an unsubscribe never lifts a bounce). `false` when there was none.
    async fn unsuppress(
        &self,
        target_id: &str,
        address: &str,
        only: Option<crate::domain::suppression::SuppressionReason>,
    ) -> Result<bool, StoreError>;
}

#[async_trait]
pub trait RateLimiter: Send + Sync {
    /// Reserves a send slot in the bucket `key`: `None` to go ahead now,
    /// or how long until the reserved slot (the caller sends then, without
    /// asking again).
    async fn reserve(
        &self,
        key: &str,
        limit: crate::domain::rate::RateLimit,
        now: Timestamp,
    ) -> Result<Option<std::time::Duration>, StoreError>;
}

impl From<crate::keys::KeyError> for StoreError {
    fn from(e: crate::keys::KeyError) -> Self {
        use crate::keys::KeyError;
        match e {
            KeyError::Unavailable(m) => StoreError::Backend(m),
            KeyError::Refused { code, reason } => StoreError::Refused { code, reason },
            KeyError::Corrupt(m) => StoreError::Invalid {
                id: "sealed secret".into(),
                reason: m,
            },
        }
    }
}
