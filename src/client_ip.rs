//! Stage 1: the client address. One resolver used by everything (access log
//! now; rate limits and IP lists later).
//!
//! `X-Forwarded-For` / `Forwarded` are believed only when the socket peer is a
//! configured trusted proxy. The chain is then walked right to left, skipping
//! trusted proxies; the first untrusted address is the client. An entry that
//! does not parse stops the walk at the last trusted hop, so garbage can never
//! make a client pick its own address.

use std::net::{IpAddr, SocketAddr};

use http::HeaderMap;
use ipnet::IpNet;

use crate::config::file::ClientIpHeader;

/// Compiled `server.trusted_proxies` plus the header they use.
#[derive(Debug, Clone)]
pub struct TrustedProxies {
    nets: Vec<IpNet>,
    header: ClientIpHeader,
}

impl TrustedProxies {
    /// Builds the resolver.
    pub fn new(nets: Vec<IpNet>, header: ClientIpHeader) -> Self {
        Self { nets, header }
    }

    /// True when `ip` lies in a trusted proxy range.
    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.nets.iter().any(|n| n.contains(&ip))
    }

    /// The client address for a request from `peer` with `headers`.
    pub fn resolve(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let mut client = peer.to_canonical();
        if self.nets.is_empty() || !self.is_trusted(client) {
            return client;
        }
        let name = match self.header {
            ClientIpHeader::XForwardedFor => "x-forwarded-for",
            ClientIpHeader::Forwarded => "forwarded",
        };
        for value in headers.get_all(name).iter().rev() {
            let Ok(value) = value.to_str() else {
                return client;
            };
            for entry in value.rsplit(',') {
                let parsed = match self.header {
                    ClientIpHeader::XForwardedFor => parse_addr(entry.trim()),
                    ClientIpHeader::Forwarded => forwarded_for(entry),
                };
                let Some(ip) = parsed else {
                    return client;
                };
                client = ip.to_canonical();
                if !self.is_trusted(client) {
                    return client;
                }
            }
        }
        client
    }
}

/// Parses `1.2.3.4`, `1.2.3.4:80`, `2001:db8::1`, `[2001:db8::1]:80`.
fn parse_addr(s: &str) -> Option<IpAddr> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip);
    }
    s.parse::<SocketAddr>().ok().map(|sa| sa.ip())
}

/// The `for=` parameter of one RFC 7239 `Forwarded` element.
fn forwarded_for(element: &str) -> Option<IpAddr> {
    element.split(';').find_map(|pair| {
        let (k, v) = pair.trim().split_once('=')?;
        if !k.trim().eq_ignore_ascii_case("for") {
            return None;
        }
        let v = v.trim().trim_matches('"');
        let v = v.strip_prefix('[').map_or(v, |rest| {
            // "[2001:db8::1]:4711" or "[2001:db8::1]"
            rest.split_once(']').map_or(rest, |(ip, _)| ip)
        });
        parse_addr(v)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or(IpAddr::from([0, 0, 0, 0]))
    }

    fn xff(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_str(v).unwrap_or(HeaderValue::from_static("")),
        );
        h
    }

    fn trusted(nets: &[&str], header: ClientIpHeader) -> TrustedProxies {
        TrustedProxies::new(nets.iter().filter_map(|n| n.parse().ok()).collect(), header)
    }

    #[test]
    fn untrusted_peer_is_the_client() {
        let t = trusted(&["10.0.0.0/8"], ClientIpHeader::XForwardedFor);
        assert_eq!(
            t.resolve(ip("203.0.113.9"), &xff("1.1.1.1")),
            ip("203.0.113.9")
        );
        let none = trusted(&[], ClientIpHeader::XForwardedFor);
        assert_eq!(
            none.resolve(ip("10.0.0.1"), &xff("1.1.1.1")),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn walks_right_to_left() {
        let t = trusted(&["10.0.0.0/8"], ClientIpHeader::XForwardedFor);
        // spoofed leftmost entry is ignored: the first untrusted from the right wins
        let h = xff("6.6.6.6, 198.51.100.7, 10.0.0.2");
        assert_eq!(t.resolve(ip("10.0.0.1"), &h), ip("198.51.100.7"));
        // garbage stops the walk at the last trusted hop
        assert_eq!(
            t.resolve(ip("10.0.0.1"), &xff("1.1.1.1, nonsense")),
            ip("10.0.0.1")
        );
        // all trusted: the leftmost
        assert_eq!(t.resolve(ip("10.0.0.1"), &xff("10.9.9.9")), ip("10.9.9.9"));
        // several header lines are one list, in order
        let mut h = HeaderMap::new();
        h.append("x-forwarded-for", HeaderValue::from_static("5.5.5.5"));
        h.append("x-forwarded-for", HeaderValue::from_static("10.0.0.3"));
        assert_eq!(t.resolve(ip("10.0.0.1"), &h), ip("5.5.5.5"));
    }

    #[test]
    fn mapped_ipv6_peer() {
        let t = trusted(&["10.0.0.0/8"], ClientIpHeader::XForwardedFor);
        assert_eq!(
            t.resolve(ip("::ffff:10.0.0.1"), &xff("7.7.7.7")),
            ip("7.7.7.7")
        );
    }

    #[test]
    fn forwarded_header() {
        let t = trusted(&["10.0.0.0/8"], ClientIpHeader::Forwarded);
        let mut h = HeaderMap::new();
        h.insert(
            "forwarded",
            HeaderValue::from_static("for=192.0.2.60;proto=https, for=\"[2001:db8::1]:4711\""),
        );
        assert_eq!(t.resolve(ip("10.0.0.1"), &h), ip("2001:db8::1"));
        h.insert("forwarded", HeaderValue::from_static("for=unknown"));
        assert_eq!(t.resolve(ip("10.0.0.1"), &h), ip("10.0.0.1"));
    }
}
