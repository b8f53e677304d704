//! links: the download-link function behind a Lambda function URL.
//! `GET /d/<token>` checks the signed token and answers 302 with a fresh,
//! short-lived presigned S3 URL, so links in emails, Slack and webhooks
//! outlive the credentials of the Lambda that sent them. A tampered,
//! malformed or expired token gets 403; nothing else is served.

use crate::blob::BlobStore;
use crate::domain::{LinkError, LinkSigner, Timestamp};
use aws_lambda_events::http::{HeaderMap, HeaderValue};
use aws_lambda_events::lambda_function_urls::{
    LambdaFunctionUrlRequest, LambdaFunctionUrlResponse,
};
use std::time::Duration;
use tracing::{info, warn};

/// Where links point: `<base>d/<token>`.
pub const PATH_PREFIX: &str = "/d/";

/// What the links function needs.
pub struct Deps {
    pub signer: LinkSigner,
    pub blobs: Box<dyn BlobStore>,
    /// Lifetime of each presigned URL handed out (short: it is used at once).
    pub presign_ttl: Duration,
}

/// Issues links for the deliver function.
#[derive(Debug, Clone)]
pub struct LinkIssuer {
    pub signer: LinkSigner,
    /// The function URL, e.g. `https://abc.lambda-url.eu-west-1.on.aws/`.
    pub base_url: String,
}

impl LinkIssuer {
    /// A link to `key` valid until `expires_at`.
    pub fn link(&self, key: &str, expires_at: Timestamp) -> String {
        format!(
            "{}{}{}",
            self.base_url.trim_end_matches('/'),
            PATH_PREFIX,
            self.signer.issue(key, expires_at)
        )
    }
}

fn respond(status: i64, location: Option<&str>, text: &str) -> LambdaFunctionUrlResponse {
    let mut headers = HeaderMap::new();
    headers.insert(
        "content-type",
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert("cache-control", HeaderValue::from_static("no-store"));
    headers.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    if let Some(l) = location.and_then(|l| HeaderValue::from_str(l).ok()) {
        headers.insert("location", l);
    }
    let mut r = LambdaFunctionUrlResponse::default();
    r.status_code = status;
    r.headers = headers;
    r.body = Some(format!("{text}\n"));
    r.is_base64_encoded = false;
    r
}

/// The Lambda handler.
pub async fn handle(deps: &Deps, req: LambdaFunctionUrlRequest) -> LambdaFunctionUrlResponse {
    handle_at(deps, req, Timestamp::now()).await
}

/// The handler with the clock passed in.
pub async fn handle_at(
    deps: &Deps,
    req: LambdaFunctionUrlRequest,
    now: Timestamp,
) -> LambdaFunctionUrlResponse {
    let method = req
        .request_context
        .http
        .method
        .as_deref()
        .unwrap_or("GET")
        .to_ascii_uppercase();
    let path = req.raw_path.as_deref().unwrap_or("/");
    let Some(token) = path.strip_prefix(PATH_PREFIX) else {
        return respond(404, None, "not found");
    };
    if method != "GET" && method != "HEAD" {
        return respond(405, None, "method not allowed");
    }
    let claim = match deps.signer.verify(token, now) {
        Ok(c) => c,
        Err(e) => {
            // The token is not logged: a valid-looking one is a credential.
            warn!(reason = %e, "download link refused");
            let text = match e {
                LinkError::Expired => "this link has expired",
                LinkError::Malformed | LinkError::BadSignature => "this link is not valid",
            };
            return respond(403, None, text);
        }
    };
    if !claim.key.starts_with("reports/") {
        warn!("download link for a key outside reports/ refused");
        return respond(403, None, "this link is not valid");
    }
    match deps.blobs.presign_get(&claim.key, deps.presign_ttl).await {
        Ok(url) => {
            info!(key = %claim.key, "download link used");
            respond(302, Some(&url), "found")
        }
        Err(e) => {
            warn!(error = %e, "cannot presign download");
            respond(503, None, "try again shortly")
        }
    }
}

impl Deps {
    /// Builds the deps from the environment `template.yaml` sets.
    pub async fn from_env() -> Result<Self, crate::config::ConfigError> {
        use crate::config::{required, seconds};
        let sdk = crate::aws::load().await;
        Ok(Self {
            signer: crate::config::link_signer()?,
            blobs: Box::new(crate::blob::s3::S3Blobs::new(
                crate::aws::s3(&sdk),
                required("REPORTS_BUCKET")?,
            )),
            presign_ttl: seconds("PRESIGN_TTL_SECONDS", 300)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blob::BlobError;
    use async_trait::async_trait;

    struct FakeBlobs;

    #[async_trait]
    impl BlobStore for FakeBlobs {
        async fn put(&self, _: &str, _: Vec<u8>, _: &str) -> Result<(), BlobError> {
            Ok(())
        }
        async fn get(&self, key: &str) -> Result<Vec<u8>, BlobError> {
            Err(BlobError::NotFound(key.into()))
        }
        async fn get_uri(&self, uri: &str) -> Result<Vec<u8>, BlobError> {
            Err(BlobError::NotFound(uri.into()))
        }
        async fn presign_get(&self, key: &str, ttl: Duration) -> Result<String, BlobError> {
            Ok(format!("https://s3.example/{key}?ttl={}", ttl.as_secs()))
        }
    }

    fn deps() -> Deps {
        Deps {
            signer: LinkSigner::from_list("0123456789abcdef0123456789abcdef").expect("key"),
            blobs: Box::new(FakeBlobs),
            presign_ttl: Duration::from_secs(300),
        }
    }

    fn get(path: &str) -> LambdaFunctionUrlRequest {
        let mut r = LambdaFunctionUrlRequest::default();
        r.raw_path = Some(path.into());
        r.request_context.http.method = Some("GET".into());
        r
    }

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_unix_millis(secs * 1000).expect("valid")
    }

    #[tokio::test]
    async fn valid_links_redirect_to_a_fresh_presigned_url() {
        let d = deps();
        let token = d.signer.issue("reports/r/e/report.pdf", at(2_000));
        let r = handle_at(&d, get(&format!("/d/{token}")), at(1_000)).await;
        assert_eq!(r.status_code, 302);
        assert_eq!(
            r.headers.get("location").and_then(|v| v.to_str().ok()),
            Some("https://s3.example/reports/r/e/report.pdf?ttl=300")
        );
    }

    #[tokio::test]
    async fn expired_tampered_and_foreign_links_get_403() {
        let d = deps();
        let token = d.signer.issue("reports/a.pdf", at(2_000));
        assert_eq!(
            handle_at(&d, get(&format!("/d/{token}")), at(2_000))
                .await
                .status_code,
            403
        );
        let mut tampered = token.clone();
        tampered.insert(3, 'x');
        assert_eq!(
            handle_at(&d, get(&format!("/d/{tampered}")), at(0))
                .await
                .status_code,
            403
        );
        let outside = d.signer.issue("incoming/secret.csv", at(2_000));
        assert_eq!(
            handle_at(&d, get(&format!("/d/{outside}")), at(0))
                .await
                .status_code,
            403
        );
        assert_eq!(handle_at(&d, get("/other"), at(0)).await.status_code, 404);
        let mut post = get(&format!("/d/{token}"));
        post.request_context.http.method = Some("POST".into());
        assert_eq!(handle_at(&d, post, at(0)).await.status_code, 405);
    }
}
