//! Metrics in CloudWatch Embedded Metric Format (EMF): each record is one
//! JSON line on stdout that CloudWatch Logs turns into metrics, with no API
//! call and no added latency.
//!
//! The catalogue is closed: every [`Metric`] has one name, one unit and
//! fixed dimension sets, and every dimension value comes from a closed set
//! ([`Channel`](crate::domain::TargetType), [`Outcome`], [`Stage`], and
//! [`error_code`] for error codes). Ids never become dimensions: their
//! cardinality is unbounded, and each distinct value is a billed metric.
//!
//! A [`Metrics::buffered`] emitter (deliver's) keeps an invocation's values
//! and writes one record per metric and dimension values at
//! [`Metrics::flush`], the values as an EMF array (up to 100 per record):
//! the same samples for CloudWatch, a tenth of the log bytes for a batch.

use crate::domain::{TargetType, Timestamp};
use serde_json::{Map, Value, json};
use std::sync::{Arc, Mutex};

/// The namespace when `METRICS_NAMESPACE` is unset.
pub const DEFAULT_NAMESPACE: &str = "ReportDelivery";

/// A metric's unit, spelled as CloudWatch spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Count,
    Milliseconds,
    Bytes,
}

impl Unit {
    /// The CloudWatch unit name.
    pub fn as_str(self) -> &'static str {
        match self {
            Unit::Count => "Count",
            Unit::Milliseconds => "Milliseconds",
            Unit::Bytes => "Bytes",
        }
    }
}

/// A dimension key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Dim {
    /// `email`, `slack` or `webhook`.
    Channel,
    /// See [`Outcome`].
    Outcome,
    /// One of [`ERROR_CODES`].
    ErrorCode,
    /// See [`Stage`].
    Stage,
    /// `disabled` or `flagged`.
    Change,
    /// An SES event type (see [`EMAIL_EVENTS`]).
    Event,
    /// Why feedback changed nothing (see [`IGNORED_REASONS`]).
    Reason,
}

impl Dim {
    /// The dimension name.
    pub fn as_str(self) -> &'static str {
        match self {
            Dim::Channel => "Channel",
            Dim::Outcome => "Outcome",
            Dim::ErrorCode => "ErrorCode",
            Dim::Stage => "Stage",
            Dim::Change => "Change",
            Dim::Event => "Event",
            Dim::Reason => "Reason",
        }
    }
}

/// How an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Delivered,
    FailedPermanent,
    FailedExhausted,
}

impl Outcome {
    /// Every outcome.
    pub const ALL: [Outcome; 3] = [
        Outcome::Delivered,
        Outcome::FailedPermanent,
        Outcome::FailedExhausted,
    ];

    /// The dimension value.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Delivered => "delivered",
            Outcome::FailedPermanent => "failed_permanent",
            Outcome::FailedExhausted => "failed_exhausted",
        }
    }
}

/// A pipeline stage, for dead letters and duplicates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Executions,
    Fanout,
    Delivery,
    Feedback,
}

impl Stage {
    /// Every stage.
    pub const ALL: [Stage; 4] = [
        Stage::Executions,
        Stage::Fanout,
        Stage::Delivery,
        Stage::Feedback,
    ];

    /// The dimension value.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Executions => "executions",
            Stage::Fanout => "fanout",
            Stage::Delivery => "delivery",
            Stage::Feedback => "feedback",
        }
    }
}

/// Every metric the code emits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Metric {
    /// The first try of an attempt.
    AttemptsStarted,
    /// An attempt that ended, by [`Outcome`].
    Deliveries,
    /// A try that failed, by error code.
    SendErrors,
    /// A temporary failure put back on the queue for a backoff.
    RetriesScheduled,
    /// A temporary failure tried again at once.
    ImmediateRetries,
    /// A message sent to a dead-letter queue by the code.
    DeadLettered,
    /// A target disabled or flagged by the auto-disable policy, by
    /// `Change`.
    TargetsStopped,
    /// A duplicate message acknowledged without doing the work twice.
    DuplicatesIgnored,
    /// One try's send time.
    SendDuration,
    /// From the execution's `generated_at` to delivered.
    EndToEndLatency,
    /// Rendering one execution's files.
    RenderDuration,
    /// The rendered PDF's size.
    PdfBytes,
    /// One fan-out task.
    FanoutDuration,
    /// Active targets of an execution.
    TargetsPerExecution,
    /// Attempts the reconciler found stuck and acted on.
    StuckAttempts,
    /// SES events about the stack's email, one per recipient, by `Event`
    /// (`send` counts messages): the bounce and complaint rates' parts.
    EmailEvents,
    /// Feedback acknowledged without a change, by `Reason`.
    FeedbackIgnored,
}

/// The `Event` values of [`Metric::EmailEvents`] (`unsubscribe` from the
/// one-click links, the rest from SES).
pub const EMAIL_EVENTS: [&str; 8] = [
    "send",
    "delivery",
    "bounce",
    "complaint",
    "reject",
    "delivery_delay",
    "other",
    "unsubscribe",
];

/// The `Reason` values of [`Metric::FeedbackIgnored`]: `untagged` (not a
/// send of this stack's), `unknown_attempt` (its record is gone: late or
/// expired), `already_known` (a copy, or weaker news out of order).
pub const IGNORED_REASONS: [&str; 3] = ["untagged", "unknown_attempt", "already_known"];

impl Metric {
    /// The whole catalogue.
    pub const ALL: [Metric; 17] = [
        Metric::AttemptsStarted,
        Metric::Deliveries,
        Metric::SendErrors,
        Metric::RetriesScheduled,
        Metric::ImmediateRetries,
        Metric::DeadLettered,
        Metric::TargetsStopped,
        Metric::DuplicatesIgnored,
        Metric::SendDuration,
        Metric::EndToEndLatency,
        Metric::RenderDuration,
        Metric::PdfBytes,
        Metric::FanoutDuration,
        Metric::TargetsPerExecution,
        Metric::StuckAttempts,
        Metric::EmailEvents,
        Metric::FeedbackIgnored,
    ];

    /// The metric name.
    pub fn name(self) -> &'static str {
        match self {
            Metric::AttemptsStarted => "AttemptsStarted",
            Metric::Deliveries => "Deliveries",
            Metric::SendErrors => "SendErrors",
            Metric::RetriesScheduled => "RetriesScheduled",
            Metric::ImmediateRetries => "ImmediateRetries",
            Metric::DeadLettered => "DeadLettered",
            Metric::TargetsStopped => "TargetsStopped",
            Metric::DuplicatesIgnored => "DuplicatesIgnored",
            Metric::SendDuration => "SendDuration",
            Metric::EndToEndLatency => "EndToEndLatency",
            Metric::RenderDuration => "RenderDuration",
            Metric::PdfBytes => "PdfBytes",
            Metric::FanoutDuration => "FanoutDuration",
            Metric::TargetsPerExecution => "TargetsPerExecution",
            Metric::StuckAttempts => "StuckAttempts",
            Metric::EmailEvents => "EmailEvents",
            Metric::FeedbackIgnored => "FeedbackIgnored",
        }
    }

    /// The unit.
    pub fn unit(self) -> Unit {
        match self {
            Metric::SendDuration
            | Metric::EndToEndLatency
            | Metric::RenderDuration
            | Metric::FanoutDuration => Unit::Milliseconds,
            Metric::PdfBytes => Unit::Bytes,
            _ => Unit::Count,
        }
    }

    /// The dimension sets it is published under (an empty set: no
    /// dimensions).
    pub fn dimension_sets(self) -> &'static [&'static [Dim]] {
        match self {
            Metric::AttemptsStarted
            | Metric::RetriesScheduled
            | Metric::ImmediateRetries
            | Metric::SendDuration
            | Metric::EndToEndLatency => &[&[Dim::Channel]],
            Metric::Deliveries => &[&[Dim::Channel, Dim::Outcome], &[Dim::Outcome]],
            Metric::SendErrors => &[&[Dim::Channel, Dim::ErrorCode], &[Dim::ErrorCode]],
            Metric::DeadLettered | Metric::DuplicatesIgnored => &[&[Dim::Stage]],
            Metric::TargetsStopped => &[&[Dim::Channel, Dim::Change]],
            Metric::EmailEvents => &[&[Dim::Event]],
            Metric::FeedbackIgnored => &[&[Dim::Reason]],
            Metric::RenderDuration
            | Metric::PdfBytes
            | Metric::FanoutDuration
            | Metric::TargetsPerExecution
            | Metric::StuckAttempts => &[&[]],
        }
    }

    /// The dimension keys it needs values for.
    pub fn dimensions(self) -> Vec<Dim> {
        let mut keys: Vec<Dim> = self
            .dimension_sets()
            .iter()
            .flat_map(|s| s.iter().copied())
            .collect();
        keys.sort();
        keys.dedup();
        keys
    }
}

/// The channel dimension value of a target type.
pub fn channel(t: TargetType) -> &'static str {
    match t {
        TargetType::Email => "email",
        TargetType::Slack => "slack",
        TargetType::Webhook => "webhook",
    }
}

/// The error codes that are dimension values as they are; [`error_code`]
/// folds every other code into a bucket.
pub const ERROR_CODES: &[&str] = &[
    // Ours, from every channel and the handler.
    "timeout",
    "network",
    "deadline",
    "tls_error",
    "forbidden_address",
    "forbidden_url",
    "invalid_payload",
    "invalid_credentials",
    "invalid_target_config",
    "file_missing",
    "file_unreadable",
    "blob_store",
    "bad_response",
    "shutting_down",
    "upload_expired",
    "completion_unconfirmed",
    "retries_exhausted",
    "crash_loop",
    "invalid_record",
    "store_refused",
    "http_410_gone",
    // Slack's.
    "ratelimited",
    "internal_error",
    "fatal_error",
    "service_unavailable",
    "request_timeout",
    "invalid_auth",
    "not_authed",
    "token_revoked",
    "account_inactive",
    "channel_not_found",
    "not_in_channel",
    "missing_scope",
    "is_archived",
    "no_service",
    "channel_is_archived",
    "file_not_found",
    // SES's.
    "MessageRejected",
    "MailFromDomainNotVerified",
    "MailFromDomainNotVerifiedException",
    "AccountSuspendedException",
    "Throttling",
    "ThrottlingException",
    "ServiceUnavailable",
    "InternalFailure",
    "AccountSendingPausedException",
    "SendingPausedException",
    "TooManyRequestsException",
    "LimitExceededException",
    "NotFoundException",
    "BadRequestException",
    "AccessDeniedException",
    // Buckets.
    "http_4xx",
    "http_5xx",
    "http_429",
    "other",
];

/// The bounded dimension value for an error code: itself when it is in
/// [`ERROR_CODES`], its status class for `http_NNN` and `upload_http_NNN`,
/// else `other`.
pub fn error_code(code: &str) -> &'static str {
    if let Some(known) = ERROR_CODES.iter().find(|c| **c == code) {
        return known;
    }
    let status = code
        .strip_prefix("upload_http_")
        .or_else(|| code.strip_prefix("http_"))
        .and_then(|s| s.parse::<u16>().ok());
    match status {
        Some(429) => "http_429",
        Some(400..=499) => "http_4xx",
        Some(500..=599) => "http_5xx",
        _ => "other",
    }
}

/// Where records go.
type Sink = Arc<dyn Fn(&str) + Send + Sync>;

/// Values kept by a buffered emitter, grouped by metric and dimensions.
type Kept = Vec<(Metric, Vec<(Dim, &'static str)>, Vec<f64>)>;

/// Most values one EMF record may carry in an array.
pub const MAX_VALUES: usize = 100;

/// Emits EMF records. Cheap to clone (clones share a buffer).
#[derive(Clone)]
pub struct Metrics {
    namespace: Arc<str>,
    sink: Sink,
    buffer: Option<Arc<Mutex<Kept>>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

impl Metrics {
    /// Records to stdout, one line each, under `namespace`.
    pub fn stdout(namespace: &str) -> Self {
        Self {
            namespace: namespace.into(),
            buffer: None,
            sink: Arc::new(|line: &str| {
                use std::io::Write;
                // One write per line keeps records whole between log lines.
                let mut out = std::io::stdout().lock();
                let _ = out.write_all(format!("{line}\n").as_bytes());
                let _ = out.flush();
            }),
        }
    }

    /// Records to stdout under `METRICS_NAMESPACE` (default
    /// [`DEFAULT_NAMESPACE`]).
    pub fn from_env() -> Self {
        let ns = std::env::var("METRICS_NAMESPACE")
            .ok()
            .filter(|s| !s.trim().is_empty())
            .unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned());
        Self::stdout(&ns)
    }

    /// Records kept in memory, for tests.
    pub fn capture() -> (Self, Captured) {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let kept = lines.clone();
        let metrics = Self {
            namespace: DEFAULT_NAMESPACE.into(),
            buffer: None,
            sink: Arc::new(move |line: &str| {
                if let Ok(mut l) = kept.lock() {
                    l.push(line.to_owned());
                }
            }),
        };
        (metrics, Captured(lines))
    }

    /// Records nothing.
    pub fn none() -> Self {
        Self {
            namespace: DEFAULT_NAMESPACE.into(),
            buffer: None,
            sink: Arc::new(|_: &str| {}),
        }
    }

    /// Counts one.
    pub fn count(&self, metric: Metric, dims: &[(Dim, &'static str)]) {
        self.record(metric, dims, 1.0);
    }

    /// Records `value` (in the metric's unit). Dimension values are
    /// `'static`, so only values from closed sets fit; a missing dimension
    /// drops the record (with a debug assertion), since a partial record
    /// would publish under the wrong dimensions.
    pub fn record(&self, metric: Metric, dims: &[(Dim, &'static str)], value: f64) {
        if let Some(buffer) = &self.buffer
            && let Ok(mut kept) = buffer.lock()
        {
            match kept
                .iter_mut()
                .find(|(m, d, _)| *m == metric && d.as_slice() == dims)
            {
                Some((_, _, values)) => values.push(value),
                None => kept.push((metric, dims.to_vec(), vec![value])),
            }
            return;
        }
        self.emit(metric, dims, &[value]);
    }

    fn emit(&self, metric: Metric, dims: &[(Dim, &'static str)], values: &[f64]) {
        match encode_values(&self.namespace, metric, dims, values, Timestamp::now()) {
            Some(line) => (self.sink)(&line),
            None => debug_assert!(false, "{} needs {:?}", metric.name(), metric.dimensions()),
        }
    }

    /// The same emitter, keeping values until [`Metrics::flush`].
    pub fn buffered(self) -> Self {
        Self {
            buffer: Some(Arc::default()),
            ..self
        }
    }

    /// Writes the kept values, one record per metric and dimension values
    /// (at most [`MAX_VALUES`] each), and empties the buffer. Does nothing
    /// for an emitter that is not buffered.
    pub fn flush(&self) {
        let Some(buffer) = &self.buffer else { return };
        let kept = buffer
            .lock()
            .map(|mut k| std::mem::take(&mut *k))
            .unwrap_or_default();
        for (metric, dims, values) in kept {
            for chunk in values.chunks(MAX_VALUES) {
                self.emit(metric, &dims, chunk);
            }
        }
    }
}

/// Records captured by [`Metrics::capture`].
#[derive(Clone, Debug)]
pub struct Captured(Arc<Mutex<Vec<String>>>);

impl Captured {
    /// The lines so far.
    pub fn lines(&self) -> Vec<String> {
        self.0.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// The sum of `metric`'s values whose dimensions include `dims`.
    pub fn sum(&self, metric: Metric, dims: &[(Dim, &str)]) -> f64 {
        self.lines()
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v.get(metric.name()).is_some())
            .filter(|v| dims.iter().all(|(k, val)| v[k.as_str()] == *val))
            .flat_map(|v| values(&v[metric.name()]))
            .sum()
    }
}

/// The values of a record's metric member: one number or an array of them
/// (empty when it is neither).
pub fn values(member: &Value) -> Vec<f64> {
    match member {
        Value::Array(a) => a.iter().filter_map(Value::as_f64).collect(),
        v => v.as_f64().into_iter().collect(),
    }
}

/// One EMF record, or `None` when a dimension is missing.
pub fn encode(
    namespace: &str,
    metric: Metric,
    dims: &[(Dim, &'static str)],
    value: f64,
    at: Timestamp,
) -> Option<String> {
    encode_values(namespace, metric, dims, &[value], at)
}

/// One EMF record of one or more values (an array when more than one), or
/// `None` when a dimension is missing.
pub fn encode_values(
    namespace: &str,
    metric: Metric,
    dims: &[(Dim, &'static str)],
    values: &[f64],
    at: Timestamp,
) -> Option<String> {
    let mut root = Map::new();
    for key in metric.dimensions() {
        let (_, v) = dims.iter().find(|(k, _)| *k == key)?;
        root.insert(key.as_str().to_owned(), json!(v));
    }
    let sets: Vec<Vec<&str>> = metric
        .dimension_sets()
        .iter()
        .map(|s| s.iter().map(|d| d.as_str()).collect())
        .collect();
    root.insert(
        "_aws".into(),
        json!({
            "Timestamp": at.unix_millis(),
            "CloudWatchMetrics": [{
                "Namespace": namespace,
                "Dimensions": sets,
                "Metrics": [{"Name": metric.name(), "Unit": metric.unit().as_str()}],
            }],
        }),
    );
    let member = match values {
        [one] => json!(one),
        many => json!(many),
    };
    root.insert(metric.name().into(), member);
    Some(Value::Object(root).to_string())
}

/// Checks one line against the EMF specification and the catalogue;
/// returns the metric and its dimension values. Used by tests on the
/// functions' real output.
pub fn validate(line: &str) -> Result<(Metric, Vec<(String, String)>), String> {
    let v: Value = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    let aws = v.get("_aws").ok_or("no _aws member")?;
    if !aws["Timestamp"].is_i64() && !aws["Timestamp"].is_u64() {
        return Err("_aws.Timestamp is not an integer (epoch milliseconds)".into());
    }
    let directives = aws["CloudWatchMetrics"]
        .as_array()
        .filter(|d| d.len() == 1)
        .ok_or("CloudWatchMetrics is not one directive")?;
    let d = &directives[0];
    let ns = d["Namespace"].as_str().unwrap_or_default();
    if ns.is_empty() || ns.len() > 1024 {
        return Err(format!("bad namespace {ns:?}"));
    }
    let defs = d["Metrics"]
        .as_array()
        .filter(|m| m.len() == 1)
        .ok_or("Metrics is not one definition")?;
    let name = defs[0]["Name"].as_str().unwrap_or_default();
    let metric = Metric::ALL
        .into_iter()
        .find(|m| m.name() == name)
        .ok_or_else(|| format!("{name:?} is not in the catalogue"))?;
    if defs[0]["Unit"].as_str() != Some(metric.unit().as_str()) {
        return Err(format!("{name}: unit {:?}", defs[0]["Unit"]));
    }
    let member = &v[name];
    let ok = member.is_number()
        || member.as_array().is_some_and(|a| {
            !a.is_empty() && a.len() <= MAX_VALUES && a.iter().all(Value::is_number)
        });
    if !ok {
        return Err(format!(
            "{name}: the value is not a number or an array of 1-{MAX_VALUES} numbers"
        ));
    }
    let sets = d["Dimensions"].as_array().ok_or("no Dimensions")?;
    let expected: Vec<Vec<&str>> = metric
        .dimension_sets()
        .iter()
        .map(|s| s.iter().map(|k| k.as_str()).collect())
        .collect();
    let got: Vec<Vec<&str>> = sets
        .iter()
        .map(|s| {
            s.as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default()
        })
        .collect();
    if got != expected {
        return Err(format!("{name}: dimension sets {got:?}, want {expected:?}"));
    }
    let mut values = Vec::new();
    for key in metric.dimensions() {
        let value = v[key.as_str()]
            .as_str()
            .ok_or_else(|| format!("{name}: dimension {} has no value", key.as_str()))?;
        let closed = match key {
            Dim::Channel => ["email", "slack", "webhook"].contains(&value),
            Dim::Outcome => Outcome::ALL.iter().any(|o| o.as_str() == value),
            Dim::Stage => Stage::ALL.iter().any(|s| s.as_str() == value),
            Dim::ErrorCode => ERROR_CODES.contains(&value),
            Dim::Change => ["disabled", "flagged"].contains(&value),
            Dim::Event => EMAIL_EVENTS.contains(&value),
            Dim::Reason => IGNORED_REASONS.contains(&value),
        };
        if !closed {
            return Err(format!(
                "{name}: {} = {value:?} is not in its closed set",
                key.as_str()
            ));
        }
        values.push((key.as_str().to_owned(), value.to_owned()));
    }
    Ok((metric, values))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_encodes_to_a_valid_record() {
        let at = Timestamp::parse("2026-11-27T10:00:00Z").expect("time");
        for m in Metric::ALL {
            let dims: Vec<(Dim, &'static str)> = m
                .dimensions()
                .into_iter()
                .map(|d| {
                    let v = match d {
                        Dim::Channel => "slack",
                        Dim::Outcome => "delivered",
                        Dim::ErrorCode => "timeout",
                        Dim::Stage => "fanout",
                        Dim::Change => "disabled",
                        Dim::Event => "bounce",
                        Dim::Reason => "already_known",
                    };
                    (d, v)
                })
                .collect();
            let line = encode("NS", m, &dims, 3.0, at).expect("all dimensions given");
            let (back, _) = validate(&line).unwrap_or_else(|e| panic!("{line}: {e}"));
            assert_eq!(back, m);
            let v: Value = serde_json::from_str(&line).expect("json");
            assert_eq!(v["_aws"]["Timestamp"], at.unix_millis());
            assert_eq!(v[m.name()], 3.0);
        }
    }

    #[test]
    fn the_record_has_the_emf_shape() {
        let at = Timestamp::parse("2026-11-27T10:00:00Z").expect("time");
        let line = encode(
            "ReportDelivery",
            Metric::Deliveries,
            &[(Dim::Channel, "email"), (Dim::Outcome, "delivered")],
            1.0,
            at,
        )
        .expect("record");
        let v: Value = serde_json::from_str(&line).expect("json");
        assert_eq!(
            v,
            json!({
                "_aws": {
                    "Timestamp": at.unix_millis(),
                    "CloudWatchMetrics": [{
                        "Namespace": "ReportDelivery",
                        "Dimensions": [["Channel", "Outcome"], ["Outcome"]],
                        "Metrics": [{"Name": "Deliveries", "Unit": "Count"}],
                    }],
                },
                "Channel": "email",
                "Outcome": "delivered",
                "Deliveries": 1.0,
            })
        );
    }

    #[test]
    fn a_buffered_emitter_writes_one_record_per_metric_and_dimensions_at_flush() {
        let (m, captured) = Metrics::capture();
        let m = m.buffered();
        let slack = [(Dim::Channel, "slack")];
        for i in 0..150 {
            m.record(Metric::SendDuration, &slack, f64::from(i));
        }
        m.count(Metric::AttemptsStarted, &slack);
        m.count(Metric::AttemptsStarted, &[(Dim::Channel, "email")]);
        assert!(captured.lines().is_empty(), "nothing before the flush");
        m.flush();
        let lines = captured.lines();
        // 150 durations: 100 + 50; one record per channel of AttemptsStarted.
        assert_eq!(lines.len(), 4, "{lines:#?}");
        for line in &lines {
            validate(line).expect("valid EMF");
        }
        let first: Value = serde_json::from_str(&lines[0]).expect("json");
        assert_eq!(values(&first["SendDuration"]).len(), MAX_VALUES);
        assert_eq!(
            captured.sum(Metric::SendDuration, &[(Dim::Channel, "slack")]),
            (0..150).map(f64::from).sum::<f64>()
        );
        assert_eq!(captured.sum(Metric::AttemptsStarted, &[]), 2.0);
        m.flush();
        assert_eq!(captured.lines().len(), 4, "the buffer was emptied");
        // An array past the EMF limit, or an empty one, is refused.
        let at = Timestamp::now();
        let over = encode_values("NS", Metric::PdfBytes, &[], &[1.0; MAX_VALUES + 1], at);
        assert!(validate(&over.expect("record")).is_err());
        let empty = encode_values("NS", Metric::PdfBytes, &[], &[], at);
        assert!(validate(&empty.expect("record")).is_err());
    }

    #[test]
    fn a_missing_dimension_gives_no_record() {
        let at = Timestamp::now();
        assert!(
            encode(
                "NS",
                Metric::Deliveries,
                &[(Dim::Channel, "email")],
                1.0,
                at
            )
            .is_none()
        );
    }

    #[test]
    fn validation_refuses_what_cloudwatch_would_drop_or_bill_unbounded() {
        let ok = encode(
            "NS",
            Metric::SendErrors,
            &[(Dim::Channel, "webhook"), (Dim::ErrorCode, "http_5xx")],
            1.0,
            Timestamp::now(),
        )
        .expect("record");
        assert!(validate(&ok).is_ok());
        for (from, to) in [
            ("\"http_5xx\"", "\"tgt-123\""),
            ("\"Count\"", "\"Seconds\""),
            ("\"SendErrors\":1.0", "\"SendErrors\":\"1\""),
            ("\"Namespace\":\"NS\"", "\"Namespace\":\"\""),
        ] {
            let bad = ok.replace(from, to);
            assert_ne!(bad, ok, "{from} is in {ok}");
            assert!(validate(&bad).is_err(), "{bad}");
        }
        assert!(validate("{\"msg\":\"a log line\"}").is_err());
    }

    #[test]
    fn error_codes_are_folded_into_a_closed_set() {
        assert_eq!(error_code("timeout"), "timeout");
        assert_eq!(error_code("invalid_auth"), "invalid_auth");
        assert_eq!(error_code("http_503"), "http_5xx");
        assert_eq!(error_code("upload_http_413"), "http_4xx");
        assert_eq!(error_code("http_429"), "http_429");
        assert_eq!(error_code("http_410_gone"), "http_410_gone");
        assert_eq!(error_code("some_new_slack_error"), "other");
        assert_eq!(error_code("tgt-8f3a"), "other");
        for code in ERROR_CODES {
            assert_eq!(error_code(code), *code);
        }
    }

    #[test]
    fn captured_records_sum_by_dimension() {
        let (m, captured) = Metrics::capture();
        m.count(
            Metric::Deliveries,
            &[(Dim::Channel, "email"), (Dim::Outcome, "delivered")],
        );
        m.count(
            Metric::Deliveries,
            &[(Dim::Channel, "slack"), (Dim::Outcome, "delivered")],
        );
        m.record(Metric::PdfBytes, &[], 2048.0);
        assert_eq!(
            captured.sum(Metric::Deliveries, &[(Dim::Outcome, "delivered")]),
            2.0
        );
        assert_eq!(
            captured.sum(Metric::Deliveries, &[(Dim::Channel, "email")]),
            1.0
        );
        assert_eq!(captured.sum(Metric::PdfBytes, &[]), 2048.0);
    }
}
