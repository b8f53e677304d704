//! feedback: SES's news of the stack's email, as SNS brings it to the
//! feedback queue, onto the attempt records and the targets' suppressions.
//!
//! A record is matched to its attempt by the `rd_attempt` tag deliver set
//! and checked against what the attempt holds: the `rd_target` tag must be
//! its target, and every recipient the event names must have been sent
//! that SES message id. Each recipient's news then takes three idempotent
//! steps, in an order that survives a death at any line (a redelivered
//! copy redoes what is left):
//! 1. the target's suppression ([`suppression::on_news`]): a hard bounce
//!    or a complaint suppresses the address, soft bounces count once per
//!    message, a delivery ends their run;
//! 2. the record: one conditional write of [`Transition::Feedback`], which
//!    changes that recipient only and never weakens what is known;
//! 3. the outcome event (`delivery_bounced.v1`, `delivery_complained.v1`),
//!    sent again with the same `event_id` when a copy comes.
//!
//! A record that can never apply (malformed, another stack's, a forged
//! message id) is refused on its first receive with a code. One that is
//! not the stack's to apply (no tag: another sender using the set) or
//! whose attempt is gone (late, after the record's retention) is counted
//! and acknowledged.

use super::{DeadLetters, Outcome, process_batch, store_outcome};
use crate::contract::ses_event::{self, EventKind, Expect, SesEvent};
use crate::contract::{OutcomeEvent, RecipientNewsV1};
use crate::domain::recipient::{Feedback, RecipientOutcome, RecipientStatus};
use crate::domain::stats::RecipientDelta;
use crate::domain::suppression::{self, Change, Suppression, SuppressionReason, address_key};
use crate::domain::transition::{Refusal, Transition};
use crate::domain::{AttemptKind, AttemptStatus, DeliveryAttempt};
use crate::metrics::{Dim, Metric, Metrics, Stage};
use crate::queue::Queue;
use crate::store::{AttemptStore, MAX_RACES, StatsStore, SuppressionStore};
use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use tracing::{info, warn};

/// Soft bounces in a row that suppress an address when
/// `SOFT_BOUNCE_LIMIT` is unset.
pub const DEFAULT_SOFT_BOUNCE_LIMIT: u32 = 3;

/// What the feedback function needs.
pub struct Deps {
    pub metrics: Metrics,
    pub attempts: Box<dyn AttemptStore>,
    pub suppressions: Box<dyn SuppressionStore>,
    /// Per-target counts of recipients' news (`/stats`).
    pub stats: Box<dyn StatsStore>,
    pub queue: Box<dyn Queue>,
    /// The feedback queue's own dead-letter queue, for refused records.
    pub dead_letter_url: String,
    /// Outcome events for the reporting system (`None`: not sent).
    pub outcomes_url: Option<String>,
    /// The stack's SNS topic; records from any other are refused.
    pub topic_arn: Option<String>,
    /// The stack's configuration set; records of any other are refused.
    pub configuration_set: Option<String>,
    /// Soft bounces in a row that suppress an address.
    pub soft_bounce_limit: u32,
}

impl Deps {
    /// Builds the deps from the environment `template.yaml` sets.
    pub async fn from_env() -> Result<Self, crate::config::ConfigError> {
        use crate::config::{optional, required, tables};
        let sdk = crate::aws::load().await;
        let store = crate::store::dynamo::DynamoStore::new(crate::aws::dynamodb(&sdk), tables()?);
        let limit = match optional("SOFT_BOUNCE_LIMIT") {
            None => DEFAULT_SOFT_BOUNCE_LIMIT,
            Some(v) => v.parse().ok().filter(|n| (1..=100).contains(n)).ok_or(
                crate::config::ConfigError::Invalid {
                    name: "SOFT_BOUNCE_LIMIT",
                    reason: format!("expected 1 to 100, got {v:?}"),
                },
            )?,
        };
        Ok(Self {
            metrics: Metrics::from_env(),
            attempts: Box::new(store.clone()),
            suppressions: Box::new(store.clone()),
            stats: Box::new(store.with_stats_retention(crate::config::stats_retention()?)),
            queue: Box::new(crate::queue::sqs::SqsQueue::new(crate::aws::sqs(&sdk))),
            dead_letter_url: required("DEAD_LETTER_QUEUE_URL")?,
            outcomes_url: optional("OUTCOMES_QUEUE_URL"),
            topic_arn: optional("FEEDBACK_TOPIC_ARN"),
            configuration_set: optional("SES_CONFIGURATION_SET"),
            soft_bounce_limit: limit,
        })
    }
}

/// The Lambda handler. A batch's records run concurrently, except copies
/// of one SNS notification: the later copies are acknowledged at once, so
/// two copies never race each other to the record (each would take the
/// other's identical write for its own and count the news twice).
pub async fn handle(deps: &Deps, event: SqsEvent) -> SqsBatchResponse {
    let mut notifications = std::collections::HashSet::new();
    let copies: std::collections::HashSet<String> = event
        .records
        .iter()
        .filter_map(|m| {
            let id = ses_event::notification_id(m.body.as_deref()?)?;
            (!notifications.insert(id))
                .then(|| m.message_id.clone())
                .flatten()
        })
        .collect();
    process_batch(
        &event,
        DeadLetters {
            queue: deps.queue.as_ref(),
            url: &deps.dead_letter_url,
            stage: Stage::Feedback,
            metrics: &deps.metrics,
        },
        4,
        |m: &SqsMessage| {
            let copy = m.message_id.as_ref().is_some_and(|id| copies.contains(id));
            process_unless_copy(deps, m, copy)
        },
    )
    .await
}

async fn process_unless_copy(deps: &Deps, m: &SqsMessage, copy: bool) -> Outcome {
    if copy {
        ignored(deps, "already_known");
        return Outcome::Done;
    }
    process(deps, m).await
}

fn ignored(deps: &Deps, reason: &'static str) {
    deps.metrics
        .count(Metric::FeedbackIgnored, &[(Dim::Reason, reason)]);
}

async fn process(deps: &Deps, m: &SqsMessage) -> Outcome {
    let expect = Expect {
        topic_arn: deps.topic_arn.as_deref(),
        configuration_set: deps.configuration_set.as_deref(),
    };
    let event = match ses_event::parse(m.body.as_deref().unwrap_or(""), &expect) {
        Ok(e) => e,
        Err(r) => {
            return Outcome::Reject {
                code: r.code,
                reason: r.reason,
            };
        }
    };
    let count = match event.kind {
        EventKind::Send | EventKind::Other => 1,
        _ => event.news.len(),
    };
    for _ in 0..count {
        deps.metrics
            .count(Metric::EmailEvents, &[(Dim::Event, event.kind.as_str())]);
    }
    let Some(attempt_id) = event.attempt_id.as_deref() else {
        ignored(deps, "untagged");
        return Outcome::Done;
    };
    tracing::Span::current().record("attempt_id", attempt_id);
    // A send's recipients were recorded as sent by deliver; the event
    // says nothing more.
    if matches!(event.kind, EventKind::Send | EventKind::Other) || event.news.is_empty() {
        return Outcome::Done;
    }
    let attempt = match deps.attempts.get(attempt_id).await {
        Ok(Some(a)) => a,
        Ok(None) => {
            ignored(deps, "unknown_attempt");
            info!(
                kind = event.kind.as_str(),
                "feedback for an attempt no longer recorded"
            );
            return Outcome::Done;
        }
        Err(e) => return store_outcome(&e),
    };
    if let Err(outcome) = check(&event, &attempt) {
        return outcome;
    }
    let mut record = attempt;
    for news in &event.news {
        match apply(deps, record, news).await {
            Ok(next) => record = next,
            Err(outcome) => return outcome,
        }
    }
    Outcome::Done
}

/// Whether the record can be this attempt's: its target, and every
/// recipient sent that message. While the attempt is still being sent,
/// news may outrun deliver's record of the message id: left for
/// redelivery.
fn check(event: &SesEvent, attempt: &DeliveryAttempt) -> Result<(), Outcome> {
    tracing::Span::current().record("target_id", attempt.delivery_target_id.as_str());
    if event.target_id.as_deref() != Some(attempt.delivery_target_id.as_str()) {
        return Err(Outcome::Reject {
            code: "foreign_target",
            reason: format!(
                "the rd_target tag does not name attempt {}'s target",
                attempt.id
            ),
        });
    }
    let unknown = event
        .news
        .iter()
        .any(|n| recipient(&attempt.recipients, n).is_none());
    if !unknown {
        return Ok(());
    }
    if matches!(
        attempt.status,
        AttemptStatus::Processing | AttemptStatus::Queued
    ) {
        return Err(Outcome::Retry {
            reason: format!(
                "attempt {} does not record message {} yet; it is {}",
                attempt.id,
                event.message_id,
                attempt.status.as_str()
            ),
        });
    }
    Err(Outcome::Reject {
        code: "unknown_message_id",
        reason: format!(
            "attempt {} sent no message {} to the recipients the event names",
            attempt.id, event.message_id
        ),
    })
}

/// The recipient a piece of news is about, if the record sent it that
/// message.
fn recipient<'a>(recipients: &'a [RecipientOutcome], n: &Feedback) -> Option<&'a RecipientOutcome> {
    recipients.iter().find(|r| {
        r.message_id.as_deref() == Some(n.message_id.as_str())
            && r.address.eq_ignore_ascii_case(&n.address)
    })
}

/// Whether the news is new to the record, a copy of what it holds, or
/// weaker (out of order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Novelty {
    New,
    Copy,
    Weaker,
}

/// Asks the one rule ([`Feedback::apply`]) whether `n` changes
/// `recipients`; refused news is a copy when the recipient already has
/// that status, else weaker.
fn novelty(recipients: &[RecipientOutcome], n: &Feedback) -> Novelty {
    match n.apply(recipients) {
        Ok(_) => Novelty::New,
        Err(_) if recipient(recipients, n).map(|r| r.status) == Some(n.status) => Novelty::Copy,
        Err(_) => Novelty::Weaker,
    }
}

/// The three steps for one recipient's news (see the module's comment),
/// on the record as last seen; answers the record after them.
async fn apply(
    deps: &Deps,
    seen: DeliveryAttempt,
    n: &Feedback,
) -> Result<DeliveryAttempt, Outcome> {
    if recipient(&seen.recipients, n).is_none() {
        return Ok(seen);
    }
    let record = match novelty(&seen.recipients, n) {
        Novelty::Weaker => {
            ignored(deps, "already_known");
            return Ok(seen);
        }
        // A copy redoes the suppression and the event: the run that wrote
        // the record may have died before them.
        Novelty::Copy => {
            ignored(deps, "already_known");
            let suppressed = suppress(deps, &seen, n).await?;
            (seen, suppressed)
        }
        Novelty::New => {
            let suppressed = suppress(deps, &seen, n).await?;
            let (after, landed_from) = record(deps, seen, n).await?;
            if let Some(before) = landed_from {
                count(deps, &after, before, n.status).await;
            }
            (after, suppressed)
        }
    };
    let (record, suppressed) = record;
    if recipient(&record.recipients, n).map(|r| r.status) == Some(n.status)
        && let Some(event) = news_event(&record, n, suppressed)
        && !send_event(deps, &event).await
    {
        return Err(Outcome::Retry {
            reason: "the outcome event was not sent".into(),
        });
    }
    Ok(record)
}

/// Counts the change the write that landed made, once, on the day the
/// attempt was created (so all of one recipient's changes sum on one item,
/// whatever order they came in). A lost count is not worth a second write
/// of the record.
async fn count(deps: &Deps, a: &DeliveryAttempt, before: RecipientStatus, after: RecipientStatus) {
    let delta = RecipientDelta::between(before, after);
    if let Err(e) = deps
        .stats
        .record_recipient(&a.delivery_target_id, a.created_at, delta)
        .await
    {
        warn!(error = %e, "recipient news not counted in the statistics");
    }
}

/// Step 2: one conditional write of the news; the record after it (as it
/// is, when a race made the news known already), and the recipient's
/// status before it when this very write landed (a twin copy of the news
/// that lost the race counts nothing).
async fn record(
    deps: &Deps,
    mut seen: DeliveryAttempt,
    n: &Feedback,
) -> Result<(DeliveryAttempt, Option<RecipientStatus>), Outcome> {
    let transition = Transition::Feedback(n.clone());
    for _ in 0..MAX_RACES {
        let before = recipient(&seen.recipients, n).map(|r| r.status);
        match deps.attempts.apply_once(&seen, &transition).await {
            Ok(Some(after)) => return Ok((after, before)),
            Ok(None) => {}
            Err(e) => return Err(store_outcome(&e)),
        }
        seen = match deps.attempts.get(&seen.id).await {
            Ok(Some(a)) => a,
            Ok(None) => {
                ignored(deps, "unknown_attempt");
                return Ok((seen, None));
            }
            Err(e) => return Err(store_outcome(&e)),
        };
        match transition.decide(&seen) {
            Ok(_) => {}
            Err(Refusal::AlreadyKnown) => {
                ignored(deps, "already_known");
                return Ok((seen, None));
            }
            Err(other) => {
                return Err(Outcome::Reject {
                    code: "unknown_message_id",
                    reason: format!("attempt {} refused the news: {other:?}", seen.id),
                });
            }
        }
    }
    Err(Outcome::Retry {
        reason: format!("attempt {} kept changing; news not recorded", seen.id),
    })
}

/// Step 1: what the news does to the address's suppression for the
/// target. `true` when the address is suppressed after it.
async fn suppress(deps: &Deps, a: &DeliveryAttempt, n: &Feedback) -> Result<bool, Outcome> {
    let entry = |reason: SuppressionReason| Suppression {
        target_id: a.delivery_target_id.clone(),
        address: address_key(&n.address),
        reason,
        detail: n.detail.clone(),
        by: "ses".into(),
        attempt_id: Some(a.id.clone()),
        at: n.at,
    };
    let result = match suppression::on_news(n.status, n.bounce) {
        Change::None => Ok(false),
        Change::Suppress(reason) => deps.suppressions.suppress(&entry(reason)).await.map(|new| {
            if new {
                info!(
                    reason = reason.as_str(),
                    "address suppressed for the target"
                );
            }
            true
        }),
        Change::CountSoftBounce => {
            deps.suppressions
                .count_soft_bounce(
                    &entry(SuppressionReason::TransientBounces),
                    &n.message_id,
                    deps.soft_bounce_limit,
                )
                .await
        }
        Change::ResetSoftBounces => deps
            .suppressions
            .reset_soft_bounces(&a.delivery_target_id, &address_key(&n.address))
            .await
            .map(|()| false),
    };
    result.map_err(|e| {
        warn!(error = %e, "suppression not written");
        store_outcome(&e)
    })
}

/// The outcome event of a bounce or a complaint of a delivery attempt.
pub fn news_event(a: &DeliveryAttempt, n: &Feedback, suppressed: bool) -> Option<OutcomeEvent> {
    if a.kind != AttemptKind::Delivery {
        return None;
    }
    let r = recipient(&a.recipients, n)?;
    let body = |kind: &str| RecipientNewsV1 {
        event_id: format!("{}:{}:{kind}", a.id, address_key(&r.address)),
        attempt_id: a.id.clone(),
        execution_id: a.report_execution_id.clone(),
        report_id: a.report_id.clone(),
        target_id: a.delivery_target_id.clone(),
        address: address_key(&r.address),
        role: serde_json::to_value(r.role)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default(),
        message_id: n.message_id.clone(),
        bounce_type: r.bounce.and_then(|b| {
            serde_json::to_value(b)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
        }),
        detail: r.detail.clone(),
        suppressed,
        at: r.at,
    };
    match n.status {
        RecipientStatus::Bounced => Some(OutcomeEvent::BouncedV1(body("bounced"))),
        RecipientStatus::Complained => Some(OutcomeEvent::ComplainedV1(body("complained"))),
        _ => None,
    }
}

async fn send_event(deps: &Deps, event: &OutcomeEvent) -> bool {
    super::outcomes::send_event(deps.queue.as_ref(), deps.outcomes_url.as_deref(), event).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::recipient::{BounceType, Role};
    use crate::domain::{TargetType, Timestamp};

    fn sent(address: &str, role: Role) -> RecipientOutcome {
        RecipientOutcome {
            address: address.into(),
            role,
            status: RecipientStatus::Sent,
            message_id: Some("m-1".into()),
            bounce: None,
            detail: None,
            at: Timestamp::now(),
        }
    }

    fn attempt(status: AttemptStatus) -> DeliveryAttempt {
        let mut a = DeliveryAttempt::queued("e", "r", "t", TargetType::Email, Timestamp::now());
        a.status = status;
        a.recipients = vec![
            sent("a@example.com", Role::To),
            sent("b@example.com", Role::Bcc),
        ];
        a
    }

    fn news(address: &str, message_id: &str, status: RecipientStatus) -> Feedback {
        Feedback {
            message_id: message_id.into(),
            address: address.into(),
            status,
            bounce: (status == RecipientStatus::Bounced).then_some(BounceType::Permanent),
            detail: Some("smtp; 550 5.1.1 user unknown".into()),
            at: Timestamp::now(),
        }
    }

    fn event(target: &str, news: Vec<Feedback>) -> SesEvent {
        SesEvent {
            kind: EventKind::Bounce,
            message_id: "m-1".into(),
            attempt_id: Some("x".into()),
            target_id: Some(target.into()),
            news,
        }
    }

    #[test]
    fn news_must_name_the_attempts_target_and_a_recipient_sent_that_message() {
        let a = attempt(AttemptStatus::Delivered);
        let ok = event(
            "t",
            vec![news("A@Example.com", "m-1", RecipientStatus::Bounced)],
        );
        assert_eq!(check(&ok, &a), Ok(()));
        let other_target = event("t2", ok.news.clone());
        assert!(matches!(
            check(&other_target, &a),
            Err(Outcome::Reject {
                code: "foreign_target",
                ..
            })
        ));
        for forged in [
            news("a@example.com", "m-2", RecipientStatus::Bounced),
            news("c@example.com", "m-1", RecipientStatus::Bounced),
        ] {
            let e = event("t", vec![ok.news[0].clone(), forged]);
            assert!(matches!(
                check(&e, &a),
                Err(Outcome::Reject {
                    code: "unknown_message_id",
                    ..
                })
            ));
        }
    }

    #[test]
    fn news_that_outruns_the_send_record_is_left_for_redelivery() {
        let e = event(
            "t",
            vec![news("a@example.com", "m-9", RecipientStatus::Delivered)],
        );
        for status in [AttemptStatus::Processing, AttemptStatus::Queued] {
            assert!(matches!(
                check(&e, &attempt(status)),
                Err(Outcome::Retry { .. })
            ));
        }
    }

    #[test]
    fn novelty_follows_the_rule() {
        let n = news("a@example.com", "m-1", RecipientStatus::Delivered);
        let with = |status| {
            let mut r = attempt(AttemptStatus::Delivered).recipients;
            r[0].status = status;
            r
        };
        assert_eq!(novelty(&with(RecipientStatus::Sent), &n), Novelty::New);
        assert_eq!(
            novelty(&with(RecipientStatus::Delivered), &n),
            Novelty::Copy
        );
        assert_eq!(
            novelty(&with(RecipientStatus::Bounced), &n),
            Novelty::Weaker
        );
    }

    #[test]
    fn bounces_and_complaints_of_deliveries_have_events_and_nothing_else_does() {
        let mut a = attempt(AttemptStatus::Delivered);
        let bounce = news("a@example.com", "m-1", RecipientStatus::Bounced);
        a.recipients = bounce.apply(&a.recipients).expect("applies");
        let Some(OutcomeEvent::BouncedV1(e)) = news_event(&a, &bounce, true) else {
            panic!("a bounce event");
        };
        assert_eq!(e.event_id, format!("{}:a@example.com:bounced", a.id));
        assert_eq!(
            (e.role.as_str(), e.bounce_type.as_deref()),
            ("to", Some("permanent"))
        );
        assert!(e.suppressed);
        let complaint = news("b@example.com", "m-1", RecipientStatus::Complained);
        assert!(matches!(
            news_event(&a, &complaint, true),
            Some(OutcomeEvent::ComplainedV1(c)) if c.role == "bcc"
        ));
        let delivery = news("b@example.com", "m-1", RecipientStatus::Delivered);
        assert_eq!(news_event(&a, &delivery, false), None);
        a.kind = AttemptKind::Test;
        assert_eq!(
            news_event(&a, &bounce, true),
            None,
            "test sends have no events"
        );
    }
}
