//! Typed configuration from the environment variables `template.yaml` sets,
//! read once at start-up with clear errors.

use crate::domain::RetryPolicy;
use std::time::Duration;

/// Table names, from the function's environment.
#[derive(Debug, Clone)]
pub struct Tables {
    pub targets: String,
    pub attempts: String,
    pub executions: String,
    pub connections: String,
    /// Token buckets of per-destination rate limits.
    pub rate_limits: String,
    /// Delivery statistics counters.
    pub stats: String,
    /// Suppressed email addresses per target.
    pub suppressions: String,
}

/// A missing or malformed setting.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("environment variable {0} is not set")]
    Missing(&'static str),
    #[error("environment variable {name} is invalid: {reason}")]
    Invalid { name: &'static str, reason: String },
}

/// Reads a required variable.
pub fn required(name: &'static str) -> Result<String, ConfigError> {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .ok_or(ConfigError::Missing(name))
}

/// Reads an optional variable.
pub fn optional(name: &'static str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// Reads a boolean (`true`/`false`/`1`/`0`), defaulting to false.
pub fn flag(name: &'static str) -> Result<bool, ConfigError> {
    match optional(name).as_deref() {
        None | Some("false") | Some("0") => Ok(false),
        Some("true") | Some("1") => Ok(true),
        Some(other) => Err(ConfigError::Invalid {
            name,
            reason: format!("expected true or false, got {other:?}"),
        }),
    }
}

/// Reads whole seconds.
pub fn seconds(name: &'static str, default: u64) -> Result<Duration, ConfigError> {
    match optional(name) {
        None => Ok(Duration::from_secs(default)),
        Some(v) => v
            .parse()
            .map(Duration::from_secs)
            .map_err(|_| ConfigError::Invalid {
                name,
                reason: format!("expected whole seconds, got {v:?}"),
            }),
    }
}

/// The four table names.
pub fn tables() -> Result<Tables, ConfigError> {
    Ok(Tables {
        targets: required("TARGETS_TABLE")?,
        attempts: required("ATTEMPTS_TABLE")?,
        executions: required("EXECUTIONS_TABLE")?,
        connections: required("CONNECTIONS_TABLE")?,
        rate_limits: required("RATE_LIMITS_TABLE")?,
        stats: required("STATS_TABLE")?,
        suppressions: required("SUPPRESSIONS_TABLE")?,
    })
}

/// How long statistics are kept: `STATS_RETENTION_DAYS` (default 400).
pub fn stats_retention() -> Result<std::time::Duration, ConfigError> {
    let days: u64 = match optional("STATS_RETENTION_DAYS") {
        None => 400,
        Some(v) => {
            v.parse()
                .ok()
                .filter(|d| (1..=3650).contains(d))
                .ok_or(ConfigError::Invalid {
                    name: "STATS_RETENTION_DAYS",
                    reason: "expected a whole number of days, 1 to 3650".into(),
                })?
        }
    };
    Ok(std::time::Duration::from_secs(days * 24 * 3600))
}

/// How long attempts and executions are kept before DynamoDB's TTL removes
/// them: `RECORD_RETENTION_DAYS` (default 30, as `template.yaml`).
pub fn record_retention() -> Result<std::time::Duration, ConfigError> {
    let days: u64 = match optional("RECORD_RETENTION_DAYS") {
        None => 30,
        Some(v) => {
            v.parse()
                .ok()
                .filter(|d| (1..=3650).contains(d))
                .ok_or(ConfigError::Invalid {
                    name: "RECORD_RETENTION_DAYS",
                    reason: "expected a whole number of days, 1 to 3650".into(),
                })?
        }
    };
    Ok(std::time::Duration::from_secs(days * 24 * 3600))
}

/// The retry policy from `RETRY_SCHEDULE_SECONDS` (default `300,900,3600`).
pub fn retry_policy() -> Result<RetryPolicy, ConfigError> {
    let mut policy = RetryPolicy::default();
    if let Some(text) = optional("RETRY_SCHEDULE_SECONDS") {
        policy.schedule =
            RetryPolicy::parse_schedule(&text).map_err(|reason| ConfigError::Invalid {
                name: "RETRY_SCHEDULE_SECONDS",
                reason,
            })?;
    }
    Ok(policy)
}
