//! An in-memory queue for unit tests: records what was sent and
//! dead-lettered, and can be told to fail.

use super::{DeadLetter, OutMessage, Queue, QueueError, ReceivedMessage};
use async_trait::async_trait;
use std::sync::Mutex;
use std::time::Duration;

/// Records sends and dead letters; with `broken`, dead-lettering fails.
#[derive(Default)]
pub struct RecordingQueue {
    /// Bodies sent.
    pub sent: Mutex<Vec<String>>,
    /// (code, body) of each dead letter.
    pub letters: Mutex<Vec<(String, String)>>,
    pub broken: bool,
}

#[async_trait]
impl Queue for RecordingQueue {
    async fn send_batch(&self, _: &str, _: &[OutMessage]) -> Result<Vec<String>, QueueError> {
        Ok(Vec::new())
    }
    async fn send(&self, _: &str, body: &str) -> Result<(), QueueError> {
        if let Ok(mut v) = self.sent.lock() {
            v.push(body.to_owned());
        }
        Ok(())
    }
    async fn dead_letter(&self, _: &str, l: DeadLetter<'_>) -> Result<(), QueueError> {
        if self.broken {
            return Err(QueueError("down".into()));
        }
        if let Ok(mut v) = self.letters.lock() {
            v.push((l.code.to_owned(), l.body.to_owned()));
        }
        Ok(())
    }
    async fn change_visibility(&self, _: &str, _: &str, _: Duration) -> Result<(), QueueError> {
        Ok(())
    }
    async fn receive(
        &self,
        _: &str,
        _: i32,
        _: Duration,
    ) -> Result<Vec<ReceivedMessage>, QueueError> {
        Ok(Vec::new())
    }
    async fn delete(&self, _: &str, _: &str) -> Result<(), QueueError> {
        Ok(())
    }
}
