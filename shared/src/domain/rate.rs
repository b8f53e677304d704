//! Per-destination rate limits: a token bucket as pure data and a pure
//! function, so concurrent deliver instances can share one bucket item in
//! a store through a conditional write.

use std::time::Duration;

/// How fast one destination may be sent to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Sustained sends per second.
    pub per_second: f64,
    /// Sends allowed at once after a quiet spell.
    pub burst: f64,
}

impl RateLimit {
    /// Slack's documented limit for posting to one channel: about one
    /// message per second, with short bursts tolerated.
    pub const SLACK_CHANNEL: RateLimit = RateLimit {
        per_second: 1.0,
        burst: 3.0,
    };
}

/// A bucket's state: tokens left as of a time (Unix milliseconds).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    pub tokens: f64,
    pub at_ms: i64,
}

/// Reserves the next send slot at `now_ms`: the new state, and how long
/// to wait for the slot (zero when a token is free now). Tokens go below
/// zero to queue reservations, so each waiting message is given its own
/// future slot once instead of competing again when it wakes. A missing
/// bucket is full; a clock that steps back refills nothing.
pub fn reserve(limit: RateLimit, bucket: Option<Bucket>, now_ms: i64) -> (Bucket, Duration) {
    let burst = if limit.burst.is_finite() {
        limit.burst.max(1.0)
    } else {
        1.0
    };
    let rate = if limit.per_second.is_finite() && limit.per_second > 0.0 {
        limit.per_second
    } else {
        1.0
    };
    let (tokens, at) = bucket.map_or((burst, now_ms), |b| (b.tokens, b.at_ms));
    let elapsed_s = (now_ms.saturating_sub(at)).max(0) as f64 / 1000.0;
    let available = if tokens.is_finite() {
        (tokens + elapsed_s * rate).min(burst)
    } else {
        burst
    };
    let left = available - 1.0;
    let wait = if left >= 0.0 {
        Duration::ZERO
    } else {
        Duration::try_from_secs_f64(-left / rate).unwrap_or(Duration::from_secs(1))
    };
    (
        Bucket {
            tokens: left,
            at_ms: now_ms.max(at),
        },
        wait,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: RateLimit = RateLimit::SLACK_CHANNEL;

    #[test]
    fn a_burst_passes_then_each_send_gets_its_own_slot_a_second_apart() {
        let mut b = None;
        for _ in 0..3 {
            let (next, wait) = reserve(L, b, 0);
            assert_eq!(wait, Duration::ZERO);
            b = Some(next);
        }
        let waits: Vec<Duration> = (0..3)
            .map(|_| {
                let (next, wait) = reserve(L, b, 0);
                b = Some(next);
                wait
            })
            .collect();
        assert_eq!(
            waits,
            [
                Duration::from_secs(1),
                Duration::from_secs(2),
                Duration::from_secs(3)
            ]
        );
        // Half a second later the queue is half a second shorter
        let (_, wait) = reserve(L, b, 500);
        assert_eq!(wait, Duration::from_millis(3500));
    }

    #[test]
    fn tokens_never_exceed_the_burst_and_clock_steps_back_are_harmless() {
        let (b, wait) = reserve(
            L,
            Some(Bucket {
                tokens: 0.0,
                at_ms: 0,
            }),
            3_600_000,
        );
        assert_eq!((b.tokens, wait), (2.0, Duration::ZERO));
        let (_, wait) = reserve(
            L,
            Some(Bucket {
                tokens: 0.0,
                at_ms: 10_000,
            }),
            0,
        );
        assert_eq!(wait, Duration::from_secs(1));
        let (_, wait) = reserve(
            L,
            Some(Bucket {
                tokens: f64::NAN,
                at_ms: 0,
            }),
            0,
        );
        assert_eq!(wait, Duration::ZERO);
    }
}
