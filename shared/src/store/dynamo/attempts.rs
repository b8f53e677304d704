//! The attempts table: every change is [`Transition::decide`] on the record
//! as read, written with one `PutItem` conditioned on its `version` (the
//! sparse `open` key follows the record, see `attempt_item`); reads
//! through the keys-only indexes batch-get the items.

use super::*;
use crate::store::MAX_RACES;

#[async_trait]
impl AttemptStore for DynamoStore {
    async fn create(&self, attempt: &DeliveryAttempt) -> Result<Created, StoreError> {
        let item = attempt_item(self, attempt)?;
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
        let mut tried: Option<DeliveryAttempt> = None;
        for _ in 0..MAX_RACES {
            let Some(current) = AttemptStore::get(self, id).await? else {
                return Ok(Applied::Refused(None));
            };
            if tried.as_ref() == Some(&current) {
                // Our own write landed though its answer said otherwise (the
                // SDK repeated a put whose first answer was lost).
                return Ok(Applied::Yes(current));
            }
            let next = match t.decide(&current) {
                Ok(next) => next,
                Err(_) => return Ok(Applied::Refused(Some(current))),
            };
            if self.put_attempt_if(&next, current.version).await? {
                return Ok(Applied::Yes(next));
            }
            tried = Some(next);
        }
        Err(StoreError::Backend(format!(
            "attempt {id} changed under {MAX_RACES} writes in a row"
        )))
    }

    async fn apply_reopening(&self, id: &str, t: &Transition) -> Result<Applied, StoreError> {
        use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
        use aws_sdk_dynamodb::types::{Put, TransactWriteItem, Update};
        for _ in 0..MAX_RACES {
            let Some(current) = AttemptStore::get(self, id).await? else {
                return Ok(Applied::Refused(None));
            };
            let next = match t.decide(&current) {
                Ok(next) => next,
                Err(_) => return Ok(Applied::Refused(Some(current))),
            };
            let (condition, seen) = version_condition(current.version);
            let item = attempt_item(self, &next)?;
            let put = Put::builder()
                .table_name(&self.tables.attempts)
                .set_item(Some(item))
                .condition_expression(condition)
                .expression_attribute_values(":seen", seen)
                .build()
                .map_err(|e| StoreError::Backend(format!("transaction: {e}")))?;
            let execution = &next.report_execution_id;
            let reopen = Update::builder()
                .table_name(&self.tables.executions)
                .key("id", s(execution))
                .update_expression("SET pending_shard = :shard ADD reopened :one")
                .condition_expression("attribute_exists(id)")
                .expression_attribute_values(":shard", s(pending_shard(execution)))
                .expression_attribute_values(":one", AttributeValue::N("1".into()))
                .build()
                .map_err(|e| StoreError::Backend(format!("transaction: {e}")))?;
            let result = self
                .client
                .transact_write_items()
                .transact_items(TransactWriteItem::builder().put(put).build())
                .transact_items(TransactWriteItem::builder().update(reopen).build())
                .send()
                .await;
            match result {
                Ok(_) => return Ok(Applied::Yes(next)),
                Err(e) => {
                    let reasons: Vec<Option<String>> = match e.as_service_error() {
                        Some(TransactWriteItemsError::TransactionCanceledException(c)) => c
                            .cancellation_reasons()
                            .iter()
                            .map(|r| r.code().map(str::to_owned))
                            .collect(),
                        _ => return Err(backend(e)),
                    };
                    let failed = |i: usize| {
                        reasons.get(i).cloned().flatten().as_deref()
                            == Some("ConditionalCheckFailed")
                    };
                    if failed(1) {
                        return Err(StoreError::Refused {
                            code: "execution_gone".into(),
                            reason: format!("execution {execution} is no longer recorded"),
                        });
                    }
                    if !failed(0) {
                        return Err(StoreError::Backend(format!(
                            "reopening {id} was cancelled: {reasons:?}"
                        )));
                    }
                    // The attempt moved on since the read: decide again.
                }
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
        if let Ok(next) = t.decide(seen) {
            if self.put_attempt_if(&next, seen.version).await? {
                return Ok(Applied::Yes(next));
            }
            if AttemptStore::get(self, &seen.id).await?.as_ref() == Some(&next) {
                // Our own write landed though its answer said otherwise.
                return Ok(Applied::Yes(next));
            }
        }
        self.apply(&seen.id, t).await
    }

    async fn apply_once(
        &self,
        seen: &DeliveryAttempt,
        t: &Transition,
    ) -> Result<Option<DeliveryAttempt>, StoreError> {
        let Ok(next) = t.decide(seen) else {
            return Ok(None);
        };
        Ok(self
            .put_attempt_if(&next, seen.version)
            .await?
            .then_some(next))
    }

    async fn open_page(
        &self,
        shard: u8,
        created_before: Timestamp,
        cursor: Option<String>,
        limit: i32,
    ) -> Result<Page<DeliveryAttempt>, StoreError> {
        let key = shard_key(shard);
        let out = self
            .client
            .query()
            .table_name(&self.tables.attempts)
            .index_name(ATTEMPTS_OPEN)
            .key_condition_expression("open_shard = :p")
            .filter_expression("created_at < :before")
            .expression_attribute_values(":p", s(key.clone()))
            .expression_attribute_values(":before", s(created_before.to_string()))
            .set_exclusive_start_key(decode_cursor(
                cursor,
                &["id", "open_shard", "report_execution_id"],
                &[("open_shard", &key)],
            )?)
            .limit(limit.clamp(1, 100))
            .send()
            .await
            .map_err(backend)?;
        let ids = item_ids(out.items);
        Ok(Page {
            items: self.get_attempts(&ids).await?,
            next: encode_cursor(out.last_evaluated_key),
        })
    }

    async fn open_of_execution(
        &self,
        execution_id: &str,
        limit: i32,
    ) -> Result<Vec<String>, StoreError> {
        let out = self
            .client
            .query()
            .table_name(&self.tables.attempts)
            .index_name(ATTEMPTS_OPEN)
            .key_condition_expression("open_shard = :p AND report_execution_id = :e")
            .expression_attribute_values(":p", s(pending_shard(execution_id)))
            .expression_attribute_values(":e", s(execution_id))
            .limit(limit.clamp(1, 100))
            .send()
            .await
            .map_err(backend)?;
        Ok(item_ids(out.items))
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
        of: &super::super::AttemptsOf,
        cursor: Option<String>,
        limit: i32,
    ) -> Result<Page<DeliveryAttempt>, StoreError> {
        use super::super::AttemptsOf;
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
            AttemptsOf::Execution { id, target, since } => {
                let mut q = q
                    .index_name(ATTEMPTS_BY_EXECUTION)
                    .expression_attribute_values(":k", s(id))
                    .set_exclusive_start_key(decode_cursor(
                        cursor,
                        &["id", "report_execution_id", "delivery_target_id"],
                        &[("report_execution_id", id)],
                    )?);
                q = match target {
                    Some(t) => q
                        .key_condition_expression(
                            "report_execution_id = :k AND delivery_target_id = :t",
                        )
                        .expression_attribute_values(":t", s(t)),
                    None => q.key_condition_expression("report_execution_id = :k"),
                };
                match since {
                    Some(t) => q
                        .filter_expression("created_at >= :since")
                        .expression_attribute_values(":since", s(t.to_string())),
                    None => q,
                }
            }
        };
        let out = q.send().await.map_err(backend)?;
        let ids = item_ids(out.items);
        Ok(Page {
            items: self.get_attempts(&ids).await?,
            next: encode_cursor(out.last_evaluated_key),
        })
    }
}

impl DynamoStore {
    /// Writes an attempt's next record on condition that the stored one is
    /// still at `seen`; `false` when it moved on.
    async fn put_attempt_if(&self, next: &DeliveryAttempt, seen: u64) -> Result<bool, StoreError> {
        let item = attempt_item(self, next)?;
        let (condition, seen) = version_condition(seen);
        let result = self
            .client
            .put_item()
            .table_name(&self.tables.attempts)
            .set_item(Some(item))
            .condition_expression(condition)
            .expression_attribute_values(":seen", seen)
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e) if is_condition_failure(&e) => Ok(false),
            Err(e) => Err(backend(e)),
        }
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

/// The `id`s of a query's items.
fn item_ids(items: Option<Vec<HashMap<String, AttributeValue>>>) -> Vec<String> {
    items
        .unwrap_or_default()
        .iter()
        .filter_map(|i| i.get("id")?.as_s().ok().cloned())
        .collect()
}

/// The condition that a stored attempt is still at version `seen`, and the
/// value of `:seen`.
fn version_condition(seen: u64) -> (&'static str, AttributeValue) {
    let condition = if seen == 0 {
        // Records written before versions count as version 0.
        "attribute_exists(id) AND (attribute_not_exists(version) OR version = :seen)"
    } else {
        "attribute_exists(id) AND version = :seen"
    };
    (condition, AttributeValue::N(seen.to_string()))
}
