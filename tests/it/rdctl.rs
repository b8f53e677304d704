//! `rdctl`, the operator's command line, against the local stack: the real
//! binary, signing with the standard credential chain, through the local
//! function URLs of the admin and read-only API, and moto's SQS for sends.

use local::sinks::Fault;
use local::stack::LocalStack;
use report_delivery_tests::{running_stack, sample_execution, webhook_targets, work_dir};
use serde_json::Value;
use std::process::Output;

/// Runs rdctl with `args` against `function`'s URL.
async fn rdctl(s: &LocalStack, function: &str, args: &[&str]) -> Output {
    let url = s
        .runner
        .as_ref()
        .and_then(|r| r.function_urls.get(function))
        .cloned()
        .expect("a function URL");
    let bin = local::stack::binaries_dir()
        .expect("binaries")
        .join("rdctl");
    tokio::process::Command::new(&bin)
        .args(args)
        .env("RDCTL_API_URL", url)
        .env("AWS_ENDPOINT_URL", &s.endpoint)
        .env("AWS_ACCESS_KEY_ID", "AKIDRDCTLTEST")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .env_remove("AWS_PROFILE")
        .output()
        .await
        .unwrap_or_else(|e| panic!("{} runs (cargo build --bins): {e}", bin.display()))
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[tokio::test]
async fn rdctl_lists_tests_sends_retries_and_is_refused_writes_on_the_read_only_url() {
    let s = running_stack("rdctl", &[]).await;
    s.seed(&webhook_targets(
        "rpt-cli",
        &[("cli-ok", "/hooks/cli-ok", true, true)],
    ))
    .await
    .expect("seeded");

    // A table by default, JSON on request.
    let o = rdctl(
        &s,
        "ApiFunction",
        &["targets", "list", "--report-id", "rpt-cli"],
    )
    .await;
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert!(out.starts_with("ID") && out.contains("cli-ok"), "{out}");
    let o = rdctl(&s, "ApiFunction", &["--json", "targets", "get", "cli-ok"]).await;
    let t: Value = serde_json::from_slice(&o.stdout).expect("--json prints JSON");
    assert_eq!(t["id"], "cli-ok");

    // A test send that is delivered exits 0, with progress on stderr.
    let o = rdctl(
        &s,
        "ApiFunction",
        &["targets", "test", "cli-ok", "--wait", "60"],
    )
    .await;
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}\n{err}");
    assert!(
        out.contains("delivered") && err.contains("test send to cli-ok"),
        "{out}\n{err}"
    );

    // A test send to a receiver that keeps failing exits 3.
    for _ in 0..4 {
        s.webhook.push_fault(Fault::Status {
            code: 500,
            retry_after: None,
        });
    }
    let o = rdctl(
        &s,
        "ApiFunction",
        &["targets", "test", "cli-ok", "--wait", "60"],
    )
    .await;
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(3), "{out}\n{err}");
    assert!(out.contains("failed"), "{out}");
    s.webhook.clear_faults();

    // An execution sent from a file is followed until its attempts settle.
    let (execution, body) = sample_execution("rpt-cli");
    let file = work_dir().join(format!("rdctl-{execution}.json"));
    std::fs::create_dir_all(work_dir()).expect("work dir");
    std::fs::write(&file, body).expect("written");
    let queue = s
        .stack
        .queue_url("ExecutionsQueue")
        .expect("queue")
        .to_owned();
    let file_arg = file.to_string_lossy().into_owned();
    let args = [
        "send",
        file_arg.as_str(),
        "--queue-url",
        queue.as_str(),
        "--wait",
        "90",
    ];
    let o = rdctl(&s, "ApiFunction", &args).await;
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}\n{err}");
    assert!(err.contains("1 attempts: 1 delivered"), "{err}");

    // The read-only URL reads, and refuses a write with the API's problem in one line.
    let o = rdctl(
        &s,
        "ReadApiFunction",
        &["attempts", "list", "--execution-id", &execution],
    )
    .await;
    let (out, err) = text(&o);
    assert!(
        o.status.success() && out.contains("delivered"),
        "{out}\n{err}"
    );
    let o = rdctl(&s, "ReadApiFunction", &["targets", "disable", "cli-ok"]).await;
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        err.contains("403 read_only:") && err.lines().count() == 1,
        "{err}"
    );
    let o = rdctl(&s, "ApiFunction", &["--json", "targets", "get", "cli-ok"]).await;
    let t: Value = serde_json::from_slice(&o.stdout).expect("JSON");
    assert_eq!(t["active"], true, "the refused write changed the target");

    // An unknown attempt: the API's 404 problem, one line, exit 1.
    let o = rdctl(&s, "ApiFunction", &["attempts", "retry", "att_nope"]).await;
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1));
    assert!(err.starts_with("rdctl: 404 "), "{err}");

    // Dead letters: a dry-run list moves nothing.
    let o = rdctl(&s, "ApiFunction", &["dlq", "list", "delivery"]).await;
    let (out, err) = text(&o);
    assert!(
        o.status.success() && out.contains("(dry run: nothing moved)"),
        "{out}\n{err}"
    );

    // Suppressions of an email target: add, list, lift (read-only refused).
    report_delivery_tests::seed_target(
        &s,
        "rpt-cli-mail",
        "cli-mail",
        "email",
        serde_json::json!({"to": ["ann@example.com"]}),
        None,
        &["pdf"],
    )
    .await;
    let add = [
        "suppressions",
        "add",
        "cli-mail",
        "Ann@Example.com",
        "--note",
        "by phone",
    ];
    let o = rdctl(&s, "ReadApiFunction", &add).await;
    assert_eq!(o.status.code(), Some(1), "read-only refused");
    let o = rdctl(&s, "ApiFunction", &add).await;
    let (out, err) = text(&o);
    assert!(o.status.success() && out.contains("manual"), "{out}\n{err}");
    let o = rdctl(&s, "ReadApiFunction", &["suppressions", "list", "cli-mail"]).await;
    let (out, _) = text(&o);
    assert!(
        out.contains("ann@example.com") && out.contains("by phone"),
        "{out}"
    );
    let o = rdctl(
        &s,
        "ApiFunction",
        &["suppressions", "remove", "cli-mail", "ann@example.com"],
    )
    .await;
    assert!(o.status.success(), "{:?}", text(&o));
    let o = rdctl(
        &s,
        "ApiFunction",
        &["--json", "suppressions", "list", "cli-mail"],
    )
    .await;
    let listed: Value = serde_json::from_slice(&o.stdout).expect("JSON");
    assert_eq!(listed["suppressions"], serde_json::json!([]));
}
