//! Queue port, with the SQS adapter in [`sqs`].

#[cfg(test)]
pub mod fake;
pub mod sqs;

use async_trait::async_trait;
use std::time::Duration;

/// A queue failure. All are worth retrying.
#[derive(Debug, thiserror::Error)]
#[error("queue error: {0}")]
pub struct QueueError(pub String);

/// One message of a batch send.
#[derive(Debug, Clone, PartialEq)]
pub struct OutMessage {
    /// Unique within the batch; reported back for entries that failed.
    pub entry_id: String,
    pub body: String,
}

/// Why a message was dead-lettered by hand.
#[derive(Debug, Clone)]
pub struct DeadLetter<'a> {
    pub body: &'a str,
    /// Short machine code, e.g. `malformed_message`.
    pub code: &'a str,
    /// Human-readable reason.
    pub reason: &'a str,
    /// The message id it had on its source queue.
    pub source_message_id: &'a str,
    /// The attempt it belongs to, when known (deliver's exhausted retries).
    pub attempt_id: Option<&'a str>,
    /// The attempt's episode that requested it (see
    /// [`crate::domain::transition`]): a letter of an older episode is no
    /// longer the record's, and the reconciler removes it.
    pub episode: Option<u32>,
    /// The SQS receive count of the message when it was refused (1 means
    /// it was refused on its first receive).
    pub receive_count: Option<u32>,
}

/// A message read from a queue (the reconciler reads the dead-letter queue).
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedMessage {
    pub message_id: String,
    pub body: String,
    pub receipt_handle: String,
    /// String message attributes, e.g. `error_code` on our own dead letters.
    pub attributes: std::collections::BTreeMap<String, String>,
}

/// A queue's approximate message counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct QueueDepth {
    /// Waiting to be received.
    pub visible: u64,
    /// Received and not yet deleted (or hidden for a backoff).
    pub in_flight: u64,
    /// Sent with a delay that has not passed.
    pub delayed: u64,
}

/// What the handlers need from a queue service.
#[async_trait]
pub trait Queue: Send + Sync {
    /// Sends up to 10 messages; returns the entry ids that failed.
    async fn send_batch(
        &self,
        queue_url: &str,
        messages: &[OutMessage],
    ) -> Result<Vec<String>, QueueError>;
    /// Sends one message.
    async fn send(&self, queue_url: &str, body: &str) -> Result<(), QueueError>;
    /// Puts a message on a dead-letter queue with its reason as attributes.
    async fn dead_letter(&self, queue_url: &str, letter: DeadLetter<'_>) -> Result<(), QueueError>;
    /// Hides an in-flight message for `delay` (a backoff).
    async fn change_visibility(
        &self,
        queue_url: &str,
        receipt_handle: &str,
        delay: Duration,
    ) -> Result<(), QueueError>;
    /// Receives up to 10 messages, hiding them for `visibility`.
    async fn receive(
        &self,
        queue_url: &str,
        max: i32,
        visibility: Duration,
    ) -> Result<Vec<ReceivedMessage>, QueueError>;
    /// Deletes a received message.
    async fn delete(&self, queue_url: &str, receipt_handle: &str) -> Result<(), QueueError>;
    /// The queue's approximate counts (for health checks).
    async fn depth(&self, queue_url: &str) -> Result<QueueDepth, QueueError> {
        Err(QueueError(format!(
            "no depth for {queue_url} from this queue"
        )))
    }
}

/// Turns `arn:aws:sqs:REGION:ACCOUNT:NAME` into the queue URL path the SQS
/// API accepts on any endpoint.
pub fn queue_url_from_arn(arn: &str, endpoint: Option<&str>) -> Option<String> {
    let mut parts = arn.split(':');
    let (_, _, service, region, account, name) = (
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
    );
    if service != "sqs" || name.is_empty() {
        return None;
    }
    let base = match endpoint {
        Some(e) => e.trim_end_matches('/').to_owned(),
        None => format!("https://sqs.{region}.amazonaws.com"),
    };
    Some(format!("{base}/{account}/{name}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_urls_come_from_arns() {
        let arn = "arn:aws:sqs:eu-west-1:123456789012:deliveries";
        assert_eq!(
            queue_url_from_arn(arn, None).as_deref(),
            Some("https://sqs.eu-west-1.amazonaws.com/123456789012/deliveries")
        );
        assert_eq!(
            queue_url_from_arn(arn, Some("http://127.0.0.1:4566/")).as_deref(),
            Some("http://127.0.0.1:4566/123456789012/deliveries")
        );
        assert_eq!(queue_url_from_arn("arn:aws:sns:x:y:z", None), None);
    }
}
