//! The operator API end to end: the real `api` function behind its local
//! AWS_IAM function URL, over moto.

use local::stack::LocalStack;
use report_delivery_tests::{SIGNING_CONNECTION, running_stack, webhook_targets};
use serde_json::{Value, json};

/// A client that signs its requests the way `curl --aws-sigv4` does (the
/// local function URL checks the form; AWS checks the signature).
pub(crate) struct Api {
    pub(crate) base: String,
    client: reqwest::Client,
}

impl Api {
    /// The admin API (`ApiFunction`: every route).
    pub(crate) fn of(s: &LocalStack) -> Self {
        Self::at(s, "ApiFunction")
    }

    /// The read-only API (`ReadApiFunction`: GET routes only).
    pub(crate) fn read_only(s: &LocalStack) -> Self {
        Self::at(s, "ReadApiFunction")
    }

    fn at(s: &LocalStack, function: &str) -> Self {
        let base = s
            .runner
            .as_ref()
            .and_then(|r| r.function_urls.get(function))
            .cloned()
            .unwrap_or_else(|| panic!("{function} has a function URL"));
        Self {
            base,
            client: reqwest::Client::new(),
        }
    }

    pub(crate) async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self
            .client
            .request(method, format!("{}{}", self.base, path.trim_start_matches('/')))
            .header("x-amz-date", "20261127T100000Z")
            .header(
                "authorization",
                "AWS4-HMAC-SHA256 Credential=AKIDOPERATOR/20261127/us-east-1/lambda/aws4_request, SignedHeaders=host;x-amz-date, Signature=00",
            );
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.expect("the API answers");
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let text = r.text().await.unwrap_or_default();
        (
            status,
            headers,
            serde_json::from_str(&text).unwrap_or(Value::Null),
        )
    }
}

pub(crate) fn webhook(id: &str, url: &str) -> Value {
    json!({
        "id": id,
        "report_id": "rpt-api",
        "target_type": "webhook",
        "config": {"url": url},
        "service_connection_id": SIGNING_CONNECTION,
    })
}

#[tokio::test]
async fn targets_are_created_read_replaced_with_their_version_switched_and_deleted() {
    let s = running_stack("api-targets", &[]).await;
    // The signing connection exists (seeded with a throwaway target)
    s.seed(&webhook_targets(
        "rpt-seed",
        &[("seed", "/hooks/seed", false, true)],
    ))
    .await
    .expect("seed");
    let api = Api::of(&s);
    let url = format!("{}/hooks/api", s.webhook.url);

    // Create
    let (status, headers, t) = api
        .call("POST", "/targets", Some(webhook("w1", &url)), &[])
        .await;
    assert_eq!(status, 201, "{t}");
    assert_eq!(headers["etag"], "\"1\"");
    assert_eq!(headers["location"], "/targets/w1");
    assert_eq!(t["version"], 1);
    assert_eq!(t["formats"], json!(["pdf"]));
    let (status, _, p) = api
        .call("POST", "/targets", Some(webhook("w1", &url)), &[])
        .await;
    assert_eq!((status, p["code"].as_str()), (409, Some("already_exists")));

    // Read and list
    let (status, headers, t) = api.call("GET", "/targets/w1", None, &[]).await;
    assert_eq!(status, 200);
    assert_eq!(headers["etag"], "\"1\"");
    assert_eq!(t["config"]["url"], url.as_str());
    let (_, _, list) = api
        .call("GET", "/targets?report_id=rpt-api", None, &[])
        .await;
    assert_eq!(list["targets"].as_array().map(Vec::len), Some(1));
    let (status, _, _) = api.call("GET", "/targets/nope", None, &[]).await;
    assert_eq!(status, 404);

    // Replace: needs If-Match; a stale version is refused with the current one
    let mut changed = webhook("w1", &url);
    changed["formats"] = json!(["pdf", "csv"]);
    let (status, _, p) = api
        .call("PUT", "/targets/w1", Some(changed.clone()), &[])
        .await;
    assert_eq!(
        (status, p["code"].as_str()),
        (428, Some("if_match_required"))
    );
    let (status, headers, t) = api
        .call(
            "PUT",
            "/targets/w1",
            Some(changed.clone()),
            &[("if-match", "\"1\"")],
        )
        .await;
    assert_eq!(status, 200, "{t}");
    assert_eq!(headers["etag"], "\"2\"");
    assert_eq!(t["formats"], json!(["pdf", "csv"]));
    let (status, headers, p) = api
        .call(
            "PUT",
            "/targets/w1",
            Some(changed),
            &[("if-match", "\"1\"")],
        )
        .await;
    assert_eq!(
        (status, p["code"].as_str()),
        (412, Some("version_mismatch"))
    );
    assert_eq!(headers["etag"], "\"2\"");
    // `*` matches whatever version is current (RFC 9110)
    let (status, headers, _) = api
        .call(
            "PUT",
            "/targets/w1",
            Some(webhook("w1", &url)),
            &[("if-match", "*")],
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(headers["etag"], "\"3\"");
    // A method a route does not take is a problem document too
    let (status, headers, p) = api.call("PATCH", "/targets/w1", None, &[]).await;
    assert_eq!(
        (status, p["code"].as_str()),
        (405, Some("method_not_allowed"))
    );
    assert_eq!(headers["content-type"], "application/problem+json");

    // Disable, then enable: enabling clears the gone flag and the streak
    let (status, _, t) = api.call("POST", "/targets/w1/disable", None, &[]).await;
    assert_eq!((status, t["active"].as_bool()), (200, Some(false)));
    use shared::store::TargetStore;
    s.store
        .flag_for_disabling(
            "w1",
            "http_410_gone: gone",
            shared::domain::Timestamp::now(),
        )
        .await
        .expect("flag");
    s.store
        .record_streak(
            "w1",
            shared::store::Streak::Failed { permanent: true },
            shared::domain::Timestamp::now(),
        )
        .await
        .expect("streak");
    let (_, _, t) = api.call("GET", "/targets/w1", None, &[]).await;
    assert!(t["disable_requested"].is_object());
    assert_eq!(t["consecutive_failures"], 1);
    let (status, _, t) = api.call("POST", "/targets/w1/enable", None, &[]).await;
    assert_eq!(status, 200);
    assert_eq!(t["active"], true);
    assert!(t["disable_requested"].is_null(), "{t}");
    assert_eq!(t["consecutive_failures"], 0);
    assert_eq!(t["version"], 5);

    // Delete, with a stale version refused first
    let (status, _, _) = api
        .call("DELETE", "/targets/w1", None, &[("if-match", "\"2\"")])
        .await;
    assert_eq!(status, 412);
    let (status, _, _) = api
        .call(
            "DELETE",
            "/targets/w1",
            None,
            &[("if-match", "\"4\", \"5\"")],
        )
        .await;
    assert_eq!(status, 204);
    let (status, _, _) = api.call("GET", "/targets/w1", None, &[]).await;
    assert_eq!(status, 404);
    s.down().await;
}

#[tokio::test]
async fn bad_targets_are_refused_with_a_code_and_never_stored() {
    // Private addresses refused, as in production
    let s = running_stack(
        "api-bad-targets",
        &[("ALLOW_PRIVATE_WEBHOOK_TARGETS", "false")],
    )
    .await;
    s.seed(&webhook_targets(
        "rpt-seed",
        &[("seed", "/hooks/seed", false, true)],
    ))
    .await
    .expect("seed");
    let api = Api::of(&s);
    let email = |to: Value| json!({"id": "e1", "report_id": "rpt-api", "target_type": "email", "config": {"to": to}});
    // (A name that resolves to a private address is refused after DNS:
    // unit-tested in handlers::api::targets, as no name here resolves so.)
    let cases: Vec<(Value, &str)> = vec![
        (
            webhook("h1", "https://169.254.169.254/latest/meta-data"),
            "invalid_config",
        ),
        (
            webhook("h2", "https://127.0.0.1:8080/hook"),
            "invalid_config",
        ),
        (
            webhook("h3", "https://[::ffff:10.0.0.1]/hook"),
            "invalid_config",
        ),
        (webhook("h4", "https://metadata/hook"), "invalid_config"),
        (webhook("h5", "ftp://example.com/hook"), "invalid_config"),
        (
            webhook("h7", "https://no-such-host.invalid/hook"),
            "unresolvable_host",
        ),
        (
            webhook("h6", "https://user:pw@example.com/hook"),
            "invalid_config",
        ),
        (email(json!(["not-an-address"])), "invalid_config"),
        (email(json!([])), "invalid_config"),
        (
            json!({"id": "s1", "report_id": "rpt-api", "target_type": "slack",
                   "config": {"mode": "bot_token", "channel_id": "#general"},
                   "service_connection_id": "conn-x"}),
            "invalid_config",
        ),
        (
            json!({"id": "s2", "report_id": "rpt-api", "target_type": "slack",
                   "config": {"mode": "bot_token", "channel_id": "C0SALES2026"}}),
            "connection_required",
        ),
        (
            json!({"id": "s3", "report_id": "rpt-api", "target_type": "slack",
                   "config": {"mode": "bot_token", "channel_id": "C0SALES2026"},
                   "service_connection_id": "conn-missing"}),
            "unknown_connection",
        ),
        (
            json!({"id": "s4", "report_id": "rpt-api", "target_type": "slack",
                   "config": {"mode": "bot_token", "channel_id": "C0SALES2026"},
                   "service_connection_id": SIGNING_CONNECTION}),
            "wrong_connection_kind",
        ),
        (
            json!({"id": "bad id!", "report_id": "rpt-api", "target_type": "email",
                "config": {"to": ["a@example.com"]}}),
            "invalid_id",
        ),
        (
            json!({"id": "x1", "report_id": "rpt-api", "target_type": "fax", "config": {}}),
            "invalid_config",
        ),
        (
            json!({"id": "x2", "report_id": "rpt-api", "target_type": "email",
                "config": {"to": ["a@example.com"]}, "colour": "red"}),
            "invalid_body",
        ),
        (json!("just a string"), "invalid_body"),
    ];
    for (body, code) in cases {
        let (status, headers, p) = api.call("POST", "/targets", Some(body.clone()), &[]).await;
        // What is stored decides these two, not the request: a conflict
        let expected = match code {
            "unknown_connection" | "wrong_connection_kind" => 409,
            _ => 400,
        };
        assert_eq!(status, expected, "{body} → {p}");
        assert_eq!(p["code"], code, "{body} → {p}");
        assert_eq!(headers["content-type"], "application/problem+json");
        assert!(p["detail"].as_str().is_some_and(|d| !d.is_empty()));
    }
    let (_, _, list) = api
        .call("GET", "/targets?report_id=rpt-api", None, &[])
        .await;
    assert_eq!(list["targets"], json!([]), "nothing half-valid was stored");
    s.down().await;
}

#[tokio::test]
async fn a_failed_attempt_whose_pdf_was_deleted_is_rendered_again_and_delivered_on_retry() {
    use local::sinks::Fault;
    use report_delivery_tests::{rendered, sample_execution};
    let s = running_stack("api-retry", &[]).await;
    s.seed(&webhook_targets(
        "rpt-retry",
        &[("rt", "/hooks/rt", true, true)],
    ))
    .await
    .expect("seed");
    let api = Api::of(&s);
    // The receiver refuses once: a permanent failure
    s.webhook.push_fault(Fault::Status {
        code: 400,
        retry_after: None,
    });
    let (execution_id, body) = sample_execution("rpt-retry");
    s.send("ExecutionsQueue", &body).await.expect("send");
    let attempts = s
        .wait_settled(&execution_id, 1, std::time::Duration::from_secs(60))
        .await
        .expect("settles");
    let id = attempts[0].id.clone();
    assert_eq!(attempts[0].status, shared::domain::AttemptStatus::Failed);
    // Its report file is gone
    let (execution, pdf) = rendered(&s, &execution_id).await;
    s.s3.delete_object()
        .bucket(s.stack.buckets.get("ReportsBucket").expect("bucket"))
        .key(&execution.pdf.key)
        .send()
        .await
        .expect("delete");

    // The operator lists the failure, reads it, and retries it
    let (status, _, list) = api
        .call(
            "GET",
            &format!("/attempts?execution_id={execution_id}&status=failed"),
            None,
            &[],
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(list["attempts"].as_array().map(Vec::len), Some(1), "{list}");
    let (_, _, before) = api.call("GET", &format!("/attempts/{id}"), None, &[]).await;
    assert_eq!(before["last_error"]["code"], "http_400");
    assert_eq!(before["history"][0]["code"], "http_400");
    assert!(before.get("lease_token").is_none());
    let (status, _, r) = api
        .call("POST", &format!("/attempts/{id}/retry"), None, &[])
        .await;
    assert_eq!(status, 202, "{r}");
    assert_eq!(r["rerendered"], true);
    assert_eq!(r["message_sent"], true);
    assert_eq!(r["attempt"]["status"], "queued");
    let action = &r["attempt"]["operator_actions"][0];
    assert_eq!(action["action"], "retry");
    assert!(
        action["by"]
            .as_str()
            .is_some_and(|b| b.contains("AKIDOPERATOR")),
        "{action}"
    );

    // Then it is delivered, with the report re-attached byte for byte
    let mut delivered = None;
    for _ in 0..120 {
        let (_, _, a) = api.call("GET", &format!("/attempts/{id}"), None, &[]).await;
        if a["status"] == "delivered" {
            delivered = Some(a);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    let a = delivered.expect("the retried attempt is delivered");
    assert_eq!(a["history"].as_array().map(Vec::len), Some(2), "{a}");
    let (_, again) = rendered(&s, &execution_id).await;
    assert_eq!(again, pdf, "the re-rendered PDF is the same file");
    assert_eq!(
        s.webhook.received().len(),
        2,
        "refused once, then delivered"
    );

    // A delivered attempt is not retried; an unknown one is not found
    let (status, _, p) = api
        .call("POST", &format!("/attempts/{id}/retry"), None, &[])
        .await;
    assert_eq!(
        (status, p["code"].as_str()),
        (409, Some("already_delivered"))
    );
    let (status, _, _) = api
        .call("POST", "/attempts/att_nope/retry", None, &[])
        .await;
    assert_eq!(status, 404);

    // Filters combine: one target's attempt in the execution; with no
    // filter, the open attempts (this one is settled, so not among them)
    let (status, _, p) = api
        .call(
            "GET",
            &format!("/attempts?execution_id={execution_id}&target_id=rt"),
            None,
            &[],
        )
        .await;
    assert_eq!(status, 200, "{p}");
    assert_eq!(p["attempts"].as_array().map(Vec::len), Some(1), "{p}");
    assert_eq!(p["attempts"][0]["id"], id.as_str());
    let (status, _, p) = api
        .call(
            "GET",
            &format!("/attempts?execution_id={execution_id}&target_id=other"),
            None,
            &[],
        )
        .await;
    assert_eq!((status, p["attempts"].clone()), (200, json!([])), "{p}");
    let (status, _, p) = api.call("GET", "/attempts", None, &[]).await;
    assert_eq!(status, 200, "{p}");
    assert!(
        p["attempts"]
            .as_array()
            .is_some_and(|a| a.iter().all(|a| a["id"] != id.as_str())),
        "{p}"
    );
    let (status, _, p) = api
        .call("GET", "/attempts?cursor=open.99.", None, &[])
        .await;
    assert_eq!((status, p["code"].as_str()), (400, Some("invalid_cursor")));
    s.down().await;
}

#[test]
fn every_route_is_in_openapi_yaml_and_every_documented_operation_is_routed() {
    let text = std::fs::read_to_string(local::stack::project_root().join("openapi.yaml"))
        .expect("openapi.yaml");
    let doc: serde_norway::Value = serde_norway::from_str(&text).expect("YAML");
    assert_eq!(doc["openapi"].as_str(), Some("3.1.0"));
    let mut documented = std::collections::BTreeSet::new();
    for (path, item) in doc["paths"].as_mapping().expect("paths") {
        for (method, _) in item.as_mapping().expect("path item") {
            let m = method.as_str().unwrap_or_default();
            if ["get", "put", "post", "delete", "patch", "head", "options"].contains(&m) {
                documented.insert((
                    m.to_uppercase(),
                    path.as_str().unwrap_or_default().to_owned(),
                ));
            }
        }
    }
    let routed: std::collections::BTreeSet<(String, String)> = shared::handlers::api::routes()
        .into_iter()
        .map(|(m, p, _)| (m.to_owned(), p.to_owned()))
        .collect();
    assert_eq!(
        routed.difference(&documented).collect::<Vec<_>>(),
        Vec::<&(String, String)>::new(),
        "routed but not documented"
    );
    assert_eq!(
        documented.difference(&routed).collect::<Vec<_>>(),
        Vec::<&(String, String)>::new(),
        "documented but not routed"
    );
}

#[tokio::test]
async fn connections_are_write_only_and_a_rotated_signing_secret_keeps_the_old_one_for_its_grace() {
    use report_delivery_tests::sample_execution;
    let s = running_stack("api-connections", &[]).await;
    let api = Api::of(&s);
    let old = "whsec_b2xkLXNpZ25pbmctc2VjcmV0LTMyLWJ5dGVzLWxvbmch";
    let new = "whsec_bmV3LXNpZ25pbmctc2VjcmV0LTMyLWJ5dGVzLWxvbmchIQ==";
    let (status, headers, c) = api
        .call(
            "POST",
            "/connections",
            Some(json!({"id": "conn-sign", "kind": "webhook_signing", "secrets": [old]})),
            &[],
        )
        .await;
    assert_eq!(status, 201, "{c}");
    assert_eq!(headers["location"], "/connections/conn-sign");
    assert_eq!(c["secrets"], 1);
    let (_, _, read) = api.call("GET", "/connections/conn-sign", None, &[]).await;
    assert!(!read.to_string().contains("whsec_"), "write-only: {read}");

    // Bad secrets and kinds are refused, and never quoted back
    for (body, code) in [
        (
            json!({"id": "c1", "kind": "webhook_signing", "secrets": ["whsec_c2hvcnQ="]}),
            "invalid_secret",
        ),
        (
            json!({"id": "c2", "kind": "slack_bot", "secrets": ["xoxp-user-token-123"]}),
            "invalid_secret",
        ),
        (
            json!({"id": "c3", "kind": "slack_bot", "secrets": []}),
            "invalid_secrets",
        ),
        (
            json!({"id": "c4", "kind": "fax", "secrets": ["x"]}),
            "invalid_secret",
        ),
        (
            json!({"id": "c5", "kind": "slack_bot", "secrets": "xoxb-leaky-token"}),
            "invalid_body",
        ),
    ] {
        let (status, _, p) = api
            .call("POST", "/connections", Some(body.clone()), &[])
            .await;
        assert_eq!((status, p["code"].as_str()), (400, Some(code)), "{body}");
        let text = p.to_string();
        assert!(
            !text.contains("user-token")
                && !text.contains("leaky-token")
                && !text.contains("c2hvcnQ"),
            "a secret is quoted back: {text}"
        );
    }
    let (status, _, p) = api
        .call(
            "PUT",
            "/connections/conn-sign",
            Some(json!({"kind": "slack_bot", "secrets": ["xoxb-123-456-abc"]})),
            &[],
        )
        .await;
    assert_eq!((status, p["code"].as_str()), (409, Some("kind_mismatch")));

    // A target signed with it, delivered once before and once after a rotation
    let url = format!("{}/hooks/sig", s.webhook.url);
    let mut target = webhook("sig", &url);
    target["report_id"] = "rpt-sig".into();
    target["service_connection_id"] = "conn-sign".into();
    let (status, _, _) = api.call("POST", "/targets", Some(target), &[]).await;
    assert_eq!(status, 201);
    let deliver = |n: usize| {
        let s = &s;
        async move {
            let (id, body) = sample_execution("rpt-sig");
            s.send("ExecutionsQueue", &body).await.expect("send");
            s.wait_settled(&id, 1, std::time::Duration::from_secs(60))
                .await
                .expect("settles");
            s.webhook.received()[n].headers["webhook-signature"].clone()
        }
    };
    let before = deliver(0).await;
    assert_eq!(before.split(' ').count(), 1, "{before}");
    let (status, _, c) = api
        .call(
            "POST",
            "/connections/conn-sign/rotate",
            Some(json!({"secret": new, "grace_seconds": 3600})),
            &[],
        )
        .await;
    assert_eq!(status, 200, "{c}");
    assert_eq!(c["secrets"], 1);
    assert_eq!(c["retiring_until"].as_array().map(Vec::len), Some(1));
    let after = deliver(1).await;
    assert_eq!(
        after.split(' ').count(),
        2,
        "signed with the new secret and, during the grace, the old one: {after}"
    );
    let (status, _, p) = api
        .call(
            "POST",
            "/connections/conn-sign/rotate",
            Some(json!({"secret": new, "grace_seconds": 999999999})),
            &[],
        )
        .await;
    assert_eq!((status, p["code"].as_str()), (400, Some("invalid_grace")));

    // Deleted
    let (status, _, _) = api
        .call("DELETE", "/connections/conn-sign", None, &[])
        .await;
    assert_eq!(status, 204);
    let (status, _, _) = api.call("GET", "/connections/conn-sign", None, &[]).await;
    assert_eq!(status, 404);
    s.down().await;
}

#[tokio::test]
async fn dead_letters_are_redriven_with_a_dry_run_first_and_the_records_agree() {
    use local::sinks::Fault;
    use report_delivery_tests::sample_execution;
    let s = running_stack("api-redrive", &[]).await;
    s.seed(&webhook_targets(
        "rpt-rd",
        &[("rd", "/hooks/rd", true, true)],
    ))
    .await
    .expect("seed");
    let api = Api::of(&s);
    // A delivery whose receiver fails through the whole schedule
    for _ in 0..8 {
        s.webhook.push_fault(Fault::Status {
            code: 503,
            retry_after: None,
        });
    }
    let (execution_id, body) = sample_execution("rpt-rd");
    s.send("ExecutionsQueue", &body).await.expect("send");
    let a = s
        .wait_settled(&execution_id, 1, std::time::Duration::from_secs(90))
        .await
        .expect("settles")
        .remove(0);
    assert_eq!(a.status, shared::domain::AttemptStatus::Failed);
    crate::delivery::wait_empty(&s, "WebhookDeliveryQueue").await;
    assert_eq!(s.depth("DeliveryDeadLetterQueue").await.expect("depth"), 1);
    // And a valid execution message that once landed on its dead-letter queue
    let (late_id, late_body) = sample_execution("rpt-rd");
    s.send("ExecutionsDeadLetterQueue", &late_body)
        .await
        .expect("send");
    s.webhook.clear_faults();

    // A dry run moves nothing
    let (status, _, r) = api
        .call(
            "POST",
            "/dlq/delivery/redrive",
            Some(json!({"dry_run": true})),
            &[],
        )
        .await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(
        (r["examined"].as_u64(), r["moved"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(s.depth("DeliveryDeadLetterQueue").await.expect("depth"), 1);
    let (_, _, still) = api
        .call("GET", &format!("/attempts/{}", a.id), None, &[])
        .await;
    assert_eq!(still["status"], "failed");

    // The real redrive retries the failed attempt, recorded as a redrive
    let (status, _, r) = api
        .call(
            "POST",
            "/dlq/delivery/redrive",
            Some(json!({"limit": 5})),
            &[],
        )
        .await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["messages"][0]["action"], "retried", "{r}");
    let mut delivered = None;
    for _ in 0..120 {
        let (_, _, now) = api
            .call("GET", &format!("/attempts/{}", a.id), None, &[])
            .await;
        if now["status"] == "delivered" {
            delivered = Some(now);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    let now = delivered.expect("the redriven attempt is delivered");
    assert_eq!(now["operator_actions"][0]["action"], "redrive");
    assert_eq!(s.depth("DeliveryDeadLetterQueue").await.expect("depth"), 0);

    // The execution letter goes back to its queue and is delivered
    let (status, _, r) = api.call("POST", "/dlq/executions/redrive", None, &[]).await;
    assert_eq!((status, r["moved"].as_u64()), (200, Some(1)), "{r}");
    let late = s
        .wait_settled(&late_id, 1, std::time::Duration::from_secs(60))
        .await
        .expect("settles");
    assert_eq!(late[0].status, shared::domain::AttemptStatus::Delivered);
    assert_eq!(
        s.depth("ExecutionsDeadLetterQueue").await.expect("depth"),
        0
    );
    let (status, _, _) = api.call("POST", "/dlq/nowhere/redrive", None, &[]).await;
    assert_eq!(status, 404);
    s.down().await;
}

#[tokio::test]
async fn a_test_send_reaches_a_disabled_target_is_recorded_as_a_test_and_changes_nothing_else() {
    use local::sinks::Fault;
    let s = running_stack("api-test-send", &[]).await;
    s.seed(&webhook_targets(
        "rpt-seed",
        &[("seed", "/hooks/seed", false, true)],
    ))
    .await
    .expect("seed");
    let api = Api::of(&s);
    let url = format!("{}/hooks/probe", s.webhook.url);
    let (status, _, t) = api
        .call("POST", "/targets", Some(webhook("probe", &url)), &[])
        .await;
    assert_eq!(status, 201, "{t}");
    let (status, _, _) = api.call("POST", "/targets/probe/disable", None, &[]).await;
    assert_eq!(status, 200);

    // A test of the disabled target is delivered through the real path
    let wait = json!({"wait_seconds": 20});
    let (status, headers, a) = api
        .call("POST", "/targets/probe/test", Some(wait.clone()), &[])
        .await;
    assert_eq!(status, 200, "{a}");
    assert_eq!(a["status"], "delivered", "{a}");
    assert_eq!(a["kind"], "test");
    assert_eq!(a["delivery_target_id"], "probe");
    assert_eq!(a["operator_actions"][0]["action"], "test");
    assert!(
        a["operator_actions"][0]["by"]
            .as_str()
            .is_some_and(|b| b.contains("AKIDOPERATOR")),
        "{a}"
    );
    let id = a["id"].as_str().expect("attempt id").to_owned();
    assert_eq!(
        headers["location"].to_str().ok(),
        Some(format!("/attempts/{id}").as_str())
    );
    let got = s.webhook.received();
    assert_eq!(got.len(), 1, "one send");
    let event: Value = serde_json::from_slice(&got[0].body).expect("JSON event");
    assert_eq!(event["execution"]["id"], a["report_execution_id"]);
    assert_eq!(event["attempt_id"], a["id"]);

    // A failing test answers at once, with no backoff and no dead letter
    for _ in 0..2 {
        s.webhook.push_fault(Fault::Status {
            code: 503,
            retry_after: None,
        });
    }
    let (status, _, failed) = api
        .call("POST", "/targets/probe/test", Some(wait), &[])
        .await;
    assert_eq!(status, 200, "{failed}");
    assert_eq!(failed["status"], "failed", "{failed}");
    assert_eq!(failed["last_error"]["code"], "http_503");
    assert_eq!(failed["tries"], 2, "the try and the immediate retry");
    assert!(failed.get("dead_letter").is_none(), "{failed}");
    let dead = s
        .drain("DeliveryDeadLetterQueue", std::time::Duration::from_secs(2))
        .await
        .expect("drain");
    assert!(dead.is_empty(), "no dead letter for a test");

    // Without waiting, the answer is the queued attempt to poll
    let (status, headers, queued) = api.call("POST", "/targets/probe/test", None, &[]).await;
    assert_eq!(status, 202, "{queued}");
    assert!(headers.get("location").is_some());
    let poll = format!("/attempts/{}", queued["id"].as_str().expect("id"));
    let mut settled = Value::Null;
    for _ in 0..120 {
        let (_, _, a) = api.call("GET", &poll, None, &[]).await;
        if a["status"] == "delivered" {
            settled = a;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    assert_eq!(settled["kind"], "test", "{settled}");

    // Tests leave the target as it was: disabled, no streak, no version bump
    let (_, _, t) = api.call("GET", "/targets/probe", None, &[]).await;
    assert_eq!(t["active"], false);
    assert_eq!(t["consecutive_failures"], 0);
    assert_eq!(t["version"], 2, "created, then disabled");
    // ... and send no outcome events
    let outcomes = s
        .drain("OutcomesQueue", std::time::Duration::from_secs(2))
        .await
        .expect("drain");
    assert!(outcomes.is_empty(), "tests are not reported");

    // Bad requests
    let (status, _, p) = api
        .call(
            "POST",
            "/targets/probe/test",
            Some(json!({"wait_seconds": 99})),
            &[],
        )
        .await;
    assert_eq!((status, p["code"].as_str()), (400, Some("invalid_wait")));
    let (status, _, _) = api.call("POST", "/targets/nope/test", None, &[]).await;
    assert_eq!(status, 404);
    s.down().await;
}
