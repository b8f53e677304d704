//! Webhook URLs, checked against SSRF at the edge (syntax and IP literals)
//! and again after DNS resolution (see [`is_forbidden_ip`]).

use serde::{Deserialize, Serialize};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use url::{Host, Url};

/// Why a webhook URL was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
pub enum UrlError {
    #[error("not a valid URL: {0}")]
    Syntax(String),
    #[error("scheme must be https")]
    Scheme,
    #[error("URL must not carry credentials")]
    Credentials,
    #[error("URL has no host")]
    NoHost,
    #[error("host is not a public address: {0}")]
    Forbidden(IpAddr),
    #[error("host name is not allowed: {0}")]
    ForbiddenName(String),
}

/// A webhook URL that passed the edge checks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct WebhookUrl(Url);

impl WebhookUrl {
    /// Validates `s`. Only https is accepted, unless `allow_private_hosts`
    /// (a local-testing setting, off by default) also permits http and
    /// loopback/private addresses.
    ///
    /// Host names are parsed the WHATWG way, so odd IPv4 spellings
    /// (`2130706433`, `0177.0.0.1`, `127.1`, `0x7f.1`) become IP literals
    /// and are checked like any other.
    pub fn parse(s: &str, allow_private_hosts: bool) -> Result<Self, UrlError> {
        let url = Url::parse(s.trim()).map_err(|e| UrlError::Syntax(e.to_string()))?;
        match url.scheme() {
            "https" => {}
            "http" if allow_private_hosts => {}
            _ => return Err(UrlError::Scheme),
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(UrlError::Credentials);
        }
        if !allow_private_hosts {
            match url.host().ok_or(UrlError::NoHost)? {
                Host::Ipv4(ip) => check_ip(IpAddr::V4(ip))?,
                Host::Ipv6(ip) => check_ip(IpAddr::V6(ip))?,
                Host::Domain(name) => check_name(name)?,
            }
        } else if url.host().is_none() {
            return Err(UrlError::NoHost);
        }
        Ok(Self(url))
    }

    /// The URL.
    pub fn as_url(&self) -> &Url {
        &self.0
    }

    /// The URL text.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl<'de> Deserialize<'de> for WebhookUrl {
    /// Stored URLs were checked when written; the network check still runs
    /// at send time. Re-parsing here keeps the syntax rules.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Url::parse(&s).map(Self).map_err(serde::de::Error::custom)
    }
}

fn check_ip(ip: IpAddr) -> Result<(), UrlError> {
    if is_forbidden_ip(ip) {
        Err(UrlError::Forbidden(ip))
    } else {
        Ok(())
    }
}

fn check_name(name: &str) -> Result<(), UrlError> {
    let lower = name.trim_end_matches('.').to_ascii_lowercase();
    let forbidden = lower == "localhost"
        || lower.ends_with(".localhost")
        || lower.ends_with(".internal")
        || lower.ends_with(".local")
        || lower == "metadata"
        || !lower.contains('.');
    if forbidden {
        Err(UrlError::ForbiddenName(lower))
    } else {
        Ok(())
    }
}

/// True for any address a webhook must never reach: unspecified, loopback,
/// private, link-local (incl. cloud metadata), shared (CGNAT), benchmarking,
/// documentation, multicast, broadcast and reserved IPv4 ranges; for IPv6
/// anything outside global unicast `2000::/3` (except NAT64), unique-local,
/// link- and site-local, multicast, documentation and the IETF protocol
/// block `2001::/23`. An IPv6 address that embeds an IPv4 one
/// ([`embedded_ipv4`]) is also refused when the embedded address is.
pub fn is_forbidden_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_forbidden_v4(v4),
        IpAddr::V6(v6) => is_forbidden_v6(v6),
    }
}

fn is_forbidden_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0 // "this network" 0/8
        || (a == 100 && (64..128).contains(&b)) // shared address space 100.64/10
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments 192.0.0/24
        || (a == 192 && b == 88 && c == 99) // 6to4 relay anycast 192.88.99/24
        || (a == 198 && (b == 18 || b == 19)) // benchmarking 198.18/15
        || a >= 240 // reserved 240/4
}

/// The IPv4 addresses an IPv6 address carries, by the transition mechanisms
/// that put one inside: IPv4-mapped `::ffff:a.b.c.d`, IPv4-translated
/// (SIIT) `::ffff:0:a.b.c.d`, IPv4-compatible `::a.b.c.d`, NAT64
/// `64:ff9b::a.b.c.d`, 6to4 `2002:AABB:CCDD::` and Teredo `2001:0:S:S::~C`
/// (server S, client C bit-inverted in the last 32 bits).
pub fn embedded_ipv4(ip: Ipv6Addr) -> Vec<Ipv4Addr> {
    let seg = ip.segments();
    let v4 = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    let mut found = Vec::new();
    match seg {
        [0, 0, 0, 0, 0, 0xffff, hi, lo] // mapped
        | [0, 0, 0, 0, 0xffff, 0, hi, lo] // translated
        | [0, 0, 0, 0, 0, 0, hi, lo] // compatible
        | [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => found.push(v4(hi, lo)), // NAT64
        [0x2002, hi, lo, ..] => found.push(v4(hi, lo)),                  // 6to4
        [0x2001, 0, s_hi, s_lo, _, _, c_hi, c_lo] => {
            // Teredo: server, then the client (obfuscated by inversion).
            found.push(v4(s_hi, s_lo));
            found.push(v4(!c_hi, !c_lo));
        }
        _ => {}
    }
    found
}

fn is_forbidden_v6(ip: Ipv6Addr) -> bool {
    if embedded_ipv4(ip).into_iter().any(is_forbidden_v4) {
        return true;
    }
    let seg = ip.segments();
    let nat64 = seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0];
    // Global unicast is 2000::/3; outside it only the NAT64 well-known
    // prefix (checked through its IPv4 address above) can be public. This
    // refuses ::/8 (unspecified, loopback, mapped, translated, compatible),
    // 64:ff9b:1::/48 (local-use NAT64), 100::/64 (discard), fc00::/7 (ULA),
    // fe80::/10 (link-local), fec0::/10 (site-local), ff00::/8 (multicast)
    // and 5f00::/16 (SRv6 SIDs). IPv4-mapped and -compatible forms of a
    // public address are refused too: a webhook has no need for them.
    if (seg[0] & 0xe000) != 0x2000 {
        return !nat64;
    }
    match seg[0] {
        // IETF protocol assignments 2001::/23 (Teredo, benchmarking, ORCHID)
        // and documentation 2001:db8::/32.
        0x2001 => seg[1] < 0x0200 || seg[1] == 0x0db8,
        // Documentation 3fff::/20.
        0x3fff => seg[1] < 0x1000,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_at_least_twenty_forbidden_url_forms() {
        let forbidden = [
            "http://example.com/hook",
            "ftp://example.com/hook",
            "https://127.0.0.1/",
            "https://localhost/",
            "https://foo.localhost/",
            "https://10.1.2.3/",
            "https://172.16.0.1/",
            "https://192.168.1.1/",
            "https://169.254.169.254/latest/meta-data/",
            "https://100.64.0.1/",
            "https://0.0.0.0/",
            "https://2130706433/",
            "https://0177.0.0.1/",
            "https://0x7f.0.0.1/",
            "https://127.1/",
            "https://[::1]/",
            "https://[::]/",
            "https://[::ffff:127.0.0.1]/",
            "https://[::ffff:169.254.169.254]/",
            "https://[fd00::1]/",
            "https://[fe80::1]/",
            "https://[64:ff9b::a9fe:a9fe]/",
            "https://[2002:7f00:1::]/",
            "https://224.0.0.1/",
            "https://255.255.255.255/",
            "https://192.0.2.10/",
            "https://198.18.0.1/",
            "https://user:pass@example.com/",
            "https://metadata.google.internal/",
            "https://intranet/",
            "not a url",
        ];
        assert!(forbidden.len() >= 20);
        for url in forbidden {
            assert!(
                WebhookUrl::parse(url, false).is_err(),
                "{url} must be refused"
            );
        }
    }

    #[test]
    fn accepts_public_https_urls() {
        for url in [
            "https://hooks.example.com/reports",
            "https://93.184.215.14:8443/x",
            "https://[2606:4700::1111]/x",
        ] {
            assert!(WebhookUrl::parse(url, false).is_ok(), "{url} is public");
        }
    }

    #[test]
    fn loopback_http_is_allowed_only_by_the_explicit_setting() {
        let url = "http://127.0.0.1:9000/hook";
        assert!(WebhookUrl::parse(url, false).is_err());
        assert!(WebhookUrl::parse(url, true).is_ok());
    }

    #[test]
    fn resolved_addresses_are_classified() {
        assert!(is_forbidden_ip("169.254.169.254".parse().expect("ip")));
        assert!(is_forbidden_ip("fd12::1".parse().expect("ip")));
        assert!(!is_forbidden_ip("1.1.1.1".parse().expect("ip")));
        assert!(!is_forbidden_ip("2606:4700::1111".parse().expect("ip")));
    }

    #[test]
    fn given_ip_literal_urls_in_every_form_when_checked_then_only_public_addresses_pass() {
        // (URL, allowed)
        let cases = [
            // IPv4
            ("https://93.184.215.14/h", true),
            ("https://1.1.1.1/h", true),
            ("https://0.1.2.3/", false),         // this network
            ("https://100.127.255.254/", false), // shared 100.64/10
            ("https://100.128.0.1/", true),      // just past it
            ("https://192.0.0.8/", false),       // IETF protocol assignments
            ("https://192.88.99.1/", false),     // 6to4 relay anycast
            ("https://198.19.255.1/", false),    // benchmarking
            ("https://198.51.100.7/", false),    // documentation
            ("https://203.0.113.9/", false),     // documentation
            ("https://240.0.0.1/", false),       // reserved
            ("https://239.255.255.250/", false), // multicast
            // IPv6, plain
            ("https://[2606:4700::1111]/", true),
            ("https://[2a00:1450:4001:80b::200e]/", true),
            ("https://[::]/", false),           // unspecified
            ("https://[::1]/", false),          // loopback
            ("https://[fe80::1]/", false),      // link-local
            ("https://[febf::1]/", false),      // link-local, top of /10
            ("https://[fec0::1]/", false),      // site-local
            ("https://[fc00::1]/", false),      // unique-local
            ("https://[fdff:ffff::1]/", false), // unique-local
            ("https://[ff02::1]/", false),      // multicast
            ("https://[ff0e::1]/", false),      // global multicast
            ("https://[2001:db8::1]/", false),  // documentation
            ("https://[3fff::1]/", false),      // documentation (RFC 9637)
            ("https://[2001:2::1]/", false),    // benchmarking
            ("https://[2001:10::1]/", false),   // ORCHID
            ("https://[100::1]/", false),       // discard-only
            ("https://[5f00::1]/", false),      // SRv6 SIDs
            ("https://[4000::1]/", false),      // unallocated
            // IPv6 carrying IPv4: mapped, translated (SIIT), compatible
            ("https://[::ffff:127.0.0.1]/", false),
            ("https://[::ffff:7f00:1]/", false),
            ("https://[0:0:0:0:0:ffff:169.254.169.254]/", false),
            ("https://[::ffff:0:7f00:1]/", false), // the hostile-input case
            ("https://[::ffff:0:a9fe:a9fe]/", false),
            ("https://[::ffff:0:a00:1]/", false),
            ("https://[::ffff:93.184.215.14]/", false), // public, but never needed
            ("https://[::127.0.0.1]/", false),
            ("https://[::a9fe:a9fe]/", false),
            // NAT64
            ("https://[64:ff9b::7f00:1]/", false),
            ("https://[64:ff9b::a9fe:a9fe]/", false),
            ("https://[64:ff9b::c0a8:101]/", false),
            ("https://[64:ff9b::5db8:d70e]/", true), // 93.184.215.14
            ("https://[64:ff9b:1::a00:1]/", false),  // local-use NAT64
            ("https://[64:ff9b:1::5db8:d70e]/", false),
            // 6to4
            ("https://[2002:7f00:1::1]/", false),
            ("https://[2002:a9fe:a9fe::]/", false),
            ("https://[2002:c0a8:101::1]/", false),
            ("https://[2002:5db8:d70e::1]/", true),
            // Teredo: server 65.54.227.120, client 127.0.0.1 (inverted 80ff:fffe)
            ("https://[2001:0:4136:e378:8000:63bf:80ff:fffe]/", false),
            ("https://[2001:0:4136:e378:8000:63bf:a2ff:fffe]/", false),
        ];
        assert!(cases.len() >= 30);
        for (url, allowed) in cases {
            assert_eq!(
                WebhookUrl::parse(url, false).is_ok(),
                allowed,
                "{url} should be {}",
                if allowed { "allowed" } else { "refused" }
            );
        }
    }

    #[test]
    fn given_transition_addresses_when_unpacked_then_the_embedded_ipv4_is_found() {
        let v6 = |s: &str| s.parse::<Ipv6Addr>().expect("ipv6");
        let v4 = |s: &str| s.parse::<Ipv4Addr>().expect("ipv4");
        assert_eq!(embedded_ipv4(v6("::ffff:0:7f00:1")), [v4("127.0.0.1")]);
        assert_eq!(
            embedded_ipv4(v6("::ffff:a9fe:a9fe")),
            [v4("169.254.169.254")]
        );
        assert_eq!(embedded_ipv4(v6("64:ff9b::a00:1")), [v4("10.0.0.1")]);
        assert_eq!(embedded_ipv4(v6("2002:c0a8:101::")), [v4("192.168.1.1")]);
        assert_eq!(
            embedded_ipv4(v6("2001:0:4136:e378:8000:63bf:3fff:fdd2")),
            [v4("65.54.227.120"), v4("192.0.2.45")]
        );
        assert!(embedded_ipv4(v6("2606:4700::1111")).is_empty());
    }

    #[test]
    fn given_resolved_transition_addresses_when_vetted_then_embedded_private_ones_are_forbidden() {
        // The same check runs on what DNS returns.
        for ip in ["::ffff:0:7f00:1", "64:ff9b::a9fe:a9fe", "2002:a00:1::1"] {
            assert!(is_forbidden_ip(ip.parse().expect("ip")), "{ip}");
        }
        assert!(!is_forbidden_ip("64:ff9b::101:101".parse().expect("ip")));
    }
}
