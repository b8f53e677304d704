//! Download links through the links function behind the runner's
//! function-URL front: valid links redirect to a fresh presigned URL;
//! tampered, forged, expired and out-of-prefix links get 403.

use report_delivery_tests::{
    download, link_status, rendered, run_sample, running_stack, webhook_targets,
};
use shared::domain::{LinkSigner, Timestamp};

#[tokio::test]
async fn links_redirect_while_valid_and_are_refused_when_tampered_or_expired() {
    let s = running_stack("links", &[]).await;
    s.seed(&webhook_targets(
        "rpt-links",
        &[("hook", "/h", true, false)],
    ))
    .await
    .expect("seed");
    let (execution_id, _) = run_sample(&s, "rpt-links", 1).await;
    let event = s.webhook.received()[0].json().expect("event");
    let link = event["files"][0]["download_url"]
        .as_str()
        .expect("link")
        .to_owned();
    let base = s
        .runner
        .as_ref()
        .and_then(|r| r.function_urls.get("LinksFunction"))
        .expect("links function URL")
        .clone();
    assert!(link.starts_with(&base), "{link} is served by {base}");
    // Valid: each use answers with a fresh presigned URL to the PDF
    let (e, pdf) = rendered(&s, &execution_id).await;
    assert_eq!(download(&link).await, pdf);
    assert_eq!(download(&link).await, pdf, "links can be used again");
    // Tampered: one character of the payload changed
    let token = link.rsplit('/').next().expect("token");
    let mut chars: Vec<char> = token.chars().collect();
    chars[5] = if chars[5] == 'A' { 'B' } else { 'A' };
    let tampered = format!("{base}d/{}", chars.into_iter().collect::<String>());
    assert_eq!(link_status(&tampered).await, 403);
    // Signed for another object by someone without the key
    let forged = LinkSigner::from_list("an-attacker-key-that-is-long-enough-0123")
        .expect("key")
        .issue(&e.pdf.key, Timestamp::now().plus(time::Duration::days(1)));
    assert_eq!(link_status(&format!("{base}d/{forged}")).await, 403);
    // Expired: signed with the stack's own key (from Secrets Manager), one
    // second in the past
    let own = LinkSigner::from_list(&s.link_keys().await.expect("secret")).expect("key");
    let expired = own.issue(
        &e.pdf.key,
        Timestamp::now().plus(time::Duration::seconds(-1)),
    );
    assert_eq!(link_status(&format!("{base}d/{expired}")).await, 403);
    // And the same key with a future expiry works, so 403 was the expiry
    let fresh = own.issue(&e.pdf.key, Timestamp::now().plus(time::Duration::hours(1)));
    assert_eq!(link_status(&format!("{base}d/{fresh}")).await, 302);
    // A genuine signature over a key outside reports/ is still refused
    let outside = own.issue(
        "incoming/weekly.csv",
        Timestamp::now().plus(time::Duration::hours(1)),
    );
    assert_eq!(link_status(&format!("{base}d/{outside}")).await, 403);
    // HEAD is refused too (the presigned URL would be a GET URL)
    let head = reqwest::Client::new()
        .head(&link)
        .send()
        .await
        .expect("answers");
    assert_eq!(head.status().as_u16(), 405);
    assert_eq!(link_status(&format!("{base}other")).await, 404);
    s.down().await;
}
