//! A fast evaluator for the usual shape of conditions: comparisons of
//! identity, request, time and response fields with literals or with each
//! other, joined by `&&`, `||` and `!`, and `in`. It reads the request's own
//! data in place (no CEL values are built, nothing is allocated for most
//! conditions), and costs a fraction of the interpreter's qualified-name
//! resolution.
//!
//! It never decides what it is unsure of: any other construct makes the
//! condition interpreter-only at compile time, and at run time anything but
//! a same-typed comparison of present values (a missing attribute, a number
//! compared with a string, a float, a percent-encoded query) gives `None`,
//! and the CEL interpreter evaluates the condition instead, with its exact
//! semantics and error. A differential property test holds the two together.

use std::borrow::Cow;

use cel::common::ast::{Expr, IdedExpr, LiteralValue};
use chrono::{Datelike, Timelike};
use serde_json::Value as Json;

use super::policy::{Facts, PolicyEnv};

/// A compiled condition.
#[derive(Debug)]
pub(crate) enum Node {
    Str(String),
    Int(i64),
    Bool(bool),
    Var(Var),
    Not(Box<Node>),
    And(Box<Node>, Box<Node>),
    Or(Box<Node>, Box<Node>),
    Cmp(Cmp, Box<Node>, Box<Node>),
    In(Box<Node>, Box<Node>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cmp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// A field of one of the variables.
#[derive(Debug)]
pub(crate) enum Var {
    Sub,
    Roles,
    Scopes,
    Tenant,
    Issuer,
    AuthMethod,
    Attributes(Vec<String>),
    Claims(Vec<String>),
    Method,
    Path,
    Param(String),
    Query(String),
    Header(String),
    Ip,
    Time(TimeField),
    Status,
    Body(Vec<String>),
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum TimeField {
    Year,
    Month,
    Day,
    Hour,
    Minute,
    Weekday,
}

/// `None` when the expression uses anything this evaluator leaves to the
/// interpreter.
pub(crate) fn compile(e: &IdedExpr) -> Option<Node> {
    match &e.expr {
        Expr::Literal(LiteralValue::String(s)) => Some(Node::Str(s.inner().to_owned())),
        Expr::Literal(LiteralValue::Int(i)) => Some(Node::Int(*i.inner())),
        Expr::Literal(LiteralValue::Boolean(b)) => Some(Node::Bool(*b.inner())),
        Expr::Ident(_) | Expr::Select(_) => var(e).map(Node::Var),
        Expr::Call(c) if c.target.is_none() => {
            let arg = |i: usize| c.args.get(i).and_then(compile).map(Box::new);
            let binary = |f: fn(Box<Node>, Box<Node>) -> Node| match c.args.len() {
                2 => Some(f(arg(0)?, arg(1)?)),
                _ => None,
            };
            let cmp = |op: Cmp| match c.args.len() {
                2 => Some(Node::Cmp(op, arg(0)?, arg(1)?)),
                _ => None,
            };
            match c.func_name.as_str() {
                "_&&_" => binary(Node::And),
                "_||_" => binary(Node::Or),
                "!_" if c.args.len() == 1 => Some(Node::Not(arg(0)?)),
                "_==_" => cmp(Cmp::Eq),
                "_!=_" => cmp(Cmp::Ne),
                "_<_" => cmp(Cmp::Lt),
                "_<=_" => cmp(Cmp::Le),
                "_>_" => cmp(Cmp::Gt),
                "_>=_" => cmp(Cmp::Ge),
                "@in" => binary(Node::In),
                "_[_]" => var(e).map(Node::Var),
                _ => None,
            }
        }
        _ => None,
    }
}

/// `identity.attributes.a`, `request.headers['x-team']`, ...: the root and
/// the field names, innermost last.
fn path(e: &IdedExpr) -> Option<Vec<&str>> {
    match &e.expr {
        Expr::Ident(name) => Some(vec![name.as_str()]),
        Expr::Select(s) if !s.test => {
            let mut p = path(&s.operand)?;
            p.push(&s.field);
            Some(p)
        }
        Expr::Call(c) if c.func_name == "_[_]" && c.target.is_none() && c.args.len() == 2 => {
            let mut p = path(c.args.first()?)?;
            match &c.args.get(1)?.expr {
                Expr::Literal(LiteralValue::String(s)) => p.push(s.inner()),
                _ => return None,
            }
            Some(p)
        }
        _ => None,
    }
}

fn var(e: &IdedExpr) -> Option<Var> {
    let p = path(e)?;
    let rest = |n: usize| p[n..].iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    let one = |n: usize| (p.len() == n + 1).then(|| p[n].to_owned());
    Some(match p.as_slice() {
        ["identity", "sub"] => Var::Sub,
        ["identity", "roles"] => Var::Roles,
        ["identity", "scopes"] => Var::Scopes,
        ["identity", "tenant"] => Var::Tenant,
        ["identity", "issuer"] => Var::Issuer,
        ["identity", "method"] => Var::AuthMethod,
        ["identity", "attributes", _, ..] => Var::Attributes(rest(2)),
        ["identity", "claims", _, ..] => Var::Claims(rest(2)),
        ["request", "method"] => Var::Method,
        ["request", "path"] => Var::Path,
        ["request", "params", _] => Var::Param(one(2)?),
        ["request", "query", _] => Var::Query(one(2)?),
        ["request", "headers", _] => Var::Header(one(2)?),
        ["request", "ip"] => Var::Ip,
        ["time", "year"] => Var::Time(TimeField::Year),
        ["time", "month"] => Var::Time(TimeField::Month),
        ["time", "day"] => Var::Time(TimeField::Day),
        ["time", "hour"] => Var::Time(TimeField::Hour),
        ["time", "minute"] => Var::Time(TimeField::Minute),
        ["time", "weekday"] => Var::Time(TimeField::Weekday),
        ["response", "status"] => Var::Status,
        ["response", "body", ..] => Var::Body(rest(2)),
        _ => return None,
    })
}

/// A value during evaluation.
#[derive(Debug)]
enum V<'a> {
    Str(Cow<'a, str>),
    Int(i64),
    Bool(bool),
    Null,
    Strings(&'a [String]),
    /// A JSON array or object (for `in`).
    Json(&'a Json),
}

/// `Some(result)`, or `None`: ask the interpreter.
pub(crate) fn eval(node: &Node, f: &Facts<'_>, env: &PolicyEnv) -> Option<bool> {
    match value(node, f, env)? {
        V::Bool(b) => Some(b),
        _ => None,
    }
}

fn value<'a>(node: &'a Node, f: &Facts<'a>, env: &PolicyEnv) -> Option<V<'a>> {
    Some(match node {
        Node::Str(s) => V::Str(Cow::Borrowed(s)),
        Node::Int(i) => V::Int(*i),
        Node::Bool(b) => V::Bool(*b),
        Node::Var(v) => read(v, f, env)?,
        Node::Not(a) => match value(a, f, env)? {
            V::Bool(b) => V::Bool(!b),
            _ => return None,
        },
        // CEL's && and || are commutative over errors: `false && error` and
        // `error && false` are both false. Anything else unsure: interpreter.
        Node::And(a, b) => match boolean(a, f, env) {
            Some(false) => V::Bool(false),
            x => match (x, boolean(b, f, env)) {
                (_, Some(false)) => V::Bool(false),
                (Some(true), Some(true)) => V::Bool(true),
                _ => return None,
            },
        },
        Node::Or(a, b) => match boolean(a, f, env) {
            Some(true) => V::Bool(true),
            x => match (x, boolean(b, f, env)) {
                (_, Some(true)) => V::Bool(true),
                (Some(false), Some(false)) => V::Bool(false),
                _ => return None,
            },
        },
        Node::Cmp(op, a, b) => {
            let ord = match (value(a, f, env)?, value(b, f, env)?) {
                (V::Str(x), V::Str(y)) => x.as_ref().cmp(y.as_ref()),
                (V::Int(x), V::Int(y)) => x.cmp(&y),
                (V::Bool(x), V::Bool(y)) if matches!(op, Cmp::Eq | Cmp::Ne) => x.cmp(&y),
                _ => return None,
            };
            V::Bool(match op {
                Cmp::Eq => ord.is_eq(),
                Cmp::Ne => ord.is_ne(),
                Cmp::Lt => ord.is_lt(),
                Cmp::Le => ord.is_le(),
                Cmp::Gt => ord.is_gt(),
                Cmp::Ge => ord.is_ge(),
            })
        }
        Node::In(a, b) => {
            let V::Str(x) = value(a, f, env)? else {
                return None;
            };
            match value(b, f, env)? {
                V::Strings(list) => V::Bool(list.iter().any(|s| *s == x)),
                V::Json(Json::Object(m)) => V::Bool(m.contains_key(x.as_ref())),
                V::Json(Json::Array(list)) => {
                    if list.iter().any(|v| v.as_str() == Some(&x)) {
                        V::Bool(true)
                    } else if list.iter().all(Json::is_string) {
                        V::Bool(false)
                    } else {
                        // mixed types: CEL's heterogeneous equality decides
                        return None;
                    }
                }
                _ => return None,
            }
        }
    })
}

fn boolean(node: &Node, f: &Facts<'_>, env: &PolicyEnv) -> Option<bool> {
    match value(node, f, env)? {
        V::Bool(b) => Some(b),
        _ => None,
    }
}

fn read<'a>(v: &'a Var, f: &Facts<'a>, env: &PolicyEnv) -> Option<V<'a>> {
    let id = f.identity;
    let s = |x: &'a str| Some(V::Str(Cow::Borrowed(x)));
    match v {
        Var::Sub => s(&id.subject),
        Var::Roles => Some(V::Strings(&id.roles)),
        Var::Scopes => Some(V::Strings(&id.scopes)),
        Var::Tenant => Some(id.tenant.as_deref().map_or(V::Null, |t| V::Str(t.into()))),
        Var::Issuer => s(&id.issuer),
        Var::AuthMethod => s(id.method.as_str()),
        Var::Attributes(p) => match id.claims.get("attributes") {
            Some(a @ Json::Object(_)) => json(a, p),
            _ => None,
        },
        Var::Claims(p) => json(&id.claims, p),
        Var::Method => s(f.method.as_str()),
        Var::Path => s(f.path),
        Var::Param(name) => {
            let (_, raw) = f.params.iter().find(|(k, _)| k == name)?;
            Some(V::Str(if raw.contains('%') {
                Cow::Owned(crate::canon::decode_segment(raw))
            } else {
                Cow::Borrowed(raw)
            }))
        }
        Var::Query(name) => {
            let q = f.query?;
            if q.contains(['%', '+']) {
                return None;
            }
            q.split('&')
                .filter(|p| !p.is_empty())
                .map(|p| p.split_once('=').unwrap_or((p, "")))
                .find(|(k, _)| k == name)
                .map(|(_, v)| V::Str(Cow::Borrowed(v)))
        }
        Var::Header(name) => {
            let h = http::HeaderName::from_bytes(name.as_bytes()).ok()?;
            if env.secret_headers.contains(&h) {
                return None;
            }
            f.headers
                .get(&h)
                .and_then(|v| v.to_str().ok())
                .map(|v| V::Str(Cow::Borrowed(v)))
        }
        Var::Ip => Some(V::Str(Cow::Owned(f.ip.to_string()))),
        Var::Time(t) => {
            let now = chrono::Utc::now().with_timezone(&env.tz);
            Some(V::Int(match t {
                TimeField::Year => i64::from(now.year()),
                TimeField::Month => i64::from(now.month()),
                TimeField::Day => i64::from(now.day()),
                TimeField::Hour => i64::from(now.hour()),
                TimeField::Minute => i64::from(now.minute()),
                TimeField::Weekday => i64::from(now.weekday().num_days_from_sunday()),
            }))
        }
        Var::Status => Some(V::Int(i64::from(f.response?.0))),
        Var::Body(p) => json(f.response?.1?, p),
    }
}

/// A JSON value at `path`, as a value this evaluator compares; `None` for
/// anything missing or numeric but not an `i64`.
fn json<'a>(root: &'a Json, path: &[String]) -> Option<V<'a>> {
    let v = path.iter().try_fold(root, |v, k| v.as_object()?.get(k))?;
    match v {
        Json::String(s) => Some(V::Str(Cow::Borrowed(s))),
        Json::Number(n) => n.as_i64().map(V::Int),
        Json::Bool(b) => Some(V::Bool(*b)),
        Json::Null => Some(V::Null),
        Json::Array(_) | Json::Object(_) => Some(V::Json(v)),
    }
}
