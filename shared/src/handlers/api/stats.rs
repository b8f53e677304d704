//! `GET /stats?report_id=&target_id=&from=&to=`: the delivery statistics
//! of one report or one target per UTC day, or of the whole service over
//! the range, with the spec's four figures: success rate, average delivery
//! time, retry frequency and (per target) the last error.

use super::Deps;
use super::problem::Problem;
use crate::domain::Timestamp;
use crate::domain::stats::Counters;
use axum::Json;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;

/// The longest range one request may ask for.
pub const MAX_DAYS: i64 = 92;

/// The query string.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatsQuery {
    pub report_id: Option<String>,
    pub target_id: Option<String>,
    /// A UTC day (`2026-11-27`) or an RFC 3339 time; default: 6 days
    /// before `to`.
    pub from: Option<String>,
    /// A UTC day or an RFC 3339 time; default: now.
    pub to: Option<String>,
}

/// Whose statistics.
#[derive(Debug, Clone, PartialEq)]
pub enum Scope {
    Report(String),
    /// A target's; `report` is set when the query named the report too,
    /// and the target must then be that report's.
    Target {
        id: String,
        report: Option<String>,
    },
    Service,
}

/// A checked query: scope and range.
#[derive(Debug, Clone, PartialEq)]
pub struct Checked {
    pub scope: Scope,
    pub from: Timestamp,
    pub to: Timestamp,
}

/// Parses a day or a time; a day's `to` covers the whole day.
fn time_of(text: &str, end_of_day: bool) -> Option<Timestamp> {
    if let Ok(t) = Timestamp::parse(text) {
        return Some(t);
    }
    let day = time::Date::parse(
        text,
        time::macros::format_description!("[year]-[month]-[day]"),
    )
    .ok()?;
    let at = if end_of_day {
        day.with_hms_milli(23, 59, 59, 999).ok()?
    } else {
        day.midnight()
    };
    Timestamp::from_offset(at.assume_utc()).ok()
}

/// Checks a query, with a reason for each refusal.
pub fn check(q: &StatsQuery, now: Timestamp) -> Result<Checked, Problem> {
    let scope = match (&q.report_id, &q.target_id) {
        (r, Some(t)) => Scope::Target {
            id: t.clone(),
            report: r.clone(),
        },
        (Some(r), None) => Scope::Report(r.clone()),
        (None, None) => Scope::Service,
    };
    if [&q.report_id, &q.target_id]
        .into_iter()
        .flatten()
        .any(|id| !crate::handlers::valid_id(id))
    {
        return Err(Problem::bad_request(
            "invalid_id",
            "ids are 1-128 of [A-Za-z0-9-_.:]",
        ));
    }
    let to = match &q.to {
        None => now,
        Some(t) => time_of(t, true).ok_or_else(|| {
            Problem::bad_request(
                "invalid_time",
                "to is not a day (2026-11-27) or an RFC 3339 time",
            )
        })?,
    };
    let from = match &q.from {
        None => {
            let start = to.plus(time::Duration::days(-6)).inner().date().midnight();
            Timestamp::from_offset(start.assume_utc()).unwrap_or(to)
        }
        Some(f) => time_of(f, false).ok_or_else(|| {
            Problem::bad_request(
                "invalid_time",
                "from is not a day (2026-11-27) or an RFC 3339 time",
            )
        })?,
    };
    if from > to {
        return Err(Problem::bad_request("invalid_range", "from is after to"));
    }
    if to.millis_since(from) > MAX_DAYS * 24 * 3600 * 1000 {
        return Err(Problem::bad_request(
            "invalid_range",
            format!("at most {MAX_DAYS} days per request"),
        ));
    }
    Ok(Checked { scope, from, to })
}

/// Counters with the derived figures.
pub fn figures(c: &Counters) -> Value {
    json!({
        "attempted": c.attempted,
        "delivered": c.delivered,
        "failed": c.failed,
        "tries": c.tries,
        "retries": c.retries,
        "success_rate": c.success_rate(),
        "average_delivery_ms": c.average_delivery_ms(),
        "retry_frequency": c.retry_frequency(),
        "last_success_at": c.last_success_at,
        "last_error_code": c.last_error_code,
        "last_error_at": c.last_error_at,
        "recipients": {
            "delivered": c.recipients_delivered,
            "bounced": c.recipients_bounced,
            "complained": c.recipients_complained,
        },
    })
}

/// `GET /stats`.
pub async fn get(
    State(deps): State<Arc<Deps>>,
    query: Result<Query<StatsQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(q)) = query else {
        return Problem::bad_request("invalid_query", "the query string could not be read")
            .into_response();
    };
    let c = match check(&q, Timestamp::now()) {
        Ok(c) => c,
        Err(p) => return p.into_response(),
    };
    let (scope, days) = match &c.scope {
        Scope::Report(id) => (
            json!({"report_id": id}),
            deps.stats.report_days(id, c.from, c.to).await,
        ),
        Scope::Target { id, report } => {
            if let Some(report) = report {
                match deps.targets.get_target(id).await {
                    Ok(Some(t)) if &t.report_id != report => {
                        return Problem::not_found(format!(
                            "target {id} is not one of report {report}'s"
                        ))
                        .into_response();
                    }
                    Ok(_) => {}
                    Err(e) => return super::targets::store_problem(&e).into_response(),
                }
            }
            (
                json!({"target_id": id}),
                deps.stats.target_days(id, c.from, c.to).await,
            )
        }
        Scope::Service => (
            json!({"service": true}),
            deps.stats
                .service_hours(c.from, c.to)
                .await
                .map(|total| vec![(String::new(), total)]),
        ),
    };
    let days = match days {
        Ok(d) => d,
        Err(e) => {
            tracing::error!(error = %e, "statistics could not be read");
            return Problem::unavailable("store_unavailable", "statistics could not be read")
                .into_response();
        }
    };
    let mut total = Counters::default();
    for (_, d) in &days {
        total.add(d);
    }
    let per_day: Vec<Value> = days
        .iter()
        .filter(|(day, _)| !day.is_empty())
        .map(|(day, d)| {
            let mut v = figures(d);
            v["day"] = json!(day);
            v
        })
        .collect();
    Json(json!({
        "scope": scope,
        "from": c.from,
        "to": c.to,
        "total": figures(&total),
        "days": per_day,
    }))
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(
        report: Option<&str>,
        target: Option<&str>,
        from: Option<&str>,
        to: Option<&str>,
    ) -> StatsQuery {
        StatsQuery {
            report_id: report.map(str::to_owned),
            target_id: target.map(str::to_owned),
            from: from.map(str::to_owned),
            to: to.map(str::to_owned),
        }
    }

    #[test]
    fn days_and_times_make_a_range_and_bad_ones_are_refused_with_a_code() {
        let now = Timestamp::parse("2026-11-27T10:00:00Z").expect("time");
        let c = check(
            &q(Some("r1"), None, Some("2026-11-01"), Some("2026-11-02")),
            now,
        )
        .expect("valid");
        assert_eq!(c.scope, Scope::Report("r1".into()));
        assert_eq!(c.from.to_string(), "2026-11-01T00:00:00.000Z");
        assert_eq!(c.to.to_string(), "2026-11-02T23:59:59.999Z");
        let d = check(&q(None, None, None, None), now).expect("defaults");
        assert_eq!(d.scope, Scope::Service);
        let both = check(&q(Some("r"), Some("t"), None, None), now).expect("both");
        assert_eq!(
            both.scope,
            Scope::Target {
                id: "t".into(),
                report: Some("r".into())
            }
        );
        assert_eq!(d.from.to_string(), "2026-11-21T00:00:00.000Z");
        for (bad, code) in [
            (q(Some("r"), Some("a b"), None, None), "invalid_id"),
            (q(Some("a b"), None, None, None), "invalid_id"),
            (q(None, Some("t"), Some("yesterday"), None), "invalid_time"),
            (q(None, Some("t"), None, Some("2026-13-01")), "invalid_time"),
            (
                q(None, Some("t"), Some("2026-11-05"), Some("2026-11-01")),
                "invalid_range",
            ),
            (
                q(None, Some("t"), Some("2026-01-01"), Some("2026-11-01")),
                "invalid_range",
            ),
        ] {
            let p = check(&bad, now).expect_err("refused");
            assert_eq!(p.code, code, "{bad:?}");
            assert_eq!(p.status, 400);
        }
    }
}
