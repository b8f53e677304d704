//! Delivery targets: where a report goes, with a config validated per type.

use super::Timestamp;
use super::url::{UrlError, WebhookUrl};
use serde::{Deserialize, Serialize};
use std::fmt;

/// The channel a target uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetType {
    Email,
    Slack,
    Webhook,
}

impl TargetType {
    /// The stored text form.
    pub fn as_str(&self) -> &'static str {
        match self {
            TargetType::Email => "email",
            TargetType::Slack => "slack",
            TargetType::Webhook => "webhook",
        }
    }

    /// Parses the stored text form.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "email" => Some(TargetType::Email),
            "slack" => Some(TargetType::Slack),
            "webhook" => Some(TargetType::Webhook),
            _ => None,
        }
    }
}

impl fmt::Display for TargetType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a target config was refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    #[error("unknown target_type {0:?}")]
    UnknownType(String),
    #[error("config is not valid for {target_type}: {reason}")]
    Shape {
        target_type: &'static str,
        reason: String,
    },
    #[error("invalid email address {0:?}")]
    Email(String),
    #[error("email target needs at least one recipient")]
    NoRecipients,
    #[error(
        "email target has {0} recipients (to, cc and bcc); SES takes at most {MAX_RECIPIENTS} per message"
    )]
    TooManyRecipients(usize),
    #[error("subject template has {0} characters; at most {MAX_SUBJECT_CHARS}")]
    SubjectTooLong(usize),
    #[error("invalid Slack channel id {0:?}")]
    SlackChannel(String),
    #[error("invalid webhook url: {0}")]
    Url(#[from] UrlError),
}

/// An email address checked at the edge: printable ASCII (SES takes no
/// SMTPUTF8; an international domain is given as `xn--`), one `@`, no
/// whitespace or control characters (so no header injection), sane lengths.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct EmailAddress(String);

impl EmailAddress {
    /// Validates `s` as an address.
    pub fn parse(s: &str) -> Result<Self, ConfigError> {
        let bad = || ConfigError::Email(s.chars().take(80).collect());
        if s.len() > 254 || !s.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(bad());
        }
        let (local, domain) = s.split_once('@').ok_or_else(bad)?;
        if local.is_empty()
            || local.len() > 64
            || domain.contains('@')
            || !domain.contains('.')
            || domain.starts_with('.')
            || domain.ends_with('.')
            || s.contains(['<', '>', ',', ';', '"'])
        {
            return Err(bad());
        }
        Ok(Self(s.to_owned()))
    }

    /// The address text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for EmailAddress {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Self::parse(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// The most recipients (to, cc and bcc together) of one email target: SES
/// sends one message to at most 50.
pub const MAX_RECIPIENTS: usize = 50;

/// The longest subject template, in characters (a report name, itself at
/// most 200 characters, may be put in it).
pub const MAX_SUBJECT_CHARS: usize = 200;

/// Email recipients and presentation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    pub to: Vec<EmailAddress>,
    #[serde(default)]
    pub cc: Vec<EmailAddress>,
    #[serde(default)]
    pub bcc: Vec<EmailAddress>,
    #[serde(default)]
    pub reply_to: Option<EmailAddress>,
    /// Subject template; `{report_name}` and `{date}` are replaced.
    #[serde(default)]
    pub subject: Option<String>,
}

/// A Slack channel id such as `C0123ABCD`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct SlackChannelId(String);

impl SlackChannelId {
    /// Validates a channel id: C, G or D followed by 8–12 upper-case alphanumerics.
    pub fn parse(s: &str) -> Result<Self, ConfigError> {
        let ok = s.len() >= 9
            && s.len() <= 13
            && s.starts_with(['C', 'G', 'D'])
            && s.chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit());
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(ConfigError::SlackChannel(s.chars().take(40).collect()))
        }
    }

    /// The id text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for SlackChannelId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Self::parse(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// How a Slack target posts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case", deny_unknown_fields)]
pub enum SlackConfig {
    /// Upload the file with a bot token from the target's service connection.
    BotToken { channel_id: SlackChannelId },
    /// Post a message with a link through an incoming webhook URL (a secret,
    /// kept in the service connection).
    IncomingWebhook {},
}

/// Where a webhook target POSTs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    pub url: WebhookUrl,
}

/// The validated config of a target, one variant per channel.
#[derive(Debug, Clone, PartialEq)]
pub enum TargetConfig {
    Email(EmailConfig),
    Slack(SlackConfig),
    Webhook(WebhookConfig),
}

impl TargetConfig {
    /// Validates a raw JSON config for `target_type`. `allow_private_hosts`
    /// comes from the `ALLOW_PRIVATE_WEBHOOK_TARGETS` setting (off by default).
    pub fn from_json(
        target_type: &str,
        config: serde_json::Value,
        allow_private_hosts: bool,
    ) -> Result<Self, ConfigError> {
        let shape = |target_type: &'static str| {
            move |e: serde_json::Error| ConfigError::Shape {
                target_type,
                reason: e.to_string(),
            }
        };
        match TargetType::parse(target_type) {
            Some(TargetType::Email) => {
                let c: EmailConfig = serde_json::from_value(config).map_err(shape("email"))?;
                if c.to.is_empty() {
                    return Err(ConfigError::NoRecipients);
                }
                let recipients = c.to.len() + c.cc.len() + c.bcc.len();
                if recipients > MAX_RECIPIENTS {
                    return Err(ConfigError::TooManyRecipients(recipients));
                }
                if let Some(subject) = &c.subject {
                    if subject.chars().any(|ch| ch == '\r' || ch == '\n') {
                        return Err(ConfigError::Shape {
                            target_type: "email",
                            reason: "subject must not contain CR or LF".into(),
                        });
                    }
                    let chars = subject.chars().count();
                    if chars > MAX_SUBJECT_CHARS {
                        return Err(ConfigError::SubjectTooLong(chars));
                    }
                }
                Ok(TargetConfig::Email(c))
            }
            Some(TargetType::Slack) => Ok(TargetConfig::Slack(
                serde_json::from_value(config).map_err(shape("slack"))?,
            )),
            Some(TargetType::Webhook) => {
                #[derive(Deserialize)]
                #[serde(deny_unknown_fields)]
                struct Raw {
                    url: String,
                }
                let raw: Raw = serde_json::from_value(config).map_err(shape("webhook"))?;
                Ok(TargetConfig::Webhook(WebhookConfig {
                    url: WebhookUrl::parse(&raw.url, allow_private_hosts)?,
                }))
            }
            None => Err(ConfigError::UnknownType(
                target_type.chars().take(40).collect(),
            )),
        }
    }

    /// The config as stored JSON.
    pub fn to_json(&self) -> serde_json::Value {
        let v = match self {
            TargetConfig::Email(c) => serde_json::to_value(c),
            TargetConfig::Slack(c) => serde_json::to_value(c),
            TargetConfig::Webhook(c) => serde_json::to_value(c),
        };
        v.unwrap_or(serde_json::Value::Null)
    }

    /// The channel.
    pub fn target_type(&self) -> TargetType {
        match self {
            TargetConfig::Email(_) => TargetType::Email,
            TargetConfig::Slack(_) => TargetType::Slack,
            TargetConfig::Webhook(_) => TargetType::Webhook,
        }
    }
}

/// A file format a target can receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Pdf,
    Csv,
}

impl Format {
    /// The stored and wire name.
    pub fn as_str(&self) -> &'static str {
        match self {
            Format::Pdf => "pdf",
            Format::Csv => "csv",
        }
    }
}

/// A place one report is delivered to.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryTarget {
    pub id: String,
    pub report_id: String,
    /// Credentials (Slack token, webhook signing secret) live here.
    pub service_connection_id: Option<String>,
    pub config: TargetConfig,
    /// The files it gets; empty means PDF only.
    pub formats: Vec<Format>,
    /// Rows of the data shown in the message itself (at most
    /// [`MAX_PREVIEW_ROWS`]; 0 for none). Unset: [`DEFAULT_PREVIEW_ROWS`]
    /// for email and Slack, none for webhooks (receivers opt in).
    pub preview_rows: Option<u8>,
    pub active: bool,
    /// Set when a receiver answered that the target is gone (HTTP 410,
    /// Slack `no_service`); an operator confirms by deactivating it.
    pub disable_requested: Option<DisableRequest>,
    /// Failed attempts in a row (reset by a delivery).
    pub consecutive_failures: u32,
    /// Bumped by every operator change; a change names the version it
    /// read (optimistic concurrency, the API's ETag).
    pub version: u64,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// Why and when a target was flagged for disabling.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DisableRequest {
    pub at: Timestamp,
    pub reason: String,
}

/// Preview rows a message shows unless its target says otherwise.
pub const DEFAULT_PREVIEW_ROWS: u8 = 10;
/// Most preview rows a target may ask for (render keeps this many).
pub const MAX_PREVIEW_ROWS: u8 = 50;

/// Checks a target's `preview_rows`.
pub fn check_preview_rows(n: Option<u8>) -> Result<(), String> {
    match n {
        Some(n) if n > MAX_PREVIEW_ROWS => Err(format!(
            "preview_rows is {n}, more than the {MAX_PREVIEW_ROWS} allowed"
        )),
        _ => Ok(()),
    }
}

impl DeliveryTarget {
    /// How many preview rows its messages show (0: no preview).
    pub fn preview_rows(&self) -> usize {
        let default = match self.config {
            TargetConfig::Webhook(_) => 0,
            _ => DEFAULT_PREVIEW_ROWS,
        };
        usize::from(self.preview_rows.unwrap_or(default).min(MAX_PREVIEW_ROWS))
    }

    /// The formats it gets, defaulting to PDF.
    pub fn formats(&self) -> Vec<Format> {
        if self.formats.is_empty() {
            vec![Format::Pdf]
        } else {
            self.formats.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// serde ignores `deny_unknown_fields` on a unit variant of an
    /// internally tagged enum; every mode must refuse a field it lacks.
    #[test]
    fn slack_configs_refuse_fields_of_other_modes() {
        for bad in [
            json!({"mode": "incoming_webhook", "url": "https://g.dev"}),
            json!({"mode": "incoming_webhook", "channel_id": "C0123ABCD"}),
            json!({"mode": "bot_token", "channel_id": "C0123ABCD", "url": "https://g.dev"}),
        ] {
            assert!(
                TargetConfig::from_json("slack", bad.clone(), false).is_err(),
                "{bad}"
            );
        }
        let ok = json!({"mode": "incoming_webhook"});
        let config = TargetConfig::from_json("slack", ok.clone(), false)
            .expect("incoming_webhook alone is valid");
        assert_eq!(config.to_json(), ok);
    }

    #[test]
    fn email_config_refuses_more_than_50_recipients_and_long_subjects() {
        let addresses = |n: usize| {
            (0..n)
                .map(|i| format!("r{i}@example.com"))
                .collect::<Vec<_>>()
        };
        let at_limit = json!({"to": addresses(30), "cc": addresses(10), "bcc": addresses(10)});
        assert!(TargetConfig::from_json("email", at_limit, false).is_ok());
        let over = json!({"to": addresses(30), "cc": addresses(10), "bcc": addresses(11)});
        assert!(matches!(
            TargetConfig::from_json("email", over, false),
            Err(ConfigError::TooManyRecipients(51))
        ));
        let long = json!({"to": ["a@example.com"], "subject": "é".repeat(MAX_SUBJECT_CHARS + 1)});
        assert!(matches!(
            TargetConfig::from_json("email", long, false),
            Err(ConfigError::SubjectTooLong(201))
        ));
        let longest = json!({"to": ["a@example.com"], "subject": "é".repeat(MAX_SUBJECT_CHARS)});
        assert!(TargetConfig::from_json("email", longest, false).is_ok());
    }

    #[test]
    fn email_config_refuses_header_injection_and_empty_recipients() {
        let injected = json!({"to": ["a@example.com\r\nBcc: x@evil.com"]});
        assert!(matches!(
            TargetConfig::from_json("email", injected, false),
            Err(ConfigError::Shape { .. })
        ));
        let empty = json!({"to": []});
        assert_eq!(
            TargetConfig::from_json("email", empty, false),
            Err(ConfigError::NoRecipients)
        );
        let subject = json!({"to": ["a@example.com"], "subject": "hi\nBcc: x@evil.com"});
        assert!(TargetConfig::from_json("email", subject, false).is_err());
        let ok = json!({"to": ["ops@example.com"], "cc": ["boss@example.com"]});
        assert!(TargetConfig::from_json("email", ok, false).is_ok());
    }

    #[test]
    fn email_addresses_are_printable_ascii_as_ses_takes_them() {
        for ok in [
            "ops@example.com",
            "a.b-c+d@xn--exmple-cua.com",
            "x!#$%&'*/=?^_`{|}~@a.b",
        ] {
            assert!(EmailAddress::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "ä@example.com",
            "ops@exämple.com",
            "ops@example.com\u{85}",
            "a b@example.com",
            "@example.com",
            "ops@example",
            "ops@.example.com",
            "ops@example.com.",
            "a@b@example.com",
            "<ops>@example.com",
        ] {
            assert!(EmailAddress::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn slack_config_checks_the_channel_id_and_mode() {
        let ok = json!({"mode": "bot_token", "channel_id": "C0123ABCD"});
        assert!(TargetConfig::from_json("slack", ok, false).is_ok());
        let bad = json!({"mode": "bot_token", "channel_id": "#general"});
        assert!(TargetConfig::from_json("slack", bad, false).is_err());
        let hook = json!({"mode": "incoming_webhook"});
        assert!(TargetConfig::from_json("slack", hook, false).is_ok());
    }

    #[test]
    fn webhook_config_runs_the_url_checks_and_unknown_types_are_refused() {
        let private = json!({"url": "https://10.0.0.1/hook"});
        assert!(matches!(
            TargetConfig::from_json("webhook", private, false),
            Err(ConfigError::Url(_))
        ));
        assert!(matches!(
            TargetConfig::from_json("fax", json!({}), false),
            Err(ConfigError::UnknownType(_))
        ));
    }

    #[test]
    fn config_round_trips_through_json() {
        let raw = json!({"url": "https://hooks.example.com/r"});
        let c = TargetConfig::from_json("webhook", raw.clone(), false).expect("valid");
        assert_eq!(c.to_json(), raw);
    }
}
