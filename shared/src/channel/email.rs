//! Email channel: a real MIME message (multipart/alternative text + HTML,
//! the rendered files attached) sent as raw content through SES v2. Above a
//! configurable size the files are linked instead of attached. Bcc goes in
//! the envelope only, never in a header.

use super::{Channel, DeliveryContext, DeliveryError, LinkedFile, Receipt, error_chain};
use crate::domain::TargetConfig;
use crate::domain::target::{EmailAddress, EmailConfig};
use async_trait::async_trait;
use mail_builder::MessageBuilder;
use mail_builder::headers::address::Address;

/// Attachments larger than this in total are linked instead (SES v2 allows
/// 40 MB per message; base64 adds a third).
pub const DEFAULT_ATTACHMENT_LIMIT: u64 = 10 * 1024 * 1024;

/// The subject when a target sets none.
pub const DEFAULT_SUBJECT: &str = "{report_name} – {date}";

/// Who a message goes to, for the SMTP envelope.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    pub from: String,
    pub to: Vec<String>,
    pub cc: Vec<String>,
    pub bcc: Vec<String>,
}

/// Sends raw MIME; the SES v2 adapter is [`SesSender`].
#[async_trait]
pub trait MailSender: Send + Sync {
    /// Sends `raw` to every envelope recipient; returns the provider's message id.
    async fn send_raw(&self, envelope: &Envelope, raw: Vec<u8>) -> Result<String, DeliveryError>;
}

/// The email channel.
pub struct EmailChannel {
    sender: Box<dyn MailSender>,
    from: EmailAddress,
    from_name: String,
    attachment_limit: u64,
    /// Caps sends with attachments in flight: each holds the files, their
    /// MIME form and the request body in memory at once.
    attached_in_flight: tokio::sync::Semaphore,
}

/// Sends with attachments in flight at once per function instance.
pub const ATTACHED_IN_FLIGHT: usize = 2;

impl EmailChannel {
    /// `from` must be an SES-verified identity; files above
    /// `attachment_limit` bytes in total are linked.
    pub fn new(
        sender: Box<dyn MailSender>,
        from: EmailAddress,
        from_name: impl Into<String>,
        attachment_limit: u64,
    ) -> Self {
        Self {
            sender,
            from,
            from_name: from_name.into(),
            attachment_limit,
            attached_in_flight: tokio::sync::Semaphore::new(ATTACHED_IN_FLIGHT),
        }
    }
}

/// One-line header text: control characters (CR/LF included) become spaces.
fn header_text(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_owned()
}

/// Fills the subject template: `{report_name}` and `{date}`.
pub fn subject(template: Option<&str>, report_name: &str, date: &str) -> String {
    header_text(
        &template
            .unwrap_or(DEFAULT_SUBJECT)
            .replace("{report_name}", report_name)
            .replace("{date}", date),
    )
}

fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn megabytes(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / (1024.0 * 1024.0))
}

/// Whether the files go as attachments or as links.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Attached,
    Linked,
}

/// Picks attachments or links from the total size.
pub fn mode(files: &[LinkedFile], limit: u64) -> Mode {
    let total: u64 = files.iter().map(|f| f.file.size).sum();
    if total > limit {
        Mode::Linked
    } else {
        Mode::Attached
    }
}

/// Builds the MIME message. `attachments` holds the bytes of each file when
/// they are attached, and is empty when they are linked.
pub fn build_message(
    ctx: &DeliveryContext<'_>,
    config: &EmailConfig,
    from: (&str, &EmailAddress),
    attachments: &[(String, &LinkedFile, Vec<u8>)],
    limit: u64,
) -> Result<Vec<u8>, DeliveryError> {
    let name = header_text(&ctx.execution.report_name);
    let when = ctx.local_time();
    let expires = ctx.link_expires_at.to_string();
    let total: u64 = ctx.files.iter().map(|f| f.file.size).sum();
    let mut text = format!(
        "Your report \"{name}\" is ready.\n\nGenerated: {when}\nRows: {}\n\n",
        ctx.execution.row_count
    );
    let mut html = format!(
        "<!doctype html><html><body style=\"font-family:sans-serif\">\
         <h2>{}</h2><p>Your report is ready.</p>\
         <table><tr><td>Generated</td><td>{}</td></tr><tr><td>Rows</td><td>{}</td></tr></table>",
        html_escape(&name),
        html_escape(&when),
        ctx.execution.row_count
    );
    if attachments.is_empty() {
        let note = format!(
            "The files are too large to attach ({}, limit {}). Download them here; the links work until {expires}:",
            megabytes(total),
            megabytes(limit)
        );
        text.push_str(&note);
        text.push('\n');
        html.push_str(&format!("<p>{}</p><ul>", html_escape(&note)));
        for f in ctx.files {
            let file_name = ctx.file_name(f);
            text.push_str(&format!(
                "- {file_name} ({}): {}\n",
                megabytes(f.file.size),
                f.download_url
            ));
            html.push_str(&format!(
                "<li><a href=\"{}\">{}</a> ({})</li>",
                html_escape(&f.download_url),
                html_escape(&file_name),
                megabytes(f.file.size)
            ));
        }
        html.push_str("</ul>");
    } else {
        text.push_str("The report is attached. You can also download it until ");
        text.push_str(&expires);
        text.push_str(":\n");
        html.push_str(&format!(
            "<p>The report is attached. You can also download it until {}:</p><ul>",
            html_escape(&expires)
        ));
        for (file_name, f, _) in attachments {
            text.push_str(&format!("- {file_name}: {}\n", f.download_url));
            html.push_str(&format!(
                "<li><a href=\"{}\">{}</a></li>",
                html_escape(&f.download_url),
                html_escape(file_name)
            ));
        }
        html.push_str("</ul>");
    }
    html.push_str("</body></html>");
    let list = |v: &[EmailAddress]| -> Address<'static> {
        Address::new_list(
            v.iter()
                .map(|a| Address::new_address(None::<String>, a.as_str().to_owned()))
                .collect(),
        )
    };
    let mut message = MessageBuilder::new()
        .from((header_text(from.0), from.1.as_str().to_owned()))
        .to(list(&config.to))
        .subject(subject(config.subject.as_deref(), &name, &ctx.local_date()))
        .message_id(format!("{}@report-delivery", ctx.attempt.id))
        .header(
            "X-Report-Execution-Id",
            mail_builder::headers::raw::Raw::new(header_text(&ctx.execution.id)),
        )
        .text_body(text)
        .html_body(html);
    if !config.cc.is_empty() {
        message = message.cc(list(&config.cc));
    }
    if let Some(reply_to) = &config.reply_to {
        message = message.reply_to(reply_to.as_str().to_owned());
    }
    for (file_name, f, bytes) in attachments {
        message = message.attachment(
            f.file.content_type.as_str(),
            file_name.as_str(),
            bytes.as_slice(),
        );
    }
    message
        .write_to_vec()
        .map_err(|e| DeliveryError::permanent("invalid_payload", e.to_string()))
}

#[async_trait]
impl Channel for EmailChannel {
    async fn deliver(&self, ctx: &DeliveryContext<'_>) -> Result<Receipt, DeliveryError> {
        let TargetConfig::Email(config) = &ctx.target.config else {
            return Err(DeliveryError::permanent(
                "invalid_target_config",
                "target is not an email target",
            ));
        };
        let mode = mode(ctx.files, self.attachment_limit);
        let _permit = match mode {
            Mode::Attached => Some(self.attached_in_flight.acquire().await.map_err(|_| {
                DeliveryError::temporary("shutting_down", "the email channel is closing")
            })?),
            Mode::Linked => None,
        };
        let mut attachments = Vec::new();
        if mode == Mode::Attached {
            for f in ctx.files {
                attachments.push((ctx.file_name(f), f, ctx.read(f).await?));
            }
        }
        let raw = build_message(
            ctx,
            config,
            (&self.from_name, &self.from),
            &attachments,
            self.attachment_limit,
        )?;
        let addresses = |v: &[EmailAddress]| v.iter().map(|a| a.as_str().to_owned()).collect();
        let envelope = Envelope {
            from: self.from.as_str().to_owned(),
            to: addresses(&config.to),
            cc: addresses(&config.cc),
            bcc: addresses(&config.bcc),
        };
        let size = raw.len();
        let message_id = self.sender.send_raw(&envelope, raw).await?;
        let mut receipt = Receipt::default();
        receipt.metadata.insert("ses_message_id".into(), message_id);
        receipt.metadata.insert(
            "files".into(),
            match mode {
                Mode::Attached => "attached",
                Mode::Linked => "linked",
            }
            .into(),
        );
        receipt
            .metadata
            .insert("mime_bytes".into(), size.to_string());
        Ok(receipt)
    }
}

/// Maps an SES error code (with or without the `Exception` suffix) and HTTP
/// status to a category.
pub fn classify_ses(code: Option<&str>, status: Option<u16>, message: &str) -> DeliveryError {
    let name = code.unwrap_or_default();
    let short = name.strip_suffix("Exception").unwrap_or(name);
    let label = if name.is_empty() {
        status.map(|s| format!("http_{s}")).unwrap_or_default()
    } else {
        name.to_owned()
    };
    let text = format!("SES: {}", if message.is_empty() { &label } else { message });
    match short {
        "MessageRejected"
        | "MailFromDomainNotVerified"
        | "AccountSendingPaused"
        | "SendingPaused"
        | "AccountSuspended"
        | "BadRequest"
        | "NotFound"
        | "AccessDenied"
        | "InvalidClientTokenId"
        | "UnrecognizedClient"
        | "SignatureDoesNotMatch" => DeliveryError::permanent(label, text),
        "TooManyRequests"
        | "Throttling"
        | "ThrottlingException"
        | "LimitExceeded"
        | "ServiceUnavailable"
        | "InternalFailure"
        | "InternalServerError"
        | "RequestTimeout"
        | "ExpiredToken" => DeliveryError::temporary(label, text),
        _ => match status {
            Some(s) if (400..500).contains(&s) && s != 408 && s != 429 => {
                DeliveryError::permanent(label, text)
            }
            _ => DeliveryError::temporary(label, text),
        },
    }
}

/// Sends through SES v2 `SendEmail` with raw content.
pub struct SesSender {
    client: aws_sdk_sesv2::Client,
    configuration_set: Option<String>,
}

impl SesSender {
    /// Wraps a client; `configuration_set` tags sends for SES event publishing.
    pub fn new(client: aws_sdk_sesv2::Client, configuration_set: Option<String>) -> Self {
        Self {
            client,
            configuration_set,
        }
    }
}

/// The email account's sending state, for health checks.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SendingAccount {
    pub sending_enabled: bool,
    /// Most messages per 24 hours (`-1`: unlimited).
    pub max_24_hour_send: f64,
    pub sent_last_24_hours: f64,
    pub max_send_rate: f64,
    /// Still in the SES sandbox (only verified recipients).
    pub sandbox: bool,
}

/// What a health check can learn about sending email.
#[derive(Debug, Clone, PartialEq)]
pub enum AccountCheck {
    Known(SendingAccount),
    /// The endpoint does not offer the call (local emulators).
    Unsupported(String),
    /// The call failed.
    Failed(String),
}

/// Reads the email account's sending state.
#[async_trait]
pub trait AccountProbe: Send + Sync {
    /// The account's state, or why it is unknown.
    async fn account(&self) -> AccountCheck;
}

#[async_trait]
impl AccountProbe for SesSender {
    /// `GetAccount`.
    async fn account(&self) -> AccountCheck {
        use aws_sdk_sesv2::error::{ProvideErrorMetadata, SdkError};
        match self.client.get_account().send().await {
            Ok(a) => {
                let q = a.send_quota();
                AccountCheck::Known(SendingAccount {
                    sending_enabled: a.sending_enabled(),
                    max_24_hour_send: q.map_or(0.0, |q| q.max24_hour_send()),
                    sent_last_24_hours: q.map_or(0.0, |q| q.sent_last24_hours()),
                    max_send_rate: q.map_or(0.0, |q| q.max_send_rate()),
                    sandbox: !a.production_access_enabled(),
                })
            }
            Err(SdkError::ServiceError(e))
                if matches!(e.raw().status().as_u16(), 404 | 501)
                    || matches!(
                        e.err().code(),
                        Some("UnknownOperationException" | "InvalidAction" | "NotImplemented")
                    ) =>
            {
                AccountCheck::Unsupported(format!(
                    "GetAccount is not offered here ({})",
                    e.raw().status().as_u16()
                ))
            }
            Err(e) => AccountCheck::Failed(error_chain(&e)),
        }
    }
}

#[async_trait]
impl MailSender for SesSender {
    async fn send_raw(&self, envelope: &Envelope, raw: Vec<u8>) -> Result<String, DeliveryError> {
        use aws_sdk_sesv2::error::{ProvideErrorMetadata, SdkError};
        use aws_sdk_sesv2::primitives::Blob;
        use aws_sdk_sesv2::types::{Destination, EmailContent, RawMessage};
        let raw = RawMessage::builder()
            .data(Blob::new(raw))
            .build()
            .map_err(|e| DeliveryError::permanent("invalid_payload", e.to_string()))?;
        let destination = Destination::builder()
            .set_to_addresses(Some(envelope.to.clone()))
            .set_cc_addresses(Some(envelope.cc.clone()))
            .set_bcc_addresses(Some(envelope.bcc.clone()))
            .build();
        let result = self
            .client
            .send_email()
            .from_email_address(&envelope.from)
            .destination(destination)
            .content(EmailContent::builder().raw(raw).build())
            .set_configuration_set_name(self.configuration_set.clone())
            .send()
            .await;
        match result {
            Ok(out) => Ok(out.message_id.unwrap_or_default()),
            Err(SdkError::ServiceError(e)) => {
                let status = e.raw().status().as_u16();
                let err = e.err();
                Err(classify_ses(
                    err.code(),
                    Some(status),
                    err.message().unwrap_or_default(),
                ))
            }
            Err(SdkError::TimeoutError(_)) => Err(DeliveryError::temporary(
                "timeout",
                "SES did not answer in time",
            )),
            Err(e @ SdkError::ConstructionFailure(_)) => {
                Err(DeliveryError::permanent("invalid_payload", error_chain(&e)))
            }
            Err(e) => Err(DeliveryError::temporary("network", error_chain(&e))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ses_errors_map_to_categories() {
        for code in [
            "MessageRejected",
            "MailFromDomainNotVerifiedException",
            "AccountSendingPausedException",
            "SendingPausedException",
            "AccountSuspendedException",
            "BadRequestException",
        ] {
            let e = classify_ses(Some(code), Some(400), "");
            assert!(!e.is_retryable(), "{code}");
            assert_eq!(e.code(), code);
        }
        for code in [
            "TooManyRequestsException",
            "Throttling",
            "LimitExceededException",
            "ServiceUnavailable",
        ] {
            assert!(
                classify_ses(Some(code), Some(400), "").is_retryable(),
                "{code}"
            );
        }
        assert!(classify_ses(None, Some(503), "").is_retryable());
        assert!(classify_ses(Some("Weird"), Some(500), "").is_retryable());
        assert!(!classify_ses(Some("Weird"), Some(403), "").is_retryable());
        assert_eq!(classify_ses(None, Some(502), "").code(), "http_502");
    }

    #[test]
    fn subjects_fill_the_template_and_cannot_inject_headers() {
        assert_eq!(
            subject(None, "Weekly sales", "2026-11-26"),
            "Weekly sales – 2026-11-26"
        );
        assert_eq!(
            subject(Some("[{date}] {report_name}"), "Q4", "2026-11-26"),
            "[2026-11-26] Q4"
        );
        assert_eq!(
            subject(None, "Evil\r\nBcc: x@evil.com", "d"),
            "Evil  Bcc: x@evil.com – d"
        );
    }

    #[test]
    fn big_files_are_linked() {
        let file = |size| LinkedFile {
            format: crate::domain::target::Format::Pdf,
            file: crate::domain::execution::StoredFile {
                key: "k".into(),
                content_type: "application/pdf".into(),
                size,
                sha256: String::new(),
            },
            download_url: "https://x".into(),
        };
        assert_eq!(mode(&[file(10)], 10), Mode::Attached);
        assert_eq!(mode(&[file(6), file(5)], 10), Mode::Linked);
    }

    #[test]
    fn html_is_escaped() {
        assert_eq!(
            html_escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
