//! S3 adapter for the blob-store port. Failures are classified by S3 error
//! code and HTTP status ([`classify`]): a missing object, bucket or
//! permission will not appear by retrying; throttling, timeouts and 5xx may
//! clear.

use super::{BlobError, BlobStore, parse_s3_uri};
use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
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

/// What kind of failure an S3 answer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum S3Failure {
    /// The object does not exist.
    NotFound,
    /// Retrying will not help.
    Permanent,
    /// Worth retrying.
    Temporary,
}

/// Classifies an S3 failure from its error code and HTTP status (either may
/// be missing): `NoSuchKey` (or a bare 404) is not found; throttling
/// (`SlowDown`, 429, 503), timeouts (`RequestTimeout`, 408), 5xx, a
/// conflicting operation in progress, clock skew and expired session
/// credentials (refreshed on the next call) are temporary; every other 4xx
/// and 3xx (`NoSuchBucket`, `AccessDenied`, `InvalidBucketName`, a bucket
/// in another region…) is permanent. No status at all (no answer) is
/// temporary.
pub fn classify(code: Option<&str>, status: Option<u16>) -> S3Failure {
    const TEMPORARY_CODES: [&str; 14] = [
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "RequestTimeout",
        "RequestTimeTooSkewed",
        "InternalError",
        "ServiceUnavailable",
        "OperationAborted",
        "ExpiredToken",
        "TokenRefreshRequired",
    ];
    match code {
        Some("NoSuchKey" | "NotFound") => return S3Failure::NotFound,
        Some(c) if TEMPORARY_CODES.contains(&c) => return S3Failure::Temporary,
        _ => {}
    }
    match (code, status) {
        (_, Some(408 | 429)) | (_, Some(500..=599)) | (_, None) => S3Failure::Temporary,
        (None, Some(404)) => S3Failure::NotFound,
        (_, Some(300..=499)) => S3Failure::Permanent,
        _ => S3Failure::Temporary,
    }
}

/// Turns an SDK failure on `what` into a classified [`BlobError`].
fn blob_error<E>(e: &SdkError<E, HttpResponse>, what: &str) -> BlobError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let status = e.raw_response().map(|r| r.status().as_u16());
    let failure = match e {
        // The request could not be built (e.g. an invalid bucket name).
        SdkError::ConstructionFailure(_) => S3Failure::Permanent,
        SdkError::DispatchFailure(d) if d.is_user() => S3Failure::Permanent,
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) => S3Failure::Temporary,
        _ => classify(e.code(), status),
    };
    let detail = DisplayErrorContext(e).to_string();
    match failure {
        S3Failure::NotFound => BlobError::NotFound(what.to_owned()),
        S3Failure::Permanent => BlobError::Permanent {
            code: e
                .code()
                .map(str::to_owned)
                .or(status.map(|s| format!("http_{s}")))
                .unwrap_or_else(|| "invalid_request".into()),
            reason: format!("{what}: {detail}"),
        },
        S3Failure::Temporary => BlobError::Temporary(format!("{what}: {detail}")),
    }
}

impl S3Blobs {
    /// Wraps a client and the reports bucket.
    pub fn new(client: Client, bucket: impl Into<String>) -> Self {
        Self {
            client,
            bucket: bucket.into(),
        }
    }

    /// The reports bucket.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    async fn get_from(&self, bucket: &str, key: &str) -> Result<Vec<u8>, BlobError> {
        let what = format!("s3://{bucket}/{key}");
        let out = self
            .client
            .get_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| blob_error(&e, &what))?;
        let bytes = out
            .body
            .collect()
            .await
            .map_err(|e| BlobError::Temporary(format!("{what}: {e}")))?;
        Ok(bytes.into_bytes().to_vec())
    }
}

#[async_trait]
impl BlobStore for S3Blobs {
    async fn exists(&self, key: &str) -> Result<bool, BlobError> {
        let what = format!("s3://{}/{key}", self.bucket);
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e) => match blob_error(&e, &what) {
                BlobError::NotFound(_) => Ok(false),
                other => Err(other),
            },
        }
    }

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
            .map_err(|e| blob_error(&e, &format!("s3://{}/{key}", self.bucket)))?;
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Vec<u8>, BlobError> {
        self.get_from(&self.bucket, key).await
    }

    async fn get_uri(&self, uri: &str) -> Result<Vec<u8>, BlobError> {
        let (bucket, key) = parse_s3_uri(uri).ok_or_else(|| BlobError::Permanent {
            code: "invalid_uri".into(),
            reason: "not an s3://bucket/key URI".into(),
        })?;
        self.get_from(bucket, key).await
    }

    async fn presign_get(&self, key: &str, ttl: Duration) -> Result<String, BlobError> {
        let config = PresigningConfig::expires_in(ttl).map_err(|e| BlobError::Permanent {
            code: "invalid_presign_ttl".into(),
            reason: e.to_string(),
        })?;
        let req = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .presigned(config)
            .await
            .map_err(|e| blob_error(&e, &format!("s3://{}/{key}", self.bucket)))?;
        Ok(req.uri().to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_s3_error_codes_and_statuses_when_classified_then_only_passing_trouble_is_temporary() {
        use S3Failure::*;
        let cases = [
            (Some("NoSuchKey"), Some(404), NotFound),
            (None, Some(404), NotFound),
            (Some("NoSuchBucket"), Some(404), Permanent),
            (Some("AccessDenied"), Some(403), Permanent),
            (None, Some(403), Permanent),
            (Some("InvalidBucketName"), Some(400), Permanent),
            (Some("InvalidObjectState"), Some(403), Permanent),
            (Some("PermanentRedirect"), Some(301), Permanent),
            (Some("InvalidRequest"), Some(400), Permanent),
            (Some("AllAccessDisabled"), Some(403), Permanent),
            (Some("SlowDown"), Some(503), Temporary),
            (Some("ServiceUnavailable"), Some(503), Temporary),
            (Some("InternalError"), Some(500), Temporary),
            (None, Some(502), Temporary),
            (Some("RequestTimeout"), Some(400), Temporary),
            (None, Some(408), Temporary),
            (Some("TooManyRequestsException"), Some(429), Temporary),
            (None, Some(429), Temporary),
            (Some("OperationAborted"), Some(409), Temporary),
            (Some("ExpiredToken"), Some(400), Temporary),
            (Some("RequestTimeTooSkewed"), Some(403), Temporary),
            (None, None, Temporary),
        ];
        for (code, status, expected) in cases {
            assert_eq!(classify(code, status), expected, "{code:?} {status:?}");
        }
    }
}
