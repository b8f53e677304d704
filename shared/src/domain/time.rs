//! A UTC timestamp with a fixed-width text form, so that DynamoDB sort keys
//! order the same way as time does.
//!
//! Only years 0001–9999 (after normalising to UTC) are representable: that
//! keeps the text form fixed-width, and every conversion and sum stays in
//! range, so nothing here can panic on input.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use time::format_description::well_known::Rfc3339;
use time::macros::datetime;
use time::{Duration, OffsetDateTime, UtcOffset};

/// A point in time, always UTC, printed as `2026-11-26T08:00:00.000Z`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(OffsetDateTime);

/// Why a text or value is not a [`Timestamp`].
#[derive(Debug, thiserror::Error)]
pub enum TimestampError {
    /// Not RFC 3339.
    #[error("not an RFC 3339 timestamp: {0}")]
    Syntax(#[from] time::error::Parse),
    /// Valid RFC 3339, but outside years 0001–9999 in UTC.
    #[error("timestamp is outside 0001-01-01T00:00:00Z..=9999-12-31T23:59:59.999Z")]
    OutOfRange,
}

impl Timestamp {
    /// The earliest representable time, `0001-01-01T00:00:00.000Z`.
    pub const MIN: Timestamp = Timestamp(datetime!(0001-01-01 00:00:00 UTC));
    /// The latest representable time, `9999-12-31T23:59:59.999Z`.
    pub const MAX: Timestamp = Timestamp(datetime!(9999-12-31 23:59:59.999 UTC));

    /// The current time.
    pub fn now() -> Self {
        Self::from_offset(OffsetDateTime::now_utc()).unwrap_or(Self::MAX)
    }

    /// Parses any RFC 3339 timestamp and normalises it to UTC; refuses one
    /// whose UTC value falls outside years 0001–9999.
    pub fn parse(text: &str) -> Result<Self, TimestampError> {
        Self::from_offset(OffsetDateTime::parse(text, &Rfc3339)?)
    }

    /// Normalises `t` to UTC at millisecond precision (so that the text form
    /// round-trips exactly); refuses values outside years 0001–9999 in UTC.
    pub fn from_offset(t: OffsetDateTime) -> Result<Self, TimestampError> {
        let t = t
            .checked_to_offset(UtcOffset::UTC)
            .ok_or(TimestampError::OutOfRange)?;
        let nanos = t.nanosecond() - t.nanosecond() % 1_000_000;
        let t = t.replace_nanosecond(nanos).unwrap_or(t);
        if (Self::MIN.0..=Self::MAX.0).contains(&t) {
            Ok(Self(t))
        } else {
            Err(TimestampError::OutOfRange)
        }
    }

    /// Milliseconds since the Unix epoch.
    pub fn unix_millis(&self) -> i64 {
        // In range by construction: years 0001–9999 are about ±2.5e14 ms.
        i64::try_from(self.0.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
    }

    /// Builds a timestamp from milliseconds since the Unix epoch; `None`
    /// outside years 0001–9999.
    pub fn from_unix_millis(ms: i64) -> Option<Self> {
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
            .ok()
            .and_then(|t| Self::from_offset(t).ok())
    }

    /// The wrapped value.
    pub fn inner(&self) -> OffsetDateTime {
        self.0
    }

    /// Milliseconds from `earlier` to `self` (negative if `earlier` is later).
    pub fn millis_since(&self, earlier: Timestamp) -> i64 {
        let ms = (self.0 - earlier.0).whole_milliseconds();
        i64::try_from(ms).unwrap_or(if ms < 0 { i64::MIN } else { i64::MAX })
    }

    /// This timestamp moved by `d`, saturating at [`Timestamp::MIN`] and
    /// [`Timestamp::MAX`].
    pub fn plus(&self, d: Duration) -> Self {
        let saturated = if d.is_negative() {
            Self::MIN
        } else {
            Self::MAX
        };
        self.0
            .checked_add(d)
            .and_then(|t| Self::from_offset(t).ok())
            .unwrap_or(saturated)
    }
}

impl fmt::Display for Timestamp {
    /// Writes the fields directly: with years 0001–9999 this cannot fail and
    /// is always 24 characters wide.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = self.0;
        write!(
            f,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            t.millisecond()
        )
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

    #[test]
    fn given_a_time_past_year_9999_in_utc_when_parsed_then_it_is_refused_without_panicking() {
        for text in [
            "9999-12-31T23:59:59-01:00",
            "9999-12-31T23:00:00-23:59",
            "0000-12-31T23:59:59Z",
            "0001-01-01T00:00:00+00:01",
        ] {
            assert!(
                matches!(Timestamp::parse(text), Err(TimestampError::OutOfRange)),
                "{text}"
            );
        }
        assert!(matches!(
            Timestamp::parse("yesterday"),
            Err(TimestampError::Syntax(_))
        ));
    }

    #[test]
    fn given_the_edges_of_the_range_when_parsed_then_they_print_fixed_width() {
        let max = Timestamp::parse("9999-12-31T23:59:59.999999Z").expect("last millisecond");
        assert_eq!(max, Timestamp::MAX);
        assert_eq!(max.to_string(), "9999-12-31T23:59:59.999Z");
        let min = Timestamp::parse("0001-01-01T01:00:00+01:00").expect("first instant");
        assert_eq!(min, Timestamp::MIN);
        assert_eq!(min.to_string(), "0001-01-01T00:00:00.000Z");
        assert_eq!(min.to_string().len(), max.to_string().len());
    }

    #[test]
    fn given_a_huge_duration_when_added_then_the_result_saturates_at_the_range_edges() {
        let t = Timestamp::parse("2026-11-26T08:00:00Z").expect("valid");
        assert_eq!(t.plus(Duration::MAX), Timestamp::MAX);
        assert_eq!(t.plus(Duration::MIN), Timestamp::MIN);
        assert_eq!(Timestamp::MAX.plus(Duration::days(1)), Timestamp::MAX);
        assert_eq!(
            t.plus(Duration::minutes(5)).to_string(),
            "2026-11-26T08:05:00.000Z"
        );
    }

    #[test]
    fn given_extreme_millis_when_converted_then_out_of_range_values_are_none() {
        assert_eq!(Timestamp::from_unix_millis(i64::MAX), None);
        assert_eq!(Timestamp::from_unix_millis(i64::MIN), None);
        let max = Timestamp::MAX.unix_millis();
        assert_eq!(Timestamp::from_unix_millis(max), Some(Timestamp::MAX));
        assert_eq!(Timestamp::from_unix_millis(max + 1), None);
        assert_eq!(
            Timestamp::MAX.millis_since(Timestamp::MIN),
            max - Timestamp::MIN.unix_millis()
        );
        assert!(Timestamp::MIN.millis_since(Timestamp::MAX) < 0);
    }

    #[test]
    fn given_an_offset_date_time_out_of_range_when_converted_then_it_is_an_error() {
        let late = time::macros::datetime!(9999-12-31 23:59:59 -01:00);
        assert!(Timestamp::from_offset(late).is_err());
        let fine = time::macros::datetime!(2026-11-26 09:00:00.123456 +01:00);
        assert_eq!(
            Timestamp::from_offset(fine).expect("in range").to_string(),
            "2026-11-26T08:00:00.123Z"
        );
    }
}
