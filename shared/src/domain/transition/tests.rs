//! The transition rule: examples, then a model-based test that runs
//! generated stories (deliveries, crashes, copies of messages, reconciler
//! passes, operator retries and redrives) against a reference model small
//! enough to be obviously right, checking the promises after every step.

use super::*;
use crate::domain::attempt::{ErrorCategory, TryNext, TryRecord};
use crate::domain::{RecipientStatus, RetryDecision, RetryPolicy, TargetType};

fn at(ms: i64) -> Timestamp {
    Timestamp::from_unix_millis(1_800_000_000_000 + ms).expect("in range")
}

fn fresh() -> DeliveryAttempt {
    DeliveryAttempt::queued("e1", "r1", "t1", TargetType::Webhook, at(0))
}

fn error(code: &str, ms: i64) -> AttemptError {
    AttemptError {
        category: ErrorCategory::Temporary,
        code: code.into(),
        message: "receiver answered 503".into(),
        at: at(ms),
    }
}

const LEASE_MS: i64 = 90_000;
const LIMIT: u32 = 3;

fn begin(token: &str, ms: i64) -> Transition {
    Transition::Begin {
        token: token.into(),
        now: at(ms),
        lease_until: at(ms + LEASE_MS),
        execution_id: "e1".into(),
        target_id: "t1".into(),
        crash_limit: LIMIT,
    }
}

fn retry(token: &str, ms: i64, next_ms: i64) -> Transition {
    Transition::ScheduleRetry {
        token: token.into(),
        error: error("http_503", ms),
        tries: TriesUpdate::default(),
        next_try_at: at(next_ms),
    }
}

fn deliver(token: &str, ms: i64) -> Transition {
    Transition::Deliver {
        token: token.into(),
        now: at(ms),
        metadata: BTreeMap::new(),
        tries: TriesUpdate::default(),
        recipients: Vec::new(),
    }
}

fn exhausted(token: &str, ms: i64) -> Transition {
    Transition::Fail {
        token: Some(token.into()),
        error: error("retries_exhausted", ms),
        tries: None,
        dead_letter: true,
        recipients: Vec::new(),
    }
}

fn operator_retry(ms: i64) -> Transition {
    let action = OperatorAction {
        action: "retry".into(),
        by: "ops".into(),
        at: at(ms),
        force: false,
        rerendered: false,
    };
    Transition::OperatorRetry {
        actions: vec![action.clone()],
        action,
    }
}

fn step(a: &DeliveryAttempt, t: &Transition) -> DeliveryAttempt {
    t.decide(a)
        .unwrap_or_else(|r| panic!("{t:?} refused: {r:?}"))
}

#[test]
fn every_write_bumps_the_version_it_was_decided_from() {
    let a = fresh();
    let b = step(&a, &begin("x", 0));
    let c = step(&b, &deliver("x", 10));
    assert_eq!((a.version, b.version, c.version), (0, 1, 2));
}

#[test]
fn delivered_is_terminal_for_every_writer_and_failed_for_all_but_the_operator() {
    let delivered = step(&step(&fresh(), &begin("x", 0)), &deliver("x", 1));
    let failed = step(&step(&fresh(), &begin("x", 0)), &exhausted("x", 1));
    let writers = [
        begin("y", 10_000_000),
        deliver("x", 2),
        retry("x", 2, 3),
        exhausted("x", 2),
        Transition::Requeue {
            now: at(10_000_000),
            quiet_since: None,
        },
        Transition::StopCrashLoop {
            error: error("crash_loop", 10_000_000),
            crash_limit: 0,
        },
    ];
    for t in &writers {
        assert_eq!(t.decide(&delivered), Err(Refusal::Terminal), "{t:?}");
        assert_eq!(t.decide(&failed), Err(Refusal::Terminal), "{t:?}");
    }
    assert_eq!(
        operator_retry(5).decide(&delivered),
        Err(Refusal::NotApplicable)
    );
    let again = step(&failed, &operator_retry(5));
    assert_eq!((again.status, again.episode), (AttemptStatus::Queued, 1));
    assert!(again.dead_letter.is_none());
}

#[test]
fn a_live_lease_refuses_a_second_begin_and_an_expired_one_counts_a_crash() {
    let a = step(&fresh(), &begin("first", 0));
    assert_eq!(
        begin("second", 1_000).decide(&a),
        Err(Refusal::LeaseHeld {
            until: at(LEASE_MS)
        })
    );
    let b = step(&a, &begin("second", LEASE_MS + 1));
    assert_eq!((b.begins, b.crashed_leases), (2, 1));
    assert_eq!(
        deliver("first", LEASE_MS + 2).decide(&b),
        Err(Refusal::NotHolder)
    );
    let c = step(&b, &deliver("second", LEASE_MS + 2));
    assert_eq!(c.crashed_leases, 0, "an outcome ends the streak");
}

#[test]
fn a_copy_before_the_backoff_ends_is_refused_until_the_record_says_it_is_due() {
    let a = step(&step(&fresh(), &begin("x", 0)), &retry("x", 100, 300_100));
    assert_eq!(
        begin("copy", 200_000).decide(&a),
        Err(Refusal::NotYet { due: at(300_100) })
    );
    assert!(begin("copy", 300_100).permits(&a));
}

#[test]
fn a_crash_loop_refuses_the_lease_at_the_limit_whatever_updated_at_says() {
    let mut a = fresh();
    let mut t = 0;
    for n in 0..LIMIT {
        a = step(&a, &begin(&format!("run{n}"), t));
        t += LEASE_MS + 1;
    }
    assert_eq!(
        begin("again", t).decide(&a),
        Err(Refusal::CrashLoop { leases: LIMIT })
    );
    let stop = Transition::StopCrashLoop {
        error: error("crash_loop", t),
        crash_limit: LIMIT,
    };
    let failed = step(&a, &stop);
    assert_eq!(failed.status, AttemptStatus::Failed);
    assert!(failed.dead_letter_pending());
    // One crash short of the limit is not a crash loop
    let short = step(&step(&fresh(), &begin("a", 0)), &begin("b", LEASE_MS + 1));
    assert_eq!(stop.decide(&short), Err(Refusal::NotApplicable));
}

#[test]
fn a_requeue_needs_quiet_since_the_last_activity_and_is_recorded() {
    let a = step(&step(&fresh(), &begin("x", 0)), &retry("x", 100, 3_600_100));
    let requeue = |now: i64, quiet: i64| Transition::Requeue {
        now: at(now),
        quiet_since: Some(at(quiet)),
    };
    // A backoff due in an hour is activity: not lost
    assert_eq!(
        requeue(1_900_000, 100).decide(&a),
        Err(Refusal::NotApplicable)
    );
    let r = step(&a, &requeue(5_500_000, 3_700_000));
    assert_eq!(r.requeued_at, Some(at(5_500_000)));
    // The next pass, 5 minutes later, waits again
    assert_eq!(
        requeue(5_800_000, 4_000_000).decide(&r),
        Err(Refusal::NotApplicable)
    );
}

#[test]
fn a_dead_letter_is_confirmed_once_and_only_for_its_episode() {
    let failed = step(&step(&fresh(), &begin("x", 0)), &exhausted("x", 1));
    let confirm = |episode| Transition::ConfirmDeadLetter {
        now: at(2),
        episode,
    };
    assert_eq!(confirm(1).decide(&failed), Err(Refusal::NoSuchLetter));
    let confirmed = step(&failed, &confirm(0));
    assert_eq!(confirm(0).decide(&confirmed), Err(Refusal::NoSuchLetter));
    // A retry while the letter is in flight: the old episode cannot confirm
    let retried = step(&failed, &operator_retry(3));
    assert_eq!(confirm(0).decide(&retried), Err(Refusal::NoSuchLetter));
}

#[test]
fn only_a_queued_attempt_is_failed_without_the_lease() {
    let fail = Transition::Fail {
        token: None,
        error: error("test_not_queued", 5),
        tries: None,
        dead_letter: false,
        recipients: Vec::new(),
    };
    assert!(fail.permits(&fresh()));
    let leased = step(&fresh(), &begin("x", 0));
    assert_eq!(fail.decide(&leased), Err(Refusal::NotApplicable));
}

#[test]
fn begin_refuses_a_message_whose_pair_is_not_the_attempts() {
    let wrong = Transition::Begin {
        token: "x".into(),
        now: at(0),
        lease_until: at(1),
        execution_id: "e1".into(),
        target_id: "t2".into(),
        crash_limit: LIMIT,
    };
    assert_eq!(wrong.decide(&fresh()), Err(Refusal::WrongPair));
}

#[test]
fn a_retry_counts_a_backoff_and_keeps_the_tries_but_a_deferral_does_not_count() {
    let a = step(&fresh(), &begin("x", 0));
    let record = TryRecord {
        n: 1,
        at: at(0),
        ms: 12,
        code: Some("http_503".into()),
        then: TryNext::Backoff,
        delay_ms: Some(300_000),
    };
    let t = Transition::ScheduleRetry {
        token: "x".into(),
        error: error("http_503", 10),
        tries: TriesUpdate {
            tries: 1,
            history: vec![record.clone()],
        },
        next_try_at: at(300_010),
    };
    let b = step(&a, &t);
    assert_eq!(
        (b.retry_count, b.tries, b.history.clone()),
        (1, 1, vec![record])
    );
    let c = step(&b, &begin("y", 300_010));
    let defer = Transition::Defer {
        token: "y".into(),
        now: at(300_020),
        tries: TriesUpdate {
            tries: 1,
            history: c.history.clone(),
        },
        next_try_at: at(302_020),
        rate_slot: None,
    };
    let d = step(&c, &defer);
    assert_eq!((d.status, d.retry_count), (AttemptStatus::Queued, 1));
    assert_eq!(d.next_try_at, Some(at(302_020)));
}

mod model;
