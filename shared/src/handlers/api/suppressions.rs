//! `/targets/{id}/suppressions`: the addresses a target no longer mails
//! (bounced, complained, unsubscribed, or added by an operator). Operators
//! list them, add one (`manual`, with a note), and lift one, which is how
//! a recipient who unsubscribed is subscribed again. Every change is an
//! audit line with the operator's IAM principal.

use super::problem::Problem;
use super::targets::{load, store_problem};
use super::{Deps, Principal};
use crate::domain::TargetType;
use crate::domain::Timestamp;
use crate::domain::suppression::{Suppression, SuppressionReason, address_key};
use crate::domain::target::EmailAddress;
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;
use tracing::info;

/// `GET /targets/{id}/suppressions` query.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    pub cursor: Option<String>,
    #[serde(default, deserialize_with = "super::integral::query")]
    pub limit: Option<i32>,
}

/// `PUT /targets/{id}/suppressions/{address}` body (optional).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddInput {
    /// Why, for the record (at most 500 characters).
    pub note: Option<String>,
}

/// Longest operator note kept.
pub const NOTE_LIMIT: usize = 500;

/// The suppression as the API shows it.
pub fn view(s: &Suppression) -> serde_json::Value {
    json!({
        "target_id": s.target_id,
        "address": s.address,
        "reason": s.reason.as_str(),
        "detail": s.detail,
        "by": s.by,
        "attempt_id": s.attempt_id,
        "at": s.at,
    })
}

/// The target, which must be an email target.
async fn email_target(deps: &Deps, id: &str) -> Result<(), Problem> {
    let t = load(deps, id).await?;
    if t.config.target_type() != TargetType::Email {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "not_an_email_target",
            format!(
                "target {id} is a {} target; only email targets have suppressions",
                t.config.target_type().as_str()
            ),
        ));
    }
    Ok(())
}

fn address(raw: &str) -> Result<String, Problem> {
    EmailAddress::parse(raw)
        .map(|a| address_key(a.as_str()))
        .map_err(|e| Problem::bad_request("invalid_address", e.to_string()))
}

/// `GET /targets/{id}/suppressions`.
pub async fn list(
    State(deps): State<Arc<Deps>>,
    Path(id): Path<String>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Response {
    let q = match query {
        Ok(Query(q)) => q,
        Err(e) => return Problem::bad_request("invalid_query", e.body_text()).into_response(),
    };
    if q.limit.is_some_and(|l| !(1..=100).contains(&l)) {
        return Problem::bad_request("invalid_limit", "limit is 1 to 100").into_response();
    }
    let limit = q.limit.unwrap_or(100);
    if let Err(p) = email_target(&deps, &id).await {
        return p.into_response();
    }
    let cursor_given = q.cursor.is_some();
    match deps
        .suppressions
        .suppressions_page(&id, q.cursor, limit)
        .await
    {
        Ok(page) => Json(json!({
            "suppressions": page.items.iter().map(view).collect::<Vec<_>>(),
            "next_cursor": page.next,
        }))
        .into_response(),
        Err(crate::store::StoreError::Invalid { reason, .. }) if cursor_given => {
            Problem::bad_request("invalid_cursor", reason).into_response()
        }
        Err(e) => store_problem(&e).into_response(),
    }
}

/// `PUT /targets/{id}/suppressions/{address}`: suppresses an address
/// (`manual`). 201 when it was not suppressed, 200 with the suppression as
/// it stands (its first reason kept) when it was.
pub async fn add(
    State(deps): State<Arc<Deps>>,
    Path((id, raw)): Path<(String, String)>,
    principal: Principal,
    body: Bytes,
) -> Response {
    let input: AddInput = match super::optional_body(&body, "suppression") {
        Ok(i) => i,
        Err(p) => return p.into_response(),
    };
    if input
        .note
        .as_ref()
        .is_some_and(|n| n.chars().count() > NOTE_LIMIT)
    {
        return Problem::bad_request(
            "note_too_long",
            format!("a note is at most {NOTE_LIMIT} characters"),
        )
        .into_response();
    }
    let address = match address(&raw) {
        Ok(a) => a,
        Err(p) => return p.into_response(),
    };
    if let Err(p) = email_target(&deps, &id).await {
        return p.into_response();
    }
    let entry = Suppression {
        target_id: id.clone(),
        address: address.clone(),
        reason: SuppressionReason::Manual,
        detail: input.note,
        by: principal.0.clone(),
        attempt_id: None,
        at: Timestamp::now(),
    };
    let new = match deps.suppressions.suppress(&entry).await {
        Ok(new) => new,
        Err(e) => return store_problem(&e).into_response(),
    };
    if new {
        info!(target_id = %id, %address, by = %principal.0, "suppression added");
    }
    match find(&deps, &id, &address).await {
        Ok(Some(s)) => {
            let status = if new {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            (status, Json(view(&s))).into_response()
        }
        Ok(None) => (StatusCode::CREATED, Json(view(&entry))).into_response(),
        Err(p) => p.into_response(),
    }
}

/// `DELETE /targets/{id}/suppressions/{address}`: lifts a suppression,
/// whatever its reason (the target mails the address again).
pub async fn remove(
    State(deps): State<Arc<Deps>>,
    Path((id, raw)): Path<(String, String)>,
    principal: Principal,
) -> Response {
    let address = match address(&raw) {
        Ok(a) => a,
        Err(p) => return p.into_response(),
    };
    if let Err(p) = email_target(&deps, &id).await {
        return p.into_response();
    }
    match deps.suppressions.unsuppress(&id, &address, None).await {
        Ok(true) => {
            info!(target_id = %id, %address, by = %principal.0, "suppression lifted");
            StatusCode::NO_CONTENT.into_response()
        }
        Ok(false) => Problem::not_found(format!("{address} is not suppressed for target {id}"))
            .into_response(),
        Err(e) => store_problem(&e).into_response(),
    }
}

/// One suppression of a target, by address key.
async fn find(deps: &Deps, id: &str, address: &str) -> Result<Option<Suppression>, Problem> {
    deps.suppressions
        .suppression(id, address)
        .await
        .map_err(|e| store_problem(&e))
}
