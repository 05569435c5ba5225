//! The request pipeline: the ONE place that fixes the order of the stages.
//!
//! ```text
//!  client ─▶ 0 listener mode (HTTP listener in redirect mode: 308, done)
//!          ─▶ 1 client ip + request id       (context.rs, client_ip.rs)
//!          ─▶ 2 head limits, hop-by-hop + gateway-owned header strip, canonical path
//!          ─▶ 2c' API version: retired (410), or chosen by header (versioning.rs)
//!          ─▶ 3 CORS preflight (answered here, before the method check)
//!          ─▶ 2 route (deny by default: 404/405); CORS origin noted for stage 11
//!          ─▶ 4 pre-auth rate limit           (issue: rate limiting)
//!          ─▶ 5 authentication                (issue: authentication)
//!          ─▶ 6 post-auth rate limit          (issue: rate limiting)
//!          ─▶ 7 authorization                 (issue: authorization)
//!          ─▶ 8 request validation: parameters, page size, body (validate/)
//!          ─▶ 9 upstream                      (proxy/)
//!          ─▶ 10 response filtering: hop-by-hop, internal headers, 5xx bodies
//!          ─▶ 10b answer authorization (ownership, conditions)
//!          ─▶ 10c contract: declared fields and headers, redaction (filter.rs)
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
use crate::authz::RequestFacts;
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
    // Failure-only limits and credential endpoints count once the status is known.
    let held = std::mem::take(&mut ctx.held);
    if !held.on_failure.is_empty() || held.credential {
        ctx.plan
            .ratelimit
            .settle(&held, resp.status(), ctx.client_ip);
    }
    if !held.slots.is_empty() {
        resp.body_mut().hold(held.slots);
    }
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

    // 2c'. The API version: a retired one is 410; one named by the header
    //      becomes the versioned path every later stage sees (a preflight
    //      cannot carry the header: it asks about the default version).
    let is_preflight = cors::is_preflight(&parts.method, &parts.headers);
    if let Some(v) = &plan.versions {
        if let Some(p) = v.resolve(&ctx.path, &parts.headers, is_preflight)? {
            ctx.path = p;
        }
    }

    // 3. CORS preflight: answered by the gateway, before the method check
    //    (a preflight is an OPTIONS the route need not list) and before
    //    authentication (browsers send preflights without credentials).
    if is_preflight {
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

    // 4. Pre-authentication limits (keyed by address, route, header,
    //    parameter): before any password hash or signature is computed.
    if route.credential_endpoint {
        ctx.held.credential = true;
        if let Some(secs) = plan.ratelimit.locked(None, ctx.client_ip).await? {
            rate_audit(ctx, route, "login lockout", "ip", false);
            return Err(Rejection::RateLimited { retry_after: secs });
        }
    }
    if !route.limits.pre.is_empty() {
        limit(ctx, route, &route.limits.pre, &parts).await?;
    }
    // 5. Authentication: every route is public or names its methods.
    if let crate::authn::RouteAuth::Required(methods) = &route.auth {
        let presented = crate::authn::Presented {
            query: parts.uri.query(),
            api_key_query: route.api_key_query.as_deref(),
            store: plan.store.as_deref(),
            shared: plan.shared.as_deref(),
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
    // 6. Post-authentication limits (keyed by user, API key, client).
    if !route.limits.post.is_empty() && ctx.identity.is_some() {
        limit(ctx, route, &route.limits.post, &parts).await?;
    }
    // 7. Authorization: deny by default; other people's objects are 404.
    let rules = &route.authz;
    plan.authz.authorize(
        rules,
        ctx.identity.as_deref(),
        &request_facts(ctx, &parts),
        &access(ctx, route, &parts.method),
    )?;
    // A declared length over the limit is refused before anything is read or
    // forwarded; a stream that grows past it is cut off.
    check_content_length(&parts.headers, route.max_body)?;
    // 8 (head). The contract's checks that need no body: media type, and no
    //    body where the operation takes none.
    //    Then parameters and the page size (a clamped or defaulted size
    //    is what the upstream receives).
    if let Some(c) = &route.contract {
        c.check_head(&parts.headers, !http_body::Body::is_end_stream(&body))?;
        if let Some(q) = c.check_params(&ctx.params, parts.uri.query(), &parts.headers)? {
            // Only the path and query change: the authority (HTTP/2's
            // :authority, X-Forwarded-Host) is kept.
            let mut uri = std::mem::take(&mut parts.uri).into_parts();
            let pq = format!(
                "{}?{q}",
                uri.path_and_query.as_ref().map_or("/", |p| p.path())
            );
            uri.path_and_query = Some(
                pq.parse()
                    .map_err(|_| Rejection::BadRequest("invalid query string"))?,
            );
            parts.uri = http::Uri::from_parts(uri)
                .map_err(|_| Rejection::BadRequest("invalid request target"))?;
        }
    }
    // 7b. Ownership named in the body, and 8. the body against its schema:
    //     read it once (bounded by the route's limit), check, then forward
    //     exactly the bytes that were checked.
    let is_write = matches!(
        parts.method,
        http::Method::POST | http::Method::PUT | http::Method::PATCH
    );
    let owner_rule = rules.body_owner.as_ref().filter(|_| is_write);
    let contract = route.contract.as_ref().filter(|c| c.reads_body());
    let body = if owner_rule.is_some() || contract.is_some() {
        let bytes = read_body(body, route.max_body).await?;
        if let Some(rule) = owner_rule {
            plan.authz.check_body_owner(
                rule,
                ctx.identity.as_deref(),
                &bytes,
                &access(ctx, route, &parts.method),
            )?;
        }
        let mut bytes = bytes;
        if let Some(c) = contract {
            let may = |needs: &[crate::authz::Permission]| {
                ctx.identity
                    .as_deref()
                    .is_some_and(|id| needs.iter().any(|p| plan.authz.has(id, p)))
            };
            if let Some(stripped) = c.check_body(&bytes, &may)? {
                parts
                    .headers
                    .insert(header::CONTENT_LENGTH, HeaderValue::from(stripped.len()));
                bytes = bytes::Bytes::from(stripped);
            }
        }
        crate::body::RequestBody::Buffered(bytes)
    } else {
        crate::body::RequestBody::Stream(body)
    };
    // 7c. Ownership known only from the object: writes (and HEAD) GET the
    //     object first; other answers are read and checked at stage 10.
    let upstream = plan
        .upstreams
        .get(route.upstream)
        .ok_or(Rejection::Internal)?;
    let timeout = route.timeout.unwrap_or(upstream.response_timeout);
    let owner = match (&rules.response_owner, ctx.identity.as_deref()) {
        (Some(r), Some(id)) if plan.authz.response_owner_applies(r, id) => Some(r),
        _ => None,
    };
    ctx.upstream_called = true;
    let checked = owner.is_some() || rules.has_response_policies();
    // HEAD has no body to check, and a write must be checked before it happens.
    let prechecked = checked
        && (parts.method == http::Method::HEAD
            || owner.is_some_and(|o| o.prechecks(&parts.method)));
    if prechecked {
        precheck(ctx, route, upstream, owner, &parts, timeout).await?;
    }
    let check_answer = checked && !prechecked;
    let responses = route.contract.as_ref().and_then(|c| c.responses.as_ref());
    if check_answer || responses.is_some() {
        // The answer must arrive whole and readable: no compression, no
        // ranges, and (to check ownership) no 304 in place of the object.
        // A filtered answer may be a 304: it has no body to filter.
        for h in [header::RANGE, header::IF_RANGE] {
            parts.headers.remove(h);
        }
        if check_answer {
            parts.headers.remove(header::IF_NONE_MATCH);
            parts.headers.remove(header::IF_MODIFIED_SINCE);
        }
        parts.headers.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("identity"),
        );
    }
    // Response conditions may read the request: keep what they see.
    let kept = rules.has_response_policies().then(|| {
        (
            parts.method.clone(),
            parts.uri.clone(),
            parts.headers.clone(),
        )
    });
    // 9. Upstream.
    let method = parts.method.clone();
    // Boxed: the exchange is the largest state of this future, and hyper moves
    // the request future into place once per request; a small allocation is
    // cheaper than copying kilobytes.
    let ctx_ref: &RequestContext = ctx;
    let resp =
        Box::pin(upstream.forward(ctx_ref, parts, &ctx_ref.path, body, route.max_body, timeout))
            .await?;

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
    // 10b. Authorization of the answer: ownership, list filtering, response
    //      conditions (stage 7c decided whether it is read). The upstream's
    //      own "no" becomes the gateway's 404, so that "not yours" and "does
    //      not exist" look the same.
    if check_answer
        && matches!(
            parts.status,
            StatusCode::FORBIDDEN | StatusCode::NOT_FOUND | StatusCode::GONE
        )
    {
        return Err(Rejection::NotFound);
    }
    // 10c. The contract: undeclared headers dropped; a JSON answer reduced
    //      to its schema and redacted (read once, with 10b's check).
    let status = parts.status.as_u16();
    if let Some(r) = responses {
        r.filter_headers(status, &mut parts.headers);
    }
    let json = crate::validate::is_json(&parts.headers);
    let filter = responses.filter(|r| {
        method != http::Method::HEAD
            && !matches!(status, 100..=199 | 204 | 304)
            && r.reads(status, json)
    });
    let authz_reads = check_answer && parts.status.is_success() && ctx.identity.is_some();
    let body = if authz_reads || filter.is_some() {
        let mut bytes =
            read_upstream(ctx, &parts, body, rules.max_buffered_response, timeout).await?;
        let mut changed = false;
        if let (Some(id), true) = (ctx.identity.as_deref(), authz_reads) {
            let facts = match &kept {
                Some((m, uri, h)) => RequestFacts {
                    method: m,
                    path: &ctx.path,
                    params: &ctx.params,
                    query: uri.query(),
                    headers: h,
                    ip: ctx.client_ip,
                },
                None => RequestFacts {
                    method: &method,
                    path: &ctx.path,
                    params: &ctx.params,
                    query: None,
                    headers: &parts.headers,
                    ip: ctx.client_ip,
                },
            };
            let checked = plan.authz.check_response(
                rules,
                owner,
                id,
                &facts,
                parts.status.as_u16(),
                &bytes,
                &access(ctx, route, &method),
            )?;
            if let Some(filtered) = checked {
                bytes = filtered;
                changed = true;
            }
        }
        if let Some(r) = filter {
            match r.filter_body(status, json, &bytes, &plan.redaction) {
                Ok(Some(filtered)) => {
                    bytes = bytes::Bytes::from(filtered);
                    changed = true;
                }
                Ok(None) => {}
                Err(v) => {
                    tracing::warn!(
                        request_id = ctx.id_str(),
                        route = &*route.name,
                        status,
                        violation = ?v,
                        "upstream response violates the API's contract; refused"
                    );
                    return Err(Rejection::UpstreamContract);
                }
            }
        }
        if changed {
            for h in [header::CONTENT_LENGTH, header::ETAG] {
                parts.headers.remove(h);
            }
        }
        Body::full(bytes)
    } else {
        Body::stream(body)
    };
    if rules.audit {
        if let Some(id) = ctx.identity.as_deref() {
            access(ctx, route, &method).allow(&id.subject);
        }
    }
    Ok(Response::from_parts(parts, body))
}

/// Stages 4 and 6: all of `which` must pass; a refusal is an audit event.
async fn limit(
    ctx: &mut RequestContext,
    route: &crate::route::Route,
    which: &[usize],
    parts: &http::request::Parts,
) -> Result<(), Rejection> {
    let plan = ctx.plan.clone();
    let facts = crate::ratelimit::KeyFacts {
        ip: ctx.client_ip,
        route: &route.name,
        headers: &parts.headers,
        params: &ctx.params,
        identity: ctx.identity.as_deref(),
        method: &parts.method,
        path: &ctx.path,
        query: parts.uri.query(),
    };
    let checked = plan
        .ratelimit
        .check(which, &facts, &mut ctx.rate, &mut ctx.held)
        .await;
    checked.map_err(|(i, rej)| {
        if let Some(l) = plan.ratelimit.limits.get(i) {
            let kinds: Vec<&str> = l.parts.iter().map(|p| p.kind()).collect();
            let unavailable = matches!(rej, Rejection::LimiterUnavailable);
            rate_audit(ctx, route, &l.name, &kinds.join("+"), unavailable);
        }
        rej
    })
}

/// A rate-limit refusal as an audit event: the limit's name and key type,
/// never the key (an API key's id is logged as the subject's key id only).
fn rate_audit(
    ctx: &RequestContext,
    route: &crate::route::Route,
    limit: &str,
    key_type: &str,
    unavailable: bool,
) {
    ctx.plan
        .metrics
        .rate_limited(&route.name, limit, key_type, unavailable);
    crate::audit::emit(
        ctx.plan.audit_sink.as_deref(),
        if unavailable {
            "limiter_unavailable"
        } else {
            "rate_limited"
        },
        serde_json::json!({
            "request_id": ctx.id_str(),
            "route": &*route.name,
            "limit": limit,
            "key_type": key_type,
            "subject": ctx.identity.as_ref().map(|i| i.subject.as_str()),
            "client_ip": ctx.client_ip,
            "method": ctx.method.as_str(),
            "path": crate::access_log::truncate(&ctx.path, 512),
        }),
    );
}

fn access<'a>(
    ctx: &'a RequestContext,
    route: &'a crate::route::Route,
    method: &'a http::Method,
) -> crate::audit::Access<'a> {
    crate::audit::Access {
        sink: ctx.plan.audit_sink.as_deref(),
        request_id: ctx.id_str(),
        route: &route.name,
        method,
        path: &ctx.path,
        client_ip: ctx.client_ip,
    }
}

fn request_facts<'a>(ctx: &'a RequestContext, parts: &'a request::Parts) -> RequestFacts<'a> {
    RequestFacts {
        method: &parts.method,
        path: &ctx.path,
        params: &ctx.params,
        query: parts.uri.query(),
        headers: &parts.headers,
        ip: ctx.client_ip,
    }
}

/// Stage 7c: GET the object a write (or HEAD) is about and check it as its
/// answer would be checked (owner, response conditions). The upstream's
/// refusals become 404 (the caller learns nothing about someone else's
/// object); 5xx is passed as such.
async fn precheck(
    ctx: &RequestContext,
    route: &crate::route::Route,
    upstream: &crate::proxy::Upstream,
    owner: Option<&crate::authz::ResponseOwnerRule>,
    parts: &request::Parts,
    timeout: std::time::Duration,
) -> Result<(), Rejection> {
    let target = match owner {
        Some(o) => o.precheck_target(&ctx.params, &ctx.path),
        None => ctx.path.clone(),
    };
    let (mut pre, ()) = Request::new(()).into_parts();
    pre.method = http::Method::GET;
    pre.headers = parts.headers.clone();
    for h in [
        header::CONTENT_LENGTH,
        header::CONTENT_TYPE,
        header::CONTENT_ENCODING,
        header::TRANSFER_ENCODING,
        header::EXPECT,
        header::RANGE,
        header::IF_RANGE,
        header::IF_MATCH,
        header::IF_NONE_MATCH,
        header::IF_MODIFIED_SINCE,
        header::IF_UNMODIFIED_SINCE,
    ] {
        pre.headers.remove(h);
    }
    pre.headers.insert(
        header::ACCEPT_ENCODING,
        HeaderValue::from_static("identity"),
    );
    let resp = Box::pin(upstream.forward(
        ctx,
        pre,
        &target,
        crate::body::RequestBody::Buffered(bytes::Bytes::new()),
        0,
        timeout,
    ))
    .await?;
    let (head, body) = resp.into_parts();
    if head.status.is_server_error() {
        return Err(Rejection::UpstreamFailed {
            status: head.status,
            retry_after: head.headers.get(header::RETRY_AFTER).cloned(),
        });
    }
    if !head.status.is_success() {
        return Err(Rejection::NotFound);
    }
    let bytes = read_upstream(ctx, &head, body, route.authz.max_buffered_response, timeout).await?;
    let id = ctx.identity.as_deref().ok_or(Rejection::Forbidden)?;
    let access = access(ctx, route, &parts.method);
    if let Some(o) = owner.filter(|o| o.items.is_none()) {
        ctx.plan.authz.check_precheck(o, id, &bytes, &access)?;
    }
    // Response conditions, and a list's rule (HEAD on a list route).
    let list = owner.filter(|o| o.items.is_some());
    if list.is_some() || route.authz.has_response_policies() {
        ctx.plan.authz.check_response(
            &route.authz,
            list,
            id,
            &request_facts(ctx, parts),
            head.status.as_u16(),
            &bytes,
            &access,
        )?;
    }
    Ok(())
}

/// Reads an upstream answer whole to check it: at most `limit` bytes, within
/// `timeout`, not compressed. Anything else is 502 (never passed unchecked).
async fn read_upstream(
    ctx: &RequestContext,
    parts: &http::response::Parts,
    body: crate::proxy::PooledBody,
    limit: u64,
    timeout: std::time::Duration,
) -> Result<bytes::Bytes, Rejection> {
    use http_body_util::BodyExt;
    let unverifiable = |why: &'static str| {
        tracing::warn!(
            request_id = ctx.id_str(),
            reason = why,
            "upstream response could not be checked"
        );
        Rejection::UpstreamUnverifiable
    };
    if parts
        .headers
        .get(header::CONTENT_ENCODING)
        .is_some_and(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"))
    {
        return Err(unverifiable("compressed response"));
    }
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(unverifiable("larger than max_buffered_response"));
    }
    let limited = http_body_util::Limited::new(body, usize::try_from(limit).unwrap_or(usize::MAX));
    match tokio::time::timeout(timeout, limited.collect()).await {
        Err(_) => Err(Rejection::UpstreamTimeout),
        Ok(Ok(c)) => Ok(c.to_bytes()),
        Ok(Err(e))
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(unverifiable("larger than max_buffered_response"))
        }
        Ok(Err(_)) => Err(Rejection::UpstreamUnavailable),
    }
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
    // One reservation for everything added here: the map grows (and
    // rehashes) at most once.
    let notices = ctx
        .route
        .and_then(|i| plan.routes.get(i))
        .and_then(|r| r.contract.as_deref())
        .map_or(&[][..], |c| &c.notices[..]);
    h.reserve(plan.headers.count() + 4 + notices.len() + if ctx.rate.is_some() { 5 } else { 0 });
    for (k, v) in notices {
        h.append(k.clone(), v.clone());
    }
    plan.headers.apply(h, ctx.https, no_store);
    if let Some((i, origin)) = &ctx.cors {
        if let Some(p) = plan.cors.get(*i) {
            p.apply_actual(h, origin);
        }
    }
    h.append(header::VARY, VARY_ORIGIN.clone());
    h.insert("x-request-id", ctx.id.clone());
    if let Some(r) = &ctx.rate {
        plan.ratelimit.headers(r, h);
    }
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
