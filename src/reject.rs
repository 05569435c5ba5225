//! Rejections: the typed answer a stage gives when a request must stop, and
//! its one rendering as RFC 9457 `application/problem+json`.
//!
//! Every stage returns `Result<_, Rejection>`; `pipeline.rs` turns the error
//! into a response in exactly one place ([`Rejection::into_response`]), so the
//! status, the `type` URI and the body shape cannot drift apart. Details are
//! written for the client: they never echo a credential, a header value or an
//! upstream's error text. 5xx details stay generic; the cause goes to the log.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};

use crate::body::Body;

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Rejection {
    /// The request path is not in canonical form (see `canon.rs`).
    #[error("the request path is not allowed: {0}")]
    BadPath(&'static str),
    /// The request path is longer than `limits.max_path_bytes`.
    #[error("the request path is too long")]
    PathTooLong,
    /// The request is malformed in some other way.
    #[error("{0}")]
    BadRequest(&'static str),
    /// The request does not conform to its operation's contract: the
    /// failed rules, listed in the problem's `errors` member.
    #[error("the request does not conform to the API's contract")]
    Invalid(Vec<crate::validate::FieldError>),
    /// The same, answered 422 (`validation_status = 422`).
    #[error("the request does not conform to the API's contract")]
    Unprocessable(Vec<crate::validate::FieldError>),
    /// A retired API version: 410 with a link to its successor.
    #[error("this API version has been retired")]
    Gone {
        /// Where to go instead (a path or URL), if known.
        successor: Option<std::sync::Arc<str>>,
    },
    /// No route matches the path.
    #[error("no route matches this path")]
    NotFound,
    /// A route matches the path but not the method.
    #[error("this method is not allowed on this path")]
    MethodNotAllowed {
        /// Value for the `Allow` header, precomputed per path.
        allow: HeaderValue,
    },
    /// No credential, or an invalid one (`invalid`), on a route that needs one.
    #[error("authentication is required to access this resource")]
    Unauthenticated {
        /// A credential was present but is not valid.
        invalid: bool,
    },
    /// Authorization refused (the detail never names the rule or role).
    #[error("you do not have access to this resource")]
    Forbidden,
    /// Login failed: unknown user, wrong password or disabled user (one answer).
    #[error("invalid username or password")]
    LoginFailed,
    /// A cookie-authenticated write from another origin (CSRF defence).
    #[error("cross-site request refused")]
    CsrfDenied,
    /// The body's content type is not the one this endpoint takes.
    #[error("unsupported content type")]
    UnsupportedMediaType,
    /// A CORS preflight for an origin, method or header the policy does not allow.
    #[error("this cross-origin request is not allowed")]
    CorsDenied,
    /// The request body is larger than the route's limit.
    #[error("the request body is larger than {limit} bytes")]
    BodyTooLarge {
        /// The limit in bytes.
        limit: u64,
    },
    /// The request head is larger than the configured limits.
    #[error("the request headers are too large")]
    HeadersTooLarge,
    /// The upstream could not be reached or broke the connection.
    #[error("the upstream service is unavailable")]
    UpstreamUnavailable,
    /// The upstream did not answer in time.
    #[error("the upstream service did not respond in time")]
    UpstreamTimeout,
    /// The upstream answered with a 5xx whose body was replaced.
    #[error("the upstream service failed to handle the request")]
    UpstreamFailed {
        /// The upstream's status, kept.
        status: StatusCode,
        /// The upstream's `Retry-After`, kept (it helps clients, leaks nothing).
        retry_after: Option<HeaderValue>,
    },
    /// A rate limit, quota, concurrency limit or login lockout refused the
    /// request; `retry_after` is in seconds.
    #[error("too many requests; retry after {retry_after} seconds")]
    RateLimited {
        /// Seconds until a request may succeed.
        retry_after: u64,
    },
    /// A limit needs its shared backend (Redis), which cannot be reached,
    /// and is configured to fail closed.
    #[error("the request cannot be admitted right now; retry shortly")]
    LimiterUnavailable,
    /// Sessions, refresh tokens or key revocations are kept in Redis and it
    /// cannot be reached: a credential is never accepted unchecked.
    #[error("credentials cannot be checked right now; retry shortly")]
    StateUnavailable,
    /// The upstream's response could not be checked (not JSON, not the
    /// expected shape, or larger than the bound for checked responses); it is
    /// discarded rather than passed on unchecked.
    #[error("the upstream response could not be checked")]
    UpstreamUnverifiable,
    /// The upstream's answer does not conform to the operation's response
    /// schema (`validate_responses`): discarded, details in the log.
    #[error("the upstream response does not conform to the API's contract")]
    UpstreamContract,
    /// A failure inside the gateway.
    #[error("internal error")]
    Internal,
}

impl Rejection {
    /// The HTTP status this rejection is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadPath(_) | Self::BadRequest(_) | Self::Invalid(_) => StatusCode::BAD_REQUEST,
            Self::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Gone { .. } => StatusCode::GONE,
            Self::PathTooLong => StatusCode::URI_TOO_LONG,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Self::Unauthenticated { .. } | Self::LoginFailed => StatusCode::UNAUTHORIZED,
            Self::CsrfDenied | Self::Forbidden => StatusCode::FORBIDDEN,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::CorsDenied => StatusCode::FORBIDDEN,
            Self::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::UpstreamUnavailable | Self::UpstreamUnverifiable | Self::UpstreamContract => {
                StatusCode::BAD_GATEWAY
            }
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::LimiterUnavailable | Self::StateUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            Self::UpstreamFailed { status, .. } => *status,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The problem type slug; the `type` member is `urn:portcullis:problem:<slug>`.
    pub fn slug(&self) -> &'static str {
        match self {
            Self::BadPath(_) => "bad-path",
            Self::PathTooLong => "path-too-long",
            Self::BadRequest(_) => "bad-request",
            Self::Invalid(_) | Self::Unprocessable(_) => "validation-failed",
            Self::Gone { .. } => "version-retired",
            Self::UpstreamContract => "upstream-contract-violation",
            Self::NotFound => "not-found",
            Self::MethodNotAllowed { .. } => "method-not-allowed",
            Self::Unauthenticated { .. } => "unauthenticated",
            Self::LoginFailed => "login-failed",
            Self::CsrfDenied => "csrf",
            Self::Forbidden => "forbidden",
            Self::UnsupportedMediaType => "unsupported-media-type",
            Self::CorsDenied => "cors-denied",
            Self::BodyTooLarge { .. } => "body-too-large",
            Self::HeadersTooLarge => "headers-too-large",
            Self::UpstreamUnavailable => "upstream-unavailable",
            Self::UpstreamTimeout => "upstream-timeout",
            Self::UpstreamFailed { .. } => "upstream-error",
            Self::UpstreamUnverifiable => "upstream-unverifiable",
            Self::RateLimited { .. } => "rate-limited",
            Self::LimiterUnavailable => "limiter-unavailable",
            Self::StateUnavailable => "auth-state-unavailable",
            Self::Internal => "internal",
        }
    }

    /// Short human title (stable per type).
    pub fn title(&self) -> &'static str {
        match self {
            Self::BadPath(_) => "Invalid request path",
            Self::PathTooLong => "Request path too long",
            Self::BadRequest(_) => "Bad request",
            Self::Invalid(_) | Self::Unprocessable(_) => "Validation failed",
            Self::Gone { .. } => "Gone",
            Self::NotFound => "Not found",
            Self::MethodNotAllowed { .. } => "Method not allowed",
            Self::Unauthenticated { .. } | Self::LoginFailed => "Unauthorized",
            Self::CsrfDenied | Self::Forbidden => "Forbidden",
            Self::UnsupportedMediaType => "Unsupported media type",
            Self::CorsDenied => "Cross-origin request denied",
            Self::BodyTooLarge { .. } => "Request body too large",
            Self::HeadersTooLarge => "Request headers too large",
            Self::UpstreamUnavailable | Self::UpstreamUnverifiable | Self::UpstreamContract => {
                "Bad gateway"
            }
            Self::RateLimited { .. } => "Too many requests",
            Self::LimiterUnavailable | Self::StateUnavailable => "Service unavailable",
            Self::UpstreamTimeout => "Gateway timeout",
            Self::UpstreamFailed { .. } => "Upstream error",
            Self::Internal => "Internal error",
        }
    }

    /// Renders the RFC 9457 response. `instance` is the request id.
    pub fn into_response(self, request_id: &str) -> Response<Body> {
        let status = self.status();
        let mut body = serde_json::json!({
            "type": format!("urn:portcullis:problem:{}", self.slug()),
            "title": self.title(),
            "status": status.as_u16(),
            "detail": self.to_string(),
            "instance": format!("urn:portcullis:request:{request_id}"),
        });
        match (&self, body.as_object_mut()) {
            (Self::Invalid(errors) | Self::Unprocessable(errors), Some(o)) => {
                o.insert("errors".into(), serde_json::json!(errors));
            }
            (Self::Gone { successor: Some(s) }, Some(o)) => {
                o.insert("successor".into(), serde_json::json!(&**s));
            }
            _ => {}
        }
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        let mut resp = Response::new(Body::full(Bytes::from(bytes)));
        *resp.status_mut() = status;
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        match self {
            Self::MethodNotAllowed { allow } => {
                h.insert(header::ALLOW, allow);
            }
            Self::Unauthenticated { invalid } => {
                let v = if invalid {
                    "Bearer realm=\"portcullis\", error=\"invalid_token\""
                } else {
                    "Bearer realm=\"portcullis\""
                };
                h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(v));
            }
            Self::UpstreamFailed {
                retry_after: Some(v),
                ..
            } => {
                h.insert(header::RETRY_AFTER, v);
            }
            Self::Gone { successor: Some(s) } => {
                if let Ok(v) = HeaderValue::from_str(&format!("<{s}>; rel=\"successor-version\"")) {
                    h.insert(header::LINK, v);
                }
            }
            Self::RateLimited { retry_after } => {
                h.insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
            }
            Self::LimiterUnavailable | Self::StateUnavailable => {
                h.insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
            }
            _ => {}
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn renders_problem_json() {
        let resp = Rejection::BadPath("encoded slash").into_response("abc");
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            resp.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );
        let body = resp.into_body().collect().await.map(|b| b.to_bytes());
        let v: serde_json::Value =
            serde_json::from_slice(&body.unwrap_or_default()).unwrap_or_default();
        assert_eq!(v["status"], 400);
        assert_eq!(v["type"], "urn:portcullis:problem:bad-path");
        assert_eq!(v["instance"], "urn:portcullis:request:abc");
        assert!(v["detail"].as_str().unwrap_or("").contains("encoded slash"));
    }
}
