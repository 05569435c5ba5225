//! The admin API: its own listener (default `127.0.0.1:9090`), never routed
//! through the public pipeline, authenticated by a bearer token of which only
//! the SHA-256 is in the config (compared in constant time).
//!
//! ```text
//! GET  /keys                  list API keys (never the keys)
//! POST /keys                  {"owner","name","scopes":[..],"expires":"30d"} -> 201 {"key","record"}
//! POST /keys/{id}/rotate      {"overlap":"1h"} -> 201 {"key","record"}
//! POST /keys/{id}/revoke      -> 204
//! POST /reload                -> 204, or 422 {"errors":[{"path","message"}]}
//! GET  /users                 list users (never password hashes)
//! POST /users/{name}/disable  disable and end all sessions -> 204
//! POST /users/{name}/enable   -> 204
//! GET  /users/{name}/sessions list a user's sessions (times only, never ids)
//! DELETE /users/{name}/sessions  end all sessions of a user -> 200 {"ended": n}
//! GET  /clients               list OAuth clients (never secrets)
//! GET  /metrics               security-event counters (Prometheus text)
//! POST /clients               {"id","name","scopes":[..]} -> 201 {"client_id","client_secret"}
//! POST /clients/{id}/disable  -> 204
//! ```

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use aws_lc_rs::{constant_time, digest};
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::server::Shared;

/// Compiled `[admin]`.
#[derive(Debug, Clone)]
pub struct AdminPlan {
    /// Listen address.
    pub addr: SocketAddr,
    /// SHA-256 of the admin token.
    pub token_sha256: [u8; 32],
}

/// Parses a hex SHA-256.
pub fn parse_sha256(hex: &str) -> Option<[u8; 32]> {
    let b = hex.trim().as_bytes();
    if b.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in b.chunks(2).enumerate() {
        let s = std::str::from_utf8(pair).ok()?;
        *out.get_mut(i)? = u8::from_str_radix(s, 16).ok()?;
    }
    Some(out)
}

/// A new random admin token and the SHA-256 to put in the config.
pub fn new_token() -> Result<(String, String), String> {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).map_err(|e| format!("no randomness: {e}"))?;
    let token: String = b.iter().map(|x| format!("{x:02x}")).collect();
    let hash: String = digest::digest(&digest::SHA256, token.as_bytes())
        .as_ref()
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect();
    Ok((token, hash))
}

/// Serves the admin API until the process ends (or shutdown).
pub async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| handle(shared.clone(), req));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn reply(status: StatusCode, body: Option<Value>) -> Response<Full<Bytes>> {
    let (bytes, ctype) = match body {
        Some(v) if status.is_success() => (v.to_string(), "application/json"),
        Some(v) => (v.to_string(), "application/problem+json"),
        None => (String::new(), "application/json"),
    };
    let mut r = Response::new(Full::new(Bytes::from(bytes)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, http::HeaderValue::from_static(ctype));
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    r
}

fn problem(status: StatusCode, detail: &str) -> Response<Full<Bytes>> {
    reply(
        status,
        Some(
            json!({"type": "urn:portcullis:problem:admin", "title": status.canonical_reason().unwrap_or(""),
                    "status": status.as_u16(), "detail": detail}),
        ),
    )
}

fn authorized(shared: &Shared, req: &Request<Incoming>) -> bool {
    let plan = shared.plan.load();
    let Some(admin) = &plan.admin else {
        return false;
    };
    let Some(token) = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    let h = digest::digest(&digest::SHA256, token.trim().as_bytes());
    constant_time::verify_slices_are_equal(h.as_ref(), &admin.token_sha256).is_ok()
}

fn store_error(e: &str) -> Response<Full<Bytes>> {
    tracing::error!(error = %e, "admin: store error");
    problem(StatusCode::INTERNAL_SERVER_ERROR, "store error")
}

fn secs(v: Option<&Value>) -> Result<Option<i64>, String> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => crate::config::units::parse_duration(s)
            .map(|d| Some(i64::try_from(d.as_secs()).unwrap_or(i64::MAX))),
        Some(_) => Err("durations are strings such as \"30d\"".into()),
    }
}

async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if !authorized(&shared, &req) {
        let mut r = problem(StatusCode::UNAUTHORIZED, "a valid admin token is required");
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            http::HeaderValue::from_static("Bearer realm=\"portcullis-admin\""),
        );
        return Ok(r);
    }
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let bytes = match Limited::new(req.into_body(), 64 << 10).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return Ok(problem(
                StatusCode::PAYLOAD_TOO_LARGE,
                "the body is too large",
            ));
        }
    };
    let body: Value = if bytes.is_empty() {
        Value::Null
    } else {
        match serde_json::from_slice(&bytes) {
            Ok(v) => v,
            Err(_) => {
                return Ok(problem(
                    StatusCode::BAD_REQUEST,
                    "the body is not valid JSON",
                ));
            }
        }
    };
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let plan = shared.plan.load_full();
    let keys = || match (&plan.authn.api_keys, &plan.store) {
        (Some(k), Some(s)) => Ok((k, s)),
        _ => Err(()),
    };
    let not_configured = || problem(StatusCode::NOT_FOUND, "API keys are not configured");
    let resp = match (&method, segs.as_slice()) {
        (&Method::POST, ["reload"]) => match crate::server::reload::reload(&shared).await {
            Ok(()) => reply(StatusCode::NO_CONTENT, None),
            Err(errs) => {
                let list: Vec<Value> = errs
                    .0
                    .iter()
                    .map(|e| json!({"path": e.path, "message": e.message}))
                    .collect();
                let mut r = problem(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "the config does not compile; the previous one keeps serving",
                );
                *r.body_mut() = Full::new(Bytes::from(
                    json!({"type": "urn:portcullis:problem:admin", "title": "Unprocessable Entity", "status": 422,
                           "detail": "the config does not compile; the previous one keeps serving", "errors": list})
                        .to_string(),
                ));
                r
            }
        },
        (&Method::GET, ["keys"]) => match keys() {
            Ok((_, s)) => match s.key_list() {
                Ok(list) => reply(StatusCode::OK, Some(json!(list))),
                Err(e) => store_error(&e),
            },
            Err(()) => not_configured(),
        },
        (&Method::POST, ["keys"]) => match keys() {
            Ok((k, s)) => {
                let owner = body.get("owner").and_then(Value::as_str).unwrap_or("");
                let name = body.get("name").and_then(Value::as_str).unwrap_or("");
                let scopes: Vec<String> = body
                    .get("scopes")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(|x| x.as_str().map(String::from))
                            .collect()
                    })
                    .unwrap_or_default();
                match secs(body.get("expires")) {
                    Err(e) => problem(StatusCode::BAD_REQUEST, &e),
                    Ok(expires) => {
                        match k.create(s, owner, name, scopes, expires, crate::unix_now()) {
                            Ok(new) => reply(StatusCode::CREATED, Some(json!(new))),
                            Err(e) => problem(StatusCode::BAD_REQUEST, &e),
                        }
                    }
                }
            }
            Err(()) => not_configured(),
        },
        (&Method::POST, ["keys", id, "rotate"]) => match keys() {
            Ok((k, s)) => match secs(body.get("overlap")) {
                Err(e) => problem(StatusCode::BAD_REQUEST, &e),
                Ok(overlap) => match k.rotate(s, id, overlap, crate::unix_now()) {
                    Ok(new) => match s.key_get(id).map(|r| r.and_then(|r| r.expires)) {
                        Ok(Some(t)) => match crate::store::shared::revoke_key(&plan, id, t).await {
                            Ok(()) => reply(StatusCode::CREATED, Some(json!(new))),
                            Err(e) => store_error(&e),
                        },
                        Ok(None) => reply(StatusCode::CREATED, Some(json!(new))),
                        Err(e) => store_error(&e),
                    },
                    Err(e) => problem(StatusCode::NOT_FOUND, &e),
                },
            },
            Err(()) => not_configured(),
        },
        (&Method::POST, ["keys", id, "revoke"]) => match keys() {
            Ok((_, s)) => match s.key_revoke(id, crate::unix_now()) {
                Ok(true) => {
                    match crate::store::shared::revoke_key(&plan, id, crate::unix_now()).await {
                        Ok(()) => reply(StatusCode::NO_CONTENT, None),
                        Err(e) => store_error(&e),
                    }
                }
                Ok(false) => match crate::store::shared::revoke_key_again(&plan, s, id).await {
                    Ok(true) => reply(StatusCode::NO_CONTENT, None),
                    Ok(false) => problem(StatusCode::NOT_FOUND, "no active key with this id"),
                    Err(e) => store_error(&e),
                },
                Err(e) => store_error(&e),
            },
            Err(()) => not_configured(),
        },
        (&Method::GET, ["metrics"]) => {
            let mut r = Response::new(Full::new(Bytes::from(
                plan.metrics.render(plan.redis.as_deref()),
            )));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                http::HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            r
        }
        (&Method::GET, ["users"]) => match &plan.store {
            Some(s) if plan.authn.sessions.is_some() => match s.user_list() {
                Ok(list) => reply(StatusCode::OK, Some(json!(list))),
                Err(e) => store_error(&e),
            },
            _ => problem(StatusCode::NOT_FOUND, "users are not configured"),
        },
        (&Method::POST, ["users", name, action @ ("disable" | "enable")]) => match &plan.store {
            Some(s) if plan.authn.sessions.is_some() => {
                match s.user_set_disabled(name, *action == "disable") {
                    Ok(true) if *action == "disable" => {
                        match crate::store::shared::end_user(&plan, s, name).await {
                            Ok(_) => reply(StatusCode::NO_CONTENT, None),
                            Err(e) => store_error(&e),
                        }
                    }
                    Ok(true) => reply(StatusCode::NO_CONTENT, None),
                    Ok(false) => problem(StatusCode::NOT_FOUND, "no such user"),
                    Err(e) => store_error(&e),
                }
            }
            _ => problem(StatusCode::NOT_FOUND, "users are not configured"),
        },
        (&Method::GET, ["users", name, "sessions"]) => match &plan.store {
            Some(s) if plan.authn.sessions.is_some() => match s.session_list_user(name) {
                Ok(list) => {
                    let list: Vec<Value> = list
                        .into_iter()
                        .map(|(c, l, e)| json!({"created": c, "last_seen": l, "expires": e}))
                        .collect();
                    reply(StatusCode::OK, Some(json!(list)))
                }
                Err(e) => store_error(&e),
            },
            _ => problem(StatusCode::NOT_FOUND, "users are not configured"),
        },
        (&Method::GET, ["clients"]) => match (&plan.authn.tokens, &plan.store) {
            (Some(_), Some(s)) => match s.client_list() {
                Ok(list) => reply(StatusCode::OK, Some(json!(list))),
                Err(e) => store_error(&e),
            },
            _ => problem(StatusCode::NOT_FOUND, "OAuth clients are not configured"),
        },
        (&Method::POST, ["clients"]) => match (&plan.authn.tokens, &plan.store) {
            (Some(t), Some(s)) => {
                let id = body.get("id").and_then(Value::as_str).unwrap_or("");
                let name = body.get("name").and_then(Value::as_str).unwrap_or("");
                let scopes: Vec<String> = body
                    .get("scopes")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(|x| x.as_str().map(String::from))
                            .collect()
                    })
                    .unwrap_or_default();
                match t.create_client(s, id, name, scopes.clone(), crate::unix_now()) {
                    Ok(secret) => reply(
                        StatusCode::CREATED,
                        Some(json!({"client_id": id, "client_secret": secret, "scopes": scopes})),
                    ),
                    Err(e) if e.contains("UNIQUE") => {
                        problem(StatusCode::CONFLICT, "a client with this id exists")
                    }
                    Err(e) => problem(StatusCode::BAD_REQUEST, &e),
                }
            }
            _ => problem(StatusCode::NOT_FOUND, "OAuth clients are not configured"),
        },
        (&Method::POST, ["clients", id, "disable"]) => match (&plan.authn.tokens, &plan.store) {
            (Some(_), Some(s)) => match s.client_disable(id) {
                Ok(true) => reply(StatusCode::NO_CONTENT, None),
                Ok(false) => problem(StatusCode::NOT_FOUND, "no such client"),
                Err(e) => store_error(&e),
            },
            _ => problem(StatusCode::NOT_FOUND, "OAuth clients are not configured"),
        },
        (&Method::DELETE, ["users", name, "sessions"]) => match &plan.store {
            Some(s) if plan.authn.sessions.is_some() => match s.session_delete_user(name) {
                Ok(n) => match crate::store::shared::end_user(&plan, s, name).await {
                    Ok(m) => reply(StatusCode::OK, Some(json!({"ended": n + m}))),
                    Err(e) => store_error(&e),
                },
                Err(e) => store_error(&e),
            },
            _ => problem(StatusCode::NOT_FOUND, "users are not configured"),
        },
        _ => problem(StatusCode::NOT_FOUND, "no such admin endpoint"),
    };
    tracing::info!(%method, %path, status = resp.status().as_u16(), "admin request");
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_and_hashes() {
        let (t, h) = new_token().unwrap_or_default();
        assert_eq!(t.len(), 64);
        let parsed = parse_sha256(&h);
        assert!(parsed.is_some());
        assert!(parse_sha256("zz").is_none());
        assert!(parse_sha256(&"g".repeat(64)).is_none());
    }
}
