//! One-click unsubscribe (RFC 8058), served by the links function at
//! `/u/<token>`. Every report email carries
//! `List-Unsubscribe: <https://…/u/<token>>` and
//! `List-Unsubscribe-Post: List-Unsubscribe=One-Click`; the token is signed
//! with the link keys and names one target and one recipient (by digest).
//!
//! * `POST` with `List-Unsubscribe=One-Click` (as mail providers send it:
//!   form-encoded, no cookie, no login) unsubscribes at once.
//! * `GET` shows a page with a button (a `GET` never changes anything, so
//!   link scanners that fetch URLs unsubscribe no one); the button's `POST`
//!   unsubscribes and shows an undo button; undo lifts only an
//!   unsubscribe (never a bounce's or a complaint's suppression).
//!
//! A tampered token is refused (403). Tokens do not expire: once the target
//! is deleted, or no longer mails the address, the page says so (410).
//! Operators subscribe an address again through the API.

use super::links::{KeyRing, Refusal, Visitor, respond};
use crate::domain::Timestamp;
use crate::domain::link::address_digest;
use crate::domain::suppression::{Suppression, SuppressionReason, address_key};
use crate::domain::target::TargetConfig;
use crate::store::{SuppressionStore, TargetStore};
use aws_lambda_events::http::{HeaderMap, HeaderValue};
use aws_lambda_events::lambda_function_urls::{
    LambdaFunctionUrlRequest, LambdaFunctionUrlResponse,
};
use tracing::{info, warn};

/// Where unsubscribe links point: `<base>u/<token>`.
pub const PATH_PREFIX: &str = "/u/";

/// The one-click body RFC 8058 prescribes.
pub const ONE_CLICK: &str = "List-Unsubscribe=One-Click";

/// What unsubscribing reads and writes.
pub struct Stores {
    pub targets: Box<dyn TargetStore>,
    pub suppressions: Box<dyn SuppressionStore>,
    /// Counts unsubscribes (`EmailEvents`, `Event` `unsubscribe`).
    pub metrics: crate::metrics::Metrics,
}

/// What a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ask {
    /// The page with the button.
    Show,
    /// Unsubscribe: a mail provider's one-click POST, or the page's button.
    Unsubscribe { one_click: bool },
    /// Undo an unsubscribe.
    Undo,
}

/// Reads the method and the form body.
fn ask(method: &str, req: &LambdaFunctionUrlRequest) -> Option<Ask> {
    match method {
        "GET" | "HEAD" => return Some(Ask::Show),
        "POST" => {}
        _ => return None,
    }
    let raw = req.body.as_deref().unwrap_or("");
    let body = if req.is_base64_encoded {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD
            .decode(raw)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .unwrap_or_default()
    } else {
        raw.to_owned()
    };
    let pairs: Vec<(String, String)> = url::form_urlencoded::parse(body.as_bytes())
        .into_owned()
        .collect();
    let has = |k: &str, v: &str| pairs.iter().any(|(a, b)| a == k && b == v);
    if has("List-Unsubscribe", "One-Click") {
        Some(Ask::Unsubscribe { one_click: true })
    } else if has("action", "undo") {
        Some(Ask::Undo)
    } else {
        // The page's button, or any other POST: RFC 8058 receivers act on
        // the POST itself.
        Some(Ask::Unsubscribe { one_click: false })
    }
}

/// Serves `/u/<token>`.
pub async fn handle(
    keys: &KeyRing,
    stores: &Stores,
    method: &str,
    token: &str,
    req: &LambdaFunctionUrlRequest,
) -> LambdaFunctionUrlResponse {
    let Some(ask) = ask(method, req) else {
        return respond(405, None, "method not allowed");
    };
    let who = Visitor::of(req);
    let (target_id, digest) = match keys.verify_unsubscribe(token).await {
        Ok(claim) => claim,
        Err(Refusal::KeysUnavailable(error)) => {
            warn!(%error, "unsubscribe not checked: keys unavailable");
            return page(
                503,
                "Please try again",
                "We could not check this link just now.",
                None,
            );
        }
        Err(Refusal::Link(e)) => {
            warn!(reason = %e, source_ip = %who.ip, user_agent = %who.agent, "unsubscribe link refused");
            return page(
                403,
                "This link is not valid",
                "Use the link in the email as it came.",
                None,
            );
        }
    };
    let address = match recipient(stores, &target_id, &digest).await {
        Ok(Some(a)) => a,
        Ok(None) => {
            return page(
                410,
                "Nothing to unsubscribe from",
                "This address no longer receives this report.",
                None,
            );
        }
        Err(()) => {
            return page(
                503,
                "Please try again",
                "We could not look this up just now.",
                None,
            );
        }
    };
    match ask {
        Ask::Show => page(
            200,
            "Unsubscribe from this report?",
            "You will no longer receive this report by email at this address.",
            Some(("unsubscribe", "Unsubscribe")),
        ),
        Ask::Unsubscribe { one_click } => {
            let entry = Suppression {
                target_id: target_id.clone(),
                address: address.clone(),
                reason: SuppressionReason::Unsubscribe,
                detail: Some(
                    if one_click {
                        "one-click (RFC 8058)"
                    } else {
                        "unsubscribe page"
                    }
                    .into(),
                ),
                by: "recipient".into(),
                attempt_id: None,
                at: Timestamp::now(),
            };
            match stores.suppressions.suppress(&entry).await {
                Ok(new) => {
                    if new {
                        stores.metrics.count(
                            crate::metrics::Metric::EmailEvents,
                            &[(crate::metrics::Dim::Event, "unsubscribe")],
                        );
                    }
                    info!(%target_id, address_digest = %digest, one_click, new, source_ip = %who.ip, user_agent = %who.agent, "recipient unsubscribed");
                    page(
                        200,
                        "You are unsubscribed",
                        "You will no longer receive this report at this address.",
                        Some(("undo", "Undo: keep receiving it")),
                    )
                }
                Err(e) => {
                    warn!(error = %e, "unsubscribe not recorded");
                    page(
                        503,
                        "Please try again",
                        "We could not record this just now.",
                        None,
                    )
                }
            }
        }
        Ask::Undo => {
            match stores
                .suppressions
                .unsuppress(&target_id, &address, Some(SuppressionReason::Unsubscribe))
                .await
            {
                Ok(lifted) => {
                    info!(%target_id, address_digest = %digest, lifted, source_ip = %who.ip, "unsubscribe undone");
                    page(
                        200,
                        "You are subscribed again",
                        "You will receive this report at this address again.",
                        Some(("unsubscribe", "Unsubscribe")),
                    )
                }
                Err(e) => {
                    warn!(error = %e, "undo not recorded");
                    page(
                        503,
                        "Please try again",
                        "We could not record this just now.",
                        None,
                    )
                }
            }
        }
    }
}

/// The recipient of `target_id` whose address has `digest`: `Ok(None)`
/// when the target is gone or no longer mails it.
async fn recipient(stores: &Stores, target_id: &str, digest: &str) -> Result<Option<String>, ()> {
    let target = match stores.targets.get_target(target_id).await {
        Ok(Some(t)) => t,
        Ok(None) => return Ok(None),
        Err(e) => {
            warn!(error = %e, "target not read");
            return Err(());
        }
    };
    let TargetConfig::Email(config) = &target.config else {
        return Ok(None);
    };
    Ok(config
        .to
        .iter()
        .chain(&config.cc)
        .chain(&config.bcc)
        .map(|a| address_key(a.as_str()))
        .find(|a| address_digest(a) == digest))
}

/// A small page; `button` posts `action=<value>` back to the same URL.
/// Only fixed text goes in, so nothing needs escaping.
fn page(
    status: i64,
    title: &str,
    text: &str,
    button: Option<(&str, &str)>,
) -> LambdaFunctionUrlResponse {
    let form = button
        .map(|(action, label)| {
            format!(
                "<form method=\"post\"><input type=\"hidden\" name=\"action\" value=\"{action}\">\
                 <button type=\"submit\">{label}</button></form>"
            )
        })
        .unwrap_or_default();
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\"><meta name=\"robots\" content=\"noindex\">\
         <title>{title}</title><style>body{{font-family:sans-serif;max-width:32em;margin:4em auto;padding:0 1em}}\
         button{{font-size:1em;padding:.5em 1em}}</style></head>\
         <body><h1>{title}</h1><p>{text}</p>{form}</body></html>"
    );
    let mut r = respond(status, None, "");
    let mut headers = HeaderMap::new();
    headers.insert(
        "content-type",
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert("cache-control", HeaderValue::from_static("no-store"));
    headers.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    headers.insert("x-robots-tag", HeaderValue::from_static("noindex"));
    headers.insert(
        "content-security-policy",
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'",
        ),
    );
    r.headers = headers;
    r.body = Some(html);
    r
}
