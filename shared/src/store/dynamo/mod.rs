//! DynamoDB adapter for the storage ports, one file per table. Items are
//! (de)serialised with serde_dynamo; every write that depends on what is
//! stored is one conditional write.

use super::{
    Applied, AttemptStore, ConnectionStore, Created, ExecutionStore, Page, RateLimiter, StoreError,
    TargetRef, TargetStore, Versioned,
};
use crate::domain::connection::Credentials;
use crate::domain::execution::ReportExecution;
use crate::domain::{
    AttemptStatus, DeliveryAttempt, DeliveryTarget, ServiceConnection, TargetConfig, TargetType,
    Timestamp, Transition,
};
use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

mod attempts;
mod connections;
mod executions;
mod rate_limits;
mod stats;
mod suppressions;
mod targets;

/// GSI on the targets table: `report_id` + `active_type` (`active#email`).
pub const TARGETS_BY_REPORT: &str = "by_report";
/// Sparse GSI on the executions table: `pending_shard` + `created_at`, keys
/// only. An execution carries `pending_shard` from its render until its
/// completion is recorded: two index writes per execution.
pub const EXECUTIONS_UNSETTLED: &str = "by_unsettled";
/// Sparse GSI on the attempts table: `open_shard` (its execution's shard)
/// and `report_execution_id`, keys and `created_at`. An attempt carries
/// `open_shard` while [`DeliveryAttempt::is_open`]: put at creation,
/// deleted by the write that settles it, put again by a reopening (two
/// index writes per attempt).
pub const ATTEMPTS_OPEN: &str = "open";
/// Keys-only GSI on the attempts table: `delivery_target_id` + `created_at`.
pub const ATTEMPTS_BY_TARGET: &str = "by_target";
/// Keys-only GSI on the attempts table: `report_execution_id` +
/// `delivery_target_id`.
pub const ATTEMPTS_BY_EXECUTION: &str = "by_execution";

pub use crate::config::Tables;

/// The DynamoDB-backed store.
#[derive(Debug, Clone)]
pub struct DynamoStore {
    client: Client,
    tables: Tables,
    /// How long statistics are kept (their TTL).
    stats_retention: std::time::Duration,
    /// How long attempts and executions are kept (their `expires_at`,
    /// which the tables' TTL acts on).
    record_retention: std::time::Duration,
    /// Seals connection secrets (`None`: stored plain, for stacks without
    /// a key).
    sealer: Option<std::sync::Arc<crate::keys::Sealer>>,
}

impl DynamoStore {
    /// Wraps a client and the table names.
    pub fn new(client: Client, tables: Tables) -> Self {
        Self {
            client,
            tables,
            stats_retention: std::time::Duration::from_secs(400 * 24 * 3600),
            record_retention: std::time::Duration::from_secs(30 * 24 * 3600),
            sealer: None,
        }
    }

    /// Keeps attempts and executions this long after they are created.
    pub fn with_record_retention(mut self, keep: std::time::Duration) -> Self {
        self.record_retention = keep;
        self
    }

    /// The `expires_at` (epoch seconds, for the TTL) of a record created at
    /// `at`.
    fn expires_at(&self, at: Timestamp) -> AttributeValue {
        let keep = i64::try_from(self.record_retention.as_secs()).unwrap_or(i64::MAX);
        AttributeValue::N((at.unix_millis() / 1000).saturating_add(keep).to_string())
    }

    /// Seals connection secrets with `sealer` (`None`: stores them plain).
    pub fn with_sealer(mut self, sealer: Option<std::sync::Arc<crate::keys::Sealer>>) -> Self {
        self.sealer = sealer;
        self
    }

    /// Keeps statistics this long.
    pub fn with_stats_retention(mut self, keep: std::time::Duration) -> Self {
        self.stats_retention = keep;
        self
    }

    /// Reads the item with key `id` (strongly consistent).
    async fn get_item(
        &self,
        table: &str,
        id: &str,
    ) -> Result<Option<HashMap<String, AttributeValue>>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(table)
            .key("id", s(id))
            .consistent_read(true)
            .send()
            .await
            .map_err(backend)?;
        Ok(out.item)
    }

    /// Writes a whole item, unconditionally.
    async fn put_item<T: Serialize>(&self, table: &str, value: &T) -> Result<(), StoreError> {
        self.client
            .put_item()
            .table_name(table)
            .set_item(Some(to_item(value)?))
            .send()
            .await
            .map_err(backend)?;
        Ok(())
    }
}

fn backend<E: ProvideErrorMetadata + std::fmt::Debug>(e: SdkError<E, HttpResponse>) -> StoreError {
    match &e {
        SdkError::ServiceError(s) => {
            let err = s.err();
            let code = err.code().unwrap_or("unknown");
            let detail = format!("{code}: {}", err.message().unwrap_or(""));
            if is_retryable_service_error(code, s.raw().status().as_u16()) {
                StoreError::Backend(detail)
            } else {
                StoreError::Refused {
                    code: code.to_owned(),
                    reason: detail,
                }
            }
        }
        // The request could not be built: retrying the same one won't help.
        SdkError::ConstructionFailure(_) => StoreError::Refused {
            code: "construction_failure".into(),
            reason: format!("{e:?}").chars().take(300).collect(),
        },
        // Timeouts, connection failures and unreadable answers.
        other => StoreError::Backend(format!("{other:?}").chars().take(300).collect()),
    }
}

/// Whether a DynamoDB service error is worth retrying: throttling, server
/// errors and transaction conflicts are; validation, access and missing
/// resources are not.
pub fn is_retryable_service_error(code: &str, status: u16) -> bool {
    const TEMPORARY: [&str; 9] = [
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "RequestLimitExceeded",
        "InternalServerError",
        "InternalFailure",
        "ServiceUnavailable",
        "TransactionConflictException",
        "TransactionInProgressException",
        "RequestTimeout",
    ];
    TEMPORARY.contains(&code) || status >= 500 || status == 429 || status == 408
}

/// A conditional write's outcome: `true` when it landed, `false` when its
/// condition refused it, an error otherwise.
fn written<O, E: ProvideErrorMetadata + std::fmt::Debug>(
    result: Result<O, SdkError<E, HttpResponse>>,
) -> Result<bool, StoreError> {
    match result {
        Ok(_) => Ok(true),
        Err(e) if is_condition_failure(&e) => Ok(false),
        Err(e) => Err(backend(e)),
    }
}

fn is_condition_failure<E: ProvideErrorMetadata, R>(e: &SdkError<E, R>) -> bool {
    matches!(e, SdkError::ServiceError(s) if s.err().code() == Some("ConditionalCheckFailedException"))
}

/// An attempt as stored: its fields, when it expires, and the sparse
/// `open_shard` key while it is open. Every write of an attempt goes
/// through here, so the index follows the record with no writer of its own.
fn attempt_item(
    store: &DynamoStore,
    a: &DeliveryAttempt,
) -> Result<HashMap<String, AttributeValue>, StoreError> {
    let mut item = to_item(a)?;
    item.insert("expires_at".into(), store.expires_at(a.created_at));
    if a.is_open() {
        item.insert(
            "open_shard".into(),
            s(pending_shard(&a.report_execution_id)),
        );
    }
    Ok(item)
}

fn to_item<T: Serialize>(value: &T) -> Result<HashMap<String, AttributeValue>, StoreError> {
    serde_dynamo::to_item(value).map_err(|e| StoreError::Backend(format!("encode: {e}")))
}

fn from_item<T: for<'de> Deserialize<'de>>(
    id: &str,
    item: HashMap<String, AttributeValue>,
) -> Result<T, StoreError> {
    serde_dynamo::from_item(item).map_err(|e| StoreError::Invalid {
        id: id.to_owned(),
        reason: e.to_string(),
    })
}

/// One value as an attribute.
fn attribute<T: Serialize>(id: &str, v: &T) -> Result<AttributeValue, StoreError> {
    serde_dynamo::to_attribute_value(v).map_err(|e| StoreError::Invalid {
        id: id.to_owned(),
        reason: e.to_string(),
    })
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn encode_cursor(key: Option<HashMap<String, AttributeValue>>) -> Option<String> {
    let key = key?;
    let plain: HashMap<String, String> = key
        .into_iter()
        .filter_map(|(k, v)| v.as_s().ok().map(|s| (k, s.clone())))
        .collect();
    serde_json::to_vec(&plain)
        .ok()
        .map(|b| URL_SAFE_NO_PAD.encode(b))
}

/// Decodes a cursor, accepting only the index's key attributes (each a
/// plain, bounded string) and the values a query pins (e.g. its report).
fn decode_cursor(
    cursor: Option<String>,
    keys: &[&str],
    pinned: &[(&str, &str)],
) -> Result<Option<HashMap<String, AttributeValue>>, StoreError> {
    let Some(cursor) = cursor else {
        return Ok(None);
    };
    let invalid = |reason: String| StoreError::Invalid {
        id: "cursor".into(),
        reason,
    };
    if cursor.len() > 4096 {
        return Err(invalid("longer than 4096 characters".into()));
    }
    let bytes = URL_SAFE_NO_PAD
        .decode(cursor.as_bytes())
        .map_err(|_| invalid("not base64url".into()))?;
    let plain: HashMap<String, String> =
        serde_json::from_slice(&bytes).map_err(|e| invalid(format!("not a key map: {e}")))?;
    if plain.len() != keys.len() || keys.iter().any(|k| !plain.contains_key(*k)) {
        return Err(invalid(format!("must hold exactly the keys {keys:?}")));
    }
    if plain.values().any(|v| v.is_empty() || v.len() > 1024) {
        return Err(invalid("a key value is empty or too long".into()));
    }
    for (k, want) in pinned {
        if plain.get(*k).map(String::as_str) != Some(*want) {
            return Err(invalid(format!("belongs to another {k}")));
        }
    }
    Ok(Some(plain.into_iter().map(|(k, v)| (k, s(v))).collect()))
}

/// The unsettled-index shard of an execution id.
pub fn pending_shard(id: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(id.as_bytes());
    shard_key(digest[0] % super::PENDING_SHARDS)
}

fn shard_key(shard: u8) -> String {
    format!("p{shard:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttling_and_server_errors_are_temporary_validation_and_access_are_not() {
        for (code, status) in [
            ("ProvisionedThroughputExceededException", 400),
            ("ThrottlingException", 400),
            ("InternalServerError", 500),
            ("Whatever", 503),
        ] {
            assert!(is_retryable_service_error(code, status), "{code}");
        }
        for (code, status) in [
            ("ValidationException", 400),
            ("AccessDeniedException", 400),
            ("ResourceNotFoundException", 400),
            ("UnrecognizedClientException", 400),
        ] {
            assert!(!is_retryable_service_error(code, status), "{code}");
        }
    }

    #[test]
    fn cursors_must_be_well_formed_and_belong_to_the_query() {
        let enc = |v: serde_json::Value| Some(URL_SAFE_NO_PAD.encode(v.to_string()));
        let keys = ["id", "report_id", "active_type"];
        let pinned = [("report_id", "r1")];
        let good =
            serde_json::json!({"id": "t1", "report_id": "r1", "active_type": "active#email"});
        assert!(decode_cursor(enc(good), &keys, &pinned).is_ok());
        let other_report =
            serde_json::json!({"id": "t1", "report_id": "r2", "active_type": "active#email"});
        for bad in [
            Some("%%%".to_owned()),
            Some(URL_SAFE_NO_PAD.encode("[1,2]")),
            enc(serde_json::json!({"id": "t1"})),
            enc(serde_json::json!({"id": 1, "report_id": "r1", "active_type": "x"})),
            enc(serde_json::json!({"id": "", "report_id": "r1", "active_type": "x"})),
            enc(other_report),
            Some("A".repeat(5000)),
        ] {
            let err = decode_cursor(bad.clone(), &keys, &pinned).expect_err("refused");
            assert!(!err.is_retryable(), "{bad:?}");
        }
    }

    #[test]
    fn pending_shards_are_stable_and_spread() {
        assert_eq!(pending_shard("att_1"), pending_shard("att_1"));
        let shards: std::collections::BTreeSet<String> = (0..400)
            .map(|i| pending_shard(&crate::domain::attempt::attempt_id("e", &i.to_string())))
            .collect();
        assert_eq!(shards.len(), usize::from(super::super::PENDING_SHARDS));
    }
}
