//! Claim-checked JSON objects: the bytes as a `Table` (the render handler
//! reads them with `serde_json::from_slice`), then validation, totals and,
//! for a valid small table, cell formatting and the CSV.

#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use shared::contract::Table;

fuzz_target!(|data: &[u8]| {
    let Ok(table) = serde_json::from_slice::<Table>(data) else {
        return;
    };
    let tz = common::zone(Some("Pacific/Kiritimati"));
    let _ = common::exercise_table(&table, &tz);
});
