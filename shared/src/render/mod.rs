//! Renders an execution's table: a PDF for people ([`pdf`]) and a CSV of the
//! same rows ([`csv`]). Cell formatting shared by both lives here.

pub mod chart;
pub mod csv;
pub use crate::contract::display;
pub mod fonts;
pub mod pdf;
pub mod preview;

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
    /// A chart drawn above the table on the first page.
    pub chart: Option<&'a chart::Drawing>,
}

impl<'a> ReportMeta<'a> {
    /// The header of the PDF rendered from `msg`.
    pub fn of(
        msg: &'a crate::contract::ExecutionCompletedV1,
        time_zone: &'a jiff::tz::TimeZone,
        chart: Option<&'a chart::Drawing>,
    ) -> Self {
        Self {
            report_name: &msg.report_name,
            execution_id: &msg.execution_id,
            generated_at: msg.generated_at,
            time_zone,
            time_zone_name: &msg.time_zone,
            parameters: &msg.parameters,
            chart,
        }
    }
}

/// Resolves an IANA zone name (the tz database is bundled, so this works on
/// Lambda's minimal images too).
pub fn time_zone(name: &str) -> Option<jiff::tz::TimeZone> {
    jiff::tz::TimeZone::get(name).ok()
}

/// A timestamp in a zone, e.g. `2026-11-26 08:00 CET`; the UTC text form
/// if the zone's local time cannot be shown.
pub fn local_time(t: Timestamp, tz: &jiff::tz::TimeZone) -> String {
    zoned(t, tz, "%Y-%m-%d %H:%M %Z")
}

/// A moment as people write it, in a zone: `Fri 4 Dec 2026, 06:19 CET`
/// (for headers, footers, messages and link expiry); the UTC text form if
/// the zone's local time cannot be shown.
pub fn human_time(t: Timestamp, tz: &jiff::tz::TimeZone) -> String {
    zoned(t, tz, "%a %-d %b %Y, %H:%M %Z")
}

/// `t` in `tz` by a strftime `format`; the UTC text form if the zone's
/// local time cannot be shown.
fn zoned(t: Timestamp, tz: &jiff::tz::TimeZone, format: &str) -> String {
    jiff::Timestamp::from_millisecond(t.unix_millis())
        .ok()
        .and_then(|ts| jiff::fmt::strtime::format(format, &ts.to_zoned_datetime(tz.clone())).ok())
        .unwrap_or_else(|| t.to_string())
}

/// Formats a cell for people, by the one number rule (see
/// [`format_number`]), times in the report's zone, and Yes/No.
pub fn format_cell(
    v: &serde_json::Value,
    column: &crate::contract::Column,
    tz: &jiff::tz::TimeZone,
) -> String {
    use serde_json::Value as V;
    match (column.kind, v) {
        (_, V::Null) => String::new(),
        (ColumnType::Decimal, V::Number(n)) => n
            .as_f64()
            .map(|f| format_number(f, column.shown_decimals()))
            .unwrap_or_else(|| n.to_string()),
        (ColumnType::Decimal, V::String(s)) => s
            .parse::<f64>()
            .map(|f| format_number(f, column.shown_decimals()))
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

/// The one number rule, everywhere people read numbers (PDF, email,
/// Slack): thousands grouped with `,`, a `.` before exactly the decimals
/// the column declares, `-` for negatives and never `-0`. Only this locale
/// is built; a report-level `locale` would pick the separators here.
pub fn format_number(f: f64, decimals: usize) -> String {
    let text = format!("{f:.decimals$}");
    let negative_zero =
        text.starts_with('-') && text.bytes().all(|b| matches!(b, b'-' | b'0' | b'.'));
    group_thousands(if negative_zero { &text[1..] } else { &text })
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

/// Column sums for the totals line: `Some` for numeric columns. Rows that
/// [`summarize`](crate::contract::summarize) accepted always have totals;
/// otherwise numeric columns show `n/a`.
pub fn totals(rows: &dyn crate::contract::Rows) -> Vec<Option<String>> {
    shown_totals(rows.columns(), crate::contract::totals_of(rows))
}

/// Totals as the totals line shows them.
pub fn shown_totals(
    columns: &[crate::contract::Column],
    sums: Result<Vec<Option<crate::contract::Total>>, crate::contract::TableError>,
) -> Vec<Option<String>> {
    use crate::contract::Total;
    match sums {
        Ok(sums) => sums
            .into_iter()
            .zip(columns)
            .map(|(t, c)| {
                t.map(|t| match t {
                    Total::Integer(n) => group_thousands(&n.to_string()),
                    Total::Decimal(f) => format_number(f, c.shown_decimals()),
                })
            })
            .collect(),
        Err(_) => columns
            .iter()
            .map(|c| {
                matches!(c.kind, ColumnType::Integer | ColumnType::Decimal)
                    .then(|| "n/a".to_owned())
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::Column;
    use serde_json::json;

    #[test]
    fn given_declared_decimals_when_numbers_are_shown_then_one_rule_groups_and_rounds_them() {
        let three = Column {
            decimals: Some(3),
            ..Column::new("d", ColumnType::Decimal)
        };
        let none = Column {
            decimals: Some(0),
            ..Column::new("d", ColumnType::Decimal)
        };
        let utc = jiff::tz::TimeZone::UTC;
        assert_eq!(format_cell(&json!(1234.5), &three, &utc), "1,234.500");
        assert_eq!(format_cell(&json!("1234567.5"), &none, &utc), "1,234,568");
        assert_eq!(format_cell(&json!(-0.001), &none, &utc), "0");
        assert_eq!(
            format_cell(&json!(-1234), &Column::new("i", ColumnType::Integer), &utc),
            "-1,234"
        );
        assert_eq!(format_number(-1234.5, 2), "-1,234.50");
        assert_eq!(format_number(0.0, 0), "0");
    }

    #[test]
    fn given_a_zone_when_a_moment_is_shown_to_people_then_it_reads_like_a_date_with_the_zone() {
        let zurich = time_zone("Europe/Zurich").expect("bundled tzdb");
        let t = Timestamp::parse("2026-12-04T05:19:32.394Z").expect("time");
        assert_eq!(human_time(t, &zurich), "Fri 4 Dec 2026, 06:19 CET");
        let summer = Timestamp::parse("2026-07-01T05:19:00Z").expect("time");
        assert_eq!(human_time(summer, &zurich), "Wed 1 Jul 2026, 07:19 CEST");
        assert_eq!(
            human_time(
                Timestamp::MAX,
                &time_zone("Pacific/Kiritimati").expect("tz")
            ),
            "9999-12-31T23:59:59.999Z"
        );
    }

    #[test]
    fn numbers_dates_and_booleans_are_formatted_for_people() {
        let zurich = time_zone("Europe/Zurich").expect("bundled tzdb");
        assert_eq!(group_thousands("1234567.50"), "1,234,567.50");
        assert_eq!(group_thousands("-1000"), "-1,000");
        let col = |kind| Column::new("c", kind);
        assert_eq!(
            format_cell(&json!(98231.5), &col(ColumnType::Decimal), &zurich),
            "98,231.50"
        );
        assert_eq!(
            format_cell(
                &json!("2026-11-25T18:42:00Z"),
                &col(ColumnType::DateTime),
                &zurich
            ),
            "2026-11-25 19:42 CET"
        );
        assert_eq!(
            format_cell(&json!(true), &col(ColumnType::Boolean), &zurich),
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

    #[test]
    fn given_integers_near_the_i64_limits_when_totalled_then_the_sum_is_exact() {
        let table: crate::contract::Table = serde_json::from_value(json!({
            "columns": [{"name": "n", "type": "integer"}],
            "rows": [[i64::MAX], [i64::MAX], [1]]
        }))
        .expect("table");
        assert_eq!(
            totals(&table),
            [Some("18,446,744,073,709,551,615".to_owned())]
        );
    }

    #[test]
    fn given_a_table_whose_totals_cannot_be_computed_when_totalled_then_numeric_columns_show_n_a() {
        let table: crate::contract::Table = serde_json::from_value(json!({
            "columns": [{"name": "c"}, {"name": "d", "type": "decimal"}],
            "rows": [["a", "NaN"]]
        }))
        .expect("table");
        assert_eq!(totals(&table), [None, Some("n/a".to_owned())]);
    }

    #[test]
    fn given_times_at_the_edges_of_the_range_when_shown_locally_then_nothing_panics() {
        let kiritimati = time_zone("Pacific/Kiritimati").expect("bundled tzdb");
        let honolulu = time_zone("Pacific/Honolulu").expect("bundled tzdb");
        // The last representable instant has no local time at +14:00 within
        // year 9999, so it is shown in UTC.
        assert_eq!(
            local_time(Timestamp::MAX, &kiritimati),
            "9999-12-31T23:59:59.999Z"
        );
        assert!(local_time(Timestamp::MIN, &honolulu).starts_with("0000-12-31"));
        // A cell past year 9999 in UTC is not a time; it is shown as given.
        assert_eq!(
            format_cell(
                &json!("9999-12-31T23:59:59-01:00"),
                &Column::new("t", ColumnType::DateTime),
                &kiritimati
            ),
            "9999-12-31T23:59:59-01:00"
        );
    }
}
