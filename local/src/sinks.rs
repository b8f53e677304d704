//! Receivers that stand in for the outside world: a webhook receiver that
//! speaks plain HTTP/1.1 on 127.0.0.1, records what it gets (in memory and
//! as files), and can inject faults: a status (with `Retry-After`), a slow
//! answer, or a connection closed without an answer.

use anyhow::Result;
use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A fault to answer the next request with.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// Answer with this status (and `Retry-After` seconds if given).
    Status { code: u16, retry_after: Option<u64> },
    /// Wait this long before answering 200 (longer than the client timeout
    /// makes a timeout).
    Delay(Duration),
    /// Read the request, then close the connection without answering.
    Close,
}

/// One request the sink received.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    /// Header names are lower-case.
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
    /// The status the sink answered (None when it closed the connection).
    pub answered: Option<u16>,
}

impl Received {
    /// The body as JSON.
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

#[derive(Default)]
struct Inner {
    received: Vec<Received>,
    faults: VecDeque<Fault>,
    /// Requests whose head and body were read, answered or not yet.
    arrived: usize,
    /// Random faults for requests with no queued fault.
    chaos: Option<Arc<crate::chaos::Chaos>>,
    /// Set by `POST /_control/fail`: every request gets this status until
    /// `POST /_control/ok` (for trying retries by hand with `local up`).
    failing: Option<u16>,
}

/// The path prefix of the sink's own controls (never a delivery).
pub const CONTROL_PREFIX: &str = "/_control/";

impl From<crate::chaos::ChaosFault> for Fault {
    fn from(f: crate::chaos::ChaosFault) -> Self {
        use crate::chaos::ChaosFault as C;
        match f {
            C::Unavailable => Fault::Status {
                code: 503,
                retry_after: None,
            },
            C::Throttled => Fault::Status {
                code: 429,
                retry_after: Some(1),
            },
            C::Dropped => Fault::Close,
            C::Timeout => Fault::Delay(crate::chaos::CHAOS_TIMEOUT),
        }
    }
}

/// A webhook receiver on 127.0.0.1.
pub struct WebhookSink {
    /// Base URL, e.g. `http://127.0.0.1:41234`.
    pub url: String,
    inner: Arc<Mutex<Inner>>,
    task: JoinHandle<()>,
}

impl WebhookSink {
    /// Starts on an ephemeral port (or `port` if given). When `capture_dir`
    /// is set, each request is also written there as a JSON file.
    pub async fn start(port: Option<u16>, capture_dir: Option<PathBuf>) -> Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", port.unwrap_or(0))).await?;
        let url = format!("http://{}", listener.local_addr()?);
        if let Some(dir) = &capture_dir {
            std::fs::create_dir_all(dir)?;
        }
        let inner = Arc::new(Mutex::new(Inner::default()));
        let shared = inner.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let inner = shared.clone();
                let dir = capture_dir.clone();
                tokio::spawn(async move {
                    let _ = serve(stream, inner, dir).await;
                });
            }
        });
        Ok(Self { url, inner, task })
    }

    /// Queues a fault for the next request (faults are used in order).
    pub fn push_fault(&self, fault: Fault) {
        if let Ok(mut i) = self.inner.lock() {
            i.faults.push_back(fault);
        }
    }

    /// Drops the faults not used yet.
    pub fn clear_faults(&self) {
        if let Ok(mut i) = self.inner.lock() {
            i.faults.clear();
        }
    }

    /// Injects random faults into requests with no queued fault.
    pub fn set_chaos(&self, chaos: Arc<crate::chaos::Chaos>) {
        if let Ok(mut i) = self.inner.lock() {
            i.chaos = Some(chaos);
        }
    }

    /// Requests read so far, including those still held by a `Delay`
    /// fault (`received` lists a request only once it is answered).
    pub fn arrived(&self) -> usize {
        self.inner.lock().map(|i| i.arrived).unwrap_or_default()
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Received> {
        self.inner
            .lock()
            .map(|i| i.received.clone())
            .unwrap_or_default()
    }
}

impl Drop for WebhookSink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One HTTP/1.1 request as read off the socket.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    /// Header names are lower-case.
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
}

/// Reads one request (head and `content-length` body); `None` when the
/// peer closed first or the head is over 1 MiB.
pub async fn read_request(stream: &mut TcpStream) -> Result<Option<Request>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let header_end = loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos + 4;
        }
        if buf.len() > 1 << 20 {
            return Ok(None);
        }
    };
    let head = String::from_utf8_lossy(&buf[..header_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut start = lines.next().unwrap_or_default().split(' ');
    let method = start.next().unwrap_or_default().to_owned();
    let path = start.next().unwrap_or_default().to_owned();
    let headers: BTreeMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let len: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[header_end..].to_vec();
    while body.len() < len {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Ok(Some(Request {
        method,
        path,
        headers,
        body,
    }))
}

async fn serve(
    mut stream: TcpStream,
    inner: Arc<Mutex<Inner>>,
    dir: Option<PathBuf>,
) -> Result<()> {
    let Some(Request {
        method,
        path,
        headers,
        body,
    }) = read_request(&mut stream).await?
    else {
        return Ok(());
    };
    if let Some(control) = path.strip_prefix(CONTROL_PREFIX) {
        let answer = match (method.as_str(), control) {
            ("POST", "fail") => {
                if let Ok(mut i) = inner.lock() {
                    i.failing = Some(500);
                }
                "200 OK\r\ncontent-length: 31\r\n\r\nfailing: every request gets 500"
            }
            ("POST", "ok") => {
                if let Ok(mut i) = inner.lock() {
                    i.failing = None;
                }
                "200 OK\r\ncontent-length: 19\r\n\r\nanswering 200 again"
            }
            _ => "404 Not Found\r\ncontent-length: 0\r\n\r\n",
        };
        stream
            .write_all(format!("HTTP/1.1 {answer}").as_bytes())
            .await?;
        stream.shutdown().await?;
        return Ok(());
    }
    let fault = inner.lock().ok().and_then(|mut i| {
        i.arrived += 1;
        i.faults
            .pop_front()
            .or_else(|| {
                i.failing.map(|code| Fault::Status {
                    code,
                    retry_after: None,
                })
            })
            .or_else(|| i.chaos.as_ref().and_then(|c| c.roll()).map(Fault::from))
    });
    let (status, retry_after) = match &fault {
        Some(Fault::Status { code, retry_after }) => (Some(*code), *retry_after),
        Some(Fault::Close) => (None, None),
        Some(Fault::Delay(d)) => {
            tokio::time::sleep(*d).await;
            (Some(200), None)
        }
        None => (Some(200), None),
    };
    let record = Received {
        method,
        path,
        headers,
        body,
        answered: status,
    };
    let index = {
        let mut i = inner.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
        i.received.push(record.clone());
        i.received.len()
    };
    if let Some(dir) = dir {
        let id = record
            .headers
            .get("webhook-id")
            .cloned()
            .unwrap_or_default();
        let doc = serde_json::json!({
            "method": record.method,
            "path": record.path,
            "headers": record.headers,
            "body": record.json().unwrap_or_else(|| String::from_utf8_lossy(&record.body).into()),
            "answered": record.answered,
        });
        let file = dir.join(format!("{index:04}-{id}.json"));
        let _ = std::fs::write(file, serde_json::to_vec_pretty(&doc)?);
    }
    let Some(status) = status else {
        // Close without answering.
        return Ok(());
    };
    let mut response = format!("HTTP/1.1 {status} X\r\ncontent-length: 2\r\nconnection: close\r\n");
    if let Some(s) = retry_after {
        response.push_str(&format!("retry-after: {s}\r\n"));
    }
    response.push_str("\r\n{}");
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await?;
    Ok(())
}
