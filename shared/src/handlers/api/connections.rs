//! `/connections`: the credentials targets use (Slack bot tokens, Slack
//! incoming-webhook URLs, `whsec_` signing secrets). Secrets are write-only:
//! no answer, log line or error detail ever carries one. Rotating a signing
//! secret keeps the old ones valid for a grace period (receivers accept any
//! of the signatures).

use super::problem::Problem;
use super::targets::store_problem;
use super::{Deps, Principal};
use crate::domain::connection::{Credentials, MAX_RETIRING_SECRETS};
use crate::domain::{ServiceConnection, Timestamp};
use crate::store::ConnectionInfo;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde::Deserialize;
use std::sync::Arc;
use tracing::info;

/// The longest grace a rotation may give the old secrets.
pub const MAX_GRACE_SECONDS: u64 = 7 * 24 * 3600;

/// A connection as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionInput {
    pub id: Option<String>,
    /// `slack_bot`, `slack_incoming_webhook` or `webhook_signing`.
    pub kind: String,
    pub secrets: Vec<String>,
}

/// A rotation.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotateInput {
    /// The new `whsec_` secret.
    pub secret: String,
    /// How long the current secrets stay valid (default a day).
    #[serde(default, deserialize_with = "super::integral::optional")]
    pub grace_seconds: Option<u64>,
}

/// Parses a body without ever echoing it: serde's messages can quote
/// values, and values here are secrets.
fn parse<T: for<'de> Deserialize<'de>>(body: &Bytes, what: &str) -> Result<T, Problem> {
    serde_json::from_slice(body).map_err(|e| {
        Problem::bad_request(
            "invalid_body",
            format!(
                "not a {what} (line {}, column {}; values are not repeated here)",
                e.line(),
                e.column()
            ),
        )
    })
}

/// Checks one secret for its kind; the reason never quotes it.
pub fn check_secret(kind: &str, secret: &str, allow_private: bool) -> Result<(), String> {
    match kind {
        "slack_bot" => {
            if secret.starts_with("xoxb-")
                && secret.len() > 10
                && !secret.contains(char::is_whitespace)
            {
                Ok(())
            } else {
                Err("a Slack bot token starts with xoxb-".into())
            }
        }
        "slack_incoming_webhook" => crate::domain::url::WebhookUrl::parse(secret, allow_private)
            .map(|_| ())
            .map_err(|_| "not a usable incoming-webhook URL (https, public host)".into()),
        "webhook_signing" => {
            let key = secret
                .strip_prefix("whsec_")
                .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
                .ok_or("a signing secret is whsec_ followed by base64")?;
            if (24..=64).contains(&key.len()) {
                Ok(())
            } else {
                Err("a signing secret holds 24 to 64 bytes".into())
            }
        }
        _ => Err("kind is slack_bot, slack_incoming_webhook or webhook_signing".into()),
    }
}

/// Checks an input into a connection.
fn check(
    input: ConnectionInput,
    id: String,
    allow_private: bool,
) -> Result<ServiceConnection, Problem> {
    if !crate::handlers::valid_id(&id) {
        return Err(Problem::bad_request(
            "invalid_id",
            "id is 1-128 of [A-Za-z0-9-_.:]",
        ));
    }
    let most = if input.kind == "webhook_signing" {
        5
    } else {
        1
    };
    if input.secrets.is_empty() || input.secrets.len() > most {
        return Err(Problem::bad_request(
            "invalid_secrets",
            format!("{} takes 1 to {most} secret(s)", input.kind),
        ));
    }
    for s in &input.secrets {
        check_secret(&input.kind, s, allow_private)
            .map_err(|reason| Problem::bad_request("invalid_secret", reason))?;
    }
    let credentials = Credentials::from_parts(&input.kind, input.secrets)
        .ok_or_else(|| Problem::bad_request("invalid_secret", "unknown kind"))?;
    Ok(ServiceConnection { id, credentials })
}

async fn info_answer(deps: &Deps, id: &str, status: StatusCode) -> Response {
    match deps.connections.connection_info(id).await {
        Ok(Some(i)) => (status, Json(i)).into_response(),
        Ok(None) => Problem::not_found(format!("no connection {id}")).into_response(),
        Err(e) => store_problem(&e).into_response(),
    }
}

/// `POST /connections`.
pub async fn create(State(deps): State<Arc<Deps>>, principal: Principal, body: Bytes) -> Response {
    let input: ConnectionInput = match parse(&body, "connection") {
        Ok(i) => i,
        Err(p) => return p.into_response(),
    };
    let id = input
        .id
        .clone()
        .unwrap_or_else(|| format!("conn_{}", uuid::Uuid::new_v4().simple()));
    let c = match check(input, id.clone(), deps.allow_private_hosts) {
        Ok(c) => c,
        Err(p) => return p.into_response(),
    };
    match deps
        .connections
        .create_connection(&c, Timestamp::now())
        .await
    {
        Ok(true) => {
            info!(connection_id = %id, kind = c.credentials.kind(), by = %principal.0, "connection created");
            let mut r = info_answer(&deps, &id, StatusCode::CREATED).await;
            if let Ok(v) = HeaderValue::from_str(&format!("/connections/{id}")) {
                r.headers_mut().insert(header::LOCATION, v);
            }
            r
        }
        Ok(false) => Problem::new(
            StatusCode::CONFLICT,
            "already_exists",
            format!("connection {id} exists; PUT /connections/{id} replaces its secrets"),
        )
        .into_response(),
        Err(e) => store_problem(&e).into_response(),
    }
}

/// `GET /connections/{id}`: never the secrets.
pub async fn get(State(deps): State<Arc<Deps>>, Path(id): Path<String>) -> Response {
    if !crate::handlers::valid_id(&id) {
        return Problem::not_found("no such connection").into_response();
    }
    info_answer(&deps, &id, StatusCode::OK).await
}

/// `PUT /connections/{id}`: replaces the secrets (same kind).
pub async fn replace(
    State(deps): State<Arc<Deps>>,
    Path(id): Path<String>,
    principal: Principal,
    body: Bytes,
) -> Response {
    let input: ConnectionInput = match parse(&body, "connection") {
        Ok(i) => i,
        Err(p) => return p.into_response(),
    };
    if input.id.as_ref().is_some_and(|i| *i != id) {
        return Problem::bad_request("id_mismatch", "the body's id is not the path's")
            .into_response();
    }
    let c = match check(input, id.clone(), deps.allow_private_hosts) {
        Ok(c) => c,
        Err(p) => return p.into_response(),
    };
    match deps.connections.connection_info(&id).await {
        Ok(Some(current)) if current.kind != c.credentials.kind() => {
            return Problem::new(
                StatusCode::CONFLICT,
                "kind_mismatch",
                format!(
                    "connection {id} is {}; targets rely on that kind, create a new connection instead",
                    current.kind
                ),
            )
            .into_response();
        }
        Ok(Some(_)) => {}
        Ok(None) => return Problem::not_found(format!("no connection {id}")).into_response(),
        Err(e) => return store_problem(&e).into_response(),
    }
    match deps
        .connections
        .replace_connection(&c, Timestamp::now())
        .await
    {
        Ok(true) => {
            info!(connection_id = %id, by = %principal.0, "connection secrets replaced");
            info_answer(&deps, &id, StatusCode::OK).await
        }
        Ok(false) => Problem::not_found(format!("no connection {id}")).into_response(),
        Err(e) => store_problem(&e).into_response(),
    }
}

/// `POST /connections/{id}/rotate`: a new signing secret, the old ones kept
/// for `grace_seconds`.
pub async fn rotate(
    State(deps): State<Arc<Deps>>,
    Path(id): Path<String>,
    principal: Principal,
    body: Bytes,
) -> Response {
    if !crate::handlers::valid_id(&id) {
        return Problem::not_found("no such connection").into_response();
    }
    let input: RotateInput = match parse(&body, "rotation") {
        Ok(i) => i,
        Err(p) => return p.into_response(),
    };
    let grace = input.grace_seconds.unwrap_or(24 * 3600);
    if grace > MAX_GRACE_SECONDS {
        return Problem::bad_request(
            "invalid_grace",
            format!("grace_seconds is at most {MAX_GRACE_SECONDS}"),
        )
        .into_response();
    }
    match deps.connections.connection_info(&id).await {
        Ok(Some(c)) if c.kind != "webhook_signing" => {
            return Problem::new(
                StatusCode::CONFLICT,
                "not_rotatable",
                "only webhook_signing connections rotate with a grace period; PUT replaces the others",
            )
            .into_response();
        }
        Ok(Some(c)) => {
            if let Some(p) = retiring_limit(&c, Timestamp::now()) {
                return p.into_response();
            }
        }
        Ok(None) => return Problem::not_found(format!("no connection {id}")).into_response(),
        Err(e) => return store_problem(&e).into_response(),
    }
    if let Err(reason) = check_secret("webhook_signing", &input.secret, false) {
        return Problem::bad_request("invalid_secret", reason).into_response();
    }
    let now = Timestamp::now();
    let until = now.plus(time::Duration::seconds(i64::try_from(grace).unwrap_or(0)));
    match deps
        .connections
        .rotate_connection(&id, &input.secret, until, now)
        .await
    {
        Ok(true) => {
            info!(connection_id = %id, by = %principal.0, grace, "signing secret rotated");
            info_answer(&deps, &id, StatusCode::OK).await
        }
        Ok(false) => Problem::new(
            StatusCode::CONFLICT,
            "changed",
            format!("connection {id} changed meanwhile; try again"),
        )
        .into_response(),
        Err(e) => store_problem(&e).into_response(),
    }
}

/// A 409 when a rotation now would keep more than
/// [`MAX_RETIRING_SECRETS`] retiring: the live ones plus the current ones.
fn retiring_limit(c: &ConnectionInfo, now: Timestamp) -> Option<Problem> {
    let live: Vec<&Timestamp> = c.retiring_until.iter().filter(|u| **u > now).collect();
    let after = live.len() + c.secrets;
    (after > MAX_RETIRING_SECRETS).then(|| {
        let first = live.iter().min().map(|t| t.to_string()).unwrap_or_default();
        Problem::new(
            StatusCode::CONFLICT,
            "too_many_secrets",
            format!(
                "a rotation now would keep {after} retiring secrets (at most \
                 {MAX_RETIRING_SECRETS}); the first stops at {first}, or PUT replaces them all"
            ),
        )
    })
}

/// `DELETE /connections/{id}`.
pub async fn delete(
    State(deps): State<Arc<Deps>>,
    Path(id): Path<String>,
    principal: Principal,
) -> Response {
    if !crate::handlers::valid_id(&id) {
        return Problem::not_found("no such connection").into_response();
    }
    match deps.connections.delete_connection(&id).await {
        Ok(true) => {
            info!(connection_id = %id, by = %principal.0, "connection deleted");
            StatusCode::NO_CONTENT.into_response()
        }
        Ok(false) => Problem::not_found(format!("no connection {id}")).into_response(),
        Err(e) => store_problem(&e).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_checked_per_kind_without_quoting_them() {
        let whsec = format!(
            "whsec_{}",
            base64::engine::general_purpose::STANDARD.encode([7u8; 32])
        );
        assert!(check_secret("webhook_signing", &whsec, false).is_ok());
        assert!(check_secret("slack_bot", "xoxb-123-456-abc", false).is_ok());
        assert!(
            check_secret(
                "slack_incoming_webhook",
                "https://hooks.slack.com/services/T/B/x",
                false
            )
            .is_ok()
        );
        for (kind, secret) in [
            ("webhook_signing", "whsec_c2hvcnQ="),
            ("webhook_signing", "not-a-secret-at-all"),
            ("slack_bot", "xoxp-user-token-value"),
            ("slack_incoming_webhook", "http://169.254.169.254/latest"),
            ("fax", "anything"),
        ] {
            let reason = check_secret(kind, secret, false).expect_err(secret);
            assert!(!reason.contains(secret), "{reason}");
        }
    }

    #[test]
    fn a_body_that_does_not_parse_is_refused_without_its_values() {
        let body = Bytes::from_static(br#"{"kind": "slack_bot", "secrets": "xoxb-secret-token"}"#);
        let p = parse::<ConnectionInput>(&body, "connection")
            .err()
            .expect("refused");
        assert_eq!(p.code, "invalid_body");
        assert!(!p.detail.contains("xoxb"), "{}", p.detail);
    }
}
