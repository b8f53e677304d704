//! The suppressions table: one item per (target, address). A suppressed
//! address has `suppressed = true` and its reason; an address on a run of
//! soft bounces has `suppressed = false`, the run's length and the message
//! id last counted (so a copy of an event counts once).

use super::*;
use crate::domain::suppression::{Suppression, SuppressionReason};
use crate::store::SuppressionStore;

/// A suppressed address's item.
fn suppressed_item(s: &Suppression) -> Result<HashMap<String, AttributeValue>, StoreError> {
    let mut item = to_item(s)?;
    item.insert("suppressed".into(), AttributeValue::Bool(true));
    Ok(item)
}

/// Not suppressed yet: no item, or one counting soft bounces.
const NOT_SUPPRESSED: &str = "attribute_not_exists(address) OR suppressed = :no";

#[async_trait]
impl SuppressionStore for DynamoStore {
    async fn suppressed(&self, target_id: &str) -> Result<Vec<Suppression>, StoreError> {
        let mut all = Vec::new();
        let mut cursor = None;
        loop {
            let page = self.suppressions_page(target_id, cursor, 100).await?;
            all.extend(page.items);
            match page.next {
                Some(next) if all.len() < 10_000 => cursor = Some(next),
                _ => return Ok(all),
            }
        }
    }

    async fn suppressions_page(
        &self,
        target_id: &str,
        cursor: Option<String>,
        limit: i32,
    ) -> Result<Page<Suppression>, StoreError> {
        let out = self
            .client
            .query()
            .table_name(&self.tables.suppressions)
            .key_condition_expression("target_id = :t")
            .filter_expression("suppressed = :yes")
            .expression_attribute_values(":t", s(target_id))
            .expression_attribute_values(":yes", AttributeValue::Bool(true))
            .set_exclusive_start_key(decode_cursor(
                cursor,
                &["target_id", "address"],
                &[("target_id", target_id)],
            )?)
            .limit(limit.clamp(1, 100))
            .send()
            .await
            .map_err(backend)?;
        let items = out
            .items
            .unwrap_or_default()
            .into_iter()
            .map(|i| from_item(target_id, i))
            .collect::<Result<Vec<Suppression>, _>>()?;
        Ok(Page {
            items,
            next: encode_cursor(out.last_evaluated_key),
        })
    }

    async fn suppression(
        &self,
        target_id: &str,
        address: &str,
    ) -> Result<Option<Suppression>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.tables.suppressions)
            .key("target_id", s(target_id))
            .key("address", s(address))
            .consistent_read(true)
            .send()
            .await
            .map_err(backend)?;
        match out.item {
            Some(item) if item.get("suppressed") == Some(&AttributeValue::Bool(true)) => {
                from_item(target_id, item).map(Some)
            }
            _ => Ok(None),
        }
    }

    async fn suppress(&self, sup: &Suppression) -> Result<bool, StoreError> {
        let result = self
            .client
            .put_item()
            .table_name(&self.tables.suppressions)
            .set_item(Some(suppressed_item(sup)?))
            .condition_expression(NOT_SUPPRESSED)
            .expression_attribute_values(":no", AttributeValue::Bool(false))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e) if is_condition_failure(&e) => Ok(false),
            Err(e) => Err(backend(e)),
        }
    }

    async fn count_soft_bounce(
        &self,
        sup: &Suppression,
        message_id: &str,
        limit: u32,
    ) -> Result<bool, StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.tables.suppressions)
            .key("target_id", s(&sup.target_id))
            .key("address", s(&sup.address))
            .update_expression("SET suppressed = :no, last_soft = :m ADD soft_bounces :one")
            .condition_expression(
                "(attribute_not_exists(address) OR suppressed = :no) \
                 AND (attribute_not_exists(last_soft) OR last_soft <> :m)",
            )
            .expression_attribute_values(":no", AttributeValue::Bool(false))
            .expression_attribute_values(":m", s(message_id))
            .expression_attribute_values(":one", AttributeValue::N("1".into()))
            .return_values(ReturnValue::UpdatedNew)
            .send()
            .await;
        let run = match result {
            Ok(out) => out
                .attributes
                .and_then(|a| a.get("soft_bounces")?.as_n().ok()?.parse::<u32>().ok())
                .unwrap_or(0),
            Err(e) if is_condition_failure(&e) => return Ok(false),
            Err(e) => return Err(backend(e)),
        };
        if run < limit {
            return Ok(false);
        }
        self.suppress(sup).await
    }

    async fn reset_soft_bounces(&self, target_id: &str, address: &str) -> Result<(), StoreError> {
        let result = self
            .client
            .delete_item()
            .table_name(&self.tables.suppressions)
            .key("target_id", s(target_id))
            .key("address", s(address))
            .condition_expression("suppressed = :no")
            .expression_attribute_values(":no", AttributeValue::Bool(false))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if is_condition_failure(&e) => Ok(()),
            Err(e) => Err(backend(e)),
        }
    }

    async fn unsuppress(
        &self,
        target_id: &str,
        address: &str,
        only: Option<SuppressionReason>,
    ) -> Result<bool, StoreError> {
        let mut req = self
            .client
            .delete_item()
            .table_name(&self.tables.suppressions)
            .key("target_id", s(target_id))
            .key("address", s(address))
            .expression_attribute_values(":yes", AttributeValue::Bool(true));
        req = match only {
            Some(reason) => req
                .condition_expression("suppressed = :yes AND #reason = :r")
                .expression_attribute_names("#reason", "reason")
                .expression_attribute_values(":r", s(reason.as_str())),
            None => req.condition_expression("suppressed = :yes"),
        };
        match req.send().await {
            Ok(_) => Ok(true),
            Err(e) if is_condition_failure(&e) => Ok(false),
            Err(e) => Err(backend(e)),
        }
    }
}
