//! Statistics counters in the stats table: one `UpdateItem` with atomic
//! `ADD`s per counter item, and reads that sum the shards.

use super::{DynamoStore, backend, s};
use crate::domain::Timestamp;
use crate::domain::stats::{
    Counters, GLOBAL_SHARDS, LATENCY_BUCKETS_MS, REPORT_SHARDS, Settled, day_key, global_key,
    hour_key, latency_bucket, report_key, shard, target_key,
};
use crate::store::{StatsStore, StoreError};
use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;
use std::collections::{BTreeMap, HashMap};

fn n(v: u64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

impl DynamoStore {
    /// Adds one settled attempt to one counter item.
    async fn add_to(
        &self,
        pk: String,
        sk: String,
        settled: &Settled,
        expires_at: i64,
        last: bool,
        histogram: bool,
    ) -> Result<(), StoreError> {
        let mut adds = vec![
            "attempted :one",
            "delivered :d",
            "failed :f",
            "tries :t",
            "retries :r",
            "delivery_ms_sum :ms",
        ];
        let mut sets = vec!["expires_at = :ttl"];
        let mut values: HashMap<String, AttributeValue> = HashMap::from([
            (":one".into(), n(1)),
            (":d".into(), n(u64::from(settled.delivered))),
            (":f".into(), n(u64::from(!settled.delivered))),
            (":t".into(), n(u64::from(settled.tries))),
            (":r".into(), n(u64::from(settled.retries))),
            (":ms".into(), n(settled.delivery_ms.unwrap_or(0))),
            (":ttl".into(), AttributeValue::N(expires_at.to_string())),
        ]);
        let bucket;
        if histogram && settled.delivered {
            bucket = format!(
                "lat_{} :one",
                latency_bucket(settled.delivery_ms.unwrap_or(0))
            );
            adds.push(&bucket);
        }
        if last {
            values.insert(":now".into(), s(settled.at.to_string()));
            if settled.delivered {
                sets.push("last_success_at = :now");
            } else {
                sets.push("last_error_at = :now");
                sets.push("last_error_code = :code");
                values.insert(
                    ":code".into(),
                    s(settled.error_code.as_deref().unwrap_or("unknown")),
                );
            }
        }
        self.client
            .update_item()
            .table_name(&self.tables.stats)
            .key("pk", s(pk))
            .key("sk", s(sk))
            .update_expression(format!("ADD {} SET {}", adds.join(", "), sets.join(", ")))
            .set_expression_attribute_values(Some(values))
            .send()
            .await
            .map_err(backend)?;
        Ok(())
    }

    /// The counter items of `pk` with sort keys in `from..=to`.
    async fn counter_items(
        &self,
        pk: String,
        from: String,
        to: String,
    ) -> Result<Vec<(String, Counters)>, StoreError> {
        let mut pages = self
            .client
            .query()
            .table_name(&self.tables.stats)
            .key_condition_expression("pk = :pk AND sk BETWEEN :from AND :to")
            .expression_attribute_values(":pk", s(pk))
            .expression_attribute_values(":from", s(from))
            .expression_attribute_values(":to", s(to))
            .into_paginator()
            .items()
            .send();
        let mut out = Vec::new();
        while let Some(item) = pages.next().await {
            let item = item.map_err(backend)?;
            let sk = item
                .get("sk")
                .and_then(|v| v.as_s().ok())
                .cloned()
                .unwrap_or_default();
            out.push((sk, counters(&item)));
        }
        Ok(out)
    }
}

/// Counters from a stored item; missing counters are zero.
fn counters(item: &HashMap<String, AttributeValue>) -> Counters {
    let num = |k: &str| {
        item.get(k)
            .and_then(|v| v.as_n().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let time = |k: &str| {
        item.get(k)
            .and_then(|v| v.as_s().ok())
            .and_then(|v| Timestamp::parse(v).ok())
    };
    let latency: Vec<u64> = (0..LATENCY_BUCKETS_MS.len())
        .map(|i| num(&format!("lat_{i}")))
        .collect();
    Counters {
        attempted: num("attempted"),
        delivered: num("delivered"),
        failed: num("failed"),
        tries: num("tries"),
        retries: num("retries"),
        delivery_ms_sum: num("delivery_ms_sum"),
        last_success_at: time("last_success_at"),
        last_error_code: item
            .get("last_error_code")
            .and_then(|v| v.as_s().ok())
            .cloned(),
        last_error_at: time("last_error_at"),
        latency: if latency.iter().any(|n| *n > 0) {
            latency
        } else {
            Vec::new()
        },
    }
}

#[async_trait]
impl StatsStore for DynamoStore {
    async fn record(&self, settled: &Settled) -> Result<(), StoreError> {
        let ttl = settled.at.plus(
            time::Duration::try_from(self.stats_retention).unwrap_or(time::Duration::days(400)),
        );
        let expires_at = ttl.unix_millis() / 1000;
        let (hour, day) = (hour_key(settled.at), day_key(settled.at));
        let report_shard = shard(&settled.attempt_id, REPORT_SHARDS);
        let global_shard = shard(&settled.attempt_id, GLOBAL_SHARDS);
        futures::try_join!(
            self.add_to(
                target_key(&settled.target_id),
                day,
                settled,
                expires_at,
                true,
                false
            ),
            self.add_to(
                report_key(&settled.report_id, report_shard),
                hour.clone(),
                settled,
                expires_at,
                false,
                false
            ),
            self.add_to(
                global_key(global_shard),
                hour,
                settled,
                expires_at,
                false,
                true
            ),
        )?;
        Ok(())
    }

    async fn target_days(
        &self,
        target_id: &str,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<(String, Counters)>, StoreError> {
        let items = self
            .counter_items(target_key(target_id), day_key(from), day_key(to))
            .await?;
        Ok(items
            .into_iter()
            .map(|(sk, c)| (sk.trim_start_matches("day#").to_owned(), c))
            .collect())
    }

    async fn report_days(
        &self,
        report_id: &str,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<(String, Counters)>, StoreError> {
        let reads = (0..REPORT_SHARDS).map(|shard| {
            self.counter_items(report_key(report_id, shard), hour_key(from), hour_key(to))
        });
        let mut days: BTreeMap<String, Counters> = BTreeMap::new();
        for items in futures::future::try_join_all(reads).await? {
            for (sk, c) in items {
                // hour#2026-11-27T10 → 2026-11-27
                let day = sk.get(5..15).unwrap_or_default().to_owned();
                days.entry(day).or_default().add(&c);
            }
        }
        Ok(days.into_iter().collect())
    }

    async fn service_hours(&self, from: Timestamp, to: Timestamp) -> Result<Counters, StoreError> {
        let reads = (0..GLOBAL_SHARDS)
            .map(|shard| self.counter_items(global_key(shard), hour_key(from), hour_key(to)));
        let mut total = Counters::default();
        for items in futures::future::try_join_all(reads).await? {
            for (_, c) in items {
                total.add(&c);
            }
        }
        Ok(total)
    }
}
