//! The retry policy: pure data and pure functions, tested without sleeping.
//!
//! A temporary failure is retried once at once, then after each delay of the
//! schedule (5 m, 15 m, 1 h by default) through the SQS visibility timeout.
//! Tries are counted from the attempt record, never from SQS's receive
//! count: receives that are not tries (a throttled invocation, a copy that
//! found a lease, a deferral near the deadline) do not use up the schedule.
//! When the schedule is used up, deliver fails the attempt and moves the
//! message to the dead-letter queue itself; the queue's `maxReceiveCount`
//! is only a safety net, checked at start-up to sit well above the schedule.

use std::time::Duration;

/// SQS caps a visibility timeout at 12 hours from the receive.
pub const MAX_VISIBILITY: Duration = Duration::from_secs(12 * 60 * 60);

/// Room kept below [`MAX_VISIBILITY`] for the time already spent since the
/// receive, so that a backoff is never refused by SQS.
pub const VISIBILITY_MARGIN: Duration = Duration::from_secs(15 * 60);

/// How many times the schedule's receives the safety net must allow.
pub const SAFETY_FACTOR: u32 = 3;

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
    /// Retries are used up: fail the attempt and dead-letter the message.
    Exhausted,
}

impl RetryPolicy {
    /// Parses a schedule such as `300,900,3600` (seconds). Each delay must
    /// fit in one SQS visibility timeout with room to spare.
    pub fn parse_schedule(text: &str) -> Result<Vec<Duration>, String> {
        let longest = MAX_VISIBILITY - VISIBILITY_MARGIN;
        text.split(',')
            .map(|s| {
                let d = s
                    .trim()
                    .parse::<u64>()
                    .map(Duration::from_secs)
                    .map_err(|_| format!("retry schedule entry {s:?} is not whole seconds"))?;
                if d > longest {
                    return Err(format!(
                        "retry schedule entry {}s is longer than {}s (SQS's 12 h visibility cap less a margin)",
                        d.as_secs(),
                        longest.as_secs()
                    ));
                }
                Ok(d)
            })
            .collect()
    }

    /// Receives one attempt needs when nothing goes wrong but the sends: one
    /// for the first try (with its immediate retry) plus one per backoff.
    pub fn receives_needed(&self) -> u32 {
        u32::try_from(self.schedule.len())
            .unwrap_or(u32::MAX)
            .saturating_add(1)
    }

    /// Leases in a row that may end with no outcome (deliver died each
    /// time) before the attempt is failed as `crash_loop`: the safety
    /// factor times the receives a full schedule needs.
    pub fn crash_limit(&self) -> u32 {
        self.receives_needed().saturating_mul(SAFETY_FACTOR)
    }

    /// Checks the queue's `maxReceiveCount` (the safety net) against the
    /// schedule: it must leave room for receives that are not tries.
    pub fn check_max_receive_count(&self, max_receive_count: u32) -> Result<(), String> {
        let floor = self.receives_needed().saturating_mul(SAFETY_FACTOR);
        if max_receive_count < floor {
            return Err(format!(
                "maxReceiveCount {max_receive_count} is too close to the retry schedule: \
                 {} receives are needed, and the safety net must allow {SAFETY_FACTOR}x that ({floor})",
                self.receives_needed()
            ));
        }
        Ok(())
    }

    /// Whether the immediate retry is still available: only in the first
    /// round (no backoff yet) and only once (`tries` counts finished sends).
    pub fn immediate_available(&self, backoffs_done: u32, tries: u32) -> bool {
        backoffs_done == 0 && tries < 2
    }

    /// Decides after a temporary failure.
    ///
    /// * `backoffs_done` – backoff retries already scheduled (from the record);
    /// * `immediate_available` – see [`Self::immediate_available`];
    /// * `retry_after` – the provider's `Retry-After`, if it sent one;
    /// * `unit_random` – a number in `[0, 1)` for jitter (pass 0.5 for none).
    pub fn decide(
        &self,
        backoffs_done: u32,
        immediate_available: bool,
        retry_after: Option<Duration>,
        unit_random: f64,
    ) -> RetryDecision {
        if immediate_available {
            match retry_after {
                None => return RetryDecision::Immediate(Duration::ZERO),
                Some(wait) if wait <= self.max_inline_wait => {
                    return RetryDecision::Immediate(wait);
                }
                Some(_) => {}
            }
        }
        let Some(base) = usize::try_from(backoffs_done)
            .ok()
            .and_then(|i| self.schedule.get(i))
        else {
            return RetryDecision::Exhausted;
        };
        let unit = if unit_random.is_finite() {
            unit_random.clamp(0.0, 1.0)
        } else {
            0.5
        };
        let spread = base.as_secs_f64() * self.jitter * (unit * 2.0 - 1.0);
        let jittered =
            Duration::try_from_secs_f64((base.as_secs_f64() + spread).max(0.0)).unwrap_or(*base);
        let delay = retry_after.map_or(jittered, |ra| ra.max(jittered));
        RetryDecision::Backoff(delay.min(MAX_VISIBILITY - VISIBILITY_MARGIN))
    }
}

/// The longest visibility SQS accepts now, `elapsed` after the receive.
pub fn clamp_visibility(delay: Duration, elapsed: Duration) -> Duration {
    let room = MAX_VISIBILITY
        .saturating_sub(elapsed)
        .saturating_sub(Duration::from_secs(60));
    delay.min(room)
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
            p.decide(0, true, None, 0.5),
            RetryDecision::Immediate(Duration::ZERO)
        );
        assert_eq!(
            p.decide(0, false, None, 0.5),
            RetryDecision::Backoff(Duration::from_secs(300))
        );
        assert_eq!(
            p.decide(1, false, None, 0.5),
            RetryDecision::Backoff(Duration::from_secs(900))
        );
        assert_eq!(
            p.decide(2, false, None, 0.5),
            RetryDecision::Backoff(Duration::from_secs(3600))
        );
        assert_eq!(p.decide(3, false, None, 0.5), RetryDecision::Exhausted);
        assert_eq!(p.receives_needed(), 4);
    }

    #[test]
    fn the_immediate_retry_is_offered_once_and_only_before_any_backoff() {
        let p = policy();
        assert!(p.immediate_available(0, 0));
        assert!(p.immediate_available(0, 1));
        assert!(!p.immediate_available(0, 2), "already used");
        assert!(!p.immediate_available(1, 1), "after a backoff");
    }

    #[test]
    fn jitter_stays_within_ten_percent_and_ignores_nonsense_randomness() {
        let p = policy();
        assert_eq!(
            p.decide(1, false, None, 0.0),
            RetryDecision::Backoff(Duration::from_secs(810))
        );
        assert_eq!(
            p.decide(1, false, None, 1.0),
            RetryDecision::Backoff(Duration::from_secs(990))
        );
        assert_eq!(
            p.decide(1, false, None, f64::NAN),
            RetryDecision::Backoff(Duration::from_secs(900))
        );
    }

    #[test]
    fn retry_after_is_honoured_and_clamped() {
        let p = policy();
        // A short Retry-After is waited out inside the invocation.
        assert_eq!(
            p.decide(0, true, Some(Duration::from_secs(2)), 0.5),
            RetryDecision::Immediate(Duration::from_secs(2))
        );
        // A long one skips the immediate retry and stretches the backoff.
        assert_eq!(
            p.decide(0, true, Some(Duration::from_secs(1200)), 0.5),
            RetryDecision::Backoff(Duration::from_secs(1200))
        );
        // Never past SQS's 12-hour visibility cap, less the margin.
        assert_eq!(
            p.decide(1, false, Some(Duration::from_secs(100_000)), 0.5),
            RetryDecision::Backoff(MAX_VISIBILITY - VISIBILITY_MARGIN)
        );
    }

    #[test]
    fn the_visibility_clamp_counts_the_time_since_the_receive() {
        let eleven_h = Duration::from_secs(11 * 3600);
        assert_eq!(
            clamp_visibility(MAX_VISIBILITY, eleven_h),
            Duration::from_secs(3600 - 60)
        );
        assert_eq!(
            clamp_visibility(Duration::from_secs(5), eleven_h),
            Duration::from_secs(5)
        );
        assert_eq!(
            clamp_visibility(Duration::from_secs(5), MAX_VISIBILITY * 2),
            Duration::ZERO
        );
    }

    #[test]
    fn schedules_parse_from_seconds_and_must_fit_a_visibility_timeout() {
        assert_eq!(
            RetryPolicy::parse_schedule("1, 2,3"),
            Ok(vec![
                Duration::from_secs(1),
                Duration::from_secs(2),
                Duration::from_secs(3)
            ])
        );
        assert!(RetryPolicy::parse_schedule("5m").is_err());
        assert!(RetryPolicy::parse_schedule("43200").is_err());
        assert!(RetryPolicy::parse_schedule("99999999999999999999").is_err());
    }

    #[test]
    fn the_safety_net_must_sit_well_above_the_schedule() {
        let p = policy();
        assert!(p.check_max_receive_count(4).is_err(), "the old setting");
        assert!(p.check_max_receive_count(11).is_err());
        assert!(p.check_max_receive_count(12).is_ok());
        assert!(p.check_max_receive_count(30).is_ok());
    }
}
