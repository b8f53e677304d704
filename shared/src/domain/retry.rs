//! The retry policy: pure data and pure functions, tested without sleeping.
//!
//! A temporary failure is retried once at once, then after each delay of the
//! schedule (5 m, 15 m, 1 h by default) through the SQS visibility timeout.
//! When the schedule is used up the attempt fails and SQS moves the message
//! to the dead-letter queue through the redrive policy.

use std::time::Duration;

/// SQS caps a visibility timeout at 12 hours.
pub const MAX_VISIBILITY: Duration = Duration::from_secs(12 * 60 * 60);

/// How temporary failures are retried.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Delay before each backoff retry; its length is the number of retries.
    pub schedule: Vec<Duration>,
    /// Fraction of each delay added or removed at random (0.1 = ±10 %).
    pub jitter: f64,
    /// Longest `Retry-After` honoured at once inside an invocation.
    pub max_inline_wait: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            schedule: vec![
                Duration::from_secs(300),
                Duration::from_secs(900),
                Duration::from_secs(3600),
            ],
            jitter: 0.1,
            max_inline_wait: Duration::from_secs(5),
        }
    }
}

/// What to do after a temporary failure.
#[derive(Debug, Clone, PartialEq)]
pub enum RetryDecision {
    /// Try again now, inside this invocation, after the given wait.
    Immediate(Duration),
    /// Hide the message for this long, then try again.
    Backoff(Duration),
    /// Retries are used up: record the failure and let SQS dead-letter it.
    Exhausted,
}

impl RetryPolicy {
    /// Parses a schedule such as `300,900,3600` (seconds).
    pub fn parse_schedule(text: &str) -> Result<Vec<Duration>, String> {
        text.split(',')
            .map(|s| {
                s.trim()
                    .parse::<u64>()
                    .map(Duration::from_secs)
                    .map_err(|_| format!("retry schedule entry {s:?} is not whole seconds"))
            })
            .collect()
    }

    /// The SQS maxReceiveCount that matches this policy: one receive for the
    /// first try (with its immediate retry) plus one per backoff.
    pub fn max_receive_count(&self) -> u32 {
        self.schedule.len() as u32 + 1
    }

    /// Decides after a temporary failure.
    ///
    /// * `receive_count` – SQS `ApproximateReceiveCount` of the message (1-based);
    /// * `immediate_used` – whether this invocation already retried at once;
    /// * `retry_after` – the provider's `Retry-After`, if it sent one;
    /// * `unit_random` – a number in `[0, 1)` for jitter (pass 0.5 for none).
    pub fn decide(
        &self,
        receive_count: u32,
        immediate_used: bool,
        retry_after: Option<Duration>,
        unit_random: f64,
    ) -> RetryDecision {
        if receive_count <= 1 && !immediate_used {
            match retry_after {
                None => return RetryDecision::Immediate(Duration::ZERO),
                Some(wait) if wait <= self.max_inline_wait => {
                    return RetryDecision::Immediate(wait);
                }
                Some(_) => {}
            }
        }
        let index = receive_count.max(1) as usize - 1;
        let Some(base) = self.schedule.get(index) else {
            return RetryDecision::Exhausted;
        };
        let spread = base.as_secs_f64() * self.jitter * (unit_random.clamp(0.0, 1.0) * 2.0 - 1.0);
        let jittered = Duration::from_secs_f64((base.as_secs_f64() + spread).max(0.0));
        let delay = retry_after.map_or(jittered, |ra| ra.max(jittered));
        RetryDecision::Backoff(delay.min(MAX_VISIBILITY))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy::default()
    }

    #[test]
    fn first_failure_is_retried_at_once_then_backs_off_5m_15m_1h_then_gives_up() {
        let p = policy();
        assert_eq!(
            p.decide(1, false, None, 0.5),
            RetryDecision::Immediate(Duration::ZERO)
        );
        assert_eq!(
            p.decide(1, true, None, 0.5),
            RetryDecision::Backoff(Duration::from_secs(300))
        );
        assert_eq!(
            p.decide(2, false, None, 0.5),
            RetryDecision::Backoff(Duration::from_secs(900))
        );
        assert_eq!(
            p.decide(3, false, None, 0.5),
            RetryDecision::Backoff(Duration::from_secs(3600))
        );
        assert_eq!(p.decide(4, false, None, 0.5), RetryDecision::Exhausted);
        assert_eq!(p.max_receive_count(), 4);
    }

    #[test]
    fn jitter_stays_within_ten_percent() {
        let p = policy();
        assert_eq!(
            p.decide(2, false, None, 0.0),
            RetryDecision::Backoff(Duration::from_secs(810))
        );
        assert_eq!(
            p.decide(2, false, None, 1.0),
            RetryDecision::Backoff(Duration::from_secs(990))
        );
    }

    #[test]
    fn retry_after_is_honoured_and_clamped() {
        let p = policy();
        // A short Retry-After is waited out inside the invocation.
        assert_eq!(
            p.decide(1, false, Some(Duration::from_secs(2)), 0.5),
            RetryDecision::Immediate(Duration::from_secs(2))
        );
        // A long one skips the immediate retry and stretches the backoff.
        assert_eq!(
            p.decide(1, false, Some(Duration::from_secs(1200)), 0.5),
            RetryDecision::Backoff(Duration::from_secs(1200))
        );
        // Never past SQS's 12-hour visibility cap.
        assert_eq!(
            p.decide(2, false, Some(Duration::from_secs(100_000)), 0.5),
            RetryDecision::Backoff(MAX_VISIBILITY)
        );
    }

    #[test]
    fn schedules_parse_from_seconds() {
        assert_eq!(
            RetryPolicy::parse_schedule("1, 2,3"),
            Ok(vec![
                Duration::from_secs(1),
                Duration::from_secs(2),
                Duration::from_secs(3)
            ])
        );
        assert!(RetryPolicy::parse_schedule("5m").is_err());
    }
}
