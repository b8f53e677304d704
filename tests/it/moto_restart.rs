//! The emulator restarted mid-run. moto keeps every queue, table and bucket
//! in memory, so a restart loses the stack itself: what was in flight is
//! gone with it (the emulator's loss, documented in RELIABILITY.md; on AWS
//! these services are durable). What must hold is that the functions ride
//! out the outage without panicking or crash-looping, and that work resumes
//! once the resources are back.

use report_delivery_tests::{sample_execution, webhook_targets, work_dir};
use shared::domain::AttemptStatus;
use shared::store::ExecutionStore;
use std::time::{Duration, Instant};

/// A moto server of this test's own, so that restarting it disturbs no
/// other test.
struct Moto {
    port: u16,
    child: Option<std::process::Child>,
}

impl Moto {
    fn start(port: u16) -> Self {
        // The project's launcher: moto with DynamoDB's atomic writes.
        let root = local::stack::project_root();
        let child = std::process::Command::new(root.join(".venv/bin/python"))
            .arg(root.join("scripts/moto_server.py"))
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("scripts/moto_server.py starts with the project venv");
        let moto = Self {
            port,
            child: Some(child),
        };
        moto.wait_ready();
        moto
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn wait_ready(&self) {
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "moto did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.kill();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

#[tokio::test]
async fn after_a_moto_restart_the_functions_survive_and_new_work_is_delivered() {
    // Given a stack on a moto of its own, delivering normally
    let mut moto = Moto::start(free_port());
    let prefix = format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
    let work = work_dir().join(format!("moto-restart-{prefix}"));
    let mut s = local::stack::LocalStack::up_at(&prefix, &work, &moto.url(), |_| Ok(()))
        .await
        .expect("stack");
    s.start_runner(&[("RETRY_SCHEDULE_SECONDS", "1,1,1")])
        .await
        .expect("runner");
    let seed = webhook_targets("rpt-moto", &[("hook", "/hooks/m", true, false)]);
    s.seed(&seed).await.expect("seed");
    let (first, body) = sample_execution("rpt-moto");
    s.send("ExecutionsQueue", &body).await.expect("send");
    let done = s
        .wait_settled(&first, 1, Duration::from_secs(60))
        .await
        .expect("delivered before the restart");
    assert_eq!(done[0].status, AttemptStatus::Delivered);
    let deliver_pid = s.function("deliver").expect("deliver").pid().await;

    // When a second execution is sent and moto restarts right away
    let (lost, body) = sample_execution("rpt-moto");
    s.send("ExecutionsQueue", &body).await.expect("send");
    let port = moto.port;
    moto.kill();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let moto = Moto::start(port);

    // Then the functions kept running through the outage (no crash loop)
    tokio::time::sleep(Duration::from_secs(3)).await;
    let host = s.function("deliver").expect("deliver");
    assert_eq!(host.pid().await, deliver_pid, "deliver did not die");
    // And what moto held in memory is gone with it: the emulator's loss
    assert!(
        s.store.get_execution(&lost).await.is_err(),
        "the executions table itself is gone after the restart"
    );

    // When the stack is provisioned again under the same names
    s.reprovision().await.expect("reprovision");
    s.seed(&seed).await.expect("seed again");
    // Then new work is delivered by the same, still-running functions
    let (after, body) = sample_execution("rpt-moto");
    s.send("ExecutionsQueue", &body).await.expect("send");
    let done = s
        .wait_settled(&after, 1, Duration::from_secs(90))
        .await
        .expect("delivered after the restart");
    assert_eq!(done[0].status, AttemptStatus::Delivered);
    assert_eq!(host.pid().await, deliver_pid, "the same deliver process");
    for log in ["render", "fanout", "deliver"] {
        let text =
            std::fs::read_to_string(work.join(format!("logs/{log}.log"))).unwrap_or_default();
        assert!(!text.contains("panicked"), "{log} panicked");
    }
    s.down().await;
    drop(moto);
}
