//! One-click unsubscribe (RFC 8058) through the real parts: the link comes
//! from the List-Unsubscribe header of a sent copy (read with an
//! independent MIME parser), is served by the links function over the
//! local stack's HTTPS front, and is POSTed as a mail provider posts it
//! (form-encoded `List-Unsubscribe=One-Click`, no cookie). The recipient is
//! suppressed for that target only; the next execution skips them; the
//! page's undo brings them back; a tampered token is refused, and once the
//! target is deleted the link says so.

use crate::api::Api;
use mail_parser::MessageParser;
use report_delivery_tests::{run_sample, running_stack, seed_target};
use serde_json::json;
use shared::domain::recipient::RecipientStatus;
use shared::domain::suppression::SuppressionReason;
use shared::store::SuppressionStore;

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(local::tls::CERT_PEM).expect("the local certificate"),
        )
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

/// The List-Unsubscribe URL of `address`'s copy of the execution.
async fn link_of(s: &local::stack::LocalStack, execution_id: &str, address: &str) -> String {
    let sent = s.emails(execution_id).await.expect("moto state");
    // moto lists each copy's Destination plus the headers' To and Cc:
    // the copy of a Bcc recipient is the one that names them.
    let copy = sent
        .iter()
        .find(|e| e.destinations.iter().any(|d| d == address))
        .unwrap_or_else(|| panic!("no copy for {address}"));
    let m = MessageParser::default()
        .parse(copy.raw.as_bytes())
        .expect("MIME parses");
    let header = m
        .header_raw("List-Unsubscribe")
        .expect("List-Unsubscribe")
        .trim();
    assert_eq!(
        m.header_raw("List-Unsubscribe-Post").map(str::trim),
        Some("List-Unsubscribe=One-Click")
    );
    let url = header
        .trim_start_matches('<')
        .trim_end_matches('>')
        .to_owned();
    assert!(url.starts_with("https://"), "{url}");
    url
}

#[tokio::test]
async fn a_one_click_post_unsubscribes_that_recipient_from_that_target_and_the_page_can_undo_it() {
    let s = running_stack("unsubscribe", &[]).await;
    let only = "bcc-reader@example.com";
    seed_target(
        &s,
        "rpt-unsub",
        "unsub",
        "email",
        json!({"to": ["team@example.com"], "bcc": [only]}),
        None,
        &["pdf"],
    )
    .await;
    seed_target(
        &s,
        "rpt-unsub-other",
        "unsub-other",
        "email",
        json!({"to": [only]}),
        None,
        &["pdf"],
    )
    .await;
    let store = shared::store::dynamo::DynamoStore::new(s.sdk_dynamo(), s.store_tables());
    let (execution_id, attempts) = run_sample(&s, "rpt-unsub", 1).await;
    assert!(
        attempts
            .iter()
            .all(|a| a.status == shared::domain::AttemptStatus::Delivered)
    );
    let url = link_of(&s, &execution_id, only).await;
    let http = client();

    // A GET (a link scanner, or the reader) changes nothing: a page with a
    // button.
    let page = http.get(&url).send().await.expect("links answers");
    assert_eq!(page.status().as_u16(), 200);
    let html = page.text().await.expect("page");
    assert!(
        html.contains("<form method=\"post\"") && html.contains("Unsubscribe"),
        "{html}"
    );
    assert!(store.suppressed("unsub").await.expect("read").is_empty());

    // The mail provider's one-click POST.
    let r = http
        .post(&url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("List-Unsubscribe=One-Click")
        .send()
        .await
        .expect("links answers");
    assert_eq!(r.status().as_u16(), 200);
    assert!(r.headers().get("set-cookie").is_none());
    let which: Vec<_> = store
        .suppressed("unsub")
        .await
        .expect("read")
        .into_iter()
        .collect();
    let whom: Vec<(&str, SuppressionReason, &str)> = which
        .iter()
        .map(|x| (x.address.as_str(), x.reason, x.by.as_str()))
        .collect();
    assert_eq!(
        whom,
        [(only, SuppressionReason::Unsubscribe, "recipient")],
        "that recipient, and no one else"
    );
    let unsubscribed = only.to_owned();
    assert!(
        store
            .suppressed("unsub-other")
            .await
            .expect("read")
            .is_empty(),
        "other reports keep coming"
    );
    let counted = crate::monitoring::sum(
        &crate::monitoring::emitted(&s),
        shared::metrics::Metric::EmailEvents,
        &[("Event", "unsubscribe")],
    );
    assert_eq!(counted, 1.0, "the unsubscribe is counted once");

    // The next execution skips them for that target only.
    let (_, mut next) = run_sample(&s, "rpt-unsub", 1).await;
    next.extend(run_sample(&s, "rpt-unsub-other", 1).await.1);
    let of = |target: &str| {
        next.iter()
            .find(|a| a.delivery_target_id == target)
            .expect("attempt")
            .recipients
            .iter()
            .find(|r| r.address.eq_ignore_ascii_case(&unsubscribed))
            .expect("recorded")
            .status
    };
    assert_eq!(of("unsub"), RecipientStatus::Suppressed);
    assert_ne!(of("unsub-other"), RecipientStatus::Suppressed);

    // The page's undo brings them back (an unsubscribe only).
    let r = http
        .post(&url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("action=undo")
        .send()
        .await
        .expect("links answers");
    assert_eq!(r.status().as_u16(), 200);
    assert!(r.text().await.expect("page").contains("subscribed again"));
    assert!(store.suppressed("unsub").await.expect("read").is_empty());

    // A tampered token is refused; a deleted target's link says so.
    let (head, tail) = url.rsplit_once('.').expect("token parts");
    let flipped = if tail.starts_with('A') { "B" } else { "A" };
    let tampered = format!("{head}.{flipped}{}", &tail[1..]);
    let r = http
        .post(&tampered)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("List-Unsubscribe=One-Click")
        .send()
        .await
        .expect("links answers");
    assert_eq!(r.status().as_u16(), 403);
    assert!(store.suppressed("unsub").await.expect("read").is_empty());
    let (status, _, _) = Api::of(&s)
        .call("DELETE", "/targets/unsub", None, &[])
        .await;
    assert_eq!(status, 204);
    let r = http.get(&url).send().await.expect("links answers");
    assert_eq!(r.status().as_u16(), 410);
    s.down().await;
}
