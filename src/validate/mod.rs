//! Stage 8: request validation against the operation's contract (routes
//! made from an OpenAPI document, see `openapi.rs`).
//!
//! * A JSON request body is parsed strictly — a duplicate key, invalid
//!   UTF-8, nesting deeper than the limit or a number that would not be
//!   checked exactly is refused, so the gateway and the upstream can never read different
//!   values — and validated against the operation's schema, compiled once at
//!   load (`jsonschema`, without remote references).
//! * Objects are closed (mass assignment): where the document does not say
//!   `additionalProperties`, properties it does not declare are refused; on
//!   writes, `readOnly` properties are refused too.
//! * The body must be JSON where the operation takes JSON (415 otherwise);
//!   an operation without a request body takes none (400).
//! * Path, query and header parameters are checked against their schemas
//!   (`params.rs`); a page size above the cap is clamped or refused.
//! * Fields that need a permission to set (`restricted_fields`) are refused
//!   for callers without it; with `on_forbidden_field = "strip"` such fields,
//!   undeclared and read-only ones are removed instead and the rest is
//!   forwarded.
//! * Failures answer 400 (or 422) problem+json with an `errors` list of
//!   `{pointer, message}` (and `in`/`name` for parameters); messages never
//!   repeat the submitted values.

pub mod params;

pub use params::pagination;

use serde::de::{DeserializeSeed, Deserializer, Error as _, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use crate::reject::Rejection;

/// Most validation errors listed in one answer.
const MAX_ERRORS: usize = 20;

/// What an operation accepts as its request body.
#[derive(Debug)]
pub enum BodyRule {
    /// Anything (a `[[routes]]` entry with a contract only for pagination
    /// or responses).
    Any,
    /// No request body (the operation declares none).
    None,
    /// A JSON body validated against the schema.
    Json {
        /// The compiled schema.
        validator: Box<jsonschema::Validator>,
        /// `requestBody.required`.
        required: bool,
    },
    /// A body in media types the gateway does not validate: passed on, but
    /// only in one of the declared types (lower case; `*/*` and `type/*`
    /// allowed as declared).
    Unchecked(Vec<String>),
}

/// An operation's compiled contract.
#[derive(Debug)]
pub struct Contract {
    /// The body rule.
    pub body: BodyRule,
    /// Deepest nesting accepted in a JSON body.
    pub max_depth: usize,
    /// Longest string or key in a JSON body, in bytes.
    pub max_string: usize,
    /// Most items in one array of a JSON body.
    pub max_items: usize,
    /// Path, query and header parameters.
    pub params: Vec<params::Param>,
    /// The page-size cap.
    pub pagination: Option<params::Pagination>,
    /// Body fields only some callers may set: `(JSON pointer, any of these
    /// permissions)`.
    pub restricted: Vec<(String, Vec<crate::authz::Permission>)>,
    /// Remove forbidden, undeclared and read-only fields instead of refusing.
    pub strip: bool,
    /// Answer validation failures with 422 instead of 400.
    pub unprocessable: bool,
    /// Response filtering (stage 10c).
    pub responses: Option<crate::filter::Responses>,
    /// Headers every answer of the operation carries (`Deprecation`,
    /// `Sunset`, `Link`).
    pub notices: Vec<(http::HeaderName, http::HeaderValue)>,
}

/// One failed rule: where, and what (never the value).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FieldError {
    /// JSON pointer into the body or the parameter's value (`/tags/3`; `""`
    /// for the whole of it).
    pub pointer: String,
    /// The rule that failed.
    pub message: String,
    /// For a parameter: `path`, `query` or `header`.
    #[serde(rename = "in", skip_serializing_if = "Option::is_none")]
    pub location: Option<&'static str>,
    /// For a parameter: its name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl FieldError {
    /// An error in the body.
    pub fn body(pointer: &str, message: &str) -> Self {
        Self {
            // Keys are the client's own: never repeated at length.
            pointer: crate::access_log::truncate(pointer, 128).to_owned(),
            message: message.to_owned(),
            location: None,
            name: None,
        }
    }
}

impl Contract {
    /// A contract with only a body rule.
    pub fn with_body(body: BodyRule, max_depth: usize) -> Self {
        Self {
            body,
            max_depth,
            max_string: usize::MAX,
            max_items: usize::MAX,
            params: Vec::new(),
            pagination: None,
            restricted: Vec::new(),
            strip: false,
            unprocessable: false,
            responses: None,
            notices: Vec::new(),
        }
    }

    /// Whether the body must be read (and held) to check it.
    pub fn reads_body(&self) -> bool {
        matches!(self.body, BodyRule::Json { .. })
    }

    /// The failures as the configured rejection (400 or 422).
    pub fn reject(&self, errors: Vec<FieldError>) -> Rejection {
        if self.unprocessable {
            Rejection::Unprocessable(errors)
        } else {
            Rejection::Invalid(errors)
        }
    }

    /// Parameters and the page size: returns the query to forward instead,
    /// when the page size was clamped or defaulted.
    pub fn check_params(
        &self,
        path: &[(String, String)],
        query: Option<&str>,
        headers: &http::HeaderMap,
    ) -> Result<Option<String>, Rejection> {
        let rewritten = match &self.pagination {
            Some(p) => p.apply(query).map_err(|e| self.reject(vec![e]))?,
            None => None,
        };
        if self.params.is_empty() {
            return Ok(rewritten);
        }
        let mut errors = Vec::new();
        let q = rewritten.as_deref().or(query);
        params::check(&self.params, path, q, headers, &mut errors);
        if errors.is_empty() {
            Ok(rewritten)
        } else {
            errors.truncate(MAX_ERRORS);
            Err(self.reject(errors))
        }
    }

    /// The checks that need only the head: body presence and media type.
    /// `streaming`: the body is not known to be empty (an HTTP/2 request may
    /// send data without a length header).
    pub fn check_head(&self, h: &http::HeaderMap, streaming: bool) -> Result<(), Rejection> {
        let has_body = streaming
            || h.contains_key(http::header::TRANSFER_ENCODING)
            || h.get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .is_some_and(|n| n > 0);
        match &self.body {
            BodyRule::None if has_body => Err(Rejection::BadRequest(
                "this operation takes no request body",
            )),
            BodyRule::Json { .. } if has_body && !is_json(h) => {
                Err(Rejection::UnsupportedMediaType)
            }
            BodyRule::Unchecked(types) if has_body && !declared(h, types) => {
                Err(Rejection::UnsupportedMediaType)
            }
            _ => Ok(()),
        }
    }

    /// Checks a read JSON body. `may` answers whether the caller holds one
    /// of the permissions a restricted field needs. Returns the body to
    /// forward instead when fields were stripped.
    pub fn check_body(
        &self,
        bytes: &[u8],
        may: &dyn Fn(&[crate::authz::Permission]) -> bool,
    ) -> Result<Option<Vec<u8>>, Rejection> {
        let BodyRule::Json {
            validator,
            required,
        } = &self.body
        else {
            return Ok(None);
        };
        if bytes.is_empty() {
            return if *required {
                Err(self.reject(vec![FieldError::body(
                    "",
                    "a JSON request body is required",
                )]))
            } else {
                Ok(None)
            };
        }
        let value = parse_bounded(bytes, self.max_depth, self.max_string, self.max_items)
            .map_err(|m| self.reject(vec![FieldError::body("", &m)]))?;
        // Fields the caller may not set, then the schema.
        let forbidden: Vec<String> = self
            .restricted
            .iter()
            .filter(|(ptr, needs)| value.pointer(ptr).is_some() && !may(needs))
            .map(|(ptr, _)| ptr.clone())
            .collect();
        if self.strip {
            return self.strip_body(validator, value, &forbidden);
        }
        let mut all: Vec<FieldError> = forbidden
            .iter()
            .map(|p| FieldError::body(p, "you may not set this field"))
            .collect();
        let v = Verdict::of(validator, &value);
        all.extend(
            v.report()
                .into_iter()
                .filter(|e| !forbidden.contains(&e.pointer)),
        );
        if all.is_empty() {
            Ok(None)
        } else {
            all.truncate(MAX_ERRORS);
            Err(self.reject(all))
        }
    }

    /// `on_forbidden_field = "strip"`: removes forbidden, read-only and
    /// undeclared fields (in that order: a failing part of a composition
    /// hides what it declares), then checks the rest.
    fn strip_body(
        &self,
        validator: &jsonschema::Validator,
        mut value: Value,
        forbidden: &[String],
    ) -> Result<Option<Vec<u8>>, Rejection> {
        let mut changed = !forbidden.is_empty();
        for ptr in forbidden {
            remove(&mut value, ptr);
        }
        for _ in 0..8 {
            let v = Verdict::of(validator, &value);
            let strip = if !v.other.is_empty() {
                return Err(self.reject(v.report()));
            } else if !v.read_only.is_empty() {
                v.read_only
            } else if !v.undeclared.is_empty() {
                v.undeclared
            } else if changed {
                return serde_json::to_vec(&value)
                    .map(Some)
                    .map_err(|_| Rejection::Internal);
            } else {
                return Ok(None);
            };
            for ptr in &strip {
                remove(&mut value, ptr);
            }
            changed = true;
        }
        Err(self.reject(Verdict::of(validator, &value).report()))
    }
}

const NOT_ALLOWED: &str = "this field cannot be set (not in the schema, or read-only)";

/// The schema's verdict on a body.
struct Verdict {
    /// Fields whose schema is `false` (read-only on writes).
    read_only: Vec<String>,
    /// Fields no schema declares.
    undeclared: Vec<String>,
    /// Every other failure.
    other: Vec<FieldError>,
}

impl Verdict {
    fn of(v: &jsonschema::Validator, value: &Value) -> Self {
        use jsonschema::error::ValidationErrorKind as K;
        let mut out = Self {
            read_only: Vec::new(),
            undeclared: Vec::new(),
            other: Vec::new(),
        };
        for e in v.iter_errors(value).take(MAX_ERRORS * 2) {
            let at = e.instance_path().as_str();
            match e.kind() {
                K::AdditionalProperties { unexpected }
                | K::UnevaluatedProperties { unexpected } => {
                    for name in unexpected {
                        out.undeclared
                            .push(format!("{at}/{}", crate::openapi::escape(name)));
                    }
                }
                K::FalseSchema => out.read_only.push(at.to_owned()),
                _ => out.other.push(FieldError::body(at, &message(&e))),
            }
        }
        out.undeclared.sort();
        out.undeclared.dedup();
        out
    }

    /// What to tell the client. When a part of a composition fails, the
    /// fields it declares count as undeclared too (JSON Schema drops the
    /// annotations of failing parts), so undeclared fields are reported only
    /// when nothing else failed.
    fn report(self) -> Vec<FieldError> {
        let mut all = self.other;
        all.extend(
            self.read_only
                .iter()
                .map(|p| FieldError::body(p, NOT_ALLOWED)),
        );
        if all.is_empty() {
            all.extend(
                self.undeclared
                    .iter()
                    .map(|p| FieldError::body(p, NOT_ALLOWED)),
            );
        }
        all.truncate(MAX_ERRORS);
        all
    }
}

/// Removes the member a JSON pointer names (objects only).
fn remove(v: &mut Value, ptr: &str) {
    let Some((parent, last)) = ptr.rsplit_once('/') else {
        return;
    };
    let key = last.replace("~1", "/").replace("~0", "~");
    if let Some(Value::Object(m)) = v.pointer_mut(parent) {
        m.remove(&key);
    }
}

/// A validation error without the submitted value, bounded in length.
pub(crate) fn message(e: &jsonschema::ValidationError<'_>) -> String {
    use jsonschema::error::ValidationErrorKind as K;
    let m = match e.kind() {
        K::FalseSchema => NOT_ALLOWED.to_owned(),
        _ => e.masked_with("the value").to_string(),
    };
    crate::access_log::truncate(&m, 200).to_owned()
}

/// The request's media type is one the operation declares.
fn declared(h: &http::HeaderMap, types: &[String]) -> bool {
    let Some(t) = h
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|t| t.trim().to_ascii_lowercase())
    else {
        return false;
    };
    types.iter().any(|d| {
        d == "*/*"
            || *d == t
            || d.strip_suffix("/*")
                .is_some_and(|major| t.split('/').next() == Some(major))
    })
}

/// The message's media type is JSON.
pub fn is_json(h: &http::HeaderMap) -> bool {
    h.get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| json_media(&t.trim().to_ascii_lowercase()))
}

/// `application/json` or `application/*+json` (lower case).
pub fn json_media(t: &str) -> bool {
    t == "application/json" || (t.starts_with("application/") && t.ends_with("+json"))
}

/// Parses JSON refusing duplicate keys and nesting deeper than `max_depth`
/// (and, as `serde_json` does, invalid UTF-8 and trailing data). Numbers
/// that do not fit a 64-bit integer or a finite double are refused.
pub fn parse_strict(bytes: &[u8], max_depth: usize) -> Result<Value, String> {
    parse_bounded(bytes, max_depth, usize::MAX, usize::MAX)
}

/// [`parse_strict`] with bounds on string (and key) length in bytes and on
/// array length.
pub fn parse_bounded(
    bytes: &[u8],
    max_depth: usize,
    max_string: usize,
    max_items: usize,
) -> Result<Value, String> {
    exact_numbers(bytes)?;
    Strict {
        depth: max_depth,
        max_string,
        max_items,
    }
    .parse(bytes)
}

/// Parses JSON refusing duplicate keys and nesting deeper than `max_depth`
/// (answers: numbers are taken as they come).
pub fn parse_unique(bytes: &[u8], max_depth: usize) -> Result<Value, String> {
    Strict {
        depth: max_depth,
        max_string: usize::MAX,
        max_items: usize::MAX,
    }
    .parse(bytes)
}

/// Refuses numbers the checked value would not represent exactly: an
/// integer beyond 64 bits, or a decimal with more than 15 significant
/// digits (what a double always holds). Otherwise the schema would check
/// the nearest double while an upstream parsing decimals exactly reads
/// another number.
fn exact_numbers(bytes: &[u8]) -> Result<(), String> {
    let mut i = 0;
    let mut in_string = false;
    while let Some(&b) = bytes.get(i) {
        if in_string {
            match b {
                b'\\' => i += 1,
                b'"' => in_string = false,
                _ => {}
            }
            i += 1;
            continue;
        }
        if b == b'"' {
            in_string = true;
            i += 1;
            continue;
        }
        if b == b'-' || b.is_ascii_digit() {
            let start = i;
            while bytes.get(i).is_some_and(|c| {
                c.is_ascii_digit() || matches!(c, b'-' | b'+' | b'.' | b'e' | b'E')
            }) {
                i += 1;
            }
            let token = bytes.get(start..i).unwrap_or_default();
            let decimal = token.iter().any(|c| matches!(c, b'.' | b'e' | b'E'));
            let ok = if decimal {
                let mantissa = token
                    .split(|c| matches!(c, b'e' | b'E'))
                    .next()
                    .unwrap_or_default();
                let digits: Vec<u8> = mantissa
                    .iter()
                    .copied()
                    .filter(u8::is_ascii_digit)
                    .skip_while(|d| *d == b'0')
                    .collect();
                let significant =
                    digits.len() - digits.iter().rev().take_while(|d| **d == b'0').count();
                significant <= 15
            } else {
                let s = std::str::from_utf8(token).unwrap_or("");
                s.parse::<i64>().is_ok() || s.parse::<u64>().is_ok()
            };
            if !ok {
                return Err("not valid JSON: a number with more precision than can be checked (at most 15 significant digits, or a 64-bit integer)".into());
            }
            continue;
        }
        i += 1;
    }
    Ok(())
}

fn short(e: &serde_json::Error) -> String {
    // serde_json's messages name the position, never the content.
    format!("not valid JSON: {e}")
}

#[derive(Clone, Copy)]
struct Strict {
    depth: usize,
    /// Longest string (or key), in bytes.
    max_string: usize,
    /// Most items in one array.
    max_items: usize,
}

impl Strict {
    /// The whole of `bytes` as one JSON value (trailing data refused).
    fn parse(self, bytes: &[u8]) -> Result<Value, String> {
        let mut de = serde_json::Deserializer::from_slice(bytes);
        let v = self.deserialize(&mut de).map_err(|e| short(&e))?;
        de.end().map_err(|e| short(&e))?;
        Ok(v)
    }

    fn deeper<E: serde::de::Error>(self) -> Result<Self, E> {
        let depth = self
            .depth
            .checked_sub(1)
            .ok_or_else(|| E::custom("nested too deep"))?;
        Ok(Self { depth, ..self })
    }

    fn string<E: serde::de::Error>(self, len: usize) -> Result<(), E> {
        if len > self.max_string {
            return Err(E::custom(format!(
                "a string longer than {} bytes",
                self.max_string
            )));
        }
        Ok(())
    }
}

impl<'de> DeserializeSeed<'de> for Strict {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Strict {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JSON")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Value, E> {
        serde_json::Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("a number out of range"))
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Value, E> {
        self.string(v.len())?;
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Value, E> {
        self.string(v.len())?;
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let inner = self.deeper()?;
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(inner)? {
            if out.len() == self.max_items {
                return Err(A::Error::custom(format!(
                    "an array with more than {} items",
                    self.max_items
                )));
            }
            out.push(v);
        }
        Ok(Value::Array(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let inner = self.deeper()?;
        let mut out = Map::new();
        while let Some(k) = map.next_key::<String>()? {
            self.string(k.len())?;
            let v = map.next_value_seed(inner)?;
            if out.insert(k, v).is_some() {
                // The name is the client's own; it is not repeated.
                return Err(A::Error::custom("a duplicate key in an object"));
            }
        }
        Ok(Value::Object(out))
    }
}

/// Compiles the request-body rule of an operation. `doc` is the whole
/// document (for `#/components/...` references); `write` marks POST, PUT
/// and PATCH (where `readOnly` properties are refused).
pub fn compile_body(doc: &Value, op: &Value, write: bool) -> Result<BodyRule, String> {
    let Some(rb) = op.get("requestBody") else {
        return Ok(BodyRule::None);
    };
    let rb = crate::openapi::deref(doc, rb)?;
    let required = rb.get("required").and_then(Value::as_bool).unwrap_or(false);
    let Some(content) = rb.get("content").and_then(Value::as_object) else {
        return Ok(BodyRule::Unchecked(vec!["*/*".into()]));
    };
    let Some(media) = json_content(content) else {
        let types = content.keys().map(|t| t.to_ascii_lowercase()).collect();
        return Ok(BodyRule::Unchecked(types));
    };
    let schema = media.get("schema").cloned().unwrap_or(Value::Bool(true));
    let validator = build(doc, schema, Mode::Request { write })?;
    Ok(BodyRule::Json {
        validator: Box::new(validator),
        required,
    })
}

/// The JSON media type object of a `content` map (request or response).
pub fn json_content(content: &Map<String, Value>) -> Option<&Value> {
    content
        .iter()
        .find(|(t, _)| json_media(&t.to_ascii_lowercase()))
        .map(|(_, media)| media)
}

/// Whether a schema holds a `$ref` anywhere.
fn has_ref(v: &Value, depth: usize) -> bool {
    depth < 128
        && match v {
            Value::Object(m) => m.contains_key("$ref") || m.values().any(|c| has_ref(c, depth + 1)),
            Value::Array(a) => a.iter().any(|c| has_ref(c, depth + 1)),
            _ => false,
        }
}

/// What a schema is compiled for.
#[derive(Debug, Clone, Copy)]
pub enum Mode {
    /// A request body: objects closed; on writes `readOnly` refused.
    Request {
        /// POST, PUT or PATCH.
        write: bool,
    },
    /// A parameter or a response: the schema as written (objects open
    /// unless it closes them).
    Value,
}

/// A validator for `schema` with the document's components beside it; for
/// request bodies, objects closed and (on writes) `readOnly` properties
/// refused.
pub fn build(doc: &Value, mut schema: Value, mode: Mode) -> Result<jsonschema::Validator, String> {
    let (write, closed) = match mode {
        Mode::Request { write } => (write, true),
        Mode::Value => (false, false),
    };
    let openapi_30 = doc
        .get("openapi")
        .and_then(Value::as_str)
        .is_some_and(|v| v.starts_with("3.0"));
    // The components go beside the schema only when it refers to them
    // (each validator owns its copy).
    let original = if has_ref(&schema, 0) {
        doc.get("components").cloned().unwrap_or(Value::Null)
    } else {
        Value::Null
    };
    let mut components = original.clone();
    let t = Tighten {
        components: &original,
        write,
        closed,
        openapi_30,
    };
    if let Some(schemas) = components.get_mut("schemas").and_then(Value::as_object_mut) {
        for s in schemas.values_mut() {
            // Closed where they are used (see `Tighten::child`), not here: a
            // schema may also be one branch of a composition.
            t.apply(s, false);
        }
    }
    t.apply(&mut schema, false);
    // The body's own object is closed here, whatever its schema is made of
    // (a $ref, a composition): what no part of it declares is refused.
    let root = if closed {
        serde_json::json!({
            "allOf": [schema],
            "unevaluatedProperties": false,
            "components": components,
        })
    } else {
        serde_json::json!({ "allOf": [schema], "components": components })
    };
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .should_validate_formats(true)
        .build(&root)
        .map_err(|e| format!("the schema does not compile: {e}"))
}

/// Rewrites a schema for requests: objects closed (mass assignment),
/// `readOnly` properties refused on writes, OpenAPI 3.0's `nullable` mapped.
struct Tighten<'a> {
    components: &'a Value,
    write: bool,
    /// Close objects (request bodies); otherwise only `nullable` is mapped.
    closed: bool,
    openapi_30: bool,
}

impl Tighten<'_> {
    /// `close`: this schema may close itself (false for composition
    /// branches and component roots, which are closed where they are used).
    fn apply(&self, s: &mut Value, close: bool) {
        let Some(obj) = s.as_object_mut() else {
            return;
        };
        if self.openapi_30 && obj.get("nullable") == Some(&Value::Bool(true)) {
            if let Some(Value::String(t)) = obj.get("type").cloned() {
                obj.insert("type".into(), serde_json::json!([t, "null"]));
            }
        }
        let is_object =
            obj.contains_key("properties") || obj.get("type").is_some_and(|t| t == "object");
        if close
            && self.closed
            && is_object
            && !obj.contains_key("$ref")
            && !obj.contains_key("additionalProperties")
            && !obj.contains_key("unevaluatedProperties")
        {
            obj.insert("unevaluatedProperties".into(), Value::Bool(false));
        }
        if let Some(Value::Object(props)) = obj.get_mut("properties") {
            for p in props.values_mut() {
                if self.write && self.read_only(p, 0) {
                    *p = Value::Bool(false);
                } else {
                    self.child(p);
                }
            }
        }
        for key in ["items", "additionalProperties"] {
            if let Some(c) = obj.get_mut(key) {
                self.child(c);
            }
        }
        if let Some(Value::Array(list)) = obj.get_mut("prefixItems") {
            list.iter_mut().for_each(|c| self.child(c));
        }
        for key in ["allOf", "anyOf", "oneOf"] {
            if let Some(Value::Array(list)) = obj.get_mut(key) {
                list.iter_mut().for_each(|c| self.apply(c, false));
            }
        }
    }

    /// A schema in a place of its own (a property, array items): a
    /// reference or a composition is wrapped so that the place is closed
    /// over everything its parts declare.
    fn child(&self, c: &mut Value) {
        let composed = c.as_object().is_some_and(|o| {
            o.contains_key("$ref")
                || o.contains_key("allOf")
                || o.contains_key("anyOf")
                || o.contains_key("oneOf")
        });
        if composed && self.closed {
            self.apply(c, false);
            let inner = std::mem::take(c);
            *c = serde_json::json!({ "allOf": [inner], "unevaluatedProperties": false });
        } else {
            self.apply(c, true);
        }
    }

    /// `readOnly: true` on the schema, behind its `$ref` or in an `allOf`
    /// branch.
    fn read_only(&self, p: &Value, depth: usize) -> bool {
        if depth > 16 {
            return false;
        }
        if p.get("readOnly") == Some(&Value::Bool(true)) {
            return true;
        }
        let target = p
            .get("$ref")
            .and_then(Value::as_str)
            .and_then(|r| r.strip_prefix("#/components"))
            .and_then(|ptr| self.components.pointer(ptr));
        target.is_some_and(|t| self.read_only(t, depth + 1))
            || p.get("allOf")
                .and_then(Value::as_array)
                .is_some_and(|l| l.iter().any(|b| self.read_only(b, depth + 1)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_parsing() {
        assert!(parse_strict(br#"{"a":1,"b":[1,2,{"c":null}]}"#, 32).is_ok());
        assert!(
            parse_strict(br#"{"role":"user","role":"admin"}"#, 32)
                .is_err_and(|m| m.contains("duplicate"))
        );
        assert!(parse_strict(br#"{"a":{"a":1,"a":2}}"#, 32).is_err());
        let deep = "[".repeat(40) + &"]".repeat(40);
        assert!(parse_strict(deep.as_bytes(), 32).is_err_and(|m| m.contains("deep")));
        assert!(parse_strict(deep.as_bytes(), 64).is_ok());
        assert!(parse_strict(b"{\"a\":\"\xff\"}", 32).is_err());
        assert!(parse_strict(b"{} {}", 32).is_err());
        assert!(parse_strict(b"1e999", 32).is_err());
        // sizes: strings (keys too) and arrays
        assert!(parse_bounded(br#"{"a":"12345"}"#, 32, 5, 3).is_ok());
        assert!(parse_bounded(br#"{"a":"123456"}"#, 32, 5, 3).is_err_and(|m| m.contains("longer")));
        assert!(parse_bounded(br#"{"abcdef":1}"#, 32, 5, 3).is_err());
        assert!(parse_bounded(b"[1,2,3]", 32, 5, 3).is_ok());
        assert!(parse_bounded(b"[[1,2,3,4]]", 32, 5, 3).is_err_and(|m| m.contains("items")));
        // numbers the checked value represents exactly, and those it does not
        for ok in [
            "100",
            "-9223372036854775808",
            "18446744073709551615",
            "0.1",
            "1.5e3",
            "123456789012345",
            "0.000001234567890123450",
            "{\"a\":\"1.00000000000000000001\"}",
        ] {
            assert!(parse_strict(ok.as_bytes(), 32).is_ok(), "{ok}");
        }
        for bad in [
            "100.000000000000001",
            "18446744073709551616",
            "-9223372036854775809",
            "1.0000000000000001",
            "[1, 2.12345678901234567]",
        ] {
            assert!(
                parse_strict(bad.as_bytes(), 32).is_err_and(|m| m.contains("precision")),
                "{bad}"
            );
        }
    }

    #[test]
    fn objects_are_closed_and_read_only_refused_on_writes() {
        let doc = serde_json::json!({
            "openapi": "3.0.3",
            "components": {"schemas": {
                "Base": {"type": "object", "properties": {"id": {"type": "string", "readOnly": true}, "name": {"type": "string"}}},
                "User": {"allOf": [{"$ref": "#/components/schemas/Base"}, {"properties": {"bio": {"type": "string", "nullable": true}}}]},
            }},
        });
        let op = serde_json::json!({"requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/User"}}}}});
        let rule = compile_body(&doc, &op, true).unwrap();
        let c = Contract::with_body(rule, 32);
        assert!(
            c.check_body(br#"{"name":"a","bio":null}"#, &|_| true)
                .is_ok()
        );
        let err = |b: &[u8]| match c.check_body(b, &|_| true) {
            Err(Rejection::Invalid(e)) => e,
            other => panic!("{other:?}"),
        };
        let e = err(br#"{"name":"a","role":"admin"}"#);
        assert_eq!(e[0].pointer, "/role", "{e:?}");
        let e = err(br#"{"id":"u-2","name":"a"}"#);
        assert_eq!(e[0].pointer, "/id", "{e:?}");
        let e = err(br#"{"name":"a-very-secret-value-that-must-not-be-echoed","bio":5}"#);
        assert!(!format!("{e:?}").contains("secret-value"), "{e:?}");
        assert!(matches!(
            c.check_body(b"", &|_| true),
            Err(Rejection::Invalid(_))
        ));
    }

    #[test]
    fn bodies_only_in_declared_media_types() {
        let doc = serde_json::json!({"openapi": "3.1.0"});
        let op = serde_json::json!({"requestBody": {"content": {"application/x-www-form-urlencoded": {}, "text/*": {}}}});
        let c = Contract::with_body(compile_body(&doc, &op, true).unwrap(), 32);
        let head = |ct: &str| {
            let mut h = http::HeaderMap::new();
            h.insert(http::header::CONTENT_TYPE, ct.parse().unwrap());
            h.insert(http::header::CONTENT_LENGTH, "5".parse().unwrap());
            c.check_head(&h, false)
        };
        assert!(head("application/x-www-form-urlencoded; charset=utf-8").is_ok());
        assert!(head("text/plain").is_ok());
        assert_eq!(
            head("application/json"),
            Err(Rejection::UnsupportedMediaType)
        );
        // no body at all is fine; an HTTP/2 body without a length is a body
        assert!(c.check_head(&http::HeaderMap::new(), false).is_ok());
        let none = Contract::with_body(BodyRule::None, 32);
        assert!(none.check_head(&http::HeaderMap::new(), true).is_err());
    }

    #[test]
    fn nested_references_and_compositions_are_closed_too() {
        let doc = serde_json::json!({
            "openapi": "3.1.0",
            "components": {"schemas": {
                "Id": {"type": "string", "readOnly": true},
                "Address": {"type": "object", "properties": {"street": {"type": "string"}}},
                "AddressGeo": {"allOf": [{"$ref": "#/components/schemas/Address"}, {"properties": {"lat": {"type": "number"}}}]},
                "Cat": {"type": "object", "required": ["meow"], "properties": {"meow": {"type": "boolean"}}},
                "Dog": {"type": "object", "required": ["bark"], "properties": {"bark": {"type": "boolean"}}},
            }},
        });
        let op = serde_json::json!({"requestBody": {"content": {"application/json": {"schema": {
            "type": "object",
            "properties": {
                "id": {"$ref": "#/components/schemas/Id"},
                "address": {"$ref": "#/components/schemas/Address"},
                "geo": {"$ref": "#/components/schemas/AddressGeo"},
                "pet": {"oneOf": [{"$ref": "#/components/schemas/Cat"}, {"$ref": "#/components/schemas/Dog"}]},
                "list": {"type": "array", "items": {"$ref": "#/components/schemas/Address"}},
            },
        }}}}});
        let c = Contract::with_body(compile_body(&doc, &op, true).unwrap(), 32);
        let ok = |b: &str| match c.check_body(b.as_bytes(), &|_| true) {
            Ok(_) => true,
            Err(e) => {
                eprintln!("{b}: {e:?}");
                false
            }
        };
        assert!(ok(
            r#"{"address":{"street":"x"},"geo":{"street":"y","lat":1.5},"pet":{"meow":true},"list":[{"street":"z"}]}"#
        ));
        assert!(
            !ok(r#"{"address":{"street":"x","verified":true}}"#),
            "a $ref'd object"
        );
        assert!(
            !ok(r#"{"geo":{"street":"y","lat":1,"admin":true}}"#),
            "a composed object"
        );
        assert!(!ok(r#"{"pet":{"meow":true,"isAdmin":true}}"#), "a oneOf");
        assert!(!ok(r#"{"list":[{"street":"z","x":1}]}"#), "array items");
        assert!(!ok(r#"{"id":"u-1"}"#), "readOnly behind a $ref");
    }

    #[test]
    fn restricted_fields_and_strip_mode() {
        let doc = serde_json::json!({"openapi": "3.1.0"});
        let op = serde_json::json!({"requestBody": {"content": {"application/json": {"schema": {
            "type": "object",
            "properties": {"name": {"type": "string"}, "role": {"type": "string"}, "id": {"type": "string", "readOnly": true}},
        }}}}});
        let admin = crate::authz::Permission::parse("users:admin").unwrap();
        let mut c = Contract::with_body(compile_body(&doc, &op, true).unwrap(), 32);
        c.restricted = vec![("/role".into(), vec![admin.clone()])];
        let user = |_: &[crate::authz::Permission]| false;
        let boss = |_: &[crate::authz::Permission]| true;
        // refused, naming the field
        match c.check_body(br#"{"name":"a","role":"admin"}"#, &user) {
            Err(Rejection::Invalid(e)) => {
                assert_eq!(e.len(), 1, "{e:?}");
                assert_eq!(e[0].pointer, "/role");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            c.check_body(br#"{"name":"a","role":"admin"}"#, &boss),
            Ok(None)
        ));
        // 422 when configured
        c.unprocessable = true;
        assert!(matches!(
            c.check_body(br#"{"role":"x"}"#, &user),
            Err(Rejection::Unprocessable(_))
        ));
        // strip: forbidden, undeclared and read-only fields go; the rest passes
        c.strip = true;
        let out = c
            .check_body(
                br#"{"name":"a","role":"admin","isAdmin":true,"id":"u-9"}"#,
                &user,
            )
            .unwrap()
            .unwrap();
        assert_eq!(out, br#"{"name":"a"}"#);
        assert!(matches!(c.check_body(br#"{"name":"a"}"#, &user), Ok(None)));
        // other failures are still refused in strip mode
        assert!(
            c.check_body(br#"{"name":5,"isAdmin":true}"#, &user)
                .is_err()
        );
    }
}
