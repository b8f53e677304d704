//! The CSV of an execution's rows: a header of column names, then one line
//! per row with machine-readable values (RFC 4180 quoting).

use crate::contract::Table;

/// Renders CSV bytes.
pub fn render_csv(table: &Table) -> Vec<u8> {
    let mut w = ::csv::Writer::from_writer(Vec::new());
    let _ = w.write_record(table.columns.iter().map(|c| c.name.as_str()));
    for row in &table.rows {
        let cells = row.iter().map(|v| match v {
            serde_json::Value::Null => String::new(),
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        });
        let _ = w.write_record(cells);
    }
    w.into_inner().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #[test]
    fn rows_round_trip_with_quoting() {
        let table: crate::contract::Table = serde_json::from_value(serde_json::json!({
            "columns": [{"name": "City"}, {"name": "n", "type": "integer"}],
            "rows": [["Αθήνα, Ελλάδα", 1], ["東京", null]]
        }))
        .expect("table");
        let text = String::from_utf8(super::render_csv(&table)).expect("utf-8");
        assert_eq!(text, "City,n\n\"Αθήνα, Ελλάδα\",1\n東京,\n");
    }
}
