//! The executions table: rendered executions, fan-out progress, the
//! settled count and outcome claim, and the sparse `by_unsettled` index.

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
    ) -> Result<super::super::Progress, StoreError> {
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

    async fn count_settled(&self, id: &str, n: u64) -> Result<super::super::Progress, StoreError> {
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
            .update_expression(
                "SET outcome_sent_at = :at, outcome_revision = :rev REMOVE pending_shard",
            )
            // The caller read every attempt settled; the counter may lag. A
            // reopened execution (an operator retry) is claimed again, once
            // per reopening, for its corrected event.
            .condition_expression(format!(
                "attribute_exists(target_count) AND (attribute_not_exists(outcome_sent_at) \
                 OR outcome_revision < :rev) AND {same}"
            ))
            .expression_attribute_values(":at", s(at.to_string()))
            .expression_attribute_values(":rev", AttributeValue::N(reopened.to_string()));
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

/// An execution's progress from its stored attributes.
fn progress(item: Option<&HashMap<String, AttributeValue>>) -> super::super::Progress {
    let num = |k: &str| {
        item.and_then(|i| i.get(k))
            .and_then(|v| v.as_n().ok())
            .and_then(|v| v.parse::<u64>().ok())
    };
    super::super::Progress {
        settled: num("settled_count").unwrap_or(0),
        target_count: num("target_count"),
    }
}

impl DynamoStore {
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
