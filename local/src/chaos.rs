//! Chaos for the local stack: a seeded source of random temporary faults
//! that the receivers (webhook, Slack) and a fault-injecting proxy in front
//! of moto's SES apply to a fraction of requests.

use crate::sinks::{Request, read_request};
use anyhow::Result;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A temporary fault, as a receiver or provider shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChaosFault {
    /// 503.
    Unavailable,
    /// 429 with `Retry-After: 1`.
    Throttled,
    /// The connection is closed without an answer (nothing was done).
    Dropped,
    /// No answer before the client gives up (longer than its 15 s timeout).
    Timeout,
}

/// How long a [`ChaosFault::Timeout`] holds a request.
pub const CHAOS_TIMEOUT: Duration = Duration::from_secs(20);

/// A seeded fault source: each call of [`Chaos::roll`] injects a fault
/// with probability `rate` (503 40 %, 429 30 %, dropped 20 %, timeout 10 %).
#[derive(Debug)]
pub struct Chaos {
    rate: f64,
    state: Mutex<u64>,
    injected: AtomicU64,
    rolled: AtomicU64,
}

impl Chaos {
    /// A source with the given fault rate and seed.
    pub fn new(rate: f64, seed: u64) -> Self {
        Self {
            rate,
            state: Mutex::new(seed | 1),
            injected: AtomicU64::new(0),
            rolled: AtomicU64::new(0),
        }
    }

    /// A number in [0, 1) (xorshift64*).
    pub fn unit(&self) -> f64 {
        let Ok(mut s) = self.state.lock() else {
            return 0.5;
        };
        let mut x = *s;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        *s = x;
        (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Decides the fate of one request.
    pub fn roll(&self) -> Option<ChaosFault> {
        self.rolled.fetch_add(1, Ordering::Relaxed);
        if self.unit() >= self.rate {
            return None;
        }
        self.injected.fetch_add(1, Ordering::Relaxed);
        let pick = self.unit();
        Some(if pick < 0.4 {
            ChaosFault::Unavailable
        } else if pick < 0.7 {
            ChaosFault::Throttled
        } else if pick < 0.9 {
            ChaosFault::Dropped
        } else {
            ChaosFault::Timeout
        })
    }

    /// Faults injected so far.
    pub fn injected(&self) -> u64 {
        self.injected.load(Ordering::Relaxed)
    }

    /// Requests seen so far.
    pub fn rolled(&self) -> u64 {
        self.rolled.load(Ordering::Relaxed)
    }
}

/// An HTTP/1.1 proxy to `upstream` (moto) that injects [`Chaos`] faults,
/// for a provider the local stack cannot change (SES). Point a service's
/// endpoint at it with `AWS_ENDPOINT_URL_<SERVICE>`.
pub struct FaultProxy {
    /// Base URL, e.g. `http://127.0.0.1:41234`.
    pub url: String,
    task: JoinHandle<()>,
}

impl FaultProxy {
    /// Starts on an ephemeral port.
    pub async fn start(upstream: &str, chaos: std::sync::Arc<Chaos>) -> Result<Self> {
        Self::start_with(upstream, chaos, Duration::ZERO).await
    }

    /// A proxy with no faults that forwards each request at once and holds
    /// the answer for `hold`: a provider that accepts a call, then answers
    /// late.
    pub async fn slow(upstream: &str, hold: Duration) -> Result<Self> {
        Self::start_with(upstream, std::sync::Arc::new(Chaos::new(0.0, 1)), hold).await
    }

    async fn start_with(
        upstream: &str,
        chaos: std::sync::Arc<Chaos>,
        hold: Duration,
    ) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let client = reqwest::Client::new();
        let upstream = upstream.trim_end_matches('/').to_owned();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (client, upstream, chaos) = (client.clone(), upstream.clone(), chaos.clone());
                tokio::spawn(async move {
                    let _ = proxy(stream, &client, &upstream, &chaos, hold).await;
                });
            }
        });
        Ok(Self { url, task })
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn proxy(
    mut stream: TcpStream,
    client: &reqwest::Client,
    upstream: &str,
    chaos: &Chaos,
    hold: Duration,
) -> Result<()> {
    let Some(req) = read_request(&mut stream).await? else {
        return Ok(());
    };
    let (status, headers, body) = match chaos.roll() {
        Some(ChaosFault::Dropped) => return Ok(()),
        Some(ChaosFault::Unavailable) => (
            503,
            vec![(
                "x-amzn-errortype".to_owned(),
                "ServiceUnavailable".to_owned(),
            )],
            br#"{"message":"Service unavailable (injected)"}"#.to_vec(),
        ),
        Some(ChaosFault::Throttled) => (
            429,
            vec![
                (
                    "x-amzn-errortype".to_owned(),
                    "TooManyRequestsException".to_owned(),
                ),
                ("retry-after".to_owned(), "1".to_owned()),
            ],
            br#"{"message":"Rate exceeded (injected)"}"#.to_vec(),
        ),
        Some(ChaosFault::Timeout) => {
            tokio::time::sleep(CHAOS_TIMEOUT).await;
            forward(client, upstream, &req).await?
        }
        None => {
            let answer = forward(client, upstream, &req).await?;
            tokio::time::sleep(hold).await;
            answer
        }
    };
    let mut head = format!(
        "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(&body).await?;
    stream.shutdown().await?;
    Ok(())
}

type Answer = (u16, Vec<(String, String)>, Vec<u8>);

async fn forward(client: &reqwest::Client, upstream: &str, req: &Request) -> Result<Answer> {
    let method = reqwest::Method::from_bytes(req.method.as_bytes())?;
    let mut out = client.request(method, format!("{upstream}{}", req.path));
    for (k, v) in &req.headers {
        if !matches!(k.as_str(), "host" | "content-length" | "connection") {
            out = out.header(k, v);
        }
    }
    let answer = out.body(req.body.clone()).send().await?;
    let status = answer.status().as_u16();
    let headers = answer
        .headers()
        .iter()
        .filter(|(k, _)| {
            !matches!(
                k.as_str(),
                "content-length" | "connection" | "transfer-encoding"
            )
        })
        .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
        .collect();
    Ok((status, headers, answer.bytes().await?.to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn about_the_rate_of_requests_get_a_fault_and_the_seed_repeats() {
        let a = Chaos::new(0.3, 7);
        let faults = (0..10_000).filter(|_| a.roll().is_some()).count();
        assert!((2700..3300).contains(&faults), "{faults}");
        let b = Chaos::new(0.3, 7);
        let c = Chaos::new(0.3, 7);
        let seq = |x: &Chaos| (0..50).map(|_| x.roll()).collect::<Vec<_>>();
        assert_eq!(seq(&b), seq(&c));
    }
}
