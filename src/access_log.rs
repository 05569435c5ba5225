//! Stage 12 (last): the access log. One JSON line per request, written when
//! the response body has been sent (or the client went away), so `duration_us`
//! and `bytes` are the real ones.
//!
//! Lines go through a bounded channel to a writer thread: the request path
//! never blocks on disk. If the writer falls behind, lines are dropped and
//! counted rather than stalling traffic. Only fields chosen here are logged:
//! never a header value other than the user agent, never the query string
//! without redaction (`log.redact_query`).

use std::io::{self, BufWriter, Write};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http::{HeaderValue, Method, Version};
use serde::Serialize;

/// Where access lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessTarget {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
    /// Append to a file.
    File(PathBuf),
}

enum Msg {
    Line(Vec<u8>),
    Flush(mpsc::Sender<()>),
}

/// A running access-log writer.
#[derive(Debug)]
pub struct LogSink {
    target: AccessTarget,
    tx: SyncSender<Msg>,
    dropped: AtomicU64,
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Msg")
    }
}

impl LogSink {
    /// Opens the target and starts the writer thread.
    pub fn open(target: AccessTarget) -> io::Result<Arc<Self>> {
        let out: Box<dyn Write + Send> = match &target {
            AccessTarget::Stdout => Box::new(io::stdout()),
            AccessTarget::Stderr => Box::new(io::stderr()),
            AccessTarget::File(p) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)?,
            ),
        };
        let (tx, rx) = mpsc::sync_channel(64 * 1024);
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || writer(rx, out))?;
        Ok(Arc::new(Self {
            target,
            tx,
            dropped: AtomicU64::new(0),
        }))
    }

    /// The target this sink writes to.
    pub fn target(&self) -> &AccessTarget {
        &self.target
    }

    /// Lines dropped because the writer was behind.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Queues one complete line (ending in `\n`); never blocks.
    pub fn write_line(&self, line: Vec<u8>) {
        self.write(line);
    }

    fn write(&self, line: Vec<u8>) {
        if let Err(TrySendError::Full(_)) = self.tx.try_send(Msg::Line(line)) {
            let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            // Say so on stderr, at 1, 2, 4, 8, ... drops, so a slow disk is
            // visible without flooding diagnostics.
            if n.is_power_of_two() {
                tracing::warn!(dropped = n, "access log writer is behind; lines dropped");
            }
        }
    }

    /// Waits (bounded) until every line sent so far is written.
    pub fn flush(&self) {
        let (tx, rx) = mpsc::channel();
        if self.tx.send(Msg::Flush(tx)).is_ok() {
            let _ = rx.recv_timeout(Duration::from_secs(2));
        }
    }
}

fn writer(rx: Receiver<Msg>, out: Box<dyn Write + Send>) {
    let mut out = BufWriter::with_capacity(64 * 1024, out);
    while let Ok(msg) = rx.recv() {
        let mut next = Some(msg);
        while let Some(m) = next.take() {
            match m {
                Msg::Line(l) => {
                    let _ = out.write_all(&l);
                }
                Msg::Flush(ack) => {
                    let _ = out.flush();
                    let _ = ack.send(());
                }
            }
            next = rx.try_recv().ok();
        }
        let _ = out.flush();
    }
    let _ = out.flush();
}

/// Everything one access line says; built by the pipeline, emitted by the
/// response body when it is done.
#[derive(Debug)]
pub struct AccessRecord {
    /// Where to write.
    pub sink: Arc<LogSink>,
    /// Wall-clock time the request arrived.
    pub ts: SystemTime,
    /// Monotonic start, for the duration.
    pub started: Instant,
    /// Request id.
    pub request_id: HeaderValue,
    /// Resolved client address.
    pub client_ip: IpAddr,
    /// Method.
    pub method: Method,
    /// Canonical path, or the raw path (truncated) when it was refused.
    pub path: String,
    /// Query string with sensitive values redacted.
    pub query: Option<String>,
    /// Route name.
    pub route: Option<Arc<str>>,
    /// Response status.
    pub status: u16,
    /// Upstream name, when the request was forwarded.
    pub upstream: Option<Arc<str>>,
    /// User-Agent (truncated).
    pub user_agent: Option<HeaderValue>,
    /// Authenticated subject (from the authentication stage).
    pub user: Option<String>,
    /// API key id, when the caller used one (never the key).
    pub key_id: Option<String>,
    /// HTTP version of the client connection.
    pub version: Version,
    /// Problem type slug when the gateway refused the request.
    pub rejection: Option<&'static str>,
}

#[derive(Serialize)]
struct Line<'a> {
    ts: &'a str,
    kind: &'static str,
    request_id: &'a str,
    client_ip: IpAddr,
    method: &'a str,
    path: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    query: Option<&'a str>,
    route: Option<&'a str>,
    status: u16,
    duration_us: u64,
    bytes: u64,
    upstream: Option<&'a str>,
    user_agent: Option<&'a str>,
    user: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key_id: Option<&'a str>,
    http: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    rejection: Option<&'static str>,
}

impl AccessRecord {
    /// Formats and queues the line.
    pub fn emit(self: Box<Self>, bytes: u64) {
        let ts = rfc3339(self.ts);
        let ua = self
            .user_agent
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .map(|s| truncate(s, 256));
        let line = Line {
            ts: &ts,
            kind: "access",
            request_id: self.request_id.to_str().unwrap_or("-"),
            client_ip: self.client_ip,
            method: self.method.as_str(),
            path: &self.path,
            query: self.query.as_deref(),
            route: self.route.as_deref(),
            status: self.status,
            duration_us: u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX),
            bytes,
            upstream: self.upstream.as_deref(),
            user_agent: ua,
            user: self.user.as_deref(),
            key_id: self.key_id.as_deref(),
            http: match self.version {
                Version::HTTP_10 => "1.0",
                Version::HTTP_2 => "2",
                _ => "1.1",
            },
            rejection: self.rejection,
        };
        let mut buf = Vec::with_capacity(384);
        if serde_json::to_writer(&mut buf, &line).is_ok() {
            buf.push(b'\n');
            self.sink.write(buf);
        }
    }
}

/// Truncates at a char boundary.
pub fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The query string with values of sensitive parameters replaced.
pub fn redact_query(query: &str, words: &[String]) -> String {
    let query = truncate(query, 1024);
    let mut out = String::with_capacity(query.len());
    for (i, pair) in query.split('&').enumerate() {
        if i > 0 {
            out.push('&');
        }
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let lname = crate::canon::decode_segment(name).to_ascii_lowercase();
        out.push_str(name);
        if pair.contains('=') {
            out.push('=');
            if words.iter().any(|w| lname.contains(w.as_str())) {
                out.push_str("[redacted]");
            } else {
                out.push_str(value);
            }
        }
    }
    out
}

/// `2026-11-23T06:01:02.345Z`
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        d.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_time() {
        let t = UNIX_EPOCH + Duration::from_millis(1_700_000_000_345);
        assert_eq!(rfc3339(t), "2023-11-14T22:13:20.345Z");
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn redacts_sensitive_query_values() {
        let words: Vec<String> = ["token", "key", "password", "secret"]
            .map(String::from)
            .to_vec();
        assert_eq!(
            redact_query("page=2&access_token=abc&API_KEY=xyz&q=hi&flag", &words),
            "page=2&access_token=[redacted]&API_KEY=[redacted]&q=hi&flag"
        );
        assert_eq!(
            redact_query("pass%77ord=x", &["password".into()]),
            "pass%77ord=[redacted]"
        );
    }
}
