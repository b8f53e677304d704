//! SES feedback end to end through the real parts: deliver sends through
//! the local SES mailbox simulator (in front of moto), which publishes
//! SES's events in their SNS envelope to the feedback queue; the runner
//! invokes the feedback function with them. Bounces, complaints and the
//! account's suppression list reach the record, the target's suppressions,
//! the outcome events and the metrics; the next execution skips the
//! suppressed; copies and reordered events change nothing more; hostile
//! records are refused with a code and change nothing.

use crate::monitoring::{emitted, sum};
use crate::outcomes::{assert_schema_valid, read_outcomes};
use local::stack::LocalStack;
use report_delivery_tests::{run_sample, running_stack, seed_target};
use serde_json::{Value, json};
use shared::domain::recipient::{BounceType, Feedback, RecipientStatus};
use shared::domain::suppression::SuppressionReason;
use shared::domain::transition::Transition;
use shared::domain::{AttemptStatus, DeliveryAttempt, Timestamp};
use shared::metrics::Metric;
use shared::store::{AttemptStore, SuppressionStore};
use std::time::{Duration, Instant};

const SUCCESS: &str = "success@simulator.amazonses.com";
const BOUNCE: &str = "bounce@simulator.amazonses.com";
const COMPLAINT: &str = "complaint@simulator.amazonses.com";
const LISTED: &str = "suppressionlist@simulator.amazonses.com";

fn store(s: &LocalStack) -> shared::store::dynamo::DynamoStore {
    shared::store::dynamo::DynamoStore::new(s.sdk_dynamo(), s.store_tables())
}

/// Waits until the attempt's recipients satisfy `done`.
async fn settled_news(
    s: &LocalStack,
    id: &str,
    done: impl Fn(&DeliveryAttempt) -> bool,
) -> DeliveryAttempt {
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let a = store(s).get(id).await.expect("read").expect("recorded");
        if done(&a) {
            return a;
        }
        assert!(
            Instant::now() < until,
            "the news never reached the record: {:?}",
            a.recipients
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

fn status_of(a: &DeliveryAttempt, address: &str) -> RecipientStatus {
    a.recipients
        .iter()
        .find(|r| r.address.eq_ignore_ascii_case(address))
        .unwrap_or_else(|| panic!("{address} is not a recipient: {:?}", a.recipients))
        .status
}

#[tokio::test]
async fn bounces_and_complaints_reach_the_record_the_suppressions_and_the_outcome_events() {
    let s = running_stack("feedback", &[("HEALTH_MIN_RECIPIENTS", "1")]).await;
    s.ses.duplicate(true);
    s.ses.reverse(true);
    seed_target(
        &s,
        "rpt-fb",
        "fb",
        "email",
        json!({"to": [SUCCESS, BOUNCE], "cc": [COMPLAINT], "bcc": [LISTED]}),
        None,
        &["pdf"],
    )
    .await;
    let (_, attempts) = run_sample(&s, "rpt-fb", 1).await;
    let first = &attempts[0];
    assert_eq!(first.status, AttemptStatus::Delivered);
    // Every event came twice and last first (the Delivery after the
    // Bounce and the Complaint), in batches run side by side: the
    // strongest news stays. (Waits for the end state: a Delivery may land
    // before the Complaint it was sent ahead of.)
    let ends = [
        (SUCCESS, RecipientStatus::Delivered),
        (BOUNCE, RecipientStatus::Bounced),
        (COMPLAINT, RecipientStatus::Complained),
        (LISTED, RecipientStatus::Suppressed),
    ];
    let a = settled_news(&s, &first.id, |a| {
        ends.iter().all(|(who, end)| status_of(a, who) == *end)
    })
    .await;
    let bounced = a
        .recipients
        .iter()
        .find(|r| r.address == BOUNCE)
        .expect("bounce");
    assert_eq!(bounced.bounce, Some(BounceType::Permanent));
    assert!(
        bounced
            .detail
            .as_deref()
            .is_some_and(|d| d.contains("5.1.1"))
    );
    let listed = a
        .recipients
        .iter()
        .find(|r| r.address == LISTED)
        .expect("listed");
    assert!(
        listed
            .detail
            .as_deref()
            .is_some_and(|d| d.contains("suppression list")),
        "{listed:?}"
    );
    assert_eq!(
        a.status,
        AttemptStatus::Delivered,
        "the send stays delivered"
    );
    assert!(a.version > first.version);

    // The hard bounce and the complaint suppress those addresses for the
    // target; the account's own list is SES's to keep.
    let mut suppressed: Vec<(String, SuppressionReason)> = store(&s)
        .suppressed("fb")
        .await
        .expect("listed")
        .into_iter()
        .map(|x| (x.address, x.reason))
        .collect();
    suppressed.sort_by(|x, y| x.0.cmp(&y.0));
    assert_eq!(
        suppressed,
        [
            (BOUNCE.to_owned(), SuppressionReason::Bounce),
            (COMPLAINT.to_owned(), SuppressionReason::Complaint)
        ]
    );

    // The target's statistics count where each recipient ended, whatever
    // order the news came in: a complaint proves a delivery, so the
    // Delivery that came after it (or before it) counts the same, and
    // twin copies count once. (Read once every copy is handled: the queue
    // empty, none in flight, so no count is still to come.)
    let counted = json!({"delivered": 2, "bounced": 1, "complained": 1});
    let until = Instant::now() + Duration::from_secs(30);
    let stats = loop {
        let handled = s.depth("FeedbackQueue").await.expect("depth") == 0;
        let (status, _, stats) = crate::api::Api::of(&s)
            .call("GET", "/stats?report_id=rpt-fb&target_id=fb", None, &[])
            .await;
        assert_eq!(status, 200, "{stats}");
        if (handled && stats["total"]["recipients"] == counted) || Instant::now() > until {
            break stats;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(stats["total"]["recipients"], counted, "{stats}");

    // One of four recipients bounced and one complained: /health says
    // degraded (it still delivers: 200), with both reasons.
    let (status, _, health) = crate::api::Api::of(&s)
        .call("GET", "/health", None, &[])
        .await;
    assert_eq!(
        (status, &health["status"]),
        (200, &json!("degraded")),
        "{health}"
    );
    let warnings = health["warnings"].to_string();
    assert!(
        warnings.contains("25.00% of the last 24 hours' 4 email recipients bounced")
            && warnings.contains("complained"),
        "{warnings}"
    );

    // One event per recipient and kind (copies carry the same event_id),
    // valid against the published schema.
    let events = read_outcomes(&s, 3, Duration::from_secs(10)).await;
    assert_schema_valid(&events);
    let news: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "delivery_bounced.v1" || e["type"] == "delivery_complained.v1")
        .collect();
    let mut ids: Vec<&str> = news.iter().filter_map(|e| e["event_id"].as_str()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(
        ids,
        [
            format!("{}:{BOUNCE}:bounced", a.id),
            format!("{}:{COMPLAINT}:complained", a.id)
        ]
    );
    let bounce_event = news
        .iter()
        .find(|e| e["type"] == "delivery_bounced.v1")
        .expect("bounced");
    assert_eq!(bounce_event["bounce_type"], "permanent");
    assert_eq!(bounce_event["suppressed"], true);
    assert_eq!(bounce_event["role"], "to");
    let complaint_event = news
        .iter()
        .find(|e| e["type"] == "delivery_complained.v1")
        .expect("complained");
    assert_eq!(complaint_event["role"], "cc");

    // The metrics count SES's news once per recipient and event received.
    let records = emitted(&s);
    assert!(sum(&records, Metric::EmailEvents, &[("Event", "bounce")]) >= 2.0);
    assert!(sum(&records, Metric::EmailEvents, &[("Event", "complaint")]) >= 1.0);
    assert!(sum(&records, Metric::EmailEvents, &[("Event", "send")]) >= 1.0);
    assert!(
        sum(
            &records,
            Metric::FeedbackIgnored,
            &[("Reason", "already_known")]
        ) >= 1.0
    );

    // The next execution skips the suppressed and sends to the rest.
    s.ses.duplicate(false);
    s.ses.reverse(false);
    let (execution_id, attempts) = run_sample(&s, "rpt-fb", 1).await;
    let next = &attempts[0];
    assert_eq!(next.status, AttemptStatus::Delivered);
    assert_eq!(status_of(next, BOUNCE), RecipientStatus::Suppressed);
    assert_eq!(status_of(next, COMPLAINT), RecipientStatus::Suppressed);
    assert!(matches!(
        status_of(next, SUCCESS),
        RecipientStatus::Sent | RecipientStatus::Delivered
    ));
    let sent = s.emails(&execution_id).await.expect("moto state");
    assert_eq!(sent.len(), 2, "a copy each for the two left");
    let mut to: Vec<&str> = sent
        .iter()
        .flat_map(|e| e.destinations.iter().map(String::as_str))
        .collect();
    to.sort();
    to.dedup();
    assert_eq!(to, [SUCCESS, LISTED]);
    s.down().await;
}

/// A record of the local stack's shape, as the simulator makes them.
fn record(s: &LocalStack, kind: &str, message_id: &str, attempt: &str, target: &str) -> Value {
    let set = s.configuration_set();
    json!({
        "eventType": kind,
        "mail": {
            "timestamp": "2026-12-05T10:00:00.000Z",
            "source": "reports@reports.example.com",
            "messageId": message_id,
            "destination": [SUCCESS],
            "tags": {"ses:configuration-set": [set], "rd_attempt": [attempt], "rd_target": [target]},
        },
        "bounce": {
            "bounceType": "Permanent",
            "bounceSubType": "General",
            "bouncedRecipients": [{"emailAddress": SUCCESS, "status": "5.1.1", "diagnosticCode": "smtp; 550"}],
            "timestamp": "2026-12-05T10:00:01.000Z",
        },
    })
}

#[tokio::test]
async fn hostile_feedback_is_refused_with_a_code_on_its_first_receive_and_changes_nothing() {
    let s = running_stack("feedback-hostile", &[]).await;
    seed_target(
        &s,
        "rpt-fbh",
        "fbh",
        "email",
        json!({"to": [SUCCESS]}),
        None,
        &["pdf"],
    )
    .await;
    let (_, attempts) = run_sample(&s, "rpt-fbh", 1).await;
    let a = settled_news(&s, &attempts[0].id, |a| {
        status_of(a, SUCCESS) == RecipientStatus::Delivered
    })
    .await;
    let message_id = a.recipients[0].message_id.clone().expect("message id");
    let topic = s.stack.lookup("FeedbackTopic", None).expect("topic");
    let envelope = |record: &Value| local::ses_sim::envelope(&topic, record);
    let mut foreign_set = record(&s, "Bounce", &message_id, &a.id, "fbh");
    foreign_set["mail"]["tags"]["ses:configuration-set"] = json!(["someone-elses"]);
    let cases: Vec<(&str, String)> = vec![
        ("malformed_envelope", "{not json".to_owned()),
        ("event_too_large", "x".repeat(70 * 1024)),
        (
            "invalid_message_id",
            envelope(&record(&s, "Bounce", "", &a.id, "fbh")),
        ),
        (
            "unknown_message_id",
            envelope(&record(&s, "Bounce", "forged-0001", &a.id, "fbh")),
        ),
        ("foreign_configuration_set", envelope(&foreign_set)),
        (
            "foreign_topic",
            local::ses_sim::envelope(
                "arn:aws:sns:us-east-1:123456789012:other",
                &record(&s, "Bounce", &message_id, &a.id, "fbh"),
            ),
        ),
        (
            "foreign_target",
            envelope(&record(&s, "Bounce", &message_id, &a.id, "another")),
        ),
    ];
    for (_, body) in &cases {
        s.send("FeedbackQueue", body).await.expect("sent");
    }
    let mut dead = Vec::new();
    let until = Instant::now() + Duration::from_secs(60);
    while dead.len() < cases.len() && Instant::now() < until {
        dead.extend(
            s.drain("FeedbackDeadLetterQueue", Duration::from_secs(5))
                .await
                .expect("drained"),
        );
    }
    let mut codes: Vec<&str> = dead
        .iter()
        .filter_map(|m| m.attributes.get("error_code").map(String::as_str))
        .collect();
    codes.sort();
    let mut expected: Vec<&str> = cases.iter().map(|(c, _)| *c).collect();
    expected.sort();
    assert_eq!(codes, expected, "each refused once, with its code");
    assert!(dead.iter().all(|m| {
        m.attributes
            .get("error_reason")
            .is_some_and(|r| !r.is_empty())
    }));
    let after = store(&s).get(&a.id).await.expect("read").expect("recorded");
    assert_eq!(after, a, "nothing changed");
    assert!(
        store(&s)
            .suppressed("fbh")
            .await
            .expect("listed")
            .is_empty()
    );

    // Late news of an attempt no longer recorded, and another sender's
    // untagged mail: counted and acknowledged.
    let mut untagged = record(&s, "Bounce", "m-other", "x", "y");
    untagged["mail"]["tags"] = json!({"ses:configuration-set": [s.configuration_set()]});
    s.send(
        "FeedbackQueue",
        &envelope(&record(&s, "Bounce", "m-late", "att-gone", "fbh")),
    )
    .await
    .expect("sent");
    s.send("FeedbackQueue", &envelope(&untagged))
        .await
        .expect("sent");
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let records = emitted(&s);
        let gone = sum(
            &records,
            Metric::FeedbackIgnored,
            &[("Reason", "unknown_attempt")],
        );
        let other = sum(&records, Metric::FeedbackIgnored, &[("Reason", "untagged")]);
        if gone >= 1.0 && other >= 1.0 {
            break;
        }
        assert!(Instant::now() < until, "late and untagged news not counted");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(s.depth("FeedbackQueue").await.expect("depth"), 0);
    assert!(
        s.drain("FeedbackDeadLetterQueue", Duration::from_secs(2))
            .await
            .expect("drained")
            .is_empty(),
        "acknowledged, not refused"
    );

    // Twin copies of one piece of news, written side by side from the same
    // read: exactly one write lands, so only one of them counts it.
    let seen = store(&s).get(&a.id).await.expect("read").expect("recorded");
    let news = Transition::Feedback(Feedback {
        message_id: message_id.clone(),
        address: SUCCESS.into(),
        status: RecipientStatus::Complained,
        bounce: None,
        detail: None,
        at: Timestamp::now(),
    });
    let twins = (0..8).map(|_| {
        let (st, seen, news) = (store(&s), seen.clone(), news.clone());
        tokio::spawn(async move { st.apply_once(&seen, &news).await.expect("written") })
    });
    let landed: Vec<DeliveryAttempt> = futures::future::join_all(twins)
        .await
        .into_iter()
        .filter_map(|t| t.expect("joined"))
        .collect();
    assert_eq!(landed.len(), 1, "one twin's write lands");
    let now = store(&s).get(&a.id).await.expect("read").expect("recorded");
    assert_eq!(now, landed[0]);
    assert_eq!(status_of(&now, SUCCESS), RecipientStatus::Complained);
    s.down().await;
}
