//! SQS adapter for the queue port.

use super::{DeadLetter, OutMessage, Queue, QueueError, ReceivedMessage};
use async_trait::async_trait;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::{DisplayErrorContext, SdkError};
use aws_sdk_sqs::types::{MessageAttributeValue, SendMessageBatchRequestEntry};
use std::time::Duration;

/// The SQS-backed queue.
#[derive(Debug, Clone)]
pub struct SqsQueue {
    client: Client,
}

impl SqsQueue {
    /// Wraps a client.
    pub fn new(client: Client) -> Self {
        Self { client }
    }
}

fn err<E: std::error::Error + 'static, R: std::fmt::Debug>(e: SdkError<E, R>) -> QueueError {
    QueueError(DisplayErrorContext(&e).to_string())
}

fn attr(v: &str) -> Result<MessageAttributeValue, QueueError> {
    MessageAttributeValue::builder()
        .data_type("String")
        .string_value(v)
        .build()
        .map_err(|e| QueueError(e.to_string()))
}

#[async_trait]
impl Queue for SqsQueue {
    async fn send_batch(
        &self,
        queue_url: &str,
        messages: &[OutMessage],
    ) -> Result<Vec<String>, QueueError> {
        let entries = messages
            .iter()
            .map(|m| {
                SendMessageBatchRequestEntry::builder()
                    .id(&m.entry_id)
                    .message_body(&m.body)
                    .build()
                    .map_err(|e| QueueError(e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let out = self
            .client
            .send_message_batch()
            .queue_url(queue_url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(err)?;
        Ok(out.failed.into_iter().map(|f| f.id).collect())
    }

    async fn send(&self, queue_url: &str, body: &str) -> Result<(), QueueError> {
        self.client
            .send_message()
            .queue_url(queue_url)
            .message_body(body)
            .send()
            .await
            .map_err(err)?;
        Ok(())
    }

    async fn dead_letter(&self, queue_url: &str, l: DeadLetter<'_>) -> Result<(), QueueError> {
        // An empty body is not a valid SQS message; keep a marker instead.
        let body = if l.body.is_empty() { "<empty>" } else { l.body };
        let mut req = self
            .client
            .send_message()
            .queue_url(queue_url)
            .message_body(body)
            .message_attributes("error_code", attr(l.code)?)
            .message_attributes("error_reason", attr(&truncate(l.reason, 1000))?);
        if !l.source_message_id.is_empty() {
            req = req.message_attributes("source_message_id", attr(l.source_message_id)?);
        }
        if let Some(id) = l.attempt_id {
            req = req.message_attributes("attempt_id", attr(id)?);
        }
        if let Some(n) = l.receive_count {
            req = req.message_attributes("source_receive_count", attr(&n.to_string())?);
        }
        if let Some(n) = l.episode {
            req = req.message_attributes("episode", attr(&n.to_string())?);
        }
        req.send().await.map_err(err)?;
        Ok(())
    }

    async fn change_visibility(
        &self,
        queue_url: &str,
        receipt_handle: &str,
        delay: Duration,
    ) -> Result<(), QueueError> {
        self.client
            .change_message_visibility()
            .queue_url(queue_url)
            .receipt_handle(receipt_handle)
            // Whole seconds, rounded up: a wait of 0.4 s must not come back at once.
            .visibility_timeout(delay.as_millis().div_ceil(1000).min(43_200) as i32)
            .send()
            .await
            .map_err(err)?;
        Ok(())
    }

    async fn depth(&self, queue_url: &str) -> Result<super::QueueDepth, QueueError> {
        use aws_sdk_sqs::types::QueueAttributeName as A;
        let out = self
            .client
            .get_queue_attributes()
            .queue_url(queue_url)
            .attribute_names(A::ApproximateNumberOfMessages)
            .attribute_names(A::ApproximateNumberOfMessagesNotVisible)
            .attribute_names(A::ApproximateNumberOfMessagesDelayed)
            .send()
            .await
            .map_err(err)?;
        let attrs = out.attributes.unwrap_or_default();
        let count = |a: A| {
            attrs
                .get(&a)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        Ok(super::QueueDepth {
            visible: count(A::ApproximateNumberOfMessages),
            in_flight: count(A::ApproximateNumberOfMessagesNotVisible),
            delayed: count(A::ApproximateNumberOfMessagesDelayed),
        })
    }

    async fn receive(
        &self,
        queue_url: &str,
        max: i32,
        visibility: Duration,
    ) -> Result<Vec<ReceivedMessage>, QueueError> {
        self.receive_batch(queue_url, max, visibility).await
    }

    async fn delete(&self, queue_url: &str, receipt_handle: &str) -> Result<(), QueueError> {
        self.client
            .delete_message()
            .queue_url(queue_url)
            .receipt_handle(receipt_handle)
            .send()
            .await
            .map_err(err)?;
        Ok(())
    }
}

impl SqsQueue {
    async fn receive_batch(
        &self,
        queue_url: &str,
        max: i32,
        visibility: Duration,
    ) -> Result<Vec<ReceivedMessage>, QueueError> {
        let out = self
            .client
            .receive_message()
            .queue_url(queue_url)
            .max_number_of_messages(max.clamp(1, 10))
            .visibility_timeout(visibility.as_secs().min(43_200) as i32)
            // A long poll asks every server; a short one samples some and
            // can answer empty while letters wait.
            .wait_time_seconds(1)
            .message_attribute_names("All")
            .send()
            .await
            .map_err(err)?;
        Ok(out
            .messages
            .unwrap_or_default()
            .into_iter()
            .filter_map(|m| {
                let attributes = m
                    .message_attributes
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|(k, v)| Some((k, v.string_value?)))
                    .collect();
                Some(ReceivedMessage {
                    message_id: m.message_id?,
                    body: m.body.unwrap_or_default(),
                    receipt_handle: m.receipt_handle?,
                    attributes,
                })
            })
            .collect())
    }
}

fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}
