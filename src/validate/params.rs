//! Path, query and header parameters of an operation, and pagination caps.
//!
//! A parameter's raw text is turned into JSON by its schema's type (an
//! `integer` parameter `"12"` becomes `12`; `"x"` stays a string and fails
//! the type check), then checked against the schema compiled at load. A
//! scalar query parameter given twice is refused (HTTP parameter pollution:
//! the gateway and the upstream might read different copies).

use std::borrow::Cow;

use serde_json::Value;

use super::FieldError;

/// Where a parameter is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loc {
    /// A `{name}` segment of the path.
    Path,
    /// The query string.
    Query,
    /// A request header.
    Header,
}

impl Loc {
    fn as_str(self) -> &'static str {
        match self {
            Self::Path => "path",
            Self::Query => "query",
            Self::Header => "header",
        }
    }
}

/// How raw text becomes JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Str,
    Int,
    Num,
    Bool,
    /// Items of this kind, separated by the byte (query: also repeated).
    Array(Box<Kind>, u8),
}

/// One compiled parameter.
#[derive(Debug)]
pub struct Param {
    /// Its name (lower case for headers).
    pub name: String,
    /// Where it is.
    pub loc: Loc,
    required: bool,
    kind: Kind,
    /// Query arrays: `?a=1&a=2` (true) or `?a=1,2` (false).
    explode: bool,
    validator: Option<Box<jsonschema::Validator>>,
}

/// Compiles the parameters of an operation (its own and its path item's; the
/// operation's win). `notes` receives what is not validated and why.
pub fn compile(
    doc: &Value,
    item: &Value,
    op: &Value,
    notes: &mut Vec<String>,
) -> Result<Vec<Param>, (String, String)> {
    let mut merged: Vec<(String, &Value)> = Vec::new();
    for (at, list) in [("/parameters", item), ("/parameters", op)] {
        let Some(list) = list.get("parameters") else {
            continue;
        };
        let list = list
            .as_array()
            .ok_or((at.to_owned(), "must be a list".to_owned()))?;
        for (i, p) in list.iter().enumerate() {
            let p = crate::openapi::deref(doc, p).map_err(|m| (format!("{at}/{i}"), m))?;
            let name = p.get("name").and_then(Value::as_str).unwrap_or("");
            let loc = p.get("in").and_then(Value::as_str).unwrap_or("");
            let key = format!("{loc}:{name}");
            merged.retain(|(k, _)| *k != key);
            merged.push((key, p));
        }
    }
    let mut out = Vec::new();
    for (key, p) in merged {
        let at = || format!("/parameters ({key})");
        let name = p.get("name").and_then(Value::as_str).unwrap_or("");
        if name.is_empty() {
            return Err((at(), "a parameter needs a name".into()));
        }
        let loc = match p.get("in").and_then(Value::as_str) {
            Some("path") => Loc::Path,
            Some("query") => Loc::Query,
            Some("header") => Loc::Header,
            Some("cookie") => {
                notes.push(format!("cookie parameter {name:?} is not validated"));
                continue;
            }
            other => return Err((at(), format!("`in` {other:?} is not a parameter location"))),
        };
        // OpenAPI: these header parameters are ignored (other fields describe them).
        if loc == Loc::Header
            && ["accept", "content-type", "authorization"].contains(&&*name.to_ascii_lowercase())
        {
            continue;
        }
        let required =
            loc == Loc::Path || p.get("required").and_then(Value::as_bool).unwrap_or(false);
        let Some(schema) = p.get("schema") else {
            notes.push(format!(
                "parameter {name:?} has no schema (`content` is not supported): presence only"
            ));
            out.push(Param {
                name: lower(name, loc),
                loc,
                required,
                kind: Kind::Str,
                explode: true,
                validator: None,
            });
            continue;
        };
        let style = p.get("style").and_then(Value::as_str).unwrap_or(match loc {
            Loc::Query => "form",
            _ => "simple",
        });
        let explode = p
            .get("explode")
            .and_then(Value::as_bool)
            .unwrap_or(style == "form");
        let resolved = crate::openapi::deref(doc, schema).map_err(|m| (at(), m))?;
        let sep = match style {
            "form" | "simple" => b',',
            "spaceDelimited" => b' ',
            "pipeDelimited" => b'|',
            other => {
                notes.push(format!(
                    "parameter {name:?}: style {other:?} is not supported; not validated"
                ));
                continue;
            }
        };
        let kind = match type_of(resolved) {
            "object" => {
                notes.push(format!(
                    "parameter {name:?}: object parameters are not supported; not validated"
                ));
                continue;
            }
            "array" => {
                let items = resolved
                    .get("items")
                    .map(|i| crate::openapi::deref(doc, i))
                    .transpose()
                    .map_err(|m| (at(), m))?;
                Kind::Array(Box::new(scalar(items.map_or("string", type_of))), sep)
            }
            t => scalar(t),
        };
        let validator =
            super::build(doc, schema.clone(), super::Mode::Value).map_err(|m| (at(), m))?;
        out.push(Param {
            name: lower(name, loc),
            loc,
            required,
            kind,
            explode,
            validator: Some(Box::new(validator)),
        });
    }
    Ok(out)
}

fn lower(name: &str, loc: Loc) -> String {
    if loc == Loc::Header {
        name.to_ascii_lowercase()
    } else {
        name.to_owned()
    }
}

/// The first non-null `type` of a schema (`"string"` when unsaid).
fn type_of(s: &Value) -> &str {
    match s.get("type") {
        Some(Value::String(t)) => t,
        Some(Value::Array(list)) => list
            .iter()
            .filter_map(Value::as_str)
            .find(|t| *t != "null")
            .unwrap_or("string"),
        _ => "string",
    }
}

fn scalar(t: &str) -> Kind {
    match t {
        "integer" => Kind::Int,
        "number" => Kind::Num,
        "boolean" => Kind::Bool,
        _ => Kind::Str,
    }
}

/// Raw text as the JSON the schema expects; text that is not of the type
/// stays a string (and fails the type check).
fn coerce(kind: &Kind, raw: &str) -> Value {
    match kind {
        Kind::Int => raw
            .parse::<i64>()
            .map(Value::from)
            .unwrap_or_else(|_| Value::from(raw)),
        Kind::Num => match raw.parse::<f64>() {
            Ok(f) if f.is_finite() && !raw.contains(['n', 'N', 'i', 'I']) => Value::from(f),
            _ => Value::from(raw),
        },
        Kind::Bool => match raw {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => Value::from(raw),
        },
        Kind::Str | Kind::Array(..) => Value::from(raw),
    }
}

/// Query pairs, percent-decoded (`+` is a space).
pub fn query_pairs(query: Option<&str>) -> Vec<(Cow<'_, str>, Cow<'_, str>)> {
    query
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(s: &str) -> Cow<'_, str> {
    if s.contains(['%', '+']) {
        Cow::Owned(crate::canon::decode_segment(&s.replace('+', " ")))
    } else {
        Cow::Borrowed(s)
    }
}

const AMBIGUOUS: &str = "another spelling of this parameter (case, [] or . suffix) is refused";

/// `key` is another spelling of `name` that some frameworks read as it:
/// other letter case (ASP.NET), a `[..]` or `.` suffix (qs, Rails, PHP).
fn shadows(key: &str, name: &str) -> bool {
    if key == name || key.len() < name.len() {
        return false;
    }
    let (Some(head), Some(rest)) = (key.get(..name.len()), key.get(name.len()..)) else {
        return false;
    };
    head.eq_ignore_ascii_case(name) && (rest.is_empty() || rest.starts_with(['[', '.']))
}

/// Checks every parameter; failures are added to `errors`.
pub fn check(
    params: &[Param],
    path: &[(String, String)],
    query: Option<&str>,
    headers: &http::HeaderMap,
    errors: &mut Vec<FieldError>,
) {
    let pairs = if params.iter().any(|p| p.loc == Loc::Query) {
        query_pairs(query)
    } else {
        Vec::new()
    };
    for p in params {
        let fail = |errors: &mut Vec<FieldError>, pointer: String, message: String| {
            errors.push(FieldError {
                pointer,
                message,
                location: Some(p.loc.as_str()),
                name: Some(crate::access_log::truncate(&p.name, 64).to_owned()),
            });
        };
        if p.loc == Loc::Query && pairs.iter().any(|(k, _)| shadows(k, &p.name)) {
            fail(errors, String::new(), AMBIGUOUS.into());
            continue;
        }
        let raw: Vec<Cow<'_, str>> = match p.loc {
            Loc::Path => path
                .iter()
                .filter(|(n, _)| *n == p.name)
                .map(|(_, v)| Cow::Owned(crate::canon::decode_segment(v)))
                .collect(),
            Loc::Query => pairs
                .iter()
                .filter(|(n, _)| *n == p.name)
                .map(|(_, v)| v.clone())
                .collect(),
            Loc::Header => headers
                .get_all(p.name.as_str())
                .iter()
                .map(|v| String::from_utf8_lossy(v.as_bytes()))
                .collect(),
        };
        if raw.is_empty() {
            if p.required {
                fail(errors, String::new(), "this parameter is required".into());
            }
            continue;
        }
        let value = match &p.kind {
            Kind::Array(item, sep) => {
                let parts: Vec<Value> = if p.loc == Loc::Query && p.explode {
                    raw.iter().map(|r| coerce(item, r)).collect()
                } else if raw.len() > 1 && p.loc == Loc::Query {
                    fail(errors, String::new(), "given more than once".into());
                    continue;
                } else {
                    raw.iter()
                        .flat_map(|r| r.split(*sep as char))
                        .map(|r| coerce(item, r.trim_matches(' ')))
                        .collect()
                };
                Value::Array(parts)
            }
            kind => {
                if raw.len() > 1 && p.loc != Loc::Header {
                    fail(errors, String::new(), "given more than once".into());
                    continue;
                }
                let joined;
                let text = if raw.len() > 1 {
                    joined = raw.join(", ");
                    joined.as_str()
                } else {
                    raw.first().map_or("", |r| r.as_ref())
                };
                coerce(kind, text)
            }
        };
        if let Some(v) = &p.validator {
            for e in v.iter_errors(&value).take(super::MAX_ERRORS) {
                fail(
                    errors,
                    e.instance_path().as_str().to_owned(),
                    super::message(&e),
                );
            }
        }
    }
}

/// `pagination = { param = "limit", max = 100, default = 20 }`: a page size
/// above `max` is clamped (or refused), a missing one gets the default, so a
/// list never comes back unbounded.
#[derive(Debug, Clone)]
pub struct Pagination {
    /// The query parameter.
    pub param: String,
    /// Largest page size passed on.
    pub max: u64,
    /// Added when the request has none.
    pub default: Option<u64>,
    /// Refuse a larger size (400) instead of clamping it.
    pub refuse: bool,
}

impl Pagination {
    /// The query to send instead, when it changes.
    pub fn apply(&self, query: Option<&str>) -> Result<Option<String>, FieldError> {
        let fail = |m: String| FieldError {
            pointer: String::new(),
            message: m,
            location: Some("query"),
            name: Some(self.param.clone()),
        };
        let q = query.unwrap_or("");
        let mut found: Option<(usize, u64, &str)> = None;
        for (i, pair) in q.split('&').enumerate() {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let key = decode(k);
            if key != self.param.as_str() {
                if shadows(&key, &self.param) {
                    return Err(fail(AMBIGUOUS.into()));
                }
                continue;
            }
            if found.is_some() {
                return Err(fail("given more than once".into()));
            }
            let n = decode(v)
                .parse::<u64>()
                .map_err(|_| fail("must be a whole number".into()))?;
            found = Some((i, n, pair));
        }
        match found {
            Some((_, n, _)) if n > self.max && self.refuse => {
                Err(fail(format!("must be at most {}", self.max)))
            }
            Some((at, n, raw)) => {
                // Sent on in one spelling only (`limit=0%35` or `li%6dit=5`
                // would read differently to an upstream that does not decode).
                let canonical = format!("{}={}", self.param, n.min(self.max));
                if raw == canonical {
                    return Ok(None);
                }
                let pairs: Vec<&str> = q
                    .split('&')
                    .enumerate()
                    .map(|(i, pair)| if i == at { canonical.as_str() } else { pair })
                    .collect();
                Ok(Some(pairs.join("&")))
            }
            None => Ok(self.default.map(|d| {
                if q.is_empty() {
                    format!("{}={d}", self.param)
                } else {
                    format!("{q}&{}={d}", self.param)
                }
            })),
        }
    }
}

/// Compiles `pagination = {...}`; `schema` is the parameter's schema when
/// the document declares it (its `maximum` and `default` fill the gaps).
pub fn pagination(
    cfg: &crate::config::file::PaginationCfg,
    schema: Option<&Value>,
) -> Result<Pagination, String> {
    let from_schema = |k: &str| schema.and_then(|s| s.get(k)).and_then(Value::as_u64);
    let max = cfg
        .max
        .or_else(|| from_schema("maximum"))
        .ok_or("set max (or `maximum` in the parameter's schema)")?;
    if max == 0 {
        return Err("max must be at least 1".into());
    }
    let default = cfg.default.or_else(|| from_schema("default"));
    if default.is_some_and(|d| d > max) {
        return Err("default is above max".into());
    }
    let refuse = match cfg.over_max.as_str() {
        "clamp" => false,
        "refuse" => true,
        other => return Err(format!("over_max {other:?}: \"clamp\" or \"refuse\"")),
    };
    if cfg.param.is_empty()
        || !cfg
            .param
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
    {
        return Err("param must name the query parameter (letters, digits, - . _ ~)".into());
    }
    Ok(Pagination {
        param: cfg.param.clone(),
        max,
        default,
        refuse,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pagination_clamps_refuses_and_defaults() {
        let p = Pagination {
            param: "limit".into(),
            max: 100,
            default: Some(20),
            refuse: false,
        };
        assert_eq!(p.apply(Some("limit=50")).ok(), Some(None));
        // one spelling only reaches the upstream
        assert_eq!(
            p.apply(Some("li%6dit=5&a=1")).ok(),
            Some(Some("limit=5&a=1".into()))
        );
        assert_eq!(
            p.apply(Some("limit=0%35")).ok(),
            Some(Some("limit=5".into()))
        );
        for other in [
            "limit[]=100000",
            "LIMIT=100000",
            "limit.x=1",
            "Limit=3&limit=2",
        ] {
            assert!(p.apply(Some(other)).is_err(), "{other}");
        }
        assert!(shadows("Sort", "sort") && shadows("sort[]", "sort") && !shadows("sorted", "sort"));
        assert_eq!(
            p.apply(Some("a=1&limit=100000&b=2")).ok(),
            Some(Some("a=1&limit=100&b=2".into()))
        );
        assert_eq!(p.apply(None).ok(), Some(Some("limit=20".into())));
        assert_eq!(p.apply(Some("a=1")).ok(), Some(Some("a=1&limit=20".into())));
        assert!(p.apply(Some("limit=1&limit=2")).is_err());
        assert!(p.apply(Some("limit=-1")).is_err());
        assert!(p.apply(Some("limit=abc")).is_err());
        let strict = Pagination {
            refuse: true,
            ..p.clone()
        };
        assert!(strict.apply(Some("limit=101")).is_err());
    }

    #[test]
    fn parameters_are_typed_and_checked() {
        let doc = serde_json::json!({"openapi": "3.1.0", "components": {"parameters": {
            "Id": {"name": "id", "in": "path", "required": true, "schema": {"type": "string", "format": "uuid"}},
        }}});
        let item = serde_json::json!({"parameters": [{"$ref": "#/components/parameters/Id"}]});
        let op = serde_json::json!({"parameters": [
            {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100}},
            {"name": "sort", "in": "query", "required": true, "schema": {"type": "string", "enum": ["asc", "desc"]}},
            {"name": "tag", "in": "query", "schema": {"type": "array", "maxItems": 2, "items": {"type": "string", "pattern": "^[a-z]+$"}}},
            {"name": "X-Trace", "in": "header", "schema": {"type": "string", "maxLength": 8}},
            {"name": "session", "in": "cookie", "schema": {"type": "string"}},
        ]});
        let mut notes = Vec::new();
        let params = compile(&doc, &item, &op, &mut notes).unwrap();
        assert_eq!(params.len(), 5);
        assert_eq!(notes.len(), 1, "{notes:?}");
        let id = vec![(
            "id".to_string(),
            "6f1c2a9e-0b1d-4c8e-9a8e-2b7f1f0c9d11".to_string(),
        )];
        let run = |path: &[(String, String)], q: &str, h: &[(&str, &str)]| {
            let mut map = http::HeaderMap::new();
            for (k, v) in h {
                map.append(
                    http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    v.parse().unwrap(),
                );
            }
            let mut errors = Vec::new();
            check(&params, path, Some(q), &map, &mut errors);
            errors
        };
        assert!(run(&id, "sort=asc&limit=10&tag=a&tag=b", &[("x-trace", "abc")]).is_empty());
        let e = run(&id, "limit=0", &[]);
        assert_eq!(e.len(), 2, "{e:?}"); // limit minimum, sort missing
        assert!(e.iter().all(|e| e.location == Some("query")));
        let e = run(&id, "sort=up&limit=ten", &[]);
        assert_eq!(e.len(), 2, "{e:?}");
        let e = run(&id, "sort=asc&sort=desc", &[]);
        assert!(e[0].message.contains("more than once"), "{e:?}");
        let e = run(&id, "sort=asc&tag=a&tag=B&tag=c", &[]);
        assert_eq!(e.len(), 2, "{e:?}"); // too many, and a pattern
        let e = run(&id, "sort=asc", &[("x-trace", "123456789")]);
        assert_eq!(e[0].location, Some("header"));
        let bad = vec![("id".to_string(), "not-a-uuid".to_string())];
        let e = run(&bad, "sort=asc", &[]);
        assert_eq!(e[0].location, Some("path"));
        assert!(!e[0].message.contains("not-a-uuid"), "{e:?}");
    }
}
