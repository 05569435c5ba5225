//! The request pipeline: the ONE place that fixes the order of the stages.
//!
//! ```text
//!  client ─▶ 0 listener mode (HTTP listener in redirect mode: 308, done)
//!          ─▶ 1 client ip + request id       (context.rs, client_ip.rs)
//!          ─▶ 2 head limits, hop-by-hop + gateway-owned header strip, canonical path
//!          ─▶ 3 CORS preflight (answered here, before the method check)
//!          ─▶ 2 route (deny by default: 404/405); CORS origin noted for stage 11
//!          ─▶ 4 pre-auth rate limit           (issue: rate limiting)
//!          ─▶ 5 authentication                (issue: authentication)
//!          ─▶ 6 post-auth rate limit          (issue: rate limiting)
//!          ─▶ 7 authorization                 (issue: authorization)
//!          ─▶ 8 request validation            (issue: contract)
//!          ─▶ 9 upstream                      (proxy/)
//!          ─▶ 10 response filtering: hop-by-hop, internal headers, 5xx bodies
//!          ─▶ 11 security + CORS headers, request id (every response)
//!          ─▶ 12 access log (when the body is done)
//! ```
//!
//! Stages 1–10 return `Result<_, Rejection>`; a rejection skips the rest of
//! them, and stages 11 and 12 then run on the problem+json response exactly as
//! on an upstream one. Why this order: see `docs/architecture.md`.

use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode, request};
use hyper::body::Incoming;

use crate::access_log::{AccessRecord, redact_query};
use crate::body::Body;
use crate::canon::{self, PathError};
use crate::context::{ConnInfo, ListenerKind, RequestContext};
use crate::cors;
use crate::headers::strip_request;
use crate::reject::Rejection;
use crate::server::Shared;

static VARY_ORIGIN: HeaderValue = HeaderValue::from_static("Origin");

/// Handles one request from arrival to the response head. Never fails: every
/// error becomes a problem+json response.
pub async fn handle(
    shared: &Shared,
    conn: Arc<ConnInfo>,
    req: Request<Incoming>,
) -> Response<Body> {
    // One plan snapshot per request: a reload never changes a request mid-flight.
    let plan = shared.plan.load_full();
    let (parts, body) = req.into_parts();

    // 1. Client address and request id come first: every later line of the
    //    log, every limit and every rejection refers to them.
    let mut ctx = RequestContext::new(plan, conn, &parts.method, parts.version, &parts.headers);
    // Kept for the access log only (a Uri clone is a reference count).
    let logged = ctx.plan.log_sink.is_some().then(|| {
        (
            parts.uri.clone(),
            parts.headers.get(header::USER_AGENT).cloned(),
        )
    });

    let result = if ctx.conn.kind == ListenerKind::HttpRedirect {
        // 0. The plain listener in redirect mode serves nothing but the way to HTTPS.
        redirect(&ctx, &parts)
    } else {
        run(&mut ctx, parts, body).await
    };
    let mut resp = match result {
        Ok(r) => r,
        Err(rej) => {
            ctx.rejection = Some(rej.slug());
            if rej.status().is_server_error() {
                tracing::warn!(
                    request_id = ctx.id_str(),
                    problem = rej.slug(),
                    "request failed"
                );
            }
            rej.into_response(ctx.id_str())
        }
    };
    finish(&mut ctx, &mut resp);
    if let Some((uri, user_agent)) = logged {
        attach_log(ctx, &uri, user_agent, &mut resp);
    }
    resp
}

/// Stages 2–10.
async fn run(
    ctx: &mut RequestContext,
    mut parts: request::Parts,
    body: Incoming,
) -> Result<Response<Body>, Rejection> {
    let plan = ctx.plan.clone();

    // 2a. Head limits before any stage reads a header (hyper enforces a larger
    //     hard cap; this one answers with problem+json).
    check_head(&plan.limits, &parts.headers)?;
    // 2b. Hop-by-hop headers go before any stage reads headers, so every stage
    //     sees exactly the headers the upstream will see.
    strip_request(&mut parts.headers, &plan.identity_headers);
    // 2c. The canonical path: used by routing, every check and the upstream.
    ctx.path =
        canon::canonicalize(parts.uri.path(), plan.limits.max_path_bytes).map_err(|e| match e {
            PathError::TooLong => Rejection::PathTooLong,
            PathError::Invalid(why) => Rejection::BadPath(why),
        })?;

    // 2d. Endpoints the gateway serves itself (login, logout): never proxied,
    //     and checked before routing so no route can shadow them.
    if plan.authn.serves(&ctx.path) {
        return crate::authn::gateway_endpoint(ctx, parts, body).await;
    }

    // 3. CORS preflight: answered by the gateway, before the method check
    //    (a preflight is an OPTIONS the route need not list) and before
    //    authentication (browsers send preflights without credentials).
    if cors::is_preflight(&parts.method, &parts.headers) {
        return preflight(ctx, &parts);
    }

    // 2d. Route: deny by default.
    let matched = plan.router.find(&ctx.path, &parts.method)?;
    ctx.route = Some(matched.route);
    ctx.params = matched.params;
    let route = plan.routes.get(matched.route).ok_or(Rejection::Internal)?;

    // 3. CORS for actual requests: remember an allowed origin for stage 11.
    if let (Some(i), Some(origin)) = (route.cors, parts.headers.get(header::ORIGIN)) {
        if plan.cors.get(i).is_some_and(|p| p.allows_origin(origin)) {
            ctx.cors = Some((i, origin.clone()));
        }
    }

    // 4. (pre-auth rate limit: rate-limiting issue)
    // 5. Authentication: every route is public or names its methods.
    if let crate::authn::RouteAuth::Required(methods) = &route.auth {
        let presented = crate::authn::Presented {
            query: parts.uri.query(),
            api_key_query: route.api_key_query.as_deref(),
            store: plan.store.as_deref(),
            request_id: ctx.id_str(),
            method: &parts.method,
            https: ctx.https,
        };
        let id = plan
            .authn
            .authenticate(methods, &parts.headers, presented)
            .await?;
        ctx.identity = Some(id);
    }
    // 6. (post-auth rate limit: rate-limiting issue)
    // 7. Authorization: deny by default; other people's objects are 404.
    let audit = crate::authz::Audit {
        request_id: ctx.id_str(),
        route: &route.name,
        client_ip: ctx.client_ip,
    };
    plan.authz
        .authorize(&route.authz, ctx.identity.as_deref(), &ctx.params, &audit)?;
    // A declared length over the limit is refused before anything is read or
    // forwarded; a stream that grows past it is cut off.
    check_content_length(&parts.headers, route.max_body)?;
    // 7b. Ownership named in the body: read it (bounded by the route's limit).
    let body = match &route.authz.body_owner {
        Some(rule)
            if matches!(
                parts.method,
                http::Method::POST | http::Method::PUT | http::Method::PATCH
            ) =>
        {
            let bytes = read_body(body, route.max_body).await?;
            plan.authz
                .check_body_owner(rule, ctx.identity.as_deref(), &bytes, &audit)?;
            crate::body::RequestBody::Buffered(bytes)
        }
        _ => crate::body::RequestBody::Stream(body),
    };
    // 8. (request validation: contract issue)

    // 9. Upstream.
    let upstream = plan
        .upstreams
        .get(route.upstream)
        .ok_or(Rejection::Internal)?;
    let timeout = route.timeout.unwrap_or(upstream.response_timeout);
    ctx.upstream_called = true;
    // Boxed: the exchange is the largest state of this future, and hyper moves
    // the request future into place once per request; a small allocation is
    // cheaper than copying kilobytes.
    let resp = Box::pin(upstream.forward(ctx, parts, body, route.max_body, timeout)).await?;

    // 10. Response filtering.
    let (mut parts, body) = resp.into_parts();
    plan.headers.strip_upstream(&mut parts.headers);
    if parts.status.is_server_error() && plan.replace_upstream_5xx {
        // The upstream's body (a stack trace, perhaps) is dropped unread.
        tracing::warn!(
            request_id = ctx.id_str(),
            upstream = &*upstream.name,
            status = parts.status.as_u16(),
            "upstream returned a server error; body replaced"
        );
        return Err(Rejection::UpstreamFailed {
            status: parts.status,
            retry_after: parts.headers.get(header::RETRY_AFTER).cloned(),
        });
    }
    Ok(Response::from_parts(parts, Body::stream(body)))
}

/// Reads a request body completely, at most `limit` bytes (413 above).
async fn read_body(body: Incoming, limit: u64) -> Result<bytes::Bytes, Rejection> {
    use http_body_util::BodyExt;
    let limit_usize = usize::try_from(limit).unwrap_or(usize::MAX);
    http_body_util::Limited::new(body, limit_usize)
        .collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|e| {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                Rejection::BodyTooLarge { limit }
            } else {
                Rejection::BadRequest("the request body could not be read")
            }
        })
}

fn check_content_length(h: &http::HeaderMap, max_body: u64) -> Result<(), Rejection> {
    let Some(len) = h.get(header::CONTENT_LENGTH) else {
        return Ok(());
    };
    let len: u64 = len
        .to_str()
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(Rejection::BadRequest("invalid Content-Length"))?;
    if len > max_body {
        return Err(Rejection::BodyTooLarge { limit: max_body });
    }
    Ok(())
}

/// Stage 2a: header count and size.
fn check_head(limits: &crate::config::plan::Limits, h: &http::HeaderMap) -> Result<(), Rejection> {
    if h.len() > limits.max_headers {
        return Err(Rejection::HeadersTooLarge);
    }
    let bytes: usize = h.iter().map(|(k, v)| k.as_str().len() + v.len() + 4).sum();
    if bytes > limits.max_header_bytes {
        return Err(Rejection::HeadersTooLarge);
    }
    Ok(())
}

/// Stage 3 for preflights: the policy of the route the preflight asks about.
fn preflight(
    ctx: &mut RequestContext,
    parts: &request::Parts,
) -> Result<Response<Body>, Rejection> {
    let plan = ctx.plan.clone();
    let (Some(origin), Some(method)) = (
        parts.headers.get(header::ORIGIN),
        parts.headers.get(header::ACCESS_CONTROL_REQUEST_METHOD),
    ) else {
        return Err(Rejection::CorsDenied);
    };
    let asked = http::Method::from_bytes(method.as_bytes()).map_err(|_| Rejection::CorsDenied)?;
    let matched = plan.router.find(&ctx.path, &asked).map_err(|e| match e {
        Rejection::NotFound => Rejection::NotFound,
        _ => Rejection::CorsDenied,
    })?;
    ctx.route = Some(matched.route);
    let policy = plan
        .routes
        .get(matched.route)
        .and_then(|r| r.cors)
        .and_then(|i| plan.cors.get(i))
        .ok_or(Rejection::CorsDenied)?;
    policy.preflight(origin, method, &parts.headers)
}

/// Stage 0: `308` to the same host and path on HTTPS.
fn redirect(ctx: &RequestContext, parts: &request::Parts) -> Result<Response<Body>, Rejection> {
    let host = parts
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| parts.uri.authority().map(|a| a.as_str()))
        .ok_or(Rejection::BadRequest("missing Host header"))?;
    let authority: http::uri::Authority = host
        .parse()
        .map_err(|_| Rejection::BadRequest("invalid Host header"))?;
    if authority.as_str().contains('@') {
        return Err(Rejection::BadRequest("invalid Host header"));
    }
    let port = ctx.plan.http.as_ref().map_or(443, |h| h.redirect_port);
    let host = authority.host();
    let pq = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let location = if port == 443 {
        format!("https://{host}{pq}")
    } else {
        format!("https://{host}:{port}{pq}")
    };
    let location = HeaderValue::from_str(&location)
        .map_err(|_| Rejection::BadRequest("invalid request target"))?;
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::PERMANENT_REDIRECT;
    resp.headers_mut().insert(header::LOCATION, location);
    Ok(resp)
}

/// Stage 11: headers every response carries, rejections included.
fn finish(ctx: &mut RequestContext, resp: &mut Response<Body>) {
    let plan = &ctx.plan;
    let no_store = !matches!(ctx.method, http::Method::GET | http::Method::HEAD) || ctx.credentials;
    let h = resp.headers_mut();
    plan.headers.apply(h, ctx.https, no_store);
    if let Some((i, origin)) = &ctx.cors {
        if let Some(p) = plan.cors.get(*i) {
            p.apply_actual(h, origin);
        }
    }
    h.append(header::VARY, VARY_ORIGIN.clone());
    h.insert("x-request-id", ctx.id.clone());
}

/// Stage 12: the access line is written when the body is done.
fn attach_log(
    mut ctx: RequestContext,
    uri: &http::Uri,
    user_agent: Option<HeaderValue>,
    resp: &mut Response<Body>,
) {
    let Some(sink) = ctx.plan.log_sink.clone() else {
        return;
    };
    if ctx.path.is_empty() {
        // Refused before canonicalization: log the raw path, truncated.
        ctx.path = crate::access_log::truncate(uri.path(), 256).to_owned();
    }
    let route = ctx.route.and_then(|i| ctx.plan.routes.get(i));
    let upstream = if ctx.upstream_called {
        route
            .and_then(|r| ctx.plan.upstreams.get(r.upstream))
            .map(|u| u.name.clone())
    } else {
        None
    };
    let record = AccessRecord {
        sink,
        ts: ctx.ts,
        started: ctx.started,
        request_id: ctx.id.clone(),
        client_ip: ctx.client_ip,
        method: ctx.method.clone(),
        query: uri.query().map(|q| redact_query(q, &ctx.plan.redact_query)),
        route: route.map(|r| r.name.clone()),
        status: resp.status().as_u16(),
        upstream,
        user_agent,
        user: ctx.identity.as_ref().map(|i| i.subject.clone()),
        key_id: ctx.identity.as_ref().and_then(|i| i.key_id.clone()),
        version: ctx.version,
        rejection: ctx.rejection,
        path: ctx.path,
    };
    resp.body_mut().set_record(Box::new(record));
}

#[cfg(test)]
mod size_probe {
    use super::*;

    fn size_of_future<F, Fut>(_: &F) -> usize
    where
        F: Fn(&'static Shared, Arc<ConnInfo>, Request<Incoming>) -> Fut,
    {
        std::mem::size_of::<Fut>()
    }

    #[test]
    fn future_sizes() {
        println!(
            "handle future: {} bytes",
            size_of_future(&|s, c, r| handle(s, c, r))
        );
    }
}
