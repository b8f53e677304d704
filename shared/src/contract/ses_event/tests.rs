//! Every example record of the SES documentation (stored in
//! `tests/fixtures/ses-events/`, sources in its README), in and out of its
//! SNS envelope, and hostile records.

use super::*;

macro_rules! fixture {
    ($name:literal) => {
        include_str!(concat!(
            "../../../../tests/fixtures/ses-events/",
            $name,
            ".json"
        ))
    };
}

const DOC_SET: Expect<'static> = Expect {
    topic_arn: None,
    configuration_set: Some("ConfigSet"),
};

fn wrap(record: &str, topic: &str) -> String {
    let mut envelope: serde_json::Value =
        serde_json::from_str(fixture!("sns-envelope")).expect("envelope");
    envelope["Message"] = record.into();
    envelope["TopicArn"] = topic.into();
    envelope.to_string()
}

#[test]
fn each_documented_event_parses_into_news_of_its_recipients() {
    use RecipientStatus::*;
    let cases: [(&str, EventKind, Option<RecipientStatus>); 10] = [
        (fixture!("bounce"), EventKind::Bounce, Some(Bounced)),
        (
            fixture!("complaint"),
            EventKind::Complaint,
            Some(Complained),
        ),
        (fixture!("delivery"), EventKind::Delivery, Some(Delivered)),
        (fixture!("send"), EventKind::Send, Some(Sent)),
        (fixture!("reject"), EventKind::Reject, Some(Rejected)),
        (
            fixture!("delivery-delay"),
            EventKind::DeliveryDelay,
            Some(Delayed),
        ),
        (fixture!("open"), EventKind::Other, None),
        (fixture!("click"), EventKind::Other, None),
        (fixture!("rendering-failure"), EventKind::Other, None),
        (fixture!("subscription"), EventKind::Other, None),
    ];
    for (record, kind, status) in cases {
        let e = parse_record(record, &DOC_SET).unwrap_or_else(|r| panic!("{r}: {record}"));
        assert_eq!(e.kind, kind);
        assert!(e.message_id.starts_with("EXAMPLE"), "{}", e.message_id);
        assert_eq!(e.news.first().map(|n| n.status), status, "{kind:?}");
        assert!(e.news.iter().all(|n| n.message_id == e.message_id));
    }
    let bounce = parse_record(fixture!("bounce"), &DOC_SET).expect("bounce");
    let n = &bounce.news[0];
    assert_eq!(n.address, "recipient@example.com");
    assert_eq!(n.bounce, Some(BounceType::Permanent));
    assert_eq!(
        n.at,
        Timestamp::parse("2017-08-05T00:41:02.669Z").expect("t")
    );
    assert!(
        n.detail
            .as_deref()
            .is_some_and(|d| d.contains("5.1.1") && d.contains("General")),
        "{n:?}"
    );
}

#[test]
fn a_record_in_its_sns_envelope_from_the_stacks_topic_parses_and_another_topics_is_refused() {
    let topic = "arn:aws:sns:us-east-1:123456789012:rd-feedback";
    let body = wrap(fixture!("complaint"), topic);
    let expect = Expect {
        topic_arn: Some(topic),
        configuration_set: Some("ConfigSet"),
    };
    let e = parse(&body, &expect).expect("parses");
    assert_eq!(e.kind, EventKind::Complaint);
    let other = wrap(
        fixture!("complaint"),
        "arn:aws:sns:us-east-1:999999999999:theirs",
    );
    assert_eq!(
        parse(&other, &expect).map_err(|r| r.code),
        Err("foreign_topic")
    );
}

#[test]
fn our_tags_name_the_attempt_and_the_target() {
    let mut r: serde_json::Value = serde_json::from_str(fixture!("bounce")).expect("json");
    r["mail"]["tags"][TAG_ATTEMPT] = serde_json::json!(["att_0123"]);
    r["mail"]["tags"][TAG_TARGET] = serde_json::json!(["tgt-ops"]);
    let e = parse_record(&r.to_string(), &DOC_SET).expect("parses");
    assert_eq!(e.attempt_id.as_deref(), Some("att_0123"));
    assert_eq!(e.target_id.as_deref(), Some("tgt-ops"));
}

#[test]
fn a_bounce_off_the_accounts_suppression_list_is_a_suppression() {
    let mut r: serde_json::Value = serde_json::from_str(fixture!("bounce")).expect("json");
    r["bounce"]["bounceSubType"] = "OnAccountSuppressionList".into();
    let e = parse_record(&r.to_string(), &DOC_SET).expect("parses");
    assert_eq!(e.news[0].status, RecipientStatus::Suppressed);
    assert!(
        e.news[0]
            .detail
            .as_deref()
            .is_some_and(|d| d.starts_with("ses_account_suppression_list"))
    );
}

#[test]
fn hostile_records_are_refused_with_a_code() {
    let edit = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut r: serde_json::Value = serde_json::from_str(fixture!("bounce")).expect("json");
        f(&mut r);
        r.to_string()
    };
    let many: Vec<_> = (0..51)
        .map(|i| serde_json::json!({"emailAddress": format!("r{i}@example.com")}))
        .collect();
    let cases: Vec<(String, &str)> = vec![
        ("{not json".into(), "malformed_event"),
        ("[]".into(), "malformed_event"),
        (
            edit(&|r| r["mail"]["tags"][TAG_CONFIGURATION_SET] = serde_json::json!(["TheirSet"])),
            "foreign_configuration_set",
        ),
        (
            edit(&|r| {
                r["mail"]["tags"]
                    .as_object_mut()
                    .map(|t| t.remove(TAG_CONFIGURATION_SET));
            }),
            "foreign_configuration_set",
        ),
        (
            edit(&|r| r["mail"]["messageId"] = "".into()),
            "invalid_message_id",
        ),
        (
            edit(&|r| r["mail"]["messageId"] = "a b\n".into()),
            "invalid_message_id",
        ),
        (
            edit(&|r| r["mail"]["tags"][TAG_ATTEMPT] = serde_json::json!(["a", "b"])),
            "invalid_tag",
        ),
        (
            edit(&|r| r["eventType"] = "Teleport".into()),
            "unknown_event_type",
        ),
        (
            edit(&|r| r["bounce"]["bounceType"] = "Soft".into()),
            "malformed_event",
        ),
        (
            edit(&|r| r["bounce"]["bouncedRecipients"] = serde_json::json!([])),
            "malformed_event",
        ),
        (
            edit(&|r| r["bounce"]["bouncedRecipients"] = serde_json::json!(many)),
            "malformed_event",
        ),
        (
            edit(&|r| {
                r["bounce"]["bouncedRecipients"][0]["emailAddress"] = "no address\r\n".into()
            }),
            "malformed_event",
        ),
        (
            edit(&|r| r["bounce"]["timestamp"] = "yesterday".into()),
            "malformed_event",
        ),
        (
            edit(&|r| {
                r.as_object_mut().map(|o| o.remove("bounce"));
            }),
            "malformed_event",
        ),
    ];
    for (record, code) in cases {
        assert_eq!(
            parse_record(&record, &DOC_SET).map_err(|r| r.code),
            Err(code),
            "{record}"
        );
    }
    let huge = wrap(&"x".repeat(MAX_EVENT_BYTES), "t");
    assert_eq!(
        parse(&huge, &Expect::default()).map_err(|r| r.code),
        Err("event_too_large")
    );
    assert_eq!(
        parse(
            "{\"Type\":\"SubscriptionConfirmation\",\"Message\":\"{}\"}",
            &Expect::default()
        )
        .map_err(|r| r.code),
        Err("not_a_notification")
    );
    assert_eq!(
        parse("nope", &Expect::default()).map_err(|r| r.code),
        Err("malformed_envelope")
    );
}

#[test]
fn each_documented_event_applies_to_the_attempt_that_sent_it_and_a_delivery_never_undoes_a_bounce()
{
    use crate::domain::recipient::{RecipientOutcome, Role};
    use crate::domain::transition::{Refusal, Transition};
    use crate::domain::{AttemptStatus, DeliveryAttempt, TargetType};
    let records = [
        fixture!("bounce"),
        fixture!("complaint"),
        fixture!("delivery"),
        fixture!("send"),
        fixture!("reject"),
        fixture!("delivery-delay"),
    ];
    for record in records {
        let e = parse_record(record, &DOC_SET).expect("parses");
        let mut a = DeliveryAttempt::queued("e", "r", "t", TargetType::Email, Timestamp::now());
        a.status = AttemptStatus::Delivered;
        a.recipients = e
            .news
            .iter()
            .map(|n| RecipientOutcome {
                address: n.address.clone(),
                role: Role::To,
                status: RecipientStatus::Sent,
                message_id: Some(e.message_id.clone()),
                bounce: None,
                detail: None,
                at: Timestamp::now(),
            })
            .collect();
        for n in &e.news {
            let t = Transition::Feedback(n.clone());
            if n.status == RecipientStatus::Sent {
                assert_eq!(
                    t.decide(&a),
                    Err(Refusal::AlreadyKnown),
                    "a Send adds nothing"
                );
                continue;
            }
            let next = t
                .decide(&a)
                .unwrap_or_else(|r| panic!("{:?}: {r:?}", e.kind));
            let r = next
                .recipients
                .iter()
                .find(|r| r.address == n.address)
                .expect("recipient");
            assert_eq!(r.status, n.status, "{:?}", e.kind);
            assert_eq!(
                (next.status, next.version),
                (AttemptStatus::Delivered, a.version + 1),
                "the send's outcome stays"
            );
            a = next;
        }
    }
    // The bounce fixture's recipient, then a Delivery of that message to
    // them (out of order): the bounce stays.
    let bounce = parse_record(fixture!("bounce"), &DOC_SET).expect("bounce");
    let n = &bounce.news[0];
    let mut a = DeliveryAttempt::queued("e", "r", "t", TargetType::Email, Timestamp::now());
    a.recipients = vec![RecipientOutcome {
        address: n.address.clone(),
        role: Role::To,
        status: RecipientStatus::Sent,
        message_id: Some(n.message_id.clone()),
        bounce: None,
        detail: None,
        at: Timestamp::now(),
    }];
    let a = Transition::Feedback(n.clone()).decide(&a).expect("bounced");
    let late = Feedback {
        status: RecipientStatus::Delivered,
        bounce: None,
        ..n.clone()
    };
    assert_eq!(
        Transition::Feedback(late).decide(&a),
        Err(Refusal::AlreadyKnown)
    );
    assert_eq!(
        Transition::Feedback(n.clone()).decide(&a),
        Err(Refusal::AlreadyKnown),
        "a copy changes nothing"
    );
}
