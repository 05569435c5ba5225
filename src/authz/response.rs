//! Authorization on the upstream's answer, for objects whose owner is only
//! known from the object itself (`GET /documents/{id}` returns `owner_id`).
//!
//! * A single object: the field at `pointer` must name the caller, else 404
//!   and the upstream body is discarded (never confirm that it exists).
//! * A list (`items` = pointer of the array, `""` for a top-level array):
//!   other people's items are removed (`mode = "filter"`), or the whole
//!   answer is refused with 403 (`mode = "refuse"`).
//! * Writes (`precheck = true`): before PUT, PATCH or DELETE, and for every
//!   HEAD, the gateway GETs the object and checks it first; the write is
//!   forwarded only for the caller's own object, otherwise 404.
//! * Conditions that name `response` are evaluated here, on the parsed body;
//!   a denial is 404 like an ownership mismatch.
//!
//! Only 2xx answers are checked (an upstream's own 404 passes as it is).
//! They are read whole, bounded by `max_buffered_response`; an answer that
//! is too large, not JSON, or not of the declared shape is 502: an answer the
//! gateway cannot check is never passed on.

use bytes::Bytes;
use serde_json::Value as Json;

use super::{Authz, OwnerAttr, Permission, RequestFacts, RouteAuthz};
use crate::audit::Access;
use crate::authn::Identity;
use crate::reject::Rejection;

/// A compiled `response_owner = { ... }`.
#[derive(Debug, Clone)]
pub struct ResponseOwnerRule {
    /// JSON pointer of the owner field (in each item, for lists).
    pub pointer: String,
    /// What it must equal.
    pub equals: OwnerAttr,
    /// Permissions that bypass the check (the answer then streams unread).
    pub unless: Vec<Permission>,
    /// For lists: pointer of the array.
    pub items: Option<String>,
    /// For lists: refuse (403) instead of filtering.
    pub refuse: bool,
    /// GET and check the object before a write.
    pub precheck: bool,
    /// Path template for the precheck GET (default: the request's path).
    pub precheck_path: Option<Vec<PathPart>>,
}

/// A piece of a precheck path template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathPart {
    /// Literal text.
    Lit(String),
    /// A route parameter, pasted as it appears in the canonical path.
    Param(String),
}

impl ResponseOwnerRule {
    /// Parses `"/docs/{id}/meta"` against the route's parameter names.
    pub fn parse_path(tpl: &str, route_params: &[&str]) -> Result<Vec<PathPart>, String> {
        if !tpl.starts_with('/') {
            return Err("must start with '/'".into());
        }
        let mut parts = Vec::new();
        let mut rest = tpl;
        while let Some(open) = rest.find('{') {
            let close = rest[open..]
                .find('}')
                .map(|c| open + c)
                .ok_or("unclosed '{'")?;
            if open > 0 {
                parts.push(PathPart::Lit(rest[..open].to_owned()));
            }
            let name = &rest[open + 1..close];
            if !route_params.contains(&name) {
                return Err(format!("{{{name}}} is not a parameter of the route"));
            }
            parts.push(PathPart::Param(name.to_owned()));
            rest = &rest[close + 1..];
        }
        if !rest.is_empty() {
            parts.push(PathPart::Lit(rest.to_owned()));
        }
        Ok(parts)
    }

    /// The path to GET for the precheck.
    pub fn precheck_target(&self, params: &[(String, String)], own: &str) -> String {
        let Some(parts) = &self.precheck_path else {
            return own.to_owned();
        };
        let mut out = String::with_capacity(64);
        for p in parts {
            match p {
                PathPart::Lit(l) => out.push_str(l),
                PathPart::Param(n) => {
                    if let Some((_, v)) = params.iter().find(|(k, _)| k == n) {
                        out.push_str(v);
                    }
                }
            }
        }
        out
    }

    /// Whether a method's request is prechecked rather than its answer.
    pub fn prechecks(&self, m: &http::Method) -> bool {
        *m == http::Method::HEAD
            || (self.precheck
                && matches!(
                    *m,
                    http::Method::PUT | http::Method::PATCH | http::Method::DELETE
                ))
    }
}

fn mine(id: &Identity, attr: OwnerAttr) -> Option<&str> {
    match attr {
        OwnerAttr::Sub => Some(id.subject.as_str()),
        OwnerAttr::Tenant => id.tenant.as_deref(),
    }
}

/// Whether a JSON owner field names `me` (strings, or integers as text).
fn names(field: Option<&Json>, me: Option<&str>) -> bool {
    match (field, me) {
        (Some(Json::String(s)), Some(me)) => s == me,
        (Some(Json::Number(n)), Some(me)) => (n.is_i64() || n.is_u64()) && n.to_string() == me,
        _ => false,
    }
}

impl Authz {
    /// Whether the ownership check applies to this caller (no bypass held).
    pub fn response_owner_applies(&self, rule: &ResponseOwnerRule, id: &Identity) -> bool {
        !rule.unless.iter().any(|p| self.has(id, p))
    }

    /// The precheck's GET answered 2xx with `body`: it must be the caller's.
    pub fn check_precheck(
        &self,
        rule: &ResponseOwnerRule,
        id: &Identity,
        body: &[u8],
        audit: &Access<'_>,
    ) -> Result<(), Rejection> {
        let v: Json = serde_json::from_slice(body).map_err(|_| Rejection::UpstreamUnverifiable)?;
        if names(v.pointer(&rule.pointer), mine(id, rule.equals)) {
            Ok(())
        } else {
            audit.deny(
                &id.subject,
                &format!("response_owner {} (precheck)", rule.pointer),
            );
            Err(Rejection::NotFound)
        }
    }

    /// Checks a 2xx answer read whole: response conditions on the body as
    /// sent, then ownership. Returns a new body when list items were removed.
    #[allow(clippy::too_many_arguments)]
    pub fn check_response(
        &self,
        route: &RouteAuthz,
        owner: Option<&ResponseOwnerRule>,
        id: &Identity,
        req: &RequestFacts<'_>,
        status: u16,
        body: &[u8],
        audit: &Access<'_>,
    ) -> Result<Option<Bytes>, Rejection> {
        let parsed: Option<Json> = if body.is_empty() {
            None
        } else {
            match serde_json::from_slice(body) {
                Ok(v) => Some(v),
                // Ownership cannot be read from a body that is not JSON.
                Err(_) if owner.is_some() => return Err(Rejection::UpstreamUnverifiable),
                Err(_) => None,
            }
        };
        if route.has_response_policies() {
            let facts = req.facts(id, Some((status, parsed.as_ref())));
            for p in route.policies.iter().filter(|p| p.on_response) {
                if !self.holds(p, &facts, audit) {
                    return Err(Rejection::NotFound);
                }
            }
        }
        let (Some(rule), Some(mut v)) = (owner, parsed) else {
            // Nothing to check, or nothing disclosed (an empty body).
            return Ok(None);
        };
        let me = mine(id, rule.equals);
        let Some(items) = &rule.items else {
            if names(v.pointer(&rule.pointer), me) {
                return Ok(None);
            }
            audit.deny(&id.subject, &format!("response_owner {}", rule.pointer));
            return Err(Rejection::NotFound);
        };
        let list = if items.is_empty() {
            Some(&mut v)
        } else {
            v.pointer_mut(items)
        };
        let Some(Json::Array(list)) = list else {
            return Err(Rejection::UpstreamUnverifiable);
        };
        let before = list.len();
        if rule.refuse {
            if list.iter().all(|it| names(it.pointer(&rule.pointer), me)) {
                return Ok(None);
            }
            audit.deny(&id.subject, &format!("response_owner {items} (refuse)"));
            return Err(Rejection::Forbidden);
        }
        list.retain(|it| names(it.pointer(&rule.pointer), me));
        if list.len() == before {
            return Ok(None);
        }
        tracing::debug!(
            request_id = audit.request_id,
            removed = before - list.len(),
            "list items of other owners removed"
        );
        serde_json::to_vec(&v)
            .map(|b| Some(Bytes::from(b)))
            .map_err(|_| Rejection::Internal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn owner_fields() {
        assert!(names(Some(&json!("u1")), Some("u1")));
        assert!(!names(Some(&json!("u2")), Some("u1")));
        assert!(names(Some(&json!(17)), Some("17")));
        assert!(!names(Some(&json!(17.0)), Some("17")));
        assert!(!names(Some(&json!(null)), Some("u1")));
        assert!(!names(None, Some("u1")));
        assert!(!names(Some(&json!("t1")), None));
        assert!(!names(Some(&json!(["u1"])), Some("u1")));
    }

    #[test]
    fn precheck_paths() {
        let parts = ResponseOwnerRule::parse_path("/internal/docs/{id}/meta", &["id"]);
        assert_eq!(
            parts,
            Ok(vec![
                PathPart::Lit("/internal/docs/".into()),
                PathPart::Param("id".into()),
                PathPart::Lit("/meta".into())
            ])
        );
        assert!(ResponseOwnerRule::parse_path("/docs/{nope}", &["id"]).is_err());
        assert!(ResponseOwnerRule::parse_path("docs", &[]).is_err());
        assert!(ResponseOwnerRule::parse_path("/docs/{id", &["id"]).is_err());
    }
}
