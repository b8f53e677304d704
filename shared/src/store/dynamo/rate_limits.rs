//! The rate-limits table: per-destination token buckets, updated by a
//! versioned conditional write so concurrent instances agree.

use super::*;

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
