//! A local stand-in for the Lambda service and its SQS event source mapping.
//!
//! For each function in the template it runs a small pool of execution
//! environments: each serves the Lambda Runtime API on its own 127.0.0.1
//! port and runs the real function binary against it (restarted when it
//! dies). Invocations wait for a free environment, and their deadline starts
//! when one picks them up, as on Lambda. The pool is the sum of the
//! function's event sources' `MaximumConcurrency` (1 without one), capped at
//! [`MAX_POOL`]. It long-polls the function's queues with the template's
//! batch size, invokes with real `SqsEvent` JSON, deletes the messages the
//! `SqsBatchResponse` does not list as failures, and leaves the rest to
//! their visibility timeout. Functions with a `FunctionUrlConfig` get an
//! HTTP front on 127.0.0.1 that turns each request into a function-URL
//! event (payload format 2.0) and the function's answer back into HTTP.

use crate::provision::Stack;
use crate::template::{FunctionSpec, Template, resolve};
use anyhow::{Context, Result};
use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, Message, MessageSystemAttributeName};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Mutex, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{info, warn};

/// How the runner starts functions.
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    /// Where the function binaries are (e.g. `target/debug`).
    pub binaries_dir: PathBuf,
    /// Where each function's stdout/stderr goes.
    pub log_dir: PathBuf,
    /// Extra or replaced environment variables for every function.
    pub env_overrides: BTreeMap<String, String>,
    /// Long-poll wait per receive.
    pub poll_wait_secs: i32,
}

/// Most execution environments one function gets locally.
pub const MAX_POOL: usize = 4;

type Reply = std::result::Result<Bytes, String>;

struct Invocation {
    id: String,
    payload: String,
    /// Told the environment that picked the invocation up.
    picked: oneshot::Sender<usize>,
}

/// One cold start of an execution environment.
#[derive(Debug, Clone, Copy)]
pub struct ColdStart {
    /// Process spawn → its first `GET /runtime/invocation/next`.
    pub init: Duration,
    /// Peak resident set (VmHWM) at that moment, in KiB.
    pub peak_rss_kib: Option<u64>,
}

/// A process's user + system CPU time in clock ticks, from
/// `/proc/<pid>/stat` (fields 14 and 15, after the command name).
pub fn cpu_ticks_of(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let f: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// A process's peak resident set so far (KiB), from `/proc/<pid>/status`.
fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// One function: its Runtime API endpoint and its process.
pub struct FunctionHost {
    spec: FunctionSpec,
    arn: String,
    tx: mpsc::Sender<Invocation>,
    rx: Mutex<mpsc::Receiver<Invocation>>,
    pending: Mutex<HashMap<String, oneshot::Sender<Reply>>>,
    spawned_at: Mutex<Option<Instant>>,
    /// The process of each execution environment, by slot.
    pids: Mutex<Vec<Option<u32>>>,
    /// Invocations in progress: request id → the slot running it.
    running: Mutex<HashMap<String, usize>>,
    /// Completed invocations, for tests and the demo.
    pub invocations: std::sync::atomic::AtomicU64,
    /// Every cold start so far: process spawn → first Runtime API request,
    /// and the process's peak RSS then (KiB, from `/proc`).
    pub cold_starts: std::sync::Mutex<Vec<ColdStart>>,
    /// Every event-source invocation so far: records in the batch and the
    /// time from invoke to the batch response, as Lambda bills it.
    pub timings: std::sync::Mutex<Vec<(usize, Duration)>>,
    /// Batches still to throttle: received, not invoked, and left on the
    /// queue, as Lambda does when it has no concurrency to spare.
    throttle: std::sync::atomic::AtomicU32,
}

impl FunctionHost {
    /// The binary name.
    pub fn name(&self) -> &str {
        &self.spec.binary
    }

    async fn invoke(&self, payload: String) -> Reply {
        let id = uuid::Uuid::new_v4().to_string();
        let (reply_tx, reply_rx) = oneshot::channel();
        let (picked_tx, picked_rx) = oneshot::channel();
        self.pending.lock().await.insert(id.clone(), reply_tx);
        let invocation = Invocation {
            id: id.clone(),
            payload,
            picked: picked_tx,
        };
        if self.tx.send(invocation).await.is_err() {
            return Err("runner is shutting down".into());
        }
        // The timeout runs from when an environment picks the invocation up.
        let Ok(slot) = picked_rx.await else {
            self.pending.lock().await.remove(&id);
            return Err("runner is shutting down".into());
        };
        let timeout = Duration::from_secs(self.spec.timeout_secs);
        match tokio::time::timeout(timeout, reply_rx).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(_)) => Err("function process exited during the invocation".into()),
            Err(_) => {
                self.pending.lock().await.remove(&id);
                warn!(function = %self.spec.binary, slot, "invocation timed out; restarting its environment");
                self.kill_slot(slot).await;
                Err(format!(
                    "Task timed out after {} seconds",
                    self.spec.timeout_secs
                ))
            }
        }
    }

    /// Throttles the next `batches` received batches: they are returned to
    /// the queue (visible again after a second) without an invocation, so
    /// their receive count grows without a try.
    pub fn throttle(&self, batches: u32) {
        self.throttle
            .store(batches, std::sync::atomic::Ordering::SeqCst);
    }

    /// Invokes the function once with a JSON payload (e.g. a scheduled
    /// event) and returns its answer.
    pub async fn invoke_json(&self, payload: &serde_json::Value) -> Result<serde_json::Value> {
        let reply = self
            .invoke(payload.to_string())
            .await
            .map_err(|e| anyhow::anyhow!("{} failed: {e}", self.spec.binary))?;
        self.invocations
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(serde_json::from_slice(&reply).unwrap_or(serde_json::Value::Null))
    }

    /// The process id of the first environment, if one is running.
    pub async fn pid(&self) -> Option<u32> {
        self.pids.lock().await.first().copied().flatten()
    }

    /// How many execution environments the function has.
    pub async fn pool(&self) -> usize {
        self.pids.lock().await.len()
    }

    /// Kills every environment's process (the supervisors start new ones),
    /// as Lambda does with crashed execution environments.
    pub async fn kill(&self) {
        let slots = self.pids.lock().await.len();
        for slot in 0..slots {
            self.kill_slot(slot).await;
        }
    }

    /// Kills one environment's process, e.g. the one whose invocation
    /// timed out, or a random one in a chaos run.
    /// CPU time (user + system) the live execution environments have used,
    /// from `/proc/<pid>/stat`, in clock ticks (100 a second on Linux).
    pub async fn cpu_ticks(&self) -> u64 {
        let pids: Vec<u32> = self.pids.lock().await.iter().flatten().copied().collect();
        pids.iter().filter_map(|pid| cpu_ticks_of(*pid)).sum()
    }

    pub async fn kill_slot(&self, slot: usize) {
        let pid = self.pids.lock().await.get(slot).copied().flatten();
        if let Some(pid) = pid {
            let _ = tokio::process::Command::new("kill")
                .args(["-9", &pid.to_string()])
                .stderr(Stdio::null())
                .status()
                .await;
        }
    }
}

/// The running local Lambda service.
pub struct Runner {
    pub hosts: Vec<Arc<FunctionHost>>,
    /// Function URLs by logical id, e.g. `LinksFunction` → `http://127.0.0.1:4321/`.
    pub function_urls: BTreeMap<String, String>,
    /// The same functions over HTTPS (the certificate of [`crate::tls`]),
    /// e.g. `https://127.0.0.1:4322/`. An override value
    /// `{{https:LinksFunction}}` stands for one.
    pub function_urls_https: BTreeMap<String, String>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Runner {
    /// Starts every function of the template and its pollers.
    pub async fn start(
        sdk: &aws_config::SdkConfig,
        template: &Template,
        stack: &Stack,
        config: RunnerConfig,
    ) -> Result<Self> {
        std::fs::create_dir_all(&config.log_dir)?;
        let (shutdown, shutdown_rx) = watch::channel(false);
        let sqs = aws_sdk_sqs::Client::new(sdk);
        let region = crate::region(sdk);
        let mut hosts = Vec::new();
        let mut tasks = Vec::new();
        let specs = template.functions()?;
        // Bind function-URL fronts first: other functions' settings refer to them.
        let mut url_listeners = HashMap::new();
        let mut tls_listeners = HashMap::new();
        let mut function_urls = BTreeMap::new();
        let mut function_urls_https = BTreeMap::new();
        for spec in specs.iter().filter(|s| s.function_url) {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            function_urls.insert(
                spec.logical_id.clone(),
                format!("http://{}/", listener.local_addr()?),
            );
            url_listeners.insert(spec.logical_id.clone(), listener);
            let tls = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            function_urls_https.insert(
                spec.logical_id.clone(),
                format!("https://{}/", tls.local_addr()?),
            );
            tls_listeners.insert(spec.logical_id.clone(), crate::tls::TlsListener::new(tls)?);
        }
        let overrides: BTreeMap<String, String> = config
            .env_overrides
            .iter()
            .map(|(k, v)| {
                let v = function_urls_https.iter().fold(v.clone(), |v, (id, url)| {
                    v.replace(&format!("{{{{https:{id}}}}}"), url)
                });
                (k.clone(), v)
            })
            .collect();
        let lookup = |id: &str, attr: Option<&str>| match (id.strip_suffix("Url"), attr) {
            (Some(function), Some("FunctionUrl")) => function_urls.get(function).cloned(),
            _ => stack.lookup(id, attr),
        };
        for spec in specs {
            let mut env = BTreeMap::new();
            for (k, v) in &spec.env {
                env.insert(k.clone(), resolve(v, &lookup)?);
            }
            env.extend(overrides.clone());
            let (tx, rx) = mpsc::channel(16);
            let host = Arc::new(FunctionHost {
                arn: format!(
                    "arn:aws:lambda:{region}:123456789012:function:{}-{}",
                    stack.prefix, spec.logical_id
                ),
                spec: spec.clone(),
                tx,
                rx: Mutex::new(rx),
                pending: Mutex::new(HashMap::new()),
                spawned_at: Mutex::new(None),
                pids: Mutex::new(vec![None; spec.pool]),
                running: Mutex::new(HashMap::new()),
                invocations: 0.into(),
                cold_starts: std::sync::Mutex::new(Vec::new()),
                timings: std::sync::Mutex::new(Vec::new()),
                throttle: 0.into(),
            });
            for slot in 0..spec.pool {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
                let addr = listener.local_addr()?;
                let app = axum::Router::new()
                    .route("/2018-06-01/runtime/invocation/next", get(next))
                    .route(
                        "/2018-06-01/runtime/invocation/{id}/response",
                        post(response),
                    )
                    .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
                    .route("/2018-06-01/runtime/init/error", post(init_error))
                    .with_state(Env {
                        host: host.clone(),
                        slot,
                    });
                tasks.push(serve(listener, app, shutdown_rx.clone()));
                tasks.push(tokio::spawn(supervise(
                    Env {
                        host: host.clone(),
                        slot,
                    },
                    addr,
                    env.clone(),
                    config.clone(),
                    region.clone(),
                    shutdown_rx.clone(),
                )));
            }
            for source in &spec.sources {
                let queue = stack
                    .queues
                    .get(&source.queue)
                    .with_context(|| {
                        format!("{} polls unknown queue {}", spec.logical_id, source.queue)
                    })?
                    .clone();
                tasks.push(tokio::spawn(poll(
                    host.clone(),
                    sqs.clone(),
                    queue.url,
                    queue.arn,
                    source.batch_size,
                    config.poll_wait_secs,
                    region.clone(),
                    shutdown_rx.clone(),
                )));
            }
            if let Some(listener) = url_listeners.remove(&spec.logical_id) {
                let app = axum::Router::new()
                    .fallback(function_url)
                    .with_state(host.clone());
                tasks.push(serve(listener, app.clone(), shutdown_rx.clone()));
                if let Some(tls) = tls_listeners.remove(&spec.logical_id) {
                    let mut stop = shutdown_rx.clone();
                    tasks.push(tokio::spawn(async move {
                        let _ = axum::serve(tls, app)
                            .with_graceful_shutdown(async move {
                                let _ = stop.changed().await;
                            })
                            .await;
                    }));
                }
            }
            hosts.push(host);
        }
        Ok(Self {
            hosts,
            function_urls,
            function_urls_https,
            shutdown,
            tasks,
        })
    }

    /// The host of a function binary.
    pub fn host(&self, binary: &str) -> Option<&Arc<FunctionHost>> {
        self.hosts.iter().find(|h| h.spec.binary == binary)
    }

    /// Stops pollers and kills every function process.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        for h in &self.hosts {
            h.kill().await;
        }
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
    }
}

/// Serves `app` on `listener` until shutdown.
fn serve(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stop.changed().await;
            })
            .await;
    })
}

/// One execution environment of a function.
#[derive(Clone)]
struct Env {
    host: Arc<FunctionHost>,
    slot: usize,
}

async fn supervise(
    Env { host, slot }: Env,
    addr: SocketAddr,
    env: BTreeMap<String, String>,
    config: RunnerConfig,
    region: String,
    mut shutdown: watch::Receiver<bool>,
) {
    let binary = config.binaries_dir.join(&host.spec.binary);
    let log_path = config.log_dir.join(format!("{}.log", host.spec.binary));
    while !*shutdown.borrow() {
        let log = match std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
        {
            Ok(f) => f,
            Err(e) => {
                warn!(error = %e, "cannot open function log");
                return;
            }
        };
        let mut cmd = tokio::process::Command::new(&binary);
        cmd.env_clear()
            .envs(std::env::vars().filter(|(k, _)| {
                k == "PATH"
                    || k == "HOME"
                    || k.starts_with("AWS_")
                    || k == "RUST_LOG"
                    || k == "RUST_BACKTRACE"
            }))
            .env("AWS_LAMBDA_RUNTIME_API", addr.to_string())
            .env("AWS_LAMBDA_FUNCTION_NAME", &host.spec.logical_id)
            .env(
                "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
                host.spec.memory_mb.to_string(),
            )
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("AWS_REGION", &region)
            .env("LOG_FORMAT", "text")
            .envs(&env)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        if std::env::var_os("AWS_ACCESS_KEY_ID").is_none() {
            cmd.env("AWS_ACCESS_KEY_ID", crate::TEST_ACCESS_KEY)
                .env("AWS_SECRET_ACCESS_KEY", crate::TEST_ACCESS_KEY);
        }
        match log.try_clone() {
            Ok(out) => {
                cmd.stdout(out).stderr(log);
            }
            Err(_) => {
                cmd.stdout(Stdio::null()).stderr(Stdio::null());
            }
        }
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                warn!(binary = %binary.display(), error = %e, "cannot start function; build it with `cargo build --bins`");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if let Some(p) = host.pids.lock().await.get_mut(slot) {
            *p = child.id();
        }
        *host.spawned_at.lock().await = Some(Instant::now());
        tokio::select! {
            status = child.wait() => {
                warn!(function = %host.spec.binary, slot, ?status, "function process exited; restarting");
                if let Some(p) = host.pids.lock().await.get_mut(slot) {
                    *p = None;
                }
                let lost: Vec<String> = host
                    .running
                    .lock()
                    .await
                    .iter()
                    .filter(|(_, s)| **s == slot)
                    .map(|(id, _)| id.clone())
                    .collect();
                for id in lost {
                    host.running.lock().await.remove(&id);
                    if let Some(reply) = host.pending.lock().await.remove(&id) {
                        let _ = reply.send(Err("function process exited".into()));
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            _ = shutdown.changed() => {
                let _ = child.kill().await;
                return;
            }
        }
    }
}

async fn next(State(Env { host, slot }): State<Env>) -> Response {
    if let Some(spawned) = host.spawned_at.lock().await.take() {
        let init = spawned.elapsed();
        let pid = host.pids.lock().await.get(slot).copied().flatten();
        let cold = ColdStart {
            init,
            peak_rss_kib: pid.and_then(peak_rss_kib),
        };
        if let Ok(mut all) = host.cold_starts.lock() {
            all.push(cold);
        }
        info!(function = %host.spec.binary, init_ms = init.as_millis() as u64, "cold start");
    }
    let inv = host.rx.lock().await.recv().await;
    let Some(inv) = inv else {
        return StatusCode::GONE.into_response();
    };
    host.running.lock().await.insert(inv.id.clone(), slot);
    let _ = inv.picked.send(slot);
    let deadline_ms = (std::time::SystemTime::now() + Duration::from_secs(host.spec.timeout_secs))
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default();
    let mut headers = HeaderMap::new();
    let mut put = |k: &'static str, v: &str| {
        if let Ok(v) = HeaderValue::from_str(v) {
            headers.insert(k, v);
        }
    };
    put("lambda-runtime-aws-request-id", &inv.id);
    put("lambda-runtime-deadline-ms", &deadline_ms.to_string());
    put("lambda-runtime-invoked-function-arn", &host.arn);
    put("lambda-runtime-trace-id", &format!("Root=1-{}", inv.id));
    put("content-type", "application/json");
    (headers, inv.payload).into_response()
}

async fn response(
    State(Env { host, .. }): State<Env>,
    Path(id): Path<String>,
    body: Bytes,
) -> StatusCode {
    host.running.lock().await.remove(&id);
    if let Some(reply) = host.pending.lock().await.remove(&id) {
        let _ = reply.send(Ok(body));
    }
    StatusCode::ACCEPTED
}

async fn error(
    State(Env { host, .. }): State<Env>,
    Path(id): Path<String>,
    body: Bytes,
) -> StatusCode {
    host.running.lock().await.remove(&id);
    if let Some(reply) = host.pending.lock().await.remove(&id) {
        let _ = reply.send(Err(String::from_utf8_lossy(&body).into_owned()));
    }
    StatusCode::ACCEPTED
}

async fn init_error(State(Env { host, .. }): State<Env>, body: Bytes) -> StatusCode {
    warn!(function = %host.spec.binary, error = %String::from_utf8_lossy(&body), "init error");
    StatusCode::ACCEPTED
}

/// Serves one HTTP request through a function, as a Lambda function URL does.
async fn function_url(
    State(host): State<Arc<FunctionHost>>,
    method: axum::http::Method,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // An AWS_IAM function URL refuses unsigned requests with 403, as AWS
    // does. (Signatures are not verified here; the caller's access key id
    // becomes the IAM identity in the request context.)
    let iam = if host.spec.function_url_iam {
        let Some(key) = sigv4_access_key(&headers) else {
            return (
                StatusCode::FORBIDDEN,
                axum::Json(serde_json::json!({"Message": "Forbidden"})),
            )
                .into_response();
        };
        serde_json::json!({"iam": {
            "accessKey": key,
            "accountId": "000000000000",
            "callerId": key,
            "userArn": format!("arn:aws:iam::000000000000:user/{key}"),
            "userId": key,
        }})
    } else {
        serde_json::Value::Null
    };
    let header_map: serde_json::Map<String, serde_json::Value> = headers
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.into())))
        .collect();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let event = serde_json::json!({
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": uri.path(),
        "rawQueryString": uri.query().unwrap_or(""),
        "headers": header_map,
        "requestContext": {
            "accountId": "anonymous",
            "apiId": host.spec.logical_id.to_ascii_lowercase(),
            "domainName": headers.get("host").and_then(|h| h.to_str().ok()).unwrap_or("127.0.0.1"),
            "requestId": uuid::Uuid::new_v4().to_string(),
            "authorizer": iam,
            "routeKey": "$default",
            "stage": "$default",
            "time": "",
            "timeEpoch": now.as_millis() as i64,
            "http": {
                "method": method.as_str(),
                "path": uri.path(),
                "protocol": "HTTP/1.1",
                "sourceIp": "127.0.0.1",
                "userAgent": headers.get("user-agent").and_then(|h| h.to_str().ok()).unwrap_or(""),
            },
        },
        "body": String::from_utf8_lossy(&body),
        "isBase64Encoded": false,
    });
    let reply = host.invoke(event.to_string()).await;
    host.invocations
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let Ok(body) = reply else {
        // What a function URL answers when the function errors.
        return (StatusCode::BAD_GATEWAY, "Internal Server Error").into_response();
    };
    let Ok(r) = serde_json::from_slice::<
        aws_lambda_events::lambda_function_urls::LambdaFunctionUrlResponse,
    >(&body) else {
        return (StatusCode::BAD_GATEWAY, "Internal Server Error").into_response();
    };
    let mut response = r.body.unwrap_or_default().into_response();
    *response.status_mut() =
        StatusCode::from_u16(r.status_code as u16).unwrap_or(StatusCode::BAD_GATEWAY);
    for (k, v) in &r.headers {
        response.headers_mut().insert(k.clone(), v.clone());
    }
    response
}

/// The access key id of a SigV4 `Authorization` header (for any service).
fn sigv4_access_key(headers: &HeaderMap) -> Option<String> {
    let auth = headers.get("authorization")?.to_str().ok()?;
    let credential = auth
        .strip_prefix("AWS4-HMAC-SHA256 ")?
        .split(',')
        .find_map(|p| p.trim().strip_prefix("Credential="))?;
    let key = credential.split('/').next()?;
    (!key.is_empty() && headers.contains_key("x-amz-date")).then(|| key.to_owned())
}

/// The Lambda JSON form of one SQS message.
pub fn lambda_record(m: &Message, arn: &str, region: &str) -> serde_json::Value {
    let attributes: serde_json::Map<String, serde_json::Value> = m
        .attributes()
        .map(|a| {
            a.iter()
                .map(|(k, v)| (k.as_str().to_owned(), v.clone().into()))
                .collect()
        })
        .unwrap_or_default();
    let message_attributes: serde_json::Map<String, serde_json::Value> = m
        .message_attributes()
        .map(|a| {
            a.iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        serde_json::json!({
                            "stringValue": v.string_value(),
                            "stringListValues": [],
                            "binaryListValues": [],
                            "dataType": v.data_type(),
                        }),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    serde_json::json!({
        "messageId": m.message_id(),
        "receiptHandle": m.receipt_handle(),
        "body": m.body(),
        "attributes": attributes,
        "messageAttributes": message_attributes,
        "md5OfBody": m.md5_of_body(),
        "eventSource": "aws:sqs",
        "eventSourceARN": arn,
        "awsRegion": region,
    })
}

#[allow(clippy::too_many_arguments)]
async fn poll(
    host: Arc<FunctionHost>,
    sqs: aws_sdk_sqs::Client,
    url: String,
    arn: String,
    batch_size: i32,
    wait: i32,
    region: String,
    shutdown: watch::Receiver<bool>,
) {
    while !*shutdown.borrow() {
        let received = sqs
            .receive_message()
            .queue_url(&url)
            .max_number_of_messages(batch_size.clamp(1, 10))
            .wait_time_seconds(wait)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .message_attribute_names("All")
            .send()
            .await;
        let messages = match received {
            Ok(out) => out.messages.unwrap_or_default(),
            Err(e) => {
                if !*shutdown.borrow() {
                    warn!(error = %aws_sdk_sqs::error::DisplayErrorContext(&e), queue = %url, "receive failed");
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        if messages.is_empty() {
            continue;
        }
        let throttled = host
            .throttle
            .fetch_update(
                std::sync::atomic::Ordering::SeqCst,
                std::sync::atomic::Ordering::SeqCst,
                |n| n.checked_sub(1),
            )
            .is_ok();
        if throttled {
            info!(function = %host.spec.binary, records = messages.len(), "throttled; batch left on the queue");
            for m in &messages {
                if let Some(h) = m.receipt_handle() {
                    let _ = sqs
                        .change_message_visibility()
                        .queue_url(&url)
                        .receipt_handle(h)
                        .visibility_timeout(1)
                        .send()
                        .await;
                }
            }
            continue;
        }
        let records: Vec<_> = messages
            .iter()
            .map(|m| lambda_record(m, &arn, &region))
            .collect();
        let event = serde_json::json!({ "Records": records }).to_string();
        let started = Instant::now();
        let reply = host.invoke(event).await;
        host.invocations
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let failed: Vec<String> = match &reply {
            Ok(body) => {
                match serde_json::from_slice::<aws_lambda_events::sqs::SqsBatchResponse>(body) {
                    Ok(r) => r
                        .batch_item_failures
                        .into_iter()
                        .map(|f| f.item_identifier)
                        .collect(),
                    // A null or empty response means the whole batch succeeded.
                    Err(_) if body.is_empty() || body.as_ref() == b"null" => Vec::new(),
                    Err(e) => {
                        warn!(error = %e, "unreadable batch response; treating the batch as failed");
                        messages
                            .iter()
                            .filter_map(|m| m.message_id.clone())
                            .collect()
                    }
                }
            }
            Err(_) => messages
                .iter()
                .filter_map(|m| m.message_id.clone())
                .collect(),
        };
        if let Ok(mut t) = host.timings.lock() {
            t.push((messages.len(), started.elapsed()));
        }
        info!(
            function = %host.spec.binary,
            records = messages.len(),
            failures = failed.len(),
            duration_ms = started.elapsed().as_millis() as u64,
            error = reply.as_ref().err().map(String::as_str).unwrap_or(""),
            "invocation"
        );
        let entries: Vec<DeleteMessageBatchRequestEntry> = messages
            .iter()
            .enumerate()
            .filter(|(_, m)| !m.message_id.as_ref().is_some_and(|id| failed.contains(id)))
            .filter_map(|(i, m)| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(m.receipt_handle()?)
                    .build()
                    .ok()
            })
            .collect();
        if !entries.is_empty()
            && let Err(e) = sqs
                .delete_message_batch()
                .queue_url(&url)
                .set_entries(Some(entries))
                .send()
                .await
        {
            warn!(error = %aws_sdk_sqs::error::DisplayErrorContext(&e), "delete failed; messages will be redelivered");
        }
    }
}
