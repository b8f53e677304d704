//! DynamoDB adapter for the storage ports. Items are (de)serialised with
//! serde_dynamo; every status change is one conditional `UpdateItem`.

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

mod stats;

/// GSI on the targets table: `report_id` + `active_type` (`active#email`).
pub const TARGETS_BY_REPORT: &str = "by_report";
/// Sparse GSI on the executions table: `pending_shard` + `created_at`, keys
/// only. An execution carries `pending_shard` from its render until every
/// attempt settled: two index writes per execution, none per attempt.
pub const EXECUTIONS_UNSETTLED: &str = "by_unsettled";
/// Keys-only GSI on the attempts table: `delivery_target_id` + `created_at`.
pub const ATTEMPTS_BY_TARGET: &str = "by_target";
/// Keys-only GSI on the attempts table: `report_execution_id` +
/// `delivery_target_id`.
pub const ATTEMPTS_BY_EXECUTION: &str = "by_execution";

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
}

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

/// How a target is stored: the domain fields plus the GSI sort key.
#[derive(Debug, Serialize, Deserialize)]
struct TargetRecord {
    id: String,
    report_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    service_connection_id: Option<String>,
    target_type: String,
    config: serde_json::Value,
    #[serde(default)]
    formats: Vec<crate::domain::target::Format>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    preview_rows: Option<u8>,
    active: bool,
    /// `active#<type>` or `inactive#<type>`: lets one GSI serve "active
    /// targets of a report, optionally by type".
    active_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    disable_requested: Option<crate::domain::target::DisableRequest>,
    #[serde(default)]
    consecutive_failures: u32,
    #[serde(default)]
    version: u64,
    created_at: Timestamp,
    updated_at: Timestamp,
}

/// The stored form of a target.
fn record_of(t: &DeliveryTarget) -> TargetRecord {
    TargetRecord {
        id: t.id.clone(),
        report_id: t.report_id.clone(),
        service_connection_id: t.service_connection_id.clone(),
        target_type: t.config.target_type().to_string(),
        config: t.config.to_json(),
        formats: t.formats.clone(),
        preview_rows: t.preview_rows,
        active: t.active,
        active_type: active_type(t.active, t.config.target_type()),
        disable_requested: t.disable_requested.clone(),
        consecutive_failures: t.consecutive_failures,
        version: t.version,
        created_at: t.created_at,
        updated_at: t.updated_at,
    }
}

/// A stored target, its config checked (URL syntax; the SSRF check runs
/// at send time).
fn target_from(r: TargetRecord) -> Result<DeliveryTarget, StoreError> {
    let config = TargetConfig::from_json(&r.target_type, r.config, true).map_err(|e| {
        StoreError::Invalid {
            id: r.id.clone(),
            reason: e.to_string(),
        }
    })?;
    Ok(DeliveryTarget {
        id: r.id,
        report_id: r.report_id,
        service_connection_id: r.service_connection_id,
        config,
        formats: r.formats,
        preview_rows: r.preview_rows,
        active: r.active,
        disable_requested: r.disable_requested,
        consecutive_failures: r.consecutive_failures,
        version: r.version,
        created_at: r.created_at,
        updated_at: r.updated_at,
    })
}

fn active_type(active: bool, t: TargetType) -> String {
    format!("{}#{}", if active { "active" } else { "inactive" }, t)
}

#[async_trait]
impl TargetStore for DynamoStore {
    async fn put_target(&self, t: &DeliveryTarget) -> Result<(), StoreError> {
        self.put_item(&self.tables.targets, &record_of(t)).await
    }

    async fn create_target(&self, t: &DeliveryTarget) -> Result<bool, StoreError> {
        let mut record = record_of(t);
        record.version = 1;
        let result = self
            .client
            .put_item()
            .table_name(&self.tables.targets)
            .set_item(Some(to_item(&record)?))
            .condition_expression("attribute_not_exists(id)")
            .send()
            .await;
        written(result)
    }

    async fn update_target(
        &self,
        t: &DeliveryTarget,
        expected: u64,
        clear_flags: bool,
    ) -> Result<Versioned, StoreError> {
        let r = record_of(t);
        let mut set = vec![
            "report_id = :report",
            "target_type = :type",
            "config = :config",
            "formats = :formats",
            "active = :active",
            "active_type = :active_type",
            "updated_at = :now",
            "version = :next",
        ];
        let mut remove = Vec::new();
        if r.service_connection_id.is_some() {
            set.push("service_connection_id = :conn");
        } else {
            remove.push("service_connection_id");
        }
        if r.preview_rows.is_some() {
            set.push("preview_rows = :preview_rows");
        } else {
            remove.push("preview_rows");
        }
        if clear_flags {
            set.push("consecutive_failures = :zero");
            set.push("permanent_failures = :zero");
            remove.push("disable_requested");
        }
        let mut expression = format!("SET {}", set.join(", "));
        if !remove.is_empty() {
            expression.push_str(&format!(" REMOVE {}", remove.join(", ")));
        }
        let mut req = self
            .client
            .update_item()
            .table_name(&self.tables.targets)
            .key("id", s(&t.id))
            .update_expression(expression)
            .condition_expression(
                "attribute_exists(id) AND (version = :expected OR (attribute_not_exists(version) AND :expected = :zero))",
            )
            .expression_attribute_values(":report", s(&r.report_id))
            .expression_attribute_values(":type", s(&r.target_type))
            .expression_attribute_values(":config", attribute(&t.id, &r.config)?)
            .expression_attribute_values(":formats", attribute(&t.id, &r.formats)?)
            .expression_attribute_values(":active", AttributeValue::Bool(r.active))
            .expression_attribute_values(":active_type", s(&r.active_type))
            .expression_attribute_values(":now", s(t.updated_at.to_string()))
            .expression_attribute_values(":next", AttributeValue::N((expected + 1).to_string()))
            .expression_attribute_values(":expected", AttributeValue::N(expected.to_string()))
            .expression_attribute_values(":zero", AttributeValue::N("0".into()));
        if let Some(n) = r.preview_rows {
            req =
                req.expression_attribute_values(":preview_rows", AttributeValue::N(n.to_string()));
        }
        if let Some(conn) = &r.service_connection_id {
            req = req.expression_attribute_values(":conn", s(conn));
        }
        match req.send().await {
            Ok(_) => Ok(Versioned::Done(expected + 1)),
            Err(e) if is_condition_failure(&e) => self.version_of(&t.id).await,
            Err(e) => Err(backend(e)),
        }
    }

    async fn delete_target(
        &self,
        id: &str,
        expected: Option<u64>,
    ) -> Result<Versioned, StoreError> {
        let mut req = self
            .client
            .delete_item()
            .table_name(&self.tables.targets)
            .key("id", s(id));
        req = match expected {
            Some(v) => req
                .condition_expression("attribute_exists(id) AND version = :expected")
                .expression_attribute_values(":expected", AttributeValue::N(v.to_string())),
            None => req.condition_expression("attribute_exists(id)"),
        };
        match req.send().await {
            Ok(_) => Ok(Versioned::Done(expected.unwrap_or(0))),
            Err(e) if is_condition_failure(&e) => self.version_of(id).await,
            Err(e) => Err(backend(e)),
        }
    }

    async fn targets_of_report(&self, report_id: &str) -> Result<Vec<DeliveryTarget>, StoreError> {
        let mut pages = self
            .client
            .query()
            .table_name(&self.tables.targets)
            .index_name(TARGETS_BY_REPORT)
            .key_condition_expression("report_id = :r")
            .expression_attribute_values(":r", s(report_id))
            .into_paginator()
            .items()
            .send();
        let mut targets = Vec::new();
        while let Some(item) = pages.next().await {
            let Some(id) = item
                .map_err(backend)?
                .get("id")
                .and_then(|v| v.as_s().ok())
                .cloned()
            else {
                continue;
            };
            // Keys-only index: the items come from the table.
            if let Some(t) = self.get_target(&id).await? {
                targets.push(t);
            }
        }
        targets.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(targets)
    }

    async fn get_target(&self, id: &str) -> Result<Option<DeliveryTarget>, StoreError> {
        let item = self.get_item(&self.tables.targets, id).await?;
        let Some(item) = item else {
            return Ok(None);
        };
        let r: TargetRecord = from_item(id, item)?;
        target_from(r).map(Some)
    }

    async fn flag_for_disabling(
        &self,
        id: &str,
        reason: &str,
        at: Timestamp,
    ) -> Result<(), StoreError> {
        let request = crate::domain::target::DisableRequest {
            at,
            reason: reason.chars().take(500).collect(),
        };
        let value =
            serde_dynamo::to_attribute_value(&request).map_err(|e| StoreError::Invalid {
                id: id.to_owned(),
                reason: e.to_string(),
            })?;
        let result = self
            .client
            .update_item()
            .table_name(&self.tables.targets)
            .key("id", s(id))
            .update_expression("SET disable_requested = :r, updated_at = :at")
            .condition_expression("attribute_exists(id)")
            .expression_attribute_values(":r", value)
            .expression_attribute_values(":at", s(at.to_string()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            // The target was deleted meanwhile: nothing left to flag.
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Ok(())
            }
            Err(e) => Err(backend(e)),
        }
    }

    async fn active_targets(
        &self,
        report_id: &str,
        target_type: Option<TargetType>,
        cursor: Option<String>,
        page_size: i32,
    ) -> Result<Page<TargetRef>, StoreError> {
        let prefix = match target_type {
            Some(t) => active_type(true, t),
            None => "active#".to_owned(),
        };
        let out = self
            .client
            .query()
            .table_name(&self.tables.targets)
            .index_name(TARGETS_BY_REPORT)
            .key_condition_expression("report_id = :r AND begins_with(active_type, :p)")
            .expression_attribute_values(":r", s(report_id))
            .expression_attribute_values(":p", s(prefix))
            .set_exclusive_start_key(decode_cursor(
                cursor,
                &["id", "report_id", "active_type"],
                &[("report_id", report_id)],
            )?)
            .limit(page_size)
            .send()
            .await
            .map_err(backend)?;
        let items = out
            .items
            .unwrap_or_default()
            .into_iter()
            .filter_map(|item| {
                let id = item.get("id")?.as_s().ok()?.clone();
                let kind = item.get("active_type")?.as_s().ok()?;
                let target_type = TargetType::parse(kind.split_once('#')?.1)?;
                Some(TargetRef { id, target_type })
            })
            .collect();
        Ok(Page {
            items,
            next: encode_cursor(out.last_evaluated_key),
        })
    }

    async fn report_known(&self, report_id: &str) -> Result<bool, StoreError> {
        let out = self
            .client
            .query()
            .table_name(&self.tables.targets)
            .index_name(TARGETS_BY_REPORT)
            .key_condition_expression("report_id = :r")
            .expression_attribute_values(":r", s(report_id))
            .limit(1)
            .send()
            .await
            .map_err(backend)?;
        Ok(out.count > 0)
    }

    async fn record_streak(
        &self,
        id: &str,
        streak: super::Streak,
        at: Timestamp,
    ) -> Result<u32, StoreError> {
        use super::Streak;
        let update = match streak {
            Streak::Delivered => {
                "SET consecutive_failures = :zero, permanent_failures = :zero, last_success_at = :at"
            }
            Streak::Failed { permanent: true } => {
                "ADD consecutive_failures :one, permanent_failures :one SET last_failure_at = :at"
            }
            Streak::Failed { permanent: false } => {
                "ADD consecutive_failures :one SET permanent_failures = :zero, last_failure_at = :at"
            }
        };
        let mut req = self
            .client
            .update_item()
            .table_name(&self.tables.targets)
            .key("id", s(id))
            .update_expression(update)
            .condition_expression("attribute_exists(id)")
            .expression_attribute_values(":at", s(at.to_string()))
            .return_values(ReturnValue::UpdatedNew);
        if update.contains(":zero") {
            req = req.expression_attribute_values(":zero", AttributeValue::N("0".into()));
        }
        if update.contains(":one") {
            req = req.expression_attribute_values(":one", AttributeValue::N("1".into()));
        }
        match req.send().await {
            Ok(out) => Ok(out
                .attributes
                .as_ref()
                .and_then(|a| a.get("permanent_failures"))
                .and_then(|v| v.as_n().ok())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)),
            // A deleted target keeps no streak.
            Err(e) if is_condition_failure(&e) => Ok(0),
            Err(e) => Err(backend(e)),
        }
    }

    async fn disable_target(
        &self,
        id: &str,
        target_type: TargetType,
        reason: &str,
        at: Timestamp,
    ) -> Result<bool, StoreError> {
        let request = crate::domain::target::DisableRequest {
            at,
            reason: reason.chars().take(500).collect(),
        };
        let result = self
            .client
            .update_item()
            .table_name(&self.tables.targets)
            .key("id", s(id))
            .update_expression(
                "SET active = :no, active_type = :inactive, disable_requested = :r, \
                 updated_at = :at, version = if_not_exists(version, :zero) + :one",
            )
            .condition_expression("attribute_exists(id) AND active = :yes")
            .expression_attribute_values(":no", AttributeValue::Bool(false))
            .expression_attribute_values(":yes", AttributeValue::Bool(true))
            .expression_attribute_values(":inactive", s(active_type(false, target_type)))
            .expression_attribute_values(":r", attribute(id, &request)?)
            .expression_attribute_values(":at", s(at.to_string()))
            .expression_attribute_values(":zero", AttributeValue::N("0".into()))
            .expression_attribute_values(":one", AttributeValue::N("1".into()))
            .send()
            .await;
        written(result)
    }
}

#[async_trait]
impl AttemptStore for DynamoStore {
    async fn create(&self, attempt: &DeliveryAttempt) -> Result<Created, StoreError> {
        let mut item = to_item(attempt)?;
        item.insert("expires_at".into(), self.expires_at(attempt.created_at));
        let result = self
            .client
            .put_item()
            .table_name(&self.tables.attempts)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(id)")
            .send()
            .await;
        match result {
            Ok(_) => Ok(Created::New(attempt.clone())),
            Err(e) if is_condition_failure(&e) => match AttemptStore::get(self, &attempt.id).await?
            {
                Some(existing) => Ok(Created::Existing(existing)),
                None => Err(StoreError::Backend(format!(
                    "attempt {} reported existing but not found",
                    attempt.id
                ))),
            },
            Err(e) => Err(backend(e)),
        }
    }

    async fn get(&self, id: &str) -> Result<Option<DeliveryAttempt>, StoreError> {
        let item = self.get_item(&self.tables.attempts, id).await?;
        item.map(|item| from_item(id, item)).transpose()
    }

    async fn apply(&self, id: &str, t: &Transition) -> Result<Applied, StoreError> {
        // Read, decide, and write on condition that nothing changed since
        // the read; a lost race reads and decides again.
        for _ in 0..MAX_RACES {
            let Some(current) = AttemptStore::get(self, id).await? else {
                return Ok(Applied::Refused(None));
            };
            let next = match t.decide(&current) {
                Ok(next) => next,
                Err(_) => return Ok(Applied::Refused(Some(current))),
            };
            if self.put_attempt_if(&next, current.version).await? {
                return Ok(Applied::Yes(next));
            }
        }
        Err(StoreError::Backend(format!(
            "attempt {id} changed under {MAX_RACES} writes in a row"
        )))
    }

    async fn apply_from(
        &self,
        seen: &DeliveryAttempt,
        t: &Transition,
    ) -> Result<Applied, StoreError> {
        if let Ok(next) = t.decide(seen)
            && self.put_attempt_if(&next, seen.version).await?
        {
            return Ok(Applied::Yes(next));
        }
        self.apply(&seen.id, t).await
    }

    async fn by_target(
        &self,
        target_id: &str,
        status: Option<AttemptStatus>,
    ) -> Result<Vec<DeliveryAttempt>, StoreError> {
        // The index holds keys only (written once, at creation): the items
        // come from the table, and the status filter applies to them.
        let ids = self
            .index_ids(ATTEMPTS_BY_TARGET, "delivery_target_id = :k", target_id)
            .await?;
        let mut all = self.get_attempts(&ids).await?;
        if let Some(st) = status {
            all.retain(|a| a.status == st);
        }
        Ok(all)
    }

    async fn by_execution(&self, execution_id: &str) -> Result<Vec<DeliveryAttempt>, StoreError> {
        let ids = self
            .index_ids(
                ATTEMPTS_BY_EXECUTION,
                "report_execution_id = :k",
                execution_id,
            )
            .await?;
        self.get_attempts(&ids).await
    }

    async fn attempts_page(
        &self,
        of: &super::AttemptsOf,
        cursor: Option<String>,
        limit: i32,
    ) -> Result<Page<DeliveryAttempt>, StoreError> {
        use super::AttemptsOf;
        let mut q = self
            .client
            .query()
            .table_name(&self.tables.attempts)
            .limit(limit.clamp(1, 100));
        q = match of {
            AttemptsOf::Target { id, since } => {
                let q = q
                    .index_name(ATTEMPTS_BY_TARGET)
                    .scan_index_forward(false)
                    .expression_attribute_values(":k", s(id))
                    .set_exclusive_start_key(decode_cursor(
                        cursor,
                        &["id", "delivery_target_id", "created_at"],
                        &[("delivery_target_id", id)],
                    )?);
                match since {
                    Some(t) => q
                        .key_condition_expression(
                            "delivery_target_id = :k AND created_at >= :since",
                        )
                        .expression_attribute_values(":since", s(t.to_string())),
                    None => q.key_condition_expression("delivery_target_id = :k"),
                }
            }
            AttemptsOf::Execution(id) => q
                .index_name(ATTEMPTS_BY_EXECUTION)
                .key_condition_expression("report_execution_id = :k")
                .expression_attribute_values(":k", s(id))
                .set_exclusive_start_key(decode_cursor(
                    cursor,
                    &["id", "report_execution_id", "delivery_target_id"],
                    &[("report_execution_id", id)],
                )?),
        };
        let out = q.send().await.map_err(backend)?;
        let ids: Vec<String> = out
            .items
            .unwrap_or_default()
            .iter()
            .filter_map(|i| i.get("id")?.as_s().ok().cloned())
            .collect();
        Ok(Page {
            items: self.get_attempts(&ids).await?,
            next: encode_cursor(out.last_evaluated_key),
        })
    }
}

/// Reads and decisions in a row that may lose a race for one attempt
/// before the write gives up (as a temporary error).
const MAX_RACES: usize = 8;

impl DynamoStore {
    /// Writes an attempt's next record on condition that the stored one is
    /// still at `seen`; `false` when it moved on.
    async fn put_attempt_if(&self, next: &DeliveryAttempt, seen: u64) -> Result<bool, StoreError> {
        let mut item = to_item(next)?;
        item.insert("expires_at".into(), self.expires_at(next.created_at));
        let condition = if seen == 0 {
            // Records written before versions count as version 0.
            "attribute_exists(id) AND (attribute_not_exists(version) OR version = :seen)"
        } else {
            "attribute_exists(id) AND version = :seen"
        };
        let result = self
            .client
            .put_item()
            .table_name(&self.tables.attempts)
            .set_item(Some(item))
            .condition_expression(condition)
            .expression_attribute_values(":seen", AttributeValue::N(seen.to_string()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e) if is_condition_failure(&e) => Ok(false),
            Err(e) => Err(backend(e)),
        }
    }

    /// Why a versioned target write was refused: missing, or its version.
    async fn version_of(&self, id: &str) -> Result<Versioned, StoreError> {
        Ok(match self.get_item(&self.tables.targets, id).await? {
            None => Versioned::Missing,
            Some(item) => Versioned::Conflict(
                item.get("version")
                    .and_then(|v| v.as_n().ok())
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0),
            ),
        })
    }

    /// The oldest `created_at` in one shard of the unsettled index.
    async fn oldest_in_shard(&self, shard: u8) -> Result<Option<Timestamp>, StoreError> {
        let out = self
            .client
            .query()
            .table_name(&self.tables.executions)
            .index_name(EXECUTIONS_UNSETTLED)
            .key_condition_expression("pending_shard = :p")
            .expression_attribute_values(":p", s(shard_key(shard)))
            .scan_index_forward(true)
            .limit(1)
            .send()
            .await
            .map_err(backend)?;
        Ok(out
            .items
            .unwrap_or_default()
            .first()
            .and_then(|i| i.get("created_at")?.as_s().ok().cloned())
            .and_then(|t| Timestamp::parse(&t).ok()))
    }

    /// Every attempt id under `key` in a keys-only attempts index.
    async fn index_ids(
        &self,
        index: &str,
        condition: &str,
        key: &str,
    ) -> Result<Vec<String>, StoreError> {
        let mut pages = self
            .client
            .query()
            .table_name(&self.tables.attempts)
            .index_name(index)
            .key_condition_expression(condition)
            .expression_attribute_values(":k", s(key))
            .into_paginator()
            .items()
            .send();
        let mut ids = Vec::new();
        while let Some(item) = pages.next().await {
            if let Some(id) = item.map_err(backend)?.get("id").and_then(|v| v.as_s().ok()) {
                ids.push(id.clone());
            }
        }
        Ok(ids)
    }

    /// Attempts by id, 100 per `BatchGetItem`, retrying unprocessed keys;
    /// in the order given, skipping ids that no longer exist.
    async fn get_attempts(&self, ids: &[String]) -> Result<Vec<DeliveryAttempt>, StoreError> {
        use aws_sdk_dynamodb::types::KeysAndAttributes;
        let mut found: HashMap<String, DeliveryAttempt> = HashMap::new();
        for chunk in ids.chunks(100) {
            let mut keys: Vec<HashMap<String, AttributeValue>> = chunk
                .iter()
                .map(|id| HashMap::from([("id".to_owned(), s(id))]))
                .collect();
            let mut wait = std::time::Duration::from_millis(50);
            while !keys.is_empty() {
                let request = KeysAndAttributes::builder()
                    .set_keys(Some(keys))
                    .consistent_read(true)
                    .build()
                    .map_err(|e| StoreError::Backend(e.to_string()))?;
                let out = self
                    .client
                    .batch_get_item()
                    .request_items(&self.tables.attempts, request)
                    .send()
                    .await
                    .map_err(backend)?;
                for item in out
                    .responses
                    .and_then(|mut r| r.remove(&self.tables.attempts))
                    .unwrap_or_default()
                {
                    let a: DeliveryAttempt = from_item("batch", item)?;
                    found.insert(a.id.clone(), a);
                }
                keys = out
                    .unprocessed_keys
                    .and_then(|mut u| u.remove(&self.tables.attempts))
                    .map(|k| k.keys)
                    .unwrap_or_default();
                if !keys.is_empty() {
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(std::time::Duration::from_secs(2));
                }
            }
        }
        Ok(ids.iter().filter_map(|id| found.remove(id)).collect())
    }
}

#[async_trait]
impl ExecutionStore for DynamoStore {
    async fn put_rendered(&self, e: &ReportExecution) -> Result<ReportExecution, StoreError> {
        let result = self
            .client
            .put_item()
            .table_name(&self.tables.executions)
            .set_item(Some({
                let mut item = to_item(e)?;
                item.insert("expires_at".into(), self.expires_at(e.created_at));
                // Unsettled from birth: a fan-out that dies after writing
                // attempts leaves them where the reconciler looks.
                item.insert("pending_shard".into(), s(pending_shard(&e.id)));
                item
            }))
            .condition_expression("attribute_not_exists(id)")
            .send()
            .await;
        match result {
            Ok(_) => Ok(e.clone()),
            Err(err) if is_condition_failure(&err) => self
                .get_execution(&e.id)
                .await?
                .ok_or_else(|| StoreError::Backend(format!("execution {} vanished", e.id))),
            Err(err) => Err(backend(err)),
        }
    }

    async fn get_execution(&self, id: &str) -> Result<Option<ReportExecution>, StoreError> {
        let item = self.get_item(&self.tables.executions, id).await?;
        item.map(|item| from_item(id, item)).transpose()
    }

    async fn mark_fanned_out(
        &self,
        id: &str,
        count: u64,
        note: Option<&str>,
        at: Timestamp,
    ) -> Result<super::Progress, StoreError> {
        // Unsettled again if a late copy created attempts after a claim (no
        // index write when the key is unchanged).
        let mut update =
            "SET fanned_out_at = :at, target_count = :n, updated_at = :at, pending_shard = :shard"
                .to_owned();
        let mut req = self
            .client
            .update_item()
            .table_name(&self.tables.executions)
            .key("id", s(id))
            .condition_expression("attribute_exists(id)")
            .expression_attribute_values(":at", s(at.to_string()))
            .expression_attribute_values(":n", AttributeValue::N(count.to_string()))
            .expression_attribute_values(":shard", s(pending_shard(id)))
            .return_values(ReturnValue::AllNew);
        if let Some(note) = note {
            update.push_str(", fanout_note = :note");
            req = req.expression_attribute_values(":note", s(note));
        }
        let out = req
            .update_expression(update)
            .send()
            .await
            .map_err(backend)?;
        Ok(progress(out.attributes.as_ref()))
    }

    async fn count_settled(&self, id: &str, n: u64) -> Result<super::Progress, StoreError> {
        let out = self
            .client
            .update_item()
            .table_name(&self.tables.executions)
            .key("id", s(id))
            .update_expression("ADD settled_count :n")
            .condition_expression("attribute_exists(id)")
            .expression_attribute_values(":n", AttributeValue::N(n.to_string()))
            .return_values(ReturnValue::AllNew)
            .send()
            .await
            .map_err(backend)?;
        // ALL_NEW costs no read capacity and carries target_count too.
        Ok(progress(out.attributes.as_ref()))
    }

    async fn claim_outcome(
        &self,
        id: &str,
        at: Timestamp,
        reopened: u64,
    ) -> Result<bool, StoreError> {
        let (same, value) = unchanged(reopened);
        let mut req = self
            .client
            .update_item()
            .table_name(&self.tables.executions)
            .key("id", s(id))
            .update_expression("SET outcome_sent_at = :at REMOVE pending_shard")
            // The caller read every attempt settled; the counter may lag.
            .condition_expression(format!(
                "attribute_exists(target_count) AND attribute_not_exists(outcome_sent_at) AND {same}"
            ))
            .expression_attribute_values(":at", s(at.to_string()));
        if let Some(v) = value {
            req = req.expression_attribute_values(":reopened", v);
        }
        written(req.send().await)
    }

    async fn release_outcome(&self, id: &str) -> Result<(), StoreError> {
        self.client
            .update_item()
            .table_name(&self.tables.executions)
            .key("id", s(id))
            .update_expression("REMOVE outcome_sent_at SET pending_shard = :shard")
            .condition_expression("attribute_exists(id)")
            .expression_attribute_values(":shard", s(pending_shard(id)))
            .send()
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn unsettled(
        &self,
        shard: u8,
        created_before: Timestamp,
        cursor: Option<String>,
        page_size: i32,
    ) -> Result<Page<String>, StoreError> {
        let key = shard_key(shard);
        let out = self
            .client
            .query()
            .table_name(&self.tables.executions)
            .index_name(EXECUTIONS_UNSETTLED)
            .key_condition_expression("pending_shard = :p AND created_at < :before")
            .expression_attribute_values(":p", s(key.clone()))
            .expression_attribute_values(":before", s(created_before.to_string()))
            .scan_index_forward(true)
            .set_exclusive_start_key(decode_cursor(
                cursor,
                &["id", "pending_shard", "created_at"],
                &[("pending_shard", &key)],
            )?)
            .limit(page_size)
            .send()
            .await
            .map_err(backend)?;
        let items = out
            .items
            .unwrap_or_default()
            .into_iter()
            .filter_map(|item| item.get("id")?.as_s().ok().cloned())
            .collect();
        Ok(Page {
            items,
            next: encode_cursor(out.last_evaluated_key),
        })
    }

    async fn mark_unsettled(&self, id: &str) -> Result<(), StoreError> {
        self.client
            .update_item()
            .table_name(&self.tables.executions)
            .key("id", s(id))
            .update_expression("SET pending_shard = :shard ADD reopened :one")
            .condition_expression("attribute_exists(id)")
            .expression_attribute_values(":shard", s(pending_shard(id)))
            .expression_attribute_values(":one", AttributeValue::N("1".into()))
            .send()
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn mark_settled(&self, id: &str, reopened: u64, claimed: bool) -> Result<(), StoreError> {
        let (same, value) = unchanged(reopened);
        // Already out: no write (a refused condition costs one unit, not
        // the index delete).
        let mut condition = format!("attribute_exists(pending_shard) AND {same}");
        if claimed {
            condition.push_str(" AND attribute_exists(outcome_sent_at)");
        }
        let mut req = self
            .client
            .update_item()
            .table_name(&self.tables.executions)
            .key("id", s(id))
            .update_expression("REMOVE pending_shard")
            .condition_expression(condition);
        if let Some(v) = value {
            req = req.expression_attribute_values(":reopened", v);
        }
        written(req.send().await).map(|_| ())
    }

    async fn oldest_unsettled(&self) -> Result<Option<Timestamp>, StoreError> {
        let reads = (0..super::PENDING_SHARDS).map(|shard| self.oldest_in_shard(shard));
        let oldest = futures::future::try_join_all(reads).await?;
        Ok(oldest.into_iter().flatten().min())
    }
}

/// The condition that an execution's `reopened` count is still `seen`,
/// with its value when it needs one.
fn unchanged(seen: u64) -> (&'static str, Option<AttributeValue>) {
    if seen == 0 {
        ("attribute_not_exists(reopened)", None)
    } else {
        (
            "reopened = :reopened",
            Some(AttributeValue::N(seen.to_string())),
        )
    }
}

/// An execution's progress from its stored attributes.
fn progress(item: Option<&HashMap<String, AttributeValue>>) -> super::Progress {
    let num = |k: &str| {
        item.and_then(|i| i.get(k))
            .and_then(|v| v.as_n().ok())
            .and_then(|v| v.parse::<u64>().ok())
    };
    super::Progress {
        settled: num("settled_count").unwrap_or(0),
        target_count: num("target_count"),
    }
}

/// How a connection is stored. With a key configured (`CONNECTIONS_KEY_ID`,
/// always in `template.yaml`) the secrets, retiring ones included, are
/// sealed by envelope encryption ([`crate::keys`]) under a KMS key only
/// deliver and the operator API may use; the record keeps only counts and
/// grace ends in the clear. Plain `secrets` are read from records of
/// stacks without a key.
#[derive(Serialize, Deserialize)]
struct ConnectionRecord {
    id: String,
    kind: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    secrets: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    retiring: Vec<RetiringSecret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sealed: Option<crate::keys::Sealed>,
    /// Current secrets (readable without the key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    secret_count: Option<usize>,
    /// When each retiring secret stops signing (readable without the key).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    retiring_until: Vec<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    created_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    updated_at: Option<Timestamp>,
}

/// A secret kept valid for a while after a rotation.
#[derive(Serialize, Deserialize, Clone)]
struct RetiringSecret {
    secret: String,
    until: Timestamp,
}

/// The secret part of a connection record, sealed as one JSON document.
#[derive(Serialize, Deserialize, Default)]
struct SecretMaterial {
    secrets: Vec<String>,
    #[serde(default)]
    retiring: Vec<RetiringSecret>,
}

fn seal_context(id: &str) -> crate::keys::Context {
    crate::keys::Context::from([("connection_id".to_owned(), id.to_owned())])
}

impl DynamoStore {
    /// A record holding `material`, sealed when a key is configured.
    async fn connection_record_of(
        &self,
        id: &str,
        kind: &str,
        material: SecretMaterial,
        created_at: Option<Timestamp>,
        updated_at: Timestamp,
    ) -> Result<ConnectionRecord, StoreError> {
        let mut record = ConnectionRecord {
            id: id.to_owned(),
            kind: kind.to_owned(),
            secrets: Vec::new(),
            retiring: Vec::new(),
            sealed: None,
            secret_count: Some(material.secrets.len()),
            retiring_until: material.retiring.iter().map(|r| r.until).collect(),
            created_at,
            updated_at: Some(updated_at),
        };
        match &self.sealer {
            Some(sealer) => {
                let plain = serde_json::to_vec(&material).unwrap_or_default();
                record.sealed = Some(sealer.seal(&seal_context(id), &plain).await?);
            }
            None => {
                record.secrets = material.secrets;
                record.retiring = material.retiring;
            }
        }
        Ok(record)
    }

    /// The secrets of a record, opened when sealed.
    async fn material_of(&self, r: &ConnectionRecord) -> Result<SecretMaterial, StoreError> {
        let Some(sealed) = &r.sealed else {
            return Ok(SecretMaterial {
                secrets: r.secrets.clone(),
                retiring: r.retiring.clone(),
            });
        };
        let Some(sealer) = &self.sealer else {
            return Err(StoreError::Refused {
                code: "no_key".into(),
                reason: format!(
                    "connection {} is sealed and no key is configured (CONNECTIONS_KEY_ID)",
                    r.id
                ),
            });
        };
        let plain = sealer.open(&seal_context(&r.id), sealed).await?;
        serde_json::from_slice(&plain).map_err(|_| StoreError::Invalid {
            id: r.id.clone(),
            reason: "sealed secrets are not readable".into(),
        })
    }

    /// The record of a new or replaced connection.
    async fn record_of(
        &self,
        c: &ServiceConnection,
        created_at: Timestamp,
        at: Timestamp,
    ) -> Result<ConnectionRecord, StoreError> {
        let material = SecretMaterial {
            secrets: c
                .credentials
                .secrets()
                .into_iter()
                .map(str::to_owned)
                .collect(),
            retiring: Vec::new(),
        };
        self.connection_record_of(&c.id, c.credentials.kind(), material, Some(created_at), at)
            .await
    }
}

#[async_trait]
impl ConnectionStore for DynamoStore {
    async fn put_connection(&self, c: &ServiceConnection) -> Result<(), StoreError> {
        let now = Timestamp::now();
        let record = self.record_of(c, now, now).await?;
        self.put_item(&self.tables.connections, &record).await
    }

    async fn get_connection(&self, id: &str) -> Result<Option<ServiceConnection>, StoreError> {
        let Some(r) = self.connection_record(id).await? else {
            return Ok(None);
        };
        let now = Timestamp::now();
        let material = self.material_of(&r).await?;
        let mut secrets = material.secrets;
        // Signing uses every live secret: receivers check any of them.
        if r.kind == "webhook_signing" {
            secrets.extend(
                material
                    .retiring
                    .into_iter()
                    .filter(|s| s.until > now)
                    .map(|s| s.secret),
            );
        }
        let credentials =
            Credentials::from_parts(&r.kind, secrets).ok_or_else(|| StoreError::Invalid {
                id: id.to_owned(),
                reason: format!("unknown or empty connection kind {:?}", r.kind),
            })?;
        Ok(Some(ServiceConnection {
            id: r.id,
            credentials,
        }))
    }

    async fn create_connection(
        &self,
        c: &ServiceConnection,
        at: Timestamp,
    ) -> Result<bool, StoreError> {
        let record = self.record_of(c, at, at).await?;
        let result = self
            .client
            .put_item()
            .table_name(&self.tables.connections)
            .set_item(Some(to_item(&record)?))
            .condition_expression("attribute_not_exists(id)")
            .send()
            .await;
        written(result)
    }

    async fn replace_connection(
        &self,
        c: &ServiceConnection,
        at: Timestamp,
    ) -> Result<bool, StoreError> {
        let Some(current) = self.connection_record(&c.id).await? else {
            return Ok(false);
        };
        let mut record = self.record_of(c, at, at).await?;
        record.created_at = current.created_at;
        let result = self
            .client
            .put_item()
            .table_name(&self.tables.connections)
            .set_item(Some(to_item(&record)?))
            .condition_expression("attribute_exists(id)")
            .send()
            .await;
        written(result)
    }

    async fn rotate_connection(
        &self,
        id: &str,
        secret: &str,
        grace_until: Timestamp,
        at: Timestamp,
    ) -> Result<bool, StoreError> {
        let Some(current) = self.connection_record(id).await? else {
            return Ok(false);
        };
        let material = self.material_of(&current).await?;
        let mut retiring: Vec<RetiringSecret> = material
            .retiring
            .iter()
            .filter(|s| s.until > at)
            .cloned()
            .collect();
        retiring.extend(material.secrets.iter().map(|s| RetiringSecret {
            secret: s.clone(),
            until: grace_until,
        }));
        let next = SecretMaterial {
            secrets: vec![secret.to_owned()],
            retiring,
        };
        let record = self
            .connection_record_of(id, &current.kind, next, current.created_at, at)
            .await?;
        // Only over the record that was read: two rotations never interleave.
        let mut req = self
            .client
            .put_item()
            .table_name(&self.tables.connections)
            .set_item(Some(to_item(&record)?));
        req = match current.updated_at {
            Some(t) => req
                .condition_expression("updated_at = :read")
                .expression_attribute_values(":read", s(t.to_string())),
            None => req
                .condition_expression("attribute_exists(id) AND attribute_not_exists(updated_at)"),
        };
        written(req.send().await)
    }

    async fn delete_connection(&self, id: &str) -> Result<bool, StoreError> {
        let result = self
            .client
            .delete_item()
            .table_name(&self.tables.connections)
            .key("id", s(id))
            .condition_expression("attribute_exists(id)")
            .send()
            .await;
        written(result)
    }

    async fn connection_info(&self, id: &str) -> Result<Option<super::ConnectionInfo>, StoreError> {
        let now = Timestamp::now();
        Ok(self.connection_record(id).await?.map(|r| {
            let until: Vec<Timestamp> = if r.sealed.is_some() {
                r.retiring_until.clone()
            } else {
                r.retiring.iter().map(|s| s.until).collect()
            };
            super::ConnectionInfo {
                secrets: r.secret_count.unwrap_or(r.secrets.len()),
                retiring_until: until.into_iter().filter(|u| *u > now).collect(),
                id: r.id,
                kind: r.kind,
                created_at: r.created_at,
                updated_at: r.updated_at,
            }
        }))
    }
}

impl DynamoStore {
    async fn connection_record(&self, id: &str) -> Result<Option<ConnectionRecord>, StoreError> {
        match self.get_item(&self.tables.connections, id).await? {
            Some(item) => from_item(id, item).map(Some),
            None => Ok(None),
        }
    }
}

#[async_trait]
impl RateLimiter for DynamoStore {
    async fn reserve(
        &self,
        key: &str,
        limit: crate::domain::rate::RateLimit,
        now: Timestamp,
    ) -> Result<Option<std::time::Duration>, StoreError> {
        use crate::domain::rate::{Bucket, reserve};
        // Optimistic concurrency on the bucket's version: a lost race reads
        // the bucket again after a short random pause, so that concurrent
        // instances spread out instead of colliding again.
        for round in 0..20u64 {
            if round > 0 {
                let pause = 5 + u64::from(uuid::Uuid::new_v4().as_fields().1) % (10 * round);
                tokio::time::sleep(std::time::Duration::from_millis(pause)).await;
            }
            let item = self.get_item(&self.tables.rate_limits, key).await?;
            let number = |name: &str| item.as_ref()?.get(name)?.as_n().ok()?.parse::<f64>().ok();
            let version = number("version").unwrap_or(0.0) as u64;
            let old = match (number("tokens"), number("at_ms")) {
                (Some(tokens), Some(at)) => Some(Bucket {
                    tokens,
                    at_ms: at as i64,
                }),
                _ => None,
            };
            let (new, wait) = reserve(limit, old, now.unix_millis());
            let expires = now.unix_millis() / 1000 + 3600;
            let mut req = self
                .client
                .put_item()
                .table_name(&self.tables.rate_limits)
                .item("id", s(key))
                .item("tokens", AttributeValue::N(format!("{:.4}", new.tokens)))
                .item("at_ms", AttributeValue::N(new.at_ms.to_string()))
                .item("version", AttributeValue::N((version + 1).to_string()))
                .item("expires_at", AttributeValue::N(expires.to_string()));
            req = match old {
                None => req.condition_expression("attribute_not_exists(id)"),
                Some(_) => req
                    .condition_expression("version = :v")
                    .expression_attribute_values(":v", AttributeValue::N(version.to_string())),
            };
            match req.send().await {
                Ok(_) => return Ok((!wait.is_zero()).then_some(wait)),
                Err(e) if is_condition_failure(&e) => continue,
                Err(e) => return Err(backend(e)),
            }
        }
        Err(StoreError::Backend(format!(
            "rate bucket {key} changed under twenty reservations in a row"
        )))
    }
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
