//! Delivery channels: one [`Channel`] trait, one file per channel, and a
//! small factory ([`Channels`]) that picks one from the target type.
//! Every error says whether it is worth retrying.

pub mod email;
pub mod sample;
pub mod slack;
pub mod webhook;

use crate::blob::BlobStore;
use crate::config::ConfigError;
use crate::domain::execution::ReportExecution;
use crate::domain::{DeliveryAttempt, DeliveryTarget, ServiceConnection, TargetType, Timestamp};
use async_trait::async_trait;
use std::collections::BTreeMap;
use std::time::Duration;
use tracing::warn;

/// A failed send, classified.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DeliveryError {
    /// Rate limits, timeouts, 5xx, service unavailable: retry.
    #[error("temporary failure ({code}): {message}")]
    Temporary {
        code: String,
        message: String,
        /// The provider's `Retry-After`, if any.
        retry_after: Option<Duration>,
    },
    /// Bad credentials, missing permissions, invalid payload or config: fail.
    #[error("permanent failure ({code}): {message}")]
    Permanent {
        code: String,
        message: String,
        /// The receiver says it is gone for good (410, `no_service`): the
        /// target is flagged for disabling.
        target_gone: bool,
    },
}

impl DeliveryError {
    /// A permanent error.
    pub fn permanent(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Permanent {
            code: code.into(),
            message: message.into(),
            target_gone: false,
        }
    }

    /// A permanent error that also flags the target for disabling.
    pub fn gone(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Permanent {
            code: code.into(),
            message: message.into(),
            target_gone: true,
        }
    }

    /// A temporary error with the provider's requested wait.
    pub fn throttled(
        code: impl Into<String>,
        message: impl Into<String>,
        retry_after: Option<Duration>,
    ) -> Self {
        Self::Temporary {
            code: code.into(),
            message: message.into(),
            retry_after,
        }
    }

    /// Whether the target should be flagged for disabling.
    pub fn target_gone(&self) -> bool {
        matches!(
            self,
            DeliveryError::Permanent {
                target_gone: true,
                ..
            }
        )
    }

    /// A temporary error.
    pub fn temporary(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Temporary {
            code: code.into(),
            message: message.into(),
            retry_after: None,
        }
    }

    /// Whether the send is worth retrying.
    pub fn is_retryable(&self) -> bool {
        matches!(self, DeliveryError::Temporary { .. })
    }

    /// The provider's requested wait, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            DeliveryError::Temporary { retry_after, .. } => *retry_after,
            DeliveryError::Permanent { .. } => None,
        }
    }

    /// The short code.
    pub fn code(&self) -> &str {
        match self {
            DeliveryError::Temporary { code, .. } | DeliveryError::Permanent { code, .. } => code,
        }
    }

    /// The reason.
    pub fn message(&self) -> &str {
        match self {
            DeliveryError::Temporary { message, .. } | DeliveryError::Permanent { message, .. } => {
                message
            }
        }
    }
}

/// Everything a channel needs for one send.
pub struct DeliveryContext<'a> {
    pub attempt: &'a DeliveryAttempt,
    pub target: &'a DeliveryTarget,
    pub execution: &'a ReportExecution,
    pub connection: Option<&'a ServiceConnection>,
    /// The files the target asked for, each with a download link.
    pub files: &'a [LinkedFile],
    /// When the links stop working.
    pub link_expires_at: Timestamp,
    /// The data's first rows, when the target shows a preview (see
    /// [`DeliveryContext::preview_rows`]).
    pub preview: Option<&'a crate::render::preview::Preview>,
    /// The chart picture (PNG), when the execution has one.
    pub chart: Option<&'a ChartFile>,
    /// Lets the handler run the send without blocking on the clock in tests.
    pub now: Timestamp,
    /// Reads the rendered files (for attachments and uploads).
    pub blobs: &'a dyn BlobStore,
    /// Saves progress of a multi-step send, so a retry resumes it.
    pub progress: &'a dyn Progress,
    /// Email: the addresses the target no longer mails.
    pub suppressed: &'a [crate::domain::suppression::Suppression],
    /// Email: each recipient's one-click unsubscribe URL (RFC 8058), by
    /// address key.
    pub unsubscribe: &'a [(String, String)],
}

impl DeliveryContext<'_> {
    /// Reads a rendered file's bytes; a missing object or a refusal (no
    /// such bucket, access denied) is permanent, anything else temporary.
    pub async fn read(&self, file: &LinkedFile) -> Result<Vec<u8>, DeliveryError> {
        use crate::blob::BlobError;
        self.blobs.get(&file.file.key).await.map_err(|e| match e {
            BlobError::NotFound(_) => DeliveryError::permanent("file_missing", e.to_string()),
            BlobError::Permanent { .. } => {
                DeliveryError::permanent("file_unreadable", e.to_string())
            }
            BlobError::Temporary(_) => DeliveryError::temporary("blob_store", e.to_string()),
        })
    }

    /// A short file name for a rendered file, e.g. `weekly-sales-2026-11-26.pdf`.
    pub fn file_name(&self, file: &LinkedFile) -> String {
        let slug: String = self
            .execution
            .report_name
            .chars()
            .map(|c| {
                if c.is_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '-'
                }
            })
            .collect::<String>()
            .split('-')
            .filter(|p| !p.is_empty())
            .collect::<Vec<_>>()
            .join("-");
        let slug = if slug.is_empty() {
            "report".to_owned()
        } else {
            slug.chars().take(60).collect()
        };
        format!("{slug}-{}.{}", self.local_date(), file.format.as_str())
    }

    /// The report's generation date in its own time zone (`YYYY-MM-DD`).
    pub fn local_date(&self) -> String {
        let tz =
            crate::render::time_zone(&self.execution.time_zone).unwrap_or(jiff::tz::TimeZone::UTC);
        jiff::Timestamp::from_millisecond(self.execution.generated_at.unix_millis())
            .map(|t| t.to_zoned_datetime(tz).strftime("%Y-%m-%d").to_string())
            .unwrap_or_else(|_| self.execution.generated_at.to_string()[..10].to_owned())
    }

    /// The report's zone (UTC if the name is unknown).
    pub fn zone(&self) -> jiff::tz::TimeZone {
        crate::render::time_zone(&self.execution.time_zone).unwrap_or(jiff::tz::TimeZone::UTC)
    }

    /// When the report was generated, as people write it in its zone:
    /// `Thu 26 Nov 2026, 08:00 CET`.
    pub fn local_time(&self) -> String {
        crate::render::human_time(self.execution.generated_at, &self.zone())
    }

    /// When the links stop working, as people write it in the report's
    /// zone: `Fri 4 Dec 2026, 06:19 CET`.
    pub fn expires_local(&self) -> String {
        crate::render::human_time(self.link_expires_at, &self.zone())
    }

    /// The preview and how many of its rows to show, when there is one to
    /// show.
    pub fn preview_rows(&self) -> Option<(&crate::render::preview::Preview, usize)> {
        let n = self.target.preview_rows();
        self.preview.filter(|_| n > 0).map(|p| (p, n))
    }
}

/// Progress of a multi-step send (such as a Slack upload), kept in the
/// attempt's metadata so that a retry continues instead of starting over.
#[async_trait]
pub trait Progress: Send + Sync {
    /// A saved value, from this try or an earlier one.
    fn get(&self, key: &str) -> Option<String>;
    /// Saves values before the next step runs.
    async fn save(&self, values: BTreeMap<String, String>) -> Result<(), DeliveryError>;
}

/// Progress kept in memory only (unit tests, channels without steps).
#[derive(Default)]
pub struct MemoryProgress(std::sync::Mutex<BTreeMap<String, String>>);

impl MemoryProgress {
    /// Starts from saved values.
    pub fn new(saved: BTreeMap<String, String>) -> Self {
        Self(std::sync::Mutex::new(saved))
    }

    /// Everything saved.
    pub fn snapshot(&self) -> BTreeMap<String, String> {
        self.0.lock().map(|m| m.clone()).unwrap_or_default()
    }
}

#[async_trait]
impl Progress for MemoryProgress {
    fn get(&self, key: &str) -> Option<String> {
        self.0.lock().ok()?.get(key).cloned()
    }

    async fn save(&self, values: BTreeMap<String, String>) -> Result<(), DeliveryError> {
        if let Ok(mut m) = self.0.lock() {
            m.extend(values);
        }
        Ok(())
    }
}

/// A rendered file and a link to it.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkedFile {
    pub format: crate::domain::target::Format,
    pub file: crate::domain::execution::StoredFile,
    pub download_url: String,
}

/// An execution's chart picture and a link to it.
#[derive(Debug, Clone, PartialEq)]
pub struct ChartFile {
    pub file: crate::domain::execution::StoredFile,
    pub download_url: String,
    /// The chart's title, for alt text.
    pub title: String,
}

impl DeliveryContext<'_> {
    /// The chart's bytes; `None` (logged) when they cannot be read: a
    /// picture is decoration, never a reason to fail a delivery.
    pub async fn chart_bytes(&self) -> Option<Vec<u8>> {
        let chart = self.chart?;
        match self.blobs.get(&chart.file.key).await {
            Ok(bytes) => Some(bytes),
            Err(error) => {
                warn!(key = %chart.file.key, %error, "chart unreadable; sending without it");
                None
            }
        }
    }
}

/// What a successful send reports, kept in the attempt's metadata.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Receipt {
    pub metadata: BTreeMap<String, String>,
    /// Email: each recipient and what the send did for it (sent with its
    /// SES message id, or suppressed); empty for other channels.
    pub recipients: Vec<crate::domain::RecipientOutcome>,
}

/// A local send slot, held while a send runs (`None`: the channel has no cap).
pub type SendSlot<'a> = Option<tokio::sync::SemaphorePermit<'a>>;

/// A way of delivering a report.
#[async_trait]
pub trait Channel: Send + Sync {
    /// Sends once. The handler owns retries.
    async fn deliver(&self, ctx: &DeliveryContext<'_>) -> Result<Receipt, DeliveryError>;

    /// Waits for a local send slot (e.g. a cap on memory-heavy sends in
    /// flight) and holds it until dropped. The handler takes it before the
    /// send's timeout starts, so waiting is never counted against a send.
    async fn slot<'a>(&'a self, _ctx: &DeliveryContext<'_>) -> Result<SendSlot<'a>, DeliveryError> {
        Ok(None)
    }

    /// The destination's shared rate limit, if the provider has one: a
    /// key naming the destination (never a secret) and the limit.
    fn rate_limit(
        &self,
        _target: &DeliveryTarget,
        _connection: Option<&ServiceConnection>,
    ) -> Option<(String, crate::domain::rate::RateLimit)> {
        None
    }
}

/// The channels a deliver function has, built once at start-up. A channel
/// left out (e.g. email without a sender address) fails its targets as
/// `channel_unavailable`.
pub struct Channels {
    pub webhook: Box<dyn Channel>,
    pub email: Option<Box<dyn Channel>>,
    pub slack: Box<dyn Channel>,
}

impl Channels {
    /// Builds every channel once from the environment `template.yaml` sets.
    pub fn from_env(sdk: &aws_config::SdkConfig) -> Result<Self, ConfigError> {
        use crate::config::{flag, optional};
        let invalid = |name: &'static str, e: &dyn std::fmt::Display| ConfigError::Invalid {
            name,
            reason: e.to_string(),
        };
        let allow_private = flag("ALLOW_PRIVATE_WEBHOOK_TARGETS")?;
        if allow_private {
            warn!(
                "ALLOW_PRIVATE_WEBHOOK_TARGETS is on: webhooks may reach private addresses (local testing only)"
            );
        }
        // One HTTP client (and TLS root store) for every channel, built at
        // the first send.
        let client = webhook::LazyClient::new(allow_private, webhook::TIMEOUT);
        let webhook = webhook::WebhookChannel::with_client(client.clone(), allow_private);
        let slack_base =
            optional("SLACK_API_BASE_URL").unwrap_or_else(|| slack::DEFAULT_API_BASE.to_owned());
        let slack = slack::SlackChannel::with_client(&slack_base, client, allow_private);
        // Email needs a verified sender; without one its targets fail as
        // channel_unavailable instead of the function refusing to start.
        let email = match optional("EMAIL_FROM_ADDRESS") {
            None => {
                warn!(
                    "EMAIL_FROM_ADDRESS is not set: email targets will fail as channel_unavailable"
                );
                None
            }
            Some(from) => {
                let from = crate::domain::target::EmailAddress::parse(&from)
                    .map_err(|e| invalid("EMAIL_FROM_ADDRESS", &e))?;
                let limit = match optional("EMAIL_ATTACHMENT_LIMIT_BYTES") {
                    None => email::DEFAULT_ATTACHMENT_LIMIT,
                    Some(v) => v
                        .parse()
                        .map_err(|e| invalid("EMAIL_ATTACHMENT_LIMIT_BYTES", &e))?,
                };
                let sender = email::SesSender::new(
                    crate::aws::sesv2(sdk),
                    optional("SES_CONFIGURATION_SET"),
                );
                Some(Box::new(email::EmailChannel::new(
                    Box::new(sender),
                    from,
                    optional("EMAIL_FROM_NAME").unwrap_or_else(|| "Report Delivery".into()),
                    limit,
                )) as Box<dyn Channel>)
            }
        };
        Ok(Self {
            webhook: Box::new(webhook),
            email,
            slack: Box::new(slack),
        })
    }

    /// Picks the channel for a target type.
    pub fn for_type(&self, t: TargetType) -> Result<&dyn Channel, DeliveryError> {
        let found = match t {
            TargetType::Webhook => Some(&self.webhook),
            TargetType::Email => self.email.as_ref(),
            TargetType::Slack => Some(&self.slack),
        };
        found.map(|c| c.as_ref()).ok_or_else(|| {
            DeliveryError::permanent(
                "channel_unavailable",
                format!("the {t} channel is not enabled in this deployment"),
            )
        })
    }
}

/// The error chain of `e` as one line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}
