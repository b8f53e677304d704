//! SES event-publishing records as SNS brings them to the feedback queue:
//! an SNS `Notification` envelope whose `Message` is the SES record
//! (<https://docs.aws.amazon.com/ses/latest/dg/event-publishing-retrieving-sns-contents.html>).
//!
//! Parsing checks where the record comes from (the stack's own topic and
//! configuration set) and what it names (the message id SES gave at send,
//! and the attempt and target tags deliver set), then turns it into
//! [`Feedback`], one per recipient. Free text (diagnostic codes, SMTP
//! answers) is kept as detail and never decides anything.

use crate::domain::recipient::BounceType;
use crate::domain::{Feedback, RecipientStatus, Timestamp};
use serde::Deserialize;
use std::collections::BTreeMap;

/// The largest SNS envelope taken. SES truncates a record's headers at
/// about 10 KB, so real records are far smaller.
pub const MAX_EVENT_BYTES: usize = 64 * 1024;

/// The message tag deliver sets to the attempt id (SES `EmailTags`).
pub const TAG_ATTEMPT: &str = "rd_attempt";
/// The message tag deliver sets to the target id.
pub const TAG_TARGET: &str = "rd_target";
/// The tag SES adds with the configuration set's name.
pub const TAG_CONFIGURATION_SET: &str = "ses:configuration-set";

/// Most recipients read from one record (SES sends to at most 50).
const MAX_RECIPIENTS: usize = 50;

/// Which SES event a record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Send,
    Delivery,
    Bounce,
    Complaint,
    Reject,
    DeliveryDelay,
    /// Open, Click, Rendering Failure, Subscription: not subscribed to by
    /// the stack, counted and acknowledged if one comes.
    Other,
}

impl EventKind {
    /// The metric and log name.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Send => "send",
            EventKind::Delivery => "delivery",
            EventKind::Bounce => "bounce",
            EventKind::Complaint => "complaint",
            EventKind::Reject => "reject",
            EventKind::DeliveryDelay => "delivery_delay",
            EventKind::Other => "other",
        }
    }
}

/// What the feedback queue expects of a record.
#[derive(Debug, Clone, Default)]
pub struct Expect<'a> {
    /// The stack's SNS topic; `None` takes any (local tests).
    pub topic_arn: Option<&'a str>,
    /// The stack's configuration set; `None` takes any.
    pub configuration_set: Option<&'a str>,
}

/// One parsed record.
#[derive(Debug, Clone, PartialEq)]
pub struct SesEvent {
    pub kind: EventKind,
    /// The SES message id.
    pub message_id: String,
    /// From the `rd_attempt` tag, when the send was ours.
    pub attempt_id: Option<String>,
    /// From the `rd_target` tag.
    pub target_id: Option<String>,
    /// One per recipient the record names (empty for `Other`).
    pub news: Vec<Feedback>,
}

/// Why a record is refused. Each refusal has a code and a reason; none
/// can ever be applied, so it is refused on its first receive.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {reason}")]
pub struct Refused {
    pub code: &'static str,
    pub reason: String,
}

fn refused(code: &'static str, reason: impl Into<String>) -> Refused {
    Refused {
        code,
        reason: reason.into(),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Envelope {
    #[serde(rename = "Type")]
    kind: String,
    topic_arn: Option<String>,
    message: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Record {
    event_type: Option<String>,
    notification_type: Option<String>,
    mail: Mail,
    bounce: Option<Bounce>,
    complaint: Option<Complaint>,
    delivery: Option<Delivery>,
    reject: Option<Reject>,
    delivery_delay: Option<DeliveryDelay>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Mail {
    message_id: String,
    timestamp: Option<String>,
    #[serde(default)]
    destination: Vec<String>,
    #[serde(default)]
    tags: BTreeMap<String, Vec<String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Bounce {
    bounce_type: String,
    bounce_sub_type: Option<String>,
    bounced_recipients: Vec<Addressed>,
    timestamp: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Addressed {
    email_address: String,
    status: Option<String>,
    diagnostic_code: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Complaint {
    complained_recipients: Vec<Addressed>,
    timestamp: Option<String>,
    complaint_feedback_type: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Delivery {
    recipients: Vec<String>,
    timestamp: Option<String>,
    smtp_response: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Reject {
    reason: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeliveryDelay {
    delayed_recipients: Vec<Addressed>,
    timestamp: Option<String>,
    delay_type: Option<String>,
}

/// The SNS `MessageId` of an envelope, if it reads as one: copies that SNS
/// or SQS delivered twice carry the same.
pub fn notification_id(body: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct Id {
        #[serde(rename = "MessageId")]
        message_id: String,
    }
    if body.len() > MAX_EVENT_BYTES {
        return None;
    }
    serde_json::from_str::<Id>(body).ok().map(|i| i.message_id)
}

/// Parses an SQS body from the feedback queue.
pub fn parse(body: &str, expect: &Expect<'_>) -> Result<SesEvent, Refused> {
    if body.len() > MAX_EVENT_BYTES {
        return Err(refused(
            "event_too_large",
            format!(
                "{} bytes, over the {MAX_EVENT_BYTES} byte limit",
                body.len()
            ),
        ));
    }
    let envelope: Envelope = serde_json::from_str(body).map_err(|e| {
        refused(
            "malformed_envelope",
            format!("not an SNS notification: {e}"),
        )
    })?;
    if envelope.kind != "Notification" {
        return Err(refused(
            "not_a_notification",
            format!("SNS message type {:?}", envelope.kind),
        ));
    }
    if let Some(topic) = expect.topic_arn
        && envelope.topic_arn.as_deref() != Some(topic)
    {
        return Err(refused(
            "foreign_topic",
            format!("from topic {:?}, not the stack's", envelope.topic_arn),
        ));
    }
    parse_record(&envelope.message, expect)
}

/// Parses the SES record inside the envelope.
pub fn parse_record(text: &str, expect: &Expect<'_>) -> Result<SesEvent, Refused> {
    let r: Record = serde_json::from_str(text)
        .map_err(|e| refused("malformed_event", format!("not an SES event record: {e}")))?;
    let message_id = r.mail.message_id.clone();
    if !plain(&message_id, 256) {
        return Err(refused(
            "invalid_message_id",
            "mail.messageId is not a plain id",
        ));
    }
    let tag = |name: &str| -> Result<Option<String>, Refused> {
        match r.mail.tags.get(name).map(Vec::as_slice) {
            None | Some([]) => Ok(None),
            Some([v]) if plain(v, 256) => Ok(Some(v.clone())),
            Some(_) => Err(refused(
                "invalid_tag",
                format!("tag {name} is not one plain value"),
            )),
        }
    };
    let set = tag(TAG_CONFIGURATION_SET)?;
    if let Some(expected) = expect.configuration_set
        && set.as_deref() != Some(expected)
    {
        return Err(refused(
            "foreign_configuration_set",
            format!("configuration set {set:?}, not the stack's"),
        ));
    }
    let attempt_id = tag(TAG_ATTEMPT)?;
    let target_id = tag(TAG_TARGET)?;
    let kind_text = r
        .event_type
        .as_deref()
        .or(r.notification_type.as_deref())
        .ok_or_else(|| refused("malformed_event", "no eventType"))?;
    let mail_at = r.mail.timestamp.as_deref();
    let when = |t: Option<&str>| -> Result<Timestamp, Refused> {
        let text = t
            .or(mail_at)
            .ok_or_else(|| refused("malformed_event", "no timestamp"))?;
        Timestamp::parse(text).map_err(|_| {
            refused(
                "malformed_event",
                format!("timestamp {text:?} is not RFC 3339"),
            )
        })
    };
    let news_of = |addresses: Vec<(String, Option<String>)>,
                   status: RecipientStatus,
                   bounce: Option<BounceType>,
                   at: Timestamp|
     -> Result<Vec<Feedback>, Refused> {
        if addresses.is_empty() || addresses.len() > MAX_RECIPIENTS {
            return Err(refused(
                "malformed_event",
                format!("{} recipients (1 to {MAX_RECIPIENTS})", addresses.len()),
            ));
        }
        addresses
            .into_iter()
            .map(|(address, detail)| {
                if !plain(&address, 254) || !address.contains('@') {
                    return Err(refused("malformed_event", "a recipient is not an address"));
                }
                Ok(Feedback {
                    message_id: message_id.clone(),
                    address,
                    status,
                    bounce,
                    detail: detail.map(|d| crate::contract::display::display(&d, 500)),
                    at,
                })
            })
            .collect()
    };
    let missing = |what: &str| {
        refused(
            "malformed_event",
            format!("a {kind_text} event without {what}"),
        )
    };
    let (kind, news) = match kind_text {
        "Send" => {
            let at = when(None)?;
            let to = r
                .mail
                .destination
                .iter()
                .map(|a| (a.clone(), None))
                .collect();
            (
                EventKind::Send,
                news_of(to, RecipientStatus::Sent, None, at)?,
            )
        }
        "Delivery" => {
            let d = r.delivery.ok_or_else(|| missing("delivery"))?;
            let at = when(d.timestamp.as_deref())?;
            let to = d
                .recipients
                .into_iter()
                .map(|a| (a, d.smtp_response.clone()))
                .collect();
            (
                EventKind::Delivery,
                news_of(to, RecipientStatus::Delivered, None, at)?,
            )
        }
        "Bounce" => {
            let b = r.bounce.ok_or_else(|| missing("bounce"))?;
            let at = when(b.timestamp.as_deref())?;
            let kind = match b.bounce_type.as_str() {
                "Permanent" => BounceType::Permanent,
                "Transient" => BounceType::Transient,
                "Undetermined" => BounceType::Undetermined,
                other => {
                    return Err(refused("malformed_event", format!("bounce type {other:?}")));
                }
            };
            let sub = b.bounce_sub_type.unwrap_or_default();
            // SES's account-level suppression list: not sent at all.
            let (status, bounce) = if sub == "OnAccountSuppressionList" {
                (RecipientStatus::Suppressed, None)
            } else {
                (RecipientStatus::Bounced, Some(kind))
            };
            let to = b
                .bounced_recipients
                .into_iter()
                .map(|a| {
                    let detail = match status {
                        RecipientStatus::Suppressed => {
                            "ses_account_suppression_list: on the SES account's suppression list"
                                .to_owned()
                        }
                        _ => format!(
                            "{} {sub}{}{}",
                            b.bounce_type,
                            a.status.map(|s| format!(" {s}")).unwrap_or_default(),
                            a.diagnostic_code
                                .map(|d| format!(": {d}"))
                                .unwrap_or_default()
                        ),
                    };
                    (a.email_address, Some(detail))
                })
                .collect();
            (EventKind::Bounce, news_of(to, status, bounce, at)?)
        }
        "Complaint" => {
            let c = r.complaint.ok_or_else(|| missing("complaint"))?;
            let at = when(c.timestamp.as_deref())?;
            let to = c
                .complained_recipients
                .into_iter()
                .map(|a| (a.email_address, c.complaint_feedback_type.clone()))
                .collect();
            (
                EventKind::Complaint,
                news_of(to, RecipientStatus::Complained, None, at)?,
            )
        }
        "Reject" => {
            let reason = r.reject.and_then(|j| j.reason);
            let at = when(None)?;
            let to = r
                .mail
                .destination
                .iter()
                .map(|a| (a.clone(), reason.clone()))
                .collect();
            (
                EventKind::Reject,
                news_of(to, RecipientStatus::Rejected, None, at)?,
            )
        }
        "DeliveryDelay" => {
            let d = r.delivery_delay.ok_or_else(|| missing("deliveryDelay"))?;
            let at = when(d.timestamp.as_deref())?;
            let to = d
                .delayed_recipients
                .into_iter()
                .map(|a| {
                    let detail = [d.delay_type.clone(), a.status, a.diagnostic_code]
                        .into_iter()
                        .flatten()
                        .collect::<Vec<_>>()
                        .join(" ");
                    (a.email_address, Some(detail))
                })
                .collect();
            (
                EventKind::DeliveryDelay,
                news_of(to, RecipientStatus::Delayed, None, at)?,
            )
        }
        "Open" | "Click" | "Rendering Failure" | "RenderingFailure" | "Subscription" => {
            (EventKind::Other, Vec::new())
        }
        other => {
            return Err(refused(
                "unknown_event_type",
                format!(
                    "event type {:?}",
                    crate::contract::display::display(other, 40)
                ),
            ));
        }
    };
    Ok(SesEvent {
        kind,
        message_id,
        attempt_id,
        target_id,
        news,
    })
}

/// A bounded id or address with no whitespace or control characters.
fn plain(s: &str, max: usize) -> bool {
    !s.is_empty() && s.len() <= max && s.bytes().all(|b| b.is_ascii_graphic())
}

#[cfg(test)]
mod tests;
