//! Delivery statistics: what one settled attempt adds to the counters, the
//! keys the counters live under, and how they read back (sums over shards,
//! rates, average and percentile latency).
//!
//! Counters are kept per target per day, per report per hour (sharded, so
//! one big report spreads its writes) and for the whole service per hour
//! (sharded too, with a latency histogram). An attempt is counted once,
//! when it settles; attempts still in flight show in the queues instead.

use super::Timestamp;
use serde::{Deserialize, Serialize};

/// Shards of one report's hourly counters. At 1M deliveries an hour all
/// for one report, 8 shards put ~35 writes a second on each item, well
/// under one partition's 1,000 WCU a second.
pub const REPORT_SHARDS: u32 = 8;
/// Shards of the service-wide hourly counters (every delivery writes one).
pub const GLOBAL_SHARDS: u32 = 16;
/// Upper bounds (milliseconds, inclusive) of the latency histogram's
/// buckets; the last bucket is open.
pub const LATENCY_BUCKETS_MS: [u64; 8] = [
    1_000,
    5_000,
    30_000,
    60_000,
    300_000,
    900_000,
    3_600_000,
    u64::MAX,
];

/// One attempt that settled, as the counters see it.
#[derive(Debug, Clone, PartialEq)]
pub struct Settled {
    pub target_id: String,
    pub report_id: String,
    pub attempt_id: String,
    /// When it settled.
    pub at: Timestamp,
    pub delivered: bool,
    /// Sends tried.
    pub tries: u32,
    /// Backoff retries.
    pub retries: u32,
    /// From the attempt's creation to delivered.
    pub delivery_ms: Option<u64>,
    /// The failure's code.
    pub error_code: Option<String>,
    /// Email recipients SES accepted a copy for (the bounce and complaint
    /// rates' denominator).
    pub recipients_sent: u32,
}

/// Counters as stored, and as summed on read.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Counters {
    #[serde(default)]
    pub attempted: u64,
    #[serde(default)]
    pub delivered: u64,
    #[serde(default)]
    pub failed: u64,
    #[serde(default)]
    pub tries: u64,
    #[serde(default)]
    pub retries: u64,
    /// Sum of delivered attempts' milliseconds from creation to delivered.
    #[serde(default)]
    pub delivery_ms_sum: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error_code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error_at: Option<Timestamp>,
    /// Delivered attempts per [`LATENCY_BUCKETS_MS`] bucket (service-wide
    /// counters only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub latency: Vec<u64>,
    /// Email recipients SES accepted a copy for.
    #[serde(default)]
    pub recipients_sent: u64,
    /// Email recipients SES reported delivered, those who complained
    /// included (targets' days only; see [`RecipientDelta`]).
    #[serde(default)]
    pub recipients_delivered: u64,
    /// Email recipients that bounced.
    #[serde(default)]
    pub recipients_bounced: u64,
    /// Email recipients that complained.
    #[serde(default)]
    pub recipients_complained: u64,
}

/// What one recipient's change of status adds to its target's recipient
/// counters. Each counter is a function of the status alone (a complaint
/// proves a delivery; a bounce after a delivery takes it back), so the
/// changes a recipient goes through sum to the counts of where it ends,
/// whatever order SES's news came in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecipientDelta {
    pub delivered: i64,
    pub bounced: i64,
    pub complained: i64,
}

impl RecipientDelta {
    /// The counts of one recipient at `status`.
    pub fn of(status: super::RecipientStatus) -> Self {
        use super::RecipientStatus as S;
        RecipientDelta {
            delivered: i64::from(matches!(status, S::Delivered | S::Complained)),
            bounced: i64::from(status == S::Bounced),
            complained: i64::from(status == S::Complained),
        }
    }

    /// What moving one recipient from `before` to `after` adds.
    pub fn between(before: super::RecipientStatus, after: super::RecipientStatus) -> Self {
        let (b, a) = (Self::of(before), Self::of(after));
        RecipientDelta {
            delivered: a.delivered - b.delivered,
            bounced: a.bounced - b.bounced,
            complained: a.complained - b.complained,
        }
    }

    /// Adds nothing.
    pub fn is_zero(&self) -> bool {
        *self == Self::default()
    }

    /// The stored counters it changes, by name, with what it adds.
    pub fn counters(&self) -> impl Iterator<Item = (&'static str, i64)> {
        [
            ("recipients_delivered", self.delivered),
            ("recipients_bounced", self.bounced),
            ("recipients_complained", self.complained),
        ]
        .into_iter()
        .filter(|(_, n)| *n != 0)
    }

    /// Whether it changes a reputation counter (bounces or complaints),
    /// which the service's hours keep too.
    pub fn touches_reputation(&self) -> bool {
        self.bounced != 0 || self.complained != 0
    }
}

impl Counters {
    /// Adds `other` into `self`; the latest last-success and last-error win.
    pub fn add(&mut self, other: &Counters) {
        self.attempted += other.attempted;
        self.delivered += other.delivered;
        self.failed += other.failed;
        self.tries += other.tries;
        self.retries += other.retries;
        self.delivery_ms_sum += other.delivery_ms_sum;
        self.recipients_sent += other.recipients_sent;
        self.recipients_delivered += other.recipients_delivered;
        self.recipients_bounced += other.recipients_bounced;
        self.recipients_complained += other.recipients_complained;
        if other.last_success_at > self.last_success_at {
            self.last_success_at = other.last_success_at;
        }
        if other.last_error_at > self.last_error_at {
            self.last_error_at = other.last_error_at;
            self.last_error_code.clone_from(&other.last_error_code);
        }
        if self.latency.len() < other.latency.len() {
            self.latency.resize(other.latency.len(), 0);
        }
        for (mine, theirs) in self.latency.iter_mut().zip(&other.latency) {
            *mine += theirs;
        }
    }

    /// Bounced email recipients over those sent, when any were sent.
    pub fn bounce_rate(&self) -> Option<f64> {
        (self.recipients_sent > 0)
            .then(|| self.recipients_bounced as f64 / self.recipients_sent as f64)
    }

    /// Complaining email recipients over those sent, when any were sent.
    pub fn complaint_rate(&self) -> Option<f64> {
        (self.recipients_sent > 0)
            .then(|| self.recipients_complained as f64 / self.recipients_sent as f64)
    }

    /// Delivered over settled, when anything settled.
    pub fn success_rate(&self) -> Option<f64> {
        let settled = self.delivered + self.failed;
        (settled > 0).then(|| self.delivered as f64 / settled as f64)
    }

    /// Failed over settled, when anything settled.
    pub fn error_rate(&self) -> Option<f64> {
        self.success_rate().map(|s| 1.0 - s)
    }

    /// Average milliseconds from creation to delivered.
    pub fn average_delivery_ms(&self) -> Option<u64> {
        (self.delivered > 0).then(|| self.delivery_ms_sum / self.delivered)
    }

    /// Backoff retries per settled attempt.
    pub fn retry_frequency(&self) -> Option<f64> {
        let settled = self.delivered + self.failed;
        (settled > 0).then(|| self.retries as f64 / settled as f64)
    }

    /// The upper bound of the histogram bucket holding the `p`-th
    /// percentile (0 < p ≤ 100), `None` without data or for the open
    /// bucket's unbounded top.
    pub fn latency_percentile_ms(&self, p: f64) -> Option<u64> {
        let total: u64 = self.latency.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = ((p / 100.0) * total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, n) in self.latency.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return LATENCY_BUCKETS_MS
                    .get(i)
                    .copied()
                    .filter(|b| *b != u64::MAX);
            }
        }
        None
    }
}

/// The histogram bucket of a latency.
pub fn latency_bucket(ms: u64) -> usize {
    LATENCY_BUCKETS_MS
        .iter()
        .position(|b| ms <= *b)
        .unwrap_or(LATENCY_BUCKETS_MS.len() - 1)
}

/// A stable shard of `id` in `0..n` (FNV-1a).
pub fn shard(id: &str, n: u32) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in id.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h % n.max(1)
}

/// Partition key of a target's daily counters.
pub fn target_key(target_id: &str) -> String {
    format!("target#{target_id}")
}

/// Partition key of one shard of a report's hourly counters.
pub fn report_key(report_id: &str, shard: u32) -> String {
    format!("report#{report_id}#{shard:02}")
}

/// Partition key of one shard of the service-wide hourly counters.
pub fn global_key(shard: u32) -> String {
    format!("all#{shard:02}")
}

/// Sort key of a UTC day: `day#2026-11-27`.
pub fn day_key(t: Timestamp) -> String {
    let d = t.inner().date();
    format!(
        "day#{:04}-{:02}-{:02}",
        d.year(),
        u8::from(d.month()),
        d.day()
    )
}

/// Sort key of a UTC hour: `hour#2026-11-27T10`.
pub fn hour_key(t: Timestamp) -> String {
    let i = t.inner();
    format!("hour#{}T{:02}", &day_key(t)[4..], i.hour())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        Timestamp::parse(s).expect("time")
    }

    #[test]
    fn keys_name_the_utc_day_and_hour() {
        let t = at("2026-11-27T23:59:59+01:00");
        assert_eq!(day_key(t), "day#2026-11-27");
        assert_eq!(hour_key(t), "hour#2026-11-27T22");
        assert_eq!(report_key("r", 3), "report#r#03");
        assert_eq!(global_key(12), "all#12");
        assert_eq!(target_key("t-1"), "target#t-1");
    }

    #[test]
    fn shards_are_stable_and_spread() {
        assert_eq!(shard("att-1", 8), shard("att-1", 8));
        let mut used = [0u32; 8];
        for i in 0..8000 {
            used[shard(&format!("att-{i}"), 8) as usize] += 1;
        }
        assert!(used.iter().all(|n| (800..1200).contains(n)), "{used:?}");
    }

    #[test]
    fn counters_sum_and_derive_rates() {
        let mut total = Counters::default();
        total.add(&Counters {
            attempted: 3,
            delivered: 2,
            failed: 1,
            tries: 6,
            retries: 2,
            delivery_ms_sum: 3000,
            last_error_code: Some("http_400".into()),
            last_error_at: Some(at("2026-11-27T10:00:00Z")),
            ..Counters::default()
        });
        total.add(&Counters {
            attempted: 1,
            delivered: 1,
            tries: 1,
            delivery_ms_sum: 1500,
            last_success_at: Some(at("2026-11-27T11:00:00Z")),
            ..Counters::default()
        });
        assert_eq!(total.attempted, 4);
        assert_eq!(total.success_rate(), Some(0.75));
        assert_eq!(total.error_rate(), Some(0.25));
        assert_eq!(total.average_delivery_ms(), Some(1500));
        assert_eq!(total.retry_frequency(), Some(0.5));
        assert_eq!(total.last_error_code.as_deref(), Some("http_400"));
        assert!(total.last_success_at.is_some());
        assert_eq!(Counters::default().success_rate(), None);
    }

    #[test]
    fn percentiles_come_from_the_histogram() {
        let mut c = Counters {
            latency: vec![0; LATENCY_BUCKETS_MS.len()],
            ..Counters::default()
        };
        // 90 deliveries within 1 s, 8 within 5 s, 2 within 5 min
        c.latency[latency_bucket(800)] += 90;
        c.latency[latency_bucket(4_000)] += 8;
        c.latency[latency_bucket(200_000)] += 2;
        assert_eq!(c.latency_percentile_ms(50.0), Some(1_000));
        assert_eq!(c.latency_percentile_ms(95.0), Some(5_000));
        assert_eq!(c.latency_percentile_ms(99.0), Some(300_000));
        assert_eq!(latency_bucket(u64::MAX), LATENCY_BUCKETS_MS.len() - 1);
        assert_eq!(Counters::default().latency_percentile_ms(50.0), None);
    }

    mod recipient_counts {
        use super::super::RecipientDelta;
        use crate::domain::Timestamp;
        use crate::domain::recipient::{Feedback, RecipientOutcome, RecipientStatus, Role};
        use proptest::prelude::*;

        fn news(status: RecipientStatus) -> Feedback {
            Feedback {
                message_id: "m-1".into(),
                address: "a@example.com".into(),
                status,
                bounce: None,
                detail: None,
                at: Timestamp::from_unix_millis(1_800_000_000_000).expect("a time"),
            }
        }

        /// What the counters add up to after `seq` reaches one recipient
        /// through the one rule, and where the recipient ends.
        fn run(seq: &[RecipientStatus]) -> (RecipientDelta, RecipientStatus) {
            let mut r = vec![RecipientOutcome {
                address: "a@example.com".into(),
                role: Role::To,
                status: RecipientStatus::Sent,
                message_id: Some("m-1".into()),
                bounce: None,
                detail: None,
                at: Timestamp::from_unix_millis(1_800_000_000_000).expect("a time"),
            }];
            let mut sum = RecipientDelta::default();
            for s in seq {
                let before = r[0].status;
                if let Ok(next) = news(*s).apply(&r) {
                    r = next;
                    let d = RecipientDelta::between(before, r[0].status);
                    sum.delivered += d.delivered;
                    sum.bounced += d.bounced;
                    sum.complained += d.complained;
                }
            }
            (sum, r[0].status)
        }

        fn status() -> impl Strategy<Value = RecipientStatus> {
            prop::sample::select(vec![
                RecipientStatus::Delayed,
                RecipientStatus::Delivered,
                RecipientStatus::Rejected,
                RecipientStatus::Bounced,
                RecipientStatus::Complained,
            ])
        }

        #[test]
        fn a_complaint_counts_a_delivery_and_a_late_bounce_takes_it_back() {
            use RecipientStatus as S;
            let d = RecipientDelta::between(S::Sent, S::Complained);
            assert_eq!((d.delivered, d.bounced, d.complained), (1, 0, 1));
            let d = RecipientDelta::between(S::Delivered, S::Complained);
            assert_eq!((d.delivered, d.bounced, d.complained), (0, 0, 1));
            let d = RecipientDelta::between(S::Delivered, S::Bounced);
            assert_eq!((d.delivered, d.bounced, d.complained), (-1, 1, 0));
            assert!(RecipientDelta::between(S::Sent, S::Delayed).is_zero());
            assert_eq!(
                d.counters().collect::<Vec<_>>(),
                [("recipients_delivered", -1), ("recipients_bounced", 1)]
            );
        }

        proptest! {
            /// Whatever order and however many times SES's news comes, the
            /// counts a recipient adds are those of where it ends, and two
            /// orders of the same news count the same (SES never both
            /// rejects and bounces one recipient: those two tie).
            #[test]
            fn counts_depend_on_the_news_not_its_order(
                (seq, other) in prop::collection::vec(status(), 0..8)
                    .prop_flat_map(|v| (Just(v.clone()), Just(v).prop_shuffle())),
            ) {
                let (sum, end) = run(&seq);
                prop_assert_eq!(sum, RecipientDelta::of(end));
                let tie = seq.contains(&RecipientStatus::Rejected)
                    && seq.contains(&RecipientStatus::Bounced);
                if !tie {
                    prop_assert_eq!(run(&other).0, sum);
                }
            }
        }
    }
}
