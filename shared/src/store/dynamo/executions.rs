//! The executions table: rendered executions, fan-out progress, the
//! completion claim, and the sparse `by_unsettled` index of executions
//! whose completion is not yet recorded.

use super::*;

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
    ) -> Result<(), StoreError> {
        let mut update = "SET fanned_out_at = :at, target_count = :n, updated_at = :at".to_owned();
        let mut req = self
            .client
            .update_item()
            .table_name(&self.tables.executions)
            .key("id", s(id))
            .condition_expression("attribute_exists(id)")
            .expression_attribute_values(":at", s(at.to_string()))
            .expression_attribute_values(":n", AttributeValue::N(count.to_string()));
        if let Some(note) = note {
            update.push_str(", fanout_note = :note");
            req = req.expression_attribute_values(":note", s(note));
        }
        req.update_expression(update)
            .send()
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn claim_outcome(
        &self,
        id: &str,
        now: Timestamp,
        until: Timestamp,
        reopened: u64,
    ) -> Result<bool, StoreError> {
        // Not yet recorded at this revision, and no live claim at it.
        let req = self
            .at_revision(
                id,
                reopened,
                "AND (attribute_not_exists(claim_until) OR claim_until < :now \
                 OR claim_revision < :rev)",
            )
            .update_expression("SET claim_revision = :rev, claim_until = :until")
            .expression_attribute_values(":now", s(now.to_string()))
            .expression_attribute_values(":until", s(until.to_string()));
        written(req.send().await)
    }

    async fn record_outcome(
        &self,
        id: &str,
        at: Timestamp,
        reopened: u64,
    ) -> Result<bool, StoreError> {
        // A reopening since keeps it in the index.
        let req = self
            .at_revision(id, reopened, "")
            .update_expression(
                "SET outcome_sent_at = :at, outcome_revision = :rev \
                 REMOVE pending_shard, claim_revision, claim_until",
            )
            .expression_attribute_values(":at", s(at.to_string()));
        written(req.send().await)
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

    async fn oldest_unsettled(&self) -> Result<Option<Timestamp>, StoreError> {
        let reads = (0..super::super::PENDING_SHARDS).map(|shard| self.oldest_in_shard(shard));
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

impl DynamoStore {
    /// An update of the execution on condition that it fanned out, is still
    /// at revision `reopened` (`:rev`) and is not recorded complete at it,
    /// and `and` (more conditions, or empty).
    fn at_revision(
        &self,
        id: &str,
        reopened: u64,
        and: &str,
    ) -> aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder {
        let (same, value) = unchanged(reopened);
        let req = self
            .client
            .update_item()
            .table_name(&self.tables.executions)
            .key("id", s(id))
            .condition_expression(format!(
                "attribute_exists(target_count) AND {same} \
                 AND (attribute_not_exists(outcome_revision) OR outcome_revision < :rev) {and}"
            ))
            .expression_attribute_values(":rev", AttributeValue::N(reopened.to_string()));
        match value {
            Some(v) => req.expression_attribute_values(":reopened", v),
            None => req,
        }
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
}
