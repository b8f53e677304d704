//! Delivery channels: one [`Channel`] trait, one file per channel, and a
//! small factory ([`Channels`]) that picks one from the target type.
//! Every error says whether it is worth retrying.

pub mod webhook;

use crate::domain::execution::ReportExecution;
use crate::domain::{DeliveryAttempt, DeliveryTarget, ServiceConnection, TargetType, Timestamp};
use async_trait::async_trait;
use std::collections::BTreeMap;
use std::time::Duration;

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
    Permanent { code: String, message: String },
}

impl DeliveryError {
    /// A permanent error.
    pub fn permanent(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Permanent {
            code: code.into(),
            message: message.into(),
        }
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
    /// Lets the handler run the send without blocking on the clock in tests.
    pub now: Timestamp,
}

/// A rendered file and a link to it.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkedFile {
    pub format: crate::domain::target::Format,
    pub file: crate::domain::execution::StoredFile,
    pub download_url: String,
}

/// What a successful send reports, kept in the attempt's metadata.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Receipt {
    pub metadata: BTreeMap<String, String>,
}

/// A way of delivering a report.
#[async_trait]
pub trait Channel: Send + Sync {
    /// Sends once. The handler owns retries.
    async fn deliver(&self, ctx: &DeliveryContext<'_>) -> Result<Receipt, DeliveryError>;
}

/// The channels a deliver function has, built once at start-up.
pub struct Channels {
    pub webhook: Box<dyn Channel>,
    pub email: Option<Box<dyn Channel>>,
    pub slack: Option<Box<dyn Channel>>,
}

impl Channels {
    /// Picks the channel for a target type.
    pub fn for_type(&self, t: TargetType) -> Result<&dyn Channel, DeliveryError> {
        let found = match t {
            TargetType::Webhook => Some(&self.webhook),
            TargetType::Email => self.email.as_ref(),
            TargetType::Slack => self.slack.as_ref(),
        };
        found.map(|c| c.as_ref()).ok_or_else(|| {
            DeliveryError::permanent(
                "channel_unavailable",
                format!("the {t} channel is not enabled in this deployment"),
            )
        })
    }
}
