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

/// True for any address a webhook must never reach: loopback, private,
/// link-local (incl. cloud metadata), CGNAT, benchmarking, documentation,
/// multicast, broadcast, unspecified, reserved, ULA, and IPv4 embedded in
/// IPv6 (mapped, compatible, NAT64, 6to4) when the embedded address is one.
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
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // CGNAT 100.64/10
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || a >= 240 // reserved
}

fn is_forbidden_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_forbidden_v4(v4);
    }
    let seg = ip.segments();
    // IPv4-compatible (::a.b.c.d), deprecated but still routable on some stacks.
    if seg[..6].iter().all(|s| *s == 0) {
        return true;
    }
    // NAT64 64:ff9b::/96 and 6to4 2002::/16 embed an IPv4 address.
    if seg[0] == 0x64 && seg[1] == 0xff9b {
        let v4 = Ipv4Addr::new(
            (seg[6] >> 8) as u8,
            seg[6] as u8,
            (seg[7] >> 8) as u8,
            seg[7] as u8,
        );
        return is_forbidden_v4(v4);
    }
    if seg[0] == 0x2002 {
        let v4 = Ipv4Addr::new(
            (seg[1] >> 8) as u8,
            seg[1] as u8,
            (seg[2] >> 8) as u8,
            seg[2] as u8,
        );
        return is_forbidden_v4(v4);
    }
    ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || (seg[0] & 0xfe00) == 0xfc00 // ULA fc00::/7
        || (seg[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
        || (seg[0] & 0xffc0) == 0xfec0 // site-local fec0::/10
        || (seg[0] == 0x2001 && seg[1] == 0x0db8) // documentation
        || (seg[0] == 0x2001 && seg[1] < 0x0200) // TEREDO, ORCHID, benchmarking
        || seg[0] == 0x0100 && seg[1..4].iter().all(|s| *s == 0) // discard-only
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
}
