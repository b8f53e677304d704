//! Settling executions, and the outcome events for the reporting system on
//! the outcomes queue: one `delivery_outcome.v1` per settled attempt, and
//! one `execution_outcome.v1` per execution once every attempt settled —
//! exactly one, through a conditional write on the execution. Sent by the
//! run that settled the attempt (or finished the fan-out); never a path for
//! deliveries. Deliver keeps an invocation's settled attempts in an
//! [`OutcomeBatch`]: their events go out in `SendMessageBatch` calls of 10
//! and each execution's settled counter takes one `ADD` per invocation.
//!
//! Whether or not events are sent, an execution whose attempts all settled
//! leaves the unsettled index the reconciler reads (in the same write as
//! the event's claim). The counter only says when to look; the attempt
//! records decide.

use crate::contract::{
    DeliveryOutcomeV1, ExecutionOutcomeAttempt, ExecutionOutcomeV1, OutcomeError, OutcomeEvent,
};
use crate::domain::{AttemptKind, AttemptStatus, DeliveryAttempt, Timestamp};
use crate::queue::{OutMessage, Queue};
use crate::store::{AttemptStore, ExecutionStore, Progress};
use std::collections::BTreeMap;
use tracing::{info, warn};

/// Attempts settled by one deliver invocation, whose outcome events and
/// settled counts go out together at its end ([`Outcomes::flush`]). A run
/// that dies before the flush loses their events, as a run that died
/// right after the settling write always could.
#[derive(Debug, Default)]
pub struct OutcomeBatch {
    settled: std::sync::Mutex<Vec<DeliveryAttempt>>,
    recount: std::sync::Mutex<Vec<String>>,
}

impl OutcomeBatch {
    /// Keeps a settled attempt for the flush.
    pub fn push(&self, a: &DeliveryAttempt) {
        if let Ok(mut s) = self.settled.lock() {
            s.push(a.clone());
        }
    }

    /// Counts once more an attempt that settled earlier, met by a copy of
    /// its message received `receive_count` times: a copy received again
    /// came back from a run that did not finish, which may have died before
    /// its flush, and it makes up for the lost count (no event is sent
    /// again). First receives (fan-out re-sends) are not counted, so the
    /// counter runs ahead only after failures; running ahead is harmless,
    /// the records decide.
    pub fn count_again(&self, execution_id: &str, receive_count: u32) {
        if receive_count <= 1 {
            return;
        }
        if let Ok(mut r) = self.recount.lock() {
            r.push(execution_id.to_owned());
        }
    }

    fn take(&self) -> (Vec<DeliveryAttempt>, Vec<String>) {
        let settled = self
            .settled
            .lock()
            .map(|mut s| std::mem::take(&mut *s))
            .unwrap_or_default();
        let recount = self
            .recount
            .lock()
            .map(|mut r| std::mem::take(&mut *r))
            .unwrap_or_default();
        (settled, recount)
    }
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

impl Outcomes<'_> {
    async fn send(&self, event: &OutcomeEvent) -> bool {
        let Some(url) = self.url else { return true };
        let body = serde_json::to_string(event).unwrap_or_default();
        for _ in 0..3 {
            match self.queue.send(url, &body).await {
                Ok(()) => return true,
                Err(e) => warn!(error = %e, "outcome event not sent; trying again"),
            }
        }
        false
    }

    /// After an attempt settled: its event, then the execution's completion
    /// when it was the last one.
    pub async fn attempt_settled(&self, a: &DeliveryAttempt) {
        self.settled(std::slice::from_ref(a), &[]).await;
    }

    /// Sends the events of a batch's settled attempts, counts them and
    /// the ones met again per execution, and empties it.
    pub async fn flush(&self, batch: &OutcomeBatch) {
        let (settled, recount) = batch.take();
        if !settled.is_empty() || !recount.is_empty() {
            self.settled(&settled, &recount).await;
        }
    }

    /// The events of settled attempts (10 per request; none for test
    /// sends), then one settled count per execution, and the execution's
    /// completion when it was the last.
    async fn settled(&self, settled: &[DeliveryAttempt], recount: &[String]) {
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
        let mut per_execution: BTreeMap<&str, u64> = BTreeMap::new();
        let ids = settled.iter().map(|a| a.report_execution_id.as_str());
        for id in ids.chain(recount.iter().map(String::as_str)) {
            *per_execution.entry(id).or_default() += 1;
        }
        for (execution_id, n) in per_execution {
            match self.executions.count_settled(execution_id, n).await {
                Ok(p) => self.maybe_complete(execution_id, p).await,
                Err(e) => warn!(%execution_id, error = %e, "settled count not kept"),
            }
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
    pub async fn fanned_out(&self, execution_id: &str, p: Progress) {
        self.maybe_complete(execution_id, p).await;
    }

    /// Completes the execution if the counter says every attempt settled.
    async fn maybe_complete(&self, execution_id: &str, p: Progress) {
        if p.complete() {
            self.complete(execution_id).await;
        }
    }

    /// If the records say every attempt settled (dead letters confirmed),
    /// takes the execution out of the unsettled index, with its event when
    /// events are sent and this run wins the claim. Returns whether it is
    /// settled. The counter can run ahead (an operator retry settles an
    /// attempt twice) or behind (a run died before its flush): the records
    /// decide, and the reconciler calls this for what the counter missed.
    pub async fn complete(&self, execution_id: &str) -> bool {
        // The execution first: its `reopened` count guards the writes below
        // against an operator retry between these reads and them.
        let read = async {
            let Some(e) = self.executions.get_execution(execution_id).await? else {
                return Ok(None);
            };
            let a = self.attempts.by_execution(execution_id).await?;
            Ok::<_, crate::store::StoreError>(Some((e, a)))
        };
        let (execution, attempts) = match read.await {
            Ok(Some(read)) => read,
            Ok(None) => return false,
            Err(e) => {
                warn!(%execution_id, error = %e, "execution completion not checked");
                return false;
            }
        };
        let Some(target_count) = execution.target_count else {
            return false; // still fanning out
        };
        if attempts
            .iter()
            .any(|a| !a.is_settled() || a.dead_letter_pending())
            || (attempts.len() as u64) < target_count
        {
            return false;
        }
        let reopened = execution.reopened;
        if self.url.is_none() || execution.test_target_id.is_some() {
            return self.leave_index(execution_id, reopened, false).await;
        }
        let at = Timestamp::now();
        match self
            .executions
            .claim_outcome(execution_id, at, reopened)
            .await
        {
            Ok(true) => {}
            // Claimed before (its event was sent): only the index is left,
            // while the claim is held (a failed send gives it back).
            Ok(false) => return self.leave_index(execution_id, reopened, true).await,
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
            reopened,
        );
        if self.send(&OutcomeEvent::ExecutionV1(event.clone())).await {
            info!(%execution_id, summary = %event.summary, "execution outcome sent");
            true
        } else {
            // Released: unsettled again, so the reconciler tries again.
            if let Err(e) = self.executions.release_outcome(execution_id).await {
                warn!(%execution_id, error = %e, "execution outcome lost");
            }
            false
        }
    }

    async fn leave_index(&self, execution_id: &str, reopened: u64, claimed: bool) -> bool {
        match self
            .executions
            .mark_settled(execution_id, reopened, claimed)
            .await
        {
            Ok(()) => true,
            Err(e) => {
                warn!(%execution_id, error = %e, "execution not marked settled");
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{AttemptError, ErrorCategory, TargetType};

    #[test]
    fn only_copies_received_again_are_counted_again_and_a_take_empties_the_batch() {
        let batch = OutcomeBatch::default();
        let a = DeliveryAttempt::queued("e1", "r1", "t1", TargetType::Webhook, Timestamp::now());
        batch.push(&a);
        batch.count_again("e1", 1); // a fan-out re-send: counted by its run
        batch.count_again("e2", 2); // back from a run that did not finish
        let (settled, recount) = batch.take();
        assert_eq!(settled.len(), 1);
        assert_eq!(recount, ["e2"]);
        let (settled, recount) = batch.take();
        assert!(settled.is_empty() && recount.is_empty());
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
