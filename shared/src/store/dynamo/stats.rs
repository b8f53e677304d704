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

/// What one counter item gains from the attempts of a batch that fall in it.
#[derive(Default)]
struct Gain {
    attempted: u64,
    delivered: u64,
    failed: u64,
    tries: u64,
    retries: u64,
    delivery_ms: u64,
    recipients_sent: u64,
    /// Latency bucket → deliveries (only on items that keep the histogram).
    latency: BTreeMap<usize, u64>,
    last_success: Option<Timestamp>,
    last_error: Option<(Timestamp, String)>,
    expires_at: i64,
}

impl Gain {
    fn add(&mut self, s: &Settled, expires_at: i64, histogram: bool) {
        self.attempted += 1;
        self.delivered += u64::from(s.delivered);
        self.failed += u64::from(!s.delivered);
        self.tries += u64::from(s.tries);
        self.retries += u64::from(s.retries);
        self.delivery_ms += s.delivery_ms.unwrap_or(0);
        self.recipients_sent += u64::from(s.recipients_sent);
        if histogram && s.delivered {
            *self
                .latency
                .entry(latency_bucket(s.delivery_ms.unwrap_or(0)))
                .or_default() += 1;
        }
        if s.delivered {
            self.last_success = self.last_success.max(Some(s.at));
        } else if self.last_error.as_ref().is_none_or(|(at, _)| s.at >= *at) {
            let code = s.error_code.clone().unwrap_or_else(|| "unknown".into());
            self.last_error = Some((s.at, code));
        }
        self.expires_at = self.expires_at.max(expires_at);
    }
}

impl DynamoStore {
    /// Adds a gain to one counter item: one `UpdateItem` of atomic `ADD`s
    /// (with the last success and error when `last`).
    async fn add_to(&self, pk: String, sk: String, g: Gain, last: bool) -> Result<(), StoreError> {
        let mut adds = vec![
            "attempted :a".to_owned(),
            "delivered :d".to_owned(),
            "failed :f".to_owned(),
            "tries :t".to_owned(),
            "retries :r".to_owned(),
            "delivery_ms_sum :ms".to_owned(),
            "recipients_sent :rs".to_owned(),
        ];
        let mut sets = vec!["expires_at = :ttl"];
        let mut values: HashMap<String, AttributeValue> = HashMap::from([
            (":a".into(), n(g.attempted)),
            (":d".into(), n(g.delivered)),
            (":f".into(), n(g.failed)),
            (":t".into(), n(g.tries)),
            (":r".into(), n(g.retries)),
            (":ms".into(), n(g.delivery_ms)),
            (":rs".into(), n(g.recipients_sent)),
            (":ttl".into(), AttributeValue::N(g.expires_at.to_string())),
        ]);
        for (bucket, count) in &g.latency {
            adds.push(format!("lat_{bucket} :l{bucket}"));
            values.insert(format!(":l{bucket}"), n(*count));
        }
        if last {
            if let Some(at) = g.last_success {
                sets.push("last_success_at = :ok");
                values.insert(":ok".into(), s(at.to_string()));
            }
            if let Some((at, code)) = g.last_error {
                sets.push("last_error_at = :err");
                sets.push("last_error_code = :code");
                values.insert(":err".into(), s(at.to_string()));
                values.insert(":code".into(), s(code));
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
            .and_then(|v| v.parse::<i64>().ok())
            .map_or(0, |v| u64::try_from(v).unwrap_or(0))
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
        recipients_sent: num("recipients_sent"),
        recipients_delivered: num("recipients_delivered"),
        recipients_bounced: num("recipients_bounced"),
        recipients_complained: num("recipients_complained"),
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
        self.record_all(std::slice::from_ref(settled)).await
    }

    /// One write per counter item the batch touches: each target's day,
    /// and per report and for the service one hour shard (picked by the
    /// first attempt that falls in it), so a batch of ten deliveries of one
    /// report costs about 1.2 writes each instead of 3.
    async fn record_all(&self, all: &[Settled]) -> Result<(), StoreError> {
        let keep =
            time::Duration::try_from(self.stats_retention).unwrap_or(time::Duration::days(400));
        // (pk, sk) → (gain, keeps last success/error)
        let mut items: BTreeMap<(String, String), (Gain, bool)> = BTreeMap::new();
        let mut report_shards: BTreeMap<(String, String), u32> = BTreeMap::new();
        let mut global_shards: BTreeMap<String, u32> = BTreeMap::new();
        for settled in all {
            let expires_at = settled.at.plus(keep).unix_millis() / 1000;
            let (hour, day) = (hour_key(settled.at), day_key(settled.at));
            let report_shard = *report_shards
                .entry((settled.report_id.clone(), hour.clone()))
                .or_insert_with(|| shard(&settled.attempt_id, REPORT_SHARDS));
            let global_shard = *global_shards
                .entry(hour.clone())
                .or_insert_with(|| shard(&settled.attempt_id, GLOBAL_SHARDS));
            for (pk, sk, last, histogram) in [
                (target_key(&settled.target_id), day, true, false),
                (
                    report_key(&settled.report_id, report_shard),
                    hour.clone(),
                    false,
                    false,
                ),
                (global_key(global_shard), hour, false, true),
            ] {
                items
                    .entry((pk, sk))
                    .or_insert_with(|| (Gain::default(), last))
                    .0
                    .add(settled, expires_at, histogram);
            }
        }
        futures::future::try_join_all(
            items
                .into_iter()
                .map(|((pk, sk), (gain, last))| self.add_to(pk, sk, gain, last)),
        )
        .await?;
        Ok(())
    }

    async fn record_recipient(
        &self,
        target_id: &str,
        at: Timestamp,
        delta: crate::domain::stats::RecipientDelta,
    ) -> Result<(), StoreError> {
        if delta.is_zero() {
            return Ok(());
        }
        let keep =
            time::Duration::try_from(self.stats_retention).unwrap_or(time::Duration::days(400));
        let ttl = (at.plus(keep).unix_millis() / 1000).to_string();
        // The target's day; bounces and complaints also the service's hour
        // (the reputation rates /health judges). Deliveries, the bulk of
        // the news, cost one write, not two.
        let mut items = vec![(target_key(target_id), day_key(at))];
        if delta.touches_reputation() {
            items.push((
                global_key(shard(&format!("{target_id}{at}"), GLOBAL_SHARDS)),
                hour_key(at),
            ));
        }
        let adds: Vec<(&str, i64)> = delta.counters().collect();
        let expression = adds
            .iter()
            .map(|(name, _)| format!("{name} :{name}"))
            .collect::<Vec<_>>()
            .join(", ");
        for (pk, sk) in items {
            let mut update = self
                .client
                .update_item()
                .table_name(&self.tables.stats)
                .key("pk", s(pk))
                .key("sk", s(sk))
                .update_expression(format!("ADD {expression} SET expires_at = :ttl"))
                .expression_attribute_values(":ttl", AttributeValue::N(ttl.clone()));
            for (name, by) in &adds {
                update = update.expression_attribute_values(
                    format!(":{name}"),
                    AttributeValue::N(by.to_string()),
                );
            }
            update.send().await.map_err(backend)?;
        }
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
