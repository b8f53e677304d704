//! SES's mailbox simulator for the local stack: an HTTP proxy in front of
//! moto's SES v2 (deliver reaches it through `AWS_ENDPOINT_URL_SESV2`)
//! that, for every message moto accepts, publishes the events SES
//! documents for its recipients, as SES's event JSON inside an SNS
//! `Notification` envelope, onto the feedback queue after a short delay:
//!
//! | recipient | events |
//! |---|---|
//! | `success@simulator.amazonses.com` | Send, Delivery |
//! | `bounce@…` | Send, Bounce (Permanent, General, 5.1.1) |
//! | `ooto@…` | Send, Delivery (the auto-reply goes to the sender) |
//! | `complaint@…` | Send, Delivery, Complaint (abuse) |
//! | `suppressionlist@…` | Send, Bounce (Permanent, OnAccountSuppressionList) |
//! | any other address | Send, Delivery |
//!
//! (<https://docs.aws.amazon.com/ses/latest/dg/send-an-email-from-console.html#send-email-simulator>;
//! a `+label` after the local part is allowed, as SES allows it.) Each
//! event carries the send's message tags and `ses:configuration-set`, as
//! SES's do. Faults: every event twice, or the events of a message in
//! reverse order.

use anyhow::Result;
use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinHandle;

/// The simulator's domain.
pub const SIMULATOR_DOMAIN: &str = "simulator.amazonses.com";

/// One send the simulator saw accepted.
#[derive(Debug, Clone)]
pub struct SimulatedSend {
    pub message_id: String,
    pub destinations: Vec<String>,
    /// Message tags (`EmailTags`) as sent.
    pub tags: Vec<(String, String)>,
    pub configuration_set: Option<String>,
    /// The raw MIME message.
    pub raw: String,
}

struct Shared {
    upstream: String,
    client: reqwest::Client,
    sqs: aws_sdk_sqs::Client,
    queue_url: String,
    topic_arn: String,
    delay: Duration,
    duplicate: AtomicBool,
    reverse: AtomicBool,
    sends: Mutex<Vec<SimulatedSend>>,
}

/// A running simulator.
pub struct SesSimulator {
    /// Base URL for `AWS_ENDPOINT_URL_SESV2`.
    pub url: String,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl SesSimulator {
    /// Starts on an ephemeral port, forwarding to `upstream` (moto) and
    /// publishing to `queue_url` as if from `topic_arn`.
    pub async fn start(
        upstream: &str,
        sqs: aws_sdk_sqs::Client,
        queue_url: &str,
        topic_arn: &str,
    ) -> Result<Self> {
        let shared = Arc::new(Shared {
            upstream: upstream.trim_end_matches('/').to_owned(),
            client: reqwest::Client::new(),
            sqs,
            queue_url: queue_url.to_owned(),
            topic_arn: topic_arn.to_owned(),
            delay: Duration::from_millis(300),
            duplicate: AtomicBool::new(false),
            reverse: AtomicBool::new(false),
            sends: Mutex::new(Vec::new()),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let state = shared.clone();
        let app = axum::Router::new().fallback(
            move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let state = state.clone();
                async move { forward(&state, method, uri, headers, body).await }
            },
        );
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { url, shared, task })
    }

    /// Publishes every event twice (SNS and SQS deliver at least once).
    pub fn duplicate(&self, on: bool) {
        self.shared.duplicate.store(on, Ordering::Relaxed);
    }

    /// Publishes a message's events last first (a `Delivery` after its
    /// `Bounce`).
    pub fn reverse(&self, on: bool) {
        self.shared.reverse.store(on, Ordering::Relaxed);
    }

    /// The sends moto accepted through the simulator so far.
    pub fn sends(&self) -> Vec<SimulatedSend> {
        self.shared
            .sends
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default()
    }
}

impl Drop for SesSimulator {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn forward(
    state: &Arc<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let mut request = state
        .client
        .request(method.clone(), format!("{}{path}", state.upstream))
        .body(body.clone());
    for (name, value) in &headers {
        if name != axum::http::header::HOST && name != axum::http::header::CONTENT_LENGTH {
            request = request.header(name, value);
        }
    }
    let answer = match request.send().await {
        Ok(a) => a,
        Err(e) => return (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    };
    let status = answer.status();
    let answer_headers = answer.headers().clone();
    let bytes = answer.bytes().await.unwrap_or_default();
    if method == Method::POST && uri.path() == "/v2/email/outbound-emails" && status.is_success() {
        let sent = serde_json::from_slice::<Value>(&body)
            .ok()
            .zip(serde_json::from_slice::<Value>(&bytes).ok())
            .and_then(|(request, answer)| simulated(&request, &answer));
        if let Some(send) = sent {
            if let Ok(mut s) = state.sends.lock() {
                s.push(send.clone());
            }
            let state = state.clone();
            tokio::spawn(async move { publish(&state, &send).await });
        }
    }
    let mut response = (status, bytes).into_response();
    for (name, value) in &answer_headers {
        if name != axum::http::header::CONTENT_LENGTH
            && name != axum::http::header::TRANSFER_ENCODING
        {
            response.headers_mut().insert(name, value.clone());
        }
    }
    response
}

/// What an accepted `SendEmail` (SES v2 JSON) sent.
fn simulated(request: &Value, answer: &Value) -> Option<SimulatedSend> {
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let d = &request["Destination"];
    let mut destinations = strings(&d["ToAddresses"]);
    destinations.extend(strings(&d["CcAddresses"]));
    destinations.extend(strings(&d["BccAddresses"]));
    let tags = request["EmailTags"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|t| {
                    Some((
                        t["Name"].as_str()?.to_owned(),
                        t["Value"].as_str()?.to_owned(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    let raw = request["Content"]["Raw"]["Data"]
        .as_str()
        .and_then(|b64| {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD.decode(b64).ok()
        })
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    Some(SimulatedSend {
        message_id: answer["MessageId"].as_str()?.to_owned(),
        destinations,
        tags,
        configuration_set: request["ConfigurationSetName"].as_str().map(str::to_owned),
        raw,
    })
}

/// What the simulator does with mail to `address`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Delivered,
    Bounced,
    Complained,
    OnSuppressionList,
}

fn fate(address: &str) -> Fate {
    let lower = address.to_ascii_lowercase();
    let Some((local, domain)) = lower.rsplit_once('@') else {
        return Fate::Delivered;
    };
    if domain != SIMULATOR_DOMAIN {
        return Fate::Delivered;
    }
    match local.split('+').next().unwrap_or(local) {
        "bounce" => Fate::Bounced,
        "complaint" => Fate::Complained,
        "suppressionlist" => Fate::OnSuppressionList,
        _ => Fate::Delivered,
    }
}

fn now() -> String {
    jiff::Timestamp::now().to_string()
}

/// The SES records of one send, in the order SES would publish them.
pub fn records(send: &SimulatedSend) -> Vec<Value> {
    let mut tags = serde_json::Map::new();
    for (name, value) in &send.tags {
        tags.insert(name.clone(), json!([value]));
    }
    if let Some(set) = &send.configuration_set {
        tags.insert("ses:configuration-set".into(), json!([set]));
    }
    tags.insert("ses:source-ip".into(), json!(["127.0.0.1"]));
    tags.insert("ses:from-domain".into(), json!(["reports.example.com"]));
    let mail = json!({
        "timestamp": now(),
        "source": "reports@reports.example.com",
        "sourceArn": "arn:aws:ses:us-east-1:123456789012:identity/reports.example.com",
        "sendingAccountId": "123456789012",
        "messageId": send.message_id,
        "destination": send.destinations,
        "headersTruncated": false,
        "tags": tags,
    });
    let by = |f: Fate| -> Vec<&String> {
        send.destinations
            .iter()
            .filter(|d| fate(d) == f || (f == Fate::Delivered && fate(d) == Fate::Complained))
            .collect()
    };
    let mut out = vec![json!({"eventType": "Send", "mail": mail, "send": {}})];
    let delivered = by(Fate::Delivered);
    if !delivered.is_empty() {
        out.push(json!({
            "eventType": "Delivery",
            "mail": mail,
            "delivery": {
                "timestamp": now(),
                "processingTimeMillis": 320,
                "recipients": delivered,
                "smtpResponse": "250 2.6.0 Message received",
                "reportingMTA": "a8-70.smtp-out.amazonses.com",
            }
        }));
    }
    for (fate, subtype, status, code) in [
        (
            Fate::Bounced,
            "General",
            "5.1.1",
            "smtp; 550 5.1.1 user unknown",
        ),
        (
            Fate::OnSuppressionList,
            "OnAccountSuppressionList",
            "5.1.1",
            "Amazon SES did not send the message to this address because it is on the suppression list for your account.",
        ),
    ] {
        let bounced = by(fate);
        if bounced.is_empty() {
            continue;
        }
        out.push(json!({
            "eventType": "Bounce",
            "mail": mail,
            "bounce": {
                "bounceType": "Permanent",
                "bounceSubType": subtype,
                "bouncedRecipients": bounced.iter().map(|a| json!({
                    "emailAddress": a, "action": "failed", "status": status, "diagnosticCode": code,
                })).collect::<Vec<_>>(),
                "timestamp": now(),
                "feedbackId": format!("{}-bounce", send.message_id),
                "reportingMTA": "dns; amazonses.com",
            }
        }));
    }
    let complained = send
        .destinations
        .iter()
        .filter(|d| fate(d) == Fate::Complained)
        .collect::<Vec<_>>();
    if !complained.is_empty() {
        out.push(json!({
            "eventType": "Complaint",
            "mail": mail,
            "complaint": {
                "complainedRecipients": complained.iter().map(|a| json!({"emailAddress": a})).collect::<Vec<_>>(),
                "timestamp": now(),
                "feedbackId": format!("{}-complaint", send.message_id),
                "userAgent": "Amazon SES Mailbox Simulator",
                "complaintFeedbackType": "abuse",
                "arrivalDate": now(),
            }
        }));
    }
    out
}

/// An SES record in the SNS envelope SNS delivers to an SQS subscriber
/// (raw message delivery off).
pub fn envelope(topic_arn: &str, record: &Value) -> String {
    json!({
        "Type": "Notification",
        "MessageId": uuid::Uuid::new_v4().to_string(),
        "TopicArn": topic_arn,
        "Message": record.to_string(),
        "Timestamp": now(),
        "SignatureVersion": "1",
        "Signature": "bG9jYWwgc2ltdWxhdG9y",
        "SigningCertURL": "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-local.pem",
        "UnsubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe",
    })
    .to_string()
}

async fn publish(state: &Shared, send: &SimulatedSend) {
    tokio::time::sleep(state.delay).await;
    let mut records = records(send);
    if state.reverse.load(Ordering::Relaxed) {
        records.reverse();
    }
    let copies = if state.duplicate.load(Ordering::Relaxed) {
        2
    } else {
        1
    };
    for record in &records {
        let body = envelope(&state.topic_arn, record);
        for _ in 0..copies {
            for _ in 0..5 {
                let sent = state
                    .sqs
                    .send_message()
                    .queue_url(&state.queue_url)
                    .message_body(&body)
                    .send()
                    .await;
                if sent.is_ok() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_simulator_address_gets_the_events_ses_documents() {
        let send = SimulatedSend {
            message_id: "m-1".into(),
            destinations: vec![
                "success@simulator.amazonses.com".into(),
                "bounce+x@simulator.amazonses.com".into(),
                "complaint@simulator.amazonses.com".into(),
                "suppressionlist@simulator.amazonses.com".into(),
                "ooto@simulator.amazonses.com".into(),
                "person@example.com".into(),
            ],
            tags: vec![("rd_attempt".into(), "a".into())],
            configuration_set: Some("set".into()),
            raw: String::new(),
        };
        let r = records(&send);
        let kinds: Vec<&str> = r
            .iter()
            .map(|e| e["eventType"].as_str().unwrap_or(""))
            .collect();
        assert_eq!(kinds, ["Send", "Delivery", "Bounce", "Bounce", "Complaint"]);
        assert_eq!(
            r[1]["delivery"]["recipients"],
            json!([
                "success@simulator.amazonses.com",
                "complaint@simulator.amazonses.com",
                "ooto@simulator.amazonses.com",
                "person@example.com"
            ])
        );
        assert_eq!(r[3]["bounce"]["bounceSubType"], "OnAccountSuppressionList");
        assert_eq!(r[0]["mail"]["tags"]["rd_attempt"], json!(["a"]));
        assert_eq!(
            r[0]["mail"]["tags"]["ses:configuration-set"],
            json!(["set"])
        );
        let parsed = shared::contract::ses_event::parse(
            &envelope("arn:t", &r[2]),
            &shared::contract::ses_event::Expect {
                topic_arn: Some("arn:t"),
                configuration_set: Some("set"),
            },
        )
        .expect("the stack's parser takes it");
        assert_eq!(parsed.news.len(), 1);
    }
}
