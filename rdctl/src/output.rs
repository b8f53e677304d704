//! Output: a plain table by default, the API's JSON with `--json`.

use serde_json::Value;

/// A value as a table cell: strings bare, null empty, the rest as JSON.
pub fn cell(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Rows of `items` under `columns` (each a JSON pointer such as
/// `/last_error/code`, shown under its last segment).
pub fn table(items: &[Value], columns: &[&str]) -> String {
    let header: Vec<String> = columns
        .iter()
        .map(|c| c.rsplit('/').next().unwrap_or(c).to_uppercase())
        .collect();
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|i| {
            columns
                .iter()
                .map(|c| cell(i.pointer(c).unwrap_or(&Value::Null)))
                .collect()
        })
        .collect();
    let widths: Vec<usize> = (0..columns.len())
        .map(|n| {
            rows.iter()
                .map(|r| r[n].chars().count())
                .chain([header[n].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: &[String]| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        padded.join("  ").trim_end().to_owned()
    };
    let mut out = vec![line(&header)];
    out.extend(rows.iter().map(|r| line(r)));
    out.join("\n")
}

/// One object as `key  value` lines, in `fields` order.
pub fn record(item: &Value, fields: &[&str]) -> String {
    let present: Vec<(&str, &Value)> = fields
        .iter()
        .filter_map(|f| {
            let v = item.pointer(f)?;
            (!v.is_null()).then(|| (f.trim_start_matches('/'), v))
        })
        .collect();
    let width = present.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    present
        .iter()
        .map(|(k, v)| format!("{k:<width$}  {}", cell(v)))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_table_pads_its_columns_and_names_them_by_their_last_segment() {
        let items = [
            json!({"id": "a", "last_error": {"code": "http_500"}}),
            json!({"id": "longer-id", "last_error": null}),
        ];
        assert_eq!(
            table(&items, &["/id", "/last_error/code"]),
            "ID         CODE\na          http_500\nlonger-id"
        );
    }

    #[test]
    fn a_record_skips_absent_and_null_fields() {
        let r = record(
            &json!({"id": "x", "n": 3, "gone": null}),
            &["/id", "/n", "/gone", "/nope"],
        );
        assert_eq!(r, "id  x\nn   3");
    }
}
