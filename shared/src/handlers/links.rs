//! links: the download-link function behind a Lambda function URL.
//! `GET /d/<token>` checks the signed token and answers 302 with a fresh,
//! short-lived presigned S3 URL, so links in emails, Slack and webhooks
//! outlive the credentials of the Lambda that sent them. A tampered,
//! malformed or expired token gets 403. `/u/<token>` is one-click
//! unsubscribe (RFC 8058; see [`super::unsubscribe`]).

use crate::blob::BlobStore;
use crate::domain::{LinkClaim, LinkError, LinkSigner, Timestamp};
use async_trait::async_trait;
use aws_lambda_events::http::{HeaderMap, HeaderValue};
use aws_lambda_events::lambda_function_urls::{
    LambdaFunctionUrlRequest, LambdaFunctionUrlResponse,
};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// Where links point: `<base>d/<token>`.
pub const PATH_PREFIX: &str = "/d/";

/// Where the signing keys live (a comma-separated list, newest first).
#[async_trait]
pub trait KeySource: Send + Sync {
    /// Reads the current list.
    async fn fetch(&self) -> Result<String, String>;
}

/// Keys read from a Secrets Manager secret.
pub struct SecretsManagerKeys {
    client: aws_sdk_secretsmanager::Client,
    secret_id: String,
}

impl SecretsManagerKeys {
    /// Reads `secret_id` (an ARN or name).
    pub fn new(client: aws_sdk_secretsmanager::Client, secret_id: String) -> Self {
        Self { client, secret_id }
    }
}

#[async_trait]
impl KeySource for SecretsManagerKeys {
    async fn fetch(&self) -> Result<String, String> {
        let out = self
            .client
            .get_secret_value()
            .secret_id(&self.secret_id)
            .send()
            .await
            .map_err(|e| {
                // The error names the secret, never its value.
                aws_sdk_secretsmanager::error::DisplayErrorContext(e).to_string()
            })?;
        out.secret_string
            .ok_or_else(|| "the link signing secret has no string value".to_owned())
    }
}

/// The signing keys, loaded at start-up and re-read (at most once per
/// `min_refresh`) when a token's signature matches none of them, so a
/// rotated key is picked up without a redeploy.
pub struct KeyRing {
    source: Box<dyn KeySource>,
    /// Read at the first request, not at start-up, so a cold start makes
    /// no Secrets Manager call.
    current: RwLock<Option<LinkSigner>>,
    refreshed: Mutex<Instant>,
    /// When the first read last failed: requests inside `min_refresh` of it
    /// get 503 without reading again.
    failed: Mutex<Option<Instant>>,
    min_refresh: Duration,
}

/// Why a link was not honoured.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Refusal {
    /// The token is bad or expired: 403.
    #[error(transparent)]
    Link(#[from] LinkError),
    /// The keys could not be read: 503, try again.
    #[error("the link signing keys cannot be read: {0}")]
    KeysUnavailable(String),
}

impl KeyRing {
    /// A ring that reads its keys at the first use.
    pub fn lazy(source: Box<dyn KeySource>, min_refresh: Duration) -> Self {
        Self {
            source,
            current: RwLock::new(None),
            refreshed: Mutex::new(Instant::now()),
            failed: Mutex::new(None),
            min_refresh,
        }
    }

    /// A ring with its keys read now.
    pub async fn load(source: Box<dyn KeySource>, min_refresh: Duration) -> Result<Self, String> {
        let ring = Self::lazy(source, min_refresh);
        ring.loaded().await?;
        Ok(ring)
    }

    /// The current signer (the newest key signs), once the keys were read.
    pub fn signer(&self) -> Option<LinkSigner> {
        match self.current.read() {
            Ok(s) => s.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The signer, reading the keys if this is the first use.
    async fn loaded(&self) -> Result<LinkSigner, String> {
        if let Some(s) = self.signer() {
            return Ok(s);
        }
        let recent = self
            .failed
            .lock()
            .ok()
            .and_then(|f| *f)
            .is_some_and(|at| at.elapsed() < self.min_refresh);
        if recent {
            return Err("the last read failed moments ago".into());
        }
        let read = self
            .source
            .fetch()
            .await
            .and_then(|list| LinkSigner::from_list(&list));
        let signer = match read {
            Ok(s) => s,
            Err(e) => {
                if let Ok(mut f) = self.failed.lock() {
                    *f = Some(Instant::now());
                }
                return Err(e);
            }
        };
        if let Ok(mut c) = self.current.write() {
            *c = Some(signer.clone());
        }
        if let Ok(mut t) = self.refreshed.lock() {
            *t = Instant::now();
        }
        Ok(signer)
    }

    /// Verifies a token, reading the keys at the first use and re-reading
    /// them once if none matched.
    pub async fn verify(&self, token: &str, now: Timestamp) -> Result<LinkClaim, Refusal> {
        self.check(|s| s.verify(token, now)).await
    }

    /// Verifies an unsubscribe token: its target id and address digest.
    pub async fn verify_unsubscribe(&self, token: &str) -> Result<(String, String), Refusal> {
        self.check(|s| s.verify_unsubscribe(token)).await
    }

    /// Runs `verify` with the keys, reading them at the first use and
    /// re-reading them once (at most every `min_refresh`) if none matched.
    async fn check<T>(
        &self,
        verify: impl Fn(&LinkSigner) -> Result<T, LinkError>,
    ) -> Result<T, Refusal> {
        let signer = self.loaded().await.map_err(Refusal::KeysUnavailable)?;
        let first = verify(&signer);
        if !matches!(first, Err(LinkError::BadSignature)) {
            return Ok(first?);
        }
        let due = self
            .refreshed
            .lock()
            .map(|mut t| {
                let due = t.elapsed() >= self.min_refresh;
                if due {
                    *t = Instant::now();
                }
                due
            })
            .unwrap_or(false);
        if !due {
            return Ok(first?);
        }
        match self
            .source
            .fetch()
            .await
            .and_then(|l| LinkSigner::from_list(&l))
        {
            Ok(fresh) => {
                let result = verify(&fresh);
                if let Ok(mut c) = self.current.write() {
                    *c = Some(fresh);
                }
                Ok(result?)
            }
            Err(e) => {
                warn!(error = %e, "could not re-read the link signing keys");
                Ok(first?)
            }
        }
    }
}

/// What the links function needs.
pub struct Deps {
    pub keys: KeyRing,
    pub blobs: Box<dyn BlobStore>,
    /// Lifetime of each presigned URL handed out (short: it is used at once).
    pub presign_ttl: Duration,
    /// The longest link deliver issues (`DOWNLOAD_LINK_TTL_SECONDS`): a
    /// token that expires later is refused.
    pub max_link_ttl: Duration,
    /// For `/u/<token>` (one-click unsubscribe); `None` serves no such
    /// route.
    pub unsubscribe: Option<crate::handlers::unsubscribe::Stores>,
}

/// Issues links for the deliver function. The signing keys are read on
/// first use, not at start-up, so a cold start makes no Secrets Manager
/// call (deliver signs with the newest key; after a rotation ("new,old")
/// the links function accepts both).
pub struct LinkIssuer {
    signer: tokio::sync::OnceCell<LinkSigner>,
    source: Box<dyn KeySource>,
    /// The function URL, e.g. `https://abc.lambda-url.eu-west-1.on.aws/`.
    pub base_url: String,
    /// Where unsubscribe links point: the same function URL on AWS
    /// (`UNSUBSCRIBE_BASE_URL` overrides it; the local stack's is its
    /// HTTPS front).
    pub unsubscribe_base: String,
}

impl std::fmt::Debug for LinkIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkIssuer")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

impl LinkIssuer {
    /// An issuer that reads its keys from `source` on first use.
    pub fn lazy(source: Box<dyn KeySource>, base_url: String) -> Self {
        Self {
            signer: tokio::sync::OnceCell::new(),
            source,
            unsubscribe_base: base_url.clone(),
            base_url,
        }
    }

    /// A link to `key` valid until `expires_at`; fails (temporarily) when
    /// the keys cannot be read.
    pub async fn link(&self, key: &str, expires_at: Timestamp) -> Result<String, String> {
        let signer = self.signer().await?;
        Ok(format!(
            "{}{}{}",
            self.base_url.trim_end_matches('/'),
            PATH_PREFIX,
            signer.issue(key, expires_at)
        ))
    }
}

impl LinkIssuer {
    /// The signer, reading the keys at the first use.
    async fn signer(&self) -> Result<&LinkSigner, String> {
        self.signer
            .get_or_try_init(|| async { LinkSigner::from_list(&self.source.fetch().await?) })
            .await
    }

    /// The RFC 8058 unsubscribe URL of `address` for `target_id`.
    pub async fn unsubscribe_link(&self, target_id: &str, address: &str) -> Result<String, String> {
        let signer = self.signer().await?;
        Ok(format!(
            "{}{}{}",
            self.unsubscribe_base.trim_end_matches('/'),
            crate::handlers::unsubscribe::PATH_PREFIX,
            signer.issue_unsubscribe(target_id, address)
        ))
    }
}

pub(crate) fn respond(
    status: i64,
    location: Option<&str>,
    text: &str,
) -> LambdaFunctionUrlResponse {
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

/// Who asked: the caller's address and user agent (as the function URL
/// saw them), cut to a sane length for the log.
pub(crate) struct Visitor {
    pub(crate) ip: String,
    pub(crate) agent: String,
}

impl Visitor {
    pub(crate) fn of(req: &LambdaFunctionUrlRequest) -> Self {
        let http = &req.request_context.http;
        let cut = |s: Option<&str>| -> String {
            s.unwrap_or("-")
                .chars()
                .filter(|c| !c.is_control())
                .take(200)
                .collect()
        };
        Self {
            ip: cut(http.source_ip.as_deref()),
            agent: cut(http.user_agent.as_deref()),
        }
    }
}

/// The access log's sampling: every request is logged up to
/// [`AccessLog::FULL_PER_SECOND`] a second; past that (a flood), one in
/// [`AccessLog::ONE_IN`], which says how many it stands for.
struct AccessLog {
    window: Mutex<(i64, u64)>,
}

impl AccessLog {
    const FULL_PER_SECOND: u64 = 20;
    const ONE_IN: u64 = 100;

    /// `Some(n)`: log this request, standing for `n` requests.
    fn admit(&self, now: Timestamp) -> Option<u64> {
        let second = now.unix_millis() / 1000;
        let Ok(mut w) = self.window.lock() else {
            return Some(1);
        };
        if w.0 != second {
            *w = (second, 0);
        }
        w.1 += 1;
        sample(w.1)
    }
}

/// The sampling rule for the `n`th request of a second.
fn sample(n: u64) -> Option<u64> {
    if n <= AccessLog::FULL_PER_SECOND {
        Some(1)
    } else if (n - AccessLog::FULL_PER_SECOND).is_multiple_of(AccessLog::ONE_IN) {
        Some(AccessLog::ONE_IN)
    } else {
        None
    }
}

static ACCESS_LOG: AccessLog = AccessLog {
    window: Mutex::new((0, 0)),
};

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
    if let (Some(token), Some(stores)) = (
        path.strip_prefix(crate::handlers::unsubscribe::PATH_PREFIX),
        &deps.unsubscribe,
    ) {
        return crate::handlers::unsubscribe::handle(&deps.keys, stores, &method, token, &req)
            .await;
    }
    let Some(token) = path.strip_prefix(PATH_PREFIX) else {
        return respond(404, None, "not found");
    };
    // GET only: the presigned URL it redirects to is a GET URL.
    if method != "GET" {
        return respond(405, None, "method not allowed");
    }
    let who = Visitor::of(&req);
    let verified = deps.keys.verify(token, now).await;
    let claim = match verified.and_then(|c| Ok(c.within(now, deps.max_link_ttl)?)) {
        Ok(c) => c,
        Err(Refusal::KeysUnavailable(error)) => {
            warn!(%error, "download link not checked: keys unavailable");
            return respond(503, None, "try again shortly");
        }
        Err(Refusal::Link(e)) => {
            // The token is not logged: a valid-looking one is a credential.
            if let Some(sampled) = ACCESS_LOG.admit(now) {
                warn!(reason = %e, source_ip = %who.ip, user_agent = %who.agent, sampled, "download link refused");
            }
            let text = match e {
                LinkError::Expired => "this link has expired",
                LinkError::Malformed | LinkError::BadSignature | LinkError::BeyondLifetime => {
                    "this link is not valid"
                }
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
            if let Some(sampled) = ACCESS_LOG.admit(now) {
                info!(key = %claim.key, source_ip = %who.ip, user_agent = %who.agent, sampled, "download link used");
            }
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
        use crate::config::{required, seconds, tables};
        let sdk = crate::aws::load().await;
        let store = crate::store::dynamo::DynamoStore::new(crate::aws::dynamodb(&sdk), tables()?);
        Ok(Self {
            keys: link_keys(&sdk)?,
            blobs: Box::new(crate::blob::s3::S3Blobs::new(
                crate::aws::s3(&sdk),
                required("REPORTS_BUCKET")?,
            )),
            presign_ttl: seconds("PRESIGN_TTL_SECONDS", 300)?,
            max_link_ttl: seconds("DOWNLOAD_LINK_TTL_SECONDS", 7 * 24 * 3600)?,
            unsubscribe: Some(crate::handlers::unsubscribe::Stores {
                targets: Box::new(store.clone()),
                suppressions: Box::new(store),
                metrics: crate::metrics::Metrics::from_env(),
            }),
        })
    }
}

/// The download-link signing keys, from the Secrets Manager secret named
/// by `LINK_SIGNING_SECRET_ARN` (a comma-separated list, newest first). The
/// value is never logged.
pub fn link_keys(sdk: &aws_config::SdkConfig) -> Result<KeyRing, crate::config::ConfigError> {
    let source = SecretsManagerKeys::new(
        aws_sdk_secretsmanager::Client::new(sdk),
        crate::config::required("LINK_SIGNING_SECRET_ARN")?,
    );
    Ok(KeyRing::lazy(
        Box::new(source),
        std::time::Duration::from_secs(60),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blob::BlobError;
    use std::sync::Arc;

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

    const KEY: &str = "0123456789abcdef0123456789abcdef";
    const NEW: &str = "fedcba9876543210fedcba9876543210";

    /// A key source whose list can change, counting reads.
    struct FakeKeys(Arc<Mutex<(String, usize)>>);

    #[async_trait]
    impl KeySource for FakeKeys {
        async fn fetch(&self) -> Result<String, String> {
            let mut g = self.0.lock().map_err(|e| e.to_string())?;
            g.1 += 1;
            if g.0.is_empty() {
                return Err("secret unreadable".into());
            }
            Ok(g.0.clone())
        }
    }

    async fn ring(list: &str, min_refresh: Duration) -> (KeyRing, Arc<Mutex<(String, usize)>>) {
        let state = Arc::new(Mutex::new((list.to_owned(), 0)));
        let ring = KeyRing::load(Box::new(FakeKeys(state.clone())), min_refresh)
            .await
            .expect("keys");
        (ring, state)
    }

    async fn deps() -> Deps {
        Deps {
            keys: ring(KEY, Duration::from_secs(60)).await.0,
            blobs: Box::new(FakeBlobs),
            presign_ttl: Duration::from_secs(300),
            max_link_ttl: Duration::from_secs(7 * 24 * 3600),
            unsubscribe: None,
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
        let d = deps().await;
        let token = d
            .keys
            .signer()
            .expect("loaded")
            .issue("reports/r/e/report.pdf", at(2_000));
        let r = handle_at(&d, get(&format!("/d/{token}")), at(1_000)).await;
        assert_eq!(r.status_code, 302);
        assert_eq!(
            r.headers.get("location").and_then(|v| v.to_str().ok()),
            Some("https://s3.example/reports/r/e/report.pdf?ttl=300")
        );
    }

    #[tokio::test]
    async fn a_link_that_outlives_the_configured_lifetime_is_refused() {
        let d = deps().await;
        let signer = d.keys.signer().expect("loaded");
        let week = 7 * 24 * 3600;
        let issued = signer.issue("reports/a.pdf", at(1_000 + week));
        let r = handle_at(&d, get(&format!("/d/{issued}")), at(1_000)).await;
        assert_eq!(r.status_code, 302, "as deliver issues it");
        // Minted with the key for a year: valid signature, refused.
        let minted = signer.issue("reports/a.pdf", at(1_000 + 52 * week));
        let r = handle_at(&d, get(&format!("/d/{minted}")), at(1_000)).await;
        assert_eq!(r.status_code, 403);
    }

    #[test]
    fn the_access_log_keeps_every_request_until_a_flood_then_one_in_a_hundred() {
        let logged: Vec<Option<u64>> = (1..=320).map(sample).collect();
        assert!(logged[..20].iter().all(|l| *l == Some(1)));
        let kept: Vec<usize> = (20..320).filter(|i| logged[*i].is_some()).collect();
        assert_eq!(kept, [119, 219, 319]);
        assert!(kept.iter().all(|i| logged[*i] == Some(100)));
    }

    #[tokio::test]
    async fn expired_tampered_and_foreign_links_get_403() {
        let d = deps().await;
        let token = d
            .keys
            .signer()
            .expect("loaded")
            .issue("reports/a.pdf", at(2_000));
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
        let outside = d
            .keys
            .signer()
            .expect("loaded")
            .issue("incoming/secret.csv", at(2_000));
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

    #[tokio::test]
    async fn given_a_fresh_instance_when_it_starts_then_no_key_is_read_until_the_first_link_and_an_unreadable_secret_is_a_503()
     {
        // A failed read is not repeated for `min_refresh`.
        let state = Arc::new(Mutex::new((String::new(), 0)));
        let slow = KeyRing::lazy(Box::new(FakeKeys(state.clone())), Duration::from_secs(60));
        for _ in 0..3 {
            assert!(matches!(
                slow.verify("x.y", at(0)).await,
                Err(Refusal::KeysUnavailable(_))
            ));
        }
        assert_eq!(state.lock().map(|g| g.1).unwrap_or(0), 1, "read once");
        let state = Arc::new(Mutex::new((String::new(), 0)));
        let d = Deps {
            keys: KeyRing::lazy(Box::new(FakeKeys(state.clone())), Duration::ZERO),
            blobs: Box::new(FakeBlobs),
            presign_ttl: Duration::from_secs(300),
            max_link_ttl: Duration::from_secs(7 * 24 * 3600),
            unsubscribe: None,
        };
        assert_eq!(
            state.lock().map(|g| g.1).unwrap_or(9),
            0,
            "nothing read at start-up"
        );
        let token = LinkSigner::from_list(KEY)
            .expect("key")
            .issue("reports/r/e/report.pdf", at(2_000));
        let r = handle_at(&d, get(&format!("{PATH_PREFIX}{token}")), at(1_000)).await;
        assert_eq!(r.status_code, 503, "keys unreadable: try again, not 403");
        if let Ok(mut g) = state.lock() {
            g.0 = KEY.into();
        }
        let r = handle_at(&d, get(&format!("{PATH_PREFIX}{token}")), at(1_000)).await;
        assert_eq!(r.status_code, 302);
        let r = handle_at(&d, get(&format!("{PATH_PREFIX}{token}")), at(1_000)).await;
        assert_eq!(r.status_code, 302);
        assert_eq!(
            state.lock().map(|g| g.1).unwrap_or(0),
            2,
            "read once it worked"
        );
    }

    #[tokio::test]
    async fn a_rotated_key_is_picked_up_without_a_restart_and_reads_are_rate_limited() {
        let (keys, state) = ring(KEY, Duration::ZERO).await;
        let by_new = LinkSigner::from_list(NEW)
            .expect("key")
            .issue("reports/a.pdf", at(2_000));
        // Rotation: the secret becomes "new,old"
        if let Ok(mut g) = state.lock() {
            g.0 = format!("{NEW},{KEY}");
        }
        assert!(
            keys.verify(&by_new, at(0)).await.is_ok(),
            "re-read on a miss"
        );
        let by_old = LinkSigner::from_list(KEY)
            .expect("key")
            .issue("reports/a.pdf", at(2_000));
        assert!(
            keys.verify(&by_old, at(0)).await.is_ok(),
            "old links still work"
        );
        // Forged tokens do not make every request read the secret
        let (slow, state) = ring(KEY, Duration::from_secs(3600)).await;
        let forged = LinkSigner::from_list(NEW)
            .expect("key")
            .issue("reports/a.pdf", at(2_000));
        for _ in 0..5 {
            assert_eq!(
                slow.verify(&forged, at(0)).await,
                Err(Refusal::Link(LinkError::BadSignature))
            );
        }
        assert_eq!(
            state.lock().map(|g| g.1).unwrap_or_default(),
            1,
            "only the start-up read"
        );
    }
}
