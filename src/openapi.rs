//! OpenAPI documents as the route inventory: every operation of an
//! `[[apis]]` document becomes a route (compiled like `[[routes]]`), and
//! nothing else is routed, so an endpoint the document does not describe
//! (a forgotten or debug one) answers 404 and never reaches the upstream.
//!
//! * OpenAPI 3.0 and 3.1, YAML or JSON. Local `$ref`s (`#/...`) are
//!   followed; a `$ref` to another document or URL is refused at load.
//! * Authentication comes from the operation's `security` (or the
//!   document's): `http`/`bearer`, `oauth2` and `openIdConnect` schemes map
//!   to `jwt`, `apiKey` in a header or the query to `api_key`, `apiKey` in a
//!   cookie to `session`; `security: []` (or `{}` among the alternatives)
//!   makes the operation public. An operation with no security anywhere is
//!   an error unless its settings say `public` or `auth`: nothing becomes
//!   public by omission.
//! * The OAuth scopes of a single security requirement become the route's
//!   `require` (every scope needed).
//! * Gateway settings per operation: an `x-portcullis` object in the
//!   operation, then `[apis.operations.OPERATION_ID]` in the TOML (which
//!   wins field by field). Both take any `[[routes]]` field except `path`,
//!   `methods` and `upstream`.
//!
//! Errors carry the document's JSON pointer (`apis[0]: #/paths/~1users/get:
//! ...`).

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Map, Value};

use crate::config::file::{Api, ForbiddenField, OperationContract, ResponseHeaders, Route};

/// One operation: its route, a label for errors, its request contract.
pub type Operation = (Route, String, crate::validate::Contract);

/// An error: where (a TOML path or a document pointer) and what.
pub type PathError = (String, String);

/// A route's auth methods (`None`: public), required scopes, and whether
/// scopes were left out because alternatives ask for different ones.
type Auth = (Option<Vec<String>>, Vec<String>, bool);

/// Methods an OpenAPI path item may describe (TRACE is never proxied).
const METHODS: [&str; 7] = ["get", "put", "post", "delete", "options", "head", "patch"];

/// Reads a document: JSON when it parses as JSON, YAML otherwise.
pub fn read(path: &Path) -> Result<Value, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if let Ok(v) = serde_json::from_str::<Value>(&text) {
        return Ok(v);
    }
    yaml_serde::from_str::<Value>(&text).map_err(|e| format!("not JSON or YAML: {e}"))
}

/// A JSON pointer token (`~` and `/` escaped).
pub fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

/// Every `$ref` that is not local to the document, and every local one
/// that points nowhere: `(pointer of the $ref, message)`.
pub fn check_refs(doc: &Value) -> Vec<(String, String)> {
    fn walk(doc: &Value, v: &Value, at: &mut String, out: &mut Vec<(String, String)>) {
        match v {
            Value::Object(m) => {
                if let Some(r) = m.get("$ref").and_then(Value::as_str) {
                    match r.strip_prefix('#') {
                        None => out.push((
                            format!("{at}/$ref"),
                            format!("{r:?}: only references inside the document (#/...) are followed; remote ones are refused"),
                        )),
                        Some(p) if doc.pointer(p).is_none() => {
                            out.push((format!("{at}/$ref"), format!("{r:?} points nowhere")));
                        }
                        Some(_) => {}
                    }
                }
                for (k, child) in m {
                    let len = at.len();
                    at.push('/');
                    at.push_str(&escape(k));
                    walk(doc, child, at, out);
                    at.truncate(len);
                }
            }
            Value::Array(a) => {
                for (i, child) in a.iter().enumerate() {
                    let len = at.len();
                    at.push('/');
                    at.push_str(&i.to_string());
                    walk(doc, child, at, out);
                    at.truncate(len);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(doc, doc, &mut String::from("#"), &mut out);
    out
}

/// Follows `$ref`s from `v` (at most 32 in a chain).
pub fn deref<'a>(doc: &'a Value, mut v: &'a Value) -> Result<&'a Value, String> {
    for _ in 0..32 {
        match v.get("$ref").and_then(Value::as_str) {
            Some(r) => {
                let p = r
                    .strip_prefix('#')
                    .ok_or_else(|| format!("{r:?}: remote references are refused"))?;
                v = doc
                    .pointer(p)
                    .ok_or_else(|| format!("{r:?} points nowhere"))?;
            }
            None => return Ok(v),
        }
    }
    Err("a chain of more than 32 $refs (a cycle?)".into())
}

/// The routes of one `[[apis]]` entry, with a label per route for errors
/// (`apis[0].operations.getUser`). Errors are `(path, message)`.
pub fn expand(
    api: &Api,
    index: usize,
    base: &Path,
    warnings: &mut Vec<String>,
) -> Result<Vec<Operation>, Vec<PathError>> {
    let at = |ptr: &str| format!("apis[{index}]: {ptr}");
    let spec_path = if api.spec.is_absolute() {
        api.spec.clone()
    } else {
        base.join(&api.spec)
    };
    let doc = read(&spec_path).map_err(|m| vec![(format!("apis[{index}].spec"), m)])?;
    let mut errors: Vec<(String, String)> = Vec::new();
    match doc.get("openapi").and_then(Value::as_str) {
        Some(v) if v.starts_with("3.0") || v.starts_with("3.1") => {}
        Some(v) => errors.push((
            at("#/openapi"),
            format!("version {v:?}: OpenAPI 3.0 and 3.1 are supported"),
        )),
        None => errors.push((
            at("#/openapi"),
            "missing: not an OpenAPI 3 document (Swagger 2.0 is not supported)".into(),
        )),
    }
    for (p, m) in check_refs(&doc) {
        errors.push((at(&p), m));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let base_path = api.base_path.trim_end_matches('/');
    if !base_path.is_empty() && !base_path.starts_with('/') {
        return Err(vec![(
            format!("apis[{index}].base_path"),
            "must start with /".into(),
        )]);
    }
    let Some(paths) = doc.get("paths").and_then(Value::as_object) else {
        return Err(vec![(
            at("#/paths"),
            "missing: the document describes no operation".into(),
        )]);
    };
    let global_security = doc.get("security");
    for unsupported in ["webhooks"] {
        if doc.get(unsupported).is_some() {
            warnings.push(format!(
                "apis[{index}]: #/{unsupported} is not enforced (the gateway sees requests, not outgoing calls)"
            ));
        }
    }
    let mut routes = Vec::new();
    let mut seen_ids: BTreeMap<String, String> = BTreeMap::new();
    for (template, item) in paths {
        let item_ptr = format!("#/paths/{}", escape(template));
        let item = match deref(&doc, item) {
            Ok(i) => i,
            Err(m) => {
                errors.push((at(&item_ptr), m));
                continue;
            }
        };
        if !template.starts_with('/') {
            errors.push((at(&item_ptr), "a path starts with /".into()));
            continue;
        }
        if item.get("trace").is_some() {
            warnings.push(format!(
                "apis[{index}]: {item_ptr}/trace is never proxied (TRACE is refused)"
            ));
        }
        for method in METHODS {
            let Some(op) = item.get(method) else { continue };
            let ptr = format!("{item_ptr}/{method}");
            let mut notes = Vec::new();
            let built = route_of(
                &doc,
                api,
                base_path,
                (template, item),
                method,
                op,
                global_security,
                &mut notes,
            );
            for n in notes {
                warnings.push(format!("apis[{index}]: {ptr}: {n}"));
            }
            match built {
                Ok((route, id, contract)) => {
                    if let Some(id) = &id {
                        if let Some(first) = seen_ids.insert(id.clone(), ptr.clone()) {
                            errors.push((
                                at(&format!("{ptr}/operationId")),
                                format!("{id:?} is also the id of {first}"),
                            ));
                        }
                    }
                    let label = match &id {
                        Some(id) => format!("apis[{index}].operations.{id}"),
                        None => format!("apis[{index}]: {ptr}"),
                    };
                    routes.push((route, label, contract));
                }
                Err((sub, m)) => errors.push((at(&format!("{ptr}{sub}")), m)),
            }
        }
    }
    for id in api.operations.keys() {
        if !seen_ids.contains_key(id) {
            errors.push((
                format!("apis[{index}].operations.{id}"),
                "no operation of the document has this operationId".into(),
            ));
        }
    }
    if errors.is_empty() {
        Ok(routes)
    } else {
        Err(errors)
    }
}

/// One operation as a route: `(route, operationId)`, or `(pointer suffix,
/// message)`.
#[allow(clippy::too_many_arguments)]
fn route_of(
    doc: &Value,
    api: &Api,
    base_path: &str,
    (template, item): (&str, &Value),
    method: &str,
    op: &Value,
    global_security: Option<&Value>,
    notes: &mut Vec<String>,
) -> Result<(Route, Option<String>, crate::validate::Contract), (String, String)> {
    let id = op
        .get("operationId")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let mut v = Map::new();
    v.insert(
        "name".into(),
        Value::from(
            id.clone()
                .unwrap_or_else(|| format!("{} {template}", method.to_ascii_uppercase())),
        ),
    );
    v.insert("path".into(), Value::from(format!("{base_path}{template}")));
    v.insert(
        "methods".into(),
        Value::from(vec![method.to_ascii_uppercase()]),
    );
    v.insert("upstream".into(), Value::from(api.upstream.clone()));
    // Authentication from `security`.
    let mut ambiguous = false;
    if let Some(sec) = op.get("security").or(global_security) {
        let (auth, scopes, amb) = security(doc, sec)?;
        ambiguous = amb;
        match auth {
            None => {
                v.insert("public".into(), Value::Bool(true));
            }
            Some(methods) => {
                v.insert("auth".into(), Value::from(methods));
                if !scopes.is_empty() {
                    v.insert("require".into(), Value::from(scopes));
                }
            }
        }
    }
    // Gateway settings: the spec's extension, then the TOML's. Contract
    // settings go aside.
    let mut cv = Map::new();
    let mut overlay = |o: &Map<String, Value>, from: &str| -> Result<(), (String, String)> {
        for (k, val) in o {
            if OperationContract::KEYS.contains(&k.as_str()) {
                cv.insert(k.clone(), val.clone());
                continue;
            }
            if matches!(k.as_str(), "path" | "methods" | "upstream") {
                return Err((
                    from.to_owned(),
                    format!("{k:?} comes from the document and cannot be set here"),
                ));
            }
            if k == "public" && val == &Value::Bool(true) {
                v.remove("auth");
                v.remove("require");
            }
            if k == "auth" {
                v.remove("public");
            }
            v.insert(k.clone(), val.clone());
        }
        Ok(())
    };
    if let Some(x) = op.get("x-portcullis") {
        let o = x
            .as_object()
            .ok_or(("/x-portcullis".to_owned(), "must be an object".to_owned()))?;
        overlay(o, "/x-portcullis")?;
    }
    if let Some(t) = id.as_ref().and_then(|id| api.operations.get(id)) {
        let json = serde_json::to_value(t).map_err(|e| (String::new(), e.to_string()))?;
        if let Some(o) = json.as_object() {
            overlay(o, "")?;
        }
    }
    if ambiguous && !v.contains_key("require") && !v.contains_key("require_any") {
        return Err((
            "/security".to_owned(),
            "alternatives that need different scopes cannot be enforced as written: set require or require_any in x-portcullis or [apis.operations.ID]".into(),
        ));
    }
    if !v.contains_key("public") && !v.contains_key("auth") {
        return Err((
            String::new(),
            "no security requirement: add `security` to the document (`security: []` for a public operation), or `public`/`auth` in x-portcullis or [apis.operations.ID]".into(),
        ));
    }
    let route: Route = serde_path_to_error::deserialize(Value::Object(v)).map_err(|e| {
        (
            String::new(),
            format!("gateway settings: {}: {}", e.path(), e.inner()),
        )
    })?;
    let settings: OperationContract =
        serde_path_to_error::deserialize(Value::Object(cv)).map_err(|e| {
            (
                String::new(),
                format!("gateway settings: {}: {}", e.path(), e.inner()),
            )
        })?;
    let contract = contract_of(doc, api, item, method, op, &route, &settings, notes)?;
    Ok((route, id, contract))
}

/// The operation's contract: body, parameters, page size, restricted
/// fields, responses, deprecation notices.
#[allow(clippy::too_many_arguments)]
fn contract_of(
    doc: &Value,
    api: &Api,
    item: &Value,
    method: &str,
    op: &Value,
    route: &Route,
    settings: &OperationContract,
    notes: &mut Vec<String>,
) -> Result<crate::validate::Contract, (String, String)> {
    let write = matches!(method, "post" | "put" | "patch");
    let body = crate::validate::compile_body(doc, op, write)
        .map_err(|m| ("/requestBody".to_owned(), m))?;
    if let crate::validate::BodyRule::Unchecked(types) = &body {
        notes.push(format!(
            "request bodies in {} are not validated (only JSON is)",
            types.join(", ")
        ));
    }
    if op.get("callbacks").is_some() {
        notes.push("callbacks are not enforced".into());
    }
    let mut c = crate::validate::Contract::with_body(body, api.max_json_depth.max(1));
    c.max_string = api.max_json_string.max(1);
    c.max_items = api.max_json_items.max(1);
    c.params = crate::validate::params::compile(doc, item, op, notes)?;
    if let Some(p) = &route.pagination {
        let schema = c
            .params
            .iter()
            .any(|x| x.loc == crate::validate::params::Loc::Query && x.name == p.param)
            .then(|| param_schema(doc, item, op, &p.param))
            .flatten();
        c.pagination = Some(
            crate::validate::pagination(p, schema).map_err(|m| ("/pagination".to_owned(), m))?,
        );
    }
    for (field, perms) in &settings.restricted_fields {
        let ptr = if field.starts_with('/') {
            field.clone()
        } else {
            format!("/{}", escape(field))
        };
        let mut list = Vec::new();
        for p in perms {
            list.push(
                crate::authz::Permission::parse(p)
                    .map_err(|m| (format!("/restricted_fields/{}", escape(field)), m))?,
            );
        }
        if list.is_empty() {
            return Err((
                format!("/restricted_fields/{}", escape(field)),
                "list the permissions that may set it".into(),
            ));
        }
        c.restricted.push((ptr, list));
    }
    if !c.restricted.is_empty() {
        // A restriction that can never match would leave the field open.
        let schema = op
            .get("requestBody")
            .and_then(|rb| deref(doc, rb).ok())
            .and_then(|rb| rb.get("content"))
            .and_then(Value::as_object)
            .and_then(crate::validate::json_content)
            .and_then(|media| media.get("schema"));
        let Some(schema) = schema.filter(|_| c.reads_body()) else {
            return Err((
                "/restricted_fields".into(),
                "the operation has no JSON request body to restrict".into(),
            ));
        };
        for (ptr, _) in &c.restricted {
            if !crate::filter::declares(doc, schema, ptr) {
                return Err((
                    format!("/restricted_fields{ptr}"),
                    "the request schema declares no such field (names are case-sensitive; nested fields are JSON pointers, * for array items)".into(),
                ));
            }
        }
        if !write {
            notes.push("restricted_fields apply to POST, PUT and PATCH bodies only".into());
        }
    }
    c.strip = settings
        .on_forbidden_field
        .unwrap_or(api.on_forbidden_field)
        == ForbiddenField::Strip;
    c.unprocessable = api.validation_status == 422;
    let validate = settings
        .validate_responses
        .unwrap_or(api.validate_responses);
    let mut response_notes = Vec::new();
    c.responses = Some(crate::filter::Responses::compile(
        doc,
        op,
        api.response_headers == ResponseHeaders::Declared,
        validate,
        &mut response_notes,
    )?);
    notes.extend(response_notes);
    c.notices = notices(api, op, settings, notes)?;
    Ok(c)
}

/// The schema of a query parameter, wherever it is declared.
fn param_schema<'a>(
    doc: &'a Value,
    item: &'a Value,
    op: &'a Value,
    name: &str,
) -> Option<&'a Value> {
    [op, item]
        .into_iter()
        .filter_map(|x| x.get("parameters").and_then(Value::as_array))
        .flatten()
        .filter_map(|p| deref(doc, p).ok())
        .find(|p| {
            p.get("name").and_then(Value::as_str) == Some(name)
                && p.get("in").and_then(Value::as_str) == Some("query")
        })
        .and_then(|p| p.get("schema"))
        .and_then(|s| deref(doc, s).ok())
}

/// `Deprecation`, `Sunset` and the successor `Link` for a deprecated
/// operation (or one of a deprecated API).
fn notices(
    api: &Api,
    op: &Value,
    settings: &OperationContract,
    notes: &mut Vec<String>,
) -> Result<Vec<(http::HeaderName, http::HeaderValue)>, (String, String)> {
    let since = settings.deprecation.as_ref().or(api.deprecation.as_ref());
    let sunset = settings.sunset.as_ref().or(api.sunset.as_ref());
    let deprecated = op.get("deprecated") == Some(&Value::Bool(true)) || since.is_some();
    let mut out = Vec::new();
    if !deprecated && sunset.is_none() {
        return Ok(out);
    }
    let value = |s: String| {
        http::HeaderValue::from_str(&s)
            .map_err(|_| (String::new(), format!("{s:?} is not a header value")))
    };
    match since {
        Some(d) => {
            let t = parse_date(d).map_err(|m| ("/deprecation".to_owned(), m))?;
            out.push((
                http::HeaderName::from_static("deprecation"),
                value(format!("@{}", t.timestamp()))?,
            ));
        }
        None => {
            notes.push(
                "deprecated without a date: `Deprecation: true` is sent (set deprecation = \"YYYY-MM-DD\" for RFC 9745's date)".into(),
            );
            out.push((
                http::HeaderName::from_static("deprecation"),
                http::HeaderValue::from_static("true"),
            ));
        }
    }
    if let Some(d) = sunset {
        let t = parse_date(d).map_err(|m| ("/sunset".to_owned(), m))?;
        out.push((
            http::HeaderName::from_static("sunset"),
            value(t.format("%a, %d %b %Y %H:%M:%S GMT").to_string())?,
        ));
    }
    if let Some(s) = settings.successor.as_ref().or(api.successor.as_ref()) {
        out.push((
            http::header::LINK,
            value(format!("<{s}>; rel=\"successor-version\""))?,
        ));
    }
    Ok(out)
}

/// `2026-06-01` (midnight UTC) or an RFC 3339 time.
pub fn parse_date(s: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok(d.and_time(chrono::NaiveTime::MIN).and_utc());
    }
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|_| format!("{s:?} is not a date (YYYY-MM-DD or RFC 3339)"))
}

/// The route's auth methods (`None`: public) and required scopes from a
/// security requirement list.
fn security(doc: &Value, sec: &Value) -> Result<Auth, PathError> {
    let list = sec
        .as_array()
        .ok_or(("/security".to_owned(), "must be a list".to_owned()))?;
    if list.is_empty()
        || list
            .iter()
            .any(|r| r.as_object().is_some_and(Map::is_empty))
    {
        return Ok((None, Vec::new(), false));
    }
    let schemes = doc.pointer("/components/securitySchemes");
    let mut methods: Vec<String> = Vec::new();
    let mut scopes: Vec<Vec<String>> = Vec::new();
    for (i, req) in list.iter().enumerate() {
        let req = req
            .as_object()
            .ok_or((format!("/security/{i}"), "must be an object".to_owned()))?;
        if req.len() > 1 {
            return Err((
                format!("/security/{i}"),
                "several schemes required together are not supported: list them as alternatives"
                    .into(),
            ));
        }
        for (name, sc) in req {
            let scheme = schemes
                .and_then(|s| s.get(name))
                .ok_or((
                    format!("/security/{i}"),
                    format!("no security scheme {name:?} in #/components/securitySchemes"),
                ))
                .and_then(|s| deref(doc, s).map_err(|m| (format!("/security/{i}"), m)))?;
            let kind = scheme.get("type").and_then(Value::as_str).unwrap_or("");
            let method = match kind {
                "http" => match scheme.get("scheme").and_then(Value::as_str) {
                    Some(s) if s.eq_ignore_ascii_case("bearer") => "jwt",
                    other => {
                        return Err((
                            format!("/security/{i}"),
                            format!("http scheme {other:?} is not supported (bearer is)"),
                        ));
                    }
                },
                "oauth2" | "openIdConnect" => "jwt",
                "apiKey" => match scheme.get("in").and_then(Value::as_str) {
                    Some("cookie") => "session",
                    _ => "api_key",
                },
                other => {
                    return Err((
                        format!("/security/{i}"),
                        format!("security scheme type {other:?} is not supported"),
                    ));
                }
            };
            if !methods.iter().any(|m| m == method) {
                methods.push(method.to_owned());
            }
            scopes.push(
                sc.as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect(),
            );
        }
    }
    // Scopes are only unambiguous with one requirement; otherwise the
    // operation must say what it requires (checked by the caller).
    let ambiguous = scopes.len() > 1 && scopes.iter().any(|s| !s.is_empty());
    let require = if scopes.len() == 1 {
        scopes.pop().unwrap_or_default()
    } else {
        Vec::new()
    };
    Ok((Some(methods), require, ambiguous))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refs_local_followed_remote_refused() {
        let doc = serde_json::json!({
            "a": {"$ref": "#/b"}, "b": {"$ref": "#/c"}, "c": {"x": 1},
            "r": {"$ref": "https://evil.test/schema.json"},
            "d": [{"$ref": "#/nowhere"}],
            "loop": {"$ref": "#/loop"},
        });
        assert_eq!(
            deref(&doc, &doc["a"]).ok(),
            Some(&serde_json::json!({"x": 1}))
        );
        assert!(deref(&doc, &doc["loop"]).is_err());
        let errs = check_refs(&doc);
        assert!(
            errs.iter()
                .any(|(p, m)| p == "#/r/$ref" && m.contains("remote")),
            "{errs:?}"
        );
        assert!(
            errs.iter()
                .any(|(p, m)| p == "#/d/0/$ref" && m.contains("nowhere")),
            "{errs:?}"
        );
        assert_eq!(escape("/users/{id}"), "~1users~1{id}");
    }
}
