//! Everything one send needs, read once per invocation: the target,
//! the execution (cached per invocation), the connection, signed links,
//! and the destination's rate-limit slot.

use super::*;

/// The executions one invocation has read: a batch's messages mostly share
/// one, and what deliver reads of it (files, name, times) never changes, so
/// it is read once per invocation (strongly consistent, since fan-out may
/// have just written it).
#[derive(Default)]
pub(super) struct Executions {
    pub(super) read: Cache<Option<ReportExecution>>,
    pub(super) previews: Cache<Option<Arc<Preview>>>,
}

/// Values read once per invocation, by execution id.
pub(super) type Cache<T> = Mutex<HashMap<String, Arc<tokio::sync::OnceCell<T>>>>;

impl Executions {
    pub(super) async fn get(
        &self,
        deps: &Deps,
        id: &str,
    ) -> Result<Option<ReportExecution>, StoreError> {
        let cell = match self.read.lock() {
            Ok(mut read) => read.entry(id.to_owned()).or_default().clone(),
            Err(_) => Arc::default(),
        };
        cell.get_or_try_init(|| deps.executions.get_execution(id))
            .await
            .cloned()
    }

    /// The execution's preview, read once per invocation. A preview is
    /// decoration: one that cannot be read is left out of the message (and
    /// logged), never a reason to fail or delay the delivery.
    pub(super) async fn preview(
        &self,
        deps: &Deps,
        execution: &ReportExecution,
    ) -> Option<Arc<Preview>> {
        let file = execution.preview.as_ref()?;
        let cell = match self.previews.lock() {
            Ok(mut read) => read.entry(execution.id.clone()).or_default().clone(),
            Err(_) => Arc::default(),
        };
        cell.get_or_init(|| async {
            let read = match deps.blobs.get(&file.key).await {
                Ok(bytes) => Preview::from_bytes(&bytes),
                Err(e) => Err(e.to_string()),
            };
            match read {
                Ok(p) => Some(Arc::new(p)),
                Err(error) => {
                    warn!(key = %file.key, %error, "preview unreadable; sending without it");
                    None
                }
            }
        })
        .await
        .clone()
    }
}

pub(super) fn missing_files(formats: &[&str]) -> SendFailure {
    SendFailure::Delivery(DeliveryError::permanent(
        "no_files",
        format!(
            "the execution has none of the formats the target asks for ({})",
            formats.join(", ")
        ),
    ))
}

pub(super) enum SendFailure {
    Store(StoreError),
    Delivery(DeliveryError),
    /// Email: every recipient is suppressed for the target; nothing to send.
    AllSuppressed(Vec<crate::domain::RecipientOutcome>),
}

impl From<StoreError> for SendFailure {
    fn from(e: StoreError) -> Self {
        SendFailure::Store(e)
    }
}

/// Everything one send needs, read once per invocation.
pub(super) struct Prepared<'a> {
    pub(super) target: DeliveryTarget,
    pub(super) execution: ReportExecution,
    pub(super) connection: Option<ServiceConnection>,
    pub(super) channel: &'a dyn Channel,
    pub(super) files: Vec<LinkedFile>,
    pub(super) link_expires_at: Timestamp,
    /// The rows (and parameters) a message may show.
    pub(super) preview: Option<Arc<Preview>>,
    pub(super) chart: Option<ChartFile>,
    /// Email: the addresses the target no longer mails.
    pub(super) suppressed: Vec<crate::domain::suppression::Suppression>,
    /// Email: each recipient's unsubscribe URL, by address key.
    pub(super) unsubscribe: Vec<(String, String)>,
}

pub(super) async fn prepare<'a>(
    deps: &'a Deps,
    attempt: &DeliveryAttempt,
    executions: &Executions,
) -> Result<Prepared<'a>, SendFailure> {
    let missing = |code: &str, what: &str| {
        SendFailure::Delivery(DeliveryError::permanent(code, what.to_owned()))
    };
    let target = deps
        .targets
        .get_target(&attempt.delivery_target_id)
        .await
        .map_err(|e| match e {
            StoreError::Invalid { reason, .. } => {
                SendFailure::Delivery(DeliveryError::permanent("invalid_target_config", reason))
            }
            other => SendFailure::Store(other),
        })?
        .ok_or_else(|| missing("target_not_found", "the delivery target no longer exists"))?;
    if !target.active && attempt.kind == AttemptKind::Delivery {
        return Err(missing(
            "target_inactive",
            "the delivery target was deactivated",
        ));
    }
    let mut unsubscribe = Vec::new();
    let suppressed = match &target.config {
        crate::domain::TargetConfig::Email(config) => {
            let suppressed = deps.suppressions.suppressed(&target.id).await?;
            for a in config.to.iter().chain(&config.cc).chain(&config.bcc) {
                let key = crate::domain::suppression::address_key(a.as_str());
                let url = deps
                    .links
                    .unsubscribe_link(&target.id, &key)
                    .await
                    .map_err(|e| SendFailure::Delivery(DeliveryError::temporary("link_keys", e)))?;
                unsubscribe.push((key, url));
            }
            let recipients =
                crate::channel::email::recipient_outcomes(config, &suppressed, Timestamp::now());
            if recipients
                .iter()
                .all(|r| r.status == crate::domain::RecipientStatus::Suppressed)
            {
                return Err(SendFailure::AllSuppressed(recipients));
            }
            suppressed
        }
        _ => Vec::new(),
    };
    let execution = executions
        .get(deps, &attempt.report_execution_id)
        .await?
        .ok_or_else(|| {
            missing(
                "execution_not_found",
                "the report execution is not recorded",
            )
        })?;
    let connection = match &target.service_connection_id {
        Some(id) => Some(deps.connections.get_connection(id).await?.ok_or_else(|| {
            missing(
                "connection_not_found",
                "the service connection does not exist",
            )
        })?),
        None => None,
    };
    let channel = deps
        .channels
        .for_type(target.config.target_type())
        .map_err(SendFailure::Delivery)?;
    let link_expires_at = Timestamp::now()
        .plus(time::Duration::try_from(deps.link_ttl).unwrap_or(time::Duration::days(7)));
    let mut files = Vec::new();
    let wanted = target.formats();
    for &format in &wanted {
        let file = match format {
            Format::Pdf => Some(&execution.pdf),
            Format::Csv => execution.csv.as_ref(),
        };
        let Some(file) = file else { continue };
        files.push(LinkedFile {
            format,
            file: file.clone(),
            download_url: link(deps, &file.key, link_expires_at).await?,
        });
    }
    if files.is_empty() {
        let names: Vec<&str> = wanted.iter().map(|f| f.as_str()).collect();
        return Err(missing_files(&names));
    }
    // Read even when no rows are shown: messages list the parameters.
    let preview = executions.preview(deps, &execution).await;
    let chart = match &execution.chart {
        Some(file) => Some(ChartFile {
            file: file.clone(),
            download_url: link(deps, &file.key, link_expires_at).await?,
            title: preview
                .as_ref()
                .and_then(|p| p.chart_title.clone())
                .unwrap_or_else(|| "Chart".into()),
        }),
        None => None,
    };
    Ok(Prepared {
        target,
        execution,
        connection,
        channel,
        files,
        link_expires_at,
        preview,
        chart,
        suppressed,
        unsubscribe,
    })
}

/// A download link to `key`; unreadable link keys are worth a retry.
pub(super) async fn link(
    deps: &Deps,
    key: &str,
    expires_at: Timestamp,
) -> Result<String, SendFailure> {
    deps.links
        .link(key, expires_at)
        .await
        .map_err(|e| SendFailure::Delivery(DeliveryError::temporary("link_keys", e)))
}

/// The future slot to put the send off to when its destination is over
/// its shared rate limit; `None` to send now. An attempt that already holds
/// a slot uses it without reserving again. A failing limiter lets the send
/// go: the provider's own 429 still applies.
pub(super) async fn rate_slot(
    deps: &Deps,
    send: &Prepared<'_>,
    attempt: &DeliveryAttempt,
) -> Option<Timestamp> {
    let now = Timestamp::now();
    if let Some(slot) = attempt.rate_slot {
        return (slot.millis_since(now) > 250).then_some(slot);
    }
    let (key, limit) = send
        .channel
        .rate_limit(&send.target, send.connection.as_ref())?;
    match deps.rate_limits.reserve(&key, limit, now).await {
        Ok(None) => None,
        Ok(Some(wait)) => {
            info!(rate_key = %key, wait_ms = millis(wait), "destination over its rate limit; slot reserved");
            Some(now.plus(time::Duration::try_from(wait).unwrap_or(time::Duration::SECOND)))
        }
        Err(e) => {
            warn!(rate_key = %key, error = %e, "rate limiter unavailable; sending anyway");
            None
        }
    }
}
