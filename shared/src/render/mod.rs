//! Renders an execution's table: a PDF for people ([`pdf`]) and a CSV of the
//! same rows ([`csv`]). Cell formatting shared by both lives here.

pub mod csv;
pub mod fonts;
pub mod pdf;

use crate::contract::ColumnType;
use crate::domain::Timestamp;
use std::collections::BTreeMap;

pub use pdf::{page_count, render_pdf, rows_per_page};

/// What the PDF header shows.
#[derive(Debug, Clone)]
pub struct ReportMeta<'a> {
    pub report_name: &'a str,
    pub execution_id: &'a str,
    pub generated_at: Timestamp,
    /// The report's zone; times are shown in it.
    pub time_zone: &'a jiff::tz::TimeZone,
    pub time_zone_name: &'a str,
    pub parameters: &'a BTreeMap<String, String>,
}

/// Resolves an IANA zone name (the tz database is bundled, so this works on
/// Lambda's minimal images too).
pub fn time_zone(name: &str) -> Option<jiff::tz::TimeZone> {
    jiff::tz::TimeZone::get(name).ok()
}

/// A timestamp in a zone, e.g. `2026-11-26 08:00 CET`.
pub fn local_time(t: Timestamp, tz: &jiff::tz::TimeZone) -> String {
    jiff::Timestamp::from_millisecond(t.unix_millis())
        .map(|ts| {
            ts.to_zoned_datetime(tz.clone())
                .strftime("%Y-%m-%d %H:%M %Z")
                .to_string()
        })
        .unwrap_or_else(|_| t.to_string())
}

/// Formats a cell for people: grouped numbers, two decimals, local times,
/// Yes/No.
pub fn format_cell(v: &serde_json::Value, kind: ColumnType, tz: &jiff::tz::TimeZone) -> String {
    use serde_json::Value as V;
    match (kind, v) {
        (_, V::Null) => String::new(),
        (ColumnType::Decimal, V::Number(n)) => n
            .as_f64()
            .map(|f| group_thousands(&format!("{f:.2}")))
            .unwrap_or_else(|| n.to_string()),
        (ColumnType::Decimal, V::String(s)) => s
            .parse::<f64>()
            .map(|f| group_thousands(&format!("{f:.2}")))
            .unwrap_or_else(|_| s.clone()),
        (ColumnType::Integer, V::Number(n)) => group_thousands(&n.to_string()),
        (ColumnType::DateTime, V::String(s)) => Timestamp::parse(s)
            .map(|t| local_time(t, tz))
            .unwrap_or_else(|_| s.clone()),
        (ColumnType::Boolean, V::Bool(b)) => if *b { "Yes" } else { "No" }.to_owned(),
        (_, V::String(s)) => s.clone(),
        (_, other) => other.to_string(),
    }
}

/// `1234567.5` → `1,234,567.5`.
pub fn group_thousands(num: &str) -> String {
    let (sign, rest) = num.strip_prefix('-').map_or(("", num), |r| ("-", r));
    let (int, frac) = rest
        .split_once('.')
        .map_or((rest, None), |(i, f)| (i, Some(f)));
    let mut grouped = String::new();
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(c);
    }
    match frac {
        Some(f) => format!("{sign}{grouped}.{f}"),
        None => format!("{sign}{grouped}"),
    }
}

/// Column sums for the totals line: `Some` for numeric columns.
pub fn totals(table: &crate::contract::Table) -> Vec<Option<String>> {
    table
        .columns
        .iter()
        .enumerate()
        .map(|(i, c)| match c.kind {
            ColumnType::Integer => {
                let sum: i128 = table
                    .rows
                    .iter()
                    .filter_map(|r| r[i].as_i64().map(i128::from))
                    .sum();
                Some(group_thousands(&sum.to_string()))
            }
            ColumnType::Decimal => {
                let sum: f64 = table
                    .rows
                    .iter()
                    .filter_map(|r| match &r[i] {
                        serde_json::Value::Number(n) => n.as_f64(),
                        serde_json::Value::String(s) => s.parse().ok(),
                        _ => None,
                    })
                    .sum();
                Some(group_thousands(&format!("{sum:.2}")))
            }
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn numbers_dates_and_booleans_are_formatted_for_people() {
        let zurich = time_zone("Europe/Zurich").expect("bundled tzdb");
        assert_eq!(group_thousands("1234567.50"), "1,234,567.50");
        assert_eq!(group_thousands("-1000"), "-1,000");
        assert_eq!(
            format_cell(&json!(98231.5), ColumnType::Decimal, &zurich),
            "98,231.50"
        );
        assert_eq!(
            format_cell(
                &json!("2026-11-25T18:42:00Z"),
                ColumnType::DateTime,
                &zurich
            ),
            "2026-11-25 19:42 CET"
        );
        assert_eq!(
            format_cell(&json!(true), ColumnType::Boolean, &zurich),
            "Yes"
        );
        assert!(time_zone("Mars/Olympus_Mons").is_none());
    }

    #[test]
    fn totals_sum_numeric_columns_only() {
        let table: crate::contract::Table = serde_json::from_value(json!({
            "columns": [{"name": "c"}, {"name": "n", "type": "integer"}, {"name": "d", "type": "decimal"}],
            "rows": [["a", 1000, 1.25], ["b", 2, "2.50"], ["c", null, null]]
        }))
        .expect("table");
        assert_eq!(
            totals(&table),
            [None, Some("1,002".to_owned()), Some("3.75".to_owned())]
        );
    }
}
