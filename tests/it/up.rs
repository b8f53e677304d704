//! `local up` (what `make up` runs) and rdctl together, through the real
//! parts: the stack comes up and prints how to reach it, an execution is
//! delivered, the webhook receiver is made to fail, the stack is stopped
//! with Ctrl-C during the backoff, and the next `local up` resumes it and
//! delivers what was left.

use report_delivery_tests::{sample_execution, work_dir};
use serde_json::Value;
use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// A running `local up` and what its banner said.
pub(crate) struct Up {
    child: Child,
    banner: Vec<String>,
}

impl Up {
    pub(crate) async fn start(prefix: &str) -> Up {
        let bin = local::stack::binaries_dir()
            .expect("binaries")
            .join("local");
        let mut child = Command::new(bin)
            .arg("up")
            .env("LOCAL_UP_PREFIX", prefix)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("local up starts");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let mut banner = Vec::new();
        let until = Instant::now() + Duration::from_secs(120);
        loop {
            let line = tokio::time::timeout_at(until.into(), lines.next_line())
                .await
                .expect("local up gets ready within 2 minutes")
                .expect("reads")
                .unwrap_or_else(|| panic!("local up ended early: {banner:?}"));
            let ready = line.starts_with("==> ready");
            banner.push(line);
            if ready {
                break;
            }
        }
        // Keep draining its output so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Up { child, banner }
    }

    /// The `export` lines' variables.
    fn env(&self) -> BTreeMap<String, String> {
        self.banner
            .iter()
            .filter_map(|l| l.trim().strip_prefix("export "))
            .flat_map(|l| l.split_whitespace())
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }

    pub(crate) fn line(&self, starts: &str) -> String {
        self.banner
            .iter()
            .find(|l| l.trim_start().starts_with(starts))
            .unwrap_or_else(|| panic!("no {starts:?} in {:?}", self.banner))
            .clone()
    }

    /// Ctrl-C, and wait for it to stop.
    pub(crate) async fn interrupt(mut self) {
        let pid = self.child.id().expect("running");
        let status = std::process::Command::new("kill")
            .args(["-INT", &pid.to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        let ended = tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await;
        assert!(ended.is_ok(), "local up did not stop on Ctrl-C");
    }
}

async fn rdctl(env: &BTreeMap<String, String>, args: &[&str]) -> std::process::Output {
    let bin = local::stack::binaries_dir()
        .expect("binaries")
        .join("rdctl");
    Command::new(bin)
        .args(args)
        .envs(env)
        .env_remove("AWS_PROFILE")
        .output()
        .await
        .expect("rdctl runs")
}

fn execution_file(name: &str) -> (String, String) {
    let (id, body) = sample_execution("rpt-weekly-sales");
    let file = work_dir().join(format!("{name}-{id}.json"));
    std::fs::create_dir_all(work_dir()).expect("dir");
    std::fs::write(&file, body).expect("written");
    (id, file.to_string_lossy().into_owned())
}

async fn webhook_attempt(env: &BTreeMap<String, String>, execution: &str) -> Value {
    let o = rdctl(
        env,
        &["--json", "attempts", "list", "--execution-id", execution],
    )
    .await;
    let page: Value = serde_json::from_slice(&o.stdout).unwrap_or(Value::Null);
    page["attempts"]
        .as_array()
        .and_then(|a| {
            a.iter()
                .find(|a| a["delivery_target_id"] == "tgt-ops-webhook")
        })
        .cloned()
        .unwrap_or(Value::Null)
}

#[tokio::test]
async fn local_up_serves_rdctl_and_a_stop_mid_delivery_loses_nothing() {
    let prefix = format!("up{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let up = Up::start(&prefix).await;
    assert!(
        up.line("==> stack").contains("provisioned"),
        "{:?}",
        up.banner
    );
    let env = up.env();
    for key in [
        "AWS_ENDPOINT_URL",
        "RDCTL_API_URL",
        "RDCTL_EXECUTIONS_QUEUE_URL",
    ] {
        assert!(env.contains_key(key), "{key} not printed: {:?}", up.banner);
    }

    // An execution is delivered to every demo target.
    let (_, file) = execution_file("up-first");
    let o = rdctl(&env, &["send", &file, "--wait", "90"]).await;
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );

    // The receiver fails: the webhook attempt backs off.
    let receiver = up.line("webhook receiver");
    let receiver = receiver.split_whitespace().nth(2).expect("url").to_owned();
    let r = reqwest::Client::new()
        .post(format!("{receiver}/_control/fail"))
        .send()
        .await
        .expect("control");
    assert!(r.status().is_success());
    let (second, file) = execution_file("up-second");
    let o = rdctl(&env, &["send", &file, "--wait", "0"]).await;
    assert!(o.status.success());
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let a = webhook_attempt(&env, &second).await;
        if a["status"] == "queued" && a["tries"].as_u64().unwrap_or(0) >= 1 {
            break;
        }
        assert!(Instant::now() < until, "no failed try recorded: {a}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // Ctrl-C during the backoff; the next `local up` resumes the stack and
    // delivers it to the new receiver (answering 200).
    up.interrupt().await;
    let up = Up::start(&prefix).await;
    assert!(up.line("==> stack").contains("resumed"), "{:?}", up.banner);
    let env = up.env();
    let until = Instant::now() + Duration::from_secs(120);
    loop {
        let a = webhook_attempt(&env, &second).await;
        if a["status"] == "delivered" {
            assert!(a["tries"].as_u64().unwrap_or(0) >= 2, "{a}");
            break;
        }
        assert!(
            Instant::now() < until,
            "not delivered after the restart: {a}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let o = rdctl(&env, &["attempts", "list", "--execution-id", &second]).await;
    let table = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        !table.contains("failed") && !table.contains("queued"),
        "{table}"
    );
    up.interrupt().await;
}
