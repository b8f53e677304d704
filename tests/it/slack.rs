//! Slack end to end against the local Slack-compatible server: the upload
//! flow with a bot token, incoming webhooks, and each error class.

use local::slack::{
    COMPLETE_UPLOAD, FILES_INFO, GET_UPLOAD_URL, INCOMING_WEBHOOK, LOCAL_BOT_TOKEN, SlackFault,
    UPLOAD,
};
use local::stack::LocalStack;
use report_delivery_tests::{
    assert_outcome, disable_reason, download, rendered, run_sample, running_stack,
    sample_execution, seed_target,
};
use shared::domain::{AttemptStatus, ErrorCategory};

async fn seed_bot(s: &LocalStack, report: &str, token: &str) {
    seed_target(
        s,
        report,
        "slack-bot",
        "slack",
        serde_json::json!({"mode": "bot_token", "channel_id": "C0SALES2026"}),
        Some(("conn-bot", "slack_bot", &[token])),
        &[],
    )
    .await;
}

async fn seed_hook(s: &LocalStack, report: &str) {
    let url = s.slack.webhook_url("reports");
    seed_target(
        s,
        report,
        "slack-hook",
        "slack",
        serde_json::json!({"mode": "incoming_webhook"}),
        Some(("conn-hook", "slack_incoming_webhook", &[url.as_str()])),
        &[],
    )
    .await;
}

#[tokio::test]
async fn a_bot_token_target_uploads_the_pdf_with_the_three_step_flow() {
    let s = running_stack("slack-bot", &[]).await;
    seed_bot(&s, "rpt-slack", LOCAL_BOT_TOKEN).await;
    let (execution_id, attempts) = run_sample(&s, "rpt-slack", 1).await;
    let a = &attempts[0];
    assert_eq!(a.status, AttemptStatus::Delivered, "{:?}", a.last_error);
    assert_eq!(s.slack.calls(), [GET_UPLOAD_URL, UPLOAD, COMPLETE_UPLOAD]);
    let messages = s.slack.messages();
    assert_eq!(messages.len(), 1);
    let m = &messages[0];
    assert_eq!(m.channel_id.as_deref(), Some("C0SALES2026"));
    let comment = m.payload["initial_comment"].as_str().expect("comment");
    assert!(comment.contains("Weekly sales") && comment.contains("5 rows"));
    assert!(
        comment.contains("```") && comment.contains("98,231.50"),
        "the comment shows the preview: {comment}"
    );
    let (_, pdf) = rendered(&s, &execution_id).await;
    assert_eq!(m.files.len(), 1);
    assert_eq!(m.files[0].bytes.as_deref(), Some(pdf.as_slice()));
    assert_eq!(m.files[0].filename, "weekly-sales-2026-11-26.pdf");
    assert_eq!(
        a.metadata.get("slack_file_ids"),
        Some(&m.files[0].id),
        "the file id is kept on the attempt"
    );
    s.down().await;
}

#[tokio::test]
async fn a_retry_after_a_failed_completion_completes_the_same_upload() {
    let s = running_stack("slack-resume", &[]).await;
    seed_bot(&s, "rpt-resume", LOCAL_BOT_TOKEN).await;
    // The completion fails on the first try and its immediate retry, so the
    // message goes back to the queue; the next invocation must finish the
    // upload it finds on the attempt instead of uploading again.
    s.slack
        .push_fault(COMPLETE_UPLOAD, SlackFault::Error("internal_error".into()));
    s.slack.push_fault(
        COMPLETE_UPLOAD,
        SlackFault::Status {
            code: 503,
            retry_after: None,
            body: String::new(),
        },
    );
    let (_, attempts) = run_sample(&s, "rpt-resume", 1).await;
    let a = &attempts[0];
    assert_outcome(
        a,
        AttemptStatus::Delivered,
        ErrorCategory::Temporary,
        "http_503",
    );
    assert_eq!(a.retry_count, 1);
    // Before each repeat it asks Slack whether the first completion went
    // through (files.info), then completes the same file again.
    assert_eq!(
        s.slack.calls(),
        [
            GET_UPLOAD_URL,
            UPLOAD,
            COMPLETE_UPLOAD,
            FILES_INFO,
            COMPLETE_UPLOAD,
            FILES_INFO,
            COMPLETE_UPLOAD
        ],
        "one upload, three completions"
    );
    assert_eq!(s.slack.messages().len(), 1, "posted once");
    s.down().await;
}

#[tokio::test]
async fn a_completion_whose_reply_was_lost_is_not_posted_twice() {
    let s = running_stack("slack-lost", &[]).await;
    seed_bot(&s, "rpt-lost", LOCAL_BOT_TOKEN).await;
    // Slack shares the file but the answer is a 503
    s.slack.push_fault(COMPLETE_UPLOAD, SlackFault::LoseReply);
    let (_, attempts) = run_sample(&s, "rpt-lost", 1).await;
    assert_eq!(attempts[0].status, AttemptStatus::Delivered);
    assert_eq!(
        s.slack.calls(),
        [GET_UPLOAD_URL, UPLOAD, COMPLETE_UPLOAD, FILES_INFO],
        "the retry asks Slack instead of completing again"
    );
    assert_eq!(s.slack.messages().len(), 1, "posted once");
    s.down().await;
}

#[tokio::test]
async fn a_completion_in_doubt_is_never_sent_twice_when_files_info_fails() {
    let s = running_stack("slack-doubt", &[]).await;
    seed_bot(&s, "rpt-doubt", LOCAL_BOT_TOKEN).await;
    // The file is shared but the answer is lost, and the first look at
    // files.info fails too: doubt must wait for a clear answer.
    s.slack.push_fault(COMPLETE_UPLOAD, SlackFault::LoseReply);
    s.slack.push_fault(
        FILES_INFO,
        SlackFault::Status {
            code: 503,
            retry_after: None,
            body: String::new(),
        },
    );
    let (_, attempts) = run_sample(&s, "rpt-doubt", 1).await;
    assert_eq!(attempts[0].status, AttemptStatus::Delivered);
    assert_eq!(
        s.slack.calls(),
        [
            GET_UPLOAD_URL,
            UPLOAD,
            COMPLETE_UPLOAD,
            FILES_INFO,
            FILES_INFO
        ],
        "files.info is asked again; the upload is never completed twice"
    );
    assert_eq!(s.slack.messages().len(), 1, "posted once");
    s.down().await;
}

#[tokio::test]
async fn a_completion_applied_after_its_timeout_is_awaited_not_repeated() {
    let s = running_stack("slack-late", &[]).await;
    seed_bot(&s, "rpt-late", LOCAL_BOT_TOKEN).await;
    // Slack applies the completion only after the client gave up on it
    // (15 s): the retry finds nothing shared yet and must wait, not post.
    s.slack.push_fault(
        COMPLETE_UPLOAD,
        SlackFault::Delay(std::time::Duration::from_secs(17)),
    );
    let (execution_id, body) = sample_execution("rpt-late");
    s.send("ExecutionsQueue", &body).await.expect("send");
    let attempts = s
        .wait_settled(&execution_id, 1, std::time::Duration::from_secs(180))
        .await
        .expect("settles");
    let a = &attempts[0];
    assert_eq!(a.status, AttemptStatus::Delivered, "{:?}", a.last_error);
    assert_eq!(s.slack.messages().len(), 1, "posted once");
    let calls = s.slack.calls();
    assert_eq!(
        calls.iter().filter(|c| *c == COMPLETE_UPLOAD).count(),
        1,
        "completed once: {calls:?}"
    );
    assert!(
        a.history
            .iter()
            .any(|t| t.code.as_deref() == Some("completion_unconfirmed")),
        "a try waited for the late completion: {:?}",
        a.history
    );
    s.down().await;
}

#[tokio::test]
async fn an_expired_earlier_upload_is_uploaded_again() {
    let s = running_stack("slack-expired", &[]).await;
    seed_bot(&s, "rpt-expired", LOCAL_BOT_TOKEN).await;
    s.slack.push_fault(
        COMPLETE_UPLOAD,
        SlackFault::Status {
            code: 503,
            retry_after: None,
            body: String::new(),
        },
    );
    s.slack
        .push_fault(COMPLETE_UPLOAD, SlackFault::Error("file_not_found".into()));
    let (_, attempts) = run_sample(&s, "rpt-expired", 1).await;
    let a = &attempts[0];
    assert_eq!(a.status, AttemptStatus::Delivered, "{:?}", a.last_error);
    assert_eq!(
        a.last_error.as_ref().map(|e| e.code.as_str()),
        Some("upload_expired")
    );
    assert_eq!(
        s.slack.calls(),
        [
            GET_UPLOAD_URL,
            UPLOAD,
            COMPLETE_UPLOAD,
            FILES_INFO,
            COMPLETE_UPLOAD,
            GET_UPLOAD_URL,
            UPLOAD,
            COMPLETE_UPLOAD
        ]
    );
    let messages = s.slack.messages();
    assert_eq!(messages.len(), 1);
    assert_eq!(
        a.metadata.get("slack_file_ids"),
        Some(&messages[0].files[0].id),
        "the new upload's id"
    );
    s.down().await;
}

#[tokio::test]
async fn rate_limits_are_temporary_and_honour_retry_after() {
    let s = running_stack("slack-429", &[]).await;
    seed_bot(&s, "rpt-429s", LOCAL_BOT_TOKEN).await;
    for _ in 0..2 {
        s.slack.push_fault(
            GET_UPLOAD_URL,
            SlackFault::Status {
                code: 429,
                retry_after: Some(2),
                body: "ratelimited".into(),
            },
        );
    }
    let (_, attempts) = run_sample(&s, "rpt-429s", 1).await;
    let a = &attempts[0];
    assert_outcome(
        a,
        AttemptStatus::Delivered,
        ErrorCategory::Temporary,
        "ratelimited",
    );
    // Both waits (the immediate retry and the backoff, whose schedule is
    // 1 s here) are at least the 2 s Slack asked for.
    let gaps = s.slack.gaps(GET_UPLOAD_URL);
    assert_eq!(gaps.len(), 2, "{gaps:?}");
    assert!(
        gaps.iter().all(|g| *g >= std::time::Duration::from_secs(2)),
        "{gaps:?}"
    );
    assert_eq!(s.slack.messages().len(), 1);
    s.down().await;
}

#[tokio::test]
async fn a_revoked_token_fails_at_once_as_invalid_auth() {
    let s = running_stack("slack-auth", &[]).await;
    seed_bot(&s, "rpt-auth", "xoxb-revoked-token").await;
    let (_, attempts) = run_sample(&s, "rpt-auth", 1).await;
    let a = &attempts[0];
    assert_outcome(
        a,
        AttemptStatus::Failed,
        ErrorCategory::Permanent,
        "invalid_auth",
    );
    assert_eq!(s.slack.calls(), [GET_UPLOAD_URL], "no retry");
    assert!(s.slack.messages().is_empty());
    s.down().await;
}

#[tokio::test]
async fn an_incoming_webhook_posts_block_kit_with_a_working_download_button() {
    let s = running_stack("slack-hook", &[]).await;
    seed_hook(&s, "rpt-hook").await;
    let (execution_id, attempts) = run_sample(&s, "rpt-hook", 1).await;
    assert_eq!(attempts[0].status, AttemptStatus::Delivered);
    let messages = s.slack.messages();
    assert_eq!(messages.len(), 1);
    let blocks = messages[0].payload["blocks"].as_array().expect("blocks");
    assert_eq!(blocks[0]["type"], "header");
    assert_eq!(blocks[0]["text"]["text"], "Weekly sales");
    let fields = blocks[1]["fields"].to_string();
    assert!(fields.contains("Thu 26 Nov 2026, 08:00 CET"), "{fields}");
    let preview = blocks
        .iter()
        .filter_map(|b| b["text"]["text"].as_str())
        .find(|t| t.starts_with("```"))
        .expect("a preview block");
    assert_eq!(
        preview.lines().count(),
        2 + 5 + 2 + 2,
        "names, rule, 5 rows, rule, totals, fences: {preview}"
    );
    let actions = blocks
        .iter()
        .find(|b| b["type"] == "actions")
        .expect("buttons");
    let button = &actions["elements"][0];
    assert_eq!(button["type"], "button");
    let (_, pdf) = rendered(&s, &execution_id).await;
    assert_eq!(download(button["url"].as_str().expect("url")).await, pdf);
    s.down().await;
}

#[tokio::test]
async fn a_removed_incoming_webhook_fails_and_flags_the_target() {
    let s = running_stack("slack-gone", &[]).await;
    seed_hook(&s, "rpt-gone").await;
    s.slack.push_fault(
        INCOMING_WEBHOOK,
        SlackFault::Status {
            code: 404,
            retry_after: None,
            body: "no_service".into(),
        },
    );
    let (_, attempts) = run_sample(&s, "rpt-gone", 1).await;
    let a = &attempts[0];
    assert_outcome(
        a,
        AttemptStatus::Failed,
        ErrorCategory::Permanent,
        "no_service",
    );
    let reason = disable_reason(&s, "slack-hook").await;
    assert!(reason.contains("no_service"), "{reason}");
    s.down().await;
}

#[tokio::test]
async fn posts_to_one_channel_share_its_rate_limit_across_instances_without_using_tries() {
    // Given seven bot targets posting to the same channel
    let s = running_stack("slack-rate", &[]).await;
    let targets: Vec<serde_json::Value> = (0..7)
        .map(|i| {
            serde_json::json!({
                "id": format!("same-channel-{i}"), "report_id": "rpt-rate",
                "target_type": "slack", "service_connection_id": "conn-bot",
                "active": true,
                "config": {"mode": "bot_token", "channel_id": "C0BUSY0001"},
            })
        })
        .collect();
    let seed = serde_json::json!({
        "connections": [{"id": "conn-bot", "kind": "slack_bot", "secrets": ["{{slack_bot_token}}"]}],
        "targets": targets,
    });
    s.seed(&seed.to_string()).await.expect("seed");
    // When one execution goes to all of them at once
    let (_, attempts) = run_sample(&s, "rpt-rate", 7).await;
    // Then all are delivered, each on its first try (waiting is not a try)
    assert!(
        attempts
            .iter()
            .all(|a| a.status == AttemptStatus::Delivered)
    );
    assert!(attempts.iter().all(|a| a.tries == 1 && a.retry_count == 0));
    // And no window of the channel's sends beat the limit: at most a burst
    // of three plus one a second (each send starts with its upload URL
    // request; half a send of slack for scheduling)
    let gaps = s.slack.gaps(GET_UPLOAD_URL);
    assert_eq!(gaps.len(), 6);
    let mut at = vec![0.0_f64];
    for g in &gaps {
        at.push(at[at.len() - 1] + g.as_secs_f64());
    }
    for i in 0..at.len() {
        for j in i..at.len() {
            let posts = (j - i + 1) as f64;
            assert!(
                posts <= 3.0 + (at[j] - at[i]) + 0.5,
                "{posts} posts within {:.2} s: {at:?}",
                at[j] - at[i]
            );
        }
    }
    s.down().await;
}

/// The sample execution with a chart of revenue by city.
fn charted(report: &str) -> (String, String) {
    let (id, body) = sample_execution(report);
    let mut msg: serde_json::Value = serde_json::from_str(&body).expect("json");
    msg["chart"] = serde_json::json!({
        "type": "bar", "x": "City", "y": ["Revenue (EUR)"], "title": "Revenue by city"
    });
    (id, msg.to_string())
}

#[tokio::test]
async fn a_chart_is_uploaded_by_the_bot_and_shown_by_the_incoming_webhook() {
    let s = running_stack("slack-chart", &[]).await;
    seed_bot(&s, "rpt-chart-bot", LOCAL_BOT_TOKEN).await;
    seed_hook(&s, "rpt-chart-hook").await;
    let mut runs = Vec::new();
    for report in ["rpt-chart-bot", "rpt-chart-hook"] {
        let (id, body) = charted(report);
        s.send("ExecutionsQueue", &body).await.expect("send");
        let attempts = s
            .wait_settled(&id, 1, std::time::Duration::from_secs(60))
            .await
            .expect("settles");
        assert_eq!(
            attempts[0].status,
            AttemptStatus::Delivered,
            "{:?}",
            attempts[0].last_error
        );
        runs.push(id);
    }
    let messages = s.slack.messages();
    // The bot shares the PDF and the chart picture in one completion.
    let bot = messages
        .iter()
        .find(|m| m.via == COMPLETE_UPLOAD)
        .expect("bot message");
    let (e, _) = rendered(&s, &runs[0]).await;
    let chart = s
        .object(&e.chart.as_ref().expect("chart stored").key)
        .await
        .expect("png");
    assert_eq!(bot.files.len(), 2);
    assert!(
        bot.files[1].filename.ends_with("-chart.png"),
        "{}",
        bot.files[1].filename
    );
    assert_eq!(bot.files[1].bytes.as_deref(), Some(chart.as_slice()));
    // The incoming webhook shows it as an image block whose signed link
    // serves the stored PNG.
    let hook = messages
        .iter()
        .find(|m| m.via == INCOMING_WEBHOOK)
        .expect("hook message");
    let image = hook.payload["blocks"]
        .as_array()
        .and_then(|b| b.iter().find(|b| b["type"] == "image"))
        .expect("an image block");
    assert_eq!(image["alt_text"], "Revenue by city");
    let (e, _) = rendered(&s, &runs[1]).await;
    let stored = s
        .object(&e.chart.as_ref().expect("chart stored").key)
        .await
        .expect("png");
    assert_eq!(
        download(image["image_url"].as_str().expect("url")).await,
        stored
    );
    // When Slack cannot fetch the picture it refuses the whole message
    // (400 invalid_blocks): the message goes again without it.
    s.slack
        .push_fault(INCOMING_WEBHOOK, SlackFault::Error("invalid_blocks".into()));
    let (id, body) = charted("rpt-chart-hook");
    s.send("ExecutionsQueue", &body).await.expect("send");
    let attempts = s
        .wait_settled(&id, 1, std::time::Duration::from_secs(60))
        .await
        .expect("settles");
    assert_eq!(attempts[0].status, AttemptStatus::Delivered);
    assert_eq!(attempts[0].tries, 1, "not a retry: one send, two posts");
    let last = s.slack.messages().last().cloned().expect("posted");
    let blocks = last.payload["blocks"].as_array().expect("blocks");
    assert!(blocks.iter().all(|b| b["type"] != "image"));
    assert!(blocks.iter().any(|b| b["type"] == "actions"));
    s.down().await;
}
