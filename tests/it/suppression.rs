//! Suppressed recipients through the real parts (moto's DynamoDB and SES,
//! the runner): a suppressed address is skipped and recorded as
//! `suppressed`, the rest are sent with SES's message id, and an attempt
//! whose recipients are all suppressed fails at once with
//! `all_recipients_suppressed`, sending nothing.

use report_delivery_tests::{run_sample, running_stack, seed_target};
use shared::domain::recipient::{RecipientStatus, Role};
use shared::domain::suppression::{Suppression, SuppressionReason, address_key};
use shared::domain::{AttemptStatus, ErrorCategory, Timestamp};
use shared::store::SuppressionStore;

fn suppression(target: &str, address: &str, reason: SuppressionReason) -> Suppression {
    Suppression {
        target_id: target.into(),
        address: address_key(address),
        reason,
        detail: None,
        by: "test".into(),
        attempt_id: None,
        at: Timestamp::now(),
    }
}

#[tokio::test]
async fn a_suppressed_recipient_is_skipped_and_recorded_and_all_suppressed_fails_at_once() {
    let s = running_stack("suppression", &[]).await;
    let store = shared::store::dynamo::DynamoStore::new(s.sdk_dynamo(), s.store_tables());
    seed_target(
        &s,
        "rpt-supp",
        "supp",
        "email",
        serde_json::json!({"to": ["keep@example.com", "Gone@Example.com"], "cc": ["cc@example.com"]}),
        None,
        &["pdf"],
    )
    .await;
    assert!(
        store
            .suppress(&suppression(
                "supp",
                "gone@example.com",
                SuppressionReason::Bounce
            ))
            .await
            .expect("stored")
    );
    assert!(
        !store
            .suppress(&suppression(
                "supp",
                "GONE@example.com",
                SuppressionReason::Manual
            ))
            .await
            .expect("answered"),
        "a second suppression keeps the first"
    );

    let (execution_id, attempts) = run_sample(&s, "rpt-supp", 1).await;
    let a = &attempts[0];
    assert_eq!(a.status, AttemptStatus::Delivered, "{:?}", a.last_error);
    let of = |address: &str| {
        a.recipients
            .iter()
            .find(|r| r.address == address)
            .unwrap_or_else(|| panic!("{address} not recorded: {:?}", a.recipients))
    };
    assert_eq!(a.recipients.len(), 3);
    let mut ids = Vec::new();
    for (address, role) in [("keep@example.com", Role::To), ("cc@example.com", Role::Cc)] {
        let r = of(address);
        // SES's Delivery may have reached the record already.
        assert!(
            matches!(r.status, RecipientStatus::Sent | RecipientStatus::Delivered),
            "{r:?}"
        );
        assert_eq!(r.role, role);
        ids.push(r.message_id.clone().expect("its own copy's SES message id"));
    }
    assert_ne!(ids[0], ids[1], "a copy each");
    let gone = of("Gone@Example.com");
    assert_eq!(gone.status, RecipientStatus::Suppressed);
    assert_eq!(gone.message_id, None);
    assert!(gone.detail.as_deref().is_some_and(|d| d.contains("bounce")));
    let sent = s.emails(&execution_id).await.expect("moto state");
    assert_eq!(sent.len(), 2, "a copy each for the two left");
    for e in &sent {
        assert!(
            e.destinations
                .iter()
                .all(|d| !d.eq_ignore_ascii_case("gone@example.com")),
            "not in the envelope or the headers: {:?}",
            e.destinations
        );
    }

    // Every recipient suppressed: failed at once, nothing sent.
    for address in ["keep@example.com", "cc@example.com"] {
        store
            .suppress(&suppression(
                "supp",
                address,
                SuppressionReason::Unsubscribe,
            ))
            .await
            .expect("stored");
    }
    let (execution_id, attempts) = run_sample(&s, "rpt-supp", 1).await;
    let a = &attempts[0];
    assert_eq!(a.status, AttemptStatus::Failed);
    let e = a.last_error.as_ref().expect("error");
    assert_eq!(
        (e.code.as_str(), e.category),
        ("all_recipients_suppressed", ErrorCategory::Permanent)
    );
    assert_eq!(a.tries, 0, "no send was tried");
    assert_eq!(a.recipients.len(), 3);
    assert!(
        a.recipients
            .iter()
            .all(|r| r.status == RecipientStatus::Suppressed)
    );
    assert!(
        s.emails(&execution_id)
            .await
            .expect("moto state")
            .is_empty()
    );

    // Lifting one brings it back; an unsubscribe's undo never lifts a bounce.
    assert!(
        !store
            .unsuppress(
                "supp",
                "gone@example.com",
                Some(SuppressionReason::Unsubscribe)
            )
            .await
            .expect("answered")
    );
    assert!(
        store
            .unsuppress("supp", "keep@example.com", None)
            .await
            .expect("answered")
    );
    let left = store.suppressed("supp").await.expect("listed");
    let mut addresses: Vec<_> = left.iter().map(|s| s.address.as_str()).collect();
    addresses.sort();
    assert_eq!(addresses, ["cc@example.com", "gone@example.com"]);
    s.down().await;
}

#[tokio::test]
async fn soft_bounces_suppress_only_after_a_run_and_each_message_counts_once() {
    let s = running_stack("soft-bounces", &[]).await;
    let store = shared::store::dynamo::DynamoStore::new(s.sdk_dynamo(), s.store_tables());
    let sup = suppression("t", "full@example.com", SuppressionReason::TransientBounces);
    assert!(
        !store
            .count_soft_bounce(&sup, "m1", 3)
            .await
            .expect("counted")
    );
    assert!(
        !store
            .count_soft_bounce(&sup, "m1", 3)
            .await
            .expect("a copy")
    );
    assert!(
        !store
            .count_soft_bounce(&sup, "m2", 3)
            .await
            .expect("counted")
    );
    // A delivery breaks the run.
    store
        .reset_soft_bounces("t", "full@example.com")
        .await
        .expect("reset");
    assert!(
        !store
            .count_soft_bounce(&sup, "m3", 3)
            .await
            .expect("counted")
    );
    assert!(
        !store
            .count_soft_bounce(&sup, "m4", 3)
            .await
            .expect("counted")
    );
    assert!(store.suppressed("t").await.expect("listed").is_empty());
    assert!(
        store
            .count_soft_bounce(&sup, "m5", 3)
            .await
            .expect("third in a row")
    );
    let listed = store.suppressed("t").await.expect("listed");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].reason, SuppressionReason::TransientBounces);
    // A suppression outlives a later delivery's reset.
    store
        .reset_soft_bounces("t", "full@example.com")
        .await
        .expect("reset");
    assert_eq!(store.suppressed("t").await.expect("listed").len(), 1);
    s.down().await;
}

#[tokio::test]
async fn operators_list_add_and_lift_suppressions_through_the_api_with_an_audit_line() {
    use crate::api::Api;
    use serde_json::json;
    let s = running_stack("suppression-api", &[]).await;
    seed_target(
        &s,
        "rpt-sapi",
        "sapi",
        "email",
        json!({"to": ["Ann@Example.com", "bob@example.com"]}),
        None,
        &["pdf"],
    )
    .await;
    let (admin, reader) = (Api::of(&s), Api::read_only(&s));
    let path = "/targets/sapi/suppressions";
    let (status, _, page) = reader.call("GET", path, None, &[]).await;
    assert_eq!((status, &page["suppressions"]), (200, &json!([])), "{page}");

    // Added (201), then again (200, the first kept), in any case.
    let one = format!("{path}/Ann%40Example.com");
    let (status, _, body) = admin
        .call("PUT", &one, Some(json!({"note": "asked by phone"})), &[])
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        (&body["address"], &body["reason"], &body["detail"]),
        (
            &json!("ann@example.com"),
            &json!("manual"),
            &json!("asked by phone")
        )
    );
    assert!(
        body["by"].as_str().is_some_and(|b| !b.is_empty()),
        "the operator is recorded: {body}"
    );
    let (status, _, again) = admin
        .call("PUT", &format!("{path}/ann%40example.com"), None, &[])
        .await;
    assert_eq!((status, &again["detail"]), (200, &json!("asked by phone")));
    let (status, _, refused) = reader
        .call("PUT", &format!("{path}/c%40example.com"), None, &[])
        .await;
    assert_eq!((status, &refused["code"]), (403, &json!("read_only")));
    for (bad, code) in [
        ("not-an-address", "invalid_address"),
        ("a%20b%40example.com", "invalid_address"),
    ] {
        let (status, _, p) = admin.call("PUT", &format!("{path}/{bad}"), None, &[]).await;
        assert_eq!((status, &p["code"]), (400, &json!(code)), "{bad}");
    }

    // The next send skips it.
    let (_, attempts) = run_sample(&s, "rpt-sapi", 1).await;
    let ann = attempts[0]
        .recipients
        .iter()
        .find(|r| r.address.eq_ignore_ascii_case("ann@example.com"))
        .expect("recorded");
    assert_eq!(ann.status, RecipientStatus::Suppressed);

    // Listed; lifted (re-subscribed: 204, then 404); the next send mails it.
    let (_, _, page) = reader.call("GET", path, None, &[]).await;
    assert_eq!(
        page["suppressions"].as_array().map(Vec::len),
        Some(1),
        "{page}"
    );
    let (status, _, _) = admin.call("DELETE", &one, None, &[]).await;
    assert_eq!(status, 204);
    let (status, _, p) = admin.call("DELETE", &one, None, &[]).await;
    assert_eq!((status, &p["code"]), (404, &json!("not_found")));
    let (_, attempts) = run_sample(&s, "rpt-sapi", 1).await;
    assert!(
        attempts[0]
            .recipients
            .iter()
            .all(|r| r.status != RecipientStatus::Suppressed)
    );

    // Only email targets have suppressions; each change left an audit line.
    s.seed(&report_delivery_tests::webhook_targets(
        "rpt-sapi-hook",
        &[("sapi-hook", "/hooks/x", true, true)],
    ))
    .await
    .expect("seeded");
    let (status, _, p) = reader
        .call("GET", "/targets/sapi-hook/suppressions", None, &[])
        .await;
    assert_eq!((status, &p["code"]), (409, &json!("not_an_email_target")));
    let log = std::fs::read_to_string(s.work_dir.join("logs/api.log")).unwrap_or_default();
    for line in ["suppression added", "suppression lifted"] {
        assert!(
            log.lines()
                .any(|l| l.contains(line) && l.contains("ann@example.com") && l.contains("sapi")),
            "no audit line {line:?}"
        );
    }
    s.down().await;
}
