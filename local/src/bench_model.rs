//! Benchmarks through the same ports against [`crate::model`], a local
//! fake with a modelled latency per call, where moto is the bottleneck:
//!
//! * `fanout`: fans one execution out to N targets with the real fan-out
//!   handler; counts every call against the minimum any design needs.
//! * `deliver`: the real deliver handler and webhook channel, batches of 1
//!   and of 10 signed webhooks to a local receiver answering after 200 ms;
//!   wall time per invocation and CPU time per delivery.

use crate::bench::{rendered_execution, webhook_target_records};
use crate::model::Model;
use anyhow::Result;
use shared::domain::connection::Credentials;
use shared::domain::{ServiceConnection, Timestamp};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const EMAIL_Q: &str = "model://EmailDeliveryQueue";
const SLACK_Q: &str = "model://SlackDeliveryQueue";
const WEBHOOK_Q: &str = "model://WebhookDeliveryQueue";

fn fanout_deps(model: &Model) -> shared::handlers::fanout::Deps {
    use shared::handlers::fanout::{ChannelQueues, Deps};
    Deps {
        metrics: shared::metrics::Metrics::none(),
        targets: Box::new(model.clone()),
        attempts: Box::new(model.clone()),
        executions: Box::new(model.clone()),
        queue: Box::new(model.clone()),
        channel_queues: ChannelQueues {
            email: EMAIL_Q.into(),
            slack: SLACK_Q.into(),
            webhook: WEBHOOK_Q.into(),
        },
        fanout_queue_url: "model://FanoutQueue".into(),
        dead_letter_url: "model://FanoutDeadLetterQueue".into(),
        outcomes_url: None,
        page_size: 500,
        concurrency: 16,
        reserve: Duration::from_secs(20),
    }
}

/// An SQS event as the event source mapping builds it.
fn sqs_event(bodies: &[String]) -> Result<aws_lambda_events::sqs::SqsEvent> {
    let now = Timestamp::now().unix_millis().to_string();
    let records: Vec<serde_json::Value> = bodies
        .iter()
        .map(|body| {
            serde_json::json!({
                "messageId": uuid::Uuid::new_v4().to_string(),
                "receiptHandle": uuid::Uuid::new_v4().to_string(),
                "body": body,
                "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": now},
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:model-WebhookDeliveryQueue",
            })
        })
        .collect();
    Ok(serde_json::from_value(
        serde_json::json!({ "Records": records }),
    )?)
}

/// Fans one execution out to `targets` webhook targets.
pub async fn fanout(targets: usize, latency: Duration) -> Result<()> {
    let model = Model::new(latency);
    let report = "rpt-bench";
    model.seed(
        webhook_target_records(report, targets, 0, "https://hooks.example.com")?,
        vec![rendered_execution("exec-bench", report)],
        Vec::new(),
    );
    let deps = fanout_deps(&model);
    let event = sqs_event(&[r#"{"type":"fanout.v1","execution_id":"exec-bench"}"#.to_owned()])?;
    let t = Instant::now();
    let response = shared::handlers::fanout::handle(&deps, event, None).await;
    let wall = t.elapsed();
    anyhow::ensure!(response.batch_item_failures.is_empty(), "fan-out failed");
    let queued = model.take_sent(WEBHOOK_Q).len();
    anyhow::ensure!(queued == targets, "{queued} messages for {targets} targets");
    println!(
        "fanout (model, {} ms per call): {targets} targets in {:.2} s",
        latency.as_millis(),
        wall.as_secs_f64()
    );
    let calls = model.calls();
    let total: u64 = calls.values().sum();
    for (op, n) in &calls {
        println!("  {op:<40} {n}");
    }
    let minimum = targets.div_ceil(500) + targets + targets.div_ceil(10);
    println!(
        "  {:<40} {total} (minimum for conditional creates and batches of 10: {minimum})",
        "total"
    );
    Ok(())
}

/// Per round, one execution to one signed webhook target and one to ten,
/// the receiver answering each request after 200 ms.
pub async fn deliver(rounds: usize, latency: Duration) -> Result<()> {
    use crate::sinks::{Fault, WebhookSink};
    let sink = WebhookSink::start(None, None).await?;
    let model = Model::new(latency);
    let signing = ServiceConnection {
        id: "conn-bench".into(),
        credentials: Credentials::WebhookSigning {
            secrets: vec!["whsec_dGVzdC1zaWduaW5nLXNlY3JldC0zMi1ieXRlcy1sb25nIQ==".into()],
        },
    };
    let mut targets = Vec::new();
    for (report, n) in [("rpt-1", 1), ("rpt-10", 10)] {
        for mut t in webhook_target_records(report, n, 0, &format!("{}/hooks/{report}", sink.url))?
        {
            t.service_connection_id = Some(signing.id.clone());
            targets.push(t);
        }
    }
    model.seed(targets, Vec::new(), vec![signing]);
    let fanout = fanout_deps(&model);
    let client = shared::channel::webhook::LazyClient::new(true, shared::channel::webhook::TIMEOUT);
    let deps = shared::handlers::deliver::Deps {
        metrics: shared::metrics::Metrics::none(),
        attempts: Box::new(model.clone()),
        targets: Box::new(model.clone()),
        executions: Box::new(model.clone()),
        connections: Box::new(model.clone()),
        suppressions: Box::new(model.clone()),
        stats: Box::new(model.clone()),
        stats_batch: shared::handlers::StatsBatch::default(),
        outcome_batch: Default::default(),
        rate_limits: Box::new(model.clone()),
        blobs: Box::new(model.clone()),
        queue: Box::new(model.clone()),
        channels: shared::channel::Channels {
            webhook: Box::new(shared::channel::webhook::WebhookChannel::with_client(
                client.clone(),
                true,
            )),
            email: None,
            slack: Box::new(shared::channel::slack::SlackChannel::with_client(
                "http://127.0.0.1:9/api",
                client,
                true,
            )),
        },
        policy: shared::domain::RetryPolicy::default(),
        dead_letter_url: "model://DeliveryDeadLetterQueue".into(),
        outcomes_url: Some("model://OutcomesQueue".into()),
        auto_disable: shared::handlers::deliver::AutoDisable::default(),
        links: shared::handlers::links::LinkIssuer::lazy(
            Box::new(FixedKeys),
            "https://links.example.com".into(),
        ),
        link_ttl: Duration::from_secs(7 * 24 * 3600),
        timing: shared::handlers::deliver::Timing::default(),
        sqs_endpoint: None,
        concurrency: 10,
    };
    let me = std::process::id();
    let mut walls: BTreeMap<usize, Vec<f64>> = BTreeMap::new();
    let mut cpu = 0;
    let mut deliveries = 0;
    let mut calls: BTreeMap<&'static str, u64> = BTreeMap::new();
    // One warm-up round (the HTTP client and link keys are built at first use).
    for round in 0..=rounds {
        for (report, n) in [("rpt-1", 1), ("rpt-10", 10)] {
            let execution = format!("exec-{round}-{report}");
            model.seed(
                Vec::new(),
                vec![rendered_execution(&execution, report)],
                Vec::new(),
            );
            let task = format!(r#"{{"type":"fanout.v1","execution_id":"{execution}"}}"#);
            let response =
                shared::handlers::fanout::handle(&fanout, sqs_event(&[task])?, None).await;
            anyhow::ensure!(response.batch_item_failures.is_empty(), "fan-out failed");
            let bodies = model.take_sent(WEBHOOK_Q);
            anyhow::ensure!(bodies.len() == n, "{} messages", bodies.len());
            for _ in 0..n {
                sink.push_fault(Fault::Delay(Duration::from_millis(200)));
            }
            let event = sqs_event(&bodies)?;
            model.reset_calls();
            let cpu_before = crate::runner::cpu_ticks_of(me).unwrap_or(0);
            let deadline = Timestamp::from_unix_millis(Timestamp::now().unix_millis() + 60_000);
            let t = Instant::now();
            let response = shared::handlers::deliver::handle(&deps, event, deadline).await;
            let wall = t.elapsed();
            anyhow::ensure!(response.batch_item_failures.is_empty(), "a delivery failed");
            if round > 0 {
                cpu += crate::runner::cpu_ticks_of(me)
                    .unwrap_or(0)
                    .saturating_sub(cpu_before);
                deliveries += n;
                walls
                    .entry(n)
                    .or_default()
                    .push(wall.as_secs_f64() * 1000.0);
                for (op, c) in model.calls() {
                    *calls.entry(op).or_default() += c;
                }
            }
        }
    }
    println!(
        "deliver (model, {} ms per store/queue call): {rounds} rounds of 1 + 10 signed webhooks, receiver answers after 200 ms",
        latency.as_millis()
    );
    crate::bench::print_batches(walls);
    println!(
        "  CPU: {:.2} ms per delivery ({} ms over {deliveries} deliveries; this process, the receiver included)",
        cpu as f64 * 10.0 / deliveries.max(1) as f64,
        cpu * 10
    );
    println!("  calls per delivery:");
    for (op, c) in calls {
        println!("    {op:<40} {:.2}", c as f64 / deliveries.max(1) as f64);
    }
    Ok(())
}

/// One fixed link-signing key.
struct FixedKeys;

#[async_trait::async_trait]
impl shared::handlers::links::KeySource for FixedKeys {
    async fn fetch(&self) -> Result<String, String> {
        Ok("0123456789abcdef0123456789abcdef".into())
    }
}
