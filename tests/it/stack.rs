//! The local stack matches `template.yaml`: what moto holds after
//! provisioning is read back and compared with the template's attributes.

use aws_sdk_sqs::types::QueueAttributeName;
use report_delivery_tests::stack;

#[tokio::test]
async fn provisioned_queues_and_tables_have_the_template_attributes() {
    let s = stack("stack-fidelity").await;
    let sqs = &s.sqs;
    // Queues: visibility timeout and redrive policy as in the template
    let expected = [
        (
            "ExecutionsQueue",
            "180",
            Some(("ExecutionsDeadLetterQueue", 10)),
        ),
        ("FanoutQueue", "540", Some(("FanoutDeadLetterQueue", 10))),
        (
            "EmailDeliveryQueue",
            "360",
            Some(("DeliveryDeadLetterQueue", 30)),
        ),
        (
            "SlackDeliveryQueue",
            "360",
            Some(("DeliveryDeadLetterQueue", 30)),
        ),
        (
            "WebhookDeliveryQueue",
            "360",
            Some(("DeliveryDeadLetterQueue", 30)),
        ),
        ("DeliveryDeadLetterQueue", "30", None),
    ];
    for (queue, visibility, redrive) in expected {
        let attrs = sqs
            .get_queue_attributes()
            .queue_url(s.stack.queue_url(queue).expect("queue"))
            .attribute_names(QueueAttributeName::All)
            .send()
            .await
            .expect("attributes")
            .attributes
            .unwrap_or_default();
        assert_eq!(
            attrs
                .get(&QueueAttributeName::VisibilityTimeout)
                .map(String::as_str),
            Some(visibility),
            "{queue} visibility"
        );
        let policy = attrs
            .get(&QueueAttributeName::RedrivePolicy)
            .map(|p| serde_json::from_str::<serde_json::Value>(p).expect("policy JSON"));
        match (redrive, policy) {
            (Some((dlq, max)), Some(p)) => {
                assert_eq!(
                    p["deadLetterTargetArn"],
                    s.stack.queues[dlq].arn.as_str(),
                    "{queue} DLQ"
                );
                assert_eq!(
                    p["maxReceiveCount"].as_u64(),
                    Some(max),
                    "{queue} maxReceiveCount"
                );
            }
            (None, None) => {}
            (want, got) => panic!("{queue}: redrive {want:?} vs {got:?}"),
        }
    }
    // Tables: keys and GSIs as in the template
    let ddb = s.sdk_dynamo();
    let table = ddb
        .describe_table()
        .table_name(s.stack.table("AttemptsTable").expect("table"))
        .send()
        .await
        .expect("describe")
        .table
        .expect("table");
    let mut gsis: Vec<(String, Vec<String>)> = table
        .global_secondary_indexes()
        .iter()
        .map(|g| {
            (
                g.index_name().unwrap_or_default().to_owned(),
                g.key_schema()
                    .iter()
                    .map(|k| k.attribute_name().to_owned())
                    .collect(),
            )
        })
        .collect();
    gsis.sort();
    assert_eq!(
        gsis,
        [
            (
                "by_execution".to_owned(),
                vec![
                    "report_execution_id".to_owned(),
                    "delivery_target_id".to_owned()
                ]
            ),
            (
                "by_target".to_owned(),
                vec!["delivery_target_id".to_owned(), "created_at".to_owned()]
            ),
            (
                "open".to_owned(),
                vec!["open_shard".to_owned(), "report_execution_id".to_owned()]
            ),
        ]
    );
    // And the sparse open index carries created_at, for the reconciler's
    // filter
    let open = table
        .global_secondary_indexes()
        .iter()
        .find(|g| g.index_name() == Some("open"))
        .and_then(|g| g.projection())
        .map(|p| p.non_key_attributes().to_vec());
    assert_eq!(open, Some(vec!["created_at".to_owned()]));
}

/// The timing rules deliver relies on, read from `template.yaml` itself:
/// a lease (deadline + margin) always ends before its message's visibility
/// timeout, and the redrive safety net sits well above the retry schedule.
#[test]
fn the_template_keeps_leases_inside_visibility_and_the_safety_net_above_the_schedule() {
    let template =
        local::template::Template::load(&local::stack::project_root().join("template.yaml"))
            .expect("template");
    let deliver = template
        .functions()
        .expect("functions")
        .into_iter()
        .find(|f| f.binary == "deliver")
        .expect("deliver");
    let margin: u64 = match deliver.env.get("LEASE_MARGIN_SECONDS") {
        Some(serde_norway::Value::String(s)) => s.parse().expect("seconds"),
        other => panic!("LEASE_MARGIN_SECONDS is {other:?}"),
    };
    for source in &deliver.sources {
        let visibility = template
            .number(&source.queue, "VisibilityTimeout")
            .expect("visibility");
        assert!(
            visibility > deliver.timeout_secs + margin,
            "{}: visibility {visibility} must exceed timeout {} + lease margin {margin}",
            source.queue,
            deliver.timeout_secs
        );
    }
    let schedule =
        shared::domain::RetryPolicy::parse_schedule(&template.parameters["RetryScheduleSeconds"])
            .expect("schedule");
    let policy = shared::domain::RetryPolicy {
        schedule,
        ..Default::default()
    };
    let max: u32 = template.parameters["DeliveryMaxReceiveCount"]
        .parse()
        .expect("number");
    policy
        .check_max_receive_count(max)
        .expect("the default safety net fits the default schedule");
    let fast = (
        report_delivery_tests::FAST_DELIVER_TIMEOUT_SECS,
        report_delivery_tests::FAST_VISIBILITY_SECS,
    );
    assert!(
        fast.1 > fast.0 + 2,
        "the fast test stack keeps the same rule"
    );
}

#[test]
fn the_operator_tables_are_protected_from_deletion() {
    let t = local::template::Template::load(&local::stack::project_root().join("template.yaml"))
        .expect("template");
    for table in ["TargetsTable", "ConnectionsTable"] {
        let r = &t.resources[table];
        assert_eq!(
            r.properties
                .get("DeletionProtectionEnabled")
                .and_then(|v| v.as_bool()),
            Some(true),
            "{table}: DeletionProtectionEnabled"
        );
    }
}
