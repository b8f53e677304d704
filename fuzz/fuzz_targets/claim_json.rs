//! Claim-checked JSON objects, read the way the render handler reads them:
//! streamed by `JsonRows` (which must agree with parsing the bytes whole as
//! a `Table`: same verdict, same columns, same rows, same summary), then
//! validation, totals and, for a valid small table, cell formatting and the
//! CSV.

#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use shared::contract::{JsonRows, Rows, Table, summarize};
use std::ops::ControlFlow;

fuzz_target!(|data: &[u8]| {
    let whole = serde_json::from_slice::<Table>(data);
    let streamed = JsonRows::new(data.to_vec());
    let (table, streamed) = match (whole, streamed) {
        (Ok(t), Ok(s)) => (t, s),
        (Err(_), Err(_)) => return,
        // serde's derive also takes a struct as an array (`[columns, rows]`);
        // the streaming reader takes only the documented object form.
        (Ok(_), Err(_)) => {
            let first = data.iter().find(|b| !b.is_ascii_whitespace());
            assert_eq!(first, Some(&b'['), "JsonRows refused a table object");
            return;
        }
        (Err(e), Ok(_)) => panic!("JsonRows accepted what Table refuses: {e}"),
    };
    assert_eq!(streamed.columns(), table.columns.as_slice());
    let mut rows = Vec::new();
    streamed
        .scan(&mut |r| {
            rows.push(r.to_vec());
            ControlFlow::Continue(())
        })
        .expect("an accepted document scans");
    assert_eq!(rows, table.rows);
    assert_eq!(
        summarize(&streamed).map_err(|e| e.to_string()),
        summarize(&table).map_err(|e| e.to_string())
    );
    let tz = common::zone(Some("Pacific/Kiritimati"));
    let _ = common::exercise_table(&table, &tz);
});
