//! Stage 5: authentication. Every route says `public = true` or lists the
//! methods it accepts; for the latter the first credential present decides:
//! a present but invalid credential is refused with 401 and never handed to
//! the next method. Failures answer 401 problem+json with `WWW-Authenticate`
//! and a detail that never says which part of the credential was wrong; the
//! reason goes to the diagnostics log (never the credential).
//!
//! Reads the request headers; writes `ctx.identity`. The identity reaches the
//! upstream as `X-Portcullis-*` headers (set in `proxy/`), after every
//! client-sent `X-Portcullis-*` header was removed at stage 2.

pub mod api_keys;
pub mod cache;
pub mod identity;
pub mod jwks;
pub mod jwt;
pub mod sessions;
pub mod tokens;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, header};
use jsonwebtoken::{Algorithm, DecodingKey};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

pub use identity::{AuthMethod, Identity};

use self::cache::TokenCache;
use self::identity::ClaimMap;
use self::jwks::{Key, KeySet, KeySource, RemoteJwks};
use self::jwt::{Issuer, JwtVerifier, is_hmac};
use crate::config::file;
use crate::reject::Rejection;

/// What a route requires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteAuth {
    /// Anyone.
    Public,
    /// One of these methods, tried in order.
    Required(Vec<AuthMethod>),
}

/// The compiled `[auth]`.
#[derive(Debug, Default)]
pub struct Authn {
    /// Bearer JWTs.
    pub jwt: Option<JwtVerifier>,
    /// API keys.
    pub api_keys: Option<api_keys::ApiKeys>,
    /// Users, login and sessions.
    pub sessions: Option<sessions::Sessions>,
    /// Tokens Portcullis issues.
    pub tokens: Option<tokens::Tokens>,
}

/// What authentication needs from the request besides its headers.
#[derive(Debug, Clone, Copy)]
pub struct Presented<'a> {
    /// The query string.
    pub query: Option<&'a str>,
    /// The route's `api_key_query` parameter name.
    pub api_key_query: Option<&'a str>,
    /// The store (API keys).
    pub store: Option<&'a crate::store::Store>,
    /// Sessions and revocations in Redis, when configured.
    pub shared: Option<&'a crate::store::shared::SharedAuth>,
    /// For logs.
    pub request_id: &'a str,
    /// Request method (CSRF check for cookie sessions).
    pub method: &'a http::Method,
    /// Whether the client sees HTTPS (its own origin's scheme).
    pub https: bool,
}

impl Authn {
    /// Remote key sets, for warming at start and tests.
    pub fn remote_jwks(&self) -> Vec<Arc<RemoteJwks>> {
        self.jwt
            .iter()
            .flat_map(|j| &j.issuers)
            .filter_map(|i| match &i.keys {
                KeySource::Remote(r) => Some(r.clone()),
                KeySource::Static(_) => None,
            })
            .collect()
    }

    /// Establishes the caller's identity for a route that needs one: the
    /// first method whose credential is present decides.
    pub async fn authenticate(
        &self,
        methods: &[AuthMethod],
        h: &HeaderMap,
        p: Presented<'_>,
    ) -> Result<Arc<Identity>, Rejection> {
        let request_id = p.request_id;
        let invalid = |method: &str, reason: &dyn std::fmt::Display| {
            tracing::info!(request_id, %reason, method, "authentication failed");
            Rejection::Unauthenticated { invalid: true }
        };
        for m in methods {
            match m {
                AuthMethod::Jwt => {
                    let Some(token) = bearer(h)? else { continue };
                    let Some(v) = &self.jwt else { continue };
                    return v
                        .verify(token, unix_now())
                        .await
                        .map_err(|e| invalid("jwt", &e));
                }
                AuthMethod::Session => {
                    let Some(s) = &self.sessions else { continue };
                    let Some(id) = s.presented(h) else { continue };
                    let now = crate::unix_now();
                    let verified = match (p.shared, p.store) {
                        (Some(shared), Some(store)) => {
                            s.verify_shared(shared, store, id, now).await.map_err(|e| {
                                (e == sessions::SessionError::Store)
                                    .then_some(Rejection::StateUnavailable)
                                    .ok_or(e)
                            })
                        }
                        (Some(_), None) => return Err(Rejection::Internal),
                        (None, _) => {
                            let store = p.store.ok_or(Rejection::Internal)?;
                            s.verify(store, id, now).map_err(|e| {
                                (e == sessions::SessionError::Store)
                                    .then_some(Rejection::Internal)
                                    .ok_or(e)
                            })
                        }
                    };
                    let identity = match verified {
                        Ok(i) => i,
                        Err(Ok(r)) => return Err(r),
                        Err(Err(e)) => return Err(invalid("session", &e)),
                    };
                    if !s.same_origin(p.method, h, p.https) {
                        tracing::info!(
                            request_id,
                            "cookie-authenticated write from another origin refused"
                        );
                        return Err(Rejection::CsrfDenied);
                    }
                    return Ok(identity);
                }
                AuthMethod::ApiKey => {
                    let Some(k) = &self.api_keys else { continue };
                    let presented = k
                        .presented(h, p.query, p.api_key_query)
                        .map_err(|e| invalid("api_key", &e))?;
                    let Some(key) = presented else { continue };
                    let store = p.store.ok_or(Rejection::Internal)?;
                    let now = crate::unix_now();
                    let verified = k.verify(store, &key, now);
                    if let (Ok(id), Some(shared)) = (&verified, p.shared) {
                        // Revocations made on any instance.
                        let key_id = id.key_id.as_deref().unwrap_or_default();
                        match shared.key_revoked(key_id, now).await {
                            Ok(false) => {}
                            Ok(true) => {
                                return Err(invalid("api_key", &api_keys::ApiKeyError::Revoked));
                            }
                            Err(e) => {
                                tracing::warn!(request_id, error = %e, "API key revocations unreadable");
                                return Err(Rejection::StateUnavailable);
                            }
                        }
                    }
                    return match verified {
                        Ok(id) => {
                            tracing::debug!(
                                request_id,
                                key_id = id.key_id.as_deref().unwrap_or("-"),
                                "API key used"
                            );
                            Ok(id)
                        }
                        Err(api_keys::ApiKeyError::Store) => Err(Rejection::Internal),
                        Err(e) => Err(invalid("api_key", &e)),
                    };
                }
            }
        }
        Err(Rejection::Unauthenticated { invalid: false })
    }
}

/// Whether the request's `Content-Type` is `mime` (parameters ignored).
fn content_type_is(parts: &http::request::Parts, mime: &str) -> bool {
    parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case(mime))
}

/// Reads a small JSON body (at most 4 KiB, `application/json`).
async fn json_body<T: serde::de::DeserializeOwned>(
    parts: &http::request::Parts,
    body: hyper::body::Incoming,
    shape: &'static str,
) -> Result<T, Rejection> {
    use http_body_util::BodyExt;
    let is_json = content_type_is(parts, "application/json");
    if !is_json {
        return Err(Rejection::UnsupportedMediaType);
    }
    let bytes = http_body_util::Limited::new(body, 4096)
        .collect()
        .await
        .map_err(|_| Rejection::BodyTooLarge { limit: 4096 })?
        .to_bytes();
    serde_json::from_slice(&bytes).map_err(|_| Rejection::BadRequest(shape))
}

fn json_response(v: &serde_json::Value) -> http::Response<crate::body::Body> {
    let mut r = http::Response::new(crate::body::Body::full(bytes::Bytes::from(v.to_string())));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

impl Authn {
    /// Whether the gateway itself serves this path (login, logout, refresh,
    /// JWKS); such paths are never routed.
    pub fn serves(&self, path: &str) -> bool {
        self.sessions
            .as_ref()
            .is_some_and(|s| path == s.login_path || path == s.logout_path)
            || self.tokens.as_ref().is_some_and(|t| {
                path == t.jwks_path || path == t.refresh_path || path == t.token_path
            })
    }
}

/// The endpoints the gateway serves itself: `POST /auth/login`,
/// `POST /auth/logout`, `POST /auth/refresh`, `GET /.well-known/jwks.json`
/// (paths configurable).
pub async fn gateway_endpoint(
    ctx: &mut crate::context::RequestContext,
    parts: http::request::Parts,
    body: hyper::body::Incoming,
) -> Result<http::Response<crate::body::Body>, Rejection> {
    use http::{Method, Response, StatusCode};

    let plan = ctx.plan.clone();
    let authn = &plan.authn;
    if let Some(t) = authn.tokens.as_ref().filter(|t| ctx.path == t.jwks_path) {
        if !matches!(parts.method, Method::GET | Method::HEAD) {
            return Err(Rejection::MethodNotAllowed {
                allow: http::HeaderValue::from_static("GET, HEAD"),
            });
        }
        let mut r = Response::new(crate::body::Body::full(t.jwks.clone()));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/jwk-set+json"),
        );
        r.headers_mut().insert(
            header::CACHE_CONTROL,
            http::HeaderValue::from_static("public, max-age=300"),
        );
        return Ok(r);
    }
    if let Some(t) = authn.tokens.as_ref().filter(|t| ctx.path == t.token_path) {
        let _ = t;
        return oauth_token(ctx, parts, body).await;
    }
    let (Some(s), Some(store)) = (&authn.sessions, plan.store.clone()) else {
        return Err(Rejection::Internal);
    };
    if parts.method != Method::POST {
        return Err(Rejection::MethodNotAllowed {
            allow: http::HeaderValue::from_static("POST"),
        });
    }
    // Browsers always send Origin on POST: a foreign one is refused. Without
    // one the caller is not a browser (and these endpoints need
    // application/json, which a cross-site form cannot send without a
    // failing preflight).
    if parts.headers.contains_key(header::ORIGIN)
        && !s.same_origin(&parts.method, &parts.headers, ctx.https)
    {
        return Err(Rejection::CsrfDenied);
    }
    let now = crate::unix_now();
    let request_id = ctx.id_str().to_owned();
    let client_ip = ctx.client_ip;

    #[derive(serde::Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    struct RefreshBody {
        refresh_token: String,
    }

    if ctx.path == s.logout_path {
        let refresh: Option<RefreshBody> = if parts.headers.contains_key(header::CONTENT_TYPE) {
            Some(
                json_body(
                    &parts,
                    body,
                    "expected {\"refresh_token\": \"...\"} or no body",
                )
                .await?,
            )
        } else {
            None
        };
        let cookie = s.presented(&parts.headers).map(str::to_owned);
        let (ended, revoked) = if let Some(shared) = &plan.shared {
            let ended = match cookie.as_deref().map(sessions::Sessions::id_hash) {
                Some(Ok(h)) => shared
                    .session_delete(&h)
                    .await
                    .map_err(|_| Rejection::StateUnavailable)?,
                _ => false,
            };
            let revoked = match (&authn.tokens, refresh) {
                (Some(t), Some(r)) => t
                    .revoke_shared(shared, &r.refresh_token)
                    .await
                    .map_err(|_| Rejection::StateUnavailable)?,
                _ => false,
            };
            (ended, revoked)
        } else {
            let plan2 = plan.clone();
            tokio::task::spawn_blocking(move || {
                let a = &plan2.authn;
                let ended = match (&a.sessions, cookie) {
                    (Some(s), Some(id)) => s.logout(&store, &id).unwrap_or(false),
                    _ => false,
                };
                let revoked = match (&a.tokens, refresh) {
                    (Some(t), Some(r)) => t.revoke(&store, &r.refresh_token, now).unwrap_or(false),
                    _ => false,
                };
                (ended, revoked)
            })
            .await
            .map_err(|_| Rejection::Internal)?
        };
        crate::audit::emit(
            plan.audit_sink.as_deref(),
            "logout",
            serde_json::json!({
                "request_id": request_id.to_string(), "client_ip": ctx.client_ip,
                "session_ended": ended, "refresh_family_revoked": revoked,
            }),
        );
        let mut r = Response::new(crate::body::Body::empty());
        *r.status_mut() = StatusCode::NO_CONTENT;
        r.headers_mut().insert(header::SET_COOKIE, s.clear_cookie());
        return Ok(r);
    }

    if let Some(t) = authn.tokens.as_ref().filter(|t| ctx.path == t.refresh_path) {
        let b: RefreshBody =
            json_body(&parts, body, "expected {\"refresh_token\": \"...\"}").await?;
        let out = if let Some(shared) = &plan.shared {
            t.refresh_shared(shared, &store, &b.refresh_token, now)
                .await
        } else {
            let plan2 = plan.clone();
            tokio::task::spawn_blocking(move || {
                plan2
                    .authn
                    .tokens
                    .as_ref()
                    .map(|t| t.refresh(&store, &b.refresh_token, now))
            })
            .await
            .map_err(|_| Rejection::Internal)?
            .ok_or(Rejection::Internal)?
        };
        return match out {
            Ok(tokens) => {
                ctx.credentials = true;
                Ok(json_response(&tokens))
            }
            Err(tokens::RefreshError::Store) if plan.shared.is_some() => {
                Err(Rejection::StateUnavailable)
            }
            Err(tokens::RefreshError::Store) => Err(Rejection::Internal),
            Err(e) => {
                crate::audit::emit(
                    plan.audit_sink.as_deref(),
                    "refresh",
                    serde_json::json!({
                        "outcome": "failure", "reason": e.to_string(),
                        "client_ip": client_ip.to_string(), "request_id": request_id.to_string(),
                    }),
                );
                Err(Rejection::Unauthenticated { invalid: true })
            }
        };
    }

    // Login.
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Credentials {
        username: String,
        password: String,
    }
    let c: Credentials = json_body(
        &parts,
        body,
        "expected {\"username\": \"...\", \"password\": \"...\"}",
    )
    .await?;
    let shown_name: String = c
        .username
        .chars()
        .filter(|ch| !ch.is_control())
        .take(64)
        .collect();
    // Brute-force protection: a locked account (from this address) or
    // address is not even checked; the answer is the generic 429.
    let rl = &plan.ratelimit;
    let account = c.username.clone();
    {
        if let Some(secs) = rl.locked(Some(&account), client_ip).await? {
            plan.metrics
                .rate_limited("login", "login lockout", "account+ip", false);
            crate::audit::emit(
                plan.audit_sink.as_deref(),
                "login",
                serde_json::json!({
                    "outcome": "locked", "username": shown_name.to_string(),
                    "client_ip": client_ip.to_string(), "request_id": request_id.to_string(),
                }),
            );
            return Err(Rejection::RateLimited { retry_after: secs });
        }
    }
    let plan2 = plan.clone();
    let shared = plan.shared.clone();
    let save = shared.is_none();
    let outcome = tokio::task::spawn_blocking(move || {
        let a = &plan2.authn;
        let s = a.sessions.as_ref()?;
        Some(
            s.login(&store, &c.username, &c.password, now, save)
                .and_then(|login| match login {
                    sessions::Login::Ok {
                        cookie,
                        user,
                        unsaved,
                    } => {
                        let tokens = match (&a.tokens, s.issue_tokens, save) {
                            (Some(t), true, true) => Some(t.issue(&store, &user, None, now)?),
                            _ => None,
                        };
                        Ok(Ok((cookie, user, tokens, unsaved)))
                    }
                    sessions::Login::Failed { reason } => Ok(Err(reason)),
                }),
        )
    })
    .await
    .map_err(|_| Rejection::Internal)?
    .ok_or(Rejection::Internal)?
    .map_err(|e| {
        tracing::error!(request_id = %request_id, error = %e, "login failed on the store");
        Rejection::Internal
    })?;
    {
        match &outcome {
            Ok(_) => rl.login_succeeded(&account, client_ip).await,
            Err(_) => {
                if let Some(lock) = rl.login_failed(&account, client_ip).await {
                    plan.metrics.lockout();
                    crate::audit::emit(
                        plan.audit_sink.as_deref(),
                        "login_lockout",
                        serde_json::json!({
                            "username": shown_name.to_string(), "client_ip": client_ip.to_string(),
                            "lock_seconds": lock / 1_000_000, "request_id": request_id.to_string(),
                        }),
                    );
                }
            }
        }
    }
    let outcome = match (outcome, &shared) {
        (Ok((cookie, user, mut tokens, unsaved)), Some(shared)) => {
            if let Some(hash) = unsaved {
                shared
                    .session_insert(&hash, &user, now, now.saturating_add(s.absolute), s.idle)
                    .await
                    .map_err(|_| Rejection::StateUnavailable)?;
            }
            if let (Some(t), true) = (&authn.tokens, s.issue_tokens) {
                tokens = Some(
                    t.issue_shared(shared, &user, None, now)
                        .await
                        .map_err(|_| Rejection::StateUnavailable)?,
                );
            }
            Ok((cookie, user, tokens))
        }
        (Ok((cookie, user, tokens, _)), None) => Ok((cookie, user, tokens)),
        (Err(reason), _) => Err(reason),
    };
    match outcome {
        Ok((cookie, user, tokens)) => {
            crate::audit::emit(
                plan.audit_sink.as_deref(),
                "login",
                serde_json::json!({
                    "outcome": "success", "username": shown_name.to_string(), "user_id": user.id,
                    "client_ip": client_ip.to_string(), "request_id": request_id.to_string(),
                }),
            );
            let mut body = serde_json::json!({"user": {"id": user.id, "username": user.username, "roles": user.roles}});
            if let Some(t) = tokens {
                if let (Some(obj), Some(tobj)) = (body.as_object_mut(), t.as_object()) {
                    obj.extend(tobj.clone());
                }
            }
            let mut r = json_response(&body);
            if let Some(c) = cookie {
                r.headers_mut().insert(header::SET_COOKIE, c);
            }
            ctx.credentials = true; // Cache-Control: no-store
            Ok(r)
        }
        Err(reason) => {
            crate::audit::emit(
                plan.audit_sink.as_deref(),
                "login",
                serde_json::json!({
                    "outcome": "failure", "reason": reason.to_string(), "username": shown_name.to_string(),
                    "client_ip": client_ip.to_string(), "request_id": request_id.to_string(),
                }),
            );
            Err(Rejection::LoginFailed)
        }
    }
}

/// `POST /oauth/token`: the OAuth 2.0 client credentials grant (RFC 6749
/// §4.4). The client authenticates with HTTP Basic or `client_id` and
/// `client_secret` in the form; errors carry the RFC's `error` code inside
/// problem+json.
async fn oauth_token(
    ctx: &mut crate::context::RequestContext,
    parts: http::request::Parts,
    body: hyper::body::Incoming,
) -> Result<http::Response<crate::body::Body>, Rejection> {
    use http::{Method, StatusCode};
    use http_body_util::BodyExt;

    fn oauth_error(
        status: StatusCode,
        error: &'static str,
        request_id: &str,
    ) -> http::Response<crate::body::Body> {
        let v = serde_json::json!({
            "type": "urn:portcullis:problem:oauth", "title": status.canonical_reason().unwrap_or(""),
            "status": status.as_u16(), "detail": "the token request was refused", "error": error,
            "instance": format!("urn:portcullis:request:{request_id}"),
        });
        let mut r = http::Response::new(crate::body::Body::full(bytes::Bytes::from(v.to_string())));
        *r.status_mut() = status;
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/problem+json"),
        );
        if status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                http::HeaderValue::from_static("Basic realm=\"portcullis\""),
            );
        }
        r
    }
    if parts.method != Method::POST {
        return Err(Rejection::MethodNotAllowed {
            allow: http::HeaderValue::from_static("POST"),
        });
    }
    ctx.credentials = true; // Cache-Control: no-store, always (RFC 6749 §5.1)
    let rid = ctx.id_str().to_owned();
    let is_form = content_type_is(&parts, "application/x-www-form-urlencoded");
    if !is_form {
        return Err(Rejection::UnsupportedMediaType);
    }
    let bytes = http_body_util::Limited::new(body, 4096)
        .collect()
        .await
        .map_err(|_| Rejection::BodyTooLarge { limit: 4096 })?
        .to_bytes();
    let form_decode = |v: &str| crate::canon::decode_segment(&v.replace('+', " "));
    let mut form: Vec<(String, String)> = Vec::new();
    for pair in String::from_utf8_lossy(&bytes)
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let k = form_decode(k);
        if form.iter().any(|(x, _)| *x == k) {
            return Ok(oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                &rid,
            ));
        }
        form.push((k, form_decode(v)));
    }
    let field = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    if field("grant_type").as_deref() != Some("client_credentials") {
        let code = if field("grant_type").is_some() {
            "unsupported_grant_type"
        } else {
            "invalid_request"
        };
        return Ok(oauth_error(StatusCode::BAD_REQUEST, code, &rid));
    }
    let basic = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.split_once(' ')
                .filter(|(s, _)| s.eq_ignore_ascii_case("basic"))
                .map(|(_, c)| c.trim().to_owned())
        })
        .and_then(|c| {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD.decode(c).ok()
        })
        .and_then(|c| String::from_utf8(c).ok())
        .and_then(|c| {
            c.split_once(':').map(|(i, s)| {
                (
                    crate::canon::decode_segment(i),
                    crate::canon::decode_segment(s),
                )
            })
        });
    let basic_present = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.len() >= 6 && v.get(..6).is_some_and(|p| p.eq_ignore_ascii_case("basic "))
        });
    if basic_present && basic.is_none() {
        return Ok(oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            &rid,
        ));
    }
    let in_form = field("client_id").zip(field("client_secret"));
    let (id, secret) = match (basic, in_form) {
        (Some(b), None) => b,
        (None, Some(f)) => f,
        _ => {
            return Ok(oauth_error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                &rid,
            ));
        }
    };
    let scope = field("scope");
    let (plan, now) = (ctx.plan.clone(), crate::unix_now());
    let client_ip = ctx.client_ip;
    let shown: String = id.chars().filter(|c| !c.is_control()).take(64).collect();
    let out = tokio::task::spawn_blocking(move || {
        let (Some(t), Some(store)) = (&plan.authn.tokens, &plan.store) else {
            return Err("server_error");
        };
        t.client_credentials(store, &id, &secret, scope.as_deref(), now)
    })
    .await
    .map_err(|_| Rejection::Internal)?;
    match out {
        Ok(v) => {
            crate::audit::emit(
                ctx.plan.audit_sink.as_deref(),
                "client_token",
                serde_json::json!({
                    "outcome": "success", "client_id": shown.to_string(),
                    "client_ip": client_ip.to_string(), "request_id": rid.to_string(),
                }),
            );
            Ok(json_response(&v))
        }
        Err(code) => {
            crate::audit::emit(
                ctx.plan.audit_sink.as_deref(),
                "client_token",
                serde_json::json!({
                    "outcome": "failure", "reason": code, "client_id": shown.to_string(),
                    "client_ip": client_ip.to_string(), "request_id": rid.to_string(),
                }),
            );
            let status = match code {
                "invalid_client" => StatusCode::UNAUTHORIZED,
                "server_error" => return Err(Rejection::Internal),
                _ => StatusCode::BAD_REQUEST,
            };
            Ok(oauth_error(status, code, &rid))
        }
    }
}

fn unix_now() -> u64 {
    u64::try_from(crate::unix_now()).unwrap_or(0)
}

/// The bearer token, if the request carries one. Several `Authorization`
/// headers, or a malformed bearer value, are an invalid credential.
fn bearer(h: &HeaderMap) -> Result<Option<&str>, Rejection> {
    let mut values = h.get_all(header::AUTHORIZATION).iter();
    let Some(v) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(Rejection::Unauthenticated { invalid: true });
    }
    let v = v
        .to_str()
        .map_err(|_| Rejection::Unauthenticated { invalid: true })?;
    let Some((scheme, token)) = v.split_once(' ') else {
        return Ok(None);
    };
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Ok(None); // another scheme: not this method's credential
    }
    let token68 = |c: char| c.is_ascii_alphanumeric() || "-._~+/=".contains(c);
    if token.is_empty() || !token.chars().all(token68) {
        return Err(Rejection::Unauthenticated { invalid: true });
    }
    Ok(Some(token))
}

/// Compiles a route's `public`/`auth` pair.
pub fn route_auth(
    public: bool,
    auth: Option<&[String]>,
    have_jwt: bool,
    have_keys: bool,
    have_sessions: bool,
) -> Result<RouteAuth, String> {
    match (public, auth) {
        (true, None) => Ok(RouteAuth::Public),
        (true, Some(_)) => {
            Err("a route is either `public = true` or has `auth = [...]`, not both".into())
        }
        (false, None) => {
            Err("say who may call this route: `public = true` or `auth = [\"jwt\"]`".into())
        }
        (false, Some([])) => {
            Err("`auth` lists no method; use `public = true` for a public route".into())
        }
        (false, Some(list)) => {
            let mut methods = Vec::new();
            for m in list {
                let method = match m.as_str() {
                    "jwt" if have_jwt => AuthMethod::Jwt,
                    "jwt" => return Err("\"jwt\" needs [auth.jwt] with at least one issuer".into()),
                    "api_key" if have_keys => AuthMethod::ApiKey,
                    "api_key" => return Err("\"api_key\" needs [auth.api_keys]".into()),
                    "session" if have_sessions => AuthMethod::Session,
                    "session" => return Err("\"session\" needs [auth.sessions]".into()),
                    other => {
                        return Err(format!(
                            "unknown authentication method {other:?} (known: \"jwt\", \"api_key\", \"session\")"
                        ));
                    }
                };
                if methods.contains(&method) {
                    return Err(format!("{m:?} is listed twice"));
                }
                methods.push(method);
            }
            Ok(RouteAuth::Required(methods))
        }
    }
}

/// Compiles `[auth]`; errors are `(toml path, message)`; warnings are text.
pub fn compile(
    a: &file::Auth,
    base: &Path,
    warnings: &mut Vec<String>,
) -> (Authn, Vec<(String, String)>) {
    let mut errors = Vec::new();
    let api_keys = a.api_keys.as_ref().and_then(|k| {
        compile_api_keys(k, base, warnings)
            .map_err(|(f, m)| errors.push((format!("auth.api_keys.{f}"), m)))
            .ok()
    });
    let jwt = a.jwt.as_ref().map(|j| {
        let cache = Arc::new(TokenCache::new(j.cache_entries));
        let issuers = j
            .issuers
            .iter()
            .enumerate()
            .filter_map(|(i, iss)| {
                compile_issuer(iss, base, &cache)
                    .map_err(|(field, m)| {
                        let path = if field.is_empty() {
                            format!("auth.jwt.issuers[{i}]")
                        } else {
                            format!("auth.jwt.issuers[{i}].{field}")
                        };
                        errors.push((path, m));
                    })
                    .ok()
            })
            .collect::<Vec<_>>();
        if j.issuers.is_empty() {
            errors.push((
                "auth.jwt.issuers".into(),
                "configure at least one issuer".into(),
            ));
        }
        for (i, iss) in j.issuers.iter().enumerate() {
            if j.issuers.iter().take(i).any(|o| o.issuer == iss.issuer) {
                errors.push((
                    format!("auth.jwt.issuers[{i}].issuer"),
                    format!("issuer {:?} is configured twice", iss.issuer),
                ));
            }
        }
        if j.leeway.0 > Duration::from_secs(300) {
            errors.push((
                "auth.jwt.leeway".into(),
                "at most 5m: a larger leeway keeps expired tokens alive".into(),
            ));
        }
        JwtVerifier {
            issuers,
            leeway: j.leeway.0.as_secs(),
            max_token_bytes: usize::try_from(j.max_token_bytes.0).unwrap_or(usize::MAX),
            cache,
            signature_checks: std::sync::atomic::AtomicU64::new(0),
        }
    });
    let mut sessions = a.sessions.as_ref().and_then(|s| {
        compile_sessions(s)
            .map_err(|(f, m)| errors.push((format!("auth.sessions.{f}"), m)))
            .ok()
    });
    let tokens = a.tokens.as_ref().and_then(|t| {
        if a.sessions.is_none() {
            errors.push((
                "auth.tokens".into(),
                "[auth.tokens] needs [auth.sessions] (the users)".into(),
            ));
            return None;
        }
        compile_tokens(t, base)
            .map_err(|(f, m)| errors.push((format!("auth.tokens.{f}"), m)))
            .ok()
    });
    if let (Some(s), Some(cfg)) = (sessions.as_mut(), &a.sessions) {
        s.issue_cookie = cfg.issue.iter().any(|i| i == "cookie");
        s.issue_tokens = cfg.issue.iter().any(|i| i == "tokens");
        if cfg.issue.is_empty() || cfg.issue.iter().any(|i| i != "cookie" && i != "tokens") {
            errors.push((
                "auth.sessions.issue".into(),
                "list \"cookie\" and/or \"tokens\"".into(),
            ));
        }
        if s.issue_tokens && a.tokens.is_none() {
            errors.push((
                "auth.sessions.issue".into(),
                "\"tokens\" needs [auth.tokens]".into(),
            ));
        }
    }
    // Portcullis verifies its own access tokens like any other issuer's.
    let jwt = match &tokens {
        Some(t) => {
            let own = Issuer {
                issuer: t.issuer.clone(),
                audiences: vec![t.audience.clone()],
                algorithms: vec![Algorithm::ES256],
                keys: KeySource::Static(Arc::new(t.public_keys.clone())),
                claims: ClaimMap::new("sub", "roles", "scope", Some("tenant")),
            };
            let mut v = jwt.unwrap_or_else(|| JwtVerifier {
                issuers: Vec::new(),
                leeway: 30,
                max_token_bytes: 8192,
                cache: Arc::new(TokenCache::new(100_000)),
                signature_checks: std::sync::atomic::AtomicU64::new(0),
            });
            if v.issuers.iter().any(|i| i.issuer == own.issuer) {
                errors.push((
                    "auth.tokens.issuer".into(),
                    "the same issuer is also in [auth.jwt]".into(),
                ));
            }
            v.issuers.push(own);
            Some(v)
        }
        None => jwt,
    };
    (
        Authn {
            jwt,
            api_keys,
            sessions,
            tokens,
        },
        errors,
    )
}

fn compile_tokens(t: &file::Tokens, base: &Path) -> Result<tokens::Tokens, (&'static str, String)> {
    if t.issuer.is_empty() {
        return Err(("issuer", "must not be empty".into()));
    }
    let secs = |d: Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
    let (access, refresh) = (secs(t.access_ttl.0), secs(t.refresh_ttl.0));
    if access == 0 || access > 3600 {
        return Err((
            "access_ttl",
            "above zero and at most 1h: access tokens cannot be revoked".into(),
        ));
    }
    if refresh <= access {
        return Err(("refresh_ttl", "longer than access_ttl".into()));
    }
    for (path, field) in [
        (&t.jwks_path, "jwks_path"),
        (&t.refresh_path, "refresh_path"),
        (&t.token_path, "token_path"),
    ] {
        if crate::canon::canonicalize(path, 2048).ok().as_deref() != Some(path.as_str()) {
            return Err((field, format!("{path:?} is not a canonical path")));
        }
    }
    let keys: Vec<(String, std::path::PathBuf)> = t
        .signing_keys
        .iter()
        .map(|k| (k.kid.clone(), k.file.clone()))
        .collect();
    tokens::Tokens::load(
        t.issuer.clone(),
        t.audience.clone(),
        access,
        refresh,
        t.jwks_path.clone(),
        t.refresh_path.clone(),
        t.token_path.clone(),
        &keys,
        base,
    )
    .map(|mut tokens| {
        tokens.upstream_audience = t.upstream_token.then(|| t.upstream_audience.clone());
        tokens
    })
    .map_err(|m| ("signing_keys", m))
}

fn compile_sessions(s: &file::Sessions) -> Result<sessions::Sessions, (&'static str, String)> {
    let token = |c: u8| c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c);
    if !s.cookie.starts_with("__Host-") || !s.cookie.bytes().all(token) {
        return Err((
            "cookie",
            "the cookie name must start with __Host- (Secure, Path=/, no Domain)".into(),
        ));
    }
    let secs = |d: Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
    let (idle, absolute) = (secs(s.idle_timeout.0), secs(s.absolute_timeout.0));
    if idle == 0 || absolute < idle {
        return Err((
            "idle_timeout",
            "above zero and at most absolute_timeout".into(),
        ));
    }
    for (path, field) in [
        (&s.login_path, "login_path"),
        (&s.logout_path, "logout_path"),
    ] {
        if crate::canon::canonicalize(path, 2048).ok().as_deref() != Some(path.as_str()) {
            return Err((field, format!("{path:?} is not a canonical path")));
        }
    }
    let mut origins = Vec::new();
    for o in &s.allowed_origins {
        let lower = o.to_ascii_lowercase();
        if !(lower.starts_with("https://") || lower.starts_with("http://"))
            || lower.trim_end_matches('/') != lower
        {
            return Err((
                "allowed_origins",
                format!("origin {o:?} must be scheme://host[:port] with no path"),
            ));
        }
        origins.push(lower);
    }
    sessions::Sessions::new(
        s.cookie.clone(),
        idle,
        absolute,
        s.login_path.clone(),
        s.logout_path.clone(),
        origins,
    )
    .map_err(|m| ("", m))
}

fn compile_api_keys(
    k: &file::ApiKeys,
    base: &Path,
    warnings: &mut Vec<String>,
) -> Result<api_keys::ApiKeys, (&'static str, String)> {
    if k.prefix.is_empty()
        || k.prefix.len() > 16
        || !k
            .prefix
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    {
        return Err(("prefix", "1 to 16 lower-case letters or digits".into()));
    }
    let header = http::HeaderName::from_bytes(k.header.to_ascii_lowercase().as_bytes())
        .map_err(|_| ("header", format!("invalid header name {:?}", k.header)))?;
    if header == header::AUTHORIZATION || header == header::COOKIE {
        return Err((
            "header",
            "use a dedicated header (Authorization: ApiKey ... is always accepted)".into(),
        ));
    }
    let secret = match &k.hash_secret_file {
        Some(p) => {
            let p = if p.is_absolute() {
                p.clone()
            } else {
                base.join(p)
            };
            let bytes = std::fs::read(&p).map_err(|e| {
                (
                    "hash_secret_file",
                    format!("cannot read {}: {e}", p.display()),
                )
            })?;
            let s = bytes.trim_ascii().to_vec();
            if s.len() < 32 {
                return Err((
                    "hash_secret_file",
                    "the secret must be at least 32 bytes".into(),
                ));
            }
            Some(s)
        }
        None => {
            warnings.push("auth.api_keys has no hash_secret_file: keys are stored as plain SHA-256 hashes (HMAC with a server secret is stronger)".into());
            None
        }
    };
    let expiry = i64::try_from(k.default_expiry.0.as_secs()).unwrap_or(i64::MAX);
    if expiry == 0 {
        warnings.push(
            "auth.api_keys.default_expiry is 0: new keys never expire unless given an expiry"
                .into(),
        );
    }
    Ok(api_keys::ApiKeys::new(
        k.prefix.clone(),
        header,
        (expiry > 0).then_some(expiry),
        i64::try_from(k.rotation_overlap.0.as_secs()).unwrap_or(i64::MAX),
        secret.as_deref(),
    ))
}

fn compile_issuer(
    c: &file::JwtIssuer,
    base: &Path,
    cache: &Arc<TokenCache>,
) -> Result<Issuer, (&'static str, String)> {
    let resolve = |p: &Path| {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            base.join(p)
        }
    };
    if c.issuer.is_empty() {
        return Err(("issuer", "must not be empty".into()));
    }
    if c.audiences.is_empty() {
        return Err(("audiences", "list at least one audience".into()));
    }
    let mut algorithms = Vec::new();
    for a in &c.algorithms {
        let alg: Algorithm = a
            .parse()
            .map_err(|_| ("algorithms", format!("unknown algorithm {a:?}")))?;
        algorithms.push(alg);
    }
    if algorithms.is_empty() {
        return Err((
            "algorithms",
            "list the algorithms this issuer signs with".into(),
        ));
    }
    let sources = [
        c.jwks_url.is_some(),
        c.jwks_file.is_some(),
        c.pem_file.is_some(),
        c.secret_file.is_some(),
    ];
    if sources.iter().filter(|s| **s).count() != 1 {
        return Err((
            "",
            "set exactly one of jwks_url, jwks_file, pem_file, secret_file".into(),
        ));
    }
    let hmac = algorithms.iter().any(|a| is_hmac(*a));
    if hmac && c.secret_file.is_none() {
        return Err((
            "algorithms",
            "HMAC algorithms (HS*) need secret_file".into(),
        ));
    }
    if c.secret_file.is_some() && !algorithms.iter().all(|a| is_hmac(*a)) {
        return Err((
            "algorithms",
            "with secret_file only HS256, HS384 or HS512 are allowed".into(),
        ));
    }
    let read = |p: &Path| {
        std::fs::read(resolve(p)).map_err(|e| format!("cannot read {}: {e}", p.display()))
    };
    let keys = if let Some(url) = &c.jwks_url {
        let uri: http::Uri = url
            .parse()
            .map_err(|_| ("jwks_url", format!("invalid URL {url:?}")))?;
        if uri.scheme_str() != Some("https") || uri.host().is_none() {
            return Err(("jwks_url", "must be an https:// URL".into()));
        }
        let tls =
            client_tls(c.ca_file.as_deref().map(resolve).as_deref()).map_err(|m| ("ca_file", m))?;
        let min = c.min_refetch_interval.0.max(Duration::from_secs(1));
        if min > Duration::from_secs(3600) || min > c.refresh_interval.0 {
            return Err((
                "min_refetch_interval",
                "at most 1h and at most refresh_interval".into(),
            ));
        }
        KeySource::Remote(Arc::new(RemoteJwks::new(
            uri,
            tls,
            c.refresh_interval.0,
            min,
            cache.clone(),
        )))
    } else if let Some(p) = &c.jwks_file {
        let bytes = read(p).map_err(|m| ("jwks_file", m))?;
        KeySource::Static(Arc::new(
            KeySet::from_jwks(&bytes).map_err(|m| ("jwks_file", m))?,
        ))
    } else if let Some(p) = &c.pem_file {
        let bytes = read(p).map_err(|m| ("pem_file", m))?;
        let key = DecodingKey::from_ec_pem(&bytes)
            .or_else(|_| DecodingKey::from_rsa_pem(&bytes))
            .or_else(|_| DecodingKey::from_ed_pem(&bytes))
            .map_err(|_| {
                (
                    "pem_file",
                    "not an RSA, EC or Ed25519 public key in PEM".to_owned(),
                )
            })?;
        KeySource::Static(Arc::new(KeySet {
            keys: vec![Key {
                kid: None,
                alg: None,
                key,
            }],
        }))
    } else if let Some(p) = &c.secret_file {
        let bytes = read(p).map_err(|m| ("secret_file", m))?;
        let secret = bytes.trim_ascii();
        if secret.len() < 32 {
            return Err((
                "secret_file",
                "an HMAC secret must be at least 32 bytes".into(),
            ));
        }
        KeySource::Static(Arc::new(KeySet {
            keys: vec![Key {
                kid: None,
                alg: None,
                key: DecodingKey::from_secret(secret),
            }],
        }))
    } else {
        return Err(("", "no key source".into()));
    };
    Ok(Issuer {
        issuer: c.issuer.clone(),
        audiences: c.audiences.clone(),
        algorithms,
        keys,
        claims: ClaimMap::new(
            &c.claims.subject,
            &c.claims.roles,
            &c.claims.scopes,
            c.claims.tenant.as_deref(),
        ),
    })
}

/// TLS for outgoing HTTPS (JWKS): public roots plus an optional CA file.
fn client_tls(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(p) = ca_file {
        let certs = CertificateDer::pem_file_iter(p)
            .map_err(|e| format!("cannot read {}: {e}", p.display()))?;
        for c in certs {
            let c = c.map_err(|e| format!("invalid PEM in {}: {e}", p.display()))?;
            roots
                .add(c)
                .map_err(|e| format!("unusable CA certificate in {}: {e}", p.display()))?;
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}
