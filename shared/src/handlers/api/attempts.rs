//! `/attempts`: list a target's or an execution's attempts, read one with
//! its history of tries, and retry a failed one (the spec's RetryJob): an
//! explicit operator transition, recorded with who asked and when, that
//! renders the report again first when its file is gone.

use super::problem::Problem;
use super::targets::store_problem;
use super::{Deps, Principal};
use crate::contract::DeliveryTask;
use crate::domain::attempt::{HISTORY_LIMIT, OperatorAction};
use crate::domain::{AttemptStatus, DeliveryAttempt, Timestamp, Transition};
use crate::store::{Applied, AttemptsOf};
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;
use tracing::{info, warn};

/// The JSON form of an attempt (without its lease token), with the
/// summary of its recipients (email).
pub fn view(a: &DeliveryAttempt) -> Value {
    let mut v = serde_json::to_value(a).unwrap_or(Value::Null);
    if let Some(o) = v.as_object_mut() {
        o.remove("lease_token");
        if let Some(c) = crate::domain::recipient::Confirmation::of(&a.recipients) {
            o.insert("confirmation".into(), json!(c));
        }
    }
    v
}

/// Query of `GET /attempts`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    pub target_id: Option<String>,
    pub execution_id: Option<String>,
    pub status: Option<String>,
    /// RFC 3339; with `target_id` only.
    pub since: Option<String>,
    #[serde(default, deserialize_with = "super::integral::query")]
    pub limit: Option<i32>,
    pub cursor: Option<String>,
}

/// Which attempts a list query asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Listing {
    /// A target's, an execution's, or one target's in an execution.
    Of(AttemptsOf),
    /// Every open attempt (not settled yet), shard by shard of the `open`
    /// index; optionally only those created since a time.
    Open { since: Option<Timestamp> },
}

/// Checks a list query into whose attempts, and the status filter.
pub fn check(q: &ListQuery) -> Result<(Listing, Option<AttemptStatus>), Problem> {
    let status = match q.status.as_deref() {
        None => None,
        Some(s) => Some(AttemptStatus::parse(s).ok_or_else(|| {
            Problem::bad_request(
                "invalid_status",
                "status is one of queued, processing, delivered, failed",
            )
        })?),
    };
    let id_ok = |id: &str| {
        crate::handlers::valid_id(id)
            .then_some(())
            .ok_or_else(|| Problem::bad_request("invalid_id", "ids are 1-128 of [A-Za-z0-9-_.:]"))
    };
    let since = match &q.since {
        None => None,
        Some(s) => Some(
            Timestamp::parse(s)
                .map_err(|_| Problem::bad_request("invalid_time", "since is an RFC 3339 time"))?,
        ),
    };
    for id in [&q.target_id, &q.execution_id].into_iter().flatten() {
        id_ok(id)?;
    }
    let of = match (&q.target_id, &q.execution_id) {
        (Some(t), None) => Listing::Of(AttemptsOf::Target {
            id: t.clone(),
            since,
        }),
        (t, Some(e)) => Listing::Of(AttemptsOf::Execution {
            id: e.clone(),
            target: t.clone(),
            since,
        }),
        (None, None) => Listing::Open { since },
    };
    if q.limit.is_some_and(|l| !(1..=100).contains(&l)) {
        return Err(Problem::bad_request("invalid_limit", "limit is 1 to 100"));
    }
    Ok((of, status))
}

/// `GET /attempts?target_id=|execution_id=&status=&since=&limit=&cursor=`.
pub async fn list(
    State(deps): State<Arc<Deps>>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Response {
    let Ok(Query(q)) = query else {
        return Problem::bad_request("invalid_query", "the query string could not be read")
            .into_response();
    };
    let (of, status) = match check(&q) {
        Ok(c) => c,
        Err(p) => return p.into_response(),
    };
    let limit = q.limit.unwrap_or(50);
    let page = match &of {
        Listing::Of(of) => {
            deps.attempts
                .attempts_page(of, q.cursor.clone(), limit)
                .await
        }
        Listing::Open { since } => open_page(&deps, q.cursor.as_deref(), limit, *since).await,
    };
    match page {
        Ok(page) => Json(json!({
            "attempts": page
                .items
                .iter()
                .filter(|a| status.is_none_or(|s| a.status == s))
                .map(view)
                .collect::<Vec<_>>(),
            "next_cursor": page.next,
        }))
        .into_response(),
        Err(crate::store::StoreError::Invalid { reason, .. }) => {
            Problem::bad_request("invalid_cursor", reason).into_response()
        }
        Err(e) => store_problem(&e).into_response(),
    }
}

/// A page of open attempts: the `open` index's shards in turn, until
/// `limit` are found. The cursor is `open.<shard>.<shard's cursor>`.
async fn open_page(
    deps: &Deps,
    cursor: Option<&str>,
    limit: i32,
    since: Option<Timestamp>,
) -> Result<crate::store::Page<DeliveryAttempt>, crate::store::StoreError> {
    let invalid = || crate::store::StoreError::Invalid {
        id: "cursor".into(),
        reason: "not a cursor of this listing".into(),
    };
    let (mut shard, mut inner) = match cursor {
        None => (0, None),
        Some(c) => {
            let rest = c.strip_prefix("open.").ok_or_else(invalid)?;
            let (n, inner) = rest.split_once('.').ok_or_else(invalid)?;
            let n: u8 = n.parse().map_err(|_| invalid())?;
            if n >= crate::store::PENDING_SHARDS {
                return Err(invalid());
            }
            (n, (!inner.is_empty()).then(|| inner.to_owned()))
        }
    };
    let far = Timestamp::now().plus(time::Duration::days(1));
    let mut items = Vec::new();
    while shard < crate::store::PENDING_SHARDS {
        let want = limit - items.len() as i32;
        if want <= 0 {
            break;
        }
        let page = deps
            .attempts
            .open_page(shard, far, inner.take(), want)
            .await?;
        items.extend(
            page.items
                .into_iter()
                .filter(|a| since.is_none_or(|t| a.created_at >= t)),
        );
        match page.next {
            Some(next) => inner = Some(next),
            None => shard += 1,
        }
    }
    let next = (shard < crate::store::PENDING_SHARDS)
        .then(|| format!("open.{shard}.{}", inner.unwrap_or_default()));
    Ok(crate::store::Page { items, next })
}

async fn load(deps: &Deps, id: &str) -> Result<DeliveryAttempt, Problem> {
    if !crate::handlers::valid_id(id) {
        return Err(Problem::not_found("no such attempt"));
    }
    match deps.attempts.get(id).await {
        Ok(Some(a)) => Ok(a),
        Ok(None) => Err(Problem::not_found(format!("no attempt {id}"))),
        Err(e) => Err(store_problem(&e)),
    }
}

/// `GET /attempts/{id}`.
pub async fn get(State(deps): State<Arc<Deps>>, Path(id): Path<String>) -> Response {
    match load(&deps, &id).await {
        Ok(a) => Json(view(&a)).into_response(),
        Err(p) => p.into_response(),
    }
}

/// Body of a retry.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryInput {
    /// Retry past the retry limit.
    #[serde(default)]
    pub force: bool,
}

/// Whether an attempt may be retried now; the problem says why not.
pub fn may_retry(a: &DeliveryAttempt, limit: u32, force: bool) -> Result<(), Problem> {
    let conflict = |code, detail: String| Err(Problem::new(StatusCode::CONFLICT, code, detail));
    match a.status {
        AttemptStatus::Delivered => conflict(
            "already_delivered",
            format!("attempt {} was delivered; nothing to retry", a.id),
        ),
        AttemptStatus::Queued | AttemptStatus::Processing => conflict(
            "in_progress",
            format!("attempt {} is {}; it is being delivered", a.id, a.status),
        ),
        AttemptStatus::Failed if a.retry_count >= limit && !force => conflict(
            "retry_limit",
            format!(
                "attempt {} used its {} retries; send {{\"force\": true}} to retry anyway",
                a.id, a.retry_count
            ),
        ),
        AttemptStatus::Failed => Ok(()),
    }
}

/// `POST /attempts/{id}/retry` (body optional: `{"force": true}`).
pub async fn retry(
    State(deps): State<Arc<Deps>>,
    Path(id): Path<String>,
    principal: Principal,
    body: axum::body::Bytes,
) -> Response {
    let force = match super::optional_body::<RetryInput>(&body, "retry") {
        Ok(i) => i.force,
        Err(p) => return p.into_response(),
    };
    let a = match load(&deps, &id).await {
        Ok(a) => a,
        Err(p) => return p.into_response(),
    };
    if let Err(p) = may_retry(&a, deps.retry_limit, force) {
        return p.into_response();
    }
    // Re-attach the report if its file is gone.
    let rerendered = match ensure_files(&deps, &a).await {
        Ok(r) => r,
        Err(p) => return p.into_response(),
    };
    let action = OperatorAction {
        action: "retry".into(),
        by: principal.0.clone(),
        at: Timestamp::now(),
        force,
        rerendered,
    };
    let mut actions = a.operator_actions.clone();
    actions.push(action.clone());
    let excess = actions.len().saturating_sub(HISTORY_LIMIT);
    actions.drain(..excess);
    let t = Transition::OperatorRetry { action, actions };
    // The attempt and its execution reopen in one atomic write: no
    // completion can take the execution out of the index in between.
    let queued = match deps.attempts.apply_reopening(&a.id, &t).await {
        Ok(Applied::Yes(q)) => q,
        Ok(Applied::Refused(current)) => {
            return Problem::new(
                StatusCode::CONFLICT,
                "changed",
                format!(
                    "attempt {} changed meanwhile (now {}); read it again",
                    a.id,
                    current.map_or("gone".to_owned(), |c| c.status.to_string())
                ),
            )
            .into_response();
        }
        Err(e) => return store_problem(&e).into_response(),
    };
    info!(attempt_id = %queued.id, by = %principal.0, force, rerendered, "operator retry");
    // Queued: send its message. If that fails, the reconciler sends it
    // (the attempt is back in the pending index).
    let body = serde_json::to_string(&DeliveryTask::for_attempt(&queued)).unwrap_or_default();
    let url = deps.channel_queues.for_type(queued.target_type);
    let sent = match deps.queue.send(url, &body).await {
        Ok(()) => true,
        Err(e) => {
            warn!(attempt_id = %queued.id, error = %e, "retry message not sent; the reconciler will send it");
            false
        }
    };
    (
        StatusCode::ACCEPTED,
        Json(json!({"attempt": view(&queued), "rerendered": rerendered, "message_sent": sent})),
    )
        .into_response()
}

/// Renders the attempt's report again when its PDF is gone; whether it did.
async fn ensure_files(deps: &Deps, a: &DeliveryAttempt) -> Result<bool, Problem> {
    let execution = match deps.executions.get_execution(&a.report_execution_id).await {
        Ok(Some(e)) => e,
        Ok(None) => {
            return Err(Problem::new(
                StatusCode::CONFLICT,
                "execution_gone",
                format!("execution {} is no longer recorded", a.report_execution_id),
            ));
        }
        Err(e) => return Err(store_problem(&e)),
    };
    match deps.blobs.exists(&execution.pdf.key).await {
        Ok(true) => Ok(false),
        Ok(false) => {
            use crate::handlers::render::{RerenderError, rerender};
            match rerender(deps.blobs.as_ref(), &execution).await {
                Ok(()) => Ok(true),
                Err(RerenderError::NoInput(_)) => Err(Problem::new(
                    StatusCode::CONFLICT,
                    "report_gone",
                    "the report file is gone and its input was not kept; send the execution again",
                )),
                Err(RerenderError::Store(e)) => {
                    warn!(error = %e, "re-render store error");
                    Err(Problem::unavailable(
                        "store_unavailable",
                        "the file store did not answer; try again",
                    ))
                }
                Err(RerenderError::Failed(e)) => Err(Problem::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "rerender_failed",
                    e,
                )),
            }
        }
        Err(e) => {
            warn!(error = %e, "report file check failed");
            Err(Problem::unavailable(
                "store_unavailable",
                "the file store did not answer; try again",
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::TargetType;

    fn failed(retries: u32) -> DeliveryAttempt {
        let mut a = DeliveryAttempt::queued("e", "r", "t", TargetType::Webhook, Timestamp::now());
        a.status = AttemptStatus::Failed;
        a.retry_count = retries;
        a
    }

    #[test]
    fn only_failed_attempts_are_retried_and_past_the_limit_only_with_force() {
        assert!(may_retry(&failed(0), 3, false).is_ok());
        assert_eq!(
            may_retry(&failed(3), 3, false).expect_err("limit").code,
            "retry_limit"
        );
        assert!(may_retry(&failed(3), 3, true).is_ok());
        for (status, code) in [
            (AttemptStatus::Delivered, "already_delivered"),
            (AttemptStatus::Queued, "in_progress"),
            (AttemptStatus::Processing, "in_progress"),
        ] {
            let mut a = failed(0);
            a.status = status;
            let p = may_retry(&a, 3, true).expect_err("refused");
            assert_eq!((p.status, p.code), (409, code));
        }
    }

    #[test]
    fn list_queries_combine_their_filters_and_refuse_bad_values() {
        let q = |t: Option<&str>, e: Option<&str>, since: Option<&str>| ListQuery {
            target_id: t.map(str::to_owned),
            execution_id: e.map(str::to_owned),
            since: since.map(str::to_owned),
            ..ListQuery::default()
        };
        let day = "2026-11-27T00:00:00Z";
        let at = Timestamp::parse(day).expect("a time");
        let of = |q| check(&q).expect("accepted").0;
        assert_eq!(
            of(q(Some("t"), None, Some(day))),
            Listing::Of(AttemptsOf::Target {
                id: "t".into(),
                since: Some(at)
            })
        );
        assert_eq!(
            of(q(Some("t"), Some("e"), None)),
            Listing::Of(AttemptsOf::Execution {
                id: "e".into(),
                target: Some("t".into()),
                since: None
            })
        );
        assert_eq!(
            of(q(None, Some("e"), Some(day))),
            Listing::Of(AttemptsOf::Execution {
                id: "e".into(),
                target: None,
                since: Some(at)
            })
        );
        assert_eq!(of(q(None, None, None)), Listing::Open { since: None });
        for bad in [
            q(Some("t"), None, Some("yesterday")),
            q(Some("bad id"), None, None),
            q(Some("t"), Some("bad id"), None),
        ] {
            assert!(check(&bad).is_err(), "{bad:?}");
        }
    }
}
