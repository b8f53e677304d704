//! The execution and open-work writes against moto: settled attempts
//! counted in one write per counter item, an execution incomplete from its
//! render until one claim records it, the sparse open index, conditional
//! writes that never both win, and an operator retry that reopens its
//! execution in the same write.

use crate::storage::{begin, deliver, fail, queued, status};
use report_delivery_tests::stack;
use shared::domain::{AttemptStatus, Timestamp, Transition};
use shared::store::AttemptStore;

#[tokio::test]
async fn a_batch_of_settled_attempts_is_counted_exactly_with_one_write_per_counter_item() {
    use shared::domain::stats::Settled;
    use shared::store::StatsStore;
    let s = stack("storage-stats-batch").await;
    let now = Timestamp::now();
    let settled = |attempt: &str, target: &str, delivered: bool, ms: u64| Settled {
        target_id: target.into(),
        report_id: "rpt-batch".into(),
        attempt_id: attempt.into(),
        at: now,
        delivered,
        tries: if delivered { 1 } else { 2 },
        retries: 0,
        delivery_ms: delivered.then_some(ms),
        error_code: (!delivered).then(|| "http_410".to_owned()),
        recipients_sent: 0,
    };
    let batch = [
        settled("att-1", "tgt-a", true, 120),
        settled("att-2", "tgt-a", false, 0),
        settled("att-3", "tgt-b", true, 900),
    ];
    s.store.record_all(&batch).await.expect("recorded");
    // And the same again one by one: the sums must match twice over
    for one in &batch {
        s.store.record(one).await.expect("recorded");
    }
    let day = |target: &str| {
        let store = &s.store;
        let target = target.to_owned();
        async move {
            let days = store.target_days(&target, now, now).await.expect("read");
            assert_eq!(days.len(), 1, "{days:?}");
            days[0].1.clone()
        }
    };
    let a = day("tgt-a").await;
    assert_eq!((a.attempted, a.delivered, a.failed, a.tries), (4, 2, 2, 6));
    assert_eq!(a.delivery_ms_sum, 240);
    assert_eq!(a.last_error_code.as_deref(), Some("http_410"));
    assert!(a.last_success_at.is_some());
    let b = day("tgt-b").await;
    assert_eq!((b.attempted, b.delivered, b.failed), (2, 2, 0));
    let report = s
        .store
        .report_days("rpt-batch", now, now)
        .await
        .expect("read");
    assert_eq!(report.len(), 1);
    assert_eq!((report[0].1.attempted, report[0].1.delivered), (6, 4));
    let service = s.store.service_hours(now, now).await.expect("read");
    assert_eq!(
        (service.attempted, service.delivered, service.failed),
        (6, 4, 2)
    );
    assert_eq!(
        service.latency.iter().sum::<u64>(),
        4,
        "{:?}",
        service.latency
    );
}

/// Ids in the unsettled-executions index, every shard.
async fn unsettled(store: &shared::store::dynamo::DynamoStore) -> Vec<String> {
    use shared::store::ExecutionStore;
    let later = Timestamp::now().plus(time::Duration::seconds(1));
    let mut ids = Vec::new();
    for shard in 0..shared::store::PENDING_SHARDS {
        let mut cursor = None;
        loop {
            let page = store
                .unsettled(shard, later, cursor, 1)
                .await
                .expect("query");
            ids.extend(page.items);
            match page.next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
    }
    ids.sort();
    ids
}

#[tokio::test]
async fn an_execution_is_incomplete_from_its_render_until_one_claim_records_it() {
    use shared::store::ExecutionStore;
    let s = stack("unsettled").await;
    // Given two rendered executions: both are incomplete from birth
    for e in ["ex-a", "ex-b", "ex-c"] {
        local::bench::record_rendered(&s.store, e, "rpt-u")
            .await
            .expect("render");
    }
    assert_eq!(unsettled(&s.store).await, ["ex-a", "ex-b", "ex-c"]);
    assert!(
        s.store.oldest_unsettled().await.expect("oldest").is_some(),
        "the health check sees them"
    );
    let now = Timestamp::now;
    let soon = || now().plus(time::Duration::minutes(2));
    let gone = || now().plus(time::Duration::minutes(-1));
    // When one is claimed before its fan-out finished, nothing changes
    assert!(
        !s.store
            .claim_outcome("ex-a", now(), soon(), 0)
            .await
            .expect("claim")
    );
    for e in ["ex-a", "ex-b"] {
        s.store
            .mark_fanned_out(e, 0, None, now())
            .await
            .expect("fanned out");
    }
    // And once fanned out one run claims its event; a second is refused
    // while the claim is live
    assert!(
        s.store
            .claim_outcome("ex-a", now(), soon(), 0)
            .await
            .expect("claim")
    );
    assert!(
        !s.store
            .claim_outcome("ex-a", now(), soon(), 0)
            .await
            .expect("claim")
    );
    assert_eq!(unsettled(&s.store).await, ["ex-a", "ex-b", "ex-c"]);
    // And recording it takes it out of the index, once per revision
    assert!(
        s.store
            .record_outcome("ex-a", now(), 0)
            .await
            .expect("record")
    );
    assert!(
        !s.store
            .record_outcome("ex-a", now(), 0)
            .await
            .expect("record")
    );
    assert!(
        !s.store
            .claim_outcome("ex-a", now(), soon(), 0)
            .await
            .expect("claim")
    );
    assert_eq!(unsettled(&s.store).await, ["ex-b", "ex-c"]);
    let recorded = s.store.get_execution("ex-a").await.expect("get");
    assert_eq!(recorded.and_then(|e| e.outcome_revision), Some(0));
    // And a fan-out copy after it does not put it back
    s.store
        .mark_fanned_out("ex-a", 0, None, now())
        .await
        .expect("fanned out again");
    assert_eq!(unsettled(&s.store).await, ["ex-b", "ex-c"]);
    // And a claim whose run died (it ran out) may be taken again
    assert!(
        s.store
            .claim_outcome("ex-b", gone(), gone(), 0)
            .await
            .expect("claim")
    );
    assert!(
        s.store
            .claim_outcome("ex-b", now(), soon(), 0)
            .await
            .expect("again")
    );
    // And nothing is claimed or recorded at a revision it is not at
    assert!(
        !s.store
            .claim_outcome("ex-b", now(), soon(), 1)
            .await
            .expect("claim")
    );
    assert!(
        !s.store
            .record_outcome("ex-b", now(), 1)
            .await
            .expect("record")
    );
    assert_eq!(unsettled(&s.store).await, ["ex-b", "ex-c"]);
    s.down().await;
}

#[tokio::test]
async fn an_attempt_is_in_the_open_index_from_its_creation_until_the_write_that_settles_it() {
    // Given an execution with two attempts
    let s = stack("storage-open").await;
    let a = queued(&s.store, "ex-o", "t1").await;
    let b = queued(&s.store, "ex-o", "t2").await;
    let later = Timestamp::now().plus(time::Duration::seconds(5));
    let open = |limit| s.store.open_of_execution("ex-o", limit);
    let mut ids = open(10).await.expect("open");
    ids.sort();
    let mut both = vec![a.id.clone(), b.id.clone()];
    both.sort();
    assert_eq!(ids, both);
    assert_eq!(open(1).await.expect("open").len(), 1, "a limit holds");
    let shard = |e: &str| {
        let key = shared::store::dynamo::pending_shard(e);
        key[1..].parse::<u8>().expect("shard number")
    };
    let page = s
        .store
        .open_page(shard("ex-o"), later, None, 100)
        .await
        .expect("page");
    assert_eq!(page.items.len(), 2, "the reconciler reads them back");
    let earlier = Timestamp::now().plus(time::Duration::minutes(-5));
    let young = s
        .store
        .open_page(shard("ex-o"), earlier, None, 100)
        .await
        .expect("page");
    assert!(young.items.is_empty(), "younger ones are left out");
    // When one is delivered, it leaves the index in that same write
    s.store
        .apply(&a.id, &begin(&a, "tok"))
        .await
        .expect("begin");
    assert_eq!(
        open(10).await.expect("open").len(),
        2,
        "a lease keeps it open"
    );
    s.store
        .apply(&a.id, &deliver("tok"))
        .await
        .expect("deliver");
    assert_eq!(open(10).await.expect("open"), std::slice::from_ref(&b.id));
    // And one that fails with its dead letter stays until the letter is
    // confirmed
    s.store
        .apply(&b.id, &begin(&b, "tok"))
        .await
        .expect("begin");
    s.store
        .apply(&b.id, &fail(Some("tok"), "retries_exhausted", true))
        .await
        .expect("fail");
    assert_eq!(open(10).await.expect("open"), std::slice::from_ref(&b.id));
    let confirm = Transition::ConfirmDeadLetter {
        now: Timestamp::now(),
        episode: 0,
    };
    s.store.apply(&b.id, &confirm).await.expect("confirm");
    assert!(open(10).await.expect("open").is_empty());
    // And an operator retry puts it back in the same write
    let action = shared::domain::attempt::OperatorAction {
        action: "retry".into(),
        by: "ops".into(),
        at: Timestamp::now(),
        force: false,
        rerendered: false,
    };
    let retry = Transition::OperatorRetry {
        actions: vec![action.clone()],
        action,
    };
    local::bench::record_rendered(&s.store, "ex-o", "r1")
        .await
        .expect("render");
    s.store.apply_reopening(&b.id, &retry).await.expect("retry");
    assert_eq!(open(10).await.expect("open"), std::slice::from_ref(&b.id));
    s.down().await;
}

#[tokio::test]
async fn conditional_writes_on_one_item_never_both_win() {
    // Given one item, and sixteen writers that each try to move it from
    // queued to processing with a conditional UpdateItem at the same moment
    // (plain moto 5.2.5 let two or three through in 50 of 150 rounds; DynamoDB,
    // and the project's moto launcher, never do)
    let s = stack("storage-cas-race").await;
    let client = s.sdk_dynamo();
    let table = s.store_tables().attempts;
    let mut doubled = Vec::new();
    for round in 0..60 {
        let id = format!("race-{round}");
        client
            .put_item()
            .table_name(&table)
            .item("id", attr(&id))
            .item("status", attr("queued"))
            .send()
            .await
            .expect("put");
        let start = std::sync::Arc::new(tokio::sync::Barrier::new(16));
        let writers = (0..16).map(|w| {
            let (client, table, id) = (client.clone(), table.clone(), id.clone());
            let start = start.clone();
            tokio::spawn(async move {
                // Many attributes make moto's step from its check to its
                // write long enough for another thread to run in between.
                let mut update = client
                    .update_item()
                    .table_name(table)
                    .key("id", attr(&id))
                    .condition_expression("#s = :queued")
                    .expression_attribute_names("#s", "status")
                    .expression_attribute_values(":queued", attr("queued"))
                    .expression_attribute_values(":processing", attr("processing"));
                let mut set = vec!["#s = :processing".to_owned()];
                for i in 0..40 {
                    set.push(format!("#a{i} = :v{i}"));
                    update = update
                        .expression_attribute_names(format!("#a{i}"), format!("a{i}"))
                        .expression_attribute_values(format!(":v{i}"), attr(&format!("{w}-{i}")));
                }
                let update = update.update_expression(format!("SET {}", set.join(", ")));
                start.wait().await;
                update.send().await.is_ok()
            })
        });
        // When they race
        let winners = futures::future::join_all(writers)
            .await
            .into_iter()
            .filter(|won| matches!(won, Ok(true)))
            .count();
        if winners != 1 {
            doubled.push((round, winners));
        }
    }
    // Then exactly one wins every round
    assert!(
        doubled.is_empty(),
        "rounds with other than one winner (round, winners): {doubled:?}; \
         is moto running without scripts/moto_server.py?"
    );
}

fn attr(v: &str) -> aws_sdk_dynamodb::types::AttributeValue {
    aws_sdk_dynamodb::types::AttributeValue::S(v.to_owned())
}

#[tokio::test]
async fn an_operator_retry_and_its_executions_reopening_are_one_write_so_no_completion_drops_it() {
    use shared::domain::attempt::OperatorAction;
    use shared::store::ExecutionStore;
    // Given a fanned-out execution whose one attempt failed, settled and
    // out of the unsettled index
    let s = stack("storage-reopen").await;
    local::bench::record_rendered(&s.store, "ex-r", "rpt-r")
        .await
        .expect("render");
    let now = Timestamp::now;
    s.store
        .mark_fanned_out("ex-r", 1, None, now())
        .await
        .expect("fanned out");
    let a = queued(&s.store, "ex-r", "t1").await;
    s.store
        .apply(&a.id, &begin(&a, "tok"))
        .await
        .expect("begin");
    s.store
        .apply(&a.id, &fail(Some("tok"), "http_400", false))
        .await
        .expect("fail");
    assert!(
        s.store
            .record_outcome("ex-r", now(), 0)
            .await
            .expect("claim")
    );
    assert!(unsettled(&s.store).await.is_empty());
    // And a completion that has just read every attempt settled (reopened 0)
    let read = s
        .store
        .get_execution("ex-r")
        .await
        .expect("get")
        .expect("exists");
    // When an operator retries the attempt in between
    let action = OperatorAction {
        action: "retry".into(),
        by: "ops".into(),
        at: now(),
        force: false,
        rerendered: false,
    };
    let retry = Transition::OperatorRetry {
        actions: vec![action.clone()],
        action,
    };
    let queued_again = s.store.apply_reopening(&a.id, &retry).await.expect("retry");
    assert_eq!(status(&queued_again), Some(AttemptStatus::Queued));
    // Then the execution is back in the index in the same write, and the
    // stale completion cannot record it complete (before, a retry reopened
    // the execution in a separate write before and after its own; an API
    // that died between them left a queued attempt in no index)
    assert_eq!(unsettled(&s.store).await, ["ex-r"]);
    assert!(
        !s.store
            .record_outcome("ex-r", now(), read.reopened)
            .await
            .expect("claim")
    );
    assert_eq!(unsettled(&s.store).await, ["ex-r"]);
    // And a retry of an attempt whose execution is gone changes nothing
    let orphan = queued(&s.store, "ex-gone", "t1").await;
    s.store
        .apply(&orphan.id, &begin(&orphan, "tok"))
        .await
        .expect("begin");
    s.store
        .apply(&orphan.id, &fail(Some("tok"), "http_400", false))
        .await
        .expect("fail");
    let refused = s.store.apply_reopening(&orphan.id, &retry).await;
    assert!(refused.is_err(), "{refused:?}");
    let still = s.store.get(&orphan.id).await.expect("get").expect("exists");
    assert_eq!(still.status, AttemptStatus::Failed);
}
