//! Counters of security events, kept across reloads and served by the admin
//! API as `GET /metrics` (Prometheus text format). Only refusals and rare
//! events are counted here, so the locking never touches an allowed
//! request. Labels are config names and key types, never key values.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::Ordering;

/// route, limit, key type, outcome.
type RefusalLabels = (String, String, String, &'static str);

/// The counters.
#[derive(Debug, Default)]
pub struct Metrics {
    /// `(route, limit, key type, outcome)` -> refusals; outcome `limited`
    /// (429) or `unavailable` (503: the shared store failed closed).
    rate_limited: Mutex<BTreeMap<RefusalLabels, u64>>,
    /// Login lockouts started.
    lockouts: std::sync::atomic::AtomicU64,
}

impl Metrics {
    /// Counts a rate-limit refusal.
    pub fn rate_limited(&self, route: &str, limit: &str, key_type: &str, unavailable: bool) {
        let outcome = if unavailable {
            "unavailable"
        } else {
            "limited"
        };
        if let Ok(mut m) = self.rate_limited.lock() {
            *m.entry((route.into(), limit.into(), key_type.into(), outcome))
                .or_default() += 1;
        }
    }

    /// Counts a login lockout.
    pub fn lockout(&self) {
        self.lockouts.fetch_add(1, Ordering::Relaxed);
    }

    /// The Prometheus text exposition, with the Redis client's counters.
    pub fn render(&self, redis: Option<&crate::redis::Redis>) -> String {
        let mut out = String::new();
        out.push_str("# HELP portcullis_rate_limited_total Requests refused by a rate limit.\n");
        out.push_str("# TYPE portcullis_rate_limited_total counter\n");
        if let Ok(m) = self.rate_limited.lock() {
            for ((route, limit, key_type, outcome), n) in m.iter() {
                let _ = writeln!(
                    out,
                    "portcullis_rate_limited_total{{route=\"{}\",limit=\"{}\",key_type=\"{}\",outcome=\"{outcome}\"}} {n}",
                    escape(route),
                    escape(limit),
                    escape(key_type)
                );
            }
        }
        out.push_str("# HELP portcullis_login_lockouts_total Login lockouts started.\n");
        out.push_str("# TYPE portcullis_login_lockouts_total counter\n");
        let _ = writeln!(
            out,
            "portcullis_login_lockouts_total {}",
            self.lockouts.load(Ordering::Relaxed)
        );
        if let Some(r) = redis {
            out.push_str(
                "# HELP portcullis_redis_circuit_open 1 while the Redis circuit breaker is open.\n",
            );
            out.push_str("# TYPE portcullis_redis_circuit_open gauge\n");
            let _ = writeln!(
                out,
                "portcullis_redis_circuit_open {}",
                u8::from(r.circuit_open())
            );
            out.push_str("# HELP portcullis_redis_breaker_transitions_total Circuit breaker openings and closings.\n");
            out.push_str("# TYPE portcullis_redis_breaker_transitions_total counter\n");
            let _ = writeln!(
                out,
                "portcullis_redis_breaker_transitions_total {}",
                r.transitions.load(Ordering::Relaxed)
            );
            out.push_str("# HELP portcullis_redis_short_circuited_total Calls refused at once by the open circuit.\n");
            out.push_str("# TYPE portcullis_redis_short_circuited_total counter\n");
            let _ = writeln!(
                out,
                "portcullis_redis_short_circuited_total {}",
                r.short_circuited.load(Ordering::Relaxed)
            );
        }
        out
    }
}

/// A label value: backslash, quote and newline escaped.
fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_with_escaped_labels() {
        let m = Metrics::default();
        m.rate_limited("r\"1", "per_ip", "ip", false);
        m.rate_limited("r\"1", "per_ip", "ip", false);
        m.rate_limited("r2", "quota", "user+route", true);
        m.lockout();
        let s = m.render(None);
        assert!(s.contains("portcullis_rate_limited_total{route=\"r\\\"1\",limit=\"per_ip\",key_type=\"ip\",outcome=\"limited\"} 2\n"), "{s}");
        assert!(s.contains("outcome=\"unavailable\"} 1\n"));
        assert!(s.contains("portcullis_login_lockouts_total 1\n"));
        assert!(!s.contains("redis"));
    }
}
