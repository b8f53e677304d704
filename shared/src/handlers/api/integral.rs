//! Integers as JSON Schema reads them: `32` and `32.0` are the same
//! integer, so every input field documented as `integer` takes both, and
//! `32.5` is refused.

use serde::de::Error as _;
use serde::{Deserialize, Deserializer};

/// The integral value of a JSON number, if it has one and is not negative.
fn whole(n: &serde_json::Number) -> Option<u64> {
    n.as_u64().or_else(|| {
        let f = n.as_f64()?;
        // 2^64 is the first f64 above u64::MAX.
        (f.fract() == 0.0 && (0.0..18_446_744_073_709_551_616.0).contains(&f)).then_some(f as u64)
    })
}

fn to<T: TryFrom<u64>, E: serde::de::Error>(n: &serde_json::Number) -> Result<T, E> {
    let v = whole(n).ok_or_else(|| E::custom(format!("expected a whole number, got {n}")))?;
    T::try_from(v).map_err(|_| E::custom(format!("{v} is out of range")))
}

/// A field typed `integer` (use with `deserialize_with`).
pub fn integer<'de, D: Deserializer<'de>, T: TryFrom<u64>>(d: D) -> Result<T, D::Error> {
    to(&serde_json::Number::deserialize(d)?)
}

/// An optional field typed `integer`: absent or `null` is `None`.
pub fn optional<'de, D: Deserializer<'de>, T: TryFrom<u64>>(d: D) -> Result<Option<T>, D::Error> {
    Option::<serde_json::Number>::deserialize(d)?
        .map(|n| to(&n))
        .transpose()
}

/// An optional query parameter typed `integer`: `32` and `32.0` are 32.
pub fn query<'de, D: Deserializer<'de>, T: TryFrom<u64>>(d: D) -> Result<Option<T>, D::Error> {
    let Some(text) = Option::<String>::deserialize(d)? else {
        return Ok(None);
    };
    let n: serde_json::Number = text
        .trim()
        .parse()
        .map_err(|_| D::Error::custom(format!("expected a whole number, got {text:?}")))?;
    to(&n).map(Some)
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    struct Input {
        #[serde(default, deserialize_with = "super::integer")]
        n: u64,
        #[serde(default, deserialize_with = "super::optional")]
        small: Option<u8>,
    }

    #[derive(Debug, Deserialize)]
    struct Query {
        #[serde(default, deserialize_with = "super::query")]
        limit: Option<i32>,
    }

    #[test]
    fn a_query_integer_may_be_written_integral() {
        let q = |s: &str| serde_urlencoded::from_str::<Query>(s).map(|q| q.limit);
        assert_eq!(q("limit=32").ok(), Some(Some(32)));
        assert_eq!(q("limit=32.0").ok(), Some(Some(32)));
        assert_eq!(q("").ok(), Some(None));
        assert!(q("limit=3.5").is_err() && q("limit=x").is_err() && q("limit=-1").is_err());
    }

    fn parse(json: &str) -> Result<Input, serde_json::Error> {
        serde_json::from_str(json)
    }

    #[test]
    fn integral_numbers_are_integers_and_fractions_are_refused() {
        assert_eq!(parse(r#"{"n": 32}"#).expect("int").n, 32);
        assert_eq!(parse(r#"{"n": 32.0}"#).expect("integral").n, 32);
        assert_eq!(parse(r#"{"n": 3.2e1}"#).expect("exponent").n, 32);
        assert_eq!(parse(r#"{"small": 50.0}"#).expect("u8").small, Some(50));
        assert_eq!(parse(r#"{"small": null}"#).expect("null").small, None);
        assert_eq!(parse("{}").expect("absent").small, None);
        for bad in [
            r#"{"n": 32.5}"#,
            r#"{"n": -1}"#,
            r#"{"n": -1.0}"#,
            r#"{"n": 1e300}"#,
            r#"{"small": 256}"#,
            r#"{"small": 256.0}"#,
            r#"{"n": "32"}"#,
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
