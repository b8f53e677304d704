//! Webhook URLs from target configuration: `WebhookUrl::parse` in both
//! modes, the WHATWG parse it builds on, and `is_forbidden_ip` on every IP
//! host and on addresses built straight from the input bytes.

#![no_main]

use libfuzzer_sys::fuzz_target;
use shared::domain::url::{WebhookUrl, embedded_ipv4, is_forbidden_ip};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use url::{Host, Url};

fuzz_target!(|data: &[u8]| {
    raw_addresses(data);

    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };

    // Strict mode (production): https only, no credentials, a public host.
    if let Ok(w) = WebhookUrl::parse(s, false) {
        let url = w.as_url();
        assert_eq!(url.scheme(), "https", "{s:?}");
        assert!(
            url.username().is_empty() && url.password().is_none(),
            "{s:?}"
        );
        match url.host() {
            Some(Host::Ipv4(ip)) => {
                assert!(!is_forbidden_ip(IpAddr::V4(ip)), "{s:?} reaches {ip}")
            }
            Some(Host::Ipv6(ip)) => {
                assert!(!is_forbidden_ip(IpAddr::V6(ip)), "{s:?} reaches {ip}")
            }
            Some(Host::Domain(d)) => assert!(d.contains('.'), "{s:?}: host {d:?}"),
            None => panic!("{s:?} accepted without a host"),
        }
        // Stored URLs are re-read from their text form: that text must
        // pass the same checks and mean the same URL.
        let again = WebhookUrl::parse(w.as_str(), false)
            .unwrap_or_else(|e| panic!("{s:?} -> {:?} refused on re-parse: {e}", w.as_str()));
        assert_eq!(again, w, "{s:?}");
        // Anything strict mode accepts, the local-testing mode accepts too.
        assert!(WebhookUrl::parse(s, true).is_ok(), "{s:?}");
    }

    // Local-testing mode: also http and private hosts.
    if let Ok(w) = WebhookUrl::parse(s, true) {
        let url = w.as_url();
        assert!(matches!(url.scheme(), "https" | "http"), "{s:?}");
        assert!(url.host().is_some(), "{s:?}");
    }

    // The plain WHATWG parse: classify any IP host.
    if let Ok(url) = Url::parse(s) {
        match url.host() {
            Some(Host::Ipv4(ip)) => {
                let _ = is_forbidden_ip(IpAddr::V4(ip));
            }
            Some(Host::Ipv6(ip)) => {
                let _ = is_forbidden_ip(IpAddr::V6(ip));
            }
            _ => {}
        }
    }
});

/// Addresses straight from the first 16 bytes (as DNS answers would give
/// them): classification never panics, and its documented rules hold.
fn raw_addresses(data: &[u8]) {
    let mut b = [0u8; 16];
    let n = data.len().min(16);
    b[..n].copy_from_slice(&data[..n]);
    let v4 = Ipv4Addr::new(b[0], b[1], b[2], b[3]);
    let v6 = Ipv6Addr::from(b);
    let v4_forbidden = is_forbidden_ip(IpAddr::V4(v4));
    let v6_forbidden = is_forbidden_ip(IpAddr::V6(v6));

    // An IPv6 address that carries a forbidden IPv4 one is forbidden.
    if embedded_ipv4(v6)
        .into_iter()
        .any(|e| is_forbidden_ip(IpAddr::V4(e)))
    {
        assert!(v6_forbidden, "{v6} embeds a forbidden IPv4 address");
    }
    // IPv4-mapped is always refused; NAT64 follows its IPv4 address.
    assert!(is_forbidden_ip(IpAddr::V6(v4.to_ipv6_mapped())), "{v4}");
    let [a, b2, c, d] = v4.octets();
    let nat64 = Ipv6Addr::new(
        0x64,
        0xff9b,
        0,
        0,
        0,
        0,
        u16::from_be_bytes([a, b2]),
        u16::from_be_bytes([c, d]),
    );
    assert_eq!(is_forbidden_ip(IpAddr::V6(nat64)), v4_forbidden, "{nat64}");
    // Loopback, private, link-local, unspecified and multicast never pass.
    if v4.is_loopback() || v4.is_private() || v4.is_link_local() || v4.is_unspecified() {
        assert!(v4_forbidden, "{v4}");
    }
    if v6.is_loopback() || v6.is_unspecified() || v6.is_multicast() {
        assert!(v6_forbidden, "{v6}");
    }
    if v6.is_unique_local() || v6.is_unicast_link_local() {
        assert!(v6_forbidden, "{v6}");
    }
}
