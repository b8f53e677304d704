//! Blob-store port for rendered files and claim-checked data, with the S3
//! adapter in [`s3`].

pub mod s3;

use async_trait::async_trait;
use std::time::Duration;

/// A blob-store failure.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// The object does not exist.
    #[error("object not found: {0}")]
    NotFound(String),
    /// Anything else; worth retrying.
    #[error("blob store error: {0}")]
    Backend(String),
}

/// What the handlers need from object storage.
#[async_trait]
pub trait BlobStore: Send + Sync {
    /// Stores bytes under `key` in the reports bucket (encrypted at rest).
    async fn put(&self, key: &str, bytes: Vec<u8>, content_type: &str) -> Result<(), BlobError>;
    /// Reads `key` from the reports bucket.
    async fn get(&self, key: &str) -> Result<Vec<u8>, BlobError>;
    /// Reads an object named by an `s3://bucket/key` URI.
    async fn get_uri(&self, uri: &str) -> Result<Vec<u8>, BlobError>;
    /// A time-limited GET link to `key`.
    async fn presign_get(&self, key: &str, ttl: Duration) -> Result<String, BlobError>;
}

/// Splits `s3://bucket/key`.
pub fn parse_s3_uri(uri: &str) -> Option<(&str, &str)> {
    let rest = uri.strip_prefix("s3://")?;
    let (bucket, key) = rest.split_once('/')?;
    (!bucket.is_empty() && !key.is_empty()).then_some((bucket, key))
}

#[cfg(test)]
mod tests {
    #[test]
    fn s3_uris_split_into_bucket_and_key() {
        assert_eq!(
            super::parse_s3_uri("s3://b/k/x.json"),
            Some(("b", "k/x.json"))
        );
        assert_eq!(super::parse_s3_uri("s3://b/"), None);
        assert_eq!(super::parse_s3_uri("https://b/k"), None);
    }
}
