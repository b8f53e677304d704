//! Monitoring end to end: the functions' real stdout carries valid EMF
//! records with the catalogue's names, units and bounded dimensions, the
//! counts match what happened, and the dashboard and alarms in
//! `template.yaml` name only metrics and dimensions the code emits.

use local::sinks::Fault;
use local::stack::LocalStack;
use local::template::{Template, resolve};
use report_delivery_tests::{running_stack, sample_execution, webhook_targets};
use serde_json::Value;
use shared::domain::AttemptStatus;
use shared::metrics::{Metric, validate};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

const SETTLE: Duration = Duration::from_secs(60);

/// One emitted record: metric and its dimension values.
pub(crate) type Record = (Metric, Vec<(String, String)>, f64);

/// Every EMF record in the functions' logs; panics on an invalid one.
pub(crate) fn emitted(s: &LocalStack) -> Vec<Record> {
    let mut out = Vec::new();
    let dir = s.work_dir.join("logs");
    for entry in std::fs::read_dir(&dir).expect("logs") {
        let path = entry.expect("entry").path();
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        for line in text.lines().filter(|l| l.contains("\"_aws\"")) {
            let (metric, dims) = validate(line)
                .unwrap_or_else(|e| panic!("{}: invalid EMF record {line}: {e}", path.display()));
            let v: Value = serde_json::from_str(line).expect("json");
            // One sample per value: a buffered emitter writes arrays.
            for value in shared::metrics::values(&v[metric.name()]) {
                out.push((metric, dims.clone(), value));
            }
        }
    }
    out
}

pub(crate) fn sum(records: &[Record], metric: Metric, dims: &[(&str, &str)]) -> f64 {
    records
        .iter()
        .filter(|(m, d, _)| {
            *m == metric
                && dims
                    .iter()
                    .all(|(k, v)| d.iter().any(|(dk, dv)| dk == k && dv == v))
        })
        .map(|(_, _, v)| v)
        .sum()
}

fn count(records: &[Record], metric: Metric) -> usize {
    records.iter().filter(|(m, _, _)| *m == metric).count()
}

async fn wait_for(s: &LocalStack, what: &str, ok: impl Fn(&[Record]) -> bool) {
    let until = std::time::Instant::now() + SETTLE;
    while std::time::Instant::now() < until {
        if ok(&emitted(s)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn the_functions_emit_valid_emf_that_counts_what_happened_and_feeds_the_dashboard() {
    let s = running_stack("metrics", &[]).await;
    s.seed(&webhook_targets(
        "rpt-ok",
        &[("ok", "/hooks/ok", true, true)],
    ))
    .await
    .expect("seed");
    s.seed(&webhook_targets(
        "rpt-gone",
        &[("gone", "/hooks/gone", true, true)],
    ))
    .await
    .expect("seed");

    // A delivery that fails twice (an immediate retry, then a backoff)
    for _ in 0..2 {
        s.webhook.push_fault(Fault::Status {
            code: 503,
            retry_after: None,
        });
    }
    let (ok_id, ok_body) = sample_execution("rpt-ok");
    s.send("ExecutionsQueue", &ok_body).await.expect("send");
    let ok = s.wait_settled(&ok_id, 1, SETTLE).await.expect("settles");
    assert_eq!(ok[0].status, AttemptStatus::Delivered);

    // A receiver that is gone: a permanent failure that flags the target
    s.webhook.push_fault(Fault::Status {
        code: 410,
        retry_after: None,
    });
    let (gone_id, gone_body) = sample_execution("rpt-gone");
    s.send("ExecutionsQueue", &gone_body).await.expect("send");
    let gone = s.wait_settled(&gone_id, 1, SETTLE).await.expect("settles");
    assert_eq!(gone[0].status, AttemptStatus::Failed);

    // A duplicate execution message, a malformed one, and a reconciler run
    s.send("ExecutionsQueue", &ok_body).await.expect("send");
    s.send("ExecutionsQueue", "{not json").await.expect("send");
    wait_for(&s, "the duplicate and the dead letter", |r| {
        sum(r, Metric::DuplicatesIgnored, &[("Stage", "executions")]) >= 1.0
            && sum(r, Metric::DuplicatesIgnored, &[("Stage", "fanout")]) >= 1.0
            && sum(r, Metric::DeadLettered, &[("Stage", "executions")]) >= 1.0
    })
    .await;
    s.function("reconcile")
        .expect("reconcile function")
        .invoke_json(&serde_json::json!({"source": "aws.events"}))
        .await
        .expect("reconcile runs");

    // Then every record is valid EMF (checked while reading) and the counts
    // are exact
    let r = emitted(&s);
    let webhook = ("Channel", "webhook");
    assert_eq!(sum(&r, Metric::AttemptsStarted, &[webhook]), 2.0);
    assert_eq!(
        sum(&r, Metric::Deliveries, &[webhook, ("Outcome", "delivered")]),
        1.0
    );
    assert_eq!(
        sum(&r, Metric::Deliveries, &[("Outcome", "failed_permanent")]),
        1.0
    );
    assert_eq!(
        sum(&r, Metric::Deliveries, &[("Outcome", "failed_exhausted")]),
        0.0
    );
    assert_eq!(sum(&r, Metric::ImmediateRetries, &[webhook]), 1.0);
    assert_eq!(sum(&r, Metric::RetriesScheduled, &[webhook]), 1.0);
    assert_eq!(
        sum(
            &r,
            Metric::SendErrors,
            &[webhook, ("ErrorCode", "http_5xx")]
        ),
        2.0
    );
    assert_eq!(
        sum(&r, Metric::SendErrors, &[("ErrorCode", "http_410_gone")]),
        1.0
    );
    // Gone: disabled at once by the default policy
    assert_eq!(
        sum(
            &r,
            Metric::TargetsStopped,
            &[webhook, ("Change", "disabled")]
        ),
        1.0
    );
    assert_eq!(count(&r, Metric::SendDuration), 4, "one per try");
    assert_eq!(count(&r, Metric::EndToEndLatency), 1, "one per delivery");
    assert_eq!(count(&r, Metric::RenderDuration), 2, "one per render");
    assert!(sum(&r, Metric::PdfBytes, &[]) > 2000.0, "PDF sizes");
    // The duplicate execution's fan-out had finished: it is ignored
    assert_eq!(sum(&r, Metric::TargetsPerExecution, &[]), 2.0);
    assert_eq!(count(&r, Metric::FanoutDuration), 2);
    assert_eq!(
        sum(&r, Metric::DuplicatesIgnored, &[("Stage", "fanout")]),
        1.0
    );
    assert!(
        count(&r, Metric::StuckAttempts) >= 1,
        "the reconciler reports"
    );
    assert_eq!(sum(&r, Metric::StuckAttempts, &[]), 0.0);

    // An email to an address that bounces (the SES simulator), every
    // event twice: the feedback function's metrics.
    s.ses.duplicate(true);
    report_delivery_tests::seed_target(
        &s,
        "rpt-mail",
        "mail",
        "email",
        serde_json::json!({"to": ["bounce@simulator.amazonses.com"]}),
        None,
        &["pdf"],
    )
    .await;
    let (mail_id, mail_body) = sample_execution("rpt-mail");
    s.send("ExecutionsQueue", &mail_body).await.expect("send");
    s.wait_settled(&mail_id, 1, SETTLE).await.expect("settles");
    wait_for(&s, "SES's news, and a copy of it", |r| {
        sum(r, Metric::EmailEvents, &[("Event", "bounce")]) >= 1.0
            && sum(r, Metric::FeedbackIgnored, &[("Reason", "already_known")]) >= 1.0
    })
    .await;
    let r = emitted(&s);

    // And the dashboard and alarms name only what the code emitted
    let mut seen: BTreeMap<&str, BTreeSet<Vec<String>>> = BTreeMap::new();
    for (m, _, _) in &r {
        for set in m.dimension_sets() {
            seen.entry(m.name()).or_default().insert({
                let mut keys: Vec<String> = set.iter().map(|d| d.as_str().to_owned()).collect();
                keys.sort();
                keys
            });
        }
    }
    let used = template_metric_uses();
    assert!(
        used.len() >= 10,
        "the dashboard and alarms use the app's metrics: {used:?}"
    );
    for (name, dims) in &used {
        let sets = seen
            .get(name.as_str())
            .unwrap_or_else(|| panic!("the template uses {name}, which the code never emitted"));
        assert!(
            sets.contains(dims),
            "the template uses {name} by {dims:?}; the code emits it by {sets:?}"
        );
    }
    s.down().await;
}

/// (metric, sorted dimension keys) for every use of the app's namespace in
/// the dashboard body and the alarms of `template.yaml`.
fn template_metric_uses() -> BTreeSet<(String, Vec<String>)> {
    let t = Template::load(&local::stack::project_root().join("template.yaml")).expect("template");
    let ns = t
        .parameters
        .get("MetricsNamespace")
        .cloned()
        .expect("a MetricsNamespace parameter");
    // Parameters resolve to their defaults, everything else to its name.
    let lookup = |id: &str, _: Option<&str>| {
        Some(
            t.parameters
                .get(id)
                .cloned()
                .unwrap_or_else(|| id.to_owned()),
        )
    };
    let mut uses = BTreeSet::new();
    for (id, dash) in t.of_kind("AWS::CloudWatch::Dashboard") {
        let body = dash
            .properties
            .as_mapping()
            .and_then(|m| m.get("DashboardBody"))
            .unwrap_or_else(|| panic!("{id} has a DashboardBody"));
        let text = resolve(body, &lookup).expect("the body resolves");
        let json: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{id}'s body is not JSON: {e}\n{text}"));
        for w in json["widgets"].as_array().into_iter().flatten() {
            let mut previous: Vec<String> = Vec::new();
            for row in w["properties"]["metrics"].as_array().into_iter().flatten() {
                let row = row.as_array().cloned().unwrap_or_default();
                let mut cells: Vec<String> = Vec::new();
                for (i, cell) in row.iter().enumerate() {
                    match cell {
                        Value::String(s) if s == "." => {
                            cells.push(previous.get(i).cloned().unwrap_or_default())
                        }
                        Value::String(s) => cells.push(s.clone()),
                        Value::Object(o) => {
                            if let Some(e) = o.get("expression").and_then(Value::as_str) {
                                uses.extend(search_uses(e, &ns));
                            }
                        }
                        _ => {}
                    }
                }
                if cells.len() >= 2 && cells[0] == ns {
                    let mut keys: Vec<String> = cells[2..].iter().step_by(2).cloned().collect();
                    keys.sort();
                    uses.insert((cells[1].clone(), keys));
                }
                if !cells.is_empty() {
                    previous = cells;
                }
            }
        }
    }
    for (_, alarm) in t.of_kind("AWS::CloudWatch::Alarm") {
        let p: Value =
            serde_json::to_value(yaml_to_json(&alarm.properties, &lookup)).expect("json");
        let mut metrics = vec![p.clone()];
        for m in p["Metrics"].as_array().into_iter().flatten() {
            metrics.push(m["MetricStat"]["Metric"].clone());
        }
        for m in metrics {
            if m["Namespace"].as_str() == Some(ns.as_str())
                && let Some(name) = m["MetricName"].as_str()
            {
                let mut keys: Vec<String> = m["Dimensions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|d| d["Name"].as_str().map(str::to_owned))
                    .collect();
                keys.sort();
                uses.insert((name.to_owned(), keys));
            }
        }
    }
    uses
}

/// The metric uses in a `SEARCH('{Namespace,Key,...} MetricName="X"', ...)`.
fn search_uses(expression: &str, ns: &str) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    let mut rest = expression;
    while let Some(open) = rest.find('{') {
        let Some(close) = rest[open..].find('}') else {
            break;
        };
        let schema: Vec<&str> = rest[open + 1..open + close]
            .split(',')
            .map(str::trim)
            .collect();
        let after = &rest[open + close + 1..];
        let name = after
            .split("MetricName=\"")
            .nth(1)
            .and_then(|s| s.split('"').next());
        if schema.first() == Some(&ns)
            && let Some(name) = name
        {
            let mut keys: Vec<String> = schema[1..].iter().map(|s| (*s).to_owned()).collect();
            keys.sort();
            out.push((name.to_owned(), keys));
        }
        rest = after;
    }
    out
}

/// YAML (with intrinsic tags) to JSON, resolving tags through `lookup`.
fn yaml_to_json(
    v: &serde_norway::Value,
    lookup: &dyn Fn(&str, Option<&str>) -> Option<String>,
) -> Value {
    use serde_norway::Value as Y;
    match v {
        Y::Tagged(_) => resolve(v, lookup).map(Value::String).unwrap_or(Value::Null),
        Y::Mapping(m) => Value::Object(
            m.iter()
                .filter_map(|(k, v)| Some((k.as_str()?.to_owned(), yaml_to_json(v, lookup))))
                .collect(),
        ),
        Y::Sequence(s) => Value::Array(s.iter().map(|v| yaml_to_json(v, lookup)).collect()),
        Y::String(s) => Value::String(s.clone()),
        Y::Number(n) => serde_json::to_value(n.as_f64()).unwrap_or(Value::Null),
        Y::Bool(b) => Value::Bool(*b),
        Y::Null => Value::Null,
    }
}

#[tokio::test]
async fn statistics_count_every_delivery_failure_and_retry_exactly() {
    use shared::store::{StatsStore, TargetStore};
    let s = running_stack("stats", &[]).await;
    s.seed(&webhook_targets(
        "rpt-stats",
        &[("solo", "/hooks/solo", true, true)],
    ))
    .await
    .expect("seed");
    let start = shared::domain::Timestamp::now();
    let mut attempts = Vec::new();
    // Delivered at once; delivered after an immediate retry and a backoff;
    // failed for good; delivered again
    let faults: [&[u16]; 4] = [&[], &[503, 503], &[400], &[]];
    for codes in faults {
        for code in codes {
            s.webhook.push_fault(Fault::Status {
                code: *code,
                retry_after: None,
            });
        }
        let (id, body) = sample_execution("rpt-stats");
        s.send("ExecutionsQueue", &body).await.expect("send");
        let settled = s.wait_settled(&id, 1, SETTLE).await.expect("settles");
        attempts.push(settled[0].clone());
        if codes == [400] {
            let t = s
                .store
                .get_target("solo")
                .await
                .expect("get")
                .expect("target");
            assert_eq!(t.consecutive_failures, 1, "a failure starts a run");
        }
    }
    let statuses: Vec<AttemptStatus> = attempts.iter().map(|a| a.status).collect();
    assert_eq!(
        statuses,
        [
            AttemptStatus::Delivered,
            AttemptStatus::Delivered,
            AttemptStatus::Failed,
            AttemptStatus::Delivered
        ]
    );
    // Deliver writes an invocation's statistics at its end, just after the
    // attempt settled: wait for the last one to land.
    let until = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let now = shared::domain::Timestamp::now();
        let counted: u64 = s
            .store
            .target_days("solo", start, now)
            .await
            .expect("target stats")
            .iter()
            .map(|(_, c)| c.attempted)
            .sum();
        if counted >= 4 || std::time::Instant::now() > until {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let end = shared::domain::Timestamp::now();
    let ms_sum: u64 = attempts
        .iter()
        .filter(|a| a.status == AttemptStatus::Delivered)
        .filter_map(|a| a.delivery_millis())
        .map(|ms| ms as u64)
        .sum();

    let check = |c: &shared::domain::stats::Counters, what: &str| {
        assert_eq!(c.attempted, 4, "{what}: attempted");
        assert_eq!(c.delivered, 3, "{what}: delivered");
        assert_eq!(c.failed, 1, "{what}: failed");
        assert_eq!(c.tries, 6, "{what}: tries (1 + 3 + 1 + 1)");
        assert_eq!(c.retries, 1, "{what}: backoff retries");
        assert_eq!(c.delivery_ms_sum, ms_sum, "{what}: delivery milliseconds");
    };
    let days = s
        .store
        .target_days("solo", start, end)
        .await
        .expect("target stats");
    let mut target = shared::domain::stats::Counters::default();
    for (_, c) in &days {
        target.add(c);
    }
    check(&target, "target");
    assert_eq!(target.last_error_code.as_deref(), Some("http_400"));
    assert!(
        target.last_success_at > target.last_error_at,
        "the last delivery came after the failure"
    );
    let mut report = shared::domain::stats::Counters::default();
    for (_, c) in s
        .store
        .report_days("rpt-stats", start, end)
        .await
        .expect("report stats")
    {
        report.add(&c);
    }
    check(&report, "report (shards summed)");
    let service = s
        .store
        .service_hours(start, end)
        .await
        .expect("service stats");
    check(&service, "service");
    assert_eq!(
        service.latency.iter().sum::<u64>(),
        3,
        "one latency per delivery"
    );
    assert_eq!(service.success_rate(), Some(0.75));
    // The last delivery ended the run of failures
    let t = s
        .store
        .get_target("solo")
        .await
        .expect("get")
        .expect("target");
    assert_eq!(t.consecutive_failures, 0);
    s.down().await;
}

/// A request signed the way `curl --aws-sigv4` signs it (the local function
/// URL checks the form; AWS checks the signature).
fn signed(client: &reqwest::Client, url: &str) -> reqwest::RequestBuilder {
    client
        .get(url)
        .header("x-amz-date", "20261127T100000Z")
        .header(
            "authorization",
            "AWS4-HMAC-SHA256 Credential=AKIDOPERATOR/20261127/us-east-1/lambda/aws4_request, SignedHeaders=host;x-amz-date, Signature=00",
        )
}

#[tokio::test]
async fn health_and_stats_answer_through_the_iam_function_url() {
    let s = running_stack("health", &[]).await;
    let base = s
        .runner
        .as_ref()
        .and_then(|r| r.function_urls.get("ApiFunction"))
        .cloned()
        .expect("the API has a function URL");
    s.seed(&webhook_targets(
        "rpt-h",
        &[("h1", "/hooks/h1", true, true)],
    ))
    .await
    .expect("seed");
    let (id, body) = sample_execution("rpt-h");
    s.send("ExecutionsQueue", &body).await.expect("send");
    s.wait_settled(&id, 1, SETTLE).await.expect("settles");
    let client = reqwest::Client::new();

    // Unsigned requests are refused, as AWS_IAM function URLs do
    let unsigned = client
        .get(format!("{base}health"))
        .send()
        .await
        .expect("answers");
    assert_eq!(unsigned.status().as_u16(), 403);

    // Healthy: every check passes and the details are there (once the
    // delivery's statistics, written at the end of its invocation, landed)
    let mut h = Value::Null;
    for _ in 0..50 {
        let r = signed(&client, &format!("{base}health"))
            .send()
            .await
            .expect("answers");
        assert_eq!(r.status().as_u16(), 200);
        h = r.json().await.expect("json");
        if h["checks"]["last_hour"]["delivered"] == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(h["status"], "healthy", "{h:#}");
    assert_eq!(h["checks"]["dynamodb"]["status"], "ok");
    assert_eq!(h["checks"]["bucket"]["status"], "ok");
    assert_eq!(h["checks"]["queues"].as_object().map(|q| q.len()), Some(10));
    assert_eq!(h["checks"]["queues"]["delivery-dlq"]["visible"], 0);
    assert_eq!(h["checks"]["last_hour"]["delivered"], 1);
    assert!(
        h["checks"]["last_hour"]["p95_delivery_ms"].is_u64(),
        "{h:#}"
    );

    // A dead letter makes it unhealthy, with the reason
    s.send("DeliveryDeadLetterQueue", "{}").await.expect("send");
    let r = signed(&client, &format!("{base}health"))
        .send()
        .await
        .expect("answers");
    assert_eq!(r.status().as_u16(), 503);
    let h: Value = r.json().await.expect("json");
    let reasons = h["reasons"].to_string();
    assert!(reasons.contains("delivery-dlq"), "{reasons}");

    // Stats of the report, from the counters
    let r = signed(&client, &format!("{base}stats?report_id=rpt-h"))
        .send()
        .await
        .expect("answers");
    assert_eq!(r.status().as_u16(), 200);
    let st: Value = r.json().await.expect("json");
    assert_eq!(st["total"]["delivered"], 1, "{st:#}");
    assert_eq!(st["total"]["success_rate"], 1.0);
    assert_eq!(st["days"].as_array().map(Vec::len), Some(1));
    let r = signed(&client, &format!("{base}stats?target_id=h1"))
        .send()
        .await
        .expect("answers");
    let st: Value = r.json().await.expect("json");
    assert_eq!(st["total"]["attempted"], 1, "{st:#}");
    assert!(st["total"]["last_success_at"].is_string());

    // Bad queries are problem details with a code
    // A target and its report narrow to the target; another report's is 404
    let r = signed(
        &client,
        &format!("{base}stats?report_id=rpt-h&target_id=h1"),
    )
    .send()
    .await
    .expect("answers");
    assert_eq!(r.status().as_u16(), 200);
    let r = signed(
        &client,
        &format!("{base}stats?report_id=rpt-other&target_id=h1"),
    )
    .send()
    .await
    .expect("answers");
    assert_eq!(r.status().as_u16(), 404);
    let r = signed(&client, &format!("{base}stats?report_id=r&colour=red"))
        .send()
        .await
        .expect("answers");
    assert_eq!(r.status().as_u16(), 400);
    assert_eq!(
        r.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/problem+json")
    );
    let p: Value = r.json().await.expect("json");
    assert_eq!(p["code"], "invalid_query");
    let r = signed(&client, &format!("{base}nowhere"))
        .send()
        .await
        .expect("answers");
    assert_eq!(r.status().as_u16(), 404);
    s.down().await;
}

#[tokio::test]
async fn a_failing_delivery_logs_its_ids_on_every_line_and_never_a_secret() {
    use report_delivery_tests::{SIGNING_SECRET, download, seed_target};
    // The functions log JSON, as they do in Lambda
    let s = running_stack("logs", &[("LOG_FORMAT", "json")]).await;
    // A signed webhook whose receiver refuses, and a Slack bot whose token
    // is revoked
    s.seed(&webhook_targets(
        "rpt-logs",
        &[("wh", "/hooks/wh", true, true)],
    ))
    .await
    .expect("seed");
    seed_target(
        &s,
        "rpt-logs",
        "bot",
        "slack",
        serde_json::json!({"mode": "bot_token", "channel_id": "C0LOGS2026"}),
        Some((
            "conn-logs-bot",
            "slack_bot",
            &[local::slack::LOCAL_BOT_TOKEN],
        )),
        &[],
    )
    .await;
    // Slack incoming webhooks: the URL is the secret. One is delivered, one
    // is refused at the connection (errors that quote a URL must not).
    let hook_ok = s.slack.webhook_url("LogsSecretHookTokenOk");
    let hook_down = "http://127.0.0.1:9/services/T0LOCAL/B0LOCAL/LogsSecretHookTokenDown";
    for (id, url) in [("hook", hook_ok.as_str()), ("hook-down", hook_down)] {
        let conn = format!("conn-logs-{id}");
        seed_target(
            &s,
            "rpt-logs",
            id,
            "slack",
            serde_json::json!({"mode": "incoming_webhook"}),
            Some((&conn, "slack_incoming_webhook", &[url])),
            &[],
        )
        .await;
    }
    s.slack.revoke(local::slack::LOCAL_BOT_TOKEN);
    s.webhook.push_fault(Fault::Status {
        code: 400,
        retry_after: None,
    });
    let (execution_id, body) = sample_execution("rpt-logs");
    s.send("ExecutionsQueue", &body).await.expect("send");
    let attempts = s
        .wait_settled(&execution_id, 4, SETTLE)
        .await
        .expect("settles");
    for a in &attempts {
        let expected = if a.delivery_target_id == "hook" {
            AttemptStatus::Delivered
        } else {
            AttemptStatus::Failed
        };
        assert_eq!(a.status, expected, "{}", a.delivery_target_id);
    }
    // The webhook event carried a download link: follow it, so the links
    // function hands out a presigned URL
    let event = s.webhook.received()[0].json().expect("event");
    let link = event["files"][0]["download_url"]
        .as_str()
        .expect("link")
        .to_owned();
    assert!(!download(&link).await.is_empty());

    let logs = s.work_dir.join("logs");
    let deliver = std::fs::read_to_string(logs.join("deliver.log")).expect("deliver log");
    // Every line logged while handling one of these attempts carries all
    // three ids
    let mut lines_per_attempt: BTreeMap<String, usize> = BTreeMap::new();
    for line in deliver.lines().filter(|l| l.starts_with('{')) {
        let v: Value = serde_json::from_str(line).expect("JSON log line");
        if v.get("_aws").is_some() {
            continue;
        }
        let span = &v["span"];
        let Some(attempt) = span["attempt_id"].as_str() else {
            continue;
        };
        assert_eq!(span["execution_id"], execution_id.as_str(), "{line}");
        let target = span["target_id"].as_str().unwrap_or_default();
        assert!(
            ["wh", "bot", "hook", "hook-down"].contains(&target),
            "{line}"
        );
        *lines_per_attempt.entry(attempt.to_owned()).or_default() += 1;
    }
    for a in &attempts {
        assert!(
            lines_per_attempt.get(&a.id).copied().unwrap_or(0) > 0,
            "no log line names {}",
            a.id
        );
        assert!(
            deliver.contains("permanent failure"),
            "the failure is logged"
        );
    }
    // And no secret is in any function's log
    let keys = s.link_keys().await.expect("link keys");
    let whsec = SIGNING_SECRET.trim_start_matches("whsec_");
    let mut all = String::new();
    for entry in std::fs::read_dir(&logs).expect("logs") {
        all.push_str(&std::fs::read_to_string(entry.expect("entry").path()).unwrap_or_default());
    }
    for key in keys.split(',').filter(|k| k.len() > 8) {
        assert!(!all.contains(key), "a link signing key is logged");
    }
    for (what, secret) in [
        ("the Slack token", local::slack::LOCAL_BOT_TOKEN),
        ("the webhook secret", whsec),
        ("a Slack incoming-webhook URL", "LogsSecretHookToken"),
        ("a Slack incoming-webhook URL", "/services/T0LOCAL/B0LOCAL"),
        ("a presigned URL", "X-Amz-Signature"),
        ("a presigned URL", "X-Amz-Credential"),
    ] {
        assert!(!all.contains(secret), "{what} is logged");
    }
    s.down().await;
}
