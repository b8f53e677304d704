//! Envelope encryption of stored secrets. Each write gets a fresh 256-bit
//! data key from a key service (KMS with a customer-managed key); the
//! secrets are sealed with AES-256-GCM under it and only the wrapped data
//! key is stored beside them. Reads unwrap the data key through the key
//! service (cached per process for a few minutes, so a warm deliver makes
//! no KMS call) and open the seal. The context (e.g. the connection id) is
//! both the KMS encryption context and the AEAD's associated data, so a
//! sealed blob copied into another record does not open.

pub mod kms;

use async_trait::async_trait;
use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Why sealing or opening failed.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The key service failed, timed out or throttled: worth retrying.
    #[error("key service unavailable: {0}")]
    Unavailable(String),
    /// The key service refused (access denied, key disabled or deleted,
    /// wrong context): retrying will not help.
    #[error("key service refused ({code}): {reason}")]
    Refused { code: String, reason: String },
    /// The sealed data is damaged or belongs to another record.
    #[error("sealed secret does not open: {0}")]
    Corrupt(String),
}

/// The encryption context: names and values that bind a seal to its record.
pub type Context = BTreeMap<String, String>;

/// A key service that makes and unwraps data keys (KMS, or a fake in tests).
#[async_trait]
pub trait KeyService: Send + Sync {
    /// A fresh 32-byte data key: (plaintext, wrapped).
    async fn generate(&self, context: &Context) -> Result<(Vec<u8>, Vec<u8>), KeyError>;
    /// The plaintext of a wrapped data key.
    async fn unwrap(&self, wrapped: &[u8], context: &Context) -> Result<Vec<u8>, KeyError>;
}

/// Sealed bytes as stored: version, wrapped data key, nonce, ciphertext
/// with its tag (base64).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sealed {
    pub v: u8,
    pub key: String,
    pub nonce: String,
    pub data: String,
}

/// How long an unwrapped data key is kept in memory.
const CACHE_TTL: Duration = Duration::from_secs(300);
/// Most data keys kept (one per connection record version).
const CACHE_MAX: usize = 1024;

/// Unwrapped data keys by (wrapped key, context), with when they were
/// unwrapped.
type KeyCache = HashMap<(Vec<u8>, String), (Arc<LessSafeKey>, Instant)>;

/// Seals and opens with data keys from a [`KeyService`], caching unwrapped
/// keys.
pub struct Sealer {
    service: Box<dyn KeyService>,
    cache: Mutex<KeyCache>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer")
    }
}

/// The sealer of connection secrets, when `CONNECTIONS_KEY_ID` names a KMS
/// key (`template.yaml` always sets it).
pub fn from_env(sdk: &aws_config::SdkConfig) -> Option<Arc<Sealer>> {
    crate::config::optional("CONNECTIONS_KEY_ID").map(|key| {
        Arc::new(Sealer::new(Box::new(kms::KmsKeys::new(
            crate::aws::kms(sdk),
            key,
        ))))
    })
}

impl Sealer {
    /// A sealer over `service`.
    pub fn new(service: Box<dyn KeyService>) -> Self {
        Self {
            service,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Seals `plain` under a fresh data key bound to `context`.
    pub async fn seal(&self, context: &Context, plain: &[u8]) -> Result<Sealed, KeyError> {
        let (key, wrapped) = self.service.generate(context).await?;
        let key = aead_key(&key)?;
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce)
            .map_err(|_| KeyError::Unavailable("no randomness".into()))?;
        let mut data = plain.to_vec();
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad(context)),
            &mut data,
        )
        .map_err(|_| KeyError::Corrupt("sealing failed".into()))?;
        Ok(Sealed {
            v: 1,
            key: B64.encode(wrapped),
            nonce: B64.encode(nonce),
            data: B64.encode(data),
        })
    }

    /// Opens what [`Sealer::seal`] sealed with the same context.
    pub async fn open(&self, context: &Context, sealed: &Sealed) -> Result<Vec<u8>, KeyError> {
        if sealed.v != 1 {
            return Err(KeyError::Corrupt(format!(
                "unknown seal version {}",
                sealed.v
            )));
        }
        let decode = |what: &str, s: &str| {
            B64.decode(s)
                .map_err(|_| KeyError::Corrupt(format!("{what} is not base64")))
        };
        let wrapped = decode("key", &sealed.key)?;
        let nonce: [u8; NONCE_LEN] = decode("nonce", &sealed.nonce)?
            .try_into()
            .map_err(|_| KeyError::Corrupt("nonce length".into()))?;
        let mut data = decode("data", &sealed.data)?;
        let key = self.data_key(&wrapped, context).await?;
        let plain = key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad(context)),
                &mut data,
            )
            .map_err(|_| KeyError::Corrupt("the seal does not open in this context".into()))?;
        Ok(plain.to_vec())
    }

    async fn data_key(
        &self,
        wrapped: &[u8],
        context: &Context,
    ) -> Result<Arc<LessSafeKey>, KeyError> {
        let id = (wrapped.to_vec(), aad_string(context));
        if let Ok(cache) = self.cache.lock()
            && let Some((key, at)) = cache.get(&id)
            && at.elapsed() < CACHE_TTL
        {
            return Ok(key.clone());
        }
        let key = Arc::new(aead_key(&self.service.unwrap(wrapped, context).await?)?);
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= CACHE_MAX {
                cache.retain(|_, (_, at)| at.elapsed() < CACHE_TTL);
                if cache.len() >= CACHE_MAX {
                    cache.clear();
                }
            }
            cache.insert(id, (key.clone(), Instant::now()));
        }
        Ok(key)
    }
}

fn aead_key(bytes: &[u8]) -> Result<LessSafeKey, KeyError> {
    UnboundKey::new(&AES_256_GCM, bytes)
        .map(LessSafeKey::new)
        .map_err(|_| KeyError::Corrupt("a data key is not 256 bits".into()))
}

fn aad_string(context: &Context) -> String {
    serde_json::to_string(context).unwrap_or_default()
}

fn aad(context: &Context) -> Vec<u8> {
    aad_string(context).into_bytes()
}

#[cfg(test)]
pub(crate) mod fake {
    //! An in-process key service for unit tests: "wraps" by XOR with a
    //! fixed key and the context, and counts unwraps.
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[derive(Default)]
    pub struct FakeKeys {
        pub unwraps: Arc<AtomicUsize>,
    }

    fn mask(bytes: &[u8], context: &Context) -> Vec<u8> {
        let salt = aad_string(context).into_bytes();
        bytes
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ 0x5a ^ salt.get(i % salt.len().max(1)).copied().unwrap_or(0))
            .collect()
    }

    #[async_trait]
    impl KeyService for FakeKeys {
        async fn generate(&self, context: &Context) -> Result<(Vec<u8>, Vec<u8>), KeyError> {
            let mut key = vec![0u8; 32];
            aws_lc_rs::rand::fill(&mut key).map_err(|_| KeyError::Unavailable("rand".into()))?;
            let wrapped = mask(&key, context);
            Ok((key, wrapped))
        }

        async fn unwrap(&self, wrapped: &[u8], context: &Context) -> Result<Vec<u8>, KeyError> {
            self.unwraps.fetch_add(1, Ordering::Relaxed);
            Ok(mask(wrapped, context))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fake::FakeKeys;
    use super::*;
    use std::sync::atomic::Ordering;

    fn ctx(id: &str) -> Context {
        Context::from([("connection_id".to_owned(), id.to_owned())])
    }

    #[tokio::test]
    async fn a_sealed_secret_opens_only_in_its_own_context_and_never_shows_in_the_stored_form() {
        let sealer = Sealer::new(Box::new(FakeKeys::default()));
        let sealed = sealer
            .seal(&ctx("conn-a"), b"xoxb-very-secret")
            .await
            .expect("seal");
        let stored = serde_json::to_string(&sealed).expect("json");
        assert!(!stored.contains("very-secret"), "{stored}");
        assert_eq!(
            sealer.open(&ctx("conn-a"), &sealed).await.expect("open"),
            b"xoxb-very-secret"
        );
        assert!(matches!(
            sealer.open(&ctx("conn-b"), &sealed).await,
            Err(KeyError::Corrupt(_))
        ));
        let mut tampered = sealed.clone();
        let mut data = B64.decode(&tampered.data).expect("b64");
        data[0] ^= 1;
        tampered.data = B64.encode(data);
        assert!(matches!(
            sealer.open(&ctx("conn-a"), &tampered).await,
            Err(KeyError::Corrupt(_))
        ));
    }

    #[tokio::test]
    async fn each_seal_uses_a_fresh_key_and_nonce_and_an_unwrapped_key_is_cached() {
        let keys = FakeKeys::default();
        let unwraps = keys.unwraps.clone();
        let sealer = Sealer::new(Box::new(keys));
        let a = sealer.seal(&ctx("c"), b"same").await.expect("seal");
        let b = sealer.seal(&ctx("c"), b"same").await.expect("seal");
        assert_ne!(a.key, b.key);
        assert_ne!(a.nonce, b.nonce);
        assert_ne!(a.data, b.data);
        for _ in 0..5 {
            sealer.open(&ctx("c"), &a).await.expect("open");
        }
        assert_eq!(
            unwraps.load(Ordering::Relaxed),
            1,
            "one unwrap, then the cache"
        );
    }
}
