//! `GET /health`: is delivery healthy? Checks the stores, the email
//! account, every queue and dead-letter queue, the oldest unsettled
//! attempt, and the last hour's error rate and latency from the statistics.
//! 200 with the details when healthy, 503 with the reasons when not;
//! thresholds come from configuration.

use super::Deps;
use crate::blob::BlobError;
use crate::channel::email::AccountCheck;
use crate::domain::Timestamp;
use crate::domain::stats::Counters;
use crate::queue::QueueDepth;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

/// When the service counts as unhealthy.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Thresholds {
    /// Failed over settled in the last hour, above which it is unhealthy.
    pub max_error_rate: f64,
    /// Below this many settled attempts in the hour the rate is not judged.
    pub min_settled: u64,
    /// Visible messages on a work queue.
    pub max_queue_visible: u64,
    /// Messages on a dead-letter queue.
    pub max_dead_letters: u64,
    /// Age of the oldest unsettled attempt (a full retry schedule is 1 h 20 m).
    pub max_pending_age_seconds: u64,
    /// p95 milliseconds from an attempt's creation to delivered.
    pub max_p95_ms: u64,
    /// Share of the 24-hour email quota that must be left.
    pub min_email_quota_left: f64,
    /// Bounced email recipients per recipient sent over 24 hours above
    /// which the service is degraded (SES reviews an account at 5 %).
    pub max_bounce_rate: f64,
    /// Complaints per recipient sent over 24 hours above which the
    /// service is degraded (SES reviews an account at 0.1 %).
    pub max_complaint_rate: f64,
    /// Below this many recipients sent in 24 hours the rates are not judged.
    pub min_recipients: u64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            max_error_rate: 0.05,
            min_settled: 20,
            max_queue_visible: 1000,
            max_dead_letters: 0,
            max_pending_age_seconds: 2 * 3600,
            max_p95_ms: 15 * 60 * 1000,
            min_email_quota_left: 0.1,
            max_bounce_rate: 0.02,
            max_complaint_rate: 0.0005,
            min_recipients: 100,
        }
    }
}

impl Thresholds {
    /// Defaults, overridden by `HEALTH_*` variables.
    pub fn from_env() -> Result<Self, crate::config::ConfigError> {
        fn num<T: std::str::FromStr>(
            name: &'static str,
            default: T,
        ) -> Result<T, crate::config::ConfigError> {
            match crate::config::optional(name) {
                None => Ok(default),
                Some(v) => v.parse().map_err(|_| crate::config::ConfigError::Invalid {
                    name,
                    reason: format!("{v:?} is not a number"),
                }),
            }
        }
        let d = Self::default();
        Ok(Self {
            max_error_rate: num("HEALTH_MAX_ERROR_RATE", d.max_error_rate)?,
            min_settled: num("HEALTH_MIN_SETTLED", d.min_settled)?,
            max_queue_visible: num("HEALTH_MAX_QUEUE_VISIBLE", d.max_queue_visible)?,
            max_dead_letters: num("HEALTH_MAX_DEAD_LETTERS", d.max_dead_letters)?,
            max_pending_age_seconds: num(
                "HEALTH_MAX_PENDING_AGE_SECONDS",
                d.max_pending_age_seconds,
            )?,
            max_p95_ms: num("HEALTH_MAX_P95_MS", d.max_p95_ms)?,
            min_email_quota_left: num("HEALTH_MIN_EMAIL_QUOTA_LEFT", d.min_email_quota_left)?,
            // Percent, as the stack's alarm parameters give them.
            max_bounce_rate: num("HEALTH_MAX_BOUNCE_RATE_PERCENT", d.max_bounce_rate * 100.0)?
                / 100.0,
            max_complaint_rate: num(
                "HEALTH_MAX_COMPLAINT_RATE_PERCENT",
                d.max_complaint_rate * 100.0,
            )? / 100.0,
            min_recipients: num("HEALTH_MIN_RECIPIENTS", d.min_recipients)?,
        })
    }
}

/// What the checks found.
#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    /// DynamoDB answered (the statistics and the pending index).
    pub store: Result<(), String>,
    pub bucket: Result<(), String>,
    /// `None`: email is not configured.
    pub email: Option<AccountCheck>,
    pub queues: Vec<(&'static str, bool, Result<QueueDepth, String>)>,
    /// The last hour's service-wide counters.
    pub last_hour: Option<Counters>,
    /// The last 24 hours' service-wide counters (email reputation).
    pub last_day: Option<Counters>,
    /// Age of the oldest execution with an unsettled attempt (rendered
    /// then; its attempts were created within its fan-out).
    pub oldest_pending: Option<Duration>,
}

/// The reasons the service is unhealthy (empty: healthy).
pub fn evaluate(o: &Observed, t: &Thresholds) -> Vec<String> {
    let mut reasons = Vec::new();
    if let Err(e) = &o.store {
        reasons.push(format!("DynamoDB is unreachable: {e}"));
    }
    if let Err(e) = &o.bucket {
        reasons.push(format!("the reports bucket is unreachable: {e}"));
    }
    match &o.email {
        Some(AccountCheck::Failed(e)) => {
            reasons.push(format!("the SES account could not be read: {e}"))
        }
        Some(AccountCheck::Known(a)) => {
            if !a.sending_enabled {
                reasons.push("SES sending is disabled for the account".into());
            }
            if a.max_24_hour_send > 0.0 {
                let left = 1.0 - a.sent_last_24_hours / a.max_24_hour_send;
                if left < t.min_email_quota_left {
                    reasons.push(format!(
                        "{:.0}% of the SES 24-hour quota is left (minimum {:.0}%)",
                        left.max(0.0) * 100.0,
                        t.min_email_quota_left * 100.0
                    ));
                }
            }
        }
        Some(AccountCheck::Unsupported(_)) | None => {}
    }
    for (name, dead_letter, depth) in &o.queues {
        match depth {
            Err(e) => reasons.push(format!("queue {name} is unreachable: {e}")),
            Ok(d) if *dead_letter && d.visible + d.in_flight > t.max_dead_letters => {
                reasons.push(format!(
                    "{} message(s) on the dead-letter queue {name}",
                    d.visible + d.in_flight
                ))
            }
            Ok(d) if !*dead_letter && d.visible > t.max_queue_visible => reasons.push(format!(
                "{} messages waiting on {name} (maximum {})",
                d.visible, t.max_queue_visible
            )),
            Ok(_) => {}
        }
    }
    if let Some(age) = o.oldest_pending
        && age.as_secs() > t.max_pending_age_seconds
    {
        reasons.push(format!(
            "the oldest unsettled attempt's execution is {} min old (maximum {} min)",
            age.as_secs() / 60,
            t.max_pending_age_seconds / 60
        ));
    }
    if let Some(c) = &o.last_hour {
        let settled = c.delivered + c.failed;
        if settled >= t.min_settled
            && let Some(rate) = c.error_rate()
            && rate > t.max_error_rate
        {
            reasons.push(format!(
                "{:.1}% of the last hour's {settled} attempts failed (maximum {:.1}%)",
                rate * 100.0,
                t.max_error_rate * 100.0
            ));
        }
        if let Some(p95) = c.latency_percentile_ms(95.0)
            && p95 > t.max_p95_ms
        {
            reasons.push(format!(
                "p95 delivery latency is {} s (maximum {} s)",
                p95 / 1000,
                t.max_p95_ms / 1000
            ));
        }
    }
    reasons
}

/// What makes the service degraded (empty: not): it delivers, but SES's
/// bounce or complaint rate over the last 24 hours is past its threshold,
/// which puts the sending account at risk.
pub fn warnings(o: &Observed, t: &Thresholds) -> Vec<String> {
    let mut out = Vec::new();
    let Some(c) = &o.last_day else { return out };
    if c.recipients_sent < t.min_recipients {
        return out;
    }
    for (what, rate, max) in [
        ("bounced", c.bounce_rate(), t.max_bounce_rate),
        ("complained", c.complaint_rate(), t.max_complaint_rate),
    ] {
        if let Some(rate) = rate
            && rate > max
        {
            out.push(format!(
                "{:.2}% of the last 24 hours' {} email recipients {what} (maximum {:.2}%)",
                rate * 100.0,
                c.recipients_sent,
                max * 100.0
            ));
        }
    }
    out
}

/// Runs every check at once.
pub async fn observe(deps: &Deps, now: Timestamp) -> Observed {
    let hour_ago = now.plus(time::Duration::hours(-1));
    let day_ago = now.plus(time::Duration::hours(-24));
    let (last_hour, last_day, oldest, bucket, email, queues) = tokio::join!(
        deps.stats.service_hours(hour_ago, now),
        deps.stats.service_hours(day_ago, now),
        deps.executions.oldest_unsettled(),
        deps.blobs.get("health/probe"),
        async {
            match &deps.email {
                Some(p) => Some(p.account().await),
                None => None,
            }
        },
        futures::future::join_all(deps.queues.iter().map(|q| async move {
            let depth = deps.queue.depth(&q.url).await.map_err(|e| e.to_string());
            (q.name, q.dead_letter, depth)
        })),
    );
    let store = match (&last_hour, &oldest) {
        (Err(e), _) | (_, Err(e)) => Err(e.to_string()),
        _ => Ok(()),
    };
    Observed {
        store,
        bucket: match bucket {
            Ok(_) | Err(BlobError::NotFound(_)) => Ok(()),
            Err(e) => Err(e.to_string()),
        },
        email,
        queues,
        last_hour: last_hour.ok(),
        last_day: last_day.ok(),
        oldest_pending: oldest
            .ok()
            .flatten()
            .map(|t| Duration::from_millis(u64::try_from(now.millis_since(t)).unwrap_or(0))),
    }
}

/// The answer's body.
pub fn body(o: &Observed, t: &Thresholds, reasons: &[String], warnings: &[String]) -> Value {
    let queues: serde_json::Map<String, Value> = o
        .queues
        .iter()
        .map(|(name, dead_letter, depth)| {
            let v = match depth {
                Ok(d) => json!({"dead_letter": dead_letter, "visible": d.visible, "in_flight": d.in_flight, "delayed": d.delayed}),
                Err(e) => json!({"dead_letter": dead_letter, "error": e}),
            };
            ((*name).to_owned(), v)
        })
        .collect();
    let email = match &o.email {
        None => json!({"status": "not_configured"}),
        Some(AccountCheck::Known(a)) => json!({"status": "ok", "account": a}),
        Some(AccountCheck::Unsupported(why)) => json!({"status": "unchecked", "reason": why}),
        Some(AccountCheck::Failed(e)) => json!({"status": "error", "error": e}),
    };
    let hour = o.last_hour.as_ref().map(|c| {
        json!({
            "attempted": c.attempted,
            "delivered": c.delivered,
            "failed": c.failed,
            "retries": c.retries,
            "success_rate": c.success_rate(),
            "error_rate": c.error_rate(),
            "average_delivery_ms": c.average_delivery_ms(),
            "p50_delivery_ms": c.latency_percentile_ms(50.0),
            "p95_delivery_ms": c.latency_percentile_ms(95.0),
        })
    });
    let day = o.last_day.as_ref().map(|c| {
        json!({
            "recipients_sent": c.recipients_sent,
            "bounced": c.recipients_bounced,
            "complained": c.recipients_complained,
            "bounce_rate": c.bounce_rate(),
            "complaint_rate": c.complaint_rate(),
        })
    });
    let status = if !reasons.is_empty() {
        "unhealthy"
    } else if !warnings.is_empty() {
        "degraded"
    } else {
        "healthy"
    };
    json!({
        "status": status,
        "reasons": reasons,
        "warnings": warnings,
        "checks": {
            "dynamodb": status_of(&o.store),
            "bucket": status_of(&o.bucket),
            "email": email,
            "queues": queues,
            "oldest_unsettled_attempt_seconds": o.oldest_pending.map(|d| d.as_secs()),
            "last_hour": hour,
            "email_reputation": day,
        },
        "thresholds": t,
    })
}

fn status_of(r: &Result<(), String>) -> Value {
    match r {
        Ok(()) => json!({"status": "ok"}),
        Err(e) => json!({"status": "error", "error": e}),
    }
}

/// `GET /health`.
pub async fn get(State(deps): State<Arc<Deps>>) -> Response {
    let observed = observe(&deps, Timestamp::now()).await;
    let reasons = evaluate(&observed, &deps.thresholds);
    let warnings = warnings(&observed, &deps.thresholds);
    // Degraded still delivers: 200, with the warnings.
    let status = if reasons.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(body(&observed, &deps.thresholds, &reasons, &warnings)),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::email::SendingAccount;
    use crate::domain::stats::{LATENCY_BUCKETS_MS, latency_bucket};

    fn healthy() -> Observed {
        Observed {
            store: Ok(()),
            bucket: Ok(()),
            email: Some(AccountCheck::Known(SendingAccount {
                sending_enabled: true,
                max_24_hour_send: 50_000.0,
                sent_last_24_hours: 1_000.0,
                max_send_rate: 14.0,
                sandbox: false,
            })),
            queues: vec![
                ("email", false, Ok(QueueDepth::default())),
                ("delivery-dlq", true, Ok(QueueDepth::default())),
            ],
            last_hour: Some(Counters {
                delivered: 99,
                failed: 1,
                latency: vec![99, 0, 0, 0, 0, 0, 0, 0],
                ..Counters::default()
            }),
            oldest_pending: Some(Duration::from_secs(60)),
            last_day: Some(Counters {
                recipients_sent: 1_000,
                recipients_bounced: 10,
                ..Counters::default()
            }),
        }
    }

    #[test]
    fn a_quiet_service_is_healthy() {
        assert_eq!(
            evaluate(&healthy(), &Thresholds::default()),
            Vec::<String>::new()
        );
    }

    #[test]
    fn each_check_can_make_it_unhealthy_with_a_reason() {
        let t = Thresholds::default();
        type Breaker = Box<dyn Fn(&mut Observed)>;
        let cases: Vec<(Breaker, &str)> = vec![
            (Box::new(|o| o.store = Err("timeout".into())), "DynamoDB"),
            (Box::new(|o| o.bucket = Err("denied".into())), "bucket"),
            (
                Box::new(|o| o.email = Some(AccountCheck::Failed("denied".into()))),
                "SES account",
            ),
            (
                Box::new(|o| {
                    if let Some(AccountCheck::Known(a)) = &mut o.email {
                        a.sending_enabled = false;
                    }
                }),
                "sending is disabled",
            ),
            (
                Box::new(|o| {
                    if let Some(AccountCheck::Known(a)) = &mut o.email {
                        a.sent_last_24_hours = 49_000.0;
                    }
                }),
                "quota",
            ),
            (
                Box::new(|o| {
                    o.queues[1].2 = Ok(QueueDepth {
                        visible: 1,
                        ..QueueDepth::default()
                    })
                }),
                "dead-letter queue delivery-dlq",
            ),
            (
                Box::new(|o| {
                    o.queues[0].2 = Ok(QueueDepth {
                        visible: 5000,
                        ..QueueDepth::default()
                    })
                }),
                "waiting on email",
            ),
            (
                Box::new(|o| o.queues[0].2 = Err("gone".into())),
                "unreachable",
            ),
            (
                Box::new(|o| o.oldest_pending = Some(Duration::from_secs(3 * 3600))),
                "oldest unsettled",
            ),
            (
                Box::new(|o| {
                    if let Some(c) = &mut o.last_hour {
                        c.failed = 20;
                    }
                }),
                "failed",
            ),
            (
                Box::new(|o| {
                    if let Some(c) = &mut o.last_hour {
                        c.latency = vec![0; LATENCY_BUCKETS_MS.len()];
                        c.latency[latency_bucket(3_000_000)] = 10;
                    }
                }),
                "p95",
            ),
        ];
        for (break_it, expected) in cases {
            let mut o = healthy();
            break_it(&mut o);
            let reasons = evaluate(&o, &t);
            assert_eq!(reasons.len(), 1, "{expected}: {reasons:?}");
            assert!(reasons[0].contains(expected), "{expected}: {reasons:?}");
        }
    }

    #[test]
    fn a_few_failures_in_a_quiet_hour_are_not_judged() {
        let mut o = healthy();
        o.last_hour = Some(Counters {
            delivered: 3,
            failed: 2,
            ..Counters::default()
        });
        assert!(evaluate(&o, &Thresholds::default()).is_empty());
    }

    #[test]
    fn an_emulator_without_get_account_is_unchecked_not_unhealthy() {
        let mut o = healthy();
        o.email = Some(AccountCheck::Unsupported("404".into()));
        let reasons = evaluate(&o, &Thresholds::default());
        assert!(reasons.is_empty());
        let b = body(&o, &Thresholds::default(), &reasons, &[]);
        assert_eq!(b["checks"]["email"]["status"], "unchecked");
        assert_eq!(b["status"], "healthy");
    }

    #[test]
    fn bounce_and_complaint_rates_past_their_thresholds_make_it_degraded_not_unhealthy() {
        let t = Thresholds::default();
        assert!(warnings(&healthy(), &t).is_empty(), "1 % bounced is fine");
        let mut o = healthy();
        if let Some(c) = &mut o.last_day {
            c.recipients_bounced = 21;
            c.recipients_complained = 1;
        }
        let w = warnings(&o, &t);
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(
            w[0].contains("2.10% of the last 24 hours' 1000 email recipients bounced"),
            "{w:?}"
        );
        assert!(w[1].contains("complained"), "{w:?}");
        assert!(evaluate(&o, &t).is_empty(), "degraded is not unhealthy");
        assert_eq!(body(&o, &t, &[], &w)["status"], "degraded");
        // A handful of recipients is not judged.
        if let Some(c) = &mut o.last_day {
            c.recipients_sent = 50;
        }
        assert!(warnings(&o, &t).is_empty());
    }
}
