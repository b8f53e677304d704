//! A local Slack-compatible server: the three Web API steps of the file
//! upload flow (`files.getUploadURLExternal`, the upload URL,
//! `files.completeUploadExternal`) with bearer-token checks, and incoming
//! webhooks under `/services/...`, plus `files.info` to look a file's shares
//! up. It keeps what it receives (in memory and as files) and can answer any
//! endpoint with an injected fault: a Slack `error`, an HTTP status (with
//! `Retry-After`), a delay, or a lost reply (the call takes effect, the
//! answer says 503).

use anyhow::Result;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinHandle;

/// The bot token the local server accepts unless told otherwise.
pub const LOCAL_BOT_TOKEN: &str = "xoxb-local-demo-token";

/// Endpoint names for [`SlackSink::push_fault`].
pub const GET_UPLOAD_URL: &str = "files.getUploadURLExternal";
/// The upload URL step.
pub const UPLOAD: &str = "upload";
/// The completion step.
pub const COMPLETE_UPLOAD: &str = "files.completeUploadExternal";
/// File lookup.
pub const FILES_INFO: &str = "files.info";
/// Incoming webhooks.
pub const INCOMING_WEBHOOK: &str = "incoming_webhook";

/// A fault to answer the next call of one endpoint with.
#[derive(Debug, Clone, PartialEq)]
pub enum SlackFault {
    /// HTTP 200 with `{"ok": false, "error": …}` (Web API) or 400 with the
    /// text (incoming webhook), as Slack does.
    Error(String),
    /// This HTTP status, with `Retry-After` seconds and a body text.
    Status {
        code: u16,
        retry_after: Option<u64>,
        body: String,
    },
    /// Wait, then answer normally.
    Delay(Duration),
    /// Do what was asked, then answer 503 as if the reply was lost.
    LoseReply,
}

/// A file that went through the upload flow.
#[derive(Debug, Clone)]
pub struct SlackFile {
    pub id: String,
    pub filename: String,
    pub declared_length: u64,
    pub bytes: Option<Vec<u8>>,
    /// Channels it was shared to.
    pub channels: Vec<String>,
}

/// A message the server posted to a channel (one completed upload or one
/// incoming-webhook post).
#[derive(Debug, Clone)]
pub struct SlackMessage {
    /// `files.completeUploadExternal` or `incoming_webhook`.
    pub via: &'static str,
    pub channel_id: Option<String>,
    /// The request body (the completion payload or the Block Kit message).
    pub payload: Value,
    /// Files shared with the message.
    pub files: Vec<SlackFile>,
    /// The incoming webhook's path (`T…/B…/name`), for incoming-webhook posts.
    pub hook: Option<String>,
}

#[derive(Default)]
struct Inner {
    tokens: BTreeSet<String>,
    files: HashMap<String, SlackFile>,
    messages: Vec<SlackMessage>,
    calls: Vec<(String, std::time::Instant)>,
    faults: HashMap<String, VecDeque<SlackFault>>,
    next_id: u64,
    /// Random faults for calls with no queued fault.
    chaos: Option<Arc<crate::chaos::Chaos>>,
}

#[derive(Clone)]
struct App {
    inner: Arc<Mutex<Inner>>,
    base: String,
    dir: Option<PathBuf>,
}

/// The local Slack server.
pub struct SlackSink {
    /// Base URL, e.g. `http://127.0.0.1:41234`; the Web API is under `/api`.
    pub url: String,
    inner: Arc<Mutex<Inner>>,
    task: JoinHandle<()>,
}

impl SlackSink {
    /// Starts on an ephemeral port, accepting [`LOCAL_BOT_TOKEN`]. With
    /// `capture_dir`, messages and uploaded files are also written there.
    pub async fn start(capture_dir: Option<PathBuf>) -> Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        if let Some(dir) = &capture_dir {
            std::fs::create_dir_all(dir.join("files"))?;
        }
        let inner = Arc::new(Mutex::new(Inner {
            tokens: BTreeSet::from([LOCAL_BOT_TOKEN.to_owned()]),
            ..Inner::default()
        }));
        let app = App {
            inner: inner.clone(),
            base: url.clone(),
            dir: capture_dir,
        };
        let router = Router::new()
            .route("/api/files.getUploadURLExternal", post(get_upload_url))
            .route("/upload/{id}", post(upload))
            .route("/api/files.completeUploadExternal", post(complete_upload))
            .route("/api/files.info", post(files_info))
            .route("/services/{*path}", post(incoming_webhook))
            .with_state(app);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Ok(Self { url, inner, task })
    }

    /// The Web API base URL to configure (`SLACK_API_BASE_URL`).
    pub fn api_base(&self) -> String {
        format!("{}/api", self.url)
    }

    /// An incoming-webhook URL on this server.
    pub fn webhook_url(&self, name: &str) -> String {
        format!("{}/services/T0LOCAL/B0LOCAL/{name}", self.url)
    }

    /// Queues a fault for the next call of `endpoint` (see the constants).
    pub fn push_fault(&self, endpoint: &str, fault: SlackFault) {
        if let Ok(mut i) = self.inner.lock() {
            i.faults
                .entry(endpoint.to_owned())
                .or_default()
                .push_back(fault);
        }
    }

    /// Injects random faults into calls with no queued fault.
    pub fn set_chaos(&self, chaos: Arc<crate::chaos::Chaos>) {
        if let Ok(mut i) = self.inner.lock() {
            i.chaos = Some(chaos);
        }
    }

    /// Revokes a token: calls with it get `invalid_auth`.
    pub fn revoke(&self, token: &str) {
        if let Ok(mut i) = self.inner.lock() {
            i.tokens.remove(token);
        }
    }

    /// Messages posted so far.
    pub fn messages(&self) -> Vec<SlackMessage> {
        self.inner
            .lock()
            .map(|i| i.messages.clone())
            .unwrap_or_default()
    }

    /// Every call so far, by endpoint name, in order.
    pub fn calls(&self) -> Vec<String> {
        self.inner
            .lock()
            .map(|i| i.calls.iter().map(|(c, _)| c.clone()).collect())
            .unwrap_or_default()
    }

    /// The time between consecutive calls of one endpoint.
    pub fn gaps(&self, endpoint: &str) -> Vec<Duration> {
        let times: Vec<std::time::Instant> = self
            .inner
            .lock()
            .map(|i| {
                i.calls
                    .iter()
                    .filter(|(c, _)| c == endpoint)
                    .map(|(_, t)| *t)
                    .collect()
            })
            .unwrap_or_default();
        times.windows(2).map(|w| w[1] - w[0]).collect()
    }
}

impl Drop for SlackSink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn api_error(error: &str) -> Response {
    axum::Json(json!({"ok": false, "error": error})).into_response()
}

/// Records a call of `endpoint` and answers it: with the next queued fault
/// for that endpoint, or with `work`. A lost reply runs `work` and then
/// answers 503 anyway.
async fn faulted(
    app: &App,
    endpoint: &str,
    web_api: bool,
    work: impl FnOnce() -> Response + Send + 'static,
) -> Response {
    let fault = match app.inner.lock() {
        Ok(mut i) => {
            i.calls
                .push((endpoint.to_owned(), std::time::Instant::now()));
            let queued = i.faults.get_mut(endpoint).and_then(VecDeque::pop_front);
            queued.or_else(|| {
                use crate::chaos::ChaosFault as C;
                let status = |code: u16, retry_after| SlackFault::Status {
                    code,
                    retry_after,
                    body: String::new(),
                };
                i.chaos.as_ref()?.roll().map(|f| match f {
                    C::Unavailable => status(503, None),
                    C::Throttled => status(429, Some(1)),
                    // An HTTP server cannot drop a connection here: a
                    // gateway error stands in for it.
                    C::Dropped => status(502, None),
                    C::Timeout => SlackFault::Delay(crate::chaos::CHAOS_TIMEOUT),
                })
            })
        }
        Err(_) => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    };
    match fault {
        None => work(),
        Some(SlackFault::LoseReply) => {
            let _ = work();
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        }
        Some(SlackFault::Delay(d)) => {
            // Like a real backend, the work goes on when the client gives up
            // and hangs up: a timed-out call may still be applied, late.
            let late = tokio::spawn(async move {
                tokio::time::sleep(d).await;
                work()
            });
            late.await
                .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
        }
        Some(SlackFault::Error(e)) if web_api => api_error(&e),
        Some(SlackFault::Error(e)) => (StatusCode::BAD_REQUEST, e).into_response(),
        Some(SlackFault::Status {
            code,
            retry_after,
            body,
        }) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut r = if web_api && !body.is_empty() {
                (status, axum::Json(json!({"ok": false, "error": body}))).into_response()
            } else {
                (status, body).into_response()
            };
            if let Some(s) = retry_after
                && let Ok(v) = s.to_string().parse()
            {
                r.headers_mut().insert("retry-after", v);
            }
            r
        }
    }
}

fn authorized(app: &App, headers: &HeaderMap) -> bool {
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match (token, app.inner.lock()) {
        (Some(t), Ok(i)) => i.tokens.contains(t),
        _ => false,
    }
}

/// Reads a form or JSON body into a map of strings (JSON values kept as text).
fn params(headers: &HeaderMap, body: &[u8]) -> BTreeMap<String, String> {
    let json = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if json {
        let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        v.as_object()
            .map(|o| {
                o.iter()
                    .map(|(k, v)| {
                        let text = v
                            .as_str()
                            .map(str::to_owned)
                            .unwrap_or_else(|| v.to_string());
                        (k.clone(), text)
                    })
                    .collect()
            })
            .unwrap_or_default()
    } else {
        url::form_urlencoded::parse(body).into_owned().collect()
    }
}

async fn get_upload_url(State(app): State<App>, headers: HeaderMap, body: Bytes) -> Response {
    let a = app.clone();
    faulted(&app, GET_UPLOAD_URL, true, move || {
        do_get_upload_url(&a, &headers, &body)
    })
    .await
}

fn do_get_upload_url(app: &App, headers: &HeaderMap, body: &[u8]) -> Response {
    if !authorized(app, headers) {
        return api_error("invalid_auth");
    }
    let p = params(headers, body);
    let (Some(filename), Some(length)) = (
        p.get("filename").cloned(),
        p.get("length").and_then(|l| l.parse::<u64>().ok()),
    ) else {
        return api_error("invalid_arguments");
    };
    let Ok(mut i) = app.inner.lock() else {
        return api_error("internal_error");
    };
    i.next_id += 1;
    let id = format!("F{:010}", i.next_id);
    i.files.insert(
        id.clone(),
        SlackFile {
            id: id.clone(),
            filename,
            declared_length: length,
            bytes: None,
            channels: Vec::new(),
        },
    );
    axum::Json(json!({
        "ok": true,
        "upload_url": format!("{}/upload/{id}", app.base),
        "file_id": id,
    }))
    .into_response()
}

async fn upload(State(app): State<App>, Path(id): Path<String>, body: Bytes) -> Response {
    let a = app.clone();
    faulted(&app, UPLOAD, false, move || do_upload(&a, &id, &body)).await
}

fn do_upload(app: &App, id: &str, body: &[u8]) -> Response {
    let Ok(mut i) = app.inner.lock() else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    match i.files.get_mut(id) {
        Some(f) => {
            f.bytes = Some(body.to_vec());
            (StatusCode::OK, format!("OK - {}", body.len())).into_response()
        }
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn complete_upload(State(app): State<App>, headers: HeaderMap, body: Bytes) -> Response {
    let a = app.clone();
    faulted(&app, COMPLETE_UPLOAD, true, move || {
        do_complete(&a, &headers, &body)
    })
    .await
}

fn do_complete(app: &App, headers: &HeaderMap, body: &[u8]) -> Response {
    if !authorized(app, headers) {
        return api_error("invalid_auth");
    }
    let p = params(headers, body);
    let requested: Vec<Value> = p
        .get("files")
        .and_then(|f| serde_json::from_str(f).ok())
        .unwrap_or_default();
    if requested.is_empty() {
        return api_error("invalid_arguments");
    }
    let channel_id = p.get("channel_id").cloned();
    let Ok(mut i) = app.inner.lock() else {
        return api_error("internal_error");
    };
    let mut files = Vec::new();
    for r in &requested {
        let Some(f) = r["id"].as_str().and_then(|id| i.files.get_mut(id)) else {
            return api_error("file_not_found");
        };
        if f.bytes.as_ref().map(|b| b.len() as u64) != Some(f.declared_length) {
            return api_error("file_upload_size_mismatch");
        }
        if let Some(c) = &channel_id {
            f.channels.push(c.clone());
        }
        files.push(f.clone());
    }
    let payload = serde_json::from_slice(body).unwrap_or_else(|_| json!(p));
    let message = SlackMessage {
        via: COMPLETE_UPLOAD,
        channel_id,
        payload,
        files: files.clone(),
        hook: None,
    };
    i.messages.push(message.clone());
    let n = i.messages.len();
    drop(i);
    capture(app, n, &message);
    axum::Json(json!({
        "ok": true,
        "files": files.iter().map(|f| json!({"id": f.id, "title": f.filename})).collect::<Vec<_>>(),
    }))
    .into_response()
}

async fn files_info(State(app): State<App>, headers: HeaderMap, body: Bytes) -> Response {
    let a = app.clone();
    faulted(&app, FILES_INFO, true, move || {
        do_files_info(&a, &headers, &body)
    })
    .await
}

fn do_files_info(app: &App, headers: &HeaderMap, body: &[u8]) -> Response {
    if !authorized(app, headers) {
        return api_error("invalid_auth");
    }
    let p = params(headers, body);
    let Ok(i) = app.inner.lock() else {
        return api_error("internal_error");
    };
    // Like Slack, a file that was never completed is not visible.
    match p.get("file").and_then(|id| i.files.get(id)) {
        Some(f) if !f.channels.is_empty() => axum::Json(json!({
            "ok": true,
            "file": {
                "id": f.id,
                "name": f.filename,
                "channels": f.channels,
                "shares": {"public": f.channels.iter().map(|c| (c.clone(), json!([{"ts": "1"}]))).collect::<serde_json::Map<_, _>>()},
            },
        }))
        .into_response(),
        _ => api_error("file_not_found"),
    }
}

async fn incoming_webhook(
    State(app): State<App>,
    Path(path): Path<String>,
    body: Bytes,
) -> Response {
    let a = app.clone();
    faulted(&app, INCOMING_WEBHOOK, false, move || {
        do_incoming_webhook(&a, &path, &body)
    })
    .await
}

fn do_incoming_webhook(app: &App, path: &str, body: &[u8]) -> Response {
    let Ok(payload) = serde_json::from_slice::<Value>(body) else {
        return (StatusCode::BAD_REQUEST, "invalid_payload").into_response();
    };
    if payload.get("text").is_none() && payload.get("blocks").is_none() {
        return (StatusCode::BAD_REQUEST, "no_text").into_response();
    }
    if let Some(blocks) = payload.get("blocks")
        && let Err(why) = check_blocks(blocks)
    {
        tracing::warn!(%why, "incoming webhook refused the blocks");
        return (StatusCode::BAD_REQUEST, "invalid_blocks").into_response();
    }
    let message = SlackMessage {
        via: INCOMING_WEBHOOK,
        channel_id: None,
        payload,
        files: Vec::new(),
        hook: Some(path.to_owned()),
    };
    let n = {
        let Ok(mut i) = app.inner.lock() else {
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        };
        i.messages.push(message.clone());
        i.messages.len()
    };
    capture(app, n, &message);
    (StatusCode::OK, "ok").into_response()
}

/// Block Kit's documented limits, as Slack enforces them (it answers 400
/// `invalid_blocks`): at most 50 blocks; a header's text ≤ 150 characters;
/// a section's text ≤ 3,000 and at most 10 fields of ≤ 2,000; an image
/// needs an `image_url` (≤ 3,000) and `alt_text` (≤ 2,000); at most 25
/// action and 10 context elements.
pub fn check_blocks(blocks: &Value) -> Result<(), String> {
    let blocks = blocks.as_array().ok_or("blocks is not an array")?;
    if blocks.len() > 50 {
        return Err(format!("{} blocks", blocks.len()));
    }
    let len = |v: &Value| v.as_str().map_or(0, |s| s.chars().count());
    for (i, b) in blocks.iter().enumerate() {
        let fail = |what: &str| Err(format!("block {i}: {what}"));
        match b["type"].as_str() {
            Some("header") => {
                if b["text"]["type"] != "plain_text" || len(&b["text"]["text"]) > 150 {
                    return fail("header text");
                }
            }
            Some("section") => {
                let fields = b["fields"].as_array().map_or(&[][..], Vec::as_slice);
                if b["text"].is_null() && fields.is_empty() {
                    return fail("section without text or fields");
                }
                if len(&b["text"]["text"]) > 3000 {
                    return fail("section text over 3000");
                }
                if fields.len() > 10 || fields.iter().any(|f| len(&f["text"]) > 2000) {
                    return fail("section fields");
                }
            }
            Some("image") => {
                let url = len(&b["image_url"]);
                if url == 0 || url > 3000 || len(&b["alt_text"]) == 0 || len(&b["alt_text"]) > 2000
                {
                    return fail("image url or alt text");
                }
            }
            Some("actions") => {
                let n = b["elements"].as_array().map_or(0, Vec::len);
                if n == 0 || n > 25 {
                    return fail("actions elements");
                }
            }
            Some("context") => {
                let n = b["elements"].as_array().map_or(0, Vec::len);
                if n == 0 || n > 10 {
                    return fail("context elements");
                }
            }
            Some("divider") => {}
            other => return fail(&format!("unknown type {other:?}")),
        }
    }
    Ok(())
}

/// A name safe to use as a file name (client-supplied text).
fn safe_name(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect::<String>()
        .trim_start_matches('.')
        .chars()
        .take(100)
        .collect()
}

fn capture(app: &App, n: usize, m: &SlackMessage) {
    let Some(dir) = &app.dir else { return };
    let mut files = Vec::new();
    for f in &m.files {
        let path = dir
            .join("files")
            .join(format!("{}-{}", f.id, safe_name(&f.filename)));
        let bytes = f.bytes.clone().unwrap_or_default();
        let _ = std::fs::write(&path, &bytes);
        files.push(json!({
            "id": f.id,
            "filename": f.filename,
            "size": bytes.len(),
            "sha256": hex::encode(Sha256::digest(&bytes)),
            "saved_as": path,
        }));
    }
    let doc = json!({
        "via": m.via,
        "channel_id": m.channel_id,
        "payload": m.payload,
        "files": files,
    });
    let name = match &m.channel_id {
        Some(c) => format!("{n:04}-{}.json", safe_name(c)),
        None => format!("{n:04}-incoming-webhook.json"),
    };
    if let Ok(text) = serde_json::to_vec_pretty(&doc) {
        let _ = std::fs::write(dir.join(name), text);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn given_blocks_past_slack_limits_when_posted_then_the_sink_refuses_them() {
        let header = |n: usize| json!([{"type": "header", "text": {"type": "plain_text", "text": "x".repeat(n)}}]);
        assert!(check_blocks(&header(150)).is_ok());
        assert!(check_blocks(&header(151)).is_err());
        let section = |n: usize| json!([{"type": "section", "text": {"type": "mrkdwn", "text": "x".repeat(n)}}]);
        assert!(check_blocks(&section(3000)).is_ok());
        assert!(check_blocks(&section(3001)).is_err());
        let many: Vec<Value> = (0..51).map(|_| json!({"type": "divider"})).collect();
        assert!(check_blocks(&Value::Array(many)).is_err());
        assert!(check_blocks(&json!([{"type": "image", "image_url": "https://x"}])).is_err());
    }

    #[test]
    fn given_the_preview_messages_when_checked_then_they_are_within_slack_limits() {
        let out = std::env::temp_dir().join(format!("preview-{}", uuid::Uuid::new_v4().simple()));
        crate::preview::write(&crate::stack::project_root(), &out).expect("preview");
        let message: Value =
            serde_json::from_slice(&std::fs::read(out.join("slack-blocks.json")).expect("blocks"))
                .expect("json");
        check_blocks(&message["blocks"]).expect("within limits");
        let _ = std::fs::remove_dir_all(out);
    }
}
