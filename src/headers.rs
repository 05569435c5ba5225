//! Header hygiene, in both directions.
//!
//! * Hop-by-hop headers (RFC 9110 §7.6.1), and every header a `Connection`
//!   header names, are removed from requests before any stage reads them and
//!   from upstream responses before anything is added. Gateway-set headers are
//!   added after removal, so a client (or upstream) can never strip one.
//! * Stage 11: security headers are set on every response, rejections
//!   included, from values compiled once at config load.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Headers that only describe one connection (RFC 9110 section 7.6.1).
fn is_hop_by_hop(n: &HeaderName) -> bool {
    matches!(
        n.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "proxy-authenticate"
            | "proxy-authorization"
    )
}

/// Request headers the gateway owns: whatever a client sends under these
/// names is removed, and the gateway sets its own values when forwarding.
fn is_gateway_owned(n: &HeaderName) -> bool {
    let s = n.as_str();
    if s.contains('_') {
        // `X_Portcullis_User` becomes HTTP_X_PORTCULLIS_USER in CGI-style
        // upstreams, just like `X-Portcullis-User`: judge the dashed form.
        let dashed = s.replace('_', "-");
        return is_gateway_owned_name(&dashed);
    }
    is_gateway_owned_name(s)
}

fn is_gateway_owned_name(s: &str) -> bool {
    s.starts_with("x-forwarded-")
        || s.starts_with("x-portcullis-")
        || matches!(s, "forwarded" | "x-real-ip" | "x-request-id")
}

/// Upstream headers that advertise implementation details.
fn is_leaky(n: &HeaderName) -> bool {
    matches!(
        n.as_str(),
        "server" | "x-powered-by" | "x-aspnet-version" | "x-aspnetmvc-version"
    )
}

/// Removes every header for which `doomed` holds. One pass over the names
/// present finds them, so the common case (nothing to remove) costs no hash
/// lookups at all.
fn remove_where(h: &mut HeaderMap, doomed: impl Fn(&HeaderName) -> bool) {
    loop {
        let mut found: [Option<HeaderName>; 8] = Default::default();
        let mut n = 0;
        let mut more = false;
        for k in h.keys() {
            if doomed(k) {
                match found.get_mut(n) {
                    Some(slot) => {
                        *slot = Some(k.clone());
                        n += 1;
                    }
                    None => more = true,
                }
            }
        }
        for k in found.into_iter().flatten() {
            h.remove(k);
        }
        if !more {
            return;
        }
    }
}

/// The names a `Connection` header lists, except the usual tokens that are
/// removed anyway (so `Connection: keep-alive` costs no allocation).
fn connection_named(h: &HeaderMap) -> Vec<HeaderName> {
    let mut named = Vec::new();
    for v in h.get_all(header::CONNECTION) {
        let b = v.as_bytes();
        if b.eq_ignore_ascii_case(b"keep-alive") || b.eq_ignore_ascii_case(b"close") {
            continue; // by far the most common values
        }
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
    named
}

/// Removes hop-by-hop headers and the headers `Connection` names.
pub fn strip_hop_by_hop(h: &mut HeaderMap) {
    let named = if h.contains_key(header::CONNECTION) {
        connection_named(h)
    } else {
        Vec::new()
    };
    remove_where(h, |k| is_hop_by_hop(k) || named.contains(k));
}

/// Request side of stage 2: hop-by-hop headers, the headers `Connection`
/// names, the gateway-owned headers (`X-Forwarded-*`, `Forwarded`,
/// `X-Real-IP`, `X-Request-Id`, `X-Portcullis-*`) and the configured
/// identity headers (`auth.identity_headers`, lower-case, compared in their
/// dashed form), in one pass.
pub fn strip_request(h: &mut HeaderMap, identity_headers: &[String]) {
    let named = if h.contains_key(header::CONNECTION) {
        connection_named(h)
    } else {
        Vec::new()
    };
    remove_where(h, |k| {
        is_hop_by_hop(k)
            || is_gateway_owned(k)
            || named.contains(k)
            || (!identity_headers.is_empty() && {
                let dashed = k.as_str().replace('_', "-");
                identity_headers.contains(&dashed)
            })
    });
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
    /// Response side of stage 10: hop-by-hop headers, the headers the
    /// upstream's `Connection` names, implementation-revealing headers,
    /// `Access-Control-*` (CORS belongs to the gateway: an upstream that
    /// reflects origins must not widen the allowlist) and the configured
    /// internal headers, in one pass.
    pub fn strip_upstream(&self, h: &mut HeaderMap) {
        let named = if h.contains_key(header::CONNECTION) {
            connection_named(h)
        } else {
            Vec::new()
        };
        remove_where(h, |k| {
            is_hop_by_hop(k)
                || is_leaky(k)
                || k.as_str().starts_with("access-control-")
                || named.contains(k)
                || self.strip_exact.contains(k)
                || self
                    .strip_prefix
                    .iter()
                    .any(|p| k.as_str().starts_with(p.as_str()))
        });
    }

    /// Most headers [`apply`](Self::apply) adds.
    pub fn count(&self) -> usize {
        self.always.len() + 2
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
