//! Per-request state, created once by the pipeline and passed `&mut` to every
//! stage. Typed fields only: each stage documents which fields it writes.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime};

use http::{HeaderMap, HeaderValue, Method, Version, header};

use crate::config::Plan;

/// How a connection's listener treats requests (fixed at accept time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerKind {
    /// The TLS listener.
    Https,
    /// Plain HTTP that answers every request with a redirect to HTTPS.
    HttpRedirect,
    /// Plain HTTP behind a TLS-terminating load balancer: treated as HTTPS.
    HttpBehindTls,
    /// Plain HTTP served as HTTP (development).
    HttpPlain,
}

/// Facts about the client connection.
#[derive(Debug)]
pub struct ConnInfo {
    /// The socket peer.
    pub peer: SocketAddr,
    /// Our local address.
    pub local: SocketAddr,
    /// Listener mode.
    pub kind: ListenerKind,
    /// The peer address as an `X-Forwarded-For` value, made once per connection.
    pub peer_header: HeaderValue,
}

impl ConnInfo {
    /// Connection facts for `peer`.
    pub fn new(peer: SocketAddr, local: SocketAddr, kind: ListenerKind) -> Self {
        let peer_header = HeaderValue::from_str(&peer.ip().to_canonical().to_string())
            .unwrap_or(HeaderValue::from_static("unknown"));
        Self {
            peer,
            local,
            kind,
            peer_header,
        }
    }
}

/// Per-request context.
#[derive(Debug)]
pub struct RequestContext {
    /// The plan snapshot this request runs under, start to end.
    pub plan: Arc<Plan>,
    /// The connection.
    pub conn: Arc<ConnInfo>,
    /// Arrival (monotonic).
    pub started: Instant,
    /// Arrival (wall clock).
    pub ts: SystemTime,
    /// Request id (generated, or accepted from a trusted proxy).
    pub id: HeaderValue,
    /// Whether the socket peer is a trusted proxy.
    pub peer_trusted: bool,
    /// The client address (stage 1).
    pub client_ip: IpAddr,
    /// Whether the client sees this exchange as HTTPS.
    pub https: bool,
    /// Method.
    pub method: Method,
    /// Client HTTP version.
    pub version: Version,
    /// The canonical path once stage 2 ran (empty before).
    pub path: String,
    /// Matched route index (stage 2).
    pub route: Option<usize>,
    /// Path parameters of the matched route, percent-encoded as in the path.
    pub params: Vec<(String, String)>,
    /// Allowed CORS origin and the policy index (stage 3).
    pub cors: Option<(usize, HeaderValue)>,
    /// The request carried credentials (Authorization, Cookie, API key).
    pub credentials: bool,
    /// The authenticated caller (stage 5).
    pub identity: Option<std::sync::Arc<crate::authn::Identity>>,
    /// Problem slug when the gateway refused the request.
    pub rejection: Option<&'static str>,
    /// Whether the upstream was called.
    pub upstream_called: bool,
    /// A trusted proxy's `X-Forwarded-For` chain, kept to be extended.
    pub prior_xff: Option<String>,
    /// The tightest rate limit seen (stages 4 and 6), for the headers.
    pub rate: Option<crate::ratelimit::Report>,
    /// In-flight slots and failure-only counts held until the answer.
    pub held: crate::ratelimit::Held,
}

impl RequestContext {
    /// Stage 1: client address and request id.
    pub fn new(
        plan: Arc<Plan>,
        conn: Arc<ConnInfo>,
        method: &Method,
        version: Version,
        headers: &HeaderMap,
    ) -> Self {
        let peer_trusted = plan.trusted.is_trusted(conn.peer.ip());
        let client_ip = plan.trusted.resolve(conn.peer.ip(), headers);
        let id = headers
            .get("x-request-id")
            .filter(|v| peer_trusted && plan.trust_request_id && valid_request_id(v))
            .cloned()
            .unwrap_or_else(new_request_id);
        let https = matches!(conn.kind, ListenerKind::Https | ListenerKind::HttpBehindTls);
        let credentials = headers.contains_key(header::AUTHORIZATION)
            || headers.contains_key(header::COOKIE)
            || headers.contains_key("x-api-key");
        Self {
            peer_trusted,
            client_ip,
            id,
            https,
            credentials,
            method: method.clone(),
            version,
            path: String::new(),
            route: None,
            params: Vec::new(),
            cors: None,
            identity: None,
            rate: None,
            held: Default::default(),
            rejection: None,
            upstream_called: false,
            prior_xff: if peer_trusted {
                join_values(headers, "x-forwarded-for")
            } else {
                None
            },
            started: Instant::now(),
            ts: SystemTime::now(),
            plan,
            conn,
        }
    }

    /// The request id as text.
    pub fn id_str(&self) -> &str {
        self.id.to_str().unwrap_or("-")
    }
}

/// All values of a header joined with ", " (None if absent or not text).
fn join_values(h: &HeaderMap, name: &str) -> Option<String> {
    let mut out: Option<String> = None;
    for v in h.get_all(name) {
        let s = v.to_str().ok()?;
        match &mut out {
            Some(o) => {
                o.push_str(", ");
                o.push_str(s);
            }
            None => out = Some(s.to_owned()),
        }
    }
    out
}

/// `[A-Za-z0-9._:-]{1,128}`
fn valid_request_id(v: &HeaderValue) -> bool {
    let b = v.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b':' | b'-'))
}

/// A new id: 64 random bits per process, then a counter (unique, cheap).
fn new_request_id() -> HeaderValue {
    static PREFIX: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix = *PREFIX.get_or_init(|| {
        let mut b = [0u8; 8];
        let _ = getrandom::fill(&mut b);
        u64::from_le_bytes(b)
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut buf = [0u8; 32];
    hex(prefix, &mut buf[..16]);
    hex(n, &mut buf[16..]);
    HeaderValue::from_bytes(&buf).unwrap_or(HeaderValue::from_static("0"))
}

fn hex(mut v: u64, out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for slot in out.iter_mut().rev() {
        *slot = DIGITS[(v & 0xf) as usize];
        v >>= 4;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_valid() {
        let a = new_request_id();
        let b = new_request_id();
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert!(valid_request_id(&a));
        assert!(!valid_request_id(&HeaderValue::from_static("a b")));
        assert!(!valid_request_id(&HeaderValue::from_static("")));
    }
}
