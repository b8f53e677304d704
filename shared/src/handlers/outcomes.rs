//! Completing executions, and the outcome events for the reporting system
//! on the outcomes queue: one `delivery_outcome.v1` per settled attempt,
//! and one `execution_outcome.v1` per completion of an execution (a
//! corrected one after each operator reopening). Never a path for
//! deliveries.
//!
//! One rule, [`is_complete`], says from the records whether an execution is
//! complete, and [`Outcomes::complete`] is its one writer: it reads the
//! execution, then its attempts (strongly consistent), claims the event
//! (a conditional write that runs out after two minutes), sends it, and
//! records the completion with one conditional write, which also takes the
//! execution out of the incomplete index. Whoever settles attempts asks
//! [`Outcomes::check`], which reads the sparse `open` index of attempts
//! first; deliver asks once per execution at the end of its invocation, and
//! the reconciler asks for every incomplete execution it reads, so a run
//! that died, or two that each saw the other's attempt still open, leave
//! nothing behind. Two runs that complete an execution at once send one
//! event; a run that dies after its claim leaves the event to the
//! reconciler once the claim runs out (sent again, with the same
//! `event_id`, if it died after the send).

use crate::contract::{
    DeliveryOutcomeV1, ExecutionOutcomeAttempt, ExecutionOutcomeV1, OutcomeError, OutcomeEvent,
};
use crate::domain::execution::ReportExecution;
use crate::domain::{AttemptKind, AttemptStatus, DeliveryAttempt, Timestamp};
use crate::queue::{OutMessage, Queue};
use crate::store::{AttemptStore, ExecutionStore};
use std::collections::BTreeMap;
use tracing::{info, warn};

/// What one deliver invocation settled: the attempts whose outcome events
/// go out at its end ([`Outcomes::flush`]), and the attempts whose
/// executions it then checks. A run that dies before the flush loses their
/// events, as a run that died right after the settling write always could;
/// the reconciler completes their executions.
#[derive(Debug, Default)]
pub struct OutcomeBatch {
    settled: std::sync::Mutex<Vec<DeliveryAttempt>>,
    touched: std::sync::Mutex<Vec<(String, String)>>,
}

impl OutcomeBatch {
    /// Keeps a settled attempt for its event and its execution's check.
    pub fn push(&self, a: &DeliveryAttempt) {
        if let Ok(mut s) = self.settled.lock() {
            s.push(a.clone());
        }
        self.touch(a);
    }

    /// Checks the attempt's execution at the flush, with no event: its
    /// dead letter was just confirmed, or a copy of its message met it
    /// settled (the run that settled it may have died before its flush).
    pub fn touch(&self, a: &DeliveryAttempt) {
        if let Ok(mut t) = self.touched.lock() {
            t.push((a.report_execution_id.clone(), a.id.clone()));
        }
    }

    fn take(&self) -> (Vec<DeliveryAttempt>, Vec<(String, String)>) {
        let settled = self
            .settled
            .lock()
            .map(|mut s| std::mem::take(&mut *s))
            .unwrap_or_default();
        let touched = self
            .touched
            .lock()
            .map(|mut t| std::mem::take(&mut *t))
            .unwrap_or_default();
        (settled, touched)
    }
}

/// The rule: an execution is complete once fan-out recorded how many
/// attempts it made, they all exist, and none is open (every one settled,
/// every dead letter confirmed).
pub fn is_complete(e: &ReportExecution, attempts: &[DeliveryAttempt]) -> bool {
    e.target_count
        .is_some_and(|n| attempts.len() as u64 >= n && attempts.iter().all(|a| !a.is_open()))
}

/// Where outcome events go, and the stores they are read from.
#[derive(Clone, Copy)]
pub struct Outcomes<'a> {
    pub queue: &'a dyn Queue,
    /// `None`: no outcomes queue configured; nothing is sent.
    pub url: Option<&'a str>,
    pub executions: &'a dyn ExecutionStore,
    pub attempts: &'a dyn AttemptStore,
}

/// The event of one settled attempt.
pub fn delivery_event(a: &DeliveryAttempt) -> DeliveryOutcomeV1 {
    let settled_at = a.delivered_at.or(a.failed_at).unwrap_or(a.updated_at);
    DeliveryOutcomeV1 {
        event_id: format!("{}:{}", a.id, settled_at),
        attempt_id: a.id.clone(),
        execution_id: a.report_execution_id.clone(),
        report_id: a.report_id.clone(),
        target_id: a.delivery_target_id.clone(),
        channel: a.target_type.as_str().to_owned(),
        status: a.status.as_str().to_owned(),
        error: (a.status == AttemptStatus::Failed)
            .then_some(a.last_error.as_ref())
            .flatten()
            .map(|e| OutcomeError {
                code: e.code.clone(),
                category: e.category.as_str().to_owned(),
                message: e.message.clone(),
            }),
        tries: a.tries,
        retries: a.retry_count,
        created_at: a.created_at,
        settled_at,
    }
}

/// The event of a whole execution.
pub fn execution_event(
    execution_id: &str,
    report_id: &str,
    note: Option<String>,
    attempts: &[DeliveryAttempt],
    at: Timestamp,
    revision: u64,
) -> ExecutionOutcomeV1 {
    let delivered = attempts
        .iter()
        .filter(|a| a.status == AttemptStatus::Delivered)
        .count() as u64;
    let targets = attempts.len() as u64;
    ExecutionOutcomeV1 {
        event_id: if revision == 0 {
            execution_id.to_owned()
        } else {
            format!("{execution_id}.r{revision}")
        },
        revision,
        execution_id: execution_id.to_owned(),
        report_id: report_id.to_owned(),
        targets,
        delivered,
        failed: targets - delivered,
        summary: format!("delivered to {delivered} of {targets} targets"),
        note,
        attempts: attempts
            .iter()
            .map(|a| ExecutionOutcomeAttempt {
                attempt_id: a.id.clone(),
                target_id: a.delivery_target_id.clone(),
                channel: a.target_type.as_str().to_owned(),
                status: a.status.as_str().to_owned(),
                error_code: a.last_error.as_ref().map(|e| e.code.clone()),
            })
            .collect(),
        completed_at: at,
    }
}

/// Sends one outcome event to `url` (three tries); `true` when it went,
/// or when no outcomes queue is configured.
pub async fn send_event(queue: &dyn Queue, url: Option<&str>, event: &OutcomeEvent) -> bool {
    let Some(url) = url else { return true };
    let body = serde_json::to_string(event).unwrap_or_default();
    for _ in 0..3 {
        match queue.send(url, &body).await {
            Ok(()) => return true,
            Err(e) => warn!(error = %e, "outcome event not sent; trying again"),
        }
    }
    false
}

impl Outcomes<'_> {
    async fn send(&self, event: &OutcomeEvent) -> bool {
        send_event(self.queue, self.url, event).await
    }

    /// After an attempt settled: its event, then its execution's check.
    pub async fn attempt_settled(&self, a: &DeliveryAttempt) {
        let touched = [(a.report_execution_id.clone(), a.id.clone())];
        self.settled(std::slice::from_ref(a), &touched).await;
    }

    /// Sends the events of a batch's settled attempts, checks each
    /// execution it touched once, and empties it.
    pub async fn flush(&self, batch: &OutcomeBatch) {
        let (settled, touched) = batch.take();
        if !settled.is_empty() || !touched.is_empty() {
            self.settled(&settled, &touched).await;
        }
    }

    /// The events of settled attempts (10 per request; none for test
    /// sends), then one check per execution touched.
    async fn settled(&self, settled: &[DeliveryAttempt], touched: &[(String, String)]) {
        if let Some(url) = self.url {
            let deliveries: Vec<DeliveryAttempt> = settled
                .iter()
                .filter(|a| a.kind == AttemptKind::Delivery)
                .cloned()
                .collect();
            for chunk in deliveries.chunks(10) {
                self.send_chunk(url, chunk).await;
            }
        }
        let mut per_execution: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (execution_id, attempt_id) in touched {
            per_execution
                .entry(execution_id)
                .or_default()
                .push(attempt_id);
        }
        for (execution_id, own) in per_execution {
            self.check(execution_id, &own).await;
        }
    }

    /// Up to 10 delivery events in one request; entries SQS refuses (or
    /// a failed request) are tried twice more.
    async fn send_chunk(&self, url: &str, chunk: &[DeliveryAttempt]) {
        let mut left: Vec<OutMessage> = chunk
            .iter()
            .enumerate()
            .map(|(i, a)| OutMessage {
                entry_id: i.to_string(),
                body: serde_json::to_string(&OutcomeEvent::DeliveryV1(delivery_event(a)))
                    .unwrap_or_default(),
            })
            .collect();
        for _ in 0..3 {
            match self.queue.send_batch(url, &left).await {
                Ok(failed) => left.retain(|m| failed.contains(&m.entry_id)),
                Err(e) => warn!(error = %e, "outcome events not sent; trying again"),
            }
            if left.is_empty() {
                return;
            }
        }
        for m in &left {
            let i: usize = m.entry_id.parse().unwrap_or_default();
            warn!(attempt_id = %chunk[i].id, "delivery outcome event lost");
        }
    }

    /// A target was disabled or flagged after `failed`.
    pub async fn target_changed(
        &self,
        failed: &DeliveryAttempt,
        event: &str,
        reason: &str,
        run: u32,
        at: Timestamp,
    ) {
        if self.url.is_none() {
            return;
        }
        let e = crate::contract::TargetOutcomeV1 {
            event_id: format!("{}:{at}", failed.delivery_target_id),
            target_id: failed.delivery_target_id.clone(),
            report_id: failed.report_id.clone(),
            event: event.to_owned(),
            reason: reason.to_owned(),
            consecutive_failures: run,
            attempt_id: failed.id.clone(),
            at,
        };
        if !self.send(&OutcomeEvent::TargetV1(e)).await {
            warn!(target_id = %failed.delivery_target_id, "target outcome event lost");
        }
    }

    /// After fan-out finished: the execution may already be complete (or
    /// have nothing to deliver).
    pub async fn fanned_out(&self, execution_id: &str) {
        self.check(execution_id, &[]).await;
    }

    /// Completes the execution unless the `open` index shows an open
    /// attempt other than `own` (the ones the caller just settled, whose
    /// index entries may not be gone yet). Returns whether it is complete.
    pub async fn check(&self, execution_id: &str, own: &[&str]) -> bool {
        let limit = i32::try_from(own.len() + 1).unwrap_or(100);
        match self.attempts.open_of_execution(execution_id, limit).await {
            Ok(open) if open.iter().all(|id| own.contains(&id.as_str())) => {
                self.complete(execution_id).await
            }
            // Another attempt is open: whoever settles it checks again.
            Ok(_) => false,
            Err(e) => {
                warn!(%execution_id, error = %e, "open attempts not read; the reconciler completes the execution");
                false
            }
        }
    }

    /// Applies [`is_complete`] to the records and, when it holds, claims
    /// and sends the execution's event (unless events are off or it is a
    /// test send) and records the completion at the revision read. Returns
    /// whether this run recorded it (or found it recorded). A failed send
    /// records nothing, so the reconciler tries again.
    pub async fn complete(&self, execution_id: &str) -> bool {
        // The execution first: its `reopened` revision guards the claim
        // against an operator retry between these reads and it.
        let execution = match self.executions.get_execution(execution_id).await {
            Ok(Some(e)) => e,
            Ok(None) => return false,
            Err(e) => {
                warn!(%execution_id, error = %e, "execution completion not checked");
                return false;
            }
        };
        if execution.completion_recorded() {
            return true;
        }
        let attempts = match self.attempts.by_execution(execution_id).await {
            Ok(a) => a,
            Err(e) => {
                warn!(%execution_id, error = %e, "execution completion not checked");
                return false;
            }
        };
        if !is_complete(&execution, &attempts) {
            return false;
        }
        let at = Timestamp::now();
        let revision = execution.reopened;
        if self.url.is_some() && execution.test_target_id.is_none() {
            // One sender: a claim that runs out if this run dies before
            // recording, so the reconciler sends the event then.
            let until = at.plus(OUTCOME_CLAIM);
            match self
                .executions
                .claim_outcome(execution_id, at, until, revision)
                .await
            {
                Ok(true) => {}
                // Another run is sending it, or it was reopened since.
                Ok(false) => return false,
                Err(e) => {
                    warn!(%execution_id, error = %e, "execution outcome not claimed");
                    return false;
                }
            }
            let event = execution_event(
                execution_id,
                &execution.report_id,
                execution.fanout_note.clone(),
                &attempts,
                at,
                revision,
            );
            if !self.send(&OutcomeEvent::ExecutionV1(event.clone())).await {
                warn!(%execution_id, "execution outcome not sent; the reconciler tries again");
                return false;
            }
            info!(%execution_id, summary = %event.summary, revision, "execution outcome sent");
        }
        match self
            .executions
            .record_outcome(execution_id, at, revision)
            .await
        {
            // `false`: reopened since (the next completion corrects it).
            Ok(recorded) => recorded,
            Err(e) => {
                warn!(%execution_id, error = %e, "execution completion not recorded");
                false
            }
        }
    }
}

/// How long a run holds the sending of an execution's outcome event: more
/// than three sends at the SDK's 25 s operation timeout.
const OUTCOME_CLAIM: time::Duration = time::Duration::seconds(120);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{AttemptError, ErrorCategory, TargetType};

    #[test]
    fn a_batch_keeps_events_for_settled_attempts_only_and_a_take_empties_it() {
        let batch = OutcomeBatch::default();
        let a = DeliveryAttempt::queued("e1", "r1", "t1", TargetType::Webhook, Timestamp::now());
        let b = DeliveryAttempt::queued("e2", "r1", "t1", TargetType::Webhook, Timestamp::now());
        batch.push(&a);
        batch.touch(&b); // a copy met it settled: a check, no event
        let (settled, touched) = batch.take();
        assert_eq!(settled.len(), 1);
        assert_eq!(
            touched,
            [
                ("e1".to_owned(), a.id.clone()),
                ("e2".to_owned(), b.id.clone())
            ]
        );
        let (settled, touched) = batch.take();
        assert!(settled.is_empty() && touched.is_empty());
    }

    #[test]
    fn an_execution_is_complete_once_fanned_out_and_no_attempt_is_open() {
        let now = Timestamp::now();
        let mut e: ReportExecution = serde_json::from_value(serde_json::json!({
            "id": "e1", "report_id": "r1", "report_name": "R",
            "generated_at": now, "time_zone": "UTC", "row_count": 1,
            "pdf": {"key": "k", "content_type": "application/pdf", "size": 1, "sha256": "0"},
            "rendered_at": now, "created_at": now, "updated_at": now,
        }))
        .expect("execution");
        let mut ok = DeliveryAttempt::queued("e1", "r1", "t1", TargetType::Email, now);
        // Not fanned out yet: never complete
        e.target_count = None;
        assert!(!is_complete(&e, &[]));
        // Fanned out with nothing to deliver: complete
        e.target_count = Some(0);
        assert!(is_complete(&e, &[]));
        // One attempt, not all there yet or still open: not complete
        e.target_count = Some(1);
        assert!(!is_complete(&e, &[]));
        assert!(!is_complete(&e, std::slice::from_ref(&ok)));
        ok.status = AttemptStatus::Delivered;
        assert!(is_complete(&e, std::slice::from_ref(&ok)));
        // A failure whose dead letter is not yet confirmed is still open
        let mut bad = ok.clone();
        bad.status = AttemptStatus::Failed;
        bad.dead_letter = Some(crate::domain::attempt::DeadLetterState {
            requested_at: now,
            sent_at: None,
        });
        assert!(!is_complete(&e, &[bad.clone()]));
        if let Some(d) = bad.dead_letter.as_mut() {
            d.sent_at = Some(now);
        }
        assert!(is_complete(&e, &[bad]));
    }

    #[test]
    fn events_carry_the_ids_the_outcome_and_a_summary() {
        let now = Timestamp::now();
        let mut ok = DeliveryAttempt::queued("e1", "r1", "t1", TargetType::Email, now);
        ok.status = AttemptStatus::Delivered;
        ok.delivered_at = Some(now);
        let mut bad = DeliveryAttempt::queued("e1", "r1", "t2", TargetType::Webhook, now);
        bad.status = AttemptStatus::Failed;
        bad.failed_at = Some(now);
        bad.last_error = Some(AttemptError {
            category: ErrorCategory::Permanent,
            code: "http_400".into(),
            message: "receiver answered 400".into(),
            at: now,
        });
        let d = delivery_event(&bad);
        assert_eq!(d.status, "failed");
        assert_eq!(d.channel, "webhook");
        assert_eq!(d.error.as_ref().map(|e| e.code.as_str()), Some("http_400"));
        assert_eq!(d.event_id, format!("{}:{now}", bad.id));
        assert!(delivery_event(&ok).error.is_none());
        let e = execution_event("e1", "r1", None, &[ok, bad], now, 0);
        assert_eq!(e.summary, "delivered to 1 of 2 targets");
        assert_eq!((e.delivered, e.failed), (1, 1));
        let v = serde_json::to_value(OutcomeEvent::ExecutionV1(e)).expect("json");
        assert_eq!(v["type"], "execution_outcome.v1");
    }
}
