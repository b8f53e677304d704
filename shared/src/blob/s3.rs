//! S3 adapter for the blob-store port.

use super::{BlobError, BlobStore, parse_s3_uri};
use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::error::{DisplayErrorContext, SdkError};
use aws_sdk_s3::operation::get_object::GetObjectError;
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::ServerSideEncryption;
use std::time::Duration;

/// The S3-backed blob store.
#[derive(Debug, Clone)]
pub struct S3Blobs {
    client: Client,
    bucket: String,
}

impl S3Blobs {
    /// Wraps a client and the reports bucket.
    pub fn new(client: Client, bucket: impl Into<String>) -> Self {
        Self {
            client,
            bucket: bucket.into(),
        }
    }

    async fn get_from(&self, bucket: &str, key: &str) -> Result<Vec<u8>, BlobError> {
        let out = self
            .client
            .get_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| match &e {
                SdkError::ServiceError(s) if matches!(s.err(), GetObjectError::NoSuchKey(_)) => {
                    BlobError::NotFound(format!("s3://{bucket}/{key}"))
                }
                _ => BlobError::Backend(DisplayErrorContext(&e).to_string()),
            })?;
        let bytes = out
            .body
            .collect()
            .await
            .map_err(|e| BlobError::Backend(e.to_string()))?;
        Ok(bytes.into_bytes().to_vec())
    }
}

#[async_trait]
impl BlobStore for S3Blobs {
    async fn put(&self, key: &str, bytes: Vec<u8>, content_type: &str) -> Result<(), BlobError> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .server_side_encryption(ServerSideEncryption::Aes256)
            .body(ByteStream::from(bytes))
            .send()
            .await
            .map_err(|e| BlobError::Backend(DisplayErrorContext(&e).to_string()))?;
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Vec<u8>, BlobError> {
        self.get_from(&self.bucket, key).await
    }

    async fn get_uri(&self, uri: &str) -> Result<Vec<u8>, BlobError> {
        let (bucket, key) =
            parse_s3_uri(uri).ok_or_else(|| BlobError::NotFound(format!("bad S3 URI {uri:?}")))?;
        self.get_from(bucket, key).await
    }

    async fn presign_get(&self, key: &str, ttl: Duration) -> Result<String, BlobError> {
        let config =
            PresigningConfig::expires_in(ttl).map_err(|e| BlobError::Backend(e.to_string()))?;
        let req = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .presigned(config)
            .await
            .map_err(|e| BlobError::Backend(DisplayErrorContext(&e).to_string()))?;
        Ok(req.uri().to_owned())
    }
}
