//! Stage 10c: response filtering by the operation's contract.
//!
//! * Body: a JSON answer is reduced to what the response schema for its
//!   status declares (an allowlist, recursively through objects and arrays;
//!   `writeOnly` properties never leave), then the global redaction list
//!   removes matching fields wherever they are, schema or not. An answer
//!   that needs no change is forwarded byte for byte.
//! * Unsafe consumption: with `validate_responses`, an answer that does not
//!   conform to its schema (or is not the JSON it should be) becomes 502.
//! * Headers: with `response_headers = "declared"`, headers the document
//!   does not declare for the status (beyond the standard ones) are dropped.
//! * Bounded: the answer is read up to the route's `max_buffered_response`;
//!   a larger one is 502, never buffered without limit.

use std::collections::HashMap;

use http::HeaderName;
use serde_json::Value;

/// Headers every answer may carry whatever the document says.
const STANDARD: [&str; 20] = [
    "content-type",
    "content-length",
    "content-encoding",
    "content-language",
    "content-disposition",
    "content-range",
    "accept-ranges",
    "cache-control",
    "etag",
    "expires",
    "last-modified",
    "location",
    "vary",
    "date",
    "retry-after",
    "link",
    "www-authenticate",
    "allow",
    "age",
    "pragma",
];

/// Which statuses a response description covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Exact(u16),
    /// `2XX`: the hundreds digit.
    Range(u16),
    Default,
}

/// One response description, compiled.
#[derive(Debug)]
struct Rule {
    status: Status,
    /// The allowlist, when the description has a JSON schema.
    shape: Option<usize>,
    /// The schema, when answers are validated.
    validator: Option<Box<jsonschema::Validator>>,
    /// Headers it declares (lower case).
    headers: Vec<HeaderName>,
}

/// An operation's response rules.
#[derive(Debug, Default)]
pub struct Responses {
    rules: Vec<Rule>,
    shapes: Shapes,
    /// Drop headers not declared (beyond [`STANDARD`]).
    declared_headers_only: bool,
    /// Refuse answers that do not conform (502).
    validate: bool,
}

/// Why an answer was refused.
#[derive(Debug)]
pub enum Violation {
    /// Not JSON although it says so, or not the JSON the schema describes.
    NotJson,
    /// Schema failures: `(pointer, message)`, values masked.
    Schema(Vec<(String, String)>),
    /// A 2xx status the document does not declare (`validate_responses`).
    UndeclaredStatus,
}

impl Responses {
    /// Compiles the `responses` of an operation. `notes` receives what is
    /// not filtered and why.
    pub fn compile(
        doc: &Value,
        op: &Value,
        declared_headers_only: bool,
        validate: bool,
        notes: &mut Vec<String>,
    ) -> Result<Self, (String, String)> {
        let mut out = Self {
            declared_headers_only,
            validate,
            ..Self::default()
        };
        let Some(list) = op.get("responses").and_then(Value::as_object) else {
            return Ok(out);
        };
        for (code, resp) in list {
            let at = || format!("/responses/{code}");
            let status = match code.as_str() {
                "default" => Status::Default,
                c if c.len() == 3 && (c.ends_with("XX") || c.ends_with("xx")) => {
                    match c.get(..1).and_then(|d| d.parse::<u16>().ok()) {
                        Some(d @ 1..=5) => Status::Range(d),
                        _ => return Err((at(), "not a status code".into())),
                    }
                }
                c => match c.parse::<u16>() {
                    Ok(n @ 100..=599) => Status::Exact(n),
                    _ => return Err((at(), "not a status code".into())),
                },
            };
            let resp = crate::openapi::deref(doc, resp).map_err(|m| (at(), m))?;
            let headers = resp
                .get("headers")
                .and_then(Value::as_object)
                .map(|h| {
                    h.keys()
                        .filter_map(|k| {
                            HeaderName::from_bytes(k.to_ascii_lowercase().as_bytes()).ok()
                        })
                        .collect()
                })
                .unwrap_or_default();
            let schema = resp
                .get("content")
                .and_then(Value::as_object)
                .and_then(crate::validate::json_content)
                .and_then(|media| media.get("schema"));
            let (shape, validator) = match schema {
                Some(s) => {
                    let shape = out.shapes.compile(doc, s, 0);
                    let validator = if validate {
                        let v =
                            crate::validate::build(doc, s.clone(), crate::validate::Mode::Value)
                                .map_err(|m| (at(), m))?;
                        Some(Box::new(v))
                    } else {
                        None
                    };
                    (Some(shape), validator)
                }
                None => (None, None),
            };
            out.rules.push(Rule {
                status,
                shape,
                validator,
                headers,
            });
        }
        if out.rules.iter().all(|r| r.shape.is_none()) && !out.rules.is_empty() {
            notes.push("no JSON response schema: answers are only redacted".into());
        }
        Ok(out)
    }

    fn has_shapes(&self) -> bool {
        self.rules.iter().any(|r| r.shape.is_some())
    }

    fn rule(&self, status: u16) -> Option<&Rule> {
        self.rules
            .iter()
            .find(|r| r.status == Status::Exact(status))
            .or_else(|| {
                self.rules
                    .iter()
                    .find(|r| r.status == Status::Range(status / 100))
            })
            .or_else(|| self.rules.iter().find(|r| r.status == Status::Default))
    }

    /// Whether answers with this status are read to filter or check them.
    pub fn reads(&self, status: u16, json: bool) -> bool {
        json || self.rule(status).is_some_and(|r| r.shape.is_some())
    }

    /// Drops headers the document does not declare for the status.
    pub fn filter_headers(&self, status: u16, h: &mut http::HeaderMap) {
        if !self.declared_headers_only {
            return;
        }
        let declared: &[HeaderName] = self.rule(status).map_or(&[], |r| &r.headers);
        let drop: Vec<HeaderName> = h
            .keys()
            .filter(|k| !STANDARD.contains(&k.as_str()) && !declared.contains(k))
            .cloned()
            .collect();
        for k in drop {
            h.remove(k);
        }
    }

    /// Filters (and, if configured, validates) an answer's body. `json`: the
    /// answer says it is JSON. Returns the body to send instead, when it
    /// changes.
    pub fn filter_body(
        &self,
        status: u16,
        json: bool,
        bytes: &[u8],
        redact: &Redaction,
    ) -> Result<Option<Vec<u8>>, Violation> {
        let rule = self.rule(status);
        if bytes.is_empty() {
            return Ok(None);
        }
        let shaped = rule.is_some_and(|r| r.shape.is_some());
        if !json {
            // Where the document promises JSON, something else (a user
            // object labelled text/plain) is never passed on unfiltered.
            return if shaped {
                Err(Violation::NotJson)
            } else {
                Ok(None)
            };
        }
        if rule.is_none() && self.validate && (200..300).contains(&status) && self.has_shapes() {
            return Err(Violation::UndeclaredStatus);
        }
        // Duplicate keys refused: the bytes sent on when nothing changes
        // must be the value that was filtered.
        let mut v = crate::validate::parse_unique(bytes, MAX_SCHEMA_DEPTH * 2)
            .map_err(|_| Violation::NotJson)?;
        if let Some(validator) = rule.and_then(|r| r.validator.as_deref()) {
            let errors: Vec<(String, String)> = validator
                .iter_errors(&v)
                .take(10)
                .map(|e| {
                    (
                        e.instance_path().as_str().to_owned(),
                        crate::validate::message(&e),
                    )
                })
                .collect();
            if !errors.is_empty() {
                return Err(Violation::Schema(errors));
            }
        }
        let mut changed = false;
        if let Some(shape) = rule.and_then(|r| r.shape) {
            changed |= self.shapes.filter(shape, &mut v, 0);
        }
        changed |= redact.apply(&mut v);
        if changed {
            serde_json::to_vec(&v)
                .map(Some)
                .map_err(|_| Violation::NotJson)
        } else {
            Ok(None)
        }
    }

    /// Properties the response schemas declare that the redaction list
    /// would remove anyway (for `portcullis check`).
    pub fn redacted_declared(&self, redact: &Redaction) -> Vec<String> {
        let mut out: Vec<String> = self
            .shapes
            .nodes
            .iter()
            .filter_map(|n| match n {
                Node::Object { props, .. } => Some(props.keys()),
                _ => None,
            })
            .flatten()
            .filter(|k| redact.names.iter().any(|g| glob(g, k)))
            .cloned()
            .collect();
        out.sort();
        out.dedup();
        out
    }
}

/// The allowlist of a schema, as a graph (a recursive schema is a cycle).
#[derive(Debug, Default)]
struct Shapes {
    nodes: Vec<Node>,
    /// `$ref` target -> node, so each is compiled once.
    refs: HashMap<String, usize>,
}

#[derive(Debug, Clone)]
enum Node {
    /// Anything passes (a free-form value, or not known).
    Any,
    /// A string, number, boolean or null: an object or array in its place
    /// is removed (becomes null).
    Scalar,
    /// Only these properties pass; others pass through `extra` if set.
    Object {
        props: HashMap<String, usize>,
        extra: Option<usize>,
    },
    /// Every item through the node.
    Array(usize),
}

/// Deepest schema nesting compiled; deeper parts pass (and are redacted).
const MAX_SCHEMA_DEPTH: usize = 64;

impl Shapes {
    fn push(&mut self, n: Node) -> usize {
        self.nodes.push(n);
        self.nodes.len() - 1
    }

    fn compile(&mut self, doc: &Value, s: &Value, depth: usize) -> usize {
        if depth > MAX_SCHEMA_DEPTH {
            return self.push(Node::Any);
        }
        if let Some(r) = s.get("$ref").and_then(Value::as_str) {
            if let Some(&i) = self.refs.get(r) {
                return i;
            }
            let i = self.push(Node::Any);
            self.refs.insert(r.to_owned(), i);
            let target = r.strip_prefix('#').and_then(|p| doc.pointer(p));
            if let Some(t) = target {
                let built = self.compile(doc, t, depth + 1);
                let node = self.nodes.get(built).cloned().unwrap_or(Node::Any);
                if let Some(slot) = self.nodes.get_mut(i) {
                    *slot = node;
                }
            }
            return i;
        }
        // Compositions: the union of what the branches declare (a branch
        // that says nothing about properties adds nothing).
        let mut merged: Option<Node> = None;
        for key in ["allOf", "anyOf", "oneOf"] {
            for b in s.get(key).and_then(Value::as_array).into_iter().flatten() {
                let i = self.compile(doc, b, depth + 1);
                let n = self.nodes.get(i).cloned().unwrap_or(Node::Any);
                if matches!(n, Node::Any | Node::Scalar) {
                    continue;
                }
                merged = Some(match merged {
                    None => n,
                    Some(m) => self.union(m, n),
                });
            }
        }
        let own = self.own(doc, s, depth);
        let node = match (merged, own) {
            (None, n) => n,
            (Some(m), Node::Any) if !declares_object(s) => m,
            (Some(m), n) => self.union(m, n),
        };
        self.push(node)
    }

    /// The schema's own keywords, compositions aside.
    fn own(&mut self, doc: &Value, s: &Value, depth: usize) -> Node {
        if let Some(items) = s.get("items") {
            return Node::Array(self.compile(doc, items, depth + 1));
        }
        if scalar_only(s) {
            return Node::Scalar;
        }
        let props = s.get("properties").and_then(Value::as_object);
        let extra = match s.get("additionalProperties") {
            None => None,
            Some(Value::Bool(false)) => None,
            Some(Value::Bool(true)) => Some(self.push(Node::Any)),
            Some(other) => Some(self.compile(doc, other, depth + 1)),
        };
        let Some(props) = props else {
            // A free-form object (no properties) passes unless it is closed.
            return match s.get("additionalProperties") {
                Some(Value::Bool(false)) => Node::Object {
                    props: HashMap::new(),
                    extra: None,
                },
                Some(_) => Node::Object {
                    props: HashMap::new(),
                    extra,
                },
                None => Node::Any,
            };
        };
        let mut map = HashMap::new();
        for (k, p) in props {
            if p.get("writeOnly") == Some(&Value::Bool(true)) {
                continue;
            }
            map.insert(k.clone(), self.compile(doc, p, depth + 1));
        }
        Node::Object { props: map, extra }
    }

    fn union(&mut self, a: Node, b: Node) -> Node {
        match (a, b) {
            (
                Node::Object {
                    props: mut pa,
                    extra: ea,
                },
                Node::Object {
                    props: pb,
                    extra: eb,
                },
            ) => {
                for (k, v) in pb {
                    match pa.get(&k).copied() {
                        Some(existing) if existing != v => {
                            let x = self.nodes.get(existing).cloned().unwrap_or(Node::Any);
                            let y = self.nodes.get(v).cloned().unwrap_or(Node::Any);
                            let u = self.union(x, y);
                            let i = self.push(u);
                            pa.insert(k, i);
                        }
                        Some(_) => {}
                        None => {
                            pa.insert(k, v);
                        }
                    }
                }
                Node::Object {
                    props: pa,
                    extra: ea.or(eb),
                }
            }
            (Node::Array(x), Node::Array(y)) if x == y => Node::Array(x),
            (Node::Array(x), Node::Array(y)) => {
                let nx = self.nodes.get(x).cloned().unwrap_or(Node::Any);
                let ny = self.nodes.get(y).cloned().unwrap_or(Node::Any);
                let u = self.union(nx, ny);
                Node::Array(self.push(u))
            }
            // One branch allows anything: so does the union.
            _ => Node::Any,
        }
    }

    /// Removes what the node does not allow; whether anything was removed.
    /// A container where the schema has another kind of value (a whole
    /// object where a string is declared) is replaced by null.
    fn filter(&self, node: usize, v: &mut Value, depth: usize) -> bool {
        let container = matches!(v, Value::Object(_) | Value::Array(_));
        let mismatch = match self.nodes.get(node) {
            Some(Node::Scalar) => container,
            Some(Node::Object { .. }) => container && !v.is_object(),
            Some(Node::Array(_)) => container && !v.is_array(),
            _ => false,
        };
        if mismatch || (depth > MAX_SCHEMA_DEPTH && container) {
            *v = Value::Null;
            return true;
        }
        match (self.nodes.get(node), v) {
            (Some(Node::Object { props, extra }), Value::Object(m)) => {
                let before = m.len();
                m.retain(|k, _| props.contains_key(k) || extra.is_some());
                let mut changed = m.len() != before;
                for (k, child) in m.iter_mut() {
                    if let Some(&n) = props.get(k).or(extra.as_ref()) {
                        changed |= self.filter(n, child, depth + 1);
                    }
                }
                changed
            }
            (Some(Node::Array(n)), Value::Array(items)) => {
                let mut changed = false;
                for item in items {
                    changed |= self.filter(*n, item, depth + 1);
                }
                changed
            }
            _ => false,
        }
    }
}

/// The schema's `type` allows only scalars.
fn scalar_only(s: &Value) -> bool {
    let scalar = |t: &str| matches!(t, "string" | "number" | "integer" | "boolean" | "null");
    match s.get("type") {
        Some(Value::String(t)) => scalar(t),
        Some(Value::Array(list)) => {
            !list.is_empty() && list.iter().all(|t| t.as_str().is_some_and(scalar))
        }
        _ => false,
    }
}

/// Whether the JSON pointer names a property the schema declares, through
/// `$ref`s, compositions and arrays (`*` or an index for items); for load
/// checks (`restricted_fields`).
pub fn declares(doc: &Value, schema: &Value, pointer: &str) -> bool {
    let mut shapes = Shapes::default();
    let mut node = shapes.compile(doc, schema, 0);
    for token in pointer.split('/').skip(1) {
        let token = token.replace("~1", "/").replace("~0", "~");
        match shapes.nodes.get(node) {
            Some(Node::Object { props, .. }) => match props.get(&token) {
                Some(&n) => node = n,
                None => return false,
            },
            Some(Node::Array(n)) if token == "*" || token.parse::<usize>().is_ok() => node = *n,
            _ => return false,
        }
    }
    true
}

fn declares_object(s: &Value) -> bool {
    s.get("properties").is_some() || s.get("additionalProperties").is_some()
}

/// The global redaction list: field names (case-insensitive, `*` wildcards)
/// and JSON pointers (`/data/*/ssn`, `*` one segment).
#[derive(Debug, Default)]
pub struct Redaction {
    names: Vec<String>,
    pointers: Vec<Vec<String>>,
}

impl Redaction {
    /// From the configured list.
    pub fn new(list: &[String]) -> Self {
        let mut r = Self::default();
        for item in list {
            if let Some(p) = item.strip_prefix('/') {
                r.pointers.push(
                    p.split('/')
                        .map(|t| t.replace("~1", "/").replace("~0", "~"))
                        .collect(),
                );
            } else {
                r.names.push(item.to_ascii_lowercase());
            }
        }
        r
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty() && self.pointers.is_empty()
    }

    /// Removes matching fields everywhere; whether anything was removed.
    pub fn apply(&self, v: &mut Value) -> bool {
        if self.is_empty() {
            return false;
        }
        let mut changed = false;
        if !self.names.is_empty() {
            changed |= self.by_name(v, 0);
        }
        for p in &self.pointers {
            changed |= remove_path(v, p);
        }
        changed
    }

    fn by_name(&self, v: &mut Value, depth: usize) -> bool {
        if depth > 128 {
            return false;
        }
        match v {
            Value::Object(m) => {
                let before = m.len();
                m.retain(|k, _| !self.names.iter().any(|g| glob(g, k)));
                let mut changed = m.len() != before;
                for child in m.values_mut() {
                    changed |= self.by_name(child, depth + 1);
                }
                changed
            }
            Value::Array(items) => {
                let mut changed = false;
                for item in items {
                    changed |= self.by_name(item, depth + 1);
                }
                changed
            }
            _ => false,
        }
    }
}

fn remove_path(v: &mut Value, path: &[String]) -> bool {
    let Some((first, rest)) = path.split_first() else {
        return false;
    };
    match v {
        Value::Object(m) if rest.is_empty() => {
            if first == "*" {
                let had = !m.is_empty();
                m.clear();
                had
            } else {
                m.remove(first).is_some()
            }
        }
        Value::Object(m) => {
            if first == "*" {
                m.values_mut().fold(false, |c, x| remove_path(x, rest) | c)
            } else {
                m.get_mut(first).is_some_and(|x| remove_path(x, rest))
            }
        }
        Value::Array(items) if !rest.is_empty() => {
            if first == "*" {
                items
                    .iter_mut()
                    .fold(false, |c, x| remove_path(x, rest) | c)
            } else {
                first
                    .parse::<usize>()
                    .ok()
                    .and_then(|i| items.get_mut(i))
                    .is_some_and(|x| remove_path(x, rest))
            }
        }
        _ => false,
    }
}

/// `pattern` (lower case, `*` any run) matches `name` ignoring ASCII case.
fn glob(pattern: &str, name: &str) -> bool {
    let (p, n) = (pattern.as_bytes(), name.as_bytes());
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        match p.get(pi) {
            Some(b'*') => {
                star = Some((pi, ni));
                pi += 1;
            }
            Some(&c) if c == n[ni].to_ascii_lowercase() => {
                pi += 1;
                ni += 1;
            }
            _ => match star {
                Some((sp, sn)) => {
                    pi = sp + 1;
                    ni = sn + 1;
                    star = Some((sp, sn + 1));
                }
                None => return false,
            },
        }
    }
    p.get(pi..)
        .is_some_and(|rest| rest.iter().all(|&c| c == b'*'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn globs() {
        assert!(glob("password*", "password_hash"));
        assert!(glob("password*", "PasswordHash"));
        assert!(glob("*secret*", "mfa_secret"));
        assert!(glob("*secret*", "secret"));
        assert!(glob("*token*", "refreshToken"));
        assert!(!glob("*token*", "tok"));
        assert!(!glob("password*", "new_password"));
        assert!(glob("a*b*c", "aXbYc"));
        assert!(!glob("a*b*c", "aXbY"));
    }

    #[test]
    fn filters_by_schema_recursively_and_redacts() {
        let doc = json!({"openapi": "3.1.0", "components": {"schemas": {
            "User": {"type": "object", "properties": {
                "id": {"type": "string"}, "name": {"type": "string"},
                "secret_answer": {"type": "string"},
                "password": {"type": "string", "writeOnly": true},
                "friends": {"type": "array", "items": {"$ref": "#/components/schemas/User"}},
                "meta": {"type": "object", "additionalProperties": {"type": "string"}},
                "prefs": {"type": "object"},
            }},
            "Page": {"allOf": [
                {"type": "object", "properties": {"items": {"type": "array", "items": {"$ref": "#/components/schemas/User"}}}},
                {"type": "object", "properties": {"next": {"type": "string"}}},
            ]},
        }}});
        let op = json!({"responses": {
            "200": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Page"}}},
                    "headers": {"X-Total": {"schema": {"type": "integer"}}}},
            "4XX": {"content": {"application/problem+json": {"schema": {"type": "object", "properties": {"title": {"type": "string"}}}}}},
        }});
        let mut notes = Vec::new();
        let r = Responses::compile(&doc, &op, true, false, &mut notes).unwrap();
        let redact = Redaction::new(&["password*".into(), "*secret*".into(), "/next".into()]);
        let body = json!({"items": [{"id": "1", "name": "a", "password_hash": "x", "admin_notes": "n",
            "secret_answer": "s", "password": "p",
            "friends": [{"id": "2", "mfa": 1, "friends": []}],
            "meta": {"k": "v"}, "prefs": {"free": {"form": true}}}],
            "next": "c", "debug": true});
        let out = r
            .filter_body(200, true, body.to_string().as_bytes(), &redact)
            .unwrap()
            .unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            v,
            json!({"items": [{"id": "1", "name": "a", "friends": [{"id": "2", "friends": []}],
                "meta": {"k": "v"}, "prefs": {"free": {"form": true}}}]})
        );
        // conforming answers pass unchanged (no re-serialization)
        let clean = json!({"items": [{"id": "1"}]}).to_string();
        assert!(
            r.filter_body(200, true, clean.as_bytes(), &redact)
                .unwrap()
                .is_none()
        );
        // a 404 is filtered by the 4XX description
        let out = r
            .filter_body(404, true, br#"{"title":"x","trace":"db.py:42"}"#, &redact)
            .unwrap()
            .unwrap();
        assert_eq!(out, br#"{"title":"x"}"#);
        let mut h = http::HeaderMap::new();
        for k in ["x-total", "x-debug-sql", "content-type", "set-cookie"] {
            h.insert(HeaderName::from_static(k), "1".parse().unwrap());
        }
        r.filter_headers(200, &mut h);
        let mut left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        left.sort();
        assert_eq!(left, ["content-type", "x-total"]);
        assert_eq!(r.redacted_declared(&redact), ["secret_answer"]);
    }

    #[test]
    fn validation_refuses_nonconforming_answers() {
        let doc = json!({"openapi": "3.0.3"});
        let op = json!({"responses": {"200": {"content": {"application/json": {"schema": {
            "type": "object", "required": ["id"], "properties": {"id": {"type": "string"}, "n": {"type": "integer", "nullable": true}}}}}}}});
        let r = Responses::compile(&doc, &op, false, true, &mut Vec::new()).unwrap();
        let none = Redaction::default();
        assert!(
            r.filter_body(200, true, br#"{"id":"a","n":null}"#, &none)
                .is_ok()
        );
        assert!(matches!(
            r.filter_body(200, true, br#"{"n":1}"#, &none),
            Err(Violation::Schema(_))
        ));
        assert!(matches!(
            r.filter_body(200, true, b"<html>", &none),
            Err(Violation::NotJson)
        ));
        assert!(matches!(
            r.filter_body(200, false, b"<html>", &none),
            Err(Violation::NotJson)
        ));
        // a 2xx the document does not declare
        assert!(matches!(
            r.filter_body(201, true, br#"{"id":"a"}"#, &none),
            Err(Violation::UndeclaredStatus)
        ));
    }
}
