//! Download-link tokens that outlive Lambda credentials: an object key and an
//! expiry, signed with HMAC-SHA256. The links function checks the token and
//! answers with a fresh, short-lived presigned URL. Several keys may be
//! active so the signing key can rotate: the first signs, any verifies.

use super::Timestamp;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;

/// Shortest signing key accepted (characters of the configured secret).
pub const MIN_KEY_LEN: usize = 32;

/// Why a token was refused. Every case is answered with 403.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    #[error("malformed token")]
    Malformed,
    #[error("bad signature")]
    BadSignature,
    #[error("link expired")]
    Expired,
    /// Its expiry is later than any link this stack issues
    /// (`DownloadLinkTtlSeconds` from now): minted with a leaked key.
    #[error("link lifetime beyond the configured maximum")]
    BeyondLifetime,
}

/// A verified token's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkClaim {
    pub key: String,
    pub expires_at: Timestamp,
}

impl LinkClaim {
    /// Refuses a claim whose expiry is later than `now + max_ttl` (plus a
    /// minute for clocks): the issuer never signs one, so it was minted by
    /// someone holding a key.
    pub fn within(self, now: Timestamp, max_ttl: std::time::Duration) -> Result<Self, LinkError> {
        let limit = i128::from(now.unix_millis())
            + i128::try_from(max_ttl.as_millis()).unwrap_or(i128::MAX / 2)
            + 60_000;
        if i128::from(self.expires_at.unix_millis()) > limit {
            return Err(LinkError::BeyondLifetime);
        }
        Ok(self)
    }
}

/// Signs and verifies link tokens.
#[derive(Clone)]
pub struct LinkSigner {
    keys: Vec<SecretString>,
}

impl std::fmt::Debug for LinkSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LinkSigner({} keys, redacted)", self.keys.len())
    }
}

impl LinkSigner {
    /// From a comma-separated list of keys, newest first.
    pub fn from_list(list: &str) -> Result<Self, String> {
        let keys: Vec<SecretString> = list
            .split(',')
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .map(|k| SecretString::from(k.to_owned()))
            .collect();
        if keys.is_empty() {
            return Err("no signing key".into());
        }
        if keys.iter().any(|k| k.expose_secret().len() < MIN_KEY_LEN) {
            return Err(format!(
                "every signing key needs at least {MIN_KEY_LEN} characters"
            ));
        }
        Ok(Self { keys })
    }

    fn mac(key: &SecretString, domain: &[u8], payload: &[u8]) -> Hmac<Sha256> {
        // HMAC takes keys of any length, so this cannot fail.
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key.expose_secret().as_bytes())
            .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
        mac.update(domain);
        mac.update(payload);
        mac
    }

    /// `payload.tag`, both base64url, the tag the first `tag_len` bytes of
    /// HMAC-SHA256(newest key, `domain` + payload).
    fn sign(&self, domain: &[u8], payload: &str, tag_len: usize) -> String {
        let tag = Self::mac(&self.keys[0], domain, payload.as_bytes())
            .finalize()
            .into_bytes();
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(payload),
            URL_SAFE_NO_PAD.encode(&tag[..tag_len])
        )
    }

    /// The payload of a token [`Self::sign`] made with any of the keys
    /// (checked in constant time).
    fn open(&self, domain: &[u8], token: &str, tag_len: usize) -> Result<String, LinkError> {
        if token.len() > 4096 {
            return Err(LinkError::Malformed);
        }
        let (payload, tag) = token.split_once('.').ok_or(LinkError::Malformed)?;
        let payload = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| LinkError::Malformed)?;
        let tag = URL_SAFE_NO_PAD
            .decode(tag)
            .map_err(|_| LinkError::Malformed)?;
        let holds = |k: &SecretString| {
            Self::mac(k, domain, &payload)
                .verify_truncated_left(&tag)
                .is_ok()
        };
        if tag.len() != tag_len || !self.keys.iter().any(holds) {
            return Err(LinkError::BadSignature);
        }
        String::from_utf8(payload).map_err(|_| LinkError::Malformed)
    }

    /// A token for `key` valid until `expires_at`.
    pub fn issue(&self, key: &str, expires_at: Timestamp) -> String {
        let payload = format!("{}\n{key}", expires_at.unix_millis() / 1000);
        self.sign(DOWNLOAD, &payload, 32)
    }

    /// Checks the signature (against every key, in constant time) and then
    /// the expiry.
    pub fn verify(&self, token: &str, now: Timestamp) -> Result<LinkClaim, LinkError> {
        let text = self.open(DOWNLOAD, token, 32)?;
        let (expires, key) = text.split_once('\n').ok_or(LinkError::Malformed)?;
        let expires: i64 = expires.parse().map_err(|_| LinkError::Malformed)?;
        let expires_at = Timestamp::from_unix_millis(expires.saturating_mul(1000))
            .ok_or(LinkError::Malformed)?;
        if now.unix_millis() >= expires_at.unix_millis() {
            return Err(LinkError::Expired);
        }
        Ok(LinkClaim {
            key: key.to_owned(),
            expires_at,
        })
    }

    /// The unsubscribe token of `address` (any case) for `target_id`
    /// (RFC 8058 links: one per recipient of a target, with no expiry; they
    /// stop working when the target is deleted). The address is not in the
    /// token, only a digest of it, so the link names no one; the links
    /// function finds the recipient among the target's.
    pub fn issue_unsubscribe(&self, target_id: &str, address: &str) -> String {
        let payload = format!("{target_id}\n{}", address_digest(address));
        self.sign(UNSUBSCRIBE, &payload, 16)
    }

    /// The target id and address digest of an unsubscribe token, once its
    /// signature holds.
    pub fn verify_unsubscribe(&self, token: &str) -> Result<(String, String), LinkError> {
        let text = self.open(UNSUBSCRIBE, token, 16)?;
        let (target, digest) = text.split_once('\n').ok_or(LinkError::Malformed)?;
        Ok((target.to_owned(), digest.to_owned()))
    }
}

/// What a download token's MAC covers first, so no token of one kind is
/// ever valid as the other.
const DOWNLOAD: &[u8] = b"report-delivery-link.v1\n";
/// The same for unsubscribe tokens.
const UNSUBSCRIBE: &[u8] = b"report-delivery-unsubscribe.v1\n";

/// The digest an unsubscribe token carries for an address: SHA-256 of the
/// lower-cased address, 24 hex digits.
pub fn address_digest(address: &str) -> String {
    use sha2::Digest as _;
    let hash = Sha256::digest(address.trim().to_ascii_lowercase().as_bytes());
    hash.iter().take(12).map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsubscribe_tokens_name_a_target_and_an_address_and_refuse_tampering() {
        let key = "k".repeat(32);
        let signer = LinkSigner::from_list(&key).expect("key");
        let token = signer.issue_unsubscribe("tgt-1", "Ann@Example.com");
        assert_eq!(
            signer.verify_unsubscribe(&token),
            Ok(("tgt-1".to_owned(), address_digest("ann@example.com")))
        );
        assert!(
            !token.contains("ann"),
            "the token does not name the address"
        );
        let (payload, tag) = token.split_once('.').expect("two parts");
        let other = URL_SAFE_NO_PAD.encode(format!("tgt-2\n{}", address_digest("ann@example.com")));
        for forged in [
            format!("{other}.{tag}"),
            format!("{payload}.{}", URL_SAFE_NO_PAD.encode([0u8; 16])),
            format!("{payload}.{}", &tag[..tag.len() - 2]),
            signer.issue(
                &format!("tgt-1\n{}", address_digest("ann@example.com")),
                Timestamp::now(),
            ),
            "x".into(),
        ] {
            assert!(signer.verify_unsubscribe(&forged).is_err(), "{forged}");
        }
        // After a rotation ("new,old") the old key's tokens still hold.
        let rotated = LinkSigner::from_list(&format!("{},{key}", "n".repeat(32))).expect("keys");
        assert!(rotated.verify_unsubscribe(&token).is_ok());
    }

    #[test]
    fn a_claim_beyond_the_configured_lifetime_is_refused() {
        let now = Timestamp::from_unix_millis(1_800_000_000_000).expect("time");
        let day = std::time::Duration::from_secs(86_400);
        let claim = |secs: i64| LinkClaim {
            key: "reports/x.pdf".into(),
            expires_at: Timestamp::from_unix_millis(1_800_000_000_000 + secs * 1000).expect("time"),
        };
        assert!(claim(86_400).within(now, day).is_ok());
        assert!(
            claim(86_400 + 60).within(now, day).is_ok(),
            "a minute for clocks"
        );
        assert_eq!(
            claim(86_400 + 61).within(now, day),
            Err(LinkError::BeyondLifetime)
        );
        assert_eq!(
            claim(100 * 86_400).within(now, day),
            Err(LinkError::BeyondLifetime)
        );
    }

    const KEY: &str = "0123456789abcdef0123456789abcdef";
    const OLD: &str = "fedcba9876543210fedcba9876543210";

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_unix_millis(secs * 1000).expect("valid")
    }

    #[test]
    fn tokens_round_trip_until_they_expire() {
        let s = LinkSigner::from_list(KEY).expect("key");
        let t = s.issue("reports/r/e/report.pdf", at(2_000_000_000));
        let claim = s.verify(&t, at(1_999_999_999)).expect("valid");
        assert_eq!(claim.key, "reports/r/e/report.pdf");
        assert_eq!(s.verify(&t, at(2_000_000_000)), Err(LinkError::Expired));
    }

    #[test]
    fn tampered_tokens_are_refused() {
        let s = LinkSigner::from_list(KEY).expect("key");
        let t = s.issue("reports/a.pdf", at(2_000_000_000));
        let (payload, tag) = t.split_once('.').expect("two parts");
        let forged_payload = URL_SAFE_NO_PAD.encode("2000000000\nreports/b.pdf");
        assert_eq!(
            s.verify(&format!("{forged_payload}.{tag}"), at(0)),
            Err(LinkError::BadSignature)
        );
        let longer = URL_SAFE_NO_PAD.encode("9999999999\nreports/a.pdf");
        assert_eq!(
            s.verify(&format!("{longer}.{tag}"), at(0)),
            Err(LinkError::BadSignature)
        );
        assert_eq!(
            s.verify(&format!("{payload}.AAAA"), at(0)),
            Err(LinkError::BadSignature)
        );
        assert_eq!(s.verify("garbage", at(0)), Err(LinkError::Malformed));
        assert_eq!(s.verify("a.b.c", at(0)), Err(LinkError::Malformed));
        let other = LinkSigner::from_list(OLD).expect("key");
        assert_eq!(other.verify(&t, at(0)), Err(LinkError::BadSignature));
    }

    #[test]
    fn rotation_keeps_old_links_working() {
        let old = LinkSigner::from_list(OLD).expect("key");
        let t = old.issue("reports/a.pdf", at(2_000_000_000));
        let rotated = LinkSigner::from_list(&format!("{KEY},{OLD}")).expect("keys");
        assert!(rotated.verify(&t, at(0)).is_ok());
        assert!(LinkSigner::from_list("short").is_err());
        assert!(LinkSigner::from_list(" , ").is_err());
    }
}
