//! Stage 3: CORS. Preflights are answered by the gateway itself (they never
//! reach an upstream); actual cross-origin requests get CORS headers only when
//! their `Origin` is on the route's allowlist. An unlisted origin is never
//! reflected, `*` is never combined with credentials (refused at config
//! load), and `Vary: Origin` is sent on every response so caches never serve
//! one origin's answer to another.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode};

use crate::body::Body;
use crate::reject::Rejection;

/// A compiled `[cors.policies.NAME]`.
#[derive(Debug, Clone)]
pub struct CorsPolicy {
    /// Policy name (for logs).
    pub name: String,
    /// `"*"` was configured.
    pub any_origin: bool,
    /// Exact allowed origins, lower-case.
    pub origins: Vec<HeaderValue>,
    /// Allowed methods.
    pub methods: Vec<Method>,
    /// Allowed request headers, lower-case.
    pub headers: Vec<HeaderName>,
    /// Precomputed `Access-Control-Allow-Methods`.
    pub methods_value: HeaderValue,
    /// Precomputed `Access-Control-Allow-Headers`.
    pub headers_value: Option<HeaderValue>,
    /// Precomputed `Access-Control-Expose-Headers`.
    pub expose_value: Option<HeaderValue>,
    /// Credentials allowed.
    pub credentials: bool,
    /// Precomputed `Access-Control-Max-Age`.
    pub max_age: HeaderValue,
}

static TRUE: HeaderValue = HeaderValue::from_static("true");
static STAR: HeaderValue = HeaderValue::from_static("*");

impl CorsPolicy {
    /// Whether `origin` may make cross-origin requests.
    pub fn allows_origin(&self, origin: &HeaderValue) -> bool {
        self.any_origin || self.origins.iter().any(|o| o == origin)
    }

    /// Answers a preflight, or refuses it with 403.
    pub fn preflight(
        &self,
        origin: &HeaderValue,
        method: &HeaderValue,
        req_headers: &HeaderMap,
    ) -> Result<Response<Body>, Rejection> {
        if !self.allows_origin(origin) {
            return Err(Rejection::CorsDenied);
        }
        let method = Method::from_bytes(method.as_bytes()).map_err(|_| Rejection::CorsDenied)?;
        if !self.methods.contains(&method) {
            return Err(Rejection::CorsDenied);
        }
        for v in req_headers.get_all(header::ACCESS_CONTROL_REQUEST_HEADERS) {
            let s = v.to_str().map_err(|_| Rejection::CorsDenied)?;
            for name in s.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                let ok = self
                    .headers
                    .iter()
                    .any(|h| h.as_str().eq_ignore_ascii_case(name));
                if !ok {
                    return Err(Rejection::CorsDenied);
                }
            }
        }
        let mut resp = Response::new(Body::empty());
        *resp.status_mut() = StatusCode::NO_CONTENT;
        let h = resp.headers_mut();
        self.apply_origin(h, origin);
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            self.methods_value.clone(),
        );
        if let Some(v) = &self.headers_value {
            h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, v.clone());
        }
        h.insert(header::ACCESS_CONTROL_MAX_AGE, self.max_age.clone());
        h.append(
            header::VARY,
            HeaderValue::from_static(
                "Access-Control-Request-Method, Access-Control-Request-Headers",
            ),
        );
        Ok(resp)
    }

    /// Sets the origin (and credentials) headers for an allowed origin.
    pub fn apply_origin(&self, h: &mut HeaderMap, origin: &HeaderValue) {
        if self.any_origin && !self.credentials {
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, STAR.clone());
        } else {
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        }
        if self.credentials {
            h.insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, TRUE.clone());
        }
    }

    /// Headers for an actual (non-preflight) response to an allowed origin.
    pub fn apply_actual(&self, h: &mut HeaderMap, origin: &HeaderValue) {
        self.apply_origin(h, origin);
        if let Some(v) = &self.expose_value {
            h.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, v.clone());
        }
    }
}

/// True for a CORS preflight: OPTIONS with `Origin` and
/// `Access-Control-Request-Method`.
pub fn is_preflight(method: &Method, h: &HeaderMap) -> bool {
    method == Method::OPTIONS
        && h.contains_key(header::ORIGIN)
        && h.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}
