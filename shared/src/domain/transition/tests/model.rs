//! The model-based test: generated stories against a reference model,
//! the promises checked after every step.
use super::*;
use proptest::prelude::*;
use proptest_state_machine::{ReferenceStateMachine, StateMachineTest, prop_state_machine};

/// The schedule the stories use: steps of different lengths.
fn policy() -> RetryPolicy {
    RetryPolicy {
        schedule: vec![
            std::time::Duration::from_secs(300),
            std::time::Duration::from_secs(900),
            std::time::Duration::from_secs(3600),
        ],
        jitter: 0.0,
        max_inline_wait: std::time::Duration::from_secs(5),
    }
}
const STALE_MS: i64 = 1_800_000;

/// One thing that happens in a story.
#[derive(Debug, Clone)]
pub enum Op {
    /// Time passes; a run whose lease ends is killed at its deadline.
    Wait(i64),
    /// A copy of the attempt's message is received (first, duplicate,
    /// early, a fan-out re-run's or the reconciler's).
    Receive,
    /// The running holder's send succeeds.
    Succeed,
    /// The running holder's send fails for now.
    TempFail,
    /// The running holder's send fails for good.
    PermFail,
    /// The running holder puts the try off.
    Defer(i64),
    /// The running holder dies (no write).
    Crash,
    /// A run sends the pending dead letter, dying before confirming it
    /// when `true`.
    FinishLetter(bool),
    /// A reconciler pass over the attempt.
    Reconcile,
    /// SES news of the recipient: a status by index into
    /// `RecipientStatus::ALL` (never `suppressed`), about the message
    /// the record sent, or a forged one's when `true`.
    Feedback(usize, bool),
    /// `POST /attempts/{id}/retry`.
    OperatorRetry,
    /// `POST /dead-letters/redrive`: the letters go, the attempt is retried.
    Redrive,
    /// The dead-letter sweep: letters that are not the record's go, and
    /// one copy of the record's stays.
    Sweep,
}

/// Where the model attempt stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum S {
    Queued,
    Processing,
    Delivered,
    Failed,
}

/// The reference: a few fields and a list of letters.
#[derive(Debug, Clone)]
pub struct Ref {
    now: i64,
    status: S,
    /// The lease's end, while processing.
    lease_end: i64,
    /// Whether the lease holder is still running.
    running: bool,
    due: i64,
    backoffs: usize,
    crashes: u32,
    episode: u32,
    /// `Some(confirmed)` when the failure asked for a letter.
    letter: Option<bool>,
    /// Letters on the queue, by episode.
    dlq: Vec<u32>,
    quiet_since: i64,
    /// The rank of the strongest news of the recipient, once a delivery
    /// recorded it.
    news: Option<u8>,
}

impl Ref {
    fn holder_running(&self) -> bool {
        self.status == S::Processing && self.running
    }

    fn crashes_now(&self) -> u32 {
        self.crashes + u32::from(self.status == S::Processing && self.lease_end < self.now)
    }

    fn live(&self) -> bool {
        self.status == S::Processing && self.lease_end >= self.now
    }

    fn unfinished(&self) -> bool {
        matches!(self.status, S::Queued | S::Processing)
    }

    fn outcome(&mut self, status: S) {
        self.status = status;
        self.running = false;
        self.crashes = 0;
        self.quiet_since = self.now;
    }

    fn send_letter(&mut self, confirm: bool) {
        if self.status == S::Failed && self.letter == Some(false) {
            self.dlq.push(self.episode);
            if confirm {
                self.letter = Some(true);
            }
        }
    }

    fn reopen(&mut self) {
        if self.status == S::Failed {
            self.status = S::Queued;
            self.episode += 1;
            self.letter = None;
            self.due = self.now;
            self.backoffs = 0;
            self.crashes = 0;
            self.quiet_since = self.now;
        }
    }
}

pub struct Model;

impl ReferenceStateMachine for Model {
    type State = Ref;
    type Transition = Op;

    fn init_state() -> BoxedStrategy<Ref> {
        Just(Ref {
            now: 0,
            status: S::Queued,
            lease_end: 0,
            running: false,
            due: 0,
            backoffs: 0,
            crashes: 0,
            episode: 0,
            letter: None,
            dlq: Vec::new(),
            quiet_since: 0,
            news: None,
        })
        .boxed()
    }

    fn transitions(state: &Ref) -> BoxedStrategy<Op> {
        let waits = prop_oneof![
            Just(1_000i64),
            Just(60_000),
            Just(100_000),
            Just(300_000),
            Just(900_000),
            Just(1_900_000),
            Just(3_600_000),
        ];
        let always = prop_oneof![
            4 => waits.prop_map(Op::Wait),
            4 => Just(Op::Receive),
            2 => Just(Op::Reconcile),
            1 => any::<bool>().prop_map(Op::FinishLetter),
            1 => Just(Op::OperatorRetry),
            1 => Just(Op::Redrive),
            1 => Just(Op::Sweep),
            2 => (0usize..6, any::<bool>()).prop_map(|(i, f)| Op::Feedback(i, f)),
        ];
        if state.holder_running() {
            prop_oneof![
                3 => always,
                2 => Just(Op::Succeed),
                4 => Just(Op::TempFail),
                1 => Just(Op::PermFail),
                1 => prop_oneof![Just(2_000i64), Just(20_000)].prop_map(Op::Defer),
                2 => Just(Op::Crash),
            ]
            .boxed()
        } else {
            always.boxed()
        }
    }

    fn preconditions(state: &Ref, op: &Op) -> bool {
        match op {
            Op::Succeed | Op::TempFail | Op::PermFail | Op::Defer(_) | Op::Crash => {
                state.holder_running()
            }
            _ => true,
        }
    }

    fn apply(mut m: Ref, op: &Op) -> Ref {
        let schedule: Vec<i64> = policy()
            .schedule
            .iter()
            .map(|d| d.as_millis() as i64)
            .collect();
        match *op {
            Op::Wait(ms) => {
                m.now += ms;
                if m.status == S::Processing && m.lease_end < m.now {
                    m.running = false;
                }
            }
            Op::Receive => {
                let free = match m.status {
                    S::Queued => m.due <= m.now,
                    S::Processing => m.lease_end < m.now,
                    S::Delivered | S::Failed => false,
                };
                if free && m.crashes_now() < LIMIT {
                    m.crashes = m.crashes_now();
                    m.status = S::Processing;
                    m.lease_end = m.now + LEASE_MS;
                    m.running = true;
                    m.quiet_since = m.now;
                } else if free {
                    // A crash loop: the run stops it.
                    m.status = S::Failed;
                    m.running = false;
                    m.letter = Some(false);
                    m.crashes = m.crashes_now();
                    m.quiet_since = m.now;
                }
            }
            Op::Succeed => {
                m.outcome(S::Delivered);
                m.news = Some(0);
            }
            Op::Feedback(i, forged) => {
                let rank = RecipientStatus::ALL[i].rank();
                if let Some(news) = m.news.as_mut().filter(|n| !forged && rank > **n) {
                    *news = rank;
                }
            }
            Op::TempFail => {
                if m.backoffs < schedule.len() {
                    m.due = m.now + schedule[m.backoffs];
                    m.backoffs += 1;
                    m.outcome(S::Queued);
                } else {
                    m.outcome(S::Failed);
                    m.letter = Some(false);
                }
            }
            Op::PermFail => m.outcome(S::Failed),
            Op::Defer(ms) => {
                m.due = m.now + ms;
                m.outcome(S::Queued);
            }
            Op::Crash => m.running = false,
            Op::FinishLetter(die) => m.send_letter(!die),
            Op::Reconcile => {
                if m.unfinished() && !m.live() && m.crashes_now() >= LIMIT {
                    m.crashes = m.crashes_now();
                    m.status = S::Failed;
                    m.letter = Some(false);
                    m.quiet_since = m.now;
                    m.send_letter(true);
                } else if m.unfinished()
                    && !m.live()
                    && m.quiet_since.max(m.due).max(m.lease_end) + STALE_MS < m.now
                {
                    m.quiet_since = m.now;
                }
                m.send_letter(true);
            }
            Op::OperatorRetry => m.reopen(),
            Op::Redrive => {
                if m.status == S::Failed {
                    m.dlq.clear();
                    m.reopen();
                }
            }
            Op::Sweep => {
                let keep = (m.status == S::Failed && m.letter.is_some()).then_some(m.episode);
                let had = m.dlq.iter().any(|e| Some(*e) == keep);
                m.dlq.clear();
                if had {
                    m.dlq.extend(keep);
                }
            }
        }
        m
    }
}

/// The system under test: the record, changed only through
/// [`Transition::decide`], driven as deliver, the reconciler and the
/// API drive it.
pub struct Sut {
    a: DeliveryAttempt,
    now: i64,
    /// The token of the run that holds the lease, while it runs.
    running: Option<String>,
    runs: u32,
    dlq: Vec<u32>,
    /// When a backoff was scheduled and how long it is.
    backoff: Option<(i64, i64)>,
    /// The last recorded status before this step.
    before: DeliveryAttempt,
    last_op: Option<Op>,
}

impl Sut {
    fn write(&mut self, t: &Transition) -> bool {
        match t.decide(&self.a) {
            Ok(next) => {
                assert_eq!(next.version, self.a.version + 1);
                self.a = next;
                true
            }
            Err(_) => false,
        }
    }

    fn holder(&self) -> String {
        self.running.clone().expect("a running holder")
    }

    fn send_letter(&mut self, confirm: bool) {
        if self.a.dead_letter_pending() {
            self.dlq.push(self.a.episode);
            if confirm {
                let episode = self.a.episode;
                assert!(self.write(&Transition::ConfirmDeadLetter {
                    now: at(self.now),
                    episode,
                }));
            }
        }
    }

    fn operator_retry(&mut self) -> bool {
        self.write(&operator_retry(self.now))
    }
}

impl StateMachineTest for Sut {
    type SystemUnderTest = Sut;
    type Reference = Model;

    fn init_test(_: &Ref) -> Sut {
        Sut {
            a: fresh(),
            now: 0,
            running: None,
            runs: 0,
            dlq: Vec::new(),
            backoff: None,
            before: fresh(),
            last_op: None,
        }
    }

    fn apply(mut s: Sut, _: &Ref, op: Op) -> Sut {
        s.before = s.a.clone();
        s.last_op = Some(op.clone());
        let now = at(s.now);
        match op {
            Op::Wait(ms) => {
                s.now += ms;
                // Lambda ends a run at its deadline, before its lease.
                if s.a.live_lease(at(s.now)).is_none() {
                    s.running = None;
                }
            }
            Op::Receive => {
                s.runs += 1;
                let token = format!("run{}", s.runs);
                let b = Transition::Begin {
                    token: token.clone(),
                    now,
                    lease_until: at(s.now + LEASE_MS),
                    execution_id: "e1".into(),
                    target_id: "t1".into(),
                    crash_limit: LIMIT,
                };
                match b.decide(&s.a) {
                    Ok(next) => {
                        assert!(s.running.is_none(), "a second send in flight");
                        if let Some((from, delay)) = s.backoff.take() {
                            assert!(
                                s.now - from >= delay,
                                "a try {} ms after a backoff of {delay} ms",
                                s.now - from
                            );
                        }
                        s.a = next;
                        s.running = Some(token);
                    }
                    Err(Refusal::CrashLoop { .. }) => {
                        let stop = Transition::StopCrashLoop {
                            error: crash_loop_error(&s.a, LIMIT, now),
                            crash_limit: LIMIT,
                        };
                        assert!(s.write(&stop), "a refused crash loop can be stopped");
                    }
                    Err(_) => {}
                }
            }
            Op::Succeed => {
                let token = s.holder();
                let mut t = deliver(&token, s.now);
                if let Transition::Deliver { recipients, .. } = &mut t {
                    recipients.push(RecipientOutcome {
                        address: "a@example.com".into(),
                        role: crate::domain::recipient::Role::To,
                        status: RecipientStatus::Sent,
                        message_id: Some("m1".into()),
                        bounce: None,
                        detail: None,
                        at: now,
                    });
                }
                assert!(s.write(&t));
                s.running = None;
            }
            Op::Feedback(i, forged) => {
                s.write(&Transition::Feedback(Feedback {
                    message_id: if forged { "m0" } else { "m1" }.into(),
                    address: "A@example.com".into(),
                    status: RecipientStatus::ALL[i],
                    bounce: None,
                    detail: Some("smtp; 550 5.1.1 user unknown".into()),
                    at: now,
                }));
            }
            Op::TempFail => {
                let token = s.holder();
                let t = match policy().decide(s.a.retry_count, false, None, 0.5) {
                    RetryDecision::Backoff(d) => {
                        let d = d.as_millis() as i64;
                        s.backoff = Some((s.now, d));
                        retry(&token, s.now, s.now + d)
                    }
                    RetryDecision::Exhausted => exhausted(&token, s.now),
                    RetryDecision::Immediate(_) => unreachable!("not offered"),
                };
                assert!(s.write(&t));
                s.running = None;
            }
            Op::PermFail => {
                let token = s.holder();
                let t = Transition::Fail {
                    token: Some(token),
                    error: error("http_410", s.now),
                    tries: None,
                    dead_letter: false,
                    recipients: Vec::new(),
                };
                assert!(s.write(&t));
                s.running = None;
            }
            Op::Defer(ms) => {
                let token = s.holder();
                let t = Transition::Defer {
                    token,
                    now,
                    tries: TriesUpdate::default(),
                    next_try_at: at(s.now + ms),
                    rate_slot: None,
                };
                assert!(s.write(&t));
                s.backoff = Some((s.now, ms));
                s.running = None;
            }
            Op::Crash => s.running = None,
            Op::FinishLetter(die) => s.send_letter(!die),
            Op::Reconcile => {
                // The reconciler's own rule (handlers::reconcile::decide),
                // with the transitions it writes.
                let leases = s.a.crashed_leases_at(now);
                if !s.a.is_settled() && s.a.live_lease(now).is_none() && leases >= LIMIT {
                    let stop = Transition::StopCrashLoop {
                        error: crash_loop_error(&s.a, leases, now),
                        crash_limit: LIMIT,
                    };
                    assert!(s.write(&stop));
                } else {
                    s.write(&Transition::Requeue {
                        now,
                        quiet_since: Some(at(s.now - STALE_MS - 1)),
                    });
                }
                s.send_letter(true);
            }
            Op::OperatorRetry => {
                s.operator_retry();
            }
            Op::Redrive => {
                if s.a.status == AttemptStatus::Failed {
                    s.dlq.clear();
                    assert!(s.operator_retry());
                }
            }
            Op::Sweep => {
                let record = (s.a.status == AttemptStatus::Failed && s.a.dead_letter.is_some())
                    .then_some(s.a.episode);
                let had = s.dlq.iter().any(|e| Some(*e) == record);
                s.dlq.clear();
                if had {
                    s.dlq.extend(record);
                }
            }
        }
        s
    }

    fn check_invariants(s: &Sut, m: &Ref) {
        let a = &s.a;
        // The record agrees with the model
        let status = match a.status {
            AttemptStatus::Queued => S::Queued,
            AttemptStatus::Processing => S::Processing,
            AttemptStatus::Delivered => S::Delivered,
            AttemptStatus::Failed => S::Failed,
        };
        assert_eq!(status, m.status, "status");
        assert_eq!(a.episode, m.episode, "episode");
        assert_eq!(a.retry_count as usize, m.backoffs, "backoffs");
        assert_eq!(
            a.dead_letter.as_ref().map(|d| d.sent_at.is_some()),
            m.letter,
            "letter"
        );
        assert_eq!(s.dlq, m.dlq, "dead-letter queue");
        assert_eq!(s.running.is_some(), m.holder_running(), "a run in flight");
        assert_eq!(
            a.recipients.first().map(|r| r.status.rank()),
            m.news,
            "the recipient's news"
        );
        // News of a recipient changes that recipient and nothing else
        if matches!(s.last_op, Some(Op::Feedback(..))) {
            let mut same = a.clone();
            same.recipients = s.before.recipients.clone();
            same.version = s.before.version;
            assert_eq!(same, s.before, "feedback changed more than a recipient");
        }
        // Terminal is terminal unless an operator reopens it
        if s.before.status.is_terminal() {
            let reopened = matches!(s.last_op, Some(Op::OperatorRetry | Op::Redrive));
            let confirmed = s.before.dead_letter_pending() && !a.dead_letter_pending();
            assert!(
                a.status == s.before.status || reopened,
                "{:?} left {:?}",
                s.last_op,
                s.before.status
            );
            let news = matches!(s.last_op, Some(Op::Feedback(..)));
            if a.status == s.before.status && !confirmed && !news {
                assert_eq!(a, &s.before, "a terminal record changed");
            }
        }
        // At most one copy of the record's letter, and none of another
        // episode once swept
        let mine = s.dlq.iter().filter(|e| **e == a.episode).count();
        if matches!(s.last_op, Some(Op::Sweep)) {
            let expect = a.status == AttemptStatus::Failed
                && a.dead_letter.as_ref().is_some_and(|d| d.sent_at.is_some());
            assert!(mine <= 1 && s.dlq.len() == mine);
            if mine == 1 {
                assert!(a.dead_letter.is_some());
            }
            if !expect {
                assert!(
                    a.dead_letter_pending() || mine == 0,
                    "a letter without its record"
                );
            }
        }
        // Nothing unfinished is unfindable: once quiet for long enough,
        // the reconciler may requeue it or stop its crash loop.
        if !a.is_settled() {
            let later = a
                .last_activity()
                .max(at(s.now))
                .plus(time::Duration::milliseconds(STALE_MS + 1));
            let requeue = Transition::Requeue {
                now: later,
                quiet_since: Some(later.plus(time::Duration::milliseconds(-STALE_MS))),
            };
            let stop = Transition::StopCrashLoop {
                error: crash_loop_error(a, LIMIT, later),
                crash_limit: LIMIT,
            };
            assert!(
                requeue.permits(a) || stop.permits(a),
                "an unfinished attempt the reconciler cannot reach: {a:?}"
            );
        }
    }
}

prop_state_machine! {
    #![proptest_config(ProptestConfig {
        cases: 400,
        max_shrink_iters: 4096,
        .. ProptestConfig::default()
    })]

    #[test]
    fn the_record_keeps_its_promises_in_every_story(sequential 1..60 => Sut);
}
