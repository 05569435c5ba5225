//! Stage 2b: routing on the canonical path. Deny by default: a path no route
//! names is 404, a named path with another method is 405 with `Allow`, and
//! nothing else ever reaches an upstream.

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, Method};

use crate::reject::Rejection;

/// A compiled `[[routes]]` entry.
#[derive(Debug)]
pub struct Route {
    /// Name for logs.
    pub name: Arc<str>,
    /// The path template as written.
    pub template: String,
    /// Index into `Plan::upstreams`.
    pub upstream: usize,
    /// Index into `Plan::cors`, if CORS applies.
    pub cors: Option<usize>,
    /// Body limit in bytes.
    pub max_body: u64,
    /// Response timeout override.
    pub timeout: Option<Duration>,
    /// Who may call it.
    pub auth: crate::authn::RouteAuth,
    /// Query parameter that may carry an API key (off unless configured).
    pub api_key_query: Option<String>,
    /// Authorization rules.
    pub authz: crate::authz::RouteAuthz,
    /// Rate limits, by phase.
    pub limits: crate::ratelimit::RouteLimits,
    /// The upstream's own credential endpoint (login lockout by address).
    pub credential_endpoint: bool,
    /// The request contract (routes made from an OpenAPI document).
    pub contract: Option<std::sync::Arc<crate::validate::Contract>>,
}

#[derive(Debug)]
struct PathEntry {
    by_method: Vec<(Method, usize)>,
    allow: HeaderValue,
}

/// Path -> method -> route index.
#[derive(Debug, Default)]
pub struct Router {
    inner: matchit::Router<PathEntry>,
}

/// A matched route and its path parameters (still percent-encoded).
#[derive(Debug)]
pub struct Matched {
    /// Index into `Plan::routes`.
    pub route: usize,
    /// `{param}` values from the canonical path.
    pub params: Vec<(String, String)>,
}

impl Router {
    /// Builds the router from `(template, methods, route index)` triples.
    /// Errors name the template.
    pub fn build(entries: &[(String, Vec<Method>, usize)]) -> Result<Self, Vec<(usize, String)>> {
        let mut grouped: Vec<(String, Vec<(Method, usize)>)> = Vec::new();
        let mut errors = Vec::new();
        for (tpl, methods, idx) in entries {
            let slot = match grouped.iter().position(|(t, _)| t == tpl) {
                Some(p) => p,
                None => {
                    grouped.push((tpl.clone(), Vec::new()));
                    grouped.len() - 1
                }
            };
            let Some((_, list)) = grouped.get_mut(slot) else {
                continue;
            };
            for m in methods {
                if let Some((_, other)) = list.iter().find(|(x, _)| x == m) {
                    errors.push((
                        *idx,
                        format!("{m} {tpl} is already handled by routes[{other}]"),
                    ));
                } else {
                    list.push((m.clone(), *idx));
                }
            }
        }
        let mut inner = matchit::Router::new();
        for (tpl, mut by_method) in grouped {
            if by_method.iter().any(|(m, _)| m == Method::GET)
                && !by_method.iter().any(|(m, _)| m == Method::HEAD)
            {
                if let Some((_, idx)) = by_method.iter().find(|(m, _)| m == Method::GET) {
                    by_method.push((Method::HEAD, *idx));
                }
            }
            let allow = by_method
                .iter()
                .map(|(m, _)| m.as_str())
                .collect::<Vec<_>>()
                .join(", ");
            let allow = HeaderValue::from_str(&allow).unwrap_or(HeaderValue::from_static(""));
            let first = by_method.first().map_or(0, |(_, i)| *i);
            if let Err(e) = inner.insert(tpl.clone(), PathEntry { by_method, allow }) {
                errors.push((
                    first,
                    format!("path {tpl:?} conflicts with another route: {e}"),
                ));
            }
        }
        if errors.is_empty() {
            Ok(Self { inner })
        } else {
            Err(errors)
        }
    }

    /// Finds the route for a canonical path and method.
    pub fn find(&self, path: &str, method: &Method) -> Result<Matched, Rejection> {
        let m = self.inner.at(path).map_err(|_| Rejection::NotFound)?;
        let Some((_, route)) = m.value.by_method.iter().find(|(x, _)| x == method) else {
            return Err(Rejection::MethodNotAllowed {
                allow: m.value.allow.clone(),
            });
        };
        let params = m
            .params
            .iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        Ok(Matched {
            route: *route,
            params,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_and_methods() {
        let r = Router::build(&[
            ("/users/{id}".into(), vec![Method::GET, Method::PUT], 0),
            ("/users/{id}".into(), vec![Method::DELETE], 1),
            ("/files/{*rest}".into(), vec![Method::GET], 2),
        ])
        .map_err(|e| format!("{e:?}"));
        let Ok(r) = r else { panic!("build failed") };
        let m = r.find("/users/7", &Method::GET).map_err(|e| e.to_string());
        assert!(matches!(m, Ok(Matched { route: 0, .. })));
        assert!(matches!(
            r.find("/users/7", &Method::HEAD),
            Ok(Matched { route: 0, .. })
        ));
        assert!(matches!(
            r.find("/users/7", &Method::DELETE),
            Ok(Matched { route: 1, .. })
        ));
        match r.find("/users/7", &Method::POST) {
            Err(Rejection::MethodNotAllowed { allow }) => {
                assert_eq!(allow, "GET, PUT, DELETE, HEAD")
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            r.find("/nope", &Method::GET),
            Err(Rejection::NotFound)
        ));
        assert!(matches!(
            r.find("/files/a/b", &Method::GET),
            Ok(Matched { route: 2, .. })
        ));
    }

    #[test]
    fn duplicate_method_is_an_error() {
        let r = Router::build(&[
            ("/a".into(), vec![Method::GET], 0),
            ("/a".into(), vec![Method::GET], 1),
        ]);
        assert!(r.is_err());
    }
}
