//! The DynamoDB store against moto: every legal and illegal status
//! transition, and each access pattern served by a key or GSI query.

use report_delivery_tests::stack;
use shared::domain::{
    AttemptError, AttemptStatus, DeliveryAttempt, ErrorCategory, TargetConfig, TargetType,
    Timestamp, Transition, TriesUpdate, TryNext, TryRecord,
};
use shared::domain::{DeliveryTarget, attempt::attempt_id};
use shared::store::{Applied, AttemptStore, Created, TargetStore};
use std::collections::BTreeMap;

fn webhook(id: &str, report: &str, active: bool) -> DeliveryTarget {
    let now = Timestamp::now();
    DeliveryTarget {
        id: id.into(),
        report_id: report.into(),
        service_connection_id: None,
        config: TargetConfig::from_json(
            "webhook",
            serde_json::json!({"url": "https://hooks.example.com/x"}),
            false,
        )
        .expect("valid"),
        formats: Vec::new(),
        preview_rows: None,
        active,
        disable_requested: None,
        consecutive_failures: 0,
        version: 0,
        created_at: now,
        updated_at: now,
    }
}

fn email(id: &str, report: &str) -> DeliveryTarget {
    DeliveryTarget {
        config: TargetConfig::from_json(
            "email",
            serde_json::json!({"to": ["ops@example.com"]}),
            false,
        )
        .expect("valid"),
        ..webhook(id, report, true)
    }
}

fn error(code: &str) -> AttemptError {
    AttemptError {
        category: ErrorCategory::Temporary,
        code: code.into(),
        message: "receiver answered 503".into(),
        at: Timestamp::now(),
    }
}

pub(crate) fn begin(a: &DeliveryAttempt, token: &str) -> Transition {
    begin_at(a, token, Timestamp::now())
}

fn begin_at(a: &DeliveryAttempt, token: &str, now: Timestamp) -> Transition {
    Transition::Begin {
        token: token.into(),
        now,
        lease_until: now.plus(time::Duration::minutes(5)),
        execution_id: a.report_execution_id.clone(),
        target_id: a.delivery_target_id.clone(),
        crash_limit: 12,
    }
}

fn one_try(n: u32, then: TryNext) -> TriesUpdate {
    TriesUpdate {
        tries: n,
        history: (1..=n)
            .map(|i| TryRecord {
                n: i,
                at: Timestamp::now(),
                ms: 5,
                code: (then != TryNext::Delivered).then(|| "http_503".to_owned()),
                then,
                delay_ms: None,
            })
            .collect(),
    }
}

pub(crate) fn deliver(token: &str) -> Transition {
    Transition::Deliver {
        token: token.into(),
        now: Timestamp::now(),
        metadata: BTreeMap::from([("http_status".to_owned(), "200".to_owned())]),
        tries: one_try(1, TryNext::Delivered),
        recipients: Vec::new(),
    }
}

pub(crate) fn fail(token: Option<&str>, code: &str, dead_letter: bool) -> Transition {
    Transition::Fail {
        token: token.map(str::to_owned),
        error: error(code),
        tries: None,
        dead_letter,
        recipients: Vec::new(),
    }
}

pub(crate) async fn queued(
    store: &dyn AttemptStore,
    execution: &str,
    target: &str,
) -> DeliveryAttempt {
    let a = DeliveryAttempt::queued(
        execution,
        "r1",
        target,
        TargetType::Webhook,
        Timestamp::now(),
    );
    match store.create(&a).await.expect("create") {
        Created::New(a) => a,
        Created::Existing(_) => panic!("attempt already existed"),
    }
}

pub(crate) fn status(applied: &Applied) -> Option<AttemptStatus> {
    match applied {
        Applied::Yes(a) => Some(a.status),
        Applied::Refused(_) => None,
    }
}

#[tokio::test]
async fn an_attempt_goes_queued_processing_delivered_and_stays_delivered() {
    // Given a queued attempt
    let s = stack("storage-happy").await;
    let a = queued(&s.store, "e1", "t1").await;
    // When it is begun and delivered by the lease holder
    let begun = s
        .store
        .apply(&a.id, &begin(&a, "tok"))
        .await
        .expect("begin");
    assert_eq!(status(&begun), Some(AttemptStatus::Processing));
    let done = s
        .store
        .apply(&a.id, &deliver("tok"))
        .await
        .expect("deliver");
    // Then it is delivered with its metadata and timings
    let Applied::Yes(done) = done else {
        panic!("deliver refused")
    };
    assert_eq!(done.status, AttemptStatus::Delivered);
    assert_eq!(
        done.metadata.get("http_status").map(String::as_str),
        Some("200")
    );
    assert!(done.delivered_at.is_some() && done.lease_token.is_none());
    // And no transition can leave delivered
    assert_eq!((done.tries, done.history.len()), (1, 1));
    let fail_with = fail(Some("tok"), "x", false);
    let fail_without = fail(None, "x", false);
    let retry = Transition::ScheduleRetry {
        token: "tok".into(),
        error: error("x"),
        tries: one_try(2, TryNext::Backoff),
        next_try_at: Timestamp::now(),
    };
    for t in [
        begin(&a, "again"),
        deliver("tok"),
        retry,
        fail_with,
        fail_without,
    ] {
        let r = s.store.apply(&a.id, &t).await.expect("apply");
        let Applied::Refused(Some(current)) = r else {
            panic!("{t:?} must be refused")
        };
        assert_eq!(current.status, AttemptStatus::Delivered);
    }
}

#[tokio::test]
async fn a_live_lease_refuses_a_second_begin_and_a_stale_token() {
    let s = stack("storage-lease").await;
    let a = queued(&s.store, "e1", "t1").await;
    s.store
        .apply(&a.id, &begin(&a, "first"))
        .await
        .expect("begin");
    // A second worker cannot take a live lease
    let second = s
        .store
        .apply(&a.id, &begin(&a, "second"))
        .await
        .expect("apply");
    assert_eq!(status(&second), None);
    // A stale token cannot finish
    let stale = s
        .store
        .apply(&a.id, &deliver("second"))
        .await
        .expect("apply");
    assert_eq!(status(&stale), None);
    // An expired lease can be taken over (a crashed worker)
    let later = Timestamp::now().plus(time::Duration::minutes(10));
    let takeover = begin_at(&a, "third", later);
    let taken = s.store.apply(&a.id, &takeover).await.expect("apply");
    let Applied::Yes(taken) = taken else {
        panic!("expired lease not taken over")
    };
    assert_eq!(taken.lease_token.as_deref(), Some("third"));
}

#[tokio::test]
async fn retries_count_up_and_failures_record_their_reason() {
    let s = stack("storage-retry").await;
    let a = queued(&s.store, "e1", "t1").await;
    // Queued cannot be delivered or retried without a lease
    assert_eq!(
        status(&s.store.apply(&a.id, &deliver("tok")).await.expect("apply")),
        None
    );
    // processing → queued with retry_count + 1, twice
    for round in 1..=2 {
        s.store
            .apply(&a.id, &begin(&a, "tok"))
            .await
            .expect("begin");
        let r = s
            .store
            .apply(
                &a.id,
                &Transition::ScheduleRetry {
                    token: "tok".into(),
                    error: error("http_503"),
                    tries: one_try(round, TryNext::Backoff),
                    // Due at once, so the next begin may follow
                    next_try_at: Timestamp::now(),
                },
            )
            .await
            .expect("retry");
        let Applied::Yes(r) = r else {
            panic!("retry refused")
        };
        assert_eq!(
            (r.status, r.retry_count, r.tries, r.begins),
            (AttemptStatus::Queued, round, round, round)
        );
        assert_eq!(
            r.last_error.as_ref().map(|e| e.code.as_str()),
            Some("http_503")
        );
    }
    // processing → failed with the reason
    s.store
        .apply(&a.id, &begin(&a, "tok"))
        .await
        .expect("begin");
    let failed = s
        .store
        .apply(&a.id, &fail(Some("tok"), "retries_exhausted", true))
        .await
        .expect("fail");
    let Applied::Yes(failed) = failed else {
        panic!("fail refused")
    };
    assert_eq!(failed.status, AttemptStatus::Failed);
    assert!(failed.failed_at.is_some());
    assert!(failed.dead_letter_pending(), "a dead letter was asked for");
    // failed is terminal for deliver: a later copy cannot begin again
    assert_eq!(
        status(
            &s.store
                .apply(&a.id, &begin(&a, "again"))
                .await
                .expect("begin")
        ),
        None
    );
    // the dead letter is confirmed once
    let confirm = Transition::ConfirmDeadLetter {
        now: Timestamp::now(),
        episode: 0,
    };
    let confirmed = s.store.apply(&a.id, &confirm).await.expect("confirm");
    let Applied::Yes(confirmed) = confirmed else {
        panic!("confirm refused")
    };
    assert!(!confirmed.dead_letter_pending());
    assert!(confirmed.dead_letter.and_then(|d| d.sent_at).is_some());
    assert_eq!(
        status(&s.store.apply(&a.id, &confirm).await.expect("apply")),
        None
    );
    // queued → failed without a lease
    let b = queued(&s.store, "e1", "t2").await;
    let no_lease_fail = fail(None, "target_not_found", false);
    assert_eq!(
        status(&s.store.apply(&b.id, &no_lease_fail).await.expect("apply")),
        Some(AttemptStatus::Failed)
    );
    assert_eq!(
        status(&s.store.apply(&a.id, &no_lease_fail).await.expect("apply")),
        None,
        "not from failed"
    );
    // processing → failed without a lease only as a stopped crash loop,
    // once the lease has expired
    let c = queued(&s.store, "e1", "t3").await;
    s.store
        .apply(&c.id, &begin(&c, "live"))
        .await
        .expect("begin");
    assert_eq!(
        status(&s.store.apply(&c.id, &no_lease_fail).await.expect("apply")),
        None,
        "a live lease is respected"
    );
    let mut after_lease = error("crash_loop");
    after_lease.at = Timestamp::now().plus(time::Duration::minutes(10));
    let expired_fail = Transition::StopCrashLoop {
        error: after_lease,
        crash_limit: 1,
    };
    assert_eq!(
        status(&s.store.apply(&c.id, &expired_fail).await.expect("apply")),
        Some(AttemptStatus::Failed)
    );
    // A transition on a missing attempt is refused with nothing to show
    let missing = s
        .store
        .apply("att_missing", &begin(&b, "x"))
        .await
        .expect("apply");
    assert_eq!(missing, Applied::Refused(None));
}

#[tokio::test]
async fn creating_an_attempt_twice_returns_the_existing_one() {
    let s = stack("storage-create").await;
    let a = queued(&s.store, "e1", "t1").await;
    assert_eq!(a.id, attempt_id("e1", "t1"));
    s.store
        .apply(&a.id, &begin(&a, "tok"))
        .await
        .expect("begin");
    let again = DeliveryAttempt::queued("e1", "r1", "t1", TargetType::Webhook, Timestamp::now());
    let Created::Existing(existing) = s.store.create(&again).await.expect("create") else {
        panic!("second create must not overwrite");
    };
    assert_eq!(existing.status, AttemptStatus::Processing);
}

#[tokio::test]
async fn access_patterns_are_served_by_queries() {
    let s = stack("storage-queries").await;
    // Active targets of a report, optionally by type, paged
    for i in 0..5 {
        s.store
            .put_target(&webhook(&format!("w{i}"), "r1", true))
            .await
            .expect("put");
    }
    s.store
        .put_target(&webhook("w-off", "r1", false))
        .await
        .expect("put");
    s.store.put_target(&email("e0", "r1")).await.expect("put");
    s.store
        .put_target(&webhook("other", "r2", true))
        .await
        .expect("put");
    let mut ids = Vec::new();
    let mut cursor = None;
    let mut pages = 0;
    loop {
        let page = s
            .store
            .active_targets("r1", None, cursor, 2)
            .await
            .expect("query");
        ids.extend(page.items.into_iter().map(|t| t.id));
        pages += 1;
        cursor = page.next;
        if cursor.is_none() {
            break;
        }
    }
    ids.sort();
    assert_eq!(ids, ["e0", "w0", "w1", "w2", "w3", "w4"]);
    assert!(pages >= 3, "paged in {pages} pages");
    let emails = s
        .store
        .active_targets("r1", Some(TargetType::Email), None, 100)
        .await
        .expect("query");
    assert_eq!(
        emails
            .items
            .iter()
            .map(|t| t.id.as_str())
            .collect::<Vec<_>>(),
        ["e0"]
    );
    assert!(s.store.report_known("r1").await.expect("query"));
    assert!(!s.store.report_known("nobody").await.expect("query"));
    assert_eq!(
        s.store
            .get_target("w-off")
            .await
            .expect("get")
            .map(|t| t.active),
        Some(false)
    );

    // Attempts by status (oldest first), by target and status, by execution, by pair
    queued(&s.store, "e1", "w0").await;
    queued(&s.store, "e1", "w1").await;
    let third = queued(&s.store, "e2", "w0").await;
    s.store
        .apply(&third.id, &begin(&third, "tok"))
        .await
        .expect("begin");
    let of_w0 = s
        .store
        .by_target("w0", Some(AttemptStatus::Processing))
        .await
        .expect("query");
    assert_eq!(
        of_w0.iter().map(|a| a.id.as_str()).collect::<Vec<_>>(),
        [third.id.as_str()]
    );
    assert_eq!(s.store.by_target("w0", None).await.expect("query").len(), 2);
    assert_eq!(s.store.by_execution("e1").await.expect("query").len(), 2);
    let pair = s
        .store
        .get(&attempt_id("e2", "w0"))
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(pair.status, AttemptStatus::Processing);
}

#[tokio::test]
async fn an_invalid_stored_target_config_is_reported_not_panicked() {
    let s = stack("storage-invalid").await;
    s.sdk_dynamo()
        .put_item()
        .table_name(s.stack.table("TargetsTable").expect("table"))
        .item(
            "id",
            aws_sdk_dynamodb::types::AttributeValue::S("bad".into()),
        )
        .item(
            "report_id",
            aws_sdk_dynamodb::types::AttributeValue::S("r1".into()),
        )
        .item(
            "target_type",
            aws_sdk_dynamodb::types::AttributeValue::S("fax".into()),
        )
        .item(
            "config",
            aws_sdk_dynamodb::types::AttributeValue::M(Default::default()),
        )
        .item(
            "active",
            aws_sdk_dynamodb::types::AttributeValue::Bool(true),
        )
        .item(
            "active_type",
            aws_sdk_dynamodb::types::AttributeValue::S("active#fax".into()),
        )
        .item(
            "created_at",
            aws_sdk_dynamodb::types::AttributeValue::S("2026-01-01T00:00:00.000Z".into()),
        )
        .item(
            "updated_at",
            aws_sdk_dynamodb::types::AttributeValue::S("2026-01-01T00:00:00.000Z".into()),
        )
        .send()
        .await
        .expect("raw put");
    let err = s.store.get_target("bad").await.expect_err("invalid");
    assert!(!err.is_retryable());
    assert!(err.to_string().contains("fax"), "{err}");
}

#[tokio::test]
async fn connection_secrets_are_sealed_at_rest_and_open_only_with_the_key_under_their_own_id() {
    use aws_sdk_dynamodb::types::AttributeValue;
    use shared::domain::ServiceConnection;
    use shared::domain::connection::Credentials;
    use shared::store::ConnectionStore;
    let s = stack("storage-sealed").await;
    let table = s.stack.table("ConnectionsTable").expect("table").to_owned();
    let raw = |id: &str| {
        let (ddb, table, id) = (s.sdk_dynamo(), table.clone(), id.to_owned());
        async move {
            ddb.get_item()
                .table_name(table)
                .key("id", AttributeValue::S(id))
                .send()
                .await
                .expect("get")
                .item
                .expect("stored")
        }
    };
    let first = "whsec_Zmlyc3Qtc2VjcmV0LWJ5dGVzLTMyLWxvbmctLS0tLS0=";
    let second = "whsec_c2Vjb25kLXNlY3JldC1ieXRlcy0zMi1sb25nLS0tLS0=";
    let conn = ServiceConnection {
        id: "conn-sealed".into(),
        credentials: Credentials::WebhookSigning {
            secrets: vec![first.to_owned().into()],
        },
    };
    s.store.put_connection(&conn).await.expect("put");

    // At rest: no secret, a sealed blob and the count only
    let item = raw("conn-sealed").await;
    let first_write = item.clone();
    let text = format!("{item:?}");
    assert!(!text.contains("Zmlyc3Qtc2VjcmV0"), "{text}");
    assert!(item.contains_key("sealed"), "{text}");
    assert!(!item.contains_key("secrets"), "{text}");
    let read = s.store.get_connection("conn-sealed").await.expect("read");
    assert_eq!(read.expect("found").credentials.secrets(), vec![first]);

    // A rotation re-seals both the new and the retiring secret
    let now = Timestamp::now();
    assert!(
        s.store
            .rotate_connection(
                "conn-sealed",
                second,
                now.plus(time::Duration::hours(1)),
                now
            )
            .await
            .expect("rotate")
    );
    let text = format!("{:?}", raw("conn-sealed").await);
    assert!(!text.contains("Zmlyc3Qtc2VjcmV0") && !text.contains("c2Vjb25kLXNlY3JldC"));
    let read = s.store.get_connection("conn-sealed").await.expect("read");
    assert_eq!(
        read.expect("found").credentials.secrets(),
        vec![second, first]
    );
    let info = s.store.connection_info("conn-sealed").await.expect("info");
    assert_eq!(
        info.map(|i| (i.secrets, i.retiring_until.len())),
        Some((1, 1))
    );

    // Without the key the record does not open, and that is not retried
    let keyless = shared::store::dynamo::DynamoStore::new(s.sdk_dynamo(), s.store_tables());
    let e = keyless
        .get_connection("conn-sealed")
        .await
        .expect_err("no key");
    assert!(!e.is_retryable(), "{e}");
    // A sealed blob copied under another id does not open either
    let mut copy = raw("conn-sealed").await;
    copy.insert("id".into(), AttributeValue::S("conn-copy".into()));
    s.sdk_dynamo()
        .put_item()
        .table_name(&table)
        .set_item(Some(copy))
        .send()
        .await
        .expect("put copy");
    let e = s
        .store
        .get_connection("conn-copy")
        .await
        .expect_err("bound to its id");
    assert!(!e.is_retryable(), "{e}");
    let put = |item: std::collections::HashMap<String, AttributeValue>| {
        let (ddb, table) = (s.sdk_dynamo(), table.clone());
        async move {
            ddb.put_item()
                .table_name(table)
                .set_item(Some(item))
                .send()
                .await
                .expect("put")
        }
    };
    // Nor under another kind, nor the first write's seal in the current
    // record (a rollback to the secrets before the rotation)
    let mut rolled_back = raw("conn-sealed").await;
    rolled_back.insert("sealed".into(), first_write["sealed"].clone());
    put(rolled_back).await;
    let e = s
        .store
        .get_connection("conn-sealed")
        .await
        .expect_err("bound to its write version");
    assert!(!e.is_retryable(), "{e}");
    let mut relabelled = first_write.clone();
    relabelled.insert("kind".into(), AttributeValue::S("slack_bot".into()));
    put(relabelled).await;
    s.store
        .get_connection("conn-sealed")
        .await
        .expect_err("bound to its kind");
    // A record whose secrets are not sealed is refused while a key is configured
    let mut plain = first_write.clone();
    plain.remove("sealed");
    plain.insert("id".into(), AttributeValue::S("conn-plain".into()));
    plain.insert(
        "secrets".into(),
        AttributeValue::L(vec![AttributeValue::S(first.into())]),
    );
    put(plain).await;
    let e = s
        .store
        .get_connection("conn-plain")
        .await
        .expect_err("unsealed");
    assert!(e.to_string().contains("no sealed secret"), "{e}");
    assert!(!e.is_retryable(), "{e}");
}

#[tokio::test]
async fn attempts_and_executions_expire_by_ttl_after_the_retention() {
    use aws_sdk_dynamodb::types::{AttributeValue, TimeToLiveStatus};
    let s = stack("storage-ttl").await;
    for table in ["AttemptsTable", "ExecutionsTable"] {
        let ttl = s
            .sdk_dynamo()
            .describe_time_to_live()
            .table_name(s.stack.table(table).expect("table"))
            .send()
            .await
            .expect("describe")
            .time_to_live_description
            .expect("ttl");
        assert_eq!(ttl.attribute_name(), Some("expires_at"), "{table}");
        assert_eq!(ttl.time_to_live_status(), Some(&TimeToLiveStatus::Enabled));
    }
    let a = queued(&s.store, "exec-ttl", "tgt-ttl").await;
    let item = s
        .sdk_dynamo()
        .get_item()
        .table_name(s.stack.table("AttemptsTable").expect("table"))
        .key("id", AttributeValue::S(a.id.clone()))
        .send()
        .await
        .expect("get")
        .item
        .expect("stored");
    let expires: i64 = item["expires_at"]
        .as_n()
        .expect("number")
        .parse()
        .expect("int");
    let created = a.created_at.unix_millis() / 1000;
    assert_eq!(expires - created, 30 * 24 * 3600, "30 days by default");
}
