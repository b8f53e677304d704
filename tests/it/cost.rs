//! What a delivery costs in DynamoDB writes, measured on the real functions:
//! `make wcu` arms streams on the stack's tables, delivers one execution to
//! `WCU_TARGETS` webhook targets (default 20), and prints the write units per
//! delivery by table, index and write shape (`scripts/wcu.py`). Ignored in
//! `make test`: it measures, it does not judge (figures in BENCHMARKS.md).

use report_delivery_tests::{running_stack, sample_execution, webhook_targets};
use shared::domain::AttemptStatus;
use std::time::Duration;

fn wcu(args: &[&str]) -> String {
    let root = local::stack::project_root();
    let endpoint = std::env::var("AWS_ENDPOINT_URL").expect("AWS_ENDPOINT_URL");
    let out = std::process::Command::new(root.join(".venv/bin/python"))
        .arg(root.join("scripts/wcu.py"))
        .args(args)
        .args(["--endpoint", &endpoint])
        .output()
        .expect("scripts/wcu.py runs");
    assert!(
        out.status.success(),
        "wcu.py {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
#[ignore = "measures write units: run with `make wcu`"]
async fn write_units_per_delivery() {
    let n: usize = std::env::var("WCU_TARGETS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let s = running_stack("wcu", &[]).await;
    let t = s.store_tables();
    let mut tables = vec![
        t.targets.clone(),
        t.attempts.clone(),
        t.executions.clone(),
        t.connections.clone(),
        t.rate_limits.clone(),
    ];
    if let Ok(stats) = s.stack.table("StatsTable") {
        tables.push(stats.to_owned());
    }
    let table_args: Vec<&str> = tables
        .iter()
        .flat_map(|t| ["--table", t.as_str()])
        .collect();
    let targets: Vec<(String, String)> = (0..n)
        .map(|i| (format!("w{i}"), format!("/hooks/w{i}")))
        .collect();
    let spec: Vec<(&str, &str, bool, bool)> = targets
        .iter()
        .map(|(id, path)| (id.as_str(), path.as_str(), true, true))
        .collect();
    s.seed(&webhook_targets("rpt-wcu", &spec))
        .await
        .expect("seed");
    // Only the pipeline's writes count, not the seeding
    let mut arm = vec!["arm"];
    arm.extend(&table_args);
    wcu(&arm);
    let (execution_id, body) = sample_execution("rpt-wcu");
    s.send("ExecutionsQueue", &body).await.expect("send");
    let attempts = s
        .wait_settled(&execution_id, n, Duration::from_secs(120))
        .await
        .expect("settles");
    assert!(
        attempts
            .iter()
            .all(|a| a.status == AttemptStatus::Delivered)
    );
    let per = n.to_string();
    let mut report = vec!["report", "--per", per.as_str()];
    report.extend(&table_args);
    println!("{}", wcu(&report));
    s.down().await;
}

/// An email delivery with SES's news (through the local SES mailbox
/// simulator): `WCU_EMAIL_TARGETS` targets (default 5), each mailing three
/// recipients who are delivered, one of them bouncing and one complaining
/// on every fifth target. Counted once every recipient's news landed.
#[tokio::test]
#[ignore = "measures write units: run with `make wcu`"]
async fn write_units_per_email_delivery_with_feedback() {
    use shared::domain::RecipientStatus;
    use shared::store::AttemptStore;
    let n: usize = std::env::var("WCU_EMAIL_TARGETS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let s = running_stack("wcu-email", &[]).await;
    let t = s.store_tables();
    let tables = [
        t.targets.clone(),
        t.attempts.clone(),
        t.executions.clone(),
        t.stats.clone(),
        t.suppressions.clone(),
    ];
    let table_args: Vec<&str> = tables
        .iter()
        .flat_map(|t| ["--table", t.as_str()])
        .collect();
    for i in 0..n {
        let to = if i % 5 == 0 {
            serde_json::json!([
                "success@simulator.amazonses.com",
                "bounce@simulator.amazonses.com",
                "complaint@simulator.amazonses.com"
            ])
        } else {
            serde_json::json!([
                format!("success+a{i}@simulator.amazonses.com"),
                format!("success+b{i}@simulator.amazonses.com"),
                format!("success+c{i}@simulator.amazonses.com")
            ])
        };
        report_delivery_tests::seed_target(
            &s,
            "rpt-wcu-mail",
            &format!("m{i}"),
            "email",
            serde_json::json!({"to": to}),
            None,
            &["pdf"],
        )
        .await;
    }
    let mut arm = vec!["arm"];
    arm.extend(&table_args);
    wcu(&arm);
    let (execution_id, body) = sample_execution("rpt-wcu-mail");
    s.send("ExecutionsQueue", &body).await.expect("send");
    let attempts = s
        .wait_settled(&execution_id, n, Duration::from_secs(120))
        .await
        .expect("settles");
    let until = std::time::Instant::now() + Duration::from_secs(60);
    for a in &attempts {
        loop {
            let now = s.store.get(&a.id).await.expect("read").expect("recorded");
            if now
                .recipients
                .iter()
                .all(|r| r.status != RecipientStatus::Sent)
            {
                break;
            }
            assert!(std::time::Instant::now() < until, "news never landed");
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
    let per = n.to_string();
    let mut report = vec!["report", "--per", per.as_str()];
    report.extend(&table_args);
    println!("{}", wcu(&report));
    s.down().await;
}
