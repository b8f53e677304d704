//! The targets table: targets with their GSI sort key (`active_type`),
//! versioned writes (optimistic concurrency) and failure streaks.

use super::*;

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
        streak: super::super::Streak,
        at: Timestamp,
    ) -> Result<u32, StoreError> {
        use super::super::Streak;
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

impl DynamoStore {
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
}
