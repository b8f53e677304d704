//! Chaos: one execution fanned out to every channel while 30 % of sends get
//! temporary faults (5xx, 429 with Retry-After, timeouts, dropped
//! connections), deliver's execution environments are killed at random
//! times and at random points of their code, duplicate delivery messages
//! are injected, the reconciler runs every 10 s (re-sending what looks
//! lost), fan-out messages come again, and an operator retries failed
//! attempts and redrives the dead-letter queue through the API. The retry
//! schedule has steps of different lengths (1 s, 3 s, 12 s: 5 m, 15 m, 1 h
//! scaled down). At the end every attempt must be terminal, the
//! dead-letter queue must hold exactly the attempts failed by exhaustion
//! now, tries must be spaced by their backoffs, nothing may be lost, and
//! duplicates may come only from the documented windows.
//!
//! `make test` runs 240 deliveries; `make soak` runs the ignored
//! [`soak`] test with `CHAOS_DELIVERIES` (default 1000).

use crate::delivery::wait_empty;
use local::chaos::{Chaos, FaultProxy};
use local::stack::LocalStack;
use report_delivery_tests::{fast_stack, sample_execution};
use shared::contract::DeliveryTask;
use shared::domain::{AttemptStatus, DeliveryAttempt, TargetType};
use shared::store::AttemptStore;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The code's kill points (see `shared::chaos`); fan-out is left out because
/// its queue's visibility timeout (9 min) would only make the run slow.
const KILL_POINTS: &str = "deliver.after_begin,deliver.after_send,deliver.before_backoff_visibility,deliver.after_exhausted,deliver.after_dead_letter";

/// The retry schedule: 5 m, 15 m, 1 h scaled down, steps of different
/// lengths.
const SCHEDULE: &str = "1,3,12";

/// What a chaos run saw.
#[derive(Debug, Default)]
struct Summary {
    deliveries: usize,
    delivered: usize,
    failed: usize,
    lost: usize,
    duplicates: BTreeMap<&'static str, usize>,
    kills_external: u64,
    kills_in_code: usize,
    faults: BTreeMap<&'static str, u64>,
    duplicate_messages: u64,
    dead_letters: usize,
    operator_actions: u64,
    requeued: u64,
    elapsed: Duration,
}

impl Summary {
    /// The one-line result a run prints (and RELIABILITY.md records).
    fn line(&self) -> String {
        let map = |m: &dyn Fn() -> Vec<String>| m().join(" ");
        format!(
            "chaos: deliveries={} delivered={} failed={} lost={} duplicates[{}] kills[external={} in_code={}] faults[{}] duplicate_messages={} reconciler_requeues={} operator_actions={} dead_letters={} elapsed={}s",
            self.deliveries,
            self.delivered,
            self.failed,
            self.lost,
            map(&|| self
                .duplicates
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect()),
            self.kills_external,
            self.kills_in_code,
            map(&|| self
                .faults
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect()),
            self.duplicate_messages,
            self.requeued,
            self.operator_actions,
            self.dead_letters,
            self.elapsed.as_secs()
        )
    }
}

#[tokio::test]
async fn chaos_240_deliveries_end_terminal_with_nothing_lost() {
    let summary = chaos_run(240, 0x5eed).await;
    assert!(summary.delivered > 0);
}

#[tokio::test]
#[ignore = "soak: run with `make soak`"]
async fn soak() {
    let n = std::env::var("CHAOS_DELIVERIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let seed = std::env::var("CHAOS_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0xc4a05);
    chaos_run(n, seed).await;
}

async fn chaos_run(deliveries: usize, seed: u64) -> Summary {
    let started = Instant::now();
    let hooks = Arc::new(Chaos::new(0.3, seed));
    // A Slack bot send is three calls: 12 % each is about 30 % per send.
    let slack = Arc::new(Chaos::new(0.12, seed ^ 0x51ac));
    let ses = Arc::new(Chaos::new(0.3, seed ^ 0x5e5));
    let proxy = FaultProxy::start(&local::endpoint().expect("moto"), ses.clone())
        .await
        .expect("SES proxy");
    // The reconciler's stale window scales with the run, as production's
    // 30 minutes does with its backlogs: a 20 s window under a 1,000-target
    // backlog re-sent 600 messages a pass, and the copies outlasted the run.
    let stale = (deliveries / 10).max(20).to_string();
    let s = fast_stack(
        "chaos",
        &[
            ("AWS_ENDPOINT_URL_SESV2", &proxy.url),
            ("CHAOS_KILL_POINTS", KILL_POINTS),
            ("CHAOS_KILL_RATE", "0.02"),
            ("DEAD_LETTER_REPAIR_SECONDS", "2"),
            ("RETRY_SCHEDULE_SECONDS", SCHEDULE),
            ("RECONCILE_STALE_SECONDS", &stale),
        ],
    )
    .await;
    s.webhook.set_chaos(hooks.clone());
    s.slack.set_chaos(slack.clone());
    // A receiver that always fails, so some attempts exhaust their retries
    let doom = local::sinks::WebhookSink::start(None, None)
        .await
        .expect("doomed receiver");
    let doom_chaos = Arc::new(Chaos::new(1.0, seed ^ 0xd00));
    doom.set_chaos(doom_chaos.clone());
    let doomed = (deliveries / 40).max(2);
    let targets = seed_targets(&s, deliveries - doomed, &doom.url, doomed).await;

    // When one execution goes to all of them
    let (execution_id, body) = sample_execution("rpt-chaos");
    s.send("ExecutionsQueue", &body).await.expect("send");
    let stop = Arc::new(AtomicBool::new(false));
    let kills = Arc::new(AtomicU64::new(0));
    let dups = Arc::new(AtomicU64::new(0));
    let s = Arc::new(s);
    let killer = tokio::spawn(kill_now_and_then(
        s.clone(),
        stop.clone(),
        kills.clone(),
        seed,
    ));
    let duplicator = tokio::spawn(duplicate_messages(
        s.clone(),
        execution_id.clone(),
        targets.clone(),
        stop.clone(),
        dups.clone(),
        seed,
    ));
    let requeued = Arc::new(AtomicU64::new(0));
    let reconciler = tokio::spawn(reconcile_now_and_then(
        s.clone(),
        execution_id.clone(),
        stop.clone(),
        requeued.clone(),
    ));
    // The operator acts until its budget is spent, then leaves the run to
    // settle (its retries reopen attempts).
    let operated = operate(s.clone(), execution_id.clone(), seed, deliveries / 30).await;
    // A generous bound: a killed environment's messages wait out their
    // 40 s visibility timeout, and the local runner has four environments.
    let settle = Duration::from_secs((deliveries as u64 * 2).max(900));
    s.wait_settled(&execution_id, deliveries, settle)
        .await
        .expect("every attempt ends delivered or failed");
    stop.store(true, Ordering::SeqCst);
    let _ = killer.await;
    let _ = duplicator.await;
    let _ = reconciler.await;
    for q in [
        "EmailDeliveryQueue",
        "SlackDeliveryQueue",
        "WebhookDeliveryQueue",
    ] {
        wait_empty(&s, q).await;
    }

    // Then the execution left the unsettled index before any reconciler
    // run: runs that died before their flush were made up for by the
    // copies of their messages
    let later = shared::domain::Timestamp::now().plus(time::Duration::seconds(1));
    for shard in 0..shared::store::PENDING_SHARDS {
        let page = shared::store::ExecutionStore::unsettled(&s.store, shard, later, None, 100)
            .await
            .expect("query");
        assert!(
            !page.items.contains(&execution_id),
            "{execution_id} is still unsettled"
        );
    }

    // And nothing was left behind: the reconciler finds nothing to redo
    let report = s
        .function("reconcile")
        .expect("reconcile")
        .invoke_json(&serde_json::json!({}))
        .await
        .expect("reconcile runs");
    assert_eq!(report["requeued"], 0, "{report}");
    assert_eq!(report["failed"], 0, "{report}");
    let attempts = s.store.by_execution(&execution_id).await.expect("attempts");
    // And every try waited out the backoff or deferral before it, whoever
    // sent the message that started it
    for a in &attempts {
        for w in a.history.windows(2) {
            let (before, after) = (&w[0], &w[1]);
            let waited = after.at.millis_since(before.at);
            let due = before.delay_ms.unwrap_or(0) as i64;
            assert!(
                waited >= due,
                "{}: try {} began {waited} ms after try {}, inside its {due} ms wait",
                a.id,
                after.n,
                before.n
            );
        }
    }
    assert_eq!(attempts.len(), deliveries);
    assert!(attempts.iter().all(DeliveryAttempt::is_settled));
    // And the dead-letter queue holds exactly the dead-lettered attempts
    let mut dead = Vec::new();
    loop {
        let batch = s
            .drain("DeliveryDeadLetterQueue", Duration::from_secs(2))
            .await
            .expect("drain");
        if batch.is_empty() {
            break;
        }
        dead.extend(batch);
    }
    let lettered: Vec<String> = dead
        .iter()
        .map(|d| {
            assert!(d.attributes.contains_key("error_code"), "a reason: {d:?}");
            d.attributes.get("attempt_id").cloned().expect("attempt_id")
        })
        .collect();
    let lettered_set: BTreeSet<String> = lettered.iter().cloned().collect();
    assert_eq!(
        lettered.len(),
        lettered_set.len(),
        "one dead letter per attempt"
    );
    let should: BTreeSet<String> = attempts
        .iter()
        .filter(|a| a.dead_letter.is_some())
        .map(|a| a.id.clone())
        .collect();
    assert_eq!(lettered_set, should, "the DLQ and the records agree");
    for a in attempts
        .iter()
        .filter(|a| a.status == AttemptStatus::Failed)
    {
        let code = a.last_error.as_ref().map(|e| e.code.as_str());
        assert!(
            matches!(code, Some("retries_exhausted" | "crash_loop")),
            "only temporary faults were injected, yet {} failed with {code:?}",
            a.id
        );
        assert!(
            should.contains(&a.id),
            "{} failed without a dead letter",
            a.id
        );
    }

    // And every delivery reached its receiver; duplicates only where documented
    let mut summary = Summary {
        deliveries,
        delivered: attempts
            .iter()
            .filter(|a| a.status == AttemptStatus::Delivered)
            .count(),
        failed: attempts
            .iter()
            .filter(|a| a.status == AttemptStatus::Failed)
            .count(),
        kills_external: kills.load(Ordering::SeqCst),
        kills_in_code: std::fs::read_to_string(s.work_dir.join("logs/deliver.log"))
            .unwrap_or_default()
            .matches("chaos: killed at")
            .count(),
        duplicate_messages: dups.load(Ordering::SeqCst),
        dead_letters: dead.len(),
        operator_actions: operated,
        requeued: requeued.load(Ordering::SeqCst),
        ..Summary::default()
    };
    summary.faults.insert("webhook", hooks.injected());
    summary.faults.insert("slack", slack.injected());
    summary.faults.insert("ses", ses.injected());
    summary.faults.insert("doomed", doom_chaos.injected());
    let reached = reached_counts(&s, &execution_id, &targets).await;
    for a in attempts
        .iter()
        .filter(|a| a.status == AttemptStatus::Delivered)
    {
        let (channel, n) = reached
            .get(&a.delivery_target_id)
            .copied()
            .unwrap_or(("?", 0));
        if n == 0 {
            summary.lost += 1;
            eprintln!("lost: {} ({channel}) is delivered but never arrived", a.id);
        }
        *summary.duplicates.entry(channel).or_default() += n.saturating_sub(1);
        // Each duplicate of this attempt needs its own explanation: a run
        // that died after a send and before recording it (a later lease
        // took over), or a send whose answer was lost (a timeout or a broken
        // connection, which the provider may still have applied), or an
        // operator's retry. moto's writes are atomic now, so two copies can
        // never both hold the lease.
        let ambiguous = a
            .history
            .iter()
            .filter(|t| matches!(t.code.as_deref(), Some("timeout" | "network" | "deadline")))
            .count();
        let explained = a.begins.saturating_sub(1) as usize + ambiguous + a.operator_actions.len();
        assert!(
            n.saturating_sub(1) <= explained,
            "{} ({channel}) arrived {n} times with only {explained} causes: begins {}, {ambiguous} unanswered sends, {} operator actions",
            a.id,
            a.begins,
            a.operator_actions.len()
        );
    }
    summary.elapsed = started.elapsed();
    eprintln!("{}", summary.line());
    assert_eq!(summary.lost, 0, "nothing is lost");
    assert_eq!(
        summary.duplicates.get("slack_bot").copied().unwrap_or(0),
        0,
        "a bot post is completed once per attempt (files.info guards the retry)"
    );
    // A duplicate needs a kill after a send, or a timed-out send that the
    // receiver still applied late.
    let kills_total = summary.kills_external as usize + summary.kills_in_code;
    for (channel, sink) in [
        ("webhook", "webhook"),
        ("slack_hook", "slack"),
        ("email", "ses"),
    ] {
        let d = summary.duplicates.get(channel).copied().unwrap_or(0);
        let causes = kills_total + summary.faults.get(sink).copied().unwrap_or(0) as usize;
        assert!(
            d <= causes,
            "{channel}: {d} duplicates but only {causes} kills and faults could cause them"
        );
    }
    if let Ok(s) = Arc::try_unwrap(s) {
        s.down().await;
    }
    summary
}

/// One target per delivery, spread over the channels, plus `doomed`
/// webhook targets `d<i>` on a receiver that always fails: webhook `w<i>`,
/// Slack bot `sb<i>` (channel `C<i:08>`), Slack incoming webhook `sh<i>`, and
/// email `e<i>` (to `r<i>@example.com`). Returns (target id, channel).
async fn seed_targets(
    s: &LocalStack,
    n: usize,
    doom_url: &str,
    doomed: usize,
) -> Vec<(String, TargetType)> {
    let mut targets = Vec::new();
    let mut connections = vec![serde_json::json!({
        "id": "conn-bot", "kind": "slack_bot", "secrets": ["{{slack_bot_token}}"]
    })];
    let mut seeded = Vec::new();
    for i in 0..n {
        let (id, kind, config, connection) = match i % 4 {
            0 => (
                format!("w{i}"),
                TargetType::Webhook,
                serde_json::json!({"url": format!("{{{{webhook_sink_url}}}}/hooks/w{i}")}),
                None,
            ),
            1 => (
                format!("sb{i}"),
                TargetType::Slack,
                serde_json::json!({"mode": "bot_token", "channel_id": format!("C{i:08}")}),
                Some("conn-bot".to_owned()),
            ),
            2 => {
                let conn = format!("conn-hook-{i}");
                connections.push(serde_json::json!({
                    "id": conn, "kind": "slack_incoming_webhook",
                    "secrets": [s.slack.webhook_url(&format!("sh{i}"))]
                }));
                (
                    format!("sh{i}"),
                    TargetType::Slack,
                    serde_json::json!({"mode": "incoming_webhook"}),
                    Some(conn),
                )
            }
            _ => (
                format!("e{i}"),
                TargetType::Email,
                serde_json::json!({"to": [format!("r{i}@example.com")], "subject": "{report_name}"}),
                None,
            ),
        };
        let mut t = serde_json::json!({
            "id": id, "report_id": "rpt-chaos", "target_type": kind.as_str(),
            "active": true, "config": config,
        });
        if let Some(c) = connection {
            t["service_connection_id"] = c.into();
        }
        seeded.push(t);
        targets.push((id, kind));
    }
    for i in 0..doomed {
        seeded.push(serde_json::json!({
            "id": format!("d{i}"), "report_id": "rpt-chaos", "target_type": "webhook",
            "active": true, "config": {"url": format!("{doom_url}/hooks/d{i}")},
        }));
        targets.push((format!("d{i}"), TargetType::Webhook));
    }
    let seed = serde_json::json!({"connections": connections, "targets": seeded});
    s.seed(&seed.to_string()).await.expect("seed");
    targets
}

/// Kills one of deliver's execution environments (mid-send or not) every
/// 3–8 s until told to stop.
async fn kill_now_and_then(
    s: Arc<LocalStack>,
    stop: Arc<AtomicBool>,
    kills: Arc<AtomicU64>,
    seed: u64,
) {
    let dice = Chaos::new(1.0, seed ^ 0x1d);
    let host = s.function("deliver").expect("deliver");
    while !stop.load(Ordering::SeqCst) {
        let wait = Duration::from_millis(3000 + (dice.unit() * 5000.0) as u64);
        tokio::time::sleep(wait).await;
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let slot = (dice.unit() * host.pool().await as f64) as usize;
        host.kill_slot(slot).await;
        kills.fetch_add(1, Ordering::SeqCst);
    }
}

/// Runs the reconciler every 10 s (its stale window is 20 s in the 240-target
/// run, so it re-sends messages for attempts whose runs were killed), and
/// sends the execution's fan-out message again each time.
async fn reconcile_now_and_then(
    s: Arc<LocalStack>,
    execution_id: String,
    stop: Arc<AtomicBool>,
    requeued: Arc<AtomicU64>,
) {
    let host = s.function("reconcile").expect("reconcile");
    while !stop.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_secs(10)).await;
        if stop.load(Ordering::SeqCst) {
            break;
        }
        if let Ok(report) = host.invoke_json(&serde_json::json!({})).await {
            requeued.fetch_add(report["requeued"].as_u64().unwrap_or(0), Ordering::SeqCst);
        }
        let fanout = serde_json::json!({"type": "fanout.v1", "execution_id": execution_id});
        let _ = s.send("FanoutQueue", &fanout.to_string()).await;
    }
}

/// An operator at work: every 2–4 s, retries a random failed attempt
/// through the API (with `force`, past the retry limit), and every third
/// action redrives the delivery dead-letter queue instead, until `budget`
/// actions are done (or four minutes pass). Returns the actions taken.
async fn operate(s: Arc<LocalStack>, execution_id: String, seed: u64, budget: usize) -> u64 {
    let api = crate::api::Api::of(&s);
    let dice = Chaos::new(1.0, seed ^ 0x0b5);
    let started = Instant::now();
    let mut done = 0u64;
    while (done as usize) < budget && started.elapsed() < Duration::from_secs(240) {
        tokio::time::sleep(Duration::from_millis(2000 + (dice.unit() * 2000.0) as u64)).await;
        if done % 3 == 2 {
            let (status, _, r) = api
                .call(
                    "POST",
                    "/dlq/delivery/redrive",
                    Some(serde_json::json!({"limit": 2})),
                    &[],
                )
                .await;
            assert_eq!(status, 200, "redrive: {r}");
            if r["moved"].as_u64().unwrap_or(0) > 0 {
                done += 1;
            }
            continue;
        }
        let failed: Vec<DeliveryAttempt> = s
            .store
            .by_execution(&execution_id)
            .await
            .unwrap_or_default()
            .into_iter()
            .filter(|a| a.status == AttemptStatus::Failed)
            .collect();
        if failed.is_empty() {
            continue;
        }
        let a = &failed[((dice.unit() * failed.len() as f64) as usize).min(failed.len() - 1)];
        let (status, _, r) = api
            .call(
                "POST",
                &format!("/attempts/{}/retry", a.id),
                Some(serde_json::json!({"force": true})),
                &[],
            )
            .await;
        // 409: it changed meanwhile (a run was finishing its dead letter)
        assert!(matches!(status, 202 | 409), "retry: {status} {r}");
        if status == 202 {
            done += 1;
        }
    }
    done
}

/// Sends a copy of a random attempt's delivery message every 300 ms, once
/// fan-out has created the attempts.
async fn duplicate_messages(
    s: Arc<LocalStack>,
    execution_id: String,
    targets: Vec<(String, TargetType)>,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    seed: u64,
) {
    let dice = Chaos::new(1.0, seed ^ 0xd0);
    while !stop.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let i = ((dice.unit() * targets.len() as f64) as usize).min(targets.len() - 1);
        let (target_id, kind) = &targets[i];
        let attempt_id = shared::domain::attempt::attempt_id(&execution_id, target_id);
        if !matches!(s.store.get(&attempt_id).await, Ok(Some(_))) {
            continue;
        }
        let body = serde_json::to_string(&DeliveryTask::DeliverV1 {
            attempt_id,
            execution_id: execution_id.clone(),
            target_id: target_id.clone(),
        })
        .expect("json");
        let queue = match kind {
            TargetType::Email => "EmailDeliveryQueue",
            TargetType::Slack => "SlackDeliveryQueue",
            TargetType::Webhook => "WebhookDeliveryQueue",
        };
        if s.send(queue, &body).await.is_ok() {
            sent.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// How many times each target's delivery reached its receiver (answered
/// with success), with its channel name.
async fn reached_counts(
    s: &LocalStack,
    execution_id: &str,
    targets: &[(String, TargetType)],
) -> BTreeMap<String, (&'static str, usize)> {
    let mut out: BTreeMap<String, (&'static str, usize)> = BTreeMap::new();
    let by_attempt: BTreeMap<String, &String> = targets
        .iter()
        .map(|(t, _)| (shared::domain::attempt::attempt_id(execution_id, t), t))
        .collect();
    for (t, kind) in targets {
        let channel = match (kind, t.starts_with("sb")) {
            (TargetType::Webhook, _) => "webhook",
            (TargetType::Slack, true) => "slack_bot",
            (TargetType::Slack, false) => "slack_hook",
            (TargetType::Email, _) => "email",
        };
        out.insert(t.clone(), (channel, 0));
    }
    let mut bump = |target: Option<&String>| {
        if let Some(e) = target.and_then(|t| out.get_mut(t)) {
            e.1 += 1;
        }
    };
    for r in s.webhook.received() {
        if r.answered.is_some_and(|c| (200..300).contains(&c)) {
            bump(
                r.headers
                    .get("webhook-id")
                    .and_then(|id| by_attempt.get(id).copied()),
            );
        }
    }
    for m in s.slack.messages() {
        let target = match (&m.channel_id, &m.hook) {
            (Some(c), _) => c
                .trim_start_matches('C')
                .parse::<usize>()
                .ok()
                .map(|i| format!("sb{i}")),
            (None, Some(h)) => h.rsplit('/').next().map(str::to_owned),
            _ => None,
        };
        bump(target.as_ref());
    }
    for mail in s.emails(execution_id).await.expect("emails") {
        let target = mail
            .destinations
            .iter()
            .find_map(|d| {
                d.strip_prefix('r')?
                    .strip_suffix("@example.com")?
                    .parse::<usize>()
                    .ok()
            })
            .map(|i| format!("e{i}"));
        bump(target.as_ref());
    }
    out
}
