//! Header hygiene, in both directions.
//!
//! * Hop-by-hop headers (RFC 9110 §7.6.1), and every header a `Connection`
//!   header names, are removed from requests before any stage reads them and
//!   from upstream responses before anything is added. Gateway-set headers are
//!   added after removal, so a client (or upstream) can never strip one.
//! * Stage 11: security headers are set on every response, rejections
//!   included, from values compiled once at config load.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Headers that only describe one connection.
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
];

/// Upstream headers that advertise implementation details.
const ALWAYS_STRIP: [HeaderName; 4] = [
    header::SERVER,
    HeaderName::from_static("x-powered-by"),
    HeaderName::from_static("x-aspnet-version"),
    HeaderName::from_static("x-aspnetmvc-version"),
];

/// Removes hop-by-hop headers and the headers `Connection` names.
pub fn strip_hop_by_hop(h: &mut HeaderMap) {
    if h.contains_key(header::CONNECTION) {
        // Names listed in Connection, except the usual tokens that are
        // removed anyway (so `Connection: keep-alive` costs no allocation).
        let mut named: Vec<HeaderName> = Vec::new();
        for v in h.get_all(header::CONNECTION) {
            let Ok(v) = v.to_str() else { continue };
            for token in v.split(',').map(str::trim) {
                let usual = ["close", "keep-alive", "upgrade", "te", "trailer"]
                    .iter()
                    .any(|u| token.eq_ignore_ascii_case(u));
                if usual || token.is_empty() {
                    continue;
                }
                if let Ok(n) = HeaderName::from_bytes(token.as_bytes()) {
                    named.push(n);
                }
            }
        }
        for n in named {
            h.remove(n);
        }
    }
    for n in HOP_BY_HOP {
        h.remove(n);
    }
}

/// Compiled `[headers]`.
#[derive(Debug, Clone)]
pub struct SecurityHeaders {
    /// `Strict-Transport-Security` (HTTPS responses only).
    pub hsts: Option<HeaderValue>,
    /// Headers set on every response.
    pub always: Vec<(HeaderName, HeaderValue)>,
    /// `Cache-Control: no-store` on non-GET or credentialed responses.
    pub no_store: bool,
    /// Extra exact names to strip from upstream responses.
    pub strip_exact: Vec<HeaderName>,
    /// Lower-case prefixes to strip from upstream responses.
    pub strip_prefix: Vec<String>,
}

static NO_STORE: HeaderValue = HeaderValue::from_static("no-store");

impl SecurityHeaders {
    /// Removes implementation-revealing and configured internal headers from
    /// an upstream response.
    pub fn strip_upstream(&self, h: &mut HeaderMap) {
        for n in ALWAYS_STRIP.iter().chain(&self.strip_exact) {
            h.remove(n);
        }
        if !self.strip_prefix.is_empty() {
            let doomed: Vec<HeaderName> = h
                .keys()
                .filter(|k| {
                    self.strip_prefix
                        .iter()
                        .any(|p| k.as_str().starts_with(p.as_str()))
                })
                .cloned()
                .collect();
            for n in doomed {
                h.remove(n);
            }
        }
    }

    /// Sets the security headers on a response.
    pub fn apply(&self, h: &mut HeaderMap, https: bool, no_store: bool) {
        if https {
            if let Some(v) = &self.hsts {
                h.insert(header::STRICT_TRANSPORT_SECURITY, v.clone());
            }
        }
        for (n, v) in &self.always {
            h.insert(n, v.clone());
        }
        if no_store && self.no_store {
            h.insert(header::CACHE_CONTROL, NO_STORE.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_named_headers_go() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, X-Secret, bogus header"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
    }
}
