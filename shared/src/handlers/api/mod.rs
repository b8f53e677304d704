//! The operator API: an axum router that `functions/api` serves behind a
//! function URL with `AWS_IAM` auth (callers sign with SigV4). One file per
//! resource; errors are problem details ([`problem`]). The stack deploys it
//! twice: a read-only function (GET routes; its role can only read) and an
//! admin one (every route); see [`Access`].

pub mod attempts;
pub mod connections;
pub mod dlq;
pub mod health;
pub mod integral;
pub mod problem;
pub mod stats;
pub mod suppressions;
pub mod targets;
pub mod test_send;

use crate::blob::BlobStore;
use crate::channel::email::AccountProbe;
use crate::queue::Queue;
use crate::store::{AttemptStore, ConnectionStore, StatsStore, TargetStore};
use axum::Router;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::routing::{MethodFilter, MethodRouter, delete, get, on, post, put};
use std::sync::Arc;

/// Who made the request: the IAM principal of the signed request (the
/// function URL's `AWS_IAM` auth verified it), for the records of operator
/// actions.
#[derive(Debug, Clone, PartialEq)]
pub struct Principal(pub String);

impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        use lambda_http::request::RequestContext;
        let who = parts
            .extensions
            .get::<RequestContext>()
            .and_then(|c| match c {
                RequestContext::ApiGatewayV2(ctx) => {
                    let iam = ctx.authorizer.as_ref()?.iam.as_ref()?;
                    iam.user_arn.clone().or_else(|| iam.caller_id.clone())
                }
                _ => None,
            })
            .unwrap_or_else(|| "unknown".to_owned());
        Ok(Principal(who))
    }
}

/// An optional JSON body: empty (or blank) is `T::default()`; otherwise it
/// is read as JSON whatever the content type says (`curl -d` sends form
/// encoding), and refused with `invalid_body` when it is not a `what` body.
pub fn optional_body<T: serde::de::DeserializeOwned + Default>(
    body: &[u8],
    what: &str,
) -> Result<T, problem::Problem> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| {
        problem::Problem::bad_request("invalid_body", format!("not a {what} body: {e}"))
    })
}

/// A queue the health check watches.
#[derive(Debug, Clone)]
pub struct WatchedQueue {
    /// e.g. `executions`, `delivery-dlq`.
    pub name: &'static str,
    pub url: String,
    /// A dead-letter queue: any message in it is a failure to look at.
    pub dead_letter: bool,
}

/// Which routes a deployment of the API serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// GET routes only; every other route answers 403 `read_only`.
    ReadOnly,
    /// Every route: writes, retries, redrives and test sends.
    Admin,
}

impl Access {
    /// From `API_ACCESS` (`read_only` or `admin`). Unset is read-only: a
    /// deployment serves writes only when it says so.
    pub fn from_env() -> Result<Self, crate::config::ConfigError> {
        match crate::config::optional("API_ACCESS").as_deref() {
            None | Some("read_only") => Ok(Self::ReadOnly),
            Some("admin") => Ok(Self::Admin),
            Some(other) => Err(crate::config::ConfigError::Invalid {
                name: "API_ACCESS",
                reason: format!("expected read_only or admin, got {other:?}"),
            }),
        }
    }

    /// Whether this access serves a route of `method`.
    pub fn allows(self, method: &str) -> bool {
        self == Self::Admin || method == "GET"
    }
}

/// What the API needs.
pub struct Deps {
    /// Which routes this deployment serves.
    pub access: Access,
    pub stats: Box<dyn StatsStore>,
    pub attempts: Box<dyn AttemptStore>,
    pub targets: Box<dyn TargetStore>,
    pub connections: Box<dyn ConnectionStore>,
    pub executions: Box<dyn crate::store::ExecutionStore>,
    pub suppressions: Box<dyn crate::store::SuppressionStore>,
    /// Where test sends go (as `test_send.v1` messages).
    pub executions_queue_url: String,
    /// Where retried attempts are sent.
    pub channel_queues: crate::handlers::fanout::ChannelQueues,
    /// Backoff retries after which an operator retry needs `force` (the
    /// retry schedule's length).
    pub retry_limit: u32,
    /// `ALLOW_PRIVATE_WEBHOOK_TARGETS` (local stacks only).
    pub allow_private_hosts: bool,
    pub blobs: Box<dyn BlobStore>,
    pub queue: Box<dyn Queue>,
    pub queues: Vec<WatchedQueue>,
    /// The email account (`None`: email not configured).
    pub email: Option<Box<dyn AccountProbe>>,
    pub thresholds: health::Thresholds,
}

/// The largest request body any route takes, in bytes (a target or
/// connection is a few KB; Lambda would take 6 MB).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Refuses a body over [`MAX_BODY_BYTES`] with a 413 problem, before any
/// route reads it.
async fn limit_body(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let (parts, body) = request.into_parts();
    match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
        Ok(bytes) => {
            next.run(axum::extract::Request::from_parts(parts, bytes.into()))
                .await
        }
        Err(_) => problem::Problem::new(
            axum::http::StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("request bodies are at most {MAX_BODY_BYTES} bytes"),
        )
        .into_response(),
    }
}

/// A route: method, path and handler.
pub type Route = (&'static str, &'static str, MethodRouter<Arc<Deps>>);

/// Every route. The router is built from this list, and a test checks it
/// against `openapi.yaml` both ways.
pub fn routes() -> Vec<Route> {
    vec![
        ("GET", "/health", get(health::get)),
        ("GET", "/stats", get(stats::get)),
        ("GET", "/targets", get(targets::list)),
        ("POST", "/targets", post(targets::create)),
        ("GET", "/targets/{id}", get(targets::get)),
        ("PUT", "/targets/{id}", put(targets::replace)),
        ("DELETE", "/targets/{id}", delete(targets::delete)),
        ("POST", "/targets/{id}/enable", post(targets::enable)),
        ("POST", "/targets/{id}/disable", post(targets::disable)),
        ("POST", "/targets/{id}/test", post(test_send::send)),
        ("GET", "/targets/{id}/suppressions", get(suppressions::list)),
        (
            "PUT",
            "/targets/{id}/suppressions/{address}",
            put(suppressions::add),
        ),
        (
            "DELETE",
            "/targets/{id}/suppressions/{address}",
            delete(suppressions::remove),
        ),
        ("GET", "/attempts", get(attempts::list)),
        ("GET", "/attempts/{id}", get(attempts::get)),
        ("POST", "/attempts/{id}/retry", post(attempts::retry)),
        ("POST", "/connections", post(connections::create)),
        ("GET", "/connections/{id}", get(connections::get)),
        ("PUT", "/connections/{id}", put(connections::replace)),
        ("DELETE", "/connections/{id}", delete(connections::delete)),
        (
            "POST",
            "/connections/{id}/rotate",
            post(connections::rotate),
        ),
        ("POST", "/dlq/{stage}/redrive", post(dlq::redrive)),
    ]
}

/// The API's router: the routes `deps.access` allows, and a 403
/// `read_only` answer on the others (before their body is read).
pub fn router(deps: Arc<Deps>) -> Router {
    let access = deps.access;
    routes()
        .into_iter()
        .fold(Router::new(), |r, (method, path, handler)| {
            if access.allows(method) {
                r.route(path, handler)
            } else {
                r.route(path, on(method_filter(method), refuse_write))
            }
        })
        .fallback(|| async { problem::Problem::not_found("no such route") })
        .method_not_allowed_fallback(|| async {
            problem::Problem::new(
                axum::http::StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this route does not take that method (see openapi.yaml)",
            )
        })
        .layer(axum::middleware::from_fn(limit_body))
        .with_state(deps)
}

/// The filter of one route's method (the route table names only these).
fn method_filter(method: &str) -> MethodFilter {
    match method {
        "POST" => MethodFilter::POST,
        "PUT" => MethodFilter::PUT,
        "DELETE" => MethodFilter::DELETE,
        "PATCH" => MethodFilter::PATCH,
        _ => MethodFilter::GET,
    }
}

/// A write route called on the read-only URL.
async fn refuse_write(method: axum::http::Method, uri: axum::http::Uri) -> problem::Problem {
    problem::Problem::new(
        axum::http::StatusCode::FORBIDDEN,
        "read_only",
        format!(
            "{method} {} changes the stack: this is the read-only API URL; use the admin URL \
             (the stack output ApiUrl) with a principal allowed to invoke it",
            uri.path()
        ),
    )
}

impl Deps {
    /// Builds the deps from the environment `template.yaml` sets.
    pub async fn from_env() -> Result<Self, crate::config::ConfigError> {
        use crate::config::{optional, required, tables};
        let sdk = crate::aws::load().await;
        let store = crate::store::dynamo::DynamoStore::new(crate::aws::dynamodb(&sdk), tables()?)
            .with_sealer(crate::keys::from_env(&sdk))
            .with_record_retention(crate::config::record_retention()?);
        let watched = [
            ("executions", "EXECUTIONS_QUEUE_URL", false),
            ("fanout", "FANOUT_QUEUE_URL", false),
            ("email", "EMAIL_QUEUE_URL", false),
            ("slack", "SLACK_QUEUE_URL", false),
            ("webhook", "WEBHOOK_QUEUE_URL", false),
            ("executions-dlq", "EXECUTIONS_DLQ_URL", true),
            ("fanout-dlq", "FANOUT_DLQ_URL", true),
            ("delivery-dlq", "DELIVERY_DLQ_URL", true),
            ("feedback", "FEEDBACK_QUEUE_URL", false),
            ("feedback-dlq", "FEEDBACK_DLQ_URL", true),
        ];
        let mut queues = Vec::new();
        for (name, var, dead_letter) in watched {
            queues.push(WatchedQueue {
                name,
                url: required(var)?,
                dead_letter,
            });
        }
        let email: Option<Box<dyn AccountProbe>> = optional("EMAIL_FROM_ADDRESS").map(|_| {
            Box::new(crate::channel::email::SesSender::new(
                crate::aws::sesv2(&sdk),
                None,
            )) as Box<dyn AccountProbe>
        });
        Ok(Self {
            access: Access::from_env()?,
            stats: Box::new(store.clone()),
            targets: Box::new(store.clone()),
            connections: Box::new(store.clone()),
            executions: Box::new(store.clone()),
            suppressions: Box::new(store.clone()),
            channel_queues: crate::handlers::fanout::ChannelQueues::from_env()?,
            executions_queue_url: required("EXECUTIONS_QUEUE_URL")?,
            retry_limit: u32::try_from(crate::config::retry_policy()?.schedule.len())
                .unwrap_or(u32::MAX),
            attempts: Box::new(store),
            allow_private_hosts: crate::config::flag("ALLOW_PRIVATE_WEBHOOK_TARGETS")?,
            blobs: Box::new(crate::blob::s3::S3Blobs::new(
                crate::aws::s3(&sdk),
                required("REPORTS_BUCKET")?,
            )),
            queue: Box::new(crate::queue::sqs::SqsQueue::new(crate::aws::sqs(&sdk))),
            queues,
            email,
            thresholds: health::Thresholds::from_env()?,
        })
    }
}
