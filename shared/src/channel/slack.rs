//! Slack channel, in two modes chosen by the target config:
//! - bot token: the upload flow that replaced `files.upload`
//!   (`files.getUploadURLExternal` → POST the bytes → `files.completeUploadExternal`),
//!   saving each uploaded file id so a retry completes instead of uploading again;
//! - incoming webhook: a Block Kit message with download buttons.
//!
//! The API base URL is configurable so tests run against a local
//! Slack-compatible server.

use super::webhook::{LazyClient, retry_after, send_error};
use super::{Channel, DeliveryContext, DeliveryError, LinkedFile, Receipt};
use crate::domain::connection::Credentials;
use crate::domain::target::{SlackChannelId, SlackConfig};
use crate::domain::url::WebhookUrl;
use crate::domain::{TargetConfig, Timestamp};
use async_trait::async_trait;
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;
use tracing::warn;

/// The public Slack Web API.
pub const DEFAULT_API_BASE: &str = "https://slack.com/api";

/// Progress key: a completion was sent (its answer may have been lost).
const COMPLETE_SENT: &str = "slack_complete_sent";
/// The [`COMPLETE_SENT`] value once Slack answered the completion (with an
/// error); before that it holds the time it was sent.
const ANSWERED: &str = "answered";
/// How long a completion that got no answer may take to show in
/// `files.info` before it is sent again.
const COMPLETE_SETTLE: Duration = Duration::from_secs(60);

/// How much longer to wait before completing again, if a completion sent at
/// `sent_at` (`None`: an old record without a time) may still be applied.
fn settle_wait(sent_at: Option<Timestamp>, now: Timestamp) -> Option<Duration> {
    let ms = now.millis_since(sent_at?).max(0);
    let elapsed = Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    COMPLETE_SETTLE
        .checked_sub(elapsed)
        .filter(|w| !w.is_zero())
}

/// How long Slack gets to answer one call.
pub const TIMEOUT: Duration = Duration::from_secs(15);

/// The Slack channel.
pub struct SlackChannel {
    /// The Web API and incoming webhooks both go through it (no redirects,
    /// every address vetted).
    client: LazyClient,
    api_base: String,
    allow_private_hosts: bool,
}

impl SlackChannel {
    /// Over a [`LazyClient`] shared with other channels (one TLS root store
    /// per process, loaded at the first send); `api_base` is e.g.
    /// `https://slack.com/api`.
    pub fn with_client(api_base: &str, client: LazyClient, allow_private_hosts: bool) -> Self {
        Self {
            client,
            api_base: api_base.trim_end_matches('/').to_owned(),
            allow_private_hosts,
        }
    }
}

/// Maps a Web API `error` string.
pub fn classify_api_error(error: &str, retry_after: Option<Duration>) -> DeliveryError {
    let message = format!("Slack answered {error}");
    match error {
        "ratelimited"
        | "rate_limited"
        | "internal_error"
        | "fatal_error"
        | "service_unavailable"
        | "request_timeout" => DeliveryError::throttled(error, message, retry_after),
        // invalid_auth, not_authed, token_revoked, account_inactive,
        // channel_not_found, not_in_channel, missing_scope, is_archived,
        // invalid_arguments and anything unknown: retrying will not help.
        _ => DeliveryError::permanent(error, message),
    }
}

/// Maps an incoming-webhook answer (status and body text such as `no_service`).
pub fn classify_hook(
    status: u16,
    body: &str,
    retry_after: Option<Duration>,
) -> Result<(), DeliveryError> {
    let reason = body.trim().chars().take(100).collect::<String>();
    let code = if reason.is_empty() || reason.contains(char::is_whitespace) {
        format!("http_{status}")
    } else {
        reason.clone()
    };
    let message = format!("Slack webhook answered {status} {reason}");
    match status {
        200..=299 => Ok(()),
        429 | 408 | 500..=599 => Err(DeliveryError::throttled(code, message, retry_after)),
        404 | 410 => Err(DeliveryError::gone(code, message)),
        _ if matches!(
            reason.as_str(),
            "no_service" | "channel_is_archived" | "team_disabled" | "no_team"
        ) =>
        {
            Err(DeliveryError::gone(code, message))
        }
        _ => Err(DeliveryError::permanent(code, message)),
    }
}

/// Escapes text for Slack mrkdwn.
fn mrkdwn(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(max - 1).collect();
        t.push('…');
        t
    }
}

/// Longest text of a section block (Slack refuses longer).
pub const MAX_SECTION_TEXT: usize = 3000;
/// Longest cell in the monospaced preview, in characters.
const PREVIEW_CELL: usize = 24;

/// The preview as Slack shows it: a monospaced table in a code block (or,
/// for a two-column report, label/value fields), cut to fit a section,
/// and a line saying what was left out. `None` without a preview.
pub struct SlackPreview {
    /// One section block.
    pub block: Value,
    /// The monospaced text (also used in the bot's comment).
    pub text: String,
    /// "…and 12 more rows in the PDF."
    pub note: Option<String>,
}

/// Builds the Slack preview for a send.
pub fn preview(ctx: &DeliveryContext<'_>) -> Option<SlackPreview> {
    let (p, n) = ctx.preview_rows()?;
    let formats: Vec<String> = ctx
        .files
        .iter()
        .map(|f| f.format.as_str().to_uppercase())
        .collect();
    // The most rows whose table fits a section, code fences included.
    let mut shown = n.min(p.rows.len());
    let text = loop {
        let text = format!("```\n{}\n```", p.text_table(shown, PREVIEW_CELL).join("\n"));
        // Measured as sent: escaping makes `&` five characters.
        if mrkdwn(&text).chars().count() <= MAX_SECTION_TEXT || shown == 0 {
            break text;
        }
        shown -= 1;
    };
    if mrkdwn(&text).chars().count() > MAX_SECTION_TEXT {
        return None;
    }
    let mut left_out = Vec::new();
    let more = p.rows_after(shown);
    if more > 0 {
        left_out.push(format!(
            "…and {} more row{} in the {}.",
            crate::render::group_thousands(&more.to_string()),
            if more == 1 { "" } else { "s" },
            formats.join(" and ")
        ));
    }
    if p.hidden_columns > 0 {
        left_out.push(format!(
            "Showing {} of {} columns.",
            p.columns.len(),
            p.columns.len() + p.hidden_columns
        ));
    }
    let pairs = p.columns.len() == 2 && shown > 0 && shown <= 10;
    let block = if pairs {
        let fields: Vec<Value> = p
            .first(shown)
            .iter()
            .map(|r| {
                let cell = |i: usize| mrkdwn(&truncate(r.get(i).map_or("", String::as_str), 200));
                json!({"type": "mrkdwn", "text": format!("*{}*\n{}", cell(0), cell(1))})
            })
            .collect();
        json!({"type": "section", "fields": fields})
    } else {
        json!({"type": "section", "text": {"type": "mrkdwn", "text": mrkdwn(&text)}})
    };
    Some(SlackPreview {
        block,
        text,
        note: (!left_out.is_empty()).then(|| left_out.join(" ")),
    })
}

/// The Block Kit message an incoming webhook posts.
pub fn block_message(ctx: &DeliveryContext<'_>) -> Value {
    let name = &ctx.execution.report_name;
    let buttons: Vec<Value> = ctx
        .files
        .iter()
        .map(|f| {
            json!({
                "type": "button",
                "text": {"type": "plain_text", "text": format!("Download {}", f.format.as_str().to_uppercase())},
                "url": f.download_url,
                "action_id": format!("download_{}", f.format.as_str()),
            })
        })
        .collect();
    let rows = ctx.execution.row_count;
    let mut blocks = vec![
        json!({"type": "header", "text": {"type": "plain_text", "text": truncate(name, 150)}}),
        json!({"type": "section", "fields": [
            {"type": "mrkdwn", "text": format!("*Generated*\n{}", ctx.local_time())},
            {"type": "mrkdwn", "text": format!("*Rows*\n{}", crate::render::group_thousands(&rows.to_string()))},
        ]}),
    ];
    if let Some(params) = parameters(ctx) {
        blocks.push(json!({"type": "context", "elements": [{"type": "mrkdwn", "text": params}]}));
    }
    if let Some(chart) = ctx.chart {
        blocks.push(json!({
            "type": "image",
            "image_url": chart.download_url,
            "alt_text": truncate(&chart.title, 2000),
            "title": {"type": "plain_text", "text": truncate(&chart.title, 2000)},
        }));
    }
    if let Some(p) = preview(ctx) {
        blocks.push(p.block);
        if let Some(note) = p.note {
            blocks.push(
                json!({"type": "context", "elements": [{"type": "mrkdwn", "text": mrkdwn(&note)}]}),
            );
        }
    }
    blocks.push(json!({"type": "actions", "elements": buttons}));
    blocks.push(json!({"type": "context", "elements": [
        {"type": "mrkdwn", "text": format!("Links work until {}", ctx.expires_local())},
    ]}));
    json!({
        "text": format!("Report ready: {}", mrkdwn(name)),
        "blocks": blocks,
    })
}

/// The message without its image blocks, if it had any.
fn without_images(message: &Value) -> Option<Value> {
    let blocks = message["blocks"].as_array()?;
    let kept: Vec<Value> = blocks
        .iter()
        .filter(|b| b["type"] != "image")
        .cloned()
        .collect();
    (kept.len() < blocks.len()).then(|| {
        let mut m = message.clone();
        m["blocks"] = Value::Array(kept);
        m
    })
}

/// The parameters as one mrkdwn line (bounded), if any.
fn parameters(ctx: &DeliveryContext<'_>) -> Option<String> {
    let p = ctx.preview?;
    if p.parameters.is_empty() {
        return None;
    }
    let line = p
        .parameters
        .iter()
        .map(|(k, v)| format!("*{}:* {}", mrkdwn(k), mrkdwn(v)))
        .collect::<Vec<_>>()
        .join("   ");
    Some(truncate(&line, 2000))
}

impl SlackChannel {
    /// One Web API call; `ok: false` and HTTP errors are classified.
    async fn call(
        &self,
        method: &str,
        token: &str,
        body: RequestBody,
    ) -> Result<Value, DeliveryError> {
        let req = self
            .client
            .get()?
            .post(format!("{}/{method}", self.api_base))
            .bearer_auth(token);
        let req = match body {
            RequestBody::Form(pairs) => {
                let encoded = url::form_urlencoded::Serializer::new(String::new())
                    .extend_pairs(pairs)
                    .finish();
                req.header("content-type", "application/x-www-form-urlencoded")
                    .body(encoded)
            }
            RequestBody::Json(v) => req
                .header("content-type", "application/json; charset=utf-8")
                .body(v.to_string()),
        };
        let response = req.send().await.map_err(send_error)?;
        let status = response.status().as_u16();
        let wait = retry_after(response.headers());
        if status == 429 {
            return Err(classify_api_error("ratelimited", wait));
        }
        if status >= 500 {
            return Err(DeliveryError::throttled(
                format!("http_{status}"),
                format!("Slack {method} answered {status}"),
                wait,
            ));
        }
        if !(200..300).contains(&status) {
            return Err(DeliveryError::permanent(
                format!("http_{status}"),
                format!("Slack {method} answered {status}"),
            ));
        }
        let v: Value = response
            .json()
            .await
            .map_err(|e| DeliveryError::temporary("bad_response", e.without_url().to_string()))?;
        if v["ok"].as_bool() == Some(true) {
            Ok(v)
        } else {
            let error = v["error"].as_str().unwrap_or("unknown_error");
            Err(classify_api_error(error, wait))
        }
    }

    async fn upload(
        &self,
        ctx: &DeliveryContext<'_>,
        channel: &SlackChannelId,
        token: &str,
    ) -> Result<Receipt, DeliveryError> {
        let mut files = Vec::new();
        let mut resumed = false;
        // The report's files, then the chart picture (shown inline by Slack).
        let mut uploads: Vec<(String, String, Option<&LinkedFile>)> = ctx
            .files
            .iter()
            .map(|f| {
                (
                    format!("slack_file_id.{}", f.format.as_str()),
                    ctx.file_name(f),
                    Some(f),
                )
            })
            .collect();
        if ctx.chart.is_some() {
            let name = ctx
                .files
                .first()
                .map_or_else(|| "report.pdf".to_owned(), |f| ctx.file_name(f));
            let stem = name.rsplit_once('.').map_or(name.as_str(), |(s, _)| s);
            uploads.push((
                "slack_file_id.chart".into(),
                format!("{stem}-chart.png"),
                None,
            ));
        }
        for (key, title, file) in uploads {
            if let Some(id) = ctx.progress.get(&key).filter(|id| !id.is_empty()) {
                files.push((id, title));
                resumed = true;
                continue;
            }
            let bytes = match file {
                Some(f) => ctx.read(f).await?,
                None => match ctx.chart_bytes().await {
                    Some(bytes) => bytes,
                    None => continue,
                },
            };
            let ticket = self
                .call(
                    "files.getUploadURLExternal",
                    token,
                    RequestBody::Form(vec![
                        ("filename", title.clone()),
                        ("length", bytes.len().to_string()),
                    ]),
                )
                .await?;
            let (Some(url), Some(id)) = (ticket["upload_url"].as_str(), ticket["file_id"].as_str())
            else {
                return Err(DeliveryError::temporary(
                    "bad_response",
                    "files.getUploadURLExternal answered without upload_url/file_id",
                ));
            };
            let response = self
                .client
                .get()?
                .post(url)
                .header("content-type", "application/octet-stream")
                .body(bytes)
                .send()
                .await
                .map_err(send_error)?;
            let status = response.status().as_u16();
            if !(200..300).contains(&status) {
                let wait = retry_after(response.headers());
                return Err(if status == 429 || status >= 500 {
                    DeliveryError::throttled(
                        format!("upload_http_{status}"),
                        format!("file upload answered {status}"),
                        wait,
                    )
                } else {
                    DeliveryError::permanent(
                        format!("upload_http_{status}"),
                        format!("file upload answered {status}"),
                    )
                });
            }
            ctx.progress
                .save(BTreeMap::from([(key, id.to_owned())]))
                .await?;
            files.push((id.to_owned(), title));
        }
        let mut comment = format!(
            "*{}* — generated {}, {} rows.",
            mrkdwn(&ctx.execution.report_name),
            ctx.local_time(),
            crate::render::group_thousands(&ctx.execution.row_count.to_string())
        );
        if let Some(p) = preview(ctx) {
            comment.push('\n');
            comment.push_str(&mrkdwn(&p.text));
            if let Some(note) = p.note {
                comment.push('\n');
                comment.push_str(&mrkdwn(&note));
            }
        }
        let payload = json!({
            "files": files.iter().map(|(id, title)| json!({"id": id, "title": title})).collect::<Vec<_>>(),
            "channel_id": channel.as_str(),
            "initial_comment": comment,
        });
        // A completion whose answer was lost may have posted already, or may
        // still be applied late: ask Slack, and while the answer is "not yet"
        // within the settle window, wait instead of completing again.
        let sent_at = ctx
            .progress
            .get(COMPLETE_SENT)
            .map(|v| v.parse::<i64>().ok().and_then(Timestamp::from_unix_millis));
        let shared = match (resumed, sent_at, files.first()) {
            (true, Some(sent_at), Some((id, _))) => {
                if self.is_shared(token, id, channel).await? {
                    true
                } else if let Some(wait) = settle_wait(sent_at, ctx.now) {
                    return Err(DeliveryError::throttled(
                        "completion_unconfirmed",
                        "an earlier completion is not visible yet; checking again before completing",
                        Some(wait),
                    ));
                } else {
                    false
                }
            }
            _ => false,
        };
        if !shared {
            ctx.progress
                .save(BTreeMap::from([(
                    COMPLETE_SENT.to_owned(),
                    ctx.now.unix_millis().to_string(),
                )]))
                .await?;
            let completed = self
                .call(
                    "files.completeUploadExternal",
                    token,
                    RequestBody::Json(payload),
                )
                .await;
            if let Err(e) = &completed
                && !matches!(e.code(), "timeout" | "network")
            {
                // Slack answered: it is done with the request, so `files.info`
                // tells the truth at once and the retry need not wait.
                ctx.progress
                    .save(BTreeMap::from([(
                        COMPLETE_SENT.to_owned(),
                        ANSWERED.to_owned(),
                    )]))
                    .await?;
            }
            match completed {
                Ok(_) => {}
                // Uploads that were never completed expire on Slack's side:
                // forget them so the retry uploads afresh.
                Err(e) if resumed && e.code() == "file_not_found" => {
                    let cleared = ctx
                        .files
                        .iter()
                        .map(|f| {
                            (
                                format!("slack_file_id.{}", f.format.as_str()),
                                String::new(),
                            )
                        })
                        .collect();
                    ctx.progress.save(cleared).await?;
                    return Err(DeliveryError::temporary(
                        "upload_expired",
                        "Slack no longer has the earlier upload; uploading again",
                    ));
                }
                Err(e) => return Err(e),
            }
        }
        let mut receipt = Receipt::default();
        receipt.metadata.insert(
            "slack_file_ids".into(),
            files
                .iter()
                .map(|(id, _)| id.as_str())
                .collect::<Vec<_>>()
                .join(","),
        );
        receipt
            .metadata
            .insert("slack_channel_id".into(), channel.as_str().to_owned());
        Ok(receipt)
    }

    /// Whether `file_id` is already shared in `channel` (`files.info`). A
    /// file Slack does not show was never completed; any other failure is
    /// doubt, and doubt is a temporary error, never a second completion.
    async fn is_shared(
        &self,
        token: &str,
        file_id: &str,
        channel: &SlackChannelId,
    ) -> Result<bool, DeliveryError> {
        let info = match self
            .call(
                "files.info",
                token,
                RequestBody::Form(vec![("file", file_id.to_owned())]),
            )
            .await
        {
            Ok(info) => info,
            Err(e) if e.code() == "file_not_found" => return Ok(false),
            Err(e) => return Err(e),
        };
        let file = &info["file"];
        let in_list = file["channels"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c.as_str() == Some(channel.as_str())));
        let in_shares = ["public", "private"]
            .iter()
            .any(|kind| file["shares"][kind].get(channel.as_str()).is_some());
        Ok(in_list || in_shares)
    }

    async fn post_hook(
        &self,
        ctx: &DeliveryContext<'_>,
        url: &str,
    ) -> Result<Receipt, DeliveryError> {
        let url = WebhookUrl::parse(url, self.allow_private_hosts).map_err(|e| {
            DeliveryError::permanent("invalid_credentials", format!("incoming webhook URL: {e}"))
        })?;
        let message = block_message(ctx);
        let mut result = self.post_message(&url, &message).await;
        // Slack fetches an image block's URL while it posts, and refuses the
        // whole message (400 invalid_blocks) when that fails. The chart is
        // decoration: post once more without it (a 400 posted nothing).
        if let Err(e) = &result
            && e.code() == "invalid_blocks"
            && let Some(without) = without_images(&message)
        {
            warn!("Slack refused the blocks with the chart; posting without it");
            result = self.post_message(&url, &without).await;
        }
        let status = result?;
        let mut receipt = Receipt::default();
        receipt
            .metadata
            .insert("http_status".into(), status.to_string());
        Ok(receipt)
    }

    /// One POST to an incoming webhook; the status when Slack took it.
    async fn post_message(&self, url: &WebhookUrl, message: &Value) -> Result<u16, DeliveryError> {
        let response = self
            .client
            .get()?
            .post(url.as_url().clone())
            .header("content-type", "application/json")
            .body(message.to_string())
            .send()
            .await
            .map_err(send_error)?;
        let status = response.status().as_u16();
        let wait = retry_after(response.headers());
        let body = response.text().await.unwrap_or_default();
        classify_hook(status, &body, wait)?;
        Ok(status)
    }
}

enum RequestBody {
    Form(Vec<(&'static str, String)>),
    Json(Value),
}

#[async_trait]
impl Channel for SlackChannel {
    async fn deliver(&self, ctx: &DeliveryContext<'_>) -> Result<Receipt, DeliveryError> {
        let TargetConfig::Slack(config) = &ctx.target.config else {
            return Err(DeliveryError::permanent(
                "invalid_target_config",
                "target is not a Slack target",
            ));
        };
        let credentials = ctx.connection.map(|c| &c.credentials);
        match (config, credentials) {
            (SlackConfig::BotToken { channel_id }, Some(Credentials::SlackBot { token })) => {
                self.upload(ctx, channel_id, token.expose_secret()).await
            }
            (SlackConfig::IncomingWebhook {}, Some(Credentials::SlackIncomingWebhook { url })) => {
                self.post_hook(ctx, url.expose_secret()).await
            }
            (_, None) => Err(DeliveryError::permanent(
                "invalid_credentials",
                "Slack target has no service connection",
            )),
            (_, Some(other)) => Err(DeliveryError::permanent(
                "invalid_credentials",
                format!(
                    "Slack target in this mode cannot use a {} connection",
                    other.kind()
                ),
            )),
        }
    }

    /// One bucket per channel (bot mode) or per incoming webhook, named by
    /// a hash of the URL (the URL is a secret).
    fn rate_limit(
        &self,
        target: &crate::domain::DeliveryTarget,
        connection: Option<&crate::domain::ServiceConnection>,
    ) -> Option<(String, crate::domain::rate::RateLimit)> {
        use sha2::Digest;
        let TargetConfig::Slack(config) = &target.config else {
            return None;
        };
        let key = match (config, connection.map(|c| &c.credentials)) {
            (SlackConfig::BotToken { channel_id }, _) => format!("slack:{}", channel_id.as_str()),
            (SlackConfig::IncomingWebhook {}, Some(Credentials::SlackIncomingWebhook { url })) => {
                let digest = sha2::Sha256::digest(url.expose_secret().as_bytes());
                format!("slack-hook:{}", hex::encode(&digest[..12]))
            }
            _ => return None,
        };
        Some((key, crate::domain::rate::RateLimit::SLACK_CHANNEL))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_errors_map_to_categories() {
        for e in [
            "invalid_auth",
            "not_authed",
            "token_revoked",
            "account_inactive",
            "channel_not_found",
            "not_in_channel",
            "missing_scope",
            "is_archived",
            "invalid_arguments",
        ] {
            assert!(!classify_api_error(e, None).is_retryable(), "{e}");
        }
        for e in [
            "ratelimited",
            "internal_error",
            "fatal_error",
            "service_unavailable",
        ] {
            assert!(classify_api_error(e, None).is_retryable(), "{e}");
        }
        let wait = Some(Duration::from_secs(30));
        assert_eq!(classify_api_error("ratelimited", wait).retry_after(), wait);
    }

    #[test]
    fn incoming_webhook_answers_map_to_categories() {
        assert!(classify_hook(200, "ok", None).is_ok());
        let gone = classify_hook(404, "no_service", None).expect_err("fails");
        assert!(!gone.is_retryable() && gone.target_gone());
        assert_eq!(gone.code(), "no_service");
        assert!(
            classify_hook(410, "channel_is_archived", None)
                .expect_err("fails")
                .target_gone()
        );
        let bad = classify_hook(400, "invalid_payload", None).expect_err("fails");
        assert!(!bad.is_retryable() && !bad.target_gone());
        assert!(classify_hook(403, "action_prohibited", None).is_err());
        let limited = classify_hook(429, "", Some(Duration::from_secs(3))).expect_err("fails");
        assert!(limited.is_retryable());
        assert_eq!(limited.retry_after(), Some(Duration::from_secs(3)));
        assert!(
            classify_hook(503, "", None)
                .expect_err("fails")
                .is_retryable()
        );
    }

    #[test]
    fn a_lost_completion_is_not_repeated_inside_the_settle_window() {
        let sent = Timestamp::parse("2026-11-27T10:00:00Z").expect("a valid time");
        let at = |s: u64| sent.plus(time::Duration::seconds(s as i64));
        assert_eq!(settle_wait(Some(sent), at(0)), Some(COMPLETE_SETTLE));
        assert_eq!(
            settle_wait(Some(sent), at(20)),
            Some(COMPLETE_SETTLE - Duration::from_secs(20))
        );
        assert_eq!(settle_wait(Some(sent), at(60)), None);
        assert_eq!(settle_wait(Some(sent), at(600)), None);
        // A clock behind the sender waits the whole window; an old record
        // without a time does not wait.
        assert_eq!(settle_wait(Some(at(5)), sent), Some(COMPLETE_SETTLE));
        assert_eq!(settle_wait(None, sent), None);
    }

    fn sample(
        columns: usize,
        rows: usize,
        preview_rows: Option<u8>,
    ) -> crate::channel::sample::Sample {
        use crate::contract::{Column, ColumnType, Table};
        let mut cols = vec![Column::new("Region <!here>", ColumnType::String)];
        cols.extend((1..columns).map(|i| Column::new(format!("Amount {i}"), ColumnType::Decimal)));
        let table = Table {
            rows: (0..rows)
                .map(|r| {
                    let mut row = vec![json!(format!("region {r} with a rather long name"))];
                    row.extend((1..columns).map(|i| json!(123456.789 * (r + i) as f64)));
                    row
                })
                .collect(),
            columns: cols,
        };
        crate::channel::sample::Sample::new(
            crate::channel::sample::SampleReport {
                execution_id: "exec-1",
                report_name: &"Quarterly & <b>".repeat(20),
                generated_at: Timestamp::parse("2026-11-27T05:19:00Z").expect("t"),
                time_zone: "America/New_York",
                parameters: &Default::default(),
                rows: &table,
            },
            crate::channel::sample::target(
                "slack",
                json!({"mode": "incoming_webhook"}),
                preview_rows,
            )
            .expect("target"),
        )
        .expect("sample")
    }

    fn limits_hold(message: &Value) {
        let blocks = message["blocks"].as_array().expect("blocks");
        assert!(blocks.len() <= 50);
        for b in blocks {
            if b["type"] == "header" {
                assert!(b["text"]["text"].as_str().expect("text").chars().count() <= 150);
            }
            if let Some(t) = b["text"]["text"].as_str() {
                assert!(
                    t.chars().count() <= MAX_SECTION_TEXT,
                    "{} chars",
                    t.chars().count()
                );
            }
            if let Some(fields) = b["fields"].as_array() {
                assert!(fields.len() <= 10);
            }
        }
    }

    #[test]
    fn given_a_wide_report_and_fifty_preview_rows_when_posted_then_the_table_is_cut_to_fit_and_says_so()
     {
        let s = sample(8, 200, Some(50));
        let message = block_message(&s.ctx());
        limits_hold(&message);
        let text = message.to_string();
        let table = message["blocks"]
            .as_array()
            .and_then(|b| {
                b.iter().find(|b| {
                    b["text"]["text"]
                        .as_str()
                        .is_some_and(|t| t.starts_with("```"))
                })
            })
            .expect("a monospaced preview");
        let lines = table["text"]["text"]
            .as_str()
            .expect("text")
            .lines()
            .count();
        assert!(lines > 5 && lines < 50, "{lines} lines");
        assert!(text.contains("more rows in the PDF and CSV"), "{text}");
        assert!(
            text.contains("Links work until Fri 4 Dec 2026, 00:19 EST"),
            "{text}"
        );
        assert!(
            text.contains("Generated*\\nFri 27 Nov 2026, 00:19 EST"),
            "{text}"
        );
        assert!(!text.contains("<!here>"), "mentions are escaped");
        assert!(
            text.contains("  246,913.58  "),
            "numbers follow the one rule: {text}"
        );
    }

    #[test]
    fn given_a_two_column_report_when_posted_then_rows_are_field_pairs() {
        let s = sample(2, 4, None);
        let message = block_message(&s.ctx());
        limits_hold(&message);
        let fields = message["blocks"]
            .as_array()
            .and_then(|b| b.iter().filter(|b| b["fields"].is_array()).nth(1).cloned())
            .expect("preview fields");
        assert_eq!(fields["fields"].as_array().map(Vec::len), Some(4));
        assert_eq!(
            fields["fields"][1]["text"],
            "*region 1 with a rather long name*\n246,913.58"
        );
    }

    #[test]
    fn given_no_preview_rows_when_posted_then_only_the_summary_is_sent() {
        let s = sample(3, 4, Some(0));
        let message = block_message(&s.ctx());
        assert!(!message.to_string().contains("```"));
        assert_eq!(message["blocks"].as_array().map(Vec::len), Some(4));
    }

    #[test]
    fn mrkdwn_is_escaped_and_headers_are_truncated() {
        assert_eq!(mrkdwn("<!channel> & co"), "&lt;!channel&gt; &amp; co");
        assert_eq!(truncate(&"x".repeat(200), 150).chars().count(), 150);
    }
}
