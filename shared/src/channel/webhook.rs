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
    client: reqwest::Client,
    allow_private_hosts: bool,
}

impl WebhookChannel {
    /// Builds the client once. `allow_private_hosts` is the local-testing
    /// switch `ALLOW_PRIVATE_WEBHOOK_TARGETS`, off by default.
    pub fn new(allow_private_hosts: bool) -> Result<Self, reqwest::Error> {
        Ok(Self {
            client: vetted_client(allow_private_hosts, TIMEOUT)?,
            allow_private_hosts,
        })
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
    pub attempt_id: &'a str,
    pub report: ReportRef<'a>,
    pub execution: ExecutionRef<'a>,
    /// The formats the target asked for (PDF by default).
    pub files: Vec<FileRef<'a>>,
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
        let event = WebhookEvent {
            kind: "report.ready",
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
        };
        let body = serde_json::to_vec(&event)
            .map_err(|e| DeliveryError::permanent("invalid_payload", e.to_string()))?;
        let timestamp = ctx.now.unix_millis() / 1000;
        let mut req = self
            .client
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

/// Classifies a failed request: a refused address is permanent, a timeout or
/// network failure temporary. The URL is dropped from the message: webhook,
/// incoming-webhook and upload URLs can carry secrets.
pub fn send_error(e: reqwest::Error) -> DeliveryError {
    let e = e.without_url();
    if e.is_timeout() {
        DeliveryError::temporary("timeout", "receiver did not answer in time")
    } else if e.is_connect() && is_vetting_error(&e) {
        DeliveryError::permanent("forbidden_address", error_chain(&e))
    } else {
        DeliveryError::temporary("network", error_chain(&e))
    }
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
}
