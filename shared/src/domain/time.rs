//! A UTC timestamp with a fixed-width text form, so that DynamoDB sort keys
//! order the same way as time does.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{Duration, OffsetDateTime, UtcOffset};

/// A point in time, always UTC, printed as `2026-11-26T08:00:00.000Z`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(OffsetDateTime);

impl Timestamp {
    /// The current time.
    pub fn now() -> Self {
        Self::from(OffsetDateTime::now_utc())
    }

    /// Parses any RFC 3339 timestamp and normalises it to UTC.
    pub fn parse(text: &str) -> Result<Self, time::error::Parse> {
        OffsetDateTime::parse(text, &Rfc3339).map(Self::from)
    }

    /// Milliseconds since the Unix epoch.
    pub fn unix_millis(&self) -> i64 {
        (self.0.unix_timestamp_nanos() / 1_000_000) as i64
    }

    /// Builds a timestamp from milliseconds since the Unix epoch.
    pub fn from_unix_millis(ms: i64) -> Option<Self> {
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
            .ok()
            .map(Self)
    }

    /// The wrapped value.
    pub fn inner(&self) -> OffsetDateTime {
        self.0
    }

    /// Milliseconds from `earlier` to `self` (negative if `earlier` is later).
    pub fn millis_since(&self, earlier: Timestamp) -> i64 {
        (self.0 - earlier.0).whole_milliseconds() as i64
    }

    /// This timestamp moved by `d`.
    pub fn plus(&self, d: Duration) -> Self {
        Self(self.0 + d)
    }
}

impl From<OffsetDateTime> for Timestamp {
    fn from(t: OffsetDateTime) -> Self {
        let t = t.to_offset(UtcOffset::UTC);
        // Keep millisecond precision so that the text form round-trips exactly.
        let nanos = t.nanosecond() - t.nanosecond() % 1_000_000;
        Self(t.replace_nanosecond(nanos).unwrap_or(t))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let format = format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
        );
        match self.0.format(&format) {
            Ok(s) => f.write_str(&s),
            Err(_) => Err(fmt::Error),
        }
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_form_is_fixed_width_utc_and_round_trips() {
        let t = Timestamp::parse("2026-11-26T09:00:00.5+01:00").expect("valid");
        assert_eq!(t.to_string(), "2026-11-26T08:00:00.500Z");
        assert_eq!(Timestamp::parse(&t.to_string()).expect("valid"), t);
    }

    #[test]
    fn text_order_matches_time_order() {
        let a = Timestamp::parse("2026-01-01T00:00:09Z").expect("valid");
        let b = Timestamp::parse("2026-01-01T00:00:10.001Z").expect("valid");
        assert!(a < b);
        assert!(a.to_string() < b.to_string());
    }
}
