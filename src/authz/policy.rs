//! Attribute-based conditions in CEL (the Common Expression Language of
//! Envoy RBAC, Kubernetes and Google IAM).
//!
//! A condition is compiled once at config load; parse errors and unknown
//! variables are config errors with their TOML path. Per request, variables
//! are bound through a resolver that hands out values already built:
//!
//! * `identity` — `sub`, `roles`, `scopes`, `tenant`, `attributes`, `claims`,
//!   `issuer`, `method`; built once per identity and cached with it (a cached
//!   token pays nothing more);
//! * `request` — `method`, `path`, `params`, `query`, `headers` (credentials
//!   never: `authorization`, `cookie`, the API-key header), `ip`; only the
//!   fields the condition names are built, borrowing the request's strings;
//! * `time` — `now` (timestamp), `year`, `month`, `day`, `hour`, `minute`,
//!   `weekday` (0 = Sunday) in `[authz] time_zone`; only built when named;
//! * `response` — `status` and `body` (the parsed JSON, `null` when empty):
//!   a condition that names `response` is checked on the upstream's answer.
//!
//! Only `true` allows. `false`, a value of another type, and any error
//! (a missing attribute, a type mismatch) deny.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, OnceLock};

use cel::common::types::{
    CelBool, CelDouble, CelInt, CelList, CelMap, CelMapKey, CelNull, CelString, CelTimestamp,
    CelUInt,
};
use cel::common::value::{CowVal, Val};
use cel::{Context, Env, Program, Value};
use chrono::{Datelike, Timelike};
use serde_json::Value as Json;

use crate::authn::Identity;

/// The variables a condition may use.
const VARIABLES: [&str; 4] = ["identity", "request", "time", "response"];

/// Shared by all conditions of a plan: the CEL environment and time zone.
pub struct PolicyEnv {
    env: Arc<Env>,
    pub(super) tz: chrono_tz::Tz,
    pub(super) secret_headers: Vec<http::HeaderName>,
}

impl std::fmt::Debug for PolicyEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyEnv")
            .field("tz", &self.tz)
            .finish_non_exhaustive()
    }
}

impl PolicyEnv {
    /// The standard CEL library, `zone` an IANA name. `secret_headers` are
    /// left out of `request.headers` (with `authorization`,
    /// `proxy-authorization` and `cookie`).
    pub fn new(zone: &str, secret_headers: &[&str]) -> Result<Self, String> {
        let tz: chrono_tz::Tz = zone.parse().map_err(|_| {
            format!("unknown time zone {zone:?} (use an IANA name such as \"Europe/Berlin\")")
        })?;
        let mut secret = vec![
            http::header::AUTHORIZATION,
            http::header::PROXY_AUTHORIZATION,
            http::header::COOKIE,
        ];
        secret.extend(
            secret_headers
                .iter()
                .filter_map(|h| http::HeaderName::from_bytes(h.as_bytes()).ok()),
        );
        Ok(Self {
            env: Arc::new(Env::stdlib()),
            tz,
            secret_headers: secret,
        })
    }

    /// UTC, no extra secret headers.
    pub fn utc() -> Self {
        Self {
            env: Arc::new(Env::stdlib()),
            tz: chrono_tz::Tz::UTC,
            secret_headers: vec![
                http::header::AUTHORIZATION,
                http::header::PROXY_AUTHORIZATION,
                http::header::COOKIE,
            ],
        }
    }

    /// Compiles one condition. `name` is how audit events and logs call it.
    pub fn compile(&self, name: &str, source: &str) -> Result<Policy, String> {
        let program = self
            .env
            .compile(source)
            .map_err(|e| format!("invalid CEL: {}", e.to_string().trim()))?;
        let refs = program.references();
        let mut vars = refs.variables();
        vars.sort_unstable();
        if let Some(v) = vars.iter().find(|v| !VARIABLES.contains(v)) {
            return Err(format!(
                "unknown variable {v:?}: conditions can use identity, request, time and response"
            ));
        }
        let word = |w: &str| {
            source
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .any(|t| t == w)
        };
        let request = refs.has_variable("request");
        let uses = Uses {
            request,
            time: refs.has_variable("time"),
            method: request && word("method"),
            path: request && word("path"),
            params: request && word("params"),
            query: request && word("query"),
            headers: request && word("headers"),
            ip: request && word("ip"),
        };
        Ok(Policy {
            name: name.to_owned(),
            on_response: refs.has_variable("response"),
            fast: super::fast::compile(program.expression()),
            program,
            uses,
        })
    }

    /// Evaluates a condition: `Ok(true)` allows; `Ok(false)` and `Err` (the
    /// reason, for the log) deny.
    pub fn eval(&self, policy: &Policy, facts: &Facts<'_>) -> Result<bool, String> {
        if let Some(node) = &policy.fast {
            if let Some(b) = super::fast::eval(node, facts, self) {
                return Ok(b);
            }
        }
        match self.execute(policy, facts) {
            Ok(Value::Bool(b)) => Ok(b),
            Ok(other) => Err(format!(
                "the condition gave a {}, not a bool",
                other.type_of()
            )),
            Err(e) => Err(e),
        }
    }

    /// Evaluates an expression to the bytes of a rate-limit key: a string as
    /// is, a number or bool as text; anything else is an error.
    pub fn eval_key(&self, policy: &Policy, facts: &Facts<'_>) -> Result<Vec<u8>, String> {
        match self.execute(policy, facts)? {
            Value::String(s) => Ok(s.as_bytes().to_vec()),
            Value::Int(n) => Ok(n.to_string().into_bytes()),
            Value::UInt(n) => Ok(n.to_string().into_bytes()),
            Value::Bool(b) => Ok(b.to_string().into_bytes()),
            other => Err(format!("a key must be a string, not a {}", other.type_of())),
        }
    }

    fn execute(&self, policy: &Policy, facts: &Facts<'_>) -> Result<Value, String> {
        let u = policy.uses;
        let request = u.request.then(|| self.request_value(u, facts));
        let time = u.time.then(|| self.time_value());
        let response = facts.response.map(|(s, b)| response_value(s, b));
        let vars = Vars {
            identity: identity_value(facts.identity),
            request: request.as_ref(),
            time: time.as_ref(),
            response: response.as_deref(),
        };
        let mut ctx = Context::with_env(self.env.clone());
        ctx.set_variable_resolver(&vars);
        policy.program.execute(&ctx).map_err(|e| e.to_string())
    }

    fn request_value<'a>(&self, u: Uses, f: &Facts<'a>) -> CelMap<'a> {
        let mut m: HashMap<CelMapKey<'a>, Box<dyn Val + 'a>> = HashMap::with_capacity(6);
        if u.method {
            m.insert(
                "method".into(),
                Box::new(CelString::from(f.method.as_str())),
            );
        }
        if u.path {
            m.insert("path".into(), Box::new(CelString::from(f.path)));
        }
        if u.params {
            let p: HashMap<CelMapKey<'a>, Box<dyn Val + 'a>> = f
                .params
                .iter()
                .map(|(k, v)| {
                    (
                        CelMapKey::from(k.as_str()),
                        Box::new(CelString::from(crate::canon::decode_segment(v)))
                            as Box<dyn Val + 'a>,
                    )
                })
                .collect();
            m.insert("params".into(), Box::new(CelMap::from(p)));
        }
        if u.query {
            let mut q: HashMap<CelMapKey<'a>, Box<dyn Val + 'a>> = HashMap::new();
            for pair in f.query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                let k = decode_query(k);
                q.entry(CelMapKey::from(k))
                    .or_insert_with(|| Box::new(CelString::from(decode_query(v))));
            }
            m.insert("query".into(), Box::new(CelMap::from(q)));
        }
        if u.headers {
            let mut h: HashMap<CelMapKey<'a>, Box<dyn Val + 'a>> = HashMap::new();
            for (name, value) in f.headers {
                if self.secret_headers.contains(name) {
                    continue;
                }
                if let Ok(v) = value.to_str() {
                    h.entry(CelMapKey::from(name.as_str()))
                        .or_insert_with(|| Box::new(CelString::from(v)));
                }
            }
            m.insert("headers".into(), Box::new(CelMap::from(h)));
        }
        if u.ip {
            m.insert("ip".into(), Box::new(CelString::from(f.ip.to_string())));
        }
        CelMap::from(m)
    }

    fn time_value(&self) -> CelMap<'static> {
        let now = chrono::Utc::now().with_timezone(&self.tz);
        let int = |n: u32| Box::new(CelInt::from(i64::from(n))) as Box<dyn Val>;
        let mut m: HashMap<CelMapKey<'static>, Box<dyn Val>> = HashMap::with_capacity(7);
        m.insert(
            "now".into(),
            Box::new(CelTimestamp::from(now.fixed_offset())),
        );
        m.insert("year".into(), Box::new(CelInt::from(i64::from(now.year()))));
        m.insert("month".into(), int(now.month()));
        m.insert("day".into(), int(now.day()));
        m.insert("hour".into(), int(now.hour()));
        m.insert("minute".into(), int(now.minute()));
        m.insert("weekday".into(), int(now.weekday().num_days_from_sunday()));
        CelMap::from(m)
    }
}

/// A compiled condition.
#[derive(Debug)]
pub struct Policy {
    /// Config name (`policy finance_only`, `routes[3].allow_if`).
    pub name: String,
    /// Names `response`: checked on the upstream's answer.
    pub on_response: bool,
    /// The same condition for the fast evaluator, when it has only what
    /// that one handles (it falls back to `program` when unsure).
    fast: Option<super::fast::Node>,
    program: Program,
    uses: Uses,
}

#[derive(Debug, Clone, Copy, Default)]
struct Uses {
    request: bool,
    time: bool,
    method: bool,
    path: bool,
    params: bool,
    query: bool,
    headers: bool,
    ip: bool,
}

/// What a condition is evaluated against.
#[derive(Debug)]
pub struct Facts<'a> {
    /// The caller.
    pub identity: &'a Identity,
    /// Request method.
    pub method: &'a http::Method,
    /// Canonical path.
    pub path: &'a str,
    /// Route parameters (percent-encoded).
    pub params: &'a [(String, String)],
    /// Raw query string.
    pub query: Option<&'a str>,
    /// Request headers (after stage 2's strip).
    pub headers: &'a http::HeaderMap,
    /// Client address (stage 1).
    pub ip: IpAddr,
    /// `response` (status, parsed body), for response conditions.
    pub response: Option<(u16, Option<&'a Json>)>,
}

struct Vars<'a> {
    identity: &'a (dyn Val + 'static),
    request: Option<&'a CelMap<'a>>,
    time: Option<&'a CelMap<'static>>,
    response: Option<&'a (dyn Val + 'static)>,
}

impl cel::context::VariableResolver for Vars<'_> {
    fn resolve<'b>(&'b self, variable: &str) -> Option<CowVal<'b, 'b>> {
        let v: &'b (dyn Val + 'b) = match variable {
            "identity" => self.identity,
            "request" => self.request?,
            "time" => self.time?,
            "response" => self.response?,
            _ => return None,
        };
        Some(CowVal::Borrowed(v))
    }
}

/// What authorization derives from an identity, made on first use and kept
/// with it (a cached token pays once): its CEL value and its parsed scopes.
/// Nothing here depends on the config, so it survives reloads unchanged.
#[derive(Default)]
pub struct IdentityCache {
    value: OnceLock<Box<dyn Val>>,
    scopes: OnceLock<Vec<super::Permission>>,
}

impl IdentityCache {
    /// The identity's scopes as permissions (those that parse).
    pub fn scopes(&self, id: &Identity) -> &[super::Permission] {
        self.scopes.get_or_init(|| {
            id.scopes
                .iter()
                .filter_map(|s| super::Permission::parse(s).ok())
                .collect()
        })
    }
}

impl std::fmt::Debug for IdentityCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IdentityCache")
    }
}

impl Clone for IdentityCache {
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl PartialEq for IdentityCache {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

fn identity_value(id: &Identity) -> &(dyn Val + 'static) {
    id.authz
        .value
        .get_or_init(|| {
            let strings = |l: &[String]| -> Box<dyn Val> {
                Box::new(CelList::from(
                    l.iter()
                        .map(|s| Box::new(CelString::from(s.clone())) as Box<dyn Val>)
                        .collect::<Vec<_>>(),
                ))
            };
            let mut m: HashMap<CelMapKey<'static>, Box<dyn Val>> = HashMap::with_capacity(8);
            m.insert("sub".into(), Box::new(CelString::from(id.subject.clone())));
            m.insert("roles".into(), strings(&id.roles));
            m.insert("scopes".into(), strings(&id.scopes));
            m.insert(
                "tenant".into(),
                match &id.tenant {
                    Some(t) => Box::new(CelString::from(t.clone())),
                    None => Box::new(CelNull),
                },
            );
            let attributes = match id.claims.get("attributes") {
                Some(a @ Json::Object(_)) => json_value(a),
                _ => Box::new(CelMap::from(HashMap::new())),
            };
            m.insert("attributes".into(), attributes);
            m.insert("claims".into(), json_value(&id.claims));
            m.insert(
                "issuer".into(),
                Box::new(CelString::from(id.issuer.clone())),
            );
            m.insert(
                "method".into(),
                Box::new(CelString::from(id.method.as_str())),
            );
            Box::new(CelMap::from(m))
        })
        .as_ref()
}

/// A JSON value as a CEL value (integers as `int`, or `uint` above `i64`).
pub fn json_value(v: &Json) -> Box<dyn Val> {
    match v {
        Json::Null => Box::new(CelNull),
        Json::Bool(b) => Box::new(CelBool::from(*b)),
        Json::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => Box::new(CelInt::from(i)),
            (None, Some(u)) => Box::new(CelUInt::from(u)),
            _ => Box::new(CelDouble::from(n.as_f64().unwrap_or(f64::NAN))),
        },
        Json::String(s) => Box::new(CelString::from(s.clone())),
        Json::Array(a) => Box::new(CelList::from(a.iter().map(json_value).collect::<Vec<_>>())),
        Json::Object(o) => Box::new(CelMap::from(
            o.iter()
                .map(|(k, v)| (CelMapKey::from(k.clone()), json_value(v)))
                .collect::<HashMap<_, _>>(),
        )),
    }
}

/// `response` for response conditions.
pub fn response_value(status: u16, body: Option<&Json>) -> Box<dyn Val> {
    let mut m: HashMap<CelMapKey<'static>, Box<dyn Val>> = HashMap::with_capacity(2);
    m.insert("status".into(), Box::new(CelInt::from(i64::from(status))));
    m.insert(
        "body".into(),
        body.map_or_else(|| Box::new(CelNull) as Box<dyn Val>, json_value),
    );
    Box::new(CelMap::from(m))
}

/// Percent-decodes a query component (`+` is a space).
fn decode_query(s: &str) -> String {
    if s.contains('+') {
        crate::canon::decode_segment(&s.replace('+', " "))
    } else {
        crate::canon::decode_segment(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn env() -> PolicyEnv {
        PolicyEnv::new("UTC", &["x-api-key"]).unwrap_or_else(|e| panic!("{e}"))
    }

    fn alice() -> Identity {
        let claims =
            json!({"sub": "u-alice", "attributes": {"department": "finance", "clearance": 3}});
        let m = crate::authn::identity::ClaimMap::new("sub", "roles", "scope", None);
        let mut id = m
            .identity(claims, "portcullis", 0)
            .unwrap_or_else(|e| panic!("{e}"));
        id.roles = vec!["user".into()];
        id
    }

    fn eval(src: &str, response: Option<&Json>) -> Result<bool, String> {
        let env = env();
        let p = env.compile("test", src)?;
        let id = alice();
        let mut headers = http::HeaderMap::new();
        headers.insert("x-team", http::HeaderValue::from_static("blue"));
        headers.insert(
            "authorization",
            http::HeaderValue::from_static("Bearer secret"),
        );
        headers.insert("x-api-key", http::HeaderValue::from_static("pk_secret"));
        let params = vec![("department".to_string(), "fin%61nce".to_string())];
        let resp = response.map(|b| (200, Some(b)));
        let facts = Facts {
            identity: &id,
            method: &http::Method::GET,
            path: "/api/v1/reports/finance",
            params: &params,
            query: Some("limit=5&q=a+b%21&limit=9"),
            headers: &headers,
            ip: "192.0.2.7".parse().unwrap_or(IpAddr::from([0, 0, 0, 0])),
            response: resp,
        };
        env.eval(&p, &facts)
    }

    #[test]
    fn true_false_and_errors() {
        assert_eq!(
            eval(
                "identity.attributes.department == request.params.department && identity.attributes.clearance >= 3",
                None
            ),
            Ok(true)
        );
        assert_eq!(eval("identity.attributes.clearance >= 4", None), Ok(false));
        assert_eq!(
            eval(
                "'user' in identity.roles && identity.sub == 'u-alice'",
                None
            ),
            Ok(true)
        );
        // errors deny: a missing attribute, a type error, a non-bool result
        assert!(eval("identity.attributes.missing == 'x'", None).is_err());
        assert!(eval("identity.attributes.department > 3", None).is_err());
        assert!(eval("identity.sub", None).is_err());
        // `||` with an error on the left that the right decides is CEL semantics
        assert_eq!(
            eval("identity.attributes.missing == 'x' || true", None),
            Ok(true)
        );
    }

    #[test]
    fn request_fields() {
        assert_eq!(
            eval(
                "request.method == 'GET' && request.path.startsWith('/api/')",
                None
            ),
            Ok(true)
        );
        assert_eq!(
            eval(
                "request.query.limit == '5' && request.query.q == 'a b!'",
                None
            ),
            Ok(true)
        );
        assert_eq!(eval("request.headers['x-team'] == 'blue'", None), Ok(true));
        assert_eq!(eval("request.ip == '192.0.2.7'", None), Ok(true));
        // credentials are never visible to conditions
        assert_eq!(eval("'authorization' in request.headers", None), Ok(false));
        assert_eq!(eval("'x-api-key' in request.headers", None), Ok(false));
        assert!(eval("request.headers.authorization == 'Bearer secret'", None).is_err());
    }

    #[test]
    fn time_and_response() {
        assert_eq!(
            eval("time.hour >= 0 && time.hour < 24 && time.weekday < 7", None),
            Ok(true)
        );
        assert_eq!(
            eval("time.now > timestamp('2020-01-01T00:00:00Z')", None),
            Ok(true)
        );
        let doc = json!({"owner_id": "u-bob", "department": "finance", "tags": ["a"]});
        assert_eq!(
            eval(
                "response.status == 200 && response.body.department == identity.attributes.department",
                Some(&doc)
            ),
            Ok(true)
        );
        assert_eq!(
            eval("response.body.owner_id == identity.sub", Some(&doc)),
            Ok(false)
        );
        // `response` in a request phase: unbound, so an error, so deny
        assert!(eval("response.status == 200", None).is_err());
    }

    /// The fast evaluator agrees with the CEL interpreter wherever it
    /// answers, over random conditions mixing every field, types that do and
    /// do not compare, missing attributes and the logical operators.
    mod differential {
        use super::*;
        use proptest::prelude::*;

        const STRS: &[&str] = &[
            "identity.sub",
            "identity.tenant",
            "identity.issuer",
            "identity.method",
            "identity.attributes.department",
            "identity.attributes.missing",
            "identity.claims.sub",
            "identity.attributes.nested.team",
            "request.method",
            "request.path",
            "request.params.department",
            "request.query.limit",
            "request.query.q",
            "request.headers['x-team']",
            "request.headers.authorization",
            "request.ip",
            "response.body.owner_id",
            "response.body.department",
            "'finance'",
            "'u-alice'",
            "'GET'",
            "'blue'",
            "'5'",
            "''",
            "'192.0.2.7'",
        ];
        const INTS: &[&str] = &[
            "identity.attributes.clearance",
            "time.hour",
            "time.weekday",
            "time.year",
            "response.status",
            "response.body.count",
            "response.body.ratio",
            "3",
            "0",
            "200",
            "-1",
        ];
        const LISTS: &[&str] = &[
            "identity.roles",
            "identity.scopes",
            "identity.attributes.groups",
            "identity.attributes",
            "response.body.tags",
            "response.body",
            "['user', 'x']",
        ];
        const BOOLS: &[&str] = &[
            "true",
            "false",
            "identity.attributes.active",
            "response.body.draft",
        ];
        const OPS: &[&str] = &["==", "!=", "<", "<=", ">", ">="];

        fn atom() -> impl Strategy<Value = String> {
            let pick =
                |l: &'static [&'static str]| (0..l.len()).prop_map(move |i| l[i].to_string());
            prop_oneof![
                // same kinds on both sides, mostly
                (pick(STRS), 0..OPS.len(), pick(STRS))
                    .prop_map(|(a, o, b)| format!("{a} {} {b}", OPS[o])),
                (pick(INTS), 0..OPS.len(), pick(INTS))
                    .prop_map(|(a, o, b)| format!("{a} {} {b}", OPS[o])),
                // and mixed ones
                (pick(STRS), 0..OPS.len(), pick(INTS))
                    .prop_map(|(a, o, b)| format!("{a} {} {b}", OPS[o])),
                (pick(BOOLS), 0..2usize, pick(BOOLS))
                    .prop_map(|(a, o, b)| format!("{a} {} {b}", OPS[o])),
                (pick(STRS), pick(LISTS)).prop_map(|(a, b)| format!("{a} in {b}")),
                pick(BOOLS),
            ]
        }

        fn expr() -> impl Strategy<Value = String> {
            atom().prop_recursive(4, 24, 2, |inner| {
                prop_oneof![
                    inner.clone().prop_map(|e| format!("!({e})")),
                    (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a}) && ({b})")),
                    (inner.clone(), inner).prop_map(|(a, b)| format!("({a}) || ({b})")),
                ]
            })
        }

        fn facts_for<'a>(
            id: &'a Identity,
            headers: &'a http::HeaderMap,
            params: &'a [(String, String)],
            body: &'a Json,
        ) -> Facts<'a> {
            Facts {
                identity: id,
                method: &http::Method::GET,
                path: "/api/v1/reports/finance",
                params,
                query: Some("limit=5&q=blue"),
                headers,
                ip: IpAddr::from([192, 0, 2, 7]),
                response: Some((200, Some(body))),
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2000))]
            #[test]
            fn fast_path_agrees_with_the_interpreter(src in expr()) {
                let env = env();
                let claims = json!({"sub": "u-alice", "attributes": {
                    "department": "finance", "clearance": 3, "active": true,
                    "groups": ["finance", "blue", 7], "nested": {"team": "blue"}}});
                let m = crate::authn::identity::ClaimMap::new("sub", "roles", "scope", Some("tenant"));
                let mut id = m.identity(claims, "portcullis", 0).unwrap_or_else(|e| panic!("{e}"));
                id.roles = vec!["user".into(), "admin".into()];
                id.scopes = vec!["documents:read".into()];
                let mut headers = http::HeaderMap::new();
                headers.insert("x-team", http::HeaderValue::from_static("blue"));
                headers.insert("authorization", http::HeaderValue::from_static("Bearer x"));
                let params = vec![("department".to_string(), "fin%61nce".to_string())];
                let body = json!({"owner_id": "u-alice", "department": "finance", "count": 3,
                                  "ratio": 0.5, "tags": ["blue"], "draft": false});
                let facts = facts_for(&id, &headers, &params, &body);
                let Ok(mut p) = env.compile("t", &src) else { return Ok(()) };
                let fast = p.fast.as_ref().and_then(|n| crate::authz::fast::eval(n, &facts, &env));
                p.fast = None;
                let interpreted = env.eval(&p, &facts);
                if let Some(b) = fast {
                    prop_assert_eq!(interpreted, Ok(b), "{}", src);
                }
            }
        }

        #[test]
        fn the_usual_conditions_take_the_fast_path() {
            let env = env();
            let id = alice();
            let mut headers = http::HeaderMap::new();
            headers.insert("x-team", http::HeaderValue::from_static("blue"));
            let params = vec![("department".to_string(), "fin%61nce".to_string())];
            let body = json!({"department": "finance"});
            let facts = facts_for(&id, &headers, &params, &body);
            for (src, want) in [
                (
                    "identity.attributes.department == request.params.department && identity.attributes.clearance >= 3 && time.hour >= 0 && time.hour < 24",
                    true,
                ),
                ("'user' in identity.roles && request.method == 'GET'", true),
                (
                    "response.body.department != 'finance' || identity.attributes.department == 'finance'",
                    true,
                ),
                (
                    "request.headers['x-team'] == 'blue' && !(identity.sub == 'u-bob')",
                    true,
                ),
                ("identity.attributes.clearance > 3", false),
                // the error side is absorbed, as in CEL
                ("identity.attributes.missing == 'x' && false", false),
            ] {
                let p = env.compile("t", src).unwrap_or_else(|e| panic!("{e}"));
                let fast = p
                    .fast
                    .as_ref()
                    .and_then(|n| crate::authz::fast::eval(n, &facts, &env));
                assert_eq!(fast, Some(want), "{src}");
            }
            // unsure at run time: the interpreter answers (and errors deny)
            let p = env
                .compile("t", "identity.attributes.missing == 'x'")
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(
                p.fast
                    .as_ref()
                    .and_then(|n| crate::authz::fast::eval(n, &facts, &env)),
                None
            );
            assert!(env.eval(&p, &facts).is_err());
            // what it leaves to the interpreter
            for src in [
                "size(identity.roles) > 0",
                "identity.sub.startsWith('u-')",
                "has(identity.attributes.x)",
                "time.now > timestamp('2020-01-01T00:00:00Z')",
            ] {
                let p = env.compile("t", src).unwrap_or_else(|e| panic!("{e}"));
                assert!(p.fast.is_none(), "{src}");
            }
        }
    }

    #[test]
    fn compile_errors() {
        let env = env();
        let e = env
            .compile("x", "identity.sub == ")
            .err()
            .unwrap_or_default();
        assert!(e.starts_with("invalid CEL"), "{e}");
        let e = env
            .compile("x", "user.sub == 'a'")
            .err()
            .unwrap_or_default();
        assert!(e.contains("unknown variable \"user\""), "{e}");
        assert!(
            env.compile("x", "response.status == 200")
                .is_ok_and(|p| p.on_response)
        );
        assert!(
            env.compile("x", "identity.sub == 'a'")
                .is_ok_and(|p| !p.on_response)
        );
        assert!(PolicyEnv::new("Mars/Olympus", &[]).is_err());
        assert!(PolicyEnv::new("Europe/Berlin", &[]).is_ok());
    }
}
