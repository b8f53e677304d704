//! Access and limits of the operator API end to end: a read-only caller
//! is refused on every write route, and oversize input is refused with a
//! code, through the real functions behind their local function URLs.

use crate::api::{Api, webhook};
use report_delivery_tests::{running_stack, webhook_targets};
use serde_json::{Value, json};

#[tokio::test]
async fn a_read_only_caller_is_refused_on_every_write_route_and_changes_nothing() {
    let s = running_stack("api-read-only", &[]).await;
    s.seed(&webhook_targets(
        "rpt-ro",
        &[("ro-1", "/hooks/ro-1", false, true)],
    ))
    .await
    .expect("seeded");
    let (admin, reader) = (Api::of(&s), Api::read_only(&s));
    let before = admin.call("GET", "/targets/ro-1", None, &[]).await;
    assert_eq!(before.0, 200, "{}", before.2);

    // Every route that is not a GET, from the API's own route table, with
    // bodies that would be valid on the admin URL.
    let mut refused = 0;
    for (method, path, _) in shared::handlers::api::routes() {
        if method == "GET" {
            continue;
        }
        let path = path
            .replace("{id}", "ro-1")
            .replace("{stage}", "delivery")
            .replace("{address}", "a%40example.com");
        let body = match (method, path.as_str()) {
            ("POST", "/targets") => Some(webhook("ro-new", "http://127.0.0.1:9/hook")),
            ("PUT", "/targets/ro-1") => Some(webhook("ro-1", "http://127.0.0.1:9/other")),
            ("POST", "/connections") => Some(json!({"id": "ro-conn", "kind": "webhook_signing"})),
            _ => Some(json!({})),
        };
        let (status, _, problem) = reader.call(method, &path, body, &[("if-match", "1")]).await;
        assert_eq!(
            status, 403,
            "{method} {path} on the read-only URL: {problem}"
        );
        assert_eq!(problem["code"], "read_only", "{method} {path}: {problem}");
        refused += 1;
    }
    assert!(refused >= 10, "only {refused} write routes were tried");

    // Nothing changed: the target is as it was, none was created, and the
    // reader still reads.
    let after = admin.call("GET", "/targets/ro-1", None, &[]).await;
    assert_eq!(after.2, before.2, "the read-only calls changed the target");
    let created = admin.call("GET", "/targets/ro-new", None, &[]).await;
    assert_eq!(created.0, 404, "{}", created.2);
    let read = reader.call("GET", "/targets/ro-1", None, &[]).await;
    assert_eq!((read.0, &read.2), (200, &before.2));
    let health = reader.call("GET", "/health", None, &[]).await;
    assert!(matches!(health.0, 200 | 503), "{}", health.2);
    // An unsigned call is refused by the function URL itself, as on AWS.
    let unsigned = reqwest::Client::new()
        .get(format!("{}health", reader.base))
        .send()
        .await
        .expect("answers");
    assert_eq!(unsigned.status().as_u16(), 403);
}

#[tokio::test]
async fn input_limits_are_refused_with_a_code_and_nothing_is_stored() {
    let s = running_stack("api-limits", &[]).await;
    let api = Api::of(&s);
    let addresses = |n: usize| {
        (0..n)
            .map(|i| format!("r{i}@example.com"))
            .collect::<Vec<_>>()
    };
    let email = |config: Value| json!({"id": "lim-email", "report_id": "rpt-lim", "target_type": "email", "config": config});
    // 51 recipients (SES takes 50 per message), a 201-character subject.
    for (config, said) in [
        (
            json!({"to": addresses(40), "bcc": addresses(11)}),
            "51 recipients",
        ),
        (
            json!({"to": ["a@example.com"], "subject": "s".repeat(201)}),
            "201 characters",
        ),
    ] {
        let (status, _, p) = api.call("POST", "/targets", Some(email(config)), &[]).await;
        assert_eq!(
            (status, p["code"].as_str()),
            (400, Some("invalid_config")),
            "{p}"
        );
        assert!(p["detail"].as_str().unwrap_or("").contains(said), "{p}");
    }
    let (status, _, _) = api.call("GET", "/targets/lim-email", None, &[]).await;
    assert_eq!(status, 404, "a refused target was stored");

    // A body over the limit is refused before any route reads it.
    let huge = json!({"id": "lim-big", "report_id": "rpt-lim", "target_type": "webhook",
        "config": {"url": "https://example.com/"}, "pad": "x".repeat(70 * 1024)});
    let (status, _, p) = api.call("POST", "/targets", Some(huge), &[]).await;
    assert_eq!(
        (status, p["code"].as_str()),
        (413, Some("body_too_large")),
        "{p}"
    );

    // rotate checks its id like every other route.
    let secret = |n: u8| {
        use base64::Engine as _;
        format!(
            "whsec_{}",
            base64::engine::general_purpose::STANDARD.encode([n; 32])
        )
    };
    let bad_id = format!("/connections/{}/rotate", "x".repeat(200));
    let (status, _, p) = api
        .call("POST", &bad_id, Some(json!({"secret": secret(1)})), &[])
        .await;
    assert_eq!(status, 404, "{p}");

    // At most 5 retiring secrets: five rotations keep five, a sixth is refused.
    let (status, _, c) = api
        .call(
            "POST",
            "/connections",
            Some(json!({"id": "lim-sign", "kind": "webhook_signing", "secrets": [secret(2)]})),
            &[],
        )
        .await;
    assert_eq!(status, 201, "{c}");
    for n in 3..8 {
        let (status, _, c) = api
            .call(
                "POST",
                "/connections/lim-sign/rotate",
                Some(json!({"secret": secret(n)})),
                &[],
            )
            .await;
        assert_eq!(status, 200, "rotation {n}: {c}");
    }
    let (status, _, p) = api
        .call(
            "POST",
            "/connections/lim-sign/rotate",
            Some(json!({"secret": secret(9)})),
            &[],
        )
        .await;
    assert_eq!(
        (status, p["code"].as_str()),
        (409, Some("too_many_secrets")),
        "{p}"
    );
    let (_, _, c) = api.call("GET", "/connections/lim-sign", None, &[]).await;
    assert_eq!(c["retiring_until"].as_array().map(Vec::len), Some(5), "{c}");
}
