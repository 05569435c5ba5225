//! Stage 9: forwarding to the upstream.
//!
//! One pooled keep-alive client per upstream. The request sent upstream uses
//! the canonical path (the one every check saw) and the client's query; the
//! gateway sets `X-Forwarded-For`, `X-Forwarded-Proto`, `X-Forwarded-Host`
//! and `X-Request-Id` after removing whatever the client sent under those
//! names. Bodies stream both ways; the request body is cut off past the
//! route's limit. Failures map to 413 (body too large), 502 (unreachable or
//! broken) and 504 (timed out), never to a 500.

mod pool;

pub use pool::{Pool, PooledBody};

use std::error::Error as StdError;
use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery};
use http::{Request, Response, Uri, Version, request};
use hyper::body::Incoming;

use crate::body::{BodyTooLarge, ProxyBody};
use crate::context::RequestContext;
use crate::reject::Rejection;

static HTTPS: HeaderValue = HeaderValue::from_static("https");
static HTTP: HeaderValue = HeaderValue::from_static("http");

/// A compiled `[upstreams.NAME]` with its connection pool.
#[derive(Debug)]
pub struct Upstream {
    /// Name for logs.
    pub name: Arc<str>,
    /// `host:port`.
    pub authority: Authority,
    /// Time to the response head.
    pub response_timeout: Duration,
    host: HeaderValue,
    pool: Arc<Pool>,
}

impl Upstream {
    /// Builds the upstream and its (lazy) pool.
    pub fn new(
        name: &str,
        authority: Authority,
        connect_timeout: Duration,
        response_timeout: Duration,
        pool_idle: Duration,
        pool_max_idle: usize,
    ) -> Self {
        let host = HeaderValue::from_str(authority.as_str())
            .unwrap_or(HeaderValue::from_static("localhost"));
        let target = authority.as_str().to_owned();
        let pool = Arc::new(Pool::new(target, connect_timeout, pool_idle, pool_max_idle));
        Self {
            name: name.into(),
            authority,
            response_timeout,
            host,
            pool,
        }
    }

    /// Sends the request upstream and returns the response head with its
    /// streaming body.
    pub async fn forward(
        &self,
        ctx: &RequestContext,
        mut parts: request::Parts,
        path: &str,
        body: crate::body::RequestBody,
        max_body: u64,
        timeout: Duration,
    ) -> Result<Response<PooledBody>, Rejection> {
        let path_and_query = match parts.uri.query() {
            Some(q) => PathAndQuery::from_maybe_shared(format!("{path}?{q}")),
            None => PathAndQuery::try_from(path),
        }
        .map_err(|_| Rejection::BadRequest("invalid request target"))?;
        let original_host = parts.headers.get(header::HOST).cloned().or_else(|| {
            parts
                .uri
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        });
        // Origin-form request target; Host names the upstream.
        parts.uri = Uri::from(path_and_query);
        parts.version = Version::HTTP_11;

        let h = &mut parts.headers;
        // A trusted proxy's chain is kept and extended; anyone else's is dropped.
        // Client-sent gateway-owned headers were removed at stage 2.
        let xff = match &ctx.prior_xff {
            Some(p) => {
                let peer = ctx.conn.peer.ip().to_canonical();
                HeaderValue::from_str(&format!("{p}, {peer}"))
                    .unwrap_or_else(|_| ctx.conn.peer_header.clone())
            }
            None => ctx.conn.peer_header.clone(),
        };
        h.insert(HeaderName::from_static("x-forwarded-for"), xff);
        // The resolved client address (stage 1), for upstreams that want one value.
        let real_ip = if ctx.client_ip == ctx.conn.peer.ip().to_canonical() {
            ctx.conn.peer_header.clone()
        } else {
            HeaderValue::from_str(&ctx.client_ip.to_string())
                .unwrap_or_else(|_| ctx.conn.peer_header.clone())
        };
        h.insert(HeaderName::from_static("x-real-ip"), real_ip);
        h.insert(header::HOST, self.host.clone());
        let proto = if ctx.https {
            HTTPS.clone()
        } else {
            HTTP.clone()
        };
        h.insert(HeaderName::from_static("x-forwarded-proto"), proto);
        if let Some(host) = original_host {
            h.insert(HeaderName::from_static("x-forwarded-host"), host);
        }
        h.insert(HeaderName::from_static("x-request-id"), ctx.id.clone());
        if let Some(id) = &ctx.identity {
            set_identity(h, id);
            if let Some(t) = &ctx.plan.authn.tokens {
                let now = crate::unix_now();
                if let Some(v) = t.upstream_token(id, now) {
                    h.insert(HeaderName::from_static("x-portcullis-token"), v);
                }
            }
        }

        let body = match body {
            crate::body::RequestBody::Buffered(b) if b.is_empty() => ProxyBody::Empty,
            crate::body::RequestBody::Buffered(b) => ProxyBody::Full(Some(b)),
            crate::body::RequestBody::Stream(s) if body_is_empty(&parts, &s) => ProxyBody::Empty,
            crate::body::RequestBody::Stream(s) => ProxyBody::Limited {
                inner: s,
                remaining: max_body,
                limit: max_body,
            },
        };
        let req = Request::from_parts(parts, body);
        match tokio::time::timeout(timeout, self.pool.send(req)).await {
            Err(_) => Err(Rejection::UpstreamTimeout),
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => Err(classify(&e, &self.name, ctx)),
        }
    }
}

/// `X-Portcullis-*`: who the gateway says is calling. Client-sent headers
/// of these names were removed at stage 2; the values were made when the
/// identity was established.
fn set_identity(h: &mut http::HeaderMap, id: &crate::authn::Identity) {
    let v = &id.headers;
    h.insert(HeaderName::from_static("x-portcullis-user"), v.user.clone());
    h.insert(
        HeaderName::from_static("x-portcullis-auth"),
        HeaderValue::from_static(id.method.as_str()),
    );
    h.insert(
        HeaderName::from_static("x-portcullis-roles"),
        v.roles.clone(),
    );
    h.insert(
        HeaderName::from_static("x-portcullis-scopes"),
        v.scopes.clone(),
    );
    h.insert(
        HeaderName::from_static("x-portcullis-issuer"),
        v.issuer.clone(),
    );
    if let Some(t) = &v.tenant {
        h.insert(HeaderName::from_static("x-portcullis-tenant"), t.clone());
    }
}

fn body_is_empty(parts: &request::Parts, body: &Incoming) -> bool {
    use http_body::Body as _;
    body.is_end_stream()
        || (parts
            .headers
            .get(header::CONTENT_LENGTH)
            .is_some_and(|v| v == "0"))
}

/// Maps a client error to 413, 502 or 504, and logs the cause.
fn classify(e: &pool::PoolError, upstream: &str, ctx: &RequestContext) -> Rejection {
    let mut src: Option<&(dyn StdError + 'static)> = Some(e);
    let mut timed_out = matches!(e, pool::PoolError::ConnectTimeout);
    while let Some(s) = src {
        if let Some(t) = s.downcast_ref::<BodyTooLarge>() {
            return Rejection::BodyTooLarge { limit: t.0 };
        }
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            timed_out |= io.kind() == std::io::ErrorKind::TimedOut;
        }
        src = s.source();
    }
    tracing::warn!(
        request_id = ctx.id.to_str().unwrap_or("-"),
        upstream,
        error = %error_chain(e),
        "upstream request failed"
    );
    if timed_out {
        Rejection::UpstreamTimeout
    } else {
        Rejection::UpstreamUnavailable
    }
}

fn error_chain(e: &dyn StdError) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(x) = src {
        s.push_str(": ");
        s.push_str(&x.to_string());
        src = x.source();
    }
    s
}
