//! Email channel: a real MIME message (multipart/alternative text + HTML,
//! the rendered files attached) sent as raw content through SES v2. Above a
//! configurable size the files are linked instead of attached. Bcc goes in
//! the envelope only, never in a header.

use super::{Channel, DeliveryContext, DeliveryError, LinkedFile, Receipt, SendSlot, error_chain};
use crate::contract::ses_event::{TAG_ATTEMPT, TAG_TARGET};
use crate::domain::recipient::{RecipientOutcome, RecipientStatus, Role};
use crate::domain::suppression::{Suppression, address_key};
use crate::domain::target::{EmailAddress, EmailConfig};
use crate::domain::{TargetConfig, Timestamp};
use askama::Template;
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
    /// SES message tags (`EmailTags`), which SES copies into every event
    /// of the message: the attempt and the target, by which feedback finds
    /// the record.
    pub tags: Vec<(String, String)>,
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

fn megabytes(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / (1024.0 * 1024.0))
}

/// The HTML part: a table-based layout with inline CSS, as email clients
/// need (`templates/email.html`; askama escapes every value).
#[derive(Template)]
#[template(path = "email.html")]
struct EmailHtml<'a> {
    v: &'a EmailView,
}

/// The text part, saying the same (`templates/email.txt`).
#[derive(Template)]
#[template(path = "email.txt")]
struct EmailText<'a> {
    v: &'a EmailView,
}

/// What the message shows, worked out once for both parts.
#[derive(Debug, Clone)]
pub struct EmailView {
    pub report_name: String,
    /// The hidden line inbox lists show after the subject.
    pub preheader: String,
    /// When the report was generated, in its zone.
    pub generated: String,
    pub parameters: Vec<(String, String)>,
    pub chart: Option<ChartView>,
    pub table: Option<TableView>,
    /// The preview as aligned plain text (empty without one).
    pub text_table: Vec<String>,
    /// Why the files are linked instead of attached.
    pub size_note: Option<String>,
    pub files: Vec<FileView>,
    /// Where the files are and until when the links work.
    pub files_note: String,
    pub execution_id: String,
    /// The recipient's unsubscribe URL, for the footer.
    pub unsubscribe: Option<String>,
}

/// The inline chart.
#[derive(Debug, Clone)]
pub struct ChartView {
    /// The attachment's Content-ID.
    pub cid: String,
    pub alt: String,
}

/// The preview table.
#[derive(Debug, Clone)]
pub struct TableView {
    pub columns: Vec<CellView>,
    pub rows: Vec<Vec<CellView>>,
    pub totals: Option<Vec<CellView>>,
    /// "…and 1,190 more rows in the attached PDF and CSV."
    pub note: Option<String>,
}

/// One cell, and how it aligns (numbers right).
#[derive(Debug, Clone)]
pub struct CellView {
    pub text: String,
    pub numeric: bool,
    pub align: &'static str,
}

/// A file to download.
#[derive(Debug, Clone)]
pub struct FileView {
    /// `PDF`, `CSV`.
    pub label: String,
    pub name: String,
    pub url: String,
}

impl CellView {
    fn new(text: impl Into<String>, numeric: bool) -> Self {
        Self {
            text: text.into(),
            numeric,
            align: if numeric { "right" } else { "left" },
        }
    }
}

/// The chart picture's Content-ID.
pub const CHART_CID: &str = "chart@report-delivery";

/// Parameters a message lists; the rest are in the PDF.
const MAX_PARAMETERS: usize = 20;

impl EmailView {
    /// The view of one send: `attached` says whether the files travel as
    /// attachments (else they are linked, being over `limit` bytes).
    pub fn new(ctx: &DeliveryContext<'_>, attached: bool, limit: u64) -> Self {
        let labels: Vec<String> = ctx
            .files
            .iter()
            .map(|f| f.format.as_str().to_uppercase())
            .collect();
        let formats = labels.join(" and ");
        let expires = ctx.expires_local();
        let table = ctx.preview_rows().map(|(p, n)| {
            let numeric: Vec<bool> = p.columns.iter().map(|c| c.is_numeric()).collect();
            let row = |cells: &[String]| -> Vec<CellView> {
                cells
                    .iter()
                    .zip(&numeric)
                    .map(|(c, &num)| CellView::new(c.as_str(), num))
                    .collect()
            };
            let shown = p.first(n);
            let more = p.rows_after(n);
            let mut note = Vec::new();
            if more > 0 {
                let place = if attached {
                    format!("the attached {formats}")
                } else {
                    format!("the {formats} linked below")
                };
                note.push(format!(
                    "…and {} more row{} in {place}.",
                    crate::render::group_thousands(&more.to_string()),
                    if more == 1 { "" } else { "s" }
                ));
            }
            if p.hidden_columns > 0 {
                note.push(format!(
                    "The table shows the first {} of {} columns.",
                    p.columns.len(),
                    p.columns.len() + p.hidden_columns
                ));
            }
            TableView {
                columns: p
                    .columns
                    .iter()
                    .map(|c| {
                        CellView::new(
                            crate::render::display::display(
                                &c.name,
                                crate::render::preview::MAX_CELL,
                            ),
                            c.is_numeric(),
                        )
                    })
                    .collect(),
                rows: shown.iter().map(|r| row(r)).collect(),
                totals: p
                    .totals_line()
                    .filter(|_| !shown.is_empty())
                    .map(|t| row(&t)),
                note: (!note.is_empty()).then(|| note.join(" ")),
            }
        });
        let text_table = ctx
            .preview_rows()
            .map(|(p, n)| p.text_table(n, 30))
            .unwrap_or_default();
        let total: u64 = ctx.files.iter().map(|f| f.file.size).sum();
        let (size_note, files_note) = if attached {
            (
                None,
                format!(
                    "The {formats} {} attached. The links work until {expires}.",
                    if ctx.files.len() == 1 { "is" } else { "are" }
                ),
            )
        } else {
            (
                Some(format!(
                    "The files are too large to attach ({}, limit {}).",
                    megabytes(total),
                    megabytes(limit)
                )),
                format!("Download them with the links; they work until {expires}."),
            )
        };
        let rows = ctx.execution.row_count;
        Self {
            report_name: header_text(&ctx.execution.report_name),
            preheader: format!(
                "{} row{}, generated {}",
                crate::render::group_thousands(&rows.to_string()),
                if rows == 1 { "" } else { "s" },
                ctx.local_time()
            ),
            generated: ctx.local_time(),
            parameters: ctx
                .preview
                .map(|p| p.parameters.iter().take(MAX_PARAMETERS).cloned().collect())
                .unwrap_or_default(),
            chart: ctx.chart.map(|c| ChartView {
                cid: CHART_CID.into(),
                alt: c.title.clone(),
            }),
            table,
            text_table,
            size_note,
            files: ctx
                .files
                .iter()
                .zip(labels)
                .map(|(f, label)| FileView {
                    label: if attached {
                        label
                    } else {
                        format!("{label} ({})", megabytes(f.file.size))
                    },
                    name: ctx.file_name(f),
                    url: f.download_url.clone(),
                })
                .collect(),
            files_note,
            execution_id: ctx.execution.id.clone(),
            unsubscribe: None,
        }
    }
}

/// The HTML and text parts of a message.
pub fn render_parts(view: &EmailView) -> Result<(String, String), DeliveryError> {
    let failed = |e: askama::Error| DeliveryError::permanent("invalid_payload", e.to_string());
    Ok((
        EmailHtml { v: view }.render().map_err(failed)?,
        EmailText { v: view }.render().map_err(failed)?,
    ))
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

/// One recipient's copy: its one-click unsubscribe URL (RFC 8058) and
/// the `Message-ID` local part.
#[derive(Debug, Clone, Copy, Default)]
pub struct RecipientCopy<'a> {
    pub unsubscribe: Option<&'a str>,
    /// Numbers the copies of one attempt, so each has its own Message-ID.
    pub n: usize,
}

/// Builds the MIME message. `attachments` holds the bytes of each file when
/// they are attached, and is empty when they are linked.
pub fn build_message(
    ctx: &DeliveryContext<'_>,
    config: &EmailConfig,
    from: (&str, &EmailAddress),
    attachments: &[(String, &LinkedFile, Vec<u8>)],
    chart: Option<&[u8]>,
    limit: u64,
    copy: RecipientCopy<'_>,
) -> Result<Vec<u8>, DeliveryError> {
    use mail_builder::mime::MimePart;
    let name = header_text(&ctx.execution.report_name);
    let mut view = EmailView::new(ctx, !attachments.is_empty(), limit);
    if chart.is_none() {
        view.chart = None;
    }
    view.unsubscribe = copy.unsubscribe.map(str::to_owned);
    let (html, text) = render_parts(&view)?;
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
        .message_id(if copy.n == 0 {
            format!("{}@report-delivery", ctx.attempt.id)
        } else {
            format!("{}.{}@report-delivery", ctx.attempt.id, copy.n)
        })
        .header(
            "X-Report-Execution-Id",
            mail_builder::headers::raw::Raw::new(header_text(&ctx.execution.id)),
        );
    if let Some(url) = copy.unsubscribe {
        // RFC 8058: an HTTPS URI, and the exact one-click POST body.
        message = message
            .header(
                "List-Unsubscribe",
                mail_builder::headers::raw::Raw::new(format!("<{}>", header_text(url))),
            )
            .header(
                "List-Unsubscribe-Post",
                mail_builder::headers::raw::Raw::new("List-Unsubscribe=One-Click"),
            );
    }
    // mixed [ related [ alternative [text, html], chart (inline, by CID) ],
    // attachments… ], leaving out the layers that would hold one part.
    let mut body = MimePart::new(
        "multipart/alternative",
        vec![
            MimePart::new("text/plain", text),
            MimePart::new("text/html", html),
        ],
    );
    if let Some(png) = chart {
        body = MimePart::new(
            "multipart/related",
            vec![
                body,
                MimePart::new("image/png", png).inline().cid(CHART_CID),
            ],
        );
    }
    if !attachments.is_empty() {
        let mut parts = vec![body];
        for (file_name, f, bytes) in attachments {
            parts.push(
                MimePart::new(f.file.content_type.as_str(), bytes.as_slice())
                    .attachment(file_name.as_str()),
            );
        }
        body = MimePart::new("multipart/mixed", parts);
    }
    message = message.body(body);
    if !config.cc.is_empty() {
        message = message.cc(list(&config.cc));
    }
    if let Some(reply_to) = &config.reply_to {
        message = message.reply_to(reply_to.as_str().to_owned());
    }
    message
        .write_to_vec()
        .map_err(|e| DeliveryError::permanent("invalid_payload", e.to_string()))
}

#[async_trait]
impl Channel for EmailChannel {
    async fn slot<'a>(&'a self, ctx: &DeliveryContext<'_>) -> Result<SendSlot<'a>, DeliveryError> {
        match mode(ctx.files, self.attachment_limit) {
            Mode::Attached => Ok(Some(self.attached_in_flight.acquire().await.map_err(
                |_| DeliveryError::temporary("shutting_down", "the email channel is closing"),
            )?)),
            Mode::Linked => Ok(None),
        }
    }

    async fn deliver(&self, ctx: &DeliveryContext<'_>) -> Result<Receipt, DeliveryError> {
        let TargetConfig::Email(config) = &ctx.target.config else {
            return Err(DeliveryError::permanent(
                "invalid_target_config",
                "target is not an email target",
            ));
        };
        let mode = mode(ctx.files, self.attachment_limit);
        let mut attachments = Vec::new();
        if mode == Mode::Attached {
            for f in ctx.files {
                attachments.push((ctx.file_name(f), f, ctx.read(f).await?));
            }
        }
        let chart = ctx.chart_bytes().await;
        // Suppressed recipients are left out of the headers too.
        let mut shown = config.clone();
        for list in [&mut shown.to, &mut shown.cc, &mut shown.bcc] {
            list.retain(|a| {
                let key = address_key(a.as_str());
                !ctx.suppressed.iter().any(|s| s.address == key)
            });
        }
        // One copy per recipient, each with its own unsubscribe link. A
        // failure after some copies went out saves which (one write), so
        // the retry sends only the rest.
        let mut recipients = recipient_outcomes(config, ctx.suppressed, ctx.now);
        let mut sent = sent_copies(ctx.progress.get(SENT_KEY).as_deref());
        let mut size = 0;
        for (n, r) in recipients.iter_mut().enumerate() {
            if r.status != RecipientStatus::Sent {
                continue;
            }
            let key = address_key(&r.address);
            if let Some((_, id)) = sent.iter().find(|(a, _)| *a == key) {
                r.message_id = Some(id.clone());
                continue;
            }
            let unsubscribe = ctx
                .unsubscribe
                .iter()
                .find(|(a, _)| *a == key)
                .map(|(_, u)| u.as_str());
            let raw = build_message(
                ctx,
                &shown,
                (&self.from_name, &self.from),
                &attachments,
                chart.as_deref(),
                self.attachment_limit,
                RecipientCopy { unsubscribe, n },
            )?;
            size = size.max(raw.len());
            match self.sender.send_raw(&self.envelope(ctx, r), raw).await {
                Ok(id) => {
                    r.message_id = Some(id.clone());
                    sent.push((key, id));
                }
                Err(e) => {
                    if !sent.is_empty() {
                        let mut saved = std::collections::BTreeMap::new();
                        saved.insert(SENT_KEY.to_owned(), encode_sent(&sent));
                        if let Err(lost) = ctx.progress.save(saved).await {
                            tracing::warn!(error = %lost, "copies sent so far not saved; a retry sends them again");
                        }
                    }
                    return Err(e);
                }
            }
        }
        let mut receipt = Receipt {
            recipients,
            ..Receipt::default()
        };
        if let Some((_, first)) = sent.first() {
            receipt
                .metadata
                .insert("ses_message_id".into(), first.clone());
        }
        receipt
            .metadata
            .insert("messages".into(), sent.len().to_string());
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

/// The progress key of the copies already sent (`address message-id`
/// lines).
pub const SENT_KEY: &str = "email_sent";

fn sent_copies(saved: Option<&str>) -> Vec<(String, String)> {
    saved
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(a, id)| (a.to_owned(), id.to_owned()))
        .collect()
}

fn encode_sent(sent: &[(String, String)]) -> String {
    sent.iter()
        .map(|(a, id)| format!("{a} {id}"))
        .collect::<Vec<_>>()
        .join("\n")
}

impl EmailChannel {
    /// The envelope of one recipient's copy, tagged with the attempt and
    /// the target for SES's events.
    fn envelope(&self, ctx: &DeliveryContext<'_>, r: &RecipientOutcome) -> Envelope {
        let mut envelope = Envelope {
            from: self.from.as_str().to_owned(),
            to: Vec::new(),
            cc: Vec::new(),
            bcc: Vec::new(),
            tags: vec![
                (TAG_ATTEMPT.to_owned(), ctx.attempt.id.clone()),
                (TAG_TARGET.to_owned(), ctx.target.id.clone()),
            ],
        };
        match r.role {
            Role::To => envelope.to.push(r.address.clone()),
            Role::Cc => envelope.cc.push(r.address.clone()),
            Role::Bcc => envelope.bcc.push(r.address.clone()),
        }
        envelope
    }
}

/// Every recipient of an email target (To, Cc, Bcc in order), `sent` or
/// `suppressed` by the target's suppressions (the reason in `detail`).
pub fn recipient_outcomes(
    config: &EmailConfig,
    suppressed: &[Suppression],
    now: Timestamp,
) -> Vec<RecipientOutcome> {
    let roles = [
        (Role::To, &config.to),
        (Role::Cc, &config.cc),
        (Role::Bcc, &config.bcc),
    ];
    roles
        .into_iter()
        .flat_map(|(role, list)| list.iter().map(move |a| (role, a.as_str())))
        .map(|(role, address)| {
            let key = address_key(address);
            let hit = suppressed.iter().find(|s| s.address == key);
            RecipientOutcome {
                address: address.to_owned(),
                role,
                status: if hit.is_some() {
                    RecipientStatus::Suppressed
                } else {
                    RecipientStatus::Sent
                },
                message_id: None,
                bounce: None,
                detail: hit.map(|s| format!("suppressed for this target: {}", s.reason.as_str())),
                at: now,
            }
        })
        .collect()
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
        use aws_sdk_sesv2::types::{Destination, EmailContent, MessageTag, RawMessage};
        let raw = RawMessage::builder()
            .data(Blob::new(raw))
            .build()
            .map_err(|e| DeliveryError::permanent("invalid_payload", e.to_string()))?;
        let destination = Destination::builder()
            .set_to_addresses(Some(envelope.to.clone()))
            .set_cc_addresses(Some(envelope.cc.clone()))
            .set_bcc_addresses(Some(envelope.bcc.clone()))
            .build();
        let tags = envelope
            .tags
            .iter()
            .map(|(name, value)| MessageTag::builder().name(name).value(value).build())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| DeliveryError::permanent("invalid_payload", e.to_string()))?;
        let result = self
            .client
            .send_email()
            .from_email_address(&envelope.from)
            .destination(destination)
            .content(EmailContent::builder().raw(raw).build())
            .set_configuration_set_name(self.configuration_set.clone())
            .set_email_tags(Some(tags))
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
mod tests;
