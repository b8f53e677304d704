//! One function per command: each calls the API and prints its answer.

use crate::cli::{
    Attempts, Cli, Command, Connections, Dlq, SendArgs, StatsArgs, Suppressions, Targets,
};
use crate::client::{Answer, Api, stack_output};
use crate::output::{record, table};
use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use std::io::Read as _;
use std::path::Path;
use std::time::{Duration, Instant};

/// How a command ended, as the process's exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Done (delivered, healthy).
    Ok = 0,
    /// The API refused, did not answer, or the input was bad.
    Error = 1,
    /// Done, and what it reports failed (a delivery, health).
    Failed = 3,
    /// Still open when the wait ran out.
    Pending = 4,
}

impl From<Outcome> for std::process::ExitCode {
    fn from(o: Outcome) -> Self {
        Self::from(o as u8)
    }
}

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> Result<Outcome> {
    let api = Api::connect(&cli).await?;
    let json = cli.json;
    match cli.command {
        Command::Health => health(&api, json).await,
        Command::Stats(a) => stats(&api, &a, json).await,
        Command::Targets(t) => targets(&api, t, json).await,
        Command::Connections(c) => connections(&api, c, json).await,
        Command::Attempts(a) => attempts(&api, a, json).await,
        Command::Dlq(d) => dlq(&api, d, json).await,
        Command::Suppressions(x) => suppressions(&api, x, json).await,
        Command::Send(s) => send(&api, cli.stack.as_deref(), &s, json).await,
    }
}

const TARGET_COLUMNS: &[&str] = &[
    "/id",
    "/target_type",
    "/active",
    "/consecutive_failures",
    "/version",
    "/updated_at",
];
const TARGET_FIELDS: &[&str] = &[
    "/id",
    "/report_id",
    "/target_type",
    "/config",
    "/formats",
    "/service_connection_id",
    "/active",
    "/disable_requested",
    "/consecutive_failures",
    "/version",
    "/created_at",
    "/updated_at",
];
const ATTEMPT_COLUMNS: &[&str] = &[
    "/id",
    "/delivery_target_id",
    "/status",
    "/tries",
    "/retry_count",
    "/next_try_at",
    "/last_error/code",
    "/updated_at",
];
const ATTEMPT_FIELDS: &[&str] = &[
    "/id",
    "/kind",
    "/status",
    "/delivery_target_id",
    "/report_execution_id",
    "/target_type",
    "/tries",
    "/retry_count",
    "/next_try_at",
    "/last_error",
    "/dead_letter",
    "/confirmation",
    "/recipients",
    "/delivered_at",
    "/failed_at",
    "/operator_actions",
    "/created_at",
    "/updated_at",
];
const CONNECTION_FIELDS: &[&str] = &[
    "/id",
    "/kind",
    "/secrets",
    "/retiring_until",
    "/created_at",
    "/updated_at",
];

/// Prints an answer: its JSON, or `show` of it.
fn print(a: &Answer, json: bool, show: impl FnOnce(&Value) -> String) {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&a.body).unwrap_or_default()
        );
    } else {
        println!("{}", show(&a.body));
    }
}

async fn health(api: &Api, json: bool) -> Result<Outcome> {
    let a = api.call("GET", "/health", None, &[]).await?;
    if !matches!(a.status, 200 | 503) {
        bail!(a.problem_line());
    }
    print(&a, json, |b| {
        let mut lines = vec![format!("status  {}", b["status"].as_str().unwrap_or("?"))];
        for r in b["reasons"].as_array().into_iter().flatten() {
            lines.push(format!("reason  {}", crate::output::cell(r)));
        }
        for w in b["warnings"].as_array().into_iter().flatten() {
            lines.push(format!("warning {}", crate::output::cell(w)));
        }
        lines.join("\n")
    });
    Ok(if a.status == 200 {
        Outcome::Ok
    } else {
        Outcome::Failed
    })
}

/// `?k=v&…` of the options that are set, percent-encoded.
fn query(pairs: &[(&str, Option<String>)]) -> String {
    let set: Vec<String> = pairs
        .iter()
        .filter_map(|(k, v)| Some(format!("{k}={}", encode(v.as_deref()?))))
        .collect();
    if set.is_empty() {
        String::new()
    } else {
        format!("?{}", set.join("&"))
    }
}

/// Percent-encodes a query value or path segment.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn stats(api: &Api, s: &StatsArgs, json: bool) -> Result<Outcome> {
    let q = query(&[
        ("report_id", s.report_id.clone()),
        ("target_id", s.target_id.clone()),
        ("from", s.from.clone()),
        ("to", s.to.clone()),
    ]);
    let a = api.ok("GET", &format!("/stats{q}"), None, &[]).await?;
    print(&a, json, |b| {
        let fields: Vec<String> = b["total"]
            .as_object()
            .map(|o| o.keys().map(|k| format!("/{k}")).collect())
            .unwrap_or_default();
        let fields: Vec<&str> = fields.iter().map(String::as_str).collect();
        let mut out = record(&b["total"], &fields);
        let days = b["days"].as_array().cloned().unwrap_or_default();
        if !days.is_empty() {
            out.push_str("\n\n");
            out.push_str(&table(
                &days,
                &["/day", "/attempted", "/delivered", "/failed", "/tries"],
            ));
        }
        out
    });
    Ok(Outcome::Ok)
}

/// A JSON file, or stdin for `-`.
fn read_json(file: &Path) -> Result<Value> {
    let text = read_text(file)?;
    serde_json::from_str(&text).with_context(|| format!("{} is not JSON", file.display()))
}

fn read_text(file: &Path) -> Result<String> {
    if file == Path::new("-") {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s)?;
        Ok(s)
    } else {
        std::fs::read_to_string(file).with_context(|| format!("{} not read", file.display()))
    }
}

async fn targets(api: &Api, t: Targets, json: bool) -> Result<Outcome> {
    let one = |a: &Answer| print(a, json, |b| record(b, TARGET_FIELDS));
    match t {
        Targets::List { report_id } => {
            let q = query(&[("report_id", Some(report_id))]);
            let a = api.ok("GET", &format!("/targets{q}"), None, &[]).await?;
            print(&a, json, |b| {
                table(
                    b["targets"].as_array().map(Vec::as_slice).unwrap_or(&[]),
                    TARGET_COLUMNS,
                )
            });
        }
        Targets::Get { id } => one(&api.ok("GET", &target_path(&id, ""), None, &[]).await?),
        Targets::Create { file } => {
            let body = read_json(&file)?;
            one(&api.ok("POST", "/targets", Some(&body), &[]).await?);
        }
        Targets::Update { id, file, if_match } => {
            let body = read_json(&file)?;
            let version = match if_match {
                Some(v) => v,
                None => api.ok("GET", &target_path(&id, ""), None, &[]).await?.body["version"]
                    .as_u64()
                    .context("the target has no version")?,
            };
            let headers = [("if-match", format!("\"{version}\""))];
            one(&api
                .ok("PUT", &target_path(&id, ""), Some(&body), &headers)
                .await?);
        }
        Targets::Enable { id } => one(&api
            .ok("POST", &target_path(&id, "/enable"), None, &[])
            .await?),
        Targets::Disable { id } => one(&api
            .ok("POST", &target_path(&id, "/disable"), None, &[])
            .await?),
        Targets::Test { id, wait } => return test_send(api, &id, wait, json).await,
    }
    Ok(Outcome::Ok)
}

fn target_path(id: &str, rest: &str) -> String {
    format!("/targets/{}{rest}", encode(id))
}

/// A test send, then the attempt polled until it settles or `wait` ends,
/// with progress on stderr.
async fn test_send(api: &Api, id: &str, wait: u64, json: bool) -> Result<Outcome> {
    let started = Instant::now();
    let body = json!({"wait_seconds": wait.min(20)});
    eprintln!("rdctl: test send to {id} (waiting up to {wait} s)");
    let a = api
        .ok("POST", &target_path(id, "/test"), Some(&body), &[])
        .await?;
    let mut attempt = a.body;
    let deadline = started + Duration::from_secs(wait);
    let mut last = String::new();
    while !settled(&attempt) && Instant::now() < deadline {
        let status = attempt["status"].as_str().unwrap_or("?").to_owned();
        if status != last {
            eprintln!(
                "rdctl: {} {status} after {} s",
                attempt["id"].as_str().unwrap_or("?"),
                started.elapsed().as_secs()
            );
            last = status;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let path = format!("/attempts/{}", encode(attempt["id"].as_str().unwrap_or("")));
        attempt = api.ok("GET", &path, None, &[]).await?.body;
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&attempt)?);
    } else {
        println!("{}", record(&attempt, ATTEMPT_FIELDS));
    }
    Ok(outcome_of(&[attempt]))
}

fn settled(attempt: &Value) -> bool {
    matches!(attempt["status"].as_str(), Some("delivered" | "failed"))
}

/// Delivered (0), any failed (3), or any still open (4).
fn outcome_of(attempts: &[Value]) -> Outcome {
    if attempts.iter().any(|a| a["status"] == "failed") {
        Outcome::Failed
    } else if attempts.is_empty() || !attempts.iter().all(settled) {
        Outcome::Pending
    } else {
        Outcome::Ok
    }
}

async fn connections(api: &Api, c: Connections, json: bool) -> Result<Outcome> {
    let path = |id: &str, rest: &str| format!("/connections/{}{rest}", encode(id));
    let a = match c {
        Connections::Get { id } => api.ok("GET", &path(&id, ""), None, &[]).await?,
        Connections::Create { file } => {
            let body = read_json(&file)?;
            api.ok("POST", "/connections", Some(&body), &[]).await?
        }
        Connections::Rotate {
            id,
            secret_file,
            grace_seconds,
        } => {
            let secret = read_text(&secret_file)?.trim().to_owned();
            let mut body = json!({"secret": secret});
            if let Some(g) = grace_seconds {
                body["grace_seconds"] = g.into();
            }
            api.ok("POST", &path(&id, "/rotate"), Some(&body), &[])
                .await?
        }
    };
    print(&a, json, |b| record(b, CONNECTION_FIELDS));
    Ok(Outcome::Ok)
}

async fn attempts(api: &Api, a: Attempts, json: bool) -> Result<Outcome> {
    match a {
        Attempts::List {
            target_id,
            execution_id,
            status,
            since,
            limit,
        } => {
            let q = query(&[
                ("target_id", target_id),
                ("execution_id", execution_id),
                ("status", status),
                ("since", since),
                ("limit", limit.map(|l| l.to_string())),
            ]);
            let a = api.ok("GET", &format!("/attempts{q}"), None, &[]).await?;
            print(&a, json, |b| {
                table(
                    b["attempts"].as_array().map(Vec::as_slice).unwrap_or(&[]),
                    ATTEMPT_COLUMNS,
                )
            });
        }
        Attempts::Get { id } => {
            let a = api
                .ok("GET", &format!("/attempts/{}", encode(&id)), None, &[])
                .await?;
            print(&a, json, |b| record(b, ATTEMPT_FIELDS));
        }
        Attempts::Retry { id, force } => {
            let body = json!({"force": force});
            let path = format!("/attempts/{}/retry", encode(&id));
            let a = api.ok("POST", &path, Some(&body), &[]).await?;
            print(&a, json, |b| record(b, ATTEMPT_FIELDS));
        }
    }
    Ok(Outcome::Ok)
}

const SUPPRESSION_COLUMNS: &[&str] = &["/address", "/reason", "/by", "/at", "/detail"];

async fn suppressions(api: &Api, x: Suppressions, json: bool) -> Result<Outcome> {
    match x {
        Suppressions::List { target_id, limit } => {
            let q = query(&[("limit", limit.map(|l| l.to_string()))]);
            let path = format!("/targets/{}/suppressions{q}", encode(&target_id));
            let a = api.ok("GET", &path, None, &[]).await?;
            print(&a, json, |b| {
                table(
                    b["suppressions"]
                        .as_array()
                        .map(Vec::as_slice)
                        .unwrap_or(&[]),
                    SUPPRESSION_COLUMNS,
                )
            });
        }
        Suppressions::Add {
            target_id,
            address,
            note,
        } => {
            let path = format!(
                "/targets/{}/suppressions/{}",
                encode(&target_id),
                encode(&address)
            );
            let a = api
                .ok("PUT", &path, Some(&json!({"note": note})), &[])
                .await?;
            print(&a, json, |b| record(b, SUPPRESSION_COLUMNS));
        }
        Suppressions::Remove { target_id, address } => {
            let path = format!(
                "/targets/{}/suppressions/{}",
                encode(&target_id),
                encode(&address)
            );
            api.ok("DELETE", &path, None, &[]).await?;
            if json {
                println!("{}", json!({"lifted": address, "target_id": target_id}));
            } else {
                println!("{address} is mailed again by {target_id}");
            }
        }
    }
    Ok(Outcome::Ok)
}

async fn dlq(api: &Api, d: Dlq, json: bool) -> Result<Outcome> {
    let (stage, limit, dry_run) = match d {
        Dlq::List { stage, limit } => (stage, limit, true),
        Dlq::Redrive {
            stage,
            limit,
            dry_run,
        } => (stage, limit, dry_run),
    };
    let body = json!({"limit": limit, "dry_run": dry_run});
    let path = format!("/dlq/{}/redrive", encode(&stage));
    let a = api.ok("POST", &path, Some(&body), &[]).await?;
    print(&a, json, |b| {
        let head = if dry_run {
            format!(
                "{} examined, {} would move (dry run: nothing moved)",
                b["examined"], b["moved"]
            )
        } else {
            format!("{} examined, {} moved", b["examined"], b["moved"])
        };
        let rows = b["messages"].as_array().map(Vec::as_slice).unwrap_or(&[]);
        format!(
            "{head}\n{}",
            table(rows, &["/message_id", "/action", "/detail"])
        )
    });
    Ok(Outcome::Ok)
}

/// Sends an execution to the executions queue, then follows its attempts.
async fn send(api: &Api, stack: Option<&str>, s: &SendArgs, json: bool) -> Result<Outcome> {
    let mut body = read_json(&s.file)?;
    if let Some(id) = &s.execution_id {
        body["execution_id"] = id.clone().into();
    }
    let Some(execution) = body["execution_id"].as_str().map(str::to_owned) else {
        bail!("{} has no execution_id", s.file.display());
    };
    let queue = match &s.queue_url {
        Some(q) => q.clone(),
        None => stack_output(api.sdk(), stack, "ExecutionsQueueUrl").await?,
    };
    aws_sdk_sqs::Client::new(api.sdk())
        .send_message()
        .queue_url(&queue)
        .message_body(body.to_string())
        .send()
        .await
        .context("the execution was not sent")?;
    eprintln!("rdctl: sent {execution}");
    if s.wait == 0 {
        return Ok(Outcome::Ok);
    }
    let started = Instant::now();
    let deadline = started + Duration::from_secs(s.wait);
    let q = query(&[
        ("execution_id", Some(execution.clone())),
        ("limit", Some("100".into())),
    ]);
    let mut last = String::new();
    loop {
        let page = api
            .ok("GET", &format!("/attempts{q}"), None, &[])
            .await?
            .body;
        let attempts = page["attempts"].as_array().cloned().unwrap_or_default();
        let count = |s: &str| attempts.iter().filter(|a| a["status"] == s).count();
        let progress = format!(
            "{} attempts: {} delivered, {} failed, {} open",
            attempts.len(),
            count("delivered"),
            count("failed"),
            attempts.len() - count("delivered") - count("failed"),
        );
        if progress != last {
            eprintln!("rdctl: {progress} after {} s", started.elapsed().as_secs());
            last = progress;
        }
        let done = !attempts.is_empty() && attempts.iter().all(settled);
        if done || Instant::now() >= deadline {
            if json {
                println!("{}", serde_json::to_string_pretty(&page)?);
            } else {
                println!("{}", table(&attempts, ATTEMPT_COLUMNS));
            }
            return Ok(outcome_of(&attempts));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_and_paths_are_percent_encoded() {
        assert_eq!(encode("a b/c"), "a%20b%2Fc");
        assert_eq!(
            query(&[("report_id", Some("r 1".into())), ("x", None)]),
            "?report_id=r%201"
        );
        assert_eq!(query(&[("x", None)]), "");
    }

    #[test]
    fn the_exit_code_follows_the_attempts() {
        let a = |s: &str| json!({"status": s});
        assert_eq!(outcome_of(&[a("delivered"), a("delivered")]), Outcome::Ok);
        assert_eq!(outcome_of(&[a("delivered"), a("failed")]), Outcome::Failed);
        assert_eq!(outcome_of(&[a("delivered"), a("queued")]), Outcome::Pending);
        assert_eq!(outcome_of(&[]), Outcome::Pending);
    }
}
