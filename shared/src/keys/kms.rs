//! The KMS key service: data keys from `GenerateDataKey` (AES-256) under the
//! stack's customer-managed key, unwrapped with `Decrypt`, both with the
//! record's encryption context.

use super::{Context, KeyError, KeyService};
use async_trait::async_trait;
use aws_sdk_kms::Client;
use aws_sdk_kms::config::http::HttpResponse;
use aws_sdk_kms::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::DataKeySpec;
use std::collections::HashMap;

/// KMS with one key.
pub struct KmsKeys {
    client: Client,
    key_id: String,
}

impl KmsKeys {
    /// Data keys under `key_id` (a key id, ARN or alias).
    pub fn new(client: Client, key_id: String) -> Self {
        Self { client, key_id }
    }
}

fn context(c: &Context) -> Option<HashMap<String, String>> {
    Some(c.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
}

/// Throttling, KMS's own failures and the network are temporary; access,
/// a disabled or deleted key and a wrong context are not.
fn key_error<E>(e: SdkError<E, HttpResponse>) -> KeyError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    const TEMPORARY: [&str; 5] = [
        "ThrottlingException",
        "KMSInternalException",
        "DependencyTimeoutException",
        "KeyUnavailableException",
        "LimitExceededException",
    ];
    match &e {
        SdkError::ServiceError(s) => {
            let code = s.err().code().unwrap_or("unknown").to_owned();
            let status = s.raw().status().as_u16();
            let reason = format!("{code}: {}", s.err().message().unwrap_or(""));
            if TEMPORARY.contains(&code.as_str()) || status >= 500 || status == 429 {
                KeyError::Unavailable(reason)
            } else {
                KeyError::Refused { code, reason }
            }
        }
        SdkError::ConstructionFailure(_) => KeyError::Refused {
            code: "construction_failure".into(),
            reason: DisplayErrorContext(&e).to_string(),
        },
        _ => KeyError::Unavailable(
            DisplayErrorContext(&e)
                .to_string()
                .chars()
                .take(300)
                .collect(),
        ),
    }
}

#[async_trait]
impl KeyService for KmsKeys {
    async fn generate(&self, c: &Context) -> Result<(Vec<u8>, Vec<u8>), KeyError> {
        let out = self
            .client
            .generate_data_key()
            .key_id(&self.key_id)
            .key_spec(DataKeySpec::Aes256)
            .set_encryption_context(context(c))
            .send()
            .await
            .map_err(key_error)?;
        match (out.plaintext, out.ciphertext_blob) {
            (Some(plain), Some(wrapped)) => Ok((plain.into_inner(), wrapped.into_inner())),
            _ => Err(KeyError::Unavailable(
                "GenerateDataKey returned no key".into(),
            )),
        }
    }

    async fn unwrap(&self, wrapped: &[u8], c: &Context) -> Result<Vec<u8>, KeyError> {
        let out = self
            .client
            .decrypt()
            .key_id(&self.key_id)
            .ciphertext_blob(Blob::new(wrapped))
            .set_encryption_context(context(c))
            .send()
            .await
            .map_err(key_error)?;
        out.plaintext
            .map(Blob::into_inner)
            .ok_or_else(|| KeyError::Unavailable("Decrypt returned no key".into()))
    }
}
