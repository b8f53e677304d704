//! DynamoDB adapter for the storage ports. Items are (de)serialised with
//! serde_dynamo; every status change is one conditional `UpdateItem`.

use super::{
    Applied, AttemptStore, ConnectionStore, Created, ExecutionStore, Page, StoreError, TargetRef,
    TargetStore,
};
use crate::domain::connection::Credentials;
use crate::domain::execution::ReportExecution;
use crate::domain::{
    AttemptStatus, DeliveryAttempt, DeliveryTarget, ServiceConnection, TargetConfig, TargetType,
    Timestamp, Transition,
};
use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// GSI on the targets table: `report_id` + `active_type` (`active#email`).
pub const TARGETS_BY_REPORT: &str = "by_report";
/// GSI on the attempts table: `status` + `created_at`.
pub const ATTEMPTS_BY_STATUS: &str = "by_status";
/// GSI on the attempts table: `delivery_target_id` + `status`.
pub const ATTEMPTS_BY_TARGET: &str = "by_target";
/// GSI on the attempts table: `report_execution_id` + `delivery_target_id`.
pub const ATTEMPTS_BY_EXECUTION: &str = "by_execution";

/// Table names, from the function's environment.
#[derive(Debug, Clone)]
pub struct Tables {
    pub targets: String,
    pub attempts: String,
    pub executions: String,
    pub connections: String,
}

/// The DynamoDB-backed store.
#[derive(Debug, Clone)]
pub struct DynamoStore {
    client: Client,
    tables: Tables,
}

impl DynamoStore {
    /// Wraps a client and the table names.
    pub fn new(client: Client, tables: Tables) -> Self {
        Self { client, tables }
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

fn backend<E: ProvideErrorMetadata + std::fmt::Debug, R: std::fmt::Debug>(
    e: SdkError<E, R>,
) -> StoreError {
    let detail = match &e {
        SdkError::ServiceError(s) => {
            let err = s.err();
            format!(
                "{}: {}",
                err.code().unwrap_or("unknown"),
                err.message().unwrap_or("")
            )
        }
        other => format!("{other:?}").chars().take(300).collect(),
    };
    StoreError::Backend(detail)
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

fn decode_cursor(
    cursor: Option<String>,
) -> Result<Option<HashMap<String, AttributeValue>>, StoreError> {
    let Some(cursor) = cursor else {
        return Ok(None);
    };
    let bytes = URL_SAFE_NO_PAD
        .decode(cursor.as_bytes())
        .map_err(|_| StoreError::Invalid {
            id: "cursor".into(),
            reason: "not base64".into(),
        })?;
    let plain: HashMap<String, String> =
        serde_json::from_slice(&bytes).map_err(|e| StoreError::Invalid {
            id: "cursor".into(),
            reason: e.to_string(),
        })?;
    Ok(Some(plain.into_iter().map(|(k, v)| (k, s(v))).collect()))
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
    active: bool,
    /// `active#<type>` or `inactive#<type>`: lets one GSI serve "active
    /// targets of a report, optionally by type".
    active_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    disable_requested: Option<crate::domain::target::DisableRequest>,
    created_at: Timestamp,
    updated_at: Timestamp,
}

fn active_type(active: bool, t: TargetType) -> String {
    format!("{}#{}", if active { "active" } else { "inactive" }, t)
}

#[async_trait]
impl TargetStore for DynamoStore {
    async fn put_target(&self, t: &DeliveryTarget) -> Result<(), StoreError> {
        let record = TargetRecord {
            id: t.id.clone(),
            report_id: t.report_id.clone(),
            service_connection_id: t.service_connection_id.clone(),
            target_type: t.config.target_type().to_string(),
            config: t.config.to_json(),
            formats: t.formats.clone(),
            active: t.active,
            active_type: active_type(t.active, t.config.target_type()),
            disable_requested: t.disable_requested.clone(),
            created_at: t.created_at,
            updated_at: t.updated_at,
        };
        self.put_item(&self.tables.targets, &record).await
    }

    async fn get_target(&self, id: &str) -> Result<Option<DeliveryTarget>, StoreError> {
        let item = self.get_item(&self.tables.targets, id).await?;
        let Some(item) = item else {
            return Ok(None);
        };
        let r: TargetRecord = from_item(id, item)?;
        // Stored URLs get the syntax check here; the SSRF check runs at send time.
        let config = TargetConfig::from_json(&r.target_type, r.config, true).map_err(|e| {
            StoreError::Invalid {
                id: id.to_owned(),
                reason: e.to_string(),
            }
        })?;
        Ok(Some(DeliveryTarget {
            id: r.id,
            report_id: r.report_id,
            service_connection_id: r.service_connection_id,
            config,
            formats: r.formats,
            active: r.active,
            disable_requested: r.disable_requested,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }))
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
            .set_exclusive_start_key(decode_cursor(cursor)?)
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
}

#[async_trait]
impl AttemptStore for DynamoStore {
    async fn create(&self, attempt: &DeliveryAttempt) -> Result<Created, StoreError> {
        let result = self
            .client
            .put_item()
            .table_name(&self.tables.attempts)
            .set_item(Some(to_item(attempt)?))
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
        let mut names = HashMap::from([("#s".to_owned(), "status".to_owned())]);
        let mut values: HashMap<String, AttributeValue> =
            HashMap::from([(":to".to_owned(), s(t.to().as_str()))]);
        let mut set = vec!["#s = :to".to_owned()];
        let mut remove: Vec<&str> = Vec::new();
        let condition: String;
        let put_metadata =
            |meta: &std::collections::BTreeMap<String, String>,
             set: &mut Vec<String>,
             names: &mut HashMap<String, String>,
             values: &mut HashMap<String, AttributeValue>| {
                for (i, (k, v)) in meta.iter().enumerate() {
                    names.insert(format!("#m{i}"), k.clone());
                    values.insert(format!(":m{i}"), s(v.clone()));
                    set.push(format!("metadata.#m{i} = :m{i}"));
                }
            };
        let lease_held = "#s = :processing AND lease_token = :tok";
        values.insert(":processing".into(), s("processing"));
        match t {
            Transition::Begin {
                token,
                now,
                lease_until,
            } => {
                condition =
                    "#s IN (:queued, :failed) OR (#s = :processing AND lease_expires_at < :now)"
                        .into();
                values.insert(":queued".into(), s("queued"));
                values.insert(":failed".into(), s("failed"));
                values.insert(":now".into(), s(now.to_string()));
                values.insert(":tok".into(), s(token.clone()));
                values.insert(":until".into(), s(lease_until.to_string()));
                set.extend([
                    "lease_token = :tok".into(),
                    "lease_expires_at = :until".into(),
                    "started_at = :now".into(),
                    "updated_at = :now".into(),
                ]);
            }
            Transition::Deliver {
                token,
                now,
                metadata,
            } => {
                condition = lease_held.into();
                values.insert(":tok".into(), s(token.clone()));
                values.insert(":now".into(), s(now.to_string()));
                set.extend(["delivered_at = :now".into(), "updated_at = :now".into()]);
                put_metadata(metadata, &mut set, &mut names, &mut values);
                remove.extend(["lease_token", "lease_expires_at"]);
            }
            Transition::ScheduleRetry { token, error } => {
                condition = lease_held.into();
                values.insert(":tok".into(), s(token.clone()));
                values.insert(":err".into(), AttributeValue::M(to_item(error)?));
                values.insert(":at".into(), s(error.at.to_string()));
                values.insert(":one".into(), AttributeValue::N("1".into()));
                set.extend([
                    "retry_count = retry_count + :one".into(),
                    "last_error = :err".into(),
                    "updated_at = :at".into(),
                ]);
                remove.extend(["lease_token", "lease_expires_at"]);
            }
            Transition::Fail { token, error } => {
                match token {
                    Some(token) => {
                        condition = lease_held.into();
                        values.insert(":tok".into(), s(token.clone()));
                    }
                    None => {
                        condition = "#s = :queued".into();
                        values.insert(":queued".into(), s("queued"));
                    }
                }
                values.insert(":err".into(), AttributeValue::M(to_item(error)?));
                values.insert(":at".into(), s(error.at.to_string()));
                set.extend([
                    "last_error = :err".into(),
                    "failed_at = :at".into(),
                    "updated_at = :at".into(),
                ]);
                remove.extend(["lease_token", "lease_expires_at"]);
            }
            Transition::Annotate { token, metadata } => {
                condition = lease_held.into();
                values.insert(":tok".into(), s(token.clone()));
                put_metadata(metadata, &mut set, &mut names, &mut values);
            }
        }
        if !condition.contains(":processing") {
            values.remove(":processing");
        }
        let mut update = format!("SET {}", set.join(", "));
        if !remove.is_empty() {
            update.push_str(&format!(" REMOVE {}", remove.join(", ")));
        }
        let result = self
            .client
            .update_item()
            .table_name(&self.tables.attempts)
            .key("id", s(id))
            .update_expression(update)
            .condition_expression(format!("attribute_exists(id) AND ({condition})"))
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(Some(values))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        match result {
            Ok(out) => {
                let item = out.attributes.unwrap_or_default();
                Ok(Applied::Yes(from_item(id, item)?))
            }
            Err(e) if is_condition_failure(&e) => {
                Ok(Applied::Refused(AttemptStore::get(self, id).await?))
            }
            Err(e) => Err(backend(e)),
        }
    }

    async fn mark_enqueued(&self, id: &str, at: Timestamp) -> Result<(), StoreError> {
        self.client
            .update_item()
            .table_name(&self.tables.attempts)
            .key("id", s(id))
            .update_expression("SET enqueued_at = :at")
            .condition_expression("attribute_exists(id)")
            .expression_attribute_values(":at", s(at.to_string()))
            .send()
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn by_status(
        &self,
        status: AttemptStatus,
        cursor: Option<String>,
        page_size: i32,
    ) -> Result<Page<DeliveryAttempt>, StoreError> {
        let out = self
            .client
            .query()
            .table_name(&self.tables.attempts)
            .index_name(ATTEMPTS_BY_STATUS)
            .key_condition_expression("#s = :s")
            .expression_attribute_names("#s", "status")
            .expression_attribute_values(":s", s(status.as_str()))
            .scan_index_forward(true)
            .set_exclusive_start_key(decode_cursor(cursor)?)
            .limit(page_size)
            .send()
            .await
            .map_err(backend)?;
        let items = out
            .items
            .unwrap_or_default()
            .into_iter()
            .map(|item| from_item("by_status", item))
            .collect::<Result<_, _>>()?;
        Ok(Page {
            items,
            next: encode_cursor(out.last_evaluated_key),
        })
    }

    async fn by_target(
        &self,
        target_id: &str,
        status: Option<AttemptStatus>,
    ) -> Result<Vec<DeliveryAttempt>, StoreError> {
        let mut q = self
            .client
            .query()
            .table_name(&self.tables.attempts)
            .index_name(ATTEMPTS_BY_TARGET)
            .expression_attribute_values(":t", s(target_id));
        q = match status {
            Some(st) => q
                .key_condition_expression("delivery_target_id = :t AND #s = :s")
                .expression_attribute_names("#s", "status")
                .expression_attribute_values(":s", s(st.as_str())),
            None => q.key_condition_expression("delivery_target_id = :t"),
        };
        let mut pages = q.into_paginator().items().send();
        let mut all = Vec::new();
        while let Some(item) = pages.next().await {
            all.push(from_item(target_id, item.map_err(backend)?)?);
        }
        Ok(all)
    }

    async fn by_execution(&self, execution_id: &str) -> Result<Vec<DeliveryAttempt>, StoreError> {
        let mut pages = self
            .client
            .query()
            .table_name(&self.tables.attempts)
            .index_name(ATTEMPTS_BY_EXECUTION)
            .key_condition_expression("report_execution_id = :e")
            .expression_attribute_values(":e", s(execution_id))
            .into_paginator()
            .items()
            .send();
        let mut all = Vec::new();
        while let Some(item) = pages.next().await {
            all.push(from_item(execution_id, item.map_err(backend)?)?);
        }
        Ok(all)
    }
}

#[async_trait]
impl ExecutionStore for DynamoStore {
    async fn put_rendered(&self, e: &ReportExecution) -> Result<ReportExecution, StoreError> {
        let result = self
            .client
            .put_item()
            .table_name(&self.tables.executions)
            .set_item(Some(to_item(e)?))
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

    async fn mark_fanned_out(&self, id: &str, count: u64, at: Timestamp) -> Result<(), StoreError> {
        self.client
            .update_item()
            .table_name(&self.tables.executions)
            .key("id", s(id))
            .update_expression("SET fanned_out_at = :at, target_count = :n, updated_at = :at")
            .condition_expression("attribute_exists(id)")
            .expression_attribute_values(":at", s(at.to_string()))
            .expression_attribute_values(":n", AttributeValue::N(count.to_string()))
            .send()
            .await
            .map_err(backend)?;
        Ok(())
    }
}

/// How a connection is stored. The secrets are plain strings at rest in a
/// table encrypted with KMS and readable only by the deliver role.
#[derive(Serialize, Deserialize)]
struct ConnectionRecord {
    id: String,
    kind: String,
    secrets: Vec<String>,
}

#[async_trait]
impl ConnectionStore for DynamoStore {
    async fn put_connection(&self, c: &ServiceConnection) -> Result<(), StoreError> {
        let record = ConnectionRecord {
            id: c.id.clone(),
            kind: c.credentials.kind().to_owned(),
            secrets: c
                .credentials
                .secrets()
                .into_iter()
                .map(str::to_owned)
                .collect(),
        };
        self.put_item(&self.tables.connections, &record).await
    }

    async fn get_connection(&self, id: &str) -> Result<Option<ServiceConnection>, StoreError> {
        let item = self.get_item(&self.tables.connections, id).await?;
        let Some(item) = item else {
            return Ok(None);
        };
        let r: ConnectionRecord = from_item(id, item)?;
        let credentials =
            Credentials::from_parts(&r.kind, r.secrets).ok_or_else(|| StoreError::Invalid {
                id: id.to_owned(),
                reason: format!("unknown or empty connection kind {:?}", r.kind),
            })?;
        Ok(Some(ServiceConnection {
            id: r.id,
            credentials,
        }))
    }
}
