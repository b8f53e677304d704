//! `local`: the local stack's command line.
//!
//! `local demo [EXECUTION_JSON] [TARGETS_JSON]` provisions a fresh stack in
//! moto, seeds targets, starts the real functions behind the local runner,
//! sends the execution, and prints every delivery's outcome and where the
//! PDF and the captured payloads are. `local up` keeps the stack running
//! for an operator (see `local::up`).

use anyhow::{Context, Result, bail};
use local::stack::{LocalStack, project_root};
use shared::contract::ExecutionMessage;
use shared::domain::AttemptStatus;
use shared::store::{ExecutionStore, TargetStore};
use std::time::Duration;

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "local=info,warn".into()),
        )
        .with_target(false)
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("demo") => demo(args.get(1).cloned(), args.get(2).cloned()).await,
        Some("up") => local::up::run().await,
        Some("bench-render") => {
            local::bench::render(count(args.get(1), 10_000)?, args.get(2).map(String::as_str))
        }
        Some("bench-fanout") => local::bench::fanout(count(args.get(1), 10_000)?).await,
        Some("bench-deliver") => local::bench::deliver(count(args.get(1), 10)?).await,
        Some("bench-fanout-model") => {
            local::bench_model::fanout(count(args.get(1), 10_000)?, millis(args.get(2), 6)?).await
        }
        Some("bench-deliver-model") => {
            local::bench_model::deliver(count(args.get(1), 20)?, millis(args.get(2), 6)?).await
        }
        Some("bench-cold") => local::bench::cold_starts(count(args.get(1), 20)?).await,
        Some("preview") => {
            let root = project_root();
            let out = args
                .get(1)
                .map(Into::into)
                .unwrap_or_else(|| root.join(".local/preview"));
            for file in local::preview::write(&root, &out)? {
                println!("{file}");
            }
            Ok(())
        }
        _ => bail!(
            "usage: local demo [EXECUTION_JSON] [TARGETS_JSON] | up | preview [OUT_DIR] | bench-render [ROWS] [OUT_DIR] | bench-fanout [TARGETS] | bench-deliver [ROUNDS] | bench-fanout-model [TARGETS] [CALL_MS] | bench-deliver-model [ROUNDS] [CALL_MS] | bench-cold [RUNS]"
        ),
    }
}

fn millis(arg: Option<&String>, default: u64) -> Result<std::time::Duration> {
    Ok(std::time::Duration::from_millis(
        arg.map_or(Ok(default), |a| a.parse().context("expected milliseconds"))?,
    ))
}

fn count(arg: Option<&String>, default: usize) -> Result<usize> {
    arg.map_or(Ok(default), |a| a.parse().context("expected a number"))
}

async fn demo(execution: Option<String>, targets: Option<String>) -> Result<()> {
    let root = project_root();
    let executions: Vec<std::path::PathBuf> = match execution {
        Some(path) => vec![path.into()],
        None => vec![
            root.join("events/execution-completed.json"),
            root.join("events/execution-completed-claim-check.json"),
        ],
    };
    let targets_path = targets
        .map(Into::into)
        .unwrap_or_else(|| root.join("events/targets.json"));
    let work = root.join(".local/demo");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;

    let prefix = format!("demo-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    println!(
        "==> provisioning stack {prefix} in moto ({}) from template.yaml",
        local::endpoint()?
    );
    let mut stack = LocalStack::up(&prefix, &work).await?;
    println!("==> webhook receiver listening on {}", stack.webhook.url);
    println!(
        "==> Slack-compatible server listening on {}",
        stack.slack.url
    );
    stack.start_runner(&[]).await?;
    println!(
        "==> functions running behind the local Lambda runtime API; logs in {}",
        work.join("logs").display()
    );
    if let Some(url) = stack
        .runner
        .as_ref()
        .and_then(|r| r.function_urls.get("LinksFunction"))
    {
        println!("==> download links served by the links function at {url}");
    }
    // Targets are made the way users make them: through the operator API.
    let (connections, targets) = stack
        .seed_via_api(&std::fs::read_to_string(&targets_path)?)
        .await?;
    println!(
        "==> created {connections} connections and {targets} targets from {} through the API (POST /connections, POST /targets)",
        targets_path.display()
    );
    let mut sent = Vec::new();
    for path in &executions {
        let (msg, body) = prepare(&stack, path).await?;
        stack.send("ExecutionsQueue", &body).await?;
        println!(
            "==> sent {} ({}) to ExecutionsQueue",
            msg.execution_id,
            path.display()
        );
        sent.push(msg);
    }
    let mut result = Ok(());
    let mut emails = Vec::new();
    for msg in &sent {
        let mut expected = 0;
        let mut cursor = None;
        loop {
            let page = stack
                .store
                .active_targets(&msg.report_id, None, cursor, 100)
                .await?;
            expected += page.items.len();
            cursor = page.next;
            if cursor.is_none() {
                break;
            }
        }
        let attempts = stack
            .wait_settled(&msg.execution_id, expected, Duration::from_secs(90))
            .await;
        let execution = stack.store.get_execution(&msg.execution_id).await?;
        if let Err(e) = report(&stack, &msg.execution_id, attempts, execution, &work).await {
            result = Err(e);
        }
        emails.extend(stack.capture_emails(&msg.execution_id).await?);
    }
    if let Err(e) = email_feedback(&stack, &sent).await {
        println!("  email feedback could not be read: {e:#}");
    }
    // The reconciler runs every 5 minutes on AWS; here it runs once, on demand.
    if let Ok(host) = stack.function("reconcile") {
        let report = host.invoke_json(&serde_json::json!({})).await?;
        println!();
        println!("Reconciler (run on demand): {report}");
    }
    println!();
    println!("Captured payloads:");
    println!(
        "  email:   {} message(s) read back from SES (moto) as .eml in {}",
        emails.len(),
        work.join("captures/email").display()
    );
    println!(
        "  slack:   {} message(s) (uploads and incoming-webhook posts) in {}",
        stack.slack.messages().len(),
        work.join("captures/slack").display()
    );
    println!(
        "  webhook: {} request(s) in {}",
        stack.webhook.received().len(),
        work.join("captures/webhook").display()
    );
    if let Some(link) = stack.webhook.received().iter().find_map(|r| {
        r.json()?["files"][0]["download_url"]
            .as_str()
            .map(str::to_owned)
    }) {
        let answer = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()?
            .get(&link)
            .send()
            .await?;
        println!(
            "  download link check: GET {}… answered {} (Location: presigned S3 URL)",
            &link[..link.len().min(60)],
            answer.status()
        );
    }
    if let Err(e) = health_and_stats(&stack, &sent).await {
        println!("  health and stats could not be read: {e:#}");
    }
    stack.down().await;
    result
}

/// What SES said of each email recipient (the local SES mailbox simulator
/// bounces `bounce@simulator.amazonses.com` and has
/// `complaint@simulator.amazonses.com` complain), and the suppressions
/// that followed.
async fn email_feedback(
    stack: &LocalStack,
    sent: &[shared::contract::ExecutionCompletedV1],
) -> Result<()> {
    use shared::domain::RecipientStatus;
    use shared::store::{AttemptStore, SuppressionStore};
    let Some(first) = sent.first() else {
        return Ok(());
    };
    let mut ids = Vec::new();
    for a in stack.store.by_execution(&first.execution_id).await? {
        if !a.recipients.is_empty() {
            ids.push(a.id);
        }
    }
    let until = std::time::Instant::now() + Duration::from_secs(20);
    let mut attempts = Vec::new();
    loop {
        attempts.clear();
        for id in &ids {
            attempts.extend(stack.store.get(id).await?);
        }
        let waiting = attempts
            .iter()
            .flat_map(|a| &a.recipients)
            .any(|r| r.status == RecipientStatus::Sent);
        if !waiting || std::time::Instant::now() > until {
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    for a in &attempts {
        println!();
        println!(
            "Email recipients of {} (execution {}), as SES reported them:",
            a.delivery_target_id, first.execution_id
        );
        for r in &a.recipients {
            println!(
                "  {:<36} {:<4} {:<11} {}",
                r.address,
                format!("{:?}", r.role).to_lowercase(),
                r.status.as_str(),
                r.detail.as_deref().unwrap_or("")
            );
        }
        let suppressed = stack.store.suppressed(&a.delivery_target_id).await?;
        if !suppressed.is_empty() {
            println!(
                "  now suppressed for {} (later sends skip them):",
                a.delivery_target_id
            );
            for x in suppressed {
                println!("    {:<34} {}", x.address, x.reason.as_str());
            }
        }
    }
    Ok(())
}

/// Calls the API function's `/health` and `/stats` (its URL is `AWS_IAM`:
/// the local front wants a SigV4-shaped request) and prints a short summary.
async fn health_and_stats(
    stack: &LocalStack,
    sent: &[shared::contract::ExecutionCompletedV1],
) -> Result<()> {
    let base = stack
        .runner
        .as_ref()
        .and_then(|r| r.function_urls.get("ApiFunction"))
        .context("no API function URL")?;
    let client = reqwest::Client::new();
    let get = |path: String| {
        client
            .get(format!("{base}{path}"))
            .header("x-amz-date", "20261127T000000Z")
            .header(
                "authorization",
                "AWS4-HMAC-SHA256 Credential=demo/20261127/us-east-1/lambda/aws4_request, SignedHeaders=host;x-amz-date, Signature=local",
            )
            .send()
    };
    let r = get("health".into()).await?;
    let status = r.status();
    let h: serde_json::Value = r.json().await?;
    let c = &h["checks"];
    let queues = c["queues"].as_object().cloned().unwrap_or_default();
    let busy: Vec<String> = queues
        .iter()
        .filter(|(_, q)| {
            q["visible"].as_u64().unwrap_or(0) + q["in_flight"].as_u64().unwrap_or(0) > 0
        })
        .map(|(n, q)| format!("{n} {}+{}", q["visible"], q["in_flight"]))
        .collect();
    let hour = &c["last_hour"];
    let pct = |v: &serde_json::Value| {
        v.as_f64()
            .map_or("–".to_owned(), |r| format!("{:.0}%", r * 100.0))
    };
    let ms = |v: &serde_json::Value| {
        v.as_u64()
            .map_or("–".to_owned(), |m| format!("≤{} s", m / 1000))
    };
    println!();
    println!(
        "Health (GET {base}health, AWS_IAM): {status} {}",
        h["status"].as_str().unwrap_or("?")
    );
    for reason in h["reasons"].as_array().into_iter().flatten() {
        println!("  ! {}", reason.as_str().unwrap_or_default());
    }
    for warning in h["warnings"].as_array().into_iter().flatten() {
        println!("  ~ {}", warning.as_str().unwrap_or_default());
    }
    println!(
        "  dynamodb {} · bucket {} · email {} · queues {} ({} watched)",
        c["dynamodb"]["status"].as_str().unwrap_or("?"),
        c["bucket"]["status"].as_str().unwrap_or("?"),
        c["email"]["status"].as_str().unwrap_or("?"),
        if busy.is_empty() {
            "all empty".to_owned()
        } else {
            busy.join(", ")
        },
        queues.len()
    );
    println!(
        "  last hour: {} delivered, {} failed, success {}, p50 {}, p95 {}",
        hour["delivered"],
        hour["failed"],
        pct(&hour["success_rate"]),
        ms(&hour["p50_delivery_ms"]),
        ms(&hour["p95_delivery_ms"])
    );
    let mut reports: Vec<&str> = sent.iter().map(|m| m.report_id.as_str()).collect();
    reports.dedup();
    for report in reports {
        let st: serde_json::Value = get(format!("stats?report_id={report}"))
            .await?
            .json()
            .await?;
        let t = &st["total"];
        println!(
            "Stats of {report} (GET /stats?report_id={report}): {} attempted, {} delivered, {} failed, {} retries, success {}, average {} ms",
            t["attempted"],
            t["delivered"],
            t["failed"],
            t["retries"],
            pct(&t["success_rate"]),
            t["average_delivery_ms"]
        );
    }
    Ok(())
}

/// Reads an execution event; for an S3 claim check naming `{{reports_bucket}}`,
/// uploads the data file of the same name from `events/` first.
async fn prepare(
    stack: &LocalStack,
    path: &std::path::Path,
) -> Result<(shared::contract::ExecutionCompletedV1, String)> {
    let bucket = stack
        .stack
        .buckets
        .get("ReportsBucket")
        .context("no ReportsBucket")?;
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let body = text.replace("{{reports_bucket}}", bucket);
    let msg = match serde_json::from_str(&body).context("the execution event is not valid")? {
        ExecutionMessage::CompletedV1(msg) => msg,
        ExecutionMessage::TestSendV1(t) => t.execution,
    };
    if let shared::contract::ReportData::S3(check) = &msg.data
        && text.contains("{{reports_bucket}}")
    {
        let key = check
            .uri
            .trim_start_matches(&format!("s3://{bucket}/"))
            .to_owned();
        let file = path.with_file_name(key.rsplit('/').next().unwrap_or_default());
        let bytes = std::fs::read(&file)
            .with_context(|| format!("reading claim-check data {}", file.display()))?;
        stack
            .s3
            .put_object()
            .bucket(bucket)
            .key(&key)
            .body(bytes.into())
            .send()
            .await?;
        println!("==> uploaded {} to {}", file.display(), check.uri);
    }
    Ok((msg, body))
}

async fn report(
    stack: &LocalStack,
    execution_id: &str,
    attempts: Result<Vec<shared::domain::DeliveryAttempt>>,
    execution: Option<shared::domain::ReportExecution>,
    work: &std::path::Path,
) -> Result<()> {
    let attempts = attempts?;
    let execution = execution.context("the execution was never recorded; see the render log")?;
    let pdf_path = work.join(format!("{execution_id}.pdf"));
    std::fs::write(&pdf_path, stack.object(&execution.pdf.key).await?)?;
    println!();
    println!(
        "Execution {execution_id}: {} rows rendered at {}",
        execution.row_count, execution.rendered_at
    );
    println!(
        "  PDF  s3://{}/{}  ({} bytes, sha256 {})",
        stack
            .stack
            .buckets
            .get("ReportsBucket")
            .map(String::as_str)
            .unwrap_or("?"),
        execution.pdf.key,
        execution.pdf.size,
        execution.pdf.sha256
    );
    println!("       copy: {}", pdf_path.display());
    if let Some(csv) = &execution.csv {
        println!("  CSV  {}  ({} bytes)", csv.key, csv.size);
    }
    if let Some(preview) = &execution.preview {
        println!(
            "  PREVIEW  {}  ({} bytes: the rows messages show)",
            preview.key, preview.size
        );
    }
    if let Some(chart) = &execution.chart {
        let path = work.join(format!("{execution_id}-chart.png"));
        std::fs::write(&path, stack.object(&chart.key).await?)?;
        println!("  CHART  {}  ({} bytes)", chart.key, chart.size);
        println!("       copy: {}", path.display());
    }
    println!();
    println!(
        "{:<24} {:<8} {:<10} {:>5} {:>12}  detail",
        "target", "channel", "status", "tries", "queued→done"
    );
    let mut failed = 0;
    for a in &attempts {
        let took = a
            .delivered_at
            .or(a.failed_at)
            .map(|t| format!("{} ms", t.millis_since(a.created_at)))
            .unwrap_or_default();
        let detail = match (&a.status, &a.last_error) {
            (AttemptStatus::Delivered, _) => format!(
                "delivered at {}",
                a.delivered_at.map(|t| t.to_string()).unwrap_or_default()
            ),
            (_, Some(e)) => format!("{:?} {}: {}", e.category, e.code, e.message),
            _ => String::new(),
        };
        if a.status != AttemptStatus::Delivered {
            failed += 1;
        }
        println!(
            "{:<24} {:<8} {:<10} {:>5} {:>12}  {}",
            a.delivery_target_id,
            a.target_type.as_str(),
            a.status.as_str(),
            a.tries,
            took,
            detail
        );
    }
    if failed > 0 {
        bail!("{failed} deliveries did not succeed");
    }
    Ok(())
}
