//! `/targets`: list, read, create, replace, delete, enable and disable
//! delivery targets. Every write is checked with the rules delivery uses
//! (addresses, Slack channel ids, the webhook URL's SSRF rules, after DNS
//! too, formats, and the connection it names); changes name the version
//! they read (`If-Match`, the `ETag` of a read), since two operators can
//! edit at once.

use super::problem::Problem;
use super::{Deps, Principal};
use crate::domain::target::Format;
use crate::domain::{DeliveryTarget, TargetConfig, Timestamp};
use crate::store::{StoreError, Versioned};
use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;
use tracing::{error, info};

/// A target as written by an operator.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetInput {
    /// Chosen by the caller on create (default `tgt_<uuid>`); must match the
    /// path on replace.
    pub id: Option<String>,
    pub report_id: String,
    pub target_type: String,
    pub config: Value,
    #[serde(default)]
    pub formats: Vec<Format>,
    /// Rows shown in the message itself (0–50).
    #[serde(default, deserialize_with = "super::integral::optional")]
    pub preview_rows: Option<u8>,
    #[serde(default = "yes")]
    pub active: bool,
    pub service_connection_id: Option<String>,
}

fn yes() -> bool {
    true
}

/// The JSON form of a target (no secrets live on targets).
pub fn view(t: &DeliveryTarget) -> Value {
    json!({
        "id": t.id,
        "report_id": t.report_id,
        "target_type": t.config.target_type().as_str(),
        "config": t.config.to_json(),
        "formats": t.formats(),
        "preview_rows": t.preview_rows(),
        "active": t.active,
        "service_connection_id": t.service_connection_id,
        "disable_requested": t.disable_requested,
        "consecutive_failures": t.consecutive_failures,
        "version": t.version,
        "created_at": t.created_at,
        "updated_at": t.updated_at,
    })
}

fn etag(version: u64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{version}\"")).unwrap_or(HeaderValue::from_static("\"0\""))
}

/// A target answer with its `ETag`.
fn with_etag(status: StatusCode, t: &DeliveryTarget) -> Response {
    let mut r = (status, Json(view(t))).into_response();
    r.headers_mut().insert(header::ETAG, etag(t.version));
    r
}

/// What an `If-Match` header asks for.
enum Match {
    /// No header.
    None,
    /// `*`: any current version.
    Any,
    /// One of these versions (`"3"`, `W/"3"`, `3`, or a list).
    Versions(Vec<u64>),
}

/// Reads `If-Match` (RFC 9110: `*` or a list of entity tags).
fn if_match_header(headers: &HeaderMap) -> Result<Match, Problem> {
    let Some(v) = headers.get(header::IF_MATCH) else {
        return Ok(Match::None);
    };
    let text = v.to_str().unwrap_or_default().trim();
    if text == "*" {
        return Ok(Match::Any);
    }
    text.split(',')
        .map(|t| etag_version(t.trim()))
        .collect::<Option<Vec<u64>>>()
        .map(Match::Versions)
        .ok_or_else(|| {
            Problem::bad_request("invalid_if_match", "If-Match must be * or ETags of reads")
        })
}

/// The version of one ETag as `openapi.yaml` describes it: `"3"`, `W/"3"`
/// or `3` (digits only, no sign).
fn etag_version(tag: &str) -> Option<u64> {
    let tag = tag.strip_prefix("W/").unwrap_or(tag);
    let digits = tag
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(tag);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The version a change may apply to, given the current one.
fn expected_version(m: &Match, current: u64) -> Option<u64> {
    match m {
        Match::None => None,
        Match::Any => Some(current),
        // A stale version in the list is refused by the conditional write.
        Match::Versions(v) => Some(if v.contains(&current) { current } else { v[0] }),
    }
}

pub(super) fn store_problem(e: &StoreError) -> Problem {
    error!(error = %e, "store error");
    match e {
        StoreError::Backend(_) => {
            Problem::unavailable("store_unavailable", "the store did not answer; try again")
        }
        _ => Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "store_refused",
            "the store refused the request",
        ),
    }
}

/// Checks an input into a target: every rule delivery applies, before
/// anything is stored.
pub async fn check(
    deps: &Deps,
    input: TargetInput,
    id: String,
    now: Timestamp,
) -> Result<DeliveryTarget, Problem> {
    if !crate::handlers::valid_id(&id)
        || !crate::handlers::valid_id(&input.report_id)
        || input
            .service_connection_id
            .as_deref()
            .is_some_and(|c| !crate::handlers::valid_id(c))
    {
        return Err(Problem::bad_request(
            "invalid_id",
            "id, report_id and service_connection_id are 1-128 of [A-Za-z0-9-_.:]",
        ));
    }
    let config =
        TargetConfig::from_json(&input.target_type, input.config, deps.allow_private_hosts)
            .map_err(|e| Problem::bad_request("invalid_config", e.to_string()))?;
    crate::domain::target::check_preview_rows(input.preview_rows)
        .map_err(|e| Problem::bad_request("invalid_preview_rows", e))?;
    if let TargetConfig::Webhook(w) = &config
        && !deps.allow_private_hosts
    {
        vet_host(w.url.as_url()).await?;
    }
    let needs = match &config {
        TargetConfig::Slack(crate::domain::target::SlackConfig::BotToken { .. }) => {
            Some(("slack_bot", true))
        }
        TargetConfig::Slack(crate::domain::target::SlackConfig::IncomingWebhook {}) => {
            Some(("slack_incoming_webhook", true))
        }
        TargetConfig::Webhook(_) => Some(("webhook_signing", false)),
        TargetConfig::Email(_) => None,
    };
    match (&input.service_connection_id, needs) {
        (Some(conn), Some((kind, _))) => {
            let found = deps
                .connections
                .get_connection(conn)
                .await
                .map_err(|e| store_problem(&e))?;
            match found {
                None => {
                    return Err(Problem::new(
                        StatusCode::CONFLICT,
                        "unknown_connection",
                        format!("connection {conn} does not exist"),
                    ));
                }
                Some(c) if c.credentials.kind() != kind => {
                    return Err(Problem::new(
                        StatusCode::CONFLICT,
                        "wrong_connection_kind",
                        format!(
                            "a {} target needs a {kind} connection, not {}",
                            config.target_type(),
                            c.credentials.kind()
                        ),
                    ));
                }
                Some(_) => {}
            }
        }
        (None, Some((kind, true))) => {
            return Err(Problem::bad_request(
                "connection_required",
                format!("this target needs a {kind} connection (service_connection_id)"),
            ));
        }
        (Some(_), None) => {
            return Err(Problem::bad_request(
                "unexpected_connection",
                "email targets take no connection",
            ));
        }
        (None, _) => {}
    }
    Ok(DeliveryTarget {
        id,
        report_id: input.report_id,
        service_connection_id: input.service_connection_id,
        config,
        formats: input.formats,
        preview_rows: input.preview_rows,
        active: input.active,
        disable_requested: None,
        consecutive_failures: 0,
        version: 0,
        created_at: now,
        updated_at: now,
    })
}

/// The SSRF rule at write time, after DNS: every address the host resolves
/// to must be public. (Delivery checks again at each send, since DNS
/// changes.)
async fn vet_host(url: &url::Url) -> Result<(), Problem> {
    let Some(host) = url.host_str() else {
        return Err(Problem::bad_request(
            "invalid_config",
            "the URL has no host",
        ));
    };
    let port = url.port_or_known_default().unwrap_or(443);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let lookup = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        tokio::net::lookup_host((host, port)),
    )
    .await
    .map_err(|_| {
        Problem::unavailable(
            "dns_timeout",
            format!("looking up {host} took too long; try again"),
        )
    })?;
    let addrs: Vec<std::net::SocketAddr> = lookup
        .map_err(|_| {
            Problem::bad_request(
                "unresolvable_host",
                format!("{host} does not resolve; a webhook needs a public host"),
            )
        })?
        .collect();
    vet_addrs(host, &addrs)
}

/// Refuses a host with no address, or with any address that is not public.
fn vet_addrs(host: &str, addrs: &[std::net::SocketAddr]) -> Result<(), Problem> {
    if addrs.is_empty() {
        return Err(Problem::bad_request(
            "unresolvable_host",
            format!("{host} has no address"),
        ));
    }
    if let Some(bad) = addrs
        .iter()
        .find(|a| crate::domain::url::is_forbidden_ip(a.ip()))
    {
        return Err(Problem::bad_request(
            "forbidden_address",
            format!(
                "{host} resolves to {}, which is not a public address",
                bad.ip()
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_match_takes_the_documented_etag_forms_only() {
        for ok in ["\"3\"", "W/\"3\"", "3", "\"3\", W/\"4\"", " 3 ,4 "] {
            let mut h = HeaderMap::new();
            h.insert(header::IF_MATCH, ok.parse().expect("header"));
            assert!(
                matches!(if_match_header(&h), Ok(Match::Versions(_))),
                "{ok}"
            );
        }
        for bad in [
            "+3",
            "\"\"3\"\"",
            "\"3",
            "W/3x",
            "",
            "3,",
            "-1",
            "99999999999999999999999",
        ] {
            let mut h = HeaderMap::new();
            h.insert(header::IF_MATCH, bad.parse().expect("header"));
            assert!(if_match_header(&h).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_name_is_refused_when_any_address_it_resolves_to_is_not_public() {
        let a = |s: &str| s.parse::<std::net::SocketAddr>().expect("addr");
        assert!(vet_addrs("hooks.example.com", &[a("93.184.215.14:443")]).is_ok());
        for addrs in [
            vec![a("10.1.2.3:443")],
            vec![a("93.184.215.14:443"), a("127.0.0.1:443")],
            vec![a("[::ffff:169.254.169.254]:443")],
            vec![a("[fd00::1]:443")],
        ] {
            let p = vet_addrs("rebind.example.com", &addrs).expect_err("refused");
            assert_eq!(p.code, "forbidden_address", "{addrs:?}");
        }
        let p = vet_addrs("nowhere.example.com", &[]).expect_err("refused");
        assert_eq!(p.code, "unresolvable_host");
    }
}

fn body<T>(input: Result<Json<T>, JsonRejection>) -> Result<T, Problem> {
    input
        .map(|Json(v)| v)
        .map_err(|e| Problem::bad_request("invalid_body", e.body_text()))
}

/// Query of `GET /targets`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    pub report_id: String,
}

/// `GET /targets?report_id=`.
pub async fn list(
    State(deps): State<Arc<Deps>>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Response {
    let Ok(Query(q)) = query else {
        return Problem::bad_request("invalid_query", "report_id is required").into_response();
    };
    if !crate::handlers::valid_id(&q.report_id) {
        return Problem::bad_request("invalid_id", "report_id is 1-128 of [A-Za-z0-9-_.:]")
            .into_response();
    }
    match deps.targets.targets_of_report(&q.report_id).await {
        Ok(ts) => Json(json!({"targets": ts.iter().map(view).collect::<Vec<_>>()})).into_response(),
        Err(e) => store_problem(&e).into_response(),
    }
}

pub(super) async fn load(deps: &Deps, id: &str) -> Result<DeliveryTarget, Problem> {
    if !crate::handlers::valid_id(id) {
        return Err(Problem::not_found("no such target"));
    }
    match deps.targets.get_target(id).await {
        Ok(Some(t)) => Ok(t),
        Ok(None) => Err(Problem::not_found(format!("no target {id}"))),
        Err(e) => Err(store_problem(&e)),
    }
}

/// `GET /targets/{id}`.
pub async fn get(State(deps): State<Arc<Deps>>, Path(id): Path<String>) -> Response {
    match load(&deps, &id).await {
        Ok(t) => with_etag(StatusCode::OK, &t),
        Err(p) => p.into_response(),
    }
}

/// `POST /targets`.
pub async fn create(
    State(deps): State<Arc<Deps>>,
    principal: Principal,
    input: Result<Json<TargetInput>, JsonRejection>,
) -> Response {
    let input = match body(input) {
        Ok(i) => i,
        Err(p) => return p.into_response(),
    };
    let id = input
        .id
        .clone()
        .unwrap_or_else(|| format!("tgt_{}", uuid::Uuid::new_v4().simple()));
    let mut target = match check(&deps, input, id, Timestamp::now()).await {
        Ok(t) => t,
        Err(p) => return p.into_response(),
    };
    match deps.targets.create_target(&target).await {
        Ok(true) => {
            target.version = 1;
            info!(target_id = %target.id, by = %principal.0, "target created");
            let mut r = with_etag(StatusCode::CREATED, &target);
            if let Ok(v) = HeaderValue::from_str(&format!("/targets/{}", target.id)) {
                r.headers_mut().insert(header::LOCATION, v);
            }
            r
        }
        Ok(false) => Problem::new(
            StatusCode::CONFLICT,
            "already_exists",
            format!(
                "target {} exists; PUT /targets/{} to change it",
                target.id, target.id
            ),
        )
        .into_response(),
        Err(e) => store_problem(&e).into_response(),
    }
}

/// The answer to a refused versioned write.
fn refused(v: Versioned, id: &str) -> Response {
    match v {
        Versioned::Missing => Problem::not_found(format!("no target {id}")).into_response(),
        Versioned::Conflict(current) => {
            let mut r = Problem::new(
                StatusCode::PRECONDITION_FAILED,
                "version_mismatch",
                format!(
                    "target {id} is at version {current}; read it again and reapply your change"
                ),
            )
            .into_response();
            r.headers_mut().insert(header::ETAG, etag(current));
            r
        }
        Versioned::Done(_) => StatusCode::NO_CONTENT.into_response(),
    }
}

fn precondition_required() -> Response {
    Problem::new(
        StatusCode::PRECONDITION_REQUIRED,
        "if_match_required",
        "send If-Match with the ETag you read, so concurrent edits are not lost",
    )
    .into_response()
}

/// `PUT /targets/{id}` (needs `If-Match`).
pub async fn replace(
    State(deps): State<Arc<Deps>>,
    Path(id): Path<String>,
    principal: Principal,
    headers: HeaderMap,
    input: Result<Json<TargetInput>, JsonRejection>,
) -> Response {
    let wanted = match if_match_header(&headers) {
        Ok(Match::None) => return precondition_required(),
        Ok(m) => m,
        Err(p) => return p.into_response(),
    };
    let input = match body(input) {
        Ok(i) => i,
        Err(p) => return p.into_response(),
    };
    if input.id.as_ref().is_some_and(|i| *i != id) {
        return Problem::bad_request("id_mismatch", "the body's id is not the path's")
            .into_response();
    }
    let current = match load(&deps, &id).await {
        Ok(t) => t,
        Err(p) => return p.into_response(),
    };
    let expected = expected_version(&wanted, current.version).unwrap_or(current.version);
    let mut target = match check(&deps, input, id.clone(), Timestamp::now()).await {
        Ok(t) => t,
        Err(p) => return p.into_response(),
    };
    target.created_at = current.created_at;
    write(
        &deps,
        target,
        expected,
        false,
        &principal,
        "target replaced",
    )
    .await
}

/// Applies a versioned change and answers with the new target.
async fn write(
    deps: &Deps,
    mut target: DeliveryTarget,
    expected: u64,
    clear_flags: bool,
    principal: &Principal,
    what: &str,
) -> Response {
    target.updated_at = Timestamp::now();
    match deps
        .targets
        .update_target(&target, expected, clear_flags)
        .await
    {
        Ok(Versioned::Done(v)) => {
            info!(target_id = %target.id, by = %principal.0, version = v, "{what}");
            match load(deps, &target.id).await {
                Ok(t) => with_etag(StatusCode::OK, &t),
                Err(p) => p.into_response(),
            }
        }
        Ok(other) => refused(other, &target.id),
        Err(e) => store_problem(&e).into_response(),
    }
}

/// `DELETE /targets/{id}` (`If-Match` optional).
pub async fn delete(
    State(deps): State<Arc<Deps>>,
    Path(id): Path<String>,
    principal: Principal,
    headers: HeaderMap,
) -> Response {
    let wanted = match if_match_header(&headers) {
        Ok(m) => m,
        Err(p) => return p.into_response(),
    };
    let expected = match &wanted {
        Match::None | Match::Any => None,
        Match::Versions(v) if v.len() == 1 => Some(v[0]),
        Match::Versions(_) => match load(&deps, &id).await {
            Ok(t) => expected_version(&wanted, t.version),
            Err(p) => return p.into_response(),
        },
    };
    if !crate::handlers::valid_id(&id) {
        return Problem::not_found("no such target").into_response();
    }
    match deps.targets.delete_target(&id, expected).await {
        Ok(Versioned::Done(_)) => {
            info!(target_id = %id, by = %principal.0, "target deleted");
            StatusCode::NO_CONTENT.into_response()
        }
        Ok(other) => refused(other, &id),
        Err(e) => store_problem(&e).into_response(),
    }
}

/// `POST /targets/{id}/enable`: active again, the gone flag and the failure
/// streak cleared. `If-Match` optional (the current version otherwise).
pub async fn enable(
    State(deps): State<Arc<Deps>>,
    Path(id): Path<String>,
    principal: Principal,
    headers: HeaderMap,
) -> Response {
    switch(&deps, &id, true, &principal, &headers).await
}

/// `POST /targets/{id}/disable`.
pub async fn disable(
    State(deps): State<Arc<Deps>>,
    Path(id): Path<String>,
    principal: Principal,
    headers: HeaderMap,
) -> Response {
    switch(&deps, &id, false, &principal, &headers).await
}

async fn switch(
    deps: &Deps,
    id: &str,
    active: bool,
    principal: &Principal,
    headers: &HeaderMap,
) -> Response {
    let wanted = match if_match_header(headers) {
        Ok(m) => m,
        Err(p) => return p.into_response(),
    };
    let mut target = match load(deps, id).await {
        Ok(t) => t,
        Err(p) => return p.into_response(),
    };
    let expected = expected_version(&wanted, target.version).unwrap_or(target.version);
    target.active = active;
    let what = if active {
        "target enabled"
    } else {
        "target disabled"
    };
    write(deps, target, expected, active, principal, what).await
}
