//! reconcile: a scheduled sweep that makes sure no attempt is left behind.
//!
//! * It reads the sparse `open` index of attempts (spread over
//!   [`PENDING_SHARDS`] partitions, so it never reads one hot partition)
//!   and re-enqueues attempts that sat `queued` or `processing` for too
//!   long without a message (e.g. a fan-out dead-lettered after writing its
//!   attempts), fails crash loops with a reason, and finishes dead letters
//!   whose confirmation was lost. Each run starts at another shard.
//! * It reads the sparse index of executions whose completion is not yet
//!   recorded and completes the ones with no open attempt left (a run died
//!   before its check, or two runs each saw the other's attempt open).
//! * It reads the delivery dead-letter queue for messages that the queue's
//!   safety net (`maxReceiveCount`) moved there without a reason: their
//!   attempts are re-enqueued or failed, and the stray copies removed, so
//!   the dead-letter queue holds exactly the attempts the code dead-lettered.
//!
//! Every decision is the pure [`decide`], unit-tested without a store.

use super::fanout::ChannelQueues;
use crate::contract::DeliveryTask;
use crate::domain::{AttemptStatus, DeliveryAttempt, RetryPolicy, Timestamp, Transition};
use crate::queue::{DeadLetter, Queue, ReceivedMessage};
use crate::store::{Applied, AttemptStore, PENDING_SHARDS, StoreError};
use serde::Serialize;
use std::collections::BTreeSet;
use std::time::Duration;
use tracing::{info, warn};

/// What the reconciler needs.
pub struct Deps {
    /// EMF metrics.
    pub metrics: crate::metrics::Metrics,
    /// Delivery statistics, for the attempts it fails.
    pub stats: Box<dyn crate::store::StatsStore>,
    /// Targets, for their failure streaks.
    pub targets: Box<dyn crate::store::TargetStore>,
    /// Executions, for their outcome events.
    pub executions: Box<dyn crate::store::ExecutionStore>,
    /// Outcome events for the reporting system (`None`: not sent).
    pub outcomes_url: Option<String>,
    pub attempts: Box<dyn AttemptStore>,
    pub queue: Box<dyn Queue>,
    pub channel_queues: ChannelQueues,
    /// The delivery dead-letter queue.
    pub dead_letter_url: String,
    pub rules: Rules,
}

/// When an attempt counts as left behind.
#[derive(Debug, Clone)]
pub struct Rules {
    /// An unsettled attempt with no activity (and no try due) for this long
    /// has lost its message.
    pub stale_after: Duration,
    /// Leases in a row with no outcome that make a crash loop (deliver
    /// keeps dying on it); see [`RetryPolicy::crash_limit`].
    pub crash_limit: u32,
    /// An unconfirmed dead letter older than this is finished here.
    pub dead_letter_repair_after: Duration,
    /// Most attempts examined per run.
    pub max_per_run: usize,
    /// Stop starting new work with less than this left before the deadline.
    pub reserve: Duration,
}

impl Rules {
    /// Rules that fit a retry policy: a crash loop is three times the leases
    /// a full schedule needs.
    pub fn for_policy(policy: &RetryPolicy, stale_after: Duration) -> Self {
        Self {
            stale_after,
            crash_limit: policy.crash_limit(),
            dead_letter_repair_after: Duration::from_secs(300),
            max_per_run: 2000,
            reserve: Duration::from_secs(10),
        }
    }
}

/// What one run did, logged and returned.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Report {
    /// Incomplete executions examined.
    pub executions: u64,
    /// Open attempts examined.
    pub examined: u64,
    /// Executions found complete and recorded so.
    pub settled: u64,
    /// Attempts whose message was sent again.
    pub requeued: u64,
    /// Attempts failed (crash loops), each dead-lettered.
    pub failed: u64,
    /// Unconfirmed dead letters finished.
    pub dead_letters_finished: u64,
    /// Safety-net copies removed from the dead-letter queue.
    pub strays_removed: u64,
    /// Second copies of one attempt's dead letter removed (a run died
    /// between sending it and confirming it).
    pub duplicates_removed: u64,
    /// Dead letters removed because they were no longer the record's (an
    /// operator retried or redrove the attempt).
    pub stale_removed: u64,
    /// Errors met (each left for the next run).
    pub errors: u64,
}

/// What to do with one unsettled attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Nothing yet.
    Leave,
    /// Its message is lost: send a new one.
    Requeue,
    /// Its leases keep ending with no outcome: fail it as `crash_loop`
    /// and dead-letter it.
    StopCrashLoop { leases: u32 },
    /// Send its dead letter and confirm it.
    FinishDeadLetter,
}

/// Decides for one attempt at `now`. `message_gone` says its message is
/// known to be off its queue (found on the dead-letter queue), so there is
/// no need to wait for staleness.
pub fn decide(a: &DeliveryAttempt, now: Timestamp, rules: &Rules, message_gone: bool) -> Action {
    let older_than = |t: Timestamp, d: Duration| {
        now.millis_since(t) > i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
    };
    match a.status {
        AttemptStatus::Delivered => Action::Leave,
        AttemptStatus::Failed => {
            let due = a.failed_at.unwrap_or(a.updated_at);
            if a.dead_letter_pending()
                && (message_gone || older_than(due, rules.dead_letter_repair_after))
            {
                Action::FinishDeadLetter
            } else {
                Action::Leave
            }
        }
        AttemptStatus::Queued | AttemptStatus::Processing => {
            if a.live_lease(now).is_some() {
                return Action::Leave;
            }
            let leases = a.crashed_leases_at(now);
            if leases >= rules.crash_limit {
                return Action::StopCrashLoop { leases };
            }
            if !message_gone && !older_than(a.last_activity(), rules.stale_after) {
                return Action::Leave;
            }
            Action::Requeue
        }
    }
}

/// The scheduled handler. `deadline` is the invocation's deadline.
pub async fn handle(deps: &Deps, deadline: Option<Timestamp>) -> Report {
    let mut report = Report::default();
    let now = Timestamp::now();
    let min_age = time::Duration::try_from(
        deps.rules
            .stale_after
            .min(deps.rules.dead_letter_repair_after),
    )
    .unwrap_or(time::Duration::minutes(5));
    let created_before = now.plus(-min_age);
    let time_left = || {
        deadline.is_none_or(|d| {
            d.millis_since(Timestamp::now())
                > i64::try_from(deps.rules.reserve.as_millis()).unwrap_or(i64::MAX)
        })
    };
    // Each run starts at another shard, so a run that stops early (its
    // budget or deadline) does not starve the later ones.
    let first = u8::try_from((now.unix_millis() / 300_000).rem_euclid(i64::from(PENDING_SHARDS)))
        .unwrap_or(0);
    // The dead-letter sweep goes first, within half of the run, so no
    // amount of unsettled work can crowd it out.
    let sweep_time_left = half_of_what_is_left(deadline, &time_left);
    sweep_dead_letters(deps, &mut report, &sweep_time_left).await;
    // Executions next, within half of what is left: an open-index read
    // each, so a backlog of open attempts cannot starve their outcomes.
    let executions_time_left = half_of_what_is_left(deadline, &time_left);
    complete_executions(
        deps,
        first,
        created_before,
        &mut report,
        &executions_time_left,
    )
    .await;
    reconcile_open_attempts(deps, first, created_before, &mut report, &time_left).await;
    // Every run reports, zero included, so the alarm sees data.
    let stuck = report.requeued + report.failed + report.dead_letters_finished;
    deps.metrics
        .record(crate::metrics::Metric::StuckAttempts, &[], stuck as f64);
    info!(
        executions = report.executions,
        examined = report.examined,
        settled = report.settled,
        requeued = report.requeued,
        failed = report.failed,
        dead_letters_finished = report.dead_letters_finished,
        strays_removed = report.strays_removed,
        duplicates_removed = report.duplicates_removed,
        stale_removed = report.stale_removed,
        errors = report.errors,
        "reconciled"
    );
    report
}

/// A time check for one step: `time_left`, and no later than half of the
/// time from now to `deadline`.
fn half_of_what_is_left<'a>(
    deadline: Option<Timestamp>,
    time_left: &'a dyn Fn() -> bool,
) -> impl Fn() -> bool + 'a {
    let now = Timestamp::now();
    let until =
        deadline.map(|d| now.plus(time::Duration::milliseconds(d.millis_since(now).max(0) / 2)));
    move || time_left() && until.is_none_or(|u| u.millis_since(Timestamp::now()) > 0)
}

/// Open attempts read per page (the time left is checked between
/// attempts).
const ATTEMPTS_PAGE: i32 = 100;

/// Acts on the open attempts created before `created_before`, shard by
/// shard from `first`, until the budget or the time runs out.
async fn reconcile_open_attempts(
    deps: &Deps,
    first: u8,
    created_before: Timestamp,
    report: &mut Report,
    time_left: &dyn Fn() -> bool,
) {
    for shard in (0..PENDING_SHARDS).map(|i| (first + i) % PENDING_SHARDS) {
        let mut cursor = None;
        loop {
            if !time_left() || report.examined as usize >= deps.rules.max_per_run {
                return;
            }
            let page = match deps
                .attempts
                .open_page(shard, created_before, cursor.take(), ATTEMPTS_PAGE)
                .await
            {
                Ok(p) => p,
                Err(e) => {
                    warn!(shard, error = %e, "reading the open attempts failed");
                    report.errors += 1;
                    break;
                }
            };
            for a in page.items {
                if !time_left() || report.examined as usize >= deps.rules.max_per_run {
                    return;
                }
                if !a.is_open() {
                    continue; // settled since the index was read
                }
                report.examined += 1;
                let id = a.id.clone();
                if let Err(e) = act(deps, a, false, report).await {
                    warn!(attempt_id = %id, error = %e, "reconciling failed; left for the next run");
                    report.errors += 1;
                }
            }
            match page.next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
    }
}

/// Completes the incomplete executions created before `created_before`
/// whose attempts are all settled, shard by shard from `first`.
async fn complete_executions(
    deps: &Deps,
    first: u8,
    created_before: Timestamp,
    report: &mut Report,
    time_left: &dyn Fn() -> bool,
) {
    for shard in (0..PENDING_SHARDS).map(|i| (first + i) % PENDING_SHARDS) {
        let mut cursor = None;
        loop {
            if !time_left() || report.executions as usize >= deps.rules.max_per_run {
                return;
            }
            let page = match deps
                .executions
                .unsettled(shard, created_before, cursor.take(), 25)
                .await
            {
                Ok(p) => p,
                Err(e) => {
                    warn!(shard, error = %e, "reading the incomplete executions failed");
                    report.errors += 1;
                    break;
                }
            };
            for id in &page.items {
                if !time_left() {
                    return;
                }
                report.executions += 1;
                if outcomes(deps).check(id, &[]).await {
                    info!(execution_id = %id, "execution completed");
                    report.settled += 1;
                }
            }
            match page.next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
    }
}

fn outcomes(deps: &Deps) -> super::outcomes::Outcomes<'_> {
    super::outcomes::Outcomes {
        queue: deps.queue.as_ref(),
        url: deps.outcomes_url.as_deref(),
        executions: deps.executions.as_ref(),
        attempts: deps.attempts.as_ref(),
    }
}

/// Acts on one attempt by id; returns whether its message may now be
/// dropped from the dead-letter queue (when it came from there).
async fn reconcile_one(
    deps: &Deps,
    id: &str,
    message_gone: bool,
    report: &mut Report,
) -> Result<bool, StoreError> {
    let Some(a) = deps.attempts.get(id).await? else {
        return Ok(true);
    };
    act(deps, a, message_gone, report).await
}

/// Acts on one attempt as read; returns whether its message may now be
/// dropped from the dead-letter queue.
async fn act(
    deps: &Deps,
    a: DeliveryAttempt,
    message_gone: bool,
    report: &mut Report,
) -> Result<bool, StoreError> {
    match decide(&a, Timestamp::now(), &deps.rules, message_gone) {
        Action::Leave => Ok(a.is_settled() && !a.dead_letter_pending()),
        Action::Requeue => {
            let now = Timestamp::now();
            let quiet_since = (!message_gone).then(|| {
                now.plus(-time::Duration::try_from(deps.rules.stale_after).unwrap_or_default())
            });
            // Recorded first, so the next pass waits again before another.
            let requeue = Transition::Requeue { now, quiet_since };
            if let Applied::Refused(_) = deps.attempts.apply(&a.id, &requeue).await? {
                return Ok(false);
            }
            let body = task_body(&a);
            if let Err(e) = deps
                .queue
                .send(deps.channel_queues.for_type(a.target_type), &body)
                .await
            {
                warn!(attempt_id = %a.id, error = %e, "re-enqueueing failed");
                report.errors += 1;
                return Ok(false);
            }
            warn!(attempt_id = %a.id, status = %a.status, "message lost; re-enqueued");
            report.requeued += 1;
            Ok(true)
        }
        Action::StopCrashLoop { leases } => {
            let stop = Transition::StopCrashLoop {
                error: crate::domain::transition::crash_loop_error(&a, leases, Timestamp::now()),
                crash_limit: deps.rules.crash_limit,
            };
            match deps.attempts.apply(&a.id, &stop).await? {
                Applied::Yes(failed) => {
                    use crate::metrics::{Dim, Metric, Outcome, channel};
                    deps.metrics.count(
                        Metric::Deliveries,
                        &[
                            (Dim::Channel, channel(failed.target_type)),
                            (Dim::Outcome, Outcome::FailedExhausted.as_str()),
                        ],
                    );
                    super::record_settled(
                        super::StatsSink::Store(deps.stats.as_ref()),
                        deps.targets.as_ref(),
                        &failed,
                        0,
                    )
                    .await;
                    warn!(attempt_id = %a.id, leases, "crash loop stopped by the reconciler");
                    report.failed += 1;
                    // Dead letter first: the execution settles only after.
                    let finished = finish_dead_letter(deps, &failed, report).await;
                    outcomes(deps).attempt_settled(&failed).await;
                    finished
                }
                // It moved on meanwhile (a run took the lease): next time.
                Applied::Refused(_) => Ok(false),
            }
        }
        Action::FinishDeadLetter => finish_dead_letter(deps, &a, report).await,
    }
}

fn task_body(a: &DeliveryAttempt) -> String {
    serde_json::to_string(&DeliveryTask::for_attempt(a)).unwrap_or_default()
}

async fn finish_dead_letter(
    deps: &Deps,
    a: &DeliveryAttempt,
    report: &mut Report,
) -> Result<bool, StoreError> {
    let code = a
        .last_error
        .as_ref()
        .map_or("retries_exhausted", |e| e.code.as_str());
    let reason = a.last_error.as_ref().map_or("", |e| e.message.as_str());
    let body = task_body(a);
    let letter = DeadLetter {
        body: &body,
        code,
        reason,
        source_message_id: "",
        attempt_id: Some(&a.id),
        receive_count: None,
        episode: Some(a.episode),
    };
    if let Err(e) = deps.queue.dead_letter(&deps.dead_letter_url, letter).await {
        warn!(attempt_id = %a.id, error = %e, "dead-lettering failed");
        report.errors += 1;
        return Ok(false);
    }
    deps.metrics.count(
        crate::metrics::Metric::DeadLettered,
        &[(
            crate::metrics::Dim::Stage,
            crate::metrics::Stage::Delivery.as_str(),
        )],
    );
    deps.attempts
        .apply(
            &a.id,
            &Transition::ConfirmDeadLetter {
                now: Timestamp::now(),
                episode: a.episode,
            },
        )
        .await?;
    report.dead_letters_finished += 1;
    Ok(true)
}

/// Reads the dead-letter queue once through. Our own dead letters (with an
/// `error_code`) are left alone and made visible again at the end; messages
/// the safety net moved there have their attempts reconciled and are
/// removed.
async fn sweep_dead_letters(deps: &Deps, report: &mut Report, time_left: &dyn Fn() -> bool) {
    let mut kept = Vec::new();
    read_dead_letters(deps, report, time_left, &mut kept).await;
    for receipt in kept {
        if let Err(e) = deps
            .queue
            .change_visibility(&deps.dead_letter_url, &receipt, Duration::ZERO)
            .await
        {
            warn!(error = %e, "could not make a dead letter visible again");
        }
    }
}

/// What the sweep does with one of the code's own dead letters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Letter {
    /// The record's letter: it stays.
    Keep,
    /// A second copy of the record's letter (a run died between sending
    /// and confirming it).
    Duplicate,
    /// No longer the record's: an operator retried or redrove the attempt
    /// (a new episode), or it is gone.
    Stale,
}

/// Decides for one dead letter of `episode`, given its attempt as read and
/// whether this sweep already kept the record's letter.
pub fn letter(attempt: Option<&DeliveryAttempt>, episode: u32, kept_one: bool) -> Letter {
    let current = attempt.is_some_and(|a| {
        a.status == AttemptStatus::Failed && a.dead_letter.is_some() && a.episode == episode
    });
    match (current, kept_one) {
        (false, _) => Letter::Stale,
        (true, true) => Letter::Duplicate,
        (true, false) => Letter::Keep,
    }
}

/// Empty or repeated batches in a row that end a sweep.
const SWEEP_IDLE_BATCHES: u32 = 2;

async fn read_dead_letters(
    deps: &Deps,
    report: &mut Report,
    time_left: &dyn Fn() -> bool,
    kept: &mut Vec<String>,
) {
    let mut seen = BTreeSet::new();
    let mut lettered = BTreeSet::new();
    let mut idle = 0;
    while time_left() && idle < SWEEP_IDLE_BATCHES {
        let batch = match deps
            .queue
            .receive(&deps.dead_letter_url, 10, Duration::from_secs(60))
            .await
        {
            Ok(b) => b,
            Err(e) => {
                warn!(error = %e, "reading the dead-letter queue failed");
                report.errors += 1;
                return;
            }
        };
        let fresh: Vec<ReceivedMessage> = batch
            .into_iter()
            .filter(|m| seen.insert(m.message_id.clone()))
            .collect();
        if fresh.is_empty() {
            idle += 1;
            continue;
        }
        idle = 0;
        for m in fresh {
            if m.attributes.contains_key("error_code") {
                match m.attributes.get("attempt_id") {
                    Some(id) => own_letter(deps, report, &m, id, &mut lettered, kept).await,
                    None => kept.push(m.receipt_handle),
                }
                continue;
            }
            let attempt_id = match serde_json::from_str::<DeliveryTask>(&m.body) {
                Ok(DeliveryTask::DeliverV1 { attempt_id, .. }) => attempt_id,
                _ => {
                    kept.push(m.receipt_handle);
                    continue;
                }
            };
            match reconcile_one(deps, &attempt_id, true, report).await {
                Ok(true) => match deps
                    .queue
                    .delete(&deps.dead_letter_url, &m.receipt_handle)
                    .await
                {
                    Ok(()) => report.strays_removed += 1,
                    Err(e) => {
                        warn!(error = %e, "removing a stray dead letter failed");
                        report.errors += 1;
                    }
                },
                Ok(false) => kept.push(m.receipt_handle),
                Err(e) => {
                    warn!(%attempt_id, error = %e, "reconciling a stray dead letter failed");
                    report.errors += 1;
                    kept.push(m.receipt_handle);
                }
            }
        }
    }
}

/// One of the code's own dead letters: kept while it is the record's
/// letter, removed as a duplicate or once stale.
async fn own_letter(
    deps: &Deps,
    report: &mut Report,
    m: &ReceivedMessage,
    attempt_id: &str,
    lettered: &mut BTreeSet<(String, u32)>,
    kept: &mut Vec<String>,
) {
    let episode = m
        .attributes
        .get("episode")
        .and_then(|e| e.parse().ok())
        .unwrap_or(0);
    let attempt = match deps.attempts.get(attempt_id).await {
        Ok(a) => a,
        Err(e) => {
            warn!(%attempt_id, error = %e, "reading a dead letter's attempt failed");
            report.errors += 1;
            kept.push(m.receipt_handle.clone());
            return;
        }
    };
    let key = (attempt_id.to_owned(), episode);
    match letter(attempt.as_ref(), episode, lettered.contains(&key)) {
        Letter::Keep => {
            lettered.insert(key);
            kept.push(m.receipt_handle.clone());
        }
        verdict @ (Letter::Duplicate | Letter::Stale) => {
            match deps
                .queue
                .delete(&deps.dead_letter_url, &m.receipt_handle)
                .await
            {
                Ok(()) if verdict == Letter::Duplicate => report.duplicates_removed += 1,
                Ok(()) => {
                    info!(%attempt_id, episode, "dead letter no longer the record's; removed");
                    report.stale_removed += 1;
                }
                Err(e) => {
                    warn!(error = %e, "removing a dead letter failed");
                    report.errors += 1;
                }
            }
        }
    }
}

impl Deps {
    /// Builds the deps from the environment `template.yaml` sets.
    pub async fn from_env() -> Result<Self, crate::config::ConfigError> {
        use crate::config::{required, retry_policy, seconds, tables};
        let sdk = crate::aws::load().await;
        let store = crate::store::dynamo::DynamoStore::new(crate::aws::dynamodb(&sdk), tables()?)
            .with_stats_retention(crate::config::stats_retention()?);
        let policy = retry_policy()?;
        Ok(Self {
            metrics: crate::metrics::Metrics::from_env(),
            stats: Box::new(store.clone()),
            targets: Box::new(store.clone()),
            executions: Box::new(store.clone()),
            outcomes_url: crate::config::optional("OUTCOMES_QUEUE_URL"),
            attempts: Box::new(store),
            queue: Box::new(crate::queue::sqs::SqsQueue::new(crate::aws::sqs(&sdk))),
            channel_queues: ChannelQueues::from_env()?,
            dead_letter_url: required("DEAD_LETTER_QUEUE_URL")?,
            rules: Rules::for_policy(&policy, seconds("RECONCILE_STALE_SECONDS", 1800)?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::TargetType;
    use crate::domain::attempt::{TryNext, TryRecord};

    fn rules() -> Rules {
        Rules::for_policy(&RetryPolicy::default(), Duration::from_secs(1800))
    }

    fn attempt(status: AttemptStatus, age_min: i64) -> DeliveryAttempt {
        let then = Timestamp::now().plus(time::Duration::minutes(-age_min));
        let mut a = DeliveryAttempt::queued("e", "r", "t", TargetType::Webhook, then);
        a.status = status;
        a
    }

    #[test]
    fn a_fresh_unsettled_attempt_is_left_alone() {
        let now = Timestamp::now();
        assert_eq!(
            decide(&attempt(AttemptStatus::Queued, 5), now, &rules(), false),
            Action::Leave
        );
    }

    #[test]
    fn a_queued_attempt_silent_for_too_long_is_requeued() {
        let now = Timestamp::now();
        assert_eq!(
            decide(&attempt(AttemptStatus::Queued, 45), now, &rules(), false),
            Action::Requeue
        );
    }

    #[test]
    fn a_pending_backoff_is_not_mistaken_for_a_lost_message() {
        // Given an attempt that scheduled a 1 h backoff 45 minutes ago
        let mut a = attempt(AttemptStatus::Queued, 45);
        a.retry_count = 3;
        a.next_try_at = Some(a.updated_at.plus(time::Duration::hours(1)));
        a.history.push(TryRecord {
            n: 4,
            at: a.updated_at,
            ms: 10,
            code: Some("http_503".into()),
            then: TryNext::Backoff,
            delay_ms: Some(3_600_000),
        });
        assert_eq!(decide(&a, Timestamp::now(), &rules(), false), Action::Leave);
        // But its message found on the dead-letter queue is requeued at once
        assert_eq!(
            decide(&a, Timestamp::now(), &rules(), true),
            Action::Requeue
        );
    }

    #[test]
    fn a_live_lease_is_never_touched_but_an_expired_one_is() {
        let now = Timestamp::now();
        let mut a = attempt(AttemptStatus::Processing, 120);
        a.lease_expires_at = Some(now.plus(time::Duration::minutes(1)));
        assert_eq!(decide(&a, now, &rules(), true), Action::Leave);
        a.lease_expires_at = Some(now.plus(time::Duration::minutes(-60)));
        assert_eq!(decide(&a, now, &rules(), false), Action::Requeue);
    }

    #[test]
    fn a_crash_loop_is_stopped_once_its_lease_expires_however_recent_the_write() {
        // Given leases that kept ending with no outcome, the last one
        // taken a minute ago (so the attempt is not stale)
        let now = Timestamp::now();
        let mut a = attempt(AttemptStatus::Processing, 1);
        a.crashed_leases = rules().crash_limit - 1;
        a.lease_expires_at = Some(now.plus(time::Duration::seconds(-1)));
        // Then it is stopped now, not after the staleness window
        assert_eq!(
            decide(&a, now, &rules(), false),
            Action::StopCrashLoop {
                leases: rules().crash_limit
            }
        );
        // And one crash fewer is only a crashed run, requeued when stale
        a.crashed_leases -= 1;
        assert_eq!(decide(&a, now, &rules(), false), Action::Leave);
    }

    #[test]
    fn an_unconfirmed_dead_letter_is_finished_once_its_run_had_time() {
        let now = Timestamp::now();
        let mut a = attempt(AttemptStatus::Failed, 1);
        a.failed_at = Some(a.updated_at);
        a.dead_letter = Some(crate::domain::attempt::DeadLetterState {
            requested_at: a.updated_at,
            sent_at: None,
        });
        assert_eq!(decide(&a, now, &rules(), false), Action::Leave);
        let later = now.plus(time::Duration::minutes(10));
        assert_eq!(decide(&a, later, &rules(), false), Action::FinishDeadLetter);
        a.dead_letter = None;
        assert_eq!(decide(&a, later, &rules(), false), Action::Leave);
    }

    #[test]
    fn a_letter_stays_only_while_it_is_its_records_and_only_once() {
        let mut a = attempt(AttemptStatus::Failed, 1);
        a.dead_letter = Some(crate::domain::attempt::DeadLetterState {
            requested_at: a.updated_at,
            sent_at: Some(a.updated_at),
        });
        assert_eq!(letter(Some(&a), 0, false), Letter::Keep);
        assert_eq!(letter(Some(&a), 0, true), Letter::Duplicate);
        // An operator retry began episode 1: the old letter is stale, and
        // so is any letter once the attempt is delivered
        a.episode = 1;
        assert_eq!(letter(Some(&a), 0, false), Letter::Stale);
        a.status = AttemptStatus::Delivered;
        assert_eq!(letter(Some(&a), 1, false), Letter::Stale);
        assert_eq!(letter(None, 0, false), Letter::Stale);
    }
}
