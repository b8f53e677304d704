//! `local up`: the local stack kept running for an operator to try. It
//! provisions the stack in moto (or resumes the one a stopped `local up`
//! left there, with whatever its queues and tables held), seeds the demo
//! targets at this run's sinks, starts every function behind the runner
//! with the API and links URLs, runs the reconciler every minute, prints
//! how to reach it, and stays up until Ctrl-C or `make down` (SIGTERM).
//! Stopping it mid-delivery loses nothing: moto keeps the messages and the
//! records, and the next `local up` carries on from them.

use crate::stack::{LocalStack, project_root};
use anyhow::{Context, Result};
use std::time::Duration;

/// The retry schedule `local up` runs with (seconds), so that retries and
/// dead letters show within minutes; `LOCAL_UP_RETRY_SCHEDULE` changes it.
pub const RETRY_SCHEDULE: &str = "10,20,40";

/// How often the reconciler runs here (every 5 minutes on AWS).
pub const RECONCILE_EVERY: Duration = Duration::from_secs(60);

/// Runs until Ctrl-C or SIGTERM.
pub async fn run() -> Result<()> {
    let root = project_root();
    let prefix = std::env::var("LOCAL_UP_PREFIX").unwrap_or_else(|_| "up".to_owned());
    let work = root.join(".local").join(&prefix);
    std::fs::create_dir_all(&work)?;
    let (mut stack, resumed) = LocalStack::resume_or_up(&prefix, &work).await?;
    // The targets point at this run's sinks: written again on every start.
    let targets = std::fs::read_to_string(root.join("events/targets.json"))?;
    stack
        .seed(&targets)
        .await
        .context("seeding events/targets.json")?;
    let schedule =
        std::env::var("LOCAL_UP_RETRY_SCHEDULE").unwrap_or_else(|_| RETRY_SCHEDULE.to_owned());
    stack
        .start_runner(&[("RETRY_SCHEDULE_SECONDS", &schedule)])
        .await?;
    let pid_file = work.join("up.pid");
    std::fs::write(&pid_file, std::process::id().to_string())?;
    print_banner(&stack, resumed, &schedule)?;

    let reconcile = stack.function("reconcile")?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut tick = tokio::time::interval(RECONCILE_EVERY);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            _ = tick.tick() => {
                if let Err(e) = reconcile.invoke_json(&serde_json::json!({})).await {
                    println!("reconciler run failed: {e:#}");
                }
            }
        }
    }
    println!(
        "==> stopping the functions; moto keeps the stack (make up resumes it, make down drops it)"
    );
    let _ = std::fs::remove_file(&pid_file);
    stack.down().await;
    Ok(())
}

fn print_banner(stack: &LocalStack, resumed: bool, schedule: &str) -> Result<()> {
    let urls = stack
        .runner
        .as_ref()
        .map(|r| r.function_urls.clone())
        .unwrap_or_default();
    let url = |f: &str| urls.get(f).cloned().unwrap_or_default();
    let queue = stack.stack.queue_url("ExecutionsQueue")?;
    println!(
        "==> stack {} {} in moto at {}",
        stack.stack.prefix,
        if resumed {
            "resumed (its queues and records as they were)"
        } else {
            "provisioned from template.yaml"
        },
        stack.endpoint
    );
    println!("==> demo targets of rpt-weekly-sales seeded from events/targets.json");
    println!(
        "==> retry schedule {schedule} s (AWS: 300,900,3600); reconciler every {} s",
        RECONCILE_EVERY.as_secs()
    );
    println!();
    println!("  admin API (ApiUrl)               {}", url("ApiFunction"));
    println!(
        "  read-only API (ReadOnlyApiUrl)   {}",
        url("ReadApiFunction")
    );
    println!(
        "  download links                   {}",
        url("LinksFunction")
    );
    println!(
        "  webhook receiver                 {}  (POST /_control/fail, /_control/ok)",
        stack.webhook.url
    );
    println!("  Slack-compatible server          {}", stack.slack.url);
    println!("  executions queue                 {queue}");
    println!(
        "  function logs                    {}",
        stack.work_dir.join("logs").display()
    );
    println!();
    println!("Credentials (moto takes any; rdctl signs with them):");
    println!(
        "  export AWS_ENDPOINT_URL={} AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_REGION=us-east-1",
        stack.endpoint
    );
    println!(
        "  export RDCTL_API_URL={} RDCTL_EXECUTIONS_QUEUE_URL={queue}",
        url("ApiFunction")
    );
    println!();
    println!("Try:");
    println!("  target/debug/rdctl send events/execution-completed.json");
    println!("  target/debug/rdctl attempts list --target-id tgt-ops-webhook");
    println!("  target/debug/rdctl health");
    println!();
    println!("==> ready; Ctrl-C or make down stops it");
    Ok(())
}
