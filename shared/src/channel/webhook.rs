//! Webhook channel: POSTs a JSON event signed per the Standard Webhooks spec,
//! through a client that vets every resolved address (SSRF) and never
//! follows redirects.

use super::{Channel, DeliveryContext, DeliveryError, Receipt, error_chain};
use crate::domain::connection::Credentials;
use crate::domain::url::{WebhookUrl, is_forbidden_ip};
use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use secrecy::ExposeSecret;
use serde::Serialize;
use sha2::Sha256;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// How long a receiver gets to answer.
pub const TIMEOUT: Duration = Duration::from_secs(15);

/// The webhook channel.
pub struct WebhookChannel {
    client: LazyClient,
    allow_private_hosts: bool,
}

/// A [`vetted_client`] built on first use and shared by clones: loading
/// the TLS root store is most of what a client costs at start-up, and an
/// instance that only sends email never needs one.
#[derive(Clone)]
pub struct LazyClient {
    built: Arc<std::sync::OnceLock<Result<reqwest::Client, String>>>,
    allow_private_hosts: bool,
    timeout: Duration,
}

impl LazyClient {
    /// A client to be built as [`vetted_client`] builds it.
    pub fn new(allow_private_hosts: bool, timeout: Duration) -> Self {
        Self {
            built: Arc::default(),
            allow_private_hosts,
            timeout,
        }
    }

    /// The client, built now if it is the first use.
    pub fn get(&self) -> Result<&reqwest::Client, DeliveryError> {
        self.built
            .get_or_init(|| {
                vetted_client(self.allow_private_hosts, self.timeout).map_err(|e| e.to_string())
            })
            .as_ref()
            .map_err(|e| DeliveryError::temporary("http_client", e.clone()))
    }
}

impl WebhookChannel {
    /// Over a client shared with other channels (one TLS root store per
    /// process, loaded at the first send). `allow_private_hosts` is the
    /// local-testing switch `ALLOW_PRIVATE_WEBHOOK_TARGETS`, off by default.
    pub fn with_client(client: LazyClient, allow_private_hosts: bool) -> Self {
        Self {
            client,
            allow_private_hosts,
        }
    }
}

/// An HTTP client for URLs that users supply: every resolved address is
/// vetted, redirects are never followed, proxies are ignored.
pub fn vetted_client(
    allow_private_hosts: bool,
    timeout: Duration,
) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .connect_timeout(Duration::from_secs(5))
        .no_proxy()
        .dns_resolver(Arc::new(VettingResolver {
            allow_private_hosts,
        }))
        .user_agent(concat!("report-delivery/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// Resolves names and refuses the whole answer if any address is not
/// public. The connection then goes to these vetted addresses, so there is
/// no second lookup for a DNS-rebinding attack to change.
struct VettingResolver {
    allow_private_hosts: bool,
}

impl Resolve for VettingResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow = self.allow_private_hosts;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if !allow && let Some(bad) = addrs.iter().find(|a| is_forbidden_ip(a.ip())) {
                return Err(Box::new(ForbiddenAddress { host, ip: bad.ip() })
                    as Box<dyn std::error::Error + Send + Sync>);
            }
            if addrs.is_empty() {
                return Err(format!("{host} did not resolve").into());
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// A host resolved to an address webhooks must not reach.
#[derive(Debug, thiserror::Error)]
#[error("{host} resolves to a non-public address {ip}")]
pub struct ForbiddenAddress {
    pub host: String,
    pub ip: std::net::IpAddr,
}

/// The JSON body receivers get.
#[derive(Debug, Serialize)]
pub struct WebhookEvent<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The event schema's version: `1.1` adds the optional `preview` (and
    /// `chart`) to 1.0; additions never change or remove a field.
    pub schema_version: &'static str,
    pub attempt_id: &'a str,
    pub report: ReportRef<'a>,
    pub execution: ExecutionRef<'a>,
    /// The formats the target asked for (PDF by default).
    pub files: Vec<FileRef<'a>>,
    /// The first rows, when the target opted in (`preview_rows`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preview: Option<PreviewRef<'a>>,
    /// The chart picture, when the execution has a chart.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chart: Option<ChartRef<'a>>,
}

/// The chart picture in a webhook event: a PNG file with its own link.
#[derive(Debug, Serialize)]
pub struct ChartRef<'a> {
    pub title: &'a str,
    #[serde(flatten)]
    pub file: FileRef<'a>,
}

/// The event's schema version.
pub const SCHEMA_VERSION: &str = "1.1";

/// The data preview in a webhook event.
#[derive(Debug, Serialize)]
pub struct PreviewRef<'a> {
    pub columns: &'a [crate::render::preview::PreviewColumn],
    /// The first rows as typed values (strings longer than 200 characters
    /// are cut).
    pub rows: &'a [Vec<serde_json::Value>],
    /// Each column's total (`null` for columns without one), when the
    /// report has numeric columns.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub totals: Option<&'a [serde_json::Value]>,
    /// Rows in the whole report.
    pub row_count: u64,
    /// Columns of the report left out of the preview.
    pub omitted_columns: usize,
}

/// The report in a webhook event.
#[derive(Debug, Serialize)]
pub struct ReportRef<'a> {
    pub id: &'a str,
    pub name: &'a str,
}

/// The execution in a webhook event.
#[derive(Debug, Serialize)]
pub struct ExecutionRef<'a> {
    pub id: &'a str,
    pub generated_at: String,
    pub time_zone: &'a str,
    pub row_count: u64,
}

/// The file in a webhook event.
#[derive(Debug, Serialize)]
pub struct FileRef<'a> {
    pub format: &'static str,
    pub download_url: &'a str,
    pub expires_at: String,
    pub content_type: &'a str,
    pub size: u64,
    pub sha256: &'a str,
}

/// The `report.ready` event for a send.
pub fn event<'a>(ctx: &'a DeliveryContext<'_>) -> WebhookEvent<'a> {
    WebhookEvent {
        kind: "report.ready",
        schema_version: SCHEMA_VERSION,
        preview: ctx.preview_rows().map(|(p, n)| PreviewRef {
            columns: &p.columns,
            rows: &p.values[..n.min(p.values.len())],
            totals: p.total_values.as_deref(),
            row_count: p.row_count,
            omitted_columns: p.hidden_columns,
        }),
        chart: ctx.chart.map(|c| ChartRef {
            title: &c.title,
            file: FileRef {
                format: "png",
                download_url: &c.download_url,
                expires_at: ctx.link_expires_at.to_string(),
                content_type: &c.file.content_type,
                size: c.file.size,
                sha256: &c.file.sha256,
            },
        }),
        attempt_id: &ctx.attempt.id,
        report: ReportRef {
            id: &ctx.execution.report_id,
            name: &ctx.execution.report_name,
        },
        execution: ExecutionRef {
            id: &ctx.execution.id,
            generated_at: ctx.execution.generated_at.to_string(),
            time_zone: &ctx.execution.time_zone,
            row_count: ctx.execution.row_count,
        },
        files: ctx
            .files
            .iter()
            .map(|f| FileRef {
                format: f.format.as_str(),
                download_url: &f.download_url,
                expires_at: ctx.link_expires_at.to_string(),
                content_type: &f.file.content_type,
                size: f.file.size,
                sha256: &f.file.sha256,
            })
            .collect(),
    }
}

/// Standard Webhooks signature header value for one or more `whsec_` secrets:
/// `v1,<base64 HMAC-SHA256(id.timestamp.body)>`, space-separated.
pub fn sign(secrets: &[&str], id: &str, timestamp: i64, body: &[u8]) -> Result<String, String> {
    let mut parts = Vec::with_capacity(secrets.len());
    for secret in secrets {
        let encoded = secret
            .strip_prefix("whsec_")
            .ok_or("signing secret must start with whsec_")?;
        let key = STANDARD
            .decode(encoded)
            .map_err(|_| "signing secret is not base64 after whsec_")?;
        if key.len() < 24 {
            return Err("signing secret must be at least 24 bytes".into());
        }
        let mut mac = Hmac::<Sha256>::new_from_slice(&key).map_err(|e| e.to_string())?;
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        parts.push(format!(
            "v1,{}",
            STANDARD.encode(mac.finalize().into_bytes())
        ));
    }
    Ok(parts.join(" "))
}

/// Parses `Retry-After` given in seconds.
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

/// Maps a receiver's status code.
pub fn classify(status: u16, retry_after: Option<Duration>) -> Result<(), DeliveryError> {
    let code = format!("http_{status}");
    match status {
        200..=299 => Ok(()),
        408 | 425 | 429 | 500..=599 => Err(DeliveryError::Temporary {
            message: format!("receiver answered {status}"),
            code,
            retry_after,
        }),
        410 => Err(DeliveryError::gone(
            "http_410_gone",
            "receiver answered 410 Gone; the target should be disabled",
        )),
        _ => Err(DeliveryError::permanent(
            code,
            format!("receiver answered {status}"),
        )),
    }
}

#[async_trait]
impl Channel for WebhookChannel {
    async fn deliver(&self, ctx: &DeliveryContext<'_>) -> Result<Receipt, DeliveryError> {
        let crate::domain::TargetConfig::Webhook(config) = &ctx.target.config else {
            return Err(DeliveryError::permanent(
                "invalid_target_config",
                "target is not a webhook",
            ));
        };
        // Stored URLs are checked again with today's rules.
        let url = WebhookUrl::parse(config.url.as_str(), self.allow_private_hosts)
            .map_err(|e| DeliveryError::permanent("forbidden_url", e.to_string()))?;
        let event = event(ctx);
        let body = serde_json::to_vec(&event)
            .map_err(|e| DeliveryError::permanent("invalid_payload", e.to_string()))?;
        let timestamp = ctx.now.unix_millis() / 1000;
        let mut req = self
            .client
            .get()?
            .post(url.as_url().clone())
            .header("content-type", "application/json")
            .header("webhook-id", &ctx.attempt.id)
            .header("webhook-timestamp", timestamp.to_string());
        match ctx.connection.map(|c| &c.credentials) {
            Some(Credentials::WebhookSigning { secrets }) => {
                let secrets: Vec<&str> = secrets.iter().map(|s| s.expose_secret()).collect();
                let signature = sign(&secrets, &ctx.attempt.id, timestamp, &body)
                    .map_err(|e| DeliveryError::permanent("invalid_credentials", e))?;
                req = req.header("webhook-signature", signature);
            }
            Some(other) => {
                return Err(DeliveryError::permanent(
                    "invalid_credentials",
                    format!("webhook target uses a {} connection", other.kind()),
                ));
            }
            None => {}
        }
        let response = req.body(body).send().await.map_err(send_error)?;
        let status = response.status().as_u16();
        classify(status, retry_after(response.headers()))?;
        let mut receipt = Receipt::default();
        receipt
            .metadata
            .insert("http_status".into(), status.to_string());
        Ok(receipt)
    }
}

/// Classifies a failed request: a refused address or a failed TLS handshake
/// (bad certificate, no common protocol) is permanent, a timeout or network
/// failure temporary. The URL is dropped from the message: webhook,
/// incoming-webhook and upload URLs can carry secrets.
pub fn send_error(e: reqwest::Error) -> DeliveryError {
    let e = e.without_url();
    if e.is_timeout() {
        DeliveryError::temporary("timeout", "receiver did not answer in time")
    } else if e.is_connect() && is_vetting_error(&e) {
        DeliveryError::permanent("forbidden_address", error_chain(&e))
    } else if is_tls_failure(&e) {
        DeliveryError::permanent("tls_error", error_chain(&e))
    } else {
        DeliveryError::temporary("network", error_chain(&e))
    }
}

/// Whether any error in the cause chain is a TLS handshake failure that
/// retrying will not fix. rustls errors reach us wrapped in `io::Error`
/// (whose `source` skips them), so each level is judged by its text.
pub fn is_tls_failure(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(e);
    while let Some(err) = source {
        if is_tls_failure_text(&err.to_string()) {
            return true;
        }
        source = err.source();
    }
    false
}

/// Whether an error text is one of rustls' permanent handshake failures:
/// the peer's certificate is invalid (unknown issuer, expired, wrong name,
/// revoked…), the peer refused ours or the handshake (fatal alerts about
/// certificates, versions or parameters), the peer shares no protocol
/// version or cipher suite with us, or it does not speak TLS at all.
pub fn is_tls_failure_text(text: &str) -> bool {
    const FAILURES: [&str; 7] = [
        "invalid peer certificate",
        "peer sent no certificates",
        "invalid certificate revocation list",
        "peer is incompatible",
        "presented server name type wasn't supported",
        "peer doesn't support any known protocol",
        "received corrupt message",
    ];
    const FATAL_ALERTS: [&str; 14] = [
        "BadCertificate",
        "UnsupportedCertificate",
        "CertificateRevoked",
        "CertificateExpired",
        "CertificateUnknown",
        "CertificateRequired",
        "UnknownCA",
        "AccessDenied",
        "HandshakeFailure",
        "ProtocolVersion",
        "InsufficientSecurity",
        "IllegalParameter",
        "UnrecognisedName",
        "NoApplicationProtocol",
    ];
    FAILURES.iter().any(|f| text.contains(f))
        || text
            .split("received fatal alert: ")
            .skip(1)
            .any(|rest| FATAL_ALERTS.iter().any(|alert| rest.starts_with(alert)))
}

/// Whether the resolver refused the host (found anywhere in the cause chain).
fn is_vetting_error(e: &reqwest::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if err.is::<ForbiddenAddress>() {
            return true;
        }
        source = err.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_a_target_that_opted_in_when_the_event_is_built_then_it_carries_typed_preview_rows() {
        use crate::contract::{Column, ColumnType, Table};
        use crate::domain::Timestamp;
        use serde_json::json;
        let table = Table {
            columns: vec![
                Column::new("City", ColumnType::String),
                Column::new("Orders", ColumnType::Integer),
            ],
            rows: (0..5)
                .map(|i| vec![json!(format!("c{i}")), json!(i * 10)])
                .collect(),
        };
        let sample = |preview_rows| {
            crate::channel::sample::Sample::new(
                crate::channel::sample::SampleReport {
                    execution_id: "exec-1",
                    report_name: "R",
                    generated_at: Timestamp::parse("2026-11-27T05:19:00Z").expect("t"),
                    time_zone: "Europe/Zurich",
                    parameters: &Default::default(),
                    rows: &table,
                },
                crate::channel::sample::target(
                    "webhook",
                    json!({"url": "https://hooks.example.com/x"}),
                    preview_rows,
                )
                .expect("target"),
            )
            .expect("sample")
        };
        let opted_in = sample(Some(3));
        let body = serde_json::to_value(event(&opted_in.ctx())).expect("json");
        assert_eq!(body["schema_version"], "1.1");
        assert_eq!(
            body["preview"]["columns"][1],
            json!({"name": "Orders", "type": "integer"})
        );
        assert_eq!(
            body["preview"]["rows"],
            json!([["c0", 0], ["c1", 10], ["c2", 20]])
        );
        assert_eq!(body["preview"]["totals"], json!([null, 100]));
        assert_eq!(body["preview"]["row_count"], 5);
        // Times stay machine-readable UTC.
        assert_eq!(
            body["execution"]["generated_at"],
            "2026-11-27T05:19:00.000Z"
        );
        let default = sample(None);
        let body = serde_json::to_value(event(&default.ctx())).expect("json");
        assert!(body.get("preview").is_none(), "webhooks opt in");
        assert_eq!(body["schema_version"], "1.1");
    }

    #[test]
    fn status_codes_map_to_categories() {
        assert!(classify(204, None).is_ok());
        for s in [408, 425, 429, 500, 502, 503] {
            assert!(classify(s, None).expect_err("fails").is_retryable(), "{s}");
        }
        for s in [400, 401, 403, 404, 410, 422] {
            assert!(!classify(s, None).expect_err("fails").is_retryable(), "{s}");
        }
        let e = classify(429, Some(Duration::from_secs(7))).expect_err("fails");
        assert_eq!(e.retry_after(), Some(Duration::from_secs(7)));
    }

    #[test]
    fn signature_matches_the_standard_webhooks_reference_vector() {
        // Test vector from the Standard Webhooks reference implementations.
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let sig = sign(
            &[secret],
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        )
        .expect("signs");
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn short_or_malformed_secrets_are_refused() {
        assert!(sign(&["nope"], "id", 1, b"{}").is_err());
        assert!(sign(&["whsec_c2hvcnQ="], "id", 1, b"{}").is_err());
    }

    /// One level of an error chain, as hyper and reqwest build them.
    #[derive(Debug)]
    struct Layer(
        &'static str,
        Option<Box<dyn std::error::Error + Send + Sync>>,
    );

    impl std::fmt::Display for Layer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for Layer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|e| e as _)
        }
    }

    /// `error sending request` → `client error (Connect)` → io error `text`.
    fn chain(text: &str) -> Layer {
        let io = std::io::Error::other(text.to_owned());
        Layer(
            "error sending request",
            Some(Box::new(Layer(
                "client error (Connect)",
                Some(Box::new(io)),
            ))),
        )
    }

    #[test]
    fn given_certificate_and_handshake_failures_deep_in_the_chain_when_classified_then_they_are_tls_failures()
     {
        for text in [
            "invalid peer certificate: UnknownIssuer",
            "invalid peer certificate: certificate expired: verification time 1 (UNIX), but certificate is not valid after 0 (1 seconds ago)",
            "invalid peer certificate: certificate not valid for name \"example.com\"; certificate is only valid for localhost",
            "invalid peer certificate: BadSignature",
            "received fatal alert: HandshakeFailure",
            "received fatal alert: ProtocolVersion",
            "received fatal alert: BadCertificate",
            "peer is incompatible: NoCipherSuitesInCommon",
            "received corrupt message of type InvalidContentType",
        ] {
            assert!(is_tls_failure(&chain(text)), "{text}");
        }
    }

    #[test]
    fn given_network_failures_and_hosts_named_like_tls_words_when_classified_then_they_are_not_tls_failures()
     {
        for text in [
            "tcp connect error: Connection refused (os error 111)",
            "dns error: certificate.example.com did not resolve",
            "connection reset by peer",
            "received fatal alert: InternalError",
            "peer closed connection without sending TLS close_notify",
            "unexpected end of file",
        ] {
            assert!(!is_tls_failure(&chain(text)), "{text}");
        }
    }

    #[tokio::test]
    async fn given_a_receiver_that_does_not_speak_tls_when_sent_to_then_the_failure_is_permanent_tls_error()
     {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        // Given a local server answering plain HTTP on the port we call over https
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            if let Ok((mut socket, _)) = listener.accept().await {
                let mut buf = [0_u8; 1024];
                let _ = socket.read(&mut buf).await;
                let _ = socket
                    .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
                    .await;
            }
        });
        // When a webhook is sent there
        let client = vetted_client(true, Duration::from_secs(5)).expect("client");
        let err = client
            .post(format!("https://127.0.0.1:{port}/hook"))
            .send()
            .await
            .expect_err("no TLS handshake");
        // Then it is a permanent TLS error, without the URL
        let e = send_error(err);
        assert_eq!(e.code(), "tls_error", "{e}");
        assert!(!e.is_retryable());
        assert!(!e.message().contains("/hook"), "{e}");
    }
}
