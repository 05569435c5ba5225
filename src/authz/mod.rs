//! Stage 7: authorization, deny by default.
//!
//! * RBAC: `[authz.roles]` maps a role to the permissions it grants, with
//!   inheritance (`[authz.inherit]`), flattened once at config load. An
//!   identity's permissions are its roles' permissions plus its scopes (API
//!   key scopes and OAuth scopes are permissions directly).
//! * Permissions are `:`-separated segments; in a granted permission `*` as
//!   the last segment matches one or more segments (`documents:*` grants
//!   `documents:read` and `documents:read:any`), elsewhere exactly one.
//! * A route needs all of `require` and at least one of `require_any`;
//!   failure is 403 problem+json that names no rule or role.
//! * Object ownership by path (BOLA): `owner = { param, equals, unless }` —
//!   the path parameter must equal the identity's `sub` (or `tenant`) unless
//!   a bypass permission is held; a mismatch is 404, so other people's
//!   objects are not even confirmed to exist.
//!
//! * Object ownership in the request body (`owner_field`), in the upstream's
//!   response (`response_owner`, with list filtering and write prechecks:
//!   `response.rs`), and CEL conditions (`allow_if`, named `[authz.policies]`:
//!   `policy.rs`).
//!
//! Every denial is an audit event (request id, subject, route, the rule's
//! name, client ip); so is every allowed request on a route with `audit = true`.

mod fast;
pub mod policy;
pub mod response;

use std::collections::HashMap;
use std::sync::Arc;

use crate::audit::Access;
use crate::authn::Identity;
use crate::reject::Rejection;
pub use policy::{Facts, Policy, PolicyEnv};
pub use response::ResponseOwnerRule;

/// A permission, split into segments once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permission(Vec<String>);

impl Permission {
    /// Parses `a:b:c`; segments must be non-empty (`*` allowed).
    pub fn parse(s: &str) -> Result<Self, String> {
        let segs: Vec<String> = s.split(':').map(str::to_owned).collect();
        if s.is_empty()
            || segs
                .iter()
                .any(|x| x.is_empty() || x.contains(char::is_whitespace))
        {
            return Err(format!(
                "invalid permission {s:?}: non-empty ':'-separated segments"
            ));
        }
        Ok(Self(segs))
    }

    /// Whether this (granted) permission covers `needed`.
    pub fn grants(&self, needed: &Permission) -> bool {
        let (g, n) = (&self.0, &needed.0);
        for (i, seg) in g.iter().enumerate() {
            let last = i + 1 == g.len();
            match n.get(i) {
                None => return false,
                Some(_) if seg == "*" && last => return true,
                Some(ns) if seg == "*" || seg == ns => {}
                Some(_) => return false,
            }
        }
        g.len() == n.len()
    }

    /// The text form.
    pub fn as_string(&self) -> String {
        self.0.join(":")
    }
}

/// Which identity attribute an owner parameter must equal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnerAttr {
    /// The subject.
    Sub,
    /// The tenant.
    Tenant,
}

/// A compiled `owner = { ... }`.
#[derive(Debug, Clone)]
pub struct OwnerRule {
    /// Path parameter holding the owner.
    pub param: String,
    /// What it must equal.
    pub equals: OwnerAttr,
    /// Permissions that bypass the check.
    pub unless: Vec<Permission>,
}

/// A compiled `owner_field = { ... }`.
#[derive(Debug, Clone)]
pub struct BodyOwnerRule {
    /// JSON pointer into the request body.
    pub pointer: String,
    /// What it must equal.
    pub equals: OwnerAttr,
    /// Permissions that allow naming someone else.
    pub unless: Vec<Permission>,
}

/// A route's compiled authorization.
#[derive(Debug, Clone, Default)]
pub struct RouteAuthz {
    /// Ownership named in the JSON body.
    pub body_owner: Option<BodyOwnerRule>,
    /// All needed.
    pub require: Vec<Permission>,
    /// At least one needed (when non-empty).
    pub require_any: Vec<Permission>,
    /// Path-bound ownership.
    pub owner: Option<OwnerRule>,
    /// Ownership read from the upstream's response.
    pub response_owner: Option<ResponseOwnerRule>,
    /// CEL conditions (`allow_if` and named ones), all must hold; those
    /// that name `response` are checked on the response.
    pub policies: Vec<Arc<Policy>>,
    /// Record allowed requests too.
    pub audit: bool,
    /// Bound for a response read whole to be checked.
    pub max_buffered_response: u64,
}

impl RouteAuthz {
    /// Whether the route has any authorization rule.
    pub fn is_empty(&self) -> bool {
        self.require.is_empty()
            && self.require_any.is_empty()
            && self.owner.is_none()
            && self.body_owner.is_none()
            && self.response_owner.is_none()
            && self.policies.is_empty()
    }

    /// Whether some condition is checked on the response.
    pub fn has_response_policies(&self) -> bool {
        self.policies.iter().any(|p| p.on_response)
    }
}

/// The compiled `[authz]`: role -> flattened permissions, named conditions.
#[derive(Debug)]
pub struct Authz {
    roles: HashMap<String, Vec<Permission>>,
    /// The CEL environment and time zone.
    pub policy_env: PolicyEnv,
    /// `[authz.policies]`, compiled.
    pub named: HashMap<String, Arc<Policy>>,
}

impl Default for Authz {
    fn default() -> Self {
        Self {
            roles: HashMap::new(),
            policy_env: PolicyEnv::utc(),
            named: HashMap::new(),
        }
    }
}

impl Authz {
    /// Flattens roles with inheritance and compiles the named conditions;
    /// errors name the TOML path. `secret_headers` are hidden from conditions.
    pub fn compile(
        f: &crate::config::file::Authz,
        secret_headers: &[&str],
    ) -> Result<Self, Vec<(String, String)>> {
        let (roles, inherit) = (&f.roles, &f.inherit);
        let mut errors = Vec::new();
        let policy_env = PolicyEnv::new(&f.time_zone, secret_headers).unwrap_or_else(|m| {
            errors.push(("authz.time_zone".to_string(), m));
            PolicyEnv::utc()
        });
        let mut named = HashMap::new();
        for (name, src) in &f.policies {
            match policy_env.compile(&format!("policy {name}"), src) {
                Ok(p) => {
                    named.insert(name.clone(), Arc::new(p));
                }
                Err(m) => errors.push((format!("authz.policies.{name}"), m)),
            }
        }
        let mut direct: HashMap<&str, Vec<Permission>> = HashMap::new();
        for (role, perms) in roles {
            let mut list = Vec::new();
            for (i, p) in perms.iter().enumerate() {
                match Permission::parse(p) {
                    Ok(p) => list.push(p),
                    Err(m) => errors.push((format!("authz.roles.{role}[{i}]"), m)),
                }
            }
            direct.insert(role, list);
        }
        for (role, parents) in inherit {
            if !roles.contains_key(role) {
                errors.push((
                    format!("authz.inherit.{role}"),
                    format!("no role {role:?} in [authz.roles]"),
                ));
            }
            for p in parents {
                if !roles.contains_key(p) {
                    errors.push((
                        format!("authz.inherit.{role}"),
                        format!("no role {p:?} in [authz.roles]"),
                    ));
                }
            }
        }
        let mut flat = HashMap::new();
        for role in roles.keys() {
            let mut seen: Vec<&str> = Vec::new();
            let mut stack: Vec<(&str, usize)> = vec![(role.as_str(), 0)];
            let mut perms = Vec::new();
            while let Some((r, depth)) = stack.pop() {
                if depth > roles.len() {
                    errors.push((
                        format!("authz.inherit.{role}"),
                        "roles inherit in a cycle".into(),
                    ));
                    break;
                }
                if seen.contains(&r) {
                    continue;
                }
                seen.push(r);
                perms.extend(direct.get(r).cloned().unwrap_or_default());
                for parent in inherit.get(r).into_iter().flatten() {
                    stack.push((parent.as_str(), depth + 1));
                }
            }
            flat.insert(role.clone(), perms);
        }
        if errors.is_empty() {
            Ok(Self {
                roles: flat,
                policy_env,
                named,
            })
        } else {
            Err(errors)
        }
    }

    /// Whether any role grants `p` (for config warnings).
    pub fn anyone_has(&self, p: &Permission) -> bool {
        self.roles.values().flatten().any(|g| g.grants(p))
    }

    /// Whether the identity holds `needed` through a role or a scope.
    pub fn has(&self, id: &Identity, needed: &Permission) -> bool {
        id.authz.scopes(id).iter().any(|g| g.grants(needed))
            || id
                .roles
                .iter()
                .filter_map(|r| self.roles.get(r))
                .flatten()
                .any(|g| g.grants(needed))
    }

    /// Stage 7 for one request: permissions, path ownership, then the
    /// request-phase conditions (cheapest first).
    pub fn authorize(
        &self,
        rule: &RouteAuthz,
        id: Option<&Identity>,
        req: &RequestFacts<'_>,
        audit: &Access<'_>,
    ) -> Result<(), Rejection> {
        let params = req.params;
        if rule.is_empty() {
            return Ok(());
        }
        // Deny by default: a rule without an identity cannot be decided.
        let Some(id) = id else {
            audit.deny("-", "no identity");
            return Err(Rejection::Forbidden);
        };
        if let Some(p) = rule.require.iter().find(|p| !self.has(id, p)) {
            audit.deny(&id.subject, &format!("require {}", p.as_string()));
            return Err(Rejection::Forbidden);
        }
        if !rule.require_any.is_empty() && !rule.require_any.iter().any(|p| self.has(id, p)) {
            audit.deny(&id.subject, "require_any");
            return Err(Rejection::Forbidden);
        }
        if let Some(o) = &rule.owner {
            let bypass = o.unless.iter().any(|p| self.has(id, p));
            if !bypass {
                let value = params.iter().find(|(k, _)| *k == o.param).map(|(_, v)| {
                    match v.contains('%') {
                        true => std::borrow::Cow::Owned(crate::canon::decode_segment(v)),
                        false => std::borrow::Cow::Borrowed(v.as_str()),
                    }
                });
                let mine = match o.equals {
                    OwnerAttr::Sub => Some(id.subject.as_str()),
                    OwnerAttr::Tenant => id.tenant.as_deref(),
                };
                if value.is_none() || value.as_deref() != mine {
                    audit.deny(&id.subject, &format!("owner {}", o.param));
                    // 404, not 403: do not confirm that someone else's object exists.
                    return Err(Rejection::NotFound);
                }
            }
        }
        if !rule.policies.is_empty() {
            let facts = req.facts(id, None);
            for p in rule.policies.iter().filter(|p| !p.on_response) {
                if !self.holds(p, &facts, audit) {
                    return Err(Rejection::Forbidden);
                }
            }
        }
        Ok(())
    }

    /// Evaluates one condition; a denial (false or an error) is audited
    /// with the condition's name, and an error is logged with its reason.
    pub fn holds(&self, p: &Policy, facts: &Facts<'_>, audit: &Access<'_>) -> bool {
        match self.policy_env.eval(p, facts) {
            Ok(true) => true,
            Ok(false) => {
                audit.deny(&facts.identity.subject, &p.name);
                false
            }
            Err(reason) => {
                tracing::info!(request_id = audit.request_id, policy = %p.name, %reason,
                               "condition could not be evaluated; denied");
                audit.deny(&facts.identity.subject, &format!("{} (error)", p.name));
                false
            }
        }
    }
}

/// The parts of a request conditions can see.
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    /// Method.
    pub method: &'a http::Method,
    /// Canonical path.
    pub path: &'a str,
    /// Route parameters (percent-encoded).
    pub params: &'a [(String, String)],
    /// Raw query.
    pub query: Option<&'a str>,
    /// Headers after stage 2.
    pub headers: &'a http::HeaderMap,
    /// Client address.
    pub ip: std::net::IpAddr,
}

impl<'a> RequestFacts<'a> {
    /// With the identity (and the response, for response conditions).
    pub fn facts(
        &self,
        identity: &'a Identity,
        response: Option<(u16, Option<&'a serde_json::Value>)>,
    ) -> Facts<'a> {
        Facts {
            identity,
            method: self.method,
            path: self.path,
            params: self.params,
            query: self.query,
            headers: self.headers,
            ip: self.ip,
            response,
        }
    }
}

impl Authz {
    /// Checks the owner field of a JSON request body: it must name the
    /// caller unless a bypass permission is held (no creating objects on
    /// behalf of others). Not JSON, or no such field: 400; someone else: 403.
    pub fn check_body_owner(
        &self,
        rule: &BodyOwnerRule,
        id: Option<&Identity>,
        body: &[u8],
        audit: &Access<'_>,
    ) -> Result<(), Rejection> {
        let Some(id) = id else {
            audit.deny("-", "owner_field without identity");
            return Err(Rejection::Forbidden);
        };
        if rule.unless.iter().any(|p| self.has(id, p)) {
            return Ok(());
        }
        let v: serde_json::Value = serde_json::from_slice(body)
            .map_err(|_| Rejection::BadRequest("the body is not valid JSON"))?;
        let named = match v.pointer(&rule.pointer) {
            Some(serde_json::Value::String(s)) => s.as_str(),
            Some(_) => {
                return Err(Rejection::BadRequest(
                    "the body's owner field is not a string",
                ));
            }
            None => return Err(Rejection::BadRequest("the body does not name its owner")),
        };
        let mine = match rule.equals {
            OwnerAttr::Sub => Some(id.subject.as_str()),
            OwnerAttr::Tenant => id.tenant.as_deref(),
        };
        if mine != Some(named) {
            audit.deny(&id.subject, &format!("owner_field {}", rule.pointer));
            return Err(Rejection::Forbidden);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn p(s: &str) -> Permission {
        Permission::parse(s).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn wildcards_by_segment() {
        assert!(p("documents:*").grants(&p("documents:read")));
        assert!(p("documents:*").grants(&p("documents:read:any")));
        assert!(!p("documents:*").grants(&p("documents")));
        assert!(!p("documents:*").grants(&p("users:read")));
        assert!(p("*:read").grants(&p("users:read")));
        assert!(!p("*:read").grants(&p("users:write")));
        assert!(!p("*:read").grants(&p("users:read:any")));
        assert!(p("users:read").grants(&p("users:read")));
        assert!(!p("users:read").grants(&p("users:read:any")));
        assert!(!p("users:read:any").grants(&p("users:read")));
        assert!(Permission::parse("a::b").is_err());
        assert!(Permission::parse("").is_err());
        assert!(Permission::parse("a b").is_err());
    }

    fn file(
        roles: &BTreeMap<String, Vec<String>>,
        inherit: &BTreeMap<String, Vec<String>>,
    ) -> crate::config::file::Authz {
        crate::config::file::Authz {
            roles: roles.clone(),
            inherit: inherit.clone(),
            ..Default::default()
        }
    }

    #[test]
    fn named_policy_errors_name_their_path() {
        let mut f = crate::config::file::Authz::default();
        f.policies
            .insert("finance".into(), "identity.attributes.department ==".into());
        f.policies.insert("ok".into(), "identity.sub != ''".into());
        f.time_zone = "Nowhere/Special".into();
        let errs = Authz::compile(&f, &[]).err().unwrap_or_default();
        let paths: Vec<&str> = errs.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(paths, ["authz.time_zone", "authz.policies.finance"]);
    }

    #[test]
    fn inheritance_flattens_and_cycles_are_errors() {
        let roles: BTreeMap<String, Vec<String>> = [
            ("user".to_string(), vec!["documents:read".to_string()]),
            ("admin".to_string(), vec!["users:*".to_string()]),
        ]
        .into();
        let inherit: BTreeMap<String, Vec<String>> =
            [("admin".to_string(), vec!["user".to_string()])].into();
        let a = Authz::compile(&file(&roles, &inherit), &[]).unwrap_or_default();
        assert!(
            a.roles["admin"]
                .iter()
                .any(|g| g.grants(&p("documents:read")))
        );
        assert!(!a.roles["user"].iter().any(|g| g.grants(&p("users:delete"))));
        let cycle: BTreeMap<String, Vec<String>> = [
            ("admin".to_string(), vec!["user".to_string()]),
            ("user".to_string(), vec!["admin".to_string()]),
        ]
        .into();
        // a cycle is harmless for flattening (each role once), but unknown roles are errors
        assert!(Authz::compile(&file(&roles, &cycle), &[]).is_ok());
        let unknown: BTreeMap<String, Vec<String>> =
            [("admin".to_string(), vec!["ghost".to_string()])].into();
        assert!(Authz::compile(&file(&roles, &unknown), &[]).is_err());
    }
}
