//! Download-link tokens (`?token=` on the links function URL): `verify` on
//! arbitrary text never panics and accepts only what the signer issued;
//! issued tokens round-trip; a one-byte change never verifies as another
//! object.
//!
//! Input: bytes 0-7 (little-endian i64) pick an expiry in milliseconds,
//! byte 8 the position and byte 9 the value of a one-byte mutation; the
//! rest, as text, is both the token to verify and the object key to issue.

#![no_main]

use libfuzzer_sys::fuzz_target;
use shared::domain::{LinkError, LinkSigner, Timestamp};

const KEY: &str = "fuzz-signing-key-0123456789abcdef";
const OTHER: &str = "another-signing-key-fedcba9876543210";

fuzz_target!(|data: &[u8]| {
    let signer = LinkSigner::from_list(KEY).expect("a 32+ character key");
    let other = LinkSigner::from_list(OTHER).expect("a 32+ character key");
    let rotated = LinkSigner::from_list(&format!("{OTHER},{KEY}")).expect("two keys");
    // 2026-01-01T00:00:00Z.
    let now = Timestamp::from_unix_millis(1_767_225_600_000).expect("in range");

    // Arbitrary text as a token (the whole input).
    let whole = String::from_utf8_lossy(data);
    accepted_only_if_issued(&signer, &whole, now);

    let (Some(head), Some(text)) = (data.get(..10), data.get(10..)) else {
        return;
    };
    let text = String::from_utf8_lossy(text);
    accepted_only_if_issued(&signer, &text, now);

    // Round trip: any key, any expiry in range, checked just before it.
    let mut ms = [0u8; 8];
    ms.copy_from_slice(&head[..8]);
    let span = Timestamp::MAX.unix_millis() - Timestamp::MIN.unix_millis();
    let offset = i64::from_le_bytes(ms).rem_euclid(span + 1);
    let Some(expires_at) = Timestamp::from_unix_millis(Timestamp::MIN.unix_millis() + offset)
    else {
        panic!("{offset} ms after MIN is in range");
    };
    let key: &str = &text;
    let token = signer.issue(key, expires_at);
    // Tokens travel in a query string: URL-safe, no padding.
    assert!(
        token
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.')),
        "{token}"
    );
    // The token carries whole seconds (the Unix seconds, truncated toward
    // zero); the claim's expiry is that second.
    let secs = expires_at.unix_millis() / 1000;
    let Some(claimed_expiry) = Timestamp::from_unix_millis(secs * 1000) else {
        panic!("{secs} s is in range");
    };
    let before = Timestamp::from_unix_millis(claimed_expiry.unix_millis() - 1);
    if let Some(before) = before {
        for s in [&signer, &rotated] {
            let claim = s
                .verify(&token, before)
                .unwrap_or_else(|e| panic!("issued token {token:?} refused: {e}"));
            assert_eq!(claim.key, key);
            assert_eq!(claim.expires_at, claimed_expiry);
        }
    }
    assert_eq!(
        signer.verify(&token, claimed_expiry),
        Err(LinkError::Expired),
        "{token}"
    );
    assert_eq!(
        other.verify(&token, Timestamp::MIN),
        Err(LinkError::BadSignature),
        "another key verified {token}"
    );

    // One byte changed: never a claim for a different object (or expiry).
    let mut bytes = token.clone().into_bytes();
    let at = usize::from(head[8]) % bytes.len();
    bytes[at] = head[9];
    let mutated = String::from_utf8_lossy(&bytes);
    if mutated != token
        && let Ok(claim) = signer.verify(&mutated, Timestamp::MIN)
    {
        panic!("mutated token {mutated:?} (from {token:?}) verified: {claim:?}");
    }
});

/// If `verify` accepts `token`, it is exactly the token the signer issues
/// for the claim (one spelling per claim, no malleability), and unexpired.
fn accepted_only_if_issued(signer: &LinkSigner, token: &str, now: Timestamp) {
    if let Ok(claim) = signer.verify(token, now) {
        assert!(claim.expires_at > now);
        assert_eq!(signer.issue(&claim.key, claim.expires_at), token);
    }
}
