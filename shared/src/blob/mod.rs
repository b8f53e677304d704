//! Blob-store port for rendered files and claim-checked data, with the S3
//! adapter in [`s3`].

pub mod s3;

use async_trait::async_trait;
use std::time::Duration;

/// A blob-store failure, classified.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BlobError {
    /// The object does not exist.
    #[error("object not found: {0}")]
    NotFound(String),
    /// Retrying will not help: no such bucket, access denied, an invalid
    /// bucket name or request.
    #[error("blob store refused ({code}): {reason}")]
    Permanent { code: String, reason: String },
    /// Throttling, timeouts, 5xx, network trouble: worth retrying.
    #[error("blob store error: {0}")]
    Temporary(String),
}

impl BlobError {
    /// Whether the operation is worth retrying.
    pub fn is_retryable(&self) -> bool {
        matches!(self, BlobError::Temporary(_))
    }
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
    /// Whether `key` exists in the reports bucket.
    async fn exists(&self, key: &str) -> Result<bool, BlobError> {
        match self.get(key).await {
            Ok(_) => Ok(true),
            Err(BlobError::NotFound(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// Splits `s3://bucket/key`.
pub fn parse_s3_uri(uri: &str) -> Option<(&str, &str)> {
    let rest = uri.strip_prefix("s3://")?;
    let (bucket, key) = rest.split_once('/')?;
    (!bucket.is_empty() && !key.is_empty()).then_some((bucket, key))
}

/// Where claim-check objects may be read from: one bucket and a key prefix
/// (the render function's IAM policy allows no more).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimCheckScope {
    pub bucket: String,
    /// Ends with `/`, e.g. `incoming/`.
    pub prefix: String,
}

/// The prefix claim-check objects live under in the reports bucket.
pub const CLAIM_CHECK_PREFIX: &str = "incoming/";

/// S3's longest object key, in bytes.
const MAX_KEY_BYTES: usize = 1024;

impl ClaimCheckScope {
    /// The reports bucket under [`CLAIM_CHECK_PREFIX`].
    pub fn reports(bucket: impl Into<String>) -> Self {
        Self {
            bucket: bucket.into(),
            prefix: CLAIM_CHECK_PREFIX.to_owned(),
        }
    }

    /// The key of an `s3://bucket/key` URI when it is inside the scope: the
    /// bucket is ours, the key starts with the prefix and has no empty, `.`
    /// or `..` segments and no control characters. The reason otherwise.
    pub fn check<'u>(&self, uri: &'u str) -> Result<&'u str, String> {
        let (bucket, key) =
            parse_s3_uri(uri).ok_or("the claim-check URI is not s3://bucket/key")?;
        if bucket != self.bucket {
            return Err(format!(
                "claim-check objects must be in the reports bucket {:?}",
                self.bucket
            ));
        }
        let rest = key
            .strip_prefix(&self.prefix)
            .ok_or_else(|| format!("claim-check keys must start with {:?}", self.prefix))?;
        if rest.is_empty() || key.len() > MAX_KEY_BYTES {
            return Err("the claim-check key is empty or too long".into());
        }
        if key
            .split('/')
            .any(|s| s.is_empty() || s == "." || s == "..")
        {
            return Err("the claim-check key has an empty, '.' or '..' segment".into());
        }
        if key.chars().any(char::is_control) {
            return Err("the claim-check key has control characters".into());
        }
        Ok(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_uris_split_into_bucket_and_key() {
        assert_eq!(
            super::parse_s3_uri("s3://b/k/x.json"),
            Some(("b", "k/x.json"))
        );
        assert_eq!(super::parse_s3_uri("s3://b/"), None);
        assert_eq!(super::parse_s3_uri("https://b/k"), None);
    }

    #[test]
    fn given_claim_check_uris_when_scoped_to_the_reports_bucket_incoming_then_only_those_inside_pass()
     {
        let scope = ClaimCheckScope::reports("reports-bucket");
        let cases = [
            ("s3://reports-bucket/incoming/2026/w48.csv", true),
            ("s3://reports-bucket/incoming/x.json", true),
            ("s3://reports-bucket/incoming/a.b..c/x.json", true),
            ("s3://other-bucket/incoming/x.json", false),
            ("s3://Reports-Bucket/incoming/x.json", false),
            ("s3://reports-bucket/reports/r/e/report-1.pdf", false),
            ("s3://reports-bucket/incoming", false),
            ("s3://reports-bucket/incoming/", false),
            ("s3://reports-bucket/incoming/../reports/x.pdf", false),
            ("s3://reports-bucket/incoming/./x.json", false),
            ("s3://reports-bucket/incoming//x.json", false),
            ("s3://reports-bucket/incoming/x/", false),
            ("s3://reports-bucket//incoming/x.json", false),
            ("s3://reports-bucket/incoming/x\n.json", false),
            ("https://reports-bucket/incoming/x.json", false),
            ("s3://reports-bucket", false),
        ];
        for (uri, inside) in cases {
            assert_eq!(scope.check(uri).is_ok(), inside, "{uri}");
        }
        let long = format!("s3://reports-bucket/incoming/{}", "k".repeat(1100));
        assert!(scope.check(&long).is_err());
        assert_eq!(
            scope.check("s3://reports-bucket/incoming/x.json"),
            Ok("incoming/x.json")
        );
    }

    #[test]
    fn only_temporary_blob_errors_are_retryable() {
        assert!(BlobError::Temporary("503".into()).is_retryable());
        assert!(!BlobError::NotFound("k".into()).is_retryable());
        assert!(
            !BlobError::Permanent {
                code: "AccessDenied".into(),
                reason: "no".into()
            }
            .is_retryable()
        );
    }
}
