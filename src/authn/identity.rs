//! Who is calling: the [`Identity`] every later stage reads, and the mapping
//! from token claims to it (configurable claim paths such as
//! `realm_access.roles`).

use std::sync::Arc;

use serde_json::Value;

/// How the caller authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    /// A bearer JWT.
    Jwt,
    /// An API key.
    ApiKey,
    /// A session cookie from Portcullis's own login.
    Session,
}

impl AuthMethod {
    /// Name used in `X-Portcullis-Auth` and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Jwt => "jwt",
            Self::ApiKey => "api_key",
            Self::Session => "session",
        }
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    /// Subject (user or service id).
    pub subject: String,
    /// Roles.
    pub roles: Vec<String>,
    /// Scopes / permissions.
    pub scopes: Vec<String>,
    /// Tenant, if any.
    pub tenant: Option<String>,
    /// Issuer that vouched for it.
    pub issuer: String,
    /// How it was established.
    pub method: AuthMethod,
    /// Expiry (Unix seconds).
    pub expires: u64,
    /// All claims, for policies.
    pub claims: Arc<Value>,
    /// The `X-Portcullis-*` values, made once per identity (a cached token
    /// costs no formatting per request).
    pub headers: IdentityHeaders,
    /// The API key's public id, for API-key identities (logged, never the key).
    pub key_id: Option<String>,
    /// The signed upstream token, once made (reused while it has life left).
    pub upstream_token: UpstreamTokenSlot,
    /// What authorization derives from it (CEL value, parsed scopes).
    pub authz: crate::authz::policy::IdentityCache,
}

/// A per-identity slot for the signed upstream token: `(value, exp)`.
#[derive(Debug, Default)]
pub struct UpstreamTokenSlot(pub std::sync::Mutex<Option<(http::HeaderValue, i64)>>);

impl Clone for UpstreamTokenSlot {
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl PartialEq for UpstreamTokenSlot {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

/// Header values that describe an identity to the upstream.
#[derive(Debug, Clone, PartialEq)]
pub struct IdentityHeaders {
    /// `X-Portcullis-User`.
    pub user: http::HeaderValue,
    /// `X-Portcullis-Roles` (comma-separated).
    pub roles: http::HeaderValue,
    /// `X-Portcullis-Scopes` (space-separated).
    pub scopes: http::HeaderValue,
    /// `X-Portcullis-Tenant`.
    pub tenant: Option<http::HeaderValue>,
    /// `X-Portcullis-Issuer`: who vouched (subjects are only unique per issuer).
    pub issuer: http::HeaderValue,
}

impl IdentityHeaders {
    /// Values for these fields. Refused, so that the upstream can never read
    /// a different identity than the one verified: characters not allowed in
    /// a header value, non-ASCII, surrounding whitespace (trimmed by most
    /// parsers), and list separators inside a role (`,` or whitespace) or a
    /// scope (whitespace).
    pub fn new(
        issuer: &str,
        subject: &str,
        roles: &[String],
        scopes: &[String],
        tenant: Option<&str>,
    ) -> Result<Self, &'static str> {
        fn clean(s: &str) -> bool {
            !s.is_empty() && s.bytes().all(|b| (0x20..0x7f).contains(&b)) && s.trim() == s
        }
        let v = |s: &str| {
            http::HeaderValue::from_str(s).map_err(|_| "identity value not allowed in a header")
        };
        if !clean(subject) || !clean(issuer) || tenant.is_some_and(|t| !clean(t)) {
            return Err(
                "subject, issuer or tenant is empty, not printable ASCII, or padded with spaces",
            );
        }
        if roles
            .iter()
            .any(|r| !clean(r) || r.contains(',') || r.contains(' '))
        {
            return Err("a role is empty or contains ',' or whitespace");
        }
        if scopes.iter().any(|s| !clean(s) || s.contains(' ')) {
            return Err("a scope is empty or contains whitespace");
        }
        Ok(Self {
            user: v(subject)?,
            roles: v(&roles.join(","))?,
            scopes: v(&scopes.join(" "))?,
            tenant: tenant.map(v).transpose()?,
            issuer: v(issuer)?,
        })
    }
}

/// Compiled claim paths (`a.b.c` split once at load).
#[derive(Debug, Clone)]
pub struct ClaimMap {
    subject: Vec<String>,
    roles: Vec<String>,
    scopes: Vec<String>,
    tenant: Option<Vec<String>>,
}

impl ClaimMap {
    /// From dotted paths.
    pub fn new(subject: &str, roles: &str, scopes: &str, tenant: Option<&str>) -> Self {
        let split = |p: &str| p.split('.').map(str::to_owned).collect::<Vec<_>>();
        Self {
            subject: split(subject),
            roles: split(roles),
            scopes: split(scopes),
            tenant: tenant.map(split),
        }
    }

    /// Builds the identity from verified claims. A missing or non-string
    /// subject is an error; roles and scopes may be absent (empty), a list of
    /// strings, or one space-separated string (OAuth `scope`).
    pub fn identity(
        &self,
        claims: Value,
        issuer: &str,
        expires: u64,
    ) -> Result<Identity, &'static str> {
        let subject = lookup(&claims, &self.subject)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or("missing subject")?
            .to_owned();
        let roles = strings(lookup(&claims, &self.roles))?;
        let scopes = strings(lookup(&claims, &self.scopes))?;
        let tenant = match &self.tenant {
            Some(p) => match lookup(&claims, p) {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) => Some(s.clone()),
                Some(_) => return Err("tenant claim is not a string"),
            },
            None => None,
        };
        let headers = IdentityHeaders::new(issuer, &subject, &roles, &scopes, tenant.as_deref())?;
        Ok(Identity {
            upstream_token: UpstreamTokenSlot::default(),
            authz: Default::default(),
            key_id: None,
            headers,
            subject,
            roles,
            scopes,
            tenant,
            issuer: issuer.to_owned(),
            method: AuthMethod::Jwt,
            expires,
            claims: Arc::new(claims),
        })
    }
}

fn lookup<'a>(v: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, k| v.get(k))
}

fn strings(v: Option<&Value>) -> Result<Vec<String>, &'static str> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(s.split_ascii_whitespace().map(str::to_owned).collect()),
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| {
                x.as_str()
                    .map(str::to_owned)
                    .ok_or("role or scope is not a string")
            })
            .collect(),
        Some(_) => Err("roles or scopes claim has the wrong type"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn maps_nested_claims() {
        let m = ClaimMap::new("sub", "realm_access.roles", "scope", Some("org.id"));
        let id = m
            .identity(
                json!({"sub": "u1", "realm_access": {"roles": ["admin", "user"]}, "scope": "read write", "org": {"id": "t9"}}),
                "iss",
                10,
            )
            .map_err(String::from);
        let Ok(id) = id else { panic!("{id:?}") };
        assert_eq!(id.subject, "u1");
        assert_eq!(id.roles, ["admin", "user"]);
        assert_eq!(id.scopes, ["read", "write"]);
        assert_eq!(id.tenant.as_deref(), Some("t9"));
    }

    #[test]
    fn wrong_types_are_errors() {
        let m = ClaimMap::new("sub", "roles", "scope", Some("tenant"));
        assert!(m.identity(json!({"sub": 5}), "i", 1).is_err());
        assert!(m.identity(json!({}), "i", 1).is_err());
        assert!(
            m.identity(json!({"sub": "a", "roles": [1]}), "i", 1)
                .is_err()
        );
        assert!(
            m.identity(json!({"sub": "a", "roles": {"x": 1}}), "i", 1)
                .is_err()
        );
        assert!(
            m.identity(json!({"sub": "a", "tenant": 3}), "i", 1)
                .is_err()
        );
        assert!(m.identity(json!({"sub": "a"}), "i", 1).is_ok());
        // nothing that could split or forge an upstream header
        assert!(
            m.identity(json!({"sub": "a\r\nX-Portcullis-User: root"}), "i", 1)
                .is_err()
        );
        assert!(
            m.identity(json!({"sub": "a", "roles": ["user,admin"]}), "i", 1)
                .is_err()
        );
        assert!(
            m.identity(json!({"sub": "a", "tenant": "t\n"}), "i", 1)
                .is_err()
        );
    }
}
