//! Audit events: one JSON line per security decision ("who accessed what
//! resource and when"), written to their own sink (`log.audit`) through the
//! same non-blocking writer as the access log.
//!
//! Every line has `ts`, `kind: "audit"` and `event`; the rest depends on the
//! event. Authorization (`event: "access"`) adds `outcome` (`denied` or
//! `allowed`), `request_id`, `subject`, `route`, `method`, `path`,
//! `client_ip` and, for denials, `rule`: the config name of the rule that
//! denied. Authentication events (`login`, `logout`, `refresh`,
//! `client_token`) add their outcome and reason. Never a credential.

use std::net::IpAddr;
use std::time::SystemTime;

use serde_json::{Map, Value};

use crate::access_log::{LogSink, rfc3339};

/// Writes one audit event (a JSON object) to the sink, if auditing is on.
/// `ts` and `kind` are added here.
pub fn emit(sink: Option<&LogSink>, event: &str, fields: Value) {
    let Some(sink) = sink else { return };
    let mut line = Map::with_capacity(12);
    line.insert("ts".into(), Value::String(rfc3339(SystemTime::now())));
    line.insert("kind".into(), Value::from("audit"));
    line.insert("event".into(), Value::from(event));
    if let Value::Object(m) = fields {
        line.extend(m);
    }
    let mut buf = Vec::with_capacity(256);
    if serde_json::to_writer(&mut buf, &Value::Object(line)).is_ok() {
        buf.push(b'\n');
        sink.write_line(buf);
    }
}

/// What an authorization event names about the request.
#[derive(Debug)]
pub struct Access<'a> {
    /// Where events go (`None`: auditing is off).
    pub sink: Option<&'a LogSink>,
    /// Request id.
    pub request_id: &'a str,
    /// Route name.
    pub route: &'a str,
    /// Method.
    pub method: &'a http::Method,
    /// Canonical path.
    pub path: &'a str,
    /// Client address.
    pub client_ip: IpAddr,
}

impl Access<'_> {
    /// A denial, naming the rule (its config name) that denied.
    pub fn deny(&self, subject: &str, rule: &str) {
        self.write("denied", subject, Some(rule));
    }

    /// An allowed request on a route marked `audit = true`.
    pub fn allow(&self, subject: &str) {
        self.write("allowed", subject, None);
    }

    fn write(&self, outcome: &str, subject: &str, rule: Option<&str>) {
        emit(
            self.sink,
            "access",
            serde_json::json!({
                "outcome": outcome,
                "request_id": self.request_id,
                "subject": subject,
                "route": self.route,
                "method": self.method.as_str(),
                "path": crate::access_log::truncate(self.path, 512),
                "client_ip": self.client_ip,
                "rule": rule,
            }),
        );
    }
}
