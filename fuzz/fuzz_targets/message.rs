//! Queue bodies: the input, as text, parsed as each queue contract
//! (executions, fan-out, delivery), then what the handlers do next with
//! what parsed: id checks, zone lookup, table validation, totals, cell
//! formatting and the CSV, the claim-check scope, the input hash.

#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use shared::blob::{CLAIM_CHECK_PREFIX, ClaimCheckScope};
use shared::contract::{
    DeliveryTask, ExecutionCompletedV1, ExecutionMessage, FanoutTask, MAX_INLINE_BODY_BYTES,
    ReportData,
};
use shared::domain::Timestamp;
use shared::handlers::render::input_hash;
use shared::handlers::valid_id;
use shared::render::display::{MAX_REPORT_NAME, display};
use shared::render::local_time;

fuzz_target!(|data: &[u8]| {
    // SQS bodies are text; the handlers refuse larger ones before parsing.
    if data.len() > MAX_INLINE_BODY_BYTES {
        return;
    }
    let body = String::from_utf8_lossy(data);
    let body = body.as_ref();

    if let Ok(ExecutionMessage::CompletedV1(msg)) = serde_json::from_str::<ExecutionMessage>(body) {
        completed(&msg);
    }
    if let Ok(FanoutTask::FanoutV1 {
        execution_id,
        cursor,
        ..
    }) = serde_json::from_str::<FanoutTask>(body)
    {
        id(&execution_id);
        let _ = cursor;
    }
    if let Ok(DeliveryTask::DeliverV1 {
        attempt_id,
        execution_id,
        target_id,
    }) = serde_json::from_str::<DeliveryTask>(body)
    {
        for i in [&attempt_id, &execution_id, &target_id] {
            id(i);
        }
    }
    // The whole body as a timestamp (generated_at and date_time cells use
    // the same parser).
    timestamp(body);
});

/// An id `valid_id` accepts is 1-128 ASCII characters without `/` (ids go
/// into S3 keys and DynamoDB keys).
fn id(s: &str) {
    if valid_id(s) {
        assert!(!s.is_empty() && s.len() <= 128, "{s:?}");
        assert!(!s.contains('/') && s.is_ascii(), "{s:?}");
    }
}

/// A parsed timestamp prints as 24 fixed-width characters that parse back
/// to the same instant, within years 0001-9999.
fn timestamp(s: &str) {
    if let Ok(t) = Timestamp::parse(s) {
        round_trip(t);
    }
}

fn round_trip(t: Timestamp) {
    assert!((Timestamp::MIN..=Timestamp::MAX).contains(&t));
    let text = t.to_string();
    assert_eq!(text.len(), 24, "{text}");
    let back = Timestamp::parse(&text).expect("printed form parses");
    assert_eq!(back, t, "{text}");
    assert_eq!(Timestamp::from_unix_millis(t.unix_millis()), Some(t));
}

fn completed(msg: &ExecutionCompletedV1) {
    id(&msg.execution_id);
    id(&msg.report_id);
    round_trip(msg.generated_at);

    let name = display(&msg.report_name, MAX_REPORT_NAME);
    assert!(name.chars().count() <= MAX_REPORT_NAME);

    // The input hash decides "same execution" vs "conflict"; it hashes the
    // message's JSON, so serialising must never fail (an empty hash for
    // every such message would make different contents look identical).
    let json = serde_json::to_string(&ExecutionMessage::CompletedV1(msg.clone()))
        .expect("a parsed message serialises");
    assert_eq!(input_hash(msg).len(), 64);
    // And that JSON is a message again, with the same fields (row values
    // are left out: serde_json's default float parsing is best-effort, so a
    // decimal may come back one unit in the last place off).
    let ExecutionMessage::CompletedV1(again) =
        serde_json::from_str::<ExecutionMessage>(&json).expect("serialised message parses back")
    else {
        panic!("a completed execution parses back as another message type");
    };
    assert_eq!(again.execution_id, msg.execution_id);
    assert_eq!(again.report_id, msg.report_id);
    assert_eq!(again.report_name, msg.report_name);
    assert_eq!(again.generated_at, msg.generated_at);
    assert_eq!(again.time_zone, msg.time_zone);
    assert_eq!(again.parameters, msg.parameters);
    match (&again.data, &msg.data) {
        (ReportData::Inline(a), ReportData::Inline(b)) => {
            assert_eq!(a.columns, b.columns);
            assert_eq!(a.rows.len(), b.rows.len());
        }
        (ReportData::S3(a), ReportData::S3(b)) => assert_eq!(a, b),
        _ => panic!("data source changed in the round trip"),
    }

    let tz = common::zone(Some(&msg.time_zone));
    let _ = local_time(msg.generated_at, &tz);

    match &msg.data {
        ReportData::Inline(table) => {
            let _ = common::exercise_table(table, &tz);
        }
        ReportData::S3(check) => {
            let scope = ClaimCheckScope::reports("reports-bucket");
            if let Ok(key) = scope.check(&check.uri) {
                assert!(key.starts_with(CLAIM_CHECK_PREFIX), "{key:?}");
                assert!(key.len() <= 1024, "{} bytes", key.len());
                assert!(
                    key.split('/')
                        .all(|s| !s.is_empty() && s != "." && s != ".."),
                    "{key:?}"
                );
                assert!(!key.chars().any(char::is_control), "{key:?}");
                assert_eq!(check.uri, format!("s3://reports-bucket/{key}"));
            }
        }
    }
}
